//! Which VRRP virtual routers this balancer runs, and how a running set changes into the
//! desired one. Pure: no I/O, no clock; [`super::owner`] does what these functions decide.
//!
//! Rules, and why:
//! - A virtual router runs for every VIP of the VirtualServices this node *programs*: the set
//!   [`super::desired::resolve`] returns, so the VRRP side keeps exactly its contract (node
//!   selector, deletion, `Conflict=True` from the operator, invalid objects, seniority on a
//!   shared VIP:port). A node never holds a VIP it does not forward.
//! - One virtual router per VRID. Two VirtualServices on one VIP (different ports) give one
//!   router for that VIP; two VIPs that name the same VRID become one router holding both
//!   addresses, as a VRRP router with several addresses (keepalived's `virtual_ipaddress`
//!   list): two routers with one VRID on a segment would read each other's advertisements.
//!   The most senior VirtualService (oldest, then namespace/name) decides the settings; one
//!   whose settings differ is named in a problem, never silently merged.
//! - A VIP claimed under two VRIDs (two VirtualServices on one VIP disagreeing) keeps the
//!   senior one's VRID: a VIP is held by at most one router here.
//! - Priority by node order ([`priority_for`]) ranks the nodes this node can know of without
//!   any coordination: the per-node overrides, the nodes that report in
//!   `status.balancers[]` (in a cluster every balancer writes its entry), and itself. Standalone
//!   files have no status: name the priorities there (the lab does).
//! - Settings that cannot become a router (VRID out of range, bad peer) put the VIP's
//!   VirtualServices in `Fault` with the reason, and no router runs.
//! - A router takes its configured priority (and so may preempt) only when [`stand_by`] finds
//!   nothing in the way: its health checks settled, the backup sync daemon warmed up
//!   ([`SYNC_WARMUP`]), a destination in rotation; a restarting balancer keeps its backup sync
//!   daemon across the restart ([`sync_role_on`], [`sync_adoptable`]). Together they make a
//!   failback keep every flow the Master forwards.
//!
//! - Adverts count only from the router's peers ([`allowed_sources`]): the `unicastPeers`
//!   when given; else, in a cluster, the InternalIPs of the Nodes its VirtualServices'
//!   `spec.balancers.nodeSelector` selects; else, standalone, `--vrrp-peers`. While none of
//!   these is known, every sender is heard: a deaf Backup would take the VIP from a live
//!   Master, a worse fault than the one the list guards against.
//!
//! [`plan`] turns (running, desired) into changes: a priority or peer change is told to the
//! running router (no handover); any other change stops the old router gracefully (priority 0, VIP
//! removed) and starts the new one, because VRID, interval, interface and peers are fixed for
//! a router's life (RFC 9568 §6.1 parameters).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use lvstun_crds::v1alpha1::{Balancers, VirtualService};

use super::desired::ObjectRef;
use crate::source::{Peers, Snapshot};
use crate::vrrp::run::router_config;
use lvstun_ipvs::model::{SyncDaemon, SyncRole};
use lvstun_vrrp::fsm::{Priority, RouterConfig};
use lvstun_vrrp::packet::Sources;

/// The most addresses one router can hold: an advertisement counts them in one byte.
pub const MAX_VIPS: usize = 255;

/// One virtual router this node wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSpec {
    /// VRID, priority, interval, preemption, VIPs; `primary_ip` is 0.0.0.0 (the interface's
    /// first address, found when the router starts).
    pub config: RouterConfig,
    /// `spec.balancers.interface`; `None` = the interface with an address in the VIP's subnet
    /// (see [`interface_for`]).
    pub interface: Option<String>,
    /// Unicast peers; empty = multicast. This node's own address is dropped at start.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Whose advertisements are heard ([`allowed_sources`]).
    pub sources: Sources,
    /// The VirtualServices whose VIPs this router holds (for their status entries).
    pub virtual_services: Vec<ObjectRef>,
    /// How long a freshly started router waits before its node's forwarding counts: the
    /// longest detection time of its VirtualServices' health checks (failureThreshold x
    /// interval + timeout). Until then the weights in the kernel may be a predecessor's, not
    /// this node's verdicts, and a node that cannot reach its real servers would preempt the
    /// VIP into a table about to empty.
    pub settle: std::time::Duration,
}

/// The health check detection time of `vs` (see [`InstanceSpec::settle`]), at most 10 min.
pub fn settle_time(vs: &VirtualService) -> std::time::Duration {
    let hc = &vs.spec.health_check;
    let secs = |v: i32| u64::try_from(v).unwrap_or(0);
    let t = secs(hc.failure_threshold)
        .saturating_mul(secs(hc.interval_seconds))
        .saturating_add(secs(hc.timeout_seconds));
    std::time::Duration::from_secs(t.min(600))
}

impl InstanceSpec {
    /// The VRID: the router's identity among the running ones.
    pub fn vrid(&self) -> u8 {
        self.config.vrid
    }

    /// Whether `other` differs only in priority, peers (`sources`) and the VirtualServices it
    /// serves, so the running router can be told instead of restarted.
    fn same_router(&self, other: &InstanceSpec) -> bool {
        let mut a = self.config.clone();
        a.priority = other.config.priority;
        a == other.config
            && self.interface == other.interface
            && self.unicast_peers == other.unicast_peers
    }
}

/// The routers this node wants, and what kept others from being wanted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredVips {
    /// By VRID.
    pub instances: BTreeMap<u8, InstanceSpec>,
    /// VirtualServices whose VIP cannot be held, and why (reported as `Fault`).
    pub faults: BTreeMap<ObjectRef, String>,
    /// Settings that were overruled (logged).
    pub problems: Vec<String>,
}

fn object_ref(vs: &VirtualService) -> ObjectRef {
    ObjectRef::of(&vs.metadata)
}

/// The nodes `priority_for` ranks: overrides, reporting balancers, and this node.
fn known_balancers(vs: &VirtualService, node: &str) -> Vec<String> {
    let b = &vs.spec.balancers;
    let mut names: BTreeSet<String> = b.priorities.iter().map(|p| p.node_name.clone()).collect();
    if let Some(status) = &vs.status {
        names.extend(status.balancers.iter().map(|e| e.node.clone()));
    }
    names.insert(node.to_owned());
    names.into_iter().collect()
}

