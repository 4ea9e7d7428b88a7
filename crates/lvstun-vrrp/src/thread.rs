//! The VRRP thread: one OS thread, `lvstun-vrrp`, with its own current-thread tokio runtime,
//! on which every virtual router of the process runs: its driver task, its sockets, and the
//! netlink connections of its [`VipOps`](crate::driver::VipOps). Does I/O (starts a thread).
//!
//! Why a thread of its own: a Backup takes over when the Master's advertisements stop arriving
//! for Master_Down_Interval (361 ms at 100 ms, priority 100), and a Master must send each one
//! on time. On the daemon's multi-thread runtime the routers shared the workers with the
//! health checks (hundreds of targets), the IPVS passes and the Kubernetes watchers, and a
//! burst there delayed advertisements or their reading: in the lab, a Master's advertisements
//! arrived up to 308 ms apart and a Backup took over from it 15 times. A thread of its own is
//! scheduled by the kernel apart from all that. One thread serves every router of the process:
//! a router's work is a few microseconds per advertisement, and its netlink calls are awaited,
//! not blocked on.
//!
//! Its priority is raised to SCHED_RR [`RT_PRIORITY`] when the process may (CAP_SYS_NICE, which
//! the balancer pods are given), as keepalived's `vrrp_rt_priority` does: a thread of its own
//! is still one thread among all of the node's under CFS, and a node busy with other work (a
//! tenant's batch job, a CPU hog in the lab) starved a Master's advertisements for most of a
//! second in the pod lab, long past a 361 ms Master_Down_Interval. A realtime thread runs as
//! soon as it is woken, before every ordinary one; the kernel's realtime throttling
//! (`sched_rt_runtime_us`, 95% by default) keeps a runaway one from locking a CPU. Without the
//! capability the thread runs at normal priority and the refusal is logged once.
//!
//! Why a router is set up on this thread and not handed over: a tokio I/O object belongs to the
//! reactor of the runtime it was registered in, and only that runtime reports its readiness.
//! The raw sockets, and the rtnetlink and IPVS connections (whose tasks are spawned where they
//! are opened), must therefore be opened inside this runtime, or a busy main runtime would
//! delay them again; the node daemon's `vrrp::run::run_with` runs its whole setup as a task
//! here. Only channels cross between the runtimes (`mpsc` for control, `watch` for status, the
//! task's `JoinHandle`), and those work from any runtime.
//!
//! The thread is started by the first router and inherits that thread's network namespace (a
//! namespace is per thread); the daemon never changes namespace, so it is the process's. It
//! runs until the process exits.
//!
//! A second thread, `lvstun-vrrp-ops` ([`ops_handle`]), performs the routers' kernel calls
//! (the VIPs over rtnetlink, gratuitous ARP, the IPVS sync daemons; `detached`). A netlink
//! request is handled by the kernel inside the sender's `sendmsg`, under the kernel's locks:
//! an address change waits for `rtnl_lock`, which is one lock for the whole kernel, every
//! namespace and every process (kubelet, the CNI plugin, kube-proxy, the web daemon), and a
//! sync daemon switch waits for the daemon's kernel threads. A holder of such a lock that a
//! busy node starves of CPU keeps it for as long as it waits (priority inversion: our realtime
//! thread cannot lend it its priority), and on the VRRP thread that wait would stop every
//! advertisement of the process: in the pod lab a Backup took over from a live Master during
//! CR churn and under a CPU hog. On a thread of their own the calls may wait; the adverts go on.
//! It runs at [`OPS_RT_PRIORITY`], below the VRRP thread: when no lock is held it still adds a
//! VIP at once on a busy node.
//!
//! A third, `lvstun-sync` ([`sync_handle`]), at normal priority, switches the IPVS connection
//! sync daemons: the kernel may take many seconds to stop one (30 s was seen in the pod lab),
//! and on the ops thread that wait would hold back the renewals of a live Master's VIPs until
//! their lifetime ran out.

use std::io;
use std::sync::{Mutex, PoisonError, mpsc};

use tokio::runtime::{Builder, Handle};

/// The name of the thread, as `ps -T`, `top -H` and `/proc/PID/task/*/comm` show it.
pub const THREAD_NAME: &str = "lvstun-vrrp";

/// The name of the thread that makes the routers' kernel calls.
pub const OPS_THREAD_NAME: &str = "lvstun-vrrp-ops";

/// The SCHED_RR priority of the VRRP thread (1..99): above every ordinary thread, below the
/// kernel's own realtime threads (watchdog, migration at 99).
pub const RT_PRIORITY: u8 = 10;

/// The SCHED_RR priority of the ops thread: below the VRRP thread, which must never wait for it.
pub const OPS_RT_PRIORITY: u8 = 5;

/// The name of the thread that switches the IPVS sync daemons.
pub const SYNC_THREAD_NAME: &str = "lvstun-sync";

/// A named OS thread running a current-thread tokio runtime, started on first use.
struct RuntimeThread {
    name: &'static str,
    /// SCHED_RR priority to ask for; `None` = stay an ordinary thread.
    priority: Option<u8>,
    handle: Mutex<Option<Handle>>,
}

