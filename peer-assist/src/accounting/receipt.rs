//! ReceiptBody receipts: what a receiver signs once it has verified bytes a peer sent it against the
//! gateway's digest (docs/LEDGER.md §2). Pure: building the canonical text, signing, checking a
//! signature and the fields' form. Whether the gateway believes a receipt is the tracker's
//! business (`tracker::receipts`).

use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::keys::NodeKey;
use crate::protocol::frame::validate_segment_id;

/// The first line of every receipt's signed text.
pub const RECEIPT_DOMAIN: &str = "hls-p2p-receipt/1";
/// Longest swarm label in a receipt, in bytes.
pub const MAX_SWARM_LEN: usize = 1024;

/// The receiver's signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alg {
    /// Ed25519: the key is 32 bytes, the signature 64 (native nodes; browsers that have it).
    Ed25519,
    /// ECDSA P-256 with SHA-256: the key is the 65-byte uncompressed point, the signature r‖s
    /// (64 bytes), as WebCrypto makes them (browsers without Ed25519).
    P256,
}

impl Alg {
    pub fn label(self) -> &'static str {
        match self {
            Alg::Ed25519 => "ed25519",
            Alg::P256 => "p256",
        }
    }

    fn key_len(self) -> usize {
        match self {
            Alg::Ed25519 => 32,
            Alg::P256 => 65,
        }
    }
}

/// One signed receipt, as it travels in a `report` (`receipts`) and is stored in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The receiver's scheme (its key and this signature).
    pub alg: Alg,
    /// The uploader's public key, hex (64 digits for Ed25519, 130 for P-256).
    pub uploader: String,
    /// The receiver's public key, hex: the key that signed.
    pub receiver: String,
    /// The swarm the bytes were exchanged in (the `swarm` of the receiver's `welcome`).
    pub swarm: String,
    /// The segment (or init section) path on the gateway.
    pub segment: String,
    /// The gateway's digest the bytes were verified against (lowercase hex SHA-256).
    pub sha256: String,
    /// Verified bytes the uploader sent (the whole segment, or the part it sent).
    pub bytes: u64,
    /// When the receiver verified them: Unix time in milliseconds.
    pub time: u64,
    /// 16 random bytes, hex: never used twice by one receiver.
    pub nonce: String,
    /// The signature over [`Receipt::signed_text`], hex.
    pub sig: String,
}

/// Why a receipt was not credited: the label of `p2p_receipts_rejected_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// A field is not of its form (hex lengths, a path, an empty swarm).
    Malformed,
    /// The signature does not verify with the receiver key.
    Signature,
    /// The receiver key is not the key the reporting peer announced in `join`.
    Receiver,
    /// The uploader and the receiver are the same key.
    SelfDealing,
    /// The receiver was not in that swarm at that time.
    Swarm,
    /// The tracker never listed that uploader to that receiver.
    Uploader,
    /// Not a digest the gateway published for that segment.
    Digest,
    /// More bytes than the segment has (or none).
    Size,
    /// More than the receiver reported from peers.
    NotReported,
    /// Too old, or in the future.
    Time,
    /// A nonce this receiver already used.
    Replay,
    /// The receiver already credited the whole segment.
    Duplicate,
    /// The ledger could not store it (ours: the receipt is not accepted; the peer may send it
    /// again).
    Storage,
}

