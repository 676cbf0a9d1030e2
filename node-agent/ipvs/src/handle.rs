//! The one place that talks to the kernel: a generic netlink socket bound to the IPVS family.
//!
//! Mutations are pipelined: many requests go out in one `sendmsg`, only the last of each
//! chunk asks for an ack, and the kernel reports failures individually by sequence number
//! (it keeps processing the rest of a datagram after an error).

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};
use tracing::debug;

use crate::attr::{AttrTable, DecodeReport};
use crate::consts::IPVS_GENL_NAME;
use crate::error::{Error, Result};
use crate::message::{Incoming, Reply, Request, decode_datagram, decode_reply, encode_request};
use crate::types::*;

/// Largest datagram we send: below the default `wmem` so no socket tuning is required.
const MAX_BATCH_BYTES: usize = 96 * 1024;
/// Bounds the number of error replies one chunk can produce (each needs receive-buffer room).
const MAX_BATCH_MSGS: usize = 512;
/// Receive buffer we ask for (forced when we have CAP_NET_ADMIN, which IPVS needs anyway).
const RCVBUF_BYTES: usize = 4 * 1024 * 1024;
const RECV_CHUNK: usize = 64 * 1024;
const CTRL_ATTR_FAMILY_ID: u16 = 1;

/// Counters of the handle's lifetime, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandleStats {
    /// Netlink requests sent (one per IPVS operation).
    pub requests: u64,
    /// `sendmsg` calls.
    pub datagrams_sent: u64,
    pub decode: DecodeReport,
}

struct Conn {
    socket: Socket,
    family_id: u16,
    seq: u32,
    rx: Vec<u8>,
    tx: Vec<u8>,
    stats: HandleStats,
}

/// Cloneable handle to the kernel's IPVS table (clones share one socket).
#[derive(Clone)]
pub struct IpvsHandle {
    conn: Arc<Mutex<Conn>>,
}

impl std::fmt::Debug for IpvsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsHandle").finish_non_exhaustive()
    }
}

impl IpvsHandle {
    /// Opens a generic netlink socket and resolves the `IPVS` family.
    /// Without the `ip_vs` module this is [`Error::NotSupported`].
    pub fn new() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Errors then echo only the request header, keeping error replies small.
        socket.set_cap_ack(true)?;
        let force = nix::sys::socket::setsockopt(
            &socket.as_fd(),
            nix::sys::socket::sockopt::RcvBufForce,
            &RCVBUF_BYTES,
        );
        if force.is_err() {
            socket.set_rx_buf_sz(RCVBUF_BYTES)?;
        }
        let mut conn = Conn {
            socket,
            family_id: 0,
            seq: 1,
            rx: Vec::with_capacity(RECV_CHUNK),
            tx: Vec::with_capacity(MAX_BATCH_BYTES + 4096),
            stats: HandleStats::default(),
        };
        conn.family_id = conn.resolve_family()?;
        debug!(
            family_id = conn.family_id,
            "resolved IPVS generic netlink family"
        );
        Ok(IpvsHandle {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock leaves the socket usable; recover the guard.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Generic netlink family id of IPVS on this kernel.
    pub fn family_id(&self) -> u16 {
        self.lock().family_id
    }

    pub fn stats(&self) -> HandleStats {
        self.lock().stats
    }

    /// Runs one request and returns its decoded data messages (empty for mutations).
    pub fn execute(&self, req: &Request) -> Result<Vec<Reply>> {
        self.lock().execute(req, None)
    }

    /// Runs many requests pipelined; returns one result per request, in order.
    /// Requests that return data are executed one by one and their data discarded.
    pub fn execute_batch(&self, reqs: &[Request]) -> Vec<Result<()>> {
        self.lock().execute_batch(reqs)
    }

    /// Like [`IpvsHandle::execute`], also returning the raw reply datagrams (fixture capture).
    pub fn execute_raw(&self, req: &Request) -> Result<(Vec<Reply>, Vec<Vec<u8>>)> {
        let mut raw = Vec::new();
        let replies = self.lock().execute(req, Some(&mut raw))?;
        Ok((replies, raw))
    }

    // Request builders, rtnetlink style.

    pub fn services(&self) -> ServiceRequests<'_> {
        ServiceRequests { handle: self }
    }

    pub fn destinations(&self, service: ServiceKey) -> DestinationRequests<'_> {
        DestinationRequests {
            handle: self,
            service,
        }
    }

