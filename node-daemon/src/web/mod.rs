//! The web role (`lvstun-node web`): prepares a real server to receive connections tunneled by
//! the balancers (ipip) and to answer clients directly from the VIP, as the classic LVS-TUN
//! recipe did by hand with ifcfg-tunl0, ifup-local, sysctl.d and arptables.
//!
//! The modes and flags are [`WebCli`]'s (`lvstun-node web --help`): the daemon in a cluster
//! (no `--config`) or standalone (`--config FILE` and which RealServer this host is:
//! `--real-server`, `--node-address` or `--node-name`); `apply` once (prints the operations and
//! `writes: N`, exit 0 when TunnelReady); `check`, read only (prints TunnelReady and what apply
//! would change, exit 0 when ready); `cleanup` (undo everything lvstun did on this host).
//!
//! Every flag takes its value as the next argument or after `=`: the operator's DaemonSet
//! passes `--node-name=$(NODE_NAME) --health-port=N --health-address=127.0.0.1
//! --health-address=$(NODE_IP) --log-format=json`
//! (`operator/src/build.rs` `node_args`).
//!
//! In a cluster (no `--config`) the daemon watches RealServers and VirtualServices through the
//! API server (`source::cluster::start_web`), serves the VIPs of the VirtualServices that
//! select a RealServer whose `spec.nodeName` is this node (`--node-name`, default
//! `$NODE_NAME`), and reports each such RealServer's `TunnelReady` condition (`report`). The
//! health endpoint listens where `--health-address` says (repeatable; the operator gives
//! loopback and the node's address, [`crate::listen`]), by default on `0.0.0.0` in a cluster;
//! standalone, on `127.0.0.1` (a host outside the cluster has no kubelet probing it).
//!
//! The daemon re-reads the file when it changes (checked every second) or on SIGHUP, and
//! reconciles fully every `--interval` to repair drift. On SIGTERM it exits and leaves the host
//! configured (a restart must not drop traffic) unless `--cleanup-on-exit` says otherwise, or,
//! in a cluster with `--daemonset`, unless its DaemonSet is gone, being deleted or no longer
//! selects this node (ADR 0008, [`crate::exit`]): then it undoes everything, logged line by
//! line as `teardown: ...`. A RealServer that leaves the file (or, in a cluster, is deleted or
//! no longer names this node) is cleaned up by the running daemon.
//!
//! Modules: `desired`, `ops` and `plan` (pure; the file format is `source::config`), `state`
//! (the record of what lvstun changed), `apply` (the reconcile over the `net` seams), `status` (`TunnelReady`), `health`
//! (`/healthz`, `/readyz`), `cluster` (the in-cluster loop) and `report` (`TunnelReady` by
//! server-side apply).

pub mod apply;
pub mod cluster;
pub mod desired;
pub mod health;
pub mod ops;
pub mod plan;
pub mod report;
pub mod state;
pub mod status;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::builder::NonEmptyStringValueParser;
use clap::{ArgGroup, Subcommand, value_parser};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::error::Error;
use crate::listen::listen_on;
use crate::logging::{LogFormat, init_logging};
use crate::net::Host;
use crate::source::config;
use desired::{Identity, MssMode, Options, Served, VipDevice};

/// What the warning at an undecidable SIGTERM tells a person to run on the node.
const MANUAL_CLEANUP: &str = "kubectl debug node/<node> --profile=sysadmin \
--image=<the lvstun-node image> -- lvstun-node web cleanup --state-dir /host/run/lvstun/<node>";

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
    /// Standalone: the file. `None`: in a cluster.
    config: Option<String>,
    /// Standalone: which RealServer(s) this host is (in a cluster: [`Identity::Node`] of
    /// [`cluster_node`], known only at run time).
    identity: Option<Identity>,
    /// `--node-name`, if given.
    node_name: Option<String>,
    options: Options,
    state_dir: PathBuf,
    nft: PathBuf,
    health: Vec<SocketAddr>,
    interval: Duration,
    cleanup_on_exit: bool,
    /// Read the kernel and compute, but never write to it.
    dry_run: bool,
    log_format: LogFormat,
    /// In a cluster: this daemon's DaemonSet, asked about at SIGTERM (ADR 0008).
    daemonset: Option<String>,
}

