//! `operator-bench`: how the operator copes with many objects, beside what the API server itself
//! can do. Starts a control plane, installs the chart, runs the (release) operator binary as its
//! ServiceAccount, and then:
//!
//! 1. **the operator's burst**: creates N VirtualServices with S RealServers each (32 creates at
//!    a time) and prints the time until every VirtualService is reconciled
//!    (`status.observedGeneration` set and its `Conflict` condition written), the reconcile
//!    latency (p50/p99 from the operator's own histogram), its status writes (per object), and
//!    its peak RSS (VmHWM);
//! 2. **the API server's floor**, with the operator stopped: the same burst again (N more
//!    VirtualServices with S RealServers each, in namespaces of their own), and, as each
//!    VirtualService is created, one bare server-side apply of the status the operator wrote on
//!    its twin in part 1 (same body, same field manager, at the operator's `--concurrency`). Their
//!    latencies, timed one by one, are what one status write costs under that load at best: a
//!    reconcile that writes cannot beat them. p50/p99 are printed exactly and as the operator's
//!    histogram would place them (its buckets double, so the two p99s compare in the same
//!    terms).
//!
//! A verdict line per target ends the output, and `key=value` lines (`operator_*`) carry every
//! number for `tests/bench/run.sh`.
//!
//! ```text
//! cargo run --release -p lvstun-tests --bin operator-bench -- [--n 1000] [--servers 10] [--per-namespace 100] [--no-floor] [--debug]
//! ```
//!
//! Not a test: numbers depend on the machine. `--n 10` is a quick smoke run.

use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lvstun_crds::v1alpha1::{RealServer, VirtualService};
use lvstun_tests::controlplane::ControlPlane;
use lvstun_tests::operator_fixture::{
    Install, delete_nodes, metric, node, operator_binary, wait_for,
};
use serde_json::{Value, json};

/// The VirtualService reconcile's p99 target (issue 17).
const P99_TARGET_MS: f64 = 100.0;
/// The peak RSS target at 10,000 VirtualServices (issue 17).
const RSS_TARGET_MIB: f64 = 64.0;
/// From this size on the RSS target applies.
const RSS_TARGET_SIZE: usize = 10_000;
/// Creates in flight at once, in both bursts.
const CREATES_IN_FLIGHT: usize = 32;
/// The operator's `--concurrency` when the chart does not set it (its default).
const OPERATOR_CONCURRENCY: usize = 16;
/// Field manager of every operator write (`lvstun_operator::apply::FIELD_MANAGER`).
const FIELD_MANAGER: &str = "lvstun-operator";

struct Args {
    n: usize,
    servers: usize,
    per_namespace: usize,
    floor: bool,
    debug: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        n: 1000,
        servers: 10,
        per_namespace: 100,
        floor: true,
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
            "--n" => a.n = value()?.max(1),
            "--servers" => a.servers = value()?,
            "--per-namespace" => a.per_namespace = value()?.max(1),
            "--no-floor" => a.floor = false,
            "--debug" => a.debug = true,
            other => anyhow::bail!(
                "unknown argument {other}; usage: operator-bench [--n N] [--servers S] [--per-namespace P] [--no-floor] [--debug]"
            ),
        }
    }
    Ok(a)
}

/// Upper bounds of the operator's reconcile histogram, in seconds (`metrics.rs`: 0.25 ms,
/// doubling, 16 buckets), so a quantile of the floor can be placed the way the operator's is.
fn operator_buckets() -> Vec<f64> {
    (0..16).map(|i| 0.000_25 * 2f64.powi(i)).collect()
}

/// Quantile `q` of cumulative `(upper bound, count)` buckets, interpolated inside its bucket
/// (what Prometheus' `histogram_quantile` does).
fn bucket_quantile(mut buckets: Vec<(f64, f64)>, q: f64) -> Option<f64> {
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

/// Quantile `q` of the reconcile histogram series of `controller`.
fn quantile(metrics: &str, controller: &str, q: f64) -> Option<f64> {
    let prefix = "lvstun_operator_reconcile_duration_seconds_bucket{";
    let buckets: Vec<(f64, f64)> = metrics
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
    bucket_quantile(buckets, q)
}

/// Exact quantile `q` of `samples` (nearest rank), in seconds.
fn exact_quantile(samples: &[Duration], q: f64) -> Option<f64> {
    let mut s: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len().max(1));
    s.get(rank - 1).copied()
}

