//! `lvstun-lab demo`: the README's main job. Starts a local control plane (etcd,
//! kube-apiserver, kube-controller-manager), installs lvstun with helm, applies the example
//! VirtualService and RealServers, then boots the lab VM (a real kernel with IPVS and ipip) where
//! lvstun's own daemons run the classic LVS-TUN recipe, and prints the walkthrough.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lvstun_tests::controlplane::{ControlPlane, repo_root};
use lvstun_tests::lab;

fn banner(step: &str) {
    println!("\n==================== {step} ====================");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => match demo() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("\nlvstun-lab demo failed: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            println!("usage: lvstun-lab demo");
            ExitCode::from(2)
        }
    }
}

fn demo() -> Result<(), String> {
    let started = Instant::now();
    banner("1/3 control plane: etcd + kube-apiserver + kube-controller-manager on 127.0.0.1");
    let cp = ControlPlane::start().map_err(|e| e.to_string())?;
    println!(
        "API server {} (logs in {})",
        cp.server_url(),
        cp.dir().display()
    );

    banner("2/3 kubectl apply CRDs, helm install lvstun, the example VirtualService");
    let root = repo_root();
    let out = cp
        .run(
            "kubectl apply CRDs",
            cp.kubectl()
                .args(["apply", "--server-side", "-f"])
                .arg(root.join("deploy/crds")),
        )
        .map_err(|e| e.to_string())?;
    print!("{out}");
    cp.run(
        "kubectl wait",
        cp.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/virtualservices.lvstun.io",
            "crd/realservers.lvstun.io",
        ]),
    )
    .map_err(|e| e.to_string())?;
    let out = cp
        .run(
            "helm install",
            cp.helm()
                .args(["install", "lvstun"])
                .arg(root.join("deploy/helm/lvstun"))
                .args(["-n", "lvstun-system", "--create-namespace"]),
        )
        .map_err(|e| e.to_string())?;
    println!("$ helm install lvstun deploy/helm/lvstun -n lvstun-system --create-namespace");
    print!("{}", out.lines().take(6).collect::<Vec<_>>().join("\n"));
    println!();
    let out = cp
        .run(
            "kubectl apply examples",
            cp.kubectl()
                .args(["apply", "-n", "default", "-f"])
                .arg(root.join("deploy/examples")),
        )
        .map_err(|e| e.to_string())?;
    println!("$ kubectl apply -f deploy/examples/");
    print!("{out}");
    let out = cp
        .run(
            "kubectl get",
            cp.kubectl().args(["get", "lvsvc,lvsrs", "-n", "default"]),
        )
        .map_err(|e| e.to_string())?;
    println!("$ kubectl get lvsvc,lvsrs");
    print!("{out}");

    banner("3/3 the lab VM: lvstun's daemons run the recipe on a real kernel");
    println!("booting Debian's kernel under qemu (software emulation; about a minute)...");
    lab::ensure_built_bins(&[("lvstun-node", "lvstun-node")]).map_err(|e| e.to_string())?;
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let done = done.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let s = t0.elapsed().as_secs();
                if s > 0 && s.is_multiple_of(15) && t0.elapsed().subsec_millis() < 250 {
                    println!("  ... VM running, {s} s");
                }
            }
        })
    };
    let options = lab::ScenarioOptions {
        timeout: Some(Duration::from_secs(900)),
        ..Default::default()
    };
    let run = lab::run_scenario_with("demo", &options);
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    let run = run.map_err(|e| e.to_string())?;
    let walkthrough = run.artifact("demo.txt").map_err(|e| e.to_string())?;
    print!("{walkthrough}");
    println!(
        "\nall logs of the VM run: {}\ndemo finished in {} s",
        run.out_dir.display(),
        started.elapsed().as_secs()
    );
    Ok(())
}
