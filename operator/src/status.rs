//! Folding what the daemons report into the status people read: `Ready`, `VIPActive`, `Degraded`,
//! `Conflict` (and `InPool`) on a VirtualService, with `activeBalancer` and the healthy/total counts that
//! `kubectl get lvsvc` prints; `Healthy` on a RealServer. Also the Events that go with a
//! transition (a new Master, a split brain, a conflict, a server down or up, a kernel setting a
//! balancer could not make, IPVS services another program deleted on a balancer, selected nodes
//! that run no balancer daemon). On a RealServer
//! without `spec.nodeName` (a host outside the cluster), or naming a node without the web label,
//! also its `TunnelReady`, which no web daemon is there to report.
//!
//! Pure: inputs are the objects as read plus the clock reading `now`; the output is the desired
//! operator-owned part of the status, whether it differs from the previous one (so the caller
//! writes only on a change), and the transitions.
//!
//! Which fields each writer owns (server-side apply keeps them apart):
//! - VirtualService: the operator owns `observedGeneration`, the four conditions (and `InPool`
//!   when it is told the VIPPolicy's name),
//!   `activeBalancer`, `healthyRealServers`, `totalRealServers`, `healthySummary`; each balancer
//!   daemon owns its own `balancers[node=<its node>]` entry.
//! - RealServer: the operator owns the `Healthy` condition; the web daemon on `spec.nodeName`
//!   owns `TunnelReady` (`node-daemon/src/web/report.rs`, which writes only on RealServers naming
//!   its node); on a RealServer with no `spec.nodeName` the operator owns `TunnelReady` instead
//!   (status `Unknown`, reason [`Reason::OutsideCluster`]), and on one naming a node that runs
//!   no web daemon (reason [`Reason::NoWebDaemon`]). Which of the two writes it follows from the spec and the
//!   node's labels: when the node runs a web daemon, the operator's apply leaves `TunnelReady`
//!   out, which releases it for the web daemon (which writes with force, so a daemon that starts
//!   before the operator has seen the label still wins). Each balancer daemon owns its
//!   `checks[balancer=<its node>]` entry.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;

use lvstun_crds::conditions::{
    Cond, CondStatus, ConditionType, EventReason, EventType, Reason, address_is_vip_message,
    node_is_balancer_message, set_condition, set_or_remove_condition,
};
use lvstun_crds::v1alpha1::{
    BalancerStatus, ExcludedRealServer, KernelSettingRefusal, RealServer, RealServerStatus,
    RefusedKernelSetting, VirtualService, VirtualServiceStatus, VrrpState,
};
use lvstun_crds::{kernel_settings, kube_proxy};

use crate::build::{label_arguments, runs_daemon};
use crate::validate::{AddressUse, PoolCheck, Verdict};
use lvstun_rules::{ObjectKey, VridClash};

/// How many names a message lists before it says "and N more".
const LIST_LIMIT: usize = 5;

/// Severity of a [`Notice`]: the type of its Event, whose strings live with the rest of the
/// vocabulary.
pub type Severity = EventType;

/// A transition worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Event type.
    pub severity: Severity,
    /// Short fixed reason, e.g. `NewMaster`.
    pub reason: &'static str,
    /// What happened, for people.
    pub note: String,
}

fn warning(reason: &'static str, note: String) -> Notice {
    Notice {
        severity: Severity::Warning,
        reason,
        note,
    }
}

fn normal(reason: &'static str, note: String) -> Notice {
    Notice {
        severity: Severity::Normal,
        reason,
        note,
    }
}

/// How long two live nodes may both report `Master` before it counts as a split brain. A failover
/// looks like this for a while: the new Master reports at once, while the old one (dead, so
/// silent) still reads `Master` until the node controller marks its node NotReady (40 to 50 s by
/// default). During the overlap the node that became Master last is taken as the holder.
pub const SPLIT_BRAIN_GRACE_SECONDS: i64 = 60;

/// Outcome of the VRRP election for one VIP, from the balancers' own reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Election {
    /// Nobody is Master; the reports there are, as `node state` strings.
    NoMaster(Vec<String>),
    /// Exactly one Master.
    Master(String),
    /// Several nodes say Master, for less than [`SPLIT_BRAIN_GRACE_SECONDS`]: `master` became
    /// Master last and is taken as the holder; at `recheck` the overlap becomes a split brain.
    Overlap {
        /// The newest Master.
        master: String,
        /// The others still saying Master.
        others: Vec<String>,
        /// When the overlap turns into a split brain if it lasts.
        recheck: Timestamp,
    },
    /// More than one node has said it is Master for longer than the grace.
    SplitBrain(Vec<String>),
}

impl Election {
    /// The node taken to hold the VIP, if any.
    pub fn holder(&self) -> Option<&str> {
        match self {
            Election::Master(m) | Election::Overlap { master: m, .. } => Some(m),
            Election::NoMaster(_) | Election::SplitBrain(_) => None,
        }
    }
}

/// The selected RealServers of a VirtualService that run on one of its balancer nodes (a node
/// its `spec.balancers.nodeSelector` selects and that runs the balancer daemon, alive or not:
/// a NotReady node is a balancer again when it comes back), sorted by name. They are left out
/// of its VIP (ADR 0009): a node holding the VIP as a real server suppresses ARP for it, which
/// a Master must answer, and its IPVS would schedule again what other balancers tunnel to it.
/// A selected node without the balancer label runs no balancer, so it may be a real server.
pub fn real_servers_on_balancers(
    real_servers: &[&RealServer],
    nodes: &BalancerNodes,
) -> Vec<ExcludedRealServer> {
    let mut out: Vec<ExcludedRealServer> = real_servers
        .iter()
        .filter_map(|rs| {
            let node = rs.spec.node_name.as_ref()?;
            (nodes.selected.contains(node) && !nodes.unlabelled.contains(node)).then(|| {
                ExcludedRealServer {
                    name: rs.metadata.name.clone().unwrap_or_default(),
                    node: Some(node.clone()),
                    reason: Reason::NodeIsBalancer.as_str().to_string(),
                }
            })
        })
        .collect();
    out.sort();
    out
}

/// The selected RealServers of a VirtualService whose `spec.address` is its VIP, sorted by
/// name, except those [`real_servers_on_balancers`] already leaves out (`on_balancers`). They
/// are left out of its VIP: a balancer would tunnel the VIP's traffic to the VIP itself. The
/// other real servers keep serving.
pub fn real_servers_at_vip(
    real_servers: &[&RealServer],
    vip: &str,
    on_balancers: &[ExcludedRealServer],
) -> Vec<ExcludedRealServer> {
    let mut out: Vec<ExcludedRealServer> = real_servers
        .iter()
        .filter(|rs| rs.spec.address == vip)
        .map(|rs| ExcludedRealServer {
            name: rs.metadata.name.clone().unwrap_or_default(),
            node: rs.spec.node_name.clone(),
            reason: Reason::AddressIsVip.as_str().to_string(),
        })
        .filter(|e| !on_balancers.iter().any(|b| b.name == e.name))
        .collect();
    out.sort();
    out
}

/// Whether an exclusion is for the RealServer's address being the VIP ([`Reason::AddressIsVip`]).
fn at_vip(e: &ExcludedRealServer) -> bool {
    e.reason == Reason::AddressIsVip.as_str()
}

/// For people: one left-out RealServer of the VirtualService of `vip`, why, and the fix.
fn exclusion_message(e: &ExcludedRealServer, vip: &str) -> String {
    match e.node.as_deref() {
        Some(node) if !at_vip(e) => node_is_balancer_message(&e.name, node),
        _ => address_is_vip_message(&e.name, vip),
    }
}

/// For people: the RealServers left out (they run on balancer nodes, or their address is the
/// VIP `vip`), why, and the fix.
pub fn excluded_message(excluded: &[ExcludedRealServer], vip: &str) -> String {
    let shown: Vec<String> = excluded
        .iter()
        .take(LIST_LIMIT)
        .map(|e| exclusion_message(e, vip))
        .collect();
    let more = excluded.len().saturating_sub(LIST_LIMIT);
    if more > 0 {
        format!("{} (and {more} more)", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

/// The nodes a VirtualService's `spec.balancers.nodeSelector` selects, which of them run no
/// balancer daemon, and which of those that do are alive (not reported NotReady by the node
/// controller).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BalancerNodes {
    /// Selected nodes.
    pub selected: BTreeSet<String>,
    /// Selected nodes that run a balancer daemon and are not known to be down: the only ones
    /// whose reports count.
    pub live: BTreeSet<String>,
    /// Selected nodes without the chart's balancer label: the balancer DaemonSet does not run
    /// there (ADR 0007), so they can never hold the VIP, and a report they still carry is stale.
    pub unlabelled: BTreeSet<String>,
}

impl BalancerNodes {
    /// All selected nodes are alive and run a balancer daemon.
    pub fn all_live(names: &[&str]) -> Self {
        let selected: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
        BalancerNodes {
            live: selected.clone(),
            selected,
            unlabelled: BTreeSet::new(),
        }
    }

    /// Sorts the selected nodes by what the operator sees of each: `(name, labels, alive)`.
    /// `daemon_selector` is the balancer DaemonSet's node selector (the chart's).
    pub fn classify<'a>(
        selected: impl IntoIterator<Item = (String, &'a BTreeMap<String, String>, bool)>,
        daemon_selector: &BTreeMap<String, String>,
    ) -> Self {
        let mut out = BalancerNodes::default();
        for (name, labels, alive) in selected {
            if !runs_daemon(daemon_selector, labels) {
                out.unlabelled.insert(name.clone());
            } else if alive {
                out.live.insert(name.clone());
            }
            out.selected.insert(name);
        }
        out
    }
}

/// The fix as a command: `kubectl label node <nodes> <labels>`, naming the nodes when they are
/// few enough to type.
fn label_command(nodes: &[String], label: &str) -> String {
    let who = if nodes.len() <= LIST_LIMIT {
        nodes.join(" ")
    } else {
        "<node>...".to_string()
    };
    format!("kubectl label node {who} {label}")
}

/// For people: which selected nodes run no balancer daemon, why, and the label to add. `label`
/// is the chart's balancer node selector as `kubectl label` takes it.
pub fn unlabelled_message(nodes: &BTreeSet<String>, label: &str) -> String {
    let names: Vec<String> = nodes.iter().cloned().collect();
    format!(
        "spec.balancers.nodeSelector selects {} without the label {label}, so no balancer daemon runs there (the balancer DaemonSet runs only on nodes labelled {label}); to use them as balancers: {}",
        list(&names),
        label_command(&names, label)
    )
}

/// A warning Event for selected nodes without the balancer label not announced before
/// (`announced`): the condition carries them as long as they last; the Event says once when a
/// node starts to lack the label.
pub fn unlabelled_notice(
    announced: &BTreeSet<String>,
    unlabelled: &BTreeSet<String>,
    label: &str,
) -> Option<Notice> {
    let fresh: BTreeSet<String> = unlabelled.difference(announced).cloned().collect();
    (!fresh.is_empty()).then(|| {
        warning(
            EventReason::BalancerNodesUnlabelled.as_str(),
            unlabelled_message(&fresh, label),
        )
    })
}

/// The election as the live selected balancer nodes report it at `now`. Other entries are stale
/// and ignored: a node that left the balancer set cannot hold the VIP for this VirtualService,
/// and a node that is down cannot say it lost the VIP, so its last word (often `Master`) must not
/// count. Several Masters are an [`Election::Overlap`] for [`SPLIT_BRAIN_GRACE_SECONDS`] after
/// the newest of them took over (by its `lastTransitionTime`; without one, at once a split
/// brain).
pub fn election(vs: &VirtualService, live: &BTreeSet<String>, now: &Time) -> Election {
    let reports: Vec<_> = vs
        .status
        .iter()
        .flat_map(|s| s.balancers.iter())
        .filter(|b| live.contains(&b.node))
        .collect();
    let mut masters: Vec<_> = reports
        .iter()
        .filter(|b| b.state == VrrpState::Master)
        .collect();
    // Newest Master first; ties by name so everyone picks the same one.
    masters.sort_by(|a, b| {
        let t = |x: &BalancerStatus| x.last_transition_time.as_ref().map(|t| t.0);
        t(b).cmp(&t(a)).then_with(|| a.node.cmp(&b.node))
    });
    masters.dedup_by(|a, b| a.node == b.node);
    match masters.as_slice() {
        [] => {
            let mut seen: Vec<String> = reports
                .iter()
                .map(|b| format!("{} {:?}", b.node, b.state))
                .collect();
            seen.sort();
            Election::NoMaster(seen)
        }
        [one] => Election::Master(one.node.clone()),
        [newest, rest @ ..] => {
            let mut all: Vec<String> = masters.iter().map(|b| b.node.clone()).collect();
            all.sort();
            let since = newest.last_transition_time.as_ref().map(|t| t.0);
            let recheck = since.and_then(|s| {
                s.checked_add(SignedDuration::from_secs(SPLIT_BRAIN_GRACE_SECONDS))
                    .ok()
            });
            match recheck {
                Some(r) if r > now.0 => Election::Overlap {
                    master: newest.node.clone(),
                    others: rest.iter().map(|b| b.node.clone()).collect(),
                    recheck: r,
                },
                _ => Election::SplitBrain(all),
            }
        }
    }
}

/// A kernel setting a live balancer node reports it could not make.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRefusal {
    /// The balancer node.
    pub node: String,
    /// What it could not set, and why.
    pub setting: RefusedKernelSetting,
}

impl KernelRefusal {
    /// What identifies it across folds: node and sysctl.
    pub fn key(&self) -> (String, String) {
        (self.node.clone(), self.setting.name.clone())
    }
}

/// The kernel settings the live selected balancers of `vs` could not make, sorted by node and
/// name. Entries of other nodes are ignored for the same reason as in [`election`]: they do
/// not serve this VIP now.
pub fn kernel_refusals(vs: &VirtualService, live: &BTreeSet<String>) -> Vec<KernelRefusal> {
    let mut out: Vec<KernelRefusal> = vs
        .status
        .iter()
        .flat_map(|s| s.balancers.iter())
        .filter(|b| live.contains(&b.node))
        .flat_map(|b| {
            b.refused_kernel_settings
                .iter()
                .map(|setting| KernelRefusal {
                    node: b.node.clone(),
                    setting: setting.clone(),
                })
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.key() == b.key());
    out
}

/// For people: one sentence per refused setting and reason, naming the nodes, the sysctl and
/// its value, what goes wrong without it and how to fix it.
pub fn kernel_refusal_message(refusals: &[KernelRefusal]) -> String {
    // Refusals of one sysctl for one reason read as one sentence naming every node.
    type Group<'a> = ((&'a str, i64, KernelSettingRefusal), Vec<String>);
    let mut groups: Vec<Group<'_>> = Vec::new();
    for r in refusals {
        let key = (r.setting.name.as_str(), r.setting.wanted, r.setting.reason);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, nodes)) => nodes.push(r.node.clone()),
            None => groups.push((key, vec![r.node.clone()])),
        }
    }
    groups
        .iter()
        .map(|((name, wanted, reason), nodes)| {
            format!(
                "{} cannot set {name}={wanted} ({}): {}; fix: {}",
                list(nodes),
                reason.as_str(),
                kernel_settings::consequence(name),
                kernel_settings::fix(name, *wanted, *reason)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Warning Events for refusals not announced before (`announced` holds their
/// [`KernelRefusal::key`]s): one per node, so each names what that node must fix.
pub fn kernel_notices(
    announced: &BTreeSet<(String, String)>,
    refusals: &[KernelRefusal],
) -> Vec<Notice> {
    let fresh: Vec<&KernelRefusal> = refusals
        .iter()
        .filter(|r| !announced.contains(&r.key()))
        .collect();
    let nodes: BTreeSet<&str> = fresh.iter().map(|r| r.node.as_str()).collect();
    nodes
        .into_iter()
        .map(|node| {
            let of_node: Vec<KernelRefusal> = fresh
                .iter()
                .filter(|r| r.node == node)
                .map(|r| (*r).clone())
                .collect();
            warning(
                EventReason::KernelSettingRefused.as_str(),
                kernel_refusal_message(&of_node),
            )
        })
        .collect()
}

/// A live balancer's report that another program deleted IPVS services of this VirtualService
/// it had programmed (`status.balancers[].deletedExternally`; the balancer keeps it there while
/// deletions keep coming and a few minutes after the last).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExternalDeletion {
    /// The balancer node.
    pub node: String,
    /// The ports (`80/TCP`) whose service it found deleted.
    pub ports: Vec<String>,
}

/// The external deletions the live selected balancers of `vs` report, sorted by node. Entries
/// of other nodes are ignored, as in [`election`].
pub fn external_deletions(vs: &VirtualService, live: &BTreeSet<String>) -> Vec<ExternalDeletion> {
    let mut out: Vec<ExternalDeletion> = vs
        .status
        .iter()
        .flat_map(|s| s.balancers.iter())
        .filter(|b| live.contains(&b.node))
        .filter_map(|b| {
            let d = b.deleted_externally.as_ref()?;
            let mut ports = d.ports.clone();
            ports.sort();
            Some(ExternalDeletion {
                node: b.node.clone(),
                ports,
            })
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.node == b.node);
    out
}

/// For people: which balancers found which services of `vip` deleted, what that costs, the
/// likely cause and its fix (the kube-proxy setting, with the VIP).
pub fn external_deletion_message(vip: &str, deletions: &[ExternalDeletion]) -> String {
    let mut ports: Vec<String> = deletions.iter().flat_map(|d| d.ports.clone()).collect();
    ports.sort();
    ports.dedup();
    let nodes: Vec<String> = deletions.iter().map(|d| d.node.clone()).collect();
    format!(
        "{} found the IPVS service of VIP {vip} ({}) deleted by another program and added it again; each deletion drops its connections until the next resync; {}",
        list(&nodes),
        list(&ports),
        kube_proxy::fix(&[vip])
    )
}

/// Warning Events for balancer nodes whose external deletions were not announced before
/// (`announced`): one per node when its report first shows (again after it cleared).
pub fn external_deletion_notices(
    vip: &str,
    announced: &BTreeSet<String>,
    deletions: &[ExternalDeletion],
) -> Vec<Notice> {
    deletions
        .iter()
        .filter(|d| !announced.contains(&d.node))
        .map(|d| {
            warning(
                EventReason::IpvsServiceDeletedExternally.as_str(),
                external_deletion_message(vip, std::slice::from_ref(d)),
            )
        })
        .collect()
}

/// One real server's state as some observer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Good.
    Healthy,
    /// Bad, with why.
    Unhealthy(String),
    /// Not known yet, with why.
    Unknown(String),
}

impl Health {
    fn is_healthy(&self) -> bool {
        *self == Health::Healthy
    }
}

/// Health of `rs` as seen by `balancer`, from that balancer's entry in `status.checks[]`.
pub fn check_by(rs: &RealServer, balancer: &str) -> Health {
    match rs
        .status
        .iter()
        .flat_map(|s| s.checks.iter())
        .find(|c| c.balancer == balancer)
    {
        None => Health::Unknown(format!("{balancer} has not checked it yet")),
        Some(c) if c.healthy => Health::Healthy,
        Some(c) => Health::Unhealthy(format!(
            "health check failed on {balancer}: {} ({} consecutive failures)",
            c.message.as_deref().unwrap_or("no detail"),
            c.consecutive_failures
        )),
    }
}

/// Health of `rs` for a VirtualService: the active balancer's check when there is one (it is the
/// one whose IPVS table carries traffic); otherwise every selected balancer that reported must
/// agree it is healthy, and at least one must have reported.
pub fn server_health(
    rs: &RealServer,
    active: Option<&str>,
    balancer_nodes: &BTreeSet<String>,
) -> Health {
    if let Some(a) = active {
        return check_by(rs, a);
    }
    let checks: Vec<Health> = rs
        .status
        .iter()
        .flat_map(|s| s.checks.iter())
        .filter(|c| balancer_nodes.contains(&c.balancer))
        .map(|c| check_by(rs, &c.balancer))
        .collect();
    if checks.is_empty() {
        return Health::Unknown("no balancer has checked it yet".into());
    }
    checks
        .into_iter()
        .find(|h| !h.is_healthy())
        .unwrap_or(Health::Healthy)
}

/// What `TunnelReady` adds to whether `rs` serves. A cluster node (`spec.nodeName` set) needs
/// its web daemon's `TunnelReady=True`: until that daemon has prepared the node, tunneled packets
/// may not be decapsulated. A host outside the cluster (no `spec.nodeName`) was prepared by
/// `lvstun-node web --config` and no web daemon reports on it, so it adds nothing: the
/// balancers' health checks alone judge it, as they do when they give it weight
/// (`node-daemon/src/balancer/desired.rs`).
pub fn tunnel_ready(rs: &RealServer) -> Health {
    if !in_cluster(rs) {
        return Health::Healthy;
    }
    match rs
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == ConditionType::TunnelReady.as_str())
    {
        None => Health::Unknown("its web daemon has not reported TunnelReady yet".into()),
        Some(c) if c.status == CondStatus::True.as_str() => Health::Healthy,
        Some(c) => Health::Unhealthy(
            format!("tunnel not ready: {} {}", c.reason, c.message)
                .trim_end()
                .to_string(),
        ),
    }
}

/// Whether `rs` is a cluster node (`spec.nodeName`), whose web daemon reports on it (when the
/// node carries the web label, see [`WebNode`]).
pub fn in_cluster(rs: &RealServer) -> bool {
    rs.spec.node_name.is_some()
}

/// The message of the operator's `TunnelReady` on a host outside the cluster: says why nothing
/// better is known and who judges the server instead.
pub const OUTSIDE_CLUSTER_MESSAGE: &str = "no spec.nodeName: this host is outside the cluster, prepared by `lvstun-node web --config`; no web daemon reports on it, so the balancers' health checks alone judge it";

/// Whether the operator wrote this RealServer condition: `Healthy`, or the `TunnelReady` it
/// writes where no web daemon reports (a host outside the cluster, a node without the web
/// label), told apart from the web daemon's by its reason. The web daemon's `TunnelReady` is
/// not the operator's and must never be carried into its writes.
pub fn operator_owned(c: &Condition) -> bool {
    match ConditionType::parse(&c.type_) {
        Some(ConditionType::Healthy) => true,
        Some(ConditionType::TunnelReady) => matches!(
            Reason::parse(&c.reason),
            Some(Reason::OutsideCluster | Reason::NoWebDaemon)
        ),
        _ => false,
    }
}

/// Whether a web daemon runs on the node a RealServer's `spec.nodeName` names, as the operator
/// sees the Nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebNode {
    /// The node carries the chart's web label (or the RealServer names no node): a web daemon
    /// runs there, or none is needed.
    Runs,
    /// The node exists but lacks the web label: the web DaemonSet does not run there.
    Unlabelled {
        /// The node.
        node: String,
        /// The chart's web node selector as `kubectl label` takes it.
        label: String,
    },
    /// No node has that name (yet).
    Missing {
        /// The name `spec.nodeName` gives.
        node: String,
        /// The chart's web node selector as `kubectl label` takes it.
        label: String,
    },
}

impl WebNode {
    /// `labels`: the named node's labels, `None` when there is no such node; `daemon_selector`:
    /// the web DaemonSet's node selector (the chart's).
    pub fn of(
        node: &str,
        labels: Option<&BTreeMap<String, String>>,
        daemon_selector: &BTreeMap<String, String>,
    ) -> Self {
        let label = label_arguments(daemon_selector);
        match labels {
            _ if daemon_selector.is_empty() => WebNode::Runs,
            None => WebNode::Missing {
                node: node.into(),
                label,
            },
            Some(l) if runs_daemon(daemon_selector, l) => WebNode::Runs,
            Some(_) => WebNode::Unlabelled {
                node: node.into(),
                label,
            },
        }
    }

    /// The operator's `TunnelReady` message when no web daemon runs there: why, and the fix.
    fn message(&self) -> Option<String> {
        match self {
            WebNode::Runs => None,
            WebNode::Unlabelled { node, label } => Some(format!(
                "node {node} lacks the label {label}, so the web DaemonSet does not run there and no web daemon will ever report TunnelReady for it; fix: kubectl label node {node} {label}"
            )),
            WebNode::Missing { node, label } => Some(format!(
                "spec.nodeName names {node}, but there is no node {node} in the cluster, so no web daemon will report TunnelReady for it; fix spec.nodeName, or once the node has joined: kubectl label node {node} {label}"
            )),
        }
    }
}

/// A list of names for a message, cut after [`LIST_LIMIT`].
fn list(items: &[String]) -> String {
    if items.len() <= LIST_LIMIT {
        items.join(", ")
    } else {
        format!(
            "{} and {} more",
            items[..LIST_LIMIT].join(", "),
            items.len() - LIST_LIMIT
        )
    }
}

/// Everything [`fold_virtual_service`] looks at.
#[derive(Debug)]
pub struct VsView<'a> {
    /// The VirtualService as read.
    pub vs: &'a VirtualService,
    /// The operator's verdict on it (see `validate`).
    pub verdict: &'a Verdict,
    /// Whether it lies in a VIPPolicy pool its namespace may use (see `validate`).
    pub pool: &'a PoolCheck,
    /// Nodes its `spec.balancers.nodeSelector` selects now, and which of them are alive.
    pub balancer_nodes: &'a BalancerNodes,
    /// The chart's balancer node selector as `kubectl label` takes it, for the fix of
    /// [`BalancerNodes::unlabelled`].
    pub daemon_label: &'a str,
    /// RealServers its `spec.realServerSelector` selects now.
    pub real_servers: &'a [&'a RealServer],
    /// The operator-owned status as last written (or as read, when nothing was written since).
    pub previous: Option<&'a VirtualServiceStatus>,
    /// The clock, for new transition times.
    pub now: Time,
}

