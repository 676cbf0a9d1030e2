//! What this node does as a director, as pure functions of the API objects: which
//! VirtualServices it directs, the health checks it runs, and the VRRP instances it speaks.
//!
//! One VRRP instance carries one VIP, shared by every VirtualService on that VIP (the operator
//! assigns one router id per VIP), so ports 80 and 443 of one site always move together.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use kube_lvs_crds::v1alpha1::{RealServer, VirtualService, condition};
use kube_lvs_health::{CheckKey, CheckSpec};
use kube_lvs_vrrp::driver::{InstanceConfig, Vip};

/// A field of an object that cannot be turned into kernel or probe settings. The schema rejects
/// almost all of these; what remains (objects stored before a rule existed) is reported, not
/// applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {message}")]
pub struct TranslateError {
    pub object: String,
    pub field: &'static str,
    pub message: String,
}

/// `namespace/name` of an object.
pub fn object_key(ns: Option<&str>, name: Option<&str>) -> String {
    format!("{}/{}", ns.unwrap_or_default(), name.unwrap_or_default())
}

/// Key of a VirtualService, also the health-check service name.
pub fn service_key(vs: &VirtualService) -> String {
    object_key(
        vs.metadata.namespace.as_deref(),
        vs.metadata.name.as_deref(),
    )
}

/// Whether a node with these labels directs the VirtualService, and the operator has cleared it
/// (an assignment, no conflict): nothing is programmed for a conflicting object.
pub fn directs(node_labels: &BTreeMap<String, String>, vs: &VirtualService) -> bool {
    let selected = vs
        .spec
        .directors
        .node_selector
        .iter()
        .all(|(k, v)| node_labels.get(k) == Some(v));
    let status = vs.status.as_ref();
    let assigned = status
        .and_then(|s| s.assignment.as_ref())
        .and_then(|a| a.router_id)
        .is_some();
    let conflicted = status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition::CONFLICT && c.status == "True")
    });
    selected && assigned && !conflicted
}

/// Whether the VirtualService selects the RealServer (same namespace, label selector).
pub fn selects(vs: &VirtualService, rs: &RealServer) -> bool {
    vs.selects(rs)
}

/// The address and port a check of `rs` behind `vs` probes (before the check's own port).
pub fn check_target(vs: &VirtualService, rs: &RealServer) -> Result<SocketAddr, TranslateError> {
    let object = object_key(
        rs.metadata.namespace.as_deref(),
        rs.metadata.name.as_deref(),
    );
    let ip = rs.spec.address_addr().map_err(|e| TranslateError {
        object: object.clone(),
        field: "spec.address",
        message: e.to_string(),
    })?;
    // Firewall-mark services have no port of their own: the real server's, or the check's.
    let port = rs
        .spec
        .effective_port(vs.spec.port)
        .or(vs.spec.health_check.port)
        .unwrap_or(0);
    Ok(SocketAddr::new(ip, port))
}

/// Whether a check target (address and port, or the check port) belongs to this RealServer.
pub fn check_target_matches(rs: &RealServer, target: SocketAddr) -> bool {
    rs.spec.address_addr().is_ok_and(|a| a == target.ip())
}

/// The health-check parameters of a VirtualService; `None` for `type: None`. The translation
/// itself lives with the checkers (`kube_lvs_health::api`).
pub fn check_spec(vs: &VirtualService) -> Result<Option<CheckSpec>, TranslateError> {
    kube_lvs_health::api::check_spec(&vs.spec.health_check).map_err(|e| TranslateError {
        object: service_key(vs),
        field: "spec.healthCheck",
        message: e.to_string(),
    })
}

/// Every check this node runs: one per (directed VirtualService, selected RealServer).
pub fn plan_checks(
    directed: &[&VirtualService],
    servers: &[RealServer],
) -> (Vec<(CheckKey, CheckSpec)>, Vec<TranslateError>) {
    let mut checks = Vec::new();
    let mut errors = Vec::new();
    for vs in directed {
        let spec = match check_spec(vs) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for rs in servers.iter().filter(|rs| selects(vs, rs)) {
            match check_target(vs, rs) {
                Ok(t) => checks.push((CheckKey::new(service_key(vs), t), spec.clone())),
                Err(e) => errors.push(e),
            }
        }
    }
    (checks, errors)
}

/// Name of the VRRP instance of a VIP (stable across restarts, used in logs and metrics).
pub fn instance_name(vip: IpAddr, router_id: u8) -> String {
    format!("vrid{router_id}-{vip}")
}