/// The virtual routers `node` runs for the VirtualServices in `served` (those the balancer
/// programs, from [`super::desired::resolve`]).
pub fn desired_vips(snapshot: &Snapshot, served: &BTreeSet<ObjectRef>, node: &str) -> DesiredVips {
    let mut out = DesiredVips::default();
    let mut list: Vec<&VirtualService> = snapshot
        .virtual_services
        .iter()
        .filter(|vs| served.contains(&object_ref(vs)))
        .collect();
    lvstun_rules::oldest_first(&mut list);
    // The senior VirtualService of each VIP and of each VRID.
    let mut by_vip: BTreeMap<Ipv4Addr, &VirtualService> = BTreeMap::new();
    let mut by_vrid: BTreeMap<i32, &VirtualService> = BTreeMap::new();
    for vs in list {
        let me = object_ref(vs);
        let Ok(vip) = vs.spec.vip.parse::<Ipv4Addr>() else {
            // resolve() refuses these already; nothing to hold.
            continue;
        };
        let b = &vs.spec.balancers;
        if let Some(senior) = by_vip.get(&vip) {
            if !lvstun_rules::same_election(&senior.spec.balancers, b) {
                out.problems.push(format!(
                    "VirtualService {me}: spec.balancers differs from VirtualService {} on the same VIP {vip}, whose settings hold",
                    object_ref(senior)
                ));
            }
            let vrid = u8::try_from(senior.spec.balancers.virtual_router_id).ok();
            match vrid.and_then(|v| out.instances.get_mut(&v)) {
                Some(spec) => {
                    spec.virtual_services.push(me);
                    spec.settle = spec.settle.max(settle_time(vs));
                }
                None => {
                    if let Some(reason) = out.faults.get(&object_ref(senior)).cloned() {
                        out.faults.insert(me, reason);
                    }
                }
            }
            continue;
        }
        by_vip.insert(vip, vs);
        if let Some(senior) = by_vrid.get(&b.virtual_router_id) {
            if !lvstun_rules::same_election(&senior.spec.balancers, b) {
                out.problems.push(format!(
                    "VirtualService {me}: VIP {vip} shares VRID {} with VirtualService {}, whose election settings hold",
                    b.virtual_router_id,
                    object_ref(senior)
                ));
            }
            if let Some(spec) = u8::try_from(b.virtual_router_id)
                .ok()
                .and_then(|v| out.instances.get_mut(&v))
            {
                if spec.config.vips.len() >= MAX_VIPS {
                    out.faults.insert(
                        me,
                        format!(
                            "VRID {} already carries {MAX_VIPS} VIPs, the most one VRRPv3 advertisement can name (RFC 9568 §5.2.5); give this VIP another virtualRouterID",
                            b.virtual_router_id
                        ),
                    );
                } else {
                    spec.config.vips.push(vip);
                    spec.virtual_services.push(me);
                    spec.settle = spec.settle.max(settle_time(vs));
                }
            }
            continue;
        }
        by_vrid.insert(b.virtual_router_id, vs);
        let nodes = known_balancers(vs, node);
        match router_config(b, vip, node, &nodes, Ipv4Addr::UNSPECIFIED) {
            Ok((config, unicast_peers)) => {
                out.instances.insert(
                    config.vrid,
                    InstanceSpec {
                        config,
                        interface: b.interface.clone(),
                        unicast_peers,
                        sources: Sources::Any,
                        virtual_services: vec![me],
                        settle: settle_time(vs),
                    },
                );
            }
            Err(e) => {
                out.faults.insert(me, format!("VRRP settings refused: {e}"));
            }
        }
    }
    let by_ref: BTreeMap<ObjectRef, &VirtualService> = snapshot
        .virtual_services
        .iter()
        .map(|vs| (object_ref(vs), vs))
        .collect();
    for spec in out.instances.values_mut() {
        let selectors: Vec<&Balancers> = spec
            .virtual_services
            .iter()
            .filter_map(|r| by_ref.get(r))
            .map(|vs| &vs.spec.balancers)
            .collect();
        spec.sources = allowed_sources(&snapshot.peers, &selectors, &spec.unicast_peers);
    }
    out
}

/// Whose advertisements one router hears: the peers of the VirtualServices whose `balancers`
/// it runs. Pure.
///
/// - `unicastPeers`, when given, are the peers: the admin named them (and the receive filter
///   hears no one else in unicast mode anyway).
/// - In a cluster, the InternalIPs of every Node one of the `nodeSelector`s selects (this
///   node's own among them: its echo is dropped as `from_self` first).
/// - Standalone, the addresses given with `--vrrp-peers`.
/// - Otherwise [`Sources::Any`]: not knowing the peers must not make a Backup deaf to a live
///   Master (see [`Sources`]).
pub fn allowed_sources(peers: &Peers, balancers: &[&Balancers], unicast: &[Ipv4Addr]) -> Sources {
    if !unicast.is_empty() {
        return Sources::Only(unicast.to_vec());
    }
    match peers {
        Peers::Unknown => Sources::Any,
        Peers::Listed(list) => Sources::Only(list.clone()),
        Peers::Nodes(nodes) => {
            let addresses: BTreeSet<Ipv4Addr> = nodes
                .iter()
                .filter(|n| {
                    balancers
                        .iter()
                        .any(|b| lvstun_rules::selects(&b.node_selector, &n.labels))
                })
                .flat_map(|n| n.addresses.iter().copied())
                .collect();
            if addresses.is_empty() {
                // Not even this node's own address: the Nodes are not what we think (no
                // InternalIP, labels not yet seen); hear everyone rather than no one.
                Sources::Any
            } else {
                Sources::Only(addresses.into_iter().collect())
            }
        }
    }
}

