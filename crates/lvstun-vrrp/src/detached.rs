//! [`Detached`]: a router's kernel calls made on another thread, in order, without the router
//! waiting for them. Owns the queue and the worker task; the calls themselves are the wrapped
//! [`VipOps`]'.
//!
//! Why: a netlink request is handled inside the sender's `sendmsg`, under kernel locks that
//! any process on the node may hold (`rtnl_lock` for an address, the sync daemon's threads for
//! a sync switch), for as long as a starved holder keeps them. The driver's own work (read an
//! advertisement, send one, act on a timer) must never wait behind that (`thread`, "the ops
//! thread"). What the driver gives up: it no longer learns of a failed call from the call
//! itself; the worker logs it and counts it ([`VipOps::failures`]), and nothing in the state
//! machine ever depended on the result (RFC 9568's actions are fire-and-forget too).
//!
//! Order is kept: one queue, one worker, so a takeover's add comes before its gratuitous ARPs
//! and a step-down's removal after the add it undoes. [`VipOps::flush`] waits for the queue
//! to empty (the driver's last step, so a Master's VIPs are gone when its task ends).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::driver::{SyncRole, VipOps};
use crate::lifetime::VipLifetime;

/// One queued call.
#[derive(Debug)]
enum Call {
    Add(Vec<Ipv4Addr>, VipLifetime),
    Refresh(Vec<Ipv4Addr>, VipLifetime),
    Remove(Vec<Ipv4Addr>),
    Garp(Vec<Ipv4Addr>, u8),
    Sync(Option<SyncRole>),
    /// Answered once every call queued before it is done.
    Flush(oneshot::Sender<()>),
}

/// [`VipOps`] whose calls return at once and are made, in order, by a task on another
/// runtime (the ops thread's, `thread::ops_handle`).
pub struct Detached {
    queue: mpsc::UnboundedSender<Call>,
    failures: Arc<AtomicU64>,
    /// When each call not yet made was queued, oldest first ([`VipOps::stuck_since`]).
    waiting: Waiting,
}

/// The queue times of the calls not yet made, shared with the worker.
type Waiting = Arc<Mutex<VecDeque<std::time::Instant>>>;

fn waiting(w: &Waiting) -> MutexGuard<'_, VecDeque<std::time::Instant>> {
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Detached {
    /// Moves `ops` to a worker task spawned on `runtime`; the wrapped ops' own tasks (their
    /// netlink connections) should live on that runtime too, so that their `sendmsg` runs
    /// there.
    pub fn start<V: VipOps + 'static>(ops: V, runtime: &Handle) -> Detached {
        let (queue, calls) = mpsc::unbounded_channel();
        let failures = Arc::new(AtomicU64::new(0));
        let pending = Waiting::default();
        runtime.spawn(work(ops, calls, failures.clone(), pending.clone()));
        Detached {
            queue,
            failures,
            waiting: pending,
        }
    }

    /// Queues a call; a worker that is gone (it panicked) counts it as failed.
    fn queue(&self, call: Call) -> std::future::Ready<io::Result<()>> {
        // The driver's clock (tokio's, which tests can pause).
        waiting(&self.waiting).push_back(tokio::time::Instant::now().into_std());
        if self.queue.send(call).is_err() {
            waiting(&self.waiting).pop_back();
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("vrrp: the ops worker is gone; a kernel call was dropped");
        }
        std::future::ready(Ok(()))
    }
}