/// What [`fold_virtual_service`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct VsFold {
    /// The operator-owned status fields (no `balancers`, which belong to the daemons).
    pub status: VirtualServiceStatus,
    /// Whether `status` differs from the previous one: only then is it written.
    pub changed: bool,
    /// Transitions worth an Event.
    pub notices: Vec<Notice>,
    /// Whether the Master changed to another node (for the metric).
    pub master_changed: bool,
    /// Fold again at this time even if nothing changes (an overlap of Masters expires).
    pub recheck: Option<Timestamp>,
    /// The kernel settings the live balancers could not make (for [`kernel_notices`]).
    pub kernel_refusals: Vec<KernelRefusal>,
    /// The live balancers' reports of services another program deleted (for
    /// [`external_deletion_notices`]).
    pub external_deletions: Vec<ExternalDeletion>,
    /// Selected nodes without the balancer label (for [`unlabelled_notice`]); empty unless the
    /// VirtualService owns its claims.
    pub unlabelled: BTreeSet<String>,
}

/// The four conditions of a VirtualService, as decided.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VsConditions {
    ready: Cond,
    vip_active: Cond,
    degraded: Cond,
    conflict: Cond,
}

impl VsConditions {
    /// Each with its type, in the order they are written ([`ConditionType::VIRTUAL_SERVICE`]).
    fn by_type(&self) -> [(ConditionType, &Cond); 4] {
        [
            (ConditionType::Ready, &self.ready),
            (ConditionType::VipActive, &self.vip_active),
            (ConditionType::Degraded, &self.degraded),
            (ConditionType::Conflict, &self.conflict),
        ]
    }
}

/// What the operator makes of one VirtualService before it becomes status: its conditions and
/// the facts the status fields, the Events and the caller need.
#[derive(Debug, Clone, PartialEq)]
struct Judged {
    conditions: VsConditions,
    active: Option<String>,
    recheck: Option<Timestamp>,
    healthy: usize,
    excluded: Vec<ExcludedRealServer>,
    refusals: Vec<KernelRefusal>,
    deletions: Vec<ExternalDeletion>,
    unlabelled: BTreeSet<String>,
}

impl Judged {
    /// Not programmed on any balancer: nobody holds the VIP, no real server counts, and the
    /// balancers' reports are not looked at.
    fn not_programmed(conditions: VsConditions) -> Self {
        Judged {
            conditions,
            active: None,
            recheck: None,
            healthy: 0,
            excluded: Vec::new(),
            refusals: Vec::new(),
            deletions: Vec::new(),
            unlabelled: BTreeSet::new(),
        }
    }
}

/// Fold one VirtualService's inputs into its operator-owned status and the transitions since the
/// previous status.
pub fn fold_virtual_service(view: &VsView<'_>) -> VsFold {
    let judged = match view.verdict {
        Verdict::Invalid(problems) => Judged::not_programmed(invalid_spec(problems)),
        Verdict::Conflict { key, owner } => {
            Judged::not_programmed(in_conflict(&key.to_string(), &owner.to_string()))
        }
        Verdict::VridConflict {
            vrid,
            owner,
            clash,
            node,
        } => Judged::not_programmed(in_vrid_conflict(*vrid, &owner.to_string(), clash, node)),
        Verdict::AddressInUse(used) => {
            Judged::not_programmed(address_in_use(&view.vs.spec.vip, used))
        }
        Verdict::Owner => judge_owner(view),
    };
    let previous = view.previous.cloned().unwrap_or_default();
    let generation = view.vs.metadata.generation;
    let (mut conditions, mut conditions_changed) =
        merge_conditions(&previous, &judged.conditions, generation, &view.now);
    conditions_changed |= set_or_remove_condition(
        &mut conditions,
        ConditionType::InPool.as_str(),
        in_pool(view.vs, view.pool)
            .map(|cond| cond.condition(ConditionType::InPool, generation, &view.now)),
    );
    let (healthy, total) = (judged.healthy, view.real_servers.len());
    let status = VirtualServiceStatus {
        observed_generation: generation,
        conditions,
        active_balancer: judged.active,
        healthy_real_servers: Some(i32::try_from(healthy).unwrap_or(i32::MAX)),
        total_real_servers: Some(i32::try_from(total).unwrap_or(i32::MAX)),
        healthy_summary: Some(format!("{healthy}/{total}")),
        balancers: Vec::new(),
        excluded_real_servers: judged.excluded,
    };
    let changed = conditions_changed || fields_changed(&previous, &status);
    let (notices, master_changed) = vs_notices(view.vs, &previous, &status);
    VsFold {
        status,
        changed,
        notices,
        master_changed,
        recheck: judged.recheck,
        kernel_refusals: judged.refusals,
        external_deletions: judged.deletions,
        unlabelled: judged.unlabelled,
    }
}

/// The conditions of a VirtualService whose spec is invalid: not programmed, nothing evaluated,
/// and `Ready` says why.
fn invalid_spec(problems: &[String]) -> VsConditions {
    let why = problems.join("; ");
    VsConditions {
        ready: Cond::new(CondStatus::False, Reason::InvalidSpec, why.clone()),
        vip_active: Cond::new(
            CondStatus::False,
            Reason::InvalidSpec,
            "not programmed: the spec is invalid (see Ready)",
        ),
        degraded: Cond::new(
            CondStatus::Unknown,
            Reason::InvalidSpec,
            "not evaluated: the spec is invalid (see Ready)",
        ),
        conflict: Cond::new(
            CondStatus::Unknown,
            Reason::InvalidSpec,
            format!("not evaluated: {why}"),
        ),
    }
}

/// The conditions of a VirtualService that lost `key` (a VIP:port:protocol) to the older
/// VirtualService `owner`: not programmed, and `Conflict` says until when.
fn in_conflict(key: &str, owner: &str) -> VsConditions {
    lost_to(
        format!("not programmed: {key} belongs to VirtualService {owner}"),
        Reason::VipPortInUse,
        format!(
            "{key} is already served by VirtualService {owner}, which is older; this VirtualService is not programmed on any balancer until {owner} is deleted or stops using {key} (or this one changes its VIP or ports)"
        ),
    )
}

/// The conditions of a VirtualService whose VRID an older one runs differently on a shared
/// node: not programmed, and `Conflict` says what to change.
fn in_vrid_conflict(vrid: i32, owner: &str, clash: &VridClash, node: &str) -> VsConditions {
    lost_to(
        format!("not programmed: VRID {vrid} belongs to VirtualService {owner} on node {node}"),
        Reason::VridInUse,
        format!(
            "spec.balancers.virtualRouterID {vrid} is already used by VirtualService {owner}, which is older, on balancer node {node} that both select, and {clash}; one VRID is one VRRP router, whose balancers must agree on its VIPs and settings or they stop hearing each other and both hold the VIP; give this VirtualService another virtualRouterID (or the same VIP and spec.balancers as {owner})"
        ),
    )
}

/// The conditions of a VirtualService whose VIP the cluster already uses: not programmed, and
/// `Conflict` says who uses it and what to change.
fn address_in_use(vip: &str, used: &AddressUse) -> VsConditions {
    match used {
        AddressUse::Node { node, kind } => lost_to(
            format!("not programmed: spec.vip {vip} is the {kind} of Node {node}"),
            Reason::VipIsNodeAddress,
            format!(
                "spec.vip {vip} is the {kind} of Node {node}: a balancer holding it would answer for that node's own address and take it away when it gives the VIP up; this VirtualService is not programmed on any balancer; fix: choose a spec.vip no node uses (and keep node addresses out of the VIPPolicy pools)"
            ),
        ),
        AddressUse::KubernetesService => lost_to(
            format!(
                "not programmed: spec.vip {vip} is the ClusterIP of Service default/kubernetes"
            ),
            Reason::VipIsKubernetesClusterIp,
            format!(
                "spec.vip {vip} is the ClusterIP of Service default/kubernetes, the address pods reach the API server by: a balancer holding it would take that address from them; this VirtualService is not programmed on any balancer; fix: choose a spec.vip outside the cluster's Service CIDR (and keep that CIDR out of the VIPPolicy pools)"
            ),
        ),
    }
}

