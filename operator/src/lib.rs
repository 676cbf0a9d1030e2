//! kube-lvs operator.
