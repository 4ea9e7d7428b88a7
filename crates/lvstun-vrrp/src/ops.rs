//! The real [`VipOps`]: what becoming or leaving Master does to the kernel. This module does
//! I/O (rtnetlink, an `AF_PACKET` socket, IPVS generic netlink); the frame it sends is built by
//! a pure function ([`garp_frame`]) whose bytes are unit-tested.
//!
//! - VIP: `ip addr replace VIP/32 dev IF valid_lft L preferred_lft L` / `ip addr del ...`
//!   over rtnetlink. The add is RTM_NEWADDR with `NLM_F_CREATE | NLM_F_REPLACE` and an
//!   `IFA_CACHEINFO` lifetime ([`lifetime_attribute`], see `lifetime.rs`): the same request
//!   adds the VIP, renews its lifetime while Master, and takes over an address left without a
//!   lifetime (by an older lvstun or by hand). Both are idempotent: a replace never answers
//!   `EEXIST`, and `EADDRNOTAVAIL` on delete means "already gone" (the lifetime ran out, or a
//!   restarted daemon finds nothing left), never an error.
//! - Gratuitous ARP: an ARP request with sender = target = VIP from the interface's MAC to
//!   ff:ff:ff:ff:ff:ff (RFC 5227 §3 "ARP Announcement"; RFC 9568 §6.4.2 asks the new Master
//!   to broadcast one per VIP). lvstun does not use the VRRP virtual MAC (see
//!   `docs/adr/0002-vip-election.md`), so these announcements are what moves every neighbour
//!   cache and switch port to the new Master.
//! - IPVS connection sync: master daemon while Master, backup daemon otherwise, sync ID = VRID,
//!   on the VRRP interface (what keepalived's `lvs_sync_daemon` does), so a Backup holds the
//!   connection table when it takes over.
//!
//! No `unsafe` is needed for the packet socket: the link-layer address (`sockaddr_ll`) comes
//! from the kernel itself through `getifaddrs(3)` (its `AF_PACKET` entry for the interface
//! carries the ifindex and the MAC), and `nix` sends to it with a safe `sendto`.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{
    AddressFamily as SockFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike,
};

use crate::driver::VipOps;
use crate::error::{Errno, Error};
use crate::lifetime::VipLifetime;
use crate::rtnl::bounded;
use lvstun_ipvs::handle::{IpvsHandle, new_connection};
use lvstun_ipvs::model::{IfName, SyncDaemon, SyncRole as IpvsSyncRole};

/// EtherType of ARP (IEEE 802 numbers).
const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv4.
const ETH_P_IP: u16 = 0x0800;
/// The shortest Ethernet frame without its FCS: shorter frames are padded with zeros.
const ETH_MIN_FRAME: usize = 60;

/// The gratuitous ARP frame for `vip` from `mac`: Ethernet broadcast, ARP request (opcode 1)
/// with sender and target protocol address both the VIP and target hardware address zero
/// (RFC 5227 §3: an ARP Announcement is a request, so that every host processes it, and the
/// target hardware address is ignored). Padded to the Ethernet minimum of 60 bytes. Pure.
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; ETH_MIN_FRAME] {
    let mut f = [0u8; ETH_MIN_FRAME];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // ARP: hardware type Ethernet (1), protocol IPv4, lengths 6 and 4, opcode request (1).
    f[14..16].copy_from_slice(&1u16.to_be_bytes());
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    // Target hardware address stays zero (bytes 32..38).
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// The `IFA_CACHEINFO` attribute that gives an address `lifetime`: valid and preferred alike
/// (a preferred lifetime below the valid one would deprecate the address first, and source
/// address selection avoids deprecated addresses). The kernel reads only the two lifetimes of
/// it on RTM_NEWADDR; the time stamps are its own. Pure.
pub fn lifetime_attribute(lifetime: VipLifetime) -> AddressAttribute {
    let mut info = CacheInfo::default();
    info.ifa_valid = lifetime.secs();
    info.ifa_preferred = lifetime.secs();
    AddressAttribute::CacheInfo(info)
}

/// The interface as `getifaddrs(3)` reports it: the kernel-made `sockaddr_ll` (ifindex and
/// MAC) and its first IPv4 address.
#[derive(Debug, Clone)]
pub struct Interface {
    /// The interface name.
    pub name: String,
    /// Its link-layer address, as the kernel filled it (usable as a `sendto` destination).
    link: LinkAddr,
    /// Its first IPv4 address (the VRRP primary address), if any.
    pub primary_ip: Option<Ipv4Addr>,
    /// Up and running when it was looked up (`IFF_UP` and `IFF_RUNNING`).
    pub carrier: bool,
}

impl Interface {
    /// Looks the interface up in the calling thread's network namespace. Fails with `ENODEV`
    /// when it does not exist or has no link-layer address (not Ethernet-like).
    pub fn lookup(name: &str) -> io::Result<Interface> {
        let mut link = None;
        let mut primary_ip = None;
        let mut carrier = false;
        for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
            if ifa.interface_name != name {
                continue;
            }
            carrier = ifa
                .flags
                .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING);
            let Some(addr) = ifa.address else { continue };
            if let Some(ll) = addr.as_link_addr() {
                link.get_or_insert(*ll);
            } else if let Some(sin) = addr.as_sockaddr_in() {
                primary_ip.get_or_insert(sin.ip());
            }
        }
        let link = link
            .filter(|l| l.addr().is_some())
            .ok_or_else(|| io::Error::from_raw_os_error(nix::libc::ENODEV))?;
        Ok(Interface {
            name: name.to_owned(),
            link,
            primary_ip,
            carrier,
        })
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        u32::try_from(self.link.ifindex()).unwrap_or(0)
    }

    /// The interface's MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.link.addr().unwrap_or_default()
    }
}

