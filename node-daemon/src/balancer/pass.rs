//! The pure halves of one balancer pass ([`super::run::Balancer::pass`]), which reads as
//! observe → [`decide`] → apply → settle ([`not_done`], [`remaining_owned`], [`programmed`],
//! [`refusal_messages`]) → publish. No I/O, no clock: the pass hands in what it observed (the
//! kernel's table, the resolved objects, the health verdicts, what the kernel refused) and
//! gets back what to write and what to say.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::desired::{ObjectRef, Resolved};
use super::plan::{self, OwnedVips};
use super::refusal::Refusal;
use lvstun_ipvs::model::{DestKey, Op, ServiceKey, Table};

/// What a pass decided before any write.
#[derive(Debug)]
pub struct Decision {
    /// The table the objects and the verdicts ask for.
    pub desired: Table,
    /// The VIPs the objects ask for now.
    pub wanted: OwnedVips,
    /// What lvstun owns while it writes: the state file's VIPs and the wanted ones (recorded
    /// before the kernel is touched, so a crash mid-pass leaves nothing unowned).
    pub owned: OwnedVips,
    /// The writes that bring the kernel to `desired`, before any is held back.
    pub planned: Vec<Op>,
}

/// Decides a pass: the desired table from the objects and `verdict` (a check key's current
/// verdict), the VIPs to own, and the plan against the kernel's table `actual`.
pub fn decide(
    resolved: &Resolved,
    actual: &Table,
    verdict: impl Fn(&str) -> bool,
    owned: &OwnedVips,
) -> Decision {
    let desired = resolved.table(|key| verdict(key));
    let wanted = resolved.vips();
    let owned = owned.union(&wanted);
    let planned = plan::plan(actual, &desired, &owned);
    Decision {
        desired,
        wanted,
        owned,
        planned,
    }
}

/// What did not reach the kernel, by (service, destination); `None` stands for the service
/// itself.
pub type NotDone = HashSet<(ServiceKey, Option<DestKey>)>;

/// The services and destinations of the operations that were held back or refused.
pub fn not_done<'a>(ops: impl IntoIterator<Item = &'a Op>) -> NotDone {
    ops.into_iter()
        .map(|op| match op {
            Op::NewService { key, .. } | Op::SetService { key, .. } | Op::DelService { key } => {
                (*key, None)
            }
            Op::NewDest { service, dest, .. }
            | Op::SetDest { service, dest, .. }
            | Op::DelDest { service, dest } => (*service, Some(*dest)),
        })
        .collect()
}

/// What the state file shrinks to after the writes: the VIPs wanted now, plus those of owned
/// services the objects no longer ask for whose removal did not go through (still lvstun's in
/// the kernel, to be removed by a later pass).
pub fn remaining_owned(decision: &Decision, actual: &Table, not_done: &NotDone) -> OwnedVips {
    decision
        .wanted
        .iter()
        .copied()
        .chain(
            actual
                .services()
                .filter(|(key, _)| {
                    decision.owned.owns(key) && decision.desired.service(key).is_none()
                })
                .filter(|(key, _)| not_done.contains(&(**key, None)))
                .filter_map(|(key, _)| key.vip()),
        )
        .collect()
}

/// Per VirtualService and port name, the destinations with weight > 0 in the kernel now: as
/// desired, except where the operation (or its service's) did not go through, then as they
/// were in `actual`.
pub fn programmed(
    resolved: &Resolved,
    actual: &Table,
    desired: &Table,
    not_done: &NotDone,
) -> BTreeMap<ObjectRef, BTreeMap<String, u32>> {
    let weight_now = |service: &ServiceKey, dest: &DestKey| {
        let table = if not_done.contains(&(*service, Some(*dest)))
            || not_done.contains(&(*service, None))
        {
            actual
        } else {
            desired
        };
        table
            .service(service)
            .and_then(|e| e.dests.get(dest))
            .is_some_and(|c| c.weight.get() > 0)
    };
    let mut programmed: BTreeMap<ObjectRef, BTreeMap<String, u32>> = BTreeMap::new();
    for service in &resolved.services {
        let count = match desired.service(&service.key) {
            // Everything went through: the desired table says it (and costs one lookup).
            Some(entry) if not_done.is_empty() => {
                entry.dests.values().filter(|c| c.weight.get() > 0).count()
            }
            _ => service
                .dests
                .iter()
                .filter(|d| weight_now(&service.key, &resolved.dest_key(service, **d)))
                .count(),
        };
        programmed
            .entry(service.virtual_service.clone())
            .or_default()
            .insert(
                service.port_name.clone(),
                u32::try_from(count).unwrap_or(u32::MAX),
            );
    }
    programmed
}

