//! IPVS generic netlink messages: typed requests → attribute bytes, reply attribute bytes →
//! typed entries. Everything here is pure and runs without privileges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, Emitable, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, Parseable, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

use crate::attr::{AttrTable, AttrWriter, DecodeReport};
use crate::consts::*;
use crate::types::*;

/// A generic netlink payload of the IPVS family: command plus raw attribute bytes.
///
/// Kept raw so that encoding is one pass over a `Vec<u8>` and decoding can be lenient per
/// attribute (see [`DecodeReport`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsPayload {
    pub cmd: u8,
    pub attrs: Vec<u8>,
}

impl GenlFamily for IpvsPayload {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsPayload {
    fn buffer_len(&self) -> usize {
        self.attrs.len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        if let Some(dst) = buffer.get_mut(..self.attrs.len()) {
            dst.copy_from_slice(&self.attrs);
        }
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsPayload {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(IpvsPayload {
            cmd: header.cmd,
            attrs: buf.to_vec(),
        })
    }
}

/// One IPVS operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    NewService(Service),
    SetService(Service),
    DelService(ServiceKey),
    GetService(ServiceKey),
    DumpServices,
    NewDestination {
        service: ServiceKey,
        dest: Destination,
    },
    SetDestination {
        service: ServiceKey,
        dest: Destination,
    },
    DelDestination {
        service: ServiceKey,
        dest: DestinationKey,
    },
    DumpDestinations(ServiceKey),
    NewDaemon(SyncDaemon),
    DelDaemon(SyncState),
    DumpDaemons,
    SetTimeouts(Timeouts),
    GetTimeouts,
    GetInfo,
    /// Zero counters of one service, or of everything with `None`.
    Zero(Option<ServiceKey>),
    /// Remove every service (tests only: the agent never flushes what it does not own).
    Flush,
}

impl Request {
    pub const fn command(&self) -> u8 {
        match self {
            Request::NewService(_) => IPVS_CMD_NEW_SERVICE,
            Request::SetService(_) => IPVS_CMD_SET_SERVICE,
            Request::DelService(_) => IPVS_CMD_DEL_SERVICE,
            Request::GetService(_) | Request::DumpServices => IPVS_CMD_GET_SERVICE,
            Request::NewDestination { .. } => IPVS_CMD_NEW_DEST,
            Request::SetDestination { .. } => IPVS_CMD_SET_DEST,
            Request::DelDestination { .. } => IPVS_CMD_DEL_DEST,
            Request::DumpDestinations(_) => IPVS_CMD_GET_DEST,
            Request::NewDaemon(_) => IPVS_CMD_NEW_DAEMON,
            Request::DelDaemon(_) => IPVS_CMD_DEL_DAEMON,
            Request::DumpDaemons => IPVS_CMD_GET_DAEMON,
            Request::SetTimeouts(_) => IPVS_CMD_SET_CONFIG,
            Request::GetTimeouts => IPVS_CMD_GET_CONFIG,
            Request::GetInfo => IPVS_CMD_GET_INFO,
            Request::Zero(_) => IPVS_CMD_ZERO,
            Request::Flush => IPVS_CMD_FLUSH,
        }
    }

    /// Short operation name for errors, logs and metric labels.
    pub const fn name(&self) -> &'static str {
        match self {
            Request::NewService(_) => "new_service",
            Request::SetService(_) => "set_service",
            Request::DelService(_) => "del_service",
            Request::GetService(_) => "get_service",
            Request::DumpServices => "dump_services",
            Request::NewDestination { .. } => "new_destination",
            Request::SetDestination { .. } => "set_destination",
            Request::DelDestination { .. } => "del_destination",
            Request::DumpDestinations(_) => "dump_destinations",
            Request::NewDaemon(_) => "new_daemon",
            Request::DelDaemon(_) => "del_daemon",
            Request::DumpDaemons => "dump_daemons",
            Request::SetTimeouts(_) => "set_timeouts",
            Request::GetTimeouts => "get_timeouts",
            Request::GetInfo => "get_info",
            Request::Zero(_) => "zero",
            Request::Flush => "flush",
        }
    }

