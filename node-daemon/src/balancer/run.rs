//! The balancer's loop: source → desired → plan → apply, on every source change, on every
//! health verdict change, and on a periodic resync that repairs drift (someone ran `ipvsadm`,
//! a module was reloaded). Does I/O only through its seams: [`IpvsTable`] (the kernel or an
//! in-memory fake), [`HealthChecks`] (the real checker or a fake), and the owned-VIPs file.
//!
//! One pass ([`Balancer::pass`]; its deciding and settling halves are pure, in [`super::pass`]):
//! 1. read the kernel's table (reads are not writes: a no-op pass makes zero writes);
//! 2. resolve the objects ([`desired::resolve`]); give the health checker its targets, each new
//!    one starting healthy exactly when the kernel already forwards to it (so a restart
//!    reprograms nothing and drops nothing);
//! 3. build the desired table from the verdicts; own its VIPs plus those in the state file
//!    (written first, see [`state`]);
//! 4. plan, hold back what the kernel refused recently, apply the rest in batches;
//! 5. record refusals, shrink the state file to what is still programmed, publish a [`Report`].
//!
//! A pass that reads the kernel also compares the read with what the previous pass left there
//! ([`foreign`]): services lvstun had programmed and did not remove, now missing, were deleted
//! by another program (kube-proxy in IPVS mode, unless the VIP is in its `ipvs.excludeCIDRs`).
//! The pass adds them again like any other drift, and says so: a warning, the counter
//! `foreign_deletions_total`, and per VirtualService what it found, for the status entry.
//!
//! Kernel refusals are decided by errno. A refusal that will not change by itself (`EINVAL`:
//! e.g. a tunnel destination without a route, "address not unicast" in ipvsadm's words;
//! `ERANGE`, `EPERM`, `EAFNOSUPPORT`, `ENOENT` for a missing scheduler module) is reported with
//! a hint and the identical operation is not sent again until a back-off (30 s doubling to
//! 5 min) has passed: it is retried, not retried blindly on every health event. A different
//! operation for the same destination (the spec changed) is sent at once. Races with another
//! tool (`EEXIST`, `ESRCH`, `ENOENT` on a destination) and resource shortages are retried by a
//! quick follow-up pass, a bounded number of times.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::desired::{self, ObjectRef, Resolved};
use super::foreign;
use super::pass;
use super::plan::{self, OwnedVips};
use super::refusal::{self, Refusal, hint, is_lasting};
use super::state;
use crate::error::Error;
use crate::health::checker::{Checker, HealthEvent, Target};
use crate::source::Snapshot;
use lvstun_ipvs::Error as IpvsError;
use lvstun_ipvs::model::{DestKey, Op, ServiceKey, Table};
use lvstun_ipvs::{ApplyReport, IpvsTable};

/// The seam to the health checker, so the loop can be tested with verdicts set by hand.
pub trait HealthChecks {
    /// Replaces the set of targets (unchanged ones keep running and keep their state).
    fn set_targets(&mut self, targets: Vec<Target>);
    /// The current verdict of a target, once its task has started.
    fn healthy(&self, key: &str) -> Option<bool>;
    /// Checks completed so far (a metric).
    fn checks_run(&self) -> u64;
}

impl HealthChecks for Checker {
    fn set_targets(&mut self, targets: Vec<Target>) {
        Checker::set_targets(self, targets);
    }
    fn healthy(&self, key: &str) -> Option<bool> {
        Checker::healthy(self, key)
    }
    fn checks_run(&self) -> u64 {
        Checker::checks_run(self)
    }
}

/// Why a pass ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The first pass after start.
    Start,
    /// The objects changed.
    Source,
    /// A health verdict changed.
    Health,
    /// The periodic resync.
    Resync,
    /// A follow-up after a transient failure.
    Retry,
}

impl Trigger {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Source => "source",
            Trigger::Health => "health",
            Trigger::Resync => "resync",
            Trigger::Retry => "retry",
        }
    }
}

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the owned-VIPs file lives; `None` keeps ownership in memory only (tests).
    pub state_dir: Option<PathBuf>,
    /// Period of the full resync.
    pub resync: Duration,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassSummary {
    /// Why it ran.
    pub trigger: Trigger,
    /// Whether the kernel's table was read in full (else the model kept since was used).
    pub read: bool,
    /// Operations sent to the kernel (its writes).
    pub ops: usize,
    /// Of those, accepted.
    pub applied: usize,
    /// Of those, refused.
    pub failed: usize,
    /// Operations held back (recently refused, or depending on one).
    pub held: usize,
    /// Services and destinations desired.
    pub services: usize,
    /// Destinations desired.
    pub destinations: usize,
    /// Wall time of the pass.
    pub elapsed: Duration,
}

/// What the loop publishes for `/readyz`, `/metrics` and status reports.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// What the daemon waits for before its loop can start (the API server, at start in a
    /// cluster); `None` once it runs. `/healthz` answers live meanwhile: a restart would only
    /// wait again, later (the kubelet's back-off grows).
    pub waiting: Option<String>,
    /// A pass has completed since start (the kernel's table was read and planned against).
    pub ready: bool,
    /// When the loop last turned; `/healthz` fails when this gets old.
    pub last_turn: Option<std::time::Instant>,
    /// Passes completed.
    pub passes: u64,
    /// Operations sent to the kernel since start.
    pub writes_total: u64,
    /// Operations refused since start.
    pub refused_total: u64,
    /// The last pass.
    pub last: Option<PassSummary>,
    /// The last error that stopped a pass (reading the kernel), if the last pass failed.
    pub last_error: Option<String>,
    /// Operations of the last pass that failed for a passing reason (a race with another tool,
    /// a resource shortage) and wait for a follow-up pass or the resync: until it succeeds the
    /// kernel's table is not the desired one. Lasting refusals are not counted here: they are
    /// held back and reported in [`Report::refusals`].
    pub retrying: usize,
    /// Refusals currently held back.
    pub refusals: Vec<String>,
    /// What is wrong with the objects.
    pub problems: Vec<String>,
    /// Why the source's newest version is not applied (a standalone file with a refused
    /// object; the last good one is served meanwhile).
    pub source_refused: Option<String>,
    /// Per VirtualService and port (`80/TCP`): destinations with weight > 0 in the kernel.
    pub programmed: BTreeMap<ObjectRef, BTreeMap<String, u32>>,
    /// Per VirtualService programmed here: the kernel refusals of its services, for a person.
    pub messages: BTreeMap<ObjectRef, String>,
    /// The health checks of each RealServer this node checks.
    pub real_server_checks: BTreeMap<ObjectRef, Vec<String>>,
    /// Health checks run since start.
    pub checks_run: u64,
    /// Health check targets.
    pub targets: usize,
    /// The IPVS sysctls this node could not set (see [`crate::net::ipvs_sysctl`]), sorted; written
    /// by the daemon's sysctl task, read by `/metrics` and the status entries.
    pub refused_kernel_settings: Vec<lvstun_crds::v1alpha1::RefusedKernelSetting>,
    /// Services this balancer had programmed that it found deleted by another program, since
    /// start (see [`foreign`]).
    pub foreign_deletions_total: u64,
    /// Per VirtualService, what was found deleted within [`foreign::WINDOW`] (for its status
    /// entry).
    pub deleted_externally: BTreeMap<ObjectRef, foreign::Seen>,
}

