//! Which objects a change makes the operator look at again: pure predicates over one changed
//! object and one candidate from the cache, which the controller's watch hooks run over their
//! caches (see `controller` for when each runs). Each takes what the operator remembers of the
//! previous state too, so that an object that *stopped* matching is revisited as well.
//!
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use lvstun_crds::v1alpha1::{RealServer, VirtualService};
use lvstun_rules::{ObjectKey, selects};

use crate::context::RsInputs;

/// A Node's labels changed from `before` to `after` (`None`: the node did not exist or is
/// gone): whether `vs` selected it as a balancer node before or after, so its election and
/// balancer list may have changed.
pub fn node_concerns(
    vs: &VirtualService,
    before: Option<&BTreeMap<String, String>>,
    after: Option<&BTreeMap<String, String>>,
) -> bool {
    let matches = |labels: Option<&BTreeMap<String, String>>| {
        labels.is_some_and(|l| selects(&vs.spec.balancers.node_selector, l))
    };
    matches(before) || matches(after)
}

/// A Node `node` came, went or changed its labels: whether `rs` names it, so whether a web
/// daemon runs for it may have changed.
pub fn node_concerns_real_server(rs: &RealServer, node: &str) -> bool {
    rs.spec.node_name.as_deref() == Some(node)
}

/// VirtualService `changed` has (or had) the VIPs `vips`: whether `peer` is another
/// VirtualService on one of them, whose conflict verdict may have changed.
pub fn shares_vip(peer: &VirtualService, changed: &ObjectKey, vips: &BTreeSet<String>) -> bool {
    vips.contains(&peer.spec.vip) && ObjectKey::of(&peer.metadata) != *changed
}

/// VirtualService `changed` has (or had) the VRIDs `vrids`: whether `peer` is another
/// VirtualService on one of them, whose VRID verdict may have changed.
pub fn shares_vrid(peer: &VirtualService, changed: &ObjectKey, vrids: &BTreeSet<i32>) -> bool {
    vrids.contains(&peer.spec.balancers.virtual_router_id)
        && ObjectKey::of(&peer.metadata) != *changed
}

/// RealServer `rs` (key `key`) changed: whether `vs` selects it now or selected it at its last
/// reconcile (`rs_inputs`, per VirtualService), so its counts and status may have changed.
pub fn real_server_concerns(
    vs: &VirtualService,
    key: &ObjectKey,
    rs: &RealServer,
    rs_inputs: &HashMap<ObjectKey, RsInputs>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = rs.metadata.labels.as_ref().unwrap_or(&empty);
    vs.metadata.namespace.as_deref() == Some(key.namespace.as_str())
        && (selects(&vs.spec.real_server_selector, labels)
            || rs_inputs
                .get(&ObjectKey::of(&vs.metadata))
                .is_some_and(|i| i.selected.contains(key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{labels, rs, vs, www};
    use lvstun_crds::v1alpha1::Protocol;

    type Labels = BTreeMap<String, String>;

    #[test]
    fn node_changes() {
        let balancer = labels(&[("lvstun.io/balancer", "true")]);
        let other = labels(&[("role", "web")]);
        // (case, before, after, does www's balancer selection care)
        let cases: [(&str, Option<&Labels>, Option<&Labels>, bool); 6] = [
            ("a balancer node comes", None, Some(&balancer), true),
            ("a balancer node goes", Some(&balancer), None, true),
            (
                "a node gains the label",
                Some(&other),
                Some(&balancer),
                true,
            ),
            (
                "a node loses the label",
                Some(&balancer),
                Some(&other),
                true,
            ),
            (
                "another node changes",
                Some(&other),
                Some(&labels(&[])),
                false,
            ),
            ("another node comes", None, Some(&other), false),
        ];
        for (case, before, after, want) in cases {
            assert_eq!(node_concerns(&www(), before, after), want, "{case}");
        }
        let mut on_node = rs("web1", "198.51.100.10");
        on_node.spec.node_name = Some("n1".into());
        let cases = [
            ("the node it names", &on_node, "n1", true),
            ("another node", &on_node, "n2", false),
            (
                "outside the cluster",
                &rs("web2", "198.51.100.11"),
                "n1",
                false,
            ),
        ];
        for (case, r, node, want) in cases {
            assert_eq!(node_concerns_real_server(r, node), want, "{case}");
        }
    }

    #[test]
    fn virtual_service_changes() {
        let changed = ObjectKey::new("ns", "www");
        let vips = BTreeSet::from(["192.0.2.100".to_string(), "192.0.2.9".to_string()]);
        let tcp = &[(80, Protocol::Tcp)];
        let cases = [
            (
                "a peer on the new VIP",
                vs("ns", "b", 1, "192.0.2.100", tcp),
                true,
            ),
            (
                "a peer on the old VIP",
                vs("other", "c", 1, "192.0.2.9", tcp),
                true,
            ),
            ("another VIP", vs("ns", "d", 1, "192.0.2.7", tcp), false),
            ("itself", vs("ns", "www", 1, "192.0.2.100", tcp), false),
        ];
        for (case, peer, want) in cases {
            assert_eq!(shares_vip(&peer, &changed, &vips), want, "{case}");
        }
    }

    #[test]
    fn real_server_changes() {
        let web1 = rs("web1", "198.51.100.10");
        let key = ObjectKey::new("ns", "web1");
        let mut unlabelled = web1.clone();
        unlabelled.metadata.labels = None;
        let mut other_ns = www();
        other_ns.metadata.namespace = Some("other".into());
        let remembered: HashMap<ObjectKey, RsInputs> = [(
            ObjectKey::new("ns", "www"),
            RsInputs {
                selected: BTreeSet::from([key.clone()]),
                ..Default::default()
            },
        )]
        .into();
        let cases = [
            ("selected now", &web1, HashMap::new(), www(), true),
            (
                "selected before only",
                &unlabelled,
                remembered.clone(),
                www(),
                true,
            ),
            ("neither", &unlabelled, HashMap::new(), www(), false),
            ("another namespace", &web1, remembered, other_ns, false),
        ];
        for (case, r, inputs, v, want) in cases {
            assert_eq!(real_server_concerns(&v, &key, r, &inputs), want, "{case}");
        }
    }
}
