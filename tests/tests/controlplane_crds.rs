//! The CRDs, examples, chart and manifests against a real kube-apiserver (with etcd and
//! kube-controller-manager) started by the harness: what the API server accepts, what it refuses
//! and with which message, and that a refused object is not stored.
//!
//! Objects are written and read through the kube client; a refusal is the API server's typed
//! answer (`kube::Error::Api` with its status code and message). `kubectl` stays where what it
//! prints is the fact under test: `kubectl apply` of the examples as users run it, and the
//! printer columns and category of `kubectl get`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns panic on purpose

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lvstun_crds::v1alpha1::{RealServer, VirtualService};
use lvstun_tests::cluster::{self, from_yaml};
use lvstun_tests::controlplane::{ControlPlane, repo_root, unique_namespace};

/// The control plane's admin client, with the CRDs applied and Established.
async fn with_crds() -> (&'static ControlPlane, Client) {
    let cp = ControlPlane::shared().unwrap();
    let client = cp.client().await.unwrap();
    cluster::ensure_crds(&client).await.unwrap();
    (cp, client)
}

async fn create_namespace(client: &Client, prefix: &str) -> String {
    let ns = unique_namespace(prefix);
    cluster::create_namespace(client, &ns, &[]).await.unwrap();
    ns
}

/// `kubectl get ARGS`: its table (or names) is what users see, so the CLI itself is tested.
fn kubectl_get(cp: &ControlPlane, args: &[&str]) -> String {
    cp.run(
        &format!("kubectl get {}", args.join(" ")),
        cp.kubectl().arg("get").args(args),
    )
    .unwrap()
}

#[tokio::test]
async fn examples_are_accepted_defaulted_and_printed() {
    let (cp, client) = with_crds().await;
    let ns = create_namespace(&client, "examples").await;
    // `kubectl apply -f deploy/examples` is what the README tells users to run.
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

    // The API server filled in the classic recipe's defaults. Read as stored, untyped: the
    // typed model fills the same defaults on the client side, so only the stored document
    // proves the server's.
    let stored = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<VirtualService>(&()),
    )
    .get("www")
    .await
    .unwrap();
    let spec = &stored.data["spec"];
    let hc = &spec["healthCheck"];
    assert_eq!(hc["http"]["path"], "/healthcheck.html", "{hc}");
    assert_eq!(hc["http"]["expectBody"], "OK", "{hc}");
    assert_eq!(hc["http"]["expectStatus"], 200, "{hc}");
    assert_eq!(hc["intervalSeconds"], 2, "{hc}");
    assert_eq!(spec["tunnel"]["type"], "ipip");
    assert_eq!(spec["balancers"]["preempt"], true);
    // RFC 9568's Master_Down_Interval: three missed advertisements.
    assert_eq!(spec["balancers"]["missedAdvertisements"], 3);
    // And the typed reading agrees with what was stored.
    let vs = Api::<VirtualService>::namespaced(client.clone(), &ns)
        .get("www")
        .await
        .unwrap();
    assert_eq!(vs.spec.health_check.interval_seconds, 2);
    assert_eq!(vs.spec.balancers.missed_advertisements, 3);

    // Printer columns, through the short names and the category.
    let table = kubectl_get(cp, &["lvsvc", "-n", &ns]);
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
    assert_eq!(&row[..4], ["www", "192.0.2.100", "80", "mh"], "{table}");

    let table = kubectl_get(cp, &["lvsrs", "-n", &ns]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "ADDRESS", "WEIGHT", "HEALTHY", "TUNNELREADY", "AGE"],
        "{table}"
    );
    assert!(table.contains("198.51.100.10"), "{table}");
    assert!(table.contains("198.51.100.130"), "{table}");

    let all = kubectl_get(cp, &["lvstun", "-n", &ns, "-o", "name"]);
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
    cluster::delete_namespace(&client, &ns, false)
        .await
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
    kind: Kind,
    name: &'static str,
    yaml: String,
    expect: &'static [&'static str],
}

