//! VIP ownership in the balancer role: a supervisor task that runs one VRRP virtual router
//! ([`crate::vrrp::run::run_with`]) per router [`super::vips::desired_vips`] asks for, starts,
//! updates and stops them as the objects change, and publishes their states for
//! `status.balancers[]` and `/metrics`. Does I/O (sockets, rtnetlink, IPVS generic netlink,
//! `getifaddrs`); every decision is made by the pure functions of [`super::vips`].
//!
//! The supervisor runs on the daemon's runtime, the routers on the VRRP thread
//! ([`lvstun_vrrp::thread`]), where a burst of health checks or IPVS work cannot delay them;
//! they talk through channels. `BalancerOps` runs on the ops thread (its calls wait there
//! for the kernel's locks, not on the VRRP thread), and the [`SyncHub`]'s work, its IPVS
//! connection included, on the sync thread (a sync daemon can take many seconds to stop).
//!
//! - Becoming Master: the router adds the VIP /32 to its interface, with a kernel lifetime it
//!   renews while Master (`lvstun_vrrp::lifetime`: the VIP dies with this process), sends
//!   gratuitous ARPs (a burst, then repeats), then switches the IPVS connection sync daemon to
//!   master. Leaving
//!   Master: the VIP goes first, then sync goes to backup ([`lvstun_vrrp::driver`] orders the
//!   actions). The IPVS services stay programmed on every balancer, Backup too, so a takeover
//!   only moves the address.
//! - Sync daemons: the kernel has one master and one backup daemon per network namespace, and
//!   a node may run several routers, so the routers' wishes meet in one [`SyncHub`] that runs
//!   what [`super::vips::sync_wanted`] says.
//! - A router runs at its configured priority only while its VirtualServices have a destination
//!   in rotation on this node, and at priority 1 otherwise (what keepalived's tracking does):
//!   a restarted balancer whose health checks have not passed yet stands by instead of
//!   preempting the VIP into an empty table (its forwarding counts only after its health
//!   checks' detection time, [`super::vips::InstanceSpec::settle`], since the kernel's weights
//!   may still be a predecessor's), and a Master that loses every real server (its
//!   route to them gone, say) hands the VIP to a peer that still forwards. When no node
//!   forwards, all run at 1 and the election still picks one (by address), so a VIP is always
//!   held; the right node takes it back as soon as its checks pass.
//! - `--dry-run`: no router runs and no advertisement is sent (a dry-run node advertising a
//!   higher priority would take the VIP from the real Master); the routers it would run are
//!   logged and reported.
//! - Shutdown ([`VipOwner::shutdown`], on SIGTERM): every router sends priority 0 if Master
//!   (RFC 9568 §6.4.3) and removes its VIP, so a Backup takes over after Skew_Time. The IPVS
//!   backup sync daemon is left running (the master one stops), as the IPVS table is left.
//! - Failback keeps every flow (an upgrade restarts each node in turn, and the restarted node,
//!   if it has the higher priority, takes the VIP back): the node that takes the VIP must hold
//!   the connection entries of the Master it takes it from, or packets of a flow it does not
//!   know are scheduled afresh (`sloppy_tcp`) and, under `rr`/`wrr`/`lc`, may go to another
//!   real server, which resets them. Nothing at start flushes or zeroes the connection table
//!   (the IPVS side only reads and plans, ADR 0004). The entries come from connection sync,
//!   and the kernel's sync threads outlive this process: a leaving daemon's routers keep the
//!   backup daemon ([`vips::sync_role_on`]), so it goes on receiving the new Master's
//!   connections while no balancer runs here; the next process lists the daemons and adopts
//!   those started as it starts them ([`vips::sync_adoptable`]) instead of stopping and
//!   restarting them (before, every start stopped both, and connections opened while the
//!   node was away reached it only when their packet count next hit `sync_period`, 50); a
//!   process with no router to run stops what an earlier one left ([`SyncHub`]'s `tidy`).
//!   The router's Startup asks for the backup daemon before it can be Master anyway (RFC 9568
//!   §6.4.1: Backup first; `lvstun_vrrp::fsm`), so a restart from an older version, which
//!   stopped it on exit, starts it again at once. And a router takes its configured priority, hence
//!   may preempt, only once the backup daemon has run for [`vips::SYNC_WARMUP`] (the Master's
//!   longest flush delay) and its health checks have settled ([`vips::stand_by`]); `/readyz`
//!   waits for the same, so the DaemonSet's rolling update does not stop the other node's pod
//!   (a handover by priority 0 to this node) before then either. Not covered: a connection
//!   that fell silent before the Master re-sent it reaches this node with its next packets
//!   only; with `mh` or `sh` and the canonical destination order (ADR 0002) such a flow is
//!   still scheduled to its real server.
//! - The addresses the routers add are recorded in the state folder
//!   ([`super::state::HeldVips`], shared as a [`HeldBook`]) before they are added, and
//!   forgotten once removed; [`remove_held`] removes what an earlier run left, at start, before
//!   any router runs.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use lvstun_crds::v1alpha1::VrrpState;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::desired::{self, ObjectRef};
use super::run::{SharedReport, lock};
use super::state::{self, HeldVip, HeldVips};
use super::vips::{self, Change, InstanceSpec, StandBy, SyncProgress, SyncWanted};
use crate::error::{Errno, Error};
use crate::net::Host;
use crate::net::addr::{Addr, Addrs};
use crate::source::Snapshot;
use crate::vrrp::run::{RunOptions, run_with};
use lvstun_ipvs::handle::{IpvsHandle, new_connection};
use lvstun_ipvs::model::{IfName, SyncDaemon, SyncRole};
use lvstun_vrrp::driver::{Control, Status, VipOps};
use lvstun_vrrp::fsm::{Priority, State};
use lvstun_vrrp::lifetime::VipLifetime;
use lvstun_vrrp::ops::{Interface, KernelOps};
use lvstun_vrrp::thread;

