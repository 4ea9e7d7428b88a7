//! `lvstun-node vrrp ...`: a hidden command for the lab that runs one VRRPv3 virtual router on
//! a real interface as a full VIP owner: the real driver with the real side effects
//! ([`KernelOps`]: the VIP /32 on the interface, gratuitous ARP, the IPVS connection sync
//! daemon with sync ID = VRID), through [`run_with`], the same path the balancer role takes:
//! the router runs on the VRRP thread (`lvstun_vrrp::thread`), this command's own runtime only
//! handles signals and prints status changes.
//! Every decision and side effect is printed as one JSON line on stdout, with `t_ms` since
//! start and `unix_ms` (wall clock, comparable across processes of one host), so takeover
//! times can be read off the output. `--dry-run` prints the side effects without doing them
//! (for protocol proofs on a host without IPVS); `--no-sync` leaves IPVS sync alone.
//!
//! SIGTERM/SIGINT stop it gracefully (priority 0 when Master, RFC 9568 §6.4.3); SIGUSR1 sets
//! the `--usr1-priority`, SIGUSR2 restores the configured priority (a stand-in for health);
//! SIGHUP toggles a simulated link-down (Initialize without a word, then back to Backup).
//!
//! The flags are [`VrrpCli`]'s (`lvstun-node vrrp --help`).
//! Without `--address`, advertisements go out from the interface's first IPv4 address.

use std::io;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use lvstun_ipvs::model::SyncRole;
use lvstun_vrrp::driver::{Control, Status, VipOps};
use lvstun_vrrp::fsm::{AdverInterval, ConfigError, Priority, RouterConfig};
use lvstun_vrrp::lifetime::VipLifetime;
use lvstun_vrrp::packet::ChecksumForm;

use super::run::{RunError, RunOptions, Running, run_with};

/// Why the command could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration was refused by the state machine.
    #[error("invalid VRRP configuration: {0}")]
    Config(#[from] ConfigError),
    /// Sockets, signals or the runtime failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The virtual router could not start.
    #[error("{0}")]
    Run(#[from] RunError),
}

/// `lvstun-node vrrp ...`: one virtual router, its side effects and its stand-ins for health
/// and link state driven by signals (see the module comment).
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct VrrpCli {
    /// The interface the router runs on
    #[arg(long, value_name = "IF")]
    interface: String,
    /// The source of the advertisements [default: the interface's first IPv4 address]
    #[arg(long, value_name = "IP")]
    address: Option<Ipv4Addr>,
    /// The virtual router ID (also the IPVS sync ID)
    #[arg(long, value_name = "N")]
    vrid: u8,
    /// A VIP the router holds while Master (repeatable)
    #[arg(long, value_name = "IP")]
    vip: Vec<Ipv4Addr>,
    /// The priority, 1..254
    #[arg(long, value_name = "P", default_value = "100", value_parser = parse_priority)]
    priority: Priority,
    /// The advertisement interval in ms (a multiple of 10)
    #[arg(long = "advert-ms", value_name = "MS", default_value = "1000", value_parser = parse_adver_int)]
    adver_int: AdverInterval,
    /// A Backup of higher priority does not take over from a Master
    #[arg(long)]
    no_preempt: bool,
    /// How long a Backup waits before preempting, in ms
    #[arg(long = "preempt-delay-ms", value_name = "MS", default_value_t = 0)]
    preempt_delay: u64,
    /// Advertisements missed before a Backup takes over
    #[arg(long, value_name = "N", default_value_t = 3)]
    missed: u8,
    /// Send advertisements to this peer instead of multicast (repeatable)
    #[arg(long, value_name = "IP")]
    peer: Vec<Ipv4Addr>,
    /// The checksum form of the advertisements
    #[arg(long, value_name = "FORM", default_value = "rfc5798", value_parser = parse_checksum)]
    checksum: ChecksumForm,
    /// The priority SIGUSR1 sets (SIGUSR2 restores --priority)
    #[arg(long, value_name = "P", value_parser = parse_priority)]
    usr1_priority: Option<Priority>,
    /// Leave the IPVS connection sync daemon alone
    #[arg(long)]
    no_sync: bool,
    /// Print the side effects without doing them
    #[arg(long)]
    dry_run: bool,
}

fn parse_priority(value: &str) -> Result<Priority, Box<dyn std::error::Error + Send + Sync>> {
    Ok(Priority::new(value.parse()?)?)
}

fn parse_adver_int(value: &str) -> Result<AdverInterval, Box<dyn std::error::Error + Send + Sync>> {
    Ok(AdverInterval::from_millis(value.parse()?)?)
}

fn parse_checksum(value: &str) -> Result<ChecksumForm, String> {
    match value {
        "rfc5798" => Ok(ChecksumForm::PseudoHeader),
        "rfc9568" => Ok(ChecksumForm::MessageOnly),
        _ => Err("expected rfc5798 or rfc9568".to_owned()),
    }
}

/// Parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    interface: String,
    config: RouterConfig,
    peers: Vec<Ipv4Addr>,
    checksum: ChecksumForm,
    usr1_priority: Option<Priority>,
    sync: bool,
    dry_run: bool,
}

