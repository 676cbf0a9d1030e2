//! Host tests in a private network namespace (the host kernel has netns, rtnetlink and nftables):
//! addresses with labels, typed errors, sysctls and the nft mark table, against the real kernel.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use kube_lvs_net::{
    AddressSpec, FwmarkRule, MarkProtocol, NetError, NetHandle, Nft, SysctlKey, Sysctls,
};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A uniquely named namespace, deleted on drop (pass or fail).
struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!(
            "klnet-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip netns add {name}");
        let up = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(up, "lo up in {name}");
        Netns(name)
    }

    /// Run `f` on a thread inside the namespace with a current-thread tokio runtime.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = File::open(format!("/run/netns/{}", self.0)).expect("open netns");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

#[test]
fn vip_addresses_on_lo_with_labels_and_typed_errors() {
    let ns = Netns::new();
    ns.run(|| {
        rt().block_on(async {
            let net = NetHandle::connect().expect("connect");
            let v4 = AddressSpec::host("lo", ip("192.0.2.100"), Some("lo:kl".into()));
            let v6 = AddressSpec::host("lo", ip("2001:db8::100"), None);
            net.add_address(&v4).await.expect("add v4");
            net.add_address(&v6).await.expect("add v6");
            let all = net.list_addresses().await.expect("list");
            assert!(all.contains(&v4), "{all:?}");
            assert!(all.contains(&v6), "{all:?}");
            let again = net.add_address(&v4).await;
            assert!(
                matches!(again, Err(ref e) if e.is_already_exists()),
                "{again:?}"
            );
            net.del_address(&v4).await.expect("del");
            let gone = net.del_address(&v4).await;
            assert!(matches!(gone, Err(ref e) if e.is_not_found()), "{gone:?}");
            assert!(!net.list_addresses().await.expect("list").contains(&v4));

            let bad = AddressSpec::host("lo", ip("192.0.2.101"), Some("eth0:x".into()));
            assert!(matches!(
                net.add_address(&bad).await,
                Err(NetError::InvalidLabel { .. })
            ));
            let nowhere = AddressSpec::host("eth9", ip("192.0.2.102"), None);
            assert!(matches!(
                net.add_address(&nowhere).await,
                Err(NetError::NoSuchInterface(_))
            ));
            assert!(net.is_up("lo").await.expect("lo state"));
        })
    });
}

#[test]
fn sysctls_read_and_write_inside_namespace() {
    let ns = Netns::new();
    ns.run(|| {
        let s = Sysctls::default();
        let k = SysctlKey::ipv4_conf("lo", "arp_ignore").expect("key");
        let before = s.read(&k).expect("read");
        s.write(&k, "1").expect("write");
        assert_eq!(s.read(&k).expect("read"), "1");
        s.write(&k, &before).expect("restore");
        let missing = SysctlKey::ipv4_conf("eth9", "arp_ignore").expect("key");
        assert!(matches!(
            s.read(&missing),
            Err(NetError::SysctlMissing { .. })
        ));
    });
}

#[test]
fn nft_mark_table_is_replaced_atomically_and_others_untouched() {
    let ns = Netns::new();
    ns.run(|| {
        // Someone else's table that must survive.
        let foreign = Command::new("nft")
            .args(["add table inet other ; add chain inet other c { type filter hook input priority 0 ; } ; add rule inet other c tcp dport 22 accept"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(foreign, "foreign table");
        let nft = Nft::default();
        assert!(!nft.observe().expect("observe").table_present);
        let rules: BTreeSet<FwmarkRule> = [
            FwmarkRule {
                vip: ip("192.0.2.100"),
                protocol: Some(MarkProtocol::Tcp),
                ports: [80, 443].into_iter().collect(),
                mark: 1,
            },
            FwmarkRule {
                vip: ip("2001:db8::100"),
                protocol: Some(MarkProtocol::Udp),
                ports: BTreeSet::new(),
                mark: 2,
            },
        ]
        .into_iter()
        .collect();
        nft.sync(&rules).expect("sync");
        let obs = nft.observe().expect("observe");
        assert!(obs.matches(&rules), "{obs:?}");
        // Idempotent: syncing again leaves the same table.
        nft.sync(&rules).expect("sync again");
        assert!(nft.observe().expect("observe").matches(&rules));
        nft.sync(&BTreeSet::new()).expect("remove");
        assert!(!nft.observe().expect("observe").table_present);
        let list = Command::new("nft")
            .args(["list", "table", "inet", "other"])
            .output()
            .expect("nft list");
        assert!(String::from_utf8_lossy(&list.stdout).contains("tcp dport 22 accept"));
    });
}
