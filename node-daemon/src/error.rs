//! The one error type of `lvstun-node`. No I/O here. The kernel's errno is the IPVS crate's
//! [`Errno`] (re-exported), which rtnetlink's refusals (the VRRP crate's) use too.
//!
//! Kernel refusals carry the errno as a typed [`Errno`], so callers decide by
//! number (`errno == Errno::EEXIST`), never by message text.

use std::fmt;

pub use lvstun_ipvs::Errno;

/// Everything that can go wrong in `lvstun-node`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking IPVS to the kernel failed (the IPVS crate's error, kept whole).
    #[error(transparent)]
    Ipvs(#[from] lvstun_ipvs::Error),
    /// A VRRP router's kernel calls, or any rtnetlink request (the VRRP crate owns the rule
    /// that bounds them and keeps the kernel's errno, [`lvstun_vrrp::rtnl`]), failed: that
    /// crate's error, kept whole.
    #[error(transparent)]
    Vrrp(#[from] lvstun_vrrp::Error),
    /// Opening or using the netlink socket failed.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel did not answer in time (it always answers: this means the
    /// connection is wedged, and the daemon must not hang with it).
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
    /// A command line that does not parse.
    #[error("usage: {0}")]
    Usage(String),
    /// A file that cannot be read or parsed.
    #[error("{path}: {detail}")]
    File {
        /// The file's path.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// A file that was read but whose content is refused (`source` says why): the path and the
    /// typed cause, so a caller can tell a YAML error from a refused value.
    #[error("{path}: {source}")]
    FileContent {
        /// The file's path.
        path: String,
        /// Why its content is refused.
        #[source]
        source: Box<Error>,
    },
    /// Text that is not the YAML (or JSON) expected, as serde_norway explains it.
    #[error("{0}")]
    Yaml(#[from] serde_norway::Error),
    /// A document of a configuration file that is not YAML.
    #[error("document {document}: {source}")]
    Document {
        /// Its position in the file, from 1.
        document: usize,
        /// The YAML parser's error.
        #[source]
        source: serde_norway::Error,
    },
    /// A document of a configuration file that its kind's schema refuses.
    #[error("document {document} ({kind}): {source}")]
    Object {
        /// Its position in the file, from 1.
        document: usize,
        /// The kind it declares.
        kind: &'static str,
        /// The schema's refusal, as serde_norway explains it.
        #[source]
        source: serde_norway::Error,
    },
    /// A document of a configuration file that the API's own schema and CEL rules refuse
    /// (`lvstun_crds::validate`): every refusal, each naming its field, in the API server's
    /// words, so a file is as strict as `kubectl apply`.
    #[error("document {document} ({kind} {name:?}): {}", join_fields(.refusals))]
    Refused {
        /// Its position in the file, from 1.
        document: usize,
        /// The kind it declares.
        kind: &'static str,
        /// Its `metadata.name`.
        name: String,
        /// What the schema and rules refuse.
        refusals: Vec<lvstun_crds::validate::FieldError>,
    },
    /// A document of a configuration file of another `apiVersion` or `kind` than the format's:
    /// refused rather than ignored, so that a typo cannot silently remove a VIP.
    #[error("document {document}: {field} {found:?}, expected {expected}")]
    Unexpected {
        /// Its position in the file, from 1.
        document: usize,
        /// `apiVersion` or `kind`.
        field: &'static str,
        /// What the document says.
        found: String,
        /// What the format accepts.
        expected: &'static str,
    },
    /// A configuration file without a single object: more likely caught while being rewritten
    /// than meant to undo everything.
    #[error("no VirtualService or RealServer in the file")]
    NoObjects,
    /// The `nft` binary is not on the node (web role: the ARP guard and MSS clamp need it).
    #[error("the nft binary {0} was not found (install the nftables package)")]
    NftMissing(String),
    /// `nft` ran and failed (its exit status and stderr in `detail`).
    #[error("{command}: {detail}")]
    Nft {
        /// The command line.
        command: String,
        /// Exit status and what nft printed.
        detail: String,
    },
    /// The Kubernetes API could not be reached or refused a request (`what` says which).
    #[error("kubernetes API: {what}: {detail}")]
    Api {
        /// The request, as a person would read it.
        what: String,
        /// The client's error.
        detail: String,
    },
}

impl Error {
    /// The kernel's errno when this is a kernel refusal, so that callers can
    /// decide by number.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Ipvs(e) => e.errno(),
            Error::Vrrp(e) => e.errno(),
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

/// The refusals of one document, one after the other.
fn join_fields(refusals: &[lvstun_crds::validate::FieldError]) -> String {
    refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_errors_expose_their_errno_whichever_crate_raised_them() {
        let ipvs = Error::from(lvstun_ipvs::Error::Kernel {
            op: "y".into(),
            errno: Errno::ESRCH,
        });
        assert_eq!(ipvs.errno(), Some(Errno::ESRCH));
        assert_eq!(
            Error::from(lvstun_ipvs::Error::FamilyNotFound).errno(),
            None
        );
        let rtnl = Error::from(lvstun_vrrp::Error::Kernel {
            op: "z".into(),
            errno: Errno::EADDRNOTAVAIL,
        });
        assert_eq!(rtnl.errno(), Some(Errno::EADDRNOTAVAIL));
        let sync = Error::from(lvstun_vrrp::Error::from(lvstun_ipvs::Error::Kernel {
            op: "w".into(),
            errno: Errno::EEXIST,
        }));
        assert_eq!(sync.errno(), Some(Errno::EEXIST));
    }
}
