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
//! The [`load`] and [`save`] functions do file I/O; nothing else here does.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::OwnedVips;
use crate::error::Error;

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
    let file = path(dir);
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let on_disk = OnDisk {
        vips: vips.iter().copied().collect(),
    };
    let text =
        serde_json::to_string_pretty(&on_disk).map_err(|e| Error::decode("balancer state", e))?;
    let tmp = dir.join(format!(".{FILE}.tmp"));
    std::fs::write(&tmp, text + "\n").map_err(|e| file_error(&tmp, e))?;
    std::fs::rename(&tmp, &file).map_err(|e| file_error(&file, e))
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
}
