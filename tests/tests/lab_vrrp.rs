//! VIP failover in the lab VM (`tests/lab/scenarios/vrrp-failover.sh`): lvstun's VRRP as the
//! real VIP owner (`lvstun-node vrrp`) on lb1/lb2, measured from the client by
//! `lvstun-lab-load`, side by side with keepalived at the same settings.
//!
//! Asserts on what the scenario recorded: lb1 Master first and the client's ARP entry for the
//! VIP on lb1's MAC; after lb1 dies hard the entry is lb2's MAC (gratuitous ARP); lb1 takes
//! the VIP back with preempt and not without; a graceful stop hands over within about
//! Skew_Time; and the client-observed outage lies between detection (Master_Down_Interval less
//! one interval of phase) and detection plus a generous margin. The outage beside keepalived's
//! is printed here; the targets (under 500 ms at 100 ms, no worse than keepalived) are the
//! benchmark's (`./dev bench`), which compares several runs: one sample on a shared machine
//! decides nothing.
//!
//! The outage table is printed and written to `target/lab-runs/vrrp-outage.txt`.
//! Needs root and the lab's packages (see `tests/lab/setup.sh`).
//! Run: `cargo test -p lvstun-tests --test lab_vrrp -- --nocapture`
//! (`LVSTUN_LAB_REUSE_VRRP_FAILOVER=<run folder>`, `LVSTUN_LAB_REUSE_VRRP_SURVIVAL=<run folder>`
//! re-check finished runs without the VM).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lvstun_tests::lab::parse::ip;
use lvstun_tests::lab::parse::ipvsadm::{self, SyncRole};
use lvstun_tests::lab::{self, LabRun, parse};

/// RFC 9568 §6.1 Master_Down_Interval of lb2 (priority 150) in ms:
/// 3 × interval + (256 − 150) × interval / 256.
fn master_down_ms(advert_ms: f64) -> f64 {
    3.0 * advert_ms + (256.0 - 150.0) * advert_ms / 256.0
}

fn num(run: &LabRun, key: &str) -> f64 {
    let out = run.out_dir.display();
    run.result(key)
        .unwrap_or_else(|| panic!("no {key} in {out}/results.txt"))
        .parse()
        .unwrap_or_else(|e| panic!("{key} not a number ({e}) in {out}/results.txt"))
}

/// Time from the kill to the first request sent after it that succeeded, from the load
/// generator's stamps (`load-<tag>.txt`: seq send_ms status node latency_ms error).
fn restore_ms(run: &LabRun, tag: &str, kill_offset_ms: f64) -> f64 {
    run.parsed(&format!("load-{tag}.txt"), parse::load_stamps)
        .unwrap()
        .iter()
        .find(|s| s.ok() && s.send_ms >= kill_offset_ms)
        .map(|s| s.send_ms - kill_offset_ms)
        .unwrap_or_else(|| panic!("no success after the kill in load-{tag}.txt"))
}

fn text<'a>(run: &'a LabRun, key: &str) -> &'a str {
    run.result(key)
        .unwrap_or_else(|| panic!("no {key} in {}/results.txt", run.out_dir.display()))
}

/// What the new Master's VIP, gratuitous ARP, the client's next attempt and this shared,
/// emulated machine's scheduling may add to Master_Down_Interval before the client is served
/// again. Generous on purpose: this bound catches a takeover that waits for the wrong timer
/// (several intervals late), not a slow run; how fast failover is, beside keepalived, is the
/// benchmark's business (`./dev bench`, tests/bench/README.md), where several runs are compared.
fn after_detection_ms(advert_ms: f64) -> f64 {
    advert_ms.max(500.0)
}

