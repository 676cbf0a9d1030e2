//! Cluster-wide decisions that need more than one object, as pure functions.
//!
//! - **Listener conflicts**: two VirtualServices may not claim the same (VIP, protocol, port) or the
//!   same (VIP family, firewall mark). The oldest object keeps the listener (creation time, then
//!   namespace/name); the others get a `Conflict` condition and nothing is programmed for them.
//! - **VRRP router ids**: one VRRP instance carries one VIP, shared by every VirtualService on that
//!   VIP (ports 80 and 443 of one site move together). Router ids are unique per address family
//!   (IPv4 and IPv6 VRRP are separate protocols on the wire). Explicit ids are honoured; automatic
//!   ones keep the id already recorded in status when it is still free, so a restart or an unrelated
//!   change never renumbers a running instance.
//! - **Priorities**: explicit per-node priorities, or automatic ones in descending order over the
//!   eligible director nodes sorted by name (the first is the preferred master).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Highest automatic priority; keepalived configurations commonly use 100/90, we leave room above
/// for operators who set explicit priorities next to automatic ones.
pub const AUTO_PRIORITY_BASE: u8 = 150;
/// Distance between automatic priorities of consecutive directors.
pub const AUTO_PRIORITY_STEP: u8 = 10;

/// What a VirtualService listens on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Listener {
    /// VIP, protocol (upper-case name) and port.
    Port {
        vip: IpAddr,
        protocol: String,
        port: u16,
    },
    /// Firewall-mark service; marks are per address family in IPVS.
    Mark { ipv6: bool, mark: u32 },
}

/// The part of a VirtualService that cluster-wide assignment looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInput {
    /// `namespace/name`, the stable identity.
    pub key: String,
    /// Creation time as RFC 3339 text (sorts chronologically); the older object wins a conflict.
    pub created: String,
    pub vip: IpAddr,
    pub listener: Listener,
    /// `spec.directors.vrrp.routerId` when set.
    pub explicit_router_id: Option<u8>,
    /// `status.assignment.routerId` from the last assignment, kept when still valid.
    pub previous_router_id: Option<u8>,
    /// Explicit priorities by node name.
    pub explicit_priorities: BTreeMap<String, u8>,
    /// Director nodes that match the VirtualService's node selector.
    pub eligible_nodes: BTreeSet<String>,
}

/// Why a VirtualService cannot be programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Another (older) VirtualService owns the same listener.
    Listener { with: String },
    /// Another VirtualService on a different VIP uses the same explicit router id.
    RouterId { router_id: u8, with: String },
    /// VirtualServices on the same VIP ask for different explicit router ids.
    RouterIdMismatch { vip: IpAddr, ids: Vec<u8> },
    /// No free router id is left in 1..=255 for this address family.
    RouterIdsExhausted,
    /// No director node matches the node selector.
    NoDirectors,
}

impl Conflict {
    /// The `reason` of the Kubernetes condition / Event.
    pub fn reason(&self) -> &'static str {
        match self {
            Conflict::Listener { .. } => "ListenerInUse",
            Conflict::RouterId { .. } => "RouterIdInUse",
            Conflict::RouterIdMismatch { .. } => "RouterIdMismatch",
            Conflict::RouterIdsExhausted => "RouterIdsExhausted",
            Conflict::NoDirectors => "NoDirectors",
        }
    }

    /// A human message naming the other party.
    pub fn message(&self) -> String {
        match self {
            Conflict::Listener { with } => {
                format!("the same VIP and port (or firewall mark) is already served by {with}")
            }
            Conflict::RouterId { router_id, with } => format!(
                "spec.directors.vrrp.routerId {router_id} is already used by {with} for another VIP"
            ),
            Conflict::RouterIdMismatch { vip, ids } => format!(
                "VirtualServices on VIP {vip} must share one VRRP instance but ask for router ids {ids:?}"
            ),
            Conflict::RouterIdsExhausted => {
                "no free VRRP router id is left for this address family".to_string()
            }
            Conflict::NoDirectors => {
                "no node matches spec.directors.nodeSelector; nothing is programmed".to_string()
            }
        }
    }
}

/// The decision for one VirtualService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    Assigned {
        router_id: u8,
        /// Priority by node, in the order of preference (highest first).
        priorities: Vec<(String, u8)>,
    },
    Conflicted(Conflict),
}

