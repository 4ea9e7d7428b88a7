//! VIP ownership inside the balancer role, in the lab VM
//! (`tests/lab/scenarios/balancer-vrrp.sh`): lb1 and lb2 both run `lvstun-node balancer
//! --config FILE --node-name lbN` with the same file, and the daemons alone decide who holds
//! the VIP.
//!
//! Asserts on what the scenario recorded: exactly one Master (lb1) and the VIP only on lb1, the
//! client's neighbour entry on lb1's MAC, requests alternating www1/www2, both balancers
//! programming the service (ipvsadm witness) with the sync daemons master/backup; after lb1
//! dies hard lb2 holds the VIP and the client's entry moves to lb2's MAC within
//! Master_Down_Interval plus a margin; lb1 back preempts; a SIGTERM of the Master hands over
//! within about Skew_Time; an upload in flight through lb1 when it died completes through lb2
//! (rr + connection sync: lb2 held its entry, to the same real server, before the crash). The
//! outage of each event is measured from the one load process's stamps and printed. Then
//! (issue 13) only lb1's daemon is killed, its node and link alive: the VIP, held with a kernel
//! lifetime, leaves lb1 by itself within the stated bound (lifetime + 1 s + lifetime / 8 after
//! the last renewal), never before lb2 holds it, and from then on exactly one node holds it.
//!
//! Needs root and the lab's packages (see `tests/lab/setup.sh`).
//! Run: `cargo test -p lvstun-tests --test lab_balancer_vrrp -- --nocapture`
//! (`LVSTUN_LAB_REUSE_BALANCER_VRRP=<run folder>` re-checks a finished run without the VM).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use lvstun_tests::lab::parse::ipvsadm::{self, Forward, Protocol, SyncRole};
use lvstun_tests::lab::parse::log::{VrrpState, vrrp_transitions};
use lvstun_tests::lab::parse::{ip, prom};
use lvstun_tests::lab::{self, LabRun, parse};

const VIP: &str = "192.0.2.100";
const REQUESTS: usize = 6;

fn text<'a>(run: &'a LabRun, key: &str) -> &'a str {
    run.result(key)
        .unwrap_or_else(|| panic!("no {key} in {}/results.txt", run.out_dir.display()))
}

fn num(run: &LabRun, key: &str) -> f64 {
    text(run, key)
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e} ({})", run.out_dir.display()))
}

const WEB1: &str = "198.51.100.10:80";
const WEB2: &str = "198.51.100.130:80";

/// The stamped requests of `load.txt`, by send time (ms since the load started).
fn stamps(run: &LabRun) -> Vec<parse::LoadStamp> {
    let mut out = run.parsed("load.txt", parse::load_stamps).unwrap();
    out.sort_by(|a, b| a.send_ms.total_cmp(&b.send_ms));
    out
}

/// The Prometheus page `name`, typed.
fn metrics(run: &LabRun, name: &str) -> prom::Metrics {
    run.parsed(name, prom::metrics).unwrap()
}

/// The roles of the sync daemons `ipvsadm -L --daemon` listed in `name`.
fn sync_roles(run: &LabRun, name: &str) -> Vec<SyncRole> {
    run.parsed(name, ipvsadm::sync_daemons)
        .unwrap()
        .iter()
        .map(|d| d.role)
        .collect()
}

/// The client-observed outage around an event at `at_ms` (load time): the longest time
/// between the send times of two consecutive successful requests, among the gaps that end
/// after the event and start before `until_ms`.
fn outage_ms(stamps: &[parse::LoadStamp], at_ms: f64, until_ms: f64) -> f64 {
    let ok: Vec<f64> = stamps
        .iter()
        .filter(|s| s.ok())
        .map(|s| s.send_ms)
        .collect();
    ok.windows(2)
        .filter(|w| w[1] >= at_ms && w[0] < until_ms)
        .map(|w| w[1] - w[0])
        .fold(0.0, f64::max)
}

/// Failed requests sent in [from, until).
fn failures(stamps: &[parse::LoadStamp], from: f64, until: f64) -> usize {
    stamps
        .iter()
        .filter(|s| !s.ok() && s.send_ms >= from && s.send_ms < until)
        .count()
}

/// The upload's client port range, `first-last` as recorded.
fn upload_ports(range: &str) -> std::ops::RangeInclusive<u16> {
    let (a, b) = range.split_once('-').unwrap();
    a.parse().unwrap()..=b.parse().unwrap()
}

