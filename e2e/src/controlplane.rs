//! A real Kubernetes control plane for tests: etcd + kube-apiserver on free 127.0.0.1 ports, with a
//! throwaway PKI, RBAC authorization and an admin kubeconfig.
//!
//! There is no kubelet, scheduler or controller-manager: Node objects are created through the API,
//! operator and agents run as plain processes. Without the namespace controller a deleted namespace
//! stays `Terminating`, and without the garbage collector owner references do not cascade; tests use
//! fresh, uniquely named namespaces instead of relying on either.
//!
//! ```no_run
//! # fn main() -> Result<(), kube_lvs_e2e::controlplane::Error> {
//! let cp = kube_lvs_e2e::controlplane::ControlPlane::start()?;
//! let out = cp.kubectl_ok(&["get", "ns", "default", "-o", "name"])?;
//! assert_eq!(out.trim(), "namespace/default");
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use nix::errno::Errno;
use nix::sys::signal::{self, SigSet, Signal};
use nix::unistd::Pid;

/// Kubernetes release the harness builds and expects.
pub const KUBE_VERSION: &str = "v1.33.13";
/// helm release the harness builds (`e2e/tools/build-helm.sh` pins the same).
pub const HELM_VERSION: &str = "v3.19.5";
/// Address at which the qemu VM reaches the API server (qemu `guestfwd` to the host port).
pub const VM_API_SERVER: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 6443);
/// ClusterIP range handed to the API server. No kube-proxy runs, so these addresses are only numbers
/// in etcd; topologies should still avoid this slice of the documentation range.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "203.0.113.240/28";

