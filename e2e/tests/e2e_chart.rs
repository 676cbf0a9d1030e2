//! The Helm chart against the real API server: it lints, installs (CRDs, RBAC, the operator
//! Deployment and the node-agent DaemonSet are accepted by the API server), its values schema
//! refuses bad values before anything is sent, and it uninstalls.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use kube_lvs_e2e::controlplane::ControlPlane;
use serde_json::Value;

fn chart() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/kube-lvs")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn e2e_chart_lints_installs_validates_and_uninstalls() -> Result<()> {
    let cp = ControlPlane::start()?;
    let chart = chart();

    let lint = cp.helm_ok(&["lint", &chart])?;
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    // The values schema refuses a bad value with the field named, before any object is sent.
    let bad = cp.helm(&[
        "install",
        "bad",
        &chart,
        "-n",
        "bad",
        "--create-namespace",
        "--set",
        "operator.replicas=0",
    ])?;
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("replicas"), "{err}");
    // (Helm itself installs the chart's crds/ before it renders, so only workloads are checked.)
    let workloads = cp.kubectl_ok(&["get", "daemonsets,deployments", "-A", "-o", "name"])?;
    assert!(
        workloads.trim().is_empty(),
        "a refused install creates no workload: {workloads}"
    );

    cp.helm_ok(&[
        "install",
        "kube-lvs",
        &chart,
        "-n",
        "kube-lvs-system",
        "--create-namespace",
        "--set",
        "image.tag=test",
    ])?;
    cp.wait_for(
        &[
            "get",
            "crd",
            "virtualservices.lvs.kube-lvs.io",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ],
        Duration::from_secs(60),
        |o| String::from_utf8_lossy(&o.stdout) == "True",
    )?;

    let ds: Value = serde_json::from_str(&cp.kubectl_ok(&[
        "get",
        "daemonset",
        "kube-lvs-node-agent",
        "-n",
        "kube-lvs-system",
        "-o",
        "json",
    ])?)?;
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/kube-lvs/kube-lvs:test");
    assert_eq!(
        c["command"],
        serde_json::json!(["/usr/local/bin/node-agent", "run"])
    );
    let env = c["env"].as_array().expect("env");
    assert!(
        env.iter().any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "{env:?}"
    );

    let dep: Value = serde_json::from_str(&cp.kubectl_ok(&[
        "get",
        "deployment",
        "kube-lvs-operator",
        "-n",
        "kube-lvs-system",
        "-o",
        "json",
    ])?)?;
    assert_eq!(dep["spec"]["replicas"], 2);

    // The agent's service account may write status but not specs.
    let sa = "system:serviceaccount:kube-lvs-system:kube-lvs-node-agent";
    let can = |verb: &str, res: &str| -> Result<bool> {
        let (res, sub) = res.split_once('/').unwrap_or((res, ""));
        let mut args = vec!["auth", "can-i", verb, res, "--as", sa, "-A"];
        let sub = format!("--subresource={sub}");
        if sub != "--subresource=" {
            args.push(&sub);
        }
        let out = cp.kubectl(&args)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
    };
    assert!(can("patch", "virtualservices.lvs.kube-lvs.io/status")?);
    assert!(can("watch", "realservers.lvs.kube-lvs.io")?);
    assert!(!can("patch", "virtualservices.lvs.kube-lvs.io")?);
    assert!(!can("delete", "nodes")?);

    cp.helm_ok(&["uninstall", "kube-lvs", "-n", "kube-lvs-system"])?;
    let gone = cp.kubectl(&[
        "get",
        "daemonset",
        "kube-lvs-node-agent",
        "-n",
        "kube-lvs-system",
    ])?;
    assert!(!gone.status.success(), "the DaemonSet is removed");
    // Helm keeps CRDs on uninstall (its documented policy), so users' objects survive.
    assert!(
        cp.kubectl(&["get", "crd", "virtualservices.lvs.kube-lvs.io"])?
            .status
            .success()
    );
    Ok(())
}
