//! The example manifests decode into the Rust types, and the helpers interpret them.

use std::path::PathBuf;
use std::time::Duration;

use kube_lvs_crds::v1alpha1::{
    ForwardingMethod, RealServer, Scheduler, ServiceKey, VirtualService, VrrpVersion,
};

fn examples() -> Vec<(String, serde_yaml::Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            docs.push((file.display().to_string(), value));
        }
    }
    docs
}

#[test]
fn examples_decode_and_interpret() {
    let mut services = Vec::new();
    let mut servers = Vec::new();
    for (file, doc) in examples() {
        match doc["kind"].as_str() {
            Some("VirtualService") => services.push(
                serde_yaml::from_value::<VirtualService>(doc)
                    .unwrap_or_else(|e| panic!("{file}: {e}")),
            ),
            Some("RealServer") => servers.push(
                serde_yaml::from_value::<RealServer>(doc).unwrap_or_else(|e| panic!("{file}: {e}")),
            ),
            _ => {}
        }
    }
    assert_eq!(services.len(), 3);
    assert_eq!(servers.len(), 6);
    for vs in &services {
        let spec = &vs.spec;
        assert!(spec.service_key().is_ok(), "{:?}", vs.metadata.name);
        let hc = &spec.health_check;
        assert!(hc.timeout().unwrap() < hc.interval().unwrap());
        assert!(spec.directors.vrrp.vrrp_version().is_ok());
    }
    for rs in &servers {
        assert!(rs.spec.address_addr().is_ok(), "{:?}", rs.metadata.name);
    }

    let web = services
        .iter()
        .find(|v| v.metadata.name.as_deref() == Some("web"))
        .unwrap();
    assert_eq!(web.spec.scheduler, Scheduler::Wrr);
    assert_eq!(web.spec.forwarding.method, ForwardingMethod::DirectRouting);
    assert_eq!(web.spec.directors.vrrp.vrrp_version(), Ok(VrrpVersion::V2));
    assert_eq!(web.spec.directors.vrrp.priority_of("lvs01"), Some(100));
    assert_eq!(
        web.spec.health_check.retry_delay(),
        Ok(Duration::from_secs(3))
    );
    let fw = services
        .iter()
        .find(|v| v.spec.firewall_mark.is_some())
        .unwrap();
    assert!(matches!(
        fw.spec.service_key(),
        Ok(ServiceKey::FirewallMark {
            ipv6: false,
            mark: 10
        })
    ));
}
