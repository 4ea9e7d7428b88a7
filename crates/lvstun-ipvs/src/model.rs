//! Typed model of the kernel's IPVS table: services, destinations, their
//! configuration, read-only statistics, the sync daemon, and the operations
//! that change the table. Pure data, no I/O.
//!
//! Identity is kept apart from configuration ([`ServiceKey`] vs
//! [`ServiceConfig`], [`DestKey`] vs [`DestConfig`]) so that a diff can tell
//! "same entry, new settings" (edit in place, connections survive) from
//! "different entry" (add/remove). Values are validated once, when they enter
//! the model; the wire layer never sees an invalid one.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::str::FromStr;

use crate::error::{Errno, Error};

/// Address family of a service or destination, as the kernel numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressFamily {
    /// IPv4 (`AF_INET`).
    Inet,
    /// IPv6 (`AF_INET6`).
    Inet6,
}

impl AddressFamily {
    /// `AF_INET` on Linux.
    pub const AF_INET: u16 = 2;
    /// `AF_INET6` on Linux.
    pub const AF_INET6: u16 = 10;

    /// The family of an address.
    pub fn of(addr: IpAddr) -> AddressFamily {
        match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        }
    }

    /// The kernel's number for this family.
    pub fn raw(self) -> u16 {
        match self {
            AddressFamily::Inet => Self::AF_INET,
            AddressFamily::Inet6 => Self::AF_INET6,
        }
    }

    /// Reads the kernel's number; `None` for families IPVS does not use.
    pub fn from_raw(raw: u16) -> Option<AddressFamily> {
        match raw {
            Self::AF_INET => Some(AddressFamily::Inet),
            Self::AF_INET6 => Some(AddressFamily::Inet6),
            _ => None,
        }
    }
}

/// Transport protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// SCTP (IP protocol 132).
    Sctp,
}

impl Protocol {
    /// The IP protocol number the kernel uses.
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// Reads an IP protocol number; `None` for protocols IPVS cannot balance.
    pub fn from_number(number: u16) -> Option<Protocol> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

impl FromStr for Protocol {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(Error::invalid("protocol", s, "expected tcp, udp or sctp")),
        }
    }
}

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
    /// new server with a higher address needs no reordering (see `balancer::plan`).
    pub fn follows_list_order(self) -> bool {
        matches!(self.0, "mh" | "sh" | "dh")
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

/// Formats `addr:port` the way ipvsadm does (`[v6]:port` for IPv6).
pub struct SocketText(pub IpAddr, pub u16);

impl fmt::Display for SocketText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
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

/// Checksum option of a GUE tunnel (`ipvsadm --tun-nocsum/--tun-csum/--tun-remcsum`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GueChecksum {
    /// No UDP checksum.
    #[default]
    None,
    /// UDP checksum.
    Csum,
    /// Remote checksum offload.
    Remote,
}

/// The encapsulation of a tunnel destination (`ipvsadm --tun-type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Tunnel {
    /// IP-in-IP, the classic LVS-TUN encapsulation.
    #[default]
    Ipip,
    /// Generic UDP Encapsulation to `port` (the real server runs `fou`).
    Gue {
        /// The real server's GUE port.
        port: NonZeroU16,
        /// Checksum option.
        checksum: GueChecksum,
    },
    /// GRE.
    Gre {
        /// Whether GRE checksums are sent.
        checksum: bool,
    },
}

/// How IPVS forwards packets to a destination (`ipvsadm -g/-i/-m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forward {
    /// NAT (`-m`).
    Masq,
    /// The destination is a local address; set by the kernel, shown as "Local".
    Local,
    /// Tunnel (`-i`): what lvstun uses.
    Tunnel(Tunnel),
    /// Direct routing (`-g`).
    Route,
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

/// Traffic counters of a service or destination, read-only. From the 64-bit
/// stats nest when the kernel sends it, else the 32-bit one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub in_packets: u64,
    /// Outgoing packets (0 in TUN mode: replies bypass the balancer).
    pub out_packets: u64,
    /// Incoming bytes.
    pub in_bytes: u64,
    /// Outgoing bytes.
    pub out_bytes: u64,
    /// Connection rate.
    pub cps: u64,
    /// Incoming packet rate.
    pub in_pps: u64,
    /// Outgoing packet rate.
    pub out_pps: u64,
    /// Incoming byte rate.
    pub in_bps: u64,
    /// Outgoing byte rate.
    pub out_bps: u64,
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

