//! IPVS netlink surface against the real kernel (root, inside the test VM; `test = false`).
//! Every test works in a fresh network namespace, i.e. on an empty IPVS table of its own.

mod vm_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kube_lvs_ipvs::*;
use vm_common::{Netns, mixed_table, v4, v6};

/// ipvsadm's rendering of a service key (whitespace-normalised).
fn ipvsadm_key(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
            ..
        } => format!(
            "{} {}",
            protocol.as_str().to_uppercase(),
            SocketAddr::new(*addr, *port)
        ),
        ServiceKey::Fwmark {
            family: AddressFamily::Ipv4,
            mark,
        } => format!("FWM {mark}"),
        ServiceKey::Fwmark {
            family: AddressFamily::Ipv6,
            mark,
        } => format!("FWM {mark} IPv6"),
    }
}

/// One service block of an `ipvsadm -Ln…` listing: the tokens after the key, and per
/// destination (`addr:port`) the tokens after the address.
#[derive(Debug, Default)]
struct Block {
    rest: Vec<String>,
    dests: BTreeMap<String, Vec<String>>,
}

/// Parses any `ipvsadm -Ln` variant. Keys are matched by prefix against `keys` because the
/// service line's key has one to three tokens.
fn parse_listing(text: &str, keys: &[String]) -> anyhow::Result<BTreeMap<String, Block>> {
    let mut out: BTreeMap<String, Block> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("  -> ") {
            if toks.get(1) == Some(&"RemoteAddress:Port") {
                continue;
            }
            let Some(cur) = &current else {
                bail!("destination before service: {line}")
            };
            let addr = toks.get(1).context("dest addr")?.to_string();
            let rest = toks.iter().skip(2).map(|s| s.to_string()).collect();
            if let Some(b) = out.get_mut(cur) {
                b.dests.insert(addr, rest);
            }
        } else if line.starts_with("IP Virtual Server") || line.starts_with("Prot ") {
            continue;
        } else if !toks.is_empty() {
            let norm = toks.join(" ");
            let key = keys
                .iter()
                .filter(|k| norm == **k || norm.starts_with(&format!("{k} ")))
                // "FWM 43" is a prefix of "FWM 43 IPv6": take the longest match.
                .max_by_key(|k| k.len())
                .with_context(|| format!("unknown service line {line:?}"))?
                .clone();
            let rest = norm
                .get(key.len()..)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            out.insert(
                key.clone(),
                Block {
                    rest,
                    dests: BTreeMap::new(),
                },
            );
            current = Some(key);
        }
    }
    Ok(out)
}

fn forward_name(f: &Forwarding) -> &'static str {
    match f {
        Forwarding::Masquerade => "Masq",
        Forwarding::Local => "Local",
        Forwarding::Tunnel(_) => "Tunnel",
        Forwarding::DirectRoute => "Route",
    }
}

fn tun_info(f: &Forwarding) -> String {
    let c = |c: &TunnelChecksum| match c {
        TunnelChecksum::None => "-c",
        TunnelChecksum::Csum => "+c",
        TunnelChecksum::RemCsum => "r+c",
    };
    match f {
        Forwarding::Tunnel(TunnelType::Ipip) => "ipip".into(),
        Forwarding::Tunnel(TunnelType::Gue { port, csum }) => format!("gue:{port}:{}", c(csum)),
        Forwarding::Tunnel(TunnelType::Gre { csum }) => format!("gre:{}", c(csum)),
        _ => "n/a".into(),
    }
}

/// The scheduler/flags part of ipvsadm's service line as a comparable token set.
fn service_tokens(svc: &Service) -> BTreeSet<String> {
    let mut t = BTreeSet::new();
    t.insert(svc.scheduler.name().to_owned());
    let sched = svc.scheduler.name();
    let mut flags = Vec::new();
    if svc.sched_flags.fallback {
        flags.push(format!("{sched}-fallback"));
    }
    if svc.sched_flags.port {
        flags.push(format!("{sched}-port"));
    }
    if !flags.is_empty() {
        t.insert(format!("({})", flags.join(",")));
    }
    if let Some(p) = svc.persistence {
        t.insert("persistent".into());
        t.insert(p.timeout_secs.to_string());
        let full = svc.key.family().max_prefix();
        if p.prefix_len != full {
            t.insert("mask".into());
            t.insert(match svc.key.family() {
                AddressFamily::Ipv4 => {
                    let m = if p.prefix_len == 0 {
                        0
                    } else {
                        u32::MAX << (32 - u32::from(p.prefix_len))
                    };
                    Ipv4Addr::from(m).to_string()
                }
                AddressFamily::Ipv6 => p.prefix_len.to_string(),
            });
        }
    }
    if svc.one_packet {
        t.insert("ops".into());
    }
    t
}

