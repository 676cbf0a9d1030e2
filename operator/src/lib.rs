//! kube-lvs operator: the decisions that need more than one object (listener conflicts, VRRP
//! router ids, director priorities) and the aggregation of per-node reports into status.

pub mod assign;
