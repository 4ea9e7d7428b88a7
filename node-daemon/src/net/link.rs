//! Network devices over rtnetlink: list them (with their IPv4 settings), find the interfaces of
//! the default routes, create lvstun's dummy VIP device, bring devices up or down, delete what
//! lvstun created, and make the kernel load `ipip` so that its fallback device `tunl0` exists.
//!
//! `tunl0` is never created nor deleted: the kernel makes it in every namespace when the `ipip`
//! module loads. Loading a module needs `CAP_SYS_MODULE`, which the daemon does not have, but
//! asking rtnetlink for a link of kind `ipip` makes the kernel load it on demand; such a link
//! with no endpoints collides with `tunl0` itself (EEXIST), which is the expected answer.

use std::net::Ipv4Addr;

use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteType};
use rtnetlink::{LinkDummy, LinkIpIp, LinkUnspec, RouteMessageBuilder};

use super::devconf::DevConf;
use super::{Host, bounded, collect};
use crate::error::{Errno, Error};

/// The kernel's fallback ipip device.
pub const TUNL0: &str = "tunl0";

/// The name of the short-lived ipip link used to make the kernel load `ipip`.
pub const IPIP_PROBE: &str = "lvstun-probe0";

/// What the web role needs to know about one network device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`dummy`, `ipip`, `veth`, ...); `None` for devices without one.
    pub kind: Option<String>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Does not do ARP (`IFF_NOARP`: dummy, tunnels, loopback).
    pub noarp: bool,
    /// The loopback device.
    pub loopback: bool,
    /// MTU in bytes.
    pub mtu: u32,
    /// The interface's own IPv4 settings, if it has an IPv4 block.
    pub devconf: Option<DevConf>,
}

impl Link {
    /// Reads a link dump message.
    pub fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            noarp: msg.header.flags.contains(LinkFlags::Noarp),
            loopback: msg.header.flags.contains(LinkFlags::Loopback),
            mtu: 0,
            devconf: DevConf::from_link(msg),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// What asking for an ipip link answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpipProbe {
    /// EEXIST: the module is loaded and `tunl0` exists (the expected answer).
    Exists,
    /// The link was made (so no fallback device collided: this namespace has no `tunl0`,
    /// e.g. `net.core.fb_tunnels_only_for_init_net` is set); it was deleted again.
    CreatedAndRemoved,
    /// The kernel refused: no ipip support (EOPNOTSUPP: module missing or not loadable).
    Refused(Errno),
}

/// Devices: reads and the few writes the web role makes.
#[allow(async_fn_in_trait)] // single-threaded runtime: no Send bound wanted
pub trait Links {
    /// Every device, with its IPv4 settings.
    async fn links(&mut self) -> Result<Vec<Link>, Error>;
    /// The output interfaces of IPv4 default routes in the main table.
    async fn default_route_interfaces(&mut self) -> Result<Vec<u32>, Error>;
    /// Creates a dummy device (`ip link add NAME type dummy`).
    async fn create_dummy(&mut self, name: &str) -> Result<(), Error>;
    /// Asks for an ipip link so that the kernel loads `ipip` (see [`IpipProbe`]).
    async fn probe_ipip(&mut self) -> Result<IpipProbe, Error>;
    /// `ip link set dev INDEX up|down`.
    async fn set_up(&mut self, index: u32, up: bool) -> Result<(), Error>;
    /// `ip link del dev INDEX`.
    async fn delete_link(&mut self, index: u32) -> Result<(), Error>;
}

impl Links for Host {
    async fn links(&mut self) -> Result<Vec<Link>, Error> {
        let msgs = collect("dump links", self.handle.link().get().execute()).await?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    async fn default_route_interfaces(&mut self) -> Result<Vec<u32>, Error> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes = collect("dump routes", self.handle.route().get(query).execute()).await?;
        let mut out = Vec::new();
        for route in routes {
            let h = &route.header;
            let main = route
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(h.table));
            if h.address_family != AddressFamily::Inet
                || h.destination_prefix_length != 0
                || h.kind != RouteType::Unicast
                || main != 254
            {
                continue;
            }
            for attr in &route.attributes {
                match attr {
                    RouteAttribute::Oif(index) => out.push(*index),
                    RouteAttribute::MultiPath(hops) => {
                        out.extend(hops.iter().map(|hop| hop.interface_index));
                    }
                    _ => {}
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    async fn create_dummy(&mut self, name: &str) -> Result<(), Error> {
        let req = self.handle.link().add(LinkDummy::new(name).build());
        bounded(&format!("create dummy device {name}"), req.execute()).await
    }

    async fn probe_ipip(&mut self) -> Result<IpipProbe, Error> {
        let req = self.handle.link().add(LinkIpIp::new(IPIP_PROBE).build());
        match bounded("create ipip link (loads the ipip module)", req.execute()).await {
            Ok(()) => {
                let found = collect(
                    "find the ipip probe link",
                    self.handle
                        .link()
                        .get()
                        .match_name(IPIP_PROBE.to_owned())
                        .execute(),
                )
                .await?;
                for msg in found {
                    self.delete_link(msg.header.index).await?;
                }
                Ok(IpipProbe::CreatedAndRemoved)
            }
            Err(e) if e.errno() == Some(Errno::EEXIST) => Ok(IpipProbe::Exists),
            Err(e) => match e.errno() {
                Some(errno) => Ok(IpipProbe::Refused(errno)),
                None => Err(e),
            },
        }
    }

    async fn set_up(&mut self, index: u32, up: bool) -> Result<(), Error> {
        let builder = LinkUnspec::new_with_index(index);
        let msg = if up { builder.up() } else { builder.down() }.build();
        let op = format!("set ifindex {index} {}", if up { "up" } else { "down" });
        bounded(&op, self.handle.link().change(msg).execute()).await
    }

    async fn delete_link(&mut self, index: u32) -> Result<(), Error> {
        let req = self.handle.link().del(index);
        bounded(&format!("delete ifindex {index}"), req.execute()).await
    }
}