#[test]
fn vip_moves_with_vrrp_and_the_client_outage_is_the_takeover() {
    let run = lab::run_or_reuse_with(
        "vrrp-failover",
        &[],
        &[
            ("lvstun-node", "lvstun-node"),
            ("lvstun-tests", "lvstun-lab-load"),
        ],
    )
    .unwrap();
    let out = run.out_dir.display().to_string();
    eprintln!(
        "[lab_vrrp] run folder {out}; wall {:.1}s, vm {:?}s",
        run.wall.as_secs_f64(),
        run.timing.get("vm_wall_s")
    );
    let mac1 = text(&run, "mac.lb1");
    let mac2 = text(&run, "mac.lb2");
    assert_ne!(mac1, mac2);

    let mut table = String::from(
        "advert   outage_ms(lvstun)  outage_ms(keepalived)  restore_ms(lvstun)  restore_ms(keepalived)  takeover_ms(lvstun)\n",
    );
    for adv in [1000, 100] {
        for imp in ["lvstun", "keepalived"] {
            let tag = format!("{imp}-{adv}");
            // Before: the client reached the VIP at lb1; after the hard kill, at lb2.
            assert_eq!(
                text(&run, &format!("neigh.before.{tag}")),
                mac1,
                "{tag} ({out})"
            );
            assert_eq!(
                text(&run, &format!("neigh.after.{tag}")),
                mac2,
                "{tag} ({out})"
            );
            // The gap measured is the one the kill caused: successes right up to the kill,
            // none until the new Master answers.
            let kill =
                num(&run, &format!("kill_ms.{tag}")) - num(&run, &format!("start_unix_ms.{tag}"));
            let (from, to) = (
                num(&run, &format!("gap_from_ms.{tag}")),
                num(&run, &format!("gap_to_ms.{tag}")),
            );
            assert!(
                from <= kill && kill <= to,
                "{tag}: longest gap {from}..{to} ms does not span the kill at {kill} ms ({out})"
            );
            let ok = num(&run, &format!("ok.{tag}"));
            let requests = num(&run, &format!("requests.{tag}"));
            assert!(
                ok > 50.0,
                "{tag}: only {ok} successes of {requests} ({out})"
            );
            // Both real servers answered through the VIP (rr over the tunnels), before and
            // after the move.
            assert!(
                num(&run, &format!("node.www1.{tag}")) > 10.0,
                "{tag} ({out})"
            );
            assert!(
                num(&run, &format!("node.www2.{tag}")) > 10.0,
                "{tag} ({out})"
            );
        }
        let l = num(&run, &format!("outage_ms.lvstun-{adv}"));
        let k = num(&run, &format!("outage_ms.keepalived-{adv}"));
        let t = num(&run, &format!("takeover_ms.lvstun-{adv}"));
        let restore = |imp: &str| {
            let tag = format!("{imp}-{adv}");
            let kill =
                num(&run, &format!("kill_ms.{tag}")) - num(&run, &format!("start_unix_ms.{tag}"));
            restore_ms(&run, &tag, kill)
        };
        let (rl, rk) = (restore("lvstun"), restore("keepalived"));
        table.push_str(&format!(
            "{adv:>4} ms  {l:>17.1}  {k:>21.1}  {rl:>18.1}  {rk:>22.1}  {t:>19.0}\n"
        ));
    }
    let path = lab::target_dir().join("lab-runs").join("vrrp-outage.txt");
    let _ = std::fs::write(&path, format!("{table}run: {out}\n"));
    println!(
        "[lab_vrrp] client-observed outage (longest gap between successful requests):\n{table}"
    );

    for adv in [1000.0, 100.0] {
        let l = num(&run, &format!("outage_ms.lvstun-{adv}"));
        let k = num(&run, &format!("outage_ms.keepalived-{adv}"));
        // The outage is the takeover: within Master_Down_Interval of the link going down plus
        // what the new Master and the client add...
        assert!(
            l <= master_down_ms(adv) + after_detection_ms(adv),
            "lvstun {adv} ms: outage {l} ms > Master_Down_Interval {} ms + {} ms ({out})",
            master_down_ms(adv),
            after_detection_ms(adv)
        );
        // ...and never shorter than detection less the one interval of phase: a Backup that
        // took over earlier would not have waited for the Master to go silent.
        assert!(
            l >= master_down_ms(adv) - adv - 50.0,
            "lvstun {adv} ms: outage {l} ms shorter than detection?"
        );
        // One sample each, on a noisy machine: printed, compared by the benchmark.
        println!(
            "[lab_vrrp] {adv} ms: lvstun {l} ms, keepalived {k} ms (one sample each; ./dev bench compares several)"
        );
    }
    // Preempt: lb1 came back and the client follows it again; without preempt it stays Backup.
    assert_eq!(text(&run, "preempt_back"), "yes", "{out}");
    assert_eq!(text(&run, "neigh.preempt"), mac1, "{out}");
    assert_eq!(text(&run, "no_preempt_stays_backup"), "yes", "{out}");
    assert_eq!(text(&run, "neigh.nopreempt"), mac2, "{out}");
    // Graceful stop: priority 0, so lb2 takes over after Skew_Time (41 ms at priority 150,
    // 100 ms interval) instead of Master_Down_Interval (341 ms); TCG adds process costs.
    let g = num(&run, "graceful_takeover_ms");
    println!("[lab_vrrp] graceful handover lb1 -> lb2: {g} ms (Skew_Time 41 ms)");
    assert!(
        g < 341.0,
        "graceful takeover {g} ms is no faster than a crash ({out})"
    );
    let addr = run
        .parsed("lb1-addr-after-stop.txt", ip::addr_oneline)
        .unwrap();
    assert!(
        addr.iter().all(|a| a.address != "192.0.2.100"),
        "lb1 no longer holds the VIP after a graceful stop: {addr:?} ({out})"
    );
    // IPVS connection sync follows the role: lb2 runs the master daemon (sync ID = VRID 51).
    let daemons = run
        .parsed("lb2-sync-daemons.txt", ipvsadm::sync_daemons)
        .unwrap();
    assert!(
        daemons.iter().any(|d| d.role == SyncRole::Master
            && d.interface() == Some("eth0")
            && d.sync_id() == Some(51)),
        "lb2, the new Master, runs the master sync daemon on eth0 with sync ID 51 (the VRID): {daemons:?} ({out})"
    );
}

