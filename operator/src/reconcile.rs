//! One reconcile of each kind, in phases, each a function of its own: dereference (read the
//! caches) → validate (pure) → build (the fold, pure, which also compares with the previous
//! status) → pace (a VirtualService's changed status waits while its inputs still change, so a
//! burst is written once, `pace`) → apply (write only what changed) → status (Events announced once, metrics, the
//! RealServers to look at again, when to look again).
//!
//! - [`virtual_service`]: the verdict (conflict, invalid spec), the selected nodes and real
//!   servers, and the folded status of one VirtualService.
//! - [`real_server`]: the `Healthy` condition of one RealServer.
//! - [`daemonsets`]: the two node DaemonSets, from the operator's configuration alone (they are
//!   shared by all CRs and never change with them, ADR 0007).
//!
//! I/O: reads the reflector caches in [`Context`], writes through `apply`, publishes Events.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

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
use crate::pace::{self, Write};
use crate::status::{self, BalancerNodes, RsView, VsFold, VsView, WebNode};
use crate::validate::{self, PoolCheck, Verdict};
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
    s.conditions.retain(status::is_vs_condition);
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
    let key = ObjectKey::of(&vs.metadata);
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
    let key = ObjectKey::of(&rs.metadata);
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

/// What a VirtualService's reconcile reads of the caches besides the object itself.
struct VsWorld {
    /// The nodes its balancer selector selects, and which of them count; empty when invalid.
    balancer_nodes: BalancerNodes,
    /// The RealServers it selects, by name; none when invalid.
    real_servers: Vec<Arc<RealServer>>,
    /// The operator-owned status it had ([`previous_vs`]).
    previous: VirtualServiceStatus,
}

/// Reconcile one VirtualService's status: dereference → validate → build → apply → status.
pub async fn virtual_service(vs: &Arc<VirtualService>, ctx: &Context) -> Result<Action, Error> {
    ctx.stores.ready().await?;
    if vs.meta().deletion_timestamp.is_some() {
        // No finalizer of ours: the daemons withdraw it when it leaves their watch (see ADR 0001).
        return Ok(Action::await_change());
    }
    let verdict = verdict(ctx, vs);
    let world = dereference(ctx, vs, &verdict);
    let daemon_label = build::label_arguments(&ctx.config.balancer.node_selector);
    let now = now();
    let pool = ctx.pool_check(vs);
    let fold = build_vs(vs, &verdict, &pool, &world, &daemon_label, now.clone());
    if let Some(wait) = hold(ctx, vs, &fold) {
        return Ok(Action::requeue(wait));
    }
    apply_vs(ctx, vs, &fold).await?;
    Ok(status_vs(ctx, vs, &verdict, &world, &fold, &daemon_label, &now).await)
}

/// Dereference and validate: the claim verdict among the VirtualServices on the same VIP, then,
/// for an owner, the VRID verdict among the owners on the same VRID with the balancer nodes
/// each runs on ([`validate::vrid_verdict`]).
fn verdict(ctx: &Context, vs: &VirtualService) -> Verdict {
    // An address the cluster already uses is never a VIP, whoever else asks for it.
    let kubernetes_ip = ctx.kubernetes_ip();
    if let Some(used) = ctx
        .stores
        .address_use(&vs.spec.vip, kubernetes_ip.as_deref())
    {
        return Verdict::AddressInUse(used);
    }
    let peers = vip_peers(ctx, vs);
    let verdict = validate::verdict_of(vs, peers.iter().map(AsRef::as_ref));
    if verdict != Verdict::Owner {
        return verdict;
    }
    let vrid = vs.spec.balancers.virtual_router_id;
    let me = ObjectKey::of(&vs.metadata);
    let others: Vec<(Arc<VirtualService>, BTreeSet<String>)> = ctx
        .stores
        .virtual_services
        .state_filter(|o| {
            o.spec.balancers.virtual_router_id == vrid && ObjectKey::of(&o.metadata) != me
        })
        .into_iter()
        .filter(|o| {
            if ctx
                .stores
                .address_use(&o.spec.vip, kubernetes_ip.as_deref())
                .is_some()
            {
                return false;
            }
            let peers = vip_peers(ctx, o);
            validate::verdict_of(o, peers.iter().map(AsRef::as_ref)) == Verdict::Owner
        })
        .map(|o| {
            let nodes = router_nodes(ctx, &o);
            (o, nodes)
        })
        .collect();
    let nodes = router_nodes(ctx, vs);
    validate::vrid_verdict(vs, &nodes, others.iter().map(|(o, n)| (o.as_ref(), n)))
        .unwrap_or(verdict)
}

