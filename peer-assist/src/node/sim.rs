//! Many node cores wired together on virtual time: a gateway that publishes a live stream on a fixed
//! schedule (playlist, digests, HTTP with a latency and a rate), the gateway's own tracker registry
//! choosing whom to list to whom (its mesh, its pacing), and links with a latency and each node's
//! uplink rate. Everything is deterministic,
//! so swarm behaviour (liars, peers killed mid-transfer, slow peers, seeder rotation) is tested in
//! milliseconds.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::core::{CoreConfig, Input, LinkId, Mode, NodeCore, Output, WaiterId};
use super::http::HttpError;
use super::{NodeConfig, Source, Summary, TestBehaviour};
use crate::hls::{ListedSegment, SegmentList};
use crate::protocol::signal::{
    ClientMessage, DigestEntry, PeerInfo, QuicAddress, Report, ServerMessage, Transport,
};
use crate::tracker::registry::Member;
use crate::tracker::{Registry, SwarmKey, TrackerConfig};

/// The simulated live stream and network.
#[derive(Debug, Clone)]
pub struct World {
    pub segment_duration: Duration,
    pub segment_bytes: usize,
    /// Segments in the live playlist.
    pub window: u64,
    /// Gateway answer delay and rate (per request).
    pub http_latency: Duration,
    pub http_rate: f64,
    /// One-way delay of a peer link.
    pub link_latency: Duration,
    /// Every node's uplink, bytes/s (a node's own upload cap may be lower).
    pub uplink: f64,
    /// Delay from a segment's publication to its digest reaching the peers.
    pub digest_delay: Duration,
    /// Driven peers ask for each new segment this long after it is published...
    pub need_after: Duration,
    /// ... plus a part of this that differs from peer to peer (where in its reload cycle each
    /// driving player is when the segment appears: up to a target duration).
    pub need_spread: Duration,
    /// ... to play this long after it is published (the live latency).
    pub plays_after: Duration,
    /// Driven peers stop waiting for a segment after this long (zapping viewers).
    pub abandon_after: Option<Duration>,
    /// Segments the gateway answers 503 for.
    pub http_fail: Vec<u64>,
    /// Each chunk written also gives its node an `Input::PathRate` of its uplink (a perfect
    /// transport estimate; real QUIC estimates it from its congestion window).
    pub path_rates: bool,
}

impl Default for World {
    fn default() -> Self {
        Self {
            segment_duration: Duration::from_secs(2),
            segment_bytes: 200_000,
            window: 6,
            http_latency: Duration::from_millis(20),
            http_rate: 2_000_000.0,
            link_latency: Duration::from_millis(10),
            uplink: 5_000_000.0,
            digest_delay: Duration::from_millis(50),
            need_after: Duration::from_millis(100),
            need_spread: Duration::ZERO,
            plays_after: Duration::from_secs(5),
            abandon_after: None,
            http_fail: Vec::new(),
            path_rates: false,
        }
    }
}

const PLAYLIST: &str = "/live/0/index.m3u8";
/// The certificate fingerprint every simulated peer publishes and proves.
const SIM_FINGERPRINT: &str = "00000000000000000000000000000000000000000000000000000000000000aa";

pub(super) fn segment_id(n: u64) -> String {
    format!("/live/0/{n}.ts")
}

/// The bytes of segment `n`: deterministic, different for every segment, cheap to make in any
/// language (the browser engine's replay of the traces makes them too). The salt is added, not
/// xored: its low bits reach the byte kept through the carries (an xor of `n × 40503` never
/// reached it, and every segment below 415 had the same bytes).
pub(super) fn segment_bytes(n: u64, len: usize) -> Bytes {
    let salt = (n as u32).wrapping_mul(2_246_822_519);
    Bytes::from(
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(salt) >> 24) as u8)
            .collect::<Vec<u8>>(),
    )
}

pub(super) fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[derive(Debug)]
enum Event {
    Input(usize, Input),
    /// The gateway publishes segment `n`.
    Publish(u64),
    /// The tracker sends the peer lists that are due.
    Lists,
}

struct SimNode {
    core: NodeCore,
    alive: bool,
    joined: Instant,
    /// This node's uplink, bytes/s, if not the world's.
    uplink: Option<f64>,
    /// This node's access delay, one way (half its round trip), added to every link and HTTP
    /// exchange it takes part in.
    delay: Duration,
    uplink_free: Instant,
    /// Our link id → (remote node, the remote's id for the same link).
    links: HashMap<LinkId, (usize, LinkId)>,
    reports: Vec<Report>,
    /// Driven peers: what was delivered to them (segment id, source) or failed.
    delivered: Vec<(String, Result<Source, HttpError>)>,
    next_waiter: u64,
    summary: Option<Summary>,
}

/// One step of a recorded node: at `t` (since it joined), an input or a timeout, and what the core
/// asked for in answer.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub t: Duration,
    pub input: Option<Input>,
    pub outputs: Vec<Output>,
}

/// See the module docs.
pub struct Sim {
    pub world: World,
    t0: Instant,
    now: Instant,
    seq: u64,
    queue: BTreeMap<(Instant, u64), Event>,
    nodes: Vec<SimNode>,
    next_link: u64,
    /// Segments published so far: the newest sequence number.
    published: Option<u64>,
    /// The node whose steps are recorded, and its steps.
    recorded: Option<usize>,
    steps: Vec<Step>,
    tracker: Registry,
    swarm: SwarmKey,
    /// When an [`Event::Lists`] is queued for.
    lists_at: Option<Instant>,
    /// Chunk bytes sent: (departure, sender, bytes). Diagnostics.
    pub(super) chunks_sent: Vec<(Instant, usize, u64)>,
}

