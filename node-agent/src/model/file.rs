//! Serialisable form of the model: the `--desired` YAML file, the ownership state file and the
//! `dump` output. The IPVS types stay plain; this module maps them to and from text.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kube_lvs_ipvs::{
    AddressFamily, Destination, Forwarding, Persistence, Protocol, SchedFlags, Scheduler, Service,
    ServiceKey, TunnelChecksum, TunnelType,
};
use kube_lvs_net::{AddressSpec, FwmarkRule, SysctlKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Desired, Observed, ServiceState};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error(
        "invalid service key {0:?} (want 'tcp 192.0.2.1:80', 'udp [2001:db8::1]:53', 'fwmark 1' or 'fwmark6 1')"
    )]
    Invalid(String),
    #[error("service {key}: {reason}")]
    Service { key: String, reason: String },
}

/// Parse the `Display` form of a [`ServiceKey`].
pub fn parse_service_key(s: &str) -> Result<ServiceKey, KeyParseError> {
    let bad = || KeyParseError::Invalid(s.to_string());
    let (kind, rest) = s.trim().split_once(' ').ok_or_else(bad)?;
    let rest = rest.trim();
    match kind {
        "fwmark" | "fwmark6" => {
            let mark: u32 = rest.parse().map_err(|_| bad())?;
            let family = if kind == "fwmark" {
                AddressFamily::Ipv4
            } else {
                AddressFamily::Ipv6
            };
            Ok(ServiceKey::fwmark(family, mark))
        }
        "tcp" | "udp" | "sctp" => {
            let protocol = match kind {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => Protocol::Sctp,
            };
            let sa: std::net::SocketAddr = rest.parse().map_err(|_| bad())?;
            Ok(ServiceKey::addr(protocol, sa.ip(), sa.port()))
        }
        _ => Err(bad()),
    }
}

pub(crate) fn ser_keys<S: Serializer>(
    keys: &BTreeSet<ServiceKey>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let v: Vec<String> = keys.iter().map(ToString::to_string).collect();
    v.serialize(s)
}

pub(crate) fn de_keys<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<ServiceKey>, D::Error> {
    let v: Vec<String> = Vec::deserialize(d)?;
    v.iter()
        .map(|s| parse_service_key(s).map_err(serde::de::Error::custom))
        .collect()
}

