//! In a cluster, what this balancer tells the API: its own entry in each served
//! `VirtualService.status.balancers[]` (keyed by node: VRRP state, destinations in rotation per
//! port, refusals, the kernel settings it could not make, services another program deleted) and in each checked `RealServer.status.checks[]` (keyed by balancer: healthy,
//! consecutive failures, last check, last transition, why the last check failed).
//!
//! Both lists are list-maps, so each balancer server-side-applies only its own entry, with
//! field manager `lvstun-node/<node>`; an entry this node no longer has (a VirtualService it
//! stopped serving) is withdrawn by applying an empty list, which releases the entry the
//! manager owned. Writes are rate-limited: an entry is written when what it says changed, at
//! most once per [`MIN_INTERVAL`], and otherwise only every [`HEARTBEAT`] (to move
//! `lastCheckTime`), so a steady cluster costs a handful of writes a minute.
//!
//! The entries are computed by pure functions ([`balancer_entries`], [`check_entries`]);
//! [`run`] does the I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use lvstun_crds::v1alpha1::{
    BalancerStatus, CheckStatus, ExternalDeletions, RealServer, RefusedKernelSetting,
    VirtualService,
};
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::desired::ObjectRef;
use super::foreign::Seen;
use super::owner::Ownership;
use super::run::{SharedReport, lock};
use crate::health::checker::{Statuses, TargetStatus};

/// Shortest time between two writes of one entry.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Longest time an entry goes unwritten while only `lastCheckTime` moves.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// The field manager of this node's status writes.
pub fn field_manager(node: &str) -> String {
    format!("lvstun-node/{node}")
}

fn time(t: SystemTime) -> Option<Time> {
    Timestamp::try_from(t).ok().map(Time)
}

/// This node's `status.balancers[]` entry for each VirtualService it programs, with the VIP
/// ownership `ownership` says for it (VRRP state, priority, last transition).
/// `note`, when given, leads every entry's message (a dry run says so). `refused` are the
/// node's kernel settings it could not make: node-wide, so every entry carries them (each
/// VirtualService this node serves is served without them). `deleted` are the services of each
/// VirtualService that another program deleted recently (see `foreign`).
pub fn balancer_entries(
    node: &str,
    ownership: &dyn Fn(&ObjectRef) -> Ownership,
    programmed: &BTreeMap<ObjectRef, BTreeMap<String, u32>>,
    messages: &BTreeMap<ObjectRef, String>,
    note: Option<&str>,
    refused: &[RefusedKernelSetting],
    deleted: &BTreeMap<ObjectRef, Seen>,
) -> BTreeMap<ObjectRef, BalancerStatus> {
    programmed
        .iter()
        .map(|(vs, ports)| {
            let own = ownership(vs);
            let message = match (messages.get(vs), own.message) {
                (Some(m), Some(o)) => Some(format!("{m}; {o}")),
                (m, o) => m.cloned().or(o),
            };
            let entry = BalancerStatus {
                node: node.to_owned(),
                state: own.state,
                priority: own.priority,
                last_transition_time: own.last_transition.and_then(time),
                programmed_destinations: ports
                    .iter()
                    .map(|(port, n)| (port.clone(), i32::try_from(*n).unwrap_or(i32::MAX)))
                    .collect(),
                message: match (note, message) {
                    (Some(n), Some(m)) => Some(format!("{n}; {m}")),
                    (Some(n), None) => Some(n.to_owned()),
                    (None, m) => m,
                },
                refused_kernel_settings: refused.to_vec(),
                deleted_externally: deleted.get(vs).map(|seen| ExternalDeletions {
                    ports: seen.ports.iter().cloned().collect(),
                    count: i32::try_from(seen.count).unwrap_or(i32::MAX),
                    last_time: time(seen.last_time),
                }),
            };
            (vs.clone(), entry)
        })
        .collect()
}

