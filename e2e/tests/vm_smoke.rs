//! Smoke test of the IPVS test bed, run inside the VM by `e2e/tools/vm-suite.sh`: the kernel
//! has IPVS, `ipvsadm` works in a namespace, and a hand-made LVS-DR service on the classic
//! `lvs_lan` topology spreads client connections over both real servers (IPv4 and IPv6).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use kube_lvs_e2e::topology::{HttpServer, Topology, lvs_lan, wait_until};
use kube_lvs_e2e::vm;

const PORT: u16 = 80;
const REQUESTS: usize = 6;

fn require_vm() -> anyhow::Result<()> {
    ensure!(
        vm::in_vm(),
        "vm_smoke runs inside the test VM only: e2e/tools/vm-suite.sh vm_smoke"
    );
    Ok(())
}

/// The real-server side of LVS-DR from the classic guides' realserver.sh: VIP on `lo`, and
/// ARP sysctls so the real server neither answers nor advertises ARP for the VIP.
fn prepare_real_server(topo: &Topology, host: &str) -> anyhow::Result<HttpServer> {
    topo.sh(
        host,
        &format!(
            "sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
             net.ipv4.conf.lo.arp_ignore=1 net.ipv4.conf.lo.arp_announce=2 && \
             ip addr add {}/32 dev lo && ip addr add {}/128 dev lo",
            lvs_lan::VIP_V4,
            lvs_lan::VIP_V6
        ),
    )?;
    Ok(topo.serve_http(host, PORT)?)
}

fn count_answers(
    topo: &Topology,
    vip: SocketAddr,
    requests: usize,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for _ in 0..requests {
        let reply = topo
            .http_get(lvs_lan::CLIENT, vip, "/", Duration::from_secs(5))
            .with_context(|| format!("GET http://{vip}/ from the client"))?;
        ensure!(reply.status == 200, "status {} from {vip}", reply.status);
        *seen.entry(reply.body.trim().to_string()).or_insert(0) += 1;
    }
    Ok(seen)
}

#[test]
fn ipvs_module_is_loaded() -> anyhow::Result<()> {
    require_vm()?;
    ensure!(
        Path::new("/proc/net/ip_vs").exists(),
        "/proc/net/ip_vs missing"
    );
    let modules = std::fs::read_to_string("/proc/modules")?;
    for m in [
        "ip_vs ",
        "ip_vs_rr ",
        "ip_vs_wlc ",
        "ip_vs_mh ",
        "veth ",
        "bridge ",
    ] {
        // Built-in is fine too, so only require the module when /sys says it is modular.
        let name = m.trim();
        let builtin = Path::new("/sys/module").join(name).exists() && !modules.contains(m);
        ensure!(modules.contains(m) || builtin, "module {name} not loaded");
    }
    Ok(())
}

#[test]
fn ipvsadm_lists_in_a_director_namespace() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let out = topo.exec_ok(lvs_lan::DIRECTOR1, &["ipvsadm", "-Ln"])?;
    ensure!(
        out.contains("IP Virtual Server version"),
        "unexpected ipvsadm output: {out}"
    );
    // IPVS state is per namespace: a service added in director1 is invisible in director2.
    topo.exec_ok(
        lvs_lan::DIRECTOR1,
        &["ipvsadm", "-A", "-t", "192.0.2.200:443", "-s", "wlc"],
    )?;
    let d1 = topo.exec_ok(lvs_lan::DIRECTOR1, &["ipvsadm", "-Ln"])?;
    let d2 = topo.exec_ok(lvs_lan::DIRECTOR2, &["ipvsadm", "-Ln"])?;
    ensure!(d1.contains("192.0.2.200:443 wlc"), "director1: {d1}");
    ensure!(
        !d2.contains("192.0.2.200"),
        "director2 sees director1's service: {d2}"
    );
    Ok(())
}

