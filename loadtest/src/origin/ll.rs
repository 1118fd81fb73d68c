//! The synthetic origin's Low-Latency HLS mode (RFC 8216bis §4.4.4.9, §4.4.5, §6.2.5), pure: a
//! function of the stream, the request and the wall clock, like the rest of [`super`].
//!
//! With part duration `p` and segment duration `d` (`n = d / p` parts per segment):
//!
//! * part `j` of segment `k` is `{prefix}/r{i}/{k}.{j}.ts`, complete at `epoch + k*d + (j+1)*p`;
//!   its bytes are the `j`-th of `n` slices of the segment cut at 188-byte packet boundaries, so the
//!   parts of a segment concatenate to it exactly;
//! * the media playlist (`EXT-X-VERSION:9`) has `EXT-X-SERVER-CONTROL` (`CAN-BLOCK-RELOAD=YES`,
//!   `PART-HOLD-BACK` = 3 parts, `CAN-SKIP-UNTIL` = 6 target durations), `EXT-X-PART-INF`, the
//!   parts of the whole segments of the last three target durations, the parts of the segment in
//!   progress, an `EXT-X-PRELOAD-HINT` for the next part, and one `EXT-X-RENDITION-REPORT` per
//!   other rendition;
//! * a blocking reload (`_HLS_msn`, `_HLS_part`) is answered when the playlist holds what it asks
//!   for (400 when malformed or more than two segments ahead; 503 after three target durations);
//!   `_HLS_skip=YES|v2` gives a delta update (`EXT-X-SKIP`);
//! * a request for the next part, not yet complete, is held until it is; a part further ahead or
//!   out of the window is 404.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::{format_unix_ms, system_time_to_unix_ms, SyntheticStream, TS_PACKET};

/// What a request's LL-HLS delivery directives ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Directives {
    /// `_HLS_msn` (and `_HLS_part`): a blocking reload.
    pub block: Option<(u64, Option<u64>)>,
    /// `_HLS_skip=YES` or `v2`: a delta update.
    pub skip: bool,
}

impl Directives {
    /// Reads a raw query; malformed directives are the client's error (400).
    pub fn parse(query: Option<&str>) -> Result<Self, &'static str> {
        let (mut msn, mut part, mut skip) = (None, None, false);
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = || {
                (!value.is_empty()
                    && value.len() <= 20
                    && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
            };
            match name {
                "_HLS_msn" => msn = Some(number().ok_or("_HLS_msn is not a number")?),
                "_HLS_part" => part = Some(number().ok_or("_HLS_part is not a number")?),
                "_HLS_skip" => match value {
                    "YES" | "v2" => skip = true,
                    _ => return Err("_HLS_skip must be YES or v2"),
                },
                _ => {}
            }
        }
        match (msn, part) {
            (None, Some(_)) => Err("_HLS_part without _HLS_msn"),
            (msn, part) => Ok(Self {
                block: msn.map(|m| (m, part)),
                skip,
            }),
        }
    }
}

/// When a request may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Now.
    Ready,
    /// At this instant (within the hold limit).
    Until(SystemTime),
    /// Not within three target durations: 503 once they have passed.
    TooLong,
    /// 400, with the reason.
    BadRequest(&'static str),
}

/// The live edge at an instant: `segments` whole segments exist, and `parts` parts of the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub segments: u64,
    pub parts: u64,
}

impl SyntheticStream {
    /// Parts per segment in LL-HLS mode (`None`: classic HLS).
    pub fn parts_per_segment(&self) -> Option<u64> {
        let part = u64::try_from(self.part?.as_millis()).ok()?;
        (part > 0).then(|| (self.segment_duration_ms() / part).max(1))
    }

    fn part_ms(&self) -> u64 {
        self.part
            .map_or(1, |p| u64::try_from(p.as_millis()).unwrap_or(u64::MAX))
            .max(1)
    }

    fn target_ms(&self) -> u64 {
        self.segment_duration_ms().div_ceil(1_000) * 1_000
    }

