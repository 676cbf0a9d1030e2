//! Health-check benchmark (not a test). Prints figures for ours and, where IPVS exists (the
//! test VM), for keepalived with the same settings.
//!
//! * scale: CPU (utime+stime) and peak RSS of one process running N TCP checks (default
//!   10,000) at 1 s interval for 30 s against local servers; keepalived runs the same checks
//!   as TCP_CHECK real servers (IPVS kernel only).
//! * detection: a real server stops; time until its destination is out of the IPVS table,
//!   interval 1 s / fall 3 for ours, delay_loop 1 / retry 2 (= 3 failures) for keepalived.
//!
//! Everything runs in a private network namespace created for the run (`unshare`), so all
//! listeners, addresses and IPVS entries vanish with the processes.
//! `KUBE_LVS_HEALTH_BENCH=scale|detection|all` (default all), `KUBE_LVS_HEALTH_BENCH_N`,
//! `KUBE_LVS_HEALTH_BENCH_RT=multi` (our checks on a multi-threaded runtime instead of a
//! dedicated `ProbeRuntime`),
//! `KUBE_LVS_HEALTH_BENCH_PEER=none` (skip keepalived).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube_lvs_health::effect::{Member, ServicePolicy, plan_effective};
use kube_lvs_health::spec::Probe;
use kube_lvs_health::{CheckKey, CheckSpec, Manager, ManagerConfig, ProbeRuntime};
use kube_lvs_ipvs::{
    Destination, Forwarding, IpvsHandle, Protocol, Scheduler, Service, ServiceKey,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const MODE_ENV: &str = "KUBE_LVS_HEALTH_BENCH";
const PORT_BASE: u16 = 20000;
const PORTS: u16 = 100;
const SCALE_SECS: u64 = 30;
const WARMUP_SECS: u64 = 5;

fn main() -> Result<()> {
    let mode = std::env::var(MODE_ENV).unwrap_or_else(|_| "all".into());
    if mode == "scale-child" {
        return scale_child();
    }
    // A private namespace for the whole run, before any thread exists.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare netns")?;
    sh("ip", &["link", "set", "lo", "up"])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let ipvs = IpvsHandle::new().is_ok_and(|h| h.services().dump().is_ok());
    let n: usize = std::env::var("KUBE_LVS_HEALTH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    println!("health bench: ipvs={ipvs} checks={n}");
    if mode == "all" || mode == "scale" {
        rt.block_on(scale(n, ipvs))?;
    }
    if (mode == "all" || mode == "detection") && ipvs {
        rt.block_on(detection(5))?;
    } else if mode == "detection" {
        bail!("detection needs an IPVS kernel (run it in the VM)");
    }
    Ok(())
}

fn sh(cmd: &str, args: &[&str]) -> Result<()> {
    let st = Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| cmd.to_string())?;
    if !st.success() {
        bail!("{cmd} {args:?}: {st}");
    }
    Ok(())
}

fn add_local_addrs(addrs: &[IpAddr]) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        for a in addrs {
            writeln!(stdin, "addr add {a}/32 dev lo")?;
        }
    }
    if !child.wait()?.success() {
        bail!("ip -batch failed");
    }
    Ok(())
}

/// 100 addresses × 100 ports = 10,000 distinct targets; the first `n` are used.
fn targets(n: usize) -> Vec<SocketAddr> {
    let mut v = Vec::with_capacity(n);
    'outer: for a in 1..=100u8 {
        for p in 0..PORTS {
            if v.len() == n {
                break 'outer;
            }
            v.push(SocketAddr::new(
                IpAddr::from([203, 0, 113, a]),
                PORT_BASE + p,
            ));
        }
    }
    v
}

/// Accept-and-close servers on every bench port; counts accepted connections.
async fn start_servers(accepted: Arc<AtomicU64>) -> Result<Vec<JoinHandle<()>>> {
    let mut hs = Vec::new();
    for p in 0..PORTS {
        let l = TcpListener::bind(("0.0.0.0", PORT_BASE + p)).await?;
        let accepted = accepted.clone();
        hs.push(tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                drop(s);
            }
        }));
    }
    Ok(hs)
}

