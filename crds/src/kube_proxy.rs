//! What lvstun tells a person when another program deletes the IPVS services a balancer
//! programmed. Shared because two parts say it: the balancer (its log line) and the operator
//! (the `Degraded` condition and its Event); one text keeps them from drifting apart. Pure, no
//! I/O.
//!
//! The usual culprit is kube-proxy in IPVS mode on the balancer node. At the end of every sync
//! (its `ipvs.syncPeriod`, 30 s by default, and after every Service or EndpointSlice change)
//! its `cleanLegacyService` deletes every IPVS virtual server it did not create itself, unless
//! the address is in `ipvs.excludeCIDRs` (flag `--ipvs-exclude-cidrs`) or of the other IP
//! family (`pkg/proxy/ipvs/proxier.go` in kubernetes/kubernetes). It cannot tell lvstun's
//! services from stale ones of its own; only the exclusion list tells it.

/// The fix for deletions of services on `vips` (as written in `spec.vip`): the
/// KubeProxyConfiguration field and the flag, each with the VIPs as /32 CIDRs.
pub fn fix(vips: &[&str]) -> String {
    let cidrs: Vec<String> = vips.iter().map(|v| format!("{v}/32")).collect();
    format!(
        "if kube-proxy runs in IPVS mode on the balancer nodes, it deletes every IPVS service whose \
         address is not in its excludeCIDRs: add ipvs.excludeCIDRs: [{}] to its \
         KubeProxyConfiguration (flag --ipvs-exclude-cidrs={}) and restart it; otherwise look \
         for another program (ipvsadm -C, a second load balancer) changing this node's IPVS table",
        cidrs.join(", "),
        cidrs.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_names_the_field_the_flag_and_each_vip_as_a_host_cidr() {
        let text = fix(&["192.0.2.100", "192.0.2.101"]);
        assert!(
            text.contains("ipvs.excludeCIDRs: [192.0.2.100/32, 192.0.2.101/32]"),
            "{text}"
        );
        assert!(
            text.contains("--ipvs-exclude-cidrs=192.0.2.100/32,192.0.2.101/32"),
            "{text}"
        );
    }
}
