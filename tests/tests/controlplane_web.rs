//! The web role's in-cluster path against a real kube-apiserver (the harness's control plane):
//! `lvstun-node web` started with exactly the arguments the operator's DaemonSet gives it
//! (`--node-name=… --health-port=… --log-format=json`), plus `--dry-run` because this host's
//! kernel has no ipip (the kernel side is proven in the lab VM), authenticated as the web
//! ServiceAccount of a `helm install` of the chart, with a token bound to a pod on its node as
//! the DaemonSet's pod has (so the chart's RBAC and its status policy are what is tested).
//!
//! It proves: the daemon serves the RealServer whose `spec.nodeName` is its node and not the
//! other; it server-side-applies that RealServer's `TunnelReady` condition with its own field
//! manager (`lvstun-node-web/<node>`), leaving the operator's `Healthy` condition and the
//! balancer's `checks[]` entry exactly as they were; an edit of the VirtualService's VIP reaches
//! its desired state at once; a RealServer moved to another node gets its condition withdrawn;
//! at SIGTERM it reads its DaemonSet and Node (`--daemonset`, `$POD_NAMESPACE`) and keeps the
//! node configured while the DaemonSet still selects it, tears down once the node lost its label
//! or the DaemonSet is gone (ADR 0008); and the web ServiceAccount can do what the daemon needs
//! and not more.
//!
//! The node name is unique to the run (`node-a-<namespace>`) rather than a bare `node-a`: the
//! daemon watches RealServers in every namespace, and other tests on the shared control plane
//! may name a `node-a` too.
//!
//! Run: `cargo test -p lvstun-tests --test controlplane_web -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use lvstun_crds::v1alpha1::{RealServer, VirtualService};
use lvstun_tests::cluster::{
    self, Access, apply, apply_examples, await_object, from_yaml, merge, poll,
};
use lvstun_tests::controlplane::{ControlPlane, unique_namespace};
use lvstun_tests::lab;
use lvstun_tests::operator_fixture::{
    Guard, Install, KillOnDrop, free_port, http_get_raw, wait_for,
};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);
const HALF_MINUTE: Duration = Duration::from_secs(30);

fn condition(rs: &RealServer, kind: &str) -> Option<Condition> {
    rs.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .cloned()
}

