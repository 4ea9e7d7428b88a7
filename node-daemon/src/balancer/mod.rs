//! The balancer role (`lvstun-node balancer`): from the VirtualService and RealServer objects
//! to the kernel's IPVS table, with health checks deciding weights.
//!
//! - [`desired`] (pure): which services, destinations and health checks this node wants;
//! - [`plan`] (pure, the IPVS crate's `lvstun_ipvs::plan`): the fewest operations from the
//!   kernel's table to the desired one;
//! - [`foreign`] (pure): services lvstun programmed that another program deleted;
//! - [`pass`] (pure): the deciding and settling halves of one pass of the loop;
//! - [`refusal`] (pure): what the kernel refused, and how long the same operation waits;
//! - [`run`]: the loop (source → desired → plan → apply) over the
//!   [`IpvsTable`](lvstun_ipvs::IpvsTable) and health seams, so it runs against the real kernel
//!   or in-memory fakes alike;
//! - [`state`]: the record of owned VIPs (file I/O);
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`report`]: in a cluster, this node's entries in the objects' status;
//! - [`vips`] (pure): which VRRP virtual routers this node runs for its VIPs;
//! - [`owner`]: VIP ownership, one VRRP router per VIP, supervised (I/O);
//! - [`teardown`]: removing everything the records say lvstun put in the kernel (ADR 0008);
//! - [`daemon`]: the command line and the wiring.
//!
//! [`reconcile`] is the one-shot form (read, plan, apply) that the hidden `ipvs apply` debug
//! command uses.

pub mod daemon;
pub mod desired;
pub mod foreign;
pub mod http;
pub mod owner;
pub mod pass;
pub mod refusal;
pub mod report;
pub mod run;
pub mod state;
pub mod teardown;
pub mod vips;

/// The planner lives with the IPVS crate (`lvstun_ipvs::plan`); named here as well, so the
/// balancer's modules and callers keep saying `balancer::plan`.
pub use lvstun_ipvs::plan;

use crate::error::Error;
use lvstun_ipvs::model::{Op, Table};
use lvstun_ipvs::{ApplyReport, IpvsTable};
use plan::OwnedVips;

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
    use lvstun_ipvs::fake::FakeIpvs;
    use lvstun_ipvs::model::{
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
