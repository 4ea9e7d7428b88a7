//! Pod Security Admission and the DaemonSets the operator builds, against the local control plane
//! (kube-apiserver's built-in PodSecurity admission, kube-controller-manager's DaemonSet
//! controller).
//!
//! The balancer and web pods use host networking and hostPath volumes, which only the
//! `privileged` Pod Security level admits; hardened clusters default namespaces to `baseline` or
//! `restricted`. It proves: installed with the chart into a namespace labelled
//! `pod-security.kubernetes.io/enforce=baseline`, the operator's own pods are admitted, but the
//! DaemonSet controller's pod creations for the balancer DaemonSet are refused, and the refusal
//! is a `FailedCreate` Event on the DaemonSet naming PodSecurity and hostNetwork (the message
//! `docs/troubleshooting.md` explains); labelled `privileged` (what
//! `deploy/manifests/namespace.yaml` carries and the install steps tell helm users to do), the
//! DaemonSet controller creates the pods. They stay Pending: there is no kubelet here, and the
//! Pod objects existing is what admission decides.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns panic on purpose

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::ListParams;
use kube::{Api, Client};
use lvstun_crds::v1alpha1::VirtualService;
use lvstun_tests::cluster::{
    self, apply, await_object, example_virtual_service, live_names, merge,
};
use lvstun_tests::controlplane::ControlPlane;
use lvstun_tests::operator_fixture::{Guard, Install, operator_binary, wait_for};
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// Await live Pods in `ns` matching `selector` until `decide` accepts their names.
async fn wait_pods<T>(
    pods: &Api<Pod>,
    selector: &str,
    what: &str,
    decide: impl FnMut(&Vec<String>) -> Option<T>,
) -> T {
    cluster::poll(
        what,
        LONG,
        || async { live_names(pods, selector).await.unwrap_or_default() },
        decide,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Messages of the core/v1 Events in `ns` with this reason about the object named `about` (the
/// DaemonSet controller records through the core/v1 Events API: `involvedObject`, `message`).
async fn event_messages(client: &Client, ns: &str, reason: &str, about: &str) -> Vec<String> {
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason) && e.involved_object.name.as_deref() == Some(about)
        })
        .filter_map(|e| e.message)
        .collect()
}

#[tokio::test]
async fn daemonset_pods_are_refused_under_baseline_and_created_under_privileged() {
    let cp = ControlPlane::shared().unwrap();
    let client = cp.client().await.unwrap();
    let bin = operator_binary(false).unwrap();
    let install = Install::into_labelled_namespace(cp, "psa", &[], &[(ENFORCE, "baseline")]).await;
    let dsns = install.namespace.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &dsns);
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("psa-crs").await;
    guard
        .node("psa-lb1", &[("lvstun.io/balancer", "true")])
        .await;

    // The operator itself asks for nothing baseline refuses: its Deployment's pods are created.
    let operator_pods = wait_pods(
        &pods,
        "app.kubernetes.io/name=lvstun",
        "the operator's pods under baseline",
        |p| (p.len() == 2).then(|| p.clone()),
    )
    .await;
    eprintln!("[podsecurity] operator pods admitted under baseline: {operator_pods:?}");

    let op = install.start(&bin, "op-0");
    wait_for("the operator to lead", LONG, || {
        op.is_leader().then_some(())
    });
    apply(
        &Api::<VirtualService>::namespaced(client.clone(), &ns),
        &example_virtual_service().unwrap(),
    )
    .await
    .unwrap();

    // The operator keeps the balancer DaemonSet whatever the CRs say; psa-lb1 carries the
    // chart's balancer label, so the DaemonSet controller tries to put a pod there (ADR 0007).
    let balancer = format!("{}-balancer", install.release);
    let ds = await_object(
        &Api::<DaemonSet>::namespaced(client.clone(), &dsns),
        &balancer,
        "the balancer DaemonSet",
        LONG,
        |d| Some(d.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        ds.spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.host_network),
        Some(true)
    );

    // Under baseline the DaemonSet controller's pod creations are refused, and it says why.
    let refused = cluster::poll(
        "a FailedCreate event on the balancer DaemonSet",
        LONG,
        || event_messages(&client, &dsns, "FailedCreate", &balancer),
        |seen| seen.iter().find(|m| m.contains("PodSecurity")).cloned(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[podsecurity] refusal: {refused}");
    assert!(
        refused.contains(r#"violates PodSecurity "baseline:latest""#),
        "{refused}"
    );
    assert!(refused.contains("hostNetwork=true"), "{refused}");
    assert!(refused.contains("hostPath volumes"), "{refused}");
    let selector = "app.kubernetes.io/name=lvstun-node,app.kubernetes.io/component=balancer";
    assert_eq!(
        live_names(&pods, selector).await.unwrap(),
        Vec::<String>::new(),
        "no balancer pod admitted under baseline"
    );

    // The fix the docs give: label the namespace privileged. The DaemonSet controller retries
    // (with its back-off) and the pod is created.
    merge(
        &Api::<Namespace>::all(client.clone()),
        &dsns,
        json!({"metadata": {"labels": {ENFORCE: "privileged"}}}),
    )
    .await
    .unwrap();
    let created = wait_pods(&pods, selector, "the balancer pod under privileged", |p| {
        (!p.is_empty()).then(|| p.clone())
    })
    .await;
    eprintln!("[podsecurity] created under privileged: {created:?}");
    assert_eq!(created.len(), 1, "one balancer node, one pod: {created:?}");
    let pod = pods.get(&created[0]).await.unwrap();
    assert_eq!(pod.spec.and_then(|s| s.host_network), Some(true));
    assert_eq!(
        pod.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "no kubelet runs here: admitted, never started"
    );
}
