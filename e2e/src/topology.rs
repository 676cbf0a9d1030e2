//! Network-namespace topologies for tests, usable on the host kernel and inside the test VM.
//!
//! A [`TopologySpec`] names hosts (each one a network namespace) and LAN segments (bridges).
//! All bridges and the host ends of the veth pairs live in one private "switch" namespace, so
//! a topology never touches the root namespace of the machine and dropping the [`Topology`]
//! (deleting its namespaces) removes every interface it made. Inside a host the interfaces are
//! called `eth0`, `eth1`, … in the order the NICs were declared.
//!
//! Only documentation address ranges are accepted (192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24, 2001:db8::/32), so a topology can never route anywhere real.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Everything that can go wrong while describing, building or using a topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("invalid topology: {0}")]
    Invalid(String),
    #[error("unknown host `{0}`")]
    UnknownHost(String),
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout { what: String, waited: Duration },
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

pub type Result<T, E = TopologyError> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TopologyError {
    let context = context.into();
    move |source| TopologyError::Io { context, source }
}

// ---------------------------------------------------------------------------------------------
// Description (pure)
// ---------------------------------------------------------------------------------------------

/// One interface of a host: the LAN it plugs into and its addresses (CIDR notation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub lan: String,
    pub v4: Option<String>,
    pub v6: Option<String>,
}

/// One host (network namespace) of a topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub name: String,
    pub nics: Vec<NicSpec>,
    /// Name of the host that is the default gateway; resolved to its address on a shared LAN.
    pub gateway: Option<String>,
    /// `sysctl` keys and values applied inside the namespace after its interfaces exist.
    pub sysctls: Vec<(String, String)>,
}

impl HostSpec {
    pub fn new(name: &str) -> Self {
        HostSpec {
            name: name.to_string(),
            nics: Vec::new(),
            gateway: None,
            sysctls: Vec::new(),
        }
    }

    /// Adds an interface on `lan` with an IPv4 address such as `"192.0.2.10/24"`.
    pub fn nic(mut self, lan: &str, v4: &str) -> Self {
        self.nics.push(NicSpec {
            lan: lan.to_string(),
            v4: Some(v4.to_string()),
            v6: None,
        });
        self
    }

    /// Adds an interface on `lan` with an IPv4 and an IPv6 address.
    pub fn nic_dual(mut self, lan: &str, v4: &str, v6: &str) -> Self {
        self.nics.push(NicSpec {
            lan: lan.to_string(),
            v4: Some(v4.to_string()),
            v6: Some(v6.to_string()),
        });
        self
    }

    /// Adds an interface with an arbitrary combination of addresses (possibly none).
    pub fn nic_spec(mut self, nic: NicSpec) -> Self {
        self.nics.push(nic);
        self
    }

    /// Routes everything not on a local LAN via `host` (which must share a LAN with this one).
    pub fn gateway(mut self, host: &str) -> Self {
        self.gateway = Some(host.to_string());
        self
    }

    pub fn sysctl(mut self, key: &str, value: &str) -> Self {
        self.sysctls.push((key.to_string(), value.to_string()));
        self
    }
}

/// A whole topology description; turn it into namespaces with [`Topology::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologySpec {
    pub tag: String,
    pub lans: Vec<String>,
    pub hosts: Vec<HostSpec>,
}

impl TopologySpec {
    /// `tag` (1–8 of `[a-z0-9]`) starts every namespace name so leftovers are attributable.
    pub fn new(tag: &str) -> Self {
        TopologySpec {
            tag: tag.to_string(),
            lans: Vec::new(),
            hosts: Vec::new(),
        }
    }

    pub fn lan(mut self, name: &str) -> Self {
        self.lans.push(name.to_string());
        self
    }

    pub fn host(mut self, host: HostSpec) -> Self {
        self.hosts.push(host);
        self
    }

    /// Shorthand for [`Topology::build`].
    pub fn build_topology(&self) -> Result<Topology> {
        Topology::build(self)
    }

    /// Checks the description and resolves gateways; no side effects.
    pub fn validate(&self) -> Result<ResolvedSpec> {
        validate_tag(&self.tag)?;
        if self.hosts.is_empty() {
            return Err(TopologyError::Invalid("no hosts".into()));
        }
        let mut lans = BTreeSet::new();
        for lan in &self.lans {
            validate_name("LAN", lan)?;
            if !lans.insert(lan.as_str()) {
                return Err(TopologyError::Invalid(format!("duplicate LAN `{lan}`")));
            }
        }
        let mut names = BTreeSet::new();
        let mut seen_addrs: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut hosts = Vec::with_capacity(self.hosts.len());
        for host in &self.hosts {
            validate_name("host", &host.name)?;
            if !names.insert(host.name.as_str()) {
                return Err(TopologyError::Invalid(format!(
                    "duplicate host `{}`",
                    host.name
                )));
            }
            let mut nics = Vec::with_capacity(host.nics.len());
            for (idx, nic) in host.nics.iter().enumerate() {
                if !lans.contains(nic.lan.as_str()) {
                    return Err(TopologyError::Invalid(format!(
                        "host `{}` uses unknown LAN `{}`",
                        host.name, nic.lan
                    )));
                }
                let v4 = nic.v4.as_deref().map(parse_v4_cidr).transpose()?;
                let v6 = nic.v6.as_deref().map(parse_v6_cidr).transpose()?;
                for ip in v4
                    .iter()
                    .map(|c| IpAddr::V4(c.addr))
                    .chain(v6.iter().map(|c| IpAddr::V6(c.addr)))
                {
                    if let Some(owner) = seen_addrs.insert(ip, host.name.clone()) {
                        return Err(TopologyError::Invalid(format!(
                            "address {ip} used by both `{owner}` and `{}`",
                            host.name
                        )));
                    }
                }
                nics.push(ResolvedNic {
                    lan: nic.lan.clone(),
                    ifname: format!("eth{idx}"),
                    v4,
                    v6,
                });
            }
            for (key, value) in &host.sysctls {
                validate_sysctl(key, value)?;
            }
            hosts.push(ResolvedHost {
                name: host.name.clone(),
                nics,
                gateway_v4: None,
                gateway_v6: None,
                sysctls: host.sysctls.clone(),
            });
        }
        // Gateways need every host resolved first.
        for (idx, spec) in self.hosts.iter().enumerate() {
            let Some(gw_name) = &spec.gateway else {
                continue;
            };
            if gw_name == &spec.name {
                return Err(TopologyError::Invalid(format!(
                    "host `{}` cannot be its own gateway",
                    spec.name
                )));
            }
            let gw = hosts
                .iter()
                .find(|h| &h.name == gw_name)
                .ok_or_else(|| {
                    TopologyError::Invalid(format!(
                        "gateway `{gw_name}` of `{}` is not a host",
                        spec.name
                    ))
                })?
                .clone();
            let me = hosts
                .get(idx)
                .cloned()
                .ok_or_else(|| TopologyError::Invalid(format!("host index {idx} out of range")))?;
            let (gw4, gw6) = resolve_gateway(&me, &gw)?;
            if let Some(slot) = hosts.get_mut(idx) {
                slot.gateway_v4 = gw4;
                slot.gateway_v6 = gw6;
            }
        }
        Ok(ResolvedSpec {
            tag: self.tag.clone(),
            lans: self.lans.clone(),
            hosts,
        })
    }
}

