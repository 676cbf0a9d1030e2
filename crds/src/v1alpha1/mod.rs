//! `lvs.kube-lvs.io/v1alpha1`: VirtualService and RealServer.

pub mod common;
pub mod real_server;
pub mod virtual_service;

pub use common::{
    AddressError, DurationError, ForwardingMethod, GoDuration, IpAddress, SecretKeyRef,
    parse_go_duration,
};
pub use real_server::{
    Health, RealServer, RealServerDirectorStatus, RealServerForwarding, RealServerSpec,
    RealServerStatus,
};
pub use virtual_service::{
    Assignment, ConnectionSync, DirectorStatus, Directors, DnsCheck, DnsRecordType, ExpectCheck,
    Forwarding, Garp, HealthCheck, HealthCheckType, HttpCheck, InitialState, MarkMatch,
    NodePriority, OnFailure, Persistence, Protocol, Quorum, Scheduler, SchedulerFlag, ServiceKey,
    SorryServer, SpecError, Tunnel, TunnelChecksum, TunnelType, VirtualService, VirtualServiceSpec,
    VirtualServiceStatus, Vrrp, VrrpState, VrrpVersion,
};

/// API group.
pub const GROUP: &str = "lvs.kube-lvs.io";
/// API version.
pub const VERSION: &str = "v1alpha1";

/// Condition types the operator sets.
pub mod condition {
    /// Programmed on the directors, a master holds the VIP, quorum is met.
    pub const READY: &str = "Ready";
    /// Serving, but with fewer healthy real servers or directors than desired.
    pub const DEGRADED: &str = "Degraded";
    /// Clashes with another object (same VIP:port/protocol or mark, same VRRP router id on a
    /// shared segment); nothing is applied for it.
    pub const CONFLICT: &str = "Conflict";
}
