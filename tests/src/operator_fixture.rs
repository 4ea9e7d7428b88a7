//! Running the real `lvstun-operator` binary against the local control plane, the way the chart
//! runs it: installed with `helm install`, authenticated with its own ServiceAccount's token,
//! given the exact arguments of the chart's rendered Deployment (so tests and chart cannot
//! drift). Also namespaces and fake Nodes cleaned up after each test, and HTTP reads of the
//! operator's metrics and health endpoints.
//!
//! Does I/O: runs `cargo build` and `helm`, makes API requests (through [`crate::cluster`]),
//! spawns operator processes (each under a watchdog that stops it when the test process goes
//! away).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use crate::cluster;
use crate::controlplane::{ControlPlane, ControlPlaneError, repo_root, unique_namespace};

/// The operator binary: `LVSTUN_OPERATOR_BIN` if set, else what `cargo build -p lvstun-operator`
/// (with `--release` when asked) produces, built now if stale. Cargo's own JSON messages say where
/// the executable is, whatever `CARGO_TARGET_DIR` is.
pub fn operator_binary(release: bool) -> Result<PathBuf, ControlPlaneError> {
    if let Some(p) = std::env::var_os("LVSTUN_OPERATOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Cargo gives a test process its package's CARGO_* variables; build scripts that watch such
    // variables would otherwise see a change and rebuild half the dependency tree each time.
    let keep = [
        "CARGO_HOME",
        "CARGO_TARGET_DIR",
        "CARGO_TERM_COLOR",
        "CARGO_BUILD_JOBS",
    ];
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && k.starts_with("CARGO_")
            && !keep.contains(&k)
        {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(repo_root()).args([
        "build",
        "-p",
        "lvstun-operator",
        "--bin",
        "lvstun-operator",
        "--message-format=json",
    ]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| ControlPlaneError::Io {
            what: "running cargo build -p lvstun-operator".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(ControlPlaneError::Command {
            what: "cargo build -p lvstun-operator".into(),
            code: out.status.code(),
            stderr: "see above".into(),
            logs: String::new(),
        });
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "lvstun-operator")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| {
            ControlPlaneError::Client(
                "cargo build did not name the lvstun-operator executable".into(),
            )
        })
}

/// Poll `f` every 200 ms until it returns `Some`, or panic after `limit` naming `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// `GET path` on 127.0.0.1:port: the whole response (status line, headers, body), or `None`
/// if nothing answers.
pub fn http_get_raw(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

/// `GET path` on 127.0.0.1:port: the status code and body, or `None` if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let buf = http_get_raw(port, path)?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// The value of one sample line in a Prometheus text exposition (`name{labels} value`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// One `helm install` of the chart in its own namespace, with a release name (and so
/// ClusterRole names) of its own.
pub struct Install {
    /// The control plane.
    pub cp: &'static ControlPlane,
    /// Release namespace (the operator's POD_NAMESPACE; the DaemonSets live here).
    pub namespace: String,
    /// Release name, also the chart's fullname.
    pub release: String,
    /// The operator container's arguments, as the rendered Deployment has them.
    pub args: Vec<String>,
    /// Kubeconfig with the operator ServiceAccount's token.
    pub kubeconfig: PathBuf,
}

impl Install {
    /// `helm install` (with extra `--set` values) and a token for the operator's ServiceAccount.
    pub async fn new(cp: &'static ControlPlane, prefix: &str, sets: &[&str]) -> Install {
        Install::into_labelled_namespace(cp, prefix, sets, &[]).await
    }

    /// Like [`Install::new`], into a namespace created beforehand with these labels, as the
    /// install steps tell users to do (helm's `--create-namespace` cannot label it): what Pod
    /// Security Admission enforces there is decided by the labels before anything is installed.
    pub async fn into_labelled_namespace(
        cp: &'static ControlPlane,
        prefix: &str,
        sets: &[&str],
        labels: &[(&str, &str)],
    ) -> Install {
        let client = cp.client().await.unwrap_or_else(|e| panic!("{e}"));
        let namespace = unique_namespace(prefix);
        if !labels.is_empty() {
            cluster::create_namespace(&client, &namespace, labels)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let release = format!(
            "lvstun-{}",
            namespace.rsplit('-').take(2).collect::<Vec<_>>().join("-")
        );
        // `helm install` of the chart is what is under test: the CLI users run.
        let chart = repo_root().join("deploy/helm/lvstun");
        let mut helm = cp.helm();
        helm.args(["install", &release])
            .arg(&chart)
            .args(["-n", &namespace, "--create-namespace"])
            .args(["--set", &format!("fullnameOverride={release}")])
            // The operator's tests choose VIPs and balancer selectors of their own; the address
            // pools have their test (controlplane_pools), so here the policy only warns. A set
            // below may turn it back on.
            .args(["--set", "vipPolicy.enforce=false"]);
        for s in sets {
            helm.args(["--set", s]);
        }
        cp.run("helm install", &mut helm)
            .unwrap_or_else(|e| panic!("{e}"));
        let deployment = format!("{release}-operator");
        let deploy = Api::<Deployment>::namespaced(client.clone(), &namespace)
            .get(&deployment)
            .await
            .unwrap_or_else(|e| panic!("the operator's Deployment {deployment}: {e}"));
        let args = deploy
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.containers.into_iter().next())
            .and_then(|c| c.args)
            .unwrap_or_default();
        let token = cluster::service_account_token(&client, &namespace, &deployment, 7200)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let kubeconfig = cp
            .write_kubeconfig(&format!("{namespace}-operator"), &token)
            .unwrap_or_else(|e| panic!("{e}"));
        Install {
            cp,
            namespace,
            release,
            args,
            kubeconfig,
        }
    }

    /// The operator's ServiceAccount as RBAC names it.
    pub fn service_account(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}-operator",
            self.namespace, self.release
        )
    }

    /// Start one operator replica named `pod_name` with the chart's arguments (the metrics port
    /// replaced by a free one, so replicas can share this host).
    pub fn start(&self, binary: &Path, pod_name: &str) -> Operator {
        Operator::spawn(binary, self, pod_name, &[])
    }

    /// `helm uninstall` and delete the namespace, waiting until both are gone (also done on drop,
    /// so a failing test cleans up too). `--no-hooks`: this control plane runs no Job controller
    /// and no kubelet, so the chart's pre-delete Job would never run (helm would wait for it
    /// until its timeout); deleting the namespace removes what it would (the DaemonSets, the
    /// Lease). `controlplane_helm.rs` runs the hook's command itself.
    fn uninstall(&self) {
        // `helm uninstall` is how the chart's users remove it.
        let _ = self.cp.run(
            "helm uninstall",
            self.cp.helm().args([
                "uninstall",
                &self.release,
                "-n",
                &self.namespace,
                "--wait",
                "--no-hooks",
            ]),
        );
        let namespace = self.namespace.clone();
        let _ = cluster::blocking(self.cp.kubeconfig(), |client| async move {
            cluster::delete_namespace(&client, &namespace, true).await
        });
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        self.uninstall();
    }
}

/// Namespaces and Nodes a test created, deleted when it ends (passing or not), so a failure
/// cannot leave objects behind that the next test's operator would see.
pub struct Guard {
    cp: &'static ControlPlane,
    namespaces: Vec<String>,
    nodes: Vec<String>,
}

impl Guard {
    /// Nothing to clean up yet.
    pub fn new(cp: &'static ControlPlane) -> Guard {
        Guard {
            cp,
            namespaces: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// A fresh namespace, deleted at the end.
    pub async fn namespace(&mut self, prefix: &str) -> String {
        let ns = namespace(self.cp, prefix).await;
        self.namespaces.push(ns.clone());
        ns
    }

    /// A Ready Node with these labels, deleted at the end.
    pub async fn node(&mut self, name: &str, labels: &[(&str, &str)]) {
        node(self.cp, name, labels).await;
        self.nodes.push(name.to_string());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let (namespaces, nodes) = (&self.namespaces, &self.nodes);
        let cleaned = cluster::blocking(self.cp.kubeconfig(), |client| async move {
            for ns in namespaces {
                cluster::delete_namespace(&client, ns, true).await?;
            }
            let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
            cluster::delete_nodes(&client, &nodes).await
        });
        if let Err(e) = cleaned {
            eprintln!("cleaning up after the test: {e}");
        }
    }
}

/// Runs the operator and stops it when the test process goes away; writes the child's PID to
/// `$1` so a test can kill the operator itself (SIGKILL), not just the watchdog.
const WATCHDOG: &str = r#"pidfile=$1; parent=$2; shift 2
"$@" & child=$!
echo $child > "$pidfile"
trap 'kill $child 2>/dev/null; wait $child; exit 0' TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.2; done
kill $child 2>/dev/null; wait $child"#;

/// One running operator process.
pub struct Operator {
    /// Its pod name (lease identity).
    pub name: String,
    /// Port of /metrics, /healthz, /readyz.
    pub metrics_port: u16,
    /// Where its log goes.
    pub log: PathBuf,
    watchdog: Child,
    pid: u32,
}

impl Operator {
    /// Start one replica; `extra` arguments come last (and win over the chart's).
    pub fn spawn(binary: &Path, install: &Install, pod_name: &str, extra: &[String]) -> Operator {
        let metrics_port = free_port();
        let dir = install.cp.dir().join("operators");
        let _ = std::fs::create_dir_all(&dir);
        let log = dir.join(format!("{}-{pod_name}.log", install.namespace));
        let pidfile = dir.join(format!("{}-{pod_name}.pid", install.namespace));
        let _ = std::fs::remove_file(&pidfile);
        let out = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let mut args = install.args.clone();
        args.push(format!("--metrics-port={metrics_port}"));
        args.extend(extra.iter().cloned());
        let watchdog = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(&pidfile)
            .arg(std::process::id().to_string())
            .arg(binary)
            .args(&args)
            .env("KUBECONFIG", &install.kubeconfig)
            .env("POD_NAMESPACE", &install.namespace)
            .env("POD_NAME", pod_name)
            .env(
                "RUST_LOG",
                std::env::var("LVSTUN_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the operator: {e}"));
        let pid = wait_for("the operator's pid file", Duration::from_secs(10), || {
            std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
        });
        let op = Operator {
            name: pod_name.into(),
            metrics_port,
            log,
            watchdog,
            pid,
        };
        wait_for(
            &format!("{pod_name} to answer /readyz"),
            Duration::from_secs(30),
            || op.get("/readyz").filter(|(c, _)| *c == 200),
        );
        op
    }

    /// The operator process's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `GET path` on its metrics port.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path)
    }

    /// Its /metrics text (empty if it does not answer).
    pub fn metrics(&self) -> String {
        self.get("/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// Whether it reports holding the lease.
    pub fn is_leader(&self) -> bool {
        metric(&self.metrics(), "lvstun_operator_leader") == Some(1.0)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid.to_string()])
            .status();
    }

    /// Kill the operator without warning (SIGKILL): it cannot release the lease.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.watchdog.wait();
    }

    /// Stop it the way the kubelet does (SIGTERM) and wait for it to exit.
    pub fn terminate(&mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.watchdog.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.watchdog.try_wait() {
            self.signal("-KILL");
            let _ = self.watchdog.kill();
            let _ = self.watchdog.wait();
        }
    }
}

/// `kubectl get <what> -n ns -o json`, parsed; `None` if it does not exist. The pod lab's
/// reads; the control-plane tests read typed objects through [`crate::cluster`].
pub fn get_json(cp: &ControlPlane, what: &[&str], namespace: &str) -> Option<serde_json::Value> {
    let out = cp
        .kubectl()
        .arg("get")
        .args(what)
        .args(["-n", namespace, "-o", "json"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// A fresh namespace for CRs.
pub async fn namespace(cp: &ControlPlane, prefix: &str) -> String {
    let ns = unique_namespace(prefix);
    let client = cp.client().await.unwrap_or_else(|e| panic!("{e}"));
    cluster::create_namespace(&client, &ns, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ns
}

/// A Ready, untainted Node with these labels (see [`cluster::node`]); panics if refused.
pub async fn node(cp: &ControlPlane, name: &str, labels: &[(&str, &str)]) {
    let client = cp.client().await.unwrap_or_else(|e| panic!("{e}"));
    cluster::node(&client, name, labels)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Delete Nodes (ignoring those already gone).
pub async fn delete_nodes(cp: &ControlPlane, names: &[&str]) {
    if let Ok(client) = cp.client().await {
        let _ = cluster::delete_nodes(&client, names).await;
    }
}

/// A child process (a daemon under test) killed and reaped when dropped, so a failing test
/// leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
