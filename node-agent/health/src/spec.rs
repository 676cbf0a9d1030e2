//! What a check is: the probe to run and its timing. Plain data, compared by value so the
//! manager can tell whether a check's parameters changed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::SpecError;

/// Identity of one running check: the service it belongs to and the real server it probes.
/// Two services sharing a real server get two independent checks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckKey {
    /// Caller-chosen service identity, e.g. `namespace/name`.
    pub service: String,
    /// The real server as it appears in IPVS (address and port).
    pub target: SocketAddr,
}

impl CheckKey {
    pub fn new(service: impl Into<String>, target: SocketAddr) -> Self {
        Self {
            service: service.into(),
            target,
        }
    }
}

impl std::fmt::Display for CheckKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.service, self.target)
    }
}

/// State a real server has before its first probe completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InitialState {
    /// In rotation until `fall` failures (keepalived default, ldirectord default).
    #[default]
    Healthy,
    /// Out of rotation until the first successful probe (keepalived `alpha`).
    Unhealthy,
}

/// Timing and thresholds shared by every probe type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Time between probes (keepalived `delay_loop`, ldirectord `checkinterval`).
    pub interval: Duration,
    /// Limit for one probe, connect included (keepalived `connect_timeout`, ldirectord `checktimeout`).
    pub timeout: Duration,
    /// Consecutive successes to become healthy again.
    pub rise: u32,
    /// Consecutive failures to become unhealthy (keepalived `retry`, ldirectord `failurecount`).
    pub fall: u32,
    /// Delay before re-probing after a failure while still healthy (keepalived `delay_before_retry`).
    /// `None` means use `interval`.
    pub retry_delay: Option<Duration>,
    /// Upper bound of the random delay before a check's first probe, so that many checks
    /// started together do not probe in lock-step.
    pub jitter: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
            rise: 1,
            fall: 3,
            retry_delay: None,
            jitter: Duration::from_secs(1),
        }
    }
}

/// An inclusive range of acceptable HTTP status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    pub fn single(code: u16) -> Self {
        Self {
            low: code,
            high: code,
        }
    }
    pub fn contains(&self, code: u16) -> bool {
        self.low <= code && code <= self.high
    }
}

/// How the body of an HTTP answer is judged.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum BodyCheck {
    #[default]
    None,
    /// The body must match this regular expression (ldirectord `request`/`receive`).
    Regex(String),
    /// The lowercase hex MD5 of the body must equal this (keepalived `digest`).
    Md5Hex(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// Verify the server certificate against the system roots. keepalived's SSL_GET does not
    /// verify, so migrated configurations usually turn this off.
    pub verify: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    /// `Some` for HTTPS.
    pub tls: Option<TlsOptions>,
    /// Request path including query, starting with `/`.
    pub path: String,
    /// Host header and TLS server name (keepalived `virtualhost`).
    pub host: Option<String>,
    /// Accepted status codes; empty means 200-299.
    pub expected_status: Vec<StatusRange>,
    pub body: BodyCheck,
}

impl Default for HttpProbe {
    fn default() -> Self {
        Self {
            tls: None,
            path: "/".into(),
            host: None,
            expected_status: Vec::new(),
            body: BodyCheck::None,
        }
    }
}

/// Send some bytes (possibly none) and wait for an answer matching a pattern; covers
/// banner protocols (SMTP `220`, Redis `PING`/`+PONG`, MySQL greeting).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExchangeProbe {
    pub send: Vec<u8>,
    /// Regular expression over the received bytes; `None` accepts any answer
    /// (for TCP: any data; for UDP: any datagram).
    pub expect: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsQueryType {
    A,
    Aaaa,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsProbe {
    /// Name to resolve, e.g. `www.example.org`.
    pub name: String,
    pub qtype: DnsQueryType,
    /// If set, the answer section must contain this address.
    pub expect: Option<IpAddr>,
}

/// The kinds of probe. Deliberately no "run a command" variant: checks come from API
/// objects, and running programs on directors from them would be a privilege escalation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// TCP connect (keepalived `TCP_CHECK`, ldirectord `connect`).
    Tcp,
    /// HTTP or HTTPS GET (keepalived `HTTP_GET`/`SSL_GET`, ldirectord `negotiate`).
    Http(HttpProbe),
    /// TCP send/expect.
    TcpExchange(ExchangeProbe),
    /// UDP send/expect.
    Udp(ExchangeProbe),
    /// DNS query over UDP (keepalived `DNS_CHECK`, ldirectord `service = dns`).
    Dns(DnsProbe),
}

