//! The IPVS sysctls (`net.ipv4.vs.*`) a tunnelling balancer needs, which the generic netlink
//! family cannot set: deciding which to change and what a refusal means is pure ([`changes`],
//! [`refusal_of`], [`refused`]); reading and writing the sysctl directory is the thin applier
//! ([`ensure`]). The names, values, consequences and fixes are shared with the operator
//! ([`lvstun_crds::kernel_settings`]).
//!
//! Why `expire_nodest_conn = 1`: in TUN mode IPVS sees only the client's half of a connection,
//! so an entry stays in FIN_WAIT for two minutes after the connection ends. A client that
//! reuses a source port within that time (clients do: ports are drawn from a window that
//! wraps) sends a SYN that matches the old entry, and with the kernel's default the SYN goes to
//! the entry's real server even when its weight is 0 because its health check failed: the
//! client gets a reset from a dead server. With `expire_nodest_conn = 1` the kernel drops the
//! stale entry and schedules that SYN afresh (`ip_vs_in_hook`, net/netfilter/ipvs/ip_vs_core.c).
//! Established connections to a quiesced server are not touched: they drain. ldirectord's
//! documentation gives the same advice for its `quiescent = yes` (our health model).
//!
//! Why `sloppy_tcp = 1`: after a failover the new Master sees the middle of every connection
//! the old one forwarded, and by default IPVS creates an entry only from a SYN: any other
//! packet of a flow it has no entry for is delivered to the balancer's own stack, which owns
//! the VIP now and answers with a reset. With `sloppy_tcp = 1` such a packet is scheduled like
//! a SYN (`ip_vs_in_hook` → `tcp_conn_schedule`, `net/netfilter/ipvs/ip_vs_proto_tcp.c`). With
//! `mh` every balancer holding the same destinations in the same order picks the same real
//! server for it, so the flow survives without any shared state; with other schedulers the
//! entry the connection sync daemon carried is found first, and the setting only matters for
//! a flow the sync missed (a reset from a real server instead of one from the balancer). The
//! kernel documents it for this use ("useful for LVS directors in active/active failover").
//!
//! The values are per network namespace. A container runtime mounts `/proc/sys` read-only in
//! every unprivileged container, so a balancer pod writes them through the node's
//! `/proc/sys/net/ipv4/vs` mounted elsewhere (`--ipvs-sysctl-dir`, see ADR 0005); a write that
//! still fails is reported, not fatal: in the daemon's log, in its status entry (the operator
//! folds it into `Degraded`) and as `lvstun_balancer_sysctl_refused`. Forwarding works without
//! the settings; only the cases above misbehave.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use lvstun_crds::kernel_settings::{self, WANTED};
use lvstun_crds::v1alpha1::{KernelSettingRefusal, RefusedKernelSetting};

/// Where the kernel shows the IPVS sysctls of this network namespace.
pub const PROC_DIR: &str = kernel_settings::HOST_DIR;

/// What goes wrong while setting `name` cannot be made (for the warning a refused write
/// logs).
pub fn consequence(name: &str) -> &'static str {
    kernel_settings::consequence(name)
}

/// One setting to change: its name, the value read, the value wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The sysctl's name under `net.ipv4.vs`.
    pub name: &'static str,
    /// What the kernel holds now (`None` when unreadable).
    pub current: Option<u32>,
    /// What lvstun wants.
    pub wanted: u32,
}

/// The settings in [`WANTED`] whose current value (looked up by `read`) differs.
pub fn changes(read: impl Fn(&str) -> Option<u32>) -> Vec<Change> {
    WANTED
        .iter()
        .filter_map(|&(name, wanted)| {
            let current = read(name);
            (current != Some(wanted)).then_some(Change {
                name,
                current,
                wanted,
            })
        })
        .collect()
}

/// Why a write failed, by the error's kind (which the standard library derives from the
/// errno), never by its text.
pub fn refusal_of(kind: io::ErrorKind) -> KernelSettingRefusal {
    match kind {
        io::ErrorKind::ReadOnlyFilesystem => KernelSettingRefusal::ReadOnly,
        io::ErrorKind::PermissionDenied => KernelSettingRefusal::PermissionDenied,
        io::ErrorKind::NotFound => KernelSettingRefusal::NotFound,
        _ => KernelSettingRefusal::Other,
    }
}