static VRRP: RuntimeThread = RuntimeThread {
    name: THREAD_NAME,
    priority: Some(RT_PRIORITY),
    handle: Mutex::new(None),
};

static OPS: RuntimeThread = RuntimeThread {
    name: OPS_THREAD_NAME,
    priority: Some(OPS_RT_PRIORITY),
    handle: Mutex::new(None),
};

static SYNC: RuntimeThread = RuntimeThread {
    name: SYNC_THREAD_NAME,
    priority: None,
    handle: Mutex::new(None),
};

/// The VRRP thread's runtime, to spawn on; the thread is started on first use. That first call
/// waits (blocking, briefly) for the new thread to build its runtime.
pub fn handle() -> io::Result<Handle> {
    VRRP.handle()
}

/// The ops thread's runtime (see the module comment), started on first use like [`handle`].
pub fn ops_handle() -> io::Result<Handle> {
    OPS.handle()
}

/// The sync thread's runtime (see the module comment), started on first use like [`handle`].
pub fn sync_handle() -> io::Result<Handle> {
    SYNC.handle()
}

impl RuntimeThread {
    fn handle(&'static self) -> io::Result<Handle> {
        let mut slot = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = slot.as_ref() {
            return Ok(handle.clone());
        }
        let handle = self.start()?;
        *slot = Some(handle.clone());
        Ok(handle)
    }

    /// Starts the thread. The runtime is built on the thread itself, so a failure to build it
    /// is reported here without a runtime ever being dropped inside an async context.
    fn start(&'static self) -> io::Result<Handle> {
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(self.name.to_owned())
            .spawn(move || {
                if let Some(priority) = self.priority {
                    raise_priority(self.name, priority);
                }
                let runtime = match Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = tx.send(Err(err));
                        return;
                    }
                };
                let _ = tx.send(Ok(runtime.handle().clone()));
                // A current-thread runtime runs its tasks only while something blocks on it.
                runtime.block_on(std::future::pending::<()>());
            })?;
        rx.recv().map_err(|_| {
            io::Error::other(format!(
                "the {} thread ended before its runtime started",
                self.name
            ))
        })?
    }
}

/// Makes the calling thread SCHED_RR at `priority`, or says why it stays as it is.
fn raise_priority(thread: &str, priority: u8) {
    use thread_priority::{
        RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let policy = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::RoundRobin);
    let result = ThreadPriorityValue::try_from(priority)
        .map_err(|e| e.to_string())
        .and_then(|p| {
            set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Crossplatform(p),
                policy,
            )
            .map_err(|e| e.to_string())
        });
    match result {
        Ok(()) => tracing::info!(thread, priority, "vrrp: realtime priority (SCHED_RR)"),
        Err(err) => tracing::warn!(
            thread,
            %err,
            "vrrp: no realtime priority (needs CAP_SYS_NICE): advertisements wait for the CPU like any other thread"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    fn whoami() -> (Option<String>, std::thread::ThreadId) {
        let me = std::thread::current();
        (me.name().map(str::to_owned), me.id())
    }

    /// Every router runs on the same named thread, which is not the caller's.
    #[tokio::test]
    async fn one_named_thread_for_all_routers() {
        let first = handle().unwrap().spawn(async { whoami() }).await.unwrap();
        let second = handle().unwrap().spawn(async { whoami() }).await.unwrap();
        assert_eq!(first.0.as_deref(), Some(THREAD_NAME));
        assert_eq!(first, second);
        assert_ne!(first.1, std::thread::current().id());
    }

    /// The kernel calls and the sync switches run on threads of their own, apart from the
    /// routers' and from each other's.
    #[tokio::test]
    async fn ops_and_sync_threads_are_apart() {
        let vrrp = handle().unwrap().spawn(async { whoami() }).await.unwrap();
        let ops = ops_handle()
            .unwrap()
            .spawn(async { whoami() })
            .await
            .unwrap();
        let sync = sync_handle()
            .unwrap()
            .spawn(async { whoami() })
            .await
            .unwrap();
        assert_eq!(ops.0.as_deref(), Some(OPS_THREAD_NAME));
        assert_eq!(sync.0.as_deref(), Some(SYNC_THREAD_NAME));
        assert!(vrrp.1 != ops.1 && ops.1 != sync.1 && vrrp.1 != sync.1);
    }

    /// What runs on the VRRP thread keeps its time while the caller's runtime is stuck: a
    /// 10 ms tick keeps ticking while the caller's only thread is blocked for 300 ms (what a
    /// burst of work on the main runtime does to a task that shares it).
    #[tokio::test]
    async fn its_timers_run_while_the_callers_runtime_is_blocked() {
        let ticks = Arc::new(AtomicU32::new(0));
        let counter = ticks.clone();
        let task = handle().unwrap().spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(10));
            // Missed ticks are skipped, not caught up in a burst: a stall shows in the count.
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = ticks.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        let during = ticks.load(Ordering::Relaxed) - before;
        task.abort();
        // 30 on an idle machine; a loaded test host may lose some, never most.
        assert!(during >= 15, "{during} ticks in 300 ms");
    }
}