impl Sim {
    pub fn new(world: World) -> Self {
        let t0 = Instant::now() + Duration::from_secs(3600);
        let tracker = Registry::new(TrackerConfig::default());
        let swarm = tracker.swarm_key(PLAYLIST, None, 0);
        let mut sim = Self {
            world,
            t0,
            now: t0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes: Vec::new(),
            next_link: 1,
            published: None,
            recorded: None,
            steps: Vec::new(),
            tracker,
            swarm,
            lists_at: None,
            chunks_sent: Vec::new(),
        };
        // A live stream that has been running for a while: the first window is there at once.
        sim.published = Some(sim.world.window - 1);
        let next = sim.world.window;
        sim.schedule(t0 + sim.world.segment_duration, Event::Publish(next));
        sim
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Records every step of `node` from now on (see [`Sim::steps`]).
    pub fn record(&mut self, node: usize) {
        self.recorded = Some(node);
    }

    /// The recorded steps.
    pub(super) fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// `at`, rounded up to a whole millisecond of the simulation: every event happens on whole
    /// milliseconds, so a replay in another language computes the same instants exactly.
    fn quantize(&self, at: Instant) -> Instant {
        let since = at.saturating_duration_since(self.t0);
        let ms = since.as_nanos().div_ceil(1_000_000);
        self.t0 + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// When to wake a core that asked for `at`: a quarter millisecond later, on a whole
    /// millisecond. A replay computing `at` with other rounding still finds it due.
    fn wake_time(&self, at: Instant) -> Instant {
        self.quantize(at + Duration::from_micros(250))
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        let at = self.quantize(at);
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn input(&mut self, at: Instant, node: usize, input: Input) {
        self.schedule(at, Event::Input(node, input));
    }

    /// Hands node `i` an input (or its timeout) now and carries out what it asks.
    fn feed(&mut self, i: usize, input: Option<Input>) {
        let now = self.now;
        let recorded = self.recorded == Some(i);
        let step_input = if recorded { input.clone() } else { None };
        match input {
            Some(input) => self.nodes[i].core.handle(input, now),
            None => self.nodes[i].core.handle_timeout(now),
        }
        let mut outputs = Vec::new();
        while let Some(output) = self.nodes[i].core.poll_output() {
            if recorded {
                outputs.push(output.clone());
            }
            self.perform(i, output);
        }
        if recorded {
            let t = now.saturating_duration_since(self.nodes[i].joined);
            self.steps.push(Step {
                t,
                input: step_input,
                outputs,
            });
        }
    }

    /// The default configuration of a simulated peer.
    pub fn config(mode: Mode) -> CoreConfig {
        let mut base = NodeConfig::new("http://gateway", "/live/master.m3u8");
        base.driven = mode == Mode::Driven;
        base.seed = mode == Mode::Seed;
        base.core(vec![Transport::Quic])
    }

    /// A peer joins now; returns its index. Peer ids grow with the index.
    pub fn join(&mut self, config: CoreConfig) -> usize {
        let index = self.nodes.len();
        let me = format!("p{index:03}");
        let now = self.now;
        self.nodes.push(SimNode {
            core: NodeCore::new(config, &me, now),
            alive: true,
            joined: now,
            uplink: None,
            delay: Duration::ZERO,
            uplink_free: now,
            links: HashMap::new(),
            reports: Vec::new(),
            delivered: Vec::new(),
            next_waiter: 1,
            summary: None,
        });
        let welcome = ServerMessage::Welcome {
            v: 1,
            peer_id: me,
            swarm: "live#0".into(),
            playlist: PLAYLIST.into(),
            max_peers: 8,
        };
        self.feed(index, Some(Input::Signal(welcome)));
        let digests = self.digest_window();
        self.input(now, index, Input::Signal(digests));
        self.track(index);
        index
    }

    /// Node `i` joins the tracker under its current id and gets its first list; the lists this
    /// changed go out as the tracker paces them.
    fn track(&mut self, i: usize) {
        let me = self.nodes[i].core.me().to_owned();
        let member = Member {
            id: me.clone(),
            swarm: self.swarm.clone(),
            region: None,
            transports: vec![Transport::Quic],
            quic: Some(QuicAddress {
                addr: "127.0.0.1:1".into(),
                fingerprint: SIM_FINGERPRINT.to_owned(),
            }),
            upload: true,
            joined: 0,
            reputation: Default::default(),
            address: None,
            listed: Vec::new(),
            listed_at: None,
            key: None,
            upload_rate: self.nodes[i].core.config().capacity,
        };
        let now = self.now;
        if self.tracker.join(member, self.swarm.clone()).is_ok() {
            let peers = self.tracker.first_list(&me, now);
            self.input(now, i, Input::Signal(ServerMessage::Peers { peers }));
        }
        self.send_lists();
    }

    /// Node `i` leaves the tracker.
    fn untrack(&mut self, i: usize) {
        let me = self.nodes[i].core.me().to_owned();
        self.tracker.leave(&me);
        self.send_lists();
    }

    /// The lists due now, to their nodes; the next look is queued.
    fn send_lists(&mut self) {
        let now = self.now;
        let (due, next) = self.tracker.due_lists(now);
        for (id, peers) in due {
            let node = self.nodes.iter().position(|n| n.alive && n.core.me() == id);
            if let Some(j) = node {
                self.input(now, j, Input::Signal(ServerMessage::Peers { peers }));
            }
        }
        if let Some(at) = next {
            if self.lists_at.is_none_or(|queued| queued > at) {
                self.lists_at = Some(at);
                self.schedule(at, Event::Lists);
            }
        }
    }

    fn digest_entry(&self, n: u64) -> DigestEntry {
        let bytes = segment_bytes(n, self.world.segment_bytes);
        DigestEntry {
            id: segment_id(n),
            sha256: hex::encode(sha(&bytes)),
            size: bytes.len() as u64,
        }
    }

    fn digest_window(&self) -> ServerMessage {
        ServerMessage::Digests {
            playlist: PLAYLIST.into(),
            segments: self.window_range().map(|n| self.digest_entry(n)).collect(),
        }
    }

    fn window_range(&self) -> std::ops::Range<u64> {
        match self.published {
            Some(last) => last.saturating_sub(self.world.window - 1)..last + 1,
            None => 0..0,
        }
    }

    /// The live playlist now.
    fn playlist(&self) -> SegmentList {
        SegmentList {
            segments: self
                .window_range()
                .map(|n| ListedSegment {
                    sequence: n,
                    id: segment_id(n),
                    duration: self.world.segment_duration,
                })
                .collect(),
            target_duration: self.world.segment_duration,
            ended: false,
        }
    }

    /// Hands node `i` an input now, as if it came from outside the simulated world.
    pub fn inject(&mut self, i: usize, input: Input) {
        self.feed(i, Some(input));
    }

    /// A peer's tracker session starts over under a new id (a reconnect).
    pub fn rejoin(&mut self, node: usize) {
        self.untrack(node);
        let me = format!("{}r", self.nodes[node].core.me());
        let welcome = ServerMessage::Welcome {
            v: 1,
            peer_id: me,
            swarm: "live#0".into(),
            playlist: PLAYLIST.into(),
            max_peers: 8,
        };
        self.feed(node, Some(Input::Signal(welcome)));
        self.track(node);
    }

    /// `n` playing nodes on 275 kB segments and 40 ms links, with 1 MB/s uplinks or, `spread`,
    /// uplinks from 125 kB/s to 1.25 MB/s (1 to 10 Mbit/s) evenly over the nodes in a scrambled
    /// order: the swarm of the scale measurements.
    pub fn scale_swarm(n: usize, spread: bool) -> (Sim, Vec<usize>) {
        let world = World {
            uplink: 1_000_000.0,
            segment_bytes: 275_000,
            link_latency: Duration::from_millis(40),
            ..World::default()
        };
        let mut sim = Sim::new(world);
        let nodes: Vec<usize> = (0..n).map(|_| sim.join(Sim::config(Mode::Play))).collect();
        if spread && n > 1 {
            for &k in &nodes {
                let step = (k * 37 % n) as f64 / (n - 1) as f64;
                sim.set_uplink(k, 125_000.0 + step * 1_125_000.0);
            }
        }
        (sim, nodes)
    }

    /// The swarm of issue 14's check in the simulator: `n` playing nodes, uplinks from 1 to 10
    /// Mbit/s and access round trips from 20 to 150 ms, each spread evenly over the nodes in its
    /// own scrambled order, and segments of `segment_bytes` (575 kB: 2.3 Mbit/s, the top rendition
    /// the harness's players reach).
    pub fn real_swarm(n: usize, segment_bytes: usize) -> (Sim, Vec<usize>) {
        Self::real_swarm_of(n, segment_bytes, Sim::config(Mode::Play))
    }

    /// [`Sim::real_swarm`] of driven nodes, as the harness's viewers are: each player asks for a
    /// new segment at its own point in a 2 s reload cycle after it appears.
    pub fn real_driven_swarm(n: usize, segment_bytes: usize, prefetch: bool) -> (Sim, Vec<usize>) {
        let mut config = Sim::config(Mode::Driven);
        config.prefetch_announced = prefetch;
        let (mut sim, nodes) = Self::real_swarm_of(n, segment_bytes, config);
        sim.world.need_spread = Duration::from_secs(2);
        sim.world.need_after = Duration::from_millis(250);
        (sim, nodes)
    }

    fn real_swarm_of(n: usize, segment_bytes: usize, config: CoreConfig) -> (Sim, Vec<usize>) {
        let world = World {
            segment_bytes,
            link_latency: Duration::ZERO,
            ..World::default()
        };
        let mut sim = Sim::new(world);
        let nodes: Vec<usize> = (0..n).map(|_| sim.join(config.clone())).collect();
        let spread = |k: usize, prime: usize| (k * prime % n) as f64 / (n.max(2) - 1) as f64;
        for &k in &nodes {
            sim.set_uplink(k, 125_000.0 + spread(k, 37) * 1_125_000.0);
            sim.set_rtt(k, Duration::from_secs_f64(0.020 + spread(k, 53) * 0.130));
        }
        (sim, nodes)
    }

    /// Node `node`'s access round trip from now on: half of it is added each way to its links
    /// and its HTTP exchanges.
    pub fn set_rtt(&mut self, node: usize, rtt: Duration) {
        self.nodes[node].delay = rtt / 2;
    }

    /// One-way delay of a frame from node `i` to node `j`.
    fn one_way(&self, i: usize, j: usize) -> Duration {
        self.world.link_latency + self.nodes[i].delay + self.nodes[j].delay
    }

    /// Node `node`'s uplink from now on, bytes/s.
    pub fn set_uplink(&mut self, node: usize, rate: f64) {
        self.nodes[node].uplink = Some(rate);
    }

    /// A peer dies: no leave, its links break.
    pub fn kill(&mut self, node: usize) {
        let now = self.now;
        let summary = self.nodes[node].core.summary(now);
        self.untrack(node);
        let n = &mut self.nodes[node];
        n.alive = false;
        n.summary = Some(summary);
        let links: Vec<(usize, LinkId)> = n.links.drain().map(|(_, remote)| remote).collect();
        let at = now + self.world.link_latency;
        for (remote, remote_link) in links {
            self.nodes[remote].links.remove(&remote_link);
            self.input(at, remote, Input::LinkDown { link: remote_link });
        }
    }

    /// A peer leaves properly.
    pub fn stop(&mut self, node: usize) {
        let now = self.now;
        self.feed(node, Some(Input::Stop));
        let summary = self.nodes[node].core.summary(now);
        self.nodes[node].summary = Some(summary);
        self.untrack(node);
        self.nodes[node].alive = false;
    }

    /// The summary of a node (at its end, or now).
    pub fn summary(&mut self, node: usize) -> Summary {
        let now = self.now;
        match &self.nodes[node].summary {
            Some(s) => s.clone(),
            None => self.nodes[node].core.summary(now),
        }
    }

    pub fn reports(&self, node: usize) -> &[Report] {
        &self.nodes[node].reports
    }

    /// What a driven peer was handed: (segment id, where it came from, or the error).
    pub fn delivered(&self, node: usize) -> &[(String, Result<Source, HttpError>)] {
        &self.nodes[node].delivered
    }

    pub fn uploads(&self, node: usize) -> usize {
        self.nodes[node].core.active_uploads()
    }

    /// Runs for `span` of virtual time.
    pub fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        self.run_until(until, |_| false);
    }

    /// Runs until `until` or until `stop` says so (checked after every step).
    pub fn run_until(&mut self, until: Instant, mut stop: impl FnMut(&Sim) -> bool) -> bool {
        loop {
            let queued = self.queue.keys().next().map(|(t, _)| *t);
            let timer = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.alive)
                .filter_map(|(i, n)| n.core.poll_timeout().map(|t| (self.wake_time(t), i)))
                .min();
            let next = match (queued, timer) {
                (Some(q), Some((t, _))) => q.min(t),
                (Some(q), None) => q,
                (None, Some((t, _))) => t,
                (None, None) => return false,
            };
            if next > until {
                self.now = until;
                return false;
            }
            self.now = self.now.max(next);
            if queued == Some(next) {
                let Some((_, event)) = self.queue.pop_first() else {
                    continue;
                };
                self.on_event(event);
            } else if let Some((_, i)) = timer {
                self.feed(i, None);
            }
            if stop(self) {
                return true;
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::Input(i, input) => {
                if !self.nodes[i].alive {
                    return;
                }
                // Frames on a link that closed meanwhile are lost.
                if let Input::Frame { link, .. } | Input::Written { link, .. } = &input {
                    if !self.nodes[i].links.contains_key(link) {
                        return;
                    }
                }
                self.feed(i, Some(input));
            }
            Event::Publish(n) => {
                self.published = Some(n);
                let entry = self.digest_entry(n);
                let at = now + self.world.digest_delay;
                let playlist = self.playlist();
                for i in 0..self.nodes.len() {
                    let message = ServerMessage::Digests {
                        playlist: PLAYLIST.into(),
                        segments: vec![entry.clone()],
                    };
                    self.input(at, i, Input::Signal(message));
                    if self.nodes[i].core.mode() == Mode::Driven && self.nodes[i].alive {
                        // The driving player reloads the playlist and asks for the new segment.
                        let phase = (i * 7919 % 1000) as f64 / 1000.0;
                        let ask = now
                            + self.world.need_after
                            + Duration::from_millis(7 * i as u64)
                            + self.world.need_spread.mul_f64(phase);
                        self.input(ask, i, Input::Playlist(Ok(playlist.clone())));
                        let waiter = WaiterId(self.nodes[i].next_waiter);
                        self.nodes[i].next_waiter += 1;
                        let need = Input::Need {
                            waiter,
                            id: segment_id(n),
                            plays_at: self.quantize(now + self.world.plays_after),
                            p2p: true,
                        };
                        self.input(ask, i, need);
                        if let Some(after) = self.world.abandon_after {
                            self.input(ask + after, i, Input::Abandon { waiter });
                        }
                    }
                }
                self.schedule(now + self.world.segment_duration, Event::Publish(n + 1));
            }
            Event::Lists => {
                self.lists_at = None;
                self.send_lists();
            }
        }
    }

    /// Carries out one output of node `i`.
    fn perform(&mut self, i: usize, output: Output) {
        let now = self.now;
        match output {
            Output::Connect { peer, .. } => {
                let target = self
                    .nodes
                    .iter()
                    .position(|n| n.alive && n.core.me() == peer);
                let at = now + self.world.link_latency * 2 + self.nodes[i].delay * 2;
                match target {
                    Some(j) => {
                        let at = at + self.nodes[j].delay * 2;
                        let (a, b) = (LinkId(self.next_link), LinkId(self.next_link + 1));
                        self.next_link += 2;
                        self.nodes[i].links.insert(a, (j, b));
                        self.nodes[j].links.insert(b, (i, a));
                        let me = self.nodes[i].core.me().to_owned();
                        let max_frame = crate::transport::MAX_FRAME_LEN + 5;
                        // Mutual TLS: each side proved the certificate the tracker lists.
                        let fingerprint = Some(SIM_FINGERPRINT.to_owned());
                        self.input(
                            at,
                            i,
                            Input::LinkUp {
                                link: a,
                                peer,
                                initiated: true,
                                max_frame,
                                fingerprint: fingerprint.clone(),
                            },
                        );
                        self.input(
                            at,
                            j,
                            Input::LinkUp {
                                link: b,
                                peer: me,
                                initiated: false,
                                max_frame,
                                fingerprint,
                            },
                        );
                    }
                    None => self.input(at, i, Input::ConnectFailed { peer }),
                }
            }
            Output::Send { link, frame } => {
                let Some(&(j, remote)) = self.nodes[i].links.get(&link) else {
                    return;
                };
                let len = frame.encoded_len() as f64;
                let rate = self.nodes[i].uplink.unwrap_or(self.world.uplink);
                let start = self.nodes[i].uplink_free.max(now);
                let departs = self.quantize(start + Duration::from_secs_f64(len / rate));
                self.nodes[i].uplink_free = departs;
                if let crate::protocol::frame::Frame::Chunk { data, .. } = &frame {
                    self.chunks_sent.push((departs, i, data.len() as u64));
                }
                let written = Input::Written {
                    link,
                    bytes: len as u64,
                };
                self.input(departs, i, written);
                if self.world.path_rates {
                    let sample = Input::PathRate {
                        link,
                        rate: rate as u64,
                    };
                    self.input(departs, i, sample);
                }
                let frame = Input::Frame {
                    link: remote,
                    frame,
                };
                let arrives = departs + self.one_way(i, j);
                self.input(arrives, j, frame);
            }
            Output::Close { link, .. } => {
                if let Some((j, remote)) = self.nodes[i].links.remove(&link) {
                    if self.nodes[j].links.remove(&remote).is_some() {
                        let at = now + self.one_way(i, j);
                        self.input(at, j, Input::LinkDown { link: remote });
                    }
                }
            }
            Output::HttpGet { id, from } => {
                let n = id
                    .rsplit('/')
                    .next()
                    .and_then(|f| f.strip_suffix(".ts"))
                    .and_then(|n| n.parse::<u64>().ok());
                let result = match n {
                    Some(n) if self.world.http_fail.contains(&n) => {
                        Err(HttpError::Status(http::StatusCode::SERVICE_UNAVAILABLE))
                    }
                    Some(n) if self.published.is_some_and(|p| n <= p) => {
                        let bytes = segment_bytes(n, self.world.segment_bytes);
                        Ok(bytes.slice((from as usize).min(bytes.len())..))
                    }
                    _ => Err(HttpError::Absent(http::StatusCode::NOT_FOUND)),
                };
                let len = result.as_ref().map_or(0, |b| b.len());
                let at = now
                    + self.world.http_latency
                    + self.nodes[i].delay * 2
                    + Duration::from_secs_f64(len as f64 / self.world.http_rate);
                self.input(at, i, Input::Http { id, from, result });
            }
            Output::HttpCancel { .. } => {}
            Output::FetchPlaylist => {
                let playlist = self.playlist();
                let at = now + self.world.http_latency + self.nodes[i].delay * 2;
                self.input(at, i, Input::Playlist(Ok(playlist)));
            }
            Output::Verify { ticket, bytes } => {
                let sha256 = sha(&bytes);
                self.input(now, i, Input::Verified { ticket, sha256 });
            }
            Output::Signal(ClientMessage::Report(report)) => {
                self.nodes[i].reports.push(report);
            }
            Output::Signal(_) => {}
            Output::Deliver { id, result, .. } => {
                let result = result.map(|d| d.source);
                self.nodes[i].delivered.push((id, result));
            }
        }
    }
}

/// Every accepted segment is byte-identical to the gateway's.
fn assert_authentic(sim: &mut Sim, node: usize) {
    let len = sim.world.segment_bytes;
    let summary = sim.summary(node);
    for record in &summary.log {
        let n: u64 = record
            .id
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_suffix(".ts"))
            .and_then(|n| n.parse().ok())
            .expect("a segment id");
        assert_eq!(
            record.sha256,
            hex::encode(sha(&segment_bytes(n, len))),
            "{record:?}"
        );
    }
}

/// Bytes from peers and in all, counting segments accepted after `after` only.
/// Offload of `nodes` after their first 10 s, and how many segments came after their deadline.
fn offload_and_late(sim: &mut Sim, nodes: &[usize]) -> (f64, usize) {
    let (mut p2p, mut all, mut late) = (0, 0, 0);
    for &k in nodes {
        let s = sim.summary(k);
        let (p, a) = bytes_after(&s, Duration::from_secs(10));
        p2p += p;
        all += a;
        late += s.log.iter().filter(|r| !r.in_time).count();
    }
    (p2p as f64 / all as f64, late)
}

fn bytes_after(summary: &Summary, after: Duration) -> (u64, u64) {
    summary
        .log
        .iter()
        .filter(|r| r.at_ms >= after.as_millis() as u64)
        .fold((0, 0), |(p2p, all), r| {
            let from_peer = if r.source == Source::P2p { r.bytes } else { 0 };
            (p2p + from_peer, all + r.bytes)
        })
}

#[cfg(test)]
mod tests {
    use super::super::trace::{self, Content, Writer};
    use super::*;
    use crate::protocol::frame::Frame;
    use serde_json::{json, Value};

