//! The in-cluster source: VirtualServices and RealServers from the API server, through one
//! watch per kind (`kube::runtime::watcher` feeding a reflector store), and this node's labels
//! (re-read every [`NODE_LABELS_PERIOD`]: the balancer's RBAC grants `get` on Nodes, not
//! `watch`, and a relabelled node is rare and not urgent). Does I/O.
//!
//! Rules, and why:
//! - Nothing is published before both kinds are completely listed: a snapshot with the
//!   VirtualServices but not yet their RealServers would withdraw every destination.
//! - A burst of changes (an `kubectl apply -f` of many objects, the operator's status writes)
//!   is published once, [`DEBOUNCE`] after it started.
//! - The API server being away changes nothing: the watch retries with back-off, the last
//!   snapshot stays, and the data plane keeps running on it.
//! - `managedFields` and the `last-applied-configuration` annotation are dropped from the
//!   cached objects: the balancer never reads them and they are most of an object's size. The
//!   web role keeps the RealServers' `managedFields` ([`start_web`]): they tell it, even after a
//!   restart, on which RealServers it still owns a `TunnelReady` condition to withdraw.
//!
//! - The balancer also watches the Nodes, slimmed to their labels and InternalIPs
//!   ([`node_peer`]): they are its VRRP peers' addresses ([`Peers::Nodes`]). That watch never
//!   holds anything back: until its first list is complete (or when the RBAC of an older chart
//!   refuses it) the peers are [`Peers::Unknown`] and every sender is heard; a Node event
//!   publishes a snapshot only when the peers it yields changed (Nodes are updated often for
//!   reasons that do not matter here).
//!
//! Two entry points: [`start`] for the balancer (objects plus this node's labels) and
//! [`start_web`] for the web role (objects only: which RealServers concern a web node is said
//! by their `spec.nodeName`, so it needs no Node labels; it reads its Node once, at SIGTERM, for
//! the exit decision of [`crate::exit`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use lvstun_crds::v1alpha1::{RealServer, VirtualService};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{NodePeer, Peers, Scope, Snapshot};
use crate::error::Error;

/// How long a burst of changes is collected before one snapshot is published.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// How often this node's labels are read again.
pub const NODE_LABELS_PERIOD: Duration = Duration::from_secs(60);

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |e| Error::Api {
        what,
        detail: e.to_string(),
    }
}

/// Drops what the balancer never reads from a cached object.
fn strip<K: Resource>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    strip_annotation(obj);
}

/// Drops the `last-applied-configuration` annotation only (a copy of the whole spec).
fn strip_annotation<K: Resource>(obj: &mut K) {
    obj.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// Reads this node's labels.
pub async fn node_labels(client: &Client, node: &str) -> Result<BTreeMap<String, String>, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes
        .get(node)
        .await
        .map_err(api_error(format!("get Node {node}")))?;
    Ok(n.metadata.labels.unwrap_or_default())
}

/// This node's labels again (`None` without a node: never called then).
async fn relabel_node(
    client: &Client,
    node: Option<&str>,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    match node {
        Some(node) => node_labels(client, node).await.map(Some),
        None => Ok(None),
    }
}

/// A watch on every object of kind `K` that fills `writer`, as a stream of "something
/// happened" ticks; errors are logged and retried with back-off.
fn watch_all<K>(
    client: Client,
    writer: reflector::store::Writer<K>,
    trim: fn(&mut K),
) -> impl Stream<Item = ()> + Send
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(Api::<K>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .map(|event| {
            if let Err(e) = event {
                warn!(kind = %K::kind(&()), "watch failed, retrying: {e}");
            }
        })
}

/// One Node as a VRRP peer: its name, labels and IPv4 InternalIPs. Pure.
pub fn node_peer(node: &Node) -> NodePeer {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse::<Ipv4Addr>().ok())
        .collect();
    NodePeer {
        name: node.name_any(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        addresses,
    }
}

