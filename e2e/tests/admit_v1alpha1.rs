//! Admission of lvs.kube-lvs.io/v1alpha1 objects by a real kube-apiserver: the generated CRDs
//! install and become Established, the examples round-trip with their defaults filled in,
//! `kubectl get lvs` shows the printer columns, and a table of bad objects is rejected with a
//! message that names the offending field.
//!
//! One control plane serves every check: starting an API server costs seconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kube_lvs_e2e::controlplane::ControlPlane;
use serde_json::{Value, json};

const CRD_FILES: [&str; 2] = [
    "virtualservices.lvs.kube-lvs.io.yaml",
    "realservers.lvs.kube-lvs.io.yaml",
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn install_crds(cp: &ControlPlane) -> Result<()> {
    for file in CRD_FILES {
        let path = repo_root().join("charts/kube-lvs/crds").join(file);
        let yaml = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        cp.apply(&yaml)
            .with_context(|| format!("applying {}", path.display()))?;
        let name = file.trim_end_matches(".yaml");
        cp.wait_for(
            &[
                "get",
                "crd",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ],
            Duration::from_secs(30),
            |out| out.status.success() && stdout(out).trim() == "True",
        )
        .with_context(|| format!("waiting for {name} to be Established"))?;
    }
    // Discovery of the new kinds lags Established by a moment; poll until kubectl knows them.
    cp.wait_for(
        &["get", "virtualservices,realservers", "-A"],
        Duration::from_secs(30),
        |out| out.status.success(),
    )?;
    Ok(())
}

/// Sets `value` at `path`, creating intermediate objects.
fn set(doc: &mut Value, path: &[&str], value: Value) {
    let mut cur = doc;
    for key in &path[..path.len() - 1] {
        if !cur.get(*key).is_some_and(Value::is_object) {
            cur[*key] = json!({});
        }
        cur = &mut cur[*key];
    }
    cur[path[path.len() - 1]] = value;
}

fn remove(doc: &mut Value, path: &[&str]) {
    let mut cur = doc;
    for key in &path[..path.len() - 1] {
        cur = &mut cur[*key];
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.remove(path[path.len() - 1]);
    }
}

fn base_vs(name: &str) -> Value {
    json!({
        "apiVersion": "lvs.kube-lvs.io/v1alpha1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {
            "vip": "192.0.2.100",
            "port": 80,
            "realServerSelector": {"matchLabels": {"app": "web"}},
        },
    })
}

fn base_rs(name: &str) -> Value {
    json!({
        "apiVersion": "lvs.kube-lvs.io/v1alpha1",
        "kind": "RealServer",
        "metadata": {"name": name},
        "spec": {"address": "192.0.2.11", "port": 80},
    })
}

/// One admission case: an object derived from a valid base and what the API server must say.
struct Case {
    name: &'static str,
    real_server: bool,
    edit: fn(&mut Value),
    /// `None`: must be accepted. `Some(field)`: must be rejected naming `field`.
    rejected_at: Option<&'static str>,
}

const fn bad(name: &'static str, field: &'static str, edit: fn(&mut Value)) -> Case {
    Case {
        name,
        real_server: false,
        edit,
        rejected_at: Some(field),
    }
}

const fn bad_rs(name: &'static str, field: &'static str, edit: fn(&mut Value)) -> Case {
    Case {
        name,
        real_server: true,
        edit,
        rejected_at: Some(field),
    }
}

const fn good(name: &'static str, edit: fn(&mut Value)) -> Case {
    Case {
        name,
        real_server: false,
        edit,
        rejected_at: None,
    }
}

