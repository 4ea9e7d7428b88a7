//! Leader election between operator replicas on a `coordination.k8s.io` Lease in the operator's
//! namespace. The rules (when to renew, when to stop, when a standby may take over) are pure
//! functions in [`term`]; this module reads and writes the Lease and says who leads.
//!
//! The guarantee: a replica acts as leader only while a renewal it sent went through less than
//! `duration - grace/2` ago on its own monotonic clock; past that it stops at once
//! (`is_leader` turns false, the controllers are dropped) and acts again only after it has
//! written itself into the Lease again. Every request is bounded by a timeout (and a holder's
//! by its deadline), so a paused or unreachable API server cannot hold the election up. A
//! standby takes the lease only after it saw the same record unchanged for the lease's
//! duration, so it never starts before the old holder stopped (see [`term`]); writes are
//! conditional on the resourceVersion read, so two standbys cannot both take it. The
//! controllers' writes check the same deadline themselves ([`Term`]).
//!
//! Written here rather than through the `kube-lease-manager` crate (0.13), which does not keep
//! this guarantee: when a renewal fails it logs, backs off and retries while its `is_leader`
//! channel stays true; its requests have no timeout (the kube client sets no read timeout, so a
//! renewal to a paused API server waits forever, the replica leading all the while); and it
//! decides expiry by comparing the renewTime another machine wrote with this machine's wall
//! clock. It exposes no last-renewal time a watchdog could wrap.
//!
//! Timing with the defaults (10 s lease, 3 s grace): the holder renews 7 s after its last
//! renewal, retries every 750 ms, and stops 8.5 s after it if none went through. A standby reads
//! the lease every 3 s and takes it 10 s after the record last changed (so ~10-13 s after a
//! holder died without a word); a clean shutdown frees the lease, and a standby takes it at its
//! next read (within 3 s).
//!
//! I/O: reads, creates and replaces the Lease (in a background task).

pub mod term;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::Error;
use term::{Holder, Seen, Timing};

/// How to elect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Lease name (the chart passes `<fullname>-operator`).
    pub name: String,
    /// Lease namespace (the operator's own).
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// Seconds a lease stays valid after the last renewal.
    pub duration_seconds: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace_seconds: u64,
}

