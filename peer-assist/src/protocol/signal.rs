//! Signalling: JSON text messages between a peer and the gateway's tracker over the WebSocket at
//! `/p2p/v1/ws?stream=PATH` (docs/PROTOCOL.md §3).
//!
//! Every struct denies unknown fields, so version skew surfaces as an error instead of silently
//! dropped data. [`decode_client`] and [`decode_server`] check the size, parse, then validate.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use super::frame::validate_segment_id;
use crate::accounting::Receipt;

/// Value of `v` in `join` and `welcome`.
pub const SIGNAL_VERSION: u32 = 1;
/// The WebSocket close code (RFC 6455 registry: "Service Restart") with which a gateway that shuts
/// down closes its peers' sockets: join again now, through the balancer, with a little jitter.
pub const CLOSE_SERVICE_RESTART: u16 = 1012;
/// Largest signalling message, in UTF-8 bytes of the text.
pub const MAX_SIGNAL_LEN: usize = 64 * 1024;
/// Longest peer id, in UTF-8 bytes.
pub const MAX_PEER_ID_LEN: usize = 64;
/// Most entries in one list: peers in `peers`, segments in `digests`, peers in `report`.
pub const MAX_LIST_LEN: usize = 256;
/// Most receipts in one `report` (about 500 bytes each: well within [`MAX_SIGNAL_LEN`]).
pub const MAX_RECEIPTS: usize = 64;

/// How to reach a native peer over QUIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicAddress {
    /// `"ip:port"` (IPv6 as `"[ip]:port"`).
    pub addr: String,
    /// Lowercase hex SHA-256 of the peer's DER certificate (64 characters); see [`fingerprint`].
    pub fingerprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Quic,
    Webrtc,
}

/// A peer's listed upload capacity moves only when a report moves it by more than this factor,
/// and peers rank by capacity for the seeder rule only when theirs are this far apart: so that
/// measurement noise neither re-sends lists nor reshuffles seeders (PROTOCOL.md §2.4, §4.1).
pub const CAPACITY_STEP: f64 = 1.25;
/// The largest upload capacity the tracker lists, bytes/s (10 GB/s): a claim above it reads as it.
pub const MAX_UPLOAD_RATE: u64 = 10_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    pub transports: Vec<Transport>,
    /// Whether this peer serves segments to others.
    pub upload: bool,
    /// The upload capacity it declares, bytes per second (what it can send to others), until
    /// its reports say what it measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_rate: Option<u64>,
}

/// Client → gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message on the socket.
    Join {
        v: u32,
        /// Multivariant playlist path on the gateway, e.g. `/demo/live/master.m3u8`.
        stream: String,
        /// 0-based index of the variant in that playlist, in playlist order.
        rendition: u32,
        capabilities: Capabilities,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quic: Option<QuicAddress>,
        /// The peer's public key, hex (Ed25519: 64 digits; P-256: 130): its stable identity, the
        /// key its receipts are signed with and that others' receipts credit (docs/LEDGER.md).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// Forward `payload` (opaque JSON) to peer `to` in the same swarm.
    Relay {
        to: String,
        payload: serde_json::Value,
    },
    Report(Report),
    Leave {},
}

/// Delivery statistics: deltas since the previous report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub http_bytes: u64,
    pub p2p_bytes: u64,
    pub http_segments: u64,
    pub p2p_segments: u64,
    pub uploaded_bytes: u64,
    pub failures: Failures,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerOutcome>,
    /// Signed receipts for bytes verified from peers since the previous report (at most
    /// [`MAX_RECEIPTS`]; docs/LEDGER.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<Receipt>,
    /// The sender's upload capacity as it measured it (bytes per second): what the tracker
    /// lists for it from then on (see `peers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_rate: Option<u64>,
}

/// Failed peer fetches by cause.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failures {
    #[serde(default)]
    pub timeout: u64,
    #[serde(default)]
    pub mismatch: u64,
    #[serde(default)]
    pub absent: u64,
    #[serde(default)]
    pub disconnect: u64,
}

