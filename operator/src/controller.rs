//! The wiring of one leadership term: one watch and cache per kind, two controllers (one keyed
//! by VirtualService, one by RealServer), one loop for the shared DaemonSets, and the triggers
//! between them.
//!
//! Why one reflector per kind feeding several consumers (kube's `unstable-runtime` API:
//! `for_stream`, `reconcile_on`): what the operator decides for one object depends on others (a
//! VirtualService on its RealServers, its nodes and every VirtualService with the same VIP; a
//! RealServer on the VirtualServices that select it and on its Node), so each
//! consumer must see the same cache, and a second watch per kind would double the API load and
//! the memory of the largest caches.
//!
//! Triggers (each computed from the cache and from what the operator remembers of the previous
//! state, so that an object that *stopped* matching is revisited too; the predicates are the
//! pure functions of `triggers`):
//! - a VirtualService changes → itself, the VirtualServices sharing its old or new VIP (their
//!   conflict verdict may change);
//! - a RealServer changes → itself, the VirtualServices that select it now or did before;
//! - a Node's labels or readiness change → the VirtualServices whose balancer selector matched
//!   before or after; a Node's labels change, or it comes or goes → the RealServers naming it
//!   (whether a web daemon runs there);
//! - a VirtualService's election or selection changes → the RealServers it selects (from the
//!   VirtualService reconcile);
//! - a Node's InternalIP or ExternalIP changes, or it comes or goes → the VirtualServices whose
//!   VIP is (or was) one of them (a VIP may never be a node's address);
//! - the VIPPolicy (`--vip-policy`) changes, appears or goes → every VirtualService (`InPool`);
//! - the ClusterIP of Service `default/kubernetes`, read at the start and every [`RESYNC`],
//!   changes → the VirtualServices on the old or new address;
//! - a DaemonSet changes (edited, deleted) → the DaemonSets.
//!
//! The VirtualServices a change of the first three kinds revisits (a new or edited
//! VirtualService itself, not a status write) are also marked unsettled: their reconcile writes
//! once the burst has settled (`pace`).
//!
//! Everything here runs only while this replica leads; losing the lease drops it all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, NodeStatus, Service};
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as make_watcher};
use kube::{Client, Resource, ResourceExt};
use lvstun_crds::v1alpha1::{RealServer, VIPPolicy, VirtualService};

use crate::build::{self, NodeDaemonConfig};
use crate::context::{
    Caches, Context, Holder, LISTED_DS, LISTED_KUBERNETES_IP, LISTED_NODES, LISTED_POLICY,
    LISTED_RS, LISTED_VS, RESYNC, node_addresses, node_alive,
};
use crate::error::Error;
use crate::leader::Term;
use crate::metrics::Metrics;
use crate::reconcile;
use crate::status::{Notice, Severity};
use crate::triggers;
use crate::validate::NODE_ADDRESS_TYPES;
use lvstun_rules::ObjectKey;

/// The DaemonSet loop lets a burst of events settle into one pass.
const FLEET_DEBOUNCE: Duration = Duration::from_millis(300);

/// Keep of a Node only what the operator reads (name, labels, the `Ready` condition, the
/// InternalIP and ExternalIP addresses a VIP may never be): the rest (images, other addresses,
/// capacity, annotations) is most of its size and changes often.
fn slim_node(n: &mut Node) {
    n.metadata.managed_fields = None;
    n.metadata.annotations = None;
    n.spec = None;
    if let Some(status) = n.status.as_mut() {
        let ready = status
            .conditions
            .take()
            .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect());
        let addresses = status.addresses.take().map(|a| {
            a.into_iter()
                .filter(|a| NODE_ADDRESS_TYPES.contains(&a.type_.as_str()))
                .collect()
        });
        *status = NodeStatus {
            conditions: ready,
            addresses,
            ..Default::default()
        };
    }
}

