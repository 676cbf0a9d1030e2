//! The desired data-plane model of one node, built from the API objects (pure).
//!
//! - As a **director** of a VirtualService the node programs its IPVS service and destinations,
//!   after health has been applied (`kube_lvs_health::effect`: Remove or Quiesce, drain, quorum
//!   with hysteresis and the sorry server), the firewall-mark rules of mark services, and the
//!   director sysctls. IPVS is programmed on masters and backups alike, as keepalived does, so a
//!   failover only moves the VIP; the VIP itself is added by the run loop while the VRRP instance
//!   is master.
//! - As a **real server** (a RealServer with `nodeName` = this node) selected with DirectRouting
//!   or Tunnel, the node gets the VIP on `lo` or `tunl0` and the ARP / rp_filter sysctls: what the
//!   classic `realserver.sh` did.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use kube_lvs_crds::v1alpha1::{
    ForwardingMethod, OnFailure, Protocol as ApiProtocol, RealServer, SchedulerFlag,
    TunnelChecksum as ApiChecksum, TunnelType as ApiTunnel, VirtualService,
};
use kube_lvs_health::CheckKey;
use kube_lvs_health::effect::{
    FailurePolicy, Member, Quorum, ServicePolicy, SorryServer, plan_effective,
};
use kube_lvs_ipvs::{
    Destination, Forwarding, Persistence, Protocol, SchedFlags, Scheduler, Service, ServiceKey,
    TunnelChecksum, TunnelType,
};
use kube_lvs_net::profile::{DirectorProfile, director, merge, real_server_dr, real_server_tun};
use kube_lvs_net::{AddressSpec, FwmarkRule, MarkProtocol};

use crate::director::{TranslateError, check_target, directs, selects, service_key};
use crate::model::{Desired, ServiceState};

/// Label of VIPs the agent puts on `lo` for DR real servers (shows in `ip addr` like the classic
/// `lo:0`).
pub const REAL_SERVER_LABEL: &str = "lo:klvs";
/// The IPIP tunnel device of TUN real servers (created by the `ipip` module).
pub const TUNNEL_DEVICE: &str = "tunl0";

/// This node as the builder needs it.
#[derive(Debug, Clone, Default)]
pub struct NodeInput {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Interfaces that carry traffic, for the interface-specific sysctls.
    pub interfaces: Vec<String>,
}

/// Health as the checks see it now; a target without an entry counts as its check's initial
/// state, given by the caller through `unknown_is_healthy`.
#[derive(Debug, Clone, Default)]
pub struct HealthView {
    pub healthy: BTreeMap<CheckKey, bool>,
}

/// The result of one build.
#[derive(Debug, Clone, Default)]
pub struct Built {
    pub desired: Desired,
    /// Quorum state per VirtualService key, to pass to the next build (hysteresis).
    pub quorum: BTreeMap<String, bool>,
    /// VirtualServices whose quorum changed in this build.
    pub quorum_changed: Vec<String>,
    pub errors: Vec<TranslateError>,
}

fn err(vs: &VirtualService, field: &'static str, message: impl Into<String>) -> TranslateError {
    TranslateError {
        object: service_key(vs),
        field,
        message: message.into(),
    }
}

fn protocol(p: ApiProtocol) -> Protocol {
    match p {
        ApiProtocol::Tcp => Protocol::Tcp,
        ApiProtocol::Udp => Protocol::Udp,
        ApiProtocol::Sctp => Protocol::Sctp,
    }
}

