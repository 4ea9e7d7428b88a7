//! Addresses the operator refuses, and the pools it watches, against a real kube-apiserver with
//! the chart installed by `helm install` and the operator running with the chart's arguments and
//! ServiceAccount (so its RBAC on Nodes, `vippolicies` and Service `default/kubernetes` is what
//! is tested). It proves, each with its exact condition:
//!
//! - a VirtualService whose VIP is a Node's InternalIP: `Conflict=True`, reason
//!   `VIPIsNodeAddress`, a `Conflict` Event;
//! - one whose VIP is the ClusterIP of Service `default/kubernetes`: reason
//!   `VIPIsKubernetesClusterIP`;
//! - a RealServer whose `spec.address` is the VIP: left out of that VirtualService alone
//!   (`excludedRealServers`, reason `AddressIsVIP`), the others still selected;
//! - a VirtualService admitted inside a pool, then the VIPPolicy edited so it lies outside:
//!   `InPool=False` reason `OutsidePool`, a `Warning` Event, and the rest of its status as it
//!   was (still programmed); the policy restored: `InPool=True` again.
//!
//! Run: `cargo test -p lvstun-tests --test controlplane_addresses -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on purpose

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, Resource};
use lvstun_crds::v1alpha1::{ExcludedRealServer, RealServer, VirtualService, VirtualServiceStatus};
use lvstun_tests::cluster::{self, apply, apply_examples, await_object, example_virtual_service};
use lvstun_tests::controlplane::ControlPlane;
use lvstun_tests::operator_fixture::{Guard, Install, operator_binary, wait_for};
use serde::de::DeserializeOwned;
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);

/// A condition as read: (status, reason, message).
type Reading = (String, String, String);

