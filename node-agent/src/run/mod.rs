//! `node-agent run`: the agent's loop on one node.
//!
//! Watches VirtualServices, RealServers and its own Node; on every change (and every resync)
//! it builds the desired model ([`crate::build`]), lets the data plane converge on it
//! ([`crate::apply::Dataplane::reconcile`]), keeps the health checks and VRRP instances equal to
//! what the objects ask, and reports through [`crate::report`].
//!
//! VIPs go through the data-plane path: when a VRRP instance becomes master its driver asks for
//! the VIP ([`AgentVips`]), the loop adds the address to the desired model and reconciles, and
//! only then does the driver send its gratuitous ARPs. While the API server is away the caches
//! keep the last state: checks, VRRP and the kernel state carry on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use kube_lvs_crds::v1alpha1::{RealServer, VirtualService, VrrpState};
use kube_lvs_health::{CheckKey, Manager, ManagerConfig, Transition};
use kube_lvs_net::AddressSpec;
use kube_lvs_vrrp::State;
use kube_lvs_vrrp::driver::{
    InstanceConfig, Speaker, SpeakerConfig, Vip, VipControl, VipError, VipLink,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, info_span, warn};

use crate::apply::{Dataplane, StateStore};
use crate::build::{Built, HealthView, NodeInput, build};
use crate::director::{by_vip, directs, plan_checks, service_key, vrrp_instance};
use crate::report::{DirectorReport, HealthReport, Report, Reporter};

/// Settings of the run loop.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub node: String,
    pub state_path: PathBuf,
    /// Interface for VIPs and VRRP when a VirtualService names none and none can be derived.
    pub default_interface: Option<String>,
    /// Full pass even without events (heals drift made by someone else).
    pub resync: Duration,
}

/// Errors that stop the loop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("data plane: {0}")]
    Dataplane(#[from] crate::error::DataplaneError),
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

enum Msg {
    Changed,
    Health(Transition),
    Vip {
        add: bool,
        link: VipLink,
        vip: Vip,
        done: oneshot::Sender<Result<(), VipError>>,
    },
    VrrpState,
    Tick,
    Shutdown,
}

/// The VRRP driver's VIP hands: requests go to the loop, which applies them through the data
/// plane (desired model → plan → apply) and answers when the address is there.
pub struct AgentVips {
    tx: mpsc::UnboundedSender<Msg>,
}

impl AgentVips {
    fn request(
        &self,
        add: bool,
        link: &VipLink,
        vip: Vip,
    ) -> oneshot::Receiver<Result<(), VipError>> {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Vip {
            add,
            link: link.clone(),
            vip,
            done,
        });
        rx
    }
}

fn gone(vip: Vip) -> VipError {
    VipError::Backend {
        vip: vip.addr,
        source: "the agent loop has stopped".into(),
    }
}

impl VipControl for AgentVips {
    fn add(&self, link: &VipLink, vip: Vip) -> impl Future<Output = Result<(), VipError>> + Send {
        let rx = self.request(true, link, vip);
        async move { rx.await.unwrap_or_else(|_| Err(gone(vip))) }
    }
    fn remove(
        &self,
        link: &VipLink,
        vip: Vip,
    ) -> impl Future<Output = Result<(), VipError>> + Send {
        let rx = self.request(false, link, vip);
        async move { rx.await.unwrap_or_else(|_| Err(gone(vip))) }
    }
}

/// The interface a VIP lives on: the VirtualService's, else the one with an address in the VIP's
/// subnet, else the agent's default (pure).
pub fn pick_interface(
    explicit: Option<&str>,
    vip: IpAddr,
    addresses: &BTreeSet<AddressSpec>,
    default: Option<&str>,
) -> Option<String> {
    if let Some(i) = explicit {
        return Some(i.to_string());
    }
    let in_subnet = |a: &AddressSpec| match (a.addr, vip) {
        (IpAddr::V4(a4), IpAddr::V4(v4)) if a.prefix_len < 32 => {
            let mask = u32::MAX << (32 - u32::from(a.prefix_len));
            u32::from(a4) & mask == u32::from(v4) & mask
        }
        (IpAddr::V6(a6), IpAddr::V6(v6)) if a.prefix_len < 128 && a.prefix_len > 0 => {
            let mask = u128::MAX << (128 - u32::from(a.prefix_len));
            u128::from(a6) & mask == u128::from(v6) & mask
        }
        _ => false,
    };
    addresses
        .iter()
        .filter(|a| a.ifname != "lo")
        .find(|a| in_subnet(a))
        .map(|a| a.ifname.clone())
        .or_else(|| default.map(str::to_string))
}

