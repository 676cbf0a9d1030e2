//! Status reports of one node: its entry in each directed VirtualService's `status.directors`, and
//! its health entries in each checked RealServer's `status.directors`.
//!
//! Every write is a server-side apply under the field manager `kube-lvs-node-agent/<node>`, which
//! owns exactly this node's list entries (the lists are map-lists keyed by node name), so agents
//! and the operator never overwrite each other. Reports are queued and coalesced per object: a
//! burst of transitions becomes one write with the latest state, and while the API server is away
//! the latest pending report waits and is retried; the data plane never waits for it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube_lvs_crds::v1alpha1::{RealServer, VirtualService, VrrpState};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// This node's entry in a VirtualService's `status.directors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorReport {
    pub state: VrrpState,
    pub priority: Option<u8>,
    pub programmed: bool,
    pub last_transition: SystemTime,
    pub message: Option<String>,
}

/// This node's health entry for one (VirtualService, RealServer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub virtual_service: String,
    pub healthy: bool,
    pub since: SystemTime,
    pub last_probe: Option<SystemTime>,
    pub latency: Option<Duration>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

/// What to write, addressed by object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Director {
        namespace: String,
        name: String,
        report: DirectorReport,
    },
    Health {
        namespace: String,
        /// RealServer name.
        name: String,
        report: HealthReport,
    },
}

/// The field manager of a node's writes.
pub fn field_manager(node: &str) -> String {
    format!("kube-lvs-node-agent/{node}")
}

fn time(t: SystemTime) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::try_from(t).ok().map(Time)
}

fn short(s: &str) -> String {
    // Status is for people; a probe error longer than a line is noise.
    let line = s.lines().next().unwrap_or_default();
    line.chars().take(200).collect()
}

/// The apply patch of a director entry (pure).
pub fn director_patch(node: &str, r: &DirectorReport) -> Value {
    json!({
        "apiVersion": "lvs.kube-lvs.io/v1alpha1",
        "kind": "VirtualService",
        "status": {"directors": [{
            "nodeName": node,
            "state": r.state,
            "priority": r.priority,
            "programmed": r.programmed,
            "lastTransitionTime": time(r.last_transition),
            "message": r.message.as_deref().map(short),
        }]}
    })
}

/// The apply patch of a health entry (pure).
pub fn health_patch(node: &str, r: &HealthReport) -> Value {
    json!({
        "apiVersion": "lvs.kube-lvs.io/v1alpha1",
        "kind": "RealServer",
        "status": {"directors": [{
            "virtualService": r.virtual_service,
            "nodeName": node,
            "healthy": r.healthy,
            "since": time(r.since),
            "lastProbeTime": r.last_probe.and_then(time),
            "latencyMilliseconds": r.latency.map(|l| l.as_millis() as u64),
            "consecutiveFailures": r.consecutive_failures,
            "lastError": r.last_error.as_deref().map(short),
        }]}
    })
}

/// Key under which reports coalesce: one pending write per object (and per VirtualService for
/// health entries, which are separate list entries).
fn coalesce_key(r: &Report) -> (u8, String, String, String) {
    match r {
        Report::Director {
            namespace, name, ..
        } => (0, namespace.clone(), name.clone(), String::new()),
        Report::Health {
            namespace,
            name,
            report,
        } => (
            1,
            namespace.clone(),
            name.clone(),
            report.virtual_service.clone(),
        ),
    }
}

enum Cmd {
    Report(Report),
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Queue of reports; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Reporter {
    /// Starts the writer task.
    pub fn start(client: Client, node: String) -> Reporter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(client, node, rx));
        Reporter { tx }
    }

    /// Queues a report; never blocks.
    pub fn send(&self, r: Report) {
        // The writer only stops when the process does.
        let _ = self.tx.send(Cmd::Report(r));
    }

    /// Waits until every report queued so far is written, at most `timeout` (used before the
    /// agent exits, so its last word reaches the API server).
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (done, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Cmd::Flush(done)).is_err() {
            return false;
        }
        tokio::time::timeout(timeout, rx)
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn write(client: &Client, node: &str, r: &Report) -> Result<(), kube::Error> {
    let params = PatchParams::apply(&field_manager(node)).force();
    match r {
        Report::Director {
            namespace,
            name,
            report,
        } => {
            let api: Api<VirtualService> = Api::namespaced(client.clone(), namespace);
            api.patch_status(name, &params, &Patch::Apply(director_patch(node, report)))
                .await
                .map(|_| ())
        }
        Report::Health {
            namespace,
            name,
            report,
        } => {
            let api: Api<RealServer> = Api::namespaced(client.clone(), namespace);
            api.patch_status(name, &params, &Patch::Apply(health_patch(node, report)))
                .await
                .map(|_| ())
        }
    }
}