    pub fn sync_daemons(&self) -> DaemonRequests<'_> {
        DaemonRequests { handle: self }
    }

    /// Current connection timeouts (`ipvsadm -L --timeout`).
    pub fn timeouts(&self) -> Result<Timeouts> {
        match self.execute(&Request::GetTimeouts)?.into_iter().next() {
            Some(Reply::Timeouts(t)) => Ok(t),
            _ => Err(Error::Decode("no timeouts in reply".into())),
        }
    }

    /// `ipvsadm --set`; zero fields are left unchanged.
    pub fn set_timeouts(&self, t: Timeouts) -> Result<()> {
        self.execute(&Request::SetTimeouts(t)).map(drop)
    }

    pub fn info(&self) -> Result<IpvsInfo> {
        match self.execute(&Request::GetInfo)?.into_iter().next() {
            Some(Reply::Info(i)) => Ok(i),
            _ => Err(Error::Decode("no info in reply".into())),
        }
    }

    /// Zero counters of one service or (with `None`) of all.
    pub fn zero(&self, service: Option<ServiceKey>) -> Result<()> {
        self.execute(&Request::Zero(service)).map(drop)
    }

    /// Remove every virtual service. For tests: the agent never flushes.
    pub fn flush(&self) -> Result<()> {
        self.execute(&Request::Flush).map(drop)
    }
}

/// Builders for service operations.
pub struct ServiceRequests<'a> {
    handle: &'a IpvsHandle,
}

impl ServiceRequests<'_> {
    pub fn add(&self, svc: Service) -> Result<()> {
        self.handle.execute(&Request::NewService(svc)).map(drop)
    }

    pub fn edit(&self, svc: Service) -> Result<()> {
        self.handle.execute(&Request::SetService(svc)).map(drop)
    }

    pub fn delete(&self, key: ServiceKey) -> Result<()> {
        self.handle.execute(&Request::DelService(key)).map(drop)
    }

    pub fn get(&self, key: ServiceKey) -> Result<ServiceInfo> {
        let replies = self.handle.execute(&Request::GetService(key))?;
        replies
            .into_iter()
            .find_map(|r| match r {
                Reply::Service(s) => Some(s),
                _ => None,
            })
            .ok_or(Error::NotFound {
                op: "get_service",
                errno: libc::ESRCH,
            })
    }

    pub fn dump(&self) -> Result<Vec<ServiceInfo>> {
        let replies = self.handle.execute(&Request::DumpServices)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                Reply::Service(s) => Some(s),
                _ => None,
            })
            .collect())
    }
}

/// Builders for destination operations of one service.
pub struct DestinationRequests<'a> {
    handle: &'a IpvsHandle,
    service: ServiceKey,
}

impl DestinationRequests<'_> {
    pub fn add(&self, dest: Destination) -> Result<()> {
        let service = self.service;
        self.handle
            .execute(&Request::NewDestination { service, dest })
            .map(drop)
    }

    pub fn edit(&self, dest: Destination) -> Result<()> {
        let service = self.service;
        self.handle
            .execute(&Request::SetDestination { service, dest })
            .map(drop)
    }

    pub fn delete(&self, dest: DestinationKey) -> Result<()> {
        let service = self.service;
        self.handle
            .execute(&Request::DelDestination { service, dest })
            .map(drop)
    }

    pub fn dump(&self) -> Result<Vec<DestinationInfo>> {
        let replies = self
            .handle
            .execute(&Request::DumpDestinations(self.service))?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                Reply::Destination(d) => Some(d),
                _ => None,
            })
            .collect())
    }
}

