//! `VirtualService`: one IPVS virtual service (VIP:port/protocol or firewall mark), how it is
//! scheduled and forwarded, how its real servers are checked, and which nodes direct it with VRRP.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    AddressError, DurationError, ForwardingMethod, GoDuration, IpAddress, SecretKeyRef,
};

/// Label that selects director nodes when `directors.nodeSelector` is not given.
pub const DEFAULT_DIRECTOR_LABEL: &str = "lvs.kube-lvs.io/director";

/// Persistence timeout ipvsadm uses for `-p` without a value.
pub const DEFAULT_PERSISTENCE_TIMEOUT_SECONDS: u32 = 300;

/// IPVS connection-sync defaults of the kernel (and keepalived's lvs_sync_daemon).
pub const DEFAULT_SYNC_PORT: u16 = 8848;
/// Multicast group the kernel's IPVS sync daemon uses for IPv4 unless told otherwise.
pub const DEFAULT_SYNC_GROUP_V4: &str = "224.0.0.81";
/// Multicast group the kernel's IPVS sync daemon uses for IPv6 unless told otherwise.
pub const DEFAULT_SYNC_GROUP_V6: &str = "ff02::8";

/// Desired state of one LVS virtual service.
// kube's printcolumn(...) entries legitimately repeat type_ = "..."; clippy reads them as
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lvs.kube-lvs.io",
    version = "v1alpha1",
    kind = "VirtualService",
    namespaced,
    status = "VirtualServiceStatus",
    shortname = "lvsvs",
    category = "lvs",
    derive = "PartialEq",
    doc = "A Linux Virtual Server virtual service: a VIP (with port and protocol, or a firewall mark) balanced by IPVS over the RealServers its selector picks, directed by a set of nodes that elect a VRRP master. Replaces a keepalived virtual_server block plus its vrrp_instance, an ipvsadm -A/-a script, or an ldirectord virtual= section.",
    printcolumn(
        name = "VIP",
        type_ = "string",
        json_path = ".spec.vip",
        description = "Virtual IP address"
    ),
    printcolumn(
        name = "PORT",
        type_ = "integer",
        json_path = ".spec.port",
        description = "Virtual port (empty for firewall-mark services)"
    ),
    printcolumn(
        name = "PROTO",
        type_ = "string",
        json_path = ".spec.protocol",
        description = "Protocol (empty means TCP)"
    ),
    printcolumn(
        name = "FWMARK",
        type_ = "integer",
        json_path = ".spec.firewallMark",
        description = "Firewall mark",
        priority = 1
    ),
    printcolumn(
        name = "SCHED",
        type_ = "string",
        json_path = ".spec.scheduler",
        description = "IPVS scheduler"
    ),
    printcolumn(
        name = "MODE",
        type_ = "string",
        json_path = ".spec.forwarding.method",
        description = "Forwarding method"
    ),
    printcolumn(
        name = "MASTER",
        type_ = "string",
        json_path = ".status.master",
        description = "Node holding the VIP as VRRP master"
    ),
    printcolumn(
        name = "HEALTHY",
        type_ = "string",
        json_path = ".status.healthy",
        description = "Healthy / total real servers"
    ),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Ready condition"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.port) || has(self.firewallMark)")
    .message("port is required unless firewallMark is set")
    .field_path(".port")
    .reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(self.firewallMark) || (!has(self.port) && !has(self.protocol))")
    .message("firewallMark replaces port and protocol: remove port and protocol, or remove firewallMark")
    .field_path(".firewallMark")
    .reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(self.firewallMark) || self.healthCheck.type == 'None' || has(self.healthCheck.port)")
    .message("a firewallMark service has no port of its own: set healthCheck.port (or healthCheck.type None)")
    .field_path(".healthCheck.port")
    .reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(self.firewallMarkMatch) || has(self.firewallMark)")
    .message("firewallMarkMatch needs firewallMark")
    .field_path(".firewallMarkMatch")
    .reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(self.schedulerFlags) || self.schedulerFlags.all(f, f.startsWith(self.scheduler + '-'))")
    .message("schedulerFlags sh-port/sh-fallback need scheduler sh, and mh-port/mh-fallback need scheduler mh")
    .field_path(".schedulerFlags")
    .reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!self.onePacket || (has(self.protocol) && self.protocol == 'UDP')")
    .message("onePacket (ipvsadm --ops) is only valid for protocol UDP")
    .field_path(".onePacket")
    .reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(self.persistence) || !has(self.persistence.prefixLength) || !isIP(self.vip) || ip(self.vip).family() == 6 || self.persistence.prefixLength <= 32")
    .message("prefixLength must be at most 32 for an IPv4 vip")
    .field_path(".persistence.prefixLength"))]
#[x_kube(validation = Rule::new("!has(self.sorryServer) || !isIP(self.vip) || !isIP(self.sorryServer.address) || ip(self.sorryServer.address).family() == ip(self.vip).family()")
    .message("sorryServer.address must be of the same address family as vip")
    .field_path(".sorryServer.address"))]
#[x_kube(validation = Rule::new("self.directors.vrrp.version == 3 || !isIP(self.vip) || ip(self.vip).family() == 4")
    .message("VRRP version 2 carries IPv4 only; use version 3 for an IPv6 vip")
    .field_path(".directors.vrrp.version"))]
#[x_kube(validation = Rule::new("!has(self.directors.vrrp.unicastPeers) || !isIP(self.vip) || self.directors.vrrp.unicastPeers.all(p, !isIP(p) || ip(p).family() == ip(self.vip).family())")
    .message("unicastPeers must be of the same address family as vip")
    .field_path(".directors.vrrp.unicastPeers"))]
pub struct VirtualServiceSpec {
    /// Virtual IP address clients connect to, IPv4 or IPv6 (keepalived: virtual_server <IP>
    /// and virtual_ipaddress; ipvsadm: -t/-u/--sctp-service <IP>; ldirectord: virtual=).
    pub vip: IpAddress,

