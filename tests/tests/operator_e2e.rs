//! The operator binary against a real control plane (kube-apiserver, etcd,
//! kube-controller-manager), installed with the chart and running as its own ServiceAccount with
//! the chart's exact arguments: RBAC, DaemonSets and their Pods (placed by the chart's labels,
//! untouched by CR churn), conflicts, status folding from simulated daemon reports, leader
//! handover, and a restart that changes nothing.
//!
//! The operator watches every namespace, so two operators in one control plane would see each
//! other's objects; the tests in this file therefore run one at a time (a lock), each with its
//! own release, namespaces and VIPs, and clean up after themselves. Other test files run in
//! their own control plane.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns panic on purpose

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use lvstun_crds::v1alpha1::{RealServer, VirtualService};
use lvstun_tests::controlplane::{ControlPlane, repo_root};
use lvstun_tests::operator_fixture::{
    Guard, Install, Operator, get_json, metric, node_ready, operator_binary, wait_for,
};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LONG: Duration = Duration::from_secs(90);

fn cp() -> &'static ControlPlane {
    ControlPlane::shared().unwrap()
}

fn apply(cp: &ControlPlane, yaml: &str, ns: &str) {
    let out = cp.kubectl_apply_stdin(yaml, ns).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn example(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("deploy/examples").join(file)).unwrap()
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    cp.run(
        &format!("kubectl {}", args.join(" ")),
        cp.kubectl().args(args),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Points RealServer `rs` at cluster node `node` (`spec.nodeName`).
fn set_node_name(cp: &ControlPlane, ns: &str, rs: &str, node: &str) {
    let patch = format!(r#"{{"spec":{{"nodeName":"{node}"}}}}"#);
    kubectl(
        cp,
        &["patch", "lvsrs", rs, "-n", ns, "--type=merge", "-p", &patch],
    );
}

fn wait_leader(op: &Operator) {
    wait_for(&format!("{} to lead", op.name), LONG, || {
        op.is_leader().then_some(())
    });
}

fn condition(obj: &Value, type_: &str) -> Option<(String, String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// Wait until a condition of an object has this status; return the object.
fn wait_condition(cp: &ControlPlane, what: &[&str], ns: &str, type_: &str, status: &str) -> Value {
    wait_for(
        &format!("{what:?} in {ns} to have {type_}={status}"),
        LONG,
        || {
            let obj = get_json(cp, what, ns)?;
            (condition(&obj, type_)?.0 == status).then_some(obj)
        },
    )
}

/// Events (events.k8s.io) in a namespace with this reason, as (regarding name, note).
fn events(cp: &ControlPlane, ns: &str, reason: &str) -> Vec<(String, String)> {
    let list = get_json(cp, &["events.events.k8s.io"], ns).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|e| e["reason"] == reason)
                .map(|e| {
                    (
                        e["regarding"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        e["note"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn wait_event(cp: &ControlPlane, ns: &str, reason: &str, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let seen = events(cp, ns, reason);
        if let Some((_, note)) = seen.iter().find(|(_, n)| n.contains(needle)) {
            return note.clone();
        }
        assert!(
            start.elapsed() < LONG,
            "no {reason} event containing {needle:?} in {ns} after {LONG:?}; {reason} events: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn pod_spec(ds: &Value) -> &Value {
    &ds["spec"]["template"]["spec"]
}

/// The nodes the DaemonSet controller made Pods for (each Pod carries a matchFields term naming
/// its node, which a scheduler would honour).
fn pod_nodes(cp: &ControlPlane, ns: &str, component: &str) -> BTreeSet<String> {
    let pods = get_json(
        cp,
        &[
            "pods",
            "-l",
            &format!("app.kubernetes.io/component={component},app.kubernetes.io/name=lvstun-node"),
        ],
        ns,
    )
    .unwrap_or(Value::Null);
    pods["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter_map(|p| {
                    let terms = p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                        ["nodeSelectorTerms"]
                        .as_array()?;
                    terms
                        .iter()
                        .find_map(|t| t["matchFields"][0]["values"][0].as_str().map(String::from))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn set<const N: usize>(names: [&str; N]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn arg_value(args: &[String], flag: &str) -> String {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
        .unwrap_or_default()
        .to_string()
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

#[tokio::test]
async fn rbac_is_enough_and_no_more() {
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let install = Install::new(cp, "op-rbac", &[]);
    let sa = install.service_account();
    let ns = install.namespace.as_str();
    let can = |verb: &str, resource: &str, namespace: Option<&str>| -> bool {
        let mut cmd = cp.kubectl();
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        cmd.args(["auth", "can-i", verb, resource, &format!("--as={sa}")]);
        if !sub.is_empty() {
            cmd.arg(format!("--subresource={sub}"));
        }
        match namespace {
            Some(n) => cmd.args(["-n", n]),
            None => cmd.arg("--all-namespaces"),
        };
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
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
            can(verb, resource, namespace),
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
        ("update", "virtualservices.lvstun.io", None),
        ("delete", "realservers.lvstun.io", None),
        ("patch", "nodes", None),
        ("*", "*", None),
    ] {
        assert!(
            !can(verb, resource, namespace),
            "the operator must not {verb} {resource} in {namespace:?}"
        );
    }
    println!("RBAC of {sa}: everything needed, no secrets, no pods/exec, DaemonSets only in {ns}");
}

/// The pod templates of both DaemonSets, and their generations: what must not move with the CRs.
fn templates(cp: &ControlPlane, dsns: &str, names: &[&str]) -> Vec<(Value, Value)> {
    names
        .iter()
        .map(|n| {
            let ds = get_json(cp, &["daemonset", n], dsns)
                .unwrap_or_else(|| panic!("DaemonSet {n} is gone"));
            (
                ds["spec"]["template"].clone(),
                ds["metadata"]["generation"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn cr_churn_leaves_the_daemonsets_alone_and_a_restart_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "op-ds", &[]);
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("op-ds-crs");
    let dsns = install.namespace.clone();
    guard.node("lb1", &[("lvstun.io/balancer", "true")]);
    guard.node("lb2", &[("lvstun.io/balancer", "true")]);
    guard.node("web-node-1", &[("lvstun.io/web", "true")]);
    guard.node("web-node-2", &[]);
    guard.node("zone-b-node", &[("zone", "b")]);
    guard.node("other-node", &[("lvstun.io/balancer", "false")]);
    let mut op = install.start(&bin, "op-0");
    wait_leader(&op);
    assert_eq!(op.get("/healthz").map(|r| r.0), Some(200));
    let balancer = format!("{}-balancer", install.release);
    let web = format!("{}-web", install.release);

    // Both DaemonSets exist before any CR: the admin's labels place them (ADR 0007).
    let ds = wait_for("the balancer DaemonSet, with no CR at all", LONG, || {
        get_json(cp, &["daemonset", &balancer], &dsns)
    });
    assert_eq!(
        ds["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "lvstun-operator"
    );
    assert!(
        ds["metadata"]["ownerReferences"].is_null(),
        "shared by all namespaces: no owner (ADR 0001)"
    );
    let pod = pod_spec(&ds);
    assert_eq!(
        pod["nodeSelector"],
        json!({"lvstun.io/balancer": "true"}),
        "the chart's balancer.nodeSelector, passed as --balancer-node-selector"
    );
    assert!(
        pod["affinity"].is_null(),
        "nothing derived from the CRs: {pod}"
    );
    assert!(
        pod["tolerations"].is_null(),
        "the chart's default: no toleration of ours"
    );
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["serviceAccountName"], balancer.as_str());
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"],
        arg_value(&install.args, "--node-image").as_str()
    );
    assert_eq!(
        c["imagePullPolicy"],
        arg_value(&install.args, "--node-image-pull-policy").as_str()
    );
    assert_eq!(
        c["args"],
        json!([
            "balancer",
            "--node-name=$(NODE_NAME)",
            "--health-port=9781",
            "--log-format=json",
            "--ipvs-sysctl-dir=/host/proc/sys/net/ipv4/vs",
            format!("--daemonset={balancer}")
        ])
    );
    // ip_vs is loaded by an init container with no capability before the balancer container
    // mounts the node's /proc/sys/net/ipv4/vs (ADR 0005).
    assert_eq!(
        pod["initContainers"][0]["args"],
        json!(["balancer", "prepare"])
    );
    assert_eq!(
        pod["initContainers"][0]["securityContext"]["capabilities"],
        json!({"drop": ["ALL"]})
    );
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let sc = &c["securityContext"];
    assert_eq!(
        sc["capabilities"],
        json!({"add": ["NET_ADMIN", "NET_RAW", "SYS_NICE"], "drop": ["ALL"]})
    );
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"host": "127.0.0.1", "path": "/healthz", "port": 9781, "scheme": "HTTP"})
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["hostPath"]["path"] == "/run/lvstun"),
        "the daemons' record of what they changed must outlive the pod: {pod}"
    );
    assert!(
        c["resources"]["requests"]["memory"].is_string()
            && c["resources"]["limits"]["memory"].is_string()
    );

    let ds = wait_for("the web DaemonSet, with no CR at all", LONG, || {
        get_json(cp, &["daemonset", &web], &dsns)
    });
    assert_eq!(
        pod_spec(&ds)["nodeSelector"],
        json!({"lvstun.io/web": "true"})
    );
    assert!(pod_spec(&ds)["affinity"].is_null());
    assert_eq!(
        pod_spec(&ds)["containers"][0]["args"],
        json!([
            "web",
            "--node-name=$(NODE_NAME)",
            "--health-port=9782",
            "--log-format=json",
            format!("--daemonset={web}")
        ])
    );

    // kube-controller-manager's DaemonSet controller made Pods exactly on the labelled nodes
    // (Pending: no kubelet).
    wait_for("balancer pods on lb1 and lb2", LONG, || {
        (pod_nodes(cp, &dsns, "balancer") == set(["lb1", "lb2"])).then_some(())
    });
    wait_for("a web pod on web-node-1", LONG, || {
        (pod_nodes(cp, &dsns, "web") == set(["web-node-1"])).then_some(())
    });
    let names = [balancer.as_str(), web.as_str()];
    let before = templates(cp, &dsns, &names);

    // Churn: a VirtualService, its RealServers on a labelled and an unlabelled node.
    apply(cp, &example("virtualservice.yaml"), &ns);
    apply(cp, &example("realservers.yaml"), &ns);
    for (rs, n) in [("web1", "web-node-1"), ("web2", "web-node-2")] {
        kubectl(
            cp,
            &[
                "patch",
                "lvsrs",
                rs,
                "-n",
                &ns,
                "--type=merge",
                "-p",
                &format!(r#"{{"spec":{{"nodeName":"{n}"}}}}"#),
            ],
        );
    }
    wait_condition(cp, &["lvsvc", "www"], &ns, "Conflict", "False");
    // web-node-2 lacks the web label: no web daemon will report, and the RealServer says so.
    let web2 = wait_for("web2 to say its node runs no web daemon", LONG, || {
        let o = get_json(cp, &["lvsrs", "web2"], &ns)?;
        (condition(&o, "TunnelReady")?.1 == "NoWebDaemon").then_some(o)
    });
    let (status, _, msg) = condition(&web2, "TunnelReady").unwrap();
    assert_eq!(status, "Unknown");
    assert!(
        msg.ends_with("fix: kubectl label node web-node-2 lvstun.io/web=true"),
        "{msg}"
    );
    wait_event(
        cp,
        &ns,
        "NoWebDaemon",
        "kubectl label node web-node-2 lvstun.io/web=true",
    );
    let web1 = get_json(cp, &["lvsrs", "web1"], &ns).unwrap();
    assert_eq!(
        condition(&web1, "TunnelReady"),
        None,
        "web-node-1 runs a web daemon: TunnelReady is its to write"
    );

    // A second VirtualService with a new selector, whose only node lacks the balancer label.
    let zone_b = example("virtualservice.yaml")
        .replace("name: www", "name: zone-b")
        .replace("192.0.2.100", "192.0.2.150")
        .replace("virtualRouterID: 51", "virtualRouterID: 52")
        .replace("lvstun.io/balancer: \"true\"", "zone: b");
    apply(cp, &zone_b, &ns);
    let z = wait_for("zone-b to say no balancer daemon runs for it", LONG, || {
        let o = get_json(cp, &["lvsvc", "zone-b"], &ns)?;
        (condition(&o, "VIPActive")?.1 == "NoBalancerDaemon").then_some(o)
    });
    let (_, _, msg) = condition(&z, "VIPActive").unwrap();
    assert!(
        msg.contains("selects zone-b-node without the label lvstun.io/balancer=true")
            && msg.ends_with("kubectl label node zone-b-node lvstun.io/balancer=true"),
        "{msg}"
    );
    wait_event(
        cp,
        &ns,
        "BalancerNodesUnlabelled",
        "kubectl label node zone-b-node lvstun.io/balancer=true",
    );
    // A third one that turns Conflict (same VIP:port as www, newer).
    std::thread::sleep(Duration::from_millis(1100));
    let late = example("virtualservice.yaml")
        .replace("name: www", "name: late")
        .replace("lvstun.io/balancer: \"true\"", "zone: late");
    apply(cp, &late, &ns);
    wait_condition(cp, &["lvsvc", "late"], &ns, "Conflict", "True");
    // One deleted, and a RealServer moved to a new node.
    kubectl(cp, &["delete", "lvsvc", "zone-b", "-n", &ns]);
    set_node_name(cp, &ns, "web1", "other-node");
    wait_for("web1 to say other-node runs no web daemon", LONG, || {
        let o = get_json(cp, &["lvsrs", "web1"], &ns)?;
        condition(&o, "TunnelReady")?
            .2
            .contains("other-node")
            .then_some(())
    });
    settle(&op);
    assert_eq!(
        templates(cp, &dsns, &names),
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
    let generation = |name: &str| {
        get_json(cp, &["daemonset", name], &dsns).map(|d| d["metadata"]["generation"].clone())
    };
    let before = (generation(&balancer), generation(&web));
    let vs_version =
        get_json(cp, &["lvsvc", "www"], &ns).map(|v| v["metadata"]["resourceVersion"].clone());
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
        (generation(&balancer), generation(&web)),
        before,
        "DaemonSet generation moved on restart"
    );
    assert_eq!(
        get_json(cp, &["lvsvc", "www"], &ns).map(|v| v["metadata"]["resourceVersion"].clone()),
        vs_version,
        "the VirtualService was written on restart"
    );
    println!("restart: DaemonSet generations {before:?} unchanged, 0 status writes");

    // Every CR gone: the DaemonSets stay as they are (deleting them on the last CR and
    // creating them on the next would be churn too).
    let kept = templates(cp, &dsns, &names);
    kubectl(cp, &["delete", "lvsvc", "--all", "-n", &ns]);
    kubectl(cp, &["delete", "lvsrs", "--all", "-n", &ns]);
    settle(&op);
    assert_eq!(
        templates(cp, &dsns, &names),
        kept,
        "deleting every CR changed a DaemonSet"
    );
    assert_eq!(
        (generation(&balancer), generation(&web)),
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
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "op-conflict", &[]);
    let dsns = install.namespace.clone();
    let mut guard = Guard::new(cp);
    let (ns_a, ns_b) = (
        guard.namespace("op-conflict-a"),
        guard.namespace("op-conflict-b"),
    );
    guard.node("lb1", &[("lvstun.io/balancer", "true")]);
    guard.node("lb2", &[("lvstun.io/balancer", "true")]);
    guard.node("lb3", &[("team-b", "true")]);
    let op = install.start(&bin, "op-0");
    wait_leader(&op);
    let balancer = format!("{}-balancer", install.release);

    apply(cp, &example("virtualservice.yaml"), &ns_a);
    wait_condition(cp, &["lvsvc", "www"], &ns_a, "Conflict", "False");
    // Creation times have one-second resolution; make the order unambiguous.
    std::thread::sleep(Duration::from_millis(1100));
    let second = example("virtualservice.yaml")
        .replace("name: www", "name: www-b")
        .replace("lvstun.io/balancer: \"true\"", "team-b: \"true\"");
    apply(cp, &second, &ns_b);
    let b = wait_condition(cp, &["lvsvc", "www-b"], &ns_b, "Conflict", "True");
    let (_, reason, msg) = condition(&b, "Conflict").unwrap();
    assert_eq!(reason, "VIPPortInUse");
    assert!(
        msg.starts_with(&format!(
            "192.0.2.100:80/TCP is already served by VirtualService {ns_a}/www, which is older"
        )),
        "{msg}"
    );
    assert_eq!(condition(&b, "Ready").unwrap().1, "Conflict");
    wait_event(cp, &ns_b, "Conflict", &format!("{ns_a}/www"));
    println!("www-b: Conflict=True: {msg}");

    // The first keeps working: still the owner. The conflicting one is not judged further: its
    // node lb3, which lacks the balancer label, is not reported while it is in conflict.
    let a = get_json(cp, &["lvsvc", "www"], &ns_a).unwrap();
    assert_eq!(condition(&a, "Conflict").unwrap().0, "False");
    assert!(events(cp, &ns_b, "BalancerNodesUnlabelled").is_empty());

    // Bad input only the operator can see is reported on its object; nothing crashes.
    let bad = example("virtualservice.yaml")
        .replace("name: www", "name: bad")
        .replace(
            "matchLabels:\n      app: www",
            "matchExpressions:\n      - {key: app, operator: In, values: []}",
        );
    apply(cp, &bad, &ns_a);
    let bad = wait_condition(cp, &["lvsvc", "bad"], &ns_a, "Ready", "False");
    let (_, reason, msg) = condition(&bad, "Ready").unwrap();
    assert_eq!(reason, "InvalidSpec");
    assert!(
        msg.contains("spec.realServerSelector.matchExpressions[0].values"),
        "{msg}"
    );
    assert_eq!(condition(&bad, "Conflict").unwrap().0, "Unknown");

    // When the owner goes, the newer one takes over and is placed.
    kubectl(cp, &["delete", "lvsvc", "www", "-n", &ns_a]);
    wait_condition(cp, &["lvsvc", "www-b"], &ns_b, "Conflict", "False");
    wait_event(cp, &ns_b, "ConflictResolved", "192.0.2.100");
    // Its only node lb3 lacks the balancer label (the DaemonSet does not follow the CRs, ADR
    // 0007): it says so, with the label to add.
    let b = wait_condition(cp, &["lvsvc", "www-b"], &ns_b, "VIPActive", "False");
    assert_eq!(condition(&b, "VIPActive").unwrap().1, "NoBalancerDaemon");
    wait_event(
        cp,
        &ns_b,
        "BalancerNodesUnlabelled",
        "kubectl label node lb3 lvstun.io/balancer=true",
    );
    let ds = get_json(cp, &["daemonset", &balancer], &dsns).unwrap();
    assert_eq!(
        pod_spec(&ds)["nodeSelector"],
        json!({"lvstun.io/balancer": "true"})
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
async fn report_vrrp(client: &kube::Client, ns: &str, node: &str, state: &str, since: &str) {
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
async fn report_check(client: &kube::Client, ns: &str, rs: &str, node: &str, healthy: bool) {
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
async fn report_tunnel(client: &kube::Client, ns: &str, rs: &str, node: &str) {
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

/// The row of `kubectl get lvsvc www`.
fn lvsvc_row(cp: &ControlPlane, ns: &str) -> (String, Vec<String>) {
    let table = kubectl(cp, &["get", "lvsvc", "www", "-n", ns]);
    let row = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    (table, row)
}

#[tokio::test]
async fn daemon_reports_fold_into_conditions_and_printer_columns() {
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "op-status", &[]);
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("op-status-crs");
    guard.node("lb1", &[("lvstun.io/balancer", "true")]);
    guard.node("lb2", &[("lvstun.io/balancer", "true")]);
    // The node web1 moves to later: labelled, so a web daemon runs there (ADR 0007).
    guard.node("node-web1", &[("lvstun.io/web", "true")]);
    let op = install.start(&bin, "op-0");
    wait_leader(&op);
    apply(cp, &example("virtualservice.yaml"), &ns);
    apply(cp, &example("realservers.yaml"), &ns);
    let client = cp.client().await.unwrap();
    wait_condition(cp, &["lvsvc", "www"], &ns, "Conflict", "False");

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
    assert_eq!(&row[..4], ["www", "192.0.2.100", "80", "rr"]);
    let vs = get_json(cp, &["lvsvc", "www"], &ns).unwrap();
    assert_eq!(condition(&vs, "Ready").unwrap().1, "Serving");
    assert_eq!(
        condition(&vs, "VIPActive").unwrap().2,
        "lb1 holds VIP 192.0.2.100"
    );
    assert_eq!(condition(&vs, "Degraded").unwrap().0, "False");
    assert_eq!(
        vs["status"]["observedGeneration"],
        vs["metadata"]["generation"]
    );
    assert_eq!(vs["status"]["healthyRealServers"], 2);
    assert_eq!(vs["status"]["totalRealServers"], 2);
    assert_eq!(
        vs["status"]["balancers"].as_array().map(Vec::len),
        Some(2),
        "the daemons' entries survive the operator's writes"
    );
    // NAME ADDRESS WEIGHT HEALTHY TUNNELREADY AGE: healthy, and TunnelReady Unknown (the
    // operator's word for a host outside the cluster).
    let rs_table = wait_for(
        "kubectl get lvsrs: Healthy True, TunnelReady Unknown",
        LONG,
        || {
            let t = kubectl(cp, &["get", "lvsrs", "-n", &ns]);
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
    let web1 = get_json(cp, &["lvsrs", "web1"], &ns).unwrap();
    let (status, reason, message) = condition(&web1, "TunnelReady").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("Unknown", "OutsideCluster")
    );
    assert!(
        message.starts_with("no spec.nodeName: this host is outside the cluster"),
        "{message}"
    );
    wait_event(cp, &ns, "NewMaster", "lb1 now holds VIP 192.0.2.100");

    // Failover: lb1 dies (its entry still says Master: a dead daemon cannot say otherwise) and
    // lb2 takes the VIP at once; later the node controller marks lb1's node NotReady.
    report_vrrp(&client, &ns, "lb2", "Master", &just_now()).await;
    wait_for("Active lb2", LONG, || {
        (lvsvc_row(cp, &ns).1.get(4).map(String::as_str) == Some("lb2")).then_some(())
    });
    wait_event(
        cp,
        &ns,
        "NewMaster",
        "lb2 now holds VIP 192.0.2.100 (before: lb1)",
    );
    let vs = get_json(cp, &["lvsvc", "www"], &ns).unwrap();
    assert!(
        condition(&vs, "VIPActive")
            .unwrap()
            .2
            .contains("lb1 still reports Master"),
        "{vs}"
    );
    node_ready(cp, "lb1", false);
    wait_for("lb1's stale Master entry to be ignored", LONG, || {
        let vs = get_json(cp, &["lvsvc", "www"], &ns)?;
        (condition(&vs, "VIPActive")?.2 == "lb2 holds VIP 192.0.2.100").then_some(())
    });

    // web2 fails its health check on the active balancer: 1/2, Degraded, Healthy=False, ServerDown.
    report_check(&client, &ns, "web2", "lb2", false).await;
    wait_for("Healthy 1/2", LONG, || {
        (lvsvc_row(cp, &ns).1.get(5).map(String::as_str) == Some("1/2")).then_some(())
    });
    let vs = wait_condition(cp, &["lvsvc", "www"], &ns, "Degraded", "True");
    let (_, reason, msg) = condition(&vs, "Degraded").unwrap();
    assert_eq!(reason, "RealServersUnhealthy");
    assert!(
        msg.contains("web2 (health check failed on lb2: GET /healthcheck.html: connection refused"),
        "{msg}"
    );
    let rs = wait_condition(cp, &["lvsrs", "web2"], &ns, "Healthy", "False");
    assert_eq!(condition(&rs, "Healthy").unwrap().1, "CheckFailed");
    assert_eq!(
        condition(&rs, "TunnelReady").unwrap().1,
        "OutsideCluster",
        "TunnelReady is not about health checks"
    );
    wait_event(cp, &ns, "ServerDown", "web2 (198.51.100.130) is down");
    report_check(&client, &ns, "web2", "lb2", true).await;
    wait_event(cp, &ns, "ServerUp", "web2 (198.51.100.130) is up again");
    wait_condition(cp, &["lvsvc", "www"], &ns, "Degraded", "False");

    // web1 becomes a cluster node: the operator releases its TunnelReady, and web1 serves only
    // once the web daemon on that node (simulated) says TunnelReady=True.
    set_node_name(cp, &ns, "web1", "node-web1");
    wait_for("the operator to release web1's TunnelReady", LONG, || {
        let rs = get_json(cp, &["lvsrs", "web1"], &ns)?;
        condition(&rs, "TunnelReady").is_none().then_some(())
    });
    let vs = wait_for("Healthy 1/2 until web1's web daemon reports", LONG, || {
        let vs = get_json(cp, &["lvsvc", "www"], &ns)?;
        (vs["status"]["healthyRealServers"] == 1).then_some(vs)
    });
    let (_, _, msg) = condition(&vs, "Degraded").unwrap();
    assert!(
        msg.contains("web1 (its web daemon has not reported TunnelReady yet)"),
        "{msg}"
    );
    report_tunnel(&client, &ns, "web1", "node-web1").await;
    wait_for("Healthy 2/2 with web1's tunnel ready", LONG, || {
        (lvsvc_row(cp, &ns).1.get(5).map(String::as_str) == Some("2/2")).then_some(())
    });

    // Split brain: lb1 comes back still believing it is Master, and both keep saying so for
    // longer than the grace (simulated by timestamps from long ago). Reported loudly.
    node_ready(cp, "lb1", true);
    report_vrrp(&client, &ns, "lb2", "Master", LONG_AGO).await;
    let vs = wait_for("VIPActive SplitBrain", LONG, || {
        let vs = get_json(cp, &["lvsvc", "www"], &ns)?;
        (condition(&vs, "VIPActive")?.1 == "SplitBrain").then_some(vs)
    });
    assert_eq!(condition(&vs, "Ready").unwrap().0, "False");
    let note = wait_event(cp, &ns, "SplitBrain", "lb1, lb2 all claim to be Master");
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
async fn report_deleted(client: &kube::Client, ns: &str, node: &str, ports: Option<&[&str]>) {
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
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "op-neigh", &[]);
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("op-neigh-crs");
    guard.node("lb1", &[("lvstun.io/balancer", "true")]);
    // lb2 is a balancer node and also where web2 runs (both labels).
    guard.node(
        "lb2",
        &[("lvstun.io/balancer", "true"), ("lvstun.io/web", "true")],
    );
    let op = install.start(&bin, "op-0");
    wait_leader(&op);
    apply(cp, &example("virtualservice.yaml"), &ns);
    apply(cp, &example("realservers.yaml"), &ns);
    let client = cp.client().await.unwrap();
    wait_condition(cp, &["lvsvc", "www"], &ns, "Conflict", "False");
    report_vrrp(&client, &ns, "lb1", "Master", LONG_AGO).await;
    for lb in ["lb1", "lb2"] {
        report_check(&client, &ns, "web1", lb, true).await;
    }

    // web2 moves onto lb2: the operator leaves it out of www and says why, on both objects.
    set_node_name(cp, &ns, "web2", "lb2");
    let vs = wait_for("web2 in status.excludedRealServers", LONG, || {
        let vs = get_json(cp, &["lvsvc", "www"], &ns)?;
        (vs["status"]["excludedRealServers"]
            == json!([{"name": "web2", "node": "lb2", "reason": "NodeIsBalancer"}]))
        .then_some(vs)
    });
    let (status, reason, msg) = condition(&vs, "Degraded").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "RealServerOnBalancer")
    );
    assert!(msg.contains("RealServer web2 is on node lb2"), "{msg}");
    println!("www: Degraded=True RealServerOnBalancer: {msg}");
    wait_event(
        cp,
        &ns,
        "RealServerOnBalancer",
        "RealServer web2 is on node lb2",
    );
    let rs = wait_for("web2 Healthy=Unknown NodeIsBalancer", LONG, || {
        let rs = get_json(cp, &["lvsrs", "web2"], &ns)?;
        (condition(&rs, "Healthy")?.1 == "NodeIsBalancer").then_some(rs)
    });
    assert_eq!(condition(&rs, "Healthy").unwrap().0, "Unknown");

    // lb2 stops being a balancer node: web2 is no longer left out.
    kubectl(cp, &["label", "node", "lb2", "lvstun.io/balancer-"]);
    wait_for("excludedRealServers to empty", LONG, || {
        let vs = get_json(cp, &["lvsvc", "www"], &ns)?;
        vs["status"]["excludedRealServers"].is_null().then_some(())
    });
    wait_for("web2 Healthy no longer NodeIsBalancer", LONG, || {
        let rs = get_json(cp, &["lvsrs", "web2"], &ns)?;
        (condition(&rs, "Healthy")?.1 != "NodeIsBalancer").then_some(())
    });
    // web2 has no web daemon reporting in this test: take it away for what follows.
    kubectl(cp, &["delete", "lvsrs", "web2", "-n", &ns]);

    // lb1 reports that another program (kube-proxy in IPVS mode) deleted its service.
    report_deleted(&client, &ns, "lb1", Some(&["80/TCP"])).await;
    let vs = wait_for("Degraded IPVSServiceDeletedExternally", LONG, || {
        let vs = get_json(cp, &["lvsvc", "www"], &ns)?;
        (condition(&vs, "Degraded")?.1 == "IPVSServiceDeletedExternally").then_some(vs)
    });
    let (status, _, msg) = condition(&vs, "Degraded").unwrap();
    assert_eq!(status, "True");
    assert!(
        msg.contains("ipvs.excludeCIDRs: [192.0.2.100/32]")
            && msg.contains("--ipvs-exclude-cidrs=192.0.2.100/32"),
        "{msg}"
    );
    assert_eq!(
        condition(&vs, "Ready").unwrap().0,
        "True",
        "it is added again"
    );
    println!("www: Degraded=True IPVSServiceDeletedExternally: {msg}");
    wait_event(
        cp,
        &ns,
        "IPVSServiceDeletedExternally",
        "lb1 found the IPVS service",
    );
    // The balancer stops reporting it (a window after the last deletion): the condition clears.
    report_deleted(&client, &ns, "lb1", None).await;
    wait_condition(cp, &["lvsvc", "www"], &ns, "Degraded", "False");
    assert!(op.is_leader());
}

#[tokio::test]
async fn a_standby_takes_over_within_15_seconds_of_the_leader_dying() {
    let _serial = SERIAL.lock().await;
    let cp = cp();
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "op-lease", &["replicas=2"]);
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("op-lease-crs");
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
    apply(cp, &example("virtualservice.yaml"), &ns);
    wait_condition(cp, &["lvsvc", "www"], &ns, "Conflict", "False");

    // SIGKILL: the leader cannot release the lease; the standby must wait for it to expire.
    ops[li].kill();
    let died = Instant::now();
    let second = example("virtualservice.yaml")
        .replace("name: www", "name: www2")
        .replace("192.0.2.100", "192.0.2.101");
    apply(cp, &second, &ns);
    wait_for("the standby to lead", Duration::from_secs(30), || {
        ops[si].is_leader().then_some(())
    });
    let acquired = died.elapsed();
    wait_condition(cp, &["lvsvc", "www2"], &ns, "Conflict", "False");
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
