//! How long a VIP may outlive the process that claimed it, and how often a Master renews it.
//! Pure: numbers from the router's configuration, no clock and no I/O.
//!
//! A Master adds its VIPs with a finite kernel lifetime (`IFA_CACHEINFO`, valid_lft =
//! preferred_lft = [`VipLifetime::secs`]) and renews it (RTM_NEWADDR with `NLM_F_REPLACE`, the
//! same address, a fresh lifetime) every [`VipLifetime::refresh`]. When the process dies
//! (SIGKILL, OOM, a panic) the renewals stop and the kernel deletes the address by itself, so
//! a crashed daemon never leaves a second holder on the segment until its restart (issue 13;
//! ADR 0002 "A VIP dies with its owner").
//!
//! The numbers, and why (`MDI` = the longest Master_Down_Interval a Backup can have for this
//! router: `(missed_adverts + 1) × Advertisement_Interval`, Skew_Time being below one interval):
//! - lifetime `L = max(2 s, 2 × MDI)`, rounded up to whole seconds (the kernel counts address
//!   lifetimes in seconds). After a crash the kernel there still forwards through IPVS, so the
//!   VIP should leave no sooner than a Backup takes it over: even when the last renewal came a
//!   whole refresh period before the crash, `L − L/4 = 1.5 × MDI > MDI`. The 2 s floor keeps a
//!   scheduling stall of a second on a busy node from dropping a live Master's VIP.
//! - refresh every `L / 4`: three renewals in a row may fail (or be late) before the address
//!   expires under a live Master. A failed renewal is not retried early; the next one is due
//!   a quarter lifetime later, well within the lifetime.
//! - preferred_lft = valid_lft: a preferred lifetime of 0 (or below valid) would mark the
//!   address deprecated (`IFA_F_DEPRECATED`), which source address selection avoids; equal
//!   lifetimes mean the kernel deletes the address before it would ever deprecate it
//!   (`check_lifetime` tests the valid lifetime first).
//!
//! The kernel's side (net/ipv4/devinet.c): every add or replace queues the `check_lifetime`
//! work at once; the work deletes addresses whose age (whole seconds, counted 20 ms early:
//! `ADDRCONF_TIMER_FUZZ_MINUS` = HZ/50) has reached valid_lft, then reschedules itself for the
//! earliest next expiry (at most `ADDR_CHECK_FREQUENCY`, 120 s, ahead), rounded up to a whole
//! second when that adds less than `ADDRCONF_TIMER_FUZZ` (HZ/4), and never sooner than
//! `ADDRCONF_TIMER_FUZZ_MAX` (1 s) after its own run. The delayed work's timer may fire up
//! to an eighth of its delay late (the timer wheel's granularity). So the address goes between
//! `L − 20 ms` and [`VipLifetime::bound`] = `L + 1 s + L/8` after the last renewal.

use std::time::Duration;

/// The shortest lifetime lvstun gives a VIP, in seconds.
pub const MIN_SECS: u32 = 2;
/// What [`VipLifetime::quiet_after`] leaves for a peer to add the VIP after it took over.
pub const QUIET_MARGIN: Duration = Duration::from_millis(250);
/// Renewals per lifetime.
const REFRESHES_PER_LIFETIME: u32 = 4;
/// How long after its last renewal the kernel keeps an address at most, beyond the lifetime:
/// `ADDRCONF_TIMER_FUZZ_MAX`, the least gap between two runs of `check_lifetime`.
const KERNEL_CHECK_SLACK: Duration = Duration::from_secs(1);

/// A VIP's kernel lifetime (valid and preferred alike) and its renewal period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipLifetime {
    secs: u32,
}

impl VipLifetime {
    /// The lifetime for a router advertising every `adver_int` (the state machine's
    /// `AdverInterval`, as a duration) whose Backups wait `missed_adverts` advertisements (see
    /// the module comment for the formula).
    pub fn for_router(adver_int: Duration, missed_adverts: u8) -> Self {
        let mdi = adver_int.saturating_mul(u32::from(missed_adverts) + 1);
        let wanted = mdi.saturating_mul(2);
        let mut secs = wanted.as_secs();
        if wanted.subsec_nanos() > 0 {
            secs += 1;
        }
        let secs = u32::try_from(secs).unwrap_or(u32::MAX).max(MIN_SECS);
        Self { secs }
    }

    /// Valid and preferred lifetime, in the kernel's whole seconds.
    pub fn secs(self) -> u32 {
        self.secs
    }

    /// The lifetime as a duration.
    pub fn duration(self) -> Duration {
        Duration::from_secs(u64::from(self.secs))
    }

    /// How often a Master renews its VIPs: a quarter of the lifetime.
    pub fn refresh(self) -> Duration {
        self.duration() / REFRESHES_PER_LIFETIME
    }

    /// The latest the kernel removes a VIP after its last renewal (so after its owner died):
    /// the lifetime, plus the second `check_lifetime` may wait between runs, plus the timer
    /// wheel's eighth.
    pub fn bound(self) -> Duration {
        self.duration() + KERNEL_CHECK_SLACK + self.duration() / 8
    }

