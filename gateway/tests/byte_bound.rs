//! The cache holds at most `cache.max_bytes` of objects, evicting the least recently used.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{pattern, test_config, TestGateway, TestOrigin};

const MIB: u64 = 1024 * 1024;
const SEGMENT: usize = 256 * 1024;

fn seg(i: usize) -> String {
    format!("/bound/seg_{i:03}.ts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_stays_within_its_byte_bound() {
    let origin = TestOrigin::start().await;
    for i in 0..64 {
        origin.set(&seg(i), support::Reply::ok(pattern(SEGMENT, i as u8)));
    }
    let mut config = test_config(&origin);
    config.cache.max_bytes = 4 * MIB;
    let gw = TestGateway::start(config).await;

    // 16 MiB through a 4 MiB cache.
    for i in 0..64 {
        let r = gw.get(&seg(i)).await;
        assert_eq!(r.status, 200, "{}", seg(i));
        assert_eq!(r.body, pattern(SEGMENT, i as u8), "{}", seg(i));
        assert_eq!(r.header("x-cache"), Some("MISS"));
    }
    assert_eq!(origin.total(), 64);

    let bytes = gw.metric("gateway_cache_bytes").await;
    assert!(bytes > 0.0, "the cache holds something");
    assert!(
        bytes <= (4 * MIB) as f64,
        "cache holds {bytes} bytes, over the 4 MiB bound"
    );
    // LRU keeps the bound nearly full rather than evicting far too much.
    assert!(bytes >= (2 * MIB) as f64, "cache holds only {bytes} bytes");
    let entries = gw.metric("gateway_cache_entries").await;
    assert!(
        (8.0..=16.0).contains(&entries),
        "{entries} entries of 256 KiB in 4 MiB"
    );

    // The newest object survived; the oldest was evicted.
    let newest = gw.get(&seg(63)).await;
    assert_eq!(
        newest.header("x-cache"),
        Some("HIT"),
        "the most recent segment is kept"
    );
    assert_eq!(origin.count(&seg(63)), 1);
    let oldest = gw.get(&seg(0)).await;
    assert_eq!(oldest.status, 200);
    assert_eq!(oldest.body, pattern(SEGMENT, 0));
    assert_eq!(
        oldest.header("x-cache"),
        Some("MISS"),
        "the first segment was evicted"
    );
    assert_eq!(origin.count(&seg(0)), 2);

    assert!(gw.metric("gateway_cache_bytes").await <= (4 * MIB) as f64);
}

#[tokio::test]
async fn an_object_larger_than_the_cache_is_served_but_not_kept() {
    let origin = TestOrigin::start().await;
    let big = pattern(2 * MIB as usize, 42);
    origin.set("/bound/big.ts", support::Reply::ok(big.clone()));
    origin.set("/bound/small.ts", support::Reply::ok(pattern(1000, 1)));
    let mut config = test_config(&origin);
    config.cache.max_bytes = MIB;
    let gw = TestGateway::start(config).await;

    assert_eq!(gw.get("/bound/small.ts").await.status, 200);
    for round in 1..=2 {
        // A streamed answer can end before its fetch has finished storing; a request then would
        // join that fetch (one origin request, as it should). Ask again only once it is over.
        let idle = support::wait_until(
            || gw.gateway.edge().fetches_in_flight() == 0,
            Duration::from_secs(5),
        )
        .await;
        assert!(idle, "the previous fetch ended");
        let r = gw.get("/bound/big.ts").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, big);
        assert_eq!(
            origin.count("/bound/big.ts"),
            round,
            "a 2 MiB object is never kept in a 1 MiB cache"
        );
        let bytes = gw.metric("gateway_cache_bytes").await;
        assert!(
            bytes <= MIB as f64,
            "cache holds {bytes} bytes, over the 1 MiB bound"
        );
    }
}
