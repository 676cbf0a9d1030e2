//! Data-plane tests against the real IPVS kernel, run inside the test VM by
//! `e2e/tools/vm-suite.sh vm_dataplane`. Each test builds its own namespace topology, runs the real
//! `node-agent apply` binary inside the director and real-server namespaces, and sends traffic
//! from a client namespace through the VIP.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use kube_lvs_e2e::topology::{
    HostSpec, HttpServer, Topology, TopologySpec, in_netns, lvs_lan, wait_until,
};
use kube_lvs_e2e::vm;

const AGENT: &str = env!("CARGO_BIN_EXE_node-agent");
const REQUESTS: usize = 8;
static SEQ: AtomicU32 = AtomicU32::new(0);

fn require_vm() -> anyhow::Result<()> {
    ensure!(
        vm::in_vm() && vm::ipvs_available(),
        "vm_dataplane runs inside the test VM only: e2e/tools/vm-suite.sh vm_dataplane"
    );
    Ok(())
}

/// `ops=N kernel_ops=K failed=F conflicts=C` printed by `node-agent apply`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    ops: usize,
    kernel_ops: usize,
    failed: usize,
    conflicts: usize,
}

fn parse_summary(stdout: &str) -> anyhow::Result<Summary> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ops="))
        .with_context(|| format!("no summary line in {stdout:?}"))?;
    let mut s = Summary::default();
    for field in line.split_whitespace() {
        let (k, v) = field.split_once('=').context("summary field")?;
        let v: usize = v.parse().context("summary value")?;
        match k {
            "ops" => s.ops = v,
            "kernel_ops" => s.kernel_ops = v,
            "failed" => s.failed = v,
            "conflicts" => s.conflicts = v,
            _ => {}
        }
    }
    Ok(s)
}

/// One agent "installation" on a host of the topology: its own state file and desired files.
/// Every `apply` is a fresh process, as after an agent restart.
struct Agent<'a> {
    topo: &'a Topology,
    host: String,
    dir: PathBuf,
}

impl<'a> Agent<'a> {
    fn new(topo: &'a Topology, host: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "kube-lvs-dp-{}-{}-{host}",
            topo.prefix(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            topo,
            host: host.to_string(),
            dir,
        })
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let state = self.dir.join("state.json");
        let state = state.to_string_lossy();
        let mut full = vec![AGENT, "--state", &state];
        full.extend_from_slice(args);
        Ok(self.topo.exec(&self.host, &full)?)
    }

    fn apply_raw(&self, yaml: &str) -> anyhow::Result<(Summary, String)> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let file = self.dir.join(format!("desired-{n}.yaml"));
        std::fs::write(&file, yaml)?;
        let out = self.run(&["apply", "--desired", &file.to_string_lossy()])?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let summary = parse_summary(&stdout)
            .with_context(|| format!("agent on {}: stderr {stderr}", self.host))?;
        Ok((summary, format!("{stdout}\n{stderr}")))
    }

    /// Apply and require that nothing failed.
    fn apply(&self, yaml: &str) -> anyhow::Result<Summary> {
        let (s, log) = self.apply_raw(yaml)?;
        ensure!(s.failed == 0, "agent on {} failed ops:\n{log}", self.host);
        Ok(s)
    }

    fn dump(&self) -> anyhow::Result<String> {
        let out = self.run(&["dump"])?;
        ensure!(out.status.success(), "dump failed: {:?}", out);
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ipvsadm(topo: &Topology, host: &str) -> anyhow::Result<String> {
    Ok(topo.exec_ok(host, &["ipvsadm", "-Sn"])?)
}

fn count_answers(
    topo: &Topology,
    client: &str,
    vip: SocketAddr,
    n: usize,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let reply = topo
            .http_get(client, vip, "/", Duration::from_secs(5))
            .with_context(|| format!("GET http://{vip}/ from {client}"))?;
        ensure!(reply.status == 200, "status {} from {vip}", reply.status);
        *seen.entry(reply.body.trim().to_string()).or_insert(0) += 1;
    }
    Ok(seen)
}

