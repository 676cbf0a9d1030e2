//! From health to IPVS: which destinations a service should have, with which weights.
//! Pure; the data-plane model calls it with the latest health and feeds the result to its plan.

/// What happens to a real server whose checks fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Delete the destination (keepalived default, ldirectord default).
    #[default]
    Remove,
    /// Keep it with weight 0 so established connections continue (keepalived
    /// `inhibit_on_failure`, ldirectord `quiescent = yes`).
    Quiesce,
}

/// Minimum total weight of healthy real servers, with a band against flapping
/// (keepalived `quorum`/`hysteresis`): quorum is lost below `min_weight - hysteresis` and
/// regained at `min_weight + hysteresis` or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    pub min_weight: u64,
    pub hysteresis: u64,
}

impl Default for Quorum {
    /// keepalived's default: one healthy unit of weight.
    fn default() -> Self {
        Self {
            min_weight: 1,
            hysteresis: 0,
        }
    }
}

/// One configured real server with its current health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member<K> {
    pub key: K,
    pub weight: u32,
    pub healthy: bool,
    /// Administrative drain: weight 0, kept in the table.
    pub drain: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SorryServer<K> {
    pub key: K,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePolicy<K> {
    pub on_failure: FailurePolicy,
    pub quorum: Quorum,
    pub sorry: Option<SorryServer<K>>,
}

impl<K> Default for ServicePolicy<K> {
    fn default() -> Self {
        Self {
            on_failure: FailurePolicy::default(),
            quorum: Quorum::default(),
            sorry: None,
        }
    }
}

/// Why a destination has the weight it has (for status and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Serving,
    Draining,
    /// Unhealthy under `FailurePolicy::Quiesce`.
    Quiesced,
    /// Healthy, but the service is below quorum and the sorry server takes new connections;
    /// kept at weight 0 so its established connections continue.
    Standby,
    Sorry,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination<K> {
    pub key: K,
    pub weight: u32,
    pub role: Role,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect<K> {
    pub destinations: Vec<Destination<K>>,
    /// Sum of the weights of healthy, non-drained members.
    pub healthy_weight: u64,
    /// Quorum state after this step; pass it back next time.
    pub quorum_up: bool,
    /// True when this step changed the quorum state (log/Event once).
    pub quorum_changed: bool,
}

/// One hysteresis step. `previous == None` means no state yet: decide on the plain threshold.
pub fn quorum_step(q: Quorum, previous: Option<bool>, healthy_weight: u64) -> bool {
    if q.min_weight == 0 {
        return true;
    }
    match previous {
        None => healthy_weight >= q.min_weight,
        Some(true) => healthy_weight >= q.min_weight.saturating_sub(q.hysteresis),
        Some(false) => healthy_weight >= q.min_weight.saturating_add(q.hysteresis),
    }
}

/// Effective destination set for one service. Members keep their input order; the sorry
/// server, when active, comes last. A member sharing the sorry server's key is left out while
/// the sorry server is active.
pub fn plan_effective<K: Clone + PartialEq>(
    members: &[Member<K>],
    policy: &ServicePolicy<K>,
    quorum_previous: Option<bool>,
) -> Effect<K> {
    let healthy_weight: u64 = members
        .iter()
        .filter(|m| m.healthy && !m.drain)
        .map(|m| u64::from(m.weight))
        .sum();
    let quorum_up = quorum_step(policy.quorum, quorum_previous, healthy_weight);
    let sorry = policy.sorry.as_ref().filter(|_| !quorum_up);

    let mut destinations = Vec::with_capacity(members.len() + 1);
    for m in members {
        if sorry.is_some_and(|s| s.key == m.key) {
            continue;
        }
        let placed = if !m.healthy {
            match policy.on_failure {
                FailurePolicy::Remove => None,
                FailurePolicy::Quiesce => Some((0, Role::Quiesced)),
            }
        } else if m.drain {
            Some((0, Role::Draining))
        } else if sorry.is_some() {
            Some((0, Role::Standby))
        } else {
            Some((m.weight, Role::Serving))
        };
        if let Some((weight, role)) = placed {
            destinations.push(Destination {
                key: m.key.clone(),
                weight,
                role,
            });
        }
    }
    if let Some(s) = sorry {
        destinations.push(Destination {
            key: s.key.clone(),
            weight: s.weight,
            role: Role::Sorry,
        });
    }
    Effect {
        destinations,
        healthy_weight,
        quorum_up,
        quorum_changed: quorum_previous.is_some_and(|p| p != quorum_up),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(key: u32, weight: u32, healthy: bool, drain: bool) -> Member<u32> {
        Member {
            key,
            weight,
            healthy,
            drain,
        }
    }

    fn keys(e: &Effect<u32>) -> Vec<(u32, u32, Role)> {
        e.destinations
            .iter()
            .map(|d| (d.key, d.weight, d.role))
            .collect()
    }

    #[test]
    fn remove_policy_drops_unhealthy() {
        let ms = [m(1, 3, true, false), m(2, 5, false, false)];
        let e = plan_effective(&ms, &ServicePolicy::default(), None);
        assert_eq!(keys(&e), vec![(1, 3, Role::Serving)]);
        assert_eq!(e.healthy_weight, 3);
        assert!(e.quorum_up);
    }

    #[test]
    fn quiesce_policy_keeps_unhealthy_at_zero() {
        let ms = [m(1, 3, true, false), m(2, 5, false, false)];
        let p = ServicePolicy {
            on_failure: FailurePolicy::Quiesce,
            ..Default::default()
        };
        let e = plan_effective(&ms, &p, None);
        assert_eq!(
            keys(&e),
            vec![(1, 3, Role::Serving), (2, 0, Role::Quiesced)]
        );
    }

    #[test]
    fn drain_keeps_weight_zero_and_does_not_count() {
        let ms = [m(1, 3, true, true), m(2, 5, true, false)];
        let e = plan_effective(&ms, &ServicePolicy::default(), None);
        assert_eq!(
            keys(&e),
            vec![(1, 0, Role::Draining), (2, 5, Role::Serving)]
        );
        assert_eq!(e.healthy_weight, 5);
        // An unhealthy drained server follows the failure policy.
        let e = plan_effective(&[m(1, 3, false, true)], &ServicePolicy::default(), None);
        assert!(e.destinations.is_empty());
    }

    #[test]
    fn sorry_server_when_all_down() {
        let p = ServicePolicy {
            sorry: Some(SorryServer { key: 9, weight: 1 }),
            ..Default::default()
        };
        let ms = [m(1, 3, false, false), m(2, 5, false, false)];
        let e = plan_effective(&ms, &p, Some(true));
        assert_eq!(keys(&e), vec![(9, 1, Role::Sorry)]);
        assert!(!e.quorum_up);
        assert!(e.quorum_changed);
        // One recovers: quorum (1) is back, the sorry server leaves.
        let ms = [m(1, 3, true, false), m(2, 5, false, false)];
        let e = plan_effective(&ms, &p, Some(false));
        assert_eq!(keys(&e), vec![(1, 3, Role::Serving)]);
        assert!(e.quorum_up && e.quorum_changed);
    }

    #[test]
    fn below_quorum_healthy_members_stand_by() {
        let p = ServicePolicy {
            quorum: Quorum {
                min_weight: 10,
                hysteresis: 0,
            },
            sorry: Some(SorryServer { key: 9, weight: 2 }),
            on_failure: FailurePolicy::Remove,
        };
        let ms = [
            m(1, 3, true, false),
            m(2, 5, false, false),
            m(3, 4, true, true),
        ];
        let e = plan_effective(&ms, &p, None);
        assert_eq!(
            keys(&e),
            vec![
                (1, 0, Role::Standby),
                (3, 0, Role::Draining),
                (9, 2, Role::Sorry)
            ]
        );
        assert!(!e.quorum_changed, "first decision is not a change");
    }

    #[test]
    fn below_quorum_without_sorry_keeps_serving() {
        let p = ServicePolicy::<u32> {
            quorum: Quorum {
                min_weight: 10,
                hysteresis: 0,
            },
            ..Default::default()
        };
        let e = plan_effective(&[m(1, 3, true, false)], &p, None);
        assert_eq!(keys(&e), vec![(1, 3, Role::Serving)]);
        assert!(!e.quorum_up);
    }

    #[test]
    fn sorry_key_shared_with_member() {
        let p = ServicePolicy {
            sorry: Some(SorryServer { key: 1, weight: 1 }),
            on_failure: FailurePolicy::Quiesce,
            ..Default::default()
        };
        let e = plan_effective(&[m(1, 3, false, false)], &p, None);
        assert_eq!(keys(&e), vec![(1, 1, Role::Sorry)]);
    }

    #[test]
    fn hysteresis_band() {
        let q = Quorum {
            min_weight: 10,
            hysteresis: 2,
        };
        assert!(quorum_step(q, None, 10));
        assert!(!quorum_step(q, None, 9));
        assert!(quorum_step(q, Some(true), 8));
        assert!(!quorum_step(q, Some(true), 7));
        assert!(!quorum_step(q, Some(false), 11));
        assert!(quorum_step(q, Some(false), 12));
        let zero = Quorum {
            min_weight: 0,
            hysteresis: 5,
        };
        assert!(quorum_step(zero, Some(false), 0));
        let low = Quorum {
            min_weight: 1,
            hysteresis: 5,
        };
        assert!(quorum_step(low, Some(true), 0), "saturating lower edge");
    }

    fn arb_members() -> impl Strategy<Value = Vec<Member<u32>>> {
        proptest::collection::vec((0u32..20, any::<bool>(), any::<bool>()), 0..12).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (w, h, d))| m(i as u32, w, h, d))
                .collect()
        })
    }

    fn arb_policy() -> impl Strategy<Value = ServicePolicy<u32>> {
        (
            any::<bool>(),
            0u64..40,
            0u64..10,
            proptest::option::of(1u32..5),
        )
            .prop_map(|(q, min, h, sorry)| ServicePolicy {
                on_failure: if q {
                    FailurePolicy::Quiesce
                } else {
                    FailurePolicy::Remove
                },
                quorum: Quorum {
                    min_weight: min,
                    hysteresis: h,
                },
                sorry: sorry.map(|w| SorryServer {
                    key: 1000,
                    weight: w,
                }),
            })
    }

    proptest! {
        #[test]
        fn invariants(ms in arb_members(), p in arb_policy(), prev in proptest::option::of(any::<bool>())) {
            let e = plan_effective(&ms, &p, prev);
            for d in &e.destinations {
                if d.role == Role::Sorry { continue; }
                let Some(member) = ms.iter().find(|x| x.key == d.key) else {
                    return Err(TestCaseError::fail("unknown key"));
                };
                // Never route new connections to an unhealthy or drained server.
                if !member.healthy || member.drain { prop_assert_eq!(d.weight, 0); }
                if d.weight > 0 { prop_assert_eq!(d.weight, member.weight); }
            }
            let sorry_in = e.destinations.iter().any(|d| d.role == Role::Sorry);
            prop_assert_eq!(sorry_in, p.sorry.is_some() && !e.quorum_up);
            if sorry_in {
                prop_assert!(e.destinations.iter().all(|d| d.role == Role::Sorry || d.weight == 0));
            }
            match p.on_failure {
                FailurePolicy::Remove => prop_assert!(e.destinations.iter().all(|d| d.role == Role::Sorry
                    || ms.iter().any(|x| x.key == d.key && x.healthy))),
                FailurePolicy::Quiesce => prop_assert_eq!(
                    e.destinations.iter().filter(|d| d.role != Role::Sorry).count(), ms.len()),
            }
            prop_assert_eq!(e.quorum_changed, prev.is_some_and(|x| x != e.quorum_up));
        }

        #[test]
        fn no_flapping_within_band(
            min in 1u64..100, h in 0u64..20, start in any::<bool>(),
            offsets in proptest::collection::vec(0u64..1000, 1..50),
        ) {
            let q = Quorum { min_weight: min, hysteresis: h };
            let lo = min.saturating_sub(h);
            let hi = min + h; // exclusive upper edge of the band
            prop_assume!(hi > lo);
            let mut state = start;
            for o in offsets {
                let w = lo + o % (hi - lo);
                let next = quorum_step(q, Some(state), w);
                prop_assert_eq!(next, state, "weight {} inside [{}, {}) flipped", w, lo, hi);
                state = next;
            }
        }

        #[test]
        fn changes_only_across_the_band(
            q in (1u64..50, 0u64..10).prop_map(|(m, h)| Quorum { min_weight: m, hysteresis: h }),
            ws in proptest::collection::vec(0u64..80, 1..60),
        ) {
            let mut state = None;
            for w in ws {
                let next = quorum_step(q, state, w);
                if let Some(prev) = state && prev != next {
                    if next { prop_assert!(w >= q.min_weight + q.hysteresis); }
                    else { prop_assert!(w < q.min_weight.saturating_sub(q.hysteresis)); }
                }
                state = Some(next);
            }
        }
    }
}
