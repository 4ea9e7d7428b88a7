//! The web role in the lab VM (`tests/lab/scenarios/web-daemon.sh`): `lvstun-node web --config`
//! prepares both real servers by itself, lb1 runs ipvsadm as in the classic recipe, and:
//! - requests through the VIP reach both web servers (ipip decapsulated on tunl0, VIP on
//!   lvstun0, web2 even though its tunl0 was born with strict `rp_filter`);
//! - nobody on the web segments answers ARP for the VIP, while lb1 does on the front;
//! - a 1 MB POST through the VIP fails without the MSS clamp (ICMP filtered, as on many
//!   networks) and succeeds with it, on 1500-byte links everywhere;
//! - `/readyz` and `web check` say ready; a second `web apply` writes nothing;
//! - removing the RealServer from the file (web1) or `web cleanup` (web2) leaves the node as it
//!   was, except for `tunl0`, which the kernel made when `ipip` loaded and which no
//!   unprivileged process can remove (it is left down, without addresses).
//!
//! Needs root and the lab (see `tests/lab/README.md`).
//! Run: `cargo test -p lvstun-tests --test lab_web_daemon -- --nocapture`
//! (`LVSTUN_LAB_REUSE_WEB_DAEMON=<run folder>` re-checks a finished run without the VM).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use lvstun_tests::lab::parse::{ip, log, nft};
use lvstun_tests::lab::{self, LabRun, parse};

const REQUESTS: usize = 6;

/// A snapshot, by section (`### ip -d link`, ...), each a list of lines.
fn sections(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("### ") {
            current = name.to_string();
            out.entry(current.clone()).or_default();
        } else if !current.is_empty() {
            out.entry(current.clone())
                .or_default()
                .push(line.to_string());
        }
    }
    out
}

/// The snapshot without `tunl0`, which the kernel creates in every namespace when `ipip`
/// loads (the daemon cannot unload a module: it has no CAP_SYS_MODULE).
fn without_tunl0(snapshot: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    snapshot
        .iter()
        .map(|(name, lines)| {
            let kept: Vec<String> = match name.as_str() {
                "ip -d link" | "ip addr" => ip::link_blocks(lines)
                    .into_iter()
                    .filter(|b| b.name != "tunl0")
                    .flat_map(|b| b.lines)
                    .collect(),
                "sysctl" => lines
                    .iter()
                    .filter(|l| !l.contains("/tunl0/"))
                    .cloned()
                    .collect(),
                _ => lines.clone(),
            };
            (name.clone(), kept)
        })
        .collect()
}

