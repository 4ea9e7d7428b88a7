//! Noticing that another program deleted IPVS services this balancer had programmed, and
//! remembering it long enough for a person to see. Pure: no I/O, the clock is passed in.
//!
//! Why: a balancer node's IPVS table is shared (ADR 0004). kube-proxy in IPVS mode deletes, at
//! the end of each of its syncs, every IPVS service whose address is not in its
//! `ipvs.excludeCIDRs` ([`lvstun_crds::kube_proxy`]). The next pass that reads the kernel adds
//! them again, so traffic mostly flows; but every deletion drops the service's connections and
//! sends new ones nowhere until then, and without this nobody would know why.
//!
//! How: after each pass, [`left_in_kernel`] says which services on lvstun's VIPs the kernel
//! holds as far as lvstun knows (what the pass planned against, plus what it created, minus
//! what it deleted or tried to delete). A later pass that reads the kernel in full compares:
//! [`deleted_externally`] are the ones that vanished in between, which lvstun did not remove.
//! Passes that plan against the kept model (ADR 0004) cannot see a deletion; the next resync
//! (or the follow-up read after an operation on the vanished service failed) does. [`Recent`]
//! keeps what was found per VirtualService while deletions keep coming, and forgets it
//! [`WINDOW`] after the last one.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::desired::ObjectRef;
use super::plan::OwnedVips;
use lvstun_ipvs::model::{Op, ServiceKey, Table};

/// How long a deletion stays reported after the last one. kube-proxy deletes at each of its
/// syncs (every `ipvs.syncPeriod`, 30 s by default, and after each Service or EndpointSlice
/// change), and the balancer finds each on its next full read (every resync, 30 s by
/// default): five minutes covers many of both, so the report does not flicker while the cause
/// lasts, and clears a few minutes after the cause is fixed.
pub const WINDOW: Duration = Duration::from_secs(300);

/// The services on `owned` VIPs that the kernel holds after a pass, as far as lvstun knows:
/// those of `before` (the table the pass planned against), plus those `sent` created, minus
/// those it deleted or tried to delete (a failed deletion is still lvstun's own intent, never
/// someone else's). `failed` are the sent operations the kernel refused.
pub fn left_in_kernel(
    before: &Table,
    sent: &[Op],
    failed: &HashSet<&Op>,
    owned: &OwnedVips,
) -> BTreeSet<ServiceKey> {
    let mut left: BTreeSet<ServiceKey> = before
        .services()
        .map(|(key, _)| *key)
        .filter(|key| owned.owns(key))
        .collect();
    for op in sent {
        match op {
            Op::NewService { key, .. } if !failed.contains(op) && owned.owns(key) => {
                left.insert(*key);
            }
            Op::DelService { key } => {
                left.remove(key);
            }
            _ => {}
        }
    }
    left
}

/// Of the services lvstun left in the kernel after its last pass (`left`, from
/// [`left_in_kernel`]), those missing from a fresh full `read`: someone else deleted them.
pub fn deleted_externally(left: &BTreeSet<ServiceKey>, read: &Table) -> Vec<ServiceKey> {
    left.iter()
        .filter(|key| read.service(key).is_none())
        .copied()
        .collect()
}

/// What was found deleted for one VirtualService, within the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The ports (`80/TCP`) whose service was found deleted.
    pub ports: BTreeSet<String>,
    /// Times a service was found deleted since the first of these deletions.
    pub count: u32,
    /// When the last one was found (wall clock, for the status).
    pub last_time: SystemTime,
    /// When the last one was found (monotonic, for the window).
    last: Instant,
}

/// Deletions found recently, per VirtualService.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recent {
    by_vs: BTreeMap<ObjectRef, Seen>,
}

impl Recent {
    /// Records what one pass found (`found`: per VirtualService, the ports found deleted) at
    /// `now` (`wall` is the same instant on the wall clock), and forgets what is older than
    /// [`WINDOW`].
    pub fn observe(
        &mut self,
        found: &BTreeMap<ObjectRef, BTreeSet<String>>,
        now: Instant,
        wall: SystemTime,
    ) {
        self.by_vs
            .retain(|_, seen| now.saturating_duration_since(seen.last) < WINDOW);
        for (vs, ports) in found.iter().filter(|(_, p)| !p.is_empty()) {
            let seen = self.by_vs.entry(vs.clone()).or_insert_with(|| Seen {
                ports: BTreeSet::new(),
                count: 0,
                last_time: wall,
                last: now,
            });
            seen.ports.extend(ports.iter().cloned());
            seen.count = seen
                .count
                .saturating_add(u32::try_from(ports.len()).unwrap_or(u32::MAX));
            seen.last_time = wall;
            seen.last = now;
        }
    }