impl VrrpCli {
    /// The router's configuration, validated as the state machine will see it.
    fn args(self) -> Result<Args, CliError> {
        // 0.0.0.0: the interface's first IPv4 address, looked up when the router starts.
        let address = self.address.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut config = RouterConfig::new(self.vrid, address, self.vip);
        config.priority = self.priority;
        config.adver_int = self.adver_int;
        config.preempt = !self.no_preempt;
        config.preempt_delay = Duration::from_millis(self.preempt_delay);
        config.missed_adverts = self.missed;
        config.validate()?;
        Ok(Args {
            interface: self.interface,
            config,
            peers: self.peer,
            checksum: self.checksum,
            usr1_priority: self.usr1_priority,
            sync: !self.no_sync,
            dry_run: self.dry_run,
        })
    }
}

/// Prints each side effect, then (unless a dry run) performs it with the wrapped ops and
/// prints a failure if there is one.
struct Logged<V> {
    inner: Option<V>,
}

impl<V: VipOps> Logged<V> {
    fn outcome(action: &str, result: io::Result<()>) -> io::Result<()> {
        if let Err(err) = &result {
            let _ = print_line(json!({"action": action, "error": err.to_string()}));
        }
        result
    }
}

/// When the command started: every line carries `t_ms` since then, so takeover times can be
/// read off the output.
static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn print_line(mut value: serde_json::Value) -> io::Result<()> {
    use std::io::Write;
    let start = START.get_or_init(std::time::Instant::now);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("t_ms".into(), json!(start.elapsed().as_millis()));
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        obj.insert("unix_ms".into(), json!(unix_ms));
    }
    let mut out = io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()
}

impl<V: VipOps> VipOps for Logged<V> {
    async fn add_vips(&mut self, vips: &[Ipv4Addr], lifetime: VipLifetime) -> io::Result<()> {
        print_line(json!({"action": "add_vip", "vips": vips, "lifetime_s": lifetime.secs()}))?;
        match &mut self.inner {
            Some(ops) => Self::outcome("add_vip", ops.add_vips(vips, lifetime).await),
            None => Ok(()),
        }
    }
    async fn refresh_vips(&mut self, vips: &[Ipv4Addr], lifetime: VipLifetime) -> io::Result<()> {
        // Not printed (several a second at short intervals); a failure is.
        match &mut self.inner {
            Some(ops) => Self::outcome("refresh_vip", ops.refresh_vips(vips, lifetime).await),
            None => Ok(()),
        }
    }
    async fn remove_vips(&mut self, vips: &[Ipv4Addr]) -> io::Result<()> {
        print_line(json!({"action": "remove_vip", "vips": vips}))?;
        match &mut self.inner {
            Some(ops) => Self::outcome("remove_vip", ops.remove_vips(vips).await),
            None => Ok(()),
        }
    }
    async fn send_garp(&mut self, vips: &[Ipv4Addr], count: u8) -> io::Result<()> {
        // Sent first, printed after: the announcement is on the takeover's critical path.
        let result = match &mut self.inner {
            Some(ops) => ops.send_garp(vips, count).await,
            None => Ok(()),
        };
        print_line(json!({"action": "garp", "vips": vips, "count": count}))?;
        Self::outcome("garp", result)
    }
    async fn set_sync(&mut self, role: Option<SyncRole>) -> io::Result<()> {
        let shown = role.map_or_else(|| "Stopped".to_owned(), |r| format!("{r:?}"));
        print_line(json!({"action": "sync", "role": shown}))?;
        match &mut self.inner {
            Some(ops) => Self::outcome("sync", ops.set_sync(role).await),
            None => Ok(()),
        }
    }
}

fn status_line(s: &Status) -> serde_json::Value {
    json!({
        "state": format!("{:?}", s.state),
        "master": s.master,
        "transitions": s.transitions,
        "adverts_sent": s.adverts_sent,
        "adverts_accepted": s.adverts_accepted,
        "drops": s.drops,
        "errors": s.errors,
        "priority": s.priority,
        "master_adver_int_ms": s.master_adver_int.as_millis(),
    })
}