    fn play() -> CoreConfig {
        Sim::config(Mode::Play)
    }

    /// Every segment has its own bytes, so a core that verified or delivered the wrong segment
    /// would be caught.
    #[test]
    fn segments_differ() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..2000 {
            assert!(
                seen.insert(segment_bytes(n, 64)),
                "segment {n} repeats another"
            );
        }
    }

    /// The gateway publishes a segment's digest when it sees the segment: a playing node
    /// reloads its playlist then, not up to a target duration later, so a new segment becomes a
    /// need while the most time is left to get it from peers.
    #[test]
    fn a_digest_of_a_new_segment_reloads_the_playlist_at_once() {
        let mut sim = Sim::new(World::default());
        let nodes: Vec<usize> = (0..3).map(|_| sim.join(play())).collect();
        sim.record(nodes[1]);
        sim.run_for(Duration::from_secs(20));
        let steps = sim.steps();
        let (mut digests, mut reloaded, mut in_flight) = (0, 0, false);
        for (i, step) in steps.iter().enumerate() {
            if matches!(step.input, Some(Input::Playlist(_))) {
                in_flight = false;
            }
            if step
                .outputs
                .iter()
                .any(|o| matches!(o, Output::FetchPlaylist))
            {
                in_flight = true;
            }
            let Some(Input::Signal(ServerMessage::Digests { .. })) = &step.input else {
                continue;
            };
            if step.t < Duration::from_secs(4) {
                continue; // before the first playlist: nothing to reload yet
            }
            digests += 1;
            // A reload already on its way lists the segment too.
            let reload = in_flight
                || steps[i..]
                    .iter()
                    .take_while(|s| s.t <= step.t + Duration::from_millis(1))
                    .any(|s| s.outputs.iter().any(|o| matches!(o, Output::FetchPlaylist)));
            reloaded += usize::from(reload);
        }
        assert!(digests >= 7, "{digests} digests seen");
        assert_eq!(
            reloaded, digests,
            "every new segment's digest reloads the playlist"
        );
        assert_eq!(sim.summary(nodes[1]).missed_deadlines, 0);
    }

