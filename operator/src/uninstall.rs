//! `lvstun-operator uninstall`: what the chart's `pre-delete` hook runs before `helm uninstall`
//! deletes anything (ADR 0008). It removes what the operator made that is not part of the
//! release, in the order that lets every node return to its state before the install:
//!
//! 1. scale the operator's Deployment to 0 and wait until its pods are gone, so no operator is
//!    left to apply the DaemonSets again;
//! 2. delete both DaemonSets (and any other DaemonSet of this installation, by its labels) with
//!    `propagationPolicy=Foreground` and wait until they are gone: the DaemonSet gets its
//!    `deletionTimestamp` first, so each daemon pod's SIGTERM sees it and tears its node down
//!    (the daemons' RBAC still exists: helm deletes nothing before the hook succeeds);
//! 3. delete the leader-election Lease.
//!
//! It prints each step; when `--timeout` runs out it exits non-zero naming what is left (the
//! pods still terminating, with their nodes), and helm then deletes nothing.
//!
//! The names follow from `--fullname` as the chart makes them ([`Names::of`], pure); the rest
//! is thin I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::build::{MANAGED_BY, OPERATOR_LABEL};
use crate::cli::LogFormat;
use crate::error::Error;

/// How often the waits look again.
const POLL: Duration = Duration::from_secs(1);

/// `lvstun-operator uninstall`: remove what the operator made (its DaemonSets, whose pods
/// tear their nodes down, and its Lease) after stopping the operator. Run by the chart's
/// pre-delete hook.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "lvstun-operator uninstall",
    bin_name = "lvstun-operator uninstall",
    version
)]
pub struct UninstallArgs {
    /// The release namespace (the operator's, where its DaemonSets and Lease live).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// The chart's fullname: the operator is `<fullname>-operator` (Deployment and Lease), the
    /// DaemonSets `<fullname>-balancer` and `<fullname>-web`.
    #[arg(long)]
    pub fullname: String,
    /// Give up after this long, naming what is left (`120s`, `2m`, or seconds).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Log format of the few log lines (the steps themselves are printed to stdout).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A duration as `120s`, `2m`, `1m30s` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as 120s, 2m or 1m30s");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in s.chars() {
        match c {
            '0'..='9' => digits.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = digits.parse().map_err(|_| bad())?;
                digits.clear();
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
            }
            _ => return Err(bad()),
        }
    }
    if !digits.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The objects of one installation, named after the chart's fullname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The operator's Deployment.
    pub deployment: String,
    /// The DaemonSets as the chart names them (balancer, web).
    pub daemonsets: [String; 2],
    /// The leader-election Lease (also the installation's [`OPERATOR_LABEL`]).
    pub lease: String,
    /// The label selector of every DaemonSet this installation's operator made.
    pub owned_selector: String,
}

impl Names {
    /// The names the chart gives a release whose fullname is `fullname`. Pure.
    pub fn of(fullname: &str) -> Names {
        let lease = format!("{fullname}-operator");
        Names {
            deployment: lease.clone(),
            daemonsets: [format!("{fullname}-balancer"), format!("{fullname}-web")],
            owned_selector: format!(
                "app.kubernetes.io/managed-by={MANAGED_BY},{OPERATOR_LABEL}={lease}"
            ),
            lease,
        }
    }
}

/// A `matchLabels` map as a label selector string (`k=v,k2=v2`). Pure.
pub fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A pod still there, and its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLeft {
    /// The pod's name.
    pub name: String,
    /// Where it runs, if bound.
    pub node: Option<String>,
}

/// A DaemonSet still there, with its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSetLeft {
    /// Its name.
    pub name: String,
    /// Its pods still terminating.
    pub pods: Vec<PodLeft>,
}