/// (utime+stime, utime) in seconds and (VmRSS, VmHWM) in KiB of a process.
fn proc_usage(pid: u32) -> Result<(f64, f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is index 0, utime 11, stime 12.
    let ticks = |i: usize| -> f64 { f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0) };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let cpu = (ticks(11) + ticks(12)) / hz;
    let user = ticks(11) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((cpu, user, kib("VmRSS:"), kib("VmHWM:")))
}

struct Usage {
    cpu_s: f64,
    user_s: f64,
    rss_kib: u64,
    hwm_kib: u64,
    conns_per_s: f64,
}

/// Measures the processes in `pids` over the steady window after warm-up.
async fn measure(pids: &[u32], accepted: &AtomicU64) -> Result<Usage> {
    tokio::time::sleep(Duration::from_secs(WARMUP_SECS)).await;
    let cpu0: f64 = pids
        .iter()
        .map(|p| proc_usage(*p).map(|u| u.0).unwrap_or(0.0))
        .sum();
    let user0: f64 = pids
        .iter()
        .map(|p| proc_usage(*p).map(|u| u.1).unwrap_or(0.0))
        .sum();
    let c0 = accepted.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(SCALE_SECS)).await;
    let secs = t0.elapsed().as_secs_f64();
    let c1 = accepted.load(Ordering::Relaxed);
    let (mut cpu1, mut user1) = (0.0, 0.0);
    let (mut rss, mut hwm) = (0, 0);
    for p in pids {
        let u = proc_usage(*p)?;
        cpu1 += u.0;
        user1 += u.1;
        rss += u.2;
        hwm += u.3;
    }
    Ok(Usage {
        cpu_s: cpu1 - cpu0,
        user_s: user1 - user0,
        rss_kib: rss,
        hwm_kib: hwm,
        conns_per_s: (c1 - c0) as f64 / secs,
    })
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn scale(n: usize, ipvs: bool) -> Result<()> {
    let t = targets(n);
    let mut addrs: Vec<IpAddr> = t.iter().map(|s| s.ip()).collect();
    addrs.dedup();
    add_local_addrs(&addrs)?;
    let accepted = Arc::new(AtomicU64::new(0));
    let servers = start_servers(accepted.clone()).await?;

    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .env(MODE_ENV, "scale-child")
        .env("KUBE_LVS_HEALTH_BENCH_N", n.to_string())
        .stdout(Stdio::null())
        .spawn()?;
    let child = KillOnDrop(child);
    let ours = measure(&[child.0.id()], &accepted).await?;
    drop(child);
    report("ours", n, &ours);

    let peer = std::env::var("KUBE_LVS_HEALTH_BENCH_PEER").as_deref() != Ok("none");
    let theirs = if ipvs && peer {
        let dir = tempdir("scale")?;
        let conf = dir.join("keepalived.conf");
        let mut text = String::from(
            "global_defs {\n  router_id bench\n}\nvirtual_server 198.51.100.200 80 {\n  delay_loop 1\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n",
        );
        for s in &t {
            text.push_str(&format!(
                "  real_server {} {} {{\n    weight 1\n    TCP_CHECK {{\n      connect_timeout 1\n      retry 2\n      delay_before_retry 1\n    }}\n  }}\n",
                s.ip(),
                s.port()
            ));
        }
        text.push_str("}\n");
        std::fs::write(&conf, text)?;
        let (ka, pids) = start_keepalived(&dir, &conf).await?;
        let u = measure(&pids, &accepted).await?;
        drop(ka);
        report("keepalived", n, &u);
        Some(u)
    } else {
        println!("scale keepalived: skipped (keepalived's checker needs IPVS; run in the VM)");
        None
    };
    if let Some(k) = theirs {
        println!(
            "scale ratio ours/keepalived: cpu {:.2}  rss {:.2}  peak-rss {:.2}",
            ours.cpu_s / k.cpu_s.max(1e-9),
            ours.rss_kib as f64 / k.rss_kib.max(1) as f64,
            ours.hwm_kib as f64 / k.hwm_kib.max(1) as f64,
        );
    }
    for s in servers {
        s.abort();
    }
    Ok(())
}

fn report(who: &str, n: usize, u: &Usage) {
    println!(
        "scale {who}: {n} checks @1s, {SCALE_SECS}s window: cpu {:.2}s (user {:.2}s; {:.1}% of one core; {:.1} us per accepted probe), rss {} KiB, peak rss {} KiB, probes accepted {:.0}/s",
        u.cpu_s,
        u.user_s,
        100.0 * u.cpu_s / SCALE_SECS as f64,
        1e6 * u.cpu_s / (u.conns_per_s * SCALE_SECS as f64).max(1.0),
        u.rss_kib,
        u.hwm_kib,
        u.conns_per_s
    );
}

