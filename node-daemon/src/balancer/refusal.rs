//! What the kernel refused, and how long the identical operation waits: the [`Refusal`]
//! record, the errno rules ([`is_lasting`], [`hint`]) and the back-off ([`backoff`]). Pure.
//! The loop ([`super::run`]) records and holds back refusals; the pass's settling half
//! ([`super::pass`]) reports them.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::Errno;
use lvstun_ipvs::model::Op;

/// A kernel refusal being held back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The refused operation, as a person reads it.
    pub op: String,
    /// The kernel's errno.
    pub errno: Errno,
    /// What it usually means.
    pub hint: &'static str,
    /// Times in a row this exact operation was refused.
    pub attempts: u32,
    /// When it may be sent again.
    pub retry_at: Instant,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: kernel refused with {}", self.op, self.errno)?;
        if !self.hint.is_empty() {
            write!(f, " ({})", self.hint)?;
        }
        Ok(())
    }
}

/// First back-off after a refusal; doubles per repeated refusal up to [`REFUSAL_BACKOFF_MAX`].
pub const REFUSAL_BACKOFF: Duration = Duration::from_secs(30);
/// Longest back-off.
pub const REFUSAL_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The back-off after the `attempts`-th refusal in a row of the same operation.
pub fn backoff(attempts: u32) -> Duration {
    REFUSAL_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(4))
        .min(REFUSAL_BACKOFF_MAX)
}

/// Whether a refusal will not go away by itself, so the identical operation must wait. By
/// errno, never by text.
pub fn is_lasting(op: &Op, errno: Errno) -> bool {
    match errno {
        Errno::EINVAL | Errno::ERANGE | Errno::EPERM | Errno::EAFNOSUPPORT => true,
        // A missing scheduler module; for destinations ENOENT is a race with another tool.
        Errno::ENOENT => matches!(op, Op::NewService { .. } | Op::SetService { .. }),
        _ => false,
    }
}

/// A hint for a person, chosen by operation and errno.
pub fn hint(op: &Op, errno: Errno) -> &'static str {
    match (op, errno) {
        (Op::NewDest { .. } | Op::SetDest { .. }, Errno::EINVAL) => {
            "a tunnel destination must be a unicast address this node has a route to; ipvsadm says \"address not unicast\""
        }
        (_, Errno::EPERM) => "the daemon needs CAP_NET_ADMIN",
        (Op::NewService { .. } | Op::SetService { .. }, Errno::ENOENT) => {
            "the scheduler's kernel module (ip_vs_<name>) is not available"
        }
        (_, Errno::EAFNOSUPPORT) => "the kernel's IPVS lacks this address family",
        _ => "",
    }
}
