//! kube-lvs operator: the decisions that need more than one object (listener conflicts, VRRP
//! router ids, director priorities) and the aggregation of per-node reports into status.

pub mod assign;
pub mod controller;
pub mod lease;
pub mod status;

/// Operator errors; the variant names double as metric labels.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("the {0} cache closed before it synced")]
    CacheClosed(&'static str),
    #[error("leadership lost")]
    LeadershipLost,
}