fn install(h: &IpvsHandle, table: &[(Service, Vec<Destination>)]) -> anyhow::Result<()> {
    for (svc, dests) in table {
        h.services()
            .add(svc.clone())
            .with_context(|| format!("{}", svc.key))?;
        for d in dests {
            h.destinations(svc.key)
                .add(d.clone())
                .with_context(|| format!("{} -> {}", svc.key, d.addr))?;
        }
    }
    Ok(())
}

#[test]
fn every_scheduler_flag_and_persistence_round_trips() -> anyhow::Result<()> {
    let _ns = Netns::enter("sched")?;
    let h = IpvsHandle::new()?;
    let mut want = Vec::new();
    for (i, sched) in Scheduler::ALL.into_iter().enumerate() {
        let port = 1000 + i as u16 * 10;
        for (j, (fallback, portf)) in [(false, false), (true, false), (false, true), (true, true)]
            .into_iter()
            .enumerate()
        {
            if !sched.uses_sched_flags() && j > 0 {
                continue;
            }
            let mut s = Service::new(
                ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 5), port + j as u16),
                sched,
            );
            s.sched_flags.fallback = fallback;
            s.sched_flags.port = portf;
            want.push(s);
        }
        // Persistence with a netmask and one-packet scheduling, IPv4 and IPv6.
        let mut p = Service::new(
            ServiceKey::addr(Protocol::Udp, v4(192, 0, 2, 6), port),
            sched,
        );
        p.persistence = Some(Persistence {
            timeout_secs: 120 + i as u32,
            prefix_len: 16 + i as u8,
        });
        p.one_packet = true;
        want.push(p);
        let mut p6 = Service::new(ServiceKey::addr(Protocol::Sctp, v6(6), port), sched);
        p6.persistence = Some(Persistence {
            timeout_secs: 3600,
            prefix_len: 48 + i as u8,
        });
        want.push(p6);
    }
    for s in &want {
        h.services()
            .add(s.clone())
            .with_context(|| s.key.to_string())?;
        let got = h.services().get(s.key)?;
        assert_eq!(&got.config, s, "get after add");
    }
    let dumped: BTreeSet<_> = h
        .services()
        .dump()?
        .into_iter()
        .map(|s| format!("{:?}", s.config))
        .collect();
    let wanted: BTreeSet<_> = want.iter().map(|s| format!("{s:?}")).collect();
    assert_eq!(dumped, wanted);
    // Edit flips everything editable on one service and reads it back.
    let mut e = want[0].clone();
    e.scheduler = Scheduler::MaglevHashing;
    e.sched_flags.fallback = true;
    e.persistence = Some(Persistence {
        timeout_secs: 77,
        prefix_len: 8,
    });
    h.services().edit(e.clone())?;
    assert_eq!(h.services().get(e.key)?.config, e);
    Ok(())
}

