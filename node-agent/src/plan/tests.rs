use std::collections::BTreeSet;
use std::net::IpAddr;

use kube_lvs_ipvs::{
    AddressFamily, Destination, Forwarding, Persistence, Protocol, Scheduler, Service, ServiceKey,
    TunnelType,
};
use kube_lvs_net::{AddressSpec, FwmarkRule, MarkProtocol, SysctlKey};
use proptest::prelude::*;

use super::sim::Kernel;
use super::*;
use crate::model::{Desired, Owned, ServiceState};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test literal")
}

fn key(port: u16) -> ServiceKey {
    ServiceKey::addr(Protocol::Tcp, ip("192.0.2.10"), port)
}

fn dest(addr: &str, weight: u32) -> Destination {
    let mut d = Destination::new(ip(addr), 80, Forwarding::DirectRoute);
    d.weight = weight;
    d
}

fn svc(port: u16, dests: &[Destination]) -> ServiceState {
    let mut s = ServiceState::new(Service::new(key(port), Scheduler::WeightedRoundRobin));
    for d in dests {
        s = s.with_destination(d.clone());
    }
    s
}

fn vip(label: Option<&str>) -> AddressSpec {
    AddressSpec::host("eth0", ip("192.0.2.10"), label.map(str::to_string))
}

fn base_kernel() -> Kernel {
    let mut k = Kernel::default();
    k.links.insert("lo".into());
    k.links.insert("eth0".into());
    for s in [
        "net.ipv4.ip_forward",
        "net.ipv4.conf.all.arp_ignore",
        "net.ipv4.conf.lo.arp_ignore",
        "net.ipv4.vs.expire_nodest_conn",
    ] {
        k.sysctls
            .insert(SysctlKey::parse(s).expect("key"), "0".into());
    }
    k
}

/// Plan, run in the simulator, and check that a second plan is empty.
fn converge(k: &mut Kernel, d: &Desired, owned: &mut Owned) -> Plan {
    let p = plan(d, &k.observe(d, owned), owned);
    k.run(&p.ops, owned).expect("plan must execute");
    let again = plan(d, &k.observe(d, owned), owned);
    assert!(
        again.ops.is_empty(),
        "second plan not empty: {:?}",
        again.ops
    );
    p
}

#[test]
fn nothing_wanted_nothing_done() {
    let k = base_kernel();
    let d = Desired::default();
    let o = Owned::default();
    assert!(plan(&d, &k.observe(&d, &o), &o).is_empty());
}

#[test]
fn new_service_then_destinations_then_vip() {
    let mut k = base_kernel();
    let mut d = Desired::default();
    d.add_service(svc(80, &[dest("198.51.100.1", 1), dest("198.51.100.2", 2)]));
    d.addresses.insert(vip(Some("eth0:kl")));
    let mut owned = Owned::default();
    let p = converge(&mut k, &d, &mut owned);
    let kinds: Vec<_> = p.ops.iter().map(Op::kind).collect();
    assert_eq!(
        kinds,
        vec![
            "add_service",
            "add_destination",
            "add_destination",
            "add_address"
        ]
    );
    assert!(owned.services.contains(&key(80)));
    assert!(owned.addresses.contains(&vip(Some("eth0:kl"))));
}

#[test]
fn weight_change_is_one_edit() {
    let mut k = base_kernel();
    let mut d = Desired::default();
    d.add_service(svc(80, &[dest("198.51.100.1", 1), dest("198.51.100.2", 1)]));
    let mut owned = Owned::default();
    converge(&mut k, &d, &mut owned);
    d.add_service(svc(80, &[dest("198.51.100.1", 5), dest("198.51.100.2", 1)]));
    let p = converge(&mut k, &d, &mut owned);
    assert_eq!(
        p.ops,
        vec![Op::EditDestination(key(80), dest("198.51.100.1", 5))]
    );
}

