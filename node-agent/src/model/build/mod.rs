//! Desired state of one node from the API objects: pure, no kube client.
//!
//! A node is a **director** of the VirtualServices the caller lists in [`NodeView::directs`]
//! (the operator's assignment): it programs their IPVS service on master and backup alike (a
//! backup that becomes master must forward at once), but holds the VIP only while VRRP master
//! ([`NodeView::master_of`], driven by the VRRP driver). A node is a **real server** for every
//! RealServer whose `nodeName` is this node: with DR forwarding it puts the VIP on `lo` and sets
//! the ARP sysctls, with TUN it puts the VIP on `tunl0` and also turns off `rp_filter`.
//!
//! Health enters through [`HealthView`]; the weights are computed by
//! `kube_lvs_health::effect::plan_effective` (Remove vs Quiesce, drain, quorum with hysteresis,
//! sorry server), so the data plane and the status writer agree on one rule.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube_lvs_crds::v1alpha1::{
    self as api, ForwardingMethod, HealthCheckType, OnFailure, RealServer, SchedulerFlag,
    VirtualService,
};
use kube_lvs_health::effect::{
    FailurePolicy, Member, Quorum, ServicePolicy, SorryServer, plan_effective,
};
use kube_lvs_ipvs::{
    AddressFamily, Destination, DestinationKey, Forwarding, Persistence, Protocol, SchedFlags,
    Scheduler, Service, ServiceKey, TunnelChecksum, TunnelType,
};
use kube_lvs_net::{AddressSpec, FwmarkRule, MarkProtocol, profile};

use super::{Desired, ServiceState};

/// `namespace/name` of an API object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn of<K: kube::Resource>(obj: &K) -> Self {
        Self {
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the caller knows about this node.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub name: String,
    /// VirtualServices this node directs (IPVS programmed).
    pub directs: BTreeSet<ObjectKey>,
    /// VirtualServices whose VIP this node holds now (VRRP master).
    pub master_of: BTreeSet<ObjectKey>,
    /// Interface for VIPs when `spec.directors.interface` is not set.
    pub default_interface: String,
}

/// Health of real servers as seen by this node's checkers.
pub trait HealthView {
    /// `None` = no verdict yet (the check's `initialState` decides).
    fn healthy(&self, service: &ObjectKey, server: &ObjectKey) -> Option<bool>;
    /// Quorum state returned by the previous build (hysteresis needs it).
    fn quorum_previous(&self, service: &ObjectKey) -> Option<bool>;
}

/// No checks have reported: every real server takes its initial state.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHealth;

impl HealthView for NoHealth {
    fn healthy(&self, _: &ObjectKey, _: &ObjectKey) -> Option<bool> {
        None
    }
    fn quorum_previous(&self, _: &ObjectKey) -> Option<bool> {
        None
    }
}

