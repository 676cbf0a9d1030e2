//! kube-lvs node-agent.

pub mod apply;
pub mod error;
pub mod model;
pub mod plan;
