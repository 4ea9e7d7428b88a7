//! The web role in a cluster on a real kernel (`tests/lab/scenarios/web-cluster.sh`): the
//! daemon runs in the lab VM's web1 namespace with the DaemonSet's arguments and no
//! `--dry-run`, talks to the host's kube-apiserver (the harness's control plane) through the
//! management link as the chart's web ServiceAccount, prepares web1 (VIP on lvstun0, nft
//! tables) and reports `TunnelReady=True` on the RealServer that names its node, with its own
//! field manager.
//!
//! Needs root and the lab (see `tests/lab/README.md`).
//! Run: `cargo test -p lvstun-tests --test lab_web_cluster -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube::Api;
use lvstun_crds::v1alpha1::RealServer;
use lvstun_tests::controlplane::{ControlPlane, repo_root, unique_namespace};
use lvstun_tests::lab::{self, ScenarioOptions};
use lvstun_tests::operator_fixture::Install;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_daemon_in_the_vm_reports_tunnel_ready_to_the_hosts_api_server() {
    lab::ensure_built_bins(&[("lvstun-node", "lvstun-node")]).unwrap();
    let cp = ControlPlane::shared().unwrap();
    cp.run(
        "kubectl apply -f deploy/crds",
        cp.kubectl()
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(repo_root().join("deploy/crds")),
    )
    .unwrap();
    cp.run(
        "kubectl wait crds",
        cp.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/realservers.lvstun.io",
            "crd/virtualservices.lvstun.io",
        ]),
    )
    .unwrap();

    // The chart's RBAC and its web ServiceAccount's token: what a web pod would have.
    let install = Install::new(cp, "labweb-rbac", &[]);
    let token = cp
        .run(
            "kubectl create token",
            cp.kubectl().args([
                "create",
                "token",
                &format!("{}-web", install.release),
                "-n",
                &install.namespace,
                "--duration=1h",
            ]),
        )
        .unwrap();

    // The examples (VIP 192.0.2.100, the lab's LAB_VIP; web1 at 198.51.100.10, the lab's
    // LAB_WEB1_IP), web1 naming this run's node.
    let ns = unique_namespace("labweb");
    let node = format!("lab-web1-{ns}");
    cp.run(
        "kubectl create namespace",
        cp.kubectl().args(["create", "namespace", &ns]),
    )
    .unwrap();
    for example in ["virtualservice.yaml", "realservers.yaml"] {
        cp.run(
            "kubectl apply example",
            cp.kubectl()
                .args(["apply", "-n", &ns, "-f"])
                .arg(repo_root().join("deploy/examples").join(example)),
        )
        .unwrap();
    }
    cp.run(
        "kubectl patch web1 nodeName",
        cp.kubectl().args([
            "patch",
            "lvsrs",
            "web1",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"nodeName":"{node}"}}}}"#),
        ]),
    )
    .unwrap();

    // The guest reaches exactly the API server's loopback port.
    let api_port: u16 = cp
        .server_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {}", cp.server_url()));
    let options = ScenarioOptions {
        env: vec![
            ("LAB_K8S_TOKEN".into(), token.trim().to_string()),
            ("LAB_K8S_NODE".into(), node.clone()),
        ],
        mgmt_port: Some(api_port),
        ..ScenarioOptions::default()
    };
    let run = tokio::task::spawn_blocking(move || lab::run_scenario_with("web-cluster", &options))
        .await
        .unwrap()
        .unwrap();
    let out = run.out_dir.display().to_string();
    eprintln!(
        "[lab_web_cluster] run folder {out}; wall {:.1}s",
        run.wall.as_secs_f64()
    );
    assert_eq!(
        run.result("tunnel_ready_written"),
        Some("yes"),
        "the daemon never wrote TunnelReady=True ({out}/logs/web1-cluster.log)"
    );
    assert_eq!(
        run.result("vip_on_lvstun0"),
        Some("yes"),
        "VIP not on lvstun0 in web1 ({out}/web1-addr.txt)"
    );
    let readyz = run.artifact("web1-readyz.txt").unwrap_or_default();
    assert!(readyz.starts_with("ready: Ready:"), "{readyz} ({out})");

    // What the API server holds, as a person would read it.
    let client = cp.client().await.unwrap();
    let rss: Api<RealServer> = Api::namespaced(client, &ns);
    let web1 = rss.get_status("web1").await.unwrap();
    let tunnel = web1
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "TunnelReady"))
        .unwrap_or_else(|| panic!("no TunnelReady on web1: {web1:?}"));
    eprintln!("[lab_web_cluster] {tunnel:?}");
    assert_eq!(
        (tunnel.status.as_str(), tunnel.reason.as_str()),
        ("True", "Ready")
    );
    assert!(
        tunnel.message.contains("192.0.2.100 on lvstun0"),
        "{}",
        tunnel.message
    );
    let manager = format!("lvstun-node-web/{node}");
    assert!(
        web1.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some(manager.as_str())
                && m.subresource.as_deref() == Some("status")),
        "TunnelReady not written by {manager}"
    );
    let web2 = rss.get_status("web2").await.unwrap();
    assert!(
        web2.status
            .as_ref()
            .is_none_or(|s| s.conditions.iter().all(|c| c.type_ != "TunnelReady")),
        "web2 is not this node's"
    );

    let _ = cp.run(
        "kubectl delete namespace",
        cp.kubectl()
            .args(["delete", "namespace", &ns, "--wait=false"]),
    );
    drop(install);
}
