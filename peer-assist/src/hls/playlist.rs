//! HLS playlists (RFC 8216bis, with Low-Latency HLS), read line by line in one pass.
//!
//! The parser is linear in the body's length, bounded ([`Limits`]) and lenient the way players are:
//! unknown tags and comments are skipped, a malformed value of a known tag is skipped; only a body
//! that is not a playlist at all, or one over the limits, is an error. Values from the origin are
//! clamped to sane ranges (a target duration of `u64::MAX` seconds is one hour), so arithmetic on
//! them never overflows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::attributes::{self, Attribute};

/// The longest target duration, segment or part duration taken at face value.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Default [`Limits::max_bytes`].
pub const MAX_PLAYLIST_BYTES: usize = 16 * 1024 * 1024;
/// Default [`Limits::max_segments`]: 27 hours of 1-second segments.
pub const MAX_SEGMENTS: usize = 100_000;

/// How much a playlist may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    /// Segments plus parts.
    pub max_segments: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: MAX_PLAYLIST_BYTES,
            max_segments: MAX_SEGMENTS,
        }
    }
}

/// Why a body is not a usable playlist. The origin's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("playlist of {bytes} bytes is over the {max}-byte limit")]
    TooLarge { bytes: usize, max: usize },
    #[error("playlist has more than {max} segments and parts")]
    TooManySegments { max: usize },
    #[error("not a playlist: it does not start with #EXTM3U")]
    NotAPlaylist,
    #[error("a playlist with neither variants nor segment tags")]
    Empty,
}

/// A parsed playlist.
#[derive(Debug, Clone, PartialEq)]
pub enum Playlist {
    Multivariant(MultivariantPlaylist),
    Media(MediaPlaylist),
}

/// A multivariant (master) playlist.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MultivariantPlaylist {
    /// `EXT-X-STREAM-INF` variants, in playlist order.
    pub variants: Vec<Variant>,
    /// `EXT-X-MEDIA` renditions (alternate audio, subtitles...).
    pub renditions: Vec<Rendition>,
    /// `EXT-X-I-FRAME-STREAM-INF` playlist URIs.
    pub iframe_playlists: Vec<String>,
    pub session_keys: Vec<Key>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Variant {
    pub uri: String,
    pub bandwidth: Option<u64>,
    pub average_bandwidth: Option<u64>,
    pub codecs: Option<String>,
    pub resolution: Option<(u32, u32)>,
    pub audio: Option<String>,
    pub subtitles: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rendition {
    /// `AUDIO`, `VIDEO`, `SUBTITLES` or `CLOSED-CAPTIONS`.
    pub kind: String,
    pub group_id: String,
    pub name: String,
    pub language: Option<String>,
    pub uri: Option<String>,
    pub default: bool,
}

/// A media playlist.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaPlaylist {
    /// `EXT-X-TARGETDURATION`, at least 1 s and at most [`MAX_DURATION`]; when missing, the
    /// longest segment rounded up.
    pub target_duration: Duration,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    /// `EXT-X-ENDLIST`: nothing will be added.
    pub ended: bool,
    pub playlist_type: Option<PlaylistType>,
    pub segments: Vec<Segment>,
    /// `EXT-X-PART-INF:PART-TARGET`.
    pub part_target: Option<Duration>,
    /// Parts after the last complete segment: the segment being made at the live edge.
    pub trailing_parts: Vec<Part>,
    pub preload_hints: Vec<PreloadHint>,
    pub rendition_reports: Vec<RenditionReport>,
    pub server_control: ServerControl,
    /// `EXT-X-SKIP:SKIPPED-SEGMENTS` of a delta update.
    pub skipped_segments: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistType {
    Vod,
    Event,
}

impl MediaPlaylist {
    /// VOD: ended, or declared VOD.
    pub fn is_vod(&self) -> bool {
        self.ended || self.playlist_type == Some(PlaylistType::Vod)
    }

    /// The media sequence number of the last complete segment.
    pub fn last_sequence(&self) -> Option<u64> {
        self.segments.last().map(|s| s.sequence)
    }

    /// The media sequence number the next segment will have.
    pub fn next_sequence(&self) -> u64 {
        self.media_sequence
            .saturating_add(self.skipped_segments)
            .saturating_add(self.segments.len() as u64)
    }
}

/// A media segment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Segment {
    /// The URI as written.
    pub uri: String,
    pub sequence: u64,
    pub duration: Duration,
    pub byterange: Option<ByteRange>,
    /// The `EXT-X-MAP` (initialization section) in force.
    pub map: Option<Map>,
    /// The `EXT-X-KEY` in force (`None` also for `METHOD=NONE`).
    pub key: Option<Key>,
    /// `EXT-X-DISCONTINUITY` before this segment.
    pub discontinuity: bool,
    pub discontinuity_sequence: u64,
    /// `EXT-X-PROGRAM-DATE-TIME` of this segment, written or carried forward from the last one
    /// by the durations in between.
    pub program_date_time: Option<SystemTime>,
    /// `EXT-X-GAP`.
    pub gap: bool,
    /// `EXT-X-PART`s of this segment.
    pub parts: Vec<Part>,
}