/// Drops from a cached Node everything [`node_peer`] does not read.
fn slim_node(node: &mut Node) {
    let name = node.metadata.name.take();
    let labels = node.metadata.labels.take();
    let addresses = node.status.as_mut().and_then(|s| s.addresses.take());
    *node = Node::default();
    node.metadata.name = name;
    node.metadata.labels = labels;
    if addresses.is_some() {
        node.status = Some(k8s_openapi::api::core::v1::NodeStatus {
            addresses,
            ..Default::default()
        });
    }
}

/// The peers the Node store yields: [`Peers::Unknown`] until its first list is complete.
fn node_peers(store: &Store<Node>, listed: bool) -> Peers {
    if !listed {
        return Peers::Unknown;
    }
    let mut nodes: Vec<NodePeer> = store.state().iter().map(|n| node_peer(n)).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Peers::Nodes(nodes)
}

/// The snapshot of the stores now.
pub fn snapshot(
    virtual_services: &Store<VirtualService>,
    real_servers: &Store<RealServer>,
    labels: Option<&BTreeMap<String, String>>,
    peers: &Peers,
) -> Snapshot {
    Snapshot {
        peers: peers.clone(),
        refused: None,
        virtual_services: virtual_services
            .state()
            .iter()
            .map(|o| (**o).clone())
            .collect(),
        real_servers: real_servers.state().iter().map(|o| (**o).clone()).collect(),
        scope: labels.map_or(Scope::All, |l| Scope::NodeLabels(l.clone())),
    }
}

/// Reads this node's labels and lists both kinds through `client` (in-cluster service
/// account, or `KUBECONFIG`); returns once the first complete snapshot is published, with the
/// task that keeps following them.
pub async fn start(
    client: Client,
    node: &str,
) -> Result<(watch::Receiver<Arc<Snapshot>>, JoinHandle<()>), Error> {
    follow(client, Some(node), strip::<RealServer>).await
}

/// The web role's source: both kinds, no Node labels (the snapshot's scope is
/// [`Scope::All`]; the web role picks its RealServers by `spec.nodeName`), RealServers with
/// their `managedFields`.
pub async fn start_web(
    client: Client,
) -> Result<(watch::Receiver<Arc<Snapshot>>, JoinHandle<()>), Error> {
    follow(client, None, strip_annotation::<RealServer>).await
}

