//! `lvstun-node`: the node daemon, one binary with two roles (`balancer` and `web`).

mod balancer;
mod cli;
mod error;
mod health;
mod ipvs;
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
        _ => {
            println!("lvstun-node {}", env!("CARGO_PKG_VERSION"));
            println!("usage: lvstun-node [--version]");
            ExitCode::SUCCESS
        }
    }
}
