//! The balancer's local HTTP endpoint (`--health-port`): `/healthz` (the loop is turning),
//! `/readyz` (this node could take the VIP properly, see [`not_ready`]), `/metrics` (Prometheus text:
//! passes, IPVS writes and refusals, services, destinations, health checks, services another
//! program deleted, the IPVS sysctls
//! that could not be set, and per VIP the VRRP state and its transitions). The answers are pure functions of the [`Report`] and the
//! [`VipsReport`]; [`bind`] does the I/O.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use lvstun_crds::kernel_settings;
use lvstun_crds::v1alpha1::VrrpState;

use super::owner::{RouterReport, SharedVips, VipsReport, lock_vips};
use super::run::{Report, SharedReport, lock};
use crate::error::Error;

/// What the server needs besides the report.
#[derive(Clone)]
struct Ctx {
    report: SharedReport,
    vips: SharedVips,
    started: Instant,
    stale_after: Duration,
}

/// `/healthz`: fails when the loop has not turned for `stale_after` (it turns at least once
/// per resync period, so a longer silence means it is wedged).
pub fn healthz_answer(
    report: &Report,
    started: Instant,
    stale_after: Duration,
    now: Instant,
) -> (StatusCode, String) {
    if let Some(waiting) = &report.waiting {
        return (StatusCode::OK, format!("alive, waiting for {waiting}\n"));
    }
    let last = report.last_turn.unwrap_or(started);
    if now.saturating_duration_since(last) > stale_after {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "reconcile loop stalled: last turn {} s ago\n",
                now.saturating_duration_since(last).as_secs()
            ),
        )
    } else {
        (StatusCode::OK, "ok\n".into())
    }
}

/// What keeps this balancer from taking the VIP properly, one sentence each; empty: ready.
///
/// Ready means that a VIP moved here now would keep every flow: the last pass read the kernel
/// and brought its IPVS table to the desired one (nothing failed that waits for a retry; a
/// lasting refusal is reported, not waited for, since the rest is served and it may last for
/// hours), and every VRRP router has warmed up ([`StandBy::warming_up`]): its health checks
/// have had their detection time, so the weights are this node's verdicts and not a
/// predecessor's, and the backup sync daemon has had the time to receive the Master's
/// connections. A router whose node has no destination in rotation is not waited for (that
/// can last; the router stands by at priority 1 meanwhile). The DaemonSet's rolling update
/// stops the next node's pod only once this pod is ready, so an upgrade never hands the VIP to
/// a node that has not caught up. Pure.
///
/// [`StandBy::warming_up`]: super::vips::StandBy::warming_up
pub fn not_ready(report: &Report, vips: &VipsReport) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(waiting) = &report.waiting {
        out.push(format!("starting: waiting for {waiting}"));
    }
    if let Some(err) = &report.last_error {
        out.push(format!("the kernel's IPVS table could not be read: {err}"));
    }
    if !report.ready {
        out.push("starting: no pass has programmed the kernel's IPVS table yet".into());
    } else if report.retrying > 0 {
        out.push(format!(
            "the kernel's IPVS table is not the desired one yet: {} operations failed and wait for a retry",
            report.retrying
        ));
    }
    if vips.starting {
        out.push("starting: the VRRP routers are not started yet".into());
    }
    if let Some(why) = &report.source_refused {
        out.push(format!(
            "the configuration's newest version is not applied (the last good one is served): {why}"
        ));
    }
    for (vrid, router) in &vips.routers {
        if let Some(why) = router.stand_by.filter(|s| s.warming_up()) {
            out.push(format!("VRID {vrid}: {why}"));
        }
    }
    out
}

/// `/readyz`: 200 when [`not_ready`] finds nothing, else 503 with one `not ready:` line per
/// reason. Refused destinations and object problems are listed either way; so is a router that
/// stands by because this node does not forward.
pub fn readyz_answer(report: &Report, vips: &VipsReport) -> (StatusCode, String) {
    let mut body = String::new();
    let missing = not_ready(report, vips);
    let code = if missing.is_empty() {
        let (services, dests) = report.last.map_or((0, 0), |l| (l.services, l.destinations));
        let _ = writeln!(
            body,
            "ready: {services} services, {dests} destinations, {} health checks",
            report.targets
        );
        StatusCode::OK
    } else {
        for m in &missing {
            let _ = writeln!(body, "not ready: {m}");
        }
        StatusCode::SERVICE_UNAVAILABLE
    };
    for (vrid, router) in &vips.routers {
        if let Some(why) = router.stand_by.filter(|s| !s.warming_up()) {
            let _ = writeln!(body, "standing by: VRID {vrid}: {why} (priority 1)");
        }
    }
    for r in &report.refusals {
        let _ = writeln!(body, "refused: {r}");
    }
    for p in &report.problems {
        let _ = writeln!(body, "problem: {p}");
    }
    (code, body)
}

