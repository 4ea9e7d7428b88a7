//! The balancer's teardown (ADR 0008): after the VRRP handover, remove what this daemon put in
//! the kernel and nothing else, then its records. Run at SIGTERM when [`crate::exit::decide`]
//! says Teardown, and by `lvstun-node balancer cleanup` by hand.
//!
//! What lvstun put there is what its records in the state folder say ([`super::state`]):
//! - the IPVS services of the owned VIPs (`balancer-owned.json`, ownership by VIP, ADR 0004):
//!   deleted, each with its destinations; services on other VIPs are never touched;
//! - VIP addresses still on interfaces (`balancer-addresses.json`): the handover removed them,
//!   unless it ran out of time;
//! - the IPVS connection sync daemons lvstun's routers started (`balancer-sync.json`): stopped
//!   if still running (the handover stops them too);
//! - the `net.ipv4.vs` sysctls (`balancer-sysctls.json`, their values before lvstun): written
//!   back while they still hold lvstun's value; one someone changed since is theirs.
//!
//! A record whose part was undone completely is removed; one with a failure stays, so that
//! `lvstun-node balancer cleanup` can finish the job. [`plan`] is pure (the unit tests);
//! [`run`] reads the kernel and the records, applies the plan and logs every step as
//! `teardown: ...`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use tracing::{error, info, warn};

use super::plan::{self as ipvs_plan, OwnedVips};
use super::state::{self, HeldVip, HeldVips};
use crate::error::Errno;
use crate::net::ipvs_sysctl::{self as sysctl, Originals, Restore};
use lvstun_ipvs::IpvsTable;
use lvstun_ipvs::handle::IpvsHandle;
use lvstun_ipvs::model::{Op, SyncRole, Table};

/// What lvstun's records say it put in the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// VIPs whose services are lvstun's.
    pub owned: OwnedVips,
    /// VIP addresses on interfaces.
    pub held: HeldVips,
    /// Sync daemons lvstun started.
    pub sync: BTreeSet<SyncRole>,
    /// Sysctls' values before lvstun.
    pub sysctls: Originals,
}

/// What the kernel holds now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// The IPVS table (every service, lvstun's or not).
    pub table: Table,
    /// The roles of the running sync daemons.
    pub sync: BTreeSet<SyncRole>,
    /// The current value of each recorded sysctl (`None`: unreadable).
    pub sysctls: BTreeMap<String, Option<u32>>,
}

/// The teardown's steps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `DelService` of every service on an owned VIP (its destinations go with it).
    pub services: Vec<Op>,
    /// VIP addresses to remove.
    pub addresses: Vec<HeldVip>,
    /// Sync daemons lvstun started that still run.
    pub stop_sync: Vec<SyncRole>,
    /// What becomes of each recorded sysctl.
    pub sysctls: Vec<Restore>,
}

impl Plan {
    /// Whether there is nothing at all to do in the kernel.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.addresses.is_empty()
            && self.stop_sync.is_empty()
            && !self
                .sysctls
                .iter()
                .any(|r| matches!(r, Restore::Write { .. }))
    }
}

/// The teardown of `found` according to `recorded`. Pure.
pub fn plan(recorded: &Recorded, found: &Found) -> Plan {
    Plan {
        // Planning towards an empty table deletes every owned service and nothing else.
        services: ipvs_plan::plan(&found.table, &Table::new(), &recorded.owned),
        addresses: recorded.held.iter().cloned().collect(),
        stop_sync: recorded.sync.intersection(&found.sync).copied().collect(),
        sysctls: sysctl::restores(&recorded.sysctls, |name| {
            found.sysctls.get(name).copied().flatten()
        }),
    }
}

/// What a teardown did, for the last log line and `cleanup`'s exit code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// IPVS services removed.
    pub services: usize,
    /// VIP addresses removed (or found gone).
    pub addresses: usize,
    /// Sync daemons stopped.
    pub sync: usize,
    /// Sysctls written back.
    pub restored: usize,
    /// Sysctls left as someone else set them.
    pub left: usize,
    /// Record files removed.
    pub files: Vec<&'static str>,
    /// What could not be done.
    pub failures: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} IPVS services removed, {} VIP addresses removed, {} sync daemons stopped, {} \
             sysctls restored ({} left as someone else set them), state files removed: {}",
            self.services,
            self.addresses,
            self.sync,
            self.restored,
            self.left,
            if self.files.is_empty() {
                "none".to_owned()
            } else {
                self.files.join(" ")
            }
        )
    }
}

