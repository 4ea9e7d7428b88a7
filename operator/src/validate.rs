//! What only the operator can check, because it needs more than one object or a rule the CRD
//! schema cannot express: label selectors that would be refused once copied into a DaemonSet, node
//! names that cannot be a node, two VirtualServices claiming the same VIP:port:protocol, and two
//! that name one VRID with different VIPs or election settings on balancer nodes they share
//! ([`vrid_verdict`]: they would stop hearing each other and both hold their VIP). Also the
//! addresses a VIP may never be because the cluster already uses them ([`address_use`]: a
//! Node's InternalIP or ExternalIP, the ClusterIP of Service `default/kubernetes`), and whether
//! a stored VirtualService still lies in a `VIPPolicy` pool its namespace may use
//! ([`pool_check`], by the rule the chart's admission policy applies to writes).
//!
//! Pure: no I/O, no clock. The claim resolution itself is `lvstun_rules`' (the balancers apply
//! the same one), so the operator and every daemon always agree on who owns a VIP:port:protocol.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use lvstun_crds::v1alpha1::{VIPPolicySpec, VirtualService};
use lvstun_rules::{
    ClaimKey, ObjectKey, Outcome, PoolMiss, PoolRequest, VridClash, claim_keys, pool_verdict,
    seniority, vrid_clash,
};

/// The operator's judgement of one VirtualService, before any data-plane report is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid, and owns every VIP:port:protocol it lists.
    Owner,
    /// Valid, but an older VirtualService already owns one of its VIP:port:protocol pairs; it is
    /// not programmed anywhere until that changes.
    Conflict {
        /// The first contested VIP:port:protocol.
        key: ClaimKey,
        /// The VirtualService that keeps it.
        owner: ObjectKey,
    },
    /// Something in the spec would break the DaemonSets or cannot select anything; each entry is
    /// a sentence naming the field and the fix.
    Invalid(Vec<String>),
    /// Valid and owner of its VIP:port:protocol pairs, but an older VirtualService runs the same
    /// VRID on a node this one selects too, with another VIP or other election settings; it is
    /// not programmed anywhere until that changes (one of them moves to another VRID).
    VridConflict {
        /// The VRID.
        vrid: i32,
        /// The VirtualService that keeps it.
        owner: ObjectKey,
        /// What differs.
        clash: VridClash,
        /// A node both select.
        node: String,
    },
    /// `spec.vip` is an address the cluster already uses; it is not programmed anywhere.
    AddressInUse(AddressUse),
}

/// Who already uses an address a VirtualService asks for as its VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressUse {
    /// A Node's `status.addresses` entry.
    Node {
        /// The Node.
        node: String,
        /// The address type: `InternalIP` or `ExternalIP`.
        kind: String,
    },
    /// The ClusterIP of Service `default/kubernetes`.
    KubernetesService,
}

/// The address types of a Node a VIP may never equal: the ones the node answers on.
pub const NODE_ADDRESS_TYPES: [&str; 2] = ["InternalIP", "ExternalIP"];

/// Who already uses `vip`, if anyone: one of `node_addresses` (`(node, type, address)`, only
/// [`NODE_ADDRESS_TYPES`] count), or `kubernetes_ip`, the ClusterIP of Service
/// `default/kubernetes`. Pure.
pub fn address_use<'a>(
    vip: &str,
    node_addresses: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    kubernetes_ip: Option<&str>,
) -> Option<AddressUse> {
    if kubernetes_ip == Some(vip) {
        return Some(AddressUse::KubernetesService);
    }
    node_addresses
        .into_iter()
        .find(|(_, kind, address)| *address == vip && NODE_ADDRESS_TYPES.contains(kind))
        .map(|(node, kind, _)| AddressUse::Node {
            node: node.to_string(),
            kind: kind.to_string(),
        })
}

/// What the operator knows of the pools for one VirtualService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolCheck {
    /// The operator was given no VIPPolicy name: pools are not its business.
    NotChecked,
    /// The VIPPolicy it was told to read does not exist.
    NoPolicy {
        /// Its name.
        policy: String,
    },
    /// In the pool named.
    Inside {
        /// The VIPPolicy's name.
        policy: String,
        /// The pool that admits it.
        pool: String,
    },
    /// Outside every pool its namespace may use.
    Outside {
        /// The VIPPolicy's name.
        policy: String,
        /// Which rule it breaks.
        miss: PoolMiss,
    },
}

