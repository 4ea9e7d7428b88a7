//! Where the balancer's desired state comes from: the `VirtualService` and `RealServer` objects
//! and, in a cluster, this node's labels. Two sources deliver the same [`Snapshot`]:
//!
//! - [`file`]: standalone, a multi-document YAML file (`--config FILE`), re-read when it
//!   changes (its modification time and length, polled every second) or on `SIGHUP`;
//! - [`config`]: the file format both roles read (pure: text in, objects out);
//! - [`cluster`]: in a cluster, watches on both kinds through the API server, plus this node's
//!   labels (re-read periodically: the balancer's RBAC grants `get` on its Node, not `watch`).
//!
//! A source publishes whole snapshots on a `tokio::sync::watch` channel: the consumer only ever
//! wants the newest picture, and a burst of changes collapses into one reconcile. A snapshot
//! that cannot be read (a file caught half-written, a YAML error) is never published: the data
//! plane keeps the last good one. The types here are plain data; `file` and `cluster` do I/O.

pub mod cluster;
pub mod config;
pub mod file;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use lvstun_crds::v1alpha1::{RealServer, VirtualService};

/// Everything the balancer needs to compute its desired state, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every `VirtualService` the source knows (the pure part picks those for this node).
    pub virtual_services: Vec<VirtualService>,
    /// Every `RealServer` the source knows.
    pub real_servers: Vec<RealServer>,
    /// Which VirtualServices concern this node.
    pub scope: Scope,
    /// Why the source's newest version was refused, when it was: the objects above are then
    /// the last good version, still served, and readiness and a metric say the newest is not
    /// applied (a standalone file with a refused object).
    pub refused: Option<String>,
    /// Who may be this node's VRRP peers: the source allowlist of its virtual routers.
    pub peers: Peers,
}

/// What the source knows of the hosts whose VRRP advertisements count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Peers {
    /// Not known (yet): the Nodes are not listed yet, or cannot be (the RBAC of an older
    /// chart), or a standalone host was given no `--vrrp-peers`. Every sender is heard.
    #[default]
    Unknown,
    /// In a cluster: every Node with its labels and InternalIPs. A VirtualService's peers are
    /// the InternalIPs of the Nodes its `spec.balancers.nodeSelector` selects.
    Nodes(Vec<NodePeer>),
    /// Standalone: the addresses given with `--vrrp-peers`, for every virtual router.
    Listed(Vec<Ipv4Addr>),
}

/// One Node as a possible VRRP peer: only what the allowlist needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePeer {
    /// The Node's name.
    pub name: String,
    /// Its labels (matched against `spec.balancers.nodeSelector`).
    pub labels: BTreeMap<String, String>,
    /// Its `status.addresses` of type InternalIP that are IPv4.
    pub addresses: Vec<Ipv4Addr>,
}

/// Which VirtualServices a balancer serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every one in the snapshot: standalone mode, where the file is written for this host
    /// (a standalone host has no Node object whose labels a selector could match).
    #[default]
    All,
    /// Those whose `spec.balancers.nodeSelector` matches this node's labels.
    NodeLabels(BTreeMap<String, String>),
}
