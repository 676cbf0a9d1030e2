//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6) sent by a new master,
//! plus the ARP frame codec the tests and the benchmark use to probe who answers for a VIP.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use socket2::{Domain, Protocol, Socket, Type};

const ETH_P_ARP: u16 = 0x0806;
pub const BROADCAST: [u8; 6] = [0xff; 6];
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// The gratuitous ARP keepalived sends: a broadcast request for the VIP from the VIP.
    pub fn gratuitous(mac: [u8; 6], vip: Ipv4Addr) -> Arp {
        Arp {
            eth_dst: BROADCAST,
            eth_src: mac,
            op: ARP_REQUEST,
            sender_mac: mac,
            sender_ip: vip,
            target_mac: [0; 6],
            target_ip: vip,
        }
    }

    pub fn encode(&self) -> [u8; 42] {
        let mut f = [0u8; 42];
        let mut w = Writer {
            buf: &mut f,
            pos: 0,
        };
        w.put(&self.eth_dst);
        w.put(&self.eth_src);
        w.put(&ETH_P_ARP.to_be_bytes());
        w.put(&1u16.to_be_bytes()); // Ethernet
        w.put(&0x0800u16.to_be_bytes()); // IPv4
        w.put(&[6, 4]);
        w.put(&self.op.to_be_bytes());
        w.put(&self.sender_mac);
        w.put(&self.sender_ip.octets());
        w.put(&self.target_mac);
        w.put(&self.target_ip.octets());
        f
    }

    /// Parses an Ethernet frame; `None` for anything that is not Ethernet/IPv4 ARP.
    pub fn decode(frame: &[u8]) -> Option<Arp> {
        let mac = |r: std::ops::Range<usize>| -> Option<[u8; 6]> {
            let mut m = [0u8; 6];
            m.copy_from_slice(frame.get(r)?);
            Some(m)
        };
        let ip = |r: std::ops::Range<usize>| -> Option<Ipv4Addr> {
            let mut a = [0u8; 4];
            a.copy_from_slice(frame.get(r)?);
            Some(Ipv4Addr::from(a))
        };
        let be16 = |i: usize| -> Option<u16> {
            Some(u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]))
        };
        if be16(12)? != ETH_P_ARP || be16(14)? != 1 || be16(16)? != 0x0800 {
            return None;
        }
        if frame.get(18..20)? != [6, 4] {
            return None;
        }
        Some(Arp {
            eth_dst: mac(0..6)?,
            eth_src: mac(6..12)?,
            op: be16(20)?,
            sender_mac: mac(22..28)?,
            sender_ip: ip(28..32)?,
            target_mac: mac(32..38)?,
            target_ip: ip(38..42)?,
        })
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        if let Some(slot) = self.buf.get_mut(self.pos..end) {
            slot.copy_from_slice(bytes);
        }
        self.pos = end;
    }
}

/// An unsolicited neighbour advertisement (RFC 4861 7.2.6) for `target`, Override set,
/// with the target link-layer address option. The kernel fills in the ICMPv6 checksum.
pub fn unsolicited_na(mac: [u8; 6], target: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    let mut w = Writer {
        buf: &mut m,
        pos: 0,
    };
    w.put(&[136, 0, 0, 0]);
    w.put(&[0x20, 0, 0, 0]);
    w.put(&target.octets());
    w.put(&[2, 1]);
    w.put(&mac);
    m
}

/// An AF_PACKET socket bound to one interface, receiving and sending ARP frames.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

fn sockaddr_ll(ifindex: u32, dst: [u8; 6]) -> libc::sockaddr_ll {
    let mut addr = [0u8; 8];
    for (a, d) in addr.iter_mut().zip(dst) {
        *a = d;
    }
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr,
    }
}

impl PacketSocket {
    /// Opens and binds the socket; `nonblocking` for use with a poll loop or `AsyncFd`.
    pub fn open(ifindex: u32, nonblocking: bool) -> io::Result<PacketSocket> {
        let mut ty = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
        if nonblocking {
            ty |= libc::SOCK_NONBLOCK;
        }
        // SAFETY: plain socket(2) call; the result is checked before being wrapped.
        let raw = unsafe { libc::socket(libc::AF_PACKET, ty, i32::from(ETH_P_ARP.to_be())) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = sockaddr_ll(ifindex, [0; 6]);
        // SAFETY: `addr` is a valid sockaddr_ll and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    pub fn send(&self, frame: &[u8], dst: [u8; 6]) -> io::Result<()> {
        let addr = sockaddr_ll(self.ifindex, dst);
        // SAFETY: buffer and address are valid for the duration of the call.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Receives one frame into `buf`; returns its length.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let rc = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// Sends the announcements for one instance's VIPs.
pub struct Announcer {
    mac: [u8; 6],
    arp: Option<PacketSocket>,
    icmp6: Option<(Socket, u32)>,
}

impl Announcer {
    pub fn open(
        ifindex: u32,
        mac: [u8; 6],
        v4: bool,
        v6_src: Option<Ipv6Addr>,
    ) -> io::Result<Announcer> {
        let arp = if v4 {
            Some(PacketSocket::open(ifindex, true)?)
        } else {
            None
        };
        let icmp6 = match v6_src {
            Some(src) => {
                let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
                s.set_nonblocking(true)?;
                s.set_multicast_hops_v6(255)?;
                s.set_unicast_hops_v6(255)?;
                s.set_multicast_if_v6(ifindex)?;
                s.bind(&SocketAddr::V6(SocketAddrV6::new(src, 0, 0, ifindex)).into())?;
                Some((s, ifindex))
            }
            None => None,
        };
        Ok(Announcer { mac, arp, icmp6 })
    }

    pub fn announce_v4(&self, vip: Ipv4Addr) -> io::Result<()> {
        match &self.arp {
            Some(s) => s.send(&Arp::gratuitous(self.mac, vip).encode(), BROADCAST),
            None => Ok(()),
        }
    }

    pub fn announce_v6(&self, vip: Ipv6Addr) -> io::Result<()> {
        match &self.icmp6 {
            Some((s, ifindex)) => {
                let dst = SocketAddr::V6(SocketAddrV6::new(ALL_NODES, 0, 0, *ifindex));
                s.send_to(&unsolicited_na(self.mac, vip), &dst.into())
                    .map(|_| ())
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_roundtrip() {
        let mac = [2, 0, 0, 0, 0, 1];
        let vip = Ipv4Addr::new(192, 0, 2, 100);
        let f = Arp::gratuitous(mac, vip).encode();
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[0..6], &BROADCAST);
        let a = Arp::decode(&f).unwrap();
        assert_eq!(a.op, ARP_REQUEST);
        assert_eq!(a.sender_ip, vip);
        assert_eq!(a.target_ip, vip);
        assert_eq!(a.sender_mac, mac);
        assert_eq!(Arp::decode(&f[..30]), None);
        let mut ip = f;
        ip[13] = 0x00;
        assert_eq!(Arp::decode(&ip), None);
    }

    #[test]
    fn na_layout() {
        let m = unsolicited_na([2, 0, 0, 0, 0, 9], "2001:db8::100".parse().unwrap());
        assert_eq!(m[0], 136);
        assert_eq!(m[4], 0x20);
        assert_eq!(&m[24..26], &[2, 1]);
        assert_eq!(&m[26..], &[2, 0, 0, 0, 0, 9]);
    }
}
