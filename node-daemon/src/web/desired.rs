//! What a real server should look like, as a pure function of the API objects, this host's
//! identity, the operator's options and what was read from the kernel. No I/O.
//!
//! Two steps:
//! - [`served`]: from the `RealServer`s and `VirtualService`s, which VIPs this host answers for
//!   (the VirtualServices whose selector matches this host's RealServer), and what is wrong
//!   with the objects (no RealServer for this host, a bad VIP, a tunnel type this role cannot
//!   decapsulate yet);
//! - [`desired`]: from that and the observed host, the target state: the VIPs on lvstun's VIP
//!   device, the uplinks whose ARP behaviour matters, and lvstun's nft tables.
//!
//! Why each piece (the classic recipe did them by hand):
//! - `tunl0` up: the kernel's fallback ipip device receives every ipip packet that no other
//!   tunnel claims, and decapsulates it;
//! - the VIP as a /32 on a device lvstun owns (`lvstun0`, a dummy, by default): the inner packet
//!   is addressed to the VIP, so the VIP must be local; not on `tunl0` by default because CNIs
//!   such as Calico in IPIP mode delete foreign addresses from it (`--vip-device tunl0` keeps
//!   the recipe's layout);
//! - `rp_filter` on `tunl0` (see [`knob_target`]);
//! - `arp_ignore=1`/`arp_announce=2` on the uplinks and the VIP device, and the nft ARP guard:
//!   every real server holds the VIP, so none may answer or announce it, or the segment's
//!   router would send clients straight to a real server instead of the balancer;
//! - the MSS clamp (see [`MssMode`]).
//!
//! A VirtualService whose `status.excludedRealServers` names this host's RealServer (its node is
//! one of that VirtualService's balancer nodes, ADR 0009) is not served here: holding its VIP
//! with ARP suppressed would keep this node, as that VIP's Master, from answering ARP for it.
//! It is recorded in [`Served::left_out`] for the status, not as a [`Problem`] (which would take
//! the real server out of its other VirtualServices too).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use lvstun_crds::conditions::{CondStatus, ConditionType, Reason};
use lvstun_crds::v1alpha1::{RealServer, TunnelType, VirtualService};
use lvstun_rules::DEFAULT_NAMESPACE;

use crate::net::addr::Addr;
use crate::net::arp_guard::{GuardSpec, GuardState};
use crate::net::devconf::{DevConf, Knob};
use crate::net::link::{Link, TUNL0};
use crate::source::config::Objects;

/// Bytes an ipip tunnel adds to each packet (the outer IPv4 header).
pub const IPIP_OVERHEAD: u32 = 20;

/// IPv4 + TCP headers without options: MSS = MTU - 40.
const IP_TCP_HEADERS: u32 = 40;

/// Which RealServer this host is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// By name (`--real-server [NAMESPACE/]NAME`).
    Name {
        /// The namespace; `None` accepts any.
        namespace: Option<String>,
        /// `metadata.name`.
        name: String,
    },
    /// By `spec.address` (`--node-address IP`).
    Address(Ipv4Addr),
    /// Every RealServer whose `spec.nodeName` is this cluster node (`--node-name`, in a
    /// cluster). Unlike the other two, several may match: one node can be a real server in
    /// several namespaces, and then serves the VIPs of all of them.
    Node(String),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Name {
                namespace: Some(ns),
                name,
            } => write!(f, "RealServer {ns}/{name}"),
            Identity::Name { name, .. } => write!(f, "RealServer {name}"),
            Identity::Address(ip) => write!(f, "the RealServer with address {ip}"),
            Identity::Node(node) => write!(f, "RealServer with spec.nodeName {node}"),
        }
    }
}

/// Where the VIPs go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VipDevice {
    /// A dummy device lvstun creates and deletes (default `lvstun0`).
    Dummy(String),
    /// `tunl0` itself, as the classic recipe does.
    Tunl0,
}