/// Reads one record, logging (and counting as a failure) a record that cannot be read: its
/// part is then skipped and its file kept.
fn load<T: Default>(
    what: &str,
    result: Result<T, crate::error::Error>,
    failures: &mut Vec<String>,
) -> (T, bool) {
    match result {
        Ok(v) => (v, true),
        Err(e) => {
            error!("teardown: cannot read the record of {what}: {e}");
            failures.push(format!("record of {what}: {e}"));
            (T::default(), false)
        }
    }
}

/// Undoes what the records in `state_dir` say this daemon put in the kernel, plus the services
/// of `also_owned` (the running loop's ownership, in case its last write of the record
/// failed). Sysctls are read and written under `sysctl_dir`. Does I/O.
pub async fn run(
    ipvs: &mut IpvsHandle,
    state_dir: &Path,
    sysctl_dir: &Path,
    also_owned: &OwnedVips,
) -> Summary {
    let mut summary = Summary::default();
    let failures = &mut summary.failures;
    let (owned, owned_ok) = load("owned VIPs", state::load(state_dir), failures);
    let (held, held_ok) = load("VIP addresses", state::load_held(state_dir), failures);
    let (sync, sync_ok) = load("sync daemons", state::load_sync(state_dir), failures);
    let (sysctls, sysctls_ok) = load("sysctls", state::load_sysctls(state_dir), failures);
    let recorded = Recorded {
        owned: owned.union(also_owned),
        held,
        sync,
        sysctls,
    };

    let table = match ipvs.read().await {
        Ok(t) => Some(t),
        Err(e) => {
            error!("teardown: cannot read the IPVS table: {e}");
            summary
                .failures
                .push(format!("reading the IPVS table: {e}"));
            None
        }
    };
    let running = match ipvs.list_sync_daemons().await {
        Ok(list) => Some(list.into_iter().map(|d| d.role).collect()),
        Err(e) => {
            error!("teardown: cannot list the IPVS sync daemons: {e}");
            summary.failures.push(format!("listing sync daemons: {e}"));
            None
        }
    };
    let found = Found {
        table: table.clone().unwrap_or_default(),
        sync: running.clone().unwrap_or_default(),
        sysctls: recorded
            .sysctls
            .keys()
            .map(|name| (name.clone(), sysctl::read(sysctl_dir, name)))
            .collect(),
    };
    let steps = plan(&recorded, &found);
    if steps.is_empty() {
        info!("teardown: nothing in this node's kernel is recorded as this daemon's");
    }

    // IPVS services.
    let mut services_done = table.is_some();
    if !steps.services.is_empty() {
        let report = ipvs.apply(&steps.services).await;
        let failed: BTreeSet<String> = report.failed.iter().map(|(op, _)| op.to_string()).collect();
        for op in &steps.services {
            if !failed.contains(&op.to_string()) {
                info!("teardown: removed IPVS service ({op})");
                summary.services += 1;
            }
        }
        for (op, e) in &report.failed {
            // Already gone (someone else removed it meanwhile) is done.
            if e.errno() == Some(Errno::ESRCH) {
                continue;
            }
            error!("teardown: could not remove IPVS service ({op}): {e}");
            summary.failures.push(format!("{op}: {e}"));
            services_done = false;
        }
    }

    // Sync daemons.
    let mut sync_left = recorded.sync.clone();
    if let Some(running) = &running {
        sync_left.retain(|role| running.contains(role));
    }
    for role in &steps.stop_sync {
        match ipvs.stop_sync_daemon(*role).await {
            Ok(()) => {
                info!("teardown: stopped the IPVS {role} sync daemon");
                summary.sync += 1;
                sync_left.remove(role);
            }
            Err(e) if e.errno() == Some(Errno::ESRCH) => {
                sync_left.remove(role);
            }
            Err(e) => {
                error!("teardown: could not stop the IPVS {role} sync daemon: {e}");
                summary
                    .failures
                    .push(format!("stop sync daemon {role}: {e}"));
            }
        }
    }

    // VIP addresses.
    let mut held_left = recorded.held.clone();
    for (h, result) in super::owner::remove_addresses(&recorded.held).await {
        match result {
            Ok(()) => {
                info!("teardown: removed VIP {}/32 from {}", h.vip, h.interface);
                summary.addresses += 1;
                held_left.release(&h.interface, &[h.vip]);
            }
            Err(e) => {
                error!(
                    "teardown: could not remove VIP {}/32 from {}: {e}",
                    h.vip, h.interface
                );
                summary
                    .failures
                    .push(format!("VIP {} on {}: {e}", h.vip, h.interface));
            }
        }
    }

    // Sysctls.
    let mut sysctls_left = recorded.sysctls.clone();
    for step in &steps.sysctls {
        match step {
            Restore::Write { name, from, to } => match sysctl::write(sysctl_dir, name, *to) {
                Ok(()) => {
                    info!("teardown: restored net.ipv4.vs.{name} {from} -> {to}");
                    summary.restored += 1;
                    sysctls_left.remove(name);
                }
                Err(e) => {
                    error!("teardown: could not restore net.ipv4.vs.{name} to {to}: {e}");
                    summary.failures.push(format!("net.ipv4.vs.{name}: {e}"));
                }
            },
            Restore::Already { name } => {
                sysctls_left.remove(name);
            }
            Restore::Leave {
                name,
                current,
                original,
            } => {
                let now = current.map_or_else(|| "unreadable".to_owned(), |c| c.to_string());
                warn!(
                    "teardown: left net.ipv4.vs.{name} at {now}: changed since lvstun set it \
                     (before lvstun it was {original})"
                );
                summary.left += 1;
                sysctls_left.remove(name);
            }
        }
    }

    // The records: removed when their part is done, rewritten with what is left otherwise.
    let files: [(&'static str, bool, Result<(), crate::error::Error>); 4] = [
        (
            state::FILE,
            owned_ok && services_done,
            if owned_ok && services_done {
                state::remove(state_dir, state::FILE)
            } else {
                Ok(())
            },
        ),
        (
            state::HELD_FILE,
            held_ok && held_left.is_empty(),
            if !held_ok {
                Ok(())
            } else if held_left.is_empty() {
                state::remove(state_dir, state::HELD_FILE)
            } else {
                state::save_held(state_dir, &held_left)
            },
        ),
        (
            state::SYNC_FILE,
            sync_ok && sync_left.is_empty(),
            if sync_ok {
                state::save_sync(state_dir, &sync_left)
            } else {
                Ok(())
            },
        ),
        (
            state::SYSCTL_FILE,
            sysctls_ok && sysctls_left.is_empty(),
            if sysctls_ok {
                state::save_sysctls(state_dir, &sysctls_left)
            } else {
                Ok(())
            },
        ),
    ];
    for (name, gone, result) in files {
        match result {
            Err(e) => {
                error!("teardown: {e}");
                summary.failures.push(e.to_string());
            }
            Ok(()) if gone => {
                info!(
                    "teardown: removed state file {}",
                    state_dir.join(name).display()
                );
                summary.files.push(name);
            }
            Ok(()) => {}
        }
    }
    if summary.failures.is_empty() {
        info!("teardown: done: {summary}");
    } else {
        error!(
            "teardown: incomplete: {summary}; failed: {}. Run `lvstun-node balancer cleanup` \
             on this node to finish",
            summary.failures.join("; ")
        );
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvstun_ipvs::fake::FakeIpvs;
    use lvstun_ipvs::model::{
        DestConfig, DestKey, Protocol, Scheduler, ServiceConfig, ServiceKey, Weight,
    };
    use std::net::{IpAddr, Ipv4Addr};

    fn svc(vip: &str, port: u16) -> ServiceKey {
        ServiceKey::Addr {
            address: vip.parse().unwrap(),
            protocol: Protocol::Tcp,
            port,
        }
    }

    /// lvstun's two services on 192.0.2.100 (one with destinations), kube-proxy's on a
    /// ClusterIP, an administrator's on another VIP.
    fn kernel() -> Table {
        let mut t = Table::new();
        for key in [
            svc("192.0.2.100", 80),
            svc("192.0.2.100", 443),
            svc("10.96.0.10", 53),
            svc("192.0.2.200", 80),
        ] {
            t.upsert_service(key, ServiceConfig::new(Scheduler::WRR));
        }
        for rs in ["198.51.100.10", "198.51.100.130"] {
            t.upsert_dest(
                &svc("192.0.2.100", 80),
                DestKey {
                    address: rs.parse().unwrap(),
                    port: 80,
                },
                DestConfig::tunnel(Weight::new(1).unwrap()),
            );
        }
        t
    }

    fn recorded() -> Recorded {
        let mut held = HeldVips::default();
        held.claim("eth0", &[Ipv4Addr::new(192, 0, 2, 100)]);
        Recorded {
            owned: ["192.0.2.100".parse::<IpAddr>().unwrap()]
                .into_iter()
                .collect(),
            held,
            sync: BTreeSet::from([SyncRole::Master]),
            sysctls: Originals::from([
                ("expire_nodest_conn".to_string(), 0),
                ("sloppy_tcp".to_string(), 0),
            ]),
        }
    }

    fn found() -> Found {
        Found {
            table: kernel(),
            sync: BTreeSet::from([SyncRole::Master, SyncRole::Backup]),
            sysctls: BTreeMap::from([
                ("expire_nodest_conn".to_string(), Some(1)),
                ("sloppy_tcp".to_string(), Some(2)),
            ]),
        }
    }

    #[tokio::test]
    async fn only_lvstuns_services_go_and_the_rest_of_the_table_stays() {
        let steps = plan(&recorded(), &found());
        assert_eq!(
            steps.services,
            vec![
                Op::DelService {
                    key: svc("192.0.2.100", 80)
                },
                Op::DelService {
                    key: svc("192.0.2.100", 443)
                },
            ],
            "one DelService per service: the kernel drops its destinations with it"
        );
        // Applied to the fake kernel: exactly the foreign services are left.
        let mut fake = FakeIpvs::with_table(kernel());
        let report = fake.apply(&steps.services).await;
        assert!(report.is_complete());
        let left: Vec<ServiceKey> = fake.table.services().map(|(k, _)| *k).collect();
        assert_eq!(left, vec![svc("10.96.0.10", 53), svc("192.0.2.200", 80)]);
        // Planning again on what is left: nothing.
        let again = Found {
            table: fake.table.clone(),
            ..found()
        };
        assert!(plan(&recorded(), &again).services.is_empty());
    }

    #[test]
    fn sync_daemons_sysctls_and_addresses_follow_the_records() {
        let steps = plan(&recorded(), &found());
        assert_eq!(
            steps.stop_sync,
            vec![SyncRole::Master],
            "the backup daemon is not lvstun's"
        );
        assert_eq!(
            steps.addresses,
            vec![HeldVip {
                interface: "eth0".into(),
                vip: Ipv4Addr::new(192, 0, 2, 100)
            }]
        );
        assert_eq!(
            steps.sysctls,
            vec![
                Restore::Write {
                    name: "expire_nodest_conn".into(),
                    from: 1,
                    to: 0
                },
                Restore::Leave {
                    name: "sloppy_tcp".into(),
                    current: Some(2),
                    original: 0
                },
            ]
        );
        assert!(!steps.is_empty());
    }

    #[test]
    fn nothing_recorded_touches_nothing() {
        let steps = plan(&Recorded::default(), &found());
        assert_eq!(steps, Plan::default());
        assert!(steps.is_empty());
        // A sync daemon that is recorded but no longer runs needs no stop.
        let stopped = Found {
            sync: BTreeSet::new(),
            ..found()
        };
        assert!(plan(&recorded(), &stopped).stop_sync.is_empty());
    }

    #[test]
    fn the_summary_reads_as_a_sentence() {
        let s = Summary {
            services: 2,
            addresses: 1,
            sync: 1,
            restored: 1,
            left: 1,
            files: vec![state::FILE, state::SYSCTL_FILE],
            failures: Vec::new(),
        };
        assert_eq!(
            s.to_string(),
            "2 IPVS services removed, 1 VIP addresses removed, 1 sync daemons stopped, 1 sysctls \
             restored (1 left as someone else set them), state files removed: \
             balancer-owned.json balancer-sysctls.json"
        );
    }
}
