//! Plain IPVS data types shared by the netlink client and the node-agent planner.
//!
//! Configurable fields (what a `plan()` compares and what the kernel accepts on add/edit) live
//! in [`Service`] and [`Destination`]; observed-only data (statistics, connection counts) lives in
//! [`ServiceInfo`] / [`DestinationInfo`] so desired-vs-observed comparisons are plain `==`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Address family of a virtual service (and of a destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
}

impl AddressFamily {
    /// `AF_INET` / `AF_INET6` as the kernel expects them in `IPVS_*_ATTR_AF`.
    pub const fn to_raw(self) -> u16 {
        match self {
            AddressFamily::Ipv4 => 2,
            AddressFamily::Ipv6 => 10,
        }
    }

    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            2 => Some(AddressFamily::Ipv4),
            10 => Some(AddressFamily::Ipv6),
            _ => None,
        }
    }

    pub const fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => AddressFamily::Ipv4,
            IpAddr::V6(_) => AddressFamily::Ipv6,
        }
    }

    /// Longest prefix for this family (32 or 128).
    pub const fn max_prefix(self) -> u8 {
        match self {
            AddressFamily::Ipv4 => 32,
            AddressFamily::Ipv6 => 128,
        }
    }
}

/// Transport protocol of an address-based virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// IANA protocol number (`IPPROTO_*`).
    pub const fn to_raw(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a virtual service: what the kernel looks a service up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// `-t/-u/--sctp-service addr:port`. `family` must match `addr`; use [`ServiceKey::addr`].
    Addr {
        family: AddressFamily,
        protocol: Protocol,
        addr: IpAddr,
        port: u16,
    },
    /// `-f mark` (with `-6` for an IPv6 firewall-mark service).
    Fwmark { family: AddressFamily, mark: u32 },
}

impl ServiceKey {
    /// Address-based key with the family derived from the address.
    pub const fn addr(protocol: Protocol, addr: IpAddr, port: u16) -> Self {
        ServiceKey::Addr {
            family: AddressFamily::of(&addr),
            protocol,
            addr,
            port,
        }
    }

    pub const fn fwmark(family: AddressFamily, mark: u32) -> Self {
        ServiceKey::Fwmark { family, mark }
    }

    pub const fn family(&self) -> AddressFamily {
        match self {
            ServiceKey::Addr { family, .. } | ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr {
                protocol,
                addr: IpAddr::V6(a),
                port,
                ..
            } => write!(f, "{protocol} [{a}]:{port}"),
            ServiceKey::Addr {
                protocol,
                addr,
                port,
                ..
            } => write!(f, "{protocol} {addr}:{port}"),
            ServiceKey::Fwmark {
                family: AddressFamily::Ipv4,
                mark,
            } => write!(f, "fwmark {mark}"),
            ServiceKey::Fwmark {
                family: AddressFamily::Ipv6,
                mark,
            } => write!(f, "fwmark6 {mark}"),
        }
    }
}

/// Every IPVS scheduler shipped with Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheduler {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnection,
    WeightedLeastConnection,
    LocalityBasedLeastConnection,
    LocalityBasedLeastConnectionReplication,
    DestinationHashing,
    SourceHashing,
    ShortestExpectedDelay,
    NeverQueue,
    WeightedFailover,
    WeightedOverflow,
    MaglevHashing,
}

impl Scheduler {
    pub const ALL: [Scheduler; 13] = [
        Scheduler::RoundRobin,
        Scheduler::WeightedRoundRobin,
        Scheduler::LeastConnection,
        Scheduler::WeightedLeastConnection,
        Scheduler::LocalityBasedLeastConnection,
        Scheduler::LocalityBasedLeastConnectionReplication,
        Scheduler::DestinationHashing,
        Scheduler::SourceHashing,
        Scheduler::ShortestExpectedDelay,
        Scheduler::NeverQueue,
        Scheduler::WeightedFailover,
        Scheduler::WeightedOverflow,
        Scheduler::MaglevHashing,
    ];