impl VipDevice {
    /// The device's name.
    pub fn name(&self) -> &str {
        match self {
            VipDevice::Dummy(name) => name,
            VipDevice::Tunl0 => TUNL0,
        }
    }
}

/// How the MSS of connections to a VIP is kept small enough for the tunnel.
///
/// The balancer adds 20 bytes (ipip) to every packet a client sends to the VIP. A client that
/// sends full-size segments (MSS 1460 on a 1500-byte path) therefore makes 1520-byte packets
/// that do not fit the balancer's link: IPVS drops them and sends ICMP "fragmentation needed",
/// which firewalls often drop, so large uploads hang. A client's segment size is bounded by
/// the MSS the server advertises in its SYN-ACK; the SYN-ACK leaves the real server from the
/// VIP, so an nft rule on the real server clamps the MSS option of SYN-ACKs from the VIP to
/// `MTU - 40 - 20`. (A route `advmss` would have to sit on the routes back to every client,
/// i.e. the default route, and would change all of the host's connections, not only the VIP's.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MssMode {
    /// `min(uplink MTU) - 40 - tunnel overhead` (1440 for ipip on 1500-byte links).
    Auto,
    /// No clamp (the path is known to carry the extra bytes, e.g. jumbo frames on the balancer).
    Off,
    /// This value.
    Fixed(u16),
}

/// The operator's choices (command-line flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Where the VIPs go.
    pub vip_device: VipDevice,
    /// The uplinks by name; empty = the interfaces of the default routes and of the RealServer's
    /// own address.
    pub uplinks: Vec<String>,
    /// The MSS clamp.
    pub mss: MssMode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            vip_device: VipDevice::Dummy("lvstun0".into()),
            uplinks: Vec::new(),
            mss: MssMode::Auto,
        }
    }
}

/// Something in the objects that keeps this host from being fully ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No RealServer matches this host's identity.
    RealServerNotFound(String),
    /// Several RealServers match (an address given twice, a name in several namespaces).
    AmbiguousRealServer(Vec<String>),
    /// A VirtualService's VIP is not an IPv4 address.
    BadVip {
        /// `namespace/name` of the VirtualService.
        service: String,
        /// The value.
        vip: String,
    },
    /// A VirtualService uses a tunnel type the web role cannot decapsulate yet.
    UnsupportedTunnel {
        /// `namespace/name` of the VirtualService.
        service: String,
        /// The tunnel type.
        kind: TunnelType,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::RealServerNotFound(who) => write!(f, "no {who} in the configuration"),
            Problem::AmbiguousRealServer(names) => {
                write!(
                    f,
                    "several RealServers match this host: {}",
                    names.join(", ")
                )
            }
            Problem::BadVip { service, vip } => {
                write!(
                    f,
                    "VirtualService {service}: VIP {vip:?} is not an IPv4 address"
                )
            }
            Problem::UnsupportedTunnel { service, kind } => write!(
                f,
                "VirtualService {service}: tunnel type {kind:?} is not decapsulated by the web role yet (only ipip)"
            ),
        }
    }
}

/// What the objects say this host serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// `namespace/name` of this host's RealServers: exactly one for `--real-server` and
    /// `--node-address`, any number for [`Identity::Node`]. Sorted.
    pub real_servers: Vec<String>,
    /// Their `spec.address`es (the uplinks are found from them).
    pub addresses: BTreeSet<Ipv4Addr>,
    /// The ipip VIPs, each with the VirtualServices (`namespace/name`) that use it.
    pub vips: BTreeMap<Ipv4Addr, BTreeSet<String>>,
    /// VirtualServices that select this host's RealServer but leave it out because its node is
    /// one of their balancer nodes: (`namespace/name` of the VirtualService, the RealServer's
    /// name, its node). Their VIPs are not held here.
    pub left_out: Vec<(String, String, String)>,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