    /// Checks an LL-HLS part duration: whole milliseconds that divide the segment duration.
    pub fn validate_part(&self) -> Result<(), String> {
        let Some(part) = self.part else {
            return Ok(());
        };
        if !self.live {
            return Err("LL-HLS needs a live stream".to_owned());
        }
        let ms = part.as_millis();
        if ms == 0 || part.subsec_nanos() % 1_000_000 != 0 {
            return Err(
                "the part duration must be a positive whole number of milliseconds".to_owned(),
            );
        }
        let segment = u128::from(self.segment_duration_ms());
        if ms > segment || segment % ms != 0 {
            return Err(format!(
                "the part duration ({ms} ms) must divide the segment duration ({segment} ms)"
            ));
        }
        Ok(())
    }

    /// The LL-HLS live edge at `now`.
    pub fn ll_edge(&self, now: SystemTime) -> Edge {
        let elapsed = now
            .duration_since(self.epoch)
            .map_or(0, |e| u64::try_from(e.as_millis()).unwrap_or(u64::MAX));
        let d = self.segment_duration_ms();
        Edge {
            segments: elapsed / d,
            parts: (elapsed % d) / self.part_ms(),
        }
    }

    /// When part `part` of segment `sequence` is complete.
    pub fn part_complete_at(&self, sequence: u64, part: u64) -> SystemTime {
        let ms = sequence
            .saturating_mul(self.segment_duration_ms())
            .saturating_add(part.saturating_add(1).saturating_mul(self.part_ms()));
        self.epoch
            .checked_add(Duration::from_millis(ms))
            .unwrap_or(self.epoch)
    }

    /// The bytes of part `part` of segment `sequence` of `rendition` (empty past the last part).
    pub fn part_bytes(&self, rendition: usize, sequence: u64, part: u64) -> bytes::Bytes {
        let n = self.parts_per_segment().unwrap_or(1);
        let whole = self.segment(rendition, sequence);
        let packets = whole.len().div_ceil(TS_PACKET) as u64;
        let cut = |j: u64| {
            let packet = u128::from(packets) * u128::from(j) / u128::from(n);
            usize::try_from(packet * TS_PACKET as u128)
                .unwrap_or(usize::MAX)
                .min(whole.len())
        };
        if part >= n {
            return bytes::Bytes::new();
        }
        whole.slice(cut(part)..cut(part + 1))
    }

    /// When a request for the media playlist with `directives` may be answered at `now`.
    pub fn playlist_wait(&self, directives: Directives, now: SystemTime) -> Wait {
        let Some((msn, part)) = directives.block else {
            return Wait::Ready;
        };
        let edge = self.ll_edge(now);
        let n = self.parts_per_segment().unwrap_or(1);
        // The last whole segment is `segments - 1`: two beyond it is the most one may ask for.
        if msn > edge.segments.saturating_add(1) {
            return Wait::BadRequest("_HLS_msn is more than two segments beyond the live edge");
        }
        let at = match part {
            // A part index past the segment's last is the segment's end.
            Some(p) if p < n => self.part_complete_at(msn, p),
            _ => self.part_complete_at(msn, n.saturating_sub(1)),
        };
        if at <= now {
            return Wait::Ready;
        }
        let hold = Duration::from_millis(self.target_ms().saturating_mul(3));
        match at.duration_since(now) {
            Ok(wait) if wait <= hold => Wait::Until(at),
            _ => Wait::TooLong,
        }
    }

    /// When a request for part `part` of segment `sequence` may be answered at `now`: at once
    /// when it is complete (or will never be: a 404 then), when it completes if it is the next one.
    pub fn part_wait(&self, sequence: u64, part: u64, now: SystemTime) -> Wait {
        let at = self.part_complete_at(sequence, part);
        if at <= now {
            return Wait::Ready;
        }
        let edge = self.ll_edge(now);
        let next = (sequence, part) == (edge.segments, edge.parts);
        if next {
            Wait::Until(at)
        } else {
            Wait::Ready // answered 404
        }
    }

