//! Replays the protocol test vectors in `tests/vectors/` (the contract shared with the browser engine).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use peer_assist::protocol::frame::{self, Frame, FrameError};
use peer_assist::protocol::signal::{self, SignalError};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("missing string {key:?} in {v}"))
}

fn u64_field(v: &Value, key: &str) -> u64 {
    let n = v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("missing integer {key:?} in {v}"));
    assert!(n < 1 << 53, "{key} = {n} is not exact in JavaScript");
    n
}

fn u32_field(v: &Value, key: &str) -> u32 {
    u32::try_from(u64_field(v, key)).unwrap()
}

/// The vector's JSON description of a frame, as a [`Frame`].
fn frame_from_json(v: &Value) -> Frame {
    let allowed: &[&str] = match str_field(v, "type") {
        "handshake" => &["version", "peer_id"],
        "have" => &["segments"],
        "request" => &["request_id", "segment", "offset"],
        "response" => &["request_id", "size", "offset", "digest_hex"],
        "chunk" => &["request_id", "offset", "data_hex"],
        "cancel" | "absent" => &["request_id"],
        other => panic!("unknown frame type {other:?}"),
    };
    for key in v.as_object().unwrap().keys() {
        assert!(
            key == "type" || allowed.contains(&key.as_str()),
            "unexpected key {key:?} in {v}"
        );
    }
    match str_field(v, "type") {
        "handshake" => Frame::Handshake {
            version: u16::try_from(u64_field(v, "version")).unwrap(),
            peer_id: str_field(v, "peer_id").to_owned(),
        },
        "have" => Frame::Have {
            segments: v["segments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect(),
        },
        "request" => Frame::Request {
            request_id: u32_field(v, "request_id"),
            segment: str_field(v, "segment").to_owned(),
            offset: u64_field(v, "offset"),
        },
        "response" => Frame::Response {
            request_id: u32_field(v, "request_id"),
            size: u64_field(v, "size"),
            offset: u64_field(v, "offset"),
            digest: signal::parse_digest_hex(str_field(v, "digest_hex")).unwrap(),
        },
        "chunk" => Frame::Chunk {
            request_id: u32_field(v, "request_id"),
            offset: u64_field(v, "offset"),
            data: Bytes::from(hex_bytes(str_field(v, "data_hex"))),
        },
        "cancel" => Frame::Cancel {
            request_id: u32_field(v, "request_id"),
        },
        "absent" => Frame::Absent {
            request_id: u32_field(v, "request_id"),
        },
        _ => unreachable!(),
    }
}

fn hex_bytes(s: &str) -> Vec<u8> {
    assert_eq!(s, s.to_ascii_lowercase(), "hex must be lowercase");
    hex::decode(s).unwrap()
}

#[test]
fn frame_vectors() {
    let doc = load("frames.json");
    assert_eq!(doc["protocol_version"], 1);
    let valid = doc["valid"].as_array().unwrap();
    let mut per_type = std::collections::BTreeMap::<u8, usize>::new();
    for v in valid {
        let name = str_field(v, "name");
        let expected = frame_from_json(&v["frame"]);
        let bytes = hex_bytes(str_field(v, "hex"));
        *per_type.entry(expected.type_code()).or_default() += 1;

        expected
            .validate()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&expected.encode()[..], &bytes[..], "{name}: encode");
        assert_eq!(
            frame::decode_exact(&bytes).as_ref(),
            Ok(&expected),
            "{name}: decode_exact"
        );
        assert_eq!(
            frame::decode(&bytes),
            Ok((expected.clone(), bytes.len())),
            "{name}: decode"
        );
        // Every proper prefix is Incomplete, with a hint that does not overshoot.
        for cut in 0..bytes.len() {
            match frame::decode(&bytes[..cut]) {
                Err(FrameError::Incomplete { needed }) => {
                    assert!(
                        needed >= 1 && cut + needed <= bytes.len(),
                        "{name}: cut {cut}"
                    )
                }
                other => panic!("{name}: cut at {cut}: {other:?}"),
            }
        }
        // Followed by more bytes, stream decoding takes exactly this frame.
        let mut more = bytes.clone();
        more.extend_from_slice(&[0x06, 0, 0]);
        assert_eq!(
            frame::decode(&more),
            Ok((expected.clone(), bytes.len())),
            "{name}: decode with more bytes"
        );
    }
    assert_eq!(per_type.len(), 7, "every frame type has vectors");
    assert!(per_type.values().all(|&n| n >= 2), "{per_type:?}");

    let mut kinds = std::collections::BTreeSet::new();
    for v in doc["invalid"].as_array().unwrap() {
        let name = str_field(v, "name");
        let bytes = hex_bytes(str_field(v, "hex"));
        let want = str_field(v, "error");
        kinds.insert(want.to_owned());
        let err = frame::decode_exact(&bytes)
            .err()
            .unwrap_or_else(|| panic!("{name}: decoded"));
        assert_eq!(err.kind(), want, "{name}: {err}");
        if let Some(needed) = v.get("needed") {
            assert_eq!(
                err,
                FrameError::Incomplete {
                    needed: needed.as_u64().unwrap() as usize
                },
                "{name}"
            );
        }
        // Stream decoding agrees, except that bytes after a complete frame belong to the next one.
        match frame::decode(&bytes) {
            Err(e) => assert_eq!(e, err, "{name}: decode"),
            Ok((_, used)) => assert!(
                want == "TrailingBytes" && used < bytes.len(),
                "{name}: decode accepted it"
            ),
        }
    }
    let all: Vec<&str> = vec![
        "Incomplete",
        "UnknownType",
        "TooLarge",
        "Truncated",
        "TrailingBytes",
        "BadMagic",
        "UnsupportedVersion",
        "InvalidSegmentId",
        "InvalidUtf8",
        "TooManyIds",
        "ChunkTooLarge",
    ];
    assert_eq!(
        kinds.iter().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut a = all.clone();
            a.sort_unstable();
            a
        },
        "every FrameError variant except Io has a vector"
    );
}

