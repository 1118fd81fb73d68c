//! An emulated access link (pure: no I/O, explicit time): the uplink and downlink of one viewer,
//! each a rate-limited FIFO queue behind a fixed one-way delay, plus random loss, as `tc netem`
//! with `rate` would model them. The socket and stream wrappers in this module ask it when each
//! datagram or chunk of bytes leaves or arrives.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one viewer's link is like. `LinkProfile::default()` is an ideal link (no cap, no delay,
/// no loss, reachable).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkProfile {
    /// Uplink capacity in bits per second (None: unlimited).
    pub uplink_bps: Option<u64>,
    /// Downlink capacity in bits per second (None: unlimited).
    pub downlink_bps: Option<u64>,
    /// Round-trip time this link adds (half each way).
    pub rtt: Duration,
    /// Probability that a datagram sent over the uplink is lost, in [0, 1].
    pub loss: f64,
    /// Behind a NAT that accepts no unsolicited inbound traffic: datagrams arrive only from
    /// addresses this side sent to first, so it can dial out but never be dialled.
    pub unreachable: bool,
}

impl LinkProfile {
    /// Whether it changes anything at all.
    pub fn is_ideal(&self) -> bool {
        self.uplink_bps.is_none()
            && self.downlink_bps.is_none()
            && self.rtt.is_zero()
            && self.loss <= 0.0
            && !self.unreachable
    }
}

/// The largest backlog a lane queues before it drops (a router's buffer, in time at the lane's
/// rate): packets that would wait longer are tail-dropped, which is what a real bottleneck does
/// and what makes congestion control see it.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(250);

/// One direction of a link: bytes are serialised at `rate_bps` one after another, then travel
/// for `delay`.
#[derive(Debug, Clone)]
pub struct Lane {
    rate_bps: Option<u64>,
    delay: Duration,
    /// When the lane finishes serialising what it has accepted so far.
    busy_until: Option<Instant>,
}

impl Lane {
    pub fn new(rate_bps: Option<u64>, delay: Duration) -> Self {
        Self {
            rate_bps: rate_bps.filter(|r| *r > 0),
            delay,
            busy_until: None,
        }
    }

    /// How long `bytes` take to serialise.
    fn serialisation(&self, bytes: usize) -> Duration {
        match self.rate_bps {
            Some(rate) => Duration::from_secs_f64(bytes as f64 * 8.0 / rate as f64),
            None => Duration::ZERO,
        }
    }

    /// Accepts `bytes` entering the lane at `now` and returns when they come out of its far end,
    /// or `None` when the queue already holds more than [`MAX_QUEUE_DELAY`] (dropped).
    pub fn admit(&mut self, now: Instant, bytes: usize) -> Option<Instant> {
        let start = self.busy_until.filter(|b| *b > now).unwrap_or(now);
        if start.saturating_duration_since(now) > MAX_QUEUE_DELAY {
            return None;
        }
        let done = start + self.serialisation(bytes);
        self.busy_until = Some(done);
        Some(done + self.delay)
    }

    /// Like [`Lane::admit`] for a byte stream that must not lose anything (TCP: the sender's
    /// window would hold the bytes back instead): never drops.
    pub fn admit_stream(&mut self, now: Instant, bytes: usize) -> Instant {
        let start = self.busy_until.filter(|b| *b > now).unwrap_or(now);
        let done = start + self.serialisation(bytes);
        self.busy_until = Some(done);
        done + self.delay
    }
}

/// A small deterministic generator (SplitMix64) for loss decisions.
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One viewer's link, shared by everything that viewer sends and receives (its QUIC socket and
/// its HTTP connections), so that they compete for the same capacity.
pub struct Link {
    pub profile: LinkProfile,
    state: Mutex<State>,
}

struct State {
    up: Lane,
    down: Lane,
    dice: Dice,
    /// Addresses this side sent datagrams to (for [`LinkProfile::unreachable`]).
    contacted: HashSet<SocketAddr>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// What happens to a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It comes out at this instant.
    Deliver(Instant),
    /// Lost on the way (random loss).
    Lost,
    /// Dropped at a full queue.
    Dropped,
    /// Filtered by the NAT of an unreachable viewer.
    Filtered,
}