/// `/metrics` in the Prometheus text format. Labels are fixed names, never error text.
pub fn metrics_answer(report: &Report, vips: &VipsReport) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    let last = report.last;
    metric(
        "lvstun_balancer_ready",
        "gauge",
        "1 while /readyz says ready: the kernel's table is the desired one and the VRRP routers have warmed up.",
        u64::from(not_ready(report, vips).is_empty()),
    );
    metric(
        "lvstun_balancer_config_applied",
        "gauge",
        "0 while the source's newest version is refused (a standalone file with an invalid object) and the last good one is served; 1 otherwise.",
        u64::from(report.source_refused.is_none()),
    );
    metric(
        "lvstun_balancer_passes_total",
        "counter",
        "Reconcile passes completed.",
        report.passes,
    );
    metric(
        "lvstun_balancer_ipvs_writes_total",
        "counter",
        "IPVS operations sent to the kernel.",
        report.writes_total,
    );
    metric(
        "lvstun_balancer_ipvs_refused_total",
        "counter",
        "IPVS operations the kernel refused.",
        report.refused_total,
    );
    metric(
        "lvstun_balancer_last_pass_ops",
        "gauge",
        "IPVS operations sent by the last pass (0 when nothing changed).",
        last.map_or(0, |l| l.ops as u64),
    );
    metric(
        "lvstun_balancer_refusals_held",
        "gauge",
        "Refused operations waiting for their back-off.",
        report.refusals.len() as u64,
    );
    metric(
        "lvstun_balancer_services",
        "gauge",
        "IPVS services desired.",
        last.map_or(0, |l| l.services as u64),
    );
    metric(
        "lvstun_balancer_destinations",
        "gauge",
        "IPVS destinations desired.",
        last.map_or(0, |l| l.destinations as u64),
    );
    metric(
        "lvstun_balancer_health_targets",
        "gauge",
        "Health checks scheduled.",
        report.targets as u64,
    );
    metric(
        "lvstun_balancer_health_checks_total",
        "counter",
        "Health checks completed.",
        report.checks_run,
    );
    metric(
        "lvstun_balancer_foreign_deletions_total",
        "counter",
        "IPVS services this balancer had programmed and found deleted by another program (kube-proxy in IPVS mode without the VIP in ipvs.excludeCIDRs), then added again.",
        report.foreign_deletions_total,
    );
    sysctl_metrics(&mut out, report);
    vrrp_metrics(&mut out, vips);
    out
}

/// `lvstun_balancer_sysctl_refused{name}`: 1 while a wanted IPVS sysctl could not be set, 0
/// otherwise. One series per wanted sysctl, always present (so an alert can say `== 1` and
/// an absent series means an old daemon); the label is the sysctl's name from the fixed list,
/// never error text. Why it was refused is in the status entry and the log.
fn sysctl_metrics(out: &mut String, report: &Report) {
    let name = "lvstun_balancer_sysctl_refused";
    let _ = writeln!(
        out,
        "# HELP {name} 1 while the IPVS sysctl could not be set to lvstun's value on this node."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (short, _) in kernel_settings::WANTED {
        let full = kernel_settings::full_name(short);
        let refused = report
            .refused_kernel_settings
            .iter()
            .any(|r| r.name == full);
        let _ = writeln!(out, "{name}{{name=\"{full}\"}} {}", u8::from(refused));
    }
}

/// The number `lvstun_vrrp_state` gives a state (a gauge, so alerts can say `== 2`).
fn state_number(state: VrrpState) -> u8 {
    match state {
        VrrpState::Initialize => 0,
        VrrpState::Backup => 1,
        VrrpState::Master => 2,
        VrrpState::Fault => 3,
    }
}

/// Per VIP: its router's state and state changes. Labels are the VIP and VRID only (bounded by
/// the objects, never by error text).
/// One metric family of [`vrrp_metrics`]: name, type, help, value of a router.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&RouterReport) -> u64,
);

