//! Standalone VRRP speaker: runs the instances of a JSON config in the current network
//! namespace until SIGTERM/SIGINT, then stops gracefully (priority 0 from masters).
//!
//! Usage: `vrrp-speaker --config <file.json> [--metrics-out <file>]`

use std::sync::Arc;

use anyhow::{Context, bail};
use kube_lvs_vrrp::driver::netlink::NetlinkVips;
use kube_lvs_vrrp::driver::{Speaker, SpeakerConfig};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut config = None;
    let mut metrics_out = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next(),
            "--metrics-out" => metrics_out = args.next(),
            other => bail!(
                "unknown argument {other:?}; usage: vrrp-speaker --config FILE [--metrics-out FILE]"
            ),
        }
    }
    let Some(config) = config else {
        bail!("usage: vrrp-speaker --config FILE [--metrics-out FILE]");
    };
    let text = std::fs::read_to_string(&config).with_context(|| format!("reading {config}"))?;
    let cfg: SpeakerConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {config}"))?;
    let vips = Arc::new(NetlinkVips::new().context("rtnetlink")?);
    let speaker = Speaker::start(&cfg, vips).context("starting speaker")?;

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => {
                if let Some(path) = &metrics_out {
                    std::fs::write(path, speaker.render_metrics())?;
                }
            }
        }
    }
    tracing::info!("stopping: resigning mastership");
    let metrics = speaker.render_metrics();
    speaker.shutdown().await;
    if let Some(path) = &metrics_out {
        std::fs::write(path, metrics).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
