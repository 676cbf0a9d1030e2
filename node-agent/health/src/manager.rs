//! Runs checks as the desired set changes: one task per check, probes bounded by a semaphore,
//! transitions sent on a channel, the latest probe info kept in memory for readers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::checker::Prepared;
use crate::error::SpecError;
use crate::metrics::Counters;
use crate::spec::{CheckKey, CheckSpec};
use crate::tracker::{Tracker, TrackerConfig, first_delay, next_delay};

/// A change of health of one target, sent once per change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub key: CheckKey,
    pub healthy: bool,
    pub since: SystemTime,
    /// Latency of the probe that caused the change.
    pub latency: Option<Duration>,
    pub consecutive_failures: u32,
    /// Short reason of the last failed probe, if the last probe failed.
    pub last_error: Option<String>,
}

/// Latest known state of one target, updated on every probe, read on demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeInfo {
    pub healthy: bool,
    pub since: SystemTime,
    pub last_probe: Option<SystemTime>,
    pub latency: Option<Duration>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub probes: u64,
}

#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Probes in flight at once across all checks.
    pub max_concurrent_probes: usize,
    /// Runtime the check tasks run on; `None` means the caller's. A dedicated (e.g.
    /// current-thread) runtime keeps thousands of probes from competing with the agent's
    /// control loops.
    pub runtime: Option<tokio::runtime::Handle>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            max_concurrent_probes: 256,
            runtime: None,
        }
    }
}

/// What an `update` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpdateReport {
    pub started: Vec<CheckKey>,
    pub restarted: Vec<CheckKey>,
    pub stopped: Vec<CheckKey>,
    pub unchanged: usize,
    /// Definitions that cannot run; they are not running after the update.
    pub rejected: Vec<(CheckKey, SpecError)>,
}

/// Difference between running and desired checks, by identity and then by value.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckDiff {
    pub start: Vec<CheckKey>,
    pub restart: Vec<CheckKey>,
    pub stop: Vec<CheckKey>,
    pub unchanged: usize,
}

/// Pure diff: a changed parameter restarts only that check.
pub fn plan_checks(
    current: &BTreeMap<CheckKey, CheckSpec>,
    desired: &BTreeMap<CheckKey, CheckSpec>,
) -> CheckDiff {
    let mut diff = CheckDiff::default();
    for (key, spec) in desired {
        match current.get(key) {
            None => diff.start.push(key.clone()),
            Some(old) if old != spec => diff.restart.push(key.clone()),
            Some(_) => diff.unchanged += 1,
        }
    }
    diff.stop = current
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .cloned()
        .collect();
    diff
}

struct Running {
    spec: CheckSpec,
    task: JoinHandle<()>,
}

type InfoMap = Arc<Mutex<HashMap<CheckKey, ProbeInfo>>>;

pub struct Manager {
    runtime: Option<tokio::runtime::Handle>,
    semaphore: Arc<Semaphore>,
    events: mpsc::Sender<Transition>,
    running: HashMap<CheckKey, Running>,
    info: InfoMap,
    counters: Arc<Counters>,
}

fn lock(info: &InfoMap) -> MutexGuard<'_, HashMap<CheckKey, ProbeInfo>> {
    // A panic while holding the lock cannot leave the map inconsistent (single inserts), so a
    // poisoned lock is still usable.
    info.lock().unwrap_or_else(|p| p.into_inner())
}

impl Manager {
    /// Without `config.runtime`, `update` must be called inside a tokio runtime; transitions
    /// go to `events`.
    pub fn new(config: ManagerConfig, events: mpsc::Sender<Transition>) -> Self {
        Self {
            runtime: config.runtime,
            semaphore: Arc::new(Semaphore::new(config.max_concurrent_probes.max(1))),
            events,
            running: HashMap::new(),
            info: Arc::new(Mutex::new(HashMap::new())),
            counters: Arc::new(Counters::default()),
        }
    }

    /// Counters for the metrics endpoint (`Counters::render`).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Prometheus text samples of this manager.
    pub fn render_metrics(&self, out: &mut String) {
        self.counters.render(self.running.len(), out);
    }

