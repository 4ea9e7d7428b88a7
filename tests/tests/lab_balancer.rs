//! The balancer role (`lvstun-node balancer --config`) against a real kernel in the lab VM
//! (`tests/lab/scenarios/balancer-standalone.sh`), with `ipvsadm` as the witness: the seed's
//! service is programmed exactly, clients alternate between the two real servers with direct
//! server return, a weight edited in the file changes one destination only, a foreign service
//! survives, a restart under load drops nothing and writes nothing, and a stopped web server
//! drops to weight 0 within the detection time and comes back.
//!
//! Needs root and the lab's packages (see `tests/lab/setup.sh`).
//! Run: `cargo test -p lvstun-tests --test lab_balancer -- --nocapture`
//! (`LVSTUN_LAB_REUSE_BALANCER_STANDALONE=<run folder>` and `LVSTUN_LAB_REUSE_BALANCER_BENCH=<run
//! folder>` re-check finished runs without the VM).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use lvstun_tests::lab::parse::ipvsadm::{self, Forward, IpvsService, IpvsTable, Protocol};
use lvstun_tests::lab::parse::log::LogLine;
use lvstun_tests::lab::parse::prom;
use lvstun_tests::lab::{self, LabRun, parse};

const VIP: &str = "192.0.2.100";
const WEB1: &str = "198.51.100.10";
const WEB2: &str = "198.51.100.130";
const FOREIGN: &str = "192.0.2.200";
const REQUESTS: usize = 6;

/// `ipvsadm -Sn` (sorted) after phase `n`, typed.
fn table(run: &LabRun, n: u32) -> IpvsTable {
    run.parsed(&format!("save-{n}.txt"), ipvsadm::save).unwrap()
}

/// The one service on `vip` after phase `n` (there must be exactly one).
fn service_on(run: &LabRun, n: u32, vip: &str) -> IpvsService {
    let table = table(run, n);
    let on_vip = table.services_on(vip);
    assert_eq!(
        on_vip.len(),
        1,
        "save-{n}.txt holds exactly one service on {vip}: {on_vip:?} ({})",
        run.out_dir.display()
    );
    on_vip[0].clone()
}

/// A pass's log line recorded under `key` in results.txt.
fn pass(run: &LabRun, key: &str) -> LogLine {
    run.result_log(key).unwrap()
}

/// A numeric field of a pass's line.
fn count(line: &LogLine, key: &str) -> Option<u64> {
    line.num(key)
}

fn result<'a>(run: &'a LabRun, key: &str) -> &'a str {
    run.result(key)
        .unwrap_or_else(|| panic!("no {key} in {}/results.txt", run.out_dir.display()))
}

fn num(run: &LabRun, key: &str) -> f64 {
    result(run, key)
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e} ({})", run.out_dir.display()))
}

/// Checks that after phase `n` the seed's service is exactly TCP VIP:80 rr (no other
/// option) with web1 and web2, in that order, via tunnel at weights `w1` and `w2`
/// (ipvsadm may print tunnel options after the weight).
fn assert_rules(run: &LabRun, n: u32, w1: u32, w2: u32) {
    let out = run.out_dir.display();
    let service = service_on(run, n, VIP);
    assert_eq!(
        (
            service.protocol,
            service.address.as_str(),
            service.scheduler.as_str()
        ),
        (Protocol::Tcp, format!("{VIP}:80").as_str(), "rr"),
        "save-{n}.txt: the seed's service is TCP {VIP}:80 rr ({out})"
    );
    assert!(
        service.options.is_empty(),
        "save-{n}.txt: the seed's service has no other option: {:?} ({out})",
        service.options
    );
    let got: Vec<(&str, Forward, u32)> = service
        .destinations
        .iter()
        .map(|d| (d.address.as_str(), d.forward, d.weight))
        .collect();
    assert_eq!(
        got,
        [
            (format!("{WEB1}:80").as_str(), Forward::Tunnel, w1),
            (format!("{WEB2}:80").as_str(), Forward::Tunnel, w2),
        ],
        "save-{n}.txt: web1 at weight {w1} and web2 at weight {w2}, both via tunnel ({out})"
    );
}