/// Metrics, logs and an Event for the outcome of one reconcile.
async fn after<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    controller: &'static str,
    obj: &K,
    started: Instant,
    result: &Result<Action, Error>,
) {
    ctx.metrics
        .observe(controller, started.elapsed(), result.as_ref().err());
    let key = failure_key(obj);
    tracing::debug!(controller, object = %key, took = ?started.elapsed(), ok = result.is_ok(), "reconciled");
    match result {
        Ok(_) => {
            ctx.memo().failures.remove(&key);
        }
        Err(e) => {
            tracing::warn!(controller, object = %key, category = e.category(), error = %e, "reconcile failed; retrying with back-off");
            if !matches!(e, Error::CacheNotReady(_)) {
                let notice = Notice {
                    severity: Severity::Warning,
                    reason: e.category(),
                    note: e.to_string(),
                };
                ctx.publish(&obj.object_ref(&()), &notice).await;
            }
        }
    }
}

fn failure_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Retry delay after `failures` consecutive failures: 1 s, doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(9);
    Duration::from_secs(secs.min(300))
}

fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    _error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = failure_key(obj.as_ref());
    let n = {
        let mut memo = ctx.memo();
        let n = memo.failures.entry(key).or_insert(0);
        *n += 1;
        *n
    };
    Action::requeue(backoff(n))
}

async fn reconcile_virtual_service(
    vs: Arc<VirtualService>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile::virtual_service(&vs, &ctx).await;
    after(&ctx, "virtualservice", vs.as_ref(), started, &result).await;
    result
}

async fn reconcile_real_server(rs: Arc<RealServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile::real_server(&rs, &ctx).await;
    after(&ctx, "realserver", rs.as_ref(), started, &result).await;
    result
}

fn strip<K: Resource>(obj: &mut K) {
    // Managed fields are the largest part of most objects and the operator never reads them.
    obj.meta_mut().managed_fields = None;
}

/// Keep of a VirtualService what the operator reads: no managed fields, no annotations (such
/// as kubectl's last-applied-configuration, a second copy of the spec) and no labels (nothing
/// selects VirtualServices; their selectors are in the spec). Each label map costs a B-tree
/// node of some 550 bytes even with one entry: at 10,000 VirtualServices, megabytes.
fn strip_virtual_service(vs: &mut VirtualService) {
    strip(vs);
    vs.metadata.annotations = None;
    vs.metadata.labels = None;
}

/// Keep of a RealServer what the operator reads: its labels stay (VirtualServices select
/// them), its managed fields and annotations go.
fn strip_real_server(rs: &mut RealServer) {
    strip(rs);
    rs.metadata.annotations = None;
}

/// The DaemonSet loop: one pass per burst of events, and at least every [`RESYNC`].
async fn fleet_loop(ctx: Arc<Context>) {
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = ctx.fleet.notified() => {}
            () = tokio::time::sleep(RESYNC) => {}
        }
        tokio::time::sleep(FLEET_DEBOUNCE).await;
        let started = Instant::now();
        let result = reconcile::daemonsets(&ctx).await;
        ctx.metrics
            .observe("daemonsets", started.elapsed(), result.as_ref().err());
        match result {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                let wait = backoff(failures);
                tracing::warn!(category = e.category(), error = %e, retry_in = ?wait, "DaemonSet reconcile failed");
                tokio::time::sleep(wait).await;
                ctx.fleet.notify_one();
            }
        }
    }
}

/// Labels, liveness and addresses of each node seen, to tell a change that matters from a
/// heartbeat.
#[derive(Default)]
struct NodeHook {
    seen: HashMap<String, NodeSeen>,
    listed: bool,
}

/// What [`NodeHook`] remembers of a node: labels, liveness, the addresses a VIP may never be.
type NodeSeen = (BTreeMap<String, String>, bool, BTreeSet<String>);

/// The addresses of a Node a VIP may never be.
fn address_set(n: &Node) -> BTreeSet<String> {
    node_addresses(n).map(|(_, a)| a.to_string()).collect()
}

