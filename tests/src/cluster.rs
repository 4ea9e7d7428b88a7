//! Typed access to the test control plane through the kube client, for the control-plane tests:
//! objects are applied server-side and read back as their API types (`VirtualService`,
//! `DaemonSet`, `Event`, ...), waits poll a typed decision with a deadline and fail naming what
//! was awaited and the last value seen, and the views tests check (conditions, Events, names,
//! what an identity may do) are typed values. `kubectl` and `helm` stay only where the CLI
//! itself is what a test is about.
//!
//! Does I/O: API requests to the control plane (and, for [`blocking`], a thread of its own).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Container, Namespace, Node, Pod, PodSpec, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use lvstun_crds::v1alpha1::{RealServer, VirtualService};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::controlplane::{ControlPlaneError, client_from_kubeconfig, repo_root};

/// The field manager of everything the tests apply.
pub const FIELD_MANAGER: &str = "lvstun-tests";

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(250);

/// The error of an API request that failed while doing `what`.
fn failed(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ControlPlaneError {
    let what = what.into();
    move |source| ControlPlaneError::Kube { what, source }
}

/// Observe with `observe` every 250 ms until `decide` accepts what was seen; after `limit`, a
/// [`ControlPlaneError::Timeout`] naming `what` and the last value seen.
pub async fn poll<S, T, F, Fut>(
    what: &str,
    limit: Duration,
    mut observe: F,
    mut decide: impl FnMut(&S) -> Option<T>,
) -> Result<T, ControlPlaneError>
where
    S: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    let deadline = Instant::now() + limit;
    loop {
        let seen = observe().await;
        if let Some(v) = decide(&seen) {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(ControlPlaneError::Timeout {
                what: what.into(),
                limit,
                last: format!("{seen:#?}"),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What a wait saw of one object; printed without its `managedFields` (they drown the rest).
struct Seen<K>(Result<Option<K>, kube::Error>);

impl<K: Resource + Clone + Debug> Debug for Seen<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(Some(obj)) => {
                let mut lean = obj.clone();
                lean.meta_mut().managed_fields = None;
                lean.fmt(f)
            }
            Ok(None) => f.write_str("no such object"),
            Err(e) => write!(f, "error: {e}"),
        }
    }
}

async fn get_seen<K>(api: &Api<K>, name: &str) -> Seen<K>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    Seen(api.get_opt(name).await)
}

/// Await object `name` until `decide` accepts it (an absent object is never accepted).
pub async fn await_object<K, T>(
    api: &Api<K>,
    name: &str,
    what: &str,
    limit: Duration,
    mut decide: impl FnMut(&K) -> Option<T>,
) -> Result<T, ControlPlaneError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    poll(
        what,
        limit,
        || get_seen(api, name),
        |seen| match &seen.0 {
            Ok(Some(obj)) => decide(obj),
            _ => None,
        },
    )
    .await
}

/// Await object `name` being gone.
pub async fn await_gone<K>(
    api: &Api<K>,
    name: &str,
    limit: Duration,
) -> Result<(), ControlPlaneError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let what = format!("{} {name} to be gone", std::any::type_name::<K>());
    poll(
        &what,
        limit,
        || get_seen(api, name),
        |seen| matches!(seen.0, Ok(None)).then_some(()),
    )
    .await
}

/// Objects with conditions (`status.conditions`), looked up by type.
pub trait Conditions {
    /// Every condition, in the object's order.
    fn conditions(&self) -> &[Condition];

    /// The condition of this type, if there is one.
    fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions().iter().find(|c| c.type_ == type_)
    }

    /// Whether the condition of this type has this status (`True`, `False`, `Unknown`).
    fn has(&self, type_: &str, status: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == status)
    }

    /// The reason of the condition of this type (empty when there is none).
    fn reason(&self, type_: &str) -> &str {
        self.condition(type_).map_or("", |c| c.reason.as_str())
    }

    /// The message of the condition of this type (empty when there is none).
    fn message(&self, type_: &str) -> &str {
        self.condition(type_).map_or("", |c| c.message.as_str())
    }
}

impl Conditions for VirtualService {
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map_or(&[], |s| s.conditions.as_slice())
    }
}

impl Conditions for RealServer {
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map_or(&[], |s| s.conditions.as_slice())
    }
}

/// Server-side apply of `obj` (its name from its metadata) as [`FIELD_MANAGER`], taking over
/// fields other managers own, as `kubectl apply --server-side --force-conflicts` does.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, ControlPlaneError>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(failed(format!(
        "applying {} {name}",
        std::any::type_name::<K>()
    )))
}

/// A JSON merge patch of object `name` (e.g. one field of its spec).
pub async fn merge<K>(
    api: &Api<K>,
    name: &str,
    patch: serde_json::Value,
) -> Result<K, ControlPlaneError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(failed(format!("patching {name} with {patch}")))
}

/// Delete object `name` (already gone is fine) without waiting for it to go.
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), ControlPlaneError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(ControlPlaneError::Kube {
            what: format!("deleting {name}"),
            source: e,
        }),
    }
}

