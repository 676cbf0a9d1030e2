//! Rise/fall counting with hysteresis. Pure: the caller passes the probe result and the time.

use std::time::{Duration, SystemTime};

use crate::spec::{InitialState, Timing};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    pub rise: u32,
    pub fall: u32,
    pub initial: InitialState,
}

impl TrackerConfig {
    pub fn new(rise: u32, fall: u32, initial: InitialState) -> Self {
        // Zero would mean "change state without evidence"; treat it as 1.
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            initial,
        }
    }
}

/// A change of health decided by the tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub healthy: bool,
    pub since: SystemTime,
    pub consecutive_failures: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    cfg: TrackerConfig,
    healthy: bool,
    /// False until the target has been healthy once; with `InitialState::Unhealthy` the first
    /// success is enough to enter rotation (keepalived `alpha`).
    ever_healthy: bool,
    successes: u32,
    failures: u32,
    since: SystemTime,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig, now: SystemTime) -> Self {
        let healthy = cfg.initial == InitialState::Healthy;
        Self {
            cfg: TrackerConfig::new(cfg.rise, cfg.fall, cfg.initial),
            healthy,
            ever_healthy: healthy,
            successes: 0,
            failures: 0,
            since: now,
        }
    }

    /// Starts from a known state, e.g. when a check is restarted with new parameters and the
    /// target should not leave rotation just because of that.
    pub fn resume(cfg: TrackerConfig, healthy: bool, since: SystemTime) -> Self {
        Self {
            cfg: TrackerConfig::new(cfg.rise, cfg.fall, cfg.initial),
            healthy,
            ever_healthy: true,
            successes: 0,
            failures: 0,
            since,
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }
    pub fn since(&self) -> SystemTime {
        self.since
    }
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }
    pub fn consecutive_successes(&self) -> u32 {
        self.successes
    }

    /// Records one probe result; returns `Some` only when health changes.
    pub fn observe(&mut self, ok: bool, now: SystemTime) -> Option<Change> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            let needed = if self.ever_healthy { self.cfg.rise } else { 1 };
            if !self.healthy && self.successes >= needed {
                self.healthy = true;
                self.ever_healthy = true;
                return Some(self.changed(now));
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= self.cfg.fall {
                self.healthy = false;
                return Some(self.changed(now));
            }
        }
        None
    }

    fn changed(&mut self, now: SystemTime) -> Change {
        self.since = now;
        Change {
            healthy: self.healthy,
            since: now,
            consecutive_failures: self.failures,
        }
    }
}

/// Delay until the next probe. After a failure that has not yet brought a healthy target
/// down, keepalived re-probes after `delay_before_retry` instead of `delay_loop`.
pub fn next_delay(timing: &Timing, last_ok: bool, tracker: &Tracker) -> Duration {
    match timing.retry_delay {
        Some(d) if !last_ok && tracker.healthy() => d,
        _ => timing.interval,
    }
}

