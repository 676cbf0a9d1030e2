//! The operator against the real kube-apiserver: assignment, conflicts with a condition and an
//! Event while the rest keeps its assignment, aggregation of the agents' per-node reports, and
//! the conflict healing when the older object goes away.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube_lvs_e2e::controlplane::ControlPlane;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

struct Operator(Child);
impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn json_of(cp: &ControlPlane, args: &[&str]) -> Value {
    let out = cp.kubectl_ok(args).expect("kubectl");
    serde_json::from_str(&out).expect("kubectl printed JSON")
}

/// Waits until the object's JSON satisfies `pred`.
fn wait_json(cp: &ControlPlane, args: &[&str], what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if let Ok(out) = cp.kubectl_ok(args)
            && let Ok(v) = serde_json::from_str::<Value>(&out)
        {
            if pred(&v) {
                return v;
            }
            last = v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}; last: {last:#}");
}

fn vs_args(name: &str) -> Vec<&str> {
    vec!["get", "virtualservice", name, "-n", "default", "-o", "json"]
}

fn condition<'a>(v: &'a Value, t: &str) -> Option<&'a Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
}

#[test]
fn operator_assigns_reports_conflicts_and_aggregates() {
    let cp = ControlPlane::start().expect("control plane");
    let crds = repo().join("charts/kube-lvs/crds");
    cp.kubectl_ok(&["apply", "-f", crds.to_str().unwrap()])
        .expect("CRDs apply");
    cp.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/virtualservices.lvs.kube-lvs.io",
        "crd/realservers.lvs.kube-lvs.io",
    ])
    .expect("CRDs established");
    for n in ["d1", "d2"] {
        cp.create_node(n, &[("lvs.kube-lvs.io/director", "true")], None)
            .expect("node");
    }
    cp.create_node("w1", &[], None).expect("node");

    cp.apply(
        r#"
apiVersion: lvs.kube-lvs.io/v1alpha1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  vip: 192.0.2.100
  port: 80
  realServerSelector: {matchLabels: {app: web}}
---
apiVersion: lvs.kube-lvs.io/v1alpha1
kind: VirtualService
metadata: {name: other, namespace: default}
spec:
  vip: 192.0.2.101
  port: 80
  directors: {vrrp: {routerId: 9}}
  realServerSelector: {matchLabels: {app: other}}
---
apiVersion: lvs.kube-lvs.io/v1alpha1
kind: RealServer
metadata: {name: rs1, namespace: default, labels: {app: web}}
spec: {address: 192.0.2.11}
---
apiVersion: lvs.kube-lvs.io/v1alpha1
kind: RealServer
metadata: {name: rs2, namespace: default, labels: {app: web}}
spec: {address: 192.0.2.12}
"#,
    )
    .expect("objects");
    // Creation timestamps have one-second resolution; make the duplicate clearly younger.
    std::thread::sleep(Duration::from_millis(1100));
    cp.apply(
        r#"
apiVersion: lvs.kube-lvs.io/v1alpha1
kind: VirtualService
metadata: {name: web-dup, namespace: default}
spec:
  vip: 192.0.2.100
  port: 80
  realServerSelector: {matchLabels: {app: web}}
"#,
    )
    .expect("duplicate");

    let bin = env!("CARGO_BIN_EXE_kube-lvs-operator");
    let log = std::fs::File::create(cp.dir().join("operator.log")).expect("log file");
    let _operator = Operator(
        Command::new(bin)
            .args(["--lease-namespace", "default"])
            .env("KUBECONFIG", cp.kubeconfig())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("operator starts"),
    );

    // The explicit id is honoured; the automatic one is the lowest free; priorities descend.
    let web = wait_json(&cp, &vs_args("web"), "web assignment", |v| {
        v["status"]["assignment"]["routerId"] == 1
    });
    assert_eq!(
        web["status"]["assignment"]["priorities"],
        serde_json::json!([{"nodeName": "d1", "priority": 150}, {"nodeName": "d2", "priority": 140}])
    );
    assert_eq!(condition(&web, "Conflict").unwrap()["status"], "False");
    assert_eq!(condition(&web, "Ready").unwrap()["reason"], "NoMaster");
    assert_eq!(web["status"]["healthy"], "0/2");
    wait_json(&cp, &vs_args("other"), "other assignment", |v| {
        v["status"]["assignment"]["routerId"] == 9
    });

    // The younger duplicate gets Conflict, no assignment, and a Warning Event.
    let dup = wait_json(&cp, &vs_args("web-dup"), "web-dup conflict", |v| {
        condition(v, "Conflict").is_some_and(|c| c["status"] == "True")
    });
    let c = condition(&dup, "Conflict").unwrap();
    assert_eq!(c["reason"], "ListenerInUse");
    assert!(
        c["message"].as_str().unwrap().contains("default/web"),
        "{c}"
    );
    assert!(dup["status"]["assignment"].is_null());
    let events = wait_json(
        &cp,
        &["get", "events.events.k8s.io", "-n", "default", "-o", "json"],
        "conflict event",
        |v| {
            v["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|e| e["regarding"]["name"] == "web-dup" && e["reason"] == "ListenerInUse")
            })
        },
    );
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["regarding"]["name"] != "web")
    );

    // An agent's per-node report (its own field manager) is aggregated, and survives the
    // operator's own status writes.
    cp.kubectl_ok(&[
        "patch", "virtualservice", "web", "-n", "default", "--subresource=status", "--type=merge",
        "-p", r#"{"status":{"directors":[{"nodeName":"d1","state":"Master","priority":150,"programmed":true},{"nodeName":"d2","state":"Backup","priority":140,"programmed":true}]}}"#,
    ])
    .expect("agent report");
    cp.kubectl_ok(&[
        "patch", "realserver", "rs1", "-n", "default", "--subresource=status", "--type=merge",
        "-p", r#"{"status":{"directors":[{"virtualService":"web","nodeName":"d1","healthy":true,"activeConnections":3}]}}"#,
    ])
    .expect("health report");
    let web = wait_json(&cp, &vs_args("web"), "web ready", |v| {
        v["status"]["master"] == "d1"
            && condition(v, "Ready").is_some_and(|c| c["status"] == "True")
    });
    assert_eq!(web["status"]["healthy"], "1/2");
    assert_eq!(
        condition(&web, "Degraded").unwrap()["reason"],
        "RealServersDown"
    );
    assert_eq!(web["status"]["directors"].as_array().unwrap().len(), 2);
    let rs1 = wait_json(
        &cp,
        &["get", "realserver", "rs1", "-n", "default", "-o", "json"],
        "rs1 health",
        |v| v["status"]["health"] == "Healthy",
    );
    assert_eq!(rs1["status"]["activeConnections"], 3);

    // The printer columns tell the same story.
    let table = cp
        .kubectl_ok(&["get", "lvs", "-n", "default"])
        .expect("get lvs");
    let web_row = table
        .lines()
        .find(|l| l.starts_with("virtualservice.lvs.kube-lvs.io/web "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        web_row.contains("d1") && web_row.contains("1/2") && web_row.contains("True"),
        "{table}"
    );

    // Deleting the older object hands the listener to the duplicate.
    cp.kubectl_ok(&["delete", "virtualservice", "web", "-n", "default"])
        .expect("delete");
    let dup = wait_json(&cp, &vs_args("web-dup"), "web-dup takes over", |v| {
        condition(v, "Conflict").is_some_and(|c| c["status"] == "False")
    });
    assert_eq!(dup["status"]["assignment"]["routerId"], 1);
    let _ = json_of(
        &cp,
        &[
            "get",
            "virtualservice",
            "other",
            "-n",
            "default",
            "-o",
            "json",
        ],
    );
}
