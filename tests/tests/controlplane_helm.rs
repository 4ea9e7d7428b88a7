//! The helm chart and the plain manifests: lint and values-schema checks, staleness of the
//! rendered manifests, and a real `helm install` / `helm uninstall` and `kubectl apply` against
//! the local control plane.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns panic on purpose

use lvstun_tests::controlplane::{ControlPlane, bin_dir, repo_root, unique_namespace};

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

#[test]
fn helm_install_then_uninstall_leaves_only_the_crds() {
    let cp = ControlPlane::shared().unwrap();
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

    cp.run(
        "helm uninstall",
        cp.helm().args(["uninstall", &release, "-n", &ns, "--wait"]),
    )
    .unwrap();
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