#[test]
fn scheduler_and_persistence_change_is_one_service_edit() {
    let mut k = base_kernel();
    let mut d = Desired::default();
    d.add_service(svc(80, &[dest("198.51.100.1", 1)]));
    let mut owned = Owned::default();
    converge(&mut k, &d, &mut owned);
    let mut s = svc(80, &[dest("198.51.100.1", 1)]);
    s.service.scheduler = Scheduler::SourceHashing;
    s.service.persistence = Some(Persistence {
        timeout_secs: 60,
        prefix_len: 24,
    });
    d.add_service(s.clone());
    let p = converge(&mut k, &d, &mut owned);
    assert_eq!(p.ops, vec![Op::EditService(s.service)]);
}

#[test]
fn forwarding_change_is_an_edit_not_a_replace() {
    let mut k = base_kernel();
    let mut d = Desired::default();
    d.add_service(svc(80, &[dest("198.51.100.1", 1)]));
    let mut owned = Owned::default();
    converge(&mut k, &d, &mut owned);
    let mut t = dest("198.51.100.1", 1);
    t.forwarding = Forwarding::Tunnel(TunnelType::Ipip);
    d.add_service(svc(80, &[t.clone()]));
    let p = converge(&mut k, &d, &mut owned);
    assert_eq!(p.ops, vec![Op::EditDestination(key(80), t)]);
}

#[test]
fn destination_port_change_is_delete_then_add() {
    let mut k = base_kernel();
    let mut d = Desired::default();
    d.add_service(svc(80, &[dest("198.51.100.1", 1)]));
    let mut owned = Owned::default();
    converge(&mut k, &d, &mut owned);
    let mut moved = dest("198.51.100.1", 1);
    moved.port = 8080;
    d.add_service(svc(80, &[moved.clone()]));
    let p = converge(&mut k, &d, &mut owned);
    assert_eq!(
        p.ops,
        vec![
            Op::DelDestination(key(80), dest("198.51.100.1", 1).key()),
            Op::AddDestination(key(80), moved)
        ]
    );
}

#[test]
fn local_forwarding_reported_by_kernel_is_not_a_difference() {
    let mut k = base_kernel();
    let mut d = Desired::default();
    d.add_service(svc(80, &[dest("198.51.100.1", 1)]));
    let mut owned = Owned::default();
    converge(&mut k, &d, &mut owned);
    if let Some(st) = k.services.get_mut(&key(80)) {
        for dd in st.destinations.values_mut() {
            dd.forwarding = Forwarding::Local;
        }
    }
    assert!(plan(&d, &k.observe(&d, &owned), &owned).is_empty());
}

#[test]
fn foreign_service_with_same_key_is_a_conflict_and_untouched() {
    let mut k = base_kernel();
    let foreign = svc(80, &[dest("203.0.113.9", 7)]);
    let other_foreign = svc(8443, &[dest("203.0.113.9", 1)]);
    k.services.insert(key(80), foreign.clone());
    k.services.insert(key(8443), other_foreign.clone());
    let mut d = Desired::default();
    d.add_service(svc(80, &[dest("198.51.100.1", 1)]));
    let owned = Owned::default();
    let p = plan(&d, &k.observe(&d, &owned), &owned);
    assert!(p.ops.is_empty(), "{:?}", p.ops);
    assert_eq!(p.conflicts, vec![Conflict::ServiceNotOwned(key(80))]);
    assert_eq!(p.conflicts[0].reason(), "ServiceExists");
}

#[test]
fn removal_order_vip_then_destinations_then_service() {
    let mut k = base_kernel();
    let mut d = Desired::default();
    d.add_service(svc(80, &[dest("198.51.100.1", 1), dest("198.51.100.2", 1)]));
    d.addresses.insert(vip(None));
    let mut owned = Owned::default();
    converge(&mut k, &d, &mut owned);
    let p = converge(&mut k, &Desired::default(), &mut owned);
    let kinds: Vec<_> = p.ops.iter().map(Op::kind).collect();
    assert_eq!(
        kinds,
        vec![
            "del_address",
            "del_destination",
            "del_destination",
            "del_service"
        ]
    );
    assert!(owned.is_empty());
    assert!(k.services.is_empty());
}

