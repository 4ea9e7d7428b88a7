//! From the API objects to the IPVS table this balancer wants. Pure: no I/O, no clock.
//!
//! Two steps, so that health verdicts (which change every few seconds) never re-run the
//! object-level work:
//! - [`resolve`]: which VirtualServices this node serves, each port as an IPVS service, each
//!   selected RealServer as a destination with its spec weight and its *gate* (drain, not
//!   tunnel-ready), the health checks to run, and what is wrong with the objects;
//! - [`Resolved::table`]: the table for a given set of health verdicts.
//!
//! Rules, and why:
//! - A VirtualService concerns this node when its `spec.balancers.nodeSelector` matches the
//!   node's labels; standalone, every one in the file does.
//! - A VirtualService with `Conflict=True` in its status is skipped as a whole: the operator
//!   decided another one owns that VIP:port:protocol. The same seniority rule (older creation
//!   time, then namespace/name) is also applied here among the rest, so that two objects never
//!   fight over one kernel service in the moments before the operator has spoken, and so that
//!   standalone files (no operator) get the same answer.
//! - Destinations use tunnel forwarding of the VirtualService's tunnel type, and their port is
//!   the service port: tunnel mode cannot rewrite ports, and the kernel (like `ipvsadm`)
//!   stores the service port anyway. `RealServer.spec.port` only moves the health check.
//! - A real server that is draining, reported not `TunnelReady` (condition `False`), or
//!   unhealthy keeps its destination with weight 0: existing connections finish, new ones go
//!   elsewhere. Only leaving the selection (or the RealServer being deleted) removes it. A
//!   RealServer without a `TunnelReady=False` (a host outside the cluster, with no web daemon
//!   reporting, carries none or the operator's `Unknown`/`OutsideCluster`) is gated by health
//!   checks alone.
//! - A RealServer the operator lists in the VirtualService's `status.excludedRealServers` (its
//!   node is one of this VirtualService's balancer nodes, ADR 0009) is left out of that
//!   VirtualService entirely, with a [`Problem`]: no destination, no health check. Other
//!   VirtualServices that select it still program it.
//! - Health checks are keyed by everything that defines them (address, port, path, Host,
//!   expectations, timing, thresholds). Two VirtualServices that select the same real server
//!   with the same check share one check and one verdict instead of probing the server twice;
//!   a key survives any change that does not change the check, so its rise/fall state does too.
//! - Invalid input is refused, never defaulted: a VirtualService or RealServer that cannot be
//!   programmed is left out with a [`Problem`] a person can act on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use lvstun_crds::conditions::{CondStatus, ConditionType, Reason};
use lvstun_crds::v1alpha1::{self as api, RealServer, VirtualService};
use lvstun_rules::Outcome;

use super::plan::OwnedVips;
use crate::health::probe::Probe;
use crate::health::state::Thresholds;
use crate::source::{Peers, Scope, Snapshot};
use lvstun_ipvs::model::{
    AddressFamily, DestConfig, DestKey, Forward, Persistence, Protocol, Scheduler, ServiceConfig,
    ServiceFlags, ServiceKey, Table, Thresholds as ConnThresholds, Tunnel, Weight,
};

/// The GUE port when `spec.tunnel.port` is not given (the CRD's documented default).
pub const GUE_DEFAULT_PORT: u16 = 6080;

/// Namespace and name of an object: the key both sides use ([`lvstun_rules::ObjectKey`]).
pub use lvstun_rules::ObjectKey as ObjectRef;

/// Why a destination gets weight 0 whatever its health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Nothing holds it back: its health decides.
    Open,
    /// `spec.drain` is set.
    Drain,
    /// The web daemon on that host reports `TunnelReady=False`; the condition's message.
    TunnelNotReady(Arc<str>),
}

/// A RealServer selected by some VirtualService of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRs {
    /// Its name.
    pub me: Arc<ObjectRef>,
    /// `spec.address`: the tunnel's outer destination.
    pub address: Ipv4Addr,
    /// `spec.weight`.
    pub weight: Weight,
    /// What holds it at weight 0 regardless of health.
    pub gate: Gate,
}

/// One real server as a destination of one service: an index into
/// [`Resolved::real_servers`] and one into [`Resolved::check_keys`]. Eight bytes, because a node
/// may program a hundred thousand of them and every pass rebuilds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestRef {
    /// Index of the real server.
    pub rs: u32,
    /// Index of its health check.
    pub check: u32,
}

/// One port of one VirtualService as an IPVS service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedService {
    /// The VirtualService.
    pub virtual_service: ObjectRef,
    /// The port as the status names it, e.g. `80/TCP`.
    pub port_name: String,
    /// VIP, protocol, port.
    pub key: ServiceKey,
    /// Scheduler and persistence.
    pub config: ServiceConfig,
    /// Tunnel forwarding of the VirtualService's type.
    pub forward: Forward,
    /// The selected real servers, in RealServer name order (shared by the VirtualService's
    /// ports).
    pub dests: Arc<[DestRef]>,
}

impl ResolvedService {
    /// The service port, which is also every destination's port (tunnel mode).
    pub fn port(&self) -> u16 {
        match self.key {
            ServiceKey::Addr { port, .. } => port,
            ServiceKey::Fwmark { .. } => 0,
        }
    }
}

/// One health check to run: a [`crate::health::checker::Target`] without its starting verdict,
/// which depends on the kernel (see [`Resolved::initial_verdicts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// Stable identity: every parameter of the check, readable in logs.
    pub key: Arc<str>,
    /// What to check.
    pub probe: Probe,
    /// Time between the starts of two checks.
    pub interval: Duration,
    /// Limit for one check.
    pub timeout: Duration,
    /// Rise/fall.
    pub thresholds: Thresholds,
}

/// Something in the objects that keeps part of them from being programmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The object, e.g. `VirtualService default/www`.
    pub object: String,
    /// What is wrong and what happens because of it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// What this node serves, before health verdicts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Every service, in (VirtualService, port) order.
    pub services: Vec<ResolvedService>,
    /// The real servers the services' destinations refer to.
    pub real_servers: Vec<ResolvedRs>,
    /// The health check keys the destinations refer to.
    pub check_keys: Vec<Arc<str>>,
    /// The health checks, by key.
    pub checks: BTreeMap<Arc<str>, CheckSpec>,
    /// What was left out, and why.
    pub problems: Vec<Problem>,
    /// The checks of each selected RealServer (what its `status.checks[]` entry folds).
    pub real_server_checks: BTreeMap<Arc<ObjectRef>, BTreeSet<Arc<str>>>,
}

