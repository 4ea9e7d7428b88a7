//! The operator binary against a real control plane (kube-apiserver, etcd,
//! kube-controller-manager), installed with the chart and running as its own ServiceAccount with
//! the chart's exact arguments: RBAC, DaemonSets and their Pods (placed by the chart's labels,
//! untouched by CR churn), conflicts, status folding from simulated daemon reports, leader
//! handover, and a restart that changes nothing.
//!
//! Everything is read and written through the typed kube client (`VirtualService`,
//! `RealServer`, `DaemonSet`, `Pod`, `Event`); `kubectl` appears only where what users see in
//! its table (the printer columns) is the fact under test.
//!
//! The operator watches every namespace, so two operators in one control plane would see each
//! other's objects; the tests in this file therefore run one at a time (a lock), each with its
//! own release, namespaces and VIPs, and clean up after themselves. Other test files run in
//! their own control plane.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns panic on purpose

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Capabilities, HTTPGetAction, Node, Pod, PodSpec, PodTemplateSpec,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use lvstun_crds::v1alpha1::{ExcludedRealServer, RealServer, VirtualService};
use lvstun_tests::cluster::{
    self, Access, Conditions, apply, apply_examples, await_object, example_virtual_service, merge,
    string_map,
};
use lvstun_tests::controlplane::ControlPlane;
use lvstun_tests::operator_fixture::{Guard, Install, Operator, metric, operator_binary, wait_for};
use serde::de::DeserializeOwned;
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LONG: Duration = Duration::from_secs(90);

fn cp() -> &'static ControlPlane {
    ControlPlane::shared().unwrap()
}

/// Await object `name` of `api` until `decide` accepts it; panics naming `what` and the last
/// object seen.
async fn until<K, T>(api: &Api<K>, name: &str, what: &str, decide: impl FnMut(&K) -> Option<T>) -> T
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    await_object(api, name, what, LONG, decide)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Await object `name` until its condition `type_` has `status`; return the object.
async fn wait_condition<K>(api: &Api<K>, name: &str, type_: &str, status: &str) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Conditions,
{
    until(
        api,
        name,
        &format!("{name} to have {type_}={status}"),
        |o| o.has(type_, status).then(|| o.clone()),
    )
    .await
}

/// Points RealServer `rs` at cluster node `node` (`spec.nodeName`).
async fn set_node_name(rss: &Api<RealServer>, rs: &str, node: &str) {
    merge(rss, rs, json!({"spec": {"nodeName": node}}))
        .await
        .unwrap();
}

fn wait_leader(op: &Operator) {
    wait_for(&format!("{} to lead", op.name), LONG, || {
        op.is_leader().then_some(())
    });
}

