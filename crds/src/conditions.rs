//! The condition vocabulary of lvstun's status, in one place: the condition types, statuses and
//! reasons written on VirtualServices and RealServers (by the operator and by the web daemon),
//! the Event reasons and types the operator publishes, and a typed condition ([`Cond`]). Each
//! enum's `as_str()` is the exact string the API shows and `ALL` lists its variants, so writers,
//! readers and the docs' drift test (`tests/tests/docs_guide.rs`) share one list. Also a pure
//! helper that updates a condition list the way `metav1.Condition` semantics require (transition
//! time moves only on a change of status), so writers never produce spurious status churn. No I/O.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub use crate::v1alpha1::KernelSettingRefusal;

/// Defines a string enum of the API's vocabulary: each variant with the exact string the API
/// shows, `as_str()`, `ALL` and `Display`, so no string is spelled twice.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The exact string the API shows.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The variant the API's string `text` names, for reading back what was written;
            /// `None` for a string lvstun does not write.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// The `type` of a condition lvstun writes.
    ConditionType {
        /// VirtualService: everything needed to serve traffic is in place.
        Ready => "Ready",
        /// VirtualService: exactly one balancer holds the VIP.
        VipActive => "VIPActive",
        /// VirtualService: serving, but some real servers are unhealthy or not tunnel-ready, or
        /// a balancer could not make a kernel setting lvstun wants (reason
        /// [`Reason::KernelSettingRefused`]).
        Degraded => "Degraded",
        /// VirtualService: another VirtualService already claims this VIP:port:protocol, or the
        /// VIP is an address the cluster already uses (a Node's, the `kubernetes` Service's).
        Conflict => "Conflict",
        /// VirtualService: its VIP lies in a `VIPPolicy` pool its namespace may use and its
        /// balancer node selector stays within the pool's (written only when the operator is
        /// told the VIPPolicy's name). `False` does not stop it serving (ADR 0011).
        InPool => "InPool",
        /// RealServer: passes health checks as seen by the active balancer.
        Healthy => "Healthy",
        /// RealServer: the web daemon on that host has prepared tunnel decapsulation and the
        /// VIPs.
        TunnelReady => "TunnelReady",
    }
}

impl ConditionType {
    /// The VirtualService conditions the operator writes, in the order it writes them.
    pub const VIRTUAL_SERVICE: [ConditionType; 4] = [
        ConditionType::Ready,
        ConditionType::VipActive,
        ConditionType::Degraded,
        ConditionType::Conflict,
    ];
}

vocabulary! {
    /// The `status` of a condition (`metav1.ConditionStatus`).
    CondStatus {
        /// The condition holds.
        True => "True",
        /// It does not.
        False => "False",
        /// Nobody can tell yet, or nothing is evaluated.
        Unknown => "Unknown",
    }
}

impl CondStatus {
    /// `True` or `False`, for conditions that are a plain yes or no.
    pub const fn of(holds: bool) -> Self {
        if holds {
            CondStatus::True
        } else {
            CondStatus::False
        }
    }
}

