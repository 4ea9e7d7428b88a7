//! The helm chart and the plain manifests: lint and values-schema checks, staleness of the
//! rendered manifests, the uninstall hook as rendered, and a real `helm install` / `helm
//! uninstall` (its pre-delete hook's command run as a process with the hook's own
//! ServiceAccount) and `kubectl apply` against the local control plane. `helm` and `kubectl
//! apply` are what is under test where they run; what they leave is read through the typed kube
//! client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns panic on purpose

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use lvstun_tests::cluster::{self, apply, await_object, from_yaml, names};
use lvstun_tests::controlplane::{ControlPlane, bin_dir, repo_root, unique_namespace};
use lvstun_tests::operator_fixture::operator_binary;
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
        // The web role reads its own Node; the balancer watches them all (its VRRP peers'
        // InternalIPs, the source allowlist of docs/security.md).
        let node_verbs = match role {
            "balancer" => json!(["get", "list", "watch"]),
            _ => json!(["get"]),
        };
        assert!(
            cr["rules"]
                .as_array()
                .unwrap()
                .contains(&json!({"apiGroups": [""], "resources": ["nodes"], "verbs": node_verbs})),
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
async fn mark_job_succeeded(jobs: &Api<Job>, job: &str) {
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
    jobs.patch_status(job, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// What the operator makes beside the release (ADR 0001): its two DaemonSets, one more under
/// a name it no longer uses (found by the installation label), and its leader Lease. Their
/// pods would select no node here.
fn operator_products(release: &str) -> (Vec<DaemonSet>, Lease) {
    let ds = |name: &str| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\n  labels:\n    \
             app.kubernetes.io/managed-by: lvstun-operator\n    lvstun.io/operator: {release}-operator\n\
             spec:\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      \
             labels: {{app: {name}}}\n    spec:\n      nodeSelector: {{lvstun.io/nowhere: \"true\"}}\n      \
             containers: [{{name: c, image: localhost/none}}]\n---\n"
        )
    };
    let daemonsets = format!(
        "{}{}{}",
        ds(&format!("{release}-balancer")),
        ds(&format!("{release}-web")),
        ds(&format!("{release}-old-name"))
    );
    let lease = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {release}-operator\n\
         spec:\n  holderIdentity: gone\n"
    );
    (
        from_yaml(&daemonsets).unwrap(),
        from_yaml::<Lease>(&lease).unwrap().remove(0),
    )
}

/// Names of the objects of kind `K` in `ns` with the label `selector`.
async fn named<K>(client: &Client, ns: &str, selector: &str) -> Vec<String>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    names(&Api::<K>::namespaced(client.clone(), ns), selector)
        .await
        .unwrap()
}

/// Names of the cluster-wide objects of kind `K` with the label `selector`.
async fn named_cluster<K>(client: &Client, selector: &str) -> Vec<String>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    names(&Api::<K>::all(client.clone()), selector)
        .await
        .unwrap()
}

/// The operator Deployment's `spec.replicas`.
async fn replicas(deployments: &Api<Deployment>, name: &str) -> Option<i32> {
    deployments
        .get(name)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.replicas)
}