/// An IPv4 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// An IPv6 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V6Cidr {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl V4Cidr {
    fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(self.addr) & mask == u32::from(other) & mask
    }
}

impl V6Cidr {
    fn contains(&self, other: Ipv6Addr) -> bool {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0);
        u128::from(self.addr) & mask == u128::from(other) & mask
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedNic {
    pub lan: String,
    pub ifname: String,
    pub v4: Option<V4Cidr>,
    pub v6: Option<V6Cidr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedHost {
    pub name: String,
    pub nics: Vec<ResolvedNic>,
    pub gateway_v4: Option<Ipv4Addr>,
    pub gateway_v6: Option<Ipv6Addr>,
    pub sysctls: Vec<(String, String)>,
}

/// A validated description, ready to be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSpec {
    pub tag: String,
    pub lans: Vec<String>,
    pub hosts: Vec<ResolvedHost>,
}

fn validate_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 8
        && tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(TopologyError::Invalid(format!(
            "tag `{tag}` must be 1-8 characters of [a-z0-9]"
        )))
    }
}

fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(TopologyError::Invalid(format!(
            "{what} name `{name}` must be 1-32 characters of [a-z0-9-] starting with a letter"
        )))
    }
}

fn validate_sysctl(key: &str, value: &str) -> Result<()> {
    let key_ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    let value_ok = !value.is_empty() && !value.contains(['\n', '=']);
    if key_ok && value_ok {
        Ok(())
    } else {
        Err(TopologyError::Invalid(format!(
            "bad sysctl `{key}={value}`"
        )))
    }
}

const DOC_V4: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
];

/// True when `ip` lies in one of the documentation ranges tests may use.
pub fn is_documentation_addr(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => DOC_V4.iter().any(|(net, prefix)| {
            V4Cidr {
                addr: *net,
                prefix: *prefix,
            }
            .contains(v4)
        }),
        IpAddr::V6(v6) => V6Cidr {
            addr: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            prefix: 32,
        }
        .contains(v6),
    }
}

fn split_cidr(text: &str) -> Result<(&str, u8)> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| TopologyError::Invalid(format!("`{text}` is not addr/prefix")))?;
    let prefix = prefix
        .parse::<u8>()
        .map_err(|_| TopologyError::Invalid(format!("bad prefix length in `{text}`")))?;
    Ok((addr, prefix))
}

/// Parses `"192.0.2.10/24"`, refusing anything outside the documentation ranges.
pub fn parse_v4_cidr(text: &str) -> Result<V4Cidr> {
    let (addr, prefix) = split_cidr(text)?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| TopologyError::Invalid(format!("bad IPv4 address in `{text}`")))?;
    if !(1..=32).contains(&prefix) {
        return Err(TopologyError::Invalid(format!(
            "bad prefix length in `{text}`"
        )));
    }
    if !is_documentation_addr(IpAddr::V4(addr)) {
        return Err(TopologyError::Invalid(format!(
            "{addr} is outside the documentation ranges"
        )));
    }
    Ok(V4Cidr { addr, prefix })
}

/// Parses `"2001:db8::10/64"`, refusing anything outside 2001:db8::/32.
pub fn parse_v6_cidr(text: &str) -> Result<V6Cidr> {
    let (addr, prefix) = split_cidr(text)?;
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| TopologyError::Invalid(format!("bad IPv6 address in `{text}`")))?;
    if !(1..=128).contains(&prefix) {
        return Err(TopologyError::Invalid(format!(
            "bad prefix length in `{text}`"
        )));
    }
    if !is_documentation_addr(IpAddr::V6(addr)) {
        return Err(TopologyError::Invalid(format!(
            "{addr} is outside 2001:db8::/32"
        )));
    }
    Ok(V6Cidr { addr, prefix })
}