/// The interface that carries `vip` when `spec.balancers.interface` is not given: the one with
/// an IPv4 address whose subnet contains the VIP (the connected route to the VIP's subnet),
/// the longest prefix winning, then the name. Host addresses (/32, such as a VIP left by a
/// crashed Master) and loopback do not count. `addrs` is (interface, address, prefix length).
pub fn interface_for(vip: Ipv4Addr, addrs: &[(String, Ipv4Addr, u8)]) -> Option<String> {
    addrs
        .iter()
        .filter(|(name, addr, prefix)| {
            *prefix < 32 && !addr.is_loopback() && name != "lo" && in_subnet(vip, *addr, *prefix)
        })
        .max_by(|a, b| a.2.cmp(&b.2).then_with(|| b.0.cmp(&a.0)))
        .map(|(name, _, _)| name.clone())
}

fn in_subnet(ip: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// One change from the running routers to the desired ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Start a router.
    Start(InstanceSpec),
    /// Stop a router gracefully (priority 0 if Master, VIPs removed).
    Stop(u8),
    /// Stop, then start with the new settings.
    Restart(InstanceSpec),
    /// Tell the running router its new priority (and the VirtualServices it now serves).
    Update(InstanceSpec),
}

/// The changes from `running` to `desired`, by VRID: stops first (a VIP leaving one router
/// before another takes it), then restarts, updates and starts.
pub fn plan(
    running: &BTreeMap<u8, InstanceSpec>,
    desired: &BTreeMap<u8, InstanceSpec>,
) -> Vec<Change> {
    let mut stops = Vec::new();
    let mut rest = Vec::new();
    for vrid in running.keys().filter(|v| !desired.contains_key(v)) {
        stops.push(Change::Stop(*vrid));
    }
    for (vrid, want) in desired {
        match running.get(vrid) {
            None => rest.push(Change::Start(want.clone())),
            Some(have) if have == want => {}
            Some(have) if have.same_router(want) => rest.push(Change::Update(want.clone())),
            Some(_) => rest.push(Change::Restart(want.clone())),
        }
    }
    stops.extend(rest);
    stops
}

/// Whether `priority` changed between two specs of one router.
pub fn priority_changed(have: &InstanceSpec, want: &InstanceSpec) -> Option<Priority> {
    (have.config.priority != want.config.priority).then_some(want.config.priority)
}

/// Whether this node forwards for every one of `virtual_services`: each has some port with a
/// destination in rotation (weight > 0) in the kernel, per the loop's report (`programmed`:
/// VirtualService → port → destinations). Until then its router stands by at a low priority
/// (see [`super::owner`]). Pure.
pub fn forwarding(
    programmed: &BTreeMap<ObjectRef, BTreeMap<String, u32>>,
    virtual_services: &[ObjectRef],
) -> bool {
    !virtual_services.is_empty()
        && virtual_services.iter().all(|vs| {
            programmed
                .get(vs)
                .is_some_and(|ports| ports.values().any(|n| *n > 0))
        })
}

/// How long the IPVS backup sync daemon must have run before a router may take its configured
/// priority (and so preempt the VIP): the longest an entry the Master's kernel has queued waits
/// before it is sent. The master daemon's kernel thread sends a buffer once it is full, or once
/// its first entry is `IPVS_SYNC_FLUSH_TIME` (2 s) old, and looks at that age every
/// `IPVS_SYNC_CHECK_PERIOD` (1 s) (`include/net/ip_vs.h`, `sync_thread_master` in
/// `ip_vs_sync.c`): 2 s + 1 s. A connection is queued when its packet count reaches
/// `sync_threshold` (3) and every `sync_period` (50) packets after, and on TCP state changes
/// (`ip_vs_sync_conn_needed`); so after this wait the backup holds every connection queued
/// since its daemon started, and a busy one queued before. A connection that fell silent
/// before it was queued again reaches the backup only with its next packets: no wait bounds
/// that (see [`super::owner`] for why a restarting balancer keeps its backup daemon).
pub const SYNC_WARMUP: Duration = Duration::from_secs(3);

/// What the node's IPVS backup sync daemon has done for one router, as [`stand_by`] weighs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncProgress {
    /// Nothing to wait for: the router is Master (it sends, it does not receive), or it has
    /// waited once already since it started.
    Done,
    /// The backup daemon has run for this long.
    Backup(Duration),
    /// The node's sync daemons could not be set (logged): waiting would not bring the entries,
    /// so the router does not wait (flows opened meanwhile may reset on failback).
    Unavailable,
    /// No backup daemon runs for it yet (the router is not Backup: its interface is down, or it
    /// is still starting).
    NotRunning,
}

impl SyncProgress {
    /// Whether this progress lets the router take its priority (see [`SYNC_WARMUP`]).
    pub fn satisfied(self) -> bool {
        match self {
            SyncProgress::Done | SyncProgress::Unavailable => true,
            SyncProgress::Backup(ran) => ran >= SYNC_WARMUP,
            SyncProgress::NotRunning => false,
        }
    }
}

/// Why a running router stands by at priority 1 instead of its configured priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StandBy {
    /// Its health checks have not had their detection time ([`InstanceSpec::settle`]) since
    /// it started: the kernel's weights may still be a predecessor's.
    Settling {
        /// Time left.
        left: Duration,
    },
    /// The IPVS backup sync daemon has not run for [`SYNC_WARMUP`] yet: the Master's
    /// connections may not all be in this node's kernel.
    Syncing {
        /// Time left; `None` while no backup daemon runs.
        left: Option<Duration>,
    },
    /// Some of its VirtualServices have no destination in rotation on this node.
    NotForwarding,
}

impl StandBy {
    /// Whether the wait ends by itself (settling, syncing): `/readyz` waits for these. Not for
    /// [`StandBy::NotForwarding`], which lasts as long as the real servers are unreachable: a
    /// rolling update must not hang on it, and the router already stands by meanwhile.
    pub fn warming_up(self) -> bool {
        !matches!(self, StandBy::NotForwarding)
    }
}

