//! Typed errors of the `kube-lvs-net` crate.

use std::io;

/// What went wrong while reading or changing addresses, links, sysctls or nft rules.
///
/// Variants are decided from errno values and exit statuses, never from message text, so callers can
/// branch on them (e.g. treat `AlreadyExists` on add as success when adopting).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("invalid address label {label:?} for interface {ifname}: {reason}")]
    InvalidLabel {
        ifname: String,
        label: String,
        reason: &'static str,
    },
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what}: operation not supported by this kernel")]
    NotSupported { what: String },
    #[error("{what}: permission denied")]
    PermissionDenied { what: String },
    #[error("{what}: netlink error {errno}")]
    Netlink { what: String, errno: i32 },
    #[error("{what}: netlink transport: {message}")]
    Transport { what: String, message: String },
    #[error("sysctl {key}: {source}")]
    SysctlIo { key: String, source: io::Error },
    #[error("sysctl {key} does not exist (module not loaded or interface missing)")]
    SysctlMissing { key: String },
    #[error("invalid sysctl name {0:?}")]
    InvalidSysctlKey(String),
    #[error("nft: {0}")]
    NftSpawn(io::Error),
    #[error("nft exited with status {status:?}: {stderr}")]
    NftFailed { status: Option<i32>, stderr: String },
    #[error("nft produced output we cannot decode: {0}")]
    NftDecode(String),
}

impl NetError {
    /// Classify an rtnetlink error by its errno.
    pub(crate) fn from_rtnetlink(what: impl Into<String>, err: rtnetlink::Error) -> Self {
        let what = what.into();
        match err {
            rtnetlink::Error::NetlinkError(msg) => {
                // The kernel sends negative errno values.
                let errno = msg.code.map(|c| -c.get()).unwrap_or(0);
                Self::from_errno(what, errno)
            }
            other => Self::Transport {
                what,
                message: other.to_string(),
            },
        }
    }

    pub(crate) fn from_errno(what: String, errno: i32) -> Self {
        use nix::errno::Errno;
        match Errno::from_raw(errno) {
            Errno::EEXIST => Self::AlreadyExists { what },
            Errno::EADDRNOTAVAIL | Errno::ENOENT | Errno::ESRCH | Errno::ENODEV => {
                Self::NotFound { what }
            }
            Errno::EOPNOTSUPP | Errno::EAFNOSUPPORT | Errno::EPROTONOSUPPORT => {
                Self::NotSupported { what }
            }
            Errno::EPERM | Errno::EACCES => Self::PermissionDenied { what },
            _ => Self::Netlink { what, errno },
        }
    }

    /// Whether the error means "the object is already there".
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists { .. })
    }

    /// Whether the error means "the object is not there".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::NoSuchInterface(_))
    }
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classification() {
        assert!(NetError::from_errno("x".into(), libc_eexist()).is_already_exists());
        assert!(NetError::from_errno("x".into(), 99).is_not_found()); // EADDRNOTAVAIL
        assert!(matches!(
            NetError::from_errno("x".into(), 95),
            NetError::NotSupported { .. }
        ));
        assert!(matches!(
            NetError::from_errno("x".into(), 1),
            NetError::PermissionDenied { .. }
        ));
        assert!(matches!(
            NetError::from_errno("x".into(), 22),
            NetError::Netlink { errno: 22, .. }
        ));
    }

    fn libc_eexist() -> i32 {
        nix::errno::Errno::EEXIST as i32
    }
}
