//! Shared by the load-test integration tests: a live synthetic origin (300k and 800k, 2 s segments)
//! behind an in-process gateway with default settings, all on loopback.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use loadtest::origin::{serve_with, OriginStats, Outages, SyntheticStream};
use tokio::net::TcpListener;

pub struct Stack {
    /// The multivariant playlist on the gateway.
    pub url: String,
    pub gateway: SocketAddr,
    pub origin_stats: Arc<OriginStats>,
}

pub async fn origin_behind_gateway(outages: Outages) -> Stack {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stream = Arc::new(SyntheticStream::new(true, vec![300_000, 800_000]));
    assert_eq!(stream.segment_duration, Duration::from_secs(2));
    let origin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = origin_listener.local_addr().unwrap();
    let origin_stats = Arc::new(OriginStats::default());
    tokio::spawn(serve_with(
        stream,
        origin_listener,
        Arc::clone(&origin_stats),
        outages,
    ));
    // The gateway as operators run it: defaults, the live follower on.
    let config = gateway::Config {
        origins: vec![format!("http://{origin}/")],
        ..Default::default()
    };
    let gateway = gateway::Gateway::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = listener.local_addr().unwrap();
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    Stack {
        url: format!("http://{gateway_addr}/synthetic/master.m3u8"),
        gateway: gateway_addr,
        origin_stats,
    }
}
