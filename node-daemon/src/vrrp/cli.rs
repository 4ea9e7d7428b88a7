//! `lvstun-node vrrp ...`: a hidden command for the lab that runs one VRRPv3 virtual router on
//! a real interface as a full VIP owner: the real driver with the real side effects
//! ([`KernelOps`]: the VIP /32 on the interface, gratuitous ARP, the IPVS connection sync
//! daemon with sync ID = VRID), through [`run_with`], the same path the balancer role takes:
//! the router runs on the VRRP thread (`vrrp::thread`), this command's own runtime only
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
//! ```text
//! lvstun-node vrrp --interface IF --vrid N --vip IP [--vip IP]... [--address IP]
//!     [--priority 1..254] [--advert-ms MS] [--no-preempt] [--preempt-delay-ms MS]
//!     [--missed N] [--peer IP]... [--checksum rfc5798|rfc9568] [--usr1-priority P]
//!     [--no-sync] [--dry-run]
//! ```
//! Without `--address`, advertisements go out from the interface's first IPv4 address.

use std::io;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use super::driver::{Control, Status, SyncRole, VipOps};
use super::fsm::{AdverInterval, ConfigError, Priority, RouterConfig};
use super::lifetime::VipLifetime;
use super::packet::ChecksumForm;
use super::run::{RunError, RunOptions, Running, run_with};

/// Why the command could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad or missing arguments.
    #[error(
        "{0}\nusage: lvstun-node vrrp --interface IF --vrid N --vip IP [--address IP] [--priority P] [--advert-ms MS] [--no-preempt] [--preempt-delay-ms MS] [--missed N] [--peer IP]... [--checksum rfc5798|rfc9568] [--usr1-priority P] [--no-sync] [--dry-run]"
    )]
    Usage(String),
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

fn parse(args: &[String]) -> Result<Args, CliError> {
    let usage = |m: &str| CliError::Usage(m.to_owned());
    let mut interface = None;
    let mut address = None;
    let mut vrid = None;
    let mut vips = Vec::new();
    let mut priority = Priority::DEFAULT;
    let mut adver_int = AdverInterval::DEFAULT;
    let mut preempt = true;
    let mut preempt_delay = Duration::ZERO;
    let mut missed = 3u8;
    let mut peers = Vec::new();
    let mut checksum = ChecksumForm::PseudoHeader;
    let mut usr1_priority = None;
    let mut sync = true;
    let mut dry_run = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--no-preempt" => {
                preempt = false;
                continue;
            }
            "--no-sync" => {
                sync = false;
                continue;
            }
            "--dry-run" => {
                dry_run = true;
                continue;
            }
            _ => {}
        }
        let value = it
            .next()
            .ok_or_else(|| usage(&format!("{flag} needs a value")))?;
        let bad = || usage(&format!("bad value for {flag}: {value}"));
        let ip = || value.parse::<Ipv4Addr>().map_err(|_| bad());
        let num = || value.parse::<u64>().map_err(|_| bad());
        let byte = || value.parse::<u8>().map_err(|_| bad());
        match flag.as_str() {
            "--interface" => interface = Some(value.clone()),
            "--address" => address = Some(ip()?),
            "--vrid" => vrid = Some(byte()?),
            "--vip" => vips.push(ip()?),
            "--priority" => priority = Priority::new(byte()?)?,
            "--advert-ms" => adver_int = AdverInterval::from_millis(num()?)?,
            "--preempt-delay-ms" => preempt_delay = Duration::from_millis(num()?),
            "--missed" => missed = byte()?,
            "--peer" => peers.push(ip()?),
            "--usr1-priority" => usr1_priority = Some(Priority::new(byte()?)?),
            "--checksum" => {
                checksum = match value.as_str() {
                    "rfc5798" => ChecksumForm::PseudoHeader,
                    "rfc9568" => ChecksumForm::MessageOnly,
                    _ => return Err(bad()),
                }
            }
            _ => return Err(usage(&format!("unknown flag {flag}"))),
        }
    }
    let interface = interface.ok_or_else(|| usage("--interface is required"))?;
    // 0.0.0.0: the interface's first IPv4 address, looked up when the router starts.
    let address = address.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let vrid = vrid.ok_or_else(|| usage("--vrid is required"))?;
    let mut config = RouterConfig::new(vrid, address, vips);
    config.priority = priority;
    config.adver_int = adver_int;
    config.preempt = preempt;
    config.preempt_delay = preempt_delay;
    config.missed_adverts = missed;
    config.validate()?;
    Ok(Args {
        interface,
        config,
        peers,
        checksum,
        usr1_priority,
        sync,
        dry_run,
    })
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
    async fn set_sync(&mut self, role: SyncRole) -> io::Result<()> {
        print_line(json!({"action": "sync", "role": format!("{role:?}")}))?;
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
pub fn run(args: &[String]) -> Result<ExitCode, CliError> {
    START.get_or_init(std::time::Instant::now);
    let args = parse(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(execute(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_a_full_command_line() {
        let a = parse(&args(
            "--interface vr0 --address 192.0.2.1 --vrid 51 --vip 192.0.2.100 --priority 200 \
             --advert-ms 100 --no-preempt --preempt-delay-ms 2000 --missed 4 --peer 192.0.2.2 \
             --checksum rfc9568 --usr1-priority 10",
        ))
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
        let e = |s: &str| parse(&args(s)).unwrap_err().to_string();
        let base = "--interface vr0 --address 192.0.2.1 --vrid 51 --vip 192.0.2.100";
        assert!(e(&format!("{base} --priority 255")).contains("1..=254"));
        assert!(e(&format!("{base} --advert-ms 105")).contains("multiple of 10 ms"));
        assert!(e(&format!("{base} --vip 192.0.2.1")).contains("own address"));
        assert!(e("--interface vr0 --address 192.0.2.1 --vip 192.0.2.100").contains("--vrid"));
        let a = parse(&args(
            "--interface vr0 --vrid 51 --vip 192.0.2.100 --no-sync --dry-run",
        ))
        .unwrap();
        assert_eq!(a.config.primary_ip, Ipv4Addr::UNSPECIFIED);
        assert!(!a.sync && a.dry_run);
        assert!(e(&format!("{base} --bogus 1")).contains("unknown flag"));
        assert!(e(&format!("{base} --checksum md5")).contains("bad value"));
    }
}
