//! Node traces: what a core was given and what it asked for, step by step, as the JSON of
//! `tests/vectors/node_traces.json`. The browser engine's core replays them (`web/tests/unit`), so
//! the two implementations cannot drift apart: the same inputs at the same instants must give the
//! same outputs.
//!
//! Generated from [`super::sim`] runs by the test `node_traces_match_the_vectors`; run it with
//! `P2PA_UPDATE_VECTORS=1` to write the file after a deliberate change of behaviour.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use super::core::{CoreConfig, Delivery, Input, Mode, Output};
use super::http::HttpError;
use super::sim::{segment_bytes, sha, Step};
use crate::protocol::frame::Frame;

/// How bytes from outside the core are written: by reference to the simulated segment contents.
pub(super) struct Content {
    pub segment_bytes: usize,
}

impl Content {
    /// The segment number in an id `/live/0/N.ts`.
    fn number(id: &str) -> Option<u64> {
        id.rsplit('/')
            .next()?
            .strip_suffix(".ts")?
            .parse::<u64>()
            .ok()
    }

    /// `bytes`, which should be part of segment `id` starting at `from`: a reference if they are
    /// (or are the liar's corruption of it), else hex.
    fn input_bytes(&self, id: Option<&str>, from: u64, bytes: &Bytes) -> Value {
        if let Some(n) = id.and_then(Self::number) {
            let whole = segment_bytes(n, self.segment_bytes);
            let (from, to) = (from as usize, from as usize + bytes.len());
            if to <= whole.len() {
                let part = whole.slice(from..to);
                if part == bytes {
                    return json!({ "segment": n, "from": from, "to": to });
                }
                if corrupt(&part) == *bytes {
                    return json!({ "segment": n, "from": from, "to": to, "corrupt": true });
                }
            }
        }
        json!({ "hex": hex::encode(bytes) })
    }
}

/// The liar's corruption (the core's test switch), again: every 97th byte of a chunk xor 0x5a.
fn corrupt(data: &[u8]) -> Bytes {
    let mut bad = data.to_vec();
    for byte in bad.iter_mut().step_by(97) {
        *byte ^= 0x5a;
    }
    Bytes::from(bad)
}

/// Bytes the core produced: their length and SHA-256.
fn output_bytes(bytes: &[u8]) -> Value {
    json!({ "len": bytes.len(), "sha256": hex::encode(sha(bytes)) })
}

fn ms(d: Duration) -> Value {
    let ns = d.as_nanos();
    if ns % 1_000_000 == 0 {
        json!((ns / 1_000_000) as u64)
    } else {
        json!(ns as f64 / 1e6)
    }
}

pub(super) fn config(c: &CoreConfig) -> Value {
    let s = &c.scheduler;
    json!({
        "mode": match c.mode { Mode::Play => "play", Mode::Seed => "seed", Mode::Driven => "driven" },
        "transports": c.transports,
        "upload": c.upload,
        "upload_rate": c.upload_rate,
        "privacy_floor": c.privacy_floor,
        "window": c.window,
        "max_store_bytes": c.max_store_bytes,
        "max_links": c.max_links,
        "startup_ms": ms(c.startup),
        "report_every_ms": ms(c.report_every),
        "prefetch_announced": c.prefetch_announced,
        "scheduler": {
            "safety_margin_ms": ms(s.safety_margin),
            "peer_time_budget": s.peer_time_budget,
            "urgent_window_ms": ms(s.urgent_window),
            "default_peer_rate": s.default_peer_rate,
            "http_rate": s.http_rate,
            "http_first_count": s.http_first_count,
            "default_segment_size": s.default_segment_size,
        },
        "test": { "lie": c.test.lie, "slow_upload": c.test.slow_upload },
    })
}

fn http_error(e: &HttpError) -> Value {
    match e {
        HttpError::Absent(s) => json!({ "kind": "absent", "status": s.as_u16() }),
        HttpError::Status(s) => json!({ "kind": "status", "status": s.as_u16() }),
        HttpError::Timeout => json!({ "kind": "timeout" }),
        HttpError::Network(m) => json!({ "kind": "network", "message": m }),
        HttpError::TooLarge(n) => json!({ "kind": "too_large", "limit": n }),
        HttpError::Playlist(m) => json!({ "kind": "playlist", "message": m }),
        HttpError::Request(m) => json!({ "kind": "request", "message": m }),
    }
}

/// A frame; `data` writes the bytes of a chunk.
fn frame(f: &Frame, data: impl Fn(u32, u64, &Bytes) -> Value) -> Value {
    match f {
        Frame::Handshake { version, peer_id } => {
            json!({ "type": "handshake", "version": version, "peer_id": peer_id })
        }
        Frame::Have { segments } => json!({ "type": "have", "segments": segments }),
        Frame::Request {
            request_id,
            segment,
            offset,
        } => {
            json!({ "type": "request", "request_id": request_id, "segment": segment, "offset": offset })
        }
        Frame::Response {
            request_id,
            size,
            offset,
            digest,
        } => json!({
            "type": "response", "request_id": request_id, "size": size, "offset": offset,
            "digest_hex": hex::encode(digest),
        }),
        Frame::Chunk {
            request_id,
            offset,
            data: bytes,
        } => json!({
            "type": "chunk", "request_id": request_id, "offset": offset,
            "data": data(*request_id, *offset, bytes),
        }),
        Frame::Cancel { request_id } => json!({ "type": "cancel", "request_id": request_id }),
        Frame::Absent { request_id } => json!({ "type": "absent", "request_id": request_id }),
    }
}

