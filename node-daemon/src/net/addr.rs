//! IPv4 addresses over rtnetlink: list them, add and remove the VIPs (as /32) on lvstun's VIP
//! device. Equivalent to `ip -4 addr show`, `ip addr add VIP/32 dev DEV`, `ip addr del ...`.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

use super::{Host, bounded, collect};
use crate::error::Error;

/// One IPv4 address on one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Addr {
    /// Interface index.
    pub index: u32,
    /// The local address (`IFA_LOCAL`).
    pub address: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
}

/// Addresses: one dump and two writes.
#[allow(async_fn_in_trait)] // single-threaded runtime: no Send bound wanted
pub trait Addrs {
    /// Every IPv4 address of the namespace.
    async fn addrs(&mut self) -> Result<Vec<Addr>, Error>;
    /// `ip addr add ADDRESS/PREFIX dev INDEX`.
    async fn add_addr(&mut self, addr: Addr) -> Result<(), Error>;
    /// `ip addr del ADDRESS/PREFIX dev INDEX`.
    async fn del_addr(&mut self, addr: Addr) -> Result<(), Error>;
}

fn message(addr: Addr) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = addr.prefix_len;
    msg.header.index = addr.index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(addr.address)),
        AddressAttribute::Address(IpAddr::V4(addr.address)),
    ];
    msg
}

impl Addrs for Host {
    async fn addrs(&mut self) -> Result<Vec<Addr>, Error> {
        let msgs = collect("dump addresses", self.handle.address().get().execute()).await?;
        let mut out = Vec::new();
        for msg in msgs {
            if msg.header.family != AddressFamily::Inet {
                continue;
            }
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
            // point-to-point links and equal to it elsewhere.
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let address = local.or_else(|| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(address) = address {
                out.push(Addr {
                    index: msg.header.index,
                    address,
                    prefix_len: msg.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    async fn add_addr(&mut self, addr: Addr) -> Result<(), Error> {
        let op = format!(
            "add {}/{} on ifindex {}",
            addr.address, addr.prefix_len, addr.index
        );
        let req = self
            .handle
            .address()
            .add(addr.index, IpAddr::V4(addr.address), addr.prefix_len);
        bounded(&op, req.execute()).await
    }

    async fn del_addr(&mut self, addr: Addr) -> Result<(), Error> {
        let op = format!(
            "delete {}/{} on ifindex {}",
            addr.address, addr.prefix_len, addr.index
        );
        bounded(&op, self.handle.address().del(message(addr)).execute()).await
    }
}
