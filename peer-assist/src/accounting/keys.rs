//! Peer keys: an Ed25519 key pair per peer, its public half the peer's stable identity across
//! sessions and gateways (docs/LEDGER.md). A native node keeps the 32-byte seed in a file, as 64
//! hex digits, readable by its owner only.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

/// Why a key file could not be used: always the operator's to fix.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("no randomness for a new key")]
    Random,
}

/// An Ed25519 signing key.
pub struct NodeKey {
    pair: Ed25519KeyPair,
    public_hex: String,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &self.public_hex)
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// The key of a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        // `from_seed_unchecked` only fails on a seed of the wrong length, which the type rules out.
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).unwrap_or_else(|_| unreachable!());
        let public_hex = hex::encode(pair.public_key().as_ref());
        Self { pair, public_hex }
    }

    /// A new random key (not stored anywhere: a node without `--key-file`).
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| KeyError::Random)?;
        Ok(Self::from_seed(&seed))
    }

    /// The key in `path`, or a new one written there (mode 0600) when the file does not exist.
    /// A file others can read, or that does not hold 64 hex digits, is an error naming it. Two
    /// processes creating the same file at once end up with the same key.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let err = |message: String| KeyError::File {
            path: path.to_owned(),
            message,
        };
        let read = || -> Result<Self, KeyError> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err(format!("cannot read the key file: {e}")))?;
            check_private(path).map_err(err)?;
            let seed = parse_seed(text.trim()).map_err(err)?;
            Ok(Self::from_seed(&seed))
        };
        match std::fs::metadata(path) {
            Ok(_) => read(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut seed)
                    .map_err(|_| KeyError::Random)?;
                // Written whole under a temporary name, then linked into place: the link fails if
                // another process got there first, and then its key is the key.
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                write_private(&tmp, format!("{}\n", hex::encode(seed)).as_bytes())
                    .map_err(|e| err(format!("cannot create the key file: {e}")))?;
                let linked = std::fs::hard_link(&tmp, path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok(Self::from_seed(&seed)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(),
                    Err(e) => Err(err(format!("cannot create the key file: {e}"))),
                }
            }
            Err(e) => Err(err(format!("cannot read the key file: {e}"))),
        }
    }

    /// The public key, 64 lowercase hex digits.
    pub fn public_hex(&self) -> &str {
        &self.public_hex
    }

    /// The Ed25519 signature of `message` (64 bytes).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

fn parse_seed(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text).map_err(|_| "expected 64 hex digits (an Ed25519 seed)")?;
    bytes
        .try_into()
        .map_err(|_| "expected 64 hex digits (an Ed25519 seed)".to_owned())
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "the key file is readable by others (mode {:o}): chmod 600 it",
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), String> {
    Ok(())
}

/// Writes a new file that only its owner can read (it must not exist yet).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("nodekey-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        let first = NodeKey::load_or_create(&path).unwrap();
        let again = NodeKey::load_or_create(&path).unwrap();
        assert_eq!(first.public_hex(), again.public_hex());
        assert_eq!(first.public_hex().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = NodeKey::load_or_create(&path).unwrap_err().to_string();
            assert!(e.contains("readable by others"), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, "not hex").unwrap();
        let e = NodeKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("node.key") && e.contains("64 hex digits"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