/// Whether `vs` lies in a pool of the VIPPolicy `policy` (`None`: not checked; `Some((name,
/// None))`: told to read `name`, which does not exist), by [`lvstun_rules::pool_verdict`].
pub fn pool_check(
    policy: Option<(&str, Option<&VIPPolicySpec>)>,
    vs: &VirtualService,
) -> PoolCheck {
    let Some((name, spec)) = policy else {
        return PoolCheck::NotChecked;
    };
    let Some(spec) = spec else {
        return PoolCheck::NoPolicy {
            policy: name.to_string(),
        };
    };
    let req = PoolRequest {
        namespace: vs.metadata.namespace.as_deref().unwrap_or_default(),
        vip: &vs.spec.vip,
        node_selector: &vs.spec.balancers.node_selector,
    };
    match pool_verdict(name, &spec.pools, &req) {
        Ok(pool) => PoolCheck::Inside {
            policy: name.to_string(),
            pool,
        },
        Err(miss) => PoolCheck::Outside {
            policy: name.to_string(),
            miss,
        },
    }
}

/// Check the parts of a VirtualService spec the CRD schema cannot: both label selectors.
pub fn validate_virtual_service(vs: &VirtualService) -> Result<(), Vec<String>> {
    let mut problems = validate_selector(
        "spec.balancers.nodeSelector",
        &vs.spec.balancers.node_selector,
    );
    problems.extend(validate_selector(
        "spec.realServerSelector",
        &vs.spec.real_server_selector,
    ));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Check a label selector the way the API server checks one inside a Pod or DaemonSet, so an
/// invalid one is reported on its own VirtualService instead of making the shared DaemonSet
/// (and with it every other VirtualService) fail to apply.
pub fn validate_selector(field: &str, sel: &LabelSelector) -> Vec<String> {
    let mut problems = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        if let Err(why) = check_label_key(k) {
            problems.push(format!("{field}.matchLabels: key {k:?} {why}"));
        }
        if let Err(why) = check_label_value(v) {
            problems.push(format!("{field}.matchLabels[{k:?}]: value {v:?} {why}"));
        }
    }
    for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        if let Err(why) = check_label_key(&req.key) {
            problems.push(format!("{at}.key: {:?} {why}", req.key));
        }
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    problems.push(format!(
                        "{at}.values: operator {} needs at least one value",
                        req.operator
                    ));
                }
                for v in values {
                    if let Err(why) = check_label_value(v) {
                        problems.push(format!("{at}.values: {v:?} {why}"));
                    }
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    problems.push(format!(
                        "{at}.values: operator {} takes no values; remove them",
                        req.operator
                    ));
                }
            }
            other => problems.push(format!(
                "{at}.operator: {other:?} is not one of In, NotIn, Exists, DoesNotExist"
            )),
        }
    }
    problems
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// A label name part: at most 63 characters, alphanumeric at both ends, `-_.` inside.
fn check_name_part(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    let ends_ok = s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ends_ok || !s.chars().all(is_name_char) {
        return Err(
            "must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        );
    }
    Ok(())
}

/// A DNS-1123 subdomain: what node names and label-key prefixes must be.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name part.
pub(crate) fn check_label_key(key: &str) -> Result<(), &'static str> {
    match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err("has a prefix that is not a DNS subdomain (e.g. lvstun.io)");
            }
            check_name_part(name)
        }
        None => check_name_part(key),
    }
}

/// A label value: empty, or a name part.
pub(crate) fn check_label_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        Ok(())
    } else {
        check_name_part(value)
    }
}