    /// Whether part `part` of segment `sequence` exists at `now` (complete, within the window).
    pub fn part_available(
        &self,
        rendition: usize,
        sequence: u64,
        part: u64,
        now: SystemTime,
    ) -> bool {
        let Some(n) = self.parts_per_segment() else {
            return false;
        };
        let edge = self.ll_edge(now);
        let first = edge.segments.saturating_sub(self.live_window.max(1));
        rendition < self.bitrates.len()
            && part < n
            && sequence >= first
            && self.part_complete_at(sequence, part) <= now
    }

    /// The LL-HLS media playlist of `rendition` at `now` (a delta update with `skip`).
    pub fn ll_media_playlist(
        &self,
        rendition: usize,
        now: SystemTime,
        skip: bool,
    ) -> Option<String> {
        if rendition >= self.bitrates.len() {
            return None;
        }
        let d_ms = self.segment_duration_ms();
        let p_ms = self.part_ms();
        let n = self.parts_per_segment().unwrap_or(1);
        let target_ms = self.target_ms();
        let edge = self.ll_edge(now);
        let first = edge.segments.saturating_sub(self.live_window.max(1));
        let skip_until_ms = target_ms.saturating_mul(6);
        // Segments older than CAN-SKIP-UNTIL from the end are left out of a delta update.
        let kept = (skip_until_ms / d_ms).max(1);
        let skipped = if skip {
            (edge.segments - first).saturating_sub(kept)
        } else {
            0
        };
        // Parts are listed for the segments of the last three target durations.
        let with_parts = edge
            .segments
            .saturating_sub(target_ms.saturating_mul(3).div_ceil(d_ms));
        let seconds = |ms: u64| format!("{}.{:03}", ms / 1_000, ms % 1_000);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={},CAN-SKIP-UNTIL={}\n\
             #EXT-X-PART-INF:PART-TARGET={}\n#EXT-X-MEDIA-SEQUENCE:{first}\n",
            target_ms / 1_000,
            seconds(p_ms.saturating_mul(3)),
            seconds(skip_until_ms),
            seconds(p_ms),
        );
        if skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        let epoch_ms = system_time_to_unix_ms(self.epoch);
        let part_line = |out: &mut String, k: u64, j: u64| {
            let independent = if j == 0 { ",INDEPENDENT=YES" } else { "" };
            let _ = writeln!(
                out,
                "#EXT-X-PART:DURATION={},URI=\"{k}.{j}.ts\"{independent}",
                seconds(p_ms)
            );
        };
        for k in first.saturating_add(skipped)..edge.segments {
            let start = epoch_ms + i128::from(k) * i128::from(d_ms);
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_unix_ms(start));
            if k >= with_parts {
                for j in 0..n {
                    part_line(&mut out, k, j);
                }
            }
            let _ = write!(out, "#EXTINF:{},\n{k}.ts\n", seconds(d_ms));
        }
        for j in 0..edge.parts {
            part_line(&mut out, edge.segments, j);
        }
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}.{}.ts\"",
            edge.segments, edge.parts
        );
        // Every rendition shares the timeline: the others' last part is this one's.
        let (last_msn, last_part) = if edge.parts > 0 {
            (edge.segments, edge.parts - 1)
        } else {
            (edge.segments.saturating_sub(1), n - 1)
        };
        for other in (0..self.bitrates.len()).filter(|&o| o != rendition) {
            let _ = writeln!(
                out,
                "#EXT-X-RENDITION-REPORT:URI=\"../r{other}/index.m3u8\",LAST-MSN={last_msn},LAST-PART={last_part}"
            );
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peer_assist::hls::{parse, Playlist};
    use std::time::UNIX_EPOCH;

    fn ll() -> SyntheticStream {
        SyntheticStream {
            bitrates: vec![400_000, 1_000_000],
            segment_duration: Duration::from_secs(2),
            part: Some(Duration::from_millis(500)),
            live_window: 12,
            ..SyntheticStream::default()
        }
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn block(msn: u64, part: Option<u64>) -> Directives {
        Directives {
            block: Some((msn, part)),
            skip: false,
        }
    }

    #[test]
    fn the_part_duration_must_divide_the_segment() {
        let mut s = ll();
        assert_eq!(s.validate_part(), Ok(()));
        for bad in [0, 300, 3000] {
            s.part = Some(Duration::from_millis(bad));
            assert!(s.validate_part().is_err(), "{bad}");
        }
        s.part = Some(Duration::from_micros(500_500));
        assert!(s.validate_part().is_err());
        s.part = Some(Duration::from_millis(500));
        s.live = false;
        assert!(s.validate_part().is_err());
    }

    #[test]
    fn the_playlist_lists_parts_the_hint_and_the_other_renditions() {
        let s = ll();
        // 1,000,001.2 s after the epoch: 500,000 whole segments, two parts of the next.
        let now = at(1_000_001_200);
        assert_eq!(
            s.ll_edge(now),
            Edge {
                segments: 500_000,
                parts: 2
            }
        );
        let body = s.ll_media_playlist(0, now, false).unwrap();
        let Playlist::Media(m) = parse(body.as_bytes()).unwrap() else {
            panic!("not a media playlist");
        };
        assert!(m.server_control.can_block_reload);
        assert_eq!(m.part_target, Some(Duration::from_millis(500)));
        assert_eq!(m.media_sequence, 500_000 - 12);
        assert_eq!(m.segments.len(), 12);
        assert_eq!(m.next_sequence(), 500_000);
        // The last three target durations (6 s = 3 segments) carry their parts.
        assert!(m.segments[8].parts.is_empty());
        assert_eq!(m.segments[9].parts.len(), 4);
        assert_eq!(m.segments[11].parts[3].uri, "499999.3.ts");
        assert!(m.segments[11].parts[0].independent);
        let trailing: Vec<_> = m.trailing_parts.iter().map(|p| p.uri.as_str()).collect();
        assert_eq!(trailing, ["500000.0.ts", "500000.1.ts"]);
        assert_eq!(m.preload_hints.len(), 1);
        assert_eq!(m.preload_hints[0].uri, "500000.2.ts");
        assert_eq!(m.rendition_reports.len(), 1);
        let report = &m.rendition_reports[0];
        assert_eq!(report.uri, "../r1/index.m3u8");
        assert_eq!(
            (report.last_msn, report.last_part),
            (Some(500_000), Some(1))
        );
        // At a segment boundary the last part is the whole segment's last.
        let Playlist::Media(m) = parse(
            s.ll_media_playlist(1, at(1_000_002_000), false)
                .unwrap()
                .as_bytes(),
        )
        .unwrap() else {
            panic!("not a media playlist");
        };
        assert!(m.trailing_parts.is_empty());
        assert_eq!(m.preload_hints[0].uri, "500001.0.ts");
        let report = &m.rendition_reports[0];
        assert_eq!(
            (report.last_msn, report.last_part),
            (Some(500_000), Some(3))
        );
    }

    #[test]
    fn a_delta_update_skips_what_is_older_than_can_skip_until() {
        let s = ll();
        let now = at(1_000_001_200);
        let body = s.ll_media_playlist(0, now, true).unwrap();
        let Playlist::Media(m) = parse(body.as_bytes()).unwrap() else {
            panic!("not a media playlist");
        };
        // CAN-SKIP-UNTIL is 12 s: the last 6 segments stay.
        assert_eq!(m.skipped_segments, 6);
        assert_eq!(m.segments.len(), 6);
        assert_eq!(m.next_sequence(), 500_000);
        assert_eq!(m.segments[0].sequence, 499_994);
    }

    #[test]
    fn parts_concatenate_to_their_segment() {
        let s = ll();
        for k in [0, 7, 123_456] {
            let whole = s.segment(1, k);
            let joined: Vec<u8> = (0..4)
                .flat_map(|j| s.part_bytes(1, k, j).to_vec())
                .collect();
            assert_eq!(joined, whole.to_vec());
            assert_eq!(s.part_bytes(1, k, 0)[0], 0x47);
            assert!(s.part_bytes(1, k, 4).is_empty());
        }
    }

    #[test]
    fn blocking_reloads_wait_for_their_part() {
        let s = ll();
        let now = at(1_000_001_200); // segments 0..500000 whole, parts 0, 1 of 500000
        assert_eq!(s.playlist_wait(Directives::default(), now), Wait::Ready);
        assert_eq!(s.playlist_wait(block(499_999, None), now), Wait::Ready);
        assert_eq!(s.playlist_wait(block(500_000, Some(1)), now), Wait::Ready);
        assert_eq!(
            s.playlist_wait(block(500_000, Some(2)), now),
            Wait::Until(at(1_000_001_500))
        );
        // A whole segment: its last part.
        assert_eq!(
            s.playlist_wait(block(500_000, None), now),
            Wait::Until(at(1_000_002_000))
        );
        assert_eq!(
            s.playlist_wait(block(500_000, Some(9)), now),
            Wait::Until(at(1_000_002_000))
        );
        assert_eq!(
            s.playlist_wait(block(500_001, Some(0)), now),
            Wait::Until(at(1_000_002_500))
        );
        // Two beyond the last whole segment (499,999) is allowed, three is not.
        assert_eq!(
            s.playlist_wait(block(500_001, None), now),
            Wait::Until(at(1_000_004_000))
        );
        assert!(matches!(
            s.playlist_wait(block(500_002, None), now),
            Wait::BadRequest(_)
        ));
        // At the start of a segment, two ahead is 4 s away: within the hold limit (6 s).
        let early = at(1_000_000_000); // segment 500000 starts now
        assert_eq!(
            s.playlist_wait(block(500_001, None), early),
            Wait::Until(at(1_000_004_000))
        );
        let one_second = SyntheticStream {
            segment_duration: Duration::from_secs(1),
            part: Some(Duration::from_millis(250)),
            ..ll()
        };
        assert_eq!(
            one_second.playlist_wait(block(1_000_001, None), at(1_000_000_000)),
            Wait::Until(at(1_000_002_000))
        );
        assert_eq!(
            one_second.playlist_wait(block(1_000_001, Some(3)), at(999_999_000)),
            Wait::BadRequest("_HLS_msn is more than two segments beyond the live edge")
        );
    }

    #[test]
    fn directives_are_read_and_checked() {
        assert_eq!(Directives::parse(None), Ok(Directives::default()));
        assert_eq!(
            Directives::parse(Some("_HLS_msn=5&_HLS_part=2&_HLS_skip=YES")),
            Ok(Directives {
                block: Some((5, Some(2))),
                skip: true
            })
        );
        for bad in [
            "_HLS_part=1",
            "_HLS_msn=x",
            "_HLS_msn=-1",
            "_HLS_msn=1&_HLS_skip=no",
        ] {
            assert!(Directives::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_next_part_is_held_others_are_not() {
        let s = ll();
        let now = at(1_000_001_200);
        assert_eq!(s.part_wait(500_000, 1, now), Wait::Ready);
        assert_eq!(s.part_wait(500_000, 2, now), Wait::Until(at(1_000_001_500)));
        assert_eq!(s.part_wait(500_000, 3, now), Wait::Ready); // a 404
        assert!(s.part_available(0, 500_000, 1, now));
        assert!(!s.part_available(0, 500_000, 2, now));
        assert!(!s.part_available(0, 499_999, 4, now));
        assert!(!s.part_available(0, 400_000, 0, now), "out of the window");
        assert!(!s.part_available(2, 500_000, 0, now), "no such rendition");
    }
}
