//! One virtual router with the real side effects, as a task on the VRRP thread: [`run_with`] is
//! what the balancer role's VIP ownership (`balancer::owner`) calls per VRID, and what
//! `lvstun-node vrrp` runs. Also the pure mapping from a VirtualService's `spec.balancers` to a
//! [`RouterConfig`]: [`priority_for`] and [`router_config`].
//!
//! `run_with` does I/O (interface lookup, sockets, netlink) on the VRRP thread
//! (`lvstun_vrrp::thread`: a thread and a runtime of its own, so that the health checks, the
//! IPVS passes and the watchers on the main runtime cannot delay an advertisement), except the
//! kernel calls of the router's actions, which are made on the ops thread
//! (`lvstun_vrrp::detached`); the caller gets channels and a `JoinHandle`, which work from any
//! runtime. The two mapping functions do none.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use lvstun_crds::v1alpha1::{Balancers, NodePriority};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use lvstun_vrrp::detached::Detached;
use lvstun_vrrp::driver::{Control, Driver, Sockets, Status, VipOps};
use lvstun_vrrp::fsm::{AdverInterval, ConfigError, Priority, Router, RouterConfig};
use lvstun_vrrp::link_watch::{self, LinkEvents, LinkFollower};
use lvstun_vrrp::ops::{Interface, KernelOps};
use lvstun_vrrp::packet::{ChecksumForm, Sources};
use lvstun_vrrp::thread;

/// Priority of the first balancer in node-name order when no override is given.
pub const TOP_PRIORITY: u8 = 200;
/// How much each next balancer in name order gets less.
pub const PRIORITY_STEP: u8 = 10;

/// Why a VirtualService's election settings cannot become a virtual router.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The state machine refused the result.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A number out of the range the API promises (the CRD's schema should have refused it).
    #[error("{field} = {value} is out of range")]
    OutOfRange {
        /// The spec field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A unicast peer that is not an IPv4 address.
    #[error("unicast peer {0:?} is not an IPv4 address")]
    BadPeer(String),
}

/// This node's VRRP priority among the VIP's balancers.
///
/// A per-node override wins. Otherwise the order of node names decides: the first name gets
/// [`TOP_PRIORITY`] (200), the next 190, and so on, never below 1. Name order is the same on
/// every node without any coordination, so every balancer computes the same ranking, and a
/// node's rank does not depend on which nodes are up. A node absent from `balancer_nodes`
/// ranks after all of them. `balancer_nodes` need not be sorted nor deduplicated; this
/// function does both. An override outside 1..=254 is refused, not clamped.
pub fn priority_for(
    node: &str,
    balancer_nodes: &[String],
    overrides: &[NodePriority],
) -> Result<Priority, SettingsError> {
    if let Some(o) = overrides.iter().find(|o| o.node_name == node) {
        let value = u8::try_from(o.priority).map_err(|_| SettingsError::OutOfRange {
            field: "spec.balancers.priorities[].priority",
            value: i64::from(o.priority),
        })?;
        return Ok(Priority::new(value)?);
    }
    let mut names: Vec<&str> = balancer_nodes.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let rank = names.iter().position(|n| *n == node).unwrap_or(names.len());
    let drop = u32::try_from(rank)
        .unwrap_or(u32::MAX)
        .saturating_mul(u32::from(PRIORITY_STEP));
    let value = u32::from(TOP_PRIORITY).saturating_sub(drop).max(1);
    Ok(Priority::new(u8::try_from(value).unwrap_or(1))?)
}

