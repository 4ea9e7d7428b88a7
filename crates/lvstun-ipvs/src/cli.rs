//! The hidden `lvstun-node ipvs ...` debug commands ([`IpvsCli`]: `dump`, `apply`, `sync`),
//! which the lab uses to prove the netlink layer against a real kernel (with `ipvsadm -Ln` as
//! the witness). Parsing and rendering are pure; `run_ipvs` does the I/O. Behind the crate's
//! feature `cli`, which the daemon enables; its `Cli` names this as its hidden `ipvs` command.
//!
//! `apply` reads a desired table (YAML or JSON), plans against the kernel and
//! applies the plan. The VIPs it owns are those of its services plus an
//! optional `owned:` list (to remove services of a VIP); every other service
//! in the kernel is left alone. It prints `ops: N` (N = writes sent) and each
//! operation, and exits 1 if the kernel refused any. `--one-by-one` sends one
//! request per round trip instead of batches (for comparison and to isolate
//! a failing operation).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::process::ExitCode;

use clap::Subcommand;
use serde::Deserialize;

use crate::error::{Errno, Error};
use crate::handle::{self, IpvsHandle};
use crate::model::{
    AddressFamily, DestConfig, DestKey, Destination, Forward, GueChecksum, IfName, IpvsInfo, Op,
    Persistence, Scheduler, Service, ServiceConfig, ServiceFlags, ServiceKey, SocketText,
    SyncDaemon, SyncRole, Table, Thresholds, Tunnel, Weight, netmask_to_wire,
};
use crate::plan::{self, OwnedVips};
use crate::{ApplyReport, IpvsTable, reconcile};

/// `lvstun-node ipvs ...`.
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum IpvsCli {
    /// The table, as `ipvsadm -Ln` prints it
    Dump {
        /// Add the tunnel column (`ipvsadm -Ln --tun-info`)
        #[arg(long)]
        tun_info: bool,
    },
    /// Plan a desired table (YAML or JSON) against the kernel and apply it
    Apply {
        /// The desired table: `services:` and optionally `owned:` VIPs
        #[arg(value_name = "FILE")]
        path: String,
        /// Print the plan, send nothing
        #[arg(long)]
        dry_run: bool,
        /// One request per round trip instead of batches
        #[arg(long)]
        one_by_one: bool,
    },
    /// The IPVS connection sync daemons
    #[command(subcommand)]
    Sync(SyncCli),
}

/// `lvstun-node ipvs sync ...`.
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum SyncCli {
    /// Start a sync daemon
    Start {
        /// master or backup
        #[arg(value_parser = parse_role)]
        role: SyncRole,
        /// The interface it multicasts on
        #[arg(value_name = "IFNAME", value_parser = parse_ifname)]
        ifname: IfName,
        /// Its sync ID (0-255)
        #[arg(value_name = "SYNCID")]
        sync_id: u8,
    },
    /// Stop a sync daemon
    Stop {
        /// master or backup
        #[arg(value_parser = parse_role)]
        role: SyncRole,
    },
    /// List the running sync daemons
    Show,
}

fn parse_role(value: &str) -> Result<SyncRole, Error> {
    value.parse()
}

fn parse_ifname(value: &str) -> Result<IfName, Error> {
    IfName::new(value)
}

/// The desired-table file: services and, optionally, extra owned VIPs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    owned: Vec<IpAddr>,
    #[serde(default)]
    services: Vec<ServiceSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    vip: IpAddr,
    port: u16,
    #[serde(default = "default_protocol")]
    protocol: String,
    #[serde(default = "default_scheduler")]
    scheduler: String,
    #[serde(default)]
    flags: Vec<String>,
    persistence: Option<PersistenceSpec>,
    #[serde(default)]
    destinations: Vec<DestSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistenceSpec {
    timeout: u32,
    netmask: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DestSpec {
    address: IpAddr,
    port: u16,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default = "default_forward")]
    forward: String,
    tunnel: Option<TunnelSpec>,
    #[serde(default)]
    upper_threshold: u32,
    #[serde(default)]
    lower_threshold: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TunnelSpec {
    #[serde(rename = "type")]
    kind: String,
    port: Option<u16>,
    checksum: Option<String>,
}

