//! Host tests of the netns topology helper: real namespaces on the host kernel (needs root).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use kube_lvs_e2e::topology::{HostSpec, Topology, TopologySpec, lvs_lan, wait_until};

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn lvs_lan_pings_serves_and_tears_down() -> anyhow::Result<()> {
    let topo = Topology::lvs_lan()?;
    let prefix = format!("{}-", topo.prefix());
    assert_eq!(namespaces_with_prefix(&prefix).len(), 5);

    let t = Duration::from_secs(3);
    assert!(topo.ping(lvs_lan::CLIENT, IpAddr::V4(lvs_lan::RS1_V4), t)?);
    assert!(topo.ping(lvs_lan::DIRECTOR1, IpAddr::V6(lvs_lan::RS2_V6), t)?);
    // Nobody owns the VIP yet.
    assert!(!topo.ping(
        lvs_lan::CLIENT,
        IpAddr::V4(lvs_lan::VIP_V4),
        Duration::from_millis(300)
    )?);

    assert!(topo.has_addr(lvs_lan::RS1, IpAddr::V4(lvs_lan::RS1_V4))?);
    assert!(!topo.has_addr(lvs_lan::RS1, IpAddr::V4(lvs_lan::RS2_V4))?);
    assert_eq!(topo.sysctl(lvs_lan::DIRECTOR1, "net.ipv4.ip_forward")?, "1");
    assert_eq!(topo.sysctl(lvs_lan::CLIENT, "net.ipv4.ip_forward")?, "0");

    let server = topo.serve_http(lvs_lan::RS1, 8080)?;
    let reply = topo.http_get(
        lvs_lan::CLIENT,
        SocketAddr::new(IpAddr::V6(lvs_lan::RS1_V6), 8080),
        "/",
        t,
    )?;
    assert_eq!((reply.status, reply.body.as_str()), (200, "rs1\n"));
    server.set_status(503);
    let reply = topo.http_get(
        lvs_lan::CLIENT,
        SocketAddr::new(IpAddr::V4(lvs_lan::RS1_V4), 8080),
        "/healthz",
        t,
    )?;
    assert_eq!(reply.status, 503);
    assert_eq!(server.hits(), 2);
    drop(server);

    drop(topo);
    assert!(namespaces_with_prefix(&prefix).is_empty());
    assert!(
        !Path::new(&format!(
            "/run/netns/{}switch",
            prefix.trim_end_matches('-')
        ))
        .exists()
    );
    Ok(())
}

#[test]
fn spawned_processes_die_with_the_topology() -> anyhow::Result<()> {
    let topo = TopologySpec::new("spawn")
        .lan("lan")
        .host(HostSpec::new("a").nic("lan", "203.0.113.1/24"))
        .build_topology()?;
    let mut guarded = topo.spawn("a", &["sleep", "300"])?;
    // A daemon-like process started through exec, not guarded by anyone.
    topo.sh("a", "setsid sleep 301 >/dev/null 2>&1 < /dev/null &")?;
    let ns = topo.ns("a")?;
    let pids = |ns: &str| -> usize {
        std::process::Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .count()
            })
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(5),
        "two processes in the namespace",
        || pids(&ns) == 2,
    )?;
    assert!(guarded.try_wait()?.is_none());
    let pid = guarded.pid();
    drop(topo);
    assert!(!Path::new("/run/netns").join(&ns).exists());
    // The guarded child was killed by the teardown; reaping it must report an exit.
    assert!(guarded.wait_timeout(Duration::from_secs(5)).is_ok());
    assert!(
        !Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .is_empty()
        }
    );
    Ok(())
}

#[test]
fn routed_topology_uses_gateway() -> anyhow::Result<()> {
    let topo = TopologySpec::new("route")
        .lan("front")
        .lan("back")
        .host(
            HostSpec::new("client")
                .nic("front", "203.0.113.10/24")
                .gateway("router"),
        )
        .host(
            HostSpec::new("router")
                .nic("front", "203.0.113.1/24")
                .nic("back", "198.51.100.1/24")
                .sysctl("net.ipv4.ip_forward", "1"),
        )
        .host(
            HostSpec::new("server")
                .nic("back", "198.51.100.10/24")
                .gateway("router"),
        )
        .build_topology()?;
    assert_eq!(topo.iface("router", "back")?, "eth1");
    assert!(topo.ping("client", "198.51.100.10".parse()?, Duration::from_secs(3))?);
    Ok(())
}

#[test]
fn invalid_description_creates_nothing() {
    let before = namespaces_with_prefix(&format!("bad-{}-", std::process::id())).len();
    let err = TopologySpec::new("bad")
        .lan("lan")
        .host(HostSpec::new("a").nic("nolan", "192.0.2.1/24"))
        .build_topology();
    assert!(err.is_err());
    assert_eq!(
        namespaces_with_prefix(&format!("bad-{}-", std::process::id())).len(),
        before
    );
}