/// How often routers that failed to start are retried and readiness is re-checked.
pub const TICK: Duration = Duration::from_secs(1);
/// Priority of a router whose node has no destination in rotation for its VIPs.
const NOT_READY_PRIORITY: u8 = 1;

/// One virtual router as reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterReport {
    /// The VIPs it holds while Master.
    pub vips: Vec<Ipv4Addr>,
    /// Its interface, once known.
    pub interface: Option<String>,
    /// Its state; `Fault` when it could not start.
    pub state: VrrpState,
    /// Its current priority (1 while not ready).
    pub priority: u8,
    /// State changes since the daemon started (kept across restarts of the router).
    pub transitions: u64,
    /// When the state last changed.
    pub last_transition: Option<SystemTime>,
    /// The VirtualServices it holds the VIPs of.
    pub virtual_services: Vec<ObjectRef>,
    /// Why it is not running, or what limits it.
    pub message: Option<String>,
    /// Why it runs at priority 1 rather than its configured priority (`None`: it does not, or
    /// it does not run); `/readyz` waits while this is a warm-up ([`StandBy::warming_up`]).
    pub stand_by: Option<StandBy>,
    /// Received packets the router dropped, by reason (`lvstun_vrrp::packet::DropReason`'s
    /// labels, a bounded set), since it started.
    pub drops: BTreeMap<&'static str, u64>,
}

/// What VIP ownership publishes: routers by VRID, and VirtualServices whose VIP cannot be held.
#[derive(Clone, Debug, Default)]
pub struct VipsReport {
    /// By VRID.
    pub routers: BTreeMap<u8, RouterReport>,
    /// VirtualServices whose election settings were refused, and why.
    pub faults: BTreeMap<ObjectRef, String>,
    /// The supervisor has not yet started the routers of its first snapshot: until then the
    /// routers listed are not all there is (`/readyz` waits).
    pub starting: bool,
}

/// This node's VIP ownership for one VirtualService, as its status entry says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// VRRP state.
    pub state: VrrpState,
    /// VRRP priority, when a router runs.
    pub priority: Option<i32>,
    /// When the state last changed.
    pub last_transition: Option<SystemTime>,
    /// Why there is no running router, or what limits it.
    pub message: Option<String>,
}

impl VipsReport {
    /// The ownership of `vs` on this node: its router's, `Fault` with the reason when its
    /// settings were refused, `Initialize` when no router holds it (yet). Pure.
    pub fn ownership(&self, vs: &ObjectRef) -> Ownership {
        if let Some(reason) = self.faults.get(vs) {
            return Ownership {
                state: VrrpState::Fault,
                priority: None,
                last_transition: None,
                message: Some(reason.clone()),
            };
        }
        match self
            .routers
            .values()
            .find(|r| r.virtual_services.contains(vs))
        {
            Some(r) => Ownership {
                state: r.state,
                priority: Some(i32::from(r.priority)),
                last_transition: r.last_transition,
                message: r.message.clone(),
            },
            None => Ownership {
                state: VrrpState::Initialize,
                priority: None,
                last_transition: None,
                message: None,
            },
        }
    }
}

/// The shared report.
pub type SharedVips = Arc<Mutex<VipsReport>>;

/// Locks the report, surviving a poisoned lock.
pub fn lock_vips(report: &SharedVips) -> MutexGuard<'_, VipsReport> {
    report
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The API's name of a state machine state.
pub fn api_state(state: State) -> VrrpState {
    match state {
        State::Initialize => VrrpState::Initialize,
        State::Backup => VrrpState::Backup,
        State::Master => VrrpState::Master,
    }
}

/// The IPVS connection sync daemons shared by every router of the node.
///
/// A switch holds the hub's lock across its kernel calls, and the kernel may take many
/// seconds to stop a daemon (while it does, every IPVS request of the whole kernel waits: the
/// IPVS generic netlink family is not `parallel_ops`, so its requests are serialized on
/// `genl_mutex`). What the supervisor reads between switches ([`SyncHub::progress`]) and what
/// SIGTERM sets ([`SyncHub::leave`]) therefore live outside that lock: neither a router's
/// start nor a shutdown waits for a switch in flight.
#[derive(Clone, Default)]
pub struct SyncHub {
    state: Arc<tokio::sync::Mutex<HubState>>,
    shared: Arc<Shared>,
}

/// What the hub shares without its lock.
#[derive(Default)]
struct Shared {
    /// The whole daemon is leaving (SIGTERM): a router that stops keeps the backup daemon
    /// ([`vips::sync_role_on`]).
    leaving: AtomicBool,
    /// The backup daemon's progress as of the last switch.
    progress: Mutex<Progress>,
}