impl Resolved {
    /// The real server of a destination.
    pub fn real_server(&self, d: DestRef) -> &ResolvedRs {
        &self.real_servers[d.rs as usize]
    }

    /// The health check key of a destination.
    #[cfg(test)]
    pub fn check_key(&self, d: DestRef) -> &Arc<str> {
        &self.check_keys[d.check as usize]
    }

    /// A destination's identity in the kernel: the real server's address, the service port.
    pub fn dest_key(&self, service: &ResolvedService, d: DestRef) -> DestKey {
        DestKey {
            address: IpAddr::V4(self.real_server(d).address),
            port: service.port(),
        }
    }

    /// The IPVS table for these verdicts: `healthy(check key)` says whether a check passes
    /// (asked once per check, not per destination).
    pub fn table(&self, healthy: impl Fn(&str) -> bool) -> Table {
        let verdicts: Vec<bool> = self.check_keys.iter().map(|k| healthy(k)).collect();
        let mut table = Table::new();
        for service in &self.services {
            table.upsert_service(service.key, service.config);
            for d in service.dests.iter() {
                let rs = self.real_server(*d);
                let weight = if rs.gate == Gate::Open && verdicts[d.check as usize] {
                    rs.weight
                } else {
                    Weight::default()
                };
                table.upsert_dest(
                    &service.key,
                    self.dest_key(service, *d),
                    DestConfig {
                        weight,
                        forward: service.forward,
                        thresholds: ConnThresholds::default(),
                    },
                );
            }
        }
        table
    }

    /// The VIPs of the services this node programs.
    pub fn vips(&self) -> OwnedVips {
        self.services.iter().filter_map(|s| s.key.vip()).collect()
    }

    /// The starting verdict of each check: healthy when the kernel already forwards to one of
    /// its destinations (weight > 0). After a restart, nothing that is serving is taken out of
    /// rotation while its first checks run, and nothing already right is reprogrammed; a real
    /// server the kernel does not forward to yet starts unhealthy and must pass its checks.
    pub fn initial_verdicts(&self, actual: &Table) -> HashMap<Arc<str>, bool> {
        let mut healthy = vec![false; self.check_keys.len()];
        for service in &self.services {
            let Some(entry) = actual.service(&service.key) else {
                continue;
            };
            for d in service.dests.iter() {
                if !healthy[d.check as usize]
                    && entry
                        .dests
                        .get(&self.dest_key(service, *d))
                        .is_some_and(|c| c.weight.get() > 0)
                {
                    healthy[d.check as usize] = true;
                }
            }
        }
        self.check_keys.iter().cloned().zip(healthy).collect()
    }
}

fn problem(kind: &str, object: &ObjectRef, message: impl Into<String>) -> Problem {
    Problem {
        object: format!("{kind} {object}"),
        message: message.into(),
    }
}

/// The condition of `type_` in a status's conditions.
fn condition(conditions: Option<&Vec<Condition>>, type_: ConditionType) -> Option<&Condition> {
    conditions?.iter().find(|c| c.type_ == type_.as_str())
}

/// The parts of a VirtualService that do not depend on its real servers, validated.
struct ParsedVs<'a> {
    vs: &'a VirtualService,
    me: ObjectRef,
    ports: Vec<(ServiceKey, String)>,
    config: ServiceConfig,
    forward: Forward,
    check: CheckTemplate,
}

/// The health check of a VirtualService, before a real server fills in address and port.
#[derive(PartialEq, Eq, Hash)]
struct CheckTemplate {
    kind: CheckKind,
    /// `http.port` / `tcp.port`.
    port: Option<u16>,
    interval: Duration,
    timeout: Duration,
    thresholds: Thresholds,
}

#[derive(PartialEq, Eq, Hash)]
enum CheckKind {
    Http {
        path: String,
        host: Option<String>,
        expect_status: u16,
        expect_body: String,
    },
    Tcp,
}

fn port_u16(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

fn positive_u32(value: i32, max: i32) -> Option<u32> {
    (1..=max)
        .contains(&value)
        .then(|| u32::try_from(value).ok())
        .flatten()
}

impl CheckTemplate {
    /// Where the check goes: its own port, else the real server's, else the service's.
    fn port_for(&self, rs_port: Option<u16>, first_service_port: u16) -> u16 {
        self.port.or(rs_port).unwrap_or(first_service_port)
    }
}

/// Check keys already made in this resolve: many VirtualServices share one check template
/// (the default one, typically) over the same real servers, and formatting a key per
/// (VirtualService, real server) pair would cost a string per destination.
#[derive(Default)]
struct CheckMemo<'a> {
    templates: HashMap<&'a CheckTemplate, usize>,
    /// [template][index of the real server] -> (check port, index in `Resolved::check_keys`):
    /// indexed, not hashed, since it is consulted once per destination.
    keys: Vec<Vec<Option<(u16, u32)>>>,
}

fn parse_check(hc: &api::HealthCheck) -> Result<CheckTemplate, String> {
    let interval = positive_u32(hc.interval_seconds, 3600)
        .ok_or("spec.healthCheck.intervalSeconds must be 1..3600")?;
    let timeout = positive_u32(hc.timeout_seconds, 3600)
        .ok_or("spec.healthCheck.timeoutSeconds must be 1..3600")?;
    if timeout > interval {
        return Err(
            "spec.healthCheck.timeoutSeconds must not be larger than intervalSeconds".into(),
        );
    }
    let fall = positive_u32(hc.failure_threshold, 100)
        .ok_or("spec.healthCheck.failureThreshold must be 1..100")?;
    let rise = positive_u32(hc.success_threshold, 100)
        .ok_or("spec.healthCheck.successThreshold must be 1..100")?;
    let bad_port = |field: &str| format!("spec.healthCheck.{field}.port must be 1..65535");
    let (kind, port) = match (&hc.http, &hc.tcp) {
        (Some(http), None) => {
            if !http.path.starts_with('/') {
                return Err("spec.healthCheck.http.path must start with '/'".into());
            }
            let expect_status = u16::try_from(http.expect_status)
                .ok()
                .filter(|s| (100..=599).contains(s))
                .ok_or("spec.healthCheck.http.expectStatus must be 100..599")?;
            let port = http
                .port
                .map(|p| port_u16(p).ok_or_else(|| bad_port("http")))
                .transpose()?;
            (
                CheckKind::Http {
                    path: http.path.clone(),
                    host: http.host.clone(),
                    expect_status,
                    expect_body: http.expect_body.clone(),
                },
                port,
            )
        }
        (None, Some(tcp)) => {
            let port = tcp
                .port
                .map(|p| port_u16(p).ok_or_else(|| bad_port("tcp")))
                .transpose()?;
            (CheckKind::Tcp, port)
        }
        _ => return Err("spec.healthCheck needs exactly one of http or tcp".into()),
    };
    Ok(CheckTemplate {
        kind,
        port,
        interval: Duration::from_secs(u64::from(interval)),
        timeout: Duration::from_secs(u64::from(timeout)),
        thresholds: Thresholds { fall, rise },
    })
}

