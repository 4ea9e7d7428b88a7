//! When two VirtualServices on one VRID cannot share it. A VRID is one VRRP virtual router on
//! the segment: every balancer that runs it must advertise the same VIPs (a receiver drops an
//! advertisement whose address list differs from its own, RFC 5798 §7.1) with the same
//! timers, or the balancers stop hearing each other and each one holds the VIP (a split
//! brain). So on nodes they share, a newer VirtualService that names a senior one's VRID with
//! another VIP or other election settings is refused at once, not left to fight.
//!
//! Pure: no I/O, no clock. Whether the two share a node is the caller's to know (the operator
//! from the Nodes, a balancer from itself).

use std::fmt;

use lvstun_crds::v1alpha1::{Balancers, VirtualService};

/// Whether two VirtualServices' election settings are the same (priorities included: they end
/// up in one router per node).
pub fn same_election(a: &Balancers, b: &Balancers) -> bool {
    a.virtual_router_id == b.virtual_router_id
        && a.advert_interval_milliseconds == b.advert_interval_milliseconds
        && a.preempt == b.preempt
        && a.preempt_delay_seconds == b.preempt_delay_seconds
        && a.missed_advertisements == b.missed_advertisements
        && a.interface == b.interface
        && a.unicast_peers == b.unicast_peers
        && a.priorities == b.priorities
}

/// Why a newer VirtualService cannot use a senior one's VRID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VridClash {
    /// The senior one holds another VIP on it.
    OtherVip(String),
    /// Same VIP, but other election settings (interval, preemption, peers, priorities...).
    OtherSettings,
}

impl fmt::Display for VridClash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OtherVip(vip) => write!(f, "it holds VIP {vip} on it"),
            Self::OtherSettings => write!(f, "its spec.balancers election settings differ"),
        }
    }
}

/// Whether `newer` clashes with `senior` on their VRID (`None`: other VRIDs, or the same VIP
/// and settings, which share one router). The caller decides seniority and node overlap.
pub fn vrid_clash(senior: &VirtualService, newer: &VirtualService) -> Option<VridClash> {
    let (a, b) = (&senior.spec.balancers, &newer.spec.balancers);
    if a.virtual_router_id != b.virtual_router_id {
        return None;
    }
    if senior.spec.vip != newer.spec.vip {
        return Some(VridClash::OtherVip(senior.spec.vip.clone()));
    }
    (!same_election(a, b)).then_some(VridClash::OtherSettings)
}
