//! lvstun's own IPVS generic-netlink layer against a real kernel in the lab VM
//! (`tests/lab/scenarios/ipvs-netlink.sh`), with `ipvsadm` as the witness: module autoload,
//! what is programmed equals what ipvsadm lists (tunnel types, flags, persistence), lvstun's
//! dump equals `ipvsadm -Ln`, re-applying writes nothing, one weight change is one write,
//! foreign services survive, the unbatched path equals the batched one, errno decisions, the
//! sync daemon, and a small bulk set equal to what `ipvsadm -R` programs. (The bulk set at
//! full size is a benchmark: `tests/bench/`.)
//!
//! Needs root and the lab's packages (see `tests/lab/setup.sh`).
//! Run: `cargo test -p lvstun-tests --test lab_ipvs_netlink -- --nocapture`
//! (`LVSTUN_LAB_REUSE_IPVS_NETLINK=<run folder>` re-checks a finished run without the VM).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lvstun_tests::lab::parse::ipvsadm;
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
    let run = match lab::run_or_reuse_with(
        "ipvs-netlink",
        &[("BULK_SERVICES", "10"), ("BULK_DESTS", "5")],
        &[("lvstun-node", "lvstun-node")],
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
        let verdict = parse::verdict(value);
        assert!(
            verdict.as_ref().is_some_and(|v| v.ok),
            "the scenario's check {check} passed: {value} ({out})"
        );
    }
    assert_eq!(
        run.result("failures"),
        Some("0"),
        "the scenario counted no failed check ({out})"
    );

    // The details, from the raw output the checks stood on.
    let ops = |name: &str| run.parsed(name, |t| Ok(parse::applied_ops(t))).unwrap();
    assert_eq!(
        ops("apply-2.txt"),
        Some(0),
        "re-applying the same table writes nothing ({out})"
    );
    assert_eq!(
        ops("apply-3.txt"),
        Some(1),
        "one weight change is one write ({out})"
    );
    assert_eq!(
        ops("apply-4.txt"),
        Some(1),
        "dropping one service is one write ({out})"
    );
    assert_eq!(
        ops("bulk-apply.txt"),
        Some(60),
        "the bulk set is 10 x (1 + 5) writes ({out})"
    );
    assert_eq!(
        ops("bulk-reapply.txt"),
        Some(0),
        "re-applying the bulk set writes nothing ({out})"
    );
    let lvstun = run.parsed("bulk-save-lvstun.txt", ipvsadm::save).unwrap();
    let restored = run.parsed("bulk-save-ipvsadm.txt", ipvsadm::save).unwrap();
    assert_eq!(
        (lvstun.services.len(), &lvstun),
        (10, &restored),
        "lvstun programs the 10 services ipvsadm -R programs, destination for destination ({out})"
    );
    // Real traffic went through the programmed service to both web nodes.
    let nodes: std::collections::BTreeSet<String> = run
        .parsed("client-curl.txt", parse::http_responses)
        .unwrap()
        .iter()
        .filter_map(|r| r.header("Node").map(str::to_owned))
        .collect();
    assert_eq!(
        nodes.len(),
        2,
        "both web nodes answered through the VIP: {nodes:?} ({out})"
    );
    for key in [
        "bulk_ms_lvstun_batched",
        "bulk_ms_ipvsadm_restore",
        "bulk_ms_lvstun_one_by_one",
        "bulk_ms_lvstun_reapply",
    ] {
        eprintln!("[lab_ipvs_netlink] {key}={:?}", run.result(key));
    }
}