/// Events (events.k8s.io) in a namespace with this reason, as (regarding name, note).
async fn events(client: &Client, ns: &str, reason: &str) -> Vec<(String, String)> {
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| {
            (
                e.regarding.and_then(|r| r.name).unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Await an Event with this reason whose note contains `needle`; return the note.
async fn wait_event(client: &Client, ns: &str, reason: &str, needle: &str) -> String {
    cluster::poll(
        &format!("a {reason} event containing {needle:?} in {ns}"),
        LONG,
        || events(client, ns, reason),
        |seen| {
            seen.iter()
                .find(|(_, note)| note.contains(needle))
                .map(|(_, note)| note.clone())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a DaemonSet has a pod template")
}

/// The nodes the DaemonSet controller made Pods for (each Pod carries a matchFields term naming
/// its node, which a scheduler would honour).
async fn pod_nodes(client: &Client, ns: &str, component: &str) -> BTreeSet<String> {
    let selector =
        format!("app.kubernetes.io/component={component},app.kubernetes.io/name=lvstun-node");
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let terms = &p
                .spec
                .as_ref()?
                .affinity
                .as_ref()?
                .node_affinity
                .as_ref()?
                .required_during_scheduling_ignored_during_execution
                .as_ref()?
                .node_selector_terms;
            terms.iter().find_map(|t| {
                t.match_fields
                    .as_ref()?
                    .first()?
                    .values
                    .as_ref()?
                    .first()
                    .cloned()
            })
        })
        .collect()
}

/// Await the DaemonSet controller's Pods of `component` being exactly on `nodes`.
async fn wait_pods_on(client: &Client, ns: &str, component: &str, nodes: &[&str]) {
    let want: BTreeSet<String> = nodes.iter().map(|s| s.to_string()).collect();
    cluster::poll(
        &format!("{component} pods on {nodes:?}"),
        LONG,
        || pod_nodes(client, ns, component),
        |seen| (*seen == want).then_some(()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

fn arg_value(args: &[String], flag: &str) -> String {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
        .unwrap_or_default()
        .to_string()
}

fn strings(items: &[&str]) -> Option<Vec<String>> {
    Some(items.iter().map(|s| s.to_string()).collect())
}

/// Wait until the operator's status writes stop moving (everything folded).
fn settle(op: &Operator) -> f64 {
    let writes = |op: &Operator| {
        let m = op.metrics();
        metric(
            &m,
            "lvstun_operator_status_writes_total{kind=\"VirtualService\"}",
        )
        .unwrap_or(-1.0)
            + metric(
                &m,
                "lvstun_operator_status_writes_total{kind=\"RealServer\"}",
            )
            .unwrap_or(-1.0)
    };
    let mut last = writes(op);
    wait_for("status writes to settle", LONG, || {
        std::thread::sleep(Duration::from_millis(1500));
        let now = writes(op);
        let stable = now == last;
        last = now;
        stable.then_some(now)
    })
}

/// The example VirtualService renamed (and so a second object beside `www`).
fn example_named(name: &str) -> VirtualService {
    let mut vs = example_virtual_service().unwrap();
    vs.metadata.name = Some(name.into());
    vs
}

/// Its balancers are the nodes with these labels.
fn balancers_on(vs: &mut VirtualService, labels: &[(&str, &str)]) {
    vs.spec.balancers.node_selector = LabelSelector {
        match_labels: Some(string_map(labels)),
        ..LabelSelector::default()
    };
}

#[tokio::test]
async fn rbac_is_enough_and_no_more() {
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let client = cp.client().await.unwrap();
    let install = Install::new(cp, "op-rbac", &[]).await;
    let sa = install.service_account();
    let ns = install.namespace.as_str();
    let can = async |verb: &str, resource: &str, namespace: Option<&str>| -> bool {
        let access = Access {
            verb,
            resource,
            namespace,
            name: None,
        };
        cluster::service_account_can(&client, &sa, &access)
            .await
            .unwrap()
    };
    // What it needs.
    for (verb, resource, namespace) in [
        ("watch", "virtualservices.lvstun.io", None),
        ("list", "realservers.lvstun.io", None),
        ("patch", "virtualservices.lvstun.io/status", None),
        ("patch", "realservers.lvstun.io/status", None),
        ("watch", "nodes", None),
        ("create", "events.events.k8s.io", None),
        ("patch", "daemonsets.apps", Some(ns)),
        ("delete", "daemonsets.apps", Some(ns)),
        ("watch", "daemonsets.apps", Some(ns)),
        ("update", "leases.coordination.k8s.io", Some(ns)),
    ] {
        assert!(
            can(verb, resource, namespace).await,
            "the operator needs {verb} {resource} in {namespace:?}"
        );
    }
    // What it must not have.
    for (verb, resource, namespace) in [
        ("get", "secrets", Some(ns)),
        ("list", "secrets", None),
        ("create", "pods/exec", Some(ns)),
        ("get", "pods", Some(ns)),
        ("create", "daemonsets.apps", Some("default")),
        ("patch", "leases.coordination.k8s.io", Some("kube-system")),
        // The election reads, creates and conditionally replaces its Lease; nothing more.
        ("patch", "leases.coordination.k8s.io", Some(ns)),
        ("watch", "leases.coordination.k8s.io", Some(ns)),
        ("update", "virtualservices.lvstun.io", None),
        ("delete", "realservers.lvstun.io", None),
        ("patch", "nodes", None),
        ("*", "*", None),
    ] {
        assert!(
            !can(verb, resource, namespace).await,
            "the operator must not {verb} {resource} in {namespace:?}"
        );
    }
    println!("RBAC of {sa}: everything needed, no secrets, no pods/exec, DaemonSets only in {ns}");
}

/// The pod templates of both DaemonSets, and their generations: what must not move with the CRs.
async fn templates(dss: &Api<DaemonSet>, names: &[&str]) -> Vec<(PodTemplateSpec, Option<i64>)> {
    let mut out = Vec::new();
    for n in names {
        let ds = dss
            .get(n)
            .await
            .unwrap_or_else(|e| panic!("DaemonSet {n} is gone: {e}"));
        out.push((
            ds.spec.map(|s| s.template).unwrap_or_default(),
            ds.metadata.generation,
        ));
    }
    out
}

async fn generation(dss: &Api<DaemonSet>, name: &str) -> Option<i64> {
    dss.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|d| d.metadata.generation)
}

#[tokio::test]
async fn cr_churn_leaves_the_daemonsets_alone_and_a_restart_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let client = cp.client().await.unwrap();
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "op-ds", &[]).await;
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("op-ds-crs").await;
    let dsns = install.namespace.clone();
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &dsns);
    let vss: Api<VirtualService> = Api::namespaced(client.clone(), &ns);
    let rss: Api<RealServer> = Api::namespaced(client.clone(), &ns);
    guard.node("lb1", &[("lvstun.io/balancer", "true")]).await;
    guard.node("lb2", &[("lvstun.io/balancer", "true")]).await;
    guard.node("web-node-1", &[("lvstun.io/web", "true")]).await;
    guard.node("web-node-2", &[]).await;
    guard.node("zone-b-node", &[("zone", "b")]).await;
    guard
        .node("other-node", &[("lvstun.io/balancer", "false")])
        .await;
    let mut op = install.start(&bin, "op-0");
    wait_leader(&op);
    assert_eq!(op.get("/healthz").map(|r| r.0), Some(200));
    let balancer = format!("{}-balancer", install.release);
    let web = format!("{}-web", install.release);

    // Both DaemonSets exist before any CR: the admin's labels place them (ADR 0007).
    let ds = until(
        &dss,
        &balancer,
        "the balancer DaemonSet, with no CR at all",
        |d| Some(d.clone()),
    )
    .await;
    assert_eq!(
        ds.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/managed-by"))
            .map(String::as_str),
        Some("lvstun-operator")
    );
    assert!(
        ds.metadata.owner_references.is_none(),
        "shared by all namespaces: no owner (ADR 0001)"
    );
    let pod = pod_spec(&ds);
    assert_eq!(
        pod.node_selector,
        Some(string_map(&[("lvstun.io/balancer", "true")])),
        "the chart's balancer.nodeSelector, passed as --balancer-node-selector"
    );
    assert!(
        pod.affinity.is_none(),
        "nothing derived from the CRs: {pod:?}"
    );
    assert!(
        pod.tolerations.is_none(),
        "the chart's default: no toleration of ours"
    );
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some(balancer.as_str()));
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some(arg_value(&install.args, "--node-image").as_str())
    );
    assert_eq!(
        c.image_pull_policy.as_deref(),
        Some(arg_value(&install.args, "--node-image-pull-policy").as_str())
    );
    assert_eq!(
        c.args,
        strings(&[
            "balancer",
            "--node-name=$(NODE_NAME)",
            "--health-port=9781",
            "--health-address=127.0.0.1",
            "--health-address=$(NODE_IP)",
            "--log-format=json",
            "--ipvs-sysctl-dir=/host/proc/sys/net/ipv4/vs",
            &format!("--daemonset={balancer}")
        ])
    );
    // ip_vs is loaded by an init container with no capability before the balancer container
    // mounts the node's /proc/sys/net/ipv4/vs (ADR 0005).
    let init = &pod.init_containers.as_ref().expect("an init container")[0];
    assert_eq!(init.args, strings(&["balancer", "prepare"]));
    assert_eq!(
        init.security_context
            .as_ref()
            .and_then(|s| s.capabilities.clone()),
        Some(Capabilities {
            add: None,
            drop: strings(&["ALL"])
        })
    );
    assert_eq!(
        c.env.as_ref().and_then(|e| e[0]
            .value_from
            .as_ref()?
            .field_ref
            .as_ref()
            .map(|f| f.field_path.clone())),
        Some("spec.nodeName".to_string())
    );
    let sc = c.security_context.as_ref().expect("a security context");
    assert_eq!(
        sc.capabilities,
        Some(Capabilities {
            add: strings(&["NET_ADMIN", "NET_RAW", "SYS_NICE"]),
            drop: strings(&["ALL"])
        })
    );
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        c.liveness_probe.as_ref().and_then(|p| p.http_get.clone()),
        Some(HTTPGetAction {
            host: Some("127.0.0.1".into()),
            path: Some("/healthz".into()),
            port: IntOrString::Int(9781),
            scheme: Some("HTTP".into()),
            http_headers: None,
        })
    );
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref()?.path.as_deref()),
        Some("/readyz")
    );
    assert!(
        pod.volumes.iter().flatten().any(|v| v
            .host_path
            .as_ref()
            .is_some_and(|h| h.path == "/run/lvstun")),
        "the daemons' record of what they changed must outlive the pod: {pod:?}"
    );
    let resources = c.resources.as_ref().expect("resources");
    assert!(
        resources
            .requests
            .as_ref()
            .is_some_and(|r| r.contains_key("memory"))
            && resources
                .limits
                .as_ref()
                .is_some_and(|l| l.contains_key("memory")),
        "{resources:?}"
    );

    let ds = until(&dss, &web, "the web DaemonSet, with no CR at all", |d| {
        Some(d.clone())
    })
    .await;
    assert_eq!(
        pod_spec(&ds).node_selector,
        Some(string_map(&[("lvstun.io/web", "true")]))
    );
    assert!(pod_spec(&ds).affinity.is_none());
    assert_eq!(
        pod_spec(&ds).containers[0].args,
        strings(&[
            "web",
            "--node-name=$(NODE_NAME)",
            "--health-port=9782",
            "--health-address=127.0.0.1",
            "--health-address=$(NODE_IP)",
            "--log-format=json",
            &format!("--daemonset={web}")
        ])
    );

    // kube-controller-manager's DaemonSet controller made Pods exactly on the labelled nodes
    // (Pending: no kubelet).
    wait_pods_on(&client, &dsns, "balancer", &["lb1", "lb2"]).await;
    wait_pods_on(&client, &dsns, "web", &["web-node-1"]).await;
    let names = [balancer.as_str(), web.as_str()];
    let before = templates(&dss, &names).await;

    // Churn: a VirtualService, its RealServers on a labelled and an unlabelled node.
    apply_examples(&client, &ns).await.unwrap();
    for (rs, n) in [("web1", "web-node-1"), ("web2", "web-node-2")] {
        set_node_name(&rss, rs, n).await;
    }
    wait_condition(&vss, "www", "Conflict", "False").await;
    // web-node-2 lacks the web label: no web daemon will report, and the RealServer says so.
    let web2 = until(
        &rss,
        "web2",
        "web2 to say its node runs no web daemon",
        |o| (o.reason("TunnelReady") == "NoWebDaemon").then(|| o.clone()),
    )
    .await;
    assert!(web2.has("TunnelReady", "Unknown"));
    let msg = web2.message("TunnelReady");
    assert!(
        msg.ends_with("fix: kubectl label node web-node-2 lvstun.io/web=true"),
        "{msg}"
    );
    wait_event(
        &client,
        &ns,
        "NoWebDaemon",
        "kubectl label node web-node-2 lvstun.io/web=true",
    )
    .await;
    let web1 = rss.get("web1").await.unwrap();
    assert_eq!(
        web1.condition("TunnelReady"),
        None,
        "web-node-1 runs a web daemon: TunnelReady is its to write"
    );

    // A second VirtualService with a new selector, whose only node lacks the balancer label.
    let mut zone_b = example_named("zone-b");
    zone_b.spec.vip = "192.0.2.150".into();
    zone_b.spec.balancers.virtual_router_id = 52;
    balancers_on(&mut zone_b, &[("zone", "b")]);
    apply(&vss, &zone_b).await.unwrap();
    let z = until(
        &vss,
        "zone-b",
        "zone-b to say no balancer daemon runs for it",
        |o| (o.reason("VIPActive") == "NoBalancerDaemon").then(|| o.clone()),
    )
    .await;
    let msg = z.message("VIPActive");
    assert!(
        msg.contains("selects zone-b-node without the label lvstun.io/balancer=true")
            && msg.ends_with("kubectl label node zone-b-node lvstun.io/balancer=true"),
        "{msg}"
    );
    wait_event(
        &client,
        &ns,
        "BalancerNodesUnlabelled",
        "kubectl label node zone-b-node lvstun.io/balancer=true",
    )
    .await;
    // A third one that turns Conflict (same VIP:port as www, newer).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut late = example_named("late");
    balancers_on(&mut late, &[("zone", "late")]);
    apply(&vss, &late).await.unwrap();
    wait_condition(&vss, "late", "Conflict", "True").await;
    // One deleted, and a RealServer moved to a new node.
    cluster::delete(&vss, "zone-b").await.unwrap();
    set_node_name(&rss, "web1", "other-node").await;
    until(
        &rss,
        "web1",
        "web1 to say other-node runs no web daemon",
        |o| {
            o.message("TunnelReady")
                .contains("other-node")
                .then_some(())
        },
    )
    .await;
    settle(&op);
    assert_eq!(
        templates(&dss, &names).await,
        before,
        "a CR change moved a DaemonSet's pod template or generation"
    );
    let m = op.metrics();
    for role in ["balancer", "web"] {
        assert_eq!(
            metric(
                &m,
                &format!(
                    "lvstun_operator_daemonset_changes_total{{role=\"{role}\",action=\"apply\"}}"
                )
            ),
            Some(1.0),
            "{role}: applied once, at start: {m}"
        );
    }
    println!(
        "CR churn: both DaemonSets' templates unchanged, generations {:?}",
        before.iter().map(|(_, g)| g).collect::<Vec<_>>()
    );

    // Restart: the new replica finds everything right and writes nothing.
    let before = (
        generation(&dss, &balancer).await,
        generation(&dss, &web).await,
    );
    let vs_version = vss.get("www").await.unwrap().metadata.resource_version;
    op.terminate();
    let op = install.start(&bin, "op-1");
    wait_leader(&op);
    wait_for(
        "the restarted operator to reconcile everything",
        LONG,
        || {
            let m = op.metrics();
            let n = |c: &str| {
                metric(
                    &m,
                    &format!("lvstun_operator_reconciles_total{{controller=\"{c}\"}}"),
                )
                .unwrap_or(0.0)
            };
            (n("daemonsets") >= 1.0 && n("virtualservice") >= 2.0 && n("realserver") >= 2.0)
                .then_some(())
        },
    );
    let writes = settle(&op);
    assert_eq!(
        writes, 0.0,
        "a restarted operator rewrote status that was already right"
    );
    assert_eq!(
        (
            generation(&dss, &balancer).await,
            generation(&dss, &web).await
        ),
        before,
        "DaemonSet generation moved on restart"
    );
    assert_eq!(
        vss.get("www").await.unwrap().metadata.resource_version,
        vs_version,
        "the VirtualService was written on restart"
    );
    println!("restart: DaemonSet generations {before:?} unchanged, 0 status writes");

    // Every CR gone: the DaemonSets stay as they are (deleting them on the last CR and
    // creating them on the next would be churn too).
    let kept = templates(&dss, &names).await;
    vss.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    rss.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    settle(&op);
    assert_eq!(
        templates(&dss, &names).await,
        kept,
        "deleting every CR changed a DaemonSet"
    );
    assert_eq!(
        (
            generation(&dss, &balancer).await,
            generation(&dss, &web).await
        ),
        before,
        "deleting every CR touched a DaemonSet"
    );
    assert_eq!(
        metric(
            &op.metrics(),
            "lvstun_operator_daemonset_changes_total{role=\"balancer\",action=\"delete\"}"
        )
        .unwrap_or(0.0),
        0.0
    );
    println!("every CR deleted: both DaemonSets still there, generations {before:?}");
}

