//! A virtual service: its identity ([`ServiceKey`]) kept apart from what `SET_SERVICE` may
//! change in place ([`ServiceConfig`]: scheduler, flags, persistence), the service as read from
//! the kernel ([`Service`]), and the persistence netmask's wire form. Pure data, no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use super::addr::{AddressFamily, Protocol, SocketText};
use super::stats::Stats;
use crate::error::Error;

/// The scheduler names of mainline Linux (`ip_vs_<name>.ko`), plus `none`,
/// which the kernel reports for a service created without a scheduler.
const SCHEDULERS: [&str; 15] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
    "none",
];

/// An IPVS scheduler, by the name the kernel knows it under.
///
/// A newtype over the kernel's own name so that nothing needs translating on
/// the wire, validated against the mainline list so that a typo is refused
/// here instead of as an `ENOENT` from the kernel's module loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scheduler(&'static str);

impl Scheduler {
    /// Round robin, the classic recipe's default.
    pub const RR: Scheduler = Scheduler("rr");
    /// Weighted round robin.
    pub const WRR: Scheduler = Scheduler("wrr");
    /// Maglev hashing, for several balancers sharing one VIP.
    pub const MH: Scheduler = Scheduler("mh");
    /// Source hashing.
    pub const SH: Scheduler = Scheduler("sh");

    /// Validates a scheduler name (`rr`, `wrr`, `lc`, `wlc`, `lblc`, `lblcr`,
    /// `dh`, `sh`, `sed`, `nq`, `fo`, `ovf`, `mh`, `twos`).
    pub fn new(name: &str) -> Result<Scheduler, Error> {
        SCHEDULERS
            .iter()
            .find(|known| **known == name)
            .map(|known| Scheduler(known))
            .ok_or_else(|| {
                Error::invalid(
                    "scheduler",
                    name,
                    format!("expected one of {}", SCHEDULERS.join(", ")),
                )
            })
    }

    /// The kernel's name for this scheduler.
    pub fn name(self) -> &'static str {
        self.0
    }

    /// Whether the kernel builds this scheduler's lookup table by walking the service's
    /// destination list in order, so that two balancers with the same destinations but
    /// another list order send the same flow to different real servers: `mh` (Maglev: the
    /// first destination in the list wins a contested slot), `sh` and `dh` (buckets dealt out
    /// round the list). For these lvstun keeps the list in one canonical order on every
    /// balancer, which is what lets a new Master continue the old one's flows without shared
    /// state: destinations by descending key. Programming from empty adds them in ascending
    /// key order and the kernel inserts each at the head, which gives exactly this; a real
    /// server added later with the highest key also lands in place, so the common case of a
    /// new server with a higher address needs no reordering (see [`plan`](crate::plan)).
    pub fn follows_list_order(self) -> bool {
        matches!(self.0, "mh" | "sh" | "dh")
    }

    /// Whether this scheduler hashes the client (`sh`, `mh`) and so reads the scheduler flags
    /// [`ServiceFlags::SCHED1`] (fall back to the next server when the hashed one is
    /// unavailable) and [`ServiceFlags::SCHED2`] (hash the client's port too).
    pub fn hashes_client(self) -> bool {
        matches!(self.0, "mh" | "sh")
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl FromStr for Scheduler {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scheduler::new(s)
    }
}

/// Identity of a virtual service: what the kernel looks it up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceKey {
    /// A service on a VIP, port and protocol (`ipvsadm -t/-u/--sctp-service`).
    Addr {
        /// The virtual IP address.
        address: IpAddr,
        /// The transport protocol.
        protocol: Protocol,
        /// The virtual port (0 means every port).
        port: u16,
    },
    /// A service matching a firewall mark (`ipvsadm -f`).
    Fwmark {
        /// Which address family the marked packets belong to.
        family: AddressFamily,
        /// The firewall mark, never 0.
        mark: u32,
    },
}

impl ServiceKey {
    /// The VIP of an address-keyed service; `None` for firewall marks, which
    /// lvstun never creates and therefore never owns.
    pub fn vip(&self) -> Option<IpAddr> {
        match self {
            ServiceKey::Addr { address, .. } => Some(*address),
            ServiceKey::Fwmark { .. } => None,
        }
    }

