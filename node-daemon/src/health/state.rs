//! The rise/fall state of one health-check target. Pure: no I/O, no clock.

/// How many consecutive results flip a target's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Thresholds {
    /// Consecutive failures that make a healthy target unhealthy (≥ 1).
    pub fall: u32,
    /// Consecutive successes that make an unhealthy target healthy (≥ 1).
    pub rise: u32,
}

/// What the checker knows about one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetState {
    healthy: bool,
    consecutive_ok: u32,
    consecutive_fail: u32,
    last_error: Option<String>,
}

impl TargetState {
    /// A target's starting verdict. The balancer passes `true` for a destination the kernel
    /// already forwards to (weight > 0), so a daemon restart does not take every server out of
    /// rotation until its first check; a new server starts unhealthy and must pass `rise` checks.
    pub fn new(initially_healthy: bool) -> Self {
        TargetState {
            healthy: initially_healthy,
            consecutive_ok: 0,
            consecutive_fail: 0,
            last_error: None,
        }
    }

    /// Whether the target counts as healthy now.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Consecutive failed checks so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_fail
    }

    /// Why the last check failed, if it did.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Fold one check result in. Returns `Some(new_verdict)` when the verdict flips.
    pub fn observe(&mut self, result: Result<(), String>, th: Thresholds) -> Option<bool> {
        match result {
            Ok(()) => {
                self.consecutive_ok = self.consecutive_ok.saturating_add(1);
                self.consecutive_fail = 0;
                self.last_error = None;
                if !self.healthy && self.consecutive_ok >= th.rise.max(1) {
                    self.healthy = true;
                    return Some(true);
                }
            }
            Err(e) => {
                self.consecutive_fail = self.consecutive_fail.saturating_add(1);
                self.consecutive_ok = 0;
                self.last_error = Some(e);
                if self.healthy && self.consecutive_fail >= th.fall.max(1) {
                    self.healthy = false;
                    return Some(false);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TH: Thresholds = Thresholds { fall: 2, rise: 2 };

    fn fail() -> Result<(), String> {
        Err("connection refused".into())
    }

    #[test]
    fn healthy_target_falls_after_threshold_failures() {
        let mut s = TargetState::new(true);
        assert_eq!(s.observe(fail(), TH), None);
        assert!(s.healthy());
        assert_eq!(s.observe(fail(), TH), Some(false));
        assert!(!s.healthy());
        assert_eq!(s.consecutive_failures(), 2);
        assert_eq!(s.last_error(), Some("connection refused"));
        assert_eq!(s.observe(fail(), TH), None, "no repeated transition");
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut s = TargetState::new(true);
        s.observe(fail(), TH);
        s.observe(Ok(()), TH);
        assert_eq!(s.observe(fail(), TH), None);
        assert!(s.healthy());
    }

    #[test]
    fn new_target_rises_after_threshold_successes() {
        let mut s = TargetState::new(false);
        assert_eq!(s.observe(Ok(()), TH), None);
        assert_eq!(s.observe(Ok(()), TH), Some(true));
        assert_eq!(s.last_error(), None);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let th = Thresholds { fall: 0, rise: 0 };
        let mut s = TargetState::new(true);
        assert_eq!(s.observe(fail(), th), Some(false));
        assert_eq!(s.observe(Ok(()), th), Some(true));
    }
}
