//! Test bed shared by the namespace tests and the failover benchmark: a bridge namespace, two
//! router namespaces (`a`, `b`) and a client namespace, keepalived and vrrp-speaker runners,
//! and an ARP prober living in the client namespace. Everything is removed on drop.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube_lvs_vrrp::driver::announce::{ARP_REPLY, ARP_REQUEST, Arp, BROADCAST, PacketSocket};

pub const A_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const B_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const VIP6: &str = "2001:db8::100";
pub const A_MAC: [u8; 6] = [0x02, 0x6b, 0x6c, 0, 0, 0x01];
pub const B_MAC: [u8; 6] = [0x02, 0x6b, 0x6c, 0, 0, 0x02];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x6b, 0x6c, 0, 0, 0x0a];
pub const IFACE: &str = "eth0";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` every `every` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// The namespaces of one test; names carry the pid and a sequence number.
pub struct Bed {
    pub prefix: String,
    pub dir: PathBuf,
    created: Vec<String>,
}

pub enum Node {
    A,
    B,
}

impl Bed {
    pub fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }
    pub fn a(&self) -> String {
        self.ns("a")
    }
    pub fn b(&self) -> String {
        self.ns("b")
    }
    pub fn client(&self) -> String {
        self.ns("c")
    }

    pub fn new(tag: &str) -> Result<Bed> {
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("klv{}-{seq}{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir)?;
        let mut bed = Bed {
            prefix,
            dir,
            created: Vec::new(),
        };
        bed.build()?;
        Ok(bed)
    }

    fn add_ns(&mut self, n: &str) -> Result<String> {
        let name = self.ns(n);
        sh(&["ip", "netns", "add", &name])?;
        self.created.push(name.clone());
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    fn build(&mut self) -> Result<()> {
        let br = self.add_ns("br")?;
        sh(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"])?;
        sh(&["ip", "-n", &br, "link", "set", "br0", "up"])?;
        for (n, ip, mac, ip6) in [
            ("a", A_IP, A_MAC, "2001:db8::1"),
            ("b", B_IP, B_MAC, "2001:db8::2"),
            ("c", CLIENT_IP, CLIENT_MAC, "2001:db8::a"),
        ] {
            let ns = self.add_ns(n)?;
            let peer = format!("v{n}");
            sh(&[
                "ip",
                "-n",
                &ns,
                "link",
                "add",
                IFACE,
                "address",
                &mac_str(&mac),
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", &peer, "netns", &br])?;
            sh(&["ip", "-n", &br, "link", "set", &peer, "master", "br0", "up"])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                IFACE,
            ])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip6}/64"),
                "dev",
                IFACE,
                "nodad",
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", IFACE, "up"])?;
        }
        // Link-local addresses need a moment (DAD) before raw IPv6 sockets can bind to them.
        for n in ["a", "b", "c"] {
            let ns = self.ns(n);
            let ok = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
                sh(&[
                    "ip", "-n", &ns, "-6", "addr", "show", "dev", IFACE, "scope", "link",
                ])
                .map(|o| o.contains("fe80") && !o.contains("tentative"))
                .unwrap_or(false)
            });
            if !ok {
                bail!("link-local address of {ns} did not settle");
            }
        }
        Ok(())
    }

    pub fn node_ns(&self, n: &Node) -> String {
        match n {
            Node::A => self.a(),
            Node::B => self.b(),
        }
    }

    pub fn has_addr(&self, ns: &str, addr: &str) -> bool {
        sh(&["ip", "-n", ns, "-o", "addr", "show", "dev", IFACE])
            .map(|o| {
                o.split_whitespace()
                    .any(|w| w.split('/').next() == Some(addr))
            })
            .unwrap_or(false)
    }

    pub fn del_addr(&self, ns: &str, cidr: &str) {
        let _ = sh(&["ip", "-n", ns, "addr", "del", cidr, "dev", IFACE]);
    }

    /// Which MACs answer an ARP request for `ip` from the client within `window`.
    pub fn arp_owners(&self, ip: Ipv4Addr, window: Duration) -> Result<BTreeSet<[u8; 6]>> {
        let probe = ArpProbe::open(&self.client())?;
        probe.owners(ip, window)
    }

    /// MAC the client resolves `ip6` to, through the kernel's neighbour discovery (a UDP
    /// datagram from the client namespace makes the kernel solicit).
    pub fn nd_owner(&self, ip6: &str) -> Option<String> {
        let c = self.client();
        let _ = sh(&["ip", "-n", &c, "-6", "neigh", "flush", "to", ip6]);
        let target: std::net::SocketAddr = format!("[{ip6}]:9").parse().ok()?;
        let sock = in_netns(&c, || Ok(std::net::UdpSocket::bind("[::]:0")?)).ok()?;
        let mut found = None;
        wait_for(Duration::from_secs(2), Duration::from_millis(50), || {
            let _ = sock.send_to(b"nd", target);
            let out = sh(&["ip", "-n", &c, "-6", "neigh", "show", "to", ip6]).unwrap_or_default();
            let mut words = out.split_whitespace();
            while let Some(w) = words.next() {
                if w == "lladdr" {
                    found = words.next().map(str::to_string);
                }
            }
            found.is_some()
        });
        found
    }
}

impl Bed {
    /// The client's neighbour-cache entry for `ip` (MAC text), without sending anything.
    pub fn client_neigh(&self, ip: &str) -> Option<String> {
        let out = sh(&["ip", "-n", &self.client(), "neigh", "show", "to", ip]).ok()?;
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "lladdr" {
                return words.next().map(str::to_string);
            }
        }
        None
    }

    /// Makes the client's kernel resolve `ip` (one UDP datagram to the discard port).
    pub fn client_poke(&self, ip: &str) -> Result<()> {
        let target: std::net::SocketAddr = if ip.contains(':') {
            format!("[{ip}]:9").parse()?
        } else {
            format!("{ip}:9").parse()?
        };
        let bind = if ip.contains(':') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let sock = in_netns(&self.client(), move || Ok(std::net::UdpSocket::bind(bind)?))?;
        sock.send_to(b"poke", target)?;
        Ok(())
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::env::var_os("KLV_KEEP_LOGS").is_some() {
            eprintln!("logs kept in {}", self.dir.display());
        }
        for ns in self.created.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::env::var_os("KLV_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Opens a socket inside `ns` from a short-lived thread, so the caller's namespace is untouched.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> Result<T> {
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
}

/// Raw ARP requests and replies from the client namespace.
pub struct ArpProbe {
    sock: PacketSocket,
}

impl ArpProbe {
    pub fn open(client_ns: &str) -> Result<ArpProbe> {
        let sock = in_netns(client_ns, || {
            let idx = nix::net::if_::if_nametoindex(IFACE)?;
            Ok(PacketSocket::open(idx, true)?)
        })?;
        Ok(ArpProbe { sock })
    }

    pub fn request(&self, ip: Ipv4Addr) -> Result<()> {
        let req = Arp {
            eth_dst: BROADCAST,
            eth_src: CLIENT_MAC,
            op: ARP_REQUEST,
            sender_mac: CLIENT_MAC,
            sender_ip: CLIENT_IP,
            target_mac: [0; 6],
            target_ip: ip,
        };
        self.sock.send(&req.encode(), BROADCAST)?;
        Ok(())
    }

    /// Drains pending frames; returns the MACs that replied for `ip`.
    pub fn drain_replies(&self, ip: Ipv4Addr) -> BTreeSet<[u8; 6]> {
        let mut buf = [0u8; 256];
        let mut out = BTreeSet::new();
        while let Ok(n) = self.sock.recv(&mut buf) {
            if let Some(a) = buf.get(..n).and_then(Arp::decode)
                && a.op == ARP_REPLY
                && a.sender_ip == ip
                && a.target_ip == CLIENT_IP
            {
                out.insert(a.sender_mac);
            }
        }
        out
    }

    pub fn owners(&self, ip: Ipv4Addr, window: Duration) -> Result<BTreeSet<[u8; 6]>> {
        self.drain_replies(ip);
        let mut out = BTreeSet::new();
        let end = Instant::now() + window;
        while Instant::now() < end {
            self.request(ip)?;
            std::thread::sleep(Duration::from_millis(20));
            out.extend(self.drain_replies(ip));
        }
        Ok(out)
    }

    /// Requests every `every` until `mac` answers for `ip`; returns when it first did.
    pub fn wait_owner(
        &self,
        ip: Ipv4Addr,
        mac: [u8; 6],
        timeout: Duration,
        every: Duration,
    ) -> Option<Instant> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.request(ip).is_err() {
                return None;
            }
            let sent = Instant::now();
            while sent.elapsed() < every {
                if self.drain_replies(ip).contains(&mac) {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        None
    }
}

/// A process we started (in its own process group); killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// SIGKILL the whole process group (keepalived's parent and VRRP child at once).
    pub fn crash(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
    /// SIGTERM and wait (bounded) for exit.
    pub fn stop(&mut self) -> bool {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let ok = wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !ok {
            self.crash();
        }
        ok
    }
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            self.crash();
        }
    }
}

pub fn spawn_raw(bed: &Bed, ns: &str, name: &str, cmd: &[&str]) -> Result<Proc> {
    let log = File::create(bed.dir.join(format!("{name}.log")))?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawning {name}"))?;
    Ok(Proc {
        child,
        name: name.to_string(),
    })
}

/// Shared VRRP settings of a scenario, rendered for both implementations.
#[derive(Clone, Debug)]
pub struct Vr {
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    pub interval_ms: u32,
    pub preempt: bool,
    pub password: Option<String>,
    pub unicast_peer: Option<IpAddr>,
    pub unicast_src: Option<IpAddr>,
    pub vip: String,
    pub garp_repeat_delay_ms: u64,
}

impl Vr {
    pub fn v4(version: u8, priority: u8, interval_ms: u32) -> Vr {
        Vr {
            version,
            vrid: 51,
            priority,
            interval_ms,
            preempt: true,
            password: None,
            unicast_peer: None,
            unicast_src: None,
            vip: format!("{VIP}/32"),
            garp_repeat_delay_ms: 0,
        }
    }

    pub fn keepalived_conf(&self, id: &str) -> String {
        let mut s = format!(
            "global_defs {{\n  router_id {id}\n  vrrp_garp_master_delay 0\n}}\n\
             vrrp_instance VI_{id} {{\n  state BACKUP\n  interface {IFACE}\n  virtual_router_id {}\n  \
             priority {}\n  advert_int {}\n  version {}\n",
            self.vrid,
            self.priority,
            f64::from(self.interval_ms) / 1000.0,
            self.version
        );
        if !self.preempt {
            s.push_str("  nopreempt\n");
        }
        if let Some(p) = &self.password {
            s.push_str(&format!(
                "  authentication {{\n    auth_type PASS\n    auth_pass {p}\n  }}\n"
            ));
        }
        if let Some(src) = self.unicast_src {
            s.push_str(&format!("  unicast_src_ip {src}\n"));
        }
        if let Some(peer) = self.unicast_peer {
            s.push_str(&format!("  unicast_peer {{\n    {peer}\n  }}\n"));
        }
        s.push_str(&format!(
            "  virtual_ipaddress {{\n    {} dev {IFACE}\n  }}\n}}\n",
            self.vip
        ));
        s
    }

    pub fn speaker_conf(&self, name: &str) -> String {
        let peers: Vec<String> = self
            .unicast_peer
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect();
        let src = match self.unicast_src {
            Some(s) => format!("\"{s}\""),
            None => "null".into(),
        };
        let pw = match &self.password {
            Some(p) => format!("\"{p}\""),
            None => "null".into(),
        };
        format!(
            r#"{{"instances":[{{"name":"{name}","interface":"{IFACE}","version":{},"vrid":{},"priority":{},
"advert_interval_ms":{},"preempt":{},"vips":["{}"],"unicast_peers":[{}],"source":{src},"password":{pw},
"garp_count":3,"garp_repeat_delay_ms":{}}}]}}"#,
            self.version,
            self.vrid,
            self.priority,
            self.interval_ms,
            self.preempt,
            self.vip,
            peers.join(","),
            self.garp_repeat_delay_ms
        )
    }
}

pub fn speaker_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vrrp-speaker")
}

/// Starts keepalived (VRRP subsystem only, no respawn) in `ns`.
pub fn start_keepalived(bed: &Bed, ns: &str, tag: &str, vr: &Vr) -> Result<Proc> {
    let id = format!("{}_{tag}", bed.prefix.replace('-', "_"));
    let conf = bed.dir.join(format!("ka-{tag}.conf"));
    std::fs::write(&conf, vr.keepalived_conf(&id))?;
    let pid = bed.dir.join(format!("ka-{tag}.pid"));
    let vpid = bed.dir.join(format!("ka-{tag}.vrrp.pid"));
    let conf_s = conf.to_string_lossy().into_owned();
    let pid_s = pid.to_string_lossy().into_owned();
    let vpid_s = vpid.to_string_lossy().into_owned();
    spawn_raw(
        bed,
        ns,
        &format!("ka-{tag}"),
        &[
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-P",
            "-R",
            "-f",
            &conf_s,
            "-p",
            &pid_s,
            "-r",
            &vpid_s,
            "-i",
            &id,
        ],
    )
}

/// Starts our vrrp-speaker in `ns`; metrics land in `<dir>/sp-<tag>.metrics` on exit/SIGUSR1.
pub fn start_speaker(bed: &Bed, ns: &str, tag: &str, vr: &Vr) -> Result<Proc> {
    start_speaker_json(bed, ns, tag, &vr.speaker_conf(&format!("vi_{tag}")))
}

pub fn start_speaker_json(bed: &Bed, ns: &str, tag: &str, json: &str) -> Result<Proc> {
    let conf = bed.dir.join(format!("sp-{tag}.json"));
    std::fs::write(&conf, json)?;
    let metrics = bed.dir.join(format!("sp-{tag}.metrics"));
    let conf_s = conf.to_string_lossy().into_owned();
    let metrics_s = metrics.to_string_lossy().into_owned();
    spawn_raw(
        bed,
        ns,
        &format!("sp-{tag}"),
        &[
            speaker_bin(),
            "--config",
            &conf_s,
            "--metrics-out",
            &metrics_s,
        ],
    )
}

/// Reads one sample from a speaker's metrics file.
pub fn metric(bed: &Bed, tag: &str, sample_prefix: &str) -> Option<u64> {
    let text = std::fs::read_to_string(bed.dir.join(format!("sp-{tag}.metrics"))).ok()?;
    text.lines()
        .find(|l| l.starts_with(sample_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn log_of(bed: &Bed, name: &str) -> String {
    std::fs::read_to_string(bed.dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Sees the VRRP adverts on the LAN from the client namespace (joined to 224.0.0.18), so a
/// benchmark can stop a master right after it advertised.
pub struct AdvertSniffer {
    sock: socket2::Socket,
}

impl AdvertSniffer {
    pub fn open(client_ns: &str) -> Result<AdvertSniffer> {
        let sock = in_netns(client_ns, || {
            use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
            let idx = nix::net::if_::if_nametoindex(IFACE)?;
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112)))?;
            s.join_multicast_v4_n(
                &kube_lvs_vrrp::packet::MCAST_V4,
                &InterfaceIndexOrAddress::Index(idx),
            )?;
            s.set_read_timeout(Some(Duration::from_millis(20)))?;
            Ok(s)
        })?;
        Ok(AdvertSniffer { sock })
    }

    /// Waits for the next advert sent by `src`; returns when it was seen.
    pub fn next_from(&self, src: Ipv4Addr, timeout: Duration) -> Option<Instant> {
        use std::io::Read;
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 1500];
        while Instant::now() < end {
            let Ok(n) = (&self.sock).read(&mut buf) else {
                continue;
            };
            if let Some(Ok((meta, _))) = buf.get(..n).map(kube_lvs_vrrp::packet::parse_ipv4)
                && meta.src == src
            {
                return Some(Instant::now());
            }
        }
        None
    }

    /// Drops queued adverts so that only a fresh one counts.
    pub fn drain(&self) {
        use std::io::Read;
        let mut buf = [0u8; 1500];
        let _ = self.sock.set_nonblocking(true);
        while (&self.sock).read(&mut buf).is_ok() {}
        let _ = self.sock.set_nonblocking(false);
    }
}

/// Asks a running speaker to rewrite its metrics file (SIGUSR1), then reads one sample; use
/// inside a polling loop, the file may still be the previous one on the first read.
pub fn live_metric(bed: &Bed, sp: &Proc, tag: &str, sample_prefix: &str) -> Option<u64> {
    sp.signal(nix::sys::signal::Signal::SIGUSR1);
    metric(bed, tag, sample_prefix)
}