/// The IPVS service (without destinations) of a VirtualService.
pub fn ipvs_service(vs: &VirtualService) -> Result<Service, TranslateError> {
    let vip = vs
        .spec
        .vip_addr()
        .map_err(|e| err(vs, "spec.vip", e.to_string()))?;
    let key = match (vs.spec.firewall_mark, vs.spec.port) {
        (Some(mark), _) => ServiceKey::fwmark(
            if vip.is_ipv4() {
                kube_lvs_ipvs::AddressFamily::Ipv4
            } else {
                kube_lvs_ipvs::AddressFamily::Ipv6
            },
            mark,
        ),
        (None, Some(port)) => ServiceKey::addr(protocol(vs.spec.effective_protocol()), vip, port),
        (None, None) => return Err(err(vs, "spec.port", "port or firewallMark is required")),
    };
    let scheduler = Scheduler::from_name(vs.spec.scheduler.as_str())
        .ok_or_else(|| err(vs, "spec.scheduler", "unknown scheduler"))?;
    let mut service = Service::new(key, scheduler);
    let flags = &vs.spec.scheduler_flags;
    service.sched_flags = SchedFlags {
        fallback: flags
            .iter()
            .any(|f| matches!(f, SchedulerFlag::ShFallback | SchedulerFlag::MhFallback)),
        port: flags
            .iter()
            .any(|f| matches!(f, SchedulerFlag::ShPort | SchedulerFlag::MhPort)),
        flag3: false,
    };
    service.one_packet = vs.spec.one_packet;
    service.persistence = match &vs.spec.persistence {
        Some(p) => Some(Persistence {
            timeout_secs: p.timeout_seconds,
            prefix_len: vs
                .spec
                .persistence_prefix_length()
                .map_err(|e| err(vs, "spec.persistence", e.to_string()))?
                .unwrap_or(if vip.is_ipv4() { 32 } else { 128 }),
        }),
        None => None,
    };
    Ok(service)
}

fn forwarding(vs: &VirtualService, method: ForwardingMethod) -> Forwarding {
    match method {
        ForwardingMethod::Nat => Forwarding::Masquerade,
        ForwardingMethod::DirectRouting => Forwarding::DirectRoute,
        ForwardingMethod::Tunnel => {
            let t = vs.spec.forwarding.tunnel.clone().unwrap_or_default();
            let csum = match t.checksum {
                ApiChecksum::None => TunnelChecksum::None,
                ApiChecksum::Checksum => TunnelChecksum::Csum,
                ApiChecksum::RemoteChecksum => TunnelChecksum::RemCsum,
            };
            Forwarding::Tunnel(match t.tunnel_type {
                ApiTunnel::Ipip => TunnelType::Ipip,
                ApiTunnel::Gue => TunnelType::Gue {
                    port: t.port.unwrap_or_default(),
                    csum,
                },
                ApiTunnel::Gre => TunnelType::Gre { csum },
            })
        }
    }
}

fn mark_protocol(p: ApiProtocol) -> MarkProtocol {
    match p {
        ApiProtocol::Tcp => MarkProtocol::Tcp,
        ApiProtocol::Udp => MarkProtocol::Udp,
        ApiProtocol::Sctp => MarkProtocol::Sctp,
    }
}

