//! Prometheus metrics and the operator's one HTTP port: `/metrics` (text format), `/healthz`
//! (liveness: the process and its leader-election task are alive) and `/readyz` (readiness: the
//! process is up; a standby answers 200 too, so rolling updates proceed while it waits for the
//! lease).
//!
//! Labels are fixed vocabularies (controller, error category, role) or object identities
//! (namespace/name of a VirtualService, removed when the object goes); never error text.
//!
//! I/O: [`serve`] binds a TCP listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::{Category, Error};

/// Which reconcile loop.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `virtualservice`, `realserver` or `daemonsets`.
    pub controller: &'static str,
}

/// A reconcile loop and an error category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// As in [`ControllerLabels`].
    pub controller: &'static str,
    /// [`Error::category`].
    pub category: &'static str,
}

/// One VirtualService.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VsLabels {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// A status write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `VirtualService` or `RealServer`.
    pub kind: &'static str,
}

/// A change to a node DaemonSet.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DaemonSetLabels {
    /// `balancer` or `web`.
    pub role: &'static str,
    /// `apply` or `delete`.
    pub action: &'static str,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.25 ms .. ~8 s, doubling: wide enough for a pure fold and for a slow API server.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// All operator metrics, registered once.
pub struct Metrics {
    registry: Registry,
    /// Reconciles run, per loop.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Failed reconciles, per loop and category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration, per loop.
    pub duration: HistogramFamily,
    /// Healthy (and tunnel-ready) real servers per VirtualService.
    pub healthy_real_servers: Family<VsLabels, Gauge>,
    /// Selected real servers per VirtualService.
    pub total_real_servers: Family<VsLabels, Gauge>,
    /// Times a VirtualService's VIP moved to another Master.
    pub master_changes: Family<VsLabels, Counter>,
    /// Status writes (only made when something changed).
    pub status_writes: Family<KindLabels, Counter>,
    /// DaemonSet applies and deletions.
    pub daemonset_changes: Family<DaemonSetLabels, Counter>,
    /// 1 while this replica holds the lease.
    pub leader: Gauge,
    /// False once the leader-election task has died (then `/healthz` fails and the kubelet
    /// restarts the process).
    pub alive: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The loops that report reconcile metrics.
pub const CONTROLLERS: [&str; 3] = ["virtualservice", "realserver", "daemonsets"];

impl Metrics {
    /// Create and register every metric. Counters of every loop and error category start at zero
    /// so `rate()` and absence alerts work before the first event.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let healthy_real_servers = Family::<VsLabels, Gauge>::default();
        let total_real_servers = Family::<VsLabels, Gauge>::default();
        let master_changes = Family::<VsLabels, Counter>::default();
        let status_writes = Family::<KindLabels, Counter>::default();
        let daemonset_changes = Family::<DaemonSetLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "lvstun_operator_reconciles",
            "Reconciles run, by loop",
            reconciles.clone(),
        );
        registry.register(
            "lvstun_operator_reconcile_errors",
            "Failed reconciles, by loop and error category",
            errors.clone(),
        );
        registry.register(
            "lvstun_operator_reconcile_duration_seconds",
            "Time spent in one reconcile, by loop",
            duration.clone(),
        );
        registry.register(
            "lvstun_operator_healthy_real_servers",
            "Real servers of a VirtualService that are healthy and tunnel-ready",
            healthy_real_servers.clone(),
        );
        registry.register(
            "lvstun_operator_real_servers",
            "Real servers a VirtualService selects",
            total_real_servers.clone(),
        );
        registry.register(
            "lvstun_operator_master_changes",
            "Times the VIP of a VirtualService moved to another balancer",
            master_changes.clone(),
        );
        registry.register(
            "lvstun_operator_status_writes",
            "Status writes, made only when the folded status changed",
            status_writes.clone(),
        );
        registry.register(
            "lvstun_operator_daemonset_changes",
            "Server-side applies and deletions of the node DaemonSets",
            daemonset_changes.clone(),
        );
        registry.register(
            "lvstun_operator_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        for controller in CONTROLLERS {
            let _ = reconciles.get_or_create(&ControllerLabels { controller });
            let _ = duration.get_or_create(&ControllerLabels { controller });
            for category in Category::all() {
                let _ = errors.get_or_create(&ErrorLabels {
                    controller,
                    category: category.as_str(),
                });
            }
        }
        for kind in ["VirtualService", "RealServer"] {
            let _ = status_writes.get_or_create(&KindLabels { kind });
        }
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            healthy_real_servers,
            total_real_servers,
            master_changes,
            status_writes,
            daemonset_changes,
            leader,
            alive: AtomicBool::new(true),
        }
    }

    /// Count one reconcile of `controller` and its outcome.
    pub fn observe(&self, controller: &'static str, took: Duration, error: Option<&Error>) {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        self.duration
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
        if let Some(e) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    controller,
                    category: e.category(),
                })
                .inc();
        }
    }

    /// Forget a deleted VirtualService's series.
    pub fn forget_virtual_service(&self, namespace: &str, name: &str) {
        let l = VsLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.healthy_real_servers.remove(&l);
        self.total_real_servers.remove(&l);
        self.master_changes.remove(&l);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in the encoder.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn healthz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.alive.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "leader election task died")
    }
}

async fn readyz() -> &'static str {
    "ok"
}

/// The router of the metrics and health endpoints.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics)
}

/// Bind `port` on all addresses (the chart's probes and Service reach the pod IP).
pub async fn bind(port: u16) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|source| Error::Io {
            what: format!("binding the metrics port {port}"),
            source,
        })
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Io {
            what: "serving /metrics".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_series() {
        let m = Metrics::new();
        m.observe("virtualservice", Duration::from_millis(3), None);
        m.observe(
            "virtualservice",
            Duration::from_millis(3),
            Some(&Error::CacheNotReady("x".into())),
        );
        m.healthy_real_servers
            .get_or_create(&VsLabels {
                namespace: "ns".into(),
                name: "www".into(),
            })
            .set(2);
        let text = m.render();
        for needle in [
            "lvstun_operator_reconciles_total{controller=\"virtualservice\"} 2",
            "lvstun_operator_reconcile_errors_total{controller=\"virtualservice\",category=\"CacheNotReady\"} 1",
            "lvstun_operator_reconcile_errors_total{controller=\"daemonsets\",category=\"ApplyFailed\"} 0",
            "lvstun_operator_reconcile_duration_seconds_count{controller=\"virtualservice\"} 2",
            "lvstun_operator_healthy_real_servers{namespace=\"ns\",name=\"www\"} 2",
            "lvstun_operator_leader 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        m.forget_virtual_service("ns", "www");
        assert!(!m.render().contains("name=\"www\""));
    }
}