/// Why part of an object was left out of the desired state (reported as a condition/Event).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildProblem {
    #[error("{object}: {message}")]
    Invalid { object: ObjectKey, message: String },
    #[error("{object}: IPVS service {key} is already defined by {other}")]
    DuplicateService {
        object: ObjectKey,
        key: ServiceKey,
        other: ObjectKey,
    },
    #[error("{object}: real server {server} duplicates destination {addr} port {port}")]
    DuplicateDestination {
        object: ObjectKey,
        server: ObjectKey,
        addr: IpAddr,
        port: u16,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildOutput {
    pub desired: Desired,
    /// Which VirtualService each IPVS service comes from (to map plan conflicts to objects).
    pub origins: BTreeMap<ServiceKey, ObjectKey>,
    /// Quorum state per directed service, to feed back as `quorum_previous`.
    pub quorum: BTreeMap<ObjectKey, bool>,
    pub problems: Vec<BuildProblem>,
}

/// Whether `labels` satisfy `selector` (matchLabels AND matchExpressions; unknown operators
/// match nothing, as the API server would have rejected them).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|r| {
        let values = r.values.as_deref().unwrap_or_default();
        match r.operator.as_str() {
            "In" => labels.get(&r.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&r.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&r.key),
            "DoesNotExist" => !labels.contains_key(&r.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

fn protocol(p: api::Protocol) -> Protocol {
    match p {
        api::Protocol::Tcp => Protocol::Tcp,
        api::Protocol::Udp => Protocol::Udp,
        api::Protocol::Sctp => Protocol::Sctp,
    }
}

fn scheduler(s: api::Scheduler) -> Scheduler {
    // The API names are the kernel names; `from_name` cannot miss for the 13 known ones.
    Scheduler::from_name(s.as_str()).unwrap_or(Scheduler::WeightedLeastConnection)
}

fn ipvs_key(spec: &api::VirtualServiceSpec) -> Result<ServiceKey, api::SpecError> {
    Ok(match spec.service_key()? {
        api::ServiceKey::Port {
            vip,
            protocol: p,
            port,
        } => ServiceKey::addr(protocol(p), vip, port),
        api::ServiceKey::FirewallMark { ipv6, mark } => ServiceKey::fwmark(
            if ipv6 {
                AddressFamily::Ipv6
            } else {
                AddressFamily::Ipv4
            },
            mark,
        ),
    })
}

fn forwarding(method: ForwardingMethod, vs: &api::Forwarding) -> Forwarding {
    match method {
        ForwardingMethod::Nat => Forwarding::Masquerade,
        ForwardingMethod::DirectRouting => Forwarding::DirectRoute,
        ForwardingMethod::Tunnel => {
            let Some(t) = &vs.tunnel else {
                return Forwarding::Tunnel(TunnelType::Ipip);
            };
            let csum = match t.checksum {
                api::TunnelChecksum::None => TunnelChecksum::None,
                api::TunnelChecksum::Checksum => TunnelChecksum::Csum,
                api::TunnelChecksum::RemoteChecksum => TunnelChecksum::RemCsum,
            };
            Forwarding::Tunnel(match (t.tunnel_type, t.port) {
                (api::TunnelType::Gue, Some(port)) => TunnelType::Gue { port, csum },
                (api::TunnelType::Gre, _) => TunnelType::Gre { csum },
                _ => TunnelType::Ipip,
            })
        }
    }
}

fn vip_label(iface: &str) -> Option<String> {
    let label = format!("{iface}:kl");
    (label.len() <= kube_lvs_net::addr::MAX_NAME_LEN).then_some(label)
}

fn vip_address(iface: &str, vip: IpAddr) -> AddressSpec {
    let label = if vip.is_ipv4() {
        vip_label(iface)
    } else {
        None
    };
    AddressSpec::host(iface, vip, label)
}

/// Build the desired state of `node`.
pub fn build(
    node: &NodeView,
    services: &[VirtualService],
    servers: &[RealServer],
    health: &dyn HealthView,
) -> BuildOutput {
    let mut out = BuildOutput::default();
    let mut director = profile::DirectorProfile::default();
    let mut rs_holders: BTreeMap<&'static str, BTreeSet<IpAddr>> = BTreeMap::new();

    for vs in services {
        let vs_key = ObjectKey::of(vs);
        let spec = &vs.spec;
        let invalid = |message: String| BuildProblem::Invalid {
            object: vs_key.clone(),
            message,
        };
        let (key, vip) = match (ipvs_key(spec), spec.vip_addr()) {
            (Ok(k), Ok(v)) => (k, v),
            (Err(e), _) | (_, Err(e)) => {
                out.problems.push(invalid(e.to_string()));
                continue;
            }
        };
        let selected: Vec<&RealServer> = servers
            .iter()
            .filter(|rs| {
                rs.namespace() == vs.namespace()
                    && selector_matches(&spec.real_server_selector, rs.labels())
            })
            .collect();

        // Real-server role: this node is the backend of a DR/TUN service.
        for rs in &selected {
            if rs.spec.node_name.as_deref() != Some(node.name.as_str()) {
                continue;
            }
            match rs.spec.effective_forwarding(spec.forwarding.method) {
                ForwardingMethod::DirectRouting => {
                    rs_holders.entry("lo").or_default().insert(vip);
                }
                ForwardingMethod::Tunnel => {
                    rs_holders.entry("tunl0").or_default().insert(vip);
                }
                ForwardingMethod::Nat => {}
            }
        }

        if !node.directs.contains(&vs_key) {
            continue;
        }
        if let Some(other) = out.origins.get(&key) {
            out.problems.push(BuildProblem::DuplicateService {
                object: vs_key.clone(),
                key,
                other: other.clone(),
            });
            continue;
        }

        let mut svc = Service::new(key, scheduler(spec.scheduler));
        svc.sched_flags = SchedFlags {
            fallback: spec
                .scheduler_flags
                .iter()
                .any(|f| matches!(f, SchedulerFlag::ShFallback | SchedulerFlag::MhFallback)),
            port: spec
                .scheduler_flags
                .iter()
                .any(|f| matches!(f, SchedulerFlag::ShPort | SchedulerFlag::MhPort)),
            flag3: false,
        };
        svc.one_packet = spec.one_packet;
        match spec.persistence_prefix_length() {
            Ok(Some(prefix_len)) => {
                svc.persistence = spec.persistence.as_ref().map(|p| Persistence {
                    timeout_secs: p.timeout_seconds,
                    prefix_len,
                });
            }
            Ok(None) => {}
            Err(e) => {
                out.problems.push(invalid(e.to_string()));
                continue;
            }
        }

        // Members, keyed by destination, in a stable order.
        let mut members = Vec::new();
        let mut dests: BTreeMap<DestinationKey, Destination> = BTreeMap::new();
        let always_up = spec.health_check.check_type == HealthCheckType::None;
        let initial_up = spec.health_check.initial_state == api::InitialState::Up;
        for rs in &selected {
            let rs_key = ObjectKey::of(*rs);
            let addr = match rs.spec.address_addr() {
                Ok(a) => a,
                Err(e) => {
                    out.problems.push(BuildProblem::Invalid {
                        object: rs_key,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let port = rs.spec.effective_port(spec.port).unwrap_or(0);
            let method = rs.spec.effective_forwarding(spec.forwarding.method);
            if method == ForwardingMethod::Nat {
                director.nat = true;
                director.nat_ipv6 |= addr.is_ipv6();
            }
            let mut d = Destination::new(addr, port, forwarding(method, &spec.forwarding));
            d.weight = rs.spec.weight;
            d.upper_threshold = rs.spec.upper_threshold.unwrap_or(0);
            d.lower_threshold = rs.spec.effective_lower_threshold().unwrap_or(0);
            if dests.contains_key(&d.key()) {
                out.problems.push(BuildProblem::DuplicateDestination {
                    object: vs_key.clone(),
                    server: rs_key,
                    addr,
                    port,
                });
                continue;
            }
            let healthy = always_up || health.healthy(&vs_key, &rs_key).unwrap_or(initial_up);
            members.push(Member {
                key: d.key(),
                weight: d.weight,
                healthy,
                drain: rs.spec.drain,
            });
            dests.insert(d.key(), d);
        }
        let sorry = match &spec.sorry_server {
            None => None,
            Some(s) => match s.address.parse() {
                Ok(addr) => {
                    let d = Destination::new(
                        addr,
                        s.port.or(spec.port).unwrap_or(0),
                        forwarding(spec.forwarding.method, &spec.forwarding),
                    );
                    let k = d.key();
                    dests.entry(k).or_insert(d);
                    Some(SorryServer { key: k, weight: 1 })
                }
                Err(e) => {
                    out.problems.push(invalid(e.to_string()));
                    None
                }
            },
        };
        let policy = ServicePolicy {
            on_failure: match spec.health_check.on_failure {
                OnFailure::Remove => FailurePolicy::Remove,
                OnFailure::Quiesce => FailurePolicy::Quiesce,
            },
            quorum: spec
                .quorum
                .as_ref()
                .map(|q| Quorum {
                    min_weight: u64::from(q.min_healthy_weight),
                    hysteresis: u64::from(q.hysteresis),
                })
                .unwrap_or_default(),
            sorry,
        };
        let effect = plan_effective(&members, &policy, health.quorum_previous(&vs_key));
        out.quorum.insert(vs_key.clone(), effect.quorum_up);
        let mut state = ServiceState::new(svc);
        for e in effect.destinations {
            if let Some(mut d) = dests.get(&e.key).cloned() {
                d.weight = e.weight;
                state.destinations.insert(e.key, d);
            }
        }
        out.desired.add_service(state);
        out.origins.insert(key, vs_key.clone());

        if let ServiceKey::Fwmark { mark, .. } = key {
            for m in &spec.firewall_mark_match {
                out.desired.marks.insert(FwmarkRule {
                    vip,
                    protocol: Some(match m.protocol {
                        api::Protocol::Tcp => MarkProtocol::Tcp,
                        api::Protocol::Udp => MarkProtocol::Udp,
                        api::Protocol::Sctp => MarkProtocol::Sctp,
                    }),
                    ports: m.ports.iter().copied().collect(),
                    mark,
                });
            }
        }
        let iface = spec
            .directors
            .interface
            .clone()
            .unwrap_or_else(|| node.default_interface.clone());
        if director.nat && !director.interfaces.contains(&iface) {
            director.interfaces.push(iface.clone());
        }
        if node.master_of.contains(&vs_key) && !iface.is_empty() {
            let a = vip_address(&iface, vip);
            // One VIP shared by several services (ports) is one address.
            if !out.desired.addresses.iter().any(|x| x.key() == a.key()) {
                out.desired.addresses.insert(a);
            }
        }
    }

    let mut sysctls = profile::SysctlSet::new();
    if !out.desired.services.is_empty() {
        match profile::director(&director) {
            Ok(s) => sysctls.extend(s),
            Err(e) => out.problems.push(BuildProblem::Invalid {
                object: ObjectKey {
                    namespace: String::new(),
                    name: node.name.clone(),
                },
                message: e.to_string(),
            }),
        }
    }
    let uplinks: Vec<String> = if node.default_interface.is_empty() {
        Vec::new()
    } else {
        vec![node.default_interface.clone()]
    };
    for (holder, vips) in rs_holders {
        let set = if holder == "tunl0" {
            profile::real_server_tun(holder, &uplinks)
        } else {
            profile::real_server_dr(holder, &uplinks)
        };
        match set {
            Ok(s) => {
                profile::merge(&mut sysctls, s);
            }
            Err(e) => out.problems.push(BuildProblem::Invalid {
                object: ObjectKey {
                    namespace: String::new(),
                    name: node.name.clone(),
                },
                message: e.to_string(),
            }),
        }
        for vip in vips {
            let a = vip_address(holder, vip);
            if !out.desired.addresses.iter().any(|x| x.key() == a.key()) {
                out.desired.addresses.insert(a);
            }
        }
    }
    out.desired.sysctls = sysctls;
    out
}

#[cfg(test)]
mod tests;
