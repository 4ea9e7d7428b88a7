//! `TunnelReady`: whether this host can take tunneled connections for its VIPs, with a reason
//! a person can act on when not. A pure function of what the objects say and what was read
//! back from the kernel after applying; no I/O.
//!
//! Standalone, the result is the exit status of `lvstun-node web check` and the answer of
//! `/readyz`; in a cluster the same value becomes the RealServer's `TunnelReady` condition
//! ([`Readiness::condition`]), applied by the web daemon with the field manager
//! `lvstun-node-web/<node>` (see `report`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use lvstun_crds::conditions::TUNNEL_READY;

use super::desired::{Desired, Observed, Problem, Served, VipDevice};
use crate::net::devconf::Knob;
use crate::net::link::TUNL0;

/// The prefix of the web daemon's field manager (server-side apply); the manager itself is
/// per node, `lvstun-node-web/<node>` (`report::field_manager`).
pub const FIELD_MANAGER: &str = "lvstun-node-web";

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// Ready to take tunneled traffic for every VIP this host serves.
    pub ready: bool,
    /// A CamelCase reason (the condition's `reason`).
    pub reason: &'static str,
    /// What a person reads.
    pub message: String,
}

impl Readiness {
    fn not(reason: &'static str, message: impl Into<String>) -> Readiness {
        Readiness {
            ready: false,
            reason,
            message: message.into(),
        }
    }

    /// The `TunnelReady` condition for the RealServer's status.
    pub fn condition(&self, generation: Option<i64>, now: Time) -> Condition {
        Condition {
            type_: TUNNEL_READY.to_owned(),
            status: if self.ready { "True" } else { "False" }.to_owned(),
            reason: self.reason.to_owned(),
            message: self.message.clone(),
            observed_generation: generation,
            last_transition_time: now,
        }
    }
}

/// Judges the host. `apply_error` is the first failure of the last apply, if any: it is the
/// reason when the host otherwise looks ready, and is added to the message when it does not
/// (the state of the host names the root cause better than the failed operation does).
pub fn readiness(
    served: &Served,
    desired: &Desired,
    observed: &Observed,
    apply_error: Option<&str>,
) -> Readiness {
    let mut verdict = judge(served, desired, observed);
    match apply_error {
        Some(err) if verdict.ready => Readiness::not("ApplyFailed", err),
        Some(err) => {
            verdict.message = format!("{} (last apply: {err})", verdict.message);
            verdict
        }
        None => verdict,
    }
}

