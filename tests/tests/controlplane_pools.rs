//! Admin-owned address pools against a real kube-apiserver: the chart's VIPPolicy and its
//! ValidatingAdmissionPolicy, installed with `helm install` as the README says (release
//! `lvstun`), decide which VirtualServices are admitted. A table of cases proves: inside a pool
//! admitted; outside every pool, in a pool the namespace may not use, or with a balancer node
//! selector reaching outside the pool's, refused with exactly its message and not stored; an
//! UPDATE is checked like a CREATE; the VIPPolicy's own CEL refuses a bad CIDR; and after
//! `helm upgrade --set vipPolicy.enforce=false` everything is admitted, with a warning.
//!
//! Run: `cargo test -p lvstun-tests --test controlplane_pools -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on purpose

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use lvstun_tests::cluster::{self, poll};
use lvstun_tests::controlplane::{ControlPlane, repo_root};
use lvstun_tests::refusals::base_object;
use serde_json::{Value, json};

/// The release, as in the README: the VIPPolicy is named after it.
const RELEASE: &str = "lvstun";
const RELEASE_NAMESPACE: &str = "lvstun-system";
/// The admission policy (and binding) the chart names after the release.
const POLICY: &str = "lvstun-vip-policy";

/// The pools under test: the chart's example pool, and one lent to team-a alone whose balancers
/// must carry `zone=a` and sit in rack r1 or r2.
fn pools() -> Value {
    json!([
        {"name": "example", "cidrs": ["192.0.2.0/24"], "namespaces": ["*"],
         "balancerNodeSelector": {"matchLabels": {"lvstun.io/balancer": "true"}}},
        {"name": "team-a", "cidrs": ["203.0.113.0/25", "198.51.100.77/32"], "namespaces": ["team-a"],
         "balancerNodeSelector": {
            "matchLabels": {"lvstun.io/balancer": "true", "zone": "a"},
            "matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1", "r2"]}]}}
    ])
}

/// A balancer node selector of team-a's pool and then some.
fn team_a_selector() -> Value {
    json!({
        "matchLabels": {"lvstun.io/balancer": "true", "zone": "a", "disk": "ssd"},
        "matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1", "r2"]}]
    })
}

/// One VirtualService to send: the examples' www with this VIP and balancer node selector.
struct Case {
    name: &'static str,
    namespace: &'static str,
    vip: &'static str,
    selector: Value,
    /// `None`: admitted; `Some(message)`: refused with the policy's exact message.
    refusal: Option<String>,
}

fn no_pool(vip: &str, ns: &str) -> Option<String> {
    Some(format!(
        "spec.vip {vip} is in no VIPPolicy pool that namespace \"{ns}\" may use: ask a cluster admin to add it to VIPPolicy lvstun"
    ))
}