#[tokio::test]
async fn a_second_virtual_service_on_the_same_vip_port_gets_conflict() {
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let client = cp.client().await.unwrap();
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "op-conflict", &[]).await;
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &install.namespace);
    let mut guard = Guard::new(cp);
    let (ns_a, ns_b) = (
        guard.namespace("op-conflict-a").await,
        guard.namespace("op-conflict-b").await,
    );
    let vss_a: Api<VirtualService> = Api::namespaced(client.clone(), &ns_a);
    let vss_b: Api<VirtualService> = Api::namespaced(client.clone(), &ns_b);
    guard.node("lb1", &[("lvstun.io/balancer", "true")]).await;
    guard.node("lb2", &[("lvstun.io/balancer", "true")]).await;
    guard.node("lb3", &[("team-b", "true")]).await;
    let op = install.start(&bin, "op-0");
    wait_leader(&op);
    let balancer = format!("{}-balancer", install.release);

    apply(&vss_a, &example_virtual_service().unwrap())
        .await
        .unwrap();
    wait_condition(&vss_a, "www", "Conflict", "False").await;
    // Creation times have one-second resolution; make the order unambiguous.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut second = example_named("www-b");
    balancers_on(&mut second, &[("team-b", "true")]);
    apply(&vss_b, &second).await.unwrap();
    let b = wait_condition(&vss_b, "www-b", "Conflict", "True").await;
    assert_eq!(b.reason("Conflict"), "VIPPortInUse");
    let msg = b.message("Conflict");
    assert!(
        msg.starts_with(&format!(
            "192.0.2.100:80/TCP is already served by VirtualService {ns_a}/www, which is older"
        )),
        "{msg}"
    );
    assert_eq!(b.reason("Ready"), "Conflict");
    wait_event(&client, &ns_b, "Conflict", &format!("{ns_a}/www")).await;
    println!("www-b: Conflict=True: {msg}");

    // The first keeps working: still the owner. The conflicting one is not judged further: its
    // node lb3, which lacks the balancer label, is not reported while it is in conflict.
    let a = vss_a.get("www").await.unwrap();
    assert!(a.has("Conflict", "False"));
    assert!(
        events(&client, &ns_b, "BalancerNodesUnlabelled")
            .await
            .is_empty()
    );

    // Bad input only the operator can see is reported on its object; nothing crashes.
    let mut bad = example_named("bad");
    bad.spec.real_server_selector = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app".into(),
            operator: "In".into(),
            values: Some(vec![]),
        }]),
        match_labels: None,
    };
    apply(&vss_a, &bad).await.unwrap();
    let bad = wait_condition(&vss_a, "bad", "Ready", "False").await;
    assert_eq!(bad.reason("Ready"), "InvalidSpec");
    let msg = bad.message("Ready");
    assert!(
        msg.contains("spec.realServerSelector.matchExpressions[0].values"),
        "{msg}"
    );
    assert!(bad.has("Conflict", "Unknown"));

    // When the owner goes, the newer one takes over and is placed.
    cluster::delete(&vss_a, "www").await.unwrap();
    wait_condition(&vss_b, "www-b", "Conflict", "False").await;
    wait_event(&client, &ns_b, "ConflictResolved", "192.0.2.100").await;
    // Its only node lb3 lacks the balancer label (the DaemonSet does not follow the CRs, ADR
    // 0007): it says so, with the label to add.
    let b = wait_condition(&vss_b, "www-b", "VIPActive", "False").await;
    assert_eq!(b.reason("VIPActive"), "NoBalancerDaemon");
    wait_event(
        &client,
        &ns_b,
        "BalancerNodesUnlabelled",
        "kubectl label node lb3 lvstun.io/balancer=true",
    )
    .await;
    let ds = dss.get(&balancer).await.unwrap();
    assert_eq!(
        pod_spec(&ds).node_selector,
        Some(string_map(&[("lvstun.io/balancer", "true")]))
    );
    assert!(op.is_leader(), "the operator must survive bad input");
}

