//! The harness's kubeconfigs work for Rust clients (kube-rs with rustls), which is how the operator
//! and node agents connect: P-256 client certificates, embedded CA, IP SANs, and service-account
//! tokens.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use kube_lvs_e2e::controlplane::ControlPlane;

async fn client_for(path: &std::path::Path) -> Result<kube::Client> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_controlplane_kube_rs_clients_connect() -> Result<()> {
    let cp = tokio::task::spawn_blocking(ControlPlane::start).await??;

    let admin = client_for(cp.kubeconfig()).await?;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    ensure!(
        names.iter().any(|n| n == "default"),
        "namespaces: {names:?}"
    );
    let version = admin.apiserver_version().await?;
    ensure!(
        version.git_version == kube_lvs_e2e::controlplane::KUBE_VERSION,
        "{version:?}"
    );

    let ns = format!("cp-kube-rs-{}", std::process::id());
    let sa_kubeconfig = {
        let ns = ns.clone();
        let cp = &cp;
        // kubectl-driven helpers block; they are short, so run them in place.
        tokio::task::block_in_place(move || -> Result<std::path::PathBuf> {
            cp.kubectl_ok(&["create", "namespace", &ns])?;
            Ok(cp.service_account_kubeconfig(&ns, "agent")?)
        })?
    };
    let admin_cms: Api<ConfigMap> = Api::namespaced(admin, &ns);
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("from-rust".into());
    admin_cms.create(&PostParams::default(), &cm).await?;

    // The service account has no bindings: authenticated, but forbidden.
    let sa = client_for(&sa_kubeconfig).await?;
    let sa_cms: Api<ConfigMap> = Api::namespaced(sa, &ns);
    match sa_cms.get("from-rust").await {
        Err(kube::Error::Api(status)) => {
            ensure!(status.code == 403, "expected 403, got {status:?}")
        }
        other => anyhow::bail!("expected Forbidden for an unbound service account, got {other:?}"),
    }
    Ok(())
}
