//! The CRDs, examples, chart and manifests against a real kube-apiserver (with etcd and
//! kube-controller-manager) started by the harness: what the API server accepts, what it refuses
//! and with which message, and that a refused object is not stored.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns panic on purpose

use lvstun_tests::controlplane::{ControlPlane, repo_root, unique_namespace};

/// Apply the generated CRDs (idempotent) and wait until the API server serves them.
fn ensure_crds(cp: &ControlPlane) {
    let crds = repo_root().join("deploy/crds");
    cp.run(
        "kubectl apply -f deploy/crds",
        cp.kubectl()
            .arg("apply")
            .arg("--server-side")
            .arg("--force-conflicts")
            .arg("-f")
            .arg(&crds),
    )
    .unwrap();
    cp.run(
        "kubectl wait crds established",
        cp.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/virtualservices.lvstun.io",
            "crd/realservers.lvstun.io",
        ]),
    )
    .unwrap();
}

fn create_namespace(cp: &ControlPlane, prefix: &str) -> String {
    let ns = unique_namespace(prefix);
    cp.run(
        "kubectl create namespace",
        cp.kubectl().args(["create", "namespace", &ns]),
    )
    .unwrap();
    ns
}

#[test]
fn examples_are_accepted_defaulted_and_printed() {
    let cp = ControlPlane::shared().unwrap();
    ensure_crds(cp);
    let ns = create_namespace(cp, "examples");
    let examples = repo_root().join("deploy/examples");
    let out = cp
        .run(
            "kubectl apply -f deploy/examples",
            cp.kubectl().args(["apply", "-n", &ns, "-f"]).arg(&examples),
        )
        .unwrap();
    assert!(
        out.contains("virtualservice.lvstun.io/www created"),
        "{out}"
    );
    assert!(out.contains("realserver.lvstun.io/web1 created"), "{out}");
    assert!(out.contains("realserver.lvstun.io/web2 created"), "{out}");

    // The API server filled in the classic recipe's defaults.
    let json = cp
        .run(
            "kubectl get lvsvc www -o json",
            cp.kubectl()
                .args(["get", "lvsvc", "www", "-n", &ns, "-o", "json"]),
        )
        .unwrap();
    let vs: serde_json::Value = serde_json::from_str(&json).unwrap();
    let hc = &vs["spec"]["healthCheck"];
    assert_eq!(hc["http"]["path"], "/healthcheck.html", "{hc}");
    assert_eq!(hc["http"]["expectBody"], "OK", "{hc}");
    assert_eq!(hc["http"]["expectStatus"], 200, "{hc}");
    assert_eq!(hc["intervalSeconds"], 2, "{hc}");
    assert_eq!(vs["spec"]["tunnel"]["type"], "ipip");
    assert_eq!(vs["spec"]["balancers"]["preempt"], true);
    // RFC 9568's Master_Down_Interval: three missed advertisements.
    assert_eq!(vs["spec"]["balancers"]["missedAdvertisements"], 3);

    // Printer columns, through the short names and the category.
    let table = cp
        .run(
            "kubectl get lvsvc",
            cp.kubectl().args(["get", "lvsvc", "-n", &ns]),
        )
        .unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "VIP",
            "PORTS",
            "SCHEDULER",
            "ACTIVE",
            "HEALTHY",
            "READY",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["www", "192.0.2.100", "80", "rr"], "{table}");

    let table = cp
        .run(
            "kubectl get lvsrs",
            cp.kubectl().args(["get", "lvsrs", "-n", &ns]),
        )
        .unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "ADDRESS", "WEIGHT", "HEALTHY", "TUNNELREADY", "AGE"],
        "{table}"
    );
    assert!(table.contains("198.51.100.10"), "{table}");
    assert!(table.contains("198.51.100.130"), "{table}");

    let all = cp
        .run(
            "kubectl get lvstun",
            cp.kubectl()
                .args(["get", "lvstun", "-n", &ns, "-o", "name"]),
        )
        .unwrap();
    let mut names: Vec<&str> = all.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "realserver.lvstun.io/web1",
            "realserver.lvstun.io/web2",
            "virtualservice.lvstun.io/www"
        ]
    );
    cp.run(
        "kubectl delete namespace",
        cp.kubectl()
            .args(["delete", "namespace", &ns, "--wait=false"]),
    )
    .unwrap();
}