/// What is still there, as the timeout message names it. Pure.
pub fn describe_left(
    namespace: &str,
    operator_pods: &[String],
    daemonsets: &[DaemonSetLeft],
) -> String {
    let mut parts = Vec::new();
    if !operator_pods.is_empty() {
        parts.push(format!(
            "operator pods {} (scaled to 0, still terminating)",
            operator_pods.join(", ")
        ));
    }
    for DaemonSetLeft { name: ds, pods } in daemonsets {
        let pods: Vec<String> = pods
            .iter()
            .map(|p| format!("{} on {}", p.name, p.node.as_deref().unwrap_or("no node")))
            .collect();
        parts.push(if pods.is_empty() {
            format!("DaemonSet {namespace}/{ds}")
        } else {
            format!(
                "DaemonSet {namespace}/{ds} with pods still terminating: {} (a node that is down \
                 never confirms; see docs/user-guide.md, Uninstalling)",
                pods.join(", ")
            )
        });
    }
    parts.join("; ")
}

fn request(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |e| Error::Request {
        what,
        source: Box::new(e),
    }
}

fn is_404(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Names of the pods matching `selector` in `namespace`, with their nodes.
async fn pods(api: &Api<Pod>, selector: &str) -> Result<Vec<PodLeft>, Error> {
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(request(format!("listing pods {selector}")))?;
    Ok(list
        .items
        .iter()
        .map(|p| PodLeft {
            name: p.name_any(),
            node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        })
        .collect())
}

/// Runs the uninstall against `client`, printing each step. Errors with what is left when the
/// timeout runs out.
pub async fn run(client: Client, args: &UninstallArgs) -> Result<(), Error> {
    let ns = args.namespace.as_str();
    let names = Names::of(&args.fullname);
    let deadline = Instant::now() + args.timeout;
    let timeout = |left: String| Error::UninstallTimeout {
        seconds: args.timeout.as_secs(),
        left,
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), ns);

    // 1. No operator left to apply the DaemonSets again.
    let scale = Patch::Merge(json!({"spec": {"replicas": 0}}));
    match deployments
        .patch(&names.deployment, &PatchParams::default(), &scale)
        .await
    {
        Ok(d) => {
            println!(
                "uninstall: scaled Deployment {ns}/{} to 0 replicas",
                names.deployment
            );
            let labels = d
                .spec
                .and_then(|s| s.selector.match_labels)
                .unwrap_or_default();
            if !labels.is_empty() {
                let sel = selector(&labels);
                loop {
                    let left = pods(&pod_api, &sel).await?;
                    if left.is_empty() {
                        break;
                    }
                    if Instant::now() >= deadline {
                        let names: Vec<String> = left.into_iter().map(|p| p.name).collect();
                        return Err(timeout(describe_left(ns, &names, &[])));
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            println!("uninstall: the operator's pods are gone");
        }
        Err(e) if is_404(&e) => println!(
            "uninstall: Deployment {ns}/{} not found: no operator runs",
            names.deployment
        ),
        Err(e) => {
            return Err(request(format!(
                "scaling Deployment {ns}/{}",
                names.deployment
            ))(e));
        }
    }

    // 2. The DaemonSets, foreground: their pods see the deletion and tear their nodes down.
    let mut targets: Vec<String> = names.daemonsets.to_vec();
    let labelled = dss
        .list(&ListParams::default().labels(&names.owned_selector))
        .await
        .map_err(request(format!(
            "listing DaemonSets {}",
            names.owned_selector
        )))?;
    for ds in &labelled.items {
        let name = ds.name_any();
        if !targets.contains(&name) {
            targets.push(name);
        }
    }
    // The pod selector of each, read before deletion, to name pods still terminating.
    let mut selectors: BTreeMap<String, String> = BTreeMap::new();
    for name in &targets {
        match dss.delete(name, &DeleteParams::foreground()).await {
            Ok(either) => {
                let ds = either.left();
                if let Some(labels) = ds
                    .as_ref()
                    .and_then(|d| d.spec.as_ref())
                    .and_then(|s| s.selector.match_labels.clone())
                {
                    selectors.insert(name.clone(), selector(&labels));
                }
                println!(
                    "uninstall: deleting DaemonSet {ns}/{name} (foreground: its pods tear their nodes down first)"
                );
            }
            Err(e) if is_404(&e) => println!("uninstall: DaemonSet {ns}/{name} not found"),
            Err(e) => return Err(request(format!("deleting DaemonSet {ns}/{name}"))(e)),
        }
    }
    let mut waiting = targets.clone();
    let mut said_waiting = false;
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for name in &waiting {
            match dss.get(name).await {
                Ok(_) => still.push(name.clone()),
                Err(e) if is_404(&e) => {
                    println!("uninstall: DaemonSet {ns}/{name} is gone");
                }
                Err(e) => return Err(request(format!("reading DaemonSet {ns}/{name}"))(e)),
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let mut left = Vec::new();
            for name in &waiting {
                let pods = match selectors.get(name) {
                    Some(sel) => pods(&pod_api, sel).await.unwrap_or_default(),
                    None => Vec::new(),
                };
                left.push(DaemonSetLeft {
                    name: name.clone(),
                    pods,
                });
            }
            return Err(timeout(describe_left(ns, &[], &left)));
        }
        if !said_waiting {
            println!("uninstall: waiting for the daemon pods to tear down their nodes and go");
            said_waiting = true;
        }
        tokio::time::sleep(POLL).await;
    }

    // 3. The Lease (the operator released it on its way out, but it stays as an object).
    match leases.delete(&names.lease, &DeleteParams::default()).await {
        Ok(_) => println!("uninstall: deleted Lease {ns}/{}", names.lease),
        Err(e) if is_404(&e) => println!("uninstall: Lease {ns}/{} not found", names.lease),
        Err(e) => return Err(request(format!("deleting Lease {ns}/{}", names.lease))(e)),
    }
    println!("uninstall: done; helm deletes the release's own objects next");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_charts_fullname() {
        let n = Names::of("lvstun");
        assert_eq!(n.deployment, "lvstun-operator");
        assert_eq!(n.lease, "lvstun-operator");
        assert_eq!(
            n.daemonsets,
            ["lvstun-balancer".to_string(), "lvstun-web".to_string()]
        );
        assert_eq!(
            n.owned_selector,
            "app.kubernetes.io/managed-by=lvstun-operator,lvstun.io/operator=lvstun-operator"
        );
    }

    #[test]
    fn durations_parse_as_helm_writes_them() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "s", "12x", "1m30", "-5s", "1.5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_arguments_the_hook_passes_parse() {
        let a = UninstallArgs::try_parse_from([
            "uninstall",
            "--namespace=lvstun-system",
            "--fullname=lvstun",
            "--timeout=120s",
        ])
        .unwrap();
        assert_eq!(a.namespace, "lvstun-system");
        assert_eq!(a.fullname, "lvstun");
        assert_eq!(a.timeout, Duration::from_secs(120));
        assert!(UninstallArgs::try_parse_from(["uninstall", "--namespace=n"]).is_err());
    }

    #[test]
    fn what_is_left_is_named() {
        let text = describe_left(
            "lvstun-system",
            &["lvstun-operator-abc".into()],
            &[
                DaemonSetLeft {
                    name: "lvstun-balancer".into(),
                    pods: vec![PodLeft {
                        name: "lvstun-balancer-x1".into(),
                        node: Some("lb1".into()),
                    }],
                },
                DaemonSetLeft {
                    name: "lvstun-web".into(),
                    pods: Vec::new(),
                },
            ],
        );
        assert_eq!(
            text,
            "operator pods lvstun-operator-abc (scaled to 0, still terminating); DaemonSet \
             lvstun-system/lvstun-balancer with pods still terminating: lvstun-balancer-x1 on \
             lb1 (a node that is down never confirms; see docs/user-guide.md, Uninstalling); \
             DaemonSet lvstun-system/lvstun-web"
        );
        let sel = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]);
        assert_eq!(selector(&sel), "a=1,b=2");
    }
}
