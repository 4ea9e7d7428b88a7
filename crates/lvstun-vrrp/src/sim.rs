//! A deterministic network simulator for the VRRP state machine (tests only).
//!
//! N [`Router`]s on one virtual segment, driven by a virtual clock: no real time, no sockets,
//! no threads. Advertisements really go through `Advertisement::encode` and the receivers'
//! [`ReceiveFilter::accept`], so the wire code is exercised on every delivery. The network has
//! a fixed latency, independent per-receiver loss from a seeded xorshift PRNG, partitions and
//! crashes. Every run with the same seed is the same run.
//!
//! It also checks invariants on every action: the IPVS sync daemon is master only while the VIP
//! is held, timers are never set in the past, `StateChanged` matches the router's state.
//!
//! This is where the claims about flapping, takeover time and split brain are proven; the
//! numbers are printed (`cargo test -p lvstun-vrrp sim -- --nocapture`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::driver::SyncRole;
use crate::fsm::{Action, AdverInterval, Event, Priority, Router, RouterConfig, State, TimerKind};
use crate::packet::{ReceiveFilter, VRRP_MULTICAST_V4, VRRP_TTL};

/// Tiny deterministic PRNG (xorshift64), so tests need no new dependency.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One state change, with its virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) at: Duration,
    pub(crate) node: usize,
    pub(crate) from: State,
    pub(crate) to: State,
}

struct Node {
    router: Router,
    filter: ReceiveFilter,
    ip: Ipv4Addr,
    alive: bool,
    group: u8,
    holds_vip: bool,
    /// When the VIP was last added or renewed: the kernel deletes it a lifetime later.
    renewed: Duration,
    sync: Option<SyncRole>,
    timers: BTreeMap<TimerKind, Instant>,
}

enum Item {
    Timer {
        node: usize,
        kind: TimerKind,
        at: Instant,
    },
    Deliver {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    /// The kernel's address lifetime check, for a node whose daemon died holding the VIP.
    VipExpiry { node: usize },
}

struct Entry {
    at: Duration,
    seq: u64,
    item: Item,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: `BinaryHeap` is a max-heap and we want the earliest (then first-queued) entry.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

pub(crate) struct Sim {
    t0: Instant,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Entry>,
    nodes: Vec<Node>,
    rng: XorShift,
    /// Probability that one advertisement is lost on its way to one receiver.
    pub(crate) loss: f64,
    /// One-way delay of every delivered advertisement.
    pub(crate) latency: Duration,
    pub(crate) transitions: Vec<Transition>,
    /// (time, node, holds the VIP after this change)
    vip_log: Vec<(Duration, usize, bool)>,
    pub(crate) drops: BTreeMap<&'static str, u64>,
    /// Per-receiver advertisement copies sent, and lost.
    pub(crate) copies: u64,
    pub(crate) lost: u64,
    /// Longest run of consecutive losses of one sender's advertisements at one receiver.
    pub(crate) max_loss_streak: u32,
    streaks: BTreeMap<(usize, usize), u32>,
    pub(crate) garps: u64,
    /// VIP lifetime renewals ([`Action::RefreshVip`]) applied.
    pub(crate) refreshes: u64,
}

impl Sim {
    pub(crate) fn new(seed: u64, configs: Vec<RouterConfig>, loss: f64, latency: Duration) -> Self {
        let nodes = configs
            .into_iter()
            .map(|c| Node {
                filter: ReceiveFilter::multicast(c.vrid, c.primary_ip, c.vips.clone()),
                ip: c.primary_ip,
                router: Router::new(c).unwrap(),
                alive: false,
                group: 0,
                holds_vip: false,
                renewed: Duration::ZERO,
                sync: None,
                timers: BTreeMap::new(),
            })
            .collect();
        Self {
            t0: Instant::now(),
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            rng: XorShift(seed.max(1)),
            loss,
            latency,
            transitions: Vec::new(),
            vip_log: Vec::new(),
            drops: BTreeMap::new(),
            copies: 0,
            lost: 0,
            max_loss_streak: 0,
            streaks: BTreeMap::new(),
            garps: 0,
            refreshes: 0,
        }
    }

