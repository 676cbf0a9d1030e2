//! Cold-sync benchmark: our pipelined client vs `ipvsadm -R` for N services × 10 destinations,
//! plus one weight change at the largest size and the process's peak RSS.
//!
//! Run as root on an IPVS kernel (inside the test VM):
//! `e2e/tools/vm-run.sh target/release/examples/bench_sync [sizes…]` (default 1000 10000).
//! It works in a private network namespace, so the host table is never touched.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kube_lvs_ipvs::*;

const DESTS_PER_SERVICE: u32 = 10;

fn service_key(i: u32) -> ServiceKey {
    // 192.0.2.1..=192.0.2.250, 1000 ports each: unique documentation-range VIP:port pairs.
    let host = 1 + (i / 1000) as u8;
    let port = 1000 + (i % 1000) as u16;
    ServiceKey::addr(
        Protocol::Tcp,
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, host)),
        port,
    )
}

/// Direct-routing real server `j`; ipvsadm forces a DR destination's port to the service port,
/// so ours uses it too and both tools build identical tables.
fn dest(j: u32, port: u16) -> Destination {
    Destination::new(
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1 + j as u8)),
        port,
        Forwarding::DirectRoute,
    )
}

fn port_of(key: &ServiceKey) -> u16 {
    match key {
        ServiceKey::Addr { port, .. } => *port,
        ServiceKey::Fwmark { .. } => 0,
    }
}

fn requests(n: u32) -> Vec<Request> {
    let mut reqs = Vec::with_capacity((n * (DESTS_PER_SERVICE + 1)) as usize);
    for i in 0..n {
        let key = service_key(i);
        reqs.push(Request::NewService(Service::new(
            key,
            Scheduler::WeightedLeastConnection,
        )));
        for j in 0..DESTS_PER_SERVICE {
            reqs.push(Request::NewDestination {
                service: key,
                dest: dest(j, port_of(&key)),
            });
        }
    }
    reqs
}

fn restore_file(n: u32) -> String {
    let mut s = String::with_capacity(n as usize * 500);
    for i in 0..n {
        let ServiceKey::Addr { addr, port, .. } = service_key(i) else {
            continue;
        };
        s.push_str(&format!("-A -t {addr}:{port} -s wlc\n"));
        for j in 0..DESTS_PER_SERVICE {
            s.push_str(&format!(
                "-a -t {addr}:{port} -r {}:{port} -g -w 1\n",
                dest(j, port).addr
            ));
        }
    }
    s
}

fn ipvsadm_restore(rules: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new("ipvsadm")
        .arg("-R")
        .stdin(Stdio::piped())
        .spawn()
        .context("spawn ipvsadm -R")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(rules.as_bytes())?;
    let status = child.wait()?;
    let took = start.elapsed();
    if !status.success() {
        bail!("ipvsadm -R failed: {status}");
    }
    Ok(took)
}

/// Full observe: every service and its destinations (what the agent does on resync).
fn observe(h: &IpvsHandle) -> anyhow::Result<(usize, usize, Duration)> {
    let start = Instant::now();
    let services = h.services().dump()?;
    let mut dests = 0;
    for s in &services {
        dests += h.destinations(s.config.key).dump()?.len();
    }
    Ok((services.len(), dests, start.elapsed()))
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    // A private namespace: an empty IPVS table that disappears with the process.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare netns")?;
    // Without any address the kernel has no local FIB table and rejects IPv4 destinations
    // with EINVAL (their address type reads as broadcast); loopback up creates it.
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    ensure!(st.success(), "ip link set lo up");
    let sizes: Vec<u32> = {
        let args: Vec<u32> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if args.is_empty() {
            vec![1000, 10000]
        } else {
            args
        }
    };
    let h = IpvsHandle::new()?;
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for &n in &sizes {
        let want_dests = (n * DESTS_PER_SERVICE) as usize;
        // Ours: encode + pipelined send of every request.
        let reqs = requests(n);
        let before = h.stats();
        let start = Instant::now();
        let results = h.execute_batch(&reqs);
        let ours = start.elapsed();
        let mut errors = std::collections::BTreeMap::new();
        for (i, r) in results.iter().enumerate() {
            if let Err(e) = r {
                let entry = errors.entry(e.to_string()).or_insert((0usize, i));
                entry.0 += 1;
            }
        }
        for (e, (count, first)) in &errors {
            println!("BENCH error n={n} count={count} first_index={first} error={e}");
        }
        ensure!(errors.is_empty(), "requests failed");
        let after = h.stats();
        let (s, d, observe_t) = observe(&h)?;
        ensure!(s == n as usize && d == want_dests, "ours installed {s}/{d}");
        println!(
            "BENCH ours n={n} ops={} datagrams={} cold_sync_ms={:.1} observe_ms={:.1}",
            after.requests - before.requests,
            after.datagrams_sent - before.datagrams_sent,
            ms(ours),
            ms(observe_t)
        );

        if n == largest {
            // One weight change on a fully populated table.
            let key = service_key(n / 2);
            let mut d = dest(3, port_of(&key));
            d.weight = 5;
            let before = h.stats();
            let start = Instant::now();
            h.destinations(key).edit(d.clone())?;
            let took = start.elapsed();
            let ops = h.stats().requests - before.requests;
            let got = h.destinations(key).dump()?;
            ensure!(got.iter().any(|x| x.config == d), "weight not applied");
            let ServiceKey::Addr { addr, port, .. } = key else {
                bail!("address key expected")
            };
            // The same kind of change through ipvsadm (one process, one netlink request).
            let start = Instant::now();
            let out = Command::new("ipvsadm")
                .args(["-e", "-t", &format!("{addr}:{port}"), "-r"])
                .arg(format!("{}:{}", d.addr, d.port))
                .args(["-g", "-w", "6"])
                .output()?;
            let ipvsadm_e = start.elapsed();
            println!(
                "BENCH weight_change n={n} ours_ops={ops} ours_us={:.0} ipvsadm_e_us={:.0} ipvsadm_e_ok={} {}",
                took.as_secs_f64() * 1e6,
                ipvsadm_e.as_secs_f64() * 1e6,
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        h.flush()?;

        // Peer: ipvsadm -R with the equivalent rules file.
        let rules = restore_file(n);
        let peer = ipvsadm_restore(&rules)?;
        let (s, d, _) = observe(&h)?;
        ensure!(
            s == n as usize && d == want_dests,
            "ipvsadm installed {s}/{d}"
        );
        h.flush()?;
        println!(
            "BENCH ipvsadm_R n={n} cold_sync_ms={:.1} ratio_ipvsadm_over_ours={:.2}",
            ms(peer),
            peer.as_secs_f64() / ours.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "BENCH peak_rss_kib={} decode={:?}",
        vm_hwm_kib().unwrap_or(0),
        h.stats().decode
    );
    Ok(())
}