    /// Requests answered by a multipart dump (`NLM_F_DUMP`).
    pub const fn is_dump(&self) -> bool {
        matches!(
            self,
            Request::DumpServices | Request::DumpDestinations(_) | Request::DumpDaemons
        )
    }

    /// Requests answered by data messages (as opposed to a bare ack).
    pub const fn expects_data(&self) -> bool {
        self.is_dump()
            || matches!(
                self,
                Request::GetService(_) | Request::GetTimeouts | Request::GetInfo
            )
    }

    /// Netlink header flags for this request; `ack` asks for an explicit ack on success.
    pub const fn netlink_flags(&self, ack: bool) -> u16 {
        let mut flags = NLM_F_REQUEST;
        if self.is_dump() {
            flags |= NLM_F_DUMP;
        }
        if ack && !self.expects_data() {
            flags |= NLM_F_ACK;
        }
        flags
    }

    pub fn to_payload(&self) -> IpvsPayload {
        let mut attrs = Vec::with_capacity(128);
        self.encode_attrs(&mut attrs);
        IpvsPayload {
            cmd: self.command(),
            attrs,
        }
    }

    pub fn encode_attrs(&self, buf: &mut Vec<u8>) {
        let mut w = AttrWriter::new(buf);
        match self {
            Request::NewService(svc) | Request::SetService(svc) => put_service(&mut w, svc),
            Request::DelService(key) | Request::GetService(key) => put_service_key(&mut w, key),
            Request::DumpServices | Request::DumpDaemons | Request::GetTimeouts => {}
            Request::GetInfo | Request::Flush | Request::Zero(None) => {}
            Request::Zero(Some(key)) | Request::DumpDestinations(key) => {
                put_service_key(&mut w, key)
            }
            Request::NewDestination { service, dest }
            | Request::SetDestination { service, dest } => {
                put_service_key(&mut w, service);
                put_destination(&mut w, dest);
            }
            Request::DelDestination { service, dest } => {
                put_service_key(&mut w, service);
                let n = w.begin_nest(IPVS_CMD_ATTR_DEST);
                put_dest_key(&mut w, dest);
                w.end_nest(n);
            }
            Request::NewDaemon(d) => put_daemon(&mut w, d),
            Request::DelDaemon(state) => {
                let n = w.begin_nest(IPVS_CMD_ATTR_DAEMON);
                w.put_u32(IPVS_DAEMON_ATTR_STATE, state.to_raw());
                w.end_nest(n);
            }
            Request::SetTimeouts(t) => {
                // Zero means "unchanged" to the kernel; sending it anyway is harmless but
                // omitting keeps the request minimal.
                for (kind, v) in [
                    (IPVS_CMD_ATTR_TIMEOUT_TCP, t.tcp),
                    (IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, t.tcp_fin),
                    (IPVS_CMD_ATTR_TIMEOUT_UDP, t.udp),
                ] {
                    if v != 0 {
                        w.put_u32(kind, v);
                    }
                }
            }
        }
    }
}

fn addr_bytes(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn put_key_fields(w: &mut AttrWriter<'_>, key: &ServiceKey) {
    w.put_u16(IPVS_SVC_ATTR_AF, key.family().to_raw());
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
            ..
        } => {
            w.put_u16(IPVS_SVC_ATTR_PROTOCOL, protocol.to_raw());
            w.put(IPVS_SVC_ATTR_ADDR, &addr_bytes(addr));
            w.put_be16(IPVS_SVC_ATTR_PORT, *port);
        }
        ServiceKey::Fwmark { mark, .. } => w.put_u32(IPVS_SVC_ATTR_FWMARK, *mark),
    }
}

fn put_service_key(w: &mut AttrWriter<'_>, key: &ServiceKey) {
    let n = w.begin_nest(IPVS_CMD_ATTR_SERVICE);
    put_key_fields(w, key);
    w.end_nest(n);
}

