//! Leader election over a `coordination.k8s.io/v1` Lease: one replica writes, the others wait.
//!
//! Optimistic concurrency does the arbitration: every take-over or renewal is a `replace` carrying
//! the resourceVersion we read, so two candidates can never both succeed. A leader that fails to
//! renew before the lease expires stops (the process exits and the Deployment restarts it), the
//! same contract as client-go's leader election.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Error as KubeError};
use tracing::{debug, info};

use crate::Error;

/// How long a lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and candidates retry.
pub const RETRY: Duration = Duration::from_secs(2);

/// Whether `holder` may take the lease described by `spec` at `now` (pure).
pub fn may_acquire(spec: Option<&LeaseSpec>, holder: &str, now: Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == holder => true,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .map(i64::from)
                .unwrap_or(LEASE_DURATION.as_secs() as i64);
            match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
                Some(t) => t.0 + SignedDuration::from_secs(duration) < now,
                None => true,
            }
        }
    }
}

/// A lease held or wanted by this process.
pub struct LeaderLease {
    api: Api<Lease>,
    name: String,
    holder: String,
}

impl LeaderLease {
    pub fn new(client: Client, namespace: &str, name: &str, holder: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            holder: holder.to_string(),
        }
    }

    /// One attempt to acquire or renew. `Ok(true)` when we hold the lease afterwards.
    pub async fn try_acquire(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await.map_err(Error::Kube)?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        if !may_acquire(spec, &self.holder, now) {
            return Ok(false);
        }
        let ours = spec.and_then(|s| s.holder_identity.as_deref()) == Some(self.holder.as_str());
        let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: current
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.holder.clone()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: if ours {
                    spec.and_then(|s| s.acquire_time.clone())
                } else {
                    Some(MicroTime(now))
                },
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
                ..Default::default()
            }),
        };
        let result = match current {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(_) => {
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                if !ours {
                    info!(holder = %self.holder, lease = %self.name, "acquired leadership");
                }
                Ok(true)
            }
            // Someone else won the race; not an error.
            Err(KubeError::Api(s)) if s.code == 409 => {
                debug!("lost the lease race");
                Ok(false)
            }
            Err(e) => Err(Error::Kube(e)),
        }
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) -> Result<(), Error> {
        loop {
            if self.try_acquire().await? {
                return Ok(());
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Renews forever; returns when the lease is lost or cannot be renewed in time.
    pub async fn keep(&self) -> Error {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RETRY).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return Error::LeadershipLost,
                Err(e) if last_ok.elapsed() > LEASE_DURATION - RETRY => return e,
                Err(e) => debug!(error = %e, "lease renewal failed; retrying"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn free_or_own_lease_can_be_taken() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert!(may_acquire(None, "a", now));
        assert!(may_acquire(Some(&LeaseSpec::default()), "a", now));
        assert!(may_acquire(Some(&spec("a", 999, 15)), "a", now));
    }

    #[test]
    fn foreign_lease_only_after_expiry() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert!(!may_acquire(Some(&spec("b", 990, 15)), "a", now));
        assert!(may_acquire(Some(&spec("b", 980, 15)), "a", now));
    }
}