fn judge(served: &Served, desired: &Desired, observed: &Observed) -> Readiness {
    for problem in &served.problems {
        match problem {
            Problem::RealServerNotFound(_) => {
                return Readiness::not("RealServerNotFound", problem.to_string());
            }
            Problem::AmbiguousRealServer(_) => {
                return Readiness::not("AmbiguousRealServer", problem.to_string());
            }
            _ => {}
        }
    }
    if !desired.active() {
        if let Some(p) = served.problems.first() {
            return Readiness::not(reason_of(p), p.to_string());
        }
        if served.real_servers.is_empty() {
            // A labelled node no RealServer names (yet): idle and ready, so its pod reads Ready.
            return Readiness {
                ready: true,
                reason: "NoRealServer",
                message: "no RealServer names this node: nothing to prepare".into(),
            };
        }
        return Readiness {
            ready: true,
            reason: "NoVirtualService",
            message: "no VirtualService selects this real server: nothing to prepare".into(),
        };
    }
    let Some(tunl0) = observed.link(TUNL0) else {
        return Readiness::not(
            "IpipUnavailable",
            "ipip module missing: there is no tunl0 (the kernel refused or could not load ipip)",
        );
    };
    if !tunl0.up {
        return Readiness::not("Tunl0Down", "tunl0 is down");
    }
    let (all_rp, own_rp) = (
        observed.all.rp_filter,
        tunl0.devconf.map_or(0, |c| c.rp_filter),
    );
    let effective = all_rp.max(own_rp);
    if super::desired::tunl0_has_addr(desired, observed) {
        if effective == 1 {
            return Readiness::not(
                "RpFilterStrict",
                format!(
                    "rp_filter is strict on tunl0 (all={all_rp}, tunl0={own_rp}): decapsulated packets are dropped"
                ),
            );
        }
    } else if effective != 0 {
        let why = if all_rp != 0 {
            format!(
                "rp_filter all={all_rp}{} drops decapsulated packets: tunl0 has no address (the VIPs are on {}), \
                 and the kernel's reverse-path check drops packets on an address-less device unless rp_filter is 0; \
                 `all` cannot be set over netlink: set net.ipv4.conf.all.rp_filter=0, or run with --vip-device tunl0",
                if all_rp == 1 { " (strict)" } else { " (loose)" },
                desired.vip_device.name()
            )
        } else {
            format!("rp_filter on tunl0 is {own_rp}: decapsulated packets are dropped")
        };
        return Readiness::not("RpFilterDrops", why);
    }
    let dev = desired.vip_device.name();
    match observed.link(dev) {
        None => {
            return Readiness::not(
                "VipDeviceMissing",
                format!("VIP device {dev} does not exist"),
            );
        }
        Some(l) if !l.up => {
            return Readiness::not("VipDeviceDown", format!("VIP device {dev} is down"));
        }
        Some(_) => {}
    }
    let present = observed.addrs_of(dev);
    let missing: Vec<String> = desired
        .vips
        .iter()
        .filter(|v| !present.contains(v))
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        return Readiness::not(
            "VipMissing",
            format!("VIP(s) {} not on {dev}", missing.join(", ")),
        );
    }
    if desired.uplinks.is_empty() {
        return Readiness::not(
            "NoUplink",
            "no uplink found (no default route, and the RealServer's address is on no interface): use --uplink",
        );
    }
    for up in desired.uplinks.iter().map(String::as_str).chain([dev]) {
        let ignore = observed.effective(up, Knob::ArpIgnore).unwrap_or(0);
        let announce = observed.effective(up, Knob::ArpAnnounce).unwrap_or(0);
        if ignore < 1 || announce < 2 {
            return Readiness::not(
                "ArpNotSuppressed",
                format!(
                    "{up}: arp_ignore={ignore} arp_announce={announce} (need at least 1 and 2)"
                ),
            );
        }
    }
    match &observed.nft {
        Err(e) => return Readiness::not("NftUnavailable", e.clone()),
        Ok(state) => {
            if state.unknown
                || state.objects != crate::net::arp_guard::desired_objects(&desired.guard)
            {
                return Readiness::not(
                    "ArpGuardMissing",
                    "lvstun's nft tables (ARP guard, MSS clamp) are not as desired",
                );
            }
        }
    }
    if let Some(p) = served.problems.first() {
        return Readiness::not(reason_of(p), p.to_string());
    }
    let vips: Vec<String> = desired.vips.iter().map(ToString::to_string).collect();
    let on = match desired.vip_device {
        VipDevice::Tunl0 => "tunl0".to_owned(),
        VipDevice::Dummy(ref name) => name.clone(),
    };
    let rp_note = format!(" (rp_filter on tunl0: all={all_rp} tunl0={own_rp})");
    let mss = desired
        .mss
        .map_or("no MSS clamp".to_owned(), |m| format!("MSS clamped to {m}"));
    Readiness {
        ready: true,
        reason: "Ready",
        message: format!(
            "tunl0 up; {} on {on}; ARP for VIPs suppressed on {}; {mss}{rp_note}",
            vips.join(", "),
            desired.uplinks.join(", ")
        ),
    }
}

fn reason_of(problem: &Problem) -> &'static str {
    match problem {
        Problem::RealServerNotFound(_) => "RealServerNotFound",
        Problem::AmbiguousRealServer(_) => "AmbiguousRealServer",
        Problem::BadVip { .. } => "BadVip",
        Problem::UnsupportedTunnel { .. } => "UnsupportedTunnel",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn condition_carries_the_verdict() {
        let r = Readiness::not("RpFilterStrict", "m");
        let now = Time(Timestamp::from_second(10).unwrap());
        let c = r.condition(Some(3), now);
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("TunnelReady", "False", "RpFilterStrict")
        );
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(FIELD_MANAGER, "lvstun-node-web");
    }

    /// The web DaemonSet runs on every node with the web label (ADR 0007): on one that no
    /// RealServer names, the daemon holds nothing and its pod reads Ready.
    #[test]
    fn a_node_no_real_server_names_is_ready_and_idle() {
        use super::super::desired::{Options, desired};
        use crate::net::arp_guard::GuardState;
        use crate::net::devconf::DevConf;
        let served = Served::default();
        let observed = Observed {
            links: vec![],
            addrs: vec![],
            default_route_interfaces: vec![],
            all: DevConf::default(),
            nft: Ok(GuardState::default()),
        };
        let want = desired(&served, &Options::default(), &observed);
        assert!(!want.active(), "nothing to hold");
        let r = readiness(&served, &want, &observed, None);
        assert!(r.ready, "{r:?}");
        assert_eq!(r.reason, "NoRealServer");
    }
}
