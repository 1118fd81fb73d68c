//! The gate at the edge: which paths need a token, and whether a request's token grants it. Checked
//! before any cache lookup, for playlists, segments, keys, digests and swarms alike.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use http::header::COOKIE;
use http::{HeaderMap, HeaderName};

use super::{from_request, is_protected, verify, KeyError, KeySet, TokenError};
use crate::config::AuthConfig;

fn stamp_of(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// A request's token was checked and grants what it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub token: String,
    /// It came as the `token` query parameter (so playlists must carry it on), not as a cookie.
    pub from_query: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct Gate {
    key_file: PathBuf,
    /// The key file's modification time and length when last read.
    stamp: RwLock<Option<(SystemTime, u64)>>,
    keys: RwLock<Arc<KeySet>>,
    protect: Vec<String>,
    client_ip_header: Option<HeaderName>,
}

impl Gate {
    /// The gate `config` describes; `None` when no path is protected and no key file is set.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Arc<Gate>>, KeyError> {
        let Some(key_file) = &config.key_file else {
            return Ok(None);
        };
        let keys = KeySet::load(key_file).map_err(|e| match e {
            KeyError::Line { line, message } => KeyError::Read {
                path: key_file.display().to_string(),
                message: format!("line {line}: {message}"),
            },
            other => other,
        })?;
        Ok(Some(Arc::new(Gate {
            stamp: RwLock::new(stamp_of(key_file)),
            key_file: key_file.clone(),
            keys: RwLock::new(Arc::new(keys)),
            protect: config.protect.clone(),
            client_ip_header: client_ip_header(config),
        })))
    }

    /// Whether `path` needs a token.
    pub fn protects(&self, path: &str) -> bool {
        is_protected(&self.protect, path)
    }

    pub fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether the key file changed since it was last read.
    pub fn changed(&self) -> bool {
        *self.stamp.read().unwrap_or_else(|e| e.into_inner()) != stamp_of(&self.key_file)
    }

    /// Reads the key file again; on error the keys in use stay. Returns whether they changed.
    pub fn reload(&self) -> Result<bool, KeyError> {
        *self.stamp.write().unwrap_or_else(|e| e.into_inner()) = stamp_of(&self.key_file);
        let fresh = KeySet::load(&self.key_file)?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let changed = **keys != fresh;
        *keys = Arc::new(fresh);
        Ok(changed)
    }

    pub fn key_file(&self) -> &std::path::Path {
        &self.key_file
    }

    /// The viewer's address: the last entry of the trusted header (the address the load balancer
    /// saw), else the connection's.
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        client_ip(self.client_ip_header.as_ref(), headers, peer)
    }

    /// Whether the request for `path` may go on: `Ok(None)` when the path is not protected,
    /// `Ok(Some(granted))` with a valid token, else why not.
    pub fn check(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        now: SystemTime,
    ) -> Result<Option<Granted>, TokenError> {
        if !self.protects(path) {
            return Ok(None);
        }
        let cookies = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let (token, from_query) = from_request(query, cookies).ok_or(TokenError::Missing)?;
        self.grant(&token, path, headers, peer, now)?;
        Ok(Some(Granted { token, from_query }))
    }

    /// Whether `token` grants `path` to this client.
    pub fn grant(
        &self,
        token: &str,
        path: &str,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        self.grant_to(token, path, self.client_ip(headers, peer), now)
    }

    /// Whether `token` grants `path` to a client at `client` (already worked out).
    pub fn grant_to(
        &self,
        token: &str,
        path: &str,
        client: Option<IpAddr>,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        verify(&self.keys(), token, path, client, now).map(|_| ())
    }
}

/// `auth.client_ip_header` as a header name; `None` when unset (the connection's address counts).
/// The configuration was validated at load, so an invalid name cannot reach here.
pub fn client_ip_header(config: &AuthConfig) -> Option<HeaderName> {
    (!config.client_ip_header.is_empty())
        .then(|| HeaderName::from_bytes(config.client_ip_header.as_bytes()).ok())
        .flatten()
}

/// The viewer's address: the last entry of the trusted `header` (the address the nearest load
/// balancer saw, which appends it), else the connection's. A header that is configured but absent
/// or unparsable gives `None`: the address is unknown, never the balancer's.
pub fn client_ip(
    header: Option<&HeaderName>,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Option<IpAddr> {
    let Some(name) = header else {
        return peer;
    };
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|ip| ip.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn gate(dir: &tempfile::TempDir, header: &str) -> Arc<Gate> {
        let file = dir.path().join("keys");
        std::fs::write(&file, "k1:00112233445566778899aabbccddeeff\n").unwrap();
        let config = AuthConfig {
            key_file: Some(file),
            protect: vec!["/live/".into()],
            client_ip_header: header.into(),
        };
        Gate::from_config(&config).unwrap().unwrap()
    }

    #[test]
    fn only_protected_paths_need_a_token_and_cookies_work_too() {
        let dir = tempfile::tempdir().unwrap();
        let g = gate(&dir, "");
        let now = SystemTime::now();
        let token = super::super::mint(&g.keys(), "/live/", Duration::from_secs(60), None, now);
        let none = HeaderMap::new();
        assert_eq!(g.check("/vod/a.ts", None, &none, None, now), Ok(None));
        assert_eq!(
            g.check("/live/a.ts", None, &none, None, now),
            Err(TokenError::Missing)
        );
        let q = format!("x=1&token={token}");
        let granted = g
            .check("/live/a.ts", Some(&q), &none, None, now)
            .unwrap()
            .unwrap();
        assert!(granted.from_query);
        let mut cookie = HeaderMap::new();
        cookie.insert(COOKIE, format!("token={token}").parse().unwrap());
        let granted = g
            .check("/live/a.ts", None, &cookie, None, now)
            .unwrap()
            .unwrap();
        assert!(!granted.from_query);
    }

    #[test]
    fn the_client_address_comes_from_the_trusted_header_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.9".parse().unwrap(),
        );
        assert_eq!(
            gate(&dir, "x-forwarded-for").client_ip(&headers, Some(peer)),
            "203.0.113.9".parse().ok()
        );
        assert_eq!(gate(&dir, "").client_ip(&headers, Some(peer)), Some(peer));
    }

    #[test]
    fn keys_reload_and_a_bad_file_keeps_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let g = gate(&dir, "");
        let file = dir.path().join("keys");
        std::fs::write(
            &file,
            "k1:00112233445566778899aabbccddeeff\nk2:ffeeddccbbaa99887766554433221100\n",
        )
        .unwrap();
        assert_eq!(g.reload(), Ok(true));
        assert_eq!(g.keys().newest().0, "k2");
        std::fs::write(&file, "garbage\n").unwrap();
        assert!(g.reload().is_err());
        assert_eq!(g.keys().newest().0, "k2", "the keys in use stay");
    }
}
