//! The rules of one leadership term, as pure functions of instants on this process's monotonic
//! clock: when the holder renews, when it must stop acting because no renewal went through, when
//! a standby may take the lease; and the Lease records each step writes.
//!
//! The safety argument: the holder counts its term from the instant it *sent* its last renewal
//! that succeeded (the API server wrote it later). A standby counts the lease's life from the
//! instant it first *saw* that record (later still), so by its clock the lease ends at least
//! `duration` after the holder's count began. The holder stops `margin` before that point, so the
//! two never act at once as long as both clocks run at about the same rate. Neither compares a
//! time written by another machine with its own wall clock.
//!
//! No I/O here.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

/// The election's timings, from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease stays valid after a renewal (written into the Lease).
    pub duration: Duration,
    /// How long before the lease would run out the holder renews.
    pub grace: Duration,
}

impl Timing {
    /// The holder renews this long after its last renewal went through.
    pub fn renew_after(&self) -> Duration {
        self.duration.saturating_sub(self.grace)
    }

    /// How long before the lease runs out (as others count it) a holder that could not renew
    /// stops acting: half the grace, time for its controllers to stop and for clocks that run at
    /// slightly different rates.
    pub fn margin(&self) -> Duration {
        self.grace / 2
    }

    /// The holder stops acting this long after its last renewal went through, unless another
    /// went through before.
    pub fn stop_after(&self) -> Duration {
        self.duration.saturating_sub(self.margin())
    }

    /// The longest one Lease request may take: a paused API server must not hang the election.
    /// A holder's requests are also cut at its deadline.
    pub fn call_timeout(&self) -> Duration {
        self.grace
            .clamp(Duration::from_millis(500), Duration::from_secs(5))
    }

    /// How long a holder waits after a failed renewal before it tries again (several tries fit
    /// between the renewal time and the deadline).
    pub fn retry(&self) -> Duration {
        (self.grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// How often a standby reads the lease (it also reads when the lease it saw would run out).
    pub fn poll(&self) -> Duration {
        self.grace
    }
}

/// What a holder does next, given when its last renewal that went through was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Keep acting; renew at this instant.
    Hold {
        /// When to renew.
        renew_at: Instant,
    },
    /// Renew now; the renewal must go through before `deadline`, else stop.
    Renew {
        /// When the holder stops acting without a renewal.
        deadline: Instant,
    },
    /// Stop acting at once: no renewal went through for this long.
    Stop {
        /// Since the last renewal that went through.
        since_renewal: Duration,
    },
}

/// The holder's next step at `now`, its last successful renewal having been sent at `renewed`.
pub fn holder(timing: &Timing, renewed: Instant, now: Instant) -> Holder {
    let deadline = renewed + timing.stop_after();
    let renew_at = renewed + timing.renew_after();
    if now >= deadline {
        Holder::Stop {
            since_renewal: now.saturating_duration_since(renewed),
        }
    } else if now >= renew_at {
        Holder::Renew { deadline }
    } else {
        Holder::Hold { renew_at }
    }
}

/// Whether a writer may write at `now` in a term ending at `deadline` (`None`: no term).
pub fn holds(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|d| now < d)
}

/// A Lease as a standby last saw it, and since when (on this process's clock) it has not
/// changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The holder it names (`None`: free).
    pub holder: Option<String>,
    /// Its resourceVersion: any write changes it.
    pub version: Option<String>,
    /// The duration it states (this replica's own when it states none).
    pub duration: Duration,
    /// When this record was first seen.
    pub since: Instant,
}

impl Seen {
    /// Fold a fresh read of the Lease into what was seen: the clock restarts only when the record
    /// changed.
    pub fn observe(previous: Option<Seen>, lease: &Lease, own: Duration, now: Instant) -> Seen {
        let spec = lease.spec.as_ref();
        let holder = spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty());
        let version = lease.metadata.resource_version.clone();
        let duration = spec
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(own, Duration::from_secs);
        let since = match previous {
            Some(p) if p.holder == holder && p.version == version => p.since,
            _ => now,
        };
        Seen {
            holder,
            version,
            duration,
            since,
        }
    }
}

