//! Minimal DNS wire format: one question out, answer addresses in. Pure; decoding never
//! panics on hostile input (every read is bounds-checked).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::spec::DnsQueryType;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("invalid query name: {0}")]
    Name(&'static str),
    #[error("answer too short")]
    Short,
    #[error("answer id does not match the query")]
    IdMismatch,
    #[error("not a response")]
    NotResponse,
    #[error("rcode {0}")]
    Rcode(u8),
    #[error("no answer of the requested type")]
    NoAnswer,
    #[error("malformed answer")]
    Malformed,
}

const CLASS_IN: u16 = 1;

fn qtype_code(q: DnsQueryType) -> u16 {
    match q {
        DnsQueryType::A => 1,
        DnsQueryType::Aaaa => 28,
    }
}

/// Builds a standard query with recursion desired.
pub fn encode_query(id: u16, name: &str, qtype: DnsQueryType) -> Result<Vec<u8>, DnsError> {
    let mut out = Vec::with_capacity(18 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&[0; 6]); // AN, NS, AR counts
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(DnsError::Name("empty"));
    }
    let mut wire_len = 1usize;
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(DnsError::Name("empty label"));
        }
        if label.len() > 63 {
            return Err(DnsError::Name("label longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(DnsError::Name("label has invalid characters"));
        }
        wire_len += 1 + label.len();
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    if wire_len > 255 {
        return Err(DnsError::Name("longer than 255 bytes"));
    }
    out.push(0);
    out.extend_from_slice(&qtype_code(qtype).to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DnsError> {
        let b = *self.buf.get(self.pos).ok_or(DnsError::Malformed)?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, DnsError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DnsError> {
        let end = self.pos.checked_add(n).ok_or(DnsError::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(DnsError::Malformed)?;
        self.pos = end;
        Ok(s)
    }
    /// Skips a possibly compressed name; a pointer ends the name in place.
    fn skip_name(&mut self) -> Result<(), DnsError> {
        loop {
            let len = self.u8()?;
            match len & 0xC0 {
                0x00 if len == 0 => return Ok(()),
                0x00 => {
                    self.bytes(len as usize)?;
                }
                0xC0 => {
                    self.u8()?;
                    return Ok(());
                }
                _ => return Err(DnsError::Malformed),
            }
        }
    }
}

/// Checks a response against the query id and returns the addresses of the requested type.
pub fn decode_answer(buf: &[u8], id: u16, qtype: DnsQueryType) -> Result<Vec<IpAddr>, DnsError> {
    if buf.len() < 12 {
        return Err(DnsError::Short);
    }
    let mut r = Reader { buf, pos: 0 };
    if r.u16()? != id {
        return Err(DnsError::IdMismatch);
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::NotResponse);
    }
    let rcode = (flags & 0x000F) as u8;
    if rcode != 0 {
        return Err(DnsError::Rcode(rcode));
    }
    let qd = r.u16()?;
    let an = r.u16()?;
    r.u16()?;
    r.u16()?;
    for _ in 0..qd {
        r.skip_name()?;
        r.bytes(4)?;
    }
    let want = qtype_code(qtype);
    let mut addrs = Vec::new();
    for _ in 0..an {
        r.skip_name()?;
        let rtype = r.u16()?;
        let class = r.u16()?;
        r.bytes(4)?; // TTL
        let rdlen = r.u16()? as usize;
        let rdata = r.bytes(rdlen)?;
        if class != CLASS_IN || rtype != want {
            continue; // e.g. a CNAME before the address
        }
        match (qtype, rdata.len()) {
            (DnsQueryType::A, 4) => {
                let mut o = [0u8; 4];
                o.copy_from_slice(rdata);
                addrs.push(IpAddr::V4(Ipv4Addr::from(o)));
            }
            (DnsQueryType::Aaaa, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(rdata);
                addrs.push(IpAddr::V6(Ipv6Addr::from(o)));
            }
            _ => return Err(DnsError::Malformed),
        }
    }
    if addrs.is_empty() {
        return Err(DnsError::NoAnswer);
    }
    Ok(addrs)
}

/// Builds a response to `query` carrying `addrs` (test servers use it; the names are
/// compressed as pointers to the question).
pub fn encode_response(query: &[u8], rcode: u8, addrs: &[IpAddr]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let mut r = Reader {
        buf: query,
        pos: 12,
    };
    r.skip_name().ok()?;
    let qtype = r.u16().ok()?;
    r.u16().ok()?;
    let question = query.get(12..r.pos)?;
    let mut out = Vec::new();
    out.extend_from_slice(query.get(0..2)?);
    out.extend_from_slice(&(0x8180u16 | u16::from(rcode & 0x0F)).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    let answers: Vec<&IpAddr> = addrs
        .iter()
        .filter(|a| matches!((a, qtype), (IpAddr::V4(_), 1) | (IpAddr::V6(_), 28)))
        .collect();
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(question);
    for a in answers {
        out.extend_from_slice(&[0xC0, 12]);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        match a {
            IpAddr::V4(v4) => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&v6.octets());
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_layout() {
        let q = encode_query(0x1234, "www.example.org.", DnsQueryType::A).unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[4..6], &[0, 1]);
        assert_eq!(&q[12..17], b"\x03www\x07");
        assert_eq!(&q[q.len() - 5..], &[0, 0, 1, 0, 1]);
        let q6 = encode_query(1, "a", DnsQueryType::Aaaa).unwrap();
        assert_eq!(&q6[q6.len() - 4..], &[0, 28, 0, 1]);
    }

    #[test]
    fn bad_names() {
        assert!(encode_query(1, "", DnsQueryType::A).is_err());
        assert!(encode_query(1, "a..b", DnsQueryType::A).is_err());
        assert!(encode_query(1, &"x".repeat(64), DnsQueryType::A).is_err());
        assert!(encode_query(1, "a b", DnsQueryType::A).is_err());
        let long = vec!["abcdefghij"; 30].join(".");
        assert_eq!(
            encode_query(1, &long, DnsQueryType::A),
            Err(DnsError::Name("longer than 255 bytes"))
        );
    }

    #[test]
    fn roundtrip_a_and_aaaa() {
        let q = encode_query(7, "svc.example.org", DnsQueryType::A).unwrap();
        let a: IpAddr = "192.0.2.5".parse().unwrap();
        let b: IpAddr = "2001:db8::5".parse().unwrap();
        let resp = encode_response(&q, 0, &[a, b]).unwrap();
        assert_eq!(decode_answer(&resp, 7, DnsQueryType::A), Ok(vec![a]));
        let q = encode_query(8, "svc.example.org", DnsQueryType::Aaaa).unwrap();
        let resp = encode_response(&q, 0, &[a, b]).unwrap();
        assert_eq!(decode_answer(&resp, 8, DnsQueryType::Aaaa), Ok(vec![b]));
    }

    #[test]
    fn response_errors() {
        let q = encode_query(7, "svc.example.org", DnsQueryType::A).unwrap();
        let a: IpAddr = "192.0.2.5".parse().unwrap();
        let ok = encode_response(&q, 0, &[a]).unwrap();
        assert_eq!(
            decode_answer(&ok, 8, DnsQueryType::A),
            Err(DnsError::IdMismatch)
        );
        assert_eq!(
            decode_answer(&q, 7, DnsQueryType::A),
            Err(DnsError::NotResponse)
        );
        let nx = encode_response(&q, 3, &[]).unwrap();
        assert_eq!(
            decode_answer(&nx, 7, DnsQueryType::A),
            Err(DnsError::Rcode(3))
        );
        let empty = encode_response(&q, 0, &[]).unwrap();
        assert_eq!(
            decode_answer(&empty, 7, DnsQueryType::A),
            Err(DnsError::NoAnswer)
        );
        assert_eq!(
            decode_answer(&ok[..ok.len() - 2], 7, DnsQueryType::A),
            Err(DnsError::Malformed)
        );
        assert_eq!(
            decode_answer(&ok[..5], 7, DnsQueryType::A),
            Err(DnsError::Short)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..300), id in any::<u16>()) {
            let _ = decode_answer(&buf, id, DnsQueryType::A);
            let _ = decode_answer(&buf, id, DnsQueryType::Aaaa);
            let _ = encode_response(&buf, 0, &[]);
        }

        #[test]
        fn truncations_never_panic(cut in 0usize..64) {
            let q = encode_query(9, "a.example.org", DnsQueryType::A).unwrap();
            let resp = encode_response(&q, 0, &["192.0.2.1".parse().unwrap()]).unwrap();
            let end = resp.len().saturating_sub(cut);
            let r = decode_answer(&resp[..end], 9, DnsQueryType::A);
            prop_assert_eq!(r.is_ok(), cut == 0);
        }
    }
}