#[test]
fn sysctl_original_recorded_and_restored() {
    let mut k = base_kernel();
    let fwd = SysctlKey::ip_forward();
    let mut d = Desired::default();
    d.sysctls.insert(fwd.clone(), "1".into());
    let mut owned = Owned::default();
    let p = converge(&mut k, &d, &mut owned);
    assert_eq!(
        p.ops,
        vec![Op::SetSysctl {
            key: fwd.clone(),
            value: "1".into(),
            original: Some("0".into())
        }]
    );
    assert_eq!(owned.sysctls.get(&fwd).map(String::as_str), Some("0"));
    let p = converge(&mut k, &Desired::default(), &mut owned);
    assert_eq!(
        p.ops,
        vec![Op::RestoreSysctl {
            key: fwd.clone(),
            value: Some("0".into())
        }]
    );
    assert_eq!(k.sysctls.get(&fwd).map(String::as_str), Some("0"));
    assert!(owned.sysctls.is_empty());
}

#[test]
fn sysctl_already_right_is_not_claimed() {
    let mut k = base_kernel();
    let fwd = SysctlKey::ip_forward();
    k.sysctls.insert(fwd.clone(), "1".into());
    let mut d = Desired::default();
    d.sysctls.insert(fwd, "1".into());
    let mut owned = Owned::default();
    let p = converge(&mut k, &d, &mut owned);
    assert!(p.ops.is_empty());
    assert!(owned.sysctls.is_empty());
}

#[test]
fn owned_label_change_replaces_foreign_label_conflicts() {
    let mut k = base_kernel();
    let mut d = Desired::default();
    d.addresses.insert(vip(Some("eth0:kl")));
    let mut owned = Owned::default();
    converge(&mut k, &d, &mut owned);
    let mut d2 = Desired::default();
    d2.addresses.insert(vip(Some("eth0:k2")));
    let p = converge(&mut k, &d2, &mut owned);
    assert_eq!(
        p.ops,
        vec![Op::ReplaceAddress {
            old: vip(Some("eth0:kl")),
            new: vip(Some("eth0:k2"))
        }]
    );
    assert!(owned.addresses.contains(&vip(Some("eth0:k2"))));

    let mut k = base_kernel();
    k.addresses.insert(vip(Some("eth0:theirs")));
    let owned = Owned::default();
    let p = plan(&d, &k.observe(&d, &owned), &owned);
    assert!(p.ops.is_empty());
    assert_eq!(p.conflicts.len(), 1);
}

#[test]
fn foreign_identical_address_is_used_not_claimed() {
    let mut k = base_kernel();
    k.addresses.insert(vip(None));
    let mut d = Desired::default();
    d.addresses.insert(vip(None));
    let mut owned = Owned::default();
    let p = converge(&mut k, &d, &mut owned);
    assert!(p.ops.is_empty() && p.conflicts.is_empty());
    // Dropping it from desired must not remove an address we never created.
    let p = converge(&mut k, &Desired::default(), &mut owned);
    assert!(p.ops.is_empty());
    assert!(k.addresses.contains(&vip(None)));
}

#[test]
fn marks_synced_only_on_difference() {
    let mut k = base_kernel();
    let mut d = Desired::default();
    let rule = FwmarkRule {
        vip: ip("192.0.2.10"),
        protocol: Some(MarkProtocol::Tcp),
        ports: [80, 443].into_iter().collect(),
        mark: 1,
    };
    d.marks.insert(rule);
    d.add_service(ServiceState::new(Service::new(
        ServiceKey::fwmark(AddressFamily::Ipv4, 1),
        Scheduler::RoundRobin,
    )));
    let mut owned = Owned::default();
    let p = converge(&mut k, &d, &mut owned);
    assert_eq!(p.ops.len(), 2);
    assert_eq!(p.ops[1].kind(), "sync_marks");
    let p = converge(&mut k, &Desired::default(), &mut owned);
    let kinds: Vec<_> = p.ops.iter().map(Op::kind).collect();
    // The marks go before the service they feed.
    assert_eq!(kinds, vec!["sync_marks", "del_service"]);
    assert_eq!(k.marks, None);
}

