//! A rogue host against the VRRP source allowlist, in the lab VM
//! (`tests/lab/scenarios/balancer-vrrp-rogue.sh`, issue 15): lb1 (Master, 200) and lb2 (Backup,
//! 100) run `lvstun-node balancer --config FILE --vrrp-peers 192.0.2.11,192.0.2.12`; a namespace
//! on the same segment that is not a peer sends 30 well-formed VRRPv3 advertisements for the
//! VIP's VRID at priority 254, 100 ms apart, while one load process runs.
//!
//! Asserts: every rogue advertisement went out; the VIP stays on lb1 and never reaches lb2;
//! neither daemon changed state; no request of the load failed; both daemons counted the rogue's
//! advertisements as `unknown_source` in `lvstun_vrrp_adverts_dropped_total` (lb2, the Backup
//! that would have obeyed, counted every one).
//!
//! Needs root and the lab's packages (see `tests/lab/setup.sh`).
//! Run: `cargo test -p lvstun-tests --test lab_balancer_vrrp_rogue -- --nocapture`
//! (`LVSTUN_LAB_REUSE_BALANCER_VRRP_ROGUE=<run folder>` re-checks a finished run without the VM).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lvstun_tests::lab::parse::prom;
use lvstun_tests::lab::{self, LabRun};

const ROGUE_COUNT: f64 = 30.0;

fn text<'a>(run: &'a LabRun, key: &str) -> &'a str {
    run.result(key)
        .unwrap_or_else(|| panic!("no {key} in {}/results.txt", run.out_dir.display()))
}

fn num(run: &LabRun, key: &str) -> f64 {
    text(run, key)
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e} ({})", run.out_dir.display()))
}

/// `lvstun_vrrp_adverts_dropped_total{vrid, reason}` on one balancer after the rogue (0 when
/// the series is absent: nothing was dropped for that reason).
fn dropped(run: &LabRun, lb: &str, vrid: &str, reason: &str) -> f64 {
    let m = run
        .parsed(&format!("metrics-{lb}-rogue.txt"), prom::metrics)
        .unwrap();
    m.get(
        "lvstun_vrrp_adverts_dropped_total",
        &[("vrid", vrid), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

#[test]
fn a_rogue_host_on_the_segment_cannot_take_the_vip() {
    let run = lab::run_or_reuse_with(
        "balancer-vrrp-rogue",
        &[],
        &[
            ("lvstun-node", "lvstun-node"),
            ("lvstun-tests", "lvstun-lab-load"),
            ("lvstun-tests", "lvstun-lab-web"),
            ("lvstun-tests", "lvstun-lab-rogue"),
        ],
    )
    .unwrap();
    let out = run.out_dir.display().to_string();
    let vrid = text(&run, "vrid");
    let lb1_dropped = dropped(&run, "lb1", vrid, "unknown_source");
    let lb2_dropped = dropped(&run, "lb2", vrid, "unknown_source");
    eprintln!(
        "[lab_balancer_vrrp_rogue] run folder {out}: rogue {} sent {} adverts at priority 254; unknown_source drops lb1={lb1_dropped} lb2={lb2_dropped}; load requests={} failures={} longest_gap_ms={}",
        text(&run, "rogue.source"),
        text(&run, "rogue.sent"),
        text(&run, "load.requests"),
        text(&run, "load.failures"),
        text(&run, "load.longest_gap_ms"),
    );
    assert_eq!(num(&run, "rogue.sent"), ROGUE_COUNT, "{out}");
    assert_eq!(
        text(&run, "rogue.lb1_vip"),
        "yes",
        "the VIP stays on lb1: {out}"
    );
    assert_eq!(
        text(&run, "rogue.lb2_vip"),
        "no",
        "lb2 never took it: {out}"
    );
    assert_eq!(
        num(&run, "rogue.lb1_changes"),
        0.0,
        "lb1 stayed Master: {out}"
    );
    assert_eq!(
        num(&run, "rogue.lb2_changes"),
        0.0,
        "lb2 stayed Backup: {out}"
    );
    assert!(num(&run, "load.requests") > 0.0, "{out}");
    assert_eq!(num(&run, "load.failures"), 0.0, "no request failed: {out}");
    // Multicast reaches both; the Backup, which would have obeyed, must have dropped every one.
    assert_eq!(
        lb2_dropped, ROGUE_COUNT,
        "lb2 counted each rogue advert: {out}"
    );
    assert_eq!(
        lb1_dropped, ROGUE_COUNT,
        "lb1 counted each rogue advert: {out}"
    );
}