/// Service flags word as the kernel stores it (without the internal `HASHED` bit).
pub(crate) fn service_flags(svc: &Service) -> u32 {
    let mut f = 0;
    if svc.persistence.is_some() {
        f |= IP_VS_SVC_F_PERSISTENT;
    }
    if svc.one_packet {
        f |= IP_VS_SVC_F_ONEPACKET;
    }
    if svc.sched_flags.fallback {
        f |= IP_VS_SVC_F_SCHED1;
    }
    if svc.sched_flags.port {
        f |= IP_VS_SVC_F_SCHED2;
    }
    if svc.sched_flags.flag3 {
        f |= IP_VS_SVC_F_SCHED3;
    }
    f
}

/// The `IPVS_SVC_ATTR_NETMASK` value: an IPv4 netmask in network byte order, or an IPv6
/// prefix length as a host-order integer (that is how the kernel reads it).
fn netmask_bytes(family: AddressFamily, prefix: u8) -> [u8; 4] {
    match family {
        AddressFamily::Ipv4 => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            mask.to_be_bytes()
        }
        AddressFamily::Ipv6 => u32::from(prefix.min(128)).to_ne_bytes(),
    }
}

fn prefix_from_netmask(family: AddressFamily, raw: [u8; 4]) -> u8 {
    match family {
        AddressFamily::Ipv4 => u32::from_be_bytes(raw).leading_ones() as u8,
        AddressFamily::Ipv6 => u32::from_ne_bytes(raw).min(128) as u8,
    }
}

fn put_service(w: &mut AttrWriter<'_>, svc: &Service) {
    let family = svc.key.family();
    let n = w.begin_nest(IPVS_CMD_ATTR_SERVICE);
    put_key_fields(w, &svc.key);
    w.put_str(IPVS_SVC_ATTR_SCHED_NAME, svc.scheduler.name());
    // struct ip_vs_flags { flags, mask }: a full mask replaces every settable flag.
    let mut flags = [0u8; 8];
    flags[..4].copy_from_slice(&service_flags(svc).to_ne_bytes());
    flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
    w.put(IPVS_SVC_ATTR_FLAGS, &flags);
    let (timeout, prefix) = match svc.persistence {
        Some(p) => (p.timeout_secs, p.prefix_len),
        None => (0, family.max_prefix()),
    };
    w.put_u32(IPVS_SVC_ATTR_TIMEOUT, timeout);
    w.put(IPVS_SVC_ATTR_NETMASK, &netmask_bytes(family, prefix));
    w.end_nest(n);
}

fn put_dest_key(w: &mut AttrWriter<'_>, key: &DestinationKey) {
    w.put(IPVS_DEST_ATTR_ADDR, &addr_bytes(&key.addr));
    w.put_be16(IPVS_DEST_ATTR_PORT, key.port);
    w.put_u16(
        IPVS_DEST_ATTR_ADDR_FAMILY,
        AddressFamily::of(&key.addr).to_raw(),
    );
}

const fn tunnel_flags(csum: TunnelChecksum) -> u16 {
    match csum {
        TunnelChecksum::None => IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM,
        TunnelChecksum::Csum => IP_VS_TUNNEL_ENCAP_FLAG_CSUM,
        TunnelChecksum::RemCsum => IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM,
    }
}

fn put_destination(w: &mut AttrWriter<'_>, dest: &Destination) {
    let n = w.begin_nest(IPVS_CMD_ATTR_DEST);
    put_dest_key(w, &dest.key());
    let fwd = match dest.forwarding {
        Forwarding::Masquerade => IP_VS_CONN_F_MASQ,
        Forwarding::Local => IP_VS_CONN_F_LOCALNODE,
        Forwarding::Tunnel(_) => IP_VS_CONN_F_TUNNEL,
        Forwarding::DirectRoute => IP_VS_CONN_F_DROUTE,
    };
    w.put_u32(IPVS_DEST_ATTR_FWD_METHOD, fwd);
    w.put_u32(IPVS_DEST_ATTR_WEIGHT, dest.weight);
    w.put_u32(IPVS_DEST_ATTR_U_THRESH, dest.upper_threshold);
    w.put_u32(IPVS_DEST_ATTR_L_THRESH, dest.lower_threshold);
    if let Forwarding::Tunnel(tun) = dest.forwarding {
        let (kind, port, csum) = match tun {
            TunnelType::Ipip => (IP_VS_CONN_F_TUNNEL_TYPE_IPIP, 0, TunnelChecksum::None),
            TunnelType::Gue { port, csum } => (IP_VS_CONN_F_TUNNEL_TYPE_GUE, port, csum),
            TunnelType::Gre { csum } => (IP_VS_CONN_F_TUNNEL_TYPE_GRE, 0, csum),
        };
        w.put_u8(IPVS_DEST_ATTR_TUN_TYPE, kind);
        w.put_be16(IPVS_DEST_ATTR_TUN_PORT, port);
        w.put_u16(IPVS_DEST_ATTR_TUN_FLAGS, tunnel_flags(csum));
    }
    w.end_nest(n);
}