    /// A node that fell back to HTTP for one segment does not seed the next: it waits for peers
    /// again, and goes to HTTP at its deadline. Here uplinks are too slow for any peer to deliver,
    /// so the junior falls back for every segment, each time at its deadline, never at once.
    /// (Seeding after a fallback was tried and cost the harness 6-8 points of offload:
    /// docs/BENCHMARKS.md, "Twelfth step".)
    #[test]
    fn a_node_that_fell_back_waits_for_peers_again() {
        let mut sim = Sim::new(World {
            uplink: 10_000.0,
            ..World::default()
        });
        let nodes: Vec<usize> = (0..3).map(|_| sim.join(play())).collect();
        sim.record(nodes[2]);
        sim.run_for(Duration::from_secs(30));
        let mut digest_at = HashMap::new();
        let (mut early, mut fetches) = (0, 0);
        for step in sim.steps() {
            if let Some(Input::Signal(ServerMessage::Digests { segments, .. })) = &step.input {
                for entry in segments {
                    digest_at.entry(entry.id.clone()).or_insert(step.t);
                }
            }
            for output in &step.outputs {
                let Output::HttpGet { id, from: 0 } = output else {
                    continue;
                };
                let Some(&t) = digest_at.get(id) else {
                    continue;
                };
                if t < Duration::from_secs(6) {
                    continue; // the window at join
                }
                fetches += 1;
                // A fallback starts 4.0-4.7 s after the digest here, at the node's deadline.
                early += usize::from(step.t - t < Duration::from_millis(3500));
            }
        }
        assert!(fetches >= 10, "{fetches} fetches");
        // With the old rule, 7 of 10.
        assert_eq!(
            early, 0,
            "{early} of {fetches} HTTP fetches well before the deadline"
        );
        for &k in &nodes {
            let summary = sim.summary(k);
            assert_eq!(summary.missed_deadlines, 0);
            // Every HTTP byte is counted under the rule that fetched it.
            assert_eq!(summary.http_bytes_by_cause.total(), summary.http_bytes);
        }
        // The eldest seeds; the junior's HTTP is all fallback, none of it seeding.
        assert!(sim.summary(nodes[0]).http_bytes_by_cause.seeder > 0);
        let junior = sim.summary(nodes[2]).http_bytes_by_cause;
        assert!(junior.total() > 0 && junior.seeder == 0, "{junior:?}");
    }

    /// The youngest of five nodes declares five times the others' capacity: it is the swarm's
    /// HTTP-first seeder, not the eldest. Nodes that upload measure their uplinks from the
    /// transport's path rates (perfect here), but a declared capacity stands: they report none.
    #[test]
    fn the_fastest_uplink_seeds_and_uplinks_are_measured_while_uploading() {
        let mut sim = Sim::new(World {
            path_rates: true,
            ..World::default()
        });
        let nodes: Vec<usize> = (0..5)
            .map(|k| {
                let mut config = play();
                config.capacity = Some(if k == 4 { 5_000_000 } else { 1_000_000 });
                sim.join(config)
            })
            .collect();
        for &k in &nodes[..4] {
            sim.set_uplink(k, 1_000_000.0);
        }
        sim.run_for(Duration::from_secs(40));
        let http: Vec<u64> = nodes
            .iter()
            .map(|&k| sim.summary(k).http_segments)
            .collect();
        eprintln!("HTTP segments by node: {http:?}");
        assert!(
            http[4] >= 15 && http[..4].iter().all(|&h| h * 3 < http[4]),
            "the fast node seeds: {http:?}"
        );
        for &k in &nodes {
            let s = sim.summary(k);
            assert_eq!(s.missed_deadlines, 0, "{s:#?}");
            let uplink = if k == 4 { 5_000_000 } else { 1_000_000 };
            if s.uploaded_bytes > 1_000_000 {
                assert_eq!(s.upload_capacity, Some(uplink), "node {k}");
            }
            assert!(sim.reports(k).iter().all(|r| r.upload_rate.is_none()));
        }
        assert!(
            nodes
                .iter()
                .filter(|&&k| sim.summary(k).upload_capacity.is_some())
                .count()
                >= 2
        );
    }

    /// Nodes that declare nothing report the uplink they measure while uploading, and only
    /// samples taken while an upload runs on the link count: a node that never uploads has none.
    #[test]
    fn measured_uplinks_are_reported() {
        let mut sim = Sim::new(World {
            path_rates: true,
            ..World::default()
        });
        let nodes: Vec<usize> = (0..4).map(|_| sim.join(play())).collect();
        sim.set_uplink(nodes[1], 700_000.0);
        let mut quiet = play();
        quiet.upload = false;
        let silent = sim.join(quiet);
        sim.run_for(Duration::from_secs(30));
        let mut measured = 0;
        for &k in &nodes {
            let s = sim.summary(k);
            let uplink = if k == nodes[1] { 700_000 } else { 5_000_000 };
            if s.uploaded_bytes > 1_000_000 {
                measured += 1;
                assert_eq!(s.upload_capacity, Some(uplink), "node {k}");
                assert!(
                    sim.reports(k).iter().any(|r| r.upload_rate == Some(uplink)),
                    "node {k} reports it"
                );
            }
        }
        assert!(measured >= 2, "{measured} nodes uploaded");
        assert_eq!(sim.summary(silent).upload_capacity, None);
        assert!(sim.reports(silent).iter().all(|r| r.upload_rate.is_none()));
    }

