//! From the API's `spec.healthCheck` to a `CheckSpec`. Pure; the node-agent calls it for every
//! (service, real server) pair and hands the result to `Manager::update`.

use kube_lvs_crds::v1alpha1 as api;

use crate::error::SpecError;
use crate::spec::{
    BodyCheck, CheckSpec, DnsProbe, DnsQueryType, ExchangeProbe, HttpProbe, InitialState, Probe,
    StatusRange, Timing, TlsOptions,
};

/// `Ok(None)` for type `None` (always healthy: no check runs).
pub fn check_spec(hc: &api::HealthCheck) -> Result<Option<CheckSpec>, SpecError> {
    let probe = match hc.check_type {
        api::HealthCheckType::None => return Ok(None),
        api::HealthCheckType::Tcp => Probe::Tcp,
        api::HealthCheckType::Http | api::HealthCheckType::Https => {
            let http = hc.http_or_default();
            let body = match (&http.body_match, &http.body_digest) {
                (Some(_), Some(_)) => {
                    return Err(SpecError::Field(
                        "spec.healthCheck.http",
                        "bodyMatch and bodyDigest are mutually exclusive".into(),
                    ));
                }
                (Some(re), None) => BodyCheck::Regex(re.clone()),
                (None, Some(d)) => BodyCheck::Md5Hex(d.to_ascii_lowercase()),
                (None, None) => BodyCheck::None,
            };
            Probe::Http(HttpProbe {
                tls: (hc.check_type == api::HealthCheckType::Https).then_some(TlsOptions {
                    verify: http.tls_verify,
                }),
                path: http.path.clone(),
                host: http.host.clone(),
                expected_status: http
                    .expected_status
                    .iter()
                    .map(|c| StatusRange::single(*c))
                    .collect(),
                body,
            })
        }
        api::HealthCheckType::TcpExpect | api::HealthCheckType::UdpExpect => {
            let Some(x) = &hc.expect else {
                return Err(SpecError::Field(
                    "spec.healthCheck.expect",
                    "required for TCPExpect and UDPExpect".into(),
                ));
            };
            let exchange = ExchangeProbe {
                send: x.send.clone().unwrap_or_default().into_bytes(),
                expect: Some(x.expect.clone()),
            };
            if hc.check_type == api::HealthCheckType::TcpExpect {
                Probe::TcpExchange(exchange)
            } else {
                Probe::Udp(exchange)
            }
        }
        api::HealthCheckType::Dns => {
            let Some(d) = &hc.dns else {
                return Err(SpecError::Field(
                    "spec.healthCheck.dns",
                    "required for DNS".into(),
                ));
            };
            Probe::Dns(DnsProbe {
                name: d.name.clone(),
                qtype: match d.record_type {
                    api::DnsRecordType::A => DnsQueryType::A,
                    api::DnsRecordType::Aaaa => DnsQueryType::Aaaa,
                },
                expect: None,
            })
        }
    };
    let api_err = |e: api::SpecError| SpecError::Api(e.to_string());
    let interval = hc.interval().map_err(api_err)?;
    let timing = Timing {
        interval,
        timeout: hc.timeout().map_err(api_err)?,
        rise: hc.rise,
        fall: hc.fall,
        retry_delay: match hc.retry_delay {
            Some(_) => Some(hc.retry_delay().map_err(api_err)?),
            None => None,
        },
        jitter: hc.start_jitter().map_err(api_err)?,
    };
    let source = match &hc.source_address {
        Some(a) => Some(
            a.parse()
                .map_err(|e| SpecError::Field("spec.healthCheck.sourceAddress", e.to_string()))?,
        ),
        None => None,
    };
    let spec = CheckSpec {
        probe,
        timing,
        check_port: hc.port,
        source,
        initial: match hc.initial_state {
            api::InitialState::Up => InitialState::Healthy,
            api::InitialState::Down => InitialState::Unhealthy,
        },
    };
    spec.validate()?;
    Ok(Some(spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hc(json: serde_json::Value) -> api::HealthCheck {
        match serde_json::from_value(json) {
            Ok(h) => h,
            Err(e) => panic!("test input: {e}"),
        }
    }

    #[test]
    fn defaults_are_keepalived_tcp_check() {
        let s = check_spec(&api::HealthCheck::default()).unwrap().unwrap();
        assert_eq!(s.probe, Probe::Tcp);
        assert_eq!(s.timing.interval, Duration::from_secs(5));
        assert_eq!(s.timing.timeout, Duration::from_secs(3));
        assert_eq!((s.timing.rise, s.timing.fall), (1, 3));
        assert_eq!(s.timing.retry_delay, None);
        assert_eq!(
            s.timing.jitter,
            Duration::from_secs(5),
            "up to one interval"
        );
        assert_eq!(s.initial, InitialState::Healthy);
    }

    #[test]
    fn none_runs_no_check() {
        assert_eq!(
            check_spec(&hc(serde_json::json!({"type": "None"}))),
            Ok(None)
        );
    }

    #[test]
    fn https_with_everything() {
        let s = check_spec(&hc(serde_json::json!({
            "type": "HTTPS", "port": 8443, "interval": "2s", "timeout": "1s", "rise": 2,
            "fall": 4, "retryDelay": "500ms", "initialState": "Down", "startJitter": "0s",
            "sourceAddress": "192.0.2.5",
            "http": {"path": "/healthz", "host": "www.example.org", "expectedStatus": [200, 204],
                     "bodyDigest": "D41D8CD98F00B204E9800998ECF8427E", "tlsVerify": true}
        })))
        .unwrap()
        .unwrap();
        assert_eq!(
            s.probe,
            Probe::Http(HttpProbe {
                tls: Some(TlsOptions { verify: true }),
                path: "/healthz".into(),
                host: Some("www.example.org".into()),
                expected_status: vec![StatusRange::single(200), StatusRange::single(204)],
                body: BodyCheck::Md5Hex("d41d8cd98f00b204e9800998ecf8427e".into()),
            })
        );
        assert_eq!(s.check_port, Some(8443));
        assert_eq!(s.source, Some("192.0.2.5".parse().unwrap()));
        assert_eq!(s.initial, InitialState::Unhealthy);
        assert_eq!(s.timing.retry_delay, Some(Duration::from_millis(500)));
        assert_eq!(s.timing.jitter, Duration::ZERO);
        assert_eq!((s.timing.rise, s.timing.fall), (2, 4));
    }

    #[test]
    fn expect_and_dns() {
        let s = check_spec(&hc(serde_json::json!({
            "type": "TCPExpect", "expect": {"send": "PING\r\n", "expect": "^\\+PONG"}
        })))
        .unwrap()
        .unwrap();
        assert_eq!(
            s.probe,
            Probe::TcpExchange(ExchangeProbe {
                send: b"PING\r\n".to_vec(),
                expect: Some("^\\+PONG".into())
            })
        );
        let s = check_spec(&hc(serde_json::json!({
            "type": "DNS", "dns": {"name": "www.example.org", "recordType": "AAAA"}
        })))
        .unwrap()
        .unwrap();
        assert!(matches!(
            s.probe,
            Probe::Dns(DnsProbe {
                qtype: DnsQueryType::Aaaa,
                ..
            })
        ));
    }

    #[test]
    fn errors_name_the_field() {
        let e = check_spec(&hc(serde_json::json!({"type": "UDPExpect"}))).unwrap_err();
        assert!(e.to_string().starts_with("spec.healthCheck.expect"), "{e}");
        let e = check_spec(&hc(serde_json::json!({"type": "DNS"}))).unwrap_err();
        assert!(e.to_string().starts_with("spec.healthCheck.dns"), "{e}");
        let e = check_spec(&hc(serde_json::json!({
            "type": "HTTP", "http": {"bodyMatch": "ok", "bodyDigest": "d41d8cd98f00b204e9800998ecf8427e"}
        })))
        .unwrap_err();
        assert!(e.to_string().contains("mutually exclusive"), "{e}");
        let e = check_spec(&hc(
            serde_json::json!({"type": "HTTP", "http": {"bodyMatch": "("}}),
        ))
        .unwrap_err();
        assert!(e.to_string().starts_with("bodyRegex"), "{e}");
    }
}
