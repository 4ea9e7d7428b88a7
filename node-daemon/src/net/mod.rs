//! The web role's seams to the kernel: links, IPv4 addresses and per-interface IPv4 settings
//! over rtnetlink, and lvstun's own nft tables (ARP guard, MSS clamp) through the `nft` binary
//! driven with JSON.
//!
//! Each seam is a small trait ([`link::Links`], [`addr::Addrs`], [`devconf::DevConfs`],
//! [`arp_guard::NftTables`]) with the real implementation here and an in-memory fake
//! (`fake.rs`, tests only), so the web role's planner and applier are unit-tested without a
//! kernel; the real implementations are proven in the lab VM (`tests/lab/scenarios/web-daemon.sh`).
//!
//! [`ipvs_sysctl`] holds the `net.ipv4.vs.*` settings the balancer needs (kept here, not in the
//! IPVS crate, because its refusals are reported in the API's terms).
//!
//! Everything here is thin: no decisions, only reads that return plain data and writes that do
//! exactly one kernel change each (so the caller can count writes and prove idempotence).

pub mod addr;
pub mod arp_guard;
pub mod devconf;
#[cfg(test)]
pub mod fake;
pub mod ipvs_sysctl;
pub mod link;

use futures::TryStreamExt;
use rtnetlink::Handle;

use crate::error::Error;

/// The real kernel of this host (the calling thread's network namespace): one rtnetlink
/// connection (`NETLINK_ROUTE`) plus the path of the `nft` binary. Every seam trait is
/// implemented for it, each in its own module.
///
/// Opening it spawns the connection's driver task on the current tokio runtime, so it must be
/// opened from inside one. Opening does no other I/O (no reads, no writes).
pub struct Host {
    handle: Handle,
    nft: std::path::PathBuf,
}

impl Host {
    /// Opens the rtnetlink socket; `nft` is the program used for the nft tables.
    pub fn open(nft: impl Into<std::path::PathBuf>) -> Result<Self, Error> {
        let (connection, handle, _messages) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Host {
            handle,
            nft: nft.into(),
        })
    }
}

/// Every seam at once: what the web role's applier drives.
pub trait Kernel: link::Links + addr::Addrs + devconf::DevConfs + arp_guard::NftTables {}

impl<T: link::Links + addr::Addrs + devconf::DevConfs + arp_guard::NftTables> Kernel for T {}

/// Runs one rtnetlink request with the VRRP crate's rule ([`lvstun_vrrp::rtnl::bounded`]: one
/// place for the time limit and for keeping the kernel's errno), its error kept whole
/// ([`Error::Vrrp`]).
pub(crate) async fn bounded<T>(
    op: &str,
    fut: impl Future<Output = Result<T, rtnetlink::Error>>,
) -> Result<T, Error> {
    Ok(lvstun_vrrp::rtnl::bounded(op, fut).await?)
}

/// Collects a dump stream with [`bounded`]'s time limit.
pub(crate) async fn collect<T>(
    op: &str,
    stream: impl futures::Stream<Item = Result<T, rtnetlink::Error>>,
) -> Result<Vec<T>, Error> {
    bounded(op, stream.try_collect::<Vec<T>>()).await
}
