//! `lvstun-node balancer`: the command line and the wiring of source, health checker, kernel
//! and loop. Parsing is pure; [`main`] does the I/O.
//!
//! The flags are [`BalancerCli`]'s (`lvstun-node balancer --help`); what they mean:
//!
//! - `--config FILE`: standalone mode, the objects come from the file (every VirtualService in
//!   it concerns this host). Without it, the daemon runs in a cluster: it watches the API and
//!   serves the VirtualServices whose `spec.balancers.nodeSelector` matches its node's labels.
//! - `--node-name`: this node (default: `$NODE_NAME`, as the DaemonSet sets it from the
//!   downward API; standalone: the host name).
//! - `--state-dir` (default `/run/lvstun`): where the owned VIPs are recorded
//!   (`balancer-owned.json`), and the VIP addresses the VRRP routers put on interfaces
//!   (`balancer-addresses.json`, removed at the next start).
//! - `--health-port`: serve `/healthz`, `/readyz`, `/metrics` on each `--health-address`
//!   (repeatable, default `0.0.0.0`; the operator gives loopback and the node's address,
//!   [`crate::listen`]).
//! - `--resync` (default 30): seconds between full passes that repair drift.
//! - `--vip-owner` (default `vrrp`): who holds the VIPs. `vrrp`: this daemon, by VRRP
//!   ([`owner`]). `none`: something else does (an administrator, keepalived, a routing daemon
//!   announcing them), and this daemon only programs IPVS; its status entries then say
//!   `Initialize`. Running `lvstun-node vrrp` or keepalived for the same VRID beside a `vrrp`
//!   balancer would make two routers on one node: choose one.
//! - `--ipvs-sysctl-dir` (default `/proc/sys/net/ipv4/vs`): where the daemon reads and writes
//!   the IPVS sysctls ([`sysctl`]). In a pod `/proc/sys` is read-only, so the operator's
//!   DaemonSet mounts the node's `/proc/sys/net/ipv4/vs` at
//!   `/host/proc/sys/net/ipv4/vs` and passes that (ADR 0005). The settings are checked at start
//!   and every `--resync`; what cannot be set is logged when it starts or changes, shown in the
//!   status entries (`refusedKernelSettings`) and in `lvstun_balancer_sysctl_refused`.
//! - `prepare`: run as the balancer pod's init container: makes the kernel load `ip_vs` (by
//!   resolving the IPVS generic netlink family, which autoloads the module) and checks that
//!   `/proc/sys/net/ipv4/vs` exists, so the main container's mount of it has a source. It needs
//!   no capability; it exits 0 when the directory is there, non-zero (with the reason) when the
//!   kernel has no IPVS.
//! - `--daemonset NAME` (in a cluster): this daemon's DaemonSet, in `$POD_NAMESPACE`. At
//!   SIGTERM the daemon reads it and its Node to decide whether the pod is being replaced
//!   (keep the node as it is) or the daemon is leaving this node for good (tear down), see
//!   [`crate::exit`] and ADR 0008. Without it, the node is always kept.
//! - `cleanup`: undo by hand what the records in `--state-dir` say a balancer put in this
//!   node's kernel (the teardown, [`super::teardown`], without a VRRP handover): for a node
//!   whose daemon was stopped without tearing down (the API could not answer, `helm uninstall
//!   --no-hooks`). Run it only where no lvstun balancer runs any more. Exit 0 when everything
//!   was undone.
//! - `--dry-run`: everything but the kernel: the plan is applied to an in-memory table that
//!   starts empty, and the log lists every operation that would have been sent (the owned-VIPs
//!   record is not written). In a cluster, status entries are still written (marked by the
//!   message), which is how the in-cluster path is tested on hosts without IPVS.
//!
//! Flags take their value as the next argument or after `=` (the DaemonSet passes
//! `--node-name=$(NODE_NAME)`). SIGTERM and SIGINT hand the VIPs over (each VRRP router that
//! is Master sends priority 0 and removes its VIP, see [`owner`]) while the exit decision is
//! read from the API; then the daemon either leaves the kernel's IPVS table as it is (a
//! restart: the next daemon adopts it) or tears down (logged line by line as `teardown: ...`).
//! SIGHUP re-reads the file.
//!
//! VIP ownership runs beside the loop on the same snapshots: one VRRP router per VIP of the
//! VirtualServices this node programs ([`super::vips`]), holding the VIP while Master. With
//! `--dry-run` no router runs (its advertisements would take the VIP from the real Master).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::{Subcommand, ValueEnum, value_parser};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::desired::ObjectRef;
use super::owner::{self, lock_vips};
use super::run::{Balancer, DryRun, Options, SharedReport, lock};
use super::{http, report, state, teardown};
use crate::error::Error;
use crate::exit::{self, Decision};
use crate::health::checker::Checker;
use crate::listen::listen_on;
use crate::logging::{LogFormat, init_logging};
use crate::net::ipvs_sysctl as sysctl;
use crate::source::{Peers, Snapshot, cluster, file};
use lvstun_crds::kernel_settings;
use lvstun_ipvs::handle::{self, IpvsHandle};

