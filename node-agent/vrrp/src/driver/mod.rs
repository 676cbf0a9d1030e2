//! The effectful side: sockets, timers, VIPs and announcements around the pure [`Machine`].
//!
//! Instances are grouped into units: an ungrouped instance is a unit of one; the members of a
//! sync group share one unit so their machines are stepped together (see [`plan_group`]).
//! Each unit is one tokio task; each instance has one receive task feeding it.

pub mod announce;
pub mod iface;
pub mod netlink;
pub mod socket;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::counters::Counters;
use crate::machine::{Action, Event, Machine, MachineConfig, State, plan_group};
use crate::packet::{Advert, Auth, DropReason, Expect, Family, MCAST_V4, MCAST_V6, Version};
use announce::Announcer;
use iface::Interface;
use socket::{RecvError, RxSocket, TxSocket};

/// One virtual IP with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vip {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl FromStr for Vip {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Vip, ConfigError> {
        let bad = || ConfigError::Vip(s.to_string());
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match p {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix_len > max {
            return Err(bad());
        }
        Ok(Vip { addr, prefix_len })
    }
}

impl<'de> Deserialize<'de> for Vip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Vip, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The interface a VIP lives on, by name and index (adapters use whichever they key on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipLink {
    pub name: String,
    pub index: u32,
}

/// Adds and removes VIPs; the node-agent implements it with `kube-lvs-net`. Both calls are
/// idempotent: adding a present VIP or removing an absent one is success.
pub trait VipControl: Send + Sync + 'static {
    fn add(&self, link: &VipLink, vip: Vip) -> impl Future<Output = Result<(), VipError>> + Send;
    fn remove(&self, link: &VipLink, vip: Vip)
    -> impl Future<Output = Result<(), VipError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("netlink error for {vip} (errno {errno:?}): {message}")]
    Netlink {
        vip: IpAddr,
        errno: Option<i32>,
        message: String,
    },
    #[error("{vip}: {source}")]
    Backend {
        vip: IpAddr,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid VIP {0:?}")]
    Vip(String),
    #[error("instance {0}: {1}")]
    Instance(String, &'static str),
    #[error("duplicate instance name {0}")]
    Duplicate(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("interface {name}: {source}")]
    Interface {
        name: String,
        source: std::io::Error,
    },
    #[error("instance {instance}: socket: {source}")]
    Socket {
        instance: String,
        source: std::io::Error,
    },
    #[error("instance {0}: no usable source address on its interface")]
    NoSource(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn default_true() -> bool {
    true
}
fn default_garp_count() -> u32 {
    5
}
fn default_garp_repeat_delay() -> u64 {
    5000
}
fn default_interval() -> u32 {
    1000
}
fn default_version() -> u8 {
    2
}

/// One VRRP instance, as keepalived's `vrrp_instance`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    pub name: String,
    pub interface: String,
    /// 2 or 3.
    #[serde(default = "default_version")]
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    #[serde(default = "default_interval")]
    pub advert_interval_ms: u32,
    #[serde(default = "default_true")]
    pub preempt: bool,
    #[serde(default)]
    pub preempt_delay_ms: u64,
    pub vips: Vec<Vip>,
    /// Unicast peers instead of multicast.
    #[serde(default)]
    pub unicast_peers: Vec<IpAddr>,
    /// Source address; default: the interface's first IPv4 / link-local IPv6 address.
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// v2 PASS authentication.
    #[serde(default)]
    pub password: Option<String>,
    /// Announcements per burst (keepalived `garp_master_repeat`).
    #[serde(default = "default_garp_count")]
    pub garp_count: u32,
    /// Delay of the second burst (keepalived `garp_master_delay`); 0 disables it.
    #[serde(default = "default_garp_repeat_delay")]
    pub garp_repeat_delay_ms: u64,
    /// Sync group name; members move together.
    #[serde(default)]
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerConfig {
    pub instances: Vec<InstanceConfig>,
}

impl InstanceConfig {
    pub fn vrrp_version(&self) -> Result<Version, ConfigError> {
        match self.version {
            2 => Ok(Version::V2),
            3 => Ok(Version::V3),
            _ => Err(ConfigError::Instance(
                self.name.clone(),
                "version must be 2 or 3",
            )),
        }
    }

    pub fn family(&self) -> Result<Family, ConfigError> {
        let first = self
            .vips
            .first()
            .ok_or_else(|| ConfigError::Instance(self.name.clone(), "no VIPs"))?;
        let fam = Family::of(&first.addr);
        if self.vips.iter().any(|v| Family::of(&v.addr) != fam) {
            return Err(ConfigError::Instance(
                self.name.clone(),
                "VIPs of mixed families",
            ));
        }
        Ok(fam)
    }

    /// Interval in centiseconds, validated for the version.
    pub fn interval_cs(&self) -> Result<u16, ConfigError> {
        let ms = self.advert_interval_ms;
        let err = |m| ConfigError::Instance(self.name.clone(), m);
        if ms == 0 || !ms.is_multiple_of(10) {
            return Err(err("advert_interval_ms must be a positive multiple of 10"));
        }
        let cs = u16::try_from(ms / 10).map_err(|_| err("advert_interval_ms too large"))?;
        match self.vrrp_version()? {
            Version::V2 if !ms.is_multiple_of(1000) || ms / 1000 > 255 => {
                Err(err("v2 advert interval must be whole seconds up to 255"))
            }
            Version::V3 if cs > 4095 => Err(err("v3 advert interval is at most 40950 ms")),
            _ => Ok(cs),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let v = self.vrrp_version()?;
        let fam = self.family()?;
        self.interval_cs()?;
        let err = |m| ConfigError::Instance(self.name.clone(), m);
        if v == Version::V2 && fam == Family::V6 {
            return Err(err("VRRPv2 is IPv4 only; use version 3"));
        }
        if self.vrid == 0 {
            return Err(err("vrid must be 1..255"));
        }
        if self.priority == 0 {
            return Err(err("priority must be 1..255"));
        }
        if self.password.is_some() && v == Version::V3 {
            return Err(err("authentication exists in VRRPv2 only"));
        }
        if self.unicast_peers.iter().any(|p| Family::of(p) != fam) {
            return Err(err("unicast peer of another family"));
        }
        Ok(())
    }

    fn auth(&self) -> Auth {
        match &self.password {
            Some(p) => Auth::simple(p),
            None => Auth::None,
        }
    }
}

impl SpeakerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for i in &self.instances {
            i.validate()?;
            if !seen.insert(i.name.as_str()) {
                return Err(ConfigError::Duplicate(i.name.clone()));
            }
        }
        Ok(())
    }

    /// Units: each sync group, then each ungrouped instance on its own.
    pub fn units(&self) -> Vec<Vec<InstanceConfig>> {
        let mut groups: BTreeMap<&str, Vec<InstanceConfig>> = BTreeMap::new();
        let mut units = Vec::new();
        for i in &self.instances {
            match &i.group {
                Some(g) => groups.entry(g.as_str()).or_default().push(i.clone()),
                None => units.push(vec![i.clone()]),
            }
        }
        units.extend(groups.into_values());
        units
    }
}

/// Runtime requests to a running speaker.
#[derive(Debug, Clone)]
pub enum Control {
    SetPriority { instance: String, priority: u8 },
}

/// Per-instance observable state, shared with callers.
#[derive(Debug)]
pub struct InstanceStatus {
    pub name: String,
    pub counters: Counters,
    state: watch::Sender<State>,
}

impl InstanceStatus {
    pub fn state(&self) -> State {
        *self.state.borrow()
    }
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }
}

/// A running speaker: instance status, control channel and shutdown.
pub struct Speaker {
    pub instances: Vec<Arc<InstanceStatus>>,
    shutdown: watch::Sender<bool>,
    control: Vec<mpsc::UnboundedSender<Control>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Speaker {
    /// Opens sockets and starts every unit in the current network namespace.
    pub fn start<V: VipControl>(cfg: &SpeakerConfig, vips: Arc<V>) -> Result<Speaker, DriverError> {
        cfg.validate()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let origin = Instant::now();
        let mut instances = Vec::new();
        let mut control = Vec::new();
        let mut tasks = Vec::new();
        for unit in cfg.units() {
            let grouped = unit.len() > 1 || unit.iter().any(|i| i.group.is_some());
            let mut runs = Vec::new();
            for ic in unit {
                let r = InstanceRun::open(ic, grouped)?;
                instances.push(r.status.clone());
                runs.push(r);
            }
            let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
            control.push(ctl_tx);
            let unit = Unit {
                runs,
                vips: vips.clone(),
                origin,
            };
            tasks.push(tokio::spawn(unit.run(shutdown_rx.clone(), ctl_rx)));
        }
        Ok(Speaker {
            instances,
            shutdown,
            control,
            tasks,
        })
    }

    pub fn set_priority(&self, instance: &str, priority: u8) {
        for c in &self.control {
            let _ = c.send(Control::SetPriority {
                instance: instance.to_string(),
                priority,
            });
        }
    }

    /// Prometheus text of every instance's counters.
    pub fn render_metrics(&self) -> String {
        let mut s = String::new();
        for i in &self.instances {
            i.counters.render(&i.name, &mut s);
        }
        s
    }

    /// Graceful stop: masters send priority 0 and drop their VIPs; waits for every unit.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// One opened instance.
struct InstanceRun {
    cfg: InstanceConfig,
    machine: Machine,
    link: VipLink,
    tx: TxSocket,
    rx: Option<RxSocket>,
    announcer: Arc<Announcer>,
    expect: Expect,
    status: Arc<InstanceStatus>,
    span: Span,
    garp_task: Option<JoinHandle<()>>,
}

impl InstanceRun {
    fn open(cfg: InstanceConfig, grouped: bool) -> Result<InstanceRun, DriverError> {
        let version = cfg.vrrp_version()?;
        let family = cfg.family()?;
        let interval_cs = cfg.interval_cs()?;
        let iface = Interface::lookup(&cfg.interface)?;
        let vip_addrs: Vec<IpAddr> = cfg.vips.iter().map(|v| v.addr).collect();
        let src = match (cfg.source, family) {
            (Some(s), _) => s,
            (None, Family::V4) => iface
                .ipv4
                .iter()
                .find(|a| !vip_addrs.contains(&IpAddr::V4(**a)))
                .map(|a| IpAddr::V4(*a))
                .ok_or_else(|| DriverError::NoSource(cfg.name.clone()))?,
            (None, Family::V6) => iface
                .link_local_v6
                .map(IpAddr::V6)
                .ok_or_else(|| DriverError::NoSource(cfg.name.clone()))?,
        };
        let sock_err = |source| DriverError::Socket {
            instance: cfg.name.clone(),
            source,
        };
        let multicast = cfg.unicast_peers.is_empty();
        let tx = TxSocket::open(src, &iface.name, iface.index).map_err(sock_err)?;
        let rx = RxSocket::open(family, &iface.name, iface.index, multicast).map_err(sock_err)?;
        let has_v4 = vip_addrs.iter().any(|a| a.is_ipv4());
        let v6_src = if vip_addrs.iter().any(|a| a.is_ipv6()) {
            iface.link_local_v6
        } else {
            None
        };
        let announcer =
            Announcer::open(iface.index, iface.mac, has_v4, v6_src).map_err(sock_err)?;
        let machine = Machine::new(MachineConfig {
            version,
            priority: cfg.priority,
            advert_interval_cs: interval_cs,
            preempt: cfg.preempt,
            preempt_delay: Duration::from_millis(cfg.preempt_delay_ms),
            primary_addr: src,
            grouped,
        });
        let expect = Expect {
            version,
            vrid: cfg.vrid,
            auth: cfg.auth(),
            addresses: vip_addrs,
            interval_cs,
        };
        let span = info_span!("vrrp", instance = %cfg.name, vrid = cfg.vrid, interface = %iface.name,
            vip = %cfg.vips.first().map(|v| v.addr.to_string()).unwrap_or_default());
        let (state_tx, _) = watch::channel(State::Initialize);
        let status = Arc::new(InstanceStatus {
            name: cfg.name.clone(),
            counters: Counters::default(),
            state: state_tx,
        });
        let link = VipLink {
            name: iface.name.clone(),
            index: iface.index,
        };
        Ok(InstanceRun {
            cfg,
            machine,
            link,
            tx,
            rx: Some(rx),
            announcer: Arc::new(announcer),
            expect,
            status,
            span,
            garp_task: None,
        })
    }

    fn send_advert(&self, priority: u8) {
        let advert = Advert {
            version: self.expect.version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs: self.expect.interval_cs,
            addresses: self.expect.addresses.clone(),
            auth: self.expect.auth,
        };
        let dsts: Vec<IpAddr> = if self.cfg.unicast_peers.is_empty() {
            match self.tx.src {
                IpAddr::V4(_) => vec![IpAddr::V4(MCAST_V4)],
                IpAddr::V6(_) => vec![IpAddr::V6(MCAST_V6)],
            }
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in dsts {
            match advert.encode(self.tx.src, dst) {
                Ok(msg) => match self.tx.send(dst, &msg) {
                    Ok(()) => {
                        self.status
                            .counters
                            .adverts_sent
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => debug!(%dst, error = %e, "advert send failed"),
                },
                Err(e) => warn!(error = %e, "advert encode failed"),
            }
        }
    }

    fn announce(&mut self) {
        let vips: Vec<Vip> = self.cfg.vips.clone();
        let announcer = self.announcer.clone();
        let count = self.cfg.garp_count;
        let status = self.status.clone();
        let burst = move || {
            for _ in 0..count {
                for v in &vips {
                    let r = match v.addr {
                        IpAddr::V4(a) => announcer.announce_v4(a),
                        IpAddr::V6(a) => announcer.announce_v6(a),
                    };
                    match r {
                        Ok(()) => {
                            status
                                .counters
                                .gratuitous_sent
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => debug!(vip = %v.addr, error = %e, "announcement failed"),
                    }
                }
            }
        };
        burst();
        let delay = self.cfg.garp_repeat_delay_ms;
        if delay > 0 {
            let span = self.span.clone();
            self.garp_task = Some(tokio::spawn(
                async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    burst();
                }
                .instrument(span),
            ));
        }
    }

    fn stop_announcing(&mut self) {
        if let Some(t) = self.garp_task.take() {
            t.abort();
        }
    }
}

struct Unit<V> {
    runs: Vec<InstanceRun>,
    vips: Arc<V>,
    origin: Instant,
}

/// What a receive task hands to its unit.
enum Inbound {
    Advert(usize, Advert, IpAddr),
}

impl<V: VipControl> Unit<V> {
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }

    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(256);
        let mut receivers = Vec::new();
        for (idx, run) in self.runs.iter_mut().enumerate() {
            let Some(rx) = run.rx.take() else { continue };
            let expect = run.expect.clone();
            let status = run.status.clone();
            let own = run.tx.src;
            let family = Family::of(&own);
            let tx = in_tx.clone();
            receivers.push(tokio::spawn(
                receive_loop(idx, rx, expect, family, own, status, tx).instrument(run.span.clone()),
            ));
        }
        // Start from a clean slate: a VIP left by a crashed predecessor must not linger on a
        // backup.
        for idx in 0..self.runs.len() {
            self.remove_vips(idx).await;
        }
        for idx in 0..self.runs.len() {
            self.dispatch(idx, Event::Startup).await;
        }
        loop {
            let next = self
                .runs
                .iter()
                .filter_map(|r| r.machine.deadline().map(|(_, at)| at))
                .min();
            let sleep_until = match next {
                Some(at) => self.origin + at,
                None => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(ctl) = control.recv() => match ctl {
                    Control::SetPriority { instance, priority } => {
                        if let Some(idx) = self.runs.iter().position(|r| r.cfg.name == instance) {
                            self.dispatch(idx, Event::SetPriority(priority)).await;
                        }
                    }
                },
                Some(Inbound::Advert(idx, adv, src)) = in_rx.recv() => {
                    let ev = Event::Advert { priority: adv.priority, interval_cs: adv.interval_cs, src };
                    self.dispatch(idx, ev).await;
                }
                _ = tokio::time::sleep_until(sleep_until) => {
                    let now = self.now();
                    for idx in 0..self.runs.len() {
                        let due = self.runs.get(idx)
                            .and_then(|r| r.machine.deadline())
                            .is_some_and(|(_, at)| at <= now);
                        if due {
                            self.dispatch(idx, Event::Timer).await;
                        }
                    }
                }
            }
        }
        for idx in 0..self.runs.len() {
            self.dispatch(idx, Event::Shutdown).await;
        }
        for r in receivers {
            r.abort();
        }
    }

    async fn dispatch(&mut self, idx: usize, event: Event) {
        let now = self.now();
        let Some(run) = self.runs.get_mut(idx) else {
            return;
        };
        let actions = run.machine.handle(event, now);
        self.execute(idx, &actions).await;
        let grouped = self.runs.len() > 1 || self.runs.iter().any(|r| r.machine.config().grouped);
        if grouped && !actions.is_empty() {
            let members: Vec<(State, bool)> = self
                .runs
                .iter()
                .map(|r| (r.machine.state(), r.machine.wants_master()))
                .collect();
            for (j, ev) in plan_group(&members, idx, &actions) {
                let now = self.now();
                if let Some(r) = self.runs.get_mut(j) {
                    let a = r.machine.handle(ev, now);
                    self.execute(j, &a).await;
                }
            }
        }
    }

    async fn execute(&mut self, idx: usize, actions: &[Action]) {
        for action in actions {
            let Some(run) = self.runs.get_mut(idx) else {
                return;
            };
            let _g = run.span.clone().entered();
            match *action {
                Action::SendAdvert { priority } => run.send_advert(priority),
                Action::ArmTimer { .. } | Action::CancelTimer => {}
                Action::WantMaster => {
                    debug!("master down timer expired; waiting for the sync group")
                }
                Action::BecomeMaster => {
                    info!(priority = run.machine.priority(), "transition to MASTER");
                    run.status.counters.transition(State::Master);
                    drop(_g);
                    self.add_vips(idx).await;
                    if let Some(run) = self.runs.get_mut(idx) {
                        run.announce();
                        let _ = run.status.state.send(State::Master);
                    }
                }
                Action::BecomeBackup | Action::Stopped => {
                    let to = if *action == Action::Stopped {
                        State::Initialize
                    } else {
                        State::Backup
                    };
                    let prev = run.status.state();
                    if prev != to {
                        info!(
                            from = prev.label(),
                            "transition to {}",
                            to.label().to_uppercase()
                        );
                    }
                    run.status.counters.transition(to);
                    run.stop_announcing();
                    drop(_g);
                    self.remove_vips(idx).await;
                    if let Some(run) = self.runs.get_mut(idx) {
                        let _ = run.status.state.send(to);
                    }
                }
            }
        }
    }

    async fn add_vips(&self, idx: usize) {
        let Some(run) = self.runs.get(idx) else {
            return;
        };
        for v in &run.cfg.vips {
            if let Err(e) = self.vips.add(&run.link, *v).await {
                warn!(parent: &run.span, vip = %v.addr, error = %e, "VIP add failed");
            }
        }
    }

    async fn remove_vips(&self, idx: usize) {
        let Some(run) = self.runs.get(idx) else {
            return;
        };
        for v in &run.cfg.vips {
            if let Err(e) = self.vips.remove(&run.link, *v).await {
                warn!(parent: &run.span, vip = %v.addr, error = %e, "VIP remove failed");
            }
        }
    }
}

async fn receive_loop(
    idx: usize,
    rx: RxSocket,
    expect: Expect,
    family: Family,
    own: IpAddr,
    status: Arc<InstanceStatus>,
    tx: mpsc::Sender<Inbound>,
) {
    loop {
        let r = match rx.recv().await {
            Ok(r) => r,
            Err(RecvError::Malformed) => {
                status.counters.dropped(DropReason::Malformed);
                continue;
            }
            Err(RecvError::Io(e)) => {
                warn!(error = %e, "receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if r.src == own {
            status.counters.dropped(DropReason::Own);
            continue;
        }
        match expect.check(r.ttl, &r.payload, family, r.src, r.dst) {
            Ok(adv) => {
                status
                    .counters
                    .adverts_received
                    .fetch_add(1, Ordering::Relaxed);
                if tx.send(Inbound::Advert(idx, adv, r.src)).await.is_err() {
                    return;
                }
            }
            Err(reason) => {
                status.counters.dropped(reason);
                // Once per reason would need state; debug level keeps the default log quiet.
                debug!(src = %r.src, reason = reason.label(), "advert dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(json: &str) -> InstanceConfig {
        serde_json::from_str(json).unwrap()
    }

    const BASE: &str =
        r#"{"name":"vi","interface":"eth0","vrid":51,"priority":100,"vips":["192.0.2.100"]}"#;

    #[test]
    fn vip_parsing_defaults_to_host_prefix() {
        assert_eq!(
            "192.0.2.100".parse::<Vip>().unwrap(),
            Vip {
                addr: "192.0.2.100".parse().unwrap(),
                prefix_len: 32
            }
        );
        assert_eq!("2001:db8::1/64".parse::<Vip>().unwrap().prefix_len, 64);
        assert_eq!("2001:db8::1".parse::<Vip>().unwrap().prefix_len, 128);
        assert!("192.0.2.1/33".parse::<Vip>().is_err());
        assert!("nope".parse::<Vip>().is_err());
    }

    #[test]
    fn defaults_follow_keepalived() {
        let i = inst(BASE);
        assert_eq!(i.version, 2);
        assert_eq!(i.advert_interval_ms, 1000);
        assert!(i.preempt);
        assert_eq!(i.garp_count, 5);
        assert_eq!(i.garp_repeat_delay_ms, 5000);
        assert!(i.validate().is_ok());
        assert_eq!(i.interval_cs().unwrap(), 100);
    }

    #[test]
    fn validation_rejects_what_the_protocol_cannot_carry() {
        let mut i = inst(BASE);
        i.advert_interval_ms = 100;
        assert!(i.validate().is_err(), "v2 needs whole seconds");
        i.version = 3;
        assert!(i.validate().is_ok());
        assert_eq!(i.interval_cs().unwrap(), 10);
        i.password = Some("x".into());
        assert!(i.validate().is_err(), "no auth in v3");
        let mut i = inst(BASE);
        i.vips = vec!["2001:db8::1".parse().unwrap()];
        assert!(i.validate().is_err(), "v2 is IPv4 only");
        i.version = 3;
        assert!(i.validate().is_ok());
        i.vips.push("192.0.2.1".parse().unwrap());
        assert!(i.validate().is_err(), "mixed families");
        let mut i = inst(BASE);
        i.priority = 0;
        assert!(i.validate().is_err());
        let mut i = inst(BASE);
        i.unicast_peers = vec!["2001:db8::2".parse().unwrap()];
        assert!(i.validate().is_err());
        assert!(serde_json::from_str::<InstanceConfig>(r#"{"name":"x","bogus":1}"#).is_err());
    }

    #[test]
    fn units_group_sync_members_together() {
        let mut a = inst(BASE);
        a.name = "a".into();
        a.group = Some("g".into());
        let mut b = a.clone();
        b.name = "b".into();
        let mut c = inst(BASE);
        c.name = "c".into();
        let cfg = SpeakerConfig {
            instances: vec![a, c, b],
        };
        let units = cfg.units();
        assert_eq!(units.len(), 2);
        let names: Vec<Vec<&str>> = units
            .iter()
            .map(|u| u.iter().map(|i| i.name.as_str()).collect())
            .collect();
        assert_eq!(names, vec![vec!["c"], vec!["a", "b"]]);
        let mut dup = cfg.clone();
        dup.instances.push(dup.instances[0].clone());
        assert!(matches!(dup.validate(), Err(ConfigError::Duplicate(_))));
    }
}
