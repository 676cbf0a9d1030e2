#![no_main]
//! Arbitrary bytes as a netlink datagram from the IPVS family, and as bare attribute sets.

use kube_lvs_ipvs::message::{
    decode_daemon, decode_datagram, decode_destination, decode_reply, decode_service,
};
use kube_lvs_ipvs::{AddressFamily, DecodeReport, Incoming, IpvsPayload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = DecodeReport::default();
    for m in decode_datagram(data, &mut r) {
        if let Incoming::Data { payload, .. } = m {
            let _ = decode_reply(&payload, Some(AddressFamily::Ipv6), &mut r);
        }
    }
    if let Some((&cmd, attrs)) = data.split_first() {
        let p = IpvsPayload {
            cmd,
            attrs: attrs.to_vec(),
        };
        let _ = decode_reply(&p, None, &mut r);
    }
    let _ = decode_service(data, &mut r);
    let _ = decode_destination(data, Some(AddressFamily::Ipv4), &mut r);
    let _ = decode_daemon(data, &mut r);
});
