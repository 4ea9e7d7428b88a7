//! What a node daemon does with the node when it stops: **Teardown** (undo everything it put in
//! the kernel) or **Keep** (leave it, so traffic goes on). Taken once, at SIGTERM (ADR 0008).
//!
//! A pod is stopped for two very different reasons, and the kubelet's SIGTERM looks the same
//! for both: a restart (`kubectl delete pod`, a rolling upgrade, a node reboot), after which a
//! new daemon adopts the kernel's state without a dropped connection; or the end of the
//! daemon on this node (`helm uninstall`, the DaemonSet deleted, the node's
//! `lvstun.io/balancer` / `lvstun.io/web` label removed), after which nothing would ever undo
//! what it did. The difference is only visible in the API: this daemon's own DaemonSet is gone
//! or being deleted, or it no longer selects this node. So at SIGTERM the daemon reads its
//! DaemonSet (`--daemonset NAME` in `$POD_NAMESPACE`) and its Node, with a short timeout.
//!
//! [`decide`] is pure and carries the tests. [`ExitCheck::observe`] is the thin API read. When
//! the API cannot answer (down, slow, or the daemon's RBAC already deleted), the answer is Keep:
//! a restart is by far the common case, and a wrongly kept node is fixed by one command
//! (logged), while a wrongly torn-down one drops its traffic.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::error::Error;

/// Longest wait for the API's answer at SIGTERM: the pod's grace period must still cover the
/// VRRP handover (run at the same time) and the teardown after it.
pub const API_TIMEOUT: Duration = Duration::from_secs(3);

/// What the API said about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    /// It exists.
    Found(T),
    /// 404: it does not.
    Gone,
    /// No answer that can be trusted (timeout, connection refused, 401/403, 5xx): why.
    Unknown(String),
}

/// What the decision needs of this daemon's DaemonSet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonSetFacts {
    /// It has a `deletionTimestamp` (foreground deletion, or a finalizer holds it).
    pub deleting: bool,
    /// `spec.template.spec.nodeSelector` (empty: every node).
    pub node_selector: BTreeMap<String, String>,
}

impl DaemonSetFacts {
    /// The facts of a DaemonSet object.
    pub fn of(ds: &DaemonSet) -> DaemonSetFacts {
        DaemonSetFacts {
            deleting: ds.metadata.deletion_timestamp.is_some(),
            node_selector: ds
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.node_selector.clone())
                .unwrap_or_default(),
        }
    }
}

/// Why the daemon decided as it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The DaemonSet does not exist any more (deleted with background propagation).
    DaemonSetGone,
    /// The DaemonSet is being deleted (foreground propagation: `helm uninstall`'s hook).
    DaemonSetDeleting,
    /// The DaemonSet's node selector no longer matches this node: these pairs are missing or
    /// differ (`key=value`, as `kubectl label node` takes them).
    NodeDeselected(Vec<String>),
    /// The DaemonSet still selects this node: the pod is being replaced.
    Restart,
    /// The Node object does not exist (deleted while its kubelet may still run and register it
    /// again): not a decision about lvstun, so nothing is undone.
    NodeGone,
    /// The API did not answer usably.
    ApiUnknown(String),
    /// No `--daemonset` was given (standalone, or an older DaemonSet): the historical
    /// behaviour, the node keeps its configuration.
    NotAsked,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::DaemonSetGone => f.write_str("the DaemonSet is gone"),
            Why::DaemonSetDeleting => f.write_str("the DaemonSet is being deleted"),
            Why::NodeDeselected(pairs) => write!(
                f,
                "the DaemonSet no longer selects this node (it lacks {})",
                pairs.join(" ")
            ),
            Why::Restart => f.write_str("the DaemonSet still selects this node (a restart)"),
            Why::NodeGone => f.write_str("this Node object does not exist"),
            Why::ApiUnknown(detail) => write!(f, "the API did not answer: {detail}"),
            Why::NotAsked => f.write_str("no --daemonset to ask about"),
        }
    }
}

/// Teardown or Keep, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Undo everything this daemon put on the node.
    Teardown(Why),
    /// Leave the node as it is.
    Keep(Why),
}

impl Decision {
    /// Whether to tear down.
    pub fn teardown(&self) -> bool {
        matches!(self, Decision::Teardown(_))
    }
}