/// `InPool`, when the pools are checked: inside, outside (still served: ADR 0011), or no
/// VIPPolicy to check against.
fn in_pool(vs: &VirtualService, pool: &PoolCheck) -> Option<Cond> {
    let vip = &vs.spec.vip;
    let ns = vs.metadata.namespace.clone().unwrap_or_default();
    match pool {
        PoolCheck::NotChecked => None,
        PoolCheck::NoPolicy { policy } => Some(Cond::new(
            CondStatus::Unknown,
            Reason::NoVipPolicy,
            format!(
                "VIPPolicy {policy} does not exist, so no pool is checked; with vipPolicy.enforce (the chart's default) the API server refuses every VirtualService write until a cluster admin restores it"
            ),
        )),
        PoolCheck::Inside { policy, pool } => Some(Cond::new(
            CondStatus::True,
            Reason::InPool,
            format!(
                "spec.vip {vip} is in VIPPolicy {policy} pool {pool}, which namespace \"{ns}\" may use, and spec.balancers.nodeSelector stays within its nodes"
            ),
        )),
        PoolCheck::Outside { policy, miss } => Some(Cond::new(
            CondStatus::False,
            Reason::OutsidePool,
            format!(
                "{}; it was stored before VIPPolicy {policy} changed and keeps serving (a pool edit never cuts live traffic), but the API server checks its next update against the pools",
                miss.message()
            ),
        )),
    }
}

/// Every conflict reads the same: not ready, no VIP, not judged, and `Conflict=True` with the
/// kind of conflict (`reason`) and what to change (`why`).
fn lost_to(not_programmed: String, reason: Reason, why: String) -> VsConditions {
    VsConditions {
        ready: Cond::new(CondStatus::False, Reason::Conflict, not_programmed.clone()),
        vip_active: Cond::new(CondStatus::False, Reason::Conflict, not_programmed),
        degraded: Cond::new(
            CondStatus::Unknown,
            Reason::Conflict,
            "not evaluated while in conflict",
        ),
        conflict: Cond::new(CondStatus::True, reason, why),
    }
}

/// The conditions and facts of a VirtualService that owns every VIP:port:protocol it lists:
/// who holds the VIP, how its real servers serve, and what degrades it.
fn judge_owner(view: &VsView<'_>) -> Judged {
    let vs = view.vs;
    let nodes = view.balancer_nodes;
    let holding = vip_active(vs, nodes, view.daemon_label, &view.now);
    let mut excluded = real_servers_on_balancers(view.real_servers, nodes);
    let at_vip = real_servers_at_vip(view.real_servers, &vs.spec.vip, &excluded);
    excluded.extend(at_vip);
    excluded.sort();
    let tally = tally(
        view.real_servers,
        &excluded,
        holding.active.as_deref(),
        &nodes.live,
    );
    let refusals = kernel_refusals(vs, &nodes.live);
    let deletions = external_deletions(vs, &nodes.live);
    let unlabelled = nodes.unlabelled.clone();
    let total = view.real_servers.len();
    let ns = vs.metadata.namespace.clone().unwrap_or_default();
    let degraded = serving_degraded(&ns, &vs.spec.vip, total, &tally, &excluded);
    // Services deleted behind a balancer's back: traffic flows between deletions, so it
    // degrades; real servers that do not serve cost more and keep their reason first.
    let degraded = also(
        degraded,
        Reason::IpvsServiceDeletedExternally,
        (!deletions.is_empty()).then(|| external_deletion_message(&vs.spec.vip, &deletions)),
    );
    // A refused kernel setting degrades a service that forwards (see ADR 0005); real servers
    // that do not serve cost more, so their reason stays first when both hold.
    let degraded = also(
        degraded,
        Reason::KernelSettingRefused,
        (!refusals.is_empty()).then(|| kernel_refusal_message(&refusals)),
    );
    // Selected nodes that run no daemon: the VIP has fewer balancers than the selector
    // promises (when it has none at all, VIPActive says so first).
    let degraded = also(
        degraded,
        Reason::BalancerNodesUnlabelled,
        (!unlabelled.is_empty()).then(|| unlabelled_message(&unlabelled, view.daemon_label)),
    );
    let ready = ready(&vs.spec.vip, &holding, total, &tally, &excluded, &degraded);
    Judged {
        conditions: VsConditions {
            ready,
            vip_active: holding.cond,
            degraded,
            conflict: no_conflict(vs),
        },
        active: holding.active,
        recheck: holding.recheck,
        healthy: tally.healthy,
        excluded,
        refusals,
        deletions,
        unlabelled,
    }
}

/// `Conflict=False` of a VirtualService that owns its claims, naming them.
fn no_conflict(vs: &VirtualService) -> Cond {
    let claims: Vec<String> = lvstun_rules::claim_keys(vs)
        .iter()
        .map(ToString::to_string)
        .collect();
    Cond::new(
        CondStatus::False,
        Reason::NoConflict,
        format!("owns {}", claims.join(", ")),
    )
}

/// `VIPActive` of a VirtualService that owns its claims, with the node taken to hold the VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holding {
    /// The condition.
    cond: Cond,
    /// The node that holds the VIP, if any (`status.activeBalancer`).
    active: Option<String>,
    /// When an overlap of Masters turns into a split brain if it lasts.
    recheck: Option<Timestamp>,
}

impl Holding {
    /// Nobody holds the VIP.
    fn nobody(cond: Cond) -> Self {
        Holding {
            cond,
            active: None,
            recheck: None,
        }
    }
}

/// Who holds the VIP of `vs`: nobody when no node is selected or none of the selected runs a
/// balancer daemon (each said with its fix), else the [`election`] among the live ones at `now`.
fn vip_active(
    vs: &VirtualService,
    nodes: &BalancerNodes,
    daemon_label: &str,
    now: &Time,
) -> Holding {
    if nodes.selected.is_empty() {
        return Holding::nobody(Cond::new(
            CondStatus::False,
            Reason::NoBalancerNodes,
            no_nodes_message(vs),
        ));
    }
    if nodes.unlabelled == nodes.selected {
        return Holding::nobody(Cond::new(
            CondStatus::False,
            Reason::NoBalancerDaemon,
            unlabelled_message(&nodes.unlabelled, daemon_label),
        ));
    }
    elected(vs, election(vs, &nodes.live, now), nodes)
}

/// `VIPActive` from the outcome of the election, for people: who holds the VIP, or what the
/// balancers said and which selected nodes are down.
fn elected(vs: &VirtualService, outcome: Election, nodes: &BalancerNodes) -> Holding {
    let vip = &vs.spec.vip;
    match outcome {
        Election::Master(m) => Holding {
            cond: Cond::new(
                CondStatus::True,
                Reason::MasterElected,
                format!("{m} holds VIP {vip}"),
            ),
            active: Some(m),
            recheck: None,
        },
        Election::Overlap {
            master,
            others,
            recheck,
        } => Holding {
            cond: Cond::new(
                CondStatus::True,
                Reason::MasterElected,
                format!(
                    "{master} holds VIP {vip} (it became Master last; {} still reports Master: a failover in progress, or a split brain if it lasts past {recheck})",
                    list(&others)
                ),
            ),
            active: Some(master),
            recheck: Some(recheck),
        },
        Election::NoMaster(seen) if seen.is_empty() => Holding::nobody(Cond::new(
            CondStatus::False,
            Reason::NoMaster,
            format!(
                "no balancer holds VIP {vip}: none of the {} selected node(s) has reported yet{}",
                nodes.selected.len(),
                down_note(nodes)
            ),
        )),
        Election::NoMaster(seen) => Holding::nobody(Cond::new(
            CondStatus::False,
            Reason::NoMaster,
            format!(
                "no balancer holds VIP {vip}; reports: {}{}",
                list(&seen),
                down_note(nodes)
            ),
        )),
        Election::SplitBrain(masters) => Holding::nobody(Cond::new(
            CondStatus::False,
            Reason::SplitBrain,
            format!(
                "split brain: {} all claim to be Master for VIP {vip}; check that VRRP advertisements pass between them (multicast, or spec.balancers.unicastPeers) and that virtualRouterID {} is unique on the segment",
                list(&masters),
                vs.spec.balancers.virtual_router_id
            ),
        )),
    }
}

/// `; not Ready: <nodes>` for the selected nodes that run a balancer daemon but are down, or
/// nothing when there are none.
fn down_note(nodes: &BalancerNodes) -> String {
    let down: Vec<String> = nodes
        .selected
        .iter()
        .filter(|n| !nodes.live.contains(*n) && !nodes.unlabelled.contains(*n))
        .cloned()
        .collect();
    if down.is_empty() {
        String::new()
    } else {
        format!("; not Ready: {}", list(&down))
    }
}

/// How the programmed real servers of a VirtualService serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    /// How many are healthy and tunnel-ready.
    healthy: usize,
    /// The others that are not draining, each as `name (why)`, sorted.
    bad: Vec<String>,
}

/// Counts the real servers that serve; those left out (`excluded`) are not programmed, so
/// neither healthy nor said to be unhealthy, and a draining one is not worth a complaint.
fn tally(
    real_servers: &[&RealServer],
    excluded: &[ExcludedRealServer],
    active: Option<&str>,
    live: &BTreeSet<String>,
) -> Tally {
    let mut out = Tally::default();
    for rs in real_servers {
        if excluded
            .iter()
            .any(|e| Some(&e.name) == rs.metadata.name.as_ref())
        {
            continue;
        }
        let h = server_health(rs, active, live);
        let t = tunnel_ready(rs);
        if h.is_healthy() && t.is_healthy() {
            out.healthy += 1;
        } else if !rs.spec.drain {
            let why = match (h, t) {
                (Health::Unhealthy(w) | Health::Unknown(w), _) => w,
                (_, Health::Unhealthy(w) | Health::Unknown(w)) => w,
                _ => String::new(),
            };
            out.bad.push(format!(
                "{} ({why})",
                rs.metadata.name.clone().unwrap_or_default()
            ));
        }
    }
    out.bad.sort();
    out
}

/// `Degraded` from the real servers alone: none selected (in namespace `ns`), some left out
/// because they run on balancer nodes, some not serving, or all healthy.
fn serving_degraded(
    ns: &str,
    vip: &str,
    total: usize,
    tally: &Tally,
    excluded: &[ExcludedRealServer],
) -> Cond {
    let bad = &tally.bad;
    if total == 0 {
        Cond::new(
            CondStatus::True,
            Reason::NoRealServers,
            format!("spec.realServerSelector matches no RealServer in namespace {ns}"),
        )
    } else if !excluded.is_empty() {
        let also = if bad.is_empty() {
            String::new()
        } else {
            format!(
                "; also {} of {total} real servers not serving: {}",
                bad.len(),
                list(bad)
            )
        };
        // Real servers on balancer nodes name the reason when there are any (the older
        // cause); the message lists every left-out one.
        let reason = if excluded.iter().all(at_vip) {
            Reason::RealServerAtVip
        } else {
            Reason::RealServerOnBalancer
        };
        Cond::new(
            CondStatus::True,
            reason,
            format!("{}{also}", excluded_message(excluded, vip)),
        )
    } else if !bad.is_empty() {
        Cond::new(
            CondStatus::True,
            Reason::RealServersUnhealthy,
            format!(
                "{} of {total} real servers not serving: {}",
                bad.len(),
                list(bad)
            ),
        )
    } else {
        Cond::new(
            CondStatus::False,
            Reason::AllHealthy,
            format!("{} of {total} real servers healthy", tally.healthy),
        )
    }
}

/// `degraded` with one more cause (`reason`, said by `message` when it holds): the cause itself
/// when nothing else degrades, else joined to the message after what is there already, which
/// keeps its reason because it was judged to cost more.
fn also(degraded: Cond, reason: Reason, message: Option<String>) -> Cond {
    match message {
        None => degraded,
        Some(message) if degraded.reason == Reason::AllHealthy => {
            Cond::new(CondStatus::True, reason, message)
        }
        Some(message) => Cond {
            message: format!("{}; also {message}", degraded.message),
            ..degraded
        },
    }
}

/// `Ready`: the VIP is held (else `VIPActive` says why), and real servers are selected and
/// some of them serve.
fn ready(
    vip: &str,
    holding: &Holding,
    total: usize,
    tally: &Tally,
    excluded: &[ExcludedRealServer],
    degraded: &Cond,
) -> Cond {
    if holding.cond.status != CondStatus::True {
        Cond::new(
            CondStatus::False,
            holding.cond.reason,
            holding.cond.message.clone(),
        )
    } else if total == 0 {
        Cond::new(
            CondStatus::False,
            Reason::NoRealServers,
            degraded.message.clone(),
        )
    } else if tally.healthy == 0 {
        let mut why = tally.bad.clone();
        why.extend(excluded.iter().map(|e| match e.node.as_deref() {
            Some(node) if !at_vip(e) => format!("{} (on balancer node {node}: left out)", e.name),
            _ => format!("{} (spec.address is the VIP: left out)", e.name),
        }));
        Cond::new(
            CondStatus::False,
            Reason::NoHealthyRealServers,
            format!(
                "none of the {total} real servers is healthy and tunnel-ready: {}",
                list(&why)
            ),
        )
    } else {
        Cond::new(
            CondStatus::True,
            Reason::Serving,
            format!(
                "VIP {vip} served by {} with {} of {total} real servers",
                holding.active.clone().unwrap_or_default(),
                tally.healthy
            ),
        )
    }
}

/// Whether `c` is one of the VirtualService conditions the operator writes
/// ([`ConditionType::VIRTUAL_SERVICE`]), which it carries over and compares; the rest of the
/// status belongs to the balancers.
pub fn is_vs_condition(c: &Condition) -> bool {
    ConditionType::parse(&c.type_)
        .is_some_and(|t| ConditionType::VIRTUAL_SERVICE.contains(&t) || t == ConditionType::InPool)
}

/// The previous VirtualService conditions the operator owns, with `new` set over them, and
/// whether any changed ([`set_condition`] keeps a transition time while the status holds).
fn merge_conditions(
    previous: &VirtualServiceStatus,
    new: &VsConditions,
    generation: Option<i64>,
    now: &Time,
) -> (Vec<Condition>, bool) {
    let mut conditions: Vec<Condition> = previous
        .conditions
        .iter()
        .filter(|c| is_vs_condition(c))
        .cloned()
        .collect();
    let mut changed = false;
    for (type_, cond) in new.by_type() {
        changed |= set_condition(&mut conditions, cond.condition(type_, generation, now));
    }
    (conditions, changed)
}

/// Whether a status field the operator owns, other than the conditions, differs.
fn fields_changed(previous: &VirtualServiceStatus, status: &VirtualServiceStatus) -> bool {
    status.observed_generation != previous.observed_generation
        || status.excluded_real_servers != previous.excluded_real_servers
        || status.active_balancer != previous.active_balancer
        || status.healthy_real_servers != previous.healthy_real_servers
        || status.total_real_servers != previous.total_real_servers
        || status.healthy_summary != previous.healthy_summary
}

/// `VIPActive`'s message when `spec.balancers.nodeSelector` selects no node, with a
/// `kubectl label` command made from the selector as the fix.
fn no_nodes_message(vs: &VirtualService) -> String {
    let example = vs
        .spec
        .balancers
        .node_selector
        .match_labels
        .iter()
        .flatten()
        .next()
        .map(|(k, v)| {
            format!(
                "; label the nodes that may hold the VIP, e.g. kubectl label node <node> {k}={v}"
            )
        })
        .unwrap_or_default();
    format!("spec.balancers.nodeSelector matches no node{example}")
}

/// A condition as read back: `(status, reason, message)`.
type Reading<'a> = (&'a str, &'a str, &'a str);

/// The condition of type `type_` in `status`, as read.
fn reading(status: &VirtualServiceStatus, type_: ConditionType) -> Option<Reading<'_>> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_.as_str())
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

/// Whether a condition as read has this status.
fn has_status(c: Option<Reading<'_>>, status: CondStatus) -> bool {
    c.is_some_and(|(s, _, _)| s == status.as_str())
}

/// Whether a condition as read has this reason.
fn has_reason(c: Option<Reading<'_>>, reason: Reason) -> bool {
    c.is_some_and(|(_, r, _)| r == reason.as_str())
}

/// The Events for a change from `old` to `new` (in this order: the Master, a split brain, a
/// conflict, degradation, an invalid spec) and whether the Master moved to another node.
fn vs_notices(
    vs: &VirtualService,
    old: &VirtualServiceStatus,
    new: &VirtualServiceStatus,
) -> (Vec<Notice>, bool) {
    let vip = &vs.spec.vip;
    let (master, master_changed) = master_notice(vip, old, new);
    let mut out: Vec<Notice> = master.into_iter().collect();
    out.extend(split_brain_notice(old, new));
    out.extend(conflict_notice(vip, old, new));
    out.extend(degraded_notices(vip, old, new));
    out.extend(invalid_spec_notice(old, new));
    out.extend(pool_notice(vip, old, new));
    (out, master_changed)
}

/// A new Master (and that the Master changed), or that the old one is gone with nobody after it.
fn master_notice(
    vip: &str,
    old: &VirtualServiceStatus,
    new: &VirtualServiceStatus,
) -> (Option<Notice>, bool) {
    if new.active_balancer == old.active_balancer {
        return (None, false);
    }
    if let Some(m) = &new.active_balancer {
        let before = old.active_balancer.as_deref().unwrap_or("nobody");
        let note = format!("{m} now holds VIP {vip} (before: {before})");
        return (Some(normal(EventReason::NewMaster.as_str(), note)), true);
    }
    let no_master = has_reason(reading(new, ConditionType::VipActive), Reason::NoMaster);
    match &old.active_balancer {
        Some(prev) if no_master => (
            Some(warning(
                EventReason::NoMaster.as_str(),
                format!("no balancer holds VIP {vip} any more ({prev} was Master)"),
            )),
            false,
        ),
        _ => (None, false),
    }
}