/// Decide every VirtualService's verdict by the shared claim rule ([`lvstun_rules::resolve`]):
/// oldest first, each valid VirtualService becomes the owner of all its VIP:port:protocol pairs
/// unless an earlier owner holds one of them; then it is in conflict as a whole (a
/// VirtualService is never half-programmed) and claims nothing, so a third, newer VirtualService
/// is only blocked by owners, never by another loser. Objects being deleted claim nothing.
pub fn resolve<'a>(
    all: impl IntoIterator<Item = &'a VirtualService>,
) -> BTreeMap<ObjectKey, Verdict> {
    lvstun_rules::resolve(all, |vs| {
        validate_virtual_service(vs).map(|()| ((), claim_keys(vs).into_iter().collect()))
    })
    .into_iter()
    .map(|r| {
        let verdict = match r.outcome {
            Outcome::Owner(()) => Verdict::Owner,
            Outcome::Conflict { key, owner } => Verdict::Conflict { key, owner },
            Outcome::Refused(problems) => Verdict::Invalid(problems),
        };
        (r.key, verdict)
    })
    .collect()
}

/// The verdict of one VirtualService given the others (only those with the same VIP can matter).
/// `vs` itself replaces any older copy of it among `peers`.
pub fn verdict_of<'a>(
    vs: &'a VirtualService,
    peers: impl IntoIterator<Item = &'a VirtualService>,
) -> Verdict {
    let me = ObjectKey::of(&vs.metadata);
    let candidates = peers
        .into_iter()
        .filter(|p| p.spec.vip == vs.spec.vip && ObjectKey::of(&p.metadata) != me)
        .chain(std::iter::once(vs));
    resolve(candidates)
        .remove(&me)
        // Only an object being deleted has no verdict; it claims nothing and is programmed nowhere.
        .unwrap_or(Verdict::Invalid(vec!["the object is being deleted".into()]))
}

