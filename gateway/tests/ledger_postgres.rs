//! The ledger of a fleet: gateways writing to one real PostgreSQL (Debian's, started here on
//! 127.0.0.1 in a cluster this test creates): one ledger, a receipt counted once whichever gateway
//! took it, a receiver's credit for a segment bounded across gateways.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::ledger::postgres::Postgres;
use gateway::ledger::{unix_ms, Store};
use peer_assist::accounting::{NodeKey, Receipt, ReceiptBody, Rejection};
use peer_assist::node::{self, NodeConfig};
use peer_assist::tracker::receipts::Checked;
use support::TestGateway;

/// A PostgreSQL cluster of its own, on a free loopback port; removed when dropped.
struct Cluster {
    dir: PathBuf,
    server: Child,
    url: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is required for this test: install Debian's postgresql (scripts/test does)"
        )
    })
}

/// `program args` as the `postgres` user when we are root (the server refuses to run as root).
fn command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

async fn cluster() -> Cluster {
    let bin = bin_dir();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let dir = std::env::temp_dir().join(format!(
        "ledger-pg-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    if root {
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown the cluster's folder to postgres");
    }
    let data = dir.join("data");
    let init = command(&bin.join("initdb"), root)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = command(&bin.join("postgres"), root)
        .arg("-D")
        .arg(&data)
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ])
        .arg("-k")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let started = Instant::now();
    while tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "PostgreSQL did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Cluster { dir, server, url }
}

fn receipt(receiver: &NodeKey, segment: &str, bytes: u64, nonce: u8) -> Receipt {
    Receipt::sign(
        &ReceiptBody {
            uploader: "ab".repeat(32),
            swarm: "/s/v0.m3u8".into(),
            segment: segment.into(),
            sha256: [1; 32],
            bytes,
            time_ms: unix_ms(),
            nonce: [nonce; 16],
        },
        receiver,
    )
}

fn checked(receipt: &Receipt, segment_size: u64) -> Checked {
    Checked {
        receipt: receipt.clone(),
        segment_size,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_database_count_a_receipt_once() {
    let pg = cluster().await;
    // Two stores, as two gateways hold them.
    let a = Postgres::new(&pg.url).unwrap();
    let b = Postgres::new(&pg.url).unwrap();
    let receiver = NodeKey::from_seed(&[5; 32]);
    let r = receipt(&receiver, "/s/v0/1.ts", 600, 1);
    // The same receipt to both gateways at once: stored once, the other is a replay.
    let (x, y) = tokio::join!(
        a.insert(7, unix_ms(), vec![checked(&r, 1000)]),
        b.insert(7, unix_ms(), vec![checked(&r, 1000)])
    );
    let mut outcomes = vec![x.unwrap()[0], y.unwrap()[0]];
    outcomes.sort();
    assert_eq!(outcomes, vec![Ok(()), Err(Rejection::Replay)]);
    // Another receipt of that receiver for that segment, through the other gateway: within the
    // segment's size it counts, beyond it it is a duplicate.
    let more = receipt(&receiver, "/s/v0/1.ts", 400, 2);
    let too_much = receipt(&receiver, "/s/v0/1.ts", 1, 3);
    assert_eq!(
        b.insert(7, unix_ms(), vec![checked(&more, 1000)])
            .await
            .unwrap(),
        vec![Ok(())]
    );
    assert_eq!(
        a.insert(7, unix_ms(), vec![checked(&too_much, 1000)])
            .await
            .unwrap(),
        vec![Err(Rejection::Duplicate)]
    );
    // One ledger: both read the same epoch.
    let (la, lb) = (a.uploaders(7).await.unwrap(), b.uploaders(7).await.unwrap());
    assert_eq!(la, lb);
    assert_eq!(la.len(), 1);
    assert_eq!((la[0].bytes, la[0].segments, la[0].receivers), (1000, 2, 1));
    assert_eq!(a.receipts(7).await.unwrap().len(), 2);
}

fn node_config(gw: &TestGateway, seconds: u64, key: NodeKey) -> NodeConfig {
    let mut config = NodeConfig::new(&format!("http://{}", gw.addr), "/demo/live/master.m3u8");
    config.duration = Some(Duration::from_secs(seconds));
    config.key = Some(Arc::new(key));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_one_database_keeps_one_ledger() {
    let pg = cluster().await;
    let base = support::demo_config().await;
    let mut gateways = Vec::new();
    for name in ["a", "b"] {
        let mut config = base.clone();
        config.ledger.database_url = Some(pg.url.clone());
        config.ledger.key_file = Some(pg.dir.join(format!("{name}.key")));
        gateways.push(TestGateway::start(config).await);
    }
    let first_epoch = unix_ms() / 3_600_000;
    let mut seeds = Vec::new();
    let mut viewers = Vec::new();
    for (i, gw) in gateways.iter().enumerate() {
        let mut seed = node_config(gw, 26, NodeKey::generate().unwrap());
        seed.seed = true;
        seeds.push(node::start(seed).await.unwrap());
        let _ = i;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for gw in &gateways {
        viewers.push(
            node::start(node_config(gw, 22, NodeKey::generate().unwrap()))
                .await
                .unwrap(),
        );
    }
    let mut verified: BTreeMap<String, u64> = BTreeMap::new();
    let mut signed = 0;
    for v in viewers {
        let s = v.wait().await;
        signed += s.receipts_signed;
        for (k, b) in s.received_from {
            *verified.entry(k).or_default() += b;
        }
    }
    for s in seeds {
        let _ = s.wait().await;
    }
    assert!(signed > 0);
    let accepted = || async {
        let mut n = 0.0;
        for gw in &gateways {
            n += gw.metric("p2p_receipts_accepted_total").await;
        }
        n as u64
    };
    let all_in = support::wait_until_async(
        || async { accepted().await == signed },
        Duration::from_secs(5),
    )
    .await;
    assert!(all_in, "{} of {signed} receipts accepted", accepted().await);
    // Both gateways show the same ledger: every uploader of both swarms, each receipt once.
    let last_epoch = unix_ms() / 3_600_000;
    let mut views = Vec::new();
    for gw in &gateways {
        let mut credit: BTreeMap<String, u64> = BTreeMap::new();
        let mut roots = Vec::new();
        let mut count = 0;
        for epoch in first_epoch..=last_epoch {
            let r = gw.get(&format!("/p2p/v1/ledger?epoch={epoch}")).await;
            assert_eq!(r.status, 200);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            roots.push(v["root"].as_str().unwrap().to_owned());
            count += v["receipts"].as_u64().unwrap();
            for u in v["uploaders"].as_array().unwrap() {
                *credit
                    .entry(u["key"].as_str().unwrap().to_owned())
                    .or_default() += u["bytes"].as_u64().unwrap();
            }
        }
        views.push((credit, roots, count));
    }
    assert_eq!(views[0], views[1], "one ledger");
    assert_eq!(
        views[0].0, verified,
        "credit = what the receivers verified, once"
    );
    assert_eq!(views[0].2, signed);
}
