//! Hashing schedulers across balancers, in the lab VM (`tests/lab/scenarios/balancer-mh.sh`):
//! two `lvstun-node balancer` daemons with `scheduler: sh`, then `mh`, send every client to the
//! same real server, whatever order each one learned the real servers in, so an upload that
//! started through one balancer finishes through the other with no connection sync at all.
//!
//! The kernel builds these schedulers' tables walking the service's destination list and
//! inserts each new destination at its head; lvstun keeps the list in one canonical order
//! (descending keys) and moves a destination that is out of place by deleting and re-adding
//! it at once.
//!
//! Asserts on what the scenario recorded, for each scheduler:
//! - lb1 learned web2 then web1 (the kernel alone would list web1 first, as the control
//!   balancer programmed by ipvsadm in that order shows), moved web2 to the head once (its
//!   log), and an upload in flight through web2 during the move completed;
//! - the control (`sh` only): a balancer holding the history order sends some of 32 client
//!   addresses to another real server than lb1 does, so the order matters on this kernel and
//!   the next check can fail. (With two real servers Maglev differs only in the few slots both
//!   reached in the same round; its count is printed.)
//! - lb2, started from scratch, lists the same order as lb1 and sends all 32 clients exactly
//!   where lb1 does, to both real servers;
//! - uploads established through lb1 complete after the VIP moves to lb2, which never heard of
//!   them;
//! - lb1's next full read of the kernel plans nothing (the move is not repeated).
//!
//! Needs root and the lab's packages (see `tests/lab/setup.sh`).
//! Run: `cargo test -p lvstun-tests --test lab_balancer_mh -- --nocapture`
//! (`LVSTUN_LAB_REUSE_BALANCER_MH=<run folder>` re-checks a finished run without the VM).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use lvstun_tests::lab::parse::log::LogLine;
use lvstun_tests::lab::{self, LabRun, parse};

const WEB1: &str = "198.51.100.10:80";
const WEB2: &str = "198.51.100.130:80";
const SOURCES: usize = 32;

fn text<'a>(run: &'a LabRun, key: &str) -> &'a str {
    run.result(key)
        .unwrap_or_else(|| panic!("no {key} in {}/results.txt", run.out_dir.display()))
}

/// The destinations of the VIP's one service in a witness (`ipvsadm -Ln --stats --exact`), in
/// the kernel's list order.
fn list(run: &LabRun, witness: &str) -> Vec<String> {
    let services = run.parsed(witness, parse::ipvs_stats).unwrap();
    assert_eq!(
        services.len(),
        1,
        "{witness} lists one service: {services:?}"
    );
    services[0]
        .destinations
        .iter()
        .map(|d| d.address.clone())
        .collect()
}

/// `source.<address>=<node>` lines of a `lvstun-lab-load --sources` run.
fn mapping(run: &LabRun, name: &str) -> BTreeMap<String, String> {
    let text = run.artifact(&format!("map-{name}.txt")).unwrap();
    let map: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("source."))
        .filter_map(|l| l.split_once('='))
        .map(|(s, n)| (s.to_owned(), n.to_owned()))
        .collect();
    assert_eq!(
        map.len(),
        SOURCES,
        "map-{name}.txt has {} sources ({})",
        map.len(),
        run.out_dir.display()
    );
    let failed: Vec<&String> = map
        .iter()
        .filter(|(_, n)| *n == "-")
        .map(|(s, _)| s)
        .collect();
    assert!(failed.is_empty(), "map-{name}: no answer for {failed:?}");
    map
}

fn differ(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.iter()
        .filter(|(s, n)| b.get(*s) != Some(*n))
        .map(|(s, _)| s.clone())
        .collect()
}

#[test]
fn hashing_schedulers_send_each_client_to_the_same_real_server_on_every_balancer() {
    let run = lab::run_or_reuse_with(
        "balancer-mh",
        &[],
        &[
            ("lvstun-node", "lvstun-node"),
            ("lvstun-tests", "lvstun-lab-load"),
        ],
    )
    .unwrap();
    let schedulers: Vec<String> = text(&run, "schedulers")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(schedulers, ["sh", "mh"]);
    for sched in &schedulers {
        check(&run, sched);
    }
}