    /// How long a Master's kernel calls may be stuck (the oldest unfinished one, a renewal
    /// waiting for `rtnl_lock`, say) before it stops advertising, so that a peer takes the
    /// VIP over before the lease runs out under it (`detached`, ADR 0002 "Three threads"):
    /// the earliest the lease can end after the last renewal that went through, less the
    /// Backup's longest Master_Down_Interval `mdi`, less [`QUIET_MARGIN`] for the peer's own
    /// add: 830 ms at 100 ms adverts, 1.73 s at 1 s, and at least 200 ms for every valid
    /// setting (the test proves it: the least is 230 ms, where Master_Down_Interval is 1 s
    /// and the lease its 2 s floor), far above a renewal's normal few milliseconds.
    pub fn quiet_after(self, mdi: Duration) -> Duration {
        self.earliest_after_death()
            .saturating_sub(mdi)
            .saturating_sub(QUIET_MARGIN)
    }

    /// The earliest a VIP can go after its owner died, when every renewal until then
    /// succeeded: the last one came at most one refresh period before, and the kernel counts
    /// ages 20 ms early.
    pub fn earliest_after_death(self) -> Duration {
        self.duration()
            .saturating_sub(self.refresh())
            .saturating_sub(Duration::from_millis(20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::AdverInterval;

    fn lifetime(ms: u64, missed: u8) -> VipLifetime {
        VipLifetime::for_router(AdverInterval::from_millis(ms).unwrap().duration(), missed)
    }

    #[test]
    fn fast_adverts_get_the_two_second_floor() {
        // 100 ms, 3 missed: MDI at most 400 ms, twice that is 0.8 s: the floor wins.
        let l = lifetime(100, 3);
        assert_eq!(l.secs(), 2);
        assert_eq!(l.refresh(), Duration::from_millis(500));
        assert_eq!(l.bound(), Duration::from_millis(3_250));
        assert_eq!(l.earliest_after_death(), Duration::from_millis(1_480));
        assert_eq!(lifetime(10, 1).secs(), MIN_SECS, "the shortest interval");
    }

    #[test]
    fn slower_adverts_round_up_to_whole_seconds() {
        // 300 ms × 4 × 2 = 2.4 s -> 3 s.
        assert_eq!(lifetime(300, 3).secs(), 3);
        // The default 1 s, 3 missed: 8 s, renewed every 2 s.
        let l = lifetime(1_000, 3);
        assert_eq!(l.secs(), 8);
        assert_eq!(l.refresh(), Duration::from_secs(2));
        assert_eq!(l.bound(), Duration::from_secs(10));
        // More missed advertisements: a longer Master_Down_Interval, a longer lifetime.
        assert_eq!(lifetime(1_000, 10).secs(), 22);
        // The longest interval the wire allows (40.95 s) and 255 missed: 20 966.4 s, rounded up.
        assert_eq!(lifetime(40_950, 255).secs(), 20_967);
    }

    #[test]
    fn the_vip_never_leaves_before_a_backup_can_take_over() {
        // For every interval and factor: gone no sooner than the longest Master_Down_Interval
        // (so a dead daemon's node keeps forwarding until the Backup holds the VIP), and
        // renewed at least three times per lifetime.
        for cs in [1u16, 2, 5, 10, 20, 33, 50, 100, 250, 1_000, 4_095] {
            for missed in [1u8, 2, 3, 4, 10] {
                let adv = AdverInterval::from_centis(cs).unwrap();
                let l = VipLifetime::for_router(adv.duration(), missed);
                let mdi = adv.duration() * (u32::from(missed) + 1);
                assert!(
                    l.earliest_after_death() >= mdi,
                    "{cs} cs × {missed}: {l:?} earliest {:?} < MDI {mdi:?}",
                    l.earliest_after_death()
                );
                assert!(l.refresh() * 3 < l.duration(), "{l:?}");
                assert!(l.bound() > l.duration());
            }
        }
    }

    /// A Master whose calls are stuck goes quiet early enough that a Backup takes over before
    /// the lease can end, and never so early that a renewal's normal latency would trip it.
    #[test]
    fn quiet_after_leaves_the_takeover_time_before_the_lease_ends() {
        let at = |cs: u16| {
            let adv = AdverInterval::from_centis(cs).unwrap().duration();
            VipLifetime::for_router(adv, 3).quiet_after(adv * 4)
        };
        assert_eq!(
            (at(10), at(100)),
            (Duration::from_millis(830), Duration::from_millis(1730))
        );
        for cs in [1u16, 2, 5, 10, 20, 30, 50, 100, 200, 300, 1000, 4095] {
            for missed in [1u8, 2, 3, 5, 10] {
                let adv = AdverInterval::from_centis(cs).unwrap().duration();
                let mdi = adv * (u32::from(missed) + 1);
                let l = VipLifetime::for_router(adv, missed);
                let q = l.quiet_after(mdi);
                assert!(
                    q + mdi + QUIET_MARGIN <= l.earliest_after_death(),
                    "{cs} cs x{missed}: {q:?}"
                );
                assert!(q >= Duration::from_millis(200), "{cs} cs x{missed}: {q:?}");
            }
        }
    }
}