/// The selector's pairs that `labels` lacks or has with another value (`key=value`).
fn unmatched(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> Vec<String> {
    selector
        .iter()
        .filter(|(k, v)| labels.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// The decision from what the API said about this daemon's DaemonSet and Node. Pure.
///
/// Teardown when the DaemonSet is gone or being deleted, or when its pod template's
/// `nodeSelector` no longer matches the node's labels (the DaemonSet controller deletes the pod
/// of a deselected node). Keep in every other case: the DaemonSet still wants a pod here (a
/// restart), or the answer is missing (the API is away, the daemon's RBAC is already gone, the
/// Node object is missing).
pub fn decide(ds: &Lookup<DaemonSetFacts>, node: &Lookup<BTreeMap<String, String>>) -> Decision {
    let facts = match ds {
        Lookup::Unknown(e) => return Decision::Keep(Why::ApiUnknown(format!("DaemonSet: {e}"))),
        Lookup::Gone => return Decision::Teardown(Why::DaemonSetGone),
        Lookup::Found(f) => f,
    };
    if facts.deleting {
        return Decision::Teardown(Why::DaemonSetDeleting);
    }
    match node {
        Lookup::Unknown(e) => Decision::Keep(Why::ApiUnknown(format!("Node: {e}"))),
        Lookup::Gone => Decision::Keep(Why::NodeGone),
        Lookup::Found(labels) => {
            let missing = unmatched(&facts.node_selector, labels);
            if missing.is_empty() {
                Decision::Keep(Why::Restart)
            } else {
                Decision::Teardown(Why::NodeDeselected(missing))
            }
        }
    }
}

/// Where to ask: this daemon's DaemonSet and Node, through the daemon's client.
#[derive(Clone)]
pub struct ExitCheck {
    /// The daemon's client (its ServiceAccount).
    pub client: Client,
    /// `$POD_NAMESPACE`.
    pub namespace: String,
    /// `--daemonset`.
    pub daemonset: String,
    /// This node.
    pub node: String,
}

/// A kube error as a lookup: 404 is [`Lookup::Gone`], anything else unknown.
fn lookup<T>(result: Result<T, kube::Error>) -> Lookup<T> {
    match result {
        Ok(v) => Lookup::Found(v),
        Err(kube::Error::Api(s)) if s.code == 404 => Lookup::Gone,
        Err(e) => Lookup::Unknown(e.to_string()),
    }
}

impl ExitCheck {
    /// Reads the DaemonSet and the Node at once, each within [`API_TIMEOUT`].
    pub async fn observe(&self) -> (Lookup<DaemonSetFacts>, Lookup<BTreeMap<String, String>>) {
        let dss: Api<DaemonSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let nodes: Api<Node> = Api::all(self.client.clone());
        let late = || format!("no answer within {} s", API_TIMEOUT.as_secs());
        let ds = async {
            match tokio::time::timeout(API_TIMEOUT, dss.get(&self.daemonset)).await {
                Ok(r) => match lookup(r) {
                    Lookup::Found(ds) => Lookup::Found(DaemonSetFacts::of(&ds)),
                    Lookup::Gone => Lookup::Gone,
                    Lookup::Unknown(e) => Lookup::Unknown(e),
                },
                Err(_) => Lookup::Unknown(late()),
            }
        };
        let node = async {
            match tokio::time::timeout(API_TIMEOUT, nodes.get(&self.node)).await {
                Ok(r) => match lookup(r) {
                    Lookup::Found(n) => Lookup::Found(n.metadata.labels.unwrap_or_default()),
                    Lookup::Gone => Lookup::Gone,
                    Lookup::Unknown(e) => Lookup::Unknown(e),
                },
                Err(_) => Lookup::Unknown(late()),
            }
        };
        tokio::join!(ds, node)
    }
}

/// Asks the API (when there is a check) and decides; logs the decision. `manual` is the command
/// that cleans the node by hand, named in the warning when the API could not answer.
pub async fn at_exit(check: Option<&ExitCheck>, role: &str, manual: &str) -> Decision {
    let decision = match check {
        Some(check) => {
            let (ds, node) = check.observe().await;
            decide(&ds, &node)
        }
        None => Decision::Keep(Why::NotAsked),
    };
    match &decision {
        Decision::Teardown(why) => {
            info!(
                role,
                "teardown: {why}; removing what this daemon put on the node"
            );
        }
        Decision::Keep(why @ (Why::ApiUnknown(_) | Why::NodeGone)) => warn!(
            role,
            "keep: {why}; the node keeps its configuration. If lvstun is being removed from \
             this node, clean it by hand: {manual} (docs/user-guide.md, Uninstalling)"
        ),
        Decision::Keep(why) => info!(role, "keep: {why}; the node keeps its configuration"),
    }
    decision
}

/// The check a cluster-mode daemon runs at SIGTERM: `--daemonset` (if given) in
/// `$POD_NAMESPACE` (`namespace`, as the downward API sets it), for `node`. `None` without
/// `--daemonset`; an error when `--daemonset` comes without a namespace to look in.
pub fn check(
    client: Option<&Client>,
    daemonset: Option<&str>,
    namespace: Option<String>,
    node: &str,
) -> Result<Option<ExitCheck>, Error> {
    let Some(daemonset) = daemonset else {
        return Ok(None);
    };
    let namespace = namespace.filter(|n| !n.is_empty()).ok_or_else(|| {
        Error::Usage(
            "--daemonset needs $POD_NAMESPACE (the downward API's metadata.namespace)".into(),
        )
    })?;
    let client = client.ok_or_else(|| {
        Error::Usage("--daemonset goes with the in-cluster mode (no --config)".into())
    })?;
    Ok(Some(ExitCheck {
        client: client.clone(),
        namespace,
        daemonset: daemonset.to_owned(),
        node: node.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ds(deleting: bool, selector: &[(&str, &str)]) -> Lookup<DaemonSetFacts> {
        Lookup::Found(DaemonSetFacts {
            deleting,
            node_selector: labels(selector),
        })
    }

    const BALANCER: &[(&str, &str)] = &[("lvstun.io/balancer", "true")];

    #[test]
    fn the_decision_table() {
        use Decision::{Keep, Teardown};
        let labelled = || Lookup::Found(labels(&[("lvstun.io/balancer", "true"), ("zone", "a")]));
        let unlabelled = || Lookup::Found(labels(&[("zone", "a")]));
        let relabelled = || Lookup::Found(labels(&[("lvstun.io/balancer", "false")]));
        let down = || Lookup::Unknown("connection refused".to_string());
        let deselected = |pair: &str| Teardown(Why::NodeDeselected(vec![pair.to_string()]));
        let unknown = |what: &str| Keep(Why::ApiUnknown(what.to_string()));
        #[rustfmt::skip]
        let cases = [
            ("restart: the DaemonSet still selects the node",
                ds(false, BALANCER), labelled(), Keep(Why::Restart)),
            ("helm uninstall: foreground deletion",
                ds(true, BALANCER), labelled(), Teardown(Why::DaemonSetDeleting)),
            ("kubectl delete ds: background deletion",
                Lookup::Gone, labelled(), Teardown(Why::DaemonSetGone)),
            ("gone, whatever the Node says",
                Lookup::Gone, down(), Teardown(Why::DaemonSetGone)),
            ("deleting, whatever the Node says",
                ds(true, BALANCER), down(), Teardown(Why::DaemonSetDeleting)),
            ("label removed",
                ds(false, BALANCER), unlabelled(), deselected("lvstun.io/balancer=true")),
            ("label changed",
                ds(false, BALANCER), relabelled(), deselected("lvstun.io/balancer=true")),
            ("the chart's selector moved away from the node",
                ds(false, &[("role", "lb")]), labelled(), deselected("role=lb")),
            ("an empty selector selects every node",
                ds(false, &[]), unlabelled(), Keep(Why::Restart)),
            ("API down: keep",
                Lookup::Unknown("connection refused".to_string()), labelled(),
                unknown("DaemonSet: connection refused")),
            ("DaemonSet readable, Node not: keep",
                ds(false, BALANCER), down(), unknown("Node: connection refused")),
            ("RBAC already gone (403): keep",
                Lookup::Unknown("403 Forbidden".to_string()), down(),
                unknown("DaemonSet: 403 Forbidden")),
            ("Node object missing: keep",
                ds(false, BALANCER), Lookup::Gone, Keep(Why::NodeGone)),
        ];
        for (name, ds, node, want) in cases {
            let got = decide(&ds, &node);
            assert_eq!(got, want, "{name}");
            assert_eq!(got.teardown(), matches!(want, Teardown(_)), "{name}");
        }
    }

    #[test]
    fn the_facts_come_from_the_pod_template() {
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "lvstun-balancer", "deletionTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {
                "selector": {"matchLabels": {"app": "x"}},
                "template": {"spec": {
                    "nodeSelector": {"lvstun.io/balancer": "true"},
                    "containers": []
                }}
            }
        }))
        .unwrap();
        let f = DaemonSetFacts::of(&ds);
        assert!(f.deleting);
        assert_eq!(f.node_selector, labels(BALANCER));
        assert_eq!(
            DaemonSetFacts::of(&DaemonSet::default()),
            DaemonSetFacts::default()
        );
    }

    #[test]
    fn reasons_read_well() {
        let why = Why::NodeDeselected(vec!["lvstun.io/web=true".into()]);
        assert_eq!(
            why.to_string(),
            "the DaemonSet no longer selects this node (it lacks lvstun.io/web=true)"
        );
    }

    #[test]
    fn the_check_needs_a_namespace_and_a_cluster() {
        assert!(check(None, None, None, "n").unwrap().is_none());
        assert!(matches!(
            check(None, Some("lvstun-balancer"), None, "n"),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            check(None, Some("lvstun-balancer"), Some(String::new()), "n"),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            check(None, Some("lvstun-balancer"), Some("ns".into()), "n"),
            Err(Error::Usage(_))
        ));
    }
}
