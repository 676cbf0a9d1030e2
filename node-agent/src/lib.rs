//! kube-lvs node-agent.

pub mod model;
pub mod plan;