    /// Virtual port, 1-65535. Required unless firewallMark is set (keepalived: virtual_server
    /// <IP> <PORT>; ipvsadm: -t <IP>:<PORT>).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,

    /// Transport protocol of a port service: TCP, UDP or SCTP; absent means TCP. Not allowed
    /// together with firewallMark (keepalived: protocol; ipvsadm: -t / -u / --sctp-service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,

    /// Firewall mark, 1-4294967295, that selects the packets of this service instead of
    /// port and protocol; mark them with nftables/iptables (keepalived: virtual_server fwmark
    /// <N>; ipvsadm: -f <N>; ldirectord: virtual=<N> with fwmark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub firewall_mark: Option<u32>,

    /// Packets kube-lvs marks with firewallMark itself, with nftables on the directors:
    /// traffic to vip with one of these protocol/port sets. Only with firewallMark; absent
    /// means your own rules mark the packets (the classic iptables -t mangle ... -j MARK).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub firewall_mark_match: Vec<MarkMatch>,

    /// IPVS scheduling algorithm, default wlc as in ipvsadm (keepalived: lb_algo; ipvsadm: -s;
    /// ldirectord: scheduler).
    #[serde(default)]
    pub scheduler: Scheduler,

    /// Scheduler flags: sh-port and sh-fallback only with scheduler sh, mh-port and
    /// mh-fallback only with mh (ipvsadm: -b; keepalived: sh-port, sh-fallback, mh-port,
    /// mh-fallback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2), extend("x-kubernetes-list-type" = "set"))]
    pub scheduler_flags: Vec<SchedulerFlag>,

    /// One-packet scheduling: schedule every UDP datagram on its own, without connection
    /// entries. UDP only (ipvsadm: --ops; keepalived: ops).
    #[serde(default)]
    pub one_packet: bool,

    /// How packets reach the real servers; default DirectRouting (keepalived: lb_kind;
    /// ipvsadm: -g/-m/-i).
    #[serde(default)]
    pub forwarding: Forwarding,

    /// Client affinity: connections from one client (network) go to the same real server
    /// while the persistence entry lives. Absent means no persistence (keepalived:
    /// persistence_timeout / persistence_granularity; ipvsadm: -p / -M).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,

    /// Selects the RealServers, in this namespace, that back this service. An empty selector
    /// ({}) selects every RealServer in the namespace (keepalived: the real_server blocks;
    /// ldirectord: real= lines).
    pub real_server_selector: LabelSelector,

    /// How real servers are health-checked; default a TCP connect every 5s (keepalived:
    /// TCP_CHECK/HTTP_GET/SSL_GET; ldirectord: checktype/service).
    #[serde(default)]
    pub health_check: HealthCheck,

    /// Minimum healthy weight below which the service counts as down and the sorry server
    /// takes over (keepalived: quorum / hysteresis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<Quorum>,

    /// Server that receives the traffic while no real server is healthy or quorum is lost
    /// (keepalived: sorry_server; ldirectord: fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorry_server: Option<SorryServer>,

    /// Which nodes direct this service and how they elect the VIP owner with VRRP
    /// (keepalived: vrrp_instance).
    #[serde(default)]
    pub directors: Directors,

    /// IPVS connection synchronisation from the master to the backups so that established
    /// connections survive a failover (keepalived: lvs_sync_daemon; ipvsadm: --start-daemon).
    #[serde(default)]
    pub connection_sync: ConnectionSync,
}

/// Traffic to the vip that gets the service's firewall mark.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarkMatch {
    /// Transport protocol to match (iptables -p).
    pub protocol: Protocol,

    /// Destination ports to match, each 1-65535; empty matches every port of the protocol
    /// (iptables --dport / -m multiport --dports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(range(min = 1, max = 65535)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub ports: Vec<u16>,
}

/// Transport protocol of a port service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP (ipvsadm -t).
    #[default]
    Tcp,
    /// UDP (ipvsadm -u).
    Udp,
    /// SCTP (ipvsadm --sctp-service).
    Sctp,
}

impl Protocol {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

/// IPVS scheduler (the kernel module ip_vs_<name>).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connections.
    Lc,
    /// Weighted least connections (ipvsadm's default).
    #[default]
    Wlc,
    /// Locality-based least connections.
    Lblc,
    /// Locality-based least connections with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
    /// Maglev hashing.
    Mh,
}

impl Scheduler {
    /// The kernel's name of the scheduler, as ipvsadm -s takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Dh => "dh",
            Self::Sh => "sh",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Fo => "fo",
            Self::Ovf => "ovf",
            Self::Mh => "mh",
        }
    }
}

/// Flag of the sh or mh scheduler (ipvsadm -b).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerFlag {
    /// sh: include the source port in the hash.
    ShPort,
    /// sh: pick another server when the hashed one is unavailable.
    ShFallback,
    /// mh: include the source port in the hash.
    MhPort,
    /// mh: pick another server when the hashed one is unavailable.
    MhFallback,
}

/// Forwarding method and, for Tunnel, the encapsulation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.tunnel) || self.method == 'Tunnel'")
    .message("tunnel options are only allowed with method Tunnel")
    .field_path(".tunnel")
    .reason(Reason::FieldValueForbidden))]
pub struct Forwarding {
    /// NAT, DirectRouting (default) or Tunnel (keepalived: lb_kind NAT|DR|TUN; ipvsadm:
    /// -m/-g/-i; ldirectord: masq/gate/ipip). A RealServer may override it.
    #[serde(default)]
    pub method: ForwardingMethod,

    /// Encapsulation for method Tunnel; absent means plain IPIP (keepalived: tun_type,
    /// tun_port, tun_flags; ipvsadm: --tun-type, --tun-port, --tun-*csum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
}

