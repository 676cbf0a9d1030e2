//! Error types of the crate.

use std::time::Duration;

/// A check definition that cannot run. The first field names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{0}: {1}")]
    Field(&'static str, String),
    #[error("building the HTTP client failed: {0}")]
    HttpClient(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// An API field that does not parse (the message carries the field path).
    #[error("{0}")]
    Api(String),
}

/// Why one probe failed. `Display` is short: it ends up in the RealServer status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("timed out after {}ms", .0.as_millis())]
    Timeout(Duration),
    #[error("connection refused")]
    Refused,
    #[error("connection reset")]
    Reset,
    #[error("host unreachable")]
    Unreachable,
    #[error("I/O error: {0}")]
    Io(String),
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    #[error("body does not match")]
    BodyMismatch,
    #[error("body digest {0} does not match")]
    DigestMismatch(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("closed before the expected answer")]
    ClosedBeforeExpect,
    #[error("answer does not match")]
    AnswerMismatch,
    #[error("DNS: {0}")]
    Dns(#[from] crate::dns_wire::DnsError),
}

impl ProbeError {
    /// Maps an I/O error by kind (never by message).
    pub fn from_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => ProbeError::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => ProbeError::Reset,
            K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
                ProbeError::Unreachable
            }
            K::TimedOut => ProbeError::Timeout(Duration::ZERO),
            other => ProbeError::Io(format!("{other:?}")),
        }
    }

    /// Short text for status fields and events.
    pub fn short(&self) -> String {
        crate::spec::short_text(&self.to_string(), 128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn io_errors_map_by_kind() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(ProbeError::from_io(&e), ProbeError::Refused);
        let e = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(ProbeError::from_io(&e), ProbeError::Reset);
        let e = io::Error::from(io::ErrorKind::HostUnreachable);
        assert_eq!(ProbeError::from_io(&e), ProbeError::Unreachable);
        let e = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            ProbeError::from_io(&e),
            ProbeError::Io("PermissionDenied".into())
        );
    }

    #[test]
    fn short_is_bounded() {
        let e = ProbeError::Http("x".repeat(1000));
        assert!(e.short().len() <= 128);
        assert_eq!(
            ProbeError::Timeout(Duration::from_millis(1500)).short(),
            "timed out after 1500ms"
        );
    }
}
