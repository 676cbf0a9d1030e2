//! Encode/decode of every IPVS message type, without privileges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kube_lvs_ipvs::message::{decode_datagram, decode_reply, encode_request};
use kube_lvs_ipvs::*;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
}

/// A request payload shaped like the kernel's reply for the same object decodes back to it.
fn round_trip(req: &Request, fam: Option<AddressFamily>) -> Reply {
    let mut report = DecodeReport::default();
    let reply = decode_reply(&req.to_payload(), fam, &mut report);
    assert_eq!(report, DecodeReport::default(), "{req:?}");
    match reply {
        Some(r) => r,
        None => panic!("no reply decoded for {req:?}"),
    }
}

fn sample_services() -> Vec<Service> {
    let mut out = Vec::new();
    for (i, sched) in Scheduler::ALL.into_iter().enumerate() {
        let port = 8000 + i as u16;
        let mut s = Service::new(
            ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 10), port),
            sched,
        );
        if sched.uses_sched_flags() {
            s.sched_flags = SchedFlags {
                fallback: true,
                port: i % 2 == 0,
                flag3: false,
            };
        }
        out.push(s);
    }
    let mut p = Service::new(
        ServiceKey::addr(Protocol::Udp, v6(1), 53),
        Scheduler::WeightedLeastConnection,
    );
    p.persistence = Some(Persistence {
        timeout_secs: 600,
        prefix_len: 64,
    });
    p.one_packet = true;
    out.push(p);
    let mut p4 = Service::new(
        ServiceKey::addr(Protocol::Sctp, v4(198, 51, 100, 7), 3868),
        Scheduler::RoundRobin,
    );
    p4.persistence = Some(Persistence {
        timeout_secs: 300,
        prefix_len: 24,
    });
    out.push(p4);
    out.push(Service::new(
        ServiceKey::fwmark(AddressFamily::Ipv4, 42),
        Scheduler::SourceHashing,
    ));
    out.push(Service::new(
        ServiceKey::fwmark(AddressFamily::Ipv6, 0xffff_fff0),
        Scheduler::MaglevHashing,
    ));
    out
}

fn sample_destinations() -> Vec<Destination> {
    let fwd = [
        Forwarding::Masquerade,
        Forwarding::DirectRoute,
        Forwarding::Local,
        Forwarding::Tunnel(TunnelType::Ipip),
        Forwarding::Tunnel(TunnelType::Gue {
            port: 6080,
            csum: TunnelChecksum::Csum,
        }),
        Forwarding::Tunnel(TunnelType::Gue {
            port: 6081,
            csum: TunnelChecksum::RemCsum,
        }),
        Forwarding::Tunnel(TunnelType::Gre {
            csum: TunnelChecksum::None,
        }),
        Forwarding::Tunnel(TunnelType::Gre {
            csum: TunnelChecksum::Csum,
        }),
    ];
    fwd.into_iter()
        .enumerate()
        .map(|(i, f)| Destination {
            addr: if i % 2 == 0 {
                v4(203, 0, 113, i as u8 + 1)
            } else {
                v6(i as u16)
            },
            port: 80 + i as u16,
            forwarding: f,
            weight: i as u32 * 7,
            upper_threshold: 1000 + i as u32,
            lower_threshold: i as u32,
        })
        .collect()
}