/// Tunnel encapsulation options.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'GUE' ? has(self.port) : !has(self.port)")
    .message("port is required for type GUE and not allowed for IPIP or GRE")
    .field_path(".port"))]
#[x_kube(validation = Rule::new("self.checksum == 'None' || self.type != 'IPIP'")
    .message("checksum options apply to GUE and GRE only")
    .field_path(".checksum")
    .reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("self.checksum != 'RemoteChecksum' || self.type == 'GUE'")
    .message("RemoteChecksum is only available with type GUE")
    .field_path(".checksum")
    .reason(Reason::FieldValueForbidden))]
pub struct Tunnel {
    /// Encapsulation: IPIP (default), GUE or GRE (keepalived: tun_type; ipvsadm: --tun-type).
    #[serde(default, rename = "type")]
    pub tunnel_type: TunnelType,

    /// UDP destination port of GUE encapsulation, 1-65535; required for GUE only
    /// (keepalived: tun_port; ipvsadm: --tun-port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,

    /// Outer checksum: None (default), Checksum, or RemoteChecksum (GUE only); IPIP has none
    /// (keepalived: tun_flags nocsum|csum|remcsum; ipvsadm: --tun-nocsum/--tun-csum/--tun-remcsum).
    #[serde(default)]
    pub checksum: TunnelChecksum,
}

/// Tunnel encapsulation type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum TunnelType {
    /// IP in IP.
    #[default]
    Ipip,
    /// Generic UDP Encapsulation.
    Gue,
    /// Generic Routing Encapsulation.
    Gre,
}

/// Outer checksum of a GUE or GRE tunnel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum TunnelChecksum {
    /// No checksum.
    #[default]
    None,
    /// Checksum on the outer header.
    Checksum,
    /// Remote checksum offload (GUE).
    RemoteChecksum,
}

/// Client persistence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// How long, in seconds, a client stays with its real server after its last connection;
    /// default 300 as in ipvsadm (keepalived: persistence_timeout; ipvsadm: -p; ldirectord:
    /// persistent).
    #[serde(default = "default_persistence_timeout")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: u32,

    /// Clients whose addresses share this many leading bits count as one client; absent means
    /// the whole address (32 for IPv4, 128 for IPv6). A netmask 255.255.255.0 is 24
    /// (keepalived: persistence_granularity; ipvsadm: -M; ldirectord: netmask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 128))]
    pub prefix_length: Option<u8>,
}

fn default_persistence_timeout() -> u32 {
    DEFAULT_PERSISTENCE_TIMEOUT_SECONDS
}

/// Health checking of the real servers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.timeout) < duration(self.interval)")
    .message("timeout must be shorter than interval")
    .field_path(".timeout"))]
#[x_kube(validation = Rule::new("!has(self.http) || self.type == 'HTTP' || self.type == 'HTTPS'")
    .message("http options are only allowed with type HTTP or HTTPS")
    .field_path(".http")
    .reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("has(self.expect) == (self.type == 'TCPExpect' || self.type == 'UDPExpect')")
    .message("expect is required with type TCPExpect or UDPExpect and not allowed otherwise")
    .field_path(".expect"))]
#[x_kube(validation = Rule::new("has(self.dns) == (self.type == 'DNS')")
    .message("dns is required with type DNS and not allowed otherwise")
    .field_path(".dns"))]
pub struct HealthCheck {
    /// Kind of check: TCP (connect, default), HTTP, HTTPS, TCPExpect, UDPExpect, DNS, or
    /// None (always healthy) (keepalived: TCP_CHECK/HTTP_GET/SSL_GET; ldirectord: checktype,
    /// service).
    #[serde(default, rename = "type")]
    pub check_type: HealthCheckType,

    /// Port to probe, 1-65535; absent means the real server's port (keepalived: connect_port;
    /// ldirectord: checkport).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,

    /// Time between probes, default 5s (keepalived: delay_loop; ldirectord: checkinterval).
    #[serde(default = "default_interval")]
    pub interval: GoDuration,

    /// How long one probe may take; must be shorter than interval; default 3s (keepalived:
    /// connect_timeout; ldirectord: checktimeout / negotiatetimeout).
    #[serde(default = "default_timeout")]
    pub timeout: GoDuration,

    /// Consecutive successes before an unhealthy server is healthy again, at least 1,
    /// default 1 (ldirectord: no equivalent; keepalived: always 1).
    #[serde(default = "default_rise")]
    #[schemars(range(min = 1, max = 100))]
    pub rise: u32,

    /// Consecutive failures before a healthy server is unhealthy, at least 1, default 3
    /// (keepalived: retry, nb_get_retry; ldirectord: failurecount).
    #[serde(default = "default_fall")]
    #[schemars(range(min = 1, max = 100))]
    pub fall: u32,

    /// Wait after a failed probe before the next one while the server is still counted
    /// healthy; absent means interval (keepalived: delay_before_retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<GoDuration>,

    /// State a real server starts in before its first probes finish: Up (default, as
    /// keepalived without alpha) or Down (keepalived: alpha; ldirectord's behaviour).
    #[serde(default)]
    pub initial_state: InitialState,

    /// Upper bound of a random delay before a server's first probe, spreading probes out;
    /// absent means up to one interval, "0s" starts all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_jitter: Option<GoDuration>,

    /// Source address probes are sent from; absent lets the kernel choose (keepalived:
    /// bindto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddress>,

    /// What happens to a failed real server: Remove (default, keepalived's default) takes it
    /// out of IPVS; Quiesce sets its weight to 0 so existing connections finish (keepalived:
    /// inhibit_on_failure; ldirectord: quiescent).
    #[serde(default)]
    pub on_failure: OnFailure,

    /// HTTP/HTTPS options; only with type HTTP or HTTPS, absent means GET / expecting 200
    /// (keepalived: HTTP_GET/SSL_GET url; ldirectord: request/receive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,