/// A valid VirtualService with one spec fragment replaced (YAML lines under `spec:`).
fn vs(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: lvstun.io/v1alpha1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

const VS_OK_PORTS: &str = "  ports:\n  - port: 80\n";
const VS_OK_REST: &str = "  realServerSelector:\n    matchLabels: {app: www}\n  balancers:\n    nodeSelector:\n      matchLabels: {lvstun.io/balancer: \"true\"}\n    virtualRouterID: 51\n";

fn vs_with(name: &str, vip: &str, ports: &str, extra: &str, rest: &str) -> String {
    vs(name, &format!("  vip: {vip}\n{ports}{extra}{rest}"))
}

fn rs(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: lvstun.io/v1alpha1\nkind: RealServer\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// One bad object: its kind and name, YAML, and substrings the refusal must contain (the field
/// path and what is allowed).
struct Bad {
    kind: &'static str,
    name: &'static str,
    yaml: String,
    expect: &'static [&'static str],
}

fn bad_inputs() -> Vec<Bad> {
    let ok_vip = "192.0.2.100";
    let b = |name: &'static str, yaml: String, expect: &'static [&'static str]| Bad {
        kind: if yaml.contains("kind: RealServer") {
            "realserver"
        } else {
            "virtualservice"
        },
        name,
        yaml,
        expect,
    };
    vec![
        b(
            "vip-not-ip",
            vs_with("vip-not-ip", "300.1.2.3", VS_OK_PORTS, "", VS_OK_REST),
            &["spec.vip", "must be an IPv4 address"],
        ),
        b(
            "vip-hostname",
            vs_with("vip-hostname", "www.example", VS_OK_PORTS, "", VS_OK_REST),
            &["spec.vip", "must be an IPv4 address such as 192.0.2.100"],
        ),
        b(
            "vip-ipv6",
            vs_with("vip-ipv6", "\"2001:db8::1\"", VS_OK_PORTS, "", VS_OK_REST),
            &["spec.vip", "IPv6 is not supported yet"],
        ),
        b(
            "port-zero",
            vs_with(
                "port-zero",
                ok_vip,
                "  ports:\n  - port: 0\n",
                "",
                VS_OK_REST,
            ),
            &["spec.ports[0].port", "greater than or equal to 1"],
        ),
        b(
            "port-too-big",
            vs_with(
                "port-too-big",
                ok_vip,
                "  ports:\n  - port: 70000\n",
                "",
                VS_OK_REST,
            ),
            &["spec.ports[0].port", "less than or equal to 65535"],
        ),
        b(
            "ports-empty",
            vs_with("ports-empty", ok_vip, "  ports: []\n", "", VS_OK_REST),
            &["spec.ports", "at least 1 item"],
        ),
        b(
            "ports-duplicate",
            vs_with(
                "ports-duplicate",
                ok_vip,
                "  ports:\n  - port: 80\n  - port: 80\n    protocol: TCP\n",
                "",
                VS_OK_REST,
            ),
            &["spec.ports", "each port/protocol pair may appear only once"],
        ),
        b(
            "protocol-unknown",
            vs_with(
                "protocol-unknown",
                ok_vip,
                "  ports:\n  - port: 80\n    protocol: SCTP\n",
                "",
                VS_OK_REST,
            ),
            &[
                "spec.ports[0].protocol",
                "supported values: \"TCP\", \"UDP\"",
            ],
        ),
        b(
            "scheduler-unknown",
            vs_with(
                "scheduler-unknown",
                ok_vip,
                VS_OK_PORTS,
                "  scheduler: fastest\n",
                VS_OK_REST,
            ),
            &["spec.scheduler", "supported values", "\"rr\"", "\"mh\""],
        ),
        b(
            "tunnel-unknown",
            vs_with(
                "tunnel-unknown",
                ok_vip,
                VS_OK_PORTS,
                "  tunnel:\n    type: vxlan\n",
                VS_OK_REST,
            ),
            &[
                "spec.tunnel.type",
                "supported values: \"ipip\", \"gue\", \"gre\"",
            ],
        ),
        b(
            "tunnel-port-without-gue",
            vs_with(
                "tunnel-port-without-gue",
                ok_vip,
                VS_OK_PORTS,
                "  tunnel:\n    type: ipip\n    port: 6080\n",
                VS_OK_REST,
            ),
            &["spec.tunnel", "applies only to type gue"],
        ),
        b(
            "vrid-zero",
            vs_with(
                "vrid-zero",
                ok_vip,
                VS_OK_PORTS,
                "",
                &VS_OK_REST.replace("virtualRouterID: 51", "virtualRouterID: 0"),
            ),
            &[
                "spec.balancers.virtualRouterID",
                "greater than or equal to 1",
            ],
        ),
        b(
            "vrid-256",
            vs_with(
                "vrid-256",
                ok_vip,
                VS_OK_PORTS,
                "",
                &VS_OK_REST.replace("virtualRouterID: 51", "virtualRouterID: 256"),
            ),
            &[
                "spec.balancers.virtualRouterID",
                "less than or equal to 255",
            ],
        ),
        b(
            "advert-too-fast",
            vs_with(
                "advert-too-fast",
                ok_vip,
                VS_OK_PORTS,
                "",
                &format!("{VS_OK_REST}    advertIntervalMilliseconds: 5\n"),
            ),
            &[
                "spec.balancers.advertIntervalMilliseconds",
                "greater than or equal to 10",
            ],
        ),
        b(
            "advert-too-slow",
            vs_with(
                "advert-too-slow",
                ok_vip,
                VS_OK_PORTS,
                "",
                &format!("{VS_OK_REST}    advertIntervalMilliseconds: 50000\n"),
            ),
            &[
                "spec.balancers.advertIntervalMilliseconds",
                "less than or equal to 40000",
            ],
        ),
        b(
            "missed-0",
            vs_with(
                "missed-0",
                ok_vip,
                VS_OK_PORTS,
                "",
                &format!("{VS_OK_REST}    missedAdvertisements: 0\n"),
            ),
            &[
                "spec.balancers.missedAdvertisements",
                "greater than or equal to 1",
            ],
        ),
        b(
            "missed-11",
            vs_with(
                "missed-11",
                ok_vip,
                VS_OK_PORTS,
                "",
                &format!("{VS_OK_REST}    missedAdvertisements: 11\n"),
            ),
            &[
                "spec.balancers.missedAdvertisements",
                "less than or equal to 10",
            ],
        ),
        b(
            "advert-not-centiseconds",
            vs_with(
                "advert-not-centiseconds",
                ok_vip,
                VS_OK_PORTS,
                "",
                &format!("{VS_OK_REST}    advertIntervalMilliseconds: 105\n"),
            ),
            &[
                "spec.balancers.advertIntervalMilliseconds",
                "multiple of 10",
            ],
        ),
        b(
            "priority-255",
            vs_with(
                "priority-255",
                ok_vip,
                VS_OK_PORTS,
                "",
                &format!("{VS_OK_REST}    priorities:\n    - nodeName: lb1\n      priority: 255\n"),
            ),
            &[
                "spec.balancers.priorities[0].priority",
                "less than or equal to 254",
            ],
        ),
        b(
            "interface-too-long",
            vs_with(
                "interface-too-long",
                ok_vip,
                VS_OK_PORTS,
                "",
                &format!("{VS_OK_REST}    interface: averyveryverylongname0\n"),
            ),
            &["spec.balancers.interface", "15"],
        ),
        b(
            "unicast-peer-not-ip",
            vs_with(
                "unicast-peer-not-ip",
                ok_vip,
                VS_OK_PORTS,
                "",
                &format!("{VS_OK_REST}    unicastPeers: [lb2.example]\n"),
            ),
            &["spec.balancers.unicastPeers", "must be IPv4 addresses"],
        ),
        b(
            "timeout-over-interval",
            vs_with(
                "timeout-over-interval",
                ok_vip,
                VS_OK_PORTS,
                "  healthCheck:\n    tcp: {}\n    intervalSeconds: 2\n    timeoutSeconds: 5\n",
                VS_OK_REST,
            ),
            &[
                "spec.healthCheck",
                "timeoutSeconds must not be larger than intervalSeconds",
            ],
        ),
        b(
            "check-both",
            vs_with(
                "check-both",
                ok_vip,
                VS_OK_PORTS,
                "  healthCheck:\n    tcp: {}\n    http: {}\n",
                VS_OK_REST,
            ),
            &["spec.healthCheck", "exactly one of http or tcp"],
        ),
        b(
            "check-neither",
            vs_with(
                "check-neither",
                ok_vip,
                VS_OK_PORTS,
                "  healthCheck:\n    intervalSeconds: 3\n",
                VS_OK_REST,
            ),
            &["spec.healthCheck", "exactly one of http or tcp"],
        ),
        b(
            "check-path-relative",
            vs_with(
                "check-path-relative",
                ok_vip,
                VS_OK_PORTS,
                "  healthCheck:\n    http:\n      path: healthcheck.html\n",
                VS_OK_REST,
            ),
            &["spec.healthCheck.http.path", "must start with '/'"],
        ),
        b(
            "check-status-700",
            vs_with(
                "check-status-700",
                ok_vip,
                VS_OK_PORTS,
                "  healthCheck:\n    http:\n      expectStatus: 700\n",
                VS_OK_REST,
            ),
            &[
                "spec.healthCheck.http.expectStatus",
                "less than or equal to 599",
            ],
        ),
        b(
            "no-balancers",
            vs(
                "no-balancers",
                &format!("  vip: {ok_vip}\n{VS_OK_PORTS}  realServerSelector: {{}}\n"),
            ),
            &["spec.balancers", "Required value"],
        ),
        b(
            "rs-address-not-ip",
            rs("rs-address-not-ip", "  address: web1.example\n"),
            &[
                "spec.address",
                "must be an IPv4 address such as 198.51.100.10",
            ],
        ),
        b(
            "rs-node-without-address",
            rs("rs-node-without-address", "  nodeName: node-a\n"),
            &["spec.address", "Required value"],
        ),
        b(
            "rs-weight-negative",
            rs(
                "rs-weight-negative",
                "  address: 198.51.100.10\n  weight: -1\n",
            ),
            &["spec.weight", "greater than or equal to 0"],
        ),
        b(
            "rs-weight-too-big",
            rs(
                "rs-weight-too-big",
                "  address: 198.51.100.10\n  weight: 70000\n",
            ),
            &["spec.weight", "less than or equal to 65535"],
        ),
        b(
            "rs-port-zero",
            rs("rs-port-zero", "  address: 198.51.100.10\n  port: 0\n"),
            &["spec.port", "greater than or equal to 1"],
        ),
    ]
}

#[test]
fn invalid_objects_are_refused_with_field_and_fix_and_not_stored() {
    let cp = ControlPlane::shared().unwrap();
    ensure_crds(cp);
    let ns = create_namespace(cp, "bad");
    let cases = bad_inputs();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let out = cp.kubectl_apply_stdin(&case.yaml, &ns).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{}: accepted, expected a refusal", case.name));
            continue;
        }
        for want in case.expect {
            if !stderr.contains(want) {
                failures.push(format!("{}: refusal lacks {want:?}:\n{stderr}", case.name));
            }
        }
        let get = cp
            .kubectl()
            .args(["get", case.kind, case.name, "-n", &ns])
            .output()
            .unwrap();
        let get_err = String::from_utf8_lossy(&get.stderr);
        if get.status.success() || !get_err.contains("NotFound") {
            failures.push(format!(
                "{}: refused object is stored or lookup failed oddly: {get_err}",
                case.name
            ));
        }
    }
    // The same objects with the bad part fixed are accepted: the refusals come from the rule
    // under test, not from something else in the fixture.
    let good = vs_with("good", "192.0.2.100", VS_OK_PORTS, "", VS_OK_REST);
    let out = cp.kubectl_apply_stdin(&good, &ns).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = rs("good", "  address: 198.51.100.10\n  nodeName: node-a\n");
    let out = cp.kubectl_apply_stdin(&good, &ns).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cp.run(
        "kubectl delete namespace",
        cp.kubectl()
            .args(["delete", "namespace", &ns, "--wait=false"]),
    )
    .unwrap();
}