/// Quantile `q` of `samples` as the operator's histogram would report it.
fn histogram_quantile(samples: &[Duration], q: f64) -> Option<f64> {
    let mut bounds = operator_buckets();
    bounds.push(f64::INFINITY);
    let buckets = bounds
        .iter()
        .map(|le| {
            let n = samples.iter().filter(|d| d.as_secs_f64() <= *le).count();
            (*le, n as f64)
        })
        .collect();
    bucket_quantile(buckets, q)
}

fn ms(s: Option<f64>) -> String {
    s.map(|v| format!("{:.1} ms", v * 1000.0))
        .unwrap_or_else(|| "n/a".into())
}

/// A number for a `key=value` line (`?` when unknown, as `tests/bench/run.sh` reads it).
fn kv(s: Option<f64>) -> String {
    s.map(|v| format!("{v:.1}")).unwrap_or_else(|| "?".into())
}

fn verdict(ok: bool, text: &str) -> String {
    if ok {
        format!("met    {text}")
    } else {
        format!("MISSED {text}")
    }
}

/// The objects of one burst: each VirtualService (labelled `lvstun.io/bench=<set>`) followed by
/// its `servers` RealServers, as (namespace, object).
fn burst<'a>(
    set: &'static str,
    n: usize,
    servers: usize,
    namespaces: &'a [String],
    per_namespace: usize,
) -> impl Iterator<Item = (String, Value)> + 'a {
    (0..n).flat_map(move |i| {
        let ns = namespaces[i / per_namespace].clone();
        let app = format!("svc-{i}");
        let vip = format!("10.{}.{}.{}", (i >>16) & 255, (i >> 8) & 255, i & 255);
        let vs = json!({
            "apiVersion": "lvstun.io/v1alpha1", "kind": "VirtualService",
            "metadata": {"name": app, "labels": {"lvstun.io/bench": set}},
            "spec": {
                "vip": vip, "ports": [{"port": 80}],
                "realServerSelector": {"matchLabels": {"app": app}},
                "balancers": {"nodeSelector": {"matchLabels": {"lvstun.io/balancer": "true"}}, "virtualRouterID": 1 + i % 255}
            }
        });
        let rss = (0..servers).map(move |j| {
            let k = i * 1000 + j;
            json!({
                "apiVersion": "lvstun.io/v1alpha1", "kind": "RealServer",
                "metadata": {"name": format!("svc-{i}-rs-{j}"), "labels": {"app": format!("svc-{i}")}},
                "spec": {"address": format!("172.{}.{}.{}", 16 + ((k >> 16) & 15), (k >> 8) & 255, k & 255)}
            })
        });
        std::iter::once((ns.clone(), vs)).chain(rss.map(move |r| (ns.clone(), r)))
    })
}

/// Create every object of a burst, `CREATES_IN_FLIGHT` at a time; each VirtualService, once
/// created, is sent to `created` (when given) as (namespace, name).
async fn create_all(
    client: &Client,
    objects: impl Iterator<Item = (String, Value)>,
    created: Option<mpsc::UnboundedSender<(String, String)>>,
) -> anyhow::Result<()> {
    stream::iter(objects)
        .map(|(ns, obj)| {
            let client = client.clone();
            let created = created.clone();
            async move {
                let pp = PostParams::default();
                if obj["kind"] == "VirtualService" {
                    let vs: VirtualService = serde_json::from_value(obj)?;
                    let name = vs.metadata.name.clone().unwrap_or_default();
                    Api::<VirtualService>::namespaced(client, &ns)
                        .create(&pp, &vs)
                        .await?;
                    if let Some(tx) = created {
                        let _ = tx.unbounded_send((ns, name));
                    }
                } else {
                    let rs: RealServer = serde_json::from_value(obj)?;
                    Api::<RealServer>::namespaced(client, &ns)
                        .create(&pp, &rs)
                        .await?;
                }
                Ok::<(), anyhow::Error>(())
            }
        })
        .buffer_unordered(CREATES_IN_FLIGHT)
        .try_collect::<()>()
        .await
}

