//! `lvstun-node`: the node daemon, one binary with two roles (`balancer` and `web`); the
//! library (`lvstun_node`) holds everything but this entry point.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    lvstun_node::run(lvstun_node::Cli::parse())
}
