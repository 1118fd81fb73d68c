//! Common Media Client Data in (CTA-5004), Common Media Server Data out (CTA-5006), without I/O.
//!
//! A player may describe itself on every request: in the `CMCD` query parameter (a percent-encoded
//! list) or in the `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session` headers. Each is
//! a comma-separated list of `key=value` or bare `key` (true). What the gateway reads of it:
//! `bl` (buffer length, ms), `mtp` (measured throughput, kbit/s), `su` (startup), `bs` (buffer
//! starvation: the player rebuffered since its last request). It becomes metrics labelled by the
//! gateway's own object class, never by a client string (`sid`, `cid` and every other value stay
//! out of metrics), and it is never part of a cache key nor sent to the origin
//! ([`crate::cache::key`]).
//!
//! Hostile input: a CMCD value over [`MAX_LEN`] bytes, a malformed pair, or a number out of range
//! makes the whole CMCD of that request invalid (counted, otherwise ignored); unknown keys are
//! ignored.
//!
//! Out: `CMSD-Static` (`ot`, `sf=h`, `st`, `v=1`) says what the object is; `CMSD-Dynamic` carries the
//! gateway's estimate of its throughput to this client (`etp`, kbit/s), measured on the connection
//! ([`crate::http::send_rate`]), as a structured-field list item named after the gateway.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::hls::ObjectClass;

/// The longest CMCD data read (query value, or all headers together), in bytes.
pub const MAX_LEN: usize = 4096;

pub static CMCD_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("cmcd-request"),
    HeaderName::from_static("cmcd-object"),
    HeaderName::from_static("cmcd-status"),
    HeaderName::from_static("cmcd-session"),
];
pub static CMSD_STATIC: HeaderName = HeaderName::from_static("cmsd-static");
pub static CMSD_DYNAMIC: HeaderName = HeaderName::from_static("cmsd-dynamic");

/// What a request's CMCD said, of what the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cmcd {
    /// `bl`: buffer length, milliseconds.
    pub buffer_ms: Option<u64>,
    /// `mtp`: measured throughput, kbit/s.
    pub throughput_kbps: Option<u64>,
    /// `su`: the player is starting (or seeking).
    pub startup: bool,
    /// `bs`: the buffer ran dry since the last request.
    pub starved: bool,
}

/// CMCD that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// The CMCD of a request (query first, then headers), `None` when it carries none.
pub fn of_request(query: Option<&str>, headers: &HeaderMap) -> Option<Result<Cmcd, Invalid>> {
    let from_query = query.and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("CMCD="))
            .map(|raw| {
                if raw.len() > MAX_LEN * 3 {
                    return Err(Invalid);
                }
                let decoded = percent_decode(raw).ok_or(Invalid)?;
                parse(&decoded)
            })
    });
    if from_query.is_some() {
        return from_query;
    }
    let mut found = false;
    let mut total = 0usize;
    let mut cmcd = Cmcd::default();
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
    for pair in split_outside_quotes(text)? {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match pair.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (pair, None),
        };
        // Structured-field keys; custom ones (`com.example-myKey`) carry a `-` and may have capitals.
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._*".contains(&b))
        {
            return Err(Invalid);
        }
        match key {
            "bl" => cmcd.buffer_ms = Some(integer(value)?),
            "mtp" => cmcd.throughput_kbps = Some(integer(value)?),
            "su" => cmcd.startup = boolean(value)?,
            "bs" => cmcd.starved = boolean(value)?,
            _ => {}
        }
    }
    Ok(())
}

/// Splits on commas that are not inside a quoted string; an unterminated quote is invalid.
fn split_outside_quotes(text: &str) -> Result<Vec<&str>, Invalid> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in text.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(Invalid);
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn integer(value: Option<&str>) -> Result<u64, Invalid> {
    let v = value.ok_or(Invalid)?;
    if v.is_empty() || v.len() > 15 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid);
    }
    v.parse().map_err(|_| Invalid)
}

fn boolean(value: Option<&str>) -> Result<bool, Invalid> {
    match value {
        None => Ok(true),
        Some("?0") => Ok(false),
        Some("?1") => Ok(true),
        Some(_) => Err(Invalid),
    }
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
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

/// The CMCD object type of a class (CTA-5004 `ot`): `m` manifest, `av` muxed media, `i` init,
/// `k` key, `o` other.
fn object_type(class: ObjectClass) -> &'static str {
    match class {
        ObjectClass::Multivariant
        | ObjectClass::LiveMedia
        | ObjectClass::VodMedia
        | ObjectClass::Playlist => "m",
        ObjectClass::Segment | ObjectClass::Part => "av",
        ObjectClass::Init => "i",
        ObjectClass::Key => "k",
        ObjectClass::Other => "o",
    }
}