impl std::fmt::Display for StandBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StandBy::Settling { left } => write!(
                f,
                "health checks settling ({} s left of their detection time)",
                left.as_secs_f64().ceil()
            ),
            StandBy::Syncing { left: Some(left) } => write!(
                f,
                "IPVS backup sync daemon receiving the Master's connections ({} s left)",
                left.as_secs_f64().ceil()
            ),
            StandBy::Syncing { left: None } => {
                f.write_str("no IPVS backup sync daemon runs yet (the router is not Backup)")
            }
            StandBy::NotForwarding => f.write_str("no destination in rotation on this node"),
        }
    }
}

/// Whether a router that has run for `ran` stands by at priority 1, and why; `None`: it takes
/// its configured priority. In this order: its health checks must have settled (`settle`), the
/// backup sync daemon must have had [`SYNC_WARMUP`] (`sync`), and this node must forward for
/// its VirtualServices (`forwarding`, see [`forwarding`]). A Backup at its configured priority
/// preempts a lower Master, so the first two are what make a failback keep every flow: the
/// table it takes the VIP into is this node's own verdicts and holds the Master's connections.
/// Pure.
pub fn stand_by(
    ran: Duration,
    settle: Duration,
    sync: SyncProgress,
    forwarding: bool,
) -> Option<StandBy> {
    if ran < settle {
        return Some(StandBy::Settling { left: settle - ran });
    }
    if !sync.satisfied() {
        let left = match sync {
            SyncProgress::Backup(ran) => Some(SYNC_WARMUP.saturating_sub(ran)),
            _ => None,
        };
        return Some(StandBy::Syncing { left });
    }
    (!forwarding).then_some(StandBy::NotForwarding)
}

/// The IPVS connection sync daemons a node wants, as (interface, sync ID) per role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncWanted {
    /// The master daemon (sends this node's connections): while some router is Master.
    pub master: Option<(String, u8)>,
    /// The backup daemon (receives the Master's connections): while some router is Backup.
    pub backup: Option<(String, u8)>,
}

/// The sync daemons for the routers' current roles (VRID → role, interface). The kernel runs
/// at most one master and one backup daemon per network namespace, while a node may run
/// several routers, Master of one VIP and Backup of another; so the daemons follow the set:
/// - one router: sync ID = VRID for both roles (what keepalived's `lvs_sync_daemon` does, and
///   what the standalone `lvstun-node vrrp` does), so unrelated pairs on a segment ignore each
///   other;
/// - several: the master daemon uses the lowest Master VRID and its interface; the backup
///   daemon uses sync ID 0, which the kernel reads as "accept every sync ID"
///   (`ip_vs_process_message` checks the ID only when the backup's is non-zero), because
///   each VIP's Master may be a different peer with its own ID.
///
/// Pure.
pub fn sync_wanted(roles: &BTreeMap<u8, (SyncRole, String)>) -> SyncWanted {
    let running = roles.len();
    let first = |want: SyncRole| {
        roles
            .iter()
            .find(|(_, (role, _))| *role == want)
            .map(|(vrid, (_, ifname))| (ifname.clone(), *vrid))
    };
    SyncWanted {
        master: first(SyncRole::Master),
        backup: first(SyncRole::Backup)
            .map(|(ifname, vrid)| (ifname, if running == 1 { vrid } else { 0 })),
    }
}

/// The sync role router `vrid` is given when it asks for `asked`: the same, except that a
/// router that stops while the whole daemon leaves (SIGTERM: an upgrade, a restart) keeps the
/// backup daemon instead of stopping it. The kernel's daemon outlives the process, as the IPVS
/// table does, and goes on receiving the new Master's connections while no balancer runs here;
/// the next process adopts it ([`sync_adoptable`]). Without this, connections opened during the
/// restart would reach this node only when their packet count next hits `sync_period`, and a
/// failback would meet them unknown (reset under `rr`, `wrr`, `lc`). Pure.
pub fn sync_role_on(asked: Option<SyncRole>, leaving: bool) -> Option<SyncRole> {
    match asked {
        None if leaving => Some(SyncRole::Backup),
        other => other,
    }
}

/// The daemons found in the kernel at start, as a [`SyncWanted`], when this daemon would have
/// started them itself (the kernel's default group, port and TTL, which is how [`SyncHub`]
/// starts them): the hub then keeps those it still wants, so a restarted balancer's backup
/// daemon never stops. `None` when some daemon has other settings (someone else's): both are
/// then stopped and started again, as when nothing is known. The message size is not compared:
/// the kernel fills in its own default from the interface's MTU. Pure.
///
/// [`SyncHub`]: super::owner::SyncHub
pub fn sync_adoptable(daemons: &[SyncDaemon]) -> Option<SyncWanted> {
    let mut found = SyncWanted::default();
    for d in daemons {
        let ours = d.group.is_none_or(|g| g == IpAddr::V4(SYNC_GROUP))
            && d.port.is_none_or(|p| p == SYNC_PORT)
            && d.ttl.is_none_or(|t| t == 1);
        if !ours {
            return None;
        }
        let entry = Some((d.ifname.as_str().to_owned(), d.sync_id));
        match d.role {
            SyncRole::Master => found.master = entry,
            SyncRole::Backup => found.backup = entry,
        }
    }
    Some(found)
}

/// What [`SyncHub`] must do to the kernel's daemons to go from `have` (`None`: unknown) to
/// `want`.
///
/// [`SyncHub`]: super::owner::SyncHub
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncChanges {
    /// Daemons to stop first (a Backup that became Master stops absorbing the old Master's
    /// table before it sends its own).
    pub stop: Vec<SyncRole>,
    /// Daemons to start after, as (role, interface, sync ID).
    pub start: Vec<(SyncRole, String, u8)>,
    /// The backup daemon runs on as it was (its warm-up is not owed again).
    pub backup_kept: bool,
}