/// Connection sync switching through [`IpvsHandle`].
struct Sync {
    ipvs: IpvsHandle,
    ifname: IfName,
    sync_id: u8,
}

impl Sync {
    /// Starts the daemon of `role`; one already running (`EEXIST`) is what was wanted.
    async fn start(&self, role: IpvsSyncRole) -> Result<(), Error> {
        let daemon = SyncDaemon::new(role, self.ifname.clone(), self.sync_id);
        match self.ipvs.start_sync_daemon(&daemon).await {
            Err(e) if e.errno() == Some(Errno::EEXIST) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Stops the daemon of `role`; none running (`ESRCH`, `stop_sync_thread` in
    /// `ip_vs_sync.c`) is what was wanted.
    async fn stop(&self, role: IpvsSyncRole) -> Result<(), Error> {
        match self.ipvs.stop_sync_daemon(role).await {
            Err(e) if e.errno() == Some(Errno::ESRCH) => Ok(()),
            other => Ok(other?),
        }
    }
}

/// The real side effects of one virtual router on one interface.
pub struct KernelOps {
    iface: Interface,
    rtnl: rtnetlink::Handle,
    packet: OwnedFd,
    sync: Option<Sync>,
}

/// This crate's error as the `io::Error` the [`VipOps`] seam speaks, keeping it whole (and its
/// errno) as the cause.
fn to_io(err: Error) -> io::Error {
    io::Error::other(err)
}

impl KernelOps {
    /// Opens what the side effects need: an rtnetlink connection (its task spawned on the
    /// current tokio runtime), an `AF_PACKET` socket, and with `sync_id`, an IPVS generic
    /// netlink connection (which also makes the kernel load `ip_vs` on demand). Changes
    /// nothing. Needs CAP_NET_ADMIN and CAP_NET_RAW; must run inside a tokio runtime and in
    /// the interface's network namespace.
    pub async fn open(iface: Interface, sync_id: Option<u8>) -> Result<KernelOps, Error> {
        let (connection, rtnl, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        // Protocol 0: this socket only sends; it receives nothing, so it needs no reading.
        let packet = nix::sys::socket::socket(
            SockFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        let sync = match sync_id {
            None => None,
            Some(sync_id) => {
                let (conn, handle) = new_connection()?;
                tokio::spawn(conn);
                Some(Sync {
                    ipvs: IpvsHandle::resolve(handle).await?,
                    ifname: IfName::new(&iface.name)?,
                    sync_id,
                })
            }
        };
        Ok(KernelOps {
            iface,
            rtnl,
            packet,
            sync,
        })
    }

    /// Adds `vip`, or renews it, for `lifetime` (create or replace: never `EEXIST`).
    async fn add(&self, vip: Ipv4Addr, lifetime: VipLifetime) -> Result<(), Error> {
        let op = format!(
            "add {vip}/32 on {} for {} s",
            self.iface.name,
            lifetime.secs()
        );
        let mut req = self
            .rtnl
            .address()
            .add(self.iface.index(), IpAddr::V4(vip), 32)
            .replace();
        req.message_mut()
            .attributes
            .push(lifetime_attribute(lifetime));
        bounded(&op, req.execute()).await
    }

    async fn del(&self, vip: Ipv4Addr) -> Result<(), Error> {
        let op = format!("delete {vip}/32 on {}", self.iface.name);
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = 32;
        msg.header.index = self.iface.index();
        msg.attributes = vec![
            AddressAttribute::Local(IpAddr::V4(vip)),
            AddressAttribute::Address(IpAddr::V4(vip)),
        ];
        match bounded(&op, self.rtnl.address().del(msg).execute()).await {
            Err(e) if e.errno() == Some(Errno::EADDRNOTAVAIL) => Ok(()),
            other => other,
        }
    }

    fn garp(&self, vip: Ipv4Addr) -> io::Result<()> {
        let frame = garp_frame(self.iface.mac(), vip);
        let link: &dyn SockaddrLike = &self.iface.link;
        nix::sys::socket::sendto(self.packet.as_raw_fd(), &frame, link, MsgFlags::empty())
            .map_err(io::Error::from)?;
        Ok(())
    }
}

impl VipOps for KernelOps {
    async fn add_vips(&mut self, vips: &[Ipv4Addr], lifetime: VipLifetime) -> io::Result<()> {
        for vip in vips {
            self.add(*vip, lifetime).await.map_err(to_io)?;
        }
        Ok(())
    }

    async fn refresh_vips(&mut self, vips: &[Ipv4Addr], lifetime: VipLifetime) -> io::Result<()> {
        // Every VIP is renewed even if one fails: one refused renewal must not let the
        // others run out.
        let mut first_err = None;
        for vip in vips {
            if let Err(e) = self.add(*vip, lifetime).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), |e| Err(to_io(e)))
    }

    async fn remove_vips(&mut self, vips: &[Ipv4Addr]) -> io::Result<()> {
        // Every VIP is tried even if one fails: a half-removed set is worse than a reported
        // error (the other node is taking them over).
        let mut first_err = None;
        for vip in vips {
            if let Err(e) = self.del(*vip).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), |e| Err(to_io(e)))
    }

    async fn send_garp(&mut self, vips: &[Ipv4Addr], count: u8) -> io::Result<()> {
        // A burst: one frame per VIP per round. A 60-byte send on a packet socket does not
        // block for any time that matters, so it is done inline.
        for _ in 0..count {
            for vip in vips {
                self.garp(*vip)?;
            }
        }
        Ok(())
    }

    async fn set_sync(&mut self, role: Option<IpvsSyncRole>) -> io::Result<()> {
        let Some(sync) = &self.sync else {
            return Ok(());
        };
        // Stop the other role before starting this one: only one of them is meant to run,
        // and a Backup that became Master must stop absorbing the old Master's table.
        let result = match role {
            Some(IpvsSyncRole::Master) => match sync.stop(IpvsSyncRole::Backup).await {
                Ok(()) => sync.start(IpvsSyncRole::Master).await,
                err => err,
            },
            Some(IpvsSyncRole::Backup) => match sync.stop(IpvsSyncRole::Master).await {
                Ok(()) => sync.start(IpvsSyncRole::Backup).await,
                err => err,
            },
            None => {
                let master = sync.stop(IpvsSyncRole::Master).await;
                let backup = sync.stop(IpvsSyncRole::Backup).await;
                master.and(backup)
            }
        };
        result.map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_bytes() {
        let mac = [0x02, 0x00, 0x00, 0x02, 0x00, 0x0b];
        let f = garp_frame(mac, Ipv4Addr::new(192, 0, 2, 100));
        #[rustfmt::skip]
        let want: [u8; 42] = [
            // Ethernet: broadcast, from us, ARP
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x00, 0x00, 0x02, 0x00, 0x0b,
            0x08, 0x06,
            // ARP: Ethernet, IPv4, 6, 4, request
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
            // sender: our MAC, the VIP
            0x02, 0x00, 0x00, 0x02, 0x00, 0x0b, 192, 0, 2, 100,
            // target: zero MAC, the VIP
            0, 0, 0, 0, 0, 0, 192, 0, 2, 100,
        ];
        assert_eq!(f[..42], want);
        assert_eq!(f.len(), 60);
        assert!(f[42..].iter().all(|b| *b == 0), "padding is zero");
    }

    #[test]
    fn the_lifetime_attribute_is_ifa_cacheinfo_with_equal_lifetimes() {
        use crate::fsm::AdverInterval;
        use rtnetlink::packet_core::Emitable;
        let lifetime =
            VipLifetime::for_router(AdverInterval::from_millis(100).unwrap().duration(), 3);
        let attr = lifetime_attribute(lifetime);
        let mut buf = vec![0u8; attr.buffer_len()];
        attr.emit(&mut buf);
        let mut want = 20u16.to_ne_bytes().to_vec(); // nla_len: 4 + 16
        want.extend_from_slice(&6u16.to_ne_bytes()); // IFA_CACHEINFO
        want.extend_from_slice(&2u32.to_ne_bytes()); // ifa_prefered: 2 s
        want.extend_from_slice(&2u32.to_ne_bytes()); // ifa_valid: 2 s
        want.extend_from_slice(&[0; 8]); // cstamp, tstamp: the kernel's, ignored on input
        assert_eq!(buf, want);
    }

    /// The real kernel (a scratch network namespace, a veth): a VIP added with the 100 ms
    /// adverts' lifetime (2 s) and renewed three times leaves by itself once the renewals
    /// stop, no sooner than the lifetime (less the kernel's 20 ms) and no later than
    /// [`VipLifetime::bound`]; `ip addr` shows it as `dynamic` with `valid_lft`, and still as
    /// ` VIP/32 `, which the lab's checks match. Skipped without root.
    #[test]
    fn a_vip_without_renewals_leaves_within_the_bound() {
        use std::process::Command;
        use std::time::{Duration, Instant};

        use crate::fsm::AdverInterval;
        if !nix::unistd::geteuid().is_root() {
            println!("SKIPPED a_vip_without_renewals_leaves_within_the_bound: needs root");
            return;
        }
        let ns = format!("lvttl{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        struct Gone(String);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &self.0])
                    .status();
            }
        }
        ip(&["netns", "add", &ns]);
        let _gone = Gone(ns.clone());
        ip(&[
            "-n", &ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ]);
        ip(&["-n", &ns, "link", "set", "v0", "up"]);
        let vip = Ipv4Addr::new(192, 0, 2, 100);
        let lifetime =
            VipLifetime::for_router(AdverInterval::from_millis(100).unwrap().duration(), 3);
        let path = format!("/var/run/netns/{ns}");
        let ns2 = ns.clone();
        let (shown, after_last) = std::thread::spawn(move || {
            let file = std::fs::File::open(path).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let iface = Interface::lookup("v0").unwrap();
                let mut ops = KernelOps::open(iface, None).await.unwrap();
                ops.add_vips(&[vip], lifetime).await.unwrap();
                ops.add_vips(&[vip], lifetime)
                    .await
                    .expect("a second add is a renewal");
                let shown = String::from_utf8_lossy(
                    &Command::new("ip")
                        .args(["-n", &ns2, "-4", "-o", "addr", "show", "dev", "v0"])
                        .output()
                        .unwrap()
                        .stdout,
                )
                .into_owned();
                for _ in 0..3 {
                    tokio::time::sleep(lifetime.refresh()).await;
                    ops.refresh_vips(&[vip], lifetime).await.unwrap();
                }
                let last = Instant::now();
                loop {
                    let out = Command::new("ip")
                        .args(["-n", &ns2, "-4", "-o", "addr", "show", "dev", "v0"])
                        .output()
                        .unwrap();
                    if !String::from_utf8_lossy(&out.stdout).contains(" 192.0.2.100/32 ") {
                        break;
                    }
                    assert!(last.elapsed() < lifetime.bound() + Duration::from_secs(1));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let after_last = last.elapsed();
                ops.remove_vips(&[vip])
                    .await
                    .expect("removing a VIP that ran out is no error");
                (shown, after_last)
            })
        })
        .join()
        .unwrap();
        println!("kernel: VIP gone {after_last:?} after its last renewal ({lifetime:?})");
        assert!(
            shown.contains(" 192.0.2.100/32 ")
                && shown.contains("dynamic")
                && shown.contains("valid_lft 2sec preferred_lft 2sec"),
            "{shown}"
        );
        assert!(
            after_last + Duration::from_millis(20) >= lifetime.duration(),
            "{after_last:?}"
        );
        assert!(after_last <= lifetime.bound(), "{after_last:?}");
    }

    #[test]
    fn lookup_of_a_missing_interface_is_enodev() {
        let err = Interface::lookup("lvstun-nosuch0").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ENODEV));
    }

    #[test]
    fn lookup_of_loopback_has_no_mac_to_announce_from() {
        // `lo` has an AF_PACKET entry with an all-zero 6-byte address; it is accepted (the
        // kernel made it), and the frame would come from 00:00:00:00:00:00.
        if let Ok(lo) = Interface::lookup("lo") {
            assert_eq!(lo.primary_ip, Some(Ipv4Addr::LOCALHOST));
            assert!(lo.index() > 0);
        }
    }
}
