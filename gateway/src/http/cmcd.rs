//! Common Media Client Data in (CTA-5004), Common Media Server Data out (CTA-5006), without I/O.
//!
//! A player may describe itself on every request: in the `CMCD` query parameter (a percent-encoded
//! list) and/or in the `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session` headers
//! (merged; a key given twice keeps its last value, the headers' over the query's). Each is a
//! comma-separated list of `key=value` or bare `key` (true); strings are quoted, tokens bare. What
//! the gateway reads of it: `bl` (buffer length, ms), `mtp` (measured throughput, kbit/s), `su`
//! (startup), `bs` (buffer starvation: the player rebuffered since its last request), which feed
//! the metrics, and `ot`, `br`, `d`, `sf`, `st`, which are checked and kept but feed nothing yet.
//! CMCD v2 inner lists (`bl=(21300 8000)`) and parameters (`;ot=v`) are read as their first item.
//! Metrics are labelled by the gateway's own object class, never by a client string (`sid`, `cid`
//! and every other value stay out of metrics), and CMCD is never part of a cache key nor sent to
//! the origin ([`crate::cache::key`]; the origin client builds its requests from scratch).
//!
//! Hostile input: CMCD data over [`MAX_LEN`] bytes (query value decoded, or all headers together),
//! a malformed pair, a number out of range or a key the gateway reads with a value of the wrong
//! shape makes the whole CMCD of that request invalid (counted, otherwise ignored); unknown keys
//! are ignored whatever their value.
//!
//! Out: `CMSD-Static` (`ot`, `sf=h`, `st`, `v=1`) says what the object is; `CMSD-Dynamic` carries the
//! gateway's estimate of its throughput to this client (`etp`, kbit/s), measured on the connection
//! ([`crate::http::send_rate`]), as a structured-field list item whose value is the gateway's
//! identifier (`cmsd.server_id`): `CMSD-Dynamic: "gateway";etp=4200`.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{CmcdConfig, CmsdConfig};
use crate::hls::ObjectClass;

/// The longest CMCD data read (query value once decoded, or all headers together), in bytes.
pub const MAX_LEN: usize = 4096;
/// The longest number read, in digits (about 31 years of milliseconds).
const MAX_DIGITS: usize = 15;

pub static CMCD_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("cmcd-request"),
    HeaderName::from_static("cmcd-object"),
    HeaderName::from_static("cmcd-status"),
    HeaderName::from_static("cmcd-session"),
];
pub static CMSD_STATIC: HeaderName = HeaderName::from_static("cmsd-static");
pub static CMSD_DYNAMIC: HeaderName = HeaderName::from_static("cmsd-dynamic");

/// CTA-5004 `ot`: the type of the object a player asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    Manifest,
    Audio,
    Video,
    Muxed,
    Init,
    Caption,
    TimedText,
    Key,
    Other,
}

/// CTA-5004 `sf`: the streaming format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamingFormat {
    Dash,
    Hls,
    Smooth,
    Other,
}

/// CTA-5004 `st`: the stream type (`ll`, low-latency live, is CMCD v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    Vod,
    Live,
    LowLatency,
}

/// What a request's CMCD said, of what the gateway reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cmcd {
    /// `bl`: buffer length, milliseconds.
    pub buffer_ms: Option<u64>,
    /// `mtp`: measured throughput, kbit/s.
    pub throughput_kbps: Option<u64>,
    /// `su`: the player is starting (or seeking, or recovering from a stall).
    pub startup: bool,
    /// `bs`: the buffer ran dry since the last request.
    pub starved: bool,
    /// `ot`, when it is one of the types CTA-5004 names.
    pub object: Option<ObjectType>,
    /// `br`: the encoded bitrate of the object, kbit/s.
    pub bitrate_kbps: Option<u64>,
    /// `d`: the object's duration, milliseconds.
    pub duration_ms: Option<u64>,
    /// `sf`, when known.
    pub format: Option<StreamingFormat>,
    /// `st`, when known.
    pub stream_type: Option<StreamType>,
}