    pub(crate) fn now(&self) -> Duration {
        self.now
    }

    pub(crate) fn router(&self, i: usize) -> &Router {
        &self.nodes[i].router
    }

    pub(crate) fn start(&mut self, i: usize) {
        self.nodes[i].alive = true;
        self.dispatch(i, Event::Startup);
    }

    pub(crate) fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    /// The node dies without a word: no priority 0, its VIP gone with it.
    pub(crate) fn crash(&mut self, i: usize) {
        self.nodes[i].alive = false;
        if self.nodes[i].holds_vip {
            self.nodes[i].holds_vip = false;
            self.vip_log.push((self.now, i, false));
        }
    }

    /// The daemon dies without a word (SIGKILL) while the node's kernel lives on: the VIP stays
    /// until its kernel lifetime, counted from its last renewal, runs out (modelled at exactly
    /// the lifetime: the kernel's own check adds up to `VipLifetime::bound` − lifetime).
    pub(crate) fn crash_daemon(&mut self, i: usize) {
        self.nodes[i].alive = false;
        if self.nodes[i].holds_vip {
            let at = self.nodes[i].renewed + self.nodes[i].router.vip_lifetime().duration();
            self.push(at, Item::VipExpiry { node: i });
        }
    }

    /// Graceful stop: the router handles Shutdown (priority 0 if Master), then the node is gone.
    pub(crate) fn shutdown(&mut self, i: usize) {
        self.dispatch(i, Event::Shutdown);
        self.nodes[i].alive = false;
    }

    pub(crate) fn set_priority(&mut self, i: usize, p: u8) {
        self.dispatch(i, Event::PriorityChanged(Priority::new(p).unwrap()));
    }

    /// Nodes only hear nodes with the same group number.
    pub(crate) fn partition(&mut self, groups: &[u8]) {
        for (node, g) in self.nodes.iter_mut().zip(groups) {
            node.group = *g;
        }
    }

    pub(crate) fn heal(&mut self) {
        for node in &mut self.nodes {
            node.group = 0;
        }
    }

    pub(crate) fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive && self.nodes[i].router.state() == State::Master)
            .collect()
    }

    /// First time at or after `after` that `node` entered `to`.
    pub(crate) fn entered(&self, node: usize, to: State, after: Duration) -> Option<Duration> {
        self.transitions
            .iter()
            .find(|t| t.node == node && t.to == to && t.at >= after)
            .map(|t| t.at)
    }

    pub(crate) fn transitions_since(&self, after: Duration) -> Vec<Transition> {
        self.transitions
            .iter()
            .filter(|t| t.at >= after)
            .copied()
            .collect()
    }

    /// Within [from, to): total time nobody held the VIP, and total time two or more did.
    pub(crate) fn vip_gap_and_overlap(&self, from: Duration, to: Duration) -> (Duration, Duration) {
        let mut holders = vec![false; self.nodes.len()];
        let (mut gap, mut overlap) = (Duration::ZERO, Duration::ZERO);
        let mut last = from;
        let count = |h: &[bool]| h.iter().filter(|x| **x).count();
        for &(at, node, holds) in &self.vip_log {
            if at > from {
                let span = at.min(to).saturating_sub(last);
                match count(&holders) {
                    0 => gap += span,
                    1 => {}
                    _ => overlap += span,
                }
                last = at.clamp(from, to);
            }
            holders[node] = holds;
        }
        let span = to.saturating_sub(last);
        match count(&holders) {
            0 => gap += span,
            1 => {}
            _ => overlap += span,
        }
        (gap, overlap)
    }

