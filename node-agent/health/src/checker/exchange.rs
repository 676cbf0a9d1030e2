//! Send/expect checks over TCP (banners, PING/PONG) and UDP (one datagram each way).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use regex::bytes::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use crate::error::{ProbeError, SpecError};
use crate::spec::{ExchangeProbe, compile};

/// Most a TCP answer is read before giving up on a match; banners are short.
const MAX_ANSWER: usize = 64 * 1024;

pub(super) struct Exchange {
    send: Vec<u8>,
    expect: Option<Regex>,
}

impl Exchange {
    pub(super) fn new(x: &ExchangeProbe) -> Result<Self, SpecError> {
        let expect = x
            .expect
            .as_deref()
            .map(|re| compile(re, "expect"))
            .transpose()?;
        Ok(Self {
            send: x.send.clone(),
            expect,
        })
    }

    fn matches(&self, answer: &[u8]) -> bool {
        match &self.expect {
            Some(re) => re.is_match(answer),
            None => !answer.is_empty(),
        }
    }

    pub(super) async fn probe_tcp(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<(), ProbeError> {
        let mut stream = super::tcp::connect(addr, source).await?;
        if !self.send.is_empty() {
            stream
                .write_all(&self.send)
                .await
                .map_err(|e| ProbeError::from_io(&e))?;
        }
        let mut answer = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| ProbeError::from_io(&e))?;
            if n == 0 {
                return Err(ProbeError::ClosedBeforeExpect);
            }
            answer.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
            if self.matches(&answer) {
                return Ok(());
            }
            if answer.len() >= MAX_ANSWER {
                return Err(ProbeError::AnswerMismatch);
            }
        }
    }

    pub(super) async fn probe_udp(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<(), ProbeError> {
        let socket = udp_socket(addr, source).await?;
        socket
            .send(&self.send)
            .await
            .map_err(|e| ProbeError::from_io(&e))?;
        let mut buf = vec![0u8; 65536];
        // A connected UDP socket reports ICMP port unreachable as ConnectionRefused.
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| ProbeError::from_io(&e))?;
        if self.matches(buf.get(..n).unwrap_or(&[])) || (self.expect.is_none() && n == 0) {
            Ok(())
        } else {
            Err(ProbeError::AnswerMismatch)
        }
    }
}

/// A UDP socket connected to `addr`, so only its answers (and ICMP errors) arrive.
pub(super) async fn udp_socket(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<UdpSocket, ProbeError> {
    let local = super::bind_addr(source).unwrap_or(match addr {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    });
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| ProbeError::from_io(&e))?;
    socket
        .connect(addr)
        .await
        .map_err(|e| ProbeError::from_io(&e))?;
    Ok(socket)
}