fn namespace(ns: Option<&String>) -> &str {
    ns.map_or(DEFAULT_NAMESPACE, String::as_str)
}

fn is_me(rs: &RealServer, identity: &Identity) -> bool {
    match identity {
        Identity::Name {
            namespace: ns,
            name,
        } => {
            rs.metadata.name.as_deref() == Some(name.as_str())
                && ns
                    .as_deref()
                    .is_none_or(|ns| ns == namespace(rs.metadata.namespace.as_ref()))
        }
        Identity::Address(ip) => rs.spec.address.parse::<Ipv4Addr>().ok() == Some(*ip),
        Identity::Node(node) => rs.spec.node_name.as_deref() == Some(node.as_str()),
    }
}

/// Whether the operator gave this VirtualService up to another that claims the same
/// VIP:port:protocol (`Conflict=True`). The balancer skips it as a whole
/// (`balancer::desired::resolve`), so the web role does too: holding its VIP would serve
/// nothing. `Unknown` is not skipped, as the balancer does not: the operator writes only True
/// or False, and withdrawing a VIP on a guess would drop traffic. A skipped VirtualService is
/// not a [`Problem`]: it says nothing about this host, and a `TunnelReady=False` would take
/// the real server out of every other VirtualService too.
fn given_up(vs: &VirtualService) -> bool {
    vs.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == ConditionType::Conflict.as_str() && c.status == CondStatus::True.as_str()
        })
    })
}

/// If the operator left `rs` out of `vs` because it runs on one of its balancer nodes
/// (`status.excludedRealServers`, reason `NodeIsBalancer`), the node it named.
fn left_out_node<'a>(vs: &'a VirtualService, rs: &RealServer) -> Option<&'a str> {
    let name = rs.metadata.name.as_deref()?;
    vs.status
        .iter()
        .flat_map(|s| s.excluded_real_servers.iter())
        .find(|e| e.name == name && e.reason == Reason::NodeIsBalancer.as_str())
        .and_then(|e| e.node.as_deref())
}

fn full_name(ns: Option<&String>, name: Option<&String>) -> String {
    format!("{}/{}", namespace(ns), name.map_or("", String::as_str))
}

/// Which VIPs this host serves, from the configuration objects.
pub fn served(objects: &Objects, identity: &Identity) -> Served {
    let mut out = Served::default();
    let mine: Vec<&RealServer> = objects
        .real_servers
        .iter()
        .filter(|rs| is_me(rs, identity))
        .collect();
    let chosen: Vec<&RealServer> = match (identity, mine.as_slice()) {
        // A cluster node no RealServer names: the web DaemonSet runs on every node with the
        // web label, whether or not a RealServer names it yet (ADR 0007), so this is normal,
        // not a problem: nothing to hold, and the daemon idles.
        (Identity::Node(_), []) => return out,
        (_, []) => {
            out.problems
                .push(Problem::RealServerNotFound(identity.to_string()));
            return out;
        }
        (Identity::Node(_), many) => many.to_vec(),
        (_, [one]) => vec![*one],
        (_, many) => {
            out.problems.push(Problem::AmbiguousRealServer(
                many.iter()
                    .map(|rs| full_name(rs.metadata.namespace.as_ref(), rs.metadata.name.as_ref()))
                    .collect(),
            ));
            return out;
        }
    };
    for rs in chosen {
        serve_one(objects, rs, &mut out);
    }
    out.real_servers.sort();
    out
}

