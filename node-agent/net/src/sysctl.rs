//! Sysctls through /proc/sys, with typed names so interface names containing dots stay intact.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};

/// A sysctl name as its path components below /proc/sys.
///
/// Displayed in dotted form (`net.ipv4.conf.eth0.arp_ignore`); an interface name with a dot
/// (`eth0.100`) is a single component, which is why the key is not stored as a dotted string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SysctlKey(Vec<String>);

impl SysctlKey {
    pub fn new<I, S>(parts: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let parts: Vec<String> = parts.into_iter().map(Into::into).collect();
        let valid = !parts.is_empty()
            && parts.iter().all(|p| {
                !p.is_empty() && p != "." && p != ".." && !p.contains('/') && !p.contains('\0')
            });
        if valid {
            Ok(Self(parts))
        } else {
            Err(NetError::InvalidSysctlKey(parts.join(".")))
        }
    }

    /// `net.ipv4.ip_forward`
    pub fn ip_forward() -> Self {
        Self(vec!["net".into(), "ipv4".into(), "ip_forward".into()])
    }

    /// `net.ipv6.conf.all.forwarding`
    pub fn ipv6_forwarding() -> Self {
        Self(vec![
            "net".into(),
            "ipv6".into(),
            "conf".into(),
            "all".into(),
            "forwarding".into(),
        ])
    }

    /// `net.ipv4.conf.<iface>.<knob>`; `iface` may be `all`, `default` or an interface name.
    pub fn ipv4_conf(iface: &str, knob: &str) -> Result<Self> {
        Self::new(["net", "ipv4", "conf", iface, knob])
    }

    /// `net.ipv4.vs.<knob>` (exists only while ip_vs is loaded).
    pub fn vs(knob: &str) -> Result<Self> {
        Self::new(["net", "ipv4", "vs", knob])
    }

    pub fn parts(&self) -> &[String] {
        &self.0
    }

    /// Path of this sysctl below `root` (normally `/proc/sys`).
    pub fn path_under(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for part in &self.0 {
            p.push(part);
        }
        p
    }

    /// Parse the dotted form; an interface component may be written with '/' for dots as sysctl(8)
    /// does (`net.ipv4.conf.eth0/100.rp_filter`).
    pub fn parse(dotted: &str) -> Result<Self> {
        Self::new(dotted.split('.').map(|p| p.replace('/', ".")))
    }
}

impl fmt::Display for SysctlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for part in &self.0 {
            if !first {
                f.write_str(".")?;
            }
            first = false;
            // sysctl(8) convention: dots inside a component are written as '/'.
            f.write_str(&part.replace('.', "/"))?;
        }
        Ok(())
    }
}

impl TryFrom<String> for SysctlKey {
    type Error = NetError;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<SysctlKey> for String {
    fn from(k: SysctlKey) -> String {
        k.to_string()
    }
}

/// Reads and writes sysctls below a root directory (`/proc/sys` in production, a temp dir in tests).
#[derive(Clone, Debug)]
pub struct Sysctls {
    root: PathBuf,
}

impl Default for Sysctls {
    fn default() -> Self {
        Self::new("/proc/sys")
    }
}

impl Sysctls {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn map_err(key: &SysctlKey, err: io::Error) -> NetError {
        match err.kind() {
            io::ErrorKind::NotFound => NetError::SysctlMissing {
                key: key.to_string(),
            },
            io::ErrorKind::PermissionDenied => NetError::PermissionDenied {
                what: format!("sysctl {key}"),
            },
            _ => NetError::SysctlIo {
                key: key.to_string(),
                source: err,
            },
        }
    }

    /// Current value, trimmed.
    pub fn read(&self, key: &SysctlKey) -> Result<String> {
        std::fs::read_to_string(key.path_under(&self.root))
            .map(|s| s.trim().to_string())
            .map_err(|e| Self::map_err(key, e))
    }

    /// Current value, or `None` when the sysctl does not exist.
    pub fn read_optional(&self, key: &SysctlKey) -> Result<Option<String>> {
        match self.read(key) {
            Ok(v) => Ok(Some(v)),
            Err(NetError::SysctlMissing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write a value. The file must already exist: /proc/sys never creates entries, and a missing
    /// knob means the module or interface is absent.
    pub fn write(&self, key: &SysctlKey, value: &str) -> Result<()> {
        use std::io::Write;
        let path = key.path_under(&self.root);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Self::map_err(key, e))?;
        file.write_all(value.as_bytes())
            .map_err(|e| Self::map_err(key, e))
    }
}

/// Whether two sysctl values mean the same (the kernel separates vector values with tabs).
pub fn values_equal(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_interface_names_survive() {
        let k = SysctlKey::ipv4_conf("eth0.100", "rp_filter").unwrap();
        assert_eq!(k.to_string(), "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(SysctlKey::parse(&k.to_string()).unwrap(), k);
        assert!(
            k.path_under(Path::new("/proc/sys"))
                .ends_with("conf/eth0.100/rp_filter")
        );
    }

    #[test]
    fn bad_keys_rejected() {
        assert!(SysctlKey::parse("net..ip_forward").is_err());
        assert!(SysctlKey::new(["net", ".."]).is_err());
        assert!(SysctlKey::new(Vec::<String>::new()).is_err());
    }

    #[test]
    fn read_write_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sysctls::new(dir.path());
        let k = SysctlKey::ip_forward();
        std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        std::fs::write(k.path_under(dir.path()), "0\n").unwrap();
        assert_eq!(s.read(&k).unwrap(), "0");
        s.write(&k, "1").unwrap();
        assert_eq!(s.read(&k).unwrap(), "1");
        let missing = SysctlKey::vs("conntrack").unwrap();
        assert!(matches!(
            s.read(&missing),
            Err(NetError::SysctlMissing { .. })
        ));
        assert_eq!(s.read_optional(&missing).unwrap(), None);
        assert!(matches!(
            s.write(&missing, "1"),
            Err(NetError::SysctlMissing { .. })
        ));
    }

    #[test]
    fn vector_values_compare_by_words() {
        assert!(values_equal("4096\t87380 6291456", "4096 87380 6291456"));
        assert!(!values_equal("1", "2"));
    }

    #[test]
    fn serde_round_trip() {
        let k = SysctlKey::vs("expire_nodest_conn").unwrap();
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, "\"net.ipv4.vs.expire_nodest_conn\"");
        let back: SysctlKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, k);
    }
}
