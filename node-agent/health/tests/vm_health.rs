//! The manager driving real IPVS destinations (root, inside the test VM; `test = false`):
//! a stopped real server leaves rotation (removed or weight 0), comes back on recovery, and
//! losing quorum switches to the sorry server.

mod support;
mod vm_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use kube_lvs_health::effect::{FailurePolicy, Quorum, ServicePolicy, SorryServer};
use kube_lvs_health::spec::Probe;
use kube_lvs_health::{CheckKey, CheckSpec, Manager, ManagerConfig, Transition};
use kube_lvs_ipvs::{IpvsHandle, Protocol, Scheduler, Service, ServiceKey};
use support::{HttpServer, Mode};
use tokio::sync::mpsc;
use vm_support::{Configured, Netns, Reconciler, ip};

fn tcp_check() -> CheckSpec {
    let mut s = CheckSpec::new(Probe::Tcp);
    s.timing.interval = Duration::from_millis(200);
    s.timing.timeout = Duration::from_millis(500);
    s.timing.rise = 2;
    s.timing.fall = 2;
    s.timing.jitter = Duration::ZERO;
    s
}

struct Bed {
    _ns: Netns,
    servers: Vec<HttpServer>,
    manager: Manager,
    events: mpsc::Receiver<Transition>,
    rec: Reconciler,
}

/// Service 203.0.113.10:80 with real servers on 192.0.2.11.. in a fresh namespace.
async fn bed(
    tag: &str,
    n: usize,
    policy: ServicePolicy<SocketAddr>,
    extra: &[&str],
) -> Result<Bed> {
    let ns = Netns::enter(tag)?;
    let addrs: Vec<String> = (0..n).map(|i| format!("192.0.2.{}", 11 + i)).collect();
    let mut all: Vec<&str> = addrs.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    ns.add_local(&all)?;
    let mut servers = Vec::new();
    for a in &addrs {
        servers.push(HttpServer::start(a, Mode::Answer(200, "ok".into())).await?);
    }
    let handle = IpvsHandle::new().context("IPVS netlink")?;
    let service = ServiceKey::addr(Protocol::Tcp, ip("203.0.113.10"), 80);
    handle
        .services()
        .add(Service::new(service, Scheduler::WeightedRoundRobin))?;
    let (tx, events) = mpsc::channel(64);
    let mut manager = Manager::new(ManagerConfig::default(), tx);
    manager.update(
        servers
            .iter()
            .map(|s| (CheckKey::new("default/web", s.addr), tcp_check())),
    );
    let mut rec = Reconciler {
        handle,
        service,
        servers: servers
            .iter()
            .map(|s| Configured {
                addr: s.addr,
                weight: 1,
            })
            .collect(),
        policy,
        health: Default::default(),
        quorum_up: None,
        operations: 0,
    };
    for s in &servers {
        let info = manager
            .probe_info(&CheckKey::new("default/web", s.addr))
            .context("probe info")?;
        rec.health.insert(s.addr, info.healthy);
    }
    rec.apply()?;
    Ok(Bed {
        _ns: ns,
        servers,
        manager,
        events,
        rec,
    })
}

impl Bed {
    /// Applies transitions as they come until the kernel table satisfies `want`.
    async fn until(
        &mut self,
        what: &str,
        want: impl Fn(&BTreeMap<SocketAddr, u32>) -> bool,
    ) -> Result<BTreeMap<SocketAddr, u32>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let table = self.rec.kernel()?;
            if want(&table) {
                return Ok(table);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                anyhow::bail!("timed out waiting for {what}; table {table:?}");
            }
            if let Ok(Some(t)) = tokio::time::timeout(left, self.events.recv()).await {
                self.rec.health.insert(t.key.target, t.healthy);
                self.rec.apply()?;
            }
        }
    }
}

#[tokio::test]
async fn stopped_server_is_removed_and_returns() -> Result<()> {
    let mut b = bed("remove", 2, ServicePolicy::default(), &[]).await?;
    let (a0, a1) = (b.servers[0].addr, b.servers[1].addr);
    let t = b.until("both in", |t| t.len() == 2).await?;
    assert_eq!(t.get(&a0), Some(&1));

    b.servers[0].set_mode(Mode::Refuse).await?;
    let t = b.until("a0 removed", |t| !t.contains_key(&a0)).await?;
    assert_eq!(t.get(&a1), Some(&1), "the healthy server stays");
    let info = b
        .manager
        .probe_info(&CheckKey::new("default/web", a0))
        .context("info")?;
    assert!(!info.healthy);
    assert_eq!(info.last_error.as_deref(), Some("connection refused"));

    b.servers[0]
        .set_mode(Mode::Answer(200, "ok".into()))
        .await?;
    let t = b.until("a0 back", |t| t.get(&a0) == Some(&1)).await?;
    assert_eq!(t.len(), 2);
    Ok(())
}

#[tokio::test]
async fn quiesce_policy_sets_weight_zero() -> Result<()> {
    let policy = ServicePolicy {
        on_failure: FailurePolicy::Quiesce,
        ..Default::default()
    };
    let mut b = bed("quiesce", 2, policy, &[]).await?;
    let a0 = b.servers[0].addr;
    b.until("both in", |t| t.len() == 2).await?;
    b.servers[0].set_mode(Mode::Refuse).await?;
    let t = b.until("a0 weight 0", |t| t.get(&a0) == Some(&0)).await?;
    assert_eq!(t.len(), 2, "quiesced destination stays in the table");
    b.servers[0]
        .set_mode(Mode::Answer(200, "ok".into()))
        .await?;
    b.until("a0 weight 1", |t| t.get(&a0) == Some(&1)).await?;
    Ok(())
}

#[tokio::test]
async fn quorum_loss_switches_to_sorry_server() -> Result<()> {
    let sorry: SocketAddr = "192.0.2.99:8080".parse()?;
    let policy = ServicePolicy {
        on_failure: FailurePolicy::Remove,
        quorum: Quorum {
            min_weight: 2,
            hysteresis: 0,
        },
        sorry: Some(SorryServer {
            key: sorry,
            weight: 1,
        }),
    };
    let mut b = bed("sorry", 2, policy, &[]).await?;
    let (a0, a1) = (b.servers[0].addr, b.servers[1].addr);
    let t = b.until("both in", |t| t.len() == 2).await?;
    assert!(!t.contains_key(&sorry));

    b.servers[0].set_mode(Mode::Refuse).await?;
    let t = b.until("sorry in", |t| t.get(&sorry) == Some(&1)).await?;
    assert!(!t.contains_key(&a0), "failed server removed");
    assert_eq!(t.get(&a1), Some(&0), "healthy server stands by at weight 0");

    b.servers[0]
        .set_mode(Mode::Answer(200, "ok".into()))
        .await?;
    let t = b
        .until("sorry out", |t| !t.contains_key(&sorry) && t.len() == 2)
        .await?;
    assert_eq!((t.get(&a0), t.get(&a1)), (Some(&1), Some(&1)));
    Ok(())
}