    /// Makes the running checks equal to `desired`.
    pub fn update(
        &mut self,
        desired: impl IntoIterator<Item = (CheckKey, CheckSpec)>,
    ) -> UpdateReport {
        let mut report = UpdateReport::default();
        let mut valid = BTreeMap::new();
        let mut prepared = HashMap::new();
        for (key, spec) in desired {
            let unchanged = self.running.get(&key).is_some_and(|r| r.spec == spec);
            if !unchanged {
                match Prepared::new(&spec, key.target) {
                    Ok(p) => {
                        prepared.insert(key.clone(), p);
                    }
                    Err(e) => {
                        report.rejected.push((key, e));
                        continue;
                    }
                }
            }
            valid.insert(key, spec);
        }
        let current: BTreeMap<CheckKey, CheckSpec> = self
            .running
            .iter()
            .map(|(k, r)| (k.clone(), r.spec.clone()))
            .collect();
        let diff = plan_checks(&current, &valid);
        for key in &diff.stop {
            if let Some(r) = self.running.remove(key) {
                r.task.abort();
            }
            lock(&self.info).remove(key);
            tracing::info!(check = %key, "health check stopped");
        }
        for key in diff.restart.iter().chain(diff.start.iter()) {
            let (Some(spec), Some(p)) = (valid.get(key), prepared.remove(key)) else {
                continue;
            };
            let previous = self.running.remove(key).map(|r| {
                r.task.abort();
            });
            // A restarted check keeps the target's health: new parameters are no evidence.
            let resume =
                previous.and_then(|_| lock(&self.info).get(key).map(|i| (i.healthy, i.since)));
            let task = self.spawn(key.clone(), spec.clone(), p, resume);
            self.running.insert(
                key.clone(),
                Running {
                    spec: spec.clone(),
                    task,
                },
            );
        }
        report.started = diff.start;
        report.restarted = diff.restart;
        report.stopped = diff.stop;
        report.unchanged = diff.unchanged;
        report
    }

    fn spawn(
        &self,
        key: CheckKey,
        spec: CheckSpec,
        prepared: Prepared,
        resume: Option<(bool, SystemTime)>,
    ) -> JoinHandle<()> {
        let now = SystemTime::now();
        let cfg = TrackerConfig::new(spec.timing.rise, spec.timing.fall, spec.initial);
        let tracker = match resume {
            Some((healthy, since)) => Tracker::resume(cfg, healthy, since),
            None => Tracker::new(cfg, now),
        };
        lock(&self.info).insert(
            key.clone(),
            ProbeInfo {
                healthy: tracker.healthy(),
                since: tracker.since(),
                last_probe: None,
                latency: None,
                consecutive_failures: 0,
                last_error: None,
                probes: 0,
            },
        );
        let span = tracing::info_span!(
            "health_check",
            service = %key.service,
            target = %key.target,
            probe = spec.probe.kind_name(),
        );
        tracing::info!(parent: &span, restarted = resume.is_some(), "health check started");
        let ctx = CheckTask {
            key,
            timing: spec.timing,
            prepared,
            tracker,
            semaphore: self.semaphore.clone(),
            events: self.events.clone(),
            info: self.info.clone(),
            counters: self.counters.clone(),
        };
        let fut = ctx.run(fastrand::f64()).instrument(span);
        match &self.runtime {
            Some(rt) => rt.spawn(fut),
            None => tokio::spawn(fut),
        }
    }

    /// Latest probe information for one target.
    pub fn probe_info(&self, key: &CheckKey) -> Option<ProbeInfo> {
        lock(&self.info).get(key).cloned()
    }