/// The backup daemon's progress as of the last switch.
#[derive(Clone, Copy, Default)]
struct Progress {
    /// Since when the backup daemon runs as it is (started, or adopted, by this process).
    backup_since: Option<Instant>,
    /// The last change of the daemons failed.
    failed: bool,
}

#[derive(Default)]
struct HubState {
    /// Where the daemons this hub started are recorded (for a teardown, ADR 0008).
    book: HeldBook,
    ipvs: Option<IpvsHandle>,
    roles: BTreeMap<u8, (SyncRole, String)>,
    /// What the kernel runs as far as we know; `None` = unknown (start, or after a failure):
    /// then the kernel's daemons are listed, those started as this daemon starts them are
    /// adopted ([`vips::sync_adoptable`]), and the rest are stopped and started again.
    applied: Option<SyncWanted>,
    /// Since when the backup daemon runs as it is (started, or adopted, by this process).
    backup_since: Option<Instant>,
}

impl SyncHub {
    /// A hub that records the daemons it starts in `book`.
    pub fn new(book: HeldBook) -> SyncHub {
        SyncHub {
            state: Arc::new(tokio::sync::Mutex::new(HubState {
                book,
                ..HubState::default()
            })),
            shared: Arc::default(),
        }
    }

    /// Router `vrid` on `ifname` wants `role`; the kernel's daemons are changed to what all
    /// routers together want. Stops before starts: a Backup that became Master stops absorbing
    /// the old Master's table before it sends its own.
    async fn set(&self, vrid: u8, role: Option<SyncRole>, ifname: &str) -> Result<(), Error> {
        let mut hub = self.state.lock().await;
        match vips::sync_role_on(role, self.shared.leaving.load(Ordering::Relaxed)) {
            Some(role) => hub.roles.insert(vrid, (role, ifname.to_owned())),
            None => hub.roles.remove(&vrid),
        };
        let want = vips::sync_wanted(&hub.roles);
        let result = hub.apply(want).await;
        self.record(hub.backup_since, result.is_err());
        result
    }

    fn record(&self, backup_since: Option<Instant>, failed: bool) {
        *self
            .shared
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Progress {
            backup_since,
            failed,
        };
    }

    /// From now on, a router that stops keeps the backup daemon running (see
    /// [`vips::sync_role_on`]): called once the daemon is leaving, before its routers stop.
    fn leave(&self) {
        self.shared.leaving.store(true, Ordering::Relaxed);
    }

    /// At start, when this node runs no router: stops the daemons an earlier run left behind
    /// (see [`vips::sync_role_on`]), which no router would otherwise ever touch. Only daemons
    /// shaped as this daemon starts them ([`vips::sync_adoptable`]); others are left alone.
    /// Does nothing once a router has asked for a role.
    async fn tidy(&self) -> Result<(), Error> {
        let mut hub = self.state.lock().await;
        if !hub.roles.is_empty() || hub.applied.is_some() {
            return Ok(());
        }
        let daemons = hub.ipvs().await?.list_sync_daemons().await?;
        let Some(found) = vips::sync_adoptable(&daemons) else {
            return Ok(());
        };
        if found != SyncWanted::default() {
            info!(master = ?found.master, backup = ?found.backup, "ipvs sync daemons an earlier run left, stopped: this node runs no VRRP router");
        }
        hub.applied = Some(found);
        let result = hub.apply(SyncWanted::default()).await;
        let failed = self.progress_now().failed;
        self.record(hub.backup_since, failed);
        result
    }

    fn progress_now(&self) -> Progress {
        *self
            .shared
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the backup daemon has done so far, as of the last switch, for [`vips::stand_by`]
    /// (the router's own state aside: a Master waits for nothing). Never waits for a switch.
    fn progress(&self, now: Instant) -> vips::SyncProgress {
        let progress = self.progress_now();
        match progress.backup_since {
            _ if progress.failed => vips::SyncProgress::Unavailable,
            Some(since) => vips::SyncProgress::Backup(now.saturating_duration_since(since)),
            None => vips::SyncProgress::NotRunning,
        }
    }
}

impl HubState {
    /// The IPVS handle, opened on first use.
    async fn ipvs(&mut self) -> Result<&IpvsHandle, Error> {
        match &mut self.ipvs {
            Some(ipvs) => Ok(ipvs),
            slot => {
                let (conn, handle) = new_connection()?;
                // On the sync thread, whoever asks first: the connection task makes the
                // `sendmsg` in which the kernel starts or stops a daemon, and that may wait
                // for seconds (a netlink handle talks to its connection task through
                // channels, from any runtime).
                thread::sync_handle()?.spawn(conn);
                Ok(slot.insert(IpvsHandle::resolve(handle).await?))
            }
        }
    }

