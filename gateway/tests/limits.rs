//! What the gateway refuses: path traversal, oversized or too many headers, slow clients, more work
//! than its concurrency limit, and garbage on the wire. Raw sockets are used where an HTTP client
//! would normalise the request.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use support::{pattern, test_config, Reply, TestGateway, TestOrigin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back on a raw connection.
#[derive(Debug)]
struct RawAnswer {
    /// The status code of the first response, if one arrived.
    status: Option<u16>,
    /// Everything read.
    bytes: Vec<u8>,
    /// The server closed (or reset) the connection within the wait.
    closed: bool,
}

/// Writes `request` (write errors are ignored: the server may close early), then reads until the
/// server closes the connection or `wait` passes.
async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> RawAnswer {
    let mut stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let _ = stream.write_all(request).await;
    read_until_closed(&mut stream, wait).await
}

async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> RawAnswer {
    let deadline = tokio::time::Instant::now() + wait;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
        }
    };
    RawAnswer {
        status: status_of(&bytes),
        bytes,
        closed,
    }
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

async fn still_serving(gw: &TestGateway) {
    let r = gw.get("/healthz").await;
    assert_eq!(r.status, 200, "the gateway still answers");
}

#[tokio::test]
async fn path_traversal_is_400_and_never_reaches_the_origin() {
    let origin = TestOrigin::start().await;
    origin.set("/etc/passwd", Reply::ok("root:x:0:0\n"));
    origin.set("/b", Reply::ok("b\n"));
    origin.set("/a/b", Reply::ok("a/b\n"));
    let gw = TestGateway::start(test_config(&origin)).await;
    for target in [
        "/../etc/passwd",
        "/a/../../etc/passwd",
        "/a/%2e%2e/b",
        "/a/%2E%2E/b",
        "/a/.%2e/b",
        "/a/%252e%252e/b",
        "/a/%25252e%25252e/b",
        "/a%2fb",
        "/a%2Fb",
        "/a%5c..%5cb",
        "/a/./b",
        "/a/%2e/b",
        "/a/%00/b",
        "/a/%zz/b",
        "http://127.0.0.1/a/../b",
        "/a/..;/..;/etc/passwd",
        "/a/..;x/b",
        "/a/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        "/a/%25c0%25ae%25c0%25ae/b",
    ] {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n");
        let answer = raw(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            answer.status,
            Some(400),
            "{target}: {:?}",
            String::from_utf8_lossy(&answer.bytes)
        );
        let head = String::from_utf8_lossy(&answer.bytes);
        assert!(!head.contains("root:x"), "{target} leaked a file");
    }
    assert_eq!(origin.total(), 0, "no traversal attempt reached the origin");
    // A plain path still works.
    let ok = raw(
        gw.addr,
        b"GET /a/b HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(ok.status, Some(200));
    assert_eq!(origin.total(), 1);
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let origin = TestOrigin::start().await;
    let gw = TestGateway::start(test_config(&origin)).await;

    // One 64 KiB header value: 431, or the connection is dropped; never a success.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw(gw.addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.closed, "the connection is closed");
    if let Some(status) = answer.status {
        assert!((400..500).contains(&status), "a 64 KiB header got {status}");
    }

    // 200 small headers (the limit is 64): small enough to be sent whole, so the answer must arrive.
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: gateway\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    let answer = raw(gw.addr, many.as_bytes(), Duration::from_secs(5)).await;
    let status = answer.status.expect("a status line for too many headers");
    assert!((400..500).contains(&status), "200 headers got {status}");

    // Within the limits (12 KiB of headers, 40 headers) a request is served.
    let mut fine = String::from("GET /healthz HTTP/1.1\r\nHost: gateway\r\n");
    for i in 0..40 {
        fine.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(300)));
    }
    fine.push_str("Connection: close\r\n\r\n");
    let answer = raw(gw.addr, fine.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(
        answer.status,
        Some(200),
        "headers within the limits are accepted"
    );

    still_serving(&gw).await;
    assert_eq!(origin.total(), 0);
}

