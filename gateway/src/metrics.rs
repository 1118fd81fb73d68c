//! Prometheus metrics. Label values come from closed sets (object classes, cache phases, outcomes,
//! status codes), so cardinality stays bounded whatever the traffic.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::cache::phase::CachePhase;
use crate::hls::ObjectClass;

const CLASSES: usize = ObjectClass::ALL.len();
/// Status codes whose counters are resolved once, so the hot path does no label hashing.
const COMMON_STATUSES: [u16; 4] = [200, 206, 304, 404];
const RESULTS: usize = CachePhase::ALL.len();

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    common_requests: [[IntCounter; COMMON_STATUSES.len()]; CLASSES],
    cache_results: [[IntCounter; RESULTS]; CLASSES],
    origin_requests: IntCounterVec,
    origin_fetch_seconds: HistogramVec,
    origin_bytes: [IntCounter; CLASSES],
    served_bytes: [IntCounter; CLASSES],
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    pub followed_renditions: IntGauge,
    pub prefetches: IntCounter,
    /// Answers streamed while their body arrived from the origin, and those cut by a failed fetch.
    pub streamed: IntCounter,
    pub streams_aborted: IntCounter,
    follower_refused: IntCounterVec,
    follower_reloads: IntCounterVec,
    blocking_reloads: IntCounterVec,
    /// LL-HLS blocking playlist reloads being held now.
    pub blocking_held: IntGauge,
    connections_refused: IntCounterVec,
    pub send_timeouts: IntCounter,
    pub load_shed: IntCounter,
    pub open_connections: IntGauge,
    pub in_flight_fetches: IntGauge,
    pub origin_requests_active: IntGauge,
    pub origin_buffered_bytes: IntGauge,
    pub origin_budget_refused: IntCounter,
    /// Live media playlist answers given from the last copy while the origin failed to replace it.
    pub live_outage_answers: IntCounter,
    /// Live media playlists seen restarting (media sequence back, init or discontinuity changed).
    pub live_restarts: IntCounter,
    /// Objects dropped from the cache because their live playlist restarted under the same names.
    pub restart_invalidated: IntCounter,
    /// Conditional playlist revalidations by result (not_modified, modified).
    revalidations: IntCounterVec,
    pub digest_seconds: Histogram,
    cmcd_requests: IntCounterVec,
    /// Requests whose CMCD could not be read.
    pub cmcd_invalid: IntCounter,
    cmcd_buffer_seconds: HistogramVec,
    cmcd_throughput: HistogramVec,
    cmcd_startup: IntCounterVec,
    cmcd_starvation: IntCounterVec,
    auth_denied: IntCounterVec,
    tls_reloads: IntCounterVec,
}