    /// Payload exchange for TCPExpect/UDPExpect (ldirectord: request/receive with
    /// service=simpletcp or simpleudp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<ExpectCheck>,

    /// DNS query for type DNS (ldirectord: service=dns with request/receive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsCheck>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            check_type: HealthCheckType::default(),
            port: None,
            interval: default_interval(),
            timeout: default_timeout(),
            rise: default_rise(),
            fall: default_fall(),
            retry_delay: None,
            initial_state: InitialState::default(),
            start_jitter: None,
            source_address: None,
            on_failure: OnFailure::default(),
            http: None,
            expect: None,
            dns: None,
        }
    }
}

fn default_interval() -> GoDuration {
    GoDuration::from_std(Duration::from_secs(5))
}

fn default_timeout() -> GoDuration {
    GoDuration::from_std(Duration::from_secs(3))
}

fn default_rise() -> u32 {
    1
}

fn default_fall() -> u32 {
    3
}

/// Kind of health check.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum HealthCheckType {
    /// TCP connect.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// HTTP GET.
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP GET over TLS.
    #[serde(rename = "HTTPS")]
    Https,
    /// TCP connect, send a payload, match the answer.
    #[serde(rename = "TCPExpect")]
    TcpExpect,
    /// UDP datagram, match the answer.
    #[serde(rename = "UDPExpect")]
    UdpExpect,
    /// DNS query.
    #[serde(rename = "DNS")]
    Dns,
    /// No check: always healthy.
    None,
}

/// State of a real server before its first probe results.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum InitialState {
    /// In service until probes fail.
    #[default]
    Up,
    /// Out of service until probes succeed (keepalived alpha).
    Down,
}

/// What a failed real server becomes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum OnFailure {
    /// Removed from the IPVS service.
    #[default]
    Remove,
    /// Kept with weight 0: no new connections, existing ones continue.
    Quiesce,
}

/// HTTP/HTTPS check options.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// Request path, starting with "/"; default "/" (keepalived: url path; ldirectord:
    /// request).
    #[serde(default = "default_http_path")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must start with \"/\""))]
    pub path: String,

    /// Host header, and TLS server name for HTTPS; absent means the real server's address
    /// (keepalived: virtualhost; ldirectord: virtualhost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,

    /// Status codes that count as healthy, each 100-599; default [200] (keepalived:
    /// status_code).
    #[serde(default = "default_expected_status")]
    #[schemars(
        length(min = 1, max = 32),
        inner(range(min = 100, max = 599)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub expected_status: Vec<u16>,

    /// Regular expression (RE2 syntax) the response body must match (ldirectord: receive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub body_match: Option<String>,

    /// Hex MD5 digest the response body must have (keepalived: digest, genhash output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{32}$"))]
    pub body_digest: Option<String>,

    /// Verify the real server's TLS certificate for HTTPS; default false, because keepalived's
    /// SSL_GET and ldirectord do not verify and real servers often carry certificates for the
    /// VIP's name only.
    #[serde(default)]
    pub tls_verify: bool,
}

impl Default for HttpCheck {
    fn default() -> Self {
        Self {
            path: default_http_path(),
            host: None,
            expected_status: default_expected_status(),
            body_match: None,
            body_digest: None,
            tls_verify: false,
        }
    }
}

fn default_http_path() -> String {
    "/".to_owned()
}

fn default_expected_status() -> Vec<u16> {
    vec![200]
}

/// Send/expect exchange.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpectCheck {
    /// Text sent after connecting (TCP) or as the datagram (UDP); absent sends nothing over
    /// TCP (ldirectord: request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub send: Option<String>,

    /// Regular expression (RE2 syntax) the first bytes of the answer must match
    /// (ldirectord: receive).
    #[schemars(length(min = 1, max = 4096))]
    pub expect: String,
}

/// DNS check options.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsCheck {
    /// Name to resolve (ldirectord: request).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Record type to ask for, A (default) or AAAA; the check passes when the answer holds at
    /// least one such record.
    #[serde(default)]
    pub record_type: DnsRecordType,
}

/// DNS record type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum DnsRecordType {
    /// IPv4 address record.
    #[default]
    A,
    /// IPv6 address record.
    #[serde(rename = "AAAA")]
    Aaaa,
}

/// Quorum of healthy real servers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.hysteresis <= self.minHealthyWeight")
    .message("hysteresis must not exceed minHealthyWeight")
    .field_path(".hysteresis"))]
pub struct Quorum {
    /// Sum of the weights of healthy real servers needed for the service to be up; default 1
    /// (keepalived: quorum).
    #[serde(default = "default_quorum")]
    #[schemars(range(min = 1))]
    pub min_healthy_weight: u32,

    /// Quorum is lost below minHealthyWeight - hysteresis and regained at minHealthyWeight +
    /// hysteresis; default 0 (keepalived: hysteresis).
    #[serde(default)]
    pub hysteresis: u32,
}

fn default_quorum() -> u32 {
    1
}

/// Fallback server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SorryServer {
    /// Address, of the same family as the vip (keepalived: sorry_server <IP>; ldirectord:
    /// fallback).
    pub address: IpAddress,

    /// Port, 1-65535; absent means the service port (keepalived: sorry_server <IP> <PORT>).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// Director nodes and their VRRP election.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Directors {
    /// Labels a node must carry to direct this service; default
    /// lvs.kube-lvs.io/director=true. Each matching node runs the VRRP instance and programs
    /// IPVS (keepalived: the hosts you install keepalived.conf on).
    #[serde(default = "default_node_selector")]
    pub node_selector: BTreeMap<String, String>,

    /// Interface the VIP and VRRP live on; absent means the interface holding the route to
    /// the vip's network, chosen per node (keepalived: interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    pub interface: Option<String>,

    /// VRRP parameters (keepalived: vrrp_instance).
    #[serde(default)]
    pub vrrp: Vrrp,
}

