//! kube-lvs API types.