    /// Brings the kernel's daemons to `want`.
    async fn apply(&mut self, want: SyncWanted) -> Result<(), Error> {
        let known = self.applied.take();
        if known.as_ref() == Some(&want) {
            self.applied = Some(want);
            return Ok(());
        }
        let ipvs = self.ipvs().await?.clone();
        let have = match known {
            Some(have) => Some(have),
            None => match ipvs.list_sync_daemons().await {
                Ok(daemons) => {
                    let adopted = vips::sync_adoptable(&daemons);
                    if let Some(a) = &adopted
                        && (a.master.is_some() || a.backup.is_some())
                    {
                        info!(master = ?a.master, backup = ?a.backup, "ipvs sync daemons found running, kept where still wanted");
                    }
                    adopted
                }
                Err(e) => {
                    warn!("cannot list the ipvs sync daemons, restarting them: {e}");
                    None
                }
            },
        };
        let changes = vips::sync_changes(have.as_ref(), &want);
        for role in &changes.stop {
            match ipvs.stop_sync_daemon(*role).await {
                Err(e) if e.errno() == Some(Errno::ESRCH) => {}
                other => other?,
            }
            self.book.sync_stopped(*role);
        }
        for (role, ifname, sync_id) in &changes.start {
            let daemon = SyncDaemon::new(*role, IfName::new(ifname)?, *sync_id);
            // Recorded before it starts, as the VIP addresses are.
            self.book.sync_started(*role);
            match ipvs.start_sync_daemon(&daemon).await {
                Err(e) if e.errno() == Some(Errno::EEXIST) => {}
                other => other?,
            }
            info!(role = ?role, interface = %ifname, sync_id, "ipvs sync daemon started");
        }
        self.backup_since = match (&want.backup, self.backup_since) {
            (None, _) => None,
            (Some(_), Some(since)) if changes.backup_kept => Some(since),
            (Some(_), _) => Some(Instant::now()),
        };
        self.applied = Some(want);
        Ok(())
    }
}

/// The record of the VIP addresses the routers put on interfaces, shared by every router,
/// and the folder it is written to (`None`: kept in memory only).
#[derive(Clone, Default)]
pub struct HeldBook(Arc<Mutex<Book>>);

#[derive(Default)]
struct Book {
    dir: Option<PathBuf>,
    held: HeldVips,
    /// The sync daemons started and not stopped (`balancer-sync.json`).
    sync: BTreeSet<SyncRole>,
}

impl HeldBook {
    /// A book over `held` and `sync`, written to `dir`.
    pub fn new(dir: Option<PathBuf>, held: HeldVips, sync: BTreeSet<SyncRole>) -> Self {
        Self(Arc::new(Mutex::new(Book { dir, held, sync })))
    }

    /// Records a sync daemon about to be started, writing the file when that is news.
    fn sync_started(&self, role: SyncRole) {
        let mut book = self.book();
        if book.sync.insert(role) {
            book.write_sync();
        }
    }

    /// Forgets a stopped sync daemon, writing the file when that changed it.
    fn sync_stopped(&self, role: SyncRole) {
        let mut book = self.book();
        if book.sync.remove(&role) {
            book.write_sync();
        }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `vips` on `interface`, writing the file when that is news. A failed write is
    /// logged and the VIP still added: holding it matters more than the record, and its
    /// lifetime removes it anyway should this process die.
    fn claim(&self, interface: &str, vips: &[Ipv4Addr]) {
        let mut book = self.book();
        if book.held.claim(interface, vips) {
            book.write();
        }
    }

    /// Forgets `vips` on `interface` (removed), writing the file when that changed it.
    fn release(&self, interface: &str, vips: &[Ipv4Addr]) {
        let mut book = self.book();
        if book.held.release(interface, vips) {
            book.write();
        }
    }
}

impl Book {
    fn write(&self) {
        if let Some(dir) = &self.dir
            && let Err(e) = state::save_held(dir, &self.held)
        {
            error!("{e}; the record of VIP addresses is behind the kernel");
        }
    }