/// The shared report.
pub type SharedReport = Arc<Mutex<Report>>;

/// Locks the report, surviving a poisoned lock (a panic elsewhere must not stop reporting).
pub fn lock(report: &SharedReport) -> MutexGuard<'_, Report> {
    report
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Delay of the follow-up pass after a transient failure.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Follow-up passes in a row before only the resync retries.
pub const RETRY_LIMIT: u32 = 5;
/// Operations listed one by one in the log; larger plans are summarized.
const LOG_OPS: usize = 32;

/// An IPVS table that lives only in memory, for `--dry-run`: the loop plans and "applies"
/// against it exactly as against the kernel (with the kernel's errnos for impossible
/// operations), and the log shows what would have been sent. It starts empty, so the first
/// pass shows everything this node would program.
#[derive(Debug, Default)]
pub struct DryRun {
    table: Table,
}

impl IpvsTable for DryRun {
    async fn read(&self) -> Result<Table, IpvsError> {
        Ok(self.table.clone())
    }

    async fn apply(&mut self, ops: &[Op]) -> ApplyReport {
        let mut report = ApplyReport::default();
        for op in ops {
            match self.table.apply(op) {
                Ok(()) => report.applied += 1,
                Err(errno) => report.failed.push((
                    *op,
                    IpvsError::Kernel {
                        op: op.to_string(),
                        errno,
                    },
                )),
            }
        }
        report
    }
}

/// The balancer: its seams and what it remembers between passes.
pub struct Balancer<T, H> {
    ipvs: T,
    health: H,
    options: Options,
    /// What the state file says lvstun owns.
    owned: OwnedVips,
    /// The current health targets, by key.
    targets: BTreeMap<String, Target>,
    /// Refused operations being held back.
    refusals: HashMap<Op, Refusal>,
    /// Follow-up passes in a row after transient failures.
    retries: u32,
    /// The kernel's table as last read, with every operation it accepted since applied: what
    /// passes between full reads plan against (see [`Balancer::pass`]).
    kernel: Option<Table>,
    /// The services on owned VIPs the last pass left in the kernel, as far as it knows; `None`
    /// before the first pass. What the next full read is compared with ([`foreign`]).
    left: Option<std::collections::BTreeSet<ServiceKey>>,
    /// Deletions by other programs found recently.
    recent: foreign::Recent,
    /// Services found deleted by other programs since start.
    foreign_total: u64,
    report: SharedReport,
}

impl<T: IpvsTable, H: HealthChecks> Balancer<T, H> {
    /// A balancer over `ipvs` and `health`, owning `owned` (from [`state::load`]).
    pub fn new(ipvs: T, health: H, options: Options, owned: OwnedVips) -> Self {
        Balancer {
            ipvs,
            health,
            options,
            owned,
            targets: BTreeMap::new(),
            refusals: HashMap::new(),
            retries: 0,
            kernel: None,
            left: None,
            recent: foreign::Recent::default(),
            foreign_total: 0,
            report: Arc::new(Mutex::new(Report::default())),
        }
    }

    /// Publishes into `report` instead of a report of its own (the daemon starts its health
    /// endpoint on the report before the balancer exists, while it waits for the API server).
    pub fn with_report(mut self, report: SharedReport) -> Self {
        self.report = report;
        self
    }

    /// The report this balancer publishes.
    pub fn report(&self) -> SharedReport {
        self.report.clone()
    }

    fn save_owned(&self, vips: &OwnedVips) {
        if let Some(dir) = &self.options.state_dir
            && let Err(e) = state::save(dir, vips)
        {
            // Ownership stays correct in memory; only a restart would forget a VIP.
            error!("cannot record the owned VIPs: {e}");
        }
    }

    /// Gives the checker its targets; a new target starts healthy exactly when the kernel
    /// already forwards to it.
    fn update_targets(&mut self, resolved: &Resolved, actual: &Table) {
        // Only new targets need a starting verdict (computing it walks every destination).
        let any_new = resolved
            .checks
            .keys()
            .any(|k| !self.targets.contains_key(&**k));
        let initial = if any_new {
            resolved.initial_verdicts(actual)
        } else {
            HashMap::new()
        };
        let targets: BTreeMap<String, Target> = resolved
            .checks
            .values()
            .map(|c| {
                let initially_healthy = self.targets.get(&*c.key).map_or_else(
                    || initial.get(&*c.key).copied().unwrap_or(false),
                    |t| t.initially_healthy,
                );
                let target = Target {
                    key: c.key.to_string(),
                    probe: c.probe.clone(),
                    interval: c.interval,
                    timeout: c.timeout,
                    thresholds: c.thresholds,
                    initially_healthy,
                };
                (c.key.to_string(), target)
            })
            .collect();
        if targets != self.targets {
            for key in targets.keys().filter(|k| !self.targets.contains_key(*k)) {
                let healthy = targets.get(key).is_some_and(|t| t.initially_healthy);
                info!(check = %key, initially_healthy = healthy, "health check added");
            }
            for key in self.targets.keys().filter(|k| !targets.contains_key(*k)) {
                info!(check = %key, "health check removed");
            }
            self.health.set_targets(targets.values().cloned().collect());
            self.targets = targets;
        }
    }

    fn verdict(&self, key: &str) -> bool {
        self.health
            .healthy(key)
            .or_else(|| self.targets.get(key).map(|t| t.initially_healthy))
            .unwrap_or(false)
    }