/// Forwarding as written in files: `nat`, `dr`, `tunnel` (IPIP), `gue`, `gre`, `local`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FwdName {
    Nat,
    Dr,
    Tunnel,
    Gue,
    Gre,
    Local,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CsumName {
    #[default]
    None,
    Csum,
    Remcsum,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestEntry {
    pub addr: IpAddr,
    pub port: u16,
    pub forwarding: FwdName,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub upper_threshold: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lower_threshold: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_port: Option<u16>,
    #[serde(default, skip_serializing_if = "is_no_csum")]
    pub tunnel_checksum: CsumName,
}

fn one() -> u32 {
    1
}
fn is_zero(v: &u32) -> bool {
    *v == 0
}
fn is_no_csum(c: &CsumName) -> bool {
    *c == CsumName::None
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// `tcp 192.0.2.1:80`, `fwmark 1`… (same text as ipvsadm-style display).
    pub key: String,
    pub scheduler: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sched_flags: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_packet: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceEntry>,
    #[serde(default)]
    pub destinations: Vec<DestEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistenceEntry {
    pub timeout: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len: Option<u8>,
}

/// The `--desired` file and the dump output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DesiredFile {
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    #[serde(default)]
    pub addresses: Vec<AddressSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    #[serde(default)]
    pub sysctls: BTreeMap<SysctlKey, String>,
    #[serde(default)]
    pub marks: Vec<FwmarkRule>,
}

fn fwd_to_entry(f: Forwarding) -> (FwdName, Option<u16>, CsumName) {
    let cs = |c: TunnelChecksum| match c {
        TunnelChecksum::None => CsumName::None,
        TunnelChecksum::Csum => CsumName::Csum,
        TunnelChecksum::RemCsum => CsumName::Remcsum,
    };
    match f {
        Forwarding::Masquerade => (FwdName::Nat, None, CsumName::None),
        Forwarding::DirectRoute => (FwdName::Dr, None, CsumName::None),
        Forwarding::Local => (FwdName::Local, None, CsumName::None),
        Forwarding::Tunnel(TunnelType::Ipip) => (FwdName::Tunnel, None, CsumName::None),
        Forwarding::Tunnel(TunnelType::Gue { port, csum }) => (FwdName::Gue, Some(port), cs(csum)),
        Forwarding::Tunnel(TunnelType::Gre { csum }) => (FwdName::Gre, None, cs(csum)),
    }
}

fn entry_to_fwd(d: &DestEntry, key: &str) -> Result<Forwarding, KeyParseError> {
    let csum = match d.tunnel_checksum {
        CsumName::None => TunnelChecksum::None,
        CsumName::Csum => TunnelChecksum::Csum,
        CsumName::Remcsum => TunnelChecksum::RemCsum,
    };
    Ok(match d.forwarding {
        FwdName::Nat => Forwarding::Masquerade,
        FwdName::Dr => Forwarding::DirectRoute,
        FwdName::Local => Forwarding::Local,
        FwdName::Tunnel => Forwarding::Tunnel(TunnelType::Ipip),
        FwdName::Gre => Forwarding::Tunnel(TunnelType::Gre { csum }),
        FwdName::Gue => Forwarding::Tunnel(TunnelType::Gue {
            port: d.tunnel_port.ok_or_else(|| KeyParseError::Service {
                key: key.to_string(),
                reason: format!("destination {} uses gue without tunnelPort", d.addr),
            })?,
            csum,
        }),
    })
}

pub fn service_to_entry(s: &ServiceState) -> ServiceEntry {
    let svc = &s.service;
    let mut flags = Vec::new();
    if svc.sched_flags.fallback {
        flags.push("fallback".to_string());
    }
    if svc.sched_flags.port {
        flags.push("port".to_string());
    }
    if svc.sched_flags.flag3 {
        flags.push("flag3".to_string());
    }
    ServiceEntry {
        key: svc.key.to_string(),
        scheduler: svc.scheduler.name().to_string(),
        sched_flags: flags,
        one_packet: svc.one_packet,
        persistence: svc.persistence.map(|p| PersistenceEntry {
            timeout: p.timeout_secs,
            prefix_len: Some(p.prefix_len),
        }),
        destinations: s
            .destinations
            .values()
            .map(|d| {
                let (forwarding, tunnel_port, tunnel_checksum) = fwd_to_entry(d.forwarding);
                DestEntry {
                    addr: d.addr,
                    port: d.port,
                    forwarding,
                    weight: d.weight,
                    upper_threshold: d.upper_threshold,
                    lower_threshold: d.lower_threshold,
                    tunnel_port,
                    tunnel_checksum,
                }
            })
            .collect(),
    }
}

pub fn entry_to_service(e: &ServiceEntry) -> Result<ServiceState, KeyParseError> {
    let key = parse_service_key(&e.key)?;
    let err = |reason: String| KeyParseError::Service {
        key: e.key.clone(),
        reason,
    };
    let scheduler: Scheduler = e
        .scheduler
        .parse()
        .map_err(|_| err(format!("unknown scheduler {:?}", e.scheduler)))?;
    let mut sched_flags = SchedFlags::default();
    for f in &e.sched_flags {
        match f.as_str() {
            "fallback" => sched_flags.fallback = true,
            "port" => sched_flags.port = true,
            "flag3" => sched_flags.flag3 = true,
            other => return Err(err(format!("unknown scheduler flag {other:?}"))),
        }
    }
    let max = key.family().max_prefix();
    let persistence = match &e.persistence {
        None => None,
        Some(p) => {
            let prefix_len = p.prefix_len.unwrap_or(max);
            if prefix_len > max {
                return Err(err(format!("persistence prefixLen {prefix_len} > {max}")));
            }
            Some(Persistence {
                timeout_secs: p.timeout,
                prefix_len,
            })
        }
    };
    let mut svc = Service::new(key, scheduler);
    svc.sched_flags = sched_flags;
    svc.one_packet = e.one_packet;
    svc.persistence = persistence;
    let mut state = ServiceState::new(svc);
    for d in &e.destinations {
        let mut dest = Destination::new(d.addr, d.port, entry_to_fwd(d, &e.key)?);
        dest.weight = d.weight;
        dest.upper_threshold = d.upper_threshold;
        dest.lower_threshold = d.lower_threshold;
        if state.destinations.insert(dest.key(), dest).is_some() {
            return Err(err(format!(
                "destination {}:{} listed twice",
                d.addr, d.port
            )));
        }
    }
    Ok(state)
}

impl DesiredFile {
    pub fn into_desired(self) -> Result<Desired, KeyParseError> {
        let mut d = Desired::default();
        for e in &self.services {
            let s = entry_to_service(e)?;
            if d.services.contains_key(&s.service.key) {
                return Err(KeyParseError::Service {
                    key: e.key.clone(),
                    reason: "listed twice".into(),
                });
            }
            d.add_service(s);
        }
        d.addresses = self
            .addresses
            .into_iter()
            .map(AddressSpec::normalized)
            .collect();
        d.links = self.links.into_iter().collect();
        d.sysctls = self.sysctls;
        d.marks = self.marks.into_iter().collect();
        Ok(d)
    }

    pub fn from_desired(d: &Desired) -> Self {
        Self {
            services: d.services.values().map(service_to_entry).collect(),
            addresses: d.addresses.iter().cloned().collect(),
            links: d.links.iter().cloned().collect(),
            sysctls: d.sysctls.clone(),
            marks: d.marks.iter().cloned().collect(),
        }
    }

    /// The observed state in the same notation (missing sysctls are left out).
    pub fn from_observed(o: &Observed) -> Self {
        Self {
            services: o.services.values().map(service_to_entry).collect(),
            addresses: o.addresses.iter().cloned().collect(),
            links: Vec::new(),
            sysctls: o
                .sysctls
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                .collect(),
            marks: o.marks.rules.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_round_trip() {
        for s in [
            "tcp 192.0.2.1:80",
            "udp [2001:db8::1]:53",
            "sctp 203.0.113.5:9",
            "fwmark 1",
            "fwmark6 7",
        ] {
            let k = parse_service_key(s).unwrap();
            assert_eq!(k.to_string(), s);
        }
        for bad in ["", "tcp", "tcp 192.0.2.1", "icmp 192.0.2.1:1", "fwmark x"] {
            assert!(parse_service_key(bad).is_err(), "{bad}");
        }
    }

    const YAML: &str = r#"
services:
  - key: tcp 192.0.2.10:80
    scheduler: wrr
    persistence: {timeout: 300}
    destinations:
      - {addr: 198.51.100.11, port: 8080, forwarding: nat, weight: 3}
      - {addr: 198.51.100.12, port: 8080, forwarding: gue, tunnelPort: 6080, tunnelChecksum: csum}
  - key: fwmark 1
    scheduler: sh
    schedFlags: [fallback]
    destinations:
      - {addr: 198.51.100.13, port: 0, forwarding: dr}
addresses:
  - {ifname: eth0, addr: 192.0.2.10, prefix_len: 32, label: "eth0:kl"}
sysctls:
  net.ipv4.ip_forward: "1"
marks:
  - {vip: 192.0.2.10, protocol: tcp, ports: [80, 443], mark: 1}
"#;

    #[test]
    fn desired_file_parses_and_round_trips() {
        let f: DesiredFile = serde_yaml::from_str(YAML).unwrap();
        let d = f.into_desired().unwrap();
        assert_eq!(d.services.len(), 2);
        let k = parse_service_key("tcp 192.0.2.10:80").unwrap();
        let s = &d.services[&k];
        assert_eq!(s.service.scheduler, Scheduler::WeightedRoundRobin);
        assert_eq!(
            s.service.persistence,
            Some(Persistence {
                timeout_secs: 300,
                prefix_len: 32
            })
        );
        let weights: Vec<u32> = s.destinations.values().map(|d| d.weight).collect();
        assert_eq!(weights, vec![3, 1]);
        assert_eq!(d.marks.len(), 1);
        let back = DesiredFile::from_desired(&d).into_desired().unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn bad_files_rejected_with_reason() {
        let gue_no_port = YAML.replace("tunnelPort: 6080, ", "");
        let f: DesiredFile = serde_yaml::from_str(&gue_no_port).unwrap();
        assert!(matches!(
            f.into_desired(),
            Err(KeyParseError::Service { .. })
        ));
        let bad_sched = YAML.replace("scheduler: wrr", "scheduler: fifo");
        let f: DesiredFile = serde_yaml::from_str(&bad_sched).unwrap();
        assert!(f.into_desired().is_err());
        assert!(serde_yaml::from_str::<DesiredFile>("servicez: []").is_err());
    }
}