/// The one entry of the upload (client port in `ports`) in the connection table `file`.
fn upload_entry(
    run: &LabRun,
    file: &str,
    ports: &std::ops::RangeInclusive<u16>,
) -> parse::IpvsConn {
    let out = run.out_dir.display();
    let found: Vec<parse::IpvsConn> = run
        .parsed(file, parse::ipvs_conns)
        .unwrap()
        .into_iter()
        .filter(|c| c.source_port().is_some_and(|p| ports.contains(&p)))
        .collect();
    assert_eq!(found.len(), 1, "upload entries in {out}/{file}: {found:?}");
    found.into_iter().next().unwrap()
}

/// RFC 9568 §6.1 Master_Down_Interval of lb2 (priority 100): 3 × interval + Skew_Time,
/// Skew_Time = (256 − 100) × interval / 256.
fn master_down_ms(advert_ms: f64) -> f64 {
    3.0 * advert_ms + (256.0 - 100.0) * advert_ms / 256.0
}

/// The VIP's kernel lifetime in seconds at `advert_ms` with 3 missed advertisements, as
/// `crates/lvstun-vrrp/src/lifetime.rs` states it: max(2 s, 2 × (3 + 1) × interval), rounded up.
fn vip_lifetime_s(advert_ms: f64) -> f64 {
    (2.0 * 4.0 * advert_ms / 1000.0).ceil().max(2.0)
}

/// The latest the kernel removes a VIP after its last renewal (`VipLifetime::bound`): the
/// lifetime, the second `check_lifetime` may wait between runs, the timer wheel's eighth.
fn vip_bound_ms(lifetime_s: f64) -> f64 {
    lifetime_s * 1000.0 + 1000.0 + lifetime_s * 1000.0 / 8.0
}

