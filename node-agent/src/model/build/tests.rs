use serde_json::json;

use super::*;

fn vs(name: &str, spec: serde_json::Value) -> VirtualService {
    serde_json::from_value(json!({
        "apiVersion": "lvs.kube-lvs.io/v1alpha1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "web"},
        "spec": spec,
    }))
    .expect("valid VirtualService")
}

fn rs(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> RealServer {
    serde_json::from_value(json!({
        "apiVersion": "lvs.kube-lvs.io/v1alpha1",
        "kind": "RealServer",
        "metadata": {"name": name, "namespace": "web", "labels": labels},
        "spec": spec,
    }))
    .expect("valid RealServer")
}

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        namespace: "web".into(),
        name: name.into(),
    }
}

fn director_node(master: bool) -> NodeView {
    let mut n = NodeView {
        name: "node-a".into(),
        default_interface: "eth0".into(),
        ..Default::default()
    };
    n.directs.insert(key("http"));
    if master {
        n.master_of.insert(key("http"));
    }
    n
}

fn http_service(extra: serde_json::Value) -> VirtualService {
    let mut spec = json!({
        "vip": "192.0.2.100",
        "port": 80,
        "scheduler": "wrr",
        "realServerSelector": {"matchLabels": {"app": "web"}},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    vs("http", spec)
}

fn servers() -> Vec<RealServer> {
    vec![
        rs(
            "a",
            json!({"app": "web"}),
            json!({"address": "198.51.100.1", "weight": 3}),
        ),
        rs(
            "b",
            json!({"app": "web"}),
            json!({"address": "198.51.100.2", "port": 8080, "nodeName": "node-b"}),
        ),
        rs(
            "other",
            json!({"app": "db"}),
            json!({"address": "198.51.100.9"}),
        ),
    ]
}

struct Health(BTreeMap<String, bool>);

impl HealthView for Health {
    fn healthy(&self, _: &ObjectKey, server: &ObjectKey) -> Option<bool> {
        self.0.get(&server.name).copied()
    }
    fn quorum_previous(&self, _: &ObjectKey) -> Option<bool> {
        None
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test literal")
}

#[test]
fn director_master_gets_service_destinations_and_vip() {
    let out = build(
        &director_node(true),
        &[http_service(json!({}))],
        &servers(),
        &NoHealth,
    );
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    let k = ServiceKey::addr(Protocol::Tcp, ip("192.0.2.100"), 80);
    let st = &out.desired.services[&k];
    assert_eq!(st.service.scheduler, Scheduler::WeightedRoundRobin);
    let d: Vec<(IpAddr, u16, u32, Forwarding)> = st
        .destinations
        .values()
        .map(|d| (d.addr, d.port, d.weight, d.forwarding))
        .collect();
    assert_eq!(
        d,
        vec![
            (ip("198.51.100.1"), 80, 3, Forwarding::DirectRoute),
            (ip("198.51.100.2"), 8080, 1, Forwarding::DirectRoute),
        ]
    );
    assert_eq!(
        out.desired.addresses.iter().cloned().collect::<Vec<_>>(),
        vec![AddressSpec::host(
            "eth0",
            ip("192.0.2.100"),
            Some("eth0:kl".into())
        )]
    );
    assert_eq!(out.origins[&k], key("http"));
    // DR director: no forwarding sysctl, but the IPVS expiry knobs.
    let names: Vec<String> = out.desired.sysctls.keys().map(|k| k.to_string()).collect();
    assert!(names.contains(&"net.ipv4.vs.expire_nodest_conn".to_string()));
    assert!(!names.contains(&"net.ipv4.ip_forward".to_string()));
}

#[test]
fn backup_director_programs_ipvs_without_vip() {
    let out = build(
        &director_node(false),
        &[http_service(json!({}))],
        &servers(),
        &NoHealth,
    );
    assert_eq!(out.desired.services.len(), 1);
    assert!(out.desired.addresses.is_empty());
}

#[test]
fn dr_real_server_node_gets_vip_on_lo_and_arp_sysctls() {
    let node = NodeView {
        name: "node-b".into(),
        default_interface: "eth0".into(),
        ..Default::default()
    };
    let out = build(&node, &[http_service(json!({}))], &servers(), &NoHealth);
    assert!(out.desired.services.is_empty());
    assert_eq!(
        out.desired.addresses.iter().cloned().collect::<Vec<_>>(),
        vec![AddressSpec::host(
            "lo",
            ip("192.0.2.100"),
            Some("lo:kl".into())
        )]
    );
    let get = |k: &str| {
        out.desired
            .sysctls
            .get(&kube_lvs_net::SysctlKey::parse(k).expect("key"))
            .cloned()
    };
    assert_eq!(get("net.ipv4.conf.lo.arp_ignore").as_deref(), Some("1"));
    assert_eq!(get("net.ipv4.conf.eth0.arp_announce").as_deref(), Some("2"));
}

#[test]
fn tun_real_server_uses_tunl0_and_rp_filter() {
    let node = NodeView {
        name: "node-b".into(),
        default_interface: "eth0".into(),
        ..Default::default()
    };
    let svc = http_service(json!({"forwarding": {"method": "Tunnel"}}));
    let out = build(&node, &[svc], &servers(), &NoHealth);
    assert!(
        out.desired
            .addresses
            .iter()
            .any(|a| a.ifname == "tunl0" && a.label.as_deref() == Some("tunl0:kl"))
    );
    assert_eq!(
        out.desired
            .sysctls
            .get(&kube_lvs_net::SysctlKey::parse("net.ipv4.conf.tunl0.rp_filter").expect("k"))
            .map(String::as_str),
        Some("0")
    );
}

#[test]
fn nat_turns_on_forwarding_and_maps_tunnel_options() {
    let svc = http_service(json!({"forwarding": {"method": "NAT"}}));
    let out = build(&director_node(true), &[svc], &servers(), &NoHealth);
    let fwd = out
        .desired
        .sysctls
        .get(&kube_lvs_net::SysctlKey::ip_forward())
        .map(String::as_str);
    assert_eq!(fwd, Some("1"));
    assert!(out.desired.sysctls.contains_key(
        &kube_lvs_net::SysctlKey::parse("net.ipv4.conf.eth0.send_redirects").expect("k")
    ));
    let gue = http_service(
        json!({"forwarding": {"method": "Tunnel", "tunnel": {"type": "GUE", "port": 6080, "checksum": "Checksum"}}}),
    );
    let out = build(&director_node(true), &[gue], &servers(), &NoHealth);
    let st = out.desired.services.values().next().expect("service");
    assert!(st.destinations.values().all(|d| d.forwarding
        == Forwarding::Tunnel(TunnelType::Gue {
            port: 6080,
            csum: TunnelChecksum::Csum
        })));
}

#[test]
fn unhealthy_removed_or_quiesced_and_drain_is_weight_zero() {
    let health = Health([("a".to_string(), false)].into_iter().collect());
    let out = build(
        &director_node(true),
        &[http_service(json!({}))],
        &servers(),
        &health,
    );
    let st = out.desired.services.values().next().expect("service");
    assert_eq!(st.destinations.len(), 1, "unhealthy a removed");

    let q = http_service(json!({"healthCheck": {"onFailure": "Quiesce"}}));
    let out = build(&director_node(true), &[q], &servers(), &health);
    let st = out.desired.services.values().next().expect("service");
    let a = st
        .destinations
        .values()
        .find(|d| d.addr == ip("198.51.100.1"))
        .expect("a kept");
    assert_eq!(a.weight, 0);

    let mut drained = servers();
    drained[1].spec.drain = true;
    let out = build(
        &director_node(true),
        &[http_service(json!({}))],
        &drained,
        &NoHealth,
    );
    let st = out.desired.services.values().next().expect("service");
    let b = st
        .destinations
        .values()
        .find(|d| d.addr == ip("198.51.100.2"))
        .expect("b kept");
    assert_eq!(b.weight, 0);
}

#[test]
fn sorry_server_takes_over_below_quorum() {
    let health = Health(
        [("a".to_string(), false), ("b".to_string(), false)]
            .into_iter()
            .collect(),
    );
    let svc = http_service(json!({"sorryServer": {"address": "198.51.100.200"}}));
    let out = build(&director_node(true), &[svc], &servers(), &health);
    let st = out.desired.services.values().next().expect("service");
    let only: Vec<IpAddr> = st.destinations.values().map(|d| d.addr).collect();
    assert_eq!(only, vec![ip("198.51.100.200")]);
    assert_eq!(out.quorum.get(&key("http")), Some(&false));
}

#[test]
fn fwmark_service_with_two_ports_gets_mark_rule_and_port_zero() {
    let svc = vs(
        "http",
        json!({
            "vip": "192.0.2.100",
            "firewallMark": 1,
            "firewallMarkMatch": [{"protocol": "TCP", "ports": [80, 443]}],
            "persistence": {"timeoutSeconds": 300},
            "scheduler": "rr",
            "realServerSelector": {"matchLabels": {"app": "web"}},
        }),
    );
    let out = build(&director_node(true), &[svc], &servers()[..1], &NoHealth);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    let k = ServiceKey::fwmark(AddressFamily::Ipv4, 1);
    let st = &out.desired.services[&k];
    assert_eq!(
        st.service.persistence,
        Some(Persistence {
            timeout_secs: 300,
            prefix_len: 32
        })
    );
    assert!(st.destinations.values().all(|d| d.port == 0));
    let rule = out.desired.marks.iter().next().expect("rule");
    assert_eq!(rule.mark, 1);
    assert_eq!(
        rule.ports.iter().copied().collect::<Vec<_>>(),
        vec![80, 443]
    );
}

#[test]
fn duplicate_service_key_reported_once() {
    let mut other = http_service(json!({}));
    other.metadata.name = Some("http2".into());
    let mut node = director_node(true);
    node.directs.insert(key("http2"));
    let out = build(
        &node,
        &[http_service(json!({})), other],
        &servers(),
        &NoHealth,
    );
    assert_eq!(out.desired.services.len(), 1);
    assert!(matches!(
        out.problems.as_slice(),
        [BuildProblem::DuplicateService { .. }]
    ));
}

#[test]
fn selectors_match_expressions() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())]
        .into_iter()
        .collect();
    let req = |op: &str, vals: &[&str]| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app".into(),
            operator: op.into(),
            values: Some(vals.iter().map(|s| s.to_string()).collect()),
        }]),
        match_labels: None,
    };
    assert!(selector_matches(&LabelSelector::default(), &labels));
    assert!(selector_matches(&req("In", &["web", "x"]), &labels));
    assert!(!selector_matches(&req("NotIn", &["web"]), &labels));
    assert!(selector_matches(&req("Exists", &[]), &labels));
    assert!(!selector_matches(&req("DoesNotExist", &[]), &labels));
    assert!(!selector_matches(&req("Bogus", &[]), &labels));
}

#[test]
fn node_not_involved_gets_nothing() {
    let node = NodeView {
        name: "node-z".into(),
        ..Default::default()
    };
    let out = build(&node, &[http_service(json!({}))], &servers(), &NoHealth);
    assert_eq!(out.desired, Desired::default());
}
