//! Firewall-mark rules in an nftables table the agent owns (`table inet kube_lvs`).
//!
//! The whole table is replaced in one `nft -f` transaction (create-if-missing, delete, recreate), so
//! packets never see a half-written rule set and no other table is ever touched.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{NetError, Result};

/// Table family and name owned by the agent.
pub const TABLE_FAMILY: &str = "inet";
pub const TABLE_NAME: &str = "kube_lvs";
pub const CHAIN_NAME: &str = "prerouting";
/// `priority mangle` of the prerouting hook.
pub const CHAIN_PRIORITY: i64 = -150;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkProtocol {
    Tcp,
    Udp,
    Sctp,
}

impl MarkProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            "sctp" => Some(Self::Sctp),
            _ => None,
        }
    }
}

/// Mark packets for `vip` (optionally only `protocol`, optionally only `ports`) with `mark`, which an
/// IPVS firewall-mark service then matches. Several ports with one mark give "same client, several
/// ports" persistence (e.g. 80 and 443 → mark 1).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FwmarkRule {
    pub vip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<MarkProtocol>,
    /// Empty = every port. Requires `protocol` when non-empty.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub ports: BTreeSet<u16>,
    pub mark: u32,
}

impl FwmarkRule {
    fn render(&self, out: &mut String) -> Result<()> {
        let fam = if self.vip.is_ipv4() { "ip" } else { "ip6" };
        let _ = write!(out, "    {fam} daddr {}", self.vip);
        match (self.protocol, self.ports.len()) {
            (None, 0) => {}
            (None, _) => {
                return Err(NetError::NftDecode(format!(
                    "rule for {} lists ports without a protocol",
                    self.vip
                )));
            }
            (Some(p), 0) => {
                let _ = write!(out, " meta l4proto {}", p.as_str());
            }
            (Some(p), 1) => {
                let port = self.ports.iter().next().copied().unwrap_or_default();
                let _ = write!(out, " {} dport {port}", p.as_str());
            }
            (Some(p), _) => {
                let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
                let _ = write!(out, " {} dport {{ {} }}", p.as_str(), ports.join(", "));
            }
        }
        let _ = writeln!(out, " meta mark set 0x{:08x}", self.mark);
        Ok(())
    }
}

/// The `nft -f` script that makes our table hold exactly `rules` (or removes it when empty).
pub fn render_script(rules: &BTreeSet<FwmarkRule>) -> Result<String> {
    let mut s = String::new();
    // Declaring the table first makes the delete valid whether or not it existed.
    let _ = writeln!(s, "table {TABLE_FAMILY} {TABLE_NAME} {{}}");
    let _ = writeln!(s, "delete table {TABLE_FAMILY} {TABLE_NAME}");
    if rules.is_empty() {
        return Ok(s);
    }
    let _ = writeln!(s, "table {TABLE_FAMILY} {TABLE_NAME} {{");
    let _ = writeln!(s, "  chain {CHAIN_NAME} {{");
    let _ = writeln!(
        s,
        "    type filter hook prerouting priority mangle; policy accept;"
    );
    for rule in rules {
        rule.render(&mut s)?;
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    Ok(s)
}

/// What our table holds. `exact` is false when it contains anything we would not have written
/// (foreign rules, other chains, a different hook): the next sync then rewrites it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedMarks {
    pub table_present: bool,
    pub rules: BTreeSet<FwmarkRule>,
    pub exact: bool,
}

impl ObservedMarks {
    /// Whether the table already matches `desired` (absent table == no rules).
    pub fn matches(&self, desired: &BTreeSet<FwmarkRule>) -> bool {
        if desired.is_empty() {
            !self.table_present
        } else {
            self.table_present && self.exact && &self.rules == desired
        }
    }
}