/// Desired state of a director with one TCP service `vip:port` (rr) over `dests`.
fn director_yaml(
    iface: &str,
    vip: IpAddr,
    port: u16,
    dests: &[(IpAddr, u16, &str, u32)],
    sysctls: &[(&str, &str)],
) -> String {
    let mut y =
        format!("services:\n  - key: tcp {vip}:{port}\n    scheduler: rr\n    destinations:\n");
    for (addr, p, fwd, w) in dests {
        y += &format!("      - {{addr: {addr}, port: {p}, forwarding: {fwd}, weight: {w}}}\n");
    }
    y += &format!(
        "addresses:\n  - {{ifname: {iface}, addr: {vip}, prefix_len: 32, label: \"{iface}:kl\"}}\n"
    );
    y += &sysctls_yaml(sysctls);
    y
}

fn sysctls_yaml(sysctls: &[(&str, &str)]) -> String {
    if sysctls.is_empty() {
        return String::new();
    }
    let mut y = "sysctls:\n".to_string();
    for (k, v) in sysctls {
        y += &format!("  {k}: \"{v}\"\n");
    }
    y
}

/// Real server for DR (`holder` = lo) or TUN (`holder` = tunl0, plus rp_filter off).
fn real_server_yaml(holder: &str, vip: IpAddr) -> String {
    let mut sysctls = vec![];
    for iface in ["all", holder, "eth0"] {
        sysctls.push((format!("net.ipv4.conf.{iface}.arp_ignore"), "1"));
        sysctls.push((format!("net.ipv4.conf.{iface}.arp_announce"), "2"));
    }
    if holder == "tunl0" {
        sysctls.push(("net.ipv4.conf.all.rp_filter".to_string(), "0"));
        sysctls.push(("net.ipv4.conf.tunl0.rp_filter".to_string(), "0"));
    }
    let pairs: Vec<(&str, &str)> = sysctls.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    format!(
        "addresses:\n  - {{ifname: {holder}, addr: {vip}, prefix_len: 32, label: \"{holder}:kl\"}}\n{}",
        sysctls_yaml(&pairs)
    )
}

fn vip() -> IpAddr {
    IpAddr::V4(lvs_lan::VIP_V4)
}

fn rs(n: u8) -> IpAddr {
    IpAddr::V4(if n == 1 {
        lvs_lan::RS1_V4
    } else {
        lvs_lan::RS2_V4
    })
}

/// DR or TUN on the classic one-LAN topology: agent on director1 and both real servers.
fn one_lan_service<'t>(
    topo: &'t Topology,
    fwd: &str,
    holder: &str,
) -> anyhow::Result<(Vec<Agent<'t>>, Vec<HttpServer>)> {
    let director = Agent::new(topo, lvs_lan::DIRECTOR1)?;
    let d = director.apply(&director_yaml(
        "eth0",
        vip(),
        80,
        &[(rs(1), 80, fwd, 1), (rs(2), 80, fwd, 1)],
        &[("net.ipv4.vs.expire_nodest_conn", "1")],
    ))?;
    ensure!(d.kernel_ops >= 4, "director ops: {d:?}");
    let mut agents = vec![director];
    let mut servers = vec![];
    for host in [lvs_lan::RS1, lvs_lan::RS2] {
        let a = Agent::new(topo, host)?;
        a.apply(&real_server_yaml(holder, vip()))?;
        ensure!(
            topo.sysctl(host, &format!("net.ipv4.conf.{holder}.arp_ignore"))? == "1",
            "arp_ignore not set on {host}"
        );
        servers.push(topo.serve_http(host, 80)?);
        agents.push(a);
    }
    Ok((agents, servers))
}