/// CMCD that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// The CMCD of a request (the `CMCD` query parameter, then the headers), `None` when it carries
/// none.
pub fn of_request(query: Option<&str>, headers: &HeaderMap) -> Option<Result<Cmcd, Invalid>> {
    let mut cmcd = Cmcd::default();
    let mut found = false;
    if let Some(raw) = query.and_then(query_value) {
        found = true;
        // Percent-encoding at most triples the length.
        if raw.len() > MAX_LEN * 3 {
            return Some(Err(Invalid));
        }
        let Some(decoded) = percent_decode(raw) else {
            return Some(Err(Invalid));
        };
        if let Err(e) = parse_into(&decoded, &mut cmcd) {
            return Some(Err(e));
        }
    }
    let mut total = 0usize;
    for name in &CMCD_HEADERS {
        for value in headers.get_all(name) {
            found = true;
            total = total.saturating_add(value.len());
            if total > MAX_LEN {
                return Some(Err(Invalid));
            }
            let Ok(text) = value.to_str() else {
                return Some(Err(Invalid));
            };
            if let Err(e) = parse_into(text, &mut cmcd) {
                return Some(Err(e));
            }
        }
    }
    found.then_some(Ok(cmcd))
}

/// The raw (still percent-encoded) value of the first `CMCD` parameter of a query.
fn query_value(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| pair.strip_prefix("CMCD="))
}

/// Parses one CMCD list (already percent-decoded).
pub fn parse(text: &str) -> Result<Cmcd, Invalid> {
    let mut cmcd = Cmcd::default();
    parse_into(text, &mut cmcd)?;
    Ok(cmcd)
}

fn parse_into(text: &str, cmcd: &mut Cmcd) -> Result<(), Invalid> {
    if text.len() > MAX_LEN {
        return Err(Invalid);
    }
    for pair in OutsideQuotes::new(text) {
        let pair = pair?.trim();
        if pair.is_empty() {
            continue;
        }
        // Structured-field keys; custom ones (`com.example-myKey`) carry a `-` and may have capitals.
        let key_len = pair
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b"-._*".contains(&b)))
            .unwrap_or(pair.len());
        let (key, rest) = pair.split_at(key_len);
        let value = match rest.as_bytes().first() {
            None => None,
            Some(b'=') => Some(&rest[1..]),
            // A bare key with parameters (`bs;x=1`): true.
            Some(b';') => None,
            Some(_) => return Err(Invalid),
        };
        if key.is_empty() {
            return Err(Invalid);
        }
        match key {
            "bl" => cmcd.buffer_ms = Some(integer(value)?),
            "mtp" => cmcd.throughput_kbps = Some(integer(value)?),
            "br" => cmcd.bitrate_kbps = Some(integer(value)?),
            "d" => cmcd.duration_ms = Some(integer(value)?),
            "su" => cmcd.startup = boolean(value)?,
            "bs" => cmcd.starved = boolean(value)?,
            "ot" => cmcd.object = object_type(token(value)?),
            "sf" => cmcd.format = streaming_format(token(value)?),
            "st" => cmcd.stream_type = stream_type(token(value)?),
            _ => {}
        }
    }
    Ok(())
}

/// The pairs of a list: split on commas that are not inside a quoted string; an unterminated quote
/// is an error (the last item).
struct OutsideQuotes<'a> {
    text: &'a str,
    done: bool,
}

impl<'a> OutsideQuotes<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, done: false }
    }
}

impl<'a> Iterator for OutsideQuotes<'a> {
    type Item = Result<&'a str, Invalid>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (mut quoted, mut escaped) = (false, false);
        for (i, b) in self.text.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    let (item, rest) = (&self.text[..i], &self.text[i + 1..]);
                    self.text = rest;
                    return Some(Ok(item));
                }
                _ => {}
            }
        }
        self.done = true;
        Some(if quoted { Err(Invalid) } else { Ok(self.text) })
    }
}

/// The bare value of an item: the first member of a v2 inner list, without parameters.
fn item(value: Option<&str>) -> Result<&str, Invalid> {
    let v = value.ok_or(Invalid)?;
    let v = match v.strip_prefix('(') {
        Some(inner) => {
            let (list, _params) = inner.split_once(')').ok_or(Invalid)?;
            list.split(' ').find(|m| !m.is_empty()).ok_or(Invalid)?
        }
        None => v,
    };
    Ok(v.split(';').next().unwrap_or(v))
}

