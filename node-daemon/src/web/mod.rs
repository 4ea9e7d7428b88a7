//! The web role (`lvstun-node web`): prepares a real server to receive connections tunneled by
//! the balancers (ipip) and to answer clients directly from the VIP, as the classic LVS-TUN
//! recipe did by hand with ifcfg-tunl0, ifup-local, sysctl.d and arptables.
//!
//! ```text
//! lvstun-node web --config FILE (--real-server [NS/]NAME | --node-address IP) [OPTIONS]   daemon
//! lvstun-node web apply   --config FILE ... [OPTIONS]  apply once; prints the operations and
//!                                                      `writes: N`; exit 0 when TunnelReady
//! lvstun-node web check   --config FILE ... [OPTIONS]  read only: prints TunnelReady and what
//!                                                      apply would change; exit 0 when ready
//! lvstun-node web cleanup [--state-dir DIR] [--nft PATH] [--vip-device NAME]
//!                                                      undo everything lvstun did on this host
//! OPTIONS: --vip-device NAME|tunl0 (default lvstun0, a dummy)   --uplink IFACE (repeatable;
//!          default: the interfaces of the default routes and of the RealServer's address)
//!          --mss auto|off|N (default auto)   --state-dir DIR (default /run/lvstun)
//!          --nft PATH (default nft)   --health-port PORT [--health-address IP (127.0.0.1)]
//!          --interval SECONDS (full reconcile period, default 30)   --cleanup-on-exit
//! ```
//!
//! The daemon re-reads the file when it changes (checked every second) or on SIGHUP, and
//! reconciles fully every `--interval` to repair drift. On SIGTERM it exits and leaves the host
//! configured (a restart must not drop traffic) unless `--cleanup-on-exit` says otherwise; a
//! RealServer that leaves the file is cleaned up by the running daemon.
//!
//! Modules: `config` (the file), `desired` and `plan` (pure), `state` (the record of what lvstun
//! changed), `apply` (the reconcile over the `net` seams), `status` (`TunnelReady`), `health`
//! (`/healthz`, `/readyz`). The in-cluster source (watch RealServers naming this node, report
//! `TunnelReady` by server-side apply) plugs in where `config::load` is called.

pub mod apply;
pub mod config;
pub mod desired;
pub mod health;
pub mod plan;
pub mod state;
pub mod status;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::error::Error;
use crate::net::Host;
use desired::{Identity, MssMode, Options, Served, VipDevice};

const USAGE: &str = "lvstun-node web [apply|check] --config FILE (--real-server [NS/]NAME | --node-address IP) \
[--vip-device NAME|tunl0] [--uplink IFACE]... [--mss auto|off|N] [--state-dir DIR] [--nft PATH] \
[--health-port PORT] [--health-address IP] [--interval SECONDS] [--cleanup-on-exit]\n  \
lvstun-node web cleanup [--state-dir DIR] [--nft PATH] [--vip-device NAME|tunl0]";

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Daemon,
    Apply,
    Check,
    Cleanup,
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq)]
struct Args {
    mode: Mode,
    config: Option<String>,
    identity: Option<Identity>,
    options: Options,
    state_dir: PathBuf,
    nft: PathBuf,
    health: Option<SocketAddr>,
    interval: Duration,
    cleanup_on_exit: bool,
}

fn usage(detail: impl std::fmt::Display) -> Error {
    Error::Usage(format!("{detail}\n  {USAGE}"))
}

fn ifname(value: &str) -> Result<String, Error> {
    if value.is_empty() || value.len() > IFNAME_MAX || value.contains(['/', ' ']) {
        return Err(Error::invalid(
            "interface name",
            value,
            "1 to 15 characters, no '/' or space",
        ));
    }
    Ok(value.to_owned())
}