    /// A node whose uplink is known uploads below it (`UPLINK_PACE`), in bursts of at most
    /// `PACE_BURST`: here the eldest declares 400 kB/s on a 5 MB/s link, and in no second does
    /// it send more than 90% of what it declared (plus one burst and one chunk of slack).
    #[test]
    fn uploads_are_paced_below_the_known_uplink() {
        use crate::node::core::{PACE_BURST, UPLINK_PACE};
        use crate::protocol::frame::RECOMMENDED_CHUNK_LEN;
        let mut sim = Sim::new(World::default());
        let declared = 400_000u64;
        let mut config = play();
        config.capacity = Some(declared);
        let eldest = sim.join(config);
        for _ in 0..4 {
            sim.join(play());
        }
        sim.run_for(Duration::from_secs(30));
        let sent: Vec<(Instant, u64)> = sim
            .chunks_sent
            .iter()
            .filter(|c| c.1 == eldest)
            .map(|c| (c.0, c.2))
            .collect();
        let total: u64 = sent.iter().map(|c| c.1).sum();
        assert!(total >= 2_000_000, "the eldest uploaded {total} bytes");
        let pace = declared as f64 * UPLINK_PACE;
        let bound = pace + pace * PACE_BURST.as_secs_f64() + 2.0 * RECOMMENDED_CHUNK_LEN as f64;
        let busiest = sent
            .iter()
            .map(|&(from, _)| {
                sent.iter()
                    .filter(|&&(at, _)| at >= from && at < from + Duration::from_secs(1))
                    .map(|c| c.1)
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);
        assert!(
            busiest as f64 <= bound,
            "{busiest} bytes in one second, paced at {pace} B/s"
        );
        assert!(
            busiest as f64 >= pace * 0.8,
            "it sent at its pace when busy: {busiest} bytes in its busiest second"
        );
    }

    #[test]
    fn honest_swarm_of_five_shares_and_never_misses() {
        let mut sim = Sim::new(World::default());
        let nodes: Vec<usize> = (0..5).map(|_| sim.join(play())).collect();
        sim.run_for(Duration::from_secs(40));
        let (mut p2p, mut all) = (0, 0);
        for &n in &nodes {
            let s = sim.summary(n);
            assert_eq!(s.missed_deadlines, 0, "{s:#?}");
            assert_eq!(s.mismatches, 0);
            assert!(s.segments >= 18, "node {n} played {} segments", s.segments);
            assert!(s.p2p_received_bytes >= s.p2p_bytes, "{s:#?}");
            assert_authentic(&mut sim, n);
            let (p, a) = bytes_after(&s, Duration::from_secs(8));
            p2p += p;
            all += a;
        }
        // One HTTP-first seeder per segment: at most 80% from peers, and close to it.
        let offload = p2p as f64 / all as f64;
        eprintln!("offload of the swarm of five after 8 s: {offload:.3}");
        assert!(offload >= 0.7, "offload {offload:.3}");
        // Every peer reports, and the reports add up to what it got.
        for &n in &nodes {
            let s = sim.summary(n);
            let reported: u64 = sim.reports(n).iter().map(|r| r.p2p_bytes).sum();
            assert!(reported <= s.p2p_bytes, "{reported} vs {}", s.p2p_bytes);
            assert!(
                s.p2p_bytes == 0 || reported > 0,
                "node {n} reported nothing"
            );
        }
    }

    /// The mismatches `node` reported against `peer`, over all its reports.
    fn mismatches_reported(sim: &Sim, node: usize, peer: &str) -> u64 {
        sim.reports(node)
            .iter()
            .flat_map(|r| &r.peers)
            .filter(|p| p.peer_id == peer)
            .map(|p| p.mismatch)
            .sum()
    }

    #[test]
    fn a_liar_is_caught_after_one_segment() {
        let mut sim = Sim::new(World::default());
        let mut liar = play();
        liar.test = TestBehaviour {
            forge_receipts: Default::default(),
            lie: true,
            slow_upload: None,
            honest_uploads: 0,
        };
        // The liar is the most senior peer: it fetches fresh segments first and offers them.
        let liar = sim.join(liar);
        let honest: Vec<usize> = (0..3).map(|_| sim.join(play())).collect();
        sim.run_for(Duration::from_secs(30));
        let liar_id = sim.summary(liar).peer_id;
        assert!(sim.summary(liar).uploaded_bytes > 0, "the liar did upload");
        for &n in &honest {
            let s = sim.summary(n);
            assert_authentic(&mut sim, n);
            assert_eq!(s.missed_deadlines, 0, "{s:#?}");
            assert!(
                s.mismatches <= 1,
                "caught at its first lie: {}",
                s.mismatches
            );
            assert!(s.peers_dropped_for_lying.iter().all(|p| *p == liar_id));
            // Whoever took a segment from it reported it.
            if s.mismatches == 1 {
                assert_eq!(mismatches_reported(&sim, n, &liar_id), 1);
            }
        }
        let caught: u64 = honest.iter().map(|&n| sim.summary(n).mismatches).sum();
        assert!(caught >= 1, "somebody asked the liar");
        // Peers still share among themselves.
        let p2p: u64 = honest.iter().map(|&n| sim.summary(n).p2p_bytes).sum();
        assert!(p2p > 0);
    }

    /// The recorded node's steps: (when it first sent a chunk of `id` to a peer, when it asked
    /// to hash `id` as received from a peer).
    fn forwarded_before_verified(sim: &Sim, id: &str) -> (Option<Duration>, Option<Duration>) {
        let mut served = std::collections::HashSet::new();
        let mut fetching = std::collections::HashSet::new();
        let (mut first_chunk, mut verify) = (None, None);
        for step in sim.steps() {
            let mut completes = false;
            match &step.input {
                Some(Input::Frame {
                    frame:
                        Frame::Request {
                            request_id,
                            segment,
                            ..
                        },
                    ..
                }) if segment == id => {
                    served.insert(*request_id);
                }
                Some(Input::Frame {
                    frame:
                        Frame::Chunk {
                            request_id,
                            offset,
                            data,
                        },
                    ..
                }) if fetching.contains(request_id) => {
                    completes = *offset as usize + data.len() == sim.world.segment_bytes;
                }
                _ => {}
            }
            for output in &step.outputs {
                match output {
                    Output::Send {
                        frame: Frame::Chunk { request_id, .. },
                        ..
                    } if served.contains(request_id) => {
                        first_chunk.get_or_insert(step.t);
                    }
                    Output::Send {
                        frame:
                            Frame::Request {
                                request_id,
                                segment,
                                ..
                            },
                        ..
                    } if segment == id => {
                        fetching.insert(*request_id);
                    }
                    Output::Verify { .. } if completes => {
                        verify.get_or_insert(step.t);
                    }
                    _ => {}
                }
            }
        }
        (first_chunk, verify)
    }

    /// Three nodes, the seeder on a slow uplink: the second node forwards what it receives from
    /// the seeder to the third before it has the whole segment (its last byte only once verified),
    /// and everyone gets authentic bytes in time.
    #[test]
    fn a_segment_is_forwarded_while_it_arrives() {
        let mut sim = Sim::new(World {
            uplink: 5_000_000.0,
            ..World::default()
        });
        let seeder = sim.join(play());
        sim.set_uplink(seeder, 150_000.0);
        let relay = sim.join(play());
        let last = sim.join(play());
        sim.record(relay);
        sim.run_for(Duration::from_secs(30));
        let mut forwarded = 0;
        for n in 6..18 {
            let id = segment_id(n);
            if let (Some(chunk), Some(verify)) = forwarded_before_verified(&sim, &id) {
                if chunk < verify {
                    forwarded += 1;
                }
            }
        }
        assert!(
            forwarded >= 3,
            "segments forwarded before verified: {forwarded}"
        );
        for n in [seeder, relay, last] {
            let s = sim.summary(n);
            assert_eq!(s.missed_deadlines, 0, "{s:#?}");
            assert_eq!(s.mismatches, 0, "{s:#?}");
            assert_authentic(&mut sim, n);
        }
        assert!(sim.summary(last).p2p_bytes > 0);
    }

    /// The seeder earns trust with honest uploads, then lies: the relay forwards its bytes as
    /// they arrive, finds the lie when it hashes the whole, and withdraws what it forwarded
    /// (Absent) before the last byte: the third node never uses a wrong byte and never takes the
    /// honest relay for the liar.
    #[test]
    fn a_relay_withdraws_what_a_liar_sent_it() {
        let mut sim = Sim::new(World {
            uplink: 5_000_000.0,
            ..World::default()
        });
        let mut liar = play();
        liar.test.lie = true;
        liar.test.honest_uploads = 4;
        let seeder = sim.join(liar);
        sim.set_uplink(seeder, 150_000.0);
        let relay = sim.join(play());
        let last = sim.join(play());
        sim.record(relay);
        sim.run_for(Duration::from_secs(30));
        // The relay answered a request (Response, chunks) and then withdrew it (Absent).
        let mut answered = std::collections::HashSet::new();
        let mut withdrawn = 0;
        for step in sim.steps() {
            for output in &step.outputs {
                match output {
                    Output::Send {
                        frame: Frame::Response { request_id, .. },
                        ..
                    } => {
                        answered.insert(*request_id);
                    }
                    Output::Send {
                        frame: Frame::Absent { request_id },
                        ..
                    } if answered.contains(request_id) => withdrawn += 1,
                    _ => {}
                }
            }
        }
        assert!(withdrawn >= 1, "the relay withdrew a forwarded segment");
        let liar_id = sim.summary(seeder).peer_id;
        for n in [relay, last] {
            let s = sim.summary(n);
            assert_eq!(s.missed_deadlines, 0, "{s:#?}");
            assert!(
                s.peers_dropped_for_lying.iter().all(|p| *p == liar_id),
                "node {n} dropped an honest peer: {s:#?}"
            );
            assert_authentic(&mut sim, n);
        }
        assert!(sim.summary(relay).mismatches >= 1 || sim.summary(last).mismatches >= 1);
    }

    /// A slow liar: every transfer from it is taken over by HTTP, and the whole fails the check.
    /// The first time it may have been an honest relay of someone else's lie (not banned); the
    /// second time it is banned and reported, and the viewer never plays a wrong byte.
    #[test]
    fn a_slow_liar_is_banned_at_its_second_wrong_prefix() {
        let mut sim = Sim::new(World::default());
        let mut liar = Sim::config(Mode::Seed);
        liar.test.lie = true;
        liar.test.slow_upload = Some(40_000);
        let liar = sim.join(liar);
        let viewer = sim.join(play());
        sim.run_for(Duration::from_secs(30));
        let liar_id = sim.summary(liar).peer_id;
        let s = sim.summary(viewer);
        assert_eq!(s.missed_deadlines, 0, "{s:#?}");
        assert_eq!(s.mismatches, 2, "one strike, then the ban: {s:#?}");
        assert_eq!(s.peers_dropped_for_lying, vec![liar_id.clone()]);
        assert_eq!(
            mismatches_reported(&sim, viewer, &liar_id),
            1,
            "reported once, at the ban"
        );
        assert_authentic(&mut sim, viewer);
    }

    #[test]
    fn a_peer_killed_mid_transfer_is_replaced_by_http_in_time() {
        // A slow uplink keeps a transfer running long enough to be cut.
        let mut sim = Sim::new(World {
            uplink: 150_000.0,
            ..World::default()
        });
        let seed = sim.join(Sim::config(Mode::Seed));
        let viewer = sim.join(play());
        let deadline = sim.now() + Duration::from_secs(30);
        let cut = sim.run_until(deadline, |s| s.uploads(seed) > 0);
        assert!(cut, "the seed started uploading");
        sim.kill(seed);
        sim.run_for(Duration::from_secs(20));
        let s = sim.summary(viewer);
        assert!(s.failures.disconnect >= 1, "{s:#?}");
        assert_eq!(s.missed_deadlines, 0, "{s:#?}");
        assert!(s.segments >= 8);
        assert_authentic(&mut sim, viewer);
    }

    #[test]
    fn a_slow_peer_is_raced_by_http() {
        let mut sim = Sim::new(World::default());
        let mut slow = Sim::config(Mode::Seed);
        slow.test.slow_upload = Some(40_000);
        let seed = sim.join(slow);
        let viewer = sim.join(play());
        sim.run_for(Duration::from_secs(30));
        let s = sim.summary(viewer);
        assert_eq!(s.missed_deadlines, 0, "{s:#?}");
        assert!(
            s.failures.timeout >= 1,
            "the slow peer was given up on: {s:#?}"
        );
        assert!(s.http_bytes > 0);
        assert!(sim.summary(seed).uploaded_bytes > 0, "it was asked");
        // Its verified prefix counts; nothing arrives that the peer did not send.
        assert!(s.p2p_bytes > 0, "{s:#?}");
        assert!(s.p2p_received_bytes >= s.p2p_bytes, "{s:#?}");
        assert!(s.p2p_received_bytes <= sim.summary(seed).uploaded_bytes);
        assert!(
            s.p2p_late_bytes <= s.p2p_received_bytes - s.p2p_bytes,
            "{s:#?}"
        );
        assert_authentic(&mut sim, viewer);
    }

    #[test]
    fn when_the_seeder_leaves_the_next_senior_takes_over() {
        let mut sim = Sim::new(World::default());
        let first = sim.join(play());
        let second = sim.join(play());
        let third = sim.join(play());
        sim.run_for(Duration::from_secs(16));
        let before = sim.summary(second);
        // While the first seeds, the second gets fresh segments from peers.
        let (p2p_before, _) = bytes_after(&before, Duration::from_secs(8));
        assert!(p2p_before > 0, "{before:#?}");
        sim.stop(first);
        let left_at = sim.elapsed();
        sim.run_for(Duration::from_secs(16));
        let second = sim.summary(second);
        let third = sim.summary(third);
        assert_eq!(second.missed_deadlines + third.missed_deadlines, 0);
        // The second is now the senior: fresh segments come to it over HTTP...
        let late = |s: &Summary, source| {
            s.log
                .iter()
                .filter(|r| r.at_ms > (left_at + Duration::from_secs(4)).as_millis() as u64)
                .filter(|r| r.source == source)
                .count()
        };
        assert!(late(&second, Source::Http) >= 4, "{second:#?}");
        // ... and the third gets them from the second.
        assert!(late(&third, Source::P2p) >= 4, "{third:#?}");
    }

    /// The trace worlds: small segments (three chunks) so the traces stay short.
    fn trace_world() -> World {
        World {
            segment_bytes: 40_123,
            ..World::default()
        }
    }

    /// A driven peer as the browser engine is one: it forwards nothing before it is verified.
    fn driven() -> CoreConfig {
        let mut config = Sim::config(Mode::Driven);
        config.forward_arriving = false;
        config.prefetch_announced = false;
        config
    }

    /// Runs `sim` for `span`, recording `node` from its join, and returns its trace.
    fn trace(name: &str, about: &str, sim: &mut Sim, node: usize, span: Duration) -> Value {
        sim.run_for(span);
        let config = sim.nodes[node].core.config().clone();
        let mut writer = Writer::new(
            Content {
                segment_bytes: sim.world.segment_bytes,
            },
            sim.nodes[node].joined,
        );
        let steps: Vec<Value> = sim.steps().iter().map(|s| writer.step(s)).collect();
        json!({
            "name": name,
            "about": about,
            "me": sim.nodes[node].core.me(),
            "config": trace::config(&config),
            "steps": steps,
        })
    }

    /// A swarm of driven peers; `record` is recorded from its join.
    fn driven_swarm(world: World, configs: Vec<CoreConfig>, record: usize) -> Sim {
        let mut sim = Sim::new(world);
        for (i, config) in configs.into_iter().enumerate() {
            if i == record {
                sim.record(i);
            }
            sim.join(config);
            sim.run_for(Duration::from_millis(300));
        }
        sim
    }

    fn all_traces() -> Vec<Value> {
        let span = Duration::from_secs(14);
        let mut traces = Vec::new();
        let mut sim = driven_swarm(trace_world(), vec![driven(), driven(), driven()], 1);
        traces.push(trace(
            "driven swarm of three, the second peer",
            "Needs for each new live segment; the senior peer seeds them over HTTP, the others \
             take them from peers, verify them and pass them on; Have frames, uploads, reports.",
            &mut sim,
            1,
            span,
        ));
        let mut sim = driven_swarm(trace_world(), vec![driven(), driven(), driven()], 0);
        traces.push(trace(
            "driven swarm of three, the senior peer",
            "The seeder rule: the most senior peer fetches fresh live segments over HTTP first \
             and uploads them.",
            &mut sim,
            0,
            span,
        ));
        let mut liar = driven();
        liar.test.lie = true;
        let mut sim = driven_swarm(trace_world(), vec![liar, driven(), driven()], 1);
        traces.push(trace(
            "a liar",
            "The senior peer corrupts what it uploads: its first bad segment is caught by the \
             digest, never delivered, the liar is banned, reported and the segment fetched again.",
            &mut sim,
            1,
            span,
        ));
        let mut slow = driven();
        slow.test.slow_upload = Some(20_000);
        let mut sim = driven_swarm(trace_world(), vec![slow, driven()], 1);
        traces.push(trace(
            "a slow peer",
            "The senior peer uploads at 20 kB/s: transfers from it are raced or replaced by HTTP \
             (Range requests for the rest) in time.",
            &mut sim,
            1,
            span,
        ));
        let mut slow_liar = driven();
        slow_liar.test.slow_upload = Some(20_000);
        slow_liar.test.lie = true;
        let mut sim = driven_swarm(trace_world(), vec![slow_liar, driven()], 1);
        traces.push(trace(
            "a slow liar",
            "The senior peer uploads wrong bytes at 20 kB/s: HTTP takes over the rest, the whole \
             fails the check and is fetched whole over HTTP; the first time the peer is kept (it \
             may have relayed someone else's lie), the second time it is banned and reported.",
            &mut sim,
            1,
            span,
        ));
        let world = World {
            http_fail: vec![8, 9],
            ..trace_world()
        };
        let mut sim = driven_swarm(world, vec![driven(), driven()], 0);
        traces.push(trace(
            "gateway errors",
            "The gateway answers 503 for two segments: the callers get the error.",
            &mut sim,
            0,
            span,
        ));
        let ahead = || {
            let mut config = driven();
            config.prefetch_announced = true;
            config
        };
        let late_players = World {
            need_spread: Duration::from_millis(1500),
            ..trace_world()
        };
        for (node, name, about) in [
            (
                1,
                "announced segments, a peer",
                "Players ask for each new segment up to 1.5 s after its digest: a peer fetches                  what a digest announces from peers before its player asks (a prefetch, never                  HTTP), and delivers it from the store when the player does.",
            ),
            (
                0,
                "announced segments, the seeder",
                "The senior peer fetches what a digest announces over HTTP at once, before its                  player asks, and uploads it.",
            ),
        ] {
            let mut sim = driven_swarm(late_players.clone(), vec![ahead(), ahead(), ahead()], node);
            traces.push(trace(name, about, &mut sim, node, span));
        }
        let mut sim = driven_swarm(trace_world(), vec![driven(), driven(), driven()], 1);
        sim.run_for(Duration::from_secs(6));
        sim.rejoin(1);
        traces.push(trace(
            "rejoin",
            "After 6 s the peer's tracker session starts over under a new id: its links close, \
             what it waits for and holds stays, it links again and goes on.",
            &mut sim,
            1,
            Duration::from_secs(8),
        ));
        let mut sim = driven_swarm(trace_world(), vec![driven()], 0);
        sim.run_for(Duration::from_secs(1));
        impostor(&mut sim);
        traces.push(trace(
            "an impostor",
            "Links whose proven certificate is not the one the tracker published for the peer id \
             they claim are closed; the genuine one is kept.",
            &mut sim,
            0,
            Duration::from_secs(1),
        ));
        let world = World {
            abandon_after: Some(Duration::from_millis(1200)),
            uplink: 30_000.0,
            ..trace_world()
        };
        let mut sim = driven_swarm(world, vec![driven(), driven()], 1);
        traces.push(trace(
            "zapping",
            "Callers give up on each segment after 1.2 s, while slow uplinks still send it: the \
             running transfer may finish into the store \
             for a grace period, then stops.",
            &mut sim,
            1,
            span,
        ));
        traces
    }

    /// A listed peer `p900`, then a link claiming to be it with another certificate, then one with
    /// its own.
    fn impostor(sim: &mut Sim) {
        let fingerprint = |c: &str| c.repeat(64);
        let listed = PeerInfo {
            key: None,
            upload_rate: None,
            peer_id: "p900".into(),
            region: None,
            transports: vec![Transport::Quic],
            quic: Some(crate::protocol::signal::QuicAddress {
                addr: "127.0.0.1:9".into(),
                fingerprint: fingerprint("b"),
            }),
        };
        sim.inject(
            0,
            Input::Signal(ServerMessage::Peers {
                peers: vec![listed],
            }),
        );
        for (link, claimed) in [(900, "c"), (901, "B")] {
            sim.inject(
                0,
                Input::LinkUp {
                    link: LinkId(link),
                    peer: "p900".into(),
                    initiated: false,
                    max_frame: 70_005,
                    fingerprint: Some(fingerprint(claimed)),
                },
            );
        }
    }

    #[test]
    fn a_peer_cannot_pass_for_another() {
        let mut sim = driven_swarm(trace_world(), vec![driven()], 0);
        sim.run_for(Duration::from_secs(1));
        impostor(&mut sim);
        let steps = sim.steps();
        let closes: Vec<&Output> = steps
            .iter()
            .flat_map(|s| &s.outputs)
            .filter(|o| matches!(o, Output::Close { .. }))
            .collect();
        assert_eq!(
            closes,
            [&Output::Close {
                link: LinkId(900),
                reason: "identity"
            }]
        );
        assert_eq!(
            sim.nodes[0].core.link_count(),
            1,
            "the genuine link, in any case"
        );
        assert_eq!(sim.summary(0).identity_mismatches, 1);
    }

    /// A dialer this node was never told of (its list named this node first) is not closed: lists
    /// are capped and sent at different times, so a newcomer often dials seniors that do not list
    /// it. A listed peer with another key still is (above).
    #[test]
    fn a_dialer_the_tracker_did_not_list_here_is_kept() {
        let mut sim = driven_swarm(trace_world(), vec![driven()], 0);
        sim.run_for(Duration::from_secs(1));
        sim.inject(
            0,
            Input::LinkUp {
                link: LinkId(950),
                peer: "p950".into(),
                initiated: false,
                max_frame: 70_005,
                fingerprint: Some("d".repeat(64)),
            },
        );
        let closes = sim
            .steps()
            .iter()
            .flat_map(|s| &s.outputs)
            .filter(|o| matches!(o, Output::Close { .. }))
            .count();
        assert_eq!(closes, 0);
        assert_eq!(sim.nodes[0].core.link_count(), 1);
        assert_eq!(sim.summary(0).identity_mismatches, 0);
    }

    #[test]
    fn driven_peers_share_and_liars_and_errors_reach_the_callers() {
        let mut sim = driven_swarm(trace_world(), vec![driven(), driven(), driven()], 99);
        sim.run_for(Duration::from_secs(20));
        let from_peers = sim
            .delivered(2)
            .iter()
            .filter(|(_, r)| r == &Ok(Source::P2p))
            .count();
        assert!(from_peers >= 5, "{:?}", sim.delivered(2));
        assert!(sim.delivered(0).iter().all(|(_, r)| r.is_ok()));

        let world = World {
            http_fail: vec![8],
            ..trace_world()
        };
        let mut sim = driven_swarm(world, vec![driven()], 99);
        sim.run_for(Duration::from_secs(20));
        let failed: Vec<&String> = sim
            .delivered(0)
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(id, _)| id)
            .collect();
        assert_eq!(failed, [&segment_id(8)], "{:?}", sim.delivered(0));
    }

