//! Schema helpers shared by the API types: the CEL rules and bounded schemas that more than one
//! field uses.
//!
//! The IPv4 check is a regular expression rather than CEL's `isIP()` so the same rule works on
//! every Kubernetes version the CRDs support, and its message can say what to write instead.
//! The same holds for the address-kind rule: CEL's `ip()` library (Kubernetes 1.31+) counts
//! 0.0.0.0/8 and 240.0.0.0/4 as global unicast, which they are not for a VIP.

use kube::core::{Message, Rule};
use schemars::{Schema, SchemaGenerator, json_schema};

/// A dotted-quad IPv4 address, each octet 0..255 without leading zeros. `[.]` instead of `\.`
/// keeps the pattern free of escapes inside the CEL string literal.
pub const IPV4_RE: &str = "^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])([.](25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$";

/// The first octets of the IPv4 ranges that can never be a VIP, a real server or a VRRP peer:
/// 0.0.0.0/8 (this network), 127.0.0.0/8 (loopback), 224.0.0.0/4 (multicast, VRRP's own group
/// included), 240.0.0.0/4 (reserved, and the broadcast address). 169.254.0.0/16 (link-local) is
/// checked apart: its second octet matters.
pub const NOT_UNICAST_RE: &str = "^(0|127|22[4-9]|23[0-9]|24[0-9]|25[0-5])[.]";

/// A node name as Kubernetes accepts it: a DNS-1123 subdomain (lower case, digits, `-` and `.`,
/// each label starting and ending with a letter or digit), at most 253 characters.
pub const NODE_NAME_RE: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A CEL rule refusing anything but an IPv4 address, naming the field and an example.
pub fn ipv4_rule(field: &str, example: &str) -> Rule {
    Rule::new(format!("self.matches('{IPV4_RE}')")).message(Message::Message(format!(
        "{field} must be an IPv4 address such as {example} (IPv6 is not supported yet)"
    )))
}

/// CEL: whether the IPv4 address `v` is of a kind that can never carry traffic to or from one
/// host (see [`NOT_UNICAST_RE`]).
fn not_unicast(v: &str) -> String {
    format!("({v}.matches('{NOT_UNICAST_RE}') || {v}.startsWith('169.254.'))")
}

/// CEL: what kind of non-unicast address `v` is, for the message.
fn address_kind(v: &str) -> String {
    format!(
        "({v}.startsWith('127.') ? 'a loopback address' : {v}.startsWith('169.254.') ? 'a link-local address' : {v}.startsWith('0.') ? 'in 0.0.0.0/8 (this network)' : {v} == '255.255.255.255' ? 'the broadcast address' : {v}.matches('^2(2[4-9]|3[0-9])[.]') ? 'a multicast address' : 'in the reserved range 240.0.0.0/4')"
    )
}

/// A CEL rule refusing loopback, link-local, multicast, broadcast, reserved and this-network
/// addresses in an IPv4 field, with a message that names the field, the value, its kind and
/// what to write instead. A value that is not an IPv4 address at all is left to [`ipv4_rule`].
pub fn unicast_rule(field: &str, what: &str, example: &str) -> Rule {
    Rule::new(format!(
        "!self.matches('{IPV4_RE}') || !{}",
        not_unicast("self")
    ))
    .message(Message::Expression(format!(
        "'{field} ' + self + ' is ' + {} + ': {what} must be a unicast address, such as {example}'",
        address_kind("self")
    )))
}

/// The list form of [`unicast_rule`]: every entry of a list of IPv4 addresses. The message is
/// fixed: a message expression that names the bad entries costs more than the API server's
/// budget allows.
pub fn unicast_list_rule(field: &str, what: &str, example: &str) -> Rule {
    Rule::new(format!("self.all(a, !{})", not_unicast("a"))).message(Message::Message(format!(
        "{field}: {what} must be unicast addresses, not loopback, link-local, multicast, broadcast, reserved or in 0.0.0.0/8, such as {example}"
    )))
}

/// A CEL rule refusing a string that is not a node name ([`NODE_NAME_RE`]).
pub fn node_name_rule(field: &str) -> Rule {
    Rule::new(format!("self.matches('{NODE_NAME_RE}')")).message(Message::Expression(format!(
        "'{field} ' + self + ' cannot be a node name: Kubernetes node names are lower case letters, digits, \\'-\\' and \\'.\\' (e.g. lb-1 or web1.example.com)'"
    )))
}

/// The schema of a label selector with the bounds Kubernetes itself enforces on labels (a key
/// is at most 253 + 1 + 63 characters, a value at most 63) and sizes no real selector needs to
/// exceed. The upstream `LabelSelector` schema has no bounds at all, so without these a
/// selector could carry a 200 kB value into every daemon's watch and every status fold.
pub fn label_selector(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A label query over a set of resources: matchLabels and matchExpressions are ANDed; an empty selector matches everything.",
        "type": "object",
        "properties": {
            "matchLabels": {
                "description": "{key: value} pairs; each is the same as a matchExpressions entry with operator In and that one value.",
                "type": "object",
                "maxProperties": 64,
                "additionalProperties": {"type": "string", "maxLength": 63},
                "x-kubernetes-validations": [{
                    "rule": "self.all(k, size(k) <= 317)",
                    "message": "label keys are at most 317 characters (a 253-character prefix, '/', and a 63-character name)"
                }]
            },
            "matchExpressions": {
                "description": "Label selector requirements, ANDed.",
                "type": "array",
                "maxItems": 32,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"description": "The label key the requirement applies to.", "type": "string", "maxLength": 317},
                        "operator": {"description": "In, NotIn, Exists or DoesNotExist.", "type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {
                            "description": "The values for In and NotIn; empty for Exists and DoesNotExist.",
                            "type": "array",
                            "maxItems": 64,
                            "items": {"type": "string", "maxLength": 63}
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{IPV4_RE, NODE_NAME_RE, NOT_UNICAST_RE};

    /// The API server evaluates the patterns with RE2; Rust's regex crate is not a dependency,
    /// so check the patterns' shape by hand against the cases that matter.
    #[test]
    fn patterns_have_no_backslashes_and_are_anchored() {
        for re in [IPV4_RE, NODE_NAME_RE, NOT_UNICAST_RE] {
            assert!(!re.contains('\\'), "{re}");
            assert!(re.starts_with('^'), "{re}");
        }
        assert!(IPV4_RE.ends_with('$') && NODE_NAME_RE.ends_with('$'));
    }
}
