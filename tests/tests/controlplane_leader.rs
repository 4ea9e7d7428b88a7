//! Leader election when the API server stops answering: two operator processes (installed with
//! the chart, its exact arguments, short lease timings) against a real kube-apiserver + etcd;
//! the API server is frozen (SIGSTOP, its sockets stay open and nothing answers, as with a hung
//! or partitioned server) for three lease durations, then let run again.
//!
//! The specification: the leader stops acting before its lease can have run out (its own log
//! says how long after its last renewal), the two processes never both report leading (their
//! metric endpoints, sampled every 100 ms, still answer while the API server is frozen), and
//! after the API server runs again exactly one leads within a stated bound.
//!
//! Each operator process reports leadership through `lvstun_operator_leader` on its own port;
//! the test reads nothing else to decide who leads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns panic on purpose

use std::time::{Duration, Instant};

use lvstun_tests::controlplane::ControlPlane;
use lvstun_tests::operator_fixture::{Install, Operator, metric, operator_binary};

/// The lease timings given to both processes: a 4 s lease renewed 2 s before it runs out.
const LEASE: Duration = Duration::from_secs(4);
const GRACE: Duration = Duration::from_secs(2);
/// How long the API server stays frozen: clearly longer than a lease.
const PAUSE: Duration = Duration::from_secs(12);
/// Slack on wall-clock bounds for a busy, shared machine (the test and the operators may be
/// scheduled late).
const SLACK: Duration = Duration::from_secs(2);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What one process reported at one sample: leading, standing by, or no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    Leading,
    Standby,
    Silent,
}

/// Both processes' reports at one instant, `at` after the test's origin.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    reports: [Report; 2],
}

impl Sample {
    fn leaders(&self) -> usize {
        self.reports
            .iter()
            .filter(|r| **r == Report::Leading)
            .count()
    }

    /// The index of the one process leading, if exactly one is.
    fn sole_leader(&self) -> Option<usize> {
        if self.leaders() == 1 {
            self.reports.iter().position(|r| *r == Report::Leading)
        } else {
            None
        }
    }
}

fn report(op: &Operator) -> Report {
    match op
        .get("/metrics")
        .and_then(|(_, body)| metric(&body, "lvstun_operator_leader"))
    {
        Some(1.0) => Report::Leading,
        Some(_) => Report::Standby,
        None => Report::Silent,
    }
}

