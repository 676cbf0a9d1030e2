//! In-memory kernel for tests: applies ops with the kernel's rules (EEXIST, ENOENT, missing links and
//! knobs) so plans can be executed and re-planned without privileges.

use std::collections::{BTreeMap, BTreeSet};

use kube_lvs_ipvs::ServiceKey;
use kube_lvs_net::{AddressSpec, FwmarkRule, ObservedMarks, SysctlKey};

use super::{Op, claim, release};
use crate::model::{Desired, Observed, Owned, ServiceState};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kernel {
    pub services: BTreeMap<ServiceKey, ServiceState>,
    pub addresses: BTreeSet<AddressSpec>,
    pub links: BTreeSet<String>,
    pub sysctls: BTreeMap<SysctlKey, String>,
    pub marks: Option<BTreeSet<FwmarkRule>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError(pub String);

impl Kernel {
    /// What the observer would read, looking at the sysctls named by `desired` and `owned`.
    pub fn observe(&self, desired: &Desired, owned: &Owned) -> Observed {
        let keys = desired.sysctls.keys().chain(owned.sysctls.keys());
        Observed {
            services: self.services.clone(),
            addresses: self.addresses.clone(),
            links: self.links.clone(),
            sysctls: keys
                .map(|k| (k.clone(), self.sysctls.get(k).cloned()))
                .collect(),
            marks: match &self.marks {
                None => ObservedMarks::default(),
                Some(r) => ObservedMarks {
                    table_present: true,
                    rules: r.clone(),
                    exact: true,
                },
            },
        }
    }

    fn has_link(&self, name: &str) -> bool {
        self.links.contains(name)
    }

    pub fn apply(&mut self, op: &Op) -> Result<(), SimError> {
        let err = |m: String| Err(SimError(m));
        match op {
            Op::CreateDummy(n) => {
                if !self.links.insert(n.clone()) {
                    return err(format!("link {n} exists"));
                }
            }
            Op::DeleteDummy(n) => {
                if !self.links.remove(n) {
                    return err(format!("link {n} missing"));
                }
                self.addresses.retain(|a| &a.ifname != n);
            }
            Op::SetSysctl { key, value, .. }
            | Op::RestoreSysctl {
                key,
                value: Some(value),
            } => match self.sysctls.get_mut(key) {
                Some(v) => *v = value.clone(),
                None => return err(format!("sysctl {key} missing")),
            },
            Op::RestoreSysctl { value: None, .. }
            | Op::ForgetService(_)
            | Op::ForgetAddress(_)
            | Op::ForgetLink(_) => {}
            Op::AddService(s) => {
                if self.services.contains_key(&s.key) {
                    return err(format!("service {} exists", s.key));
                }
                self.services.insert(s.key, ServiceState::new(s.clone()));
            }
            Op::EditService(s) => match self.services.get_mut(&s.key) {
                Some(st) => st.service = s.clone(),
                None => return err(format!("service {} missing", s.key)),
            },
            Op::DelService(k) => match self.services.get(k) {
                None => return err(format!("service {k} missing")),
                // The real kernel would flush them; the planner promises to remove them first.
                Some(st) if !st.destinations.is_empty() => {
                    return err(format!("service {k} deleted before its destinations"));
                }
                Some(_) => {
                    self.services.remove(k);
                }
            },
            Op::AddDestination(k, d) => match self.services.get_mut(k) {
                None => return err(format!("destination added to missing service {k}")),
                Some(st) => {
                    if st.destinations.insert(d.key(), d.clone()).is_some() {
                        return err(format!("destination {} exists in {k}", d.addr));
                    }
                }
            },
            Op::EditDestination(k, d) => {
                match self
                    .services
                    .get_mut(k)
                    .and_then(|st| st.destinations.get_mut(&d.key()))
                {
                    Some(have) => *have = d.clone(),
                    None => return err(format!("edit of missing destination {} in {k}", d.addr)),
                }
            }
            Op::DelDestination(k, dk) => {
                if self
                    .services
                    .get_mut(k)
                    .and_then(|st| st.destinations.remove(dk))
                    .is_none()
                {
                    return err(format!("delete of missing destination {} in {k}", dk.addr));
                }
            }
            Op::SyncMarks(rules) => {
                self.marks = if rules.is_empty() {
                    None
                } else {
                    Some(rules.clone())
                };
            }
            Op::AddAddress(a) => self.add_address(a)?,
            Op::ReplaceAddress { old, new } => {
                self.del_address(old)?;
                self.add_address(new)?;
            }
            Op::DelAddress(a) => self.del_address(a)?,
        }
        Ok(())
    }

    fn add_address(&mut self, a: &AddressSpec) -> Result<(), SimError> {
        if !self.has_link(&a.ifname) {
            return Err(SimError(format!("no link {}", a.ifname)));
        }
        if self.addresses.iter().any(|x| x.key() == a.key()) {
            return Err(SimError(format!("address {a} exists")));
        }
        self.addresses.insert(a.clone());
        Ok(())
    }

    fn del_address(&mut self, a: &AddressSpec) -> Result<(), SimError> {
        let before = self.addresses.len();
        self.addresses.retain(|x| x.key() != a.key());
        if self.addresses.len() == before {
            return Err(SimError(format!("address {a} missing")));
        }
        Ok(())
    }

    /// Execute ops in order with the executor's ownership bookkeeping.
    pub fn run(&mut self, ops: &[Op], owned: &mut Owned) -> Result<(), SimError> {
        for op in ops {
            claim(owned, op);
        }
        for op in ops {
            self.apply(op)?;
            release(owned, op);
        }
        Ok(())
    }
}