impl NodeHook {
    fn on(
        &mut self,
        ev: &watcher::Result<Event<Node>>,
        ctx: &Context,
        vs_tx: &mpsc::UnboundedSender<ObjectRef<VirtualService>>,
    ) {
        let (name, old, new, addresses) = match ev {
            Ok(Event::Apply(n) | Event::InitApply(n)) => {
                let new = (n.labels().clone(), node_alive(n), address_set(n));
                let old = self.seen.insert(n.name_any(), new.clone());
                if old.as_ref() == Some(&new) {
                    return;
                }
                let mut addresses = new.2;
                let old = old.map(|o| {
                    addresses.extend(o.2);
                    o.0
                });
                (n.name_any(), old, Some(new.0), addresses)
            }
            Ok(Event::Delete(n)) => {
                let old = self.seen.remove(&n.name_any());
                let addresses = old.as_ref().map(|o| o.2.clone()).unwrap_or_default();
                (n.name_any(), old.map(|o| o.0), None, addresses)
            }
            Ok(Event::InitDone) => {
                self.listed = true;
                ctx.mark_listed(LISTED_NODES);
                return;
            }
            Ok(Event::Init) | Err(_) => return,
        };
        if !self.listed {
            // The first list: every VirtualService gets reconciled once the caches are full anyway.
            return;
        }
        // Those whose balancer selector matched before or after, and those whose VIP is (or
        // was) one of its addresses.
        let concerned = ctx.stores.virtual_services.state_filter(|vs| {
            triggers::node_concerns(vs, old.as_ref(), new.as_ref())
                || addresses.contains(&vs.spec.vip)
        });
        revisit(ctx, vs_tx, &concerned);
        // The RealServers naming the node: whether a web daemon runs there may have changed.
        if old != new {
            let naming: Vec<ObjectKey> = ctx
                .stores
                .real_servers
                .state_filter(|r| triggers::node_concerns_real_server(r, &name))
                .iter()
                .map(|r| ObjectKey::of(r.as_ref().meta()))
                .collect();
            ctx.trigger_real_servers(naming.iter());
        }
    }
}

/// VIP, generation and VRID of each VirtualService seen, so a VIP or VRID change revisits the
/// peers of the old one too, and a change of its spec is told from a status write.
#[derive(Default)]
struct VsHook {
    seen: HashMap<ObjectKey, (String, Option<i64>, i32)>,
    listed: bool,
}

impl VsHook {
    fn on(
        &mut self,
        ev: &watcher::Result<Event<VirtualService>>,
        ctx: &Context,
        vs_tx: &mpsc::UnboundedSender<ObjectRef<VirtualService>>,
    ) {
        let (key, vips, vrids, spec_changed) = match ev {
            Ok(Event::Apply(vs) | Event::InitApply(vs)) => {
                let key = ObjectKey::of(vs.meta());
                let vrid = vs.spec.balancers.virtual_router_id;
                let seen = (vs.spec.vip.clone(), vs.metadata.generation, vrid);
                let before = self.seen.insert(key.clone(), seen);
                let spec_changed = before.as_ref().map(|b| b.1) != Some(vs.metadata.generation);
                let mut vips = BTreeSet::from([vs.spec.vip.clone()]);
                let mut vrids = BTreeSet::from([vrid]);
                if let Some(b) = before {
                    vips.insert(b.0);
                    vrids.insert(b.2);
                }
                (key, vips, vrids, spec_changed)
            }
            Ok(Event::Delete(vs)) => {
                let key = ObjectKey::of(vs.meta());
                self.seen.remove(&key);
                ctx.metrics
                    .forget_virtual_service(&key.namespace, &key.name);
                let gone = {
                    let mut memo = ctx.memo();
                    memo.vs_written.remove(&key);
                    memo.vs_unsettled.remove(&key);
                    memo.kernel_announced.remove(&key);
                    memo.unlabelled_announced.remove(&key);
                    memo.deletions_announced.remove(&key);
                    memo.rs_inputs.remove(&key)
                };
                // Its RealServers are no longer selected by it.
                if let Some(inputs) = gone {
                    ctx.trigger_real_servers(inputs.selected.iter());
                }
                (
                    key,
                    BTreeSet::from([vs.spec.vip.clone()]),
                    BTreeSet::from([vs.spec.balancers.virtual_router_id]),
                    true,
                )
            }
            Ok(Event::InitDone) => {
                self.listed = true;
                ctx.mark_listed(LISTED_VS);
                return;
            }
            Ok(Event::Init) | Err(_) => return,
        };
        if !self.listed {
            return;
        }
        let peers = ctx.stores.virtual_services.state_filter(|p| {
            triggers::shares_vip(p, &key, &vips) || triggers::shares_vrid(p, &key, &vrids)
        });
        if spec_changed {
            // A new or edited spec: its own status (the controller revisits it) and its peers'
            // verdicts wait for the burst it may start to settle. A status write (the
            // daemons' reports, the operator's own) is not held.
            let now = Instant::now();
            ctx.unsettle([&key], now);
            revisit(ctx, vs_tx, &peers);
        } else {
            for peer in &peers {
                let _ = vs_tx.unbounded_send(ObjectRef::from_obj(peer.as_ref()));
            }
        }
    }
}

