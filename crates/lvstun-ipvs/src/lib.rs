//! Kernel IPVS, spoken over the `IPVS` generic netlink family: the typed
//! table model ([`model`]), the wire messages ([`message`]) and their
//! translation ([`convert`]), and the planner from the table the kernel holds to the one
//! wanted ([`plan`]), all pure; and the I/O seam [`IpvsTable`], with
//! the real netlink client ([`handle::IpvsHandle`]) and, in tests, an
//! in-memory fake ([`fake::FakeIpvs`]). lvstun never runs `ipvsadm` and never
//! flushes the table: it reads it, and changes only what a plan says.
//!
//! A crate of its own, in the spirit of the rust-netlink family: it knows nothing of
//! Kubernetes or of lvstun's objects (ADR 0010).

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