/// Name of the runtime's worker threads (health checks run there).
pub const RUNTIME_THREAD: &str = "lvstun-rt";

/// Longest wait for the VRRP routers to hand over on SIGTERM (priority 0, VIP removed): a
/// stuck netlink answer must not keep a terminating pod alive past its grace period. The exit
/// decision ([`crate::exit::API_TIMEOUT`], 3 s) runs at the same time; the teardown after both
/// is a few netlink requests and file writes. The DaemonSet's grace period (30 s, operator
/// `build.rs`) covers the sum with a wide margin.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// What the warning at an undecidable SIGTERM tells a person to run on the node.
const MANUAL_CLEANUP: &str = "kubectl debug node/<node> --profile=sysadmin \
--image=<the lvstun-node image> -- lvstun-node balancer cleanup --state-dir /host/run/lvstun/<node>";

/// Who holds the VIPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VipOwnerMode {
    /// This daemon, by VRRP.
    Vrrp,
    /// Something else; this daemon programs IPVS only.
    None,
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Args {
    /// Standalone configuration file.
    pub config: Option<String>,
    /// This node's name, if given.
    pub node_name: Option<String>,
    /// Where the owned VIPs are recorded.
    pub state_dir: PathBuf,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub health: Vec<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Period of the full resync.
    pub resync: Duration,
    /// Plan against an in-memory table instead of the kernel (nothing is programmed).
    pub dry_run: bool,
    /// Who holds the VIPs.
    pub vip_owner: VipOwnerMode,
    /// Where the IPVS sysctls are read and written.
    pub ipvs_sysctl_dir: PathBuf,
    /// This daemon's DaemonSet, asked about at SIGTERM (ADR 0008).
    pub daemonset: Option<String>,
    /// Standalone: the only hosts whose VRRP advertisements count (empty: any).
    pub vrrp_peers: Vec<Ipv4Addr>,
}

/// `lvstun-node balancer`: the daemon (the flags, see the module comment), or one of its two
/// one-shot steps.
#[derive(Debug, clap::Args)]
#[group(skip)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BalancerCli {
    /// A one-shot step instead of the daemon.
    #[command(subcommand)]
    step: Option<Step>,
    /// The daemon's flags.
    #[command(flatten)]
    daemon: DaemonCli,
}

/// The one-shot steps of the balancer role.
#[derive(Debug, Subcommand)]
enum Step {
    /// Load ip_vs and check that its sysctls exist (the balancer pod's init container; exit 0
    /// when they do)
    Prepare,
    /// Undo what the records in --state-dir say a balancer put in this node's kernel, without a
    /// VRRP handover; only where no lvstun balancer runs any more (exit 0 when all is undone)
    Cleanup(Records),
    /// Validate a standalone configuration file as the API server would (schema, CEL rules,
    /// unknown fields) without touching the kernel; prints every refusal, exit 0 when it is
    /// valid
    Check {
        /// The file a balancer would read with --config
        #[arg(value_name = "FILE")]
        file: String,
    },
}

