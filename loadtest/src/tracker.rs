//! `loadtest tracker`: many signalling peers against one gateway's tracker, to measure what a
//! connected peer costs the gateway. Peers join rendition `i / swarm_size` of one stream at a fixed
//! rate (so swarms of `swarm_size`), each timing its join from TCP connect to its first `peers`
//! list, then stay connected (answering pings) for `hold`. The gateway's RSS and CPU time are read
//! from `/proc/<pid>/` before, after the joins and after the hold.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// What to run.
#[derive(Debug, Clone)]
pub struct TrackerBench {
    /// `host:port` of the gateway.
    pub gateway: String,
    /// The multivariant playlist path; swarm `i` joins its rendition `i`.
    pub stream: String,
    pub peers: usize,
    pub swarm_size: usize,
    /// Joins started per second.
    pub rate: f64,
    pub hold: Duration,
    /// The gateway's process id, for RSS and CPU.
    pub pid: Option<u32>,
}

/// The gateway process's resident memory (bytes) and CPU time (user + system).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessSample {
    pub rss: u64,
    pub cpu: Duration,
}

/// Reads `/proc/<pid>/status` (VmRSS) and `/proc/<pid>/stat` (utime + stime, in USER_HZ = 100).
pub fn sample(pid: u32) -> Option<ProcessSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcessSample {
        rss: rss_kib.saturating_mul(1024),
        cpu: Duration::from_millis(utime.saturating_add(stime).saturating_mul(10)),
    })
}

enum Outcome {
    Joined(Duration),
    Failed(String),
}

async fn peer(
    url: String,
    join: String,
    until: tokio::time::Instant,
    outcomes: mpsc::UnboundedSender<Outcome>,
) {
    let started = Instant::now();
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async_with_config(url, Some(config), false),
    )
    .await;
    let mut ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            let _ = outcomes.send(Outcome::Failed(format!("connect: {e}")));
            return;
        }
        Err(_) => {
            let _ = outcomes.send(Outcome::Failed("connect: timeout".into()));
            return;
        }
    };
    if let Err(e) = ws.send(Message::text(join)).await {
        let _ = outcomes.send(Outcome::Failed(format!("send: {e}")));
        return;
    }
    let mut joined = false;
    loop {
        let next = tokio::select! {
            next = ws.next() => next,
            _ = tokio::time::sleep_until(until) => break,
        };
        match next {
            Some(Ok(Message::Text(text))) if !joined => {
                if text.contains("\"type\":\"peers\"") {
                    joined = true;
                    let _ = outcomes.send(Outcome::Joined(started.elapsed()));
                } else if text.contains("\"type\":\"error\"") {
                    let _ = outcomes.send(Outcome::Failed(text.to_string()));
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                if !joined {
                    let _ = outcomes.send(Outcome::Failed(format!("read: {e}")));
                }
                return;
            }
            None => {
                if !joined {
                    let _ = outcomes.send(Outcome::Failed("closed".into()));
                }
                return;
            }
        }
    }
    let _ = ws.close(None).await;
}

/// Runs the benchmark and returns its report (markdown).
pub async fn run(bench: TrackerBench) -> String {
    let before = bench.pid.and_then(sample);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    // Everybody stays until the last join plus the hold.
    let join_phase = Duration::from_secs_f64(bench.peers as f64 / bench.rate.max(0.001));
    let until = tokio::time::Instant::now() + join_phase + Duration::from_secs(30) + bench.hold;
    let url_base = format!("ws://{}/p2p/v1/ws?stream={}", bench.gateway, bench.stream);
    for i in 0..bench.peers {
        let due = started + Duration::from_secs_f64(i as f64 / bench.rate.max(0.001));
        tokio::time::sleep_until(due.into()).await;
        let rendition = i / bench.swarm_size.max(1);
        let join = format!(
            "{{\"type\":\"join\",\"v\":1,\"stream\":\"{}\",\"rendition\":{rendition},\"capabilities\":{{\"transports\":[\"quic\"],\"upload\":true}},\"quic\":{{\"addr\":\"127.0.0.1:4000\",\"fingerprint\":\"{}\"}}}}",
            bench.stream,
            "ab".repeat(32)
        );
        tokio::spawn(peer(url_base.clone(), join, until, tx.clone()));
    }
    drop(tx);
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
    let mut joined = 0usize;
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    while joined + failures.values().sum::<usize>() < bench.peers {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(Outcome::Joined(d))) => {
                joined += 1;
                if let Some(h) = latencies.as_mut() {
                    let _ = h.record(d.as_micros().clamp(1, 60_000_000) as u64);
                }
            }
            Ok(Some(Outcome::Failed(why))) => {
                let key: String = why.chars().take(80).collect();
                *failures.entry(key).or_default() += 1;
            }
            _ => break,
        }
    }
    let joins_took = started.elapsed();
    let after_joins = bench.pid.and_then(sample);
    tokio::time::sleep(bench.hold).await;
    let after_hold = bench.pid.and_then(sample);

    let mut out = String::new();
    let ms = |us: u64| us as f64 / 1000.0;
    out.push_str(&format!(
        "| peers asked | joined | failed | swarm size | join rate asked | join rate achieved |\n|---|---|---|---|---|---|\n| {} | {} | {} | {} | {}/s | {:.0}/s |\n\n",
        bench.peers,
        joined,
        failures.values().sum::<usize>(),
        bench.swarm_size,
        bench.rate,
        joined as f64 / joins_took.as_secs_f64().max(0.001)
    ));
    if let Some(h) = &latencies {
        out.push_str(&format!(
            "join (TCP connect → first `peers`): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\n",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max())
        ));
    }
    if let (Some(b), Some(j), Some(h)) = (before, after_joins, after_hold) {
        let n = joined.max(1) as f64;
        out.push_str(&format!(
            "gateway RSS: {:.1} MiB before, {:.1} MiB with all peers joined, {:.1} MiB after holding {:?}; per peer {:.1} KiB (joined), {:.1} KiB (held)\n\n",
            b.rss as f64 / 1048576.0,
            j.rss as f64 / 1048576.0,
            h.rss as f64 / 1048576.0,
            bench.hold,
            j.rss.saturating_sub(b.rss) as f64 / n / 1024.0,
            h.rss.saturating_sub(b.rss) as f64 / n / 1024.0,
        ));
        let join_cpu = j.cpu.saturating_sub(b.cpu);
        let hold_cpu = h.cpu.saturating_sub(j.cpu);
        out.push_str(&format!(
            "gateway CPU: {:.2} s for the joins ({:.0} µs per join, {:.0}% of one core over {:.1} s); {:.2} s while holding ({:.0}% of one core)\n\n",
            join_cpu.as_secs_f64(),
            join_cpu.as_secs_f64() * 1e6 / n,
            100.0 * join_cpu.as_secs_f64() / joins_took.as_secs_f64().max(0.001),
            joins_took.as_secs_f64(),
            hold_cpu.as_secs_f64(),
            100.0 * hold_cpu.as_secs_f64() / bench.hold.as_secs_f64().max(0.001),
        ));
    }
    for (why, n) in failures {
        out.push_str(&format!("- failed ×{n}: {why}\n"));
    }
    out
}