/// Decide every VirtualService at once; the result is keyed by `ServiceInput::key`.
pub fn plan_assignments(inputs: &[ServiceInput]) -> BTreeMap<String, Assignment> {
    let mut out = BTreeMap::new();

    // Oldest first, so the winner of each listener is the first to claim it.
    let mut order: Vec<&ServiceInput> = inputs.iter().collect();
    order.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));

    let mut listeners: BTreeMap<&Listener, &str> = BTreeMap::new();
    let mut live: Vec<&ServiceInput> = Vec::new();
    for s in order {
        if let Some(owner) = listeners.get(&s.listener) {
            out.insert(
                s.key.clone(),
                Assignment::Conflicted(Conflict::Listener {
                    with: (*owner).to_string(),
                }),
            );
            continue;
        }
        if s.eligible_nodes.is_empty() && s.explicit_priorities.is_empty() {
            out.insert(s.key.clone(), Assignment::Conflicted(Conflict::NoDirectors));
            continue;
        }
        listeners.insert(&s.listener, &s.key);
        live.push(s);
    }

    // Group by VIP: one VRRP instance per VIP.
    let mut by_vip: BTreeMap<IpAddr, Vec<&ServiceInput>> = BTreeMap::new();
    for s in live {
        by_vip.entry(s.vip).or_default().push(s);
    }

    let mut vip_ids: BTreeMap<IpAddr, Result<u8, Conflict>> = BTreeMap::new();
    // Router ids taken, per family: (is_ipv6, id) -> owning VIP and a member key for messages.
    let mut taken: BTreeMap<(bool, u8), (IpAddr, String)> = BTreeMap::new();

    // Pass 1: VIPs with an explicit id.
    for (vip, members) in &by_vip {
        let explicit: BTreeSet<u8> = members
            .iter()
            .filter_map(|s| s.explicit_router_id)
            .collect();
        match explicit.len() {
            0 => {}
            1 => {
                let id = explicit.iter().copied().next().unwrap_or_default();
                let slot = (vip.is_ipv6(), id);
                if let Some((other_vip, other_key)) = taken.get(&slot)
                    && other_vip != vip
                {
                    vip_ids.insert(
                        *vip,
                        Err(Conflict::RouterId {
                            router_id: id,
                            with: other_key.clone(),
                        }),
                    );
                    continue;
                }
                taken.insert(slot, (*vip, members[0].key.clone()));
                vip_ids.insert(*vip, Ok(id));
            }
            _ => {
                vip_ids.insert(
                    *vip,
                    Err(Conflict::RouterIdMismatch {
                        vip: *vip,
                        ids: explicit.into_iter().collect(),
                    }),
                );
            }
        }
    }

    // Pass 2: automatic VIPs that keep their previous id when it is still free.
    for (vip, members) in &by_vip {
        if vip_ids.contains_key(vip) {
            continue;
        }
        let previous: BTreeSet<u8> = members
            .iter()
            .filter_map(|s| s.previous_router_id)
            .filter(|id| *id != 0)
            .collect();
        if let Some(id) = previous
            .into_iter()
            .find(|id| !taken.contains_key(&(vip.is_ipv6(), *id)))
        {
            taken.insert((vip.is_ipv6(), id), (*vip, members[0].key.clone()));
            vip_ids.insert(*vip, Ok(id));
        }
    }

    // Pass 3: the rest get the lowest free id, in VIP order (deterministic).
    for (vip, members) in &by_vip {
        if vip_ids.contains_key(vip) {
            continue;
        }
        let free = (1..=255u8).find(|id| !taken.contains_key(&(vip.is_ipv6(), *id)));
        match free {
            Some(id) => {
                taken.insert((vip.is_ipv6(), id), (*vip, members[0].key.clone()));
                vip_ids.insert(*vip, Ok(id));
            }
            None => {
                vip_ids.insert(*vip, Err(Conflict::RouterIdsExhausted));
            }
        }
    }

    for (vip, members) in &by_vip {
        let decided = vip_ids
            .get(vip)
            .cloned()
            .unwrap_or(Err(Conflict::RouterIdsExhausted));
        // Every VirtualService on a VIP shares its directors' priorities; explicit ones from any
        // member apply, so the instance is consistent.
        let priorities = plan_priorities(members);
        for s in members {
            let a = match &decided {
                Ok(id) => Assignment::Assigned {
                    router_id: *id,
                    priorities: priorities.clone(),
                },
                Err(c) => Assignment::Conflicted(c.clone()),
            };
            out.insert(s.key.clone(), a);
        }
    }
    out
}