/// The VRID verdict of `vs` (a [`Verdict::Owner`] of its claims) among `same_vrid`: the other
/// owners on its VRID, each with the balancer nodes it selects, as `vs` with `nodes`. Most
/// senior first, each one keeps the VRID unless an earlier keeper selects a node it selects
/// too and [`vrid_clash`] says they cannot share a router; a loser blocks nobody. `None`: `vs`
/// keeps it. Pure.
pub fn vrid_verdict<'a>(
    vs: &'a VirtualService,
    nodes: &'a BTreeSet<String>,
    same_vrid: impl IntoIterator<Item = (&'a VirtualService, &'a BTreeSet<String>)>,
) -> Option<Verdict> {
    let me = ObjectKey::of(&vs.metadata);
    let mut all: Vec<(&VirtualService, &BTreeSet<String>)> = same_vrid
        .into_iter()
        .filter(|(o, _)| {
            ObjectKey::of(&o.metadata) != me
                && o.metadata.deletion_timestamp.is_none()
                && o.spec.balancers.virtual_router_id == vs.spec.balancers.virtual_router_id
        })
        .chain(std::iter::once((vs, nodes)))
        .collect();
    all.sort_by_key(|(o, _)| seniority(&o.metadata));
    let mut keepers: Vec<(&VirtualService, &BTreeSet<String>)> = Vec::new();
    for (o, o_nodes) in all {
        let lost = keepers.iter().find_map(|(k, k_nodes)| {
            let shared = k_nodes.intersection(o_nodes).next()?;
            vrid_clash(k, o).map(|clash| (ObjectKey::of(&k.metadata), clash, shared.clone()))
        });
        match lost {
            Some((owner, clash, node)) if ObjectKey::of(&o.metadata) == me => {
                return Some(Verdict::VridConflict {
                    vrid: vs.spec.balancers.virtual_router_id,
                    owner,
                    clash,
                    node,
                });
            }
            Some(_) => {}
            None => keepers.push((o, o_nodes)),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::vs;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
    use k8s_openapi::jiff::Timestamp;
    use lvstun_crds::v1alpha1::Protocol;

    const TCP: Protocol = Protocol::Tcp;
    const UDP: Protocol = Protocol::Udp;

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn older_keeps_the_vip_port_and_newer_names_it() {
        let a = vs("a", "www", 100, "192.0.2.100", &[(80, TCP)]);
        let b = vs("b", "www2", 200, "192.0.2.100", &[(80, TCP)]);
        let v = resolve([&b, &a]);
        assert_eq!(v[&key("a", "www")], Verdict::Owner);
        assert_eq!(
            v[&key("b", "www2")],
            Verdict::Conflict {
                key: ClaimKey {
                    vip: "192.0.2.100".into(),
                    port: 80,
                    protocol: TCP
                },
                owner: key("a", "www"),
            }
        );
        assert_eq!(
            ClaimKey {
                vip: "192.0.2.100".into(),
                port: 80,
                protocol: TCP
            }
            .to_string(),
            "192.0.2.100:80/TCP"
        );
    }

    #[test]
    fn same_second_is_decided_by_namespace_then_name() {
        let a = vs("ns", "b", 100, "192.0.2.1", &[(80, TCP)]);
        let b = vs("ns", "a", 100, "192.0.2.1", &[(80, TCP)]);
        let v = resolve([&a, &b]);
        assert_eq!(v[&key("ns", "a")], Verdict::Owner);
        assert!(matches!(v[&key("ns", "b")], Verdict::Conflict { .. }));
    }

    #[test]
    fn different_port_protocol_or_vip_do_not_conflict() {
        let a = vs("ns", "a", 1, "192.0.2.1", &[(80, TCP)]);
        let b = vs("ns", "b", 2, "192.0.2.1", &[(443, TCP)]);
        let c = vs("ns", "c", 3, "192.0.2.1", &[(80, UDP)]);
        let d = vs("ns", "d", 4, "192.0.2.2", &[(80, TCP)]);
        let v = resolve([&a, &b, &c, &d]);
        assert!(v.values().all(|x| *x == Verdict::Owner), "{v:?}");
    }

    #[test]
    fn a_loser_blocks_nobody() {
        // b loses port 80 to a, so it claims nothing; c may have 443 although b lists it too.
        let a = vs("ns", "a", 1, "192.0.2.1", &[(80, TCP)]);
        let b = vs("ns", "b", 2, "192.0.2.1", &[(80, TCP), (443, TCP)]);
        let c = vs("ns", "c", 3, "192.0.2.1", &[(443, TCP)]);
        let v = resolve([&c, &b, &a]);
        assert_eq!(v[&key("ns", "a")], Verdict::Owner);
        assert!(
            matches!(v[&key("ns", "b")], Verdict::Conflict { ref owner, .. } if *owner == key("ns", "a"))
        );
        assert_eq!(v[&key("ns", "c")], Verdict::Owner);
    }

    #[test]
    fn deleting_the_owner_hands_the_claim_to_the_next_oldest() {
        let mut a = vs("ns", "a", 1, "192.0.2.1", &[(80, TCP)]);
        let b = vs("ns", "b", 2, "192.0.2.1", &[(80, TCP)]);
        a.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(5).unwrap()));
        let v = resolve([&a, &b]);
        assert_eq!(v.get(&key("ns", "a")), None);
        assert_eq!(v[&key("ns", "b")], Verdict::Owner);
    }

    #[test]
    fn verdict_of_uses_the_fresh_copy_and_ignores_other_vips() {
        let old_copy = vs("ns", "b", 2, "192.0.2.9", &[(80, TCP)]);
        let a = vs("ns", "a", 1, "192.0.2.1", &[(80, TCP)]);
        let fresh = vs("ns", "b", 2, "192.0.2.1", &[(80, TCP)]);
        assert!(matches!(
            verdict_of(&fresh, [&a, &old_copy]),
            Verdict::Conflict { .. }
        ));
        let moved = vs("ns", "b", 2, "192.0.2.9", &[(80, TCP)]);
        assert_eq!(verdict_of(&moved, [&a, &fresh]), Verdict::Owner);
    }

    #[test]
    fn an_invalid_virtual_service_claims_nothing() {
        let mut a = vs("ns", "a", 1, "192.0.2.1", &[(80, TCP)]);
        a.spec.balancers.node_selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "zone".into(),
            operator: "In".into(),
            values: Some(vec![]),
        }]);
        let b = vs("ns", "b", 2, "192.0.2.1", &[(80, TCP)]);
        let v = resolve([&a, &b]);
        match &v[&key("ns", "a")] {
            Verdict::Invalid(p) => assert!(
                p[0].contains("spec.balancers.nodeSelector.matchExpressions[0].values"),
                "{p:?}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(v[&key("ns", "b")], Verdict::Owner);
    }

    #[test]
    fn one_vrid_on_shared_nodes_needs_one_vip_and_one_set_of_settings() {
        let nodes = |n: &[&str]| -> BTreeSet<String> { n.iter().map(|s| (*s).into()).collect() };
        let with = |name: &str, created: i64, vip: &str, vrid: i32, interval: i32| {
            let mut v = vs("ns", name, created, vip, &[(80, TCP)]);
            v.spec.balancers.virtual_router_id = vrid;
            v.spec.balancers.advert_interval_milliseconds = interval;
            v
        };
        let senior = with("a", 1, "192.0.2.100", 51, 100);
        struct Case {
            name: &'static str,
            newer: VirtualService,
            newer_nodes: BTreeSet<String>,
            want: Option<(VridClash, &'static str)>,
        }
        let cases = [
            Case {
                name: "another VIP on a shared node: conflict at once",
                newer: with("b", 2, "192.0.2.101", 51, 100),
                newer_nodes: nodes(&["lb2", "lb3"]),
                want: Some((VridClash::OtherVip("192.0.2.100".into()), "lb2")),
            },
            Case {
                name: "the same VIP with another interval: conflict",
                newer: with("b", 2, "192.0.2.100", 51, 200),
                newer_nodes: nodes(&["lb1"]),
                want: Some((VridClash::OtherSettings, "lb1")),
            },
            Case {
                name: "the same VIP and settings (other ports): one router, no conflict",
                newer: with("b", 2, "192.0.2.100", 51, 100),
                newer_nodes: nodes(&["lb1", "lb2"]),
                want: None,
            },
            Case {
                name: "another VIP on other nodes: separate routers, no conflict",
                newer: with("b", 2, "192.0.2.101", 51, 100),
                newer_nodes: nodes(&["lb3", "lb4"]),
                want: None,
            },
            Case {
                name: "another VRID: no conflict",
                newer: with("b", 2, "192.0.2.101", 52, 100),
                newer_nodes: nodes(&["lb1", "lb2"]),
                want: None,
            },
        ];
        let senior_nodes = nodes(&["lb1", "lb2"]);
        for c in cases {
            let got = vrid_verdict(&c.newer, &c.newer_nodes, [(&senior, &senior_nodes)]);
            let want = c.want.map(|(clash, node)| Verdict::VridConflict {
                vrid: c.newer.spec.balancers.virtual_router_id,
                owner: key("ns", "a"),
                clash,
                node: node.into(),
            });
            assert_eq!(got, want, "{}", c.name);
            // The senior keeps its VRID whatever the newer one says.
            assert_eq!(
                vrid_verdict(&senior, &senior_nodes, [(&c.newer, &c.newer_nodes)]),
                None,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn a_vrid_loser_blocks_nobody() {
        let n = |s: &[&str]| -> BTreeSet<String> { s.iter().map(|x| (*x).into()).collect() };
        let a = vs("ns", "a", 1, "192.0.2.100", &[(80, TCP)]);
        let b = vs("ns", "b", 2, "192.0.2.101", &[(80, TCP)]);
        let c = vs("ns", "c", 3, "192.0.2.102", &[(80, TCP)]);
        let (na, nb, nc) = (n(&["lb1"]), n(&["lb1", "lb2"]), n(&["lb2"]));
        // b loses to a on lb1; c shares only lb2 with b, a loser: c keeps the VRID.
        assert!(matches!(
            vrid_verdict(&b, &nb, [(&a, &na), (&c, &nc)]),
            Some(Verdict::VridConflict { .. })
        ));
        assert_eq!(vrid_verdict(&c, &nc, [(&a, &na), (&b, &nb)]), None);
    }

    #[test]
    fn selector_checks_name_the_field_and_fix() {
        let bad = LabelSelector {
            match_labels: Some(
                [
                    ("-bad".to_string(), "ok".to_string()),
                    ("ok".to_string(), "bad value".to_string()),
                ]
                .into(),
            ),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "k".into(),
                    operator: "Gt".into(),
                    values: Some(vec!["1".into()]),
                },
                LabelSelectorRequirement {
                    key: "k".into(),
                    operator: "Exists".into(),
                    values: Some(vec!["x".into()]),
                },
                LabelSelectorRequirement {
                    key: "Not_A.Domain/x".into(),
                    operator: "Exists".into(),
                    values: None,
                },
            ]),
        };
        let p = validate_selector("spec.realServerSelector", &bad);
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(p.iter().any(|s| s.contains("matchLabels: key \"-bad\"")));
        assert!(p.iter().any(|s| s.contains("\"bad value\"")));
        assert!(
            p.iter()
                .any(|s| s.contains("\"Gt\" is not one of In, NotIn, Exists, DoesNotExist"))
        );
        assert!(p.iter().any(|s| s.contains("takes no values")));
        assert!(
            p.iter()
                .any(|s| s.contains("prefix that is not a DNS subdomain"))
        );
        let good = LabelSelector {
            match_labels: Some(
                [
                    ("lvstun.io/balancer".to_string(), "true".to_string()),
                    ("empty".to_string(), String::new()),
                ]
                .into(),
            ),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "topology.kubernetes.io/zone".into(),
                operator: "NotIn".into(),
                values: Some(vec!["eu-1a".into()]),
            }]),
        };
        assert!(validate_selector("x", &good).is_empty());
    }

    #[test]
    fn a_vip_may_not_be_a_node_address_or_the_kubernetes_cluster_ip() {
        let nodes = [
            ("lb1", "InternalIP", "192.0.2.11"),
            ("lb1", "Hostname", "192.0.2.99"),
            ("lb2", "ExternalIP", "203.0.113.12"),
        ];
        let k8s = Some("10.96.0.1");
        let node = |n: &str, k: &str| {
            Some(AddressUse::Node {
                node: n.into(),
                kind: k.into(),
            })
        };
        for (vip, want) in [
            ("192.0.2.11", node("lb1", "InternalIP")),
            ("203.0.113.12", node("lb2", "ExternalIP")),
            ("192.0.2.99", None),
            ("10.96.0.1", Some(AddressUse::KubernetesService)),
            ("192.0.2.100", None),
        ] {
            assert_eq!(address_use(vip, nodes, k8s), want, "{vip}");
        }
        assert_eq!(address_use("10.96.0.1", nodes, None), None, "not read yet");
    }

    #[test]
    fn pools_are_checked_only_when_a_policy_is_named() {
        use lvstun_crds::v1alpha1::VipPool;
        let v = vs("ns", "a", 1, "192.0.2.1", &[(80, TCP)]);
        assert_eq!(pool_check(None, &v), PoolCheck::NotChecked);
        assert_eq!(
            pool_check(Some(("lvstun", None)), &v),
            PoolCheck::NoPolicy {
                policy: "lvstun".into()
            }
        );
        let spec = VIPPolicySpec {
            pools: vec![VipPool {
                name: "p".into(),
                cidrs: vec!["192.0.2.0/24".into()],
                namespaces: vec!["*".into()],
                balancer_node_selector: LabelSelector::default(),
            }],
        };
        assert_eq!(
            pool_check(Some(("lvstun", Some(&spec))), &v),
            PoolCheck::Inside {
                policy: "lvstun".into(),
                pool: "p".into()
            }
        );
        let outside = vs("ns", "a", 1, "198.51.100.1", &[(80, TCP)]);
        assert!(matches!(
            pool_check(Some(("lvstun", Some(&spec))), &outside),
            PoolCheck::Outside {
                miss: PoolMiss::NoPool { .. },
                ..
            }
        ));
    }

    #[test]
    fn node_names_are_dns_subdomains() {
        assert!(is_dns_subdomain("lb1"));
        assert!(is_dns_subdomain("ip-10-0-0-1.eu-west-1.compute.internal"));
        assert!(!is_dns_subdomain("LB1"));
        assert!(!is_dns_subdomain("lb_1"));
        assert!(!is_dns_subdomain("-lb1"));
        assert!(!is_dns_subdomain(""));
    }
}