impl Default for Directors {
    fn default() -> Self {
        Self {
            node_selector: default_node_selector(),
            interface: None,
            vrrp: Vrrp::default(),
        }
    }
}

fn default_node_selector() -> BTreeMap<String, String> {
    BTreeMap::from([(DEFAULT_DIRECTOR_LABEL.to_owned(), "true".to_owned())])
}

/// VRRP instance parameters.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.version != 2 || (duration(self.advertisementInterval) >= duration('1s') && duration(self.advertisementInterval) <= duration('255s') && duration(self.advertisementInterval).getMilliseconds() % 1000 == 0)")
    .message("VRRP version 2 needs a whole number of seconds from 1s to 255s")
    .field_path(".advertisementInterval"))]
#[x_kube(validation = Rule::new("self.version != 3 || (duration(self.advertisementInterval) >= duration('10ms') && duration(self.advertisementInterval) <= duration('40950ms') && duration(self.advertisementInterval).getMilliseconds() % 10 == 0)")
    .message("VRRP version 3 needs a multiple of 10ms from 10ms to 40.95s")
    .field_path(".advertisementInterval"))]
#[x_kube(validation = Rule::new("self.version == 2 || !has(self.authSecretRef)")
    .message("authSecretRef (PASS authentication) exists only in VRRP version 2")
    .field_path(".authSecretRef")
    .reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(self.preemptDelay) || duration(self.preemptDelay) <= duration('1000s')")
    .message("preemptDelay must be at most 1000s")
    .field_path(".preemptDelay"))]
pub struct Vrrp {
    /// VRRP version: 2 (RFC 3768, IPv4, whole seconds) or 3 (RFC 5798, default)
    /// (keepalived: version / vrrp_version).
    #[serde(default = "default_vrrp_version")]
    #[schemars(range(min = 2, max = 3))]
    pub version: u8,

    /// Virtual router id, 1-255, shared by all directors of this service; absent lets the
    /// operator assign a free one and record it in status.assignment (keepalived:
    /// virtual_router_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub router_id: Option<u8>,

    /// Interval between the master's advertisements, default 1s; version 2 takes whole
    /// seconds 1s-255s, version 3 multiples of 10ms from 10ms to 40.95s (keepalived:
    /// advert_int).
    #[serde(default = "default_advert_interval")]
    pub advertisement_interval: GoDuration,

    /// Whether a higher-priority backup takes over from a lower-priority master; default true
    /// (keepalived: nopreempt when false).
    #[serde(default = "default_true")]
    pub preempt: bool,

    /// Delay, at most 1000s, before a higher-priority node that just started preempts
    /// (keepalived: preempt_delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt_delay: Option<GoDuration>,

    /// Explicit per-node priorities, each 1-254 (255 is reserved for the address owner, 0 for
    /// resigning); nodes not listed get automatic priorities below these (keepalived:
    /// priority).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["nodeName"])
    )]
    pub priorities: Vec<NodePriority>,

    /// Peers to send advertisements to by unicast, of the vip's family; empty means multicast
    /// to 224.0.0.18 / ff02::12 (keepalived: unicast_peer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "set"))]
    pub unicast_peers: Vec<IpAddress>,

    /// Secret key holding the VRRP version 2 PASS password (first 8 bytes are used); not
    /// allowed with version 3, which has no authentication (keepalived: authentication {
    /// auth_type PASS auth_pass }).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretKeyRef>,

    /// Gratuitous ARP / unsolicited neighbour advertisements sent on becoming master.
    #[serde(default)]
    pub garp: Garp,
}

impl Default for Vrrp {
    fn default() -> Self {
        Self {
            version: default_vrrp_version(),
            router_id: None,
            advertisement_interval: default_advert_interval(),
            preempt: true,
            preempt_delay: None,
            priorities: Vec::new(),
            unicast_peers: Vec::new(),
            auth_secret_ref: None,
            garp: Garp::default(),
        }
    }
}

fn default_vrrp_version() -> u8 {
    3
}

fn default_advert_interval() -> GoDuration {
    GoDuration::from_std(Duration::from_secs(1))
}

fn default_true() -> bool {
    true
}

/// Fixed VRRP priority of one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePriority {
    /// Name of the Node.
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,

    /// Priority 1-254; the highest live priority becomes master (keepalived: priority).
    #[schemars(range(min = 1, max = 254))]
    pub priority: u8,
}

/// Gratuitous ARP / unsolicited NA burst.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Garp {
    /// Messages sent per burst, 1-100; default 5 (keepalived: garp_master_repeat).
    #[serde(default = "default_garp_count")]
    #[schemars(range(min = 1, max = 100))]
    pub count: u32,

    /// Pause between the messages of one burst; default 0s (keepalived: garp_interval /
    /// vrrp_garp_interval).
    #[serde(default = "default_garp_interval")]
    pub repeat_interval: GoDuration,
}

impl Default for Garp {
    fn default() -> Self {
        Self {
            count: default_garp_count(),
            repeat_interval: default_garp_interval(),
        }
    }
}

fn default_garp_count() -> u32 {
    5
}

fn default_garp_interval() -> GoDuration {
    GoDuration::from_std(Duration::ZERO)
}

