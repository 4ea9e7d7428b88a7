//! Per-interface IPv4 settings (`net.ipv4.conf.IFACE.{rp_filter,arp_ignore,arp_announce}`)
//! read and written over rtnetlink, never by writing `/proc/sys`.
//!
//! Why netlink: a pod with host networking needs only `CAP_NET_ADMIN` for RTM_NEWLINK, whereas
//! writing `/proc/sys` needs it mounted writable (a privileged pod). The kernel reports every
//! interface's values in its link dump (IFLA_AF_SPEC -> AF_INET -> IFLA_INET_CONF, a flat array
//! of u32) and accepts changes as nested attributes (IFLA_INET_CONF -> {IPV4_DEVCONF_x: u32}).
//! netlink-packet-route's request form leaves out zero values (so it cannot set `rp_filter` back
//! to 0): the nested attribute is built here.
//!
//! The `all` values cannot be set this way (there is no interface to name); they are only read,
//! from `/proc/sys/net/ipv4/conf/all/` (a read needs no privilege). The kernel applies the
//! maximum of `all` and the interface's own value for all three settings.

use std::fmt;

use netlink_packet_core::{DefaultNla, Emitable, NLA_F_NESTED};
use netlink_packet_route::link::{AfSpecInet, AfSpecUnspec, LinkAttribute, LinkMessage};

use super::{Host, bounded};
use crate::error::Error;

/// `IFLA_INET_CONF` inside `IFLA_AF_SPEC/AF_INET` (include/uapi/linux/if_link.h).
const IFLA_INET_CONF: u16 = 1;

/// One of the three settings the web role manages.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Knob {
    /// Reverse-path filtering: 0 off, 1 strict, 2 loose.
    RpFilter,
    /// Which ARP requests to answer: 1 = only for addresses on the receiving interface.
    ArpIgnore,
    /// Which source address to put in ARP requests: 2 = the best local address for the target.
    ArpAnnounce,
}

impl Knob {
    /// Every knob, in a stable order.
    pub const ALL: [Knob; 3] = [Knob::RpFilter, Knob::ArpIgnore, Knob::ArpAnnounce];

    /// `IPV4_DEVCONF_*` from include/uapi/linux/ip.h (1-based attribute numbers).
    pub fn attribute(self) -> u16 {
        match self {
            Knob::RpFilter => 8,
            Knob::ArpAnnounce => 18,
            Knob::ArpIgnore => 19,
        }
    }

    /// The sysctl's last path component.
    pub fn name(self) -> &'static str {
        match self {
            Knob::RpFilter => "rp_filter",
            Knob::ArpIgnore => "arp_ignore",
            Knob::ArpAnnounce => "arp_announce",
        }
    }
}

impl fmt::Display for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The three values of one interface (or of `all`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DevConf {
    /// `rp_filter`.
    pub rp_filter: u32,
    /// `arp_ignore`.
    pub arp_ignore: u32,
    /// `arp_announce`.
    pub arp_announce: u32,
}

impl DevConf {
    /// The value of one knob.
    pub fn get(&self, knob: Knob) -> u32 {
        match knob {
            Knob::RpFilter => self.rp_filter,
            Knob::ArpIgnore => self.arp_ignore,
            Knob::ArpAnnounce => self.arp_announce,
        }
    }

    /// Sets one knob.
    pub fn set(&mut self, knob: Knob, value: u32) {
        match knob {
            Knob::RpFilter => self.rp_filter = value,
            Knob::ArpIgnore => self.arp_ignore = value,
            Knob::ArpAnnounce => self.arp_announce = value,
        }
    }

    /// Reads the values out of a link dump message, if it carries the IPv4 block (a link
    /// without IPv4 configuration, e.g. one that is being deleted, has none).
    pub fn from_link(msg: &LinkMessage) -> Option<DevConf> {
        msg.attributes.iter().find_map(|attr| match attr {
            LinkAttribute::AfSpecUnspec(specs) => specs.iter().find_map(|spec| match spec {
                AfSpecUnspec::Inet(inet) => inet.iter().find_map(|a| match a {
                    AfSpecInet::DevConf(c) => Some(DevConf {
                        rp_filter: u32::try_from(c.rp_filter).unwrap_or(0),
                        arp_ignore: u32::try_from(c.arp_ignore).unwrap_or(0),
                        arp_announce: u32::try_from(c.arp_announce).unwrap_or(0),
                    }),
                    _ => None,
                }),
                _ => None,
            }),
            _ => None,
        })
    }
}

/// Reading `all` and writing one interface's knob.
#[allow(async_fn_in_trait)] // single-threaded runtime: no Send bound wanted
pub trait DevConfs {
    /// The `net.ipv4.conf.all` values (read-only for lvstun).
    fn read_all(&mut self) -> Result<DevConf, Error>;
    /// Sets `net.ipv4.conf.<index>.<knob> = value` (one RTM_NEWLINK).
    async fn set_devconf(&mut self, index: u32, knob: Knob, value: u32) -> Result<(), Error>;
}

/// The RTM_NEWLINK message that sets one knob on one interface: IFLA_AF_SPEC -> AF_INET ->
/// IFLA_INET_CONF (nested) -> {attribute: u32 value}. Pure, so its bytes are unit-tested.
pub fn set_message(index: u32, knob: Knob, value: u32) -> LinkMessage {
    let entry = DefaultNla::new(knob.attribute(), value.to_ne_bytes().to_vec());
    let mut nested = vec![0u8; entry.buffer_len()];
    entry.emit(&mut nested);
    let conf = DefaultNla::new(IFLA_INET_CONF | NLA_F_NESTED, nested);
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes = vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
        AfSpecInet::Other(conf),
    ])])];
    msg
}

fn read_proc(knob: Knob) -> Result<u32, Error> {
    let path = format!("/proc/sys/net/ipv4/conf/all/{}", knob.name());
    let text = std::fs::read_to_string(&path).map_err(|e| Error::File {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    text.trim()
        .parse()
        .map_err(|_| Error::invalid("sysctl value", text.trim(), format!("in {path}")))
}

impl DevConfs for Host {
    fn read_all(&mut self) -> Result<DevConf, Error> {
        let mut all = DevConf::default();
        for knob in Knob::ALL {
            all.set(knob, read_proc(knob)?);
        }
        Ok(all)
    }

    async fn set_devconf(&mut self, index: u32, knob: Knob, value: u32) -> Result<(), Error> {
        let op = format!("set {knob}={value} on ifindex {index}");
        let req = self.handle.link().change(set_message(index, knob, value));
        bounded(&op, req.execute()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn set_message_nests_one_u32_under_inet_conf() {
        let msg = set_message(7, Knob::RpFilter, 0);
        assert_eq!(msg.header.index, 7);
        let LinkAttribute::AfSpecUnspec(spec) = &msg.attributes[0] else {
            panic!("{msg:?}")
        };
        let mut bytes = vec![0u8; spec[0].buffer_len()];
        spec[0].emit(&mut bytes);
        // AF_INET (2) { IFLA_INET_CONF|NESTED { RP_FILTER (8) = 0u32 } }: a zero is sent.
        let expected: Vec<u8> = [
            &[16u8, 0, 2, 0][..],
            &[12, 0, 0x01, 0x80],
            &[8, 0, 8, 0],
            &0u32.to_ne_bytes(),
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn knob_numbers_match_the_kernel() {
        assert_eq!(Knob::RpFilter.attribute(), 8);
        assert_eq!(Knob::ArpAnnounce.attribute(), 18);
        assert_eq!(Knob::ArpIgnore.attribute(), 19);
    }
}