    #[test]
    fn node_traces_match_the_vectors() {
        let traces = all_traces();
        let document = json!({
            "description": "Node traces (docs/PROTOCOL.md, peer-assist node::core): a node core in \
                driven mode, given 'input' (or a timeout when 'timeout' is true) at 't' ms after it \
                joined, must ask for exactly 'outputs', in order. Generated by the Rust core \
                (peer-assist node::sim, test node_traces_match_the_vectors; \
                P2PA_UPDATE_VECTORS=1 rewrites this file) and replayed by the browser engine's core.",
            "content": "Bytes from outside the core are {segment, from, to}: bytes from..to of \
                segment N, whose byte i is ((i * 2654435761) + (N * 2246822519)) >> 24 in 32-bit \
                unsigned arithmetic; with 'corrupt', every 97th byte of that slice, from its first, \
                is xored with 0x5a; or {hex}. Bytes the core produces are {len, sha256}.",
            "traces": traces,
        });
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/node_traces.json"
        );
        if std::env::var_os("P2PA_UPDATE_VECTORS").is_some() {
            std::fs::write(path, render(&document)).unwrap();
            return;
        }
        let committed: Value = serde_json::from_str(
            &std::fs::read_to_string(path).expect("the committed node traces"),
        )
        .unwrap();
        if committed != document {
            let (ours, theirs) = (&document["traces"], &committed["traces"]);
            for (i, (a, b)) in ours
                .as_array()
                .unwrap()
                .iter()
                .zip(theirs.as_array().unwrap())
                .enumerate()
            {
                for (j, (x, y)) in a["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(b["steps"].as_array().unwrap())
                    .enumerate()
                {
                    assert_eq!(
                        x, y,
                        "trace {i} ({}) step {j} differs from the committed one",
                        a["name"]
                    );
                }
            }
            panic!("the node traces differ from tests/vectors/node_traces.json (P2PA_UPDATE_VECTORS=1 rewrites it)");
        }
    }