fn parse_args(args: &[String]) -> Result<Args, Error> {
    let mut it = args.iter().map(String::as_str).peekable();
    let mode = match it.peek() {
        Some(&"apply") => Mode::Apply,
        Some(&"check") => Mode::Check,
        Some(&"cleanup") => Mode::Cleanup,
        _ => Mode::Daemon,
    };
    if mode != Mode::Daemon {
        it.next();
    }
    let mut out = Args {
        mode,
        config: None,
        identity: None,
        options: Options::default(),
        state_dir: PathBuf::from("/run/lvstun"),
        nft: PathBuf::from("nft"),
        health: None,
        interval: Duration::from_secs(30),
        cleanup_on_exit: false,
    };
    let mut health_port: Option<u16> = None;
    let mut health_ip: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .map(str::to_owned)
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match flag {
            "--config" => out.config = Some(value(flag)?),
            "--real-server" => {
                let v = value(flag)?;
                let (namespace, name) = match v.split_once('/') {
                    Some((ns, name)) => (Some(ns.to_owned()), name.to_owned()),
                    None => (None, v.clone()),
                };
                if name.is_empty() || namespace.as_deref() == Some("") {
                    return Err(Error::invalid(
                        "--real-server",
                        v,
                        "expected NAME or NAMESPACE/NAME",
                    ));
                }
                out.identity = Some(Identity::Name { namespace, name });
            }
            "--node-address" => {
                let v = value(flag)?;
                let ip = v.parse().map_err(|_| {
                    Error::invalid("--node-address", &v, "expected an IPv4 address")
                })?;
                out.identity = Some(Identity::Address(ip));
            }
            "--vip-device" => {
                let v = value(flag)?;
                out.options.vip_device = if v == crate::net::link::TUNL0 {
                    VipDevice::Tunl0
                } else {
                    VipDevice::Dummy(ifname(&v)?)
                };
            }
            "--uplink" => out.options.uplinks.push(ifname(&value(flag)?)?),
            "--mss" => {
                let v = value(flag)?;
                out.options.mss = match v.as_str() {
                    "auto" => MssMode::Auto,
                    "off" => MssMode::Off,
                    n => match n.parse::<u16>() {
                        Ok(m) if (536..=9000).contains(&m) => MssMode::Fixed(m),
                        _ => {
                            return Err(Error::invalid(
                                "--mss",
                                n,
                                "expected auto, off or 536..9000",
                            ));
                        }
                    },
                };
            }
            "--state-dir" => out.state_dir = PathBuf::from(value(flag)?),
            "--nft" => out.nft = PathBuf::from(value(flag)?),
            "--health-port" => {
                let v = value(flag)?;
                health_port = Some(
                    v.parse()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| Error::invalid("--health-port", &v, "expected 1..65535"))?,
                );
            }
            "--health-address" => {
                let v = value(flag)?;
                health_ip = v.parse().map_err(|_| {
                    Error::invalid("--health-address", &v, "expected an IP address")
                })?;
            }
            "--interval" => {
                let v = value(flag)?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=3600).contains(s))
                    .ok_or_else(|| Error::invalid("--interval", &v, "expected 1..3600 seconds"))?;
                out.interval = Duration::from_secs(secs);
            }
            "--cleanup-on-exit" => out.cleanup_on_exit = true,
            other => return Err(usage(format!("unknown argument {other}"))),
        }
    }
    out.health = health_port.map(|port| SocketAddr::new(health_ip, port));
    if mode != Mode::Cleanup {
        if out.config.is_none() {
            return Err(usage(
                "--config FILE is needed (the in-cluster source is not built yet)",
            ));
        }
        if out.identity.is_none() {
            return Err(usage(
                "say which RealServer this host is: --real-server or --node-address",
            ));
        }
    }
    Ok(out)
}

/// Runs `lvstun-node web ARGS...`.
pub fn run(args: &[String]) -> Result<ExitCode, Error> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: {USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    let args = parse_args(args)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _already_set = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match args.mode {
            Mode::Daemon => daemon(&args).await,
            Mode::Apply | Mode::Check => once(&args).await,
            Mode::Cleanup => cleanup(&args).await,
        }
    })
}

/// What the configuration says this host serves.
fn load_served(args: &Args) -> Result<Served, Error> {
    let path = args.config.as_deref().unwrap_or_default();
    let objects = config::load(path)?;
    let identity = args.identity.as_ref().ok_or_else(|| usage("no identity"))?;
    Ok(desired::served(&objects, identity))
}

async fn reconcile_with(
    host: &mut Host,
    args: &Args,
    served: &Served,
    st: &mut state::State,
    dry_run: bool,
) -> Result<apply::Outcome, Error> {
    let dir = args.state_dir.clone();
    let mut persist = move |s: &state::State| state::save(&dir, s);
    apply::reconcile(host, served, &args.options, st, dry_run, &mut persist).await
}

fn print_outcome(out: &apply::Outcome, pending: bool) {
    let label = if pending { "pending" } else { "applied" };
    for op in &out.ops {
        println!("{label}: {op}");
    }
    for e in &out.errors {
        println!("error: {e}");
    }
    if !pending {
        println!("writes: {}", out.writes);
    } else {
        println!("pending: {}", out.ops.len());
    }
    let r = &out.readiness;
    println!(
        "TunnelReady={} reason={} message={}",
        if r.ready { "True" } else { "False" },
        r.reason,
        r.message
    );
}

