//! kube-lvs node-agent.

pub mod apply;
pub mod build;
pub mod director;
pub mod error;
pub mod model;
pub mod plan;
pub mod report;
pub mod run;
