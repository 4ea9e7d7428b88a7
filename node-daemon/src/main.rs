//! `lvstun-node`: the node daemon, one binary with two roles (`balancer` and `web`).

mod balancer;
mod cli;
mod error;
mod exit;
mod health;
mod net;
mod source;
mod vrrp;
mod web;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") => {
            println!("lvstun-node {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        // Hidden debug commands for the lab: see `cli`.
        Some("ipvs") => match cli::run_ipvs(&args[1..]) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("lvstun-node: {err}");
                ExitCode::from(2)
            }
        },
        Some("vrrp") => match vrrp::cli::run(&args[1..]) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("lvstun-node: {err}");
                ExitCode::from(2)
            }
        },
        // The balancer role: see `balancer`.
        Some("balancer") => match balancer::daemon::main(&args[1..]) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("lvstun-node: {err}");
                ExitCode::from(2)
            }
        },
        // The web role: see `web`.
        Some("web") => match web::run(&args[1..]) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("lvstun-node: {err}");
                ExitCode::from(2)
            }
        },
        Some("--help" | "-h") | None => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        // An unknown role is a mistake in a unit file or a DaemonSet: fail so it shows.
        Some(other) => {
            eprintln!("lvstun-node: unknown command {other:?}\n{}", usage());
            ExitCode::from(2)
        }
    }
}

/// The top-level help: the two roles and where their own options are listed.
fn usage() -> String {
    format!(
        "lvstun-node {}: the lvstun node daemon (LVS-TUN balancer or real server)\n\n\
         usage: lvstun-node balancer [OPTIONS]   IPVS, health checks and VRRP on a balancer node\n       \
         lvstun-node web [apply|check|cleanup] [OPTIONS]\n                                        \
         tunl0, VIPs, ARP suppression and MSS clamp on a real server\n       \
         lvstun-node --version | --help\n\n\
         `lvstun-node balancer --help` and `lvstun-node web --help` list each role's options.",
        env!("CARGO_PKG_VERSION")
    )
}