fn api_state(s: State) -> VrrpState {
    match s {
        State::Initialize => VrrpState::Init,
        State::Backup => VrrpState::Backup,
        State::Master => VrrpState::Master,
    }
}

/// One running VRRP instance and what it was started with.
struct Running {
    config: InstanceConfig,
    speaker: Speaker,
}

/// What the loop keeps between passes.
struct Loop {
    cfg: RunConfig,
    client: Client,
    dp: Dataplane,
    reporter: Reporter,
    health_manager: Manager,
    health: HealthView,
    quorum: BTreeMap<String, bool>,
    /// VIPs VRRP currently holds on this node.
    held: BTreeSet<AddressSpec>,
    speakers: BTreeMap<String, Running>,
    tx: mpsc::UnboundedSender<Msg>,
    vips: Arc<AgentVips>,
    /// Last director report per VirtualService, to send only changes.
    reported: BTreeMap<String, DirectorReport>,
    programmed_ok: bool,
    last_addresses: BTreeSet<AddressSpec>,
    /// VRRP instances the last pass wanted, with the VirtualServices each carries.
    instances: BTreeMap<String, (InstanceConfig, Vec<String>)>,
    /// Checks whose first result has not been reported yet: a check that starts healthy and
    /// stays healthy never transitions, but its entry must still appear in status.
    unreported: BTreeSet<CheckKey>,
}

impl Loop {
    fn node_input(&self, nodes: &Store<Node>) -> NodeInput {
        let labels = nodes
            .state()
            .iter()
            .find(|n| n.name_any() == self.cfg.node)
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        let mut interfaces: Vec<String> = self
            .last_addresses
            .iter()
            .map(|a| a.ifname.clone())
            .filter(|i| i != "lo")
            .collect();
        interfaces.sort();
        interfaces.dedup();
        NodeInput {
            name: self.cfg.node.clone(),
            labels,
            interfaces,
        }
    }