fn cases() -> Vec<Case> {
    vec![
        // --- rejected -------------------------------------------------------------------
        bad("vip-not-an-ip", "spec.vip", |v| {
            set(v, &["spec", "vip"], json!("web.example.org"))
        }),
        bad("vip-out-of-range-octet", "spec.vip", |v| {
            set(v, &["spec", "vip"], json!("192.0.2.256"))
        }),
        bad("port-too-large", "spec.port", |v| {
            set(v, &["spec", "port"], json!(70000))
        }),
        bad("port-zero", "spec.port", |v| {
            set(v, &["spec", "port"], json!(0))
        }),
        bad("neither-port-nor-mark", "spec.port", |v| {
            remove(v, &["spec", "port"])
        }),
        bad("unknown-protocol", "spec.protocol", |v| {
            set(v, &["spec", "protocol"], json!("ICMP"))
        }),
        bad("unknown-scheduler", "spec.scheduler", |v| {
            set(v, &["spec", "scheduler"], json!("fastest"))
        }),
        bad("mark-with-port", "spec.firewallMark", |v| {
            set(v, &["spec", "firewallMark"], json!(10));
            set(v, &["spec", "healthCheck", "port"], json!(80));
        }),
        bad("mark-with-protocol", "spec.firewallMark", |v| {
            remove(v, &["spec", "port"]);
            set(v, &["spec", "protocol"], json!("UDP"));
            set(v, &["spec", "firewallMark"], json!(10));
            set(v, &["spec", "healthCheck", "port"], json!(80));
        }),
        bad("mark-zero", "spec.firewallMark", |v| {
            remove(v, &["spec", "port"]);
            set(v, &["spec", "firewallMark"], json!(0));
            set(v, &["spec", "healthCheck", "port"], json!(80));
        }),
        bad("mark-without-check-port", "spec.healthCheck.port", |v| {
            remove(v, &["spec", "port"]);
            set(v, &["spec", "firewallMark"], json!(10));
        }),
        bad("mark-match-without-mark", "spec.firewallMarkMatch", |v| {
            set(
                v,
                &["spec", "firewallMarkMatch"],
                json!([{"protocol": "TCP", "ports": [80]}]),
            )
        }),
        bad("sh-flag-with-wrr", "spec.schedulerFlags", |v| {
            set(v, &["spec", "scheduler"], json!("wrr"));
            set(v, &["spec", "schedulerFlags"], json!(["sh-port"]));
        }),
        bad("mh-flag-with-sh", "spec.schedulerFlags", |v| {
            set(v, &["spec", "scheduler"], json!("sh"));
            set(
                v,
                &["spec", "schedulerFlags"],
                json!(["sh-port", "mh-fallback"]),
            );
        }),
        bad("one-packet-with-tcp", "spec.onePacket", |v| {
            set(v, &["spec", "onePacket"], json!(true))
        }),
        bad("tunnel-options-with-dr", "spec.forwarding.tunnel", |v| {
            set(
                v,
                &["spec", "forwarding", "tunnel"],
                json!({"type": "IPIP"}),
            )
        }),
        bad("tunnel-options-with-nat", "spec.forwarding.tunnel", |v| {
            set(v, &["spec", "forwarding", "method"], json!("NAT"));
            set(v, &["spec", "forwarding", "tunnel"], json!({"type": "GRE"}));
        }),
        bad("gue-without-port", "spec.forwarding.tunnel.port", |v| {
            set(v, &["spec", "forwarding", "method"], json!("Tunnel"));
            set(v, &["spec", "forwarding", "tunnel"], json!({"type": "GUE"}));
        }),
        bad(
            "remote-checksum-with-gre",
            "spec.forwarding.tunnel.checksum",
            |v| {
                set(v, &["spec", "forwarding", "method"], json!("Tunnel"));
                set(
                    v,
                    &["spec", "forwarding", "tunnel"],
                    json!({"type": "GRE", "checksum": "RemoteChecksum"}),
                );
            },
        ),
        bad(
            "persistence-prefix-33-on-ipv4",
            "spec.persistence.prefixLength",
            |v| set(v, &["spec", "persistence"], json!({"prefixLength": 33})),
        ),
        bad(
            "persistence-timeout-zero",
            "spec.persistence.timeoutSeconds",
            |v| set(v, &["spec", "persistence"], json!({"timeoutSeconds": 0})),
        ),
        bad("rise-zero", "spec.healthCheck.rise", |v| {
            set(v, &["spec", "healthCheck", "rise"], json!(0))
        }),
        bad("fall-zero", "spec.healthCheck.fall", |v| {
            set(v, &["spec", "healthCheck", "fall"], json!(0))
        }),
        bad("timeout-equals-interval", "spec.healthCheck.timeout", |v| {
            set(v, &["spec", "healthCheck", "interval"], json!("5s"));
            set(v, &["spec", "healthCheck", "timeout"], json!("5s"));
        }),
        bad(
            "timeout-longer-than-interval",
            "spec.healthCheck.timeout",
            |v| {
                set(v, &["spec", "healthCheck", "interval"], json!("6s"));
                set(v, &["spec", "healthCheck", "timeout"], json!("10s"));
            },
        ),
        bad(
            "interval-not-a-duration",
            "spec.healthCheck.interval",
            |v| set(v, &["spec", "healthCheck", "interval"], json!("5 seconds")),
        ),
        bad(
            "http-path-without-slash",
            "spec.healthCheck.http.path",
            |v| {
                set(v, &["spec", "healthCheck", "type"], json!("HTTP"));
                set(
                    v,
                    &["spec", "healthCheck", "http"],
                    json!({"path": "healthz"}),
                );
            },
        ),
        bad(
            "expected-status-700",
            "spec.healthCheck.http.expectedStatus[1]",
            |v| {
                set(v, &["spec", "healthCheck", "type"], json!("HTTP"));
                set(
                    v,
                    &["spec", "healthCheck", "http"],
                    json!({"expectedStatus": [200, 700]}),
                );
            },
        ),
        bad(
            "expected-status-99",
            "spec.healthCheck.http.expectedStatus[0]",
            |v| {
                set(v, &["spec", "healthCheck", "type"], json!("HTTPS"));
                set(
                    v,
                    &["spec", "healthCheck", "http"],
                    json!({"expectedStatus": [99]}),
                );
            },
        ),
        bad(
            "body-digest-not-md5",
            "spec.healthCheck.http.bodyDigest",
            |v| {
                set(v, &["spec", "healthCheck", "type"], json!("HTTP"));
                set(
                    v,
                    &["spec", "healthCheck", "http"],
                    json!({"bodyDigest": "not-a-digest"}),
                );
            },
        ),
        bad(
            "http-options-with-tcp-check",
            "spec.healthCheck.http",
            |v| set(v, &["spec", "healthCheck", "http"], json!({"path": "/"})),
        ),
        bad(
            "tcp-expect-without-expect",
            "spec.healthCheck.expect",
            |v| set(v, &["spec", "healthCheck", "type"], json!("TCPExpect")),
        ),
        bad("dns-without-dns", "spec.healthCheck.dns", |v| {
            set(v, &["spec", "healthCheck", "type"], json!("DNS"))
        }),
        bad("unknown-check-type", "spec.healthCheck.type", |v| {
            set(v, &["spec", "healthCheck", "type"], json!("MISC_CHECK"))
        }),
        bad("quorum-hysteresis-too-big", "spec.quorum.hysteresis", |v| {
            set(
                v,
                &["spec", "quorum"],
                json!({"minHealthyWeight": 2, "hysteresis": 3}),
            )
        }),
        bad(
            "sorry-server-ipv6-for-ipv4-vip",
            "spec.sorryServer.address",
            |v| {
                set(
                    v,
                    &["spec", "sorryServer"],
                    json!({"address": "2001:db8::20"}),
                )
            },
        ),
        bad(
            "sorry-server-ipv4-for-ipv6-vip",
            "spec.sorryServer.address",
            |v| {
                set(v, &["spec", "vip"], json!("2001:db8::100"));
                set(
                    v,
                    &["spec", "sorryServer"],
                    json!({"address": "192.0.2.20"}),
                );
            },
        ),
        bad(
            "vrrp-v2-interval-fraction",
            "spec.directors.vrrp.advertisementInterval",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp"],
                    json!({"version": 2, "advertisementInterval": "1500ms"}),
                )
            },
        ),
        bad(
            "vrrp-v2-interval-too-long",
            "spec.directors.vrrp.advertisementInterval",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp"],
                    json!({"version": 2, "advertisementInterval": "256s"}),
                )
            },
        ),
        bad(
            "vrrp-v3-interval-not-10ms-multiple",
            "spec.directors.vrrp.advertisementInterval",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp"],
                    json!({"version": 3, "advertisementInterval": "15ms"}),
                )
            },
        ),
        bad(
            "vrrp-v3-interval-too-long",
            "spec.directors.vrrp.advertisementInterval",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp"],
                    json!({"version": 3, "advertisementInterval": "41s"}),
                )
            },
        ),
        bad(
            "vrrp-v3-interval-too-short",
            "spec.directors.vrrp.advertisementInterval",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp"],
                    json!({"version": 3, "advertisementInterval": "5ms"}),
                )
            },
        ),
        bad("vrrp-version-4", "spec.directors.vrrp.version", |v| {
            set(v, &["spec", "directors", "vrrp"], json!({"version": 4}))
        }),
        bad(
            "vrrp-v2-with-ipv6-vip",
            "spec.directors.vrrp.version",
            |v| {
                set(v, &["spec", "vip"], json!("2001:db8::100"));
                set(v, &["spec", "directors", "vrrp"], json!({"version": 2}));
            },
        ),
        bad(
            "password-with-vrrp-v3",
            "spec.directors.vrrp.authSecretRef",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp"],
                    json!({"version": 3, "authSecretRef": {"name": "vrrp", "key": "password"}}),
                )
            },
        ),
        bad(
            "priority-255",
            "spec.directors.vrrp.priorities[0].priority",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp", "priorities"],
                    json!([{"nodeName": "lvs01", "priority": 255}]),
                )
            },
        ),
        bad(
            "priority-0",
            "spec.directors.vrrp.priorities[1].priority",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp", "priorities"],
                    json!([{"nodeName": "lvs01", "priority": 100}, {"nodeName": "lvs02", "priority": 0}]),
                )
            },
        ),
        bad(
            "priority-node-twice",
            "spec.directors.vrrp.priorities[1]",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp", "priorities"],
                    json!([{"nodeName": "lvs01", "priority": 100}, {"nodeName": "lvs01", "priority": 99}]),
                )
            },
        ),
        bad("router-id-zero", "spec.directors.vrrp.routerId", |v| {
            set(v, &["spec", "directors", "vrrp", "routerId"], json!(0))
        }),
        bad(
            "preempt-delay-too-long",
            "spec.directors.vrrp.preemptDelay",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp", "preemptDelay"],
                    json!("20m"),
                )
            },
        ),
        bad(
            "unicast-peer-not-an-ip",
            "spec.directors.vrrp.unicastPeers[0]",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp", "unicastPeers"],
                    json!(["lvs02"]),
                )
            },
        ),
        bad(
            "unicast-peer-other-family",
            "spec.directors.vrrp.unicastPeers",
            |v| {
                set(
                    v,
                    &["spec", "directors", "vrrp", "unicastPeers"],
                    json!(["2001:db8::2"]),
                )
            },
        ),
        bad("sync-id-256", "spec.connectionSync.syncId", |v| {
            set(v, &["spec", "connectionSync", "syncId"], json!(256))
        }),
        bad_rs("rs-address-not-an-ip", "spec.address", |v| {
            set(v, &["spec", "address"], json!("web-1"))
        }),
        bad_rs("rs-weight-too-large", "spec.weight", |v| {
            set(v, &["spec", "weight"], json!(65536))
        }),
        bad_rs("rs-weight-negative", "spec.weight", |v| {
            set(v, &["spec", "weight"], json!(-1))
        }),
        bad_rs("rs-port-too-large", "spec.port", |v| {
            set(v, &["spec", "port"], json!(65536))
        }),
        bad_rs("rs-lower-threshold-alone", "spec.lowerThreshold", |v| {
            set(v, &["spec", "lowerThreshold"], json!(10))
        }),
        bad_rs("rs-lower-above-upper", "spec.lowerThreshold", |v| {
            set(v, &["spec", "upperThreshold"], json!(10));
            set(v, &["spec", "lowerThreshold"], json!(20));
        }),
        bad_rs("rs-unknown-forwarding", "spec.forwarding.method", |v| {
            set(v, &["spec", "forwarding", "method"], json!("Bridge"))
        }),
        // --- accepted: the rules must not overreach --------------------------------------
        good("defaults-only", |_| {}),
        good("ipv6-vip-v3-and-ipv6-sorry-server", |v| {
            set(v, &["spec", "vip"], json!("2001:db8::100"));
            set(
                v,
                &["spec", "sorryServer"],
                json!({"address": "2001:db8::20", "port": 8080}),
            );
            set(
                v,
                &["spec", "directors", "vrrp", "unicastPeers"],
                json!(["2001:db8::2"]),
            );
            set(v, &["spec", "persistence"], json!({"prefixLength": 64}));
        }),
        good("vrrp-v3-250ms", |v| {
            set(
                v,
                &["spec", "directors", "vrrp"],
                json!({"version": 3, "advertisementInterval": "250ms"}),
            )
        }),
        good("vrrp-v3-40.95s", |v| {
            set(
                v,
                &["spec", "directors", "vrrp"],
                json!({"version": 3, "advertisementInterval": "40.95s"}),
            )
        }),
        good("vrrp-v3-10ms", |v| {
            set(
                v,
                &["spec", "directors", "vrrp"],
                json!({"version": 3, "advertisementInterval": "10ms"}),
            )
        }),
        good("vrrp-v2-3s-with-password", |v| {
            set(
                v,
                &["spec", "directors", "vrrp"],
                json!({"version": 2, "advertisementInterval": "3s", "authSecretRef": {"name": "vrrp", "key": "password"}}),
            )
        }),
        good("vrrp-v2-1m", |v| {
            set(
                v,
                &["spec", "directors", "vrrp"],
                json!({"version": 2, "advertisementInterval": "1m"}),
            )
        }),
        good("firewall-mark-service", |v| {
            remove(v, &["spec", "port"]);
            set(v, &["spec", "firewallMark"], json!(4294967295u32));
            set(
                v,
                &["spec", "firewallMarkMatch"],
                json!([{"protocol": "TCP", "ports": [80, 443]}]),
            );
            set(v, &["spec", "healthCheck", "port"], json!(443));
        }),
        good("udp-one-packet-sh-flags", |v| {
            set(v, &["spec", "protocol"], json!("UDP"));
            set(v, &["spec", "onePacket"], json!(true));
            set(v, &["spec", "scheduler"], json!("sh"));
            set(
                v,
                &["spec", "schedulerFlags"],
                json!(["sh-port", "sh-fallback"]),
            );
        }),
        good("gue-tunnel", |v| {
            set(
                v,
                &["spec", "forwarding"],
                json!({"method": "Tunnel", "tunnel": {"type": "GUE", "port": 6080, "checksum": "RemoteChecksum"}}),
            )
        }),
        good("full-http-check", |v| {
            set(
                v,
                &["spec", "healthCheck"],
                json!({"type": "HTTPS", "interval": "2s", "timeout": "1500ms", "rise": 2, "fall": 5,
                       "retryDelay": "500ms", "initialState": "Down", "startJitter": "0s",
                       "sourceAddress": "192.0.2.1", "onFailure": "Quiesce",
                       "http": {"path": "/healthz?full=1", "host": "web.example.org",
                                "expectedStatus": [200, 301], "bodyMatch": "^ok",
                                "bodyDigest": "9e107d9d372bb6826bd81d3542a419d6", "tlsVerify": true}}),
            )
        }),
        good("expect-and-dns-checks", |v| {
            set(v, &["spec", "protocol"], json!("UDP"));
            set(
                v,
                &["spec", "healthCheck"],
                json!({"type": "DNS", "dns": {"name": "example.org", "recordType": "AAAA"}}),
            )
        }),
        good("tcp-expect-check", |v| {
            set(
                v,
                &["spec", "healthCheck"],
                json!({"type": "TCPExpect", "expect": {"send": "PING\r\n", "expect": "^\\+PONG"}}),
            )
        }),
        good("connection-sync", |v| {
            set(
                v,
                &["spec", "connectionSync"],
                json!({"enabled": true, "syncId": 7, "interface": "eth1", "multicastGroup": "224.0.0.81",
                       "port": 8848, "ttl": 1, "maxLength": 1472}),
            )
        }),
    ]
}

