//! `kube-lvs-operator`: waits for leadership, then runs the controller until leadership is lost.

use anyhow::Context as _;
use kube::Client;
use kube_lvs_operator::{controller, lease::LeaderLease};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: kube-lvs-operator [--lease-namespace NS] [--no-leader-election]

Runs the kube-lvs operator with the in-cluster or KUBECONFIG credentials.
Environment: POD_NAME (lease holder identity), POD_NAMESPACE (lease namespace), RUST_LOG.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let mut lease_ns = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "kube-system".into());
    let mut elect = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--lease-namespace" => {
                lease_ns = args.next().context("--lease-namespace needs a value")?
            }
            "--no-leader-election" => elect = false,
            other => anyhow::bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let client = Client::try_default()
        .await
        .context("building the Kubernetes client")?;
    if !elect {
        controller::run(client).await?;
        return Ok(());
    }
    let holder = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("kube-lvs-operator-{}", std::process::id()));
    let lease = LeaderLease::new(client.clone(), &lease_ns, "kube-lvs-operator", &holder);
    lease.acquire().await?;
    tokio::select! {
        r = controller::run(client) => r?,
        lost = lease.keep() => return Err(lost).context("stopping: leadership"),
    }
    Ok(())
}
