//! Helpers for the VM tests: a private network namespace per test and a small reconciler that
//! applies the effect logic to a real IPVS service (standing in for the node-agent data plane).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use kube_lvs_health::effect::{Effect, Member, ServicePolicy, plan_effective};
use kube_lvs_ipvs::{Destination, Forwarding, IpvsHandle, ServiceKey};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace entered by the current thread; IPVS tables are per namespace, so
/// each test starts empty. Dropping it leaves and deletes the namespace.
pub struct Netns {
    pub name: String,
    original: File,
}

impl Netns {
    pub fn enter(tag: &str) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("kl-health-{tag}-{}-{n}", std::process::id());
        let original = File::open("/proc/thread-self/ns/net").context("open own netns")?;
        run("ip", &["netns", "add", &name])?;
        let guard = Netns { name, original };
        let f = File::open(format!("/run/netns/{}", guard.name)).context("open new netns")?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        guard.ip(&["link", "set", "lo", "up"])?;
        Ok(guard)
    }

    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["netns", "exec", &self.name, "ip"];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Puts addresses on `lo` so local servers can listen on them.
    pub fn add_local(&self, addrs: &[&str]) -> Result<()> {
        for a in addrs {
            self.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = nix::sched::setns(&self.original, nix::sched::CloneFlags::CLONE_NEWNET);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("spawn {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Configured real server of the test service.
#[derive(Clone, Debug)]
pub struct Configured {
    pub addr: SocketAddr,
    pub weight: u32,
}

/// Keeps one IPVS service in line with health: transitions in, destinations out.
pub struct Reconciler {
    pub handle: IpvsHandle,
    pub service: ServiceKey,
    pub servers: Vec<Configured>,
    pub policy: ServicePolicy<SocketAddr>,
    pub health: HashMap<SocketAddr, bool>,
    pub quorum_up: Option<bool>,
    pub operations: usize,
}

impl Reconciler {
    pub fn effect(&mut self) -> Effect<SocketAddr> {
        let members: Vec<Member<SocketAddr>> = self
            .servers
            .iter()
            .map(|s| Member {
                key: s.addr,
                weight: s.weight,
                healthy: self.health.get(&s.addr).copied().unwrap_or(true),
                drain: false,
            })
            .collect();
        let e = plan_effective(&members, &self.policy, self.quorum_up);
        self.quorum_up = Some(e.quorum_up);
        e
    }

    /// Diffs the effective set against the kernel and applies the difference.
    pub fn apply(&mut self) -> Result<Effect<SocketAddr>> {
        let effect = self.effect();
        let want: BTreeMap<SocketAddr, u32> = effect
            .destinations
            .iter()
            .map(|d| (d.key, d.weight))
            .collect();
        let dests = self.handle.destinations(self.service);
        let have: BTreeMap<SocketAddr, Destination> = dests
            .dump()?
            .into_iter()
            .map(|d| (SocketAddr::new(d.config.addr, d.config.port), d.config))
            .collect();
        for (addr, cfg) in &have {
            if !want.contains_key(addr) {
                dests.delete(cfg.key())?;
                self.operations += 1;
            }
        }
        for (addr, weight) in &want {
            let mut d = Destination::new(addr.ip(), addr.port(), Forwarding::Masquerade);
            d.weight = *weight;
            match have.get(addr) {
                None => dests.add(d)?,
                Some(old) if old.weight != *weight => dests.edit(d)?,
                Some(_) => continue,
            }
            self.operations += 1;
        }
        Ok(effect)
    }

    /// Current kernel view: destination → weight.
    pub fn kernel(&self) -> Result<BTreeMap<SocketAddr, u32>> {
        Ok(self
            .handle
            .destinations(self.service)
            .dump()?
            .into_iter()
            .map(|d| {
                (
                    SocketAddr::new(d.config.addr, d.config.port),
                    d.config.weight,
                )
            })
            .collect())
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}
