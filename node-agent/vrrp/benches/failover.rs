//! Failover time, ours vs keepalived, in the same namespace topology and run.
//!
//! Two routers with equal priority 100 on one bridge; a client namespace polls the VIP with raw
//! ARP requests every 2 ms. Each repetition stops the current master (SIGKILL of its process
//! group = crash, or SIGTERM = graceful, priority 0) and measures until the *other* router's
//! MAC answers ARP for the VIP. The stopped router is restarted as backup (equal priority means
//! it does not preempt) and the roles swap for the next repetition.
//!
//! `cargo bench -p kube-lvs-vrrp --bench failover`; `KLV_BENCH_REPS` overrides the 20
//! repetitions; `KLV_BENCH_CELLS=crash-100,crash_random-1000,...` picks cells.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::*;
use nix::sys::signal::Signal;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Ours,
    Keepalived,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// SIGKILL right after the master's advert was seen: the full Master_Down_Interval, the
    /// same worst case for both implementations.
    Crash,
    /// SIGKILL at a random point of the advert cycle (noisier; not in the default set).
    CrashRandom,
    Graceful,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Crash => "crash",
            Mode::CrashRandom => "crash_random",
            Mode::Graceful => "graceful",
        }
    }
}

fn start(bed: &Bed, which: Impl, ns: &str, tag: &str, vr: &Vr) -> Result<Proc> {
    match which {
        Impl::Ours => start_speaker(bed, ns, tag, vr),
        Impl::Keepalived => start_keepalived(bed, ns, tag, vr),
    }
}

fn vip_s() -> String {
    VIP.to_string()
}

/// Runs one scenario; returns the failover times.
fn scenario(which: Impl, interval_ms: u32, mode: Mode, reps: usize) -> Result<Vec<Duration>> {
    let bed = Bed::new("bench")?;
    let probe = ArpProbe::open(&bed.client())?;
    let sniffer = AdvertSniffer::open(&bed.client())?;
    let ips = [A_IP, B_IP];
    let vr = Vr::v4(3, 100, interval_ms);
    let nodes = [(bed.a(), A_MAC), (bed.b(), B_MAC)];
    let mut procs: [Option<Proc>; 2] = [None, None];
    let mut generation = 0usize;
    // A first, so it is the initial master; then B joins as backup.
    procs[0] = Some(start(
        &bed,
        which,
        &nodes[0].0,
        &format!("n0g{generation}"),
        &vr,
    )?);
    if !wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
        bed.has_addr(&nodes[0].0, &vip_s())
    }) {
        bail!("{which:?}: initial master never came up");
    }
    let tag = format!("n1g{generation}");
    procs[1] = Some(start(&bed, which, &nodes[1].0, &tag, &vr)?);
    settle(&bed, which, &tag)?;
    let mut master = 0usize;
    let mut times = Vec::with_capacity(reps);
    for rep in 0..reps {
        let backup = 1 - master;
        let (ref m_ns, _) = nodes[master];
        let (ref b_ns, b_mac) = nodes[backup];
        if !bed.has_addr(m_ns, &vip_s()) || bed.has_addr(b_ns, &vip_s()) {
            bail!("{which:?} rep {rep}: roles not settled before the stop");
        }
        let mut p = procs[master]
            .take()
            .ok_or_else(|| anyhow::anyhow!("no master process"))?;
        // drain stale replies, then stop and time
        probe.drain_replies(VIP);
        if mode == Mode::Crash {
            sniffer.drain();
            if sniffer
                .next_from(ips[master], Duration::from_secs(3))
                .is_none()
            {
                bail!("{which:?} rep {rep}: no advert from the master");
            }
        }
        let t0 = Instant::now();
        match mode {
            Mode::Crash | Mode::CrashRandom => {
                let _ =
                    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(p.pid()), Signal::SIGKILL);
            }
            Mode::Graceful => p.signal(Signal::SIGTERM),
        }
        let Some(t1) = probe.wait_owner(
            VIP,
            b_mac,
            Duration::from_secs(10),
            Duration::from_millis(2),
        ) else {
            bail!("{which:?} rep {rep}: the backup never answered ARP");
        };
        times.push(t1 - t0);
        match mode {
            Mode::Crash | Mode::CrashRandom => p.crash(),
            Mode::Graceful => {
                p.stop();
            }
        }
        drop(p);
        // a crashed router leaves its VIP behind; the machine "reboots" clean
        bed.del_addr(m_ns, &format!("{VIP}/32"));
        generation += 1;
        let tag = format!("n{master}g{generation}");
        procs[master] = Some(start(&bed, which, m_ns, &tag, &vr)?);
        settle(&bed, which, &tag)?;
        master = backup;
    }
    for p in procs.iter_mut().flatten() {
        p.crash();
    }
    Ok(times)
}

/// Waits until a restarted router reports Backup; from then on the master's adverts keep it
/// there (its first Master_Down_Interval is three adverts long).
fn settle(bed: &Bed, which: Impl, tag: &str) -> Result<()> {
    let (log, needle) = match which {
        Impl::Ours => (format!("sp-{tag}"), "transition to BACKUP"),
        Impl::Keepalived => (format!("ka-{tag}"), "Entering BACKUP STATE"),
    };
    if !wait_for(Duration::from_secs(10), Duration::from_millis(5), || {
        log_of(bed, &log).contains(needle)
    }) {
        bail!("{which:?} {tag}: never reported BACKUP");
    }
    std::thread::sleep(Duration::from_millis(50));
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // nearest-rank
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
        .unwrap_or_default()
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; any other filter argument is ignored.
    let reps: usize = std::env::var("KLV_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!(
        "failover bench: {reps} repetitions per cell, equal priority 100, VRRPv3, ARP poll every 2 ms"
    );
    println!(
        "{:<13} {:>9} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "mode", "advert", "ours p50", "ours p99", "ka p50", "ka p99", "p50 x", "p99 x"
    );
    // `KLV_BENCH_CELLS=graceful-100,crash-1000` limits the run to some cells.
    let cells = std::env::var("KLV_BENCH_CELLS").unwrap_or_default();
    for interval_ms in [1000u32, 100] {
        for mode in [Mode::Crash, Mode::CrashRandom, Mode::Graceful] {
            let cell = format!("{}-{interval_ms}", mode.label());
            let wanted = if cells.is_empty() {
                mode != Mode::CrashRandom
            } else {
                cells.split(',').any(|c| c == cell)
            };
            if !wanted {
                continue;
            }
            let mut ours = scenario(Impl::Ours, interval_ms, mode, reps)?;
            let mut ka = scenario(Impl::Keepalived, interval_ms, mode, reps)?;
            ours.sort();
            ka.sort();
            let (o50, o99) = (percentile(&ours, 50.0), percentile(&ours, 99.0));
            let (k50, k99) = (percentile(&ka, 50.0), percentile(&ka, 99.0));
            println!(
                "{:<13} {:>7}ms {:>10.1}ms {:>10.1}ms {:>10.1}ms {:>10.1}ms {:>8.2} {:>8.2}",
                mode.label(),
                interval_ms,
                o50.as_secs_f64() * 1000.0,
                o99.as_secs_f64() * 1000.0,
                k50.as_secs_f64() * 1000.0,
                k99.as_secs_f64() * 1000.0,
                o50.as_secs_f64() / k50.as_secs_f64().max(1e-9),
                o99.as_secs_f64() / k99.as_secs_f64().max(1e-9),
            );
        }
    }
    Ok(())
}
