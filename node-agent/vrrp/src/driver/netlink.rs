//! [`VipControl`] over rtnetlink, for the standalone speaker and the tests. The node-agent
//! plugs in its own implementation backed by `kube-lvs-net`.

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};

use super::{Vip, VipControl, VipError, VipLink};

pub struct NetlinkVips {
    handle: rtnetlink::Handle,
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

impl NetlinkVips {
    /// Opens a route-netlink connection in the current namespace; needs a tokio runtime.
    pub fn new() -> std::io::Result<NetlinkVips> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(NetlinkVips { handle })
    }
}

impl VipControl for NetlinkVips {
    async fn add(&self, link: &VipLink, vip: Vip) -> Result<(), VipError> {
        let mut req = self
            .handle
            .address()
            .add(link.index, vip.addr, vip.prefix_len);
        if vip.addr.is_ipv6() {
            // The address moves between routers; duplicate detection would only delay it.
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(VipError::Netlink {
                vip: vip.addr,
                errno: errno(&e),
                message: e.to_string(),
            }),
        }
    }

    async fn remove(&self, link: &VipLink, vip: Vip) -> Result<(), VipError> {
        let found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .set_address_filter(vip.addr)
            .execute()
            .try_collect::<Vec<_>>()
            .await;
        let msgs = match found {
            Ok(m) => m,
            Err(e) => {
                return Err(VipError::Netlink {
                    vip: vip.addr,
                    errno: errno(&e),
                    message: e.to_string(),
                });
            }
        };
        for m in msgs {
            if m.header.prefix_len != vip.prefix_len {
                continue;
            }
            match self.handle.address().del(m).execute().await {
                Ok(()) => {}
                Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL) | Some(libc::ENOENT)) => {}
                Err(e) => {
                    return Err(VipError::Netlink {
                        vip: vip.addr,
                        errno: errno(&e),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}
