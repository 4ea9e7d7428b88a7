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
//! Run: `cargo test -p lvstun-tests --test lab_web_daemon -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

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

/// Splits `ip link`/`ip addr` output into one block per device (header line + indented lines).
fn device_blocks(lines: &[String]) -> Vec<Vec<String>> {
    let mut blocks: Vec<Vec<String>> = Vec::new();
    for line in lines {
        if line.starts_with(char::is_numeric) {
            blocks.push(vec![line.clone()]);
        } else if let Some(last) = blocks.last_mut() {
            last.push(line.clone());
        }
    }
    blocks
}

fn is_tunl0(block: &[String]) -> bool {
    block.first().is_some_and(|h| {
        h.split_whitespace()
            .nth(1)
            .is_some_and(|n| n.starts_with("tunl0@"))
    })
}

/// The snapshot without `tunl0`, which the kernel creates in every namespace when `ipip`
/// loads (the daemon cannot unload a module: it has no CAP_SYS_MODULE).
fn without_tunl0(snapshot: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    snapshot
        .iter()
        .map(|(name, lines)| {
            let kept: Vec<String> = match name.as_str() {
                "ip -d link" | "ip addr" => device_blocks(lines)
                    .into_iter()
                    .filter(|b| !is_tunl0(b))
                    .flatten()
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
    lab::ensure_built_bins(&[("lvstun-node", "lvstun-node")])?;
    let requests = REQUESTS.to_string();
    let run = lab::run_scenario("web-daemon", &[("REQUESTS", &requests)])?;
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
    let get = run.artifact("client-get.txt")?;
    let responses = parse::http_responses(&get).map_err(anyhow::Error::msg)?;
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
    let post = parse::http_responses(&clamp).map_err(anyhow::Error::msg)?;
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
    let nft = run.artifact("web1-nft.txt")?;
    let clamp_rule = nft
        .lines()
        .find(|l| l.contains("maxseg size set 1440"))
        .unwrap_or_else(|| panic!("no MSS clamp rule in {out}/web1-nft.txt"));
    eprintln!("[lab_web_daemon] web1: {}", clamp_rule.trim());
    assert!(
        clamp_rule.contains("maxseg size > 1440") && !clamp_rule.contains("packets 0 "),
        "the clamp must have rewritten SYN-ACKs on web1 ({out}/web1-nft.txt)"
    );

    // 3. ARP: lb1 answers for the VIP on the front; nobody answers on the web segments.
    let lb1_mac = parse::link_address(&run.artifact_json("lb1-link.json")?).unwrap();
    let front = run.artifact("arping-client.txt")?;
    assert_eq!(
        result_rc(&run, "arping_client_rc"),
        0,
        "{out}/arping-client.txt"
    );
    assert!(
        front.to_lowercase().contains(&lb1_mac.to_lowercase()),
        "lb1 ({lb1_mac}) must answer on the front ({out}/arping-client.txt)"
    );
    for web in ["web1", "web2"] {
        let text = run.artifact(&format!("arping-{web}.txt"))?;
        eprintln!(
            "[lab_web_daemon] arping for the VIP on {web}'s segment: {}",
            text.lines().last().unwrap_or("").trim()
        );
        assert_ne!(
            result_rc(&run, &format!("arping_{web}_rc")),
            0,
            "{out}/arping-{web}.txt"
        );
        assert!(
            text.contains("Received 0 response"),
            "{out}/arping-{web}.txt"
        );
    }
    let arp_rule = nft
        .lines()
        .find(|l| l.contains("arp daddr ip 192.0.2.100"))
        .unwrap_or_else(|| panic!("no ARP guard rule in {out}/web1-nft.txt"));
    eprintln!("[lab_web_daemon] web1: {}", arp_rule.trim());

    // 4. Readiness, and a second apply that writes nothing.
    let readyz = run.artifact("web1-readyz.txt")?;
    eprintln!(
        "[lab_web_daemon] web1 /readyz: {}",
        readyz.lines().next().unwrap_or("")
    );
    assert_eq!(result_rc(&run, "readyz_rc"), 0, "{out}/web1-readyz.txt");
    assert!(readyz.starts_with("ready: Ready:"), "{out}/web1-readyz.txt");
    assert!(readyz.contains("curl: code=200"), "{out}/web1-readyz.txt");
    assert_eq!(result_rc(&run, "check_rc"), 0, "{out}/web1-check.txt");
    assert!(
        run.artifact("web1-check.txt")?.contains("pending: 0"),
        "{out}"
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
    assert!(
        run.artifact("web2-apply2.txt")?.contains("all=0 tunl0=0"),
        "{out}/web2-apply2.txt"
    );

    // 5. SIGTERM keeps the configuration; the undo leaves the nodes as they were.
    for kept in ["web1-kept.txt", "web2-kept.txt", "web2-kept-b.txt"] {
        assert!(
            run.artifact(kept)?.contains("192.0.2.100/32"),
            "{out}/{kept}"
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
            !before["ip -d link"].iter().any(|l| l.contains("tunl0@")),
            "{out}"
        );
        let tunl0: Vec<Vec<String>> = device_blocks(&after["ip -d link"])
            .into_iter()
            .filter(|b| is_tunl0(b))
            .collect();
        assert_eq!(tunl0.len(), 1, "tunl0 exists after ipip loaded ({out})");
        assert!(
            !tunl0[0][0].contains(",UP") && !tunl0[0][0].contains("<UP"),
            "tunl0 is left down: {} ({out})",
            tunl0[0][0]
        );
        let tunl0_addrs: Vec<Vec<String>> = device_blocks(&after["ip addr"])
            .into_iter()
            .filter(|b| is_tunl0(b))
            .collect();
        assert!(
            tunl0_addrs.iter().flatten().all(|l| !l.contains("inet ")),
            "{out}"
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
    let removed = run.artifact("web1-removed.txt")?;
    assert!(removed.contains("vips=0 ("), "{out}/web1-removed.txt");
    Ok(())
}
