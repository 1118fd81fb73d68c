//! How much later a new live segment is visible through a gateway than at its origin: the same
//! media playlist is polled at both, side by side at the same rate, and the instant each media
//! sequence number first shows is noted at each. The difference is what the gateway adds (give or
//! take one poll interval). The gateway's own origin playlist requests over the run are read from
//! its `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Uri;
use serde::Serialize;

use crate::run::{build_client, http_get, HttpClient};

/// What to measure.
#[derive(Debug, Clone)]
pub struct EdgeDelayConfig {
    /// The media playlist at the origin.
    pub origin: Uri,
    /// The same media playlist through the gateway.
    pub gateway: Uri,
    /// The gateway's metrics endpoint, for its origin playlist requests.
    pub metrics: Option<Uri>,
    /// How often each playlist is polled.
    pub every: Duration,
    /// Segments first seen in this time are not counted (the gateway starts following).
    pub warmup: Duration,
    pub duration: Duration,
}

/// The result, as JSON for scripts.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeDelayReport {
    /// New segments seen at both after the warm-up.
    pub segments: usize,
    /// Gateway minus origin, per segment, in milliseconds (negative: seen at the gateway first,
    /// within the poll interval).
    pub delays_ms: Vec<f64>,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Segments the origin showed that the gateway never did.
    pub missed: usize,
    /// Media sequence numbers per second at the origin (1 / segment duration).
    pub segments_per_s: f64,
    /// The gateway's origin requests for live media playlists over the measured time, per segment
    /// duration (from `gateway_origin_requests_total{class="live_media"}`).
    pub origin_requests_per_segment: Option<f64>,
}

type Seen = Arc<Mutex<BTreeMap<u64, Instant>>>;

/// Polls `uri` until `until`, noting when each newest media sequence number first shows.
async fn poll(client: HttpClient, uri: Uri, every: Duration, until: Instant, seen: Seen) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        let Ok(fetched) = http_get(&client, uri.clone(), Duration::from_secs(5)).await else {
            continue;
        };
        if !fetched.status.is_success() {
            continue;
        }
        let at = Instant::now();
        if let Ok(peer_assist::hls::Playlist::Media(m)) = peer_assist::hls::parse(&fetched.body) {
            if let Some(newest) = m.last_sequence() {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.entry(newest).or_insert(at);
            }
        }
    }
}

/// Sum of a counter's series whose labels contain `labels`.
fn counter_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn live_playlist_requests(client: &HttpClient, metrics: &Uri) -> Option<f64> {
    let fetched = http_get(client, metrics.clone(), Duration::from_secs(5))
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&fetched.body);
    Some(counter_sum(
        &text,
        "gateway_origin_requests_total",
        "class=\"live_media\"",
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub async fn run(config: EdgeDelayConfig) -> EdgeDelayReport {
    let client: HttpClient = build_client(None);
    let until = Instant::now() + config.duration;
    let at_origin: Seen = Arc::default();
    let at_gateway: Seen = Arc::default();
    let origin = tokio::spawn(poll(
        client.clone(),
        config.origin.clone(),
        config.every,
        until,
        Arc::clone(&at_origin),
    ));
    let gateway = tokio::spawn(poll(
        client.clone(),
        config.gateway.clone(),
        config.every,
        until,
        Arc::clone(&at_gateway),
    ));
    tokio::time::sleep(config.warmup).await;
    let measured_from = Instant::now();
    let before = match &config.metrics {
        Some(m) => live_playlist_requests(&client, m).await,
        None => None,
    };
    let _ = origin.await;
    let _ = gateway.await;
    let measured = measured_from.elapsed();
    let after = match &config.metrics {
        Some(m) => live_playlist_requests(&client, m).await,
        None => None,
    };

    let at_origin = at_origin.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let at_gateway = at_gateway.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let counted: Vec<(u64, Instant)> = at_origin
        .iter()
        .filter(|(_, at)| **at >= measured_from)
        .map(|(s, at)| (*s, *at))
        .collect();
    let mut delays_ms = Vec::new();
    let mut missed = 0;
    for (sequence, origin_at) in &counted {
        // Shown at the gateway as the newest, or already passed by a newer one.
        let gateway_at = at_gateway.range(sequence..).map(|(_, at)| *at).min();
        match gateway_at {
            Some(at) => {
                let ms = if at >= *origin_at {
                    at.duration_since(*origin_at).as_secs_f64() * 1e3
                } else {
                    -(origin_at.duration_since(at).as_secs_f64() * 1e3)
                };
                delays_ms.push(ms);
            }
            None => missed += 1,
        }
    }
    let mut sorted = delays_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let segments_per_s = match (counted.first(), counted.last()) {
        (Some(first), Some(last)) if counted.len() > 1 => {
            (counted.len() - 1) as f64 / last.1.duration_since(first.1).as_secs_f64()
        }
        _ => f64::NAN,
    };
    let origin_requests_per_segment = match (before, after) {
        (Some(b), Some(a)) if segments_per_s > 0.0 => {
            Some((a - b) / (measured.as_secs_f64() * segments_per_s))
        }
        _ => None,
    };
    EdgeDelayReport {
        segments: counted.len(),
        median_ms: percentile(&sorted, 0.5),
        p99_ms: percentile(&sorted, 0.99),
        max_ms: sorted.last().copied().unwrap_or(f64::NAN),
        delays_ms,
        missed,
        segments_per_s,
        origin_requests_per_segment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_their_matching_series() {
        let text = "# HELP x\n\
            gateway_origin_requests_total{class=\"live_media\",outcome=\"ok\"} 40\n\
            gateway_origin_requests_total{class=\"live_media\",outcome=\"http_error\"} 2\n\
            gateway_origin_requests_total{class=\"segment\",outcome=\"ok\"} 99\n";
        assert_eq!(
            counter_sum(
                text,
                "gateway_origin_requests_total",
                "class=\"live_media\""
            ),
            42.0
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