/// The nodes where a VirtualService's VRRP router runs: those it selects that run a balancer
/// daemon.
fn router_nodes(ctx: &Context, vs: &VirtualService) -> BTreeSet<String> {
    let nodes = ctx
        .stores
        .balancer_nodes(vs, &ctx.config.balancer.node_selector);
    nodes
        .selected
        .difference(&nodes.unlabelled)
        .cloned()
        .collect()
}

/// Dereference, first step: the VirtualServices on the same VIP, which the verdict needs.
fn vip_peers(ctx: &Context, vs: &VirtualService) -> Vec<Arc<VirtualService>> {
    ctx.stores
        .virtual_services
        .state_filter(|o| o.spec.vip == vs.spec.vip)
}

/// Dereference: what the fold reads of the caches. A VirtualService the verdict finds invalid
/// selects nothing, so nothing more is read for it.
fn dereference(ctx: &Context, vs: &VirtualService, verdict: &Verdict) -> VsWorld {
    let valid = !matches!(verdict, Verdict::Invalid(_));
    let namespace = vs.metadata.namespace.as_deref().unwrap_or_default();
    let balancer_nodes = if valid {
        ctx.stores
            .balancer_nodes(vs, &ctx.config.balancer.node_selector)
    } else {
        BalancerNodes::default()
    };
    let mut real_servers = if valid {
        ctx.stores.real_servers.state_filter(|r| {
            r.metadata.namespace.as_deref() == Some(namespace)
                && r.metadata.deletion_timestamp.is_none()
                && lvstun_rules::selects(&vs.spec.real_server_selector, r.labels())
        })
    } else {
        Vec::new()
    };
    real_servers.sort_by_key(|r| r.name_any());
    VsWorld {
        balancer_nodes,
        real_servers,
        previous: previous_vs(ctx, vs),
    }
}

/// Build (pure): the status the operator wants, whether it changed, and what goes with it.
fn build_vs(
    vs: &VirtualService,
    verdict: &Verdict,
    pool: &PoolCheck,
    world: &VsWorld,
    daemon_label: &str,
    now: Time,
) -> VsFold {
    let selected: Vec<&RealServer> = world.real_servers.iter().map(AsRef::as_ref).collect();
    status::fold_virtual_service(&VsView {
        vs,
        verdict,
        pool,
        balancer_nodes: &world.balancer_nodes,
        daemon_label,
        real_servers: &selected,
        previous: Some(&world.previous),
        now,
    })
}

/// Pace: while the inputs of a changed status are still changing, how long to wait before
/// looking again (and writing once); `None` when the reconcile goes on (see `pace`).
fn hold(ctx: &Context, vs: &VirtualService, fold: &VsFold) -> Option<std::time::Duration> {
    let key = ObjectKey::of(&vs.metadata);
    let mut memo = ctx.memo();
    let unsettled = memo.vs_unsettled.get(&key).copied();
    match pace::decide(fold.changed, unsettled, Instant::now()) {
        Write::After(wait) => Some(wait),
        Write::Now | Write::Nothing => {
            memo.vs_unsettled.remove(&key);
            None
        }
    }
}

/// Apply: write the status only when it changed, remember it until the cache shows it, and
/// publish the Events of the transitions it persisted.
async fn apply_vs(ctx: &Context, vs: &VirtualService, fold: &VsFold) -> Result<(), Error> {
    if !fold.changed {
        return Ok(());
    }
    ctx.term.check()?;
    if apply::virtual_service_status(&ctx.client, vs, &fold.status)
        .await?
        .is_none()
    {
        tracing::debug!(object = %ObjectKey::of(&vs.metadata), "deleted before its status was written");
        return Ok(());
    }
    ctx.memo()
        .vs_written
        .insert(ObjectKey::of(&vs.metadata), fold.status.clone());
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
    Ok(())
}

