//! DNS check: one query over UDP; healthy when the server answers NOERROR with an address of
//! the requested type (and, if configured, the expected one).

use std::net::{IpAddr, SocketAddr};

use crate::dns_wire::{DnsError, decode_answer, encode_query};
use crate::error::ProbeError;
use crate::spec::{DnsProbe, DnsQueryType};

pub(super) struct DnsChecker {
    name: String,
    qtype: DnsQueryType,
    expect: Option<IpAddr>,
}

impl DnsChecker {
    pub(super) fn new(d: &DnsProbe) -> Self {
        Self {
            name: d.name.clone(),
            qtype: d.qtype,
            expect: d.expect,
        }
    }

    pub(super) async fn probe(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<(), ProbeError> {
        let id = fastrand::u16(..);
        let query = encode_query(id, &self.name, self.qtype)?;
        let socket = super::exchange::udp_socket(addr, source).await?;
        socket
            .send(&query)
            .await
            .map_err(|e| ProbeError::from_io(&e))?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = socket
                .recv(&mut buf)
                .await
                .map_err(|e| ProbeError::from_io(&e))?;
            match decode_answer(buf.get(..n).unwrap_or(&[]), id, self.qtype) {
                // A late answer to an earlier query: keep waiting (bounded by the timeout).
                Err(DnsError::IdMismatch) => continue,
                Err(e) => return Err(e.into()),
                Ok(addrs) => {
                    return match self.expect {
                        Some(want) if !addrs.contains(&want) => Err(ProbeError::AnswerMismatch),
                        _ => Ok(()),
                    };
                }
            }
        }
    }
}