fn result_rc(run: &LabRun, key: &str) -> i32 {
    run.result(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in results ({})", run.out_dir.display()))
}

/// Seconds between the two uptimes a `t_*` result holds.
fn elapsed(run: &LabRun, key: &str) -> f64 {
    let v: Vec<f64> = run
        .result(key)
        .unwrap_or("0 0")
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    match v.as_slice() {
        [a, b] => b - a,
        _ => f64::NAN,
    }
}

#[test]
fn web_daemon_prepares_real_servers_and_leaves_no_trace() -> anyhow::Result<()> {
    let requests = REQUESTS.to_string();
    let run = lab::run_or_reuse_with(
        "web-daemon",
        &[("REQUESTS", &requests)],
        &[("lvstun-node", "lvstun-node")],
    )?;
    let out = run.out_dir.display().to_string();
    eprintln!(
        "[lab_web_daemon] run folder {out}; wall {:.1}s, vm {:?}s, guest boot {:?}s, guest end {:?}s",
        run.wall.as_secs_f64(),
        run.timing.get("vm_wall_s"),
        run.timing.get("guest_boot_s"),
        run.timing.get("guest_end_s"),
    );
    eprintln!(
        "[lab_web_daemon] first ready {:.1}s, restart ready {:.1}s, second apply web1 {:.1}s / web2 {:.1}s, undo on config change {:.1}s",
        elapsed(&run, "t_first_ready"),
        elapsed(&run, "t_restart_ready"),
        elapsed(&run, "t_apply2_web1"),
        elapsed(&run, "t_apply2_web2"),
        elapsed(&run, "t_removed"),
    );
    assert_eq!(run.result("ipip_loaded_before"), Some("no"), "{out}");

    // 1. Requests through the VIP reach both web servers.
    let responses = run.parsed("client-get.txt", parse::http_responses)?;
    assert_eq!(responses.len(), REQUESTS, "{out}/client-get.txt");
    assert!(
        responses.iter().all(|r| r.status == 200),
        "{out}/client-get.txt"
    );
    let nodes: BTreeSet<&str> = responses.iter().filter_map(|r| r.header("Node")).collect();
    eprintln!("[lab_web_daemon] nodes answering through the VIP: {nodes:?}");
    assert_eq!(nodes, BTreeSet::from(["www1", "www2"]), "{out}");

    // 2. Large upload: fails without the clamp (ICMP filtered), succeeds with it.
    let noclamp_rc = result_rc(&run, "post_noclamp_rc");
    let noclamp = run.artifact("post-noclamp.txt")?;
    eprintln!("[lab_web_daemon] POST without MSS clamp: curl exit {noclamp_rc}");
    assert!(
        noclamp_rc != 0 || !noclamp.contains("1048576"),
        "without the clamp the 1 MB POST should not get through ({out}/post-noclamp.txt)"
    );
    let clamp = run.artifact("post-clamp.txt")?;
    assert_eq!(result_rc(&run, "post_clamp_rc"), 0, "{out}/post-clamp.txt");
    let post = run.parsed("post-clamp.txt", parse::http_responses)?;
    assert_eq!(post.len(), 1, "{out}/post-clamp.txt");
    assert_eq!(post[0].status, 200, "{out}/post-clamp.txt");
    assert!(
        clamp.lines().any(|l| l.trim() == "1048576"),
        "the server must have read all 1048576 bytes ({out}/post-clamp.txt)"
    );
    eprintln!(
        "[lab_web_daemon] POST with MSS clamp: 200, 1048576 bytes read by {:?}",
        post[0].header("Node")
    );
    let nft = run.parsed("web1-nft.txt", nft::rules)?;
    let clamp_rule = nft
        .iter()
        .find(|r| r.has("tcp option maxseg size set 1440"))
        .unwrap_or_else(|| panic!("web1 has an MSS clamp rule to 1440 ({out}/web1-nft.txt)"));
    eprintln!("[lab_web_daemon] web1: {clamp_rule:?}");
    assert!(
        clamp_rule.has("tcp option maxseg size > 1440")
            && clamp_rule.packets().is_some_and(|p| p > 0),
        "web1's clamp matches segments above 1440 and its counter saw SYN-ACKs rewritten: {clamp_rule:?} ({out}/web1-nft.txt)"
    );

    // 3. ARP: lb1 answers for the VIP on the front; nobody answers on the web segments.
    let lb1_mac = parse::link_address(&run.artifact_json("lb1-link.json")?).unwrap();
    let front = run.parsed("arping-client.txt", parse::arping)?;
    assert_eq!(
        result_rc(&run, "arping_client_rc"),
        0,
        "{out}/arping-client.txt"
    );
    assert!(
        front.replies.contains(&lb1_mac.to_lowercase()),
        "lb1 ({lb1_mac}) answers ARP for the VIP on the front: {front:?} ({out}/arping-client.txt)"
    );
    for web in ["web1", "web2"] {
        let answers = run.parsed(&format!("arping-{web}.txt"), parse::arping)?;
        eprintln!("[lab_web_daemon] arping for the VIP on {web}'s segment: {answers:?}");
        assert_ne!(
            result_rc(&run, &format!("arping_{web}_rc")),
            0,
            "{out}/arping-{web}.txt"
        );
        assert_eq!(
            answers.received, 0,
            "nobody answers ARP for the VIP on {web}'s segment ({out}/arping-{web}.txt)"
        );
    }
    let arp_rule = nft
        .iter()
        .find(|r| r.family == "arp" && r.has("arp daddr ip 192.0.2.100"))
        .unwrap_or_else(|| panic!("web1 has an ARP guard rule for the VIP ({out}/web1-nft.txt)"));
    eprintln!("[lab_web_daemon] web1: {arp_rule:?}");

    // 4. Readiness, and a second apply that writes nothing.
    let readyz = run.parsed("web1-readyz.txt", parse::readyz)?;
    eprintln!("[lab_web_daemon] web1 /readyz: {readyz:?}");
    assert_eq!(result_rc(&run, "readyz_rc"), 0, "{out}/web1-readyz.txt");
    assert!(
        readyz.ready && readyz.summary.starts_with("Ready:"),
        "web1's /readyz says ready with reason Ready: {readyz:?} ({out}/web1-readyz.txt)"
    );
    let transfers = parse::curl_write_outs(&run.artifact("web1-readyz.txt")?);
    assert!(
        transfers
            .iter()
            .any(|t| t.get("code").map(String::as_str) == Some("200")),
        "web1's /readyz answered 200: {transfers:?} ({out}/web1-readyz.txt)"
    );
    assert_eq!(result_rc(&run, "check_rc"), 0, "{out}/web1-check.txt");
    let pending = run.parsed("web1-check.txt", |t| {
        Ok(t.lines()
            .find_map(|l| l.strip_prefix("pending: ")?.trim().parse::<u64>().ok()))
    })?;
    assert_eq!(
        pending,
        Some(0),
        "web check on web1 finds no pending operation ({out}/web1-check.txt)"
    );
    for web in ["web1", "web2"] {
        let text = run.artifact(&format!("{web}-apply2.txt"))?;
        assert_eq!(
            result_rc(&run, &format!("apply2_{web}_rc")),
            0,
            "{out}/{web}-apply2.txt"
        );
        assert!(
            text.lines().any(|l| l == "writes: 0"),
            "second apply on {web} must write nothing ({out}/{web}-apply2.txt)"
        );
    }
    // web2's tunl0 was born strict (default.rp_filter=1): turned off, as an address-less
    // tunl0 needs (restored to 1 by the cleanup: see the snapshots).
    let condition = run
        .artifact("web2-apply2.txt")?
        .lines()
        .filter_map(parse::condition)
        .find(|c| c.kind == "TunnelReady");
    assert!(
        condition
            .as_ref()
            .is_some_and(|c| c.message.contains("all=0 tunl0=0")),
        "web2's TunnelReady condition reports rp_filter all=0 tunl0=0: {condition:?} ({out}/web2-apply2.txt)"
    );

    // 5. SIGTERM keeps the configuration; the undo leaves the nodes as they were.
    for kept in ["web1-kept.txt", "web2-kept.txt", "web2-kept-b.txt"] {
        let addrs = run.parsed(kept, ip::addr_brief)?;
        assert!(
            addrs.iter().any(|a| a.cidr() == "192.0.2.100/32"),
            "the VIP 192.0.2.100/32 is still held after SIGTERM: {addrs:?} ({out}/{kept})"
        );
    }
    assert_eq!(
        result_rc(&run, "cleanup_web2_rc"),
        0,
        "{out}/web2-cleanup.txt"
    );
    for web in ["web1", "web2"] {
        assert_eq!(
            run.result(&format!("state_file_{web}")),
            Some("absent"),
            "{out}"
        );
        let before = sections(&run.artifact(&format!("snap-before-{web}.txt"))?);
        let after = sections(&run.artifact(&format!("snap-after-{web}.txt"))?);
        assert!(
            ip::link_blocks(&before["ip -d link"])
                .iter()
                .all(|b| b.name != "tunl0"),
            "{web} has no tunl0 before ipip loaded ({out}/snap-before-{web}.txt)"
        );
        let tunl0: Vec<ip::LinkBlock> = ip::link_blocks(&after["ip -d link"])
            .into_iter()
            .filter(|b| b.name == "tunl0")
            .collect();
        assert_eq!(tunl0.len(), 1, "tunl0 exists after ipip loaded ({out})");
        assert!(
            !tunl0[0].is_up(),
            "tunl0 is left down: {:?} ({out})",
            tunl0[0].lines[0]
        );
        let tunl0_addrs: Vec<String> = ip::link_blocks(&after["ip addr"])
            .iter()
            .filter(|b| b.name == "tunl0")
            .flat_map(|b| b.addresses())
            .map(str::to_owned)
            .collect();
        assert!(
            tunl0_addrs.iter().all(|a| a.contains(':')),
            "tunl0 is left without IPv4 addresses: {tunl0_addrs:?} ({out}/snap-after-{web}.txt)"
        );
        let (before, after) = (without_tunl0(&before), without_tunl0(&after));
        for (section, lines) in &before {
            assert_eq!(
                Some(lines),
                after.get(section),
                "{web}: {section} differs before/after ({out}/snap-*-{web}.txt)"
            );
        }
        eprintln!(
            "[lab_web_daemon] {web}: ip -d link, ip addr, sysctls and nft ruleset identical before and after (tunl0 aside)"
        );
    }
    let last = log::lines(&run.artifact("web1-removed.txt")?)
        .into_iter()
        .rfind(|l| l.message == "reconciled:")
        .unwrap_or_else(|| panic!("web1 logged a reconcile ({out}/web1-removed.txt)"));
    assert!(
        last.field("vips")
            .is_some_and(|v| v.split_whitespace().next() == Some("0")),
        "web1's last reconcile, after its RealServer left the file, holds no VIP: {last:?} ({out}/web1-removed.txt)"
    );
    Ok(())
}
