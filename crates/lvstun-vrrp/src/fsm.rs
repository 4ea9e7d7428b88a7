//! The VRRPv3 state machine of RFC 9568 §6.4 (Initialize, Backup, Master) for one virtual
//! router, as a pure function: `Router::handle(event, now) -> Vec<Action>`.
//!
//! No sockets, no clocks, no tasks inside: time comes in as `now`, timers go out as
//! [`Action::SetTimer`]/[`Action::CancelTimer`] and come back as timer events, packets go out as
//! [`Action::SendAdvert`] and come back as [`Event::AdvertReceived`] after the driver's
//! [`ReceiveFilter`](crate::packet::ReceiveFilter). That keeps every decision testable with
//! exact action lists, and lets the simulator in `sim.rs` run hours of virtual time in a second.
//!
//! RFC 9568 renames Master to "Active" (Active_Down_Interval, Active_Adver_Interval); this code
//! keeps the RFC 5798 names, which keepalived, ipvsadm and the operators' vocabulary still use.
//!
//! Departures from the letter of the RFC, each for a reason given where it happens:
//! - Master_Down_Interval uses a configurable number of missed advertisements (default 3, the
//!   RFC's factor) so that a lossy segment can trade detection time for stability.
//! - Preemption can be delayed (keepalived's `preempt_delay`, RFC 8347's preempt hold time).
//! - An interface going down takes the router to Initialize (the RFC has no Fault state).
//! - A Master that hears a lower-priority advertisement re-sends gratuitous ARP (a burst, then
//!   the repeats) as well as its advertisement (keepalived does too): we do not use the virtual
//!   MAC, so after a split brain the loser's ARP announcements must be overwritten, and a
//!   neighbour's `locktime` may ignore the first burst.
//! - Actions that move the VIP are ordered so that the VIP and the IPVS sync daemon never
//!   disagree: on leaving Master `RemoveVip` comes before the sync daemon is switched; on
//!   becoming Master the VIP is in place before the first advertisement can make another router
//!   step down.
//! - The VIP is added with a finite kernel lifetime and renewed while Master
//!   ([`Action::RefreshVip`] every [`VipLifetime::refresh`], on the [`TimerKind::VipRefresh`]
//!   timer), so that it dies with the process that claimed it (see `lifetime.rs`).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::lifetime::VipLifetime;
use crate::packet::{Advertisement, MAX_ADVER_INT_CS, PacketError};

/// A configured priority: 1..=254 (RFC 9568 §5.2.4). 255 is reserved to the address owner,
/// which lvstun never is (a VIP is never a node's own address), and 0 is only ever sent, as
/// "I am leaving", never configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Priority(u8);

impl Priority {
    /// RFC 9568 §5.2.4: the default priority for a router backing up a virtual router.
    pub const DEFAULT: Priority = Priority(100);

    /// Refuses 0 and 255 (see the type's comment).
    pub fn new(value: u8) -> Result<Self, ConfigError> {
        match value {
            1..=254 => Ok(Self(value)),
            _ => Err(ConfigError::BadPriority(value)),
        }
    }

    /// The raw value for the wire.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// The advertisement interval, in the centiseconds the wire carries (RFC 9568 §5.2.7): 1..=4095
/// (10 ms to 40.95 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdverInterval(u16);

impl AdverInterval {
    /// RFC 9568 §6.1: Advertisement_Interval defaults to 100 centiseconds (1 s).
    pub const DEFAULT: AdverInterval = AdverInterval(100);

    /// Refuses 0 and values above the 12-bit field.
    pub fn from_centis(cs: u16) -> Result<Self, ConfigError> {
        if cs == 0 || cs > MAX_ADVER_INT_CS {
            return Err(ConfigError::BadInterval(u64::from(cs) * 10));
        }
        Ok(Self(cs))
    }

    /// From the `advertIntervalMilliseconds` of the API. Refuses values that are not a whole
    /// number of centiseconds rather than rounding them silently: the wire cannot carry them.
    pub fn from_millis(ms: u64) -> Result<Self, ConfigError> {
        if !ms.is_multiple_of(10) {
            return Err(ConfigError::BadInterval(ms));
        }
        let cs = u16::try_from(ms / 10).map_err(|_| ConfigError::BadInterval(ms))?;
        Self::from_centis(cs).map_err(|_| ConfigError::BadInterval(ms))
    }

    /// Centiseconds, as on the wire.
    pub fn centis(self) -> u16 {
        self.0
    }

    /// As a duration.
    pub fn duration(self) -> Duration {
        Duration::from_millis(u64::from(self.0) * 10)
    }
}

/// How gratuitous ARP is sent on becoming Master: "a burst, then a few repeats". The burst
/// updates every ARP cache and switch at once (RFC 9568 §6.4.2 asks for one per address; one
/// can be lost, so keepalived sends `garp_master_repeat` = 5); the repeats catch caches and
/// switch ports that were not listening yet (keepalived's `garp_master_delay` second round).
/// Then one every `refresh` for as long as it stays Master (keepalived's `garp_master_refresh`):
/// when a split brain heals, the side that loses may hear the winner's advertisement first and
/// step down before the winner ever hears it, so nothing else tells the hosts that learned the
/// loser's MAC during the split (seen in the pod lab: the client kept lb2's MAC after the heal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GarpPolicy {
    /// Gratuitous ARPs per VIP sent at once on becoming Master (at least 1).
    pub burst: u8,
    /// Further single gratuitous ARPs per VIP after that.
    pub repeats: u8,
    /// Time between the burst and the first repeat, and between repeats.
    pub repeat_interval: Duration,
    /// Time between single gratuitous ARPs per VIP after the repeats, while Master; `None`
    /// sends none.
    pub refresh: Option<Duration>,
}

impl Default for GarpPolicy {
    fn default() -> Self {
        Self {
            burst: 5,
            repeats: 3,
            repeat_interval: Duration::from_secs(1),
            refresh: Some(Duration::from_secs(10)),
        }
    }
}

