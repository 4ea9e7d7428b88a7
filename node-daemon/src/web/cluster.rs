//! The web daemon in a cluster: the loop that turns the API's objects into this node's host
//! configuration and its `TunnelReady` reports. Does I/O (API watch and writes, the kernel
//! through `apply`); every decision is made by the pure parts (`desired::served`, `plan`,
//! `status`, `report::plan`).
//!
//! - The objects come from `source::cluster::start_web`: whole snapshots, debounced, the last
//!   good one kept while the API server is away (the host keeps its configuration then).
//! - A snapshot that changes what this node serves (VIPs, RealServers, problems) reconciles at
//!   once; otherwise the host is reconciled every `--interval` to repair drift, as standalone.
//! - After each reconcile and each snapshot, `report` writes the conditions that differ; a
//!   write that failed or was held back is retried every second.
//! - At SIGTERM, with `--daemonset`, the exit decision ([`crate::exit`], ADR 0008) says whether
//!   the host keeps its configuration (a restart) or is torn down (the DaemonSet is going, or no
//!   longer selects this node).
//! - `--dry-run` reads the kernel and plans, logs what it would do, never writes to it; the
//!   conditions are still written, their message beginning with "dry run" (as the balancer's
//!   dry run marks its status entries), which is how this path is tested on hosts without ipip.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::PatchParams;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use super::desired::{Identity, Served, served};
use super::status::Readiness;
use super::{Args, health, log_outcome, reconcile_with, report, state, stop};
use crate::error::Error;
use crate::exit;
use crate::net::Host;
use crate::source::config::Objects;
use crate::source::{Snapshot, cluster};
use lvstun_rules::ObjectKey as ObjectRef;

/// What leads every reported message in a dry run.
const DRY_RUN_NOTE: &str = "dry run: nothing is changed on this node";

/// What this node serves according to `snapshot`.
pub fn served_by_node(snapshot: &Snapshot, node: &str) -> Served {
    let objects = Objects {
        virtual_services: snapshot.virtual_services.clone(),
        real_servers: snapshot.real_servers.clone(),
    };
    served(&objects, &Identity::Node(node.to_owned()))
}

/// Now, in whole seconds (what `metav1.Time` carries, so a read-back compares equal).
fn now_time() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The status writer of one node.
struct Reporter {
    client: Client,
    params: PatchParams,
    manager: String,
    note: Option<&'static str>,
    /// The last write per RealServer, and when (see `report::due`).
    recent: BTreeMap<ObjectRef, (Option<Condition>, tokio::time::Instant)>,
}

impl Reporter {
    /// Writes the due conditions; returns whether some remain to be written (failed, or held
    /// back until the watch catches up).
    async fn report(&mut self, snapshot: &Snapshot, served: &Served, verdict: &Readiness) -> bool {
        let planned = report::plan(
            &self.manager,
            &served.real_servers,
            &snapshot.real_servers,
            verdict,
            self.note,
            &now_time(),
        );
        let now = tokio::time::Instant::now();
        let total = planned.len();
        let due = report::due_writes(planned, &self.recent, now);
        let mut pending = due.len() < total;
        for w in due {
            match report::write(&self.client, &self.params, &w).await {
                Ok(()) => {
                    match &w.condition {
                        Some(c) => info!(
                            real_server = %w.real_server,
                            status = c.status,
                            reason = c.reason,
                            message = c.message,
                            "TunnelReady written"
                        ),
                        None => info!(
                            real_server = %w.real_server,
                            "TunnelReady withdrawn: the RealServer no longer names this node"
                        ),
                    }
                    self.recent.insert(w.real_server, (w.condition, now));
                }
                // Deleted meanwhile: nothing to report on.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    warn!(real_server = %w.real_server, "TunnelReady not written, retrying: {e}");
                    pending = true;
                }
            }
        }
        pending
    }
}

fn describe(served: &Served) -> (String, String, String) {
    let vips: Vec<String> = served
        .vips
        .iter()
        .map(|(vip, services)| {
            let s: Vec<&str> = services.iter().map(String::as_str).collect();
            format!("{vip} ({})", s.join(", "))
        })
        .collect();
    let problems: Vec<String> = served.problems.iter().map(ToString::to_string).collect();
    (
        served.real_servers.join(", "),
        vips.join("; "),
        problems.join("; "),
    )
}