impl LeaseConfig {
    /// Refuse timings that cannot work.
    pub fn check(&self) -> Result<(), Error> {
        if self.duration_seconds == 0
            || self.grace_seconds == 0
            || self.grace_seconds >= self.duration_seconds
        {
            return Err(Error::Config(format!(
                "--lease-grace-seconds ({}) must be at least 1 and less than --lease-duration-seconds ({})",
                self.grace_seconds, self.duration_seconds
            )));
        }
        if i32::try_from(self.duration_seconds).is_err() {
            return Err(Error::Config(format!(
                "--lease-duration-seconds ({}) does not fit a Lease",
                self.duration_seconds
            )));
        }
        if self.identity.is_empty() {
            return Err(Error::Config(
                "the pod name (POD_NAME) must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// The timings the rules take.
    pub fn timing(&self) -> Timing {
        Timing {
            duration: Duration::from_secs(self.duration_seconds),
            grace: Duration::from_secs(self.grace_seconds),
        }
    }
}

/// A running election: `is_leader` flips as the lease is won and lost.
pub struct Election {
    /// `true` while this replica may act as leader.
    pub is_leader: watch::Receiver<bool>,
    deadline: watch::Receiver<Option<Instant>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The writers' view of the current term: each write first asks whether the term's deadline
/// is still ahead. `is_leader` turns false when the election task sees the deadline pass; this
/// check also covers the moment between a frozen process waking up and that task running.
#[derive(Debug, Clone)]
pub struct Term(watch::Receiver<Option<Instant>>);

impl Term {
    /// `Ok` while the term's deadline is ahead; [`Error::NotLeading`] once it has passed.
    pub fn check(&self) -> Result<(), Error> {
        let deadline = *self.0.borrow();
        if term::holds(deadline, Instant::now()) {
            Ok(())
        } else {
            Err(Error::NotLeading)
        }
    }
}

/// Start competing for the lease (creating it if missing). Does no request itself: the task
/// does, and keeps competing whatever the API server answers.
pub fn start(client: Client, cfg: &LeaseConfig) -> Result<Election, Error> {
    cfg.check()?;
    let (leader, is_leader) = watch::channel(false);
    let (deadline_tx, deadline) = watch::channel(None);
    let (stop, stopped) = oneshot::channel();
    let campaign = Campaign {
        api: Api::namespaced(client, &cfg.namespace),
        name: cfg.name.clone(),
        me: cfg.identity.clone(),
        timing: cfg.timing(),
        leader,
        deadline: deadline_tx,
    };
    let task = tokio::spawn(campaign.run(stopped));
    Ok(Election {
        is_leader,
        deadline,
        stop,
        task,
    })
}

impl Election {
    /// The writers' view of the current term.
    pub fn term(&self) -> Term {
        Term(self.deadline.clone())
    }

    /// Wait until this replica leads. `false` if the election task ended instead.
    pub async fn won(&mut self) -> bool {
        self.is_leader.wait_for(|leads| *leads).await.is_ok()
    }

    /// Wait until this replica no longer leads (or the election task ended).
    pub async fn lost(&mut self) {
        let _ = self.is_leader.wait_for(|leads| !*leads).await;
    }

    /// Stop competing: the task frees the lease if it holds it, so a standby takes over at its
    /// next read.
    pub async fn release(self) {
        let Election { stop, task, .. } = self;
        let _ = stop.send(());
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "leader election task failed");
        }
    }
}

/// What a renewal came to.
enum Renewal {
    /// The lease names this replica for another term.
    Ours,
    /// The lease names another replica (or none).
    Taken(String),
}

/// The election task's fixed parts.
struct Campaign {
    api: Api<Lease>,
    name: String,
    me: String,
    timing: Timing,
    leader: watch::Sender<bool>,
    /// Until when the writers may write: the current term's deadline.
    deadline: watch::Sender<Option<Instant>>,
}

/// A request's failure, for the log: its error or its timeout.
fn failure(result: Result<kube::Error, Duration>) -> Error {
    match result {
        Ok(e) => Error::Lease {
            what: "a Lease request failed".into(),
            source: Some(Box::new(e)),
        },
        Err(after) => Error::Lease {
            what: format!(
                "a Lease request got no answer within {:.1} s",
                after.as_secs_f64()
            ),
            source: None,
        },
    }
}

impl Campaign {
    async fn run(self, stopped: oneshot::Receiver<()>) {
        tokio::select! {
            _ = stopped => {}
            () = self.compete() => {}
        }
        self.deadline.send_replace(None);
        if self.leader.send_replace(false) {
            self.release().await;
        }
    }

    /// Lead or stand by, forever.
    async fn compete(&self) {
        let mut renewed: Option<Instant> = None;
        let mut seen: Option<Seen> = None;
        loop {
            let now = Instant::now();
            let wake = match renewed {
                Some(at) => match term::holder(&self.timing, at, now) {
                    Holder::Hold { renew_at } => renew_at,
                    Holder::Renew { deadline } => {
                        let sent = Instant::now();
                        match self.renew(deadline).await {
                            Ok(Renewal::Ours) => {
                                renewed = Some(sent);
                                self.deadline
                                    .send_replace(Some(sent + self.timing.stop_after()));
                                continue;
                            }
                            Ok(Renewal::Taken(by)) => {
                                self.stop_leading(at, &format!("the lease now names {by}"));
                                renewed = None;
                                continue;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "renewing the lease failed; trying again until the deadline");
                                (Instant::now() + self.timing.retry()).min(deadline)
                            }
                        }
                    }
                    Holder::Stop { since_renewal } => {
                        self.stop_leading(
                            at,
                            &format!(
                                "no renewal went through for {:.1} s (the lease runs out {:.1} s after one)",
                                since_renewal.as_secs_f64(),
                                self.timing.duration.as_secs_f64()
                            ),
                        );
                        renewed = None;
                        continue;
                    }
                },
                None => match self.look(&mut seen).await {
                    Ok(Some(sent)) => {
                        renewed = Some(sent);
                        self.deadline
                            .send_replace(Some(sent + self.timing.stop_after()));
                        self.leader.send_replace(true);
                        tracing::info!(identity = %self.me, "leading");
                        continue;
                    }
                    Ok(None) => {
                        // Look again when the lease seen would run out, but not sooner than a
                        // retry and not later than a poll.
                        let poll = now + self.timing.poll();
                        let soonest = Instant::now() + self.timing.retry();
                        seen.as_ref().map_or(poll, |s| {
                            (s.since + s.duration).clamp(soonest, poll.max(soonest))
                        })
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the lease failed; standing by");
                        now + self.timing.poll()
                    }
                },
            };
            tokio::time::sleep_until(wake).await;
        }
    }

    fn stop_leading(&self, renewed: Instant, why: &str) {
        self.deadline.send_replace(None);
        self.leader.send_replace(false);
        tracing::warn!(
            identity = %self.me,
            since_renewal_ms = u64::try_from(renewed.elapsed().as_millis()).unwrap_or(u64::MAX),
            "stopped leading: {why}"
        );
    }

    /// One request, cut at `deadline`.
    async fn call<T>(
        &self,
        deadline: Instant,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Result<kube::Error, Duration>> {
        let start = Instant::now();
        match tokio::time::timeout_at(deadline, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Ok(e)),
            Err(_) => Err(Err(start.elapsed())),
        }
    }

    fn bound(&self) -> Instant {
        Instant::now() + self.timing.call_timeout()
    }

    /// Read the lease and write this replica into it if it may. `Some(sent)`: it did, with the
    /// write sent at `sent`.
    async fn look(&self, seen: &mut Option<Seen>) -> Result<Option<Instant>, Error> {
        let read = self
            .call(self.bound(), self.api.get_opt(&self.name))
            .await
            .map_err(failure)?;
        let Some(lease) = read else {
            let fresh = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: None,
            };
            let sent = Instant::now();
            let lease = term::claimed(fresh, &self.me, &self.timing, Timestamp::now());
            return match self
                .call(
                    self.bound(),
                    self.api.create(&PostParams::default(), &lease),
                )
                .await
            {
                Ok(_) => Ok(Some(sent)),
                Err(Ok(kube::Error::Api(s))) if s.code == 409 => Ok(None),
                Err(e) => Err(failure(e)),
            };
        };
        let s = Seen::observe(seen.take(), &lease, self.timing.duration, Instant::now());
        let verdict = term::standby(&s, &self.me, Instant::now());
        *seen = Some(s);
        if !verdict.may_take() {
            return Ok(None);
        }
        tracing::debug!(?verdict, "taking the lease");
        let sent = Instant::now();
        Ok(self.write(self.bound(), lease).await?.then_some(sent))
    }

    /// Renew the lease this replica holds, by `deadline`.
    async fn renew(&self, deadline: Instant) -> Result<Renewal, Error> {
        let bound = self.bound().min(deadline);
        let lease = self
            .call(bound, self.api.get_opt(&self.name))
            .await
            .map_err(failure)?;
        let Some(lease) = lease else {
            return Ok(Renewal::Taken("nobody (it was deleted)".into()));
        };
        let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
        match holder {
            Some(h) if h == self.me => {
                if self.write(bound, lease).await? {
                    Ok(Renewal::Ours)
                } else {
                    // Written by someone else between the read and the write: the next try
                    // reads who holds it now.
                    Err(Error::Lease {
                        what: "the Lease changed between its read and the renewal".into(),
                        source: None,
                    })
                }
            }
            other => Ok(Renewal::Taken(other.unwrap_or_else(|| "nobody".into()))),
        }
    }

    /// Write this replica into `lease` as read, conditional on its resourceVersion: `false` if
    /// it was written since.
    async fn write(&self, deadline: Instant, lease: Lease) -> Result<bool, Error> {
        let lease = term::claimed(lease, &self.me, &self.timing, Timestamp::now());
        match self
            .call(
                deadline,
                self.api.replace(&self.name, &PostParams::default(), &lease),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(Ok(kube::Error::Api(s))) if s.code == 409 => Ok(false),
            Err(e) => Err(failure(e)),
        }
    }

    /// Free the lease on shutdown if it still names this replica.
    async fn release(&self) {
        let bound = self.bound();
        let freed = async {
            let lease = self
                .call(bound, self.api.get_opt(&self.name))
                .await
                .map_err(failure)?;
            match lease {
                Some(l)
                    if l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                        == Some(&self.me) =>
                {
                    self.call(
                        bound,
                        self.api
                            .replace(&self.name, &PostParams::default(), &term::released(l)),
                    )
                    .await
                    .map_err(failure)?;
                    Ok::<bool, Error>(true)
                }
                _ => Ok(false),
            }
        };
        match freed.await {
            Ok(true) => tracing::info!("lease released"),
            Ok(false) => {
                tracing::info!("the lease no longer named this replica; nothing to release")
            }
            Err(e) => {
                tracing::warn!(error = %e, "releasing the lease failed; a standby takes over when it runs out")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(d: u64, g: u64) -> LeaseConfig {
        LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "pod-0".into(),
            duration_seconds: d,
            grace_seconds: g,
        }
    }

    #[test]
    fn timings_that_cannot_work_are_refused() {
        assert!(cfg(10, 3).check().is_ok());
        assert!(cfg(10, 10).check().is_err());
        assert!(cfg(0, 0).check().is_err());
        assert!(cfg(5, 0).check().is_err());
        assert!(cfg(u64::MAX, 3).check().is_err());
    }
}