/// Why a peer fetch failed: the four counters of [`Failures`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The peer was too slow (the scheduler gave up on it, or HTTP won the race).
    Timeout,
    /// Its bytes did not match the gateway's digest (or its claims were false).
    Mismatch,
    /// It did not have the segment.
    Absent,
    /// The link ended during the transfer.
    Disconnect,
}

impl FailureCause {
    pub const ALL: [FailureCause; 4] = [
        FailureCause::Timeout,
        FailureCause::Mismatch,
        FailureCause::Absent,
        FailureCause::Disconnect,
    ];

    /// The field name in [`Failures`], also used as a metric label and a link close reason.
    pub fn label(self) -> &'static str {
        match self {
            FailureCause::Timeout => "timeout",
            FailureCause::Mismatch => "mismatch",
            FailureCause::Absent => "absent",
            FailureCause::Disconnect => "disconnect",
        }
    }
}

impl Failures {
    /// Counts one failure.
    pub fn add(&mut self, cause: FailureCause) {
        let counter = self.counter(cause);
        *counter = counter.saturating_add(1);
    }

    pub fn get(&self, cause: FailureCause) -> u64 {
        match cause {
            FailureCause::Timeout => self.timeout,
            FailureCause::Mismatch => self.mismatch,
            FailureCause::Absent => self.absent,
            FailureCause::Disconnect => self.disconnect,
        }
    }

    fn counter(&mut self, cause: FailureCause) -> &mut u64 {
        match cause {
            FailureCause::Timeout => &mut self.timeout,
            FailureCause::Mismatch => &mut self.mismatch,
            FailureCause::Absent => &mut self.absent,
            FailureCause::Disconnect => &mut self.disconnect,
        }
    }

    /// What was counted since `earlier` (saturating).
    pub fn since(&self, earlier: &Failures) -> Failures {
        let mut delta = Failures::default();
        for cause in FailureCause::ALL {
            *delta.counter(cause) = self.get(cause).saturating_sub(earlier.get(cause));
        }
        delta
    }
}

/// What this client saw from one peer since the previous report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerOutcome {
    pub peer_id: String,
    pub ok: u64,
    pub failed: u64,
    pub mismatch: u64,
    pub bytes: u64,
}

/// Gateway → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// Answer to `join`.
    Welcome {
        v: u32,
        peer_id: String,
        swarm: String,
        /// Media playlist path of the joined rendition.
        playlist: String,
        max_peers: u32,
    },
    /// Full replacement of the peer list, best first.
    Peers { peers: Vec<PeerInfo> },
    Relay {
        from: String,
        payload: serde_json::Value,
    },
    /// Segment digests: the recent window right after `welcome`, then each new cached segment.
    Digests {
        playlist: String,
        segments: Vec<DigestEntry>,
    },
    /// The gateway closes the socket after a fatal error.
    Error {
        code: ErrorCode,
        message: String,
        /// With `swarm_full`: the shard to join instead (`&shard=` on the WebSocket URL).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerInfo {
    pub peer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub transports: Vec<Transport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic: Option<QuicAddress>,
    /// The peer's public key (from its `join`), hex: whom a receipt for its bytes credits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The peer's upload capacity, bytes per second, as it declared it in `join` or measured it
    /// since (its latest `report` that moved it by more than 1.25×).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_rate: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestEntry {
    /// Segment or init-section path on the gateway.
    pub id: String,
    /// Lowercase hex SHA-256 of the body.
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    UnsupportedVersion,
    Unauthorized,
    NotFound,
    SwarmFull,
    TooManySwarms,
    RateLimited,
    MessageTooLarge,
    /// The stream's playlist cannot be had from the origin right now: try again later.
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignalError {
    #[error("message of {len} bytes exceeds {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported signalling version {0}")]
    UnsupportedVersion(u32),
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl SignalError {
    /// The variant name, as used in the test vectors and suitable as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            SignalError::TooLarge { .. } => "TooLarge",
            SignalError::Malformed(_) => "Malformed",
            SignalError::UnsupportedVersion(_) => "UnsupportedVersion",
            SignalError::Invalid(_) => "Invalid",
        }
    }

    /// The `error` code the gateway answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            SignalError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            SignalError::Malformed(_) | SignalError::Invalid(_) => ErrorCode::BadMessage,
            SignalError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        }
    }
}

