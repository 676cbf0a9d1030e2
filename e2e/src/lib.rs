//! kube-lvs test bed.
pub mod controlplane;
