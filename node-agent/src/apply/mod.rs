//! Effectful side of the data plane: read the kernel ([`Dataplane::observe`]) and execute a plan
//! ([`Dataplane::apply`]) through the IPVS client, rtnetlink, /proc/sys and `nft`, recording
//! ownership in the [`StateStore`] before anything is created.

pub mod state;

use std::collections::BTreeMap;

use kube_lvs_ipvs::{IpvsHandle, Request};
use kube_lvs_net::{NetError, NetHandle, Nft, ObservedMarks, Sysctls};
use tracing::{info, warn};

use crate::error::{DataplaneError, Result};
use crate::model::{Desired, Observed, Owned, ServiceState};
use crate::plan::{Op, Plan, claim, plan, release};
pub use state::{DEFAULT_STATE_PATH, StateStore};

/// Handles to every kernel interface the data plane uses.
pub struct Dataplane {
    /// `None` when this kernel has no IPVS (real-server-only nodes, the host in tests).
    ipvs: Option<IpvsHandle>,
    net: NetHandle,
    sysctls: Sysctls,
    nft: Nft,
    store: StateStore,
}

/// Outcome of executing a plan.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub applied: Vec<Op>,
    pub failed: Vec<(Op, DataplaneError)>,
}

impl ApplyReport {
    pub fn kernel_ops(&self) -> usize {
        self.applied.iter().filter(|o| o.touches_kernel()).count()
    }
}

/// One observe → plan → apply pass.
#[derive(Debug)]
pub struct Pass {
    pub plan: Plan,
    pub report: ApplyReport,
}