/// The message text, with `repeat` expanded.
fn signal_text(v: &Value) -> String {
    let json = str_field(v, "json");
    match v.get("repeat") {
        None => json.to_owned(),
        Some(r) => {
            let placeholder = str_field(r, "placeholder");
            assert_eq!(json.matches(placeholder).count(), 1, "{v}");
            let with = str_field(r, "with").repeat(r["times"].as_u64().unwrap() as usize);
            json.replacen(placeholder, &with, 1)
        }
    }
}

fn variant_tag(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap();
    v["type"].as_str().unwrap().to_owned()
}

#[test]
fn signal_vectors() {
    let doc = load("signals.json");
    assert_eq!(doc["protocol_version"], 1);

    let mut tags = std::collections::BTreeSet::new();
    for v in doc["client"].as_array().unwrap() {
        let name = str_field(v, "name");
        let text = signal_text(v);
        let msg = signal::decode_client(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(msg.encode(), text, "{name}: canonical form");
        tags.insert(variant_tag(&text));
    }
    assert_eq!(
        tags.into_iter().collect::<Vec<_>>(),
        ["join", "leave", "relay", "report"],
        "every client message type has a vector"
    );

    let mut tags = std::collections::BTreeSet::new();
    for v in doc["server"].as_array().unwrap() {
        let name = str_field(v, "name");
        let text = signal_text(v);
        let msg = signal::decode_server(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(msg.encode(), text, "{name}: canonical form");
        tags.insert(variant_tag(&text));
    }
    assert_eq!(
        tags.into_iter().collect::<Vec<_>>(),
        ["digests", "error", "peers", "relay", "welcome"],
        "every server message type has a vector"
    );

    for (section, decode) in [
        (
            "invalid_client",
            (|t: &str| signal::decode_client(t).map(|_| ())) as fn(&str) -> Result<(), SignalError>,
        ),
        ("invalid_server", |t: &str| {
            signal::decode_server(t).map(|_| ())
        }),
    ] {
        let mut kinds = std::collections::BTreeSet::new();
        for v in doc[section].as_array().unwrap() {
            let name = str_field(v, "name");
            let want = str_field(v, "error");
            let err = decode(&signal_text(v))
                .err()
                .unwrap_or_else(|| panic!("{section} {name}: decoded"));
            assert_eq!(err.kind(), want, "{section} {name}: {err}");
            kinds.insert(want.to_owned());
        }
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            ["Invalid", "Malformed", "TooLarge", "UnsupportedVersion"],
            "{section}: every SignalError variant has a vector"
        );
    }
}
