//! Interface facts the driver needs: index, MAC, primary IPv4 and link-local IPv6 address.
//! Read through getifaddrs (netlink underneath), so it works in any network namespace.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::DriverError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub ipv4: Vec<Ipv4Addr>,
    pub link_local_v6: Option<Ipv6Addr>,
}

pub fn is_link_local_v6(a: &Ipv6Addr) -> bool {
    a.segments().first().is_some_and(|s| s & 0xffc0 == 0xfe80)
}

impl Interface {
    pub fn lookup(name: &str) -> Result<Interface, DriverError> {
        let index = nix::net::if_::if_nametoindex(name).map_err(|e| DriverError::Interface {
            name: name.to_string(),
            source: std::io::Error::from(e),
        })?;
        let mut mac = [0u8; 6];
        let mut ipv4 = Vec::new();
        let mut link_local_v6 = None;
        let addrs = nix::ifaddrs::getifaddrs().map_err(|e| DriverError::Interface {
            name: name.to_string(),
            source: std::io::Error::from(e),
        })?;
        for ifa in addrs.filter(|a| a.interface_name == name) {
            let Some(addr) = ifa.address else { continue };
            if let Some(link) = addr.as_link_addr() {
                if let Some(m) = link.addr() {
                    mac = m;
                }
            } else if let Some(v4) = addr.as_sockaddr_in() {
                ipv4.push(v4.ip());
            } else if let Some(v6) = addr.as_sockaddr_in6()
                && is_link_local_v6(&v6.ip())
                && link_local_v6.is_none()
            {
                link_local_v6 = Some(v6.ip());
            }
        }
        Ok(Interface {
            name: name.to_string(),
            index,
            mac,
            ipv4,
            link_local_v6,
        })
    }
}
