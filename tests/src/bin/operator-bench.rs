//! `operator-bench`: how the operator copes with many objects. Starts a control plane, installs
//! the chart, runs the (release) operator binary as its ServiceAccount, creates N
//! VirtualServices with S RealServers each, and prints the time until every VirtualService is
//! reconciled (`status.observedGeneration` set and its `Conflict` condition written), the
//! reconcile latency (p50/p99 from the operator's own histogram), status writes, and the
//! operator's peak RSS (VmHWM).
//!
//! ```text
//! cargo run --release -p lvstun-tests --bin operator-bench -- [--n 1000] [--servers 10] [--per-namespace 100] [--debug]
//! ```
//!
//! Not a test: numbers depend on the machine. `--n 10` is a quick smoke run.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::Api;
use kube::api::{ListParams, PostParams};
use lvstun_crds::v1alpha1::{RealServer, VirtualService};
use lvstun_tests::controlplane::ControlPlane;
use lvstun_tests::operator_fixture::{
    Install, delete_nodes, metric, node, operator_binary, wait_for,
};
use serde_json::json;

struct Args {
    n: usize,
    servers: usize,
    per_namespace: usize,
    debug: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        n: 1000,
        servers: 10,
        per_namespace: 100,
        debug: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> anyhow::Result<usize> {
            Ok(it
                .next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?
                .parse()?)
        };
        match flag.as_str() {
            "--n" => a.n = value()?,
            "--servers" => a.servers = value()?,
            "--per-namespace" => a.per_namespace = value()?.max(1),
            "--debug" => a.debug = true,
            other => anyhow::bail!(
                "unknown argument {other}; usage: operator-bench [--n N] [--servers S] [--per-namespace P] [--debug]"
            ),
        }
    }
    Ok(a)
}

/// Quantile `q` of the histogram series of `controller`, interpolated inside its bucket.
fn quantile(metrics: &str, controller: &str, q: f64) -> Option<f64> {
    let prefix = "lvstun_operator_reconcile_duration_seconds_bucket{";
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!("controller=\"{controller}\"")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (le - lower) * frac);
        }
        lower = le;
        below = count;
    }
    None
}