#[test]
fn dump_agrees_with_ipvsadm_listings() -> anyhow::Result<()> {
    let ns = Netns::enter("list")?;
    let h = IpvsHandle::new()?;
    let table = mixed_table();
    install(&h, &table)?;
    let keys: Vec<String> = table.iter().map(|(s, _)| ipvsadm_key(&s.key)).collect();

    let services = h.services().dump()?;
    assert_eq!(services.len(), table.len());
    let mut ours = BTreeMap::new();
    for s in &services {
        let dests = h.destinations(s.config.key).dump()?;
        ours.insert(ipvsadm_key(&s.config.key), (s.clone(), dests));
    }
    // Our dump equals what we installed.
    for (svc, dests) in &table {
        let (got, got_dests) = &ours[&ipvsadm_key(&svc.key)];
        assert_eq!(&got.config, svc);
        let a: BTreeSet<_> = got_dests
            .iter()
            .map(|d| format!("{:?}", d.config))
            .collect();
        let b: BTreeSet<_> = dests.iter().map(|d| format!("{d:?}")).collect();
        assert_eq!(a, b, "{}", svc.key);
    }

    let plain = parse_listing(&ns.ipvsadm(&["-Ln"])?, &keys)?;
    let thresholds = parse_listing(&ns.ipvsadm(&["-Ln", "--thresholds"])?, &keys)?;
    let persistent = parse_listing(&ns.ipvsadm(&["-Ln", "--persistent-conn"])?, &keys)?;
    let stats = parse_listing(&ns.ipvsadm(&["-Ln", "--stats", "--exact"])?, &keys)?;
    let tun = parse_listing(&ns.ipvsadm(&["-Ln", "--tun-info"])?, &keys)?;
    assert_eq!(plain.len(), ours.len());
    for (key, (svc, dests)) in &ours {
        let p = plain
            .get(key)
            .with_context(|| format!("ipvsadm lacks {key}"))?;
        let theirs: BTreeSet<String> = p.rest.iter().cloned().collect();
        assert_eq!(theirs, service_tokens(&svc.config), "{key}");
        let st = &stats[key];
        let s = &svc.stats;
        let ours_stats: Vec<String> = [
            s.conns,
            s.in_packets,
            s.out_packets,
            s.in_bytes,
            s.out_bytes,
        ]
        .iter()
        .map(u64::to_string)
        .collect();
        assert_eq!(st.rest, ours_stats, "{key} --stats");
        assert_eq!(p.dests.len(), dests.len(), "{key}");
        for d in dests {
            let a = SocketAddr::new(d.config.addr, d.config.port).to_string();
            let c = &d.config;
            assert_eq!(
                p.dests[&a],
                vec![
                    forward_name(&c.forwarding).to_owned(),
                    c.weight.to_string(),
                    d.active_conns.to_string(),
                    d.inactive_conns.to_string()
                ],
                "{key} {a}"
            );
            assert_eq!(
                thresholds[key].dests[&a],
                vec![
                    c.upper_threshold.to_string(),
                    c.lower_threshold.to_string(),
                    d.active_conns.to_string(),
                    d.inactive_conns.to_string()
                ],
                "{key} {a} thresholds"
            );
            assert_eq!(
                persistent[key].dests[&a],
                vec![
                    c.weight.to_string(),
                    d.persistent_conns.to_string(),
                    d.active_conns.to_string(),
                    d.inactive_conns.to_string()
                ],
                "{key} {a} persistent-conn"
            );
            assert_eq!(
                tun[key].dests[&a].get(1),
                Some(&tun_info(&c.forwarding)),
                "{key} {a} tun-info"
            );
            let ds = &d.stats;
            let want: Vec<String> = [
                ds.conns,
                ds.in_packets,
                ds.out_packets,
                ds.in_bytes,
                ds.out_bytes,
            ]
            .iter()
            .map(u64::to_string)
            .collect();
            assert_eq!(stats[key].dests[&a], want, "{key} {a} stats");
        }
    }
    Ok(())
}

fn wait_for_stats(
    h: &IpvsHandle,
    key: ServiceKey,
    ok: impl Fn(&Stats) -> bool,
) -> anyhow::Result<ServiceInfo> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let svc = h.services().get(key)?;
        if ok(&svc.stats) {
            return Ok(svc);
        }
        ensure!(
            Instant::now() < deadline,
            "counters stuck at {:?}",
            svc.stats
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Client namespace wired to the test's (director) namespace by a veth pair:
/// director 198.51.100.1, client 198.51.100.2. The UDP service is the director's own address
/// and its only real server is a socket on the director (local-node forwarding).
struct Traffic {
    client: Netns,
    sink: UdpSocket,
    key: ServiceKey,
}

impl Traffic {
    fn new(director: &Netns, h: &IpvsHandle) -> anyhow::Result<Self> {
        let client = Netns::create("cli")?;
        director.ip(&[
            "link",
            "add",
            "kvd",
            "type",
            "veth",
            "peer",
            "name",
            "kvc",
            "netns",
            &client.name,
        ])?;
        director.ip(&["addr", "add", "198.51.100.1/24", "dev", "kvd"])?;
        director.ip(&["link", "set", "kvd", "up"])?;
        client.ip(&["addr", "add", "198.51.100.2/24", "dev", "kvc"])?;
        client.ip(&["link", "set", "kvc", "up"])?;
        let key = ServiceKey::addr(Protocol::Udp, v4(198, 51, 100, 1), 9000);
        h.services().add(Service::new(key, Scheduler::RoundRobin))?;
        h.destinations(key).add(Destination::new(
            v4(198, 51, 100, 1),
            9000,
            Forwarding::Masquerade,
        ))?;
        let sink = UdpSocket::bind("198.51.100.1:9000")?;
        sink.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Traffic { client, sink, key })
    }

    /// Sends datagrams from the client until `n` arrived at the real server.
    fn send(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 64];
        let mut received = 0;
        while received < n {
            ensure!(
                Instant::now() < deadline,
                "datagrams did not reach the real server"
            );
            self.client.sh("echo ping > /dev/udp/198.51.100.1/9000")?;
            while self.sink.recv_from(&mut buf).is_ok() {
                received += 1;
            }
        }
        Ok(())
    }
}

