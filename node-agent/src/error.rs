//! Typed errors of the node-agent data plane.

use std::path::PathBuf;

use kube_lvs_net::NetError;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("IPVS: {0}")]
    Ipvs(#[from] kube_lvs_ipvs::Error),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("state file {path}: {source}")]
    StateIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {source}")]
    StateDecode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("desired state: {0}")]
    Desired(String),
}

impl DataplaneError {
    /// Stable label for metrics and status reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ipvs(e) => e.kind(),
            Self::Net(NetError::AlreadyExists { .. }) => "exists",
            Self::Net(e) if e.is_not_found() => "not_found",
            Self::Net(NetError::NotSupported { .. }) => "not_supported",
            Self::Net(NetError::PermissionDenied { .. }) => "permission",
            Self::Net(_) => "net",
            Self::StateIo { .. } | Self::StateDecode { .. } => "state",
            Self::Desired(_) => "desired",
        }
    }

    /// Whether the error says the object was already absent.
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Ipvs(e) => e.is_not_found(),
            Self::Net(e) => e.is_not_found(),
            _ => false,
        }
    }
}

pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;
