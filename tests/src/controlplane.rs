//! A real, local Kubernetes control plane for tests: etcd, kube-apiserver (RBAC, service-account
//! tokens) and kube-controller-manager (DaemonSets make Pods, owner references garbage-collect),
//! built from upstream Go modules by `tests/controlplane/build.sh` and started on 127.0.0.1 with
//! free ports and a data directory of its own.
//!
//! [`ControlPlane::start_for_nodes`] starts one that real kubelets can join (the pod lab): Node
//! authorization and NodeRestriction, a token per node and one for kube-proxy, kube-scheduler,
//! the controllers that Ready nodes and ServiceAccount tokens in pods need, and the `kubernetes`
//! Service's endpoint at the lab's management address.
//!
//! Does I/O: spawns processes, writes files under `target/controlplane/`. Every process runs
//! under a small watchdog that stops it when the test process goes away, so a panicking test (or
//! a `static` fixture whose destructor never runs) leaves nothing behind.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Errors of the control-plane fixture.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command ran but did not succeed.
    #[error("{what} failed (exit {code:?}); logs in {logs}:\n{stderr}")]
    Command {
        /// What was run.
        what: String,
        /// Exit code, if any.
        code: Option<i32>,
        /// Its standard error.
        stderr: String,
        /// Where the control plane's logs are.
        logs: String,
    },
    /// The API server did not become ready in time.
    #[error("kube-apiserver not ready after {0:?}; logs in {1}")]
    NotReady(Duration, String),
    /// A kubeconfig could not be turned into a client.
    #[error("kube client: {0}")]
    Client(String),
    /// An API request failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was asked.
        what: String,
        /// The client's error (for a refusal, `kube::Error::Api` with the server's status).
        source: kube::Error,
    },
    /// What a test awaited did not come in time.
    #[error("timed out after {limit:?} waiting for {what}; last seen: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        limit: Duration,
        /// The last value seen, printed.
        last: String,
    },
    /// A YAML fixture could not be read as the type asked for.
    #[error("YAML fixture: {0}")]
    Yaml(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ControlPlaneError {
    let what = what.into();
    move |source| ControlPlaneError::Io { what, source }
}

/// The repository root (the workspace), found from this crate's manifest dir.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cache folder shared by every lvstun build step (`LVSTUN_CACHE` or `~/.cache/lvstun`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LVSTUN_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/lvstun")
}

/// Folder holding `etcd`, `kube-apiserver`, `kube-controller-manager`, `kubectl`, `helm`.
/// Builds them (cached) when they are missing.
pub fn bin_dir() -> Result<PathBuf, ControlPlaneError> {
    let dir = cache_dir().join("bin/current");
    let needed = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
        "kubelet",
        "kube-proxy",
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "helm",
    ];
    if needed.iter().all(|b| dir.join(b).exists()) {
        return Ok(dir);
    }
    let script = repo_root().join("tests/controlplane/build.sh");
    eprintln!(
        "control plane binaries missing; running {}",
        script.display()
    );
    let status = Command::new("bash")
        .arg(&script)
        .stdout(Stdio::null())
        .status()
        .map_err(io("running tests/controlplane/build.sh"))?;
    if !status.success() {
        return Err(ControlPlaneError::Command {
            what: "tests/controlplane/build.sh".into(),
            code: status.code(),
            stderr: "see its output above".into(),
            logs: dir.display().to_string(),
        });
    }
    Ok(dir)
}

fn free_port() -> Result<u16, ControlPlaneError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("binding a free loopback port"))?;
    let port = l.local_addr().map_err(io("reading a bound port"))?.port();
    Ok(port)
}

/// Shell run around every control-plane process: starts it, stops it on SIGTERM, and stops it
/// when the test process (`$1`) is gone. Polling keeps it free of platform-specific APIs.
const WATCHDOG: &str = r#"parent=$1; shift
"$@" & child=$!
trap 'kill $child 2>/dev/null; wait $child; exit 0' TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
kill $child 2>/dev/null; wait $child"#;

/// The admin identity's bearer token (member of `system:masters`).
const ADMIN_TOKEN: &str = "lvstun-test-admin-token";

/// kube-proxy's bearer token (user `system:kube-proxy`, bound by the default
/// `system:node-proxier` ClusterRoleBinding).
const KUBE_PROXY_TOKEN: &str = "lvstun-test-kube-proxy-token";

/// What the nodes of the pod lab need from the control plane.
#[derive(Clone, Debug, Default)]
pub struct NodeAccess {
    /// Node names that get a kubelet identity (`system:node:NAME` in `system:nodes`).
    pub nodes: Vec<String>,
    /// The address (and port) at which the nodes reach the API server; the server's
    /// certificate names it and the `kubernetes` Service's endpoint points at it.
    pub advertise: (String, u16),
}