impl ClientMessage {
    /// Canonical JSON text.
    pub fn encode(&self) -> String {
        to_json(self)
    }

    /// The checks [`decode_client`] applies after parsing.
    pub fn validate(&self) -> Result<(), SignalError> {
        match self {
            ClientMessage::Join {
                v,
                stream,
                quic,
                token: _,
                rendition: _,
                capabilities: _,
                key,
            } => {
                check_version(*v)?;
                check_path("stream", stream)?;
                if let Some(q) = quic {
                    check_quic(q)?;
                }
                if let Some(k) = key {
                    check_key("key", k)?;
                }
            }
            ClientMessage::Relay { to, .. } => check_peer_id("to", to)?,
            ClientMessage::Report(r) => {
                check_list("peers", r.peers.len())?;
                if r.receipts.len() > MAX_RECEIPTS {
                    return Err(SignalError::Invalid(format!(
                        "receipts: {} entries, at most {MAX_RECEIPTS}",
                        r.receipts.len()
                    )));
                }
                for receipt in &r.receipts {
                    // The form only: a receipt that fails the gateway's checks is rejected and
                    // counted by reason, not fatal to the connection.
                    check_safe_integer("receipts.bytes", receipt.bytes)?;
                    check_safe_integer("receipts.time", receipt.time)?;
                }
                let f = &r.failures;
                for (field, n) in [
                    ("http_bytes", r.http_bytes),
                    ("p2p_bytes", r.p2p_bytes),
                    ("http_segments", r.http_segments),
                    ("p2p_segments", r.p2p_segments),
                    ("uploaded_bytes", r.uploaded_bytes),
                    ("failures.timeout", f.timeout),
                    ("failures.mismatch", f.mismatch),
                    ("failures.absent", f.absent),
                    ("failures.disconnect", f.disconnect),
                ] {
                    check_safe_integer(field, n)?;
                }
                for p in &r.peers {
                    check_peer_id("peer_id", &p.peer_id)?;
                    for (field, n) in [
                        ("ok", p.ok),
                        ("failed", p.failed),
                        ("mismatch", p.mismatch),
                        ("bytes", p.bytes),
                    ] {
                        check_safe_integer(field, n)?;
                    }
                }
            }
            ClientMessage::Leave {} => {}
        }
        Ok(())
    }
}

impl ServerMessage {
    /// Canonical JSON text.
    pub fn encode(&self) -> String {
        to_json(self)
    }

    /// The checks [`decode_server`] applies after parsing.
    pub fn validate(&self) -> Result<(), SignalError> {
        match self {
            ServerMessage::Welcome {
                v,
                peer_id,
                playlist,
                swarm: _,
                max_peers: _,
            } => {
                check_version(*v)?;
                check_peer_id("peer_id", peer_id)?;
                check_path("playlist", playlist)?;
            }
            ServerMessage::Peers { peers } => {
                check_list("peers", peers.len())?;
                for p in peers {
                    check_peer_id("peer_id", &p.peer_id)?;
                    if let Some(q) = &p.quic {
                        check_quic(q)?;
                    }
                    if let Some(k) = &p.key {
                        check_key("key", k)?;
                    }
                }
            }
            ServerMessage::Relay { from, .. } => check_peer_id("from", from)?,
            ServerMessage::Digests { playlist, segments } => {
                check_path("playlist", playlist)?;
                check_list("segments", segments.len())?;
                for d in segments {
                    check_path("id", &d.id)?;
                    parse_digest_hex(&d.sha256)?;
                }
            }
            ServerMessage::Error { .. } => {}
        }
        Ok(())
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // These types have string keys and no custom serializers, so serialization cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Encodes a client message as canonical JSON.
pub fn encode_client(msg: &ClientMessage) -> String {
    msg.encode()
}

/// Encodes a server message as canonical JSON.
pub fn encode_server(msg: &ServerMessage) -> String {
    msg.encode()
}

/// Parses and validates one client → gateway text message.
pub fn decode_client(text: &str) -> Result<ClientMessage, SignalError> {
    check_size(text)?;
    let msg: ClientMessage = parse(text, "join")?;
    msg.validate()?;
    Ok(msg)
}

/// Parses and validates one gateway → client text message.
pub fn decode_server(text: &str) -> Result<ServerMessage, SignalError> {
    check_size(text)?;
    let msg: ServerMessage = parse(text, "welcome")?;
    msg.validate()?;
    Ok(msg)
}

fn check_size(text: &str) -> Result<(), SignalError> {
    if text.len() > MAX_SIGNAL_LEN {
        return Err(SignalError::TooLarge {
            len: text.len(),
            max: MAX_SIGNAL_LEN,
        });
    }
    Ok(())
}

/// Strict parse. If that fails for a `versioned_type` message whose `v` is an integer other than 1,
/// the error is `UnsupportedVersion`: a newer peer's `join` may well have fields this version lacks.
fn parse<T: serde::de::DeserializeOwned>(
    text: &str,
    versioned_type: &str,
) -> Result<T, SignalError> {
    serde_json::from_str(text).map_err(|e| {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(rename = "type")]
            ty: String,
            v: u64,
        }
        match serde_json::from_str::<Probe>(text) {
            Ok(p) if p.ty == versioned_type && p.v != u64::from(SIGNAL_VERSION) => {
                SignalError::UnsupportedVersion(u32::try_from(p.v).unwrap_or(u32::MAX))
            }
            _ => SignalError::Malformed(e.to_string()),
        }
    })
}

