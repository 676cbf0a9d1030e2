//! Helpers for tests that need the IPVS kernel (run as root inside the test VM).
#![allow(dead_code)]

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};
use kube_lvs_ipvs::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace that the *current thread* has entered. IPVS tables are per
/// namespace, so every test gets an empty table of its own. Dropping it deletes the namespace.
pub struct Netns {
    pub name: String,
    /// The thread's namespace before [`Netns::enter`]; restored on drop.
    original: Option<File>,
}

impl Netns {
    /// Creates a namespace without entering it.
    pub fn create(tag: &str) -> anyhow::Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("kl-ipvs-{tag}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Netns {
            name,
            original: None,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates a namespace and moves the current thread into it.
    pub fn enter(tag: &str) -> anyhow::Result<Self> {
        let original = File::open("/proc/thread-self/ns/net").context("open own netns")?;
        let mut ns = Netns::create(tag)?;
        let f = File::open(format!("/run/netns/{}", ns.name)).context("open new netns")?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        ns.original = Some(original);
        Ok(ns)
    }

    /// Runs a shell snippet inside the namespace.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        run("ip", &["netns", "exec", &self.name, "bash", "-c", script])
    }

    /// Runs `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", &self.name, "ip"];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `ipvsadm <args>` inside the namespace and returns stdout.
    pub fn ipvsadm(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", &self.name, "ipvsadm"];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `ipvsadm` with a rules file on stdin (`ipvsadm -R`).
    pub fn ipvsadm_restore(&self, rules: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "ipvsadm", "-R"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("spawn ipvsadm -R")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(rules.as_bytes())?;
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("ipvsadm -R failed: {status}");
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Leave the namespace before deleting it so the thread does not keep it alive.
        if let Some(original) = &self.original {
            let _ = nix::sched::setns(original, nix::sched::CloneFlags::CLONE_NEWNET);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("spawn {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

pub fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
}

/// A table exercising every forwarding method, thresholds, IPv6 and firewall marks.
pub fn mixed_table() -> Vec<(Service, Vec<Destination>)> {
    let mut web = Service::new(
        ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 1), 80),
        Scheduler::WeightedLeastConnection,
    );
    web.persistence = Some(Persistence {
        timeout_secs: 300,
        prefix_len: 24,
    });
    let mut dns6 = Service::new(
        ServiceKey::addr(Protocol::Udp, v6(1), 53),
        Scheduler::SourceHashing,
    );
    dns6.sched_flags.fallback = true;
    dns6.sched_flags.port = true;
    dns6.one_packet = true;
    let mut fw = Service::new(
        ServiceKey::fwmark(AddressFamily::Ipv4, 42),
        Scheduler::MaglevHashing,
    );
    fw.sched_flags.port = true;
    let fw6 = Service::new(
        ServiceKey::fwmark(AddressFamily::Ipv6, 43),
        Scheduler::RoundRobin,
    );
    let mut sctp = Service::new(
        ServiceKey::addr(Protocol::Sctp, v4(198, 51, 100, 3), 3868),
        Scheduler::LocalityBasedLeastConnectionReplication,
    );
    sctp.persistence = Some(Persistence {
        timeout_secs: 60,
        prefix_len: 32,
    });
    let mut p6 = Service::new(
        ServiceKey::addr(Protocol::Tcp, v6(2), 443),
        Scheduler::NeverQueue,
    );
    p6.persistence = Some(Persistence {
        timeout_secs: 900,
        prefix_len: 64,
    });
    let d = |addr, port, forwarding, weight, u, l| Destination {
        addr,
        port,
        forwarding,
        weight,
        upper_threshold: u,
        lower_threshold: l,
    };
    vec![
        (
            web,
            vec![
                d(v4(203, 0, 113, 1), 8080, Forwarding::Masquerade, 3, 100, 10),
                d(v4(203, 0, 113, 2), 80, Forwarding::DirectRoute, 0, 0, 0),
                d(
                    v4(203, 0, 113, 3),
                    80,
                    Forwarding::Tunnel(TunnelType::Ipip),
                    5,
                    0,
                    0,
                ),
            ],
        ),
        (
            dns6,
            vec![
                d(v6(5), 53, Forwarding::Tunnel(TunnelType::Ipip), 1, 0, 0),
                d(v6(6), 53, Forwarding::DirectRoute, 2, 50, 5),
            ],
        ),
        (
            fw,
            vec![
                d(
                    v4(203, 0, 113, 9),
                    0,
                    Forwarding::Tunnel(TunnelType::Gue {
                        port: 6080,
                        csum: TunnelChecksum::None,
                    }),
                    1,
                    0,
                    0,
                ),
                d(
                    v4(203, 0, 113, 10),
                    0,
                    Forwarding::Tunnel(TunnelType::Gre {
                        csum: TunnelChecksum::Csum,
                    }),
                    1,
                    0,
                    0,
                ),
                d(
                    v4(203, 0, 113, 11),
                    0,
                    Forwarding::Tunnel(TunnelType::Gue {
                        port: 6081,
                        csum: TunnelChecksum::RemCsum,
                    }),
                    4,
                    0,
                    0,
                ),
            ],
        ),
        (fw6, vec![d(v6(9), 0, Forwarding::DirectRoute, 7, 0, 0)]),
        (
            sctp,
            vec![d(
                v4(203, 0, 113, 20),
                3868,
                Forwarding::Masquerade,
                1,
                0,
                0,
            )],
        ),
        (p6, vec![d(v6(10), 443, Forwarding::Masquerade, 9, 0, 0)]),
    ]
}
