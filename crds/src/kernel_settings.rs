//! The kernel settings a balancer wants (the `net.ipv4.vs` sysctls), what goes wrong without
//! each, and how a person fixes a refused one. Shared because two parts say it: the balancer
//! (log line, metric) and the operator (the `Degraded` condition and its Event); one text keeps
//! them from drifting apart. Pure, no I/O. Why each value matters is told at length in
//! `node-daemon/src/ipvs/sysctl.rs`.

use crate::v1alpha1::KernelSettingRefusal;

/// Prefix of the IPVS sysctls' full names.
pub const PREFIX: &str = "net.ipv4.vs.";

/// Where the kernel shows the IPVS sysctls of a network namespace (on the host).
pub const HOST_DIR: &str = "/proc/sys/net/ipv4/vs";

/// The settings lvstun wants, as (name under `net.ipv4.vs`, value).
pub const WANTED: &[(&str, u32)] = &[("expire_nodest_conn", 1), ("sloppy_tcp", 1)];

/// The full sysctl name of `name` (`sloppy_tcp` -> `net.ipv4.vs.sloppy_tcp`).
pub fn full_name(name: &str) -> String {
    if name.starts_with(PREFIX) {
        name.to_owned()
    } else {
        format!("{PREFIX}{name}")
    }
}

/// What goes wrong while setting `name` (short or full name) cannot be made.
pub fn consequence(name: &str) -> &'static str {
    match name.strip_prefix(PREFIX).unwrap_or(name) {
        "expire_nodest_conn" => {
            "a client reusing a source port may be sent to a real server that failed its health check"
        }
        "sloppy_tcp" => {
            "after a failover, connections the sync daemon did not carry are reset (with mh too)"
        }
        _ => "forwarding works, but not as lvstun intends",
    }
}

/// How a person makes setting `name` to `wanted` when the balancer could not, for `reason`.
/// Setting it on the host always works, so every fix ends with it.
pub fn fix(name: &str, wanted: i64, reason: KernelSettingRefusal) -> String {
    let full = full_name(name);
    let host = format!(
        "or set {full}={wanted} on the node (a file in /etc/sysctl.d/ applied after ip_vs loads)"
    );
    match reason {
        KernelSettingRefusal::ReadOnly => format!(
            "/proc/sys is read-only in the balancer's container: mount the node's {HOST_DIR} \
             outside /proc and pass it with --ipvs-sysctl-dir (the operator's balancer \
             DaemonSet does), {host}"
        ),
        KernelSettingRefusal::PermissionDenied => format!(
            "the balancer needs CAP_NET_ADMIN in the node's network namespace (hostNetwork), {host}"
        ),
        KernelSettingRefusal::NotFound => format!(
            "the sysctl is missing: ip_vs is not loaded or --ipvs-sysctl-dir is not the node's \
             {HOST_DIR} (check the balancer pod's mount and its prepare init container), {host}"
        ),
        KernelSettingRefusal::Other => format!("see the balancer's log, {host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wanted_setting_has_its_own_consequence() {
        for (name, _) in WANTED {
            assert_ne!(consequence(name), consequence("unknown"), "{name}");
            assert_eq!(consequence(name), consequence(&full_name(name)));
        }
    }

    #[test]
    fn full_names_are_not_prefixed_twice() {
        assert_eq!(full_name("sloppy_tcp"), "net.ipv4.vs.sloppy_tcp");
        assert_eq!(
            full_name("net.ipv4.vs.sloppy_tcp"),
            "net.ipv4.vs.sloppy_tcp"
        );
    }

    #[test]
    fn every_fix_names_the_mount_or_the_host_setting() {
        for reason in [
            KernelSettingRefusal::ReadOnly,
            KernelSettingRefusal::PermissionDenied,
            KernelSettingRefusal::NotFound,
            KernelSettingRefusal::Other,
        ] {
            let text = fix("sloppy_tcp", 1, reason);
            assert!(
                text.contains("set net.ipv4.vs.sloppy_tcp=1 on the node"),
                "{text}"
            );
        }
        assert!(fix("sloppy_tcp", 1, KernelSettingRefusal::ReadOnly).contains("--ipvs-sysctl-dir"));
    }
}