vocabulary! {
    /// The `reason` of a condition lvstun writes. Grouped by the condition that carries it; some
    /// reasons serve several (`Ready` repeats `VIPActive`'s when the VIP is not held).
    Reason {
        // VirtualService, any condition.
        /// The spec is invalid; `Ready` says why.
        InvalidSpec => "InvalidSpec",
        /// `Ready`, `VIPActive`, `Degraded`: another VirtualService owns the VIP:port:protocol.
        Conflict => "Conflict",
        // VirtualService `Conflict`.
        /// An older VirtualService serves the VIP:port:protocol.
        VipPortInUse => "VIPPortInUse",
        /// An older VirtualService runs the same VRID on a shared balancer node with another VIP
        /// or other election settings.
        VridInUse => "VRIDInUse",
        /// This VirtualService owns every VIP:port:protocol it lists.
        NoConflict => "NoConflict",
        /// `spec.vip` is the InternalIP or ExternalIP of a Node: not programmed anywhere. Also
        /// `Ready`'s and `VIPActive`'s reason through [`Reason::Conflict`]'s path.
        VipIsNodeAddress => "VIPIsNodeAddress",
        /// `spec.vip` is the ClusterIP of Service `default/kubernetes` (the API server as pods
        /// reach it): not programmed anywhere.
        VipIsKubernetesClusterIp => "VIPIsKubernetesClusterIP",
        // VirtualService `InPool`.
        /// The VIP lies in a pool the namespace may use, within the pool's nodes.
        InPool => "InPool",
        /// The VIP lies outside every pool the namespace may use, or the balancer node selector
        /// reaches outside the pool's: stored before the VIPPolicy changed, still served. Also
        /// the Warning Event's reason.
        OutsidePool => "OutsidePool",
        /// The VIPPolicy the operator was told to read does not exist.
        NoVipPolicy => "NoVIPPolicy",
        // VirtualService `VIPActive` (and `Ready` when the VIP is not held).
        /// `spec.balancers.nodeSelector` selects no node.
        NoBalancerNodes => "NoBalancerNodes",
        /// Every node a VirtualService selects lacks the balancer label, so no balancer daemon
        /// runs for it anywhere.
        NoBalancerDaemon => "NoBalancerDaemon",
        /// Exactly one balancer (or the newest of an overlap) holds the VIP.
        MasterElected => "MasterElected",
        /// No balancer holds the VIP.
        NoMaster => "NoMaster",
        /// Several balancers claim the VIP past the grace.
        SplitBrain => "SplitBrain",
        // VirtualService `Degraded` (and `Ready`).
        /// `spec.realServerSelector` selects no RealServer.
        NoRealServers => "NoRealServers",
        /// Some selected RealServers run on its balancer nodes and are left out (see
        /// [`Reason::NodeIsBalancer`]).
        RealServerOnBalancer => "RealServerOnBalancer",
        /// Some selected RealServers have the VIP as their `spec.address` and are left out (see
        /// [`Reason::AddressIsVip`]). Also the Event's reason.
        RealServerAtVip => "RealServerAtVIP",
        /// Some real servers are unhealthy or not tunnel-ready.
        RealServersUnhealthy => "RealServersUnhealthy",
        /// Every real server serves.
        AllHealthy => "AllHealthy",
        /// A balancer reports that IPVS services it had programmed were deleted by another
        /// program (`status.balancers[].deletedExternally`): kube-proxy in IPVS mode does that
        /// to every service whose address is not in its `ipvs.excludeCIDRs` (see
        /// [`crate::kube_proxy`]). Also the Warning Event's reason.
        IpvsServiceDeletedExternally => "IPVSServiceDeletedExternally",
        /// A balancer could not make a kernel setting lvstun wants. Also the Event's reason.
        KernelSettingRefused => "KernelSettingRefused",
        /// Some selected nodes lack the balancer label. Also the Event's reason.
        BalancerNodesUnlabelled => "BalancerNodesUnlabelled",
        // VirtualService `Ready`.
        /// The VIP is held but no real server serves.
        NoHealthyRealServers => "NoHealthyRealServers",
        /// The VIP is held and some real servers serve.
        Serving => "Serving",
        // RealServer `Healthy`.
        /// No VirtualService selects the RealServer.
        NotSelected => "NotSelected",
        /// A RealServer left out of a VirtualService because its `spec.address` is that
        /// VirtualService's VIP: in `status.excludedRealServers[]`, and in the RealServer's
        /// `Healthy=Unknown` when every VirtualService selecting it leaves it out.
        AddressIsVip => "AddressIsVIP",
        /// A RealServer left out of a VirtualService because its `spec.nodeName` is one of that
        /// VirtualService's balancer nodes (ADR 0009): in `status.excludedRealServers[]`, in
        /// the RealServer's `Healthy=Unknown` when every VirtualService selecting it leaves it
        /// out, and in the web daemon's `TunnelReady=False` when it holds no VIP because of it.
        NodeIsBalancer => "NodeIsBalancer",
        /// No balancer holds the VIP of a VirtualService that selects it.
        NoActiveBalancer => "NoActiveBalancer",
        /// An active balancer's health check fails.
        CheckFailed => "CheckFailed",
        /// An active balancer has not checked it yet.
        NotChecked => "NotChecked",
        /// Every active balancer's check passes.
        Passing => "Passing",
        // RealServer `TunnelReady`, written by the operator where no web daemon reports.
        /// `TunnelReady=Unknown` on a RealServer without `spec.nodeName`: no web daemon runs
        /// for a host outside the cluster, so nobody else could say anything, and an absent
        /// condition would read as "not reported yet" forever.
        OutsideCluster => "OutsideCluster",
        /// `TunnelReady=Unknown` on a RealServer whose `spec.nodeName` names a node that runs
        /// no web daemon (it lacks the chart's web label, or no such node exists): the
        /// condition its web daemon would write will never come, and the message says which
        /// label to add (ADR 0007). Released to the web daemon once the node runs one. Also the
        /// Event's reason.
        NoWebDaemon => "NoWebDaemon",
        // RealServer `TunnelReady`, written by the web daemon (`node-daemon/src/web/status.rs`).
        /// Ready to take tunneled traffic for every VIP this host serves.
        Ready => "Ready",
        /// The host looks ready but the last apply failed.
        ApplyFailed => "ApplyFailed",
        /// No RealServer matches this host.
        RealServerNotFound => "RealServerNotFound",
        /// Several RealServers match this host.
        AmbiguousRealServer => "AmbiguousRealServer",
        /// A VirtualService's VIP cannot be used.
        BadVip => "BadVip",
        /// A VirtualService asks for a tunnel type the web daemon does not support.
        UnsupportedTunnel => "UnsupportedTunnel",
        /// A labelled node no RealServer names: idle and ready.
        NoRealServer => "NoRealServer",
        /// No VirtualService selects this real server: idle and ready.
        NoVirtualService => "NoVirtualService",
        /// There is no `tunl0`: the kernel refused or could not load `ipip`.
        IpipUnavailable => "IpipUnavailable",
        /// `tunl0` is down.
        Tunl0Down => "Tunl0Down",
        /// The VIP device does not exist.
        VipDeviceMissing => "VipDeviceMissing",
        /// The VIP device is down.
        VipDeviceDown => "VipDeviceDown",
        /// Some VIPs are not on the VIP device.
        VipMissing => "VipMissing",
        /// No uplink was found.
        NoUplink => "NoUplink",
        /// ARP for the VIPs is not suppressed on an uplink or the VIP device.
        ArpNotSuppressed => "ArpNotSuppressed",
        /// nftables cannot be read or written.
        NftUnavailable => "NftUnavailable",
        /// lvstun's nft tables (ARP guard, MSS clamp) are not as desired.
        ArpGuardMissing => "ArpGuardMissing",
        /// The effective `rp_filter` of a `tunl0` with an address is strict.
        RpFilterStrict => "RpFilterStrict",
        /// `tunl0` has no address and its effective `rp_filter` is not 0.
        RpFilterDrops => "RpFilterDrops",
    }
}