    /// What is still within the window, per VirtualService.
    pub fn entries(&self) -> &BTreeMap<ObjectRef, Seen> {
        &self.by_vs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvstun_ipvs::model::{Protocol, Scheduler, ServiceConfig};

    fn key(vip: &str, port: u16) -> ServiceKey {
        ServiceKey::Addr {
            address: vip.parse().unwrap(),
            protocol: Protocol::Tcp,
            port,
        }
    }

    fn table(keys: &[ServiceKey]) -> Table {
        let mut t = Table::new();
        for k in keys {
            t.upsert_service(*k, ServiceConfig::new(Scheduler::RR));
        }
        t
    }

    fn new(k: ServiceKey) -> Op {
        Op::NewService {
            key: k,
            config: ServiceConfig::new(Scheduler::RR),
        }
    }

    fn del(k: ServiceKey) -> Op {
        Op::DelService { key: k }
    }

    /// One case: the table the last pass planned against, what it sent and what of that
    /// failed, then the next full read, and what must be reported.
    struct Case {
        name: &'static str,
        before: Vec<ServiceKey>,
        sent: Vec<Op>,
        failed: Vec<Op>,
        read: Vec<ServiceKey>,
        want: Vec<ServiceKey>,
    }

    #[test]
    fn only_what_lvstun_left_and_someone_else_removed_is_reported() {
        let (a80, a443) = (key("192.0.2.100", 80), key("192.0.2.100", 443));
        let theirs = key("10.96.0.1", 443); // kube-proxy's own ClusterIP service
        let cases = [
            Case {
                name: "nothing changed",
                before: vec![a80, theirs],
                sent: vec![],
                failed: vec![],
                read: vec![a80, theirs],
                want: vec![],
            },
            Case {
                name: "kube-proxy deleted lvstun's service",
                before: vec![a80, a443, theirs],
                sent: vec![],
                failed: vec![],
                read: vec![a443, theirs],
                want: vec![a80],
            },
            Case {
                name: "the whole table flushed (ipvsadm -C)",
                before: vec![a80, a443, theirs],
                sent: vec![],
                failed: vec![],
                read: vec![],
                want: vec![a80, a443],
            },
            Case {
                name: "lvstun deleted it itself",
                before: vec![a80, a443],
                sent: vec![del(a443)],
                failed: vec![],
                read: vec![a80],
                want: vec![],
            },
            Case {
                name: "lvstun's deletion failed, and it is gone anyway",
                before: vec![a80, a443],
                sent: vec![del(a443)],
                failed: vec![del(a443)],
                read: vec![a80],
                want: vec![],
            },
            Case {
                name: "created by the last pass, then deleted",
                before: vec![],
                sent: vec![new(a80)],
                failed: vec![],
                read: vec![],
                want: vec![a80],
            },
            Case {
                name: "a creation the kernel refused was never there",
                before: vec![],
                sent: vec![new(a80)],
                failed: vec![new(a80)],
                read: vec![],
                want: vec![],
            },
            Case {
                name: "services on VIPs lvstun does not own are not its business",
                before: vec![a80, theirs],
                sent: vec![],
                failed: vec![],
                read: vec![a80],
                want: vec![],
            },
        ];
        let owned: OwnedVips = ["192.0.2.100".parse().unwrap()].into_iter().collect();
        for c in cases {
            let failed: HashSet<&Op> = c.failed.iter().collect();
            let left = left_in_kernel(&table(&c.before), &c.sent, &failed, &owned);
            assert_eq!(
                deleted_externally(&left, &table(&c.read)),
                c.want,
                "{}",
                c.name
            );
        }
    }

    fn www() -> ObjectRef {
        ObjectRef {
            namespace: "default".into(),
            name: "www".into(),
        }
    }

    fn found(ports: &[&str]) -> BTreeMap<ObjectRef, BTreeSet<String>> {
        BTreeMap::from([(www(), ports.iter().map(|p| p.to_string()).collect())])
    }

    #[test]
    fn deletions_stay_visible_while_they_keep_coming_and_clear_a_window_after_the_last() {
        let t0 = Instant::now();
        let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s: u64| (t0 + Duration::from_secs(s), wall0 + Duration::from_secs(s));
        let mut recent = Recent::default();
        let nothing = BTreeMap::new();

        // kube-proxy deletes every 30 s for ten minutes; every resync finds it.
        for i in 0..20 {
            let (now, wall) = at(i * 30);
            recent.observe(&found(&["80/TCP"]), now, wall);
            assert!(recent.entries().contains_key(&www()), "at {} s", i * 30);
        }
        let seen = &recent.entries()[&www()];
        assert_eq!(seen.count, 20);
        assert_eq!(seen.last_time, at(570).1);
        assert_eq!(seen.ports, BTreeSet::from(["80/TCP".to_string()]));

        // Fixed: passes find nothing; it stays until the window after the last one ends.
        let (now, wall) = at(570 + WINDOW.as_secs() - 1);
        recent.observe(&nothing, now, wall);
        assert!(recent.entries().contains_key(&www()));
        let (now, wall) = at(570 + WINDOW.as_secs());
        recent.observe(&nothing, now, wall);
        assert!(recent.entries().is_empty());

        // A later deletion starts counting afresh; other ports join the same entry.
        let (now, wall) = at(2_000);
        recent.observe(&found(&["80/TCP", "443/TCP"]), now, wall);
        let (now, wall) = at(2_030);
        recent.observe(&found(&["80/TCP"]), now, wall);
        let seen = &recent.entries()[&www()];
        assert_eq!(seen.count, 3);
        assert_eq!(seen.ports.len(), 2);
    }
}
