//! VRRP v2 (RFC 3768) and v3 (RFC 5798) speaker, interoperable with keepalived.
//!
//! * [`machine`]: the pure protocol state machine and timer functions;
//! * [`packet`]: advertisement encoding/decoding/validation;
//! * [`counters`]: Prometheus-style counters;
//! * [`driver`]: raw sockets, timers, VIP add/remove and gratuitous announcements.

pub mod counters;
pub mod driver;
pub mod machine;
pub mod packet;

pub use counters::Counters;
pub use machine::{Action, Event, Machine, MachineConfig, State, TimerKind};
pub use packet::{Advert, Auth, DropReason, Family, Version};
