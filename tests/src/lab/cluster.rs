//! The lab with the control plane: the host runs the API server, `helm install`s the chart and
//! runs the real operator (with its own ServiceAccount's token); the node daemons run in the VM
//! exactly as the operator's DaemonSets say, reaching the API server through the management
//! link. Shared by `tests/tests/lab_cluster.rs` (the proof) and `lvstun-lab demo` (the
//! README's walkthrough), so the two cannot drift.
//!
//! The guest script (`tests/lab/scenarios/cluster.sh`) stops at checkpoints: it writes
//! `phase/NAME` into the run folder and waits for `ack/NAME`. [`Host::answer`] looks at the API
//! (status conditions, `kubectl get`) or acts on the control plane (restarts the operator, stops
//! and starts the API server) before acknowledging. What it saw goes into [`Findings`]; a
//! checkpoint whose expectation the API did not meet is a failure there, not a panic, so the VM
//! always runs to its end and leaves its logs.
//!
//! Does I/O: `kubectl`, `helm`, the operator process, files in the run folder, the VM.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{LabError, LabRun, Result, ScenarioOptions, new_run_dir, run_scenario_with};
use crate::controlplane::{ControlPlane, repo_root};
use crate::operator_fixture::{Guard, Install, Operator, get_json};

/// The nodes of the lab topology that are cluster nodes, and their labels.
pub const NODES: &[(&str, &[(&str, &str)])] = &[
    ("lb1", &[("lvstun.io/balancer", "true")]),
    ("lb2", &[("lvstun.io/balancer", "true")]),
    ("web1", &[("lvstun.io/web", "true")]),
    ("web2", &[("lvstun.io/web", "true")]),
];

/// Every checkpoint `cluster.sh` stops at, in order.
pub const CHECKPOINTS: &[&str] = &[
    "steady",
    "web1-down",
    "web1-up",
    "restart-operator",
    "apiserver-stop",
    "apiserver-start",
    "lb1-back",
];

/// How long the host waits for the API to show what the guest just did.
const STATUS_WAIT: Duration = Duration::from_secs(90);

/// Polls `f` every 500 ms until it returns `Some`, at most `limit`; `None` on timeout.
pub(crate) fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The `status` of condition `kind` in an object's `status.conditions`.
pub fn condition(obj: &serde_json::Value, kind: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
        .map(str::to_owned)
}

/// What the host saw at the checkpoints.
#[derive(Debug, Default)]
pub struct Findings {
    /// Checkpoints answered, in order.
    pub answered: Vec<String>,
    /// What was seen, with timings.
    pub notes: Vec<String>,
    /// Expectations the API did not meet in time.
    pub failures: Vec<String>,
}

/// One environment variable of the DaemonSet's container.
enum EnvSource {
    Value(String),
    Field(String),
}

/// The pod template of one DaemonSet: what the kubelet would run.
struct PodSpec {
    args: Vec<String>,
    env: Vec<(String, EnvSource)>,
    service_account: String,
}