/// Delay before the first probe: a fraction (0..1, supplied by the caller's random source)
/// of the configured jitter, never more than one interval.
pub fn first_delay(timing: &Timing, fraction: f64) -> Duration {
    let bound = timing.jitter.min(timing.interval);
    let f = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    bound.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn run(tr: &mut Tracker, seq: &[bool]) -> Vec<(usize, bool)> {
        seq.iter()
            .enumerate()
            .filter_map(|(i, ok)| tr.observe(*ok, t(i as u64 + 1)).map(|c| (i, c.healthy)))
            .collect()
    }

    #[test]
    fn starts_healthy_by_default() {
        let tr = Tracker::new(TrackerConfig::new(2, 3, InitialState::Healthy), t(0));
        assert!(tr.healthy());
        assert_eq!(tr.since(), t(0));
    }

    #[test]
    fn falls_after_exactly_fall_failures() {
        for fall in 1..=5u32 {
            let mut tr = Tracker::new(TrackerConfig::new(1, fall, InitialState::Healthy), t(0));
            let seq = vec![false; fall as usize + 3];
            let changes = run(&mut tr, &seq);
            assert_eq!(changes, vec![(fall as usize - 1, false)], "fall={fall}");
            assert_eq!(tr.consecutive_failures(), fall + 3);
        }
    }

    #[test]
    fn rises_after_exactly_rise_successes() {
        for rise in 1..=5u32 {
            let mut tr = Tracker::new(TrackerConfig::new(rise, 1, InitialState::Healthy), t(0));
            assert_eq!(tr.observe(false, t(1)).map(|c| c.healthy), Some(false));
            let seq = vec![true; rise as usize + 2];
            let changes = run(&mut tr, &seq);
            assert_eq!(changes, vec![(rise as usize - 1, true)], "rise={rise}");
        }
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut tr = Tracker::new(TrackerConfig::new(1, 3, InitialState::Healthy), t(0));
        let changes = run(
            &mut tr,
            &[false, false, true, false, false, true, false, false],
        );
        assert!(changes.is_empty());
        assert!(tr.healthy());
    }

    #[test]
    fn a_failure_resets_the_success_count() {
        let mut tr = Tracker::new(TrackerConfig::new(3, 1, InitialState::Healthy), t(0));
        tr.observe(false, t(1));
        let changes = run(&mut tr, &[true, true, false, true, true, false]);
        assert!(changes.is_empty());
        assert!(!tr.healthy());
        let changes = run(&mut tr, &[true, true, true]);
        assert_eq!(changes, vec![(2, true)]);
    }

    #[test]
    fn alpha_enters_rotation_on_first_success_then_uses_rise() {
        let mut tr = Tracker::new(TrackerConfig::new(3, 2, InitialState::Unhealthy), t(0));
        assert!(!tr.healthy());
        assert_eq!(run(&mut tr, &[false, false, false]), vec![]);
        let c = tr.observe(true, t(10)).unwrap();
        assert!(c.healthy);
        assert_eq!(c.since, t(10));
        assert_eq!(run(&mut tr, &[false, false]), vec![(1, false)]);
        // Later recoveries need the full rise count.
        assert_eq!(run(&mut tr, &[true, true, true]), vec![(2, true)]);
    }

    #[test]
    fn transition_carries_time_and_failures() {
        let mut tr = Tracker::new(TrackerConfig::new(1, 2, InitialState::Healthy), t(0));
        assert_eq!(tr.observe(false, t(5)), None);
        let c = tr.observe(false, t(6)).unwrap();
        assert_eq!(
            c,
            Change {
                healthy: false,
                since: t(6),
                consecutive_failures: 2
            }
        );
        assert_eq!(tr.since(), t(6));
    }

    #[test]
    fn zero_thresholds_behave_as_one() {
        let mut tr = Tracker::new(TrackerConfig::new(0, 0, InitialState::Healthy), t(0));
        assert!(tr.observe(false, t(1)).is_some());
        assert!(tr.observe(true, t(2)).is_some());
    }

    #[test]
    fn resume_keeps_state_without_transition() {
        let mut tr = Tracker::resume(
            TrackerConfig::new(2, 2, InitialState::Unhealthy),
            true,
            t(3),
        );
        assert!(tr.healthy());
        assert_eq!(tr.since(), t(3));
        assert_eq!(tr.observe(true, t(4)), None);
    }

    #[test]
    fn retry_delay_only_while_still_healthy() {
        let timing = Timing {
            interval: Duration::from_secs(5),
            retry_delay: Some(Duration::from_secs(1)),
            ..Timing::default()
        };
        let mut tr = Tracker::new(TrackerConfig::new(1, 2, InitialState::Healthy), t(0));
        assert_eq!(next_delay(&timing, true, &tr), Duration::from_secs(5));
        tr.observe(false, t(1));
        assert_eq!(next_delay(&timing, false, &tr), Duration::from_secs(1));
        tr.observe(false, t(2));
        assert!(!tr.healthy());
        assert_eq!(next_delay(&timing, false, &tr), Duration::from_secs(5));
        let no_retry = Timing {
            retry_delay: None,
            ..timing
        };
        assert_eq!(next_delay(&no_retry, false, &tr), Duration::from_secs(5));
    }

    #[test]
    fn first_delay_is_bounded() {
        let timing = Timing {
            interval: Duration::from_secs(2),
            jitter: Duration::from_secs(10),
            ..Timing::default()
        };
        assert_eq!(first_delay(&timing, 0.0), Duration::ZERO);
        assert_eq!(first_delay(&timing, 1.0), Duration::from_secs(2));
        assert_eq!(first_delay(&timing, 7.0), Duration::from_secs(2));
        assert_eq!(first_delay(&timing, f64::NAN), Duration::ZERO);
        assert_eq!(first_delay(&timing, 0.5), Duration::from_secs(1));
    }

    /// Reference model: health after a sequence is decided by the longest run at the end.
    fn arb_cfg() -> impl Strategy<Value = TrackerConfig> {
        (1u32..6, 1u32..6, any::<bool>()).prop_map(|(r, f, up)| {
            TrackerConfig::new(
                r,
                f,
                if up {
                    InitialState::Healthy
                } else {
                    InitialState::Unhealthy
                },
            )
        })
    }

    proptest! {
        #[test]
        fn transitions_alternate_and_respect_thresholds(
            cfg in arb_cfg(),
            seq in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let mut tr = Tracker::new(cfg, t(0));
            let mut state = tr.healthy();
            let mut run_ok = 0u32;
            let mut run_fail = 0u32;
            let mut ever = state;
            for (i, ok) in seq.iter().enumerate() {
                if *ok { run_ok += 1; run_fail = 0; } else { run_fail += 1; run_ok = 0; }
                let change = tr.observe(*ok, t(i as u64 + 1));
                if let Some(c) = change {
                    // Changes alternate and only in the direction of the probe result.
                    prop_assert_ne!(c.healthy, state);
                    prop_assert_eq!(c.healthy, *ok);
                    if c.healthy {
                        let needed = if ever { cfg.rise } else { 1 };
                        prop_assert_eq!(run_ok, needed);
                        ever = true;
                    } else {
                        prop_assert_eq!(run_fail, cfg.fall);
                    }
                    state = c.healthy;
                } else {
                    // No change although the threshold was reached would be a bug.
                    if state { prop_assert!(run_fail < cfg.fall || *ok); }
                    else {
                        let needed = if ever { cfg.rise } else { 1 };
                        prop_assert!(!*ok || run_ok < needed);
                    }
                }
                prop_assert_eq!(tr.healthy(), state);
            }
        }

        #[test]
        fn flapping_bounded_by_thresholds(
            cfg in arb_cfg(),
            seq in proptest::collection::vec(any::<bool>(), 0..300),
        ) {
            // Each transition consumes at least min(rise, fall) probes, so the number of
            // transitions is bounded by the probe count divided by that.
            let mut tr = Tracker::new(cfg, t(0));
            let n = seq.iter().enumerate().filter(|(i, ok)| tr.observe(**ok, t(*i as u64)).is_some()).count();
            let per = cfg.rise.min(cfg.fall) as usize;
            prop_assert!(n <= seq.len() / per + 1);
        }
    }
}
