//! IPVS over generic netlink.

pub mod types;

pub use types::*;
