//! Typed model of the kernel's IPVS table: services, destinations, their
//! configuration, read-only statistics, the sync daemon, and the operations
//! that change the table. Pure data, no I/O.
//!
//! Identity is kept apart from configuration ([`ServiceKey`] vs
//! [`ServiceConfig`], [`DestKey`] vs [`DestConfig`]) so that a diff can tell
//! "same entry, new settings" (edit in place, connections survive) from
//! "different entry" (add/remove). Values are validated once, when they enter
//! the model; the wire layer never sees an invalid one.
//!
//! One file per object: `addr` (family, protocol), `service`, `dest`, `tunnel` (forwarding),
//! `stats` (read-only counters), `sync_daemon`, `op` and `table`. Every type is re-exported
//! here, so `lvstun_ipvs::model::X` is the one path to name it by.

mod addr;
mod dest;
mod op;
mod service;
mod stats;
mod sync_daemon;
mod table;
mod tunnel;

pub use addr::{AddressFamily, Protocol, SocketText};
pub use dest::{DestConfig, DestKey, Destination, Thresholds, Weight};
pub use op::Op;
pub use service::{
    Persistence, Scheduler, Service, ServiceConfig, ServiceFlags, ServiceKey, netmask_from_wire,
    netmask_to_wire,
};
pub use stats::{ConnCounts, IpvsInfo, Stats};
pub use sync_daemon::{IfName, SyncDaemon, SyncRole};
pub use table::{ServiceEntry, Table};
pub use tunnel::{Forward, GueChecksum, Tunnel};