/// An old time, for reports whose state has not changed in a long while.
const LONG_AGO: &str = "2026-01-01T00:00:00Z";

/// Now, as a daemon would stamp a state change.
fn just_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// What a balancer daemon writes: its own entry in the VirtualService's `status.balancers`.
async fn report_vrrp(client: &Client, ns: &str, node: &str, state: &str, since: &str) {
    let api: Api<VirtualService> = Api::namespaced(client.clone(), ns);
    let body = json!({
        "apiVersion": "lvstun.io/v1alpha1", "kind": "VirtualService",
        "status": {"balancers": [{"node": node, "state": state, "priority": 100, "lastTransitionTime": since}]}
    });
    api.patch_status(
        "www",
        &PatchParams::apply(&format!("lvstun-node-balancer-{node}")),
        &Patch::Apply(body),
    )
    .await
    .unwrap();
}

/// What a balancer daemon writes: its own check entry in a RealServer's `status.checks`.
async fn report_check(client: &Client, ns: &str, rs: &str, node: &str, healthy: bool) {
    let api: Api<RealServer> = Api::namespaced(client.clone(), ns);
    let body = json!({
        "apiVersion": "lvstun.io/v1alpha1", "kind": "RealServer",
        "status": {"checks": [{
            "balancer": node, "healthy": healthy, "consecutiveFailures": if healthy { 0 } else { 3 },
            "message": if healthy { "200 OK" } else { "GET /healthcheck.html: connection refused" }
        }]}
    });
    api.patch_status(
        rs,
        &PatchParams::apply(&format!("lvstun-node-balancer-{node}")),
        &Patch::Apply(body),
    )
    .await
    .unwrap();
}