    pub(crate) fn run_until(&mut self, until: Duration) {
        while self.queue.peek().is_some_and(|e| e.at <= until) {
            let Some(entry) = self.queue.pop() else { break };
            self.now = entry.at;
            match entry.item {
                Item::Timer { node, kind, at } => {
                    let n = &mut self.nodes[node];
                    if n.alive && n.timers.get(&kind) == Some(&at) {
                        n.timers.remove(&kind);
                        self.dispatch(node, kind.fired());
                    }
                }
                Item::Deliver { to, from, bytes } => {
                    if !self.nodes[to].alive {
                        continue;
                    }
                    let src = self.nodes[from].ip;
                    match self.nodes[to]
                        .filter
                        .accept(VRRP_TTL, src, VRRP_MULTICAST_V4, &bytes)
                    {
                        Ok(advert) => {
                            self.dispatch(to, Event::AdvertReceived { from: src, advert })
                        }
                        Err(reason) => *self.drops.entry(reason.label()).or_default() += 1,
                    }
                }
                Item::VipExpiry { node } => {
                    if !self.nodes[node].alive && self.nodes[node].holds_vip {
                        self.nodes[node].holds_vip = false;
                        self.vip_log.push((self.now, node, false));
                    }
                }
            }
        }
        self.now = until;
    }

    fn push(&mut self, at: Duration, item: Item) {
        self.seq += 1;
        self.queue.push(Entry {
            at,
            seq: self.seq,
            item,
        });
    }

    fn dispatch(&mut self, i: usize, event: Event) {
        if !self.nodes[i].alive {
            return;
        }
        let now = self.t0 + self.now;
        let actions = self.nodes[i].router.handle(event, now);
        for action in actions {
            self.apply(i, action);
        }
    }

