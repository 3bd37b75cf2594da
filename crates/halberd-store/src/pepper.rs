//! The server-side secret under which key hashes are computed.
//!
//! A stolen database alone does not let anyone test guesses against the stored
//! hashes: that takes the pepper too, which lives outside the database (a file
//! readable only by its owner, or an environment variable).

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::StoreError;

const PEPPER_BYTES: usize = 32;

/// 32 bytes of secret. Its `Debug` prints nothing of it.
#[derive(Clone)]
pub struct Pepper(Vec<u8>);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(..)")
    }
}

/// Refuses a pepper file that others than its owner may read or write, as
/// ssh refuses such a private key: with it and a copy of the store, a key's
/// HMAC could be checked offline.
fn check_private(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| StoreError::Pepper(format!("cannot read {}: {e}", path.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::Pepper(format!(
                "{} is readable or writable by others (mode {:03o}): run 'chmod 600 {}' (in Kubernetes, mount the secret with defaultMode 0400), or set HALBERD_PEPPER instead",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
    }
    Ok(())
}

impl Pepper {
    /// A pepper given as hex (as in `HALBERD_PEPPER`): at least 32 bytes.
    pub fn from_hex(s: &str) -> Result<Pepper, StoreError> {
        let s = s.trim();
        if s.len() < PEPPER_BYTES * 2 || !s.len().is_multiple_of(2) {
            return Err(StoreError::Pepper(format!(
                "must be at least {} hex digits",
                PEPPER_BYTES * 2
            )));
        }
        let bytes: Option<Vec<u8>> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect();
        bytes
            .map(Pepper)
            .ok_or_else(|| StoreError::Pepper("must be hex digits only".into()))
    }

    /// Reads the pepper file, or creates it (mode 0600) with fresh random bytes
    /// when it does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Pepper, StoreError> {
        match fs::read_to_string(path) {
            Ok(s) => {
                check_private(path)?;
                return Pepper::from_hex(&s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Pepper(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }
        let mut bytes = vec![0u8; PEPPER_BYTES];
        getrandom::fill(&mut bytes).map_err(|_| StoreError::Random)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .map_err(|e| StoreError::Pepper(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(path) {
            Ok(mut f) => {
                f.write_all(hex.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| {
                        StoreError::Pepper(format!("cannot write {}: {e}", path.display()))
                    })?;
                Ok(Pepper(bytes))
            }
            // Another process created it between our read and our create: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Pepper::load_or_create(path),
            Err(e) => Err(StoreError::Pepper(format!(
                "cannot create {}: {e}",
                path.display()
            ))),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/halberd.pepper");
        let a = Pepper::load_or_create(&path).unwrap();
        let b = Pepper::load_or_create(&path).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        assert_eq!(a.bytes().len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn a_pepper_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("halberd.pepper");
        let made = Pepper::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Pepper::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("644"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(Pepper::load_or_create(&path).unwrap().bytes(), made.bytes());
    }

    #[test]
    fn hex_validation() {
        assert!(Pepper::from_hex(&"ab".repeat(32)).is_ok());
        assert!(Pepper::from_hex("abcd").is_err());
        assert!(Pepper::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(
            format!("{:?}", Pepper::from_hex(&"ab".repeat(32)).unwrap()),
            "Pepper(..)"
        );
    }
}
