//! `TunnelReady`: whether this host can take tunneled connections for its VIPs, with a reason
//! a person can act on when not. A pure function of what the objects say and what was read
//! back from the kernel after applying; no I/O.
//!
//! Standalone, the result is the exit status of `lvstun-node web check` and the answer of
//! `/readyz`; in a cluster the same value becomes the RealServer's `TunnelReady` condition
//! ([`Readiness::condition`]), applied by the web daemon with the field manager
//! `lvstun-node-web/<node>` (see `report`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use lvstun_crds::conditions::{Cond, CondStatus, ConditionType, Reason, node_is_balancer_message};

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
    /// Why, in one word (the condition's `reason`).
    pub reason: Reason,
    /// What a person reads.
    pub message: String,
}

impl Readiness {
    fn not(reason: Reason, message: impl Into<String>) -> Readiness {
        Readiness {
            ready: false,
            reason,
            message: message.into(),
        }
    }

    /// The `TunnelReady` condition for the RealServer's status.
    pub fn condition(&self, generation: Option<i64>, now: Time) -> Condition {
        Cond::new(
            CondStatus::of(self.ready),
            self.reason,
            self.message.clone(),
        )
        .condition(ConditionType::TunnelReady, generation, &now)
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
        Some(err) if verdict.ready => Readiness::not(Reason::ApplyFailed, err),
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
                return Readiness::not(Reason::RealServerNotFound, problem.to_string());
            }
            Problem::AmbiguousRealServer(_) => {
                return Readiness::not(Reason::AmbiguousRealServer, problem.to_string());
            }
            _ => {}
        }
    }
    if !desired.active() {
        if let Some(p) = served.problems.first() {
            return Readiness::not(reason_of(p), p.to_string());
        }
        if let Some(message) = left_out_message(served) {
            // Every VirtualService selecting it leaves it out: nothing held, and it serves
            // nothing, which the condition must not hide.
            return Readiness::not(Reason::NodeIsBalancer, message);
        }
        if served.real_servers.is_empty() {
            // A labelled node no RealServer names (yet): idle and ready, so its pod reads Ready.
            return Readiness {
                ready: true,
                reason: Reason::NoRealServer,
                message: "no RealServer names this node: nothing to prepare".into(),
            };
        }
        return Readiness {
            ready: true,
            reason: Reason::NoVirtualService,
            message: "no VirtualService selects this real server: nothing to prepare".into(),
        };
    }
    let Some(tunl0) = observed.link(TUNL0) else {
        return Readiness::not(
            Reason::IpipUnavailable,
            "ipip module missing: there is no tunl0 (the kernel refused or could not load ipip)",
        );
    };
    if !tunl0.up {
        return Readiness::not(Reason::Tunl0Down, "tunl0 is down");
    }
    let (all_rp, own_rp) = (
        observed.all.rp_filter,
        tunl0.devconf.map_or(0, |c| c.rp_filter),
    );
    let has_addr = super::desired::tunl0_has_addr(desired, observed);
    if let Some(drops) = rp_filter_drops(all_rp, own_rp, has_addr, &desired.vip_device) {
        return drops;
    }
    let dev = desired.vip_device.name();
    match observed.link(dev) {
        None => {
            return Readiness::not(
                Reason::VipDeviceMissing,
                format!("VIP device {dev} does not exist"),
            );
        }
        Some(l) if !l.up => {
            return Readiness::not(Reason::VipDeviceDown, format!("VIP device {dev} is down"));
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
            Reason::VipMissing,
            format!("VIP(s) {} not on {dev}", missing.join(", ")),
        );
    }
    if desired.uplinks.is_empty() {
        return Readiness::not(
            Reason::NoUplink,
            "no uplink found (no default route, and the RealServer's address is on no interface): use --uplink",
        );
    }
    for up in desired.uplinks.iter().map(String::as_str).chain([dev]) {
        let ignore = observed.effective(up, Knob::ArpIgnore).unwrap_or(0);
        let announce = observed.effective(up, Knob::ArpAnnounce).unwrap_or(0);
        if ignore < 1 || announce < 2 {
            return Readiness::not(
                Reason::ArpNotSuppressed,
                format!(
                    "{up}: arp_ignore={ignore} arp_announce={announce} (need at least 1 and 2)"
                ),
            );
        }
    }
    match &observed.nft {
        Err(e) => return Readiness::not(Reason::NftUnavailable, e.clone()),
        Ok(state) => {
            if state.unknown
                || state.objects != crate::net::arp_guard::desired_objects(&desired.guard)
            {
                return Readiness::not(
                    Reason::ArpGuardMissing,
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
    let left_out = left_out_message(served).map_or(String::new(), |m| format!("; not here: {m}"));
    let mss = desired
        .mss
        .map_or("no MSS clamp".to_owned(), |m| format!("MSS clamped to {m}"));
    Readiness {
        ready: true,
        reason: Reason::Ready,
        message: format!(
            "tunl0 up; {} on {on}; ARP for VIPs suppressed on {}; {mss}{rp_note}{left_out}",
            vips.join(", "),
            desired.uplinks.join(", ")
        ),
    }
}

/// Whether reverse-path filtering drops decapsulated packets on `tunl0`, and if so the verdict
/// naming the sysctl, its value and what to set (see [`super::desired::knob_target`] for the
/// kernel's rules). `all`: `net.ipv4.conf.all.rp_filter`; `own`: `net.ipv4.conf.tunl0.rp_filter`
/// as read after applying; `has_addr`: whether `tunl0` has an address.
///
/// lvstun fixes what it can by itself (tunl0's own value) on every pass; what remains is `all`,
/// which rtnetlink cannot set (ADR 0003). With the VIPs on the dummy device and `all` at 1 or
/// 2 (CIS benchmarks ask for 1), no per-device value helps: the kernel drops every packet on an
/// address-less device when filtering is on at all. Two fixes, the first keeping the host's
/// filtering as strict as it is everywhere else: put the VIPs on `tunl0`, where lvstun's loose
/// value (2) on `tunl0` outranks `all=1`; or turn `all` off.
pub fn rp_filter_drops(
    all: u32,
    own: u32,
    has_addr: bool,
    vip_device: &VipDevice,
) -> Option<Readiness> {
    let effective = all.max(own);
    if has_addr {
        return (effective == 1).then(|| {
            Readiness::not(
                Reason::RpFilterStrict,
                format!(
                    "net.ipv4.conf.tunl0.rp_filter is effectively 1 (strict; all={all}, tunl0={own}): decapsulated packets are dropped; \
                     lvstun sets net.ipv4.conf.tunl0.rp_filter=2 (loose) on its next pass, so if this stays, something on the host keeps resetting it"
                ),
            )
        });
    }
    if effective == 0 {
        return None;
    }
    let message = if all != 0 {
        let mode = if all == 1 { "strict" } else { "loose" };
        format!(
            "net.ipv4.conf.all.rp_filter={all} ({mode}) drops every decapsulated packet: tunl0 has no address (the VIPs are on {dev}), \
             and the kernel drops packets arriving on an address-less device unless rp_filter is 0 there (all=2 does not help either); \
             lvstun cannot set `all` (netlink sets per-device values only); fix one of: \
             put the VIPs on tunl0 (chart value web.vipDevice=tunl0; standalone: --vip-device tunl0), where lvstun sets \
             net.ipv4.conf.tunl0.rp_filter=2 (loose), which works beside all={all} and leaves every other interface as it is; \
             or set net.ipv4.conf.all.rp_filter=0 on the host (sysctl -w, and a file in /etc/sysctl.d/)",
            dev = vip_device.name()
        )
    } else {
        format!(
            "net.ipv4.conf.tunl0.rp_filter={own} drops decapsulated packets (tunl0 has no address, so it must be 0); \
             lvstun sets it to 0 on its next pass, so if this stays, something on the host keeps resetting it"
        )
    };
    Some(Readiness::not(Reason::RpFilterDrops, message))
}

/// The VirtualServices that leave this host's RealServer out (its node is one of their
/// balancer nodes), for people; `None` when none does.
fn left_out_message(served: &Served) -> Option<String> {
    if served.left_out.is_empty() {
        return None;
    }
    let parts: Vec<String> = served
        .left_out
        .iter()
        .map(|(vs, rs, node)| {
            format!(
                "VirtualService {vs} leaves it out ({}): {}",
                Reason::NodeIsBalancer,
                node_is_balancer_message(rs, node)
            )
        })
        .collect();
    Some(parts.join("; "))
}

fn reason_of(problem: &Problem) -> Reason {
    match problem {
        Problem::RealServerNotFound(_) => Reason::RealServerNotFound,
        Problem::AmbiguousRealServer(_) => Reason::AmbiguousRealServer,
        Problem::BadVip { .. } => Reason::BadVip,
        Problem::UnsupportedTunnel { .. } => Reason::UnsupportedTunnel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn condition_carries_the_verdict() {
        let r = Readiness::not(Reason::RpFilterStrict, "m");
        let now = Time(Timestamp::from_second(10).unwrap());
        let c = r.condition(Some(3), now);
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("TunnelReady", "False", "RpFilterStrict")
        );
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(FIELD_MANAGER, "lvstun-node-web");
    }

    #[test]
    fn rp_filter_verdicts_name_the_sysctl_its_value_and_the_fix() {
        let dummy = VipDevice::Dummy("lvstun0".into());
        // (all, tunl0, tunl0 has an address) -> reason, or None when packets pass.
        let cases: [(u32, u32, bool, Option<Reason>); 10] = [
            (0, 0, false, None),
            (0, 1, false, Some(Reason::RpFilterDrops)),
            (1, 0, false, Some(Reason::RpFilterDrops)),
            (2, 0, false, Some(Reason::RpFilterDrops)),
            (0, 0, true, None),
            (1, 2, true, None),
            (2, 0, true, None),
            (2, 1, true, None),
            (1, 0, true, Some(Reason::RpFilterStrict)),
            (0, 1, true, Some(Reason::RpFilterStrict)),
        ];
        for (all, own, has_addr, want) in cases {
            let got = rp_filter_drops(all, own, has_addr, &dummy);
            assert_eq!(
                got.as_ref().map(|r| r.reason),
                want,
                "all={all} tunl0={own} addr={has_addr}: {got:?}"
            );
            assert!(got.is_none_or(|r| !r.ready));
        }
        // The CIS case: the message names the sysctl, its value, and both fixes with values.
        let cis = rp_filter_drops(1, 0, false, &dummy).unwrap();
        for part in [
            "net.ipv4.conf.all.rp_filter=1 (strict)",
            "on lvstun0",
            "web.vipDevice=tunl0",
            "--vip-device tunl0",
            "net.ipv4.conf.tunl0.rp_filter=2",
            "net.ipv4.conf.all.rp_filter=0",
        ] {
            assert!(cis.message.contains(part), "{part}: {}", cis.message);
        }
        let own = rp_filter_drops(0, 1, false, &dummy).unwrap();
        assert!(
            own.message.contains("net.ipv4.conf.tunl0.rp_filter=1"),
            "{}",
            own.message
        );
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
        assert_eq!(r.reason, Reason::NoRealServer);
    }
}