impl Rejection {
    pub const ALL: [Rejection; 13] = [
        Rejection::Malformed,
        Rejection::Signature,
        Rejection::Receiver,
        Rejection::SelfDealing,
        Rejection::Swarm,
        Rejection::Uploader,
        Rejection::Digest,
        Rejection::Size,
        Rejection::NotReported,
        Rejection::Time,
        Rejection::Replay,
        Rejection::Duplicate,
        Rejection::Storage,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::Signature => "signature",
            Rejection::Receiver => "receiver",
            Rejection::SelfDealing => "self",
            Rejection::Swarm => "swarm",
            Rejection::Uploader => "uploader",
            Rejection::Digest => "digest",
            Rejection::Size => "size",
            Rejection::NotReported => "not_reported",
            Rejection::Time => "time",
            Rejection::Replay => "replay",
            Rejection::Duplicate => "duplicate",
            Rejection::Storage => "storage",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What a receipt speaks of, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptBody {
    pub uploader: String,
    pub swarm: String,
    pub segment: String,
    pub sha256: [u8; 32],
    pub bytes: u64,
    pub time_ms: u64,
    pub nonce: [u8; 16],
}

impl Receipt {
    /// `delivery`, signed by `key` (an Ed25519 receiver).
    pub fn sign(delivery: &ReceiptBody, key: &NodeKey) -> Receipt {
        let mut receipt = Receipt {
            alg: Alg::Ed25519,
            uploader: delivery.uploader.clone(),
            receiver: key.public_hex().to_owned(),
            swarm: delivery.swarm.clone(),
            segment: delivery.segment.clone(),
            sha256: hex::encode(delivery.sha256),
            bytes: delivery.bytes,
            time: delivery.time_ms,
            nonce: hex::encode(delivery.nonce),
            sig: String::new(),
        };
        receipt.sig = hex::encode(key.sign(receipt.signed_text().as_bytes()));
        receipt
    }

    /// The text the receiver signs: the domain line, then every field but `sig`, one per line,
    /// no trailing newline.
    pub fn signed_text(&self) -> String {
        format!(
            "{RECEIPT_DOMAIN}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.alg.label(),
            self.uploader,
            self.receiver,
            self.swarm,
            self.segment,
            self.sha256,
            self.bytes,
            self.time,
            self.nonce
        )
    }

    /// The receipt's id: lowercase hex SHA-256 of [`Receipt::signed_text`].
    pub fn id(&self) -> String {
        hex::encode(Sha256::digest(self.signed_text().as_bytes()))
    }

    /// The Merkle leaf of this receipt (RFC 6962: SHA-256 of 0x00 ‖ the signed text ‖ "\n" ‖ the
    /// signature in hex).
    pub fn leaf_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(self.signed_text().as_bytes());
        h.update(b"\n");
        h.update(self.sig.as_bytes());
        h.finalize().into()
    }

    /// Every field of its form: keys and digests in lowercase hex of their length, a segment path,
    /// a swarm label without control characters.
    pub fn check_form(&self) -> Result<(), Rejection> {
        let hex_of = |s: &str, len: usize| {
            s.len() == 2 * len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let key_ok = |s: &str| hex_of(s, 32) || hex_of(s, 65);
        let ok = key_ok(&self.uploader)
            && hex_of(&self.receiver, self.alg.key_len())
            && !self.swarm.is_empty()
            && self.swarm.len() <= MAX_SWARM_LEN
            && !self.swarm.chars().any(char::is_control)
            && validate_segment_id(&self.segment).is_ok()
            && hex_of(&self.sha256, 32)
            && hex_of(&self.nonce, 16)
            && hex_of(&self.sig, 64);
        if ok {
            Ok(())
        } else {
            Err(Rejection::Malformed)
        }
    }

    /// Whether the signature verifies with the receiver key (after [`Receipt::check_form`]).
    pub fn check_signature(&self) -> Result<(), Rejection> {
        let (Ok(key), Ok(sig)) = (hex::decode(&self.receiver), hex::decode(&self.sig)) else {
            return Err(Rejection::Malformed);
        };
        let text = self.signed_text();
        let verified = match self.alg {
            Alg::Ed25519 => UnparsedPublicKey::new(&ED25519, &key).verify(text.as_bytes(), &sig),
            Alg::P256 => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key).verify(text.as_bytes(), &sig)
            }
        };
        verified.map_err(|_| Rejection::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> ReceiptBody {
        ReceiptBody {
            uploader: "ab".repeat(32),
            swarm: "/demo/live/v0.m3u8".into(),
            segment: "/demo/live/v0/seg7.ts".into(),
            sha256: [7; 32],
            bytes: 1234,
            time_ms: 1_700_000_000_000,
            nonce: [9; 16],
        }
    }

    #[test]
    fn a_signed_receipt_verifies_and_any_change_breaks_it() {
        let key = NodeKey::from_seed(&[1; 32]);
        let r = Receipt::sign(&delivery(), &key);
        assert_eq!(r.check_form(), Ok(()));
        assert_eq!(r.check_signature(), Ok(()));
        assert_eq!(r.id().len(), 64);
        let mut more = r.clone();
        more.bytes += 1;
        assert_eq!(more.check_signature(), Err(Rejection::Signature));
        let mut other = r.clone();
        other.uploader = "cd".repeat(32);
        assert_eq!(other.check_signature(), Err(Rejection::Signature));
        let mut bad = r.clone();
        bad.nonce = "zz".into();
        assert_eq!(bad.check_form(), Err(Rejection::Malformed));
        let mut newline = r;
        newline.swarm = "a\nb".into();
        assert_eq!(newline.check_form(), Err(Rejection::Malformed));
    }

    #[test]
    fn the_signed_text_is_fixed() {
        // Third parties rebuild this text byte for byte (docs/LEDGER.md).
        let key = NodeKey::from_seed(&[1; 32]);
        let r = Receipt::sign(&delivery(), &key);
        let expected = format!(
            "hls-p2p-receipt/1\ned25519\n{}\n{}\n/demo/live/v0.m3u8\n/demo/live/v0/seg7.ts\n{}\n1234\n1700000000000\n{}",
            "ab".repeat(32),
            key.public_hex(),
            "07".repeat(32),
            "09".repeat(16)
        );
        assert_eq!(r.signed_text(), expected);
    }

    #[test]
    fn a_p256_receipt_from_a_browser_verifies() {
        use ring::rand::SystemRandom;
        use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let key = NodeKey::from_seed(&[1; 32]);
        let mut r = Receipt::sign(&delivery(), &key);
        r.alg = Alg::P256;
        r.receiver = hex::encode(pair.public_key().as_ref());
        r.sig = hex::encode(
            pair.sign(&rng, r.signed_text().as_bytes())
                .unwrap()
                .as_ref(),
        );
        assert_eq!(r.check_form(), Ok(()));
        assert_eq!(r.check_signature(), Ok(()));
    }
}
