//! One reconcile of each kind, in phases: dereference (read the caches) → validate (pure) →
//! build or fold (pure) → compare → apply (write only what changed) → report (Events, metrics).
//!
//! - [`virtual_service`]: the verdict (conflict, invalid spec), the selected nodes and real
//!   servers, and the folded status of one VirtualService.
//! - [`real_server`]: the `Healthy` condition of one RealServer.
//! - [`daemonsets`]: the two node DaemonSets, from the operator's configuration alone (they are
//!   shared by all CRs and never change with them, ADR 0007).
//!
//! I/O: reads the reflector caches in [`Context`], writes through `apply`, publishes Events.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use lvstun_crds::v1alpha1::{RealServer, RealServerStatus, VirtualService, VirtualServiceStatus};

use crate::apply;
use crate::build::{self, HASH_ANNOTATION, Role};
use crate::context::{Context, RESYNC, RsInputs};
use crate::error::Error;
use crate::metrics::{DaemonSetLabels, KindLabels, VsLabels};
use crate::status::{self, BalancerNodes, RsView, VS_CONDITIONS, VsView, WebNode};
use crate::validate::{self, Verdict};
use lvstun_rules::ObjectKey;

/// The clock, in whole seconds: the API stores condition times with second precision, so a
/// finer time would make the status just written never compare equal to the one read back.
fn now() -> Time {
    let secs = Timestamp::now().as_second();
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The operator-owned part of a VirtualService status (what the operator writes).
pub fn owned_vs_status(status: Option<&VirtualServiceStatus>) -> VirtualServiceStatus {
    let mut s = status.cloned().unwrap_or_default();
    s.balancers.clear();
    s.conditions
        .retain(|c| VS_CONDITIONS.contains(&c.type_.as_str()));
    s
}

/// The operator-owned part of a RealServer status: `Healthy`, and the `TunnelReady` it writes
/// for a host outside the cluster (never the web daemon's, see `status::operator_owned`).
pub fn owned_rs_status(status: Option<&RealServerStatus>) -> RealServerStatus {
    RealServerStatus {
        observed_generation: None,
        conditions: status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .filter(|c| status::operator_owned(c))
            .cloned()
            .collect(),
        checks: Vec::new(),
    }
}

/// The previous operator-owned status: what this process last wrote, until the cache shows it
/// (then the cache, which also reveals anyone else's edits). Without this, a reconcile that runs
/// before the watch delivers the operator's own write would write again and repeat its Events.
fn previous_vs(ctx: &Context, vs: &VirtualService) -> VirtualServiceStatus {
    let key = ObjectKey::of(vs.meta());
    let cached = owned_vs_status(vs.status.as_ref());
    let mut memo = ctx.memo();
    match memo.vs_written.get(&key) {
        Some(written) if *written != cached => written.clone(),
        Some(_) => {
            memo.vs_written.remove(&key);
            cached
        }
        None => cached,
    }
}

fn previous_rs(ctx: &Context, rs: &RealServer) -> RealServerStatus {
    let key = ObjectKey::of(rs.meta());
    let cached = owned_rs_status(rs.status.as_ref());
    let mut memo = ctx.memo();
    match memo.rs_written.get(&key) {
        Some(written) if *written != cached => written.clone(),
        Some(_) => {
            memo.rs_written.remove(&key);
            cached
        }
        None => cached,
    }
}

/// Reconcile one VirtualService's status.
pub async fn virtual_service(vs: &Arc<VirtualService>, ctx: &Context) -> Result<Action, Error> {
    ctx.stores.ready().await?;
    if vs.meta().deletion_timestamp.is_some() {
        // No finalizer of ours: the daemons withdraw it when it leaves their watch (see ADR 0001).
        return Ok(Action::await_change());
    }
    let key = ObjectKey::of(vs.as_ref().meta());
    let namespace = key.namespace.clone();

    // Dereference + validate.
    let peers = ctx
        .stores
        .virtual_services
        .state_filter(|o| o.spec.vip == vs.spec.vip);
    let verdict = validate::verdict_of(vs, peers.iter().map(AsRef::as_ref));
    let valid = !matches!(verdict, Verdict::Invalid(_));
    let balancer_nodes = if valid {
        ctx.stores
            .balancer_nodes(vs, &ctx.config.balancer.node_selector)
    } else {
        BalancerNodes::default()
    };
    let real_servers = if valid {
        ctx.stores.real_servers.state_filter(|r| {
            r.metadata.namespace.as_deref() == Some(namespace.as_str())
                && r.metadata.deletion_timestamp.is_none()
                && lvstun_rules::selects(&vs.spec.real_server_selector, r.labels())
        })
    } else {
        Vec::new()
    };
    let mut selected: Vec<&RealServer> = real_servers.iter().map(AsRef::as_ref).collect();
    selected.sort_by_key(|r| r.name_any());

    // Fold + compare.
    let previous = previous_vs(ctx, vs);
    let now = now();
    let daemon_label = build::label_arguments(&ctx.config.balancer.node_selector);
    let fold = status::fold_virtual_service(&VsView {
        vs,
        verdict: &verdict,
        balancer_nodes: &balancer_nodes,
        daemon_label: &daemon_label,
        real_servers: &selected,
        previous: Some(&previous),
        now: now.clone(),
    });

    // Apply, then report what was persisted.
    if fold.changed {
        apply::virtual_service_status(&ctx.client, vs, &fold.status).await?;
        ctx.memo()
            .vs_written
            .insert(key.clone(), fold.status.clone());
        ctx.metrics
            .status_writes
            .get_or_create(&KindLabels {
                kind: "VirtualService",
            })
            .inc();
        let regarding = vs.object_ref(&());
        for n in &fold.notices {
            ctx.publish(&regarding, n).await;
        }
    }
    // A balancer's refused kernel setting: one Event per node when it first shows (the
    // condition carries it as long as it lasts).
    let announced: BTreeSet<(String, String)> =
        fold.kernel_refusals.iter().map(|r| r.key()).collect();
    let before = ctx
        .memo()
        .kernel_announced
        .insert(key.clone(), announced)
        .unwrap_or_default();
    let kernel_notices = status::kernel_notices(&before, &fold.kernel_refusals);
    if !kernel_notices.is_empty() {
        let regarding = vs.object_ref(&());
        for n in &kernel_notices {
            ctx.publish(&regarding, n).await;
        }
    }
    // A balancer whose services another program deleted: one Event per node when its report
    // first shows (the condition carries it as long as the balancer reports it).
    let nodes: BTreeSet<String> = fold
        .external_deletions
        .iter()
        .map(|d| d.node.clone())
        .collect();
    let before = ctx
        .memo()
        .deletions_announced
        .insert(key.clone(), nodes)
        .unwrap_or_default();
    let deletion_notices =
        status::external_deletion_notices(&vs.spec.vip, &before, &fold.external_deletions);
    if !deletion_notices.is_empty() {
        let regarding = vs.object_ref(&());
        for n in &deletion_notices {
            ctx.publish(&regarding, n).await;
        }
    }
    // Selected nodes without the balancer label: one Event when a node first shows (the
    // condition carries them as long as they last).
    let before = ctx
        .memo()
        .unlabelled_announced
        .insert(key.clone(), fold.unlabelled.clone())
        .unwrap_or_default();
    if let Some(n) = status::unlabelled_notice(&before, &fold.unlabelled, &daemon_label) {
        ctx.publish(&vs.object_ref(&()), &n).await;
    }
    let labels = VsLabels {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    };
    if fold.master_changed && fold.changed {
        ctx.metrics.master_changes.get_or_create(&labels).inc();
    }
    ctx.metrics
        .healthy_real_servers
        .get_or_create(&labels)
        .set(i64::from(fold.status.healthy_real_servers.unwrap_or(0)));
    ctx.metrics
        .total_real_servers
        .get_or_create(&labels)
        .set(i64::from(fold.status.total_real_servers.unwrap_or(0)));

    // The RealServers whose `Healthy` depends on this VirtualService, when what they read of it
    // changed: the ones selected now and the ones selected before.
    let inputs = RsInputs {
        owner: verdict == Verdict::Owner,
        active: fold.status.active_balancer.clone(),
        selected: selected.iter().map(|r| ObjectKey::of(r.meta())).collect(),
        excluded: fold
            .status
            .excluded_real_servers
            .iter()
            .map(|e| ObjectKey {
                namespace: namespace.clone(),
                name: e.name.clone(),
            })
            .collect(),
    };
    let before = ctx.memo().rs_inputs.insert(key, inputs.clone());
    match before {
        Some(b) if b == inputs => {}
        Some(b) => ctx.trigger_real_servers(b.selected.union(&inputs.selected)),
        None => ctx.trigger_real_servers(inputs.selected.iter()),
    }
    // An overlap of Masters turns into a split brain at `recheck` unless something changes first.
    let next = fold
        .recheck
        .and_then(|at| at.duration_since(now.0).try_into().ok())
        .map(|d: std::time::Duration| (d + std::time::Duration::from_secs(1)).min(RESYNC))
        .unwrap_or(RESYNC);
    Ok(Action::requeue(next))
}

/// Reconcile one RealServer's `Healthy` condition.
pub async fn real_server(rs: &Arc<RealServer>, ctx: &Context) -> Result<Action, Error> {
    ctx.stores.ready().await?;
    if rs.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = rs.namespace().unwrap_or_default();
    let selecting = ctx.stores.virtual_services.state_filter(|v| {
        v.metadata.namespace.as_deref() == Some(namespace.as_str())
            && lvstun_rules::selects(&v.spec.real_server_selector, rs.labels())
    });
    let mut selected_by = Vec::new();
    let mut excluded_by = Vec::new();
    let now = now();
    for vs in &selecting {
        let peers = ctx
            .stores
            .virtual_services
            .state_filter(|o| o.spec.vip == vs.spec.vip);
        // A conflicting or invalid VirtualService is programmed nowhere; its view does not count.
        if validate::verdict_of(vs, peers.iter().map(AsRef::as_ref)) != Verdict::Owner {
            continue;
        }
        let nodes = ctx
            .stores
            .balancer_nodes(vs, &ctx.config.balancer.node_selector);
        let active = status::election(vs, &nodes.live, &now)
            .holder()
            .map(String::from);
        if !status::real_servers_on_balancers(&[rs.as_ref()], &nodes).is_empty() {
            excluded_by.push(ObjectKey::of(vs.as_ref().meta()));
        }
        selected_by.push((ObjectKey::of(vs.as_ref().meta()), active));
    }
    selected_by.sort();
    excluded_by.sort();
    let web_node = match rs.spec.node_name.as_deref() {
        Some(node) => ctx.stores.web_node(node, &ctx.config.web.node_selector),
        None => WebNode::Runs,
    };
    let previous = previous_rs(ctx, rs);
    let fold = status::fold_real_server(&RsView {
        rs,
        selected_by: &selected_by,
        excluded_by: &excluded_by,
        web_node: &web_node,
        previous: Some(&previous),
        now,
    });
    if fold.changed {
        apply::real_server_status(&ctx.client, rs, &fold.status).await?;
        ctx.memo()
            .rs_written
            .insert(ObjectKey::of(rs.as_ref().meta()), fold.status.clone());
        ctx.metrics
            .status_writes
            .get_or_create(&KindLabels { kind: "RealServer" })
            .inc();
        let regarding = rs.object_ref(&());
        for n in &fold.notices {
            ctx.publish(&regarding, n).await;
        }
    }
    Ok(Action::requeue(RESYNC))
}

/// Reconcile the node DaemonSets: both exist, as the operator's configuration says, whatever
/// the CRs are (ADR 0007); apply one only when it differs from what was last applied.
pub async fn daemonsets(ctx: &Context) -> Result<(), Error> {
    // The comparison reads the DaemonSet cache, which must be complete: a partial one would
    // re-apply (harmless) or miss a DaemonSet under an old name (not deleted until the next pass).
    ctx.stores.ready().await?;
    let desired = build::daemonsets(&ctx.config)?;
    let namespace = ctx.config.namespace.clone();
    for (role, ds) in desired {
        let name = ctx.config.role(role).daemonset_name.clone();
        let current = ctx
            .stores
            .daemonsets
            .get(&ObjectRef::new(&name).within(&namespace));
        let hash = ds
            .annotations()
            .get(HASH_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let up_to_date = current.as_ref().is_some_and(|c| {
            c.annotations().get(HASH_ANNOTATION) == Some(&hash)
                && ctx.memo().applied.get(&name) == Some(&(hash.clone(), c.metadata.generation))
        });
        if up_to_date {
            continue;
        }
        let stored = apply::daemonset(&ctx.client, &ds).await?;
        ctx.memo()
            .applied
            .insert(name.clone(), (hash, stored.metadata.generation));
        count(ctx, role, "apply");
        tracing::info!(
            role = role.as_str(),
            daemonset = %name,
            generation = stored.metadata.generation,
            "applied DaemonSet"
        );
    }
    // This installation's DaemonSets under a name it no longer uses (after a rename).
    let names: BTreeSet<String> = Role::ALL
        .iter()
        .map(|r| ctx.config.role(*r).daemonset_name.clone())
        .collect();
    for ds in ctx.stores.daemonsets.state() {
        let name = ds.name_any();
        if !names.contains(&name) {
            apply::delete_daemonset(&ctx.client, &namespace, &name).await?;
            tracing::info!(daemonset = %name, "deleted a DaemonSet of this installation that is no longer used");
        }
    }
    Ok(())
}

fn count(ctx: &Context, role: Role, action: &'static str) {
    ctx.metrics
        .daemonset_changes
        .get_or_create(&DaemonSetLabels {
            role: role.as_str(),
            action,
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{check, node_rs, report, rs, tunnel, www};
    use lvstun_crds::v1alpha1::VrrpState;

    #[test]
    fn owned_parts_leave_out_the_daemons_fields() {
        let mut v = www();
        report(&mut v, "lb1", VrrpState::Master);
        let s = owned_vs_status(v.status.as_ref());
        assert!(s.balancers.is_empty());
        let mut r = node_rs("web1", "198.51.100.10");
        check(&mut r, "lb1", true);
        tunnel(&mut r, true);
        let s = owned_rs_status(r.status.as_ref());
        assert!(s.checks.is_empty());
        assert!(
            s.conditions.is_empty(),
            "the web daemon's TunnelReady is not the operator's"
        );
    }

    #[test]
    fn the_operators_outside_cluster_tunnel_ready_is_its_own() {
        let r = rs("web1", "198.51.100.10");
        let fold = status::fold_real_server(&RsView {
            rs: &r,
            selected_by: &[],
            excluded_by: &[],
            web_node: &WebNode::Runs,
            previous: None,
            now: now(),
        });
        let mut written = r.clone();
        written.status = Some(fold.status.clone());
        assert_eq!(
            owned_rs_status(written.status.as_ref()),
            fold.status,
            "read back, what the operator wrote is its previous status: no rewrite"
        );
    }

    #[test]
    fn now_has_whole_seconds() {
        assert_eq!(now().0.subsec_nanosecond(), 0);
    }
}