fn put_daemon(w: &mut AttrWriter<'_>, d: &SyncDaemon) {
    let n = w.begin_nest(IPVS_CMD_ATTR_DAEMON);
    w.put_u32(IPVS_DAEMON_ATTR_STATE, d.state.to_raw());
    w.put_str(IPVS_DAEMON_ATTR_MCAST_IFN, &d.interface);
    w.put_u32(IPVS_DAEMON_ATTR_SYNC_ID, u32::from(d.sync_id));
    if d.max_len != 0 {
        w.put_u16(IPVS_DAEMON_ATTR_SYNC_MAXLEN, d.max_len);
    }
    match d.mcast_group {
        Some(IpAddr::V4(a)) => w.put(IPVS_DAEMON_ATTR_MCAST_GROUP, &a.octets()),
        Some(IpAddr::V6(a)) => w.put(IPVS_DAEMON_ATTR_MCAST_GROUP6, &a.octets()),
        None => {}
    }
    if d.mcast_port != 0 {
        // Unlike service/destination ports, the kernel keeps this one in host byte order.
        w.put_u16(IPVS_DAEMON_ATTR_MCAST_PORT, d.mcast_port);
    }
    if d.mcast_ttl != 0 {
        w.put_u8(IPVS_DAEMON_ATTR_MCAST_TTL, d.mcast_ttl);
    }
    w.end_nest(n);
}

/// A decoded data message of an IPVS reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Service(ServiceInfo),
    Destination(DestinationInfo),
    Daemon(SyncDaemon),
    Timeouts(Timeouts),
    Info(IpvsInfo),
}

/// Decodes one reply payload. `None` when the message carries nothing usable (counted in
/// `report`); `dest_family` is the family of the dumped service, used when an old kernel
/// omits `IPVS_DEST_ATTR_ADDR_FAMILY`.
pub fn decode_reply(
    payload: &IpvsPayload,
    dest_family: Option<AddressFamily>,
    report: &mut DecodeReport,
) -> Option<Reply> {
    let top: AttrTable<'_, 8> = AttrTable::parse(&payload.attrs, report);
    let decoded = match payload.cmd {
        IPVS_CMD_NEW_SERVICE | IPVS_CMD_SET_SERVICE => top
            .get(IPVS_CMD_ATTR_SERVICE)
            .and_then(|b| decode_service(b, report))
            .map(Reply::Service),
        IPVS_CMD_NEW_DEST | IPVS_CMD_SET_DEST => top
            .get(IPVS_CMD_ATTR_DEST)
            .and_then(|b| decode_destination(b, dest_family, report))
            .map(Reply::Destination),
        IPVS_CMD_NEW_DAEMON => top
            .get(IPVS_CMD_ATTR_DAEMON)
            .and_then(|b| decode_daemon(b, report))
            .map(Reply::Daemon),
        IPVS_CMD_SET_CONFIG => Some(Reply::Timeouts(Timeouts {
            tcp: top.u32(IPVS_CMD_ATTR_TIMEOUT_TCP, report).unwrap_or(0),
            tcp_fin: top.u32(IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, report).unwrap_or(0),
            udp: top.u32(IPVS_CMD_ATTR_TIMEOUT_UDP, report).unwrap_or(0),
        })),
        IPVS_CMD_SET_INFO => {
            let t: AttrTable<'_, 3> = AttrTable::parse(&payload.attrs, report);
            Some(Reply::Info(IpvsInfo {
                version: t.u32(IPVS_INFO_ATTR_VERSION, report).unwrap_or(0),
                conn_tab_size: t.u32(IPVS_INFO_ATTR_CONN_TAB_SIZE, report).unwrap_or(0),
            }))
        }
        _ => None,
    };
    if decoded.is_none() {
        report.dropped_entries += 1;
    }
    decoded
}

