//! The manager driving real checks against loopback servers: transitions on stop/recovery,
//! flapping bounded by rise/fall, alpha start, updates by identity, bounded concurrency.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kube_lvs_health::spec::{HttpProbe, InitialState, Probe};
use kube_lvs_health::{CheckKey, CheckSpec, Manager, ManagerConfig, Transition};
use support::{HttpServer, Mode, poll_until};
use tokio::sync::mpsc;

fn fast(probe: Probe, rise: u32, fall: u32) -> CheckSpec {
    let mut s = CheckSpec::new(probe);
    s.timing.interval = Duration::from_millis(100);
    s.timing.timeout = Duration::from_millis(300);
    s.timing.rise = rise;
    s.timing.fall = fall;
    s.timing.jitter = Duration::ZERO;
    s
}

async fn next(rx: &mut mpsc::Receiver<Transition>) -> Result<Transition> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .context("no transition within 5s")?
        .context("channel closed")
}

async fn wait_probes(m: &Manager, key: &CheckKey, at_least: u64) -> Result<()> {
    poll_until("probes", Duration::from_secs(10), || {
        m.probe_info(key)
            .filter(|i| i.probes >= at_least)
            .map(|_| ())
    })
    .await
}

#[tokio::test]
async fn stop_and_recovery_emit_one_transition_each() -> Result<()> {
    let mut srv = HttpServer::start("127.0.0.1", Mode::Answer(200, "ok".into())).await?;
    let (tx, mut rx) = mpsc::channel(16);
    let mut m = Manager::new(ManagerConfig::default(), tx);
    let key = CheckKey::new("default/web", srv.addr);
    let report = m.update([(key.clone(), fast(Probe::Http(HttpProbe::default()), 2, 3))]);
    assert_eq!(report.started, vec![key.clone()]);

    wait_probes(&m, &key, 3).await?;
    assert!(
        rx.try_recv().is_err(),
        "a healthy server produces no transition"
    );
    let info = m.probe_info(&key).context("info")?;
    assert!(info.healthy && info.last_probe.is_some() && info.latency.is_some());

    srv.set_mode(Mode::Refuse).await?;
    let stopped = Instant::now();
    let down = next(&mut rx).await?;
    let detect = stopped.elapsed();
    assert!(!down.healthy);
    assert_eq!(down.key, key);
    assert_eq!(down.consecutive_failures, 3);
    assert_eq!(down.last_error.as_deref(), Some("connection refused"));
    // Three failures 100 ms apart: at least two intervals, far less than a second.
    assert!(detect >= Duration::from_millis(190), "{detect:?}");
    assert!(detect < Duration::from_secs(2), "{detect:?}");
    assert!(!m.probe_info(&key).context("info")?.healthy);

    srv.set_mode(Mode::Answer(200, "ok".into())).await?;
    let up = next(&mut rx).await?;
    assert!(up.healthy);
    assert_eq!(up.consecutive_failures, 0);
    assert_eq!(up.last_error, None);

    let seen = m.probe_info(&key).context("info")?.probes;
    wait_probes(&m, &key, seen + 5).await?;
    assert!(rx.try_recv().is_err(), "no transition while steady");

    let mut text = String::new();
    m.render_metrics(&mut text);
    assert!(text.contains("kube_lvs_health_checks 1\n"), "{text}");
    assert!(text.contains("kube_lvs_health_transitions_total{to=\"unhealthy\"} 1\n"));
    assert!(text.contains("kube_lvs_health_transitions_total{to=\"healthy\"} 1\n"));
    let failures = m
        .counters()
        .probe_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(failures >= 3, "{failures}");
    Ok(())
}

#[tokio::test]
async fn flapping_is_absorbed_by_rise_and_fall() -> Result<()> {
    // The server alternates 200/500 on every request.
    let damped_srv = HttpServer::start("127.0.0.1", Mode::Alternate).await?;
    let raw_srv = HttpServer::start("127.0.0.1", Mode::Alternate).await?;
    let (tx, mut rx) = mpsc::channel(256);
    let mut m = Manager::new(ManagerConfig::default(), tx);
    let damped = CheckKey::new("default/damped", damped_srv.addr);
    let raw = CheckKey::new("default/raw", raw_srv.addr);
    m.update([
        (
            damped.clone(),
            fast(Probe::Http(HttpProbe::default()), 2, 2),
        ),
        (raw.clone(), fast(Probe::Http(HttpProbe::default()), 1, 1)),
    ]);
    wait_probes(&m, &damped, 20).await?;
    wait_probes(&m, &raw, 20).await?;
    let mut per_key = std::collections::HashMap::<CheckKey, usize>::new();
    while let Ok(t) = rx.try_recv() {
        *per_key.entry(t.key).or_default() += 1;
    }
    assert_eq!(
        per_key.get(&damped),
        None,
        "never two equal results in a row, so rise=fall=2 never changes state"
    );
    // The same flapping with rise=fall=1 changes state on (nearly) every probe, proving the
    // server really flaps; its first probe (200) matches the initial state.
    let raw_changes = per_key.get(&raw).copied().unwrap_or(0);
    assert!(raw_changes >= 15, "raw transitions: {raw_changes}");
    Ok(())
}