/// Which VirtualServices to revisit when a RealServer changes.
#[derive(Default)]
struct RsHook {
    listed: bool,
}

impl RsHook {
    fn on(
        &mut self,
        ev: &watcher::Result<Event<RealServer>>,
        ctx: &Context,
        vs_tx: &mpsc::UnboundedSender<ObjectRef<VirtualService>>,
    ) {
        let (rs, deleted) = match ev {
            Ok(Event::Apply(rs) | Event::InitApply(rs)) => (rs, false),
            Ok(Event::Delete(rs)) => (rs, true),
            Ok(Event::InitDone) => {
                self.listed = true;
                ctx.mark_listed(LISTED_RS);
                return;
            }
            Ok(Event::Init) | Err(_) => return,
        };
        let key = ObjectKey::of(rs.meta());
        if deleted {
            ctx.memo().rs_written.remove(&key);
        }
        if !self.listed {
            return;
        }
        let concerned = {
            let memo = ctx.memo();
            ctx.stores
                .virtual_services
                .state_filter(|vs| triggers::real_server_concerns(vs, &key, rs, &memo.rs_inputs))
        };
        revisit(ctx, vs_tx, &concerned);
    }
}

/// The VIPPolicy the operator was told to read: kept in the context; when it changes (or
/// appears, or goes), every VirtualService is judged again against the pools.
#[derive(Default)]
struct PolicyHook {
    /// Whether the current (re)list delivered the object.
    seen_in_list: bool,
    listed: bool,
}

impl PolicyHook {
    fn on(
        &mut self,
        ev: &watcher::Result<Event<VIPPolicy>>,
        ctx: &Context,
        vs_tx: &mpsc::UnboundedSender<ObjectRef<VirtualService>>,
    ) {
        let changed = match ev {
            Ok(Event::Init) => {
                self.seen_in_list = false;
                false
            }
            Ok(Event::InitApply(p)) => {
                self.seen_in_list = true;
                ctx.set_pools(Some(p.spec.clone()))
            }
            Ok(Event::Apply(p)) => ctx.set_pools(Some(p.spec.clone())),
            Ok(Event::Delete(_)) => ctx.set_pools(None),
            Ok(Event::InitDone) => {
                // A relist without the object: it was deleted while the watch was down.
                let changed = !self.seen_in_list && ctx.set_pools(None);
                if !self.listed {
                    self.listed = true;
                    ctx.mark_listed(LISTED_POLICY);
                    return;
                }
                changed
            }
            Err(_) => false,
        };
        if changed && self.listed {
            tracing::info!(
                "the VIPPolicy changed; judging every VirtualService against its pools again"
            );
            revisit(ctx, vs_tx, &ctx.stores.virtual_services.state());
        }
    }
}