/// Priorities for the directors of one VIP: explicit ones win; the remaining eligible nodes get
/// automatic priorities below the lowest explicit one, or from the base when none is explicit.
fn plan_priorities(members: &[&ServiceInput]) -> Vec<(String, u8)> {
    let mut explicit: BTreeMap<String, u8> = BTreeMap::new();
    let mut nodes: BTreeSet<String> = BTreeSet::new();
    for s in members {
        for (n, p) in &s.explicit_priorities {
            explicit.entry(n.clone()).or_insert(*p);
        }
        nodes.extend(s.eligible_nodes.iter().cloned());
    }
    let mut out: Vec<(String, u8)> = explicit.iter().map(|(n, p)| (n.clone(), *p)).collect();
    let ceiling = explicit
        .values()
        .min()
        .map(|m| m.saturating_sub(AUTO_PRIORITY_STEP))
        .unwrap_or(AUTO_PRIORITY_BASE);
    let mut next = ceiling;
    for n in nodes.into_iter().filter(|n| !explicit.contains_key(n)) {
        out.push((n, next.max(1)));
        next = next.saturating_sub(AUTO_PRIORITY_STEP);
    }
    // Highest first; ties broken by name so the order is stable.
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(key: &str, created: &str, vip: &str, port: u16) -> ServiceInput {
        let vip: IpAddr = vip.parse().unwrap();
        ServiceInput {
            key: key.into(),
            created: created.into(),
            vip,
            listener: Listener::Port {
                vip,
                protocol: "TCP".into(),
                port,
            },
            explicit_router_id: None,
            previous_router_id: None,
            explicit_priorities: BTreeMap::new(),
            eligible_nodes: ["d1".to_string(), "d2".to_string()].into(),
        }
    }

    fn id_of(a: &BTreeMap<String, Assignment>, key: &str) -> u8 {
        match &a[key] {
            Assignment::Assigned { router_id, .. } => *router_id,
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn same_listener_older_object_wins() {
        let a = svc("ns/a", "2026-01-02T00:00:00Z", "192.0.2.10", 80);
        let b = svc("ns/b", "2026-01-01T00:00:00Z", "192.0.2.10", 80);
        let out = plan_assignments(&[a, b]);
        assert!(matches!(out["ns/b"], Assignment::Assigned { .. }));
        assert_eq!(
            out["ns/a"],
            Assignment::Conflicted(Conflict::Listener {
                with: "ns/b".into()
            })
        );
    }

    #[test]
    fn different_protocol_same_port_is_no_conflict() {
        let a = svc("ns/a", "1", "192.0.2.10", 53);
        let mut b = svc("ns/b", "2", "192.0.2.10", 53);
        b.listener = Listener::Port {
            vip: b.vip,
            protocol: "UDP".into(),
            port: 53,
        };
        let out = plan_assignments(&[a, b]);
        assert_eq!(
            id_of(&out, "ns/a"),
            id_of(&out, "ns/b"),
            "same VIP shares an instance"
        );
    }

    #[test]
    fn distinct_vips_get_distinct_lowest_ids() {
        let out = plan_assignments(&[
            svc("ns/a", "1", "192.0.2.10", 80),
            svc("ns/b", "2", "192.0.2.11", 80),
        ]);
        assert_eq!(id_of(&out, "ns/a"), 1);
        assert_eq!(id_of(&out, "ns/b"), 2);
    }

    #[test]
    fn ipv4_and_ipv6_number_separately() {
        let out = plan_assignments(&[
            svc("ns/a", "1", "192.0.2.10", 80),
            svc("ns/b", "2", "2001:db8::10", 80),
        ]);
        assert_eq!(id_of(&out, "ns/a"), 1);
        assert_eq!(id_of(&out, "ns/b"), 1);
    }

    #[test]
    fn explicit_ids_are_reserved_before_automatic_ones() {
        let mut a = svc("ns/a", "1", "192.0.2.10", 80);
        a.explicit_router_id = None;
        let mut b = svc("ns/b", "2", "192.0.2.11", 80);
        b.explicit_router_id = Some(1);
        let out = plan_assignments(&[a, b]);
        assert_eq!(id_of(&out, "ns/b"), 1);
        assert_eq!(id_of(&out, "ns/a"), 2);
    }

    #[test]
    fn previous_id_is_kept_so_nothing_renumbers() {
        let mut a = svc("ns/a", "1", "192.0.2.10", 80);
        a.previous_router_id = Some(7);
        let b = svc("ns/b", "2", "192.0.2.11", 80);
        let out = plan_assignments(&[a, b]);
        assert_eq!(id_of(&out, "ns/a"), 7);
        assert_eq!(id_of(&out, "ns/b"), 1);
    }

    #[test]
    fn previous_id_taken_by_explicit_is_replaced() {
        let mut a = svc("ns/a", "1", "192.0.2.10", 80);
        a.previous_router_id = Some(5);
        let mut b = svc("ns/b", "2", "192.0.2.11", 80);
        b.explicit_router_id = Some(5);
        let out = plan_assignments(&[a, b]);
        assert_eq!(id_of(&out, "ns/b"), 5);
        assert_eq!(id_of(&out, "ns/a"), 1);
    }

    #[test]
    fn explicit_id_clash_between_vips_is_a_conflict_for_one() {
        let mut a = svc("ns/a", "1", "192.0.2.10", 80);
        a.explicit_router_id = Some(9);
        let mut b = svc("ns/b", "2", "192.0.2.11", 80);
        b.explicit_router_id = Some(9);
        let out = plan_assignments(&[a, b]);
        assert_eq!(id_of(&out, "ns/a"), 9);
        assert_eq!(
            out["ns/b"],
            Assignment::Conflicted(Conflict::RouterId {
                router_id: 9,
                with: "ns/a".into()
            })
        );
    }

    #[test]
    fn mismatched_explicit_ids_on_one_vip_conflict() {
        let mut a = svc("ns/a", "1", "192.0.2.10", 80);
        a.explicit_router_id = Some(3);
        let mut b = svc("ns/b", "2", "192.0.2.10", 443);
        b.explicit_router_id = Some(4);
        let out = plan_assignments(&[a, b]);
        let c = Conflict::RouterIdMismatch {
            vip: "192.0.2.10".parse().unwrap(),
            ids: vec![3, 4],
        };
        assert_eq!(out["ns/a"], Assignment::Conflicted(c.clone()));
        assert_eq!(out["ns/b"], Assignment::Conflicted(c));
    }

    #[test]
    fn ids_exhausted_after_255_vips() {
        let mut inputs = Vec::new();
        for i in 0..256u32 {
            let vip = format!("198.51.100.{}", i % 256);
            let mut s = svc(&format!("ns/s{i:03}"), &format!("{i:03}"), &vip, 80);
            if i >= 255 {
                // a 256th distinct VIP in another range
                s.vip = "203.0.113.1".parse().unwrap();
                s.listener = Listener::Port {
                    vip: s.vip,
                    protocol: "TCP".into(),
                    port: 80,
                };
            }
            inputs.push(s);
        }
        let out = plan_assignments(&inputs);
        let exhausted = out
            .values()
            .filter(|a| **a == Assignment::Conflicted(Conflict::RouterIdsExhausted))
            .count();
        assert_eq!(exhausted, 1);
    }

    #[test]
    fn automatic_priorities_descend_by_node_name() {
        let out = plan_assignments(&[svc("ns/a", "1", "192.0.2.10", 80)]);
        match &out["ns/a"] {
            Assignment::Assigned { priorities, .. } => assert_eq!(
                priorities,
                &vec![("d1".to_string(), 150), ("d2".to_string(), 140)]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn explicit_priorities_win_and_automatic_ones_go_below() {
        let mut a = svc("ns/a", "1", "192.0.2.10", 80);
        a.eligible_nodes = ["d1", "d2", "d3"].iter().map(|s| s.to_string()).collect();
        a.explicit_priorities = [("d3".to_string(), 100)].into();
        let out = plan_assignments(&[a]);
        match &out["ns/a"] {
            Assignment::Assigned { priorities, .. } => assert_eq!(
                priorities,
                &vec![
                    ("d3".to_string(), 100),
                    ("d1".to_string(), 90),
                    ("d2".to_string(), 80)
                ]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_eligible_director_is_reported() {
        let mut a = svc("ns/a", "1", "192.0.2.10", 80);
        a.eligible_nodes.clear();
        let out = plan_assignments(&[a]);
        assert_eq!(out["ns/a"], Assignment::Conflicted(Conflict::NoDirectors));
    }

    #[test]
    fn fwmark_listeners_conflict_per_family() {
        let mut a = svc("ns/a", "1", "192.0.2.10", 0);
        a.listener = Listener::Mark {
            ipv6: false,
            mark: 1,
        };
        let mut b = svc("ns/b", "2", "192.0.2.11", 0);
        b.listener = Listener::Mark {
            ipv6: false,
            mark: 1,
        };
        let mut c = svc("ns/c", "3", "2001:db8::1", 0);
        c.listener = Listener::Mark {
            ipv6: true,
            mark: 1,
        };
        let out = plan_assignments(&[a, b, c]);
        assert!(matches!(
            out["ns/b"],
            Assignment::Conflicted(Conflict::Listener { .. })
        ));
        assert!(matches!(out["ns/c"], Assignment::Assigned { .. }));
    }

    #[test]
    fn automatic_priorities_never_reach_zero() {
        let mut a = svc("ns/a", "1", "192.0.2.10", 80);
        a.eligible_nodes = (0..30).map(|i| format!("n{i:02}")).collect();
        let out = plan_assignments(&[a]);
        match &out["ns/a"] {
            Assignment::Assigned { priorities, .. } => {
                assert!(priorities.iter().all(|(_, p)| *p >= 1));
            }
            other => panic!("{other:?}"),
        }
    }
}