fn vrrp_metrics(out: &mut String, vips: &VipsReport) {
    let families: [Family; 3] = [
        (
            "lvstun_vrrp_state",
            "gauge",
            "VRRP state of the VIP on this node: 0 Initialize, 1 Backup, 2 Master, 3 Fault.",
            |r| u64::from(state_number(r.state)),
        ),
        (
            "lvstun_vrrp_priority",
            "gauge",
            "VRRP priority of this node for the VIP (1 until the node forwards).",
            |r| u64::from(r.priority),
        ),
        (
            "lvstun_vrrp_transitions_total",
            "counter",
            "VRRP state changes of the VIP on this node since the daemon started.",
            |r| r.transitions,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (vrid, router) in &vips.routers {
            for vip in &router.vips {
                let _ = writeln!(
                    out,
                    "{name}{{vip=\"{vip}\",vrid=\"{vrid}\"}} {}",
                    value(router)
                );
            }
        }
    }
    // Per router (a VRID's advertisements are one stream, whatever VIPs it holds) and reason:
    // the receive filter's fixed labels, so the set is bounded.
    let name = "lvstun_vrrp_adverts_dropped_total";
    let _ = writeln!(
        out,
        "# HELP {name} VRRP packets this node's router dropped since it started, by reason (unknown_source: an advertisement for the VRID from a host that is not a peer)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (vrid, router) in &vips.routers {
        for (reason, n) in &router.drops {
            let _ = writeln!(out, "{name}{{vrid=\"{vrid}\",reason=\"{reason}\"}} {n}");
        }
    }
}

async fn healthz(State(ctx): State<Ctx>) -> (StatusCode, String) {
    healthz_answer(
        &lock(&ctx.report),
        ctx.started,
        ctx.stale_after,
        Instant::now(),
    )
}

async fn readyz(State(ctx): State<Ctx>) -> (StatusCode, String) {
    // Lock order everywhere: the loop's report, then the VIPs' (never the reverse).
    readyz_answer(&lock(&ctx.report), &lock_vips(&ctx.vips))
}

async fn metrics(State(ctx): State<Ctx>) -> String {
    // Lock order everywhere: the loop's report, then the VIPs' (never the reverse).
    metrics_answer(&lock(&ctx.report), &lock_vips(&ctx.vips))
}

/// Binds `addr` (so a port in use fails at start) and returns the server to spawn.
pub async fn bind(
    addr: SocketAddr,
    report: SharedReport,
    vips: SharedVips,
    stale_after: Duration,
) -> Result<impl Future<Output = std::io::Result<()>> + Send, Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let ctx = Ctx {
        report,
        vips,
        started: Instant::now(),
        stale_after,
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ctx);
    Ok(async move { axum::serve(listener, app).await })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::run::{PassSummary, Trigger};
    use crate::balancer::vips::StandBy;

    #[test]
    fn answers_follow_the_report() {
        let t0 = Instant::now();
        let mut r = Report::default();
        let stale = Duration::from_secs(90);
        assert_eq!(healthz_answer(&r, t0, stale, t0).0, StatusCode::OK);
        assert_eq!(
            healthz_answer(&r, t0, stale, t0 + Duration::from_secs(91)).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let none = VipsReport::default();
        assert_eq!(readyz_answer(&r, &none).0, StatusCode::SERVICE_UNAVAILABLE);
        r.ready = true;
        r.last_turn = Some(t0 + Duration::from_secs(60));
        r.last = Some(PassSummary {
            trigger: Trigger::Resync,
            read: true,
            ops: 0,
            applied: 0,
            failed: 0,
            held: 0,
            services: 1,
            destinations: 2,
            elapsed: Duration::from_millis(3),
        });
        r.refusals = vec!["add destination x: kernel refused with EINVAL".into()];
        assert_eq!(
            healthz_answer(&r, t0, stale, t0 + Duration::from_secs(91)).0,
            StatusCode::OK
        );
        let (code, body) = readyz_answer(&r, &none);
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.starts_with("ready: 1 services, 2 destinations"),
            "{body}"
        );
        assert!(body.contains("refused: add destination x"), "{body}");
        r.last_error = Some("no answer to dump services in time".into());
        assert_eq!(readyz_answer(&r, &none).0, StatusCode::SERVICE_UNAVAILABLE);
        let mut vips = VipsReport::default();
        vips.routers.insert(
            51,
            RouterReport {
                vips: vec!["192.0.2.100".parse().unwrap()],
                interface: Some("eth0".into()),
                state: VrrpState::Master,
                priority: 200,
                transitions: 2,
                last_transition: None,
                virtual_services: vec![],
                message: None,
                stand_by: None,
                drops: [("unknown_source", 30), ("other_vrid", 2)].into(),
            },
        );
        let m = metrics_answer(&r, &vips);
        assert!(
            m.contains(
                "\nlvstun_vrrp_adverts_dropped_total{vrid=\"51\",reason=\"unknown_source\"} 30\n"
            ),
            "{m}"
        );
        assert!(m.contains("# TYPE lvstun_vrrp_adverts_dropped_total counter\n"));
        assert!(
            m.contains("\nlvstun_vrrp_state{vip=\"192.0.2.100\",vrid=\"51\"} 2\n"),
            "{m}"
        );
        assert!(
            m.contains("\nlvstun_vrrp_transitions_total{vip=\"192.0.2.100\",vrid=\"51\"} 2\n"),
            "{m}"
        );
        assert!(m.contains("# TYPE lvstun_vrrp_transitions_total counter\n"));
        assert!(m.contains("\nlvstun_balancer_last_pass_ops 0\n"), "{m}");
        assert!(m.contains("\nlvstun_balancer_destinations 2\n"), "{m}");
        assert!(m.contains("\nlvstun_balancer_ready 0\n"), "{m}");
        // Nothing refused: every wanted sysctl has its series, at 0.
        assert!(
            m.contains("\nlvstun_balancer_sysctl_refused{name=\"net.ipv4.vs.sloppy_tcp\"} 0\n"),
            "{m}"
        );
        assert!(m.contains(
            "\nlvstun_balancer_sysctl_refused{name=\"net.ipv4.vs.expire_nodest_conn\"} 0\n"
        ));
    }

    #[test]
    fn waiting_for_the_api_server_is_alive_and_not_ready() {
        let t0 = Instant::now();
        let r = Report {
            waiting: Some("the API server (connection refused)".into()),
            ..Report::default()
        };
        // Long past the stale limit: still alive, so that the kubelet does not restart it
        // into a growing back-off.
        let (code, body) = healthz_answer(
            &r,
            t0,
            Duration::from_secs(90),
            t0 + Duration::from_secs(600),
        );
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body.contains("waiting for the API server"), "{body}");
        let (code, body) = readyz_answer(&r, &VipsReport::default());
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("not ready: starting: waiting for the API server (connection refused)"),
            "{body}"
        );
    }

    #[test]
    fn a_refused_sysctl_is_a_gauge_at_one_named_by_the_sysctl() {
        let r = Report {
            refused_kernel_settings: vec![lvstun_crds::v1alpha1::RefusedKernelSetting {
                name: "net.ipv4.vs.sloppy_tcp".into(),
                wanted: 1,
                current: Some(0),
                reason: lvstun_crds::v1alpha1::KernelSettingRefusal::ReadOnly,
            }],
            ..Report::default()
        };
        let m = metrics_answer(&r, &VipsReport::default());
        assert!(
            m.contains("# TYPE lvstun_balancer_sysctl_refused gauge\n"),
            "{m}"
        );
        assert!(
            m.contains("\nlvstun_balancer_sysctl_refused{name=\"net.ipv4.vs.sloppy_tcp\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains(
                "\nlvstun_balancer_sysctl_refused{name=\"net.ipv4.vs.expire_nodest_conn\"} 0\n"
            ),
            "{m}"
        );
        assert_eq!(
            m.matches("lvstun_balancer_sysctl_refused{").count(),
            2,
            "one series per wanted sysctl, no reason label"
        );
    }

    fn router(stand_by: Option<StandBy>) -> RouterReport {
        RouterReport {
            vips: vec!["192.0.2.100".parse().unwrap()],
            interface: Some("eth0".into()),
            state: VrrpState::Backup,
            priority: 1,
            transitions: 1,
            last_transition: None,
            virtual_services: vec![],
            message: None,
            stand_by,
            drops: Default::default(),
        }
    }

    fn programmed() -> Report {
        Report {
            ready: true,
            last: Some(PassSummary {
                trigger: Trigger::Start,
                read: true,
                ops: 4,
                applied: 4,
                failed: 0,
                held: 0,
                services: 1,
                destinations: 2,
                elapsed: Duration::from_millis(3),
            }),
            ..Report::default()
        }
    }

    /// The rolling update's gate: ready only once the table is the desired one and every
    /// router could take the VIP without losing a flow; the body names what is missing.
    #[test]
    fn a_refused_configuration_is_not_ready_and_counted() {
        let mut r = programmed();
        let vips = VipsReport::default();
        assert_eq!(readyz_answer(&r, &vips).0, StatusCode::OK);
        assert!(metrics_answer(&r, &vips).contains("\nlvstun_balancer_config_applied 1\n"));
        r.source_refused = Some("/etc/lvstun/balancer.yaml: document 1 (VirtualService \"www\"): spec.sheduler: unknown field \"spec.sheduler\"".into());
        let (code, body) = readyz_answer(&r, &vips);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("not ready: the configuration's newest version is not applied (the last good one is served): /etc/lvstun/balancer.yaml: document 1 (VirtualService \"www\"): spec.sheduler"),
            "{body}"
        );
        assert!(metrics_answer(&r, &vips).contains("\nlvstun_balancer_config_applied 0\n"));
    }

    #[test]
    fn readiness_waits_for_the_desired_table_and_each_routers_warm_up() {
        let ready = |r: &Report, v: &VipsReport| {
            let (code, body) = readyz_answer(r, v);
            assert_eq!(
                metrics_answer(r, v).contains("\nlvstun_balancer_ready 1\n"),
                code == StatusCode::OK,
                "/metrics and /readyz agree"
            );
            (code == StatusCode::OK, body)
        };
        let mut vips = VipsReport {
            starting: true,
            ..VipsReport::default()
        };
        let mut r = Report::default();
        let (ok, body) = ready(&r, &vips);
        assert!(!ok);
        assert!(
            body.contains("not ready: starting: no pass has programmed")
                && body.contains("not ready: starting: the VRRP routers are not started yet"),
            "{body}"
        );

        // The table is programmed, but one operation failed for a passing reason.
        r = programmed();
        r.retrying = 1;
        vips.starting = false;
        let (ok, body) = ready(&r, &vips);
        assert!(!ok);
        assert!(
            body.contains(
                "not ready: the kernel's IPVS table is not the desired one yet: 1 operations failed"
            ),
            "{body}"
        );

        // A lasting refusal is reported, not waited for.
        r.retrying = 0;
        r.refusals = vec!["add destination x: kernel refused with EINVAL".into()];
        assert!(ready(&r, &vips).0);

        // A router still settling its health checks, another waiting for sync: both named.
        vips.routers.insert(
            51,
            router(Some(StandBy::Settling {
                left: Duration::from_secs(4),
            })),
        );
        vips.routers.insert(
            52,
            router(Some(StandBy::Syncing {
                left: Some(Duration::from_secs(2)),
            })),
        );
        let (ok, body) = ready(&r, &vips);
        assert!(!ok);
        assert!(
            body.contains("not ready: VRID 51: health checks settling (4 s left")
                && body.contains("not ready: VRID 52: IPVS backup sync daemon receiving the Master's connections (2 s left)"),
            "{body}"
        );

        // Warmed up; one router stands by because this node forwards nothing: ready (a
        // rolling update must not hang on unreachable real servers), and said so.
        vips.routers.insert(51, router(None));
        vips.routers
            .insert(52, router(Some(StandBy::NotForwarding)));
        let (ok, body) = ready(&r, &vips);
        assert!(ok, "{body}");
        assert!(
            body.contains(
                "standing by: VRID 52: no destination in rotation on this node (priority 1)"
            ),
            "{body}"
        );

        // A failed read makes it unready whatever else holds.
        r.last_error = Some("no answer to dump services in time".into());
        let (ok, body) = ready(&r, &vips);
        assert!(!ok);
        assert!(
            body.contains("not ready: the kernel's IPVS table could not be read"),
            "{body}"
        );
    }
}
