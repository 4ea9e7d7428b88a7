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

use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::Handle;

use crate::error::{Errno, Error};

/// How long one rtnetlink request may take. The kernel always answers; a request that hangs
/// means a wedged socket, and the daemon must not hang with it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Turns an rtnetlink error into the crate's error, keeping the kernel's errno as a number.
pub(crate) fn rtnl_error(op: impl Into<String>, err: rtnetlink::Error) -> Error {
    let op = op.into();
    match err {
        rtnetlink::Error::NetlinkError(msg) => Error::Kernel {
            op,
            errno: Errno::from_code(msg.raw_code()),
        },
        other => Error::decode("rtnetlink answer", format!("{op}: {other}")),
    }
}

/// Runs one rtnetlink request with [`REQUEST_TIMEOUT`].
pub(crate) async fn bounded<T>(
    op: &str,
    fut: impl Future<Output = Result<T, rtnetlink::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(result) => result.map_err(|e| rtnl_error(op, e)),
        Err(_) => Err(Error::Timeout(op.to_owned())),
    }
}

/// Collects a dump stream with [`REQUEST_TIMEOUT`].
pub(crate) async fn collect<T>(
    op: &str,
    stream: impl futures::Stream<Item = Result<T, rtnetlink::Error>>,
) -> Result<Vec<T>, Error> {
    bounded(op, stream.try_collect::<Vec<T>>()).await
}
