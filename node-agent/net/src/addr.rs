//! VIP addresses (/32 and /128) on named interfaces, and the dummy/tunnel links that carry them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{AddressMessageBuilder, LinkDummy, LinkUnspec};
use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};

/// Longest interface name / label the kernel accepts (IFNAMSIZ - 1).
pub const MAX_NAME_LEN: usize = 15;

/// One address the agent wants on (or sees on) an interface.
///
/// `label` is only meaningful for IPv4, where the kernel reports the interface name when no explicit
/// label was given; [`AddressSpec::normalized`] folds that case to `None`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AddressSpec {
    pub ifname: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl AddressSpec {
    /// A host address (/32 or /128), the usual shape of a VIP.
    pub fn host(ifname: impl Into<String>, addr: IpAddr, label: Option<String>) -> Self {
        let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
        Self {
            ifname: ifname.into(),
            addr,
            prefix_len,
            label,
        }
    }

    /// Identity of the address in the kernel: the label is an attribute, not part of the key.
    pub fn key(&self) -> (String, IpAddr, u8) {
        (self.ifname.clone(), self.addr, self.prefix_len)
    }

    /// Drop the label when it only repeats the interface name (what the kernel reports by default).
    pub fn normalized(mut self) -> Self {
        if self.addr.is_ipv6() || self.label.as_deref() == Some(self.ifname.as_str()) {
            self.label = None;
        }
        self
    }

    /// Check the label against the kernel's rules before sending anything.
    pub fn validate(&self) -> Result<()> {
        validate_ifname(&self.ifname)?;
        if let Some(label) = &self.label {
            validate_label(&self.ifname, self.addr, label)?;
        }
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix_len > max {
            return Err(NetError::InvalidLabel {
                ifname: self.ifname.clone(),
                label: format!("/{}", self.prefix_len),
                reason: "prefix length too long for the address family",
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for AddressSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} dev {}", self.addr, self.prefix_len, self.ifname)?;
        if let Some(label) = &self.label {
            write!(f, " label {label}")?;
        }
        Ok(())
    }
}

/// Interface names: 1..=15 bytes, no '/', no whitespace, not "." or "..".
pub fn validate_ifname(ifname: &str) -> Result<()> {
    let ok = !ifname.is_empty()
        && ifname.len() <= MAX_NAME_LEN
        && ifname != "."
        && ifname != ".."
        && !ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidLabel {
            ifname: ifname.to_string(),
            label: String::new(),
            reason: "interface name must be 1-15 characters without '/', ':' or spaces",
        })
    }
}

/// IPv4 labels must read `<ifname>:<suffix>` (what `ip addr` and `ifconfig` aliases expect) and fit in
/// IFNAMSIZ; IPv6 addresses have no labels.
pub fn validate_label(ifname: &str, addr: IpAddr, label: &str) -> Result<()> {
    let fail = |reason| {
        Err(NetError::InvalidLabel {
            ifname: ifname.to_string(),
            label: label.to_string(),
            reason,
        })
    };
    if addr.is_ipv6() {
        return fail("IPv6 addresses carry no label");
    }
    if label.len() > MAX_NAME_LEN {
        return fail("label longer than 15 characters");
    }
    let Some(suffix) = label
        .strip_prefix(ifname)
        .and_then(|rest| rest.strip_prefix(':'))
    else {
        return fail("label must start with '<ifname>:'");
    };
    if suffix.is_empty()
        || suffix
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return fail("label suffix must be non-empty without '/' or spaces");
    }
    Ok(())
}

/// Decode one kernel address message into a spec (None for messages without an address).
pub fn spec_from_message(msg: &AddressMessage, ifname: &str) -> Option<AddressSpec> {
    let mut local = None;
    let mut address = None;
    let mut label = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
    let addr = local.or(address)?;
    Some(
        AddressSpec {
            ifname: ifname.to_string(),
            addr,
            prefix_len: msg.header.prefix_len,
            label,
        }
        .normalized(),
    )
}

/// rtnetlink adapter for links and addresses.
#[derive(Clone)]
pub struct NetHandle {
    handle: rtnetlink::Handle,
}

