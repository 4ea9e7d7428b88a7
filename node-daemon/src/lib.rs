//! `lvstun-node` as a library: every module of the node daemon and the dispatch of its command
//! line, so that the binary is a thin `main` and the fuzz target (`fuzz/`) can link the VRRP
//! codec instead of compiling its file in by path.

mod balancer;
mod cli;
mod error;
mod exit;
mod health;
mod ipvs;
mod net;
mod source;
mod vrrp;
mod web;

/// The VRRPv3 advertisement codec (pure, no I/O): public for the fuzz target, which feeds it
/// arbitrary bytes.
pub use vrrp::packet as vrrp_packet;

use std::process::ExitCode;

/// Runs `lvstun-node ARGS...` (the arguments after the program name) and says how to exit.
pub fn run(args: &[String]) -> ExitCode {
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