fn check_version(v: u32) -> Result<(), SignalError> {
    if v != SIGNAL_VERSION {
        return Err(SignalError::UnsupportedVersion(v));
    }
    Ok(())
}

fn check_path(field: &str, path: &str) -> Result<(), SignalError> {
    validate_segment_id(path).map_err(|e| SignalError::Invalid(format!("{field}: {e}")))
}

fn check_peer_id(field: &str, id: &str) -> Result<(), SignalError> {
    if id.is_empty() || id.len() > MAX_PEER_ID_LEN {
        return Err(SignalError::Invalid(format!(
            "{field}: peer id must be 1 to {MAX_PEER_ID_LEN} bytes, got {}",
            id.len()
        )));
    }
    Ok(())
}

/// The largest integer a message may carry (JavaScript's `Number.MAX_SAFE_INTEGER`, 2^53 − 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Integers above 2^53 − 1 are not exact in JavaScript: malformed, as the browser decoder says.
fn check_safe_integer(field: &str, n: u64) -> Result<(), SignalError> {
    if n > MAX_SAFE_INTEGER {
        return Err(SignalError::Malformed(format!(
            "{field}: {n} is out of range (at most 2^53 - 1)"
        )));
    }
    Ok(())
}

/// A public key: lowercase hex of 32 (Ed25519) or 65 (P-256, uncompressed) bytes.
fn check_key(field: &str, key: &str) -> Result<(), SignalError> {
    let hex = key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex || (key.len() != 64 && key.len() != 130) {
        return Err(SignalError::Invalid(format!(
            "{field}: not a public key (64 or 130 lowercase hex digits)"
        )));
    }
    Ok(())
}

fn check_list(field: &str, len: usize) -> Result<(), SignalError> {
    if len > MAX_LIST_LEN {
        return Err(SignalError::Invalid(format!(
            "{field}: {len} entries, at most {MAX_LIST_LEN}"
        )));
    }
    Ok(())
}

fn check_quic(q: &QuicAddress) -> Result<(), SignalError> {
    if !is_lower_hex_64(&q.fingerprint) {
        return Err(SignalError::Invalid(
            "quic.fingerprint: not 64 lowercase hex digits".into(),
        ));
    }
    Ok(())
}

fn is_lower_hex_64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lowercase hex SHA-256 of a DER certificate: the value pinned in [`QuicAddress::fingerprint`].
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Lowercase hex of a SHA-256 digest, as in [`DigestEntry::sha256`].
pub fn digest_hex(d: &[u8; 32]) -> String {
    hex::encode(d)
}