/// A configuration the state machine refuses, with a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// VRID 0 (RFC 9568 §5.2.3: 1..=255).
    #[error("virtual router ID must be 1..=255, got 0")]
    BadVrid,
    /// Priority outside 1..=254.
    #[error("priority must be 1..=254 (255 is the address owner, 0 means leaving), got {0}")]
    BadPriority(u8),
    /// Advertisement interval not a whole number of centiseconds in 10 ms..=40.95 s.
    #[error("advertisement interval must be a multiple of 10 ms in 10..=40950 ms, got {0} ms")]
    BadInterval(u64),
    /// No VIP to protect.
    #[error("at least one virtual IP is needed")]
    NoVips,
    /// More VIPs than one advertisement can list.
    #[error("at most 255 virtual IPs per virtual router, got {0}")]
    TooManyVips(usize),
    /// The same VIP twice.
    #[error("virtual IP {0} is listed twice")]
    DuplicateVip(Ipv4Addr),
    /// A VIP equal to the node's own address would make this node the address owner, which must
    /// run at priority 255 (RFC 9568 §5.2.4) and never gives the address up.
    #[error("virtual IP {0} is this node's own address; lvstun does not act as address owner")]
    VipIsOwnAddress(Ipv4Addr),
    /// Zero missed advertisements would declare the Master dead before it could speak.
    #[error("missed advertisements before takeover must be at least 1")]
    BadMissedAdverts,
    /// A gratuitous ARP burst of 0.
    #[error("gratuitous ARP burst must be at least 1")]
    BadGarpBurst,
    /// The advertisement this configuration implies cannot be encoded (not reachable after
    /// `validate`, kept so that the two checks cannot drift apart silently).
    #[error("configuration cannot be advertised: {0}")]
    Unadvertisable(PacketError),
}

/// Configuration of one virtual router on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Virtual Router ID, 1..=255, the same on every balancer of the VIP (RFC 9568 §5.2.3).
    pub vrid: u8,
    /// This node's priority; the highest live one owns the VIP.
    pub priority: Priority,
    /// How often the Master advertises (RFC 9568 §6.1 Advertisement_Interval).
    pub adver_int: AdverInterval,
    /// Whether a higher-priority Backup takes over from a lower-priority Master
    /// (RFC 9568 §6.1 Preempt_Mode, default true).
    pub preempt: bool,
    /// How long preemption is held off after this router starts (or its link comes up, or it
    /// hears a higher-priority Master): gives a rebooted node's health checks and IPVS table
    /// time to fill before it pulls the VIP over. Zero = preempt at once.
    pub preempt_delay: Duration,
    /// The address advertisements are sent from, used for the equal-priority tie-break
    /// (RFC 9568 §6.4.3: the higher primary address wins).
    pub primary_ip: Ipv4Addr,
    /// The virtual IPv4 addresses this router holds while Master.
    pub vips: Vec<Ipv4Addr>,
    /// Advertisements a Backup must miss before it takes over: Master_Down_Interval =
    /// `missed_adverts` × Master_Adver_Interval + Skew_Time. RFC 9568 §6.1 fixes the factor at
    /// 3, the default; a larger value trades slower detection for fewer spurious takeovers on a
    /// lossy segment (with independent loss p, a spurious takeover needs `missed_adverts`
    /// losses in a row: probability about p^missed per interval).
    pub missed_adverts: u8,
    /// Gratuitous ARP on becoming Master.
    pub garp: GarpPolicy,
}

impl RouterConfig {
    /// A configuration with the RFC defaults: priority 100, 1 s interval, preempt on without
    /// delay, 3 missed advertisements.
    pub fn new(vrid: u8, primary_ip: Ipv4Addr, vips: Vec<Ipv4Addr>) -> Self {
        Self {
            vrid,
            priority: Priority::DEFAULT,
            adver_int: AdverInterval::DEFAULT,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary_ip,
            vips,
            missed_adverts: 3,
            garp: GarpPolicy::default(),
        }
    }

    /// Checks what the newtypes cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vrid == 0 {
            return Err(ConfigError::BadVrid);
        }
        if self.vips.is_empty() {
            return Err(ConfigError::NoVips);
        }
        if self.vips.len() > usize::from(u8::MAX) {
            return Err(ConfigError::TooManyVips(self.vips.len()));
        }
        for (i, vip) in self.vips.iter().enumerate() {
            if self.vips[..i].contains(vip) {
                return Err(ConfigError::DuplicateVip(*vip));
            }
            if *vip == self.primary_ip {
                return Err(ConfigError::VipIsOwnAddress(*vip));
            }
        }
        if self.missed_adverts == 0 {
            return Err(ConfigError::BadMissedAdverts);
        }
        if self.garp.burst == 0 {
            return Err(ConfigError::BadGarpBurst);
        }
        Ok(())
    }
}

/// RFC 9568 §6.4 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running (not started, shut down, or the interface is down).
    Initialize,
    /// Listening to the Master, ready to take over (RFC 9568 §6.4.2).
    Backup,
    /// Holding the VIPs and advertising (RFC 9568 §6.4.3; "Active" in RFC 9568's words).
    Master,
}

/// The timers the state machine asks the driver to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// Backup: fires when the Master is presumed dead (RFC 9568 §6.2 Master_Down_Timer).
    MasterDown,
    /// Master: fires when the next advertisement is due (RFC 9568 §6.2 Adver_Timer).
    Adver,
    /// Master: fires when the next gratuitous ARP repeat is due.
    Garp,
    /// Master: fires when the VIPs' kernel lifetime is due for renewal (not in the RFC: see
    /// [`VipLifetime`]).
    VipRefresh,
}

impl TimerKind {
    fn index(self) -> usize {
        match self {
            TimerKind::MasterDown => 0,
            TimerKind::Adver => 1,
            TimerKind::Garp => 2,
            TimerKind::VipRefresh => 3,
        }
    }

    /// The event the driver feeds back when this timer fires.
    pub fn fired(self) -> Event {
        match self {
            TimerKind::MasterDown => Event::MasterDownTimerFired,
            TimerKind::Adver => Event::AdverTimerFired,
            TimerKind::Garp => Event::GarpTimerFired,
            TimerKind::VipRefresh => Event::VipRefreshTimerFired,
        }
    }
}