/// IPVS connection synchronisation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSync {
    /// Run the IPVS sync daemons: master on the VRRP master, backup on the others; default
    /// false. The kernel has one sync daemon pair per node, so services sharing directors
    /// must agree on these settings (keepalived: lvs_sync_daemon; ipvsadm: --start-daemon).
    #[serde(default)]
    pub enabled: bool,

    /// Sync id, 0-255, that master and backups must share; default 0 (keepalived: id;
    /// ipvsadm: --syncid).
    #[serde(default)]
    pub sync_id: u8,

    /// Interface the sync messages use; absent means the directors' VRRP interface
    /// (keepalived: lvs_sync_daemon <INTERFACE>; ipvsadm: --mcast-interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    pub interface: Option<String>,

    /// Multicast group; absent means the kernel default 224.0.0.81 (ff02::8 for IPv6)
    /// (keepalived: group; ipvsadm: --mcast-group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_group: Option<IpAddress>,

    /// UDP port, 1-65535; default 8848 (keepalived: port; ipvsadm: --mcast-port).
    #[serde(default = "default_sync_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,

    /// Multicast TTL, 1-255; default 1 (keepalived: ttl; ipvsadm: --mcast-ttl).
    #[serde(default = "default_sync_ttl")]
    #[schemars(range(min = 1, max = 255))]
    pub ttl: u8,

    /// Largest sync message payload in bytes, 1-65507; absent lets the kernel derive it from
    /// the MTU (keepalived: maxlen; ipvsadm: --sync-maxlen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65507))]
    pub max_length: Option<u16>,
}

impl Default for ConnectionSync {
    fn default() -> Self {
        Self {
            enabled: false,
            sync_id: 0,
            interface: None,
            multicast_group: None,
            port: default_sync_port(),
            ttl: default_sync_ttl(),
            max_length: None,
        }
    }
}

fn default_sync_port() -> u16 {
    DEFAULT_SYNC_PORT
}

fn default_sync_ttl() -> u8 {
    1
}

/// Observed state of a VirtualService, written by the operator (aggregates) and the node
/// agents (their own `directors` entry, by server-side apply).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceStatus {
    /// metadata.generation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Degraded, Conflict and other conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// VRRP router id and per-node priorities the operator assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Assignment>,

    /// One entry per director node, written by that node's agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["nodeName"]))]
    pub directors: Vec<DirectorStatus>,

    /// Node that is VRRP master (holds the VIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,

    /// Healthy / total real servers as "x/y", for the HEALTHY column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<String>,

    /// Number of selected real servers the master counts healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_real_servers: Option<u32>,

    /// Number of selected real servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_real_servers: Option<u32>,
}

/// The operator's VRRP assignment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// Virtual router id in use (spec.directors.vrrp.routerId or an assigned one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<u8>,

    /// Priority of every director node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["nodeName"]))]
    pub priorities: Vec<NodePriority>,
}

/// One director's view.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectorStatus {
    /// Node name.
    pub node_name: String,

    /// VRRP state: Init, Backup, Master or Fault.
    pub state: VrrpState,

    /// Effective VRRP priority of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,

    /// Whether the node's IPVS service and addresses match the desired state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programmed: Option<bool>,

    /// When the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// Human-readable detail, e.g. why the node is in Fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// VRRP state of one director.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum VrrpState {
    /// Starting up.
    #[default]
    Init,
    /// Listening to a master.
    Backup,
    /// Holding the VIP.
    Master,
    /// Unable to take part (interface down, programming failed).
    Fault,
}

/// Why a spec field could not be interpreted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// An address field does not parse.
    #[error("{field}: {source}")]
    Address {
        /// Field path.
        field: &'static str,
        /// Parser error.
        source: AddressError,
    },
    /// A duration field does not parse.
    #[error("{field}: {source}")]
    Duration {
        /// Field path.
        field: &'static str,
        /// Parser error.
        source: DurationError,
    },
    /// Neither port nor firewallMark is set.
    #[error("spec.port: required unless spec.firewallMark is set")]
    MissingPort,
    /// A VRRP version other than 2 or 3.
    #[error("spec.directors.vrrp.version: {0} is not 2 or 3")]
    VrrpVersion(u8),
}

fn duration_of(field: &'static str, d: &GoDuration) -> Result<Duration, SpecError> {
    d.to_std()
        .map_err(|source| SpecError::Duration { field, source })
}

/// What identifies the IPVS service in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKey {
    /// VIP, protocol and port (ipvsadm -t/-u/--sctp-service).
    Port {
        /// Virtual IP.
        vip: IpAddr,
        /// Protocol.
        protocol: Protocol,
        /// Port.
        port: u16,
    },
    /// Address family and firewall mark (ipvsadm -f); the VIP is only where traffic arrives.
    FirewallMark {
        /// Whether the service is IPv6.
        ipv6: bool,
        /// Mark.
        mark: u32,
    },
}

/// VRRP protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VrrpVersion {
    /// RFC 3768.
    V2,
    /// RFC 5798.
    V3,
}

impl VirtualServiceSpec {
    /// The VIP as an address.
    pub fn vip_addr(&self) -> Result<IpAddr, SpecError> {
        self.vip.parse().map_err(|source| SpecError::Address {
            field: "spec.vip",
            source,
        })
    }

    /// The protocol, TCP when absent.
    pub fn effective_protocol(&self) -> Protocol {
        self.protocol.unwrap_or_default()
    }

    /// The key of the IPVS service this spec describes.
    pub fn service_key(&self) -> Result<ServiceKey, SpecError> {
        let vip = self.vip_addr()?;
        match (self.firewall_mark, self.port) {
            (Some(mark), _) => Ok(ServiceKey::FirewallMark {
                ipv6: vip.is_ipv6(),
                mark,
            }),
            (None, Some(port)) => Ok(ServiceKey::Port {
                vip,
                protocol: self.effective_protocol(),
                port,
            }),
            (None, None) => Err(SpecError::MissingPort),
        }
    }

    /// Persistence prefix length, defaulting to the full address of the VIP's family.
    pub fn persistence_prefix_length(&self) -> Result<Option<u8>, SpecError> {
        let Some(p) = &self.persistence else {
            return Ok(None);
        };
        let full = if self.vip_addr()?.is_ipv6() { 128 } else { 32 };
        Ok(Some(p.prefix_length.unwrap_or(full)))
    }
}

impl HealthCheck {
    /// Probe interval.
    pub fn interval(&self) -> Result<Duration, SpecError> {
        duration_of("spec.healthCheck.interval", &self.interval)
    }

