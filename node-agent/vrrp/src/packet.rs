//! VRRP advertisement encoding, decoding and validation (RFC 3768 v2, RFC 5798 v3).
//!
//! Decoding never panics: every slice access goes through `get`, and every error is a typed
//! [`DecodeError`] that maps onto a drop-counter label.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// IPv4 multicast group for VRRP.
pub const MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group for VRRP.
pub const MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Required TTL / hop limit of every VRRP packet.
pub const VRRP_TTL: u8 = 255;

const HEADER_LEN: usize = 8;
const V2_AUTH_LEN: usize = 8;
const TYPE_ADVERTISEMENT: u8 = 1;
const AUTH_NONE: u8 = 0;
const AUTH_SIMPLE: u8 = 1;

/// Protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    fn nibble(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// Address family of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
}

/// VRRPv2 authentication. keepalived's `auth_type PASS` is [`Auth::Simple`]: the password
/// truncated to 8 bytes and NUL padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Auth {
    None,
    Simple([u8; 8]),
}

impl Auth {
    /// Builds the keepalived-compatible PASS authentication data from a password.
    pub fn simple(password: &str) -> Auth {
        let mut data = [0u8; 8];
        for (slot, byte) in data.iter_mut().zip(password.as_bytes()) {
            *slot = *byte;
        }
        Auth::Simple(data)
    }
}

/// One decoded (or to-be-encoded) advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2 carries whole seconds on the wire).
    pub interval_cs: u16,
    pub addresses: Vec<IpAddr>,
    /// Always [`Auth::None`] for v3.
    pub auth: Auth,
}

/// Why an encode was refused (configuration errors, never network data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("more than 255 addresses")]
    TooManyAddresses,
    #[error("addresses of mixed families")]
    MixedFamilies,
    #[error("VRRPv2 supports IPv4 only")]
    V2NotIpv4,
    #[error("advertisement interval out of range for this version")]
    Interval,
    #[error("source and destination family differ from the address list")]
    FamilyMismatch,
}

/// Why a received packet was dropped. Doubles as the `reason` label of
/// `vrrp_packets_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    #[error("truncated or malformed packet")]
    Malformed,
    #[error("TTL / hop limit is not 255")]
    Ttl,
    #[error("bad checksum")]
    Checksum,
    #[error("version mismatch")]
    Version,
    #[error("router id mismatch")]
    RouterId,
    #[error("authentication mismatch")]
    Auth,
    #[error("address list mismatch")]
    AddressList,
    #[error("advertisement interval mismatch")]
    Interval,
    #[error("own packet looped back")]
    Own,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::Malformed,
        DropReason::Ttl,
        DropReason::Checksum,
        DropReason::Version,
        DropReason::RouterId,
        DropReason::Auth,
        DropReason::AddressList,
        DropReason::Interval,
        DropReason::Own,
    ];

    /// Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Ttl => "ttl",
            DropReason::Checksum => "checksum",
            DropReason::Version => "version",
            DropReason::RouterId => "router_id",
            DropReason::Auth => "auth",
            DropReason::AddressList => "address_list",
            DropReason::Interval => "interval",
            DropReason::Own => "own",
        }
    }

    pub fn index(self) -> usize {
        match self {
            DropReason::Malformed => 0,
            DropReason::Ttl => 1,
            DropReason::Checksum => 2,
            DropReason::Version => 3,
            DropReason::RouterId => 4,
            DropReason::Auth => 5,
            DropReason::AddressList => 6,
            DropReason::Interval => 7,
            DropReason::Own => 8,
        }
    }
}

/// Internet checksum (RFC 1071) over a sequence of byte chunks; odd chunk boundaries are
/// handled as if the chunks were concatenated.
fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut pending: Option<u8> = None;
    for chunk in chunks {
        for &b in *chunk {
            match pending.take() {
                Some(hi) => sum = sum.wrapping_add(u32::from(u16::from_be_bytes([hi, b]))),
                None => pending = Some(b),
            }
        }
    }
    if let Some(hi) = pending {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([hi, 0])));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    let mut ph = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ph.extend_from_slice(&s.octets());
            ph.extend_from_slice(&d.octets());
            ph.push(0);
            ph.push(IPPROTO_VRRP);
            ph.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (s, d) => {
            ph.extend_from_slice(&to_v6(s).octets());
            ph.extend_from_slice(&to_v6(d).octets());
            ph.extend_from_slice(&(len as u32).to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, IPPROTO_VRRP]);
        }
    }
    ph
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn vrrp_checksum(version: Version, src: IpAddr, dst: IpAddr, msg: &[u8]) -> u16 {
    match version {
        Version::V2 => checksum(&[msg]),
        Version::V3 => {
            let ph = pseudo_header(src, dst, msg.len());
            checksum(&[&ph, msg])
        }
    }
}