fn cases() -> Vec<Case> {
    let default_selector = json!({"matchLabels": {"lvstun.io/balancer": "true"}});
    vec![
        Case {
            name: "example-pool-any-namespace",
            namespace: "team-b",
            vip: "192.0.2.100",
            selector: default_selector.clone(),
            refusal: None,
        },
        Case {
            name: "team-pool-own-namespace",
            namespace: "team-a",
            vip: "203.0.113.7",
            selector: team_a_selector(),
            refusal: None,
        },
        Case {
            name: "team-pool-single-address",
            namespace: "team-a",
            vip: "198.51.100.77",
            selector: team_a_selector(),
            refusal: None,
        },
        Case {
            name: "outside-every-pool",
            namespace: "team-a",
            vip: "203.0.113.200",
            selector: team_a_selector(),
            refusal: no_pool("203.0.113.200", "team-a"),
        },
        Case {
            name: "next-to-a-single-address",
            namespace: "team-a",
            vip: "198.51.100.78",
            selector: team_a_selector(),
            refusal: no_pool("198.51.100.78", "team-a"),
        },
        Case {
            name: "namespace-not-allowed",
            namespace: "team-b",
            vip: "203.0.113.7",
            selector: team_a_selector(),
            refusal: Some(
                "spec.vip 203.0.113.7 is in VIPPolicy lvstun pool team-a, which namespace \"team-b\" may not use: ask a cluster admin to add \"team-b\" to that pool's namespaces".into(),
            ),
        },
        Case {
            name: "selector-lacks-pool-labels",
            namespace: "team-a",
            vip: "203.0.113.8",
            selector: default_selector.clone(),
            refusal: Some(
                "spec.balancers.nodeSelector selects nodes outside those of VIPPolicy lvstun pool team-a, which holds spec.vip 203.0.113.8 for namespace \"team-a\": add zone=a to spec.balancers.nodeSelector.matchLabels and copy the pool's balancerNodeSelector.matchExpressions into spec.balancers.nodeSelector.matchExpressions, or ask a cluster admin to widen the pool".into(),
            ),
        },
        Case {
            name: "selector-other-label-value",
            namespace: "team-a",
            vip: "203.0.113.9",
            selector: json!({
                "matchLabels": {"lvstun.io/balancer": "true", "zone": "b"},
                "matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1", "r2"]}]
            }),
            refusal: Some(
                "spec.balancers.nodeSelector selects nodes outside those of VIPPolicy lvstun pool team-a, which holds spec.vip 203.0.113.9 for namespace \"team-a\": add zone=a to spec.balancers.nodeSelector.matchLabels, or ask a cluster admin to widen the pool".into(),
            ),
        },
        Case {
            name: "selector-wider-expression",
            namespace: "team-a",
            vip: "203.0.113.10",
            selector: json!({
                "matchLabels": {"lvstun.io/balancer": "true", "zone": "a"},
                "matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1", "r2", "r3"]}]
            }),
            refusal: Some(
                "spec.balancers.nodeSelector selects nodes outside those of VIPPolicy lvstun pool team-a, which holds spec.vip 203.0.113.10 for namespace \"team-a\": copy the pool's balancerNodeSelector.matchExpressions into spec.balancers.nodeSelector.matchExpressions, or ask a cluster admin to widen the pool".into(),
            ),
        },
        Case {
            name: "example-pool-other-nodes",
            namespace: "team-b",
            vip: "192.0.2.101",
            selector: json!({"matchLabels": {"kubernetes.io/hostname": "lb2"}}),
            refusal: Some(
                "spec.balancers.nodeSelector selects nodes outside those of VIPPolicy lvstun pool example, which holds spec.vip 192.0.2.101 for namespace \"team-b\": add lvstun.io/balancer=true to spec.balancers.nodeSelector.matchLabels, or ask a cluster admin to widen the pool".into(),
            ),
        },
    ]
}