/// Adds what one of this host's RealServers is selected for.
fn serve_one(objects: &Objects, rs: &RealServer, out: &mut Served) {
    let rs_ns = namespace(rs.metadata.namespace.as_ref());
    out.real_servers.push(full_name(
        rs.metadata.namespace.as_ref(),
        rs.metadata.name.as_ref(),
    ));
    out.addresses
        .extend(rs.spec.address.parse::<Ipv4Addr>().ok());
    let labels = rs.metadata.labels.clone().unwrap_or_default();
    for vs in &objects.virtual_services {
        if namespace(vs.metadata.namespace.as_ref()) != rs_ns
            || !lvstun_rules::selects(&vs.spec.real_server_selector, &labels)
            || vs.metadata.deletion_timestamp.is_some()
            || given_up(vs)
        {
            continue;
        }
        let service = full_name(vs.metadata.namespace.as_ref(), vs.metadata.name.as_ref());
        if let Some(node) = left_out_node(vs, rs) {
            out.left_out.push((
                service,
                rs.metadata.name.clone().unwrap_or_default(),
                node.to_owned(),
            ));
            continue;
        }
        let Ok(vip) = vs.spec.vip.parse::<Ipv4Addr>() else {
            let problem = Problem::BadVip {
                service,
                vip: vs.spec.vip.clone(),
            };
            if !out.problems.contains(&problem) {
                out.problems.push(problem);
            }
            continue;
        };
        if vs.spec.tunnel.kind != TunnelType::Ipip {
            let problem = Problem::UnsupportedTunnel {
                service,
                kind: vs.spec.tunnel.kind,
            };
            if !out.problems.contains(&problem) {
                out.problems.push(problem);
            }
            continue;
        }
        out.vips.entry(vip).or_default().insert(service);
    }
}

/// The host as read from the kernel (the planner's and the status's input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Every device.
    pub links: Vec<Link>,
    /// Every IPv4 address.
    pub addrs: Vec<Addr>,
    /// Interfaces of the IPv4 default routes.
    pub default_route_interfaces: Vec<u32>,
    /// `net.ipv4.conf.all`.
    pub all: DevConf,
    /// lvstun's nft tables, or why they could not be read (`nft` missing, ...).
    pub nft: Result<GuardState, String>,
}

impl Observed {
    /// The device with this name.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The device with this index.
    pub fn link_by_index(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    /// The addresses of the named device.
    pub fn addrs_of(&self, name: &str) -> BTreeSet<Ipv4Addr> {
        let Some(index) = self.link(name).map(|l| l.index) else {
            return BTreeSet::new();
        };
        self.addrs
            .iter()
            .filter(|a| a.index == index)
            .map(|a| a.address)
            .collect()
    }

    /// The value the kernel applies for a knob on a device: the maximum of `all` and the
    /// device's own value.
    pub fn effective(&self, name: &str, knob: Knob) -> Option<u32> {
        let own = self.link(name)?.devconf?.get(knob);
        Some(own.max(self.all.get(knob)))
    }
}

/// The target state of this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The VIPs to hold (empty: lvstun should leave no trace).
    pub vips: BTreeSet<Ipv4Addr>,
    /// Where they go.
    pub vip_device: VipDevice,
    /// The uplinks whose ARP behaviour is set (names; existing devices only).
    pub uplinks: Vec<String>,
    /// lvstun's nft tables.
    pub guard: GuardSpec,
    /// The MSS the VIPs' SYN-ACKs are clamped to, if any.
    pub mss: Option<u16>,
}

impl Desired {
    /// Whether the host should hold anything at all.
    pub fn active(&self) -> bool {
        !self.vips.is_empty()
    }

    /// The knobs lvstun wants set, per device: `rp_filter` on `tunl0`; `arp_ignore` and
    /// `arp_announce` on the uplinks and the VIP device.
    pub fn knob_targets(&self) -> BTreeMap<String, BTreeSet<Knob>> {
        let mut out: BTreeMap<String, BTreeSet<Knob>> = BTreeMap::new();
        if !self.active() {
            return out;
        }
        out.entry(TUNL0.to_owned())
            .or_default()
            .insert(Knob::RpFilter);
        for dev in self
            .uplinks
            .iter()
            .map(String::as_str)
            .chain([self.vip_device.name()])
        {
            let knobs = out.entry(dev.to_owned()).or_default();
            knobs.insert(Knob::ArpIgnore);
            knobs.insert(Knob::ArpAnnounce);
        }
        out
    }
}