/// What can happen to a virtual router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start running (RFC 9568 §6.4.1 Startup event).
    Startup,
    /// Stop gracefully: a Master announces priority 0 so a Backup takes over after Skew_Time
    /// instead of Master_Down_Interval (RFC 9568 §6.4.3 Shutdown event).
    Shutdown,
    /// An advertisement that passed the receive filter (RFC 9568 §7.1), from `from` (the IP
    /// source, i.e. the sender's primary address).
    AdvertReceived {
        /// The sender's primary address.
        from: Ipv4Addr,
        /// The decoded advertisement.
        advert: Advertisement,
    },
    /// The [`TimerKind::MasterDown`] timer fired.
    MasterDownTimerFired,
    /// The [`TimerKind::Adver`] timer fired.
    AdverTimerFired,
    /// The [`TimerKind::Garp`] timer fired.
    GarpTimerFired,
    /// The [`TimerKind::VipRefresh`] timer fired.
    VipRefreshTimerFired,
    /// This node's priority changed (e.g. its real servers became unhealthy); the new value is
    /// advertised at once when Master.
    PriorityChanged(Priority),
    /// The interface carrying the VIP went down: behave as if shut down, without being able to
    /// say so on the wire.
    InterfaceDown,
    /// The interface came back: start again if we were started.
    InterfaceUp,
}

/// What the driver must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority field (0 = leaving) to the group or peers.
    SendAdvert {
        /// Priority field to send.
        priority: u8,
    },
    /// Put the VIPs on the interface, with the kernel lifetime [`Router::vip_lifetime`].
    AddVip,
    /// Renew the VIPs' kernel lifetime (the same request as [`Action::AddVip`]: an address
    /// that vanished meanwhile comes back). A renewal that fails is not retried early: the
    /// lifetime covers three missed renewals.
    RefreshVip,
    /// Take the VIPs off the interface.
    RemoveVip,
    /// Send this many gratuitous ARPs for each VIP.
    SendGratuitousArp {
        /// How many per VIP.
        count: u8,
    },
    /// Run the IPVS connection sync daemon as master (this node forwards; it tells the others).
    StartSyncMaster,
    /// Run the IPVS connection sync daemon as backup (learn connections, ready to take over).
    StartSyncBackup,
    /// Stop the IPVS connection sync daemon (router not running).
    StopSync,
    /// (Re)arm a timer to fire at `at`; it replaces any earlier deadline of the same kind.
    SetTimer {
        /// Which timer.
        kind: TimerKind,
        /// When it fires.
        at: Instant,
    },
    /// Disarm a timer.
    CancelTimer {
        /// Which timer.
        kind: TimerKind,
    },
    /// The state changed: for status reports, events and metrics.
    StateChanged {
        /// Old state.
        from: State,
        /// New state.
        to: State,
    },
}

/// One VRRPv3 virtual router on this node.
#[derive(Debug, Clone)]
pub struct Router {
    cfg: RouterConfig,
    template: Advertisement,
    state: State,
    priority: Priority,
    /// Startup received and no Shutdown since.
    enabled: bool,
    link_up: bool,
    /// RFC 9568 §6.1 Master_Adver_Interval: learned from the Master's advertisements in Backup
    /// (a v3 change from v2, where every router had to be configured alike).
    master_adver_int: Duration,
    deadlines: [Option<Instant>; 4],
    garp_left: u8,
    preempt_hold_until: Option<Instant>,
    master_ip: Option<Ipv4Addr>,
    vip_lifetime: VipLifetime,
}

impl Router {
    /// Validates the configuration; the router starts in Initialize and does nothing until
    /// [`Event::Startup`].
    pub fn new(cfg: RouterConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let template = Advertisement::new(
            cfg.vrid,
            cfg.priority.get(),
            cfg.adver_int.centis(),
            cfg.vips.clone(),
        )
        .map_err(ConfigError::Unadvertisable)?;
        Ok(Self {
            priority: cfg.priority,
            master_adver_int: cfg.adver_int.duration(),
            vip_lifetime: VipLifetime::for_router(cfg.adver_int.duration(), cfg.missed_adverts),
            template,
            cfg,
            state: State::Initialize,
            enabled: false,
            link_up: true,
            deadlines: [None; 4],
            garp_left: 0,
            preempt_hold_until: None,
            master_ip: None,
        })
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Current (effective) priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// The kernel lifetime of the VIPs while Master, and how often it is renewed: from the
    /// advertisement interval and `missed_adverts`, fixed for the router's life.
    pub fn vip_lifetime(&self) -> VipLifetime {
        self.vip_lifetime
    }

    /// The advertisement to put on the wire for an [`Action::SendAdvert`].
    pub fn advertisement(&self, priority: u8) -> Advertisement {
        self.template.clone().with_priority(priority)
    }

    /// The Master as last heard (ourselves when Master), for status.
    pub fn observed_master(&self) -> Option<Ipv4Addr> {
        match self.state {
            State::Master => Some(self.cfg.primary_ip),
            State::Backup => self.master_ip,
            State::Initialize => None,
        }
    }

    /// When a timer is due, if armed (tests; the driver keeps its own copy from the actions).
    #[cfg(test)]
    pub fn deadline(&self, kind: TimerKind) -> Option<Instant> {
        self.deadlines[kind.index()]
    }

    /// RFC 9568 §6.1 Master_Adver_Interval as currently known.
    pub fn master_adver_int(&self) -> Duration {
        self.master_adver_int
    }

    /// RFC 9568 §6.1: Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256. Higher
    /// priorities wait less, so the best Backup speaks first and silences the others.
    pub fn skew_time(&self) -> Duration {
        self.master_adver_int
            .saturating_mul(256 - u32::from(self.priority.get()))
            / 256
    }

    /// RFC 9568 §6.1: Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time, with the
    /// factor 3 configurable as `missed_adverts`.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_int
            .saturating_mul(u32::from(self.cfg.missed_adverts))
            .saturating_add(self.skew_time())
    }