/// This node's `status.checks[]` entry for each RealServer it checks: healthy only when every
/// check of it passes (it may be checked differently by two VirtualServices), the most
/// consecutive failures, the latest check and transition, the first failure's reason.
pub fn check_entries(
    node: &str,
    checks: &BTreeMap<ObjectRef, Vec<String>>,
    statuses: &HashMap<String, TargetStatus>,
) -> BTreeMap<ObjectRef, CheckStatus> {
    checks
        .iter()
        .filter_map(|(rs, keys)| {
            let known: Vec<&TargetStatus> = keys.iter().filter_map(|k| statuses.get(k)).collect();
            if known.is_empty() {
                return None; // not started yet: nothing to say
            }
            let healthy = known.iter().all(|s| s.state.healthy());
            let failures = known
                .iter()
                .map(|s| s.state.consecutive_failures())
                .max()
                .unwrap_or(0);
            let last_check = known.iter().filter_map(|s| s.last_check).max();
            let last_transition = known.iter().filter_map(|s| s.last_transition).max();
            let message = known
                .iter()
                .find_map(|s| s.state.last_error().map(str::to_owned));
            Some((
                rs.clone(),
                CheckStatus {
                    balancer: node.to_owned(),
                    healthy,
                    consecutive_failures: i32::try_from(failures).unwrap_or(i32::MAX),
                    last_check_time: last_check.and_then(time),
                    last_transition_time: last_transition.and_then(time),
                    message,
                },
            ))
        })
        .collect()
}

/// What a check entry says apart from `lastCheckTime`, which moves every check.
fn significant(c: &CheckStatus) -> CheckStatus {
    CheckStatus {
        last_check_time: None,
        ..c.clone()
    }
}

/// When an entry must be written: never written, withdrawn, or its content changed (then no
/// sooner than [`MIN_INTERVAL`] after the last write), or [`HEARTBEAT`] passed.
pub fn due<T: PartialEq>(last: Option<&(T, Instant)>, now_value: Option<&T>, now: Instant) -> bool {
    match (last, now_value) {
        (None, None) => false,
        (None, Some(_)) | (Some(_), None) => true,
        (Some((old, at)), Some(new)) => {
            let since = now.saturating_duration_since(*at);
            (old != new && since >= MIN_INTERVAL) || since >= HEARTBEAT
        }
    }
}

/// The server-side-apply body of this node's entry in `vs`'s `status.balancers[]` (`None`:
/// an empty list, which withdraws the entry). Pure; public (`lvstun_node::status_writes`) so
/// that the harness proves the chart's status policy against the very body sent here.
pub fn balancer_entry_body(vs: &ObjectRef, entry: Option<&BalancerStatus>) -> serde_json::Value {
    json!({
        "apiVersion": "lvstun.io/v1alpha1",
        "kind": "VirtualService",
        "metadata": {"name": vs.name, "namespace": vs.namespace},
        "status": {"balancers": entry.map_or_else(Vec::new, |e| vec![e])},
    })
}

/// The server-side-apply body of this node's entry in `rs`'s `status.checks[]` (`None`: an
/// empty list, which withdraws the entry). Pure; public as [`balancer_entry_body`] is.
pub fn check_entry_body(rs: &ObjectRef, entry: Option<&CheckStatus>) -> serde_json::Value {
    json!({
        "apiVersion": "lvstun.io/v1alpha1",
        "kind": "RealServer",
        "metadata": {"name": rs.name, "namespace": rs.namespace},
        "status": {"checks": entry.map_or_else(Vec::new, |e| vec![e])},
    })
}

async fn apply_vs(
    api: &Api<VirtualService>,
    params: &PatchParams,
    vs: &ObjectRef,
    entry: Option<&BalancerStatus>,
) -> Result<(), kube::Error> {
    let body = balancer_entry_body(vs, entry);
    api.patch_status(&vs.name, params, &Patch::Apply(body))
        .await
        .map(|_| ())
}

async fn apply_rs(
    api: &Api<RealServer>,
    params: &PatchParams,
    rs: &ObjectRef,
    entry: Option<&CheckStatus>,
) -> Result<(), kube::Error> {
    let body = check_entry_body(rs, entry);
    api.patch_status(&rs.name, params, &Patch::Apply(body))
        .await
        .map(|_| ())
}