/// The uplinks: the named ones, or the devices of the default routes and of the RealServer's
/// address. Never `lo`, `tunl0` or the VIP device; only devices that exist.
pub fn uplinks(options: &Options, served: &Served, observed: &Observed) -> Vec<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    if options.uplinks.is_empty() {
        for index in &observed.default_route_interfaces {
            if let Some(link) = observed.link_by_index(*index) {
                names.insert(link.name.clone());
            }
        }
        for ip in &served.addresses {
            for addr in observed.addrs.iter().filter(|a| a.address == *ip) {
                if let Some(link) = observed.link_by_index(addr.index) {
                    names.insert(link.name.clone());
                }
            }
        }
    } else {
        names.extend(options.uplinks.iter().cloned());
    }
    names
        .into_iter()
        .filter(|name| {
            observed.link(name).is_some_and(|l| {
                !l.loopback && l.name != TUNL0 && l.name != options.vip_device.name()
            })
        })
        .collect()
}

/// The target state.
pub fn desired(served: &Served, options: &Options, observed: &Observed) -> Desired {
    let vips: BTreeSet<Ipv4Addr> = served.vips.keys().copied().collect();
    let uplinks = uplinks(options, served, observed);
    let mss = match options.mss {
        MssMode::Off => None,
        MssMode::Fixed(mss) => Some(mss),
        MssMode::Auto => uplinks
            .iter()
            .filter_map(|name| observed.link(name).map(|l| l.mtu))
            .min()
            .and_then(|mtu| mtu.checked_sub(IP_TCP_HEADERS + IPIP_OVERHEAD))
            .and_then(|mss| u16::try_from(mss).ok()),
    };
    Desired {
        guard: GuardSpec {
            vips: vips.iter().map(|vip| (*vip, mss)).collect(),
        },
        vips,
        vip_device: options.vip_device.clone(),
        uplinks,
        mss,
    }
}

/// The value lvstun wants for `knob`, given the value before lvstun (`base`), `all`, and whether
/// the device has an IPv4 address (only matters for `rp_filter`): as little change as achieves
/// the goal, or `base` itself when nothing is needed.
///
/// The kernel applies `max(all, interface)` for all three knobs, so:
/// - `rp_filter` on `tunl0`: decapsulated packets arrive on `tunl0` from clients whose route
///   back leaves by an uplink. If `tunl0` has an address (the VIPs, with `--vip-device tunl0`,
///   or a CNI's tunnel address), loose filtering (2) is enough: if the effective value is
///   strict (1), the device gets 2, which outranks `all=1`. If `tunl0` has no address (VIPs on
///   the dummy device), the kernel's reverse-path check ends in its "last resort" branch,
///   which drops the packet for any filtering at all (fib_validate_source: `no_addr` ->
///   `last_resort` -> `if (rpf) goto e_rpf`): the device needs 0, and `all` must be 0 too,
///   which lvstun cannot set over netlink: the status then says so ([`super::status`]);
/// - `arp_ignore`: at least 1 (answer only for addresses on the receiving interface);
/// - `arp_announce`: 2 (never use a VIP as the sender address of an ARP request).
pub fn knob_target(knob: Knob, base: u32, all: u32, has_addr: bool) -> u32 {
    let effective = base.max(all);
    match knob {
        Knob::RpFilter if !has_addr => 0,
        Knob::RpFilter if effective == 1 => 2,
        Knob::ArpIgnore if effective < 1 => 1,
        Knob::ArpAnnounce if effective < 2 => 2,
        _ => base,
    }
}