/// `lvstun-node web`: the daemon, or one of the one-shot modes. Standalone (`--config`), the
/// host must say which RealServer it is; in a cluster, the node's RealServers are those whose
/// `spec.nodeName` is the node.
#[derive(Debug, clap::Args)]
#[group(skip)]
#[command(
    args_conflicts_with_subcommands = true,
    group = identity(),
    mut_arg("config", |a| a.requires("identity")),
    mut_arg("real_server", |a| a.requires("config")),
    mut_arg("node_address", |a| a.requires("config"))
)]
pub struct WebCli {
    /// A one-shot mode instead of the daemon.
    #[command(subcommand)]
    mode: Option<WebMode>,
    /// The flags every mode shares.
    #[command(flatten)]
    options: WebOptions,
    /// In a cluster: this daemon's DaemonSet in $POD_NAMESPACE, read at SIGTERM to choose
    /// between keeping the host configured and tearing down (ADR 0008)
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new(),
          conflicts_with = "config")]
    daemonset: Option<String>,
}

/// The one-shot modes of the web role.
#[derive(Debug, Subcommand)]
enum WebMode {
    /// Apply once; prints the operations and `writes: N`; exit 0 when TunnelReady
    #[command(
        group = identity(),
        mut_arg("config", |a| a.required(true).requires("identity"))
    )]
    Apply(WebOptions),
    /// Read only: prints TunnelReady and what apply would change; exit 0 when ready
    #[command(
        group = identity(),
        mut_arg("config", |a| a.required(true).requires("identity"))
    )]
    Check(WebOptions),
    /// Undo everything lvstun did on this host (the record in --state-dir says what)
    Cleanup(WebOptions),
}

/// The flags that say which RealServer a standalone host is; `--real-server` and
/// `--node-address` win over `--node-name`.
fn identity() -> ArgGroup {
    ArgGroup::new("identity")
        .args(["real_server", "node_address", "node_name"])
        .multiple(true)
}

/// The flags of every mode of the web role.
#[derive(Debug, clap::Args)]
#[group(skip)]
struct WebOptions {
    /// Standalone: the VirtualServices and RealServers come from this file
    #[arg(long, value_name = "FILE")]
    config: Option<String>,
    /// Standalone: this host is the RealServer of this name (any namespace without one)
    #[arg(long, value_name = "[NS/]NAME", value_parser = real_server,
          overrides_with = "node_address")]
    real_server: Option<Identity>,
    /// Standalone: this host is the RealServer of this spec.address
    #[arg(long, value_name = "IP", overrides_with = "real_server")]
    node_address: Option<Ipv4Addr>,
    /// This node: in a cluster [default: $NODE_NAME]; standalone, this host is the
    /// RealServers whose spec.nodeName it is
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    node_name: Option<String>,
    /// Where the VIPs go: a dummy device lvstun creates, or tunl0 itself
    #[arg(long, value_name = "NAME|tunl0", default_value = "lvstun0", value_parser = vip_device)]
    vip_device: VipDevice,
    /// An uplink (repeatable) [default: the interfaces of the default routes and of the
    /// RealServer's address]
    #[arg(long, value_name = "IFACE", value_parser = ifname)]
    uplink: Vec<String>,
    /// The MSS clamp: auto, off or 536..9000
    #[arg(long, value_name = "auto|off|N", default_value = "auto", value_parser = mss)]
    mss: MssMode,
    /// Where the record of what lvstun changed on this host is kept
    #[arg(long, value_name = "DIR", default_value = "/run/lvstun")]
    state_dir: PathBuf,
    /// The nft binary
    #[arg(long, value_name = "PATH", default_value = "nft")]
    nft: PathBuf,
    /// Serve /healthz and /readyz on this port
    #[arg(long, value_name = "PORT", value_parser = value_parser!(u16).range(1..))]
    health_port: Option<u16>,
    /// An address the health endpoint listens on (repeatable; the operator gives loopback and
    /// the node's address) [default: 0.0.0.0 for the daemon in a cluster, else 127.0.0.1]
    #[arg(long, value_name = "IP")]
    health_address: Vec<IpAddr>,
    /// Seconds between full reconciles that repair drift (1..3600)
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = value_parser!(u64).range(1..=3600))]
    interval: u64,
    /// Undo lvstun's changes at SIGTERM
    #[arg(long)]
    cleanup_on_exit: bool,
    /// Read the kernel, compute and log; never write to it
    #[arg(long)]
    dry_run: bool,
    /// Log line format
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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

