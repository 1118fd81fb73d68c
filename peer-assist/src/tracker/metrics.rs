//! Prometheus series of the tracker, registered in the gateway's registry. Labels come from closed
//! sets (source, cause, error code).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::protocol::signal::Report;

#[derive(Debug, Clone)]
pub struct TrackerMetrics {
    pub peers: IntGauge,
    pub swarms: IntGauge,
    reported_bytes: IntCounterVec,
    reported_segments: IntCounterVec,
    pub uploaded_bytes: IntCounter,
    pub digest_mismatches: IntCounter,
    fallbacks: IntCounterVec,
    closed: IntCounterVec,
    pub digests_pushed: IntCounter,
    /// Peer lists sent (a joiner's first list and the paced updates of changed lists).
    pub peer_lists_pushed: IntCounter,
    /// Per-peer outcomes ignored: about a peer the reporter could not have dealt with.
    pub ignored_outcomes: IntCounter,
    /// Reports that claimed more than could have happened (cut before they were counted).
    pub reports_cut: IntCounter,
    /// Receipts the ledger stored.
    pub receipts_accepted: IntCounter,
    /// Verified bytes those receipts credit.
    pub receipted_bytes: IntCounter,
    receipts_rejected: IntCounterVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

impl TrackerMetrics {
    /// Creates the series and registers them in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let metrics = Self::create(registry);
        for reason in crate::accounting::Rejection::ALL {
            metrics
                .receipts_rejected
                .with_label_values(&[reason.label()]);
        }
        metrics
    }

    fn create(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        Self {
            peers: gauge("p2p_peers", "Peers connected to the tracker."),
            swarms: gauge("p2p_swarms", "Swarms with at least one peer."),
            reported_bytes: counter_vec(
                "p2p_reported_bytes_total",
                "Segment bytes peers reported receiving, by source (peer, http). Offload ratio = peer / (peer + http).",
                &["source"],
            ),
            reported_segments: counter_vec(
                "p2p_reported_segments_total",
                "Segments peers reported receiving, by source (peer, http).",
                &["source"],
            ),
            uploaded_bytes: counter("p2p_uploaded_bytes_total", "Bytes peers reported uploading to other peers."),
            digest_mismatches: counter(
                "p2p_digest_mismatches_total",
                "Segments from peers that failed SHA-256 verification (reported by the receivers).",
            ),
            fallbacks: counter_vec(
                "p2p_fallbacks_total",
                "Peer transfers abandoned for HTTP, by cause (timeout, mismatch, absent, disconnect).",
                &["cause"],
            ),
            closed: counter_vec(
                "p2p_connections_closed_total",
                "Signalling connections the tracker closed, by reason.",
                &["reason"],
            ),
            digests_pushed: counter("p2p_digests_pushed_total", "Digest messages pushed to peers."),
            peer_lists_pushed: counter(
                "p2p_peer_lists_pushed_total",
                "Peer lists sent: each joiner's first list, then a member's list only when it changed, at most once per peer_list_interval.",
            ),
            ignored_outcomes: counter(
                "p2p_report_outcomes_ignored_total",
                "Per-peer outcomes in reports about a peer the reporter was never introduced to (or not of its swarm): ignored.",
            ),
            reports_cut: counter(
                "p2p_reports_cut_total",
                "Reports claiming more segments or bytes than could have happened since the previous one: cut before counting.",
            ),
            receipts_accepted: counter(
                "p2p_receipts_accepted_total",
                "Delivery receipts the tracker believed and the ledger stored.",
            ),
            receipted_bytes: counter(
                "p2p_receipted_bytes_total",
                "Verified peer bytes credited to uploaders by accepted receipts.",
            ),
            receipts_rejected: counter_vec(
                "p2p_receipts_rejected_total",
                "Delivery receipts refused, by reason (docs/LEDGER.md).",
                &["reason"],
            ),
        }
    }

    pub fn report(&self, report: &Report) {
        self.reported_bytes
            .with_label_values(&["peer"])
            .inc_by(report.p2p_bytes);
        self.reported_bytes
            .with_label_values(&["http"])
            .inc_by(report.http_bytes);
        self.reported_segments
            .with_label_values(&["peer"])
            .inc_by(report.p2p_segments);
        self.reported_segments
            .with_label_values(&["http"])
            .inc_by(report.http_segments);
        self.uploaded_bytes.inc_by(report.uploaded_bytes);
        self.digest_mismatches.inc_by(report.failures.mismatch);
        let f = &report.failures;
        for (cause, n) in [
            ("timeout", f.timeout),
            ("mismatch", f.mismatch),
            ("absent", f.absent),
            ("disconnect", f.disconnect),
        ] {
            self.fallbacks.with_label_values(&[cause]).inc_by(n);
        }
    }

    pub fn receipt_rejected(&self, reason: crate::accounting::Rejection) {
        self.receipts_rejected
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub fn closed(&self, reason: &'static str) {
        self.closed.with_label_values(&[reason]).inc();
    }
}