/// Writes the steps of one recorded node. `requests` remembers which segment each of its peer
/// requests was for, so incoming chunks can be written by reference.
pub(super) struct Writer {
    pub content: Content,
    pub joined: Instant,
    requests: std::collections::HashMap<u32, String>,
}

impl Writer {
    pub fn new(content: Content, joined: Instant) -> Self {
        Self {
            content,
            joined,
            requests: std::collections::HashMap::new(),
        }
    }

    fn at(&self, t: Instant) -> Value {
        ms(t.saturating_duration_since(self.joined))
    }

    pub fn step(&mut self, step: &Step) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("t".into(), ms(step.t));
        match &step.input {
            Some(input) => {
                out.insert("input".into(), self.input(input));
            }
            None => {
                out.insert("timeout".into(), json!(true));
            }
        }
        let outputs: Vec<Value> = step.outputs.iter().map(|o| self.output(o)).collect();
        out.insert("outputs".into(), Value::Array(outputs));
        Value::Object(out)
    }

    fn input(&self, input: &Input) -> Value {
        match input {
            Input::Signal(m) => {
                json!({ "type": "signal", "message": serde_json::to_value(m).unwrap_or(Value::Null) })
            }
            Input::SignalClosed => json!({ "type": "signal_closed" }),
            Input::LinkUp {
                link,
                peer,
                initiated,
                max_frame,
                fingerprint,
            } => json!({
                "type": "link_up", "link": link.0, "peer": peer, "initiated": initiated,
                "max_frame": max_frame, "fingerprint": fingerprint,
            }),
            Input::LinkDown { link } => json!({ "type": "link_down", "link": link.0 }),
            Input::ConnectFailed { peer } => json!({ "type": "connect_failed", "peer": peer }),
            Input::Frame { link, frame: f } => {
                let requests = &self.requests;
                let content = &self.content;
                let frame = frame(f, |request_id, offset, bytes| {
                    content.input_bytes(
                        requests.get(&request_id).map(String::as_str),
                        offset,
                        bytes,
                    )
                });
                json!({ "type": "frame", "link": link.0, "frame": frame })
            }
            Input::Written { link, bytes } => {
                json!({ "type": "written", "link": link.0, "bytes": bytes })
            }
            Input::PathRate { link, rate } => {
                json!({ "type": "path_rate", "link": link.0, "rate": rate })
            }
            Input::Playlist(Ok(p)) => json!({
                "type": "playlist",
                "ok": {
                    "segments": p.segments.iter().map(|s| json!({
                        "sequence": s.sequence, "id": s.id, "duration_ms": ms(s.duration),
                    })).collect::<Vec<_>>(),
                    "target_duration_ms": ms(p.target_duration),
                    "ended": p.ended,
                },
            }),
            Input::Playlist(Err(e)) => json!({ "type": "playlist", "err": http_error(e) }),
            Input::Http { id, from, result } => match result {
                Ok(body) => json!({
                    "type": "http", "id": id, "from": from,
                    "ok": self.content.input_bytes(Some(id), *from, body),
                }),
                Err(e) => json!({ "type": "http", "id": id, "from": from, "err": http_error(e) }),
            },
            Input::Verified { ticket, sha256 } => {
                json!({ "type": "verified", "ticket": ticket.0, "sha256": hex::encode(sha256) })
            }
            Input::Need {
                waiter,
                id,
                plays_at,
                p2p,
            } => json!({
                "type": "need", "waiter": waiter.0, "id": id, "plays_at": self.at(*plays_at),
                "p2p": p2p,
            }),
            Input::Abandon { waiter } => json!({ "type": "abandon", "waiter": waiter.0 }),
            Input::Stop => json!({ "type": "stop" }),
        }
    }

    fn output(&mut self, output: &Output) -> Value {
        match output {
            Output::Connect {
                peer,
                transport,
                quic,
            } => json!({ "type": "connect", "peer": peer, "transport": transport, "quic": quic }),
            Output::Send { link, frame: f } => {
                if let Frame::Request {
                    request_id,
                    segment,
                    ..
                } = f
                {
                    self.requests.insert(*request_id, segment.clone());
                }
                let frame = frame(f, |_, _, bytes| output_bytes(bytes));
                json!({ "type": "send", "link": link.0, "frame": frame })
            }
            Output::Close { link, reason } => {
                json!({ "type": "close", "link": link.0, "reason": reason })
            }
            Output::HttpGet { id, from } => json!({ "type": "http_get", "id": id, "from": from }),
            Output::HttpCancel { id } => json!({ "type": "http_cancel", "id": id }),
            Output::FetchPlaylist => json!({ "type": "fetch_playlist" }),
            Output::Verify { ticket, bytes } => {
                json!({ "type": "verify", "ticket": ticket.0, "bytes": output_bytes(bytes) })
            }
            Output::Signal(m) => {
                json!({ "type": "signal", "message": serde_json::to_value(m).unwrap_or(Value::Null) })
            }
            Output::Deliver {
                waiters,
                id,
                result,
            } => {
                let waiters: Vec<u64> = waiters.iter().map(|w| w.0).collect();
                match result {
                    Ok(d) => json!({
                        "type": "deliver", "waiters": waiters, "id": id, "ok": self.delivery(d),
                    }),
                    Err(e) => json!({
                        "type": "deliver", "waiters": waiters, "id": id, "err": http_error(e),
                    }),
                }
            }
        }
    }

    fn delivery(&self, d: &Delivery) -> Value {
        json!({
            "bytes": output_bytes(&d.bytes),
            "source": d.source,
            "started": self.at(d.started),
            "finished": self.at(d.finished),
            "from_store": d.from_store,
        })
    }
}