#[test]
fn vanished_objects_are_forgotten_without_kernel_ops() {
    let mut k = base_kernel();
    let mut owned = Owned::default();
    owned.services.insert(key(80));
    owned.addresses.insert(vip(None));
    owned.links.insert("kl0".into());
    let p = converge(&mut k, &Desired::default(), &mut owned);
    assert_eq!(p.ops.len(), 3);
    assert_eq!(p.kernel_ops(), 0);
    assert!(owned.is_empty());
}

#[test]
fn dummy_link_created_before_its_address_and_removed_after() {
    let mut k = base_kernel();
    let mut d = Desired::default();
    d.links.insert("kl0".into());
    d.addresses
        .insert(AddressSpec::host("kl0", ip("192.0.2.10"), None));
    let mut owned = Owned::default();
    let p = converge(&mut k, &d, &mut owned);
    let kinds: Vec<_> = p.ops.iter().map(Op::kind).collect();
    assert_eq!(kinds, vec!["create_dummy", "add_address"]);
    let p = converge(&mut k, &Desired::default(), &mut owned);
    let kinds: Vec<_> = p.ops.iter().map(Op::kind).collect();
    assert_eq!(kinds, vec!["del_address", "delete_dummy"]);
    assert!(!k.links.contains("kl0"));
}

#[test]
fn existing_foreign_link_is_reported_and_kept() {
    let mut k = base_kernel();
    k.links.insert("kl0".into());
    let mut d = Desired::default();
    d.links.insert("kl0".into());
    let mut owned = Owned::default();
    let p = converge(&mut k, &d, &mut owned);
    assert_eq!(p.conflicts, vec![Conflict::LinkNotOwned("kl0".into())]);
    converge(&mut k, &Desired::default(), &mut owned);
    assert!(k.links.contains("kl0"));
}

// ---- property: plan reaches desired, re-plan is empty, foreign state untouched ----

const IFACES: [&str; 3] = ["lo", "eth0", "kl0"];
const SYSCTLS: [&str; 4] = [
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.arp_ignore",
    "net.ipv4.conf.lo.arp_announce",
    "net.ipv4.vs.expire_nodest_conn",
];

fn arb_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        (prop::sample::select(vec![80u16, 443, 8080])).prop_map(key),
        Just(ServiceKey::addr(Protocol::Udp, ip("2001:db8::10"), 53)),
        (1u32..3).prop_map(|m| ServiceKey::fwmark(AddressFamily::Ipv4, m)),
    ]
}

fn arb_dest(v6: bool) -> impl Strategy<Value = Destination> {
    let addrs: Vec<IpAddr> = if v6 {
        vec![ip("2001:db8::1"), ip("2001:db8::2"), ip("2001:db8::3")]
    } else {
        vec![ip("198.51.100.1"), ip("198.51.100.2"), ip("198.51.100.3")]
    };
    (
        prop::sample::select(addrs),
        prop::sample::select(vec![80u16, 8080]),
        prop::sample::select(vec![
            Forwarding::Masquerade,
            Forwarding::DirectRoute,
            Forwarding::Tunnel(TunnelType::Ipip),
        ]),
        0u32..4,
        0u32..3,
    )
        .prop_map(|(addr, port, fwd, weight, upper)| {
            let mut d = Destination::new(addr, port, fwd);
            d.weight = weight;
            d.upper_threshold = upper;
            d
        })
}

fn arb_service() -> impl Strategy<Value = ServiceState> {
    arb_key().prop_flat_map(|k| {
        let v6 = k.family() == AddressFamily::Ipv6;
        (
            Just(k),
            prop::sample::select(Scheduler::ALL.to_vec()),
            prop::option::of((1u32..600, Just(if v6 { 128u8 } else { 32u8 }))),
            prop::collection::vec(arb_dest(v6), 0..4),
        )
            .prop_map(|(k, sched, pers, dests)| {
                let mut s = Service::new(k, sched);
                s.persistence = pers.map(|(t, p)| Persistence {
                    timeout_secs: t,
                    prefix_len: p,
                });
                let mut st = ServiceState::new(s);
                for d in dests {
                    st.destinations.insert(d.key(), d);
                }
                st
            })
    })
}

