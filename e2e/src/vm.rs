//! Running commands inside the IPVS-capable test VM (Debian kernel under qemu).
//!
//! Everything goes through `e2e/tools/vm-run.sh`, which serialises VMs machine-wide with
//! `flock`, so callers may run concurrently: the second one waits for the first VM to end.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Set to `1` by the VM's init step; see [`in_vm`].
pub const IN_VM_ENV: &str = "KUBE_LVS_IN_VM";

/// Whether this process runs inside the test VM (so IPVS is available).
pub fn in_vm() -> bool {
    std::env::var(IN_VM_ENV).is_ok_and(|v| v == "1")
}

/// Whether the running kernel has IPVS loaded (true inside the VM, false on the host).
pub fn ipvs_available() -> bool {
    Path::new("/proc/net/ip_vs").exists()
}

/// `e2e/tools/vm-run.sh` of this checkout.
pub fn vm_run_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/vm-run.sh")
}

/// `e2e/tools/vm-suite.sh` of this checkout.
pub fn vm_suite_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/vm-suite.sh")
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("no command given")]
    NoCommand,
    #[error("starting {script}: {source}")]
    Spawn {
        script: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for the VM: {0}")]
    Wait(#[source] std::io::Error),
    #[error("VM command did not finish within {0:?} (lock wait included)")]
    Timeout(Duration),
}

/// Result of one VM run.
#[derive(Debug, Clone)]
pub struct VmOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Wall time including waiting for the VM lock and the boot.
    pub elapsed: Duration,
}

impl VmOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Exit code of the command inside the VM (124 when vm-run.sh's timeout fired).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Builder for one command run in a fresh VM.
#[derive(Debug, Clone)]
pub struct VmRun {
    args: Vec<String>,
    timeout: Duration,
    lock_wait: Duration,
    apiserver_port: Option<u16>,
    envs: Vec<(String, String)>,
    cwd: Option<PathBuf>,
}

impl VmRun {
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        VmRun {
            args: args.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(600),
            lock_wait: Duration::from_secs(1800),
            apiserver_port: None,
            envs: Vec::new(),
            cwd: None,
        }
    }

    /// Time the VM may run once it has the lock (boot included).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Longest wait for another VM to finish before giving up.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Forward `https://198.51.100.2:6443` inside the VM to `127.0.0.1:<port>` on the host.
    pub fn apiserver_port(mut self, port: u16) -> Self {
        self.apiserver_port = Some(port);
        self
    }

    /// Sets a variable for the command inside the VM.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Working directory inside the VM (the host path; the filesystem is shared).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(vm_run_script());
        cmd.args(&self.args)
            .env(
                "KUBE_LVS_VM_TIMEOUT",
                self.timeout.as_secs().max(1).to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(port) = self.apiserver_port {
            cmd.env("KUBE_LVS_VM_APISERVER_PORT", port.to_string());
        }
        let mut pass = Vec::new();
        for (k, v) in &self.envs {
            cmd.env(k, v);
            pass.push(k.as_str());
        }
        if !pass.is_empty() {
            cmd.env("KUBE_LVS_VM_PASS_ENV", pass.join(" "));
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Boots the VM, runs the command, and returns its status and output.
    pub fn run(&self) -> Result<VmOutput, VmError> {
        if self.args.is_empty() {
            return Err(VmError::NoCommand);
        }
        let start = Instant::now();
        let mut child = self.command().spawn().map_err(|source| VmError::Spawn {
            script: vm_run_script().display().to_string(),
            source,
        })?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        // vm-run.sh enforces `timeout` itself once it holds the lock; this outer deadline only
        // catches a stuck lock holder. The grace covers vm-run's own kill-after.
        let deadline = self.lock_wait + self.timeout + Duration::from_secs(30);
        let status = match wait_deadline(&mut child, deadline) {
            Ok(Some(status)) => status,
            Ok(None) => {
                terminate(&mut child);
                return Err(VmError::Timeout(deadline));
            }
            Err(e) => {
                terminate(&mut child);
                return Err(VmError::Wait(e));
            }
        };
        Ok(VmOutput {
            status,
            stdout: join_text(stdout),
            stderr: join_text(stderr),
            elapsed: start.elapsed(),
        })
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut p| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            buf
        })
    })
}

fn join_text(handle: Option<JoinHandle<Vec<u8>>>) -> String {
    handle
        .and_then(|h| h.join().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn wait_deadline(child: &mut Child, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM first: vm-run.sh forwards it to qemu's process group and releases the lock.
fn terminate(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if !matches!(wait_deadline(child, Duration::from_secs(20)), Ok(Some(_))) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_exist_in_this_checkout() {
        assert!(vm_run_script().is_file(), "{:?}", vm_run_script());
        assert!(vm_suite_script().is_file(), "{:?}", vm_suite_script());
    }

    #[test]
    fn empty_command_is_rejected_without_booting() {
        let err = VmRun::new(Vec::<String>::new()).run();
        assert!(matches!(err, Err(VmError::NoCommand)));
    }

    #[test]
    fn command_forwards_env_names_and_timeout() {
        let cmd = VmRun::new(["true"])
            .timeout(Duration::from_secs(42))
            .apiserver_port(6443)
            .env("FOO", "bar")
            .env("BAZ", "1")
            .command();
        let envs: Vec<(String, String)> = cmd
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        let get = |k: &str| {
            envs.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("KUBE_LVS_VM_TIMEOUT").as_deref(), Some("42"));
        assert_eq!(get("KUBE_LVS_VM_APISERVER_PORT").as_deref(), Some("6443"));
        assert_eq!(get("KUBE_LVS_VM_PASS_ENV").as_deref(), Some("FOO BAZ"));
        assert_eq!(get("FOO").as_deref(), Some("bar"));
    }

    #[test]
    fn in_vm_matches_the_environment() {
        // The host test run never has the marker; inside the VM the init step sets it.
        assert_eq!(in_vm(), std::env::var(IN_VM_ENV).as_deref() == Ok("1"));
    }
}
