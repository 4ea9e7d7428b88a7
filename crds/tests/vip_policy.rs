//! The chart's VIPPolicy against the API type: its default pools are valid `VipPool`s and hold
//! the examples' VIP for the examples' balancer node selector, so `helm install` followed by
//! `kubectl apply -f deploy/examples/` is admitted.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

use std::net::Ipv4Addr;
use std::path::Path;

use kube::CustomResourceExt;
use lvstun_crds::v1alpha1::{VIPPolicy, VipPool, VirtualService};

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::read_to_string(root.join(path)).unwrap()
}

/// Whether `cidr` (a.b.c.d/n) holds `ip`.
fn holds(cidr: &str, ip: Ipv4Addr) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let (net, len): (Ipv4Addr, u32) = (net.parse().unwrap(), len.parse().unwrap());
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(net) & mask == u32::from(ip) & mask
}

#[test]
fn vip_policy_is_cluster_scoped_and_named_vippolicies() {
    let crd = VIPPolicy::crd();
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.metadata.name.as_deref(), Some("vippolicies.lvstun.io"));
}

#[test]
fn the_charts_default_pool_admits_the_example_virtual_service() {
    let values: serde_json::Value =
        serde_norway::from_str(&read("deploy/helm/lvstun/values.yaml")).unwrap();
    assert_eq!(values["vipPolicy"]["enforce"], true);
    let pools: Vec<VipPool> = serde_json::from_value(values["vipPolicy"]["pools"].clone()).unwrap();
    let example: VirtualService =
        serde_norway::from_str(&read("deploy/examples/virtualservice.yaml")).unwrap();
    let vip: Ipv4Addr = example.spec.vip.parse().unwrap();
    let selector = &example.spec.balancers.node_selector;
    let admitting: Vec<&str> = pools
        .iter()
        .filter(|p| p.cidrs.iter().any(|c| holds(c, vip)))
        .filter(|p| p.namespaces.iter().any(|n| n == "*"))
        .filter(|p| {
            let wanted = p
                .balancer_node_selector
                .match_labels
                .clone()
                .unwrap_or_default();
            let have = selector.match_labels.clone().unwrap_or_default();
            wanted.iter().all(|(k, v)| have.get(k) == Some(v))
                && p.balancer_node_selector.match_expressions.is_none()
        })
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(admitting, ["example"]);
}
