//! What lvstun changed on this host, so that it can undo exactly that and nothing else: the
//! devices it created or brought up, the addresses it added, and each sysctl's value before
//! lvstun changed it. Kept as JSON in `STATE_DIR/web-state.json` (default `/run/lvstun`: the
//! kernel forgets its side at reboot, and so does `/run`).
//!
//! The nft tables need no entry: they are lvstun's by name ([`crate::net::arp_guard::TABLE`]).
//!
//! The model and its updates ([`State::record`]) are pure; [`load`] and [`save`] do the file
//! I/O (save writes a temporary file and renames it, so a crash never leaves half a file).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ops::{Op, Record, Saved};
use crate::error::Error;
use crate::net::devconf::Knob;

/// The file's name inside the state folder.
pub const FILE: &str = "web-state.json";

/// Everything lvstun changed on this host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Devices lvstun created (deleted on cleanup).
    #[serde(default)]
    pub created_links: BTreeSet<String>,
    /// Devices lvstun brought up that were down (brought down again on cleanup).
    #[serde(default)]
    pub raised_links: BTreeSet<String>,
    /// Addresses lvstun added: device name -> addresses (/32).
    #[serde(default)]
    pub addrs: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// Sysctls lvstun changed: device name -> knob -> values.
    #[serde(default)]
    pub devconf: BTreeMap<String, BTreeMap<Knob, Saved>>,
}

impl State {
    /// Whether lvstun holds nothing on this host (the file can go).
    pub fn is_empty(&self) -> bool {
        *self == State::default()
    }

    /// What lvstun saved for a knob.
    pub fn saved(&self, dev: &str, knob: Knob) -> Option<Saved> {
        self.devconf.get(dev)?.get(&knob).copied()
    }

    /// Forgets everything about a device (it is gone).
    pub fn forget_link(&mut self, dev: &str) {
        self.created_links.remove(dev);
        self.raised_links.remove(dev);
        self.addrs.remove(dev);
        self.devconf.remove(dev);
    }

    /// Updates the record after `op` succeeded in the kernel (or, for state-only operations,
    /// instead of the kernel).
    pub fn record(&mut self, op: &Op) {
        match op {
            Op::LoadIpip | Op::ReplaceGuard { .. } => {}
            Op::CreateDummy { name } => {
                self.created_links.insert(name.clone());
            }
            Op::SetUp { name, up, .. } => {
                if *up {
                    self.raised_links.insert(name.clone());
                } else {
                    self.raised_links.remove(name);
                }
            }
            Op::DeleteLink { name } => self.forget_link(name),
            Op::AddVip { dev, vip } => {
                self.addrs.entry(dev.clone()).or_default().insert(*vip);
            }
            Op::DelVip { dev, vip } | Op::ForgetVip { dev, vip } => {
                if let Some(set) = self.addrs.get_mut(dev) {
                    set.remove(vip);
                    if set.is_empty() {
                        self.addrs.remove(dev);
                    }
                }
            }
            Op::SetConf {
                dev, knob, record, ..
            } => match record {
                Record::Save(saved) => {
                    self.devconf
                        .entry(dev.clone())
                        .or_default()
                        .insert(*knob, *saved);
                }
                Record::Forget => self.forget_conf(dev, *knob),
            },
            Op::ForgetConf { dev, knob } => self.forget_conf(dev, *knob),
        }
    }

    fn forget_conf(&mut self, dev: &str, knob: Knob) {
        if let Some(map) = self.devconf.get_mut(dev) {
            map.remove(&knob);
            if map.is_empty() {
                self.devconf.remove(dev);
            }
        }
    }
}

/// The state file's path in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads the state; a missing file is an empty state (nothing changed yet).
pub fn load(dir: &Path) -> Result<State, Error> {
    let file = path(dir);
    match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| Error::File {
            path: file.display().to_string(),
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(Error::File {
            path: file.display().to_string(),
            detail: e.to_string(),
        }),
    }
}