/// The managers that own fields of `rs`'s status, with what they own.
fn status_managers(rs: &RealServer) -> Vec<(String, serde_json::Value)> {
    rs.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.fields_v1
                    .as_ref()
                    .map(|f| f.0.clone())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// What the operator and a balancer write on a RealServer, each with its own field manager.
async fn other_writers(api: &Api<RealServer>, name: &str) {
    let healthy = json!({
        "apiVersion": "lvstun.io/v1alpha1", "kind": "RealServer",
        "status": {"conditions": [{
            "type": "Healthy", "status": "True", "reason": "Checked",
            "message": "healthy on lb1", "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]}
    });
    api.patch_status(
        name,
        &PatchParams::apply("lvstun-operator"),
        &Patch::Apply(healthy),
    )
    .await
    .unwrap();
    let check = json!({
        "apiVersion": "lvstun.io/v1alpha1", "kind": "RealServer",
        "status": {"checks": [{"balancer": "lb1", "healthy": true, "consecutiveFailures": 0, "message": "200 OK"}]}
    });
    api.patch_status(
        name,
        &PatchParams::apply("lvstun-node/lb1"),
        &Patch::Apply(check),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_daemon_reports_tunnel_ready_for_its_node_only_and_follows_the_vip() {
    lab::ensure_built_bins(&[("lvstun-node", "lvstun-node")]).unwrap();
    let cp = ControlPlane::shared().unwrap();
    let client = cp.client().await.unwrap();
    cluster::ensure_crds(&client).await.unwrap();

    // The chart's RBAC and status policy.
    let install = Install::new(cp, "web-rbac", &[]).await;
    let web_sa = format!("{}-web", install.release);
    let sa = format!("system:serviceaccount:{}:{web_sa}", install.namespace);

    // The examples, in a namespace of their own; web1 is this node's, web2 is not.
    let ns = unique_namespace("web");
    let node = format!("node-a-{ns}");
    cluster::create_namespace(&client, &ns, &[]).await.unwrap();
    apply_examples(&client, &ns).await.unwrap();
    let rss: Api<RealServer> = Api::namespaced(client.clone(), &ns);
    merge(&rss, "web1", json!({"spec": {"nodeName": node}}))
        .await
        .unwrap();

    // The node, labelled for the web role, and the web DaemonSet as the operator names it (its
    // pods stay Pending here: no kubelet): what the daemon asks about at SIGTERM.
    let mut guard = Guard::new(cp);
    guard.node(&node, &[("lvstun.io/web", "true")]).await;
    // A token of the web ServiceAccount bound to a pod on the node, as the DaemonSet's pod
    // gets: the chart's status policy refuses a daemon's write with a token that names no node.
    let token = cluster::pod_bound_token(
        &client,
        &install.namespace,
        &web_sa,
        &format!("{web_sa}-{ns}"),
        &node,
        3600,
    )
    .await
    .unwrap();
    let kubeconfig = cp
        .write_kubeconfig(&format!("{}-web", install.namespace), &token)
        .unwrap();
    let daemonset = format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {web_sa}\nspec:\n  selector:\n    \
         matchLabels: {{app: {web_sa}}}\n  template:\n    metadata:\n      labels: {{app: {web_sa}}}\n    \
         spec:\n      nodeSelector: {{lvstun.io/web: \"true\"}}\n      containers: [{{name: web, image: localhost/none}}]\n"
    );
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &install.namespace);
    apply(&dss, &from_yaml::<DaemonSet>(&daemonset).unwrap().remove(0))
        .await
        .unwrap();

    other_writers(&rss, "web1").await;
    let before = rss.get_status("web1").await.unwrap();
    let healthy_before = condition(&before, "Healthy").unwrap();
    let checks_before = before.status.as_ref().unwrap().checks.clone();
    assert_eq!(checks_before.len(), 1);

    // The daemon, as the DaemonSet runs it (operator/src/build.rs `node_args`), plus --dry-run,
    // a private state folder and the health endpoint on loopback only.
    let health_port = free_port();
    let state = PathBuf::from(cp.dir()).join(format!("web-state-{ns}"));
    let start = |tag: &str| -> (KillOnDrop, PathBuf) {
        let log_path = PathBuf::from(cp.dir()).join(format!("web-{ns}{tag}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let daemon = KillOnDrop(
            Command::new(lab::bin_dir().join("lvstun-node"))
                .args([
                    "web".to_string(),
                    format!("--node-name={node}"),
                    format!("--health-port={health_port}"),
                    "--log-format=json".to_string(),
                    format!("--daemonset={web_sa}"),
                    "--health-address=127.0.0.1".to_string(),
                    "--dry-run".to_string(),
                    format!("--state-dir={}", state.display()),
                ])
                .env("KUBECONFIG", &kubeconfig)
                .env("POD_NAMESPACE", &install.namespace)
                .env_remove("NODE_NAME")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        eprintln!("[controlplane_web] daemon log: {}", log_path.display());
        (daemon, log_path)
    };
    // SIGTERM once the daemon listens for it; its log after it exited.
    let terminate = |mut daemon: KillOnDrop, log_path: &PathBuf| -> String {
        wait_for("the daemon to start", Duration::from_secs(60), || {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            log.contains("web daemon started in cluster mode")
                .then_some(())
        });
        let pid = daemon.0.id().to_string();
        cp.run("kill -TERM", Command::new("kill").args(["-TERM", &pid]))
            .unwrap();
        let status = daemon.0.wait().unwrap();
        assert!(status.success(), "{status:?}");
        std::fs::read_to_string(log_path).unwrap()
    };
    let (daemon, log_path) = start("");
    let manager = format!("lvstun-node-web/{node}");

    // 1. TunnelReady on web1, said to be a dry run, written by the node's field manager.
    let web1 = await_object(&rss, "web1", "TunnelReady on web1", MINUTE, |rs| {
        condition(rs, "TunnelReady").is_some().then(|| rs.clone())
    })
    .await
    .unwrap();
    let tunnel = condition(&web1, "TunnelReady").unwrap();
    eprintln!("[controlplane_web] web1 TunnelReady: {tunnel:?}");
    assert!(
        tunnel
            .message
            .starts_with("dry run: nothing is changed on this node; "),
        "{tunnel:?}"
    );
    assert!(
        ["True", "False"].contains(&tunnel.status.as_str()),
        "{tunnel:?}"
    );
    assert!(!tunnel.reason.is_empty());
    assert_eq!(tunnel.observed_generation, web1.metadata.generation);
    let managers = status_managers(&web1);
    let (_, owned) = managers
        .iter()
        .find(|(m, _)| *m == manager)
        .unwrap_or_else(|| panic!("no status fields of {manager}: {managers:?}"));
    let owned_conditions: Vec<&String> = owned["f:status"]["f:conditions"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("k:"))
        .collect();
    assert_eq!(
        owned_conditions,
        vec![r#"k:{"type":"TunnelReady"}"#],
        "the web daemon owns TunnelReady and nothing else"
    );
    assert!(owned["f:status"].get("f:checks").is_none(), "{owned}");

    // 2. The operator's Healthy and the balancer's checks[] are untouched, still their owners'.
    assert_eq!(condition(&web1, "Healthy").unwrap(), healthy_before);
    assert_eq!(web1.status.as_ref().unwrap().checks, checks_before);
    for m in ["lvstun-operator", "lvstun-node/lb1"] {
        assert!(
            managers.iter().any(|(name, _)| name == m),
            "{m} lost its fields: {managers:?}"
        );
    }

    // 3. web2 names no node: the daemon says nothing about it.
    let web2 = rss.get_status("web2").await.unwrap();
    assert!(condition(&web2, "TunnelReady").is_none(), "{web2:?}");

    // 4. The VIP is edited: the new one is this node's desired state at once.
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log_text().contains("192.0.2.100"), "{}", log_text());
    let vss: Api<VirtualService> = Api::namespaced(client.clone(), &ns);
    merge(&vss, "www", json!({"spec": {"vip": "192.0.2.200"}}))
        .await
        .unwrap();
    // The daemon's log lines, newest last (what a failed wait prints is the last few).
    let log_lines =
        move || async move { log_text().lines().map(str::to_owned).collect::<Vec<_>>() };
    let changed = poll(
        "desired state with 192.0.2.200 logged",
        HALF_MINUTE,
        log_lines,
        |lines| {
            lines
                .iter()
                .find(|l| l.contains("desired state changed") && l.contains("192.0.2.200"))
                .cloned()
        },
    )
    .await
    .unwrap();
    eprintln!("[controlplane_web] {changed}");
    assert!(
        !changed.contains("192.0.2.100"),
        "the old VIP is gone: {changed}"
    );
    poll(
        "a reconcile with the new VIP",
        HALF_MINUTE,
        log_lines,
        |lines| {
            lines
                .iter()
                .any(|l| l.contains("reconciled:") && l.contains("(192.0.2.200)"))
                .then_some(())
        },
    )
    .await
    .unwrap();

    // 5. Its own endpoint: alive, and /readyz carries the same verdict.
    assert!(
        http_get_raw(health_port, "/healthz")
            .unwrap_or_default()
            .contains("200 OK")
    );
    let readyz = http_get_raw(health_port, "/readyz").unwrap_or_default();
    assert!(readyz.contains(&tunnel.reason), "{readyz}");

    // 6. web1 moves to another node: this node withdraws its condition; the others stay.
    merge(
        &rss,
        "web1",
        json!({"spec": {"nodeName": format!("node-b-{ns}")}}),
    )
    .await
    .unwrap();
    let moved = await_object(&rss, "web1", "TunnelReady withdrawn", HALF_MINUTE, |rs| {
        condition(rs, "TunnelReady").is_none().then(|| rs.clone())
    })
    .await
    .unwrap();
    assert_eq!(condition(&moved, "Healthy").unwrap(), healthy_before);
    assert_eq!(moved.status.as_ref().unwrap().checks, checks_before);

    // 7. SIGTERM while the DaemonSet still selects the node: a restart, the node is kept.
    let log = terminate(daemon, &log_path);
    assert!(
        log.contains("keep: the DaemonSet still selects this node (a restart)"),
        "{log}"
    );
    assert!(!log.contains("teardown:"), "{log}");

    // 8. The node loses its label (the DaemonSet controller would delete the pod): teardown.
    merge(
        &Api::<Node>::all(client.clone()),
        &node,
        json!({"metadata": {"labels": {"lvstun.io/web": null}}}),
    )
    .await
    .unwrap();
    let (daemon, log_path) = start("-deselected");
    let log = terminate(daemon, &log_path);
    assert!(
        log.contains(
            "teardown: the DaemonSet no longer selects this node (it lacks lvstun.io/web=true)"
        ),
        "{log}"
    );
    assert!(log.contains("stopping: dry run"), "{log}");

    // 9. The DaemonSet is gone: teardown too.
    cluster::delete(&dss, &web_sa).await.unwrap();
    let (daemon, log_path) = start("-gone");
    let log = terminate(daemon, &log_path);
    assert!(log.contains("teardown: the DaemonSet is gone"), "{log}");

    // 10. The web ServiceAccount's RBAC: what the daemon needs, and not more.
    let can = async |verb: &str, resource: &str| -> bool {
        let access = Access {
            verb,
            resource,
            namespace: Some(&ns),
            name: None,
        };
        cluster::service_account_can(&client, &sa, &access)
            .await
            .unwrap()
    };
    for (verb, resource) in [
        ("get", "realservers.lvstun.io"),
        ("list", "realservers.lvstun.io"),
        ("watch", "realservers.lvstun.io"),
        ("get", "virtualservices.lvstun.io"),
        ("list", "virtualservices.lvstun.io"),
        ("watch", "virtualservices.lvstun.io"),
        ("patch", "realservers.lvstun.io/status"),
        ("get", "nodes"),
    ] {
        assert!(
            can(verb, resource).await,
            "the web daemon needs {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("patch", "realservers.lvstun.io"),
        ("update", "realservers.lvstun.io"),
        ("delete", "realservers.lvstun.io"),
        ("patch", "virtualservices.lvstun.io/status"),
        ("patch", "virtualservices.lvstun.io"),
        ("get", "secrets"),
        ("list", "nodes"),
        ("patch", "nodes"),
        ("list", "pods"),
        // It publishes no Event (its conditions say it all): no right to write them.
        ("create", "events"),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(
            !can(verb, resource).await,
            "the web daemon must not {verb} {resource}"
        );
    }
    // The balancer's ServiceAccount, from the same chart: it publishes no Event either, and
    // writes nothing but status.
    let balancer_sa = format!(
        "system:serviceaccount:{}:{}-balancer",
        install.namespace, install.release
    );
    for (verb, resource, allowed) in [
        ("watch", "virtualservices.lvstun.io", true),
        ("patch", "virtualservices.lvstun.io/status", true),
        ("patch", "realservers.lvstun.io/status", true),
        ("create", "events", false),
        ("create", "events.events.k8s.io", false),
        ("patch", "virtualservices.lvstun.io", false),
        ("update", "virtualservices.lvstun.io/finalizers", false),
    ] {
        let access = Access {
            verb,
            resource,
            namespace: Some(&ns),
            name: None,
        };
        assert_eq!(
            cluster::service_account_can(&client, &balancer_sa, &access)
                .await
                .unwrap(),
            allowed,
            "the balancer daemon {} {verb} {resource}",
            if allowed { "needs" } else { "must not" }
        );
    }
    // Its own DaemonSet, read only, and no other.
    let can_ds = async |verb: &str, name: &str| -> bool {
        let access = Access {
            verb,
            resource: "daemonsets.apps",
            namespace: Some(&install.namespace),
            name: Some(name),
        };
        cluster::service_account_can(&client, &sa, &access)
            .await
            .unwrap()
    };
    assert!(can_ds("get", &web_sa).await);
    for (verb, name) in [
        ("get", format!("{}-balancer", install.release)),
        ("delete", web_sa.clone()),
        ("patch", web_sa.clone()),
    ] {
        assert!(
            !can_ds(verb, &name).await,
            "the web daemon must not {verb} daemonset {name}"
        );
    }

    let _ = cluster::delete_namespace(&client, &ns, false).await;
    drop(guard);
    drop(install);
}