fn decode_addr(raw: &[u8], family: AddressFamily) -> Option<IpAddr> {
    match family {
        AddressFamily::Ipv4 => {
            let b: [u8; 4] = raw.get(..4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        AddressFamily::Ipv6 => {
            let b: [u8; 16] = raw.get(..16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
    }
}

fn decode_stats(buf: Option<&[u8]>, wide: bool, report: &mut DecodeReport) -> Option<Stats> {
    let t: AttrTable<'_, 12> = AttrTable::parse(buf?, report);
    // In the 32-bit nest only the byte counters are 64-bit.
    let get = |kind: u16, is64: bool, r: &mut DecodeReport| -> u64 {
        if wide || is64 {
            t.u64(kind, r).unwrap_or(0)
        } else {
            t.u32(kind, r).map(u64::from).unwrap_or(0)
        }
    };
    Some(Stats {
        conns: get(IPVS_STATS_ATTR_CONNS, false, report),
        in_packets: get(IPVS_STATS_ATTR_INPKTS, false, report),
        out_packets: get(IPVS_STATS_ATTR_OUTPKTS, false, report),
        in_bytes: get(IPVS_STATS_ATTR_INBYTES, true, report),
        out_bytes: get(IPVS_STATS_ATTR_OUTBYTES, true, report),
        cps: get(IPVS_STATS_ATTR_CPS, false, report),
        in_pps: get(IPVS_STATS_ATTR_INPPS, false, report),
        out_pps: get(IPVS_STATS_ATTR_OUTPPS, false, report),
        in_bps: get(IPVS_STATS_ATTR_INBPS, false, report),
        out_bps: get(IPVS_STATS_ATTR_OUTBPS, false, report),
    })
}

fn decode_any_stats(t64: Option<&[u8]>, t32: Option<&[u8]>, report: &mut DecodeReport) -> Stats {
    decode_stats(t64, true, report)
        .or_else(|| decode_stats(t32, false, report))
        .unwrap_or_default()
}

/// Decodes the attributes inside `IPVS_CMD_ATTR_SERVICE`.
pub fn decode_service(buf: &[u8], report: &mut DecodeReport) -> Option<ServiceInfo> {
    let t: AttrTable<'_, 13> = AttrTable::parse(buf, report);
    let family = AddressFamily::from_raw(t.u16(IPVS_SVC_ATTR_AF, report)?)?;
    let key = match t.u32(IPVS_SVC_ATTR_FWMARK, report) {
        Some(mark) if mark != 0 => ServiceKey::Fwmark { family, mark },
        _ => ServiceKey::Addr {
            family,
            protocol: Protocol::from_raw(t.u16(IPVS_SVC_ATTR_PROTOCOL, report)?)?,
            addr: decode_addr(t.get(IPVS_SVC_ATTR_ADDR)?, family)?,
            port: t.be16(IPVS_SVC_ATTR_PORT, report)?,
        },
    };
    let scheduler = Scheduler::from_name(&t.string(IPVS_SVC_ATTR_SCHED_NAME, report)?)?;
    let flags = t
        .array::<8>(IPVS_SVC_ATTR_FLAGS, report)
        .and_then(|b| b.get(..4)?.try_into().ok())
        .map(u32::from_ne_bytes)
        .unwrap_or(0);
    let persistence = (flags & IP_VS_SVC_F_PERSISTENT != 0).then(|| Persistence {
        timeout_secs: t.u32(IPVS_SVC_ATTR_TIMEOUT, report).unwrap_or(0),
        prefix_len: t
            .array::<4>(IPVS_SVC_ATTR_NETMASK, report)
            .map(|raw| prefix_from_netmask(family, raw))
            .unwrap_or(family.max_prefix()),
    });
    let stats = decode_any_stats(
        t.get(IPVS_SVC_ATTR_STATS64),
        t.get(IPVS_SVC_ATTR_STATS),
        report,
    );
    Some(ServiceInfo {
        config: Service {
            key,
            scheduler,
            sched_flags: SchedFlags {
                fallback: flags & IP_VS_SVC_F_SCHED1 != 0,
                port: flags & IP_VS_SVC_F_SCHED2 != 0,
                flag3: flags & IP_VS_SVC_F_SCHED3 != 0,
            },
            one_packet: flags & IP_VS_SVC_F_ONEPACKET != 0,
            persistence,
        },
        stats,
        pe_name: t.string(IPVS_SVC_ATTR_PE_NAME, report),
    })
}

fn csum_from_flags(flags: u16) -> TunnelChecksum {
    if flags & IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM != 0 {
        TunnelChecksum::RemCsum
    } else if flags & IP_VS_TUNNEL_ENCAP_FLAG_CSUM != 0 {
        TunnelChecksum::Csum
    } else {
        TunnelChecksum::None
    }
}

/// Decodes the attributes inside `IPVS_CMD_ATTR_DEST`.
pub fn decode_destination(
    buf: &[u8],
    fallback_family: Option<AddressFamily>,
    report: &mut DecodeReport,
) -> Option<DestinationInfo> {
    let t: AttrTable<'_, 16> = AttrTable::parse(buf, report);
    let family = match t.u16(IPVS_DEST_ATTR_ADDR_FAMILY, report) {
        Some(raw) => AddressFamily::from_raw(raw)?,
        None => fallback_family?,
    };
    let addr = decode_addr(t.get(IPVS_DEST_ATTR_ADDR)?, family)?;
    let port = t.be16(IPVS_DEST_ATTR_PORT, report)?;
    let fwd = t.u32(IPVS_DEST_ATTR_FWD_METHOD, report)? & IP_VS_CONN_F_FWD_MASK;
    let forwarding = match fwd {
        IP_VS_CONN_F_MASQ => Forwarding::Masquerade,
        IP_VS_CONN_F_LOCALNODE => Forwarding::Local,
        IP_VS_CONN_F_DROUTE => Forwarding::DirectRoute,
        IP_VS_CONN_F_TUNNEL => {
            let csum = csum_from_flags(t.u16(IPVS_DEST_ATTR_TUN_FLAGS, report).unwrap_or(0));
            Forwarding::Tunnel(match t.u8(IPVS_DEST_ATTR_TUN_TYPE, report).unwrap_or(0) {
                IP_VS_CONN_F_TUNNEL_TYPE_IPIP => TunnelType::Ipip,
                IP_VS_CONN_F_TUNNEL_TYPE_GUE => TunnelType::Gue {
                    port: t.be16(IPVS_DEST_ATTR_TUN_PORT, report).unwrap_or(0),
                    csum,
                },
                IP_VS_CONN_F_TUNNEL_TYPE_GRE => TunnelType::Gre { csum },
                _ => return None,
            })
        }
        _ => return None,
    };
    let stats = decode_any_stats(
        t.get(IPVS_DEST_ATTR_STATS64),
        t.get(IPVS_DEST_ATTR_STATS),
        report,
    );
    Some(DestinationInfo {
        config: Destination {
            addr,
            port,
            forwarding,
            weight: t.u32(IPVS_DEST_ATTR_WEIGHT, report).unwrap_or(0),
            upper_threshold: t.u32(IPVS_DEST_ATTR_U_THRESH, report).unwrap_or(0),
            lower_threshold: t.u32(IPVS_DEST_ATTR_L_THRESH, report).unwrap_or(0),
        },
        active_conns: t.u32(IPVS_DEST_ATTR_ACTIVE_CONNS, report).unwrap_or(0),
        inactive_conns: t.u32(IPVS_DEST_ATTR_INACT_CONNS, report).unwrap_or(0),
        persistent_conns: t.u32(IPVS_DEST_ATTR_PERSIST_CONNS, report).unwrap_or(0),
        stats,
    })
}

/// Decodes the attributes inside `IPVS_CMD_ATTR_DAEMON`.
pub fn decode_daemon(buf: &[u8], report: &mut DecodeReport) -> Option<SyncDaemon> {
    let t: AttrTable<'_, 9> = AttrTable::parse(buf, report);
    let state = SyncState::from_raw(t.u32(IPVS_DAEMON_ATTR_STATE, report)?)?;
    let interface = t.string(IPVS_DAEMON_ATTR_MCAST_IFN, report)?;
    let sync_id = t.u32(IPVS_DAEMON_ATTR_SYNC_ID, report)?;
    let mcast_group = t
        .array::<4>(IPVS_DAEMON_ATTR_MCAST_GROUP, report)
        .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
        .or_else(|| {
            t.array::<16>(IPVS_DAEMON_ATTR_MCAST_GROUP6, report)
                .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
        });
    Some(SyncDaemon {
        state,
        interface,
        // The kernel keeps sync ids in a u8; a larger value would be corrupt input.
        sync_id: u8::try_from(sync_id).ok()?,
        max_len: t.u16(IPVS_DAEMON_ATTR_SYNC_MAXLEN, report).unwrap_or(0),
        mcast_group,
        mcast_port: t.u16(IPVS_DAEMON_ATTR_MCAST_PORT, report).unwrap_or(0),
        mcast_ttl: t.u8(IPVS_DAEMON_ATTR_MCAST_TTL, report).unwrap_or(0),
    })
}

/// Appends one complete netlink message (nlmsghdr + genlmsghdr + attributes) to `out`.
pub fn encode_request(out: &mut Vec<u8>, family_id: u16, seq: u32, ack: bool, req: &Request) {
    let mut genl = GenlMessage::from_payload(req.to_payload());
    genl.set_resolved_family_id(family_id);
    let mut header = NetlinkHeader::default();
    header.flags = req.netlink_flags(ack);
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(genl));
    msg.finalize();
    let start = out.len();
    out.resize(start + msg.buffer_len(), 0);
    if let Some(dst) = out.get_mut(start..) {
        msg.serialize(dst);
    }
}

/// One message read from the IPVS socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Data {
        seq: u32,
        payload: IpvsPayload,
    },
    /// Success ack (`NLMSG_ERROR` with code 0).
    Ack {
        seq: u32,
    },
    /// Failure (`NLMSG_ERROR` with a negative errno); `errno` is positive.
    Error {
        seq: u32,
        errno: i32,
    },
    /// End of a dump.
    Done {
        seq: u32,
    },
    /// Anything else (noop, overrun, …); ignored.
    Other {
        seq: u32,
    },
}

impl Incoming {
    pub const fn seq(&self) -> u32 {
        match self {
            Incoming::Data { seq, .. }
            | Incoming::Ack { seq }
            | Incoming::Error { seq, .. }
            | Incoming::Done { seq }
            | Incoming::Other { seq } => *seq,
        }
    }
}

/// Splits a datagram into netlink messages. Malformed messages are counted and skipped; a
/// broken length field ends the datagram (nothing after it can be framed).
pub fn decode_datagram(buf: &[u8], report: &mut DecodeReport) -> Vec<Incoming> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(rest) = buf.get(pos..) {
        if rest.is_empty() {
            break;
        }
        let Ok(nl) = NetlinkBuffer::new_checked(rest) else {
            report.bad_attrs += 1;
            break;
        };
        let len = nl.length() as usize;
        let Some(one) = rest.get(..len) else {
            report.bad_attrs += 1;
            break;
        };
        match decode_one(one) {
            Some(m) => out.push(m),
            None => report.bad_attrs += 1,
        }
        // Messages are 4-byte aligned; the last one may omit its padding.
        pos += (len + 3) & !3;
    }
    out
}

