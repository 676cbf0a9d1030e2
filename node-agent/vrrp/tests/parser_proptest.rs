//! The parsers take bytes straight off the wire: random and mutated input must never panic,
//! and everything we encode must decode back to itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kube_lvs_vrrp::driver::announce::Arp;
use kube_lvs_vrrp::packet::{
    Advert, Auth, Expect, Family, MCAST_V4, MCAST_V6, Version, parse_ipv4,
};
use proptest::prelude::*;

fn v4_addr() -> impl Strategy<Value = IpAddr> {
    any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o)))
}
fn v6_addr() -> impl Strategy<Value = IpAddr> {
    any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o)))
}

fn advert() -> impl Strategy<Value = (Advert, IpAddr, IpAddr)> {
    let v2 = (
        any::<u8>(),
        any::<u8>(),
        1u16..=255,
        prop::collection::vec(v4_addr(), 0..20),
        prop::option::of(any::<[u8; 8]>()),
        v4_addr(),
    )
        .prop_map(|(vrid, priority, secs, addresses, pw, src)| {
            (
                Advert {
                    version: Version::V2,
                    vrid,
                    priority,
                    interval_cs: secs * 100,
                    addresses,
                    auth: pw.map(Auth::Simple).unwrap_or(Auth::None),
                },
                src,
                IpAddr::V4(MCAST_V4),
            )
        });
    let v3_4 = (
        any::<u8>(),
        any::<u8>(),
        1u16..=4095,
        prop::collection::vec(v4_addr(), 0..20),
        v4_addr(),
        v4_addr(),
    )
        .prop_map(|(vrid, priority, interval_cs, addresses, src, dst)| {
            (
                Advert {
                    version: Version::V3,
                    vrid,
                    priority,
                    interval_cs,
                    addresses,
                    auth: Auth::None,
                },
                src,
                dst,
            )
        });
    let v3_6 = (
        any::<u8>(),
        any::<u8>(),
        1u16..=4095,
        prop::collection::vec(v6_addr(), 1..10),
        v6_addr(),
    )
        .prop_map(|(vrid, priority, interval_cs, addresses, src)| {
            (
                Advert {
                    version: Version::V3,
                    vrid,
                    priority,
                    interval_cs,
                    addresses,
                    auth: Auth::None,
                },
                src,
                IpAddr::V6(MCAST_V6),
            )
        });
    prop_oneof![v2, v3_4, v3_6]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), ttl in any::<u8>()) {
        let s4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let s6 = IpAddr::V6("fe80::1".parse().unwrap());
        let _ = Advert::decode(&bytes, Family::V4, s4, IpAddr::V4(MCAST_V4));
        let _ = Advert::decode(&bytes, Family::V6, s6, IpAddr::V6(MCAST_V6));
        let _ = parse_ipv4(&bytes);
        let _ = Arp::decode(&bytes);
        let e = Expect { version: Version::V2, vrid: 1, auth: Auth::None, addresses: vec![], interval_cs: 100 };
        let _ = e.check(ttl, &bytes, Family::V4, s4, IpAddr::V4(MCAST_V4));
    }

    #[test]
    fn encode_decode_roundtrip((a, src, dst) in advert()) {
        let msg = a.encode(src, dst).unwrap();
        let fam = a.family();
        prop_assert_eq!(Advert::decode(&msg, fam, src, dst).unwrap(), a);
    }

    #[test]
    fn mutated_packets_never_panic_and_single_bit_flips_are_caught(
        (a, src, dst) in advert(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let msg = a.encode(src, dst).unwrap();
        let fam = a.family();
        let mut m = msg.clone();
        for (i, bit) in &flips {
            let i = i.index(m.len());
            m[i] ^= 1 << bit;
        }
        let _ = Advert::decode(&m, fam, src, dst);
        let truncated = &msg[..cut.index(msg.len())];
        prop_assert!(Advert::decode(truncated, fam, src, dst).is_err());
        // exactly one flipped bit always breaks the checksum (or an earlier check)
        let mut one = msg.clone();
        let (i, bit) = flips[0];
        let i = i.index(one.len());
        one[i] ^= 1 << bit;
        prop_assert!(Advert::decode(&one, fam, src, dst) != Ok(a.clone()));
    }
}
