//! kube-lvs node-agent.
