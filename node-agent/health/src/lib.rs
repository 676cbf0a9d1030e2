//! Health checks for real servers: checkers (I/O, one probe each), a pure rise/fall tracker,
//! a manager that runs checks as the desired set changes, and the pure effect logic that turns
//! health into IPVS destination weights.

pub mod api;
pub mod checker;
pub mod dns_wire;
pub mod effect;
pub mod error;
pub mod manager;
pub mod metrics;
pub mod runtime;
pub mod spec;
pub mod tracker;

pub use error::{ProbeError, SpecError};
pub use manager::{Manager, ManagerConfig, ProbeInfo, Transition, UpdateReport};
pub use runtime::ProbeRuntime;
pub use spec::{CheckKey, CheckSpec, InitialState, Probe, Timing};