fn ms(s: Option<f64>) -> String {
    s.map(|v| format!("{:.1} ms", v * 1000.0))
        .unwrap_or_else(|| "n/a".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let cp = ControlPlane::shared().map_err(|e| anyhow::anyhow!("{e}"))?;
    let bin = operator_binary(!a.debug).map_err(|e| anyhow::anyhow!("{e}"))?;
    let install = Install::new(cp, "bench", &[]).await;
    let nodes = ["bench-lb1", "bench-lb2", "bench-lb3"];
    for n in nodes {
        node(cp, n, &[("lvstun.io/balancer", "true")]).await;
    }
    let op = install.start(&bin, "bench-0");
    wait_for("the operator to lead", Duration::from_secs(60), || {
        op.is_leader().then_some(())
    });
    let namespaces: Vec<String> = (0..a.n.div_ceil(a.per_namespace))
        .map(|i| format!("{}-crs-{i}", install.namespace))
        .collect();
    for ns in &namespaces {
        cp.run(
            "kubectl create namespace",
            cp.kubectl().args(["create", "namespace", ns]),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let client = cp.client().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "operator-bench: {} VirtualServices x {} RealServers in {} namespaces, operator {}",
        a.n,
        a.servers,
        namespaces.len(),
        bin.display()
    );

    let started = Instant::now();
    let objects = (0..a.n).flat_map(|i| {
        let ns = namespaces[i / a.per_namespace].clone();
        let app = format!("svc-{i}");
        let vip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        let vs = json!({
            "apiVersion": "lvstun.io/v1alpha1", "kind": "VirtualService",
            "metadata": {"name": app, "labels": {"lvstun.io/bench": "true"}},
            "spec": {
                "vip": vip, "ports": [{"port": 80}],
                "realServerSelector": {"matchLabels": {"app": app}},
                "balancers": {"nodeSelector": {"matchLabels": {"lvstun.io/balancer": "true"}}, "virtualRouterID": 1 + i % 255}
            }
        });
        let rss = (0..a.servers).map(move |j| {
            let k = i * 1000 + j;
            json!({
                "apiVersion": "lvstun.io/v1alpha1", "kind": "RealServer",
                "metadata": {"name": format!("svc-{i}-rs-{j}"), "labels": {"app": format!("svc-{i}")}},
                "spec": {"address": format!("172.{}.{}.{}", 16 + ((k >> 16) & 15), (k >> 8) & 255, k & 255)}
            })
        });
        std::iter::once((ns.clone(), vs)).chain(rss.map(move |r| (ns.clone(), r)))
    });
    stream::iter(objects)
        .map(|(ns, obj)| {
            let client = client.clone();
            async move {
                let pp = PostParams::default();
                if obj["kind"] == "VirtualService" {
                    let vs: VirtualService = serde_json::from_value(obj)?;
                    Api::<VirtualService>::namespaced(client, &ns)
                        .create(&pp, &vs)
                        .await?;
                } else {
                    let rs: RealServer = serde_json::from_value(obj)?;
                    Api::<RealServer>::namespaced(client, &ns)
                        .create(&pp, &rs)
                        .await?;
                }
                Ok::<(), anyhow::Error>(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    let created = started.elapsed();
    println!(
        "created {} objects in {:.1} s",
        a.n * (1 + a.servers),
        created.as_secs_f64()
    );

    let all: Api<VirtualService> = Api::all(client.clone());
    let lp = ListParams::default().labels("lvstun.io/bench=true");
    let mut done = 0;
    while started.elapsed() < Duration::from_secs(1800) {
        let list = all.list(&lp).await?;
        done = list
            .items
            .iter()
            .filter(|vs| {
                let st = vs.status.as_ref();
                st.and_then(|s| s.observed_generation) == vs.metadata.generation
                    && st.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Conflict"))
            })
            .count();
        if done == a.n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let reconciled = started.elapsed();
    let m = op.metrics();
    let writes = |kind: &str| {
        metric(
            &m,
            &format!("lvstun_operator_status_writes_total{{kind=\"{kind}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let reconciles = |c: &str| {
        metric(
            &m,
            &format!("lvstun_operator_reconciles_total{{controller=\"{c}\"}}"),
        )
        .unwrap_or(0.0)
    };
    println!(
        "all {done}/{} VirtualServices reconciled {:.1} s after the first create",
        a.n,
        reconciled.as_secs_f64()
    );
    println!(
        "reconcile latency virtualservice: p50 {} p99 {}; realserver: p50 {} p99 {}",
        ms(quantile(&m, "virtualservice", 0.5)),
        ms(quantile(&m, "virtualservice", 0.99)),
        ms(quantile(&m, "realserver", 0.5)),
        ms(quantile(&m, "realserver", 0.99)),
    );
    println!(
        "reconciles: virtualservice {} realserver {} daemonsets {}; status writes: VirtualService {} RealServer {}",
        reconciles("virtualservice"),
        reconciles("realserver"),
        reconciles("daemonsets"),
        writes("VirtualService"),
        writes("RealServer")
    );
    println!(
        "operator peak RSS (VmHWM): {} MiB",
        op.peak_rss_kib()
            .map(|k| format!("{:.1}", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    );

    drop(op);
    for ns in &namespaces {
        let _ = cp.run(
            "kubectl delete namespace",
            cp.kubectl()
                .args(["delete", "namespace", ns, "--wait=false"]),
        );
    }
    delete_nodes(cp, &nodes).await;
    drop(install);
    anyhow::ensure!(
        done == a.n,
        "only {done} of {} VirtualServices were reconciled",
        a.n
    );
    Ok(())
}