#[test]
fn direct_routing_round_robin_reaches_both_real_servers() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let _rs1 = prepare_real_server(&topo, lvs_lan::RS1)?;
    let _rs2 = prepare_real_server(&topo, lvs_lan::RS2)?;

    let vip = lvs_lan::VIP_V4;
    let service = format!("{vip}:{PORT}");
    topo.sh(
        lvs_lan::DIRECTOR1,
        &format!(
            "ip addr add {vip}/32 dev eth0 && \
             ipvsadm -A -t {service} -s rr && \
             ipvsadm -a -t {service} -r {}:{PORT} -g -w 1 && \
             ipvsadm -a -t {service} -r {}:{PORT} -g -w 1",
            lvs_lan::RS1_V4,
            lvs_lan::RS2_V4
        ),
    )?;
    let listing = topo.exec_ok(lvs_lan::DIRECTOR1, &["ipvsadm", "-Ln"])?;
    ensure!(
        listing.matches("Route").count() == 2,
        "expected two DR destinations: {listing}"
    );

    let seen = count_answers(&topo, SocketAddr::new(IpAddr::V4(vip), PORT), REQUESTS)?;
    // rr hands each new connection to the next server, so both get exactly half.
    let expected: BTreeMap<String, usize> = [
        (lvs_lan::RS1.to_string(), REQUESTS / 2),
        (lvs_lan::RS2.to_string(), REQUESTS / 2),
    ]
    .into();
    ensure!(seen == expected, "answers per real server: {seen:?}");

    // The kernel counted the connections on the service it forwarded them through. IPVS
    // folds its per-CPU counters into the totals from its 2 s estimator timer, so poll.
    let conns = || -> Option<u64> {
        let stats = topo
            .exec_ok(lvs_lan::DIRECTOR1, &["ipvsadm", "-Ln", "--stats"])
            .ok()?;
        stats
            .lines()
            .find(|l| l.contains(&service))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|c| c.parse().ok())
    };
    wait_until(Duration::from_secs(10), "IPVS connection counter", || {
        conns() == Some(REQUESTS as u64)
    })
    .with_context(|| format!("service counted {:?} connections", conns()))?;

    // DR means replies go straight from the real server to the client: the real servers,
    // not the director, hold the client in their neighbour tables.
    let neigh = topo.exec_ok(lvs_lan::RS1, &["ip", "neigh", "show"])?;
    ensure!(
        neigh.contains(&lvs_lan::CLIENT_V4.to_string()),
        "rs1 never talked to the client directly: {neigh}"
    );
    Ok(())
}

#[test]
fn direct_routing_over_ipv6() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let _rs1 = prepare_real_server(&topo, lvs_lan::RS1)?;
    let _rs2 = prepare_real_server(&topo, lvs_lan::RS2)?;

    let vip = lvs_lan::VIP_V6;
    let service = format!("[{vip}]:{PORT}");
    topo.sh(
        lvs_lan::DIRECTOR1,
        &format!(
            "ip addr add {vip}/128 dev eth0 nodad && \
             ipvsadm -A -t {service} -s rr && \
             ipvsadm -a -t {service} -r [{}]:{PORT} -g && \
             ipvsadm -a -t {service} -r [{}]:{PORT} -g",
            lvs_lan::RS1_V6,
            lvs_lan::RS2_V6
        ),
    )?;
    wait_until(Duration::from_secs(5), "VIP on director1", || {
        topo.has_addr(lvs_lan::DIRECTOR1, IpAddr::V6(vip))
            .unwrap_or(false)
    })?;
    let seen = count_answers(&topo, SocketAddr::new(IpAddr::V6(vip), PORT), REQUESTS)?;
    ensure!(
        seen.get(lvs_lan::RS1) == Some(&(REQUESTS / 2))
            && seen.get(lvs_lan::RS2) == Some(&(REQUESTS / 2)),
        "answers per real server over IPv6: {seen:?}"
    );
    Ok(())
}