    fn write_sync(&self) {
        if let Some(dir) = &self.dir
            && let Err(e) = state::save_sync(dir, &self.sync)
        {
            error!("{e}; the record of sync daemons is behind the kernel");
        }
    }
}

/// Removes each recorded VIP address from its interface; returns, per address, whether it is
/// gone now (removed, already gone — `EADDRNOTAVAIL`, its lifetime ran out — or its interface
/// is gone) or why not. Does I/O (rtnetlink).
pub async fn remove_addresses(held: &HeldVips) -> Vec<(HeldVip, Result<(), String>)> {
    if held.is_empty() {
        return Vec::new();
    }
    let mut host = match Host::open("nft") {
        Ok(host) => host,
        Err(e) => {
            let why = format!("cannot open rtnetlink: {e}");
            return held.iter().map(|h| (h.clone(), Err(why.clone()))).collect();
        }
    };
    let mut out = Vec::new();
    for h in held.iter() {
        let result = match nix::net::if_::if_nametoindex(h.interface.as_str()) {
            Err(_) => Ok(()),
            Ok(index) => {
                let addr = Addr {
                    index,
                    address: h.vip,
                    prefix_len: 32,
                };
                match host.del_addr(addr).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.errno() == Some(Errno::EADDRNOTAVAIL) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        out.push((h.clone(), result));
    }
    out
}

/// At start, before any router runs: removes the VIP addresses an earlier run of this daemon
/// recorded in `dir` (none of them is held by this process yet; a router that becomes Master
/// adds its own again), and returns the book of what is left (addresses whose removal failed,
/// kept to be tried at the next start). An address already gone (`EADDRNOTAVAIL`: its
/// lifetime ran out) or on an interface that is gone counts as removed. `None`: no record.
pub async fn remove_held(dir: Option<&Path>) -> HeldBook {
    let Some(dir) = dir else {
        return HeldBook::default();
    };
    let mut held = match state::load_held(dir) {
        Ok(held) => held,
        Err(e) => {
            error!("{e}; starting without the record of VIP addresses (it will be rewritten)");
            HeldVips::default()
        }
    };
    for (h, result) in remove_addresses(&held.clone()).await {
        match result {
            Ok(()) => {
                info!(vip = %h.vip, interface = %h.interface, "vrrp: removed a VIP an earlier run left");
                held.release(&h.interface, &[h.vip]);
            }
            Err(e) => {
                error!(vip = %h.vip, interface = %h.interface, "vrrp: a VIP an earlier run left could not be removed: {e}");
            }
        }
    }
    // The sync daemons an earlier run started stay recorded: the first router's start stops
    // and restarts them anyway, and a teardown stops those still recorded.
    let sync = state::load_sync(dir).unwrap_or_else(|e| {
        error!("{e}; starting without the record of sync daemons");
        BTreeSet::new()
    });
    let book = HeldBook::new(Some(dir.to_owned()), held, sync);
    book.book().write();
    book
}

/// The real side effects of one router in the balancer: VIP and gratuitous ARP through
/// [`KernelOps`] (each added VIP recorded in the [`HeldBook`] first), sync daemons through the
/// node's [`SyncHub`].
struct BalancerOps {
    inner: KernelOps,
    hub: SyncHub,
    held: HeldBook,
    vrid: u8,
    ifname: String,
}

impl VipOps for BalancerOps {
    async fn add_vips(&mut self, vips: &[Ipv4Addr], lifetime: VipLifetime) -> io::Result<()> {
        self.held.claim(&self.ifname, vips);
        self.inner.add_vips(vips, lifetime).await
    }
    async fn refresh_vips(&mut self, vips: &[Ipv4Addr], lifetime: VipLifetime) -> io::Result<()> {
        // Recorded when added; a renewal that brings back a vanished VIP is on the same line.
        self.inner.refresh_vips(vips, lifetime).await
    }
    async fn remove_vips(&mut self, vips: &[Ipv4Addr]) -> io::Result<()> {
        self.inner.remove_vips(vips).await?;
        self.held.release(&self.ifname, vips);
        Ok(())
    }
    async fn send_garp(&mut self, vips: &[Ipv4Addr], count: u8) -> io::Result<()> {
        self.inner.send_garp(vips, count).await
    }
    /// Hands the switch to a task on the sync thread and returns at once: the kernel can take
    /// its time to stop a sync daemon (30 s without an answer was seen in the pod lab, under a
    /// starved CPU), and on the ops thread the renewals of the VIPs would wait behind it. The
    /// switches still reach the kernel in the order the routers asked for them: the tasks are
    /// spawned in that order on the sync thread's single-threaded runtime, and each first takes
    /// the hub's lock, which serves waiters first come, first served.
    async fn set_sync(&mut self, role: Option<SyncRole>) -> io::Result<()> {
        let (hub, vrid, ifname) = (self.hub.clone(), self.vrid, self.ifname.clone());
        thread::sync_handle()?.spawn(async move {
            if let Err(e) = hub.set(vrid, role, &ifname).await {
                warn!(vrid, role = ?role, "ipvs sync daemon not switched: {e}");
            }
        });
        Ok(())
    }
}

/// The IPv4 addresses of this network namespace as (interface, address, prefix length).
fn local_addrs() -> io::Result<Vec<(String, Ipv4Addr, u8)>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(addr) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) else {
            continue;
        };
        let prefix = ifa
            .netmask
            .as_ref()
            .and_then(|m| m.as_sockaddr_in())
            .map_or(32, |m| {
                u8::try_from(m.ip().to_bits().count_ones()).unwrap_or(32)
            });
        out.push((ifa.interface_name.clone(), addr.ip(), prefix));
    }
    Ok(out)
}

/// A running router.
struct Instance {
    spec: InstanceSpec,
    /// Whether it runs at its configured priority (else at [`NOT_READY_PRIORITY`]).
    ready: bool,
    /// When it started: forwarding counts only after [`InstanceSpec::settle`].
    started: Instant,
    /// The backup sync daemon has had its [`vips::SYNC_WARMUP`] for it (or it was Master):
    /// the wait is owed once per router, not again after every sync daemon change.
    synced: bool,
    control: mpsc::Sender<Control>,
    task: JoinHandle<Status>,
}

/// The supervisor's handle.
pub struct VipOwner {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts the supervisor for `node` over the snapshots of `source`; `balancer` is the IPVS
/// loop's report (readiness); it publishes into `report` (made by the caller, whose health
/// endpoint may already serve it). Returns at once; must be called inside a tokio runtime.
pub fn start(
    source: watch::Receiver<Arc<Snapshot>>,
    balancer: SharedReport,
    report: SharedVips,
    node: String,
    dry_run: bool,
    held: HeldBook,
) -> VipOwner {
    lock_vips(&report).starting = true;
    let (stop, stop_rx) = oneshot::channel();
    let sup = Supervisor {
        node,
        dry_run,
        balancer,
        report,
        hub: SyncHub::new(held.clone()),
        held,
        running: BTreeMap::new(),
        want: BTreeMap::new(),
    };
    let task = tokio::spawn(sup.run(source, stop_rx));
    VipOwner { stop, task }
}

impl VipOwner {
    /// Stops every router gracefully (priority 0 if Master, VIP removed, sync stopped), waiting
    /// at most `limit`.
    pub async fn shutdown(self, limit: Duration) {
        let _ = self.stop.send(());
        match tokio::time::timeout(limit, self.task).await {
            Ok(_) => info!("vip ownership stopped"),
            Err(_) => warn!(
                limit_s = limit.as_secs(),
                "vip ownership did not stop in time"
            ),
        }
    }
}

struct Supervisor {
    node: String,
    dry_run: bool,
    balancer: SharedReport,
    report: SharedVips,
    hub: SyncHub,
    held: HeldBook,
    running: BTreeMap<u8, Instance>,
    /// The routers wanted by the last snapshot.
    want: BTreeMap<u8, InstanceSpec>,
}

impl Supervisor {
    async fn run(
        mut self,
        mut source: watch::Receiver<Arc<Snapshot>>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut source_open = true;
        let mut changed = true;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if changed {
                let snapshot = source.borrow_and_update().clone();
                self.desire(&snapshot);
                self.converge().await;
                let first = std::mem::replace(&mut lock_vips(&self.report).starting, false);
                if first
                    && !self.dry_run
                    && self.running.is_empty()
                    && let Err(e) = self.hub.tidy().await
                {
                    warn!("cannot stop the ipvs sync daemons an earlier run left: {e}");
                }
            } else {
                self.retry_and_ready().await;
            }
            tokio::select! {
                _ = &mut stop => break,
                c = source.changed(), if source_open => {
                    if c.is_err() {
                        source_open = false;
                    }
                    changed = c.is_ok();
                }
                _ = tick.tick() => changed = false,
            }
        }
        self.stop_all().await;
    }

