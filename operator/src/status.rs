//! The operator's part of the status, as pure functions of the objects and the assignment.
//!
//! The node agents own `status.directors` (VirtualService) and `status.directors`
//! (RealServer), each entry under the agent's own field manager. The operator owns the rest:
//! `assignment`, `conditions`, `master`, `healthy…`, `observedGeneration`, and the RealServer
//! `health` summary and connection counts.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube_lvs_crds::v1alpha1::{
    Assignment as StatusAssignment, Health, NodePriority, RealServer, VirtualService, VrrpState,
    condition,
};

use crate::assign::Assignment;

/// The fields the operator writes on a VirtualService status.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStatus {
    pub observed_generation: Option<i64>,
    pub assignment: Option<StatusAssignment>,
    pub conditions: Vec<Condition>,
    pub master: Option<String>,
    pub healthy: Option<String>,
    pub healthy_real_servers: Option<u32>,
    pub total_real_servers: Option<u32>,
}

/// The fields the operator writes on a RealServer status.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStatus {
    pub health: Health,
    pub active_connections: Option<u64>,
    pub inactive_connections: Option<u64>,
}

/// A condition as decided now; `lastTransitionTime` is filled by [`merge_conditions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// Keep `lastTransitionTime` of conditions whose status did not change, so a condition only
/// "moves" when it really transitions.
pub fn merge_conditions(
    previous: &[Condition],
    decided: Vec<Decided>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    decided
        .into_iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let since = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason,
                message: d.message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Which RealServers a VirtualService selects (same namespace, label selector).
pub fn selected<'a>(vs: &VirtualService, servers: &'a [RealServer]) -> Vec<&'a RealServer> {
    servers.iter().filter(|rs| vs.selects(rs)).collect()
}

/// Decide the operator's status fields of one VirtualService.
pub fn plan_service_status(
    vs: &VirtualService,
    assignment: Option<&Assignment>,
    servers: &[&RealServer],
) -> (ServiceStatus, Vec<Decided>) {
    let name = vs.metadata.name.clone().unwrap_or_default();
    let directors = vs
        .status
        .as_ref()
        .map(|s| s.directors.clone())
        .unwrap_or_default();
    // The most recent to become master first: a director that crashed cannot correct its own
    // stale entry, and its successor became master after it.
    let mut master_entries: Vec<_> = directors
        .iter()
        .filter(|d| d.state == VrrpState::Master)
        .collect();
    master_entries.sort_by(|a, b| {
        b.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .cmp(&a.last_transition_time.as_ref().map(|t| t.0))
    });
    let masters: Vec<&str> = master_entries
        .iter()
        .map(|d| d.node_name.as_str())
        .collect();
    let master = masters.first().map(|m| m.to_string());

    // Health as seen by the master (the director whose IPVS table carries traffic); without a
    // master, by any director.
    let total = servers.len() as u32;
    let healthy = servers
        .iter()
        .filter(|rs| {
            let entries: Vec<_> = rs
                .status
                .iter()
                .flat_map(|s| s.directors.iter())
                .filter(|e| e.virtual_service == name)
                .collect();
            let from_master: Vec<_> = entries
                .iter()
                .filter(|e| Some(e.node_name.as_str()) == master.as_deref())
                .collect();
            if from_master.is_empty() {
                entries.iter().any(|e| e.healthy)
            } else {
                from_master.iter().all(|e| e.healthy)
            }
        })
        .count() as u32;

    let mut decided = Vec::new();
    let mut status_assignment = None;
    match assignment {
        Some(Assignment::Conflicted(c)) => {
            decided.push(Decided {
                type_: condition::CONFLICT,
                status: true,
                reason: c.reason().to_string(),
                message: c.message(),
            });
            decided.push(Decided {
                type_: condition::READY,
                status: false,
                reason: c.reason().to_string(),
                message: "nothing is programmed while the conflict lasts".to_string(),
            });
        }
        Some(Assignment::Assigned {
            router_id,
            priorities,
        }) => {
            status_assignment = Some(StatusAssignment {
                router_id: Some(*router_id),
                priorities: priorities
                    .iter()
                    .map(|(n, p)| NodePriority {
                        node_name: n.clone(),
                        priority: *p,
                    })
                    .collect(),
            });
            decided.push(Decided {
                type_: condition::CONFLICT,
                status: false,
                reason: "NoConflict".into(),
                message: "listener and VRRP router id are unique".into(),
            });
            let programmed = directors.iter().any(|d| d.programmed == Some(true));
            let (ready, reason, message) = if masters.len() > 1 {
                (
                    false,
                    "SplitBrain",
                    format!("several directors claim master: {}", masters.join(", ")),
                )
            } else if master.is_none() {
                (
                    false,
                    "NoMaster",
                    "no director reports VRRP master yet".to_string(),
                )
            } else if !programmed {
                (
                    false,
                    "NotProgrammed",
                    "no director reports its IPVS rules programmed".to_string(),
                )
            } else if total > 0 && healthy == 0 {
                (
                    false,
                    "NoHealthyRealServers",
                    format!("0/{total} real servers pass their checks"),
                )
            } else {
                (
                    true,
                    "Serving",
                    format!(
                        "master {} serves with {healthy}/{total} healthy real servers",
                        master.clone().unwrap_or_default()
                    ),
                )
            };
            decided.push(Decided {
                type_: condition::READY,
                status: ready,
                reason: reason.into(),
                message,
            });
            let faults: Vec<&str> = directors
                .iter()
                .filter(|d| d.state == VrrpState::Fault)
                .map(|d| d.node_name.as_str())
                .collect();
            let (degraded, reason, message) = if healthy < total {
                (
                    true,
                    "RealServersDown",
                    format!("{healthy}/{total} real servers healthy"),
                )
            } else if !faults.is_empty() {
                (
                    true,
                    "DirectorFault",
                    format!("directors in fault: {}", faults.join(", ")),
                )
            } else {
                (false, "AllHealthy", "nothing is degraded".to_string())
            };
            decided.push(Decided {
                type_: condition::DEGRADED,
                status: degraded,
                reason: reason.into(),
                message,
            });
        }
        None => {}
    }

    (
        ServiceStatus {
            observed_generation: vs.metadata.generation,
            assignment: status_assignment,
            conditions: Vec::new(),
            master,
            healthy: Some(format!("{healthy}/{total}")),
            healthy_real_servers: Some(healthy),
            total_real_servers: Some(total),
        },
        decided,
    )
}