#[test]
fn dr_forwards_traffic_with_vip_on_real_server_lo() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let (agents, _servers) = one_lan_service(&topo, "dr", "lo")?;
    let rules = ipvsadm(&topo, lvs_lan::DIRECTOR1)?;
    ensure!(
        rules.contains("-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g"),
        "{rules}"
    );
    let seen = count_answers(&topo, lvs_lan::CLIENT, SocketAddr::new(vip(), 80), REQUESTS)?;
    ensure!(
        seen.get("rs1") == Some(&(REQUESTS / 2)) && seen.get("rs2") == Some(&(REQUESTS / 2)),
        "rr over DR should split evenly: {seen:?}"
    );
    // Second pass of every agent: nothing to do.
    for a in &agents {
        let s = a.apply(&std::fs::read_to_string(latest_desired(a)?)?)?;
        ensure!(s == Summary::default(), "re-apply on {}: {s:?}", a.host);
    }
    Ok(())
}

fn latest_desired(a: &Agent<'_>) -> anyhow::Result<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&a.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    files.pop().context("no desired file")
}

#[test]
fn tun_forwards_traffic_over_ipip() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let (_agents, _servers) = one_lan_service(&topo, "tunnel", "tunl0")?;
    let rules = ipvsadm(&topo, lvs_lan::DIRECTOR1)?;
    ensure!(
        rules.contains("-r 192.0.2.21:80 -i"),
        "expected tunnel destinations: {rules}"
    );
    for host in [lvs_lan::RS1, lvs_lan::RS2] {
        ensure!(topo.sysctl(host, "net.ipv4.conf.tunl0.rp_filter")? == "0");
        let addrs = topo.exec_ok(host, &["ip", "-4", "addr", "show", "dev", "tunl0"])?;
        ensure!(
            addrs.contains("192.0.2.100/32") && addrs.contains("tunl0:kl"),
            "{addrs}"
        );
    }
    let seen = count_answers(&topo, lvs_lan::CLIENT, SocketAddr::new(vip(), 80), REQUESTS)?;
    ensure!(
        seen.len() == 2 && seen.values().all(|n| *n == REQUESTS / 2),
        "{seen:?}"
    );
    Ok(())
}

#[test]
fn nat_forwards_traffic_through_director_gateway() -> anyhow::Result<()> {
    require_vm()?;
    let topo = TopologySpec::new("nat")
        .lan("front")
        .lan("back")
        .host(HostSpec::new("client").nic("front", "203.0.113.10/24"))
        .host(
            HostSpec::new("director")
                .nic("front", "203.0.113.2/24")
                .nic("back", "198.51.100.1/24"),
        )
        .host(
            HostSpec::new("rs1")
                .nic("back", "198.51.100.21/24")
                .gateway("director"),
        )
        .host(
            HostSpec::new("rs2")
                .nic("back", "198.51.100.22/24")
                .gateway("director"),
        )
        .build_topology()?;
    let vip: IpAddr = "203.0.113.100".parse()?;
    let director = Agent::new(&topo, "director")?;
    let yaml = director_yaml(
        "eth0",
        vip,
        80,
        &[
            ("198.51.100.21".parse()?, 8080, "nat", 1),
            ("198.51.100.22".parse()?, 8080, "nat", 1),
        ],
        &[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.default.send_redirects", "0"),
            ("net.ipv4.conf.eth1.send_redirects", "0"),
        ],
    );
    director.apply(&yaml)?;
    ensure!(topo.sysctl("director", "net.ipv4.ip_forward")? == "1");
    let _s1 = topo.serve_http("rs1", 8080)?;
    let _s2 = topo.serve_http("rs2", 8080)?;
    let seen = count_answers(&topo, "client", SocketAddr::new(vip, 80), REQUESTS)?;
    ensure!(
        seen.get("rs1") == Some(&(REQUESTS / 2)) && seen.get("rs2") == Some(&(REQUESTS / 2)),
        "{seen:?}"
    );
    // Removing everything restores the sysctls the agent changed and leaves no trace.
    let s = director.apply("{}")?;
    ensure!(s.kernel_ops > 0);
    ensure!(topo.sysctl("director", "net.ipv4.conf.eth1.send_redirects")? == "1");
    ensure!(!topo.has_addr("director", vip)?);
    ensure!(
        !ipvsadm(&topo, "director")?.contains("203.0.113.100"),
        "service left behind"
    );
    Ok(())
}

