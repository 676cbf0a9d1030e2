//! kube-lvs test bed.
pub mod controlplane;
pub mod topology;
pub mod vm;
