//! Addresses, sysctls and nftables rules owned by the kube-lvs node-agent.
//!
//! - [`addr`]: VIP /32 and /128 addresses with labels, dummy links, over rtnetlink.
//! - [`sysctl`]: typed sysctl names, read/write through /proc/sys.
//! - [`nft`]: firewall-mark rules in the agent's own `table inet kube_lvs`, replaced atomically.
//! - [`profile`]: the sysctl sets a director and a real server need.

pub mod addr;
pub mod error;
pub mod nft;
pub mod profile;
pub mod sysctl;

pub use addr::{AddressSpec, NetHandle};
pub use error::NetError;
pub use nft::{FwmarkRule, MarkProtocol, Nft, ObservedMarks};
pub use sysctl::{SysctlKey, Sysctls};