/// Read the ClusterIP of Service `default/kubernetes` now and every [`RESYNC`] (it is the first
/// address of the Service CIDR and does not change in practice; the timer catches a cluster
/// where it was missing or unreadable at first). Marks the first attempt, found or not, so the
/// reconciles never wait on it; a VirtualService on the old or new address is judged again.
async fn kubernetes_ip_loop(
    client: Client,
    ctx: Arc<Context>,
    vs_tx: mpsc::UnboundedSender<ObjectRef<VirtualService>>,
) {
    let api = Api::<Service>::namespaced(client, "default");
    let mut first = true;
    loop {
        match api.get_opt("kubernetes").await {
            Ok(svc) => {
                let ip = svc
                    .and_then(|s| s.spec)
                    .and_then(|s| s.cluster_ip)
                    .filter(|ip| !ip.is_empty() && ip != "None");
                if let Some(before) = ctx.set_kubernetes_ip(ip.clone())
                    && !first
                {
                    let vips: BTreeSet<String> = before.into_iter().chain(ip).collect();
                    let concerned = ctx
                        .stores
                        .virtual_services
                        .state_filter(|vs| vips.contains(&vs.spec.vip));
                    revisit(&ctx, &vs_tx, &concerned);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read Service default/kubernetes; a VIP equal to its ClusterIP is not refused until it can (does the operator's Role in namespace default allow get on it?)");
            }
        }
        if first {
            first = false;
            ctx.mark_listed(LISTED_KUBERNETES_IP);
        }
        tokio::time::sleep(RESYNC).await;
    }
}

/// Revisit VirtualServices whose inputs changed: mark them unsettled (their next write waits
/// for the burst to settle, `pace`) and ask for their reconcile.
fn revisit(
    ctx: &Context,
    vs_tx: &mpsc::UnboundedSender<ObjectRef<VirtualService>>,
    concerned: &[Arc<VirtualService>],
) {
    let keys: Vec<ObjectKey> = concerned
        .iter()
        .map(|vs| ObjectKey::of(vs.meta()))
        .collect();
    ctx.unsettle(keys.iter(), Instant::now());
    for vs in concerned {
        let _ = vs_tx.unbounded_send(ObjectRef::from_obj(vs.as_ref()));
    }
}

/// Run everything a leader does until the future is dropped (on losing the lease or shutdown).
pub async fn run(
    client: Client,
    config: NodeDaemonConfig,
    concurrency: u16,
    vip_policy: Option<String>,
    metrics: Arc<Metrics>,
    identity: String,
    term: Term,
) {
    let (vs_store, vs_writer) = reflector::store::<VirtualService>();
    let (rs_store, rs_writer) = reflector::store::<RealServer>();
    let (node_store, node_writer) = reflector::store::<Node>();
    let (ds_store, ds_writer) = reflector::store::<DaemonSet>();
    let (vs_tx, vs_rx) = mpsc::unbounded::<ObjectRef<VirtualService>>();
    let (rs_tx, rs_rx) = mpsc::unbounded::<ObjectRef<RealServer>>();
    let owned = build::owned_selector(&config);
    let namespace = config.namespace.clone();
    let ctx = Arc::new(Context::new(
        client.clone(),
        config,
        Caches {
            virtual_services: vs_store.clone(),
            real_servers: rs_store.clone(),
            nodes: node_store,
            daemonsets: ds_store,
        },
        metrics,
        Holder { identity, term },
        rs_tx,
        vip_policy.clone(),
    ));

    let vs_stream = {
        let (ctx, tx) = (ctx.clone(), vs_tx.clone());
        let mut hook = VsHook::default();
        make_watcher(
            Api::<VirtualService>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(strip_virtual_service)
        .reflect(vs_writer)
        .inspect(move |ev| hook.on(ev, &ctx, &tx))
        .applied_objects()
    };
    let rs_stream = {
        let (ctx, tx) = (ctx.clone(), vs_tx.clone());
        let mut hook = RsHook::default();
        make_watcher(
            Api::<RealServer>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(strip_real_server)
        .reflect(rs_writer)
        .inspect(move |ev| hook.on(ev, &ctx, &tx))
        .applied_objects()
    };
    let nodes = {
        let (ctx, tx) = (ctx.clone(), vs_tx.clone());
        let mut hook = NodeHook::default();
        make_watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(slim_node)
            .reflect(node_writer)
            .inspect(move |ev| hook.on(ev, &ctx, &tx))
            .for_each(|_| future::ready(()))
    };
    let policy = {
        let (ctx, tx) = (ctx.clone(), vs_tx.clone());
        let mut hook = PolicyHook::default();
        let client = client.clone();
        async move {
            // Only the one object: a field selector on its name.
            let Some(name) = vip_policy else {
                return;
            };
            make_watcher(
                Api::<VIPPolicy>::all(client),
                watcher::Config::default().fields(&format!("metadata.name={name}")),
            )
            .default_backoff()
            .for_each(|ev| {
                hook.on(&ev, &ctx, &tx);
                future::ready(())
            })
            .await;
        }
    };
    let kubernetes_ip = kubernetes_ip_loop(client.clone(), ctx.clone(), vs_tx.clone());
    let daemonsets = {
        let ctx = ctx.clone();
        make_watcher(
            Api::<DaemonSet>::namespaced(client.clone(), &namespace),
            watcher::Config::default().labels(&owned),
        )
        .default_backoff()
        .modify(strip)
        .reflect(ds_writer)
        .inspect(move |ev| {
            if matches!(ev, Ok(Event::InitDone)) {
                ctx.mark_listed(LISTED_DS);
            }
            ctx.fleet.notify_one();
        })
        .for_each(|_| future::ready(()))
    };
    let config = controller::Config::default().concurrency(concurrency);
    let vs_controller = Controller::for_stream(vs_stream, vs_store)
        .with_config(config.clone())
        .reconcile_on(vs_rx)
        .run(reconcile_virtual_service, error_policy, ctx.clone())
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "virtualservice controller");
            }
            future::ready(())
        });
    let rs_controller = Controller::for_stream(rs_stream, rs_store)
        .with_config(config)
        .reconcile_on(rs_rx)
        .run(reconcile_real_server, error_policy, ctx.clone())
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "realserver controller");
            }
            future::ready(())
        });
    tracing::info!(
        "leading: watching VirtualServices, RealServers, Nodes, DaemonSets and the VIPPolicy"
    );
    tokio::join!(
        vs_controller,
        rs_controller,
        nodes,
        daemonsets,
        policy,
        kubernetes_ip,
        fleet_loop(ctx)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_slimmed_to_labels_and_readiness() {
        use k8s_openapi::api::core::v1::{ContainerImage, NodeCondition, NodeSpec};
        let cond = |t: &str, s: &str| NodeCondition {
            type_: t.into(),
            status: s.into(),
            ..Default::default()
        };
        let mut n = Node {
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![
                    cond("MemoryPressure", "False"),
                    cond("Ready", "False"),
                ]),
                images: Some(vec![ContainerImage::default()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        n.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert!(!node_alive(&n));
        slim_node(&mut n);
        let status = n.status.as_ref().unwrap();
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
        assert!(status.images.is_none() && n.spec.is_none());
        assert_eq!(n.labels().len(), 1);
        assert!(!node_alive(&n));
        n.status = None;
        assert!(node_alive(&n), "no Ready condition: alive");
    }

    #[test]
    fn cached_virtual_services_and_real_servers_keep_what_the_operator_reads() {
        use crate::fixtures::{rs, www};
        let noted = |m: &mut kube::api::ObjectMeta| {
            m.annotations = Some(
                [(
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".to_string(),
                )]
                .into(),
            );
            m.labels = Some([("app".to_string(), "www".to_string())].into());
            m.managed_fields = Some(vec![Default::default()]);
        };
        let mut v = www();
        noted(&mut v.metadata);
        let spec = v.spec.clone();
        strip_virtual_service(&mut v);
        assert!(v.metadata.annotations.is_none() && v.metadata.labels.is_none());
        assert!(v.metadata.managed_fields.is_none());
        assert_eq!(v.spec, spec, "the spec is what the reconcile reads");
        let mut r = rs("web1", "198.51.100.10");
        noted(&mut r.metadata);
        strip_real_server(&mut r);
        assert!(r.metadata.annotations.is_none() && r.metadata.managed_fields.is_none());
        assert_eq!(
            r.labels().len(),
            1,
            "VirtualServices select RealServers by label"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let secs: Vec<u64> = [1, 2, 3, 4, 9, 10, 50]
            .iter()
            .map(|n| backoff(*n).as_secs())
            .collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 256, 300, 300]);
    }
}
