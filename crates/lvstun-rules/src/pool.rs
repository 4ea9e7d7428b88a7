//! Whether a VirtualService lies inside a `VIPPolicy` pool its namespace may use: the rule the
//! chart's ValidatingAdmissionPolicy (`deploy/helm/lvstun/templates/vip-policy.yaml`) applies to
//! every CREATE and UPDATE, written once in Rust for the operator, which applies it to what is
//! already stored (an object admitted before the pools changed). Same steps, same order, same
//! messages as the CEL policy (docs/adr/0011-vip-policy.md):
//!
//! 1. the pools whose `cidrs` hold `spec.vip`;
//! 2. of those, the ones whose `namespaces` list the VirtualService's namespace or `*`;
//! 3. of those, the ones whose `balancerNodeSelector` the VirtualService's
//!    `spec.balancers.nodeSelector` stays within: every `matchLabels` entry of the pool's is in
//!    the VirtualService's with the same value, every `matchExpressions` entry of the pool's is
//!    in the VirtualService's, written the same way (a syntactic subset: requirements are
//!    ANDed, so the VirtualService then selects a subset of the pool's nodes).
//!
//! Pure: no I/O.

use std::net::Ipv4Addr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use lvstun_crds::v1alpha1::VipPool;

/// Why a VirtualService lies outside every pool its namespace may use; `message` is the CEL
/// policy's refusal, word for word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolMiss {
    /// No pool holds the VIP.
    NoPool {
        /// The refusal.
        message: String,
    },
    /// Pools hold the VIP, but none lists the namespace.
    NamespaceNotAllowed {
        /// The pools that hold the VIP.
        pools: Vec<String>,
        /// The refusal.
        message: String,
    },
    /// Pools hold the VIP for the namespace, but the balancer node selector reaches outside
    /// every one of theirs.
    NodesOutside {
        /// The first such pool, which the message names.
        pool: String,
        /// The refusal.
        message: String,
    },
}

impl PoolMiss {
    /// The refusal, naming the field, the pool and the fix.
    pub fn message(&self) -> &str {
        match self {
            PoolMiss::NoPool { message }
            | PoolMiss::NamespaceNotAllowed { message, .. }
            | PoolMiss::NodesOutside { message, .. } => message,
        }
    }
}

/// A VirtualService as the pool rule reads it.
#[derive(Debug, Clone, Copy)]
pub struct PoolRequest<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// `spec.vip`.
    pub vip: &'a str,
    /// `spec.balancers.nodeSelector`.
    pub node_selector: &'a LabelSelector,
}

