//! Schema helpers shared by the API types: the CEL rules that more than one field uses.
//!
//! The IPv4 check is a regular expression rather than CEL's `isIP()` so the same rule works on
//! every Kubernetes version the CRDs support, and its message can say what to write instead.

use kube::core::{Message, Rule};

/// A dotted-quad IPv4 address, each octet 0..255 without leading zeros. `[.]` instead of `\.`
/// keeps the pattern free of escapes inside the CEL string literal.
pub const IPV4_RE: &str = "^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])([.](25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$";

/// A CEL rule refusing anything but an IPv4 address, naming the field and an example.
pub fn ipv4_rule(field: &str, example: &str) -> Rule {
    Rule::new(format!("self.matches('{IPV4_RE}')")).message(Message::Message(format!(
        "{field} must be an IPv4 address such as {example} (IPv6 is not supported yet)"
    )))
}

#[cfg(test)]
mod tests {
    use super::IPV4_RE;

    /// The API server evaluates the pattern with RE2; Rust's regex crate is not a dependency,
    /// so check the pattern's shape by hand against the cases that matter.
    #[test]
    fn pattern_has_no_backslashes_and_is_anchored() {
        assert!(!IPV4_RE.contains('\\'));
        assert!(IPV4_RE.starts_with('^') && IPV4_RE.ends_with('$'));
    }
}
