//! The chart's status policy (`deploy/helm/lvstun/templates/status-tokens-policy.yaml`, issue
//! 15) against a real kube-apiserver: a node daemon's token writes only its own node's status
//! entries. The tokens are the chart's real ServiceAccounts' (a `helm install`), each bound to a
//! Pod on a Node as the kubelet's would be (the Pods never run: no kubelet is needed for the API
//! server to put the node into the token), and the writes are the daemons' own server-side-apply
//! bodies and field managers (`lvstun_node::status_writes`).
//!
//! It proves: lb1's balancer token applies its own `status.balancers[node=lb1]` and
//! `status.checks[balancer=lb1]` entries, and withdraws them; it cannot set lb2's entry, nor
//! the operator's `conditions`; web1's web token applies `TunnelReady` on the RealServer whose
//! `spec.nodeName` is web1, withdraws it once the RealServer names another node, and can neither
//! write it on another node's RealServer, nor remove another node's, nor touch the operator's
//! `Healthy`; a token of either ServiceAccount that is bound to no pod is refused. Each refusal
//! is checked by its exact message.
//!
//! Run: `cargo test -p lvstun-tests --test controlplane_status_tokens -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use lvstun_crds::conditions::Reason;
use lvstun_crds::v1alpha1::{BalancerStatus, CheckStatus, RealServer, VirtualService, VrrpState};
use lvstun_node::status_writes::{
    ObjectKey, Readiness, WebWrite, balancer_entry_body, balancer_field_manager, check_entry_body,
    web_body, web_field_manager,
};
use lvstun_tests::cluster::{self, apply_examples, merge};
use lvstun_tests::controlplane::{ControlPlane, client_from_kubeconfig};
use lvstun_tests::operator_fixture::{Guard, Install};
use serde_json::{Value, json};

/// What the API server answered to one status write.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Written,
    Refused { code: u16, message: String },
}

/// A server-side apply of `body` to `name`'s status with field manager `manager` (forced, as
/// the daemons apply).
async fn write<K>(api: &Api<K>, name: &str, manager: &str, body: Value) -> Outcome
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams::apply(manager).force();
    outcome(
        name,
        api.patch_status(name, &params, &Patch::Apply(body)).await,
    )
}

/// A JSON merge patch of `name`'s status (what no daemon sends, but a stolen token could).
async fn merge_status<K>(api: &Api<K>, name: &str, body: Value) -> Outcome
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams::default();
    outcome(
        name,
        api.patch_status(name, &params, &Patch::Merge(body)).await,
    )
}

fn outcome<K>(name: &str, result: Result<K, kube::Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Written,
        Err(kube::Error::Api(e)) => Outcome::Refused {
            code: e.code,
            message: e.message,
        },
        Err(e) => panic!("writing the status of {name}: {e}"),
    }
}

/// The refusal the policy of release `release` answers with `message` to a write of the
/// status of `plural` (`virtualservices`, `realservers`) `name`.
fn refused(release: &str, plural: &str, name: &str, message: &str) -> Outcome {
    Outcome::Refused {
        code: 403,
        message: format!(
            "{plural}.lvstun.io \"{name}\" is forbidden: ValidatingAdmissionPolicy \
             '{release}-node-status' with binding '{release}-node-status' denied request: \
             {message}"
        ),
    }
}