fn parse_vs(vs: &VirtualService) -> Result<ParsedVs<'_>, String> {
    let me = ObjectRef::of(&vs.metadata);
    let vip: Ipv4Addr = vs.spec.vip.parse().map_err(|_| {
        format!(
            "spec.vip {:?} is not an IPv4 address such as 192.0.2.100",
            vs.spec.vip
        )
    })?;
    if vs.spec.ports.is_empty() {
        return Err("spec.ports lists no port".into());
    }
    let mut ports = Vec::with_capacity(vs.spec.ports.len());
    for p in &vs.spec.ports {
        let port = port_u16(p.port)
            .ok_or_else(|| format!("spec.ports: port {} is not 1..65535", p.port))?;
        let (protocol, name) = match p.protocol {
            api::Protocol::Tcp => (Protocol::Tcp, "TCP"),
            api::Protocol::Udp => (Protocol::Udp, "UDP"),
        };
        let key = ServiceKey::Addr {
            address: IpAddr::V4(vip),
            protocol,
            port,
        };
        if ports.iter().any(|(k, _)| *k == key) {
            return Err(format!("spec.ports lists {port}/{name} twice"));
        }
        ports.push((key, format!("{port}/{name}")));
    }
    let scheduler = Scheduler::new(vs.spec.scheduler.kernel_name()).map_err(|e| e.to_string())?;
    let flags = scheduler_flags(scheduler, vs.spec.hash_client_port)?;
    let persistence = vs
        .spec
        .persistence
        .as_ref()
        .map(|p| {
            let timeout = positive_u32(p.timeout_seconds, 2_678_400)
                .ok_or("spec.persistence.timeoutSeconds must be 1..2678400")?;
            Persistence::new(AddressFamily::Inet, timeout, 32).map_err(|e| e.to_string())
        })
        .transpose()?;
    let tunnel = match vs.spec.tunnel.kind {
        api::TunnelType::Ipip => {
            if vs.spec.tunnel.port.is_some() {
                return Err("spec.tunnel.port applies only to type gue".into());
            }
            Tunnel::Ipip
        }
        api::TunnelType::Gre => {
            if vs.spec.tunnel.port.is_some() {
                return Err("spec.tunnel.port applies only to type gue".into());
            }
            Tunnel::Gre { checksum: false }
        }
        api::TunnelType::Gue => {
            let port = match vs.spec.tunnel.port {
                None => Some(GUE_DEFAULT_PORT),
                Some(p) => port_u16(p),
            }
            .and_then(NonZeroU16::new)
            .ok_or("spec.tunnel.port must be 1..65535")?;
            Tunnel::Gue {
                port,
                checksum: Default::default(),
            }
        }
    };
    Ok(ParsedVs {
        vs,
        me,
        ports,
        config: ServiceConfig {
            persistence,
            flags,
            ..ServiceConfig::new(scheduler)
        },
        forward: Forward::Tunnel(tunnel),
        check: parse_check(&vs.spec.health_check)?,
    })
}

/// The scheduler flags of a service.
///
/// The hashing schedulers always get their fallback flag (`sh-fallback`, `mh-fallback`).
/// lvstun takes a failed real server out of rotation by setting its weight to 0, and the
/// kernel keeps a quiesced destination's slots in the hash table (`last_weight`, so that the
/// other clients' slots do not move); without the flag the clients hashed to those slots get
/// no destination at all and are refused. With it they go to the next available server in the
/// table, which every balancer computes alike, so the choice still survives a VIP move.
/// `hash_client_port` adds the client's port to the hash (`sh-port`, `mh-port`); it means
/// nothing to the other schedulers, which the CRD refuses and a standalone file is told.
fn scheduler_flags(scheduler: Scheduler, hash_client_port: bool) -> Result<ServiceFlags, String> {
    let hashing = scheduler.hashes_client();
    if hash_client_port && !hashing {
        return Err(format!(
            "spec.hashClientPort applies only to the hashing schedulers: set spec.scheduler to mh or sh, or remove spec.hashClientPort (scheduler is {})",
            scheduler.name()
        ));
    }
    let mut flags = ServiceFlags::empty();
    if hashing {
        flags = flags.union(ServiceFlags::SCHED1);
    }
    if hash_client_port {
        flags = flags.union(ServiceFlags::SCHED2);
    }
    Ok(flags)
}

/// A RealServer, validated once per snapshot.
struct ParsedRs<'a> {
    me: Arc<ObjectRef>,
    labels: &'a BTreeMap<String, String>,
    valid: Result<ValidRs, String>,
}

struct ValidRs {
    address: Ipv4Addr,
    weight: Weight,
    /// `spec.port`, where the health check goes by default.
    port: Option<u16>,
    gate: Gate,
}

/// Labels of an object without any.
const NO_LABELS: &BTreeMap<String, String> = &BTreeMap::new();

fn parse_rs(rs: &RealServer) -> ParsedRs<'_> {
    let valid = (|| {
        let address = rs.spec.address.parse::<Ipv4Addr>().map_err(|_| {
            format!(
                "not programmed: spec.address {:?} is not an IPv4 address",
                rs.spec.address
            )
        })?;
        let weight = u32::try_from(rs.spec.weight)
            .ok()
            .filter(|w| *w <= 65_535)
            .and_then(|w| Weight::new(w).ok())
            .ok_or("not programmed: spec.weight must be 0..65535")?;
        let port = rs
            .spec
            .port
            .map(|p| port_u16(p).ok_or("not programmed: spec.port must be 1..65535"))
            .transpose()?;
        let gate = if rs.spec.drain {
            Gate::Drain
        } else {
            match condition(
                rs.status.as_ref().map(|s| &s.conditions),
                ConditionType::TunnelReady,
            ) {
                Some(c) if c.status == CondStatus::False.as_str() => {
                    Gate::TunnelNotReady(c.message.as_str().into())
                }
                _ => Gate::Open,
            }
        };
        Ok(ValidRs {
            address,
            weight,
            port,
            gate,
        })
    })();
    ParsedRs {
        me: Arc::new(ObjectRef::of(&rs.metadata)),
        labels: rs.metadata.labels.as_ref().unwrap_or(NO_LABELS),
        valid,
    }
}