    /// JSON with one line per step.
    fn render(document: &Value) -> String {
        let mut out = String::from("{\n");
        for key in ["description", "content"] {
            out.push_str(&format!("  {:?}: {},\n", key, document[key]));
        }
        out.push_str("  \"traces\": [\n");
        let traces = document["traces"].as_array().unwrap();
        for (i, t) in traces.iter().enumerate() {
            out.push_str("    {\n");
            for key in ["name", "about", "me", "config"] {
                out.push_str(&format!("      {:?}: {},\n", key, t[key]));
            }
            out.push_str("      \"steps\": [\n");
            let steps = t["steps"].as_array().unwrap();
            for (j, step) in steps.iter().enumerate() {
                let comma = if j + 1 < steps.len() { "," } else { "" };
                out.push_str(&format!("        {step}{comma}\n"));
            }
            out.push_str("      ]\n");
            out.push_str(if i + 1 < traces.len() {
                "    },\n"
            } else {
                "    }\n"
            });
        }
        out.push_str("  ]\n}\n");
        out
    }
}

#[cfg(test)]
mod tight_uplinks {
    use super::*;

    /// Offload after the first 10 s, missed deadlines and the failures of 20 playing nodes whose
    /// uplinks carry `uplink` bytes/s, with 275 kB segments (1.1 Mbit/s).
    fn swarm(uplink: f64) -> (f64, u64, super::super::Failures) {
        let world = World {
            uplink,
            segment_bytes: 275_000,
            ..World::default()
        };
        let mut sim = Sim::new(world);
        let nodes: Vec<usize> = (0..20).map(|_| sim.join(Sim::config(Mode::Play))).collect();
        sim.run_for(Duration::from_secs(60));
        let (mut p2p, mut all, mut missed) = (0, 0, 0);
        let mut failures = super::super::Failures::default();
        for &n in &nodes {
            let s = sim.summary(n);
            let (p, a) = bytes_after(&s, Duration::from_secs(10));
            p2p += p;
            all += a;
            missed += s.missed_deadlines;
            failures.timeout += s.failures.timeout;
            failures.absent += s.failures.absent;
        }
        (p2p as f64 / all as f64, missed, failures)
    }