    /// Computes the wanted routers from `snapshot` (pure functions) and records faults.
    fn desire(&mut self, snapshot: &Snapshot) {
        let resolved = desired::resolve(snapshot);
        let served: BTreeSet<ObjectRef> = resolved
            .services
            .iter()
            .map(|s| s.virtual_service.clone())
            .collect();
        let want = vips::desired_vips(snapshot, &served, &self.node);
        for p in &want.problems {
            warn!("vrrp: {p}");
        }
        for (vs, reason) in &want.faults {
            if lock_vips(&self.report).faults.get(vs) != Some(reason) {
                error!(virtual_service = %vs, "vrrp: VIP not held: {reason}");
            }
        }
        lock_vips(&self.report).faults = want.faults;
        self.want = want.instances;
    }

    /// Applies the plan from the running routers to the wanted ones.
    async fn converge(&mut self) {
        let running: BTreeMap<u8, InstanceSpec> = self
            .running
            .iter()
            .map(|(v, i)| (*v, i.spec.clone()))
            .collect();
        // Routers that failed to start are not running: the plan starts them again.
        for change in vips::plan(&running, &self.want) {
            match change {
                Change::Stop(vrid) => {
                    self.stop_one(vrid).await;
                    lock_vips(&self.report).routers.remove(&vrid);
                }
                Change::Restart(spec) => {
                    info!(
                        vrid = spec.vrid(),
                        "vrrp: settings changed, restarting the router"
                    );
                    self.stop_one(spec.vrid()).await;
                    self.start_one(spec).await;
                }
                Change::Start(spec) => self.start_one(spec).await,
                Change::Update(spec) => self.update_one(spec).await,
            }
        }
        let wanted: BTreeSet<u8> = self.want.keys().copied().collect();
        lock_vips(&self.report)
            .routers
            .retain(|vrid, _| wanted.contains(vrid));
    }

    /// Once a second: routers that failed to start are retried; each router's priority follows
    /// [`vips::stand_by`]: configured once its health checks have settled, the backup sync
    /// daemon has had its warm-up and its VirtualServices forward on this node, else 1.
    async fn retry_and_ready(&mut self) {
        let missing: Vec<InstanceSpec> = self
            .want
            .values()
            .filter(|s| !self.running.contains_key(&s.vrid()))
            .cloned()
            .collect();
        if !self.dry_run {
            for spec in missing {
                self.start_one(spec).await;
            }
        }
        let programmed = lock(&self.balancer).programmed.clone();
        let Ok(not_ready) = Priority::new(NOT_READY_PRIORITY) else {
            return;
        };
        let now = Instant::now();
        let backup = self.hub.progress(now);
        for (vrid, inst) in self.running.iter_mut() {
            let master = lock_vips(&self.report)
                .routers
                .get(vrid)
                .is_some_and(|r| r.state == VrrpState::Master);
            let sync = if inst.synced || master {
                SyncProgress::Done
            } else {
                backup
            };
            if sync.satisfied() && !inst.synced {
                inst.synced = true;
            }
            let stand_by = vips::stand_by(
                now.saturating_duration_since(inst.started),
                inst.spec.settle,
                sync,
                vips::forwarding(&programmed, &inst.spec.virtual_services),
            );
            if let Some(r) = lock_vips(&self.report).routers.get_mut(vrid) {
                r.stand_by = stand_by;
            }
            let forwards = stand_by.is_none();
            if forwards == inst.ready {
                continue;
            }
            inst.ready = forwards;
            let priority = if forwards {
                info!(
                    vrid,
                    priority = inst.spec.config.priority.get(),
                    forwards,
                    "vrrp: ready to forward, taking the configured priority"
                );
                inst.spec.config.priority
            } else {
                warn!(
                    vrid,
                    priority = NOT_READY_PRIORITY,
                    "vrrp: {}, standing down to priority 1 (a peer that forwards takes the VIP)",
                    stand_by.map_or_else(String::new, |s| s.to_string())
                );
                not_ready
            };
            if let Some(r) = lock_vips(&self.report).routers.get_mut(vrid) {
                r.priority = priority.get();
            }
            let _ = inst.control.send(Control::SetPriority(priority)).await;
        }
    }

