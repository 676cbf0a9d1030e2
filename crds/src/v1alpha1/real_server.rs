//! `RealServer`: one backend (address, optional port, weight) that VirtualServices select by
//! label.

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AddressError, ForwardingMethod, IpAddress};

/// Desired state of one real server.
// kube's printcolumn(...) entries legitimately repeat type_ = "..."; clippy reads them as
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lvs.kube-lvs.io",
    version = "v1alpha1",
    kind = "RealServer",
    namespaced,
    status = "RealServerStatus",
    shortname = "lvsrs",
    category = "lvs",
    derive = "PartialEq",
    doc = "A Linux Virtual Server real server (backend). VirtualServices whose realServerSelector matches its labels balance traffic to it. Replaces a keepalived real_server block, an ipvsadm -a line, or an ldirectord real= line.",
    printcolumn(
        name = "ADDRESS",
        type_ = "string",
        json_path = ".spec.address",
        description = "Real server address"
    ),
    printcolumn(
        name = "PORT",
        type_ = "integer",
        json_path = ".spec.port",
        description = "Port (empty means the service port)"
    ),
    printcolumn(
        name = "WEIGHT",
        type_ = "integer",
        json_path = ".spec.weight",
        description = "IPVS weight"
    ),
    printcolumn(
        name = "HEALTH",
        type_ = "string",
        json_path = ".status.health",
        description = "Health summary"
    ),
    printcolumn(
        name = "ACTIVE",
        type_ = "integer",
        json_path = ".status.activeConnections",
        description = "Active connections on the master director"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.lowerThreshold) || (has(self.upperThreshold) && self.lowerThreshold < self.upperThreshold)")
    .message("lowerThreshold needs an upperThreshold greater than it")
    .field_path(".lowerThreshold"))]
pub struct RealServerSpec {
    /// Address of the real server, IPv4 or IPv6, of the same family as the VirtualServices
    /// that select it (keepalived: real_server <IP>; ipvsadm: -r <IP>; ldirectord: real=<IP>).
    pub address: IpAddress,

    /// Port, 1-65535; absent means the VirtualService's port. With DirectRouting and Tunnel
    /// it must equal the service port, because the director cannot rewrite it (keepalived:
    /// real_server <IP> <PORT>; ipvsadm: -r <IP>:<PORT>).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,

    /// IPVS weight, 0-65535, default 1; 0 accepts no new connections (keepalived: weight;
    /// ipvsadm: -w; ldirectord: the weight after the forwarding method).
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 65535))]
    pub weight: u32,

    /// Upper connection limit, 1-65535: the server gets no new connections while it has more
    /// (active + inactive); absent means unlimited (keepalived: uthreshold; ipvsadm: -x).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub upper_threshold: Option<u32>,

    /// Connection count below which an overloaded server takes new connections again;
    /// absent means three quarters of upperThreshold (keepalived: lthreshold; ipvsadm: -y).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub lower_threshold: Option<u32>,

    /// Drain: set the IPVS weight to 0 so existing connections finish and no new ones arrive,
    /// while health checks continue; default false (ipvsadm -e -w 0).
    #[serde(default)]
    pub drain: bool,

    /// Per-server forwarding method overriding the VirtualService's (keepalived: lb_kind in
    /// real_server; ipvsadm: -g/-m/-i per -a line). Tunnel encapsulation comes from the
    /// VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<RealServerForwarding>,

    /// Node that is this real server, when it is a cluster node: its agent then prepares it
    /// for DirectRouting/Tunnel (VIP on lo or tunl0, arp_ignore=1, arp_announce=2), the job of
    /// the classic realserver.sh / lo:0 script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node_name: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// Forwarding override of one real server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealServerForwarding {
    /// NAT, DirectRouting or Tunnel for this server only.
    pub method: ForwardingMethod,
}

