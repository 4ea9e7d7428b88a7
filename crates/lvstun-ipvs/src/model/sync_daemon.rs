//! The connection-sync daemon (`ipvsadm --start-daemon`): its role ([`SyncRole`]), the
//! interface it uses ([`IfName`]) and its settings ([`SyncDaemon`]). Pure data, no I/O.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::Error;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_limits() {
        assert!(IfName::new("eth0").is_ok());
        assert!(IfName::new("fifteen-chars-x").is_ok());
        assert!(IfName::new("sixteen-chars-xx").is_err());
        assert!(IfName::new("").is_err());
        assert!(IfName::new("a/b").is_err());
    }
}