/// Per VirtualService, the refusals held back for its services, for a person: sorted by
/// operation, joined with `; `.
pub fn refusal_messages(
    resolved: &Resolved,
    refusals: &HashMap<Op, Refusal>,
) -> BTreeMap<ObjectRef, String> {
    let mut messages: BTreeMap<ObjectRef, String> = BTreeMap::new();
    if refusals.is_empty() {
        return messages;
    }
    let owner: HashMap<ServiceKey, &ObjectRef> = resolved
        .services
        .iter()
        .map(|s| (s.key, &s.virtual_service))
        .collect();
    let mut sorted: Vec<(&Op, &Refusal)> = refusals.iter().collect();
    sorted.sort_by(|a, b| a.1.op.cmp(&b.1.op));
    for (op, refusal) in sorted {
        if let Some(vs) = owner.get(op.service()) {
            let text = messages.entry((*vs).clone()).or_default();
            if !text.is_empty() {
                text.push_str("; ");
            }
            text.push_str(&refusal.to_string());
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::balancer::desired;
    use crate::balancer::run::tests_support::{WEB1, WEB2, example_config, examples};
    use crate::error::Errno;
    use lvstun_ipvs::model::{DestConfig, Protocol, Scheduler, ServiceConfig, Weight};

    fn key(vip: &str, port: u16) -> ServiceKey {
        ServiceKey::Addr {
            address: vip.parse().unwrap(),
            protocol: Protocol::Tcp,
            port,
        }
    }

    fn www() -> ServiceKey {
        key("192.0.2.100", 80)
    }

    fn dest(addr: &str) -> DestKey {
        DestKey {
            address: addr.parse().unwrap(),
            port: 80,
        }
    }

    fn vips(list: &[&str]) -> OwnedVips {
        list.iter().map(|v| v.parse::<IpAddr>().unwrap()).collect()
    }

    /// The kernel with www's two destinations at the given weights.
    fn kernel(w1: u32, w2: u32) -> Table {
        let mut t = Table::new();
        t.upsert_service(www(), example_config());
        t.upsert_dest(
            &www(),
            dest(WEB1),
            DestConfig::tunnel(Weight::new(w1).unwrap()),
        );
        t.upsert_dest(
            &www(),
            dest(WEB2),
            DestConfig::tunnel(Weight::new(w2).unwrap()),
        );
        t
    }

    fn www_ref(resolved: &Resolved) -> ObjectRef {
        resolved.services[0].virtual_service.clone()
    }

    #[test]
    fn decide_owns_the_recorded_vips_and_the_wanted_ones_and_plans_from_the_kernel() {
        let resolved = desired::resolve(&examples());
        let recorded = vips(&["192.0.2.200"]);
        // From an empty kernel, with both checks passing: the service and its two destinations.
        let d = decide(&resolved, &Table::new(), |_| true, &recorded);
        assert_eq!(d.wanted, vips(&["192.0.2.100"]));
        assert_eq!(d.owned, vips(&["192.0.2.100", "192.0.2.200"]));
        assert_eq!(d.planned.len(), 3, "{:?}", d.planned);
        // The kernel already as desired: nothing to write.
        let d = decide(&resolved, &kernel(1, 1), |_| true, &recorded);
        assert!(d.planned.is_empty(), "{:?}", d.planned);
        // A failing check is a weight of 0, one write.
        let d = decide(&resolved, &kernel(1, 1), |k| !k.contains(WEB2), &recorded);
        assert_eq!(d.planned.len(), 1, "{:?}", d.planned);
    }

    #[test]
    fn not_done_names_services_and_destinations() {
        let ops = [
            Op::DelService {
                key: key("192.0.2.200", 443),
            },
            Op::DelDest {
                service: www(),
                dest: dest(WEB2),
            },
        ];
        let got = not_done(ops.iter());
        let want: NotDone = [(key("192.0.2.200", 443), None), (www(), Some(dest(WEB2)))]
            .into_iter()
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_owned_service_whose_removal_did_not_go_through_keeps_its_vip() {
        let resolved = desired::resolve(&examples());
        let mut actual = kernel(1, 1);
        let old = key("192.0.2.200", 443);
        actual.upsert_service(old, ServiceConfig::new(Scheduler::RR));
        let d = decide(&resolved, &actual, |_| true, &vips(&["192.0.2.200"]));
        let cases = [
            (
                "the removal went through",
                NotDone::new(),
                vips(&["192.0.2.100"]),
            ),
            (
                "the removal was refused",
                [(old, None)].into_iter().collect(),
                vips(&["192.0.2.100", "192.0.2.200"]),
            ),
            (
                "only a destination of www failed",
                [(www(), Some(dest(WEB1)))].into_iter().collect(),
                vips(&["192.0.2.100"]),
            ),
        ];
        for (case, not_done, want) in cases {
            assert_eq!(remaining_owned(&d, &actual, &not_done), want, "{case}");
        }
    }

    #[test]
    fn programmed_counts_the_kernel_where_a_write_did_not_go_through() {
        let resolved = desired::resolve(&examples());
        let actual = kernel(0, 0);
        let d = decide(&resolved, &actual, |_| true, &OwnedVips::default());
        let vs = www_ref(&resolved);
        let port = resolved.services[0].port_name.clone();
        let cases: [(&str, NotDone, u32); 3] = [
            ("everything went through", NotDone::new(), 2),
            (
                "web2's raise failed",
                [(www(), Some(dest(WEB2)))].into_iter().collect(),
                1,
            ),
            (
                "the service's write failed",
                [(www(), None)].into_iter().collect(),
                0,
            ),
        ];
        for (case, not_done, want) in cases {
            let got = programmed(&resolved, &actual, &d.desired, &not_done);
            assert_eq!(got[&vs][&port], want, "{case}: {got:?}");
        }
    }

    #[test]
    fn refusal_messages_are_sorted_and_joined_per_virtual_service() {
        let resolved = desired::resolve(&examples());
        let refusal = |op: &Op, errno| Refusal {
            op: op.to_string(),
            errno,
            hint: "",
            attempts: 1,
            retry_at: tokio::time::Instant::now(),
        };
        let a = Op::DelDest {
            service: www(),
            dest: dest(WEB2),
        };
        let b = Op::DelDest {
            service: www(),
            dest: dest(WEB1),
        };
        let elsewhere = Op::DelService {
            key: key("192.0.2.200", 443),
        };
        let refusals: HashMap<Op, Refusal> = [
            (a, refusal(&a, Errno::EINVAL)),
            (b, refusal(&b, Errno::EPERM)),
            (elsewhere, refusal(&elsewhere, Errno::EINVAL)),
        ]
        .into_iter()
        .collect();
        let got = refusal_messages(&resolved, &refusals);
        assert_eq!(
            got.len(),
            1,
            "a refusal of no VirtualService's service is not shown"
        );
        let text = &got[&www_ref(&resolved)];
        let (first, second) = text.split_once("; ").unwrap();
        assert!(first < second, "sorted by operation: {text}");
        assert!(text.contains(WEB1) && text.contains(WEB2), "{text}");
        assert!(refusal_messages(&resolved, &HashMap::new()).is_empty());
    }
}
