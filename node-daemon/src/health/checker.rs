//! Schedules health checks for every target: one async task per target on the runtime (no
//! thread or process each), checks spread over the interval so hundreds of servers do not fire
//! at once, at most one check in flight per target (a slow server delays only its own next
//! check). Verdict changes are sent as [`HealthEvent`]s; the full picture is in
//! [`Checker::snapshot`]. Does I/O through [`Probe`].

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::probe::Probe;
use super::state::{TargetState, Thresholds};

/// One thing to check, keyed by a stable name (e.g. `<vs namespace/name>/<real server>:<port>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Stable identity; a target whose key survives a config change keeps its state.
    pub key: String,
    /// What to check.
    pub probe: Probe,
    /// Time between the starts of two checks.
    pub interval: Duration,
    /// Limit for one check.
    pub timeout: Duration,
    /// Rise/fall.
    pub thresholds: Thresholds,
    /// Starting verdict (see [`TargetState::new`]).
    pub initially_healthy: bool,
}

/// A verdict change of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    /// The target's key.
    pub key: String,
    /// The new verdict.
    pub healthy: bool,
    /// Why the last check failed, when unhealthy.
    pub message: Option<String>,
    /// When the verdict changed.
    pub at: SystemTime,
}

/// What the checker knows of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStatus {
    /// Rise/fall state.
    pub state: TargetState,
    /// When the last check finished, if any did.
    pub last_check: Option<SystemTime>,
}

type States = Arc<Mutex<HashMap<String, TargetStatus>>>;

/// The set of running checks.
pub struct Checker {
    tasks: HashMap<String, (Target, JoinHandle<()>)>,
    states: States,
    events: mpsc::UnboundedSender<HealthEvent>,
    checks_run: Arc<AtomicU64>,
}

fn lock(states: &States) -> MutexGuard<'_, HashMap<String, TargetStatus>> {
    states
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Checker {
    /// A checker with no targets, and the receiving end of its verdict changes. Spawns nothing
    /// until [`Checker::set_targets`] is called (inside a tokio runtime).
    pub fn new() -> (Checker, mpsc::UnboundedReceiver<HealthEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let checker = Checker {
            tasks: HashMap::new(),
            states: Arc::new(Mutex::new(HashMap::new())),
            events: tx,
            checks_run: Arc::new(AtomicU64::new(0)),
        };
        (checker, rx)
    }

    /// Replace the set of targets. Unchanged targets keep running undisturbed; changed ones
    /// restart with their state kept; removed ones stop and are forgotten.
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        let wanted: HashMap<String, Target> =
            targets.into_iter().map(|t| (t.key.clone(), t)).collect();
        self.tasks.retain(|key, (current, handle)| {
            let keep = wanted.get(key) == Some(current);
            if !keep {
                handle.abort();
            }
            keep
        });
        lock(&self.states).retain(|key, _| wanted.contains_key(key));
        for (key, target) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let handle = tokio::spawn(run_target(
                target.clone(),
                self.states.clone(),
                self.events.clone(),
                self.checks_run.clone(),
            ));
            self.tasks.insert(key, (target, handle));
        }
    }

    /// The verdict for one target, once known.
    pub fn healthy(&self, key: &str) -> Option<bool> {
        lock(&self.states).get(key).map(|s| s.state.healthy())
    }

    /// Every target's current status.
    pub fn snapshot(&self) -> HashMap<String, TargetStatus> {
        lock(&self.states).clone()
    }

    /// Checks completed since start (a metric).
    pub fn checks_run(&self) -> u64 {
        self.checks_run.load(Ordering::Relaxed)
    }

    /// Number of targets being checked.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no target is being checked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for (_, (_, handle)) in self.tasks.drain() {
            handle.abort();
        }
    }
}

/// Where in its interval a target's checks start: a stable hash of the key, so many targets
/// spread out instead of firing together.
fn spread(key: &str, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let nanos = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(h.finish()) % nanos) as u64)
}

