//! Contribution accounting end to end (docs/LEDGER.md): native peers with keys sign receipts for
//! what they verified, the gateway's tracker believes only what it can check, the ledger credits
//! uploaders, seals epochs under a signed Merkle root and proves any receipt's inclusion.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gateway::ledger::{root_of, seal_text, unix_ms, Ledger};
use peer_assist::accounting::{merkle, NodeKey, Receipt};
use peer_assist::node::{self, NodeConfig, Summary, TestBehaviour};
use support::TestGateway;

const EPOCH_S: u64 = 3600;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ledger-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn node_config(gw: &TestGateway, seconds: u64, key: &Arc<NodeKey>) -> NodeConfig {
    let mut config = NodeConfig::new(&format!("http://{}", gw.addr), "/demo/live/master.m3u8");
    config.duration = Some(Duration::from_secs(seconds));
    config.key = Some(Arc::clone(key));
    config
}

async fn ledger_gateway(dir: &std::path::Path) -> (TestGateway, gateway::Config) {
    let mut config = support::demo_config().await;
    config.ledger.path = Some(dir.join("ledger.sqlite3"));
    (TestGateway::start(config.clone()).await, config)
}

async fn json(gw: &TestGateway, path: &str) -> serde_json::Value {
    let r = gw.get(path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

/// Credit per uploader key over the epochs from `first` to `last`, by the gateway's endpoint.
async fn credit(gw: &TestGateway, first: u64, last: u64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for epoch in first..=last {
        let view = json(gw, &format!("/p2p/v1/ledger?epoch={epoch}")).await;
        for u in view["uploaders"].as_array().unwrap() {
            *out.entry(u["key"].as_str().unwrap().to_owned())
                .or_default() += u["bytes"].as_u64().unwrap();
        }
    }
    out
}

/// Bytes every receiver verified, by uploader key, from the summaries.
fn verified(summaries: &[&Summary]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in summaries {
        for (k, b) in &s.received_from {
            *out.entry(k.clone()).or_default() += b;
        }
    }
    out
}

fn largest_segment(summaries: &[&Summary]) -> u64 {
    summaries
        .iter()
        .flat_map(|s| s.log.iter().map(|r| r.bytes))
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_is_credited_for_what_the_viewers_verified_from_it() {
    let dir = temp_dir("credit");
    let (gw, config) = ledger_gateway(&dir).await;
    let first_epoch = unix_ms() / (EPOCH_S * 1000);
    let key = |name: &str| Arc::new(NodeKey::load_or_create(&dir.join(name)).unwrap());
    let seed_key = key("seed.key");
    let mut seed_config = node_config(&gw, 40, &seed_key);
    seed_config.seed = true;
    let seed = node::start(seed_config).await.expect("the seed joins");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut viewers = Vec::new();
    for i in 0..3 {
        let k = key(&format!("viewer{i}.key"));
        viewers.push(node::start(node_config(&gw, 36, &k)).await.expect("joins"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut summaries = Vec::new();
    for v in viewers {
        summaries.push(v.wait().await);
    }
    let seed = seed.wait().await;
    assert_eq!(seed.node_key.as_deref(), Some(seed_key.public_hex()));
    let receivers: Vec<&Summary> = summaries.iter().collect();
    let verified = verified(&receivers);
    let from_seed = verified.get(seed_key.public_hex()).copied().unwrap_or(0);
    assert!(
        from_seed > 0,
        "the viewers got something from the seed: {summaries:#?}"
    );
    let last_epoch = unix_ms() / (EPOCH_S * 1000);

    // The last reports reach the tracker as the nodes stop.
    let slack = largest_segment(&receivers);
    let settled = support::wait_until_async(
        || async {
            credit(&gw, first_epoch, last_epoch)
                .await
                .get(seed_key.public_hex())
                .copied()
                .unwrap_or(0)
                == from_seed
        },
        Duration::from_secs(5),
    )
    .await;
    let credited = credit(&gw, first_epoch, last_epoch).await;
    let seed_credit = credited.get(seed_key.public_hex()).copied().unwrap_or(0);
    eprintln!(
        "seed credited {seed_credit} bytes; viewers verified {from_seed} from it (settled: {settled})"
    );
    assert!(
        seed_credit <= from_seed && from_seed - seed_credit <= slack,
        "credit {seed_credit} vs verified {from_seed} (one segment: {slack})"
    );
    // The seed reads its own credit back, as `peer-assist ledger` does.
    if first_epoch == last_epoch {
        let own = peer_assist::accounting::credit::read_credit(
            &format!("http://{}", gw.addr),
            seed_key.public_hex(),
            Some(last_epoch),
        )
        .await
        .unwrap();
        assert_eq!(own.bytes, seed_credit);
        assert!(own.receivers >= 1 && own.segments >= 1, "{own:?}");
    }
    for (uploader, bytes) in &credited {
        let got = verified.get(uploader).copied().unwrap_or(0);
        assert!(
            *bytes <= got,
            "{uploader} credited {bytes} > verified {got}"
        );
    }
    assert!(gw.metric("p2p_receipts_accepted_total").await > 0.0);
    assert_eq!(
        gw.metric("p2p_receipts_rejected_total{reason=\"signature\"}")
            .await,
        0.0
    );

    // The root: rebuilt from the receipts alone, it is the gateway's; once sealed, its
    // signature verifies with the gateway's key.
    let ledger = Ledger::open(&config.ledger).unwrap().unwrap();
    let epoch = last_epoch;
    let receipts = ledger.store().receipts(epoch).await.unwrap();
    assert!(!receipts.is_empty());
    for r in &receipts {
        r.check_signature().unwrap();
    }
    let view = json(&gw, &format!("/p2p/v1/ledger?epoch={epoch}")).await;
    assert_eq!(view["closed"], false);
    assert_eq!(view["root"], hex::encode(root_of(&receipts)));
    let sealed = ledger
        .seal_due(unix_ms() + EPOCH_S * 1000 + 10_000)
        .await
        .unwrap();
    assert!(sealed.contains(&epoch));
    let view = json(&gw, &format!("/p2p/v1/ledger?epoch={epoch}")).await;
    assert_eq!(view["closed"], true);
    let root = view["root"].as_str().unwrap().to_owned();
    assert_eq!(root, hex::encode(root_of(&receipts)));
    let text = seal_text(epoch, EPOCH_S, receipts.len() as u64, &root);
    let gateway_key = hex::decode(view["gateway_key"].as_str().unwrap()).unwrap();
    let signature = hex::decode(view["signature"].as_str().unwrap()).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &gateway_key)
        .verify(text.as_bytes(), &signature)
        .expect("the seal's signature verifies with the gateway key");

    // An inclusion proof verifies with only the root.
    let pick = &receipts[receipts.len() / 2];
    let proof = json(
        &gw,
        &format!("/p2p/v1/ledger/proof?epoch={epoch}&receipt={}", pick.id()),
    )
    .await;
    let receipt: Receipt = serde_json::from_value(proof["receipt"].clone()).unwrap();
    assert_eq!(&receipt, pick);
    let path: Vec<[u8; 32]> = proof["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    let root_bytes: [u8; 32] = hex::decode(&root).unwrap().try_into().unwrap();
    let (index, size) = (
        proof["index"].as_u64().unwrap(),
        proof["size"].as_u64().unwrap(),
    );
    assert!(merkle::verify_inclusion(
        &receipt.leaf_hash(),
        index,
        size,
        &path,
        &root_bytes
    ));
    let mut forged = receipt.clone();
    forged.bytes += 1;
    assert!(!merkle::verify_inclusion(
        &forged.leaf_hash(),
        index,
        size,
        &path,
        &root_bytes
    ));
    let missing = gw
        .get(&format!(
            "/p2p/v1/ledger/proof?epoch={epoch}&receipt={}",
            "0".repeat(64)
        ))
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(gw.get("/p2p/v1/ledger?epoch=x").await.status, 400);

    // The operator's export says the same, from the file alone.
    let export = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args([
                "ledger",
                "export",
                "--epoch",
                &epoch.to_string(),
                "--format",
                format,
            ])
            .arg("--ledger-path")
            .arg(dir.join("ledger.sqlite3"))
            .env_remove("GATEWAY_LEDGER_PATH")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let exported: serde_json::Value = serde_json::from_str(&export("json")).unwrap();
    assert_eq!(exported["ledger"]["root"], view["root"]);
    assert_eq!(exported["ledger"]["signature"], view["signature"]);
    assert_eq!(exported["ledger"]["uploaders"], view["uploaders"]);
    let all: Vec<Receipt> = serde_json::from_value(exported["receipts"].clone()).unwrap();
    assert_eq!(
        hex::encode(root_of(&all)),
        root,
        "the root, rebuilt from the export alone"
    );
    let csv = export("csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("epoch,key,bytes,segments,receivers,root")
    );
    for (line, u) in lines.zip(view["uploaders"].as_array().unwrap()) {
        let expected = format!(
            "{epoch},{},{},{},{},{root}",
            u["key"].as_str().unwrap(),
            u["bytes"],
            u["segments"],
            u["receivers"]
        );
        assert_eq!(line, expected);
    }
    assert_eq!(
        csv.lines().count(),
        view["uploaders"].as_array().unwrap().len() + 1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_receipts_are_refused_with_their_reason_and_earn_nothing() {
    let dir = temp_dir("forged");
    let (gw, _config) = ledger_gateway(&dir).await;
    let first_epoch = unix_ms() / (EPOCH_S * 1000);
    let seed_key = Arc::new(NodeKey::load_or_create(&dir.join("seed.key")).unwrap());
    let forger_key = Arc::new(NodeKey::load_or_create(&dir.join("forger.key")).unwrap());
    let mut seed_config = node_config(&gw, 30, &seed_key);
    seed_config.seed = true;
    let seed = node::start(seed_config).await.expect("the seed joins");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut forger_config = node_config(&gw, 26, &forger_key);
    forger_config.test = TestBehaviour {
        forge_receipts: true,
        ..TestBehaviour::default()
    };
    let forger = node::start(forger_config)
        .await
        .expect("joins")
        .wait()
        .await;
    let _ = seed.wait().await;
    let honest = forger.receipts_signed;
    assert!(honest > 0, "{forger:#?}");
    let rejected = |reason: &'static str| {
        let gw = &gw;
        async move {
            gw.metric(&format!(
                "p2p_receipts_rejected_total{{reason=\"{reason}\"}}"
            ))
            .await as u64
        }
    };
    let all_in = support::wait_until_async(
        || async { gw.metric("p2p_receipts_accepted_total").await as u64 == honest },
        Duration::from_secs(5),
    )
    .await;
    assert!(all_in, "every honest receipt is accepted");
    let mut counts = Vec::new();
    for reason in peer_assist::accounting::Rejection::ALL {
        counts.push((reason.label(), rejected(reason.label()).await));
    }
    eprintln!("honest {honest}, rejected {counts:?}");
    // Per honest receipt: one broken signature, one unlisted uploader, one unpublished digest,
    // one replay, and one with twice the bytes (over the segment's size, or over what the
    // receiver reported from peers).
    assert_eq!(rejected("signature").await, honest);
    assert_eq!(rejected("uploader").await, honest);
    assert_eq!(rejected("digest").await, honest);
    assert_eq!(rejected("replay").await, honest);
    assert_eq!(
        rejected("size").await + rejected("not_reported").await,
        honest
    );
    assert!(rejected("size").await > 0);
    for reason in [
        "malformed",
        "receiver",
        "self",
        "swarm",
        "time",
        "duplicate",
        "storage",
    ] {
        assert_eq!(rejected(reason).await, 0, "{reason}");
    }
    // Credit: exactly what the forger verified, all of it to the seed; nothing to anyone else.
    let credited = credit(&gw, first_epoch, unix_ms() / (EPOCH_S * 1000)).await;
    assert_eq!(credited, forger.received_from, "{credited:?}");
    assert_eq!(
        gw.metric("p2p_receipted_bytes_total").await as u64,
        forger.received_from.values().sum::<u64>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
