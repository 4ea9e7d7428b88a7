//! Attributes inside the `*_ATTR_STATS` and `*_ATTR_STATS64` nests
//! (`IPVS_STATS_ATTR_*`). No I/O.
//!
//! The 32-bit nest carries `u32` counters except the byte counters (`u64`);
//! the 64-bit nest carries only `u64`. Each value keeps the width it was read
//! with, so a parsed nest emits back byte for byte.

use netlink_packet_core::{
    DecodeError, DefaultNla, Nla, NlaBuffer, Parseable, parse_u32, parse_u64,
};

use crate::model::Stats;

const IPVS_STATS_ATTR_CONNS: u16 = 1;
const IPVS_STATS_ATTR_INPKTS: u16 = 2;
const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
const IPVS_STATS_ATTR_INBYTES: u16 = 4;
const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
const IPVS_STATS_ATTR_CPS: u16 = 6;
const IPVS_STATS_ATTR_INPPS: u16 = 7;
const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
const IPVS_STATS_ATTR_INBPS: u16 = 9;
const IPVS_STATS_ATTR_OUTBPS: u16 = 10;

/// A counter value with the width it travels with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A 32-bit counter (the legacy stats nest).
    U32(u32),
    /// A 64-bit counter.
    U64(u64),
}

impl Counter {
    /// The value, widened.
    pub fn get(self) -> u64 {
        match self {
            Counter::U32(v) => u64::from(v),
            Counter::U64(v) => v,
        }
    }

    fn len(self) -> usize {
        match self {
            Counter::U32(_) => 4,
            Counter::U64(_) => 8,
        }
    }

    fn emit(self, buffer: &mut [u8]) {
        match self {
            Counter::U32(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            Counter::U64(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
        }
    }

    fn parse(value: &[u8]) -> Result<Counter, DecodeError> {
        match value.len() {
            8 => Ok(Counter::U64(parse_u64(value)?)),
            _ => Ok(Counter::U32(parse_u32(value)?)),
        }
    }
}

/// One statistics attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatsAttr {
    /// Connections scheduled.
    Conns(Counter),
    /// Incoming packets.
    InPkts(Counter),
    /// Outgoing packets.
    OutPkts(Counter),
    /// Incoming bytes.
    InBytes(Counter),
    /// Outgoing bytes.
    OutBytes(Counter),
    /// Connection rate.
    Cps(Counter),
    /// Incoming packet rate.
    InPps(Counter),
    /// Outgoing packet rate.
    OutPps(Counter),
    /// Incoming byte rate.
    InBps(Counter),
    /// Outgoing byte rate.
    OutBps(Counter),
    /// Anything else, including `IPVS_STATS_ATTR_PAD`.
    Other(DefaultNla),
}

impl StatsAttr {
    fn counter(&self) -> Option<Counter> {
        match self {
            StatsAttr::Conns(c)
            | StatsAttr::InPkts(c)
            | StatsAttr::OutPkts(c)
            | StatsAttr::InBytes(c)
            | StatsAttr::OutBytes(c)
            | StatsAttr::Cps(c)
            | StatsAttr::InPps(c)
            | StatsAttr::OutPps(c)
            | StatsAttr::InBps(c)
            | StatsAttr::OutBps(c) => Some(*c),
            StatsAttr::Other(_) => None,
        }
    }
}

impl Nla for StatsAttr {
    fn value_len(&self) -> usize {
        match (self, self.counter()) {
            (_, Some(c)) => c.len(),
            (StatsAttr::Other(nla), None) => nla.value_len(),
            (_, None) => 0,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            StatsAttr::Conns(_) => IPVS_STATS_ATTR_CONNS,
            StatsAttr::InPkts(_) => IPVS_STATS_ATTR_INPKTS,
            StatsAttr::OutPkts(_) => IPVS_STATS_ATTR_OUTPKTS,
            StatsAttr::InBytes(_) => IPVS_STATS_ATTR_INBYTES,
            StatsAttr::OutBytes(_) => IPVS_STATS_ATTR_OUTBYTES,
            StatsAttr::Cps(_) => IPVS_STATS_ATTR_CPS,
            StatsAttr::InPps(_) => IPVS_STATS_ATTR_INPPS,
            StatsAttr::OutPps(_) => IPVS_STATS_ATTR_OUTPPS,
            StatsAttr::InBps(_) => IPVS_STATS_ATTR_INBPS,
            StatsAttr::OutBps(_) => IPVS_STATS_ATTR_OUTBPS,
            StatsAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match (self, self.counter()) {
            (_, Some(c)) => c.emit(buffer),
            (StatsAttr::Other(nla), None) => nla.emit_value(buffer),
            (_, None) => {}
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for StatsAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_STATS_ATTR_CONNS => StatsAttr::Conns(Counter::parse(value)?),
            IPVS_STATS_ATTR_INPKTS => StatsAttr::InPkts(Counter::parse(value)?),
            IPVS_STATS_ATTR_OUTPKTS => StatsAttr::OutPkts(Counter::parse(value)?),
            IPVS_STATS_ATTR_INBYTES => StatsAttr::InBytes(Counter::parse(value)?),
            IPVS_STATS_ATTR_OUTBYTES => StatsAttr::OutBytes(Counter::parse(value)?),
            IPVS_STATS_ATTR_CPS => StatsAttr::Cps(Counter::parse(value)?),
            IPVS_STATS_ATTR_INPPS => StatsAttr::InPps(Counter::parse(value)?),
            IPVS_STATS_ATTR_OUTPPS => StatsAttr::OutPps(Counter::parse(value)?),
            IPVS_STATS_ATTR_INBPS => StatsAttr::InBps(Counter::parse(value)?),
            IPVS_STATS_ATTR_OUTBPS => StatsAttr::OutBps(Counter::parse(value)?),
            _ => StatsAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Folds a stats nest into the model's counters.
pub fn to_stats(attrs: &[StatsAttr]) -> Stats {
    let mut stats = Stats::default();
    for attr in attrs {
        let (slot, value) = match attr {
            StatsAttr::Conns(c) => (&mut stats.conns, c),
            StatsAttr::InPkts(c) => (&mut stats.in_packets, c),
            StatsAttr::OutPkts(c) => (&mut stats.out_packets, c),
            StatsAttr::InBytes(c) => (&mut stats.in_bytes, c),
            StatsAttr::OutBytes(c) => (&mut stats.out_bytes, c),
            StatsAttr::Cps(c) => (&mut stats.cps, c),
            StatsAttr::InPps(c) => (&mut stats.in_pps, c),
            StatsAttr::OutPps(c) => (&mut stats.out_pps, c),
            StatsAttr::InBps(c) => (&mut stats.in_bps, c),
            StatsAttr::OutBps(c) => (&mut stats.out_bps, c),
            StatsAttr::Other(_) => continue,
        };
        *slot = value.get();
    }
    stats
}