/// Runs one case with a server-side dry run: full validation, nothing stored.
fn run_case(cp: &ControlPlane, ns: &str, case: &Case) -> Result<()> {
    let name = format!("c-{}", case.name.replace('.', "-"));
    let mut doc = if case.real_server {
        base_rs(&name)
    } else {
        base_vs(&name)
    };
    (case.edit)(&mut doc);
    let body = serde_json::to_vec(&doc)?;
    let out = cp.kubectl_stdin(&["create", "-n", ns, "--dry-run=server", "-f", "-"], &body)?;
    let err = stderr(&out);
    match case.rejected_at {
        None => ensure!(
            out.status.success(),
            "{}: valid object was rejected: {err}",
            case.name
        ),
        Some(field) => {
            ensure!(
                !out.status.success(),
                "{}: invalid object was accepted (expected an error at {field})",
                case.name
            );
            ensure!(
                err.contains(&format!("{field}:")),
                "{}: rejection does not name {field}: {err}",
                case.name
            );
            // Visible with --nocapture: what a user would read.
            eprintln!("rejected {}: {}", case.name, err.trim());
        }
    }
    Ok(())
}

fn split_docs(yaml: &str) -> Vec<String> {
    yaml.split("\n---")
        .map(str::trim)
        .filter(|d| d.lines().any(|l| l.starts_with("kind:")))
        .map(str::to_owned)
        .collect()
}