#[tokio::test]
async fn helm_uninstall_runs_its_hook_then_leaves_only_the_crds() {
    let cp = ControlPlane::shared().unwrap();
    let client = cp.client().await.unwrap();
    let binary = operator_binary(false).unwrap();
    let ns = unique_namespace("helm");
    let release = format!("lvstun-{}", ns.rsplit('-').next().unwrap_or("0"));
    let chart = repo_root().join("deploy/helm/lvstun");
    // `helm install`, as users run it, is what is under test.
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
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deploys = names(&deployments, &selector).await.unwrap();
    assert_eq!(deploys.len(), 1, "{deploys:?}");
    assert_eq!(replicas(&deployments, &deploys[0]).await, Some(2));
    assert_eq!(
        named::<ServiceAccount>(&client, &ns, &selector).await.len(),
        3
    );
    assert!(
        !named_cluster::<ClusterRole>(&client, &selector)
            .await
            .is_empty()
    );
    // The status policy of the daemons' tokens (controlplane_status_tokens.rs) and the address
    // pools' policy (controlplane_pools.rs), each with its binding.
    let policy = vec![
        format!("{release}-node-status"),
        format!("{release}-vip-policy"),
    ];
    assert_eq!(
        named_cluster::<ValidatingAdmissionPolicy>(&client, &selector).await,
        policy
    );
    assert_eq!(
        named_cluster::<ValidatingAdmissionPolicyBinding>(&client, &selector).await,
        policy
    );
    // kube-controller-manager turned the Deployment into a ReplicaSet and two (Pending) Pods.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let operator_pods = "app.kubernetes.io/name=lvstun";
    cluster::poll(
        "two operator pods",
        Duration::from_secs(30),
        || async { names(&pods, operator_pods).await.unwrap_or_default() },
        |p| (p.len() == 2).then_some(()),
    )
    .await
    .unwrap();

    let (daemonsets, lease) = operator_products(&release);
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    for ds in &daemonsets {
        apply(&dss, ds).await.unwrap();
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    apply(&leases, &lease).await.unwrap();
    let owned = format!(
        "app.kubernetes.io/managed-by=lvstun-operator,lvstun.io/operator={release}-operator"
    );
    assert_eq!(names(&dss, &owned).await.unwrap().len(), 3);

    // helm uninstall creates the hook's objects first and waits for its Job.
    let uninstall = cp
        .helm()
        .args(["uninstall", &release, "-n", &ns, "--wait", "--timeout=3m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hook = format!("{release}-uninstall");
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job = await_object(
        &jobs,
        &hook,
        "the pre-delete hook's Job",
        Duration::from_secs(60),
        |j| Some(j.clone()),
    )
    .await
    .unwrap();
    // No Job controller and no kubelet here: the test plays them, running the Job's container
    // as a process with the hook ServiceAccount's token (which proves the hook's Role enough).
    let pod = job
        .spec
        .and_then(|s| s.template.spec)
        .expect("the Job's pod template");
    let account = pod.service_account_name.clone().unwrap_or_default();
    assert_eq!(account, hook);
    let args: Vec<String> = pod.containers[0].args.clone().unwrap_or_default();
    assert_eq!(
        args[..3],
        [
            "uninstall".to_string(),
            format!("--namespace={ns}"),
            format!("--fullname={release}")
        ]
    );
    let token = cluster::poll(
        "a token of the hook's ServiceAccount",
        Duration::from_secs(30),
        || cluster::service_account_token(&client, &ns, &account, 3600),
        |t| t.as_ref().ok().cloned(),
    )
    .await
    .unwrap();
    let kubeconfig = cp
        .write_kubeconfig(&format!("{ns}-uninstall"), &token)
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
    assert_eq!(replicas(&deployments, &deploys[0]).await, Some(0));
    assert!(names(&pods, operator_pods).await.unwrap().is_empty());
    assert!(names(&dss, &owned).await.unwrap().is_empty());
    assert!(
        leases
            .get_opt(&format!("{release}-operator"))
            .await
            .unwrap()
            .is_none()
    );

    // Run again (a retried Job): everything is gone already, and it says so.
    let again = Command::new(&binary)
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{printed}");
    assert!(printed.contains("not found"), "{printed}");

    mark_job_succeeded(&jobs, &hook).await;
    let done = tokio::task::spawn_blocking(move || uninstall.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        done.status.success(),
        "helm uninstall: {}\n{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    // hook-succeeded: the hook's own objects went with it.
    let left = [
        ("job", jobs.get_opt(&hook).await.unwrap().is_some()),
        (
            "serviceaccount",
            Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                .get_opt(&hook)
                .await
                .unwrap()
                .is_some(),
        ),
        (
            "role",
            Api::<Role>::namespaced(client.clone(), &ns)
                .get_opt(&hook)
                .await
                .unwrap()
                .is_some(),
        ),
        (
            "rolebinding",
            Api::<RoleBinding>::namespaced(client.clone(), &ns)
                .get_opt(&hook)
                .await
                .unwrap()
                .is_some(),
        ),
    ];
    for (kind, present) in left {
        assert!(!present, "{kind} {hook} left behind");
    }
    let none = Vec::<String>::new();
    let sel = selector.as_str();
    let namespaced = [
        ("deployments", named::<Deployment>(&client, &ns, sel).await),
        (
            "serviceaccounts",
            named::<ServiceAccount>(&client, &ns, sel).await,
        ),
        ("roles", named::<Role>(&client, &ns, sel).await),
        (
            "rolebindings",
            named::<RoleBinding>(&client, &ns, sel).await,
        ),
        ("services", named::<Service>(&client, &ns, sel).await),
        (
            "poddisruptionbudgets",
            named::<PodDisruptionBudget>(&client, &ns, sel).await,
        ),
        (
            "clusterroles",
            named_cluster::<ClusterRole>(&client, sel).await,
        ),
        (
            "clusterrolebindings",
            named_cluster::<ClusterRoleBinding>(&client, sel).await,
        ),
        (
            "validatingadmissionpolicies",
            named_cluster::<ValidatingAdmissionPolicy>(&client, sel).await,
        ),
        (
            "validatingadmissionpolicybindings",
            named_cluster::<ValidatingAdmissionPolicyBinding>(&client, sel).await,
        ),
    ];
    for (kind, left) in namespaced {
        assert_eq!(left, none, "{kind} left behind");
    }
    // Helm's convention: CRDs stay, so users' VirtualServices survive an uninstall.
    Api::<CustomResourceDefinition>::all(client.clone())
        .get("virtualservices.lvstun.io")
        .await
        .unwrap();
    cluster::delete_namespace(&client, &ns, false)
        .await
        .unwrap();
}

#[test]
fn plain_manifests_apply_and_delete() {
    // `kubectl apply -f deploy/manifests` is how the plain manifests are meant to be used, and
    // its report is what is checked.
    let cp = ControlPlane::shared().unwrap();
    let dir = repo_root().join("deploy");
    cp.run(
        "kubectl apply crds",
        cp.kubectl()
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(dir.join("crds")),
    )
    .unwrap();
    // The manifests hold a VIPPolicy, a kind of the CRDs: kubectl maps it only once they are
    // Established (the user guide's order).
    cp.run(
        "kubectl wait crds",
        cp.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ]),
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
    // The admin's address pools and the policy that enforces them, and the policy that keeps
    // each node daemon's token to its own node's status entries.
    for made in [
        "vippolicy.lvstun.io/lvstun created",
        "validatingadmissionpolicy.admissionregistration.k8s.io/lvstun-vip-policy created",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/lvstun-vip-policy created",
        "validatingadmissionpolicy.admissionregistration.k8s.io/lvstun-node-status created",
    ] {
        assert!(out.contains(made), "{made}: {out}");
    }
    cp.run(
        "kubectl delete manifests",
        cp.kubectl()
            .args(["delete", "--wait=false", "-f"])
            .arg(dir.join("manifests/lvstun.yaml")),
    )
    .unwrap();
}
