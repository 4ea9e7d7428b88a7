//! `lvstun-node`: the node daemon, one binary with two roles (`balancer` and `web`); the
//! library (`lvstun_node`) holds everything but this entry point.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    lvstun_node::run(&args)
}
