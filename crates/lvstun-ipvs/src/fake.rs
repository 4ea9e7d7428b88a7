//! An in-memory [`IpvsTable`] for unit tests: a [`Table`] that answers with
//! the kernel's errnos ([`Table::apply`]) and records every write. No I/O.

use super::model::{Op, Table};
use super::{ApplyReport, IpvsTable};
use crate::error::Error;

/// A fake kernel table.
#[derive(Debug, Default)]
pub struct FakeIpvs {
    /// What the fake kernel holds.
    pub table: Table,
    /// Every operation sent to it, accepted or not.
    pub writes: Vec<Op>,
}

impl FakeIpvs {
    /// A fake kernel that already holds `table`.
    pub fn with_table(table: Table) -> FakeIpvs {
        FakeIpvs {
            table,
            writes: Vec::new(),
        }
    }
}

impl IpvsTable for FakeIpvs {
    async fn read(&self) -> Result<Table, Error> {
        Ok(self.table.clone())
    }

    async fn apply(&mut self, ops: &[Op]) -> ApplyReport {
        let results = ops
            .iter()
            .map(|op| {
                self.writes.push(*op);
                self.table.apply(op).map_err(|errno| Error::Kernel {
                    op: op.to_string(),
                    errno,
                })
            })
            .collect();
        ApplyReport::from_results(ops, results)
    }
}