/// The pool that admits `req` among `pools` (of the VIPPolicy named `policy`), by the chart's
/// rule: `Ok(pool name)` for the first pool that admits it, else why none does.
pub fn pool_verdict(
    policy: &str,
    pools: &[VipPool],
    req: &PoolRequest<'_>,
) -> Result<String, PoolMiss> {
    let vip = req.vip;
    let ns = req.namespace;
    let addr: Option<Ipv4Addr> = vip.parse().ok();
    let holding_any: Vec<&VipPool> = pools
        .iter()
        .filter(|p| addr.is_some_and(|a| p.cidrs.iter().any(|c| cidr_contains(c, a))))
        .collect();
    let holding: Vec<&VipPool> = holding_any
        .iter()
        .copied()
        .filter(|p| p.namespaces.iter().any(|n| n == "*" || n == ns))
        .collect();
    let Some(first) = holding.first() else {
        if holding_any.is_empty() {
            return Err(PoolMiss::NoPool {
                message: format!(
                    "spec.vip {vip} is in no VIPPolicy pool that namespace \"{ns}\" may use: ask a cluster admin to add it to VIPPolicy {policy}"
                ),
            });
        }
        let names: Vec<String> = holding_any.iter().map(|p| p.name.clone()).collect();
        let message = format!(
            "spec.vip {vip} is in VIPPolicy {policy} pool {}, which namespace \"{ns}\" may not use: ask a cluster admin to add \"{ns}\" to that pool's namespaces",
            names.join(", ")
        );
        return Err(PoolMiss::NamespaceNotAllowed {
            pools: names,
            message,
        });
    };
    if let Some(p) = holding
        .iter()
        .find(|p| within(req.node_selector, &p.balancer_node_selector))
    {
        return Ok(p.name.clone());
    }
    let pool_sel = &first.balancer_node_selector;
    let vs_labels = req.node_selector.match_labels.as_ref();
    let missing: Vec<String> = pool_sel
        .match_labels
        .iter()
        .flatten()
        .filter(|(k, v)| vs_labels.and_then(|l| l.get(*k)) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let lacks_expressions = pool_sel.match_expressions.iter().flatten().any(|e| {
        !req.node_selector
            .match_expressions
            .iter()
            .flatten()
            .any(|x| x == e)
    });
    let mut fix = String::new();
    if !missing.is_empty() {
        fix.push_str(&format!(
            "add {} to spec.balancers.nodeSelector.matchLabels",
            missing.join(", ")
        ));
    }
    if !missing.is_empty() && lacks_expressions {
        fix.push_str(" and ");
    }
    if lacks_expressions {
        fix.push_str("copy the pool's balancerNodeSelector.matchExpressions into spec.balancers.nodeSelector.matchExpressions");
    }
    Err(PoolMiss::NodesOutside {
        pool: first.name.clone(),
        message: format!(
            "spec.balancers.nodeSelector selects nodes outside those of VIPPolicy {policy} pool {}, which holds spec.vip {vip} for namespace \"{ns}\": {fix}, or ask a cluster admin to widen the pool",
            first.name
        ),
    })
}

/// Whether the selector `vs` stays within `pool` (the syntactic subset of the module comment).
fn within(vs: &LabelSelector, pool: &LabelSelector) -> bool {
    let labels_ok = pool.match_labels.iter().flatten().all(|(k, v)| {
        vs.match_labels
            .as_ref()
            .and_then(|l| l.get(k))
            .is_some_and(|x| x == v)
    });
    labels_ok
        && pool
            .match_expressions
            .iter()
            .flatten()
            .all(|e| vs.match_expressions.iter().flatten().any(|x| x == e))
}

/// Whether the IPv4 CIDR `cidr` (as the VIPPolicy's CEL admits it: an address, `/`, a prefix
/// length; host bits may be set, as CEL's `cidr()` allows) holds `addr`. A string that is not
/// such a CIDR holds nothing.
pub fn cidr_contains(cidr: &str, addr: Ipv4Addr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    if len > 32 {
        return false;
    }
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    (u32::from(net) & mask) == (u32::from(addr) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn sel(labels: &[(&str, &str)], racks: Option<&[&str]>) -> LabelSelector {
        LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
            ),
            match_expressions: racks.map(|r| {
                vec![LabelSelectorRequirement {
                    key: "rack".into(),
                    operator: "In".into(),
                    values: Some(r.iter().map(|s| (*s).to_string()).collect()),
                }]
            }),
        }
    }

    fn pool(name: &str, cidrs: &[&str], namespaces: &[&str], s: LabelSelector) -> VipPool {
        VipPool {
            name: name.into(),
            cidrs: cidrs.iter().map(|s| (*s).to_string()).collect(),
            namespaces: namespaces.iter().map(|s| (*s).to_string()).collect(),
            balancer_node_selector: s,
        }
    }

    /// The pools of `tests/tests/controlplane_pools.rs`, so the two prove the same rule.
    fn pools() -> Vec<VipPool> {
        vec![
            pool(
                "example",
                &["192.0.2.0/24"],
                &["*"],
                sel(&[("lvstun.io/balancer", "true")], None),
            ),
            pool(
                "team-a",
                &["203.0.113.0/25", "198.51.100.77/32"],
                &["team-a"],
                sel(
                    &[("lvstun.io/balancer", "true"), ("zone", "a")],
                    Some(&["r1", "r2"]),
                ),
            ),
        ]
    }

    #[test]
    fn the_rule_and_its_messages_mirror_the_charts_policy() {
        let default_sel = sel(&[("lvstun.io/balancer", "true")], None);
        let team_a = sel(
            &[
                ("lvstun.io/balancer", "true"),
                ("zone", "a"),
                ("disk", "ssd"),
            ],
            Some(&["r1", "r2"]),
        );
        let no_zone = sel(&[("lvstun.io/balancer", "true")], Some(&["r1", "r2"]));
        let no_rack = sel(&[("lvstun.io/balancer", "true"), ("zone", "a")], None);
        let bare = sel(&[], None);
        let other_racks = sel(
            &[("lvstun.io/balancer", "true"), ("zone", "a")],
            Some(&["r2", "r1"]),
        );
        let outside = |ns: &str| {
            format!(
                "spec.balancers.nodeSelector selects nodes outside those of VIPPolicy lvstun pool team-a, which holds spec.vip 203.0.113.10 for namespace \"{ns}\": "
            )
        };
        let widen = ", or ask a cluster admin to widen the pool";
        let copy = "copy the pool's balancerNodeSelector.matchExpressions into spec.balancers.nodeSelector.matchExpressions";
        // (case, namespace, VIP, balancer node selector, the pool or the refusal)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            &'a LabelSelector,
            Result<String, String>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("example pool, any namespace", "team-b", "192.0.2.100", &default_sel, Ok("example".into())),
            ("team pool, own namespace", "team-a", "203.0.113.10", &team_a, Ok("team-a".into())),
            ("a /32 of the team pool", "team-a", "198.51.100.77", &team_a, Ok("team-a".into())),
            (
                "in no pool",
                "team-a",
                "203.0.113.200",
                &team_a,
                Err("spec.vip 203.0.113.200 is in no VIPPolicy pool that namespace \"team-a\" may use: ask a cluster admin to add it to VIPPolicy lvstun".into()),
            ),
            (
                "a pool the namespace may not use",
                "team-b",
                "203.0.113.10",
                &team_a,
                Err("spec.vip 203.0.113.10 is in VIPPolicy lvstun pool team-a, which namespace \"team-b\" may not use: ask a cluster admin to add \"team-b\" to that pool's namespaces".into()),
            ),
            (
                "a label missing",
                "team-a",
                "203.0.113.10",
                &no_zone,
                Err(format!("{}add zone=a to spec.balancers.nodeSelector.matchLabels{widen}", outside("team-a"))),
            ),
            (
                "the expressions missing",
                "team-a",
                "203.0.113.10",
                &no_rack,
                Err(format!("{}{copy}{widen}", outside("team-a"))),
            ),
            (
                "both missing",
                "team-a",
                "203.0.113.10",
                &bare,
                Err(format!(
                    "{}add lvstun.io/balancer=true, zone=a to spec.balancers.nodeSelector.matchLabels and {copy}{widen}",
                    outside("team-a")
                )),
            ),
            (
                "the same values in another order are not the same expression",
                "team-a",
                "203.0.113.10",
                &other_racks,
                Err(format!("{}{copy}{widen}", outside("team-a"))),
            ),
        ];
        for (name, ns, vip, s, want) in cases {
            let got = pool_verdict(
                "lvstun",
                &pools(),
                &PoolRequest {
                    namespace: ns,
                    vip,
                    node_selector: s,
                },
            )
            .map_err(|m| m.message().to_string());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn no_pools_admit_nothing() {
        let s = LabelSelector::default();
        let got = pool_verdict(
            "p",
            &[],
            &PoolRequest {
                namespace: "ns",
                vip: "192.0.2.1",
                node_selector: &s,
            },
        );
        assert!(matches!(got, Err(PoolMiss::NoPool { .. })), "{got:?}");
    }

    #[test]
    fn cidrs_hold_what_their_prefix_covers() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        for (cidr, addr, want) in [
            ("192.0.2.0/24", "192.0.2.255", true),
            ("192.0.2.0/24", "192.0.3.0", false),
            ("192.0.2.7/24", "192.0.2.1", true),
            ("198.51.100.77/32", "198.51.100.77", true),
            ("198.51.100.77/32", "198.51.100.78", false),
            ("0.0.0.0/0", "203.0.113.1", true),
            ("192.0.2.0/33", "192.0.2.1", false),
            ("192.0.2.0", "192.0.2.0", false),
        ] {
            assert_eq!(cidr_contains(cidr, a(addr)), want, "{cidr} {addr}");
        }
    }
}
