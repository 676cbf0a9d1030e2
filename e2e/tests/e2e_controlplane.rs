//! The control-plane harness against the real kube-apiserver + etcd it starts.
//! All checks share one control plane: each start costs a few seconds of a 2-core machine.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use kube_lvs_e2e::controlplane::{ControlPlane, KUBE_VERSION, VM_API_SERVER};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn process_exists(pid: u32) -> bool {
    // Signal 0 checks for existence; a reaped child is gone (ESRCH).
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

#[test]
fn e2e_controlplane_lifecycle() -> Result<()> {
    let began = Instant::now();
    let mut cp = ControlPlane::start().context("starting the control plane")?;
    eprintln!(
        "control plane ready in {:?} at {} (dir {})",
        began.elapsed(),
        cp.server_url(),
        cp.dir().display()
    );
    let pids = cp.pids();
    ensure!(
        pids.len() == 2,
        "expected etcd + apiserver pids, got {pids:?}"
    );
    ensure!(pids.iter().all(|p| process_exists(*p)));
    let dir = cp.dir().to_path_buf();

    namespaces_are_listed(&cp)?;
    version_is_pinned(&cp)?;
    configmap_roundtrip(&cp)?;
    large_stdin_and_stdout(&cp)?;
    rbac_is_enforced_for_cert_users(&cp)?;
    rbac_is_enforced_for_service_accounts(&cp)?;
    nodes_can_be_registered(&cp)?;
    vm_kubeconfig_points_at_forwarded_address(&cp)?;
    apiserver_outage_keeps_data(&mut cp)?;

    drop(cp);
    for pid in &pids {
        ensure!(
            !process_exists(*pid),
            "process {pid} survived the control plane's drop"
        );
    }
    ensure!(!dir.exists(), "{} was not removed", dir.display());
    Ok(())
}

fn namespaces_are_listed(cp: &ControlPlane) -> Result<()> {
    let out = cp.kubectl_ok(&["get", "ns", "-o", "name"])?;
    for ns in ["namespace/default", "namespace/kube-system"] {
        ensure!(out.lines().any(|l| l == ns), "{ns} missing from:\n{out}");
    }
    Ok(())
}

fn version_is_pinned(cp: &ControlPlane) -> Result<()> {
    let out = cp.kubectl_ok(&["get", "--raw", "/version"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(
        v["gitVersion"] == KUBE_VERSION,
        "server reports {}, expected {KUBE_VERSION}",
        v["gitVersion"]
    );
    Ok(())
}

fn configmap_roundtrip(cp: &ControlPlane) -> Result<()> {
    let ns = unique("cp-cm");
    cp.kubectl_ok(&["create", "namespace", &ns])?;
    cp.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n  namespace: {ns}\ndata:\n  vip: 192.0.2.10\n"
    ))?;
    let got = cp.kubectl_ok(&[
        "get",
        "configmap",
        "probe",
        "-n",
        &ns,
        "-o",
        "jsonpath={.data.vip}",
    ])?;
    ensure!(got == "192.0.2.10", "configmap read back {got:?}");

    // wait_for polls until the predicate holds: the value changes after a patch.
    cp.kubectl_ok(&[
        "patch",
        "configmap",
        "probe",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"data":{"vip":"192.0.2.11"}}"#,
    ])?;
    let out = cp.wait_for(
        &[
            "get",
            "configmap",
            "probe",
            "-n",
            &ns,
            "-o",
            "jsonpath={.data.vip}",
        ],
        Duration::from_secs(10),
        |o| o.status.success() && o.stdout == b"192.0.2.11",
    )?;
    ensure!(stdout(&out) == "192.0.2.11");

    let missing = cp.wait_for(
        &["get", "configmap", "absent", "-n", &ns],
        Duration::from_millis(500),
        |o| o.status.success(),
    );
    ensure!(
        missing.is_err(),
        "wait_for accepted a configmap that does not exist"
    );
    Ok(())
}