/// Runs the web daemon for `node` against the API server (`KUBECONFIG` or the in-cluster
/// service account).
pub(super) async fn daemon(args: &Args, node: String) -> Result<ExitCode, Error> {
    let shared = super::serve_health(args).await?;
    let client = Client::try_default().await.map_err(|e| Error::Api {
        what: "connect to the API server".into(),
        detail: e.to_string(),
    })?;
    let exit_check = exit::check(
        Some(&client),
        args.daemonset.as_deref(),
        std::env::var("POD_NAMESPACE").ok(),
        &node,
    )?;
    let (mut source, _source_task) = cluster::start_web(client.clone()).await?;
    let mut host = Host::open(&args.nft)?;
    let mut st = state::load_or_recover(&args.state_dir)?;
    let manager = report::field_manager(&node);
    let mut reporter = Reporter {
        client,
        params: PatchParams::apply(&manager).force(),
        manager: manager.clone(),
        note: args.dry_run.then_some(DRY_RUN_NOTE),
        recent: BTreeMap::new(),
    };
    if args.dry_run {
        info!("dry run: the kernel is read, never written; operations are only logged");
    }
    let mut snapshot: Arc<Snapshot> = source.borrow_and_update().clone();
    let mut served = served_by_node(&snapshot, &node);
    let mut verdict: Option<Readiness> = None;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_full = Instant::now();
    let mut report_pending = true;
    let mut source_open = true;
    let (rs, vips, problems) = describe(&served);
    info!(
        node,
        field_manager = manager,
        dry_run = args.dry_run,
        state = %args.state_dir.display(),
        vip_device = args.options.vip_device.name(),
        real_servers = rs,
        vips,
        problems,
        "web daemon started in cluster mode"
    );
    loop {
        if Instant::now() >= next_full {
            match reconcile_with(&mut host, args, &served, &mut st, args.dry_run).await {
                Ok(out) => {
                    log_outcome(&out, args.dry_run);
                    health::set_readiness(&shared, out.readiness.clone());
                    verdict = Some(out.readiness);
                    report_pending = true;
                }
                Err(e) => error!("reconcile failed: {e}"),
            }
            next_full = Instant::now() + args.interval;
        }
        if report_pending && let Some(v) = &verdict {
            report_pending = reporter.report(&snapshot, &served, v).await;
        }
        health::turn(&shared);
        tokio::select! {
            _ = term.recv() => {
                info!("SIGTERM");
                break;
            }
            _ = int.recv() => {
                info!("SIGINT");
                break;
            }
            changed = source.changed(), if source_open => {
                if changed.is_err() {
                    warn!("the API watch ended; keeping the last objects");
                    source_open = false;
                    continue;
                }
                snapshot = source.borrow_and_update().clone();
                let new = served_by_node(&snapshot, &node);
                if new != served {
                    let (rs, vips, problems) = describe(&new);
                    info!(real_servers = rs, vips, problems, "desired state changed");
                    served = new;
                    next_full = Instant::now();
                }
                report_pending = true;
            }
            _ = tick.tick() => {}
        }
    }
    let decision = exit::at_exit(exit_check.as_ref(), "web", super::MANUAL_CLEANUP).await;
    stop(&mut host, args, &mut st, decision.teardown()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Scope;
    use crate::source::config::parse;
    use std::net::Ipv4Addr;

    /// Two RealServers on node-a (two namespaces), one on node-b, one outside the cluster; a
    /// VirtualService per namespace, one given up by the operator (Conflict=True), one being
    /// deleted.
    const OBJECTS: &str = r#"
apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata: {name: www, namespace: shop}
spec:
  vip: 192.0.2.100
  ports: [{port: 80}]
  realServerSelector: {matchLabels: {app: www}}
  balancers: {nodeSelector: {}, virtualRouterID: 51}
---
apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata: {name: api, namespace: blog}
spec:
  vip: 192.0.2.101
  ports: [{port: 443}]
  realServerSelector: {}
  balancers: {nodeSelector: {}, virtualRouterID: 52}
---
apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata: {name: www-copy, namespace: shop}
spec:
  vip: 192.0.2.102
  ports: [{port: 80}]
  realServerSelector: {matchLabels: {app: www}}
  balancers: {nodeSelector: {}, virtualRouterID: 53}
status:
  conditions:
  - {type: Conflict, status: 'True', reason: Conflict, message: 'VIP owned by shop/www', lastTransitionTime: '2026-11-25T00:00:00Z'}
---
apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata: {name: leaving, namespace: shop, deletionTimestamp: '2026-11-25T00:00:00Z', finalizers: [x]}
spec:
  vip: 192.0.2.103
  ports: [{port: 80}]
  realServerSelector: {}
  balancers: {nodeSelector: {}, virtualRouterID: 54}
---
apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata: {name: web1, namespace: shop, labels: {app: www}}
spec: {address: 198.51.100.10, nodeName: node-a}
---
apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata: {name: web1, namespace: blog}
spec: {address: 198.51.100.10, nodeName: node-a}
---
apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata: {name: web2, namespace: shop, labels: {app: www}}
spec: {address: 198.51.100.130, nodeName: node-b}
---
apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata: {name: outside, namespace: shop, labels: {app: www}}
spec: {address: 198.51.100.200}
"#;

    fn snapshot() -> Snapshot {
        let o = parse(OBJECTS).unwrap();
        Snapshot {
            refused: None,
            virtual_services: o.virtual_services,
            real_servers: o.real_servers,
            scope: Scope::All,
            peers: Default::default(),
        }
    }

    #[test]
    fn a_node_serves_every_real_server_naming_it_and_their_virtual_services() {
        let a = served_by_node(&snapshot(), "node-a");
        assert_eq!(a.real_servers, vec!["blog/web1", "shop/web1"]);
        assert_eq!(
            a.vips.keys().copied().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101)],
            "not the conflicting copy, not the one being deleted"
        );
        assert_eq!(a.vips[&Ipv4Addr::new(192, 0, 2, 100)].len(), 1);
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        assert_eq!(
            a.addresses.iter().copied().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(198, 51, 100, 10)]
        );

        let b = served_by_node(&snapshot(), "node-b");
        assert_eq!(b.real_servers, vec!["shop/web2"]);
        assert_eq!(
            b.vips.keys().copied().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(192, 0, 2, 100)]
        );

        // A node no RealServer names: nothing to hold (the daemon undoes what it did), and
        // nothing wrong either: the web DaemonSet runs on every labelled node (ADR 0007).
        let c = served_by_node(&snapshot(), "node-c");
        assert!(c.vips.is_empty() && c.real_servers.is_empty());
        assert!(c.problems.is_empty(), "{:?}", c.problems);
    }

    #[test]
    fn a_vip_edit_changes_what_the_node_serves() {
        let before = served_by_node(&snapshot(), "node-b");
        let mut s = snapshot();
        s.virtual_services[0].spec.vip = "192.0.2.200".into();
        let after = served_by_node(&s, "node-b");
        assert_ne!(before, after, "the loop reconciles at once on this");
        assert_eq!(
            after.vips.keys().copied().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(192, 0, 2, 200)]
        );
    }
}
