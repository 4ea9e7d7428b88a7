//! The pure diff: from the desired state, what the kernel has and what lvstun recorded, the
//! minimal list of operations that converges the host. No I/O.
//!
//! Rules that keep lvstun to what it owns:
//! - only addresses lvstun added are removed; an address someone else put there is left;
//! - a sysctl is restored only while it still has the value lvstun set;
//! - only devices lvstun created are deleted; `tunl0` is only brought down if lvstun raised it;
//! - a device that will be deleted needs no address removal or sysctl restore first.
//!
//! Order (adds and removals may mix when VIPs change): links needed first (ipip, the dummy, up),
//! then address removals, then sysctls and the nft guard, then address additions (so a VIP is
//! never up before ARP for it is suppressed), then bring-downs and deletions.
//!
//! A device that does not exist yet (the dummy, `tunl0` before `ipip` loads) gets its settings
//! and addresses in the next round: the applier observes again after link changes.

use super::desired::{Desired, Observed, VipDevice, knob_target, tunl0_has_addr};
use super::ops::{Op, Record, Saved};
use super::state::State;
use crate::net::arp_guard::desired_objects;
use crate::net::devconf::Knob;
use crate::net::link::TUNL0;

/// The operations that take the host from `observed` (with lvstun's record `state`) to
/// `desired`. Empty when the host is converged.
pub fn plan(desired: &Desired, observed: &Observed, state: &State) -> Vec<Op> {
    let active = desired.active();
    let vip_dev = desired.vip_device.name().to_owned();
    // Devices lvstun will delete in this plan: no need to tidy them first.
    let doomed: Vec<String> = state
        .created_links
        .iter()
        .filter(|name| observed.link(name).is_some() && !(active && **name == vip_dev))
        .cloned()
        .collect();

    let mut links_up = Vec::new();
    let mut addr_dels = Vec::new();
    let mut confs = Vec::new();
    let mut guard = Vec::new();
    let mut addr_adds = Vec::new();
    let mut links_down = Vec::new();

    // --- devices ---------------------------------------------------------------------------
    match observed.link(TUNL0) {
        None if active => links_up.push(Op::LoadIpip),
        Some(t) if active && !t.up => links_up.push(Op::SetUp {
            name: TUNL0.into(),
            up: true,
        }),
        Some(t) if !active && t.up && state.raised_links.contains(TUNL0) => {
            links_down.push(Op::SetUp {
                name: TUNL0.into(),
                up: false,
            });
        }
        _ => {}
    }
    if active && let VipDevice::Dummy(name) = &desired.vip_device {
        match observed.link(name) {
            None => links_up.push(Op::CreateDummy { name: name.clone() }),
            Some(l) if !l.up => links_up.push(Op::SetUp {
                name: name.clone(),
                up: true,
            }),
            Some(_) => {}
        }
    }
    for name in &doomed {
        links_down.push(Op::DeleteLink { name: name.clone() });
    }

    // --- sysctls ---------------------------------------------------------------------------
    let targets = desired.knob_targets();
    let tunl0_addr = tunl0_has_addr(desired, observed);
    let mut keys: Vec<(String, Knob)> = targets
        .iter()
        .flat_map(|(dev, knobs)| knobs.iter().map(move |k| (dev.clone(), *k)))
        .collect();
    for (dev, knobs) in &state.devconf {
        keys.extend(knobs.keys().map(|k| (dev.clone(), *k)));
    }
    keys.sort();
    keys.dedup();
    for (dev, knob) in keys {
        if doomed.contains(&dev) {
            continue;
        }
        let Some(current) = observed
            .link(&dev)
            .and_then(|l| l.devconf)
            .map(|c| c.get(knob))
        else {
            continue; // not there (yet): next round, or forgotten with the device
        };
        let saved = state.saved(&dev, knob);
        let targeted = targets.get(&dev).is_some_and(|k| k.contains(&knob));
        if !targeted && saved.is_some_and(|s| current != s.set) {
            // Someone else changed it after lvstun did: theirs now.
            confs.push(Op::ForgetConf { dev, knob });
            continue;
        }
        let base = saved.map_or(current, |s| s.original);
        let want = if targeted {
            knob_target(knob, base, observed.all.get(knob), tunl0_addr)
        } else {
            base
        };
        let record = if want == base {
            Record::Forget
        } else {
            Record::Save(Saved {
                original: base,
                set: want,
            })
        };
        if current != want {
            confs.push(Op::SetConf {
                dev,
                knob,
                value: want,
                record,
            });
        } else if want == base && saved.is_some() {
            confs.push(Op::ForgetConf { dev, knob });
        } else if want != base
            && saved
                != Some(Saved {
                    original: base,
                    set: want,
                })
        {
            // Converged in the kernel but not in the record (cannot happen through this plan;
            // kept so the record never lies).
            confs.push(Op::SetConf {
                dev,
                knob,
                value: want,
                record,
            });
        }
    }

    // --- nft guard -------------------------------------------------------------------------
    if let Ok(current) = &observed.nft {
        let objects = desired_objects(&desired.guard);
        if current.unknown || current.objects != objects {
            guard.push(Op::ReplaceGuard { objects });
        }
    }

    // --- addresses -------------------------------------------------------------------------
    if active {
        let present = observed.addrs_of(&vip_dev);
        if observed.link(&vip_dev).is_some() {
            for vip in desired.vips.iter().filter(|v| !present.contains(v)) {
                addr_adds.push(Op::AddVip {
                    dev: vip_dev.clone(),
                    vip: *vip,
                });
            }
        }
    }
    for (dev, vips) in &state.addrs {
        if doomed.contains(dev) {
            continue;
        }
        let present = observed.addrs_of(dev);
        for vip in vips {
            let wanted = active && *dev == vip_dev && desired.vips.contains(vip);
            if !present.contains(vip) {
                if !wanted {
                    addr_dels.push(Op::ForgetVip {
                        dev: dev.clone(),
                        vip: *vip,
                    });
                }
            } else if !wanted {
                addr_dels.push(Op::DelVip {
                    dev: dev.clone(),
                    vip: *vip,
                });
            }
        }
    }

    let mut ops = links_up;
    ops.extend(addr_dels);
    ops.extend(confs);
    ops.extend(guard);
    ops.extend(addr_adds);
    ops.extend(links_down);
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::arp_guard::GuardState;
    use crate::net::devconf::DevConf;
    use crate::net::link::Link;
    use crate::web::desired::{Desired, Observed, VipDevice};

    fn link(index: u32, name: &str, up: bool, conf: DevConf) -> Link {
        Link {
            index,
            name: name.into(),
            kind: None,
            up,
            noarp: false,
            loopback: false,
            mtu: 1500,
            devconf: Some(conf),
        }
    }

    fn observed(links: Vec<Link>) -> Observed {
        Observed {
            links,
            addrs: vec![],
            default_route_interfaces: vec![2],
            all: DevConf::default(),
            nft: Ok(GuardState::default()),
        }
    }

    fn desired(vips: &[&str]) -> Desired {
        let vips: std::collections::BTreeSet<std::net::Ipv4Addr> =
            vips.iter().map(|v| v.parse().unwrap()).collect();
        Desired {
            guard: crate::net::arp_guard::GuardSpec {
                vips: vips.iter().map(|v| (*v, Some(1440))).collect(),
            },
            vips,
            vip_device: VipDevice::Dummy("lvstun0".into()),
            uplinks: vec!["eth0".into()],
            mss: Some(1440),
        }
    }

    #[test]
    fn first_round_on_a_bare_host_makes_the_devices_first() {
        let obs = observed(vec![link(2, "eth0", true, DevConf::default())]);
        let ops = plan(&desired(&["192.0.2.100"]), &obs, &State::default());
        assert_eq!(ops[0], Op::LoadIpip);
        assert_eq!(
            ops[1],
            Op::CreateDummy {
                name: "lvstun0".into()
            }
        );
        // eth0's ARP knobs and the guard now; the VIP waits for lvstun0 to exist.
        assert!(ops.iter().any(|o| matches!(o, Op::SetConf { dev, knob: Knob::ArpIgnore, value: 1, .. } if dev == "eth0")));
        assert!(ops.iter().any(|o| matches!(o, Op::ReplaceGuard { .. })));
        assert!(!ops.iter().any(|o| matches!(o, Op::AddVip { .. })));
    }

    #[test]
    fn nothing_desired_and_nothing_recorded_plans_nothing() {
        let obs = observed(vec![
            link(2, "eth0", true, DevConf::default()),
            link(
                3,
                "tunl0",
                true,
                DevConf {
                    rp_filter: 1,
                    ..DevConf::default()
                },
            ),
        ]);
        assert!(plan(&desired(&[]), &obs, &State::default()).is_empty());
    }

    #[test]
    fn a_knob_someone_else_changed_is_not_restored() {
        let obs = observed(vec![link(
            2,
            "eth0",
            true,
            DevConf {
                arp_ignore: 2,
                ..DevConf::default()
            },
        )]);
        let mut state = State::default();
        state.devconf.entry("eth0".into()).or_default().insert(
            Knob::ArpIgnore,
            Saved {
                original: 0,
                set: 1,
            },
        );
        let ops = plan(&desired(&[]), &obs, &state);
        assert_eq!(
            ops,
            vec![Op::ForgetConf {
                dev: "eth0".into(),
                knob: Knob::ArpIgnore
            }]
        );
    }
}
