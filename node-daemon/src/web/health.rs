//! The local health endpoint of the web daemon (`--health-port`): `/healthz` says the reconcile
//! loop is alive, `/readyz` says whether the host is `TunnelReady` (200) or not (503), with the
//! reason in the body. For standalone hosts, where there is no API to report to, and for the
//! DaemonSet's probes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::status::Readiness;
use crate::error::Error;

/// What the endpoint reports, updated by the reconcile loop.
#[derive(Debug)]
pub struct Health {
    /// The last verdict (`None` before the first reconcile).
    pub readiness: Option<Readiness>,
    /// When the loop last turned (it turns every second).
    pub last_turn: Instant,
}

/// Shared between the loop and the server.
pub type Shared = Arc<Mutex<Health>>;

/// A loop that has not turned for this long is wedged: `/healthz` fails.
const STALE: Duration = Duration::from_secs(30);

/// A new shared record.
pub fn shared() -> Shared {
    Arc::new(Mutex::new(Health {
        readiness: None,
        last_turn: Instant::now(),
    }))
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Health> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `/healthz`.
pub fn healthz_answer(health: &Health, now: Instant) -> (StatusCode, String) {
    if now.duration_since(health.last_turn) > STALE {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "reconcile loop stalled\n".into(),
        )
    } else {
        (StatusCode::OK, "ok\n".into())
    }
}

/// `/readyz`.
pub fn readyz_answer(health: &Health) -> (StatusCode, String) {
    match &health.readiness {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: Starting\n".into(),
        ),
        Some(r) if r.ready => (
            StatusCode::OK,
            format!("ready: {}: {}\n", r.reason, r.message),
        ),
        Some(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}: {}\n", r.reason, r.message),
        ),
    }
}

async fn healthz(State(shared): State<Shared>) -> (StatusCode, String) {
    healthz_answer(&lock(&shared), Instant::now())
}

async fn readyz(State(shared): State<Shared>) -> (StatusCode, String) {
    readyz_answer(&lock(&shared))
}

/// Binds `addr` (so a port in use fails at start) and returns the server to spawn.
pub async fn bind(
    addr: SocketAddr,
    shared: Shared,
) -> Result<impl Future<Output = std::io::Result<()>> + Send, Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared);
    Ok(async move { axum::serve(listener, app).await })
}

/// Updates the verdict.
pub fn set_readiness(shared: &Shared, readiness: Readiness) {
    lock(shared).readiness = Some(readiness);
}

/// Marks a turn of the loop.
pub fn turn(shared: &Shared) {
    lock(shared).last_turn = Instant::now();
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvstun_crds::conditions::Reason;

    #[test]
    fn answers() {
        let now = Instant::now();
        let mut h = Health {
            readiness: None,
            last_turn: now,
        };
        assert_eq!(healthz_answer(&h, now).0, StatusCode::OK);
        assert_eq!(readyz_answer(&h).0, StatusCode::SERVICE_UNAVAILABLE);
        h.readiness = Some(Readiness {
            ready: true,
            reason: Reason::Ready,
            message: "m".into(),
        });
        assert_eq!(
            readyz_answer(&h),
            (StatusCode::OK, "ready: Ready: m\n".into())
        );
        assert_eq!(
            healthz_answer(&h, now + Duration::from_secs(31)).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