/// The results of LL-HLS blocking playlist reloads, as labels.
pub const BLOCKING_RESULTS: [&str; 5] = ["ready", "held", "bad_request", "timeout", "passed"];

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static: a failure here is a programming error caught by the tests.
    match r {
        Ok(v) => v,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
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
        let requests = counter_vec(
            "gateway_requests_total",
            "HTTP requests answered, by object class and status code.",
            &["class", "status"],
        );
        let results = counter_vec(
            "gateway_cache_results_total",
            "Cache lookups by object class and result (hit, miss, coalesced, stale, error).",
            &["class", "result"],
        );
        let origin_requests = counter_vec(
            "gateway_origin_requests_total",
            "Origin fetch attempts by object class and outcome.",
            &["class", "outcome"],
        );
        let origin_bytes_vec = counter_vec(
            "gateway_origin_bytes_total",
            "Body bytes received from origins, by object class.",
            &["class"],
        );
        let served = counter_vec(
            "gateway_served_bytes_total",
            "Body bytes sent to clients, by object class.",
            &["class"],
        );
        let origin_fetch_seconds = must(HistogramVec::new(
            HistogramOpts::new(
                "gateway_origin_fetch_seconds",
                "Time to fetch a whole object from the origin, retries included.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["class"],
        ));
        must(registry.register(Box::new(origin_fetch_seconds.clone())));
        let digest_seconds = must(Histogram::with_opts(
            HistogramOpts::new(
                "gateway_digest_seconds",
                "Time to compute a SHA-256 digest.",
            )
            .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05]),
        ));
        must(registry.register(Box::new(digest_seconds.clone())));
        let cmcd_requests = counter_vec(
            "gateway_cmcd_requests_total",
            "Requests that carried CMCD (CTA-5004) data, by object class.",
            &["class"],
        );
        let cmcd_buffer_seconds = must(HistogramVec::new(
            HistogramOpts::new(
                "gateway_cmcd_buffer_length_seconds",
                "Players' buffer length (CMCD bl) at their requests, by object class.",
            )
            .buckets(vec![0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0]),
            &["class"],
        ));
        must(registry.register(Box::new(cmcd_buffer_seconds.clone())));
        let cmcd_throughput = must(HistogramVec::new(
            HistogramOpts::new(
                "gateway_cmcd_throughput_bits_per_second",
                "Players' measured throughput (CMCD mtp) at their requests, by object class.",
            )
            // 100 kbit/s to 1 Gbit/s, 1-2.5-5 per decade.
            .buckets(vec![
                1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9,
            ]),
            &["class"],
        ));
        must(registry.register(Box::new(cmcd_throughput.clone())));
        let cmcd_startup = counter_vec(
            "gateway_cmcd_startup_total",
            "Requests a player made while starting (CMCD su), by object class.",
            &["class"],
        );
        let cmcd_starvation = counter_vec(
            "gateway_cmcd_buffer_starvation_total",
            "Requests after which the player said it had rebuffered (CMCD bs), by object class.",
            &["class"],
        );
        let auth_denied = counter_vec(
            "gateway_auth_denied_total",
            "Requests and joins refused for their token, by reason.",
            &["reason"],
        );
        for reason in crate::auth::TokenError::ALL_LABELS {
            auth_denied.with_label_values(&[reason]);
        }
        let tls_reloads = counter_vec(
            "gateway_reloads_total",
            "Reloads of the TLS certificate and the auth keys (on change or SIGHUP), by what and result.",
            &["what", "result"],
        );
        let follower_refused = counter_vec(
            "gateway_follower_refused_total",
            "Live renditions viewers asked for that were not followed, by reason (limit, client_limit).",
            &["reason"],
        );
        for reason in ["limit", "client_limit"] {
            follower_refused.with_label_values(&[reason]);
        }
        let follower_reloads = counter_vec(
            "gateway_follower_reloads_total",
            "Live playlist reloads by the follower, by result (new: a new segment showed; unchanged; failed).",
            &["result"],
        );
        for result in ["new", "unchanged", "failed"] {
            follower_reloads.with_label_values(&[result]);
        }
        let blocking_reloads = counter_vec(
            "gateway_blocking_reloads_total",
            "LL-HLS blocking playlist reloads (_HLS_msn) by result (ready: answered at once; held: answered when the follower saw it; bad_request; timeout: 503 after three target durations; passed: sent to the origin, the rendition not being followed or not blocking).",
            &["result"],
        );
        for result in BLOCKING_RESULTS {
            blocking_reloads.with_label_values(&[result]);
        }
        let connections_refused = counter_vec(
            "gateway_connections_refused_total",
            "Client connections closed before any request was read, by reason (max_connections, preface_timeout).",
            &["reason"],
        );
        for reason in ["max_connections", "preface_timeout"] {
            connections_refused.with_label_values(&[reason]);
        }
        let revalidations = counter_vec(
            "gateway_revalidations_total",
            "Conditional origin requests for cached playlists, by result (not_modified, modified).",
            &["result"],
        );
        for result in ["not_modified", "modified"] {
            revalidations.with_label_values(&[result]);
        }
        let per_class =
            |vec: &IntCounterVec| ObjectClass::ALL.map(|c| vec.with_label_values(&[c.label()]));
        Metrics {
            common_requests: ObjectClass::ALL.map(|c| {
                COMMON_STATUSES.map(|s| requests.with_label_values(&[c.label(), &s.to_string()]))
            }),
            cache_results: ObjectClass::ALL.map(|c| {
                CachePhase::ALL.map(|p| results.with_label_values(&[c.label(), p.label()]))
            }),
            origin_bytes: per_class(&origin_bytes_vec),
            served_bytes: per_class(&served),
            requests,
            origin_requests,
            origin_fetch_seconds,
            cache_bytes: gauge(
                "gateway_cache_bytes",
                "Weighted size of the cache in bytes.",
            ),
            cache_entries: gauge("gateway_cache_entries", "Objects in the cache."),
            live_outage_answers: counter(
                "gateway_live_outage_answers_total",
                "Live media playlist answers served from the last copy while the origin could not replace it (X-Origin-Unreachable).",
            ),
            live_restarts: counter(
                "gateway_live_restarts_total",
                "Live media playlists seen restarting under reused names (media sequence back, EXT-X-MAP or discontinuity sequence changed).",
            ),
            restart_invalidated: counter(
                "gateway_restart_invalidated_total",
                "Cached objects dropped because their live playlist restarted under the same names.",
            ),
            revalidations,
            followed_renditions: gauge(
                "gateway_followed_renditions",
                "Live renditions the playlist follower is refreshing.",
            ),
            prefetches: counter(
                "gateway_prefetches_total",
                "Segments the live follower fetched before any viewer asked.",
            ),
            streamed: counter(
                "gateway_streamed_answers_total",
                "Answers to viewers that joined a media fetch, streamed as the origin sent the body.",
            ),
            streams_aborted: counter(
                "gateway_streamed_aborted_total",
                "Streamed answers aborted because their origin fetch failed midway.",
            ),
            follower_refused,
            follower_reloads,
            blocking_reloads,
            blocking_held: gauge(
                "gateway_blocking_reloads_held",
                "LL-HLS blocking playlist reloads held at the gateway now.",
            ),
            connections_refused,
            send_timeouts: counter(
                "gateway_send_timeouts_total",
                "Responses aborted because the client accepted none of the body for server.send_timeout.",
            ),
            load_shed: counter(
                "gateway_load_shed_total",
                "Requests refused with 503 because the concurrency limit was reached.",
            ),
            open_connections: gauge("gateway_open_connections", "Client connections open."),
            in_flight_fetches: gauge("gateway_origin_in_flight", "Origin fetches in progress."),
            origin_requests_active: gauge(
                "gateway_origin_requests_active",
                "Origin requests holding one of the origin.max_connections slots.",
            ),
            origin_buffered_bytes: gauge(
                "gateway_origin_buffered_bytes",
                "Body bytes origin fetches hold, counted against origin.max_buffered_bytes.",
            ),
            origin_budget_refused: counter(
                "gateway_origin_budget_refused_total",
                "Origin bodies refused (503) because origin.max_buffered_bytes was reached.",
            ),
            digest_seconds,
            cmcd_requests,
            cmcd_invalid: counter(
                "gateway_cmcd_invalid_total",
                "Requests whose CMCD data could not be read (malformed or too long); ignored.",
            ),
            cmcd_buffer_seconds,
            cmcd_throughput,
            cmcd_startup,
            cmcd_starvation,
            auth_denied,
            tls_reloads,
            registry,
        }
    }

    /// A request or a join refused for its token (`reason`: a [`crate::auth::TokenError`] label).
    pub fn auth_denied(&self, reason: &'static str) {
        self.auth_denied.with_label_values(&[reason]).inc();
    }

    /// The follower reloaded a live playlist (`result`: `new`, `unchanged`, `failed`).
    pub fn follower_reload(&self, result: &'static str) {
        self.follower_reloads.with_label_values(&[result]).inc();
    }

    /// What a request's CMCD said, for an object of `class`.
    pub fn cmcd(&self, class: ObjectClass, cmcd: &crate::http::cmcd::Cmcd) {
        let label = [class.label()];
        self.cmcd_requests.with_label_values(&label).inc();
        if let Some(ms) = cmcd.buffer_ms {
            self.cmcd_buffer_seconds
                .with_label_values(&label)
                .observe(ms as f64 / 1000.0);
        }
        if let Some(kbps) = cmcd.throughput_kbps {
            self.cmcd_throughput
                .with_label_values(&label)
                .observe(kbps as f64 * 1000.0);
        }
        if cmcd.startup {
            self.cmcd_startup.with_label_values(&label).inc();
        }
        if cmcd.starved {
            self.cmcd_starvation.with_label_values(&label).inc();
        }
    }

    /// A blocking playlist reload ended (`result`: one of [`BLOCKING_RESULTS`]).
    pub fn blocking_reload(&self, result: &'static str) {
        self.blocking_reloads.with_label_values(&[result]).inc();
    }

    /// A live rendition a viewer asked for was not followed (`reason`: `limit`, `client_limit`).
    pub fn follower_refused(&self, reason: &'static str) {
        self.follower_refused.with_label_values(&[reason]).inc();
    }

    /// A connection was closed before any request (`reason`: `max_connections`, `preface_timeout`).
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.with_label_values(&[reason]).inc();
    }

    /// A reload of `what` (`tls`, `auth_keys`) ended with `result` (`ok`, `error`).
    pub fn reloaded(&self, what: &'static str, result: &'static str) {
        self.tls_reloads.with_label_values(&[what, result]).inc();
    }

    pub fn request(&self, class: ObjectClass, status: http::StatusCode) {
        if let Some(i) = COMMON_STATUSES.iter().position(|s| *s == status.as_u16()) {
            self.common_requests[class.index()][i].inc();
            return;
        }
        self.requests
            .with_label_values(&[class.label(), status.as_str()])
            .inc();
    }

    pub fn cache_result(&self, class: ObjectClass, phase: CachePhase) {
        self.cache_results[class.index()][phase.index()].inc();
    }

    pub fn origin_request(&self, class: ObjectClass, outcome: &str) {
        self.origin_requests
            .with_label_values(&[class.label(), outcome])
            .inc();
    }

    /// A conditional revalidation ended: `not_modified` (a 304) or `modified` (a new body).
    pub fn revalidation(&self, not_modified: bool) {
        let result = if not_modified {
            "not_modified"
        } else {
            "modified"
        };
        self.revalidations.with_label_values(&[result]).inc();
    }

    pub fn origin_fetch(&self, class: ObjectClass, seconds: f64, bytes: usize) {
        self.origin_fetch_seconds
            .with_label_values(&[class.label()])
            .observe(seconds);
        self.origin_bytes[class.index()].inc_by(bytes as u64);
    }

    pub fn served(&self, class: ObjectClass, bytes: usize) {
        self.served_bytes[class.index()].inc_by(bytes as u64);
    }

    /// The served-bytes counter of `class`, for bodies counted as they go out.
    pub fn served_counter(&self, class: ObjectClass) -> IntCounter {
        self.served_bytes[class.index()].clone()
    }

    /// The registry, for other parts (the P2P tracker) to register their series in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            return format!("# metrics encoding failed: {e}\n");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_required_series() {
        let m = Metrics::new();
        m.request(ObjectClass::Segment, http::StatusCode::OK);
        m.cache_result(ObjectClass::Segment, CachePhase::Hit);
        m.origin_request(ObjectClass::Segment, "ok");
        m.origin_fetch(ObjectClass::Segment, 0.01, 10);
        m.served(ObjectClass::Segment, 10);
        m.cache_bytes.set(5);
        let text = m.render();
        for series in [
            "gateway_requests_total{class=\"segment\",status=\"200\"} 1",
            "gateway_cache_results_total{class=\"segment\",result=\"hit\"} 1",
            "gateway_origin_requests_total{class=\"segment\",outcome=\"ok\"} 1",
            "gateway_origin_fetch_seconds_bucket",
            "gateway_served_bytes_total{class=\"segment\"} 10",
            "gateway_cache_bytes 5",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
    }
}
