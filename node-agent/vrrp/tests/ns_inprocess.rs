//! The driver embedded in-process (as the node-agent will) with VIPs managed through
//! `kube-lvs-net`, paired with keepalived: runtime priority changes move the VIP both ways.

mod common;

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::*;
use kube_lvs_net::{AddressSpec, NetHandle};
use kube_lvs_vrrp::driver::{Speaker, SpeakerConfig, Vip, VipControl, VipError, VipLink};

/// The adapter the node-agent uses: VIPs through kube-lvs-net's typed errors.
struct NetVips(NetHandle);

fn spec(link: &VipLink, vip: Vip) -> AddressSpec {
    AddressSpec {
        ifname: link.name.clone(),
        addr: vip.addr,
        prefix_len: vip.prefix_len,
        label: None,
    }
}

impl VipControl for NetVips {
    async fn add(&self, link: &VipLink, vip: Vip) -> Result<(), VipError> {
        match self.0.add_address(&spec(link, vip)).await {
            Err(e) if !e.is_already_exists() => Err(VipError::Backend {
                vip: vip.addr,
                source: Box::new(e),
            }),
            _ => Ok(()),
        }
    }
    async fn remove(&self, link: &VipLink, vip: Vip) -> Result<(), VipError> {
        match self.0.del_address(&spec(link, vip)).await {
            Err(e) if !e.is_not_found() => Err(VipError::Backend {
                vip: vip.addr,
                source: Box::new(e),
            }),
            _ => Ok(()),
        }
    }
}

enum Cmd {
    SetPriority(u8),
    Stop,
}

/// Runs a speaker on a thread that entered `ns`; returns the command sender and the thread,
/// which yields the final metrics text.
fn spawn_in_process(
    ns: &str,
    json: String,
) -> (
    tokio::sync::mpsc::UnboundedSender<Cmd>,
    std::thread::JoinHandle<Result<String>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let path = format!("/run/netns/{ns}");
    let thread = std::thread::spawn(move || -> Result<String> {
        let f = File::open(&path).with_context(|| path.clone())?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let cfg: SpeakerConfig = serde_json::from_str(&json)?;
            let vips = Arc::new(NetVips(NetHandle::connect()?));
            let speaker = Speaker::start(&cfg, vips)?;
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Cmd::SetPriority(p) => speaker.set_priority("vi_a", p),
                    Cmd::Stop => break,
                }
            }
            let metrics = speaker.render_metrics();
            speaker.shutdown().await;
            Ok(metrics)
        })
    });
    (tx, thread)
}

/// Stops the in-process speaker even when an assertion fails first.
struct StopOnDrop(tokio::sync::mpsc::UnboundedSender<Cmd>);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Cmd::Stop);
    }
}

#[test]
fn embedded_speaker_follows_runtime_priority_against_keepalived() -> Result<()> {
    let bed = Bed::new("i")?;
    let vip = "192.0.2.100";
    let poll = Duration::from_millis(20);
    let _ka = start_keepalived(&bed, &bed.b(), "b", &Vr::v4(3, 100, 100))?;
    ensure!(wait_for(Duration::from_secs(5), poll, || bed.has_addr(&bed.b(), vip)));

    let json = Vr::v4(3, 200, 100).speaker_conf("vi_a");
    let (cmd, thread) = spawn_in_process(&bed.a(), json);
    let guard = StopOnDrop(cmd.clone());
    ensure!(
        wait_for(Duration::from_secs(3), poll, || bed.has_addr(&bed.a(), vip)
            && !bed.has_addr(&bed.b(), vip)),
        "embedded speaker did not preempt keepalived"
    );
    ensure!(bed.arp_owners(VIP, Duration::from_millis(300))? == [A_MAC].into());

    // drop below keepalived: keepalived preempts, we step down and remove the VIP
    let _ = cmd.send(Cmd::SetPriority(50));
    ensure!(
        wait_for(Duration::from_secs(3), poll, || bed.has_addr(&bed.b(), vip)
            && !bed.has_addr(&bed.a(), vip)),
        "keepalived did not take over after our priority dropped"
    );
    ensure!(bed.arp_owners(VIP, Duration::from_millis(300))? == [B_MAC].into());

    // back above: we preempt again
    let _ = cmd.send(Cmd::SetPriority(200));
    ensure!(
        wait_for(Duration::from_secs(3), poll, || bed.has_addr(&bed.a(), vip)
            && !bed.has_addr(&bed.b(), vip)),
        "we did not preempt after our priority rose"
    );
    ensure!(bed.arp_owners(VIP, Duration::from_millis(300))? == [A_MAC].into());

    drop(guard);
    let metrics = thread
        .join()
        .map_err(|_| anyhow::anyhow!("speaker thread panicked"))??;
    ensure!(
        metrics.contains("vrrp_state_transitions_total{instance=\"vi_a\",to=\"master\"} 2\n"),
        "{metrics}"
    );
    ensure!(
        !bed.has_addr(&bed.a(), vip),
        "VIP left behind after shutdown"
    );
    Ok(())
}