/// `CMSD-Static` for an object of `class`; `live` when it is known to belong to a live stream
/// (`st=l`) or not (`st=v`). Static strings: this is on every answer's path.
pub fn cmsd_static(class: ObjectClass, live: Option<bool>) -> HeaderValue {
    macro_rules! table {
        ($ot:literal) => {
            match live {
                Some(true) => concat!("ot=", $ot, ",sf=h,st=l,v=1"),
                Some(false) => concat!("ot=", $ot, ",sf=h,st=v,v=1"),
                None => concat!("ot=", $ot, ",sf=h,v=1"),
            }
        };
    }
    HeaderValue::from_static(match object_type(class) {
        "m" => table!("m"),
        "av" => table!("av"),
        "i" => table!("i"),
        "k" => table!("k"),
        _ => table!("o"),
    })
}

/// `CMSD-Dynamic` with the gateway's throughput estimate to this client, if it has one.
pub fn cmsd_dynamic(etp_kbps: Option<u64>) -> Option<HeaderValue> {
    let etp = etp_kbps?;
    HeaderValue::from_str(&format!("\"gateway\";etp={etp}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_keys_it_uses_and_ignores_the_others() {
        let c =
            parse("bl=21300,br=3200,bs,d=4004,mtp=25400,ot=v,sid=\"6e2fb550-c457,x\",su,tb=6000")
                .unwrap();
        assert_eq!(
            c,
            Cmcd {
                buffer_ms: Some(21300),
                throughput_kbps: Some(25400),
                startup: true,
                starved: true
            }
        );
        assert_eq!(parse("").unwrap(), Cmcd::default());
        assert!(!parse("bs=?0").unwrap().starved);
        assert_eq!(
            parse("com.example-myNumericKey=500,bl=100")
                .unwrap()
                .buffer_ms,
            Some(100)
        );
    }

    #[test]
    fn garbage_is_invalid_never_a_panic() {
        for bad in [
            "bl",
            "bl=",
            "bl=-1",
            "bl=1.5",
            "bl=99999999999999999999",
            "mtp=abc",
            "su=yes",
            "sid=\"unterminated",
            "=5",
            "b l=5",
            "bl=5,,,\u{0}",
        ] {
            assert_eq!(parse(bad), Err(Invalid), "{bad:?}");
        }
        assert_eq!(parse(&"x".repeat(MAX_LEN + 1)), Err(Invalid));
        // Arbitrary bytes, each prefix: never a panic.
        let noise = "bl=\"\\,=\u{7f}%zz,su=?1,\"\"mtp=1";
        for end in 0..=noise.len() {
            if let Some(prefix) = noise.get(..end) {
                let _ = parse(prefix);
                let _ = of_request(Some(&format!("CMCD={prefix}")), &HeaderMap::new());
            }
        }
    }

    #[test]
    fn from_the_query_or_the_headers() {
        let none = HeaderMap::new();
        assert_eq!(of_request(Some("v=1"), &none), None);
        assert_eq!(of_request(None, &none), None);
        let q = of_request(Some("token=x&CMCD=bl%3D200%2Cmtp%3D5000%2Csu"), &none);
        assert_eq!(
            q,
            Some(Ok(Cmcd {
                buffer_ms: Some(200),
                throughput_kbps: Some(5000),
                startup: true,
                starved: false
            }))
        );
        assert_eq!(of_request(Some("CMCD=bl%3"), &none), Some(Err(Invalid)));
        let mut headers = HeaderMap::new();
        headers.insert("cmcd-request", HeaderValue::from_static("bl=300,mtp=800"));
        headers.insert("cmcd-status", HeaderValue::from_static("bs"));
        headers.insert("cmcd-session", HeaderValue::from_static("sid=\"abc\",sf=h"));
        assert_eq!(
            of_request(None, &headers),
            Some(Ok(Cmcd {
                buffer_ms: Some(300),
                throughput_kbps: Some(800),
                startup: false,
                starved: true
            }))
        );
        headers.insert(
            "cmcd-object",
            HeaderValue::from_str(&"a".repeat(MAX_LEN)).unwrap(),
        );
        assert_eq!(of_request(None, &headers), Some(Err(Invalid)));
    }

    #[test]
    fn cmsd_says_what_the_object_is_and_the_estimated_throughput() {
        assert_eq!(
            cmsd_static(ObjectClass::Segment, Some(true)),
            "ot=av,sf=h,st=l,v=1"
        );
        assert_eq!(
            cmsd_static(ObjectClass::VodMedia, Some(false)),
            "ot=m,sf=h,st=v,v=1"
        );
        assert_eq!(cmsd_static(ObjectClass::Init, None), "ot=i,sf=h,v=1");
        assert_eq!(cmsd_dynamic(Some(4200)).unwrap(), "\"gateway\";etp=4200");
        assert_eq!(cmsd_dynamic(None), None);
    }
}
