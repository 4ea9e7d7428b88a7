//! Addressing words every other part of the model uses: the address family and transport
//! protocol as the kernel numbers them, and the `addr:port` text ipvsadm prints. Pure data, no
//! I/O.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::Error;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_numbers_and_names() {
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            assert_eq!(Protocol::from_number(p.number()), Some(p));
            assert_eq!(p.to_string().parse::<Protocol>().ok(), Some(p));
        }
        assert_eq!(Protocol::from_number(1), None);
    }
}