/// Where a balancer's records and the IPVS sysctls are, and how it logs: the flags the daemon
/// and `cleanup` share.
#[derive(Debug, clap::Args)]
#[group(skip)]
struct Records {
    /// Where the owned VIPs, the VRRP routers' addresses and the sysctls' earlier values are
    /// recorded
    #[arg(long, value_name = "DIR", default_value = "/run/lvstun")]
    state_dir: PathBuf,
    /// Where the IPVS sysctls are read and written (an absolute path; in a pod, the node's
    /// mounted at /host/proc/sys/net/ipv4/vs)
    #[arg(long, value_name = "DIR", default_value = sysctl::PROC_DIR, value_parser = absolute_dir)]
    ipvs_sysctl_dir: PathBuf,
    /// Log line format
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The daemon's flags, before the checks that [`DaemonCli::args`] adds.
#[derive(Debug, clap::Args)]
#[group(skip)]
struct DaemonCli {
    /// Standalone: the objects come from this file; without it, the daemon watches the API
    #[arg(long, value_name = "FILE")]
    config: Option<String>,
    /// This node [default: $NODE_NAME; standalone: the host name]
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    node_name: Option<String>,
    /// Records, sysctls and logs.
    #[command(flatten)]
    records: Records,
    /// Serve /healthz, /readyz and /metrics on this port
    #[arg(long, value_name = "PORT", value_parser = value_parser!(u16).range(1..))]
    health_port: Option<u16>,
    /// An address the health endpoint listens on (repeatable; the operator gives loopback,
    /// for the kubelet's probes, and the node's address, for scrapes: never 0.0.0.0, which on
    /// a Master includes the VIP) [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    health_address: Vec<IpAddr>,
    /// Seconds between full passes that repair drift (1..3600)
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = value_parser!(u64).range(1..=3600))]
    resync: u64,
    /// Who holds the VIPs: this daemon by VRRP, or something else (then IPVS only)
    #[arg(long, value_name = "OWNER", value_enum, default_value_t = VipOwnerMode::Vrrp)]
    vip_owner: VipOwnerMode,
    /// In a cluster: this daemon's DaemonSet in $POD_NAMESPACE, read at SIGTERM to choose
    /// between keeping the node and tearing down (ADR 0008)
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new(),
          conflicts_with = "config")]
    daemonset: Option<String>,
    /// Everything but the kernel: plan against an in-memory table and log the operations
    #[arg(long)]
    dry_run: bool,
    /// Standalone: the only addresses whose VRRP advertisements count, comma-separated (the
    /// balancers of this host's VIPs; unicastPeers, when a VirtualService names them, win);
    /// without it any sender on the link is heard. In a cluster the peers are the InternalIPs
    /// of the Nodes a VirtualService's spec.balancers.nodeSelector selects
    #[arg(
        long,
        value_name = "IP,...",
        value_delimiter = ',',
        requires = "config"
    )]
    vrrp_peers: Vec<Ipv4Addr>,
}

impl DaemonCli {
    /// The parsed command line.
    fn args(self) -> Args {
        let Records {
            state_dir,
            ipvs_sysctl_dir,
            log_format,
        } = self.records;
        Args {
            config: self.config,
            node_name: self.node_name,
            state_dir,
            health: listen_on(
                self.health_port,
                &self.health_address,
                Ipv4Addr::UNSPECIFIED,
            ),
            log_format,
            resync: Duration::from_secs(self.resync),
            dry_run: self.dry_run,
            vip_owner: self.vip_owner,
            ipvs_sysctl_dir,
            daemonset: self.daemonset,
            vrrp_peers: self.vrrp_peers,
        }
    }
}