#[test]
fn fwmark_persistent_service_spans_two_ports() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let director = Agent::new(&topo, lvs_lan::DIRECTOR1)?;
    let v = vip();
    let yaml = format!(
        "services:\n  - key: fwmark 1\n    scheduler: rr\n    persistence: {{timeout: 300}}\n    destinations:\n      - {{addr: {}, port: 0, forwarding: dr}}\n      - {{addr: {}, port: 0, forwarding: dr}}\n\
         addresses:\n  - {{ifname: eth0, addr: {v}, prefix_len: 32, label: \"eth0:kl\"}}\n\
         marks:\n  - {{vip: {v}, protocol: tcp, ports: [80, 443], mark: 1}}\n",
        rs(1),
        rs(2)
    );
    director.apply(&yaml)?;
    let nft = topo.exec_ok(
        lvs_lan::DIRECTOR1,
        &["nft", "list", "table", "inet", "kube_lvs"],
    )?;
    ensure!(nft.contains("tcp dport { 80, 443 }"), "{nft}");
    let mut rs_agents = vec![];
    let mut servers = vec![];
    for host in [lvs_lan::RS1, lvs_lan::RS2] {
        let a = Agent::new(&topo, host)?;
        a.apply(&real_server_yaml("lo", v))?;
        rs_agents.push(a);
        servers.push(topo.serve_http(host, 80)?);
        servers.push(topo.serve_http(host, 443)?);
    }
    let mut seen = count_answers(&topo, lvs_lan::CLIENT, SocketAddr::new(v, 80), 4)?;
    for (k, n) in count_answers(&topo, lvs_lan::CLIENT, SocketAddr::new(v, 443), 4)? {
        *seen.entry(k).or_insert(0) += n;
    }
    // Persistence across both ports: one real server took all 8 requests.
    ensure!(
        seen.len() == 1 && seen.values().next() == Some(&8),
        "{seen:?}"
    );
    // Marks follow the desired state: removing the service removes our table, nothing else.
    director.apply("{}")?;
    let tables = topo.exec_ok(lvs_lan::DIRECTOR1, &["nft", "list", "tables"])?;
    ensure!(!tables.contains("kube_lvs"), "{tables}");
    Ok(())
}

/// A TCP echo server on `0.0.0.0:port` inside `ns`, on a thread that stops when dropped.
struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<()>>>,
}

