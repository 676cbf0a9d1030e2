//! The VRRP state machine of RFC 5798 section 6.4 (v3) and RFC 3768 section 6.4 (v2).
//!
//! Pure: no sockets, no clocks. Time is a [`Duration`] since an arbitrary origin chosen by the
//! driver, passed into every call; timers are deadlines the driver arms on request.

use std::net::IpAddr;
use std::time::Duration;

use crate::packet::Version;

/// Protocol state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
        }
    }
}

/// Which of the two RFC timers a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// Adver_Timer, running in Master.
    Advert,
    /// Master_Down_Timer, running in Backup.
    MasterDown,
}

/// Static and runtime-changeable parameters of one virtual router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    pub version: Version,
    /// 1..=255; 255 means this router owns the addresses.
    pub priority: u8,
    /// Advertisement_Interval in centiseconds (v2: a multiple of 100).
    pub advert_interval_cs: u16,
    pub preempt: bool,
    /// keepalived's `preempt_delay`: how long a lower-priority master must have been seen
    /// before this router preempts it.
    pub preempt_delay: Duration,
    /// Primary address used for the equal-priority tie-break.
    pub primary_addr: IpAddr,
    /// Member of a sync group: the group decides when a Backup may become Master.
    pub grouped: bool,
}

/// Inputs to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Startup,
    Shutdown,
    /// A validated advertisement from a peer.
    Advert {
        priority: u8,
        interval_cs: u16,
        src: IpAddr,
    },
    /// The last armed deadline was reached (stale deliveries are ignored).
    Timer,
    /// Runtime priority change (e.g. health of the real servers).
    SetPriority(u8),
    /// Sync-group decision: move to this state together with the other members.
    GroupForce(State),
}

/// Outputs the driver carries out, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SendAdvert {
        priority: u8,
    },
    ArmTimer {
        kind: TimerKind,
        at: Duration,
    },
    CancelTimer,
    /// Add the VIPs and announce them (gratuitous ARP / unsolicited NA).
    BecomeMaster,
    /// Remove the VIPs.
    BecomeBackup,
    /// Back in Initialize after shutdown; remove the VIPs.
    Stopped,
    /// Grouped only: the Master_Down_Timer expired; the group may now promote this member.
    WantMaster,
}

/// Skew_Time: RFC 3768 `(256 - Priority) / 256` seconds; RFC 5798
/// `((256 - Priority) * Master_Adver_Interval) / 256`.
pub fn skew_time(version: Version, priority: u8, master_adver_interval_cs: u16) -> Duration {
    let weight = 256 - u64::from(priority);
    let interval_us = match version {
        Version::V2 => 1_000_000,
        Version::V3 => u64::from(master_adver_interval_cs) * 10_000,
    };
    Duration::from_micros(weight * interval_us / 256)
}

/// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time`.
pub fn master_down_interval(
    version: Version,
    priority: u8,
    master_adver_interval_cs: u16,
) -> Duration {
    Duration::from_micros(u64::from(master_adver_interval_cs) * 30_000)
        + skew_time(version, priority, master_adver_interval_cs)
}

