//! The `VIPPolicy` kind: the address pools a cluster admin lends to namespaces. Each pool says
//! which IPv4 CIDRs VIPs may come from, which namespaces may claim them, and which nodes may be
//! the balancers of those VIPs.
//!
//! One object holds every pool because the API server's ValidatingAdmissionPolicy evaluates a
//! policy against each param object its binding selects and admits only when all pass: "the VIP
//! lies in at least one pool" is an OR over pools, so the pools must be entries of one param
//! (docs/adr/0011-vip-policy.md). The chart's binding reads the object named after the release
//! (`lvstun` for the README's install). Only the schema and its CEL rules live here; the
//! admission policy that reads the pools ships in the chart. No I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::schema::label_selector;

/// A DNS-1123 label: what a namespace name and a pool name are.
pub const DNS_LABEL_RE: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// The pools of one cluster: which VIPs a namespace may claim and on which nodes. Written by
/// cluster admins only (the chart grants no one else write access).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lvstun.io",
    version = "v1alpha1",
    kind = "VIPPolicy",
    plural = "vippolicies",
    shortname = "lvsvp",
    category = "lvstun",
    printcolumn(name = "Pools", type_ = "string", json_path = ".spec.pools[*].name"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VIPPolicySpec {
    /// The pools. A VirtualService is admitted when at least one pool holds its VIP, lists its
    /// namespace, and its balancer node selector stays within the pool's; no pool admits none.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(p, self.filter(q, q.name == p.name).size() == 1)"
    ).message("spec.pools: two pools share a name; give each pool its own name"))]
    pub pools: Vec<VipPool>,
}

/// One pool: addresses, who may use them, and where they may be announced.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VipPool {
    /// The pool's name, named in refusals (a DNS label, e.g. `public-web`).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches('{DNS_LABEL_RE}')")).message(
        kube::core::Message::Expression(
            "'spec.pools: name ' + self + ' must be lower case letters, digits and \\'-\\', e.g. public-web'".into()
        )
    ))]
    pub name: String,
    /// The IPv4 CIDRs VIPs of this pool come from, e.g. `192.0.2.0/24` (a single address is
    /// `/32`).
    #[schemars(schema_with = "cidr_list")]
    pub cidrs: Vec<String>,
    /// The namespaces whose VirtualServices may use this pool; `*` means every namespace.
    #[schemars(schema_with = "namespace_list")]
    pub namespaces: Vec<String>,
    /// The nodes that may be balancers of this pool's VIPs. A VirtualService stays within it
    /// when every `matchLabels` entry of this selector is also in the VirtualService's
    /// `spec.balancers.nodeSelector.matchLabels` (same key, same value), and every
    /// `matchExpressions` entry is also in its `matchExpressions`, written the same way: its
    /// selector then selects a subset of these nodes. Empty means any node.
    #[serde(default)]
    #[schemars(schema_with = "label_selector")]
    pub balancer_node_selector: LabelSelector,
}

/// The schema of `cidrs`: 1..32 IPv4 CIDRs, each checked by CEL's `isCIDR` (Kubernetes 1.31+)
/// with a message naming the value and an example.
fn cidr_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 32,
        "items": {
            "type": "string",
            "maxLength": 18,
            "x-kubernetes-validations": [{
                "rule": "isCIDR(self) && cidr(self).ip().family() == 4",
                "messageExpression": "'spec.pools: cidr ' + self + ' is not an IPv4 CIDR: write an address, a slash and a prefix length, e.g. 192.0.2.0/24'"
            }]
        }
    })
}

/// The schema of `namespaces`: 1..256 namespace names or `*`.
fn namespace_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 256,
        "items": {
            "type": "string",
            "maxLength": 63,
            "x-kubernetes-validations": [{
                "rule": format!("self == '*' || self.matches('{DNS_LABEL_RE}')"),
                "messageExpression": "'spec.pools: namespace ' + self + ' is not a namespace name: write a namespace such as team-a, or * for every namespace'"
            }]
        }
    })
}
