//! Addresses, sysctls and nftables rules owned by the agent.
