//! Desired and observed kernel state of one node, as pure data.
//!
//! The same shapes describe what the agent wants ([`Desired`]) and what the kernel has
//! ([`Observed`]); [`Owned`] records which kernel objects the agent created, so that it never changes
//! anything it does not own. Nothing here does I/O.

pub mod file;

use std::collections::{BTreeMap, BTreeSet};

use kube_lvs_ipvs::{Destination, DestinationKey, Forwarding, Service, ServiceKey};
use kube_lvs_net::{AddressSpec, FwmarkRule, ObservedMarks, SysctlKey};
use serde::{Deserialize, Serialize};

pub use file::{KeyParseError, parse_service_key};

/// One virtual service with its real servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceState {
    pub service: Service,
    pub destinations: BTreeMap<DestinationKey, Destination>,
}

impl ServiceState {
    pub fn new(service: Service) -> Self {
        Self {
            service,
            destinations: BTreeMap::new(),
        }
    }

    pub fn with_destination(mut self, d: Destination) -> Self {
        self.destinations.insert(d.key(), d);
        self
    }
}

/// Everything the agent wants on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub services: BTreeMap<ServiceKey, ServiceState>,
    pub addresses: BTreeSet<AddressSpec>,
    /// Dummy links to create (VIP holders for DR real servers when `lo` is not wanted).
    pub links: BTreeSet<String>,
    pub sysctls: BTreeMap<SysctlKey, String>,
    pub marks: BTreeSet<FwmarkRule>,
}

impl Desired {
    pub fn add_service(&mut self, state: ServiceState) {
        self.services.insert(state.service.key, state);
    }
}

/// What the kernel has: every IPVS service and address (ours and foreign), the sysctls the agent
/// cares about (`None` = knob does not exist), existing link names and our nft table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub services: BTreeMap<ServiceKey, ServiceState>,
    pub addresses: BTreeSet<AddressSpec>,
    pub links: BTreeSet<String>,
    pub sysctls: BTreeMap<SysctlKey, Option<String>>,
    pub marks: ObservedMarks,
}

impl Observed {
    /// Address on the same interface with the same address/prefix (label may differ).
    pub fn address_like(&self, spec: &AddressSpec) -> Option<&AddressSpec> {
        self.addresses.iter().find(|a| a.key() == spec.key())
    }
}

/// What the agent created, persisted in the state file (written before creating).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    #[serde(
        default,
        serialize_with = "file::ser_keys",
        deserialize_with = "file::de_keys"
    )]
    pub services: BTreeSet<ServiceKey>,
    #[serde(default)]
    pub addresses: BTreeSet<AddressSpec>,
    #[serde(default)]
    pub links: BTreeSet<String>,
    /// Value each sysctl had before the agent first changed it (restored when no longer desired).
    #[serde(default)]
    pub sysctls: BTreeMap<SysctlKey, String>,
}

impl Owned {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.addresses.is_empty()
            && self.links.is_empty()
            && self.sysctls.is_empty()
    }
}

/// Whether the kernel's destination satisfies the desired one. The kernel reports `Local` for a
/// destination whose address is local to the node whatever forwarding was asked for, so `Local`
/// matches any desired forwarding rather than causing an edit on every pass.
pub fn destination_matches(desired: &Destination, observed: &Destination) -> bool {
    let fwd_ok =
        desired.forwarding == observed.forwarding || observed.forwarding == Forwarding::Local;
    fwd_ok
        && desired.addr == observed.addr
        && desired.port == observed.port
        && desired.weight == observed.weight
        && desired.upper_threshold == observed.upper_threshold
        && desired.lower_threshold == observed.lower_threshold
}

/// Whether the kernel's service configuration equals the desired one.
pub fn service_matches(desired: &Service, observed: &Service) -> bool {
    desired == observed
}