fn default_protocol() -> String {
    "tcp".to_owned()
}

fn default_scheduler() -> String {
    "rr".to_owned()
}

fn default_weight() -> u32 {
    1
}

fn default_forward() -> String {
    "tunnel".to_owned()
}

fn parse_flag(name: &str) -> Result<ServiceFlags, Error> {
    Ok(match name {
        "one-packet" | "ops" => ServiceFlags::ONE_PACKET,
        "sched1" | "sh-fallback" | "mh-fallback" => ServiceFlags::SCHED1,
        "sched2" | "sh-port" | "mh-port" => ServiceFlags::SCHED2,
        "sched3" => ServiceFlags::SCHED3,
        _ => {
            return Err(Error::invalid(
                "service flag",
                name,
                "expected one-packet, sh-fallback, sh-port, mh-fallback, mh-port, sched3",
            ));
        }
    })
}

fn parse_tunnel(spec: Option<&TunnelSpec>) -> Result<Tunnel, Error> {
    let Some(spec) = spec else {
        return Ok(Tunnel::Ipip);
    };
    let checksum = spec.checksum.as_deref().unwrap_or("none");
    match spec.kind.as_str() {
        "ipip" => Ok(Tunnel::Ipip),
        "gue" => Ok(Tunnel::Gue {
            port: spec
                .port
                .and_then(NonZeroU16::new)
                .ok_or_else(|| Error::invalid("tunnel port", "0", "GUE needs a port"))?,
            checksum: match checksum {
                "none" => GueChecksum::None,
                "csum" => GueChecksum::Csum,
                "remcsum" => GueChecksum::Remote,
                other => {
                    return Err(Error::invalid(
                        "checksum",
                        other,
                        "expected none, csum, remcsum",
                    ));
                }
            },
        }),
        "gre" => Ok(Tunnel::Gre {
            checksum: match checksum {
                "none" => false,
                "csum" => true,
                other => return Err(Error::invalid("checksum", other, "expected none or csum")),
            },
        }),
        other => Err(Error::invalid(
            "tunnel type",
            other,
            "expected ipip, gue or gre",
        )),
    }
}

fn parse_dest(spec: &DestSpec) -> Result<(DestKey, DestConfig), Error> {
    let forward = match spec.forward.as_str() {
        "tunnel" => Forward::Tunnel(parse_tunnel(spec.tunnel.as_ref())?),
        "route" => Forward::Route,
        "masq" => Forward::Masq,
        other => {
            return Err(Error::invalid(
                "forward",
                other,
                "expected tunnel, route or masq",
            ));
        }
    };
    if spec.tunnel.is_some() && !matches!(forward, Forward::Tunnel(_)) {
        return Err(Error::invalid(
            "tunnel",
            spec.address,
            "tunnel settings need forward: tunnel",
        ));
    }
    Ok((
        DestKey {
            address: spec.address,
            port: spec.port,
        },
        DestConfig {
            weight: Weight::new(spec.weight)?,
            forward,
            thresholds: Thresholds::new(spec.upper_threshold, spec.lower_threshold)?,
        },
    ))
}

/// Parses a desired-table file into the typed table and the owned VIPs.
fn parse_file(text: &str) -> Result<(Table, OwnedVips), Error> {
    let spec: FileSpec = serde_norway::from_str(text)?;
    let mut table = Table::new();
    let mut vips: BTreeSet<IpAddr> = spec.owned.into_iter().collect();
    for svc in &spec.services {
        let key = ServiceKey::Addr {
            address: svc.vip,
            protocol: svc.protocol.parse()?,
            port: svc.port,
        };
        if table.service(&key).is_some() {
            return Err(Error::ListedTwice(format!("service {key}")));
        }
        let flags = svc.flags.iter().try_fold(ServiceFlags::empty(), |acc, f| {
            Ok::<_, Error>(acc.union(parse_flag(f)?))
        })?;
        let persistence = svc
            .persistence
            .as_ref()
            .map(|p| {
                let family = AddressFamily::of(svc.vip);
                let host = if family == AddressFamily::Inet {
                    32
                } else {
                    128
                };
                Persistence::new(family, p.timeout, p.netmask.unwrap_or(host))
            })
            .transpose()?;
        let config = ServiceConfig {
            flags,
            persistence,
            ..ServiceConfig::new(Scheduler::new(&svc.scheduler)?)
        };
        table.upsert_service(key, config);
        vips.insert(svc.vip);
        for d in &svc.destinations {
            let (dest, config) = parse_dest(d)?;
            let duplicate = table
                .service(&key)
                .is_some_and(|entry| entry.dests.contains_key(&dest));
            if duplicate {
                return Err(Error::ListedTwice(format!("destination {dest} of {key}")));
            }
            table.upsert_dest(&key, dest, config);
        }
    }
    Ok((table, vips.into_iter().collect()))
}

