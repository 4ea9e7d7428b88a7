//! The pure diff from the IPVS table the kernel holds to the one lvstun wants:
//! [`plan`] returns the fewest operations that get there. No I/O.
//!
//! Rules, each a lesson from peers that got it wrong:
//! - Only services whose VIP lvstun owns are touched; everything else in the
//!   kernel (another tool's services, firewall-mark services) survives.
//! - A changed service or destination is edited in place (`SetService`,
//!   `SetDest`), never deleted and re-added, which would drop its
//!   connections.
//! - Order: new and edited services; then per service its new, edited and
//!   removed destinations; then removed services. A service exists before its
//!   destinations are added; destinations go before services on removal; and
//!   within a service additions come before removals, so that replacing one
//!   real server by another never leaves the service with none in between.
//! - Removing a whole service is one `DelService`: the kernel removes its
//!   destinations with it.
//! - For a scheduler that walks the destination list to build its lookup
//!   table (`mh`, `sh`, `dh`), the list is kept in one canonical order
//!   (descending keys, what programming from empty gives) on every balancer, or the same flow hashes to
//!   different real servers on two balancers and a failover breaks it. The
//!   kernel only ever inserts at the head of the list, so a destination that
//!   belongs further back is deleted and at once re-added (`DelDest` right
//!   before its `NewDest`, in one batch): the kernel takes the deleted
//!   destination back from its trash with its connections, so flows on it go
//!   on (only a packet that meets the microseconds between the two is lost,
//!   and TCP sends it again). This is the one exception to "never delete and
//!   re-add", and it touches only the destinations that are out of place.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::model::{DestConfig, DestKey, Op, ServiceEntry, ServiceKey, Table};

/// The VIPs whose services lvstun manages on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedVips(BTreeSet<IpAddr>);

impl OwnedVips {
    /// Whether a service is lvstun's to manage (firewall-mark services never
    /// are: lvstun does not create them).
    pub fn owns(&self, key: &ServiceKey) -> bool {
        key.vip().is_some_and(|vip| self.0.contains(&vip))
    }

    /// The owned VIPs, in order.
    pub fn iter(&self) -> impl Iterator<Item = &IpAddr> {
        self.0.iter()
    }

    /// Every VIP owned here or in `other`.
    pub fn union(&self, other: &OwnedVips) -> OwnedVips {
        OwnedVips(self.0.union(&other.0).copied().collect())
    }

    /// Number of VIPs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no VIP is owned (the daemon's tests ask it, now from another crate).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<IpAddr> for OwnedVips {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> Self {
        OwnedVips(iter.into_iter().collect())
    }
}

/// The operations that turn `actual` into `desired` for the services `owned` covers, in an
/// order the kernel accepts. Services in `desired` that are not owned are ignored: ownership is
/// the caller's decision, made before.
///
/// The operations are visited twice, once to count and once to write them into one vector of
/// exactly that size: a first pass from empty is a hundred thousand operations, and growing or
/// concatenating per-kind vectors would hold two or three copies at once.
pub fn plan(actual: &Table, desired: &Table, owned: &OwnedVips) -> Vec<Op> {
    let mut count = 0;
    visit(actual, desired, owned, &mut |_| count += 1);
    let mut ops = Vec::with_capacity(count);
    visit(actual, desired, owned, &mut |op| ops.push(op));
    ops
}