/// Status, around the write: the Events announced once per cause, the gauges, the RealServers
/// whose `Healthy` reads this VirtualService, and when to look again.
async fn status_vs(
    ctx: &Context,
    vs: &VirtualService,
    verdict: &Verdict,
    world: &VsWorld,
    fold: &VsFold,
    daemon_label: &str,
    now: &Time,
) -> Action {
    let key = ObjectKey::of(&vs.metadata);
    announce(ctx, vs, &key, fold, daemon_label).await;
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
    let inputs = rs_inputs(&key, verdict, world, fold);
    let before = ctx.memo().rs_inputs.insert(key, inputs.clone());
    match before {
        Some(b) if b == inputs => {}
        Some(b) => ctx.trigger_real_servers(b.selected.union(&inputs.selected)),
        None => ctx.trigger_real_servers(inputs.selected.iter()),
    }
    Action::requeue(next_look(fold, now))
}

/// The Events announced once per cause while it lasts (the conditions carry it meanwhile): a
/// balancer's refused kernel setting, a balancer whose services another program deleted (one
/// per node when it first shows), selected nodes without the balancer label (when a node first
/// shows).
async fn announce(
    ctx: &Context,
    vs: &VirtualService,
    key: &ObjectKey,
    fold: &VsFold,
    daemon_label: &str,
) {
    let announced: BTreeSet<(String, String)> =
        fold.kernel_refusals.iter().map(|r| r.key()).collect();
    let before = swap_announced(&mut ctx.memo().kernel_announced, key, announced);
    let mut notices = status::kernel_notices(&before, &fold.kernel_refusals);
    let nodes: BTreeSet<String> = fold
        .external_deletions
        .iter()
        .map(|d| d.node.clone())
        .collect();
    let before = swap_announced(&mut ctx.memo().deletions_announced, key, nodes);
    notices.extend(status::external_deletion_notices(
        &vs.spec.vip,
        &before,
        &fold.external_deletions,
    ));
    let before = swap_announced(
        &mut ctx.memo().unlabelled_announced,
        key,
        fold.unlabelled.clone(),
    );
    notices.extend(status::unlabelled_notice(
        &before,
        &fold.unlabelled,
        daemon_label,
    ));
    if !notices.is_empty() {
        let regarding = vs.object_ref(&());
        for n in &notices {
            ctx.publish(&regarding, n).await;
        }
    }
}

/// Record `now` as what is announced for `key` and return what was before. An empty set is
/// not kept, so the map holds only the VirtualServices with something announced (most have
/// nothing: an entry per VirtualService cost megabytes at 10,000).
fn swap_announced<T: Ord>(
    map: &mut HashMap<ObjectKey, BTreeSet<T>>,
    key: &ObjectKey,
    now: BTreeSet<T>,
) -> BTreeSet<T> {
    let before = if now.is_empty() {
        map.remove(key)
    } else {
        map.insert(key.clone(), now)
    };
    before.unwrap_or_default()
}

/// What the RealServers' reconciles read of this VirtualService (pure).
fn rs_inputs(key: &ObjectKey, verdict: &Verdict, world: &VsWorld, fold: &VsFold) -> RsInputs {
    RsInputs {
        owner: *verdict == Verdict::Owner,
        active: fold.status.active_balancer.clone(),
        selected: world
            .real_servers
            .iter()
            .map(|r| ObjectKey::of(&r.metadata))
            .collect(),
        excluded: fold
            .status
            .excluded_real_servers
            .iter()
            .map(|e| ObjectKey::new(key.namespace.clone(), e.name.clone()))
            .collect(),
    }
}

/// When to look again (pure): an overlap of Masters turns into a split brain at
/// `fold.recheck` unless something changes first; otherwise the resync.
fn next_look(fold: &VsFold, now: &Time) -> std::time::Duration {
    fold.recheck
        .and_then(|at| at.duration_since(now.0).try_into().ok())
        .map(|d: std::time::Duration| (d + std::time::Duration::from_secs(1)).min(RESYNC))
        .unwrap_or(RESYNC)
}