    /// The address family of the service.
    pub fn family(&self) -> AddressFamily {
        match self {
            ServiceKey::Addr { address, .. } => AddressFamily::of(*address),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr {
                address,
                protocol,
                port,
            } => write!(f, "{protocol} {}", SocketText(*address, *port)),
            ServiceKey::Fwmark { mark, .. } => write!(f, "FWM {mark}"),
        }
    }
}

/// Service flags that can be set by user space (`struct ip_vs_service`
/// `flags` minus the kernel-internal `HASHED` bit and minus `PERSISTENT`,
/// which the model carries as [`ServiceConfig::persistence`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceFlags(u32);

impl ServiceFlags {
    /// `IP_VS_SVC_F_PERSISTENT`: carried by [`ServiceConfig::persistence`].
    pub const PERSISTENT_BIT: u32 = 0x0001;
    /// `IP_VS_SVC_F_HASHED`: set by the kernel, never by user space.
    pub const HASHED_BIT: u32 = 0x0002;
    /// `IP_VS_SVC_F_ONEPACKET` (`ipvsadm -o`): schedule each UDP datagram.
    pub const ONE_PACKET: ServiceFlags = ServiceFlags(0x0004);
    /// `IP_VS_SVC_F_SCHED1`: `sh-fallback` / `mh-fallback`.
    pub const SCHED1: ServiceFlags = ServiceFlags(0x0008);
    /// `IP_VS_SVC_F_SCHED2`: `sh-port` / `mh-port`.
    pub const SCHED2: ServiceFlags = ServiceFlags(0x0010);
    /// `IP_VS_SVC_F_SCHED3`: scheduler flag 3.
    pub const SCHED3: ServiceFlags = ServiceFlags(0x0020);
    /// No flags.
    pub const fn empty() -> ServiceFlags {
        ServiceFlags(0)
    }

    /// Reads the kernel's flags word, returning the flags and whether the
    /// service is persistent. `HASHED` is dropped; unknown bits are kept so
    /// that a diff sees them.
    pub fn from_kernel(bits: u32) -> (ServiceFlags, bool) {
        let persistent = bits & Self::PERSISTENT_BIT != 0;
        (
            ServiceFlags(bits & !(Self::PERSISTENT_BIT | Self::HASHED_BIT)),
            persistent,
        )
    }

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set here.
    pub fn contains(self, other: ServiceFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of bits.
    pub fn union(self, other: ServiceFlags) -> ServiceFlags {
        ServiceFlags(self.0 | other.0)
    }
}

/// Client persistence (`ipvsadm -p TIMEOUT -M NETMASK`): connections from one
/// client (or client subnet) go to the same destination for `timeout_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Persistence {
    /// Seconds a persistence template lives; at least 1.
    pub timeout_secs: u32,
    /// Prefix length grouping clients: 0..=32 for IPv4, 1..=128 for IPv6.
    pub netmask_prefix: u8,
}

impl Persistence {
    /// Validates a persistence setting for a service of `family`.
    pub fn new(
        family: AddressFamily,
        timeout_secs: u32,
        netmask_prefix: u8,
    ) -> Result<Persistence, Error> {
        if timeout_secs == 0 {
            return Err(Error::invalid(
                "persistence timeout",
                timeout_secs,
                "must be at least 1 second",
            ));
        }
        let ok = match family {
            AddressFamily::Inet => netmask_prefix <= 32,
            AddressFamily::Inet6 => (1..=128).contains(&netmask_prefix),
        };
        if !ok {
            return Err(Error::invalid(
                "persistence netmask",
                netmask_prefix,
                "prefix length out of range for the service's family",
            ));
        }
        Ok(Persistence {
            timeout_secs,
            netmask_prefix,
        })
    }
}

/// How a service is configured: everything the kernel lets `SET_SERVICE`
/// change without dropping connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceConfig {
    /// Which scheduler picks a destination for a new connection.
    pub scheduler: Scheduler,
    /// One-packet and scheduler flags.
    pub flags: ServiceFlags,
    /// Client persistence, if any.
    pub persistence: Option<Persistence>,
}