/// `--ipvs-sysctl-dir`: an absolute path (a relative one would depend on where the daemon was
/// started).
fn absolute_dir(value: &str) -> Result<PathBuf, Error> {
    if !value.starts_with('/') {
        return Err(Error::invalid(
            "--ipvs-sysctl-dir",
            value,
            "expected an absolute path",
        ));
    }
    Ok(PathBuf::from(value))
}

/// The host name, for a standalone balancer without `--node-name`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "standalone".to_owned())
}

/// Runs `lvstun-node balancer ...`.
pub fn main(cli: BalancerCli) -> Result<ExitCode, Error> {
    match cli.step {
        Some(Step::Prepare) => return prepare(),
        Some(Step::Check { file }) => return Ok(check(&file)),
        Some(Step::Cleanup(records)) => {
            init_logging(records.log_format);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            return runtime.block_on(cleanup(records));
        }
        None => {}
    }
    let args = cli.daemon.args();
    init_logging(args.log_format);
    // The loop runs its passes on this thread (`block_on`); health checks, the source and the
    // HTTP endpoint are spawned onto two workers. A pass over a hundred thousand destinations
    // is a stretch of CPU work, and a probe must never time out because a pass held its
    // thread: that would turn a large table into flapping real servers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(RUNTIME_THREAD)
        .enable_all()
        .build()?;
    runtime.block_on(daemon(args))
}