    /// Drops held operations that the plan no longer contains or whose back-off ended, and
    /// splits the plan into what is sent now and what waits.
    fn hold_back(&mut self, planned: Vec<Op>, now: Instant) -> (Vec<Op>, Vec<Op>) {
        if self.refusals.is_empty() {
            return (planned, Vec::new());
        }
        // A refusal is forgotten once its operation is no longer wanted; one whose back-off
        // ended stays known (for the next back-off's length) but no longer holds anything.
        let still_planned: HashSet<&Op> = planned.iter().collect();
        self.refusals.retain(|op, _| still_planned.contains(op));
        let holding: HashSet<Op> = self
            .refusals
            .iter()
            .filter(|(_, r)| r.retry_at > now)
            .map(|(op, _)| *op)
            .collect();
        let blocked: HashSet<ServiceKey> = holding
            .iter()
            .filter(|op| matches!(op, Op::NewService { .. }))
            .map(|op| *op.service())
            .collect();
        // A destination moved into place in a hashing scheduler's list is deleted and re-added:
        // if the re-add is held back, the delete must wait with it, or a serving destination
        // would be taken away for nothing.
        let held_adds: HashSet<(ServiceKey, DestKey)> = holding
            .iter()
            .filter_map(|op| match op {
                Op::NewDest { service, dest, .. } => Some((*service, *dest)),
                _ => None,
            })
            .collect();
        planned.into_iter().partition(|op| {
            let held = holding.contains(op);
            // Destinations of a service the kernel would not create can only fail.
            let orphan = matches!(op, Op::NewDest { .. }) && blocked.contains(op.service());
            let move_held = matches!(op, Op::DelDest { service, dest } if held_adds.contains(&(*service, *dest)));
            !held && !orphan && !move_held
        })
    }

    /// Records what the kernel refused: lasting refusals are held back with a back-off.
    /// Returns how many failures were transient (each worth a quick follow-up pass).
    fn record_failures(&mut self, failed: &[(Op, IpvsError)], now: Instant) -> usize {
        let mut transient = 0;
        for (op, err) in failed {
            match err.errno() {
                Some(errno) if is_lasting(op, errno) => {
                    let attempts = self.refusals.get(op).map_or(1, |r| r.attempts + 1);
                    let backoff = refusal::backoff(attempts);
                    let refusal = Refusal {
                        op: op.to_string(),
                        errno,
                        hint: hint(op, errno),
                        attempts,
                        retry_at: now + backoff,
                    };
                    error!(
                        op = %op,
                        errno = %errno,
                        hint = refusal.hint,
                        retry_in_s = backoff.as_secs(),
                        "kernel refused an operation; the same operation waits for the back-off"
                    );
                    self.refusals.insert(*op, refusal);
                }
                _ => {
                    transient += 1;
                    warn!(op = %op, "operation failed, retrying soon: {err}");
                }
            }
        }
        transient
    }

    /// One pass over `snapshot`. Errors only when the kernel's table cannot be read; every
    /// refusal is in the summary and the report instead.
    ///
    /// The kernel's table is read in full at start, on every resync and follow-up, and after
    /// any failure; passes for a source change or a health verdict plan against the model of
    /// it kept since (the last read plus every operation the kernel accepted). Reading 100,000
    /// destinations is a thousand dumps; a weight change must cost only its writes. Drift made
    /// by someone else is repaired by the next resync.
    pub async fn pass(
        &mut self,
        snapshot: &Snapshot,
        trigger: Trigger,
    ) -> Result<PassSummary, Error> {
        let started = Instant::now();

        // Observe: the kernel's table, the objects, the health checks they call for.
        let (actual, read) = self.observe_kernel(trigger).await?;
        lock(&self.report).source_refused = snapshot.refused.clone();
        let resolved = desired::resolve(snapshot);
        if read {
            self.notice_foreign_deletions(&resolved, &actual, started);
        }
        self.update_targets(&resolved, &actual);

        // Decide (pure), and claim the VIPs before touching the kernel.
        let mut decision = pass::decide(&resolved, &actual, |key| self.verdict(key), &self.owned);
        self.record_owned(&decision.owned);
        let (ops, held) = self.hold_back(std::mem::take(&mut decision.planned), started);

        // Apply.
        let report = if ops.is_empty() {
            ApplyReport::default()
        } else {
            self.ipvs.apply(&ops).await
        };

        // Settle: what the kernel refused, what is still lvstun's there.
        let transient = self.settle_refusals(&ops, &report.failed, started);
        let failed_ops: HashSet<&Op> = report.failed.iter().map(|(op, _)| op).collect();
        self.left = Some(foreign::left_in_kernel(
            &actual,
            &ops,
            &failed_ops,
            &decision.owned,
        ));
        let not_done = pass::not_done(held.iter().chain(report.failed.iter().map(|(op, _)| op)));
        self.record_owned(&pass::remaining_owned(&decision, &actual, &not_done));
        let summary = PassSummary {
            trigger,
            read,
            ops: ops.len(),
            applied: report.applied,
            failed: report.failed.len(),
            held: held.len(),
            services: decision.desired.services().count(),
            destinations: decision
                .desired
                .services()
                .map(|(_, e)| e.dests.len())
                .sum(),
            elapsed: started.elapsed(),
        };
        self.log_pass(&ops, &summary);

        // Publish.
        let programmed = pass::programmed(&resolved, &actual, &decision.desired, &not_done);
        self.publish(&resolved, summary, &report, transient, programmed);

        // Keep the model of the kernel for the next pass, unless something failed (then the
        // kernel's answer is the only truth: read it again next time).
        if report.failed.is_empty() {
            let mut model = actual;
            if ops.iter().all(|op| model.apply(op).is_ok()) {
                self.kernel = Some(model);
            }
        }
        Ok(summary)
    }

    /// The kernel's table: the model kept since the last read for a source change or a health
    /// verdict, a full read otherwise. Returns it and whether it was read.
    async fn observe_kernel(&mut self, trigger: Trigger) -> Result<(Table, bool), Error> {
        let cached = match trigger {
            Trigger::Source | Trigger::Health => self.kernel.take(),
            Trigger::Start | Trigger::Resync | Trigger::Retry => None,
        };
        self.kernel = None;
        match cached {
            Some(table) => Ok((table, false)),
            None => Ok((self.ipvs.read().await?, true)),
        }
    }

    /// Records `owned` in memory and in the state file, when it changed.
    fn record_owned(&mut self, owned: &OwnedVips) {
        if *owned != self.owned {
            self.save_owned(owned);
            self.owned = owned.clone();
        }
    }

    /// Forgives the refused operations that went through this time, records the new refusals
    /// (lasting ones held back with a back-off) and counts the follow-up passes. Returns how
    /// many failures were transient.
    fn settle_refusals(&mut self, ops: &[Op], failed: &[(Op, IpvsError)], now: Instant) -> usize {
        if !self.refusals.is_empty() {
            let refused: HashSet<&Op> = failed.iter().map(|(op, _)| op).collect();
            self.refusals
                .retain(|op, _| refused.contains(op) || !ops.contains(op));
        }
        let transient = self.record_failures(failed, now);
        self.retries = if transient > 0 { self.retries + 1 } else { 0 };
        transient
    }

