//! The decoders must never panic, whatever the kernel (or an attacker) sends.

use kube_lvs_ipvs::message::{
    decode_daemon, decode_datagram, decode_destination, decode_reply, decode_service,
    encode_request,
};
use kube_lvs_ipvs::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn arb_service() -> impl Strategy<Value = Service> {
    let key = prop_oneof![
        (
            prop_oneof![
                Just(Protocol::Tcp),
                Just(Protocol::Udp),
                Just(Protocol::Sctp)
            ],
            arb_addr(),
            any::<u16>()
        )
            .prop_map(|(p, a, port)| ServiceKey::addr(p, a, port)),
        (any::<bool>(), 1u32..).prop_map(|(six, mark)| ServiceKey::fwmark(
            if six {
                AddressFamily::Ipv6
            } else {
                AddressFamily::Ipv4
            },
            mark
        )),
    ];
    (
        key,
        0usize..13,
        any::<(bool, bool, bool, bool)>(),
        proptest::option::of((any::<u32>(), any::<u8>())),
    )
        .prop_map(|(key, s, (a, b, c, one), pers)| {
            let max = key.family().max_prefix();
            Service {
                key,
                scheduler: Scheduler::ALL[s],
                sched_flags: SchedFlags {
                    fallback: a,
                    port: b,
                    flag3: c,
                },
                one_packet: one,
                persistence: pers.map(|(t, p)| Persistence {
                    timeout_secs: t,
                    prefix_len: p % (max + 1),
                }),
            }
        })
}

fn arb_forwarding() -> impl Strategy<Value = Forwarding> {
    let csum = prop_oneof![
        Just(TunnelChecksum::None),
        Just(TunnelChecksum::Csum),
        Just(TunnelChecksum::RemCsum)
    ];
    prop_oneof![
        Just(Forwarding::Masquerade),
        Just(Forwarding::DirectRoute),
        Just(Forwarding::Local),
        Just(Forwarding::Tunnel(TunnelType::Ipip)),
        (any::<u16>(), csum.clone())
            .prop_map(|(port, csum)| Forwarding::Tunnel(TunnelType::Gue { port, csum })),
        csum.prop_map(|csum| Forwarding::Tunnel(TunnelType::Gre { csum })),
    ]
}

fn arb_destination() -> impl Strategy<Value = Destination> {
    (
        arb_addr(),
        any::<u16>(),
        arb_forwarding(),
        any::<(u32, u32, u32)>(),
    )
        .prop_map(|(addr, port, forwarding, (w, u, l))| Destination {
            addr,
            port,
            forwarding,
            weight: w,
            upper_threshold: u,
            lower_threshold: l,
        })
}

/// Valid datagram of a few requests, to be mutated.
fn valid_datagram(svc: &Service, dest: &Destination) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_request(&mut buf, 30, 1, true, &Request::NewService(svc.clone()));
    encode_request(
        &mut buf,
        30,
        2,
        false,
        &Request::NewDestination {
            service: svc.key,
            dest: dest.clone(),
        },
    );
    encode_request(
        &mut buf,
        30,
        3,
        true,
        &Request::NewDaemon(SyncDaemon::new(SyncState::Master, "eth0", 3)),
    );
    buf
}

fn decode_everything(buf: &[u8]) {
    let mut r = DecodeReport::default();
    for m in decode_datagram(buf, &mut r) {
        if let Incoming::Data { payload, .. } = m {
            let _ = decode_reply(&payload, Some(AddressFamily::Ipv4), &mut r);
            let _ = decode_reply(&payload, None, &mut r);
        }
    }
    let _ = decode_service(buf, &mut r);
    let _ = decode_destination(buf, Some(AddressFamily::Ipv6), &mut r);
    let _ = decode_daemon(buf, &mut r);
    for cmd in 0..=18u8 {
        let p = IpvsPayload {
            cmd,
            attrs: buf.to_vec(),
        };
        let _ = decode_reply(&p, Some(AddressFamily::Ipv4), &mut r);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
        decode_everything(&buf);
    }

    #[test]
    fn mutated_messages_never_panic(
        svc in arb_service(),
        dest in arb_destination(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut buf = valid_datagram(&svc, &dest);
        let len = buf.len();
        for (pos, val) in flips {
            buf[pos % len] = val;
        }
        decode_everything(&buf);
        buf.truncate(cut % (len + 1));
        decode_everything(&buf);
    }

    #[test]
    fn services_round_trip(svc in arb_service()) {
        let mut r = DecodeReport::default();
        let got = decode_reply(&Request::NewService(svc.clone()).to_payload(), None, &mut r);
        prop_assert_eq!(r, DecodeReport::default());
        match got {
            Some(Reply::Service(info)) => prop_assert_eq!(info.config, svc),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn destinations_round_trip(dest in arb_destination()) {
        let key = ServiceKey::fwmark(AddressFamily::Ipv4, 1);
        let req = Request::NewDestination { service: key, dest: dest.clone() };
        let mut r = DecodeReport::default();
        match decode_reply(&req.to_payload(), None, &mut r) {
            Some(Reply::Destination(info)) => prop_assert_eq!(info.config, dest),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}
