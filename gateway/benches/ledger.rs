//! What the contribution ledger costs the gateway per receipt (docs/LEDGER.md), to size it.
//!
//! `cargo bench -p gateway --bench ledger`
//!
//! * the tracker's checks of one receipt (`tracker::receipts::Accounts::check`: form, swarm,
//!   listing, digest, size, the Ed25519 signature, nonce, budget), single thread;
//! * storing receipts in the SQLite ledger (WAL, `synchronous=FULL`, a file in the system's temp
//!   folder) in transactions of 1, 8 and 64 receipts: what a report carries (a viewer's report
//!   every 2 s holds about one receipt per segment it got from peers);
//! * sealing: the Merkle root of an epoch of 100,000 receipts, and one inclusion proof.
//!
//! Each figure is the median of [`REPS`] runs. Nothing here is asserted: the results go into
//! docs/BENCHMARKS.md with the machine and the date.

use std::time::{Duration, Instant};

use gateway::ledger::root_of;
use gateway::ledger::store::{Sqlite, Store};
use peer_assist::accounting::{merkle, NodeKey, Receipt, ReceiptBody};
use peer_assist::tracker::receipts::{Accounts, Checked, Published};

const REPS: usize = 5;
const NOW_MS: u64 = 1_800_000_000_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn receipts(receiver: &NodeKey, uploader: &NodeKey, n: usize, salt: u64) -> Vec<Receipt> {
    (0..n)
        .map(|i| {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&salt.to_be_bytes());
            nonce[8..].copy_from_slice(&(i as u64).to_be_bytes());
            Receipt::sign(
                &ReceiptBody {
                    uploader: uploader.public_hex().to_owned(),
                    swarm: "/live/v0.m3u8".into(),
                    segment: format!("/live/v0/{}.ts", i % 1000),
                    sha256: [7; 32],
                    bytes: 1_000_000,
                    time_ms: NOW_MS - 1000,
                    nonce,
                },
                receiver,
            )
        })
        .collect()
}

fn checks(receiver: &NodeKey, uploader: &NodeKey) -> f64 {
    let n = 20_000;
    let all = receipts(receiver, uploader, n, 1);
    let mut published = Published::default();
    for i in 0..1000 {
        published.insert(&format!("/live/v0/{i}.ts"), &"07".repeat(32), 2_000_000);
    }
    let runs = (0..REPS)
        .map(|_| {
            let mut accounts = Accounts::default();
            accounts.joined(receiver.public_hex(), "/live/v0.m3u8", NOW_MS - 60_000);
            accounts.listed(
                receiver.public_hex(),
                [uploader.public_hex()],
                NOW_MS - 60_000,
            );
            accounts.reported(receiver.public_hex(), u64::MAX / 2);
            let started = Instant::now();
            for r in &all {
                let ok = accounts
                    .check(r, receiver.public_hex(), &published, NOW_MS)
                    .is_ok();
                assert!(ok);
            }
            n as f64 / started.elapsed().as_secs_f64()
        })
        .collect();
    median(runs)
}

async fn sqlite(batch: usize, receiver: &NodeKey, uploader: &NodeKey) -> (f64, f64) {
    let total = if batch == 1 { 400 } else { 4_000 };
    let mut runs = Vec::new();
    for rep in 0..REPS {
        let dir = std::env::temp_dir().join(format!("ledger-bench-{}-{rep}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = Sqlite::open(&dir.join("ledger.sqlite3")).expect("open");
        let all: Vec<Checked> = receipts(receiver, uploader, total, rep as u64 + 10)
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.segment = format!("/live/v0/{i}.ts");
                Checked {
                    receipt: r,
                    segment_size: 2_000_000,
                }
            })
            .collect();
        let started = Instant::now();
        for chunk in all.chunks(batch) {
            let out = store
                .insert(1, NOW_MS, chunk.to_vec())
                .await
                .expect("insert");
            assert!(out.iter().all(Result::is_ok));
        }
        runs.push(started.elapsed());
        let _ = std::fs::remove_dir_all(&dir);
    }
    let secs = median(runs.iter().map(Duration::as_secs_f64).collect());
    (total as f64 / secs, (total / batch) as f64 / secs)
}

fn sealing(receiver: &NodeKey, uploader: &NodeKey) -> (f64, f64) {
    let all = receipts(receiver, uploader, 100_000, 99);
    let roots: Vec<f64> = (0..REPS)
        .map(|_| {
            let started = Instant::now();
            let _ = root_of(&all);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let leaves: Vec<[u8; 32]> = all.iter().map(Receipt::leaf_hash).collect();
    let proofs: Vec<f64> = (0..REPS)
        .map(|i| {
            let started = Instant::now();
            let _ = merkle::inclusion_proof(&leaves, 12_345 + i);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    (median(roots), median(proofs))
}

fn main() {
    let receiver = NodeKey::from_seed(&[1; 32]);
    let uploader = NodeKey::from_seed(&[2; 32]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| what | result (median of {REPS}) |");
    println!("|---|---:|");
    println!(
        "| tracker checks (signature included), one thread | {:.0} receipts/s |",
        checks(&receiver, &uploader)
    );
    for batch in [1, 8, 64] {
        let (receipts_s, commits_s) = runtime.block_on(sqlite(batch, &receiver, &uploader));
        println!(
            "| SQLite ledger, {batch} receipt(s) per transaction | {receipts_s:.0} receipts/s ({commits_s:.0} commits/s) |"
        );
    }
    let (root_ms, proof_ms) = sealing(&receiver, &uploader);
    println!("| Merkle root of 100,000 receipts (leaves hashed) | {root_ms:.0} ms |");
    println!("| one inclusion proof among 100,000 leaves | {proof_ms:.0} ms |");
}
