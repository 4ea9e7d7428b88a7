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

use lvstun_tests::controlplane::{ControlPlane, repo_root};
use lvstun_tests::operator_fixture::{Guard, Install, get_json, operator_binary, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// Names of the live Pods in `ns` matching `selector`.
fn pods(cp: &ControlPlane, ns: &str, selector: &str) -> Vec<String> {
    let list = get_json(cp, &["pods", "-l", selector], ns).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Messages of the core/v1 Events in `ns` with this reason about the object named `about` (the
/// DaemonSet controller records through the core/v1 Events API: `involvedObject`, `message`).
fn event_messages(cp: &ControlPlane, ns: &str, reason: &str, about: &str) -> Vec<String> {
    let list = get_json(cp, &["events"], ns).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|e| e["reason"] == reason && e["involvedObject"]["name"] == about)
                .filter_map(|e| e["message"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    cp.run(
        &format!("kubectl {}", args.join(" ")),
        cp.kubectl().args(args),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn daemonset_pods_are_refused_under_baseline_and_created_under_privileged() {
    let cp = ControlPlane::shared().unwrap();
    let bin = operator_binary(false).unwrap();
    let install = Install::into_labelled_namespace(cp, "psa", &[], &[(ENFORCE, "baseline")]);
    let dsns = install.namespace.clone();
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("psa-crs");
    guard.node("psa-lb1", &[("lvstun.io/balancer", "true")]);

    // The operator itself asks for nothing baseline refuses: its Deployment's pods are created.
    let operator_pods = wait_for("the operator's pods under baseline", LONG, || {
        let p = pods(cp, &dsns, "app.kubernetes.io/name=lvstun");
        (p.len() == 2).then_some(p)
    });
    eprintln!("[podsecurity] operator pods admitted under baseline: {operator_pods:?}");

    let op = install.start(&bin, "op-0");
    wait_for("the operator to lead", LONG, || {
        op.is_leader().then_some(())
    });
    let vs =
        std::fs::read_to_string(repo_root().join("deploy/examples/virtualservice.yaml")).unwrap();
    let out = cp.kubectl_apply_stdin(&vs, &ns).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The operator keeps the balancer DaemonSet whatever the CRs say; psa-lb1 carries the
    // chart's balancer label, so the DaemonSet controller tries to put a pod there (ADR 0007).
    let balancer = format!("{}-balancer", install.release);
    let ds = wait_for("the balancer DaemonSet", LONG, || {
        get_json(cp, &["daemonset", &balancer], &dsns)
    });
    assert_eq!(ds["spec"]["template"]["spec"]["hostNetwork"], true);

    // Under baseline the DaemonSet controller's pod creations are refused, and it says why.
    let refused = wait_for(
        "a FailedCreate event on the balancer DaemonSet",
        LONG,
        || {
            event_messages(cp, &dsns, "FailedCreate", &balancer)
                .into_iter()
                .find(|m| m.contains("PodSecurity"))
        },
    );
    eprintln!("[podsecurity] refusal: {refused}");
    assert!(
        refused.contains(r#"violates PodSecurity "baseline:latest""#),
        "{refused}"
    );
    assert!(refused.contains("hostNetwork=true"), "{refused}");
    assert!(refused.contains("hostPath volumes"), "{refused}");
    let selector = "app.kubernetes.io/name=lvstun-node,app.kubernetes.io/component=balancer";
    assert_eq!(
        pods(cp, &dsns, selector),
        Vec::<String>::new(),
        "no balancer pod admitted under baseline"
    );

    // The fix the docs give: label the namespace privileged. The DaemonSet controller retries
    // (with its back-off) and the pod is created.
    kubectl(
        cp,
        &[
            "label",
            "namespace",
            &dsns,
            &format!("{ENFORCE}=privileged"),
            "--overwrite",
        ],
    );
    let created = wait_for("the balancer pod under privileged", LONG, || {
        let p = pods(cp, &dsns, selector);
        (!p.is_empty()).then_some(p)
    });
    eprintln!("[podsecurity] created under privileged: {created:?}");
    assert_eq!(created.len(), 1, "one balancer node, one pod: {created:?}");
    let pod = get_json(cp, &["pod", &created[0]], &dsns).unwrap();
    assert_eq!(pod["spec"]["hostNetwork"], true);
    assert_eq!(
        pod["status"]["phase"], "Pending",
        "no kubelet runs here: admitted, never started"
    );
}