/// Advertisement interval as a duration.
pub fn interval(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

/// One virtual router.
#[derive(Debug, Clone)]
pub struct Machine {
    cfg: MachineConfig,
    state: State,
    master_adver_interval_cs: u16,
    deadline: Option<(TimerKind, Duration)>,
    lower_master_since: Option<Duration>,
    wants_master: bool,
}

impl Machine {
    pub fn new(mut cfg: MachineConfig) -> Machine {
        // Priority 0 is reserved for resignation.
        cfg.priority = cfg.priority.max(1);
        let mai = cfg.advert_interval_cs;
        Machine {
            cfg,
            state: State::Initialize,
            master_adver_interval_cs: mai,
            deadline: None,
            lower_master_since: None,
            wants_master: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn priority(&self) -> u8 {
        self.cfg.priority
    }
    pub fn config(&self) -> &MachineConfig {
        &self.cfg
    }
    pub fn master_adver_interval_cs(&self) -> u16 {
        self.master_adver_interval_cs
    }
    pub fn deadline(&self) -> Option<(TimerKind, Duration)> {
        self.deadline
    }
    pub fn wants_master(&self) -> bool {
        self.wants_master
    }

    fn mdi(&self) -> Duration {
        master_down_interval(
            self.cfg.version,
            self.cfg.priority,
            self.master_adver_interval_cs,
        )
    }
    fn skew(&self) -> Duration {
        skew_time(
            self.cfg.version,
            self.cfg.priority,
            self.master_adver_interval_cs,
        )
    }

    fn arm(&mut self, out: &mut Vec<Action>, kind: TimerKind, at: Duration) {
        self.deadline = Some((kind, at));
        out.push(Action::ArmTimer { kind, at });
    }

    fn cancel(&mut self, out: &mut Vec<Action>) {
        self.deadline = None;
        out.push(Action::CancelTimer);
    }

    fn enter_master(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.state = State::Master;
        self.wants_master = false;
        self.lower_master_since = None;
        out.push(Action::SendAdvert {
            priority: self.cfg.priority,
        });
        out.push(Action::BecomeMaster);
        let at = now + interval(self.cfg.advert_interval_cs);
        self.arm(out, TimerKind::Advert, at);
    }

    fn enter_backup(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.state = State::Backup;
        self.wants_master = false;
        out.push(Action::BecomeBackup);
        let at = now + self.mdi();
        self.arm(out, TimerKind::MasterDown, at);
    }

    /// Feeds one event; returns the actions to perform, in order.
    pub fn handle(&mut self, event: Event, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.state, event) {
            (_, Event::SetPriority(p)) => {
                self.cfg.priority = p.max(1);
            }
            (State::Initialize, Event::Startup) => {
                self.master_adver_interval_cs = self.cfg.advert_interval_cs;
                if self.cfg.priority == 255 {
                    self.enter_master(now, &mut out);
                } else {
                    self.enter_backup(now, &mut out);
                }
            }
            (State::Initialize, _) => {}
            (State::Backup, Event::Shutdown) => {
                self.cancel(&mut out);
                self.state = State::Initialize;
                self.wants_master = false;
                out.push(Action::Stopped);
            }
            (State::Master, Event::Shutdown) => {
                self.cancel(&mut out);
                out.push(Action::SendAdvert { priority: 0 });
                self.state = State::Initialize;
                out.push(Action::Stopped);
            }
            (_, Event::Startup) => {}
            (State::Backup, Event::Timer) => {
                if !self.timer_due(TimerKind::MasterDown, now) {
                    return out;
                }
                if self.cfg.grouped {
                    // The group promotes all members together; until then stay Backup.
                    self.deadline = None;
                    if !self.wants_master {
                        self.wants_master = true;
                        out.push(Action::WantMaster);
                    }
                } else {
                    self.enter_master(now, &mut out);
                }
            }
            (State::Master, Event::Timer) => {
                if !self.timer_due(TimerKind::Advert, now) {
                    return out;
                }
                out.push(Action::SendAdvert {
                    priority: self.cfg.priority,
                });
                let at = now + interval(self.cfg.advert_interval_cs);
                self.arm(&mut out, TimerKind::Advert, at);
            }
            (
                State::Backup,
                Event::Advert {
                    priority,
                    interval_cs,
                    ..
                },
            ) => self.backup_advert(priority, interval_cs, now, &mut out),
            (
                State::Master,
                Event::Advert {
                    priority,
                    interval_cs,
                    src,
                },
            ) => {
                if priority == 0 {
                    // A resigning peer: assert mastership right away.
                    out.push(Action::SendAdvert {
                        priority: self.cfg.priority,
                    });
                    let at = now + interval(self.cfg.advert_interval_cs);
                    self.arm(&mut out, TimerKind::Advert, at);
                } else if priority > self.cfg.priority
                    || (priority == self.cfg.priority && src > self.cfg.primary_addr)
                {
                    if self.cfg.version == Version::V3 {
                        self.master_adver_interval_cs = interval_cs;
                    }
                    self.enter_backup(now, &mut out);
                }
            }
            (State::Backup, Event::GroupForce(State::Master)) => {
                if self.cfg.grouped {
                    self.enter_master(now, &mut out);
                }
            }
            (State::Master, Event::GroupForce(State::Backup)) => {
                if self.cfg.grouped {
                    self.enter_backup(now, &mut out);
                }
            }
            (_, Event::GroupForce(_)) => {}
        }
        out
    }

    fn timer_due(&self, kind: TimerKind, now: Duration) -> bool {
        matches!(self.deadline, Some((k, at)) if k == kind && now >= at)
    }

    fn backup_advert(
        &mut self,
        priority: u8,
        interval_cs: u16,
        now: Duration,
        out: &mut Vec<Action>,
    ) {
        if priority == 0 {
            // The master resigned: take over after Skew_Time only.
            self.wants_master = false;
            let at = now + self.skew();
            self.arm(out, TimerKind::MasterDown, at);
            return;
        }
        let lower = priority < self.cfg.priority;
        if lower && self.cfg.preempt {
            let since = *self.lower_master_since.get_or_insert(now);
            if now >= since + self.cfg.preempt_delay {
                // Discard: the Master_Down_Timer keeps running and we preempt when it fires.
                return;
            }
        } else {
            self.lower_master_since = None;
        }
        if self.cfg.version == Version::V3 {
            self.master_adver_interval_cs = interval_cs;
        }
        self.wants_master = false;
        let at = now + self.mdi();
        self.arm(out, TimerKind::MasterDown, at);
    }
}

/// Sync-group decision (keepalived `vrrp_sync_group`-like): given the members after one of
/// them (`changed`) produced `actions`, returns forced events for the other members.
///
/// * a member leaving Master for Backup pulls every other Master member down;
/// * a member that became Master (priority-255 owner) pulls the others up;
/// * when every member is Master or wants to be, the wanting ones are promoted.
pub fn plan_group(
    members: &[(State, bool)],
    changed: usize,
    actions: &[Action],
) -> Vec<(usize, Event)> {
    let mut forced = Vec::new();
    let others = members.iter().enumerate().filter(|(i, _)| *i != changed);
    if actions.contains(&Action::BecomeBackup) {
        for (i, (state, _)) in others {
            if *state == State::Master {
                forced.push((i, Event::GroupForce(State::Backup)));
            }
        }
        return forced;
    }
    if actions.contains(&Action::BecomeMaster) {
        for (i, (state, _)) in others {
            if *state == State::Backup {
                forced.push((i, Event::GroupForce(State::Master)));
            }
        }
        return forced;
    }
    let all_ready = members
        .iter()
        .all(|(state, wants)| *state == State::Master || (*state == State::Backup && *wants));
    if all_ready {
        for (i, (state, _)) in members.iter().enumerate() {
            if *state == State::Backup {
                forced.push((i, Event::GroupForce(State::Master)));
            }
        }
    }
    forced
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn addr(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn cfg(version: Version, priority: u8, interval_cs: u16) -> MachineConfig {
        MachineConfig {
            version,
            priority,
            advert_interval_cs: interval_cs,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary_addr: addr(2),
            grouped: false,
        }
    }

    fn advert(priority: u8, interval_cs: u16, last: u8) -> Event {
        Event::Advert {
            priority,
            interval_cs,
            src: addr(last),
        }
    }

    fn started(c: MachineConfig) -> Machine {
        let mut m = Machine::new(c);
        m.handle(Event::Startup, Duration::ZERO);
        m
    }

    fn master(c: MachineConfig) -> Machine {
        let mut m = started(c);
        let (_, at) = m.deadline().unwrap();
        m.handle(Event::Timer, at);
        assert_eq!(m.state(), State::Master);
        m
    }

    #[test]
    fn timers_are_rfc_values() {
        // v3, 1 s, priority 100: skew = 156/256 * 1 s = 609.375 ms
        assert_eq!(
            skew_time(Version::V3, 100, 100),
            Duration::from_micros(609_375)
        );
        assert_eq!(
            master_down_interval(Version::V3, 100, 100),
            Duration::from_micros(3_609_375)
        );
        // v3, 100 ms: everything scales
        assert_eq!(
            master_down_interval(Version::V3, 100, 10),
            Duration::from_micros(360_937)
        );
        // v2: skew in seconds, independent of the advert interval
        assert_eq!(
            skew_time(Version::V2, 100, 300),
            Duration::from_micros(609_375)
        );
        assert_eq!(
            master_down_interval(Version::V2, 100, 300),
            Duration::from_micros(9_609_375)
        );
        // higher priority, shorter skew
        assert!(skew_time(Version::V3, 254, 100) < skew_time(Version::V3, 1, 100));
        assert_eq!(
            skew_time(Version::V3, 255, 100),
            Duration::from_micros(3_906)
        );
    }

    /// One row per RFC transition, run for both versions.
    #[test]
    fn rfc_transition_table() {
        struct Row {
            name: &'static str,
            setup: fn(MachineConfig) -> Machine,
            event: Event,
            expect_state: State,
            expect_actions: fn(&[Action]) -> bool,
        }
        let rows = [
            Row {
                name: "init: startup, priority < 255 -> backup",
                setup: |c| Machine::new(c),
                event: Event::Startup,
                expect_state: State::Backup,
                expect_actions: |a| {
                    matches!(
                        a,
                        [
                            Action::BecomeBackup,
                            Action::ArmTimer {
                                kind: TimerKind::MasterDown,
                                ..
                            }
                        ]
                    )
                },
            },
            Row {
                name: "init: startup, owner 255 -> master, advert first",
                setup: |mut c| {
                    c.priority = 255;
                    Machine::new(c)
                },
                event: Event::Startup,
                expect_state: State::Master,
                expect_actions: |a| {
                    matches!(
                        a,
                        [
                            Action::SendAdvert { priority: 255 },
                            Action::BecomeMaster,
                            Action::ArmTimer {
                                kind: TimerKind::Advert,
                                ..
                            }
                        ]
                    )
                },
            },
            Row {
                name: "backup: shutdown -> initialize, no advert",
                setup: started,
                event: Event::Shutdown,
                expect_state: State::Initialize,
                expect_actions: |a| matches!(a, [Action::CancelTimer, Action::Stopped]),
            },
            Row {
                name: "backup: master down timer -> master",
                setup: started,
                event: Event::Timer,
                expect_state: State::Master,
                expect_actions: |a| matches!(a.first(), Some(Action::SendAdvert { priority: 100 })),
            },
            Row {
                name: "backup: higher priority advert resets the down timer",
                setup: started,
                event: advert(200, 100, 1),
                expect_state: State::Backup,
                expect_actions: |a| {
                    matches!(
                        a,
                        [Action::ArmTimer {
                            kind: TimerKind::MasterDown,
                            ..
                        }]
                    )
                },
            },
            Row {
                name: "backup, preempt: lower priority advert is discarded",
                setup: started,
                event: advert(50, 100, 1),
                expect_state: State::Backup,
                expect_actions: |a| a.is_empty(),
            },
            Row {
                name: "backup, no preempt: lower priority advert resets the timer",
                setup: |mut c| {
                    c.preempt = false;
                    started(c)
                },
                event: advert(50, 100, 1),
                expect_state: State::Backup,
                expect_actions: |a| {
                    matches!(
                        a,
                        [Action::ArmTimer {
                            kind: TimerKind::MasterDown,
                            ..
                        }]
                    )
                },
            },
            Row {
                name: "backup: priority 0 -> down timer = skew",
                setup: started,
                event: advert(0, 100, 1),
                expect_state: State::Backup,
                expect_actions: |a| {
                    matches!(
                        a,
                        [Action::ArmTimer {
                            kind: TimerKind::MasterDown,
                            ..
                        }]
                    )
                },
            },
            Row {
                name: "master: adver timer -> advert and re-arm",
                setup: master,
                event: Event::Timer,
                expect_state: State::Master,
                expect_actions: |a| {
                    matches!(
                        a,
                        [
                            Action::SendAdvert { priority: 100 },
                            Action::ArmTimer {
                                kind: TimerKind::Advert,
                                ..
                            }
                        ]
                    )
                },
            },
            Row {
                name: "master: shutdown sends priority 0",
                setup: master,
                event: Event::Shutdown,
                expect_state: State::Initialize,
                expect_actions: |a| {
                    matches!(
                        a,
                        [
                            Action::CancelTimer,
                            Action::SendAdvert { priority: 0 },
                            Action::Stopped
                        ]
                    )
                },
            },
            Row {
                name: "master: priority 0 advert -> advert immediately",
                setup: master,
                event: advert(0, 100, 1),
                expect_state: State::Master,
                expect_actions: |a| matches!(a.first(), Some(Action::SendAdvert { priority: 100 })),
            },
            Row {
                name: "master: higher priority -> backup",
                setup: master,
                event: advert(150, 100, 1),
                expect_state: State::Backup,
                expect_actions: |a| {
                    matches!(
                        a,
                        [
                            Action::BecomeBackup,
                            Action::ArmTimer {
                                kind: TimerKind::MasterDown,
                                ..
                            }
                        ]
                    )
                },
            },
            Row {
                name: "master: equal priority, higher address -> backup",
                setup: master,
                event: advert(100, 100, 3),
                expect_state: State::Backup,
                expect_actions: |a| a.contains(&Action::BecomeBackup),
            },
            Row {
                name: "master: equal priority, lower address -> stay master",
                setup: master,
                event: advert(100, 100, 1),
                expect_state: State::Master,
                expect_actions: |a| a.is_empty(),
            },
            Row {
                name: "master: lower priority -> discard",
                setup: master,
                event: advert(50, 100, 3),
                expect_state: State::Master,
                expect_actions: |a| a.is_empty(),
            },
            Row {
                name: "initialize ignores adverts",
                setup: |c| Machine::new(c),
                event: advert(200, 100, 1),
                expect_state: State::Initialize,
                expect_actions: |a| a.is_empty(),
            },
        ];
        for version in [Version::V2, Version::V3] {
            for row in &rows {
                let mut m = (row.setup)(cfg(version, 100, 100));
                let now = m.deadline().map(|(_, at)| at).unwrap_or(MS(5));
                let actions = m.handle(row.event, now);
                assert_eq!(
                    m.state(),
                    row.expect_state,
                    "{version:?} {}: state",
                    row.name
                );
                assert!(
                    (row.expect_actions)(&actions),
                    "{version:?} {}: actions {actions:?}",
                    row.name
                );
            }
        }
    }

    #[test]
    fn backup_takes_over_exactly_after_master_down_interval() {
        for version in [Version::V2, Version::V3] {
            let mut m = started(cfg(version, 100, 100));
            m.handle(advert(200, 100, 1), MS(1000));
            let mdi = master_down_interval(version, 100, 100);
            assert_eq!(m.deadline(), Some((TimerKind::MasterDown, MS(1000) + mdi)));
            // a stale or early timer delivery does nothing
            assert!(m.handle(Event::Timer, MS(1000) + mdi - MS(1)).is_empty());
            assert_eq!(m.state(), State::Backup);
            m.handle(Event::Timer, MS(1000) + mdi);
            assert_eq!(m.state(), State::Master);
        }
    }

    #[test]
    fn resignation_takes_over_after_skew_time() {
        let mut m = started(cfg(Version::V3, 100, 10));
        m.handle(advert(200, 10, 1), MS(100));
        m.handle(advert(0, 10, 1), MS(150));
        let skew = skew_time(Version::V3, 100, 10);
        assert_eq!(m.deadline(), Some((TimerKind::MasterDown, MS(150) + skew)));
        m.handle(Event::Timer, MS(150) + skew);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn v3_backup_adopts_master_interval_v2_does_not() {
        let mut m = started(cfg(Version::V3, 100, 100));
        m.handle(advert(200, 10, 1), MS(0));
        assert_eq!(m.master_adver_interval_cs(), 10);
        assert_eq!(
            m.deadline(),
            Some((
                TimerKind::MasterDown,
                master_down_interval(Version::V3, 100, 10)
            ))
        );
        // a master adopts the new master's interval when stepping down
        let mut m = master(cfg(Version::V3, 100, 100));
        let t = m.deadline().unwrap().1;
        m.handle(advert(200, 25, 1), t);
        assert_eq!(m.master_adver_interval_cs(), 25);
        // its own adverts keep the configured interval when it is master again
        let (_, at) = m.deadline().unwrap();
        let a = m.handle(Event::Timer, at);
        assert!(
            matches!(a.last(), Some(Action::ArmTimer { kind: TimerKind::Advert, at: x }) if *x == at + MS(1000))
        );

        let mut m = started(cfg(Version::V2, 100, 100));
        m.handle(advert(200, 300, 1), MS(0));
        assert_eq!(m.master_adver_interval_cs(), 100);
    }

    #[test]
    fn preempt_delay_holds_back_preemption() {
        let mut c = cfg(Version::V3, 150, 100);
        c.preempt_delay = MS(5000);
        let mut m = started(c);
        // lower master seen from t=0: within the delay the timer is reset like nopreempt
        for t in (0..5000).step_by(1000) {
            let a = m.handle(advert(100, 100, 1), MS(t));
            assert!(!a.is_empty(), "t={t}");
        }
        // after the delay adverts are discarded, so the down timer fires
        assert!(m.handle(advert(100, 100, 1), MS(5000)).is_empty());
        let (_, at) = m.deadline().unwrap();
        m.handle(Event::Timer, at);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn nopreempt_higher_backup_never_takes_over_live_master() {
        let mut c = cfg(Version::V2, 200, 100);
        c.preempt = false;
        let mut m = started(c);
        for t in 0..20 {
            m.handle(advert(100, 100, 1), MS(t * 1000));
            assert!(m.handle(Event::Timer, MS(t * 1000 + 500)).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn runtime_priority_change() {
        // raise a backup above the master: it preempts at the next down-timer expiry
        let mut m = started(cfg(Version::V3, 100, 100));
        m.handle(advert(150, 100, 1), MS(0));
        m.handle(Event::SetPriority(200), MS(10));
        assert_eq!(m.priority(), 200);
        assert!(m.handle(advert(150, 100, 1), MS(1000)).is_empty());
        let (_, at) = m.deadline().unwrap();
        m.handle(Event::Timer, at);
        assert_eq!(m.state(), State::Master);
        // lower a master: its next advert carries the new priority
        let (_, at) = m.deadline().unwrap();
        m.handle(Event::SetPriority(10), at);
        assert_eq!(
            m.handle(Event::Timer, at)[0],
            Action::SendAdvert { priority: 10 }
        );
        // priority 0 is reserved
        m.handle(Event::SetPriority(0), at);
        assert_eq!(m.priority(), 1);
    }

    #[test]
    fn grouped_member_waits_for_the_group() {
        let mut c = cfg(Version::V3, 100, 10);
        c.grouped = true;
        let mut m = started(c);
        let (_, at) = m.deadline().unwrap();
        assert_eq!(m.handle(Event::Timer, at), vec![Action::WantMaster]);
        assert_eq!(m.state(), State::Backup);
        assert!(m.wants_master());
        // an advert clears the wish
        m.handle(advert(200, 10, 1), at + MS(1));
        assert!(!m.wants_master());
        let a = m.handle(Event::GroupForce(State::Master), at + MS(2));
        assert!(a.contains(&Action::BecomeMaster));
        let a = m.handle(Event::GroupForce(State::Backup), at + MS(3));
        assert!(a.contains(&Action::BecomeBackup));
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn group_planning() {
        let b = (State::Backup, false);
        let bw = (State::Backup, true);
        let mm = (State::Master, false);
        // one member stepped down: the other masters follow
        assert_eq!(
            plan_group(&[b, mm, mm], 0, &[Action::BecomeBackup]),
            vec![
                (1, Event::GroupForce(State::Backup)),
                (2, Event::GroupForce(State::Backup))
            ]
        );
        // not all want master yet: nothing
        assert!(plan_group(&[bw, b], 0, &[Action::WantMaster]).is_empty());
        // all want: all promoted
        assert_eq!(
            plan_group(&[bw, bw], 1, &[Action::WantMaster]),
            vec![
                (0, Event::GroupForce(State::Master)),
                (1, Event::GroupForce(State::Master))
            ]
        );
        // an owner became master: pull the others up
        assert_eq!(
            plan_group(&[mm, b], 0, &[Action::BecomeMaster]),
            vec![(1, Event::GroupForce(State::Master))]
        );
    }

    #[test]
    fn ungrouped_machine_ignores_group_force() {
        let mut m = started(cfg(Version::V2, 100, 100));
        assert!(m.handle(Event::GroupForce(State::Master), MS(1)).is_empty());
        assert_eq!(m.state(), State::Backup);
    }

    /// Two routers on a loss-free LAN, simulated event by event: adverts are delivered to the
    /// peer instantly, timers fire at their deadlines.
    fn simulate(
        version: Version,
        prios: [u8; 2],
        starts: [u64; 2],
        interval_cs: u16,
        horizon_ms: u64,
    ) -> [Machine; 2] {
        let mut ms = [
            Machine::new(MachineConfig {
                primary_addr: addr(1),
                ..cfg(version, prios[0], interval_cs)
            }),
            Machine::new(MachineConfig {
                primary_addr: addr(2),
                ..cfg(version, prios[1], interval_cs)
            }),
        ];
        let mut started = [false, false];
        loop {
            // next event: a pending startup or the earliest deadline
            let mut next: Option<(Duration, usize, Event)> = None;
            for i in 0..2 {
                let cand = if !started[i] {
                    Some((MS(starts[i]), Event::Startup))
                } else {
                    ms[i].deadline().map(|(_, at)| (at, Event::Timer))
                };
                if let Some((at, ev)) = cand
                    && next.is_none_or(|(t, _, _)| at < t)
                {
                    next = Some((at, i, ev));
                }
            }
            let Some((now, i, ev)) = next else { break };
            if now > MS(horizon_ms) {
                break;
            }
            if ev == Event::Startup {
                started[i] = true;
            }
            let actions = ms[i].handle(ev, now);
            for a in actions {
                if let Action::SendAdvert { priority } = a {
                    let peer = 1 - i;
                    let src = ms[i].config().primary_addr;
                    let interval_cs = ms[i].config().advert_interval_cs;
                    ms[peer].handle(
                        Event::Advert {
                            priority,
                            interval_cs,
                            src,
                        },
                        now,
                    );
                }
            }
        }
        ms
    }

    #[test]
    fn simultaneous_masters_resolve_by_primary_address() {
        // two owners start as masters at once; the higher address keeps the role
        for version in [Version::V2, Version::V3] {
            let ms = simulate(version, [255, 255], [0, 0], 100, 5_000);
            assert_eq!(ms[0].state(), State::Backup, "{version:?}");
            assert_eq!(ms[1].state(), State::Master, "{version:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn two_routers_converge_to_the_rfc_master(
            v3 in proptest::bool::ANY,
            pa in 1u8..=255,
            pb in 1u8..=255,
            sa in 0u64..3000,
            sb in 0u64..3000,
            fast in proptest::bool::ANY,
        ) {
            let version = if v3 { Version::V3 } else { Version::V2 };
            let interval = if fast && v3 { 10 } else { 100 };
            let ms = simulate(version, [pa, pb], [sa, sb], interval, 20_000);
            let masters: Vec<usize> = (0..2).filter(|&i| ms[i].state() == State::Master).collect();
            // the higher priority wins; with equal priorities whoever's timer fires first
            // stays master (a Backup never preempts an equal peer), but never both
            proptest::prop_assert_eq!(masters.len(), 1);
            if pa != pb {
                let expected = if pa > pb { 0 } else { 1 };
                proptest::prop_assert_eq!(masters, vec![expected]);
            }
            for m in &ms {
                match m.state() {
                    State::Master => proptest::prop_assert!(matches!(m.deadline(), Some((TimerKind::Advert, _)))),
                    State::Backup => proptest::prop_assert!(matches!(m.deadline(), Some((TimerKind::MasterDown, _)))),
                    State::Initialize => proptest::prop_assert!(false, "never started"),
                }
            }
        }

        #[test]
        fn random_event_sequences_keep_timer_invariants(
            events in proptest::collection::vec((0u8..7, 0u8..=255, 0u64..500), 1..200),
            grouped in proptest::bool::ANY,
        ) {
            let mut c = cfg(Version::V3, 100, 10);
            c.grouped = grouped;
            let mut m = Machine::new(c);
            let mut now = Duration::ZERO;
            for (kind, p, dt) in events {
                now += MS(dt);
                let ev = match kind {
                    0 => Event::Startup,
                    1 => Event::Shutdown,
                    2 => advert(p, 10, p),
                    3 | 4 => Event::Timer,
                    5 => Event::SetPriority(p),
                    _ => Event::GroupForce(if p % 2 == 0 { State::Master } else { State::Backup }),
                };
                let before = m.state();
                let actions = m.handle(ev, now);
                let became_master = actions.contains(&Action::BecomeMaster);
                proptest::prop_assert_eq!(became_master, before != State::Master && m.state() == State::Master);
                match m.state() {
                    State::Initialize => proptest::prop_assert!(m.deadline().is_none()),
                    State::Master => proptest::prop_assert!(matches!(m.deadline(), Some((TimerKind::Advert, _)))),
                    State::Backup => proptest::prop_assert!(
                        matches!(m.deadline(), Some((TimerKind::MasterDown, _)))
                            || (grouped && m.wants_master())
                    ),
                }
                proptest::prop_assert!(m.priority() >= 1);
            }
        }
    }
}