impl EchoServer {
    fn start(ns: &std::path::Path, port: u16) -> anyhow::Result<Self> {
        let listener = in_netns(ns, move || TcpListener::bind(("0.0.0.0", port)))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // The socket already belongs to the namespace; the thread only serves it.
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<TcpStream> = Vec::new();
            let mut buf = [0u8; 256];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((c, _)) = listener.accept()
                    && c.set_nonblocking(true).is_ok()
                {
                    conns.push(c);
                }
                conns.retain_mut(|c| match c.read(&mut buf) {
                    Ok(0) => false,
                    Ok(n) => c.write_all(buf.get(..n).unwrap_or_default()).is_ok(),
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
                std::thread::sleep(Duration::from_millis(5));
            }
            Some(())
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo(stream: &mut TcpStream, msg: &[u8]) -> anyhow::Result<()> {
    stream.write_all(msg)?;
    let mut buf = vec![0u8; msg.len()];
    stream.read_exact(&mut buf)?;
    ensure!(buf == msg, "echo mismatch: {buf:?}");
    Ok(())
}

#[test]
fn restart_adopts_state_with_zero_ops_and_keeps_connection() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let director = Agent::new(&topo, lvs_lan::DIRECTOR1)?;
    let director_yaml = director_yaml(
        "eth0",
        vip(),
        9000,
        &[(rs(1), 9000, "dr", 1)],
        &[("net.ipv4.vs.expire_nodest_conn", "1")],
    );
    director.apply(&director_yaml)?;
    let rs1 = Agent::new(&topo, lvs_lan::RS1)?;
    let rs_yaml = real_server_yaml("lo", vip());
    rs1.apply(&rs_yaml)?;
    let _echo = EchoServer::start(&topo.ns_path(lvs_lan::RS1)?, 9000)?;

    let target = SocketAddr::new(vip(), 9000);
    let ns = topo.ns_path(lvs_lan::CLIENT)?;
    let mut stream: Option<TcpStream> = None;
    wait_until(
        Duration::from_secs(15),
        "echo server through the VIP",
        || {
            let ns = ns.clone();
            stream = in_netns(&ns, move || {
                TcpStream::connect_timeout(&target, Duration::from_secs(1)).ok()
            })
            .ok()
            .flatten();
            stream.is_some()
        },
    )?;
    let mut stream = stream.context("connected")?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    echo(&mut stream, b"before restart\n")?;

    // New agent processes with the same desired state and state file: adoption, zero ops.
    for (agent, yaml) in [(&director, &director_yaml), (&rs1, &rs_yaml)] {
        let s = agent.apply(yaml)?;
        ensure!(
            s == Summary::default(),
            "restart of agent on {} did work: {s:?}",
            agent.host
        );
    }
    let conns = topo.exec_ok(lvs_lan::DIRECTOR1, &["ipvsadm", "-Lnc"])?;
    ensure!(conns.contains("ESTABLISHED"), "{conns}");
    echo(&mut stream, b"after restart\n")?;
    Ok(())
}

#[test]
fn foreign_ipvs_service_is_left_untouched() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let d = lvs_lan::DIRECTOR1;
    // kube-proxy-like services made by someone else.
    topo.sh(
        d,
        "ipvsadm -A -t 192.0.2.200:80 -s rr && ipvsadm -a -t 192.0.2.200:80 -r 192.0.2.21:80 -g -w 3 \
         && ipvsadm -A -t 192.0.2.100:443 -s wlc",
    )?;
    let before = ipvsadm(&topo, d)?;
    let director = Agent::new(&topo, d)?;
    // Ours on :80, plus a clash with the foreign :443.
    let mut yaml = director_yaml("eth0", vip(), 80, &[(rs(1), 80, "dr", 1)], &[]);
    yaml = yaml.replacen(
        "addresses:",
        &format!(
            "  - key: tcp {}:443\n    scheduler: rr\n    destinations:\n      - {{addr: {}, port: 443, forwarding: dr}}\naddresses:",
            vip(),
            rs(2)
        ),
        1,
    );
    let (s, log) = director.apply_raw(&yaml)?;
    ensure!(s.conflicts == 1 && s.failed == 0, "{s:?}\n{log}");
    ensure!(
        log.contains("not managed by kube-lvs"),
        "conflict not reported: {log}"
    );
    let after = ipvsadm(&topo, d)?;
    for line in before.lines() {
        ensure!(
            after.contains(line),
            "foreign rule changed: {line}\n{after}"
        );
    }
    ensure!(after.contains("-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g"));
    let dump = director.dump()?;
    ensure!(
        dump.contains("tcp 192.0.2.200:80") && dump.contains("tcp 192.0.2.100:80"),
        "{dump}"
    );
    // Dropping everything removes only ours.
    director.apply("{}")?;
    let last = ipvsadm(&topo, d)?;
    ensure!(
        last.trim() == before.trim(),
        "before:\n{before}\nafter:\n{last}"
    );
    Ok(())
}

#[test]
fn weight_change_is_a_single_edit() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let director = Agent::new(&topo, lvs_lan::DIRECTOR1)?;
    let mk = |w: u32| {
        director_yaml(
            "eth0",
            vip(),
            80,
            &[(rs(1), 80, "dr", w), (rs(2), 80, "dr", 1)],
            &[],
        )
    };
    director.apply(&mk(1))?;
    let s = director.apply(&mk(7))?;
    ensure!(
        s == Summary {
            ops: 1,
            kernel_ops: 1,
            failed: 0,
            conflicts: 0
        },
        "{s:?}"
    );
    let rules = ipvsadm(&topo, lvs_lan::DIRECTOR1)?;
    ensure!(
        rules.contains("-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g -w 7"),
        "{rules}"
    );
    // Forwarding change is an edit too.
    let tun = director_yaml(
        "eth0",
        vip(),
        80,
        &[(rs(1), 80, "tunnel", 7), (rs(2), 80, "dr", 1)],
        &[],
    );
    let s = director.apply(&tun)?;
    ensure!(s.kernel_ops == 1, "{s:?}");
    Ok(())
}