/// Every field the manifest sets must come back unchanged.
fn assert_subset(sent: &Value, got: &Value, path: &str) -> Result<()> {
    match (sent, got) {
        (Value::Object(s), Value::Object(g)) => {
            for (k, v) in s {
                let child = format!("{path}.{k}");
                let g = g
                    .get(k)
                    .with_context(|| format!("{child} missing in stored object"))?;
                assert_subset(v, g, &child)?;
            }
            Ok(())
        }
        _ => {
            ensure!(sent == got, "{path}: sent {sent}, stored {got}");
            Ok(())
        }
    }
}

fn get_json(cp: &ControlPlane, ns: &str, kind: &str, name: &str) -> Result<Value> {
    let out = cp.kubectl_ok(&["get", "-n", ns, kind, name, "-o", "json"])?;
    Ok(serde_json::from_str(&out)?)
}

fn yaml_to_json(cp: &ControlPlane, doc: &str) -> Result<Value> {
    // kubectl converts YAML to JSON for us without a YAML crate in this test.
    let out = cp.kubectl_stdin(
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        doc.as_bytes(),
    )?;
    ensure!(out.status.success(), "converting example: {}", stderr(&out));
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn check_example(cp: &ControlPlane, ns: &str, file: &Path) -> Result<Vec<Value>> {
    let yaml =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let out = cp.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], yaml.as_bytes())?;
    ensure!(
        out.status.success(),
        "{} rejected: {}",
        file.display(),
        stderr(&out)
    );
    let mut stored = Vec::new();
    for doc in split_docs(&yaml) {
        let sent = yaml_to_json(cp, &doc)?;
        let kind = sent["kind"].as_str().unwrap_or_default().to_owned();
        if kind == "Secret" {
            continue;
        }
        let name = sent["metadata"]["name"].as_str().unwrap_or_default();
        let got = get_json(cp, ns, &kind.to_lowercase(), name)?;
        assert_subset(&sent["spec"], &got["spec"], &format!("{kind}/{name}.spec"))?;
        stored.push(got);
    }
    Ok(stored)
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("{kind}/{name} not stored"))
}

