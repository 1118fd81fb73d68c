//! The properties the fuzz targets check (not a public API). Each function takes arbitrary bytes and
//! panics only when a property fails, so the same checks run under libFuzzer (`fuzz/`) and, over the
//! committed seed corpora, as a normal test on every CI run (`gateway/tests/fuzz_corpus.rs`).

use crate::hls;
use crate::protocol::frame::{decode, decode_exact, FrameError, HEADER_LEN, MAX_FRAME_LEN};
use crate::protocol::signal::{decode_client, decode_server, MAX_SIGNAL_LEN};

/// Data frames: `decode` and `decode_exact` never panic and agree; an accepted frame is valid,
/// re-encodes to exactly the bytes it came from and decodes again to itself; an `Incomplete` hint
/// never points past a maximal frame.
pub fn frames(data: &[u8]) {
    let exact = decode_exact(data);
    match decode(data) {
        Ok((frame, used)) => {
            assert!(used >= HEADER_LEN && used <= data.len());
            if used == data.len() {
                assert_eq!(exact.as_ref(), Ok(&frame));
            } else {
                assert_eq!(exact, Err(FrameError::TrailingBytes));
            }
            assert_eq!(frame.validate(), Ok(()));
            let bytes = frame.encode();
            assert_eq!(&bytes[..], &data[..used], "encoding is canonical");
            assert_eq!(decode_exact(&bytes), Ok(frame.clone()));
            assert_eq!(decode(&bytes), Ok((frame, bytes.len())));
        }
        Err(FrameError::Incomplete { needed }) => {
            assert!(needed >= 1 && data.len() + needed <= HEADER_LEN + MAX_FRAME_LEN);
            assert_eq!(exact, Err(FrameError::Incomplete { needed }));
        }
        Err(e) => assert_eq!(exact, Err(e)),
    }
}

/// Signalling messages: decoding arbitrary text never panics, and an accepted message re-encodes to
/// canonical JSON that decodes to the same message and re-encodes identically.
pub fn signals(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = decode_client(text) {
        let canonical = msg.encode();
        // Re-encoding may grow a message (`1E2` becomes `100.0` in a relay payload).
        if canonical.len() <= MAX_SIGNAL_LEN {
            assert_eq!(decode_client(&canonical).as_ref(), Ok(&msg), "{canonical}");
            assert_eq!(decode_client(&canonical).map(|m| m.encode()), Ok(canonical));
        }
    }
    if let Ok(msg) = decode_server(text) {
        let canonical = msg.encode();
        if canonical.len() <= MAX_SIGNAL_LEN {
            assert_eq!(decode_server(&canonical).as_ref(), Ok(&msg), "{canonical}");
            assert_eq!(decode_server(&canonical).map(|m| m.encode()), Ok(canonical));
        }
    }
}

/// Media playlists as nodes read them: parsing never panics, segment ids are absolute paths without
/// dot segments, the reload interval is finite, and a rewrite that replaces nothing keeps the body.
pub fn playlist(data: &[u8]) {
    if let Ok(list) = hls::segment_list("/f/live/index.m3u8", data) {
        for segment in &list.segments {
            assert_absolute_clean(&segment.id);
        }
    }
    if let Ok(hls::Playlist::Media(media)) = hls::parse(data) {
        let interval = hls::reload_interval(media.target_duration, true);
        assert!(
            interval <= std::time::Duration::from_secs(24 * 3600),
            "{interval:?}"
        );
    }
    let kept = hls::rewrite::rewrite_uris(data, |_, _| None);
    assert!(matches!(kept, std::borrow::Cow::Borrowed(b) if b == data));
}

/// Panics unless `path` starts with `/` and has no `.` or `..` segment.
pub fn assert_absolute_clean(path: &str) {
    assert!(path.starts_with('/'), "{path:?} is not absolute");
    let without_query = path.split(['?', '#']).next().unwrap_or(path);
    assert!(
        !without_query.split('/').any(|s| s == "." || s == ".."),
        "{path:?} has a dot segment"
    );
}