/// Whether `tunl0` has (or, with `--vip-device tunl0`, will have) an IPv4 address: this decides
/// how loose its `rp_filter` must be (see [`knob_target`]).
pub fn tunl0_has_addr(desired: &Desired, observed: &Observed) -> bool {
    (desired.active() && desired.vip_device == VipDevice::Tunl0)
        || !observed.addrs_of(TUNL0).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::config::parse;

    pub(crate) const CONFIG: &str = r#"
apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata: {name: www}
spec:
  vip: 192.0.2.100
  ports: [{port: 80}]
  realServerSelector: {matchLabels: {app: www}}
  balancers: {nodeSelector: {}, virtualRouterID: 51}
---
apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata: {name: api, namespace: other}
spec:
  vip: 192.0.2.101
  ports: [{port: 443}]
  realServerSelector: {matchLabels: {app: www}}
  balancers: {nodeSelector: {}, virtualRouterID: 52}
---
apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata: {name: dns}
spec:
  vip: 192.0.2.102
  ports: [{port: 53, protocol: UDP}]
  tunnel: {type: gue, port: 6080}
  realServerSelector: {matchExpressions: [{key: app, operator: In, values: [www, dns]}]}
  balancers: {nodeSelector: {}, virtualRouterID: 53}
---
apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata: {name: web1, labels: {app: www}}
spec: {address: 198.51.100.10}
---
apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata: {name: web2, labels: {app: other}}
spec: {address: 198.51.100.130}
"#;

    fn by_name(name: &str) -> Identity {
        Identity::Name {
            namespace: None,
            name: name.into(),
        }
    }

    #[test]
    fn served_vips_follow_selectors_and_namespaces() {
        let objects = parse(CONFIG).unwrap();
        let web1 = served(&objects, &by_name("web1"));
        assert_eq!(web1.real_servers, vec!["default/web1".to_string()]);
        // www selects web1; api is in another namespace; dns selects it but uses GUE.
        assert_eq!(
            web1.vips.keys().copied().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(192, 0, 2, 100)]
        );
        assert_eq!(
            web1.problems,
            vec![Problem::UnsupportedTunnel {
                service: "default/dns".into(),
                kind: TunnelType::Gue
            }]
        );
        let by_addr = served(
            &objects,
            &Identity::Address(Ipv4Addr::new(198, 51, 100, 10)),
        );
        assert_eq!(by_addr.vips, web1.vips);
        let web2 = served(&objects, &by_name("web2"));
        assert!(web2.vips.is_empty() && web2.problems.is_empty());
        let nobody = served(&objects, &by_name("web9"));
        assert!(matches!(nobody.problems[0], Problem::RealServerNotFound(_)));
        assert!(nobody.vips.is_empty());
    }

    #[test]
    fn knob_targets_are_as_loose_as_needed_and_no_looser() {
        use Knob::*;
        // rp_filter on tunl0 with an address: strict anywhere -> loose; off or loose stay.
        assert_eq!(knob_target(RpFilter, 0, 0, true), 0);
        assert_eq!(knob_target(RpFilter, 0, 1, true), 2);
        assert_eq!(knob_target(RpFilter, 1, 0, true), 2);
        assert_eq!(knob_target(RpFilter, 2, 1, true), 2);
        assert_eq!(knob_target(RpFilter, 0, 2, true), 0);
        // Without an address any filtering drops: 0 (and `all` must be 0: the status says so).
        assert_eq!(knob_target(RpFilter, 2, 0, false), 0);
        assert_eq!(knob_target(RpFilter, 1, 1, false), 0);
        // arp_ignore: at least 1; stricter values kept.
        assert_eq!(knob_target(ArpIgnore, 0, 0, false), 1);
        assert_eq!(knob_target(ArpIgnore, 0, 1, false), 0);
        assert_eq!(knob_target(ArpIgnore, 2, 0, false), 2);
        assert_eq!(knob_target(ArpIgnore, 8, 0, false), 8);
        // arp_announce: 2.
        assert_eq!(knob_target(ArpAnnounce, 1, 0, false), 2);
        assert_eq!(knob_target(ArpAnnounce, 0, 2, false), 0);
    }
}