async fn writer(client: Client, node: String, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut pending: BTreeMap<(u8, String, String, String), Report> = BTreeMap::new();
    let mut waiters: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    let take = |cmd: Cmd,
                pending: &mut BTreeMap<(u8, String, String, String), Report>,
                waiters: &mut Vec<tokio::sync::oneshot::Sender<()>>| match cmd {
        Cmd::Report(r) => {
            pending.insert(coalesce_key(&r), r);
        }
        Cmd::Flush(w) => waiters.push(w),
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        if pending.is_empty() {
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
            match rx.recv().await {
                Some(c) => take(c, &mut pending, &mut waiters),
                None => return,
            }
        }
        // Take everything queued meanwhile, so a burst becomes one write per object.
        while let Ok(c) = rx.try_recv() {
            take(c, &mut pending, &mut waiters);
        }
        let mut failed = false;
        let keys: Vec<_> = pending.keys().cloned().collect();
        for k in keys {
            let Some(r) = pending.get(&k).cloned() else {
                continue;
            };
            match write(&client, &node, &r).await {
                Ok(()) => {
                    // Only drop it if no newer report replaced it while we wrote.
                    if pending.get(&k) == Some(&r) {
                        pending.remove(&k);
                    }
                    debug!(object = %k.2, "status written");
                }
                // The object is gone: nothing to report on.
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    pending.remove(&k);
                }
                Err(e) => {
                    failed = true;
                    warn!(object = %k.2, error = %e, "status write failed; will retry");
                }
            }
        }
        if failed {
            // Wait, but keep collecting newer reports meanwhile.
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    c = rx.recv() => match c {
                        Some(c) => take(c, &mut pending, &mut waiters),
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        } else {
            backoff = Duration::from_millis(200);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn director_patch_carries_only_this_nodes_entry() {
        let r = DirectorReport {
            state: VrrpState::Master,
            priority: Some(150),
            programmed: true,
            last_transition: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            message: Some("first line\nsecond".into()),
        };
        let p = director_patch("d1", &r);
        let entries = p["status"]["directors"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["nodeName"], "d1");
        assert_eq!(entries[0]["state"], "Master");
        assert_eq!(entries[0]["priority"], 150);
        assert_eq!(entries[0]["message"], "first line");
        assert_eq!(entries[0]["lastTransitionTime"], "2023-11-14T22:13:20Z");
        // Nothing the operator owns is in the patch, so applying it cannot take those fields.
        assert_eq!(p["status"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn health_patch_is_keyed_by_service_and_node() {
        let r = HealthReport {
            virtual_service: "web".into(),
            healthy: false,
            since: SystemTime::UNIX_EPOCH,
            last_probe: None,
            latency: Some(Duration::from_millis(12)),
            consecutive_failures: 3,
            last_error: Some("x".repeat(500)),
        };
        let p = health_patch("d2", &r);
        let e = &p["status"]["directors"][0];
        assert_eq!(e["virtualService"], "web");
        assert_eq!(e["nodeName"], "d2");
        assert_eq!(e["healthy"], false);
        assert_eq!(e["latencyMilliseconds"], 12);
        assert_eq!(e["consecutiveFailures"], 3);
        assert_eq!(e["lastError"].as_str().unwrap().len(), 200);
    }

    #[test]
    fn reports_coalesce_per_object_and_service() {
        let h = |vs: &str| Report::Health {
            namespace: "ns".into(),
            name: "rs1".into(),
            report: HealthReport {
                virtual_service: vs.into(),
                healthy: true,
                since: SystemTime::UNIX_EPOCH,
                last_probe: None,
                latency: None,
                consecutive_failures: 0,
                last_error: None,
            },
        };
        assert_eq!(coalesce_key(&h("web")), coalesce_key(&h("web")));
        assert_ne!(coalesce_key(&h("web")), coalesce_key(&h("web-tls")));
        assert_eq!(field_manager("d1"), "kube-lvs-node-agent/d1");
    }
}