fn arb_address() -> impl Strategy<Value = AddressSpec> {
    (
        prop::sample::select(IFACES.to_vec()),
        prop::sample::select(vec!["192.0.2.1", "192.0.2.2", "2001:db8::a"]),
        0usize..3,
    )
        .prop_map(|(ifname, addr, label)| {
            let addr = ip(addr);
            let label = match (addr.is_ipv4(), label) {
                (true, 1) => Some(format!("{ifname}:kl")),
                (true, 2) => Some(format!("{ifname}:x")),
                _ => None,
            };
            AddressSpec::host(ifname, addr, label)
        })
}

fn dedup_by_key(v: Vec<AddressSpec>) -> BTreeSet<AddressSpec> {
    let mut out: BTreeSet<AddressSpec> = BTreeSet::new();
    for a in v {
        if !out.iter().any(|x| x.key() == a.key()) {
            out.insert(a);
        }
    }
    out
}

fn arb_marks() -> impl Strategy<Value = BTreeSet<FwmarkRule>> {
    prop::collection::btree_set(
        (1u32..3, prop::bool::ANY).prop_map(|(mark, two)| FwmarkRule {
            vip: ip("192.0.2.10"),
            protocol: Some(MarkProtocol::Tcp),
            ports: if two {
                [80, 443].into_iter().collect()
            } else {
                [80].into_iter().collect()
            },
            mark,
        }),
        0..3,
    )
}

#[derive(Debug, Clone)]
struct Scenario {
    kernel: Kernel,
    owned: Owned,
    desired: Desired,
}