impl Dataplane {
    /// Open the netlink sockets in the current network namespace (needs a tokio runtime).
    pub fn connect(store: StateStore) -> Result<Self> {
        let ipvs = match IpvsHandle::new() {
            Ok(h) => Some(h),
            Err(e)
                if matches!(e, kube_lvs_ipvs::Error::NotSupported { .. }) || e.is_not_found() =>
            {
                warn!(error = %e, "IPVS unavailable on this kernel; IPVS operations will fail");
                None
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            ipvs,
            net: NetHandle::connect()?,
            sysctls: Sysctls::default(),
            nft: Nft::default(),
            store,
        })
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    pub fn has_ipvs(&self) -> bool {
        self.ipvs.is_some()
    }

    /// Every address on the node (ours and foreign), without the IPVS dump `observe` makes:
    /// what choosing a VIP's interface needs.
    pub async fn addresses(&self) -> Result<std::collections::BTreeSet<kube_lvs_net::AddressSpec>> {
        Ok(self.net.list_addresses().await?.into_iter().collect())
    }

    /// Read everything `plan` compares: all IPVS services, all addresses and links, the sysctls
    /// named by `desired` or `owned`, and our nft table.
    pub async fn observe(&self, desired: &Desired, owned: &Owned) -> Result<Observed> {
        let mut services = BTreeMap::new();
        if let Some(ipvs) = &self.ipvs {
            for info in ipvs.services().dump()? {
                let key = info.config.key;
                let mut st = ServiceState::new(info.config);
                match ipvs.destinations(key).dump() {
                    Ok(dests) => {
                        for d in dests {
                            st.destinations.insert(d.config.key(), d.config);
                        }
                    }
                    // Deleted between the two dumps: observe it as gone.
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                }
                services.insert(key, st);
            }
        }
        let links = self.net.links().await?.into_values().collect();
        let addresses = self.net.list_addresses().await?.into_iter().collect();
        let mut sysctls = BTreeMap::new();
        for key in desired.sysctls.keys().chain(owned.sysctls.keys()) {
            sysctls.insert(key.clone(), self.sysctls.read_optional(key)?);
        }
        let marks = match self.nft.observe() {
            Ok(m) => m,
            // No nft binary and nothing to mark: there can be no table of ours to look after.
            Err(NetError::NftSpawn(e))
                if e.kind() == std::io::ErrorKind::NotFound && desired.marks.is_empty() =>
            {
                ObservedMarks::default()
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Observed {
            services,
            addresses,
            links,
            sysctls,
            marks,
        })
    }

    /// Load ownership, observe, plan and apply once.
    pub async fn reconcile(&self, desired: &Desired) -> Result<Pass> {
        let mut owned = self.store.load()?;
        let observed = self.observe(desired, &owned).await?;
        let plan = plan(desired, &observed, &owned);
        for c in &plan.conflicts {
            warn!(reason = c.reason(), "{c}");
        }
        let report = self.apply(&plan, &mut owned).await?;
        Ok(Pass { plan, report })
    }

    /// Execute `plan` in order. Ownership of everything the plan creates is written to the state
    /// file first; ownership of what it removed is dropped afterwards. Consecutive IPVS ops go to
    /// the kernel as one pipelined batch. A failed op does not stop the others (they are ordered
    /// so that a failure leaves a safe state) and is returned in the report.
    pub async fn apply(&self, plan: &Plan, owned: &mut Owned) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        if plan.ops.is_empty() {
            return Ok(report);
        }
        let prior = owned.clone();
        for op in &plan.ops {
            claim(owned, op);
        }
        if *owned != prior {
            self.store.save(owned)?;
        }

        let mut i = 0;
        while i < plan.ops.len() {
            let run_end = plan.ops[i..]
                .iter()
                .position(|o| ipvs_request(o).is_none())
                .map_or(plan.ops.len(), |n| i + n);
            if run_end > i {
                let batch = &plan.ops[i..run_end];
                for (op, res) in batch.iter().zip(self.run_ipvs_batch(batch)) {
                    self.record(op, res, owned, &prior, &mut report);
                }
                i = run_end;
            } else {
                let op = &plan.ops[i];
                let res = self.run_one(op).await;
                self.record(op, res, owned, &prior, &mut report);
                i += 1;
            }
        }
        self.store.save(owned)?;
        Ok(report)
    }

    fn record(
        &self,
        op: &Op,
        res: Result<()>,
        owned: &mut Owned,
        prior: &Owned,
        report: &mut ApplyReport,
    ) {
        // Removing what is already gone reached the goal.
        let res = match res {
            Err(e) if is_removal(op) && e.is_not_found() => Ok(()),
            other => other,
        };
        match res {
            Ok(()) => {
                info!(op = op.kind(), "{op}");
                release(owned, op);
                report.applied.push(op.clone());
            }
            Err(e) => {
                warn!(op = op.kind(), error = %e, reason = e.kind(), "failed: {op}");
                unclaim(owned, op, prior);
                report.failed.push((op.clone(), e));
            }
        }
    }

    fn run_ipvs_batch(&self, ops: &[Op]) -> Vec<Result<()>> {
        let Some(ipvs) = &self.ipvs else {
            return ops
                .iter()
                .map(|_| {
                    Err(DataplaneError::Ipvs(kube_lvs_ipvs::Error::NotSupported {
                        op: "ipvs",
                        errno: 97,
                    }))
                })
                .collect();
        };
        let reqs: Vec<Request> = ops.iter().filter_map(ipvs_request).collect();
        ipvs.execute_batch(&reqs)
            .into_iter()
            .map(|r| r.map_err(DataplaneError::from))
            .collect()
    }

    async fn run_one(&self, op: &Op) -> Result<()> {
        match op {
            Op::CreateDummy(n) => self.net.ensure_dummy(n).await.map(drop)?,
            Op::DeleteDummy(n) => self.net.delete_link(n).await?,
            Op::SetSysctl { key, value, .. }
            | Op::RestoreSysctl {
                key,
                value: Some(value),
            } => self.sysctls.write(key, value)?,
            Op::SyncMarks(rules) => self.nft.sync(rules)?,
            Op::AddAddress(a) => {
                self.bring_up_vip_holder(&a.ifname).await?;
                self.net.add_address(a).await?
            }
            Op::ReplaceAddress { old, new } => {
                match self.net.del_address(old).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
                self.net.add_address(new).await?
            }
            Op::DelAddress(a) => self.net.del_address(a).await?,
            Op::RestoreSysctl { value: None, .. }
            | Op::ForgetService(_)
            | Op::ForgetAddress(_)
            | Op::ForgetLink(_) => {}
            Op::AddService(_)
            | Op::EditService(_)
            | Op::DelService(_)
            | Op::AddDestination(..)
            | Op::EditDestination(..)
            | Op::DelDestination(..) => {
                // Only reached if a caller bypasses batching; keep it correct anyway.
                if let Some(res) = self.run_ipvs_batch(std::slice::from_ref(op)).pop() {
                    res?;
                }
            }
        }
        Ok(())
    }
}

impl Dataplane {
    /// `tunl0` appears down when `ipip` is loaded, and a VIP on a down device is never used; these
    /// devices exist only to hold VIPs (owned dummies are created up), so bringing them up is
    /// part of placing the address.
    async fn bring_up_vip_holder(&self, ifname: &str) -> Result<()> {
        if matches!(ifname, "tunl0" | "lo") && !self.net.is_up(ifname).await? {
            self.net.set_up(ifname).await?;
        }
        Ok(())
    }
}

fn ipvs_request(op: &Op) -> Option<Request> {
    Some(match op {
        Op::AddService(s) => Request::NewService(s.clone()),
        Op::EditService(s) => Request::SetService(s.clone()),
        Op::DelService(k) => Request::DelService(*k),
        Op::AddDestination(k, d) => Request::NewDestination {
            service: *k,
            dest: d.clone(),
        },
        Op::EditDestination(k, d) => Request::SetDestination {
            service: *k,
            dest: d.clone(),
        },
        Op::DelDestination(k, d) => Request::DelDestination {
            service: *k,
            dest: *d,
        },
        _ => return None,
    })
}

fn is_removal(op: &Op) -> bool {
    matches!(
        op,
        Op::DelService(_) | Op::DelDestination(..) | Op::DelAddress(_) | Op::DeleteDummy(_)
    )
}

/// Undo the claim of a create that failed, so a foreign object that raced us is never adopted.
fn unclaim(owned: &mut Owned, op: &Op, prior: &Owned) {
    match op {
        Op::CreateDummy(n) if !prior.links.contains(n) => {
            owned.links.remove(n);
        }
        Op::SetSysctl { key, .. } if !prior.sysctls.contains_key(key) => {
            owned.sysctls.remove(key);
        }
        Op::AddService(s) if !prior.services.contains(&s.key) => {
            owned.services.remove(&s.key);
        }
        Op::AddAddress(a) => {
            owned.addresses.retain(|x| x.key() != a.key());
            owned.addresses.extend(
                prior
                    .addresses
                    .iter()
                    .filter(|x| x.key() == a.key())
                    .cloned(),
            );
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lvs_ipvs::{Scheduler, Service, ServiceKey};
    use kube_lvs_net::AddressSpec;

    fn key() -> ServiceKey {
        ServiceKey::addr(
            kube_lvs_ipvs::Protocol::Tcp,
            "192.0.2.1".parse().expect("ip"),
            80,
        )
    }

    #[test]
    fn failed_create_does_not_adopt_foreign_object() {
        let prior = Owned::default();
        let mut owned = prior.clone();
        let op = Op::AddService(Service::new(key(), Scheduler::RoundRobin));
        claim(&mut owned, &op);
        assert!(owned.services.contains(&key()));
        unclaim(&mut owned, &op, &prior);
        assert!(owned.services.is_empty());
    }

    #[test]
    fn failed_address_add_restores_previous_record() {
        let old = AddressSpec::host("lo", "192.0.2.1".parse().expect("ip"), Some("lo:a".into()));
        let new = AddressSpec::host("lo", "192.0.2.1".parse().expect("ip"), Some("lo:b".into()));
        let mut prior = Owned::default();
        prior.addresses.insert(old.clone());
        let mut owned = prior.clone();
        let op = Op::AddAddress(new);
        claim(&mut owned, &op);
        unclaim(&mut owned, &op, &prior);
        assert_eq!(owned, prior);
    }

    #[test]
    fn only_ipvs_ops_are_batched() {
        assert!(ipvs_request(&Op::DelService(key())).is_some());
        assert!(ipvs_request(&Op::ForgetService(key())).is_none());
        assert!(ipvs_request(&Op::CreateDummy("kl0".into())).is_none());
        assert!(is_removal(&Op::DelService(key())));
        assert!(!is_removal(&Op::AddService(Service::new(
            key(),
            Scheduler::RoundRobin
        ))));
    }
}
