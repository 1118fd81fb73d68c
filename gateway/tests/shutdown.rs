//! Graceful shutdown: on SIGTERM the real binary stops accepting, lets requests in flight finish and
//! exits 0; in-process, `serve` reports whether the drain was clean.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::Drained;
use support::binary::ChildGuard;
use support::{pattern, test_config, Reply, TestGateway, TestOrigin};

/// Starts the binary against `origin` and returns it with its address.
async fn start_binary(origin: &TestOrigin) -> (ChildGuard, SocketAddr) {
    let base = origin.base();
    let (child, url) = support::binary::start(&[
        "--listen",
        "127.0.0.1:0",
        "--origin",
        &base,
        "--server-drain-timeout",
        "10s",
    ])
    .await;
    let addr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected address {url:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {url:?}: {e}"));
    (child, addr)
}

/// Whether a connection to `addr` fails within `within` (retrying: the signal is handled asynchronously).
async fn refuses_connections(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let origin = TestOrigin::start().await;
    let body = pattern(200 * 1024, 11);
    origin.set(
        "/slow.ts",
        Reply::Slow {
            delay: Duration::from_secs(2),
            body: body.clone(),
        },
    );
    let (mut child, addr) = start_binary(&origin).await;

    let url = format!("http://{addr}/slow.ts");
    let in_flight = tokio::spawn(async move { support::get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        origin.count("/slow.ts"),
        1,
        "the request is in flight; stderr:\n{}",
        child.stderr()
    );

    child.signal("TERM");
    let signalled = Instant::now();

    assert!(
        refuses_connections(addr, Duration::from_secs(2)).await,
        "new connections are refused after SIGTERM; stderr:\n{}",
        child.stderr()
    );
    if !in_flight.is_finished() {
        assert!(
            child.try_wait().is_none(),
            "the process exited with a request in flight"
        );
    }

    let answer = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the in-flight request finished")
        .expect("request task");
    assert_eq!(answer.status, 200, "stderr:\n{}", child.stderr());
    assert_eq!(answer.body.len(), body.len());
    assert_eq!(answer.body, body);

    let status = child
        .wait_for_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the process did not exit within the drain timeout; stderr:\n{}",
                child.stderr()
            )
        });
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{}",
        child.stderr()
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(11),
        "exited {:?} after SIGTERM",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_stop_drains_cleanly() {
    let origin = TestOrigin::start().await;
    let body = pattern(100 * 1024, 12);
    let delay = Duration::from_millis(1500);
    origin.set(
        "/slow.ts",
        Reply::Slow {
            delay,
            body: body.clone(),
        },
    );
    let mut config = test_config(&origin);
    config.server.drain_timeout = Duration::from_secs(10);
    // Origin timeouts far beyond the delay, so a loaded machine causes no retries.
    config.origin.first_byte_timeout = Duration::from_secs(10);
    config.origin.total_timeout = Duration::from_secs(15);
    let gw = TestGateway::start(config).await;

    let url = gw.url("/slow.ts");
    let started = Instant::now();
    let in_flight = tokio::spawn(async move { support::get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin.count("/slow.ts"), 1, "the request is in flight");

    let drained = tokio::time::timeout(Duration::from_secs(15), gw.stop())
        .await
        .expect("stop returned in time");
    assert_eq!(drained, Drained::Clean);
    assert!(
        started.elapsed() >= delay - Duration::from_millis(100),
        "stop waited for the request ({:?})",
        started.elapsed()
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, body);
}

#[tokio::test]
async fn in_process_stop_reports_a_drain_timeout() {
    let origin = TestOrigin::start().await;
    origin.set("/hang.ts", Reply::Hang);
    let mut config = test_config(&origin);
    config.server.drain_timeout = Duration::from_millis(300);
    let gw = TestGateway::start(config).await;

    let url = gw.url("/hang.ts");
    let in_flight = tokio::spawn(async move { support::get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let drained = tokio::time::timeout(Duration::from_secs(5), gw.stop())
        .await
        .expect("stop returned in time");
    assert_eq!(drained, Drained::TimedOut);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "gave up after {:?}",
        started.elapsed()
    );
    in_flight.abort();
}
