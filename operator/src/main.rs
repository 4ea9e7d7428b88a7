//! `lvstun-operator`: watches VirtualService and RealServer objects and shapes the balancer and
//! web DaemonSets and the status users see in `kubectl get`. The controller body arrives with the
//! operator issue; this entry point exists so the workspace, image and chart have a real binary.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") => println!("lvstun-operator {}", env!("CARGO_PKG_VERSION")),
        _ => {
            println!("lvstun-operator {}", env!("CARGO_PKG_VERSION"));
            println!("usage: lvstun-operator [--version]");
        }
    }
}