/// Reads the state as [`load`] does, except that a file that is not a state (corrupt, written
/// by something else, cut short) does not stop the daemon: it is moved aside as
/// `web-state.json.corrupt` (kept for whoever investigates), a warning says what was ignored,
/// and the daemon goes on from an empty record and what the kernel shows. What the lost record
/// knew is then unknown: cleanup leaves those changes in place rather than guess.
pub fn load_or_recover(dir: &Path) -> Result<State, Error> {
    let file = path(dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => String::new(),
        Err(e) => {
            return Err(Error::File {
                path: file.display().to_string(),
                detail: e.to_string(),
            });
        }
    };
    match serde_json::from_str(&text) {
        Ok(state) => Ok(state),
        Err(e) => {
            let aside = dir.join(format!("{FILE}.corrupt"));
            let moved = std::fs::rename(&file, &aside);
            tracing::warn!(
                path = %file.display(),
                error = %e,
                moved_to = %aside.display(),
                moved = moved.is_ok(),
                "the web role's record is not readable: ignored, going on from what the kernel shows (changes it recorded will not be undone by cleanup)"
            );
            Ok(State::default())
        }
    }
}

/// Writes the state (atomically), or removes the file when the state is empty.
pub fn save(dir: &Path, state: &State) -> Result<(), Error> {
    let file = path(dir);
    let fail = |e: std::io::Error| Error::File {
        path: file.display().to_string(),
        detail: e.to_string(),
    };
    if state.is_empty() {
        return match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fail(e)),
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(dir).map_err(fail)?;
    let text = serde_json::to_string_pretty(state).map_err(|e| Error::decode("web state", e))?;
    let tmp = dir.join(format!(".{FILE}.tmp"));
    std::fs::write(&tmp, text + "\n").map_err(fail)?;
    std::fs::rename(&tmp, &file).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_record_is_moved_aside_and_the_daemon_goes_on() {
        let dir = std::env::temp_dir().join(format!("lvstun-web-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in [
            ("truncated", &b"{\"created_links\": [\"lvs"[..]),
            ("not JSON", &b"\x00\xff garbage"[..]),
            ("another program's", &b"{\"hello\": 1}"[..]),
        ] {
            std::fs::write(path(&dir), bytes).unwrap();
            assert!(load(&dir).is_err(), "{name}: load refuses it");
            let got = load_or_recover(&dir).unwrap();
            assert_eq!(got, State::default(), "{name}");
            assert!(!path(&dir).exists(), "{name}: moved aside");
            assert_eq!(
                std::fs::read(dir.join(format!("{FILE}.corrupt"))).unwrap(),
                bytes,
                "{name}: kept as it was"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_and_forgets() {
        let mut s = State::default();
        s.record(&Op::CreateDummy {
            name: "lvstun0".into(),
        });
        s.record(&Op::AddVip {
            dev: "lvstun0".into(),
            vip: Ipv4Addr::new(192, 0, 2, 100),
        });
        s.record(&Op::SetConf {
            dev: "eth0".into(),
            knob: Knob::ArpIgnore,
            value: 1,
            record: Record::Save(Saved {
                original: 0,
                set: 1,
            }),
        });
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), s);
        s.record(&Op::SetConf {
            dev: "eth0".into(),
            knob: Knob::ArpIgnore,
            value: 0,
            record: Record::Forget,
        });
        s.record(&Op::DeleteLink {
            name: "lvstun0".into(),
        });
        assert!(s.is_empty(), "{s:?}");
    }

    #[test]
    fn file_round_trip_and_removal() {
        let dir = std::env::temp_dir().join(format!("lvstun-state-test-{}", std::process::id()));
        let mut s = State::default();
        assert_eq!(load(&dir).unwrap(), s);
        s.raised_links.insert("tunl0".into());
        save(&dir, &s).unwrap();
        assert_eq!(load(&dir).unwrap(), s);
        save(&dir, &State::default()).unwrap();
        assert!(!path(&dir).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
