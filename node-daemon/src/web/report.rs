//! In a cluster, what the web daemon tells the API: the `TunnelReady` condition of each
//! RealServer whose `spec.nodeName` is this node, and nothing else.
//!
//! Ownership, and why it cannot fight the other writers: `status.conditions` of a RealServer is
//! a list-map keyed by `type` (`x-kubernetes-list-type: map` in the CRD), so server-side apply
//! tracks each condition as its own field. The operator applies only `Healthy`
//! (`operator/src/apply.rs`, manager `lvstun-operator`), each balancer applies only its
//! `checks[balancer=<node>]` entry (manager `lvstun-node/<node>`), and this daemon applies only
//! `conditions[type=TunnelReady]` with manager [`field_manager`] (`lvstun-node-web/<node>`).
//! An apply releases only what the same manager applied before, so none of them can remove
//! another's field. The manager is per node, and not the balancer's `lvstun-node/<node>`: a
//! node that is both a balancer and a real server runs two daemons, and one manager name for
//! both would make each apply release the other's fields.
//!
//! Writes happen only on a change: a condition is applied when the object (as the watch last
//! delivered it) does not already say the same `status`, `reason`, `message` and
//! `observedGeneration`, and an identical write is not repeated within [`MIN_INTERVAL`] (the
//! watch may not have delivered our own write yet). `lastTransitionTime` moves only when
//! `status` does. A RealServer that stops naming this node (or whose node this daemon no
//! longer serves) gets its condition withdrawn: an apply without it releases the field, and
//! the API server removes a field nobody owns. Which RealServers still carry this node's
//! condition is read from their `managedFields`, so a restarted daemon withdraws too.
//!
//! [`plan`] is pure; [`write`] does the I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use lvstun_crds::conditions::ConditionType;
use lvstun_crds::v1alpha1::RealServer;
use serde_json::json;
use tokio::time::Instant;

use super::status::Readiness;
use lvstun_rules::ObjectKey as ObjectRef;

/// Shortest time between two identical writes of one RealServer's condition.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// The field manager of this node's status writes.
pub fn field_manager(node: &str) -> String {
    format!("{}/{node}", super::status::FIELD_MANAGER)
}

/// One status write.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// The RealServer.
    pub real_server: ObjectRef,
    /// The condition to apply, or `None` to withdraw this node's condition.
    pub condition: Option<Condition>,
}

/// What a condition says apart from `lastTransitionTime`.
fn same(a: &Condition, b: &Condition) -> bool {
    a.type_ == b.type_
        && a.status == b.status
        && a.reason == b.reason
        && a.message == b.message
        && a.observed_generation == b.observed_generation
}

fn tunnel_ready(rs: &RealServer) -> Option<&Condition> {
    rs.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::TunnelReady.as_str())
}

/// Whether `manager` owns a `TunnelReady` condition on this object (its `managedFields` entry
/// for the status subresource names `k:{"type":"TunnelReady"}` under `f:status.f:conditions`).
pub fn owns_condition(rs: &RealServer, manager: &str) -> bool {
    rs.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(manager)
            && m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:status"))
                .and_then(|s| s.get("f:conditions"))
                .and_then(serde_json::Value::as_object)
                .is_some_and(|c| {
                    c.keys().any(|k| {
                        k.starts_with("k:") && k.contains(ConditionType::TunnelReady.as_str())
                    })
                })
    })
}

/// The writes that bring the API in line with this node's verdict.
///
/// - `mine`: `namespace/name` of the RealServers this node serves (`Served::real_servers`);
/// - `objects`: every RealServer as the watch delivered it (statuses and `managedFields`);
/// - `note`, when given, leads the message (a dry run says so);
/// - `now`: the `lastTransitionTime` of a condition whose status changes.
pub fn plan(
    manager: &str,
    mine: &[String],
    objects: &[RealServer],
    verdict: &Readiness,
    note: Option<&str>,
    now: &Time,
) -> Vec<Write> {
    let mut out = Vec::new();
    for rs in objects {
        let me = ObjectRef::of(&rs.metadata);
        let current = tunnel_ready(rs);
        if mine.contains(&me.to_string()) {
            let mut wanted = verdict.condition(rs.metadata.generation, now.clone());
            if let Some(note) = note {
                wanted.message = format!("{note}; {}", wanted.message);
            }
            match current {
                Some(c) if same(c, &wanted) => continue,
                Some(c) if c.status == wanted.status => {
                    wanted.last_transition_time = c.last_transition_time.clone();
                }
                _ => {}
            }
            out.push(Write {
                real_server: me,
                condition: Some(wanted),
            });
        } else if owns_condition(rs, manager) {
            out.push(Write {
                real_server: me,
                condition: None,
            });
        }
    }
    out
}

