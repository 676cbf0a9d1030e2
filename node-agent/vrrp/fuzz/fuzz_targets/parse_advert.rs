//! `cargo +nightly fuzz run parse_advert` — every parser that sees network bytes.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kube_lvs_vrrp::driver::announce::Arp;
use kube_lvs_vrrp::packet::{
    Advert, Auth, Expect, Family, MCAST_V4, MCAST_V6, Version, parse_ipv4,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let s6 = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
    let _ = Advert::decode(data, Family::V4, s4, IpAddr::V4(MCAST_V4));
    let _ = Advert::decode(data, Family::V6, s6, IpAddr::V6(MCAST_V6));
    if let Ok((meta, payload)) = parse_ipv4(data) {
        let e = Expect {
            version: Version::V3,
            vrid: 51,
            auth: Auth::None,
            addresses: vec![],
            interval_cs: 100,
        };
        let _ = e.check(
            meta.ttl,
            payload,
            Family::V4,
            IpAddr::V4(meta.src),
            IpAddr::V4(meta.dst),
        );
    }
    let _ = Arp::decode(data);
});
