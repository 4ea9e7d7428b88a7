//! `lvstun-lab demo`: the README's main job. Starts a local control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler) that real kubelets join, builds the
//! images (operator, node daemon, pause), boots the lab VM (a real kernel with IPVS and ipip)
//! where lb1, lb2 and web1 are Kubernetes nodes (containerd, kubelet, kube-proxy), installs the
//! chart exactly as the README says (`helm install`, node labels, `kubectl apply -f
//! deploy/examples/`), and prints the classic LVS-TUN walkthrough as the pods carry it: the IPVS
//! table, alternating `Node:` headers, `kubectl get lvsvc,lvsrs`, a web server stopped and
//! started, the Master's balancer pod deleted with the client's outage measured.
//!
//! It is the same run as `tests/tests/lab_pods.rs` (both use `lab::pods`), so what the demo
//! shows is what the test proves.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lvstun_tests::lab::{self, pods::Images, pods::PodHost};

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
    lab::ensure_built_bins(&[
        ("lvstun-node", "lvstun-node"),
        ("lvstun-operator", "lvstun-operator"),
        ("lvstun-tests", "lvstun-lab-web"),
        ("lvstun-tests", "lvstun-lab-load"),
    ])
    .map_err(|e| e.to_string())?;

    banner("1/3 images (lvstun-operator, lvstun-node, pause) and the control plane on 127.0.0.1");
    let images = Images::build(&lab::bin_dir(), &lab::target_dir().join("lab-images"))
        .map_err(|e| e.to_string())?;
    for archive in &images.archives {
        println!("image archive {}", archive.display());
    }
    let mut host = PodHost::prepare(images).map_err(|e| e.to_string())?;
    host.verbose = true;
    println!(
        "API server {} (logs in {})",
        host.control_plane().server_url(),
        host.control_plane().dir().display()
    );

    banner("2/3 the lab VM: nodes lb1 lb2 web1 join; then, as the README says:");
    println!("$ kubectl create namespace lvstun-system");
    println!(
        "$ kubectl label namespace lvstun-system pod-security.kubernetes.io/enforce=privileged"
    );
    println!("$ helm install lvstun deploy/helm/lvstun -n lvstun-system");
    println!(
        "$ kubectl label node lb1 lvstun.io/balancer=true; kubectl label node lb2 lvstun.io/balancer=true"
    );
    println!(
        "$ kubectl apply -f deploy/examples/; kubectl patch realserver web1 --type=merge -p '{{\"spec\":{{\"nodeName\":\"web1\"}}}}'"
    );

    banner("3/3 the walkthrough (software emulation: several minutes)");
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let done = done.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let s = t0.elapsed().as_secs();
                if s >= last + 30 {
                    last = s;
                    println!("  ... VM running, {s} s");
                }
            }
        })
    };
    let run = host.run(Duration::from_secs(1800));
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    let run = run.map_err(|e| e.to_string())?;
    let walkthrough = run.artifact("demo.txt").map_err(|e| e.to_string())?;
    println!();
    print!("{walkthrough}");
    if !host.findings.failures.is_empty() {
        return Err(format!(
            "the API did not show what the data plane did:\n{}\n(logs: {})",
            host.findings.failures.join("\n"),
            run.out_dir.display()
        ));
    }
    println!(
        "\nall logs of the VM run: {}\ndemo finished in {} s",
        run.out_dir.display(),
        started.elapsed().as_secs()
    );
    Ok(())
}