#[test]
fn balancers_elect_one_vip_owner_fail_over_preempt_and_hand_over() {
    let run = lab::run_or_reuse_with(
        "balancer-vrrp",
        &[],
        &[
            ("lvstun-node", "lvstun-node"),
            ("lvstun-tests", "lvstun-lab-load"),
            ("lvstun-tests", "lvstun-lab-web"),
        ],
    )
    .unwrap();
    let out = run.out_dir.display().to_string();
    eprintln!(
        "[lab_balancer_vrrp] run folder {out}; wall {:.1}s, vm {:?}s",
        run.wall.as_secs_f64(),
        run.timing.get("vm_wall_s")
    );
    let mac1 = text(&run, "mac.lb1");
    let mac2 = text(&run, "mac.lb2");
    assert_ne!(mac1, mac2);
    let advert = num(&run, "advert_ms");

    // 1. Steady: exactly one Master, lb1, and the VIP only there.
    assert_eq!(text(&run, "steady.lb1_vip"), "yes", "{out}");
    assert_eq!(text(&run, "steady.lb2_vip"), "no", "{out}");
    // The VIP ownership transitions each daemon logged: lb1's first daemon (killed in the
    // crash) became Master once; lb2 never did before the crash.
    let kill_unix_ms = num(&run, "kill_ms");
    let lb1_a = vrrp_transitions(&run.log("lb1-a").unwrap());
    let lb2 = vrrp_transitions(&run.log("lb2").unwrap());
    assert_eq!(
        lb1_a.iter().filter(|t| t.to == VrrpState::Master).count(),
        1,
        "lb1 became Master exactly once before the crash: {lb1_a:?} ({out}/logs/lb1-a.log)"
    );
    let lb2_early_master: Vec<_> = lb2
        .iter()
        .filter(|t| t.to == VrrpState::Master)
        .filter(|t| t.unix_ms.is_none_or(|ms| (ms as f64) < kill_unix_ms))
        .collect();
    assert!(
        lb2_early_master.is_empty(),
        "lb2 never became Master while lb1 was alive: {lb2_early_master:?} ({out}/logs/lb2.log)"
    );
    assert_eq!(
        text(&run, "neigh.steady"),
        mac1,
        "client ARP on lb1 ({out})"
    );
    let curl = run.artifact("client-curl.txt").unwrap();
    let responses = parse::http_responses(&curl).unwrap();
    assert_eq!(responses.len(), REQUESTS, "{out}/client-curl.txt");
    let nodes: Vec<&str> = responses
        .iter()
        .map(|r| r.header("Node").unwrap_or("-"))
        .collect();
    eprintln!("[lab_balancer_vrrp] Node headers: {nodes:?}");
    assert!(nodes.windows(2).all(|w| w[0] != w[1]), "{nodes:?} ({out})");
    assert_eq!(
        nodes.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["www1", "www2"])
    );
    // Both balancers program the service (a Backup is ready to forward the moment it holds
    // the VIP), and the sync daemons follow the roles.
    for lb in ["lb1", "lb2"] {
        let table = run
            .parsed(&format!("witness-{lb}.txt"), ipvsadm::list)
            .unwrap();
        let service = table
            .service(Protocol::Tcp, &format!("{VIP}:80"))
            .unwrap_or_else(|| panic!("{lb}'s table holds TCP {VIP}:80: {table:?} ({out})"));
        assert_eq!(service.scheduler, "rr", "{lb}'s TCP {VIP}:80 is rr ({out})");
        let mut dests = service.destination_addresses();
        dests.sort_unstable();
        assert_eq!(
            dests,
            [WEB1, WEB2],
            "{lb}'s TCP {VIP}:80 has both real servers ({out}/witness-{lb}.txt)"
        );
        assert!(
            service
                .destinations
                .iter()
                .all(|d| d.forward == Forward::Tunnel),
            "{lb} reaches both real servers via tunnel: {service:?} ({out})"
        );
    }
    let sync1 = sync_roles(&run, "sync-lb1.txt");
    let sync2 = sync_roles(&run, "sync-lb2.txt");
    eprintln!("[lab_balancer_vrrp] sync daemons: lb1 {sync1:?}, lb2 {sync2:?}");
    assert!(
        sync1.contains(&SyncRole::Master) && !sync1.contains(&SyncRole::Backup),
        "lb1, Master, runs the master sync daemon and no backup one: {sync1:?} ({out})"
    );
    assert!(
        sync2.contains(&SyncRole::Backup) && !sync2.contains(&SyncRole::Master),
        "lb2, Backup, runs the backup sync daemon and no master one: {sync2:?} ({out})"
    );
    let router = [("vip", VIP), ("vrid", "51")];
    let m1 = metrics(&run, "metrics-lb1-steady.txt");
    let m2 = metrics(&run, "metrics-lb2-steady.txt");
    assert_eq!(
        m1.get("lvstun_vrrp_state", &router),
        Some(2.0),
        "lb1's metrics say Master (2) for VRID 51 ({out}/metrics-lb1-steady.txt)"
    );
    assert_eq!(
        m2.get("lvstun_vrrp_state", &router),
        Some(1.0),
        "lb2's metrics say Backup (1) for VRID 51 ({out}/metrics-lb2-steady.txt)"
    );
    assert_eq!(
        m1.get("lvstun_vrrp_priority", &router),
        Some(200.0),
        "lb1 forwards, so it runs at its configured priority 200 ({out}/metrics-lb1-steady.txt)"
    );
    // Connection sync: lb2, Backup, knows connections it never scheduled.
    let conns2 = run
        .parsed("conns-lb2-backup.txt", parse::ipvs_conns)
        .unwrap();
    let synced = conns2
        .iter()
        .filter(|c| {
            c.virtual_addr
                .rsplit_once(':')
                .is_some_and(|(a, _)| a == VIP)
        })
        .count();
    eprintln!("[lab_balancer_vrrp] lb2 (Backup) holds {synced} synced connection entries");
    assert!(
        synced > 0,
        "the sync daemon carried lb1's table: {out}/conns-lb2-backup.txt"
    );

    // Event times in the load's clock.
    let start = num(&run, "load.start_unix_ms");
    let kill = num(&run, "kill_ms") - start;
    let back = num(&run, "back_ms") - start;
    let term = num(&run, "term_ms") - start;
    let stamps = stamps(&run);
    let end = stamps.last().map_or(0.0, |s| s.send_ms) + 1.0;

    // 3. Crash: lb2 takes over, holds the VIP, the client's ARP follows.
    let takeover = num(&run, "takeover_ms");
    let crash_outage = outage_ms(&stamps, kill, back);
    assert_eq!(text(&run, "crash.lb2_vip"), "yes", "{out}");
    assert_eq!(
        text(&run, "neigh.crash"),
        mac2,
        "client ARP moved to lb2 ({out})"
    );
    let mdi = master_down_ms(advert);
    assert!(
        takeover <= mdi + 300.0,
        "takeover {takeover} ms vs Master_Down_Interval {mdi:.1} ms ({out})"
    );
    assert!(
        crash_outage <= mdi + 600.0,
        "client outage {crash_outage} ms after the crash ({out}/load.txt)"
    );

    // 4. lb1 back: it preempts once it forwards; lb2 steps down.
    let preempt = num(&run, "preempt_ms");
    let preempt_outage = outage_ms(&stamps, back, term);
    assert_eq!(text(&run, "preempt.lb1_vip"), "yes", "{out}");
    assert_eq!(text(&run, "preempt.lb2_vip"), "no", "{out}");
    assert_eq!(
        text(&run, "neigh.preempt"),
        mac1,
        "client ARP back on lb1 ({out})"
    );

    // 5. Graceful stop: priority 0, lb2 Master after about Skew_Time.
    let graceful = num(&run, "graceful_takeover_ms");
    let graceful_outage = outage_ms(&stamps, term, end);
    assert_eq!(
        text(&run, "graceful.lb1_vip"),
        "no",
        "the VIP left lb1 ({out})"
    );
    let stopped = run
        .log("lb1-b")
        .unwrap()
        .iter()
        .filter(|l| l.message == "vip ownership stopped")
        .count();
    assert_eq!(
        stopped, 1,
        "lb1's second daemon stopped its VIP ownership once on SIGTERM ({out}/logs/lb1-b.log)"
    );
    assert_eq!(
        text(&run, "neigh.graceful"),
        mac2,
        "client ARP on lb2 ({out})"
    );
    // Skew_Time at priority 100 is 0.61 × interval; well below Master_Down_Interval.
    assert!(
        graceful < mdi,
        "graceful takeover {graceful} ms is not faster than a crash ({mdi:.1} ms) ({out})"
    );

    // The one load process was running through all three events.
    assert!(
        term + 1000.0 < end,
        "the load ended before the graceful stop ({out})"
    );

    // rr + connection sync: an upload in flight through lb1 when it died. Before the crash
    // lb2, Backup, already held the upload's entry (its own client port range) bound to the
    // real server lb1 chose: the sync daemon carried it, so survival is not sloppy_tcp's luck
    // (which, under rr, would pick the same one of two servers half the time).
    for lb in ["lb1", "lb2"] {
        assert_eq!(text(&run, &format!("sloppy_tcp.{lb}")), "1", "{lb} ({out})");
    }
    let ports = upload_ports(text(&run, "upload_ports"));
    let on_lb1 = upload_entry(&run, "conns-lb1-master.txt", &ports);
    let on_lb2 = upload_entry(&run, "conns-lb2-backup.txt", &ports);
    eprintln!("[lab_balancer_vrrp] upload entry: lb1 (Master) {on_lb1:?}, lb2 (Backup) {on_lb2:?}");
    assert_eq!(on_lb1.state, "ESTABLISHED", "{out}");
    assert_eq!(
        (&on_lb2.source, &on_lb2.destination),
        (&on_lb1.source, &on_lb1.destination),
        "lb2's synced entry is the upload's, to the same real server ({out})"
    );
    let bytes = text(&run, "upload_bytes");
    let survival = text(&run, "survival.rr");
    eprintln!("[lab_balancer_vrrp] rr + sync: upload across the crash: {survival} (of {bytes})");
    assert_eq!(
        survival,
        format!("0 200 {bytes}"),
        "rr + sync: curl exit, http code, bytes the server counted ({out})"
    );

    // 6. lb1's daemon killed, its node alive: the VIP dies with it, after lb2 holds it.
    let lifetime = run
        .log("lb1-c")
        .unwrap()
        .iter()
        .filter_map(|l| l.num("vip_lifetime_s"))
        .next_back()
        .unwrap_or_else(|| {
            panic!("lb1's third daemon logged its VIP lifetime ({out}/logs/lb1-c.log)")
        }) as f64;
    assert_eq!(
        lifetime,
        vip_lifetime_s(advert),
        "lb1 holds the VIP for 2 x (3 + 1) advertisement intervals, at least 2 s ({out}/logs/lb1-c.log)"
    );
    let held = run.parsed("addr-lb1-killed.txt", ip::addr_oneline).unwrap();
    let vip = held
        .iter()
        .find(|a| a.address == VIP && a.prefix == 32)
        .unwrap_or_else(|| panic!("the Master holds {VIP}/32: {held:?} ({out})"));
    assert!(
        matches!(vip.valid_lft, Some(ip::Lifetime::Secs(_))),
        "lb1 holds the VIP with a finite kernel lifetime: {vip:?} ({out}/addr-lb1-killed.txt)"
    );
    let killed_takeover = num(&run, "killed.takeover_ms");
    let gone = num(&run, "killed.lb1_gone_ms");
    let bound = vip_bound_ms(lifetime);
    let sample_ms = 100.0;
    let two = num(&run, "killed.two_holders");
    eprintln!(
        "[lab_balancer_vrrp] daemon killed: lb2 Master after {killed_takeover} ms, lb1's VIP gone after {gone} ms          (lifetime {lifetime} s, bound {bound} ms), {two} of {} samples with two holders, {} with none",
        text(&run, "killed.samples"),
        text(&run, "killed.no_holder")
    );
    assert!(
        killed_takeover <= mdi + 300.0,
        "takeover {killed_takeover} ms ({out})"
    );
    // The bound counts from the last renewal, at most a quarter lifetime before the kill;
    // one sample period and the time to run `ip` twice are the measurement's own slack.
    assert!(
        gone <= bound + sample_ms + 200.0,
        "lb1's VIP outlived its daemon by {gone} ms, bound {bound} ms ({out}/holders.txt)"
    );
    assert!(
        gone >= killed_takeover,
        "lb1's VIP left ({gone} ms) before lb2 held it ({killed_takeover} ms) ({out}/holders.txt)"
    );
    assert_eq!(
        num(&run, "killed.no_holder"),
        0.0,
        "a sample without a holder ({out}/holders.txt)"
    );
    let holders = run.artifact("holders.txt").unwrap();
    for l in holders.lines() {
        let f: Vec<f64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
        if f[0] >= gone {
            assert_eq!(
                (f[1], f[2]),
                (0.0, 1.0),
                "once lb1's VIP is gone only lb2 holds it: {l} ({out}/holders.txt)"
            );
        }
    }
    assert_eq!(text(&run, "killed.lb2_vip"), "yes", "{out}");

    // 7. The VirtualService leaves the file: the Master stops its router gracefully, the VIP
    //    and the sync daemons go, and the metrics no longer list the VIP.
    assert_eq!(text(&run, "withdrawn.lb2_vip"), "no", "{out}");
    let to_initialize = lb2
        .iter()
        .filter(|t| (t.from, t.to) == (VrrpState::Master, VrrpState::Initialize))
        .count();
    assert_eq!(
        to_initialize, 1,
        "lb2 went from Master to Initialize once, when the VirtualService left: {lb2:?} ({out}/logs/lb2.log)"
    );
    let sync_after = sync_roles(&run, "sync-lb2-final.txt");
    assert!(
        sync_after.is_empty(),
        "lb2 runs no sync daemon once the VirtualService left: {sync_after:?} ({out})"
    );
    let withdrawn = metrics(&run, "metrics-lb2-withdrawn.txt");
    let series = withdrawn.with_label("vip", VIP);
    assert!(
        series.is_empty(),
        "lb2's metrics no longer list {VIP}: {series:?} ({out}/metrics-lb2-withdrawn.txt)"
    );
    eprintln!(
        "[lab_balancer_vrrp] withdrawn: router stopped {} ms after the file changed",
        text(&run, "withdrawn.ms")
    );

    let requests = num(&run, "load.requests");
    let ok = num(&run, "load.ok");
    let table = format!(
        "balancer VRRP (advert {advert} ms, Master_Down_Interval {mdi:.1} ms), one load process: {requests} requests, {ok} ok\n\
         event     takeover_ms  client_outage_ms  failed_requests\n\
         crash     {takeover:>11}  {crash_outage:>16.1}  {:>15}\n\
         preempt   {preempt:>11}  {preempt_outage:>16.1}  {:>15}\n\
         graceful  {graceful:>11}  {graceful_outage:>16.1}  {:>15}\n\
         (crash: SIGKILL + link down -> lb2 Master; preempt: lb1 daemon start -> lb1 Master; graceful: SIGTERM -> lb2 Master)\n",
        failures(&stamps, kill, back),
        failures(&stamps, back, term),
        failures(&stamps, term, end),
    );
    eprintln!("[lab_balancer_vrrp] run folder {out}\n{table}");
    if !run.reused {
        let _ = std::fs::write(run.out_dir.join("outage-table.txt"), &table);
    }
    assert!(requests > 1000.0, "the load ran ({out}/load.txt)");
}
