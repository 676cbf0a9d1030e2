//! Typed IPVS errors, classified by errno (never by message text).

/// Errors of the IPVS client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `EEXIST`: the service or destination is already there.
    #[error("{op}: already exists")]
    Exists { op: &'static str },
    /// `ESRCH`/`ENOENT`: no such service, destination, daemon (or scheduler module).
    #[error("{op}: not found (errno {errno})")]
    NotFound { op: &'static str, errno: i32 },
    /// The running kernel lacks the feature (no IPVS, unknown attribute, family, scheduler…).
    #[error("{op}: not supported by this kernel (errno {errno})")]
    NotSupported { op: &'static str, errno: i32 },
    /// `EPERM`/`EACCES`: CAP_NET_ADMIN missing.
    #[error("{op}: permission denied (errno {errno})")]
    Permission { op: &'static str, errno: i32 },
    /// Any other errno from the kernel (e.g. `EINVAL`, `EBUSY`).
    #[error("{op}: kernel error (errno {errno})")]
    Kernel { op: &'static str, errno: i32 },
    /// Socket I/O failure.
    #[error("netlink I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A reply could not be understood at all (individual bad attributes are only counted).
    #[error("decode: {0}")]
    Decode(String),
}

impl Error {
    /// Classifies a positive errno returned by the kernel for operation `op`.
    pub fn from_errno(op: &'static str, errno: i32) -> Self {
        match errno {
            libc::EEXIST => Error::Exists { op },
            libc::ESRCH | libc::ENOENT => Error::NotFound { op, errno },
            libc::EOPNOTSUPP
            | libc::ENOPROTOOPT
            | libc::EAFNOSUPPORT
            | libc::EPROTONOSUPPORT
            | libc::ENOSYS
            | ENOTSUPP => Error::NotSupported { op, errno },
            libc::EPERM | libc::EACCES => Error::Permission { op, errno },
            _ => Error::Kernel { op, errno },
        }
    }

    /// The kernel errno, when the error came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Exists { .. } => Some(libc::EEXIST),
            Error::NotFound { errno, .. }
            | Error::NotSupported { errno, .. }
            | Error::Permission { errno, .. }
            | Error::Kernel { errno, .. } => Some(*errno),
            Error::Io(e) => e.raw_os_error(),
            Error::Decode(_) => None,
        }
    }

    /// Stable label for metrics (`reason="exists"` …).
    pub const fn kind(&self) -> &'static str {
        match self {
            Error::Exists { .. } => "exists",
            Error::NotFound { .. } => "not_found",
            Error::NotSupported { .. } => "not_supported",
            Error::Permission { .. } => "permission",
            Error::Kernel { .. } => "kernel",
            Error::Io(_) => "io",
            Error::Decode(_) => "decode",
        }
    }

    pub const fn is_exists(&self) -> bool {
        matches!(self, Error::Exists { .. })
    }

    pub const fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// Kernel-internal `ENOTSUPP`, which some paths leak to user space.
const ENOTSUPP: i32 = 524;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classification() {
        assert!(Error::from_errno("x", libc::EEXIST).is_exists());
        assert!(Error::from_errno("x", libc::ESRCH).is_not_found());
        assert!(Error::from_errno("x", libc::ENOENT).is_not_found());
        for e in [libc::EOPNOTSUPP, libc::ENOPROTOOPT, libc::EAFNOSUPPORT, 524] {
            assert_eq!(Error::from_errno("x", e).kind(), "not_supported");
        }
        assert_eq!(Error::from_errno("x", libc::EPERM).kind(), "permission");
        let e = Error::from_errno("x", libc::EINVAL);
        assert_eq!(e.kind(), "kernel");
        assert_eq!(e.errno(), Some(libc::EINVAL));
    }
}
