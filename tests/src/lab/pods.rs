//! The pod lab's host side: a control plane that real kubelets join (Node authorization, a token
//! per node, kube-scheduler), the chart installed exactly as the README says, and answers to the
//! checkpoints of `tests/lab/scenarios/pods.sh`, whose nodes (lb1, lb2, web1) run containerd,
//! kubelet and kube-proxy inside the VM and the lvstun images as pods. Shared by
//! `tests/tests/lab_pods.rs` (the proof) and `lvstun-lab demo` (the README's walkthrough).
//!
//! At each checkpoint the host looks at the API (Nodes, Pods, status conditions, `kubectl get`)
//! or acts on it (installs, deletes a pod); what it saw goes into [`Findings`], and an
//! expectation the API did not meet is a failure there, not a panic, so the VM always runs to
//! its end and leaves its logs. A checkpoint whose preparation failed is answered with the
//! reason instead of `ok`, and the guest stops.
//!
//! Does I/O: the control plane's processes, `kubectl`, `helm`, files in the run folder, the VM.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::vipwatch::{Holders, fold, parse_events};
use super::{LabError, LabRun, Result, ScenarioOptions, new_run_dir, parse, run_scenario_with};
use crate::controlplane::{ControlPlane, NodeAccess, repo_root};
use crate::operator_fixture::get_json;

/// The lab hosts that are Kubernetes nodes; web2 stays outside the cluster.
pub const NODES: &[&str] = &["lb1", "lb2", "web1"];

/// The nodes that may be balancers (labelled as the README says).
pub const BALANCER_NODES: &[&str] = &["lb1", "lb2"];

/// Every checkpoint `pods.sh` stops at, in order.
pub const CHECKPOINTS: &[&str] = &[
    "nodes",
    "steady",
    "web1-down",
    "web1-up",
    "delete-master",
    "master-back",
    "delete-web",
    "delete-operator",
    "apiserver-stop",
    "apiserver-start",
    "linkdown",
    "lb1-back",
];

/// The checkpoint the lifecycle run adds before the API server's outage: adverts every 100 ms
/// from then on (the outage, with a CPU hog in it, is the starvation test).
pub const FAST_ADVERTS: &str = "fast-adverts";

/// The checkpoints of the lifecycle part `pods.sh` runs after the walkthrough when the host
/// asks for it ([`PodHost::lifecycle`]): CR churn, kube-proxy deleting lvstun's services, a
/// strict `rp_filter` on web1, `helm upgrade` to a second image version (which also moves
/// web1's VIPs to tunl0), a RealServer deleted, a node unlabelled, `helm uninstall`.
pub const LIFECYCLE_CHECKPOINTS: &[&str] = &[
    "churn",
    "foreign-deletion",
    "rp-filter",
    "upgrade",
    "delete-realserver",
    "deselect-lb2",
    "uninstall",
];

/// The objects the churn checkpoint applies: a VirtualService whose balancer selector is new
/// (lb2 alone, by hostname; with the balancer label too, which the chart's example VIP pool
/// asks of every balancer selector), a RealServer on a node that runs no web daemon, and a
/// VirtualService that claims www's VIP and port (newer, so it is the one in Conflict).
const CHURN_OBJECTS: &str = r#"apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata:
  name: churn-new
spec:
  vip: 192.0.2.101
  ports:
    - port: 8080
      protocol: TCP
  scheduler: rr
  realServerSelector:
    matchLabels:
      app: churn
  balancers:
    nodeSelector:
      matchLabels:
        kubernetes.io/hostname: lb2
        lvstun.io/balancer: "true"
    virtualRouterID: 61
---
apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata:
  name: churn-web3
  labels:
    app: churn
spec:
  address: 198.51.100.20
  nodeName: lb2
---
apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata:
  name: churn-conflict
spec:
  vip: 192.0.2.100
  ports:
    - port: 80
      protocol: TCP
  scheduler: rr
  realServerSelector:
    matchLabels:
      app: www
  balancers:
    nodeSelector:
      matchLabels:
        lvstun.io/balancer: "true"
    virtualRouterID: 52
"#;

/// The release namespace and name, as in the README.
pub const RELEASE_NAMESPACE: &str = "lvstun-system";
/// The helm release name, as in the README.
pub const RELEASE: &str = "lvstun";
/// Where the example objects go (the README applies them without a namespace).
pub const EXAMPLES_NAMESPACE: &str = "default";

/// The address at which nodes reach the API server inside the guest (on each node
/// namespace's loopback, relayed to the management link), and its port.
pub const API_ADDRESS: (&str, u16) = ("203.0.113.100", 6443);

/// How long the host waits for the API to show what the guest just did.
const STATUS_WAIT: Duration = Duration::from_secs(120);
/// How long nodes and pods may take to start under emulation.
const START_WAIT: Duration = Duration::from_secs(600);

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

/// Field `field` (`status`, `reason`, ...) of condition `kind` in an object's
/// `status.conditions`.
pub fn condition_field(obj: &serde_json::Value, kind: &str, field: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c[field].as_str())
        .map(str::to_owned)
}

