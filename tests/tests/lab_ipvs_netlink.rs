//! lvstun's own IPVS generic-netlink layer against a real kernel in the lab VM
//! (`tests/lab/scenarios/ipvs-netlink.sh`), with `ipvsadm` as the witness: module autoload,
//! what is programmed equals what ipvsadm lists (tunnel types, flags, persistence), lvstun's
//! dump equals `ipvsadm -Ln`, re-applying writes nothing, one weight change is one write,
//! foreign services survive, the unbatched path equals the batched one, errno decisions, the
//! sync daemon, and a small bulk set equal to what `ipvsadm -R` programs. (The bulk set at
//! full size is a benchmark: `tests/bench/`.)
//!
//! Needs root and the lab's packages (see `tests/lab/setup.sh`).
//! Run: `cargo test -p lvstun-tests --test lab_ipvs_netlink -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lvstun_tests::lab::{self, LabError, parse};

/// Every check the scenario records, each as `NAME=ok DETAIL` or `NAME=FAIL DETAIL`.
const CHECKS: &[&str] = &[
    "autoload",
    "first_apply",
    "witness",
    "dump_matches_ipvsadm",
    "reapply_ops",
    "weight_ops",
    "weight_witness",
    "traffic",
    "delete_ops",
    "foreign",
    "one_by_one",
    "sync",
    "errno",
    "sync_stop",
    "bulk_equal",
    "bulk_reapply",
];

#[test]
fn ipvs_netlink_layer_matches_ipvsadm_on_a_real_kernel() {
    lab::ensure_built_bins(&[("lvstun-node", "lvstun-node")]).unwrap();
    let run = match lab::run_scenario(
        "ipvs-netlink",
        &[("BULK_SERVICES", "10"), ("BULK_DESTS", "5")],
    ) {
        Ok(run) => run,
        Err(LabError::ScenarioFailed { out_dir, code, .. }) => {
            // The scenario exits 1 when a check failed: name the failed checks.
            let results = std::fs::read_to_string(out_dir.join("results.txt")).unwrap_or_default();
            let failed: Vec<&str> = results.lines().filter(|l| l.contains("=FAIL")).collect();
            panic!(
                "ipvs-netlink exited {code}; failed checks: {failed:#?}; logs in {}",
                out_dir.display()
            );
        }
        Err(e) => panic!("{e}"),
    };
    let out = run.out_dir.display();
    eprintln!(
        "[lab_ipvs_netlink] run folder {out}; wall {:.1}s",
        run.wall.as_secs_f64()
    );
    for check in CHECKS {
        let value = run
            .result(check)
            .unwrap_or_else(|| panic!("no {check} in {out}/results.txt"));
        eprintln!("[lab_ipvs_netlink] {check}: {value}");
        assert!(value.starts_with("ok"), "{check}: {value} ({out})");
    }
    assert_eq!(run.result("failures"), Some("0"));

    // The details, from the raw output the checks stood on.
    let first = |name: &str| {
        run.artifact(name)
            .unwrap()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(first("apply-2.txt"), "ops: 0", "re-apply ({out})");
    assert_eq!(first("apply-3.txt"), "ops: 1", "one weight change ({out})");
    assert_eq!(
        first("apply-4.txt"),
        "ops: 1",
        "one service dropped ({out})"
    );
    assert_eq!(first("bulk-apply.txt"), "ops: 60", "10 x (1 + 5) ({out})");
    assert_eq!(first("bulk-reapply.txt"), "ops: 0", "({out})");
    assert_eq!(
        run.artifact("bulk-save-lvstun.txt").unwrap(),
        run.artifact("bulk-save-ipvsadm.txt").unwrap(),
        "lvstun programs what ipvsadm -R programs ({out})"
    );
    // Real traffic went through the programmed service to both web nodes.
    let curl = run.artifact("client-curl.txt").unwrap();
    let nodes: std::collections::BTreeSet<String> = parse::http_responses(&curl)
        .unwrap()
        .iter()
        .filter_map(|r| r.header("Node").map(str::to_owned))
        .collect();
    assert_eq!(nodes.len(), 2, "{nodes:?} ({out})");
    for key in [
        "bulk_ms_lvstun_batched",
        "bulk_ms_ipvsadm_restore",
        "bulk_ms_lvstun_one_by_one",
        "bulk_ms_lvstun_reapply",
    ] {
        eprintln!("[lab_ipvs_netlink] {key}={:?}", run.result(key));
    }
}