fn arb_scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(arb_service(), 0..4),
        prop::collection::vec(arb_address(), 0..4),
        prop::bool::ANY,
        prop::collection::vec(prop::sample::select(vec!["0", "1", "2"]), 4),
        arb_marks(),
        prop::collection::vec(prop::bool::ANY, 12),
        prop::collection::vec(arb_service(), 0..4),
        prop::collection::vec(arb_address(), 0..4),
        prop::bool::ANY,
        prop::collection::vec(prop::option::of(prop::sample::select(vec!["0", "1"])), 4),
        arb_marks(),
    )
        .prop_map(
            |(
                k_svcs,
                k_addrs,
                k_dummy,
                k_sysctl_vals,
                k_marks,
                own_bits,
                d_svcs,
                d_addrs,
                d_dummy,
                d_sysctls,
                d_marks,
            )| {
                let mut kernel = Kernel::default();
                kernel.links.insert("lo".into());
                kernel.links.insert("eth0".into());
                if k_dummy {
                    kernel.links.insert("kl0".into());
                }
                for st in k_svcs {
                    kernel.services.insert(st.service.key, st);
                }
                kernel.addresses = dedup_by_key(
                    k_addrs
                        .into_iter()
                        .filter(|a| kernel.links.contains(&a.ifname))
                        .collect(),
                );
                for (name, v) in SYSCTLS.iter().zip(k_sysctl_vals) {
                    kernel
                        .sysctls
                        .insert(SysctlKey::parse(name).expect("key"), v.to_string());
                }
                kernel.marks = (!k_marks.is_empty()).then_some(k_marks);

                // Ownership: some of what is in the kernel, plus a vanished service.
                let mut owned = Owned::default();
                let mut bit = own_bits.into_iter().cycle();
                for k in kernel.services.keys() {
                    if bit.next().unwrap_or(false) {
                        owned.services.insert(*k);
                    }
                }
                if bit.next().unwrap_or(false) {
                    owned.services.insert(key(9999));
                }
                for a in &kernel.addresses {
                    if bit.next().unwrap_or(false) {
                        owned.addresses.insert(a.clone());
                    }
                }
                if kernel.links.contains("kl0") && bit.next().unwrap_or(false) {
                    owned.links.insert("kl0".into());
                }
                if bit.next().unwrap_or(false) {
                    owned
                        .sysctls
                        .insert(SysctlKey::parse(SYSCTLS[0]).expect("key"), "0".into());
                }

                let mut desired = Desired::default();
                for st in d_svcs {
                    desired.add_service(st);
                }
                if d_dummy {
                    desired.links.insert("kl0".into());
                }
                desired.addresses = dedup_by_key(
                    d_addrs
                        .into_iter()
                        .filter(|a| a.ifname != "kl0" || d_dummy)
                        .collect(),
                );
                for (name, v) in SYSCTLS.iter().zip(d_sysctls) {
                    if let Some(v) = v {
                        desired
                            .sysctls
                            .insert(SysctlKey::parse(name).expect("key"), v.to_string());
                    }
                }
                desired.marks = d_marks;
                Scenario {
                    kernel,
                    owned,
                    desired,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn plan_converges_and_respects_ownership(sc in arb_scenario()) {
        let Scenario { mut kernel, mut owned, desired } = sc;
        let before = kernel.clone();
        let owned_before = owned.clone();
        let p = plan(&desired, &kernel.observe(&desired, &owned), &owned);
        kernel.run(&p.ops, &mut owned).map_err(|e| TestCaseError::fail(e.0))?;

        // Re-planning does nothing.
        let again = plan(&desired, &kernel.observe(&desired, &owned), &owned);
        prop_assert!(again.ops.is_empty(), "second plan: {:?}", again.ops);
        prop_assert_eq!(&again.conflicts, &p.conflicts);

        // Desired services are in place unless they conflict.
        for (k, want) in &desired.services {
            let conflicted = p.conflicts.contains(&Conflict::ServiceNotOwned(*k));
            let have = kernel.services.get(k);
            if conflicted {
                prop_assert_eq!(have, before.services.get(k));
            } else {
                let have = have.ok_or_else(|| TestCaseError::fail("missing service"))?;
                prop_assert_eq!(&have.service, &want.service);
                prop_assert_eq!(
                    have.destinations.keys().collect::<Vec<_>>(),
                    want.destinations.keys().collect::<Vec<_>>()
                );
                for (dk, d) in &want.destinations {
                    prop_assert!(crate::model::destination_matches(d, &have.destinations[dk]));
                }
            }
        }
        // Foreign services are untouched; owned ones that are not desired are gone.
        for (k, st) in &before.services {
            if !owned_before.services.contains(k) {
                prop_assert_eq!(kernel.services.get(k), Some(st));
            } else if !desired.services.contains_key(k) {
                prop_assert!(!kernel.services.contains_key(k));
            }
        }
        // Addresses: desired ones present (or conflicting), foreign ones kept.
        for a in &desired.addresses {
            let present = kernel.addresses.contains(a);
            let conflicted = p.conflicts.iter().any(|c| matches!(c, Conflict::AddressNotOwned { desired, .. } if desired == a));
            prop_assert!(present || conflicted, "address {} missing", a);
        }
        for a in &before.addresses {
            let ours = owned_before.addresses.iter().any(|x| x.key() == a.key());
            let link_kept = kernel.links.contains(&a.ifname);
            if !ours && link_kept {
                prop_assert!(kernel.addresses.contains(a), "foreign address {} changed", a);
            }
        }
        // Sysctls as desired; released ones back to their original value.
        for (k, v) in &desired.sysctls {
            prop_assert_eq!(kernel.sysctls.get(k), Some(v));
        }
        for (k, orig) in &owned_before.sysctls {
            if !desired.sysctls.contains_key(k) {
                prop_assert_eq!(kernel.sysctls.get(k), Some(orig));
            }
        }
        // Marks.
        let have_marks = kernel.marks.clone().unwrap_or_default();
        prop_assert_eq!(&have_marks, &desired.marks);
        // Ownership covers exactly what we created and still want.
        for k in &owned.services {
            prop_assert!(desired.services.contains_key(k));
        }
    }
}