vocabulary! {
    /// The `reason` of an Event the operator publishes on a transition (its reconcile errors
    /// use their `category()` instead).
    EventReason {
        /// Another node holds the VIP now.
        NewMaster => "NewMaster",
        /// No balancer holds the VIP any more.
        NoMaster => "NoMaster",
        /// Several balancers claim the VIP.
        SplitBrain => "SplitBrain",
        /// Another VirtualService owns the VIP:port:protocol.
        Conflict => "Conflict",
        /// This VirtualService owns its VIP and ports again.
        ConflictResolved => "ConflictResolved",
        /// The VirtualService became degraded (for a cause without an Event of its own).
        Degraded => "Degraded",
        /// The VirtualService is no longer degraded.
        Recovered => "Recovered",
        /// The spec became invalid.
        InvalidSpec => "InvalidSpec",
        /// A RealServer's health check started to fail.
        ServerDown => "ServerDown",
        /// A RealServer passes again.
        ServerUp => "ServerUp",
        /// See [`Reason::NoWebDaemon`].
        NoWebDaemon => "NoWebDaemon",
        /// See [`Reason::KernelSettingRefused`].
        KernelSettingRefused => "KernelSettingRefused",
        /// See [`Reason::BalancerNodesUnlabelled`].
        BalancerNodesUnlabelled => "BalancerNodesUnlabelled",
        /// See [`Reason::IpvsServiceDeletedExternally`].
        IpvsServiceDeletedExternally => "IPVSServiceDeletedExternally",
        /// See [`Reason::RealServerOnBalancer`].
        RealServerOnBalancer => "RealServerOnBalancer",
        /// See [`Reason::RealServerAtVip`].
        RealServerAtVip => "RealServerAtVIP",
        /// See [`Reason::OutsidePool`].
        OutsidePool => "OutsidePool",
        /// The VirtualService lies in a pool its namespace may use again.
        BackInPool => "BackInPool",
    }
}

vocabulary! {
    /// The `type` of an Event (Kubernetes' two).
    EventType {
        /// Worth knowing.
        Normal => "Normal",
        /// Needs a look.
        Warning => "Warning",
    }
}