async fn execute(args: Args) -> Result<ExitCode, CliError> {
    let base = args.config.priority;
    let options = RunOptions {
        unicast_peers: args.peers,
        sync: args.sync && !args.dry_run,
        checksum: args.checksum,
        ..RunOptions::default()
    };
    let dry_run = args.dry_run;
    let running = run_with(args.config, &args.interface, options, move |ops| Logged {
        inner: (!dry_run).then_some(ops),
    })
    .await?;
    let Running {
        task,
        mut status,
        control: ctl,
    } = running;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut link_up = true;
    let mut last_state = None;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => {
                if let Some(p) = args.usr1_priority {
                    let _ = ctl.send(Control::SetPriority(p)).await;
                }
            }
            _ = usr2.recv() => {
                let _ = ctl.send(Control::SetPriority(base)).await;
            }
            _ = hup.recv() => {
                link_up = !link_up;
                let event = if link_up { Control::InterfaceUp } else { Control::InterfaceDown };
                let _ = ctl.send(event).await;
            }
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = status.borrow_and_update().clone();
                if last_state != Some(s.state) {
                    last_state = Some(s.state);
                    print_line(status_line(&s))?;
                }
            }
        }
    }
    let _ = ctl.send(Control::Shutdown).await;
    let fin = task.await.map_err(io::Error::other)?;
    print_line(status_line(&fin))?;
    Ok(ExitCode::SUCCESS)
}

/// Entry point of `lvstun-node vrrp ...`.
pub fn run(cli: VrrpCli) -> Result<ExitCode, CliError> {
    START.get_or_init(std::time::Instant::now);
    let args = cli.args()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(execute(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `lvstun-node vrrp LINE` with the real definition; clap's error or the
    /// configuration's, as text.
    fn parse(line: &str) -> Result<Args, String> {
        use clap::Parser;
        let argv = ["lvstun-node", "vrrp"]
            .into_iter()
            .chain(line.split_whitespace());
        match crate::Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Some(crate::Command::Vrrp(cli)) => cli.args().map_err(|e| e.to_string()),
            other => panic!("not the vrrp command: {other:?}"),
        }
    }

    #[test]
    fn parses_a_full_command_line() {
        let a = parse(
            "--interface vr0 --address 192.0.2.1 --vrid 51 --vip 192.0.2.100 --priority 200 \
             --advert-ms 100 --no-preempt --preempt-delay-ms 2000 --missed 4 --peer 192.0.2.2 \
             --checksum rfc9568 --usr1-priority 10",
        )
        .unwrap();
        assert_eq!(a.interface, "vr0");
        assert_eq!(a.config.priority.get(), 200);
        assert_eq!(a.config.adver_int.centis(), 10);
        assert!(!a.config.preempt);
        assert_eq!(a.config.preempt_delay, Duration::from_secs(2));
        assert_eq!(a.config.missed_adverts, 4);
        assert_eq!(a.peers, vec![Ipv4Addr::new(192, 0, 2, 2)]);
        assert_eq!(a.checksum, ChecksumForm::MessageOnly);
        assert_eq!(a.usr1_priority.map(Priority::get), Some(10));
    }

    #[test]
    fn refuses_bad_input_with_a_message() {
        let e = |s: &str| parse(s).unwrap_err();
        let base = "--interface vr0 --address 192.0.2.1 --vrid 51 --vip 192.0.2.100";
        assert!(e(&format!("{base} --priority 255")).contains("1..=254"));
        assert!(e(&format!("{base} --advert-ms 105")).contains("multiple of 10 ms"));
        assert!(e(&format!("{base} --vip 192.0.2.1")).contains("own address"));
        assert!(e("--interface vr0 --address 192.0.2.1 --vip 192.0.2.100").contains("--vrid"));
        let a = parse("--interface vr0 --vrid 51 --vip 192.0.2.100 --no-sync --dry-run").unwrap();
        assert_eq!(a.config.primary_ip, Ipv4Addr::UNSPECIFIED);
        assert!(!a.sync && a.dry_run);
        assert!(e(&format!("{base} --bogus 1")).contains("unexpected argument '--bogus'"));
        assert!(e(&format!("{base} --checksum md5")).contains("invalid value 'md5'"));
        assert!(e("--vrid 51 --vip 192.0.2.100").contains("--interface"));
    }

    #[test]
    fn the_defaults_are_the_state_machines() {
        let a = parse("--interface eth0 --vrid 51 --vip 192.0.2.100").unwrap();
        let d = RouterConfig::new(
            51,
            Ipv4Addr::UNSPECIFIED,
            vec![Ipv4Addr::new(192, 0, 2, 100)],
        );
        assert_eq!(a.config, d);
        assert_eq!(a.checksum, ChecksumForm::PseudoHeader);
        assert_eq!(
            (a.peers.len(), a.usr1_priority, a.sync, a.dry_run),
            (0, None, true, false)
        );
        // Repeatable flags collect; a single-valued one given twice keeps the last.
        let a = parse(
            "--interface eth0 --vrid 51 --vip 192.0.2.100 --vip 192.0.2.101 --peer 192.0.2.2 \
             --peer 192.0.2.3 --priority 10 --priority 20",
        )
        .unwrap();
        assert_eq!(a.config.vips.len(), 2);
        assert_eq!(a.peers.len(), 2);
        assert_eq!(a.config.priority.get(), 20);
    }
}