    /// Not a check, a measurement (docs/BENCHMARKS.md, "Why it still collapses at scale"):
    /// offload and who uploads, in swarms of 20 and 100 playing nodes with 1 MB/s uplinks and
    /// 40 ms links. `cargo test --release -p peer-assist --lib swarm_scale -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn swarm_scale() {
        // (nodes, uplinks spread from 1 to 10 Mbit/s instead of 1 MB/s each)
        // (nodes, uplinks spread from 1 to 10 Mbit/s instead of 1 MB/s each, segment bytes with
        // round trips spread from 20 to 150 ms)
        let cases = [
            (20usize, false, None),
            (100, false, None),
            (100, true, None),
            (100, true, Some(275_000)),
            (100, true, Some(575_000)),
        ];
        for (n, spread, real) in cases {
            let (mut sim, nodes) = match real {
                Some(bytes) => Sim::real_swarm(n, bytes),
                None => Sim::scale_swarm(n, spread),
            };
            sim.run_for(Duration::from_secs(40));
            let (mut p2p, mut all, mut timeouts) = (0, 0, 0);
            let (mut uploaded, mut received) = (0, 0);
            let mut uploaded_mb = Vec::new();
            for &k in &nodes {
                let s = sim.summary(k);
                uploaded += s.uploaded_bytes;
                received += s.p2p_bytes;
                let (p, a) = bytes_after(&s, Duration::from_secs(10));
                p2p += p;
                all += a;
                timeouts += s.failures.timeout;
                uploaded_mb.push(s.uploaded_bytes / 1_000_000);
            }
            let http_segments: Vec<u64> = nodes
                .iter()
                .map(|&k| sim.summary(k).http_segments)
                .collect();
            eprintln!("http segments in join order: {http_segments:?}");
            let uploaders = uploaded_mb.iter().filter(|&&m| m > 0).count();
            eprintln!(
                "{n} nodes{}{}: offload {:.3}, {timeouts} timeouts, {uploaders} nodes uploaded, {} MB uploaded for {} MB received from peers; MB uploaded in join order: {uploaded_mb:?}",
                if spread { " (uplinks 1-10 Mbit/s)" } else { "" },
                real.map_or(String::new(), |b| format!(", RTT 20-150 ms, {b} B segments")),
                p2p as f64 / all as f64,
                uploaded / 1_000_000,
                received / 1_000_000,
            );
        }
        for prefetch in [false, true] {
            let (mut sim, nodes) = Sim::real_driven_swarm(100, 575_000, prefetch);
            sim.run_for(Duration::from_secs(40));
            let (offload, late) = offload_and_late(&mut sim, &nodes);
            let (mut up, mut got, mut f) = (0, 0, crate::protocol::signal::Failures::default());
            for &k in &nodes {
                let s = sim.summary(k);
                up += s.uploaded_bytes;
                got += s.p2p_bytes;
                f.timeout += s.failures.timeout;
                f.absent += s.failures.absent;
            }
            eprintln!(
                "  {} MB uploaded, {} MB from peers, {f:?}",
                up / 1_000_000,
                got / 1_000_000
            );
            eprintln!(
                "100 driven nodes (uplinks 1-10 Mbit/s), RTT 20-150 ms, 575000 B segments, asked 0.25-2.25 s after they appear, {}: offload {:.3}, {late} late",
                if prefetch { "announced segments fetched ahead" } else { "fetched when asked" },
                offload,
            );
        }
    }

    /// A busy holder is asked again only after a backoff that doubles with each busy answer in a
    /// row (`busy_backoff`). With a fixed 250 ms backoff, requesters that know no rates kept
    /// asking their first few (busy) holders while others sat idle: in this swarm, offload 0.618
    /// with 4.0 Absent answers per node and segment (now 0.681 and 2.1).
    #[test]
    fn requesters_spread_over_holders_when_the_first_are_busy() {
        let (mut sim, nodes) = Sim::real_swarm(30, 575_000);
        sim.run_for(Duration::from_secs(30));
        let (mut p2p, mut all, mut absent, mut missed) = (0, 0, 0, 0);
        for &k in &nodes {
            let s = sim.summary(k);
            let (p, a) = bytes_after(&s, Duration::from_secs(10));
            p2p += p;
            all += a;
            absent += s.failures.absent;
            missed += s.missed_deadlines;
        }
        let offload = p2p as f64 / all as f64;
        let per_segment = absent as f64 / (nodes.len() as f64 * 15.0);
        eprintln!("offload {offload:.3}, {per_segment:.1} Absent per node and segment");
        assert_eq!(missed, 0, "distribution first: nobody stalls");
        assert!(offload >= 0.65, "offload {offload:.3}");
        assert!(
            per_segment < 3.0,
            "{per_segment:.1} Absent per node and segment"
        );
    }

    /// A driven node fetches a segment a digest announced before its player asks for it (from
    /// peers; a seeder over HTTP): the player learns of it at its next reload, up to a target
    /// duration later, and that time is the swarm's to spread it.
    #[test]
    fn announced_segments_are_fetched_before_the_player_asks() {
        let run = |prefetch: bool| {
            let (mut sim, nodes) = Sim::real_driven_swarm(30, 575_000, prefetch);
            sim.run_for(Duration::from_secs(30));
            for &k in &nodes {
                assert_authentic(&mut sim, k);
            }
            offload_and_late(&mut sim, &nodes)
        };
        let (when_asked, late_asked) = run(false);
        let (ahead, late_ahead) = run(true);
        eprintln!("offload {when_asked:.3} fetched when asked, {ahead:.3} fetched ahead");
        assert_eq!(
            (late_asked, late_ahead),
            (0, 0),
            "distribution first: nothing late"
        );
        assert!(ahead >= when_asked + 0.15, "{when_asked:.3} -> {ahead:.3}");
    }

    /// A node serves its uploads one after another and says Absent while busy; a requester keeps
    /// a busy peer as a holder and asks it again after a backoff (`BUSY_BACKOFF`). When every node
    /// answered every request at once (chunks in turn), a seeder asked by many shared its uplink
    /// among all of them, every transfer finished late, and this swarm got 7.6% of its bytes from
    /// peers at 5 MB/s uplinks and 0% at 600 kB/s (4.8 Mbit/s), with every viewer on time only
    /// thanks to HTTP.
    #[test]
    fn uploads_in_turn_keep_a_swarm_with_tight_uplinks_sharing() {
        let (wide, missed, _) = swarm(5_000_000.0);
        assert_eq!(missed, 0);
        assert!(wide >= 0.9, "5 MB/s uplinks: offload {wide:.3}");
        let (tight, missed, failures) = swarm(600_000.0);
        eprintln!("offload: {wide:.3} at 5 MB/s, {tight:.3} at 600 kB/s ({failures:?})");
        assert_eq!(missed, 0, "distribution first: nobody stalls");
        // 39% with uploads in turn alone; 52% once a busy peer is asked again after a backoff
        // instead of being forgotten as a holder.
        assert!(tight >= 0.45, "600 kB/s uplinks: offload {tight:.3}");
    }
}

/// A diagnostic, not a check: how one live segment spreads through a 100-node swarm (when each
/// node got segments 12 and 15, from whom: `h` HTTP, `p` peers), the failure counts, the share of
/// all uplinks in use and how many nodes send, per 250 ms after segment 12 appears, and every
/// step of node `WATCH` (default 60) around segment 12. `SPREAD=1` spreads the uplinks from 1 to
/// 10 Mbit/s; `REAL=575000` takes [`Sim::real_swarm`] with segments of that many bytes instead
/// (with `DRIVEN=1`, [`Sim::real_driven_swarm`], announced segments fetched ahead).
/// `cargo test --release -p peer-assist --lib propagation -- --ignored --nocapture`
#[cfg(test)]
mod propagation {
    use super::*;

    #[test]
    #[ignore]
    fn propagation_timeline() {
        let real = std::env::var("REAL").ok().and_then(|b| b.parse().ok());
        let driven = std::env::var("DRIVEN").is_ok();
        let (mut sim, nodes) = match real {
            Some(bytes) if driven => Sim::real_driven_swarm(100, bytes, true),
            Some(bytes) => Sim::real_swarm(100, bytes),
            None => Sim::scale_swarm(100, std::env::var("SPREAD").is_ok()),
        };
        let watch: usize = std::env::var("WATCH")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(60);
        sim.record(watch);
        sim.run_for(Duration::from_secs(40));
        let id12 = segment_id(12);
        for step in sim.steps() {
            let t = step.t.as_millis() as i64 - 14_000;
            if !(-500..6000).contains(&t) {
                continue;
            }
            let input = format!("{:?}", step.input);
            let outs: Vec<String> = step
                .outputs
                .iter()
                .map(|o| format!("{o:?}"))
                .filter(|o| o.contains(&id12) || o.contains("Request") || o.contains("HttpGet"))
                .map(|o| o.chars().take(160).collect())
                .collect();
            let relevant =
                input.contains(&id12) || input.contains("Absent") || input.contains("Response");
            if relevant || !outs.is_empty() {
                eprintln!(
                    "{t} in={} out={outs:?}",
                    input.chars().take(200).collect::<String>()
                );
            }
        }
        let mut f = crate::protocol::signal::Failures::default();
        for &k in &nodes {
            let s = sim.summary(k);
            f.timeout += s.failures.timeout;
            f.absent += s.failures.absent;
            f.disconnect += s.failures.disconnect;
        }
        eprintln!("failures {f:?}");
        // Uplink use per 250 ms from segment 12's publication: bytes sent / capacity, senders.
        let t12 = sim.t0 + Duration::from_secs(14);
        let capacity: f64 = nodes
            .iter()
            .map(|&k| sim.nodes[k].uplink.unwrap_or(sim.world.uplink))
            .sum();
        let mut line = Vec::new();
        for bin in 0..24u32 {
            let from = t12 + Duration::from_millis(250) * bin;
            let to = from + Duration::from_millis(250);
            let (mut bytes, mut senders) = (0u64, std::collections::HashSet::new());
            for &(at, k, b) in &sim.chunks_sent {
                if at >= from && at < to {
                    bytes += b;
                    senders.insert(k);
                }
            }
            line.push(format!(
                "{}ms:{:.0}%/{}",
                bin * 250,
                bytes as f64 / (capacity * 0.25) * 100.0,
                senders.len()
            ));
        }
        eprintln!("uplink use: {}", line.join(" "));
        for seg in [12u64, 15] {
            let id = segment_id(seg);
            let mut rows = Vec::new();
            for &k in &nodes {
                let s = sim.summary(k);
                if let Some(r) = s.log.iter().find(|r| r.id == id) {
                    rows.push((r.at_ms, r.source.label(), k));
                }
            }
            rows.sort();
            let published = (seg - 5) * 2000;
            let line: Vec<String> = rows
                .iter()
                .map(|(t, s, k)| format!("{}:{}{}", t.saturating_sub(published), &s[..1], k))
                .collect();
            eprintln!("segment {seg}: {}", line.join(" "));
        }
    }
}
