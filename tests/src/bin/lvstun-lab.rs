//! `lvstun-lab demo`: the README's main job. Starts a local control plane (etcd,
//! kube-apiserver, kube-controller-manager), `helm install`s lvstun, runs the operator, applies
//! the example VirtualService and RealServers, then boots the lab VM (a real kernel with IPVS and
//! ipip) where the node daemons run as the operator's DaemonSets say, and prints the classic
//! LVS-TUN walkthrough: the IPVS table, alternating `Node:` headers, `kubectl get lvsvc,lvsrs`,
//! a web server stopped, a balancer killed with the outage measured.
//!
//! It is the same run as `tests/tests/lab_cluster.rs` (both use `lab::cluster`), so what the
//! demo shows is what the test proves.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lvstun_tests::controlplane::ControlPlane;
use lvstun_tests::lab::{self, cluster::Host};
use lvstun_tests::operator_fixture::operator_binary;

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
        ("lvstun-tests", "lvstun-lab-web"),
        ("lvstun-tests", "lvstun-lab-load"),
    ])
    .map_err(|e| e.to_string())?;
    let operator_bin = operator_binary(true).map_err(|e| e.to_string())?;

    banner("1/3 control plane: etcd + kube-apiserver + kube-controller-manager on 127.0.0.1");
    let cp = ControlPlane::shared().map_err(|e| e.to_string())?;
    println!(
        "API server {} (logs in {})",
        cp.server_url(),
        cp.dir().display()
    );

    banner("2/3 helm install lvstun, the operator, Nodes lb1 lb2 web1 web2, deploy/examples/");
    let mut host = Host::prepare(cp, operator_bin).map_err(|e| e.to_string())?;
    host.verbose = true;
    println!("$ helm install lvstun deploy/helm/lvstun   (CRDs, RBAC, the operator's Deployment)");
    println!(
        "$ kubectl label node lb1 lb2 lvstun.io/balancer=true; kubectl apply -n {} -f deploy/examples/",
        host.ns
    );
    println!("the operator made the balancer and web DaemonSets; their pods run in the VM");

    banner("3/3 the lab VM: the recipe on a real kernel (software emulation: a few minutes)");
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let done = done.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let s = t0.elapsed().as_secs();
                if s >= last + 20 {
                    last = s;
                    println!("  ... VM running, {s} s");
                }
            }
        })
    };
    let run = host.run(Duration::from_secs(1200));
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