    async fn update_one(&mut self, spec: InstanceSpec) {
        let vrid = spec.vrid();
        let Some(inst) = self.running.get_mut(&vrid) else {
            return;
        };
        if let Some(p) = vips::priority_changed(&inst.spec, &spec)
            && inst.ready
        {
            info!(vrid, priority = p.get(), "vrrp: priority changed");
            let _ = inst.control.send(Control::SetPriority(p)).await;
        }
        if inst.spec.sources != spec.sources {
            let _ = inst
                .control
                .send(Control::SetSources(spec.sources.clone()))
                .await;
        }
        inst.spec = spec.clone();
        if let Some(r) = lock_vips(&self.report).routers.get_mut(&vrid) {
            r.virtual_services = spec.virtual_services;
        }
    }

    async fn start_one(&mut self, spec: InstanceSpec) {
        let vrid = spec.vrid();
        let mut entry = RouterReport {
            vips: spec.config.vips.clone(),
            interface: spec.interface.clone(),
            state: VrrpState::Initialize,
            priority: spec.config.priority.get(),
            transitions: 0,
            last_transition: None,
            virtual_services: spec.virtual_services.clone(),
            message: None,
            stand_by: None,
            drops: BTreeMap::new(),
        };
        if let Some(old) = lock_vips(&self.report).routers.get(&vrid) {
            entry.transitions = old.transitions;
            entry.last_transition = old.last_transition;
        }
        if self.dry_run {
            info!(
                vrid,
                vips = ?spec.config.vips,
                priority = spec.config.priority.get(),
                interface = spec.interface.as_deref().unwrap_or("(by the VIP's subnet)"),
                "dry run: would run a VRRP router (none runs: its advertisements would move the VIP)"
            );
            entry.message = Some("no VRRP router runs in a dry run".into());
            lock_vips(&self.report).routers.insert(vrid, entry);
            return;
        }
        match self.launch(&spec).await {
            Ok((ifname, running, stand_by)) => {
                let ready = stand_by.is_none();
                info!(
                    vrid,
                    vips = ?spec.config.vips,
                    interface = %ifname,
                    priority = spec.config.priority.get(),
                    ready,
                    "vrrp: router started"
                );
                entry.interface = Some(ifname);
                if ready {
                    info!(
                        vrid,
                        priority = spec.config.priority.get(),
                        forwards = true,
                        "vrrp: ready to forward, taking the configured priority"
                    );
                } else {
                    entry.priority = NOT_READY_PRIORITY;
                }
                entry.stand_by = stand_by;
                lock_vips(&self.report).routers.insert(vrid, entry);
                tokio::spawn(watch_status(
                    running.status,
                    self.report.clone(),
                    vrid,
                    spec.config.vips.clone(),
                ));
                self.running.insert(
                    vrid,
                    Instance {
                        spec,
                        ready,
                        started: Instant::now(),
                        synced: false,
                        control: running.control,
                        task: running.task,
                    },
                );
            }
            Err(message) => {
                let known = lock_vips(&self.report)
                    .routers
                    .get(&vrid)
                    .and_then(|r| r.message.clone());
                if known.as_deref() != Some(message.as_str()) {
                    error!(
                        vrid,
                        "vrrp: router not started, retrying every {TICK:?}: {message}"
                    );
                }
                entry.state = VrrpState::Fault;
                entry.message = Some(message);
                lock_vips(&self.report).routers.insert(vrid, entry);
            }
        }
    }