#[tokio::test]
async fn status_list_maps_let_each_balancer_own_its_entry() {
    // Two daemons server-side-apply their own status.balancers[] entries with different field
    // managers, as the balancer daemons do; both entries must survive (a list-map keyed by node,
    // not an atomic list).
    use kube::api::{Api, Patch, PatchParams};
    use lvstun_crds::v1alpha1::VirtualService;

    let cp = ControlPlane::shared().unwrap();
    ensure_crds(cp);
    let ns = create_namespace(cp, "ssa");
    let out = cp
        .kubectl_apply_stdin(
            &vs_with("www", "192.0.2.100", VS_OK_PORTS, "", VS_OK_REST),
            &ns,
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api: Api<VirtualService> = Api::namespaced(cp.client().await.unwrap(), &ns);
    for (node, state) in [("lb1", "Master"), ("lb2", "Backup")] {
        let patch = serde_json::json!({
            "apiVersion": "lvstun.io/v1alpha1",
            "kind": "VirtualService",
            "status": {"balancers": [{"node": node, "state": state}]},
        });
        api.patch_status(
            "www",
            &PatchParams::apply(&format!("lvstun-node/{node}")),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
    }
    let vs = api.get("www").await.unwrap();
    let mut entries: Vec<(String, String)> = vs
        .status
        .unwrap()
        .balancers
        .iter()
        .map(|b| (b.node.clone(), format!("{:?}", b.state)))
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            ("lb1".to_string(), "Master".to_string()),
            ("lb2".to_string(), "Backup".to_string())
        ]
    );
    cp.run(
        "kubectl delete namespace",
        cp.kubectl()
            .args(["delete", "namespace", &ns, "--wait=false"]),
    )
    .unwrap();
}