    /// Probe timeout.
    pub fn timeout(&self) -> Result<Duration, SpecError> {
        duration_of("spec.healthCheck.timeout", &self.timeout)
    }

    /// Delay after a failed probe; the interval when not set.
    pub fn retry_delay(&self) -> Result<Duration, SpecError> {
        match &self.retry_delay {
            Some(d) => duration_of("spec.healthCheck.retryDelay", d),
            None => self.interval(),
        }
    }

    /// Upper bound of the start jitter; one interval when not set.
    pub fn start_jitter(&self) -> Result<Duration, SpecError> {
        match &self.start_jitter {
            Some(d) => duration_of("spec.healthCheck.startJitter", d),
            None => self.interval(),
        }
    }

    /// HTTP options, with their defaults when absent.
    pub fn http_or_default(&self) -> HttpCheck {
        self.http.clone().unwrap_or_default()
    }
}

impl Vrrp {
    /// The protocol version.
    pub fn vrrp_version(&self) -> Result<VrrpVersion, SpecError> {
        match self.version {
            2 => Ok(VrrpVersion::V2),
            3 => Ok(VrrpVersion::V3),
            other => Err(SpecError::VrrpVersion(other)),
        }
    }

    /// Advertisement interval.
    pub fn advertisement_interval(&self) -> Result<Duration, SpecError> {
        duration_of(
            "spec.directors.vrrp.advertisementInterval",
            &self.advertisement_interval,
        )
    }

    /// Advertisement interval in centiseconds as VRRPv3 carries it (v2 carries seconds).
    pub fn advertisement_centiseconds(&self) -> Result<u16, SpecError> {
        let d = self.advertisement_interval()?;
        Ok(u16::try_from(d.as_millis() / 10).unwrap_or(u16::MAX))
    }

    /// Preempt delay, zero when not set.
    pub fn preempt_delay(&self) -> Result<Duration, SpecError> {
        match &self.preempt_delay {
            Some(d) => duration_of("spec.directors.vrrp.preemptDelay", d),
            None => Ok(Duration::ZERO),
        }
    }

    /// Explicit priority for a node, if listed.
    pub fn priority_of(&self, node: &str) -> Option<u8> {
        self.priorities
            .iter()
            .find(|p| p.node_name == node)
            .map(|p| p.priority)
    }

    /// Unicast peers as addresses.
    pub fn unicast_peer_addrs(&self) -> Result<Vec<IpAddr>, SpecError> {
        self.unicast_peers
            .iter()
            .map(|p| {
                p.parse().map_err(|source| SpecError::Address {
                    field: "spec.directors.vrrp.unicastPeers",
                    source,
                })
            })
            .collect()
    }
}