#[tokio::test]
async fn alpha_starts_out_of_rotation_until_first_success() -> Result<()> {
    let mut srv = HttpServer::start("127.0.0.1", Mode::Refuse).await?;
    let (tx, mut rx) = mpsc::channel(16);
    let mut m = Manager::new(ManagerConfig::default(), tx);
    let key = CheckKey::new("default/alpha", srv.addr);
    let mut spec = fast(Probe::Tcp, 3, 2);
    spec.initial = InitialState::Unhealthy;
    m.update([(key.clone(), spec)]);
    assert!(!m.probe_info(&key).context("info")?.healthy);
    wait_probes(&m, &key, 3).await?;
    assert!(
        rx.try_recv().is_err(),
        "already unhealthy: failures change nothing"
    );

    srv.set_mode(Mode::Answer(200, "ok".into())).await?;
    let up = next(&mut rx).await?;
    assert!(up.healthy, "one success is enough the first time");
    Ok(())
}

#[tokio::test]
async fn update_diffs_by_identity_and_keeps_health_on_restart() -> Result<()> {
    let mut srv = HttpServer::start("127.0.0.1", Mode::Answer(200, "ok".into())).await?;
    let other = HttpServer::start("127.0.0.1", Mode::Answer(200, "ok".into())).await?;
    let (tx, mut rx) = mpsc::channel(16);
    let mut m = Manager::new(ManagerConfig::default(), tx);
    let a = CheckKey::new("default/a", srv.addr);
    let b = CheckKey::new("default/b", other.addr);
    let spec = fast(Probe::Tcp, 1, 1);
    let r = m.update([(a.clone(), spec.clone()), (b.clone(), spec.clone())]);
    assert_eq!(r.started.len(), 2);

    // Take `a` down, then change its parameters: it stays down without a new transition.
    srv.set_mode(Mode::Refuse).await?;
    let down = next(&mut rx).await?;
    assert_eq!((down.key.clone(), down.healthy), (a.clone(), false));
    let b_probes = m.probe_info(&b).context("b")?.probes;

    let mut slower = spec.clone();
    slower.timing.interval = Duration::from_millis(150);
    let r = m.update([(a.clone(), slower.clone()), (b.clone(), spec.clone())]);
    assert_eq!(r.restarted, vec![a.clone()]);
    assert_eq!(r.unchanged, 1);
    assert!(r.started.is_empty() && r.stopped.is_empty());
    let info_a = m.probe_info(&a).context("a")?;
    assert!(!info_a.healthy, "restart keeps the known health");
    assert!(
        m.probe_info(&b).context("b")?.probes >= b_probes,
        "unchanged check keeps its counters"
    );

    // Same set again: nothing happens.
    let r = m.update([(a.clone(), slower.clone()), (b.clone(), spec.clone())]);
    assert_eq!(r.unchanged, 2);
    assert!(r.restarted.is_empty() && r.started.is_empty());

    // An invalid definition is rejected with its field; removing `a` stops it.
    let mut bad = spec.clone();
    bad.timing.fall = 0;
    let r = m.update([(b.clone(), bad)]);
    assert_eq!(r.stopped.len(), 2);
    assert_eq!(r.rejected.len(), 1);
    assert!(r.rejected[0].1.to_string().starts_with("fall:"));
    assert!(m.probe_info(&a).is_none() && m.is_empty());

    srv.set_mode(Mode::Answer(200, "ok".into())).await?;
    // A fresh check on the same target doing three probes means `a`'s old task had time
    // to probe the recovered server too, had it survived.
    let c = CheckKey::new("default/c", srv.addr);
    m.update([(c.clone(), spec.clone())]);
    wait_probes(&m, &c, 3).await?;
    assert!(rx.try_recv().is_err(), "stopped checks emit nothing");
    assert_eq!(m.snapshot().len(), 1);
    Ok(())
}

#[tokio::test]
async fn probes_are_bounded_by_the_semaphore() -> Result<()> {
    let srv = HttpServer::start("127.0.0.1", Mode::Hang).await?;
    let (tx, _rx) = mpsc::channel(64);
    let mut m = Manager::new(
        ManagerConfig {
            max_concurrent_probes: 1,
            ..Default::default()
        },
        tx,
    );
    let keys: Vec<CheckKey> = (0..4)
        .map(|i| CheckKey::new(format!("default/s{i}"), srv.addr))
        .collect();
    m.update(
        keys.iter()
            .map(|k| (k.clone(), fast(Probe::Http(HttpProbe::default()), 1, 3))),
    );
    let started = Instant::now();
    poll_until("a few probes", Duration::from_secs(10), || {
        let total: u64 = m.snapshot().iter().map(|(_, i)| i.probes).sum();
        (total >= 3).then_some(())
    })
    .await?;
    let elapsed = started.elapsed();
    let total: u64 = m.snapshot().iter().map(|(_, i)| i.probes).sum();
    // Each probe hangs for the 300 ms timeout and only one may run at a time.
    let max_serial = (elapsed.as_millis() / 300) as u64 + 1;
    assert!(total <= max_serial, "{total} probes in {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(850), "{elapsed:?}");
    Ok(())
}

#[tokio::test]
async fn checks_can_run_on_a_dedicated_runtime() -> Result<()> {
    let dedicated = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("health-probes")
        .enable_all()
        .build()?;
    let mut srv = HttpServer::start("127.0.0.1", Mode::Answer(200, "ok".into())).await?;
    let (tx, mut rx) = mpsc::channel(16);
    let mut m = Manager::new(
        ManagerConfig {
            runtime: Some(dedicated.handle().clone()),
            ..Default::default()
        },
        tx,
    );
    let key = CheckKey::new("default/dedicated", srv.addr);
    m.update([(key.clone(), fast(Probe::Tcp, 1, 2))]);
    wait_probes(&m, &key, 2).await?;
    srv.set_mode(Mode::Refuse).await?;
    let down = next(&mut rx).await?;
    assert!(!down.healthy);
    drop(m);
    // A runtime cannot be dropped from async context; let its threads wind down on their own.
    dedicated.shutdown_background();
    Ok(())
}