async fn once(args: &Args) -> Result<ExitCode, Error> {
    let served = load_served(args)?;
    let mut host = Host::open(&args.nft)?;
    let mut st = state::load(&args.state_dir)?;
    let check = args.mode == Mode::Check;
    let out = reconcile_with(&mut host, args, &served, &mut st, check).await?;
    print_outcome(&out, check);
    Ok(if out.readiness.ready && out.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn cleanup(args: &Args) -> Result<ExitCode, Error> {
    let mut host = Host::open(&args.nft)?;
    let mut st = state::load(&args.state_dir)?;
    let out = reconcile_with(&mut host, args, &Served::default(), &mut st, false).await?;
    for op in &out.ops {
        println!("undone: {op}");
    }
    for e in &out.errors {
        println!("error: {e}");
    }
    println!("writes: {}", out.writes);
    Ok(if out.errors.is_empty() && st.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The file's identity for change detection: modification time and length.
fn stamp(path: &str) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn log_outcome(out: &apply::Outcome) {
    for op in &out.ops {
        info!("applied: {op}");
    }
    for e in &out.errors {
        error!("failed: {e}");
    }
    let r = &out.readiness;
    let vips: Vec<String> = out.desired.vips.iter().map(ToString::to_string).collect();
    info!(
        "reconciled: writes={} vips={} ({}) ready={} reason={} message={}",
        out.writes,
        vips.len(),
        vips.join(" "),
        r.ready,
        r.reason,
        r.message
    );
}

async fn daemon(args: &Args) -> Result<ExitCode, Error> {
    let path = args.config.clone().unwrap_or_default();
    let shared = health::shared();
    if let Some(addr) = args.health {
        let server = health::bind(addr, shared.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = server.await {
                error!("health endpoint stopped: {e}");
            }
        });
        info!("health endpoint on http://{addr}/healthz and /readyz");
    }
    let mut host = Host::open(&args.nft)?;
    let mut st = state::load(&args.state_dir)?;
    let mut served = load_served(args)?;
    let mut seen = stamp(&path);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_full = Instant::now();
    let mut reload = false;
    info!(
        "web daemon started: config {path}, state {}, VIP device {}",
        args.state_dir.display(),
        args.options.vip_device.name()
    );
    loop {
        if reload {
            reload = false;
            match load_served(args) {
                Ok(new) => {
                    info!("configuration reloaded from {path}");
                    served = new;
                    next_full = Instant::now();
                }
                // A file that does not parse changes nothing: the host keeps what it has.
                Err(e) => warn!("configuration not reloaded, keeping the last good one: {e}"),
            }
        }
        if Instant::now() >= next_full {
            match reconcile_with(&mut host, args, &served, &mut st, false).await {
                Ok(out) => {
                    log_outcome(&out);
                    health::set_readiness(&shared, out.readiness);
                }
                Err(e) => error!("reconcile failed: {e}"),
            }
            next_full = Instant::now() + args.interval;
        }
        health::turn(&shared);
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload = true,
            _ = tick.tick() => {
                let now = stamp(&path);
                if now != seen {
                    seen = now;
                    reload = true;
                }
            }
        }
    }
    if args.cleanup_on_exit {
        info!("stopping: --cleanup-on-exit, undoing lvstun's changes");
        let out = reconcile_with(&mut host, args, &Served::default(), &mut st, false).await?;
        log_outcome(&out);
    } else {
        info!("stopping: the host keeps its configuration (web cleanup undoes it)");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn command_lines_parse() {
        let a = parse_args(&args(
            "--config f.yaml --real-server web1 --health-port 9100",
        ))
        .unwrap();
        assert_eq!(a.mode, Mode::Daemon);
        assert_eq!(a.config.as_deref(), Some("f.yaml"));
        assert_eq!(
            a.identity,
            Some(Identity::Name {
                namespace: None,
                name: "web1".into()
            })
        );
        assert_eq!(a.health, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(a.options, Options::default());

        let a = parse_args(&args(
            "check --config f --node-address 198.51.100.10 --vip-device tunl0 --mss off --uplink eth1 --uplink eth2",
        ))
        .unwrap();
        assert_eq!(a.mode, Mode::Check);
        assert_eq!(a.options.vip_device, VipDevice::Tunl0);
        assert_eq!(a.options.mss, MssMode::Off);
        assert_eq!(a.options.uplinks, vec!["eth1", "eth2"]);

        let a = parse_args(&args("apply --config f --real-server ns/web1 --mss 1400")).unwrap();
        assert_eq!(a.options.mss, MssMode::Fixed(1400));
        assert!(matches!(
            a.identity,
            Some(Identity::Name {
                namespace: Some(_),
                ..
            })
        ));

        assert_eq!(parse_args(&args("cleanup")).unwrap().mode, Mode::Cleanup);
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for bad in [
            "--real-server web1",
            "--config f",
            "--config f --real-server web1 --mss 10",
            "--config f --real-server web1 --vip-device this-name-is-too-long",
            "--config f --node-address 2001:db8::1",
            "--config f --real-server /web1",
            "--config f --real-server web1 --health-port 0",
            "--config f --real-server web1 --bogus",
            "--config",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad}");
        }
    }
}
