//! Checkers against real servers on loopback: refusing, hanging, wrong status, wrong body,
//! self-signed TLS, banners, UDP and DNS.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use kube_lvs_health::ProbeError;
use kube_lvs_health::checker::Prepared;
use kube_lvs_health::dns_wire;
use kube_lvs_health::spec::{
    BodyCheck, CheckSpec, DnsProbe, DnsQueryType, ExchangeProbe, HttpProbe, Probe, StatusRange,
    TlsOptions,
};
use support::{HttpServer, Mode, SelfSigned};

fn spec(probe: Probe) -> CheckSpec {
    let mut s = CheckSpec::new(probe);
    s.timing.timeout = Duration::from_millis(500);
    s
}

async fn probe(s: &CheckSpec, target: SocketAddr) -> Result<Result<(), ProbeError>> {
    Ok(Prepared::new(s, target)?.probe().await.result)
}

#[tokio::test]
async fn tcp_connect_follows_the_listener() -> Result<()> {
    let mut srv = HttpServer::start("127.0.0.1", Mode::Answer(200, "ok".into())).await?;
    let s = spec(Probe::Tcp);
    assert_eq!(probe(&s, srv.addr).await?, Ok(()));
    srv.set_mode(Mode::Refuse).await?;
    assert_eq!(probe(&s, srv.addr).await?, Err(ProbeError::Refused));
    srv.set_mode(Mode::Answer(200, "ok".into())).await?;
    assert_eq!(probe(&s, srv.addr).await?, Ok(()));
    Ok(())
}

#[tokio::test]
async fn tcp_check_port_overrides_the_real_server_port() -> Result<()> {
    let srv = HttpServer::start("127.0.0.1", Mode::Answer(200, "ok".into())).await?;
    let mut s = spec(Probe::Tcp);
    s.check_port = Some(srv.addr.port());
    // The real server's own port (1) is closed; the check port is open.
    assert_eq!(probe(&s, "127.0.0.1:1".parse()?).await?, Ok(()));
    Ok(())
}

#[tokio::test]
async fn http_status_body_and_digest() -> Result<()> {
    let mut srv = HttpServer::start("127.0.0.1", Mode::Answer(200, "service ready".into())).await?;
    let plain = spec(Probe::Http(HttpProbe::default()));
    assert_eq!(probe(&plain, srv.addr).await?, Ok(()));

    let regex = spec(Probe::Http(HttpProbe {
        body: BodyCheck::Regex("ready$".into()),
        ..Default::default()
    }));
    assert_eq!(probe(&regex, srv.addr).await?, Ok(()));
    let digest_ok = spec(Probe::Http(HttpProbe {
        body: BodyCheck::Md5Hex(md5_of("service ready")),
        ..Default::default()
    }));
    assert_eq!(probe(&digest_ok, srv.addr).await?, Ok(()));

    srv.set_mode(Mode::Answer(200, "maintenance".into()))
        .await?;
    assert_eq!(probe(&plain, srv.addr).await?, Ok(()), "body not checked");
    assert_eq!(
        probe(&regex, srv.addr).await?,
        Err(ProbeError::BodyMismatch)
    );
    assert_eq!(
        probe(&digest_ok, srv.addr).await?,
        Err(ProbeError::DigestMismatch(md5_of("maintenance")))
    );

    srv.set_mode(Mode::Answer(500, "service ready".into()))
        .await?;
    assert_eq!(probe(&plain, srv.addr).await?, Err(ProbeError::Status(500)));
    let accept_500 = spec(Probe::Http(HttpProbe {
        expected_status: vec![StatusRange::single(500)],
        ..Default::default()
    }));
    assert_eq!(probe(&accept_500, srv.addr).await?, Ok(()));

    srv.set_mode(Mode::Refuse).await?;
    assert_eq!(probe(&plain, srv.addr).await?, Err(ProbeError::Refused));
    Ok(())
}