/// Calls `f` for every destination of `want` and `have`, in key order, with its desired and
/// current configuration. Both maps are sorted: one merge, no lookups, which keeps planning a
/// hundred thousand unchanged destinations cheap.
fn merge<'a>(
    want: &'a BTreeMap<DestKey, DestConfig>,
    have: &'a BTreeMap<DestKey, DestConfig>,
    mut f: impl FnMut(&'a DestKey, Option<&'a DestConfig>, Option<&'a DestConfig>),
) {
    let mut w = want.iter().peekable();
    let mut h = have.iter().peekable();
    loop {
        match (w.peek(), h.peek()) {
            (None, None) => break,
            (Some((wk, wc)), None) => {
                f(wk, Some(wc), None);
                w.next();
            }
            (None, Some((hk, hc))) => {
                f(hk, None, Some(hc));
                h.next();
            }
            (Some((wk, wc)), Some((hk, hc))) => match wk.cmp(hk) {
                Ordering::Less => {
                    f(wk, Some(wc), None);
                    w.next();
                }
                Ordering::Greater => {
                    f(hk, None, Some(hc));
                    h.next();
                }
                Ordering::Equal => {
                    f(wk, Some(wc), Some(hc));
                    w.next();
                    h.next();
                }
            },
        }
    }
}

/// Calls `emit` with every operation of the plan, in order.
fn visit(actual: &Table, desired: &Table, owned: &OwnedVips, emit: &mut dyn FnMut(Op)) {
    let wanted = || desired.services().filter(|(key, _)| owned.owns(key));
    // Services first: a destination needs its service.
    for (key, want) in wanted() {
        match actual.service(key) {
            None => emit(Op::NewService {
                key: *key,
                config: want.config,
            }),
            Some(have) if have.config != want.config => emit(Op::SetService {
                key: *key,
                config: want.config,
            }),
            Some(_) => {}
        }
    }
    // Then each service's destinations: additions, edits, removals.
    let empty = BTreeMap::new();
    for (key, want) in wanted() {
        let service = *key;
        let have_entry = actual.service(key);
        let have = have_entry.map_or(&empty, |h| &h.dests);
        // From which key up the destinations must be (re)added to put the list in order.
        let readd_from = have_entry.and_then(|h| reorder_from(h, want));
        let readd = |dest: &DestKey| readd_from.is_some_and(|from| *dest >= from);
        // Additions in ascending key order: each lands at the head of the kernel's list.
        merge(&want.dests, have, |dest, w, h| match (w, h) {
            (Some(config), None) => emit(Op::NewDest {
                service,
                dest: *dest,
                config: *config,
            }),
            (Some(config), Some(_)) if readd(dest) => {
                emit(Op::DelDest {
                    service,
                    dest: *dest,
                });
                emit(Op::NewDest {
                    service,
                    dest: *dest,
                    config: *config,
                });
            }
            _ => {}
        });
        merge(&want.dests, have, |dest, w, h| {
            if let (Some(config), Some(current)) = (w, h)
                && config != current
                && !readd(dest)
            {
                emit(Op::SetDest {
                    service,
                    dest: *dest,
                    config: *config,
                });
            }
        });
        merge(&want.dests, have, |dest, w, h| {
            if let (None, Some(_)) = (w, h) {
                emit(Op::DelDest {
                    service,
                    dest: *dest,
                });
            }
        });
    }
    // Last, services lvstun owns and no longer wants (their destinations go with them).
    for (key, _) in actual.services() {
        if owned.owns(key) && desired.service(key).is_none() {
            emit(Op::DelService { key: *key });
        }
    }
}

/// How many destinations `ops` moves into place in a list (a `DelDest` followed at once by the
/// same destination's `NewDest`): reported in the log so that a person sees why a serving
/// destination was deleted.
pub fn moved(ops: &[Op]) -> usize {
    ops.windows(2)
        .filter(|pair| {
            matches!(pair, [Op::DelDest { service: s1, dest: d1 }, Op::NewDest { service: s2, dest: d2, .. }] if s1 == s2 && d1 == d2)
        })
        .count()
}