/// Every string of lvstun's status and Event vocabulary: condition types, statuses and reasons,
/// Event reasons and types, and the kernel-setting refusals a balancer reports. For the docs'
/// drift test, which checks that each reason a page quotes is one of these.
pub fn vocabulary() -> impl Iterator<Item = &'static str> {
    let types = ConditionType::ALL.iter().map(|v| v.as_str());
    let statuses = CondStatus::ALL.iter().map(|v| v.as_str());
    let reasons = Reason::ALL.iter().map(|v| v.as_str());
    let events = EventReason::ALL.iter().map(|v| v.as_str());
    let event_types = EventType::ALL.iter().map(|v| v.as_str());
    let refusals = KernelSettingRefusal::ALL.iter().map(|v| v.as_str());
    types
        .chain(statuses)
        .chain(reasons)
        .chain(events)
        .chain(event_types)
        .chain(refusals)
}

/// A condition's content as the writer decides it, typed: the type, generation and time are
/// added when it is set ([`Cond::condition`]), so deciding stays apart from bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Whether it holds.
    pub status: CondStatus,
    /// Why, in one CamelCase word.
    pub reason: Reason,
    /// Why, for people.
    pub message: String,
}

impl Cond {
    /// A condition with this status, reason and message.
    pub fn new(status: CondStatus, reason: Reason, message: impl Into<String>) -> Self {
        Cond {
            status,
            reason,
            message: message.into(),
        }
    }

    /// The API's `metav1.Condition` of type `type_`, observed at `generation`, with `now` as its
    /// transition time ([`set_condition`] keeps the old one when the status did not change).
    pub fn condition(
        &self,
        type_: ConditionType,
        generation: Option<i64>,
        now: &Time,
    ) -> Condition {
        Condition {
            type_: type_.as_str().to_owned(),
            status: self.status.as_str().to_owned(),
            reason: self.reason.as_str().to_owned(),
            message: self.message.clone(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        }
    }
}

/// Why a node cannot be a balancer and a real server of the same VIP, and what to do, for a
/// RealServer `rs` on `node` (ADR 0009, [`Reason::NodeIsBalancer`]). Shared by the operator's conditions and the web
/// daemon's `TunnelReady`, so both say the same.
pub fn node_is_balancer_message(rs: &str, node: &str) -> String {
    format!(
        "RealServer {rs} is on node {node}, which spec.balancers.nodeSelector also selects as a balancer, \
         so it is left out of this VIP: its web role would hold the VIP with ARP suppressed and \
         keep {node} from answering ARP for it as Master, and {node}'s IPVS would schedule again \
         what the other balancers tunnel to it; fix: name another node in the RealServer's \
         spec.nodeName, or keep {node} out of spec.balancers.nodeSelector (a label only the \
         balancer nodes carry, or a NotIn expression)"
    )
}

/// Why a RealServer whose `spec.address` is the VIP of a VirtualService selecting it is left
/// out of that VirtualService, and what to do ([`Reason::AddressIsVip`]).
pub fn address_is_vip_message(rs: &str, vip: &str) -> String {
    format!(
        "RealServer {rs} has spec.address {vip}, which is this VirtualService's VIP, so it is left \
         out of this VIP (the other real servers keep serving): a balancer would tunnel the VIP's \
         traffic to the VIP itself; fix: set the RealServer's spec.address to the real server's \
         own address, which is never a VIP"
    )
}

/// Set the condition of type `type_` to `new` ([`set_condition`]), or remove it when `new` is
/// `None` (a condition that no longer applies). Returns whether anything visible changed.
pub fn set_or_remove_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    new: Option<Condition>,
) -> bool {
    match new {
        Some(new) => set_condition(conditions, new),
        None => {
            let before = conditions.len();
            conditions.retain(|c| c.type_ != type_);
            conditions.len() != before
        }
    }
}

