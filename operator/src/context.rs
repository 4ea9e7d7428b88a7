//! What every reconcile of one leadership term shares: the caches ([`Stores`]), the memory
//! between reconciles ([`Memo`]), the client, the metrics, and the ways back to the controller
//! (a RealServer trigger, the DaemonSet loop's wake-up). The controller builds a [`Context`]
//! and the reconciles read it; this module knows neither, so the arrows point one way:
//! controller → reconcile → context.
//!
//! I/O: publishing Events and waiting for the caches; the rest is in-memory state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use lvstun_crds::v1alpha1::{
    RealServer, RealServerStatus, VIPPolicySpec, VirtualService, VirtualServiceStatus,
};
use lvstun_rules::ObjectKey;
use tokio::sync::{Notify, watch};

use crate::apply;
use crate::build::NodeDaemonConfig;
use crate::error::Error;
use crate::leader::Term;
use crate::metrics::Metrics;
use crate::pace::Unsettled;
use crate::status::{BalancerNodes, Notice, WebNode};
use crate::validate::{self, AddressUse, NODE_ADDRESS_TYPES, PoolCheck};

/// Every object is reconciled again this often, whatever happens: a safety net for missed
/// triggers.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How long a reconcile waits for the caches to fill before it fails (and retries).
const CACHE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a node may be trusted to report: not marked down. A node without a `Ready` condition
/// (just registered, or a node object without a kubelet) counts as alive.
pub fn node_alive(n: &Node) -> bool {
    n.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "Ready")
        .is_none_or(|c| c.status == "True")
}

/// Bits of [`Stores::listed`]: which watches have delivered their first complete list.
pub(crate) const LISTED_VS: u8 = 1;
pub(crate) const LISTED_RS: u8 = 2;
pub(crate) const LISTED_NODES: u8 = 4;
pub(crate) const LISTED_DS: u8 = 8;
/// The VIPPolicy watch has listed (or no VIPPolicy is read).
pub(crate) const LISTED_POLICY: u8 = 16;
/// The first read of Service `default/kubernetes` is done (found or not).
pub(crate) const LISTED_KUBERNETES_IP: u8 = 32;
const LISTED_ALL: u8 =
    LISTED_VS | LISTED_RS | LISTED_NODES | LISTED_DS | LISTED_POLICY | LISTED_KUBERNETES_IP;

/// The reflector caches of one leadership term, as the watches fill them.
pub struct Caches {
    /// All VirtualServices.
    pub virtual_services: Store<VirtualService>,
    /// All RealServers.
    pub real_servers: Store<RealServer>,
    /// All Nodes (metadata).
    pub nodes: Store<Node>,
    /// This installation's DaemonSets.
    pub daemonsets: Store<DaemonSet>,
}

/// The caches every reconcile reads.
#[derive(Clone)]
pub struct Stores {
    /// All VirtualServices.
    pub virtual_services: Store<VirtualService>,
    /// All RealServers.
    pub real_servers: Store<RealServer>,
    /// All Nodes (metadata).
    pub nodes: Store<Node>,
    /// This installation's DaemonSets.
    pub daemonsets: Store<DaemonSet>,
    /// Which caches are complete ([`LISTED_ALL`] when all are). Set by the watch hooks on each
    /// watch's first `InitDone`, which the reflector has applied to its store by then. Not
    /// `Store::wait_until_ready`: its one-shot wakes only the last of several concurrent
    /// waiters, and the controllers already wait on it, so a second waiter could sleep until
    /// its timeout.
    listed: watch::Receiver<u8>,
}

