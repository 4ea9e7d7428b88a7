//! The `RealServer` kind: one host that terminates the tunnel and answers clients directly.
//!
//! Its status carries what the balancers saw (`Healthy`, `checks[]`, one entry per balancer) and
//! what the web daemon on that host reported (`TunnelReady`); a host outside the cluster has no
//! web daemon, so there the operator says `TunnelReady=Unknown` (`OutsideCluster`).

// kube-derive's `printcolumn(...)` repeats `type_ = "string"` per column by design; clippy reads
// the repeats as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::schema::{ipv4_rule, node_name_rule, unicast_rule};

/// Desired state of one real server.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lvstun.io",
    version = "v1alpha1",
    kind = "RealServer",
    namespaced,
    status = "RealServerStatus",
    shortname = "lvsrs",
    category = "lvstun",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.address"),
    printcolumn(name = "Weight", type_ = "integer", json_path = ".spec.weight"),
    printcolumn(
        name = "Healthy",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Healthy\")].status"
    ),
    printcolumn(
        name = "TunnelReady",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"TunnelReady\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RealServerSpec {
    /// The real server's own routable address: the tunnel's outer destination and the target of
    /// health checks.
    #[x_kube(validation = ipv4_rule("spec.address", "198.51.100.10"))]
    #[x_kube(validation = unicast_rule("spec.address", "a real server address", "198.51.100.10"))]
    #[schemars(length(max = 15))]
    pub address: String,
    /// Port on the real server; defaults to the VirtualService port (tunnel mode cannot remap
    /// ports, so a different value only changes where health checks go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// IPVS weight (0..65535); 0 takes no new connections.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 65535))]
    pub weight: i32,
    /// Drain: weight 0, existing connections finish.
    #[serde(default)]
    pub drain: bool,
    /// The cluster node this server is, if any: the web daemon on that node prepares it (the
    /// node must carry the web label the admin chose, chart value `web.nodeSelector`, default
    /// `lvstun.io/web=true`; otherwise `TunnelReady` says `NoWebDaemon`).
    /// Without it the host is outside the cluster and runs `lvstun-node web --config` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = node_name_rule("spec.nodeName"))]
    pub node_name: Option<String>,
}

fn default_weight() -> i32 {
    1
}

/// Observed state of a real server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RealServerStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Healthy` (as seen by the active balancer) and `TunnelReady` (from the web daemon on
    /// `spec.nodeName`; without a nodeName, `Unknown` with reason `OutsideCluster` from the
    /// operator, and the health checks alone decide).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// One entry per balancer that checks this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["balancer".into()]))]
    pub checks: Vec<CheckStatus>,
}

/// What one balancer's health checker last saw of this server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// The balancer node that runs the check.
    pub balancer: String,
    /// Whether the server currently counts as healthy there.
    pub healthy: bool,
    /// Consecutive failed checks.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// When the last check finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,
    /// When `healthy` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Why the last check failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
