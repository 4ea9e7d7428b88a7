//! Schedules health checks for every target: one async task per target on the runtime (no
//! thread or process each), checks spread over the interval so hundreds of servers do not fire
//! at once, at most one check in flight per target (a slow server delays only its own next
//! check). Verdict changes are sent as [`HealthEvent`]s; the full picture is in
//! [`Checker::statuses`]. Does I/O through [`Probe`].

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
    /// When the verdict last changed, if it did since the target was added.
    pub last_transition: Option<SystemTime>,
}

type States = Arc<Mutex<HashMap<String, TargetStatus>>>;

/// A read-only view of every target's status, shared with the checker.
#[derive(Clone)]
pub struct Statuses(States);

impl Statuses {
    /// Every target's current status.
    pub fn snapshot(&self) -> HashMap<String, TargetStatus> {
        lock(&self.0).clone()
    }
}

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
    #[cfg(test)]
    pub fn snapshot(&self) -> HashMap<String, TargetStatus> {
        lock(&self.states).clone()
    }

    /// A handle that reads the targets' status from elsewhere (the status reporter), without
    /// access to the checker itself.
    pub fn statuses(&self) -> Statuses {
        Statuses(self.states.clone())
    }

    /// Checks completed since start (a metric).
    pub fn checks_run(&self) -> u64 {
        self.checks_run.load(Ordering::Relaxed)
    }

    /// Number of targets being checked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tasks.len()
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
            last_transition: None,
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
            let flipped = status.state.observe(outcome, target.thresholds);
            if flipped.is_some() {
                status.last_transition = Some(now);
            }
            flipped.map(|healthy| HealthEvent {
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

/// The checker's CPU cost at scale, on the host against loopback listeners. A benchmark, not a
/// test: `tests/bench/run.sh` runs it (`cargo test --release -p lvstun-node --bin lvstun-node
/// -- --ignored --nocapture health_cpu`), sized by `LVSTUN_BENCH_TARGETS` (500) and
/// `LVSTUN_BENCH_SECONDS` (20).
///
/// The checker runs on a runtime shaped as the daemon's (two workers named
/// [`RUNTIME_THREAD`](crate::balancer::daemon::RUNTIME_THREAD)); the listeners run on another
/// thread with their own runtime. The CPU time of the runtime's threads alone is measured
/// (`/proc/self/task/*/schedstat`, nanoseconds on CPU), so the listeners' work is not counted;
/// the whole process's time is printed too.
#[cfg(test)]
mod bench {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::health::probe::Probe;

    fn env_or(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Nanoseconds the threads named `name` have run on a CPU.
    fn threads_cpu_ns(name: &str) -> u64 {
        let mut total = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        total
    }

    /// User + system time of the whole process, in clock ticks (100 per second on Linux).
    fn process_cpu_ticks() -> u64 {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        // Fields after the command name (which is in parentheses and may contain spaces).
        let rest = &text[text.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// `n` listeners on 127.0.x.y (distinct loopback addresses), each answering the classic
    /// health page; on their own thread and runtime.
    fn start_listeners(n: usize) -> Vec<SocketAddr> {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("bench-listen".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut addrs = Vec::with_capacity(n);
                    for i in 0..n {
                        let ip = Ipv4Addr::new(127, 0, (i / 250) as u8, (i % 250 + 1) as u8);
                        let l = TcpListener::bind((IpAddr::V4(ip), 0)).await.unwrap();
                        addrs.push(l.local_addr().unwrap());
                        tokio::spawn(async move {
                            while let Ok((mut s, _)) = l.accept().await {
                                tokio::spawn(async move {
                                    let mut req = [0u8; 512];
                                    let _ = s.read(&mut req).await;
                                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nOK").await;
                                });
                            }
                        });
                    }
                    tx.send(addrs).unwrap();
                    std::future::pending::<()>().await;
                });
            });
        spawned.unwrap();
        rx.recv().unwrap()
    }

    #[test]
    #[ignore = "benchmark: run by tests/bench/run.sh"]
    fn health_cpu_with_many_targets() {
        let n = env_or("LVSTUN_BENCH_TARGETS", 500) as usize;
        let secs = env_or("LVSTUN_BENCH_SECONDS", 20);
        let addrs = start_listeners(n);
        let workers = crate::balancer::daemon::RUNTIME_THREAD;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(workers)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut checker, mut events) = Checker::new();
            let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
            checker.set_targets(
                addrs
                    .iter()
                    .enumerate()
                    .map(|(i, addr)| Target {
                        key: format!("rs-{i}"),
                        probe: Probe::Http {
                            addr: *addr,
                            path: "/healthcheck.html".into(),
                            host: None,
                            expect_status: 200,
                            expect_body: "OK".into(),
                        },
                        interval: Duration::from_secs(1),
                        timeout: Duration::from_secs(1),
                        thresholds: Thresholds { fall: 2, rise: 1 },
                        initially_healthy: false,
                    })
                    .collect(),
            );
            // Warm up: every target has started and checked at least once.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (cpu0, ticks0, checks0) = (
                threads_cpu_ns(workers),
                process_cpu_ticks(),
                checker.checks_run(),
            );
            let t0 = std::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let wall = t0.elapsed().as_secs_f64();
            let cpu = (threads_cpu_ns(workers) - cpu0) as f64 / 1e9;
            let process = (process_cpu_ticks() - ticks0) as f64 / 100.0;
            let checks = checker.checks_run() - checks0;
            let healthy = checker
                .snapshot()
                .values()
                .filter(|s| s.state.healthy())
                .count();
            println!("health_targets={n}");
            println!("health_seconds={wall:.1}");
            println!("health_checks={checks}");
            println!("health_checks_per_s={:.0}", checks as f64 / wall);
            println!("health_healthy={healthy}");
            println!("health_cpu_s={cpu:.3}");
            println!("health_cpu_percent={:.2}", cpu / wall * 100.0);
            println!("health_process_cpu_percent={:.2}", process / wall * 100.0);
            assert_eq!(healthy, n, "every listener answers");
            drop(checker);
            drain.abort();
        });
    }
}