fn concerns_this_node(vs: &VirtualService, scope: &Scope) -> bool {
    match scope {
        Scope::All => true,
        Scope::NodeLabels(labels) => {
            lvstun_rules::selects(&vs.spec.balancers.node_selector, labels)
        }
    }
}

/// The check of one real server: `port` is the check's port (see [`CheckTemplate::port_for`]).
fn check_for(t: &CheckTemplate, addr: Ipv4Addr, port: u16) -> CheckSpec {
    let target = SocketAddr::new(IpAddr::V4(addr), port);
    let timing = format!(
        "every {}s timeout {}s fall {} rise {}",
        t.interval.as_secs(),
        t.timeout.as_secs(),
        t.thresholds.fall,
        t.thresholds.rise
    );
    let (key, probe) = match &t.kind {
        CheckKind::Http {
            path,
            host,
            expect_status,
            expect_body,
        } => (
            format!(
                "http://{target}{path} host={} expect {expect_status} {expect_body:?} {timing}",
                host.as_deref().unwrap_or("-")
            ),
            Probe::Http {
                addr: target,
                path: path.clone(),
                host: host.clone(),
                expect_status: *expect_status,
                expect_body: expect_body.clone(),
            },
        ),
        CheckKind::Tcp => (
            format!("tcp://{target} {timing}"),
            Probe::Tcp { addr: target },
        ),
    };
    CheckSpec {
        key: key.into(),
        probe,
        interval: t.interval,
        timeout: t.timeout,
        thresholds: t.thresholds,
    }
}

/// Which known host already answers on `vip`: a Node whose InternalIP it is (in a cluster),
/// or a listed VRRP peer (standalone). The operator refuses such a VIP too (with every Node
/// address and the `kubernetes` ClusterIP); this check is the balancer's own, so it never
/// claims a node's address in the moment before the operator's `Conflict` reaches it, and a
/// standalone balancer refuses it without any operator. Pure.
fn vip_host(vip: Ipv4Addr, peers: &Peers) -> Option<String> {
    match peers {
        Peers::Unknown => None,
        Peers::Nodes(nodes) => nodes
            .iter()
            .find(|n| n.addresses.contains(&vip))
            .map(|n| format!("Node {} (its InternalIP)", n.name)),
        Peers::Listed(list) => list
            .contains(&vip)
            .then(|| "a VRRP peer listed in --vrrp-peers".to_string()),
    }
}

/// Which services, destinations and checks this node wants, from a snapshot of the objects.
pub fn resolve(snapshot: &Snapshot) -> Resolved {
    let mut out = Resolved::default();

    // 1. The VirtualServices of this node, valid, not given up by the operator, oldest first,
    //    each owning its VIP:port:protocol pairs by the operator's rule (`lvstun_rules::resolve`).
    let resolved = lvstun_rules::resolve(
        snapshot
            .virtual_services
            .iter()
            .filter(|vs| concerns_this_node(vs, &snapshot.scope)),
        |vs| {
            let status = vs.status.as_ref().map(|s| &s.conditions);
            if let Some(c) = condition(status, ConditionType::Conflict)
                .filter(|c| c.status == CondStatus::True.as_str())
            {
                return Err(format!(
                    "not programmed: the operator reports a conflict: {}",
                    c.message
                ));
            }
            let p = parse_vs(vs).map_err(|e| format!("not programmed: {e}"))?;
            let host = vs
                .spec
                .vip
                .parse()
                .ok()
                .and_then(|vip| vip_host(vip, &snapshot.peers));
            if let Some(host) = host {
                return Err(format!(
                    "not programmed: spec.vip {} is the address of {host}: holding it would take that address from its host; choose a spec.vip no node uses",
                    vs.spec.vip
                ));
            }
            let keys = p.ports.iter().map(|(k, _)| *k).collect();
            Ok((p, keys))
        },
    );
    let mut parsed: Vec<ParsedVs<'_>> = Vec::new();
    for r in resolved {
        match r.outcome {
            Outcome::Owner(p) => parsed.push(p),
            Outcome::Conflict { key, owner } => out.problems.push(problem(
                "VirtualService",
                &r.key,
                format!("not programmed: {key} already belongs to VirtualService {owner}"),
            )),
            Outcome::Refused(why) => out.problems.push(problem("VirtualService", &r.key, why)),
        }
    }
    parsed.sort_by(|a, b| a.me.cmp(&b.me));

    // 2. The real servers, each validated once, in name order.
    let real_servers: Vec<ParsedRs<'_>> = {
        let mut list: Vec<&RealServer> = snapshot
            .real_servers
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        list.sort_by_key(|rs| ObjectRef::of(&rs.metadata));
        list.into_iter().map(parse_rs).collect()
    };
    let mut reported: BTreeSet<Arc<ObjectRef>> = BTreeSet::new();
    let mut memo = CheckMemo::default();
    // Index of each parsed real server in `out.real_servers`, once selected.
    let mut selected: Vec<Option<u32>> = vec![None; real_servers.len()];
    for p in &parsed {
        let next_id = memo.templates.len();
        let template = *memo.templates.entry(&p.check).or_insert(next_id);
        let selector = &p.vs.spec.real_server_selector;
        let first_port = p.ports.first().map_or(0, |(k, _)| match k {
            ServiceKey::Addr { port, .. } => *port,
            ServiceKey::Fwmark { .. } => 0,
        });
        let mut dests: Vec<DestRef> = Vec::new();
        let mut addresses: BTreeMap<Ipv4Addr, &ObjectRef> = BTreeMap::new();
        let excluded: BTreeMap<&str, &api::ExcludedRealServer> =
            p.vs.status
                .iter()
                .flat_map(|s| s.excluded_real_servers.iter())
                .map(|e| (e.name.as_str(), e))
                .collect();
        for (rs_index, rs) in real_servers.iter().enumerate() {
            if rs.me.namespace != p.me.namespace || !lvstun_rules::selects(selector, rs.labels) {
                continue;
            }
            if let Some(e) = excluded.get(rs.me.name.as_str()) {
                out.problems.push(problem(
                    "RealServer",
                    &rs.me,
                    format!(
                        "not programmed for VirtualService {}: the operator left it out ({}): {}",
                        p.me,
                        e.reason,
                        match e.node.as_deref() {
                            Some(node) if e.reason == Reason::NodeIsBalancer.as_str() => format!(
                                "its node {node} is one of the VirtualService's balancer nodes"
                            ),
                            _ if e.reason == Reason::AddressIsVip.as_str() =>
                                "its spec.address is the VirtualService's VIP".to_string(),
                            _ => "see the VirtualService's status.excludedRealServers".to_string(),
                        }
                    ),
                ));
                continue;
            }
            let ok = match &rs.valid {
                Ok(ok) => ok,
                Err(e) => {
                    if reported.insert(rs.me.clone()) {
                        out.problems.push(problem("RealServer", &rs.me, e.clone()));
                    }
                    continue;
                }
            };
            if let Some(other) = addresses.get(&ok.address) {
                out.problems.push(problem(
                    "RealServer",
                    &rs.me,
                    format!(
                        "not programmed for VirtualService {}: RealServer {other} has the same address {}",
                        p.me, ok.address
                    ),
                ));
                continue;
            }
            addresses.insert(ok.address, &rs.me);
            let rs_ref = match selected[rs_index] {
                Some(i) => i,
                None => {
                    let i = index(out.real_servers.len());
                    out.real_servers.push(ResolvedRs {
                        me: rs.me.clone(),
                        address: ok.address,
                        weight: ok.weight,
                        gate: ok.gate.clone(),
                    });
                    selected[rs_index] = Some(i);
                    i
                }
            };
            let port = p.check.port_for(ok.port, first_port);
            if memo.keys.len() <= template {
                memo.keys
                    .resize_with(template + 1, || vec![None; real_servers.len()]);
            }
            let slot = &mut memo.keys[template][rs_index];
            let check = match *slot {
                Some((p, i)) if p == port => i,
                _ => {
                    let spec = check_for(&p.check, ok.address, port);
                    let key = match out.checks.get_key_value(&spec.key) {
                        Some((shared, _)) => shared.clone(),
                        None => {
                            let key = spec.key.clone();
                            out.checks.insert(key.clone(), spec);
                            key
                        }
                    };
                    out.real_server_checks
                        .entry(rs.me.clone())
                        .or_default()
                        .insert(key.clone());
                    let i = index(out.check_keys.len());
                    out.check_keys.push(key);
                    *slot = Some((port, i));
                    i
                }
            };
            dests.push(DestRef { rs: rs_ref, check });
        }
        let dests: Arc<[DestRef]> = dests.into();
        for (key, port_name) in &p.ports {
            out.services.push(ResolvedService {
                virtual_service: p.me.clone(),
                port_name: port_name.clone(),
                key: *key,
                config: p.config,
                forward: p.forward,
                dests: dests.clone(),
            });
        }
    }
    out
}