/// Whether a standby may write itself into the lease it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standby {
    /// Nobody holds it.
    Free,
    /// It names this replica (a term this process ended, or a restart under the same name).
    Ours,
    /// Its holder has not renewed for the lease's duration, as this replica counts.
    Expired,
    /// Another replica holds it; look again at `until` at the latest.
    HeldBy {
        /// The holder.
        holder: String,
        /// When it runs out if it does not change.
        until: Instant,
    },
}

impl Standby {
    /// Whether to try to take the lease now.
    pub fn may_take(&self) -> bool {
        !matches!(self, Standby::HeldBy { .. })
    }
}

/// What a standby makes of the lease it saw, at `now`.
pub fn standby(seen: &Seen, me: &str, now: Instant) -> Standby {
    match &seen.holder {
        None => Standby::Free,
        Some(h) if h == me => Standby::Ours,
        Some(h) => {
            let until = seen.since + seen.duration;
            if now >= until {
                Standby::Expired
            } else {
                Standby::HeldBy {
                    holder: h.clone(),
                    until,
                }
            }
        }
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// The Lease with this replica as holder, renewed at `wall` (times are for people reading it;
/// nobody decides by them). A change of holder counts a transition and sets the acquire time.
/// The resourceVersion stays, so the write fails if anyone wrote since the read.
pub fn claimed(mut lease: Lease, me: &str, timing: &Timing, wall: Timestamp) -> Lease {
    let mut spec = lease.spec.take().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(me);
    if !ours {
        spec.holder_identity = Some(me.to_owned());
        spec.acquire_time = Some(MicroTime(wall));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.renew_time = Some(MicroTime(wall));
    spec.lease_duration_seconds = Some(seconds(timing.duration));
    lease.spec = Some(spec);
    lease
}

/// The Lease freed by its holder on a clean shutdown, so a standby takes it at its next look.
pub fn released(mut lease: Lease) -> Lease {
    let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions);
    lease.spec = Some(LeaseSpec {
        lease_transitions: transitions,
        ..LeaseSpec::default()
    });
    lease
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn timing(duration: u64, grace: u64) -> Timing {
        Timing {
            duration: Duration::from_secs(duration),
            grace: Duration::from_secs(grace),
        }
    }

    fn lease(holder: Option<&str>, version: &str, duration: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("op".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: duration,
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_holder_renews_at_duration_minus_grace_and_stops_half_a_grace_before_the_lease_ends() {
        let t0 = Instant::now();
        // The test's timings (4 s lease, 2 s grace) and the defaults (10 s, 3 s).
        for (t, now, expected) in [
            (
                timing(4, 2),
                t0,
                Holder::Hold {
                    renew_at: t0 + 2 * S,
                },
            ),
            (
                timing(4, 2),
                t0 + 1999 * MS,
                Holder::Hold {
                    renew_at: t0 + 2 * S,
                },
            ),
            (
                timing(4, 2),
                t0 + 2 * S,
                Holder::Renew {
                    deadline: t0 + 3 * S,
                },
            ),
            (
                timing(4, 2),
                t0 + 2999 * MS,
                Holder::Renew {
                    deadline: t0 + 3 * S,
                },
            ),
            (
                timing(4, 2),
                t0 + 3 * S,
                Holder::Stop {
                    since_renewal: 3 * S,
                },
            ),
            (
                timing(4, 2),
                t0 + 60 * S,
                Holder::Stop {
                    since_renewal: 60 * S,
                },
            ),
            (
                timing(10, 3),
                t0 + 6 * S,
                Holder::Hold {
                    renew_at: t0 + 7 * S,
                },
            ),
            (
                timing(10, 3),
                t0 + 7 * S,
                Holder::Renew {
                    deadline: t0 + 8500 * MS,
                },
            ),
            (
                timing(10, 3),
                t0 + 8500 * MS,
                Holder::Stop {
                    since_renewal: 8500 * MS,
                },
            ),
        ] {
            assert_eq!(holder(&t, t0, now), expected, "{t:?} at +{:?}", now - t0);
        }
    }

    #[test]
    fn writers_write_only_before_the_term_s_deadline() {
        let t0 = Instant::now();
        for (deadline, now, writes) in [
            (None, t0, false),
            (Some(t0 + S), t0, true),
            (Some(t0 + S), t0 + 999 * MS, true),
            (Some(t0 + S), t0 + S, false),
            (Some(t0 + S), t0 + 60 * S, false),
        ] {
            assert_eq!(holds(deadline, now), writes, "{deadline:?} at {now:?}");
        }
    }

    #[test]
    fn the_holder_always_stops_before_any_standby_may_take_over() {
        // Whatever the timings the flags allow, the holder's deadline (from the renewal's send)
        // comes before the lease's end as a standby counts it (from the record's first sight,
        // never earlier than the send).
        for d in 2..=60 {
            for g in 1..d {
                let t = timing(d, g);
                assert!(t.stop_after() < t.duration, "{t:?}");
                assert!(t.renew_after() < t.stop_after(), "{t:?}: no time to renew");
                assert!(
                    t.call_timeout() > Duration::ZERO && t.retry() < t.grace,
                    "{t:?}"
                );
            }
        }
    }

    #[test]
    fn a_standby_takes_a_free_lease_or_its_own_at_once_and_another_s_after_a_full_duration_unchanged()
     {
        let t0 = Instant::now();
        let own = 10 * S;
        let seen =
            |holder: Option<&str>| Seen::observe(None, &lease(holder, "7", Some(4)), own, t0);
        for (seen, now, expected) in [
            (seen(None), t0, Standby::Free),
            (seen(Some("op-b")), t0, Standby::Ours),
            (
                seen(Some("op-a")),
                t0 + 3999 * MS,
                Standby::HeldBy {
                    holder: "op-a".into(),
                    until: t0 + 4 * S,
                },
            ),
            (seen(Some("op-a")), t0 + 4 * S, Standby::Expired),
        ] {
            let got = standby(&seen, "op-b", now);
            assert_eq!(got, expected, "{seen:?} at +{:?}", now - t0);
            assert_eq!(got.may_take(), !matches!(expected, Standby::HeldBy { .. }));
        }
    }

    #[test]
    fn the_clock_of_a_seen_lease_restarts_only_when_the_record_changes() {
        let t0 = Instant::now();
        let own = 10 * S;
        let first = Seen::observe(None, &lease(Some("op-a"), "7", Some(4)), own, t0);
        assert_eq!((first.since, first.duration), (t0, 4 * S));
        let same = Seen::observe(
            Some(first.clone()),
            &lease(Some("op-a"), "7", Some(4)),
            own,
            t0 + 3 * S,
        );
        assert_eq!(
            same.since, t0,
            "unchanged: the lease runs out 4 s after the first sight"
        );
        let renewed = Seen::observe(
            Some(same),
            &lease(Some("op-a"), "8", Some(4)),
            own,
            t0 + 3 * S,
        );
        assert_eq!(
            renewed.since,
            t0 + 3 * S,
            "renewed: counted from this sight"
        );
        let no_duration = Seen::observe(None, &lease(Some("op-a"), "9", None), own, t0);
        assert_eq!(
            no_duration.duration, own,
            "a record without a duration: our own"
        );
        let empty_holder = Seen::observe(None, &lease(Some(""), "9", None), own, t0);
        assert_eq!(standby(&empty_holder, "op-b", t0), Standby::Free);
    }

    #[test]
    fn claiming_names_the_holder_and_counts_a_transition_only_on_a_change_of_holder() {
        let t = timing(4, 2);
        let wall = Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut theirs = lease(Some("op-a"), "7", Some(4));
        if let Some(s) = theirs.spec.as_mut() {
            s.lease_transitions = Some(3);
        }
        let taken = claimed(theirs, "op-b", &t, wall);
        let spec = taken.spec.clone().unwrap_or_default();
        assert_eq!(spec.holder_identity.as_deref(), Some("op-b"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(wall)));
        assert_eq!(spec.lease_duration_seconds, Some(4));
        assert_eq!(
            taken.metadata.resource_version.as_deref(),
            Some("7"),
            "the write is conditional on the version read"
        );

        let later = Timestamp::from_second(1_800_000_002).unwrap_or(Timestamp::UNIX_EPOCH);
        let renewed = claimed(taken, "op-b", &t, later).spec.unwrap_or_default();
        assert_eq!(
            renewed.lease_transitions,
            Some(4),
            "a renewal is no transition"
        );
        assert_eq!(renewed.acquire_time, Some(MicroTime(wall)));
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));

        let freed = released(lease(Some("op-b"), "9", Some(4)));
        let spec = freed.spec.unwrap_or_default();
        assert_eq!((spec.holder_identity, spec.renew_time), (None, None));
        assert_eq!(freed.metadata.resource_version.as_deref(), Some("9"));
    }
}