/// Set `new` in `conditions`, keeping the old `lastTransitionTime` when the status did not
/// change. Returns whether anything visible changed (status, reason, message, generation), so
/// callers can skip a no-op status write.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            let changed = old.status != new.status
                || old.reason != new.reason
                || old.message != new.message
                || old.observed_generation != new.observed_generation;
            if !changed {
                return false;
            }
            let keep_time = old.status == new.status;
            let last_transition_time: Time = if keep_time {
                old.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            *old = Condition {
                last_transition_time,
                ..new
            };
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn cond(status: &str, reason: &str, secs: i64) -> Condition {
        Condition {
            type_: ConditionType::Ready.as_str().into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::from_second(secs).unwrap()),
        }
    }

    /// Within each enum every string is distinct and a CamelCase word, as the API's `reason`
    /// and `type` require (`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`).
    #[test]
    fn every_vocabulary_is_distinct_camel_case_words() {
        fn check(name: &str, words: Vec<&str>) {
            let unique: std::collections::BTreeSet<&str> = words.iter().copied().collect();
            assert_eq!(unique.len(), words.len(), "{name} spells a string twice");
            for w in words {
                assert!(
                    w.starts_with(|c: char| c.is_ascii_uppercase())
                        && w.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{name}: {w}"
                );
            }
        }
        check(
            "ConditionType",
            ConditionType::ALL.iter().map(|v| v.as_str()).collect(),
        );
        check(
            "CondStatus",
            CondStatus::ALL.iter().map(|v| v.as_str()).collect(),
        );
        check("Reason", Reason::ALL.iter().map(|v| v.as_str()).collect());
        check(
            "EventReason",
            EventReason::ALL.iter().map(|v| v.as_str()).collect(),
        );
        check(
            "EventType",
            EventType::ALL.iter().map(|v| v.as_str()).collect(),
        );
    }

    /// The strings the API has always shown, for the variants whose name differs from them.
    #[test]
    fn acronyms_keep_their_api_spelling() {
        for (got, want) in [
            (ConditionType::VipActive.as_str(), "VIPActive"),
            (Reason::VipPortInUse.as_str(), "VIPPortInUse"),
            (Reason::VridInUse.as_str(), "VRIDInUse"),
            (
                Reason::IpvsServiceDeletedExternally.as_str(),
                "IPVSServiceDeletedExternally",
            ),
            (
                EventReason::IpvsServiceDeletedExternally.as_str(),
                "IPVSServiceDeletedExternally",
            ),
        ] {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn parse_reads_back_what_as_str_writes() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        for t in ConditionType::ALL {
            assert_eq!(ConditionType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(ConditionType::parse("VipActive"), None);
        assert_eq!(Reason::parse(""), None);
    }

    #[test]
    fn vocabulary_holds_every_list() {
        let all: Vec<&str> = vocabulary().collect();
        for w in [
            "VIPActive",
            "Unknown",
            "SplitBrain",
            "ServerDown",
            "Warning",
            "ReadOnly",
        ] {
            assert!(all.contains(&w), "{w}");
        }
        assert_eq!(
            all.len(),
            ConditionType::ALL.len()
                + CondStatus::ALL.len()
                + Reason::ALL.len()
                + EventReason::ALL.len()
                + EventType::ALL.len()
                + KernelSettingRefusal::ALL.len()
        );
    }

    #[test]
    fn a_typed_condition_becomes_the_api_condition() {
        let c = Cond::new(CondStatus::Unknown, Reason::OutsideCluster, "m").condition(
            ConditionType::TunnelReady,
            Some(4),
            &Time(Timestamp::from_second(7).unwrap()),
        );
        assert_eq!(
            (
                c.type_.as_str(),
                c.status.as_str(),
                c.reason.as_str(),
                c.message.as_str()
            ),
            ("TunnelReady", "Unknown", "OutsideCluster", "m")
        );
        assert_eq!(c.observed_generation, Some(4));
        assert_eq!(
            c.last_transition_time,
            Time(Timestamp::from_second(7).unwrap())
        );
        assert_eq!(CondStatus::of(true), CondStatus::True);
        assert_eq!(CondStatus::of(false), CondStatus::False);
    }

    #[test]
    fn adds_missing_condition() {
        let mut list = vec![];
        assert!(set_condition(&mut list, cond("True", "Serving", 10)));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn same_status_and_reason_is_no_change() {
        let mut list = vec![cond("True", "Serving", 10)];
        assert!(!set_condition(&mut list, cond("True", "Serving", 20)));
        assert_eq!(
            list[0].last_transition_time,
            cond("True", "Serving", 10).last_transition_time
        );
    }

    #[test]
    fn reason_change_keeps_transition_time() {
        let mut list = vec![cond("True", "Serving", 10)];
        assert!(set_condition(&mut list, cond("True", "Other", 20)));
        assert_eq!(list[0].reason, "Other");
        assert_eq!(
            list[0].last_transition_time,
            cond("True", "x", 10).last_transition_time
        );
    }

    #[test]
    fn status_change_moves_transition_time() {
        let mut list = vec![cond("True", "Serving", 10)];
        assert!(set_condition(
            &mut list,
            cond("False", "NoHealthyServers", 20)
        ));
        assert_eq!(
            list[0].last_transition_time,
            cond("False", "x", 20).last_transition_time
        );
    }
}
