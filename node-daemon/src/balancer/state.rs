//! The VIPs this balancer has programmed, kept on disk so that lvstun touches only what is its
//! own across restarts: a VirtualService deleted while the daemon was down still has its
//! services withdrawn at the next start (its VIP is in the file), while services of other
//! tools (kube-proxy, an administrator's `ipvsadm`) on other VIPs are never touched, because
//! lvstun never claimed them.
//!
//! `STATE_DIR/balancer-owned.json` (default `/run/lvstun`: the kernel forgets its IPVS table at
//! reboot, and `/run` is emptied then too). Written before the kernel is changed (a crash in
//! between leaves a VIP claimed that was perhaps never programmed, which is harmless; the
//! reverse would leak a service) and atomically (temporary file, then rename).
//!
//! `STATE_DIR/balancer-addresses.json` records the VIP addresses the VRRP routers put on
//! interfaces ([`HeldVips`]), for the same reason: a daemon that starts again removes exactly
//! those (a router of a VirtualService deleted meanwhile would never remove its VIP itself),
//! and no address it did not add. Written before an address is added, and after one is
//! removed. A separate file, so that a daemon of an earlier version, which refuses unknown
//! fields in `balancer-owned.json`, can still read that one.
//!
//! Two more records exist so that a teardown (ADR 0008) undoes exactly what lvstun did and
//! nothing else, each in its own file for the same reason:
//! - `STATE_DIR/balancer-sysctls.json`: each `net.ipv4.vs` sysctl's value before lvstun first
//!   changed it ([`crate::net::ipvs_sysctl::Originals`]), written before the first write;
//! - `STATE_DIR/balancer-sync.json`: the IPVS connection sync daemons lvstun's routers started
//!   and have not stopped, written before a start and after a stop.
//!
//! The [`load`], [`save`], [`load_held`], [`save_held`], [`load_sysctls`], [`save_sysctls`],
//! [`load_sync`], [`save_sync`] and [`remove`] functions do file I/O; nothing else here does.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::OwnedVips;
use crate::error::Error;
use crate::net::ipvs_sysctl::Originals;
use lvstun_ipvs::model::SyncRole;

/// The file's name inside the state folder.
pub const FILE: &str = "balancer-owned.json";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    /// Every VIP lvstun has programmed services for.
    vips: BTreeSet<IpAddr>,
}

/// The state file's path in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn file_error(file: &Path, detail: impl ToString) -> Error {
    Error::File {
        path: file.display().to_string(),
        detail: detail.to_string(),
    }
}

/// Reads the owned VIPs; a missing file owns nothing (first start on this host).
pub fn load(dir: &Path) -> Result<OwnedVips, Error> {
    let file = path(dir);
    match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str::<OnDisk>(&text)
            .map(|d| d.vips.into_iter().collect())
            .map_err(|e| file_error(&file, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OwnedVips::default()),
        Err(e) => Err(file_error(&file, e)),
    }
}

/// Writes the owned VIPs atomically, creating the folder if needed.
pub fn save(dir: &Path, vips: &OwnedVips) -> Result<(), Error> {
    let on_disk = OnDisk {
        vips: vips.iter().copied().collect(),
    };
    write_atomically(dir, FILE, &on_disk)
}

/// Writes `value` as `dir/name` through a temporary file and a rename.
fn write_atomically(dir: &Path, name: &str, value: &impl Serialize) -> Result<(), Error> {
    let file = dir.join(name);
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::decode("balancer state", e))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text + "\n").map_err(|e| file_error(&tmp, e))?;
    std::fs::rename(&tmp, &file).map_err(|e| file_error(&file, e))
}

/// The file of the VIP addresses on interfaces, inside the state folder.
pub const HELD_FILE: &str = "balancer-addresses.json";

/// One VIP address a router put on an interface (by name: an index does not survive the
/// interface being made again).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldVip {
    /// The interface.
    pub interface: String,
    /// The VIP, as /32.
    pub vip: Ipv4Addr,
}

/// The VIP addresses lvstun has put on interfaces and not yet removed. Pure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldVips {
    addresses: BTreeSet<HeldVip>,
}

impl HeldVips {
    /// Records `vips` on `interface`; whether that changed the record (then it is written
    /// before the addresses are added).
    pub fn claim(&mut self, interface: &str, vips: &[Ipv4Addr]) -> bool {
        let mut changed = false;
        for vip in vips {
            changed |= self.addresses.insert(HeldVip {
                interface: interface.to_owned(),
                vip: *vip,
            });
        }
        changed
    }

    /// Forgets `vips` on `interface` (removed from the kernel); whether that changed the record.
    pub fn release(&mut self, interface: &str, vips: &[Ipv4Addr]) -> bool {
        let before = self.addresses.len();
        self.addresses
            .retain(|h| h.interface != interface || !vips.contains(&h.vip));
        self.addresses.len() != before
    }

    /// Every recorded address.
    pub fn iter(&self) -> impl Iterator<Item = &HeldVip> {
        self.addresses.iter()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }
}

/// Reads the recorded VIP addresses; a missing file holds none (first start, or a daemon of an
/// earlier version: its addresses, without a lifetime, are removed by each router's start).
pub fn load_held(dir: &Path) -> Result<HeldVips, Error> {
    let file = dir.join(HELD_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| file_error(&file, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HeldVips::default()),
        Err(e) => Err(file_error(&file, e)),
    }
}

/// Writes the recorded VIP addresses atomically.
pub fn save_held(dir: &Path, held: &HeldVips) -> Result<(), Error> {
    write_atomically(dir, HELD_FILE, held)
}

