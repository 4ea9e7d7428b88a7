//! VIP ownership by VRRP version 3 (RFC 9568, which obsoletes RFC 5798): one router per VIP is
//! Master and holds the address, the others stand by and take over when it falls silent.
//!
//! - [`packet`]: the advertisement on the wire and the receive checks (pure).
//! - [`fsm`]: the state machine, `handle(event, now) -> actions` (pure: no sockets, no clocks).
//! - [`lifetime`]: how long a VIP outlives its owner in the kernel, and its renewal (pure).
//! - `sim` (tests only): a deterministic network simulator that proves the timing claims.
//! - [`driver`]: the tokio task that owns the raw sockets and the timers and applies the actions
//!   through the [`VipOps`](driver::VipOps) seam (VIP, gratuitous ARP, IPVS sync daemon): the
//!   only part of a router that does I/O.
//! - [`link_watch`]: follows the interface's carrier over rtnetlink and tells the router when it
//!   goes down or comes back (the decision pure, the subscription I/O).
//! - [`detached`]: the routers' kernel calls made in order on the ops thread, so the driver
//!   never waits for a kernel lock (I/O: a queue and a worker).
//! - [`ops`]: the real `VipOps` (VIP over rtnetlink, gratuitous ARP on an `AF_PACKET` socket,
//!   IPVS sync daemon switching): I/O.
//! - [`rtnl`]: one rtnetlink request bounded in time, its refusal as a typed errno (the rule
//!   the node daemon's rtnetlink calls share).
//! - [`thread`]: the VRRP thread, one OS thread with its own tokio runtime where every router of
//!   the process runs, so that a busy main runtime cannot delay advertisements or their
//!   reading; and the ops thread, where their kernel calls wait for the kernel's locks.
//! - [`error`]: the crate's one error type.
//!
//! A crate of its own, in the spirit of the rust-netlink family: it knows nothing of
//! Kubernetes or of lvstun's objects (ADR 0010). Mapping a VirtualService's balancers to
//! routers, and the lab command that runs one router, stay in the node daemon (`vrrp::run`,
//! `vrrp::cli`).

pub mod detached;
pub mod driver;
pub mod error;
pub mod fsm;
pub mod lifetime;
pub mod link_watch;
pub mod ops;
pub mod packet;
pub mod rtnl;
#[cfg(test)]
mod sim;
pub mod thread;

pub use error::{Errno, Error};
