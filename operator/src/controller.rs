//! The operator loop: watch VirtualServices, RealServers and Nodes into caches; on any change,
//! decide every VirtualService at once (assignment is global) and write only what differs.
//!
//! Status goes out by server-side apply under the field manager [`FIELD_MANAGER`], which owns
//! exactly the operator's fields; the agents' per-node entries stay theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use kube_lvs_crds::v1alpha1::{RealServer, VirtualService, condition};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::Error;
use crate::assign::{Listener, ServiceInput, plan_assignments};
use crate::status::{merge_conditions, plan_server_status, plan_service_status, selected};

/// Field manager of every status write the operator makes.
pub const FIELD_MANAGER: &str = "kube-lvs-operator";
/// Full re-decision even without events, so drift from a failed write heals.
const RESYNC: Duration = Duration::from_secs(60);
/// Coalesce bursts of watch events into one pass.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Shared caches.
pub struct Caches {
    pub services: Store<VirtualService>,
    pub servers: Store<RealServer>,
    pub nodes: Store<Node>,
}

/// Runs until a watch stream ends (which only happens on a fatal error).
pub async fn run(client: Client) -> Result<(), Error> {
    let changed = Arc::new(Notify::new());
    let (services, w_services) = reflector::store::<VirtualService>();
    let (servers, w_servers) = reflector::store::<RealServer>();
    let (nodes, w_nodes) = reflector::store::<Node>();

    let watch = |stream: futures::stream::BoxStream<'static, ()>| {
        let changed = changed.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            while stream.next().await.is_some() {
                changed.notify_one();
            }
        })
    };
    let cfg = watcher::Config::default();
    watch(
        reflector::reflector(
            w_services,
            watcher(Api::<VirtualService>::all(client.clone()), cfg.clone()),
        )
        .default_backoff()
        .map(|_| ())
        .boxed(),
    );
    watch(
        reflector::reflector(
            w_servers,
            watcher(Api::<RealServer>::all(client.clone()), cfg.clone()),
        )
        .default_backoff()
        .map(|_| ())
        .boxed(),
    );
    watch(
        reflector::reflector(w_nodes, watcher(Api::<Node>::all(client.clone()), cfg))
            .default_backoff()
            .map(|_| ())
            .boxed(),
    );

    let caches = Caches {
        services,
        servers,
        nodes,
    };
    for (name, ready) in [
        ("virtualservices", caches.services.wait_until_ready().await),
        ("realservers", caches.servers.wait_until_ready().await),
        ("nodes", caches.nodes.wait_until_ready().await),
    ] {
        ready.map_err(|_| Error::CacheClosed(name))?;
    }
    info!("caches synced; deciding");

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    loop {
        if let Err(e) = reconcile_all(&client, &caches, &recorder).await {
            warn!(error = %e, "reconcile pass failed; retrying on the next change");
        }
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

fn input_of(vs: &VirtualService, nodes: &[Arc<Node>]) -> Option<ServiceInput> {
    let vip = vs.spec.vip_addr().ok()?;
    let listener = match vs.spec.service_key().ok()? {
        kube_lvs_crds::v1alpha1::ServiceKey::Port {
            vip,
            protocol,
            port,
        } => Listener::Port {
            vip,
            protocol: format!("{protocol:?}").to_uppercase(),
            port,
        },
        kube_lvs_crds::v1alpha1::ServiceKey::FirewallMark { ipv6, mark } => {
            Listener::Mark { ipv6, mark }
        }
    };
    let selector = &vs.spec.directors.node_selector;
    let eligible_nodes: BTreeSet<String> = nodes
        .iter()
        .filter(|n| {
            let labels = n.labels();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .map(|n| n.name_any())
        .collect();
    Some(ServiceInput {
        key: format!("{}/{}", vs.namespace().unwrap_or_default(), vs.name_any()),
        created: vs
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        vip,
        listener,
        explicit_router_id: vs.spec.directors.vrrp.router_id,
        previous_router_id: vs
            .status
            .as_ref()
            .and_then(|s| s.assignment.as_ref())
            .and_then(|a| a.router_id),
        explicit_priorities: vs
            .spec
            .directors
            .vrrp
            .priorities
            .iter()
            .map(|p| (p.node_name.clone(), p.priority))
            .collect(),
        eligible_nodes,
    })
}

async fn reconcile_all(client: &Client, caches: &Caches, recorder: &Recorder) -> Result<(), Error> {
    let services = caches.services.state();
    let servers: Vec<RealServer> = caches
        .servers
        .state()
        .iter()
        .map(|s| (**s).clone())
        .collect();
    let nodes = caches.nodes.state();

    let inputs: Vec<ServiceInput> = services
        .iter()
        .filter_map(|vs| input_of(vs, &nodes))
        .collect();
    let decisions = plan_assignments(&inputs);
    let now = Time(k8s_openapi::jiff::Timestamp::now());

    // VirtualService name (namespace-qualified) → master node, for the RealServer summaries.
    let mut masters: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for vs in &services {
        let ns = vs.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", vs.name_any());
        let selected_servers = selected(vs, &servers);
        let (mut planned, decided) =
            plan_service_status(vs, decisions.get(&key), &selected_servers);
        let previous = vs.status.clone().unwrap_or_default();
        planned.conditions =
            merge_conditions(&previous.conditions, decided, vs.metadata.generation, &now);
        if let Some(m) = &planned.master {
            masters
                .entry(ns.clone())
                .or_default()
                .insert(vs.name_any(), m.clone());
        }

        let unchanged = previous.observed_generation == planned.observed_generation
            && previous.assignment == planned.assignment
            && previous.conditions == planned.conditions
            && previous.master == planned.master
            && previous.healthy == planned.healthy
            && previous.healthy_real_servers == planned.healthy_real_servers
            && previous.total_real_servers == planned.total_real_servers;
        if unchanged {
            continue;
        }
        let patch = json!({
            "apiVersion": "lvs.kube-lvs.io/v1alpha1",
            "kind": "VirtualService",
            "status": {
                "observedGeneration": planned.observed_generation,
                "assignment": planned.assignment,
                "conditions": planned.conditions,
                "master": planned.master,
                "healthy": planned.healthy,
                "healthyRealServers": planned.healthy_real_servers,
                "totalRealServers": planned.total_real_servers,
            }
        });
        let api: Api<VirtualService> = Api::namespaced(client.clone(), &ns);
        api.patch_status(
            &vs.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Kube)?;

        // An Event for every transition into (or reason change of) Conflict, never per pass.
        let was = previous
            .conditions
            .iter()
            .find(|c| c.type_ == condition::CONFLICT && c.status == "True")
            .map(|c| c.reason.clone());
        if let Some(now_c) = planned
            .conditions
            .iter()
            .find(|c| c.type_ == condition::CONFLICT && c.status == "True")
        {
            if was.as_deref() != Some(now_c.reason.as_str()) {
                warn!(virtual_service = %key, reason = %now_c.reason, "conflict: {}", now_c.message);
                let ev = Event {
                    type_: EventType::Warning,
                    reason: now_c.reason.clone(),
                    note: Some(now_c.message.clone()),
                    action: "Assign".into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&ev, &vs.object_ref(&())).await {
                    warn!(error = %e, "publishing event failed");
                }
            }
        } else if was.is_some() {
            info!(virtual_service = %key, "conflict resolved");
        }
    }

    for rs in &servers {
        let ns = rs.namespace().unwrap_or_default();
        let m = masters.get(&ns).cloned().unwrap_or_default();
        let planned = plan_server_status(rs, &m);
        let prev = rs.status.clone().unwrap_or_default();
        if prev.health == Some(planned.health)
            && prev.active_connections == planned.active_connections
            && prev.inactive_connections == planned.inactive_connections
            && prev.observed_generation == rs.metadata.generation
        {
            continue;
        }
        let patch = json!({
            "apiVersion": "lvs.kube-lvs.io/v1alpha1",
            "kind": "RealServer",
            "status": {
                "observedGeneration": rs.metadata.generation,
                "health": planned.health,
                "activeConnections": planned.active_connections,
                "inactiveConnections": planned.inactive_connections,
            }
        });
        let api: Api<RealServer> = Api::namespaced(client.clone(), &ns);
        api.patch_status(
            &rs.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Kube)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_uses_node_selector_and_explicit_settings() {
        let vs: VirtualService = serde_json::from_value(json!({
            "apiVersion": "lvs.kube-lvs.io/v1alpha1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"vip": "192.0.2.100", "port": 80, "realServerSelector": {},
                     "directors": {"nodeSelector": {"role": "lb"},
                                   "vrrp": {"routerId": 7, "priorities": [{"nodeName": "d2", "priority": 200}]}}}
        }))
        .unwrap();
        let node = |name: &str, role: &str| {
            Arc::new(
                serde_json::from_value::<Node>(json!({
                    "metadata": {"name": name, "labels": {"role": role}}
                }))
                .unwrap(),
            )
        };
        let nodes = vec![node("d1", "lb"), node("d2", "lb"), node("w1", "worker")];
        let input = input_of(&vs, &nodes).unwrap();
        assert_eq!(input.key, "ns/web");
        assert_eq!(
            input.eligible_nodes,
            BTreeSet::from(["d1".to_string(), "d2".to_string()])
        );
        assert_eq!(input.explicit_router_id, Some(7));
        assert_eq!(input.explicit_priorities.get("d2"), Some(&200));
        assert_eq!(
            input.listener,
            Listener::Port {
                vip: "192.0.2.100".parse().unwrap(),
                protocol: "TCP".into(),
                port: 80
            }
        );
    }
}