/// The virtual router of one VIP on this node, from the VirtualService's `spec.balancers`
/// (RFC 9568 §6.1 parameters: VRID, priority, Advertisement_Interval, Preempt_Mode; and the
/// number of missed advertisements that makes Master_Down_Interval, RFC 9568's fixed 3 by
/// default), and the unicast peers to advertise to (empty = multicast). Pure.
pub fn router_config(
    balancers: &Balancers,
    vip: Ipv4Addr,
    node: &str,
    balancer_nodes: &[String],
    primary_ip: Ipv4Addr,
) -> Result<(RouterConfig, Vec<Ipv4Addr>), SettingsError> {
    let vrid =
        u8::try_from(balancers.virtual_router_id).map_err(|_| SettingsError::OutOfRange {
            field: "spec.balancers.virtualRouterID",
            value: i64::from(balancers.virtual_router_id),
        })?;
    let interval_ms = u64::try_from(balancers.advert_interval_milliseconds).map_err(|_| {
        SettingsError::OutOfRange {
            field: "spec.balancers.advertIntervalMilliseconds",
            value: i64::from(balancers.advert_interval_milliseconds),
        }
    })?;
    let delay_s = u64::try_from(balancers.preempt_delay_seconds.unwrap_or(0)).map_err(|_| {
        SettingsError::OutOfRange {
            field: "spec.balancers.preemptDelaySeconds",
            value: i64::from(balancers.preempt_delay_seconds.unwrap_or(0)),
        }
    })?;
    let missed =
        u8::try_from(balancers.missed_advertisements).map_err(|_| SettingsError::OutOfRange {
            field: "spec.balancers.missedAdvertisements",
            value: i64::from(balancers.missed_advertisements),
        })?;
    let mut cfg = RouterConfig::new(vrid, primary_ip, vec![vip]);
    cfg.priority = priority_for(node, balancer_nodes, &balancers.priorities)?;
    cfg.adver_int = AdverInterval::from_millis(interval_ms)?;
    cfg.preempt = balancers.preempt;
    cfg.preempt_delay = Duration::from_secs(delay_s);
    cfg.missed_adverts = missed;
    cfg.validate()?;
    let peers = balancers
        .unicast_peers
        .iter()
        .map(|p| p.parse().map_err(|_| SettingsError::BadPeer(p.clone())))
        .collect::<Result<Vec<Ipv4Addr>, _>>()?;
    // A node does not advertise to itself.
    let peers = peers.into_iter().filter(|p| *p != primary_ip).collect();
    Ok((cfg, peers))
}

/// How to run one virtual router besides its [`RouterConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Unicast peers; empty = multicast to 224.0.0.18.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Run the IPVS connection sync daemon (sync ID = VRID) on the interface.
    pub sync: bool,
    /// Checksum form of the advertisements sent.
    pub checksum: ChecksumForm,
    /// Whose advertisements are heard (changed later with `Control::SetSources`).
    pub sources: Sources,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            unicast_peers: Vec::new(),
            sync: true,
            checksum: ChecksumForm::PseudoHeader,
            sources: Sources::Any,
        }
    }
}

/// A running virtual router.
#[derive(Debug)]
pub struct Running {
    /// The driver task, on the VRRP thread (it can be awaited or aborted from any runtime);
    /// ends after [`Control::Shutdown`] (or when `control` is dropped) with the final status,
    /// after a Master has sent priority 0 and removed its VIPs.
    pub task: JoinHandle<Status>,
    /// State, Master, counters; changes on every event.
    pub status: watch::Receiver<Status>,
    /// Shutdown, priority changes (health), interface down/up.
    pub control: mpsc::Sender<Control>,
}