impl Advert {
    /// Family of the address list (IPv4 when empty, as a v2 packet would be).
    pub fn family(&self) -> Family {
        self.addresses.first().map(Family::of).unwrap_or(Family::V4)
    }

    /// Encodes the VRRP message (without IP header). `src`/`dst` feed the v3 pseudo-header.
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Result<Vec<u8>, EncodeError> {
        let family = self.family();
        if self.addresses.iter().any(|a| Family::of(a) != family) {
            return Err(EncodeError::MixedFamilies);
        }
        if Family::of(&src) != family || Family::of(&dst) != family {
            return Err(EncodeError::FamilyMismatch);
        }
        let count =
            u8::try_from(self.addresses.len()).map_err(|_| EncodeError::TooManyAddresses)?;
        let mut out = Vec::with_capacity(HEADER_LEN + self.addresses.len() * 16 + V2_AUTH_LEN);
        out.push((self.version.nibble() << 4) | TYPE_ADVERTISEMENT);
        out.push(self.vrid);
        out.push(self.priority);
        out.push(count);
        match self.version {
            Version::V2 => {
                if family != Family::V4 {
                    return Err(EncodeError::V2NotIpv4);
                }
                let secs = self.interval_cs / 100;
                let secs = u8::try_from(secs).map_err(|_| EncodeError::Interval)?;
                if secs == 0 || !self.interval_cs.is_multiple_of(100) {
                    return Err(EncodeError::Interval);
                }
                out.push(match self.auth {
                    Auth::None => AUTH_NONE,
                    Auth::Simple(_) => AUTH_SIMPLE,
                });
                out.push(secs);
            }
            Version::V3 => {
                if self.interval_cs == 0 || self.interval_cs > 0x0fff {
                    return Err(EncodeError::Interval);
                }
                out.extend_from_slice(&self.interval_cs.to_be_bytes());
            }
        }
        out.extend_from_slice(&[0, 0]);
        for a in &self.addresses {
            match a {
                IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
                IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
            }
        }
        if self.version == Version::V2 {
            match self.auth {
                Auth::None => out.extend_from_slice(&[0u8; V2_AUTH_LEN]),
                Auth::Simple(data) => out.extend_from_slice(&data),
            }
        }
        let sum = vrrp_checksum(self.version, src, dst, &out);
        if let Some(slot) = out.get_mut(6..8) {
            slot.copy_from_slice(&sum.to_be_bytes());
        }
        Ok(out)
    }