/// The file of the IPVS sysctls' values before lvstun, inside the state folder.
pub const SYSCTL_FILE: &str = "balancer-sysctls.json";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SysctlsOnDisk {
    /// Name under `net.ipv4.vs` -> value before lvstun.
    originals: Originals,
}

/// Reads the recorded sysctl originals; a missing file records none.
pub fn load_sysctls(dir: &Path) -> Result<Originals, Error> {
    load_or_default::<SysctlsOnDisk>(dir, SYSCTL_FILE).map(|d| d.originals)
}

/// Writes the sysctl originals atomically, or removes the file when there are none.
pub fn save_sysctls(dir: &Path, originals: &Originals) -> Result<(), Error> {
    if originals.is_empty() {
        return remove(dir, SYSCTL_FILE);
    }
    write_atomically(
        dir,
        SYSCTL_FILE,
        &SysctlsOnDisk {
            originals: originals.clone(),
        },
    )
}

/// The file of the sync daemons lvstun started, inside the state folder.
pub const SYNC_FILE: &str = "balancer-sync.json";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncOnDisk {
    /// Roles of the running daemons lvstun started.
    started: BTreeSet<SyncRole>,
}

/// Reads the sync daemons lvstun started; a missing file records none.
pub fn load_sync(dir: &Path) -> Result<BTreeSet<SyncRole>, Error> {
    load_or_default::<SyncOnDisk>(dir, SYNC_FILE).map(|d| d.started)
}

/// Writes the sync daemons lvstun started, or removes the file when there are none.
pub fn save_sync(dir: &Path, started: &BTreeSet<SyncRole>) -> Result<(), Error> {
    if started.is_empty() {
        return remove(dir, SYNC_FILE);
    }
    write_atomically(
        dir,
        SYNC_FILE,
        &SyncOnDisk {
            started: started.clone(),
        },
    )
}

fn load_or_default<T: Default + serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<T, Error> {
    let file = dir.join(name);
    match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| file_error(&file, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(file_error(&file, e)),
    }
}

/// Removes `dir/name`; a missing file is fine.
pub fn remove(dir: &Path, name: &str) -> Result<(), Error> {
    let file = dir.join(name);
    match std::fs::remove_file(&file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(file_error(&file, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir =
            std::env::temp_dir().join(format!("lvstun-balancer-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load(&dir).unwrap().is_empty());
        let vips: OwnedVips = ["192.0.2.100", "192.0.2.7"]
            .iter()
            .map(|v| v.parse::<IpAddr>().unwrap())
            .collect();
        save(&dir, &vips).unwrap();
        assert_eq!(load(&dir).unwrap(), vips);
        let text = std::fs::read_to_string(path(&dir)).unwrap();
        assert!(text.contains("\"192.0.2.100\""), "{text}");
        std::fs::write(path(&dir), "{\"vips\": [\"nope\"]}").unwrap();
        assert!(
            load(&dir).is_err(),
            "a corrupt file is an error, not an empty claim"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sysctl_and_sync_records_round_trip_and_vanish_when_empty() {
        let dir = std::env::temp_dir().join(format!("lvstun-teardown-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load_sysctls(&dir).unwrap().is_empty());
        assert!(load_sync(&dir).unwrap().is_empty());
        let originals = Originals::from([("sloppy_tcp".to_string(), 0)]);
        save_sysctls(&dir, &originals).unwrap();
        assert_eq!(load_sysctls(&dir).unwrap(), originals);
        let sync = BTreeSet::from([SyncRole::Backup]);
        save_sync(&dir, &sync).unwrap();
        assert_eq!(load_sync(&dir).unwrap(), sync);
        let text = std::fs::read_to_string(dir.join(SYNC_FILE)).unwrap();
        assert!(text.contains("\"backup\""), "{text}");
        save_sysctls(&dir, &Originals::new()).unwrap();
        save_sync(&dir, &BTreeSet::new()).unwrap();
        assert!(!dir.join(SYSCTL_FILE).exists() && !dir.join(SYNC_FILE).exists());
        remove(&dir, SYNC_FILE).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn held_vips_claim_release_and_round_trip() {
        let a = Ipv4Addr::new(192, 0, 2, 100);
        let b = Ipv4Addr::new(192, 0, 2, 101);
        let mut held = HeldVips::default();
        assert!(
            held.claim("eth0", &[a, b]),
            "new addresses change the record"
        );
        assert!(!held.claim("eth0", &[a]), "a renewal writes nothing");
        assert!(
            held.claim("eth1", &[a]),
            "the same VIP on another interface is another"
        );
        assert!(held.release("eth0", &[a]));
        assert!(!held.release("eth0", &[a]), "already forgotten");
        let left: Vec<(&str, Ipv4Addr)> =
            held.iter().map(|h| (h.interface.as_str(), h.vip)).collect();
        assert_eq!(left, vec![("eth0", b), ("eth1", a)]);

        let dir = std::env::temp_dir().join(format!("lvstun-held-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load_held(&dir).unwrap().is_empty(), "no file, nothing held");
        save_held(&dir, &held).unwrap();
        assert_eq!(load_held(&dir).unwrap(), held);
        let text = std::fs::read_to_string(dir.join(HELD_FILE)).unwrap();
        assert!(text.contains("\"interface\": \"eth1\""), "{text}");
        std::fs::write(dir.join(HELD_FILE), "{\"addresses\": [{\"vip\": \"x\"}]}").unwrap();
        assert!(load_held(&dir).is_err(), "a corrupt record is an error");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
