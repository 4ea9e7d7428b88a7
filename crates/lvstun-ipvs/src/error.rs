//! The one error type of `lvstun-ipvs`, and the kernel's errno as a type. No I/O here.
//!
//! Kernel refusals carry the errno as a typed [`Errno`], so callers decide by
//! number (`errno == Errno::EEXIST`), never by message text.

use std::fmt;

/// A Linux errno as the kernel returned it in a netlink error message.
///
/// Kept as its own type (not `std::io::Error`) so that it is `Copy`, `Eq` and
/// matchable against the named constants below; the human text is only used
/// when displaying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(i32);

impl Errno {
    /// Operation not permitted (missing `CAP_NET_ADMIN`).
    pub const EPERM: Errno = Errno(1);
    /// No such file or directory: IPVS answers this for an unknown destination.
    pub const ENOENT: Errno = Errno(2);
    /// No such process: IPVS answers this for an unknown service.
    pub const ESRCH: Errno = Errno(3);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(12);
    /// Resource busy, e.g. a second dump on one netlink socket.
    pub const EBUSY: Errno = Errno(16);
    /// The service or destination already exists.
    pub const EEXIST: Errno = Errno(17);
    /// Invalid argument: also what IPVS answers for a tunnel destination
    /// without a route ("address not unicast" in ipvsadm's words).
    pub const EINVAL: Errno = Errno(22);
    /// Out of range, e.g. a negative weight or lower threshold above upper.
    pub const ERANGE: Errno = Errno(34);
    /// Address family not supported (IPv6 without `CONFIG_IP_VS_IPV6`).
    pub const EAFNOSUPPORT: Errno = Errno(97);
    /// Address not available: what deleting an address that is not there answers.
    pub const EADDRNOTAVAIL: Errno = Errno(99);
    /// No buffer space: the socket's receive queue overflowed.
    pub const ENOBUFS: Errno = Errno(105);

    /// Builds an errno from a netlink error code, which the kernel sends
    /// negated (`-EEXIST`); either sign is accepted.
    pub fn from_code(code: i32) -> Errno {
        Errno(code.saturating_abs())
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::ESRCH => "ESRCH",
            Errno::ENOMEM => "ENOMEM",
            Errno::EBUSY => "EBUSY",
            Errno::EEXIST => "EEXIST",
            Errno::EINVAL => "EINVAL",
            Errno::ERANGE => "ERANGE",
            Errno::EAFNOSUPPORT => "EAFNOSUPPORT",
            Errno::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            Errno::ENOBUFS => "ENOBUFS",
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = std::io::Error::from_raw_os_error(self.0);
        match self.name() {
            Some(name) => write!(f, "{name} ({text})"),
            None => write!(f, "errno {} ({text})", self.0),
        }
    }
}

/// Everything that can go wrong talking IPVS to the kernel.
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
    /// The kernel has no `IPVS` generic netlink family: the `ip_vs` module is
    /// not built, not loadable, or this is a kernel without IPVS.
    #[error("the kernel has no IPVS generic netlink family (is ip_vs available?)")]
    FamilyNotFound,
    /// Opening or using the netlink socket failed.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The netlink connection ended before the kernel answered.
    #[error("netlink connection closed before {0} was answered")]
    ConnectionClosed(String),
    /// The kernel did not answer in time (it always answers: this means the
    /// connection is wedged, and the caller must not hang with it).
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
    /// A value was refused at the boundary where it enters the typed model.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// The kind of value (e.g. "scheduler").
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A desired table (the `ipvs apply` debug command's file) that cannot be read.
    #[cfg(feature = "cli")]
    #[error("{path}: {detail}")]
    File {
        /// The file's path.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// A desired table that was read but whose content is refused (`source` says why): the
    /// path and the typed cause, so a caller can tell a YAML error from a refused value.
    #[cfg(feature = "cli")]
    #[error("{path}: {source}")]
    FileContent {
        /// The file's path.
        path: String,
        /// Why its content is refused.
        #[source]
        source: Box<Error>,
    },
    /// Text that is not the YAML (or JSON) expected, as serde_norway explains it.
    #[cfg(feature = "cli")]
    #[error("{0}")]
    Yaml(#[from] serde_norway::Error),
    /// A desired table that lists one service, or one destination of a service, twice.
    #[cfg(feature = "cli")]
    #[error("{0} is listed twice")]
    ListedTwice(String),
}

impl Error {
    /// The kernel's errno when this is a kernel refusal, so that callers can
    /// decide by number.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Shorthand for [`Error::Invalid`].
    pub(crate) fn invalid(
        what: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Error {
        Error::Invalid {
            what,
            value: value.to_string(),
            reason: reason.into(),
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
    fn errno_from_negative_code() {
        assert_eq!(Errno::from_code(-17), Errno::EEXIST);
        assert_eq!(Errno::from_code(17), Errno::EEXIST);
    }

    #[test]
    fn errno_display_names_the_constant() {
        assert!(Errno::ESRCH.to_string().starts_with("ESRCH ("));
        assert!(Errno(200).to_string().starts_with("errno 200 ("));
    }

    #[test]
    fn kernel_error_exposes_errno() {
        let err = Error::Kernel {
            op: "x".into(),
            errno: Errno::EINVAL,
        };
        assert_eq!(err.errno(), Some(Errno::EINVAL));
        assert_eq!(Error::FamilyNotFound.errno(), None);
    }
}