#[tokio::test]
async fn a_half_sent_request_is_dropped_after_the_header_timeout() {
    let origin = TestOrigin::start().await;
    let mut config = test_config(&origin);
    config.server.header_read_timeout = Duration::from_millis(500);
    let gw = TestGateway::start(config).await;

    let started = Instant::now();
    let answer = raw(gw.addr, b"GET /healthz HT", Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    assert!(
        answer.closed,
        "a half request line is not kept open (waited {elapsed:?})"
    );
    assert!(elapsed < Duration::from_secs(3), "closed after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(400),
        "not before the timeout: {elapsed:?}"
    );
    assert!(
        answer.status.is_none_or(|s| s == 408),
        "{:?}",
        answer.status
    );
    still_serving(&gw).await;
}

#[tokio::test]
async fn a_trickled_request_is_dropped_after_the_header_timeout() {
    let origin = TestOrigin::start().await;
    let mut config = test_config(&origin);
    config.server.header_read_timeout = Duration::from_millis(500);
    let gw = TestGateway::start(config).await;

    // One byte every 100 ms: the whole head would take ~5 s; bytes arriving do not extend the deadline.
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: yes\r\n\r\n" {
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let mut buf = Vec::new();
    let read_all = tokio::time::timeout(Duration::from_secs(3), read.read_to_end(&mut buf)).await;
    let elapsed = started.elapsed();
    writer.abort();
    assert!(
        read_all.is_ok(),
        "the trickling connection was still open after {elapsed:?}"
    );
    assert!(
        status_of(&buf).is_none_or(|s| s == 408),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    still_serving(&gw).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let origin = TestOrigin::start().await;
    let mut config = test_config(&origin);
    config.server.header_read_timeout = Duration::from_millis(500);
    let gw = TestGateway::start(config).await;

    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(answer.status, Some(200));
    assert!(answer.closed, "an idle keep-alive connection is closed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let origin = TestOrigin::start().await;
    let mut config = test_config(&origin);
    config.server.header_read_timeout = Duration::from_millis(500);
    let gw = TestGateway::start(config).await;

    let silent = raw(gw.addr, b"", Duration::from_secs(3)).await;
    assert!(
        silent.closed,
        "a connection that never sends a byte is still open after 3 s"
    );
    let preface = raw(gw.addr, b"PRI * HTTP/2.0\r\n", Duration::from_secs(3)).await;
    assert!(
        preface.closed,
        "a connection stuck in the h2 preface is still open after 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_is_shed_with_503_beyond_the_concurrency_limit() {
    let origin = TestOrigin::start().await;
    for i in 0..10 {
        origin.set(
            &format!("/shed/{i}.ts"),
            Reply::Slow {
                delay: Duration::from_secs(1),
                body: pattern(1000, i),
            },
        );
    }
    origin.set("/shed/after.ts", Reply::ok(pattern(10, 1)));
    let mut config = test_config(&origin);
    config.server.max_concurrency = 2;
    // Origin timeouts far beyond the 1 s delay, so a loaded machine causes no retries.
    config.origin.first_byte_timeout = Duration::from_secs(10);
    config.origin.total_timeout = Duration::from_secs(15);
    let gw = TestGateway::start(config).await;

    let client = support::client();
    let urls: Vec<String> = (0..10).map(|i| gw.url(&format!("/shed/{i}.ts"))).collect();
    let answers = join_all(
        urls.iter()
            .map(|url| support::request(&client, "GET", url, &[])),
    )
    .await;

    let ok = answers.iter().filter(|r| r.status == 200).count();
    let shed: Vec<_> = answers.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        ok + shed.len(),
        10,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        (1..=2).contains(&ok),
        "at most the limit is served at once: {ok}"
    );
    assert!(!shed.is_empty(), "some requests were shed");
    for r in &shed {
        assert!(
            r.header("retry-after").is_some(),
            "a shed answer says when to retry"
        );
    }
    for (i, r) in answers.iter().enumerate() {
        if r.status == 200 {
            assert_eq!(r.body, pattern(1000, i as u8));
        }
    }
    assert_eq!(origin.total(), ok, "shed requests never reached the origin");
    let counted = gw.metric("gateway_load_shed_total").await;
    assert_eq!(counted, shed.len() as f64);

    let after = gw.get("/shed/after.ts").await;
    assert_eq!(
        after.status, 200,
        "the gateway serves normally once the load is gone"
    );
    still_serving(&gw).await;
}

#[tokio::test]
async fn shed_answers_carry_cors() {
    let origin = TestOrigin::start().await;
    for i in 0..6 {
        origin.set(
            &format!("/shed/{i}.ts"),
            Reply::Slow {
                delay: Duration::from_millis(500),
                body: pattern(10, i),
            },
        );
    }
    let mut config = test_config(&origin);
    config.server.max_concurrency = 1;
    let gw = TestGateway::start(config).await;
    let client = support::client();
    let urls: Vec<String> = (0..6).map(|i| gw.url(&format!("/shed/{i}.ts"))).collect();
    let answers = join_all(
        urls.iter()
            .map(|url| support::request(&client, "GET", url, &[])),
    )
    .await;
    let shed: Vec<_> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(!shed.is_empty());
    for r in shed {
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    }
}

#[tokio::test]
async fn garbage_never_panics() {
    let origin = TestOrigin::start().await;
    let gw = TestGateway::start(test_config(&origin)).await;
    let junk: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let inputs: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\xfe garbage\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"NOT A REQUEST AT ALL\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
            .to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: \x01\x02\r\n\r\n".to_vec(),
        b"GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET \xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x09\x00\x00\x00\x00\x00junkjunk".to_vec(),
        junk,
    ];
    for input in &inputs {
        let answer = raw(gw.addr, input, Duration::from_secs(5)).await;
        let shown = String::from_utf8_lossy(&input[..input.len().min(60)]).into_owned();
        assert!(answer.closed, "{shown:?}: the connection is closed");
        if let Some(status) = answer.status {
            assert!((400..500).contains(&status), "{shown:?} got {status}");
        }
        still_serving(&gw).await;
    }
    assert_eq!(origin.total(), 0);
}