fn time(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

/// A balancer entry as `balancer::report::balancer_entries` makes one.
fn balancer_entry(node: &str, state: VrrpState) -> BalancerStatus {
    BalancerStatus {
        node: node.into(),
        state,
        priority: Some(100),
        last_transition_time: Some(time(1_000)),
        programmed_destinations: BTreeMap::from([("80/TCP".into(), 2)]),
        message: None,
        refused_kernel_settings: Vec::new(),
        deleted_externally: None,
    }
}

/// A check entry as `balancer::report::check_entries` makes one.
fn check_entry(balancer: &str) -> CheckStatus {
    CheckStatus {
        balancer: balancer.into(),
        healthy: true,
        consecutive_failures: 0,
        last_check_time: Some(time(1_000)),
        last_transition_time: Some(time(900)),
        message: None,
    }
}

/// The web daemon's write of `TunnelReady` (ready) on `rs`, or its withdrawal.
fn tunnel_ready(rs: &ObjectKey, ready: bool) -> WebWrite {
    let verdict = Readiness {
        ready: true,
        reason: Reason::Ready,
        message: "tunl0 up".into(),
    };
    WebWrite {
        real_server: rs.clone(),
        condition: ready.then(|| verdict.condition(Some(1), time(1_000))),
    }
}

/// A kube client authenticated with `token`.
async fn client_with(cp: &ControlPlane, user: &str, token: &str) -> Client {
    let kubeconfig = cp.write_kubeconfig(user, token).unwrap();
    client_from_kubeconfig(&kubeconfig).await.unwrap()
}

fn condition_types(status: &Value) -> Vec<String> {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_daemons_token_writes_only_its_own_nodes_status_entries() {
    let cp = ControlPlane::shared().unwrap();
    let admin = cp.client().await.unwrap();
    cluster::ensure_crds(&admin).await.unwrap();
    let install = Install::new(cp, "tokens", &[]).await;
    let release = install.release.as_str();
    let (balancer_sa, web_sa) = (format!("{release}-balancer"), format!("{release}-web"));

    // Nodes unique to the run: cluster-wide names other tests on this control plane may use.
    let mut guard = Guard::new(cp);
    let ns = guard.namespace("tokens").await;
    let suffix = ns.rsplit('-').next().unwrap_or("0").to_string();
    let [lb1, lb2, web1, web2] = ["lb1", "lb2", "web1", "web2"].map(|n| format!("{n}-{suffix}"));
    for n in [&lb1, &lb2, &web1, &web2] {
        guard.node(n, &[]).await;
    }
    apply_examples(&admin, &ns).await.unwrap();
    let (vs, rs1, rs2) = ("www", "web1", "web2");
    let key = |name: &str| ObjectKey {
        namespace: ns.clone(),
        name: name.into(),
    };
    let admin_vss: Api<VirtualService> = Api::namespaced(admin.clone(), &ns);
    let admin_rss: Api<RealServer> = Api::namespaced(admin.clone(), &ns);
    merge(&admin_rss, rs1, json!({"spec": {"nodeName": web1}}))
        .await
        .unwrap();
    merge(&admin_rss, rs2, json!({"spec": {"nodeName": web2}}))
        .await
        .unwrap();

    // What the others wrote before (as the admin, whom the policy does not match): the
    // operator's conditions, lb2's entries, web2's TunnelReady.
    let ready = json!({"type": "Ready", "status": "True", "reason": "Ready", "message": "ok",
                       "lastTransitionTime": "2026-01-01T00:00:00Z"});
    let healthy = json!({"type": "Healthy", "status": "True", "reason": "Checked",
                         "message": "by lb2", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    let operator = "lvstun-operator";
    let vs_status = json!({"apiVersion": "lvstun.io/v1alpha1", "kind": "VirtualService",
                           "status": {"conditions": [ready], "observedGeneration": 1}});
    assert_eq!(
        write(&admin_vss, vs, operator, vs_status).await,
        Outcome::Written
    );
    for rs in [rs1, rs2] {
        let body = json!({"apiVersion": "lvstun.io/v1alpha1", "kind": "RealServer",
                          "status": {"conditions": [healthy]}});
        assert_eq!(
            write(&admin_rss, rs, operator, body).await,
            Outcome::Written
        );
    }
    let lb2_manager = balancer_field_manager(&lb2);
    let body = balancer_entry_body(&key(vs), Some(&balancer_entry(&lb2, VrrpState::Backup)));
    assert_eq!(
        write(&admin_vss, vs, &lb2_manager, body).await,
        Outcome::Written
    );
    let body = check_entry_body(&key(rs1), Some(&check_entry(&lb2)));
    assert_eq!(
        write(&admin_rss, rs1, &lb2_manager, body).await,
        Outcome::Written
    );
    let body = web_body(&tunnel_ready(&key(rs2), true));
    let web2_manager = web_field_manager(&web2);
    assert_eq!(
        write(&admin_rss, rs2, &web2_manager, body).await,
        Outcome::Written
    );

    // The daemons' tokens, bound to a Pod of their ServiceAccount on their node.
    let token = |sa: String, pod: String, node: String| {
        let (admin, ns) = (admin.clone(), install.namespace.clone());
        async move {
            cluster::pod_bound_token(&admin, &ns, &sa, &pod, &node, 3600)
                .await
                .unwrap()
        }
    };
    let lb1_token = token(balancer_sa.clone(), format!("balancer-{lb1}"), lb1.clone()).await;
    let web1_token = token(web_sa.clone(), format!("web-{web1}"), web1.clone()).await;
    let lb1_client = client_with(cp, &format!("{ns}-lb1"), &lb1_token).await;
    let web1_client = client_with(cp, &format!("{ns}-web1"), &web1_token).await;
    let lb1_vss: Api<VirtualService> = Api::namespaced(lb1_client.clone(), &ns);
    let lb1_rss: Api<RealServer> = Api::namespaced(lb1_client, &ns);
    let web1_rss: Api<RealServer> = Api::namespaced(web1_client, &ns);
    let lb1_manager = balancer_field_manager(&lb1);
    let web1_manager = web_field_manager(&web1);
    let vs_before = admin_vss.get_status(vs).await.unwrap();
    let status_of = |v: &VirtualService| serde_json::to_value(v.status.clone()).unwrap();

    // The API server enforces a new admission policy only once its policy cache has loaded it
    // (a moment after the install). Until then this write, by the balancer's token without a
    // node, gets through; it writes exactly what step 1 writes, so waiting for its refusal
    // changes nothing else.
    let unbound = cluster::service_account_token(&admin, &install.namespace, &balancer_sa, 3600)
        .await
        .unwrap();
    let unbound_vss: Api<VirtualService> = Api::namespaced(
        client_with(cp, &format!("{ns}-policy-probe"), &unbound).await,
        &ns,
    );
    cluster::poll(
        "the status policy in force",
        Duration::from_secs(60),
        || {
            let own = balancer_entry_body(&key(vs), Some(&balancer_entry(&lb1, VrrpState::Master)));
            let (api, manager) = (unbound_vss.clone(), lb1_manager.clone());
            async move { write(&api, vs, &manager, own).await }
        },
        |outcome| (*outcome != Outcome::Written).then_some(()),
    )
    .await
    .unwrap();

    // 1. lb1's balancer token: its own entries, as the daemon applies them.
    let own = balancer_entry_body(&key(vs), Some(&balancer_entry(&lb1, VrrpState::Master)));
    assert_eq!(
        write(&lb1_vss, vs, &lb1_manager, own).await,
        Outcome::Written
    );
    let own_check = check_entry_body(&key(rs1), Some(&check_entry(&lb1)));
    assert_eq!(
        write(&lb1_rss, rs1, &lb1_manager, own_check).await,
        Outcome::Written
    );
    let after = admin_vss.get_status(vs).await.unwrap();
    let mut entries: Vec<(String, VrrpState)> = after
        .status
        .as_ref()
        .unwrap()
        .balancers
        .iter()
        .map(|b| (b.node.clone(), b.state))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        entries,
        [
            (lb1.clone(), VrrpState::Master),
            (lb2.clone(), VrrpState::Backup)
        ]
    );
    assert_eq!(
        status_of(&after)["conditions"],
        status_of(&vs_before)["conditions"],
        "the operator's conditions stay"
    );

    // 2. ...but not lb2's entry, nor the operator's conditions.
    let theirs = balancer_entry_body(&key(vs), Some(&balancer_entry(&lb2, VrrpState::Fault)));
    assert_eq!(
        write(&lb1_vss, vs, &lb1_manager, theirs).await,
        refused(
            release,
            "virtualservices",
            vs,
            &format!(
                "the balancer daemon of node {lb1} may write only status.balancers[node={lb1}], \
                 not status.balancers[node={lb2}]"
            )
        )
    );
    let mut with_conditions =
        balancer_entry_body(&key(vs), Some(&balancer_entry(&lb1, VrrpState::Master)));
    with_conditions["status"]["conditions"] = json!([{"type": "Ready", "status": "False",
        "reason": "NoBalancer", "message": "forged", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
    assert_eq!(
        write(&lb1_vss, vs, &lb1_manager, with_conditions).await,
        refused(
            release,
            "virtualservices",
            vs,
            &format!(
                "the balancer daemon of node {lb1} may write only its own entry of \
                 status.balancers, not status.conditions"
            )
        )
    );
    // (An entry equal to lb2's would change nothing, and pass: a forged one differs.)
    let forged = CheckStatus {
        healthy: false,
        consecutive_failures: 3,
        ..check_entry(&lb2)
    };
    let theirs_check = check_entry_body(&key(rs1), Some(&forged));
    assert_eq!(
        write(&lb1_rss, rs1, &lb1_manager, theirs_check).await,
        refused(
            release,
            "realservers",
            rs1,
            &format!(
                "the balancer daemon of node {lb1} may write only status.checks[balancer={lb1}], \
                 not status.checks[balancer={lb2}]"
            )
        )
    );

    // 3. lb1 withdraws its entries (an empty list), as the daemon does.
    let withdraw = balancer_entry_body(&key(vs), None);
    assert_eq!(
        write(&lb1_vss, vs, &lb1_manager, withdraw).await,
        Outcome::Written
    );
    let withdraw = check_entry_body(&key(rs1), None);
    assert_eq!(
        write(&lb1_rss, rs1, &lb1_manager, withdraw).await,
        Outcome::Written
    );
    let after = admin_rss.get_status(rs1).await.unwrap();
    let checks: Vec<String> = after
        .status
        .as_ref()
        .unwrap()
        .checks
        .iter()
        .map(|c| c.balancer.clone())
        .collect();
    assert_eq!(checks, std::slice::from_ref(&lb2));

    // 4. web1's web token: TunnelReady on web1's RealServer, and nothing else.
    let own = web_body(&tunnel_ready(&key(rs1), true));
    assert_eq!(
        write(&web1_rss, rs1, &web1_manager, own).await,
        Outcome::Written
    );
    let after = serde_json::to_value(admin_rss.get_status(rs1).await.unwrap().status).unwrap();
    assert_eq!(condition_types(&after), ["Healthy", "TunnelReady"]);
    // (web2's own condition again would change nothing, and pass: a forged one differs.)
    let mut forged = tunnel_ready(&key(rs2), true);
    if let Some(c) = forged.condition.as_mut() {
        c.status = "False".into();
        c.message = "forged".into();
    }
    let on_theirs = web_body(&forged);
    assert_eq!(
        write(&web1_rss, rs2, &web1_manager, on_theirs).await,
        refused(
            release,
            "realservers",
            rs2,
            &format!(
                "the web daemon of node {web1} may write status.conditions[type=TunnelReady] \
                 only on a RealServer whose spec.nodeName is {web1} (this one names {web2}); \
                 elsewhere it may only withdraw the condition it wrote itself"
            )
        )
    );
    // Removing web2's TunnelReady (a merge patch that keeps only Healthy): refused too.
    let only_healthy = json!({"status": {"conditions": [healthy]}});
    assert_eq!(
        merge_status(&web1_rss, rs2, only_healthy).await,
        refused(
            release,
            "realservers",
            rs2,
            &format!(
                "the web daemon of node {web1} may write status.conditions[type=TunnelReady] \
                 only on a RealServer whose spec.nodeName is {web1} (this one names {web2}); \
                 elsewhere it may only withdraw the condition it wrote itself"
            )
        )
    );
    let mut forged_health = web_body(&tunnel_ready(&key(rs1), true));
    forged_health["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(
            json!({"type": "Healthy", "status": "False", "reason": "Checked",
                     "message": "forged", "lastTransitionTime": "2026-01-01T00:00:00Z"}),
        );
    assert_eq!(
        write(&web1_rss, rs1, &web1_manager, forged_health).await,
        refused(
            release,
            "realservers",
            rs1,
            &format!(
                "the web daemon of node {web1} may write only status.conditions[type=TunnelReady], \
                 not status.conditions[type=Healthy]"
            )
        )
    );
    let with_checks = json!({"apiVersion": "lvstun.io/v1alpha1", "kind": "RealServer",
        "status": {"checks": [check_entry(&web1)]}});
    assert_eq!(
        write(&web1_rss, rs1, &web1_manager, with_checks).await,
        refused(
            release,
            "realservers",
            rs1,
            &format!(
                "the web daemon of node {web1} may write only its own entry of \
                 status.conditions, not status.checks"
            )
        )
    );

    // 5. web1's RealServer moves to another node: the daemon withdraws its own condition.
    merge(&admin_rss, rs1, json!({"spec": {"nodeName": web2}}))
        .await
        .unwrap();
    let withdraw = web_body(&tunnel_ready(&key(rs1), false));
    assert_eq!(
        write(&web1_rss, rs1, &web1_manager, withdraw).await,
        Outcome::Written
    );
    let after = serde_json::to_value(admin_rss.get_status(rs1).await.unwrap().status).unwrap();
    assert_eq!(condition_types(&after), ["Healthy"]);

    // 6. Tokens bound to no pod (no node in them): refused, whatever they write.
    for (sa, rs_body, manager) in [
        (
            &balancer_sa,
            check_entry_body(&key(rs2), Some(&check_entry(&lb1))),
            &lb1_manager,
        ),
        (
            &web_sa,
            web_body(&tunnel_ready(&key(rs2), true)),
            &web1_manager,
        ),
    ] {
        let unbound = cluster::service_account_token(&admin, &install.namespace, sa, 3600)
            .await
            .unwrap();
        let client = client_with(cp, &format!("{ns}-{sa}-unbound"), &unbound).await;
        let rss: Api<RealServer> = Api::namespaced(client, &ns);
        assert_eq!(
            write(&rss, rs2, manager, rs_body).await,
            refused(
                release,
                "realservers",
                rs2,
                &format!(
                    "system:serviceaccount:{}:{sa} may write realservers/status only with a \
                     token bound to a pod on a node (this token carries no \
                     authentication.kubernetes.io/node-name)",
                    install.namespace
                )
            ),
            "{sa}"
        );
    }

    drop(guard);
    drop(install);
}