/// The documents of a YAML text (`---`-separated) as objects of type `K`; documents with
/// nothing but comments are skipped (a trailing `---` makes no empty object).
pub fn from_yaml<K: DeserializeOwned>(text: &str) -> Result<Vec<K>, ControlPlaneError> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|d| {
            serde_norway::from_str(d).map_err(|e| ControlPlaneError::Yaml(format!("{e}: {d}")))
        })
        .collect()
}

/// The objects of `deploy/examples/<file>` as type `K`.
pub fn example<K: DeserializeOwned>(file: &str) -> Result<Vec<K>, ControlPlaneError> {
    let path = repo_root().join("deploy/examples").join(file);
    let text = std::fs::read_to_string(&path).map_err(|source| ControlPlaneError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    from_yaml(&text)
}

/// The example VirtualService `www` (`deploy/examples/virtualservice.yaml`).
pub fn example_virtual_service() -> Result<VirtualService, ControlPlaneError> {
    example::<VirtualService>("virtualservice.yaml")?
        .pop()
        .ok_or_else(|| ControlPlaneError::Yaml("virtualservice.yaml holds no object".into()))
}

/// Apply the example VirtualService and RealServers (`deploy/examples`) in `ns`.
pub async fn apply_examples(client: &kube::Client, ns: &str) -> Result<(), ControlPlaneError> {
    let vss: Api<VirtualService> = Api::namespaced(client.clone(), ns);
    apply(&vss, &example_virtual_service()?).await?;
    let rss: Api<RealServer> = Api::namespaced(client.clone(), ns);
    for rs in example::<RealServer>("realservers.yaml")? {
        apply(&rss, &rs).await?;
    }
    Ok(())
}

/// The CRDs of `deploy/crds` applied (server-side) and Established.
pub async fn ensure_crds(client: &kube::Client) -> Result<(), ControlPlaneError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in [
        "lvstun.io_virtualservices.yaml",
        "lvstun.io_realservers.yaml",
        "lvstun.io_vippolicies.yaml",
    ] {
        let path = repo_root().join("deploy/crds").join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| ControlPlaneError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        for crd in from_yaml::<CustomResourceDefinition>(&text)? {
            apply(&api, &crd).await?;
            let name = crd.name_any();
            await_object(
                &api,
                &name,
                &format!("CRD {name} Established"),
                Duration::from_secs(60),
                |c| {
                    c.status
                        .as_ref()?
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// Create namespace `name` with these labels (an existing one keeps its own).
pub async fn create_namespace(
    client: &kube::Client,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<(), ControlPlaneError> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: (!labels.is_empty()).then(|| string_map(labels)),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(failed(format!("creating namespace {name}")))?;
    Ok(())
}

/// Delete namespace `name` and, when `wait`, await it being gone (up to 120 s).
pub async fn delete_namespace(
    client: &kube::Client,
    name: &str,
    wait: bool,
) -> Result<(), ControlPlaneError> {
    let api: Api<Namespace> = Api::all(client.clone());
    delete(&api, name).await?;
    if wait {
        await_gone(&api, name, Duration::from_secs(120)).await?;
    }
    Ok(())
}

/// `labels` as a label map.
pub fn string_map(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// Names of the objects of `api` matching the label `selector`, as `kubectl get -o name` lists
/// them (those being deleted too).
pub async fn names<K>(api: &Api<K>, selector: &str) -> Result<Vec<String>, ControlPlaneError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    Ok(list(api, selector)
        .await?
        .iter()
        .map(ResourceExt::name_any)
        .collect())
}

/// Names of the objects of `api` matching the label `selector` that are not being deleted.
pub async fn live_names<K>(api: &Api<K>, selector: &str) -> Result<Vec<String>, ControlPlaneError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    Ok(list(api, selector)
        .await?
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(ResourceExt::name_any)
        .collect())
}

async fn list<K>(api: &Api<K>, selector: &str) -> Result<Vec<K>, ControlPlaneError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(failed(format!("listing {selector}")))?
        .items)
}

/// A bearer token of ServiceAccount `name` in `ns`, valid for `seconds`.
pub async fn service_account_token(
    client: &kube::Client,
    ns: &str,
    name: &str,
    seconds: i64,
) -> Result<String, ControlPlaneError> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(seconds),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(failed(format!("a token of ServiceAccount {ns}/{name}")))?;
    answer
        .status
        .map(|s| s.token)
        .ok_or_else(|| ControlPlaneError::Client(format!("no token for {ns}/{name}")))
}

/// A token of ServiceAccount `account` in `ns` bound to a Pod `pod` of that account on node
/// `node`, as the kubelet gets for a DaemonSet's pod: the API server writes the node into the
/// token, and authenticates it as `authentication.kubernetes.io/node-name` in the user's extra
/// (what the chart's status policy reads). The Pod is created here (applied: an existing one is
/// kept) and never runs: no kubelet needs to. Valid for `seconds`, and while the Pod exists.
pub async fn pod_bound_token(
    client: &kube::Client,
    ns: &str,
    account: &str,
    pod: &str,
    node: &str,
    seconds: i64,
) -> Result<String, ControlPlaneError> {
    let spec = Pod {
        metadata: ObjectMeta {
            name: Some(pod.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            service_account_name: Some(account.into()),
            automount_service_account_token: Some(false),
            containers: vec![Container {
                name: "pause".into(),
                image: Some("registry.k8s.io/pause:3.10".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let created = apply(&Api::<Pod>::namespaced(client.clone(), ns), &spec).await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                uid: created.metadata.uid,
            }),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .map_err(failed(format!(
            "a token of ServiceAccount {ns}/{account} bound to Pod {pod}"
        )))?;
    answer
        .status
        .map(|s| s.token)
        .ok_or_else(|| ControlPlaneError::Client(format!("no token for {ns}/{account}")))
}

/// One question to the API server's authorizer: may this identity do `verb` on this resource?
#[derive(Clone, Debug, Default)]
pub struct Access<'a> {
    /// The verb (`get`, `patch`, `*`, ...).
    pub verb: &'a str,
    /// `resource.group` as kubectl spells it (`daemonsets.apps`, `nodes`,
    /// `events.events.k8s.io`), optionally with `/subresource`; `*` for every resource.
    pub resource: &'a str,
    /// The namespace; `None` asks about every namespace.
    pub namespace: Option<&'a str>,
    /// One object by name.
    pub name: Option<&'a str>,
}

/// Whether ServiceAccount `account` (`system:serviceaccount:NS:NAME`) may do `access`, as the
/// authorizer answers a SubjectAccessReview (the groups are those every ServiceAccount has).
pub async fn service_account_can(
    client: &kube::Client,
    account: &str,
    access: &Access<'_>,
) -> Result<bool, ControlPlaneError> {
    let sa_namespace = account
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_default();
    let (resource, subresource) = access
        .resource
        .split_once('/')
        .map_or((access.resource, None), |(r, s)| (r, Some(s)));
    // kubectl's `resource.group`; `*` is every resource of the core group, as kubectl asks it.
    let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(account.into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{sa_namespace}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(access.verb.into()),
                resource: Some(resource.into()),
                group: Some(group.into()),
                subresource: subresource.map(String::from),
                namespace: access.namespace.map(String::from),
                name: access.name.map(String::from),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(failed(format!("asking whether {account} may {access:?}")))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Create (or update) Node `name` with these labels, Ready and untainted, as a kubelet and the
/// node lifecycle controller would leave it.
pub async fn node(
    client: &kube::Client,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<(), ControlPlaneError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut all = string_map(labels);
    all.insert("kubernetes.io/hostname".into(), name.into());
    let obj = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(all),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    apply(&api, &obj).await?;
    node_ready(client, name, true).await?;
    // The API server taints every new Node `node.kubernetes.io/not-ready:NoSchedule`
    // (TaintNodesByCondition) and the node lifecycle controller lifts the taint once the node
    // is Ready. This control plane runs no lifecycle controller, so do what it would: the
    // DaemonSets tolerate no such taint unless the chart says so (ADR 0007).
    merge(&api, name, serde_json::json!({"spec": {"taints": null}})).await?;
    Ok(())
}

/// Set a Node's `Ready` condition, as its kubelet (True) or the node controller after losing
/// it (Unknown) would.
pub async fn node_ready(
    client: &kube::Client,
    name: &str,
    ready: bool,
) -> Result<(), ControlPlaneError> {
    let now = "2026-01-01T00:00:00Z";
    let (status, reason) = if ready {
        ("True", "KubeletReady")
    } else {
        ("Unknown", "NodeStatusUnknown")
    };
    let patch = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": status, "reason": reason, "message": "fake",
        "lastHeartbeatTime": now, "lastTransitionTime": now
    }]}});
    Api::<Node>::all(client.clone())
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(failed(format!("setting Node {name} Ready={status}")))?;
    Ok(())
}

/// Delete Nodes (ignoring those already gone), without waiting.
pub async fn delete_nodes(client: &kube::Client, names: &[&str]) -> Result<(), ControlPlaneError> {
    let api: Api<Node> = Api::all(client.clone());
    for name in names {
        delete(&api, name).await?;
    }
    Ok(())
}

/// Run `f` with an admin client (from `kubeconfig`) to completion on a thread of its own with
/// its own runtime: for the places that cannot await, destructors above all, whether or not
/// they run inside a runtime.
pub fn blocking<T, F, Fut>(kubeconfig: &Path, f: F) -> Result<T, ControlPlaneError>
where
    T: Send,
    F: FnOnce(kube::Client) -> Fut + Send,
    Fut: Future<Output = Result<T, ControlPlaneError>>,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| ControlPlaneError::Io {
                    what: "building a runtime".into(),
                    source,
                })?;
            rt.block_on(async {
                let client = client_from_kubeconfig(kubeconfig).await?;
                f(client).await
            })
        })
        .join()
        .unwrap_or_else(|_| Err(ControlPlaneError::Client("a blocking call panicked".into())))
    })
}