#[test]
fn counters_move_agree_with_ipvsadm_and_zero() -> anyhow::Result<()> {
    let ns = Netns::enter("zero")?;
    let h = IpvsHandle::new()?;
    let traffic = Traffic::new(&ns, &h)?;
    let key = traffic.key;
    traffic.send(5)?;
    // The kernel folds per-CPU counters into the exported ones on its 2 s estimator tick.
    let svc = wait_for_stats(&h, key, |s| s.in_packets >= 5)?;
    assert!(svc.stats.conns >= 1, "{:?}", svc.stats);
    assert!(svc.stats.in_packets >= 5, "{:?}", svc.stats);
    assert!(svc.stats.in_bytes >= 5 * 5, "{:?}", svc.stats);
    let dests = h.destinations(key).dump()?;
    assert_eq!(dests.len(), 1);
    assert!(dests[0].stats.in_packets >= 5);
    assert!(
        dests[0].inactive_conns + dests[0].active_conns >= 1,
        "{:?}",
        dests[0]
    );
    let keys = vec![ipvsadm_key(&key)];
    let listing = parse_listing(&ns.ipvsadm(&["-Ln", "--stats", "--exact"])?, &keys)?;
    let s = &h.services().get(key)?.stats;
    assert_eq!(
        listing[&keys[0]].rest,
        [
            s.conns,
            s.in_packets,
            s.out_packets,
            s.in_bytes,
            s.out_bytes
        ]
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
    );
    let plain = parse_listing(&ns.ipvsadm(&["-Ln"])?, &keys)?;
    let d = &h.destinations(key).dump()?[0];
    let a = SocketAddr::new(d.config.addr, d.config.port).to_string();
    assert_eq!(
        plain[&keys[0]].dests[&a][2..],
        [d.active_conns.to_string(), d.inactive_conns.to_string()]
    );
    h.zero(Some(key))?;
    let after = h.services().get(key)?.stats;
    assert_eq!((after.conns, after.in_packets, after.in_bytes), (0, 0, 0));
    traffic.send(1)?;
    wait_for_stats(&h, key, |s| s.in_packets >= 1)?;
    h.zero(None)?;
    assert_eq!(h.services().get(key)?.stats.in_packets, 0);
    assert_eq!(h.destinations(key).dump()?[0].stats.in_packets, 0);
    Ok(())
}

#[test]
fn errors_are_typed() -> anyhow::Result<()> {
    let _ns = Netns::enter("err")?;
    let h = IpvsHandle::new()?;
    let key = ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 7), 80);
    let svc = Service::new(key, Scheduler::RoundRobin);
    h.services().add(svc.clone())?;
    let e = h.services().add(svc.clone()).err().context("second add")?;
    assert!(e.is_exists(), "{e:?}");
    let missing = ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 8), 80);
    let e = h
        .services()
        .delete(missing)
        .err()
        .context("delete missing")?;
    assert!(e.is_not_found(), "{e:?}");
    let e = h.services().get(missing).err().context("get missing")?;
    assert!(e.is_not_found(), "{e:?}");
    let e = h
        .services()
        .edit(Service::new(missing, Scheduler::RoundRobin))
        .err()
        .context("edit missing")?;
    assert!(e.is_not_found(), "{e:?}");
    let d = Destination::new(v4(203, 0, 113, 1), 80, Forwarding::DirectRoute);
    h.destinations(key).add(d.clone())?;
    let e = h
        .destinations(key)
        .add(d.clone())
        .err()
        .context("dest twice")?;
    assert!(e.is_exists(), "{e:?}");
    let e = h
        .destinations(key)
        .delete(DestinationKey {
            addr: v4(203, 0, 113, 2),
            port: 80,
        })
        .err()
        .context("delete missing dest")?;
    assert!(e.is_not_found(), "{e:?}");
    let e = h
        .destinations(missing)
        .add(d)
        .err()
        .context("dest of missing svc")?;
    assert!(e.is_not_found(), "{e:?}");
    let e = h
        .sync_daemons()
        .stop(SyncState::Backup)
        .err()
        .context("stop daemon that is not running")?;
    assert!(e.is_not_found() || e.kind() == "kernel", "{e:?}");
    Ok(())
}