impl Garp {
    /// Pause between messages of a burst.
    pub fn repeat_interval(&self) -> Result<Duration, SpecError> {
        duration_of(
            "spec.directors.vrrp.garp.repeatInterval",
            &self.repeat_interval,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> VirtualServiceSpec {
        serde_json::from_value(json!({
            "vip": "192.0.2.100",
            "port": 80,
            "realServerSelector": {"matchLabels": {"app": "web"}},
        }))
        .unwrap()
    }

    #[test]
    fn minimal_spec_gets_the_documented_defaults() {
        let spec = minimal();
        assert_eq!(spec.scheduler, Scheduler::Wlc);
        assert_eq!(spec.forwarding.method, ForwardingMethod::DirectRouting);
        assert_eq!(spec.effective_protocol(), Protocol::Tcp);
        assert_eq!(spec.health_check.check_type, HealthCheckType::Tcp);
        assert_eq!(spec.health_check.interval(), Ok(Duration::from_secs(5)));
        assert_eq!(spec.health_check.timeout(), Ok(Duration::from_secs(3)));
        assert_eq!(spec.health_check.retry_delay(), Ok(Duration::from_secs(5)));
        assert_eq!((spec.health_check.rise, spec.health_check.fall), (1, 3));
        assert_eq!(spec.health_check.on_failure, OnFailure::Remove);
        assert_eq!(spec.health_check.initial_state, InitialState::Up);
        assert_eq!(spec.directors.vrrp.vrrp_version(), Ok(VrrpVersion::V3));
        assert_eq!(
            spec.directors.vrrp.advertisement_interval(),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(spec.directors.vrrp.advertisement_centiseconds(), Ok(100));
        assert!(spec.directors.vrrp.preempt);
        assert_eq!(spec.directors.vrrp.garp.count, 5);
        assert_eq!(
            spec.directors.node_selector.get(DEFAULT_DIRECTOR_LABEL),
            Some(&"true".to_owned())
        );
        assert!(!spec.connection_sync.enabled);
        assert_eq!(spec.connection_sync.port, DEFAULT_SYNC_PORT);
        assert_eq!(spec.persistence_prefix_length(), Ok(None));
    }

    #[test]
    fn defaults_in_rust_match_defaults_in_the_schema() {
        // Default impls and serde default fns must agree, or objects decoded by the agent
        // from the API server would differ from objects built in Rust.
        let spec = minimal();
        assert_eq!(spec.health_check, HealthCheck::default());
        assert_eq!(spec.directors, Directors::default());
        assert_eq!(spec.connection_sync, ConnectionSync::default());
        let http: HttpCheck = serde_json::from_value(json!({})).unwrap();
        assert_eq!(http, HttpCheck::default());
        assert_eq!(http.expected_status, vec![200]);
    }

    #[test]
    fn service_key_for_port_and_mark() {
        let spec = minimal();
        assert_eq!(
            spec.service_key(),
            Ok(ServiceKey::Port {
                vip: "192.0.2.100".parse().unwrap(),
                protocol: Protocol::Tcp,
                port: 80
            })
        );
        let mut fw = minimal();
        fw.port = None;
        fw.firewall_mark = Some(7);
        fw.vip = IpAddress::new("2001:db8::7").unwrap();
        assert_eq!(
            fw.service_key(),
            Ok(ServiceKey::FirewallMark {
                ipv6: true,
                mark: 7
            })
        );
        let mut none = minimal();
        none.port = None;
        assert_eq!(none.service_key(), Err(SpecError::MissingPort));
    }

    #[test]
    fn persistence_prefix_defaults_by_family() {
        let mut spec = minimal();
        spec.persistence = Some(Persistence {
            timeout_seconds: 50,
            prefix_length: None,
        });
        assert_eq!(spec.persistence_prefix_length(), Ok(Some(32)));
        spec.vip = IpAddress::new("2001:db8::1").unwrap();
        assert_eq!(spec.persistence_prefix_length(), Ok(Some(128)));
        spec.persistence = Some(Persistence {
            timeout_seconds: 50,
            prefix_length: Some(64),
        });
        assert_eq!(spec.persistence_prefix_length(), Ok(Some(64)));
    }

    #[test]
    fn bad_strings_from_the_api_become_typed_errors() {
        // Decoding accepts anything string-shaped; interpretation reports the field.
        let mut spec = minimal();
        spec.vip = serde_json::from_value(json!("not-an-ip")).unwrap();
        assert!(matches!(
            spec.vip_addr(),
            Err(SpecError::Address {
                field: "spec.vip",
                ..
            })
        ));
        spec.health_check.interval = serde_json::from_value(json!("5 parsecs")).unwrap();
        assert!(matches!(
            spec.health_check.interval(),
            Err(SpecError::Duration {
                field: "spec.healthCheck.interval",
                ..
            })
        ));
        spec.directors.vrrp.version = 4;
        assert_eq!(
            spec.directors.vrrp.vrrp_version(),
            Err(SpecError::VrrpVersion(4))
        );
    }

    #[test]
    fn vrrp_helpers() {
        let vrrp: Vrrp = serde_json::from_value(json!({
            "version": 3,
            "advertisementInterval": "250ms",
            "preemptDelay": "30s",
            "priorities": [{"nodeName": "dir-a", "priority": 100}, {"nodeName": "dir-b", "priority": 99}],
            "unicastPeers": ["192.0.2.2", "192.0.2.3"],
        }))
        .unwrap();
        assert_eq!(vrrp.advertisement_centiseconds(), Ok(25));
        assert_eq!(vrrp.preempt_delay(), Ok(Duration::from_secs(30)));
        assert_eq!(vrrp.priority_of("dir-b"), Some(99));
        assert_eq!(vrrp.priority_of("dir-c"), None);
        assert_eq!(
            vrrp.unicast_peer_addrs(),
            Ok(vec![
                "192.0.2.2".parse().unwrap(),
                "192.0.2.3".parse().unwrap()
            ])
        );
    }

    #[test]
    fn enums_use_api_spelling() {
        assert_eq!(json!(Scheduler::Lblcr), json!("lblcr"));
        assert_eq!(json!(SchedulerFlag::ShFallback), json!("sh-fallback"));
        assert_eq!(json!(Protocol::Sctp), json!("SCTP"));
        assert_eq!(json!(ForwardingMethod::Nat), json!("NAT"));
        assert_eq!(json!(TunnelType::Gue), json!("GUE"));
        assert_eq!(json!(HealthCheckType::TcpExpect), json!("TCPExpect"));
        assert_eq!(json!(DnsRecordType::Aaaa), json!("AAAA"));
        for s in [Scheduler::Rr, Scheduler::Mh, Scheduler::Ovf] {
            assert_eq!(json!(s), json!(s.as_str()));
        }
    }

    #[test]
    fn status_serialises_only_what_is_set() {
        // Agents apply partial status with server-side apply; absent fields must not be sent
        // as null or they would take ownership of them.
        let status = VirtualServiceStatus {
            directors: vec![DirectorStatus {
                node_name: "dir-a".into(),
                state: VrrpState::Master,
                priority: Some(100),
                programmed: Some(true),
                last_transition_time: None,
                message: None,
            }],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json!({"directors": [{"nodeName": "dir-a", "state": "Master", "priority": 100, "programmed": true}]})
        );
    }
}

impl VirtualService {
    /// Whether this VirtualService selects the RealServer: same namespace and a matching
    /// `realServerSelector` (matchLabels and matchExpressions).
    pub fn selects(&self, rs: &super::RealServer) -> bool {
        use kube::core::{Selector, SelectorExt};
        if self.metadata.namespace != rs.metadata.namespace {
            return false;
        }
        let Ok(selector) = Selector::try_from(self.spec.real_server_selector.clone()) else {
            return false;
        };
        selector.matches(&rs.metadata.labels.clone().unwrap_or_default())
    }
}

#[cfg(test)]
mod selects_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selector_needs_same_namespace_and_matching_labels() {
        let vs: VirtualService = serde_json::from_value(json!({
            "apiVersion": "lvs.kube-lvs.io/v1alpha1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"vip": "192.0.2.1", "port": 80, "realServerSelector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["canary"]}]}}
        }))
        .unwrap();
        let rs = |ns: &str, labels: serde_json::Value| -> super::super::RealServer {
            serde_json::from_value(json!({
                "apiVersion": "lvs.kube-lvs.io/v1alpha1", "kind": "RealServer",
                "metadata": {"name": "a", "namespace": ns, "labels": labels},
                "spec": {"address": "192.0.2.11"}
            }))
            .unwrap()
        };
        assert!(vs.selects(&rs("ns", json!({"app": "web"}))));
        assert!(!vs.selects(&rs("ns", json!({"app": "web", "tier": "canary"}))));
        assert!(!vs.selects(&rs("other", json!({"app": "web"}))));
        assert!(!vs.selects(&rs("ns", json!({"app": "db"}))));
    }
}