/// Builds the node's desired state. `quorum_previous` is the `quorum` of the last build.
pub fn build(
    node: &NodeInput,
    services: &[VirtualService],
    servers: &[RealServer],
    health: &HealthView,
    quorum_previous: &BTreeMap<String, bool>,
) -> Built {
    let mut out = Built::default();
    let mut profile = DirectorProfile {
        interfaces: node.interfaces.clone(),
        ..Default::default()
    };
    let mut directing = false;

    for vs in services.iter().filter(|vs| directs(&node.labels, vs)) {
        let key = service_key(vs);
        let service = match ipvs_service(vs) {
            Ok(s) => s,
            Err(e) => {
                out.errors.push(e);
                continue;
            }
        };
        directing = true;
        let checked = !matches!(
            vs.spec.health_check.check_type,
            kube_lvs_crds::v1alpha1::HealthCheckType::None
        );
        let initially_healthy = matches!(
            vs.spec.health_check.initial_state,
            kube_lvs_crds::v1alpha1::InitialState::Up
        );

        // Members in a stable order, each with its destination template.
        let mut templates: BTreeMap<SocketAddr, Destination> = BTreeMap::new();
        let mut members: Vec<Member<SocketAddr>> = Vec::new();
        for rs in servers.iter().filter(|rs| selects(vs, rs)) {
            let target = match check_target(vs, rs) {
                Ok(t) => t,
                Err(e) => {
                    out.errors.push(e);
                    continue;
                }
            };
            let method = rs.spec.effective_forwarding(vs.spec.forwarding.method);
            if method == ForwardingMethod::Nat {
                profile.nat = true;
                profile.nat_ipv6 |= target.is_ipv6();
            }
            let mut d = Destination::new(target.ip(), target.port(), forwarding(vs, method));
            d.weight = rs.spec.weight;
            d.upper_threshold = rs.spec.upper_threshold.unwrap_or(0);
            d.lower_threshold = rs.spec.effective_lower_threshold().unwrap_or(0);
            let healthy = if checked {
                health
                    .healthy
                    .get(&CheckKey::new(key.clone(), target))
                    .copied()
                    .unwrap_or(initially_healthy)
            } else {
                true
            };
            members.push(Member {
                key: target,
                weight: rs.spec.weight,
                healthy,
                drain: rs.spec.drain,
            });
            templates.insert(target, d);
        }

        let sorry = match &vs.spec.sorry_server {
            Some(s) => match s.address.parse() {
                Ok(ip) => {
                    let target = SocketAddr::new(ip, s.port.or(vs.spec.port).unwrap_or(0));
                    let mut d = Destination::new(ip, target.port(), Forwarding::Masquerade);
                    d.weight = 1;
                    // The sorry server is reached by masquerading, like keepalived's.
                    profile.nat = true;
                    templates.insert(target, d);
                    Some(SorryServer {
                        key: target,
                        weight: 1,
                    })
                }
                Err(e) => {
                    out.errors
                        .push(err(vs, "spec.sorryServer.address", e.to_string()));
                    None
                }
            },
            None => None,
        };
        let quorum = match &vs.spec.quorum {
            Some(q) => Quorum {
                min_weight: u64::from(q.min_healthy_weight),
                hysteresis: u64::from(q.hysteresis),
            },
            // Without a quorum, the sorry server takes over when nothing healthy is left, as
            // keepalived's sorry_server does.
            None => Quorum::default(),
        };
        let policy = ServicePolicy {
            on_failure: match vs.spec.health_check.on_failure {
                OnFailure::Remove => FailurePolicy::Remove,
                OnFailure::Quiesce => FailurePolicy::Quiesce,
            },
            quorum,
            sorry,
        };
        let effect = plan_effective(&members, &policy, quorum_previous.get(&key).copied());
        out.quorum.insert(key.clone(), effect.quorum_up);
        if quorum_previous.get(&key) != Some(&effect.quorum_up) {
            out.quorum_changed.push(key.clone());
        }

        let mut state = ServiceState::new(service.clone());
        for d in effect.destinations {
            if let Some(t) = templates.get(&d.key) {
                let mut dest = t.clone();
                dest.weight = d.weight;
                state = state.with_destination(dest);
            }
        }
        out.desired.add_service(state);

        if let Some(mark) = vs.spec.firewall_mark
            && let Ok(vip) = vs.spec.vip_addr()
        {
            if vs.spec.firewall_mark_match.is_empty() {
                out.desired.marks.insert(FwmarkRule {
                    vip,
                    protocol: None,
                    ports: BTreeSet::new(),
                    mark,
                });
            }
            for m in &vs.spec.firewall_mark_match {
                out.desired.marks.insert(FwmarkRule {
                    vip,
                    protocol: Some(mark_protocol(m.protocol)),
                    ports: m.ports.iter().copied().collect(),
                    mark,
                });
            }
        }
    }

    if directing {
        match director(&profile) {
            Ok(set) => {
                merge(&mut out.desired.sysctls, set);
            }
            Err(e) => out.errors.push(TranslateError {
                object: format!("node/{}", node.name),
                field: "sysctls",
                message: e.to_string(),
            }),
        }
    }

    // Real-server preparation for this node.
    for rs in servers
        .iter()
        .filter(|rs| rs.spec.node_name.as_deref() == Some(node.name.as_str()))
    {
        for vs in services.iter().filter(|vs| selects(vs, rs)) {
            let Ok(vip) = vs.spec.vip_addr() else {
                continue;
            };
            let method = rs.spec.effective_forwarding(vs.spec.forwarding.method);
            let (address, sysctls) = match method {
                ForwardingMethod::Nat => continue,
                ForwardingMethod::DirectRouting => (
                    AddressSpec::host(
                        "lo",
                        vip,
                        vip.is_ipv4().then(|| REAL_SERVER_LABEL.to_string()),
                    ),
                    real_server_dr("lo", &node.interfaces),
                ),
                ForwardingMethod::Tunnel => (
                    AddressSpec::host(TUNNEL_DEVICE, vip, None),
                    real_server_tun(TUNNEL_DEVICE, &node.interfaces),
                ),
            };
            out.desired.addresses.insert(address);
            match sysctls {
                Ok(set) => {
                    merge(&mut out.desired.sysctls, set);
                }
                Err(e) => out.errors.push(err(vs, "sysctls", e.to_string())),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lvs_net::SysctlKey;
    use serde_json::json;

    fn vs(name: &str, spec: serde_json::Value) -> VirtualService {
        let mut base = json!({"vip": "192.0.2.100", "port": 80,
                              "realServerSelector": {"matchLabels": {"app": "web"}}});
        if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
            for (k, v) in s {
                b.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(json!({
            "apiVersion": "lvs.kube-lvs.io/v1alpha1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": base,
            "status": {"assignment": {"routerId": 5, "priorities": [{"nodeName": "d1", "priority": 150}]}}
        }))
        .unwrap()
    }

    fn rs(name: &str, spec: serde_json::Value) -> RealServer {
        serde_json::from_value(json!({
            "apiVersion": "lvs.kube-lvs.io/v1alpha1", "kind": "RealServer",
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
            "spec": spec
        }))
        .unwrap()
    }

    fn director_node() -> NodeInput {
        NodeInput {
            name: "d1".into(),
            labels: BTreeMap::from([("lvs.kube-lvs.io/director".into(), "true".into())]),
            interfaces: vec!["eth0".into()],
        }
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn weights(b: &Built) -> Vec<(String, u32)> {
        b.desired
            .services
            .values()
            .flat_map(|s| s.destinations.values())
            .map(|d| (format!("{}:{}", d.addr, d.port), d.weight))
            .collect()
    }

    #[test]
    fn director_programs_service_and_weights() {
        let v = vs(
            "web",
            json!({"scheduler": "wrr", "persistence": {"timeoutSeconds": 50}}),
        );
        let servers = [
            rs("a", json!({"address": "192.0.2.11", "weight": 2})),
            rs("b", json!({"address": "192.0.2.12", "weight": 3})),
        ];
        let b = build(
            &director_node(),
            &[v],
            &servers,
            &HealthView::default(),
            &BTreeMap::new(),
        );
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        let (key, state) = b.desired.services.iter().next().unwrap();
        assert_eq!(
            *key,
            ServiceKey::addr(Protocol::Tcp, "192.0.2.100".parse().unwrap(), 80)
        );
        assert_eq!(state.service.scheduler, Scheduler::WeightedRoundRobin);
        assert_eq!(
            state.service.persistence,
            Some(Persistence {
                timeout_secs: 50,
                prefix_len: 32
            })
        );
        assert_eq!(
            weights(&b),
            [
                ("192.0.2.11:80".to_string(), 2),
                ("192.0.2.12:80".to_string(), 3)
            ]
        );
        assert!(
            state
                .destinations
                .values()
                .all(|d| d.forwarding == Forwarding::DirectRoute)
        );
        // Director knobs are set; DR needs no forwarding.
        assert_eq!(
            b.desired
                .sysctls
                .get(&SysctlKey::vs("expire_nodest_conn").unwrap())
                .map(String::as_str),
            Some("1")
        );
        assert!(!b.desired.sysctls.contains_key(&SysctlKey::ip_forward()));
        assert!(
            b.desired.addresses.is_empty(),
            "the VIP follows VRRP, not the build"
        );
    }

    #[test]
    fn unhealthy_removed_or_quiesced_and_drain_is_weight_zero() {
        let servers = [
            rs("a", json!({"address": "192.0.2.11"})),
            rs("b", json!({"address": "192.0.2.12"})),
            rs("c", json!({"address": "192.0.2.13", "drain": true})),
        ];
        let mut health = HealthView::default();
        health
            .healthy
            .insert(CheckKey::new("ns/web", sock("192.0.2.12:80")), false);
        let remove = build(
            &director_node(),
            &[vs("web", json!({}))],
            &servers,
            &health,
            &BTreeMap::new(),
        );
        assert_eq!(
            weights(&remove),
            [
                ("192.0.2.11:80".to_string(), 1),
                ("192.0.2.13:80".to_string(), 0)
            ]
        );
        let quiesce = build(
            &director_node(),
            &[vs("web", json!({"healthCheck": {"onFailure": "Quiesce"}}))],
            &servers,
            &health,
            &BTreeMap::new(),
        );
        assert_eq!(
            weights(&quiesce),
            [
                ("192.0.2.11:80".to_string(), 1),
                ("192.0.2.12:80".to_string(), 0),
                ("192.0.2.13:80".to_string(), 0)
            ]
        );
    }

    #[test]
    fn initial_down_keeps_new_servers_out_until_checked() {
        let servers = [rs("a", json!({"address": "192.0.2.11"}))];
        let v = vs("web", json!({"healthCheck": {"initialState": "Down"}}));
        let b = build(
            &director_node(),
            std::slice::from_ref(&v),
            &servers,
            &HealthView::default(),
            &BTreeMap::new(),
        );
        assert!(weights(&b).is_empty());
        let mut health = HealthView::default();
        health
            .healthy
            .insert(CheckKey::new("ns/web", sock("192.0.2.11:80")), true);
        let b = build(&director_node(), &[v], &servers, &health, &BTreeMap::new());
        assert_eq!(weights(&b).len(), 1);
    }

    #[test]
    fn sorry_server_below_quorum_with_hysteresis() {
        let servers = [
            rs("a", json!({"address": "192.0.2.11"})),
            rs("b", json!({"address": "192.0.2.12"})),
        ];
        let v = vs(
            "web",
            json!({"quorum": {"minHealthyWeight": 2, "hysteresis": 0},
                   "sorryServer": {"address": "192.0.2.50", "port": 8080}}),
        );
        let mut health = HealthView::default();
        let k = CheckKey::new("ns/web", sock("192.0.2.12:80"));
        health.healthy.insert(k.clone(), false);
        let b = build(
            &director_node(),
            std::slice::from_ref(&v),
            &servers,
            &health,
            &BTreeMap::new(),
        );
        assert_eq!(b.quorum.get("ns/web"), Some(&false));
        let w = weights(&b);
        assert!(w.contains(&("192.0.2.50:8080".to_string(), 1)), "{w:?}");
        assert!(
            w.contains(&("192.0.2.11:80".to_string(), 0)),
            "standby at weight 0: {w:?}"
        );
        health.healthy.insert(k, true);
        let b2 = build(&director_node(), &[v], &servers, &health, &b.quorum);
        assert_eq!(b2.quorum.get("ns/web"), Some(&true));
        assert_eq!(b2.quorum_changed, ["ns/web"]);
        assert!(!weights(&b2).iter().any(|(a, _)| a == "192.0.2.50:8080"));
    }

    #[test]
    fn nat_turns_on_forwarding() {
        let servers = [rs("a", json!({"address": "198.51.100.11", "port": 8080}))];
        let v = vs("web", json!({"forwarding": {"method": "NAT"}}));
        let b = build(
            &director_node(),
            &[v],
            &servers,
            &HealthView::default(),
            &BTreeMap::new(),
        );
        assert_eq!(
            b.desired
                .sysctls
                .get(&SysctlKey::ip_forward())
                .map(String::as_str),
            Some("1")
        );
        let d = b
            .desired
            .services
            .values()
            .next()
            .unwrap()
            .destinations
            .values()
            .next()
            .unwrap();
        assert_eq!((d.port, d.forwarding), (8080, Forwarding::Masquerade));
    }

    #[test]
    fn fwmark_service_gets_mark_rules() {
        let v = vs(
            "shop",
            json!({"port": null, "firewallMark": 7, "persistence": {"timeoutSeconds": 300},
                   "firewallMarkMatch": [{"protocol": "TCP", "ports": [80, 443]}]}),
        );
        let servers = [rs("a", json!({"address": "192.0.2.11"}))];
        let b = build(
            &director_node(),
            &[v],
            &servers,
            &HealthView::default(),
            &BTreeMap::new(),
        );
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        let rule = b.desired.marks.iter().next().unwrap();
        assert_eq!(rule.mark, 7);
        assert_eq!(rule.ports, BTreeSet::from([80, 443]));
        let key = b.desired.services.keys().next().unwrap();
        assert_eq!(
            *key,
            ServiceKey::fwmark(kube_lvs_ipvs::AddressFamily::Ipv4, 7)
        );
    }

    #[test]
    fn conflicted_or_unassigned_services_are_not_programmed() {
        let mut v = vs("web", json!({}));
        v.status = None;
        let servers = [rs("a", json!({"address": "192.0.2.11"}))];
        let b = build(
            &director_node(),
            &[v],
            &servers,
            &HealthView::default(),
            &BTreeMap::new(),
        );
        assert!(b.desired.services.is_empty());
        assert!(b.desired.sysctls.is_empty());
    }

    #[test]
    fn dr_real_server_node_gets_vip_on_lo_and_arp_sysctls() {
        let node = NodeInput {
            name: "rs-node".into(),
            labels: BTreeMap::new(),
            interfaces: vec!["eth0".into()],
        };
        let servers = [rs(
            "a",
            json!({"address": "192.0.2.11", "nodeName": "rs-node"}),
        )];
        let b = build(
            &node,
            &[vs("web", json!({}))],
            &servers,
            &HealthView::default(),
            &BTreeMap::new(),
        );
        assert!(b.desired.services.is_empty(), "not a director");
        let a = b.desired.addresses.iter().next().unwrap();
        assert_eq!((a.ifname.as_str(), a.prefix_len), ("lo", 32));
        assert_eq!(a.label.as_deref(), Some(REAL_SERVER_LABEL));
        for k in [
            "net.ipv4.conf.lo.arp_ignore",
            "net.ipv4.conf.all.arp_ignore",
            "net.ipv4.conf.eth0.arp_ignore",
        ] {
            assert_eq!(
                b.desired
                    .sysctls
                    .get(&SysctlKey::parse(k).unwrap())
                    .map(String::as_str),
                Some("1"),
                "{k}"
            );
        }
        assert_eq!(
            b.desired
                .sysctls
                .get(&SysctlKey::parse("net.ipv4.conf.all.arp_announce").unwrap())
                .map(String::as_str),
            Some("2")
        );
    }

    #[test]
    fn tun_real_server_node_gets_vip_on_tunl0_and_no_rp_filter() {
        let node = NodeInput {
            name: "rs-node".into(),
            ..Default::default()
        };
        let servers = [rs(
            "a",
            json!({"address": "192.0.2.11", "nodeName": "rs-node"}),
        )];
        let v = vs("web", json!({"forwarding": {"method": "Tunnel"}}));
        let b = build(
            &node,
            &[v],
            &servers,
            &HealthView::default(),
            &BTreeMap::new(),
        );
        let a = b.desired.addresses.iter().next().unwrap();
        assert_eq!(a.ifname, TUNNEL_DEVICE);
        assert_eq!(
            b.desired
                .sysctls
                .get(&SysctlKey::parse("net.ipv4.conf.tunl0.rp_filter").unwrap())
                .map(String::as_str),
            Some("0")
        );
    }
}