/// Lists and follows both kinds (and, with `node`, that node's labels).
async fn follow(
    client: Client,
    node: Option<&str>,
    trim_real_server: fn(&mut RealServer),
) -> Result<(watch::Receiver<Arc<Snapshot>>, JoinHandle<()>), Error> {
    let mut labels = match node {
        Some(node) => Some(node_labels(&client, node).await?),
        None => None,
    };
    let (vs_store, vs_writer) = reflector::store::<VirtualService>();
    let (rs_store, rs_writer) = reflector::store::<RealServer>();
    let mut events = futures::stream::select(
        watch_all(client.clone(), vs_writer, strip::<VirtualService>).boxed(),
        watch_all(client.clone(), rs_writer, trim_real_server).boxed(),
    );
    // Drive both watches until both lists are complete.
    {
        let ready = async {
            vs_store.wait_until_ready().await?;
            rs_store.wait_until_ready().await
        };
        let mut ready = std::pin::pin!(ready);
        loop {
            tokio::select! {
                done = &mut ready => {
                    done.map_err(|e| Error::Api { what: "list VirtualServices and RealServers".into(), detail: e.to_string() })?;
                    break;
                }
                tick = events.next() => {
                    if tick.is_none() {
                        return Err(Error::Api { what: "watch".into(), detail: "the watch ended before the first list".into() });
                    }
                }
            }
        }
    }
    // The balancer's VRRP peers: a Node watch that never delays the objects (see the module
    // comment); the web role has none.
    let (node_store, node_writer) = reflector::store::<Node>();
    let mut node_events = match node {
        Some(_) => watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(slim_node)
            .reflect(node_writer)
            .map(|event| match event {
                Ok(watcher::Event::InitDone) => true,
                Ok(_) => false,
                Err(e) => {
                    warn!("Node watch failed (the VRRP peers stay as they were), retrying: {e}");
                    false
                }
            })
            .boxed(),
        None => futures::stream::pending().boxed(),
    };
    let mut nodes_listed = false;
    let mut peers = Peers::Unknown;
    let first = snapshot(&vs_store, &rs_store, labels.as_ref(), &peers);
    info!(
        node,
        virtual_services = first.virtual_services.len(),
        real_servers = first.real_servers.len(),
        labels = labels.as_ref().map_or(0, BTreeMap::len),
        "objects listed from the API server"
    );
    let (tx, rx) = watch::channel(Arc::new(first));
    let client_for_labels = client.clone();
    let node = node.map(str::to_owned);
    let task = tokio::spawn(async move {
        let mut relabel = tokio::time::interval(NODE_LABELS_PERIOD);
        relabel.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        relabel.tick().await;
        loop {
            let mut dirty = tokio::select! {
                _ = tx.closed() => return,
                tick = events.next() => {
                    if tick.is_none() {
                        warn!("the API watches ended; keeping the last snapshot");
                        return;
                    }
                    true
                }
                init_done = node_events.next() => {
                    let Some(init_done) = init_done else {
                        // A watcher never ends; should it, its last peers stay.
                        node_events = futures::stream::pending().boxed();
                        continue;
                    };
                    nodes_listed |= init_done;
                    let now = node_peers(&node_store, nodes_listed);
                    if now == peers {
                        false
                    } else {
                        info!(nodes = match &now { Peers::Nodes(n) => n.len(), _ => 0 }, "the Nodes (VRRP peers) changed");
                        peers = now;
                        true
                    }
                }
                _ = relabel.tick(), if node.is_some() => match relabel_node(&client_for_labels, node.as_deref()).await {
                    Ok(new) if new != labels => {
                        info!(node, "this node's labels changed");
                        labels = new;
                        true
                    }
                    Ok(_) => false,
                    Err(e) => {
                        warn!("{e}; keeping the last labels");
                        false
                    }
                },
            };
            if !dirty {
                continue;
            }
            // Collect the rest of the burst.
            let settle = tokio::time::sleep(DEBOUNCE);
            let mut settle = std::pin::pin!(settle);
            while dirty {
                tokio::select! {
                    _ = &mut settle => dirty = false,
                    tick = events.next() => {
                        if tick.is_none() {
                            return;
                        }
                    }
                }
            }
            if tx
                .send(Arc::new(snapshot(
                    &vs_store,
                    &rs_store,
                    labels.as_ref(),
                    &peers,
                )))
                .is_err()
            {
                return;
            }
        }
    });
    Ok((rx, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_peer_is_its_labels_and_ipv4_internal_ips() {
        let mut n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "lb1", "labels": {"lvstun.io/balancer": "true"},
                         "annotations": {"big": "x"}},
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "192.0.2.2"},
                {"type": "InternalIP", "address": "2001:db8::2"},
                {"type": "ExternalIP", "address": "203.0.113.2"},
                {"type": "Hostname", "address": "lb1"}
            ], "capacity": {"cpu": "2"}}
        }))
        .unwrap();
        let before = node_peer(&n);
        slim_node(&mut n);
        assert_eq!(node_peer(&n), before, "slimming keeps what the peers need");
        assert!(n.spec.is_none() && n.metadata.annotations.is_none());
        assert_eq!(
            before,
            NodePeer {
                name: "lb1".into(),
                labels: BTreeMap::from([("lvstun.io/balancer".into(), "true".into())]),
                addresses: vec![Ipv4Addr::new(192, 0, 2, 2)],
            }
        );
    }
}