/// Builders for the connection sync daemons.
pub struct DaemonRequests<'a> {
    handle: &'a IpvsHandle,
}

impl DaemonRequests<'_> {
    pub fn start(&self, d: SyncDaemon) -> Result<()> {
        self.handle.execute(&Request::NewDaemon(d)).map(drop)
    }

    pub fn stop(&self, state: SyncState) -> Result<()> {
        self.handle.execute(&Request::DelDaemon(state)).map(drop)
    }

    pub fn list(&self) -> Result<Vec<SyncDaemon>> {
        let replies = self.handle.execute(&Request::DumpDaemons)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                Reply::Daemon(d) => Some(d),
                _ => None,
            })
            .collect())
    }
}

impl Conn {
    fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n.max(1));
        if self.seq == 0 {
            self.seq = 1;
        }
        s
    }

    fn send_tx(&mut self) -> Result<()> {
        let sent = self.socket.send(&self.tx, 0)?;
        self.stats.datagrams_sent += 1;
        if sent != self.tx.len() {
            return Err(Error::Io(std::io::Error::other("short netlink send")));
        }
        Ok(())
    }

    /// Receives one datagram into `rx`; returns its messages.
    fn recv(&mut self, raw: Option<&mut Vec<Vec<u8>>>) -> Result<Vec<Incoming>> {
        self.rx.clear();
        self.rx.reserve(RECV_CHUNK);
        let n = loop {
            match self.socket.recv(&mut self.rx, 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        };
        if n > self.rx.len() {
            return Err(Error::Decode(format!(
                "netlink datagram truncated ({n} > {} bytes)",
                self.rx.len()
            )));
        }
        if let Some(raw) = raw {
            raw.push(self.rx.clone());
        }
        let mut report = DecodeReport::default();
        let msgs = decode_datagram(&self.rx, &mut report);
        self.stats.decode.merge(report);
        Ok(msgs)
    }

    fn resolve_family(&mut self) -> Result<u16> {
        let mut genl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.to_owned())],
        });
        genl.finalize();
        let seq = self.next_seq(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(genl));
        msg.finalize();
        self.tx.clear();
        self.tx.resize(msg.buffer_len(), 0);
        msg.serialize(&mut self.tx);
        self.send_tx()?;
        let mut family = None;
        loop {
            for m in self.recv(None)? {
                match m {
                    Incoming::Data { seq: s, payload } if s == seq => {
                        let mut r = DecodeReport::default();
                        let t: AttrTable<'_, 2> = AttrTable::parse(&payload.attrs, &mut r);
                        family = t.u16(CTRL_ATTR_FAMILY_ID, &mut r).or(family);
                    }
                    Incoming::Ack { seq: s } if s == seq => {
                        return family
                            .ok_or_else(|| Error::Decode("family reply without id".to_owned()));
                    }
                    Incoming::Error { seq: s, errno } if s == seq => {
                        // ENOENT from the controller: no IPVS in this kernel.
                        return Err(match Error::from_errno("resolve_family", errno) {
                            Error::NotFound { op, errno } => Error::NotSupported { op, errno },
                            e => e,
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    fn execute(&mut self, req: &Request, mut raw: Option<&mut Vec<Vec<u8>>>) -> Result<Vec<Reply>> {
        let seq = self.next_seq(1);
        self.tx.clear();
        encode_request(&mut self.tx, self.family_id, seq, true, req);
        self.stats.requests += 1;
        self.send_tx()?;
        let dest_family = match req {
            Request::DumpDestinations(k) => Some(k.family()),
            _ => None,
        };
        let mut out = Vec::new();
        loop {
            let msgs = self.recv(raw.as_deref_mut())?;
            for m in msgs {
                if m.seq() != seq {
                    continue; // stale reply of an earlier, abandoned request
                }
                match m {
                    Incoming::Data { payload, .. } => {
                        let mut report = DecodeReport::default();
                        if let Some(r) = decode_reply(&payload, dest_family, &mut report) {
                            out.push(r);
                        }
                        self.stats.decode.merge(report);
                        if !req.is_dump() {
                            return Ok(out);
                        }
                    }
                    Incoming::Ack { .. } | Incoming::Done { .. } => return Ok(out),
                    Incoming::Error { errno, .. } => {
                        return Err(Error::from_errno(req.name(), errno));
                    }
                    Incoming::Other { .. } => {}
                }
            }
        }
    }

    fn execute_batch(&mut self, reqs: &[Request]) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = Vec::with_capacity(reqs.len());
        let mut i = 0;
        while i < reqs.len() {
            if reqs.get(i).is_some_and(Request::expects_data) {
                let r = match reqs.get(i) {
                    Some(req) => self.execute(req, None).map(drop),
                    None => Ok(()),
                };
                results.push(r);
                i += 1;
                continue;
            }
            let rest = reqs.get(i..).unwrap_or_default();
            let (consumed, outcome) = self.run_chunk(rest);
            match outcome {
                Ok(mut r) => results.append(&mut r),
                Err(e) => {
                    // Socket-level failure: the outcome of the whole chunk is unknown.
                    let msg = e.to_string();
                    results.push(Err(e));
                    for _ in 1..consumed {
                        results.push(Err(Error::Io(std::io::Error::other(msg.clone()))));
                    }
                }
            }
            i += consumed.max(1);
        }
        results
    }

    /// Sends a prefix of `reqs` (mutations only, bounded by bytes and count) as one datagram
    /// and collects per-request outcomes. Returns how many requests were consumed.
    fn run_chunk(&mut self, reqs: &[Request]) -> (usize, Result<Vec<Result<()>>>) {
        let first = self.seq;
        self.tx.clear();
        let mut last_start = 0;
        let mut count = 0usize;
        for req in reqs {
            if req.expects_data() || count >= MAX_BATCH_MSGS || self.tx.len() >= MAX_BATCH_BYTES {
                break;
            }
            last_start = self.tx.len();
            encode_request(
                &mut self.tx,
                self.family_id,
                first.wrapping_add(count as u32),
                false,
                req,
            );
            count += 1;
        }
        let chunk = reqs.get(..count).unwrap_or_default();
        if chunk.is_empty() {
            return (0, Ok(Vec::new()));
        }
        // Only the chunk's last message asks for an ack: its reply marks the end of the chunk.
        if let Some(flags) = self.tx.get_mut(last_start + 6..last_start + 8) {
            let v = u16::from_ne_bytes([flags[0], flags[1]]) | NLM_F_ACK;
            flags.copy_from_slice(&v.to_ne_bytes());
        }
        self.next_seq(count as u32);
        self.stats.requests += count as u64;
        (count, self.collect_chunk(chunk, first))
    }

    fn collect_chunk(&mut self, chunk: &[Request], first: u32) -> Result<Vec<Result<()>>> {
        self.send_tx()?;
        let last_idx = chunk.len().saturating_sub(1);
        let mut out: Vec<Result<()>> = chunk.iter().map(|_| Ok(())).collect();
        let last_seq = first.wrapping_add(last_idx as u32);
        loop {
            for m in self.recv(None)? {
                let idx = m.seq().wrapping_sub(first) as usize;
                if idx > last_idx {
                    continue;
                }
                match m {
                    Incoming::Error { errno, .. } => {
                        if let (Some(slot), Some(req)) = (out.get_mut(idx), chunk.get(idx)) {
                            *slot = Err(Error::from_errno(req.name(), errno));
                        }
                        if m.seq() == last_seq {
                            return Ok(out);
                        }
                    }
                    Incoming::Ack { seq } if seq == last_seq => return Ok(out),
                    _ => {}
                }
            }
        }
    }
}