/// An index into one of [`Resolved`]'s tables; they are far smaller than `u32::MAX` (a
/// snapshot holds at most as many real servers and checks as objects), saturating otherwise.
fn index(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD_VS: &str = "apiVersion: lvstun.io/v1alpha1\nkind: VirtualService\n";
    const HEAD_RS: &str = "apiVersion: lvstun.io/v1alpha1\nkind: RealServer\n";

    /// The objects as typed values, without the file source's validation: these tests are of
    /// the balancer's own defence against objects the API rules would refuse today (stored
    /// before a rule existed, or written past it), so they must reach it.
    fn snapshot(docs: &[String]) -> Snapshot {
        let mut s = Snapshot {
            refused: None,
            virtual_services: Vec::new(),
            real_servers: Vec::new(),
            scope: Scope::All,
            peers: Default::default(),
        };
        for text in docs {
            for doc in serde_norway::Deserializer::from_str(text) {
                let value = <serde_norway::Value as serde::Deserialize>::deserialize(doc).unwrap();
                match value.get("kind").and_then(serde_norway::Value::as_str) {
                    Some("VirtualService") => s
                        .virtual_services
                        .push(serde_norway::from_value(value).unwrap()),
                    Some("RealServer") => s
                        .real_servers
                        .push(serde_norway::from_value(value).unwrap()),
                    _ => {}
                }
            }
        }
        s
    }

    /// A VirtualService `name` on `vip` with extra spec lines (indented two spaces).
    fn vs(name: &str, vip: &str, extra: &str) -> String {
        format!(
            "{HEAD_VS}metadata: {{name: {name}}}\nspec:\n  vip: {vip}\n  realServerSelector: {{matchLabels: {{app: www}}}}\n  balancers: {{nodeSelector: {{matchLabels: {{lvstun.io/balancer: 'true'}}}}, virtualRouterID: 51}}\n{extra}"
        )
    }

    fn ports80() -> &'static str {
        "  ports: [{port: 80}]\n"
    }

    fn rs(name: &str, addr: &str, extra: &str) -> String {
        format!(
            "{HEAD_RS}metadata: {{name: {name}, labels: {{app: www}}}}\nspec:\n  address: {addr}\n{extra}"
        )
    }

    fn svc(vip: &str, port: u16) -> ServiceKey {
        ServiceKey::Addr {
            address: vip.parse().unwrap(),
            protocol: Protocol::Tcp,
            port,
        }
    }

    fn dkey(addr: &str, port: u16) -> DestKey {
        DestKey {
            address: addr.parse().unwrap(),
            port,
        }
    }

    fn weights(table: &Table, key: &ServiceKey) -> Vec<(String, u32)> {
        table
            .service(key)
            .map(|e| {
                e.dests
                    .iter()
                    .map(|(k, c)| (k.to_string(), c.weight.get()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn all_healthy(_: &str) -> bool {
        true
    }

    #[test]
    fn the_examples_become_the_recipes_service_on_mh() {
        let vs = include_str!("../../../deploy/examples/virtualservice.yaml");
        let rs = include_str!("../../../deploy/examples/realservers.yaml");
        let r = resolve(&snapshot(&[vs.into(), rs.into()]));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let t = r.table(all_healthy);
        let key = svc("192.0.2.100", 80);
        let entry = t.service(&key).unwrap();
        assert_eq!(
            entry.config,
            crate::balancer::run::tests_support::example_config(),
            "mh with fallback, on the client's address and port"
        );
        assert_eq!(
            weights(&t, &key),
            [
                ("198.51.100.10:80".into(), 1),
                ("198.51.100.130:80".into(), 1)
            ]
        );
        for c in entry.dests.values() {
            assert_eq!(c.forward, Forward::Tunnel(Tunnel::Ipip));
        }
        // The recipe's default check, once per real server.
        assert_eq!(r.checks.len(), 2);
        let check = r.checks.values().next().unwrap();
        assert_eq!(
            &*check.key,
            "http://198.51.100.10:80/healthcheck.html host=- expect 200 \"OK\" every 2s timeout 1s fall 2 rise 1"
        );
        assert_eq!(check.thresholds, Thresholds { fall: 2, rise: 1 });
        assert_eq!(r.vips().iter().collect::<Vec<_>>().len(), 1);
    }

    /// Table test of the weight rules: spec weight, drain, TunnelReady, health.
    #[test]
    fn weights_follow_drain_tunnel_ready_and_health() {
        let tunnel = |status: &str| {
            format!(
                "status:\n  conditions:\n  - {{type: TunnelReady, status: '{status}', reason: R, message: 'm {status}', lastTransitionTime: '2026-11-25T00:00:00Z'}}\n"
            )
        };
        let cases: Vec<(&str, String, bool, u32)> = vec![
            ("plain", String::new(), true, 3),
            ("unhealthy", String::new(), false, 0),
            ("draining", "  drain: true\n".into(), true, 0),
            ("tunnel not ready", tunnel("False"), true, 0),
            ("tunnel ready", tunnel("True"), true, 3),
            ("tunnel unknown", tunnel("Unknown"), true, 3),
            ("tunnel not ready and unhealthy", tunnel("False"), false, 0),
        ];
        for (name, extra, healthy, want) in cases {
            // `extra` is either more spec lines or a top-level status block.
            let rs_doc = format!("{}{extra}", rs("web1", "198.51.100.10", "  weight: 3\n"));
            let r = resolve(&snapshot(&[vs("www", "192.0.2.100", ports80()), rs_doc]));
            assert!(r.problems.is_empty(), "{name}: {:?}", r.problems);
            let t = r.table(|_| healthy);
            assert_eq!(
                weights(&t, &svc("192.0.2.100", 80)),
                [("198.51.100.10:80".to_string(), want)],
                "{name}"
            );
        }
    }

    #[test]
    fn gates_are_reported() {
        let r = resolve(&snapshot(&[
            vs("www", "192.0.2.100", ports80()),
            rs("web1", "198.51.100.10", "  drain: true\n"),
            format!(
                "{}status:\n  conditions:\n  - {{type: TunnelReady, status: 'False', reason: NoTunl0, message: 'tunl0 is down', lastTransitionTime: '2026-11-25T00:00:00Z'}}\n",
                rs("web2", "198.51.100.130", "")
            ),
        ]));
        let gates: Vec<&Gate> = r.services[0]
            .dests
            .iter()
            .map(|d| &r.real_server(*d).gate)
            .collect();
        assert_eq!(
            gates,
            [&Gate::Drain, &Gate::TunnelNotReady("tunl0 is down".into())]
        );
    }

    #[test]
    fn destination_port_is_the_service_port_for_every_port() {
        let r = resolve(&snapshot(&[
            vs(
                "www",
                "192.0.2.100",
                "  ports: [{port: 80}, {port: 443}, {port: 53, protocol: UDP}]\n",
            ),
            rs("web1", "198.51.100.10", "  port: 8080\n"),
        ]));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let t = r.table(all_healthy);
        assert_eq!(t.services().count(), 3);
        assert_eq!(
            weights(&t, &svc("192.0.2.100", 443)),
            [("198.51.100.10:443".to_string(), 1)]
        );
        let udp = ServiceKey::Addr {
            address: "192.0.2.100".parse().unwrap(),
            protocol: Protocol::Udp,
            port: 53,
        };
        assert!(
            t.service(&udp)
                .unwrap()
                .dests
                .contains_key(&dkey("198.51.100.10", 53))
        );
        // One check for the real server, on its own port.
        assert_eq!(r.checks.len(), 1);
        assert!(
            r.checks
                .keys()
                .next()
                .unwrap()
                .starts_with("http://198.51.100.10:8080/")
        );
        let ports: Vec<&str> = r.services.iter().map(|s| s.port_name.as_str()).collect();
        assert_eq!(ports, ["80/TCP", "443/TCP", "53/UDP"]);
    }

    #[test]
    fn check_port_defaults_check_then_real_server_then_service() {
        let key = |vs_extra: &str, rs_extra: &str| {
            let r = resolve(&snapshot(&[
                vs(
                    "www",
                    "192.0.2.100",
                    &format!("  ports: [{{port: 81}}, {{port: 82}}]\n{vs_extra}"),
                ),
                rs("web1", "198.51.100.10", rs_extra),
            ]));
            assert!(r.problems.is_empty(), "{:?}", r.problems);
            r.checks.keys().next().unwrap().clone()
        };
        let http_port = "  healthCheck: {http: {port: 9000, host: www.example, expectStatus: 204, expectBody: ''}}\n";
        assert!(key(http_port, "  port: 8080\n").starts_with(
            "http://198.51.100.10:9000/healthcheck.html host=www.example expect 204 \"\""
        ));
        assert!(key("", "  port: 8080\n").starts_with("http://198.51.100.10:8080/"));
        assert!(key("", "").starts_with("http://198.51.100.10:81/"));
        let tcp = "  healthCheck: {tcp: {}, intervalSeconds: 5, timeoutSeconds: 3, failureThreshold: 4, successThreshold: 2}\n";
        assert_eq!(
            &*key(tcp, ""),
            "tcp://198.51.100.10:81 every 5s timeout 3s fall 4 rise 2"
        );
    }

    #[test]
    fn schedulers_persistence_and_tunnel_types() {
        let cases = [
            ("  scheduler: wrr\n", Scheduler::WRR, None, Tunnel::Ipip),
            (
                "  scheduler: mh\n  persistence: {timeoutSeconds: 300}\n",
                Scheduler::MH,
                Some(300),
                Tunnel::Ipip,
            ),
            (
                "  tunnel: {type: gue}\n",
                Scheduler::RR,
                None,
                Tunnel::Gue {
                    port: NonZeroU16::new(6080).unwrap(),
                    checksum: Default::default(),
                },
            ),
            (
                "  tunnel: {type: gue, port: 5555}\n",
                Scheduler::RR,
                None,
                Tunnel::Gue {
                    port: NonZeroU16::new(5555).unwrap(),
                    checksum: Default::default(),
                },
            ),
            (
                "  tunnel: {type: gre}\n",
                Scheduler::RR,
                None,
                Tunnel::Gre { checksum: false },
            ),
        ];
        for (extra, sched, persist, tunnel) in cases {
            let (config, forward) = www_service(extra);
            assert_eq!(config.scheduler, sched, "{extra}");
            assert_eq!(
                config
                    .persistence
                    .map(|p| (p.timeout_secs, p.netmask_prefix)),
                persist.map(|t| (t, 32)),
                "{extra}"
            );
            assert_eq!(forward, Forward::Tunnel(tunnel), "{extra}");
        }
    }

    /// www (port 80, `extra` appended to its spec) with web1, resolved without a problem: the
    /// service's config and web1's forwarding method.
    fn www_service(extra: &str) -> (ServiceConfig, Forward) {
        let r = resolve(&snapshot(&[
            vs("www", "192.0.2.100", &format!("{}{extra}", ports80())),
            rs("web1", "198.51.100.10", ""),
        ]));
        assert!(r.problems.is_empty(), "{extra}: {:?}", r.problems);
        let t = r.table(all_healthy);
        let entry = t.service(&svc("192.0.2.100", 80)).unwrap();
        let dest = entry.dests.values().next().unwrap();
        (entry.config, dest.forward)
    }

    #[test]
    fn a_vip_that_is_a_known_hosts_address_is_not_programmed() {
        use crate::source::NodePeer;
        let nodes = Peers::Nodes(vec![NodePeer {
            name: "lb2".into(),
            labels: BTreeMap::new(),
            addresses: vec!["192.0.2.12".parse().unwrap()],
        }]);
        let listed = Peers::Listed(vec!["192.0.2.12".parse().unwrap()]);
        let cases = [
            ("192.0.2.12", Peers::Unknown, None),
            ("192.0.2.100", nodes.clone(), None),
            (
                "192.0.2.12",
                nodes,
                Some(
                    "VirtualService default/a: not programmed: spec.vip 192.0.2.12 is the address of Node lb2 (its InternalIP): holding it would take that address from its host; choose a spec.vip no node uses",
                ),
            ),
            (
                "192.0.2.12",
                listed,
                Some(
                    "VirtualService default/a: not programmed: spec.vip 192.0.2.12 is the address of a VRRP peer listed in --vrrp-peers: holding it would take that address from its host; choose a spec.vip no node uses",
                ),
            ),
        ];
        for (vip, peers, want) in cases {
            let mut snap = snapshot(&[vs("a", vip, ports80()), rs("web1", "198.51.100.10", "")]);
            snap.peers = peers;
            let r = resolve(&snap);
            let messages: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
            match want {
                None => {
                    assert!(messages.is_empty(), "{vip}: {messages:?}");
                    assert_eq!(r.services.len(), 1, "{vip}");
                }
                Some(want) => {
                    assert_eq!(messages, [want], "{vip}");
                    assert!(r.services.is_empty(), "{vip}");
                }
            }
        }
    }

    #[test]
    fn hashing_schedulers_fall_back_and_hash_the_port_when_asked() {
        let fallback = ServiceFlags::SCHED1;
        let both = ServiceFlags::SCHED1.union(ServiceFlags::SCHED2);
        let cases = [
            ("  scheduler: rr\n", ServiceFlags::empty()),
            ("  scheduler: wrr\n", ServiceFlags::empty()),
            ("  scheduler: dh\n", ServiceFlags::empty()),
            ("  scheduler: mh\n", fallback),
            ("  scheduler: sh\n", fallback),
            ("  scheduler: mh\n  hashClientPort: true\n", both),
            ("  scheduler: sh\n  hashClientPort: true\n", both),
            ("  scheduler: mh\n  hashClientPort: false\n", fallback),
        ];
        for (extra, flags) in cases {
            let (config, _) = www_service(extra);
            assert_eq!(config.flags, flags, "{extra}");
        }
    }

    #[test]
    fn selectors_and_namespaces_pick_the_real_servers() {
        let other_ns = format!(
            "{HEAD_RS}metadata: {{name: web9, namespace: other, labels: {{app: www}}}}\nspec: {{address: 198.51.100.99}}\n"
        );
        let other_label = format!(
            "{HEAD_RS}metadata: {{name: web8, labels: {{app: mail}}}}\nspec: {{address: 198.51.100.98}}\n"
        );
        let deleted = format!(
            "{HEAD_RS}metadata: {{name: web7, labels: {{app: www}}, deletionTimestamp: '2026-11-25T00:00:00Z'}}\nspec: {{address: 198.51.100.97}}\n"
        );
        let expr = vs("www", "192.0.2.100", ports80()).replace(
            "realServerSelector: {matchLabels: {app: www}}",
            "realServerSelector: {matchExpressions: [{key: app, operator: In, values: [www, mail]}]}",
        );
        let r = resolve(&snapshot(&[
            vs("www", "192.0.2.100", ports80()),
            rs("web1", "198.51.100.10", ""),
            other_ns.clone(),
            other_label.clone(),
            deleted.clone(),
        ]));
        let t = r.table(all_healthy);
        assert_eq!(
            weights(&t, &svc("192.0.2.100", 80)),
            [("198.51.100.10:80".to_string(), 1)]
        );
        let r = resolve(&snapshot(&[
            expr,
            rs("web1", "198.51.100.10", ""),
            other_label,
        ]));
        assert_eq!(
            weights(&r.table(all_healthy), &svc("192.0.2.100", 80)).len(),
            2
        );
    }

    #[test]
    fn node_selector_decides_in_a_cluster() {
        let docs = [
            vs("www", "192.0.2.100", ports80()),
            rs("web1", "198.51.100.10", ""),
        ];
        let mut s = snapshot(&docs);
        s.scope = Scope::NodeLabels(BTreeMap::from([(
            "lvstun.io/balancer".to_string(),
            "true".to_string(),
        )]));
        assert_eq!(resolve(&s).services.len(), 1);
        s.scope = Scope::NodeLabels(BTreeMap::new());
        let r = resolve(&s);
        assert!(r.services.is_empty() && r.checks.is_empty());
        assert!(r.vips().is_empty());
    }

    #[test]
    fn conflicts_skip_the_whole_virtual_service() {
        let operator_says = format!(
            "{}status:\n  conditions:\n  - {{type: Conflict, status: 'True', reason: Conflict, message: 'owned by default/www', lastTransitionTime: '2026-11-25T00:00:00Z'}}\n",
            vs("late", "192.0.2.101", "  ports: [{port: 80}]\n")
        );
        let older = vs("aaa", "192.0.2.100", "  ports: [{port: 80}]\n").replace(
            "metadata: {name: aaa}",
            "metadata: {name: zzz-old, creationTimestamp: '2026-01-01T00:00:00Z'}",
        );
        let newer = vs("bbb", "192.0.2.100", "  ports: [{port: 443}, {port: 80}]\n").replace(
            "metadata: {name: bbb}",
            "metadata: {name: aaa-new, creationTimestamp: '2026-06-01T00:00:00Z'}",
        );
        let r = resolve(&snapshot(&[
            operator_says,
            newer,
            older,
            rs("web1", "198.51.100.10", ""),
        ]));
        let programmed: Vec<String> = r
            .services
            .iter()
            .map(|s| format!("{} {}", s.virtual_service, s.key))
            .collect();
        assert_eq!(programmed, ["default/zzz-old TCP 192.0.2.100:80"]);
        let messages: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("default/late")
            && m.contains("operator reports a conflict: owned by default/www")));
        assert!(messages.iter().any(|m| m.contains("default/aaa-new")
            && m.contains("TCP 192.0.2.100:80 already belongs to VirtualService default/zzz-old")));
    }

    #[test]
    fn a_real_server_the_operator_left_out_gets_no_destination_and_no_check_there() {
        let status = "status:\n  excludedRealServers:\n  - {name: lb2-web, node: lb2, reason: NodeIsBalancer}\n";
        let www = format!("{}{status}", vs("www", "192.0.2.100", ports80()));
        let api = vs("api", "192.0.2.101", ports80())
            .replace("virtualRouterID: 51", "virtualRouterID: 52");
        let r = resolve(&snapshot(&[
            www,
            api,
            rs("web1", "198.51.100.10", ""),
            rs("lb2-web", "198.51.100.20", "  nodeName: lb2\n"),
        ]));
        let t = r.table(all_healthy);
        assert_eq!(
            weights(&t, &svc("192.0.2.100", 80)),
            [("198.51.100.10:80".into(), 1)],
            "left out of www"
        );
        assert_eq!(
            weights(&t, &svc("192.0.2.101", 80)),
            [
                ("198.51.100.10:80".into(), 1),
                ("198.51.100.20:80".into(), 1)
            ],
            "api does not leave it out"
        );
        let messages: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "RealServer default/lb2-web: not programmed for VirtualService default/www: the operator left it out (NodeIsBalancer): its node lb2 is one of the VirtualService's balancer nodes"
            ]
        );
    }

    #[test]
    fn invalid_input_is_refused_with_a_reason() {
        let cases = [
            (vs("a", "2001:db8::1", ports80()), "not an IPv4 address"),
            (vs("a", "192.0.2.100", "  ports: []\n"), "no port"),
            (
                vs("a", "192.0.2.100", "  ports: [{port: 80}, {port: 80}]\n"),
                "twice",
            ),
            (
                vs(
                    "a",
                    "192.0.2.100",
                    &format!("{}  healthCheck: {{intervalSeconds: 2}}\n", ports80()),
                ),
                "exactly one of http or tcp",
            ),
            (
                vs(
                    "a",
                    "192.0.2.100",
                    &format!(
                        "{}  healthCheck: {{tcp: {{}}, intervalSeconds: 1, timeoutSeconds: 2}}\n",
                        ports80()
                    ),
                ),
                "must not be larger",
            ),
            (
                vs(
                    "a",
                    "192.0.2.100",
                    &format!("{}  tunnel: {{type: ipip, port: 5555}}\n", ports80()),
                ),
                "only to type gue",
            ),
            (
                vs(
                    "a",
                    "192.0.2.100",
                    &format!("{}  hashClientPort: true\n", ports80()),
                ),
                "spec.hashClientPort applies only to the hashing schedulers",
            ),
        ];
        for (doc, want) in cases {
            let r = resolve(&snapshot(&[doc.clone(), rs("web1", "198.51.100.10", "")]));
            assert!(r.services.is_empty(), "{doc}");
            assert!(
                r.problems.iter().any(|p| p.message.contains(want)),
                "{want}: {:?}",
                r.problems
            );
        }
        // A bad real server is left out; the others are programmed.
        let r = resolve(&snapshot(&[
            vs("www", "192.0.2.100", ports80()),
            rs("web1", "198.51.100.10", ""),
            rs("web2", "not-an-ip", ""),
            rs("web3", "198.51.100.10", ""),
        ]));
        assert_eq!(r.services[0].dests.len(), 1);
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
    }

    #[test]
    fn shared_checks_are_deduplicated() {
        let r = resolve(&snapshot(&[
            vs("www", "192.0.2.100", ports80()),
            vs("www2", "192.0.2.101", ports80()),
            rs("web1", "198.51.100.10", ""),
        ]));
        assert_eq!(r.services.len(), 2);
        assert_eq!(r.checks.len(), 1);
        assert_eq!(
            r.check_key(r.services[0].dests[0]),
            r.check_key(r.services[1].dests[0])
        );
    }

    #[test]
    fn initial_verdicts_come_from_the_kernel_weights() {
        let r = resolve(&snapshot(&[
            vs("www", "192.0.2.100", ports80()),
            rs("web1", "198.51.100.10", ""),
            rs("web2", "198.51.100.130", ""),
            rs("web3", "198.51.100.140", ""),
        ]));
        let mut actual = Table::new();
        let key = svc("192.0.2.100", 80);
        actual.upsert_service(key, ServiceConfig::new(Scheduler::RR));
        actual.upsert_dest(
            &key,
            dkey("198.51.100.10", 80),
            DestConfig::tunnel(Weight::new(1).unwrap()),
        );
        actual.upsert_dest(
            &key,
            dkey("198.51.100.130", 80),
            DestConfig::tunnel(Weight::new(0).unwrap()),
        );
        let v = r.initial_verdicts(&actual);
        let by_addr = |a: &str| {
            v.iter()
                .find(|(k, _)| k.contains(a))
                .map(|(_, h)| *h)
                .unwrap()
        };
        assert!(by_addr("198.51.100.10:"));
        assert!(!by_addr("198.51.100.130:"));
        assert!(
            !by_addr("198.51.100.140:"),
            "not in the kernel: starts unhealthy"
        );
        // With those verdicts, the kernel's table is already the desired one for web1/web2.
        let t = r.table(|k| v.get(k).copied().unwrap_or(false));
        assert_eq!(
            weights(&t, &key),
            [
                ("198.51.100.10:80".to_string(), 1),
                ("198.51.100.130:80".to_string(), 0),
                ("198.51.100.140:80".to_string(), 0)
            ]
        );
    }
}