/// The tunnel column of `ipvsadm -Ln --tun-info`.
fn tunnel_info(forward: &Forward) -> String {
    match forward {
        Forward::Tunnel(Tunnel::Ipip) => "ipip".to_owned(),
        Forward::Tunnel(Tunnel::Gue { port, checksum }) => format!(
            "gue:{port}{}",
            match checksum {
                GueChecksum::None => "",
                GueChecksum::Csum => ":+c",
                GueChecksum::Remote => ":+r",
            }
        ),
        Forward::Tunnel(Tunnel::Gre { checksum }) => {
            format!("gre{}", if *checksum { ":+c" } else { "" })
        }
        Forward::Masq | Forward::Local | Forward::Route => "n/a".to_owned(),
    }
}

fn forward_name(forward: &Forward) -> &'static str {
    match forward {
        Forward::Masq => "Masq",
        Forward::Local => "Local",
        Forward::Route => "Route",
        Forward::Tunnel(_) => "Tunnel",
    }
}

/// Scheduler flag names as ipvsadm prints them: they mean different things
/// to different schedulers.
fn sched_flag_names(scheduler: Scheduler) -> [&'static str; 3] {
    match scheduler.name() {
        "sh" => ["sh-fallback", "sh-port", "flag-3"],
        "mh" => ["mh-fallback", "mh-port", "flag-3"],
        _ => ["flag-1", "flag-2", "flag-3"],
    }
}

fn service_line(service: &Service) -> String {
    let config = &service.config;
    let mut line = match service.key {
        ServiceKey::Addr {
            address,
            protocol,
            port,
        } => format!(
            "{protocol}  {} {}",
            SocketText(address, port),
            config.scheduler
        ),
        ServiceKey::Fwmark { mark, .. } => format!("FWM  {mark} {}", config.scheduler),
    };
    let flags = config.flags;
    let set: Vec<&str> = [
        ServiceFlags::SCHED1,
        ServiceFlags::SCHED2,
        ServiceFlags::SCHED3,
    ]
    .iter()
    .zip(sched_flag_names(config.scheduler))
    .filter(|(flag, _)| flags.contains(**flag))
    .map(|(_, name)| name)
    .collect();
    if !set.is_empty() {
        let _ = write!(line, " ({})", set.join(","));
    }
    if let Some(p) = config.persistence {
        let _ = write!(line, " persistent {}", p.timeout_secs);
        let family = service.key.family();
        match family {
            AddressFamily::Inet if p.netmask_prefix != 32 => {
                let mask = std::net::Ipv4Addr::from(netmask_to_wire(family, p.netmask_prefix));
                let _ = write!(line, " mask {mask}");
            }
            AddressFamily::Inet6 if p.netmask_prefix != 128 => {
                let _ = write!(line, " mask {}", p.netmask_prefix);
            }
            _ => {}
        }
    }
    if flags.contains(ServiceFlags::ONE_PACKET) {
        line.push_str(" ops");
    }
    line
}

/// ipvsadm's listing order: address services before firewall marks, then
/// by family, protocol number, address, port.
fn listing_order(key: &ServiceKey) -> (u32, u16, u16, IpAddr, u16) {
    match *key {
        ServiceKey::Addr {
            address,
            protocol,
            port,
        } => (
            0,
            AddressFamily::of(address).raw(),
            protocol.number(),
            address,
            port,
        ),
        ServiceKey::Fwmark { family, mark } => {
            (mark, family.raw(), 0, IpAddr::from([0, 0, 0, 0]), 0)
        }
    }
}

