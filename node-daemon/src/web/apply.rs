//! The web role's reconcile: observe the kernel, compute the desired state and the plan (pure,
//! in `desired` and `plan`), apply the plan's operations one by one through the seam traits,
//! and observe again, until nothing is left to do (at most [`MAX_ROUNDS`] rounds: a device
//! made in one round gets its settings in the next).
//!
//! Every operation that succeeds is recorded in the [`State`] and handed to `persist` at once,
//! so a crash in the middle never leaves a change lvstun would not know to undo. Errors are
//! decided by errno: EEXIST on an address add and EADDRNOTAVAIL on a delete mean the kernel is
//! already where the operation wanted it.

use crate::error::{Errno, Error};
use crate::net::Kernel;
use crate::net::addr::Addr;
use crate::net::link::IpipProbe;

use super::desired::{Desired, Observed, Options, Served, desired};
use super::ops::Op;
use super::plan::plan;
use super::state::State;
use super::status::{Readiness, readiness};

/// Rounds of observe/plan/apply before giving up on converging.
pub const MAX_ROUNDS: usize = 3;

/// EADDRNOTAVAIL: the address to delete is not there.
fn eaddrnotavail() -> Errno {
    Errno::from_code(99)
}

/// What one reconcile did and found.
#[derive(Debug)]
pub struct Outcome {
    /// Kernel writes sent (netlink requests and nft transactions), refused ones included.
    pub writes: usize,
    /// The operations, as `ip`/`sysctl`/`nft` would say them, in order.
    pub ops: Vec<String>,
    /// What failed.
    pub errors: Vec<String>,
    /// The desired state at the last observation.
    pub desired: Desired,
    /// The verdict.
    pub readiness: Readiness,
}

/// Reads everything the planner needs. Reads only.
pub async fn observe<K: Kernel>(kernel: &mut K) -> Result<Observed, Error> {
    let links = kernel.links().await?;
    let addrs = kernel.addrs().await?;
    let default_route_interfaces = kernel.default_route_interfaces().await?;
    let all = kernel.read_all()?;
    let nft = kernel.read_tables().await.map_err(|e| e.to_string());
    Ok(Observed {
        links,
        addrs,
        default_route_interfaces,
        all,
        nft,
    })
}

fn index(observed: &Observed, name: &str) -> Result<u32, Error> {
    observed
        .link(name)
        .map(|l| l.index)
        .ok_or_else(|| Error::invalid("device", name, "not found"))
}

async fn execute<K: Kernel>(
    kernel: &mut K,
    observed: &Observed,
    op: &Op,
    probe: &mut Option<IpipProbe>,
) -> Result<(), Error> {
    match op {
        Op::LoadIpip => {
            *probe = Some(kernel.probe_ipip().await?);
            Ok(())
        }
        Op::CreateDummy { name } => kernel.create_dummy(name).await,
        Op::SetUp { name, up } => kernel.set_up(index(observed, name)?, *up).await,
        Op::DeleteLink { name } => kernel.delete_link(index(observed, name)?).await,
        Op::SetConf {
            dev, knob, value, ..
        } => {
            kernel
                .set_devconf(index(observed, dev)?, *knob, *value)
                .await
        }
        Op::AddVip { dev, vip } => {
            let addr = Addr {
                index: index(observed, dev)?,
                address: *vip,
                prefix_len: 32,
            };
            match kernel.add_addr(addr).await {
                Err(e) if e.errno() == Some(Errno::EEXIST) => Ok(()),
                other => other,
            }
        }
        Op::DelVip { dev, vip } => {
            let addr = Addr {
                index: index(observed, dev)?,
                address: *vip,
                prefix_len: 32,
            };
            match kernel.del_addr(addr).await {
                Err(e) if e.errno() == Some(eaddrnotavail()) => Ok(()),
                other => other,
            }
        }
        Op::ReplaceGuard { objects } => {
            let current = observed.nft.as_ref().map_err(|e| Error::Nft {
                command: "nft".into(),
                detail: e.clone(),
            })?;
            let batch = crate::net::arp_guard::transaction(current, objects);
            kernel.run_transaction(&batch).await
        }
        Op::ForgetConf { .. } | Op::ForgetVip { .. } => Ok(()),
    }
}