#[test]
fn batch_reports_per_request_outcomes() -> anyhow::Result<()> {
    let _ns = Netns::enter("batch")?;
    let h = IpvsHandle::new()?;
    let a = ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 9), 1);
    let b = ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 9), 2);
    let reqs = vec![
        Request::NewService(Service::new(a, Scheduler::RoundRobin)),
        Request::NewService(Service::new(a, Scheduler::RoundRobin)),
        Request::NewService(Service::new(b, Scheduler::WeightedRoundRobin)),
        Request::DelService(ServiceKey::fwmark(AddressFamily::Ipv4, 99)),
        Request::DumpServices,
        Request::NewDestination {
            service: b,
            dest: Destination::new(v4(203, 0, 113, 4), 80, Forwarding::Masquerade),
        },
    ];
    let res = h.execute_batch(&reqs);
    let kinds: Vec<&str> = res
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.kind(), |_| "ok"))
        .collect();
    assert_eq!(kinds, ["ok", "exists", "ok", "not_found", "ok", "ok"]);
    // A service and its destinations in the same datagram.
    let c = ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 9), 3);
    let mut same = vec![Request::NewService(Service::new(c, Scheduler::RoundRobin))];
    for i in 0..3u8 {
        same.push(Request::NewDestination {
            service: c,
            dest: Destination::new(v4(203, 0, 113, 30 + i), 80, Forwarding::DirectRoute),
        });
    }
    let res = h.execute_batch(&same);
    let errs: Vec<String> = res
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(h.destinations(c).dump()?.len(), 3);
    // A big batch spanning several datagrams, with one failure in the middle.
    let mut big = Vec::new();
    for i in 0..3000u32 {
        big.push(Request::NewDestination {
            service: b,
            dest: Destination::new(
                IpAddr::V4(Ipv4Addr::from(0xcb00_7100u32 + 16 + i)),
                80,
                Forwarding::DirectRoute,
            ),
        });
    }
    big.insert(
        1500,
        Request::NewDestination {
            service: b,
            dest: Destination::new(v4(203, 0, 113, 4), 80, Forwarding::Masquerade),
        },
    );
    let before = h.stats();
    let res = h.execute_batch(&big);
    let failed: Vec<usize> = res
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, vec![1500]);
    assert!(res[1500].as_ref().err().is_some_and(Error::is_exists));
    assert_eq!(h.destinations(b).dump()?.len(), 3001);
    let sent = h.stats().datagrams_sent - before.datagrams_sent;
    assert!(sent < 20, "3001 requests took {sent} datagrams");
    Ok(())
}

#[test]
fn timeouts_set_and_get() -> anyhow::Result<()> {
    let ns = Netns::enter("tmo")?;
    let h = IpvsHandle::new()?;
    let want = Timeouts {
        tcp: 1234,
        tcp_fin: 56,
        udp: 78,
    };
    h.set_timeouts(want)?;
    assert_eq!(h.timeouts()?, want);
    let text = ns.ipvsadm(&["-Ln", "--timeout"])?;
    assert!(text.contains("1234 56 78"), "{text}");
    // Zero means unchanged.
    h.set_timeouts(Timeouts {
        tcp: 0,
        tcp_fin: 0,
        udp: 99,
    })?;
    assert_eq!(h.timeouts()?, Timeouts { udp: 99, ..want });
    Ok(())
}