/// The VRRP instance of one VIP on this node. `members` are the directed VirtualServices on the
/// VIP (the oldest one's VRRP settings win, as the operator's assignment does); `password` is the
/// v2 PASS secret, already read.
pub fn vrrp_instance(
    node: &str,
    members: &[&VirtualService],
    interface: &str,
    password: Option<String>,
) -> Result<Option<InstanceConfig>, TranslateError> {
    let Some(first) = members.first() else {
        return Ok(None);
    };
    let object = service_key(first);
    let vrrp = &first.spec.directors.vrrp;
    let err = |field: &'static str, message: String| TranslateError {
        object: object.clone(),
        field,
        message,
    };
    let vip = first
        .spec
        .vip_addr()
        .map_err(|e| err("spec.vip", e.to_string()))?;
    let Some(assignment) = first.status.as_ref().and_then(|s| s.assignment.as_ref()) else {
        return Ok(None);
    };
    let Some(router_id) = assignment.router_id else {
        return Ok(None);
    };
    let Some(priority) = assignment
        .priorities
        .iter()
        .find(|p| p.node_name == node)
        .map(|p| p.priority)
    else {
        return Ok(None);
    };
    let interval = vrrp
        .advertisement_interval
        .to_std()
        .map_err(|e| err("spec.directors.vrrp.advertisementInterval", e.to_string()))?;
    let preempt_delay = vrrp
        .preempt_delay
        .as_ref()
        .map(|d| d.to_std())
        .transpose()
        .map_err(|e| err("spec.directors.vrrp.preemptDelay", e.to_string()))?
        .unwrap_or_default();
    let garp_repeat = vrrp
        .garp
        .repeat_interval
        .to_std()
        .map_err(|e| err("spec.directors.vrrp.garp.repeatInterval", e.to_string()))?;
    let unicast_peers = vrrp
        .unicast_peers
        .iter()
        .map(|p| p.parse())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("spec.directors.vrrp.unicastPeers", e.to_string()))?;
    let cfg = InstanceConfig {
        name: instance_name(vip, router_id),
        interface: interface.to_string(),
        version: vrrp.version,
        vrid: router_id,
        priority,
        advert_interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
        preempt: vrrp.preempt,
        preempt_delay_ms: u64::try_from(preempt_delay.as_millis()).unwrap_or(u64::MAX),
        vips: vec![Vip {
            addr: vip,
            prefix_len: if vip.is_ipv4() { 32 } else { 128 },
        }],
        unicast_peers,
        source: None,
        password,
        garp_count: vrrp.garp.count,
        garp_repeat_delay_ms: u64::try_from(garp_repeat.as_millis()).unwrap_or(u64::MAX),
        group: None,
    };
    cfg.validate()
        .map_err(|e| err("spec.directors.vrrp", e.to_string()))?;
    Ok(Some(cfg))
}