    /// Finds the interface, opens the sockets, starts the driver.
    async fn launch(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(String, crate::vrrp::run::Running, Option<StandBy>), String> {
        let vip = spec
            .config
            .vips
            .first()
            .copied()
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let ifname = match &spec.interface {
            Some(i) => i.clone(),
            None => {
                let addrs = local_addrs().map_err(|e| format!("list addresses: {e}"))?;
                vips::interface_for(vip, &addrs).ok_or_else(|| {
                    format!(
                        "no interface has an address in the subnet of VIP {vip}; set spec.balancers.interface"
                    )
                })?
            }
        };
        let iface =
            Interface::lookup(&ifname).map_err(|e| format!("look up interface {ifname}: {e}"))?;
        let me = iface.primary_ip;
        let peers = spec
            .unicast_peers
            .iter()
            .copied()
            .filter(|p| Some(*p) != me)
            .collect();
        // Never ready at start: the kernel's weights may still be a predecessor's (unless
        // nothing needs to settle), and this router's backup sync daemon has not received
        // anything yet; the tick raises the priority once both waits are over.
        let stand_by = vips::stand_by(
            Duration::ZERO,
            spec.settle,
            self.hub.progress(Instant::now()),
            vips::forwarding(&lock(&self.balancer).programmed, &spec.virtual_services),
        );
        let mut config = spec.config.clone();
        if stand_by.is_some() {
            config.priority = Priority::new(NOT_READY_PRIORITY).map_err(|e| e.to_string())?;
        }
        let options = RunOptions {
            unicast_peers: peers,
            sync: false,
            sources: spec.sources.clone(),
            ..RunOptions::default()
        };
        let hub = self.hub.clone();
        let held = self.held.clone();
        let vrid = spec.vrid();
        let name = ifname.clone();
        let lifetime = VipLifetime::for_router(config.adver_int.duration(), config.missed_adverts);
        let running = run_with(config, &ifname, options, move |inner| BalancerOps {
            inner,
            hub,
            held,
            vrid,
            ifname: name,
        })
        .await
        .map_err(|e| e.to_string())?;
        info!(
            vrid,
            vip_lifetime_s = lifetime.secs(),
            refresh_ms = lifetime.refresh().as_millis(),
            earliest_ms = lifetime.earliest_after_death().as_millis(),
            bound_ms = lifetime.bound().as_millis(),
            "vrrp: VIPs are held with a kernel lifetime, renewed while Master"
        );
        Ok((ifname, running, stand_by))
    }

    async fn stop_one(&mut self, vrid: u8) {
        if let Some(inst) = self.running.remove(&vrid) {
            let _ = inst.control.send(Control::Shutdown).await;
            match inst.task.await {
                Ok(status) => info!(
                    vrid,
                    adverts_sent = status.adverts_sent,
                    errors = status.errors,
                    "vrrp: router stopped"
                ),
                Err(e) => error!(vrid, "vrrp: router task failed: {e}"),
            }
        }
    }

    async fn stop_all(&mut self) {
        // The routers' last sync switch keeps the backup daemon (see `vips::sync_role_on`).
        self.hub.leave();
        let vrids: Vec<u8> = self.running.keys().copied().collect();
        // Tell every router first, then wait: the priority-0 advertisements go out together.
        for vrid in &vrids {
            if let Some(inst) = self.running.get(vrid) {
                let _ = inst.control.send(Control::Shutdown).await;
            }
        }
        for vrid in vrids {
            self.stop_one(vrid).await;
        }
    }
}

/// Follows one router's status into the report and logs every state change (with the wall
/// clock, so takeovers can be timed across processes). Ends when the router's task ends.
async fn watch_status(
    mut status: watch::Receiver<Status>,
    report: SharedVips,
    vrid: u8,
    vips: Vec<Ipv4Addr>,
) {
    // Every router starts in Initialize; its first change may already have happened before
    // this task runs, so the current value is read first, then each change.
    let mut last = State::Initialize;
    loop {
        let s = status.borrow_and_update().clone();
        follow(&report, vrid, &vips, &mut last, &s);
        if status.changed().await.is_err() {
            break;
        }
    }
}

/// One status of router `vrid` into the report; logs a state change.
fn follow(report: &SharedVips, vrid: u8, vips: &[Ipv4Addr], last: &mut State, s: &Status) {
    {
        let mut r = lock_vips(report);
        let Some(entry) = r.routers.get_mut(&vrid) else {
            return;
        };
        entry.priority = s.priority;
        if entry.drops != s.drops {
            entry.drops.clone_from(&s.drops);
        }
        if s.state == *last {
            return;
        }
        entry.state = api_state(s.state);
        entry.transitions += 1;
        entry.last_transition = Some(SystemTime::now());
    }
    let unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    info!(
        vrid,
        vips = ?vips,
        from = ?*last,
        to = ?s.state,
        master = ?s.master,
        priority = s.priority,
        unix_ms,
        "vip ownership changed"
    );
    *last = s.state;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> ObjectRef {
        ObjectRef {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn ownership_per_virtual_service() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        let mut report = VipsReport::default();
        report.routers.insert(
            51,
            RouterReport {
                vips: vec![Ipv4Addr::new(192, 0, 2, 100)],
                interface: Some("eth0".into()),
                state: VrrpState::Master,
                priority: 200,
                transitions: 2,
                last_transition: Some(at),
                virtual_services: vec![r("www"), r("www-https")],
                message: None,
                stand_by: None,
                drops: BTreeMap::new(),
            },
        );
        report
            .faults
            .insert(r("bad"), "VRRP settings refused: x".into());
        for vs in ["www", "www-https"] {
            let own = report.ownership(&r(vs));
            assert_eq!(own.state, VrrpState::Master, "{vs}");
            assert_eq!(own.priority, Some(200));
            assert_eq!(own.last_transition, Some(at));
        }
        let bad = report.ownership(&r("bad"));
        assert_eq!(bad.state, VrrpState::Fault);
        assert_eq!(bad.message.as_deref(), Some("VRRP settings refused: x"));
        let none = report.ownership(&r("other"));
        assert_eq!(none.state, VrrpState::Initialize);
        assert_eq!(none.priority, None);
    }

    #[test]
    fn api_states() {
        assert_eq!(api_state(State::Initialize), VrrpState::Initialize);
        assert_eq!(api_state(State::Backup), VrrpState::Backup);
        assert_eq!(api_state(State::Master), VrrpState::Master);
    }
}
