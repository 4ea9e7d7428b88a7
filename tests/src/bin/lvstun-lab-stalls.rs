//! `lvstun-lab-stalls`: a witness of the times the lab VM's vCPUs did not run at all, for the
//! pod lab's CPU-hog check (`tests/lab/scenarios/pods.sh`, `outage`).
//!
//! ```text
//! lvstun-lab-stalls [--secs 25] [--period-ms 10] [--report-ms 50]
//! ```
//!
//! Why: the lab VM is emulated (TCG) on a host shared with other work, so the host sometimes
//! does not run a vCPU's thread for a few hundred ms. Inside the guest that looks exactly like a
//! starved balancer: its realtime VRRP thread sends late, and the Backup claims the VIP. The CPU
//! hog check must tell the two apart, or it tests the host's load instead of lvstun.
//!
//! How: one thread per vCPU, pinned to it, at SCHED_FIFO 99 (above the balancer's SCHED_RR VRRP
//! thread and every ordinary process, so nothing in the guest can delay it), sleeps `--period-ms`
//! at a time. A wakeup more than `--report-ms` late means that vCPU itself was not running: it
//! prints `stall cpu=N start_us=S end_us=E ms=M` at once (µs since the epoch on the guest's clock, as
//! `ip -ts` and `lab_now_ms` use). First `watching cpu=N` per
//! vCPU once its thread is pinned and raised; at the end `done cpus=N wakeups=W stalls=K
//! longest_ms=L`.
//!
//! Bounded: it stops by itself after `--secs` (1..=600). Needs CAP_SYS_NICE (root in the VM).

use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use thread_priority::{
    RealtimeThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};

#[derive(Clone, Copy)]
struct Args {
    secs: u64,
    period: Duration,
    report: Duration,
}

fn parse_args() -> Result<Args> {
    let (mut secs, mut period_ms, mut report_ms) = (25u64, 10u64, 50u64);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} needs a whole number"))?;
        match flag.as_str() {
            "--secs" => secs = value,
            "--period-ms" => period_ms = value,
            "--report-ms" => report_ms = value,
            other => bail!("unknown flag {other}"),
        }
    }
    if !(1..=600).contains(&secs) {
        bail!("--secs must be 1..=600");
    }
    if !(1..=1000).contains(&period_ms) || report_ms == 0 {
        bail!("--period-ms must be 1..=1000 and --report-ms above 0");
    }
    Ok(Args {
        secs,
        period: Duration::from_millis(period_ms),
        report: Duration::from_millis(report_ms),
    })
}

/// What a vCPU's thread reports, as it happens (so a witness stopped early has printed all it saw).
enum Report {
    /// The thread is pinned and at SCHED_FIFO 99.
    Watching { cpu: usize },
    /// A wakeup that came more than `--report-ms` after it was due.
    Stall {
        cpu: usize,
        start_us: u128,
        end_us: u128,
    },
    /// The thread's time is up.
    Done { wakeups: u64 },
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// Pins the calling thread to `cpu` and raises it to SCHED_FIFO at the highest priority.
fn pin_and_raise(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).with_context(|| format!("cpu {cpu}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to cpu {cpu}"))?;
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Max,
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .map_err(|e| anyhow::anyhow!("SCHED_FIFO 99 on cpu {cpu} (needs CAP_SYS_NICE): {e:?}"))
}

fn watch(cpu: usize, args: &Args, until: Instant, tx: &mpsc::Sender<Result<Report>>) -> Result<()> {
    pin_and_raise(cpu)?;
    let _ = tx.send(Ok(Report::Watching { cpu }));
    let mut wakeups = 0;
    while Instant::now() < until {
        let before = Instant::now();
        std::thread::sleep(args.period);
        let slept = before.elapsed();
        wakeups += 1;
        if slept > args.period + args.report {
            let end_us = now_us();
            let start_us = end_us.saturating_sub(slept.as_micros());
            let _ = tx.send(Ok(Report::Stall {
                cpu,
                start_us,
                end_us,
            }));
        }
    }
    let _ = tx.send(Ok(Report::Done { wakeups }));
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let until = Instant::now() + Duration::from_secs(args.secs);
    let (tx, rx) = mpsc::channel();
    for cpu in 0..cpus {
        let (tx, args) = (tx.clone(), args);
        std::thread::spawn(move || {
            if let Err(err) = watch(cpu, &args, until, &tx) {
                let _ = tx.send(Err(err));
            }
        });
    }
    drop(tx);
    let mut out = std::io::stdout().lock();
    let (mut wakeups, mut stalls, mut longest_ms) = (0u64, 0u64, 0u128);
    for report in rx {
        match report? {
            Report::Watching { cpu } => writeln!(out, "watching cpu={cpu}")?,
            Report::Stall {
                cpu,
                start_us,
                end_us,
            } => {
                let ms = (end_us - start_us) / 1000;
                stalls += 1;
                longest_ms = longest_ms.max(ms);
                writeln!(
                    out,
                    "stall cpu={cpu} start_us={start_us} end_us={end_us} ms={ms}"
                )?;
            }
            Report::Done { wakeups: w } => wakeups += w,
        }
    }
    writeln!(
        out,
        "done cpus={cpus} wakeups={wakeups} stalls={stalls} longest_ms={longest_ms}"
    )?;
    Ok(())
}
