//! The node's HTTP side: GETs (and range GETs) of segments from the gateway, and a playlist follower
//! that reloads at the RFC 8216 §6.3.4 interval.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use super::Event;

/// Longest accepted segment or playlist.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// One GET may take this long at most.
const GET_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client for one gateway.
#[derive(Clone, Debug)]
pub struct GatewayClient {
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl GatewayClient {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// GETs `path` from byte `from` on (a range request when `from > 0`).
    pub async fn get(&self, path: &str, from: u64) -> Result<Bytes, String> {
        let mut request = http::Request::get(format!("{}{}", self.base, path));
        if from > 0 {
            request = request.header(http::header::RANGE, format!("bytes={from}-"));
        }
        let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(GET_TIMEOUT, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await
        .map_err(|_| format!("GET {path} timed out"))??;
        match response {
            (status, body) if status == http::StatusCode::PARTIAL_CONTENT && from > 0 => Ok(body),
            (status, body) if status.is_success() => {
                // A server that ignored the range sent everything: keep the part asked for.
                let from = usize::try_from(from).unwrap_or(usize::MAX).min(body.len());
                Ok(body.slice(from..))
            }
            (status, _) => Err(format!("GET {path}: {status}")),
        }
    }
}

/// One segment of a media playlist, named by its gateway path.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSegment {
    pub sequence: u64,
    pub id: String,
    pub duration: Duration,
}

/// What the node needs from a media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    pub segments: Vec<MediaSegment>,
    pub target_duration: Duration,
    pub ended: bool,
}

/// Parses a media playlist at `path` (segment URIs resolved against it).
pub fn parse_media(path: &str, body: &[u8]) -> Result<MediaPlaylist, String> {
    let media = m3u8_rs::parse_media_playlist_res(body).map_err(|e| format!("{path}: {e}"))?;
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    let segments = media
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let uri = s.uri.split(['?', '#']).next().unwrap_or(&s.uri);
            let id = if uri.starts_with('/') {
                uri.to_owned()
            } else {
                format!("{dir}/{uri}")
            };
            MediaSegment {
                sequence: media.media_sequence + i as u64,
                id,
                duration: Duration::from_secs_f64(f64::from(s.duration).max(0.0)),
            }
        })
        .collect();
    Ok(MediaPlaylist {
        segments,
        target_duration: Duration::from_secs(media.target_duration.max(1)),
        ended: media.end_list,
    })
}

/// Reloads `path` like a player (RFC 8216 §6.3.4) and sends each version to the node.
pub(super) async fn follow_playlist(
    client: GatewayClient,
    path: String,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut last: Option<Bytes> = None;
    loop {
        let result = client.get(&path, 0).await;
        let (wait, ended) = match &result {
            Ok(body) => match parse_media(&path, body) {
                Ok(playlist) => {
                    let changed = last.as_ref() != Some(body);
                    last = Some(body.clone());
                    let target = playlist.target_duration;
                    let ended = playlist.ended;
                    if events.send(Event::Playlist(Ok(playlist))).is_err() {
                        return;
                    }
                    (if changed { target } else { target / 2 }, ended)
                }
                Err(e) => {
                    let _ = events.send(Event::Playlist(Err(e)));
                    (Duration::from_millis(500), false)
                }
            },
            Err(e) => {
                let _ = events.send(Event::Playlist(Err(e.clone())));
                (Duration::from_millis(500), false)
            }
        };
        if ended {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves_segments() {
        let body = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.0,\n7.ts\n#EXTINF:1.5,\n/abs/8.ts?x=1\n";
        let p = parse_media("/demo/live/240p/index.m3u8", body).unwrap();
        assert_eq!(p.segments[0].id, "/demo/live/240p/7.ts");
        assert_eq!(p.segments[0].sequence, 7);
        assert_eq!(p.segments[1].id, "/abs/8.ts");
        assert_eq!(p.segments[1].duration, Duration::from_millis(1500));
        assert!(!p.ended);
        assert!(parse_media("/x", b"garbage").is_err());
    }
}