const APISERVER_BIN_ENV: &str = "KUBE_LVS_APISERVER_BIN";
const ETCD_BIN_ENV: &str = "KUBE_LVS_ETCD_BIN";
const KUBECTL_BIN_ENV: &str = "KUBE_LVS_KUBECTL_BIN";
const HELM_BIN_ENV: &str = "KUBE_LVS_HELM_BIN";
const CACHE_ENV: &str = "KUBE_LVS_CACHE";
const START_ATTEMPTS: u32 = 3;
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(20);
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(90);
const APISERVER_STOP_GRACE: Duration = Duration::from_secs(3);
const POLL_INTERVAL: Duration = Duration::from_millis(200);
const LOG_TAIL_BYTES: u64 = 4000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("binary {name} not found ({hint})")]
    MissingBinary { name: String, hint: String },
    #[error("building {what} failed with {status}")]
    BuildFailed { what: String, status: ExitStatus },
    #[error("openssl {step} failed: {stderr}")]
    Openssl { step: String, stderr: String },
    #[error("{name} exited during startup with {status}; log {log}:\n{tail}")]
    ProcessExited {
        name: &'static str,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("timed out after {timeout:?} waiting for {what}; last seen: {last}")]
    Timeout {
        what: String,
        timeout: Duration,
        last: String,
    },
    #[error("kubectl {args} failed with {status}: {stderr}")]
    Kubectl {
        args: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("helm {args} failed with {status}: {stderr}")]
    Helm {
        args: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error(
        "the serving certificate does not cover {0}; add it to ControlPlaneOptions::extra_san_ips"
    )]
    AddressNotInCertificate(IpAddr),
    #[error("{0} was not written by this control plane")]
    ForeignKubeconfig(PathBuf),
    #[error("the process spawner thread is gone")]
    SpawnerGone,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Knobs for [`ControlPlane::start_with`]; `Default` is what [`ControlPlane::start`] uses.
#[derive(Debug, Clone, Default)]
pub struct ControlPlaneOptions {
    /// Extra IP SANs on the serving certificate (127.0.0.1 and 198.51.100.2 are always present).
    pub extra_san_ips: Vec<IpAddr>,
    /// Use this directory (created if needed) for certificates, kubeconfigs, logs and etcd data
    /// instead of a fresh temporary one; it is never removed (etcd data is, on stop).
    pub dir: Option<PathBuf>,
    /// Extra kube-apiserver flags, appended last so they override ours.
    pub extra_apiserver_args: Vec<String>,
    /// kube-apiserver binary; wins over `KUBE_LVS_APISERVER_BIN` and the cache.
    pub apiserver_bin: Option<PathBuf>,
    /// etcd binary; wins over `KUBE_LVS_ETCD_BIN` and `PATH`.
    pub etcd_bin: Option<PathBuf>,
}

/// A running etcd + kube-apiserver pair. Dropping it stops both processes; if the thread is
/// panicking the working directory (logs, certificates, kubeconfigs) is kept and its path printed.
pub struct ControlPlane {
    dir: PathBuf,
    remove_dir: bool,
    etcd_data: PathBuf,
    etcd: Option<Managed>,
    apiserver: Option<Managed>,
    kubectl: PathBuf,
    port: u16,
    etcd_url: String,
    san_ips: Vec<IpAddr>,
    kubeconfig: PathBuf,
    startup: Duration,
    /// kube-apiserver binary and flags, kept to restart it on the same port.
    apiserver_cmd: (PathBuf, Vec<String>),
    /// Numbers log files so a restart or retry never overwrites an earlier log.
    log_seq: u32,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("dir", &self.dir)
            .field("server", &self.server_url())
            .field("etcd", &self.etcd_url)
            .finish()
    }
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver with default options and waits until `/readyz` passes.
    pub fn start() -> Result<ControlPlane, Error> {
        Self::start_with(ControlPlaneOptions::default())
    }

    pub fn start_with(opts: ControlPlaneOptions) -> Result<ControlPlane, Error> {
        let began = Instant::now();
        let bins = Binaries::resolve(&opts)?;
        let (dir, remove_dir) = match &opts.dir {
            Some(d) => (d.clone(), false),
            None => (unique_dir(&std::env::temp_dir(), "kube-lvs-cp")?, true),
        };
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;

        let mut san_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), VM_API_SERVER.ip()];
        for ip in &opts.extra_san_ips {
            if !san_ips.contains(ip) {
                san_ips.push(*ip);
            }
        }
        let pki = match Pki::generate(&dir, &san_ips) {
            Ok(pki) => pki,
            Err(e) => {
                if remove_dir {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Err(e);
            }
        };

        // Half-built control plane: its Drop cleans up whatever was started if a step fails.
        let mut cp = ControlPlane {
            etcd_data: dir.join("etcd-data"),
            dir,
            remove_dir,
            etcd: None,
            apiserver: None,
            kubectl: bins.kubectl,
            port: 0,
            etcd_url: String::new(),
            san_ips,
            kubeconfig: PathBuf::new(),
            startup: Duration::ZERO,
            apiserver_cmd: (PathBuf::new(), Vec::new()),
            log_seq: 0,
        };

        let mut last_err = None;
        for attempt in 1..=START_ATTEMPTS {
            // Another process may grab a port between our probe and the server's bind; a retry with
            // fresh ports makes that race harmless.
            match cp.launch(&bins.etcd, &bins.apiserver, &pki, &opts, attempt) {
                Ok(()) => {
                    last_err = None;
                    break;
                }
                Err(e @ Error::ProcessExited { .. }) => {
                    tracing::warn!(attempt, error = %e, "control plane start attempt failed");
                    cp.stop_processes();
                    last_err = Some(e);
                }
                Err(e) => {
                    last_err = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = last_err {
            // The logs explain the failure: keep them.
            cp.remove_dir = false;
            eprintln!(
                "control plane: start failed, keeping {} (logs)",
                cp.dir.display()
            );
            return Err(e);
        }
        cp.startup = began.elapsed();
        tracing::info!(
            server = %cp.server_url(),
            dir = %cp.dir.display(),
            startup_ms = cp.startup.as_millis() as u64,
            "control plane ready"
        );
        Ok(cp)
    }

    fn launch(
        &mut self,
        etcd_bin: &Path,
        apiserver_bin: &Path,
        pki: &Pki,
        opts: &ControlPlaneOptions,
        attempt: u32,
    ) -> Result<(), Error> {
        let [etcd_client, etcd_peer, api_port] = free_ports::<3>()?;
        self.port = api_port;
        self.etcd_url = format!("http://127.0.0.1:{etcd_client}");

        // etcd data lives in memory when possible: fsync on a shared disk dominates start time.
        let shm = Path::new("/dev/shm");
        // A caller-chosen directory keeps everything inside it (a killed harness leaves nothing
        // elsewhere); stale data from an earlier run there must not leak into this cluster.
        self.etcd_data = if self.remove_dir && shm.is_dir() {
            unique_dir(shm, "kube-lvs-etcd")?
        } else {
            let d = self.dir.join(format!("etcd-data-{attempt}"));
            let _ = std::fs::remove_dir_all(&d);
            d
        };
        let peer = format!("http://127.0.0.1:{etcd_peer}");
        let mut etcd = Command::new(etcd_bin);
        etcd.arg("--name=default")
            .arg(format!("--data-dir={}", self.etcd_data.display()))
            .arg(format!("--listen-client-urls={}", self.etcd_url))
            .arg(format!("--advertise-client-urls={}", self.etcd_url))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg("--logger=zap");
        let etcd_log = self.dir.join(format!("etcd-{attempt}.log"));
        self.etcd = Some(Managed::spawn("etcd", etcd, &etcd_log)?);
        self.wait_etcd(etcd_client)?;

        let sa_issuer = "https://kubernetes.default.svc.cluster.local";
        let mut args = vec![
            format!("--etcd-servers={}", self.etcd_url),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer={sa_issuer}"),
            format!("--service-account-key-file={}", pki.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            // No real endpoints exist for the `kubernetes` Service: the apiserver listens on loopback.
            "--endpoint-reconciler-type=none".into(),
            "--allow-privileged=true".into(),
            format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
            "--profiling=false".into(),
        ];
        args.extend(opts.extra_apiserver_args.iter().cloned());
        self.apiserver_cmd = (apiserver_bin.to_path_buf(), args);
        self.log_seq = attempt;
        self.spawn_apiserver()?;

        self.kubeconfig = self.dir.join("kubeconfig");
        write_kubeconfig(
            &self.kubeconfig,
            &self.server_url(),
            &pki.ca_cert,
            &Credentials::Cert {
                user: "admin",
                cert: &pki.admin_cert,
                key: &pki.admin_key,
            },
        )?;
        self.wait_apiserver()
    }

    fn spawn_apiserver(&mut self) -> Result<(), Error> {
        let (bin, args) = &self.apiserver_cmd;
        let mut cmd = Command::new(bin);
        cmd.args(args);
        let log = self
            .dir
            .join(format!("kube-apiserver-{}.log", self.log_seq));
        self.apiserver = Some(Managed::spawn("kube-apiserver", cmd, &log)?);
        Ok(())
    }

    /// Stops kube-apiserver gracefully (SIGTERM, up to 3 s; etcd keeps the data): clients then see
    /// connection refused, as during an API-server outage.
    pub fn stop_apiserver(&mut self) {
        if let Some(api) = self.apiserver.take() {
            api.stop(APISERVER_STOP_GRACE);
        }
    }

    /// Starts kube-apiserver again on the same port with the same flags (after
    /// [`Self::stop_apiserver`]) and waits until it is ready.
    pub fn start_apiserver(&mut self) -> Result<(), Error> {
        if self.apiserver.is_some() {
            return Ok(());
        }
        self.log_seq += 1;
        self.spawn_apiserver()?;
        self.wait_apiserver()
    }

    fn wait_etcd(&mut self, port: u16) -> Result<(), Error> {
        let deadline = Instant::now() + ETCD_READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if let Some(etcd) = self.etcd.as_mut() {
                etcd.check_alive()?;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("etcd to listen on {addr}"),
                    timeout: ETCD_READY_TIMEOUT,
                    last: "connection refused".into(),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn wait_apiserver(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + APISERVER_READY_TIMEOUT;
        loop {
            if let Some(api) = self.apiserver.as_mut() {
                api.check_alive()?;
            }
            let out = self.kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"])?;
            let last = if out.status.success() {
                // The `default` namespace is created by a post-start hook shortly after readyz.
                let ns = self.kubectl(&["get", "namespace", "default", "-o", "name"])?;
                if ns.status.success() {
                    return Ok(());
                }
                String::from_utf8_lossy(&ns.stderr).into_owned()
            } else {
                String::from_utf8_lossy(&out.stderr).into_owned()
            };
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "kube-apiserver /readyz".into(),
                    timeout: APISERVER_READY_TIMEOUT,
                    last,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Admin kubeconfig (group `system:masters`) for `https://127.0.0.1:<port>`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The API server's port on 127.0.0.1 (the target of the VM's `guestfwd`).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// Working directory: certificates, kubeconfigs, logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Wall time `start` took, from resolving binaries to a ready API server.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Process ids of etcd and kube-apiserver (for teardown assertions).
    pub fn pids(&self) -> Vec<u32> {
        [&self.etcd, &self.apiserver]
            .into_iter()
            .flatten()
            .map(|m| m.child.id())
            .collect()
    }

    /// Path of the current kube-apiserver log.
    pub fn apiserver_log(&self) -> Option<&Path> {
        self.apiserver.as_ref().map(|m| m.log.as_path())
    }

    /// Runs `kubectl` as admin. A non-zero exit is not an error here; see [`Self::kubectl_ok`].
    pub fn kubectl(&self, args: &[&str]) -> Result<Output, Error> {
        kubectl_with(&self.kubectl, &self.kubeconfig, args, None)
    }

    /// Runs `kubectl` as admin with `stdin` on its standard input (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &[u8]) -> Result<Output, Error> {
        kubectl_with(&self.kubectl, &self.kubeconfig, args, Some(stdin))
    }

    /// Runs `kubectl` as admin and returns stdout, or [`Error::Kubectl`] with stderr on failure.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String, Error> {
        checked(args, self.kubectl(args)?)
    }

    /// Runs `kubectl` with another kubeconfig (e.g. from [`Self::user_kubeconfig`]).
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Result<Output, Error> {
        kubectl_with(&self.kubectl, kubeconfig, args, None)
    }

    /// Runs helm as admin against this cluster (`--kubeconfig` set; helm's cache, config and data
    /// directories kept inside the working directory so runs never touch the user's).
    pub fn helm(&self, args: &[&str]) -> Result<Output, Error> {
        let helm = helm_bin()?;
        let home = self.dir.join("helm");
        Command::new(&helm)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("running helm {}", args.join(" "))))
    }

    /// [`Self::helm`], returning stdout or [`Error::Helm`] with stderr on failure.
    pub fn helm_ok(&self, args: &[&str]) -> Result<String, Error> {
        let out = self.helm(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Helm {
                args: args.join(" "),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// `kubectl apply -f -` of a YAML/JSON document as admin; returns kubectl's stdout.
    pub fn apply(&self, manifest: &str) -> Result<String, Error> {
        let args = ["apply", "-f", "-"];
        checked(&args, self.kubectl_stdin(&args, manifest.as_bytes())?)
    }

    /// Polls `kubectl <args>` until `predicate` accepts its output or `timeout` passes.
    pub fn wait_for<F>(
        &self,
        args: &[&str],
        timeout: Duration,
        mut predicate: F,
    ) -> Result<Output, Error>
    where
        F: FnMut(&Output) -> bool,
    {
        let mut last = String::new();
        poll_until(&format!("kubectl {}", args.join(" ")), timeout, || {
            let out = match self.kubectl(args) {
                Ok(out) => out,
                Err(e) => {
                    last = e.to_string();
                    return Ok(None);
                }
            };
            if predicate(&out) {
                return Ok(Some(out));
            }
            last = format!(
                "status {}, stdout {:?}, stderr {:?}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(None)
        })
        .map_err(|e| match e {
            Error::Timeout { what, timeout, .. } => Error::Timeout {
                what,
                timeout,
                last: std::mem::take(&mut last),
            },
            other => other,
        })
    }

    /// Writes an admin kubeconfig whose server is `https://<addr>` — how the qemu VM reaches this API
    /// server through its port forward. The address must be in the serving certificate.
    pub fn advertise_for_vm(&self, addr: SocketAddr) -> Result<PathBuf, Error> {
        if !self.san_ips.contains(&addr.ip()) {
            return Err(Error::AddressNotInCertificate(addr.ip()));
        }
        let name = format!("kubeconfig-{}", sanitize(&addr.to_string()));
        let path = self.dir.join(name);
        write_kubeconfig(
            &path,
            &format!("https://{addr}"),
            &self.ca_cert(),
            &Credentials::Cert {
                user: "admin",
                cert: &self.dir.join("admin.crt"),
                key: &self.dir.join("admin.key"),
            },
        )?;
        Ok(path)
    }

    /// Copy of a kubeconfig written by this harness (e.g. [`Self::service_account_kubeconfig`])
    /// whose server is [`VM_API_SERVER`], so a component in the VM runs with the same identity.
    pub fn for_vm(&self, kubeconfig: &Path) -> Result<PathBuf, Error> {
        let text = std::fs::read_to_string(kubeconfig)
            .map_err(io_err(format!("reading {}", kubeconfig.display())))?;
        let host = json_string(&self.server_url());
        let vm = json_string(&format!("https://{VM_API_SERVER}"));
        if !text.contains(&format!("server: {host}\n")) {
            return Err(Error::ForeignKubeconfig(kubeconfig.to_path_buf()));
        }
        let rebased = text.replace(&format!("server: {host}\n"), &format!("server: {vm}\n"));
        let mut name = kubeconfig.file_name().unwrap_or_default().to_os_string();
        name.push("-vm");
        let path = kubeconfig.with_file_name(name);
        std::fs::write(&path, rebased).map_err(io_err(format!("writing {}", path.display())))?;
        Ok(path)
    }

    /// [`Self::advertise_for_vm`] for the standard [`VM_API_SERVER`] address.
    pub fn vm_kubeconfig(&self) -> Result<PathBuf, Error> {
        self.advertise_for_vm(VM_API_SERVER)
    }

    /// Issues a client certificate for `user` in `groups` (no RBAC bindings are created) and writes a
    /// kubeconfig using it.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf, Error> {
        let stem = format!("user-{}", sanitize(user));
        let (cert, key) = Pki::client_cert(&self.dir, &stem, user, groups)?;
        let path = self.dir.join(format!("kubeconfig-{stem}"));
        write_kubeconfig(
            &path,
            &self.server_url(),
            &self.ca_cert(),
            &Credentials::Cert {
                user,
                cert: &cert,
                key: &key,
            },
        )?;
        Ok(path)
    }

    /// Ensures the ServiceAccount exists, requests a token for it (TokenRequest API) and writes a
    /// kubeconfig using that token: how an in-cluster component would authenticate.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, Error> {
        self.apply(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        ))?;
        let token =
            self.kubectl_ok(&["create", "token", name, "-n", namespace, "--duration=24h"])?;
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let path = self.dir.join(format!(
            "kubeconfig-sa-{}-{}",
            sanitize(namespace),
            sanitize(name)
        ));
        write_kubeconfig(
            &path,
            &self.server_url(),
            &self.ca_cert(),
            &Credentials::Token {
                user: &user,
                token: token.trim(),
            },
        )?;
        Ok(path)
    }

    /// Creates (or updates) a Node object with labels and, optionally, an InternalIP address — what
    /// a kubelet would register; node agents then run with `NODE_NAME=<name>`.
    pub fn create_node(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        internal_ip: Option<IpAddr>,
    ) -> Result<(), Error> {
        let mut manifest = format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n"
        );
        for (k, v) in labels {
            let _ = writeln!(manifest, "    {k}: \"{v}\"");
        }
        self.apply(&manifest)?;
        if let Some(ip) = internal_ip {
            let patch = format!(
                r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"{ip}"}},{{"type":"Hostname","address":"{name}"}}]}}}}"#
            );
            self.kubectl_ok(&[
                "patch",
                "node",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ])?;
        }
        Ok(())
    }

    fn stop_processes(&mut self) {
        // Everything is thrown away, so nothing needs a graceful stop; a graceful API-server
        // shutdown would cost every test 1-3 s. The API server goes first so its log does not
        // end in etcd errors.
        if let Some(api) = self.apiserver.take() {
            api.stop(Duration::ZERO);
        }
        if let Some(etcd) = self.etcd.take() {
            etcd.stop(Duration::ZERO);
        }
        // The data is useless once etcd is gone, and may live outside the working directory.
        let _ = std::fs::remove_dir_all(&self.etcd_data);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_processes();
        if std::thread::panicking() {
            eprintln!(
                "control plane: keeping {} (logs, certificates, kubeconfigs) because the test panicked",
                self.dir.display()
            );
        } else if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `f` every 200 ms until it yields `Some`, an error, or `timeout` passes.
pub fn poll_until<T, F>(what: &str, timeout: Duration, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Result<Option<T>, Error>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                timeout,
                last: String::new(),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn kubectl_with(
    kubectl: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<Output, Error> {
    let mut cmd = Command::new(kubectl);
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        // An inherited KUBECONFIG must not leak in; the flag wins but be explicit.
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let context = || format!("running kubectl {}", args.join(" "));
    match stdin {
        None => cmd.stdin(Stdio::null()).output().map_err(io_err(context())),
        Some(input) => {
            cmd.stdin(Stdio::piped());
            let mut child = cmd.spawn().map_err(io_err(context()))?;
            // Fed from another thread so a large input and a chatty kubectl cannot block each
            // other on full pipes.
            let writer = child.stdin.take().map(|mut pipe| {
                let input = input.to_vec();
                std::thread::spawn(move || pipe.write_all(&input))
            });
            let out = child.wait_with_output().map_err(io_err(context()))?;
            if let Some(Ok(Err(e))) = writer.map(|w| w.join()) {
                // kubectl may exit before reading everything; its own stderr then says why.
                if e.kind() != io::ErrorKind::BrokenPipe {
                    return Err(Error::Io {
                        context: context(),
                        source: e,
                    });
                }
            }
            Ok(out)
        }
    }
}

fn checked(args: &[&str], out: Output) -> Result<String, Error> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Kubectl {
            args: args.join(" "),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Binds `N` listeners at once so the ports differ, then releases them for the servers.
fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in ports.iter_mut() {
        let l =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("binding a free port"))?;
        *port = l
            .local_addr()
            .map_err(io_err("reading a bound port"))?
            .port();
        listeners.push(l);
    }
    Ok(ports)
}

fn unique_dir(parent: &Path, prefix: &str) -> Result<PathBuf, Error> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = parent.join(format!("{prefix}-{}-{n}-{nanos:08x}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Keeps a string usable as one file-name component.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Binaries

struct Binaries {
    etcd: PathBuf,
    apiserver: PathBuf,
    kubectl: PathBuf,
}

impl Binaries {
    fn resolve(opts: &ControlPlaneOptions) -> Result<Binaries, Error> {
        let apiserver = match opts
            .apiserver_bin
            .clone()
            .or_else(|| env_path(APISERVER_BIN_ENV))
        {
            Some(p) => p,
            None => apiserver_from_cache()?,
        };
        let etcd = opts
            .etcd_bin
            .clone()
            .or_else(|| env_path(ETCD_BIN_ENV))
            .or_else(|| which("etcd"))
            .ok_or_else(|| Error::MissingBinary {
                name: "etcd".into(),
                hint: format!("apt-get install etcd-server, or set {ETCD_BIN_ENV}"),
            })?;
        let kubectl = env_path(KUBECTL_BIN_ENV)
            .or_else(|| which("kubectl"))
            .ok_or_else(|| Error::MissingBinary {
                name: "kubectl".into(),
                hint: format!("run e2e/tools/install-deps.sh, or set {KUBECTL_BIN_ENV}"),
            })?;
        for (name, p) in [
            ("kube-apiserver", &apiserver),
            ("etcd", &etcd),
            ("kubectl", &kubectl),
        ] {
            if !p.is_file() {
                return Err(Error::MissingBinary {
                    name: name.into(),
                    hint: format!("{} is not a file", p.display()),
                });
            }
        }
        Ok(Binaries {
            etcd,
            apiserver,
            kubectl,
        })
    }
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn cache_dir() -> Option<PathBuf> {
    // Same rule as the build scripts: HOME, or the account's home directory when HOME is unset.
    let home = || {
        env_path("HOME").or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
    };
    env_path(CACHE_ENV).or_else(|| home().map(|h| h.join(".cache").join("kube-lvs")))
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools")
}

fn apiserver_from_cache() -> Result<PathBuf, Error> {
    cached_or_built(
        &format!("kube-apiserver-{KUBE_VERSION}"),
        "build-kube-apiserver.sh",
        ("KUBE_VERSION", KUBE_VERSION),
    )
}

/// The helm binary: `KUBE_LVS_HELM_BIN`, else the cached build of [`HELM_VERSION`] (built on first
/// use by `e2e/tools/build-helm.sh`, which takes minutes).
pub fn helm_bin() -> Result<PathBuf, Error> {
    if let Some(p) = env_path(HELM_BIN_ENV) {
        return Ok(p);
    }
    cached_or_built(
        &format!("helm-{HELM_VERSION}"),
        "build-helm.sh",
        ("HELM_VERSION", HELM_VERSION),
    )
}

/// `<cache>/bin/<name>` if present, else whatever the build script prints after building it.
fn cached_or_built(name: &str, script: &str, version_env: (&str, &str)) -> Result<PathBuf, Error> {
    if let Some(p) = cache_dir().map(|c| c.join("bin").join(name))
        && p.is_file()
    {
        return Ok(p);
    }
    // First use on this machine: build it (minutes); the script serialises concurrent builds.
    let script = tools_dir().join(script);
    eprintln!(
        "control plane: {name} not cached, running {}",
        script.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .env(version_env.0, version_env.1)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(io_err(format!("running {}", script.display())))?;
    if !out.status.success() {
        return Err(Error::BuildFailed {
            what: name.to_string(),
            status: out.status,
        });
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            name: name.to_string(),
            hint: format!("{} printed {}", script.display(), path.display()),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// PKI (openssl CLI; P-256 keys are fast to generate and accepted by Go and rustls alike)

struct Pki {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

const CERT_DAYS: &str = "30";

impl Pki {
    fn generate(dir: &Path, san_ips: &[IpAddr]) -> Result<Pki, Error> {
        let ca_cert = dir.join("ca.crt");
        let ca_key = dir.join("ca.key");
        openssl(
            "CA",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                CERT_DAYS,
                "-subj",
                "/CN=kube-lvs-test-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            ],
            &[("-keyout", &ca_key), ("-out", &ca_cert)],
        )?;

        let mut san = String::from(
            "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
        );
        for ip in san_ips {
            let _ = write!(san, ",IP:{ip}");
        }
        let (serving_cert, serving_key) = sign(
            dir,
            "serving",
            "/CN=kube-apiserver",
            &format!(
                "subjectAltName={san}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"
            ),
        )?;
        let (admin_cert, admin_key) =
            Self::client_cert(dir, "admin", "kube-lvs-admin", &["system:masters"])?;

        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        openssl(
            "service-account key",
            &[
                "genpkey",
                "-algorithm",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ],
            &[("-out", &sa_key)],
        )?;
        openssl(
            "service-account public key",
            &["pkey", "-pubout"],
            &[("-in", &sa_key), ("-out", &sa_pub)],
        )?;
        Ok(Pki {
            ca_cert,
            serving_cert,
            serving_key,
            admin_cert,
            admin_key,
            sa_key,
            sa_pub,
        })
    }

    /// Client certificate: the API server takes the user from CN and groups from O.
    fn client_cert(
        dir: &Path,
        stem: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<(PathBuf, PathBuf), Error> {
        let mut subj = String::new();
        for g in groups {
            let _ = write!(subj, "/O={}", escape_subject(g));
        }
        let _ = write!(subj, "/CN={}", escape_subject(user));
        sign(
            dir,
            stem,
            &subj,
            "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
        )
    }
}

/// `openssl -subj` treats `/` and `\` specially; escape them so any name survives.
fn escape_subject(s: &str) -> String {
    s.replace('\\', "\\\\").replace('/', "\\/")
}

/// Generates a key and a certificate for `subj` signed by the CA in `dir`.
fn sign(dir: &Path, stem: &str, subj: &str, extensions: &str) -> Result<(PathBuf, PathBuf), Error> {
    let key = dir.join(format!("{stem}.key"));
    let csr = dir.join(format!("{stem}.csr"));
    let cert = dir.join(format!("{stem}.crt"));
    let ext = dir.join(format!("{stem}.ext"));
    std::fs::write(&ext, extensions).map_err(io_err(format!("writing {}", ext.display())))?;
    openssl(
        &format!("{stem} request"),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subj,
        ],
        &[("-keyout", &key), ("-out", &csr)],
    )?;
    openssl(
        &format!("{stem} certificate"),
        &["x509", "-req", "-days", CERT_DAYS, "-CAcreateserial"],
        &[
            ("-in", &csr),
            ("-CA", &dir.join("ca.crt")),
            ("-CAkey", &dir.join("ca.key")),
            ("-extfile", &ext),
            ("-out", &cert),
        ],
    )?;
    Ok((cert, key))
}

fn openssl(step: &str, args: &[&str], files: &[(&str, &Path)]) -> Result<(), Error> {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    for (flag, path) in files {
        cmd.arg(flag).arg(path);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running openssl for {step}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Openssl {
            step: step.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// kubeconfig

enum Credentials<'a> {
    Cert {
        user: &'a str,
        cert: &'a Path,
        key: &'a Path,
    },
    Token {
        user: &'a str,
        token: &'a str,
    },
}

fn b64_file(path: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// JSON strings are valid YAML scalars, which sidesteps YAML quoting rules for arbitrary names.
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Renders a kubeconfig with everything embedded, so it stays valid wherever it is copied.
fn render_kubeconfig(server: &str, ca_b64: &str, user: &str, auth: &str) -> String {
    let q = json_string;
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-lvs-test\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_b64}\nusers:\n- name: {user}\n  user:\n{auth}contexts:\n- name: kube-lvs-test\n  context:\n    cluster: kube-lvs-test\n    user: {user}\n    namespace: default\ncurrent-context: kube-lvs-test\n",
        server = q(server),
        user = q(user),
    )
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    creds: &Credentials<'_>,
) -> Result<(), Error> {
    let ca_b64 = b64_file(ca)?;
    let (user, auth) = match creds {
        Credentials::Cert { user, cert, key } => (
            *user,
            format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64_file(cert)?,
                b64_file(key)?
            ),
        ),
        Credentials::Token { user, token } => (
            *user,
            format!(
                "    token: {}\n",
                serde_json::Value::String(token.to_string())
            ),
        ),
    };
    std::fs::write(path, render_kubeconfig(server, &ca_b64, user, &auth))
        .map_err(io_err(format!("writing {}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A server process with its log file. Spawned from the spawner thread so that
/// `PR_SET_PDEATHSIG` (which fires when the *thread* that forked exits) only fires when this whole
/// process dies.
struct Managed {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static mpsc::Sender<SpawnJob> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        // The thread lives as long as the process: the static sender is never dropped.
        let spawned = std::thread::Builder::new()
            .name("kube-lvs-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the process spawner thread");
        }
        tx
    })
}

impl Managed {
    fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Managed, Error> {
        let file =
            std::fs::File::create(log).map_err(io_err(format!("creating {}", log.display())))?;
        let file2 = file
            .try_clone()
            .map_err(io_err("duplicating a log handle"))?;
        let parent = nix::unistd::getpid();
        cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
        // calls (sigprocmask, prctl, getppid, setpgid) without allocating.
        unsafe {
            cmd.pre_exec(move || {
                // A caller waiting in sigwait (the testbed binary) blocks SIGTERM/SIGINT; the
                // servers must not inherit that mask or they could not be stopped gracefully.
                SigSet::empty().thread_set_mask()?;
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The parent may have died before prctl took effect.
                if nix::unistd::getppid() != parent {
                    return Err(io::Error::from(Errno::ESRCH));
                }
                // Own process group: a terminal's Ctrl-C reaches only the harness, which then
                // shuts the servers down in order.
                nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        spawner().send((cmd, tx)).map_err(|_| Error::SpawnerGone)?;
        let child = rx
            .recv()
            .map_err(|_| Error::SpawnerGone)?
            .map_err(io_err(format!("starting {name}")))?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "started");
        Ok(Managed {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    fn check_alive(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(Error::ProcessExited {
                name: self.name,
                status,
                log: self.log.clone(),
                tail: log_tail(&self.log),
            }),
            Ok(None) => Ok(()),
            Err(e) => Err(Error::Io {
                context: format!("waiting for {}", self.name),
                source: e,
            }),
        }
    }

    /// SIGTERM and up to `grace` to exit, then SIGKILL; always reaps the child.
    fn stop(mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if grace.is_zero() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(name = self.name, "did not stop on SIGTERM, killing");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(path: &Path) -> String {
    let mut buf = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        buf = String::from_utf8_lossy(&bytes).into_owned();
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_scripts_pin_the_versions_the_harness_expects() -> Result<(), Error> {
        let read = |name: &str| {
            let p = tools_dir().join(name);
            std::fs::read_to_string(&p).map_err(io_err(format!("reading {}", p.display())))
        };
        let api = read("build-kube-apiserver.sh")?;
        assert!(
            api.contains(&format!("version=\"${{KUBE_VERSION:-{KUBE_VERSION}}}\"")),
            "build-kube-apiserver.sh does not default to {KUBE_VERSION}"
        );
        let helm = read("build-helm.sh")?;
        assert!(
            helm.contains(&format!("version=\"${{HELM_VERSION:-{HELM_VERSION}}}\"")),
            "build-helm.sh does not default to {HELM_VERSION}"
        );
        Ok(())
    }

    #[test]
    fn sanitize_keeps_file_names_flat() {
        assert_eq!(sanitize("198.51.100.2:6443"), "198.51.100.2_6443");
        assert_eq!(
            sanitize("system:serviceaccount:a/b"),
            "system_serviceaccount_a_b"
        );
    }

    #[test]
    fn subject_escaping_protects_separators() {
        assert_eq!(escape_subject("a/b"), "a\\/b");
        assert_eq!(escape_subject("x\\y"), "x\\\\y");
        assert_eq!(escape_subject("system:masters"), "system:masters");
    }

    #[test]
    fn kubeconfig_quotes_names_and_embeds_data() {
        let text = render_kubeconfig(
            "https://198.51.100.2:6443",
            "Q0E=",
            "system:serviceaccount:ns:sa",
            "    token: \"abc\"\n",
        );
        assert!(text.contains("server: \"https://198.51.100.2:6443\""));
        assert!(text.contains("certificate-authority-data: Q0E="));
        assert!(
            text.contains("- name: \"system:serviceaccount:ns:sa\"\n  user:\n    token: \"abc\"\n")
        );
        assert!(text.contains("current-context: kube-lvs-test"));
    }

    #[test]
    fn free_ports_are_distinct() -> Result<(), Error> {
        let ports = free_ports::<3>()?;
        assert!(ports.iter().all(|p| *p != 0));
        assert_ne!(ports[0], ports[1]);
        assert_ne!(ports[1], ports[2]);
        assert_ne!(ports[0], ports[2]);
        Ok(())
    }

    #[test]
    fn poll_until_times_out_and_succeeds() {
        let mut n = 0;
        let got = poll_until("counter", Duration::from_secs(5), || {
            n += 1;
            Ok((n >= 2).then_some(n))
        });
        assert!(matches!(got, Ok(2)));
        let never: Result<(), Error> = poll_until("never", Duration::from_millis(1), || Ok(None));
        assert!(matches!(never, Err(Error::Timeout { .. })));
    }

    #[test]
    fn pki_covers_vm_address() -> Result<(), Error> {
        let dir = unique_dir(&std::env::temp_dir(), "kube-lvs-pki-test")?;
        let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST), VM_API_SERVER.ip()];
        let result = Pki::generate(&dir, &ips).and_then(|pki| {
            let out = Command::new("openssl")
                .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
                .arg(&pki.serving_cert)
                .output()
                .map_err(io_err("openssl x509"))?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let verify = Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(&pki.ca_cert)
                .arg(&pki.admin_cert)
                .output()
                .map_err(io_err("openssl verify"))?;
            Ok((text, verify.status.success()))
        });
        let _ = std::fs::remove_dir_all(&dir);
        let (sans, verified) = result?;
        assert!(sans.contains("IP Address:198.51.100.2"), "{sans}");
        assert!(sans.contains("IP Address:127.0.0.1"), "{sans}");
        assert!(verified, "admin certificate does not chain to the CA");
        Ok(())
    }
}