    /// The kernel module suffix / ipvsadm `-s` name.
    pub const fn name(self) -> &'static str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::WeightedRoundRobin => "wrr",
            Scheduler::LeastConnection => "lc",
            Scheduler::WeightedLeastConnection => "wlc",
            Scheduler::LocalityBasedLeastConnection => "lblc",
            Scheduler::LocalityBasedLeastConnectionReplication => "lblcr",
            Scheduler::DestinationHashing => "dh",
            Scheduler::SourceHashing => "sh",
            Scheduler::ShortestExpectedDelay => "sed",
            Scheduler::NeverQueue => "nq",
            Scheduler::WeightedFailover => "fo",
            Scheduler::WeightedOverflow => "ovf",
            Scheduler::MaglevHashing => "mh",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Scheduler::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the scheduler interprets the `fallback`/`port` scheduler flags.
    pub const fn uses_sched_flags(self) -> bool {
        matches!(self, Scheduler::SourceHashing | Scheduler::MaglevHashing)
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of [`Scheduler::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown IPVS scheduler {0:?}")]
pub struct UnknownScheduler(pub String);

impl FromStr for Scheduler {
    type Err = UnknownScheduler;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scheduler::from_name(s).ok_or_else(|| UnknownScheduler(s.to_owned()))
    }
}

/// Scheduler flags (`IP_VS_SVC_F_SCHED1..3`). For `sh` and `mh`, flag 1 is `*-fallback`
/// and flag 2 is `*-port`; other schedulers ignore them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchedFlags {
    /// `sh-fallback` / `mh-fallback` (`IP_VS_SVC_F_SCHED1`).
    pub fallback: bool,
    /// `sh-port` / `mh-port` (`IP_VS_SVC_F_SCHED2`).
    pub port: bool,
    /// `flag-3` (`IP_VS_SVC_F_SCHED3`), unused by in-tree schedulers.
    pub flag3: bool,
}

/// Persistence (`ipvsadm -p timeout -M netmask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Persistence {
    /// Seconds a client stays bound to its real server after its last connection.
    pub timeout_secs: u32,
    /// Client grouping prefix: 32 (IPv4) / 128 (IPv6) means per client address.
    pub prefix_len: u8,
}

/// Configurable part of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    pub key: ServiceKey,
    pub scheduler: Scheduler,
    pub sched_flags: SchedFlags,
    /// One-packet scheduling (`-o`, UDP: schedule every datagram).
    pub one_packet: bool,
    pub persistence: Option<Persistence>,
}

impl Service {
    /// A service with no flags and no persistence.
    pub const fn new(key: ServiceKey, scheduler: Scheduler) -> Self {
        Service {
            key,
            scheduler,
            sched_flags: SchedFlags {
                fallback: false,
                port: false,
                flag3: false,
            },
            one_packet: false,
            persistence: None,
        }
    }
}

/// Per-packet counters and rate estimates (`IPVS_STATS_ATTR_*`); 64-bit where the kernel has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub cps: u64,
    pub in_pps: u64,
    pub out_pps: u64,
    pub in_bps: u64,
    pub out_bps: u64,
}

/// A service as read from the kernel: configuration plus observed-only data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceInfo {
    pub config: Service,
    pub stats: Stats,
    /// Persistence engine name (`--pe sip`), if any.
    pub pe_name: Option<String>,
}

/// GUE/GRE encapsulation checksum mode (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelChecksum {
    #[default]
    None,
    /// Outer checksum (`--tun-nocsum` off, `--tun-csum`).
    Csum,
    /// Remote checksum offload (`--tun-remcsum`, GUE only).
    RemCsum,
}

/// Tunnel encapsulation for `-i` destinations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelType {
    #[default]
    Ipip,
    Gue {
        port: u16,
        csum: TunnelChecksum,
    },
    Gre {
        csum: TunnelChecksum,
    },
}

/// Packet forwarding method of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Forwarding {
    /// NAT (`-m`).
    Masquerade,
    /// Local node (the kernel picks this itself for local addresses).
    Local,
    /// IP tunnel (`-i`).
    Tunnel(TunnelType),
    /// Direct routing / gatewaying (`-g`).
    DirectRoute,
}

