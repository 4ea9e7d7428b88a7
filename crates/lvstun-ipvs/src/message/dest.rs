//! Attributes inside `IPVS_CMD_ATTR_DEST` (`IPVS_DEST_ATTR_*`). No I/O.
//!
//! Wire types per the kernel's `ip_vs_dest_policy`: address a 16-byte
//! `union nf_inet_addr`, port `__be16`, forwarding method, weight and
//! thresholds `u32`, address family `u16`, tunnel type `u8`, tunnel port
//! `__be16`, tunnel flags `u16`.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, Parseable, parse_u8, parse_u16,
    parse_u16_be, parse_u32,
};

use super::parse_nest;
use super::service::InetAddr;
use super::stats::StatsAttr;

const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
const IPVS_DEST_ATTR_STATS: u16 = 10;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
const IPVS_DEST_ATTR_STATS64: u16 = 12;
const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

/// `IP_VS_CONN_F_MASQ`.
pub const FWD_MASQ: u32 = 0;
/// `IP_VS_CONN_F_LOCALNODE`.
pub const FWD_LOCAL: u32 = 1;
/// `IP_VS_CONN_F_TUNNEL`.
pub const FWD_TUNNEL: u32 = 2;
/// `IP_VS_CONN_F_DROUTE`.
pub const FWD_ROUTE: u32 = 3;
/// `IP_VS_CONN_F_TUNNEL_TYPE_IPIP`.
pub const TUN_TYPE_IPIP: u8 = 0;
/// `IP_VS_CONN_F_TUNNEL_TYPE_GUE`.
pub const TUN_TYPE_GUE: u8 = 1;
/// `IP_VS_CONN_F_TUNNEL_TYPE_GRE`.
pub const TUN_TYPE_GRE: u8 = 2;
/// `IP_VS_TUNNEL_ENCAP_FLAG_CSUM`.
pub const TUN_FLAG_CSUM: u16 = 1 << 0;
/// `IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM`.
pub const TUN_FLAG_REMCSUM: u16 = 1 << 1;

/// One destination attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestAttr {
    /// Real server address.
    Address(InetAddr),
    /// Real server port, host order here (big-endian on the wire).
    Port(u16),
    /// Forwarding method (`IP_VS_CONN_F_*` masked by `FWD_MASK`).
    FwdMethod(u32),
    /// Weight.
    Weight(u32),
    /// Upper connection threshold.
    UpperThreshold(u32),
    /// Lower connection threshold.
    LowerThreshold(u32),
    /// Active connections (read-only).
    ActiveConns(u32),
    /// Inactive connections (read-only).
    InactConns(u32),
    /// Persistence templates (read-only).
    PersistConns(u32),
    /// 32-bit stats nest (read-only).
    Stats(Vec<StatsAttr>),
    /// Address family of the destination (may differ from the service's in
    /// tunnel mode).
    AddressFamily(u16),
    /// 64-bit stats nest (read-only).
    Stats64(Vec<StatsAttr>),
    /// Tunnel type (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
    TunType(u8),
    /// Tunnel (GUE) port, host order here (big-endian on the wire).
    TunPort(u16),
    /// Tunnel encapsulation flags (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
    TunFlags(u16),
    /// Anything else, kept as raw bytes.
    Other(DefaultNla),
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        match self {
            DestAttr::Address(_) => 16,
            DestAttr::Port(_)
            | DestAttr::AddressFamily(_)
            | DestAttr::TunPort(_)
            | DestAttr::TunFlags(_) => 2,
            DestAttr::TunType(_) => 1,
            DestAttr::FwdMethod(_)
            | DestAttr::Weight(_)
            | DestAttr::UpperThreshold(_)
            | DestAttr::LowerThreshold(_)
            | DestAttr::ActiveConns(_)
            | DestAttr::InactConns(_)
            | DestAttr::PersistConns(_) => 4,
            DestAttr::Stats(attrs) | DestAttr::Stats64(attrs) => attrs.as_slice().buffer_len(),
            DestAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DestAttr::Address(_) => IPVS_DEST_ATTR_ADDR,
            DestAttr::Port(_) => IPVS_DEST_ATTR_PORT,
            DestAttr::FwdMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            DestAttr::Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            DestAttr::UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            DestAttr::LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            DestAttr::ActiveConns(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            DestAttr::InactConns(_) => IPVS_DEST_ATTR_INACT_CONNS,
            DestAttr::PersistConns(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            DestAttr::Stats(_) => IPVS_DEST_ATTR_STATS,
            DestAttr::AddressFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            DestAttr::Stats64(_) => IPVS_DEST_ATTR_STATS64,
            DestAttr::TunType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            DestAttr::TunPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            DestAttr::TunFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            DestAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            DestAttr::Address(a) => buffer.copy_from_slice(&a.0),
            DestAttr::Port(v) | DestAttr::TunPort(v) => buffer.copy_from_slice(&v.to_be_bytes()),
            DestAttr::AddressFamily(v) | DestAttr::TunFlags(v) => {
                buffer.copy_from_slice(&v.to_ne_bytes())
            }
            DestAttr::TunType(v) => buffer.copy_from_slice(&[*v]),
            DestAttr::FwdMethod(v)
            | DestAttr::Weight(v)
            | DestAttr::UpperThreshold(v)
            | DestAttr::LowerThreshold(v)
            | DestAttr::ActiveConns(v)
            | DestAttr::InactConns(v)
            | DestAttr::PersistConns(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            DestAttr::Stats(attrs) | DestAttr::Stats64(attrs) => attrs.as_slice().emit(buffer),
            DestAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DestAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_DEST_ATTR_ADDR => DestAttr::Address(InetAddr::parse(value)?),
            IPVS_DEST_ATTR_PORT => DestAttr::Port(parse_u16_be(value)?),
            IPVS_DEST_ATTR_FWD_METHOD => DestAttr::FwdMethod(parse_u32(value)?),
            IPVS_DEST_ATTR_WEIGHT => DestAttr::Weight(parse_u32(value)?),
            IPVS_DEST_ATTR_U_THRESH => DestAttr::UpperThreshold(parse_u32(value)?),
            IPVS_DEST_ATTR_L_THRESH => DestAttr::LowerThreshold(parse_u32(value)?),
            IPVS_DEST_ATTR_ACTIVE_CONNS => DestAttr::ActiveConns(parse_u32(value)?),
            IPVS_DEST_ATTR_INACT_CONNS => DestAttr::InactConns(parse_u32(value)?),
            IPVS_DEST_ATTR_PERSIST_CONNS => DestAttr::PersistConns(parse_u32(value)?),
            IPVS_DEST_ATTR_STATS => {
                DestAttr::Stats(parse_nest(value, "IPVS_DEST_ATTR_STATS", |nla| {
                    StatsAttr::parse(nla)
                })?)
            }
            IPVS_DEST_ATTR_ADDR_FAMILY => DestAttr::AddressFamily(parse_u16(value)?),
            IPVS_DEST_ATTR_STATS64 => {
                DestAttr::Stats64(parse_nest(value, "IPVS_DEST_ATTR_STATS64", |nla| {
                    StatsAttr::parse(nla)
                })?)
            }
            IPVS_DEST_ATTR_TUN_TYPE => DestAttr::TunType(parse_u8(value)?),
            IPVS_DEST_ATTR_TUN_PORT => DestAttr::TunPort(parse_u16_be(value)?),
            IPVS_DEST_ATTR_TUN_FLAGS => DestAttr::TunFlags(parse_u16(value)?),
            _ => DestAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}
