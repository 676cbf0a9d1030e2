//! The whole node-agent inside the IPVS VM, driven by the real kube-apiserver on the host (with
//! the operator running there too; `e2e/tools/vm-suite.sh` provides both and passes a kubeconfig
//! that reaches the API server from the VM in `KUBE_LVS_TEST_KUBECONFIG`).
//!
//! Four agents run in the namespaces of the classic LVS-DR topology: two directors and two real
//! servers. The test applies a VirtualService and two RealServers and asserts, each with a
//! deadline: the real servers' agents put the VIP on `lo` with the ARP sysctls; the directors
//! elect the higher priority as master, which holds the VIP while both program IPVS; a client
//! reaches both real servers through the VIP; `kubectl get` reports master, health and Ready; a
//! real server that stops answering leaves the IPVS table and its status says so; a graceful
//! stop of the master hands the VIP to the backup and traffic continues.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use kube_lvs_e2e::topology::{Topology, lvs_lan, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Cluster {
    kubeconfig: PathBuf,
    namespace: String,
    nodes: Vec<String>,
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .arg("--request-timeout=60s")
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    fn apply(&self, manifest: &str) {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            // Client-side validation downloads the whole OpenAPI document, which takes longer
            // than kubectl's timeout through the emulated VM's user-mode network; the API server
            // validates the schema and CEL rules anyway (the manifests are checked on the host by
            // the admission tests).
            .args([
                "apply",
                "--validate=false",
                "--request-timeout=60s",
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(manifest.as_bytes())
            .expect("manifest written");
        let out = child.wait_with_output().expect("kubectl ends");
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Prints what a user sees (`kubectl get lvs -o wide`); the demo runs this test with
    /// `--nocapture`.
    fn show(&self, moment: &str) {
        let out = self.kubectl(&["get", "lvs", "-n", &self.namespace, "-o", "wide"]);
        eprintln!(
            "\n### {moment}\n$ kubectl get lvs -o wide\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    fn json(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.kubectl(&["get", kind, name, "-n", &self.namespace, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.kubectl(&["delete", "namespace", &self.namespace, "--wait=false"]);
        for n in &self.nodes {
            let _ = self.kubectl(&["delete", "node", n, "--wait=false"]);
        }
    }
}

fn ipvs_lists(topo: &Topology, host: &str, needle: &str) -> bool {
    topo.exec(host, &["ipvsadm", "-Ln"])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(needle))
        .unwrap_or(false)
}

/// Names of the real servers that answered `n` requests to the VIP from the client.
fn answers(topo: &Topology, vip: IpAddr, n: usize) -> Vec<String> {
    (0..n)
        .filter_map(|_| {
            topo.http_get(
                lvs_lan::CLIENT,
                SocketAddr::new(vip, 80),
                "/",
                Duration::from_secs(3),
            )
            .ok()
            .map(|r| r.body.trim().to_string())
        })
        .collect()
}

/// A kubeconfig for processes inside a network namespace: they reach the API server through a
/// local relay on 127.0.0.1:6443 (the API server's certificate includes 127.0.0.1).
fn relay_kubeconfig(vm_kubeconfig: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(vm_kubeconfig).expect("kubeconfig readable");
    let relayed = text.replace("https://198.51.100.2:6443", "https://127.0.0.1:6443");
    assert_ne!(
        text, relayed,
        "the VM kubeconfig names https://198.51.100.2:6443"
    );
    let path = dir.join("kubeconfig-relay");
    std::fs::write(&path, relayed).expect("kubeconfig written");
    path
}

#[test]
fn agents_program_elect_check_report_and_hand_over() {
    let kubeconfig = PathBuf::from(std::env::var("KUBE_LVS_TEST_KUBECONFIG").expect(
        "KUBE_LVS_TEST_KUBECONFIG is unset: run this through e2e/tools/vm-suite.sh, which starts \
         the API server and the operator",
    ));
    let pid = std::process::id();
    let work = std::env::temp_dir().join(format!("vm-agent-{pid}"));
    std::fs::create_dir_all(&work).expect("work dir");
    let agent_kubeconfig = relay_kubeconfig(&kubeconfig, &work);

    let topo = Topology::lvs_lan().expect("topology");
    let vip = IpAddr::V4(lvs_lan::VIP_V4);

    // The relay: one socat in the VM's root namespace towards the API server, one per agent
    // namespace listening on its loopback; the socket file crosses the namespaces.
    let sock = work.join("api.sock");
    let _root_relay = Guard(
        Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", sock.display()))
            .arg("TCP:198.51.100.2:6443")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat runs"),
    );
    wait_until(Duration::from_secs(10), "relay socket", || sock.exists()).expect("relay");

    let node = |host: &str| format!("{host}-{pid}");
    let hosts = [
        lvs_lan::DIRECTOR1,
        lvs_lan::DIRECTOR2,
        lvs_lan::RS1,
        lvs_lan::RS2,
    ];
    let cluster = Cluster {
        kubeconfig: kubeconfig.clone(),
        namespace: format!("vm-agent-{pid}"),
        nodes: hosts.iter().map(|h| node(h)).collect(),
    };
    let ns = cluster.namespace.clone();
    let mut objects = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n");
    for h in [lvs_lan::DIRECTOR1, lvs_lan::DIRECTOR2] {
        objects += &format!(
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {}\n  labels: {{lvs.kube-lvs.io/director: \"true\"}}\n",
            node(h)
        );
    }
    for h in [lvs_lan::RS1, lvs_lan::RS2] {
        objects += &format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\n",
            node(h)
        );
    }
    objects += &format!(
        r#"---
apiVersion: lvs.kube-lvs.io/v1alpha1
kind: VirtualService
metadata: {{name: web, namespace: {ns}}}
spec:
  vip: {vip}
  port: 80
  scheduler: rr
  forwarding: {{method: DirectRouting}}
  realServerSelector: {{matchLabels: {{app: web}}}}
  healthCheck: {{type: HTTP, interval: 1s, timeout: 500ms, fall: 2, rise: 1, http: {{path: /}}}}
  directors:
    vrrp: {{version: 3, advertisementInterval: 1s}}
---
apiVersion: lvs.kube-lvs.io/v1alpha1
kind: RealServer
metadata: {{name: rs1, namespace: {ns}, labels: {{app: web}}}}
spec: {{address: {rs1}, nodeName: {n1}}}
---
apiVersion: lvs.kube-lvs.io/v1alpha1
kind: RealServer
metadata: {{name: rs2, namespace: {ns}, labels: {{app: web}}}}
spec: {{address: {rs2}, nodeName: {n2}}}
"#,
        rs1 = lvs_lan::RS1_V4,
        rs2 = lvs_lan::RS2_V4,
        n1 = node(lvs_lan::RS1),
        n2 = node(lvs_lan::RS2),
    );
    cluster.apply(&objects);

    // The operator (on the host) assigns a router id and priorities.
    wait_until(WAIT, "operator assignment", || {
        cluster
            .json("virtualservice", "web")
            .is_some_and(|v| v["status"]["assignment"]["routerId"].is_u64())
    })
    .expect("assignment");

    let _http1 = topo.serve_http(lvs_lan::RS1, 80).expect("rs1 serves");
    let http2 = topo.serve_http(lvs_lan::RS2, 80).expect("rs2 serves");

    let agent_bin = env!("CARGO_BIN_EXE_node-agent");
    let mut agents = Vec::new();
    for h in hosts {
        let relay = topo
            .spawn(
                h,
                &[
                    "socat",
                    "TCP-LISTEN:6443,bind=127.0.0.1,reuseaddr,fork",
                    &format!("UNIX-CONNECT:{}", sock.display()),
                ],
            )
            .expect("relay in namespace");
        let state = work.join(format!("{h}.state.json"));
        let agent = topo
            .spawn(
                h,
                &[
                    "env",
                    &format!("KUBECONFIG={}", agent_kubeconfig.display()),
                    "RUST_LOG=info",
                    agent_bin,
                    "--state",
                    state.to_str().expect("utf-8 path"),
                    "run",
                    "--node",
                    &node(h),
                    "--resync-seconds",
                    "5",
                ],
            )
            .expect("agent starts");
        agents.push((h, agent, relay));
    }
    let logs: Vec<(&str, PathBuf)> = agents
        .iter()
        .map(|(h, a, _)| (*h, a.log_path().to_path_buf()))
        .collect();
    let dump_logs = || {
        for (h, path) in &logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            eprintln!("----- agent {h} -----\n{text}");
        }
    };

    // Real servers prepared by their own agents: VIP on lo, ARP sysctls (realserver.sh).
    for h in [lvs_lan::RS1, lvs_lan::RS2] {
        if wait_until(WAIT, "VIP on the real server's lo", || {
            topo.has_addr(h, vip).unwrap_or(false)
                && topo
                    .sysctl(h, "net.ipv4.conf.all.arp_ignore")
                    .is_ok_and(|v| v == "1")
                && topo
                    .sysctl(h, "net.ipv4.conf.all.arp_announce")
                    .is_ok_and(|v| v == "2")
        })
        .is_err()
        {
            dump_logs();
            panic!("{h} was not prepared for DR");
        }
    }

    // Director1 has the higher automatic priority (names sort first): it is master and holds
    // the VIP; both directors program IPVS.
    if wait_until(WAIT, "director1 master with the VIP", || {
        topo.has_addr(lvs_lan::DIRECTOR1, vip).unwrap_or(false)
            && ipvs_lists(&topo, lvs_lan::DIRECTOR1, "192.0.2.21:80")
            && ipvs_lists(&topo, lvs_lan::DIRECTOR2, "192.0.2.22:80")
    })
    .is_err()
    {
        dump_logs();
        panic!("the directors did not converge");
    }
    assert!(
        !topo.has_addr(lvs_lan::DIRECTOR2, vip).expect("addresses"),
        "the backup must not hold the VIP"
    );

    // Traffic through the VIP reaches both real servers (rr).
    let mut seen = Vec::new();
    wait_until(WAIT, "both real servers answer through the VIP", || {
        seen = answers(&topo, vip, 6);
        seen.iter().any(|s| s == "rs1") && seen.iter().any(|s| s == "rs2")
    })
    .unwrap_or_else(|_| {
        dump_logs();
        panic!("answers through the VIP: {seen:?}")
    });

    // kubectl tells the truth: master, healthy 2/2, Ready.
    wait_until(WAIT, "status reports master and Ready", || {
        cluster.json("virtualservice", "web").is_some_and(|v| {
            v["status"]["master"] == node(lvs_lan::DIRECTOR1)
                && v["status"]["healthy"] == "2/2"
                && v["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
    })
    .unwrap_or_else(|_| {
        dump_logs();
        panic!(
            "status: {:#}",
            cluster.json("virtualservice", "web").unwrap_or_default()["status"]
        )
    });

    cluster.show("both directors programmed, director1 is master, both real servers healthy");
    eprintln!("client -> VIP answers: {seen:?}");

    // rs2 stops answering: out of the master's IPVS table, reported unhealthy.
    drop(http2);
    wait_until(WAIT, "rs2 out of rotation", || {
        !ipvs_lists(&topo, lvs_lan::DIRECTOR1, "192.0.2.22:80")
    })
    .unwrap_or_else(|_| {
        dump_logs();
        panic!("rs2 stayed in the IPVS table")
    });
    wait_until(WAIT, "rs2 reported unhealthy", || {
        cluster.json("realserver", "rs2").is_some_and(|v| {
            v["status"]["health"] == "Unhealthy"
                && v["status"]["directors"].as_array().is_some_and(|d| {
                    d.iter().any(|e| {
                        e["nodeName"] == node(lvs_lan::DIRECTOR1)
                            && e["healthy"] == false
                            && e["virtualService"] == "web"
                    })
                })
        })
    })
    .unwrap_or_else(|_| {
        dump_logs();
        panic!(
            "rs2 status: {:#}",
            cluster.json("realserver", "rs2").unwrap_or_default()["status"]
        )
    });
    cluster.show("rs2 stopped answering: out of rotation and reported unhealthy");
    let after = answers(&topo, vip, 4);
    assert!(
        !after.is_empty() && after.iter().all(|s| s == "rs1"),
        "only rs1 answers now: {after:?}"
    );

    // Graceful stop of the master: it resigns (priority 0), the backup takes the VIP.
    let (_, d1_agent, _) = agents
        .iter_mut()
        .find(|(h, _, _)| *h == lvs_lan::DIRECTOR1)
        .expect("director1 agent");
    d1_agent.signal(Signal::SIGTERM).expect("SIGTERM");
    d1_agent
        .wait_timeout(Duration::from_secs(30))
        .expect("director1 agent stops after SIGTERM");
    wait_until(WAIT, "director2 takes the VIP", || {
        topo.has_addr(lvs_lan::DIRECTOR2, vip).unwrap_or(false)
            && !topo.has_addr(lvs_lan::DIRECTOR1, vip).unwrap_or(true)
    })
    .unwrap_or_else(|_| {
        dump_logs();
        panic!("no hand-over")
    });
    // The stopped agent left IPVS in place for its successor (adoption, not flush).
    assert!(ipvs_lists(&topo, lvs_lan::DIRECTOR1, "192.0.2.21:80"));
    let mut later = Vec::new();
    wait_until(WAIT, "traffic through the new master", || {
        later = answers(&topo, vip, 3);
        !later.is_empty() && later.iter().all(|s| s == "rs1")
    })
    .unwrap_or_else(|_| {
        dump_logs();
        panic!("after hand-over: {later:?}")
    });
    wait_until(WAIT, "status names the new master", || {
        cluster
            .json("virtualservice", "web")
            .is_some_and(|v| v["status"]["master"] == node(lvs_lan::DIRECTOR2))
    })
    .unwrap_or_else(|_| {
        dump_logs();
        panic!("master not reported")
    });
    cluster.show("director1 stopped gracefully: director2 took the VIP");
    eprintln!("client -> VIP answers: {later:?}");
    let _ = std::fs::remove_dir_all(&work);
}