fn integer(value: Option<&str>) -> Result<u64, Invalid> {
    let v = item(value)?;
    if v.is_empty() || v.len() > MAX_DIGITS || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid);
    }
    v.parse().map_err(|_| Invalid)
}

fn boolean(value: Option<&str>) -> Result<bool, Invalid> {
    let Some(v) = value else {
        return Ok(true);
    };
    match v.split(';').next() {
        Some("?0") => Ok(false),
        Some("?1") => Ok(true),
        _ => Err(Invalid),
    }
}

/// An sf-token (RFC 8941 §3.3.4): `ALPHA / "*"` then `tchar / ":" / "/"`.
fn token(value: Option<&str>) -> Result<&str, Invalid> {
    let v = item(value)?;
    let mut bytes = v.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
    if first_ok && rest_ok {
        Ok(v)
    } else {
        Err(Invalid)
    }
}

fn object_type(token: &str) -> Option<ObjectType> {
    Some(match token {
        "m" => ObjectType::Manifest,
        "a" => ObjectType::Audio,
        "v" => ObjectType::Video,
        "av" => ObjectType::Muxed,
        "i" => ObjectType::Init,
        "c" => ObjectType::Caption,
        "tt" => ObjectType::TimedText,
        "k" => ObjectType::Key,
        "o" => ObjectType::Other,
        _ => return None,
    })
}

fn streaming_format(token: &str) -> Option<StreamingFormat> {
    Some(match token {
        "d" => StreamingFormat::Dash,
        "h" => StreamingFormat::Hls,
        "s" => StreamingFormat::Smooth,
        "o" => StreamingFormat::Other,
        _ => return None,
    })
}

fn stream_type(token: &str) -> Option<StreamType> {
    Some(match token {
        "v" => StreamType::Vod,
        "l" => StreamType::Live,
        "ll" => StreamType::LowLatency,
        _ => return None,
    })
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------------------------
// CMSD out

/// What the gateway reads of CMCD and says in CMSD, from `cmcd.*` and `cmsd.*`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Read CMCD into metrics (`cmcd.enabled`).
    pub read_cmcd: bool,
    /// Send CMSD (`cmsd.enabled`), naming the gateway so.
    pub cmsd: Option<CmsdServer>,
}

impl Settings {
    pub fn new(cmcd: &CmcdConfig, cmsd: &CmsdConfig) -> Self {
        Self {
            read_cmcd: cmcd.enabled,
            cmsd: cmsd.enabled.then(|| CmsdServer::new(&cmsd.server_id)),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::new(&CmcdConfig::default(), &CmsdConfig::default())
    }
}

/// The gateway as CMSD names it: the start of every `CMSD-Dynamic` it sends.
#[derive(Debug, Clone)]
pub struct CmsdServer {
    /// `"<server id>";etp=`.
    dynamic_prefix: String,
}

impl CmsdServer {
    /// `server_id` as an sf-string: printable ASCII (the configuration checks it; anything else is
    /// dropped here rather than sent), `"` and `\` escaped.
    pub fn new(server_id: &str) -> Self {
        let mut dynamic_prefix = String::with_capacity(server_id.len() + 8);
        dynamic_prefix.push('"');
        for c in server_id.chars().filter(|c| matches!(c, ' '..='~')) {
            if c == '"' || c == '\\' {
                dynamic_prefix.push('\\');
            }
            dynamic_prefix.push(c);
        }
        dynamic_prefix.push_str("\";etp=");
        Self { dynamic_prefix }
    }