/// Converges the host towards what `served` says, recording every change in `state` and
/// handing the state to `persist` after each one. With `dry_run`, plans without writing (the
/// `ops` are then what would be done).
pub async fn reconcile<K: Kernel>(
    kernel: &mut K,
    served: &Served,
    options: &Options,
    state: &mut State,
    dry_run: bool,
    persist: &mut dyn FnMut(&State) -> Result<(), Error>,
) -> Result<Outcome, Error> {
    let mut writes = 0;
    let mut done = Vec::new();
    let mut errors = Vec::new();
    let mut probe = None;
    let mut observed = observe(kernel).await?;
    let mut want = desired(served, options, &observed);
    for _ in 0..MAX_ROUNDS {
        let ops = plan(&want, &observed, state);
        if ops.is_empty() {
            break;
        }
        if dry_run {
            done.extend(ops.iter().map(ToString::to_string));
            break;
        }
        for op in &ops {
            if op.writes() {
                writes += 1;
            }
            match execute(kernel, &observed, op, &mut probe).await {
                Ok(()) => {
                    state.record(op);
                    if let Err(e) = persist(state) {
                        errors.push(format!("saving the state: {e}"));
                    }
                    done.push(op.to_string());
                }
                Err(e) => errors.push(format!("{op}: {e}")),
            }
        }
        observed = observe(kernel).await?;
        want = desired(served, options, &observed);
        if !errors.is_empty() {
            break;
        }
    }
    let mut verdict = readiness(served, &want, &observed, errors.first().map(String::as_str));
    if let (false, Some(IpipProbe::Refused(errno))) = (verdict.ready, probe) {
        verdict
            .message
            .push_str(&format!(" (an ipip link was refused with {errno})"));
    }
    Ok(Outcome {
        writes,
        ops: done,
        errors,
        desired: want,
        readiness: verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::devconf::Knob;
    use crate::net::fake::FakeKernel;
    use crate::source::config::parse;
    use crate::web::desired::{Identity, MssMode, VipDevice, served};
    use lvstun_crds::conditions::Reason;

    const CONFIG: &str = r#"
apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata: {name: www}
spec:
  vip: 192.0.2.100
  ports: [{port: 80}]
  realServerSelector: {matchLabels: {app: www}}
  balancers: {nodeSelector: {}, virtualRouterID: 51}
---
apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata: {name: web1, labels: {app: www}}
spec: {address: 198.51.100.10}
"#;

    fn web1() -> Served {
        served(
            &parse(CONFIG).unwrap(),
            &Identity::Name {
                namespace: None,
                name: "web1".into(),
            },
        )
    }

    fn gone() -> Served {
        let other = "apiVersion: lvstun.io/v1alpha1\nkind: RealServer\nmetadata: {name: web2}\nspec: {address: 198.51.100.130}\n";
        served(
            &parse(other).unwrap(),
            &Identity::Name {
                namespace: None,
                name: "web1".into(),
            },
        )
    }

    fn run(k: &mut FakeKernel, served: &Served, options: &Options, state: &mut State) -> Outcome {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(reconcile(k, served, options, state, false, &mut |_| Ok(())))
            .unwrap()
    }

    #[test]
    fn bare_host_becomes_ready_and_a_second_apply_writes_nothing() {
        let mut k = FakeKernel::new("198.51.100.10");
        let before = k.clone();
        let mut state = State::default();
        let options = Options::default();
        let first = run(&mut k, &web1(), &options, &mut state);
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert!(first.readiness.ready, "{:?}", first.readiness);
        assert!(first.writes > 0);
        assert_eq!(k.link("tunl0").map(|l| l.up), Some(true));
        let vips: Vec<_> = k
            .addrs_of("lvstun0")
            .iter()
            .map(|a| (a.address, a.prefix_len))
            .collect();
        assert_eq!(vips, vec![("192.0.2.100".parse().unwrap(), 32)]);
        assert_eq!(k.conf("eth0", Knob::ArpIgnore), Some(1));
        assert_eq!(k.conf("eth0", Knob::ArpAnnounce), Some(2));
        assert_eq!(k.conf("lvstun0", Knob::ArpIgnore), Some(1));
        assert_eq!(
            k.conf("tunl0", Knob::RpFilter),
            Some(0),
            "0 works: left alone"
        );
        assert!(
            first.readiness.message.contains("MSS clamped to 1440"),
            "{}",
            first.readiness.message
        );

        let writes_before = k.writes;
        let second = run(&mut k, &web1(), &options, &mut state);
        assert_eq!(second.writes, 0, "{:?}", second.ops);
        assert_eq!(k.writes, writes_before);
        assert!(second.readiness.ready);

        // The RealServer disappears: everything lvstun did is undone; tunl0 (the kernel's,
        // made when ipip loaded) stays, down as it was made.
        let third = run(&mut k, &gone(), &options, &mut state);
        assert!(third.errors.is_empty(), "{:?}", third.errors);
        assert!(state.is_empty(), "{state:?}");
        assert!(k.link("lvstun0").is_none());
        assert_eq!(k.link("tunl0").map(|l| l.up), Some(false));
        assert_eq!(k.nft, crate::net::arp_guard::GuardState::default());
        let mut after = k.clone();
        after.links.retain(|_, l| l.name != "tunl0");
        assert_eq!(after.links, before.links);
        assert_eq!(after.addrs, before.addrs);
        assert!(!third.readiness.ready && third.readiness.reason == Reason::RealServerNotFound);
    }

    /// `www` (192.0.2.100) and `api` (192.0.2.101) select node lb2's RealServer; the operator
    /// left it out of `www` (lb2 is one of www's balancer nodes), and of `api` too when
    /// `api_too`.
    fn on_balancer_node(api_too: bool) -> Served {
        let excluded = "status:\n  excludedRealServers:\n  - {name: lb2-web, node: lb2, reason: NodeIsBalancer}\n";
        let config = format!(
            "apiVersion: lvstun.io/v1alpha1\nkind: VirtualService\nmetadata: {{name: www}}\nspec:\n  vip: 192.0.2.100\n  ports: [{{port: 80}}]\n  realServerSelector: {{matchLabels: {{app: www}}}}\n  balancers: {{nodeSelector: {{}}, virtualRouterID: 51}}\n{excluded}---\n\
             apiVersion: lvstun.io/v1alpha1\nkind: VirtualService\nmetadata: {{name: api}}\nspec:\n  vip: 192.0.2.101\n  ports: [{{port: 443}}]\n  realServerSelector: {{matchLabels: {{app: www}}}}\n  balancers: {{nodeSelector: {{}}, virtualRouterID: 52}}\n{}---\n\
             apiVersion: lvstun.io/v1alpha1\nkind: RealServer\nmetadata: {{name: lb2-web, labels: {{app: www}}}}\nspec: {{address: 198.51.100.10, nodeName: lb2}}\n",
            if api_too { excluded } else { "" }
        );
        served(&parse(&config).unwrap(), &Identity::Node("lb2".into()))
    }

    #[test]
    fn a_virtual_service_that_leaves_this_real_server_out_is_not_held_here() {
        // Left out of www only: api's VIP is held and guarded, www's is not (the balancer on
        // this node must answer ARP for it as Master); ready, saying so.
        let mut k = FakeKernel::new("198.51.100.10");
        let mut state = State::default();
        let partial = on_balancer_node(false);
        assert_eq!(partial.left_out.len(), 1);
        let out = run(&mut k, &partial, &Options::default(), &mut state);
        assert!(out.readiness.ready, "{:?}", out.readiness);
        let held: Vec<String> = k
            .addrs_of("lvstun0")
            .iter()
            .map(|a| a.address.to_string())
            .collect();
        assert_eq!(held, ["192.0.2.101"]);
        assert_eq!(
            out.desired
                .guard
                .vips
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["192.0.2.101"],
            "no ARP guard for www's VIP"
        );
        assert!(
            out.readiness
                .message
                .contains("VirtualService default/www leaves it out (NodeIsBalancer)"),
            "{}",
            out.readiness.message
        );

        // Left out everywhere: nothing held, and TunnelReady says why.
        let out = run(
            &mut k,
            &on_balancer_node(true),
            &Options::default(),
            &mut state,
        );
        assert!(k.addrs_of("lvstun0").is_empty());
        assert!(!out.readiness.ready);
        assert_eq!(out.readiness.reason, Reason::NodeIsBalancer);
        assert!(
            out.readiness
                .message
                .contains("RealServer lb2-web is on node lb2"),
            "{}",
            out.readiness.message
        );
    }

    #[test]
    fn rp_filter_on_an_address_less_tunl0_must_be_off_and_all_is_reported() {
        // RHEL-like default: tunl0 is born strict. lvstun turns it off (the VIPs are on
        // lvstun0, so tunl0 has no address) and restores it after.
        let mut k = FakeKernel::new("198.51.100.10");
        k.default_conf.rp_filter = 1;
        let mut state = State::default();
        let out = run(&mut k, &web1(), &Options::default(), &mut state);
        assert!(out.readiness.ready, "{:?}", out.readiness);
        assert_eq!(k.conf("tunl0", Knob::RpFilter), Some(0));
        run(&mut k, &gone(), &Options::default(), &mut state);
        assert_eq!(k.conf("tunl0", Knob::RpFilter), Some(1));
        assert!(state.is_empty());

        // `all` strict: not settable over netlink; said plainly.
        let mut k = FakeKernel::new("198.51.100.10");
        k.all.rp_filter = 1;
        let out = run(&mut k, &web1(), &Options::default(), &mut State::default());
        assert_eq!(out.readiness.reason, Reason::RpFilterDrops);
        assert!(
            out.readiness
                .message
                .contains("net.ipv4.conf.all.rp_filter=1 (strict)"),
            "{}",
            out.readiness.message
        );

        // With the VIPs on tunl0 (it has an address), loose outranks all=1.
        let mut k = FakeKernel::new("198.51.100.10");
        k.all.rp_filter = 1;
        k.default_conf.rp_filter = 1;
        let options = Options {
            vip_device: VipDevice::Tunl0,
            ..Options::default()
        };
        let out = run(&mut k, &web1(), &options, &mut State::default());
        assert!(out.readiness.ready, "{:?}", out.readiness);
        assert_eq!(k.conf("tunl0", Knob::RpFilter), Some(2));
    }

    #[test]
    fn values_someone_set_before_are_kept_and_restored() {
        let mut k = FakeKernel::new("198.51.100.10");
        k.preset("eth0", Knob::ArpIgnore, 2); // stricter than needed: kept
        k.preset("eth0", Knob::ArpAnnounce, 1); // too weak: raised, later restored to 1
        let mut state = State::default();
        run(&mut k, &web1(), &Options::default(), &mut state);
        assert_eq!(k.conf("eth0", Knob::ArpIgnore), Some(2));
        assert_eq!(k.conf("eth0", Knob::ArpAnnounce), Some(2));
        run(&mut k, &gone(), &Options::default(), &mut state);
        assert_eq!(k.conf("eth0", Knob::ArpAnnounce), Some(1));
        assert_eq!(k.conf("eth0", Knob::ArpIgnore), Some(2));
    }

    #[test]
    fn tunl0_as_vip_device_keeps_foreign_addresses() {
        let mut k = FakeKernel::new("198.51.100.10");
        let tunl0 = k.add_link("tunl0", "ipip", true, true);
        let foreign: std::net::Ipv4Addr = "10.0.0.1".parse().unwrap();
        k.addrs.push(Addr {
            index: tunl0,
            address: foreign,
            prefix_len: 32,
        });
        let options = Options {
            vip_device: VipDevice::Tunl0,
            mss: MssMode::Fixed(1400),
            ..Options::default()
        };
        let mut state = State::default();
        let out = run(&mut k, &web1(), &options, &mut state);
        assert!(out.readiness.ready, "{:?}", out.readiness);
        assert_eq!(k.addrs_of("tunl0").len(), 2);
        assert!(!state.raised_links.contains("tunl0"), "it was up already");
        run(&mut k, &gone(), &options, &mut state);
        let left: Vec<_> = k.addrs_of("tunl0").iter().map(|a| a.address).collect();
        assert_eq!(left, vec![foreign]);
        assert_eq!(
            k.link("tunl0").map(|l| l.up),
            Some(true),
            "lvstun did not raise it"
        );
    }

    #[test]
    fn missing_ipip_and_missing_nft_are_reported_plainly() {
        let mut k = FakeKernel::new("198.51.100.10");
        k.ipip_available = false;
        let out = run(&mut k, &web1(), &Options::default(), &mut State::default());
        assert_eq!(out.readiness.reason, Reason::IpipUnavailable);
        assert!(out.readiness.message.contains("ipip module missing"));

        let mut k = FakeKernel::new("198.51.100.10");
        k.nft_installed = false;
        let out = run(&mut k, &web1(), &Options::default(), &mut State::default());
        assert_eq!(out.readiness.reason, Reason::NftUnavailable);
    }

    #[test]
    fn dry_run_writes_nothing() {
        let mut k = FakeKernel::new("198.51.100.10");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let out = rt
            .block_on(reconcile(
                &mut k,
                &web1(),
                &Options::default(),
                &mut State::default(),
                true,
                &mut |_| Ok(()),
            ))
            .unwrap();
        assert_eq!(k.writes, 0);
        assert!(!out.ops.is_empty());
        assert!(!out.readiness.ready);
    }
}