fn md5_of(s: &str) -> String {
    use md5::Digest;
    md5::Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn http_sends_virtual_host_and_path() -> Result<()> {
    let srv = HttpServer::start("127.0.0.1", Mode::Answer(200, "ok".into())).await?;
    let s = spec(Probe::Http(HttpProbe {
        path: "/healthz?full=1".into(),
        host: Some("www.example.org".into()),
        ..Default::default()
    }));
    assert_eq!(probe(&s, srv.addr).await?, Ok(()));
    let hosts = srv.seen(|s| s.hosts.clone());
    assert_eq!(hosts, vec!["www.example.org".to_string()]);
    Ok(())
}

#[tokio::test]
async fn http_hang_times_out_within_bound() -> Result<()> {
    let srv = HttpServer::start("127.0.0.1", Mode::Hang).await?;
    let s = spec(Probe::Http(HttpProbe::default()));
    let out = Prepared::new(&s, srv.addr)?.probe().await;
    assert_eq!(
        out.result,
        Err(ProbeError::Timeout(Duration::from_millis(500)))
    );
    assert!(
        out.latency >= Duration::from_millis(450),
        "{:?}",
        out.latency
    );
    assert!(out.latency < Duration::from_secs(2), "{:?}", out.latency);
    Ok(())
}

#[tokio::test]
async fn https_self_signed_with_and_without_verification() -> Result<()> {
    let cert = SelfSigned::new("checks.example.org")?;
    let srv = HttpServer::start_tls("127.0.0.1", Mode::Answer(200, "tls ok".into()), &cert).await?;
    let insecure = spec(Probe::Http(HttpProbe {
        tls: Some(TlsOptions { verify: false }),
        host: Some("checks.example.org".into()),
        body: BodyCheck::Regex("tls ok".into()),
        ..Default::default()
    }));
    assert_eq!(probe(&insecure, srv.addr).await?, Ok(()));
    assert_eq!(
        srv.seen(|s| s.hosts.clone()),
        vec!["checks.example.org".to_string()]
    );

    let verifying = spec(Probe::Http(HttpProbe {
        tls: Some(TlsOptions { verify: true }),
        host: Some("checks.example.org".into()),
        ..Default::default()
    }));
    match probe(&verifying, srv.addr).await? {
        Err(ProbeError::Tls(msg)) => assert!(!msg.is_empty()),
        other => panic!("self-signed certificate accepted with verification on: {other:?}"),
    }

    // Plain HTTP against a TLS port fails cleanly.
    let plain = spec(Probe::Http(HttpProbe::default()));
    assert!(probe(&plain, srv.addr).await?.is_err());
    Ok(())
}

#[tokio::test]
async fn source_address_is_used() -> Result<()> {
    let srv = HttpServer::start("127.0.0.1", Mode::Answer(200, "ok".into())).await?;
    let mut s = spec(Probe::Http(HttpProbe::default()));
    s.source = Some("127.0.0.2".parse()?);
    assert_eq!(probe(&s, srv.addr).await?, Ok(()));
    let mut t = spec(Probe::Tcp);
    t.source = Some("127.0.0.3".parse()?);
    assert_eq!(probe(&t, srv.addr).await?, Ok(()));
    let peers = srv.seen(|s| {
        s.peers
            .iter()
            .map(|p| p.ip().to_string())
            .collect::<Vec<_>>()
    });
    assert_eq!(peers.first().map(String::as_str), Some("127.0.0.2"));
    Ok(())
}

#[tokio::test]
async fn tcp_exchange_banner_and_ping() -> Result<()> {
    let (smtp, _h1) = support::banner_server(b"220 mail.example.org ESMTP\r\n").await?;
    let banner = spec(Probe::TcpExchange(ExchangeProbe {
        send: Vec::new(),
        expect: Some("^220 ".into()),
    }));
    assert_eq!(probe(&banner, smtp).await?, Ok(()));
    let wrong = spec(Probe::TcpExchange(ExchangeProbe {
        send: Vec::new(),
        expect: Some("^554 ".into()),
    }));
    assert_eq!(
        probe(&wrong, smtp).await?,
        Err(ProbeError::Timeout(Duration::from_millis(500))),
        "a banner that never matches ends at the timeout"
    );

    let (redis, _h2) = support::banner_server(b"").await?;
    let ping = spec(Probe::TcpExchange(ExchangeProbe {
        send: b"PING\r\n".to_vec(),
        expect: Some(r"\+PONG".into()),
    }));
    assert_eq!(probe(&ping, redis).await?, Ok(()));
    Ok(())
}

#[tokio::test]
async fn udp_send_expect() -> Result<()> {
    let (echo, _h) =
        support::udp_server(|req| (req == b"status").then(|| b"status: up".to_vec())).await?;
    let good = spec(Probe::Udp(ExchangeProbe {
        send: b"status".to_vec(),
        expect: Some("up$".into()),
    }));
    assert_eq!(probe(&good, echo).await?, Ok(()));
    let silent = spec(Probe::Udp(ExchangeProbe {
        send: b"other".to_vec(),
        expect: None,
    }));
    assert_eq!(
        probe(&silent, echo).await?,
        Err(ProbeError::Timeout(Duration::from_millis(500)))
    );
    let closed = support::closed_udp_port().await?;
    assert_eq!(probe(&good, closed).await?, Err(ProbeError::Refused));
    Ok(())
}

#[tokio::test]
async fn dns_query_answers() -> Result<()> {
    let (dns, _h) = support::udp_server(|q| {
        let name_is_known = q.windows(5).any(|w| w == b"\x03www\x07");
        let rcode = if name_is_known { 0 } else { 3 };
        dns_wire::encode_response(
            q,
            rcode,
            &["192.0.2.80".parse().ok()?, "2001:db8::80".parse().ok()?],
        )
    })
    .await?;
    let a = |name: &str, qtype, expect: Option<&str>| {
        spec(Probe::Dns(DnsProbe {
            name: name.into(),
            qtype,
            expect: expect.and_then(|e| e.parse().ok()),
        }))
    };
    assert_eq!(
        probe(&a("www.example.org", DnsQueryType::A, None), dns).await?,
        Ok(())
    );
    assert_eq!(
        probe(
            &a("www.example.org", DnsQueryType::Aaaa, Some("2001:db8::80")),
            dns
        )
        .await?,
        Ok(())
    );
    assert_eq!(
        probe(
            &a("www.example.org", DnsQueryType::A, Some("192.0.2.81")),
            dns
        )
        .await?,
        Err(ProbeError::AnswerMismatch)
    );
    assert_eq!(
        probe(&a("ftp.example.org", DnsQueryType::A, None), dns).await?,
        Err(ProbeError::Dns(dns_wire::DnsError::Rcode(3)))
    );
    Ok(())
}
