//! The helm chart and the plain manifests: lint and values-schema checks, staleness of the
//! rendered manifests, the uninstall hook as rendered, and a real `helm install` / `helm
//! uninstall` (its pre-delete hook's command run as a process with the hook's own
//! ServiceAccount) and `kubectl apply` against the local control plane.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns panic on purpose

use std::process::{Command, Stdio};
use std::time::Duration;

use lvstun_tests::controlplane::{ControlPlane, bin_dir, repo_root, unique_namespace};
use lvstun_tests::operator_fixture::{get_json, operator_binary, wait_for};
use serde_json::{Value, json};

#[test]
fn chart_lints_and_refuses_bad_values() {
    let helm = bin_dir().unwrap().join("helm");
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("deploy/helm/tests/check.sh"))
        .env("HELM", &helm)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every bad-values file was refused and every good one rendered.
    let refused = stdout
        .lines()
        .filter(|l| l.starts_with("ok") && l.contains("refused"))
        .count();
    let bad_files = std::fs::read_dir(repo_root().join("deploy/helm/tests/bad-values"))
        .unwrap()
        .count();
    assert!(bad_files >= 10);
    assert_eq!(refused, bad_files, "{stdout}");
}

#[test]
fn plain_manifests_are_rendered_from_the_chart() {
    let helm = bin_dir().unwrap().join("helm");
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("deploy/render-manifests.sh"))
        .arg("--check")
        .env("HELM", &helm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn names(cp: &ControlPlane, kind: &str, ns: Option<&str>, selector: &str) -> Vec<String> {
    let mut cmd = cp.kubectl();
    cmd.args(["get", kind, "-l", selector, "-o", "name"]);
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let out = cp.run("kubectl get", &mut cmd).unwrap();
    out.lines().map(str::to_string).collect()
}

/// The chart rendered with `helm template`, as documents.
fn rendered(extra: &[&str]) -> Vec<Value> {
    let helm = bin_dir().unwrap().join("helm");
    let out = Command::new(helm)
        .args(["template", "lvstun"])
        .arg(repo_root().join("deploy/helm/lvstun"))
        .args(["--namespace", "lvstun-system"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---")
        .filter_map(|doc| serde_norway::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

#[test]
fn the_uninstall_hook_is_rendered_with_its_own_least_rbac() {
    let docs = rendered(&[]);
    let hook = |d: &&Value| d["metadata"]["annotations"]["helm.sh/hook"].is_string();
    let hooks: Vec<&Value> = docs.iter().filter(hook).collect();
    let kinds: Vec<(&str, &str)> = hooks
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap(),
                d["metadata"]["annotations"]["helm.sh/hook-weight"]
                    .as_str()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ServiceAccount", "-10"),
            ("Role", "-10"),
            ("RoleBinding", "-5"),
            ("Job", "0")
        ],
        "the Job comes last, after its identity and permissions"
    );
    for d in &hooks {
        let a = &d["metadata"]["annotations"];
        assert_eq!(a["helm.sh/hook"], "pre-delete", "{d}");
        assert_eq!(
            a["helm.sh/hook-delete-policy"], "before-hook-creation,hook-succeeded",
            "{d}"
        );
        assert_eq!(d["metadata"]["name"], "lvstun-uninstall");
        assert_eq!(d["metadata"]["namespace"], "lvstun-system");
    }

    let job = find(&docs, "Job", "lvstun-uninstall");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "lvstun-uninstall");
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    let operator = find(&docs, "Deployment", "lvstun-operator");
    assert_eq!(
        c["image"], operator["spec"]["template"]["spec"]["containers"][0]["image"],
        "the operator's image runs the hook"
    );
    assert_eq!(
        c["args"],
        json!([
            "uninstall",
            "--namespace=lvstun-system",
            "--fullname=lvstun",
            "--timeout=120s",
            "--log-format=json"
        ])
    );
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    // Both tries of the Job fit in helm's default --timeout (5 minutes).
    let deadline = job["spec"]["activeDeadlineSeconds"].as_i64().unwrap();
    assert!(deadline < 300, "{deadline}");

    // The hook's Role: namespaced, and no more than the uninstall does.
    let role = find(&docs, "Role", "lvstun-uninstall");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["lvstun-operator"], "verbs": ["get", "patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get", "list", "delete"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["lvstun-operator"], "verbs": ["delete"]}
        ])
    );
    assert!(
        !docs.iter().any(|d| d["kind"] == "ClusterRole"
            && d["metadata"]["name"]
                .as_str()
                .unwrap()
                .contains("uninstall")),
        "the hook needs nothing cluster-wide"
    );

    // The daemons may read their own DaemonSet (and Node) at SIGTERM, nothing more.
    for role in ["balancer", "web"] {
        let name = format!("lvstun-{role}");
        let r = find(&docs, "Role", &name);
        assert_eq!(
            r["rules"],
            json!([{"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": [name], "verbs": ["get"]}]),
            "{role}"
        );
        let b = find(&docs, "RoleBinding", &name);
        assert_eq!(b["subjects"][0]["name"], name.as_str());
        let cr = find(&docs, "ClusterRole", &name);
        assert!(
            cr["rules"]
                .as_array()
                .unwrap()
                .contains(&json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]})),
            "{role}: {cr}"
        );
    }

    // `helm template --no-hooks` (what the plain manifests are rendered with) has none of it:
    // `kubectl apply` would run the Job at once.
    let plain = rendered(&["--no-hooks"]);
    assert!(!plain.iter().any(|d| hook(&d)));
    let manifests =
        std::fs::read_to_string(repo_root().join("deploy/manifests/lvstun.yaml")).unwrap();
    assert!(
        !manifests.contains("helm.sh/hook"),
        "the plain manifests must not carry the hook"
    );
}