/// Whether `write` should go out, given the last identical-or-not write made for the same
/// RealServer and when: anything new at once; the same again only after [`MIN_INTERVAL`].
pub fn due(last: Option<&(Option<Condition>, Instant)>, write: &Write, now: Instant) -> bool {
    let Some((previous, at)) = last else {
        return true;
    };
    let identical = match (previous, &write.condition) {
        (None, None) => true,
        (Some(a), Some(b)) => same(a, b),
        _ => false,
    };
    !identical || now.saturating_duration_since(*at) >= MIN_INTERVAL
}

/// The server-side-apply body of one write: the RealServer's `status.conditions` holding only
/// this node's `TunnelReady`, or empty to withdraw it. Pure; public
/// (`lvstun_node::status_writes`) so that the harness proves the chart's status policy against
/// the very body sent here.
pub fn body(w: &Write) -> serde_json::Value {
    json!({
        "apiVersion": "lvstun.io/v1alpha1",
        "kind": "RealServer",
        "metadata": {"name": w.real_server.name, "namespace": w.real_server.namespace},
        "status": {"conditions": w.condition.iter().collect::<Vec<_>>()},
    })
}

/// Server-side applies one write with `params` (the node's field manager, forced: the
/// condition is this node's to say, whoever said it before).
pub async fn write(client: &Client, params: &PatchParams, w: &Write) -> Result<(), kube::Error> {
    let api: Api<RealServer> = Api::namespaced(client.clone(), &w.real_server.namespace);
    let body = body(w);
    api.patch_status(&w.real_server.name, params, &Patch::Apply(body))
        .await
        .map(|_| ())
}