/// Connection counts of a destination, read-only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounts {
    /// Established connections.
    pub active: u32,
    /// Other connections.
    pub inactive: u32,
    /// Persistence templates.
    pub persistent: u32,
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

/// General IPVS facts (`ipvsadm`'s first line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpvsInfo {
    /// `IP_VS_VERSION_CODE`, e.g. `0x010201` for 1.2.1.
    pub version: u32,
    /// Buckets of the connection hash table.
    pub conn_tab_size: u32,
}

impl IpvsInfo {
    /// The version as `major.minor.patch`.
    pub fn version_text(&self) -> String {
        format!(
            "{}.{}.{}",
            (self.version >> 16) & 0xff,
            (self.version >> 8) & 0xff,
            self.version & 0xff
        )
    }
}

/// Role of a connection-sync daemon (`ipvsadm --start-daemon master|backup`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SyncRole {
    /// Sends the connection table (`IP_VS_STATE_MASTER`).
    Master,
    /// Receives it (`IP_VS_STATE_BACKUP`).
    Backup,
}

impl SyncRole {
    /// The kernel's state number.
    pub fn raw(self) -> u32 {
        match self {
            SyncRole::Master => 1,
            SyncRole::Backup => 2,
        }
    }

    /// Reads the kernel's state number.
    pub fn from_raw(raw: u32) -> Option<SyncRole> {
        match raw {
            1 => Some(SyncRole::Master),
            2 => Some(SyncRole::Backup),
            _ => None,
        }
    }
}

impl fmt::Display for SyncRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
        })
    }
}

impl FromStr for SyncRole {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "master" => Ok(SyncRole::Master),
            "backup" => Ok(SyncRole::Backup),
            _ => Err(Error::invalid("sync role", s, "expected master or backup")),
        }
    }
}

/// A network interface name: 1 to 15 bytes (IFNAMSIZ less the NUL), no `/`,
/// no whitespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IfName(String);

