//! A destination (real server) of a service: its identity ([`DestKey`]) kept apart from what
//! `SET_DEST` may change in place ([`DestConfig`]: weight, forwarding, thresholds), and the
//! destination as read from the kernel ([`Destination`]). Pure data, no I/O.

use std::fmt;
use std::net::IpAddr;

use super::addr::SocketText;
use super::stats::{ConnCounts, Stats};
use super::tunnel::{Forward, Tunnel};
use crate::error::Error;

/// Identity of a destination (real server) within a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestKey {
    /// The real server's address (the outer tunnel destination in TUN mode).
    pub address: IpAddr,
    /// The real server's port.
    pub port: u16,
}

impl fmt::Display for DestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketText(self.address, self.port).fmt(f)
    }
}

/// A destination's weight: 0 (drain: no new connections) to `i32::MAX`, the
/// kernel keeping it in an `int` that must not be negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(u32);

impl Weight {
    /// Validates a weight.
    pub fn new(weight: u32) -> Result<Weight, Error> {
        if weight > i32::MAX as u32 {
            return Err(Error::invalid(
                "weight",
                weight,
                "must fit the kernel's signed int",
            ));
        }
        Ok(Weight(weight))
    }

    /// The weight as the kernel stores it.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Connection-count thresholds (`ipvsadm -x/-y`); 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Thresholds {
    upper: u32,
    lower: u32,
}

impl Thresholds {
    /// Validates thresholds; the kernel refuses lower above upper (`ERANGE`).
    pub fn new(upper: u32, lower: u32) -> Result<Thresholds, Error> {
        if lower > upper {
            return Err(Error::invalid(
                "thresholds",
                format!("upper {upper} lower {lower}"),
                "lower threshold above upper threshold",
            ));
        }
        Ok(Thresholds { upper, lower })
    }

    /// Upper threshold of active connections.
    pub fn upper(self) -> u32 {
        self.upper
    }

    /// Lower threshold at which the destination is used again.
    pub fn lower(self) -> u32 {
        self.lower
    }
}

/// How a destination is configured: everything `SET_DEST` changes in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DestConfig {
    /// Scheduling weight.
    pub weight: Weight,
    /// Forwarding method.
    pub forward: Forward,
    /// Connection thresholds.
    pub thresholds: Thresholds,
}

impl DestConfig {
    /// An ipip tunnel destination with `weight` and no thresholds: the
    /// lvstun default.
    pub fn tunnel(weight: Weight) -> DestConfig {
        DestConfig {
            weight,
            forward: Forward::Tunnel(Tunnel::Ipip),
            thresholds: Thresholds::default(),
        }
    }
}

/// A destination as read from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Identity within its service.
    pub key: DestKey,
    /// Configuration.
    pub config: DestConfig,
    /// Connection counts.
    pub conns: ConnCounts,
    /// Counters.
    pub stats: Stats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_and_thresholds_follow_kernel_limits() {
        assert!(Weight::new(i32::MAX as u32).is_ok());
        assert!(Weight::new(i32::MAX as u32 + 1).is_err());
        assert!(Thresholds::new(10, 5).is_ok());
        assert!(Thresholds::new(0, 0).is_ok());
        assert!(Thresholds::new(0, 5).is_err());
    }
}
