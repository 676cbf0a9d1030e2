//! IPVS over generic netlink.
//!
//! Layers: [`types`] (plain data), [`message`] (pure encode/decode of requests and replies),
//! [`IpvsHandle`] (the one place that does socket I/O; batches many requests per syscall).

mod attr;
mod consts;
pub mod message;
pub mod types;

pub use attr::DecodeReport;
pub use message::{Incoming, IpvsPayload, Reply, Request};
pub use types::*;
mod error;
mod handle;

pub use error::{Error, Result};
pub use handle::{DaemonRequests, DestinationRequests, HandleStats, IpvsHandle, ServiceRequests};