/// `length` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

impl ByteRange {
    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Map {
    pub uri: String,
    pub byterange: Option<ByteRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Key {
    /// `AES-128`, `SAMPLE-AES`...
    pub method: String,
    pub uri: Option<String>,
    pub iv: Option<String>,
    pub keyformat: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Part {
    pub uri: String,
    pub duration: Duration,
    pub independent: bool,
    pub byterange: Option<ByteRange>,
    pub gap: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreloadHint {
    /// `PART` or `MAP`.
    pub kind: String,
    pub uri: String,
    pub byterange_start: Option<u64>,
    pub byterange_length: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RenditionReport {
    pub uri: String,
    pub last_msn: Option<u64>,
    pub last_part: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerControl {
    pub can_block_reload: bool,
    pub can_skip_until: Option<Duration>,
    pub can_skip_dateranges: bool,
    pub hold_back: Option<Duration>,
    pub part_hold_back: Option<Duration>,
}

/// Parses a playlist with the default [`Limits`].
pub fn parse(body: &[u8]) -> Result<Playlist, ParseError> {
    parse_with(body, Limits::default())
}

/// Parses a playlist.
pub fn parse_with(body: &[u8], limits: Limits) -> Result<Playlist, ParseError> {
    if body.len() > limits.max_bytes {
        return Err(ParseError::TooLarge {
            bytes: body.len(),
            max: limits.max_bytes,
        });
    }
    let text = String::from_utf8_lossy(body);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        return Err(ParseError::NotAPlaylist);
    }
    let mut parser = Parser::new(limits);
    for line in lines {
        parser.line(line)?;
    }
    parser.finish()
}

/// Duration from a decimal number of seconds, clamped to `[0, MAX_DURATION]`; `None` if not a
/// number.
fn seconds(value: &str) -> Option<Duration> {
    let s: f64 = value.trim().parse().ok()?;
    if !s.is_finite() {
        return None;
    }
    Some(Duration::from_secs_f64(
        s.clamp(0.0, MAX_DURATION.as_secs_f64()),
    ))
}

fn integer(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

/// `n[@o]`: a length and an optional offset.
fn byterange(value: &str) -> Option<(u64, Option<u64>)> {
    match value.trim().split_once('@') {
        Some((n, o)) => Some((integer(n)?, Some(integer(o)?))),
        None => Some((integer(value)?, None)),
    }
}

fn yes(list: &[Attribute<'_>], name: &str) -> bool {
    attributes::get(list, name) == Some("YES")
}

#[derive(Default)]
struct Pending {
    duration: Option<Duration>,
    byterange: Option<(u64, Option<u64>)>,
    discontinuity: bool,
    program_date_time: Option<SystemTime>,
    gap: bool,
    parts: Vec<Part>,
    /// `EXT-X-STREAM-INF` attributes waiting for their URI line.
    variant: Option<Variant>,
}

struct Parser {
    limits: Limits,
    counted: usize,
    multivariant: MultivariantPlaylist,
    is_multivariant: bool,
    media: MediaPlaylist,
    is_media: bool,
    target: Option<Duration>,
    pending: Pending,
    key: Option<Key>,
    map: Option<Map>,
    /// Where the next byte range without an offset starts: (uri, offset).
    next_range: Option<(String, u64)>,
    /// The last program date time, carried forward.
    clock: Option<SystemTime>,
    /// The discontinuity sequence number of the next segment.
    discontinuities: u64,
}

impl Parser {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            counted: 0,
            multivariant: MultivariantPlaylist::default(),
            is_multivariant: false,
            media: MediaPlaylist::default(),
            is_media: false,
            target: None,
            pending: Pending::default(),
            key: None,
            map: None,
            next_range: None,
            clock: None,
            discontinuities: 0,
        }
    }

    fn count(&mut self) -> Result<(), ParseError> {
        self.counted += 1;
        if self.counted > self.limits.max_segments {
            return Err(ParseError::TooManySegments {
                max: self.limits.max_segments,
            });
        }
        Ok(())
    }

    fn line(&mut self, line: &str) -> Result<(), ParseError> {
        if !line.starts_with('#') {
            return self.uri(line);
        }
        if !line.starts_with("#EXT") {
            return Ok(()); // a comment
        }
        let (tag, value) = line.split_once(':').unwrap_or((line, ""));
        let attrs = || attributes::parse(value);
        let m = &mut self.media;
        match tag {
            "#EXTINF" => {
                self.is_media = true;
                let number = value.split(',').next().unwrap_or("");
                self.pending.duration = Some(seconds(number).unwrap_or_default());
            }
            "#EXT-X-TARGETDURATION" => {
                self.is_media = true;
                if let Some(t) = integer(value) {
                    self.target = Some(Duration::from_secs(t.min(MAX_DURATION.as_secs())));
                }
            }
            "#EXT-X-MEDIA-SEQUENCE" => {
                self.is_media = true;
                if let Some(n) = integer(value) {
                    m.media_sequence = n;
                }
            }
            "#EXT-X-DISCONTINUITY-SEQUENCE" => {
                if let Some(n) = integer(value) {
                    m.discontinuity_sequence = n;
                    self.discontinuities = n;
                }
            }
            "#EXT-X-ENDLIST" => m.ended = true,
            "#EXT-X-PLAYLIST-TYPE" => {
                m.playlist_type = match value.trim() {
                    "VOD" => Some(PlaylistType::Vod),
                    "EVENT" => Some(PlaylistType::Event),
                    _ => None,
                }
            }
            "#EXT-X-BYTERANGE" => self.pending.byterange = byterange(value),
            "#EXT-X-DISCONTINUITY" => self.pending.discontinuity = true,
            "#EXT-X-GAP" => self.pending.gap = true,
            "#EXT-X-PROGRAM-DATE-TIME" => {
                self.pending.program_date_time = date_time(value.trim());
            }
            "#EXT-X-KEY" => {
                let a = attrs();
                let method = attributes::get(&a, "METHOD").unwrap_or("NONE");
                self.key = (method != "NONE").then(|| Key {
                    method: method.to_owned(),
                    uri: attributes::get(&a, "URI").map(str::to_owned),
                    iv: attributes::get(&a, "IV").map(str::to_owned),
                    keyformat: attributes::get(&a, "KEYFORMAT").map(str::to_owned),
                });
            }
            "#EXT-X-MAP" => {
                let a = attrs();
                if let Some(uri) = attributes::get(&a, "URI") {
                    let range = attributes::get(&a, "BYTERANGE").and_then(byterange);
                    self.map = Some(Map {
                        uri: uri.to_owned(),
                        byterange: range.map(|(length, offset)| ByteRange {
                            offset: offset.unwrap_or(0),
                            length,
                        }),
                    });
                }
            }
            "#EXT-X-PART-INF" => {
                m.part_target = attributes::get(&attrs(), "PART-TARGET").and_then(seconds);
            }
            "#EXT-X-PART" => {
                self.is_media = true;
                self.count()?;
                let a = attrs();
                if let Some(uri) = attributes::get(&a, "URI") {
                    let range = attributes::get(&a, "BYTERANGE").and_then(byterange);
                    self.pending.parts.push(Part {
                        uri: uri.to_owned(),
                        duration: attributes::get(&a, "DURATION")
                            .and_then(seconds)
                            .unwrap_or_default(),
                        independent: yes(&a, "INDEPENDENT"),
                        byterange: range.map(|(length, offset)| ByteRange {
                            offset: offset.unwrap_or(0),
                            length,
                        }),
                        gap: yes(&a, "GAP"),
                    });
                }
            }
            "#EXT-X-PRELOAD-HINT" => {
                let a = attrs();
                if let Some(uri) = attributes::get(&a, "URI") {
                    m.preload_hints.push(PreloadHint {
                        kind: attributes::get(&a, "TYPE").unwrap_or("PART").to_owned(),
                        uri: uri.to_owned(),
                        byterange_start: attributes::get(&a, "BYTERANGE-START").and_then(integer),
                        byterange_length: attributes::get(&a, "BYTERANGE-LENGTH").and_then(integer),
                    });
                }
            }
            "#EXT-X-RENDITION-REPORT" => {
                let a = attrs();
                if let Some(uri) = attributes::get(&a, "URI") {
                    m.rendition_reports.push(RenditionReport {
                        uri: uri.to_owned(),
                        last_msn: attributes::get(&a, "LAST-MSN").and_then(integer),
                        last_part: attributes::get(&a, "LAST-PART").and_then(integer),
                    });
                }
            }
            "#EXT-X-SERVER-CONTROL" => {
                let a = attrs();
                m.server_control = ServerControl {
                    can_block_reload: yes(&a, "CAN-BLOCK-RELOAD"),
                    can_skip_until: attributes::get(&a, "CAN-SKIP-UNTIL").and_then(seconds),
                    can_skip_dateranges: yes(&a, "CAN-SKIP-DATERANGES"),
                    hold_back: attributes::get(&a, "HOLD-BACK").and_then(seconds),
                    part_hold_back: attributes::get(&a, "PART-HOLD-BACK").and_then(seconds),
                };
            }
            "#EXT-X-SKIP" => {
                if let Some(n) = attributes::get(&attrs(), "SKIPPED-SEGMENTS").and_then(integer) {
                    m.skipped_segments = n;
                }
            }
            "#EXT-X-STREAM-INF" => {
                self.is_multivariant = true;
                let a = attrs();
                let resolution = attributes::get(&a, "RESOLUTION").and_then(|r| {
                    let (w, h) = r.split_once('x')?;
                    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
                });
                self.pending.variant = Some(Variant {
                    uri: String::new(),
                    bandwidth: attributes::get(&a, "BANDWIDTH").and_then(integer),
                    average_bandwidth: attributes::get(&a, "AVERAGE-BANDWIDTH").and_then(integer),
                    codecs: attributes::get(&a, "CODECS").map(str::to_owned),
                    resolution,
                    audio: attributes::get(&a, "AUDIO").map(str::to_owned),
                    subtitles: attributes::get(&a, "SUBTITLES").map(str::to_owned),
                });
            }
            "#EXT-X-I-FRAME-STREAM-INF" => {
                self.is_multivariant = true;
                if let Some(uri) = attributes::get(&attrs(), "URI") {
                    self.multivariant.iframe_playlists.push(uri.to_owned());
                }
            }
            "#EXT-X-MEDIA" => {
                self.is_multivariant = true;
                let a = attrs();
                self.multivariant.renditions.push(Rendition {
                    kind: attributes::get(&a, "TYPE").unwrap_or("").to_owned(),
                    group_id: attributes::get(&a, "GROUP-ID").unwrap_or("").to_owned(),
                    name: attributes::get(&a, "NAME").unwrap_or("").to_owned(),
                    language: attributes::get(&a, "LANGUAGE").map(str::to_owned),
                    uri: attributes::get(&a, "URI").map(str::to_owned),
                    default: yes(&a, "DEFAULT"),
                });
            }
            "#EXT-X-SESSION-KEY" => {
                let a = attrs();
                self.multivariant.session_keys.push(Key {
                    method: attributes::get(&a, "METHOD").unwrap_or("").to_owned(),
                    uri: attributes::get(&a, "URI").map(str::to_owned),
                    iv: attributes::get(&a, "IV").map(str::to_owned),
                    keyformat: attributes::get(&a, "KEYFORMAT").map(str::to_owned),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// A URI line: a variant's or a segment's.
    fn uri(&mut self, uri: &str) -> Result<(), ParseError> {
        if let Some(mut variant) = self.pending.variant.take() {
            variant.uri = uri.to_owned();
            self.multivariant.variants.push(variant);
            return Ok(());
        }
        self.is_media = true;
        self.count()?;
        let pending = std::mem::take(&mut self.pending);
        let duration = pending.duration.unwrap_or_default();
        let byterange = pending.byterange.map(|(length, offset)| {
            let offset = offset.unwrap_or_else(|| match &self.next_range {
                Some((previous, end)) if previous == uri => *end,
                _ => 0,
            });
            ByteRange { offset, length }
        });
        self.next_range = byterange.map(|r| (uri.to_owned(), r.end()));
        if pending.discontinuity {
            self.discontinuities = self.discontinuities.saturating_add(1);
        }
        let m = &mut self.media;
        let program_date_time = pending.program_date_time.or(self.clock);
        self.clock = program_date_time.and_then(|t| t.checked_add(duration));
        let sequence = m
            .media_sequence
            .saturating_add(m.skipped_segments)
            .saturating_add(m.segments.len() as u64);
        m.segments.push(Segment {
            uri: uri.to_owned(),
            sequence,
            duration,
            byterange,
            map: self.map.clone(),
            key: self.key.clone(),
            discontinuity: pending.discontinuity,
            discontinuity_sequence: self.discontinuities,
            program_date_time,
            gap: pending.gap,
            parts: pending.parts,
        });
        Ok(())
    }

    fn finish(mut self) -> Result<Playlist, ParseError> {
        if self.is_multivariant {
            return Ok(Playlist::Multivariant(self.multivariant));
        }
        if !self.is_media {
            return Err(ParseError::Empty);
        }
        let mut m = self.media;
        m.trailing_parts = std::mem::take(&mut self.pending.parts);
        let longest = m
            .segments
            .iter()
            .map(|s| s.duration)
            .max()
            .unwrap_or_default();
        let rounded_up =
            Duration::from_secs(longest.as_secs() + u64::from(longest.subsec_nanos() > 0));
        m.target_duration = self
            .target
            .unwrap_or(rounded_up)
            .max(Duration::from_secs(1));
        Ok(Playlist::Media(m))
    }
}

/// An RFC 3339 date-time with a time zone (`2026-12-04T17:45:12.345Z`, `…+01:00`).
pub fn date_time(text: &str) -> Option<SystemTime> {
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (clock, offset_secs) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let zone = &zone[1..];
        let (h, m) = zone
            .split_once(':')
            .unwrap_or((zone.get(..2)?, zone.get(2..)?));
        let h: i64 = h.parse().ok()?;
        let m: i64 = m.parse().ok()?;
        (c, sign * (h * 3600 + m * 60))
    };
    let mut t = clock.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let seconds: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0.0..61.0).contains(&seconds)
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let whole = days * 86_400 + hour * 3600 + minute * 60 - offset_secs;
    let total = whole as f64 + seconds;
    if !(0.0..1e11).contains(&total) {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_secs_f64(total))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(text: &str) -> MediaPlaylist {
        match parse(text.as_bytes()) {
            Ok(Playlist::Media(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multivariant_with_variants_and_renditions() {
        let text = "#EXTM3U\n#EXT-X-VERSION:6\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English, main\",LANGUAGE=\"en\",DEFAULT=YES,URI=\"audio/en.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=300000,AVERAGE-BANDWIDTH=280000,RESOLUTION=426x240,CODECS=\"avc1.4d401e,mp4a.40.2\",AUDIO=\"aud\"\n\
            240p/index.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=600000\r\n360p/index.m3u8?x=1\r\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"iframes.m3u8\"\n";
        let Ok(Playlist::Multivariant(m)) = parse(text.as_bytes()) else {
            panic!()
        };
        assert_eq!(m.variants.len(), 2);
        assert_eq!(m.variants[0].uri, "240p/index.m3u8");
        assert_eq!(m.variants[0].bandwidth, Some(300_000));
        assert_eq!(m.variants[0].resolution, Some((426, 240)));
        assert_eq!(m.variants[0].audio.as_deref(), Some("aud"));
        assert_eq!(m.variants[1].uri, "360p/index.m3u8?x=1");
        assert_eq!(m.renditions[0].name, "English, main");
        assert_eq!(m.renditions[0].uri.as_deref(), Some("audio/en.m3u8"));
        assert!(m.renditions[0].default);
        assert_eq!(m.iframe_playlists, ["iframes.m3u8"]);
    }

    #[test]
    fn live_media_with_sequences_maps_keys_and_dates() {
        let m = media(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:100\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:7\n#EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXT-X-KEY:METHOD=AES-128,URI=\"k.key\",IV=0x01\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-12-04T17:00:00.000Z\n#EXTINF:4.0,\nseg_100.m4s\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init2.mp4\"\n#EXT-X-KEY:METHOD=NONE\n\
             #EXTINF:3.5,title\nseg_101.m4s\n# a comment\n#EXT-X-UNKNOWN:X=1\n#EXTINF:4,\nseg_102.m4s\n",
        );
        assert_eq!(m.target_duration, Duration::from_secs(4));
        assert!(!m.is_vod());
        assert_eq!(m.segments.len(), 3);
        let [a, b, c] = &m.segments[..] else { panic!() };
        assert_eq!((a.sequence, b.sequence, c.sequence), (100, 101, 102));
        assert_eq!(a.map.as_ref().unwrap().uri, "init.mp4");
        assert_eq!(b.map.as_ref().unwrap().uri, "init2.mp4");
        assert_eq!(a.key.as_ref().unwrap().uri.as_deref(), Some("k.key"));
        assert_eq!(b.key, None, "METHOD=NONE ends encryption");
        assert_eq!(b.duration, Duration::from_millis(3500));
        assert_eq!((a.discontinuity_sequence, b.discontinuity_sequence), (7, 8));
        assert!(b.discontinuity && !c.discontinuity);
        let t0 = date_time("2026-12-04T17:00:00Z").unwrap();
        assert_eq!(a.program_date_time, Some(t0));
        assert_eq!(
            c.program_date_time,
            Some(t0 + Duration::from_millis(7500)),
            "carried forward"
        );
        assert_eq!(m.last_sequence(), Some(102));
        assert_eq!(m.next_sequence(), 103);
    }

    #[test]
    fn vod_and_byte_ranges() {
        let m = media(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MAP:URI=\"v.mp4\",BYTERANGE=\"720@0\"\n\
             #EXTINF:2,\n#EXT-X-BYTERANGE:1000@720\nv.mp4\n#EXTINF:2,\n#EXT-X-BYTERANGE:500\nv.mp4\n\
             #EXT-X-ENDLIST\n",
        );
        assert!(m.is_vod() && m.ended);
        assert_eq!(
            m.segments[0].byterange,
            Some(ByteRange {
                offset: 720,
                length: 1000
            })
        );
        assert_eq!(
            m.segments[1].byterange,
            Some(ByteRange {
                offset: 1720,
                length: 500
            }),
            "no offset: right after the previous range of the same URI"
        );
        assert_eq!(
            m.segments[0].map.as_ref().unwrap().byterange,
            Some(ByteRange {
                offset: 0,
                length: 720
            })
        );
    }

    #[test]
    fn low_latency_parts_hints_reports_and_delta_updates() {
        let m = media(
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=1.0\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=24.0,PART-HOLD-BACK=3.0\n\
             #EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n\
             #EXT-X-PART:DURATION=1.0,URI=\"p13.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=1.0,URI=\"p13.1.m4s\"\n#EXTINF:4.0,\ns13.m4s\n\
             #EXT-X-PART:DURATION=1.0,URI=\"p14.0.m4s\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p14.1.m4s\"\n\
             #EXT-X-RENDITION-REPORT:URI=\"../720p/i.m3u8\",LAST-MSN=14,LAST-PART=0\n",
        );
        assert_eq!(m.part_target, Some(Duration::from_secs(1)));
        assert!(m.server_control.can_block_reload);
        assert_eq!(
            m.server_control.can_skip_until,
            Some(Duration::from_secs(24))
        );
        assert_eq!(m.skipped_segments, 3);
        assert_eq!(m.segments[0].sequence, 13, "skipped segments count");
        assert_eq!(m.segments[0].parts.len(), 2);
        assert!(m.segments[0].parts[0].independent);
        assert_eq!(m.trailing_parts[0].uri, "p14.0.m4s");
        assert_eq!(m.preload_hints[0].uri, "p14.1.m4s");
        assert_eq!(m.rendition_reports[0].last_msn, Some(14));
        assert_eq!(m.next_sequence(), 14);
    }

    #[test]
    fn hostile_values_are_clamped_never_overflow() {
        let m = media(
            "#EXTM3U\n#EXT-X-TARGETDURATION:18446744073709551615\n\
             #EXT-X-MEDIA-SEQUENCE:18446744073709551615\n#EXTINF:1e308,\na.ts\n#EXTINF:NaN,\nb.ts\n\
             #EXTINF:-5,\nc.ts\n#EXT-X-BYTERANGE:18446744073709551615@18446744073709551615\nd.ts\n",
        );
        assert_eq!(m.target_duration, MAX_DURATION);
        assert_eq!(m.segments[0].duration, MAX_DURATION);
        assert_eq!(m.segments[1].duration, Duration::ZERO);
        assert_eq!(m.segments[2].duration, Duration::ZERO);
        assert_eq!(m.segments[3].sequence, u64::MAX, "saturates");
        assert_eq!(m.segments[3].byterange.unwrap().end(), u64::MAX);
        // Arithmetic players do on it is safe.
        let _ = m.target_duration * 3;
    }

    #[test]
    fn limits_and_non_playlists() {
        assert_eq!(parse(b"<html>"), Err(ParseError::NotAPlaylist));
        assert_eq!(parse(b""), Err(ParseError::NotAPlaylist));
        assert_eq!(
            parse(b"#EXTM3U\n#EXT-X-VERSION:3\n"),
            Err(ParseError::Empty)
        );
        assert!(
            parse(b"\xef\xbb\xbf#EXTM3U\n#EXTINF:2,\na.ts\n").is_ok(),
            "a BOM is fine"
        );
        let limits = Limits {
            max_bytes: 100,
            max_segments: 2,
        };
        let big = "#EXTM3U\n".to_owned() + &"#EXTINF:1,\na.ts\n".repeat(10);
        assert_eq!(
            parse_with(big.as_bytes(), limits),
            Err(ParseError::TooLarge {
                bytes: big.len(),
                max: 100
            })
        );
        let three = "#EXTM3U\n#EXTINF:1,\na\n#EXTINF:1,\nb\n#EXTINF:1,\nc\n";
        assert_eq!(
            parse_with(three.as_bytes(), limits),
            Err(ParseError::TooManySegments { max: 2 })
        );
        let m = media("#EXTM3U\n#EXTINF:2.5,\na.ts\n");
        assert_eq!(
            m.target_duration,
            Duration::from_secs(3),
            "missing: longest rounded up"
        );
    }

    #[test]
    fn parsing_is_linear() {
        // 150,000 segments: m3u8-rs plus the old de-duplication took 38 s of CPU on this.
        let mut text = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n");
        for i in 0..150_000 {
            text.push_str(&format!("#EXTINF:2.0,\n/seg/{i}.ts\n"));
        }
        let limits = Limits {
            max_bytes: usize::MAX,
            max_segments: usize::MAX,
        };
        let Ok(Playlist::Media(m)) = parse_with(text.as_bytes(), limits) else {
            panic!()
        };
        assert_eq!(m.segments.len(), 150_000);
    }

    #[test]
    fn date_times() {
        let epoch = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(date_time("1970-01-01T00:00:00Z"), Some(epoch(0)));
        assert_eq!(date_time("2000-03-01T00:00:00Z"), Some(epoch(951_868_800)));
        assert_eq!(
            date_time("2026-12-04T18:00:00+01:00"),
            date_time("2026-12-04T17:00:00Z")
        );
        assert_eq!(
            date_time("2026-12-04T16:30:00-0030"),
            date_time("2026-12-04T17:00:00Z")
        );
        assert_eq!(
            date_time("2026-12-04T17:00:00.250Z"),
            date_time("2026-12-04T17:00:00Z").map(|t| t + Duration::from_millis(250))
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-12-04",
            "x-y-zT1:2:3Z",
            "2026-12-04T25:00:00Z",
        ] {
            assert_eq!(date_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let pieces = [
            "#EXTM3U\n",
            "#EXTINF:",
            "2.0,\n",
            "a.ts\n",
            "#EXT-X-BYTERANGE:",
            "10@",
            "\n",
            "#EXT-X-PART:",
            "URI=\"",
            "\"",
            ",",
            "#EXT-X-STREAM-INF:",
            "BANDWIDTH=",
            "x",
            "#EXT-X-MAP:",
            "#EXT-X-KEY:METHOD=AES-128",
            "#EXT-X-PROGRAM-DATE-TIME:",
            "2026-",
            "#EXT-X-SKIP:SKIPPED-SEGMENTS=",
            "99999999999999999999",
            "\r\n",
            "é",
            "#EXT-X-DISCONTINUITY\n",
        ];
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..20 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let _ = parse(text.as_bytes());
        }
    }
}