/// The one entry of `mode`'s upload (its own client port range, `ports.<mode>`) in the
/// connection table `file`, if any.
fn upload_entry(run: &LabRun, mode: &str, file: &str) -> Option<parse::IpvsConn> {
    let out = run.out_dir.display();
    let range = text(run, &format!("ports.{mode}"));
    let (a, b) = range.split_once('-').unwrap();
    let ports: std::ops::RangeInclusive<u16> = a.parse().unwrap()..=b.parse().unwrap();
    let found: Vec<parse::IpvsConn> = run
        .parsed(file, parse::ipvs_conns)
        .unwrap()
        .into_iter()
        .filter(|c| c.source_port().is_some_and(|p| ports.contains(&p)))
        .collect();
    assert!(
        found.len() <= 1,
        "{mode}: entries in {out}/{file}: {found:?}"
    );
    found.into_iter().next()
}

/// A long upload through the VIP, started while lb1 is Master, completes after lb1 dies hard
/// (`tests/lab/scenarios/vrrp-survival.sh`), both ways:
/// - `mh` (same destination order on both lbs, `sloppy_tcp` on, IPVS sync off): lb2 never
///   heard of the connection and hashes its next packet to the same real server;
/// - `rr` with lvstun's IPVS connection sync (`sloppy_tcp` off, so nothing but the synced
///   entry can carry it): lb2 held the upload's entry, bound to the real server lb1 chose,
///   before lb1 died.
///
/// rr used to be a "known gap" here. The failing run's tables show the rr upload had met the
/// mh run's leftover IPVS entries (same client port; `ipvsadm -C` leaves connections), so the
/// entry comparison below compared leftovers, and lb1 was killed while the kernel's sync
/// buffer (flushed after two seconds) may not have left yet. Now each mode has its own client
/// ports and lb1 dies only once lb2 holds the upload's ESTABLISHED entry (`sync_wait_ms.rr`).
/// See the scenario's header for the details.
#[test]
fn connections_survive_failover_with_mh_and_with_connection_sync() {
    let run =
        lab::run_or_reuse_with("vrrp-survival", &[], &[("lvstun-node", "lvstun-node")]).unwrap();
    let out = run.out_dir.display().to_string();
    let bytes = text(&run, "upload_bytes").to_owned();
    for mode in ["mh", "rr"] {
        let got = text(&run, &format!("survival.{mode}"));
        println!("[lab_vrrp] survival with {mode}: curl exit, http code, bytes counted = {got}");
        // The upload really was in flight on lb1 when it died.
        let on_lb1 = upload_entry(&run, mode, &format!("lb1-conns-{mode}.txt"))
            .unwrap_or_else(|| panic!("{mode}: lb1 had no entry for the upload ({out})"));
        assert_eq!(on_lb1.state, "ESTABLISHED", "{mode}: {on_lb1:?} ({out})");
        // ...and it completed: curl exited 0, the server answered 200 and counted every byte.
        assert_eq!(got, format!("0 200 {bytes}"), "{mode} ({out})");
    }
    // mh: lb2 knew nothing of the upload before the takeover.
    assert_eq!(
        upload_entry(&run, "mh", "lb2-conns-before-mh.txt"),
        None,
        "mh: lb2 had an entry without sync ({out})"
    );
    // rr + sync: lb2 knew the connection, bound to the same real server, before it took over.
    let on_lb1 = upload_entry(&run, "rr", "lb1-conns-rr.txt").unwrap();
    let before = upload_entry(&run, "rr", "lb2-conns-before-rr.txt")
        .unwrap_or_else(|| panic!("rr: lb2 had no synced entry for the upload ({out})"));
    println!(
        "[lab_vrrp] rr: lb2's synced entry {before:?} ({} ms after the 3 s settle)",
        text(&run, "sync_wait_ms.rr")
    );
    assert_eq!(
        (&before.source, &before.destination),
        (&on_lb1.source, &on_lb1.destination),
        "rr: synced entry differs ({out})"
    );
}