fn decode_one(one: &[u8]) -> Option<Incoming> {
    let nl = NetlinkBuffer::new_checked(&one).ok()?;
    let msg = NetlinkMessage::<GenlMessage<IpvsPayload>>::parse(&nl).ok()?;
    let seq = msg.header.sequence_number;
    Some(match msg.payload {
        NetlinkPayload::InnerMessage(genl) => Incoming::Data {
            seq,
            payload: genl.payload,
        },
        NetlinkPayload::Error(e) => match e.code {
            Some(code) => Incoming::Error {
                seq,
                errno: code.get().checked_neg().unwrap_or(i32::MAX),
            },
            None => Incoming::Ack { seq },
        },
        NetlinkPayload::Done(_) => Incoming::Done { seq },
        _ => Incoming::Other { seq },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service reply as the kernel builds it, with a 32-bit and optionally a 64-bit stats nest.
    fn service_reply(with64: bool) -> IpvsPayload {
        let svc = Service::new(
            ServiceKey::addr(Protocol::Tcp, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 80),
            Scheduler::RoundRobin,
        );
        let mut attrs = Vec::new();
        let mut w = AttrWriter::new(&mut attrs);
        let n = w.begin_nest(IPVS_CMD_ATTR_SERVICE);
        put_key_fields(&mut w, &svc.key);
        w.put_str(IPVS_SVC_ATTR_SCHED_NAME, "rr");
        w.put(IPVS_SVC_ATTR_FLAGS, &[2, 0, 0, 0, 255, 255, 255, 255]); // HASHED only
        w.put_u32(IPVS_SVC_ATTR_TIMEOUT, 0);
        w.put(IPVS_SVC_ATTR_NETMASK, &[255; 4]);
        let s = w.begin_nest(IPVS_SVC_ATTR_STATS);
        w.put_u32(IPVS_STATS_ATTR_CONNS, 7);
        w.put_u32(IPVS_STATS_ATTR_INPKTS, 70);
        w.put(IPVS_STATS_ATTR_INBYTES, &7000u64.to_ne_bytes());
        w.put_u32(IPVS_STATS_ATTR_CPS, 1);
        w.end_nest(s);
        if with64 {
            let s = w.begin_nest(IPVS_SVC_ATTR_STATS64);
            w.put(
                IPVS_STATS_ATTR_CONNS,
                &(u64::from(u32::MAX) + 7).to_ne_bytes(),
            );
            w.put(
                IPVS_STATS_ATTR_INPKTS,
                &(u64::from(u32::MAX) + 70).to_ne_bytes(),
            );
            w.put(IPVS_STATS_ATTR_INBYTES, &7000u64.to_ne_bytes());
            w.put(IPVS_STATS_ATTR_CPS, &1u64.to_ne_bytes());
            w.end_nest(s);
        }
        w.end_nest(n);
        IpvsPayload {
            cmd: IPVS_CMD_NEW_SERVICE,
            attrs,
        }
    }

    #[test]
    fn stats64_preferred_over_32bit() {
        let mut r = DecodeReport::default();
        let Some(Reply::Service(s)) = decode_reply(&service_reply(true), None, &mut r) else {
            panic!("no service")
        };
        assert_eq!(s.stats.conns, u64::from(u32::MAX) + 7);
        assert_eq!(s.stats.in_packets, u64::from(u32::MAX) + 70);
        assert_eq!(r, DecodeReport::default());
        // The internal HASHED flag is not a configurable property.
        assert_eq!(s.config, Service::new(s.config.key, Scheduler::RoundRobin));
    }

    #[test]
    fn falls_back_to_32bit_stats() {
        let mut r = DecodeReport::default();
        let Some(Reply::Service(s)) = decode_reply(&service_reply(false), None, &mut r) else {
            panic!("no service")
        };
        assert_eq!(
            (
                s.stats.conns,
                s.stats.in_packets,
                s.stats.in_bytes,
                s.stats.cps
            ),
            (7, 70, 7000, 1)
        );
        assert_eq!(r, DecodeReport::default());
    }

    #[test]
    fn netmask_representation_per_family() {
        assert_eq!(netmask_bytes(AddressFamily::Ipv4, 24), [255, 255, 255, 0]);
        assert_eq!(netmask_bytes(AddressFamily::Ipv4, 0), [0; 4]);
        assert_eq!(netmask_bytes(AddressFamily::Ipv6, 64), 64u32.to_ne_bytes());
        for p in 0..=32 {
            let b = netmask_bytes(AddressFamily::Ipv4, p);
            assert_eq!(prefix_from_netmask(AddressFamily::Ipv4, b), p);
        }
        for p in 0..=128 {
            let b = netmask_bytes(AddressFamily::Ipv6, p);
            assert_eq!(prefix_from_netmask(AddressFamily::Ipv6, b), p);
        }
    }
}
