//! Clients that hold the gateway's resources without making progress: HTTP/2 streams whose
//! flow-control window stays at zero, HTTP/1 clients that stop reading, half-sent HTTP/2 prefaces,
//! idle HTTP/2 connections, more connections than the cap. Each is cut off after its limit, and a
//! well-behaved client on another connection is served normally meanwhile.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{pattern, test_config, wait_until_async, Reply, TestGateway, TestOrigin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A well-behaved viewer on its own connection: the answer and how long it took.
async fn timed_get(gw: &TestGateway, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let answer = gw.get(path).await;
    (answer.status.as_u16(), started.elapsed())
}

/// An HTTP/2 connection whose streams announce a zero flow-control window: the server may send
/// headers but no body byte until the client opens the window, which it never does.
async fn zero_window_client(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    (send, tokio::spawn(connection))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_stalled_by_a_zero_window_are_reset_after_the_send_timeout() {
    let origin = TestOrigin::start().await;
    origin.set("/live/seg.ts", Reply::ok(pattern(200_000, 7)));
    origin.set("/live/small.m3u8", Reply::ok("#EXTM3U\n#EXT-X-ENDLIST\n"));
    let mut config = test_config(&origin);
    config.server.send_timeout = Duration::from_secs(1);
    config.server.max_streams = 16;
    let gw = TestGateway::start(config).await;
    assert_eq!(gw.get("/live/seg.ts").await.status, 200, "cached");

    // Two connections, sixteen streams each (the limit), that never give a byte of window: big
    // segments and a tiny playlist alike.
    let mut held = Vec::new();
    let mut drivers = Vec::new();
    for _ in 0..2 {
        let (send, driver) = zero_window_client(gw.addr).await;
        drivers.push(driver);
        let mut send = send.ready().await.unwrap();
        for i in 0..16 {
            let path = if i % 4 == 0 { "small.m3u8" } else { "seg.ts" };
            let request = http::Request::get(format!("http://{}/live/{path}", gw.addr))
                .body(())
                .unwrap();
            let (response, _) = send.send_request(request, true).unwrap();
            held.push(response);
            send = send.ready().await.unwrap();
        }
    }
    let started = Instant::now();
    let mut bodies = Vec::new();
    for response in held {
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200, "headers need no window");
        bodies.push(response.into_body());
    }

    // Meanwhile a viewer on another connection is served at once.
    let (status, took) = timed_get(&gw, "/live/seg.ts").await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500), "served in {took:?}");

    // Every stalled stream is reset by the gateway once it made no progress for the send timeout.
    let resets = bodies.into_iter().map(|mut body| async move {
        let outcome = tokio::time::timeout(Duration::from_secs(6), body.data()).await;
        let error = match outcome {
            Ok(Some(Err(e))) => e,
            other => panic!("expected a reset, got {other:?}"),
        };
        (error.reason(), started.elapsed())
    });
    let resets = futures_util::future::join_all(resets).await;
    for (reason, after) in &resets {
        assert_eq!(*reason, Some(h2::Reason::CANCEL));
        assert!(
            *after >= Duration::from_millis(800) && *after < Duration::from_secs(5),
            "reset after {after:?}"
        );
    }
    assert_eq!(gw.metric("gateway_send_timeouts_total").await, 32.0);

    // The connections themselves stay usable for streams that do read.
    let (status, took) = timed_get(&gw, "/live/seg.ts").await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500), "served in {took:?}");
    for driver in drivers {
        driver.abort();
    }
}