/// The Job's status as the Job controller writes it when its pod succeeded (this control
/// plane runs neither the Job controller nor a kubelet).
fn mark_job_succeeded(cp: &ControlPlane, ns: &str, job: &str) {
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let cond = |t: &str| {
        json!({"type": t, "status": "True", "reason": "CompletionsReached",
               "message": "Reached expected number of succeeded pods",
               "lastProbeTime": now, "lastTransitionTime": now})
    };
    let status = json!({"status": {
        "startTime": now, "completionTime": now, "succeeded": 1, "active": 0, "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "conditions": [cond("SuccessCriteriaMet"), cond("Complete")]
    }});
    cp.run(
        "kubectl patch job status",
        cp.kubectl().args([
            "patch",
            "job",
            job,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]),
    )
    .unwrap();
}

/// What the operator makes beside the release (ADR 0001): its two DaemonSets, one more under
/// a name it no longer uses (found by the installation label), and its leader Lease. Their
/// pods would select no node here.
fn operator_products(release: &str) -> String {
    let ds = |name: &str| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\n  labels:\n    \
             app.kubernetes.io/managed-by: lvstun-operator\n    lvstun.io/operator: {release}-operator\n\
             spec:\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      \
             labels: {{app: {name}}}\n    spec:\n      nodeSelector: {{lvstun.io/nowhere: \"true\"}}\n      \
             containers: [{{name: c, image: localhost/none}}]\n---\n"
        )
    };
    format!(
        "{}{}{}apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {release}-operator\n\
         spec:\n  holderIdentity: gone\n",
        ds(&format!("{release}-balancer")),
        ds(&format!("{release}-web")),
        ds(&format!("{release}-old-name"))
    )
}