/// `lvstun-node balancer check FILE`: the file's verdict on stdout, exit 0 when valid, 1 when
/// not (the same parser, with the same messages, as a running balancer's `--config`).
fn check(file: &str) -> ExitCode {
    match crate::source::config::load(file) {
        Ok(objects) => {
            println!(
                "{file}: valid: {} VirtualServices, {} RealServers",
                objects.virtual_services.len(),
                objects.real_servers.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn daemon(args: Args) -> Result<ExitCode, Error> {
    let node = args
        .node_name
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()));
    // What an earlier run left goes first, before anything that may wait (the API server): a
    // VIP of a process that died must not wait for its successor to reach the API server (a
    // dry run changes nothing).
    let held = match args.vip_owner {
        VipOwnerMode::Vrrp => {
            Some(owner::remove_held((!args.dry_run).then_some(args.state_dir.as_path())).await)
        }
        VipOwnerMode::None => None,
    };
    // The health endpoint serves from the start, on reports the loop and the VIP owner fill in
    // later: alive (and not ready) while the daemon waits for the API server.
    let report = SharedReport::default();
    let vips = owner::SharedVips::default();
    for &addr in &args.health {
        // Two missed resyncs and a margin: the loop turns at least once per resync.
        let stale = args.resync * 2 + Duration::from_secs(30);
        let server = http::bind(addr, report.clone(), vips.clone(), stale).await?;
        tokio::spawn(async move {
            if let Err(e) = server.await {
                error!("health endpoint stopped: {e}");
            }
        });
        info!("health endpoint on http://{addr}/healthz, /readyz and /metrics");
    }
    let mut client = None;
    let (source, _source_task): (watch::Receiver<Arc<Snapshot>>, _) = match &args.config {
        Some(path) => {
            let peers = if args.vrrp_peers.is_empty() {
                Peers::Unknown
            } else {
                Peers::Listed(args.vrrp_peers.clone())
            };
            file::start(path, peers)?
        }
        None => {
            let node = node.clone().ok_or_else(|| {
                Error::Usage(
                    "in a cluster the node name is needed: --node-name or $NODE_NAME".into(),
                )
            })?;
            let c = kube::Client::try_default().await.map_err(|e| Error::Api {
                what: "connect to the API server".into(),
                detail: e.to_string(),
            })?;
            client = Some(c.clone());
            start_cluster_source(&c, &node, &report).await
        }
    };
    let node = node.unwrap_or_else(host_name);
    let exit_check = exit::check(
        client.as_ref(),
        args.daemonset.as_deref(),
        std::env::var("POD_NAMESPACE").ok(),
        &node,
    )?;
    let owned = match state::load(&args.state_dir) {
        Ok(owned) => owned,
        Err(e) => {
            // Without the record, lvstun owns only what it wants now: a VIP deleted meanwhile
            // would be left in the kernel, but nothing foreign is ever touched.
            error!("{e}; starting without the record of owned VIPs (it will be rewritten)");
            Default::default()
        }
    };
    let (checker, events) = Checker::new();
    let statuses = checker.statuses();
    let options = Options {
        state_dir: (!args.dry_run).then(|| args.state_dir.clone()),
        resync: args.resync,
    };
    let mut sysctl_task = None;
    let report = if args.dry_run {
        info!("dry run: the kernel's IPVS table is not touched; operations are only logged");
        log_sysctls(&sysctl::ensure(&args.ipvs_sysctl_dir, true), true);
        let balancer = Balancer::new(DryRun::default(), checker, options, owned.clone())
            .with_report(report.clone());
        let report = balancer.report();
        (report, Runner::DryRun(balancer))
    } else {
        let (connection, raw) = handle::new_connection()?;
        tokio::spawn(connection);
        let ipvs = IpvsHandle::resolve(raw).await?;
        let balancer =
            Balancer::new(ipvs, checker, options, owned.clone()).with_report(report.clone());
        let report = balancer.report();
        // Resolving the family loaded ip_vs, so its sysctls exist now.
        sysctl_task = Some(tokio::spawn(keep_sysctls(
            args.ipvs_sysctl_dir.clone(),
            args.state_dir.clone(),
            report.clone(),
            args.resync,
        )));
        (report, Runner::Kernel(balancer))
    };
    let (report, runner) = report;
    // VIP ownership: one VRRP router per VIP this node programs, from the same snapshots.
    let owner = match held {
        Some(held) => Some(owner::start(
            source.clone(),
            report.clone(),
            vips.clone(),
            node.clone(),
            args.dry_run,
            held,
        )),
        None => {
            info!("--vip-owner none: the VIPs are held by something else; IPVS only");
            None
        }
    };
    if let Some(client) = client {
        let vips = vips.clone();
        let ownership = Arc::new(move |vs: &ObjectRef| lock_vips(&vips).ownership(vs));
        let note = args
            .dry_run
            .then(|| "dry run: nothing is programmed in this node's kernel".to_owned());
        tokio::spawn(report::run(
            client,
            node.clone(),
            report,
            statuses,
            ownership,
            note,
        ));
    }
    info!(
        node,
        mode = if args.config.is_some() {
            "standalone"
        } else {
            "cluster"
        },
        dry_run = args.dry_run,
        vip_owner = ?args.vip_owner,
        daemonset = args.daemonset.as_deref().unwrap_or("-"),
        state = %state::path(&args.state_dir).display(),
        owned = owned.len(),
        resync_s = args.resync.as_secs(),
        "balancer started"
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM"),
            _ = int.recv() => info!("SIGINT"),
        }
        // The VIPs go first, while the loop still runs: a Master says priority 0 and drops
        // its VIP, so a Backup takes over after Skew_Time instead of Master_Down_Interval.
        // Whether the node is then torn down is asked of the API meanwhile (ADR 0008).
        let handover = async {
            if let Some(owner) = owner {
                owner.shutdown(SHUTDOWN_LIMIT).await;
            }
        };
        let decide = exit::at_exit(exit_check.as_ref(), "balancer", MANUAL_CLEANUP);
        tokio::join!(handover, decide).1
    };
    match runner {
        Runner::Kernel(b) => {
            let (mut b, decision) = b.run(source, events, shutdown).await;
            if decision.as_ref().is_some_and(Decision::teardown) {
                // Nothing may set a sysctl again behind the restore.
                if let Some(task) = sysctl_task {
                    task.abort();
                }
                let (ipvs, owned) = b.kernel_and_owned();
                let owned = owned.clone();
                teardown::run(ipvs, &args.state_dir, &args.ipvs_sysctl_dir, &owned).await;
            } else {
                info!("stopping: the IPVS table stays as it is");
            }
        }
        Runner::DryRun(b) => {
            let (_, decision) = b.run(source, events, shutdown).await;
            if decision.as_ref().is_some_and(Decision::teardown) {
                info!("dry run: teardown: nothing was programmed, nothing to remove");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// [`cluster::start`], retried until the API server answers. It may be down while this pod
/// starts (the daemon crashed during an outage, the node rebooted before the control plane):
/// the process stays alive and says what it waits for (`/healthz` live, `/readyz` not ready,
/// a warning now and then) instead of exiting into the kubelet's back-off, which grows to five
/// minutes and would keep the node out long after the API server is back.
async fn start_cluster_source(
    client: &kube::Client,
    node: &str,
    report: &SharedReport,
) -> (watch::Receiver<Arc<Snapshot>>, tokio::task::JoinHandle<()>) {
    let mut attempt: u32 = 0;
    loop {
        match cluster::start(client.clone(), node).await {
            Ok(started) => {
                if attempt > 0 {
                    info!(
                        attempts = attempt + 1,
                        "read this node's VirtualServices and RealServers"
                    );
                }
                lock(report).waiting = None;
                return started;
            }
            Err(e) => {
                attempt += 1;
                if attempt == 1 || attempt.is_multiple_of(10) {
                    warn!(
                        attempt,
                        "cannot read this node's VirtualServices yet, retrying: {e}"
                    );
                }
                lock(report).waiting = Some(format!("the API server ({e})"));
                tokio::time::sleep(report::doubling_delay(attempt, START_RETRY_MAX)).await;
            }
        }
    }
}

/// The longest wait between two attempts to reach the API server at start: the daemon
/// follows within this long once it is back.
const START_RETRY_MAX: Duration = Duration::from_secs(5);

/// `lvstun-node balancer cleanup`: the teardown by hand, without a VRRP handover (no router
/// runs). Exit 0 when everything recorded was undone.
async fn cleanup(args: Records) -> Result<ExitCode, Error> {
    let (connection, raw) = handle::new_connection()?;
    tokio::spawn(connection);
    let mut ipvs = IpvsHandle::resolve(raw).await?;
    let summary = teardown::run(
        &mut ipvs,
        &args.state_dir,
        &args.ipvs_sysctl_dir,
        &Default::default(),
    )
    .await;
    Ok(if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `lvstun-node balancer prepare` (the balancer pod's init container): loads `ip_vs` by
/// resolving its generic netlink family and checks that the IPVS sysctls appeared. Why a
/// separate step: the balancer container mounts the node's `/proc/sys/net/ipv4/vs`, which
/// exists only once `ip_vs` is loaded, and a container whose mount source is missing does not
/// start; an init container runs before it (ADR 0005). The family request needs no capability
/// (nlctrl's GETFAMILY is not admin-only; the kernel loads the module itself).
fn prepare() -> Result<ExitCode, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (connection, raw) = handle::new_connection()?;
        let connection = tokio::spawn(connection);
        let resolved = IpvsHandle::resolve(raw).await;
        connection.abort();
        resolved.map(|_| ())
    })?;
    let dir = Path::new(sysctl::PROC_DIR);
    if !dir.is_dir() {
        return Err(Error::File {
            path: dir.display().to_string(),
            detail: "the IPVS family answered but its sysctls are missing (a kernel without \
                     CONFIG_SYSCTL, or a network namespace that hides them)"
                .into(),
        });
    }
    println!("ip_vs is loaded: {} is present", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Keeps the IPVS sysctls at lvstun's values: at start, then every `period`, so a value someone
/// reset is repaired and a refusal fixed on the host clears. Publishes the refused ones in the
/// report (status entries, `/metrics`); logs a refusal when it starts or changes, not every
/// period. Reading and writing two small `/proc` files is quick enough for the runtime's thread.
///
/// Before a setting is first written, its value is recorded in `state_dir`
/// ([`state::save_sysctls`]) so a teardown can put it back (ADR 0008); a record that cannot be
/// written is logged and the setting still written (forwarding right matters more).
async fn keep_sysctls(dir: PathBuf, state_dir: PathBuf, report: SharedReport, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tick.tick().await;
        let outcomes = sysctl::ensure_recorded(&dir, false, |changes| {
            let mut originals = match state::load_sysctls(&state_dir) {
                Ok(o) => o,
                Err(e) => {
                    error!("{e}; the values before lvstun of the IPVS sysctls are not recorded");
                    return;
                }
            };
            if sysctl::remember(&mut originals, changes)
                && let Err(e) = state::save_sysctls(&state_dir, &originals)
            {
                error!("{e}; the values before lvstun of the IPVS sysctls are not recorded");
            }
        });
        let now = sysctl::refused(&outcomes);
        let before = std::mem::replace(&mut lock(&report).refused_kernel_settings, now.clone());
        log_sysctls(&outcomes, first || before != now);
        if !before.is_empty() && now.is_empty() {
            info!(dir = %dir.display(), "every net.ipv4.vs sysctl now holds lvstun's value");
        }
        first = false;
    }
}

/// Says what became of each IPVS sysctl lvstun wants (see [`sysctl`]); refusals only when
/// `refusals` (they repeat every period until fixed).
fn log_sysctls(outcomes: &[sysctl::Outcome], refusals: bool) {
    for outcome in outcomes {
        match outcome {
            sysctl::Outcome::Set(c) => info!(
                sysctl = c.name,
                from = ?c.current,
                to = c.wanted,
                "set net.ipv4.vs sysctl"
            ),
            sysctl::Outcome::WouldSet(c) => info!(
                sysctl = c.name,
                from = ?c.current,
                to = c.wanted,
                "dry run: would set net.ipv4.vs sysctl"
            ),
            sysctl::Outcome::Refused(c, reason, detail) if refusals => warn!(
                sysctl = c.name,
                from = ?c.current,
                to = c.wanted,
                reason = reason.as_str(),
                detail,
                fix = kernel_settings::fix(c.name, i64::from(c.wanted), *reason),
                "cannot set net.ipv4.vs sysctl: {}",
                sysctl::consequence(c.name)
            ),
            sysctl::Outcome::Refused(..) => {}
        }
    }
}

/// The loop over the kernel, or over an in-memory table.
enum Runner {
    Kernel(Balancer<IpvsHandle, Checker>),
    DryRun(Balancer<DryRun, Checker>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `lvstun-node balancer LINE` with the real definition.
    fn parse(line: &str) -> Result<BalancerCli, clap::Error> {
        use clap::Parser;
        let argv = ["lvstun-node", "balancer"]
            .into_iter()
            .chain(line.split_whitespace());
        match crate::Cli::try_parse_from(argv)?.command {
            Some(crate::Command::Balancer(cli)) => Ok(*cli),
            other => panic!("not the balancer command: {other:?}"),
        }
    }

    /// The daemon's arguments of `lvstun-node balancer LINE`.
    fn parse_args(line: &str) -> Result<Args, clap::Error> {
        let cli = parse(line)?;
        assert!(cli.step.is_none(), "{line}: a step, not the daemon");
        Ok(cli.daemon.args())
    }

    /// The arguments of `lvstun-node balancer cleanup LINE`.
    fn parse_cleanup_args(line: &str) -> Result<Records, clap::Error> {
        match parse(&format!("cleanup {line}"))?.step {
            Some(Step::Cleanup(records)) => Ok(records),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn the_operators_arguments_parse() {
        // Exactly what operator/src/build.rs `node_args` gives the balancer DaemonSet.
        let a = parse_args(
            "--node-name=node-a --health-port=9101 --health-address=127.0.0.1 --health-address=192.0.2.11 --log-format=json --ipvs-sysctl-dir=/host/proc/sys/net/ipv4/vs --daemonset=lvstun-balancer",
        )
        .unwrap();
        assert_eq!(a.daemonset.as_deref(), Some("lvstun-balancer"));
        assert_eq!(
            a.ipvs_sysctl_dir,
            PathBuf::from("/host/proc/sys/net/ipv4/vs")
        );
        assert_eq!(a.node_name.as_deref(), Some("node-a"));
        assert_eq!(
            a.health,
            vec![
                "127.0.0.1:9101".parse().unwrap(),
                "192.0.2.11:9101".parse().unwrap()
            ]
        );
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(a.config, None);
        assert_eq!(a.state_dir, PathBuf::from("/run/lvstun"));
    }

    #[test]
    fn standalone_arguments_parse() {
        let a = parse_args(
            "--config /etc/lvstun.yaml --state-dir /tmp/s --health-port 9100 --health-address 127.0.0.1 --resync 5 --dry-run",
        )
        .unwrap();
        assert!(a.dry_run);
        assert_eq!(a.config.as_deref(), Some("/etc/lvstun.yaml"));
        assert_eq!(a.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(a.health, vec!["127.0.0.1:9100".parse().unwrap()]);
        assert_eq!(a.resync, Duration::from_secs(5));
        assert_eq!(a.log_format, LogFormat::Text);
        assert_eq!(
            a.ipvs_sysctl_dir,
            PathBuf::from("/proc/sys/net/ipv4/vs"),
            "a standalone host writes its own /proc/sys"
        );
        assert_eq!(
            a.vip_owner,
            VipOwnerMode::Vrrp,
            "VRRP unless told otherwise"
        );
        let a = parse_args("--config f --vip-owner none").unwrap();
        assert_eq!(a.vip_owner, VipOwnerMode::None);
        let a = parse_args("--vip-owner=vrrp").unwrap();
        assert_eq!(a.vip_owner, VipOwnerMode::Vrrp);
        // A flag given twice keeps its last value, as before clap.
        let a = parse_args("--resync 5 --resync=7 --dry-run --dry-run").unwrap();
        assert_eq!(a.resync, Duration::from_secs(7));
        let a = parse_args("").unwrap();
        assert_eq!((a.health, a.resync), (vec![], Duration::from_secs(30)));
    }

    #[test]
    fn cleanup_takes_where_the_records_and_sysctls_are() {
        let a = parse_cleanup_args(
            "--state-dir /host/run/lvstun --ipvs-sysctl-dir=/proc/sys/net/ipv4/vs --log-format json",
        )
        .unwrap();
        assert_eq!(a.state_dir, PathBuf::from("/host/run/lvstun"));
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(
            parse_cleanup_args("").unwrap().state_dir,
            PathBuf::from("/run/lvstun")
        );
        for bad in [
            "--config f",
            "--dry-run",
            "--daemonset x",
            "--health-port 1",
        ] {
            assert!(parse_cleanup_args(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prepare_takes_no_arguments() {
        // Refused before any I/O: the init container's arguments are exactly `balancer prepare`.
        assert!(matches!(
            parse("prepare").unwrap().step,
            Some(Step::Prepare)
        ));
        let err = parse("prepare --bogus").unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        // Nor does a step take the daemon's flags, before or after its name.
        assert!(parse("--dry-run prepare").is_err());
        assert!(parse("prepare --dry-run").is_err());
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            "--config",
            "--health-port 0",
            "--health-port=x",
            "--log-format yaml",
            "--resync 0",
            "--node-name=",
            "--dry-run=yes",
            "--vip-owner bgp",
            "--ipvs-sysctl-dir",
            "--ipvs-sysctl-dir=relative/vs",
            "--daemonset=",
            "--config f --daemonset lvstun-balancer",
            "--bogus",
            "stray",
        ] {
            let err = parse_args(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }
}