    async fn password(&self, vs: &VirtualService) -> Option<String> {
        let r = vs.spec.directors.vrrp.auth_secret_ref.as_ref()?;
        let ns = vs.namespace().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        match api.get_opt(&r.name).await {
            Ok(Some(s)) => s
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned()),
            Ok(None) => {
                warn!(secret = %r.name, "VRRP password secret not found");
                None
            }
            Err(e) => {
                warn!(secret = %r.name, error = %e, "reading VRRP password failed");
                None
            }
        }
    }

    async fn pass(
        &mut self,
        services: &[VirtualService],
        servers: &[RealServer],
        nodes: &Store<Node>,
    ) {
        let node = self.node_input(nodes);
        let directed: Vec<&VirtualService> = services
            .iter()
            .filter(|vs| directs(&node.labels, vs))
            .collect();

        // Health checks follow the objects.
        let (checks, errors) = plan_checks(&directed, servers);
        for e in errors {
            warn!(error = %e, "health check not started");
        }
        let wanted: BTreeSet<_> = checks.iter().map(|(k, _)| k.clone()).collect();
        self.health.healthy.retain(|k, _| wanted.contains(k));
        self.unreported.retain(|k| wanted.contains(k));
        let report = self.health_manager.update(checks);
        self.unreported.extend(report.started);
        self.unreported.extend(report.restarted);

        // Data plane.
        let Built {
            mut desired,
            quorum,
            quorum_changed,
            errors,
        } = build(&node, services, servers, &self.health, &self.quorum);
        for e in errors {
            warn!(error = %e, "not programmed");
        }
        for key in quorum_changed {
            info!(virtual_service = %key, quorum = ?quorum.get(&key), "quorum changed");
        }
        self.quorum = quorum;
        desired.addresses.extend(self.held.iter().cloned());
        self.programmed_ok = match self.dp.reconcile(&desired).await {
            Ok(pass) => {
                for (op, e) in &pass.report.failed {
                    warn!(%op, error = %e, "operation failed");
                }
                pass.report.failed.is_empty() && pass.plan.conflicts.is_empty()
            }
            Err(e) => {
                warn!(error = %e, "reconcile failed");
                false
            }
        };
        if let Ok(addresses) = self.dp.addresses().await {
            self.last_addresses = addresses;
        }

        // VRRP instances: one per VIP.
        let mut wanted_instances: BTreeMap<String, (InstanceConfig, Vec<String>)> = BTreeMap::new();
        for (vip, members) in by_vip(&directed) {
            let Some(first) = members.first() else {
                continue;
            };
            let Some(ifname) = pick_interface(
                first.spec.directors.interface.as_deref(),
                vip,
                &self.last_addresses,
                self.cfg.default_interface.as_deref(),
            ) else {
                warn!(%vip, "no interface for the VIP; set spec.directors.interface");
                continue;
            };
            let password = self.password(first).await;
            match vrrp_instance(&node.name, &members, &ifname, password) {
                Ok(Some(ic)) => {
                    let keys = members.iter().map(|vs| service_key(vs)).collect();
                    wanted_instances.insert(ic.name.clone(), (ic, keys));
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "VRRP instance not started"),
            }
        }
        self.sync_speakers(&wanted_instances).await;
        self.instances = wanted_instances;
        self.report_directors();
    }

    async fn sync_speakers(&mut self, wanted: &BTreeMap<String, (InstanceConfig, Vec<String>)>) {
        // Stop instances that are gone or changed in more than their priority.
        let names: Vec<String> = self.speakers.keys().cloned().collect();
        for name in names {
            let keep = wanted.get(&name).is_some_and(|(ic, _)| {
                let running = &self.speakers[&name].config;
                InstanceConfig {
                    priority: ic.priority,
                    ..running.clone()
                } == *ic
            });
            if !keep && let Some(r) = self.speakers.remove(&name) {
                info!(instance = %name, "stopping VRRP instance");
                // The shutdown asks for the VIP's removal through this loop: let it run aside.
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    r.speaker.shutdown().await;
                    let _ = tx.send(Msg::Changed);
                });
            }
        }
        for (name, (ic, _)) in wanted {
            if let Some(r) = self.speakers.get_mut(name) {
                if r.config.priority != ic.priority {
                    info!(instance = %name, priority = ic.priority, "VRRP priority changed");
                    r.speaker.set_priority(name, ic.priority);
                    r.config.priority = ic.priority;
                }
                continue;
            }
            let span =
                info_span!("vrrp", instance = %name, vrid = ic.vrid, interface = %ic.interface);
            let _g = span.enter();
            let cfg = SpeakerConfig {
                instances: vec![ic.clone()],
            };
            match Speaker::start(&cfg, self.vips.clone()) {
                Ok(speaker) => {
                    info!("VRRP instance started");
                    for st in &speaker.instances {
                        let mut rx = st.subscribe();
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            while rx.changed().await.is_ok() {
                                if tx.send(Msg::VrrpState).is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    self.speakers.insert(
                        name.clone(),
                        Running {
                            config: ic.clone(),
                            speaker,
                        },
                    );
                }
                Err(e) => warn!(error = %e, "VRRP instance failed to start"),
            }
        }
    }

    /// Reports this node's entry for every VirtualService of the instances the last pass wanted
    /// (those that failed to start as Fault); only changes are sent.
    fn report_directors(&mut self) {
        let instances = std::mem::take(&mut self.instances);
        for (name, (ic, keys)) in &instances {
            let state = self
                .speakers
                .get(name)
                .and_then(|r| r.speaker.instances.first())
                .map(|s| api_state(s.state()))
                .unwrap_or(VrrpState::Fault);
            for key in keys {
                let (ns, vs_name) = key.split_once('/').unwrap_or(("", key));
                let previous = self.reported.get(key);
                let changed = previous.is_none_or(|p| {
                    p.state != state
                        || p.priority != Some(ic.priority)
                        || p.programmed != self.programmed_ok
                });
                if !changed {
                    continue;
                }
                let report = DirectorReport {
                    state,
                    priority: Some(ic.priority),
                    programmed: self.programmed_ok,
                    last_transition: if previous.is_some_and(|p| p.state == state) {
                        previous
                            .map(|p| p.last_transition)
                            .unwrap_or_else(SystemTime::now)
                    } else {
                        SystemTime::now()
                    },
                    message: None,
                };
                info!(virtual_service = %key, state = ?state, "director state");
                self.reported.insert(key.clone(), report.clone());
                self.reporter.send(Report::Director {
                    namespace: ns.to_string(),
                    name: vs_name.to_string(),
                    report,
                });
            }
        }
        self.instances = instances;
    }

    fn vip(&mut self, add: bool, link: &VipLink, vip: Vip) {
        let spec = AddressSpec {
            ifname: link.name.clone(),
            addr: vip.addr,
            prefix_len: vip.prefix_len,
            label: None,
        };
        if add {
            self.held.insert(spec);
        } else {
            self.held.retain(|a| a.addr != vip.addr);
        }
    }
}