fn tempdir(tag: &str) -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("kl-health-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// keepalived, checkers only, in the foreground; returns it and the pids to measure (the
/// supervisor and the healthcheck child).
async fn start_keepalived(
    dir: &std::path::Path,
    conf: &std::path::Path,
) -> Result<(KillOnDrop, Vec<u32>)> {
    let pid = dir.join("keepalived.pid");
    let cpid = dir.join("checkers.pid");
    let log = std::fs::File::create(dir.join("keepalived.log"))?;
    let child = Command::new("keepalived")
        .arg("-f")
        .arg(conf)
        .args(["-n", "-l", "-C"])
        .arg("-p")
        .arg(&pid)
        .arg("-c")
        .arg(&cpid)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawn keepalived")?;
    let ka = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let checker = loop {
        if let Some(p) = std::fs::read_to_string(&cpid)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            break p;
        }
        if Instant::now() > deadline {
            bail!("keepalived checker did not start; see {}", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let supervisor = ka.0.id();
    Ok((ka, vec![supervisor, checker]))
}

/// Child process of the scale bench: our manager with `n` TCP checks, nothing else.
fn scale_child() -> Result<()> {
    let n: usize = std::env::var("KUBE_LVS_HEALTH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // By default the checks run on a dedicated current-thread `ProbeRuntime`, as the agent
    // should run them; `KUBE_LVS_HEALTH_BENCH_RT=multi` puts them on a multi-threaded runtime.
    let multi = std::env::var("KUBE_LVS_HEALTH_BENCH_RT").as_deref() == Ok("multi");
    let probe_rt = if multi {
        None
    } else {
        Some(ProbeRuntime::start("health-probes")?)
    };
    let rt = if multi {
        tokio::runtime::Runtime::new()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut m = Manager::new(
            ManagerConfig {
                max_concurrent_probes: 2048,
                runtime: probe_rt.as_ref().map(ProbeRuntime::handle),
            },
            tx,
        );
        let mut spec = CheckSpec::new(Probe::Tcp);
        spec.timing.interval = Duration::from_secs(1);
        spec.timing.timeout = Duration::from_secs(1);
        spec.timing.fall = 3;
        spec.timing.retry_delay = Some(Duration::from_secs(1));
        spec.timing.jitter = Duration::from_secs(1);
        m.update(
            targets(n)
                .into_iter()
                .map(|t| (CheckKey::new("bench/scale", t), spec.clone())),
        );
        // Drain transitions (there should be none) until killed.
        while let Some(t) = rx.recv().await {
            eprintln!("unexpected transition {:?}", t.key);
        }
        drop(m);
        Ok(())
    })
}

/// Our reconciler for one service: health → effect → IPVS (what the node-agent does).
struct Ours {
    handle: IpvsHandle,
    service: ServiceKey,
    servers: Vec<SocketAddr>,
    health: BTreeMap<SocketAddr, bool>,
}

impl Ours {
    fn apply(&mut self) -> Result<()> {
        let members: Vec<Member<SocketAddr>> = self
            .servers
            .iter()
            .map(|s| Member {
                key: *s,
                weight: 1,
                healthy: self.health.get(s).copied().unwrap_or(true),
                drain: false,
            })
            .collect();
        let e = plan_effective(&members, &ServicePolicy::default(), None);
        let dests = self.handle.destinations(self.service);
        let have: BTreeMap<SocketAddr, Destination> = dests
            .dump()?
            .into_iter()
            .map(|d| (SocketAddr::new(d.config.addr, d.config.port), d.config))
            .collect();
        for (a, d) in &have {
            if !e.destinations.iter().any(|x| x.key == *a) {
                dests.delete(d.key())?;
            }
        }
        for d in &e.destinations {
            if !have.contains_key(&d.key) {
                let mut nd = Destination::new(d.key.ip(), d.key.port(), Forwarding::Masquerade);
                nd.weight = d.weight;
                dests.add(nd)?;
            }
        }
        Ok(())
    }
}

fn present(h: &IpvsHandle, svc: ServiceKey, rs: SocketAddr) -> bool {
    h.destinations(svc).dump().is_ok_and(|ds| {
        ds.iter()
            .any(|d| SocketAddr::new(d.config.addr, d.config.port) == rs && d.config.weight > 0)
    })
}

async fn detection(trials: usize) -> Result<()> {
    let rs: SocketAddr = "192.0.2.11:8080".parse()?;
    add_local_addrs(&[rs.ip()])?;
    let ours_svc = ServiceKey::addr(Protocol::Tcp, "203.0.113.200".parse()?, 80);
    let ka_svc = ServiceKey::addr(Protocol::Tcp, "203.0.113.201".parse()?, 80);
    let handle = IpvsHandle::new()?;
    handle
        .services()
        .add(Service::new(ours_svc, Scheduler::RoundRobin))?;

    let dir = tempdir("detect")?;
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n  router_id bench\n}}\nvirtual_server 203.0.113.201 80 {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n  real_server {} {} {{\n    weight 1\n    TCP_CHECK {{\n      connect_timeout 1\n      retry 2\n      delay_before_retry 1\n    }}\n  }}\n}}\n",
            rs.ip(),
            rs.port()
        ),
    )?;
    let listen = || async move {
        let l = TcpListener::bind(rs).await?;
        anyhow::Ok(tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        }))
    };
    let mut server = Some(listen().await?);
    let (_ka, _) = start_keepalived(&dir, &conf).await?;

    let (tx, mut rx) = mpsc::channel(64);
    let mut manager = Manager::new(ManagerConfig::default(), tx);
    let mut spec = CheckSpec::new(Probe::Tcp);
    spec.timing.interval = Duration::from_secs(1);
    spec.timing.timeout = Duration::from_secs(1);
    spec.timing.fall = 3;
    spec.timing.rise = 1;
    spec.timing.retry_delay = Some(Duration::from_secs(1));
    manager.update([(CheckKey::new("bench/detect", rs), spec)]);
    let mut ours = Ours {
        handle: IpvsHandle::new()?,
        service: ours_svc,
        servers: vec![rs],
        health: BTreeMap::new(),
    };
    ours.apply()?;
    // Our reconciler runs beside the measurement loop, reacting to transitions.
    let reconciler = tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            ours.health.insert(t.key.target, t.healthy);
            if let Err(e) = ours.apply() {
                eprintln!("apply: {e}");
            }
        }
    });

    let mut ours_ms = Vec::new();
    let mut ka_ms = Vec::new();
    for trial in 0..trials {
        wait(
            || present(&handle, ours_svc, rs) && present(&handle, ka_svc, rs),
            30,
        )
        .await?;
        // Random phase relative to both checkers' probe schedule.
        tokio::time::sleep(Duration::from_millis(1000 + fastrand::u64(0..1000))).await;
        if let Some(s) = server.take() {
            s.abort();
            let _ = s.await;
        }
        let t0 = Instant::now();
        let (mut o, mut k) = (None, None);
        while (o.is_none() || k.is_none()) && t0.elapsed() < Duration::from_secs(20) {
            if o.is_none() && !present(&handle, ours_svc, rs) {
                o = Some(t0.elapsed());
            }
            if k.is_none() && !present(&handle, ka_svc, rs) {
                k = Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (Some(o), Some(k)) = (o, k) else {
            bail!("trial {trial}: not detected within 20 s (ours {o:?}, keepalived {k:?})");
        };
        println!(
            "detection trial {trial}: ours {} ms, keepalived {} ms",
            o.as_millis(),
            k.as_millis()
        );
        ours_ms.push(o.as_secs_f64() * 1000.0);
        ka_ms.push(k.as_secs_f64() * 1000.0);
        server = Some(listen().await?);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (mo, mk) = (mean(&ours_ms), mean(&ka_ms));
    println!(
        "detection mean over {trials} trials (interval 1 s, fall 3): ours {mo:.0} ms, keepalived {mk:.0} ms, ratio ours/keepalived {:.2}",
        mo / mk.max(1e-9)
    );
    reconciler.abort();
    drop(manager);
    if let Some(s) = server {
        s.abort();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn wait(mut f: impl FnMut() -> bool, secs: u64) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        if Instant::now() > end {
            bail!("condition not reached within {secs}s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
