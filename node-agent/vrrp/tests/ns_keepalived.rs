//! Interoperability with keepalived 2.2.7 in network namespaces on the host kernel.
//! Every test asserts who holds the VIP by address presence and by who answers ARP (or
//! neighbour discovery) from the client namespace.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::*;
use nix::sys::signal::Signal;

const VIP_S: &str = "192.0.2.100";
const POLL: Duration = Duration::from_millis(20);

fn holds(bed: &Bed, ns: &str) -> bool {
    bed.has_addr(ns, VIP_S)
}

/// True when `ns` never gets `addr` during `d`.
fn never_holds(bed: &Bed, ns: &str, addr: &str, d: Duration) -> bool {
    !wait_for(d, POLL, || bed.has_addr(ns, addr))
}

fn set(m: [u8; 6]) -> BTreeSet<[u8; 6]> {
    BTreeSet::from([m])
}

fn diag(bed: &Bed, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("--- {n}\n{}", log_of(bed, n)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn v2_pass_keepalived_higher_we_backup_then_keepalived_crash() -> Result<()> {
    let bed = Bed::new("p")?;
    let mut ka_vr = Vr::v4(2, 150, 1000);
    ka_vr.password = Some("s3cret".into());
    let mut sp_vr = Vr::v4(2, 100, 1000);
    sp_vr.password = Some("s3cret".into());
    let mut ka = start_keepalived(&bed, &bed.a(), "a", &ka_vr)?;
    let sp = start_speaker(&bed, &bed.b(), "b", &sp_vr)?;
    ensure!(
        wait_for(Duration::from_secs(10), POLL, || holds(&bed, &bed.a())),
        "keepalived never became master\n{}",
        diag(&bed, &["ka-a", "sp-b"])
    );
    ensure!(
        never_holds(&bed, &bed.b(), VIP_S, Duration::from_millis(2500)),
        "we took the VIP from a higher-priority keepalived\n{}",
        diag(&bed, &["ka-a", "sp-b"])
    );
    ensure!(
        bed.arp_owners(VIP, Duration::from_millis(300))? == set(A_MAC),
        "ARP not answered by keepalived only"
    );
    sp.signal(Signal::SIGUSR1);
    ensure!(
        wait_for(Duration::from_secs(2), POLL, || live_metric(
            &bed,
            &sp,
            "b",
            "vrrp_adverts_received_total"
        )
        .unwrap_or(0)
            > 0),
        "speaker accepted no adverts"
    );
    ensure!(
        metric(
            &bed,
            "b",
            "vrrp_packets_dropped_total{instance=\"vi_b\",reason=\"auth\"}"
        ) == Some(0)
    );

    ka.crash();
    let t = Instant::now();
    ensure!(
        wait_for(Duration::from_secs(6), POLL, || holds(&bed, &bed.b())),
        "we did not take over after keepalived was killed\n{}",
        diag(&bed, &["sp-b"])
    );
    // Master_Down_Interval for v2, priority 100: 3 s + 0.61 s.
    ensure!(
        t.elapsed() < Duration::from_millis(4500),
        "takeover too slow: {:?}",
        t.elapsed()
    );
    // the killed keepalived leaves its address behind, so both may answer; ours must.
    ensure!(
        bed.arp_owners(VIP, Duration::from_millis(300))?
            .contains(&B_MAC),
        "our MAC does not answer ARP"
    );

    // keepalived back with a lower priority: it must accept our v2 PASS adverts and stay
    // backup for longer than its Master_Down_Interval (3.8 s at priority 50).
    bed.del_addr(&bed.a(), "192.0.2.100/32");
    let mut low = ka_vr.clone();
    low.priority = 50;
    let _ka2 = start_keepalived(&bed, &bed.a(), "a2", &low)?;
    ensure!(
        never_holds(&bed, &bed.a(), VIP_S, Duration::from_millis(4500)),
        "keepalived rejected our v2 adverts\n{}",
        diag(&bed, &["ka-a2", "sp-b"])
    );
    ensure!(
        log_of(&bed, "ka-a2").contains("Entering BACKUP STATE"),
        "keepalived did not start: {}",
        log_of(&bed, "ka-a2")
    );
    ensure!(bed.arp_owners(VIP, Duration::from_millis(300))? == set(B_MAC));
    Ok(())
}

#[test]
fn v2_password_mismatch_is_dropped_and_both_become_master() -> Result<()> {
    let bed = Bed::new("m")?;
    let mut ka_vr = Vr::v4(2, 150, 1000);
    ka_vr.password = Some("alpha".into());
    let mut sp_vr = Vr::v4(2, 100, 1000);
    sp_vr.password = Some("bravo".into());
    let _ka = start_keepalived(&bed, &bed.a(), "a", &ka_vr)?;
    let sp = start_speaker(&bed, &bed.b(), "b", &sp_vr)?;
    ensure!(
        wait_for(Duration::from_secs(10), POLL, || holds(&bed, &bed.a())
            && holds(&bed, &bed.b())),
        "with mismatching passwords both must claim the VIP\n{}",
        diag(&bed, &["ka-a", "sp-b"])
    );
    sp.signal(Signal::SIGUSR1);
    let auth = "vrrp_packets_dropped_total{instance=\"vi_b\",reason=\"auth\"}";
    ensure!(
        wait_for(Duration::from_secs(3), POLL, || live_metric(
            &bed, &sp, "b", auth
        )
        .unwrap_or(0)
            > 0),
        "auth drops not counted"
    );
    let owners = bed.arp_owners(VIP, Duration::from_millis(300))?;
    ensure!(
        owners.contains(&A_MAC) && owners.contains(&B_MAC),
        "both should answer ARP: {owners:?}"
    );
    Ok(())
}

#[test]
fn v3_100ms_we_preempt_keepalived_then_graceful_stop_hands_back() -> Result<()> {
    let bed = Bed::new("g")?;
    let _ka = start_keepalived(&bed, &bed.b(), "b", &Vr::v4(3, 100, 100))?;
    ensure!(
        wait_for(Duration::from_secs(5), POLL, || holds(&bed, &bed.b())),
        "keepalived never became master\n{}",
        diag(&bed, &["ka-b"])
    );
    let mut sp = start_speaker(&bed, &bed.a(), "a", &Vr::v4(3, 200, 100))?;
    ensure!(
        wait_for(Duration::from_secs(3), POLL, || holds(&bed, &bed.a())
            && !holds(&bed, &bed.b())),
        "we did not preempt keepalived\n{}",
        diag(&bed, &["ka-b", "sp-a"])
    );
    ensure!(
        never_holds(&bed, &bed.b(), VIP_S, Duration::from_secs(1)),
        "keepalived did not stay backup"
    );
    ensure!(
        bed.arp_owners(VIP, Duration::from_millis(300))? == set(A_MAC),
        "ARP not answered by us only"
    );

    let probe = ArpProbe::open(&bed.client())?;
    let t = Instant::now();
    ensure!(sp.stop(), "speaker did not exit on SIGTERM");
    let answered = probe.wait_owner(VIP, B_MAC, Duration::from_secs(3), Duration::from_millis(5));
    ensure!(
        answered.is_some(),
        "keepalived did not take over\n{}",
        diag(&bed, &["ka-b", "sp-a"])
    );
    let took = answered.map(|a| a - t).unwrap_or_default();
    // skew for priority 100 at 100 ms is 61 ms; allow for scheduling on a busy machine.
    ensure!(
        took < Duration::from_millis(600),
        "graceful handover took {took:?}"
    );
    ensure!(!holds(&bed, &bed.a()), "we kept the VIP after stopping");
    ensure!(wait_for(Duration::from_secs(1), POLL, || holds(
        &bed,
        &bed.b()
    )));
    Ok(())
}

#[test]
fn nopreempt_on_both_sides_keeps_the_first_master() -> Result<()> {
    let bed = Bed::new("n")?;
    let mut low = Vr::v4(3, 100, 100);
    low.preempt = false;
    let mut high = Vr::v4(3, 200, 100);
    high.preempt = false;

    // keepalived first and lower: we, higher but nopreempt, stay backup.
    let mut ka = start_keepalived(&bed, &bed.a(), "a1", &low)?;
    ensure!(
        wait_for(Duration::from_secs(5), POLL, || holds(&bed, &bed.a())),
        "{}",
        diag(&bed, &["ka-a1"])
    );
    let mut sp = start_speaker(&bed, &bed.b(), "b1", &high)?;
    ensure!(
        never_holds(&bed, &bed.b(), VIP_S, Duration::from_secs(2)),
        "nopreempt speaker took over\n{}",
        diag(&bed, &["ka-a1", "sp-b1"])
    );
    ensure!(holds(&bed, &bed.a()));
    ensure!(bed.arp_owners(VIP, Duration::from_millis(300))? == set(A_MAC));
    ka.stop();
    sp.stop();
    bed.del_addr(&bed.a(), "192.0.2.100/32");
    bed.del_addr(&bed.b(), "192.0.2.100/32");

    // we first and lower: keepalived, higher but nopreempt, stays backup.
    let _sp = start_speaker(&bed, &bed.a(), "a2", &low)?;
    ensure!(
        wait_for(Duration::from_secs(5), POLL, || holds(&bed, &bed.a())),
        "{}",
        diag(&bed, &["sp-a2"])
    );
    let _ka = start_keepalived(&bed, &bed.b(), "b2", &high)?;
    ensure!(
        never_holds(&bed, &bed.b(), VIP_S, Duration::from_secs(2)),
        "nopreempt keepalived took over\n{}",
        diag(&bed, &["sp-a2", "ka-b2"])
    );
    ensure!(holds(&bed, &bed.a()));
    ensure!(bed.arp_owners(VIP, Duration::from_millis(300))? == set(A_MAC));
    Ok(())
}

#[test]
fn v3_unicast_peers_keepalived_higher_then_crash() -> Result<()> {
    let bed = Bed::new("u")?;
    let mut ka_vr = Vr::v4(3, 150, 100);
    ka_vr.unicast_src = Some(A_IP.into());
    ka_vr.unicast_peer = Some(B_IP.into());
    let mut sp_vr = Vr::v4(3, 100, 100);
    sp_vr.unicast_src = Some(B_IP.into());
    sp_vr.unicast_peer = Some(A_IP.into());
    let mut ka = start_keepalived(&bed, &bed.a(), "a", &ka_vr)?;
    let sp = start_speaker(&bed, &bed.b(), "b", &sp_vr)?;
    ensure!(
        wait_for(Duration::from_secs(5), POLL, || holds(&bed, &bed.a())),
        "{}",
        diag(&bed, &["ka-a"])
    );
    ensure!(
        never_holds(&bed, &bed.b(), VIP_S, Duration::from_secs(1)),
        "unicast adverts not understood\n{}",
        diag(&bed, &["ka-a", "sp-b"])
    );
    sp.signal(Signal::SIGUSR1);
    ensure!(wait_for(Duration::from_secs(2), POLL, || live_metric(
        &bed,
        &sp,
        "b",
        "vrrp_adverts_received_total"
    )
    .unwrap_or(0)
        > 5));
    ensure!(bed.arp_owners(VIP, Duration::from_millis(300))? == set(A_MAC));
    ka.crash();
    let t = Instant::now();
    ensure!(
        wait_for(Duration::from_secs(3), POLL, || holds(&bed, &bed.b())),
        "{}",
        diag(&bed, &["sp-b"])
    );
    ensure!(
        t.elapsed() < Duration::from_secs(1),
        "takeover took {:?}",
        t.elapsed()
    );
    ensure!(
        bed.arp_owners(VIP, Duration::from_millis(300))?
            .contains(&B_MAC)
    );
    Ok(())
}

#[test]
fn v3_ipv6_vip_neighbour_discovery_follows_master() -> Result<()> {
    let bed = Bed::new("6")?;
    let mut ka_vr = Vr::v4(3, 100, 100);
    ka_vr.vip = format!("{VIP6}/128");
    let mut sp_vr = ka_vr.clone();
    sp_vr.priority = 200;
    let _ka = start_keepalived(&bed, &bed.b(), "b", &ka_vr)?;
    let mut sp = start_speaker(&bed, &bed.a(), "a", &sp_vr)?;
    ensure!(
        wait_for(Duration::from_secs(5), POLL, || bed
            .has_addr(&bed.a(), VIP6)),
        "we never became IPv6 master\n{}",
        diag(&bed, &["ka-b", "sp-a"])
    );
    ensure!(
        never_holds(&bed, &bed.b(), VIP6, Duration::from_secs(1)),
        "keepalived did not accept our IPv6 adverts\n{}",
        diag(&bed, &["ka-b", "sp-a"])
    );
    let owner = bed.nd_owner(VIP6);
    ensure!(
        owner.as_deref() == Some(mac_str(&A_MAC).as_str()),
        "ND not answered by us: {owner:?}\n{}",
        diag(&bed, &["ka-b", "sp-a"])
    );
    ensure!(sp.stop());
    ensure!(
        wait_for(Duration::from_secs(2), POLL, || bed
            .has_addr(&bed.b(), VIP6)),
        "keepalived did not take the IPv6 VIP\n{}",
        diag(&bed, &["ka-b", "sp-a"])
    );
    ensure!(!bed.has_addr(&bed.a(), VIP6));
    let owner = bed.nd_owner(VIP6);
    ensure!(
        owner.as_deref() == Some(mac_str(&B_MAC).as_str()),
        "ND not answered by keepalived: {owner:?}"
    );
    Ok(())
}

#[test]
fn sync_group_keeps_all_vips_on_one_director() -> Result<()> {
    let bed = Bed::new("s")?;
    // keepalived on A only runs vrid 51 (higher). Ungrouped, our vrid 52 would be master on B
    // (no peer); grouped with 51 it must stay backup so that both VIPs sit on one director.
    let mut ka = start_keepalived(&bed, &bed.a(), "a", &Vr::v4(3, 150, 100))?;
    let json = format!(
        r#"{{"instances":[
{{"name":"vi_1","interface":"{IFACE}","version":3,"vrid":51,"priority":100,"advert_interval_ms":100,
  "vips":["192.0.2.100/32"],"group":"g","garp_repeat_delay_ms":0}},
{{"name":"vi_2","interface":"{IFACE}","version":3,"vrid":52,"priority":100,"advert_interval_ms":100,
  "vips":["192.0.2.101/32"],"group":"g","garp_repeat_delay_ms":0}}]}}"#
    );
    ensure!(
        wait_for(Duration::from_secs(5), POLL, || holds(&bed, &bed.a())),
        "{}",
        diag(&bed, &["ka-a"])
    );
    let _sp = start_speaker_json(&bed, &bed.b(), "b", &json)?;
    ensure!(
        never_holds(&bed, &bed.b(), "192.0.2.101", Duration::from_secs(2)),
        "our group split\n{}",
        diag(&bed, &["ka-a", "sp-b"])
    );
    ensure!(!holds(&bed, &bed.b()));
    ensure!(holds(&bed, &bed.a()));
    ka.crash();
    ensure!(
        wait_for(Duration::from_secs(3), POLL, || bed
            .has_addr(&bed.b(), "192.0.2.100")
            && bed.has_addr(&bed.b(), "192.0.2.101")),
        "our group did not take over both VIPs\n{}",
        diag(&bed, &["sp-b"])
    );
    let second = std::net::Ipv4Addr::new(192, 0, 2, 101);
    ensure!(bed.arp_owners(second, Duration::from_millis(300))? == set(B_MAC));
    ensure!(
        bed.arp_owners(VIP, Duration::from_millis(300))?
            .contains(&B_MAC)
    );
    Ok(())
}