    /// Decodes a VRRP message (without IP header) of the given family, verifying the
    /// checksum. Semantic checks against an instance are in [`Expect::check`].
    pub fn decode(
        msg: &[u8],
        family: Family,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Advert, DropReason> {
        let b0 = *msg.first().ok_or(DropReason::Malformed)?;
        let version = match b0 >> 4 {
            2 => Version::V2,
            3 => Version::V3,
            _ => return Err(DropReason::Version),
        };
        if b0 & 0x0f != TYPE_ADVERTISEMENT {
            return Err(DropReason::Malformed);
        }
        let header = msg.get(..HEADER_LEN).ok_or(DropReason::Malformed)?;
        let (vrid, priority, count) = match header {
            [_, vrid, prio, count, ..] => (*vrid, *prio, usize::from(*count)),
            _ => return Err(DropReason::Malformed),
        };
        if version == Version::V2 && family != Family::V4 {
            return Err(DropReason::Version);
        }
        let addr_len = family.addr_len();
        let addrs_end = HEADER_LEN + count * addr_len;
        let needed = match version {
            Version::V2 => addrs_end + V2_AUTH_LEN,
            Version::V3 => addrs_end,
        };
        let msg = msg.get(..needed).ok_or(DropReason::Malformed)?;
        if vrrp_checksum(version, src, dst, msg) != 0 {
            return Err(DropReason::Checksum);
        }
        let (interval_cs, auth) = match version {
            Version::V2 => {
                let auth_type = *header.get(4).ok_or(DropReason::Malformed)?;
                let secs = *header.get(5).ok_or(DropReason::Malformed)?;
                let data = msg.get(addrs_end..needed).ok_or(DropReason::Malformed)?;
                let auth = match auth_type {
                    AUTH_NONE => Auth::None,
                    AUTH_SIMPLE => {
                        let mut d = [0u8; 8];
                        d.copy_from_slice(data);
                        Auth::Simple(d)
                    }
                    // Type 2 (AH) was removed from the protocol; treat it as a mismatch.
                    _ => return Err(DropReason::Auth),
                };
                (u16::from(secs) * 100, auth)
            }
            Version::V3 => {
                let hi = *header.get(4).ok_or(DropReason::Malformed)?;
                let lo = *header.get(5).ok_or(DropReason::Malformed)?;
                (u16::from_be_bytes([hi & 0x0f, lo]), Auth::None)
            }
        };
        let raw = msg
            .get(HEADER_LEN..addrs_end)
            .ok_or(DropReason::Malformed)?;
        let addresses = raw
            .chunks_exact(addr_len)
            .map(|c| match family {
                Family::V4 => {
                    let mut o = [0u8; 4];
                    o.copy_from_slice(c);
                    IpAddr::V4(Ipv4Addr::from(o))
                }
                Family::V6 => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(c);
                    IpAddr::V6(Ipv6Addr::from(o))
                }
            })
            .collect();
        Ok(Advert {
            version,
            vrid,
            priority,
            interval_cs,
            addresses,
            auth,
        })
    }
}

/// The IPv4 header fields VRRP cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Meta {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
}

/// Splits a raw IPv4 datagram (as read from a raw socket) into header fields and payload.
pub fn parse_ipv4(datagram: &[u8]) -> Result<(Ipv4Meta, &[u8]), DropReason> {
    let b0 = *datagram.first().ok_or(DropReason::Malformed)?;
    if b0 >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let ihl = usize::from(b0 & 0x0f) * 4;
    if ihl < 20 {
        return Err(DropReason::Malformed);
    }
    let header = datagram.get(..ihl).ok_or(DropReason::Malformed)?;
    let total = match header.get(2..4) {
        Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
        _ => return Err(DropReason::Malformed),
    };
    let ttl = *header.get(8).ok_or(DropReason::Malformed)?;
    let protocol = *header.get(9).ok_or(DropReason::Malformed)?;
    let mut s = [0u8; 4];
    let mut d = [0u8; 4];
    s.copy_from_slice(header.get(12..16).ok_or(DropReason::Malformed)?);
    d.copy_from_slice(header.get(16..20).ok_or(DropReason::Malformed)?);
    // Raw sockets hand over the datagram as received; trust the shorter of the two lengths.
    let end = total.min(datagram.len());
    let payload = datagram.get(ihl..end).ok_or(DropReason::Malformed)?;
    Ok((
        Ipv4Meta {
            src: Ipv4Addr::from(s),
            dst: Ipv4Addr::from(d),
            ttl,
            protocol,
        },
        payload,
    ))
}

/// What an instance expects from its peers' adverts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub version: Version,
    pub vrid: u8,
    pub auth: Auth,
    pub addresses: Vec<IpAddr>,
    pub interval_cs: u16,
}

