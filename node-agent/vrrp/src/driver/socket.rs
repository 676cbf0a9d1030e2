//! Raw VRRP sockets (IP protocol 112), one receive and one send socket per instance.
//!
//! The receive socket is not bound to an address: a raw socket bound to a local address
//! would only see packets sent to that address, never the multicast group.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, setsockopt, sockopt};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::packet::{Family, IPPROTO_VRRP, MCAST_V4, MCAST_V6, VRRP_TTL};

/// One received VRRP message with the IP-level facts validation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    /// VRRP message without IP header.
    pub payload: Vec<u8>,
}

/// Why a datagram could not even be turned into a [`Received`].
#[derive(Debug)]
pub enum RecvError {
    Io(io::Error),
    /// Not a VRRP datagram or a broken IP header.
    Malformed,
}

pub struct RxSocket {
    fd: AsyncFd<Socket>,
    family: Family,
}

fn raw(domain: Domain) -> io::Result<Socket> {
    let s = Socket::new(
        domain,
        Type::RAW,
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )?;
    s.set_nonblocking(true)?;
    Ok(s)
}

impl RxSocket {
    pub fn open(
        family: Family,
        ifname: &str,
        ifindex: u32,
        multicast: bool,
    ) -> io::Result<RxSocket> {
        let s = match family {
            Family::V4 => {
                let s = raw(Domain::IPV4)?;
                s.bind_device(Some(ifname.as_bytes()))?;
                if multicast {
                    s.join_multicast_v4_n(&MCAST_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
                }
                s
            }
            Family::V6 => {
                let s = raw(Domain::IPV6)?;
                s.bind_device(Some(ifname.as_bytes()))?;
                if multicast {
                    s.join_multicast_v6(&MCAST_V6, ifindex)?;
                }
                setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true).map_err(io::Error::from)?;
                setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
                s
            }
        };
        // SAFETY: socket2::Socket owns its descriptor and never swaps it, so it stays valid
        // and identical for the AsyncFd's lifetime.
        let fd = unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(RxSocket { fd, family })
    }

    pub async fn recv(&self) -> Result<Received, RecvError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(RecvError::Io)?;
            match guard.try_io(|inner| self.recv_now(inner.get_ref())) {
                Ok(Ok(r)) => return r,
                Ok(Err(e)) => return Err(RecvError::Io(e)),
                Err(_would_block) => continue,
            }
        }
    }

    fn recv_now(&self, s: &Socket) -> io::Result<Result<Received, RecvError>> {
        let mut buf = [0u8; 2048];
        match self.family {
            Family::V4 => {
                let n = nix::sys::socket::recv(s.as_raw_fd(), &mut buf, MsgFlags::empty())
                    .map_err(io::Error::from)?;
                let data = buf.get(..n).unwrap_or(&[]);
                Ok(match crate::packet::parse_ipv4(data) {
                    Ok((meta, payload)) if meta.protocol == IPPROTO_VRRP => Ok(Received {
                        src: IpAddr::V4(meta.src),
                        dst: IpAddr::V4(meta.dst),
                        ttl: meta.ttl,
                        payload: payload.to_vec(),
                    }),
                    _ => Err(RecvError::Malformed),
                })
            }
            Family::V6 => {
                let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg = recvmsg::<SockaddrIn6>(
                    s.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )
                .map_err(io::Error::from)?;
                let n = msg.bytes;
                let src = msg.address.map(|a| a.ip());
                let mut dst = None;
                let mut hops = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        match c {
                            ControlMessageOwned::Ipv6PacketInfo(info) => {
                                dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                            }
                            ControlMessageOwned::Ipv6HopLimit(h) => hops = u8::try_from(h).ok(),
                            _ => {}
                        }
                    }
                }
                let payload = buf.get(..n).unwrap_or(&[]).to_vec();
                Ok(match (src, dst, hops) {
                    (Some(src), Some(dst), Some(ttl)) => Ok(Received {
                        src: IpAddr::V6(src),
                        dst: IpAddr::V6(dst),
                        ttl,
                        payload,
                    }),
                    _ => Err(RecvError::Malformed),
                })
            }
        }
    }
}

/// Send socket: bound to the instance's source address, TTL/hop limit 255.
pub struct TxSocket {
    sock: Socket,
    pub src: IpAddr,
    ifindex: u32,
}

impl TxSocket {
    pub fn open(src: IpAddr, ifname: &str, ifindex: u32) -> io::Result<TxSocket> {
        let sock = match src {
            IpAddr::V4(v4) => {
                let s = raw(Domain::IPV4)?;
                s.bind_device(Some(ifname.as_bytes()))?;
                s.set_ttl_v4(u32::from(VRRP_TTL))?;
                s.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
                s.set_multicast_loop_v4(false)?;
                s.set_multicast_if_v4(&v4)?;
                s.bind(&SocketAddr::V4(SocketAddrV4::new(v4, 0)).into())?;
                s
            }
            IpAddr::V6(v6) => {
                let s = raw(Domain::IPV6)?;
                s.bind_device(Some(ifname.as_bytes()))?;
                s.set_unicast_hops_v6(u32::from(VRRP_TTL))?;
                s.set_multicast_hops_v6(u32::from(VRRP_TTL))?;
                s.set_multicast_loop_v6(false)?;
                s.set_multicast_if_v6(ifindex)?;
                s.bind(&SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, ifindex)).into())?;
                s
            }
        };
        Ok(TxSocket { sock, src, ifindex })
    }

    pub fn send(&self, dst: IpAddr, msg: &[u8]) -> io::Result<()> {
        let addr = match dst {
            IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, 0)),
            IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, self.ifindex)),
        };
        self.sock.send_to(msg, &addr.into()).map(|_| ())
    }
}
