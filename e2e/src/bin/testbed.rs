//! Test-bed entry point for scripts (the demo):
//!
//! ```text
//! testbed up [--dir DIR] [--env-file PATH] [--san IP]...
//! ```
//!
//! Starts etcd + kube-apiserver, prints `KEY=value` lines (KUBECONFIG, KUBECONFIG_VM, APISERVER_URL,
//! APISERVER_PORT, TESTBED_DIR, SERVER_PIDS) on stdout — and, with `--env-file`, writes them to that file once the
//! API server is ready — then stays in the foreground until SIGINT or SIGTERM and tears down.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use kube_lvs_e2e::controlplane::{ControlPlane, ControlPlaneOptions};
use nix::sys::signal::{SigSet, Signal};

const USAGE: &str = "usage: testbed up [--dir DIR] [--env-file PATH] [--san IP]...";

struct UpArgs {
    opts: ControlPlaneOptions,
    env_file: Option<PathBuf>,
}

fn parse_up(mut args: impl Iterator<Item = String>) -> Result<UpArgs> {
    let mut up = UpArgs {
        opts: ControlPlaneOptions::default(),
        env_file: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--dir" => up.opts.dir = Some(PathBuf::from(value()?)),
            "--env-file" => up.env_file = Some(PathBuf::from(value()?)),
            "--san" => {
                let v = value()?;
                let ip: IpAddr = v
                    .parse()
                    .with_context(|| format!("--san {v}: not an IP address"))?;
                up.opts.extra_san_ips.push(ip);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(up)
}

fn main() -> Result<()> {
    // Block the stop signals before any thread exists so every thread inherits the mask and the
    // main thread can collect them synchronously with sigwait.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    stop.thread_block().context("blocking SIGINT/SIGTERM")?;

    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("up") => up(parse_up(args)?, &stop),
        _ => bail!("{USAGE}"),
    }
}

fn up(args: UpArgs, stop: &SigSet) -> Result<()> {
    let cp = ControlPlane::start_with(args.opts).context("starting the control plane")?;
    let vm = cp.vm_kubeconfig()?;
    let pids: Vec<String> = cp.pids().iter().map(u32::to_string).collect();
    let lines = format!(
        "KUBECONFIG={}\nKUBECONFIG_VM={}\nAPISERVER_URL={}\nAPISERVER_PORT={}\nTESTBED_DIR={}\nSERVER_PIDS=\"{}\"\n",
        cp.kubeconfig().display(),
        vm.display(),
        cp.server_url(),
        cp.port(),
        cp.dir().display(),
        pids.join(" ")
    );
    if let Some(path) = &args.env_file {
        // Written via rename so a script polling for the file never reads half of it.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &lines).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(lines.as_bytes())?;
    out.flush()?;
    drop(out);
    eprintln!(
        "testbed: control plane up in {:?}; Ctrl-C or SIGTERM to stop",
        cp.startup_time()
    );

    let sig = stop.wait().context("waiting for a stop signal")?;
    eprintln!("testbed: {sig}, tearing down");
    drop(cp);
    if let Some(path) = &args.env_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