/// The `status` of condition `kind` in an object's `status.conditions`.
pub fn condition(obj: &serde_json::Value, kind: &str) -> Option<String> {
    condition_field(obj, kind, "status")
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

/// The image archives the nodes import (fully qualified names inside) and the pause image's
/// name (the sandbox image containerd is configured with).
#[derive(Clone, Debug)]
pub struct Images {
    /// `*.oci.tar` archives every node imports before its kubelet starts.
    pub archives: Vec<PathBuf>,
    /// The sandbox image's name, as written in its archive.
    pub pause: String,
}

impl Images {
    /// Builds the operator and node images from the release binaries in `bin_dir`, and the
    /// pause image, into `out` (replacing what was there), with the layer mtimes of
    /// `SOURCE_DATE_EPOCH` as `./dev images` does.
    pub fn build(bin_dir: &Path, out: &Path) -> Result<Images> {
        Self::build_tags(bin_dir, out, None)
    }

    /// As [`Images::build`], and the operator and node images once more under `extra_tag`: a
    /// second version for `helm upgrade` to move to (the tag is in the image's config, so the
    /// digests differ).
    pub fn build_with_upgrade(bin_dir: &Path, out: &Path, extra_tag: &str) -> Result<Images> {
        crate::images::check_tag(extra_tag).map_err(LabError::Setup)?;
        Self::build_tags(bin_dir, out, Some(extra_tag))
    }

    fn build_tags(bin_dir: &Path, out: &Path, extra_tag: Option<&str>) -> Result<Images> {
        let image_err = |e: crate::images::ImageError| LabError::Setup(e.to_string());
        let mtime = crate::images::source_date_epoch().map_err(LabError::Setup)?;
        let mut archives = Vec::new();
        for spec in &crate::images::IMAGES {
            for tag in std::iter::once(spec.tag).chain(extra_tag) {
                let (_, written) = crate::images::build(&spec.with_tag(tag), bin_dir, out, mtime)
                    .map_err(image_err)?;
                archives.push(written.archive);
            }
        }
        let gomodcache = crate::controlplane::cache_dir().join("go/mod");
        let (_, pause) = crate::images::build_pause(&gomodcache, out, mtime).map_err(image_err)?;
        archives.push(pause.archive);
        Ok(Images {
            archives,
            pause: crate::images::SANDBOX_IMAGE.to_owned(),
        })
    }
}

/// The host side of one pod lab run.
pub struct PodHost {
    cp: ControlPlane,
    /// The run's folder (made before the VM boots, so both sides see it).
    pub out: PathBuf,
    /// What the checkpoints showed.
    pub findings: Findings,
    /// Print notes as they come (the demo does).
    pub verbose: bool,
    images: Images,
    /// UID of lb1's balancer pod before it was deleted.
    deleted_pod: Option<String>,
    /// The image tag `helm upgrade` moves to, when the lifecycle part runs.
    lifecycle: Option<String>,
    /// When each checkpoint was answered, since [`PodHost::prepare`].
    pub timings: BTreeMap<String, Duration>,
    started: Instant,
}

/// Links each of `archives` into `dir` under its own name (the guest reads the run folder).
fn link_archives(archives: &[PathBuf], dir: &Path) -> Result<()> {
    for archive in archives {
        let name = archive
            .file_name()
            .ok_or_else(|| LabError::Setup(format!("{} has no file name", archive.display())))?;
        std::os::unix::fs::symlink(archive, dir.join(name)).map_err(|e| LabError::Io {
            what: format!("linking {}", archive.display()),
            source: e,
        })?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| LabError::Io {
        what: format!("writing {}", path.display()),
        source: e,
    })
}

impl PodHost {
    /// Starts the control plane for the lab's nodes and writes what the nodes need (tokens, the
    /// API server's CA, the image archives) into a new run folder.
    pub fn prepare(images: Images) -> Result<PodHost> {
        let access = NodeAccess {
            nodes: NODES.iter().map(|n| (*n).to_owned()).collect(),
            advertise: (API_ADDRESS.0.to_owned(), API_ADDRESS.1),
        };
        let cp =
            ControlPlane::start_for_nodes(access).map_err(|e| LabError::Setup(e.to_string()))?;
        let out = new_run_dir("pods")?;
        let nodes = out.join("nodes");
        let image_dir = out.join("images");
        for dir in [&nodes, &image_dir, &out.join("phase"), &out.join("ack")] {
            std::fs::create_dir_all(dir).map_err(|e| LabError::Io {
                what: format!("creating {}", dir.display()),
                source: e,
            })?;
        }
        for node in NODES {
            write(
                &nodes.join(format!("{node}.token")),
                &ControlPlane::node_token(node),
            )?;
        }
        write(
            &nodes.join("kube-proxy.token"),
            ControlPlane::kube_proxy_token(),
        )?;
        let ca = std::fs::read_to_string(cp.ca_bundle()).map_err(|e| LabError::Io {
            what: format!("reading {}", cp.ca_bundle().display()),
            source: e,
        })?;
        write(&nodes.join("ca.crt"), &ca)?;
        link_archives(&images.archives, &image_dir)?;
        Ok(PodHost {
            cp,
            out,
            findings: Findings::default(),
            verbose: false,
            images,
            deleted_pod: None,
            lifecycle: None,
            timings: BTreeMap::new(),
            started: Instant::now(),
        })
    }

    /// Runs the lifecycle part after the walkthrough, upgrading to the images tagged
    /// `upgrade_tag` (which must be among the archives the nodes import).
    pub fn lifecycle(&mut self, upgrade_tag: &str) {
        self.lifecycle = Some(upgrade_tag.to_owned());
    }

    /// Every checkpoint this run stops at, in order.
    pub fn checkpoints(&self) -> Vec<&'static str> {
        let mut all = CHECKPOINTS.to_vec();
        if self.lifecycle.is_some() {
            let at = all
                .iter()
                .position(|c| *c == "apiserver-stop")
                .unwrap_or(all.len());
            all.insert(at, FAST_ADVERTS);
            all.extend_from_slice(LIFECYCLE_CHECKPOINTS);
        }
        all
    }

    /// The control plane (for tests that look further).
    pub fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    /// Boots the VM on `pods.sh` and answers its checkpoints until it ends.
    pub fn run(&mut self, timeout: Duration) -> Result<LabRun> {
        let api_port = self.cp.api_port();
        let k8s_bin = self.cp.bin().to_path_buf();
        let options = ScenarioOptions {
            mgmt_port: Some(api_port),
            timeout: Some(timeout),
            out_dir: Some(self.out.clone()),
            memory: Some("3G".into()),
            env: vec![
                ("LAB_K8S_BIN".into(), k8s_bin.display().to_string()),
                (
                    "LAB_IMAGES".into(),
                    self.out.join("images").display().to_string(),
                ),
                ("LAB_PAUSE_IMAGE".into(), self.images.pause.clone()),
                (
                    "LAB_LIFECYCLE".into(),
                    if self.lifecycle.is_some() { "1" } else { "0" }.into(),
                ),
            ],
            ..ScenarioOptions::default()
        };
        let vm = std::thread::spawn(move || run_scenario_with("pods", &options));
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
                let answer = match self.answer(&phase) {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => {
                        self.fail(format!("{phase}: {e}"));
                        format!("refused: {e}")
                    }
                };
                self.timings.insert(phase.clone(), self.started.elapsed());
                write(&self.out.join("ack").join(&phase), &answer)?;
                self.findings.answered.push(phase);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        vm.join()
            .map_err(|_| LabError::Setup("the VM thread panicked".into()))?
    }

    fn kubectl(&self, what: &str, args: &[&str]) -> std::result::Result<String, String> {
        self.cp
            .run(what, self.cp.kubectl().args(args))
            .map_err(|e| e.to_string())
    }

    fn note(&mut self, s: String) {
        if self.verbose {
            println!("  [host] {s}");
        } else {
            eprintln!("[lab_pods] {s}");
        }
        self.findings.notes.push(s);
    }

    fn fail(&mut self, s: String) {
        eprintln!("[lab_pods] FAILED: {s}");
        self.findings.failures.push(s);
    }

    fn rs(&self, name: &str) -> Option<serde_json::Value> {
        get_json(&self.cp, &["realserver", name], EXAMPLES_NAMESPACE)
    }

    /// Nodes whose Ready condition is True.
    fn ready_nodes(&self) -> Vec<String> {
        let Some(list) = get_json(&self.cp, &["nodes"], "default") else {
            return Vec::new();
        };
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|n| condition(n, "Ready").as_deref() == Some("True"))
                    .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The release's pods: (name, node, component, phase, ready, uid).
    fn pods(&self) -> Vec<PodRow> {
        let Some(list) = get_json(&self.cp, &["pods"], RELEASE_NAMESPACE) else {
            return Vec::new();
        };
        list["items"]
            .as_array()
            .map(|items| items.iter().map(PodRow::from_json).collect())
            .unwrap_or_default()
    }

    /// The release's pods of one `app.kubernetes.io/component`.
    fn pods_of(&self, component: &str) -> Vec<PodRow> {
        self.pods()
            .into_iter()
            .filter(|p| p.component == component)
            .collect()
    }

    /// `kubectl delete pod NAME --wait=false` in the release namespace.
    fn delete_pod(&self, name: &str) -> std::result::Result<(), String> {
        self.kubectl(
            "kubectl delete pod",
            &[
                "delete",
                "pod",
                "-n",
                RELEASE_NAMESPACE,
                name,
                "--wait=false",
            ],
        )
        .map(drop)
    }

    /// Waits until a Ready pod of `component` runs on each of `nodes`.
    fn wait_pods(&mut self, component: &str, nodes: &[&str]) -> std::result::Result<(), String> {
        let t0 = Instant::now();
        // No nodes named: one Ready pod anywhere.
        let ok = poll(START_WAIT, || {
            let pods = self.pods_of(component);
            let on = |n: &str| {
                pods.iter()
                    .any(|p| p.ready && (n.is_empty() || p.node == n))
            };
            let all = if nodes.is_empty() {
                on("")
            } else {
                nodes.iter().all(|n| on(n))
            };
            all.then_some(())
        });
        if ok.is_none() {
            return Err(format!(
                "no Ready {component} pod on each of {nodes:?} within {START_WAIT:?}; pods: {:?}",
                self.pods()
            ));
        }
        self.note(format!(
            "{component} pods Ready on {nodes:?} after {} ms",
            t0.elapsed().as_millis()
        ));
        Ok(())
    }

    /// Waits until `want` holds for the example VirtualService `www`.
    fn expect_vs(&mut self, what: &str, want: impl Fn(&serde_json::Value) -> bool) {
        self.expect_named("www", what, want);
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

    /// Waits until RealServer `name`'s condition `kind` has `status` and `reason`; notes its
    /// message (what the admin reads).
    fn expect_rs_reason(&mut self, name: &str, kind: &str, status: &str, reason: &str) {
        let t0 = Instant::now();
        let seen = poll(STATUS_WAIT, || {
            let rs = self.rs(name)?;
            (condition(&rs, kind).as_deref() == Some(status)
                && condition_field(&rs, kind, "reason").as_deref() == Some(reason))
            .then(|| condition_field(&rs, kind, "message").unwrap_or_default())
        });
        match seen {
            Some(message) => self.note(format!(
                "RealServer {name} {kind}={status} ({reason}) after {} ms: {message}",
                t0.elapsed().as_millis()
            )),
            None => {
                let last = self
                    .rs(name)
                    .map(|v| v["status"].to_string())
                    .unwrap_or_default();
                self.fail(format!(
                    "RealServer {name} {kind}={status} ({reason}) not seen within {STATUS_WAIT:?}; last status {last}"
                ));
            }
        }
    }

    /// `kubectl get` as a person types it: saved, and added to the walkthrough.
    fn kubectl_get(&mut self, label: &str, args: &[&str]) {
        let title = format!("kubectl {}", args.join(" "));
        let text = self.kubectl(&title, args).unwrap_or_else(|e| e);
        let _ = std::fs::write(self.out.join(format!("kubectl-{label}.txt")), &text);
        if let Ok(mut demo) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out.join("demo.txt"))
        {
            let _ = write!(demo, "\n$ {title}\n{text}");
        }
        self.note(format!("{title} ({label}):\n{text}"));
    }

    /// The README's install, step by step, as a person types it.
    fn install(&mut self) -> std::result::Result<(), String> {
        let chart = repo_root().join("deploy/helm/lvstun");
        let examples = repo_root().join("deploy/examples");
        let crds = repo_root().join("deploy/crds").display().to_string();
        self.kubectl(
            "kubectl apply --server-side CRDs",
            &["apply", "--server-side", "-f", &crds],
        )?;
        self.kubectl(
            "kubectl create namespace",
            &["create", "namespace", RELEASE_NAMESPACE],
        )?;
        self.kubectl(
            "kubectl label namespace",
            &[
                "label",
                "namespace",
                RELEASE_NAMESPACE,
                "pod-security.kubernetes.io/enforce=privileged",
                "pod-security.kubernetes.io/audit=privileged",
                "pod-security.kubernetes.io/warn=privileged",
            ],
        )?;
        let chart_s = chart.display().to_string();
        self.cp
            .run(
                "helm install",
                self.cp
                    .helm()
                    .args(["install", RELEASE, &chart_s, "-n", RELEASE_NAMESPACE]),
            )
            .map_err(|e| e.to_string())?;
        for node in BALANCER_NODES {
            self.kubectl(
                "kubectl label node",
                &["label", "node", node, "lvstun.io/balancer=true"],
            )?;
        }
        // The web DaemonSet runs only on nodes with the web label (ADR 0007).
        self.kubectl(
            "kubectl label node",
            &["label", "node", "web1", "lvstun.io/web=true"],
        )?;
        let examples_s = examples.display().to_string();
        self.kubectl("kubectl apply examples", &["apply", "-f", &examples_s])?;
        // web1 is a node of the cluster: labelled above, so the web DaemonSet runs there, and
        // its RealServer names it. web2 stays outside (no nodeName), prepared by
        // `lvstun-node web --config`.
        self.kubectl(
            "kubectl patch realserver nodeName",
            &[
                "patch",
                "realserver",
                "web1",
                "--type=merge",
                "-p",
                "{\"spec\":{\"nodeName\":\"web1\"}}",
            ],
        )?;
        Ok(())
    }

    /// Deletes the pods of `component` and waits until as many Ready pods of it run, none of
    /// them an old one.
    fn replace_pods(&mut self, component: &str) -> std::result::Result<(), String> {
        let old = self.pods_of(component);
        if old.is_empty() {
            return Err(format!("no {component} pod to delete"));
        }
        let t0 = Instant::now();
        for pod in &old {
            self.delete_pod(&pod.name)?;
        }
        let uids: Vec<&str> = old.iter().map(|p| p.uid.as_str()).collect();
        let fresh = poll(START_WAIT, || {
            let new: Vec<PodRow> = self
                .pods_of(component)
                .into_iter()
                .filter(|p| p.ready && !uids.contains(&p.uid.as_str()))
                .collect();
            (new.len() >= old.len()).then_some(new)
        });
        match fresh {
            Some(new) => {
                let names: Vec<&str> = new.iter().map(|p| p.name.as_str()).collect();
                self.note(format!(
                    "{component} pods deleted; successors {names:?} Ready after {} ms",
                    t0.elapsed().as_millis()
                ));
                Ok(())
            }
            None => Err(format!(
                "no Ready successor of the {component} pods within {START_WAIT:?}: {:?}",
                self.pods()
            )),
        }
    }

    /// The daemon pods (balancer and web): name -> (uid, restarts).
    fn daemon_pods(&self) -> BTreeMap<String, (String, u64)> {
        self.pods()
            .into_iter()
            .filter(|p| p.component == "balancer" || p.component == "web")
            .map(|p| (p.name, (p.uid, p.restarts)))
            .collect()
    }

    /// The release's DaemonSets: name -> metadata.generation (a new pod template is a new
    /// generation).
    fn daemonset_generations(&self) -> BTreeMap<String, i64> {
        let Some(list) = get_json(&self.cp, &["daemonsets"], RELEASE_NAMESPACE) else {
            return BTreeMap::new();
        };
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|d| {
                        Some((
                            d["metadata"]["name"].as_str()?.to_owned(),
                            d["metadata"]["generation"].as_i64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn vs_named(&self, name: &str) -> Option<serde_json::Value> {
        get_json(&self.cp, &["virtualservice", name], EXAMPLES_NAMESPACE)
    }

    /// Waits until `want` holds for VirtualService `name`; a failure naming `what` otherwise.
    fn expect_named(&mut self, name: &str, what: &str, want: impl Fn(&serde_json::Value) -> bool) {
        let t0 = Instant::now();
        if poll(STATUS_WAIT, || self.vs_named(name).filter(|v| want(v))).is_some() {
            self.note(format!(
                "{what}: seen after {} ms",
                t0.elapsed().as_millis()
            ));
        } else {
            let last = self
                .vs_named(name)
                .map(|v| v["status"].to_string())
                .unwrap_or_default();
            self.fail(format!(
                "{what}: not seen within {STATUS_WAIT:?}; last status {last}"
            ));
        }
    }

    /// The churn checkpoint: objects created, one turned Conflict, one deleted, and the daemon
    /// pods and their templates untouched by all of it (ADR 0007).
    fn churn(&mut self) -> std::result::Result<(), String> {
        let pods_before = self.daemon_pods();
        let generations_before = self.daemonset_generations();
        if pods_before.len() != 3 {
            return Err(format!(
                "want 3 daemon pods before the churn, got {pods_before:?}"
            ));
        }
        let file = self.out.join("churn.yaml");
        write(&file, CHURN_OBJECTS).map_err(|e| e.to_string())?;
        let file_s = file.display().to_string();
        self.kubectl("kubectl apply churn objects", &["apply", "-f", &file_s])?;
        self.expect_named("churn-conflict", "churn-conflict in Conflict", |v| {
            condition(v, "Conflict").as_deref() == Some("True")
        });
        self.expect_named("churn-new", "churn-new has a status", |v| {
            v["status"]["conditions"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
        });
        // churn-web3 names lb2, a balancer churn-new selects: left out, and said so (ADR 0009).
        self.expect_named(
            "churn-new",
            "churn-new leaves churn-web3 out: Degraded RealServerOnBalancer",
            |v| {
                v["status"]["excludedRealServers"]
                    == serde_json::json!([{"name": "churn-web3", "node": "lb2", "reason": "NodeIsBalancer"}])
                    && condition_field(v, "Degraded", "reason").as_deref()
                        == Some("RealServerOnBalancer")
            },
        );
        self.kubectl_get("churn", &["get", "lvsvc,lvsrs"]);
        self.kubectl(
            "kubectl delete churn-new",
            &["delete", "virtualservice", "churn-new", "--wait=true"],
        )?;
        self.kubectl(
            "kubectl delete churn objects",
            &[
                "delete",
                "virtualservice/churn-conflict",
                "realserver/churn-web3",
                "--wait=true",
            ],
        )?;
        // Time for a daemon restart to show, had the churn caused one.
        std::thread::sleep(Duration::from_secs(5));
        let pods_after = self.daemon_pods();
        let generations_after = self.daemonset_generations();
        self.note(format!(
            "after the churn: daemon pods {pods_after:?}, DaemonSet generations {generations_after:?}"
        ));
        if pods_after != pods_before {
            self.fail(format!(
                "the churn touched daemon pods: before {pods_before:?}, after {pods_after:?}"
            ));
        }
        if generations_after != generations_before {
            self.fail(format!(
                "the churn changed a DaemonSet: before {generations_before:?}, after {generations_after:?}"
            ));
        }
        self.expect_vs("www Ready, active lb1 after the churn", |v| {
            condition(v, "Ready").as_deref() == Some("True") && Self::active_is(v, "lb1")
        });
        Ok(())
    }

    /// The foreign-deletion checkpoint: lb2's kube-proxy (IPVS mode) was restarted without
    /// `--ipvs-exclude-cidrs` and deletes lvstun's virtual servers on lb2: www says so (Degraded
    /// with the reason and a message naming the fix, lb2's status entry) and an Event is there.
    fn foreign_deletion(&mut self) -> std::result::Result<(), String> {
        self.expect_vs(
            "www Degraded=True IPVSServiceDeletedExternally, lb2's entry counting deletions",
            |v| {
                condition(v, "Degraded").as_deref() == Some("True")
                    && condition_field(v, "Degraded", "reason").as_deref()
                        == Some("IPVSServiceDeletedExternally")
                    && v["status"]["balancers"].as_array().is_some_and(|b| {
                        b.iter().any(|e| {
                            e["node"] == "lb2"
                                && e["deletedExternally"]["count"]
                                    .as_u64()
                                    .is_some_and(|n| n > 0)
                        })
                    })
            },
        );
        if let Some(v) = self.vs_named("www") {
            self.note(format!(
                "www Degraded: {}",
                condition_field(&v, "Degraded", "message").unwrap_or_default()
            ));
        }
        // The operator publishes the Event beside the status write, not before it: the status
        // seen above may come a moment before its Event, so the Event gets a bounded wait.
        let events = poll(Duration::from_secs(30), || {
            self.kubectl(
                "kubectl get events IPVSServiceDeletedExternally",
                &[
                    "get",
                    "events",
                    "-A",
                    "--field-selector",
                    "reason=IPVSServiceDeletedExternally",
                    "--no-headers",
                    "-o",
                    "custom-columns=OBJECT:.involvedObject.name,MESSAGE:.message",
                ],
            )
            .ok()
            .filter(|e| !e.trim().is_empty())
        })
        .unwrap_or_default();
        if events.trim().is_empty() {
            self.fail("no Event with reason IPVSServiceDeletedExternally".into());
        } else {
            self.note(format!("Events: {}", events.trim()));
        }
        self.kubectl_get("foreign-deletion", &["get", "lvsvc,lvsrs"]);
        Ok(())
    }

    /// The upgrade checkpoint: `helm upgrade` to `tag` (operator and node images), then every
    /// pod of the release replaced by one of the new images and Ready, and www served by lb1.
    fn upgrade(&mut self, tag: &str) -> std::result::Result<(), String> {
        let chart = repo_root().join("deploy/helm/lvstun").display().to_string();
        let t0 = Instant::now();
        let image_tag = format!("image.tag={tag}");
        let node_tag = format!("nodeImage.tag={tag}");
        self.cp
            .run(
                "helm upgrade",
                self.cp.helm().args([
                    "upgrade",
                    RELEASE,
                    &chart,
                    "-n",
                    RELEASE_NAMESPACE,
                    "--reuse-values",
                    "--set",
                    &image_tag,
                    "--set",
                    &node_tag,
                    // web1's all.rp_filter is strict now: its VIPs move to tunl0, the fix
                    // the web pod's status named.
                    "--set",
                    "web.vipDevice=tunl0",
                ]),
            )
            .map_err(|e| e.to_string())?;
        self.note(format!(
            "helm upgrade to {tag} returned after {} ms",
            t0.elapsed().as_millis()
        ));
        let suffix = format!(":{tag}");
        let done = poll(START_WAIT, || {
            let pods = self.pods();
            let new = |component: &str, want: usize| {
                let of: Vec<&PodRow> = pods.iter().filter(|p| p.component == component).collect();
                of.len() == want && of.iter().all(|p| p.ready && p.image.ends_with(&suffix))
            };
            (new("operator", 2) && new("balancer", 2) && new("web", 1)).then_some(())
        });
        if done.is_none() {
            return Err(format!(
                "the release's pods did not all move to {tag} within {START_WAIT:?}: {:?}",
                self.pods()
            ));
        }
        self.note(format!(
            "every pod runs {tag} and is Ready, {} ms after helm upgrade",
            t0.elapsed().as_millis()
        ));
        self.expect_vs("www Ready, active lb1 after the upgrade", |v| {
            condition(v, "Ready").as_deref() == Some("True") && Self::active_is(v, "lb1")
        });
        self.expect_rs_reason("web1", "TunnelReady", "True", "Ready");
        self.kubectl_get(
            "pods-upgraded",
            &["get", "pods", "-n", RELEASE_NAMESPACE, "-o", "wide"],
        );
        Ok(())
    }

    /// The uninstall checkpoint: `helm uninstall` as the README says, then nothing of the
    /// release left running: no pod, no DaemonSet, no Lease in its namespace.
    fn uninstall(&mut self) -> std::result::Result<(), String> {
        let t0 = Instant::now();
        self.cp
            .run(
                "helm uninstall",
                self.cp
                    .helm()
                    .args(["uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait"]),
            )
            .map_err(|e| e.to_string())?;
        self.note(format!(
            "helm uninstall returned after {} ms",
            t0.elapsed().as_millis()
        ));
        let gone = poll(START_WAIT, || {
            let left = |kind: &str| {
                get_json(&self.cp, &[kind], RELEASE_NAMESPACE)
                    .and_then(|l| l["items"].as_array().map(Vec::len))
                    .unwrap_or(0)
            };
            (left("pods") == 0 && left("daemonsets") == 0 && left("leases") == 0).then_some(())
        });
        if gone.is_none() {
            self.fail(format!(
                "after helm uninstall the release namespace still holds: pods {:?}, daemonsets {:?}, leases {:?}",
                self.pods(),
                self.daemonset_generations(),
                get_json(&self.cp, &["leases"], RELEASE_NAMESPACE).map(|l| l["items"].to_string())
            ));
        } else {
            self.note(format!(
                "no pod, DaemonSet or Lease left in {RELEASE_NAMESPACE}, {} ms after helm uninstall",
                t0.elapsed().as_millis()
            ));
        }
        Ok(())
    }

    fn lb1_balancer_pod(&self) -> Option<PodRow> {
        self.pods_of("balancer")
            .into_iter()
            .find(|p| p.node == "lb1")
    }

    fn active_is(v: &serde_json::Value, node: &str) -> bool {
        v["status"]["activeBalancer"] == node
    }

    /// One checkpoint of the guest (see [`CHECKPOINTS`]).
    pub fn answer(&mut self, phase: &str) -> std::result::Result<(), String> {
        match phase {
            "nodes" => {
                let t0 = Instant::now();
                let ready = poll(START_WAIT, || {
                    let ready = self.ready_nodes();
                    NODES
                        .iter()
                        .all(|n| ready.iter().any(|r| r == n))
                        .then_some(ready)
                });
                if ready.is_none() {
                    return Err(format!(
                        "nodes not Ready within {START_WAIT:?}: {:?}",
                        self.ready_nodes()
                    ));
                }
                self.note(format!(
                    "nodes {NODES:?} Ready after {} ms",
                    t0.elapsed().as_millis()
                ));
                self.kubectl_get("nodes", &["get", "nodes", "-o", "wide"]);
                self.install()?;
                self.wait_pods("operator", &[])?;
                self.wait_pods("balancer", BALANCER_NODES)?;
                self.wait_pods("web", &["web1"])?;
                self.kubectl_get(
                    "pods",
                    &["get", "pods", "-n", RELEASE_NAMESPACE, "-o", "wide"],
                );
                Ok(())
            }
            "steady" => {
                self.expect_vs("lvsvc www Ready, active lb1, healthy 2/2", |v| {
                    condition(v, "Ready").as_deref() == Some("True")
                        && Self::active_is(v, "lb1")
                        && v["status"]["healthyRealServers"] == 2
                        && v["status"]["totalRealServers"] == 2
                });
                for rs in ["web1", "web2"] {
                    self.expect_rs(rs, "Healthy", "True");
                }
                // web1's web pod reports its tunnel; web2 is outside the cluster: no web daemon
                // reports on it, the operator says so, and the balancers' checks alone count.
                self.expect_rs("web1", "TunnelReady", "True");
                self.expect_rs("web2", "TunnelReady", "Unknown");
                let reason = self
                    .rs("web2")
                    .and_then(|r| condition_field(&r, "TunnelReady", "reason"));
                if reason.as_deref() != Some("OutsideCluster") {
                    self.fail(format!(
                        "web2 TunnelReady reason {reason:?}, want OutsideCluster"
                    ));
                }
                self.kubectl_get("steady", &["get", "lvsvc,lvsrs"]);
                Ok(())
            }
            "web1-down" => {
                self.expect_rs("web1", "Healthy", "False");
                self.expect_vs("lvsvc www healthy 1/2", |v| {
                    v["status"]["healthyRealServers"] == 1
                });
                self.kubectl_get("web1-down", &["get", "lvsvc,lvsrs"]);
                Ok(())
            }
            "web1-up" => {
                self.expect_rs("web1", "Healthy", "True");
                self.expect_vs("lvsvc www healthy 2/2 again", |v| {
                    v["status"]["healthyRealServers"] == 2
                });
                Ok(())
            }
            "delete-master" => {
                let pod = self
                    .lb1_balancer_pod()
                    .ok_or_else(|| "no balancer pod on lb1".to_owned())?;
                self.delete_pod(&pod.name)?;
                self.note(format!(
                    "deleted lb1's balancer pod {} (uid {})",
                    pod.name, pod.uid
                ));
                self.deleted_pod = Some(pod.uid);
                Ok(())
            }
            "master-back" => {
                let old = self.deleted_pod.clone().unwrap_or_default();
                let t0 = Instant::now();
                let new = poll(START_WAIT, || {
                    self.lb1_balancer_pod().filter(|p| p.uid != old && p.ready)
                });
                match new {
                    Some(p) => self.note(format!(
                        "the DaemonSet's new balancer pod on lb1: {} (uid {}), Ready after {} ms",
                        p.name,
                        p.uid,
                        t0.elapsed().as_millis()
                    )),
                    None => self.fail("no new Ready balancer pod on lb1".into()),
                }
                self.expect_vs("active lb1 again", |v| Self::active_is(v, "lb1"));
                self.kubectl_get(
                    "pods-after-delete",
                    &["get", "pods", "-n", RELEASE_NAMESPACE, "-o", "wide"],
                );
                self.kubectl_get("master-back", &["get", "lvsvc,lvsrs"]);
                Ok(())
            }
            "delete-web" => self.replace_pods("web"),
            "delete-operator" => self.replace_pods("operator"),
            "apiserver-stop" => {
                self.cp.stop("kube-apiserver");
                self.note("kube-apiserver stopped".into());
                Ok(())
            }
            "apiserver-start" => {
                let t0 = Instant::now();
                self.cp
                    .start_apiserver()
                    .and_then(|()| self.cp.wait_ready(Duration::from_secs(120)))
                    .map_err(|e| format!("kube-apiserver did not come back: {e}"))?;
                self.note(format!(
                    "kube-apiserver started again, ready in {} ms",
                    t0.elapsed().as_millis()
                ));
                // In the lifecycle run lb1's balancer was killed during the outage: lb2 holds
                // the VIP until lb1's new process has read its VirtualServices again.
                let lifecycle = self.lifecycle.is_some();
                self.expect_vs(
                    "status caught up: Ready, active lb1 (or lb2 after the kill)",
                    |v| {
                        condition(v, "Ready").as_deref() == Some("True")
                            && (Self::active_is(v, "lb1")
                                || (lifecycle && Self::active_is(v, "lb2")))
                    },
                );
                self.kubectl_get("after-apiserver", &["get", "lvsvc,lvsrs"]);
                Ok(())
            }
            "linkdown" => {
                self.expect_vs("status follows lb1's link down: active lb2", |v| {
                    Self::active_is(v, "lb2")
                });
                self.kubectl_get("linkdown", &["get", "lvsvc,lvsrs"]);
                Ok(())
            }
            "lb1-back" => {
                self.expect_vs("lvsvc www Ready, active lb1, healthy 2/2 again", |v| {
                    condition(v, "Ready").as_deref() == Some("True")
                        && Self::active_is(v, "lb1")
                        && v["status"]["healthyRealServers"] == 2
                });
                self.kubectl_get("final", &["get", "lvsvc,lvsrs"]);
                Ok(())
            }
            "churn" => self.churn(),
            "foreign-deletion" => self.foreign_deletion(),
            "rp-filter" => {
                self.expect_rs_reason("web1", "TunnelReady", "False", "RpFilterDrops");
                Ok(())
            }
            "fast-adverts" => {
                self.kubectl(
                    "kubectl patch www advertIntervalMilliseconds",
                    &[
                        "patch",
                        "virtualservice",
                        "www",
                        "--type=merge",
                        "-p",
                        "{\"spec\":{\"balancers\":{\"advertIntervalMilliseconds\":100}}}",
                    ],
                )?;
                self.expect_vs("www Ready, active lb1 at 100 ms adverts", |v| {
                    condition(v, "Ready").as_deref() == Some("True") && Self::active_is(v, "lb1")
                });
                Ok(())
            }
            "upgrade" => {
                let tag = self.lifecycle.clone().ok_or_else(|| {
                    "no upgrade tag: the host did not ask for the lifecycle".to_owned()
                })?;
                self.upgrade(&tag)
            }
            "delete-realserver" => {
                self.kubectl(
                    "kubectl delete realserver web1",
                    &["delete", "realserver", "web1", "--wait=true"],
                )?;
                self.note("RealServer web1 deleted; web1's web pod keeps running".into());
                Ok(())
            }
            "deselect-lb2" => {
                self.kubectl(
                    "kubectl label node lb2 lvstun.io/balancer-",
                    &["label", "node", "lb2", "lvstun.io/balancer-"],
                )?;
                let t0 = Instant::now();
                let gone = poll(START_WAIT, || {
                    (!self.pods_of("balancer").iter().any(|p| p.node == "lb2")).then_some(())
                });
                match gone {
                    Some(()) => self.note(format!(
                        "lb2 unlabelled: its balancer pod gone after {} ms",
                        t0.elapsed().as_millis()
                    )),
                    None => self.fail("lb2's balancer pod still there after unlabelling".into()),
                }
                Ok(())
            }
            "uninstall" => self.uninstall(),
            other => Err(format!("unknown checkpoint {other:?} from the guest")),
        }
    }
}

/// One pod of the release, as the host sees it.
#[derive(Clone, Debug)]
pub struct PodRow {
    /// Pod name.
    pub name: String,
    /// Node it is bound to (empty while Pending).
    pub node: String,
    /// Its `app.kubernetes.io/component` label.
    pub component: String,
    /// Its phase.
    pub phase: String,
    /// Whether its Ready condition is True.
    pub ready: bool,
    /// Its UID.
    pub uid: String,
    /// Its (first) container's image.
    pub image: String,
    /// Restarts of its containers, summed.
    pub restarts: u64,
}

impl PodRow {
    fn from_json(p: &serde_json::Value) -> PodRow {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        PodRow {
            name: s(&p["metadata"]["name"]),
            node: s(&p["spec"]["nodeName"]),
            component: s(&p["metadata"]["labels"]["app.kubernetes.io/component"]),
            phase: s(&p["status"]["phase"]),
            ready: condition(p, "Ready").as_deref() == Some("True"),
            uid: s(&p["metadata"]["uid"]),
            image: s(&p["spec"]["containers"][0]["image"]),
            restarts: p["status"]["containerStatuses"]
                .as_array()
                .map(|c| c.iter().filter_map(|c| c["restartCount"].as_u64()).sum())
                .unwrap_or(0),
        }
    }
}

/// The example VirtualService's VIP, whose holders the pod lab watches.
const POD_LAB_VIP: &str = "192.0.2.100";

/// Who held the VIP during the watch `tag` of a pod lab run (`lab_vip_watch_start TAG lb1
/// lb2`): the balancers' address notifications folded into a [`Holders`] timeline.
pub fn vip_holders(run: &LabRun, tag: &str) -> Result<Holders> {
    let vip = POD_LAB_VIP;
    let mut initial = BTreeMap::new();
    let mut events = Vec::new();
    for node in BALANCER_NODES {
        let key = format!("vipwatch.{tag}.{node}.initial");
        let held = run.result(&key).ok_or_else(|| LabError::Artifact {
            path: run.path("results.txt"),
            detail: format!("no {key}"),
        })?;
        initial.insert((*node).to_owned(), held != "0");
        let log = run.artifact(&format!("logs/vipwatch-{tag}-{node}.log"))?;
        events.extend(parse_events(node, &log, vip));
    }
    let end_us = run
        .result(&format!("vipwatch.{tag}.end_ms"))
        .and_then(|ms| ms.parse::<i64>().ok())
        .map_or_else(
            || events.iter().map(|e| e.at_us).max().unwrap_or(0),
            |ms| ms * 1000,
        );
    Ok(fold(&initial, &events, end_us))
}

/// When `node` lost the VIP, by its kernel's notification (the watch `tag`'s log), at or after
/// `from_us` (µs since the epoch, the guest's clock): the first deletion from then on, or
/// `None`. A precise time, where a shell loop polling `ip` under TCG adds its own delays.
pub fn vip_gone_at(run: &LabRun, tag: &str, node: &str, from_us: i64) -> Result<Option<i64>> {
    let log = run.artifact(&format!("logs/vipwatch-{tag}-{node}.log"))?;
    Ok(parse_events(node, &log, POD_LAB_VIP)
        .into_iter()
        .filter(|e| !e.present && e.at_us >= from_us)
        .map(|e| e.at_us)
        .min())
}

/// The log events of `container` in the pods that ran on `node`, from the copy the scenario
/// saved under `pod-logs/SNAPSHOT/` (`lab_nodes_save_logs`): the kubelet's CRI files, one per
/// container instance, each line `TIME STREAM TAG MESSAGE` with the daemon's JSON line as the
/// message. Every instance's events, pod by pod, in file order.
pub fn pod_log(
    run: &LabRun,
    snapshot: &str,
    node: &str,
    container: &str,
) -> Result<Vec<parse::log::LogLine>> {
    let io = |what: String| move |source| LabError::Io { what, source };
    let node_dir = run.path(&format!("pod-logs/{snapshot}/{node}"));
    let mut files = Vec::new();
    for pod in
        std::fs::read_dir(&node_dir).map_err(io(format!("listing {}", node_dir.display())))?
    {
        let dir = pod
            .map_err(io(format!("listing {}", node_dir.display())))?
            .path()
            .join(container);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // a pod without that container
        };
        for entry in entries {
            files.push(
                entry
                    .map_err(io(format!("listing {}", dir.display())))?
                    .path(),
            );
        }
    }
    files.sort();
    let mut events = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(io(format!("reading {}", file.display())))?;
        events.extend(
            text.lines()
                .filter_map(|l| l.find('{').map(|i| &l[i..]))
                .filter_map(|l| parse::log::line(l).ok()),
        );
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pod_logs_are_read_from_every_instance_of_the_container() {
        let out_dir = std::env::temp_dir().join(format!("lvstun-pod-log-{}", std::process::id()));
        let pod = out_dir.join("pod-logs/after-outage/lb1/lvstun-system_lvstun-balancer-x_uid");
        std::fs::create_dir_all(pod.join("balancer")).unwrap();
        std::fs::create_dir_all(pod.join("prepare")).unwrap();
        std::fs::write(
            pod.join("balancer/0.log"),
            concat!(
                r#"2026-12-07T17:03:05.01731071Z stderr F {"timestamp":"2026-12-07T17:03:04.953427Z","level":"WARN","fields":{"message":"vrrp: advertisement sent late","vrid":51,"gap_ms":457,"interval_ms":100},"target":"lvstun_vrrp::driver"}"#,
                "\n2026-12-07T17:03:05.1Z stderr P not a log event\n"
            ),
        )
        .unwrap();
        std::fs::write(
            pod.join("balancer/1.log"),
            r#"2026-12-07T17:04:00.0Z stderr F {"timestamp":"2026-12-07T17:04:00.000001Z","level":"INFO","fields":{"message":"reconciled","ops":0},"target":"lvstun_node::balancer::run"}"#,
        )
        .unwrap();
        std::fs::write(
            pod.join("prepare/0.log"),
            r#"2026-12-07T17:00:00.0Z stderr F {"timestamp":"2026-12-07T17:00:00.000001Z","level":"INFO","fields":{"message":"prepared"},"target":"x"}"#,
        )
        .unwrap();
        let run = LabRun {
            scenario: "pods".into(),
            out_dir: out_dir.clone(),
            results: BTreeMap::new(),
            timing: BTreeMap::new(),
            wall: Duration::ZERO,
            reused: true,
        };
        let events = pod_log(&run, "after-outage", "lb1", "balancer").unwrap();
        let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["vrrp: advertisement sent late", "reconciled"]);
        assert_eq!(events[0].num("gap_ms"), Some(457));
        assert_eq!(
            crate::lab::vipwatch::parse_ts(&events[0].timestamp),
            crate::lab::vipwatch::parse_ts("2026-12-07T17:03:04.953427")
        );
        assert!(pod_log(&run, "final", "lb1", "balancer").is_err());
        std::fs::remove_dir_all(&out_dir).unwrap();
    }
}