/// Parses exactly 64 lowercase hex digits.
pub fn parse_digest_hex(s: &str) -> Result<[u8; 32], SignalError> {
    if !is_lower_hex_64(s) {
        return Err(SignalError::Invalid(
            "sha256: not 64 lowercase hex digits".into(),
        ));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|e| SignalError::Invalid(format!("sha256: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn join() -> ClientMessage {
        ClientMessage::Join {
            key: None,
            v: 1,
            stream: "/demo/live/master.m3u8".into(),
            rendition: 0,
            capabilities: Capabilities {
                transports: vec![Transport::Quic],
                upload: true,
                upload_rate: None,
            },
            token: None,
            quic: Some(QuicAddress {
                addr: "127.0.0.1:4433".into(),
                fingerprint: FP.into(),
            }),
        }
    }

    #[test]
    fn client_round_trips() {
        let msgs = vec![
            join(),
            ClientMessage::Relay {
                to: "p1".into(),
                payload: json!({"sdp": "v=0", "kind": "offer"}),
            },
            ClientMessage::Report(Report {
                http_bytes: 1,
                peers: vec![PeerOutcome {
                    peer_id: "p2".into(),
                    ok: 1,
                    failed: 0,
                    mismatch: 0,
                    bytes: 10,
                }],
                ..Report::default()
            }),
            ClientMessage::Report(Report::default()),
            ClientMessage::Leave {},
        ];
        for m in msgs {
            let text = m.encode();
            assert_eq!(decode_client(&text).unwrap(), m, "{text}");
            assert_eq!(decode_client(&text).unwrap().encode(), text);
        }
        assert_eq!(ClientMessage::Leave {}.encode(), r#"{"type":"leave"}"#);
    }

    #[test]
    fn server_round_trips() {
        let msgs = vec![
            ServerMessage::Welcome {
                v: 1,
                peer_id: "p1".into(),
                swarm: "s".into(),
                playlist: "/demo/live/240p.m3u8".into(),
                max_peers: 8,
            },
            ServerMessage::Peers {
                peers: vec![PeerInfo {
                    key: None,
                    upload_rate: None,
                    peer_id: "p2".into(),
                    region: Some("eu".into()),
                    transports: vec![Transport::Quic, Transport::Webrtc],
                    quic: None,
                }],
            },
            ServerMessage::Digests {
                playlist: "/a.m3u8".into(),
                segments: vec![DigestEntry {
                    id: "/a/1.ts".into(),
                    sha256: digest_hex(&[0xff; 32]),
                    size: 5,
                }],
            },
            ServerMessage::Error {
                code: ErrorCode::TooManySwarms,
                message: "x".into(),
                shard: None,
            },
            ServerMessage::Error {
                code: ErrorCode::SwarmFull,
                message: "x".into(),
                shard: Some(3),
            },
        ];
        for m in msgs {
            let text = m.encode();
            assert_eq!(decode_server(&text).unwrap(), m, "{text}");
        }
    }

    #[test]
    fn strictness() {
        let kind = |t: &str| decode_client(t).unwrap_err().kind();
        assert_eq!(kind(r#"{"type":"leave","x":1}"#), "Malformed");
        assert_eq!(kind(r#"{"type":"hello"}"#), "Malformed");
        assert_eq!(
            kind(
                r#"{"type":"report","http_bytes":0,"p2p_bytes":0,"http_segments":0,"p2p_segments":0,"uploaded_bytes":0,"failures":{"other":1}}"#
            ),
            "Malformed"
        );
        assert_eq!(
            kind(
                r#"{"type":"report","http_bytes":0,"p2p_bytes":0,"http_segments":0,"p2p_segments":0,"uploaded_bytes":0,"failures":{},"x":0}"#
            ),
            "Malformed"
        );
        // Missing optional counters default to 0.
        assert!(decode_client(r#"{"type":"report","http_bytes":0,"p2p_bytes":0,"http_segments":0,"p2p_segments":0,"uploaded_bytes":0,"failures":{}}"#).is_ok());
        // A newer join is recognised even with fields this version does not know.
        assert_eq!(
            decode_client(r#"{"type":"join","v":2,"new":true}"#),
            Err(SignalError::UnsupportedVersion(2))
        );
        let mut j = join();
        if let ClientMessage::Join { v, .. } = &mut j {
            *v = 3;
        }
        assert_eq!(
            decode_client(&j.encode()),
            Err(SignalError::UnsupportedVersion(3))
        );
        assert_eq!(kind(r#"{"type":"join","v":1,"new":true}"#), "Malformed");
        assert_eq!(
            decode_server(r#"{"type":"welcome","v":0}"#),
            Err(SignalError::UnsupportedVersion(0))
        );
        assert_eq!(
            decode_client(r#"{"type":"relay","to":"","payload":null}"#)
                .unwrap_err()
                .code(),
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn size_limit_is_bytes() {
        let pad = |n: usize, c: &str| {
            let base = r#"{"type":"join","v":1,"stream":"/s","rendition":0,"capabilities":{"transports":[],"upload":false},"token":""}"#;
            let t = format!("{}{}\"}}", &base[..base.len() - 2], c.repeat(n));
            t
        };
        let base_len = pad(0, "a").len();
        assert!(decode_client(&pad(MAX_SIGNAL_LEN - base_len, "a")).is_ok());
        let e = decode_client(&pad(MAX_SIGNAL_LEN - base_len + 1, "a")).unwrap_err();
        assert_eq!(e.code(), ErrorCode::MessageTooLarge);
        // 2-byte characters: under the limit in characters, over it in bytes.
        let t = pad(MAX_SIGNAL_LEN / 2, "é");
        assert!(t.chars().count() < MAX_SIGNAL_LEN);
        assert_eq!(decode_client(&t).unwrap_err().kind(), "TooLarge");
    }

    #[test]
    fn lists_and_ids() {
        let peer = PeerInfo {
            key: None,
            upload_rate: None,
            peer_id: "p".into(),
            region: None,
            transports: vec![],
            quic: None,
        };
        let m = ServerMessage::Peers {
            peers: vec![peer.clone(); MAX_LIST_LEN + 1],
        };
        assert_eq!(decode_server(&m.encode()).unwrap_err().kind(), "Invalid");
        let m = ServerMessage::Peers {
            peers: vec![peer; MAX_LIST_LEN],
        };
        assert!(decode_server(&m.encode()).is_ok());
        for bad in ["", &"x".repeat(65)] {
            let m = ServerMessage::Relay {
                from: bad.into(),
                payload: serde_json::Value::Null,
            };
            assert_eq!(decode_server(&m.encode()).unwrap_err().kind(), "Invalid");
        }
        let ok = ServerMessage::Relay {
            from: "x".repeat(64),
            payload: serde_json::Value::Null,
        };
        assert!(decode_server(&ok.encode()).is_ok());
    }

    #[test]
    fn hex_helpers() {
        let d = [0xa5u8; 32];
        assert_eq!(parse_digest_hex(&digest_hex(&d)).unwrap(), d);
        assert!(parse_digest_hex(&digest_hex(&d).to_uppercase()).is_err());
        assert!(parse_digest_hex(&"a".repeat(63)).is_err());
        assert!(parse_digest_hex(&"a".repeat(65)).is_err());
        assert!(parse_digest_hex(&"g".repeat(64)).is_err());
        // SHA-256("abc")
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn random_text_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet: Vec<char> = "{}[]\":,0123456789-.eE truefalsnl\\u/typejoinvwelcomeé\u{1F600}"
            .chars()
            .collect();
        let seeds = [join().encode(), ClientMessage::Leave {}.encode()];
        for i in 0..20_000 {
            let mut s: Vec<char> = if i % 2 == 0 {
                seeds[i % seeds.len()].chars().collect()
            } else {
                Vec::new()
            };
            for _ in 0..1 + (i % 8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let c = alphabet[(x % alphabet.len() as u64) as usize];
                let at = if s.is_empty() {
                    0
                } else {
                    (x >> 20) as usize % s.len()
                };
                if x & 1 == 0 && !s.is_empty() {
                    s[at] = c;
                } else {
                    s.insert(at, c);
                }
            }
            let t: String = s.into_iter().collect();
            if let Ok(m) = decode_client(&t) {
                assert_eq!(decode_client(&m.encode()).unwrap(), m);
            }
            if let Ok(m) = decode_server(&t) {
                assert_eq!(decode_server(&m.encode()).unwrap(), m);
            }
        }
    }
}