/// For a service whose scheduler follows the kernel's list order, the smallest destination
/// key from which every wanted destination must be (re)added so that the list ends in the
/// canonical order (descending keys); `None` when it already will, when the scheduler does not
/// care, or when the kernel's order is not known (then nothing is moved on a guess).
///
/// Re-added destinations go to the head, so the ones left in place form the tail of the
/// canonical list: the smallest wanted keys, which must already sit in the kernel's list in
/// descending order (unwanted destinations between them go and change nothing). The longest
/// such run of smallest keys stays; everything above it is re-added, the fewest moves there are.
fn reorder_from(have: &ServiceEntry, want: &ServiceEntry) -> Option<DestKey> {
    if !want.config.scheduler.follows_list_order() {
        return None;
    }
    let order = have.order.as_ref()?;
    let position: HashMap<&DestKey, usize> =
        order.iter().enumerate().map(|(i, d)| (d, i)).collect();
    let mut before = usize::MAX;
    let in_place = want
        .dests
        .keys()
        .take_while(|w| match position.get(w) {
            Some(&at) if at < before => {
                before = at;
                true
            }
            _ => false,
        })
        .count();
    want.dests.keys().nth(in_place).copied()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{
        AddressFamily, DestConfig, DestKey, Forward, Persistence, Protocol, Scheduler,
        ServiceConfig, ServiceEntry, Thresholds, Tunnel, Weight,
    };

    fn vip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn rip(last: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, last])
    }

    fn svc(last: u8, port: u16) -> ServiceKey {
        ServiceKey::Addr {
            address: vip(last),
            protocol: Protocol::Tcp,
            port,
        }
    }

    fn dest(last: u8) -> DestKey {
        DestKey {
            address: rip(last),
            port: 80,
        }
    }

    fn weight(w: u32) -> DestConfig {
        DestConfig::tunnel(Weight::new(w).unwrap())
    }

    fn owned(lasts: &[u8]) -> OwnedVips {
        lasts.iter().map(|l| vip(*l)).collect()
    }

    /// Applies a plan the way the kernel would; every op must be accepted.
    fn apply(actual: &Table, ops: &[Op]) -> Table {
        let mut table = actual.clone();
        for op in ops {
            assert_eq!(table.apply(op), Ok(()), "kernel would refuse {op}");
        }
        table
    }

    fn base() -> Table {
        let mut t = Table::new();
        t.upsert_service(svc(10, 80), ServiceConfig::new(Scheduler::WRR));
        t.upsert_dest(&svc(10, 80), dest(11), weight(1));
        t.upsert_dest(&svc(10, 80), dest(12), weight(1));
        t
    }

    #[test]
    fn identical_tables_need_nothing() {
        assert!(plan(&base(), &base(), &owned(&[10])).is_empty());
    }

    #[test]
    fn weight_change_is_one_set_dest() {
        let mut desired = base();
        desired.upsert_dest(&svc(10, 80), dest(12), weight(5));
        let ops = plan(&base(), &desired, &owned(&[10]));
        assert_eq!(
            ops,
            vec![Op::SetDest {
                service: svc(10, 80),
                dest: dest(12),
                config: weight(5),
            }]
        );
    }

    #[test]
    fn scheduler_change_edits_the_service_in_place() {
        let mut desired = base();
        desired.upsert_service(svc(10, 80), ServiceConfig::new(Scheduler::MH));
        let ops = plan(&base(), &desired, &owned(&[10]));
        assert_eq!(
            ops,
            vec![Op::SetService {
                key: svc(10, 80),
                config: ServiceConfig::new(Scheduler::MH),
            }]
        );
    }

    #[test]
    fn tunnel_type_change_edits_the_destination_in_place() {
        let mut desired = base();
        let gre = DestConfig {
            forward: Forward::Tunnel(Tunnel::Gre { checksum: true }),
            ..weight(1)
        };
        desired.upsert_dest(&svc(10, 80), dest(11), gre);
        let ops = plan(&base(), &desired, &owned(&[10]));
        assert!(matches!(&ops[..], [Op::SetDest { config, .. }] if *config == gre));
    }

    #[test]
    fn foreign_services_survive() {
        let mut actual = base();
        actual.upsert_service(svc(99, 443), ServiceConfig::new(Scheduler::RR));
        actual.upsert_dest(&svc(99, 443), dest(50), weight(3));
        actual.upsert_service(
            ServiceKey::Fwmark {
                family: AddressFamily::Inet,
                mark: 7,
            },
            ServiceConfig::new(Scheduler::RR),
        );
        // lvstun wants nothing at all on its VIP .10, and knows nothing of .99.
        let ops = plan(&actual, &Table::new(), &owned(&[10]));
        assert_eq!(ops, vec![Op::DelService { key: svc(10, 80) }]);
        let after = apply(&actual, &ops);
        assert!(after.service(&svc(99, 443)).is_some());
        assert_eq!(after.len(), 2);
    }

    #[test]
    fn desired_services_on_unowned_vips_are_ignored() {
        let mut desired = base();
        desired.upsert_service(svc(20, 80), ServiceConfig::new(Scheduler::RR));
        assert!(plan(&base(), &desired, &owned(&[10])).is_empty());
    }

    #[test]
    fn replacing_a_destination_adds_before_it_removes() {
        let mut desired = Table::new();
        desired.upsert_service(svc(10, 80), ServiceConfig::new(Scheduler::WRR));
        desired.upsert_dest(&svc(10, 80), dest(11), weight(1));
        desired.upsert_dest(&svc(10, 80), dest(13), weight(1));
        let ops = plan(&base(), &desired, &owned(&[10]));
        assert_eq!(
            ops,
            vec![
                Op::NewDest {
                    service: svc(10, 80),
                    dest: dest(13),
                    config: weight(1),
                },
                Op::DelDest {
                    service: svc(10, 80),
                    dest: dest(12),
                },
            ]
        );
    }

    #[test]
    fn new_service_comes_before_its_destinations() {
        let ops = plan(&Table::new(), &base(), &owned(&[10]));
        assert!(matches!(ops[0], Op::NewService { .. }));
        assert_eq!(ops.len(), 3);
        assert_eq!(apply(&Table::new(), &ops), base());
    }

    // ---- list order for hashing schedulers ------------------------------

    /// A table as the kernel would hold it after `adds` (in that order) on one mh (or
    /// `scheduler`) service: the model records the kernel's list order.
    fn kernel(scheduler: Scheduler, adds: &[u8]) -> Table {
        let mut t = Table::new();
        let mut ops = vec![Op::NewService {
            key: svc(10, 80),
            config: ServiceConfig::new(scheduler),
        }];
        ops.extend(adds.iter().map(|d| Op::NewDest {
            service: svc(10, 80),
            dest: dest(*d),
            config: weight(1),
        }));
        for op in &ops {
            t.apply(op).unwrap();
        }
        t
    }

    fn wanted(scheduler: Scheduler, dests: &[u8]) -> Table {
        let mut t = Table::new();
        t.upsert_service(svc(10, 80), ServiceConfig::new(scheduler));
        for d in dests {
            t.upsert_dest(&svc(10, 80), dest(*d), weight(1));
        }
        t
    }

    /// The kernel's list of the test service, first to last, as real-server last octets.
    fn list(t: &Table) -> Vec<u8> {
        let order = t.service(&svc(10, 80)).unwrap().order.as_ref().unwrap();
        order
            .iter()
            .map(|d| match d.address {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(_) => unreachable!(),
            })
            .collect()
    }

    fn readd(d: u8, w: u32) -> [Op; 2] {
        [
            Op::DelDest {
                service: svc(10, 80),
                dest: dest(d),
            },
            Op::NewDest {
                service: svc(10, 80),
                dest: dest(d),
                config: weight(w),
            },
        ]
    }

    #[test]
    fn the_model_inserts_at_the_head_like_the_kernel() {
        // ipvsadm -a .12, then -a .11: `ipvsadm -Ln` lists .11 first.
        assert_eq!(list(&kernel(Scheduler::MH, &[12, 11])), vec![11, 12]);
        // From empty the planner adds in ascending order: descending list, the canonical one.
        let ops = plan(
            &Table::new(),
            &wanted(Scheduler::MH, &[11, 12, 13]),
            &owned(&[10]),
        );
        assert_eq!(list(&apply(&Table::new(), &ops)), vec![13, 12, 11]);
    }

    #[test]
    fn mh_destination_out_of_place_is_moved_alone() {
        let actual = kernel(Scheduler::MH, &[12, 11]);
        let desired = wanted(Scheduler::MH, &[11, 12]);
        let ops = plan(&actual, &desired, &owned(&[10]));
        assert_eq!(ops, readd(12, 1).to_vec());
        assert_eq!(moved(&ops), 1);
        let after = apply(&actual, &ops);
        assert_eq!(list(&after), vec![12, 11]);
        assert!(plan(&after, &desired, &owned(&[10])).is_empty());
    }

    #[test]
    fn order_is_left_alone_where_the_scheduler_does_not_hash_the_list() {
        for scheduler in [Scheduler::RR, Scheduler::WRR] {
            let actual = kernel(scheduler, &[12, 11]);
            assert!(plan(&actual, &wanted(scheduler, &[11, 12]), &owned(&[10])).is_empty());
        }
    }

    #[test]
    fn unknown_order_moves_nothing() {
        // Built by upserts: no kernel order recorded, so nothing is moved on a guess.
        let mut actual = wanted(Scheduler::MH, &[12, 11]);
        actual.upsert_dest(&svc(10, 80), dest(13), weight(1));
        assert!(
            plan(
                &actual,
                &wanted(Scheduler::MH, &[11, 12, 13]),
                &owned(&[10])
            )
            .is_empty()
        );
    }

    #[test]
    fn a_new_highest_key_lands_in_place() {
        let actual = kernel(Scheduler::MH, &[11, 12]);
        let ops = plan(
            &actual,
            &wanted(Scheduler::MH, &[11, 12, 13]),
            &owned(&[10]),
        );
        assert!(matches!(&ops[..], [Op::NewDest { dest: d, .. }] if *d == dest(13)));
        assert_eq!(list(&apply(&actual, &ops)), vec![13, 12, 11]);
    }

    #[test]
    fn a_new_lowest_key_readds_everything_above_it() {
        let actual = kernel(Scheduler::MH, &[11, 12]);
        let desired = wanted(Scheduler::MH, &[10, 11, 12]);
        let ops = plan(&actual, &desired, &owned(&[10]));
        let mut expected = vec![Op::NewDest {
            service: svc(10, 80),
            dest: dest(10),
            config: weight(1),
        }];
        expected.extend(readd(11, 1));
        expected.extend(readd(12, 1));
        assert_eq!(ops, expected);
        assert_eq!(moved(&ops), 2);
        assert_eq!(list(&apply(&actual, &ops)), vec![12, 11, 10]);
    }

    #[test]
    fn unwanted_destinations_between_do_not_count() {
        // The kernel's list [13, 11, 14, 12]; .14 is no longer wanted. Only .11, the smallest
        // key, can stay: .12 sits behind it instead of before. .12 and .13 are re-added.
        let actual = kernel(Scheduler::SH, &[12, 14, 11, 13]);
        assert_eq!(list(&actual), vec![13, 11, 14, 12]);
        let desired = wanted(Scheduler::SH, &[11, 12, 13]);
        let ops = plan(&actual, &desired, &owned(&[10]));
        let mut expected = readd(12, 1).to_vec();
        expected.extend(readd(13, 1));
        expected.push(Op::DelDest {
            service: svc(10, 80),
            dest: dest(14),
        });
        assert_eq!(ops, expected);
        let after = apply(&actual, &ops);
        assert_eq!(list(&after), vec![13, 12, 11]);
        assert!(plan(&after, &desired, &owned(&[10])).is_empty());
    }

    #[test]
    fn switching_to_mh_puts_the_list_in_order_and_readds_with_the_wanted_config() {
        let actual = kernel(Scheduler::RR, &[12, 11]);
        let mut desired = wanted(Scheduler::MH, &[11, 12]);
        desired.upsert_dest(&svc(10, 80), dest(12), weight(3));
        let ops = plan(&actual, &desired, &owned(&[10]));
        let mut expected = vec![Op::SetService {
            key: svc(10, 80),
            config: ServiceConfig::new(Scheduler::MH),
        }];
        // The re-added destination carries its new weight: no separate SetDest.
        expected.extend(readd(12, 3));
        assert_eq!(ops, expected);
        let after = apply(&actual, &ops);
        assert_eq!(after, desired);
        assert_eq!(list(&after), vec![12, 11]);
    }

    // ---- property tests -------------------------------------------------

    fn arb_dest_config() -> impl Strategy<Value = DestConfig> {
        (0u32..4, 0u8..3, prop::bool::ANY).prop_map(|(w, fwd, thresholds)| DestConfig {
            weight: Weight::new(w).unwrap(),
            forward: match fwd {
                0 => Forward::Tunnel(Tunnel::Ipip),
                1 => Forward::Tunnel(Tunnel::Gre { checksum: false }),
                _ => Forward::Route,
            },
            thresholds: if thresholds {
                Thresholds::new(100, 10).unwrap()
            } else {
                Thresholds::default()
            },
        })
    }

    fn arb_service_config() -> impl Strategy<Value = ServiceConfig> {
        (0u8..3, prop::bool::ANY).prop_map(|(s, persistent)| ServiceConfig {
            scheduler: [Scheduler::RR, Scheduler::WRR, Scheduler::MH][usize::from(s)],
            flags: Default::default(),
            persistence: persistent
                .then(|| Persistence::new(AddressFamily::Inet, 300, 32).unwrap()),
        })
    }

    /// Tables over a small key space (VIPs .1-.4, ports 80/443, real servers
    /// .1-.5) so that random pairs overlap a lot.
    fn arb_table() -> impl Strategy<Value = Table> {
        let service =
            (1u8..5, prop::bool::ANY).prop_map(|(v, tls)| svc(v, if tls { 443 } else { 80 }));
        let dests = prop::collection::btree_map((1u8..6).prop_map(dest), arb_dest_config(), 0..4);
        prop::collection::btree_map(service, (arb_service_config(), dests), 0..5).prop_map(
            |services: BTreeMap<ServiceKey, (ServiceConfig, BTreeMap<DestKey, DestConfig>)>| {
                let mut table = Table::new();
                for (key, (config, dests)) in services {
                    table.upsert_service(key, config);
                    for (d, c) in dests {
                        table.upsert_dest(&key, d, c);
                    }
                }
                table
            },
        )
    }

    /// Like [`arb_table`], but built the way the kernel's table grows (operations applied from
    /// empty, destinations added in a random order), so that each service records a list order.
    fn arb_kernel_table() -> impl Strategy<Value = Table> {
        let service =
            (1u8..5, prop::bool::ANY).prop_map(|(v, tls)| svc(v, if tls { 443 } else { 80 }));
        let dests = prop::collection::btree_map((1u8..6).prop_map(dest), arb_dest_config(), 0..5)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>())
            .prop_shuffle();
        prop::collection::btree_map(service, (arb_service_config(), dests), 0..5).prop_map(
            |services: BTreeMap<ServiceKey, (ServiceConfig, Vec<(DestKey, DestConfig)>)>| {
                let mut table = Table::new();
                for (key, (config, dests)) in services {
                    table.apply(&Op::NewService { key, config }).unwrap();
                    for (dest, config) in dests {
                        table
                            .apply(&Op::NewDest {
                                service: key,
                                dest,
                                config,
                            })
                            .unwrap();
                    }
                }
                table
            },
        )
    }

    fn restricted(
        table: &Table,
        keep: impl Fn(&ServiceKey) -> bool,
    ) -> Vec<(ServiceKey, ServiceEntry)> {
        table
            .services()
            .filter(|(k, _)| keep(k))
            .map(|(k, e)| (*k, e.clone()))
            .collect()
    }

    proptest! {
        #[test]
        fn plan_reaches_desired_and_is_idempotent(
            actual in prop_oneof![arb_table(), arb_kernel_table()],
            desired in arb_table(),
            owned_mask in 0u8..16,
        ) {
            let owned: OwnedVips = (1u8..5)
                .filter(|v| owned_mask & (1 << (v - 1)) != 0)
                .map(vip)
                .collect();
            let ops = plan(&actual, &desired, &owned);
            let after = apply(&actual, &ops);

            // Owned part equals desired, foreign part is untouched.
            prop_assert_eq!(
                restricted(&after, |k| owned.owns(k)),
                restricted(&desired, |k| owned.owns(k))
            );
            prop_assert_eq!(
                restricted(&after, |k| !owned.owns(k)),
                restricted(&actual, |k| !owned.owns(k))
            );
            // Planning again yields nothing.
            prop_assert!(plan(&after, &desired, &owned).is_empty());
            // No operation touches a foreign service.
            prop_assert!(ops.iter().all(|op| owned.owns(op.service())));
            // Nothing is deleted and re-created, except a destination moved into place in the
            // list of a hashing scheduler: its DelDest is followed at once by its NewDest.
            let hashing = |key: &ServiceKey| {
                desired.service(key).is_some_and(|e| e.config.scheduler.follows_list_order())
            };
            let mut readded = BTreeSet::new();
            for (i, op) in ops.iter().enumerate() {
                if let Op::DelService { key } = op {
                    let recreated = ops
                        .iter()
                        .any(|o| matches!(o, Op::NewService { key: k, .. } if k == key));
                    prop_assert!(!recreated);
                    prop_assert!(desired.service(key).is_none());
                }
                if let Op::DelDest { service, dest } = op {
                    let recreated = ops.iter().any(|o| {
                        matches!(o, Op::NewDest { service: s, dest: d, .. } if s == service && d == dest)
                    });
                    if recreated {
                        prop_assert!(hashing(service), "{op} re-added under {:?}", desired.service(service));
                        let next_is_readd = matches!(
                            ops.get(i + 1),
                            Some(Op::NewDest { service: s, dest: d, .. }) if s == service && d == dest
                        );
                        prop_assert!(next_is_readd, "{op} not followed by its re-add");
                        readded.insert((*service, *dest));
                    }
                }
            }
            // The list of every hashing service whose order is known ends canonical: keys
            // descending.
            for (key, entry) in after.services().filter(|(k, _)| owned.owns(k) && hashing(k)) {
                if let Some(order) = &entry.order {
                    let canonical: Vec<DestKey> = entry.dests.keys().rev().copied().collect();
                    prop_assert_eq!(order.iter().copied().collect::<Vec<_>>(), canonical, "{}", key);
                }
            }
            // Only changed destinations are edited: one SetDest per changed config that was
            // not re-added with it.
            let expected_set_dests: usize = desired
                .services()
                .filter(|(k, _)| owned.owns(k))
                .filter_map(|(k, want)| actual.service(k).map(|have| (k, want, have)))
                .map(|(k, want, have)| {
                    want.dests
                        .iter()
                        .filter(|(d, c)| have.dests.get(d).is_some_and(|h| h != *c))
                        .filter(|(d, _)| !readded.contains(&(*k, **d)))
                        .count()
                })
                .sum();
            prop_assert_eq!(
                ops.iter().filter(|o| matches!(o, Op::SetDest { .. })).count(),
                expected_set_dests
            );
        }
    }
}
