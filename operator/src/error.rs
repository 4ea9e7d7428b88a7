//! The operator's one error type. Every variant maps to a short, fixed [`Category`] (by an
//! exhaustive match, [`Error::kind`]) whose name ([`Error::category`]) is used as the Event
//! reason and as the `category` label of the error metric, so dashboards and alerts never see
//! unbounded label values made from error text.
//!
//! Large source errors are boxed so every `Result` stays small.
//!
//! No I/O here.

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or environment does not make sense (e.g. a lease grace period longer
    /// than the lease).
    #[error("configuration: {0}")]
    Config(String),

    /// No Kubernetes client could be built (no kubeconfig, no in-cluster service account).
    #[error("building a Kubernetes client: {0}")]
    Client(#[source] Box<kube::Error>),

    /// The watch caches did not fill in time; nothing is decided on partial data.
    #[error("caches not filled yet: {0}")]
    CacheNotReady(String),

    /// Server-side apply of an object (DaemonSet) failed.
    #[error("applying {kind} {namespace}/{name}: {source}")]
    Apply {
        /// Kind of the object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the API server said.
        #[source]
        source: Box<kube::Error>,
    },

    /// Deleting an object (a DaemonSet no longer needed) failed.
    #[error("deleting {kind} {namespace}/{name}: {source}")]
    Delete {
        /// Kind of the object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the API server said.
        #[source]
        source: Box<kube::Error>,
    },

    /// Writing the status of a VirtualService or RealServer failed.
    #[error("writing status of {kind} {namespace}/{name}: {source}")]
    Status {
        /// Kind of the object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the API server said.
        #[source]
        source: Box<kube::Error>,
    },

    /// An object could not be turned into JSON (a bug, not bad input).
    #[error("serializing {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// A leader-election request failed or got no answer in time, or the election task ended.
    #[error("leader election: {what}")]
    Lease {
        /// What went wrong.
        what: String,
        /// What the API server or the client said, if anything.
        #[source]
        source: Option<Box<kube::Error>>,
    },

    /// A write was not sent: this replica's term as leader has ended (its deadline passed
    /// without a renewal); the next leader writes instead.
    #[error("not leading: the term's deadline passed before this write")]
    NotLeading,

    /// A request of `lvstun-operator uninstall` failed (scaling the operator, deleting a
    /// DaemonSet or the Lease, listing what is left).
    #[error("{what}: {source}")]
    Request {
        /// The request, as a person reads it.
        what: String,
        /// What the API server said.
        #[source]
        source: Box<kube::Error>,
    },

    /// `lvstun-operator uninstall` ran out of time; the message names what is left.
    #[error("uninstall timed out after {seconds} s; left: {left}")]
    UninstallTimeout {
        /// The `--timeout`.
        seconds: u64,
        /// What still exists.
        left: String,
    },

    /// A socket or other local resource failed (the metrics listener).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The kind of failure, from the variant alone (never from the error's text).
    pub fn kind(&self) -> Category {
        match self {
            Error::Config(_) => Category::Config,
            Error::Client(_) => Category::KubeClient,
            Error::CacheNotReady(_) => Category::CacheNotReady,
            Error::Apply { .. } => Category::ApplyFailed,
            Error::Delete { .. } => Category::DeleteFailed,
            Error::Status { .. } => Category::StatusWriteFailed,
            Error::Serialize { .. } => Category::Serialization,
            Error::Lease { .. } => Category::LeaderElection,
            Error::NotLeading => Category::NotLeading,
            Error::Request { .. } => Category::ApiRequest,
            Error::UninstallTimeout { .. } => Category::UninstallTimeout,
            Error::Io { .. } => Category::Io,
        }
    }

    /// A short, fixed name for the kind of failure: the Event reason and the metric label.
    pub fn category(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// The kinds of [`Error`], one per variant: a bounded set of labels for the error metric and
/// of Event reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// [`Error::Config`].
    Config,
    /// [`Error::Client`].
    KubeClient,
    /// [`Error::CacheNotReady`].
    CacheNotReady,
    /// [`Error::Apply`].
    ApplyFailed,
    /// [`Error::Delete`].
    DeleteFailed,
    /// [`Error::Status`].
    StatusWriteFailed,
    /// [`Error::Serialize`].
    Serialization,
    /// [`Error::Lease`].
    LeaderElection,
    /// [`Error::NotLeading`].
    NotLeading,
    /// [`Error::Request`].
    ApiRequest,
    /// [`Error::UninstallTimeout`].
    UninstallTimeout,
    /// [`Error::Io`].
    Io,
}

impl Category {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Config => "Config",
            Category::KubeClient => "KubeClient",
            Category::CacheNotReady => "CacheNotReady",
            Category::ApplyFailed => "ApplyFailed",
            Category::DeleteFailed => "DeleteFailed",
            Category::StatusWriteFailed => "StatusWriteFailed",
            Category::Serialization => "Serialization",
            Category::LeaderElection => "LeaderElection",
            Category::NotLeading => "NotLeading",
            Category::ApiRequest => "ApiRequest",
            Category::UninstallTimeout => "UninstallTimeout",
            Category::Io => "Io",
        }
    }

    /// The category after this one in declaration order. An exhaustive match, so a new
    /// variant cannot be added without a place in [`Category::all`].
    fn next(self) -> Option<Category> {
        match self {
            Category::Config => Some(Category::KubeClient),
            Category::KubeClient => Some(Category::CacheNotReady),
            Category::CacheNotReady => Some(Category::ApplyFailed),
            Category::ApplyFailed => Some(Category::DeleteFailed),
            Category::DeleteFailed => Some(Category::StatusWriteFailed),
            Category::StatusWriteFailed => Some(Category::Serialization),
            Category::Serialization => Some(Category::LeaderElection),
            Category::LeaderElection => Some(Category::NotLeading),
            Category::NotLeading => Some(Category::ApiRequest),
            Category::ApiRequest => Some(Category::UninstallTimeout),
            Category::UninstallTimeout => Some(Category::Io),
            Category::Io => None,
        }
    }

    /// Every category, so the error metric can be pre-registered at zero (alerts on `rate()`
    /// then work from the first error on).
    pub fn all() -> impl Iterator<Item = Category> {
        std::iter::successors(Some(Category::Config), |c| c.next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_listed_and_short() {
        let errors = [
            Error::Config("x".into()),
            Error::CacheNotReady("x".into()),
            Error::Serialize {
                what: "x".into(),
                source: serde_json::from_str::<i32>("x").unwrap_err(),
            },
            Error::Io {
                what: "x".into(),
                source: std::io::Error::other("x"),
            },
            Error::UninstallTimeout {
                seconds: 1,
                left: "x".into(),
            },
        ];
        for e in errors {
            assert!(
                Category::all().any(|c| c.as_str() == e.category()),
                "{}",
                e.category()
            );
        }
        for c in Category::all().map(Category::as_str) {
            assert!(
                c.len() <= 32 && c.chars().all(|ch| ch.is_ascii_alphabetic()),
                "{c}"
            );
        }
    }
}
