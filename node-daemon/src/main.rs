//! `lvstun-node`: the node daemon, one binary with two roles (`balancer` and `web`).

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") => println!("lvstun-node {}", env!("CARGO_PKG_VERSION")),
        _ => {
            println!("lvstun-node {}", env!("CARGO_PKG_VERSION"));
            println!("usage: lvstun-node [--version]");
        }
    }
}