fn decode_rule(expr: &[Value]) -> Option<FwmarkRule> {
    let mut vip = None;
    let mut protocol = None;
    let mut ports = BTreeSet::new();
    let mut mark = None;
    for e in expr {
        if let Some(m) = e.get("match") {
            if m.get("op").and_then(Value::as_str) != Some("==") {
                return None;
            }
            let left = m.get("left")?;
            let right = m.get("right")?;
            if let Some(p) = left.get("payload") {
                let proto = p.get("protocol").and_then(Value::as_str)?;
                let field = p.get("field").and_then(Value::as_str)?;
                match (proto, field) {
                    ("ip" | "ip6", "daddr") => {
                        let a: IpAddr = right.as_str()?.parse().ok()?;
                        if (proto == "ip") != a.is_ipv4() {
                            return None;
                        }
                        vip = Some(a);
                    }
                    (l4, "dport") => {
                        protocol = Some(MarkProtocol::parse(l4)?);
                        if let Some(set) = right.get("set").and_then(Value::as_array) {
                            for v in set {
                                ports.insert(u16::try_from(v.as_u64()?).ok()?);
                            }
                        } else {
                            ports.insert(u16::try_from(right.as_u64()?).ok()?);
                        }
                    }
                    _ => return None,
                }
            } else if let Some(meta) = left.get("meta") {
                if meta.get("key").and_then(Value::as_str) != Some("l4proto") {
                    return None;
                }
                protocol = Some(MarkProtocol::parse(right.as_str()?)?);
            } else {
                return None;
            }
        } else if let Some(m) = e.get("mangle") {
            let key = m.get("key")?.get("meta")?.get("key")?.as_str()?;
            if key != "mark" {
                return None;
            }
            mark = Some(u32::try_from(m.get("value")?.as_u64()?).ok()?);
        } else {
            return None;
        }
    }
    Some(FwmarkRule {
        vip: vip?,
        protocol,
        ports,
        mark: mark?,
    })
}

/// Decode `nft -j list table inet kube_lvs` output.
pub fn decode_table(json: &str) -> Result<ObservedMarks> {
    let v: Value = serde_json::from_str(json).map_err(|e| NetError::NftDecode(e.to_string()))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| NetError::NftDecode("missing nftables array".into()))?;
    let mut out = ObservedMarks {
        table_present: false,
        rules: BTreeSet::new(),
        exact: true,
    };
    let mut chain_ok = false;
    for item in items {
        if let Some(t) = item.get("table") {
            if t.get("name").and_then(Value::as_str) == Some(TABLE_NAME) {
                out.table_present = true;
            }
        } else if let Some(c) = item.get("chain") {
            let expected = c.get("name").and_then(Value::as_str) == Some(CHAIN_NAME)
                && c.get("hook").and_then(Value::as_str) == Some("prerouting")
                && c.get("type").and_then(Value::as_str) == Some("filter")
                && c.get("prio").and_then(Value::as_i64) == Some(CHAIN_PRIORITY)
                && c.get("policy").and_then(Value::as_str) == Some("accept");
            if expected && !chain_ok {
                chain_ok = true;
            } else {
                out.exact = false;
            }
        } else if let Some(r) = item.get("rule") {
            let decoded = (r.get("chain").and_then(Value::as_str) == Some(CHAIN_NAME))
                .then(|| r.get("expr").and_then(Value::as_array))
                .flatten()
                .and_then(|e| decode_rule(e));
            match decoded {
                Some(rule) => {
                    if !out.rules.insert(rule) {
                        out.exact = false; // duplicate
                    }
                }
                None => out.exact = false,
            }
        } else if item.get("metainfo").is_none() {
            out.exact = false; // sets, maps, other objects we never create
        }
    }
    if out.table_present && !chain_ok {
        out.exact = false;
    }
    Ok(out)
}

/// Runs the `nft` binary. Only ever names our table.
#[derive(Clone, Debug)]
pub struct Nft {
    binary: String,
}

impl Default for Nft {
    fn default() -> Self {
        Self {
            binary: "nft".into(),
        }
    }
}

