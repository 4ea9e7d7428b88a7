//! Attributes inside `IPVS_CMD_ATTR_SERVICE` (`IPVS_SVC_ATTR_*`). No I/O.
//!
//! Wire types per the kernel's `ip_vs_svc_policy`: AF and protocol `u16`
//! (host order), address a 16-byte `union nf_inet_addr`, port `__be16`,
//! fwmark `u32`, scheduler a NUL-terminated string of at most 15 bytes, flags
//! a `struct ip_vs_flags {flags, mask}`, timeout `u32` seconds, netmask a
//! `__be32`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, Parseable, parse_string, parse_u16,
    parse_u16_be, parse_u32,
};

use super::parse_nest;
use super::stats::StatsAttr;
use crate::model::AddressFamily;

const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;
const IPVS_SVC_ATTR_STATS: u16 = 10;
const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
const IPVS_SVC_ATTR_STATS64: u16 = 12;

/// A `union nf_inet_addr`: 16 bytes, an IPv4 address in the first four and
/// zeros after. Which one it holds is said by a sibling AF attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InetAddr(pub [u8; 16]);

impl InetAddr {
    /// Lays an address out as the kernel's union.
    pub fn from_ip(addr: IpAddr) -> InetAddr {
        let mut raw = [0u8; 16];
        match addr {
            IpAddr::V4(a) => raw[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => raw = a.octets(),
        }
        InetAddr(raw)
    }

    /// Reads the union as an address of `family`.
    pub fn to_ip(self, family: AddressFamily) -> IpAddr {
        match family {
            AddressFamily::Inet => {
                IpAddr::V4(Ipv4Addr::new(self.0[0], self.0[1], self.0[2], self.0[3]))
            }
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::from(self.0)),
        }
    }

    /// Parses an attribute value of up to 16 bytes, as the kernel's
    /// `nla_memcpy` would.
    pub(crate) fn parse(value: &[u8]) -> Result<InetAddr, DecodeError> {
        if value.len() > 16 {
            return Err(DecodeError::invalid_ip_address(value.len()));
        }
        let mut raw = [0u8; 16];
        raw[..value.len()].copy_from_slice(value);
        Ok(InetAddr(raw))
    }
}

/// A `struct ip_vs_flags`: the kernel sets `(old & !mask) | (flags & mask)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlagsMask {
    /// The flag bits.
    pub flags: u32,
    /// Which bits to change.
    pub mask: u32,
}