    /// `CMSD-Dynamic` with the gateway's throughput estimate to this client, if it has one (none is
    /// invented).
    pub fn dynamic(&self, etp_kbps: Option<u64>) -> Option<HeaderValue> {
        let etp = etp_kbps?;
        HeaderValue::from_str(&format!("{}{etp}", self.dynamic_prefix)).ok()
    }
}

/// The CMSD object type (`ot`) of an object of `class` at `path`: `m` playlists, `i` init
/// sections, `k` keys; media segments and parts `a` when their name says audio (`.aac`, `.m4a`,
/// `.cmfa`, `.ac3`, `.ec3`, `.mp3`), `c` for WebVTT, else `av` (the gateway does not look inside a
/// segment: `av` says "audio and/or video"); `None` for anything else (CTA-5006: an unknown type is
/// not sent).
pub fn object_type_of(class: ObjectClass, path: &str) -> Option<&'static str> {
    match class {
        ObjectClass::Multivariant
        | ObjectClass::LiveMedia
        | ObjectClass::VodMedia
        | ObjectClass::Playlist => Some("m"),
        ObjectClass::Init => Some("i"),
        ObjectClass::Key => Some("k"),
        ObjectClass::Segment | ObjectClass::Part => {
            let name = path.rsplit('/').next().unwrap_or(path);
            let ext = name.rsplit_once('.').map_or("", |(_, ext)| ext);
            Some(match ext.to_ascii_lowercase().as_str() {
                "aac" | "m4a" | "cmfa" | "ac3" | "ec3" | "mp3" => "a",
                "vtt" | "webvtt" => "c",
                _ => "av",
            })
        }
        ObjectClass::Other => None,
    }
}