/// What the web daemon on `node` writes: `TunnelReady` on a RealServer naming that node.
async fn report_tunnel(client: &Client, ns: &str, rs: &str, node: &str) {
    let api: Api<RealServer> = Api::namespaced(client.clone(), ns);
    let body = json!({
        "apiVersion": "lvstun.io/v1alpha1", "kind": "RealServer",
        "status": {"conditions": [{
            "type": "TunnelReady", "status": "True", "reason": "Ready",
            "message": "tunl0 up, VIP on lvstun0, arp_ignore=1", "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]}
    });
    api.patch_status(
        rs,
        &PatchParams::apply(&format!("lvstun-node-web/{node}")),
        &Patch::Apply(body),
    )
    .await
    .unwrap();
}

/// The table of `kubectl get <kind> [name]`: what users see is the fact under test here (the
/// CRDs' printer columns), so this is `kubectl` itself.
fn kubectl_table(cp: &ControlPlane, args: &[&str]) -> String {
    cp.run(
        &format!("kubectl get {}", args.join(" ")),
        cp.kubectl().arg("get").args(args),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The row of `kubectl get lvsvc www`, split on whitespace.
fn lvsvc_row(cp: &ControlPlane, ns: &str) -> (String, Vec<String>) {
    let table = kubectl_table(cp, &["lvsvc", "www", "-n", ns]);
    let row = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    (table, row)
}

/// `status.activeBalancer` and `status.healthySummary`: the ACTIVE and HEALTHY columns.
fn active_and_healthy(vs: &VirtualService) -> (Option<&str>, Option<&str>) {
    let s = vs.status.as_ref();
    (
        s.and_then(|s| s.active_balancer.as_deref()),
        s.and_then(|s| s.healthy_summary.as_deref()),
    )
}

#[tokio::test]
async fn daemon_reports_fold_into_conditions_and_printer_columns() {
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let client = cp.client().await.unwrap();
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "op-status", &[]).await;
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("op-status-crs").await;
    let vss: Api<VirtualService> = Api::namespaced(client.clone(), &ns);
    let rss: Api<RealServer> = Api::namespaced(client.clone(), &ns);
    guard.node("lb1", &[("lvstun.io/balancer", "true")]).await;
    guard.node("lb2", &[("lvstun.io/balancer", "true")]).await;
    // The node web1 moves to later: labelled, so a web daemon runs there (ADR 0007).
    guard.node("node-web1", &[("lvstun.io/web", "true")]).await;
    let op = install.start(&bin, "op-0");
    wait_leader(&op);
    apply_examples(&client, &ns).await.unwrap();
    wait_condition(&vss, "www", "Conflict", "False").await;

    // The daemons report: lb1 Master, lb2 Backup, both servers pass on both. The example
    // servers name no node: they are outside the cluster, no web daemon reports on them, and
    // the balancers' checks alone decide.
    report_vrrp(&client, &ns, "lb1", "Master", LONG_AGO).await;
    report_vrrp(&client, &ns, "lb2", "Backup", LONG_AGO).await;
    for rs in ["web1", "web2"] {
        for lb in ["lb1", "lb2"] {
            report_check(&client, &ns, rs, lb, true).await;
        }
    }
    let (table, _) = wait_for("kubectl get lvsvc: lb1, 2/2, True", LONG, || {
        let (table, row) = lvsvc_row(cp, &ns);
        (row.get(4..7) == Some(&["lb1".to_string(), "2/2".to_string(), "True".to_string()][..]))
            .then_some((table, row))
    });
    println!("{table}");
    let (_, row) = lvsvc_row(cp, &ns);
    assert_eq!(&row[..4], ["www", "192.0.2.100", "80", "mh"]);
    let vs = vss.get("www").await.unwrap();
    assert_eq!(vs.reason("Ready"), "Serving");
    assert_eq!(vs.message("VIPActive"), "lb1 holds VIP 192.0.2.100");
    assert!(vs.has("Degraded", "False"));
    let status = vs.status.as_ref().expect("status");
    assert_eq!(status.observed_generation, vs.metadata.generation);
    assert_eq!(status.healthy_real_servers, Some(2));
    assert_eq!(status.total_real_servers, Some(2));
    assert_eq!(
        status.balancers.len(),
        2,
        "the daemons' entries survive the operator's writes"
    );
    // NAME ADDRESS WEIGHT HEALTHY TUNNELREADY AGE: healthy, and TunnelReady Unknown (the
    // operator's word for a host outside the cluster).
    let rs_table = wait_for(
        "kubectl get lvsrs: Healthy True, TunnelReady Unknown",
        LONG,
        || {
            let t = kubectl_table(cp, &["lvsrs", "-n", &ns]);
            (t.lines()
                .skip(1)
                .filter(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.get(3..5) == Some(&["True", "Unknown"][..])
                })
                .count()
                == 2)
                .then_some(t)
        },
    );
    println!("{rs_table}");
    let web1 = rss.get("web1").await.unwrap();
    assert!(web1.has("TunnelReady", "Unknown"));
    assert_eq!(web1.reason("TunnelReady"), "OutsideCluster");
    let message = web1.message("TunnelReady");
    assert!(
        message.starts_with("no spec.nodeName: this host is outside the cluster"),
        "{message}"
    );
    wait_event(&client, &ns, "NewMaster", "lb1 now holds VIP 192.0.2.100").await;

    // Failover: lb1 dies (its entry still says Master: a dead daemon cannot say otherwise) and
    // lb2 takes the VIP at once; later the node controller marks lb1's node NotReady.
    report_vrrp(&client, &ns, "lb2", "Master", &just_now()).await;
    until(&vss, "www", "Active lb2", |vs| {
        (active_and_healthy(vs).0 == Some("lb2")).then_some(())
    })
    .await;
    wait_event(
        &client,
        &ns,
        "NewMaster",
        "lb2 now holds VIP 192.0.2.100 (before: lb1)",
    )
    .await;
    let vs = vss.get("www").await.unwrap();
    assert!(
        vs.message("VIPActive").contains("lb1 still reports Master"),
        "{vs:?}"
    );
    cluster::node_ready(&client, "lb1", false).await.unwrap();
    until(
        &vss,
        "www",
        "lb1's stale Master entry to be ignored",
        |vs| (vs.message("VIPActive") == "lb2 holds VIP 192.0.2.100").then_some(()),
    )
    .await;

    // web2 fails its health check on the active balancer: 1/2, Degraded, Healthy=False, ServerDown.
    report_check(&client, &ns, "web2", "lb2", false).await;
    until(&vss, "www", "Healthy 1/2", |vs| {
        (active_and_healthy(vs).1 == Some("1/2")).then_some(())
    })
    .await;
    let vs = wait_condition(&vss, "www", "Degraded", "True").await;
    assert_eq!(vs.reason("Degraded"), "RealServersUnhealthy");
    let msg = vs.message("Degraded");
    assert!(
        msg.contains("web2 (health check failed on lb2: GET /healthcheck.html: connection refused"),
        "{msg}"
    );
    let rs = wait_condition(&rss, "web2", "Healthy", "False").await;
    assert_eq!(rs.reason("Healthy"), "CheckFailed");
    assert_eq!(
        rs.reason("TunnelReady"),
        "OutsideCluster",
        "TunnelReady is not about health checks"
    );
    wait_event(&client, &ns, "ServerDown", "web2 (198.51.100.130) is down").await;
    report_check(&client, &ns, "web2", "lb2", true).await;
    wait_event(
        &client,
        &ns,
        "ServerUp",
        "web2 (198.51.100.130) is up again",
    )
    .await;
    wait_condition(&vss, "www", "Degraded", "False").await;

    // web1 becomes a cluster node: the operator releases its TunnelReady, and web1 serves only
    // once the web daemon on that node (simulated) says TunnelReady=True.
    set_node_name(&rss, "web1", "node-web1").await;
    until(
        &rss,
        "web1",
        "the operator to release web1's TunnelReady",
        |rs| rs.condition("TunnelReady").is_none().then_some(()),
    )
    .await;
    let vs = until(
        &vss,
        "www",
        "Healthy 1/2 until web1's web daemon reports",
        |vs| (vs.status.as_ref()?.healthy_real_servers == Some(1)).then(|| vs.clone()),
    )
    .await;
    let msg = vs.message("Degraded");
    assert!(
        msg.contains("web1 (its web daemon has not reported TunnelReady yet)"),
        "{msg}"
    );
    report_tunnel(&client, &ns, "web1", "node-web1").await;
    until(&vss, "www", "Healthy 2/2 with web1's tunnel ready", |vs| {
        (active_and_healthy(vs).1 == Some("2/2")).then_some(())
    })
    .await;

    // Split brain: lb1 comes back still believing it is Master, and both keep saying so for
    // longer than the grace (simulated by timestamps from long ago). Reported loudly.
    cluster::node_ready(&client, "lb1", true).await.unwrap();
    report_vrrp(&client, &ns, "lb2", "Master", LONG_AGO).await;
    let vs = until(&vss, "www", "VIPActive SplitBrain", |vs| {
        (vs.reason("VIPActive") == "SplitBrain").then(|| vs.clone())
    })
    .await;
    assert!(vs.has("Ready", "False"));
    let note = wait_event(
        &client,
        &ns,
        "SplitBrain",
        "lb1, lb2 all claim to be Master",
    )
    .await;
    println!("split brain event: {note}");
    let m = op.metrics();
    let series = format!("{{namespace=\"{ns}\",name=\"www\"}}");
    assert_eq!(
        metric(&m, &format!("lvstun_operator_master_changes_total{series}")),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, &format!("lvstun_operator_real_servers{series}")),
        Some(2.0),
        "{m}"
    );
}

/// What a balancer daemon writes when another program deleted services it had programmed
/// (`None`: nothing found recently, the field goes).
async fn report_deleted(client: &Client, ns: &str, node: &str, ports: Option<&[&str]>) {
    let api: Api<VirtualService> = Api::namespaced(client.clone(), ns);
    let mut entry =
        json!({"node": node, "state": "Master", "priority": 100, "lastTransitionTime": LONG_AGO});
    if let Some(ports) = ports {
        entry["deletedExternally"] = json!({"ports": ports, "count": 4, "lastTime": just_now()});
    }
    let body = json!({
        "apiVersion": "lvstun.io/v1alpha1", "kind": "VirtualService",
        "status": {"balancers": [entry]}
    });
    api.patch_status(
        "www",
        &PatchParams::apply(&format!("lvstun-node-balancer-{node}")),
        &Patch::Apply(body),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn neighbours_a_real_server_on_a_balancer_node_and_deleted_ipvs_services_are_said() {
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let client = cp.client().await.unwrap();
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "op-neigh", &[]).await;
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("op-neigh-crs").await;
    let vss: Api<VirtualService> = Api::namespaced(client.clone(), &ns);
    let rss: Api<RealServer> = Api::namespaced(client.clone(), &ns);
    guard.node("lb1", &[("lvstun.io/balancer", "true")]).await;
    // lb2 is a balancer node and also where web2 runs (both labels).
    guard
        .node(
            "lb2",
            &[("lvstun.io/balancer", "true"), ("lvstun.io/web", "true")],
        )
        .await;
    let op = install.start(&bin, "op-0");
    wait_leader(&op);
    apply_examples(&client, &ns).await.unwrap();
    wait_condition(&vss, "www", "Conflict", "False").await;
    report_vrrp(&client, &ns, "lb1", "Master", LONG_AGO).await;
    for lb in ["lb1", "lb2"] {
        report_check(&client, &ns, "web1", lb, true).await;
    }

    // web2 moves onto lb2: the operator leaves it out of www and says why, on both objects.
    set_node_name(&rss, "web2", "lb2").await;
    let excluded = vec![ExcludedRealServer {
        name: "web2".into(),
        node: Some("lb2".into()),
        reason: "NodeIsBalancer".into(),
    }];
    let vs = until(&vss, "www", "web2 in status.excludedRealServers", |vs| {
        (vs.status.as_ref()?.excluded_real_servers == excluded).then(|| vs.clone())
    })
    .await;
    assert!(vs.has("Degraded", "True"));
    assert_eq!(vs.reason("Degraded"), "RealServerOnBalancer");
    let msg = vs.message("Degraded");
    assert!(msg.contains("RealServer web2 is on node lb2"), "{msg}");
    println!("www: Degraded=True RealServerOnBalancer: {msg}");
    wait_event(
        &client,
        &ns,
        "RealServerOnBalancer",
        "RealServer web2 is on node lb2",
    )
    .await;
    let rs = until(&rss, "web2", "web2 Healthy=Unknown NodeIsBalancer", |rs| {
        (rs.reason("Healthy") == "NodeIsBalancer").then(|| rs.clone())
    })
    .await;
    assert!(rs.has("Healthy", "Unknown"));

    // lb2 stops being a balancer node: web2 is no longer left out.
    merge(
        &Api::<Node>::all(client.clone()),
        "lb2",
        json!({"metadata": {"labels": {"lvstun.io/balancer": null}}}),
    )
    .await
    .unwrap();
    until(&vss, "www", "excludedRealServers to empty", |vs| {
        vs.status
            .as_ref()
            .is_none_or(|s| s.excluded_real_servers.is_empty())
            .then_some(())
    })
    .await;
    until(
        &rss,
        "web2",
        "web2 Healthy no longer NodeIsBalancer",
        |rs| (rs.condition("Healthy")?.reason != "NodeIsBalancer").then_some(()),
    )
    .await;
    // web2 has no web daemon reporting in this test: take it away for what follows.
    cluster::delete(&rss, "web2").await.unwrap();

    // lb1 reports that another program (kube-proxy in IPVS mode) deleted its service.
    report_deleted(&client, &ns, "lb1", Some(&["80/TCP"])).await;
    let vs = until(&vss, "www", "Degraded IPVSServiceDeletedExternally", |vs| {
        (vs.reason("Degraded") == "IPVSServiceDeletedExternally").then(|| vs.clone())
    })
    .await;
    assert!(vs.has("Degraded", "True"));
    let msg = vs.message("Degraded");
    assert!(
        msg.contains("ipvs.excludeCIDRs: [192.0.2.100/32]")
            && msg.contains("--ipvs-exclude-cidrs=192.0.2.100/32"),
        "{msg}"
    );
    assert!(vs.has("Ready", "True"), "it is added again");
    println!("www: Degraded=True IPVSServiceDeletedExternally: {msg}");
    wait_event(
        &client,
        &ns,
        "IPVSServiceDeletedExternally",
        "lb1 found the IPVS service",
    )
    .await;
    // The balancer stops reporting it (a window after the last deletion): the condition clears.
    report_deleted(&client, &ns, "lb1", None).await;
    wait_condition(&vss, "www", "Degraded", "False").await;
    assert!(op.is_leader());
}

#[tokio::test]
async fn a_standby_takes_over_within_15_seconds_of_the_leader_dying() {
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let client = cp.client().await.unwrap();
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "op-lease", &["replicas=2"]).await;
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("op-lease-crs").await;
    let vss: Api<VirtualService> = Api::namespaced(client.clone(), &ns);
    let a = install.start(&bin, "op-a");
    let b = install.start(&bin, "op-b");
    let (mut leader, mut standby) = wait_for("one leader", LONG, || {
        if a.is_leader() {
            Some((a.name.clone(), b.name.clone()))
        } else if b.is_leader() {
            Some((b.name.clone(), a.name.clone()))
        } else {
            None
        }
    });
    let mut ops = [a, b];
    let pick = |ops: &[Operator; 2], name: &str| ops.iter().position(|o| o.name == name).unwrap();
    let (li, si) = (pick(&ops, &leader), pick(&ops, &standby));
    assert!(!ops[si].is_leader(), "two leaders");
    // The standby is healthy and ready too (so rolling updates proceed), and serves metrics.
    assert_eq!(ops[si].get("/readyz").map(|r| r.0), Some(200));
    assert_eq!(ops[si].get("/healthz").map(|r| r.0), Some(200));
    assert_eq!(
        metric(&ops[si].metrics(), "lvstun_operator_leader"),
        Some(0.0)
    );
    apply(&vss, &example_virtual_service().unwrap())
        .await
        .unwrap();
    wait_condition(&vss, "www", "Conflict", "False").await;

    // SIGKILL: the leader cannot release the lease; the standby must wait for it to expire.
    ops[li].kill();
    let died = Instant::now();
    let mut second = example_named("www2");
    second.spec.vip = "192.0.2.101".into();
    // Another VIP on the same balancer nodes needs its own VRID (else VRIDInUse).
    second.spec.balancers.virtual_router_id = 52;
    apply(&vss, &second).await.unwrap();
    wait_for("the standby to lead", Duration::from_secs(30), || {
        ops[si].is_leader().then_some(())
    });
    let acquired = died.elapsed();
    wait_condition(&vss, "www2", "Conflict", "False").await;
    let reconciled = died.elapsed();
    println!(
        "handover after SIGKILL of {leader}: {standby} acquired the lease after {:.1} s, reconciled a new VirtualService after {:.1} s",
        acquired.as_secs_f64(),
        reconciled.as_secs_f64()
    );
    assert!(
        reconciled < Duration::from_secs(15),
        "handover took {reconciled:?}"
    );

    // A clean shutdown (SIGTERM, as on a rolling update) releases the lease; the standby takes it
    // when it next looks (at the latest when the lease it last saw would have expired).
    std::mem::swap(&mut leader, &mut standby);
    let restarted = install.start(&bin, &standby);
    ops[li] = restarted;
    assert!(!ops[li].is_leader());
    ops[si].terminate();
    let stopped = Instant::now();
    wait_for(
        "the restarted replica to lead",
        Duration::from_secs(30),
        || ops[li].is_leader().then_some(()),
    );
    let took = stopped.elapsed();
    println!(
        "handover after SIGTERM of {leader}: {standby} leads after {:.1} s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(15), "handover took {took:?}");
}

/// A status write that meets a deleted object is no reconcile error (issue 16): the operator's
/// own write functions, against the real API server, write a live object's status and report a
/// deleted one as gone (`None`) instead of failing, so the reconcile that raced the deletion
/// neither publishes a Warning nor retries.
#[tokio::test]
async fn a_status_write_that_meets_a_deleted_object_reports_it_gone() {
    use lvstun_crds::v1alpha1::{RealServerStatus, VirtualServiceStatus};
    use lvstun_operator::apply as write;
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let client = cp.client().await.unwrap();
    let _install = Install::new(cp, "op-gone", &[]).await;
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("op-gone-objects").await;
    let vss: Api<VirtualService> = Api::namespaced(client.clone(), &ns);
    let rss: Api<RealServer> = Api::namespaced(client.clone(), &ns);
    apply(&vss, &example_virtual_service().unwrap())
        .await
        .unwrap();
    let rs = cluster::example::<RealServer>("realservers.yaml")
        .unwrap()
        .remove(0);
    apply(&rss, &rs).await.unwrap();
    let (vs, rs) = (
        vss.get("www").await.unwrap(),
        rss.get(&rs.name_any()).await.unwrap(),
    );
    let vs_status = VirtualServiceStatus {
        observed_generation: Some(1),
        ..Default::default()
    };
    let rs_status = RealServerStatus {
        observed_generation: Some(1),
        ..Default::default()
    };

    let live_vs = write::virtual_service_status(&client, &vs, &vs_status).await;
    let live_rs = write::real_server_status(&client, &rs, &rs_status).await;
    assert!(
        matches!(&live_vs, Ok(Some(v)) if v.status.as_ref().and_then(|s| s.observed_generation) == Some(1)),
        "a live VirtualService's status is written: {live_vs:?}"
    );
    assert!(
        matches!(&live_rs, Ok(Some(_))),
        "a live RealServer's status is written: {live_rs:?}"
    );

    vss.delete("www", &DeleteParams::default()).await.unwrap();
    rss.delete(&rs.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let gone_vs = write::virtual_service_status(&client, &vs, &vs_status).await;
    let gone_rs = write::real_server_status(&client, &rs, &rs_status).await;
    assert!(
        matches!(gone_vs, Ok(None)),
        "a deleted VirtualService is reported gone, not failed: {gone_vs:?}"
    );
    assert!(
        matches!(gone_rs, Ok(None)),
        "a deleted RealServer is reported gone, not failed: {gone_rs:?}"
    );
}
