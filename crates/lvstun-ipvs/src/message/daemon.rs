//! Attributes inside `IPVS_CMD_ATTR_DAEMON` (`IPVS_DAEMON_ATTR_*`). No I/O.
//!
//! Wire types per the kernel's `ip_vs_daemon_policy`: state and sync ID
//! `u32`, interface name a NUL-terminated string of at most 15 bytes, max
//! length and port `u16` (host order), IPv4 group an `in_addr`, IPv6 group an
//! `in6_addr`, TTL `u8`.

use std::net::{Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, DefaultNla, Nla, NlaBuffer, Parseable, parse_ipv6, parse_string, parse_u8,
    parse_u16, parse_u32,
};

const IPVS_DAEMON_ATTR_STATE: u16 = 1;
const IPVS_DAEMON_ATTR_MCAST_IFN: u16 = 2;
const IPVS_DAEMON_ATTR_SYNC_ID: u16 = 3;
const IPVS_DAEMON_ATTR_SYNC_MAXLEN: u16 = 4;
const IPVS_DAEMON_ATTR_MCAST_GROUP: u16 = 5;
const IPVS_DAEMON_ATTR_MCAST_GROUP6: u16 = 6;
const IPVS_DAEMON_ATTR_MCAST_PORT: u16 = 7;
const IPVS_DAEMON_ATTR_MCAST_TTL: u16 = 8;

/// One sync-daemon attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonAttr {
    /// `IP_VS_STATE_MASTER` (1) or `IP_VS_STATE_BACKUP` (2).
    State(u32),
    /// Multicast interface name.
    McastIfn(String),
    /// Sync ID.
    SyncId(u32),
    /// Largest sync payload.
    SyncMaxLen(u16),
    /// IPv4 multicast group.
    McastGroup(Ipv4Addr),
    /// IPv6 multicast group.
    McastGroup6(Ipv6Addr),
    /// Multicast UDP port.
    McastPort(u16),
    /// Multicast TTL.
    McastTtl(u8),
    /// Anything else, kept as raw bytes.
    Other(DefaultNla),
}

impl Nla for DaemonAttr {
    fn value_len(&self) -> usize {
        match self {
            DaemonAttr::State(_) | DaemonAttr::SyncId(_) | DaemonAttr::McastGroup(_) => 4,
            DaemonAttr::McastIfn(s) => s.len() + 1,
            DaemonAttr::SyncMaxLen(_) | DaemonAttr::McastPort(_) => 2,
            DaemonAttr::McastGroup6(_) => 16,
            DaemonAttr::McastTtl(_) => 1,
            DaemonAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DaemonAttr::State(_) => IPVS_DAEMON_ATTR_STATE,
            DaemonAttr::McastIfn(_) => IPVS_DAEMON_ATTR_MCAST_IFN,
            DaemonAttr::SyncId(_) => IPVS_DAEMON_ATTR_SYNC_ID,
            DaemonAttr::SyncMaxLen(_) => IPVS_DAEMON_ATTR_SYNC_MAXLEN,
            DaemonAttr::McastGroup(_) => IPVS_DAEMON_ATTR_MCAST_GROUP,
            DaemonAttr::McastGroup6(_) => IPVS_DAEMON_ATTR_MCAST_GROUP6,
            DaemonAttr::McastPort(_) => IPVS_DAEMON_ATTR_MCAST_PORT,
            DaemonAttr::McastTtl(_) => IPVS_DAEMON_ATTR_MCAST_TTL,
            DaemonAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            DaemonAttr::State(v) | DaemonAttr::SyncId(v) => {
                buffer.copy_from_slice(&v.to_ne_bytes())
            }
            DaemonAttr::McastIfn(s) => {
                let (text, nul) = buffer.split_at_mut(s.len());
                text.copy_from_slice(s.as_bytes());
                nul.fill(0);
            }
            DaemonAttr::SyncMaxLen(v) | DaemonAttr::McastPort(v) => {
                buffer.copy_from_slice(&v.to_ne_bytes())
            }
            DaemonAttr::McastGroup(a) => buffer.copy_from_slice(&a.octets()),
            DaemonAttr::McastGroup6(a) => buffer.copy_from_slice(&a.octets()),
            DaemonAttr::McastTtl(v) => buffer.copy_from_slice(&[*v]),
            DaemonAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

fn parse_ipv4(value: &[u8]) -> Result<Ipv4Addr, DecodeError> {
    let octets: [u8; 4] = value
        .try_into()
        .map_err(|_| DecodeError::invalid_ip_address(value.len()))?;
    Ok(Ipv4Addr::from(octets))
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DaemonAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_DAEMON_ATTR_STATE => DaemonAttr::State(parse_u32(value)?),
            IPVS_DAEMON_ATTR_MCAST_IFN => DaemonAttr::McastIfn(parse_string(value)?),
            IPVS_DAEMON_ATTR_SYNC_ID => DaemonAttr::SyncId(parse_u32(value)?),
            IPVS_DAEMON_ATTR_SYNC_MAXLEN => DaemonAttr::SyncMaxLen(parse_u16(value)?),
            IPVS_DAEMON_ATTR_MCAST_GROUP => DaemonAttr::McastGroup(parse_ipv4(value)?),
            IPVS_DAEMON_ATTR_MCAST_GROUP6 => {
                DaemonAttr::McastGroup6(Ipv6Addr::from(parse_ipv6(value)?))
            }
            IPVS_DAEMON_ATTR_MCAST_PORT => DaemonAttr::McastPort(parse_u16(value)?),
            IPVS_DAEMON_ATTR_MCAST_TTL => DaemonAttr::McastTtl(parse_u8(value)?),
            _ => DaemonAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}
