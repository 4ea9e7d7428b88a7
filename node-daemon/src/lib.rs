//! `lvstun-node` as a library: every module of the node daemon, its command line ([`Cli`], one
//! clap definition from which every usage text is generated) and the dispatch to each command
//! ([`run`]), so that the binary is a thin `main` and the harness's tests read the same
//! command line (`tests/tests/docs_guide.rs`). No I/O here but what `run` starts.

mod balancer;
mod error;
mod exit;
mod health;
mod listen;
mod logging;
mod net;
mod source;
mod vrrp;
mod web;

use std::fmt::Display;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// What the daemons write in the API (the server-side-apply bodies of their status entries and
/// their field managers), public so that the harness proves the chart's status policy
/// (`deploy/helm/lvstun/templates/status-tokens-policy.yaml`) against what the daemons send
/// rather than against a copy. Pure.
pub mod status_writes {
    pub use crate::balancer::report::{
        balancer_entry_body, check_entry_body, field_manager as balancer_field_manager,
    };
    pub use crate::web::report::{
        Write as WebWrite, body as web_body, field_manager as web_field_manager,
    };
    pub use crate::web::status::Readiness;
    pub use lvstun_rules::ObjectKey;
}

/// The command line of `lvstun-node`: one binary with two roles (`balancer`, `web`) and two
/// hidden debug commands for the lab (`ipvs`, `vrrp`).
#[derive(Debug, Parser)]
#[command(
    name = "lvstun-node",
    version,
    about = "the lvstun node daemon (LVS-TUN balancer or real server)",
    // A flag given twice takes the last value, as the hand-written parsers did.
    args_override_self = true,
    // `help` is no command of its own (`--help` is), as before clap.
    disable_help_subcommand = true
)]
pub struct Cli {
    /// What to run; without one, the help.
    #[command(subcommand)]
    command: Option<Command>,
}

/// The commands (the roles' flags boxed: they are most of the size).
#[derive(Debug, Subcommand)]
enum Command {
    /// IPVS, health checks and VRRP on a balancer node
    Balancer(Box<balancer::daemon::BalancerCli>),
    /// tunl0, VIPs, ARP suppression and MSS clamp on a real server
    Web(Box<web::WebCli>),
    /// Debug: the kernel's IPVS table over netlink, as the lab proves it against ipvsadm
    #[command(hide = true, subcommand)]
    Ipvs(lvstun_ipvs::cli::IpvsCli),
    /// Debug: one VRRPv3 virtual router on a real interface, as the lab runs it
    #[command(hide = true)]
    Vrrp(vrrp::cli::VrrpCli),
}

/// Runs the parsed command line and says how to exit: a command's own code, 2 when it could
/// not run (as for a command line that does not parse), 0 for the help.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        None => match Cli::command().print_help() {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(2),
        },
        Some(Command::Balancer(args)) => exit_code(balancer::daemon::main(*args)),
        Some(Command::Web(args)) => exit_code(web::run(*args)),
        Some(Command::Ipvs(args)) => exit_code(lvstun_ipvs::cli::run_ipvs(args)),
        Some(Command::Vrrp(args)) => exit_code(vrrp::cli::run(args)),
    }
}

/// A command's exit code, or 2 with the error on stderr.
fn exit_code(result: Result<ExitCode, impl Display>) -> ExitCode {
    result.unwrap_or_else(|err| {
        eprintln!("lvstun-node: {err}");
        ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_is_the_help_and_an_unknown_one_is_refused() {
        assert!(
            Cli::try_parse_from(["lvstun-node"])
                .unwrap()
                .command
                .is_none()
        );
        for unknown in ["router", "help", "-x"] {
            let err = Cli::try_parse_from(["lvstun-node", unknown]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{unknown}");
        }
        let err = Cli::try_parse_from(["lvstun-node", "balancer", "help"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["lvstun-node", "--version"]).unwrap_err();
        assert_eq!(
            (err.kind(), err.exit_code()),
            (clap::error::ErrorKind::DisplayVersion, 0)
        );
        assert_eq!(
            Cli::command().render_version(),
            format!("lvstun-node {}\n", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn the_debug_commands_are_hidden() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("balancer") && help.contains("web"), "{help}");
        assert!(!help.contains("ipvs") && !help.contains("vrrp"), "{help}");
    }
}