fn real_server(value: &str) -> Result<Identity, Error> {
    let (namespace, name) = match value.split_once('/') {
        Some((ns, name)) => (Some(ns.to_owned()), name.to_owned()),
        None => (None, value.to_owned()),
    };
    if name.is_empty() || namespace.as_deref() == Some("") {
        return Err(Error::invalid(
            "--real-server",
            value,
            "expected NAME or NAMESPACE/NAME",
        ));
    }
    Ok(Identity::Name { namespace, name })
}

fn vip_device(value: &str) -> Result<VipDevice, Error> {
    Ok(if value == crate::net::link::TUNL0 {
        VipDevice::Tunl0
    } else {
        VipDevice::Dummy(ifname(value)?)
    })
}

fn mss(value: &str) -> Result<MssMode, Error> {
    Ok(match value {
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
    })
}

impl WebCli {
    /// The parsed command line (clap has checked which flags go together).
    fn args(self) -> Args {
        let (mode, options) = match self.mode {
            None => (Mode::Daemon, self.options),
            Some(WebMode::Apply(o)) => (Mode::Apply, o),
            Some(WebMode::Check(o)) => (Mode::Check, o),
            Some(WebMode::Cleanup(o)) => (Mode::Cleanup, o),
        };
        // In a cluster the kubelet probes over the host network and metrics may be scraped
        // from the node's address, as the balancer's are; a standalone host keeps it on
        // loopback.
        let default_ip = if options.config.is_none() && mode == Mode::Daemon {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        // --real-server or --node-address, whichever came last (each overrides the other);
        // standalone, --node-name when neither is given. Without --config, clap lets them
        // through only to cleanup, which serves nothing.
        let given = options
            .real_server
            .or(options.node_address.map(Identity::Address));
        let identity = match (mode, &options.config) {
            (Mode::Cleanup, _) | (_, None) => given,
            (_, Some(_)) => given.or_else(|| options.node_name.clone().map(Identity::Node)),
        };
        Args {
            mode,
            config: options.config,
            identity,
            node_name: options.node_name,
            options: Options {
                vip_device: options.vip_device,
                uplinks: options.uplink,
                mss: options.mss,
            },
            state_dir: options.state_dir,
            nft: options.nft,
            health: listen_on(options.health_port, &options.health_address, default_ip),
            interval: Duration::from_secs(options.interval),
            cleanup_on_exit: options.cleanup_on_exit,
            dry_run: options.dry_run,
            log_format: options.log_format,
            daemonset: self.daemonset,
        }
    }
}

/// The node a cluster-mode daemon serves: `--node-name`, else `$NODE_NAME` (`env`), as the
/// DaemonSet sets it from the downward API.
fn cluster_node(args: &Args, env: Option<String>) -> Result<String, Error> {
    args.node_name
        .clone()
        .or_else(|| env.filter(|n| !n.is_empty()))
        .ok_or_else(|| {
            Error::Usage("in a cluster the node name is needed: --node-name or $NODE_NAME".into())
        })
}

/// Runs `lvstun-node web ...`.
pub fn run(cli: WebCli) -> Result<ExitCode, Error> {
    let args = cli.args();
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match args.mode {
            Mode::Daemon if args.config.is_none() => {
                let node = cluster_node(&args, std::env::var("NODE_NAME").ok())?;
                cluster::daemon(&args, node).await
            }
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
    let identity = args
        .identity
        .as_ref()
        .ok_or_else(|| Error::Usage("no identity".into()))?;
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
    let check = args.mode == Mode::Check || args.dry_run;
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

/// Logs what a reconcile did (with `dry_run`, what it would have done).
fn log_outcome(out: &apply::Outcome, dry_run: bool) {
    for op in &out.ops {
        if dry_run {
            info!("dry run: would apply: {op}");
        } else {
            info!("applied: {op}");
        }
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

/// Starts `/healthz` and `/readyz` when `--health-port` asks for them.
async fn serve_health(args: &Args) -> Result<health::Shared, Error> {
    let shared = health::shared();
    for &addr in &args.health {
        let server = health::bind(addr, shared.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = server.await {
                error!("health endpoint stopped: {e}");
            }
        });
        info!("health endpoint on http://{addr}/healthz and /readyz");
    }
    Ok(shared)
}

async fn daemon(args: &Args) -> Result<ExitCode, Error> {
    let path = args.config.clone().unwrap_or_default();
    let shared = serve_health(args).await?;
    let mut host = Host::open(&args.nft)?;
    let mut st = state::load_or_recover(&args.state_dir)?;
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
            match reconcile_with(&mut host, args, &served, &mut st, args.dry_run).await {
                Ok(out) => {
                    log_outcome(&out, args.dry_run);
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
    stop(&mut host, args, &mut st, false).await
}

/// On SIGTERM: leave the host configured, or undo lvstun's changes with `--cleanup-on-exit` or
/// when the exit decision says `teardown` (ADR 0008). The undo is the plan towards nothing
/// served: exactly what the record in the state folder says lvstun changed (addresses, the
/// dummy device, `tunl0` brought down if lvstun raised it, each interface sysctl back to its
/// value before lvstun while it still holds lvstun's), and lvstun's nft tables.
async fn stop(
    host: &mut Host,
    args: &Args,
    st: &mut state::State,
    teardown: bool,
) -> Result<ExitCode, Error> {
    if args.dry_run {
        info!("stopping: dry run, nothing was changed on this host");
    } else if teardown || args.cleanup_on_exit {
        if !teardown {
            info!("stopping: --cleanup-on-exit, undoing lvstun's changes");
        }
        let out = reconcile_with(host, args, &Served::default(), st, false).await?;
        for op in &out.ops {
            info!("teardown: {op}");
        }
        for e in &out.errors {
            error!("teardown: failed: {e}");
        }
        if out.errors.is_empty() && st.is_empty() {
            info!(
                "teardown: done: {} writes, {} removed",
                out.writes,
                state::path(&args.state_dir).display()
            );
        } else {
            error!(
                "teardown: incomplete: {} writes, {} errors; {} keeps what is left. Run \
                 `lvstun-node web cleanup` on this node to finish",
                out.writes,
                out.errors.len(),
                state::path(&args.state_dir).display()
            );
        }
    } else {
        info!("stopping: the host keeps its configuration (web cleanup undoes it)");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `lvstun-node web LINE` with the real definition.
    fn parse_args(line: &str) -> Result<Args, clap::Error> {
        use clap::Parser;
        let argv = ["lvstun-node", "web"]
            .into_iter()
            .chain(line.split_whitespace());
        match crate::Cli::try_parse_from(argv)?.command {
            Some(crate::Command::Web(cli)) => Ok(cli.args()),
            other => panic!("not the web command: {other:?}"),
        }
    }

    #[test]
    fn command_lines_parse() {
        let a = parse_args("--config f.yaml --real-server web1 --health-port 9100").unwrap();
        assert_eq!(a.mode, Mode::Daemon);
        assert_eq!(a.config.as_deref(), Some("f.yaml"));
        assert_eq!(
            a.identity,
            Some(Identity::Name {
                namespace: None,
                name: "web1".into()
            })
        );
        assert_eq!(a.health, vec!["127.0.0.1:9100".parse().unwrap()]);
        assert_eq!(a.options, Options::default());

        let a = parse_args(
            "check --config f --node-address 198.51.100.10 --vip-device tunl0 --mss off --uplink eth1 --uplink eth2",
        )
        .unwrap();
        assert_eq!(a.mode, Mode::Check);
        assert_eq!(a.options.vip_device, VipDevice::Tunl0);
        assert_eq!(a.options.mss, MssMode::Off);
        assert_eq!(a.options.uplinks, vec!["eth1", "eth2"]);

        let a = parse_args("apply --config f --real-server ns/web1 --mss 1400").unwrap();
        assert_eq!(a.options.mss, MssMode::Fixed(1400));
        assert!(matches!(
            a.identity,
            Some(Identity::Name {
                namespace: Some(_),
                ..
            })
        ));

        assert_eq!(parse_args("cleanup").unwrap().mode, Mode::Cleanup);
    }

    #[test]
    fn the_operators_arguments_parse() {
        // Exactly what operator/src/build.rs `node_args` gives the web DaemonSet (after the
        // role word), with $(NODE_NAME) expanded by the kubelet. Copied, not derived: the
        // operator's lib is not a dependency of lvstun-node (it would build axum
        // and prometheus-client into every node test); the operator's own test
        // `pods_are_least_privilege_host_network_with_probes_and_args` pins the same list.
        let a = parse_args(
            "--node-name=node-a --health-port=9782 --health-address=127.0.0.1 --health-address=192.0.2.21 --log-format=json --daemonset=lvstun-web",
        )
        .unwrap();
        assert_eq!(a.daemonset.as_deref(), Some("lvstun-web"));
        assert_eq!(a.mode, Mode::Daemon);
        assert_eq!(a.config, None, "no --config: in-cluster mode");
        assert_eq!(a.node_name.as_deref(), Some("node-a"));
        assert_eq!(
            a.identity, None,
            "the identity is the node, resolved at run time"
        );
        assert_eq!(cluster_node(&a, None).unwrap(), "node-a");
        assert_eq!(
            a.health,
            vec![
                "127.0.0.1:9782".parse().unwrap(),
                "192.0.2.21:9782".parse().unwrap()
            ]
        );
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(a.state_dir, PathBuf::from("/run/lvstun"));
        assert!(!a.dry_run);
        // Without --health-address a daemon in a cluster keeps listening everywhere, as before.
        let bare = parse_args("--node-name=node-a --health-port=9782").unwrap();
        assert_eq!(bare.health, vec!["0.0.0.0:9782".parse().unwrap()]);
    }

    #[test]
    fn the_operators_vip_device_argument_parses() {
        // What operator/src/build.rs `node_args` appends when the chart sets `web.vipDevice`
        // (pinned there by `the_charts_vip_device_reaches_only_the_web_daemons_arguments`).
        let a = parse_args(
            "--node-name=node-a --health-port=9782 --log-format=json --vip-device=tunl0",
        )
        .unwrap();
        assert_eq!(a.options.vip_device, VipDevice::Tunl0);
        let a = parse_args("--node-name=node-a --vip-device=vips0").unwrap();
        assert_eq!(a.options.vip_device, VipDevice::Dummy("vips0".into()));
    }

    #[test]
    fn the_node_comes_from_the_flag_or_the_downward_api() {
        let a = parse_args("--health-port 9782 --dry-run").unwrap();
        assert!(a.dry_run);
        assert_eq!(cluster_node(&a, Some("node-b".into())).unwrap(), "node-b");
        assert!(cluster_node(&a, Some(String::new())).is_err());
        assert!(cluster_node(&a, None).is_err());
        let a =
            parse_args("--node-name node-a --health-address=127.0.0.1 --health-port=1").unwrap();
        assert_eq!(cluster_node(&a, Some("node-b".into())).unwrap(), "node-a");
        assert_eq!(a.health, vec!["127.0.0.1:1".parse().unwrap()]);
        // Standalone, --node-name names this host's RealServers by spec.nodeName.
        let a = parse_args("--config=f.yaml --node-name=node-a --dry-run").unwrap();
        assert_eq!(a.identity, Some(Identity::Node("node-a".into())));
        // --real-server wins over --node-name.
        let a = parse_args("--config f --node-name n --real-server web1").unwrap();
        assert!(matches!(a.identity, Some(Identity::Name { .. })));
        // --real-server and --node-address: the last one given, as before clap.
        let a = parse_args("--config f --real-server web1 --node-address 198.51.100.10").unwrap();
        assert_eq!(
            a.identity,
            Some(Identity::Address([198, 51, 100, 10].into()))
        );
        let a = parse_args("--config f --node-address 198.51.100.10 --real-server web1").unwrap();
        assert!(matches!(a.identity, Some(Identity::Name { .. })));
        // Repeatable --uplink collects; any other flag given twice keeps its last value.
        let a =
            parse_args("--config f --real-server a --real-server b --mss off --mss 1400").unwrap();
        assert_eq!(a.options.mss, MssMode::Fixed(1400));
        assert!(matches!(a.identity, Some(Identity::Name { name, .. }) if name == "b"));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for bad in [
            "--real-server web1",
            "--node-address 198.51.100.10",
            "check --node-name n",
            "apply",
            "--node-name=",
            "--dry-run=yes",
            "--log-format yaml",
            "--config f",
            "--config f --real-server web1 --mss 10",
            "--config f --real-server web1 --vip-device this-name-is-too-long",
            "--config f --node-address 2001:db8::1",
            "--config f --real-server /web1",
            "--config f --real-server web1 --health-port 0",
            "--config f --real-server web1 --bogus",
            "--config",
            "--daemonset=",
            "--config f --real-server web1 --daemonset lvstun-web",
            "cleanup --daemonset lvstun-web",
            "apply --daemonset lvstun-web --config f --real-server web1",
            "--config f --real-server web1 apply",
        ] {
            let err = parse_args(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }
}