#[test]
fn helm_uninstall_runs_its_hook_then_leaves_only_the_crds() {
    let cp = ControlPlane::shared().unwrap();
    let binary = operator_binary(false).unwrap();
    let ns = unique_namespace("helm");
    let release = format!("lvstun-{}", ns.rsplit('-').next().unwrap_or("0"));
    let chart = repo_root().join("deploy/helm/lvstun");
    let out = cp
        .run(
            "helm install",
            cp.helm().args(["install", &release]).arg(&chart).args([
                "-n",
                &ns,
                "--create-namespace",
            ]),
        )
        .unwrap();
    assert!(out.contains("STATUS: deployed"), "{out}");
    // NOTES.txt tells the user what to do next, with the namespace filled in.
    assert!(out.contains("kubectl get lvsvc"), "{out}");

    let selector = format!("app.kubernetes.io/instance={release}");
    let deploys = names(cp, "deployments", Some(&ns), &selector);
    assert_eq!(deploys.len(), 1, "{deploys:?}");
    let replicas = cp
        .run(
            "kubectl get deployment",
            cp.kubectl().args([
                "get",
                &deploys[0],
                "-n",
                &ns,
                "-o",
                "jsonpath={.spec.replicas}",
            ]),
        )
        .unwrap();
    assert_eq!(replicas, "2");
    assert_eq!(names(cp, "serviceaccounts", Some(&ns), &selector).len(), 3);
    assert!(!names(cp, "clusterroles", None, &selector).is_empty());
    // kube-controller-manager turned the Deployment into a ReplicaSet and two (Pending) Pods.
    let mut pods = Vec::new();
    for _ in 0..60 {
        pods = names(cp, "pods", Some(&ns), "app.kubernetes.io/name=lvstun");
        if pods.len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(pods.len(), 2, "{pods:?}");

    let out = cp
        .kubectl_apply_stdin(&operator_products(&release), &ns)
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let owned = format!(
        "app.kubernetes.io/managed-by=lvstun-operator,lvstun.io/operator={release}-operator"
    );
    assert_eq!(names(cp, "daemonsets", Some(&ns), &owned).len(), 3);

    // helm uninstall creates the hook's objects first and waits for its Job.
    let uninstall = cp
        .helm()
        .args(["uninstall", &release, "-n", &ns, "--wait", "--timeout=3m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hook = format!("{release}-uninstall");
    let job = wait_for("the pre-delete hook's Job", Duration::from_secs(60), || {
        get_json(cp, &["job", &hook], &ns)
    });
    // No Job controller and no kubelet here: the test plays them, running the Job's container
    // as a process with the hook ServiceAccount's token (which proves the hook's Role enough).
    let pod = &job["spec"]["template"]["spec"];
    let account = pod["serviceAccountName"].as_str().unwrap();
    assert_eq!(account, hook);
    let args: Vec<String> = serde_json::from_value(pod["containers"][0]["args"].clone()).unwrap();
    assert_eq!(
        args[..3],
        [
            "uninstall".to_string(),
            format!("--namespace={ns}"),
            format!("--fullname={release}")
        ]
    );
    let token = wait_for(
        "a token of the hook's ServiceAccount",
        Duration::from_secs(30),
        || {
            cp.run(
                "kubectl create token",
                cp.kubectl().args(["create", "token", account, "-n", &ns]),
            )
            .ok()
        },
    );
    let kubeconfig = cp
        .write_kubeconfig(&format!("{ns}-uninstall"), token.trim())
        .unwrap();
    let run = Command::new(&binary)
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("POD_NAMESPACE")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for line in [
        format!("uninstall: scaled Deployment {ns}/{release}-operator to 0 replicas"),
        "uninstall: the operator's pods are gone".to_string(),
        format!("uninstall: DaemonSet {ns}/{release}-balancer is gone"),
        format!("uninstall: DaemonSet {ns}/{release}-web is gone"),
        format!("uninstall: DaemonSet {ns}/{release}-old-name is gone"),
        format!("uninstall: deleted Lease {ns}/{release}-operator"),
    ] {
        assert!(printed.contains(&line), "missing {line:?} in:\n{printed}");
    }
    // What it left: the operator at 0 replicas with no pod, no DaemonSet, no Lease.
    let replicas = cp
        .run(
            "kubectl get deployment",
            cp.kubectl().args([
                "get",
                &deploys[0],
                "-n",
                &ns,
                "-o",
                "jsonpath={.spec.replicas}",
            ]),
        )
        .unwrap();
    assert_eq!(replicas, "0");
    assert!(names(cp, "pods", Some(&ns), "app.kubernetes.io/name=lvstun").is_empty());
    assert!(names(cp, "daemonsets", Some(&ns), &owned).is_empty());
    assert!(get_json(cp, &["lease", &format!("{release}-operator")], &ns).is_none());

    // Run again (a retried Job): everything is gone already, and it says so.
    let again = Command::new(&binary)
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{printed}");
    assert!(printed.contains("not found"), "{printed}");

    mark_job_succeeded(cp, &ns, &hook);
    let done = uninstall.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "helm uninstall: {}\n{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    // hook-succeeded: the hook's own objects went with it.
    for kind in ["job", "serviceaccount", "role", "rolebinding"] {
        assert!(
            get_json(cp, &[kind, &hook], &ns).is_none(),
            "{kind} {hook} left behind"
        );
    }
    for kind in [
        "deployments",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "services",
        "poddisruptionbudgets",
    ] {
        assert_eq!(
            names(cp, kind, Some(&ns), &selector),
            Vec::<String>::new(),
            "{kind} left behind"
        );
    }
    for kind in ["clusterroles", "clusterrolebindings"] {
        assert_eq!(
            names(cp, kind, None, &selector),
            Vec::<String>::new(),
            "{kind} left behind"
        );
    }
    // Helm's convention: CRDs stay, so users' VirtualServices survive an uninstall.
    cp.run(
        "kubectl get crd",
        cp.kubectl()
            .args(["get", "crd", "virtualservices.lvstun.io"]),
    )
    .unwrap();
    cp.run(
        "kubectl delete namespace",
        cp.kubectl()
            .args(["delete", "namespace", &ns, "--wait=false"]),
    )
    .unwrap();
}

#[test]
fn plain_manifests_apply_and_delete() {
    let cp = ControlPlane::shared().unwrap();
    let dir = repo_root().join("deploy");
    cp.run(
        "kubectl apply crds",
        cp.kubectl()
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(dir.join("crds")),
    )
    .unwrap();
    let out = cp
        .run(
            "kubectl apply manifests",
            cp.kubectl()
                .args(["apply", "-f"])
                .arg(dir.join("manifests/namespace.yaml"))
                .arg("-f")
                .arg(dir.join("manifests/lvstun.yaml")),
        )
        .unwrap();
    assert!(
        out.contains("deployment.apps/lvstun-operator created"),
        "{out}"
    );
    assert!(
        out.contains("clusterrole.rbac.authorization.k8s.io/lvstun-operator created"),
        "{out}"
    );
    cp.run(
        "kubectl delete manifests",
        cp.kubectl()
            .args(["delete", "--wait=false", "-f"])
            .arg(dir.join("manifests/lvstun.yaml")),
    )
    .unwrap();
}