fn expect_forbidden(cp: &ControlPlane, kubeconfig: &Path, args: &[&str]) -> Result<()> {
    let out = cp.kubectl_as(kubeconfig, args)?;
    ensure!(
        !out.status.success(),
        "kubectl {args:?} unexpectedly allowed: {}",
        stdout(&out)
    );
    ensure!(
        stderr(&out).contains("Forbidden") || stderr(&out).contains("forbidden"),
        "kubectl {args:?} failed for another reason: {}",
        stderr(&out)
    );
    Ok(())
}

fn grant_configmap_reader(cp: &ControlPlane, ns: &str, subject: &str) -> Result<()> {
    cp.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: cm-reader\n  namespace: {ns}\nrules:\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get, list]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: cm-reader-{}\n  namespace: {ns}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: cm-reader\nsubjects:\n{subject}",
        std::process::id()
    ))?;
    Ok(())
}

fn rbac_is_enforced_for_cert_users(cp: &ControlPlane) -> Result<()> {
    let ns = unique("cp-rbac");
    cp.kubectl_ok(&["create", "namespace", &ns])?;
    cp.kubectl_ok(&[
        "create",
        "configmap",
        "visible",
        "-n",
        &ns,
        "--from-literal=k=v",
    ])?;
    let user = "kube-lvs-test-user";
    let kc = cp.user_kubeconfig(user, &["kube-lvs-testers"])?;

    expect_forbidden(cp, &kc, &["get", "configmap", "visible", "-n", &ns])?;
    let whoami = cp.kubectl_as(
        &kc,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    )?;
    ensure!(
        stdout(&whoami) == user,
        "whoami: {} {}",
        stdout(&whoami),
        stderr(&whoami)
    );

    grant_configmap_reader(
        cp,
        &ns,
        &format!("- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: {user}\n"),
    )?;
    // RBAC changes reach the authorizer through an informer: poll rather than assume.
    let out = cp.wait_for(
        &[
            "auth",
            "can-i",
            "get",
            "configmaps",
            "-n",
            &ns,
            "--as",
            user,
        ],
        Duration::from_secs(20),
        |o| o.stdout.starts_with(b"yes"),
    )?;
    ensure!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cp.kubectl_as(
            &kc,
            &[
                "get",
                "configmap",
                "visible",
                "-n",
                &ns,
                "-o",
                "jsonpath={.data.k}",
            ],
        )?;
        if out.status.success() {
            ensure!(stdout(&out) == "v");
            break;
        }
        if Instant::now() > deadline {
            bail!("bound user still cannot read: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The Role grants reads only.
    expect_forbidden(cp, &kc, &["delete", "configmap", "visible", "-n", &ns])?;
    expect_forbidden(cp, &kc, &["get", "configmaps", "-n", "default"])?;
    Ok(())
}

fn rbac_is_enforced_for_service_accounts(cp: &ControlPlane) -> Result<()> {
    let ns = unique("cp-sa");
    cp.kubectl_ok(&["create", "namespace", &ns])?;
    cp.kubectl_ok(&[
        "create",
        "configmap",
        "visible",
        "-n",
        &ns,
        "--from-literal=k=v",
    ])?;
    let kc = cp.service_account_kubeconfig(&ns, "agent")?;
    let vm_kc = std::fs::read_to_string(cp.for_vm(&kc)?)?;
    let host_kc = std::fs::read_to_string(&kc)?;
    ensure!(
        vm_kc.contains(&format!("server: \"https://{VM_API_SERVER}\"")),
        "{vm_kc}"
    );
    ensure!(
        vm_kc
            .lines()
            .filter(|l| l.contains("token:"))
            .eq(host_kc.lines().filter(|l| l.contains("token:"))),
        "the VM copy must keep the service account's token"
    );
    ensure!(
        cp.for_vm(Path::new("/etc/hostname")).is_err(),
        "a foreign file was rebased"
    );
    expect_forbidden(cp, &kc, &["get", "configmap", "visible", "-n", &ns])?;
    grant_configmap_reader(
        cp,
        &ns,
        &format!("- kind: ServiceAccount\n  name: agent\n  namespace: {ns}\n"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cp.kubectl_as(
            &kc,
            &["get", "configmap", "visible", "-n", &ns, "-o", "name"],
        )?;
        if out.status.success() {
            ensure!(stdout(&out).trim() == "configmap/visible");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("bound service account still cannot read: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn nodes_can_be_registered(cp: &ControlPlane) -> Result<()> {
    let node = unique("director-a");
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 21));
    cp.create_node(&node, &[("lvs.kube-lvs.io/director", "true")], Some(ip))?;
    let got = cp.kubectl_ok(&[
        "get",
        "node",
        &node,
        "-o",
        r#"jsonpath={.metadata.labels.lvs\.kube-lvs\.io/director} {.status.addresses[?(@.type=="InternalIP")].address}"#,
    ])?;
    ensure!(got == "true 192.0.2.21", "node read back {got:?}");
    let selected = cp.kubectl_ok(&[
        "get",
        "nodes",
        "-l",
        "lvs.kube-lvs.io/director=true",
        "-o",
        "name",
    ])?;
    ensure!(
        selected.lines().any(|l| l == format!("node/{node}")),
        "{selected}"
    );
    // Registering again updates rather than fails.
    cp.create_node(&node, &[("lvs.kube-lvs.io/director", "false")], None)?;
    let label = cp.kubectl_ok(&[
        "get",
        "node",
        &node,
        "-o",
        r#"jsonpath={.metadata.labels.lvs\.kube-lvs\.io/director}"#,
    ])?;
    ensure!(label == "false", "label after update {label:?}");
    Ok(())
}

fn vm_kubeconfig_points_at_forwarded_address(cp: &ControlPlane) -> Result<()> {
    let path = cp.vm_kubeconfig()?;
    let text = std::fs::read_to_string(&path)?;
    ensure!(
        text.contains(&format!("\"https://{VM_API_SERVER}\"")),
        "{text}"
    );
    // The VM address is served by the same certificate: reach the real server under that name by
    // overriding the TLS server name, proving the SAN is there.
    let out = cp.kubectl_as(
        cp.kubeconfig(),
        &[
            "get",
            "--raw",
            "/readyz",
            "--tls-server-name",
            &VM_API_SERVER.ip().to_string(),
        ],
    )?;
    ensure!(
        out.status.success() && stdout(&out) == "ok",
        "readyz via VM SAN: {}",
        stderr(&out)
    );
    let wrong = cp.kubectl_as(
        cp.kubeconfig(),
        &[
            "get",
            "--raw",
            "/readyz",
            "--tls-server-name",
            "203.0.113.7",
        ],
    )?;
    ensure!(
        !wrong.status.success(),
        "a name outside the certificate was accepted"
    );
    let other: std::net::SocketAddr = "203.0.113.7:6443".parse()?;
    ensure!(
        cp.advertise_for_vm(other).is_err(),
        "an address outside the certificate was accepted"
    );
    Ok(())
}

/// A `testbed up` process; killed and reaped on drop whatever the test's outcome.
struct Testbed {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Testbed {
    fn start(tag: &str) -> Result<(Testbed, std::collections::HashMap<String, String>)> {
        let dir =
            std::env::temp_dir().join(format!("kube-lvs-testbed-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let env_file = dir.join("env");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
            .arg("up")
            .arg("--dir")
            .arg(dir.join("cp"))
            .arg("--env-file")
            .arg(&env_file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let mut tb = Testbed { child, dir };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !env_file.exists() {
            if let Some(status) = tb.child.try_wait()? {
                bail!("testbed exited early with {status}");
            }
            ensure!(
                Instant::now() < deadline,
                "testbed did not write {}",
                env_file.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let vars = std::fs::read_to_string(&env_file)?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        Ok((tb, vars))
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)?;
        Ok(())
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "testbed still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Alive means present and not a zombie: orphans killed by PDEATHSIG may linger as zombies until
/// whatever adopted them reaps them.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn server_pids(vars: &std::collections::HashMap<String, String>) -> Result<Vec<u32>> {
    let pids: Vec<u32> = vars
        .get("SERVER_PIDS")
        .context("SERVER_PIDS missing")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure!(pids.len() == 2, "expected two server pids, got {pids:?}");
    Ok(pids)
}

fn wait_all_gone(pids: &[u32], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|p| process_alive(*p)) {
        ensure!(
            Instant::now() < deadline,
            "servers {pids:?} still alive after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn e2e_controlplane_testbed_stops_on_sigterm() -> Result<()> {
    let (mut tb, vars) = Testbed::start("term")?;
    let pids = server_pids(&vars)?;
    ensure!(pids.iter().all(|p| process_alive(*p)));
    let kubeconfig = vars.get("KUBECONFIG").context("KUBECONFIG missing")?;
    let out = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            kubeconfig,
            "get",
            "ns",
            "default",
            "-o",
            "name",
        ])
        .output()?;
    ensure!(
        stdout(&out).trim() == "namespace/default",
        "kubectl: {}",
        stderr(&out)
    );
    let vm = vars.get("KUBECONFIG_VM").context("KUBECONFIG_VM missing")?;
    ensure!(std::fs::read_to_string(vm)?.contains("198.51.100.2:6443"));

    tb.signal(nix::sys::signal::Signal::SIGTERM)?;
    let status = tb.wait_exit(Duration::from_secs(30))?;
    ensure!(status.success(), "testbed exited with {status}");
    // Orderly teardown reaps the servers before exiting.
    ensure!(
        pids.iter().all(|p| !process_alive(*p)),
        "servers outlived testbed"
    );
    ensure!(!tb.dir.join("env").exists(), "env file left behind");
    Ok(())
}

#[test]
fn e2e_controlplane_servers_die_with_a_killed_harness() -> Result<()> {
    let (mut tb, vars) = Testbed::start("kill")?;
    let pids = server_pids(&vars)?;
    ensure!(pids.iter().all(|p| process_alive(*p)));
    // SIGKILL runs no destructor: only PR_SET_PDEATHSIG can take the servers down.
    tb.signal(nix::sys::signal::Signal::SIGKILL)?;
    tb.wait_exit(Duration::from_secs(10))?;
    wait_all_gone(&pids, Duration::from_secs(10))
}

fn apiserver_outage_keeps_data(cp: &mut ControlPlane) -> Result<()> {
    let ns = unique("cp-outage");
    cp.kubectl_ok(&["create", "namespace", &ns])?;
    cp.kubectl_ok(&[
        "create",
        "configmap",
        "survivor",
        "-n",
        &ns,
        "--from-literal=k=v",
    ])?;
    let old_pids = cp.pids();
    cp.stop_apiserver();
    ensure!(
        cp.pids().len() == 1,
        "only etcd should remain: {:?}",
        cp.pids()
    );
    let down = cp.kubectl(&[
        "get",
        "configmap",
        "survivor",
        "-n",
        &ns,
        "--request-timeout=3s",
    ])?;
    ensure!(!down.status.success(), "API server answered while stopped");
    ensure!(
        stderr(&down).contains("refused"),
        "unexpected failure while stopped: {}",
        stderr(&down)
    );
    cp.start_apiserver()?;
    ensure!(cp.pids().len() == 2);
    ensure!(cp.pids() != old_pids, "the API server was not restarted");
    let got = cp.kubectl_ok(&[
        "get",
        "configmap",
        "survivor",
        "-n",
        &ns,
        "-o",
        "jsonpath={.data.k}",
    ])?;
    ensure!(got == "v", "data after restart: {got:?}");
    Ok(())
}

#[test]
fn e2e_controlplane_keeps_dir_when_panicking() -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let joined = std::thread::spawn(move || {
        let cp = match ControlPlane::start() {
            Ok(cp) => cp,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        let _ = tx.send(Ok((cp.dir().to_path_buf(), cp.pids())));
        panic!("deliberate panic with a live control plane");
    })
    .join();
    ensure!(joined.is_err(), "the thread was expected to panic");
    let (dir, pids) = rx.recv()?.map_err(anyhow::Error::msg)?;
    let kept = dir.join("kubeconfig").is_file() && dir.join("kube-apiserver-1.log").is_file();
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(kept, "{} was not kept after a panic", dir.display());
    for pid in pids {
        ensure!(
            !process_exists(pid),
            "process {pid} survived a panicking drop"
        );
    }
    Ok(())
}

#[test]
fn e2e_controlplane_failed_start_reports_and_cleans_up() -> Result<()> {
    // An API server that exits at once: every attempt fails, the error carries the log, etcd is
    // stopped and the directory is kept for inspection.
    let dir = std::env::temp_dir().join(format!("kube-lvs-cp-fail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = kube_lvs_e2e::controlplane::ControlPlaneOptions {
        apiserver_bin: Some("/bin/false".into()),
        dir: Some(dir.clone()),
        ..Default::default()
    };
    let result = ControlPlane::start_with(opts);
    let logs: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("kube-apiserver-"))
        .collect();
    let etcd_left = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("etcd-data"));
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Err(kube_lvs_e2e::controlplane::Error::ProcessExited { name, .. }) => {
            ensure!(name == "kube-apiserver", "wrong process blamed: {name}")
        }
        other => bail!("expected ProcessExited, got {other:?}"),
    }
    ensure!(
        logs.len() == 3,
        "expected one log per attempt, got {logs:?}"
    );
    ensure!(!etcd_left, "etcd data left behind");
    let stray = std::process::Command::new("pgrep")
        .args(["-f", &format!("--data-dir={}", dir.display())])
        .output()?;
    ensure!(
        stray.stdout.is_empty(),
        "etcd still running: {}",
        stdout(&stray)
    );
    Ok(())
}

#[test]
fn e2e_controlplane_helm_installs_and_uninstalls() -> Result<()> {
    let cp = ControlPlane::start()?;
    let chart_dir = cp.dir().join("charts");
    std::fs::create_dir_all(&chart_dir)?;
    let chart_dir = chart_dir.to_string_lossy().into_owned();
    // A stock chart from `helm create`: Deployment, Service, ServiceAccount.
    cp.helm_ok(&["create", &format!("{chart_dir}/probe")])?;
    let ns = unique("cp-helm");
    cp.helm_ok(&[
        "install",
        "probe",
        &format!("{chart_dir}/probe"),
        "-n",
        &ns,
        "--create-namespace",
    ])?;
    let list: serde_json::Value =
        serde_json::from_str(&cp.helm_ok(&["list", "-n", &ns, "-o", "json"])?)?;
    ensure!(list[0]["status"] == "deployed", "helm list: {list}");
    let deploy = cp.kubectl_ok(&["get", "deployment", "-n", &ns, "-o", "name"])?;
    ensure!(
        deploy.trim() == "deployment.apps/probe",
        "deployments: {deploy:?}"
    );

    cp.helm_ok(&["uninstall", "probe", "-n", &ns])?;
    let deploy = cp.kubectl_ok(&["get", "deployment", "-n", &ns, "-o", "name"])?;
    ensure!(deploy.trim().is_empty(), "left after uninstall: {deploy:?}");
    Ok(())
}

fn large_stdin_and_stdout(cp: &ControlPlane) -> Result<()> {
    // ~300 KiB in and out at once: more than a pipe buffer in both directions.
    let blob = "x".repeat(300 * 1024);
    let manifest = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"large\",\"namespace\":\"default\"}},\"data\":{{\"blob\":\"{blob}\"}}}}"
    );
    let out = cp.kubectl_stdin(&["create", "-f", "-", "-o", "json"], manifest.as_bytes())?;
    ensure!(out.status.success(), "create failed: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["data"]["blob"].as_str().map(str::len) == Some(blob.len()));
    cp.kubectl_ok(&["delete", "configmap", "large", "-n", "default"])?;
    Ok(())
}
