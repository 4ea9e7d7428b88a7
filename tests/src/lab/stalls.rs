//! When the lab VM's vCPUs did not run: the fold of `lvstun-lab-stalls`' log (one SCHED_FIFO 99
//! thread per vCPU reporting its late wakeups). Pure: text in, typed [`Stalls`] out, so the pod
//! lab's CPU-hog check can tell a Backup claim caused by starvation inside the guest (a failure
//! of lvstun's realtime VRRP thread) from one caused by the host not running the guest at all
//! (the emulated VM shares the host's cores with other work).
//!
//! The log's lines: `watching cpu=N` once per vCPU, `stall cpu=N start_us=S end_us=E ms=M`
//! (µs since the epoch on the guest's clock, the clock [`super::vipwatch`] uses) per late
//! wakeup, and `done cpus=N wakeups=W stalls=K longest_ms=L` when the witness ended by itself.

/// One span in which one vCPU did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// The vCPU.
    pub cpu: u32,
    /// When its witness went to sleep (µs since the epoch).
    pub start_us: i64,
    /// When it woke, late (µs since the epoch).
    pub end_us: i64,
}

impl Stall {
    /// How long the vCPU did not run, in ms.
    pub fn ms(&self) -> i64 {
        (self.end_us - self.start_us) / 1000
    }
}

/// What the witness saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stalls {
    /// The vCPUs it watched (pinned and raised); fewer than the guest has means a blind spot.
    pub watched: Vec<u32>,
    /// Every late wakeup, in the order logged.
    pub stalls: Vec<Stall>,
    /// The vCPU count of its `done` line, when it ended by itself.
    pub done_cpus: Option<u32>,
}

fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// Parses the witness's log; lines it does not know are skipped.
pub fn parse(log: &str) -> Stalls {
    let mut out = Stalls::default();
    for line in log.lines() {
        match line.split_whitespace().next() {
            Some("watching") => out.watched.extend(field::<u32>(line, "cpu")),
            Some("stall") => {
                if let (Some(cpu), Some(start_us), Some(end_us)) = (
                    field(line, "cpu"),
                    field(line, "start_us"),
                    field(line, "end_us"),
                ) {
                    out.stalls.push(Stall {
                        cpu,
                        start_us,
                        end_us,
                    });
                }
            }
            Some("done") => out.done_cpus = field(line, "cpus"),
            _ => {}
        }
    }
    out
}

impl Stalls {
    /// The longest stall of at least `min_ms` that overlaps the `before_ms` up to `at_us`: what
    /// explains a Backup's claim at `at_us` by the guest not running (a Master_Down_Interval
    /// before a claim is when the Master's adverts went missing).
    pub fn explaining(&self, at_us: i64, before_ms: i64, min_ms: i64) -> Option<Stall> {
        let from = at_us - before_ms * 1000;
        self.stalls
            .iter()
            .filter(|s| s.ms() >= min_ms && s.start_us <= at_us && s.end_us >= from)
            .max_by_key(|s| s.ms())
            .copied()
    }

    /// The longest stall logged, in ms (0 for none).
    pub fn longest_ms(&self) -> i64 {
        self.stalls.iter().map(Stall::ms).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "watching cpu=0\nwatching cpu=1\n\
        stall cpu=1 start_us=1000000 end_us=1060000 ms=60\n\
        stall cpu=0 start_us=2000000 end_us=2300000 ms=300\n\
        garbage line\n\
        done cpus=2 wakeups=4000 stalls=2 longest_ms=300\n";

    #[test]
    fn the_log_folds_into_watched_cpus_stalls_and_the_end() {
        let s = parse(LOG);
        assert_eq!(s.watched, [0, 1]);
        assert_eq!(s.done_cpus, Some(2));
        assert_eq!(s.stalls.len(), 2);
        assert_eq!(s.stalls[1].ms(), 300);
        assert_eq!(s.longest_ms(), 300);
    }

    #[test]
    fn a_witness_stopped_early_keeps_what_it_saw() {
        let s = parse("watching cpu=0\nstall cpu=0 start_us=5 end_us=200005 ms=200\n");
        assert_eq!(s.done_cpus, None);
        assert_eq!(s.longest_ms(), 200);
    }

    #[test]
    fn a_claim_during_or_just_after_a_long_stall_is_explained() {
        let s = parse(LOG);
        // During the 300 ms stall, and 400 ms after its end.
        assert_eq!(s.explaining(2_200_000, 400, 100).map(|x| x.cpu), Some(0));
        assert_eq!(s.explaining(2_700_000, 400, 100).map(|x| x.cpu), Some(0));
    }

    #[test]
    fn a_claim_far_from_any_long_stall_is_not_explained() {
        let s = parse(LOG);
        // After the window; before the stall began; near only the short 60 ms one.
        assert_eq!(s.explaining(2_800_000, 400, 100), None);
        assert_eq!(s.explaining(1_999_999, 400, 100), None);
        assert_eq!(s.explaining(1_050_000, 400, 100), None);
    }
}