/// Renders the table exactly as `ipvsadm -Ln` does (`--tun-info` adds the
/// tunnel column), trailing blanks trimmed, so the two can be compared.
fn render(info: Option<IpvsInfo>, table: &[(Service, Vec<Destination>)], tun_info: bool) -> String {
    let mut out = String::new();
    if let Some(info) = info {
        let _ = writeln!(
            out,
            "IP Virtual Server version {} (size={})",
            info.version_text(),
            info.conn_tab_size
        );
    }
    out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
    if tun_info {
        out.push_str(
            "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n",
        );
    } else {
        out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    }
    let mut services: Vec<&(Service, Vec<Destination>)> = table.iter().collect();
    services.sort_by_key(|(service, _)| listing_order(&service.key));
    for (service, dests) in services {
        let _ = writeln!(out, "{}", service_line(service));
        let mut dests: Vec<&Destination> = dests.iter().collect();
        dests.sort_by_key(|d| {
            (
                AddressFamily::of(d.key.address).raw(),
                d.key.address,
                d.key.port,
            )
        });
        for d in dests {
            let tunnel = if tun_info {
                format!("{:<13} ", tunnel_info(&d.config.forward))
            } else {
                String::new()
            };
            let line = format!(
                "  -> {:<28} {:<7} {tunnel}{:<6} {:<10} {:<10}",
                d.key.to_string(),
                forward_name(&d.config.forward),
                d.config.weight.get(),
                d.conns.active,
                d.conns.inactive,
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    out
}

/// A hint for a person, chosen by errno (never by message text).
fn hint(op: &Op, err: &Error) -> &'static str {
    match (op, err.errno()) {
        (Op::NewDest { .. } | Op::SetDest { .. }, Some(Errno::EINVAL)) => {
            " (tunnel destinations need a route to the real server)"
        }
        (_, Some(Errno::EPERM)) => " (needs CAP_NET_ADMIN)",
        (_, Some(Errno::ENOENT)) if matches!(op, Op::NewService { .. } | Op::SetService { .. }) => {
            " (scheduler module not available?)"
        }
        _ => "",
    }
}

fn render_report(ops: &[Op], report: &ApplyReport) -> String {
    let mut out = format!("ops: {}\n", ops.len());
    for op in ops {
        let _ = writeln!(out, "  {op}");
    }
    let _ = writeln!(
        out,
        "applied: {} failed: {}",
        report.applied,
        report.failed.len()
    );
    for (op, err) in &report.failed {
        let _ = writeln!(out, "  FAILED {op}: {err}{}", hint(op, err));
    }
    out
}

async fn connect() -> Result<IpvsHandle, Error> {
    let (connection, raw) = handle::new_connection()?;
    tokio::spawn(connection);
    IpvsHandle::resolve(raw).await
}

async fn apply_one_by_one(ipvs: &IpvsHandle, ops: &[Op]) -> ApplyReport {
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match *op {
            Op::NewService { key, config } => ipvs.new_service(key, config).await,
            Op::SetService { key, config } => ipvs.set_service(key, config).await,
            Op::DelService { key } => ipvs.del_service(key).await,
            Op::NewDest {
                service,
                dest,
                config,
            } => ipvs.new_destination(service, dest, config).await,
            Op::SetDest {
                service,
                dest,
                config,
            } => ipvs.set_destination(service, dest, config).await,
            Op::DelDest { service, dest } => ipvs.del_destination(service, dest).await,
        };
        results.push(result);
    }
    ApplyReport::from_results(ops, results)
}

async fn execute(command: IpvsCli) -> Result<ExitCode, Error> {
    match command {
        IpvsCli::Dump { tun_info } => {
            let ipvs = connect().await?;
            let info = ipvs.info().await.ok();
            let mut table = Vec::new();
            for service in ipvs.list_services().await? {
                let dests = ipvs.list_destinations(&service.key).await?;
                table.push((service, dests));
            }
            print!("{}", render(info, &table, tun_info));
            Ok(ExitCode::SUCCESS)
        }
        IpvsCli::Apply {
            path,
            dry_run,
            one_by_one,
        } => {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::File {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            let (desired, owned) = parse_file(&text).map_err(|source| Error::FileContent {
                path,
                source: Box::new(source),
            })?;
            let mut ipvs = connect().await?;
            let (ops, report) = if dry_run || one_by_one {
                let actual = ipvs.read().await?;
                let ops = plan::plan(&actual, &desired, &owned);
                let report = if dry_run {
                    ApplyReport::default()
                } else {
                    apply_one_by_one(&ipvs, &ops).await
                };
                (ops, report)
            } else {
                let done = reconcile(&mut ipvs, &desired, &owned).await?;
                (done.ops, done.report)
            };
            print!("{}", render_report(&ops, &report));
            Ok(if report.is_complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        IpvsCli::Sync(SyncCli::Start {
            role,
            ifname,
            sync_id,
        }) => {
            let daemon = SyncDaemon::new(role, ifname, sync_id);
            connect().await?.start_sync_daemon(&daemon).await?;
            Ok(ExitCode::SUCCESS)
        }
        IpvsCli::Sync(SyncCli::Stop { role }) => {
            connect().await?.stop_sync_daemon(role).await?;
            Ok(ExitCode::SUCCESS)
        }
        IpvsCli::Sync(SyncCli::Show) => {
            for d in connect().await?.list_sync_daemons().await? {
                println!(
                    "{} sync daemon (mcast={}, syncid={})",
                    d.role,
                    d.ifname.as_str(),
                    d.sync_id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `lvstun-node ipvs ...` on a single-threaded runtime.
pub fn run_ipvs(command: IpvsCli) -> Result<ExitCode, Error> {
    // Warnings (e.g. a receive buffer that could not grow) go to stderr;
    // RUST_LOG raises the level.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _already_set = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(execute(command))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnCounts, Protocol, Stats};

    /// The daemon's command line as far as `lvstun-node ipvs` goes, with its settings.
    #[derive(Debug, clap::Parser)]
    #[command(
        name = "lvstun-node",
        args_override_self = true,
        disable_help_subcommand = true
    )]
    struct NodeCli {
        #[command(subcommand)]
        command: NodeCommand,
    }

    #[derive(Debug, clap::Subcommand)]
    enum NodeCommand {
        #[command(hide = true, subcommand)]
        Ipvs(IpvsCli),
    }

    fn parse_command(line: &str) -> Result<IpvsCli, clap::Error> {
        use clap::Parser;
        let argv = ["lvstun-node", "ipvs"]
            .into_iter()
            .chain(line.split_whitespace());
        let NodeCommand::Ipvs(command) = NodeCli::try_parse_from(argv)?.command;
        Ok(command)
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse_command("dump").unwrap(),
            IpvsCli::Dump { tun_info: false }
        );
        assert_eq!(
            parse_command("dump --tun-info").unwrap(),
            IpvsCli::Dump { tun_info: true }
        );
        assert_eq!(
            parse_command("apply t.yaml --dry-run").unwrap(),
            IpvsCli::Apply {
                path: "t.yaml".into(),
                dry_run: true,
                one_by_one: false
            }
        );
        // As the lab's ipvs-netlink.sh calls it: the flag after the file.
        assert_eq!(
            parse_command("apply t.yaml --one-by-one").unwrap(),
            IpvsCli::Apply {
                path: "t.yaml".into(),
                dry_run: false,
                one_by_one: true
            }
        );
        assert_eq!(
            parse_command("sync stop backup").unwrap(),
            IpvsCli::Sync(SyncCli::Stop {
                role: SyncRole::Backup
            })
        );
        assert_eq!(
            parse_command("sync show").unwrap(),
            IpvsCli::Sync(SyncCli::Show)
        );
        match parse_command("sync start master eth0 7").unwrap() {
            IpvsCli::Sync(SyncCli::Start {
                role,
                ifname,
                sync_id,
            }) => {
                assert_eq!(
                    (role, ifname.as_str(), sync_id),
                    (SyncRole::Master, "eth0", 7)
                )
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "apply",
            "apply a b",
            "apply a --bogus",
            "sync start master eth0 256",
            "sync start primary eth0 1",
            "sync",
            "flush",
            "",
        ] {
            let err = parse_command(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }

    const FILE: &str = r#"
owned: [192.0.2.20]
services:
  - vip: 192.0.2.10
    port: 80
    scheduler: wrr
    destinations:
      - {address: 198.51.100.11, port: 80, weight: 2}
      - address: 198.51.100.12
        port: 80
        tunnel: {type: gue, port: 6080, checksum: csum}
  - vip: 192.0.2.10
    port: 53
    protocol: udp
    scheduler: mh
    flags: [mh-port]
    persistence: {timeout: 300, netmask: 24}
"#;

    #[test]
    fn file_parses_into_typed_table() {
        let (table, owned) = parse_file(FILE).unwrap();
        assert_eq!(table.len(), 2);
        let web = ServiceKey::Addr {
            address: "192.0.2.10".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let entry = table.service(&web).unwrap();
        assert_eq!(entry.config.scheduler, Scheduler::WRR);
        assert_eq!(entry.dests.len(), 2);
        let gue = entry
            .dests
            .get(&DestKey {
                address: "198.51.100.12".parse().unwrap(),
                port: 80,
            })
            .unwrap();
        assert!(matches!(gue.forward, Forward::Tunnel(Tunnel::Gue { .. })));
        assert!(owned.owns(&web));
        let other = ServiceKey::Addr {
            address: "192.0.2.20".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        };
        assert!(owned.owns(&other));
    }

    #[test]
    fn file_errors_are_refused() {
        assert!(matches!(
            parse_file("services: [{vip: 192.0.2.1, port: 80, scheduler: maglev}]"),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            parse_file("services: [{vip: 192.0.2.1, port: 80, typo: 1}]"),
            Err(Error::Yaml(_))
        ));
        let dup = "services: [{vip: 192.0.2.1, port: 80}, {vip: 192.0.2.1, port: 80}]";
        let err = parse_file(dup).unwrap_err();
        assert!(matches!(err, Error::ListedTwice(_)), "{err:?}");
        assert_eq!(err.to_string(), "service TCP 192.0.2.1:80 is listed twice");
        let bad_thresholds = "services: [{vip: 192.0.2.1, port: 80, destinations: \
                              [{address: 198.51.100.1, port: 80, upper_threshold: 1, lower_threshold: 2}]}]";
        assert!(parse_file(bad_thresholds).is_err());
        let gue_no_port = "services: [{vip: 192.0.2.1, port: 80, destinations: \
                           [{address: 198.51.100.1, port: 80, tunnel: {type: gue}}]}]";
        assert!(parse_file(gue_no_port).is_err());
    }

    #[test]
    fn render_looks_like_ipvsadm() {
        let (table, _) = parse_file(FILE).unwrap();
        let rows: Vec<(Service, Vec<Destination>)> = table
            .services()
            .map(|(key, entry)| {
                (
                    Service {
                        key: *key,
                        config: entry.config,
                        stats: Stats::default(),
                    },
                    entry
                        .dests
                        .iter()
                        .map(|(k, c)| Destination {
                            key: *k,
                            config: *c,
                            conns: ConnCounts::default(),
                            stats: Stats::default(),
                        })
                        .collect(),
                )
            })
            .collect();
        let info = IpvsInfo {
            version: 0x010201,
            conn_tab_size: 4096,
        };
        let text = render(Some(info), &rows, false);
        let expected = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.0.2.10:80 wrr
  -> 198.51.100.11:80             Tunnel  2      0          0
  -> 198.51.100.12:80             Tunnel  1      0          0
UDP  192.0.2.10:53 mh (mh-port) persistent 300 mask 255.255.255.0
";
        assert_eq!(text, expected);
        let text = render(None, &rows, true);
        let expected = "\
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn
TCP  192.0.2.10:80 wrr
  -> 198.51.100.11:80             Tunnel  ipip          2      0          0
  -> 198.51.100.12:80             Tunnel  gue:6080:+c   1      0          0
UDP  192.0.2.10:53 mh (mh-port) persistent 300 mask 255.255.255.0
";
        assert_eq!(text, expected);
    }

    #[test]
    fn report_counts_writes() {
        let text = render_report(&[], &ApplyReport::default());
        assert!(text.starts_with("ops: 0\n"));
        assert!(text.contains("applied: 0 failed: 0"));
    }
}
