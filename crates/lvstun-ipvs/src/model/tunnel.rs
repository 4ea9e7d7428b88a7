//! How IPVS forwards packets to a destination ([`Forward`]), and for tunnels which
//! encapsulation ([`Tunnel`]: ipip, GUE, GRE). Pure data, no I/O.

use std::num::NonZeroU16;

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