/// Writes this node's entries as they change, until the task is dropped. `ownership` says the
/// node's VIP ownership of each VirtualService (from [`super::owner`]).
pub async fn run(
    client: Client,
    node: String,
    report: SharedReport,
    statuses: Statuses,
    ownership: Arc<dyn Fn(&ObjectRef) -> Ownership + Send + Sync>,
    note: Option<String>,
) {
    let params = PatchParams::apply(&field_manager(&node)).force();
    let mut written_vs: BTreeMap<ObjectRef, (BalancerStatus, Instant)> = BTreeMap::new();
    let mut written_rs: BTreeMap<ObjectRef, (CheckStatus, Instant)> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Write failures in a row (the API server down or unreachable): the next round waits
    // longer each time, so that an outage costs neither CPU nor a log line a second.
    let mut failures: u32 = 0;
    let mut not_before = Instant::now();
    loop {
        tick.tick().await;
        if Instant::now() < not_before {
            continue;
        }
        let mut failed: Option<String> = None;
        let (vs_entries, rs_entries) = {
            let r = lock(&report);
            if !r.ready {
                continue;
            }
            (
                balancer_entries(
                    &node,
                    &*ownership,
                    &r.programmed,
                    &r.messages,
                    note.as_deref(),
                    &r.refused_kernel_settings,
                    &r.deleted_externally,
                ),
                check_entries(&node, &r.real_server_checks, &statuses.snapshot()),
            )
        };
        let now = Instant::now();
        let mut names: Vec<ObjectRef> = vs_entries.keys().cloned().collect();
        names.extend(
            written_vs
                .keys()
                .filter(|k| !vs_entries.contains_key(*k))
                .cloned(),
        );
        for vs in names {
            let new = vs_entries.get(&vs);
            if !due(written_vs.get(&vs), new, now) {
                continue;
            }
            let api: Api<VirtualService> = Api::namespaced(client.clone(), &vs.namespace);
            match apply_vs(&api, &params, &vs, new).await {
                Ok(()) => {
                    debug!(virtual_service = %vs, withdrawn = new.is_none(), "status entry written");
                    match new {
                        Some(e) => written_vs.insert(vs, (e.clone(), now)),
                        None => written_vs.remove(&vs),
                    };
                }
                // A VirtualService deleted meanwhile has no status to withdraw from.
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    written_vs.remove(&vs);
                }
                // The API server answered: this object's write is refused, the others go on.
                Err(kube::Error::Api(e)) => {
                    warn!(virtual_service = %vs, "status not written, retrying: {e}");
                }
                // The API server did not answer: the next round waits (see `back_off`).
                Err(e) => {
                    failed = Some(format!("status of {vs}: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = failed.take() {
            (failures, not_before) = back_off(failures, &why);
            continue;
        }
        let mut names: Vec<ObjectRef> = rs_entries.keys().cloned().collect();
        names.extend(
            written_rs
                .keys()
                .filter(|k| !rs_entries.contains_key(*k))
                .cloned(),
        );
        for rs in names {
            let new = rs_entries.get(&rs);
            let last = written_rs.get(&rs).map(|(c, at)| (significant(c), *at));
            if !due(last.as_ref(), new.map(significant).as_ref(), now) {
                continue;
            }
            let api: Api<RealServer> = Api::namespaced(client.clone(), &rs.namespace);
            match apply_rs(&api, &params, &rs, new).await {
                Ok(()) => {
                    debug!(real_server = %rs, withdrawn = new.is_none(), "check entry written");
                    match new {
                        Some(e) => written_rs.insert(rs, (e.clone(), now)),
                        None => written_rs.remove(&rs),
                    };
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    written_rs.remove(&rs);
                }
                Err(kube::Error::Api(e)) => {
                    warn!(real_server = %rs, "check status not written, retrying: {e}");
                }
                Err(e) => {
                    failed = Some(format!("check status of {rs}: {e}"));
                    break;
                }
            }
        }
        match failed {
            Some(why) => (failures, not_before) = back_off(failures, &why),
            None => {
                if failures > 0 {
                    info!(failures, "status writes go through again");
                }
                failures = 0;
            }
        }
    }
}

/// One more round that could not reach the API server after `failures` in a row: logged on
/// the first and every tenth,
/// and the time before the next round (1 s doubling up to [`WRITE_RETRY_MAX`]).
fn back_off(failures: u32, why: &str) -> (u32, Instant) {
    let failures = failures.saturating_add(1);
    let delay = retry_delay(failures);
    if failures == 1 || failures.is_multiple_of(10) {
        warn!(
            failures,
            retry_in_s = delay.as_secs(),
            "status not written, retrying: {why}"
        );
    }
    (failures, Instant::now() + delay)
}

/// The longest wait between two rounds of status writes while they fail.
const WRITE_RETRY_MAX: Duration = Duration::from_secs(16);

/// The wait after `failures` failed rounds in a row: 1, 2, 4, 8, 16, 16... seconds. Pure.
fn retry_delay(failures: u32) -> Duration {
    doubling_delay(failures, WRITE_RETRY_MAX)
}

/// The wait after `attempt` failures in a row: 1 s, doubling with each, at most `max`. The
/// one back-off of the balancer's calls to the API server (status writes, the first read at
/// start). Pure.
pub(super) fn doubling_delay(attempt: u32, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(10);
    Duration::from_secs(1u64 << exp).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_writes_back_off_to_sixteen_seconds() {
        let waits: Vec<u64> = (1..=7).map(|f| retry_delay(f).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 16, 16]);
        assert_eq!(retry_delay(u32::MAX), WRITE_RETRY_MAX);
    }
    use crate::health::state::{TargetState, Thresholds};
    use lvstun_crds::v1alpha1::{KernelSettingRefusal, VrrpState};

    fn r(name: &str) -> ObjectRef {
        ObjectRef {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn status(healthy: bool, failures: u32, error: Option<&str>, t: u64) -> TargetStatus {
        let mut state = TargetState::new(healthy);
        let th = Thresholds {
            fall: 100,
            rise: 100,
        };
        for _ in 0..failures {
            state.observe(Err(error.unwrap_or("x").into()), th);
        }
        TargetStatus {
            state,
            last_check: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(t)),
            last_transition: None,
        }
    }

    #[test]
    fn balancer_entries_carry_programmed_counts_and_refusals() {
        let programmed = BTreeMap::from([(
            r("www"),
            BTreeMap::from([("80/TCP".to_string(), 2u32), ("443/TCP".to_string(), 0)]),
        )]);
        let messages = BTreeMap::from([(r("www"), "add destination x: kernel refused".into())]);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let master = |vs: &ObjectRef| Ownership {
            state: if vs.name == "www" {
                VrrpState::Master
            } else {
                VrrpState::Initialize
            },
            priority: Some(200),
            last_transition: Some(at),
            message: None,
        };
        let e = balancer_entries(
            "lb1",
            &master,
            &programmed,
            &messages,
            None,
            &[],
            &BTreeMap::new(),
        );
        let entry = &e[&r("www")];
        assert_eq!(entry.node, "lb1");
        assert_eq!(entry.state, VrrpState::Master);
        assert_eq!(entry.priority, Some(200));
        assert_eq!(entry.last_transition_time, time(at));
        assert_eq!(entry.programmed_destinations["80/TCP"], 2);
        assert_eq!(entry.programmed_destinations["443/TCP"], 0);
        assert!(entry.message.as_deref().unwrap().contains("refused"));
        let json = serde_json::to_value(entry).unwrap();
        assert_eq!(json["programmedDestinations"]["80/TCP"], 2);
        let fault = |_: &ObjectRef| Ownership {
            state: VrrpState::Fault,
            priority: None,
            last_transition: None,
            message: Some("VRRP settings refused".into()),
        };
        let e = balancer_entries(
            "lb1",
            &fault,
            &programmed,
            &messages,
            None,
            &[],
            &BTreeMap::new(),
        );
        assert_eq!(e[&r("www")].state, VrrpState::Fault);
        assert_eq!(
            e[&r("www")].message.as_deref(),
            Some("add destination x: kernel refused; VRRP settings refused")
        );
        let init = |_: &ObjectRef| Ownership {
            state: VrrpState::Initialize,
            priority: None,
            last_transition: None,
            message: None,
        };
        let dry = balancer_entries(
            "lb1",
            &init,
            &programmed,
            &BTreeMap::new(),
            Some("dry run"),
            &[],
            &BTreeMap::new(),
        );
        assert_eq!(dry[&r("www")].message.as_deref(), Some("dry run"));
        assert!(
            dry[&r("www")].refused_kernel_settings.is_empty(),
            "nothing refused, nothing listed"
        );
    }

    #[test]
    fn every_entry_carries_the_nodes_refused_kernel_settings() {
        let programmed = BTreeMap::from([
            (r("www"), BTreeMap::from([("80/TCP".to_string(), 2u32)])),
            (r("api"), BTreeMap::from([("443/TCP".to_string(), 1u32)])),
        ]);
        let init = |_: &ObjectRef| Ownership {
            state: VrrpState::Backup,
            priority: None,
            last_transition: None,
            message: None,
        };
        let refused = [RefusedKernelSetting {
            name: "net.ipv4.vs.sloppy_tcp".into(),
            wanted: 1,
            current: Some(0),
            reason: KernelSettingRefusal::ReadOnly,
        }];
        let e = balancer_entries(
            "lb1",
            &init,
            &programmed,
            &BTreeMap::new(),
            None,
            &refused,
            &BTreeMap::new(),
        );
        for vs in ["www", "api"] {
            assert_eq!(e[&r(vs)].refused_kernel_settings, refused, "{vs}");
        }
        let json = serde_json::to_value(&e[&r("www")]).unwrap();
        assert_eq!(
            json["refusedKernelSettings"][0],
            json!({"name": "net.ipv4.vs.sloppy_tcp", "wanted": 1, "current": 0, "reason": "ReadOnly"})
        );
    }

    #[test]
    fn services_deleted_by_another_program_show_on_the_entry_of_their_virtual_service() {
        let programmed = BTreeMap::from([
            (r("www"), BTreeMap::from([("80/TCP".to_string(), 2u32)])),
            (r("api"), BTreeMap::from([("443/TCP".to_string(), 1u32)])),
        ]);
        let backup = |_: &ObjectRef| Ownership {
            state: VrrpState::Backup,
            priority: None,
            last_transition: None,
            message: None,
        };
        let mut recent = crate::balancer::foreign::Recent::default();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        recent.observe(
            &BTreeMap::from([(
                r("www"),
                std::collections::BTreeSet::from(["80/TCP".to_string()]),
            )]),
            Instant::now(),
            at,
        );
        let e = balancer_entries(
            "lb1",
            &backup,
            &programmed,
            &BTreeMap::new(),
            None,
            &[],
            recent.entries(),
        );
        assert_eq!(
            e[&r("www")].deleted_externally,
            Some(ExternalDeletions {
                ports: vec!["80/TCP".into()],
                count: 1,
                last_time: time(at),
            })
        );
        assert_eq!(e[&r("api")].deleted_externally, None);
        let json = serde_json::to_value(&e[&r("www")]).unwrap();
        assert_eq!(json["deletedExternally"]["ports"][0], "80/TCP");
        assert_eq!(json["deletedExternally"]["count"], 1);
        assert!(
            serde_json::to_value(&e[&r("api")])
                .unwrap()
                .get("deletedExternally")
                .is_none()
        );
    }

    #[test]
    fn check_entries_fold_every_check_of_a_real_server() {
        let checks = BTreeMap::from([
            (r("web1"), vec!["a".to_string(), "b".to_string()]),
            (r("web2"), vec!["c".to_string()]),
            (r("web3"), vec!["not-started".to_string()]),
        ]);
        let statuses = HashMap::from([
            ("a".to_string(), status(true, 0, None, 10)),
            (
                "b".to_string(),
                status(true, 1, Some("HTTP status 503, expected 200"), 12),
            ),
            (
                "c".to_string(),
                status(false, 3, Some("connect refused"), 11),
            ),
        ]);
        let e = check_entries("lb1", &checks, &statuses);
        assert_eq!(e.len(), 2, "no entry before a check ran");
        let web1 = &e[&r("web1")];
        assert!(web1.healthy);
        assert_eq!(web1.consecutive_failures, 1);
        assert_eq!(
            web1.message.as_deref(),
            Some("HTTP status 503, expected 200")
        );
        assert_eq!(
            web1.last_check_time,
            time(SystemTime::UNIX_EPOCH + Duration::from_secs(12))
        );
        let web2 = &e[&r("web2")];
        assert!(!web2.healthy);
        assert_eq!(web2.balancer, "lb1");
        assert_eq!(web2.consecutive_failures, 3);
    }

    #[test]
    fn writes_are_rate_limited_and_heartbeat() {
        let t0 = Instant::now();
        let last = (1, t0);
        assert!(due::<i32>(None, Some(&1), t0), "first write");
        assert!(!due::<i32>(None, None, t0));
        assert!(due(Some(&last), None, t0), "withdrawal at once");
        assert!(!due(Some(&last), Some(&1), t0 + Duration::from_secs(30)));
        assert!(
            !due(Some(&last), Some(&2), t0 + Duration::from_secs(1)),
            "not sooner than 5 s"
        );
        assert!(due(Some(&last), Some(&2), t0 + MIN_INTERVAL));
        assert!(due(Some(&last), Some(&1), t0 + HEARTBEAT), "heartbeat");
    }
}