/// Observed state of a RealServer, written by the node agents (their own `directors` entries)
/// and the operator (summary).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealServerStatus {
    /// metadata.generation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Healthy, Unhealthy or Unknown, as seen by the master directors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,

    /// One entry per (VirtualService, director node) that checks this server, each written by
    /// that node's agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["virtualService", "nodeName"]
    ))]
    pub directors: Vec<RealServerDirectorStatus>,

    /// Active connections (IPVS ActiveConn) on the master directors, summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_connections: Option<u64>,

    /// Inactive connections (IPVS InActConn) on the master directors, summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_connections: Option<u64>,

    /// Conditions such as Ready or Conflict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Health summary.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Health {
    /// Passing its checks.
    Healthy,
    /// Failing its checks.
    Unhealthy,
    /// Not checked yet or no director reports.
    #[default]
    Unknown,
}

/// What one director's checker knows about this server for one VirtualService.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealServerDirectorStatus {
    /// Name of the VirtualService (same namespace) whose check this is.
    pub virtual_service: String,

    /// Director node running the check.
    pub node_name: String,

    /// Result of the rise/fall tracker.
    pub healthy: bool,

    /// When `healthy` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,

    /// When the last probe finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,

    /// Duration of the last successful probe in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_milliseconds: Option<u64>,

    /// Failed probes since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,

    /// Error of the last failed probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,

    /// Active connections on this director.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_connections: Option<u64>,

    /// Inactive connections on this director.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_connections: Option<u64>,
}

impl RealServerSpec {
    /// The address as an `IpAddr`.
    pub fn address_addr(&self) -> Result<IpAddr, AddressError> {
        self.address.parse()
    }

    /// The port to use behind a service listening on `service_port`.
    pub fn effective_port(&self, service_port: Option<u16>) -> Option<u16> {
        self.port.or(service_port)
    }

    /// The forwarding method, given the VirtualService's.
    pub fn effective_forwarding(&self, service: ForwardingMethod) -> ForwardingMethod {
        self.forwarding.as_ref().map_or(service, |f| f.method)
    }

    /// The weight to program into IPVS: 0 while draining.
    pub fn effective_weight(&self) -> u32 {
        if self.drain { 0 } else { self.weight }
    }

    /// Lower threshold as IPVS wants it: the explicit one, else three quarters of the upper.
    pub fn effective_lower_threshold(&self) -> Option<u32> {
        match (self.lower_threshold, self.upper_threshold) {
            (Some(l), _) => Some(l),
            (None, Some(u)) => Some(u / 4 * 3),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> RealServerSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults() {
        let rs = spec(json!({"address": "192.0.2.11"}));
        assert_eq!(rs.weight, 1);
        assert!(!rs.drain);
        assert_eq!(rs.effective_port(Some(80)), Some(80));
        assert_eq!(
            rs.effective_forwarding(ForwardingMethod::DirectRouting),
            ForwardingMethod::DirectRouting
        );
        assert_eq!(rs.address_addr(), Ok("192.0.2.11".parse().unwrap()));
        assert_eq!(rs.effective_lower_threshold(), None);
    }

    #[test]
    fn overrides() {
        let rs = spec(json!({
            "address": "2001:db8::11", "port": 8080, "weight": 3, "drain": true,
            "upperThreshold": 100, "forwarding": {"method": "NAT"},
        }));
        assert_eq!(rs.effective_port(Some(80)), Some(8080));
        assert_eq!(rs.effective_weight(), 0);
        assert_eq!(
            rs.effective_forwarding(ForwardingMethod::DirectRouting),
            ForwardingMethod::Nat
        );
        assert_eq!(rs.effective_lower_threshold(), Some(75));
        assert!(rs.address_addr().is_ok_and(|a| a.is_ipv6()));
    }

    #[test]
    fn bad_address_is_a_typed_error() {
        let rs = spec(json!({"address": "web-1"}));
        assert_eq!(
            rs.address_addr(),
            Err(AddressError {
                value: "web-1".into()
            })
        );
    }

    #[test]
    fn status_omits_unset_fields() {
        let status = RealServerStatus {
            directors: vec![RealServerDirectorStatus {
                virtual_service: "web".into(),
                node_name: "dir-a".into(),
                healthy: false,
                since: None,
                last_probe_time: None,
                latency_milliseconds: None,
                consecutive_failures: Some(3),
                last_error: Some("connection refused".into()),
                active_connections: None,
                inactive_connections: None,
            }],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json!({"directors": [{"virtualService": "web", "nodeName": "dir-a", "healthy": false,
                "consecutiveFailures": 3, "lastError": "connection refused"}]})
        );
    }
}