    fn apply(&mut self, i: usize, action: Action) {
        match action {
            Action::SendAdvert { priority } => {
                let node = &self.nodes[i];
                let bytes = node
                    .router
                    .advertisement(priority)
                    .encode(node.ip, VRRP_MULTICAST_V4);
                let group = node.group;
                for j in 0..self.nodes.len() {
                    if j == i || !self.nodes[j].alive || self.nodes[j].group != group {
                        continue;
                    }
                    self.copies += 1;
                    let streak = self.streaks.entry((j, i)).or_default();
                    if self.rng.unit() < self.loss {
                        self.lost += 1;
                        *streak += 1;
                        self.max_loss_streak = self.max_loss_streak.max(*streak);
                    } else {
                        *streak = 0;
                        let at = self.now + self.latency;
                        self.push(
                            at,
                            Item::Deliver {
                                to: j,
                                from: i,
                                bytes: bytes.clone(),
                            },
                        );
                    }
                }
            }
            Action::AddVip => {
                assert!(!self.nodes[i].holds_vip, "node {i}: AddVip twice");
                self.nodes[i].holds_vip = true;
                self.nodes[i].renewed = self.now;
                self.vip_log.push((self.now, i, true));
            }
            Action::RefreshVip => {
                assert!(
                    self.nodes[i].holds_vip,
                    "node {i}: RefreshVip without the VIP"
                );
                self.nodes[i].renewed = self.now;
                self.refreshes += 1;
            }
            Action::RemoveVip => {
                self.nodes[i].holds_vip = false;
                self.vip_log.push((self.now, i, false));
            }
            Action::SendGratuitousArp { count } => self.garps += u64::from(count),
            Action::StartSyncMaster => {
                assert!(self.nodes[i].holds_vip, "node {i}: sync master without VIP");
                self.nodes[i].sync = Some(SyncRole::Master);
            }
            Action::StartSyncBackup => {
                assert!(
                    !self.nodes[i].holds_vip,
                    "node {i}: sync backup while holding VIP"
                );
                self.nodes[i].sync = Some(SyncRole::Backup);
            }
            Action::StopSync => {
                assert!(
                    !self.nodes[i].holds_vip,
                    "node {i}: sync stopped while holding VIP"
                );
                self.nodes[i].sync = None;
            }
            Action::SetTimer { kind, at } => {
                let offset = at - self.t0;
                assert!(
                    offset >= self.now,
                    "node {i}: timer {kind:?} set in the past"
                );
                self.nodes[i].timers.insert(kind, at);
                self.push(offset, Item::Timer { node: i, kind, at });
            }
            Action::CancelTimer { kind } => {
                self.nodes[i].timers.remove(&kind);
            }
            Action::StateChanged { from, to } => {
                assert_eq!(self.nodes[i].router.state(), to);
                self.transitions.push(Transition {
                    at: self.now,
                    node: i,
                    from,
                    to,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const LATENCY: Duration = Duration::from_millis(1);

    fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 10 + i as u8)
    }

    fn cfg(i: usize, priority: u8, adver_ms: u64) -> RouterConfig {
        let mut c = RouterConfig::new(51, ip(i), vec![VIP]);
        c.priority = Priority::new(priority).unwrap();
        c.adver_int = AdverInterval::from_millis(adver_ms).unwrap();
        c
    }

    fn sim(seed: u64, priorities: &[u8], loss: f64) -> Sim {
        let configs = priorities
            .iter()
            .enumerate()
            .map(|(i, p)| cfg(i, *p, 100))
            .collect();
        Sim::new(seed, configs, loss, LATENCY)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Master_Down_Interval at 100 ms for a priority, as the RFC formula gives it.
    fn mdi(priority: u32, missed: u32) -> Duration {
        ms(100) * missed + ms(100) * (256 - priority) / 256
    }

    #[test]
    fn startup_elects_the_highest_priority_once() {
        let mut s = sim(1, &[200, 150, 100], 0.0);
        s.start_all();
        s.run_until(secs(10));
        let t = s.transitions_since(Duration::ZERO);
        let to_master: Vec<_> = t.iter().filter(|t| t.to == State::Master).collect();
        assert_eq!(to_master.len(), 1);
        // Everyone starts with its own interval: 3 × 100 ms + 56/256 × 100 ms = 321.875 ms.
        assert_eq!(to_master[0].node, 0);
        assert_eq!(to_master[0].at, mdi(200, 3));
        assert_eq!(t.len(), 4, "three Init->Backup, one Backup->Master: {t:?}");
        assert_eq!(s.masters(), vec![0]);
        assert_eq!(s.router(1).observed_master(), Some(ip(0)));
    }

    /// The flapping claim. Three routers, 100 ms, every advertisement copy lost with probability
    /// 1 %, one hour of virtual time (36,000 intervals): zero state changes after the election.
    ///
    /// Why it holds: a Backup takes over only after `missed_adverts` = 3 consecutive losses
    /// (Master_Down_Interval 341 ms / 361 ms at priorities 150 / 100, the 4th advertisement
    /// arrives at 401 ms), so with independent loss the rate is about p³ = 1e-6 per interval
    /// per Backup: about 0.07 expected in this hour for both Backups together, one per ~28 hours
    /// per Backup. The calibration test below checks the simulator against that formula where
    /// the expected count is large, so this zero is not an artefact of a simulator that loses
    /// nothing.
    #[test]
    fn no_spurious_takeover_with_1pct_loss_over_36000_intervals() {
        let mut s = sim(0x00c0_ffee, &[200, 150, 100], 0.01);
        s.start_all();
        s.run_until(secs(2));
        assert_eq!(s.masters(), vec![0]);
        let settled = s.now();
        let end = settled + ms(100) * 36_000;
        s.run_until(end);
        let spurious = s.transitions_since(settled);
        let loss_rate = s.lost as f64 / s.copies as f64;
        let (gap, overlap) = s.vip_gap_and_overlap(settled, end);
        println!(
            "1% loss, 36000 intervals, 3 routers: {} copies, {} lost ({:.3}%), longest loss \
             streak {}, spurious transitions {}, VIP gap {gap:?}, overlap {overlap:?}",
            s.copies,
            s.lost,
            loss_rate * 100.0,
            s.max_loss_streak,
            spurious.len()
        );
        assert!(spurious.is_empty(), "spurious transitions: {spurious:?}");
        assert_eq!(s.masters(), vec![0]);
        assert!((0.008..0.012).contains(&loss_rate), "loss {loss_rate}");
        // Consecutive losses did happen, and were ridden out.
        assert!(s.max_loss_streak >= 2);
        assert_eq!((gap, overlap), (Duration::ZERO, Duration::ZERO));
        assert_eq!(s.drops.get("bad_checksum"), None);
    }

    /// The knob for longer runs: with `missed_adverts` = 4 a spurious takeover at 1 % loss
    /// needs four losses in a row (about 1e-8 per interval per Backup, one per ~3 years at
    /// 100 ms), for 100 ms more detection time. Five hours of virtual time, zero transitions.
    #[test]
    fn four_missed_adverts_ride_out_five_hours_of_1pct_loss() {
        let configs = [200, 150, 100]
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut c = cfg(i, *p, 100);
                c.missed_adverts = 4;
                c
            })
            .collect();
        let mut s = Sim::new(0xfeed, configs, 0.01, LATENCY);
        s.start_all();
        s.run_until(secs(2));
        let settled = s.now();
        s.run_until(settled + ms(100) * 180_000);
        println!(
            "1% loss, 4 missed, 180000 intervals: {} lost of {}, longest streak {}, spurious {}",
            s.lost,
            s.copies,
            s.max_loss_streak,
            s.transitions_since(settled).len()
        );
        assert_eq!(s.transitions_since(settled), vec![]);
        assert_eq!(s.masters(), vec![0]);
    }

    /// Gives the zero above its teeth: where the expected number of spurious takeovers is
    /// large, the simulator produces what the formula N · (1 − p) · p^k predicts (k = missed
    /// advertisements), and raising `missed_adverts` removes them.
    #[test]
    fn calibration_spurious_takeovers_follow_p_to_the_missed_adverts() {
        let run = |loss: f64, missed: u8, intervals: u32| -> (usize, f64) {
            let mut a = cfg(0, 200, 100);
            let mut b = cfg(1, 100, 100);
            a.missed_adverts = missed;
            b.missed_adverts = missed;
            let mut s = Sim::new(7, vec![a, b], loss, LATENCY);
            s.start_all();
            s.run_until(secs(2));
            let settled = s.now();
            s.run_until(settled + ms(100) * intervals);
            let takeovers = s
                .transitions_since(settled)
                .iter()
                .filter(|t| t.node == 1 && t.to == State::Master)
                .count();
            assert_eq!(
                s.masters(),
                vec![0],
                "the highest priority always ends as Master"
            );
            let expected = f64::from(intervals) * (1.0 - loss) * loss.powi(i32::from(missed));
            (takeovers, expected)
        };
        let (n, e) = run(0.10, 3, 100_000);
        println!("10% loss, 3 missed, 100000 intervals: {n} takeovers, formula {e:.1}");
        assert!((60..=125).contains(&n), "{n} vs {e}");
        let (n, e) = run(0.01, 1, 100_000);
        println!("1% loss, 1 missed, 100000 intervals: {n} takeovers, formula {e:.1}");
        assert!((850..=1150).contains(&n), "{n} vs {e}");
        let (n, e) = run(0.10, 5, 100_000);
        println!("10% loss, 5 missed, 100000 intervals: {n} takeovers, formula {e:.1}");
        assert!(n <= 6, "{n} vs {e}");
    }

    /// A crashed Master is replaced by the best Backup within Master_Down_Interval of the last
    /// advertisement it heard: takeover time after the crash lies in (MDI − interval, MDI] (+
    /// latency), whatever the crash's phase. The other Backup never moves.
    #[test]
    fn master_crash_is_detected_within_master_down_interval() {
        let bound = mdi(150, 3) + LATENCY; // 341.40625 ms + 1 ms
        let mut phase = XorShift(99);
        let mut times = Vec::new();
        for trial in 0..100 {
            let mut s = sim(trial + 1, &[200, 150, 100], 0.0);
            s.start_all();
            let crash = secs(5) + Duration::from_micros(phase.next() % 100_000);
            s.run_until(crash);
            s.crash(0);
            s.run_until(crash + secs(3));
            let took = s.entered(1, State::Master, crash).unwrap() - crash;
            assert!(
                took <= bound && took > bound - ms(100),
                "trial {trial}: {took:?}"
            );
            assert_eq!(s.entered(2, State::Master, Duration::ZERO), None);
            assert_eq!(s.masters(), vec![1]);
            let (gap, overlap) = s.vip_gap_and_overlap(crash, crash + secs(3));
            assert_eq!(gap, took);
            assert_eq!(overlap, Duration::ZERO);
            times.push(took);
        }
        let min = times.iter().min().unwrap();
        let max = times.iter().max().unwrap();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "master crash, 100 phases: takeover min {min:?} mean {mean:?} max {max:?} \
             (Master_Down_Interval {:?} + latency {LATENCY:?})",
            mdi(150, 3)
        );
    }

    /// With loss the crash is still detected no later than MDI after the last advertisement
    /// actually heard, so never later than the loss-free bound; and the election still settles
    /// on the best live router.
    #[test]
    fn master_crash_under_loss_is_never_detected_late() {
        let bound = mdi(150, 3) + LATENCY;
        let mut phase = XorShift(12345);
        for trial in 0..200 {
            let mut s = sim(trial + 1000, &[200, 150, 100], 0.01);
            s.start_all();
            let crash = secs(5) + Duration::from_micros(phase.next() % 100_000);
            s.run_until(crash);
            s.crash(0);
            s.run_until(crash + secs(3));
            let first = s
                .transitions_since(crash)
                .iter()
                .find(|t| t.to == State::Master)
                .map(|t| t.at - crash)
                .unwrap();
            assert!(first <= bound, "trial {trial}: {first:?}");
            assert_eq!(s.masters(), vec![1]);
        }
    }

    /// A daemon killed while Master, its node and kernel alive (issue 13): the renewals stop,
    /// the Backup takes over after its Master_Down_Interval, and the kernel drops the old
    /// Master's VIP a lifetime after its last renewal. Whatever the crash's phase against the
    /// renewals: never a moment without a holder (the old node keeps answering until the new
    /// one does), two holders for less than the lifetime, and the Master renewed its VIP every
    /// quarter lifetime while it lived.
    #[test]
    fn a_killed_daemons_vip_expires_after_the_takeover() {
        let mut phase = XorShift(4242);
        for trial in 0..50 {
            let mut s = sim(trial + 500, &[200, 150, 100], 0.0);
            let lifetime = s.router(0).vip_lifetime();
            assert_eq!(lifetime.secs(), 2, "100 ms adverts");
            s.start_all();
            let crash = secs(5) + Duration::from_micros(phase.next() % 500_000);
            s.run_until(crash);
            let became = s.entered(0, State::Master, Duration::ZERO).unwrap();
            // Renewed every 500 ms since it became Master.
            let want = ((crash - became).as_millis() / lifetime.refresh().as_millis()) as u64;
            assert_eq!(s.refreshes, want, "trial {trial}");
            s.crash_daemon(0);
            s.run_until(crash + secs(5));
            let took = s.entered(1, State::Master, crash).unwrap() - crash;
            let (gap, overlap) = s.vip_gap_and_overlap(crash, crash + secs(5));
            assert_eq!(
                gap,
                Duration::ZERO,
                "trial {trial}: a moment without a holder"
            );
            assert!(
                overlap + took <= lifetime.duration()
                    && overlap + took >= lifetime.earliest_after_death(),
                "trial {trial}: takeover {took:?}, two holders for {overlap:?}"
            );
            assert_eq!(s.masters(), vec![1]);
        }
    }

    /// Graceful shutdown: the Master sends priority 0 and the best Backup takes over after its
    /// Skew_Time (41.40625 ms at priority 150, 100 ms) instead of Master_Down_Interval. The VIP
    /// is off the old Master before the new one adds it: a gap, never two owners.
    #[test]
    fn graceful_shutdown_takeover_takes_skew_time() {
        let mut s = sim(3, &[200, 150, 100], 0.0);
        s.start_all();
        let t = secs(5) + ms(50);
        s.run_until(t);
        s.shutdown(0);
        s.run_until(t + secs(2));
        let took = s.entered(1, State::Master, t).unwrap() - t;
        let skew = ms(100) * (256 - 150) / 256;
        assert_eq!(skew, Duration::from_nanos(41_406_250));
        assert_eq!(took, skew + LATENCY);
        assert_eq!(s.entered(2, State::Master, Duration::ZERO), None);
        let (gap, overlap) = s.vip_gap_and_overlap(t, t + secs(2));
        assert_eq!((gap, overlap), (took, Duration::ZERO));
        println!(
            "graceful shutdown: takeover {took:?} = Skew_Time {skew:?} + latency; VIP gap \
             {gap:?}, overlap {overlap:?}; crash would take up to {:?}",
            mdi(150, 3) + LATENCY
        );
    }

    /// After a partition heals, the split brain (two Masters) ends within one advertisement
    /// interval: whichever Master speaks first, the other resolves it (RFC 9568 §6.4.3: the
    /// lower steps down, the higher answers a lower advertisement at once).
    #[test]
    fn split_brain_ends_within_one_interval_after_heal() {
        let bound = ms(100) + LATENCY * 2;
        let mut phase = XorShift(4242);
        let mut worst = Duration::ZERO;
        for (trial, groups) in [[0u8, 1, 1], [0, 1, 2]].iter().cycle().take(60).enumerate() {
            let mut s = sim(trial as u64 + 50, &[200, 150, 100], 0.0);
            s.start_all();
            s.run_until(secs(3));
            s.partition(groups);
            s.run_until(secs(8));
            let split = s.masters();
            assert!(split.len() >= 2, "partition {groups:?}: masters {split:?}");
            let heal = secs(8) + Duration::from_micros(phase.next() % 100_000);
            s.run_until(heal);
            s.heal();
            // Exactly one Master, the best, one interval (plus a round trip) after the heal...
            s.run_until(heal + bound);
            assert_eq!(
                s.masters(),
                vec![0],
                "trial {trial}: one interval after heal"
            );
            // ...and it stays so.
            s.run_until(heal + secs(2));
            assert_eq!(s.masters(), vec![0]);
            let ended = split
                .iter()
                .filter(|&&n| n != 0)
                .map(|&n| s.entered(n, State::Backup, heal).unwrap() - heal)
                .max()
                .unwrap();
            assert!(
                ended <= bound,
                "trial {trial}: split brain lasted {ended:?}"
            );
            worst = worst.max(ended);
            // Nobody but the losers moved after the heal.
            for t in s.transitions_since(heal) {
                assert!(split.contains(&t.node) && t.node != 0 && t.to == State::Backup);
            }
        }
        println!("split brain after heal, 60 heals (2- and 3-way): ended within {worst:?}");
    }

    #[test]
    fn equal_priorities_resolve_to_the_higher_address() {
        let mut s = sim(5, &[100, 100], 0.0);
        s.start_all();
        s.run_until(secs(2));
        // Both fire at the same instant, both become Master, then .11 wins on address.
        assert_eq!(s.masters(), vec![1]);
        let loser = s.entered(0, State::Backup, ms(1)).unwrap();
        assert_eq!(loser, mdi(100, 3) + LATENCY);
    }

    #[test]
    fn a_higher_priority_router_that_joins_preempts_after_master_down_interval() {
        let mut s = sim(6, &[200, 150, 100], 0.0);
        s.start(1);
        s.start(2);
        s.run_until(secs(5));
        assert_eq!(s.masters(), vec![1]);
        s.start(0);
        s.run_until(secs(8));
        assert_eq!(s.masters(), vec![0]);
        let took = s.entered(0, State::Master, secs(5)).unwrap() - secs(5);
        assert_eq!(took, mdi(200, 3));
        // The handover window: the old Master drops the VIP one latency after the new one
        // added it (preemption is the one case where VRRP overlaps owners).
        let (_, overlap) = s.vip_gap_and_overlap(secs(5), secs(8));
        assert_eq!(overlap, LATENCY);
    }

    #[test]
    fn without_preempt_a_higher_priority_router_stays_backup() {
        let mut configs: Vec<_> = [200, 150]
            .iter()
            .enumerate()
            .map(|(i, p)| cfg(i, *p, 100))
            .collect();
        configs[0].preempt = false;
        let mut s = Sim::new(8, configs, 0.0, LATENCY);
        s.start(1);
        s.run_until(secs(5));
        s.start(0);
        s.run_until(secs(60));
        assert_eq!(s.masters(), vec![1]);
    }

    #[test]
    fn preempt_delay_postpones_preemption() {
        let mut configs: Vec<_> = [200, 150]
            .iter()
            .enumerate()
            .map(|(i, p)| cfg(i, *p, 100))
            .collect();
        configs[0].preempt_delay = secs(2);
        let mut s = Sim::new(9, configs, 0.0, LATENCY);
        s.start(1);
        s.run_until(secs(5));
        s.start(0);
        s.run_until(secs(10));
        let took = s.entered(0, State::Master, secs(5)).unwrap() - secs(5);
        assert!(
            took > secs(2) && took <= secs(2) + ms(100) + mdi(200, 3),
            "{took:?}"
        );
        assert_eq!(s.masters(), vec![0]);
    }

    /// Health-driven priority drop (e.g. every real server down): the Master advertises its
    /// new priority at once, the best Backup preempts within its Master_Down_Interval.
    #[test]
    fn a_lowered_master_is_preempted() {
        let mut s = sim(10, &[200, 150, 100], 0.0);
        s.start_all();
        s.run_until(secs(5));
        s.set_priority(0, 50);
        s.run_until(secs(7));
        assert_eq!(s.masters(), vec![1]);
        let took = s.entered(1, State::Master, secs(5)).unwrap() - secs(5);
        assert!(took <= mdi(150, 3) + LATENCY, "{took:?}");
        assert_eq!(s.entered(2, State::Master, Duration::ZERO), None);
    }

    /// VRRPv3 Backups learn Master_Adver_Interval from the advertisement (RFC 9568 §6.4.2):
    /// a Backup configured for 100 ms under a Master that advertises every second waits
    /// 3 × 1 s + skew, so it neither flaps between the Master's advertisements nor misses a
    /// real death by more than that.
    #[test]
    fn backup_learns_the_masters_interval() {
        let configs = vec![cfg(0, 200, 1000), cfg(1, 100, 100)];
        let mut s = Sim::new(12, configs, 0.0, LATENCY);
        s.start_all();
        s.run_until(secs(5));
        assert_eq!(s.masters(), vec![0]);
        assert_eq!(s.router(1).master_adver_int(), secs(1));
        let settled = s.now();
        s.run_until(secs(120));
        assert_eq!(s.transitions_since(settled), vec![]);
        let crash = secs(120);
        s.crash(0);
        s.run_until(secs(130));
        let took = s.entered(1, State::Master, crash).unwrap() - crash;
        let mdi_learned = secs(3) + secs(1) * 156 / 256;
        assert!(
            took <= mdi_learned + LATENCY && took > mdi_learned - secs(1),
            "{took:?}"
        );
    }

    /// Five routers with 1 % loss for ten minutes: one Master, the highest, and four Backups
    /// that never move.
    #[test]
    fn five_routers_one_master() {
        let mut s = sim(11, &[90, 250, 10, 180, 120], 0.01);
        s.start_all();
        s.run_until(secs(2));
        assert_eq!(s.masters(), vec![1]);
        let settled = s.now();
        s.run_until(settled + secs(600));
        assert_eq!(s.transitions_since(settled), vec![]);
        for i in [0, 2, 3, 4] {
            assert_eq!(s.router(i).state(), State::Backup);
        }
    }
}
