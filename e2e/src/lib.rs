//! kube-lvs test bed.