/// One service attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceAttr {
    /// Address family (`AF_INET`/`AF_INET6`).
    AddressFamily(u16),
    /// IP protocol number.
    Protocol(u16),
    /// Virtual address.
    Address(InetAddr),
    /// Virtual port, host order here (big-endian on the wire).
    Port(u16),
    /// Firewall mark.
    Fwmark(u32),
    /// Scheduler name.
    SchedName(String),
    /// Service flags and mask.
    Flags(FlagsMask),
    /// Persistence timeout, seconds.
    Timeout(u32),
    /// Persistence netmask, raw `__be32` bytes (see `model::netmask_from_wire`).
    Netmask([u8; 4]),
    /// 32-bit stats nest (read-only).
    Stats(Vec<StatsAttr>),
    /// Persistence engine name (e.g. `sip`).
    PeName(String),
    /// 64-bit stats nest (read-only).
    Stats64(Vec<StatsAttr>),
    /// Anything else, kept as raw bytes.
    Other(DefaultNla),
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        match self {
            ServiceAttr::AddressFamily(_) | ServiceAttr::Protocol(_) | ServiceAttr::Port(_) => 2,
            ServiceAttr::Address(_) => 16,
            ServiceAttr::Fwmark(_) | ServiceAttr::Timeout(_) | ServiceAttr::Netmask(_) => 4,
            ServiceAttr::SchedName(s) | ServiceAttr::PeName(s) => s.len() + 1,
            ServiceAttr::Flags(_) => 8,
            ServiceAttr::Stats(attrs) | ServiceAttr::Stats64(attrs) => {
                attrs.as_slice().buffer_len()
            }
            ServiceAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            ServiceAttr::AddressFamily(_) => IPVS_SVC_ATTR_AF,
            ServiceAttr::Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            ServiceAttr::Address(_) => IPVS_SVC_ATTR_ADDR,
            ServiceAttr::Port(_) => IPVS_SVC_ATTR_PORT,
            ServiceAttr::Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            ServiceAttr::SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            ServiceAttr::Flags(_) => IPVS_SVC_ATTR_FLAGS,
            ServiceAttr::Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            ServiceAttr::Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            ServiceAttr::Stats(_) => IPVS_SVC_ATTR_STATS,
            ServiceAttr::PeName(_) => IPVS_SVC_ATTR_PE_NAME,
            ServiceAttr::Stats64(_) => IPVS_SVC_ATTR_STATS64,
            ServiceAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            ServiceAttr::AddressFamily(v) | ServiceAttr::Protocol(v) => {
                buffer.copy_from_slice(&v.to_ne_bytes())
            }
            ServiceAttr::Port(v) => buffer.copy_from_slice(&v.to_be_bytes()),
            ServiceAttr::Address(a) => buffer.copy_from_slice(&a.0),
            ServiceAttr::Fwmark(v) | ServiceAttr::Timeout(v) => {
                buffer.copy_from_slice(&v.to_ne_bytes())
            }
            ServiceAttr::Netmask(raw) => buffer.copy_from_slice(raw),
            ServiceAttr::SchedName(s) | ServiceAttr::PeName(s) => {
                let (text, nul) = buffer.split_at_mut(s.len());
                text.copy_from_slice(s.as_bytes());
                nul.fill(0);
            }
            ServiceAttr::Flags(f) => {
                let (flags, mask) = buffer.split_at_mut(4);
                flags.copy_from_slice(&f.flags.to_ne_bytes());
                mask.copy_from_slice(&f.mask.to_ne_bytes());
            }
            ServiceAttr::Stats(attrs) | ServiceAttr::Stats64(attrs) => {
                attrs.as_slice().emit(buffer)
            }
            ServiceAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

fn parse_flags(value: &[u8]) -> Result<FlagsMask, DecodeError> {
    if value.len() != 8 {
        return Err(DecodeError::invalid_number(8, value.len()));
    }
    let (flags, mask) = value.split_at(4);
    Ok(FlagsMask {
        flags: parse_u32(flags)?,
        mask: parse_u32(mask)?,
    })
}

fn parse_netmask(value: &[u8]) -> Result<[u8; 4], DecodeError> {
    value
        .try_into()
        .map_err(|_| DecodeError::invalid_number(4, value.len()))
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for ServiceAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_SVC_ATTR_AF => ServiceAttr::AddressFamily(parse_u16(value)?),
            IPVS_SVC_ATTR_PROTOCOL => ServiceAttr::Protocol(parse_u16(value)?),
            IPVS_SVC_ATTR_ADDR => ServiceAttr::Address(InetAddr::parse(value)?),
            IPVS_SVC_ATTR_PORT => ServiceAttr::Port(parse_u16_be(value)?),
            IPVS_SVC_ATTR_FWMARK => ServiceAttr::Fwmark(parse_u32(value)?),
            IPVS_SVC_ATTR_SCHED_NAME => ServiceAttr::SchedName(parse_string(value)?),
            IPVS_SVC_ATTR_FLAGS => ServiceAttr::Flags(parse_flags(value)?),
            IPVS_SVC_ATTR_TIMEOUT => ServiceAttr::Timeout(parse_u32(value)?),
            IPVS_SVC_ATTR_NETMASK => ServiceAttr::Netmask(parse_netmask(value)?),
            IPVS_SVC_ATTR_STATS => {
                ServiceAttr::Stats(parse_nest(value, "IPVS_SVC_ATTR_STATS", |nla| {
                    StatsAttr::parse(nla)
                })?)
            }
            IPVS_SVC_ATTR_PE_NAME => ServiceAttr::PeName(parse_string(value)?),
            IPVS_SVC_ATTR_STATS64 => {
                ServiceAttr::Stats64(parse_nest(value, "IPVS_SVC_ATTR_STATS64", |nla| {
                    StatsAttr::parse(nla)
                })?)
            }
            _ => ServiceAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}