    /// Feeds one event; returns what the driver must do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Startup => {
                if !self.enabled {
                    self.enabled = true;
                    self.hold_preempt(now);
                    if self.link_up {
                        self.start(now, &mut out);
                    }
                }
            }
            Event::Shutdown => {
                self.enabled = false;
                self.stop(true, &mut out);
            }
            Event::InterfaceDown => {
                self.link_up = false;
                // The link is down: a priority-0 advertisement could not be sent anyway.
                self.stop(false, &mut out);
            }
            Event::InterfaceUp => {
                if !self.link_up {
                    self.link_up = true;
                    if self.enabled {
                        self.hold_preempt(now);
                        self.start(now, &mut out);
                    }
                }
            }
            Event::AdvertReceived { from, advert } => self.on_advert(from, &advert, now, &mut out),
            Event::MasterDownTimerFired => {
                if self.state == State::Backup && self.due(TimerKind::MasterDown, now, &mut out) {
                    self.become_master(now, &mut out);
                }
            }
            Event::AdverTimerFired => {
                if self.state == State::Master && self.due(TimerKind::Adver, now, &mut out) {
                    // RFC 9568 §6.4.3: "If the Adver_Timer fires, then: Send an ADVERTISEMENT;
                    // Reset the Adver_Timer to Advertisement_Interval".
                    self.send_advert(now, &mut out);
                }
            }
            Event::GarpTimerFired => {
                if self.state == State::Master && self.due(TimerKind::Garp, now, &mut out) {
                    out.push(Action::SendGratuitousArp { count: 1 });
                    self.garp_left = self.garp_left.saturating_sub(1);
                    self.next_garp(now, &mut out);
                }
            }
            Event::VipRefreshTimerFired => {
                if self.state == State::Master && self.due(TimerKind::VipRefresh, now, &mut out) {
                    out.push(Action::RefreshVip);
                    let at = now + self.vip_lifetime.refresh();
                    self.set_timer(TimerKind::VipRefresh, at, &mut out);
                }
            }
            Event::PriorityChanged(priority) => {
                if priority != self.priority {
                    self.priority = priority;
                    if self.state == State::Master {
                        // Not in the RFC, which has no priority changes: tell the Backups at
                        // once. A lowered Master is then preempted by a preempting Backup whose
                        // Master_Down_Timer these advertisements no longer reset (RFC 9568
                        // §6.4.2 discard rule); a raised one stops that countdown.
                        self.send_advert(now, &mut out);
                    }
                    // In Backup the new Skew_Time applies from the next advertisement heard.
                }
            }
        }
        out
    }

    /// RFC 9568 §6.4.1, Startup in Initialize for a non-owner: "Set Master_Adver_Interval to
    /// Advertisement_Interval; Set the Master_Down_Timer to Master_Down_Interval; Transition to
    /// the Backup state". (The owner branch, priority 255, does not exist here.)
    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state != State::Initialize {
            return;
        }
        self.master_adver_int = self.cfg.adver_int.duration();
        self.master_ip = None;
        // A VIP may still be on the interface: left by a predecessor that crashed while Master
        // (SIGKILL, OOM), or by an admin. A Backup that keeps it answers ARP for it, so two
        // nodes claim the VIP once the new Master announces itself. Removing an absent address
        // is a no-op, so this is always safe.
        out.push(Action::RemoveVip);
        out.push(Action::StartSyncBackup);
        let at = now + self.master_down_interval();
        self.set_timer(TimerKind::MasterDown, at, out);
        self.transition(State::Backup, out);
    }

    /// Shutdown (RFC 9568 §6.4.2, §6.4.3) or interface down: to Initialize.
    fn stop(&mut self, announce: bool, out: &mut Vec<Action>) {
        match self.state {
            State::Initialize => {}
            State::Backup => {
                // RFC 9568 §6.4.2: "Cancel the Master_Down_Timer; Transition to Initialize".
                self.cancel_timer(TimerKind::MasterDown, out);
                out.push(Action::StopSync);
                self.transition(State::Initialize, out);
            }
            State::Master => {
                // RFC 9568 §6.4.3: "Cancel the Adver_Timer; Send an ADVERTISEMENT with Priority
                // = 0; Transition to Initialize". The VIP goes first (leaving-Master order), so
                // the Backup that reacts to priority 0 after Skew_Time never finds it still here.
                self.leave_master(out);
                if announce {
                    out.push(Action::SendAdvert { priority: 0 });
                }
                out.push(Action::StopSync);
                self.transition(State::Initialize, out);
            }
        }
    }

    fn on_advert(
        &mut self,
        from: Ipv4Addr,
        advert: &Advertisement,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // The receive filter already checked these (RFC 9568 §7.1); a state machine fed
        // directly must not act on another router's traffic or on its own echo either.
        if advert.vrid() != self.cfg.vrid || from == self.cfg.primary_ip {
            return;
        }
        let theirs = advert.priority();
        let ours = self.priority.get();
        match self.state {
            State::Initialize => {}
            State::Backup => {
                if theirs == 0 {
                    // RFC 9568 §6.4.2: "If the Priority in the ADVERTISEMENT is zero, then: Set
                    // the Master_Down_Timer to Skew_Time". The best Backup (shortest skew) wins.
                    let at = now + self.skew_time();
                    self.set_timer(TimerKind::MasterDown, at, out);
                    return;
                }
                if theirs > ours {
                    // keepalived (`vrrp_state_backup`) restarts the preempt delay whenever a
                    // higher-priority Master is heard: the delay counts from the last time the
                    // situation was normal.
                    self.hold_preempt(now);
                }
                if !self.cfg.preempt || theirs >= ours || self.preempt_held(now) {
                    // RFC 9568 §6.4.2: "If Preempt_Mode is False, or if the Priority in the
                    // ADVERTISEMENT is greater than or equal to the local Priority, then: Set
                    // Master_Adver_Interval to Max Advertise Interval contained in the
                    // ADVERTISEMENT; Recompute the Skew_Time; Recompute the Master_Down_Interval;
                    // Reset the Master_Down_Timer to Master_Down_Interval". A held-off preempt
                    // (preempt_delay) counts as Preempt_Mode False until the delay has passed.
                    self.master_adver_int = advert.max_adver_int();
                    self.master_ip = Some(from);
                    let at = now + self.master_down_interval();
                    self.set_timer(TimerKind::MasterDown, at, out);
                }
                // RFC 9568 §6.4.2: "Else (Preempt_Mode True and Priority less than local):
                // Discard the ADVERTISEMENT". The timer then runs out and we take over.
            }
            State::Master => {
                if theirs == 0 {
                    // RFC 9568 §6.4.3: "If the Priority in the ADVERTISEMENT is zero, then: Send
                    // an ADVERTISEMENT; Reset the Adver_Timer to Advertisement_Interval" (a
                    // leaving router's Backups must hear at once who is still Master).
                    self.send_advert(now, out);
                } else if theirs > ours
                    || (theirs == ours && u32::from(from) > u32::from(self.cfg.primary_ip))
                {
                    // RFC 9568 §6.4.3: higher priority, or equal priority and a greater primary
                    // address (unsigned, network byte order): "Cancel Adver_Timer; Set
                    // Master_Adver_Interval to Max Advertise Interval contained in the
                    // ADVERTISEMENT; Recompute the Skew_Time; Recompute the Master_Down_Interval;
                    // Set Master_Down_Timer to Master_Down_Interval; Transition to Backup".
                    self.leave_master(out);
                    out.push(Action::StartSyncBackup);
                    self.master_adver_int = advert.max_adver_int();
                    self.master_ip = Some(from);
                    let at = now + self.master_down_interval();
                    self.set_timer(TimerKind::MasterDown, at, out);
                    self.transition(State::Backup, out);
                } else {
                    // RFC 9568 §6.4.3 (new since RFC 5798): a lower-priority advertisement is
                    // discarded and an ADVERTISEMENT is sent immediately "to assert the Active
                    // state to the sending VRRP Router and to update any learning bridges". This
                    // is what ends a split brain within one interval once a partition heals.
                    // We also repeat the gratuitous ARP burst, as keepalived does
                    // (`vrrp_state_master_rx`): during the split the other side announced the
                    // VIP with its own MAC, and without a virtual MAC only ARP undoes that.
                    out.push(Action::SendAdvert { priority: ours });
                    out.push(Action::SendGratuitousArp {
                        count: self.cfg.garp.burst,
                    });
                    // And the repeats, as on becoming Master (keepalived's
                    // `garp_lower_prio_repeat`): a host that took the other side's
                    // announcement less than `neigh.*.locktime` (1 s) ago ignores a new one,
                    // so a burst sent the moment the partition heals can be lost; the repeats,
                    // a second apart, land after it (seen in the pod lab: the client kept the
                    // loser's MAC after a split brain healed).
                    self.garp_left = self.cfg.garp.repeats;
                    self.next_garp(now, out);
                }
            }
        }
    }

    /// RFC 9568 §6.4.2, Master_Down_Timer fired: send an ADVERTISEMENT, gratuitous ARP for each
    /// address, set the Adver_Timer, transition to Master. Order here: VIP, ARP, sync master,
    /// advertisement, so that a router stepping down because of our advertisement finds the
    /// VIP already served (the RFC sends the advertisement first; the difference is the time to
    /// add an address, and it is the safe side).
    fn become_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::AddVip);
        out.push(Action::SendGratuitousArp {
            count: self.cfg.garp.burst,
        });
        out.push(Action::StartSyncMaster);
        self.send_advert(now, out);
        self.garp_left = self.cfg.garp.repeats;
        self.next_garp(now, out);
        let at = now + self.vip_lifetime.refresh();
        self.set_timer(TimerKind::VipRefresh, at, out);
        self.transition(State::Master, out);
    }

    /// Sets the Garp timer for the next single gratuitous ARP: a repeat while any is left, else
    /// the periodic refresh (if any).
    fn next_garp(&mut self, now: Instant, out: &mut Vec<Action>) {
        let wait = if self.garp_left > 0 {
            Some(self.cfg.garp.repeat_interval)
        } else {
            self.cfg.garp.refresh
        };
        if let Some(wait) = wait {
            self.set_timer(TimerKind::Garp, now + wait, out);
        }
    }

    /// The common part of leaving Master: timers off, VIP off. The caller then switches the sync
    /// daemon, so RemoveVip always precedes it.
    fn leave_master(&mut self, out: &mut Vec<Action>) {
        self.cancel_timer(TimerKind::Adver, out);
        self.cancel_timer(TimerKind::Garp, out);
        self.cancel_timer(TimerKind::VipRefresh, out);
        self.garp_left = 0;
        out.push(Action::RemoveVip);
    }

    /// Sends an advertisement with the current priority and restarts the Adver_Timer.
    fn send_advert(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::SendAdvert {
            priority: self.priority.get(),
        });
        let at = now + self.cfg.adver_int.duration();
        self.set_timer(TimerKind::Adver, at, out);
    }

    fn transition(&mut self, to: State, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        if to == State::Initialize {
            self.master_ip = None;
        }
        out.push(Action::StateChanged { from, to });
    }

    fn hold_preempt(&mut self, now: Instant) {
        if !self.cfg.preempt_delay.is_zero() {
            self.preempt_hold_until = Some(now + self.cfg.preempt_delay);
        }
    }

    fn preempt_held(&self, now: Instant) -> bool {
        self.preempt_hold_until.is_some_and(|until| now < until)
    }

    fn set_timer(&mut self, kind: TimerKind, at: Instant, out: &mut Vec<Action>) {
        self.deadlines[kind.index()] = Some(at);
        out.push(Action::SetTimer { kind, at });
    }

    fn cancel_timer(&mut self, kind: TimerKind, out: &mut Vec<Action>) {
        if self.deadlines[kind.index()].take().is_some() {
            out.push(Action::CancelTimer { kind });
        }
    }

    /// Whether a fired timer is really due. A timer event that was cancelled or re-armed in the
    /// meantime (the driver's timer raced the event that replaced it) is stale and ignored; one
    /// that arrives early is re-armed rather than lost.
    fn due(&mut self, kind: TimerKind, now: Instant, out: &mut Vec<Action>) -> bool {
        match self.deadlines[kind.index()] {
            None => false,
            Some(at) if now < at => {
                out.push(Action::SetTimer { kind, at });
                false
            }
            Some(_) => {
                self.deadlines[kind.index()] = None;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
    const LOWER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const HIGHER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

    fn cfg() -> RouterConfig {
        RouterConfig::new(51, ME, vec![VIP])
    }

    fn advert(priority: u8, cs: u16) -> Advertisement {
        Advertisement::new(51, priority, cs, vec![VIP]).unwrap()
    }

    fn rx(from: Ipv4Addr, priority: u8) -> Event {
        Event::AdvertReceived {
            from,
            advert: advert(priority, 100),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Started router (priority 100, 1 s) and the instant it started.
    fn backup() -> (Router, Instant) {
        let mut r = Router::new(cfg()).unwrap();
        let t0 = Instant::now();
        r.handle(Event::Startup, t0);
        (r, t0)
    }

    /// Router that became Master at t0 + its Master_Down_Interval.
    fn master() -> (Router, Instant) {
        master_with(cfg())
    }

    /// [`master`] with a configuration of the test's own.
    fn master_with(c: RouterConfig) -> (Router, Instant) {
        let mut r = Router::new(c).unwrap();
        r.handle(Event::Startup, Instant::now());
        let t = r.deadline(TimerKind::MasterDown).unwrap();
        r.handle(Event::MasterDownTimerFired, t);
        assert_eq!(r.state(), State::Master);
        (r, t)
    }

    #[test]
    fn rfc_timer_formulas() {
        let (r, _) = backup();
        // Priority 100, 1 s: Skew_Time = 156/256 s = 609.375 ms; Master_Down = 3.609375 s.
        assert_eq!(r.skew_time(), Duration::from_micros(609_375));
        assert_eq!(r.master_down_interval(), Duration::from_micros(3_609_375));
        let mut c = cfg();
        c.priority = Priority::new(254).unwrap();
        c.adver_int = AdverInterval::from_millis(100).unwrap();
        let r = Router::new(c).unwrap();
        // Priority 254, 100 ms: skew 2/256 × 100 ms = 781.25 µs.
        assert_eq!(r.skew_time(), Duration::from_nanos(781_250));
        assert_eq!(r.master_down_interval(), Duration::from_nanos(300_781_250));
    }

    #[test]
    fn startup_goes_to_backup_and_arms_master_down() {
        let mut r = Router::new(cfg()).unwrap();
        let t0 = Instant::now();
        assert_eq!(r.state(), State::Initialize);
        let a = r.handle(Event::Startup, t0);
        assert_eq!(
            a,
            vec![
                Action::RemoveVip,
                Action::StartSyncBackup,
                Action::SetTimer {
                    kind: TimerKind::MasterDown,
                    at: t0 + Duration::from_micros(3_609_375)
                },
                Action::StateChanged {
                    from: State::Initialize,
                    to: State::Backup
                },
            ]
        );
        // A second Startup is a no-op.
        assert_eq!(r.handle(Event::Startup, t0 + ms(1)), vec![]);
    }

    #[test]
    fn becoming_master_adds_vip_then_arp_then_sync_then_advert() {
        let (mut r, t0) = backup();
        let t = t0 + Duration::from_micros(3_609_375);
        let a = r.handle(Event::MasterDownTimerFired, t);
        assert_eq!(
            a,
            vec![
                Action::AddVip,
                Action::SendGratuitousArp { count: 5 },
                Action::StartSyncMaster,
                Action::SendAdvert { priority: 100 },
                Action::SetTimer {
                    kind: TimerKind::Adver,
                    at: t + ms(1000)
                },
                Action::SetTimer {
                    kind: TimerKind::Garp,
                    at: t + ms(1000)
                },
                // 1 s adverts: the VIP lives 8 s and is renewed every 2 s.
                Action::SetTimer {
                    kind: TimerKind::VipRefresh,
                    at: t + ms(2000)
                },
                Action::StateChanged {
                    from: State::Backup,
                    to: State::Master
                },
            ]
        );
        assert_eq!(r.observed_master(), Some(ME));
    }

    /// The VIP's kernel lifetime is renewed every quarter lifetime while Master, and never
    /// outside Master: a renewal timer that fires early is re-armed, one that outlived the
    /// Master state does nothing.
    #[test]
    fn master_renews_the_vip_lifetime_on_its_own_timer() {
        let (mut r, t) = master();
        let lifetime = r.vip_lifetime();
        assert_eq!((lifetime.secs(), lifetime.refresh()), (8, ms(2000)));
        let due = r.deadline(TimerKind::VipRefresh).unwrap();
        assert_eq!(due, t + ms(2000));
        assert_eq!(
            r.handle(Event::VipRefreshTimerFired, t + ms(1500)),
            vec![Action::SetTimer {
                kind: TimerKind::VipRefresh,
                at: due
            }],
            "early: re-armed, nothing sent"
        );
        assert_eq!(
            r.handle(Event::VipRefreshTimerFired, due),
            vec![
                Action::RefreshVip,
                Action::SetTimer {
                    kind: TimerKind::VipRefresh,
                    at: due + ms(2000)
                }
            ]
        );
        // The advertisements go on beside it, unchanged.
        let adver = r.deadline(TimerKind::Adver).unwrap();
        assert!(
            !r.handle(Event::AdverTimerFired, adver)
                .contains(&Action::RefreshVip)
        );
        // Stepping down cancels it; a late fire then does nothing.
        let next = r.deadline(TimerKind::VipRefresh).unwrap();
        r.handle(rx(HIGHER_IP, 200), due + ms(10));
        assert_eq!(r.state(), State::Backup);
        assert_eq!(r.deadline(TimerKind::VipRefresh), None);
        assert_eq!(r.handle(Event::VipRefreshTimerFired, next), vec![]);
    }

    #[test]
    fn early_or_stale_timer_events_do_not_act() {
        let (mut r, t0) = backup();
        let due = r.deadline(TimerKind::MasterDown).unwrap();
        // Early: re-armed, not acted on.
        assert_eq!(
            r.handle(Event::MasterDownTimerFired, t0 + ms(10)),
            vec![Action::SetTimer {
                kind: TimerKind::MasterDown,
                at: due
            }]
        );
        assert_eq!(r.state(), State::Backup);
        // Timers of another state: ignored.
        assert_eq!(r.handle(Event::AdverTimerFired, due), vec![]);
        assert_eq!(r.handle(Event::GarpTimerFired, due), vec![]);
        // Cancelled (shutdown) then a late fire: ignored.
        r.handle(Event::Shutdown, t0 + ms(20));
        assert_eq!(r.handle(Event::MasterDownTimerFired, due), vec![]);
        assert_eq!(r.state(), State::Initialize);
    }

    #[test]
    fn backup_resets_timer_and_learns_the_masters_interval() {
        let (mut r, t0) = backup();
        let t = t0 + ms(500);
        let a = r.handle(
            Event::AdvertReceived {
                from: HIGHER_IP,
                advert: advert(150, 50),
            },
            t,
        );
        // Learned 500 ms: 3 × 500 ms + 156/256 × 500 ms = 1.5 s + 304.6875 ms.
        assert_eq!(r.master_adver_int(), ms(500));
        assert_eq!(
            a,
            vec![Action::SetTimer {
                kind: TimerKind::MasterDown,
                at: t + Duration::from_nanos(1_804_687_500)
            }]
        );
        assert_eq!(r.observed_master(), Some(HIGHER_IP));
        // Equal priority is accepted too (RFC 9568 §6.4.2: "greater than or equal").
        assert_eq!(r.handle(rx(LOWER_IP, 100), t + ms(1)).len(), 1);
    }

    #[test]
    fn backup_priority_zero_shortens_to_skew_time() {
        let (mut r, t0) = backup();
        r.handle(rx(HIGHER_IP, 150), t0);
        let t = t0 + ms(300);
        let a = r.handle(rx(HIGHER_IP, 0), t);
        assert_eq!(
            a,
            vec![Action::SetTimer {
                kind: TimerKind::MasterDown,
                at: t + Duration::from_micros(609_375)
            }]
        );
    }

    #[test]
    fn backup_with_preempt_discards_lower_priority_then_takes_over() {
        let (mut r, t0) = backup();
        let due = r.deadline(TimerKind::MasterDown).unwrap();
        assert_eq!(r.handle(rx(HIGHER_IP, 50), t0 + ms(900)), vec![]);
        assert_eq!(r.deadline(TimerKind::MasterDown), Some(due));
        r.handle(Event::MasterDownTimerFired, due);
        assert_eq!(r.state(), State::Master);
    }

    #[test]
    fn backup_without_preempt_follows_a_lower_master() {
        let mut c = cfg();
        c.preempt = false;
        let mut r = Router::new(c).unwrap();
        let t0 = Instant::now();
        r.handle(Event::Startup, t0);
        let a = r.handle(rx(HIGHER_IP, 50), t0 + ms(900));
        assert_eq!(a.len(), 1);
        assert!(r.deadline(TimerKind::MasterDown).unwrap() > t0 + ms(3_900));
    }

    #[test]
    fn preempt_delay_holds_preemption_then_releases_it() {
        let mut c = cfg();
        c.preempt_delay = ms(5_000);
        let mut r = Router::new(c).unwrap();
        let t0 = Instant::now();
        r.handle(Event::Startup, t0);
        // Within the delay a lower Master is followed...
        assert_eq!(r.handle(rx(LOWER_IP, 50), t0 + ms(4_900)).len(), 1);
        // ...after it, discarded.
        assert_eq!(r.handle(rx(LOWER_IP, 50), t0 + ms(5_000)), vec![]);
        // Hearing a higher-priority Master restarts the delay (keepalived semantics).
        r.handle(rx(HIGHER_IP, 200), t0 + ms(5_100));
        assert_eq!(r.handle(rx(LOWER_IP, 50), t0 + ms(10_000)).len(), 1);
        assert_eq!(r.handle(rx(LOWER_IP, 50), t0 + ms(10_100)), vec![]);
    }

    #[test]
    fn master_steps_down_for_higher_priority_vip_first_then_sync() {
        let (mut r, t) = master();
        let t1 = t + ms(10);
        let a = r.handle(
            Event::AdvertReceived {
                from: LOWER_IP,
                advert: advert(150, 20),
            },
            t1,
        );
        assert_eq!(
            a,
            vec![
                Action::CancelTimer {
                    kind: TimerKind::Adver
                },
                Action::CancelTimer {
                    kind: TimerKind::Garp
                },
                Action::CancelTimer {
                    kind: TimerKind::VipRefresh
                },
                Action::RemoveVip,
                Action::StartSyncBackup,
                Action::SetTimer {
                    kind: TimerKind::MasterDown,
                    // 3 × 200 ms + 156/256 × 200 ms = 721.875 ms
                    at: t1 + Duration::from_micros(721_875)
                },
                Action::StateChanged {
                    from: State::Master,
                    to: State::Backup
                },
            ]
        );
        assert_eq!(r.observed_master(), Some(LOWER_IP));
    }

    #[test]
    fn master_equal_priority_tie_break_by_primary_address() {
        let (mut r, t) = master();
        // Equal priority from a lower address: we win, discard and assert (RFC 9568 §6.4.3),
        // and announce the VIP again: a burst now, the repeats from a second on (a neighbour's
        // locktime may ignore the burst after the other side's announcement).
        assert_eq!(
            r.handle(rx(LOWER_IP, 100), t + ms(1)),
            vec![
                Action::SendAdvert { priority: 100 },
                Action::SendGratuitousArp { count: 5 },
                Action::SetTimer {
                    kind: TimerKind::Garp,
                    at: t + ms(1) + Duration::from_secs(1)
                }
            ]
        );
        let repeats: Vec<Action> = (1..=3)
            .flat_map(|i| r.handle(Event::GarpTimerFired, t + ms(1) + Duration::from_secs(i)))
            .filter(|a| matches!(a, Action::SendGratuitousArp { .. }))
            .collect();
        assert_eq!(repeats.len(), 3, "three repeats after the burst");
        assert_eq!(r.state(), State::Master);
        // Equal priority from a higher address: we lose.
        r.handle(rx(HIGHER_IP, 100), t + ms(2));
        assert_eq!(r.state(), State::Backup);
    }

    #[test]
    fn master_answers_priority_zero_with_an_advert_at_once() {
        let (mut r, t) = master();
        let t1 = t + ms(300);
        assert_eq!(
            r.handle(rx(LOWER_IP, 0), t1),
            vec![
                Action::SendAdvert { priority: 100 },
                Action::SetTimer {
                    kind: TimerKind::Adver,
                    at: t1 + ms(1000)
                }
            ]
        );
    }

    #[test]
    fn master_advertises_on_its_timer() {
        let (mut r, t) = master();
        let due = t + ms(1000);
        assert_eq!(
            r.handle(Event::AdverTimerFired, due),
            vec![
                Action::SendAdvert { priority: 100 },
                Action::SetTimer {
                    kind: TimerKind::Adver,
                    at: due + ms(1000)
                }
            ]
        );
    }

    /// Fires the Garp timer `n` times; the times it fired at and the ARPs each sent.
    fn garp_rounds(r: &mut Router, n: usize) -> Vec<(Instant, u8)> {
        let mut rounds = Vec::new();
        for _ in 0..n {
            let Some(due) = r.deadline(TimerKind::Garp) else {
                break;
            };
            let sent = r
                .handle(Event::GarpTimerFired, due)
                .into_iter()
                .map(|a| match a {
                    Action::SendGratuitousArp { count } => count,
                    _ => 0,
                })
                .sum();
            rounds.push((due, sent));
        }
        rounds
    }

    #[test]
    fn gratuitous_arp_burst_then_three_repeats_then_one_every_ten_seconds() {
        let (mut r, t) = master();
        let rounds = garp_rounds(&mut r, 6);
        let expected: Vec<(Instant, u8)> = [1000, 2000, 3000, 13_000, 23_000, 33_000]
            .into_iter()
            .map(|at| (t + ms(at), 1))
            .collect();
        assert_eq!(rounds, expected);
    }

    #[test]
    fn gratuitous_arp_stops_after_the_repeats_without_a_refresh() {
        let mut c = cfg();
        c.garp.refresh = None;
        let (mut r, t) = master_with(c);
        let rounds = garp_rounds(&mut r, 10);
        assert_eq!(rounds.len(), 3, "three repeats, then nothing: {rounds:?}");
        assert_eq!(rounds.last().map(|r| r.0), Some(t + ms(3000)));
    }

    #[test]
    fn gratuitous_arp_refresh_stops_when_leaving_master() {
        let (mut r, t) = master();
        garp_rounds(&mut r, 4);
        r.handle(Event::Shutdown, t + ms(13_500));
        assert_eq!(r.deadline(TimerKind::Garp), None);
    }

    #[test]
    fn shutdown_as_master_removes_vip_then_sends_priority_zero() {
        let (mut r, t) = master();
        assert_eq!(
            r.handle(Event::Shutdown, t + ms(5)),
            vec![
                Action::CancelTimer {
                    kind: TimerKind::Adver
                },
                Action::CancelTimer {
                    kind: TimerKind::Garp
                },
                Action::CancelTimer {
                    kind: TimerKind::VipRefresh
                },
                Action::RemoveVip,
                Action::SendAdvert { priority: 0 },
                Action::StopSync,
                Action::StateChanged {
                    from: State::Master,
                    to: State::Initialize
                },
            ]
        );
        for kind in [TimerKind::MasterDown, TimerKind::Adver, TimerKind::Garp] {
            assert_eq!(r.deadline(kind), None);
        }
        // Startup again goes through Backup, as after boot.
        r.handle(Event::Startup, t + ms(10));
        assert_eq!(r.state(), State::Backup);
    }

    #[test]
    fn shutdown_as_backup_cancels_master_down() {
        let (mut r, t0) = backup();
        assert_eq!(
            r.handle(Event::Shutdown, t0 + ms(5)),
            vec![
                Action::CancelTimer {
                    kind: TimerKind::MasterDown
                },
                Action::StopSync,
                Action::StateChanged {
                    from: State::Backup,
                    to: State::Initialize
                },
            ]
        );
    }

    #[test]
    fn priority_change_is_advertised_at_once_by_a_master() {
        let (mut r, t) = master();
        let p = Priority::new(20).unwrap();
        let a = r.handle(Event::PriorityChanged(p), t + ms(7));
        assert_eq!(a[0], Action::SendAdvert { priority: 20 });
        assert_eq!(r.handle(Event::PriorityChanged(p), t + ms(8)), vec![]);
        // A Backup just records it.
        let (mut b, t0) = backup();
        assert_eq!(b.handle(Event::PriorityChanged(p), t0), vec![]);
        assert_eq!(b.skew_time(), ms(1000) * 236 / 256);
    }

    #[test]
    fn interface_down_leaves_master_silently_and_up_restarts() {
        let (mut r, t) = master();
        let a = r.handle(Event::InterfaceDown, t + ms(1));
        assert!(!a.contains(&Action::SendAdvert { priority: 0 }));
        let vip = a.iter().position(|x| *x == Action::RemoveVip).unwrap();
        let sync = a.iter().position(|x| *x == Action::StopSync).unwrap();
        assert!(vip < sync);
        assert_eq!(r.state(), State::Initialize);
        let a = r.handle(Event::InterfaceUp, t + ms(2));
        assert_eq!(r.state(), State::Backup);
        assert_eq!(a[..2], [Action::RemoveVip, Action::StartSyncBackup]);
        // Startup while the link is down waits for the link.
        let mut r = Router::new(cfg()).unwrap();
        r.handle(Event::InterfaceDown, t);
        assert_eq!(r.handle(Event::Startup, t), vec![]);
        r.handle(Event::InterfaceUp, t + ms(1));
        assert_eq!(r.state(), State::Backup);
    }

    #[test]
    fn ignores_other_vrids_own_echo_and_initialize_state() {
        let (mut r, t0) = backup();
        let other = Advertisement::new(52, 200, 100, vec![VIP]).unwrap();
        assert_eq!(
            r.handle(
                Event::AdvertReceived {
                    from: HIGHER_IP,
                    advert: other
                },
                t0
            ),
            vec![]
        );
        assert_eq!(r.handle(rx(ME, 200), t0), vec![]);
        let mut idle = Router::new(cfg()).unwrap();
        assert_eq!(idle.handle(rx(HIGHER_IP, 200), t0), vec![]);
    }

    #[test]
    fn config_is_validated() {
        assert_eq!(Priority::new(0), Err(ConfigError::BadPriority(0)));
        assert_eq!(Priority::new(255), Err(ConfigError::BadPriority(255)));
        assert!(Priority::new(254).is_ok());
        assert_eq!(
            AdverInterval::from_millis(105),
            Err(ConfigError::BadInterval(105))
        );
        assert_eq!(
            AdverInterval::from_millis(0),
            Err(ConfigError::BadInterval(0))
        );
        assert_eq!(
            AdverInterval::from_millis(40_960),
            Err(ConfigError::BadInterval(40_960))
        );
        assert_eq!(AdverInterval::from_millis(40_950).unwrap().centis(), 4095);
        let mut c = cfg();
        c.vips = vec![ME];
        assert_eq!(Router::new(c).err(), Some(ConfigError::VipIsOwnAddress(ME)));
        let mut c = cfg();
        c.vips = vec![VIP, VIP];
        assert_eq!(Router::new(c).err(), Some(ConfigError::DuplicateVip(VIP)));
        let mut c = cfg();
        c.vips = vec![];
        assert_eq!(Router::new(c).err(), Some(ConfigError::NoVips));
        let mut c = cfg();
        c.missed_adverts = 0;
        assert_eq!(Router::new(c).err(), Some(ConfigError::BadMissedAdverts));
        let mut c = cfg();
        c.vrid = 0;
        assert_eq!(Router::new(c).err(), Some(ConfigError::BadVrid));
        let mut c = cfg();
        c.garp.burst = 0;
        assert_eq!(Router::new(c).err(), Some(ConfigError::BadGarpBurst));
    }

    #[test]
    fn missed_adverts_scales_master_down_interval() {
        let mut c = cfg();
        c.missed_adverts = 5;
        let r = Router::new(c).unwrap();
        assert_eq!(r.master_down_interval(), Duration::from_micros(5_609_375));
    }
}
