//! HTTP/HTTPS GET check (keepalived HTTP_GET/SSL_GET, ldirectord negotiate).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use md5::{Digest, Md5};
use regex::bytes::Regex;
use reqwest::header::{HOST, HeaderValue};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{ProbeError, SpecError};
use crate::spec::{BodyCheck, HttpProbe, StatusRange, compile, short_text};

/// Most of a body read for matching; health pages are small and a huge one must not cost memory.
const MAX_BODY: usize = 1024 * 1024;

enum Body {
    Ignore,
    Regex(Regex),
    Md5(String),
}

pub(super) struct HttpChecker {
    client: reqwest::Client,
    url: reqwest::Url,
    host: Option<HeaderValue>,
    expected: Vec<StatusRange>,
    body: Body,
}

impl HttpChecker {
    pub(super) fn new(
        h: &HttpProbe,
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Self, SpecError> {
        let scheme = if h.tls.is_some() { "https" } else { "http" };
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A fresh connection per probe, as keepalived does: a pooled connection would hide
            // a server that stopped accepting.
            .pool_max_idle_per_host(0)
            .http1_only()
            .no_proxy();
        if let Some(ip) = source {
            builder = builder.local_address(ip);
        }
        // With a virtual host on HTTPS the URL carries the name (so it is sent as SNI and
        // verified) and resolution is pinned to the real server.
        let named = h
            .host
            .as_deref()
            .filter(|host| h.tls.is_some() && is_dns_name(host));
        let authority = match named {
            Some(host) => {
                builder = builder.resolve(host, addr);
                format!("{host}:{}", addr.port())
            }
            None => addr.to_string(),
        };
        // Always preconfigured: reqwest would otherwise look for a process-wide crypto
        // provider (and panic without one), even for plain HTTP.
        let verify = h.tls.as_ref().is_some_and(|t| t.verify);
        builder = builder.tls_backend_preconfigured(tls_config(verify)?);
        let client = builder
            .build()
            .map_err(|e| SpecError::HttpClient(short_text(&e.to_string(), 120)))?;
        let url = reqwest::Url::parse(&format!("{scheme}://{authority}{}", h.path))
            .map_err(|e| SpecError::Field("path", e.to_string()))?;
        let host = h
            .host
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| SpecError::Field("host", "not a valid header value".into()))?;
        let body = match &h.body {
            BodyCheck::None => Body::Ignore,
            BodyCheck::Regex(re) => Body::Regex(compile(re, "bodyRegex")?),
            BodyCheck::Md5Hex(d) => Body::Md5(d.to_ascii_lowercase()),
        };
        let expected = if h.expected_status.is_empty() {
            vec![StatusRange {
                low: 200,
                high: 299,
            }]
        } else {
            h.expected_status.clone()
        };
        Ok(Self {
            client,
            url,
            host,
            expected,
            body,
        })
    }

    pub(super) async fn probe(&self) -> Result<(), ProbeError> {
        let mut req = self.client.get(self.url.clone());
        if let Some(host) = &self.host {
            req = req.header(HOST, host.clone());
        }
        let mut resp = req.send().await.map_err(classify)?;
        let status = resp.status().as_u16();
        if !self.expected.iter().any(|r| r.contains(status)) {
            return Err(ProbeError::Status(status));
        }
        if matches!(self.body, Body::Ignore) {
            return Ok(());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            let room = MAX_BODY.saturating_sub(body.len());
            body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or(&[]));
            if body.len() >= MAX_BODY {
                break;
            }
        }
        match &self.body {
            Body::Ignore => Ok(()),
            Body::Regex(re) if re.is_match(&body) => Ok(()),
            Body::Regex(_) => Err(ProbeError::BodyMismatch),
            Body::Md5(want) => {
                let got = md5_hex(&body);
                if &got == want {
                    Ok(())
                } else {
                    Err(ProbeError::DigestMismatch(got))
                }
            }
        }
    }
}

pub(crate) fn md5_hex(data: &[u8]) -> String {
    let digest = Md5::digest(data);
    let mut s = String::with_capacity(32);
    for b in digest.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.parse::<IpAddr>().is_err()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Classifies by walking the error chain for typed causes (TLS, I/O), never by message.
fn classify(e: reqwest::Error) -> ProbeError {
    if e.is_timeout() {
        return ProbeError::Timeout(Duration::ZERO);
    }
    let mut io_kind = None;
    if let Some(tls) = find_tls(&e, &mut io_kind, 0) {
        return ProbeError::Tls(short_text(&tls.to_string(), 100));
    }
    io_kind.unwrap_or_else(|| ProbeError::Http(short_text(&e.without_url().to_string(), 100)))
}

/// `io::Error::source()` skips the error it wraps, so wrapped errors are searched explicitly.
fn find_tls<'a>(
    err: &'a (dyn std::error::Error + 'static),
    io_kind: &mut Option<ProbeError>,
    depth: usize,
) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    let mut steps = 0;
    while let Some(e) = cur {
        // Chains are short; the bound only guards against a pathological cycle.
        if depth > 8 || steps > 32 {
            return None;
        }
        steps += 1;
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                let inner: &(dyn std::error::Error + 'static) = inner;
                if let Some(tls) = find_tls(inner, io_kind, depth + 1) {
                    return Some(tls);
                }
            }
            if io_kind.is_none() && io.kind() != std::io::ErrorKind::Other {
                *io_kind = Some(ProbeError::from_io(io));
            }
        }
        cur = e.source();
    }
    None
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS client configurations are built once per process and shared by all checks.
fn tls_config(verify: bool) -> Result<rustls::ClientConfig, SpecError> {
    static VERIFYING: OnceLock<Result<rustls::ClientConfig, SpecError>> = OnceLock::new();
    static INSECURE: OnceLock<Result<rustls::ClientConfig, SpecError>> = OnceLock::new();
    let cell = if verify { &VERIFYING } else { &INSECURE };
    cell.get_or_init(|| build_tls_config(verify)).clone()
}

fn build_tls_config(verify: bool) -> Result<rustls::ClientConfig, SpecError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SpecError::Tls(e.to_string()))?;
    let mut config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(loaded.certs);
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any certificate but still checks handshake signatures, like keepalived SSL_GET
/// without a CA: it proves the server holds the key it presents, not who it is.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_known_vectors() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("www.example.org"));
        assert!(!is_dns_name("192.0.2.1"));
        assert!(!is_dns_name("example.org:8443"));
        assert!(!is_dns_name(""));
    }

    #[test]
    fn tls_configs_build() {
        assert!(tls_config(false).is_ok());
        assert!(tls_config(true).is_ok());
    }
}