/// Runs the agent until SIGTERM/SIGINT; then VRRP resigns (priority 0) and the kernel state
/// stays as it is for the next agent process to adopt.
pub async fn run(client: Client, cfg: RunConfig) -> Result<(), RunError> {
    let span = info_span!("agent", node = %cfg.node);
    let _g = span.enter();
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();

    let (services, w_services) = reflector::store::<VirtualService>();
    let (servers, w_servers) = reflector::store::<RealServer>();
    let (nodes, w_nodes) = reflector::store::<Node>();
    let forward = |s: futures::stream::BoxStream<'static, ()>, tx: mpsc::UnboundedSender<Msg>| {
        tokio::spawn(async move {
            let mut s = s;
            while s.next().await.is_some() {
                if tx.send(Msg::Changed).is_err() {
                    return;
                }
            }
        });
    };
    let wc = watcher::Config::default();
    forward(
        reflector::reflector(w_services, watcher(Api::all(client.clone()), wc.clone()))
            .default_backoff()
            .map(|_| ())
            .boxed(),
        tx.clone(),
    );
    forward(
        reflector::reflector(w_servers, watcher(Api::all(client.clone()), wc.clone()))
            .default_backoff()
            .map(|_| ())
            .boxed(),
        tx.clone(),
    );
    forward(
        reflector::reflector(
            w_nodes,
            watcher(
                Api::<Node>::all(client.clone()),
                wc.fields(&format!("metadata.name={}", cfg.node)),
            ),
        )
        .default_backoff()
        .map(|_| ())
        .boxed(),
        tx.clone(),
    );
    for (name, ready) in [
        ("virtualservices", services.wait_until_ready().await),
        ("realservers", servers.wait_until_ready().await),
        ("nodes", nodes.wait_until_ready().await),
    ] {
        ready.map_err(|_| RunError::WatchEnded(name))?;
    }
    info!("caches synced");

    let (htx, mut hrx) = mpsc::channel::<Transition>(1024);
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(t) = hrx.recv().await {
                if tx.send(Msg::Health(t)).is_err() {
                    return;
                }
            }
        });
    }
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            let _ = tx.send(Msg::Shutdown);
        });
    }

    // Probes get a runtime of their own: thousands of checks must not delay VRRP adverts.
    let probe_runtime = kube_lvs_health::runtime::ProbeRuntime::start("kube-lvs-probes").ok();
    if probe_runtime.is_none() {
        warn!("could not start the probe runtime; checks share the agent's");
    }
    let mut lp = Loop {
        dp: Dataplane::connect(StateStore::new(&cfg.state_path))?,
        reporter: Reporter::start(client.clone(), cfg.node.clone()),
        health_manager: Manager::new(
            ManagerConfig {
                runtime: probe_runtime.as_ref().map(|r| r.handle()),
                ..ManagerConfig::default()
            },
            htx,
        ),
        health: HealthView::default(),
        quorum: BTreeMap::new(),
        held: BTreeSet::new(),
        speakers: BTreeMap::new(),
        vips: Arc::new(AgentVips { tx: tx.clone() }),
        tx: tx.clone(),
        reported: BTreeMap::new(),
        programmed_ok: false,
        last_addresses: BTreeSet::new(),
        unreported: BTreeSet::new(),
        instances: BTreeMap::new(),
        client,
        cfg,
    };
    // Addresses first, so the first pass can pick interfaces.
    if let Ok(addresses) = lp.dp.addresses().await {
        lp.last_addresses = addresses;
    }

    let snapshot = |s: &Store<VirtualService>, r: &Store<RealServer>| {
        (
            s.state().iter().map(|v| (**v).clone()).collect::<Vec<_>>(),
            r.state().iter().map(|v| (**v).clone()).collect::<Vec<_>>(),
        )
    };
    let (svc, srv) = snapshot(&services, &servers);
    lp.pass(&svc, &srv, &nodes).await;
    let mut shutting_down: Option<tokio::task::JoinHandle<()>> = None;
    let mut last_pass = tokio::time::Instant::now();
    loop {
        // While some check has not reported its first result, look every second.
        let tick = if lp.unreported.is_empty() {
            lp.cfg.resync
        } else {
            Duration::from_secs(1)
        };
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = tokio::time::sleep(tick) => Some(Msg::Tick),
        };
        let Some(msg) = msg else { break };
        let mut dirty = false;
        let mut pending = vec![msg];
        // Drain what is queued so a burst becomes one pass.
        while let Ok(m) = rx.try_recv() {
            pending.push(m);
        }
        let mut answers = Vec::new();
        for m in pending {
            match m {
                Msg::Changed => dirty = true,
                // Report without a full pass.
                Msg::VrrpState => lp.report_directors(),
                Msg::Health(t) => {
                    info!(check = %t.key, healthy = t.healthy, "health transition");
                    lp.health.healthy.insert(t.key.clone(), t.healthy);
                    lp.unreported.remove(&t.key);
                    let (_, srv) = snapshot(&services, &servers);
                    lp.report_health(
                        &srv,
                        &t.key,
                        HealthReport {
                            virtual_service: String::new(),
                            healthy: t.healthy,
                            since: t.since,
                            last_probe: Some(SystemTime::now()),
                            latency: t.latency,
                            consecutive_failures: t.consecutive_failures,
                            last_error: t.last_error.clone(),
                        },
                    );
                    dirty = true;
                }
                Msg::Tick => {
                    let (_, srv) = snapshot(&services, &servers);
                    lp.report_first_results(&srv);
                    dirty |= last_pass.elapsed() >= lp.cfg.resync;
                }
                Msg::Vip {
                    add,
                    link,
                    vip,
                    done,
                } => {
                    lp.vip(add, &link, vip);
                    answers.push(done);
                    dirty = true;
                }
                Msg::Shutdown => {
                    info!("stopping: VRRP resigns, kernel state stays for the next agent");
                    let speakers = std::mem::take(&mut lp.speakers);
                    let tx = lp.tx.clone();
                    shutting_down = Some(tokio::spawn(async move {
                        for (_, r) in speakers {
                            r.speaker.shutdown().await;
                        }
                        let _ = tx.send(Msg::Changed);
                    }));
                }
            }
        }
        if dirty {
            if shutting_down.is_some() {
                // Only VIP changes now: converge on them without touching checks or VRRP.
                lp.shutdown_pass(&services, &servers, &nodes).await;
            } else {
                let (svc, srv) = snapshot(&services, &servers);
                lp.pass(&svc, &srv, &nodes).await;
                lp.report_first_results(&srv);
            }
            last_pass = tokio::time::Instant::now();
        }
        // Answer only after the pass: the driver's gratuitous ARPs must follow the address.
        // A failed address op is logged by the pass and retried by the next one.
        for done in answers {
            let _ = done.send(Ok(()));
        }
        if shutting_down.as_ref().is_some_and(|h| h.is_finished()) && lp.held.is_empty() {
            lp.report_stopped().await;
            break;
        }
    }
    Ok(())
}