#[test]
fn sync_daemon_start_list_stop() -> anyhow::Result<()> {
    let ns = Netns::enter("sync")?;
    ns.ip(&["link", "add", "sync0", "type", "dummy"])?;
    ns.ip(&["link", "set", "sync0", "multicast", "on", "up"])?;
    let h = IpvsHandle::new()?;
    let mut master = SyncDaemon::new(SyncState::Master, "sync0", 7);
    master.mcast_port = 8850;
    master.mcast_ttl = 2;
    master.max_len = 1200;
    master.mcast_group = Some(v4(239, 1, 2, 3));
    h.sync_daemons().start(master.clone())?;
    let backup = SyncDaemon::new(SyncState::Backup, "sync0", 7);
    h.sync_daemons().start(backup.clone())?;
    let list = h.sync_daemons().list()?;
    assert_eq!(list.len(), 2, "{list:?}");
    let m = list
        .iter()
        .find(|d| d.state == SyncState::Master)
        .context("master listed")?;
    assert_eq!(m, &master);
    let b = list
        .iter()
        .find(|d| d.state == SyncState::Backup)
        .context("backup listed")?;
    assert_eq!((b.interface.as_str(), b.sync_id), ("sync0", 7));
    // Kernel defaults are reported for fields left at 0.
    assert_eq!(b.mcast_port, 8848);
    assert_eq!(b.mcast_group, Some(v4(224, 0, 0, 81)));
    let text = ns.ipvsadm(&["-Ln", "--daemon"])?;
    assert!(
        text.contains("master sync daemon (mcast=sync0, syncid=7"),
        "{text}"
    );
    assert!(text.contains("port=8850, ttl=2"), "{text}");
    let e = h
        .sync_daemons()
        .start(master.clone())
        .err()
        .context("twice")?;
    assert!(e.is_exists() || e.kind() == "kernel", "{e:?}");
    h.sync_daemons().stop(SyncState::Master)?;
    let list = h.sync_daemons().list()?;
    assert_eq!(
        list.iter().map(|d| d.state).collect::<Vec<_>>(),
        [SyncState::Backup]
    );
    h.sync_daemons().stop(SyncState::Backup)?;
    assert!(h.sync_daemons().list()?.is_empty());
    Ok(())
}

#[test]
fn delete_and_edit_destinations() -> anyhow::Result<()> {
    let _ns = Netns::enter("dest")?;
    let h = IpvsHandle::new()?;
    let table = mixed_table();
    install(&h, &table)?;
    let (svc, dests) = &table[0];
    let mut d = dests[0].clone();
    d.weight = 42;
    d.upper_threshold = 70;
    d.forwarding = Forwarding::Tunnel(TunnelType::Gre {
        csum: TunnelChecksum::Csum,
    });
    h.destinations(svc.key).edit(d.clone())?;
    let got = h.destinations(svc.key).dump()?;
    assert!(got.iter().any(|x| x.config == d), "{got:?}");
    h.destinations(svc.key).delete(d.key())?;
    assert_eq!(h.destinations(svc.key).dump()?.len(), dests.len() - 1);
    for (s, _) in &table {
        h.services().delete(s.key)?;
    }
    assert!(h.services().dump()?.is_empty());
    Ok(())
}

/// Records raw kernel replies for the table of `mixed_table()` (plus live counters, a sync
/// daemon and custom timeouts) as `IPVS-FIXTURE <name> <hex>` lines; the VM's file system
/// does not persist, so `tools/capture-fixtures.sh` turns the lines into
/// `tests/fixtures/<name>.bin` on the host. Also checks that each capture decodes.
#[test]
fn capture_fixtures() -> anyhow::Result<()> {
    let ns = Netns::enter("fix")?;
    let h = IpvsHandle::new()?;
    let table = mixed_table();
    install(&h, &table)?;
    let traffic = Traffic::new(&ns, &h)?;
    traffic.send(3)?;
    wait_for_stats(&h, traffic.key, |s| s.in_packets >= 3)?;
    ns.ip(&["link", "add", "sync0", "type", "dummy"])?;
    ns.ip(&["link", "set", "sync0", "multicast", "on", "up"])?;
    let mut master = SyncDaemon::new(SyncState::Master, "sync0", 9);
    master.mcast_port = 8850;
    master.mcast_ttl = 2;
    master.max_len = 1200;
    master.mcast_group = Some(v4(239, 1, 2, 3));
    h.sync_daemons().start(master)?;
    h.set_timeouts(Timeouts {
        tcp: 901,
        tcp_fin: 121,
        udp: 301,
    })?;
    let mut captures: Vec<(&str, Request)> = vec![
        ("services", Request::DumpServices),
        ("service_get", Request::GetService(table[0].0.key)),
        ("dests_web", Request::DumpDestinations(table[0].0.key)),
        ("dests_dns6", Request::DumpDestinations(table[1].0.key)),
        ("dests_fwmark", Request::DumpDestinations(table[2].0.key)),
        ("dests_traffic", Request::DumpDestinations(traffic.key)),
        ("daemons", Request::DumpDaemons),
        ("timeouts", Request::GetTimeouts),
        ("info", Request::GetInfo),
    ];
    for (name, req) in captures.drain(..) {
        let (replies, raw) = h.execute_raw(&req)?;
        ensure!(!replies.is_empty(), "{name}: nothing decoded");
        let bytes: Vec<u8> = raw.concat();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        println!("IPVS-FIXTURE {name} {hex}");
    }
    assert_eq!(h.stats().decode, DecodeReport::default());
    Ok(())
}
