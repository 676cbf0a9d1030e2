//! `plan(desired, observed, owned) -> Plan`: the ordered kernel operations that turn what the kernel
//! has into what the agent wants, touching only what the agent owns.
//!
//! Order (see docs/dataplane.md for the reasons):
//! 1. create dummy links;
//! 2. set sysctls (ARP rules before a VIP lands on `lo`, forwarding before NAT services);
//! 3. add/edit services, then their destinations (removals, edits, additions);
//! 4. sync the nft mark table;
//! 5. add addresses (VIPs last: traffic arrives only once the service is ready);
//! 6. remove addresses no longer wanted (traffic stops first);
//! 7. remove destinations, then their service;
//! 8. forget ownership of objects that vanished;
//! 9. restore sysctls;
//! 10. delete dummy links.

#[cfg(test)]
pub mod sim;

use std::fmt;

use kube_lvs_ipvs::{Destination, DestinationKey, Service, ServiceKey};
use kube_lvs_net::{AddressSpec, FwmarkRule, SysctlKey, sysctl::values_equal};
use std::collections::BTreeSet;

use crate::model::{Desired, Observed, Owned, destination_matches, service_matches};

/// One kernel operation (or, for `Forget*`, one ownership-record change without kernel effect).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    CreateDummy(String),
    /// `original` is the value to remember for restoring, when not recorded yet.
    SetSysctl {
        key: SysctlKey,
        value: String,
        original: Option<String>,
    },
    AddService(Service),
    EditService(Service),
    AddDestination(ServiceKey, Destination),
    EditDestination(ServiceKey, Destination),
    DelDestination(ServiceKey, DestinationKey),
    SyncMarks(BTreeSet<FwmarkRule>),
    AddAddress(AddressSpec),
    /// Same address, new label: the label is fixed at creation, so delete and re-add.
    ReplaceAddress {
        old: AddressSpec,
        new: AddressSpec,
    },
    DelAddress(AddressSpec),
    DelService(ServiceKey),
    ForgetService(ServiceKey),
    ForgetAddress(AddressSpec),
    ForgetLink(String),
    /// Write back the original value (`None` = only drop the record, the knob is gone or equal).
    RestoreSysctl {
        key: SysctlKey,
        value: Option<String>,
    },
    DeleteDummy(String),
}

impl Op {
    /// Whether executing the op changes kernel state.
    pub fn touches_kernel(&self) -> bool {
        !matches!(
            self,
            Op::ForgetService(_)
                | Op::ForgetAddress(_)
                | Op::ForgetLink(_)
                | Op::RestoreSysctl { value: None, .. }
        )
    }

    /// Short stable name for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::CreateDummy(_) => "create_dummy",
            Op::SetSysctl { .. } => "set_sysctl",
            Op::AddService(_) => "add_service",
            Op::EditService(_) => "edit_service",
            Op::AddDestination(..) => "add_destination",
            Op::EditDestination(..) => "edit_destination",
            Op::DelDestination(..) => "del_destination",
            Op::SyncMarks(_) => "sync_marks",
            Op::AddAddress(_) => "add_address",
            Op::ReplaceAddress { .. } => "replace_address",
            Op::DelAddress(_) => "del_address",
            Op::DelService(_) => "del_service",
            Op::ForgetService(_) => "forget_service",
            Op::ForgetAddress(_) => "forget_address",
            Op::ForgetLink(_) => "forget_link",
            Op::RestoreSysctl { .. } => "restore_sysctl",
            Op::DeleteDummy(_) => "delete_dummy",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateDummy(n) => write!(f, "create dummy link {n}"),
            Op::SetSysctl { key, value, .. } => write!(f, "set {key}={value}"),
            Op::AddService(s) => write!(f, "add service {} scheduler {}", s.key, s.scheduler),
            Op::EditService(s) => write!(f, "edit service {} scheduler {}", s.key, s.scheduler),
            Op::AddDestination(k, d) => write!(
                f,
                "add destination {k} -> {} port {} {:?} weight {}",
                d.addr, d.port, d.forwarding, d.weight
            ),
            Op::EditDestination(k, d) => write!(
                f,
                "edit destination {k} -> {} port {} {:?} weight {}",
                d.addr, d.port, d.forwarding, d.weight
            ),
            Op::DelDestination(k, d) => {
                write!(f, "delete destination {k} -> {} port {}", d.addr, d.port)
            }
            Op::SyncMarks(r) => write!(f, "sync nft table inet kube_lvs ({} rules)", r.len()),
            Op::AddAddress(a) => write!(f, "add address {a}"),
            Op::ReplaceAddress { old, new } => write!(f, "replace address {old} with {new}"),
            Op::DelAddress(a) => write!(f, "delete address {a}"),
            Op::DelService(k) => write!(f, "delete service {k}"),
            Op::ForgetService(k) => write!(f, "forget vanished service {k}"),
            Op::ForgetAddress(a) => write!(f, "forget vanished address {a}"),
            Op::ForgetLink(n) => write!(f, "forget vanished link {n}"),
            Op::RestoreSysctl {
                key,
                value: Some(v),
            } => write!(f, "restore {key}={v}"),
            Op::RestoreSysctl { key, value: None } => write!(f, "release {key}"),
            Op::DeleteDummy(n) => write!(f, "delete dummy link {n}"),
        }
    }
}