impl Probe {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Probe::Tcp => "tcp",
            Probe::Http(h) if h.tls.is_some() => "https",
            Probe::Http(_) => "http",
            Probe::TcpExchange(_) => "tcp-exchange",
            Probe::Udp(_) => "udp",
            Probe::Dns(_) => "dns",
        }
    }
}

/// A complete check definition for one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub probe: Probe,
    pub timing: Timing,
    /// Probe this port instead of the real server's port (keepalived `connect_port`).
    pub check_port: Option<u16>,
    /// Source address for probes (keepalived `bindto`).
    pub source: Option<IpAddr>,
    pub initial: InitialState,
}

impl CheckSpec {
    pub fn new(probe: Probe) -> Self {
        Self {
            probe,
            timing: Timing::default(),
            check_port: None,
            source: None,
            initial: InitialState::default(),
        }
    }

    /// Address the probe connects to for a real server at `target`.
    pub fn probe_addr(&self, target: SocketAddr) -> SocketAddr {
        SocketAddr::new(target.ip(), self.check_port.unwrap_or(target.port()))
    }

    /// Rejects definitions that cannot run; the message names the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        let t = &self.timing;
        if t.interval.is_zero() {
            return Err(SpecError::Field("interval", "must be positive".into()));
        }
        if t.timeout.is_zero() {
            return Err(SpecError::Field("timeout", "must be positive".into()));
        }
        if t.rise == 0 {
            return Err(SpecError::Field("rise", "must be at least 1".into()));
        }
        if t.fall == 0 {
            return Err(SpecError::Field("fall", "must be at least 1".into()));
        }
        if t.retry_delay.is_some_and(|d| d.is_zero()) {
            return Err(SpecError::Field("retryDelay", "must be positive".into()));
        }
        if self.check_port == Some(0) {
            return Err(SpecError::Field("port", "must not be 0".into()));
        }
        match &self.probe {
            Probe::Tcp => {}
            Probe::Http(h) => {
                if !h.path.starts_with('/') {
                    return Err(SpecError::Field("path", "must start with '/'".into()));
                }
                if h.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(SpecError::Field(
                        "path",
                        "must not contain whitespace".into(),
                    ));
                }
                if let Some(host) = &h.host
                    && (host.is_empty() || !host.chars().all(valid_host_char))
                {
                    return Err(SpecError::Field("host", "not a valid host name".into()));
                }
                for r in &h.expected_status {
                    if r.low > r.high || r.low < 100 || r.high > 599 {
                        return Err(SpecError::Field(
                            "expectedStatus",
                            format!("bad range {}-{}", r.low, r.high),
                        ));
                    }
                }
                match &h.body {
                    BodyCheck::None => {}
                    BodyCheck::Regex(re) => {
                        compile(re, "bodyRegex")?;
                    }
                    BodyCheck::Md5Hex(d) => {
                        if d.len() != 32 || !d.chars().all(|c| c.is_ascii_hexdigit()) {
                            return Err(SpecError::Field("digest", "must be 32 hex digits".into()));
                        }
                    }
                }
            }
            Probe::TcpExchange(x) | Probe::Udp(x) => {
                if let Some(re) = &x.expect {
                    compile(re, "expect")?;
                }
            }
            Probe::Dns(d) => {
                crate::dns_wire::encode_query(0, &d.name, d.qtype)
                    .map_err(|e| SpecError::Field("name", e.to_string()))?;
                match (d.qtype, d.expect) {
                    (DnsQueryType::A, Some(IpAddr::V6(_)))
                    | (DnsQueryType::Aaaa, Some(IpAddr::V4(_))) => {
                        return Err(SpecError::Field(
                            "expect",
                            "address family does not match the query type".into(),
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn valid_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']' | '_')
}

pub(crate) fn compile(re: &str, field: &'static str) -> Result<regex::bytes::Regex, SpecError> {
    regex::bytes::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| SpecError::Field(field, short_text(&e.to_string(), 120)))
}

/// Cuts a message to at most `max` bytes on a char boundary; status fields stay small.
pub(crate) fn short_text(s: &str, max: usize) -> String {
    let first_line = s.lines().next().unwrap_or("");
    if first_line.len() <= max {
        return first_line.to_string();
    }
    let mut end = max;
    while end > 0 && !first_line.is_char_boundary(end) {
        end -= 1;
    }
    first_line.get(..end).unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(h: HttpProbe) -> CheckSpec {
        CheckSpec::new(Probe::Http(h))
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(CheckSpec::new(Probe::Tcp).validate(), Ok(()));
        assert_eq!(http(HttpProbe::default()).validate(), Ok(()));
    }

    #[test]
    fn zero_thresholds_are_rejected_by_field() {
        let mut s = CheckSpec::new(Probe::Tcp);
        s.timing.fall = 0;
        assert_eq!(
            s.validate(),
            Err(SpecError::Field("fall", "must be at least 1".into()))
        );
        let mut s = CheckSpec::new(Probe::Tcp);
        s.timing.rise = 0;
        assert!(matches!(s.validate(), Err(SpecError::Field("rise", _))));
        let mut s = CheckSpec::new(Probe::Tcp);
        s.timing.interval = Duration::ZERO;
        assert!(matches!(s.validate(), Err(SpecError::Field("interval", _))));
        let mut s = CheckSpec::new(Probe::Tcp);
        s.check_port = Some(0);
        assert!(matches!(s.validate(), Err(SpecError::Field("port", _))));
    }

    #[test]
    fn http_fields_are_checked() {
        let bad_path = HttpProbe {
            path: "health".into(),
            ..Default::default()
        };
        assert!(matches!(
            http(bad_path).validate(),
            Err(SpecError::Field("path", _))
        ));
        let bad_host = HttpProbe {
            host: Some("a b".into()),
            ..Default::default()
        };
        assert!(matches!(
            http(bad_host).validate(),
            Err(SpecError::Field("host", _))
        ));
        let bad_re = HttpProbe {
            body: BodyCheck::Regex("(".into()),
            ..Default::default()
        };
        assert!(matches!(
            http(bad_re).validate(),
            Err(SpecError::Field("bodyRegex", _))
        ));
        let bad_digest = HttpProbe {
            body: BodyCheck::Md5Hex("xyz".into()),
            ..Default::default()
        };
        assert!(matches!(
            http(bad_digest).validate(),
            Err(SpecError::Field("digest", _))
        ));
        let bad_range = HttpProbe {
            expected_status: vec![StatusRange {
                low: 300,
                high: 200,
            }],
            ..Default::default()
        };
        assert!(matches!(
            http(bad_range).validate(),
            Err(SpecError::Field("expectedStatus", _))
        ));
    }

    #[test]
    fn dns_and_udp_are_checked() {
        let s = CheckSpec::new(Probe::Dns(DnsProbe {
            name: "a..b".into(),
            qtype: DnsQueryType::A,
            expect: None,
        }));
        assert!(s.validate().is_err());
        let s = CheckSpec::new(Probe::Dns(DnsProbe {
            name: "www.example.org".into(),
            qtype: DnsQueryType::A,
            expect: Some("2001:db8::1".parse().unwrap()),
        }));
        assert!(matches!(s.validate(), Err(SpecError::Field("expect", _))));
        // An empty datagram is a valid UDP payload.
        let s = CheckSpec::new(Probe::Udp(ExchangeProbe::default()));
        assert_eq!(s.validate(), Ok(()));
        let s = CheckSpec::new(Probe::Udp(ExchangeProbe {
            send: b"x".to_vec(),
            expect: Some("(".into()),
        }));
        assert!(matches!(s.validate(), Err(SpecError::Field("expect", _))));
    }

    #[test]
    fn check_port_overrides_target_port() {
        let mut s = CheckSpec::new(Probe::Tcp);
        let t: SocketAddr = "192.0.2.10:80".parse().unwrap();
        assert_eq!(s.probe_addr(t), t);
        s.check_port = Some(8080);
        assert_eq!(s.probe_addr(t), "192.0.2.10:8080".parse().unwrap());
    }

    #[test]
    fn short_text_cuts_on_char_boundary() {
        assert_eq!(short_text("héllo", 2), "h");
        assert_eq!(short_text("abc\ndef", 10), "abc");
        assert_eq!(short_text("abc", 3), "abc");
    }

    #[test]
    fn status_range_contains() {
        let r = StatusRange {
            low: 200,
            high: 299,
        };
        assert!(r.contains(200) && r.contains(299) && !r.contains(300));
        assert!(StatusRange::single(204).contains(204));
    }
}