/// Sample both processes every 100 ms until `until` accepts a sample or `limit` passes; every
/// sample taken is returned (the last one is the accepted one, if any).
fn sample(
    ops: &[Operator; 2],
    origin: Instant,
    limit: Duration,
    mut until: impl FnMut(&Sample) -> bool,
) -> (Vec<Sample>, bool) {
    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        let s = Sample {
            at: origin.elapsed(),
            reports: [report(&ops[0]), report(&ops[1])],
        };
        samples.push(s);
        if until(&s) {
            return (samples, true);
        }
        if start.elapsed() >= limit {
            return (samples, false);
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// The check every phase makes: never two leaders at one sample.
fn never_two_leaders(phase: &str, samples: &[Sample]) {
    if let Some(s) = samples.iter().find(|s| s.leaders() > 1) {
        panic!(
            "{phase}: both processes reported leading at +{:?}: {s:?}",
            s.at
        );
    }
}

/// The leader's own account of stopping: the "stopped leading" log line and how long after its
/// last renewal that went through it stopped, on its own clock.
#[derive(Debug)]
struct Stopped {
    message: String,
    since_renewal: Duration,
}

fn stopped_leading(op: &Operator) -> Option<Stopped> {
    op.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| {
            let message = v["message"].as_str()?;
            if !message.starts_with("stopped leading") {
                return None;
            }
            Some(Stopped {
                message: message.to_owned(),
                since_renewal: Duration::from_millis(v["since_renewal_ms"].as_u64()?),
            })
        })
}

#[tokio::test]
async fn a_leader_behind_a_frozen_api_server_stops_before_its_lease_runs_out_and_one_leads_after() {
    let cp = ControlPlane::shared().unwrap();
    let bin = operator_binary(false).unwrap();
    let install = Install::new(cp, "op-leader", &["replicas=2"]).await;
    let timings = [
        format!("--lease-duration-seconds={}", LEASE.as_secs()),
        format!("--lease-grace-seconds={}", GRACE.as_secs()),
    ];
    let ops = [
        Operator::spawn(&bin, &install, "op-a", &timings),
        Operator::spawn(&bin, &install, "op-b", &timings),
    ];
    let origin = Instant::now();

    // 1. Exactly one leads, and keeps leading across a few renewals.
    let (before, found) = sample(&ops, origin, Duration::from_secs(60), |s| {
        s.sole_leader().is_some()
    });
    never_two_leaders("before the freeze", &before);
    assert!(found, "no process led within 60 s: {:?}", before.last());
    let leader = before.last().and_then(Sample::sole_leader).unwrap();
    let standby = 1 - leader;
    let (steady, _) = sample(&ops, origin, 2 * LEASE, |_| false);
    never_two_leaders("while the API server answers", &steady);
    assert!(
        steady.iter().all(|s| s.sole_leader() == Some(leader)),
        "{} should lead steadily while it can renew: {steady:?}",
        ops[leader].name
    );

    // 2. Freeze the API server for three leases.
    let mut frozen = cp.pause("kube-apiserver").unwrap();
    let paused = origin.elapsed();
    let (during, _) = sample(&ops, origin, PAUSE, |_| false);
    never_two_leaders("while the API server is frozen", &during);
    assert!(
        during.iter().all(|s| !s.reports.contains(&Report::Silent)),
        "the processes' metric endpoints answer whatever the API server does: {during:?}"
    );
    let stop_seen = during
        .iter()
        .find(|s| s.reports[leader] != Report::Leading)
        .map(|s| s.at - paused)
        .unwrap_or_else(|| panic!("{} still leads after {PAUSE:?} frozen", ops[leader].name));
    assert!(
        during.iter().all(|s| s.reports[standby] != Report::Leading),
        "{} cannot have taken a lease it cannot write: {during:?}",
        ops[standby].name
    );
    assert!(
        during
            .iter()
            .rev()
            .take_while(|s| s.at - paused >= LEASE)
            .all(|s| s.leaders() == 0),
        "nobody leads once a lease has passed without the API server"
    );
    let own = stopped_leading(&ops[leader])
        .unwrap_or_else(|| panic!("{} logged no 'stopped leading'", ops[leader].name));

    // 3. Let it run again: exactly one leads.
    frozen.resume().unwrap();
    let resumed = origin.elapsed();
    // Bound: a standby reads the lease every grace (2 s); a read in flight when the server froze
    // gave up after its timeout (2 s); a standby that sees the record change waits one lease
    // (4 s) from that sight: 8 s, plus the slack.
    let takeover_bound = LEASE + 2 * GRACE + SLACK;
    let (after, found) = sample(&ops, origin, takeover_bound + SLACK, |s| {
        s.sole_leader().is_some()
    });
    never_two_leaders("after the API server runs again", &after);
    assert!(
        found,
        "nobody leads {:?} after the API server runs again: {:?}",
        takeover_bound + SLACK,
        after.last()
    );
    let new_leader = after.last().and_then(Sample::sole_leader).unwrap();
    let took = after.last().map(|s| s.at - resumed).unwrap_or_default();
    let (settled, _) = sample(&ops, origin, 2 * LEASE, |_| false);
    never_two_leaders("once settled", &settled);
    assert!(
        settled.iter().all(|s| s.sole_leader() == Some(new_leader)),
        "{} should lead steadily again: {settled:?}",
        ops[new_leader].name
    );

    println!(
        "API server frozen for {:.1} s: {} stopped leading {:.1} s after the freeze, {:.1} s after its last renewal by its own clock ({:?}); after SIGCONT {} led within {:.1} s",
        PAUSE.as_secs_f64(),
        ops[leader].name,
        stop_seen.as_secs_f64(),
        own.since_renewal.as_secs_f64(),
        own.message,
        ops[new_leader].name,
        took.as_secs_f64()
    );
    // The rule: stop at lease - grace/2 (3 s) after the last renewal sent; the lease runs out for
    // a standby no sooner than 4 s after it. The process's own count must fall in between.
    assert!(
        own.since_renewal >= LEASE - GRACE / 2 && own.since_renewal < LEASE,
        "{} stopped {:?} after its last renewal; the rule says at {:?}, and before {LEASE:?} at the latest",
        ops[leader].name,
        own.since_renewal,
        LEASE - GRACE / 2
    );
    // By the test's clock: the last renewal was at most one renewal period before the freeze,
    // so the stop comes at most 3 s after it, plus the slack.
    assert!(
        stop_seen <= LEASE - GRACE / 2 + SLACK,
        "seen to stop {stop_seen:?} after the freeze"
    );
    assert!(
        took <= takeover_bound,
        "a leader again {took:?} after the API server ran again (bound {takeover_bound:?})"
    );
}
