//! The balancer's in-cluster path against a real kube-apiserver (the harness's control plane):
//! `lvstun-node balancer` started with exactly the arguments the operator's DaemonSet gives it
//! (`--node-name=… --health-port=… --log-format=json`), plus `--dry-run` because this host's
//! kernel has no IPVS (the kernel side is proven in the lab VM), watches the VirtualServices
//! and RealServers, selects by its Node's labels, health-checks the real servers (listeners in
//! a network namespace this test creates, at 198.51.100.10 and .11 behind a veth pair: the API
//! refuses loopback real server addresses), and server-side-applies its own entries in `status.balancers[]` and
//! `status.checks[]`; a real server that stops answering shows up in both. At SIGTERM it asks
//! for its DaemonSet (`--daemonset`, here one that does not exist) and decides to tear down,
//! which a dry run only logs (ADR 0008).
//!
//! Run: `cargo test -p lvstun-tests --test controlplane_balancer -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use lvstun_crds::v1alpha1::{BalancerStatus, RealServer, VirtualService, VrrpState};
use lvstun_tests::cluster::{self, apply, await_object, from_yaml, string_map};
use lvstun_tests::controlplane::{ControlPlane, unique_namespace};
use lvstun_tests::lab;
use lvstun_tests::operator_fixture::{KillOnDrop, free_port, http_get_raw};

const MINUTE: Duration = Duration::from_secs(60);
const HALF_MINUTE: Duration = Duration::from_secs(30);

/// A network namespace with two real server addresses (198.51.100.10 and .11) that this host
/// reaches through a veth pair (198.51.100.1 on this side): the only addresses outside loopback
/// this test sends to, and the namespace goes with it (deleted on drop, the veth with it).
struct WebNamespace {
    name: String,
}

impl WebNamespace {
    fn create() -> WebNamespace {
        let id = std::process::id() % 100_000;
        let name = format!("lvstun-cpb-{id}");
        let host_if = format!("lvcpb{id}");
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = WebNamespace { name };
        let n = ns.name.as_str();
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", n,
        ]);
        ip(&["addr", "add", "198.51.100.1/24", "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        for args in [
            &["addr", "add", "198.51.100.10/24", "dev", "eth0"][..],
            &["addr", "add", "198.51.100.11/24", "dev", "eth0"],
            &["link", "set", "eth0", "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["-n", n];
            full.extend_from_slice(args);
            ip(&full);
        }
        ns
    }
}