impl Link {
    /// A link with `profile`; `seed` makes its random loss reproducible.
    pub fn new(profile: LinkProfile, seed: u64) -> Self {
        let half = profile.rtt / 2;
        Self {
            profile,
            state: Mutex::new(State {
                up: Lane::new(profile.uplink_bps, half),
                down: Lane::new(profile.downlink_bps, profile.rtt - half),
                dice: Dice::new(seed),
                contacted: HashSet::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A datagram of `bytes` sent at `now` to `to`.
    pub fn send_datagram(&self, now: Instant, to: SocketAddr, bytes: usize) -> Fate {
        let mut s = self.state();
        if self.profile.unreachable {
            s.contacted.insert(to);
        }
        if self.profile.loss > 0.0 && s.dice.unit() < self.profile.loss {
            return Fate::Lost;
        }
        match s.up.admit(now, bytes) {
            Some(at) => Fate::Deliver(at),
            None => Fate::Dropped,
        }
    }

    /// A datagram of `bytes` from `from` reaching this viewer's side of the link at `now`.
    pub fn receive_datagram(&self, now: Instant, from: SocketAddr, bytes: usize) -> Fate {
        let mut s = self.state();
        if self.profile.unreachable && !s.contacted.contains(&from) {
            return Fate::Filtered;
        }
        match s.down.admit(now, bytes) {
            Some(at) => Fate::Deliver(at),
            None => Fate::Dropped,
        }
    }

    /// `bytes` of a TCP stream reaching this viewer at `now` (an HTTP answer): when it can read
    /// them. The whole round trip is charged here (the request went out undelayed), and a lost
    /// segment costs one more round trip (a fast retransmit), drawn per 1448-byte segment.
    pub fn receive_stream(&self, now: Instant, bytes: usize) -> Instant {
        let mut s = self.state();
        let segments = bytes.div_ceil(1448).max(1);
        let mut extra = Duration::ZERO;
        if self.profile.loss > 0.0 {
            for _ in 0..segments {
                if s.dice.unit() < self.profile.loss {
                    extra = self.profile.rtt.max(Duration::from_millis(1));
                    break;
                }
            }
        }
        // The uplink half of the round trip is added to the downlink's own half.
        s.down.admit_stream(now, bytes) + self.profile.rtt / 2 + extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_lane_serialises_at_its_rate_then_adds_its_delay() {
        let t0 = Instant::now();
        // 8 Mbit/s: 1000 bytes take 1 ms.
        let mut lane = Lane::new(Some(8_000_000), Duration::from_millis(10));
        let out: Vec<Duration> = (0..3).map(|_| lane.admit(t0, 1000).unwrap() - t0).collect();
        assert_eq!(
            out,
            [
                Duration::from_millis(11),
                Duration::from_millis(12),
                Duration::from_millis(13)
            ]
        );
        // After the queue drained, a packet waits for nothing but itself.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            lane.admit(later, 1000).unwrap() - later,
            Duration::from_millis(11)
        );
    }

    #[test]
    fn a_full_queue_drops_and_a_stream_is_never_dropped() {
        let t0 = Instant::now();
        // 1 Mbit/s: 1250 bytes take 10 ms; 25 of them fill the 250 ms buffer.
        let mut lane = Lane::new(Some(1_000_000), Duration::ZERO);
        let accepted = (0..40).filter(|_| lane.admit(t0, 1250).is_some()).count();
        assert_eq!(accepted, 26, "250 ms of backlog, then tail drop");
        let mut stream = Lane::new(Some(1_000_000), Duration::ZERO);
        let last = (0..40)
            .map(|_| stream.admit_stream(t0, 1250))
            .last()
            .unwrap();
        assert_eq!(last - t0, Duration::from_millis(400));
    }

    #[test]
    fn an_unlimited_lane_only_delays() {
        let t0 = Instant::now();
        let mut lane = Lane::new(None, Duration::from_millis(30));
        for _ in 0..1000 {
            assert_eq!(lane.admit(t0, 65_000), Some(t0 + Duration::from_millis(30)));
        }
    }

    #[test]
    fn loss_is_close_to_its_rate_and_reproducible() {
        let t0 = Instant::now();
        let profile = LinkProfile {
            loss: 0.05,
            ..LinkProfile::default()
        };
        let run = |seed| {
            let link = Link::new(profile, seed);
            (0..20_000)
                .filter(|_| link.send_datagram(t0, addr(1), 100) == Fate::Lost)
                .count()
        };
        let lost = run(7);
        assert!((800..1200).contains(&lost), "{lost} of 20000 at 5%");
        assert_eq!(run(7), lost, "same seed, same losses");
    }

    #[test]
    fn an_unreachable_viewer_hears_only_from_whom_it_spoke_to() {
        let t0 = Instant::now();
        let link = Link::new(
            LinkProfile {
                unreachable: true,
                rtt: Duration::from_millis(40),
                ..LinkProfile::default()
            },
            1,
        );
        assert_eq!(link.receive_datagram(t0, addr(9), 100), Fate::Filtered);
        assert_eq!(
            link.send_datagram(t0, addr(9), 100),
            Fate::Deliver(t0 + Duration::from_millis(20))
        );
        assert_eq!(
            link.receive_datagram(t0, addr(9), 100),
            Fate::Deliver(t0 + Duration::from_millis(20))
        );
        assert_eq!(link.receive_datagram(t0, addr(10), 100), Fate::Filtered);
        let open = Link::new(LinkProfile::default(), 1);
        assert_eq!(open.receive_datagram(t0, addr(10), 100), Fate::Deliver(t0));
    }

    #[test]
    fn a_stream_answer_costs_the_round_trip_and_the_downlink_time() {
        let t0 = Instant::now();
        let link = Link::new(
            LinkProfile {
                downlink_bps: Some(8_000_000),
                rtt: Duration::from_millis(100),
                ..LinkProfile::default()
            },
            1,
        );
        // 100 kB at 8 Mbit/s: 100 ms, plus the 100 ms round trip.
        assert_eq!(
            link.receive_stream(t0, 100_000) - t0,
            Duration::from_millis(200)
        );
    }
}
