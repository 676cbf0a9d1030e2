//! The qemu VM reaches the host's API server through the forwarded address with the kubeconfig
//! from `ControlPlane::vm_kubeconfig` (serving certificate SAN 198.51.100.2, guestfwd to the port).
//! Boots one VM (serialised machine-wide by vm-run.sh).

use std::time::Duration;

use anyhow::{Result, ensure};
use kube_lvs_e2e::controlplane::ControlPlane;
use kube_lvs_e2e::vm::VmRun;

#[test]
fn e2e_controlplane_vm_reaches_apiserver() -> Result<()> {
    let cp = ControlPlane::start()?;
    let kubeconfig = cp.vm_kubeconfig()?;
    let ns = format!("cp-vm-{}", std::process::id());
    cp.kubectl_ok(&["create", "namespace", &ns])?;

    let kc = kubeconfig.display();
    let script = format!(
        r#"set -eu
# vm-init.sh configures the NIC for the forwarded API server.
ip -4 -o addr show | grep -q ' 198\.51\.100\.' || {{ echo "nic: not configured by vm-init"; exit 3; }}
echo "readyz: $(kubectl --kubeconfig {kc} get --raw /readyz --request-timeout=20s)"
kubectl --kubeconfig {kc} create configmap from-vm -n {ns} --from-literal=origin=vm
"#
    );
    let out = VmRun::new(["bash", "-c", script.as_str()])
        .apiserver_port(cp.port())
        .timeout(Duration::from_secs(300))
        .lock_wait(Duration::from_secs(1200))
        .run()?;
    eprintln!("VM run took {:?}:\n{}", out.elapsed, out.stdout);
    ensure!(
        out.success(),
        "VM command failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.code(),
        out.stdout,
        out.stderr
    );
    ensure!(out.stdout.contains("readyz: ok"), "{}", out.stdout);
    let origin = cp.kubectl_ok(&[
        "get",
        "configmap",
        "from-vm",
        "-n",
        &ns,
        "-o",
        "jsonpath={.data.origin}",
    ])?;
    ensure!(
        origin == "vm",
        "configmap written from the VM reads {origin:?}"
    );
    Ok(())
}
