//! `lvstun-operator`: watches VirtualService and RealServer objects (and Nodes, and the
//! DaemonSets it owns), keeps the balancer and web DaemonSets that run `lvstun-node` on the
//! nodes the chart's values name, and folds the node daemons' reports into the status people
//! read with `kubectl get lvsvc,lvsrs`.
//!
//! Modules: [`run`] → `leader` (the Lease), `metrics` (/metrics, /healthz, /readyz) and
//! `controller` (watches, triggers; builds the [`context::Context`]) → `reconcile` (one pass
//! per object, in phases) → `context` (caches and memory shared by the reconciles), `validate`,
//! `build`, `status`, `pace` (pure, where the unit tests are) and `apply` (the only module that
//! writes). Decisions that shape the whole are recorded in
//! `docs/adr/0001-daemonset-ownership.md` and `docs/adr/0007-daemonset-placement-by-chart.md`.
//! [`uninstall`] is the chart's pre-delete hook (`lvstun-operator uninstall`, ADR 0008).

pub mod apply;
pub mod build;
pub mod cli;
pub mod context;
pub mod controller;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod leader;
pub mod metrics;
pub mod pace;
pub mod reconcile;
pub mod status;
pub mod triggers;
pub mod uninstall;
pub mod validate;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use kube::Client;

pub use cli::Cli;
pub use error::Error;

/// Resolves on SIGTERM (the kubelet stopping the pod) or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the operator");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Run the operator until SIGTERM/SIGINT: serve metrics and health at once, compete for the
/// lease, and reconcile only while holding it. A replica that loses the lease stops reconciling
/// and competes again; on shutdown it releases the lease so a standby takes over at once.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let node_daemons = cli.node_daemons()?;
    let lease = cli.lease();
    lease.check()?;
    let client = Client::try_default()
        .await
        .map_err(|e| Error::Client(Box::new(e)))?;
    let metrics = Arc::new(metrics::Metrics::new());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };
    let listener = metrics::bind(cli.metrics_port).await?;
    let http = tokio::spawn(metrics::serve(listener, metrics.clone(), stopped()));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    tracing::info!(
        namespace = %lease.namespace,
        lease = %lease.name,
        identity = %lease.identity,
        metrics_port = cli.metrics_port,
        "lvstun-operator {} starting; standing by for the lease",
        env!("CARGO_PKG_VERSION")
    );

    let mut election = leader::start(client.clone(), &lease)?;
    let outcome = loop {
        tokio::select! {
            won = election.won() => {
                if !won {
                    break Err(Error::Lease {
                        what: "the leader election task ended".into(),
                        source: None,
                    });
                }
            }
            () = stopped() => break Ok(()),
        }
        metrics.leader.set(1);
        tracing::info!(identity = %lease.identity, "acquired the lease; reconciling");
        let work = controller::run(
            client.clone(),
            node_daemons.clone(),
            cli.concurrency,
            cli.vip_policy.clone(),
            metrics.clone(),
            lease.identity.clone(),
            election.term(),
        );
        let stop = tokio::select! {
            () = work => {
                tracing::error!("the controllers ended on their own; competing for the lease again");
                false
            }
            () = election.lost() => {
                tracing::warn!("lost the lease; stopped reconciling, standing by");
                false
            }
            () = stopped() => true,
        };
        metrics.leader.set(0);
        if stop {
            break Ok(());
        }
    };
    if outcome.is_err() {
        metrics.alive.store(false, Ordering::Relaxed);
    }
    election.release().await;
    let _ = http.await;
    outcome
}
