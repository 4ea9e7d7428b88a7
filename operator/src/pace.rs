//! When a VirtualService reconcile writes the status it folded. Its inputs (its spec, its
//! RealServers, its balancer nodes, the VirtualServices on its VIP) often change in bursts: an
//! application's VirtualService and its RealServers are created together, and the watch
//! delivers them one by one. Writing after each would write the same object several times per
//! burst (measured: 2.1 to 2.25 times per VirtualService when 1,000 of them arrive with 10
//! RealServers each), each write costing a round trip to the API server inside the reconcile.
//! So a reconcile whose inputs changed less than [`SETTLE`] ago waits for them to settle, and
//! writes once; [`MAX_HOLD`] bounds the wait, so a stream of changes cannot hide the status.
//! What the balancer daemons report (the election) is not held: it is written at once.
//!
//! Pure: the clock is passed in.

use std::time::{Duration, Instant};

/// How long an object's inputs must be quiet before a changed status is written.
pub const SETTLE: Duration = Duration::from_millis(300);
/// The longest a changed status waits after the first unwritten change of its inputs.
pub const MAX_HOLD: Duration = Duration::from_secs(2);

/// When an object's inputs changed (as the watch hooks saw them) since its status was last
/// decided: the first and the latest such change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsettled {
    /// The first change not yet written.
    pub first: Instant,
    /// The latest change.
    pub last: Instant,
}

impl Unsettled {
    /// One change at `now`.
    pub fn at(now: Instant) -> Self {
        Unsettled {
            first: now,
            last: now,
        }
    }

    /// Another change at `now`.
    pub fn touch(&mut self, now: Instant) {
        self.last = self.last.max(now);
    }

    /// When a changed status may be written.
    pub fn settles_at(&self) -> Instant {
        (self.last + SETTLE).min(self.first + MAX_HOLD)
    }
}

/// What a reconcile does with the status it folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Nothing changed: no write.
    Nothing,
    /// Write it now.
    Now,
    /// Its inputs are still changing: look again after this long, and write then.
    After(Duration),
}

/// Whether to write a folded status now (pure): `changed` says whether it differs from the one
/// last written, `unsettled` when the inputs changed since.
pub fn decide(changed: bool, unsettled: Option<Unsettled>, now: Instant) -> Write {
    if !changed {
        return Write::Nothing;
    }
    match unsettled.map(|u| u.settles_at()) {
        Some(at) if at > now => Write::After(at - now),
        _ => Write::Now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_or_not() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let u = |first: u64, last: u64| {
            Some(Unsettled {
                first: t0 + ms(first),
                last: t0 + ms(last),
            })
        };
        // (case, changed, unsettled, now in ms after t0, decision)
        let cases: [(&str, bool, Option<Unsettled>, u64, Write); 8] = [
            ("nothing changed", false, None, 0, Write::Nothing),
            (
                "nothing changed though the inputs moved",
                false,
                u(0, 100),
                100,
                Write::Nothing,
            ),
            ("changed, inputs quiet", true, None, 0, Write::Now),
            (
                "changed, inputs moved just now: wait for them to settle",
                true,
                u(0, 0),
                0,
                Write::After(SETTLE),
            ),
            (
                "changed, the latest change 100 ms ago",
                true,
                u(0, 100),
                200,
                Write::After(ms(200)),
            ),
            ("changed, settled", true, u(0, 100), 400, Write::Now),
            (
                "changes keep coming: the hold ends MAX_HOLD after the first",
                true,
                u(0, 1900),
                1950,
                Write::After(ms(50)),
            ),
            (
                "changes keep coming past MAX_HOLD: write",
                true,
                u(0, 2100),
                2100,
                Write::Now,
            ),
        ];
        for (case, changed, unsettled, now, want) in cases {
            assert_eq!(decide(changed, unsettled, t0 + ms(now)), want, "{case}");
        }
    }

    #[test]
    fn touch_keeps_the_first_change() {
        let t0 = Instant::now();
        let mut u = Unsettled::at(t0);
        u.touch(t0 + Duration::from_millis(50));
        assert_eq!(u.first, t0);
        assert_eq!(u.settles_at(), t0 + Duration::from_millis(50) + SETTLE);
    }
}