/// Groups the directed VirtualServices by VIP, oldest first within a VIP.
pub fn by_vip<'a>(directed: &[&'a VirtualService]) -> BTreeMap<IpAddr, Vec<&'a VirtualService>> {
    let mut out: BTreeMap<IpAddr, Vec<&VirtualService>> = BTreeMap::new();
    for vs in directed {
        if let Ok(vip) = vs.spec.vip_addr() {
            out.entry(vip).or_default().push(vs);
        }
    }
    for members in out.values_mut() {
        members.sort_by_key(|vs| {
            (
                vs.metadata.creation_timestamp.as_ref().map(|t| t.0),
                service_key(vs),
            )
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lvs_health::spec::{BodyCheck, TlsOptions};
    use kube_lvs_health::{InitialState, Probe};
    use serde_json::json;
    use std::time::Duration;

    fn vs(extra: serde_json::Value, status: serde_json::Value) -> VirtualService {
        let mut spec = json!({"vip": "192.0.2.100", "port": 80,
                              "realServerSelector": {"matchLabels": {"app": "web"}}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(json!({
            "apiVersion": "lvs.kube-lvs.io/v1alpha1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": spec, "status": status
        }))
        .unwrap()
    }

    fn rs(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> RealServer {
        serde_json::from_value(json!({
            "apiVersion": "lvs.kube-lvs.io/v1alpha1", "kind": "RealServer",
            "metadata": {"name": name, "namespace": "ns", "labels": labels},
            "spec": spec
        }))
        .unwrap()
    }

    fn assigned() -> serde_json::Value {
        json!({"assignment": {"routerId": 51, "priorities": [
            {"nodeName": "d1", "priority": 150}, {"nodeName": "d2", "priority": 140}]}})
    }

    fn director_labels() -> BTreeMap<String, String> {
        BTreeMap::from([("lvs.kube-lvs.io/director".into(), "true".into())])
    }

    #[test]
    fn directs_needs_selector_assignment_and_no_conflict() {
        let labels = director_labels();
        assert!(directs(&labels, &vs(json!({}), assigned())));
        assert!(!directs(&BTreeMap::new(), &vs(json!({}), assigned())));
        assert!(
            !directs(&labels, &vs(json!({}), json!({}))),
            "not assigned yet"
        );
        let conflicted = json!({"assignment": {"routerId": 3},
            "conditions": [{"type": "Conflict", "status": "True", "reason": "ListenerInUse",
                            "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        assert!(!directs(&labels, &vs(json!({}), conflicted)));
    }

    #[test]
    fn checks_one_per_selected_server_with_api_timings() {
        let v = vs(
            json!({"healthCheck": {"type": "HTTP", "interval": "2s", "timeout": "500ms",
                   "rise": 2, "fall": 4, "initialState": "Down",
                   "http": {"path": "/health", "expectedStatus": [200, 204]}}}),
            assigned(),
        );
        let servers = vec![
            rs("a", json!({"app": "web"}), json!({"address": "192.0.2.11"})),
            rs(
                "b",
                json!({"app": "web"}),
                json!({"address": "192.0.2.12", "port": 8080}),
            ),
            rs("c", json!({"app": "db"}), json!({"address": "192.0.2.13"})),
        ];
        let (checks, errors) = plan_checks(&[&v], &servers);
        assert!(errors.is_empty(), "{errors:?}");
        let targets: Vec<String> = checks.iter().map(|(k, _)| k.target.to_string()).collect();
        assert_eq!(targets, ["192.0.2.11:80", "192.0.2.12:8080"]);
        let spec = &checks[0].1;
        assert_eq!(spec.timing.interval, Duration::from_secs(2));
        assert_eq!(spec.timing.timeout, Duration::from_millis(500));
        assert_eq!((spec.timing.rise, spec.timing.fall), (2, 4));
        assert_eq!(spec.initial, InitialState::Unhealthy);
        match &spec.probe {
            Probe::Http(h) => {
                assert!(h.tls.is_none());
                assert_eq!(h.path, "/health");
                assert_eq!(h.expected_status.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(checks[0].0.service, "ns/web");
    }

    #[test]
    fn none_type_runs_no_check_and_https_verifies_on_request() {
        let v = vs(json!({"healthCheck": {"type": "None"}}), assigned());
        assert_eq!(check_spec(&v).unwrap(), None);
        let v = vs(
            json!({"healthCheck": {"type": "HTTPS", "http": {"tlsVerify": true,
                   "bodyDigest": "D41D8CD98F00B204E9800998ECF8427E"}}}),
            assigned(),
        );
        match check_spec(&v).unwrap().unwrap().probe {
            Probe::Http(h) => {
                assert_eq!(h.tls, Some(TlsOptions { verify: true }));
                assert_eq!(
                    h.body,
                    BodyCheck::Md5Hex("d41d8cd98f00b204e9800998ecf8427e".into())
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expect_checks_carry_send_and_expect() {
        let v = vs(
            json!({"healthCheck": {"type": "TCPExpect",
                   "expect": {"send": "PING\r\n", "expect": "^\\+PONG"}}}),
            assigned(),
        );
        match check_spec(&v).unwrap().unwrap().probe {
            Probe::TcpExchange(x) => {
                assert_eq!(x.send, b"PING\r\n");
                assert_eq!(x.expect.as_deref(), Some("^\\+PONG"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn vrrp_instance_uses_assignment_for_this_node() {
        let v = vs(
            json!({"directors": {"vrrp": {"version": 3, "advertisementInterval": "100ms",
                   "preempt": false, "unicastPeers": ["192.0.2.2"],
                   "garp": {"count": 3, "repeatInterval": "200ms"}}}}),
            assigned(),
        );
        let i = vrrp_instance("d2", &[&v], "eth0", None).unwrap().unwrap();
        assert_eq!(i.vrid, 51);
        assert_eq!(i.priority, 140);
        assert_eq!(i.advert_interval_ms, 100);
        assert!(!i.preempt);
        assert_eq!(i.interface, "eth0");
        assert_eq!(
            i.vips[0].to_owned().addr,
            "192.0.2.100".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            i.unicast_peers,
            vec!["192.0.2.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!((i.garp_count, i.garp_repeat_delay_ms), (3, 200));
        assert_eq!(i.name, "vrid51-192.0.2.100");
        // A node without a priority in the assignment speaks no VRRP for it.
        assert_eq!(vrrp_instance("d9", &[&v], "eth0", None).unwrap(), None);
    }

    #[test]
    fn v2_instance_carries_password() {
        let v = vs(
            json!({"directors": {"vrrp": {"version": 2, "advertisementInterval": "1s",
                   "authSecretRef": {"name": "vrrp", "key": "password"}}}}),
            assigned(),
        );
        let i = vrrp_instance("d1", &[&v], "eth0", Some("s3cret".into()))
            .unwrap()
            .unwrap();
        assert_eq!(i.version, 2);
        assert_eq!(i.password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn services_group_by_vip() {
        let a = vs(json!({}), assigned());
        let mut b = vs(json!({"port": 443}), assigned());
        b.metadata.name = Some("web-tls".into());
        let mut c = vs(json!({"vip": "192.0.2.101"}), assigned());
        c.metadata.name = Some("other".into());
        let groups = by_vip(&[&a, &b, &c]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[&"192.0.2.100".parse::<IpAddr>().unwrap()].len(), 2);
    }
}