/// The worker: makes each call in turn, logs and counts the failures.
async fn work<V: VipOps>(
    mut ops: V,
    mut calls: mpsc::UnboundedReceiver<Call>,
    failures: Arc<AtomicU64>,
    pending: Waiting,
) {
    while let Some(call) = calls.recv().await {
        let flush = matches!(call, Call::Flush(_));
        let what = format!("{call:?}");
        let result = match call {
            Call::Add(vips, lifetime) => ops.add_vips(&vips, lifetime).await,
            Call::Refresh(vips, lifetime) => ops.refresh_vips(&vips, lifetime).await,
            Call::Remove(vips) => ops.remove_vips(&vips).await,
            Call::Garp(vips, count) => ops.send_garp(&vips, count).await,
            Call::Sync(role) => ops.set_sync(role).await,
            Call::Flush(done) => {
                ops.flush().await;
                let _ = done.send(());
                Ok(())
            }
        };
        if !flush {
            waiting(&pending).pop_front();
        }
        if let Err(err) = result {
            tracing::warn!(action = %what, %err, "vrrp: action failed");
            failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl VipOps for Detached {
    fn add_vips(
        &mut self,
        vips: &[Ipv4Addr],
        lifetime: VipLifetime,
    ) -> impl Future<Output = io::Result<()>> + Send {
        self.queue(Call::Add(vips.to_vec(), lifetime))
    }
    fn refresh_vips(
        &mut self,
        vips: &[Ipv4Addr],
        lifetime: VipLifetime,
    ) -> impl Future<Output = io::Result<()>> + Send {
        self.queue(Call::Refresh(vips.to_vec(), lifetime))
    }
    fn remove_vips(&mut self, vips: &[Ipv4Addr]) -> impl Future<Output = io::Result<()>> + Send {
        self.queue(Call::Remove(vips.to_vec()))
    }
    fn send_garp(
        &mut self,
        vips: &[Ipv4Addr],
        count: u8,
    ) -> impl Future<Output = io::Result<()>> + Send {
        self.queue(Call::Garp(vips.to_vec(), count))
    }
    fn set_sync(&mut self, role: Option<SyncRole>) -> impl Future<Output = io::Result<()>> + Send {
        self.queue(Call::Sync(role))
    }
    fn flush(&mut self) -> impl Future<Output = ()> + Send {
        // Not counted as waiting: it is no kernel call.
        let (done, waited) = oneshot::channel();
        let queued = self.queue.send(Call::Flush(done)).is_ok();
        async move {
            if queued {
                // An error here means the worker ended: nothing is left to wait for.
                let _ = waited.await;
            }
        }
    }
    fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
    fn stuck_since(&self) -> Option<std::time::Instant> {
        waiting(&self.waiting).front().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Records each call after blocking its thread for `block` (what a `sendmsg` waiting for
    /// `rtnl_lock` does), and fails every removal.
    #[derive(Clone, Default)]
    struct Slow {
        done: Arc<Mutex<Vec<String>>>,
        block: Duration,
    }

    impl Slow {
        fn record(&self, what: &str, ok: bool) -> std::future::Ready<io::Result<()>> {
            std::thread::sleep(self.block);
            self.done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(what.to_owned());
            std::future::ready(if ok {
                Ok(())
            } else {
                Err(io::Error::other("refused"))
            })
        }
        fn done(&self) -> Vec<String> {
            self.done.lock().unwrap().clone()
        }
    }

    impl VipOps for Slow {
        fn add_vips(
            &mut self,
            _: &[Ipv4Addr],
            _: VipLifetime,
        ) -> impl Future<Output = io::Result<()>> + Send {
            self.record("add", true)
        }
        fn refresh_vips(
            &mut self,
            _: &[Ipv4Addr],
            _: VipLifetime,
        ) -> impl Future<Output = io::Result<()>> + Send {
            self.record("refresh", true)
        }
        fn remove_vips(&mut self, _: &[Ipv4Addr]) -> impl Future<Output = io::Result<()>> + Send {
            self.record("remove", false)
        }
        fn send_garp(
            &mut self,
            _: &[Ipv4Addr],
            _: u8,
        ) -> impl Future<Output = io::Result<()>> + Send {
            self.record("garp", true)
        }
        fn set_sync(
            &mut self,
            role: Option<SyncRole>,
        ) -> impl Future<Output = io::Result<()>> + Send {
            let what = match role {
                Some(role) => format!("sync {role:?}"),
                None => "sync stopped".to_owned(),
            };
            self.record(&what, true)
        }
    }

    fn vip() -> Vec<Ipv4Addr> {
        vec![Ipv4Addr::new(192, 0, 2, 100)]
    }

    fn lifetime() -> VipLifetime {
        VipLifetime::for_router(
            crate::fsm::AdverInterval::from_centis(10)
                .unwrap()
                .duration(),
            3,
        )
    }

    /// The calls return before the blocked worker has made any of them, are made in the order
    /// they were asked for, and a flush waits for all of them; a failed one is counted.
    #[tokio::test]
    async fn calls_return_at_once_and_are_made_in_order() {
        let slow = Slow {
            block: Duration::from_millis(100),
            ..Slow::default()
        };
        let worker = crate::thread::ops_handle().unwrap();
        let mut ops = Detached::start(slow.clone(), &worker);
        let asked = std::time::Instant::now();
        ops.add_vips(&vip(), lifetime()).await.unwrap();
        ops.send_garp(&vip(), 3).await.unwrap();
        ops.set_sync(Some(SyncRole::Master)).await.unwrap();
        ops.refresh_vips(&vip(), lifetime()).await.unwrap();
        ops.remove_vips(&vip()).await.unwrap();
        let returned = asked.elapsed();
        assert!(
            returned < Duration::from_millis(100),
            "five calls took {returned:?} to return: the caller waited for the worker"
        );
        ops.flush().await;
        assert!(asked.elapsed() >= Duration::from_millis(500));
        assert_eq!(
            slow.done(),
            ["add", "garp", "sync Master", "refresh", "remove"]
        );
        assert_eq!(ops.failures(), 1, "the refused removal is counted");
    }
}