impl Loop {
    /// The last word of a stopping agent: its director entries say it no longer takes part, so
    /// status never shows a stale master.
    async fn report_stopped(&mut self) {
        for (key, previous) in std::mem::take(&mut self.reported) {
            let (ns, vs_name) = key.split_once('/').unwrap_or(("", &key));
            self.reporter.send(Report::Director {
                namespace: ns.to_string(),
                name: vs_name.to_string(),
                report: DirectorReport {
                    state: VrrpState::Fault,
                    priority: previous.priority,
                    programmed: previous.programmed,
                    last_transition: SystemTime::now(),
                    message: Some("agent stopped; VRRP resigned".into()),
                },
            });
        }
        if !self.reporter.flush(Duration::from_secs(5)).await {
            warn!("could not report the stop before exiting");
        }
    }

    /// Sends this node's health entry for the RealServers a check probes.
    fn report_health(&self, servers: &[RealServer], key: &CheckKey, mut report: HealthReport) {
        let (ns, vs_name) = key.service.split_once('/').unwrap_or(("", ""));
        report.virtual_service = vs_name.to_string();
        for rs in servers.iter().filter(|rs| {
            rs.namespace().as_deref() == Some(ns)
                && crate::director::check_target_matches(rs, key.target)
        }) {
            self.reporter.send(Report::Health {
                namespace: ns.to_string(),
                name: rs.name_any(),
                report: report.clone(),
            });
        }
    }