/// The DaemonSet of `component` (`balancer` or `web`) in `ns`.
fn daemonset(cp: &ControlPlane, ns: &str, component: &str) -> Option<PodSpec> {
    let selector = format!("app.kubernetes.io/component={component}");
    let list = get_json(cp, &["daemonsets", "-l", &selector], ns)?;
    let ds = list["items"].as_array()?.first()?.clone();
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = c["args"]
        .as_array()?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let env = c["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|v| {
                    let name = v["name"].as_str()?.to_owned();
                    if let Some(value) = v["value"].as_str() {
                        Some((name, EnvSource::Value(value.to_owned())))
                    } else {
                        let path = v["valueFrom"]["fieldRef"]["fieldPath"].as_str()?;
                        Some((name, EnvSource::Field(path.to_owned())))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Some(PodSpec {
        args,
        env,
        service_account: pod["serviceAccountName"].as_str()?.to_owned(),
    })
}

/// Writes `NODE.{args,env,token}` into `dir`: the pod the kubelet would run on NODE, with
/// `$(VAR)` in the arguments expanded from the environment as the kubelet does.
fn write_launch(cp: &ControlPlane, ns: &str, spec: &PodSpec, node: &str, dir: &Path) -> Result<()> {
    let pod = format!("{}-{node}", spec.service_account);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (name, source) in &spec.env {
        let value = match source {
            EnvSource::Value(v) => v.clone(),
            EnvSource::Field(path) => match path.as_str() {
                "spec.nodeName" => node.to_owned(),
                "metadata.name" => pod.clone(),
                "metadata.namespace" => ns.to_owned(),
                other => {
                    return Err(LabError::Setup(format!(
                        "the lab cannot give a pod the field {other} (env {name})"
                    )));
                }
            },
        };
        env.insert(name.clone(), value);
    }
    let expand = |arg: &str| -> String {
        let mut out = arg.to_owned();
        for (k, v) in &env {
            out = out.replace(&format!("$({k})"), v);
        }
        out
    };
    let args: Vec<String> = spec.args.iter().map(|a| expand(a)).collect();
    let token = cp
        .run(
            "kubectl create token",
            cp.kubectl().args([
                "create",
                "token",
                &spec.service_account,
                "-n",
                ns,
                "--duration=2h",
            ]),
        )
        .map_err(|e| LabError::Setup(e.to_string()))?;
    let env_text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    for (file, text) in [
        (format!("{node}.args"), args.join("\n") + "\n"),
        (format!("{node}.env"), env_text),
        (format!("{node}.token"), token.trim().to_owned()),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| LabError::Io {
            what: format!("writing {}", path.display()),
            source: e,
        })?;
    }
    Ok(())
}

/// The host side of one cluster lab run.
pub struct Host {
    cp: &'static ControlPlane,
    /// The namespace of the example objects.
    pub ns: String,
    install: Install,
    _guard: Guard,
    operator_bin: PathBuf,
    operator: Option<Operator>,
    /// The run's folder (made before the VM boots, so both sides see it).
    pub out: PathBuf,
    /// What the checkpoints showed.
    pub findings: Findings,
    /// Print notes as they come (the demo does; the test prints them on failure too).
    pub verbose: bool,
}

impl Host {
    /// `helm install`s the chart, starts the operator, makes the Nodes and the example objects
    /// (each RealServer on its web node), and writes the DaemonSets' pods for the guest.
    pub fn prepare(cp: &'static ControlPlane, operator_bin: PathBuf) -> Result<Host> {
        let install = Install::new(cp, "lvstun-lab", &[]);
        let operator = install.start(&operator_bin, "lvstun-operator-0");
        let mut guard = Guard::new(cp);
        for (name, labels) in NODES {
            guard.node(name, labels);
        }
        let ns = guard.namespace("lab");
        let setup = |e: crate::controlplane::ControlPlaneError| LabError::Setup(e.to_string());
        cp.run(
            "kubectl apply examples",
            cp.kubectl()
                .args(["apply", "-n", &ns, "-f"])
                .arg(repo_root().join("deploy/examples")),
        )
        .map_err(setup)?;
        for (rs, node) in [("web1", "web1"), ("web2", "web2")] {
            cp.run(
                "kubectl patch realserver nodeName",
                cp.kubectl().args([
                    "patch",
                    "realserver",
                    rs,
                    "-n",
                    &ns,
                    "--type=merge",
                    "-p",
                    &format!("{{\"spec\":{{\"nodeName\":\"{node}\"}}}}"),
                ]),
            )
            .map_err(setup)?;
        }
        let balancer = poll(STATUS_WAIT, || {
            daemonset(cp, &install.namespace, "balancer")
        })
        .ok_or_else(|| LabError::Setup("the operator made no balancer DaemonSet".into()))?;
        let web = poll(STATUS_WAIT, || daemonset(cp, &install.namespace, "web"))
            .ok_or_else(|| LabError::Setup("the operator made no web DaemonSet".into()))?;

        let out = new_run_dir("cluster")?;
        let launch = out.join("launch");
        for dir in [&launch, &out.join("phase"), &out.join("ack")] {
            std::fs::create_dir_all(dir).map_err(|e| LabError::Io {
                what: format!("creating {}", dir.display()),
                source: e,
            })?;
        }
        for node in ["lb1", "lb2"] {
            write_launch(cp, &install.namespace, &balancer, node, &launch)?;
        }
        for node in ["web1", "web2"] {
            write_launch(cp, &install.namespace, &web, node, &launch)?;
        }
        Ok(Host {
            cp,
            ns,
            install,
            _guard: guard,
            operator_bin,
            operator: Some(operator),
            out,
            findings: Findings::default(),
            verbose: false,
        })
    }

    /// Boots the VM on `cluster.sh` and answers its checkpoints until it ends.
    pub fn run(&mut self, timeout: Duration) -> Result<LabRun> {
        let api_port: u16 = self
            .cp
            .server_url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| LabError::Setup("no port in the API server's URL".into()))?;
        let options = ScenarioOptions {
            mgmt_port: Some(api_port),
            timeout: Some(timeout),
            out_dir: Some(self.out.clone()),
            ..ScenarioOptions::default()
        };
        let vm = std::thread::spawn(move || run_scenario_with("cluster", &options));
        while !vm.is_finished() {
            let mut phases: Vec<(SystemTime, String)> = std::fs::read_dir(self.out.join("phase"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            let name = e.file_name().to_string_lossy().into_owned();
                            let t = e.metadata().ok()?.modified().ok()?;
                            Some((t, name))
                        })
                        .filter(|(_, n)| !self.findings.answered.contains(n))
                        .collect()
                })
                .unwrap_or_default();
            phases.sort();
            for (_, phase) in phases {
                self.note(format!("guest checkpoint {phase}"));
                self.answer(&phase);
                let ack = self.out.join("ack").join(&phase);
                std::fs::write(&ack, "ok\n").map_err(|e| LabError::Io {
                    what: format!("writing {}", ack.display()),
                    source: e,
                })?;
                self.findings.answered.push(phase);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        // The API server must be up again for the cleanup, whatever happened in the guest.
        if self.cp.wait_ready(Duration::from_secs(1)).is_err() {
            let _ = self.cp.start_apiserver();
            let _ = self.cp.wait_ready(Duration::from_secs(120));
        }
        vm.join()
            .map_err(|_| LabError::Setup("the VM thread panicked".into()))?
    }

    fn vs(&self) -> Option<serde_json::Value> {
        get_json(self.cp, &["virtualservice", "www"], &self.ns)
    }

    fn rs(&self, name: &str) -> Option<serde_json::Value> {
        get_json(self.cp, &["realserver", name], &self.ns)
    }

    fn note(&mut self, s: String) {
        if self.verbose {
            println!("  [host] {s}");
        } else {
            eprintln!("[lab_cluster] {s}");
        }
        self.findings.notes.push(s);
    }

    fn fail(&mut self, s: String) {
        eprintln!("[lab_cluster] FAILED: {s}");
        self.findings.failures.push(s);
    }

    /// Waits until `want` holds for the VirtualService; a failure naming `what` otherwise.
    fn expect_vs(&mut self, what: &str, want: impl Fn(&serde_json::Value) -> bool) {
        let t0 = Instant::now();
        if poll(STATUS_WAIT, || self.vs().filter(|v| want(v))).is_some() {
            self.note(format!(
                "{what}: seen after {} ms",
                t0.elapsed().as_millis()
            ));
        } else {
            let last = self
                .vs()
                .map(|v| v["status"].to_string())
                .unwrap_or_default();
            self.fail(format!(
                "{what}: not seen within {STATUS_WAIT:?}; last status {last}"
            ));
        }
    }

    /// Waits until RealServer `name` has condition `kind` = `status`.
    fn expect_rs(&mut self, name: &str, kind: &str, status: &str) {
        let t0 = Instant::now();
        let want = Some(status.to_owned());
        if poll(STATUS_WAIT, || {
            self.rs(name).filter(|r| condition(r, kind) == want)
        })
        .is_some()
        {
            self.note(format!(
                "RealServer {name} {kind}={status}: seen after {} ms",
                t0.elapsed().as_millis()
            ));
        } else {
            let last = self
                .rs(name)
                .map(|v| v["status"].to_string())
                .unwrap_or_default();
            self.fail(format!(
                "RealServer {name} {kind}={status} not seen within {STATUS_WAIT:?}; last status {last}"
            ));
        }
    }

    /// `kubectl get lvsvc,lvsrs` as a person types it: saved, and added to the walkthrough.
    fn kubectl_get(&mut self, label: &str) {
        let text = self
            .cp
            .run(
                "kubectl get lvsvc,lvsrs",
                self.cp
                    .kubectl()
                    .args(["get", "lvsvc,lvsrs", "-n", &self.ns]),
            )
            .unwrap_or_else(|e| e.to_string());
        let _ = std::fs::write(self.out.join(format!("kubectl-get-{label}.txt")), &text);
        // The guest is waiting for this checkpoint's answer, so the two never write at once.
        if let Ok(mut demo) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out.join("demo.txt"))
        {
            let _ = write!(demo, "\n$ kubectl get lvsvc,lvsrs\n{text}");
        }
        self.note(format!("kubectl get lvsvc,lvsrs ({label}):\n{text}"));
    }

    fn active_is(v: &serde_json::Value, node: &str) -> bool {
        v["status"]["activeBalancer"] == node
    }

    /// One checkpoint of the guest (see [`CHECKPOINTS`]).
    pub fn answer(&mut self, phase: &str) {
        match phase {
            // Ready, the active balancer, 2/2 healthy; TunnelReady from the web daemons.
            "steady" => {
                self.expect_vs("lvsvc www Ready, active lb1, healthy 2/2", |v| {
                    condition(v, "Ready").as_deref() == Some("True")
                        && Self::active_is(v, "lb1")
                        && v["status"]["healthyRealServers"] == 2
                        && v["status"]["totalRealServers"] == 2
                });
                for rs in ["web1", "web2"] {
                    self.expect_rs(rs, "Healthy", "True");
                    self.expect_rs(rs, "TunnelReady", "True");
                }
                self.kubectl_get("steady");
            }
            // The health check's verdict reaches the RealServer.
            "web1-down" => {
                self.expect_rs("web1", "Healthy", "False");
                self.expect_vs("lvsvc www healthy 1/2", |v| {
                    v["status"]["healthyRealServers"] == 1
                });
                self.kubectl_get("web1-down");
            }
            "web1-up" => {
                self.expect_rs("web1", "Healthy", "True");
                self.expect_vs("lvsvc www healthy 2/2 again", |v| {
                    v["status"]["healthyRealServers"] == 2
                });
            }
            // The operator is killed and started again while the guest's load runs.
            "restart-operator" => {
                if let Some(mut op) = self.operator.take() {
                    op.kill();
                }
                let t0 = Instant::now();
                self.operator = Some(self.install.start(&self.operator_bin, "lvstun-operator-1"));
                self.note(format!(
                    "operator killed and started again in {} ms",
                    t0.elapsed().as_millis()
                ));
            }
            // The API server goes away; the guest then checks health and failover without it.
            "apiserver-stop" => {
                self.cp.stop("kube-apiserver");
                self.note("kube-apiserver stopped".into());
            }
            "apiserver-start" => {
                let t0 = Instant::now();
                let started = self
                    .cp
                    .start_apiserver()
                    .and_then(|()| self.cp.wait_ready(Duration::from_secs(120)));
                if let Err(e) = started {
                    self.fail(format!("kube-apiserver did not come back: {e}"));
                    return;
                }
                self.note(format!(
                    "kube-apiserver started again, ready in {} ms",
                    t0.elapsed().as_millis()
                ));
                // Status catches up: lb2 took over while the API server was away.
                self.expect_vs("status caught up: active lb2", |v| {
                    Self::active_is(v, "lb2")
                });
                self.kubectl_get("after-apiserver");
            }
            // lb1 back: it preempts.
            "lb1-back" => {
                self.expect_vs("active lb1 again (preempt)", |v| Self::active_is(v, "lb1"));
                // Its fresh health checks pass and the status settles back to the steady state.
                self.expect_vs("lvsvc www Ready, active lb1, healthy 2/2 again", |v| {
                    condition(v, "Ready").as_deref() == Some("True")
                        && Self::active_is(v, "lb1")
                        && v["status"]["healthyRealServers"] == 2
                });
                self.kubectl_get("final");
            }
            other => self.fail(format!("unknown checkpoint {other:?} from the guest")),
        }
    }
}
