//! Kernel IPVS, spoken over the `IPVS` generic netlink family: the typed
//! table model ([`model`]), the wire messages ([`message`]) and their
//! translation ([`convert`]), and the planner from the table the kernel holds to the one
//! wanted ([`plan`]), all pure; and the I/O seam [`IpvsTable`], with
//! the real netlink client ([`handle::IpvsHandle`]) and, in tests, an
//! in-memory fake ([`fake::FakeIpvs`]). lvstun never runs `ipvsadm` and never
//! flushes the table: it reads it, and changes only what a plan says;
//! [`reconcile`] is that read, plan and apply once. Behind the feature `cli`, the hidden
//! ipvsadm-like debug commands (`cli`) that `lvstun-node ipvs` runs.
//!
//! A crate of its own, in the spirit of the rust-netlink family: it knows nothing of
//! Kubernetes or of lvstun's objects (ADR 0010).

#[cfg(feature = "cli")]
pub mod cli;
pub mod convert;
pub mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod handle;
pub mod message;
pub mod model;
pub mod plan;
#[cfg(test)]
mod wire_tests;

pub use error::{Errno, Error};

use std::future::Future;

use model::{Op, Table};
use plan::OwnedVips;

/// What applying a list of operations did: how many the kernel accepted and
/// which it refused, with why. Applying goes on past a refusal, because the
/// remaining operations are independent more often than not, and the next
/// reconcile retries whatever is still missing.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Operations the kernel accepted.
    pub applied: usize,
    /// Operations it refused (or never answered), in order.
    pub failed: Vec<(Op, Error)>,
}

impl ApplyReport {
    /// Pairs operations with their results.
    pub fn from_results(ops: &[Op], results: Vec<Result<(), Error>>) -> ApplyReport {
        let mut report = ApplyReport::default();
        for (op, result) in ops.iter().zip(results) {
            match result {
                Ok(()) => report.applied += 1,
                Err(err) => report.failed.push((*op, err)),
            }
        }
        report
    }

    /// Whether every operation was applied.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// The seam between lvstun's logic and the kernel's IPVS table: read the
/// whole table, apply a list of operations in order. The real implementation
/// is [`handle::IpvsHandle`]; unit tests use an in-memory fake.
pub trait IpvsTable {
    /// Reads every service and destination (configuration, no counters).
    fn read(&self) -> impl Future<Output = Result<Table, Error>> + Send;

    /// Applies `ops` in order, continuing past refusals.
    fn apply(&mut self, ops: &[Op]) -> impl Future<Output = ApplyReport> + Send;
}

/// What one reconcile did: the operations it planned and how applying them
/// went. An empty `ops` means the kernel already matched: zero writes.
#[derive(Debug)]
pub struct Reconciled {
    /// The planned operations, in the order they were sent.
    pub ops: Vec<Op>,
    /// The kernel's answers.
    pub report: ApplyReport,
}

/// Reads the kernel's table, plans the difference to `desired` for the VIPs
/// in `owned`, and applies it. Sends nothing when nothing differs.
pub async fn reconcile<T: IpvsTable>(
    ipvs: &mut T,
    desired: &Table,
    owned: &OwnedVips,
) -> Result<Reconciled, Error> {
    let actual = ipvs.read().await?;
    let ops = plan::plan(&actual, desired, owned);
    let report = if ops.is_empty() {
        ApplyReport::default()
    } else {
        ipvs.apply(&ops).await
    };
    Ok(Reconciled { ops, report })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeIpvs;
    use crate::model::{
        DestConfig, DestKey, Protocol, Scheduler, ServiceConfig, ServiceKey, Weight,
    };

    fn desired(weight: u32) -> (Table, ServiceKey, DestKey) {
        let key = ServiceKey::Addr {
            address: "192.0.2.10".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let dest = DestKey {
            address: "198.51.100.11".parse().unwrap(),
            port: 80,
        };
        let mut t = Table::new();
        t.upsert_service(key, ServiceConfig::new(Scheduler::WRR));
        t.upsert_dest(&key, dest, DestConfig::tunnel(Weight::new(weight).unwrap()));
        (t, key, dest)
    }

    #[tokio::test]
    async fn reconcile_twice_writes_once() {
        let (want, key, _) = desired(1);
        let owned: OwnedVips = key.vip().into_iter().collect();
        let mut fake = FakeIpvs::default();
        let first = reconcile(&mut fake, &want, &owned).await.unwrap();
        assert_eq!(first.ops.len(), 2);
        assert!(first.report.is_complete());
        assert_eq!(fake.table, want);
        let second = reconcile(&mut fake, &want, &owned).await.unwrap();
        assert!(second.ops.is_empty());
        assert_eq!(fake.writes.len(), 2, "re-apply made zero writes");
    }

    #[tokio::test]
    async fn weight_change_writes_one_set_dest() {
        let (before, key, dest) = desired(1);
        let (after, _, _) = desired(7);
        let owned: OwnedVips = key.vip().into_iter().collect();
        let mut fake = FakeIpvs::with_table(before);
        let done = reconcile(&mut fake, &after, &owned).await.unwrap();
        assert_eq!(
            fake.writes,
            vec![Op::SetDest {
                service: key,
                dest,
                config: DestConfig::tunnel(Weight::new(7).unwrap()),
            }]
        );
        assert_eq!(done.report.applied, 1);
    }

    #[tokio::test]
    async fn refusals_are_reported_with_their_errno() {
        let (want, key, _) = desired(1);
        let owned: OwnedVips = key.vip().into_iter().collect();
        let mut fake = FakeIpvs::default();
        // The kernel says the service exists after all: the next op still runs.
        let ops = vec![
            Op::NewService {
                key,
                config: ServiceConfig::new(Scheduler::RR),
            },
            Op::NewService {
                key,
                config: ServiceConfig::new(Scheduler::RR),
            },
        ];
        let report = fake.apply(&ops).await;
        assert_eq!(report.applied, 1);
        assert_eq!(
            report.failed[0].1.errno(),
            Some(crate::error::Errno::EEXIST)
        );
        let done = reconcile(&mut fake, &want, &owned).await.unwrap();
        assert!(done.report.is_complete());
        assert_eq!(fake.table, want);
    }
}