impl Stores {
    /// Wait until every cache holds a complete list; decisions are never made on a partial one.
    pub async fn ready(&self) -> Result<(), Error> {
        let mut listed = self.listed.clone();
        match tokio::time::timeout(CACHE_TIMEOUT, listed.wait_for(|l| *l == LISTED_ALL)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::CacheNotReady("the watches stopped".into())),
            Err(_) => Err(Error::CacheNotReady(format!(
                "the watches have not listed everything after {CACHE_TIMEOUT:?}"
            ))),
        }
    }

    /// The nodes a VirtualService's `spec.balancers.nodeSelector` selects now, which of them run
    /// no balancer daemon (`daemon_selector`: the balancer DaemonSet's node selector), and
    /// which of the others are alive.
    pub fn balancer_nodes(
        &self,
        vs: &VirtualService,
        daemon_selector: &BTreeMap<String, String>,
    ) -> BalancerNodes {
        let nodes = self
            .nodes
            .state_filter(|n| lvstun_rules::selects(&vs.spec.balancers.node_selector, n.labels()));
        BalancerNodes::classify(
            nodes
                .iter()
                .map(|n| (n.name_any(), n.labels(), node_alive(n))),
            daemon_selector,
        )
    }

    /// Who already uses `vip` among the Nodes (their InternalIP and ExternalIP) and
    /// `kubernetes_ip` (the ClusterIP of Service `default/kubernetes`), see
    /// [`validate::address_use`].
    pub fn address_use(&self, vip: &str, kubernetes_ip: Option<&str>) -> Option<AddressUse> {
        // Only a node that has the address matters; the rule itself is `validate`'s.
        let node = self
            .nodes
            .find(|n| node_addresses(n).any(|(_, a)| a == vip));
        let name = node.as_ref().map(|n| n.name_any()).unwrap_or_default();
        let addresses: Vec<(&str, &str, &str)> = node
            .iter()
            .flat_map(|n| node_addresses(n).map(|(kind, a)| (name.as_str(), kind, a)))
            .collect();
        validate::address_use(vip, addresses, kubernetes_ip)
    }

    /// Whether a web daemon runs on `node` (`daemon_selector`: the web DaemonSet's node
    /// selector).
    pub fn web_node(&self, node: &str, daemon_selector: &BTreeMap<String, String>) -> WebNode {
        let n = self.nodes.get(&ObjectRef::new(node));
        WebNode::of(node, n.as_ref().map(|n| n.labels()), daemon_selector)
    }
}

/// A Node's addresses a VIP may never be (`(type, address)`, [`NODE_ADDRESS_TYPES`]).
pub fn node_addresses(n: &Node) -> impl Iterator<Item = (&str, &str)> {
    n.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| NODE_ADDRESS_TYPES.contains(&a.type_.as_str()))
        .map(|a| (a.type_.as_str(), a.address.as_str()))
}

/// What a RealServer's `Healthy` reads of one VirtualService: whether it owns its claims, its
/// active balancer, and which RealServers it selects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RsInputs {
    /// Whether the VirtualService owns its VIP:port:protocol pairs.
    pub owner: bool,
    /// Its Master, if exactly one.
    pub active: Option<String>,
    /// The RealServers it selects.
    pub selected: BTreeSet<ObjectKey>,
    /// Of those, the ones it leaves out because they run on its balancer nodes.
    pub excluded: BTreeSet<ObjectKey>,
}

/// What the operator remembers between reconciles (for one leadership term).
#[derive(Debug, Default)]
pub struct Memo {
    /// The operator-owned VirtualService status last written, until the cache shows it.
    pub vs_written: HashMap<ObjectKey, VirtualServiceStatus>,
    /// The operator-owned RealServer status last written, until the cache shows it.
    pub rs_written: HashMap<ObjectKey, RealServerStatus>,
    /// Per VirtualService, when its inputs changed since its status was last decided
    /// (`pace`): a changed status waits for them to settle.
    pub vs_unsettled: HashMap<ObjectKey, Unsettled>,
    /// Per VirtualService, what its RealServers' reconciles read of it.
    pub rs_inputs: HashMap<ObjectKey, RsInputs>,
    /// Per DaemonSet name: the config hash and resulting generation of the last apply.
    pub applied: HashMap<String, (String, Option<i64>)>,
    /// Consecutive failures per object, for the retry back-off.
    pub failures: HashMap<String, u32>,
    /// Per VirtualService, the (node, sysctl) refusals already announced by an Event. Kept in
    /// memory only: a new leader announces a refusal that still stands once more (ADR 0005).
    pub kernel_announced: HashMap<ObjectKey, BTreeSet<(String, String)>>,
    /// Per VirtualService, the selected nodes without the balancer label already announced by
    /// an Event (memory only, like `kernel_announced`).
    pub unlabelled_announced: HashMap<ObjectKey, BTreeSet<String>>,
    /// Per VirtualService, the balancer nodes whose report of services deleted by another
    /// program was already announced by an Event (memory only, like `kernel_announced`).
    pub deletions_announced: HashMap<ObjectKey, BTreeSet<String>>,
}

/// Shared by every reconcile of one leadership term.
pub struct Context {
    /// API client (the operator's ServiceAccount).
    pub client: Client,
    /// How the node DaemonSets look.
    pub config: NodeDaemonConfig,
    /// The caches.
    pub stores: Stores,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// This replica's identity, the Events' reporting instance.
    pub identity: String,
    /// The term these reconciles run in: every write checks it first.
    pub term: Term,
    rs_trigger: mpsc::UnboundedSender<ObjectRef<RealServer>>,
    /// Wakes the DaemonSet loop.
    pub fleet: Notify,
    memo: Mutex<Memo>,
    listed: watch::Sender<u8>,
    /// The VIPPolicy to read, if any (`--vip-policy`).
    pub vip_policy: Option<String>,
    /// Its spec as last seen; `None` while it does not exist.
    pools: Mutex<Option<Arc<VIPPolicySpec>>>,
    /// The ClusterIP of Service `default/kubernetes`, once read.
    kubernetes_ip: Mutex<Option<String>>,
}