    /// Logs the writes (one by one up to [`LOG_OPS`]) and the pass's summary.
    fn log_pass(&self, ops: &[Op], summary: &PassSummary) {
        for op in ops {
            if ops.len() <= LOG_OPS {
                info!(op = %op, "ipvs");
            } else {
                debug!(op = %op, "ipvs");
            }
        }
        let moved = plan::moved(ops);
        if moved > 0 {
            info!(
                moved,
                "destinations moved into the canonical list order of a hashing scheduler (deleted and re-added at once: connections stay)"
            );
        }
        info!(
            trigger = %summary.trigger.as_str(),
            read = summary.read,
            ops = summary.ops,
            applied = summary.applied,
            failed = summary.failed,
            held = summary.held,
            services = summary.services,
            destinations = summary.destinations,
            checks = self.targets.len(),
            owned = self.owned.len(),
            elapsed_ms = summary.elapsed.as_millis() as u64,
            "reconciled"
        );
    }

    /// Writes the pass's outcome into the shared [`Report`].
    fn publish(
        &self,
        resolved: &Resolved,
        summary: PassSummary,
        report: &ApplyReport,
        transient: usize,
        programmed: BTreeMap<ObjectRef, BTreeMap<String, u32>>,
    ) {
        for p in &resolved.problems {
            debug!("{p}");
        }
        let messages = pass::refusal_messages(resolved, &self.refusals);
        let real_server_checks = resolved
            .real_server_checks
            .iter()
            .map(|(rs, keys)| {
                (
                    (**rs).clone(),
                    keys.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        let mut r = lock(&self.report);
        r.ready = true;
        r.last_turn = Some(std::time::Instant::now());
        r.passes += 1;
        r.writes_total += summary.ops as u64;
        r.refused_total += report.failed.len() as u64;
        r.last = Some(summary);
        r.last_error = None;
        r.retrying = transient;
        r.refusals = self.refusals.values().map(ToString::to_string).collect();
        r.refusals.sort();
        r.problems = resolved.problems.iter().map(ToString::to_string).collect();
        r.programmed = programmed;
        r.messages = messages;
        r.real_server_checks = real_server_checks;
        r.checks_run = self.health.checks_run();
        r.targets = self.targets.len();
        r.foreign_deletions_total = self.foreign_total;
        r.deleted_externally = self.recent.entries().clone();
    }

    /// Compares a full read of the kernel with what the last pass left there: services lvstun
    /// programmed and did not remove, now missing, were deleted by another program. Logs them
    /// with the likely cause and its fix, counts them, and records them per VirtualService;
    /// the pass then adds them again like any drift.
    fn notice_foreign_deletions(&mut self, resolved: &Resolved, read: &Table, now: Instant) {
        let gone = match &self.left {
            Some(left) => foreign::deleted_externally(left, read),
            None => Vec::new(),
        };
        let mut found: BTreeMap<ObjectRef, std::collections::BTreeSet<String>> = BTreeMap::new();
        if !gone.is_empty() {
            for service in resolved.services.iter().filter(|s| gone.contains(&s.key)) {
                found
                    .entry(service.virtual_service.clone())
                    .or_default()
                    .insert(service.port_name.clone());
            }
            let mut vips: Vec<String> = gone
                .iter()
                .filter_map(ServiceKey::vip)
                .map(|v| v.to_string())
                .collect();
            vips.sort();
            vips.dedup();
            let vip_refs: Vec<&str> = vips.iter().map(String::as_str).collect();
            let services: Vec<String> = gone.iter().map(ToString::to_string).collect();
            warn!(
                services = %services.join(", "),
                count = gone.len(),
                fix = %lvstun_crds::kube_proxy::fix(&vip_refs),
                "IPVS services lvstun had programmed were deleted by another program; adding them again"
            );
            self.foreign_total = self.foreign_total.saturating_add(gone.len() as u64);
        }
        self.recent.observe(&found, now, SystemTime::now());
    }

    /// When the next follow-up pass is due after this one, if any.
    fn retry_due(&self, now: Instant) -> Option<Instant> {
        (self.retries > 0 && self.retries <= RETRY_LIMIT).then_some(now + RETRY_DELAY)
    }

    async fn pass_logged(&mut self, snapshot: &Snapshot, trigger: Trigger) -> Option<Instant> {
        let now = Instant::now();
        match self.pass(snapshot, trigger).await {
            Ok(_) => self.retry_due(now),
            Err(e) => {
                error!(trigger = %trigger.as_str(), "reconcile failed: {e}");
                let mut r = lock(&self.report);
                r.last_error = Some(e.to_string());
                r.last_turn = Some(std::time::Instant::now());
                drop(r);
                Some(now + RETRY_DELAY.max(Duration::from_secs(5)))
            }
        }
    }

    /// The kernel seam and the VIPs this loop owns, for a teardown after [`Balancer::run`].
    pub fn kernel_and_owned(&mut self) -> (&mut T, &OwnedVips) {
        (&mut self.ipvs, &self.owned)
    }

    /// Runs until `shutdown` resolves: a pass at start, then one per source change, per burst
    /// of health verdict changes, per resync period, and per due follow-up. The kernel's table
    /// is left as it is: whether the node is torn down is the caller's decision, taken by
    /// `shutdown` (ADR 0008), whose output is returned with the balancer (`None` when the loop
    /// stopped for another reason).
    pub async fn run<S>(
        mut self,
        mut source: watch::Receiver<Arc<Snapshot>>,
        mut events: mpsc::UnboundedReceiver<HealthEvent>,
        shutdown: impl std::future::Future<Output = S>,
    ) -> (Self, Option<S>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut outcome = None;
        let mut snapshot = source.borrow_and_update().clone();
        let mut next_resync = Instant::now() + self.options.resync;
        let mut retry_at = self.pass_logged(&snapshot, Trigger::Start).await;
        let mut source_open = true;
        loop {
            let wake = retry_at.map_or(next_resync, |r| r.min(next_resync));
            let trigger = tokio::select! {
                out = &mut shutdown => {
                    outcome = Some(out);
                    break;
                }
                changed = source.changed(), if source_open => {
                    if changed.is_err() {
                        // The source ended: keep serving the last snapshot.
                        source_open = false;
                        continue;
                    }
                    snapshot = source.borrow_and_update().clone();
                    Trigger::Source
                }
                event = events.recv() => {
                    let Some(event) = event else {
                        warn!("health checker stopped");
                        break;
                    };
                    log_event(&event);
                    // A burst of verdicts (a switch going down) is one pass.
                    while let Ok(more) = events.try_recv() {
                        log_event(&more);
                    }
                    Trigger::Health
                }
                _ = tokio::time::sleep_until(wake) => {
                    if retry_at.is_some_and(|r| r <= Instant::now()) {
                        Trigger::Retry
                    } else {
                        Trigger::Resync
                    }
                }
            };
            if trigger == Trigger::Resync {
                next_resync = Instant::now() + self.options.resync;
            }
            retry_at = self.pass_logged(&snapshot, trigger).await;
        }
        info!("the IPVS loop stopped");
        (self, outcome)
    }
}

fn log_event(event: &HealthEvent) {
    let at = event
        .at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if event.healthy {
        info!(check = %event.key, at_unix_ms = at, "health: healthy");
    } else {
        warn!(
            check = %event.key,
            at_unix_ms = at,
            reason = event.message.as_deref().unwrap_or(""),
            "health: unhealthy"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use crate::balancer::refusal::REFUSAL_BACKOFF;
    use crate::source::file;
    use lvstun_ipvs::model::{DestConfig, Protocol, Scheduler, ServiceConfig, Weight};

    fn only_real_servers() -> Snapshot {
        file::parse(RS).unwrap()
    }

    fn vip_key() -> ServiceKey {
        ServiceKey::Addr {
            address: "192.0.2.100".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        }
    }

    fn foreign_key() -> ServiceKey {
        ServiceKey::Addr {
            address: "192.0.2.200".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 443,
        }
    }

    fn dest(addr: &str) -> DestKey {
        DestKey {
            address: addr.parse().unwrap(),
            port: 80,
        }
    }

    fn w(weight: u32) -> DestConfig {
        DestConfig::tunnel(Weight::new(weight).unwrap())
    }

    /// The kernel as the recipe leaves it: both real servers in rotation.
    fn recipe_table(w1: u32, w2: u32) -> Table {
        let mut t = Table::new();
        t.upsert_service(vip_key(), example_config());
        t.upsert_dest(&vip_key(), dest(WEB1), w(w1));
        t.upsert_dest(&vip_key(), dest(WEB2), w(w2));
        t
    }

    #[tokio::test(start_paused = true)]
    async fn new_servers_start_at_weight_zero_and_rise_with_their_checks() {
        let kernel = SharedFake::default();
        let health = FakeHealth::default();
        let mut b = balancer(&kernel, &health, OwnedVips::default(), None);

        let first = b.pass(&examples(), Trigger::Start).await.unwrap();
        assert_eq!((first.ops, first.applied, first.failed), (3, 3, 0));
        assert_eq!(kernel.table(), recipe_table(0, 0));
        assert!(
            lock_any(&health.targets)
                .iter()
                .all(|t| !t.initially_healthy),
            "servers the kernel does not forward to start unhealthy"
        );

        health.set(WEB1, true);
        health.set(WEB2, true);
        let up = b.pass(&examples(), Trigger::Health).await.unwrap();
        assert_eq!(up.ops, 2);
        assert_eq!(kernel.table(), recipe_table(1, 1));

        // A resync with nothing changed makes zero writes.
        let before = kernel.writes().len();
        let resync = b.pass(&examples(), Trigger::Resync).await.unwrap();
        assert_eq!(resync.ops, 0);
        assert_eq!(kernel.writes().len(), before);

        // web1 fails its checks: one SetDest to weight 0, web2 untouched.
        health.set(WEB1, false);
        let down = b.pass(&examples(), Trigger::Health).await.unwrap();
        assert_eq!(down.ops, 1);
        assert_eq!(
            kernel.writes().last(),
            Some(&Op::SetDest {
                service: vip_key(),
                dest: dest(WEB1),
                config: w(0),
            })
        );
        let report = lock(&b.report()).clone();
        assert!(report.ready);
        let programmed: Vec<(String, u32)> = report
            .programmed
            .values()
            .flat_map(|ports| ports.iter().map(|(p, n)| (p.clone(), *n)))
            .collect();
        assert_eq!(programmed, [("80/TCP".to_string(), 1)]);
        assert_eq!(report.writes_total, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_adopts_the_kernels_table_without_a_write() {
        let kernel = SharedFake::with_table(recipe_table(1, 1));
        let health = FakeHealth::default();
        let owned: OwnedVips = vip_key().vip().into_iter().collect();
        let mut b = balancer(&kernel, &health, owned, None);
        let first = b.pass(&examples(), Trigger::Start).await.unwrap();
        assert_eq!(first.ops, 0, "nothing already right is reprogrammed");
        assert!(kernel.writes().is_empty());
        assert!(
            lock_any(&health.targets)
                .iter()
                .all(|t| t.initially_healthy),
            "servers in rotation stay in rotation until their checks say otherwise"
        );
        // A server drained in the kernel (weight 0) starts unhealthy instead.
        let kernel = SharedFake::with_table(recipe_table(1, 0));
        let health = FakeHealth::default();
        let mut b = balancer(&kernel, &health, OwnedVips::default(), None);
        assert_eq!(b.pass(&examples(), Trigger::Start).await.unwrap().ops, 0);
        let initial: Vec<bool> = lock_any(&health.targets)
            .iter()
            .map(|t| t.initially_healthy)
            .collect();
        assert_eq!(initial, [true, false]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_virtual_service_is_withdrawn_and_foreign_services_survive() {
        let dir = std::env::temp_dir().join(format!("lvstun-run-owned-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut table = recipe_table(1, 1);
        table.upsert_service(foreign_key(), ServiceConfig::new(Scheduler::RR));
        table.upsert_dest(&foreign_key(), dest(WEB1), w(4));
        let kernel = SharedFake::with_table(table);
        let health = FakeHealth::default();

        // First run: adopts the VIP and records it.
        let mut b = balancer(&kernel, &health, OwnedVips::default(), Some(dir.clone()));
        assert_eq!(b.pass(&examples(), Trigger::Start).await.unwrap().ops, 0);
        assert_eq!(state::load(&dir).unwrap(), b.owned);
        drop(b);

        // Restart after the VirtualService was deleted: the record says the VIP is lvstun's.
        let owned = state::load(&dir).unwrap();
        let mut b = balancer(&kernel, &health, owned, Some(dir.clone()));
        let pass = b.pass(&only_real_servers(), Trigger::Start).await.unwrap();
        assert_eq!(pass.ops, 1);
        assert_eq!(kernel.writes(), [Op::DelService { key: vip_key() }]);
        let after = kernel.table();
        assert!(after.service(&vip_key()).is_none());
        assert_eq!(
            after.service(&foreign_key()).map(|e| e.dests.len()),
            Some(1),
            "the foreign service is untouched"
        );
        assert!(state::load(&dir).unwrap().is_empty(), "the VIP is released");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_destination_is_reported_and_not_resent_blindly() {
        let kernel = SharedFake::default();
        kernel.refuse(Some(WEB2));
        let health = FakeHealth::default();
        let mut b = balancer(&kernel, &health, OwnedVips::default(), None);
        let first = b.pass(&examples(), Trigger::Start).await.unwrap();
        assert_eq!((first.ops, first.applied, first.failed), (3, 2, 1));
        let report = lock(&b.report()).clone();
        assert_eq!(report.refusals.len(), 1);
        assert_eq!(
            report.retrying, 0,
            "a lasting refusal is reported, not retried soon"
        );
        let refusal = &report.refusals[0];
        assert!(
            refusal.contains("add destination 198.51.100.130:80")
                && refusal.contains("EINVAL")
                && refusal.contains("unicast address"),
            "{refusal}"
        );
        assert_eq!(report.programmed.values().next().unwrap()["80/TCP"], 0);

        // Health events and resyncs within the back-off do not resend it.
        health.set(WEB1, true);
        let writes_before = kernel.writes().len();
        let again = b.pass(&examples(), Trigger::Health).await.unwrap();
        assert_eq!((again.ops, again.held), (1, 1), "web1's SetDest only");
        assert_eq!(kernel.writes().len(), writes_before + 1);
        assert_eq!(b.pass(&examples(), Trigger::Resync).await.unwrap().ops, 0);

        // After the back-off it is tried again; the route now exists.
        kernel.refuse(None);
        tokio::time::advance(REFUSAL_BACKOFF + Duration::from_secs(1)).await;
        let retried = b.pass(&examples(), Trigger::Resync).await.unwrap();
        assert_eq!((retried.ops, retried.applied, retried.held), (1, 1, 0));
        assert!(lock(&b.report()).refusals.is_empty());
        assert!(
            kernel
                .table()
                .service(&vip_key())
                .unwrap()
                .dests
                .contains_key(&dest(WEB2))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_operation_is_sent_at_once_despite_a_refusal() {
        let kernel = SharedFake::default();
        kernel.refuse(Some(WEB2));
        let health = FakeHealth::default();
        let mut b = balancer(&kernel, &health, OwnedVips::default(), None);
        b.pass(&examples(), Trigger::Start).await.unwrap();
        kernel.refuse(None);
        // The spec changes (web2's weight): a different operation, not held back.
        health.set(WEB2, true);
        let changed = b.pass(&examples(), Trigger::Health).await.unwrap();
        assert_eq!((changed.ops, changed.held), (1, 0));
        assert_eq!(
            kernel.table().service(&vip_key()).unwrap().dests[&dest(WEB2)],
            w(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusal_back_off_doubles_and_is_capped() {
        let kernel = SharedFake::default();
        kernel.refuse(Some(WEB2));
        let health = FakeHealth::default();
        let mut b = balancer(&kernel, &health, OwnedVips::default(), None);
        b.pass(&examples(), Trigger::Start).await.unwrap();
        let mut sends = Vec::new();
        let start = Instant::now();
        for _ in 0..(20 * 60 / 10) {
            tokio::time::advance(Duration::from_secs(10)).await;
            let p = b.pass(&examples(), Trigger::Resync).await.unwrap();
            if p.ops > 0 {
                sends.push((Instant::now() - start).as_secs());
            }
        }
        // 30, +60, +120, +240, then every 300 s.
        let gaps: Vec<u64> = sends.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&sends[..1], &[30]);
        assert_eq!(&gaps[..4], &[60, 120, 240, 300], "{sends:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn passes_between_resyncs_plan_against_the_model_and_resyncs_repair_drift() {
        let kernel = SharedFake::default();
        let health = FakeHealth::default();
        let mut b = balancer(&kernel, &health, OwnedVips::default(), None);
        assert!(b.pass(&examples(), Trigger::Start).await.unwrap().read);
        health.set(WEB1, true);
        health.set(WEB2, true);
        let up = b.pass(&examples(), Trigger::Health).await.unwrap();
        assert_eq!((up.read, up.ops), (false, 2));
        assert_eq!(kernel.reads(), 1, "a health pass does not read the kernel");
        assert_eq!(kernel.table(), recipe_table(1, 1));

        // Someone sets web2's weight by hand: health and source passes do not see it...
        kernel.tamper(|t| {
            t.upsert_dest(&vip_key(), dest(WEB2), w(5));
        });
        let blind = b.pass(&examples(), Trigger::Source).await.unwrap();
        assert_eq!((blind.read, blind.ops), (false, 0));
        // ...the resync does, and repairs it.
        let resync = b.pass(&examples(), Trigger::Resync).await.unwrap();
        assert_eq!((resync.read, resync.ops), (true, 1));
        assert_eq!(kernel.table(), recipe_table(1, 1));

        // A failed operation drops the model: the next pass reads.
        kernel.tamper(|t| {
            let _ = t.apply(&Op::DelDest {
                service: vip_key(),
                dest: dest(WEB2),
            });
        });
        health.set(WEB2, false);
        let failed = b.pass(&examples(), Trigger::Health).await.unwrap();
        assert_eq!(
            (failed.read, failed.failed),
            (false, 1),
            "SetDest on a missing dest"
        );
        // The table is not the desired one until a pass repairs it: /readyz says so.
        assert_eq!(lock(&b.report()).retrying, 1);
        let reads = kernel.reads();
        let healed = b.pass(&examples(), Trigger::Health).await.unwrap();
        assert_eq!((healed.read, healed.ops, healed.failed), (true, 1, 0));
        assert_eq!(lock(&b.report()).retrying, 0);
        assert_eq!(kernel.reads(), reads + 1);
        assert_eq!(kernel.table(), recipe_table(1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_another_program_deletes_is_noticed_re_added_and_reported_for_a_while() {
        let kernel = SharedFake::default();
        let health = FakeHealth::default();
        let mut b = balancer(&kernel, &health, OwnedVips::default(), None);
        b.pass(&examples(), Trigger::Start).await.unwrap();
        health.set(WEB1, true);
        health.set(WEB2, true);
        b.pass(&examples(), Trigger::Health).await.unwrap();
        // kube-proxy's own service on its ClusterIP: never lvstun's business.
        kernel.tamper(|t| t.upsert_service(foreign_key(), ServiceConfig::new(Scheduler::RR)));
        b.pass(&examples(), Trigger::Resync).await.unwrap();
        let www = || ObjectRef {
            namespace: "default".into(),
            name: "www".into(),
        };
        let shared = b.report();
        let report = || lock(&shared).clone();
        assert_eq!(report().foreign_deletions_total, 0);
        assert!(report().deleted_externally.is_empty());

        // kube-proxy in IPVS mode, VIP not in its excludeCIDRs: `cleanLegacyService` deletes
        // lvstun's service and keeps its own.
        let kube_proxy_sync = || {
            kernel.tamper(|t| {
                t.apply(&Op::DelService { key: vip_key() }).unwrap();
            });
        };
        kube_proxy_sync();
        let blind = b.pass(&examples(), Trigger::Source).await.unwrap();
        assert_eq!(
            (blind.read, blind.ops),
            (false, 0),
            "the model cannot see it"
        );
        let resync = b.pass(&examples(), Trigger::Resync).await.unwrap();
        assert_eq!(
            (resync.read, resync.ops),
            (true, 3),
            "service and both destinations"
        );
        let mut want = recipe_table(1, 1);
        want.upsert_service(foreign_key(), ServiceConfig::new(Scheduler::RR));
        assert_eq!(
            kernel.table(),
            want,
            "added again; kube-proxy's own untouched"
        );
        let r = report();
        assert_eq!(r.foreign_deletions_total, 1);
        let seen = &r.deleted_externally[&www()];
        assert_eq!(
            (seen.ports.iter().cloned().collect::<Vec<_>>(), seen.count),
            (vec!["80/TCP".to_string()], 1)
        );
        let metrics =
            super::super::http::metrics_answer(&r, &super::super::owner::VipsReport::default());
        assert!(
            metrics.contains("\nlvstun_balancer_foreign_deletions_total 1\n"),
            "{metrics}"
        );

        // A health verdict acting on the vanished service fails; the follow-up read notices.
        kube_proxy_sync();
        health.set(WEB1, false);
        let failed = b.pass(&examples(), Trigger::Health).await.unwrap();
        assert_eq!((failed.read, failed.failed), (false, 1));
        let retry = b.pass(&examples(), Trigger::Retry).await.unwrap();
        assert!(retry.read);
        assert_eq!(report().deleted_externally[&www()].count, 2);
        health.set(WEB1, true);

        // It keeps happening at every kube-proxy sync: it stays reported.
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(30)).await;
            kube_proxy_sync();
            b.pass(&examples(), Trigger::Resync).await.unwrap();
        }
        assert_eq!(report().deleted_externally[&www()].count, 6);
        assert_eq!(kernel.table(), want);

        // Fixed (the VIP excluded): reported until a window after the last deletion, then not.
        tokio::time::advance(foreign::WINDOW - Duration::from_secs(1)).await;
        b.pass(&examples(), Trigger::Resync).await.unwrap();
        assert!(report().deleted_externally.contains_key(&www()));
        tokio::time::advance(Duration::from_secs(1)).await;
        b.pass(&examples(), Trigger::Resync).await.unwrap();
        assert!(report().deleted_externally.is_empty());
        assert_eq!(
            report().foreign_deletions_total,
            6,
            "a counter never goes back"
        );

        // lvstun's own removal (the VirtualService deleted) is not someone else's.
        b.pass(&only_real_servers(), Trigger::Source).await.unwrap();
        assert!(kernel.table().service(&vip_key()).is_none());
        b.pass(&only_real_servers(), Trigger::Resync).await.unwrap();
        assert_eq!(report().foreign_deletions_total, 6);
        assert!(report().deleted_externally.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_follows_source_health_and_resync() {
        let kernel = SharedFake::default();
        let health = FakeHealth::default();
        let b = balancer(&kernel, &health, OwnedVips::default(), None);
        let report = b.report();
        let (tx, rx) = watch::channel(Arc::new(examples()));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(b.run(rx, events_rx, async move {
            let _ = stop_rx.await;
        }));
        let settle = || tokio::time::sleep(Duration::from_millis(10));
        settle().await;
        assert_eq!(kernel.table(), recipe_table(0, 0));

        // A health verdict: one pass for a burst of events.
        health.set(WEB1, true);
        health.set(WEB2, true);
        for addr in [WEB1, WEB2] {
            events_tx
                .send(HealthEvent {
                    key: addr.into(),
                    healthy: true,
                    message: None,
                    at: SystemTime::now(),
                })
                .unwrap();
        }
        settle().await;
        assert_eq!(kernel.table(), recipe_table(1, 1));
        assert_eq!(lock(&report).passes, 2);

        // A resync 30 s later: one more pass, zero writes.
        let writes = kernel.writes().len();
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        let r = lock(&report).clone();
        assert_eq!(r.passes, 3);
        assert_eq!(
            r.last.map(|l| (l.trigger, l.ops)),
            Some((Trigger::Resync, 0))
        );
        assert_eq!(kernel.writes().len(), writes);

        // The objects change: the VirtualService is gone, its service is withdrawn.
        tx.send(Arc::new(only_real_servers())).unwrap();
        settle().await;
        assert!(kernel.table().service(&vip_key()).is_none());

        stop_tx.send(()).unwrap();
        task.await.unwrap();
        assert!(kernel.table().services().next().is_none());
    }
}

/// Memory of a pass at 1,000 services x 100 destinations against the in-memory kernel, by
/// stage (VmHWM/VmRSS of this process). A measurement, not a test: `cargo test --release -p
/// lvstun-node --bin lvstun-node -- --ignored --nocapture pass_memory`.
#[cfg(test)]
mod memory {
    use super::tests_support::*;
    use super::*;

    fn vm(field: &str) -> u64 {
        let text = std::fs::read_to_string("/proc/self/status").unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    #[test]
    #[ignore = "measurement"]
    fn pass_memory_at_size() {
        let (s, d) = (1000, 100);
        let mut text = String::new();
        for i in 0..s {
            text.push_str(&format!(
                "apiVersion: lvstun.io/v1alpha1\nkind: VirtualService\nmetadata: {{name: vs{i}}}\nspec:\n  vip: 192.0.2.100\n  ports: [{{port: {}}}]\n  realServerSelector: {{matchLabels: {{app: bench}}}}\n  healthCheck: {{http: {{port: 80}}}}\n  balancers: {{nodeSelector: {{}}, virtualRouterID: 1}}\n---\n",
                20000 + i
            ));
        }
        for j in 1..=d {
            text.push_str(&format!(
                "apiVersion: lvstun.io/v1alpha1\nkind: RealServer\nmetadata: {{name: rs{j}, labels: {{app: bench}}}}\nspec: {{address: 198.51.100.{j}}}\n---\n"
            ));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            println!("start: hwm {} rss {}", vm("VmHWM"), vm("VmRSS"));
            let snapshot = crate::source::file::parse(&text).unwrap();
            drop(text);
            println!("snapshot: hwm {} rss {}", vm("VmHWM"), vm("VmRSS"));
            let resolved = desired::resolve(&snapshot);
            println!("resolved: hwm {} rss {}", vm("VmHWM"), vm("VmRSS"));
            let table = resolved.table(|_| true);
            println!("table: hwm {} rss {}", vm("VmHWM"), vm("VmRSS"));
            let ops = plan::plan(&Table::new(), &table, &resolved.vips());
            println!(
                "plan ({} ops): hwm {} rss {}",
                ops.len(),
                vm("VmHWM"),
                vm("VmRSS")
            );
            drop((resolved, table, ops));
            println!("dropped: hwm {} rss {}", vm("VmHWM"), vm("VmRSS"));
            let kernel = SharedFake::default();
            let health = FakeHealth::default();
            let mut b = balancer(&kernel, &health, OwnedVips::default(), None);
            b.pass(&snapshot, Trigger::Start).await.unwrap();
            println!("first pass: hwm {} rss {}", vm("VmHWM"), vm("VmRSS"));
            b.pass(&snapshot, Trigger::Resync).await.unwrap();
            println!("resync: hwm {} rss {}", vm("VmHWM"), vm("VmRSS"));
            println!(
                "sizes: Op {} DestRef {} DestKey {} DestConfig {} ServiceKey {}",
                std::mem::size_of::<Op>(),
                std::mem::size_of::<desired::DestRef>(),
                std::mem::size_of::<DestKey>(),
                std::mem::size_of::<lvstun_ipvs::model::DestConfig>(),
                std::mem::size_of::<ServiceKey>()
            );
        });
    }
}

/// The in-memory seams shared by the loop's tests and measurements.
#[cfg(test)]
pub(super) mod tests_support {
    use std::collections::HashMap;

    use super::*;
    use crate::error::Errno;
    use lvstun_ipvs::fake::FakeIpvs;

    /// The seed's example VirtualService and RealServers (`deploy/examples/`), and the two real
    /// servers' addresses: the fixture the loop's and the pass's tests share.
    pub const VS: &str = include_str!("../../../deploy/examples/virtualservice.yaml");
    pub const RS: &str = include_str!("../../../deploy/examples/realservers.yaml");
    pub const WEB1: &str = "198.51.100.10";
    pub const WEB2: &str = "198.51.100.130";

    pub fn examples() -> Snapshot {
        crate::source::file::parse(&format!("{VS}\n---\n{RS}")).unwrap()
    }

    /// How the example's service is configured in the kernel: `mh` with its fallback, on the
    /// client's address and port.
    pub fn example_config() -> lvstun_ipvs::model::ServiceConfig {
        use lvstun_ipvs::model::{Scheduler, ServiceConfig, ServiceFlags};
        ServiceConfig {
            flags: ServiceFlags::SCHED1.union(ServiceFlags::SCHED2),
            ..ServiceConfig::new(Scheduler::MH)
        }
    }

    /// Health verdicts set by hand; `None` until a test says otherwise, like a checker whose
    /// first checks have not run.
    #[derive(Clone, Default)]
    pub struct FakeHealth {
        pub verdicts: Arc<Mutex<HashMap<String, bool>>>,
        pub targets: Arc<Mutex<Vec<Target>>>,
    }

    impl FakeHealth {
        /// Sets the verdict of every check of the real server at `addr`.
        pub fn set(&self, addr: &str, healthy: bool) {
            let needle = format!("//{addr}:");
            let keys: Vec<String> = lock_any(&self.targets)
                .iter()
                .filter(|t| t.key.contains(&needle))
                .map(|t| t.key.clone())
                .collect();
            assert!(!keys.is_empty(), "no check for {addr}");
            let mut v = lock_any(&self.verdicts);
            for k in keys {
                v.insert(k, healthy);
            }
        }
    }

    pub fn lock_any<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
        m.lock().unwrap()
    }

    impl HealthChecks for FakeHealth {
        fn set_targets(&mut self, targets: Vec<Target>) {
            *lock_any(&self.targets) = targets;
        }
        fn healthy(&self, key: &str) -> Option<bool> {
            lock_any(&self.verdicts).get(key).copied()
        }
        fn checks_run(&self) -> u64 {
            0
        }
    }

    /// A fake kernel shared with the test (the loop owns its seam), which refuses new
    /// destinations to `refuse` with EINVAL, as the kernel does for a tunnel destination
    /// without a route.
    #[derive(Clone, Default)]
    pub struct SharedFake {
        pub inner: Arc<Mutex<FakeIpvs>>,
        pub refuse: Arc<Mutex<Option<String>>>,
        pub reads: Arc<Mutex<usize>>,
    }

    impl SharedFake {
        pub fn with_table(table: Table) -> SharedFake {
            SharedFake {
                inner: Arc::new(Mutex::new(FakeIpvs::with_table(table))),
                ..SharedFake::default()
            }
        }
        pub fn table(&self) -> Table {
            lock_any(&self.inner).table.clone()
        }
        pub fn writes(&self) -> Vec<Op> {
            lock_any(&self.inner).writes.clone()
        }
        pub fn refuse(&self, addr: Option<&str>) {
            *lock_any(&self.refuse) = addr.map(str::to_owned);
        }
        /// Someone else changes the kernel's table behind lvstun's back.
        pub fn tamper(&self, change: impl FnOnce(&mut Table)) {
            change(&mut lock_any(&self.inner).table);
        }
        pub fn reads(&self) -> usize {
            *lock_any(&self.reads)
        }
    }

    impl IpvsTable for SharedFake {
        async fn read(&self) -> Result<Table, IpvsError> {
            *lock_any(&self.reads) += 1;
            Ok(self.table())
        }

        async fn apply(&mut self, ops: &[Op]) -> ApplyReport {
            let refuse = lock_any(&self.refuse).clone();
            let mut fake = lock_any(&self.inner);
            let results = ops
                .iter()
                .map(|op| {
                    fake.writes.push(*op);
                    let refused = matches!(op, Op::NewDest { dest, .. }
                        if refuse.as_deref().is_some_and(|a| dest.address.to_string() == a));
                    let result = if refused {
                        Err(Errno::EINVAL)
                    } else {
                        fake.table.apply(op)
                    };
                    result.map_err(|errno| IpvsError::Kernel {
                        op: op.to_string(),
                        errno,
                    })
                })
                .collect();
            ApplyReport::from_results(ops, results)
        }
    }

    pub fn balancer(
        kernel: &SharedFake,
        health: &FakeHealth,
        owned: OwnedVips,
        state_dir: Option<PathBuf>,
    ) -> Balancer<SharedFake, FakeHealth> {
        Balancer::new(
            kernel.clone(),
            health.clone(),
            Options {
                state_dir,
                resync: Duration::from_secs(30),
            },
            owned,
        )
    }
}
