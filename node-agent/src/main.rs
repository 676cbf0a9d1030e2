//! `node-agent`: `dump` shows what the data plane sees and would do; `apply` applies a desired-state
//! file once. (The kube-driven `run` loop builds on the same library calls.)

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kube_lvs_node_agent::apply::{DEFAULT_STATE_PATH, Dataplane, StateStore};
use kube_lvs_node_agent::model::file::DesiredFile;
use kube_lvs_node_agent::model::{Desired, Observed, Owned};
use kube_lvs_node_agent::plan::plan;
use kube_lvs_node_agent::run::{RunConfig, run};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "node-agent", about = "kube-lvs node agent")]
struct Cli {
    /// Ownership state file (kept under /run: same lifetime as the kernel state it records).
    #[arg(long, global = true, env = "KUBE_LVS_STATE", default_value = DEFAULT_STATE_PATH)]
    state: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the kernel state (owned and foreign) and the plan the agent would execute.
    Dump {
        /// Desired-state YAML to plan against (default: nothing desired).
        #[arg(long)]
        desired: Option<PathBuf>,
    },
    /// Apply a desired-state YAML file once and exit (non-zero if any op failed).
    Apply {
        #[arg(long)]
        desired: PathBuf,
    },
    /// Run the agent: watch the API, program the kernel, speak VRRP, check real servers, report.
    Run {
        /// This node's name (the Node object); from the downward API in a DaemonSet.
        #[arg(long, env = "NODE_NAME")]
        node: String,
        /// Interface for VIPs and VRRP when a VirtualService names none and no address of this
        /// node shares the VIP's subnet.
        #[arg(long, env = "KUBE_LVS_INTERFACE")]
        interface: Option<String>,
        /// Seconds between full passes without events.
        #[arg(long, default_value_t = 30)]
        resync_seconds: u64,
    },
}

fn read_desired(path: &PathBuf) -> anyhow::Result<Desired> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let file: DesiredFile =
        serde_yaml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    file.into_desired()
        .with_context(|| format!("validate {}", path.display()))
}

#[derive(Serialize)]
struct DumpOut {
    state_file: String,
    ipvs_available: bool,
    owned: Owned,
    ours: DesiredFile,
    foreign: DesiredFile,
    plan: Vec<String>,
    conflicts: Vec<String>,
}

/// Split the observation into what the agent owns and what belongs to others.
fn split(observed: &Observed, owned: &Owned) -> (DesiredFile, DesiredFile) {
    let mut ours = observed.clone();
    let mut foreign = observed.clone();
    ours.services.retain(|k, _| owned.services.contains(k));
    foreign.services.retain(|k, _| !owned.services.contains(k));
    ours.addresses
        .retain(|a| owned.addresses.iter().any(|o| o.key() == a.key()));
    foreign
        .addresses
        .retain(|a| !owned.addresses.iter().any(|o| o.key() == a.key()));
    ours.sysctls.retain(|k, _| owned.sysctls.contains_key(k));
    foreign.sysctls.clear();
    foreign.marks = Default::default();
    (
        DesiredFile::from_observed(&ours),
        DesiredFile::from_observed(&foreign),
    )
}

// Two workers: the data plane's netlink calls block one while VRRP timers and checks run on the other.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let connect = || Dataplane::connect(StateStore::new(&cli.state));
    match cli.cmd {
        Cmd::Run {
            node,
            interface,
            resync_seconds,
        } => {
            let client = kube::Client::try_default()
                .await
                .context("building the Kubernetes client")?;
            let cfg = RunConfig {
                node,
                state_path: cli.state.clone(),
                default_interface: interface,
                resync: std::time::Duration::from_secs(resync_seconds),
            };
            run(client, cfg).await?;
        }
        Cmd::Dump { desired } => {
            let dp = connect()?;
            let desired = match desired {
                Some(p) => read_desired(&p)?,
                None => Desired::default(),
            };
            let owned = dp.store().load()?;
            let observed = dp.observe(&desired, &owned).await?;
            let p = plan(&desired, &observed, &owned);
            let (ours, foreign) = split(&observed, &owned);
            let out = DumpOut {
                state_file: cli.state.display().to_string(),
                ipvs_available: dp.has_ipvs(),
                owned,
                ours,
                foreign,
                plan: p.ops.iter().map(ToString::to_string).collect(),
                conflicts: p.conflicts.iter().map(ToString::to_string).collect(),
            };
            print!("{}", serde_yaml::to_string(&out)?);
        }
        Cmd::Apply { desired } => {
            let dp = connect()?;
            let desired = read_desired(&desired)?;
            let pass = dp.reconcile(&desired).await?;
            // One machine-readable summary line (tests and benchmarks parse it).
            println!(
                "ops={} kernel_ops={} failed={} conflicts={}",
                pass.report.applied.len(),
                pass.report.kernel_ops(),
                pass.report.failed.len(),
                pass.plan.conflicts.len()
            );
            for c in &pass.plan.conflicts {
                println!("conflict: {c}");
            }
            for (op, e) in &pass.report.failed {
                println!("failed: {op}: {e}");
            }
            if !pass.report.failed.is_empty() {
                anyhow::bail!("{} operation(s) failed", pass.report.failed.len());
            }
        }
    }
    Ok(())
}