async fn run_target(
    target: Target,
    states: States,
    events: mpsc::UnboundedSender<HealthEvent>,
    checks_run: Arc<AtomicU64>,
) {
    lock(&states)
        .entry(target.key.clone())
        .or_insert_with(|| TargetStatus {
            state: TargetState::new(target.initially_healthy),
            last_check: None,
        });
    let interval = target.interval.max(Duration::from_millis(10));
    let mut next = Instant::now() + spread(&target.key, interval);
    loop {
        tokio::time::sleep_until(next).await;
        let outcome = target.probe.run(target.timeout).await;
        checks_run.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now();
        let event = {
            let mut states = lock(&states);
            let Some(status) = states.get_mut(&target.key) else {
                return; // removed while the check ran
            };
            status.last_check = Some(now);
            status
                .state
                .observe(outcome, target.thresholds)
                .map(|healthy| HealthEvent {
                    key: target.key.clone(),
                    healthy,
                    message: status.state.last_error().map(str::to_string),
                    at: now,
                })
        };
        if let Some(event) = event
            && events.send(event).is_err()
        {
            return; // nobody listens any more
        }
        next += interval;
        let now = Instant::now();
        if next < now {
            // The check took longer than the interval: skip the missed slots instead of
            // firing a burst to catch up.
            next = now + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A loopback web server whose health page says OK while `up` is true, 503 otherwise.
    async fn switchable_server(up: Arc<AtomicBool>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                let resp: &[u8] = if up.load(Ordering::SeqCst) {
                    b"HTTP/1.0 200 OK\r\n\r\nOK"
                } else {
                    b"HTTP/1.0 503 Service Unavailable\r\n\r\ndown"
                };
                let _ = s.write_all(resp).await;
            }
        });
        addr
    }

    fn target(key: &str, addr: SocketAddr, initially_healthy: bool) -> Target {
        Target {
            key: key.into(),
            probe: Probe::Http {
                addr,
                path: "/healthcheck.html".into(),
                host: None,
                expect_status: 200,
                expect_body: "OK".into(),
            },
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            thresholds: Thresholds { fall: 2, rise: 1 },
            initially_healthy,
        }
    }

    async fn next_event(rx: &mut mpsc::UnboundedReceiver<HealthEvent>) -> HealthEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("channel open")
    }

    #[tokio::test]
    async fn server_going_down_and_up_produces_transitions() {
        let up = Arc::new(AtomicBool::new(true));
        let addr = switchable_server(up.clone()).await;
        let (mut checker, mut rx) = Checker::new();
        checker.set_targets(vec![target("www/web1:80", addr, false)]);

        let e = next_event(&mut rx).await;
        assert_eq!((e.key.as_str(), e.healthy), ("www/web1:80", true));
        assert_eq!(checker.healthy("www/web1:80"), Some(true));

        up.store(false, Ordering::SeqCst);
        let e = next_event(&mut rx).await;
        assert!(!e.healthy);
        assert!(e.message.unwrap().contains("503"));
        let snap = checker.snapshot();
        assert!(snap["www/web1:80"].state.consecutive_failures() >= 2);
        assert!(snap["www/web1:80"].last_check.is_some());

        up.store(true, Ordering::SeqCst);
        assert!(next_event(&mut rx).await.healthy);
        assert!(checker.checks_run() >= 4);
    }

    #[tokio::test]
    async fn removing_a_target_stops_it_and_unchanged_targets_keep_state() {
        let up = Arc::new(AtomicBool::new(true));
        let addr = switchable_server(up).await;
        let (mut checker, mut rx) = Checker::new();
        let a = target("a", addr, false);
        let b = target("b", addr, false);
        checker.set_targets(vec![a.clone(), b]);
        let mut seen = vec![next_event(&mut rx).await.key, next_event(&mut rx).await.key];
        seen.sort();
        assert_eq!(seen, ["a", "b"]);

        checker.set_targets(vec![a]);
        assert_eq!(checker.len(), 1);
        assert_eq!(
            checker.healthy("a"),
            Some(true),
            "state kept for an unchanged target"
        );
        assert_eq!(checker.healthy("b"), None, "removed target forgotten");
    }

    #[test]
    fn spread_stays_inside_the_interval() {
        let iv = Duration::from_secs(1);
        let offsets: Vec<Duration> = (0..200).map(|i| spread(&format!("rs-{i}"), iv)).collect();
        assert!(offsets.iter().all(|o| *o < iv));
        // Not all in the same tenth of the interval.
        let buckets: std::collections::BTreeSet<u128> =
            offsets.iter().map(|o| o.as_millis() / 100).collect();
        assert!(buckets.len() >= 8, "{buckets:?}");
    }
}