#[test]
fn standalone_balancer_programs_follows_restarts_and_heals() {
    let run = lab::run_or_reuse_with(
        "balancer-standalone",
        &[],
        &[
            ("lvstun-node", "lvstun-node"),
            ("lvstun-tests", "lvstun-lab-load"),
        ],
    )
    .unwrap();
    let out = run.out_dir.display().to_string();
    eprintln!(
        "[lab_balancer] run folder {out}; wall {:.1}s, vm {:?}s",
        run.wall.as_secs_f64(),
        run.timing.get("vm_wall_s")
    );

    // 1. The seed's service, exactly, once both checks passed; the first pass created the
    //    service and both destinations (at weight 0 until their checks pass).
    assert_rules(&run, 1, 1, 1);
    let start = pass(&run, "start_pass");
    eprintln!("[lab_balancer] first pass: {start:?}");
    assert_eq!(
        (count(&start, "ops"), count(&start, "failed")),
        (Some(3), Some(0)),
        "the first pass sent 3 operations (service, two destinations), none failed: {start:?}"
    );
    eprintln!(
        "[lab_balancer] programmed and healthy after {} ms",
        result(&run, "programmed_ms")
    );
    let owned = run.artifact("state-lb1/balancer-owned.json").unwrap();
    let owned: serde_json::Value = serde_json::from_str(&owned).unwrap();
    assert_eq!(owned["vips"], serde_json::json!([VIP]), "{out}");

    // 2. Requests alternate between the real servers; replies bypass the balancer.
    let curl = run.artifact("client-curl.txt").unwrap();
    let responses = parse::http_responses(&curl).unwrap();
    assert_eq!(responses.len(), REQUESTS, "{out}/client-curl.txt");
    let nodes: Vec<&str> = responses
        .iter()
        .map(|r| r.header("Node").unwrap_or("-"))
        .collect();
    eprintln!("[lab_balancer] Node headers: {nodes:?}");
    assert!(nodes.windows(2).all(|w| w[0] != w[1]), "{nodes:?} ({out})");
    assert_eq!(
        nodes.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["www1", "www2"])
    );
    let stats = run.parsed("lb1-ipvs-stats.txt", parse::ipvs_stats).unwrap();
    let service = stats
        .iter()
        .find(|s| s.protocol == "TCP" && s.address == format!("{VIP}:80"))
        .expect("the VIP's service in lb1-ipvs-stats.txt");
    assert!(service.counters.in_pkts > 0, "{service:?} ({out})");
    assert_eq!(service.counters.out_pkts, 0, "direct server return ({out})");

    // 3. One weight edited in the file: one pass, one operation, one rule changed.
    let weight = pass(&run, "weight_pass");
    eprintln!("[lab_balancer] after the edit: {weight:?}");
    assert_eq!(
        count(&weight, "ops"),
        Some(1),
        "the edit is one operation: {weight:?}"
    );
    assert_rules(&run, 2, 1, 2);
    let (before, after) = (service_on(&run, 1, VIP), service_on(&run, 2, VIP));
    let before_dests: BTreeSet<_> = before.destinations.iter().collect();
    let changed = after
        .destinations
        .iter()
        .filter(|d| !before_dests.contains(d))
        .count();
    assert!(
        (&after.scheduler, &after.options) == (&before.scheduler, &before.options) && changed == 1,
        "exactly one rule (one destination) differs between save-1 and save-2 ({out})"
    );

    // 4. The restart under load: no request lost, nothing reprogrammed.
    let requests = num(&run, "load.requests");
    let failures = num(&run, "load.failures");
    let gap = num(&run, "load.longest_gap_ms");
    let restart = pass(&run, "restart_pass");
    eprintln!(
        "[lab_balancer] restart: {requests} requests, {failures} failed, longest gap {gap} ms; {restart:?}"
    );
    assert!(requests >= 40.0, "the load ran ({out}/load-restart.txt)");
    assert_eq!(failures, 0.0, "no request dropped ({out}/load-restart.txt)");
    assert_eq!(
        count(&restart, "ops"),
        Some(0),
        "the restarted daemon writes nothing: {restart:?}"
    );
    assert_eq!(
        table(&run, 3),
        table(&run, 4),
        "the kernel's table is the same before and after the restart ({out})"
    );
    // The load's stamps: every request of the window answered.
    let stamps = run.parsed("load-restart.txt", parse::load_stamps).unwrap();
    let bad: Vec<_> = stamps.iter().filter(|s| !s.ok()).collect();
    assert!(
        bad.is_empty(),
        "every request during the restart was answered 200: {bad:?}"
    );

    // 5. The foreign service survived everything.
    let foreign = IpvsService {
        protocol: Protocol::Tcp,
        address: format!("{FOREIGN}:443"),
        scheduler: "rr".into(),
        options: vec![],
        destinations: vec![ipvsadm::IpvsDest {
            address: format!("{WEB1}:443"),
            forward: Forward::Route,
            weight: 4,
            options: vec![],
        }],
    };
    for n in [1, 4, 6] {
        assert_eq!(
            service_on(&run, n, FOREIGN),
            foreign,
            "save-{n}.txt: the foreign TCP {FOREIGN}:443 rr -> web1:443 (route, weight 4) is intact ({out})"
        );
    }

    // 6. web1 down: weight 0 within the detection time (checks every 2 s, 2 failures, 1 s
    //    timeout; a refused connection fails at once), all requests to www2; then back.
    let down = num(&run, "down_ms");
    let up = num(&run, "up_ms");
    eprintln!(
        "[lab_balancer] web1 stopped -> weight 0 after {down} ms; started -> weight 1 after {up} ms (includes starting the server); {}",
        result(&run, "down_event")
    );
    assert!(down <= 8000.0, "detection took {down} ms ({out})");
    assert_rules(&run, 5, 0, 2);
    let down_curl = run.artifact("client-curl-down.txt").unwrap();
    let down_nodes: Vec<String> = parse::http_responses(&down_curl)
        .unwrap()
        .iter()
        .map(|r| r.header("Node").unwrap_or("-").to_owned())
        .collect();
    assert_eq!(down_nodes, ["www2"; 4], "{out}/client-curl-down.txt");
    // Source ports reused from connections that went to web1: rescheduled to www2, because the
    // balancer set expire_nodest_conn (a client reusing ports by chance failed the first CI run).
    assert_eq!(result(&run, "expire_nodest_conn"), "1", "{out}");
    let reused = result(&run, "reuse_ports").split_whitespace().count();
    assert!(
        reused >= 1,
        "no connection entry to web1 to reuse ({out}/conns-down.txt)"
    );
    let reuse_curl = run.artifact("client-curl-reuse.txt").unwrap();
    let reuse_nodes: Vec<String> = parse::http_responses(&reuse_curl)
        .unwrap_or_default()
        .iter()
        .map(|r| r.header("Node").unwrap_or("-").to_owned())
        .collect();
    assert_eq!(
        reuse_nodes,
        vec!["www2"; reused],
        "{out}/client-curl-reuse.txt:\n{reuse_curl}"
    );
    assert!(up <= 15000.0, "back in rotation after {up} ms ({out})");
    assert_rules(&run, 6, 1, 2);

    // 7. A destination the kernel refuses (EINVAL: 192.0.2.255 is a broadcast address in lb1)
    //    is reported with its hint, the rest is programmed, and the identical operation is held
    //    back by the next pass instead of being resent.
    let refuse = pass(&run, "refuse_pass");
    let refused = pass(&run, "refused_log");
    let held = pass(&run, "held_pass");
    eprintln!("[lab_balancer] refusal:\n  {refuse:?}\n  {refused:?}\n  {held:?}");
    assert_eq!(
        (count(&refuse, "ops"), count(&refuse, "failed")),
        (Some(1), Some(1)),
        "the pass with the bad destination sent one operation and it failed: {refuse:?}"
    );
    assert!(
        refused
            .field("op")
            .is_some_and(|op| op.starts_with("add destination 192.0.2.255:80"))
            && refused
                .field("errno")
                .is_some_and(|e| e.starts_with("EINVAL")),
        "the refusal names the operation (add destination 192.0.2.255:80) and EINVAL: {refused:?}"
    );
    assert!(
        refused
            .field("hint")
            .is_some_and(|h| h.contains("unicast address")),
        "the refusal carries the hint about unicast addresses: {refused:?}"
    );
    assert_eq!(
        (
            count(&held, "held"),
            count(&held, "ops"),
            count(&held, "failed")
        ),
        (Some(1), Some(1), Some(0)),
        "the next pass holds the refused operation back and sends only web2's weight: {held:?}"
    );
    assert_rules(&run, 7, 1, 1);

    // The daemon's own endpoint agrees.
    let readyz = run.parsed("readyz.txt", parse::readyz).unwrap();
    assert!(
        readyz.ready
            && readyz
                .summary
                .starts_with("1 services, 3 destinations, 3 health checks"),
        "/readyz says ready with 1 service, 3 destinations, 3 health checks: {readyz:?}"
    );
    assert!(
        readyz.refused.iter().any(|r| {
            r.starts_with("add destination 192.0.2.255:80 to TCP 192.0.2.100:80")
                && r.contains("EINVAL")
        }),
        "/readyz lists the refused destination with EINVAL: {readyz:?}"
    );
    let metrics = run.parsed("metrics.txt", prom::metrics).unwrap();
    assert_eq!(
        metrics.get("lvstun_balancer_ready", &[]),
        Some(1.0),
        "the metrics say ready ({out}/metrics.txt)"
    );
}

