//! Checkers: one probe each, I/O only. A `Prepared` check holds everything that can be built
//! once (compiled patterns, the HTTP client) so a probe does no setup work.

mod dns;
mod exchange;
mod http;
mod tcp;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::error::{ProbeError, SpecError};
use crate::spec::{CheckSpec, Probe};

/// Result of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub result: Result<(), ProbeError>,
    pub latency: Duration,
}

impl ProbeOutcome {
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }
}

enum Kind {
    Tcp,
    Http(Box<http::HttpChecker>),
    TcpExchange(exchange::Exchange),
    Udp(exchange::Exchange),
    Dns(dns::DnsChecker),
}

/// A check ready to probe one address.
pub struct Prepared {
    kind: Kind,
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
}

impl Prepared {
    /// Builds the checker for the real server `target` (the check port, if any, is applied here).
    pub fn new(spec: &CheckSpec, target: SocketAddr) -> Result<Self, SpecError> {
        spec.validate()?;
        let addr = spec.probe_addr(target);
        let timeout = spec.timing.timeout;
        let kind = match &spec.probe {
            Probe::Tcp => Kind::Tcp,
            Probe::Http(h) => Kind::Http(Box::new(http::HttpChecker::new(
                h,
                addr,
                spec.source,
                timeout,
            )?)),
            Probe::TcpExchange(x) => Kind::TcpExchange(exchange::Exchange::new(x)?),
            Probe::Udp(x) => Kind::Udp(exchange::Exchange::new(x)?),
            Probe::Dns(d) => Kind::Dns(dns::DnsChecker::new(d)),
        };
        Ok(Self {
            kind,
            addr,
            source: spec.source,
            timeout,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Size of a probe future of this check (memory per check task).
    #[doc(hidden)]
    pub fn probe_future_size(&self) -> usize {
        std::mem::size_of_val(&self.probe())
    }

    /// Runs one probe, bounded by the check's timeout.
    pub async fn probe(&self) -> ProbeOutcome {
        let start = Instant::now();
        let work = async {
            // The larger futures are boxed so that every check task (thousands of them) is
            // only as big as the plain TCP probe while it sleeps.
            match &self.kind {
                Kind::Tcp => tcp::probe(self.addr, self.source).await,
                Kind::Http(h) => Box::pin(h.probe()).await,
                Kind::TcpExchange(x) => Box::pin(x.probe_tcp(self.addr, self.source)).await,
                Kind::Udp(x) => Box::pin(x.probe_udp(self.addr, self.source)).await,
                Kind::Dns(d) => Box::pin(d.probe(self.addr, self.source)).await,
            }
        };
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(Err(ProbeError::Timeout(_))) | Err(_) => Err(ProbeError::Timeout(self.timeout)),
            Ok(r) => r,
        };
        ProbeOutcome {
            result,
            latency: start.elapsed(),
        }
    }
}

/// Local address to bind for a probe from `source` towards `addr`, if a source is set.
fn bind_addr(source: Option<IpAddr>) -> Option<SocketAddr> {
    source.map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probe_futures_stay_small() {
        let Ok(p) = Prepared::new(&CheckSpec::new(Probe::Tcp), "192.0.2.1:80".parse().unwrap())
        else {
            panic!("valid spec");
        };
        // Thousands of checks sleep with this future inside their task.
        assert!(p.probe_future_size() < 1024, "{}", p.probe_future_size());
    }
}