/// Decide a RealServer's summary from its per-director entries: only entries from the master of
/// each VirtualService count (the others do not carry traffic); without masters, all entries.
pub fn plan_server_status(rs: &RealServer, masters: &BTreeMap<String, String>) -> ServerStatus {
    let entries: Vec<_> = rs.status.iter().flat_map(|s| s.directors.iter()).collect();
    let from_masters: Vec<_> = entries
        .iter()
        .filter(|e| masters.get(&e.virtual_service) == Some(&e.node_name))
        .copied()
        .collect();
    let counted = if from_masters.is_empty() {
        entries
    } else {
        from_masters
    };
    let health = if counted.is_empty() {
        Health::Unknown
    } else if counted.iter().all(|e| e.healthy) {
        Health::Healthy
    } else {
        Health::Unhealthy
    };
    let sum = |f: fn(&kube_lvs_crds::v1alpha1::RealServerDirectorStatus) -> Option<u64>| {
        let values: Vec<u64> = counted.iter().filter_map(|e| f(e)).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    ServerStatus {
        health,
        active_connections: sum(|e| e.active_connections),
        inactive_connections: sum(|e| e.inactive_connections),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::Conflict;
    use kube_lvs_crds::v1alpha1::{
        DirectorStatus, RealServerDirectorStatus, RealServerStatus, VirtualServiceStatus,
    };
    use serde_json::json;

    fn vs(directors: serde_json::Value) -> VirtualService {
        let mut v: VirtualService = serde_json::from_value(json!({
            "apiVersion": "lvs.kube-lvs.io/v1alpha1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "ns", "generation": 3},
            "spec": {"vip": "192.0.2.100", "port": 80, "realServerSelector": {"matchLabels": {"app": "web"}}}
        }))
        .unwrap();
        let directors: Vec<DirectorStatus> = serde_json::from_value(directors).unwrap();
        v.status = Some(VirtualServiceStatus {
            directors,
            ..Default::default()
        });
        v
    }

    fn rs(name: &str, labels: serde_json::Value, entries: serde_json::Value) -> RealServer {
        let mut r: RealServer = serde_json::from_value(json!({
            "apiVersion": "lvs.kube-lvs.io/v1alpha1", "kind": "RealServer",
            "metadata": {"name": name, "namespace": "ns", "labels": labels},
            "spec": {"address": "192.0.2.11"}
        }))
        .unwrap();
        let directors: Vec<RealServerDirectorStatus> = serde_json::from_value(entries).unwrap();
        r.status = Some(RealServerStatus {
            directors,
            ..Default::default()
        });
        r
    }

    fn assigned() -> Assignment {
        Assignment::Assigned {
            router_id: 51,
            priorities: vec![("d1".into(), 150), ("d2".into(), 140)],
        }
    }

    fn cond<'a>(d: &'a [Decided], t: &str) -> &'a Decided {
        d.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn selector_matches_labels_in_the_same_namespace_only() {
        let v = vs(json!([]));
        let a = rs("a", json!({"app": "web"}), json!([]));
        let b = rs("b", json!({"app": "db"}), json!([]));
        let mut c = rs("c", json!({"app": "web"}), json!([]));
        c.metadata.namespace = Some("other".into());
        let all = [a, b, c];
        let names: Vec<_> = selected(&v, &all)
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn ready_when_master_programmed_and_healthy() {
        let v = vs(json!([
            {"nodeName": "d1", "state": "Master", "programmed": true},
            {"nodeName": "d2", "state": "Backup", "programmed": true}
        ]));
        let a = rs(
            "a",
            json!({"app": "web"}),
            json!([{"virtualService": "web", "nodeName": "d1", "healthy": true},
                   {"virtualService": "web", "nodeName": "d2", "healthy": false}]),
        );
        let b = rs(
            "b",
            json!({"app": "web"}),
            json!([{"virtualService": "web", "nodeName": "d1", "healthy": false}]),
        );
        let (s, d) = plan_service_status(&v, Some(&assigned()), &[&a, &b]);
        assert_eq!(s.master.as_deref(), Some("d1"));
        assert_eq!(
            s.healthy.as_deref(),
            Some("1/2"),
            "the master's view counts"
        );
        assert!(cond(&d, "Ready").status);
        assert!(cond(&d, "Degraded").status);
        assert_eq!(cond(&d, "Degraded").reason, "RealServersDown");
        assert_eq!(s.assignment.unwrap().router_id, Some(51));
    }

    #[test]
    fn not_ready_without_master() {
        let v = vs(json!([{"nodeName": "d1", "state": "Backup", "programmed": true}]));
        let (_, d) = plan_service_status(&v, Some(&assigned()), &[]);
        assert!(!cond(&d, "Ready").status);
        assert_eq!(cond(&d, "Ready").reason, "NoMaster");
    }

    #[test]
    fn latest_master_wins_over_a_stale_entry() {
        let v = vs(json!([
            {"nodeName": "d1", "state": "Master", "programmed": true,
             "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"nodeName": "d2", "state": "Master", "programmed": true,
             "lastTransitionTime": "2026-01-01T00:05:00Z"}
        ]));
        let (s, d) = plan_service_status(&v, Some(&assigned()), &[]);
        assert_eq!(s.master.as_deref(), Some("d2"));
        assert_eq!(cond(&d, "Ready").reason, "SplitBrain");
    }

    #[test]
    fn split_brain_is_not_ready() {
        let v = vs(json!([
            {"nodeName": "d1", "state": "Master", "programmed": true},
            {"nodeName": "d2", "state": "Master", "programmed": true}
        ]));
        let (_, d) = plan_service_status(&v, Some(&assigned()), &[]);
        assert_eq!(cond(&d, "Ready").reason, "SplitBrain");
    }

    #[test]
    fn conflict_sets_conflict_and_not_ready() {
        let v = vs(json!([]));
        let c = Assignment::Conflicted(Conflict::Listener {
            with: "ns/older".into(),
        });
        let (s, d) = plan_service_status(&v, Some(&c), &[]);
        assert!(cond(&d, "Conflict").status);
        assert_eq!(cond(&d, "Conflict").reason, "ListenerInUse");
        assert!(cond(&d, "Conflict").message.contains("ns/older"));
        assert!(!cond(&d, "Ready").status);
        assert!(s.assignment.is_none());
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
        let d = |status| Decided {
            type_: "Ready",
            status,
            reason: "R".into(),
            message: "m".into(),
        };
        let first = merge_conditions(&[], vec![d(true)], Some(1), &t0);
        let same = merge_conditions(&first, vec![d(true)], Some(2), &t1);
        assert_eq!(same[0].last_transition_time, t0);
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge_conditions(&same, vec![d(false)], Some(2), &t1);
        assert_eq!(flipped[0].last_transition_time, t1);
    }

    #[test]
    fn server_health_counts_masters_only() {
        let r = rs(
            "a",
            json!({}),
            json!([{"virtualService": "web", "nodeName": "d1", "healthy": true, "activeConnections": 4},
                   {"virtualService": "web", "nodeName": "d2", "healthy": false, "activeConnections": 9}]),
        );
        let masters = BTreeMap::from([("web".to_string(), "d1".to_string())]);
        let s = plan_server_status(&r, &masters);
        assert_eq!(s.health, Health::Healthy);
        assert_eq!(s.active_connections, Some(4));
        let none = plan_server_status(&r, &BTreeMap::new());
        assert_eq!(
            none.health,
            Health::Unhealthy,
            "without a master every view counts"
        );
        assert_eq!(none.active_connections, Some(13));
        let empty = rs("b", json!({}), json!([]));
        assert_eq!(plan_server_status(&empty, &masters).health, Health::Unknown);
    }
}