/// A split brain, when `VIPActive` turns to it.
fn split_brain_notice(old: &VirtualServiceStatus, new: &VirtualServiceStatus) -> Option<Notice> {
    let now = reading(new, ConditionType::VipActive)?;
    (has_reason(Some(now), Reason::SplitBrain)
        && !has_reason(reading(old, ConditionType::VipActive), Reason::SplitBrain))
    .then(|| warning(EventReason::SplitBrain.as_str(), now.2.to_string()))
}

/// A conflict when `Conflict` turns true, its end when it stops being true.
fn conflict_notice(
    vip: &str,
    old: &VirtualServiceStatus,
    new: &VirtualServiceStatus,
) -> Option<Notice> {
    let (was, is) = (
        reading(old, ConditionType::Conflict),
        reading(new, ConditionType::Conflict),
    );
    let (was_true, is_true) = (
        has_status(was, CondStatus::True),
        has_status(is, CondStatus::True),
    );
    if is_true && !was_true {
        let msg = is.map(|(_, _, m)| m.to_string()).unwrap_or_default();
        Some(warning(EventReason::Conflict.as_str(), msg))
    } else if was_true && !is_true {
        Some(normal(
            EventReason::ConflictResolved.as_str(),
            format!("this VirtualService now owns its VIP and ports on {vip}"),
        ))
    } else {
        None
    }
}

/// Real servers left out because they run on balancer nodes, when `Degraded` turns to that
/// reason; `Degraded` turning true for a cause without an Event of its own; recovery.
fn degraded_notices(
    vip: &str,
    old: &VirtualServiceStatus,
    new: &VirtualServiceStatus,
) -> Vec<Notice> {
    let mut out = Vec::new();
    let (was, is) = (
        reading(old, ConditionType::Degraded),
        reading(new, ConditionType::Degraded),
    );
    // A refused kernel setting has its own Event per node (`kernel_notices`), an unlabelled
    // node its own too (`unlabelled_notice`), and so has a balancer whose services another
    // program deleted (`external_deletion_notices`).
    let own_event = [
        Reason::KernelSettingRefused,
        Reason::BalancerNodesUnlabelled,
        Reason::IpvsServiceDeletedExternally,
        Reason::RealServerOnBalancer,
        Reason::RealServerAtVip,
    ]
    .into_iter()
    .any(|r| has_reason(is, r));
    // Real servers left out because they run on balancer nodes: said when it starts (or when
    // Degraded turns to it from another reason).
    if let Some((_, _, msg)) = is
        && has_reason(is, Reason::RealServerOnBalancer)
        && !has_reason(was, Reason::RealServerOnBalancer)
    {
        out.push(warning(
            EventReason::RealServerOnBalancer.as_str(),
            msg.to_string(),
        ));
    }
    // Real servers whose address is the VIP, and none on a balancer node: likewise.
    if let Some((_, _, msg)) = is
        && has_reason(is, Reason::RealServerAtVip)
        && !has_reason(was, Reason::RealServerAtVip)
    {
        out.push(warning(
            EventReason::RealServerAtVip.as_str(),
            msg.to_string(),
        ));
    }
    let (was_true, is_true) = (
        has_status(was, CondStatus::True),
        has_status(is, CondStatus::True),
    );
    if is_true && !was_true && !own_event {
        let msg = is.map(|(_, _, m)| m.to_string()).unwrap_or_default();
        out.push(warning(EventReason::Degraded.as_str(), msg));
    } else if was_true && has_status(is, CondStatus::False) {
        out.push(normal(
            EventReason::Recovered.as_str(),
            format!("VIP {vip} is no longer degraded: every selected real server is healthy and every balancer holds its kernel settings"),
        ));
    }
    out
}

/// Outside the pools, when `InPool` turns to [`Reason::OutsidePool`] or its message (the rule
/// broken) changes; back inside, when it turns from it to [`Reason::InPool`].
fn pool_notice(
    vip: &str,
    old: &VirtualServiceStatus,
    new: &VirtualServiceStatus,
) -> Option<Notice> {
    let (was, is) = (
        reading(old, ConditionType::InPool),
        reading(new, ConditionType::InPool),
    );
    if has_reason(is, Reason::OutsidePool) && was != is {
        let msg = is.map(|(_, _, m)| m.to_string()).unwrap_or_default();
        Some(warning(EventReason::OutsidePool.as_str(), msg))
    } else if has_reason(was, Reason::OutsidePool) && has_reason(is, Reason::InPool) {
        Some(normal(
            EventReason::BackInPool.as_str(),
            format!("spec.vip {vip} is in a VIPPolicy pool this namespace may use again"),
        ))
    } else {
        None
    }
}

/// An invalid spec, when `Ready` turns to that reason.
fn invalid_spec_notice(old: &VirtualServiceStatus, new: &VirtualServiceStatus) -> Option<Notice> {
    let now = reading(new, ConditionType::Ready)?;
    (has_reason(Some(now), Reason::InvalidSpec)
        && !has_reason(reading(old, ConditionType::Ready), Reason::InvalidSpec))
    .then(|| warning(EventReason::InvalidSpec.as_str(), now.2.to_string()))
}

/// Everything [`fold_real_server`] looks at.
#[derive(Debug)]
pub struct RsView<'a> {
    /// The RealServer as read.
    pub rs: &'a RealServer,
    /// The VirtualServices (owning their claims) that select it, each with its active balancer.
    pub selected_by: &'a [(ObjectKey, Option<String>)],
    /// Of those, the ones that leave it out because its node is one of their balancer nodes
    /// ([`real_servers_on_balancers`]) or its address is their VIP ([`real_servers_at_vip`]).
    pub excluded_by: &'a [ObjectKey],
    /// Of `excluded_by`, the ones whose VIP is its address.
    pub at_vip_of: &'a [ObjectKey],
    /// Whether a web daemon runs on its `spec.nodeName` (ignored without one).
    pub web_node: &'a WebNode,
    /// The operator-owned status as last written (or as read).
    pub previous: Option<&'a RealServerStatus>,
    /// The clock.
    pub now: Time,
}

/// What [`fold_real_server`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct RsFold {
    /// The operator-owned status fields: the `Healthy` condition, and `TunnelReady` when the
    /// server is outside the cluster.
    pub status: RealServerStatus,
    /// Whether it differs from the previous one.
    pub changed: bool,
    /// Transitions worth an Event (server down, server up).
    pub notices: Vec<Notice>,
}

/// `Healthy` of one RealServer: what the active balancer of every VirtualService that selects
/// it reports in `checks[]`. Unhealthy anywhere wins over not-yet-known, which wins over healthy.
/// Without `spec.nodeName` also `TunnelReady=Unknown` ([`Reason::OutsideCluster`]); with it on
/// a node that runs no web daemon, `TunnelReady=Unknown` ([`Reason::NoWebDaemon`]) saying which
/// label to add; on a node that runs one, an earlier such condition is dropped (the apply then
/// releases it to the web daemon).
pub fn fold_real_server(view: &RsView<'_>) -> RsFold {
    let rs = view.rs;
    let name = rs.metadata.name.clone().unwrap_or_default();
    let health = real_server_health(view);
    let previous = view.previous.cloned().unwrap_or_default();
    let old_status = previous
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Healthy.as_str())
        .map(|c| c.status.clone())
        .unwrap_or_default();
    let mut conditions: Vec<Condition> = previous
        .conditions
        .iter()
        .filter(|c| operator_owned(c))
        .cloned()
        .collect();
    let generation = rs.metadata.generation;
    let mut changed = set_condition(
        &mut conditions,
        health.condition(ConditionType::Healthy, generation, &view.now),
    );
    let old_tunnel = conditions
        .iter()
        .find(|c| c.type_ == ConditionType::TunnelReady.as_str())
        .map(|c| (c.reason.clone(), c.message.clone()));
    changed |= set_or_remove_condition(
        &mut conditions,
        ConditionType::TunnelReady.as_str(),
        operator_tunnel_ready(rs, view.web_node)
            .map(|tunnel| tunnel.condition(ConditionType::TunnelReady, generation, &view.now)),
    );
    let mut notices = Vec::new();
    let who = format!("{name} ({})", rs.spec.address);
    let no_daemon = if in_cluster(rs) {
        view.web_node.message()
    } else {
        None
    };
    if let Some(why) = no_daemon
        && old_tunnel != Some((Reason::NoWebDaemon.as_str().to_string(), why.clone()))
    {
        notices.push(warning(
            EventReason::NoWebDaemon.as_str(),
            format!("{who}: {why}"),
        ));
    }
    notices.extend(server_notice(&who, &old_status, &health));
    RsFold {
        status: RealServerStatus {
            observed_generation: None,
            conditions,
            checks: Vec::new(),
        },
        changed,
        notices,
    }
}

/// `Healthy` of the RealServer in `view`: not selected, left out everywhere it is selected,
/// no VIP held yet, or what the active balancers' checks say.
fn real_server_health(view: &RsView<'_>) -> Cond {
    let rs = view.rs;
    // The VirtualServices that program it: those that select it and do not leave it out.
    let serving: Vec<&(ObjectKey, Option<String>)> = view
        .selected_by
        .iter()
        .filter(|(k, _)| !view.excluded_by.contains(k))
        .collect();
    if view.selected_by.is_empty() {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        return Cond::new(
            CondStatus::Unknown,
            Reason::NotSelected,
            format!("no VirtualService in namespace {ns} selects this RealServer"),
        );
    }
    if serving.is_empty() {
        let names: Vec<String> = view.excluded_by.iter().map(|k| k.name.clone()).collect();
        let name = rs.metadata.name.clone().unwrap_or_default();
        if !view.at_vip_of.is_empty() {
            return Cond::new(
                CondStatus::Unknown,
                Reason::AddressIsVip,
                format!(
                    "not checked: VirtualService {} leaves it out; {}",
                    list(&names),
                    address_is_vip_message(&name, &rs.spec.address)
                ),
            );
        }
        let node = rs.spec.node_name.clone().unwrap_or_default();
        return Cond::new(
            CondStatus::Unknown,
            Reason::NodeIsBalancer,
            format!(
                "not checked: VirtualService {} leaves it out; {}",
                list(&names),
                node_is_balancer_message(&name, &node)
            ),
        );
    }
    let actives: BTreeSet<&str> = serving.iter().filter_map(|(_, a)| a.as_deref()).collect();
    if actives.is_empty() {
        let names: Vec<String> = serving.iter().map(|(k, _)| k.name.clone()).collect();
        return Cond::new(
            CondStatus::Unknown,
            Reason::NoActiveBalancer,
            format!(
                "no balancer holds the VIP of VirtualService {} yet",
                list(&names)
            ),
        );
    }
    checked_by(rs, &actives)
}

/// `Healthy` from the checks of the `actives` (the balancers holding the VIPs that select
/// `rs`): a failure anywhere wins over a check not made yet, which wins over passing.
fn checked_by(rs: &RealServer, actives: &BTreeSet<&str>) -> Cond {
    let (mut failed, mut unknown) = (Vec::new(), Vec::new());
    for a in actives {
        match check_by(rs, a) {
            Health::Unhealthy(w) => failed.push(w),
            Health::Unknown(w) => unknown.push(w),
            Health::Healthy => {}
        }
    }
    if !failed.is_empty() {
        Cond::new(CondStatus::False, Reason::CheckFailed, failed.join("; "))
    } else if !unknown.is_empty() {
        Cond::new(CondStatus::Unknown, Reason::NotChecked, unknown.join("; "))
    } else {
        let by: Vec<String> = actives.iter().map(|a| a.to_string()).collect();
        Cond::new(
            CondStatus::True,
            Reason::Passing,
            format!("passes health checks on {}", list(&by)),
        )
    }
}

/// The `TunnelReady` the operator writes on `rs`, or `None` where the web daemon on its node
/// writes it: `Unknown` for a host outside the cluster, and for a node that runs no web daemon.
fn operator_tunnel_ready(rs: &RealServer, web_node: &WebNode) -> Option<Cond> {
    if !in_cluster(rs) {
        return Some(Cond::new(
            CondStatus::Unknown,
            Reason::OutsideCluster,
            OUTSIDE_CLUSTER_MESSAGE,
        ));
    }
    web_node
        .message()
        .map(|why| Cond::new(CondStatus::Unknown, Reason::NoWebDaemon, why))
}