impl Nft {
    pub fn with_binary(binary: impl Into<String>) -> Self {
        Self {
            binary: binary.into(),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(NetError::NftSpawn)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .map_err(NetError::NftSpawn)?;
        }
        let out = child.wait_with_output().map_err(NetError::NftSpawn)?;
        if !out.status.success() {
            return Err(NetError::NftFailed {
                status: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether our table exists (decided from the JSON table list, not from error text).
    pub fn table_exists(&self) -> Result<bool> {
        let json = self.run(&["-j", "list", "tables", TABLE_FAMILY], None)?;
        let v: Value =
            serde_json::from_str(&json).map_err(|e| NetError::NftDecode(e.to_string()))?;
        Ok(v.get("nftables")
            .and_then(Value::as_array)
            .map(|items| {
                items.iter().any(|i| {
                    i.get("table")
                        .and_then(|t| t.get("name"))
                        .and_then(Value::as_str)
                        == Some(TABLE_NAME)
                })
            })
            .unwrap_or(false))
    }

    /// Read our table.
    pub fn observe(&self) -> Result<ObservedMarks> {
        if !self.table_exists()? {
            return Ok(ObservedMarks {
                table_present: false,
                rules: BTreeSet::new(),
                exact: true,
            });
        }
        let json = self.run(&["-j", "list", "table", TABLE_FAMILY, TABLE_NAME], None)?;
        decode_table(&json)
    }

    /// Replace our table atomically with exactly `rules` (deletes it when empty).
    pub fn sync(&self, rules: &BTreeSet<FwmarkRule>) -> Result<()> {
        let script = render_script(rules)?;
        self.run(&["-f", "-"], Some(&script)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(vip: &str, proto: Option<MarkProtocol>, ports: &[u16], mark: u32) -> FwmarkRule {
        FwmarkRule {
            vip: vip.parse().unwrap(),
            protocol: proto,
            ports: ports.iter().copied().collect(),
            mark,
        }
    }

    #[test]
    fn script_for_two_ports_one_mark() {
        let rules: BTreeSet<_> = [rule("192.0.2.10", Some(MarkProtocol::Tcp), &[443, 80], 1)]
            .into_iter()
            .collect();
        let s = render_script(&rules).unwrap();
        assert!(s.starts_with("table inet kube_lvs {}\ndelete table inet kube_lvs\n"));
        assert!(s.contains("ip daddr 192.0.2.10 tcp dport { 80, 443 } meta mark set 0x00000001"));
        assert!(s.contains("hook prerouting priority mangle"));
    }

    #[test]
    fn empty_rules_only_delete() {
        let s = render_script(&BTreeSet::new()).unwrap();
        assert_eq!(s, "table inet kube_lvs {}\ndelete table inet kube_lvs\n");
    }

    #[test]
    fn ports_without_protocol_rejected() {
        let rules: BTreeSet<_> = [rule("192.0.2.10", None, &[80], 1)].into_iter().collect();
        assert!(render_script(&rules).is_err());
    }

    const SAMPLE: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "kube_lvs", "handle": 2}}, {"chain": {"family": "inet", "table": "kube_lvs", "name": "prerouting", "handle": 1, "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}}, {"rule": {"family": "inet", "table": "kube_lvs", "chain": "prerouting", "handle": 3, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.10"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [80, 443]}}}, {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1}}]}}, {"rule": {"family": "inet", "table": "kube_lvs", "chain": "prerouting", "handle": 4, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "2001:db8::10"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}}, {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 2}}]}}, {"rule": {"family": "inet", "table": "kube_lvs", "chain": "prerouting", "handle": 5, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.11"}}, {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 3}}]}}, {"rule": {"family": "inet", "table": "kube_lvs", "chain": "prerouting", "handle": 6, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.12"}}, {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 4}}]}}]}"#;

    #[test]
    fn decode_real_nft_output() {
        let obs = decode_table(SAMPLE).unwrap();
        let want: BTreeSet<_> = [
            rule("192.0.2.10", Some(MarkProtocol::Tcp), &[80, 443], 1),
            rule("2001:db8::10", Some(MarkProtocol::Udp), &[53], 2),
            rule("192.0.2.11", Some(MarkProtocol::Tcp), &[], 3),
            rule("192.0.2.12", None, &[], 4),
        ]
        .into_iter()
        .collect();
        assert!(obs.table_present);
        assert!(obs.exact);
        assert_eq!(obs.rules, want);
        assert!(obs.matches(&want));
    }

    #[test]
    fn foreign_rule_makes_table_inexact() {
        let doctored = SAMPLE.replace(r#""key": "l4proto""#, r#""key": "iifname""#);
        let obs = decode_table(&doctored).unwrap();
        assert!(!obs.exact);
        assert_eq!(obs.rules.len(), 3);
        assert!(!obs.matches(&obs.rules.clone()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_table("not json").is_err());
        assert!(decode_table("{}").is_err());
        let obs = decode_table(
            r#"{"nftables":[{"rule":{"chain":"prerouting","expr":[{"mangle":{}}]}}]}"#,
        )
        .unwrap();
        assert!(!obs.exact);
    }

    #[test]
    fn absent_table_matches_empty_desired() {
        let obs = ObservedMarks::default();
        assert!(obs.matches(&BTreeSet::new()));
        let want: BTreeSet<_> = [rule("192.0.2.12", None, &[], 4)].into_iter().collect();
        assert!(!obs.matches(&want));
    }
}
