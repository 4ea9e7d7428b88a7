//! The IPVS sysctls (`net.ipv4.vs.*`) a tunnelling balancer needs, which the generic netlink
//! family cannot set: deciding which to change is pure ([`changes`]); reading and writing
//! `/proc/sys/net/ipv4/vs/` is the thin applier ([`ensure`]).
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
//! The values are per network namespace. In a pod with host networking `/proc/sys` is writable
//! only when the container is privileged; otherwise the write fails and the daemon says what to
//! set on the host instead. It keeps running: forwarding works without the setting, only the
//! port-reuse case above misbehaves.

use std::path::{Path, PathBuf};

/// Where the kernel shows the IPVS sysctls of this network namespace.
pub const PROC_DIR: &str = "/proc/sys/net/ipv4/vs";

/// The settings lvstun wants, as (name, value); the module comment says why each.
pub const WANTED: &[(&str, u32)] = &[("expire_nodest_conn", 1), ("sloppy_tcp", 1)];

/// What goes wrong while setting `name` cannot be made (for the warning a refused write
/// logs).
pub fn consequence(name: &str) -> &'static str {
    match name {
        "expire_nodest_conn" => {
            "a client reusing a source port may be sent to a real server that failed its health check"
        }
        "sloppy_tcp" => {
            "after a failover, connections the sync daemon did not carry are reset (with mh too)"
        }
        _ => "forwarding works, but not as lvstun intends",
    }
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

/// What happened to one setting.
#[derive(Debug)]
pub enum Outcome {
    /// Written.
    Set(Change),
    /// Left alone because this is a dry run.
    WouldSet(Change),
    /// The kernel (or a read-only `/proc/sys`) refused; the string says how to fix it.
    Refused(Change, String),
}

/// Reads the settings under `dir` and writes those that differ; `dry_run` only reports.
pub fn ensure(dir: &Path, dry_run: bool) -> Vec<Outcome> {
    let path = |name: &str| -> PathBuf { dir.join(name) };
    let read = |name: &str| -> Option<u32> {
        std::fs::read_to_string(path(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    changes(read)
        .into_iter()
        .map(|change| {
            if dry_run {
                return Outcome::WouldSet(change);
            }
            match std::fs::write(path(change.name), format!("{}\n", change.wanted)) {
                Ok(()) => Outcome::Set(change),
                Err(e) => {
                    let hint = format!(
                        "writing {}: {e}; set net.ipv4.vs.{}={} on the host (a file in \
                         /etc/sysctl.d/ after ip_vs is loaded) or run the balancer privileged",
                        path(change.name).display(),
                        change.name,
                        change.wanted
                    );
                    Outcome::Refused(change, hint)
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
    }
}