fn check(run: &LabRun, sched: &str) {
    let out = run.out_dir.display().to_string();
    let bytes = text(run, "upload_bytes").to_owned();
    let key = |k: &str| format!("{sched}.{k}");
    let say = |msg: String| println!("[lab_balancer_mh] {sched}: {msg}");

    // 1. lb1 learned web2, then web1: it moved web2 to the head, once, and the upload that
    // was on web2 during the move completed.
    assert_eq!(
        list(run, &format!("witness-{sched}-lb1.txt")),
        [WEB2, WEB1],
        "{sched} lb1 ({out})"
    );
    let lb1_log = run.log(&format!("lb1-{sched}")).unwrap();
    let is_move = |l: &&LogLine| {
        l.message
            .starts_with("destinations moved into the canonical list order")
    };
    let moves: Vec<&LogLine> = lb1_log.iter().filter(is_move).collect();
    assert_eq!(
        moves.len(),
        1,
        "{sched}: lb1 moved destinations into the canonical order once: {moves:?} ({out}/logs/lb1-{sched}.log)"
    );
    assert_eq!(
        text(run, &key("survival.move")),
        format!("0 200 {bytes}"),
        "{sched}: the upload through web2 across the move ({out})"
    );
    say(format!(
        "lb1 moved web2 into place {} ms after web1 joined its file; the upload on web2 completed",
        text(run, &key("move_ms"))
    ));

    // 2. The control: the history order, as the kernel alone keeps it.
    assert_eq!(
        list(run, &format!("witness-{sched}-control.txt")),
        [WEB1, WEB2],
        "{sched} control ({out})"
    );
    let lb1 = mapping(run, &format!("{sched}-lb1"));
    let control = mapping(run, &format!("{sched}-control"));
    let moved = differ(&lb1, &control);
    say(format!(
        "control: {} of {SOURCES} clients land on another real server when a balancer lists [web1, web2]",
        moved.len()
    ));
    if sched == "sh" {
        assert!(
            !moved.is_empty(),
            "sh: the control found no client that the list order moves: this run cannot tell ({out})"
        );
    }

    // 3. lb2 from scratch: the same order, every client where lb1 sends it, both servers used.
    assert_eq!(
        list(run, &format!("witness-{sched}-lb2.txt")),
        [WEB2, WEB1],
        "{sched} lb2 ({out})"
    );
    let lb2 = mapping(run, &format!("{sched}-lb2"));
    assert_eq!(
        differ(&lb1, &lb2),
        Vec::<String>::new(),
        "{sched}: lb1 vs lb2 ({out})"
    );
    for node in ["www1", "www2"] {
        let n = lb2.values().filter(|v| *v == node).count();
        assert!(n > 0, "{sched}: no client hashed to {node} ({out})");
        say(format!(
            "{n} of {SOURCES} clients on {node} through both balancers"
        ));
    }

    // 4. Uploads established through lb1 finish through lb2.
    let uploads: usize = text(run, "uploads").parse().unwrap();
    let prefix = key("survival.failover.");
    let survived: Vec<(String, String)> = run
        .results
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k.clone(), v.last().cloned().unwrap_or_default()))
        .collect();
    assert_eq!(survived.len(), uploads, "{survived:?} ({out})");
    for (k, got) in &survived {
        say(format!("{k}: curl exit, http code, bytes counted = {got}"));
        assert_eq!(got, &format!("0 200 {bytes}"), "{k} ({out})");
    }
    // lb1 carried them; lb2 had never seen them: no connection sync here, only the hash.
    let on_lb1 = run
        .artifact(&format!("conns-{sched}-lb1-failover.txt"))
        .unwrap();
    let lb1_conns = parse::ipvs_conns(&on_lb1).unwrap();
    for (k, _) in &survived {
        let source = k.trim_start_matches(&prefix);
        assert!(
            lb1_conns
                .iter()
                .any(|c| c.state == "ESTABLISHED" && c.source.starts_with(&format!("{source}:"))),
            "{sched}: lb1 had no ESTABLISHED entry from {source} ({out})"
        );
    }
    let before = run
        .artifact(&format!("conns-{sched}-lb2-before-failover.txt"))
        .unwrap();
    // The same connection: source and real server alike, and not a finished one. A map
    // request through lb2 earlier may have used the same source port (the kernel picks
    // ports for a source and destination in sequence, and the server closes first, so the
    // client keeps no TIME_WAIT); its entry lingers in CLOSE for ten seconds.
    let known: Vec<_> = parse::ipvs_conns(&before)
        .unwrap()
        .into_iter()
        .filter(|c| c.state != "CLOSE")
        .filter(|c| {
            lb1_conns
                .iter()
                .any(|l| l.source == c.source && l.destination == c.destination)
        })
        .collect();
    assert!(
        known.is_empty(),
        "{sched}: lb2 knew lb1's uploads: {known:?} ({out})"
    );

    // 5. The next full read plans nothing: the first resync pass lb1 logged after the move.
    let resync = lb1_log
        .iter()
        .skip_while(|l| !is_move(l))
        .find(|l| l.message == "reconciled" && l.field("trigger") == Some("resync"))
        .unwrap_or_else(|| panic!("{sched}: lb1 logged a resync after the move ({out})"));
    assert_eq!(
        resync.num("ops"),
        Some(0),
        "{sched}: lb1's first full read after the move plans nothing: {resync:?} ({out})"
    );
}