fn condition(vs: &VirtualService, type_: &str) -> Option<Reading> {
    vs.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn reading(status: &str, reason: &str, message: &str) -> Reading {
    (status.into(), reason.into(), message.into())
}

/// Await object `name` until `decide` accepts it.
async fn until<K, T>(api: &Api<K>, name: &str, what: &str, decide: impl FnMut(&K) -> Option<T>) -> T
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    await_object(api, name, what, LONG, decide)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Await VirtualService `name` until its condition `type_` has this reason; return it.
async fn until_reason(vss: &Api<VirtualService>, name: &str, type_: &str, reason: &str) -> Reading {
    until(
        vss,
        name,
        &format!("{name} to have {type_} reason {reason}"),
        |vs| condition(vs, type_).filter(|c| c.1 == reason),
    )
    .await
}

/// Await an Event (events.k8s.io) in `ns` about `name` with this reason and note; return its type.
async fn until_event(client: &Client, ns: &str, name: &str, reason: &str, note: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    cluster::poll(
        &format!("a {reason} event on {name} in {ns} saying {note:?}"),
        LONG,
        || {
            let events = events.clone();
            async move {
                events
                    .list(&ListParams::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default()
            }
        },
        |seen| {
            seen.iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.note.as_deref() == Some(note)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                })
                .map(|e| e.type_.clone().unwrap_or_default())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The operator-owned status without `InPool` and the transition times: what must not move
/// when only the pools change.
fn without_pool(s: &VirtualServiceStatus) -> (Vec<Reading>, VirtualServiceStatus) {
    let mut rest = s.clone();
    let conditions = rest
        .conditions
        .iter()
        .filter(|c| c.type_ != "InPool")
        .map(|c| {
            (
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone() + ": " + &c.message,
            )
        })
        .collect();
    rest.conditions.clear();
    rest.balancers.clear();
    (conditions, rest)
}

fn vip_policies(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("lvstun.io", "v1alpha1", "VIPPolicy");
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "vippolicies"),
    )
}

async fn set_pools(client: &Client, policy: &str, pools: serde_json::Value) {
    vip_policies(client)
        .patch(
            policy,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pools": pools}})),
        )
        .await
        .unwrap_or_else(|e| panic!("editing VIPPolicy {policy}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_the_cluster_uses_are_refused_and_pool_edits_are_reported_not_enforced() {
    let cp = ControlPlane::shared().unwrap();
    let client = cp.client().await.unwrap();
    cluster::ensure_crds(&client).await.unwrap();
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "addr", &[]).await;
    let policy = install.release.clone();
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("addr").await;
    let vss: Api<VirtualService> = Api::namespaced(client.clone(), &ns);
    let rss: Api<RealServer> = Api::namespaced(client.clone(), &ns);

    // A balancer node whose InternalIP lies in the example pool.
    let node = format!("lb-{ns}");
    guard.node(&node, &[("lvstun.io/balancer", "true")]).await;
    let node_ip = "192.0.2.51";
    Api::<Node>::all(client.clone())
        .patch_status(
            &node,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"addresses": [
                {"type": "InternalIP", "address": node_ip},
                {"type": "Hostname", "address": node}
            ]}})),
        )
        .await
        .unwrap();
    let api_ip = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap();

    let op = install.start(&bin, "op-0");
    wait_for("the operator to lead", LONG, || {
        op.is_leader().then_some(())
    });

    // 1. The VIP is a Node's address.
    let mut at_node = example_virtual_service().unwrap();
    at_node.metadata.name = Some("at-node".into());
    at_node.spec.vip = node_ip.into();
    apply(&vss, &at_node).await.unwrap();
    let want = format!(
        "spec.vip {node_ip} is the InternalIP of Node {node}: a balancer holding it would answer for that node's own address and take it away when it gives the VIP up; this VirtualService is not programmed on any balancer; fix: choose a spec.vip no node uses (and keep node addresses out of the VIPPolicy pools)"
    );
    let got = until_reason(&vss, "at-node", "Conflict", "VIPIsNodeAddress").await;
    assert_eq!(
        got,
        reading("True", "VIPIsNodeAddress", &want),
        "at-node Conflict"
    );
    let vs = vss.get("at-node").await.unwrap();
    assert_eq!(
        condition(&vs, "Ready"),
        Some(reading(
            "False",
            "Conflict",
            &format!("not programmed: spec.vip {node_ip} is the InternalIP of Node {node}")
        )),
        "at-node Ready"
    );
    let kind = until_event(&client, &ns, "at-node", "Conflict", &want).await;
    assert_eq!(kind, "Warning", "at-node Event type");
    println!("at-node: Conflict=True VIPIsNodeAddress: {want}");

    // 2. The VIP is the API server's ClusterIP.
    let mut at_api = example_virtual_service().unwrap();
    at_api.metadata.name = Some("at-api".into());
    at_api.spec.vip = api_ip.clone();
    apply(&vss, &at_api).await.unwrap();
    let want = format!(
        "spec.vip {api_ip} is the ClusterIP of Service default/kubernetes, the address pods reach the API server by: a balancer holding it would take that address from them; this VirtualService is not programmed on any balancer; fix: choose a spec.vip outside the cluster's Service CIDR (and keep that CIDR out of the VIPPolicy pools)"
    );
    let got = until_reason(&vss, "at-api", "Conflict", "VIPIsKubernetesClusterIP").await;
    assert_eq!(
        got,
        reading("True", "VIPIsKubernetesClusterIP", &want),
        "at-api Conflict"
    );
    println!("at-api: Conflict=True VIPIsKubernetesClusterIP: {want}");

    // 3. A RealServer at the VIP: left out of www alone; web1 and web2 stay selected.
    apply_examples(&client, &ns).await.unwrap();
    let mut at_vip: RealServer = cluster::example::<RealServer>("realservers.yaml")
        .unwrap()
        .remove(0);
    at_vip.metadata.name = Some("at-vip".into());
    at_vip.spec.address = "192.0.2.100".into();
    apply(&rss, &at_vip).await.unwrap();
    let want_excluded = vec![ExcludedRealServer {
        name: "at-vip".into(),
        node: None,
        reason: "AddressIsVIP".into(),
    }];
    let www = until(&vss, "www", "www to leave at-vip out", |vs| {
        let s = vs.status.as_ref()?;
        (s.excluded_real_servers == want_excluded).then(|| vs.clone())
    })
    .await;
    let status = www.status.clone().unwrap();
    assert_eq!(status.total_real_servers, Some(3), "www selects all three");
    let why = "RealServer at-vip has spec.address 192.0.2.100, which is this VirtualService's VIP, so it is left out of this VIP (the other real servers keep serving): a balancer would tunnel the VIP's traffic to the VIP itself; fix: set the RealServer's spec.address to the real server's own address, which is never a VIP";
    let degraded = until_reason(&vss, "www", "Degraded", "RealServerAtVIP").await;
    assert_eq!(
        (degraded.0.as_str(), degraded.1.as_str()),
        ("True", "RealServerAtVIP")
    );
    assert!(
        degraded.2.starts_with(why),
        "www Degraded message: {}",
        degraded.2
    );
    let healthy = until(
        &rss,
        "at-vip",
        "at-vip Healthy=Unknown AddressIsVIP",
        |rs| {
            rs.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Healthy" && c.reason == "AddressIsVIP")
                .map(|c| (c.status.clone(), c.message.clone()))
        },
    )
    .await;
    assert_eq!(
        healthy,
        (
            "Unknown".to_string(),
            format!("not checked: VirtualService www leaves it out; {why}")
        ),
        "at-vip Healthy"
    );
    println!("at-vip: excluded from www (AddressIsVIP)");

    // 4. Inside the example pool; then the pool moves away; then it comes back.
    let inside = reading(
        "True",
        "InPool",
        &format!(
            "spec.vip 192.0.2.100 is in VIPPolicy {policy} pool example, which namespace \"{ns}\" may use, and spec.balancers.nodeSelector stays within its nodes"
        ),
    );
    assert_eq!(until_reason(&vss, "www", "InPool", "InPool").await, inside);
    // Let the exclusion's status settle, then remember everything but InPool.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = without_pool(vss.get("www").await.unwrap().status.as_ref().unwrap());
    let original = vip_policies(&client).get(&policy).await.unwrap().data["spec"]["pools"].clone();
    set_pools(
        &client,
        &policy,
        json!([{"name": "example", "cidrs": ["198.51.100.0/24"], "namespaces": ["*"],
                "balancerNodeSelector": {"matchLabels": {"lvstun.io/balancer": "true"}}}]),
    )
    .await;
    let want = format!(
        "spec.vip 192.0.2.100 is in no VIPPolicy pool that namespace \"{ns}\" may use: ask a cluster admin to add it to VIPPolicy {policy}; it was stored before VIPPolicy {policy} changed and keeps serving (a pool edit never cuts live traffic), but the API server checks its next update against the pools"
    );
    let got = until_reason(&vss, "www", "InPool", "OutsidePool").await;
    assert_eq!(got, reading("False", "OutsidePool", &want), "www InPool");
    let kind = until_event(&client, &ns, "www", "OutsidePool", &want).await;
    assert_eq!(kind, "Warning", "OutsidePool Event type");
    let after = without_pool(vss.get("www").await.unwrap().status.as_ref().unwrap());
    assert_eq!(
        after, before,
        "www's status besides InPool is unchanged: still programmed"
    );
    assert!(
        after.0.iter().any(|c| c.0 == "Conflict" && c.1 == "False"),
        "www still owns its claims: {:?}",
        after.0
    );
    println!("www: InPool=False OutsidePool: {want}");

    set_pools(&client, &policy, original).await;
    assert_eq!(until_reason(&vss, "www", "InPool", "InPool").await, inside);
    until_event(
        &client,
        &ns,
        "www",
        "BackInPool",
        "spec.vip 192.0.2.100 is in a VIPPolicy pool this namespace may use again",
    )
    .await;
    println!("www: InPool=True again");
}