/// What happened to one setting.
#[derive(Debug)]
pub enum Outcome {
    /// Written.
    Set(Change),
    /// Left alone because this is a dry run.
    WouldSet(Change),
    /// The kernel (or a read-only `/proc/sys`) refused: why, and the error for the log.
    Refused(Change, KernelSettingRefusal, String),
}

/// The refused settings among `outcomes`, as the status entry and the metric carry them
/// (sorted by name, so an unchanged situation compares equal).
pub fn refused(outcomes: &[Outcome]) -> Vec<RefusedKernelSetting> {
    let mut out: Vec<RefusedKernelSetting> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Refused(c, reason, _) => Some(RefusedKernelSetting {
                name: kernel_settings::full_name(c.name),
                wanted: i64::from(c.wanted),
                current: c.current.map(i64::from),
                reason: *reason,
            }),
            Outcome::Set(_) | Outcome::WouldSet(_) => None,
        })
        .collect();
    out.sort();
    out
}

/// Writes `value` to an existing file: a sysctl is never created, so a `--ipvs-sysctl-dir`
/// that is not the kernel's (an empty folder) fails as `NotFound` instead of collecting files.
fn write_existing(path: &Path, value: u32) -> io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(format!("{value}\n").as_bytes())
}

/// The value lvstun wants for `name`, if it wants one.
pub fn wanted(name: &str) -> Option<u32> {
    WANTED.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// The values before lvstun, by name: what a teardown restores.
pub type Originals = BTreeMap<String, u32>;

/// Adds to `originals` the value each setting in `changes` has now, unless one is recorded
/// already (the first value lvstun saw is the one before lvstun, whatever happened since) or
/// the value is unknown. Returns whether the record changed (then it is written before the
/// kernel is). Pure.
pub fn remember(originals: &mut Originals, changes: &[Change]) -> bool {
    let mut changed = false;
    for c in changes {
        if let Some(current) = c.current
            && !originals.contains_key(c.name)
        {
            originals.insert(c.name.to_owned(), current);
            changed = true;
        }
    }
    changed
}

/// What a teardown does with one recorded setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restore {
    /// It still holds lvstun's value: write the original back.
    Write {
        /// The sysctl's name under `net.ipv4.vs`.
        name: String,
        /// Its value now (lvstun's).
        from: u32,
        /// The value before lvstun.
        to: u32,
    },
    /// It holds the original already: only the record goes.
    Already {
        /// The sysctl's name.
        name: String,
    },
    /// Someone changed it after lvstun did (or it cannot be read): theirs stays.
    Leave {
        /// The sysctl's name.
        name: String,
        /// Its value now, if readable.
        current: Option<u32>,
        /// The value before lvstun.
        original: u32,
    },
}

/// For each recorded setting, what a teardown does, given its current value (`read`). A value
/// is written back only while it is still lvstun's, as the web role does with its per-interface
/// settings: a value someone set after lvstun is theirs. Pure.
pub fn restores(originals: &Originals, read: impl Fn(&str) -> Option<u32>) -> Vec<Restore> {
    originals
        .iter()
        .map(|(name, &original)| {
            let current = read(name);
            match (current, wanted(name)) {
                (Some(c), _) if c == original => Restore::Already { name: name.clone() },
                (Some(c), Some(w)) if c == w => Restore::Write {
                    name: name.clone(),
                    from: c,
                    to: original,
                },
                _ => Restore::Leave {
                    name: name.clone(),
                    current,
                    original,
                },
            }
        })
        .collect()
}

