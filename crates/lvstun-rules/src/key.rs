//! The identity of a namespaced object, as both sides name it in maps, messages and ordering.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The namespace of an object that names none, as `kubectl apply` would put it (objects read
/// from a standalone file may leave it out; objects read from the API always carry one).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Namespace and name of an object. Ordered by namespace, then name: the tie-break of
/// [`crate::seniority`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace ([`DEFAULT_NAMESPACE`] when the object names none).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of any namespaced object, from its metadata.
    pub fn of(meta: &ObjectMeta) -> Self {
        ObjectKey {
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