#[test]
fn unknown_interface_is_a_typed_failure_not_a_crash() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let director = Agent::new(&topo, lvs_lan::DIRECTOR1)?;
    let (s, log) = director.apply_raw(&director_yaml(
        "eth9",
        vip(),
        80,
        &[(rs(1), 80, "dr", 1)],
        &[],
    ))?;
    if s.failed != 1 {
        bail!("expected exactly the address op to fail: {s:?}\n{log}");
    }
    ensure!(log.contains("interface eth9 does not exist"), "{log}");
    ensure!(!topo.has_addr(
        lvs_lan::DIRECTOR1,
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))
    )?);
    Ok(())
}

#[test]
fn dr_over_ipv6_with_vip_on_lo() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let vip6 = IpAddr::V6(lvs_lan::VIP_V6);
    let director = Agent::new(&topo, lvs_lan::DIRECTOR1)?;
    let yaml = format!(
        "services:\n  - key: tcp [{vip6}]:80\n    scheduler: rr\n    destinations:\n      - {{addr: \"{}\", port: 80, forwarding: dr}}\n      - {{addr: \"{}\", port: 80, forwarding: dr}}\n\
         addresses:\n  - {{ifname: eth0, addr: \"{vip6}\", prefix_len: 128}}\n",
        lvs_lan::RS1_V6,
        lvs_lan::RS2_V6
    );
    director.apply(&yaml)?;
    let mut agents = vec![];
    let mut servers = vec![];
    for host in [lvs_lan::RS1, lvs_lan::RS2] {
        let a = Agent::new(&topo, host)?;
        a.apply(&format!(
            "addresses:\n  - {{ifname: lo, addr: \"{vip6}\", prefix_len: 128}}\n"
        ))?;
        agents.push(a);
        servers.push(topo.serve_http(host, 80)?);
    }
    let seen = count_answers(&topo, lvs_lan::CLIENT, SocketAddr::new(vip6, 80), REQUESTS)?;
    ensure!(
        seen.get("rs1") == Some(&(REQUESTS / 2)) && seen.get("rs2") == Some(&(REQUESTS / 2)),
        "{seen:?}"
    );
    let s = director.apply(&yaml)?;
    ensure!(s == Summary::default(), "{s:?}");
    Ok(())
}

#[test]
fn dummy_link_holds_vip_and_goes_with_it() -> anyhow::Result<()> {
    require_vm()?;
    let topo = Topology::lvs_lan()?;
    let rs1 = Agent::new(&topo, lvs_lan::RS1)?;
    let yaml = format!(
        "links: [kl0]\naddresses:\n  - {{ifname: kl0, addr: {}, prefix_len: 32, label: \"kl0:kl\"}}\n",
        vip()
    );
    let s = rs1.apply(&yaml)?;
    ensure!(s.kernel_ops == 2, "{s:?}");
    let link = topo.exec_ok(lvs_lan::RS1, &["ip", "-d", "link", "show", "kl0"])?;
    ensure!(link.contains("dummy") && link.contains("UP"), "{link}");
    ensure!(topo.has_addr(lvs_lan::RS1, vip())?);
    ensure!(rs1.apply(&yaml)? == Summary::default());
    rs1.apply("{}")?;
    let gone = topo.exec(lvs_lan::RS1, &["ip", "link", "show", "kl0"])?;
    ensure!(!gone.status.success(), "kl0 left behind");
    Ok(())
}