impl IfName {
    /// Validates an interface name.
    pub fn new(name: &str) -> Result<IfName, Error> {
        let ok = !name.is_empty()
            && name.len() <= 15
            && !name.contains('/')
            && !name.chars().any(|c| c.is_whitespace() || c == '\0');
        if !ok {
            return Err(Error::invalid(
                "interface name",
                name,
                "must be 1-15 bytes without '/', whitespace or NUL",
            ));
        }
        Ok(IfName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A connection-sync daemon (`ipvsadm --start-daemon`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncDaemon {
    /// Master or backup.
    pub role: SyncRole,
    /// Interface the sync multicast goes out of / comes in on.
    pub ifname: IfName,
    /// Sync ID: both ends must agree (0-255).
    pub sync_id: u8,
    /// Largest sync message payload, if not the kernel's default.
    pub max_len: Option<u16>,
    /// Multicast group, if not 224.0.0.81.
    pub group: Option<IpAddr>,
    /// UDP port, if not 8848.
    pub port: Option<u16>,
    /// Multicast TTL, if not 1.
    pub ttl: Option<u8>,
}

impl SyncDaemon {
    /// A daemon with the kernel's defaults for group, port, TTL and size.
    pub fn new(role: SyncRole, ifname: IfName, sync_id: u8) -> SyncDaemon {
        SyncDaemon {
            role,
            ifname,
            sync_id,
            max_len: None,
            group: None,
            port: None,
            ttl: None,
        }
    }
}

/// One change to the kernel's table; each is one netlink request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Add a service (`ipvsadm -A`).
    NewService {
        /// Which service.
        key: ServiceKey,
        /// Its configuration.
        config: ServiceConfig,
    },
    /// Edit a service in place (`ipvsadm -E`).
    SetService {
        /// Which service.
        key: ServiceKey,
        /// Its new configuration.
        config: ServiceConfig,
    },
    /// Delete a service and its destinations (`ipvsadm -D`).
    DelService {
        /// Which service.
        key: ServiceKey,
    },
    /// Add a destination (`ipvsadm -a`).
    NewDest {
        /// Its service.
        service: ServiceKey,
        /// Which destination.
        dest: DestKey,
        /// Its configuration.
        config: DestConfig,
    },
    /// Edit a destination in place (`ipvsadm -e`).
    SetDest {
        /// Its service.
        service: ServiceKey,
        /// Which destination.
        dest: DestKey,
        /// Its new configuration.
        config: DestConfig,
    },
    /// Delete a destination (`ipvsadm -d`).
    DelDest {
        /// Its service.
        service: ServiceKey,
        /// Which destination.
        dest: DestKey,
    },
}

impl Op {
    /// The service this operation concerns.
    pub fn service(&self) -> &ServiceKey {
        match self {
            Op::NewService { key, .. } | Op::SetService { key, .. } | Op::DelService { key } => key,
            Op::NewDest { service, .. }
            | Op::SetDest { service, .. }
            | Op::DelDest { service, .. } => service,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::NewService { key, config } => {
                write!(f, "add service {key} {}", config.scheduler)
            }
            Op::SetService { key, config } => {
                write!(f, "edit service {key} {}", config.scheduler)
            }
            Op::DelService { key } => write!(f, "delete service {key}"),
            Op::NewDest {
                service,
                dest,
                config,
            } => write!(
                f,
                "add destination {dest} to {service} weight {}",
                config.weight.get()
            ),
            Op::SetDest {
                service,
                dest,
                config,
            } => write!(
                f,
                "edit destination {dest} of {service} weight {}",
                config.weight.get()
            ),
            Op::DelDest { service, dest } => {
                write!(f, "delete destination {dest} from {service}")
            }
        }
    }
}

/// A service's configuration and destinations, as held in a [`Table`].
///
/// Two entries are equal when their configuration and destinations are: the list order is an
/// observation about one kernel, not part of what is wanted.
#[derive(Clone, Debug, Eq)]
pub struct ServiceEntry {
    /// The service's configuration.
    pub config: ServiceConfig,
    /// Its destinations.
    pub dests: BTreeMap<DestKey, DestConfig>,
    /// The kernel's destination list, first to last (the order a dump returns them), when this
    /// entry mirrors a kernel: read from one ([`Table::push_read_dest`]) or built by applying
    /// operations from empty ([`Table::apply`], which inserts new destinations at the head of
    /// the list as the kernel's `list_add_rcu` does). `None` for a wanted table, which has no
    /// order of its own. Hashing schedulers depend on it
    /// ([`Scheduler::follows_list_order`]).
    pub order: Option<VecDeque<DestKey>>,
}

impl PartialEq for ServiceEntry {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.dests == other.dests
    }
}

/// A whole IPVS table without counters: what the kernel holds or what lvstun
/// wants it to hold. Ordered maps so that plans and printouts are
/// deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    services: BTreeMap<ServiceKey, ServiceEntry>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table::default()
    }

    /// Adds or replaces a service's configuration, keeping its destinations.
    pub fn upsert_service(&mut self, key: ServiceKey, config: ServiceConfig) {
        self.services
            .entry(key)
            .and_modify(|entry| entry.config = config)
            .or_insert_with(|| ServiceEntry {
                config,
                dests: BTreeMap::new(),
                order: None,
            });
    }

    /// Adds a service read from the kernel: like [`Table::upsert_service`], but the entry
    /// records the kernel's list order from here on (its destinations follow through
    /// [`Table::push_read_dest`]).
    pub fn insert_read_service(&mut self, key: ServiceKey, config: ServiceConfig) {
        self.services.insert(
            key,
            ServiceEntry {
                config,
                dests: BTreeMap::new(),
                order: Some(VecDeque::new()),
            },
        );
    }

    /// Adds a destination read from the kernel, in the order the dump returned it: it goes at
    /// the tail of the service's recorded list order. `false` when the service is not in the
    /// table.
    pub fn push_read_dest(
        &mut self,
        service: &ServiceKey,
        dest: DestKey,
        config: DestConfig,
    ) -> bool {
        match self.services.get_mut(service) {
            Some(entry) => {
                if entry.dests.insert(dest, config).is_none() {
                    entry
                        .order
                        .get_or_insert_with(VecDeque::new)
                        .push_back(dest);
                }
                true
            }
            None => false,
        }
    }

    /// Adds or replaces a destination of an existing service; `false` when
    /// the service is not in the table.
    pub fn upsert_dest(&mut self, service: &ServiceKey, dest: DestKey, config: DestConfig) -> bool {
        match self.services.get_mut(service) {
            Some(entry) => {
                entry.dests.insert(dest, config);
                true
            }
            None => false,
        }
    }