impl Expect {
    /// Validates a received packet: TTL/hop limit first, then decode (checksum, version),
    /// then router id, authentication, interval (v2 only: v3 adopts the master's) and the
    /// address list (order-insensitive).
    pub fn check(
        &self,
        ttl: u8,
        msg: &[u8],
        family: Family,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Advert, DropReason> {
        if ttl != VRRP_TTL {
            return Err(DropReason::Ttl);
        }
        let advert = Advert::decode(msg, family, src, dst)?;
        if advert.version != self.version {
            return Err(DropReason::Version);
        }
        if advert.vrid != self.vrid {
            return Err(DropReason::RouterId);
        }
        if self.version == Version::V2 && advert.auth != self.auth {
            return Err(DropReason::Auth);
        }
        if self.version == Version::V2 && advert.interval_cs != self.interval_cs {
            return Err(DropReason::Interval);
        }
        let mut got = advert.addresses.clone();
        let mut want = self.addresses.clone();
        got.sort();
        want.sort();
        if got != want {
            return Err(DropReason::AddressList);
        }
        Ok(advert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    fn sample_v2() -> Advert {
        Advert {
            version: Version::V2,
            vrid: 51,
            priority: 100,
            interval_cs: 100,
            addresses: vec![v4([192, 0, 2, 100])],
            auth: Auth::simple("secret"),
        }
    }

    fn sample_v3_v6() -> Advert {
        Advert {
            version: Version::V3,
            vrid: 7,
            priority: 200,
            interval_cs: 10,
            addresses: vec![
                "2001:db8::100".parse().unwrap(),
                "2001:db8::101".parse().unwrap(),
            ],
            auth: Auth::None,
        }
    }

    const SRC: [u8; 4] = [192, 0, 2, 1];

    #[test]
    fn v2_layout_is_keepalived_compatible() {
        let m = sample_v2().encode(v4(SRC), IpAddr::V4(MCAST_V4)).unwrap();
        assert_eq!(m.len(), 8 + 4 + 8);
        assert_eq!(&m[..6], &[0x21, 51, 100, 1, 1, 1]);
        assert_eq!(&m[8..12], &[192, 0, 2, 100]);
        assert_eq!(&m[12..], b"secret\0\0");
        // plain checksum over the message: summing it again yields zero
        assert_eq!(checksum(&[&m]), 0);
    }

    #[test]
    fn password_longer_than_eight_is_truncated() {
        assert_eq!(Auth::simple("0123456789"), Auth::Simple(*b"01234567"));
    }

    #[test]
    fn v3_checksum_covers_pseudo_header() {
        let a = Advert {
            version: Version::V3,
            ..sample_v2()
        };
        let a = Advert {
            auth: Auth::None,
            ..a
        };
        let dst = IpAddr::V4(MCAST_V4);
        let m = a.encode(v4(SRC), dst).unwrap();
        assert_eq!(m.len(), 12);
        assert_eq!(&m[4..6], &[0, 100]);
        assert!(Advert::decode(&m, Family::V4, v4(SRC), dst).is_ok());
        // A different source changes the pseudo-header, so the checksum no longer matches.
        assert_eq!(
            Advert::decode(&m, Family::V4, v4([192, 0, 2, 2]), dst),
            Err(DropReason::Checksum)
        );
    }

    #[test]
    fn roundtrip_v2_v3_v4_v6() {
        let dst4 = IpAddr::V4(MCAST_V4);
        let a = sample_v2();
        let m = a.encode(v4(SRC), dst4).unwrap();
        assert_eq!(Advert::decode(&m, Family::V4, v4(SRC), dst4).unwrap(), a);

        let b = sample_v3_v6();
        let s6: IpAddr = "fe80::1".parse().unwrap();
        let d6 = IpAddr::V6(MCAST_V6);
        let m = b.encode(s6, d6).unwrap();
        assert_eq!(m.len(), 8 + 32);
        assert_eq!(Advert::decode(&m, Family::V6, s6, d6).unwrap(), b);
    }

    #[test]
    fn encode_rejects_bad_configs() {
        let d = IpAddr::V4(MCAST_V4);
        let mut a = sample_v2();
        a.interval_cs = 50;
        assert_eq!(a.encode(v4(SRC), d), Err(EncodeError::Interval));
        let mut a = sample_v3_v6();
        a.version = Version::V2;
        let s6: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(
            a.encode(s6, IpAddr::V6(MCAST_V6)),
            Err(EncodeError::V2NotIpv4)
        );
        let mut a = sample_v3_v6();
        a.interval_cs = 5000;
        assert_eq!(
            a.encode(s6, IpAddr::V6(MCAST_V6)),
            Err(EncodeError::Interval)
        );
        let mut a = sample_v2();
        a.addresses.push("2001:db8::1".parse().unwrap());
        assert_eq!(a.encode(v4(SRC), d), Err(EncodeError::MixedFamilies));
    }

    fn expect_for(a: &Advert) -> Expect {
        Expect {
            version: a.version,
            vrid: a.vrid,
            auth: a.auth,
            addresses: a.addresses.clone(),
            interval_cs: a.interval_cs,
        }
    }

    #[test]
    fn validation_drops_with_reasons() {
        let d = IpAddr::V4(MCAST_V4);
        let a = sample_v2();
        let m = a.encode(v4(SRC), d).unwrap();
        let e = expect_for(&a);
        assert_eq!(e.check(255, &m, Family::V4, v4(SRC), d), Ok(a.clone()));
        assert_eq!(
            e.check(64, &m, Family::V4, v4(SRC), d),
            Err(DropReason::Ttl)
        );
        let mut bad = m.clone();
        bad[2] ^= 1;
        assert_eq!(
            e.check(255, &bad, Family::V4, v4(SRC), d),
            Err(DropReason::Checksum)
        );
        let mut e2 = e.clone();
        e2.vrid = 52;
        assert_eq!(
            e2.check(255, &m, Family::V4, v4(SRC), d),
            Err(DropReason::RouterId)
        );
        let mut e2 = e.clone();
        e2.auth = Auth::simple("other");
        assert_eq!(
            e2.check(255, &m, Family::V4, v4(SRC), d),
            Err(DropReason::Auth)
        );
        let mut e2 = e.clone();
        e2.auth = Auth::None;
        assert_eq!(
            e2.check(255, &m, Family::V4, v4(SRC), d),
            Err(DropReason::Auth)
        );
        let mut e2 = e.clone();
        e2.version = Version::V3;
        assert_eq!(
            e2.check(255, &m, Family::V4, v4(SRC), d),
            Err(DropReason::Version)
        );
        let mut e2 = e.clone();
        e2.addresses = vec![v4([192, 0, 2, 101])];
        assert_eq!(
            e2.check(255, &m, Family::V4, v4(SRC), d),
            Err(DropReason::AddressList)
        );
        let mut e2 = e.clone();
        e2.interval_cs = 200;
        assert_eq!(
            e2.check(255, &m, Family::V4, v4(SRC), d),
            Err(DropReason::Interval)
        );
        let mut badv = m.clone();
        badv[0] = 0x41;
        assert_eq!(
            e.check(255, &badv, Family::V4, v4(SRC), d),
            Err(DropReason::Version)
        );
        assert_eq!(
            e.check(255, &m[..10], Family::V4, v4(SRC), d),
            Err(DropReason::Malformed)
        );
    }

    #[test]
    fn v3_adopts_interval_so_it_is_not_checked() {
        let b = sample_v3_v6();
        let s6: IpAddr = "fe80::1".parse().unwrap();
        let d6 = IpAddr::V6(MCAST_V6);
        let m = b.encode(s6, d6).unwrap();
        let mut e = expect_for(&b);
        e.interval_cs = 100;
        // address order does not matter
        e.addresses.reverse();
        assert!(e.check(255, &m, Family::V6, s6, d6).is_ok());
    }

    #[test]
    fn ipv4_header_parse() {
        let d = IpAddr::V4(MCAST_V4);
        let payload = sample_v2().encode(v4(SRC), d).unwrap();
        let mut dg = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 255, 112, 0, 0];
        dg.extend_from_slice(&SRC);
        dg.extend_from_slice(&MCAST_V4.octets());
        let total = (20 + payload.len()) as u16;
        dg[2..4].copy_from_slice(&total.to_be_bytes());
        dg.extend_from_slice(&payload);
        let (meta, p) = parse_ipv4(&dg).unwrap();
        assert_eq!(meta.ttl, 255);
        assert_eq!(meta.protocol, 112);
        assert_eq!(meta.src, Ipv4Addr::from(SRC));
        assert_eq!(meta.dst, MCAST_V4);
        assert_eq!(p, &payload[..]);
        assert_eq!(parse_ipv4(&dg[..10]), Err(DropReason::Malformed));
        assert_eq!(parse_ipv4(&[0x60]), Err(DropReason::Malformed));
    }
}