#[tokio::test]
async fn an_http2_connection_without_streams_is_closed_after_the_idle_timeout() {
    let origin = TestOrigin::start().await;
    let mut config = test_config(&origin);
    config.server.idle_timeout = Duration::from_secs(1);
    let gw = TestGateway::start(config).await;
    let (_send, driver) = zero_window_client(gw.addr).await;
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(ended.is_ok(), "the idle connection is still open after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let (status, _) = timed_get(&gw, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_stops_reading_is_closed_after_the_send_timeout() {
    let origin = TestOrigin::start().await;
    origin.set("/vod/big.ts", Reply::ok(pattern(16 << 20, 3)));
    let mut config = test_config(&origin);
    config.server.send_timeout = Duration::from_secs(1);
    let gw = TestGateway::start(config).await;
    assert_eq!(gw.get("/vod/big.ts").await.status, 200, "cached");

    // A small receive buffer and no reading: the gateway's writes stall once the buffers are full.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /vod/big.ts HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let (status, took) = timed_get(&gw, "/vod/big.ts").await;
    assert_eq!(status, 200, "another viewer is served meanwhile");
    assert!(took < Duration::from_secs(2), "served in {took:?}");
    assert!(
        wait_until_async(
            || async { gw.metric("gateway_send_timeouts_total").await == 1.0 },
            Duration::from_secs(6)
        )
        .await,
        "the stalled connection was not cut off"
    );
    // What the client reads now ends well short of the body: the connection was closed.
    let mut received = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!("the connection is still open"),
        }
    }
    assert!(received < 16 << 20, "read {received} bytes");
}

/// Opens `n` connections that each send the first half of the HTTP/2 preface and nothing more.
async fn half_prefaces(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        held.push(stream);
    }
    held
}

/// Whether the server closed `stream` (EOF or reset) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_http2_prefaces_are_closed_after_the_header_timeout() {
    let origin = TestOrigin::start().await;
    origin.set("/live/seg.ts", Reply::ok(pattern(10_000, 1)));
    let mut config = test_config(&origin);
    config.server.header_read_timeout = Duration::from_secs(1);
    let gw = TestGateway::start(config).await;

    let started = Instant::now();
    let mut held = half_prefaces(gw.addr, 1000).await;
    let (status, took) = timed_get(&gw, "/live/seg.ts").await;
    assert_eq!(status, 200, "a viewer is served during the flood");
    assert!(took < Duration::from_millis(500), "served in {took:?}");

    for stream in &mut held {
        assert!(closed_within(stream, Duration::from_secs(5)).await);
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        gw.metric("gateway_connections_refused_total{reason=\"preface_timeout\"}")
            .await,
        1000.0
    );
    assert!(
        wait_until_async(
            || async { gw.metric("gateway_open_connections").await <= 1.0 },
            Duration::from_secs(2)
        )
        .await
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let origin = TestOrigin::start().await;
    let mut config = test_config(&origin);
    config.server.max_connections = 50;
    config.server.header_read_timeout = Duration::from_secs(2);
    let gw = TestGateway::start(config).await;

    let mut holders = half_prefaces(gw.addr, 50).await;
    // Wait until the gateway accepted all fifty, then one more is closed before it is read.
    assert!(
        wait_until_async(
            || async {
                let mut probe = TcpStream::connect(gw.addr).await.unwrap();
                closed_within(&mut probe, Duration::from_millis(200)).await
            },
            Duration::from_secs(2)
        )
        .await,
        "a connection over the cap was not closed"
    );
    let mut extra = TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut extra, Duration::from_millis(500)).await);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(refused_over_cap(&gw) >= 2.0, "the refusals are counted");

    // Once the holders go away (closed by the header-read timeout, or by themselves), viewers are
    // served again at once.
    holders.clear();
    assert!(
        wait_until_async(
            || async {
                let mut s = TcpStream::connect(gw.addr).await.unwrap();
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
                    .await
                    .is_ok()
                    && {
                        let mut answer = Vec::new();
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            s.read_to_end(&mut answer),
                        )
                        .await;
                        answer.starts_with(b"HTTP/1.1 200")
                    }
            },
            Duration::from_secs(2)
        )
        .await,
        "served again once the connections closed"
    );
}

/// `gateway_connections_refused_total{reason="max_connections"}`, read from the registry: at the
/// cap, `/metrics` would need a connection itself.
fn refused_over_cap(gw: &TestGateway) -> f64 {
    let text = gw.gateway.metrics().render();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("gateway_connections_refused_total{reason=\"max_connections\"}")
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