    /// The entry of a service.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceEntry> {
        self.services.get(key)
    }

    /// All services in key order.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceKey, &ServiceEntry)> {
        self.services.iter()
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether the table has no service.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Applies one operation with the kernel's semantics and errnos: adding
    /// what exists is `EEXIST`, touching a missing service is `ESRCH`, a
    /// missing destination `ENOENT`. The in-memory fake relies on this, and
    /// the balancer keeps its model of the kernel's table with it between
    /// full reads.
    pub fn apply(&mut self, op: &Op) -> Result<(), Errno> {
        match op {
            Op::NewService { key, config } => {
                if self.services.contains_key(key) {
                    return Err(Errno::EEXIST);
                }
                self.services.insert(
                    *key,
                    ServiceEntry {
                        config: *config,
                        dests: BTreeMap::new(),
                        order: Some(VecDeque::new()),
                    },
                );
            }
            Op::SetService { key, config } => {
                self.services.get_mut(key).ok_or(Errno::ESRCH)?.config = *config;
            }
            Op::DelService { key } => {
                self.services.remove(key).ok_or(Errno::ESRCH)?;
            }
            Op::NewDest {
                service,
                dest,
                config,
            } => {
                let entry = self.services.get_mut(service).ok_or(Errno::ESRCH)?;
                if entry.dests.contains_key(dest) {
                    return Err(Errno::EEXIST);
                }
                entry.dests.insert(*dest, *config);
                // The kernel's __ip_vs_update_dest: list_add_rcu, at the head.
                if let Some(order) = entry.order.as_mut() {
                    order.push_front(*dest);
                }
            }
            Op::SetDest {
                service,
                dest,
                config,
            } => {
                let entry = self.services.get_mut(service).ok_or(Errno::ESRCH)?;
                *entry.dests.get_mut(dest).ok_or(Errno::ENOENT)? = *config;
            }
            Op::DelDest { service, dest } => {
                let entry = self.services.get_mut(service).ok_or(Errno::ESRCH)?;
                entry.dests.remove(dest).ok_or(Errno::ENOENT)?;
                if let Some(order) = entry.order.as_mut() {
                    order.retain(|d| d != dest);
                }
            }
        }
        Ok(())
    }
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
    fn protocol_numbers_and_names() {
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            assert_eq!(Protocol::from_number(p.number()), Some(p));
            assert_eq!(p.to_string().parse::<Protocol>().ok(), Some(p));
        }
        assert_eq!(Protocol::from_number(1), None);
    }

    #[test]
    fn weight_and_thresholds_follow_kernel_limits() {
        assert!(Weight::new(i32::MAX as u32).is_ok());
        assert!(Weight::new(i32::MAX as u32 + 1).is_err());
        assert!(Thresholds::new(10, 5).is_ok());
        assert!(Thresholds::new(0, 0).is_ok());
        assert!(Thresholds::new(0, 5).is_err());
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

    #[test]
    fn ifname_limits() {
        assert!(IfName::new("eth0").is_ok());
        assert!(IfName::new("fifteen-chars-x").is_ok());
        assert!(IfName::new("sixteen-chars-xx").is_err());
        assert!(IfName::new("").is_err());
        assert!(IfName::new("a/b").is_err());
    }

    #[test]
    fn table_apply_uses_kernel_errnos() {
        let key = ServiceKey::Addr {
            address: "192.0.2.10".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let dest = DestKey {
            address: "198.51.100.11".parse().unwrap(),
            port: 80,
        };
        let cfg = DestConfig::tunnel(Weight::new(1).unwrap());
        let mut t = Table::new();
        let new_dest = Op::NewDest {
            service: key,
            dest,
            config: cfg,
        };
        assert_eq!(t.apply(&new_dest), Err(Errno::ESRCH));
        let new_svc = Op::NewService {
            key,
            config: ServiceConfig::new(Scheduler::RR),
        };
        assert_eq!(t.apply(&new_svc), Ok(()));
        assert_eq!(t.apply(&new_svc), Err(Errno::EEXIST));
        assert_eq!(t.apply(&new_dest), Ok(()));
        assert_eq!(t.apply(&new_dest), Err(Errno::EEXIST));
        let del_dest = Op::DelDest { service: key, dest };
        assert_eq!(t.apply(&del_dest), Ok(()));
        assert_eq!(t.apply(&del_dest), Err(Errno::ENOENT));
        assert_eq!(t.apply(&Op::DelService { key }), Ok(()));
        assert!(t.is_empty());
    }
}