/// The gateway's address on a LAN both hosts share (and whose subnet covers the host's own).
fn resolve_gateway(
    me: &ResolvedHost,
    gw: &ResolvedHost,
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let mut v4 = None;
    let mut v6 = None;
    for mine in &me.nics {
        for theirs in gw.nics.iter().filter(|n| n.lan == mine.lan) {
            if v4.is_none()
                && let (Some(a), Some(b)) = (mine.v4, theirs.v4)
                && a.contains(b.addr)
            {
                v4 = Some(b.addr);
            }
            if v6.is_none()
                && let (Some(a), Some(b)) = (mine.v6, theirs.v6)
                && a.contains(b.addr)
            {
                v6 = Some(b.addr);
            }
        }
    }
    if v4.is_none() && v6.is_none() {
        return Err(TopologyError::Invalid(format!(
            "gateway `{}` shares no subnet with `{}`",
            gw.name, me.name
        )));
    }
    Ok((v4, v6))
}

/// Namespace names of one topology instance: `<tag>-<pid>-<seq>-<host>`. Tags hold no `-` and
/// pid/seq are decimal, so two instances can never produce the same name. Interface names do
/// not depend on them (they live in private namespaces), so the 15-byte IFNAMSIZ limit is
/// met by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    prefix: String,
}

impl Naming {
    pub fn new(tag: &str, pid: u32, seq: u32) -> Result<Self> {
        validate_tag(tag)?;
        Ok(Naming {
            prefix: format!("{tag}-{pid}-{seq}"),
        })
    }

    /// A naming unique within this machine for the life of this process.
    pub fn unique(tag: &str) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        Naming::new(tag, std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn namespace(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// `.` cannot occur in host names, so the switch never clashes with a host.
    pub fn switch_namespace(&self) -> String {
        format!("{}.switch", self.prefix)
    }

    pub fn bridge(lan_idx: usize) -> String {
        format!("br{lan_idx}")
    }

    /// Switch-side end of a host's veth pair.
    pub fn port(host_idx: usize, nic_idx: usize) -> String {
        format!("h{host_idx}n{nic_idx}")
    }
}

/// `ip -batch` lines for the switch namespace: bridges, then every veth pair (host ends moved
/// straight into the host namespaces).
fn switch_batch(spec: &ResolvedSpec, naming: &Naming) -> Vec<String> {
    let mut lines = vec!["link set lo up".to_string()];
    for (idx, _) in spec.lans.iter().enumerate() {
        let br = Naming::bridge(idx);
        // Multicast snooping would starve VRRP/ND listeners that never sent a report.
        lines.push(format!(
            "link add name {br} type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
        ));
        lines.push(format!("link set {br} up"));
    }
    for (h, host) in spec.hosts.iter().enumerate() {
        let ns = naming.namespace(&host.name);
        for (n, nic) in host.nics.iter().enumerate() {
            let port = Naming::port(h, n);
            let lan_idx = spec.lans.iter().position(|l| l == &nic.lan).unwrap_or(0);
            lines.push(format!(
                "link add {port} type veth peer name {} netns {ns}",
                nic.ifname
            ));
            lines.push(format!(
                "link set {port} master {} up",
                Naming::bridge(lan_idx)
            ));
        }
    }
    lines
}

/// `ip -batch` lines run inside one host namespace.
fn host_batch(host: &ResolvedHost) -> Vec<String> {
    let mut lines = vec!["link set lo up".to_string()];
    for nic in &host.nics {
        if let Some(c) = nic.v4 {
            lines.push(format!(
                "addr add {}/{} dev {}",
                c.addr, c.prefix, nic.ifname
            ));
        }
        if let Some(c) = nic.v6 {
            // nodad: tests must not wait ~2 s for duplicate address detection.
            lines.push(format!(
                "addr add {}/{} dev {} nodad",
                c.addr, c.prefix, nic.ifname
            ));
        }
        lines.push(format!("link set {} up", nic.ifname));
    }
    if let Some(gw) = host.gateway_v4 {
        lines.push(format!("route add default via {gw}"));
    }
    if let Some(gw) = host.gateway_v6 {
        lines.push(format!("-6 route add default via {gw}"));
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// Live topology (effectful)
// ---------------------------------------------------------------------------------------------

/// A built topology. Dropping it kills every process in its namespaces and deletes them.
pub struct Topology {
    naming: Naming,
    spec: ResolvedSpec,
    /// Namespaces that exist right now (in creation order), for cleanup.
    created: Vec<String>,
    log_dir: PathBuf,
    spawn_seq: AtomicU32,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("prefix", &self.naming.prefix)
            .field("hosts", &self.spec.hosts.len())
            .finish()
    }
}

impl Topology {
    /// Validates `spec` and creates its namespaces, bridges, links, addresses, routes, sysctls.
    pub fn build(spec: &TopologySpec) -> Result<Topology> {
        let resolved = spec.validate()?;
        let naming = Naming::unique(&resolved.tag)?;
        let log_dir = std::env::temp_dir().join(format!("kube-lvs-topo-{}", naming.prefix));
        std::fs::create_dir_all(&log_dir).map_err(io_err(format!("creating {log_dir:?}")))?;
        let mut topo = Topology {
            naming,
            spec: resolved,
            created: Vec::new(),
            log_dir,
            spawn_seq: AtomicU32::new(0),
        };
        // On any error `topo` is dropped here, which removes whatever was created so far.
        topo.create()?;
        Ok(topo)
    }

    fn create(&mut self) -> Result<()> {
        let switch = self.naming.switch_namespace();
        let mut namespaces = vec![switch.clone()];
        namespaces.extend(
            self.spec
                .hosts
                .iter()
                .map(|h| self.naming.namespace(&h.name)),
        );
        for ns in &namespaces {
            if Path::new("/run/netns").join(ns).exists() {
                return Err(TopologyError::Invalid(format!(
                    "namespace {ns} already exists"
                )));
            }
            run_checked(Command::new("ip").args(["netns", "add", ns]))?;
            self.created.push(ns.clone());
        }
        for host in &self.spec.hosts {
            let ns = self.naming.namespace(&host.name);
            // Before the interfaces exist, so the per-interface defaults inherit it.
            sysctl_in(
                &ns,
                &[
                    ("net.ipv6.conf.all.accept_dad", "0"),
                    ("net.ipv6.conf.default.accept_dad", "0"),
                ],
            )?;
        }
        ip_batch(&switch, &switch_batch(&self.spec, &self.naming))?;
        for host in &self.spec.hosts {
            let ns = self.naming.namespace(&host.name);
            ip_batch(&ns, &host_batch(host))?;
            if !host.sysctls.is_empty() {
                let pairs: Vec<(&str, &str)> = host
                    .sysctls
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                sysctl_in(&ns, &pairs)?;
            }
        }
        Ok(())
    }

    /// client, director1, director2, rs1, rs2 on one LAN (192.0.2.0/24 + 2001:db8::/64), the
    /// shape of the classic LVS guides. Addresses are in [`lvs_lan`].
    pub fn lvs_lan() -> Result<Topology> {
        Topology::build(&lvs_lan::spec())
    }

    pub fn prefix(&self) -> &str {
        self.naming.prefix()
    }

    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.spec.hosts.iter().map(|h| h.name.as_str())
    }

    pub fn host(&self, host: &str) -> Result<&ResolvedHost> {
        self.spec
            .hosts
            .iter()
            .find(|h| h.name == host)
            .ok_or_else(|| TopologyError::UnknownHost(host.to_string()))
    }

    /// Network namespace name of `host` (for `ip netns exec`, or `/run/netns/<name>`).
    pub fn ns(&self, host: &str) -> Result<String> {
        self.host(host).map(|h| self.naming.namespace(&h.name))
    }

    /// Path of the namespace file, for `setns`.
    pub fn ns_path(&self, host: &str) -> Result<PathBuf> {
        Ok(Path::new("/run/netns").join(self.ns(host)?))
    }

    /// Interface name of `host` on `lan`.
    pub fn iface(&self, host: &str, lan: &str) -> Result<String> {
        self.host(host)?
            .nics
            .iter()
            .find(|n| n.lan == lan)
            .map(|n| n.ifname.clone())
            .ok_or_else(|| TopologyError::Invalid(format!("host `{host}` is not on `{lan}`")))
    }

    /// First IPv4 address of `host`.
    pub fn v4(&self, host: &str) -> Result<Ipv4Addr> {
        self.host(host)?
            .nics
            .iter()
            .find_map(|n| n.v4.map(|c| c.addr))
            .ok_or_else(|| TopologyError::Invalid(format!("host `{host}` has no IPv4 address")))
    }

    /// First IPv6 address of `host`.
    pub fn v6(&self, host: &str) -> Result<Ipv6Addr> {
        self.host(host)?
            .nics
            .iter()
            .find_map(|n| n.v6.map(|c| c.addr))
            .ok_or_else(|| TopologyError::Invalid(format!("host `{host}` has no IPv6 address")))
    }

    /// Runs `args` inside `host`'s namespace and returns its output, whatever the exit status.
    pub fn exec(&self, host: &str, args: &[&str]) -> Result<Output> {
        let ns = self.ns(host)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .args(args)
            .stdin(Stdio::null());
        cmd.output()
            .map_err(io_err(format!("running {args:?} in {host}")))
    }

    /// Like [`exec`](Self::exec) but fails unless the command exits 0; returns its stdout.
    pub fn exec_ok(&self, host: &str, args: &[&str]) -> Result<String> {
        let ns = self.ns(host)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]).args(args);
        run_checked(&mut cmd)
    }

