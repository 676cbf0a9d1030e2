//! Ownership state file, under /run/kube-lvs by default: /run is cleared on reboot exactly when the
//! kernel state it describes disappears.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{DataplaneError, Result};
use crate::model::Owned;

pub const DEFAULT_STATE_PATH: &str = "/run/kube-lvs/dataplane-state.json";

#[derive(Clone, Debug)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> DataplaneError {
        DataplaneError::StateIo {
            path: self.path.clone(),
            source,
        }
    }

    /// The recorded ownership; empty when no file exists yet.
    pub fn load(&self) -> Result<Owned> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| DataplaneError::StateDecode {
                    path: self.path.clone(),
                    source,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Owned::default()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Write atomically (temp file + fsync + rename) so a crash never leaves half a record.
    pub fn save(&self, owned: &Owned) -> Result<()> {
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let bytes =
            serde_json::to_vec_pretty(owned).map_err(|source| DataplaneError::StateDecode {
                path: self.path.clone(),
                source,
            })?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
            f.write_all(&bytes).map_err(|e| self.io(e))?;
            f.sync_all().map_err(|e| self.io(e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lvs_ipvs::{Protocol, ServiceKey};
    use kube_lvs_net::{AddressSpec, SysctlKey};

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path().join("sub/state.json"));
        assert_eq!(store.load().expect("empty"), Owned::default());
        let mut owned = Owned::default();
        owned.services.insert(ServiceKey::addr(
            Protocol::Tcp,
            "192.0.2.1".parse().expect("ip"),
            80,
        ));
        owned.addresses.insert(AddressSpec::host(
            "lo",
            "192.0.2.1".parse().expect("ip"),
            Some("lo:kl".into()),
        ));
        owned.sysctls.insert(SysctlKey::ip_forward(), "0".into());
        store.save(&owned).expect("save");
        assert_eq!(store.load().expect("load"), owned);
    }

    #[test]
    fn corrupt_file_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        std::fs::write(&p, b"{not json").expect("write");
        assert!(matches!(
            StateStore::new(p).load(),
            Err(DataplaneError::StateDecode { .. })
        ));
    }
}
