//! Serves the synthetic origin on a real socket and fetches from it with a tiny raw HTTP/1.1 client.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use loadtest::origin::{serve, OriginStats, SyntheticStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Sends `METHOD path` with `Connection: close` and reads the whole reply.
async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect::<HashMap<_, _>>();
    assert!(
        !headers.contains_key("transfer-encoding"),
        "expected a Content-Length body"
    );
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path).await
}

fn segments(playlist: &str) -> Vec<u64> {
    playlist
        .lines()
        .filter_map(|l| l.strip_suffix(".ts"))
        .map(|s| s.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn serves_playlists_and_segments_over_http() {
    let stream = Arc::new(SyntheticStream::default());
    let stats = Arc::new(OriginStats::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(Arc::clone(&stream), listener, Arc::clone(&stats)));

    // Master.
    let master = get(addr, "/synthetic/master.m3u8").await;
    assert_eq!(master.status, 200);
    assert_eq!(
        master.headers["content-type"],
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(master.headers["cache-control"], "max-age=1");
    let master_text = String::from_utf8(master.body.clone()).unwrap();
    assert_eq!(master_text, stream.master_playlist());
    assert!(master_text.contains("r2/index.m3u8"));

    // Live media playlist: the window ends at the live edge.
    let media = get(addr, "/synthetic/r1/index.m3u8").await;
    assert_eq!(media.status, 200);
    assert_eq!(
        media.headers["content-type"],
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(media.headers["cache-control"], "max-age=1");
    let media_text = String::from_utf8(media.body.clone()).unwrap();
    let listed = segments(&media_text);
    assert_eq!(listed.len(), 6);
    let newest = *listed.last().unwrap();
    let edge_now = stream.live_edge(SystemTime::now());
    assert!(
        newest <= edge_now && edge_now - newest <= 1,
        "{newest} vs {edge_now}"
    );
    assert!(media_text.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{}\n", listed[0])));

    // Newest listed segment.
    let seg = get(addr, &format!("/synthetic/r1/{newest}.ts")).await;
    assert_eq!(seg.status, 200);
    assert_eq!(seg.headers["content-type"], "video/mp2t");
    assert_eq!(seg.headers["cache-control"], "max-age=86400");
    assert_eq!(
        seg.headers["content-length"],
        stream.segment_size(1, newest).to_string()
    );
    assert_eq!(seg.body.len() as u64, stream.segment_size(1, newest));
    assert_eq!(seg.body[0], 0x47);
    assert_eq!(seg.body[188], 0x47);
    assert_eq!(seg.body, stream.segment(1, newest).as_ref());

    // A segment far in the future.
    let future = newest + 1_000;
    let missing = get(addr, &format!("/synthetic/r1/{future}.ts")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.headers["cache-control"], "no-store");

    // The same segment again, and a HEAD of it (no body, real length).
    let again = get(addr, &format!("/synthetic/r1/{newest}.ts")).await;
    assert_eq!(again.body, seg.body);
    let head = request(addr, "HEAD", &format!("/synthetic/r1/{newest}.ts")).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"], seg.body.len().to_string());

    // Other methods and unknown paths.
    assert_eq!(
        request(addr, "POST", "/synthetic/master.m3u8").await.status,
        405
    );
    assert_eq!(get(addr, "/elsewhere").await.status, 404);

    assert_eq!(stats.requests.load(Ordering::Relaxed), 8);
    assert_eq!(stats.playlist_requests.load(Ordering::Relaxed), 2);
    assert_eq!(stats.segment_requests.load(Ordering::Relaxed), 4);
    assert_eq!(stats.not_found.load(Ordering::Relaxed), 2);
    assert_eq!(stats.distinct_segments(), 1);
    assert_eq!(stats.requests_per_distinct_segment(), 3.0);
    let bytes = master.body.len() + media.body.len() + 2 * seg.body.len() + 2 * missing.body.len();
    assert_eq!(stats.bytes.load(Ordering::Relaxed), bytes as u64);

    server.abort();
    assert!(server.await.unwrap_err().is_cancelled());
    // Aborting the server closes the listener.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn keep_alive_connection_serves_several_requests() {
    let stream = Arc::new(SyntheticStream::new(false, vec![200_000]));
    let stats = Arc::new(OriginStats::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(Arc::clone(&stream), listener, Arc::clone(&stats)));

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut pipeline = String::new();
    for k in 0..3 {
        pipeline.push_str(&format!(
            "GET /synthetic/r0/{k}.ts HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
    }
    pipeline
        .push_str("GET /synthetic/r0/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(pipeline.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 4);
    assert!(text.contains("max-age=3600"));
    assert!(text.contains("#EXT-X-ENDLIST"));
    let expected: u64 = (0..3).map(|k| stream.segment_size(0, k)).sum();
    assert!(raw.len() as u64 > expected);
    assert_eq!(stats.segment_requests.load(Ordering::Relaxed), 3);
    assert_eq!(stats.distinct_segments(), 3);
    assert_eq!(stats.requests_per_distinct_segment(), 1.0);
    server.abort();
}