/// Reconcile one RealServer's `Healthy` condition: dereference (with the verdict of each
/// VirtualService selecting it) → build → apply.
pub async fn real_server(rs: &Arc<RealServer>, ctx: &Context) -> Result<Action, Error> {
    ctx.stores.ready().await?;
    if rs.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = now();
    let Selecting {
        selected_by,
        excluded_by,
        at_vip_of,
    } = selecting_owners(ctx, rs, &now);
    let web_node = match rs.spec.node_name.as_deref() {
        Some(node) => ctx.stores.web_node(node, &ctx.config.web.node_selector),
        None => WebNode::Runs,
    };
    let previous = previous_rs(ctx, rs);
    let fold = status::fold_real_server(&RsView {
        rs,
        selected_by: &selected_by,
        excluded_by: &excluded_by,
        at_vip_of: &at_vip_of,
        web_node: &web_node,
        previous: Some(&previous),
        now,
    });
    if fold.changed {
        ctx.term.check()?;
        if apply::real_server_status(&ctx.client, rs, &fold.status)
            .await?
            .is_none()
        {
            tracing::debug!(object = %ObjectKey::of(&rs.metadata), "deleted before its status was written");
            return Ok(Action::await_change());
        }
        ctx.memo()
            .rs_written
            .insert(ObjectKey::of(&rs.metadata), fold.status.clone());
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

/// What [`selecting_owners`] finds for a RealServer.
struct Selecting {
    selected_by: Vec<(ObjectKey, Option<String>)>,
    excluded_by: Vec<ObjectKey>,
    at_vip_of: Vec<ObjectKey>,
}

/// Dereference and validate for a RealServer: the VirtualServices that select it and own their
/// claims, each with its active balancer, those of them that leave it out because it runs on
/// one of their balancer nodes or its address is their VIP, and those whose VIP it is; all
/// sorted. A conflicting or invalid VirtualService is programmed nowhere; its view does not
/// count.
fn selecting_owners(ctx: &Context, rs: &RealServer, now: &Time) -> Selecting {
    let namespace = rs.namespace().unwrap_or_default();
    let selecting = ctx.stores.virtual_services.state_filter(|v| {
        v.metadata.namespace.as_deref() == Some(namespace.as_str())
            && lvstun_rules::selects(&v.spec.real_server_selector, rs.labels())
    });
    let mut selected_by = Vec::new();
    let mut excluded_by = Vec::new();
    let mut at_vip_of = Vec::new();
    for vs in &selecting {
        if verdict(ctx, vs) != Verdict::Owner {
            continue;
        }
        let nodes = ctx
            .stores
            .balancer_nodes(vs, &ctx.config.balancer.node_selector);
        let active = status::election(vs, &nodes.live, now)
            .holder()
            .map(String::from);
        if !status::real_servers_on_balancers(&[rs], &nodes).is_empty() {
            excluded_by.push(ObjectKey::of(&vs.metadata));
        } else if rs.spec.address == vs.spec.vip {
            excluded_by.push(ObjectKey::of(&vs.metadata));
            at_vip_of.push(ObjectKey::of(&vs.metadata));
        }
        selected_by.push((ObjectKey::of(&vs.metadata), active));
    }
    selected_by.sort();
    excluded_by.sort();
    at_vip_of.sort();
    Selecting {
        selected_by,
        excluded_by,
        at_vip_of,
    }
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
        ctx.term.check()?;
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
            ctx.term.check()?;
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
            at_vip_of: &[],
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
    fn announced_sets_keep_no_empty_entries() {
        let mut map: HashMap<ObjectKey, BTreeSet<String>> = HashMap::new();
        let key = ObjectKey::new("ns", "www");
        let one = BTreeSet::from(["lb1".to_string()]);
        assert!(swap_announced(&mut map, &key, BTreeSet::new()).is_empty());
        assert!(map.is_empty(), "nothing announced: no entry");
        assert!(swap_announced(&mut map, &key, one.clone()).is_empty());
        assert_eq!(map.get(&key), Some(&one));
        assert_eq!(swap_announced(&mut map, &key, BTreeSet::new()), one);
        assert!(map.is_empty(), "the announcement ended: the entry goes");
    }

    #[test]
    fn now_has_whole_seconds() {
        assert_eq!(now().0.subsec_nanosecond(), 0);
    }
}