impl NetHandle {
    /// Open a route netlink socket in the caller's network namespace; the connection task is spawned
    /// on the current tokio runtime.
    pub fn connect() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetError::Transport {
            what: "open rtnetlink socket".into(),
            message: e.to_string(),
        })?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Index and name of every link.
    pub async fn links(&self) -> Result<BTreeMap<u32, String>> {
        let mut out = BTreeMap::new();
        let mut stream = self.handle.link().get().execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| NetError::from_rtnetlink("list links", e))?
        {
            let name = msg.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let Some(name) = name {
                out.insert(msg.header.index, name);
            }
        }
        Ok(out)
    }

    /// The link of that name, `None` when it does not exist.
    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>> {
        validate_ifname(name)?;
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.try_next().await {
            Ok(found) => Ok(found),
            Err(e) => {
                let err = NetError::from_rtnetlink(format!("link {name}"), e);
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Index of a link by name, `None` when it does not exist.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link_by_name(name).await?.map(|m| m.header.index))
    }

    async fn require_index(&self, name: &str) -> Result<u32> {
        self.link_index(name)
            .await?
            .ok_or_else(|| NetError::NoSuchInterface(name.to_string()))
    }

    /// Create a dummy link (if missing) and bring it up. Returns true when it was created.
    pub async fn ensure_dummy(&self, name: &str) -> Result<bool> {
        let created = if self.link_index(name).await?.is_none() {
            let msg = LinkDummy::new(name).up().build();
            match self.handle.link().add(msg).execute().await {
                Ok(()) => true,
                Err(e) => {
                    let err = NetError::from_rtnetlink(format!("create dummy {name}"), e);
                    if !err.is_already_exists() {
                        return Err(err);
                    }
                    false
                }
            }
        } else {
            false
        };
        self.set_up(name).await?;
        Ok(created)
    }

    /// Delete a link by name. `NoSuchInterface` when it does not exist.
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        let index = self.require_index(name).await?;
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| NetError::from_rtnetlink(format!("delete link {name}"), e))
    }

    /// Bring a link up (no-op when it already is).
    pub async fn set_up(&self, name: &str) -> Result<()> {
        let index = self.require_index(name).await?;
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetError::from_rtnetlink(format!("set {name} up"), e))
    }

    /// Whether a link is administratively up.
    pub async fn is_up(&self, name: &str) -> Result<bool> {
        self.link_by_name(name)
            .await?
            .map(|m| m.header.flags.contains(LinkFlags::Up))
            .ok_or_else(|| NetError::NoSuchInterface(name.to_string()))
    }

    /// Every address on every interface, labels normalized.
    pub async fn list_addresses(&self) -> Result<Vec<AddressSpec>> {
        let links = self.links().await?;
        let mut out = Vec::new();
        let mut stream = self.handle.address().get().execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| NetError::from_rtnetlink("list addresses", e))?
        {
            let Some(ifname) = links.get(&msg.header.index) else {
                continue;
            };
            if let Some(spec) = spec_from_message(&msg, ifname) {
                out.push(spec);
            }
        }
        out.sort();
        Ok(out)
    }

    fn message(index: u32, spec: &AddressSpec) -> AddressMessage {
        match spec.addr {
            IpAddr::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
                .index(index)
                .address(a, spec.prefix_len)
                .build(),
            IpAddr::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                .index(index)
                .address(a, spec.prefix_len)
                .build(),
        }
    }

    /// Add an address. `AlreadyExists` when the same address/prefix is already on the interface.
    pub async fn add_address(&self, spec: &AddressSpec) -> Result<()> {
        spec.validate()?;
        let index = self.require_index(&spec.ifname).await?;
        let mut req = self.handle.address().add(index, spec.addr, spec.prefix_len);
        let msg = req.message_mut();
        if let Some(label) = &spec.label {
            msg.attributes.push(AddressAttribute::Label(label.clone()));
        }
        if spec.addr.is_ipv6() {
            // A VIP must answer at once; duplicate address detection would hold it tentative.
            msg.header.flags |= AddressHeaderFlags::Nodad;
        }
        req.execute()
            .await
            .map_err(|e| NetError::from_rtnetlink(format!("add address {spec}"), e))
    }

    /// Remove an address. `NotFound` when it is not there.
    pub async fn del_address(&self, spec: &AddressSpec) -> Result<()> {
        let index = self.require_index(&spec.ifname).await?;
        let msg = Self::message(index, spec);
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(|e| NetError::from_rtnetlink(format!("delete address {spec}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn labels_must_carry_interface_prefix() {
        assert!(validate_label("lo", v4("192.0.2.1"), "lo:vip1").is_ok());
        assert!(validate_label("eth0", v4("192.0.2.1"), "eth0:kl").is_ok());
        assert!(validate_label("eth0", v4("192.0.2.1"), "eth1:kl").is_err());
        assert!(validate_label("eth0", v4("192.0.2.1"), "eth0kl").is_err());
        assert!(validate_label("eth0", v4("192.0.2.1"), "eth0:").is_err());
        assert!(validate_label("eth0", v4("192.0.2.1"), "eth0:abcdefghijk").is_err());
        assert!(validate_label("eth0", v4("2001:db8::1"), "eth0:kl").is_err());
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(validate_ifname("lo").is_ok());
        assert!(validate_ifname("tunl0").is_ok());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("abcdefghijklmnop").is_err());
        assert!(validate_ifname("lo:1").is_err());
    }

    #[test]
    fn host_prefix_by_family() {
        assert_eq!(
            AddressSpec::host("lo", v4("192.0.2.1"), None).prefix_len,
            32
        );
        assert_eq!(
            AddressSpec::host("lo", v4("2001:db8::1"), None).prefix_len,
            128
        );
    }

    #[test]
    fn normalization_folds_default_label() {
        let s = AddressSpec::host("lo", v4("192.0.2.1"), Some("lo".into())).normalized();
        assert_eq!(s.label, None);
        let s = AddressSpec::host("lo", v4("192.0.2.1"), Some("lo:kl".into())).normalized();
        assert_eq!(s.label.as_deref(), Some("lo:kl"));
    }

    #[test]
    fn decode_prefers_local_and_reads_label() {
        let mut msg = AddressMessage::default();
        msg.header.prefix_len = 32;
        msg.attributes
            .push(AddressAttribute::Address(v4("198.51.100.9")));
        msg.attributes
            .push(AddressAttribute::Local(v4("192.0.2.7")));
        msg.attributes
            .push(AddressAttribute::Label("eth0:vip".into()));
        let spec = spec_from_message(&msg, "eth0");
        assert_eq!(
            spec,
            Some(AddressSpec::host(
                "eth0",
                v4("192.0.2.7"),
                Some("eth0:vip".into())
            ))
        );
        assert_eq!(spec_from_message(&AddressMessage::default(), "eth0"), None);
    }
}