impl ServiceConfig {
    /// A service with `scheduler`, no flags, no persistence.
    pub fn new(scheduler: Scheduler) -> ServiceConfig {
        ServiceConfig {
            scheduler,
            flags: ServiceFlags::empty(),
            persistence: None,
        }
    }
}

/// A service as read from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Identity.
    pub key: ServiceKey,
    /// Configuration.
    pub config: ServiceConfig,
    /// Counters.
    pub stats: Stats,
}

/// The netmask bytes the kernel keeps for a service: a big-endian IPv4 mask,
/// or for IPv6 the prefix length as a host-order `u32` (the kernel compares it
/// with 128), both carried in one 4-byte `__be32` attribute.
pub fn netmask_to_wire(family: AddressFamily, prefix: u8) -> [u8; 4] {
    match family {
        AddressFamily::Inet => {
            let bits = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            bits.to_be_bytes()
        }
        AddressFamily::Inet6 => u32::from(prefix).to_ne_bytes(),
    }
}

/// Reads the kernel's netmask bytes back into a prefix length; refuses a
/// non-contiguous IPv4 mask, which the model cannot express.
pub fn netmask_from_wire(family: AddressFamily, raw: [u8; 4]) -> Result<u8, Error> {
    match family {
        AddressFamily::Inet => {
            let bits = u32::from_be_bytes(raw);
            let prefix = bits.leading_ones();
            if bits.checked_shl(prefix).unwrap_or(0) != 0 {
                return Err(Error::invalid(
                    "netmask",
                    Ipv4Addr::from(raw),
                    "not a contiguous prefix",
                ));
            }
            // leading_ones of a u32 is at most 32.
            Ok(prefix as u8)
        }
        AddressFamily::Inet6 => {
            let prefix = u32::from_ne_bytes(raw);
            u8::try_from(prefix)
                .ok()
                .filter(|p| *p <= 128)
                .ok_or_else(|| Error::invalid("netmask", prefix, "IPv6 prefix above 128"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_accepts_kernel_names_only() {
        for name in [
            "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh",
            "twos",
        ] {
            assert_eq!(Scheduler::new(name).map(Scheduler::name).ok(), Some(name));
        }
        assert!(Scheduler::new("RR").is_err());
        assert!(Scheduler::new("maglev").is_err());
        assert!(Scheduler::new("").is_err());
    }

    #[test]
    fn flags_from_kernel_drop_internal_bits() {
        let (flags, persistent) = ServiceFlags::from_kernel(0x0001 | 0x0002 | 0x0010);
        assert!(persistent);
        assert_eq!(flags, ServiceFlags::SCHED2);
    }

    #[test]
    fn netmask_round_trips() {
        for prefix in 0..=32u8 {
            let raw = netmask_to_wire(AddressFamily::Inet, prefix);
            assert_eq!(
                netmask_from_wire(AddressFamily::Inet, raw).ok(),
                Some(prefix)
            );
        }
        assert_eq!(
            netmask_to_wire(AddressFamily::Inet, 32),
            [255, 255, 255, 255]
        );
        assert_eq!(netmask_to_wire(AddressFamily::Inet, 24), [255, 255, 255, 0]);
        assert_eq!(netmask_to_wire(AddressFamily::Inet, 0), [0, 0, 0, 0]);
        assert!(netmask_from_wire(AddressFamily::Inet, [255, 0, 255, 0]).is_err());
        let raw6 = netmask_to_wire(AddressFamily::Inet6, 128);
        assert_eq!(
            netmask_from_wire(AddressFamily::Inet6, raw6).ok(),
            Some(128)
        );
    }

    #[test]
    fn persistence_validates_per_family() {
        assert!(Persistence::new(AddressFamily::Inet, 300, 32).is_ok());
        assert!(Persistence::new(AddressFamily::Inet, 0, 32).is_err());
        assert!(Persistence::new(AddressFamily::Inet, 300, 33).is_err());
        assert!(Persistence::new(AddressFamily::Inet6, 300, 0).is_err());
        assert!(Persistence::new(AddressFamily::Inet6, 300, 128).is_ok());
    }
}