impl Drop for WebNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A web server (the lab's fixture) on `addr`:0 inside `ns`; returns it and its port.
fn web(ns: &WebNamespace, addr: &str, name: &str) -> (KillOnDrop, u16) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(env!("CARGO_BIN_EXE_lvstun-lab-web"))
        .args(["--listen", &format!("{addr}:0"), "--name", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "listening on 198.51.100.10:PORT as NAME"
    let port = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (KillOnDrop(child), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_watches_the_api_checks_and_reports_its_entries() {
    lab::ensure_built_bins(&[("lvstun-node", "lvstun-node")]).unwrap();
    let cp = ControlPlane::shared().unwrap();
    let client = cp.client().await.unwrap();
    cluster::ensure_crds(&client).await.unwrap();
    let ns = unique_namespace("balancer");
    let node = format!("lvstun-balancer-{ns}");
    cluster::create_namespace(&client, &ns, &[]).await.unwrap();

    // Two real servers in a namespace of the test's own, and a Node labelled as the examples'
    // selector wants (no kubelet: the Node object is all the balancer reads).
    let web_ns = WebNamespace::create();
    let (web1, port1) = web(&web_ns, "198.51.100.10", "www1");
    let (_web2, port2) = web(&web_ns, "198.51.100.11", "www2");
    let nodes: Api<Node> = Api::all(client.clone());
    let labelled = Node {
        metadata: ObjectMeta {
            name: Some(node.clone()),
            labels: Some(string_map(&[("lvstun.io/balancer", "true")])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    apply(&nodes, &labelled).await.unwrap();
    let virtual_services = r#"apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata: {name: www}
spec:
  vip: 192.0.2.100
  ports: [{port: 80}]
  realServerSelector: {matchLabels: {app: www}}
  healthCheck: {http: {}, intervalSeconds: 1, timeoutSeconds: 1, failureThreshold: 2}
  balancers:
    nodeSelector: {matchLabels: {lvstun.io/balancer: "true"}}
    virtualRouterID: 51
---
apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata: {name: elsewhere}
spec:
  vip: 192.0.2.101
  ports: [{port: 80}]
  realServerSelector: {matchLabels: {app: www}}
  balancers:
    nodeSelector: {matchLabels: {lvstun.io/balancer: other-nodes}}
    virtualRouterID: 52
"#;
    let real_servers = format!(
        r#"apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata: {{name: web1, labels: {{app: www}}}}
spec: {{address: 198.51.100.10, port: {port1}}}
---
apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata: {{name: web2, labels: {{app: www}}}}
spec: {{address: 198.51.100.11, port: {port2}}}
"#
    );
    let vss: Api<VirtualService> = Api::namespaced(client.clone(), &ns);
    let rss: Api<RealServer> = Api::namespaced(client.clone(), &ns);
    for vs in from_yaml::<VirtualService>(virtual_services).unwrap() {
        apply(&vss, &vs).await.unwrap();
    }
    for rs in from_yaml::<RealServer>(&real_servers).unwrap() {
        apply(&rss, &rs).await.unwrap();
    }

    // The daemon, as the DaemonSet runs it (operator/src/build.rs `node_args`), plus --dry-run
    // and a private state folder; health endpoint on loopback only.
    let health_port = free_port();
    let state = PathBuf::from(cp.dir()).join(format!("balancer-state-{ns}"));
    let log_path = PathBuf::from(cp.dir()).join(format!("balancer-{ns}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let daemon = KillOnDrop(
        Command::new(lab::bin_dir().join("lvstun-node"))
            .args([
                "balancer".to_string(),
                format!("--node-name={node}"),
                format!("--health-port={health_port}"),
                "--log-format=json".to_string(),
                format!("--daemonset=lvstun-balancer-{ns}"),
                "--health-address=127.0.0.1".to_string(),
                "--dry-run".to_string(),
                format!("--state-dir={}", state.display()),
            ])
            .env("KUBECONFIG", cp.kubeconfig())
            .env("POD_NAMESPACE", &ns)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    eprintln!("[controlplane_balancer] daemon log: {}", log_path.display());

    // This node's entry on a VirtualService, and its check entry on a RealServer.
    let entry = |vs: &VirtualService| {
        vs.status
            .as_ref()?
            .balancers
            .iter()
            .find(|b| b.node == node)
            .cloned()
    };
    let check = |rs: &RealServer| {
        rs.status
            .as_ref()?
            .checks
            .iter()
            .find(|c| c.balancer == node)
            .cloned()
    };
    let destinations = |e: &BalancerStatus| e.programmed_destinations.get("80/TCP").copied();

    // 1. Its entry on the VirtualService its node is selected for: both destinations in rotation.
    let mine = await_object(
        &vss,
        "www",
        "balancers[] entry with 2 destinations",
        MINUTE,
        |vs| entry(vs).filter(|e| destinations(e) == Some(2)),
    )
    .await
    .unwrap();
    eprintln!("[controlplane_balancer] {mine:?}");
    assert_eq!(mine.state, VrrpState::Initialize);
    assert!(mine.message.as_deref().unwrap_or("").contains("dry run"));

    // 2. Its check entries on both real servers.
    for name in ["web1", "web2"] {
        let c = await_object(&rss, name, "healthy checks[] entry", HALF_MINUTE, |rs| {
            check(rs).filter(|c| c.healthy)
        })
        .await
        .unwrap();
        assert_eq!(c.consecutive_failures, 0, "{c:?}");
        assert!(c.last_check_time.is_some(), "{c:?}");
    }

    // 3. Nothing on the VirtualService whose balancers are other nodes.
    let other = vss.get_status("elsewhere").await.unwrap();
    assert!(entry(&other).is_none(), "not this node's VirtualService");

    // 4. web1 stops answering: its check entry turns unhealthy with the reason, and one
    //    destination is left in rotation.
    drop(web1);
    let c = await_object(&rss, "web1", "web1 unhealthy", HALF_MINUTE, |rs| {
        check(rs).filter(|c| !c.healthy)
    })
    .await
    .unwrap();
    eprintln!("[controlplane_balancer] web1: {c:?}");
    assert!(c.consecutive_failures >= 2, "{c:?}");
    assert!(
        c.message.as_deref().unwrap_or("").contains("connect"),
        "{c:?}"
    );
    assert!(c.last_transition_time.is_some(), "{c:?}");
    await_object(
        &vss,
        "www",
        "one destination in rotation",
        HALF_MINUTE,
        |vs| entry(vs).filter(|e| destinations(e) == Some(1)),
    )
    .await
    .unwrap();

    // 5. Its own view: /readyz and the operations it would have sent.
    let readyz = http_get_raw(health_port, "/readyz").unwrap_or_default();
    assert!(
        readyz.contains("ready: 1 services, 2 destinations"),
        "{readyz}"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("add service TCP 192.0.2.100:80 rr"), "{log}");
    assert!(
        !log.contains("192.0.2.101"),
        "the other VirtualService is not programmed"
    );

    // 6. SIGTERM: the DaemonSet named by --daemonset does not exist, so the daemon is leaving
    //    this node for good; a dry run has nothing to remove.
    let mut daemon = daemon;
    cp.run(
        "kill -TERM",
        Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]),
    )
    .unwrap();
    assert!(daemon.0.wait().unwrap().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("teardown: the DaemonSet is gone"), "{log}");
    assert!(
        log.contains("dry run: teardown: nothing was programmed"),
        "{log}"
    );
    drop(daemon);
    let _ = cluster::delete(&nodes, &node).await;
}