/// This replica's identity (the Events' reporting instance) and the leadership term a context
/// serves: its writes stop when the term ends.
pub struct Holder {
    /// The replica's identity (its pod name).
    pub identity: String,
    /// The term won.
    pub term: Term,
}

impl Context {
    /// The context of one leadership term, over the caches the watches fill; `rs_trigger`
    /// reaches the RealServer controller. The caches count as incomplete until every watch has
    /// marked its first list ([`Context::mark_listed`]).
    pub fn new(
        client: Client,
        config: NodeDaemonConfig,
        caches: Caches,
        metrics: Arc<Metrics>,
        holder: Holder,
        rs_trigger: mpsc::UnboundedSender<ObjectRef<RealServer>>,
        vip_policy: Option<String>,
    ) -> Context {
        let Holder { identity, term } = holder;
        // Without a VIPPolicy to read there is nothing to wait for.
        let first = if vip_policy.is_none() {
            LISTED_POLICY
        } else {
            0
        };
        let (listed, listed_rx) = watch::channel(first);
        Context {
            client,
            config,
            stores: Stores {
                virtual_services: caches.virtual_services,
                real_servers: caches.real_servers,
                nodes: caches.nodes,
                daemonsets: caches.daemonsets,
                listed: listed_rx,
            },
            metrics,
            identity,
            term,
            rs_trigger,
            fleet: Notify::new(),
            memo: Mutex::new(Memo::default()),
            listed,
            vip_policy,
            pools: Mutex::new(None),
            kubernetes_ip: Mutex::new(None),
        }
    }

    /// Whether `vs` lies in a pool of the VIPPolicy, as last seen ([`validate::pool_check`]).
    pub fn pool_check(&self, vs: &VirtualService) -> PoolCheck {
        let pools = self
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        validate::pool_check(
            self.vip_policy
                .as_deref()
                .map(|name| (name, pools.as_deref())),
            vs,
        )
    }

    /// Record the VIPPolicy's spec (`None`: it does not exist); whether it changed.
    pub fn set_pools(&self, spec: Option<VIPPolicySpec>) -> bool {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if pools.as_deref() == spec.as_ref() {
            return false;
        }
        *pools = spec.map(Arc::new);
        true
    }

    /// The ClusterIP of Service `default/kubernetes`, once read.
    pub fn kubernetes_ip(&self) -> Option<String> {
        self.kubernetes_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Record the ClusterIP of Service `default/kubernetes`; the one it replaces, when it
    /// changed (`Some(None)`: there was none).
    pub fn set_kubernetes_ip(&self, ip: Option<String>) -> Option<Option<String>> {
        let mut now = self
            .kubernetes_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *now == ip {
            return None;
        }
        Some(std::mem::replace(&mut *now, ip))
    }

    /// The memo. Never held across an await; a panic elsewhere cannot leave it half-written in
    /// a way that matters (every entry is a cache), so poisoning is ignored.
    pub fn memo(&self) -> MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record that one watch has delivered its first complete list.
    pub(crate) fn mark_listed(&self, bit: u8) {
        self.listed.send_modify(|l| *l |= bit);
    }

    /// Ask the RealServer controller to look at these RealServers again.
    pub fn trigger_real_servers<'a>(&self, keys: impl IntoIterator<Item = &'a ObjectKey>) {
        for k in keys {
            let _ = self
                .rs_trigger
                .unbounded_send(ObjectRef::new(&k.name).within(&k.namespace));
        }
    }

    /// Record that the inputs of these VirtualServices changed at `now` (seen by a watch hook):
    /// their next write waits for the inputs to settle (`pace`).
    pub fn unsettle<'a>(&self, keys: impl IntoIterator<Item = &'a ObjectKey>, now: Instant) {
        let mut memo = self.memo();
        for k in keys {
            memo.vs_unsettled
                .entry(k.clone())
                .and_modify(|u| u.touch(now))
                .or_insert_with(|| Unsettled::at(now));
        }
    }

    /// Publish an Event; failures are logged, never fatal (Events are best effort).
    pub async fn publish(&self, regarding: &ObjectReference, notice: &Notice) {
        if let Err(e) = self.term.check() {
            tracing::info!(error = %e, reason = notice.reason, "Event not published");
            return;
        }
        if let Err(e) = apply::event(&self.client, &self.identity, regarding, notice).await {
            tracing::warn!(error = %e, reason = notice.reason, "publishing an Event failed");
        }
    }
}