/// Reads one setting under `dir` (`None` when missing or unreadable).
pub fn read(dir: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Writes one existing setting under `dir`.
pub fn write(dir: &Path, name: &str, value: u32) -> io::Result<()> {
    write_existing(&dir.join(name), value)
}

/// Reads the settings under `dir` and writes those that differ; `dry_run` only reports.
pub fn ensure(dir: &Path, dry_run: bool) -> Vec<Outcome> {
    ensure_recorded(dir, dry_run, |_| {})
}

/// [`ensure`], calling `record` with the settings about to be written, before writing them
/// (not in a dry run), so their values before lvstun can be kept for a teardown.
pub fn ensure_recorded(dir: &Path, dry_run: bool, record: impl FnOnce(&[Change])) -> Vec<Outcome> {
    let path = |name: &str| -> PathBuf { dir.join(name) };
    let todo = changes(|name| read(dir, name));
    if !dry_run && !todo.is_empty() {
        record(&todo);
    }
    todo.into_iter()
        .map(|change| {
            if dry_run {
                return Outcome::WouldSet(change);
            }
            match write_existing(&path(change.name), change.wanted) {
                Ok(()) => Outcome::Set(change),
                Err(e) => {
                    let detail = format!("writing {}: {e}", path(change.name).display());
                    Outcome::Refused(change, refusal_of(e.kind()), detail)
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_differing_settings_change() {
        assert!(changes(|_| Some(1)).is_empty());
        assert_eq!(
            changes(|_| Some(0)),
            vec![
                Change {
                    name: "expire_nodest_conn",
                    current: Some(0),
                    wanted: 1
                },
                Change {
                    name: "sloppy_tcp",
                    current: Some(0),
                    wanted: 1
                }
            ]
        );
        // Only the one that differs.
        let one = changes(|name| Some(u32::from(name == "expire_nodest_conn")));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, "sloppy_tcp");
        // Every wanted setting has its own warning.
        for (name, _) in WANTED {
            assert_ne!(
                consequence(name),
                consequence("unknown"),
                "{name} has no consequence"
            );
        }
        // Unreadable (ip_vs not loaded yet, or no /proc): still wanted, current unknown.
        assert_eq!(changes(|_| None)[0].current, None);
    }

    #[test]
    fn ensure_writes_and_reports() {
        let dir = std::env::temp_dir().join(format!("lvstun-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("expire_nodest_conn"), "0\n").unwrap();
        std::fs::write(dir.join("sloppy_tcp"), "1\n").unwrap();
        let out = ensure(&dir, true);
        assert!(
            matches!(&out[..], [Outcome::WouldSet(c)] if c.name == "expire_nodest_conn" && c.current == Some(0))
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("expire_nodest_conn")).unwrap(),
            "0\n"
        );
        let out = ensure(&dir, false);
        assert!(matches!(&out[..], [Outcome::Set(c)] if c.wanted == 1));
        assert_eq!(
            std::fs::read_to_string(dir.join("expire_nodest_conn")).unwrap(),
            "1\n"
        );
        std::fs::write(dir.join("sloppy_tcp"), "0\n").unwrap();
        let out = ensure(&dir, false);
        assert!(matches!(&out[..], [Outcome::Set(c)] if c.name == "sloppy_tcp"));
        assert_eq!(
            std::fs::read_to_string(dir.join("sloppy_tcp")).unwrap(),
            "1\n"
        );
        assert!(ensure(&dir, false).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
        // The directory is gone (ip_vs not loaded, or no mount): refused as NotFound, and
        // reported with its full name, the wanted value and no current value.
        let out = ensure(&dir, false);
        let list = refused(&out);
        assert_eq!(
            list.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["net.ipv4.vs.expire_nodest_conn", "net.ipv4.vs.sloppy_tcp"]
        );
        assert!(
            list.iter()
                .all(|r| r.reason == KernelSettingRefusal::NotFound
                    && r.current.is_none()
                    && r.wanted == 1)
        );
    }

    #[test]
    fn a_folder_that_is_not_the_kernels_is_not_filled() {
        let dir = std::env::temp_dir().join(format!("lvstun-sysctl-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = ensure(&dir, false);
        assert!(
            refused(&out)
                .iter()
                .all(|r| r.reason == KernelSettingRefusal::NotFound)
        );
        assert_eq!(refused(&out).len(), WANTED.len());
        assert!(
            !dir.join("sloppy_tcp").exists(),
            "no sysctl file is created"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_value_before_lvstun_is_remembered_once() {
        let mut originals = Originals::new();
        let first = changes(|name| Some(u32::from(name == "sloppy_tcp")));
        assert!(remember(&mut originals, &first));
        assert_eq!(
            originals,
            Originals::from([("expire_nodest_conn".to_string(), 0)])
        );
        // Someone reset it to 2 later and lvstun set it again: the record keeps 0.
        let again = changes(|_| Some(2));
        assert!(remember(&mut originals, &again), "sloppy_tcp is new");
        assert_eq!(originals["expire_nodest_conn"], 0);
        assert_eq!(originals["sloppy_tcp"], 2);
        assert!(!remember(&mut originals, &again), "nothing new");
        // An unreadable value cannot be restored: nothing recorded.
        let mut none = Originals::new();
        assert!(!remember(&mut none, &changes(|_| None)));
        assert!(none.is_empty());
    }

    #[test]
    fn a_teardown_restores_only_what_still_holds_lvstuns_value() {
        let originals = Originals::from([
            ("expire_nodest_conn".to_string(), 0),
            ("sloppy_tcp".to_string(), 0),
            ("some_future_knob".to_string(), 3),
        ]);
        let now = |name: &str| match name {
            "expire_nodest_conn" => Some(1), // lvstun's
            "sloppy_tcp" => Some(5),         // someone else's since
            _ => None,
        };
        assert_eq!(
            restores(&originals, now),
            vec![
                Restore::Write {
                    name: "expire_nodest_conn".into(),
                    from: 1,
                    to: 0
                },
                Restore::Leave {
                    name: "sloppy_tcp".into(),
                    current: Some(5),
                    original: 0
                },
                Restore::Leave {
                    name: "some_future_knob".into(),
                    current: None,
                    original: 3
                },
            ]
        );
        assert_eq!(
            restores(&originals, |_| Some(0))[0],
            Restore::Already {
                name: "expire_nodest_conn".into()
            }
        );
    }

    #[test]
    fn ensure_records_before_it_writes() {
        let dir = std::env::temp_dir().join(format!("lvstun-sysctl-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("expire_nodest_conn"), "0\n").unwrap();
        std::fs::write(dir.join("sloppy_tcp"), "1\n").unwrap();
        let mut seen = Originals::new();
        let out = ensure_recorded(&dir, false, |c| {
            // The kernel still holds the old value when the record is taken.
            assert_eq!(read(&dir, "expire_nodest_conn"), Some(0));
            remember(&mut seen, c);
        });
        assert_eq!(out.len(), 1);
        assert_eq!(
            seen,
            Originals::from([("expire_nodest_conn".to_string(), 0)])
        );
        let mut called = false;
        ensure_recorded(&dir, false, |_| called = true);
        assert!(!called, "nothing to write, nothing to record");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refusals_are_decided_by_error_kind() {
        // What a container's read-only /proc/sys answers (EROFS).
        let erofs = io::Error::from_raw_os_error(30);
        assert_eq!(refusal_of(erofs.kind()), KernelSettingRefusal::ReadOnly);
        // EACCES and EPERM: no CAP_NET_ADMIN over the namespace.
        for errno in [13, 1] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(refusal_of(e.kind()), KernelSettingRefusal::PermissionDenied);
        }
        let enoent = io::Error::from_raw_os_error(2);
        assert_eq!(refusal_of(enoent.kind()), KernelSettingRefusal::NotFound);
        let einval = io::Error::from_raw_os_error(22);
        assert_eq!(refusal_of(einval.kind()), KernelSettingRefusal::Other);
    }

    #[test]
    fn only_refusals_are_listed_sorted() {
        let change = |name| Change {
            name,
            current: Some(0),
            wanted: 1,
        };
        let out = vec![
            Outcome::Refused(
                change("sloppy_tcp"),
                KernelSettingRefusal::ReadOnly,
                "x".into(),
            ),
            Outcome::Set(change("a")),
            Outcome::Refused(
                change("expire_nodest_conn"),
                KernelSettingRefusal::ReadOnly,
                "x".into(),
            ),
        ];
        let list = refused(&out);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, "net.ipv4.vs.expire_nodest_conn");
        assert_eq!(list[1].current, Some(0));
    }
}