/// The changes from `have` to `want`: a role whose daemon differs (or is unknown) is stopped,
/// and started again if wanted; a role that is as wanted is left alone. Pure.
pub fn sync_changes(have: Option<&SyncWanted>, want: &SyncWanted) -> SyncChanges {
    let pairs = [
        (SyncRole::Master, have.map(|h| &h.master), &want.master),
        (SyncRole::Backup, have.map(|h| &h.backup), &want.backup),
    ];
    let mut changes = SyncChanges {
        backup_kept: have.map(|h| &h.backup) == Some(&want.backup),
        ..SyncChanges::default()
    };
    for (role, had, wanted) in pairs {
        if had == Some(wanted) {
            continue;
        }
        changes.stop.push(role);
        if let Some((ifname, sync_id)) = wanted {
            changes.start.push((role, ifname.clone(), *sync_id));
        }
    }
    changes
}

/// The kernel's default sync multicast group (`IP_VS_SYNC_GROUP`, 224.0.0.81).
const SYNC_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The kernel's default sync port (`IP_VS_SYNC_PORT`).
const SYNC_PORT: u16 = 8848;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Scope;

    fn vs(name: &str, vip: &str, created: &str, balancers: serde_json::Value) -> VirtualService {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lvstun.io/v1alpha1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {
                "vip": vip,
                "ports": [{"port": 80, "protocol": "TCP"}],
                "realServerSelector": {"matchLabels": {"app": "www"}},
                "balancers": balancers,
            }
        }))
        .unwrap()
    }

    #[test]
    fn settle_is_the_health_checks_detection_time() {
        // The defaults (every 2 s, timeout 1 s, 3 failures... as the CRD defaults them).
        let mut v = vs("a", "192.0.2.100", "2026-01-01T00:00:00Z", b(51));
        let hc = &v.spec.health_check;
        let want =
            u64::try_from(hc.failure_threshold * hc.interval_seconds + hc.timeout_seconds).unwrap();
        assert_eq!(settle_time(&v), std::time::Duration::from_secs(want));
        v.spec.health_check.interval_seconds = 10;
        v.spec.health_check.failure_threshold = 3;
        v.spec.health_check.timeout_seconds = 5;
        assert_eq!(settle_time(&v), std::time::Duration::from_secs(35));
        v.spec.health_check.interval_seconds = 3600;
        v.spec.health_check.failure_threshold = 100;
        assert_eq!(settle_time(&v), std::time::Duration::from_secs(600));
    }

    fn b(vrid: i32) -> serde_json::Value {
        serde_json::json!({
            "nodeSelector": {},
            "virtualRouterID": vrid,
            "advertIntervalMilliseconds": 100,
            "priorities": [{"nodeName": "lb1", "priority": 200}, {"nodeName": "lb2", "priority": 100}],
        })
    }

    fn r(name: &str) -> ObjectRef {
        ObjectRef {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn snap(list: Vec<VirtualService>) -> Snapshot {
        Snapshot {
            refused: None,
            virtual_services: list,
            real_servers: vec![],
            scope: Scope::All,
            peers: Default::default(),
        }
    }

    fn served(names: &[&str]) -> BTreeSet<ObjectRef> {
        names.iter().map(|n| r(n)).collect()
    }

    const T0: &str = "2026-11-25T00:00:00Z";
    const T1: &str = "2026-11-25T01:00:00Z";

    #[test]
    fn one_router_per_vip_with_the_nodes_priority() {
        let s = snap(vec![
            vs("www", "192.0.2.100", T0, b(51)),
            vs("api", "192.0.2.101", T0, b(52)),
        ]);
        let d1 = desired_vips(&s, &served(&["www", "api"]), "lb1");
        assert_eq!(d1.instances.len(), 2);
        let www = &d1.instances[&51];
        assert_eq!(www.config.vips, vec![Ipv4Addr::new(192, 0, 2, 100)]);
        assert_eq!(www.config.priority.get(), 200);
        assert_eq!(www.config.adver_int.centis(), 10);
        assert!(www.config.preempt);
        assert_eq!(www.config.primary_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(www.interface, None);
        assert_eq!(www.virtual_services, vec![r("www")]);
        let d2 = desired_vips(&s, &served(&["www", "api"]), "lb2");
        assert_eq!(d2.instances[&51].config.priority.get(), 100);
        assert!(d1.faults.is_empty() && d1.problems.is_empty());
    }

    #[test]
    fn only_virtual_services_the_balancer_programs() {
        // resolve() left "api" out (a conflict, another node's selector, invalid): no VIP.
        let s = snap(vec![
            vs("www", "192.0.2.100", T0, b(51)),
            vs("api", "192.0.2.101", T0, b(52)),
        ]);
        let d = desired_vips(&s, &served(&["www"]), "lb1");
        assert_eq!(d.instances.keys().copied().collect::<Vec<_>>(), vec![51]);
        assert!(desired_vips(&s, &served(&[]), "lb1").instances.is_empty());
    }

    #[test]
    fn a_shared_vip_gets_one_router_and_the_senior_settings() {
        let mut other = b(60);
        other["advertIntervalMilliseconds"] = 1000.into();
        let s = snap(vec![
            vs("www-https", "192.0.2.100", T1, other),
            vs("www", "192.0.2.100", T0, b(51)),
        ]);
        let d = desired_vips(&s, &served(&["www", "www-https"]), "lb1");
        assert_eq!(d.instances.len(), 1);
        let one = &d.instances[&51];
        assert_eq!(one.config.vips, vec![Ipv4Addr::new(192, 0, 2, 100)]);
        assert_eq!(one.config.adver_int.centis(), 10, "the senior's interval");
        assert_eq!(one.virtual_services, vec![r("www"), r("www-https")]);
        assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
        assert!(d.problems[0].contains("default/www-https"));
        // Same settings: no problem.
        let s = snap(vec![
            vs("www-https", "192.0.2.100", T1, b(51)),
            vs("www", "192.0.2.100", T0, b(51)),
        ]);
        assert!(
            desired_vips(&s, &served(&["www", "www-https"]), "lb1")
                .problems
                .is_empty()
        );
    }

    #[test]
    fn vips_sharing_a_vrid_share_a_router() {
        let s = snap(vec![
            vs("www", "192.0.2.100", T0, b(51)),
            vs("api", "192.0.2.101", T1, b(51)),
        ]);
        let d = desired_vips(&s, &served(&["www", "api"]), "lb1");
        assert_eq!(d.instances.len(), 1);
        assert_eq!(
            d.instances[&51].config.vips,
            vec![Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101)]
        );
        assert_eq!(d.instances[&51].virtual_services, vec![r("www"), r("api")]);
    }

    #[test]
    fn refused_settings_are_faults() {
        let mut bad = b(51);
        bad["unicastPeers"] = serde_json::json!(["lb2"]);
        let s = snap(vec![
            vs("www", "192.0.2.100", T0, bad),
            vs("www-https", "192.0.2.100", T1, b(51)),
        ]);
        let d = desired_vips(&s, &served(&["www", "www-https"]), "lb1");
        assert!(d.instances.is_empty());
        assert!(d.faults[&r("www")].contains("unicast peer"), "{d:?}");
        assert!(d.faults.contains_key(&r("www-https")), "{d:?}");
    }

    #[test]
    fn priority_by_node_order_counts_reporting_balancers() {
        let mut by_order = serde_json::json!({
            "nodeSelector": {},
            "virtualRouterID": 51,
        });
        let mut www = vs("www", "192.0.2.100", T0, by_order.take());
        let d = desired_vips(&snap(vec![www.clone()]), &served(&["www"]), "node-b");
        assert_eq!(d.instances[&51].config.priority.get(), 200, "alone: first");
        www.status = Some(
            serde_json::from_value(serde_json::json!({
                "balancers": [{"node": "node-a", "state": "Master"}, {"node": "node-b", "state": "Backup"}]
            }))
            .unwrap(),
        );
        let d = desired_vips(&snap(vec![www.clone()]), &served(&["www"]), "node-b");
        assert_eq!(d.instances[&51].config.priority.get(), 190);
        assert_eq!(
            d.instances[&51].config.adver_int.centis(),
            100,
            "default 1 s"
        );
        let d = desired_vips(&snap(vec![www]), &served(&["www"]), "node-a");
        assert_eq!(d.instances[&51].config.priority.get(), 200);
    }

    #[test]
    fn the_interface_is_the_one_on_the_vips_subnet() {
        let vip = Ipv4Addr::new(192, 0, 2, 100);
        let a = |n: &str, ip: [u8; 4], p: u8| (n.to_owned(), Ipv4Addr::from(ip), p);
        let addrs = vec![
            a("lo", [127, 0, 0, 1], 8),
            a("eth1", [198, 51, 100, 1], 24),
            a("eth0", [192, 0, 2, 11], 24),
            a("eth0", [192, 0, 2, 100], 32),
            a("wide", [192, 0, 0, 1], 16),
        ];
        assert_eq!(interface_for(vip, &addrs).as_deref(), Some("eth0"));
        assert_eq!(
            interface_for(Ipv4Addr::new(192, 0, 9, 9), &addrs).as_deref(),
            Some("wide")
        );
        assert_eq!(interface_for(Ipv4Addr::new(203, 0, 113, 1), &addrs), None);
        assert_eq!(
            interface_for(vip, &[a("eth0", [192, 0, 2, 100], 32)]),
            None,
            "a left-over VIP is not a subnet"
        );
        assert!(in_subnet(vip, Ipv4Addr::new(10, 0, 0, 0), 0));
    }

    #[test]
    fn plan_stops_first_updates_priority_and_restarts_the_rest() {
        let s = snap(vec![
            vs("www", "192.0.2.100", T0, b(51)),
            vs("api", "192.0.2.101", T0, b(52)),
        ]);
        let have = desired_vips(&s, &served(&["www", "api"]), "lb1").instances;
        assert!(plan(&have, &have).is_empty(), "nothing changed");
        let mut want = have.clone();
        want.remove(&52);
        let mut www = want[&51].clone();
        www.config.priority = Priority::new(150).unwrap();
        want.insert(51, www.clone());
        let mut db = www.clone();
        db.config.vrid = 53;
        db.config.vips = vec![Ipv4Addr::new(192, 0, 2, 102)];
        want.insert(53, db.clone());
        assert_eq!(
            plan(&have, &want),
            vec![
                Change::Stop(52),
                Change::Update(www.clone()),
                Change::Start(db)
            ]
        );
        assert_eq!(
            priority_changed(&have[&51], &www).map(Priority::get),
            Some(150)
        );
        let mut moved = www.clone();
        moved.interface = Some("eth1".into());
        let want = BTreeMap::from([(51, moved.clone())]);
        assert_eq!(
            plan(&have, &want),
            vec![Change::Stop(52), Change::Restart(moved)]
        );
    }

    fn node(name: &str, role: Option<&str>, ip: [u8; 4]) -> crate::source::NodePeer {
        crate::source::NodePeer {
            name: name.into(),
            labels: role
                .map(|r| BTreeMap::from([("lvstun.io/balancer".to_owned(), r.to_owned())]))
                .unwrap_or_default(),
            addresses: vec![Ipv4Addr::from(ip)],
        }
    }

    fn balancers_json(v: serde_json::Value) -> Balancers {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn allowed_sources_are_the_known_peers() {
        let selective = balancers_json(serde_json::json!({
            "nodeSelector": {"matchLabels": {"lvstun.io/balancer": "edge"}},
            "virtualRouterID": 51,
        }));
        let other = balancers_json(serde_json::json!({
            "nodeSelector": {"matchLabels": {"lvstun.io/balancer": "core"}},
            "virtualRouterID": 51,
        }));
        let nodes = Peers::Nodes(vec![
            node("lb1", Some("edge"), [192, 0, 2, 2]),
            node("lb2", Some("edge"), [192, 0, 2, 3]),
            node("lb3", Some("core"), [192, 0, 2, 4]),
            node("web1", None, [198, 51, 100, 10]),
        ]);
        let ip = |d: u8| Ipv4Addr::new(192, 0, 2, d);
        struct Case {
            name: &'static str,
            peers: Peers,
            balancers: Vec<Balancers>,
            unicast: Vec<Ipv4Addr>,
            want: Sources,
        }
        let cases = [
            Case {
                name: "the Nodes not listed yet: everyone is heard",
                peers: Peers::Unknown,
                balancers: vec![selective.clone()],
                unicast: vec![],
                want: Sources::Any,
            },
            Case {
                name: "the selected Nodes' InternalIPs",
                peers: nodes.clone(),
                balancers: vec![selective.clone()],
                unicast: vec![],
                want: Sources::Only(vec![ip(2), ip(3)]),
            },
            Case {
                name: "two VirtualServices on one router: the union of their nodes",
                peers: nodes.clone(),
                balancers: vec![selective.clone(), other.clone()],
                unicast: vec![],
                want: Sources::Only(vec![ip(2), ip(3), ip(4)]),
            },
            Case {
                name: "unicastPeers win over the Nodes",
                peers: nodes.clone(),
                balancers: vec![selective.clone()],
                unicast: vec![ip(9)],
                want: Sources::Only(vec![ip(9)]),
            },
            Case {
                name: "a selector that matches no Node with an address: everyone is heard",
                peers: Peers::Nodes(vec![node("web1", None, [198, 51, 100, 10])]),
                balancers: vec![selective.clone()],
                unicast: vec![],
                want: Sources::Any,
            },
            Case {
                name: "standalone: the listed peers",
                peers: Peers::Listed(vec![ip(2), ip(3)]),
                balancers: vec![selective.clone()],
                unicast: vec![],
                want: Sources::Only(vec![ip(2), ip(3)]),
            },
        ];
        for c in cases {
            let refs: Vec<&Balancers> = c.balancers.iter().collect();
            assert_eq!(
                allowed_sources(&c.peers, &refs, &c.unicast),
                c.want,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn new_peers_update_the_running_router_without_a_restart() {
        let mut s = snap(vec![vs("www", "192.0.2.100", T0, b(51))]);
        let have = desired_vips(&s, &served(&["www"]), "lb1").instances;
        assert_eq!(have[&51].sources, Sources::Any);
        s.peers = Peers::Listed(vec![Ipv4Addr::new(192, 0, 2, 3)]);
        let want = desired_vips(&s, &served(&["www"]), "lb1").instances;
        assert_eq!(
            want[&51].sources,
            Sources::Only(vec![Ipv4Addr::new(192, 0, 2, 3)])
        );
        assert_eq!(plan(&have, &want), vec![Change::Update(want[&51].clone())]);
    }

    #[test]
    fn sync_daemons_follow_the_roles() {
        let eth0 = || "eth0".to_owned();
        let none = BTreeMap::new();
        assert_eq!(sync_wanted(&none), SyncWanted::default());
        let one = BTreeMap::from([(51, (SyncRole::Master, eth0()))]);
        assert_eq!(
            sync_wanted(&one),
            SyncWanted {
                master: Some((eth0(), 51)),
                backup: None
            }
        );
        let one = BTreeMap::from([(51, (SyncRole::Backup, eth0()))]);
        assert_eq!(sync_wanted(&one).backup, Some((eth0(), 51)));
        assert_eq!(sync_wanted(&one).master, None);
        let two = BTreeMap::from([
            (52, (SyncRole::Master, eth0())),
            (51, (SyncRole::Backup, eth0())),
            (60, (SyncRole::Master, "eth1".to_owned())),
        ]);
        assert_eq!(
            sync_wanted(&two),
            SyncWanted {
                master: Some((eth0(), 52)),
                backup: Some((eth0(), 0)),
            }
        );
    }

    #[test]
    fn forwarding_needs_a_destination_in_rotation_for_each() {
        let programmed = BTreeMap::from([
            (r("www"), BTreeMap::from([("80/TCP".to_owned(), 2u32)])),
            (
                r("api"),
                BTreeMap::from([("80/TCP".to_owned(), 0u32), ("443/TCP".to_owned(), 0)]),
            ),
        ]);
        assert!(forwarding(&programmed, &[r("www")]));
        assert!(!forwarding(&programmed, &[r("www"), r("api")]));
        assert!(!forwarding(&programmed, &[r("gone")]));
        assert!(!forwarding(&programmed, &[]));
    }

    #[test]
    fn a_vrid_holds_at_most_255_vips() {
        let list: Vec<VirtualService> = (0..300)
            .map(|i| {
                let vip = format!("10.0.{}.{}", i / 250, 1 + i % 250);
                vs(&format!("vs{i:03}"), &vip, T0, b(7))
            })
            .collect();
        let names: Vec<String> = (0..300).map(|i| format!("vs{i:03}")).collect();
        let served: BTreeSet<ObjectRef> = names.iter().map(|n| r(n)).collect();
        let d = desired_vips(&snap(list), &served, "lb1");
        assert_eq!(d.instances[&7].config.vips.len(), MAX_VIPS);
        assert_eq!(d.faults.len(), 300 - MAX_VIPS);
        assert!(d.faults[&r("vs299")].contains("another virtualRouterID"));
    }

    #[test]
    fn a_router_stands_by_until_settled_synced_and_forwarding() {
        let s = Duration::from_secs;
        let settle = s(7);
        let synced = SyncProgress::Backup(SYNC_WARMUP);
        // Settling comes first, whatever else holds.
        assert_eq!(
            stand_by(s(2), settle, synced, true),
            Some(StandBy::Settling { left: s(5) })
        );
        // Settled, but the backup daemon has run for 1 s only: 2 s more.
        assert_eq!(
            stand_by(s(7), settle, SyncProgress::Backup(s(1)), true),
            Some(StandBy::Syncing { left: Some(s(2)) })
        );
        assert_eq!(
            stand_by(s(7), settle, SyncProgress::NotRunning, true),
            Some(StandBy::Syncing { left: None })
        );
        // Settled and synced: the configured priority, if the node forwards.
        assert_eq!(stand_by(s(7), settle, synced, true), None);
        assert_eq!(
            stand_by(s(7), settle, synced, false),
            Some(StandBy::NotForwarding)
        );
        // A Master, a router that waited once, or sync that cannot run: nothing to wait for.
        for sync in [SyncProgress::Done, SyncProgress::Unavailable] {
            assert_eq!(stand_by(s(7), settle, sync, true), None, "{sync:?}");
        }
        // Nothing to settle (no health check time) still waits for sync.
        assert_eq!(
            stand_by(
                Duration::ZERO,
                Duration::ZERO,
                SyncProgress::Backup(s(0)),
                true
            ),
            Some(StandBy::Syncing {
                left: Some(SYNC_WARMUP)
            })
        );
        // Readiness waits for the bounded waits only.
        assert!(StandBy::Settling { left: s(1) }.warming_up());
        assert!(StandBy::Syncing { left: None }.warming_up());
        assert!(!StandBy::NotForwarding.warming_up());
        assert_eq!(
            StandBy::Settling {
                left: Duration::from_millis(4100)
            }
            .to_string(),
            "health checks settling (5 s left of their detection time)"
        );
    }

    fn daemon(role: SyncRole, ifname: &str, sync_id: u8) -> SyncDaemon {
        SyncDaemon::new(
            role,
            lvstun_ipvs::model::IfName::new(ifname).unwrap(),
            sync_id,
        )
    }

    /// What the kernel runs once `wanted` is applied, as its dump reports it (group, port and
    /// TTL filled in, as the kernel does since 4.3).
    fn running(wanted: &SyncWanted) -> Vec<SyncDaemon> {
        let mut out = Vec::new();
        for (role, entry) in [
            (SyncRole::Master, &wanted.master),
            (SyncRole::Backup, &wanted.backup),
        ] {
            if let Some((ifname, id)) = entry {
                let mut d = daemon(role, ifname, *id);
                d.group = Some(IpAddr::V4(SYNC_GROUP));
                d.port = Some(SYNC_PORT);
                d.ttl = Some(1);
                d.max_len = Some(1472);
                out.push(d);
            }
        }
        out
    }

    #[test]
    fn a_restart_keeps_the_backup_sync_daemon_running() {
        let eth0 = || "eth0".to_owned();
        // The leaving process: router 51 was Master; on SIGTERM it steps down (VIP first),
        // then asks for no daemon, which becomes Backup: the master daemon stops, the backup runs.
        assert_eq!(sync_role_on(None, true), Some(SyncRole::Backup));
        assert_eq!(sync_role_on(None, false), None);
        assert_eq!(
            sync_role_on(Some(SyncRole::Master), true),
            Some(SyncRole::Master)
        );
        let on_exit = |vrid: u8| (vrid, (sync_role_on(None, true).unwrap(), eth0()));
        let at_exit = BTreeMap::from([on_exit(51)]);
        let left = sync_wanted(&at_exit);
        assert_eq!(left.master, None);
        assert_eq!(left.backup, Some((eth0(), 51)));
        // The next process finds it, adopts it, and its router's first wish (Backup, at
        // Startup) is exactly what runs: the hub changes nothing, the daemon never stops.
        let adopted = sync_adoptable(&running(&left)).unwrap();
        let first = BTreeMap::from([(51, (SyncRole::Backup, eth0()))]);
        assert_eq!(adopted, sync_wanted(&first));
        // Several routers leave one backup daemon accepting every sync ID, also adopted.
        let at_exit = BTreeMap::from([on_exit(51), on_exit(52)]);
        let left = sync_wanted(&at_exit);
        assert_eq!(left.backup, Some((eth0(), 0)));
        assert_eq!(sync_adoptable(&running(&left)), Some(left));
    }

    #[test]
    fn only_daemons_started_as_ours_are_adopted() {
        assert_eq!(sync_adoptable(&[]), Some(SyncWanted::default()));
        // A master daemon left by a killed Master is known, so the hub stops exactly it.
        let found = sync_adoptable(&[daemon(SyncRole::Master, "eth0", 51)]).unwrap();
        assert_eq!(found.master, Some(("eth0".to_owned(), 51)));
        assert_eq!(found.backup, None);
        // Another group, port or TTL is someone else's setup: unknown, stopped and restarted.
        let mut other = daemon(SyncRole::Backup, "eth0", 51);
        other.port = Some(8849);
        assert_eq!(sync_adoptable(&[other]), None);
        let mut other = daemon(SyncRole::Backup, "eth0", 51);
        other.group = Some(IpAddr::V4(Ipv4Addr::new(239, 1, 1, 1)));
        assert_eq!(sync_adoptable(&[other]), None);
        let mut other = daemon(SyncRole::Backup, "eth0", 51);
        other.ttl = Some(2);
        assert_eq!(sync_adoptable(&[other]), None);
    }

    #[test]
    fn sync_changes_stop_what_differs_and_start_what_is_wanted() {
        let w = |m: Option<u8>, b: Option<u8>| SyncWanted {
            master: m.map(|id| ("eth0".to_owned(), id)),
            backup: b.map(|id| ("eth0".to_owned(), id)),
        };
        let start = |role, id| (role, "eth0".to_owned(), id);
        let (m, b) = (SyncRole::Master, SyncRole::Backup);
        let cases = [
            (
                "as wanted: nothing",
                Some(w(Some(51), Some(0))),
                w(Some(51), Some(0)),
                vec![],
                vec![],
                true,
            ),
            (
                "unknown: both stopped, the wanted started",
                None,
                w(None, Some(51)),
                vec![m, b],
                vec![start(b, 51)],
                false,
            ),
            (
                "Backup became Master",
                Some(w(None, Some(51))),
                w(Some(51), None),
                vec![m, b],
                vec![start(m, 51)],
                false,
            ),
            (
                "a second router: backup to ID 0, master kept",
                Some(w(Some(51), Some(52))),
                w(Some(51), Some(0)),
                vec![b],
                vec![start(b, 0)],
                false,
            ),
            (
                "everything stops",
                Some(w(Some(51), Some(51))),
                w(None, None),
                vec![m, b],
                vec![],
                false,
            ),
        ];
        for (case, have, want, stop, started, kept) in cases {
            let got = sync_changes(have.as_ref(), &want);
            assert_eq!(got.stop, stop, "{case}");
            assert_eq!(got.start, started, "{case}");
            assert_eq!(got.backup_kept, kept, "{case}");
        }
    }
}