/// The benchmark's scenario at a smoke size (`tests/bench/` runs it at 1,000 x 100): correctness
/// only (times under TCG at this size say little): lvstun's applier and the daemon program
/// exactly what `ipvsadm -R` programs, the 1 % change is one write per changed destination
/// without reading the table back, and a resync with nothing to do writes nothing.
#[test]
fn balancer_bench_smoke() {
    let run = lab::run_or_reuse_with(
        "balancer-bench",
        &[
            ("BENCH_SERVICES", "20"),
            ("BENCH_DESTS", "10"),
            ("BENCH_RESYNC_S", "10"),
        ],
        &[
            ("lvstun-node", "lvstun-node"),
            ("lvstun-tests", "lvstun-lab-web"),
        ],
    )
    .unwrap();
    let out = run.out_dir.display().to_string();
    for key in ["equal.full", "equal.change", "equal.daemon"] {
        assert_eq!(run.result(key), Some("yes"), "{key} ({out})");
    }
    let applier = |key: &str| parse::applied_ops(result(&run, key));
    assert_eq!(
        (
            applier("applier.full_ops"),
            applier("applier.change_ops"),
            applier("applier.noop_ops")
        ),
        (Some(220), Some(20), Some(0)),
        "the applier: 20 x (1 + 10) operations from empty, 20 for the 1 % change, none again ({out})"
    );
    let start = pass(&run, "daemon.start_pass");
    let change = pass(&run, "daemon.change_pass");
    let resync = pass(&run, "daemon.resync_pass");
    eprintln!("[lab_balancer] bench smoke:\n  {start:?}\n  {change:?}\n  {resync:?}");
    assert_eq!(
        count(&start, "ops"),
        Some(220),
        "the daemon's first pass programs everything: {start:?}"
    );
    assert_eq!(
        (count(&change, "ops"), change.field("read")),
        (Some(20), Some("false")),
        "the change is one write per changed destination, without reading the table: {change:?}"
    );
    assert_eq!(
        (count(&resync, "ops"), resync.field("read")),
        (Some(0), Some("true")),
        "a resync reads the table and writes nothing: {resync:?}"
    );
    assert_eq!(result(&run, "daemon.zero_weights"), "0", "{out}");
    eprintln!(
        "[lab_balancer] bench smoke: daemon VmHWM {} kB, converged in {} ms",
        result(&run, "daemon.VmHWM"),
        result(&run, "daemon.converged_ms")
    );
}
