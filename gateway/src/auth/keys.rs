//! The signing keys: a file of `ID:HEX` lines (blank lines and `#` comments allowed). Every key
//! verifies; the last one signs, so rotation is "append a key, later remove the oldest".

use std::path::Path;

/// Shortest key accepted, in bytes (128 bits).
pub const MIN_KEY_BYTES: usize = 16;
/// Longest key id.
pub const MAX_ID_LEN: usize = 32;

/// Why a key file cannot be used. Names the file and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("no key (expected lines such as \"k1:<32 or more hex digits>\")")]
    Empty,
}

/// The keys of a key file, in file order.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for KeySet {
    /// Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("KeySet").field("ids", &ids).finish()
    }
}

/// A key id: 1 to 32 of `A-Z a-z 0-9 - _`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl KeySet {
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |message: String| KeyError::Line {
                line: i + 1,
                message,
            };
            let (id, hex_key) = line
                .split_once(':')
                .ok_or_else(|| error("expected ID:HEX".to_owned()))?;
            let (id, hex_key) = (id.trim(), hex_key.trim());
            if !valid_id(id) {
                return Err(error(format!(
                    "key id {id:?}: 1 to {MAX_ID_LEN} of A-Z, a-z, 0-9, '-', '_'"
                )));
            }
            let key =
                hex::decode(hex_key).map_err(|_| error(format!("key {id}: not hexadecimal")))?;
            if key.len() < MIN_KEY_BYTES {
                return Err(error(format!(
                    "key {id}: {} bytes, at least {MIN_KEY_BYTES} needed",
                    key.len()
                )));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(error(format!("key id {id} appears twice")));
            }
            keys.push((id.to_owned(), key));
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// The key named `id`.
    pub fn get(&self, id: &str) -> Option<&[u8]> {
        self.keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, key)| key.as_slice())
    }

    /// The signing key: the last one.
    pub fn newest(&self) -> (&str, &[u8]) {
        // `parse` refuses an empty set.
        self.keys
            .last()
            .map_or(("", &[][..]), |(id, key)| (id.as_str(), key.as_slice()))
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_parse_with_clear_errors() {
        let keys = KeySet::parse(" a : 00112233445566778899aabbccddeeff \n\n# comment\nb:ffeeddccbbaa99887766554433221100\n").unwrap();
        assert_eq!(keys.ids().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(keys.newest().0, "b");
        assert!(
            !format!("{keys:?}").contains("00112233"),
            "no key material in Debug"
        );
        let err = |t: &str| KeySet::parse(t).unwrap_err().to_string();
        assert!(err("a").contains("line 1: expected ID:HEX"));
        assert!(err("a:zz").contains("not hexadecimal"));
        assert!(err("a:0011").contains("at least 16"));
        assert!(err("a b:00112233445566778899aabbccddeeff").contains("key id"));
        assert!(
            err("a:00112233445566778899aabbccddeeff\na:00112233445566778899aabbccddeeff")
                .contains("line 2: key id a appears twice")
        );
        assert!(err("# nothing\n").contains("no key"));
        let missing = KeySet::load(Path::new("/nonexistent/keys")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/keys"));
    }
}
