//! Controllable servers on loopback for checker and manager tests.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::task::JoinHandle;

/// How the HTTP server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answer with this status and body.
    Answer(u16, String),
    /// Accept, read the request, never answer.
    Hang,
    /// No listener: connections are refused.
    Refuse,
    /// Alternate between 200 and 500 on each request.
    Alternate,
}

#[derive(Default)]
pub struct Seen {
    pub hosts: Vec<String>,
    pub peers: Vec<SocketAddr>,
    pub requests: usize,
}

struct State {
    mode: Mode,
    seen: Seen,
}

/// A tiny HTTP/1.1 server (optionally TLS) whose behaviour tests switch at run time.
pub struct HttpServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    accept: Option<JoinHandle<()>>,
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
}

impl HttpServer {
    pub async fn start(ip: &str, mode: Mode) -> Result<Self> {
        Self::start_inner(ip, mode, None).await
    }

    pub async fn start_tls(ip: &str, mode: Mode, cert: &SelfSigned) -> Result<Self> {
        Self::start_inner(ip, mode, Some(cert.acceptor()?)).await
    }

    async fn start_inner(
        ip: &str,
        mode: Mode,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Self> {
        let ip: IpAddr = ip.parse()?;
        let listener = listen(SocketAddr::new(ip, 0))?;
        let addr = listener.local_addr()?;
        let mut s = Self {
            addr,
            state: Arc::new(Mutex::new(State {
                mode: Mode::Refuse,
                seen: Seen::default(),
            })),
            tls,
            accept: None,
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: Arc::new(AtomicUsize::new(0)),
        };
        s.accept = Some(s.spawn_accept(listener));
        s.set_mode(mode).await?;
        Ok(s)
    }

    fn spawn_accept(&self, listener: TcpListener) -> JoinHandle<()> {
        let state = self.state.clone();
        let tls = self.tls.clone();
        let in_flight = self.in_flight.clone();
        let max_in_flight = self.max_in_flight.clone();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let state = state.clone();
                let tls = tls.clone();
                let in_flight = in_flight.clone();
                let max_in_flight = max_in_flight.clone();
                tokio::spawn(async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max_in_flight.fetch_max(now, Ordering::SeqCst);
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve(s, peer, state).await;
                            }
                        }
                        None => serve(stream, peer, state).await,
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        })
    }

    /// Switches behaviour; `Refuse` closes the listener, leaving it re-opens the same port.
    pub async fn set_mode(&mut self, mode: Mode) -> Result<()> {
        let refuse = mode == Mode::Refuse;
        let was_refusing = self.accept.as_ref().is_none_or(|h| h.is_finished());
        self.state
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .mode = mode;
        if refuse {
            if let Some(h) = self.accept.take() {
                h.abort();
                // Wait until the listener is really closed, or connects would still succeed.
                let _ = h.await;
            }
        } else if was_refusing {
            let listener = listen(self.addr)?;
            self.accept = Some(self.spawn_accept(listener));
        }
        Ok(())
    }

    pub fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        let g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&g.seen)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(h) = self.accept.take() {
            h.abort();
        }
    }
}

fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr).with_context(|| format!("bind {addr}"))?;
    Ok(socket.listen(1024)?)
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    peer: SocketAddr,
    state: Arc<Mutex<State>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 65536 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let host = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let mode = {
        let mut g = state.lock().unwrap_or_else(|p| p.into_inner());
        g.seen.hosts.push(host);
        g.seen.peers.push(peer);
        g.seen.requests += 1;
        let n = g.seen.requests;
        match &g.mode {
            Mode::Alternate if n.is_multiple_of(2) => Mode::Answer(500, "no".into()),
            Mode::Alternate => Mode::Answer(200, "ok".into()),
            m => m.clone(),
        }
    };
    match mode {
        Mode::Answer(status, body) => {
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        }
        Mode::Hang => {
            // Hold the connection until the client gives up.
            let _ = s.read(&mut chunk).await;
        }
        Mode::Refuse | Mode::Alternate => {}
    }
}

/// A self-signed certificate for a DNS name, and a TLS acceptor using it.
pub struct SelfSigned {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl SelfSigned {
    pub fn new(name: &str) -> Result<Self> {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()])?;
        Ok(Self {
            cert_der: ck.cert.der().to_vec(),
            key_der: ck.signing_key.serialize_der(),
        })
    }

    fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// A TCP server that writes a banner, then answers `PING` lines with `+PONG`.
pub async fn banner_server(banner: &'static [u8]) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = listen("127.0.0.1:0".parse()?)?;
    let addr = listener.local_addr()?;
    let h = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !banner.is_empty() && s.write_all(banner).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    if buf[..n].starts_with(b"PING") && s.write_all(b"+PONG\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, h))
}

/// A UDP server answering each datagram with `f(request)` (no answer when `None`).
pub async fn udp_server<F>(f: F) -> Result<(SocketAddr, JoinHandle<()>)>
where
    F: Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
{
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let h = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            if let Some(resp) = f(&buf[..n]) {
                let _ = socket.send_to(&resp, peer).await;
            }
        }
    });
    Ok((addr, h))
}

/// A UDP port with nothing listening (bound, then closed).
pub async fn closed_udp_port() -> Result<SocketAddr> {
    let s = UdpSocket::bind("127.0.0.1:0").await?;
    Ok(s.local_addr()?)
}

/// Polls `f` until it returns `Some`, or fails after `deadline`.
pub async fn poll_until<T>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= end {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
