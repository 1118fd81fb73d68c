//! What one delivery report may claim (pure). A report is a client's word; the tracker counts no
//! more than what could have happened since the previous one: no more segments than were published
//! meanwhile (plus the window a newcomer may fetch, plus slack), no more bytes than those segments
//! can weigh, no more per-peer successes or bytes than the report's own totals. Everything is capped
//! and added with saturation, so no sequence of reports can wrap a counter.

use crate::protocol::signal::{Failures, PeerOutcome, Report};

/// At least this many segments may be claimed per report (a VOD player filling its buffer).
pub const MIN_SEGMENTS_PER_REPORT: u64 = 30;
/// Segment size assumed when the tracker has seen no digest for the playlist yet.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// A peer link uploads to at most this many peers at once (uploads may claim this many times the
/// segments).
pub const UPLOAD_FANOUT: u64 = 8;

/// What the report may claim at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportLimits {
    /// Segments of each source.
    pub segments: u64,
    /// The largest segment of the playlist.
    pub max_segment_bytes: u64,
}

impl ReportLimits {
    /// The limits for a report when `published` segments appeared since the previous report and
    /// the playlist's window holds `window` segments of at most `max_segment_bytes` (0: unknown).
    pub fn new(published: u64, window: u64, max_segment_bytes: u64) -> Self {
        Self {
            segments: published
                .saturating_add(window)
                .saturating_add(4)
                .max(MIN_SEGMENTS_PER_REPORT),
            max_segment_bytes: if max_segment_bytes == 0 {
                DEFAULT_MAX_SEGMENT_BYTES
            } else {
                max_segment_bytes
            },
        }
    }
}

/// `report` cut down to what `limits` allow; the second value says whether anything was cut.
pub fn bound(report: &Report, limits: &ReportLimits) -> (Report, bool) {
    let segs = |n: u64| n.min(limits.segments);
    let p2p_segments = segs(report.p2p_segments);
    let http_segments = segs(report.http_segments);
    let weight = |n: u64| n.saturating_mul(limits.max_segment_bytes);
    let p2p_bytes = report.p2p_bytes.min(weight(p2p_segments));
    let http_bytes = report.http_bytes.min(weight(http_segments));
    let uploaded_bytes = report
        .uploaded_bytes
        .min(weight(limits.segments.saturating_mul(UPLOAD_FANOUT)));
    let per_cause = limits.segments.saturating_mul(UPLOAD_FANOUT);
    let f = &report.failures;
    let failures = Failures {
        timeout: f.timeout.min(per_cause),
        mismatch: f.mismatch.min(per_cause),
        absent: f.absent.min(per_cause),
        disconnect: f.disconnect.min(per_cause),
    };
    // Per-peer outcomes within the report's own totals: successes within the segments from peers,
    // their bytes within the bytes from peers, failures within the failures.
    let mut ok_left = p2p_segments;
    let mut bytes_left = p2p_bytes;
    let mut mismatch_left = failures.mismatch;
    let mut failed_left = failures.timeout + failures.absent + failures.disconnect;
    let peers: Vec<PeerOutcome> = report
        .peers
        .iter()
        .map(|p| {
            let take = |want: u64, left: &mut u64| {
                let got = want.min(*left);
                *left -= got;
                got
            };
            PeerOutcome {
                peer_id: p.peer_id.clone(),
                ok: take(p.ok, &mut ok_left),
                bytes: take(p.bytes, &mut bytes_left),
                mismatch: take(p.mismatch, &mut mismatch_left),
                failed: take(p.failed, &mut failed_left),
            }
        })
        .collect();
    let bounded = Report {
        http_bytes,
        p2p_bytes,
        http_segments,
        p2p_segments,
        uploaded_bytes,
        failures,
        peers,
        // Receipts are checked one by one (`tracker::receipts`), not bounded here.
        receipts: report.receipts.clone(),
        upload_rate: report.upload_rate,
    };
    let cut = bounded != *report;
    (bounded, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(p2p_segments: u64, p2p_bytes: u64, peers: Vec<PeerOutcome>) -> Report {
        Report {
            receipts: Default::default(),
            http_bytes: 0,
            p2p_bytes,
            http_segments: 0,
            p2p_segments,
            uploaded_bytes: 0,
            failures: Failures::default(),
            peers,
            upload_rate: None,
        }
    }

    fn outcome(peer: &str, ok: u64, bytes: u64) -> PeerOutcome {
        PeerOutcome {
            peer_id: peer.into(),
            ok,
            failed: 0,
            mismatch: 0,
            bytes,
        }
    }

    #[test]
    fn an_honest_report_passes_unchanged() {
        let limits = ReportLimits::new(1, 6, 2_000_000);
        let honest = report(
            2,
            3_000_000,
            vec![outcome("a", 1, 1_500_000), outcome("b", 1, 1_500_000)],
        );
        assert_eq!(bound(&honest, &limits), (honest.clone(), false));
    }

    #[test]
    fn absurd_claims_are_cut_to_what_could_have_happened() {
        let limits = ReportLimits::new(1, 6, 2_000_000);
        assert_eq!(limits.segments, MIN_SEGMENTS_PER_REPORT);
        let absurd = Report {
            http_bytes: u64::MAX,
            http_segments: u64::MAX,
            uploaded_bytes: u64::MAX,
            failures: Failures {
                timeout: u64::MAX,
                mismatch: u64::MAX,
                absent: 0,
                disconnect: 0,
            },
            ..report(
                1 << 53,
                1 << 53,
                vec![outcome("a", u64::MAX, u64::MAX), outcome("b", 5, 5)],
            )
        };
        let (cut, was_cut) = bound(&absurd, &limits);
        assert!(was_cut);
        assert_eq!(cut.p2p_segments, 30);
        assert_eq!(cut.p2p_bytes, 30 * 2_000_000);
        assert_eq!(cut.http_bytes, 30 * 2_000_000);
        assert_eq!(cut.uploaded_bytes, 30 * 8 * 2_000_000);
        assert_eq!(cut.peers[0].ok, 30, "within the segments from peers");
        assert_eq!(cut.peers[0].bytes, 60_000_000);
        assert_eq!(cut.peers[1].ok, 0, "nothing left for the second claim");
        // A million such reports still cannot wrap a u64 counter.
        let mut total = 0u64;
        for _ in 0..1_000_000 {
            total = total.saturating_add(cut.uploaded_bytes);
        }
        assert!(total < u64::MAX);
    }

    #[test]
    fn unknown_sizes_use_a_default_and_new_segments_raise_the_limit() {
        let limits = ReportLimits::new(100, 10, 0);
        assert_eq!(limits.max_segment_bytes, DEFAULT_MAX_SEGMENT_BYTES);
        assert_eq!(limits.segments, 114);
    }
}
