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
    /// The least time between two bursts a Master sends on hearing lower-priority
    /// advertisements: a peer (or a host on the segment) that keeps sending them must not turn
    /// each one into a broadcast burst. The advertisement RFC 9568 §6.4.3 asks for in reply is
    /// never held back.
    pub lower_priority_gap: Duration,
}

/// Whether a Master that hears a lower-priority advertisement at `now` sends its gratuitous ARP
/// burst again, given when it last did (`None`: not since it became Master): at most one burst
/// per `gap`. Pure.
pub fn lower_priority_burst_due(last: Option<Instant>, now: Instant, gap: Duration) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= gap)
}

impl Default for GarpPolicy {
    fn default() -> Self {
        Self {
            burst: 5,
            repeats: 3,
            repeat_interval: Duration::from_secs(1),
            refresh: Some(Duration::from_secs(10)),
            lower_priority_gap: Duration::from_secs(1),
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
    /// When the last burst for a lower-priority advertisement went out (this Master term).
    lower_priority_burst: Option<Instant>,
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
            lower_priority_burst: None,
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
                    // The burst at most once per `lower_priority_gap`: a sender of a stream of
                    // lower-priority advertisements (a misconfigured peer, a host on the
                    // segment) gets our advertisement each time, but not a broadcast storm.
                    let gap = self.cfg.garp.lower_priority_gap;
                    if !lower_priority_burst_due(self.lower_priority_burst, now, gap) {
                        return;
                    }
                    self.lower_priority_burst = Some(now);
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
        self.lower_priority_burst = None;
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
    //! The state machine's cases as tables: each row a named case (the RFC 9568 section it
    //! proves, where there is one), run by one runner, so that a new case is a row and a
    //! failure names its row.

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

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn set(kind: TimerKind, at: Instant) -> Action {
        Action::SetTimer { kind, at }
    }

    fn cancel(kind: TimerKind) -> Action {
        Action::CancelTimer { kind }
    }

    fn changed(from: State, to: State) -> Action {
        Action::StateChanged { from, to }
    }

    /// Master_Down_Interval of the default router (priority 100, 1 s): 3 s + 156/256 s.
    const MASTER_DOWN: Duration = Duration::from_micros(3_609_375);

    /// Where a case's router starts, and from which instant its steps count.
    #[derive(Debug, Clone, Copy)]
    enum Start {
        /// New, in Initialize; steps count from its creation.
        Fresh,
        /// Started (Startup handled): Backup; steps count from the Startup.
        Backup,
        /// Became Master when its Master_Down timer fired; steps count from then.
        Master,
    }

    /// What a step's actions must be.
    enum Want {
        /// Exactly these, in this order (given the step's instant).
        Exactly(fn(Instant) -> Vec<Action>),
        /// Not this case's subject: the step only sets the scene for the checks after it.
        Any,
    }

    /// A named check on the router after a step.
    #[derive(Debug)]
    enum Check {
        InState(State),
        ObservedMaster(Option<Ipv4Addr>),
        MasterAdverInt(Duration),
        SkewTime(Duration),
        /// A timer's deadline as an offset from the case's start, or not armed.
        Deadline(TimerKind, Option<Duration>),
        /// The VIP's kernel lifetime in seconds and its renewal period.
        Lifetime(u32, Duration),
    }

    impl Check {
        /// Whether the router passes this check (`t` is the case's start).
        fn holds(&self, r: &Router, t: Instant) -> bool {
            match self {
                Check::InState(s) => r.state() == *s,
                Check::ObservedMaster(m) => r.observed_master() == *m,
                Check::MasterAdverInt(d) => r.master_adver_int() == *d,
                Check::SkewTime(d) => r.skew_time() == *d,
                Check::Deadline(kind, at) => r.deadline(*kind) == at.map(|d| t + d),
                Check::Lifetime(secs, refresh) => {
                    let l = r.vip_lifetime();
                    (l.secs(), l.refresh()) == (*secs, *refresh)
                }
            }
        }
    }

    /// One event of a case: when (after the start), what, its actions, and checks after it.
    struct Step {
        after: Duration,
        event: Event,
        want: Want,
        then: Vec<Check>,
    }

    fn step(after: Duration, event: Event, want: Want, then: Vec<Check>) -> Step {
        Step {
            after,
            event,
            want,
            then,
        }
    }

    /// A case of the state machine: a router, a start, and the steps it is driven through.
    struct Case {
        name: &'static str,
        /// The RFC 9568 section the case proves, where there is one.
        rfc: Option<&'static str>,
        config: fn() -> RouterConfig,
        start: Start,
        steps: Vec<Step>,
    }

    /// The router of `config` brought to `start`, and the instant its steps count from.
    fn start(config: RouterConfig, start: Start) -> (Router, Instant) {
        let mut r = Router::new(config).unwrap();
        let t0 = Instant::now();
        match start {
            Start::Fresh => {
                assert_eq!(r.state(), State::Initialize);
                (r, t0)
            }
            Start::Backup => {
                r.handle(Event::Startup, t0);
                (r, t0)
            }
            Start::Master => {
                r.handle(Event::Startup, t0);
                let t = r.deadline(TimerKind::MasterDown).unwrap();
                r.handle(Event::MasterDownTimerFired, t);
                assert_eq!(r.state(), State::Master);
                (r, t)
            }
        }
    }

    /// Runs every case; each failure names its case, its section and its step.
    fn run(cases: Vec<Case>) {
        for case in cases {
            let (mut r, t) = start((case.config)(), case.start);
            let rfc = case.rfc.unwrap_or("-");
            for (i, s) in case.steps.into_iter().enumerate() {
                let at = t + s.after;
                let what = format!("{} (RFC 9568 {rfc}), step {i} {:?}", case.name, s.event);
                let got = r.handle(s.event, at);
                if let Want::Exactly(want) = s.want {
                    assert_eq!(got, want(at), "{what}");
                }
                for check in &s.then {
                    assert!(check.holds(&r, t), "{what}: {check:?} fails");
                }
            }
        }
    }

    fn no_preempt() -> RouterConfig {
        RouterConfig {
            preempt: false,
            ..cfg()
        }
    }

    fn preempt_delay_5s() -> RouterConfig {
        RouterConfig {
            preempt_delay: ms(5_000),
            ..cfg()
        }
    }

    /// Re-armed for the Master_Down_Interval of an advertisement at 1 s (a Backup's answer to
    /// a Master it follows).
    fn follows(at: Instant) -> Vec<Action> {
        vec![set(TimerKind::MasterDown, at + MASTER_DOWN)]
    }

    fn nothing(_: Instant) -> Vec<Action> {
        vec![]
    }

    /// Startup, timers and what a Backup does with what it hears.
    #[test]
    fn backup_cases() {
        use Check::*;
        use Want::*;
        run(vec![
            Case {
                name: "startup_goes_to_backup_and_arms_master_down",
                rfc: Some("§6.4.1"),
                config: cfg,
                start: Start::Fresh,
                steps: vec![
                    step(
                        ms(0),
                        Event::Startup,
                        Exactly(|at| {
                            vec![
                                Action::RemoveVip,
                                Action::StartSyncBackup,
                                set(TimerKind::MasterDown, at + MASTER_DOWN),
                                changed(State::Initialize, State::Backup),
                            ]
                        }),
                        vec![InState(State::Backup)],
                    ),
                    // A second Startup is a no-op.
                    step(ms(1), Event::Startup, Exactly(nothing), vec![]),
                ],
            },
            Case {
                name: "becoming_master_adds_vip_then_arp_then_sync_then_advert",
                rfc: Some("§6.4.2"),
                config: cfg,
                start: Start::Backup,
                steps: vec![step(
                    MASTER_DOWN,
                    Event::MasterDownTimerFired,
                    Exactly(|at| {
                        vec![
                            Action::AddVip,
                            Action::SendGratuitousArp { count: 5 },
                            Action::StartSyncMaster,
                            Action::SendAdvert { priority: 100 },
                            set(TimerKind::Adver, at + ms(1000)),
                            set(TimerKind::Garp, at + ms(1000)),
                            // 1 s adverts: the VIP lives 8 s and is renewed every 2 s.
                            set(TimerKind::VipRefresh, at + ms(2000)),
                            changed(State::Backup, State::Master),
                        ]
                    }),
                    vec![InState(State::Master), ObservedMaster(Some(ME))],
                )],
            },
            Case {
                name: "early_or_stale_timer_events_do_not_act",
                rfc: None,
                config: cfg,
                start: Start::Backup,
                steps: vec![
                    // Early: re-armed for the same deadline, not acted on.
                    step(
                        ms(10),
                        Event::MasterDownTimerFired,
                        Exactly(|at| vec![set(TimerKind::MasterDown, at - ms(10) + MASTER_DOWN)]),
                        vec![InState(State::Backup)],
                    ),
                    // Timers of another state: ignored.
                    step(
                        MASTER_DOWN,
                        Event::AdverTimerFired,
                        Exactly(nothing),
                        vec![],
                    ),
                    step(MASTER_DOWN, Event::GarpTimerFired, Exactly(nothing), vec![]),
                    // Cancelled (shutdown) then a late fire: ignored.
                    step(ms(20), Event::Shutdown, Any, vec![]),
                    step(
                        MASTER_DOWN,
                        Event::MasterDownTimerFired,
                        Exactly(nothing),
                        vec![InState(State::Initialize)],
                    ),
                ],
            },
            Case {
                // Equal priority is accepted too (§6.4.2: "greater than or equal").
                name: "backup_resets_timer_and_learns_the_masters_interval",
                rfc: Some("§6.4.2"),
                config: cfg,
                start: Start::Backup,
                steps: vec![
                    step(
                        ms(500),
                        Event::AdvertReceived {
                            from: HIGHER_IP,
                            advert: advert(150, 50),
                        },
                        // Learned 500 ms: 3 × 500 ms + 156/256 × 500 ms = 1.5 s + 304.6875 ms.
                        Exactly(|at| {
                            vec![set(
                                TimerKind::MasterDown,
                                at + Duration::from_nanos(1_804_687_500),
                            )]
                        }),
                        vec![MasterAdverInt(ms(500)), ObservedMaster(Some(HIGHER_IP))],
                    ),
                    step(ms(501), rx(LOWER_IP, 100), Exactly(follows), vec![]),
                ],
            },
            Case {
                name: "backup_priority_zero_shortens_to_skew_time",
                rfc: Some("§6.4.2"),
                config: cfg,
                start: Start::Backup,
                steps: vec![
                    step(ms(0), rx(HIGHER_IP, 150), Exactly(follows), vec![]),
                    step(
                        ms(300),
                        rx(HIGHER_IP, 0),
                        Exactly(|at| vec![set(TimerKind::MasterDown, at + us(609_375))]),
                        vec![],
                    ),
                ],
            },
            Case {
                name: "backup_with_preempt_discards_lower_priority_then_takes_over",
                rfc: Some("§6.4.2"),
                config: cfg,
                start: Start::Backup,
                steps: vec![
                    step(
                        ms(900),
                        rx(HIGHER_IP, 50),
                        Exactly(nothing),
                        vec![Deadline(TimerKind::MasterDown, Some(MASTER_DOWN))],
                    ),
                    step(
                        MASTER_DOWN,
                        Event::MasterDownTimerFired,
                        Any,
                        vec![InState(State::Master)],
                    ),
                ],
            },
            Case {
                name: "backup_without_preempt_follows_a_lower_master",
                rfc: Some("§6.4.2"),
                config: no_preempt,
                start: Start::Backup,
                steps: vec![step(
                    ms(900),
                    rx(HIGHER_IP, 50),
                    Exactly(follows),
                    vec![Deadline(TimerKind::MasterDown, Some(ms(900) + MASTER_DOWN))],
                )],
            },
            Case {
                // Hearing a higher-priority Master restarts the delay (keepalived semantics).
                name: "preempt_delay_holds_preemption_then_releases_it",
                rfc: None,
                config: preempt_delay_5s,
                start: Start::Backup,
                steps: vec![
                    // Within the delay a lower Master is followed...
                    step(ms(4_900), rx(LOWER_IP, 50), Exactly(follows), vec![]),
                    // ...after it, discarded.
                    step(ms(5_000), rx(LOWER_IP, 50), Exactly(nothing), vec![]),
                    step(ms(5_100), rx(HIGHER_IP, 200), Any, vec![]),
                    step(ms(10_000), rx(LOWER_IP, 50), Exactly(follows), vec![]),
                    step(ms(10_100), rx(LOWER_IP, 50), Exactly(nothing), vec![]),
                ],
            },
            Case {
                name: "shutdown_as_backup_cancels_master_down",
                rfc: Some("§6.4.2"),
                config: cfg,
                start: Start::Backup,
                steps: vec![step(
                    ms(5),
                    Event::Shutdown,
                    Exactly(|_| {
                        vec![
                            cancel(TimerKind::MasterDown),
                            Action::StopSync,
                            changed(State::Backup, State::Initialize),
                        ]
                    }),
                    vec![InState(State::Initialize)],
                )],
            },
            Case {
                name: "priority_change_is_advertised_at_once_by_a_master: a Backup records it",
                rfc: None,
                config: cfg,
                start: Start::Backup,
                steps: vec![step(
                    ms(0),
                    Event::PriorityChanged(Priority(20)),
                    Exactly(nothing),
                    vec![SkewTime(ms(1000) * 236 / 256)],
                )],
            },
            Case {
                name: "ignores_other_vrids_own_echo_and_initialize_state",
                rfc: Some("§7.1"),
                config: cfg,
                start: Start::Backup,
                steps: vec![
                    step(
                        ms(0),
                        Event::AdvertReceived {
                            from: HIGHER_IP,
                            advert: Advertisement::new(52, 200, 100, vec![VIP]).unwrap(),
                        },
                        Exactly(nothing),
                        vec![],
                    ),
                    step(ms(0), rx(ME, 200), Exactly(nothing), vec![]),
                ],
            },
            Case {
                name: "ignores_other_vrids_own_echo_and_initialize_state: in Initialize",
                rfc: None,
                config: cfg,
                start: Start::Fresh,
                steps: vec![step(
                    ms(0),
                    rx(HIGHER_IP, 200),
                    Exactly(nothing),
                    vec![InState(State::Initialize)],
                )],
            },
            Case {
                name: "interface_down_leaves_master_silently_and_up_restarts: startup while down",
                rfc: None,
                config: cfg,
                start: Start::Fresh,
                steps: vec![
                    step(ms(0), Event::InterfaceDown, Any, vec![]),
                    // Startup while the link is down waits for the link.
                    step(ms(0), Event::Startup, Exactly(nothing), vec![]),
                    step(ms(1), Event::InterfaceUp, Any, vec![InState(State::Backup)]),
                ],
            },
        ]);
    }

    /// What a Master does on its timers and with what it hears, and how it leaves.
    #[test]
    fn master_cases() {
        use Check::*;
        use Want::*;
        run(vec![
            Case {
                // The VIP's kernel lifetime is renewed every quarter lifetime while Master, and
                // never outside Master: a renewal timer that fires early is re-armed, one that
                // outlived the Master state does nothing.
                name: "master_renews_the_vip_lifetime_on_its_own_timer",
                rfc: None,
                config: cfg,
                start: Start::Master,
                steps: vec![
                    step(
                        ms(1500),
                        Event::VipRefreshTimerFired,
                        // Early: re-armed, nothing sent.
                        Exactly(|at| vec![set(TimerKind::VipRefresh, at + ms(500))]),
                        vec![
                            Lifetime(8, ms(2000)),
                            Deadline(TimerKind::VipRefresh, Some(ms(2000))),
                        ],
                    ),
                    step(
                        ms(2000),
                        Event::VipRefreshTimerFired,
                        Exactly(|at| {
                            vec![
                                Action::RefreshVip,
                                set(TimerKind::VipRefresh, at + ms(2000)),
                            ]
                        }),
                        vec![],
                    ),
                    // The advertisements go on beside it, unchanged (no RefreshVip among them).
                    step(
                        ms(1000),
                        Event::AdverTimerFired,
                        Exactly(|at| {
                            vec![
                                Action::SendAdvert { priority: 100 },
                                set(TimerKind::Adver, at + ms(1000)),
                            ]
                        }),
                        vec![],
                    ),
                    // Stepping down cancels it; a late fire then does nothing.
                    step(
                        ms(2010),
                        rx(HIGHER_IP, 200),
                        Any,
                        vec![
                            InState(State::Backup),
                            Deadline(TimerKind::VipRefresh, None),
                        ],
                    ),
                    step(
                        ms(4000),
                        Event::VipRefreshTimerFired,
                        Exactly(nothing),
                        vec![],
                    ),
                ],
            },
            Case {
                name: "master_steps_down_for_higher_priority_vip_first_then_sync",
                rfc: Some("§6.4.3"),
                config: cfg,
                start: Start::Master,
                steps: vec![step(
                    ms(10),
                    Event::AdvertReceived {
                        from: LOWER_IP,
                        advert: advert(150, 20),
                    },
                    Exactly(|at| {
                        vec![
                            cancel(TimerKind::Adver),
                            cancel(TimerKind::Garp),
                            cancel(TimerKind::VipRefresh),
                            Action::RemoveVip,
                            Action::StartSyncBackup,
                            // 3 × 200 ms + 156/256 × 200 ms = 721.875 ms
                            set(TimerKind::MasterDown, at + us(721_875)),
                            changed(State::Master, State::Backup),
                        ]
                    }),
                    vec![ObservedMaster(Some(LOWER_IP))],
                )],
            },
            Case {
                // Equal priority from a lower address: we win, discard and assert, and
                // announce the VIP again: a burst now, the repeats from a second on (a
                // neighbour's locktime may ignore the burst after the other side's
                // announcement). Equal priority from a higher address: we lose.
                name: "master_equal_priority_tie_break_by_primary_address",
                rfc: Some("§6.4.3"),
                config: cfg,
                start: Start::Master,
                steps: vec![
                    step(
                        ms(1),
                        rx(LOWER_IP, 100),
                        Exactly(|at| {
                            vec![
                                Action::SendAdvert { priority: 100 },
                                Action::SendGratuitousArp { count: 5 },
                                set(TimerKind::Garp, at + ms(1000)),
                            ]
                        }),
                        vec![],
                    ),
                    // Three repeats after the burst.
                    step(
                        ms(1001),
                        Event::GarpTimerFired,
                        Exactly(|at| {
                            vec![
                                Action::SendGratuitousArp { count: 1 },
                                set(TimerKind::Garp, at + ms(1000)),
                            ]
                        }),
                        vec![],
                    ),
                    step(
                        ms(2001),
                        Event::GarpTimerFired,
                        Exactly(|at| {
                            vec![
                                Action::SendGratuitousArp { count: 1 },
                                set(TimerKind::Garp, at + ms(1000)),
                            ]
                        }),
                        vec![],
                    ),
                    step(
                        ms(3001),
                        Event::GarpTimerFired,
                        Exactly(|at| {
                            vec![
                                Action::SendGratuitousArp { count: 1 },
                                set(TimerKind::Garp, at + ms(10_000)),
                            ]
                        }),
                        vec![InState(State::Master)],
                    ),
                    step(ms(2), rx(HIGHER_IP, 100), Any, vec![InState(State::Backup)]),
                ],
            },
            Case {
                name: "master_answers_priority_zero_with_an_advert_at_once",
                rfc: Some("§6.4.3"),
                config: cfg,
                start: Start::Master,
                steps: vec![step(
                    ms(300),
                    rx(LOWER_IP, 0),
                    Exactly(|at| {
                        vec![
                            Action::SendAdvert { priority: 100 },
                            set(TimerKind::Adver, at + ms(1000)),
                        ]
                    }),
                    vec![InState(State::Master)],
                )],
            },
            Case {
                name: "master_advertises_on_its_timer",
                rfc: Some("§6.4.3"),
                config: cfg,
                start: Start::Master,
                steps: vec![step(
                    ms(1000),
                    Event::AdverTimerFired,
                    Exactly(|at| {
                        vec![
                            Action::SendAdvert { priority: 100 },
                            set(TimerKind::Adver, at + ms(1000)),
                        ]
                    }),
                    vec![],
                )],
            },
            Case {
                name: "gratuitous_arp_refresh_stops_when_leaving_master",
                rfc: None,
                config: cfg,
                start: Start::Master,
                steps: vec![
                    step(ms(1000), Event::GarpTimerFired, Any, vec![]),
                    step(ms(2000), Event::GarpTimerFired, Any, vec![]),
                    step(ms(3000), Event::GarpTimerFired, Any, vec![]),
                    step(
                        ms(13_000),
                        Event::GarpTimerFired,
                        Any,
                        vec![Deadline(TimerKind::Garp, Some(ms(23_000)))],
                    ),
                    step(
                        ms(13_500),
                        Event::Shutdown,
                        Any,
                        vec![Deadline(TimerKind::Garp, None)],
                    ),
                ],
            },
            Case {
                // Startup again goes through Backup, as after boot.
                name: "shutdown_as_master_removes_vip_then_sends_priority_zero",
                rfc: Some("§6.4.3"),
                config: cfg,
                start: Start::Master,
                steps: vec![
                    step(
                        ms(5),
                        Event::Shutdown,
                        Exactly(|_| {
                            vec![
                                cancel(TimerKind::Adver),
                                cancel(TimerKind::Garp),
                                cancel(TimerKind::VipRefresh),
                                Action::RemoveVip,
                                Action::SendAdvert { priority: 0 },
                                Action::StopSync,
                                changed(State::Master, State::Initialize),
                            ]
                        }),
                        vec![
                            Deadline(TimerKind::MasterDown, None),
                            Deadline(TimerKind::Adver, None),
                            Deadline(TimerKind::Garp, None),
                        ],
                    ),
                    step(ms(10), Event::Startup, Any, vec![InState(State::Backup)]),
                ],
            },
            Case {
                name: "priority_change_is_advertised_at_once_by_a_master",
                rfc: None,
                config: cfg,
                start: Start::Master,
                steps: vec![
                    step(
                        ms(7),
                        Event::PriorityChanged(Priority(20)),
                        Exactly(|at| {
                            vec![
                                Action::SendAdvert { priority: 20 },
                                set(TimerKind::Adver, at + ms(1000)),
                            ]
                        }),
                        vec![],
                    ),
                    step(
                        ms(8),
                        Event::PriorityChanged(Priority(20)),
                        Exactly(nothing),
                        vec![],
                    ),
                ],
            },
            Case {
                // Down: no priority 0 on the wire (it cannot be sent), the VIP before the sync
                // daemon. Up: through Backup, as after boot.
                name: "interface_down_leaves_master_silently_and_up_restarts",
                rfc: None,
                config: cfg,
                start: Start::Master,
                steps: vec![
                    step(
                        ms(1),
                        Event::InterfaceDown,
                        Exactly(|_| {
                            vec![
                                cancel(TimerKind::Adver),
                                cancel(TimerKind::Garp),
                                cancel(TimerKind::VipRefresh),
                                Action::RemoveVip,
                                Action::StopSync,
                                changed(State::Master, State::Initialize),
                            ]
                        }),
                        vec![InState(State::Initialize)],
                    ),
                    step(
                        ms(2),
                        Event::InterfaceUp,
                        Exactly(|at| {
                            vec![
                                Action::RemoveVip,
                                Action::StartSyncBackup,
                                set(TimerKind::MasterDown, at + MASTER_DOWN),
                                changed(State::Initialize, State::Backup),
                            ]
                        }),
                        vec![InState(State::Backup)],
                    ),
                ],
            },
        ]);
    }

    /// A case of the timer formulas of §6.1.
    struct TimerCase {
        name: &'static str,
        rfc: &'static str,
        priority: u8,
        adver_ms: u64,
        missed_adverts: u8,
        skew: Duration,
        master_down: Duration,
    }

    #[test]
    fn timer_formula_cases() {
        let cases = [
            TimerCase {
                // Skew_Time = 156/256 s = 609.375 ms; Master_Down = 3.609375 s.
                name: "rfc_timer_formulas: priority 100, 1 s",
                rfc: "§6.1",
                priority: 100,
                adver_ms: 1000,
                missed_adverts: 3,
                skew: us(609_375),
                master_down: MASTER_DOWN,
            },
            TimerCase {
                // Skew 2/256 × 100 ms = 781.25 µs.
                name: "rfc_timer_formulas: priority 254, 100 ms",
                rfc: "§6.1",
                priority: 254,
                adver_ms: 100,
                missed_adverts: 3,
                skew: Duration::from_nanos(781_250),
                master_down: Duration::from_nanos(300_781_250),
            },
            TimerCase {
                name: "missed_adverts_scales_master_down_interval",
                rfc: "§6.1",
                priority: 100,
                adver_ms: 1000,
                missed_adverts: 5,
                skew: us(609_375),
                master_down: us(5_609_375),
            },
        ];
        for c in cases {
            let r = Router::new(RouterConfig {
                priority: Priority::new(c.priority).unwrap(),
                adver_int: AdverInterval::from_millis(c.adver_ms).unwrap(),
                missed_adverts: c.missed_adverts,
                ..cfg()
            })
            .unwrap();
            let got = (r.skew_time(), r.master_down_interval());
            assert_eq!(got, (c.skew, c.master_down), "{} ({})", c.name, c.rfc);
        }
    }

    /// A value refused or accepted where it enters the typed configuration: what the
    /// constructor answered (the accepted value as the wire carries it) or its refusal.
    struct ConfigCase {
        name: &'static str,
        rfc: Option<&'static str>,
        got: fn() -> Result<u32, ConfigError>,
        want: Result<u32, ConfigError>,
    }

    /// [`Router::new`] of the default configuration changed by `f`, answering its VRID.
    fn router_with(f: fn(&mut RouterConfig)) -> Result<u32, ConfigError> {
        let mut c = cfg();
        f(&mut c);
        Router::new(c).map(|r| r.config().vrid.into())
    }

    #[test]
    fn config_is_validated() {
        use ConfigError::*;
        let cases = [
            ConfigCase {
                name: "priority 0 means leaving",
                rfc: Some("§5.2.4"),
                got: || Priority::new(0).map(|p| p.get().into()),
                want: Err(BadPriority(0)),
            },
            ConfigCase {
                name: "priority 255 is the address owner's",
                rfc: Some("§5.2.4"),
                got: || Priority::new(255).map(|p| p.get().into()),
                want: Err(BadPriority(255)),
            },
            ConfigCase {
                name: "priority 254 is the highest a backup router takes",
                rfc: Some("§5.2.4"),
                got: || Priority::new(254).map(|p| p.get().into()),
                want: Ok(254),
            },
            ConfigCase {
                name: "an interval that is no whole centisecond",
                rfc: Some("§5.2.7"),
                got: || AdverInterval::from_millis(105).map(|i| i.centis().into()),
                want: Err(BadInterval(105)),
            },
            ConfigCase {
                name: "an interval of zero",
                rfc: Some("§5.2.7"),
                got: || AdverInterval::from_millis(0).map(|i| i.centis().into()),
                want: Err(BadInterval(0)),
            },
            ConfigCase {
                name: "an interval past the 12-bit field",
                rfc: Some("§5.2.7"),
                got: || AdverInterval::from_millis(40_960).map(|i| i.centis().into()),
                want: Err(BadInterval(40_960)),
            },
            ConfigCase {
                name: "the longest interval the field carries",
                rfc: Some("§5.2.7"),
                got: || AdverInterval::from_millis(40_950).map(|i| i.centis().into()),
                want: Ok(4095),
            },
            ConfigCase {
                name: "a VIP that is the node's own address",
                rfc: Some("§5.2.4"),
                got: || router_with(|c| c.vips = vec![ME]),
                want: Err(VipIsOwnAddress(ME)),
            },
            ConfigCase {
                name: "a VIP listed twice",
                rfc: None,
                got: || router_with(|c| c.vips = vec![VIP, VIP]),
                want: Err(DuplicateVip(VIP)),
            },
            ConfigCase {
                name: "no VIPs",
                rfc: None,
                got: || router_with(|c| c.vips = vec![]),
                want: Err(NoVips),
            },
            ConfigCase {
                name: "zero missed advertisements",
                rfc: None,
                got: || router_with(|c| c.missed_adverts = 0),
                want: Err(BadMissedAdverts),
            },
            ConfigCase {
                name: "VRID 0",
                rfc: Some("§5.2.3"),
                got: || router_with(|c| c.vrid = 0),
                want: Err(BadVrid),
            },
            ConfigCase {
                name: "an empty gratuitous ARP burst",
                rfc: None,
                got: || router_with(|c| c.garp.burst = 0),
                want: Err(BadGarpBurst),
            },
        ];
        for c in cases {
            let rfc = c.rfc.unwrap_or("-");
            assert_eq!((c.got)(), c.want, "config_is_validated: {} ({rfc})", c.name);
        }
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

    /// The gratuitous ARP schedule of a new Master: which rounds follow the burst.
    struct GarpCase {
        name: &'static str,
        config: fn() -> RouterConfig,
        /// How many rounds to fire at most.
        rounds: usize,
        /// Each round's offset from becoming Master and the ARPs it sent.
        want: &'static [(u64, u8)],
    }

    #[test]
    fn gratuitous_arp_cases() {
        let cases = [
            GarpCase {
                name: "gratuitous_arp_burst_then_three_repeats_then_one_every_ten_seconds",
                config: cfg,
                rounds: 6,
                want: &[
                    (1000, 1),
                    (2000, 1),
                    (3000, 1),
                    (13_000, 1),
                    (23_000, 1),
                    (33_000, 1),
                ],
            },
            GarpCase {
                // Three repeats, then nothing.
                name: "gratuitous_arp_stops_after_the_repeats_without_a_refresh",
                config: || {
                    let mut c = cfg();
                    c.garp.refresh = None;
                    c
                },
                rounds: 10,
                want: &[(1000, 1), (2000, 1), (3000, 1)],
            },
        ];
        for c in cases {
            let (mut r, t) = start((c.config)(), Start::Master);
            let want: Vec<(Instant, u8)> = c.want.iter().map(|&(at, n)| (t + ms(at), n)).collect();
            assert_eq!(garp_rounds(&mut r, c.rounds), want, "{}", c.name);
        }
    }

    #[test]
    fn lower_priority_burst_is_due_at_most_once_per_gap() {
        let t = Instant::now();
        let gap = ms(1000);
        let cases = [
            ("none since becoming Master", None, t, true),
            ("100 ms after the last", Some(t), t + ms(100), false),
            ("999 ms after the last", Some(t), t + ms(999), false),
            ("a full gap after the last", Some(t), t + gap, true),
            (
                "a clock that went back counts as no time",
                Some(t + ms(5)),
                t,
                false,
            ),
        ];
        for (name, last, now, want) in cases {
            assert_eq!(lower_priority_burst_due(last, now, gap), want, "{name}");
        }
    }

    /// RFC 9568 §6.4.3: every lower-priority advertisement gets ours in reply; the gratuitous
    /// ARP burst (and its repeats) only once per `lower_priority_gap`.
    #[test]
    fn a_stream_of_lower_priority_adverts_gets_one_burst_per_second() {
        let (mut r, t) = start(cfg(), Start::Master);
        let mut bursts = Vec::new();
        let mut adverts = 0;
        // 3 s of a lower-priority advertisement every 100 ms.
        for i in 1..=30u64 {
            let at = t + ms(100 * i);
            for a in r.handle(rx(LOWER_IP, 50), at) {
                match a {
                    Action::SendAdvert { .. } => adverts += 1,
                    Action::SendGratuitousArp { count } => bursts.push((at - t, count)),
                    _ => {}
                }
            }
        }
        assert_eq!(adverts, 30, "each one is answered");
        assert_eq!(
            bursts,
            vec![(ms(100), 5), (ms(1100), 5), (ms(2100), 5)],
            "one burst per second"
        );
        assert_eq!(r.state(), State::Master);
    }
}
