//! What the kernel reports and nobody sets: traffic counters ([`Stats`]), a destination's
//! connection counts ([`ConnCounts`]) and the general IPVS facts ([`IpvsInfo`]). Pure data, no
//! I/O.

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