/// Configurable part of a real server entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
    pub forwarding: Forwarding,
    pub weight: u32,
    /// Upper connection threshold (`-x`); 0 = unlimited.
    pub upper_threshold: u32,
    /// Lower connection threshold (`-y`).
    pub lower_threshold: u32,
}

impl Destination {
    /// A destination with weight 1 and no thresholds.
    pub const fn new(addr: IpAddr, port: u16, forwarding: Forwarding) -> Self {
        Destination {
            addr,
            port,
            forwarding,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    pub const fn family(&self) -> AddressFamily {
        AddressFamily::of(&self.addr)
    }
}

/// Identity of a destination within its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestinationKey {
    pub addr: IpAddr,
    pub port: u16,
}

impl Destination {
    pub const fn key(&self) -> DestinationKey {
        DestinationKey {
            addr: self.addr,
            port: self.port,
        }
    }
}

/// A destination as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DestinationInfo {
    pub config: Destination,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persistent_conns: u32,
    pub stats: Stats,
}

/// Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`); 0 on set = leave unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// Role of a connection-synchronisation daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyncState {
    Master,
    Backup,
}

impl SyncState {
    /// `IP_VS_STATE_MASTER` / `IP_VS_STATE_BACKUP`.
    pub const fn to_raw(self) -> u32 {
        match self {
            SyncState::Master => 1,
            SyncState::Backup => 2,
        }
    }

    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(SyncState::Master),
            2 => Some(SyncState::Backup),
            _ => None,
        }
    }
}

/// Connection sync daemon configuration (`ipvsadm --start-daemon`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncDaemon {
    pub state: SyncState,
    pub interface: String,
    pub sync_id: u8,
    /// Maximum sync message payload; 0 = kernel default (derived from the MTU).
    pub max_len: u16,
    /// Multicast group; `None` = kernel default (224.0.0.81).
    pub mcast_group: Option<IpAddr>,
    /// 0 = kernel default (8848).
    pub mcast_port: u16,
    /// 0 = kernel default (1).
    pub mcast_ttl: u8,
}

impl SyncDaemon {
    pub fn new(state: SyncState, interface: impl Into<String>, sync_id: u8) -> Self {
        SyncDaemon {
            state,
            interface: interface.into(),
            sync_id,
            max_len: 0,
            mcast_group: None,
            mcast_port: 0,
            mcast_ttl: 0,
        }
    }
}

/// General IPVS information (`IPVS_CMD_GET_INFO`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IpvsInfo {
    /// Version code, e.g. `0x010201` for 1.2.1.
    pub version: u32,
    /// Size of the connection hash table.
    pub conn_tab_size: u32,
}

impl IpvsInfo {
    /// `(major, minor, patch)` of [`IpvsInfo::version`].
    pub const fn version_triple(&self) -> (u8, u8, u8) {
        let [_, major, minor, patch] = self.version.to_be_bytes();
        (major, minor, patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn scheduler_names_round_trip() {
        for s in Scheduler::ALL {
            assert_eq!(s.name().parse::<Scheduler>(), Ok(s));
        }
        assert!("rrr".parse::<Scheduler>().is_err());
        assert_eq!(Scheduler::ALL.len(), 13);
    }

    #[test]
    fn protocol_and_family_raw_round_trip() {
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            assert_eq!(Protocol::from_raw(p.to_raw()), Some(p));
        }
        assert_eq!(Protocol::from_raw(1), None);
        for f in [AddressFamily::Ipv4, AddressFamily::Ipv6] {
            assert_eq!(AddressFamily::from_raw(f.to_raw()), Some(f));
        }
        assert_eq!(SyncState::from_raw(3), None);
    }

    #[test]
    fn key_derives_family_and_displays() {
        let k = ServiceKey::addr(Protocol::Tcp, IpAddr::V6(Ipv6Addr::LOCALHOST), 80);
        assert_eq!(k.family(), AddressFamily::Ipv6);
        assert_eq!(k.to_string(), "tcp [::1]:80");
        let k = ServiceKey::addr(Protocol::Udp, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 53);
        assert_eq!(k.to_string(), "udp 192.0.2.1:53");
        assert_eq!(
            ServiceKey::fwmark(AddressFamily::Ipv6, 7).to_string(),
            "fwmark6 7"
        );
    }
}
