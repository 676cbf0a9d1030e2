//! Decodes raw netlink replies captured from the real kernel (Debian 6.1 in the test VM, see
//! `tools/capture-fixtures.sh` and the `capture_fixtures` VM test) and checks every field.

mod vm_common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context;
use kube_lvs_ipvs::message::{decode_datagram, decode_reply};
use kube_lvs_ipvs::*;
use vm_common::{mixed_table, v4};

fn load(name: &str, fam: Option<AddressFamily>) -> anyhow::Result<Vec<Reply>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.bin"));
    let bytes = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
    let mut report = DecodeReport::default();
    let msgs = decode_datagram(&bytes, &mut report);
    let mut out = Vec::new();
    let mut done = false;
    for m in &msgs {
        match m {
            Incoming::Data { payload, .. } => {
                out.extend(decode_reply(payload, fam, &mut report));
            }
            Incoming::Done { .. } => done = true,
            other => anyhow::bail!("{name}: unexpected {other:?}"),
        }
    }
    assert_eq!(report, DecodeReport::default(), "{name}");
    // Dumps end with NLMSG_DONE; single replies do not.
    assert_eq!(
        done,
        name != "service_get" && name != "timeouts" && name != "info",
        "{name}"
    );
    Ok(out)
}

fn traffic_key() -> ServiceKey {
    ServiceKey::addr(Protocol::Udp, v4(198, 51, 100, 1), 9000)
}

#[test]
fn services_dump_matches_installed_table() -> anyhow::Result<()> {
    let got = load("services", None)?;
    let mut want: BTreeSet<String> = mixed_table()
        .into_iter()
        .map(|(s, _)| format!("{s:?}"))
        .collect();
    want.insert(format!(
        "{:?}",
        Service::new(traffic_key(), Scheduler::RoundRobin)
    ));
    let mut seen = BTreeSet::new();
    for r in &got {
        let Reply::Service(s) = r else {
            anyhow::bail!("not a service: {r:?}")
        };
        seen.insert(format!("{:?}", s.config));
        if s.config.key == traffic_key() {
            assert!(s.stats.in_packets >= 3, "{:?}", s.stats);
            assert!(s.stats.conns >= 1);
            assert!(s.stats.in_bytes >= s.stats.in_packets * 5);
        } else {
            assert_eq!(s.stats, Stats::default());
        }
        assert_eq!(s.pe_name, None);
    }
    assert_eq!(seen, want);
    Ok(())
}

#[test]
fn single_service_get() -> anyhow::Result<()> {
    let table = mixed_table();
    match load("service_get", None)?.as_slice() {
        [Reply::Service(s)] => assert_eq!(s.config, table[0].0),
        other => anyhow::bail!("unexpected {other:?}"),
    }
    Ok(())
}

#[test]
fn destination_dumps_match_installed_table() -> anyhow::Result<()> {
    let table = mixed_table();
    for (name, idx) in [("dests_web", 0), ("dests_dns6", 1), ("dests_fwmark", 2)] {
        let (svc, dests) = &table[idx];
        let got = load(name, Some(svc.key.family()))?;
        let got: BTreeSet<String> = got
            .iter()
            .map(|r| match r {
                Reply::Destination(d) => {
                    assert_eq!(d.stats, Stats::default());
                    format!("{:?}", d.config)
                }
                other => format!("unexpected {other:?}"),
            })
            .collect();
        let want: BTreeSet<String> = dests.iter().map(|d| format!("{d:?}")).collect();
        assert_eq!(got, want, "{name}");
    }
    Ok(())
}

#[test]
fn destination_counters_decode() -> anyhow::Result<()> {
    match load("dests_traffic", Some(AddressFamily::Ipv4))?.as_slice() {
        [Reply::Destination(d)] => {
            assert_eq!(d.config.addr, v4(198, 51, 100, 1));
            assert_eq!(d.config.port, 9000);
            // Even for the director's own address, 6.1 keeps the requested method.
            assert_eq!(d.config.forwarding, Forwarding::Masquerade);
            assert!(d.stats.in_packets >= 3, "{:?}", d.stats);
            assert!(d.active_conns + d.inactive_conns >= 1, "{d:?}");
        }
        other => anyhow::bail!("unexpected {other:?}"),
    }
    Ok(())
}

#[test]
fn daemon_timeouts_and_info_decode() -> anyhow::Result<()> {
    match load("daemons", None)?.as_slice() {
        [Reply::Daemon(d)] => {
            let mut want = SyncDaemon::new(SyncState::Master, "sync0", 9);
            want.mcast_port = 8850;
            want.mcast_ttl = 2;
            want.max_len = 1200;
            want.mcast_group = Some(v4(239, 1, 2, 3));
            assert_eq!(d, &want);
        }
        other => anyhow::bail!("unexpected {other:?}"),
    }
    assert_eq!(
        load("timeouts", None)?,
        vec![Reply::Timeouts(Timeouts {
            tcp: 901,
            tcp_fin: 121,
            udp: 301
        })]
    );
    match load("info", None)?.as_slice() {
        [Reply::Info(i)] => {
            assert_eq!(i.version_triple(), (1, 2, 1));
            assert_eq!(i.conn_tab_size, 4096);
        }
        other => anyhow::bail!("unexpected {other:?}"),
    }
    Ok(())
}

#[test]
fn truncated_fixtures_never_panic_and_report() -> anyhow::Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/services.bin");
    let bytes = std::fs::read(path)?;
    let mut bad = 0;
    for cut in (0..bytes.len()).step_by(7) {
        let mut r = DecodeReport::default();
        for m in decode_datagram(&bytes[..cut], &mut r) {
            if let Incoming::Data { payload, .. } = m {
                let _ = decode_reply(&payload, None, &mut r);
            }
        }
        bad += r.bad_attrs + r.dropped_entries;
    }
    assert!(bad > 0, "truncation must be noticed somewhere");
    Ok(())
}