async fn create_namespaces(
    cp: &ControlPlane,
    prefix: &str,
    a: &Args,
) -> anyhow::Result<Vec<String>> {
    let namespaces: Vec<String> = (0..a.n.div_ceil(a.per_namespace))
        .map(|i| format!("{prefix}-{i}"))
        .collect();
    for ns in &namespaces {
        cp.run(
            "kubectl create namespace",
            cp.kubectl().args(["create", "namespace", ns]),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(namespaces)
}

/// What the operator's burst measured.
struct OperatorRun {
    done: usize,
    created_s: f64,
    reconciled_s: f64,
    vs_p50: Option<f64>,
    vs_p99: Option<f64>,
    rs_p50: Option<f64>,
    rs_p99: Option<f64>,
    vs_reconciles: f64,
    rs_reconciles: f64,
    vs_writes: f64,
    rs_writes: f64,
    rss_mib: Option<f64>,
}

/// The floor: one bare server-side apply of the operator's status per VirtualService of a
/// second burst, each timed.
struct Floor {
    created_s: f64,
    latencies: Vec<Duration>,
}

/// The operator-owned part of a stored VirtualService status as a server-side apply body: what
/// the operator sends (`lvstun_operator::reconcile::owned_vs_status`; no balancer reports here).
fn operator_status(vs: &VirtualService) -> anyhow::Result<Value> {
    let mut status = serde_json::to_value(vs.status.clone().unwrap_or_default())?;
    if let Some(s) = status.as_object_mut() {
        s.remove("balancers");
    }
    Ok(status)
}

/// Part 2: with the operator stopped, the same burst into namespaces of its own, and as each
/// VirtualService is created, the status the operator wrote on its twin applied to it.
async fn floor(
    cp: &ControlPlane,
    client: &Client,
    a: &Args,
    prefix: &str,
    statuses: &std::collections::HashMap<String, Value>,
    concurrency: usize,
) -> anyhow::Result<Floor> {
    let namespaces = create_namespaces(cp, prefix, a).await?;
    let (tx, rx) = mpsc::unbounded::<(String, String)>();
    let started = Instant::now();
    let creating = async {
        let r = create_all(
            client,
            burst("floor", a.n, a.servers, &namespaces, a.per_namespace),
            Some(tx),
        )
        .await;
        (r, started.elapsed())
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let writing = rx
        .map(|(ns, name)| {
            let client = client.clone();
            let params = params.clone();
            let status = statuses.get(&name).cloned();
            async move {
                let status =
                    status.ok_or_else(|| anyhow::anyhow!("no operator status for {name}"))?;
                let body = json!({
                    "apiVersion": "lvstun.io/v1alpha1",
                    "kind": "VirtualService",
                    "status": status,
                });
                let api = Api::<VirtualService>::namespaced(client, &ns);
                let t = Instant::now();
                api.patch_status(&name, &params, &Patch::Apply(body))
                    .await?;
                Ok::<Duration, anyhow::Error>(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<Duration>>();
    let ((created, created_s), latencies) = futures::join!(creating, writing);
    created?;
    let latencies = latencies?;
    anyhow::ensure!(
        latencies.len() == a.n,
        "the floor wrote {} of {} statuses",
        latencies.len(),
        a.n
    );
    for ns in &namespaces {
        let _ = cp.run(
            "kubectl delete namespace",
            cp.kubectl()
                .args(["delete", "namespace", ns, "--wait=false"]),
        );
    }
    Ok(Floor {
        created_s: created_s.as_secs_f64(),
        latencies,
    })
}

/// The operator's `--concurrency` as the chart's arguments set it.
fn concurrency_of(args: &[String]) -> usize {
    args.iter()
        .find_map(|a| a.strip_prefix("--concurrency=")?.parse().ok())
        .unwrap_or(OPERATOR_CONCURRENCY)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let cp = ControlPlane::shared().map_err(|e| anyhow::anyhow!("{e}"))?;
    let bin = operator_binary(!a.debug).map_err(|e| anyhow::anyhow!("{e}"))?;
    let install = Install::new(cp, "bench", &[]).await;
    let concurrency = concurrency_of(&install.args);
    let nodes = ["bench-lb1", "bench-lb2", "bench-lb3"];
    for n in nodes {
        node(cp, n, &[("lvstun.io/balancer", "true")]).await;
    }
    let op = install.start(&bin, "bench-0");
    wait_for("the operator to lead", Duration::from_secs(60), || {
        op.is_leader().then_some(())
    });
    let prefix = format!("{}-crs", install.namespace);
    let namespaces = create_namespaces(cp, &prefix, &a).await?;
    let client = cp.client().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "operator-bench: {} VirtualServices x {} RealServers in {} namespaces, operator {} (--concurrency {concurrency})",
        a.n,
        a.servers,
        namespaces.len(),
        bin.display()
    );

    // Part 1: the operator's burst.
    let started = Instant::now();
    create_all(
        &client,
        burst("true", a.n, a.servers, &namespaces, a.per_namespace),
        None,
    )
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
    let mut listed = Vec::new();
    while started.elapsed() < Duration::from_secs(3600) {
        listed = all.list(&lp).await?.items;
        done = listed
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
    // Late writes of the burst (a reconcile already queued) count too: wait until they stop.
    let mut m = op.metrics();
    let writes_of = |m: &str| {
        ["VirtualService", "RealServer"].map(|kind| {
            metric(
                m,
                &format!("lvstun_operator_status_writes_total{{kind=\"{kind}\"}}"),
            )
            .unwrap_or(0.0)
        })
    };
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let next = op.metrics();
        let same = writes_of(&next) == writes_of(&m);
        m = next;
        if same {
            break;
        }
    }
    let [vs_writes, rs_writes] = writes_of(&m);
    let reconciles = |c: &str| {
        metric(
            &m,
            &format!("lvstun_operator_reconciles_total{{controller=\"{c}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let run = OperatorRun {
        done,
        created_s: created.as_secs_f64(),
        reconciled_s: reconciled.as_secs_f64(),
        vs_p50: quantile(&m, "virtualservice", 0.5),
        vs_p99: quantile(&m, "virtualservice", 0.99),
        rs_p50: quantile(&m, "realserver", 0.5),
        rs_p99: quantile(&m, "realserver", 0.99),
        vs_reconciles: reconciles("virtualservice"),
        rs_reconciles: reconciles("realserver"),
        vs_writes,
        rs_writes,
        rss_mib: op.peak_rss_kib().map(|k| k as f64 / 1024.0),
    };
    drop(op);
    let rss = run
        .rss_mib
        .map(|v| format!("{v:.1} MiB"))
        .unwrap_or_else(|| "n/a".into());
    let rs_total = (a.n * a.servers).max(1) as f64;
    println!(
        "all {}/{} VirtualServices reconciled {:.1} s after the first create",
        run.done, a.n, run.reconciled_s
    );
    println!(
        "reconcile latency virtualservice: p50 {} p99 {}; realserver: p50 {} p99 {}",
        ms(run.vs_p50),
        ms(run.vs_p99),
        ms(run.rs_p50),
        ms(run.rs_p99),
    );
    println!(
        "reconciles: virtualservice {} realserver {}; status writes: VirtualService {} ({:.2} per object) RealServer {} ({:.2} per object)",
        run.vs_reconciles,
        run.rs_reconciles,
        run.vs_writes,
        run.vs_writes / a.n as f64,
        run.rs_writes,
        run.rs_writes / rs_total,
    );
    println!("operator peak RSS (VmHWM): {rss}");

    // Part 2: the API server's floor, the operator stopped.
    let statuses: std::collections::HashMap<String, Value> = listed
        .iter()
        .map(|vs| {
            Ok((
                vs.metadata.name.clone().unwrap_or_default(),
                operator_status(vs)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let floor = if a.floor && run.done == a.n {
        let f = floor(
            cp,
            &client,
            &a,
            &format!("{}-floor", install.namespace),
            &statuses,
            concurrency,
        )
        .await?;
        println!(
            "floor: the same burst without the operator ({:.1} s of creates), one server-side apply of the operator's VirtualService status per object as it is created, {concurrency} at a time: {} applies, p50 {} p99 {} (in the operator's histogram buckets: p50 {} p99 {})",
            f.created_s,
            f.latencies.len(),
            ms(exact_quantile(&f.latencies, 0.5)),
            ms(exact_quantile(&f.latencies, 0.99)),
            ms(histogram_quantile(&f.latencies, 0.5)),
            ms(histogram_quantile(&f.latencies, 0.99)),
        );
        Some(f)
    } else {
        None
    };

    for ns in &namespaces {
        let _ = cp.run(
            "kubectl delete namespace",
            cp.kubectl()
                .args(["delete", "namespace", ns, "--wait=false"]),
        );
    }
    delete_nodes(cp, &nodes).await;
    drop(install);

    // The verdicts, and every number for tests/bench/run.sh.
    let floor_p50 = floor
        .as_ref()
        .and_then(|f| exact_quantile(&f.latencies, 0.5));
    let floor_p99 = floor
        .as_ref()
        .and_then(|f| exact_quantile(&f.latencies, 0.99));
    let floor_p99_buckets = floor
        .as_ref()
        .and_then(|f| histogram_quantile(&f.latencies, 0.99));
    let p99_ms = run.vs_p99.map(|v| v * 1000.0);
    let floor_ms = floor_p99_buckets.map(|v| v * 1000.0);
    let writes_per_vs = run.vs_writes / a.n as f64;
    println!();
    println!(
        "targets ({} VirtualServices x {} RealServers)",
        a.n, a.servers
    );
    println!(
        "  {}",
        verdict(
            p99_ms.is_some_and(|p| p < P99_TARGET_MS),
            &format!(
                "VirtualService reconcile p99 < {P99_TARGET_MS:.0} ms: {}",
                ms(run.vs_p99)
            )
        )
    );
    if let Some(f) = floor_ms {
        println!(
            "  {}",
            verdict(
                p99_ms.is_some_and(|p| p <= f),
                &format!(
                    "VirtualService reconcile p99 <= the API server's floor p99 (same buckets): {} vs {}",
                    ms(run.vs_p99),
                    ms(floor_p99_buckets)
                )
            )
        );
    }
    println!(
        "  {}",
        verdict(
            writes_per_vs <= 1.0,
            &format!(
                "at most one VirtualService status write per object in the burst: {writes_per_vs:.2}"
            )
        )
    );
    let rss_line = format!(
        "operator peak RSS < {RSS_TARGET_MIB:.0} MiB at {RSS_TARGET_SIZE} VirtualServices: {rss}"
    );
    if a.n >= RSS_TARGET_SIZE {
        println!(
            "  {}",
            verdict(run.rss_mib.is_some_and(|r| r < RSS_TARGET_MIB), &rss_line)
        );
    } else {
        println!("  (not judged at this size) {rss_line}");
    }
    println!();
    for (k, v) in [
        ("n", a.n.to_string()),
        ("servers", a.servers.to_string()),
        ("done", run.done.to_string()),
        ("created_s", format!("{:.1}", run.created_s)),
        ("reconciled_s", format!("{:.1}", run.reconciled_s)),
        ("vs_p50_ms", kv(run.vs_p50.map(|v| v * 1000.0))),
        ("vs_p99_ms", kv(p99_ms)),
        ("rs_p50_ms", kv(run.rs_p50.map(|v| v * 1000.0))),
        ("rs_p99_ms", kv(run.rs_p99.map(|v| v * 1000.0))),
        ("vs_reconciles", run.vs_reconciles.to_string()),
        ("rs_reconciles", run.rs_reconciles.to_string()),
        ("vs_writes", run.vs_writes.to_string()),
        ("rs_writes", run.rs_writes.to_string()),
        ("vs_writes_per_object", format!("{writes_per_vs:.2}")),
        (
            "rs_writes_per_object",
            format!("{:.2}", run.rs_writes / rs_total),
        ),
        ("rss_mib", kv(run.rss_mib)),
        ("floor_p50_ms", kv(floor_p50.map(|v| v * 1000.0))),
        ("floor_p99_ms", kv(floor_p99.map(|v| v * 1000.0))),
        ("floor_p99_buckets_ms", kv(floor_ms)),
        ("floor_created_s", kv(floor.as_ref().map(|f| f.created_s))),
    ] {
        println!("operator_{k}={v}");
    }
    anyhow::ensure!(
        run.done == a.n,
        "only {} of {} VirtualServices were reconciled",
        run.done,
        a.n
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_samples_exact_and_in_the_operators_buckets() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(exact_quantile(&samples, 0.5), Some(0.050));
        assert_eq!(exact_quantile(&samples, 0.99), Some(0.099));
        // 99 of 100 samples are at most 99 ms; the bucket (64, 128] ms holds the 36 above 64.
        let p99 = histogram_quantile(&samples, 0.99).map(|v| (v * 1000.0).round());
        assert_eq!(p99, Some(126.0));
        assert_eq!(exact_quantile(&[], 0.99), None);
    }

    #[test]
    fn concurrency_from_the_charts_arguments() {
        assert_eq!(concurrency_of(&["--concurrency=4".into()]), 4);
        assert_eq!(
            concurrency_of(&["--namespace=x".into()]),
            OPERATOR_CONCURRENCY
        );
    }
}