#[test]
fn services_round_trip() {
    for svc in sample_services() {
        for req in [
            Request::NewService(svc.clone()),
            Request::SetService(svc.clone()),
        ] {
            match round_trip(&req, None) {
                Reply::Service(info) => {
                    assert_eq!(info.config, svc);
                    assert_eq!(info.stats, Stats::default());
                    assert_eq!(info.pe_name, None);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn destinations_round_trip() {
    let key = ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 1), 80);
    for dest in sample_destinations() {
        for req in [
            Request::NewDestination {
                service: key,
                dest: dest.clone(),
            },
            Request::SetDestination {
                service: key,
                dest: dest.clone(),
            },
        ] {
            match round_trip(&req, Some(AddressFamily::Ipv4)) {
                Reply::Destination(info) => {
                    assert_eq!(info.config, dest);
                    assert_eq!(info.active_conns, 0);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn daemon_and_timeouts_round_trip() {
    let mut d = SyncDaemon::new(SyncState::Backup, "eth0", 9);
    d.max_len = 1472;
    d.mcast_group = Some(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 81)));
    d.mcast_port = 8848;
    d.mcast_ttl = 3;
    match round_trip(&Request::NewDaemon(d.clone()), None) {
        Reply::Daemon(got) => assert_eq!(got, d),
        other => panic!("unexpected {other:?}"),
    }
    let mut d6 = SyncDaemon::new(SyncState::Master, "veth-x", 1);
    d6.mcast_group = Some("ff02::81".parse().unwrap_or(v6(0)));
    match round_trip(&Request::NewDaemon(d6.clone()), None) {
        Reply::Daemon(got) => assert_eq!(got, d6),
        other => panic!("unexpected {other:?}"),
    }
    let t = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    assert_eq!(
        round_trip(&Request::SetTimeouts(t), None),
        Reply::Timeouts(t)
    );
}

#[test]
fn key_only_requests_have_expected_bytes() {
    let key = ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 1), 80);
    let p = Request::DelService(key).to_payload();
    assert_eq!(p.cmd, 3);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &[36u8, 0, 1, 0][..],           // nest IPVS_CMD_ATTR_SERVICE, len 36
        &[6, 0, 1, 0, 2, 0, 0, 0],      // AF = AF_INET (padded)
        &[6, 0, 2, 0, 6, 0, 0, 0],      // PROTOCOL = TCP
        &[8, 0, 3, 0, 192, 0, 2, 1],    // ADDR
        &[6, 0, 4, 0, 0, 80, 0, 0],     // PORT (network order)
    ].concat();
    assert_eq!(p.attrs, expected);
    let fw = Request::Zero(Some(ServiceKey::fwmark(AddressFamily::Ipv6, 5))).to_payload();
    assert_eq!(fw.cmd, 16);
    assert_eq!(
        fw.attrs,
        vec![20, 0, 1, 0, 6, 0, 1, 0, 10, 0, 0, 0, 8, 0, 5, 0, 5, 0, 0, 0]
    );
    assert!(Request::Flush.to_payload().attrs.is_empty());
    assert!(Request::Zero(None).to_payload().attrs.is_empty());
    let del = Request::DelDaemon(SyncState::Master).to_payload();
    assert_eq!(del.cmd, 10);
    assert_eq!(del.attrs, vec![12, 0, 3, 0, 8, 0, 1, 0, 1, 0, 0, 0]);
}

#[test]
fn persistence_netmask_encoding() {
    let mut s = Service::new(
        ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 1), 0),
        Scheduler::RoundRobin,
    );
    s.persistence = Some(Persistence {
        timeout_secs: 360,
        prefix_len: 24,
    });
    let attrs = Request::NewService(s).to_payload().attrs;
    // IPv4 netmask travels as the mask itself, network byte order.
    let needle = [8u8, 0, 9, 0, 255, 255, 255, 0];
    assert!(attrs.windows(8).any(|w| w == needle));
    // Flags word: PERSISTENT with a full mask.
    let flags = [12u8, 0, 7, 0, 1, 0, 0, 0, 255, 255, 255, 255];
    assert!(attrs.windows(12).any(|w| w == flags));
}

#[test]
fn every_request_frames_and_unframes() {
    let key = ServiceKey::addr(Protocol::Udp, v6(9), 53);
    let d = sample_destinations().remove(0);
    let reqs = vec![
        Request::NewService(sample_services().remove(0)),
        Request::SetService(sample_services().remove(1)),
        Request::DelService(key),
        Request::GetService(key),
        Request::DumpServices,
        Request::NewDestination {
            service: key,
            dest: d.clone(),
        },
        Request::SetDestination {
            service: key,
            dest: d.clone(),
        },
        Request::DelDestination {
            service: key,
            dest: d.key(),
        },
        Request::DumpDestinations(key),
        Request::NewDaemon(SyncDaemon::new(SyncState::Master, "lo", 1)),
        Request::DelDaemon(SyncState::Backup),
        Request::DumpDaemons,
        Request::SetTimeouts(Timeouts::default()),
        Request::GetTimeouts,
        Request::GetInfo,
        Request::Zero(None),
        Request::Flush,
    ];
    let mut buf = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        encode_request(&mut buf, 0x1d, 100 + i as u32, true, r);
    }
    assert_eq!(buf.len() % 4, 0);
    let mut report = DecodeReport::default();
    let msgs = decode_datagram(&buf, &mut report);
    assert_eq!(report, DecodeReport::default());
    assert_eq!(msgs.len(), reqs.len());
    for (i, (m, r)) in msgs.iter().zip(&reqs).enumerate() {
        match m {
            Incoming::Data { seq, payload } => {
                assert_eq!(*seq, 100 + i as u32);
                assert_eq!(payload, &r.to_payload());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Header flags: dumps carry NLM_F_DUMP, mutations ask for an ack.
    assert_eq!(Request::DumpServices.netlink_flags(true), 0x1 | 0x300);
    assert_eq!(Request::Flush.netlink_flags(true), 0x1 | 0x4);
    assert_eq!(Request::Flush.netlink_flags(false), 0x1);
    assert_eq!(Request::GetInfo.netlink_flags(true), 0x1);
}

#[test]
fn ack_error_and_done_are_recognised() {
    // nlmsgerr: error code then the original header (CAP_ACK).
    fn nlmsgerr(seq: u32, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0u8; 16]);
        m
    }
    let mut buf = nlmsgerr(7, 0);
    buf.extend(nlmsgerr(8, -17));
    let mut done = Vec::new();
    done.extend_from_slice(&20u32.to_ne_bytes());
    done.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
    done.extend_from_slice(&2u16.to_ne_bytes());
    done.extend_from_slice(&9u32.to_ne_bytes());
    done.extend_from_slice(&0u32.to_ne_bytes());
    done.extend_from_slice(&0i32.to_ne_bytes());
    buf.extend(done);
    let mut report = DecodeReport::default();
    let msgs = decode_datagram(&buf, &mut report);
    assert_eq!(
        msgs,
        vec![
            Incoming::Ack { seq: 7 },
            Incoming::Error { seq: 8, errno: 17 },
            Incoming::Done { seq: 9 }
        ]
    );
    assert!(Error::from_errno("x", 17).is_exists());
}

#[test]
fn unknown_scheduler_drops_entry_and_counts() {
    // Encode a service, then rename its scheduler to one this crate does not know.
    let svc = Service::new(
        ServiceKey::addr(Protocol::Tcp, v4(192, 0, 2, 1), 80),
        Scheduler::RoundRobin,
    );
    let mut p = Request::NewService(svc).to_payload();
    let pos = p.attrs.windows(3).position(|w| w == b"rr\0");
    let Some(pos) = pos else {
        panic!("scheduler name not found")
    };
    p.attrs[pos] = b'x';
    let mut report = DecodeReport::default();
    assert_eq!(decode_reply(&p, None, &mut report), None);
    assert_eq!(report.dropped_entries, 1);
}