#[test]
fn admit_v1alpha1() -> Result<()> {
    let cp = ControlPlane::start().context("starting the control plane")?;
    install_crds(&cp)?;
    let ns = format!("admit-{}", std::process::id());
    cp.kubectl_ok(&["create", "namespace", &ns])?;

    // Examples round-trip, and the API server fills the documented defaults.
    let mut stored = Vec::new();
    for example in ["dr-web.yaml", "nat.yaml", "firewall-mark.yaml"] {
        stored.extend(check_example(
            &cp,
            &ns,
            &repo_root().join("examples").join(example),
        )?);
    }
    let web = &find(&stored, "VirtualService", "web")?["spec"];
    assert_eq!(web["scheduler"], "wrr");
    assert_eq!(web["persistence"]["timeoutSeconds"], 50);
    assert_eq!(web["healthCheck"]["rise"], 1, "default rise");
    assert_eq!(web["healthCheck"]["onFailure"], "Remove");
    assert_eq!(web["healthCheck"]["initialState"], "Up");
    assert_eq!(web["directors"]["vrrp"]["preempt"], true);
    assert_eq!(web["directors"]["vrrp"]["garp"]["count"], 5);
    assert_eq!(
        web["connectionSync"],
        json!({"enabled": false, "syncId": 0, "port": 8848, "ttl": 1})
    );
    assert_eq!(web["onePacket"], false);
    let shop = &find(&stored, "VirtualService", "shop")?["spec"];
    assert_eq!(shop["forwarding"]["method"], "NAT");
    assert_eq!(
        shop["directors"]["vrrp"]["version"], 3,
        "default VRRP version"
    );
    assert_eq!(
        shop["directors"]["nodeSelector"],
        json!({"lvs.kube-lvs.io/director": "true"}),
        "default director selector"
    );
    assert_eq!(shop["healthCheck"]["http"]["tlsVerify"], false);
    let fw = &find(&stored, "VirtualService", "secure-web")?["spec"];
    assert_eq!(fw["healthCheck"]["interval"], "5s", "default interval");
    assert_eq!(fw["healthCheck"]["timeout"], "3s", "default timeout");
    assert_eq!(fw["healthCheck"]["fall"], 3, "default fall");
    assert_eq!(fw["forwarding"]["method"], "NAT");
    assert!(fw.get("port").is_none() && fw.get("protocol").is_none());
    let rs = &find(&stored, "RealServer", "secure-web-1")?["spec"];
    assert_eq!(rs["drain"], false, "default drain");
    let minimal = cp.kubectl_stdin(
        &["create", "-n", &ns, "-f", "-"],
        &serde_json::to_vec(
            &json!({"apiVersion": "lvs.kube-lvs.io/v1alpha1", "kind": "RealServer",
            "metadata": {"name": "minimal"}, "spec": {"address": "192.0.2.13"}}),
        )?,
    )?;
    ensure!(
        minimal.status.success(),
        "minimal RealServer: {}",
        stderr(&minimal)
    );
    assert_eq!(
        get_json(&cp, &ns, "realserver", "minimal")?["spec"]["weight"],
        1
    );

    // The category lists both kinds with their columns.
    let table = cp.kubectl_ok(&["get", "lvs", "-n", &ns])?;
    let headers: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with("NAME"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        headers.contains(&vec![
            "NAME", "VIP", "PORT", "PROTO", "SCHED", "MODE", "MASTER", "HEALTHY", "READY", "AGE"
        ]),
        "VirtualService columns missing in:\n{table}"
    );
    assert!(
        headers.contains(&vec![
            "NAME", "ADDRESS", "PORT", "WEIGHT", "HEALTH", "ACTIVE", "AGE"
        ]),
        "RealServer columns missing in:\n{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("virtualservice.lvs.kube-lvs.io/web "))
        .with_context(|| format!("no row for web in:\n{table}"))?;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells.get(1..6),
        Some(&["192.0.2.100", "80", "TCP", "wrr", "DirectRouting"][..]),
        "{row}"
    );
    // Status columns come from the status subresource, as operator and agents will write it.
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "virtualservice",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"master":"lvs01","healthy":"2/2","healthyRealServers":2,"totalRealServers":2,
            "directors":[{"nodeName":"lvs01","state":"Master","priority":100,"programmed":true}],
            "conditions":[{"type":"Ready","status":"True","reason":"Programmed","message":"",
            "lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#,
    ])?;
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "realserver",
        "web-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"health":"Healthy","activeConnections":7,"inactiveConnections":1}}"#,
    ])?;
    let vs_row = cp.kubectl_ok(&["get", "lvsvs", "-n", &ns, "web", "--no-headers"])?;
    let cells: Vec<&str> = vs_row.split_whitespace().collect();
    assert_eq!(
        cells.get(6..9),
        Some(&["lvs01", "2/2", "True"][..]),
        "{vs_row}"
    );
    let rs_row = cp.kubectl_ok(&["get", "lvsrs", "-n", &ns, "web-1", "--no-headers"])?;
    let cells: Vec<&str> = rs_row.split_whitespace().collect();
    assert_eq!(
        cells.get(1..6),
        Some(&["192.0.2.11", "80", "1", "Healthy", "7"][..]),
        "{rs_row}"
    );
    let bad_status = cp.kubectl(&[
        "patch",
        "-n",
        &ns,
        "virtualservice",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"directors":[{"nodeName":"lvs01","state":"Leader"}]}}"#,
    ])?;
    ensure!(
        !bad_status.status.success() && stderr(&bad_status).contains("status.directors[0].state"),
        "status with an unknown VRRP state was accepted: {}",
        stderr(&bad_status)
    );
    let wide = cp.kubectl_ok(&["get", "lvsvs", "-n", &ns, "-o", "wide", "secure-web"])?;
    ensure!(wide.contains("FWMARK") && wide.contains(" 10 "), "{wide}");
    let explain = cp.kubectl_ok(&["explain", "virtualservice.spec.healthCheck.interval"])?;
    ensure!(
        explain.contains("delay_loop"),
        "kubectl explain lacks the keepalived name: {explain}"
    );

    // The rejection table; collect every failure before reporting.
    let cases = cases();
    let rejected = cases.iter().filter(|c| c.rejected_at.is_some()).count();
    assert!(rejected >= 14, "only {rejected} rejection cases");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(&cp, &ns, c).err().map(|e| format!("{e:#}")))
        .collect();
    if !failures.is_empty() {
        bail!(
            "{} of {} admission cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
    Ok(())
}
