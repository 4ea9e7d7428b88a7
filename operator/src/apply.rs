//! The thin layer that writes: server-side apply of the node DaemonSets and of the
//! operator-owned status fields, and deletion of a DaemonSet no CR needs. Every write uses the
//! field manager `lvstun-operator` and forces ownership of the fields it sends: the operator is
//! the only rightful writer of those fields, while the daemons own other fields of the same
//! status (their list-map entries), which server-side apply leaves untouched.
//!
//! I/O only; what to write is decided elsewhere.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use lvstun_crds::v1alpha1::{RealServer, RealServerStatus, VirtualService, VirtualServiceStatus};
use serde_json::json;

use crate::error::Error;
use crate::status::Notice;

/// Field manager of every operator write.
pub const FIELD_MANAGER: &str = "lvstun-operator";

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Server-side apply a DaemonSet; returns it as stored.
pub async fn daemonset(client: &Client, ds: &DaemonSet) -> Result<DaemonSet, Error> {
    let namespace = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &namespace);
    let mut body = serde_json::to_value(ds).map_err(|source| Error::Serialize {
        what: format!("DaemonSet {name}"),
        source,
    })?;
    // k8s-openapi's types leave these out; server-side apply needs them.
    body["apiVersion"] = json!("apps/v1");
    body["kind"] = json!("DaemonSet");
    api.patch(&name, &params(), &Patch::Apply(body))
        .await
        .map_err(|source| Error::Apply {
            kind: "DaemonSet",
            namespace,
            name,
            source: Box::new(source),
        })
}

/// Delete a DaemonSet (its pods go with it, in the background). Already gone is fine.
pub async fn delete_daemonset(client: &Client, namespace: &str, name: &str) -> Result<(), Error> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: "DaemonSet",
            namespace: namespace.into(),
            name: name.into(),
            source: Box::new(source),
        }),
    }
}

/// Server-side apply the operator-owned part of a VirtualService's status; returns the object as
/// stored (its resourceVersion tells later reconciles whether the cache has caught up), or
/// `None` when it is gone: an object deleted while its reconcile ran has no status to write,
/// and that is no failure (no Warning, no retry).
pub async fn virtual_service_status(
    client: &Client,
    vs: &VirtualService,
    status: &VirtualServiceStatus,
) -> Result<Option<VirtualService>, Error> {
    let namespace = vs.namespace().unwrap_or_default();
    let name = vs.name_any();
    let api: Api<VirtualService> = Api::namespaced(client.clone(), &namespace);
    let body = json!({
        "apiVersion": "lvstun.io/v1alpha1",
        "kind": "VirtualService",
        "status": status,
    });
    match api
        .patch_status(&name, &params(), &Patch::Apply(body))
        .await
    {
        Ok(stored) => Ok(Some(stored)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(source) => Err(Error::Status {
            kind: "VirtualService",
            namespace,
            name,
            source: Box::new(source),
        }),
    }
}

/// Server-side apply the operator-owned part of a RealServer's status (its `Healthy` condition);
/// `None` when it is gone, as for [`virtual_service_status`].
pub async fn real_server_status(
    client: &Client,
    rs: &RealServer,
    status: &RealServerStatus,
) -> Result<Option<RealServer>, Error> {
    let namespace = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let api: Api<RealServer> = Api::namespaced(client.clone(), &namespace);
    let body = json!({
        "apiVersion": "lvstun.io/v1alpha1",
        "kind": "RealServer",
        "status": status,
    });
    match api
        .patch_status(&name, &params(), &Patch::Apply(body))
        .await
    {
        Ok(stored) => Ok(Some(stored)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(source) => Err(Error::Status {
            kind: "RealServer",
            namespace,
            name,
            source: Box::new(source),
        }),
    }
}

/// Record an Event (events.k8s.io/v1) about `regarding`. Each transition gets an Event of its own:
/// kube's `Recorder` folds Events with the same reason into one series that keeps the first note,
/// which would show "lb1 now holds the VIP" long after lb2 took it.
pub async fn event(
    client: &Client,
    instance: &str,
    regarding: &ObjectReference,
    notice: &Notice,
) -> Result<(), kube::Error> {
    let namespace = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let now = Timestamp::now();
    let mut note = notice.note.clone();
    if note.len() > 1024 {
        let mut cut = 1024;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                regarding.name.as_deref().unwrap_or("lvstun"),
                now.as_nanosecond()
            )),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some("Reconcile".into()),
        reason: Some(notice.reason.into()),
        note: Some(note),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(FIELD_MANAGER.into()),
        reporting_instance: Some(instance.into()),
        type_: Some(notice.severity.as_str().into()),
        ..Default::default()
    };
    Api::<Event>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &ev)
        .await
        .map(|_| ())
}
