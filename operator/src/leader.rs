//! Leader election between operator replicas on a `coordination.k8s.io` Lease in the operator's
//! namespace, through `kube-lease-manager`.
//!
//! Timing: the holder renews `grace` seconds before the lease would expire; a standby sleeps until
//! the lease it saw expires and then takes it. With the defaults (10 s lease, 3 s grace) a
//! standby takes over at most ~11 s after the holder died without a word (the lease runs out,
//! plus up to 1 s of random back-off). A clean shutdown releases the lease, so nobody waits for
//! a dead holder, but the standby still only looks when its sleep ends (also within ~10 s).
//!
//! I/O: reads and server-side-applies the Lease (in a background task).

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Error;

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
    /// Refuse timings the lease manager would panic on or that cannot work.
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
        if self.identity.is_empty() {
            return Err(Error::Config(
                "the pod name (POD_NAME) must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// A running election: `is_leader` flips as the lease is won and lost.
pub struct Election {
    /// `true` while this replica holds the lease.
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
}

/// Start competing for the lease (creating it if missing).
pub async fn start(client: Client, cfg: &LeaseConfig) -> Result<Election, Error> {
    cfg.check()?;
    let manager = LeaseManagerBuilder::new(client, &cfg.name)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.duration_seconds)
        .with_grace(cfg.grace_seconds)
        .build()
        .await
        .map_err(|e| Error::Lease(Box::new(e)))?;
    let (is_leader, task) = manager.watch().await;
    Ok(Election { is_leader, task })
}

impl Election {
    /// Wait until this replica leads. `false` if the election task ended instead.
    pub async fn won(&mut self) -> bool {
        self.is_leader.wait_for(|leads| *leads).await.is_ok()
    }

    /// Wait until this replica no longer leads (or the election task ended).
    pub async fn lost(&mut self) {
        let _ = self.is_leader.wait_for(|leads| !*leads).await;
    }

    /// Stop competing: the task releases the lease if held, so a standby takes over at once.
    pub async fn release(self) {
        let Election { is_leader, task } = self;
        drop(is_leader);
        match task.await {
            Ok(Ok(_)) => tracing::info!("lease released"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "releasing the lease failed; a standby takes over when it expires")
            }
            Err(e) => tracing::warn!(error = %e, "leader election task failed"),
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
    }
}