/// `CMSD-Static` for an object of `class` at `path`; `live` when it is known to belong to a live
/// stream (`st=l`) or not (`st=v`). Static strings: this is on every answer's path.
pub fn cmsd_static(class: ObjectClass, path: &str, live: Option<bool>) -> HeaderValue {
    macro_rules! table {
        ($ot:literal) => {
            match live {
                Some(true) => concat!($ot, "sf=h,st=l,v=1"),
                Some(false) => concat!($ot, "sf=h,st=v,v=1"),
                None => concat!($ot, "sf=h,v=1"),
            }
        };
    }
    HeaderValue::from_static(match object_type_of(class, path) {
        Some("m") => table!("ot=m,"),
        Some("i") => table!("ot=i,"),
        Some("k") => table!("ot=k,"),
        Some("a") => table!("ot=a,"),
        Some("c") => table!("ot=c,"),
        Some(_) => table!("ot=av,"),
        None => table!(""),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_keys_it_uses_and_ignores_the_others() {
        let c = parse(
            "bl=21300,br=3200,bs,d=4004,mtp=25400,nor=\"..%2F300kbps%2Fsegment35.m4v\",ot=v,\
             pr=1.25,rtp=15000,sf=h,sid=\"6e2fb550-c457,x\",st=v,su,tb=6000",
        )
        .unwrap();
        assert_eq!(
            c,
            Cmcd {
                buffer_ms: Some(21300),
                throughput_kbps: Some(25400),
                startup: true,
                starved: true,
                object: Some(ObjectType::Video),
                bitrate_kbps: Some(3200),
                duration_ms: Some(4004),
                format: Some(StreamingFormat::Hls),
                stream_type: Some(StreamType::Vod),
            }
        );
        assert_eq!(parse("").unwrap(), Cmcd::default());
        assert!(!parse("bs=?0").unwrap().starved);
        assert!(parse("su=?1").unwrap().startup);
        assert_eq!(
            parse("com.example-myNumericKey=500,bl=100")
                .unwrap()
                .buffer_ms,
            Some(100)
        );
        // Tokens CTA-5004 does not name are no error, only unknown.
        let c = parse("ot=xyz,sf=hls,st=ll").unwrap();
        assert_eq!(
            (c.object, c.format, c.stream_type),
            (None, None, Some(StreamType::LowLatency))
        );
        // A key given twice keeps its last value.
        assert_eq!(parse("bl=100,bl=200").unwrap().buffer_ms, Some(200));
        // Spaces around pairs (headers written by hand) are tolerated.
        assert_eq!(parse(" bl=100 , su ").unwrap().buffer_ms, Some(100));
    }

    #[test]
    fn cmcd_v2_inner_lists_and_parameters_are_read_as_their_first_item() {
        let c = parse("bl=(21300;ot=v 8000;ot=a),mtp=(25400),br=(3200),ot=av;x,bs;x=1").unwrap();
        assert_eq!(c.buffer_ms, Some(21300));
        assert_eq!(c.throughput_kbps, Some(25400));
        assert_eq!(c.bitrate_kbps, Some(3200));
        assert_eq!(c.object, Some(ObjectType::Muxed));
        assert!(c.starved);
        for bad in ["bl=()", "bl=(12", "bl=(a)", "bl=( )"] {
            assert_eq!(parse(bad), Err(Invalid), "{bad:?}");
        }
    }

    #[test]
    fn garbage_is_invalid_never_a_panic() {
        for bad in [
            "bl",
            "bl=",
            "bl=-1",
            "bl=1.5",
            "bl=1e3",
            "bl=+1",
            "bl=99999999999999999999",
            "bl=\"100\"",
            "mtp=abc",
            "su=yes",
            "su=1",
            "bs=?2",
            "ot=",
            "ot=\"v\"",
            "ot=1v",
            "sf=h h",
            "sid=\"unterminated",
            "sid=\"a\\\"",
            "=5",
            "b l=5",
            "bl=5,,,\u{0}",
            "bl=5,\u{e9}=1",
        ] {
            assert_eq!(parse(bad), Err(Invalid), "{bad:?}");
        }
        assert_eq!(parse(&"x".repeat(MAX_LEN + 1)), Err(Invalid));
        assert!(parse(&"x".repeat(MAX_LEN)).is_ok());
    }

    /// Every string of up to four characters over an alphabet of the grammar's special
    /// characters, alone and after valid data, through every entry point: `Ok` or `Err`, never a
    /// panic, and what is read stays within the bounds.
    #[test]
    fn every_short_string_is_read_or_refused_never_a_panic() {
        let alphabet: Vec<char> = "bl=,\"\\()%;? 9s?\u{7f}\u{e9}".chars().collect();
        let mut frontier = vec![String::new()];
        let mut seen = 0usize;
        for _ in 0..4 {
            let mut next = Vec::new();
            for s in &frontier {
                for c in &alphabet {
                    let mut t = s.clone();
                    t.push(*c);
                    for text in [t.clone(), format!("bl=100,{t}"), format!("{t},su")] {
                        if let Ok(c) = parse(&text) {
                            assert!(c.buffer_ms.is_none_or(|b| b < 10u64.pow(15)));
                        }
                        let _ = of_request(Some(&format!("a=b&CMCD={text}")), &HeaderMap::new());
                        if let Ok(value) = HeaderValue::from_str(&text) {
                            let mut headers = HeaderMap::new();
                            headers.insert("cmcd-status", value);
                            let _ = of_request(None, &headers);
                        }
                        seen += 1;
                    }
                    next.push(t);
                }
            }
            frontier = next;
        }
        assert!(seen > 100_000, "{seen}");
    }

    #[test]
    fn from_the_query_and_the_headers_merged() {
        let none = HeaderMap::new();
        assert_eq!(of_request(Some("v=1"), &none), None);
        assert_eq!(of_request(Some("cmcd=bl%3D1"), &none), None);
        assert_eq!(of_request(None, &none), None);
        let q = of_request(Some("token=x&CMCD=bl%3D200%2Cmtp%3D5000%2Csu"), &none);
        assert_eq!(
            q,
            Some(Ok(Cmcd {
                buffer_ms: Some(200),
                throughput_kbps: Some(5000),
                startup: true,
                ..Cmcd::default()
            }))
        );
        // hls.js's encoding of a quoted string (encodeURIComponent).
        let q = of_request(
            Some("CMCD=bl%3D200%2Ccid%3D%22%2Fv%2Findex.m3u8%22%2Cot%3Dm"),
            &none,
        );
        assert_eq!(q.unwrap().unwrap().object, Some(ObjectType::Manifest));
        assert_eq!(of_request(Some("CMCD=bl%3"), &none), Some(Err(Invalid)));
        assert_eq!(of_request(Some("CMCD=%FF"), &none), Some(Err(Invalid)));
        assert_eq!(
            of_request(
                Some(&format!("CMCD={}", "a".repeat(MAX_LEN * 3 + 1))),
                &none
            ),
            Some(Err(Invalid))
        );

        let mut headers = HeaderMap::new();
        headers.insert("cmcd-request", HeaderValue::from_static("bl=300,mtp=800"));
        headers.insert("cmcd-status", HeaderValue::from_static("bs"));
        headers.insert("cmcd-session", HeaderValue::from_static("sid=\"abc\",sf=h"));
        headers.insert("cmcd-object", HeaderValue::from_static("ot=av,d=2000"));
        let merged = Cmcd {
            buffer_ms: Some(300),
            throughput_kbps: Some(800),
            starved: true,
            object: Some(ObjectType::Muxed),
            duration_ms: Some(2000),
            format: Some(StreamingFormat::Hls),
            ..Cmcd::default()
        };
        assert_eq!(of_request(None, &headers), Some(Ok(merged)));
        // Query and headers together: the headers' value of a key wins.
        assert_eq!(
            of_request(Some("CMCD=bl%3D100%2Csu"), &headers),
            Some(Ok(Cmcd {
                startup: true,
                ..merged
            }))
        );
        // Non-ASCII header bytes, too much in all: invalid.
        let mut latin = HeaderMap::new();
        latin.insert(
            "cmcd-status",
            HeaderValue::from_bytes(b"bs,x=\xe9").unwrap(),
        );
        assert_eq!(of_request(None, &latin), Some(Err(Invalid)));
        headers.append(
            "cmcd-object",
            HeaderValue::from_str(&"a".repeat(MAX_LEN)).unwrap(),
        );
        assert_eq!(of_request(None, &headers), Some(Err(Invalid)));
    }

    #[test]
    fn cmsd_static_says_what_the_object_is() {
        let s = |class, path, live| cmsd_static(class, path, live);
        assert_eq!(
            s(ObjectClass::Segment, "/l/720p/1.ts", Some(true)),
            "ot=av,sf=h,st=l,v=1"
        );
        assert_eq!(
            s(ObjectClass::Part, "/l/a/1.1.M4A", Some(true)),
            "ot=a,sf=h,st=l,v=1"
        );
        assert_eq!(
            s(ObjectClass::Segment, "/v/subs/1.vtt", Some(false)),
            "ot=c,sf=h,st=v,v=1"
        );
        assert_eq!(
            s(ObjectClass::VodMedia, "/v/index.m3u8", Some(false)),
            "ot=m,sf=h,st=v,v=1"
        );
        assert_eq!(s(ObjectClass::Init, "/v/init.mp4", None), "ot=i,sf=h,v=1");
        assert_eq!(s(ObjectClass::Key, "/v/k.key", None), "ot=k,sf=h,v=1");
        assert_eq!(s(ObjectClass::Other, "/v/x.bin", None), "sf=h,v=1");
    }

    #[test]
    fn cmsd_dynamic_names_the_gateway_and_never_invents_an_estimate() {
        let server = CmsdServer::new("gateway");
        assert_eq!(server.dynamic(Some(4200)).unwrap(), "\"gateway\";etp=4200");
        assert_eq!(server.dynamic(Some(0)).unwrap(), "\"gateway\";etp=0");
        assert_eq!(server.dynamic(None), None);
        // An sf-string: quotes and backslashes escaped, what cannot be sent dropped.
        let odd = CmsdServer::new("edge \"7\"\\x\u{e9}\n");
        assert_eq!(
            odd.dynamic(Some(1)).unwrap(),
            "\"edge \\\"7\\\"\\\\x\";etp=1"
        );
        assert_eq!(
            CmsdServer::new("").dynamic(Some(u64::MAX)).unwrap(),
            format!("\"\";etp={}", u64::MAX).as_str()
        );
    }

    #[test]
    fn settings_follow_the_configuration() {
        let on = Settings::default();
        assert!(on.read_cmcd);
        assert_eq!(
            on.cmsd.unwrap().dynamic(Some(5)).unwrap(),
            "\"gateway\";etp=5"
        );
        let off = Settings::new(
            &CmcdConfig { enabled: false },
            &CmsdConfig {
                enabled: false,
                server_id: "x".into(),
            },
        );
        assert!(!off.read_cmcd && off.cmsd.is_none());
    }
}