/// Why a virtual router could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration was refused.
    #[error("invalid VRRP configuration: {0}")]
    Config(#[from] ConfigError),
    /// Interface lookup or the VRRP sockets failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// Netlink (rtnetlink or IPVS) could not be opened.
    #[error("{0}")]
    Kernel(#[from] lvstun_vrrp::Error),
    /// The interface has no IPv4 address to advertise from.
    #[error("interface {0} has no IPv4 address to send VRRP advertisements from")]
    NoAddress(String),
    /// The VRRP thread could not be started, or the router's setup on it panicked.
    #[error("VRRP thread: {0}")]
    Thread(io::Error),
}

/// Starts one virtual router on `interface` with the real side effects ([`KernelOps`], wrapped
/// by `wrap`: the balancer routes IPVS sync through its node-wide hub, the lab command logs
/// each effect) and returns once it runs. `config.primary_ip` 0.0.0.0 means "the interface's
/// first IPv4 address".
///
/// The setup happens on the VRRP thread ([`thread`]), where the router then runs: the
/// interface lookup, the sockets, and the driver task. [`KernelOps`], the netlink connections
/// of whatever `wrap` opens later, and every kernel call of the router live on the ops thread
/// ([`thread::ops_handle`], [`Detached`]). Before the task starts, the VIPs are removed from
/// the interface (idempotent): a daemon that crashed as Master left them there, and a Backup
/// must not answer for them; the state machine adds them again when it becomes Master. Must be
/// called inside a tokio runtime (any: only channels cross), in the process's network
/// namespace (that of both threads, started from it), with CAP_NET_ADMIN and CAP_NET_RAW.
pub async fn run_with<V, F>(
    config: RouterConfig,
    interface: &str,
    options: RunOptions,
    wrap: F,
) -> Result<Running, RunError>
where
    V: VipOps + 'static,
    F: FnOnce(KernelOps) -> V + Send + 'static,
{
    let vrrp = thread::handle().map_err(RunError::Thread)?;
    let setup = start(config, interface.to_owned(), options, wrap);
    // Dropping this future leaves the setup to finish; the `Running` it returns is dropped,
    // and with its control channel the router shuts down.
    vrrp.spawn(setup)
        .await
        .map_err(|e| RunError::Thread(io::Error::other(e)))?
}

/// [`run_with`]'s setup, run as a task on the VRRP thread, so that every socket is registered
/// with that thread's reactor and every connection task and the driver are spawned there.
async fn start<V, F>(
    mut config: RouterConfig,
    interface: String,
    options: RunOptions,
    wrap: F,
) -> Result<Running, RunError>
where
    V: VipOps + 'static,
    F: FnOnce(KernelOps) -> V + Send + 'static,
{
    let io_err = |what: &str| {
        let what = format!("{what} {interface}");
        move |source| RunError::Io { what, source }
    };
    // Subscribed before the lookup reads the carrier, so that no change between them is lost.
    let link_events = LinkEvents::subscribe().map_err(io_err("watch the link of"))?;
    let iface = Interface::lookup(&interface).map_err(io_err("look up interface"))?;
    let mut follower = LinkFollower::new(iface.index(), true);
    let link_now = follower.set(iface.carrier);
    if config.primary_ip.is_unspecified() {
        config.primary_ip = iface
            .primary_ip
            .ok_or_else(|| RunError::NoAddress(interface.clone()))?;
    }
    let vrid = config.vrid;
    let vips = config.vips.clone();
    let router = Router::new(config)?;
    let sockets = Sockets::open(
        &interface,
        router.config().primary_ip,
        options.unicast_peers.is_empty(),
    )
    .map_err(io_err("open VRRP sockets on"))?;
    // The kernel calls are opened, and made, on the ops thread (`detached`): their netlink
    // connections' tasks, where the `sendmsg` that may wait for a kernel lock runs, live there.
    let ops_thread = thread::ops_handle().map_err(RunError::Thread)?;
    let sync_id = options.sync.then_some(vrid);
    let stale = vips.clone();
    let ops = ops_thread
        .spawn(async move {
            let mut ops = KernelOps::open(iface, sync_id).await?;
            ops.remove_vips(&stale)
                .await
                .map_err(|source| RunError::Io {
                    what: "remove stale VIPs from the interface".to_owned(),
                    source,
                })?;
            Ok::<_, RunError>(wrap(ops))
        })
        .await
        .map_err(|e| RunError::Thread(io::Error::other(e)))??;
    let ops = Detached::start(ops, &ops_thread);
    let (driver, status) = Driver::new(router, sockets, options.unicast_peers, ops)
        .map_err(io_err("register VRRP sockets of"))?;
    let driver = driver
        .with_checksum_form(options.checksum)
        .with_sources(options.sources);
    let (control, control_rx) = mpsc::channel(8);
    let watcher = tokio::spawn(link_watch::watch(
        link_events,
        follower,
        control.downgrade(),
    ));
    if let Some(event) = link_now {
        // Started on a link that is down: the router waits in Initialize for it.
        let _ = control.send(event).await;
    }
    let task = tokio::spawn(async move {
        let status = driver.run(control_rx).await;
        watcher.abort();
        status
    });
    Ok(Running {
        task,
        status,
        control,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvstun_crds::v1alpha1::Balancers;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    fn o(node: &str, priority: i32) -> NodePriority {
        NodePriority {
            node_name: node.to_owned(),
            priority,
        }
    }

    fn p(node: &str, nodes: &[&str], overrides: &[NodePriority]) -> u8 {
        priority_for(node, &names(nodes), overrides).unwrap().get()
    }

    #[test]
    fn priorities_follow_name_order() {
        let nodes = ["lb-c", "lb-a", "lb-b", "lb-a"];
        assert_eq!(p("lb-a", &nodes, &[]), 200);
        assert_eq!(p("lb-b", &nodes, &[]), 190);
        assert_eq!(p("lb-c", &nodes, &[]), 180);
        // Not listed: after every listed node.
        assert_eq!(p("lb-z", &nodes, &[]), 170);
    }

    #[test]
    fn priorities_bottom_out_at_one() {
        let nodes: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
        let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
        assert_eq!(p("n19", &refs, &[]), 10);
        assert_eq!(p("n20", &refs, &[]), 1);
        assert_eq!(p("n39", &refs, &[]), 1);
    }

    #[test]
    fn overrides_win_and_are_checked() {
        let nodes = ["a", "b"];
        assert_eq!(p("b", &nodes, &[o("b", 250)]), 250);
        assert_eq!(p("a", &nodes, &[o("b", 250)]), 200);
        for bad in [0, 255, 300, -1] {
            assert!(priority_for("b", &names(&nodes), &[o("b", bad)]).is_err());
        }
    }

    fn balancers() -> Balancers {
        serde_json::from_value(serde_json::json!({
            "nodeSelector": {},
            "virtualRouterID": 51,
            "advertIntervalMilliseconds": 100,
            "preempt": false,
            "preemptDelaySeconds": 5,
            "unicastPeers": ["192.0.2.11", "192.0.2.12"]
        }))
        .unwrap()
    }

    #[test]
    fn router_config_from_the_spec() {
        let vip = Ipv4Addr::new(192, 0, 2, 100);
        let me = Ipv4Addr::new(192, 0, 2, 12);
        let (cfg, peers) =
            router_config(&balancers(), vip, "lb2", &names(&["lb1", "lb2"]), me).unwrap();
        assert_eq!(cfg.vrid, 51);
        assert_eq!(cfg.priority.get(), 190);
        assert_eq!(cfg.adver_int.centis(), 10);
        assert!(!cfg.preempt);
        assert_eq!(cfg.preempt_delay, Duration::from_secs(5));
        // Not given: RFC 9568's factor 3.
        assert_eq!(cfg.missed_adverts, 3);
        assert_eq!(cfg.vips, vec![vip]);
        assert_eq!(peers, vec![Ipv4Addr::new(192, 0, 2, 11)]);
    }

    /// `missedAdvertisements` reaches the state machine: 5 at 100 ms from priority 190 gives
    /// Master_Down_Interval = 5 × 100 ms + (256 − 190)/256 × 100 ms = 525.78125 ms.
    #[test]
    fn missed_advertisements_sets_master_down_interval() {
        let vip = Ipv4Addr::new(192, 0, 2, 100);
        let me = Ipv4Addr::new(192, 0, 2, 12);
        let mut b = balancers();
        b.missed_advertisements = 5;
        let (cfg, _) = router_config(&b, vip, "lb2", &names(&["lb1", "lb2"]), me).unwrap();
        assert_eq!(cfg.missed_adverts, 5);
        let router = Router::new(cfg).unwrap();
        assert_eq!(
            router.master_down_interval(),
            Duration::from_nanos(525_781_250)
        );
        // The default keeps the RFC's interval: 3 × 100 ms + 25.78125 ms.
        let (cfg, _) =
            router_config(&balancers(), vip, "lb2", &names(&["lb1", "lb2"]), me).unwrap();
        assert_eq!(
            Router::new(cfg).unwrap().master_down_interval(),
            Duration::from_nanos(325_781_250)
        );
    }

    #[test]
    fn router_config_refuses_bad_values() {
        let vip = Ipv4Addr::new(192, 0, 2, 100);
        let me = Ipv4Addr::new(192, 0, 2, 12);
        let nodes = names(&["lb1"]);
        let mut b = balancers();
        b.virtual_router_id = 0;
        assert!(router_config(&b, vip, "lb1", &nodes, me).is_err());
        let mut b = balancers();
        b.virtual_router_id = 256;
        assert!(router_config(&b, vip, "lb1", &nodes, me).is_err());
        let mut b = balancers();
        b.advert_interval_milliseconds = 105;
        assert!(router_config(&b, vip, "lb1", &nodes, me).is_err());
        for bad in [0, -1, 256] {
            let mut b = balancers();
            b.missed_advertisements = bad;
            assert!(
                router_config(&b, vip, "lb1", &nodes, me).is_err(),
                "missedAdvertisements {bad}"
            );
        }
        let mut b = balancers();
        b.unicast_peers = vec!["lb2".into()];
        assert!(matches!(
            router_config(&b, vip, "lb1", &nodes, me),
            Err(SettingsError::BadPeer(_))
        ));
        assert!(router_config(&balancers(), me, "lb1", &nodes, me).is_err());
    }
}