    /// Latest probe information for every running check.
    pub fn snapshot(&self) -> Vec<(CheckKey, ProbeInfo)> {
        let mut v: Vec<_> = lock(&self.info)
            .iter()
            .map(|(k, i)| (k.clone(), i.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        for r in self.running.values() {
            r.task.abort();
        }
    }
}

struct CheckTask {
    key: CheckKey,
    timing: crate::spec::Timing,
    prepared: Prepared,
    tracker: Tracker,
    semaphore: Arc<Semaphore>,
    events: mpsc::Sender<Transition>,
    info: InfoMap,
    counters: Arc<Counters>,
}

impl CheckTask {
    async fn run(mut self, jitter_fraction: f64) {
        tokio::time::sleep(first_delay(&self.timing, jitter_fraction)).await;
        loop {
            let started = Instant::now();
            let outcome = {
                let Ok(_permit) = self.semaphore.acquire().await else {
                    return;
                };
                self.prepared.probe().await
            };
            let now = SystemTime::now();
            let ok = outcome.ok();
            let last_error = outcome.result.as_ref().err().map(|e| e.short());
            let change = self.tracker.observe(ok, now);
            self.counters.probe(ok, outcome.latency);
            if let Some(info) = lock(&self.info).get_mut(&self.key) {
                info.healthy = self.tracker.healthy();
                info.since = self.tracker.since();
                info.last_probe = Some(now);
                info.latency = Some(outcome.latency);
                info.consecutive_failures = self.tracker.consecutive_failures();
                info.last_error.clone_from(&last_error);
                info.probes = info.probes.saturating_add(1);
            }
            if let Some(c) = change {
                self.counters.transition(c.healthy);
                tracing::info!(
                    healthy = c.healthy,
                    consecutive_failures = c.consecutive_failures,
                    error = last_error.as_deref().unwrap_or(""),
                    "health changed"
                );
                let t = Transition {
                    key: self.key.clone(),
                    healthy: c.healthy,
                    since: c.since,
                    latency: Some(outcome.latency),
                    consecutive_failures: c.consecutive_failures,
                    last_error,
                };
                // A closed receiver means nobody consumes health any more; keep probing so
                // probe info stays fresh until the manager stops the check.
                let _ = self.events.send(t).await;
            }
            let delay = next_delay(&self.timing, ok, &self.tracker);
            tokio::time::sleep_until(started + delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Probe;

    fn key(s: &str, port: u16) -> CheckKey {
        CheckKey::new(s, format!("192.0.2.1:{port}").parse().unwrap())
    }

    #[test]
    fn diff_by_identity_then_value() {
        let tcp = CheckSpec::new(Probe::Tcp);
        let mut slower = tcp.clone();
        slower.timing.interval = Duration::from_secs(30);
        let current: BTreeMap<_, _> = [
            (key("a", 1), tcp.clone()),
            (key("a", 2), tcp.clone()),
            (key("b", 1), tcp.clone()),
        ]
        .into();
        let desired: BTreeMap<_, _> = [
            (key("a", 1), tcp.clone()),
            (key("a", 2), slower),
            (key("c", 1), tcp.clone()),
        ]
        .into();
        let d = plan_checks(&current, &desired);
        assert_eq!(d.start, vec![key("c", 1)]);
        assert_eq!(d.restart, vec![key("a", 2)]);
        assert_eq!(d.stop, vec![key("b", 1)]);
        assert_eq!(d.unchanged, 1);
        assert_eq!(plan_checks(&desired, &desired).unchanged, 3);
        assert_eq!(
            plan_checks(&BTreeMap::new(), &BTreeMap::new()),
            CheckDiff::default()
        );
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use crate::spec::Probe;

    #[tokio::test]
    async fn check_task_future_is_small() {
        let spec = CheckSpec::new(Probe::Tcp);
        let key = CheckKey::new("default/web", "192.0.2.1:80".parse().unwrap());
        let (tx, _rx) = mpsc::channel(1);
        let Ok(prepared) = Prepared::new(&spec, key.target) else {
            panic!("valid spec");
        };
        let task = CheckTask {
            key,
            timing: spec.timing.clone(),
            prepared,
            tracker: Tracker::new(
                TrackerConfig::new(1, 3, spec.initial),
                SystemTime::UNIX_EPOCH,
            ),
            semaphore: Arc::new(Semaphore::new(1)),
            events: tx,
            info: Arc::new(Mutex::new(HashMap::new())),
            counters: Arc::default(),
        };
        let fut = task.run(0.0);
        let size = std::mem::size_of_val(&fut);
        eprintln!("check task future: {size} bytes");
        // Memory per check is dominated by this; keep it well under a page.
        assert!(size < 2048, "{size}");
    }
}