/// The writes due now, with the record of recent writes (`recent`) that rate-limits repeats.
pub fn due_writes(
    planned: Vec<Write>,
    recent: &BTreeMap<ObjectRef, (Option<Condition>, Instant)>,
    now: Instant,
) -> Vec<Write> {
    planned
        .into_iter()
        .filter(|w| due(recent.get(&w.real_server), w, now))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use k8s_openapi::jiff::Timestamp;
    use lvstun_crds::conditions::Reason;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn rs(ns: &str, name: &str, cond: Option<(&str, &str, &str)>) -> RealServer {
        let mut r: RealServer = serde_norway::from_str(&format!(
            "apiVersion: lvstun.io/v1alpha1\nkind: RealServer\nmetadata: {{name: {name}, namespace: {ns}, generation: 2}}\nspec: {{address: 198.51.100.10, nodeName: node-a}}\n"
        ))
        .unwrap();
        if let Some((status, reason, message)) = cond {
            r.status = Some(lvstun_crds::v1alpha1::RealServerStatus {
                conditions: vec![
                    Condition {
                        type_: "Healthy".into(),
                        status: "True".into(),
                        reason: "Checked".into(),
                        message: "by lb1".into(),
                        observed_generation: None,
                        last_transition_time: t(1),
                    },
                    Condition {
                        type_: ConditionType::TunnelReady.as_str().into(),
                        status: status.into(),
                        reason: reason.into(),
                        message: message.into(),
                        observed_generation: Some(2),
                        last_transition_time: t(100),
                    },
                ],
                ..Default::default()
            });
        }
        r
    }

    fn owned_by(mut r: RealServer, manager: &str) -> RealServer {
        r.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            subresource: Some("status".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:status": {"f:conditions": {"k:{\"type\":\"TunnelReady\"}": {".": {}, "f:status": {}}}}
            }))),
            ..Default::default()
        }]);
        r
    }

    fn ready(msg: &str) -> Readiness {
        Readiness {
            ready: true,
            reason: Reason::Ready,
            message: msg.into(),
        }
    }

    const ME: &str = "lvstun-node-web/node-a";

    #[test]
    fn the_field_manager_is_per_node_and_not_the_balancers() {
        assert_eq!(field_manager("node-a"), ME);
        assert_ne!(
            field_manager("node-a"),
            crate::balancer::report::field_manager("node-a")
        );
    }

    #[test]
    fn a_new_verdict_is_written_only_on_this_nodes_real_servers() {
        let objects = vec![rs("a", "web1", None), rs("a", "web2", None)];
        let w = plan(
            ME,
            &["a/web1".into()],
            &objects,
            &ready("tunl0 up"),
            None,
            &t(500),
        );
        assert_eq!(w.len(), 1, "web2 names another node's verdict: {w:?}");
        assert_eq!(w[0].real_server.to_string(), "a/web1");
        let c = w[0].condition.as_ref().unwrap();
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("TunnelReady", "True", "Ready")
        );
        assert_eq!(c.observed_generation, Some(2));
        assert_eq!(c.last_transition_time, t(500));
    }

    #[test]
    fn an_unchanged_verdict_is_not_written_and_the_transition_time_stays() {
        let objects = vec![rs("a", "web1", Some(("True", "Ready", "tunl0 up")))];
        let mine = ["a/web1".to_string()];
        assert!(plan(ME, &mine, &objects, &ready("tunl0 up"), None, &t(500)).is_empty());
        // Same status, new message: written, transition time kept.
        let w = plan(
            ME,
            &mine,
            &objects,
            &ready("tunl0 up; 2 VIPs"),
            None,
            &t(500),
        );
        let c = w[0].condition.as_ref().unwrap();
        assert_eq!(c.message, "tunl0 up; 2 VIPs");
        assert_eq!(c.last_transition_time, t(100));
        // New status: the transition time moves.
        let down = Readiness {
            ready: false,
            reason: Reason::Tunl0Down,
            message: "tunl0 is down".into(),
        };
        let w = plan(ME, &mine, &objects, &down, None, &t(500));
        let c = w[0].condition.as_ref().unwrap();
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.clone()),
            ("False", t(500))
        );
        // A dry run says so first.
        let w = plan(
            ME,
            &mine,
            &objects,
            &ready("tunl0 up"),
            Some("dry run"),
            &t(500),
        );
        assert_eq!(
            w[0].condition.as_ref().unwrap().message,
            "dry run; tunl0 up"
        );
    }

    #[test]
    fn a_real_server_that_left_this_node_is_withdrawn_only_if_this_node_owns_its_condition() {
        let ours = owned_by(rs("a", "web1", Some(("True", "Ready", "x"))), ME);
        let theirs = owned_by(
            rs("a", "web2", Some(("True", "Ready", "x"))),
            "lvstun-node-web/node-b",
        );
        let balancer = owned_by(rs("a", "web3", None), "lvstun-node/node-a");
        let w = plan(ME, &[], &[ours, theirs, balancer], &ready("x"), None, &t(5));
        assert_eq!(
            w,
            vec![Write {
                real_server: ObjectRef {
                    namespace: "a".into(),
                    name: "web1".into()
                },
                condition: None
            }]
        );
    }

    #[test]
    fn identical_writes_wait_for_the_watch_to_catch_up() {
        let t0 = Instant::now();
        let objects = vec![rs("a", "web1", None)];
        let w = plan(ME, &["a/web1".into()], &objects, &ready("up"), None, &t(5));
        let key = w[0].real_server.clone();
        let mut recent = BTreeMap::new();
        assert_eq!(due_writes(w.clone(), &recent, t0).len(), 1, "first write");
        recent.insert(key.clone(), (w[0].condition.clone(), t0));
        assert!(due_writes(w.clone(), &recent, t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(due_writes(w.clone(), &recent, t0 + MIN_INTERVAL).len(), 1);
        let withdraw = Write {
            real_server: key,
            condition: None,
        };
        assert!(
            due(recent.values().next(), &withdraw, t0),
            "a change goes at once"
        );
    }
}