    /// Reports the first result of every check that has one and was not reported yet.
    fn report_first_results(&mut self, servers: &[RealServer]) {
        let keys: Vec<CheckKey> = self.unreported.iter().cloned().collect();
        for key in keys {
            let Some(info) = self.health_manager.probe_info(&key) else {
                continue;
            };
            if info.probes == 0 {
                continue;
            }
            self.unreported.remove(&key);
            self.health.healthy.insert(key.clone(), info.healthy);
            self.report_health(
                servers,
                &key,
                HealthReport {
                    virtual_service: String::new(),
                    healthy: info.healthy,
                    since: info.since,
                    last_probe: info.last_probe,
                    latency: info.latency,
                    consecutive_failures: info.consecutive_failures,
                    last_error: info.last_error,
                },
            );
        }
    }

    async fn shutdown_pass(
        &mut self,
        services: &Store<VirtualService>,
        servers: &Store<RealServer>,
        nodes: &Store<Node>,
    ) {
        let node = self.node_input(nodes);
        let svc: Vec<VirtualService> = services.state().iter().map(|v| (**v).clone()).collect();
        let srv: Vec<RealServer> = servers.state().iter().map(|v| (**v).clone()).collect();
        let mut built = build(&node, &svc, &srv, &self.health, &self.quorum);
        built.desired.addresses.extend(self.held.iter().cloned());
        if let Err(e) = self.dp.reconcile(&built.desired).await {
            warn!(error = %e, "reconcile during shutdown failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ifname: &str, a: &str, p: u8) -> AddressSpec {
        AddressSpec {
            ifname: ifname.into(),
            addr: a.parse().unwrap(),
            prefix_len: p,
            label: None,
        }
    }

    #[test]
    fn interface_from_subnet_then_default() {
        let addrs = BTreeSet::from([
            addr("lo", "127.0.0.1", 8),
            addr("eth0", "192.0.2.5", 24),
            addr("eth1", "198.51.100.5", 24),
            addr("eth1", "2001:db8::5", 64),
        ]);
        let vip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            pick_interface(None, vip("198.51.100.10"), &addrs, None).as_deref(),
            Some("eth1")
        );
        assert_eq!(
            pick_interface(None, vip("2001:db8::10"), &addrs, None).as_deref(),
            Some("eth1")
        );
        assert_eq!(
            pick_interface(Some("bond0"), vip("192.0.2.10"), &addrs, None).as_deref(),
            Some("bond0")
        );
        assert_eq!(
            pick_interface(None, vip("203.0.113.10"), &addrs, Some("eth0")).as_deref(),
            Some("eth0")
        );
        assert_eq!(
            pick_interface(None, vip("203.0.113.10"), &addrs, None),
            None
        );
    }

    #[test]
    fn vrrp_states_map_to_api_states() {
        assert_eq!(api_state(State::Master), VrrpState::Master);
        assert_eq!(api_state(State::Backup), VrrpState::Backup);
        assert_eq!(api_state(State::Initialize), VrrpState::Init);
    }
}