/// Which of the two kinds a bad object is.
#[derive(Clone, Copy, Debug)]
enum Kind {
    VirtualService,
    RealServer,
}

fn bad_inputs() -> Vec<Bad> {
    let ok_vip = "192.0.2.100";
    let b = |name: &'static str, yaml: String, expect: &'static [&'static str]| Bad {
        kind: if yaml.contains("kind: RealServer") {
            Kind::RealServer
        } else {
            Kind::VirtualService
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

/// Whether object `name` of this kind is stored in `ns`.
async fn stored(client: &Client, kind: Kind, ns: &str, name: &str) -> bool {
    let found = match kind {
        Kind::VirtualService => Api::<VirtualService>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map(|o| o.is_some()),
        Kind::RealServer => Api::<RealServer>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map(|o| o.is_some()),
    };
    found.unwrap_or_else(|e| panic!("looking up {kind:?} {name}: {e}"))
}

/// Create the object of `yaml` in `ns` as written: bad objects do not fit the typed model (an
/// unknown scheduler or protocol has no variant), so they go as documents of their kind.
async fn create_as_written(client: &Client, kind: Kind, ns: &str, yaml: &str) -> kube::Result<()> {
    let resource = match kind {
        Kind::VirtualService => ApiResource::erase::<VirtualService>(&()),
        Kind::RealServer => ApiResource::erase::<RealServer>(&()),
    };
    let obj = from_yaml::<DynamicObject>(yaml).unwrap().remove(0);
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        .create(&PostParams::default(), &obj)
        .await
        .map(drop)
}

#[tokio::test]
async fn invalid_objects_are_refused_with_field_and_fix_and_not_stored() {
    let (_cp, client) = with_crds().await;
    let ns = create_namespace(&client, "bad").await;
    let cases = bad_inputs();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        match create_as_written(&client, case.kind, &ns, &case.yaml).await {
            Ok(()) => failures.push(format!("{}: accepted, expected a refusal", case.name)),
            // 422 Invalid: the schema or a CEL rule refused it, with the field and the fix.
            Err(kube::Error::Api(status)) => {
                if status.code != 422 {
                    failures.push(format!("{}: refused with {status:?}, not 422", case.name));
                }
                for want in case.expect {
                    if !status.message.contains(want) {
                        failures.push(format!(
                            "{}: refusal lacks {want:?}:\n{}",
                            case.name, status.message
                        ));
                    }
                }
            }
            Err(e) => failures.push(format!("{}: not an API refusal: {e}", case.name)),
        }
        if stored(&client, case.kind, &ns, case.name).await {
            failures.push(format!("{}: refused object is stored", case.name));
        }
    }
    // The same objects with the bad part fixed are accepted: the refusals come from the rule
    // under test, not from something else in the fixture.
    let good = vs_with("good", "192.0.2.100", VS_OK_PORTS, "", VS_OK_REST);
    create_as_written(&client, Kind::VirtualService, &ns, &good)
        .await
        .unwrap();
    let good = rs("good", "  address: 198.51.100.10\n  nodeName: node-a\n");
    create_as_written(&client, Kind::RealServer, &ns, &good)
        .await
        .unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cluster::delete_namespace(&client, &ns, false)
        .await
        .unwrap();
}

#[tokio::test]
async fn status_list_maps_let_each_balancer_own_its_entry() {
    // Two daemons server-side-apply their own status.balancers[] entries with different field
    // managers, as the balancer daemons do; both entries must survive (a list-map keyed by node,
    // not an atomic list).
    let (_cp, client) = with_crds().await;
    let ns = create_namespace(&client, "ssa").await;
    let api: Api<VirtualService> = Api::namespaced(client.clone(), &ns);
    let www =
        from_yaml::<VirtualService>(&vs_with("www", "192.0.2.100", VS_OK_PORTS, "", VS_OK_REST))
            .unwrap()
            .remove(0);
    cluster::apply(&api, &www).await.unwrap();
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
    cluster::delete_namespace(&client, &ns, false)
        .await
        .unwrap();
}