/// Crafted adverts from the client namespace: each invalid kind is dropped and counted under
/// its reason, and only the valid higher-priority advert makes our master step down.
#[test]
fn crafted_invalid_adverts_are_dropped_with_reasons() -> Result<()> {
    use kube_lvs_vrrp::packet::{Advert, Auth, MCAST_V4, Version};
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use std::net::{IpAddr, SocketAddr, SocketAddrV4};

    let bed = Bed::new("x")?;
    let sp = start_speaker(&bed, &bed.a(), "a", &Vr::v4(3, 100, 100))?;
    ensure!(
        wait_for(Duration::from_secs(3), POLL, || holds(&bed, &bed.a())),
        "{}",
        diag(&bed, &["sp-a"])
    );
    let open = |ttl: u32| {
        in_netns(&bed.client(), move || {
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112)))?;
            s.set_multicast_ttl_v4(ttl)?;
            s.set_multicast_if_v4(&CLIENT_IP)?;
            Ok(s)
        })
    };
    let good_ttl = open(255)?;
    let bad_ttl = open(64)?;
    let dst: SockAddr = SocketAddr::V4(SocketAddrV4::new(MCAST_V4, 0)).into();
    let src = IpAddr::V4(CLIENT_IP);
    let advert = |vrid: u8, addr: [u8; 4]| Advert {
        version: Version::V3,
        vrid,
        priority: 200,
        interval_cs: 10,
        addresses: vec![IpAddr::from(addr)],
        auth: Auth::None,
    };
    let valid = advert(51, [192, 0, 2, 100]).encode(src, IpAddr::V4(MCAST_V4))?;
    let mut bad_sum = valid.clone();
    if let Some(b) = bad_sum.get_mut(7) {
        *b ^= 0xff;
    }
    let other_vrid = advert(52, [192, 0, 2, 100]).encode(src, IpAddr::V4(MCAST_V4))?;
    let other_vips = advert(51, [192, 0, 2, 99]).encode(src, IpAddr::V4(MCAST_V4))?;
    for _ in 0..10 {
        bad_ttl.send_to(&valid, &dst)?;
        good_ttl.send_to(&bad_sum, &dst)?;
        good_ttl.send_to(&other_vrid, &dst)?;
        good_ttl.send_to(&other_vips, &dst)?;
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(holds(&bed, &bed.a()), "an invalid advert made us step down");
    sp.signal(Signal::SIGUSR1);
    let m = |reason: &str| {
        live_metric(
            &bed,
            &sp,
            "a",
            &format!("vrrp_packets_dropped_total{{instance=\"vi_a\",reason=\"{reason}\"}}"),
        )
        .unwrap_or(0)
    };
    ensure!(
        wait_for(Duration::from_secs(2), POLL, || m("ttl") >= 10
            && m("checksum") >= 10
            && m("router_id") >= 10
            && m("address_list") >= 10),
        "drop counters: ttl {} checksum {} router_id {} address_list {}",
        m("ttl"),
        m("checksum"),
        m("router_id"),
        m("address_list")
    );
    // the same advert with TTL 255 is accepted: we step down and release the VIP
    for _ in 0..5 {
        good_ttl.send_to(&valid, &dst)?;
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(
        wait_for(Duration::from_secs(2), POLL, || !holds(&bed, &bed.a())),
        "a valid higher-priority advert did not make us backup"
    );
    Ok(())
}

/// After a takeover our announcements (gratuitous ARP, unsolicited NA with Override) must
/// rewrite the client's existing neighbour entry without the client asking again.
fn announcements_update_client_cache(vip: &str, prefix: u8, tag: &str) -> Result<()> {
    let bed = Bed::new(tag)?;
    let mut ka_vr = Vr::v4(3, 150, 100);
    ka_vr.vip = format!("{vip}/{prefix}");
    let mut sp_vr = ka_vr.clone();
    sp_vr.priority = 100;
    let mut ka = start_keepalived(&bed, &bed.a(), "a", &ka_vr)?;
    let _sp = start_speaker(&bed, &bed.b(), "b", &sp_vr)?;
    ensure!(
        wait_for(Duration::from_secs(5), POLL, || bed.has_addr(&bed.a(), vip)),
        "{}",
        diag(&bed, &["ka-a", "sp-b"])
    );
    let a_mac = mac_str(&A_MAC);
    ensure!(
        wait_for(Duration::from_secs(3), Duration::from_millis(100), || {
            let _ = bed.client_poke(vip);
            bed.client_neigh(vip).as_deref() == Some(a_mac.as_str())
        }),
        "client never resolved the VIP to keepalived's MAC"
    );
    // The kernel ignores overrides within locktime (1 s) of the last update.
    std::thread::sleep(Duration::from_millis(1200));
    ka.crash();
    let b_mac = mac_str(&B_MAC);
    ensure!(
        wait_for(Duration::from_secs(3), POLL, || bed
            .client_neigh(vip)
            .as_deref()
            == Some(b_mac.as_str())),
        "client cache still says {:?} after our takeover\n{}",
        bed.client_neigh(vip),
        diag(&bed, &["sp-b"])
    );
    Ok(())
}

#[test]
fn gratuitous_arp_updates_client_cache_on_takeover() -> Result<()> {
    announcements_update_client_cache(VIP_S, 32, "ga")
}

#[test]
fn unsolicited_na_updates_client_cache_on_takeover() -> Result<()> {
    announcements_update_client_cache(VIP6, 128, "na")
}