/// A server going down (`Healthy` turning false) or coming up again (false to true); `who`
/// names it, `old_status` is its previous `Healthy` status as read.
fn server_notice(who: &str, old_status: &str, health: &Cond) -> Option<Notice> {
    let was_down = old_status == CondStatus::False.as_str();
    match health.status {
        CondStatus::False if !was_down => Some(warning(
            EventReason::ServerDown.as_str(),
            format!("{who} is down: {}", health.message),
        )),
        CondStatus::True if was_down => Some(normal(
            EventReason::ServerUp.as_str(),
            format!("{who} is up again: {}", health.message),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{check, good_rs, node_rs, report, report_at, rs, t, tunnel, vs, www};
    use lvstun_crds::v1alpha1::Protocol;
    use lvstun_rules::ClaimKey;

    // The vocabulary's strings under the names these tests were written with.
    const READY: &str = ConditionType::Ready.as_str();
    const VIP_ACTIVE: &str = ConditionType::VipActive.as_str();
    const DEGRADED: &str = ConditionType::Degraded.as_str();
    const CONFLICT: &str = ConditionType::Conflict.as_str();
    const HEALTHY: &str = ConditionType::Healthy.as_str();
    const TUNNEL_READY: &str = ConditionType::TunnelReady.as_str();
    const OUTSIDE_CLUSTER: &str = Reason::OutsideCluster.as_str();
    const NO_WEB_DAEMON: &str = Reason::NoWebDaemon.as_str();
    const NODE_IS_BALANCER: &str = Reason::NodeIsBalancer.as_str();
    const REAL_SERVER_ON_BALANCER: &str = Reason::RealServerOnBalancer.as_str();
    const KERNEL_SETTING_REFUSED: &str = Reason::KernelSettingRefused.as_str();
    const IPVS_SERVICE_DELETED_EXTERNALLY: &str = Reason::IpvsServiceDeletedExternally.as_str();

    fn nodes(names: &[&str]) -> BalancerNodes {
        BalancerNodes::all_live(names)
    }

    fn cond<'a>(s: &'a VirtualServiceStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    /// The recipe's fold: owner of its VIP, balancers lb1 and lb2, two real servers that pass
    /// on lb1 and report TunnelReady.
    fn fold_recipe(v: &VirtualService) -> VsFold {
        let (a, b) = (
            good_rs("web1", "198.51.100.10", "lb1"),
            good_rs("web2", "198.51.100.130", "lb1"),
        );
        fold(
            v,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a, &b],
            None,
            10,
        )
    }

    fn fold(
        vs: &VirtualService,
        verdict: &Verdict,
        n: &BalancerNodes,
        rss: &[&RealServer],
        prev: Option<&VirtualServiceStatus>,
        now: i64,
    ) -> VsFold {
        fold_virtual_service(&VsView {
            vs,
            verdict,
            pool: &PoolCheck::NotChecked,
            balancer_nodes: n,
            daemon_label: LABEL,
            real_servers: rss,
            previous: prev,
            now: t(now),
        })
    }

    /// The chart's default balancer node selector, as `kubectl label` takes it.
    const LABEL: &str = "lvstun.io/balancer=true";

    fn node_labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// lb1 and lb2 carry the balancer label, `bare` lacks it; all alive.
    fn nodes_with_bare(bare: &[&str]) -> BalancerNodes {
        let labelled = node_labels(&[("lvstun.io/balancer", "true")]);
        let none = BTreeMap::new();
        let mut all: Vec<(String, &BTreeMap<String, String>, bool)> = vec![
            ("lb1".into(), &labelled, true),
            ("lb2".into(), &labelled, true),
        ];
        all.extend(bare.iter().map(|n| (n.to_string(), &none, true)));
        BalancerNodes::classify(all, &node_labels(&[("lvstun.io/balancer", "true")]))
    }

    #[test]
    fn real_servers_on_balancer_nodes_are_those_on_a_selected_node_running_a_balancer() {
        let labelled = node_labels(&[("lvstun.io/balancer", "true")]);
        let none = BTreeMap::new();
        let nodes = BalancerNodes::classify(
            [
                ("lb1".to_string(), &labelled, true),
                ("lb2".to_string(), &labelled, false), // NotReady: still a balancer
                ("bare".to_string(), &none, true),     // selected, runs no balancer
            ],
            &labelled,
        );
        let on = |name: &str, node: Option<&str>| {
            let mut r = rs(name, "198.51.100.10");
            r.spec.node_name = node.map(String::from);
            r
        };
        // (RealServer's node, left out?)
        let cases = [
            (None, false),
            (Some("lb1"), true),
            (Some("lb2"), true),
            (Some("bare"), false),
            (Some("web1"), false),
        ];
        for (node, want) in cases {
            let r = on("x", node);
            let got = real_servers_on_balancers(&[&r], &nodes);
            assert_eq!(!got.is_empty(), want, "{node:?}");
            if want {
                assert_eq!(
                    got,
                    vec![ExcludedRealServer {
                        name: "x".into(),
                        node: node.map(Into::into),
                        reason: NODE_IS_BALANCER.into()
                    }]
                );
            }
        }
    }

    #[test]
    fn a_real_server_on_a_balancer_node_is_left_out_and_said_so() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        report(&mut v, "lb2", VrrpState::Backup);
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let mut b = good_rs("lb2-web", "198.51.100.20", "lb1");
        b.spec.node_name = Some("lb2".into());
        let out = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a, &b],
            None,
            10,
        );
        let s = &out.status;
        assert_eq!(
            s.excluded_real_servers,
            vec![ExcludedRealServer {
                name: "lb2-web".into(),
                node: Some("lb2".into()),
                reason: NODE_IS_BALANCER.into()
            }]
        );
        assert_eq!(
            s.healthy_summary.as_deref(),
            Some("1/2"),
            "left out: not serving"
        );
        assert_eq!(cond(s, READY).status, "True");
        let d = cond(s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", REAL_SERVER_ON_BALANCER)
        );
        for part in [
            "RealServer lb2-web is on node lb2",
            "answering ARP",
            "fix: name another node",
        ] {
            assert!(d.message.contains(part), "{part}: {}", d.message);
        }
        let events: Vec<&str> = out.notices.iter().map(|n| n.reason).collect();
        assert!(events.contains(&REAL_SERVER_ON_BALANCER), "{events:?}");
        assert!(!events.contains(&"Degraded"), "{events:?}");
        // Folding again: nothing new, no new Event.
        let again = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a, &b],
            Some(s),
            20,
        );
        assert!(
            !again.changed && again.notices.is_empty(),
            "{:?}",
            again.notices
        );

        // The only real server on a balancer node: not ready, and it says why.
        let only = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&b],
            None,
            10,
        );
        let r = cond(&only.status, READY);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "NoHealthyRealServers")
        );
        assert!(
            r.message
                .contains("lb2-web (on balancer node lb2: left out)"),
            "{}",
            r.message
        );

        // lb2 no longer selected as a balancer: it serves, and the list empties.
        let fixed = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1"]),
            &[&a, &b],
            Some(s),
            30,
        );
        assert!(fixed.status.excluded_real_servers.is_empty());
        assert_eq!(fixed.status.healthy_summary.as_deref(), Some("2/2"));
        assert_eq!(cond(&fixed.status, DEGRADED).status, "False");
    }

    #[test]
    fn a_real_server_every_virtual_service_leaves_out_is_healthy_unknown_node_is_balancer() {
        let mut r = node_rs("lb2-web", "198.51.100.20");
        r.spec.node_name = Some("lb2".into());
        let other = ObjectKey {
            namespace: "ns".into(),
            name: "api".into(),
        };
        let by = [
            (other.clone(), Some("lb3".to_string())),
            (www_key(), Some("lb1".to_string())),
        ];
        let fold_with = |excluded_by: &[ObjectKey]| {
            fold_real_server(&RsView {
                rs: &r,
                selected_by: &by,
                excluded_by,
                at_vip_of: &[],
                web_node: &WebNode::Runs,
                previous: None,
                now: t(10),
            })
        };
        let all = fold_with(&[other.clone(), www_key()]);
        let h = healthy(&all.status);
        assert_eq!(
            (h.status.as_str(), h.reason.as_str()),
            ("Unknown", NODE_IS_BALANCER)
        );
        assert!(
            h.message.contains("VirtualService api, www leaves it out"),
            "{}",
            h.message
        );
        // Left out by www only: api's balancer lb3 judges it.
        check(&mut r, "lb3", true);
        let some = fold_real_server(&RsView {
            rs: &r,
            selected_by: &by,
            excluded_by: &[www_key()],
            at_vip_of: &[],
            web_node: &WebNode::Runs,
            previous: None,
            now: t(10),
        });
        let h = healthy(&some.status);
        assert_eq!((h.status.as_str(), h.reason.as_str()), ("True", "Passing"));
        assert!(
            h.message.contains("lb3") && !h.message.contains("lb1"),
            "{}",
            h.message
        );
    }

    #[test]
    fn selected_nodes_without_the_balancer_label_degrade_and_name_the_fix() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        report(&mut v, "lb2", VrrpState::Backup);
        // A stale Master report from a node that lost its label (its daemon is gone).
        report(&mut v, "lb3", VrrpState::Master);
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let n = nodes_with_bare(&["lb3"]);
        assert_eq!(n.live, BTreeSet::from(["lb1".into(), "lb2".into()]));
        assert_eq!(n.unlabelled, BTreeSet::from(["lb3".to_string()]));
        let out = fold(&v, &Verdict::Owner, &n, &[&a], None, 10);
        let vip = cond(&out.status, VIP_ACTIVE);
        assert_eq!(
            (vip.status.as_str(), vip.message.as_str()),
            ("True", "lb1 holds VIP 192.0.2.100"),
            "the unlabelled node's stale Master report does not count"
        );
        let d = cond(&out.status, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "BalancerNodesUnlabelled")
        );
        assert_eq!(
            d.message,
            "spec.balancers.nodeSelector selects lb3 without the label lvstun.io/balancer=true, so no balancer daemon runs there (the balancer DaemonSet runs only on nodes labelled lvstun.io/balancer=true); to use them as balancers: kubectl label node lb3 lvstun.io/balancer=true"
        );
        assert_eq!(cond(&out.status, READY).status, "True", "it still serves");
        assert_eq!(out.unlabelled, BTreeSet::from(["lb3".to_string()]));
        assert!(
            out.notices.iter().all(|n| n.reason != "Degraded"),
            "its own Event, not a generic Degraded one: {:?}",
            out.notices
        );
    }

    #[test]
    fn no_selected_node_with_the_balancer_label_means_no_balancer_daemon() {
        let v = www();
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let none = BTreeMap::new();
        let n = BalancerNodes::classify(
            [
                ("x1".to_string(), &none, true),
                ("x2".to_string(), &none, false),
            ],
            &node_labels(&[("lvstun.io/balancer", "true")]),
        );
        let out = fold(&v, &Verdict::Owner, &n, &[&a], None, 10);
        let vip = cond(&out.status, VIP_ACTIVE);
        assert_eq!(
            (vip.status.as_str(), vip.reason.as_str()),
            ("False", "NoBalancerDaemon")
        );
        assert!(
            vip.message
                .ends_with("kubectl label node x1 x2 lvstun.io/balancer=true"),
            "{}",
            vip.message
        );
        let ready = cond(&out.status, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NoBalancerDaemon")
        );
        assert!(
            !vip.message.contains("not Ready"),
            "a node without the label is not reported as down: {}",
            vip.message
        );
    }

    #[test]
    fn an_unlabelled_node_is_announced_once_when_it_first_shows() {
        let first = BTreeSet::from(["lb3".to_string()]);
        let n = unlabelled_notice(&BTreeSet::new(), &first, LABEL).unwrap();
        assert_eq!(n.reason, "BalancerNodesUnlabelled");
        assert_eq!(n.severity, Severity::Warning);
        assert!(
            n.note
                .contains("kubectl label node lb3 lvstun.io/balancer=true")
        );
        assert_eq!(unlabelled_notice(&first, &first, LABEL), None);
        let more = BTreeSet::from(["lb3".to_string(), "lb4".to_string()]);
        let n = unlabelled_notice(&first, &more, LABEL).unwrap();
        assert!(
            n.note.contains("selects lb4 "),
            "only the new one: {}",
            n.note
        );
        assert_eq!(unlabelled_notice(&more, &BTreeSet::new(), LABEL), None);
    }

    #[test]
    fn the_recipe_serving_is_ready_with_one_master_and_two_of_two() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        report(&mut v, "lb2", VrrpState::Backup);
        let out = fold_recipe(&v);
        let s = &out.status;
        assert!(out.changed);
        assert_eq!(s.active_balancer.as_deref(), Some("lb1"));
        assert_eq!(s.healthy_summary.as_deref(), Some("2/2"));
        assert_eq!(
            (s.healthy_real_servers, s.total_real_servers),
            (Some(2), Some(2))
        );
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(cond(s, READY).status, "True");
        assert_eq!(cond(s, READY).reason, "Serving");
        assert_eq!(cond(s, VIP_ACTIVE).status, "True");
        assert_eq!(cond(s, DEGRADED).status, "False");
        assert_eq!(cond(s, CONFLICT).status, "False");
        assert_eq!(cond(s, CONFLICT).message, "owns 192.0.2.100:80/TCP");
        assert!(
            s.balancers.is_empty(),
            "the daemons' entries are never written by the operator"
        );
        assert_eq!(
            out.notices,
            vec![normal(
                "NewMaster",
                "lb1 now holds VIP 192.0.2.100 (before: nobody)".into()
            )]
        );
        assert!(out.master_changed);
    }

    /// `node`'s report (already added) says it could not set `name` for `reason`.
    fn refuse(vs: &mut VirtualService, node: &str, name: &str, reason: KernelSettingRefusal) {
        let entry = vs
            .status
            .as_mut()
            .unwrap()
            .balancers
            .iter_mut()
            .find(|b| b.node == node)
            .unwrap();
        entry.refused_kernel_settings.push(RefusedKernelSetting {
            name: name.into(),
            wanted: 1,
            current: Some(0),
            reason,
        });
    }

    #[test]
    fn a_refused_kernel_setting_degrades_a_serving_service_naming_node_sysctl_consequence_and_fix()
    {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        report(&mut v, "lb2", VrrpState::Backup);
        for node in ["lb1", "lb2"] {
            refuse(
                &mut v,
                node,
                "net.ipv4.vs.sloppy_tcp",
                KernelSettingRefusal::ReadOnly,
            );
        }
        let out = fold_recipe(&v);
        let s = &out.status;
        // It still forwards: Ready stays True.
        assert_eq!(
            (
                cond(s, READY).status.as_str(),
                cond(s, READY).reason.as_str()
            ),
            ("True", "Serving")
        );
        let d = cond(s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", KERNEL_SETTING_REFUSED)
        );
        assert!(
            d.message
                .starts_with("lb1, lb2 cannot set net.ipv4.vs.sloppy_tcp=1 (ReadOnly): "),
            "{}",
            d.message
        );
        assert!(
            d.message
                .contains(kernel_settings::consequence("sloppy_tcp")),
            "names the consequence: {}",
            d.message
        );
        assert!(
            d.message.contains("--ipvs-sysctl-dir")
                && d.message
                    .contains("set net.ipv4.vs.sloppy_tcp=1 on the node"),
            "names the fix: {}",
            d.message
        );
        assert_eq!(out.kernel_refusals.len(), 2);
        assert!(
            out.notices.iter().all(|n| n.reason != "Degraded"),
            "the refusal has its own Event: {:?}",
            out.notices
        );

        // Fixed on both nodes: no longer degraded, and that is an Event.
        let mut fixed = www();
        report(&mut fixed, "lb1", VrrpState::Master);
        report(&mut fixed, "lb2", VrrpState::Backup);
        let (a, b) = (
            good_rs("web1", "198.51.100.10", "lb1"),
            good_rs("web2", "198.51.100.130", "lb1"),
        );
        let later = fold(
            &fixed,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a, &b],
            Some(s),
            20,
        );
        assert_eq!(cond(&later.status, DEGRADED).status, "False");
        assert!(later.kernel_refusals.is_empty());
        assert!(later.notices.iter().any(|n| n.reason == "Recovered"));
    }

    fn deleted_on(vs: &mut VirtualService, node: &str, ports: &[&str]) {
        let entry = vs
            .status
            .as_mut()
            .unwrap()
            .balancers
            .iter_mut()
            .find(|b| b.node == node)
            .unwrap();
        entry.deleted_externally = Some(lvstun_crds::v1alpha1::ExternalDeletions {
            ports: ports.iter().map(|p| p.to_string()).collect(),
            count: 3,
            last_time: Some(t(90)),
        });
    }

    #[test]
    fn services_deleted_behind_a_balancers_back_degrade_naming_kube_proxy_and_the_vip() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        report(&mut v, "lb2", VrrpState::Backup);
        report(&mut v, "old", VrrpState::Backup);
        deleted_on(&mut v, "lb1", &["80/TCP"]);
        deleted_on(&mut v, "old", &["80/TCP"]); // not selected any more: ignored
        let out = fold_recipe(&v);
        let s = &out.status;
        assert_eq!(
            (
                cond(s, READY).status.as_str(),
                cond(s, READY).reason.as_str()
            ),
            ("True", "Serving"),
            "it is added again, so it serves"
        );
        let d = cond(s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", IPVS_SERVICE_DELETED_EXTERNALLY)
        );
        for part in [
            "lb1 found the IPVS service of VIP 192.0.2.100 (80/TCP) deleted by another program",
            "kube-proxy runs in IPVS mode",
            "ipvs.excludeCIDRs: [192.0.2.100/32]",
            "--ipvs-exclude-cidrs=192.0.2.100/32",
        ] {
            assert!(d.message.contains(part), "{part}: {}", d.message);
        }
        assert_eq!(
            out.external_deletions,
            vec![ExternalDeletion {
                node: "lb1".into(),
                ports: vec!["80/TCP".into()]
            }]
        );
        assert!(
            out.notices.iter().all(|n| n.reason != "Degraded"),
            "it has its own Event: {:?}",
            out.notices
        );
        // One Event per node when its report first shows, not again while it lasts.
        let first =
            external_deletion_notices("192.0.2.100", &BTreeSet::new(), &out.external_deletions);
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].severity, first[0].reason),
            (Severity::Warning, IPVS_SERVICE_DELETED_EXTERNALLY)
        );
        let announced = BTreeSet::from(["lb1".to_string()]);
        assert!(
            external_deletion_notices("192.0.2.100", &announced, &out.external_deletions)
                .is_empty()
        );

        // Unhealthy servers keep their reason first; the deletion joins the message.
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let mut b = rs("web2", "198.51.100.130");
        check(&mut b, "lb1", false);
        tunnel(&mut b, true);
        let both = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a, &b],
            None,
            10,
        );
        let d = cond(&both.status, DEGRADED);
        assert_eq!(d.reason, "RealServersUnhealthy");
        assert!(
            d.message.contains("; also lb1 found the IPVS service"),
            "{}",
            d.message
        );

        // The balancer stops reporting it (a window after the last deletion): recovered.
        let mut quiet = www();
        report(&mut quiet, "lb1", VrrpState::Master);
        report(&mut quiet, "lb2", VrrpState::Backup);
        let (a, b) = (
            good_rs("web1", "198.51.100.10", "lb1"),
            good_rs("web2", "198.51.100.130", "lb1"),
        );
        let later = fold(
            &quiet,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a, &b],
            Some(s),
            20,
        );
        assert_eq!(cond(&later.status, DEGRADED).status, "False");
        assert!(later.external_deletions.is_empty());
        assert!(later.notices.iter().any(|n| n.reason == "Recovered"));
    }

    #[test]
    fn unhealthy_servers_keep_their_reason_and_the_refusal_joins_the_message() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        refuse(
            &mut v,
            "lb1",
            "net.ipv4.vs.expire_nodest_conn",
            KernelSettingRefusal::NotFound,
        );
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let mut b = rs("web2", "198.51.100.130");
        check(&mut b, "lb1", false);
        tunnel(&mut b, true);
        let out = fold(&v, &Verdict::Owner, &nodes(&["lb1"]), &[&a, &b], None, 10);
        let d = cond(&out.status, DEGRADED);
        assert_eq!(d.reason, "RealServersUnhealthy");
        assert!(
            d.message
                .contains("; also lb1 cannot set net.ipv4.vs.expire_nodest_conn=1 (NotFound)"),
            "{}",
            d.message
        );
    }

    #[test]
    fn refusals_of_nodes_that_do_not_serve_the_vip_are_ignored() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        report(&mut v, "old", VrrpState::Backup);
        refuse(
            &mut v,
            "old",
            "net.ipv4.vs.sloppy_tcp",
            KernelSettingRefusal::ReadOnly,
        );
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let out = fold(&v, &Verdict::Owner, &nodes(&["lb1"]), &[&a], None, 10);
        assert_eq!(cond(&out.status, DEGRADED).reason, "AllHealthy");
        assert!(out.kernel_refusals.is_empty());
    }

    #[test]
    fn each_refusal_is_announced_once_per_node() {
        let r = |node: &str, name: &str| KernelRefusal {
            node: node.into(),
            setting: RefusedKernelSetting {
                name: name.into(),
                wanted: 1,
                current: None,
                reason: KernelSettingRefusal::ReadOnly,
            },
        };
        let now = vec![
            r("lb1", "net.ipv4.vs.expire_nodest_conn"),
            r("lb1", "net.ipv4.vs.sloppy_tcp"),
            r("lb2", "net.ipv4.vs.sloppy_tcp"),
        ];
        let first = kernel_notices(&BTreeSet::new(), &now);
        assert_eq!(first.len(), 2, "one Event per node");
        assert!(
            first
                .iter()
                .all(|n| n.severity == Severity::Warning && n.reason == KERNEL_SETTING_REFUSED)
        );
        assert!(
            first[0]
                .note
                .starts_with("lb1 cannot set net.ipv4.vs.expire_nodest_conn=1")
        );
        assert!(
            first[0]
                .note
                .contains("; lb1 cannot set net.ipv4.vs.sloppy_tcp=1")
        );
        assert!(
            first[1]
                .note
                .starts_with("lb2 cannot set net.ipv4.vs.sloppy_tcp=1")
        );
        let announced: BTreeSet<(String, String)> = now.iter().map(KernelRefusal::key).collect();
        assert!(kernel_notices(&announced, &now).is_empty(), "nothing new");
        let mut more = now.clone();
        more.push(r("lb2", "net.ipv4.vs.expire_nodest_conn"));
        let again = kernel_notices(&announced, &more);
        assert_eq!(again.len(), 1);
        assert_eq!(
            again[0].note.split(" (").next(),
            Some("lb2 cannot set net.ipv4.vs.expire_nodest_conn=1"),
            "only the new one"
        );
    }

    #[test]
    fn folding_the_same_inputs_again_changes_nothing() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let first = fold(&v, &Verdict::Owner, &nodes(&["lb1"]), &[&a], None, 10);
        let again = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1"]),
            &[&a],
            Some(&first.status),
            99,
        );
        assert!(!again.changed);
        assert!(again.notices.is_empty());
        assert_eq!(again.status, first.status, "transition times kept");
    }

    #[test]
    fn two_masters_is_split_brain_reported_loudly() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        report(&mut v, "lb2", VrrpState::Master);
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let out = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a],
            None,
            10,
        );
        assert_eq!(out.status.active_balancer, None);
        let c = cond(&out.status, VIP_ACTIVE);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SplitBrain")
        );
        assert!(
            c.message.contains("lb1, lb2 all claim to be Master"),
            "{}",
            c.message
        );
        assert!(c.message.contains("virtualRouterID 51"));
        assert_eq!(cond(&out.status, READY).reason, "SplitBrain");
        assert_eq!(out.notices.len(), 1);
        assert_eq!(
            (out.notices[0].severity, out.notices[0].reason),
            (Severity::Warning, "SplitBrain")
        );
    }

    #[test]
    fn reports_from_nodes_no_longer_selected_are_ignored() {
        let mut v = www();
        report(&mut v, "old-node", VrrpState::Master);
        report(&mut v, "lb1", VrrpState::Backup);
        assert_eq!(
            election(&v, &nodes(&["lb1"]).live, &t(10)),
            Election::NoMaster(vec!["lb1 Backup".into()])
        );
    }

    #[test]
    fn a_new_master_beside_an_old_one_is_a_failover_until_the_grace_ends() {
        // lb2 took over at t=100 while lb1 (dead, node not yet marked down) still says Master.
        let mut v = www();
        report_at(&mut v, "lb1", VrrpState::Master, 10);
        report_at(&mut v, "lb2", VrrpState::Master, 100);
        let a = good_rs("web1", "198.51.100.10", "lb2");
        let n = nodes(&["lb1", "lb2"]);
        let during = fold(&v, &Verdict::Owner, &n, &[&a], None, 130);
        assert_eq!(during.status.active_balancer.as_deref(), Some("lb2"));
        assert_eq!(cond(&during.status, READY).status, "True");
        assert!(
            cond(&during.status, VIP_ACTIVE)
                .message
                .contains("lb1 still reports Master")
        );
        assert_eq!(
            during.recheck,
            Some(t(160).0),
            "fold again when the grace ends"
        );
        let after = fold(&v, &Verdict::Owner, &n, &[&a], Some(&during.status), 160);
        assert_eq!(cond(&after.status, VIP_ACTIVE).reason, "SplitBrain");
        assert_eq!(after.status.active_balancer, None);
        assert!(after.notices.iter().any(|x| x.reason == "SplitBrain"));
        assert_eq!(after.recheck, None);
    }

    #[test]
    fn a_dead_masters_last_word_is_not_a_split_brain() {
        // lb1 crashed while Master: its entry still says Master, but its node is NotReady.
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        report(&mut v, "lb2", VrrpState::Master);
        let mut n = nodes(&["lb1", "lb2"]);
        n.live.remove("lb1");
        let a = good_rs("web1", "198.51.100.10", "lb2");
        let out = fold(&v, &Verdict::Owner, &n, &[&a], None, 10);
        assert_eq!(out.status.active_balancer.as_deref(), Some("lb2"));
        assert_eq!(cond(&out.status, READY).status, "True");
        let mut v2 = www();
        report(&mut v2, "lb1", VrrpState::Master);
        let out = fold(&v2, &Verdict::Owner, &n, &[&a], None, 10);
        let c = cond(&out.status, VIP_ACTIVE);
        assert_eq!(c.reason, "NoMaster");
        assert!(c.message.ends_with("not Ready: lb1"), "{}", c.message);
    }

    #[test]
    fn master_moving_is_an_event_and_a_metric() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        let a = good_rs("web1", "198.51.100.10", "lb2");
        let first = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a],
            None,
            10,
        );
        let mut v2 = www();
        report(&mut v2, "lb1", VrrpState::Fault);
        report(&mut v2, "lb2", VrrpState::Master);
        let second = fold(
            &v2,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a],
            Some(&first.status),
            20,
        );
        assert!(second.master_changed);
        assert_eq!(
            second.notices[0],
            normal(
                "NewMaster",
                "lb2 now holds VIP 192.0.2.100 (before: lb1)".into()
            )
        );
        let mut v3 = www();
        report(&mut v3, "lb1", VrrpState::Fault);
        report(&mut v3, "lb2", VrrpState::Backup);
        let third = fold(
            &v3,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a],
            Some(&second.status),
            30,
        );
        assert_eq!(third.notices[0].reason, "NoMaster");
        assert_eq!(
            cond(&third.status, VIP_ACTIVE).message,
            "no balancer holds VIP 192.0.2.100; reports: lb1 Fault, lb2 Backup"
        );
        assert_eq!(cond(&third.status, VIP_ACTIVE).last_transition_time, t(30));
    }

    #[test]
    fn unhealthy_or_not_tunnel_ready_servers_degrade_and_are_named() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        let ok = good_rs("web1", "198.51.100.10", "lb1");
        let mut down = node_rs("web2", "198.51.100.130");
        check(&mut down, "lb1", false);
        tunnel(&mut down, true);
        let mut no_tunnel = node_rs("web3", "198.51.100.131");
        check(&mut no_tunnel, "lb1", true);
        tunnel(&mut no_tunnel, false);
        let mut unchecked = node_rs("web4", "198.51.100.132");
        tunnel(&mut unchecked, true);
        let out = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1"]),
            &[&ok, &down, &no_tunnel, &unchecked],
            None,
            10,
        );
        let s = &out.status;
        assert_eq!(s.healthy_summary.as_deref(), Some("1/4"));
        assert_eq!(
            cond(s, READY).status,
            "True",
            "one healthy server still serves"
        );
        let d = cond(s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "RealServersUnhealthy")
        );
        assert!(d.message.starts_with("3 of 4 real servers not serving: web2 (health check failed on lb1: GET /healthcheck.html: connection refused (3 consecutive failures))"), "{}", d.message);
        assert!(
            d.message.contains("web3 (tunnel not ready: NoTunl0)"),
            "{}",
            d.message
        );
        assert!(
            d.message.contains("web4 (lb1 has not checked it yet)"),
            "{}",
            d.message
        );
        assert!(out.notices.iter().any(|n| n.reason == "Degraded"));
    }

    /// Where `TunnelReady` comes from decides whether it gates serving: a host outside the
    /// cluster (the shipped `deploy/examples/realservers.yaml`) is judged by the balancers'
    /// checks alone; a cluster node still waits for its web daemon.
    #[test]
    fn outside_the_cluster_the_checks_alone_judge_a_server() {
        struct Row {
            case: &'static str,
            node_name: Option<&'static str>,
            check_passes: bool,
            web_daemon_says: Option<bool>,
            counted_healthy: bool,
            why_not: &'static str,
        }
        let rows = [
            Row {
                case: "outside the cluster, checks pass",
                node_name: None,
                check_passes: true,
                web_daemon_says: None,
                counted_healthy: true,
                why_not: "",
            },
            Row {
                case: "outside the cluster, check fails",
                node_name: None,
                check_passes: false,
                web_daemon_says: None,
                counted_healthy: false,
                why_not: "health check failed on lb1: GET /healthcheck.html: connection refused (3 consecutive failures)",
            },
            Row {
                case: "cluster node, no report from its web daemon yet",
                node_name: Some("node-a"),
                check_passes: true,
                web_daemon_says: None,
                counted_healthy: false,
                why_not: "its web daemon has not reported TunnelReady yet",
            },
            Row {
                case: "cluster node, its web daemon says ready",
                node_name: Some("node-a"),
                check_passes: true,
                web_daemon_says: Some(true),
                counted_healthy: true,
                why_not: "",
            },
        ];
        for row in rows {
            let mut v = www();
            report(&mut v, "lb1", VrrpState::Master);
            report(&mut v, "lb2", VrrpState::Backup);
            let mut r = rs("web1", "198.51.100.10");
            r.spec.node_name = row.node_name.map(String::from);
            check(&mut r, "lb1", row.check_passes);
            check(&mut r, "lb2", row.check_passes);
            if let Some(ready) = row.web_daemon_says {
                tunnel(&mut r, ready);
            }
            let out = fold(
                &v,
                &Verdict::Owner,
                &nodes(&["lb1", "lb2"]),
                &[&r],
                None,
                10,
            );
            let s = &out.status;
            let ready = cond(s, READY);
            if row.counted_healthy {
                assert_eq!(s.healthy_real_servers, Some(1), "{}", row.case);
                assert_eq!(s.healthy_summary.as_deref(), Some("1/1"), "{}", row.case);
                assert_eq!(
                    (ready.status.as_str(), ready.reason.as_str()),
                    ("True", "Serving"),
                    "{}",
                    row.case
                );
                assert_eq!(cond(s, DEGRADED).status, "False", "{}", row.case);
            } else {
                assert_eq!(s.healthy_real_servers, Some(0), "{}", row.case);
                assert_eq!(
                    (ready.status.as_str(), ready.reason.as_str()),
                    ("False", "NoHealthyRealServers"),
                    "{}",
                    row.case
                );
                assert_eq!(
                    ready.message,
                    format!(
                        "none of the 1 real servers is healthy and tunnel-ready: web1 ({})",
                        row.why_not
                    ),
                    "{}",
                    row.case
                );
            }
        }
    }

    #[test]
    fn the_shipped_examples_outside_the_cluster_serve_two_of_two() {
        // deploy/examples/realservers.yaml: web1 and web2 without nodeName, both balancers'
        // checks passing, no web daemon anywhere.
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        report(&mut v, "lb2", VrrpState::Backup);
        let mut a = rs("web1", "198.51.100.10");
        let mut b = rs("web2", "198.51.100.130");
        for r in [&mut a, &mut b] {
            check(r, "lb1", true);
            check(r, "lb2", true);
        }
        let out = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a, &b],
            None,
            10,
        );
        assert_eq!(out.status.healthy_summary.as_deref(), Some("2/2"));
        assert_eq!(
            cond(&out.status, READY).message,
            "VIP 192.0.2.100 served by lb1 with 2 of 2 real servers"
        );
    }

    #[test]
    fn a_draining_server_does_not_degrade() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        let ok = good_rs("web1", "198.51.100.10", "lb1");
        let mut draining = rs("web2", "198.51.100.130");
        draining.spec.drain = true;
        check(&mut draining, "lb1", false);
        let out = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1"]),
            &[&ok, &draining],
            None,
            10,
        );
        assert_eq!(cond(&out.status, DEGRADED).status, "False");
        assert_eq!(out.status.healthy_summary.as_deref(), Some("1/2"));
    }

    #[test]
    fn no_servers_or_no_nodes_say_what_to_do() {
        let v = www();
        let out = fold(&v, &Verdict::Owner, &nodes(&[]), &[], None, 10);
        let r = cond(&out.status, READY);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "NoBalancerNodes")
        );
        assert!(
            r.message
                .contains("kubectl label node <node> lvstun.io/balancer=true"),
            "{}",
            r.message
        );
        let d = cond(&out.status, DEGRADED);
        assert_eq!(d.reason, "NoRealServers");
        assert_eq!(
            d.message,
            "spec.realServerSelector matches no RealServer in namespace ns"
        );
        assert_eq!(out.status.healthy_summary.as_deref(), Some("0/0"));
    }

    #[test]
    fn without_a_master_health_comes_from_every_reporting_balancer() {
        let v = www();
        let mut a = good_rs("web1", "198.51.100.10", "lb1");
        check(&mut a, "lb2", true);
        let mut b = good_rs("web2", "198.51.100.11", "lb1");
        check(&mut b, "lb2", false);
        let out = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1", "lb2"]),
            &[&a, &b],
            None,
            10,
        );
        assert_eq!(out.status.healthy_summary.as_deref(), Some("1/2"));
        assert_eq!(cond(&out.status, READY).reason, "NoMaster");
        assert!(
            cond(&out.status, VIP_ACTIVE)
                .message
                .contains("none of the 2 selected node(s) has reported yet")
        );
    }

    #[test]
    fn conflict_names_the_owner_and_is_not_serving() {
        let mut v = vs("b", "late", 200, "192.0.2.100", &[(80, Protocol::Tcp)]);
        report(&mut v, "lb1", VrrpState::Master); // stale or wrong: must not count
        let verdict = Verdict::Conflict {
            key: ClaimKey {
                vip: "192.0.2.100".into(),
                port: 80,
                protocol: Protocol::Tcp,
            },
            owner: ObjectKey {
                namespace: "a".into(),
                name: "www".into(),
            },
        };
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let out = fold(&v, &verdict, &nodes(&["lb1"]), &[&a], None, 10);
        let c = cond(&out.status, CONFLICT);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "VIPPortInUse")
        );
        assert!(
            c.message.starts_with(
                "192.0.2.100:80/TCP is already served by VirtualService a/www, which is older"
            ),
            "{}",
            c.message
        );
        assert_eq!(cond(&out.status, READY).reason, "Conflict");
        assert_eq!(out.status.active_balancer, None);
        assert_eq!(out.status.healthy_summary.as_deref(), Some("0/1"));
        assert_eq!(
            out.notices.iter().map(|n| n.reason).collect::<Vec<_>>(),
            vec!["Conflict"]
        );
        // Resolved later: the conflict clears with an event.
        let mut v2 = v.clone();
        v2.status = None;
        report(&mut v2, "lb1", VrrpState::Master);
        let later = fold(
            &v2,
            &Verdict::Owner,
            &nodes(&["lb1"]),
            &[&a],
            Some(&out.status),
            20,
        );
        assert!(later.notices.iter().any(|n| n.reason == "ConflictResolved"));
        assert_eq!(cond(&later.status, CONFLICT).status, "False");
        assert_eq!(cond(&later.status, READY).status, "True");
    }

    #[test]
    fn a_vip_the_cluster_uses_is_a_conflict_naming_the_user_and_the_fix() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master); // must not count: programmed nowhere
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let cases = [
            (
                AddressUse::Node {
                    node: "lb1".into(),
                    kind: "InternalIP".into(),
                },
                "VIPIsNodeAddress",
                "spec.vip 192.0.2.100 is the InternalIP of Node lb1: a balancer holding it would answer for that node's own address and take it away when it gives the VIP up; this VirtualService is not programmed on any balancer; fix: choose a spec.vip no node uses (and keep node addresses out of the VIPPolicy pools)",
                "not programmed: spec.vip 192.0.2.100 is the InternalIP of Node lb1",
            ),
            (
                AddressUse::KubernetesService,
                "VIPIsKubernetesClusterIP",
                "spec.vip 192.0.2.100 is the ClusterIP of Service default/kubernetes, the address pods reach the API server by: a balancer holding it would take that address from them; this VirtualService is not programmed on any balancer; fix: choose a spec.vip outside the cluster's Service CIDR (and keep that CIDR out of the VIPPolicy pools)",
                "not programmed: spec.vip 192.0.2.100 is the ClusterIP of Service default/kubernetes",
            ),
        ];
        for (used, reason, message, ready) in cases {
            let out = fold(
                &v,
                &Verdict::AddressInUse(used),
                &nodes(&["lb1"]),
                &[&a],
                None,
                10,
            );
            let c = cond(&out.status, CONFLICT);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
                ("True", reason, message)
            );
            let r = cond(&out.status, READY);
            assert_eq!(
                (r.status.as_str(), r.reason.as_str(), r.message.as_str()),
                ("False", "Conflict", ready)
            );
            assert_eq!(out.status.active_balancer, None);
            let events: Vec<(&str, &str)> = out
                .notices
                .iter()
                .map(|n| (n.reason, n.note.as_str()))
                .collect();
            assert_eq!(events, vec![("Conflict", message)]);
        }
    }

    #[test]
    fn a_real_server_at_the_vip_is_left_out_and_the_others_serve() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let at = good_rs("self", "192.0.2.100", "lb1");
        let out = fold(&v, &Verdict::Owner, &nodes(&["lb1"]), &[&a, &at], None, 10);
        assert_eq!(
            out.status.excluded_real_servers,
            vec![ExcludedRealServer {
                name: "self".into(),
                node: Some("node-self".into()),
                reason: "AddressIsVIP".into(),
            }]
        );
        let msg = "RealServer self has spec.address 192.0.2.100, which is this VirtualService's VIP, so it is left out of this VIP (the other real servers keep serving): a balancer would tunnel the VIP's traffic to the VIP itself; fix: set the RealServer's spec.address to the real server's own address, which is never a VIP";
        let d = cond(&out.status, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str(), d.message.as_str()),
            ("True", "RealServerAtVIP", msg)
        );
        let r = cond(&out.status, READY);
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("True", "Serving"));
        assert_eq!(out.status.healthy_summary.as_deref(), Some("1/2"));
        assert!(
            out.notices
                .iter()
                .any(|n| n.reason == "RealServerAtVIP" && n.note == msg),
            "{:?}",
            out.notices
        );
        // The RealServer itself: not checked, and why.
        let rs_out = fold_real_server(&RsView {
            rs: &at,
            selected_by: &[(www_key(), Some("lb1".into()))],
            excluded_by: &[www_key()],
            at_vip_of: &[www_key()],
            web_node: &WebNode::Runs,
            previous: None,
            now: t(10),
        });
        let h = healthy(&rs_out.status);
        assert_eq!(
            (h.status.as_str(), h.reason.as_str(), h.message.as_str()),
            (
                "Unknown",
                "AddressIsVIP",
                format!("not checked: VirtualService www leaves it out; {msg}").as_str()
            )
        );
    }

    #[test]
    fn outside_the_pools_keeps_serving_says_so_once_and_clears() {
        use lvstun_rules::PoolMiss;
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let fold_with = |pool: &PoolCheck, prev: Option<&VirtualServiceStatus>, now: i64| {
            fold_virtual_service(&VsView {
                vs: &v,
                verdict: &Verdict::Owner,
                pool,
                balancer_nodes: &nodes(&["lb1"]),
                daemon_label: LABEL,
                real_servers: &[&a],
                previous: prev,
                now: t(now),
            })
        };
        let inside = PoolCheck::Inside {
            policy: "lvstun".into(),
            pool: "example".into(),
        };
        let miss = "spec.vip 192.0.2.100 is in no VIPPolicy pool that namespace \"ns\" may use: ask a cluster admin to add it to VIPPolicy lvstun";
        let outside = PoolCheck::Outside {
            policy: "lvstun".into(),
            miss: PoolMiss::NoPool {
                message: miss.into(),
            },
        };
        let first = fold_with(&inside, None, 10);
        let p = cond(&first.status, "InPool");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str(), p.message.as_str()),
            (
                "True",
                "InPool",
                "spec.vip 192.0.2.100 is in VIPPolicy lvstun pool example, which namespace \"ns\" may use, and spec.balancers.nodeSelector stays within its nodes"
            )
        );
        let out = fold_with(&outside, Some(&first.status), 20);
        let want = format!(
            "{miss}; it was stored before VIPPolicy lvstun changed and keeps serving (a pool edit never cuts live traffic), but the API server checks its next update against the pools"
        );
        let p = cond(&out.status, "InPool");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str(), p.message.as_str()),
            ("False", "OutsidePool", want.as_str())
        );
        let events: Vec<(&str, Severity, &str)> = out
            .notices
            .iter()
            .map(|n| (n.reason, n.severity, n.note.as_str()))
            .collect();
        assert_eq!(
            events,
            vec![("OutsidePool", Severity::Warning, want.as_str())]
        );
        // Everything else as before: still served.
        let others = |s: &VirtualServiceStatus| {
            let mut s = s.clone();
            s.conditions.retain(|c| c.type_ != "InPool");
            s
        };
        assert_eq!(others(&out.status), others(&first.status));
        // Folding again says nothing new.
        let again = fold_with(&outside, Some(&out.status), 30);
        assert!(!again.changed && again.notices.is_empty());
        // Back inside: the condition clears, with a Normal Event.
        let back = fold_with(&inside, Some(&out.status), 40);
        assert_eq!(cond(&back.status, "InPool").reason, "InPool");
        assert_eq!(
            back.notices.iter().map(|n| n.reason).collect::<Vec<_>>(),
            vec!["BackInPool"]
        );
        // No VIPPolicy named any more: the condition goes.
        let gone = fold_with(&PoolCheck::NotChecked, Some(&back.status), 50);
        assert!(gone.changed);
        assert!(gone.status.conditions.iter().all(|c| c.type_ != "InPool"));
        let missing = fold_with(
            &PoolCheck::NoPolicy {
                policy: "lvstun".into(),
            },
            None,
            60,
        );
        assert_eq!(cond(&missing.status, "InPool").reason, "NoVIPPolicy");
    }

    #[test]
    fn invalid_spec_is_not_ready_and_conflict_unknown() {
        let v = www();
        let out = fold(&v, &Verdict::Invalid(vec!["spec.realServerSelector.matchExpressions[0].values: operator In needs at least one value".into()]), &nodes(&["lb1"]), &[], None, 10);
        let r = cond(&out.status, READY);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert_eq!(
            cond(&out.status, CONFLICT).status,
            "Unknown",
            "daemons program only Conflict=False"
        );
        assert_eq!(out.notices[0].reason, "InvalidSpec");
    }

    #[test]
    fn generation_change_alone_is_a_change() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        let a = good_rs("web1", "198.51.100.10", "lb1");
        let first = fold(&v, &Verdict::Owner, &nodes(&["lb1"]), &[&a], None, 10);
        v.metadata.generation = Some(2);
        let second = fold(
            &v,
            &Verdict::Owner,
            &nodes(&["lb1"]),
            &[&a],
            Some(&first.status),
            20,
        );
        assert!(second.changed);
        assert_eq!(second.status.observed_generation, Some(2));
        assert!(
            second
                .status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(2))
        );
    }

    fn www_key() -> ObjectKey {
        ObjectKey {
            namespace: "ns".into(),
            name: "www".into(),
        }
    }

    fn rs_fold(
        r: &RealServer,
        by: &[(ObjectKey, Option<String>)],
        prev: Option<&RealServerStatus>,
    ) -> RsFold {
        rs_fold_on(r, by, prev, &WebNode::Runs)
    }

    fn rs_fold_on(
        r: &RealServer,
        by: &[(ObjectKey, Option<String>)],
        prev: Option<&RealServerStatus>,
        web_node: &WebNode,
    ) -> RsFold {
        fold_real_server(&RsView {
            rs: r,
            selected_by: by,
            excluded_by: &[],
            at_vip_of: &[],
            web_node,
            previous: prev,
            now: t(10),
        })
    }

    #[test]
    fn a_node_without_the_web_label_gets_tunnel_ready_unknown_with_the_fix_until_labelled() {
        let by = [(www_key(), Some("lb1".to_string()))];
        let mut r = node_rs("web1", "198.51.100.10");
        check(&mut r, "lb1", true);
        let web = node_labels(&[("lvstun.io/web", "true")]);
        let bare = WebNode::of("node-a", Some(&BTreeMap::new()), &web);
        let first = rs_fold_on(&r, &by, None, &bare);
        let c = tunnel_ready_of(&first.status).expect("the operator says why");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "NoWebDaemon")
        );
        assert_eq!(
            c.message,
            "node node-a lacks the label lvstun.io/web=true, so the web DaemonSet does not run there and no web daemon will ever report TunnelReady for it; fix: kubectl label node node-a lvstun.io/web=true"
        );
        assert!(operator_owned(c));
        let events: Vec<_> = first.notices.iter().map(|n| n.reason).collect();
        assert_eq!(events, vec!["NoWebDaemon"]);

        let again = rs_fold_on(&r, &by, Some(&first.status), &bare);
        assert!(!again.changed && again.notices.is_empty(), "said once");

        // Labelled: the operator's condition goes, releasing it to the web daemon.
        let labelled = WebNode::of("node-a", Some(&web), &web);
        assert_eq!(labelled, WebNode::Runs);
        let after = rs_fold_on(&r, &by, Some(&first.status), &labelled);
        assert!(after.changed);
        assert_eq!(tunnel_ready_of(&after.status), None);
        assert!(after.notices.is_empty());
    }

    #[test]
    fn a_node_name_no_node_has_is_said_so() {
        let web = node_labels(&[("lvstun.io/web", "true")]);
        let missing = WebNode::of("node-z", None, &web);
        let r = node_rs("web1", "198.51.100.10");
        let out = rs_fold_on(&r, &[], None, &missing);
        let c = tunnel_ready_of(&out.status).unwrap();
        assert_eq!(c.reason, "NoWebDaemon");
        assert!(
            c.message
                .starts_with("spec.nodeName names node-z, but there is no node node-z"),
            "{}",
            c.message
        );
        assert_eq!(
            WebNode::of("node-z", None, &BTreeMap::new()),
            WebNode::Runs,
            "an empty web selector runs the daemon everywhere: nothing to say"
        );
        // Outside the cluster, the node verdict does not matter.
        let outside = rs("web2", "198.51.100.11");
        let out = rs_fold_on(&outside, &[], None, &missing);
        assert_eq!(
            tunnel_ready_of(&out.status).unwrap().reason,
            OUTSIDE_CLUSTER
        );
    }

    fn healthy(s: &RealServerStatus) -> &Condition {
        s.conditions.iter().find(|c| c.type_ == HEALTHY).unwrap()
    }

    #[test]
    fn real_server_healthy_follows_the_active_balancer_with_down_and_up_events() {
        let by = [(www_key(), Some("lb1".to_string()))];
        let mut r = rs("web1", "198.51.100.10");
        check(&mut r, "lb1", true);
        check(&mut r, "lb2", false); // the backup's opinion does not matter
        let up = rs_fold(&r, &by, None);
        assert_eq!(healthy(&up.status).status, "True");
        assert_eq!(healthy(&up.status).message, "passes health checks on lb1");
        assert!(
            up.notices.is_empty(),
            "first sight of a healthy server is no event"
        );
        assert!(up.status.checks.is_empty());

        let mut r2 = rs("web1", "198.51.100.10");
        check(&mut r2, "lb1", false);
        let down = rs_fold(&r2, &by, Some(&up.status));
        assert_eq!(healthy(&down.status).reason, "CheckFailed");
        assert_eq!(down.notices[0].reason, "ServerDown");
        assert!(
            down.notices[0]
                .note
                .starts_with("web1 (198.51.100.10) is down: health check failed on lb1"),
            "{}",
            down.notices[0].note
        );

        let again = rs_fold(&r, &by, Some(&down.status));
        assert_eq!(again.notices[0].reason, "ServerUp");
        let steady = rs_fold(&r, &by, Some(&again.status));
        assert!(!steady.changed && steady.notices.is_empty());
    }

    fn tunnel_ready_of(s: &RealServerStatus) -> Option<&Condition> {
        s.conditions.iter().find(|c| c.type_ == TUNNEL_READY)
    }

    #[test]
    fn outside_the_cluster_the_operator_says_tunnel_ready_unknown_and_why() {
        let by = [(www_key(), Some("lb1".to_string()))];
        let mut r = rs("web1", "198.51.100.10");
        check(&mut r, "lb1", true);
        let first = rs_fold(&r, &by, None);
        assert!(first.changed);
        let c = tunnel_ready_of(&first.status).expect("TunnelReady written");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", OUTSIDE_CLUSTER)
        );
        assert_eq!(
            c.message,
            "no spec.nodeName: this host is outside the cluster, prepared by `lvstun-node web --config`; no web daemon reports on it, so the balancers' health checks alone judge it"
        );
        assert_eq!(c.observed_generation, Some(1));
        assert_eq!(healthy(&first.status).status, "True");
        let again = rs_fold(&r, &by, Some(&first.status));
        assert!(!again.changed, "written once, not on every resync");
    }

    #[test]
    fn a_cluster_node_gets_no_tunnel_ready_from_the_operator_and_an_old_one_is_released() {
        let by = [(www_key(), Some("lb1".to_string()))];
        let mut outside = rs("web1", "198.51.100.10");
        check(&mut outside, "lb1", true);
        let before = rs_fold(&outside, &by, None);
        // spec.nodeName set later: the operator's TunnelReady goes, the web daemon's comes.
        let mut inside = outside.clone();
        inside.spec.node_name = Some("node-a".into());
        let after = rs_fold(&inside, &by, Some(&before.status));
        assert!(after.changed, "the apply without TunnelReady releases it");
        assert_eq!(tunnel_ready_of(&after.status), None);
        assert_eq!(healthy(&after.status).status, "True");
        let fresh = rs_fold(&inside, &by, None);
        assert_eq!(
            tunnel_ready_of(&fresh.status),
            None,
            "the web daemon's to write"
        );
    }

    #[test]
    fn the_web_daemons_tunnel_ready_is_never_the_operators() {
        let mut c = Condition {
            type_: TUNNEL_READY.into(),
            status: "True".into(),
            reason: "Ready".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: t(1),
        };
        assert!(!operator_owned(&c));
        c.reason = OUTSIDE_CLUSTER.into();
        assert!(operator_owned(&c));
        c.reason = NO_WEB_DAEMON.into();
        assert!(operator_owned(&c));
    }

    #[test]
    fn real_server_not_selected_or_without_master_is_unknown() {
        let r = good_rs("web1", "198.51.100.10", "lb1");
        let out = rs_fold(&r, &[], None);
        assert_eq!(
            (
                healthy(&out.status).status.as_str(),
                healthy(&out.status).reason.as_str()
            ),
            ("Unknown", "NotSelected")
        );
        let out = rs_fold(&r, &[(www_key(), None)], None);
        assert_eq!(healthy(&out.status).reason, "NoActiveBalancer");
        let out = rs_fold(&r, &[(www_key(), Some("lb9".into()))], None);
        assert_eq!(healthy(&out.status).reason, "NotChecked");
    }

    // Table tests of the parts `fold_virtual_service` and `fold_real_server` are made of; the
    // tests above check the folds whole.

    fn c(status: CondStatus, reason: Reason, message: &str) -> Cond {
        Cond::new(status, reason, message)
    }

    fn excluded_on(name: &str, node: &str) -> ExcludedRealServer {
        ExcludedRealServer {
            name: name.into(),
            node: Some(node.into()),
            reason: NODE_IS_BALANCER.into(),
        }
    }

    #[test]
    fn not_programmed_conditions_say_why_in_each() {
        let invalid = invalid_spec(&["spec.a is bad".into(), "spec.b too".into()]);
        assert_eq!(
            invalid.by_type().map(|(t, c)| (t, c.clone())),
            [
                (
                    ConditionType::Ready,
                    c(
                        CondStatus::False,
                        Reason::InvalidSpec,
                        "spec.a is bad; spec.b too"
                    )
                ),
                (
                    ConditionType::VipActive,
                    c(
                        CondStatus::False,
                        Reason::InvalidSpec,
                        "not programmed: the spec is invalid (see Ready)"
                    )
                ),
                (
                    ConditionType::Degraded,
                    c(
                        CondStatus::Unknown,
                        Reason::InvalidSpec,
                        "not evaluated: the spec is invalid (see Ready)"
                    )
                ),
                (
                    ConditionType::Conflict,
                    c(
                        CondStatus::Unknown,
                        Reason::InvalidSpec,
                        "not evaluated: spec.a is bad; spec.b too"
                    )
                ),
            ]
        );
        let lost = in_conflict("192.0.2.100:80/TCP", "ns/old");
        let held_by = "not programmed: 192.0.2.100:80/TCP belongs to VirtualService ns/old";
        assert_eq!(lost.ready, c(CondStatus::False, Reason::Conflict, held_by));
        assert_eq!(
            lost.vip_active,
            c(CondStatus::False, Reason::Conflict, held_by)
        );
        assert_eq!(
            lost.degraded,
            c(
                CondStatus::Unknown,
                Reason::Conflict,
                "not evaluated while in conflict"
            )
        );
        assert_eq!(
            (lost.conflict.status, lost.conflict.reason),
            (CondStatus::True, Reason::VipPortInUse)
        );
        assert!(lost.conflict.message.starts_with(
            "192.0.2.100:80/TCP is already served by VirtualService ns/old, which is older;"
        ));
    }

    #[test]
    fn vip_active_says_who_holds_the_vip_or_why_nobody_does() {
        let v = www();
        let mut none = BalancerNodes::default();
        none.live.clear();
        let mut down = nodes(&["lb1", "lb2"]);
        down.live.remove("lb2");
        let bare = nodes_with_bare(&["bare1"]);
        let mut all_bare = BalancerNodes::default();
        all_bare.selected.insert("bare1".into());
        all_bare.unlabelled.insert("bare1".into());
        let at = Timestamp::from_second(70).unwrap();
        // (election or none for the early exits, nodes) -> (status, reason, message, active)
        let cases: Vec<(Option<Election>, &BalancerNodes, Cond, Option<&str>)> = vec![
            (
                None,
                &none,
                c(
                    CondStatus::False,
                    Reason::NoBalancerNodes,
                    "spec.balancers.nodeSelector matches no node; label the nodes that may hold the VIP, e.g. kubectl label node <node> lvstun.io/balancer=true",
                ),
                None,
            ),
            (
                None,
                &all_bare,
                c(
                    CondStatus::False,
                    Reason::NoBalancerDaemon,
                    &unlabelled_message(&all_bare.unlabelled, LABEL),
                ),
                None,
            ),
            (
                Some(Election::Master("lb1".into())),
                &bare,
                c(
                    CondStatus::True,
                    Reason::MasterElected,
                    "lb1 holds VIP 192.0.2.100",
                ),
                Some("lb1"),
            ),
            (
                Some(Election::Overlap {
                    master: "lb2".into(),
                    others: vec!["lb1".into()],
                    recheck: at,
                }),
                &bare,
                c(
                    CondStatus::True,
                    Reason::MasterElected,
                    &format!(
                        "lb2 holds VIP 192.0.2.100 (it became Master last; lb1 still reports Master: a failover in progress, or a split brain if it lasts past {at})"
                    ),
                ),
                Some("lb2"),
            ),
            (
                Some(Election::NoMaster(vec![])),
                &down,
                c(
                    CondStatus::False,
                    Reason::NoMaster,
                    "no balancer holds VIP 192.0.2.100: none of the 2 selected node(s) has reported yet; not Ready: lb2",
                ),
                None,
            ),
            (
                Some(Election::NoMaster(vec!["lb1 Backup".into()])),
                &bare,
                c(
                    CondStatus::False,
                    Reason::NoMaster,
                    "no balancer holds VIP 192.0.2.100; reports: lb1 Backup",
                ),
                None,
            ),
            (
                Some(Election::SplitBrain(vec!["lb1".into(), "lb2".into()])),
                &bare,
                c(
                    CondStatus::False,
                    Reason::SplitBrain,
                    "split brain: lb1, lb2 all claim to be Master for VIP 192.0.2.100; check that VRRP advertisements pass between them (multicast, or spec.balancers.unicastPeers) and that virtualRouterID 51 is unique on the segment",
                ),
                None,
            ),
        ];
        for (outcome, n, want, active) in cases {
            let got = match outcome.clone() {
                None => vip_active(&v, n, LABEL, &t(10)),
                Some(e) => elected(&v, e, n),
            };
            assert_eq!(got.cond, want, "{outcome:?}");
            assert_eq!(got.active.as_deref(), active, "{outcome:?}");
            let overlap = matches!(outcome, Some(Election::Overlap { .. }));
            assert_eq!(got.recheck, overlap.then_some(at), "{outcome:?}");
        }
    }

    #[test]
    fn the_tally_counts_servers_that_serve_and_names_the_others() {
        let good = good_rs("good", "198.51.100.1", "lb1");
        let mut failing = node_rs("failing", "198.51.100.2");
        check(&mut failing, "lb1", false);
        tunnel(&mut failing, true);
        let mut no_tunnel = node_rs("no-tunnel", "198.51.100.3");
        check(&mut no_tunnel, "lb1", true);
        tunnel(&mut no_tunnel, false);
        let mut draining = node_rs("draining", "198.51.100.4");
        draining.spec.drain = true;
        let left_out = node_rs("left-out", "198.51.100.5");
        let excluded = [excluded_on("left-out", "node-left-out")];
        let live = nodes(&["lb1"]).live;
        let cases: Vec<(Vec<&RealServer>, Tally)> = vec![
            (vec![], Tally::default()),
            (
                vec![&good, &left_out, &draining],
                Tally {
                    healthy: 1,
                    bad: vec![],
                },
            ),
            (
                vec![&no_tunnel, &failing, &good],
                Tally {
                    healthy: 1,
                    bad: vec![
                        "failing (health check failed on lb1: GET /healthcheck.html: connection refused (3 consecutive failures))".into(),
                        "no-tunnel (tunnel not ready: NoTunl0)".into(),
                    ],
                },
            ),
        ];
        for (servers, want) in cases {
            assert_eq!(tally(&servers, &excluded, Some("lb1"), &live), want);
        }
    }

    #[test]
    fn degraded_from_the_real_servers_alone() {
        let bad = Tally {
            healthy: 1,
            bad: vec!["b (down)".into()],
        };
        let fine = Tally {
            healthy: 2,
            bad: vec![],
        };
        let excluded = [excluded_on("c", "lb1")];
        let at_vip_only = [ExcludedRealServer {
            name: "v".into(),
            node: None,
            reason: Reason::AddressIsVip.as_str().into(),
        }];
        let cases: Vec<(usize, &Tally, &[ExcludedRealServer], Cond)> = vec![
            (
                0,
                &fine,
                &[],
                c(
                    CondStatus::True,
                    Reason::NoRealServers,
                    "spec.realServerSelector matches no RealServer in namespace ns",
                ),
            ),
            (
                3,
                &bad,
                &excluded,
                c(
                    CondStatus::True,
                    Reason::RealServerOnBalancer,
                    &format!(
                        "{}; also 1 of 3 real servers not serving: b (down)",
                        excluded_message(&excluded, "192.0.2.100")
                    ),
                ),
            ),
            (
                3,
                &fine,
                &excluded,
                c(
                    CondStatus::True,
                    Reason::RealServerOnBalancer,
                    &excluded_message(&excluded, "192.0.2.100"),
                ),
            ),
            (
                3,
                &fine,
                &at_vip_only,
                c(
                    CondStatus::True,
                    Reason::RealServerAtVip,
                    "RealServer v has spec.address 192.0.2.100, which is this VirtualService's VIP, so it is left out of this VIP (the other real servers keep serving): a balancer would tunnel the VIP's traffic to the VIP itself; fix: set the RealServer's spec.address to the real server's own address, which is never a VIP",
                ),
            ),
            (
                2,
                &bad,
                &[],
                c(
                    CondStatus::True,
                    Reason::RealServersUnhealthy,
                    "1 of 2 real servers not serving: b (down)",
                ),
            ),
            (
                2,
                &fine,
                &[],
                c(
                    CondStatus::False,
                    Reason::AllHealthy,
                    "2 of 2 real servers healthy",
                ),
            ),
        ];
        for (total, tally, excluded, want) in cases {
            assert_eq!(
                serving_degraded("ns", "192.0.2.100", total, tally, excluded),
                want
            );
        }
    }

    #[test]
    fn a_further_cause_replaces_all_healthy_and_joins_anything_else() {
        let healthy = c(
            CondStatus::False,
            Reason::AllHealthy,
            "2 of 2 real servers healthy",
        );
        let unhealthy = c(
            CondStatus::True,
            Reason::RealServersUnhealthy,
            "1 of 2 down",
        );
        let cases = [
            (healthy.clone(), None, healthy.clone()),
            (unhealthy.clone(), None, unhealthy.clone()),
            (
                healthy,
                Some("x refused"),
                c(CondStatus::True, Reason::KernelSettingRefused, "x refused"),
            ),
            (
                unhealthy,
                Some("x refused"),
                c(
                    CondStatus::True,
                    Reason::RealServersUnhealthy,
                    "1 of 2 down; also x refused",
                ),
            ),
        ];
        for (before, message, want) in cases {
            let got = also(
                before.clone(),
                Reason::KernelSettingRefused,
                message.map(String::from),
            );
            assert_eq!(got, want, "{before:?} + {message:?}");
        }
    }

    #[test]
    fn ready_needs_the_vip_held_and_a_server_serving() {
        let held = Holding {
            cond: c(CondStatus::True, Reason::MasterElected, "lb1 holds VIP"),
            active: Some("lb1".into()),
            recheck: None,
        };
        let split = Holding::nobody(c(CondStatus::False, Reason::SplitBrain, "split brain: ..."));
        let none_serve = Tally {
            healthy: 0,
            bad: vec!["a (down)".into()],
        };
        let one_serves = Tally {
            healthy: 1,
            bad: vec![],
        };
        let excluded = [excluded_on("b", "lb2")];
        let degraded = c(
            CondStatus::True,
            Reason::NoRealServers,
            "matches no RealServer",
        );
        let cases: Vec<(&Holding, usize, &Tally, Cond)> = vec![
            (
                &split,
                2,
                &one_serves,
                c(CondStatus::False, Reason::SplitBrain, "split brain: ..."),
            ),
            (
                &held,
                0,
                &one_serves,
                c(
                    CondStatus::False,
                    Reason::NoRealServers,
                    "matches no RealServer",
                ),
            ),
            (
                &held,
                2,
                &none_serve,
                c(
                    CondStatus::False,
                    Reason::NoHealthyRealServers,
                    "none of the 2 real servers is healthy and tunnel-ready: a (down), b (on balancer node lb2: left out)",
                ),
            ),
            (
                &held,
                2,
                &one_serves,
                c(
                    CondStatus::True,
                    Reason::Serving,
                    "VIP 192.0.2.100 served by lb1 with 1 of 2 real servers",
                ),
            ),
        ];
        for (holding, total, tally, want) in cases {
            assert_eq!(
                ready("192.0.2.100", holding, total, tally, &excluded, &degraded),
                want
            );
        }
    }

    #[test]
    fn only_the_operators_vs_conditions_are_carried_and_compared() {
        let mut previous = VirtualServiceStatus::default();
        let foreign = Condition {
            type_: "SomethingElse".into(),
            status: "True".into(),
            reason: "Other".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: t(1),
        };
        previous.conditions.push(foreign.clone());
        assert!(!is_vs_condition(&foreign));
        let decided = invalid_spec(&["bad".into()]);
        let (conditions, changed) = merge_conditions(&previous, &decided, Some(2), &t(5));
        assert!(changed);
        assert_eq!(
            conditions
                .iter()
                .map(|c| c.type_.as_str())
                .collect::<Vec<_>>(),
            [READY, VIP_ACTIVE, DEGRADED, CONFLICT]
        );
        previous.conditions = conditions.clone();
        let (again, changed) = merge_conditions(&previous, &decided, Some(2), &t(9));
        assert!(!changed, "the same decision again changes nothing");
        assert_eq!(again, conditions);
        let moved = VirtualServiceStatus {
            healthy_summary: Some("1/1".into()),
            ..previous.clone()
        };
        assert!(fields_changed(&previous, &moved));
        assert!(!fields_changed(&previous, &previous));
    }

    fn with(conds: &[(ConditionType, Cond)], active: Option<&str>) -> VirtualServiceStatus {
        VirtualServiceStatus {
            conditions: conds
                .iter()
                .map(|(t_, c)| c.condition(*t_, Some(1), &t(1)))
                .collect(),
            active_balancer: active.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn each_transition_has_its_event() {
        let vip = "192.0.2.100";
        let vip_c = |r: Reason| (ConditionType::VipActive, c(CondStatus::False, r, "msg"));
        let degraded = |s: CondStatus, r: Reason| (ConditionType::Degraded, c(s, r, "why"));
        let conflict =
            |s: CondStatus| (ConditionType::Conflict, c(s, Reason::VipPortInUse, "taken"));
        let empty = with(&[], None);
        // Master.
        assert_eq!(
            master_notice(vip, &empty, &with(&[], Some("lb1"))),
            (
                Some(normal(
                    "NewMaster",
                    "lb1 now holds VIP 192.0.2.100 (before: nobody)".into()
                )),
                true
            )
        );
        assert_eq!(
            master_notice(
                vip,
                &with(&[], Some("lb1")),
                &with(&[vip_c(Reason::NoMaster)], None)
            ),
            (
                Some(warning(
                    "NoMaster",
                    "no balancer holds VIP 192.0.2.100 any more (lb1 was Master)".into()
                )),
                false
            )
        );
        assert_eq!(
            master_notice(
                vip,
                &with(&[], Some("lb1")),
                &with(&[vip_c(Reason::SplitBrain)], None)
            ),
            (None, false)
        );
        assert_eq!(master_notice(vip, &empty, &empty), (None, false));
        // Split brain, once.
        let split = with(&[vip_c(Reason::SplitBrain)], None);
        assert_eq!(
            split_brain_notice(&empty, &split),
            Some(warning("SplitBrain", "msg".into()))
        );
        assert_eq!(split_brain_notice(&split, &split), None);
        // Conflict and its end.
        let (taken, free) = (
            with(&[conflict(CondStatus::True)], None),
            with(&[conflict(CondStatus::False)], None),
        );
        assert_eq!(
            conflict_notice(vip, &free, &taken),
            Some(warning("Conflict", "taken".into()))
        );
        assert_eq!(
            conflict_notice(vip, &taken, &free),
            Some(normal(
                "ConflictResolved",
                "this VirtualService now owns its VIP and ports on 192.0.2.100".into()
            ))
        );
        assert_eq!(conflict_notice(vip, &taken, &taken), None);
        // Degraded: causes with Events of their own, the rest, recovery.
        let fine = with(&[degraded(CondStatus::False, Reason::AllHealthy)], None);
        let cases: Vec<(Reason, Vec<&str>)> = vec![
            (Reason::RealServersUnhealthy, vec!["Degraded"]),
            (Reason::RealServerOnBalancer, vec!["RealServerOnBalancer"]),
            (Reason::KernelSettingRefused, vec![]),
            (Reason::BalancerNodesUnlabelled, vec![]),
            (Reason::IpvsServiceDeletedExternally, vec![]),
        ];
        for (reason, want) in cases {
            let bad = with(&[degraded(CondStatus::True, reason)], None);
            let got: Vec<&str> = degraded_notices(vip, &fine, &bad)
                .iter()
                .map(|n| n.reason)
                .collect();
            assert_eq!(got, want, "{reason}");
            let back: Vec<&str> = degraded_notices(vip, &bad, &fine)
                .iter()
                .map(|n| n.reason)
                .collect();
            assert_eq!(back, ["Recovered"], "{reason}");
        }
        // An invalid spec, once.
        let invalid = with(
            &[(
                ConditionType::Ready,
                c(CondStatus::False, Reason::InvalidSpec, "bad"),
            )],
            None,
        );
        assert_eq!(
            invalid_spec_notice(&empty, &invalid),
            Some(warning("InvalidSpec", "bad".into()))
        );
        assert_eq!(invalid_spec_notice(&invalid, &invalid), None);
    }

    #[test]
    fn healthy_of_a_real_server_from_the_checks_of_the_active_balancers() {
        let mut r = node_rs("web1", "198.51.100.10");
        check(&mut r, "lb1", true);
        check(&mut r, "lb3", false);
        let set = |names: &[&'static str]| names.iter().copied().collect::<BTreeSet<&str>>();
        let cases = [
            (
                set(&["lb1"]),
                c(
                    CondStatus::True,
                    Reason::Passing,
                    "passes health checks on lb1",
                ),
            ),
            (
                set(&["lb1", "lb2"]),
                c(
                    CondStatus::Unknown,
                    Reason::NotChecked,
                    "lb2 has not checked it yet",
                ),
            ),
            (
                set(&["lb1", "lb2", "lb3"]),
                c(
                    CondStatus::False,
                    Reason::CheckFailed,
                    "health check failed on lb3: GET /healthcheck.html: connection refused (3 consecutive failures)",
                ),
            ),
        ];
        for (actives, want) in cases {
            assert_eq!(checked_by(&r, &actives), want, "{actives:?}");
        }
    }

    #[test]
    fn the_operator_writes_tunnel_ready_only_where_no_web_daemon_does() {
        let outside = rs("ext", "198.51.100.20");
        let inside = node_rs("web1", "198.51.100.10");
        let unlabelled = WebNode::Unlabelled {
            node: "node-web1".into(),
            label: "lvstun.io/web=true".into(),
        };
        let cases = [
            (
                &outside,
                &WebNode::Runs,
                Some((Reason::OutsideCluster, OUTSIDE_CLUSTER_MESSAGE.to_string())),
            ),
            (&inside, &WebNode::Runs, None),
            (
                &inside,
                &unlabelled,
                unlabelled.message().map(|m| (Reason::NoWebDaemon, m)),
            ),
        ];
        for (r, web, want) in cases {
            let got = operator_tunnel_ready(r, web);
            assert!(got.as_ref().is_none_or(|c| c.status == CondStatus::Unknown));
            assert_eq!(got.map(|c| (c.reason, c.message)), want, "{web:?}");
        }
    }

    #[test]
    fn a_server_going_down_or_up_is_an_event_once() {
        let down = c(CondStatus::False, Reason::CheckFailed, "refused");
        let up = c(CondStatus::True, Reason::Passing, "passes");
        let unknown = c(CondStatus::Unknown, Reason::NotChecked, "not yet");
        let cases = [
            (
                "",
                &down,
                Some(("ServerDown", "w (1.2.3.4) is down: refused")),
            ),
            (
                "True",
                &down,
                Some(("ServerDown", "w (1.2.3.4) is down: refused")),
            ),
            ("False", &down, None),
            (
                "False",
                &up,
                Some(("ServerUp", "w (1.2.3.4) is up again: passes")),
            ),
            ("True", &up, None),
            ("", &up, None),
            ("False", &unknown, None),
        ];
        for (old, health, want) in cases {
            let got = server_notice("w (1.2.3.4)", old, health);
            assert_eq!(
                got.as_ref().map(|n| (n.reason, n.note.as_str())),
                want,
                "{old} -> {health:?}"
            );
        }
    }
}
