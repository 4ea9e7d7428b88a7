//! Test-only builders for the objects the pure modules take, so each test states only what it
//! is about.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;
use lvstun_crds::v1alpha1::{
    BalancerStatus, Balancers, CheckStatus, Protocol, RealServer, RealServerSpec, RealServerStatus,
    ServicePort, VirtualService, VirtualServiceSpec, VirtualServiceStatus, VrrpState,
};

/// A time `secs` seconds after the epoch.
pub fn t(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

/// A label map.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A selector with `matchLabels` only.
pub fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs)),
        ..Default::default()
    }
}

/// A VirtualService selecting `app=www` real servers and `lvstun.io/balancer=true` nodes.
pub fn vs(
    ns: &str,
    name: &str,
    created: i64,
    vip: &str,
    ports: &[(i32, Protocol)],
) -> VirtualService {
    let mut v = VirtualService::new(
        name,
        VirtualServiceSpec {
            vip: vip.into(),
            ports: ports
                .iter()
                .map(|(port, protocol)| ServicePort {
                    port: *port,
                    protocol: *protocol,
                })
                .collect(),
            scheduler: Default::default(),
            hash_client_port: false,
            persistence: None,
            tunnel: Default::default(),
            real_server_selector: match_labels(&[("app", "www")]),
            health_check: Default::default(),
            balancers: Balancers {
                node_selector: match_labels(&[("lvstun.io/balancer", "true")]),
                interface: None,
                virtual_router_id: 51,
                advert_interval_milliseconds: 1000,
                preempt: true,
                preempt_delay_seconds: None,
                missed_advertisements: 3,
                priorities: vec![],
                unicast_peers: vec![],
            },
        },
    );
    v.metadata.namespace = Some(ns.into());
    v.metadata.generation = Some(1);
    v.metadata.creation_timestamp = Some(t(created));
    v
}

/// The example VirtualService `ns/www` on 192.0.2.100:80/TCP.
pub fn www() -> VirtualService {
    vs("ns", "www", 100, "192.0.2.100", &[(80, Protocol::Tcp)])
}

/// Add a balancer report that says when its state changed.
pub fn report_at(vs: &mut VirtualService, node: &str, state: VrrpState, since: i64) {
    report(vs, node, state);
    if let Some(b) = vs.status.as_mut().and_then(|s| s.balancers.last_mut()) {
        b.last_transition_time = Some(t(since));
    }
}

/// Add a balancer report to a VirtualService, as a balancer daemon would.
pub fn report(vs: &mut VirtualService, node: &str, state: VrrpState) {
    let status = vs.status.get_or_insert_with(VirtualServiceStatus::default);
    status.balancers.push(BalancerStatus {
        node: node.into(),
        state,
        priority: None,
        last_transition_time: None,
        programmed_destinations: BTreeMap::new(),
        message: None,
        refused_kernel_settings: Vec::new(),
        deleted_externally: None,
    });
}

/// A RealServer `ns/<name>` labelled `app=www`, with no `spec.nodeName` (a host outside the
/// cluster).
pub fn rs(name: &str, address: &str) -> RealServer {
    let mut r = RealServer::new(
        name,
        RealServerSpec {
            address: address.into(),
            port: None,
            weight: 1,
            drain: false,
            node_name: None,
        },
    );
    r.metadata.namespace = Some("ns".into());
    r.metadata.generation = Some(1);
    r.metadata.labels = Some(labels(&[("app", "www")]));
    r
}

/// Add a health check result from `balancer`, as that balancer daemon would.
pub fn check(rs: &mut RealServer, balancer: &str, healthy: bool) {
    let status = rs.status.get_or_insert_with(RealServerStatus::default);
    status.checks.push(CheckStatus {
        balancer: balancer.into(),
        healthy,
        consecutive_failures: if healthy { 0 } else { 3 },
        last_check_time: None,
        last_transition_time: None,
        message: (!healthy).then(|| "GET /healthcheck.html: connection refused".to_string()),
    });
}

/// Set `TunnelReady`, as the web daemon would.
pub fn tunnel(rs: &mut RealServer, ready: bool) {
    let status = rs.status.get_or_insert_with(RealServerStatus::default);
    status.conditions.push(Condition {
        type_: lvstun_crds::conditions::ConditionType::TunnelReady
            .as_str()
            .into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: if ready { "Ready" } else { "NoTunl0" }.into(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: t(1),
    });
}

/// A RealServer `ns/<name>` labelled `app=www` on cluster node `node-<name>`: a web daemon
/// reports its `TunnelReady`.
pub fn node_rs(name: &str, address: &str) -> RealServer {
    let mut r = rs(name, address);
    r.spec.node_name = Some(format!("node-{name}"));
    r
}

/// A healthy, tunnel-ready real server on a cluster node, as seen by `balancer`.
pub fn good_rs(name: &str, address: &str, balancer: &str) -> RealServer {
    let mut r = node_rs(name, address);
    check(&mut r, balancer, true);
    tunnel(&mut r, true);
    r
}
