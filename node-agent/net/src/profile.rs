//! The sysctl sets the classic LVS guides prescribe, as pure data.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::sysctl::SysctlKey;

pub type SysctlSet = BTreeMap<SysctlKey, String>;

/// Director knobs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectorProfile {
    /// Some service forwards with NAT: the director is the real servers' gateway.
    pub nat: bool,
    /// Interfaces the director forwards NAT traffic on (send_redirects off there).
    pub interfaces: Vec<String>,
    /// IPv6 services with NAT need IPv6 forwarding too.
    pub nat_ipv6: bool,
    /// `net.ipv4.vs.conntrack`: keep netfilter conntrack for IPVS flows (needed when nft NAT/state
    /// rules must see them).
    pub conntrack: bool,
}

/// Sysctls a director needs.
///
/// `expire_nodest_conn` and `expire_quiescent_template` are always on: health checks remove or
/// quiesce real servers, and without them clients stay stuck on a dead server until timeouts expire.
pub fn director(p: &DirectorProfile) -> Result<SysctlSet> {
    let mut s = SysctlSet::new();
    s.insert(SysctlKey::vs("expire_nodest_conn")?, "1".into());
    s.insert(SysctlKey::vs("expire_quiescent_template")?, "1".into());
    if p.conntrack {
        s.insert(SysctlKey::vs("conntrack")?, "1".into());
    }
    if p.nat {
        s.insert(SysctlKey::ip_forward(), "1".into());
        // As gateway on the real servers' segment the director would otherwise send ICMP redirects
        // pointing clients' replies around it, breaking the NAT reverse translation.
        for iface in ["all", "default"]
            .into_iter()
            .chain(p.interfaces.iter().map(String::as_str))
        {
            s.insert(SysctlKey::ipv4_conf(iface, "send_redirects")?, "0".into());
        }
        if p.nat_ipv6 {
            s.insert(SysctlKey::ipv6_forwarding(), "1".into());
        }
    }
    Ok(s)
}

/// DR real server: the VIP sits on `lo` (or a dummy) and must never be announced or answered for
/// in ARP, on `lo`, `all` and the interface facing the director.
pub fn real_server_dr(vip_iface: &str, interfaces: &[String]) -> Result<SysctlSet> {
    let mut s = SysctlSet::new();
    for iface in ["all", vip_iface]
        .into_iter()
        .chain(interfaces.iter().map(String::as_str))
    {
        s.insert(SysctlKey::ipv4_conf(iface, "arp_ignore")?, "1".into());
        s.insert(SysctlKey::ipv4_conf(iface, "arp_announce")?, "2".into());
    }
    Ok(s)
}

/// TUN real server: VIP on `tunl0`; decapsulated packets arrive with the client's source on an
/// interface that has no route back to it, so reverse-path filtering must be off for tunl0 and
/// `all` (the kernel uses the max of both). ARP rules as for DR.
pub fn real_server_tun(tunnel: &str, interfaces: &[String]) -> Result<SysctlSet> {
    let mut s = real_server_dr(tunnel, interfaces)?;
    s.insert(SysctlKey::ipv4_conf("all", "rp_filter")?, "0".into());
    s.insert(SysctlKey::ipv4_conf(tunnel, "rp_filter")?, "0".into());
    Ok(s)
}

/// Merge `extra` into `into`; on conflicting values the first writer wins and the clash is
/// returned so the caller can report it.
pub fn merge(into: &mut SysctlSet, extra: SysctlSet) -> Vec<(SysctlKey, String, String)> {
    let mut clashes = Vec::new();
    for (k, v) in extra {
        match into.get(&k) {
            Some(existing) if existing != &v => clashes.push((k, existing.clone(), v)),
            Some(_) => {}
            None => {
                into.insert(k, v);
            }
        }
    }
    clashes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(s: &SysctlSet, k: &str) -> Option<String> {
        s.get(&SysctlKey::parse(k).unwrap()).cloned()
    }

    #[test]
    fn nat_director_forwards_without_redirects() {
        let s = director(&DirectorProfile {
            nat: true,
            interfaces: vec!["eth1".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(get(&s, "net.ipv4.ip_forward").as_deref(), Some("1"));
        assert_eq!(
            get(&s, "net.ipv4.conf.eth1.send_redirects").as_deref(),
            Some("0")
        );
        assert_eq!(
            get(&s, "net.ipv4.conf.all.send_redirects").as_deref(),
            Some("0")
        );
        assert_eq!(
            get(&s, "net.ipv4.vs.expire_nodest_conn").as_deref(),
            Some("1")
        );
        assert_eq!(get(&s, "net.ipv4.vs.conntrack"), None);
    }

    #[test]
    fn dr_director_does_not_forward() {
        let s = director(&DirectorProfile::default()).unwrap();
        assert_eq!(get(&s, "net.ipv4.ip_forward"), None);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn dr_real_server_arp() {
        let s = real_server_dr("lo", &["eth0".into()]).unwrap();
        for iface in ["lo", "all", "eth0"] {
            assert_eq!(
                get(&s, &format!("net.ipv4.conf.{iface}.arp_ignore")).as_deref(),
                Some("1")
            );
            assert_eq!(
                get(&s, &format!("net.ipv4.conf.{iface}.arp_announce")).as_deref(),
                Some("2")
            );
        }
    }

    #[test]
    fn tun_real_server_rp_filter_off() {
        let s = real_server_tun("tunl0", &["eth0".into()]).unwrap();
        assert_eq!(
            get(&s, "net.ipv4.conf.tunl0.rp_filter").as_deref(),
            Some("0")
        );
        assert_eq!(get(&s, "net.ipv4.conf.all.rp_filter").as_deref(), Some("0"));
        assert_eq!(
            get(&s, "net.ipv4.conf.tunl0.arp_ignore").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn merge_reports_clashes() {
        let mut a = real_server_dr("lo", &[]).unwrap();
        let mut b = SysctlSet::new();
        b.insert(
            SysctlKey::ipv4_conf("lo", "arp_ignore").unwrap(),
            "2".into(),
        );
        b.insert(SysctlKey::ip_forward(), "1".into());
        let clashes = merge(&mut a, b);
        assert_eq!(clashes.len(), 1);
        assert_eq!(get(&a, "net.ipv4.ip_forward").as_deref(), Some("1"));
        assert_eq!(get(&a, "net.ipv4.conf.lo.arp_ignore").as_deref(), Some("1"));
    }
}
