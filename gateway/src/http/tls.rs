//! TLS towards viewers (rustls with ring): HTTP/2 and HTTP/1.1 by ALPN, and a certificate that can
//! be replaced without a restart. Each new handshake takes the certificate in use at that moment;
//! connections already open keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate or key cannot be used. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The files' identity when they were loaded: a change of either reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(SystemTime, u64)>, Option<(SystemTime, u64)>);

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Loads a PEM certificate chain and its key.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| TlsError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })
    };
    let invalid = |path: &Path, message: String| TlsError::Invalid {
        path: path.to_owned(),
        message,
    };
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(cert, format!("not a PEM certificate chain: {e:?}")))?;
    if chain.is_empty() {
        return Err(invalid(cert, "no certificate in the file".to_owned()));
    }
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        invalid(
            key,
            format!("no usable private key (PKCS#8, PKCS#1 or SEC1): {e:?}"),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider)
        .map_err(|e| invalid(key, format!("does not match {}: {e}", cert.display())))?;
    Ok(certified)
}

/// The certificate in use, and where it comes from.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Stamp)>,
}

impl CertStore {
    /// Loads the files (a clear error naming the file if they cannot be used).
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let stamp = Stamp(stamp_of(cert), stamp_of(key));
        let certified = load(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new((Arc::new(certified), stamp)),
        }))
    }

    /// Whether the files changed since they were loaded.
    pub fn changed(&self) -> bool {
        let stamp = Stamp(stamp_of(&self.cert), stamp_of(&self.key));
        self.current.read().map(|c| c.1 != stamp).unwrap_or(true)
    }

    /// Loads the files again. On error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = Stamp(stamp_of(&self.cert), stamp_of(&self.key));
        let certified = load(&self.cert, &self.key)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = (Arc::new(certified), stamp);
        Ok(())
    }

    /// The server configuration: this store resolves the certificate of each handshake.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions();
        let mut config = match builder {
            Ok(b) => b
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>),
            // The ring provider supports the default versions; this cannot happen.
            Err(_) => rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()).0,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a.test");
        let missing = dir.path().join("missing.pem");
        let err = load(&missing, &key).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let err = load(&key, &key).unwrap_err().to_string();
        assert!(err.contains(&key.display().to_string()), "{err}");
        let (_, other_key) = write_pair(dir.path(), "b.test");
        let err = load(&cert, &other_key).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem").unwrap();
        assert!(load(&garbage, &key).is_err());
    }

    #[test]
    fn a_replaced_file_is_noticed_and_a_bad_one_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a.test");
        let store = CertStore::open(&cert, &key).unwrap();
        assert!(!store.changed());
        let (c2, k2) = write_pair(dir.path(), "b.test");
        std::fs::copy(&c2, &cert).unwrap();
        std::fs::copy(&k2, &key).unwrap();
        // Same size files can share an mtime at coarse resolution; the length differs here or the
        // time does, and either is a change.
        std::fs::write(
            &cert,
            format!("{}\n", std::fs::read_to_string(&c2).unwrap()),
        )
        .unwrap();
        assert!(store.changed());
        store.reload().unwrap();
        assert!(!store.changed());
        std::fs::write(&key, "broken").unwrap();
        assert!(store.reload().is_err());
    }
}