    /// Runs a `sh -c` script inside `host`, failing unless it exits 0; returns its stdout.
    pub fn sh(&self, host: &str, script: &str) -> Result<String> {
        self.exec_ok(host, &["sh", "-c", script])
    }

    /// Starts `args` in `host` in its own process group, stdout+stderr going to a log file.
    /// The returned guard kills the process group when dropped.
    pub fn spawn(&self, host: &str, args: &[&str]) -> Result<Spawned> {
        let ns = self.ns(host)?;
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| TopologyError::Invalid("spawn needs a command".into()))?;
        let seq = self.spawn_seq.fetch_add(1, Ordering::Relaxed);
        let base = Path::new(program)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cmd".into());
        let log_path = self.log_dir.join(format!("{host}-{seq}-{base}.log"));
        let log = File::create(&log_path).map_err(io_err(format!("creating {log_path:?}")))?;
        let log2 = log
            .try_clone()
            .map_err(io_err(format!("cloning {log_path:?}")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, program])
            .args(rest)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(io_err(format!("spawning {args:?} in {host}")))?;
        Ok(Spawned {
            child,
            log_path,
            host: host.to_string(),
        })
    }

    /// Addresses currently configured on any interface inside `host`.
    pub fn addrs(&self, host: &str) -> Result<Vec<IpAddr>> {
        let ns = self.ns(host)?;
        let out = run_checked(Command::new("ip").args(["-j", "-n", &ns, "addr", "show"]))?;
        parse_ip_addr_json(&out)
    }

    /// Whether `ip` is configured on any interface (including `lo`) inside `host`.
    pub fn has_addr(&self, host: &str, ip: IpAddr) -> Result<bool> {
        Ok(self.addrs(host)?.contains(&ip))
    }

    /// Reads a sysctl inside `host`.
    pub fn sysctl(&self, host: &str, key: &str) -> Result<String> {
        Ok(self
            .exec_ok(host, &["sysctl", "-n", key])?
            .trim()
            .to_string())
    }

    /// One ICMP echo from `from` to `to`; true if a reply arrived within `timeout`.
    pub fn ping(&self, from: &str, to: IpAddr, timeout: Duration) -> Result<bool> {
        let path = self.ns_path(from)?;
        in_netns(&path, move || icmp_echo(to, timeout))?
    }

    /// One HTTP/1.0 GET of `path` from inside `from`.
    pub fn http_get(
        &self,
        from: &str,
        to: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<HttpReply> {
        let ns_path = self.ns_path(from)?;
        let path = path.to_string();
        in_netns(&ns_path, move || http_get_here(to, &path, timeout))?
    }

    /// Starts a tiny HTTP server in `host` on `[::]:port` (dual stack) answering with the
    /// host's name, so tests can see which real server answered.
    pub fn serve_http(&self, host: &str, port: u16) -> Result<HttpServer> {
        HttpServer::start(&self.ns_path(host)?, host, port)
    }

    /// Directory with the logs of spawned processes.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    fn teardown(&mut self) {
        let panicking = std::thread::panicking();
        // Kill everything still running in our namespaces (spawned or started via exec, e.g.
        // daemons that forked), otherwise a deleted namespace lives on through its processes.
        for ns in &self.created {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let pids = netns_pids(ns);
                if pids.is_empty() || Instant::now() > deadline {
                    break;
                }
                for pid in pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for ns in self.created.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        self.created.clear();
        if panicking {
            dump_logs(&self.log_dir);
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Prints the tail of every spawned process' log: on a failed test that is the evidence.
fn dump_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read(entry.path()) else {
            continue;
        };
        let start = text.len().saturating_sub(4096);
        let tail = String::from_utf8_lossy(text.get(start..).unwrap_or_default());
        eprintln!("---- {} (tail) ----\n{tail}", entry.path().display());
    }
}

fn netns_pids(ns: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p: &i32| p > 1 && p != std::process::id() as i32)
        .collect()
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd`, failing unless it exits 0; returns stdout.
fn run_checked(cmd: &mut Command) -> Result<String> {
    let command = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {command}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(TopologyError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn ip_batch(ns: &str, lines: &[String]) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("running ip -batch in {ns}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let text = lines.join("\n") + "\n";
        stdin
            .write_all(text.as_bytes())
            .map_err(io_err(format!("feeding ip -batch in {ns}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("waiting for ip -batch in {ns}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TopologyError::Command {
            command: format!("ip -n {ns} -batch: {}", lines.join("; ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn sysctl_in(ns: &str, pairs: &[(&str, &str)]) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "sysctl", "-q", "-w"]);
    for (k, v) in pairs {
        cmd.arg(format!("{k}={v}"));
    }
    run_checked(&mut cmd).map(|_| ())
}

/// Extracts every `local` address from `ip -j addr show` output.
pub fn parse_ip_addr_json(text: &str) -> Result<Vec<IpAddr>> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| TopologyError::Protocol(format!("ip -j addr: {e}")))?;
    let mut out = Vec::new();
    for link in value.as_array().into_iter().flatten() {
        let infos = link.get("addr_info").and_then(|v| v.as_array());
        for info in infos.into_iter().flatten() {
            if let Some(ip) = info
                .get("local")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<IpAddr>().ok())
            {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// A process started with [`Topology::spawn`]; its process group is killed on drop.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    log_path: PathBuf,
    host: String,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process wrote so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Sends `signal` to the process group (e.g. SIGTERM for a graceful keepalived stop).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::killpg(pgid, signal).map_err(|e| TopologyError::Io {
            context: format!("signalling process group {pgid}"),
            source: std::io::Error::from(e),
        })
    }

    /// Exit status if the process has ended.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        self.child
            .try_wait()
            .map_err(io_err("waiting for spawned process"))
    }

    /// Waits for the process to end on its own, up to `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(TopologyError::Timeout {
                    what: format!("process {} to exit", self.child.id()),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process group and reaps the process.
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(TopologyError::Timeout {
                what: what.to_string(),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a fresh thread that has entered the network namespace at `ns_path`; sockets
/// created by `f` belong to that namespace. The calling thread's namespace is untouched.
pub fn in_netns<T: Send + 'static>(
    ns_path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let handle = spawn_in_netns(ns_path, f)?;
    match handle.join() {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(TopologyError::Protocol(
            "thread did not enter namespace".into(),
        )),
        Err(_) => Err(TopologyError::Protocol(
            "thread inside namespace panicked".into(),
        )),
    }
}

/// Starts a thread that enters `ns_path` and then runs `f`; returns once the switch succeeded.
/// The thread yields `None` only when entering failed, which this function already reported.
pub fn spawn_in_netns<T: Send + 'static>(
    ns_path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<Option<T>>> {
    let file = File::open(ns_path).map_err(io_err(format!("opening {ns_path:?}")))?;
    let (tx, rx) = mpsc::channel::<std::result::Result<(), nix::Error>>();
    let handle = std::thread::spawn(move || {
        match nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
            Ok(()) => {
                let _ = tx.send(Ok(()));
                Some(f())
            }
            // Never run `f` in the wrong namespace.
            Err(e) => {
                let _ = tx.send(Err(e));
                None
            }
        }
    });
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(TopologyError::Io {
            context: format!("setns {ns_path:?}"),
            source: std::io::Error::from(e),
        }),
        Err(_) => Err(TopologyError::Protocol("namespace thread died".into())),
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic helpers
// ---------------------------------------------------------------------------------------------

fn icmp_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        if let [a, b] = c {
            sum += u32::from(u16::from_be_bytes([*a, *b]));
        }
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds an ICMP (v4 type 8 / v6 type 128) echo request; the kernel fills the v6 checksum.
fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut pkt = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"kube-lvs-topology");
    if !v6 {
        let sum = icmp_checksum(&pkt);
        if let Some(slot) = pkt.get_mut(2..4) {
            slot.copy_from_slice(&sum.to_be_bytes());
        }
    }
    pkt
}

/// True if `buf` (an ICMP message, v4 with its IP header) is the echo reply for id/seq.
fn is_echo_reply(v6: bool, buf: &[u8], id: u16, seq: u16) -> bool {
    let icmp = if v6 {
        buf
    } else {
        let ihl = buf.first().map(|b| usize::from(b & 0x0f) * 4).unwrap_or(0);
        buf.get(ihl..).unwrap_or_default()
    };
    let want_type = if v6 { 129 } else { 0 };
    matches!(icmp, [t, 0, _, _, i0, i1, s0, s1, ..]
        if *t == want_type && u16::from_be_bytes([*i0, *i1]) == id
            && u16::from_be_bytes([*s0, *s1]) == seq)
}

fn icmp_echo(to: IpAddr, timeout: Duration) -> Result<bool> {
    use socket2::{Domain, Protocol, Socket, Type};
    static SEQ: AtomicU16 = AtomicU16::new(1);
    let v6 = to.is_ipv6();
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let sock = Socket::new(domain, Type::RAW, Some(proto)).map_err(io_err("raw ICMP socket"))?;
    let id = (std::process::id() & 0xffff) as u16;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    // A connected raw socket only receives packets whose source is `to`.
    sock.connect(&SocketAddr::new(to, 0).into())
        .map_err(io_err(format!("connecting raw socket to {to}")))?;
    sock.send(&echo_request(v6, id, seq))
        .map_err(io_err(format!("sending ICMP echo to {to}")))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        sock.set_read_timeout(Some(left))
            .map_err(io_err("setting ICMP timeout"))?;
        match (&sock).read(&mut buf) {
            Ok(n) => {
                if is_echo_reply(v6, buf.get(..n).unwrap_or_default(), id, seq) {
                    return Ok(true);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(format!("receiving ICMP from {to}"))(e)),
        }
    }
}

/// Status and body of one HTTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

/// Parses a complete HTTP/1.x response (as read until the server closed the connection).
pub fn parse_http_reply(raw: &[u8]) -> Result<HttpReply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| TopologyError::Protocol(format!("no header end in {text:?}")))?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(TopologyError::Protocol(format!(
            "bad status line {status_line:?}"
        )));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| TopologyError::Protocol(format!("bad status line {status_line:?}")))?;
    Ok(HttpReply {
        status,
        body: body.to_string(),
    })
}