/// A running control plane. Dropping it stops every process it started.
pub struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    api_port: u16,
    etcd_port: u16,
    kubeconfig: PathBuf,
    processes: Mutex<Vec<(String, Child)>>,
    nodes: Option<NodeAccess>,
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// One control plane per test process, started on first use. Tests share it and isolate
    /// themselves by namespace; its processes end with the test process.
    pub fn shared() -> Result<&'static ControlPlane, ControlPlaneError> {
        let r = SHARED.get_or_init(|| ControlPlane::start().map_err(|e| e.to_string()));
        r.as_ref()
            .map_err(|e| ControlPlaneError::Client(format!("shared control plane: {e}")))
    }

    /// Start etcd, kube-apiserver and kube-controller-manager on free loopback ports, and wait
    /// until the API server is ready.
    pub fn start() -> Result<ControlPlane, ControlPlaneError> {
        Self::start_with(None)
    }

    /// A control plane that real kubelets can join (see the module comment); its processes
    /// end with the test process.
    pub fn start_for_nodes(access: NodeAccess) -> Result<ControlPlane, ControlPlaneError> {
        Self::start_with(Some(access))
    }

    fn start_with(nodes: Option<NodeAccess>) -> Result<ControlPlane, ControlPlaneError> {
        let bin = bin_dir()?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let dir = repo_root()
            .join("target/controlplane")
            .join(format!("run-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(dir.join("certs")).map_err(io("creating the data dir"))?;
        let cp = ControlPlane {
            api_port: free_port()?,
            etcd_port: free_port()?,
            kubeconfig: dir.join("admin.kubeconfig"),
            dir,
            bin,
            processes: Mutex::new(Vec::new()),
            nodes,
        };
        cp.write_files()?;
        cp.start_etcd()?;
        cp.start_apiserver()?;
        cp.wait_ready(Duration::from_secs(120))?;
        cp.start_controller_manager()?;
        if cp.nodes.is_some() {
            cp.start_scheduler()?;
            cp.publish_kubernetes_endpoint()?;
        }
        Ok(cp)
    }

    /// The bearer token of node `name`'s kubelet (`system:node:NAME`).
    pub fn node_token(name: &str) -> String {
        format!("lvstun-test-node-{name}-token")
    }

    /// kube-proxy's bearer token.
    pub fn kube_proxy_token() -> &'static str {
        KUBE_PROXY_TOKEN
    }

    /// The admin's bearer token.
    pub fn admin_token() -> &'static str {
        ADMIN_TOKEN
    }

    /// The API server's self-signed certificate bundle (leaf and its CA): what kubelets and pods
    /// verify the server with.
    pub fn ca_bundle(&self) -> PathBuf {
        self.dir.join("certs/apiserver.crt")
    }

    fn write_files(&self) -> Result<(), ControlPlaneError> {
        let key = self.dir.join("sa.key");
        let out = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .map_err(io("running openssl genrsa"))?;
        self.check("openssl genrsa", &out)?;
        let out = Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(self.dir.join("sa.pub"))
            .output()
            .map_err(io("running openssl rsa"))?;
        self.check("openssl rsa -pubout", &out)?;
        let mut tokens = format!("{ADMIN_TOKEN},lvstun-admin,lvstun-admin,\"system:masters\"\n");
        if let Some(access) = &self.nodes {
            for node in &access.nodes {
                tokens.push_str(&format!(
                    "{},system:node:{node},node-{node},\"system:nodes\"\n",
                    Self::node_token(node)
                ));
            }
            tokens.push_str(&format!(
                "{KUBE_PROXY_TOKEN},system:kube-proxy,kube-proxy\n"
            ));
        }
        std::fs::write(self.dir.join("tokens.csv"), tokens).map_err(io("writing tokens.csv"))?;
        std::fs::write(
            &self.kubeconfig,
            self.kubeconfig_text("lvstun-admin", ADMIN_TOKEN),
        )
        .map_err(io("writing the admin kubeconfig"))?;
        Ok(())
    }

    /// A kubeconfig for `user` authenticating with `token` (the server's certificate is
    /// self-signed by kube-apiserver, and everything stays on loopback).
    pub fn kubeconfig_text(&self, user: &str, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lvstun-test\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: lvstun-test\n  context:\n    cluster: lvstun-test\n    user: {user}\ncurrent-context: lvstun-test\n",
            self.server_url()
        )
    }

    /// Write a kubeconfig for another identity (e.g. a ServiceAccount token) and return its path.
    pub fn write_kubeconfig(&self, user: &str, token: &str) -> Result<PathBuf, ControlPlaneError> {
        let path = self
            .dir
            .join(format!("{user}.kubeconfig").replace(':', "_"));
        std::fs::write(&path, self.kubeconfig_text(user, token))
            .map_err(io("writing a kubeconfig"))?;
        Ok(path)
    }

    fn spawn(&self, name: &str, program: &Path, args: &[String]) -> Result<(), ControlPlaneError> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))
            .map_err(io(format!("creating {name}.log")))?;
        let log2 = log.try_clone().map_err(io("cloning a log handle"))?;
        let child = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io(format!("starting {name}")))?;
        self.lock().push((name.to_string(), child));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Child)>> {
        self.processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start_etcd(&self) -> Result<(), ControlPlaneError> {
        let peer = free_port()?;
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer_url = format!("http://127.0.0.1:{peer}");
        let args = vec![
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ];
        self.spawn("etcd", &self.bin.join("etcd"), &args)
    }

    /// Start (or restart, after [`ControlPlane::stop`] of `kube-apiserver`) the API server.
    pub fn start_apiserver(&self) -> Result<(), ControlPlaneError> {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let (advertise, authorization) = match &self.nodes {
            // The certificate kube-apiserver makes for itself names the advertise address.
            Some(access) => (access.advertise.0.as_str(), "Node,RBAC"),
            None => ("127.0.0.1", "RBAC"),
        };
        let mut args = vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
            "--bind-address=127.0.0.1".into(),
            format!("--advertise-address={advertise}"),
            format!("--secure-port={}", self.api_port),
            format!("--cert-dir={}", d("certs")),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            format!("--authorization-mode={authorization}"),
            format!("--token-auth-file={}", d("tokens.csv")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--allow-privileged=true".into(),
            "--enable-priority-and-fairness=false".into(),
            "--endpoint-reconciler-type=none".into(),
            "--v=1".into(),
        ];
        if self.nodes.is_some() {
            args.push("--enable-admission-plugins=NodeRestriction".into());
        }
        self.spawn("kube-apiserver", &self.bin.join("kube-apiserver"), &args)
    }

    fn start_controller_manager(&self) -> Result<(), ControlPlaneError> {
        let mut controllers = String::from(
            "garbagecollector,daemonset,deployment,replicaset,namespace,serviceaccount,serviceaccount-token",
        );
        if self.nodes.is_some() {
            // Pods with a ServiceAccount token need the kube-root-ca.crt ConfigMap; Nodes need
            // their lifecycle (taints, eviction) and finished pods their collection; `helm
            // uninstall`'s pre-delete hook is a Job.
            controllers.push_str(",root-ca-cert-publisher,endpointslice,nodelifecycle,podgc,job");
        }
        let mut args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--authentication-kubeconfig={}", self.kubeconfig.display()),
            format!("--authorization-kubeconfig={}", self.kubeconfig.display()),
            format!(
                "--service-account-private-key-file={}",
                self.dir.join("sa.key").display()
            ),
            format!("--controllers={controllers}"),
            "--leader-elect=false".into(),
            "--use-service-account-credentials=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()?),
            "--concurrent-gc-syncs=5".into(),
            "--v=1".into(),
        ];
        if self.nodes.is_some() {
            args.push(format!("--root-ca-file={}", self.ca_bundle().display()));
        }
        self.spawn(
            "kube-controller-manager",
            &self.bin.join("kube-controller-manager"),
            &args,
        )
    }

    /// kube-scheduler: the DaemonSet controller only sets node affinity; the scheduler binds.
    fn start_scheduler(&self) -> Result<(), ControlPlaneError> {
        let args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--authentication-kubeconfig={}", self.kubeconfig.display()),
            format!("--authorization-kubeconfig={}", self.kubeconfig.display()),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()?),
            "--v=1".into(),
        ];
        self.spawn("kube-scheduler", &self.bin.join("kube-scheduler"), &args)
    }

    /// The `kubernetes` Service's endpoint at the nodes' address of the API server (the
    /// reconciler is off: it would publish the loopback address the server binds).
    fn publish_kubernetes_endpoint(&self) -> Result<(), ControlPlaneError> {
        let Some(access) = &self.nodes else {
            return Ok(());
        };
        let (addr, port) = &access.advertise;
        let yaml = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: kubernetes\n  namespace: default\n  labels:\n    kubernetes.io/service-name: kubernetes\n    endpointslice.kubernetes.io/managed-by: lvstun-lab\naddressType: IPv4\nendpoints:\n- addresses: [\"{addr}\"]\n  conditions: {{ready: true}}\nports:\n- name: https\n  port: {port}\n  protocol: TCP\n"
        );
        let out = self.kubectl_apply_stdin(&yaml, "default")?;
        self.check("publishing the kubernetes EndpointSlice", &out)?;
        Ok(())
    }

    /// Stop one of the processes by name (`etcd`, `kube-apiserver`, `kube-controller-manager`),
    /// e.g. to prove the data plane survives the API server going away.
    pub fn stop(&self, name: &str) {
        let mut procs = self.lock();
        for (n, child) in procs.iter_mut().filter(|(n, _)| n == name) {
            terminate(n, child);
        }
        procs.retain(|(n, _)| n != name);
    }

    /// The PID of the running process `name` (`kube-apiserver`, ...) itself, not of its
    /// watchdog: the watchdog's child whose command name is `name`.
    pub fn pid(&self, name: &str) -> Result<u32, ControlPlaneError> {
        let watchdogs: Vec<u32> = self
            .lock()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, c)| c.id())
            .collect();
        for w in watchdogs {
            let children = std::fs::read_to_string(format!("/proc/{w}/task/{w}/children"))
                .map_err(io(format!("reading the children of {name}'s watchdog")))?;
            for pid in children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == name {
                    return Ok(pid);
                }
            }
        }
        Err(ControlPlaneError::Client(format!("no running {name}")))
    }

    /// Freeze process `name` (SIGSTOP): its sockets stay open and nothing answers, as with a
    /// hung or partitioned server. It runs on (SIGCONT) when the returned guard is resumed or
    /// dropped, so a failing test never leaves it frozen.
    pub fn pause(&self, name: &str) -> Result<Paused, ControlPlaneError> {
        let pid = self.pid(name)?;
        signal(pid, "-STOP")?;
        Ok(Paused {
            pid,
            running: false,
        })
    }

    /// Wait until `/readyz` answers `ok`.
    pub fn wait_ready(&self, limit: Duration) -> Result<(), ControlPlaneError> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let out = self
                .kubectl()
                .args(["get", "--raw=/readyz"])
                .output()
                .map_err(io("running kubectl get --raw=/readyz"))?;
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(ControlPlaneError::NotReady(
            limit,
            self.dir.display().to_string(),
        ))
    }

    /// The API server's loopback port.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// The admin kubeconfig's path.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Where this control plane's logs and data live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of upstream binaries in use.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `kubectl` as the admin identity.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(self.bin.join("kubectl"));
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// `helm` as the admin identity, with its caches inside the data dir.
    pub fn helm(&self) -> Command {
        let mut c = Command::new(self.bin.join("helm"));
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"));
        c
    }

    /// Run a command and return its stdout, or an error carrying its stderr.
    pub fn run(&self, what: &str, cmd: &mut Command) -> Result<String, ControlPlaneError> {
        let out = cmd.output().map_err(io(format!("running {what}")))?;
        self.check(what, &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run `kubectl apply -f -` with `yaml` on stdin, returning the full output (success or not)
    /// so tests can assert on refusal messages.
    pub fn kubectl_apply_stdin(
        &self,
        yaml: &str,
        namespace: &str,
    ) -> Result<Output, ControlPlaneError> {
        let mut child = self
            .kubectl()
            .args(["apply", "-n", namespace, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("starting kubectl apply"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(yaml.as_bytes())
                .map_err(io("writing to kubectl apply"))?;
        }
        child
            .wait_with_output()
            .map_err(io("waiting for kubectl apply"))
    }

    fn check(&self, what: &str, out: &Output) -> Result<(), ControlPlaneError> {
        if out.status.success() {
            return Ok(());
        }
        Err(ControlPlaneError::Command {
            what: what.into(),
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            logs: self.dir.display().to_string(),
        })
    }

    /// A kube client as the admin identity.
    pub async fn client(&self) -> Result<kube::Client, ControlPlaneError> {
        client_from_kubeconfig(&self.kubeconfig).await
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, ControlPlaneError> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| ControlPlaneError::Client(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| ControlPlaneError::Client(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| ControlPlaneError::Client(e.to_string()))
}

fn signal(pid: u32, sig: &str) -> Result<(), ControlPlaneError> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map_err(io(format!("kill {sig} {pid}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(ControlPlaneError::Command {
            what: format!("kill {sig} {pid}"),
            code: status.code(),
            stderr: String::new(),
            logs: String::new(),
        })
    }
}

/// A control-plane process frozen by [`ControlPlane::pause`]; resumed on drop.
pub struct Paused {
    pid: u32,
    running: bool,
}

impl Paused {
    /// Let it run again (SIGCONT).
    pub fn resume(&mut self) -> Result<(), ControlPlaneError> {
        signal(self.pid, "-CONT")?;
        self.running = true;
        Ok(())
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if !self.running {
            let _ = signal(self.pid, "-CONT");
        }
    }
}

fn terminate(name: &str, child: &mut Child) {
    // SIGTERM reaches the watchdog, which stops the real process and waits for it.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{name} did not stop in 20 s; killing");
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let mut procs = self.lock();
        // Reverse start order: controller-manager, apiserver, then etcd.
        while let Some((name, mut child)) = procs.pop() {
            terminate(&name, &mut child);
        }
    }
}

/// A namespace name unique to one test, so tests sharing a control plane never collide.
pub fn unique_namespace(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}
