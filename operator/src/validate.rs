//! What only the operator can check, because it needs more than one object or a rule the CRD
//! schema cannot express: label selectors that would be refused once copied into a DaemonSet, node
//! names that cannot be a node, and two VirtualServices claiming the same VIP:port:protocol.
//!
//! Pure: no I/O, no clock. The claim resolution itself is `lvstun_rules`' (the balancers apply
//! the same one), so the operator and every daemon always agree on who owns a VIP:port:protocol.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use lvstun_crds::v1alpha1::VirtualService;
use lvstun_rules::{ClaimKey, ObjectKey, Outcome, claim_keys};

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
    fn node_names_are_dns_subdomains() {
        assert!(is_dns_subdomain("lb1"));
        assert!(is_dns_subdomain("ip-10-0-0-1.eu-west-1.compute.internal"));
        assert!(!is_dns_subdomain("LB1"));
        assert!(!is_dns_subdomain("lb_1"));
        assert!(!is_dns_subdomain("-lb1"));
        assert!(!is_dns_subdomain(""));
    }
}