fn http_get_here(to: SocketAddr, path: &str, timeout: Duration) -> Result<HttpReply> {
    let mut stream =
        TcpStream::connect_timeout(&to, timeout).map_err(io_err(format!("connecting to {to}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(io_err("setting socket timeouts"))?;
    let host = match to {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: kube-lvs-e2e\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(io_err(format!("sending request to {to}")))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(chunk.get(..n).unwrap_or_default());
                if raw.len() > 1 << 20 {
                    return Err(TopologyError::Protocol("reply larger than 1 MiB".into()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(format!("reading reply from {to}"))(e)),
        }
    }
    parse_http_reply(&raw)
}

struct ServerState {
    name: String,
    status: AtomicU16,
    hits: AtomicU64,
    stop: AtomicBool,
}

/// A minimal HTTP server running on a thread inside a namespace; stops when dropped.
pub struct HttpServer {
    state: Arc<ServerState>,
    port: u16,
    thread: Option<JoinHandle<Option<()>>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("name", &self.state.name)
            .field("port", &self.port)
            .finish()
    }
}

impl HttpServer {
    /// Serves on `[::]:port` (dual stack) inside `ns_path`; every reply body is `"<name>\n"`.
    pub fn start(ns_path: &Path, name: &str, port: u16) -> Result<HttpServer> {
        let state = Arc::new(ServerState {
            name: name.to_string(),
            status: AtomicU16::new(200),
            hits: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel::<std::io::Result<u16>>();
        let thread_state = state.clone();
        let thread = spawn_in_netns(ns_path, move || {
            let bound = TcpListener::bind(("::", port))
                .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    let port = l.local_addr()?.port();
                    Ok((l, port))
                });
            match bound {
                Ok((listener, port)) => {
                    let _ = tx.send(Ok(port));
                    accept_loop(listener, thread_state);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| TopologyError::Protocol("HTTP server thread did not start".into()))?
            .map_err(io_err(format!(
                "binding HTTP server on port {port} in {name}"
            )))?;
        Ok(HttpServer {
            state,
            port,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Status code for subsequent replies (e.g. 503 to fail an HTTP health check).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    /// Number of requests answered so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::Relaxed)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<ServerState>) {
    while !state.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let state = state.clone();
                std::thread::spawn(move || serve_one(stream, &state));
            }
            // Non-blocking accept lets the loop notice `stop` promptly.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve_one(mut stream: TcpStream, state: &ServerState) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = Vec::new();
    let mut chunk = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
    let status = state.status.load(Ordering::Relaxed);
    let reason = if status == 200 { "OK" } else { "Status" };
    let body = format!("{}\n", state.name);
    let reply = format!(
        "HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    state.hits.fetch_add(1, Ordering::Relaxed);
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

/// The classic LVS scenario: one LAN with a client, two directors and two real servers.
pub mod lvs_lan {
    use super::{HostSpec, TopologySpec};
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub const LAN: &str = "lan";
    pub const CLIENT: &str = "client";
    pub const DIRECTOR1: &str = "director1";
    pub const DIRECTOR2: &str = "director2";
    pub const RS1: &str = "rs1";
    pub const RS2: &str = "rs2";

    pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    pub const DIRECTOR1_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    pub const DIRECTOR2_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
    pub const RS1_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 21);
    pub const RS2_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 22);
    /// Free for tests to use as the virtual IP.
    pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

    pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    pub const DIRECTOR1_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x2);
    pub const DIRECTOR2_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x3);
    pub const RS1_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x21);
    pub const RS2_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x22);
    pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

    fn host(name: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> HostSpec {
        HostSpec::new(name).nic_dual(LAN, &format!("{v4}/24"), &format!("{v6}/64"))
    }

    /// The description behind [`super::Topology::lvs_lan`]; extend it before building if a
    /// test needs more (extra sysctls, another LAN).
    pub fn spec() -> TopologySpec {
        TopologySpec::new("lvs")
            .lan(LAN)
            .host(host(CLIENT, CLIENT_V4, CLIENT_V6))
            .host(host(DIRECTOR1, DIRECTOR1_V4, DIRECTOR1_V6).sysctl("net.ipv4.ip_forward", "1"))
            .host(host(DIRECTOR2, DIRECTOR2_V4, DIRECTOR2_V6).sysctl("net.ipv4.ip_forward", "1"))
            .host(host(RS1, RS1_V4, RS1_V6))
            .host(host(RS2, RS2_V4, RS2_V6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_hosts() -> TopologySpec {
        TopologySpec::new("t")
            .lan("lan")
            .host(HostSpec::new("a").nic_dual("lan", "192.0.2.1/24", "2001:db8::1/64"))
            .host(HostSpec::new("b").nic("lan", "192.0.2.2/24"))
    }

    fn invalid(spec: &TopologySpec) -> String {
        match spec.validate() {
            Err(TopologyError::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn naming_is_unique_per_instance_and_parseable() {
        let a = Naming::unique("lvs").unwrap();
        let b = Naming::unique("lvs").unwrap();
        assert_ne!(a.prefix(), b.prefix());
        assert!(
            a.prefix()
                .starts_with(&format!("lvs-{}-", std::process::id()))
        );
        assert_eq!(
            Naming::new("lvs", 42, 7).unwrap().namespace("rs1"),
            "lvs-42-7-rs1"
        );
        assert_eq!(
            Naming::new("lvs", 42, 7).unwrap().switch_namespace(),
            "lvs-42-7.switch"
        );
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        assert!(Naming::port(9999, 99).len() <= 15);
        assert!(Naming::bridge(99_999).len() <= 15);
    }

    #[test]
    fn bad_tags_are_rejected() {
        for tag in ["", "UPPER", "has-dash", "toolongtag"] {
            assert!(Naming::new(tag, 1, 1).is_err(), "{tag}");
        }
    }

    #[test]
    fn valid_spec_resolves_interfaces_in_nic_order() {
        let spec = TopologySpec::new("t").lan("a").lan("b").host(
            HostSpec::new("r")
                .nic("a", "192.0.2.1/24")
                .nic("b", "198.51.100.1/24"),
        );
        let r = spec.validate().unwrap();
        let nics = &r.hosts[0].nics;
        assert_eq!(nics[0].ifname, "eth0");
        assert_eq!(nics[1].ifname, "eth1");
        assert_eq!(nics[1].lan, "b");
        assert_eq!(
            nics[1].v4,
            Some(V4Cidr {
                addr: Ipv4Addr::new(198, 51, 100, 1),
                prefix: 24
            })
        );
    }

    #[test]
    fn duplicate_hosts_and_lans_are_rejected() {
        let spec = two_hosts().host(HostSpec::new("a").nic("lan", "192.0.2.9/24"));
        assert!(invalid(&spec).contains("duplicate host `a`"));
        let spec = two_hosts().lan("lan");
        assert!(invalid(&spec).contains("duplicate LAN"));
    }

    #[test]
    fn unknown_lan_is_rejected() {
        let spec = two_hosts().host(HostSpec::new("c").nic("wan", "192.0.2.3/24"));
        assert!(invalid(&spec).contains("unknown LAN `wan`"));
    }

    #[test]
    fn duplicate_addresses_are_rejected() {
        let spec = two_hosts().host(HostSpec::new("c").nic("lan", "192.0.2.2/24"));
        assert!(invalid(&spec).contains("192.0.2.2"));
    }

    #[test]
    fn only_documentation_ranges_are_accepted() {
        // Build private/real ranges from numbers so no such literal sits in the source.
        let private = format!("{}.{}.0.1/8", 10, 0);
        for bad in [private.as_str(), "8.8.8.8/32", "2001:db9::1/64"] {
            let nic = if bad.contains(':') {
                NicSpec {
                    lan: "lan".into(),
                    v4: None,
                    v6: Some(bad.into()),
                }
            } else {
                NicSpec {
                    lan: "lan".into(),
                    v4: Some(bad.into()),
                    v6: None,
                }
            };
            let spec = two_hosts().host(HostSpec::new("c").nic_spec(nic));
            assert!(invalid(&spec).contains("outside"), "{bad}");
        }
        assert!(is_documentation_addr("203.0.113.255".parse().unwrap()));
        assert!(is_documentation_addr("2001:db8:ffff::1".parse().unwrap()));
        assert!(!is_documentation_addr("192.0.3.1".parse().unwrap()));
    }

    #[test]
    fn malformed_cidrs_are_rejected() {
        for bad in [
            "192.0.2.1",
            "192.0.2.1/33",
            "192.0.2.1/x",
            "192.0.2/24",
            "192.0.2.1/0",
        ] {
            assert!(parse_v4_cidr(bad).is_err(), "{bad}");
        }
        assert!(parse_v6_cidr("2001:db8::1/129").is_err());
        assert!(parse_v6_cidr("2001:db8::1/64").is_ok());
    }

    #[test]
    fn bad_host_names_and_sysctls_are_rejected() {
        for name in ["", "Client", "1st", "a_b", "a.b"] {
            let spec = TopologySpec::new("t").lan("lan").host(HostSpec::new(name));
            assert!(invalid(&spec).contains("host name"), "{name:?}");
        }
        let spec = two_hosts().host(HostSpec::new("c").sysctl("net.ipv4.ip_forward", "1\n2"));
        assert!(invalid(&spec).contains("bad sysctl"));
        assert!(invalid(&TopologySpec::new("t")).contains("no hosts"));
    }

    #[test]
    fn gateway_resolves_to_address_on_shared_subnet() {
        let spec = TopologySpec::new("t")
            .lan("front")
            .lan("back")
            .host(
                HostSpec::new("router")
                    .nic_dual("front", "203.0.113.1/24", "2001:db8:1::1/64")
                    .nic_dual("back", "198.51.100.1/24", "2001:db8:2::1/64"),
            )
            .host(
                HostSpec::new("rs")
                    .nic_dual("back", "198.51.100.5/24", "2001:db8:2::5/64")
                    .gateway("router"),
            );
        let r = spec.validate().unwrap();
        let rs = r.hosts.iter().find(|h| h.name == "rs").unwrap();
        assert_eq!(rs.gateway_v4, Some(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(rs.gateway_v6, Some("2001:db8:2::1".parse().unwrap()));
        let lines = host_batch(rs);
        assert!(lines.contains(&"route add default via 198.51.100.1".to_string()));
        assert!(lines.contains(&"-6 route add default via 2001:db8:2::1".to_string()));
    }

    #[test]
    fn bad_gateways_are_rejected() {
        let spec = two_hosts().host(
            HostSpec::new("c")
                .nic("lan", "192.0.2.3/24")
                .gateway("nobody"),
        );
        assert!(invalid(&spec).contains("not a host"));
        let spec = TopologySpec::new("t")
            .lan("x")
            .lan("y")
            .host(HostSpec::new("a").nic("x", "192.0.2.1/24"))
            .host(HostSpec::new("b").nic("y", "198.51.100.1/24").gateway("a"));
        assert!(invalid(&spec).contains("shares no subnet"));
        let spec = two_hosts().host(HostSpec::new("c").nic("lan", "192.0.2.3/24").gateway("c"));
        assert!(invalid(&spec).contains("own gateway"));
    }

    #[test]
    fn switch_batch_creates_bridges_then_ports() {
        let r = two_hosts().validate().unwrap();
        let naming = Naming::new("t", 1, 2).unwrap();
        let lines = switch_batch(&r, &naming);
        assert!(lines[1].starts_with("link add name br0 type bridge"));
        assert!(
            lines.contains(&"link add h0n0 type veth peer name eth0 netns t-1-2-a".to_string())
        );
        assert!(lines.contains(&"link set h1n0 master br0 up".to_string()));
    }

    #[test]
    fn host_batch_adds_v6_without_dad() {
        let r = two_hosts().validate().unwrap();
        let lines = host_batch(&r.hosts[0]);
        assert!(lines.contains(&"addr add 192.0.2.1/24 dev eth0".to_string()));
        assert!(lines.contains(&"addr add 2001:db8::1/64 dev eth0 nodad".to_string()));
        assert!(lines.contains(&"link set eth0 up".to_string()));
    }

    #[test]
    fn ip_json_addresses_are_extracted() {
        let json = r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1"}]},
            {"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.1"},
            {"family":"inet6","local":"2001:db8::1"}]},{"ifname":"x"}]"#;
        let addrs = parse_ip_addr_json(json).unwrap();
        assert_eq!(addrs.len(), 3);
        assert!(addrs.contains(&"2001:db8::1".parse().unwrap()));
        assert!(parse_ip_addr_json("not json").is_err());
    }

    #[test]
    fn icmp_packets_round_trip() {
        let req = echo_request(false, 0x1234, 7);
        // A correct checksum makes the whole message sum to zero.
        assert_eq!(icmp_checksum(&req), 0);
        let mut reply = vec![0x45u8; 1];
        reply.extend_from_slice(&[0; 19]);
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert!(is_echo_reply(false, &reply, 0x1234, 7));
        assert!(!is_echo_reply(false, &reply, 0x1234, 8));
        assert!(!is_echo_reply(false, &reply[..10], 0x1234, 7));
        assert!(is_echo_reply(true, &[129, 0, 0, 0, 0, 1, 0, 2], 1, 2));
        assert!(!is_echo_reply(true, &[128, 0, 0, 0, 0, 1, 0, 2], 1, 2));
        assert!(!is_echo_reply(true, &[], 1, 2));
    }

    #[test]
    fn http_replies_parse() {
        let r = parse_http_reply(b"HTTP/1.0 503 Status\r\nA: b\r\n\r\nrs1\n").unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "rs1\n");
        assert!(parse_http_reply(b"garbage").is_err());
        assert!(parse_http_reply(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn wait_until_times_out_and_succeeds() {
        let mut n = 0;
        assert!(
            wait_until(Duration::from_secs(5), "counter", || {
                n += 1;
                n >= 3
            })
            .is_ok()
        );
        assert!(matches!(
            wait_until(Duration::from_millis(50), "never", || false),
            Err(TopologyError::Timeout { .. })
        ));
    }

    #[test]
    fn lvs_lan_spec_is_valid() {
        let r = lvs_lan::spec().validate().unwrap();
        let names: Vec<&str> = r.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["client", "director1", "director2", "rs1", "rs2"]);
        for h in &r.hosts {
            assert!(h.nics[0].v4.is_some() && h.nics[0].v6.is_some());
        }
    }
}
