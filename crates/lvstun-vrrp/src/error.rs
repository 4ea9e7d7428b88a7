//! The one error type of `lvstun-vrrp`. No I/O here. The kernel's errno is the IPVS crate's
//! [`Errno`] (re-exported), which rtnetlink's refusals use too, so that a caller holding both
//! crates' errors decides by one type.
//!
//! Kernel refusals carry the errno as a typed [`Errno`], so callers decide by number
//! (`errno == Errno::EADDRNOTAVAIL`), never by message text. The state machine's refusals of a
//! configuration are [`ConfigError`](crate::fsm::ConfigError), and the codec's of a packet
//! [`PacketError`](crate::packet::PacketError): those are decisions, not failures of I/O.

use std::fmt;

pub use lvstun_ipvs::Errno;

/// Everything that can go wrong in the kernel calls of a virtual router (its VIPs over
/// rtnetlink, its IPVS sync daemon).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a request; `op` says which, `errno` why.
    #[error("{op}: kernel refused with {errno}")]
    Kernel {
        /// The operation, as a person would read it.
        op: String,
        /// The errno the kernel answered.
        errno: Errno,
    },
    /// Switching the IPVS connection sync daemon failed (the IPVS crate's error, kept whole).
    #[error(transparent)]
    Ipvs(#[from] lvstun_ipvs::Error),
    /// Opening or using a netlink or packet socket failed.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel did not answer in time (it always answers: this means the connection is
    /// wedged, and the caller must not hang with it).
    #[error("no answer to {0} in time")]
    Timeout(String),
    /// The kernel sent something this code cannot read.
    #[error("cannot decode {what}: {detail}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's explanation.
        detail: String,
    },
}

impl Error {
    /// The kernel's errno when this is a kernel refusal (rtnetlink's or IPVS's), so that
    /// callers can decide by number.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Ipvs(e) => e.errno(),
            _ => None,
        }
    }

    /// Shorthand for [`Error::Decode`].
    pub(crate) fn decode(what: &'static str, detail: impl fmt::Display) -> Error {
        Error::Decode {
            what,
            detail: detail.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_refusals_expose_their_errno_whichever_family_answered() {
        let rtnl = Error::Kernel {
            op: "x".into(),
            errno: Errno::EADDRNOTAVAIL,
        };
        assert_eq!(rtnl.errno(), Some(Errno::EADDRNOTAVAIL));
        let ipvs = Error::from(lvstun_ipvs::Error::Kernel {
            op: "y".into(),
            errno: Errno::ESRCH,
        });
        assert_eq!(ipvs.errno(), Some(Errno::ESRCH));
        assert_eq!(Error::Timeout("z".into()).errno(), None);
    }
}