fn api_for(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("lvstun.io", "v1alpha1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

fn policies(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("lvstun.io", "v1alpha1", "VIPPolicy");
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

fn object(case: &Case) -> DynamicObject {
    let mut vs = base_object("VirtualService", case.name);
    vs["spec"]["vip"] = json!(case.vip);
    vs["spec"]["balancers"]["nodeSelector"] = case.selector.clone();
    serde_json::from_value(vs).unwrap()
}

/// The API server's whole message for a VirtualService the policy refused.
fn denied(name: &str, message: &str) -> String {
    format!(
        "virtualservices.lvstun.io \"{name}\" is forbidden: ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: {message}"
    )
}

/// What the API server answers to one create: `Ok(())` or its refusal's (code, message).
async fn create(api: &Api<DynamicObject>, obj: &DynamicObject) -> Result<(), (u16, String)> {
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err((s.code, s.message)),
        Err(e) => Err((0, e.to_string())),
    }
}

fn helm_values(enforce: bool) -> Vec<String> {
    vec![
        "--set".into(),
        format!("vipPolicy.enforce={enforce}"),
        "--set-json".into(),
        format!("vipPolicy.pools={}", pools()),
    ]
}

/// Waits until the policy (as bound now) answers a probe the way `refused` says: the API
/// server loads policies and bindings a moment after they are written.
async fn until_policy_answers(client: &Client, refused: bool) {
    let api = api_for(client, "team-a", "VirtualService");
    let probe = Case {
        name: "probe",
        namespace: "team-a",
        vip: "203.0.113.250",
        selector: team_a_selector(),
        refusal: None,
    };
    poll(
        "the VIP policy to take effect",
        Duration::from_secs(30),
        || async {
            let r = create(&api, &object(&probe)).await;
            if r.is_ok() {
                let _ = api.delete("probe", &DeleteParams::default()).await;
            }
            r
        },
        |r| (r.is_err() == refused).then_some(()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn virtual_services_are_admitted_only_inside_a_pool_their_namespace_may_use() {
    let cp = ControlPlane::shared().unwrap();
    let client = cp.client().await.unwrap();
    for ns in ["team-a", "team-b"] {
        cluster::create_namespace(&client, ns, &[]).await.unwrap();
    }
    let chart = repo_root().join("deploy/helm/lvstun");
    let out = cp
        .run(
            "helm install",
            cp.helm()
                .args(["install", RELEASE])
                .arg(&chart)
                .args(["-n", RELEASE_NAMESPACE, "--create-namespace"])
                .args(helm_values(true)),
        )
        .unwrap();
    assert!(out.contains("STATUS: deployed"), "{out}");
    until_policy_answers(&client, true).await;

    // Every case: admitted and stored, or refused with exactly its message and not stored.
    let mut wrong = Vec::new();
    let table = cases();
    for case in &table {
        let api = api_for(&client, case.namespace, "VirtualService");
        let got = create(&api, &object(case)).await;
        let want = case.refusal.as_deref().map(|m| (422, denied(case.name, m)));
        match (&got, &want) {
            (Ok(()), None) => {}
            (Err(g), Some(w)) if g == w => {}
            _ => wrong.push(format!("{}: want {want:?}\n  got {got:?}", case.name)),
        }
        let stored = api.get_opt(case.name).await.unwrap().is_some();
        if stored != case.refusal.is_none() {
            wrong.push(format!("{}: stored = {stored}", case.name));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // An UPDATE is checked as a CREATE: moving an admitted VIP out of the pools is refused.
    let vss = api_for(&client, "team-a", "VirtualService");
    let mut moved = vss.get("team-pool-own-namespace").await.unwrap();
    moved.data["spec"]["vip"] = json!("203.0.113.201");
    match vss
        .replace("team-pool-own-namespace", &PostParams::default(), &moved)
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(
            (s.code, s.message),
            (
                422,
                denied(
                    "team-pool-own-namespace",
                    &no_pool("203.0.113.201", "team-a").unwrap()
                )
            )
        ),
        other => panic!("moving the VIP out of the pools: {other:?}"),
    }

    // The VIPPolicy's own schema refuses what can never be a pool.
    let bad_pools = [
        ("192.0.2.0/33", "spec.pools[0].cidrs[0]"),
        ("2001:db8::/32", "spec.pools[0].cidrs[0]"),
    ];
    for (cidr, field) in bad_pools {
        let policy: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "lvstun.io/v1alpha1", "kind": "VIPPolicy",
            "metadata": {"name": "bad-cidr"},
            "spec": {"pools": [{"name": "p", "cidrs": [cidr], "namespaces": ["*"]}]}
        }))
        .unwrap();
        match policies(&client)
            .create(&PostParams::default(), &policy)
            .await
        {
            Err(kube::Error::Api(s)) => assert_eq!(
                (s.code, s.message),
                (
                    422,
                    format!(
                        "VIPPolicy.lvstun.io \"bad-cidr\" is invalid: {field}: Invalid value: \"{cidr}\": spec.pools: cidr {cidr} is not an IPv4 CIDR: write an address, a slash and a prefix length, e.g. 192.0.2.0/24"
                    )
                )
            ),
            other => panic!("a pool with cidr {cidr}: {other:?}"),
        }
    }

    // enforce=false: the same policy only warns; every refused case is admitted.
    cp.run(
        "helm upgrade enforce=false",
        cp.helm()
            .args(["upgrade", RELEASE])
            .arg(&chart)
            .args(["-n", RELEASE_NAMESPACE])
            .args(helm_values(false)),
    )
    .unwrap();
    until_policy_answers(&client, false).await;
    let mut wrong = Vec::new();
    for case in table.iter().filter(|c| c.refusal.is_some()) {
        let api = api_for(&client, case.namespace, "VirtualService");
        if let Err(e) = create(&api, &object(case)).await {
            wrong.push(format!("{}: refused with enforce=false: {e:?}", case.name));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // ... and the user guide's way to find stored objects outside the pools (section 9): a
    // server-side dry run of replacing each, whose warnings name them.
    let listed = cp
        .run(
            "kubectl get virtualservices",
            cp.kubectl()
                .args(["get", "virtualservices", "-n", "team-a", "-o", "json"]),
        )
        .unwrap();
    let mut replace = cp
        .kubectl()
        .args(["replace", "--dry-run=server", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    replace
        .stdin
        .take()
        .unwrap()
        .write_all(listed.as_bytes())
        .unwrap();
    let replaced = replace.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&replaced.stderr);
    assert!(replaced.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("Warning:"))
        .collect();
    let outside = table
        .iter()
        .filter(|c| c.namespace == "team-a" && c.refusal.is_some())
        .count();
    assert_eq!(warnings.len(), outside, "{stderr}");
    assert!(
        stderr.contains(&no_pool("203.0.113.200", "team-a").unwrap()),
        "{stderr}"
    );
    let stored = api_for(&client, "team-a", "VirtualService")
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        stored
            .items
            .iter()
            .any(|o| o.name_any() == "outside-every-pool")
    );
}