/// Something desired that the agent must not do because the kernel object belongs to someone else.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("IPVS service {0} already exists and is not managed by kube-lvs")]
    ServiceNotOwned(ServiceKey),
    #[error(
        "address {observed} exists with another label and is not managed by kube-lvs (wanted {desired})"
    )]
    AddressNotOwned {
        desired: AddressSpec,
        observed: AddressSpec,
    },
    #[error("link {0} exists and was not created by kube-lvs")]
    LinkNotOwned(String),
}

impl Conflict {
    /// Stable reason for a status condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Conflict::ServiceNotOwned(_) => "ServiceExists",
            Conflict::AddressNotOwned { .. } => "AddressExists",
            Conflict::LinkNotOwned(_) => "LinkExists",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub conflicts: Vec<Conflict>,
}

impl Plan {
    /// Number of ops that change the kernel.
    pub fn kernel_ops(&self) -> usize {
        self.ops.iter().filter(|o| o.touches_kernel()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Compute the ordered ops. Pure.
pub fn plan(desired: &Desired, observed: &Observed, owned: &Owned) -> Plan {
    let mut p = Plan::default();
    let mut late = Late::default();

    plan_links(desired, observed, owned, &mut p, &mut late);
    plan_sysctls(desired, observed, owned, &mut p, &mut late);
    plan_services(desired, observed, owned, &mut p, &mut late);
    if !observed.marks.matches(&desired.marks) {
        p.ops.push(Op::SyncMarks(desired.marks.clone()));
    }
    plan_addresses(desired, observed, owned, &mut p);

    p.ops.extend(late.service_removals);
    p.ops.extend(late.forget);
    p.ops.extend(late.sysctl_restores);
    p.ops.extend(late.link_removals);
    p
}

/// Ops that must run after addresses are settled.
#[derive(Default)]
struct Late {
    service_removals: Vec<Op>,
    forget: Vec<Op>,
    sysctl_restores: Vec<Op>,
    link_removals: Vec<Op>,
}

fn plan_links(d: &Desired, o: &Observed, owned: &Owned, p: &mut Plan, late: &mut Late) {
    for name in &d.links {
        if !o.links.contains(name) {
            p.ops.push(Op::CreateDummy(name.clone()));
        } else if !owned.links.contains(name) && !is_builtin_link(name) {
            // It exists and is not ours: use it as it is, but say so; we will never delete it.
            p.conflicts.push(Conflict::LinkNotOwned(name.clone()));
        }
    }
    for name in owned.links.difference(&d.links) {
        if o.links.contains(name) {
            late.link_removals.push(Op::DeleteDummy(name.clone()));
        } else {
            late.forget.push(Op::ForgetLink(name.clone()));
        }
    }
}

/// `lo` and the IPIP module's `tunl0` are shared by design, never "someone else's".
fn is_builtin_link(name: &str) -> bool {
    matches!(name, "lo" | "tunl0")
}

fn plan_sysctls(d: &Desired, o: &Observed, owned: &Owned, p: &mut Plan, late: &mut Late) {
    for (key, value) in &d.sysctls {
        let current = o.sysctls.get(key).cloned().flatten();
        let equal = current.as_deref().is_some_and(|c| values_equal(c, value));
        if !equal {
            let original = if owned.sysctls.contains_key(key) {
                None
            } else {
                current
            };
            p.ops.push(Op::SetSysctl {
                key: key.clone(),
                value: value.clone(),
                original,
            });
        }
    }
    for (key, original) in &owned.sysctls {
        if d.sysctls.contains_key(key) {
            continue;
        }
        let current = o.sysctls.get(key).cloned().flatten();
        let value = match current {
            Some(c) if !values_equal(&c, original) => Some(original.clone()),
            _ => None,
        };
        late.sysctl_restores.push(Op::RestoreSysctl {
            key: key.clone(),
            value,
        });
    }
}

fn plan_services(d: &Desired, o: &Observed, owned: &Owned, p: &mut Plan, late: &mut Late) {
    for (key, want) in &d.services {
        match o.services.get(key) {
            Some(_) if !owned.services.contains(key) => {
                p.conflicts.push(Conflict::ServiceNotOwned(*key));
            }
            Some(have) => {
                if !service_matches(&want.service, &have.service) {
                    p.ops.push(Op::EditService(want.service.clone()));
                }
                // Removals first so a thresholds/capacity change never briefly exceeds intent.
                for dk in have.destinations.keys() {
                    if !want.destinations.contains_key(dk) {
                        p.ops.push(Op::DelDestination(*key, *dk));
                    }
                }
                for (dk, dest) in &want.destinations {
                    match have.destinations.get(dk) {
                        Some(h) if destination_matches(dest, h) => {}
                        Some(_) => p.ops.push(Op::EditDestination(*key, dest.clone())),
                        None => p.ops.push(Op::AddDestination(*key, dest.clone())),
                    }
                }
            }
            None => {
                p.ops.push(Op::AddService(want.service.clone()));
                for dest in want.destinations.values() {
                    p.ops.push(Op::AddDestination(*key, dest.clone()));
                }
            }
        }
    }
    for key in &owned.services {
        if d.services.contains_key(key) {
            continue;
        }
        match o.services.get(key) {
            Some(have) => {
                for dk in have.destinations.keys() {
                    late.service_removals.push(Op::DelDestination(*key, *dk));
                }
                late.service_removals.push(Op::DelService(*key));
            }
            None => late.forget.push(Op::ForgetService(*key)),
        }
    }
}

fn plan_addresses(d: &Desired, o: &Observed, owned: &Owned, p: &mut Plan) {
    let mut adds = Vec::new();
    let mut dels = Vec::new();
    for want in &d.addresses {
        match o.address_like(want) {
            None => adds.push(Op::AddAddress(want.clone())),
            Some(have) if have == want => {}
            Some(have) => {
                let ours = owned.addresses.iter().any(|a| a.key() == have.key());
                if ours {
                    // The label is fixed at creation: replace the address.
                    adds.push(Op::ReplaceAddress {
                        old: have.clone(),
                        new: want.clone(),
                    });
                } else {
                    p.conflicts.push(Conflict::AddressNotOwned {
                        desired: want.clone(),
                        observed: have.clone(),
                    });
                }
            }
        }
    }
    for mine in &owned.addresses {
        if d.addresses.iter().any(|a| a.key() == mine.key()) {
            continue;
        }
        match o.address_like(mine) {
            Some(have) => dels.push(Op::DelAddress(have.clone())),
            None => dels.push(Op::ForgetAddress(mine.clone())),
        }
    }
    p.ops.extend(adds);
    p.ops.extend(dels);
}

/// Ownership to record BEFORE running `op` (so a crash between the two never leaves an object the
/// agent created but does not know it owns).
pub fn claim(owned: &mut Owned, op: &Op) {
    match op {
        Op::CreateDummy(n) => {
            owned.links.insert(n.clone());
        }
        Op::SetSysctl {
            key,
            original: Some(orig),
            ..
        } => {
            owned
                .sysctls
                .entry(key.clone())
                .or_insert_with(|| orig.clone());
        }
        Op::AddService(s) => {
            owned.services.insert(s.key);
        }
        Op::AddAddress(a) | Op::ReplaceAddress { new: a, .. } => {
            owned.addresses.retain(|x| x.key() != a.key());
            owned.addresses.insert(a.clone());
        }
        _ => {}
    }
}

/// Ownership to drop AFTER `op` succeeded.
pub fn release(owned: &mut Owned, op: &Op) {
    match op {
        Op::DelService(k) | Op::ForgetService(k) => {
            owned.services.remove(k);
        }
        Op::DelAddress(a) | Op::ForgetAddress(a) => {
            owned.addresses.retain(|x| x.key() != a.key());
        }
        Op::DeleteDummy(n) | Op::ForgetLink(n) => {
            owned.links.remove(n);
        }
        Op::RestoreSysctl { key, .. } => {
            owned.sysctls.remove(key);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
