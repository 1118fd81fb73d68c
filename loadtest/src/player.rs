//! The player brain of a simulated HLS viewer (hls.js-like), as a pure state machine.
//!
//! An async shell (elsewhere) owns the I/O: it asks [`Player::poll`] what to do, performs the HTTP
//! requests, and reports completions back ([`Player::playlist_loaded`], [`Player::segment_loaded`],
//! and the `*_failed` variants). This module does no I/O and never reads a clock: every call takes
//! the current time as an [`Instant`], and the playback state is computed lazily from it (between
//! events the buffer drains linearly while playing, so a stall begins exactly at the instant the
//! buffer hit zero, not at the next call).
//!
//! Rendition indices in [`Action`]s and in the completion calls refer to the renditions sorted by
//! bandwidth ascending (see [`Player::renditions`]), not to the order given to [`Player::new`].
//!
//! # Rules as implemented
//!
//! * **Buffer and playhead.** The buffer is the sum of the durations of downloaded but not yet played
//!   segments; it drains in real time while [`PlaybackState::Playing`].
//! * **Starting → Playing** when the buffer reaches [`PlayerConfig::startup_buffer`], or when the
//!   whole (ended) presentation is buffered. Startup time (CTA-2066) = that instant − session start.
//! * **Playing → Stalled** at the exact instant the buffer runs dry while more media is still to come
//!   (counts one stall). A segment arriving exactly when the buffer reaches zero is not a stall.
//! * **Stalled → Playing** when the buffer reaches [`PlayerConfig::resume_buffer`], or when the whole
//!   remaining presentation is buffered.
//! * **Ended** when the presentation has ended (`EXT-X-ENDLIST` seen) and everything was played.
//! * **Playlists.** The first fetch happens immediately. Only the current rendition is reloaded, and
//!   only while it is live: next reload at `loaded_at + target_duration` if the reload changed the
//!   playlist (a different last media sequence; the first load counts as changed), else at
//!   `loaded_at + target_duration / 2`; a failed fetch retries after `target_duration / 2`. Every
//!   reload/retry delay is at least 500 ms ([`MIN_PLAYLIST_DELAY`]); when no target duration is known
//!   yet, a retry waits 500 ms.
//! * **Start position.** Live: the segment containing the point `live_start_target_durations ×
//!   target_duration` before the end of the first playlist (at least the first segment of the
//!   window). VOD: the first segment.
//! * **Segments.** One at a time, in media-sequence order, for the current rendition, only while the
//!   buffer is below [`PlayerConfig::max_buffer`] and the next sequence is in the current rendition's
//!   latest playlist (else wait for a reload). If a live window has moved past the next sequence,
//!   fetching jumps to the first segment of the window. A failed segment is retried (same sequence)
//!   after 500 ms ([`SEGMENT_RETRY_DELAY`]).
//! * **Rendition switch.** Fetching continues at the same media sequence. If the new rendition's
//!   playlist was never loaded, or is live and older than one target duration, it is fetched first
//!   and no segment is requested until it has arrived.
//! * **ABR.** Two EWMAs of throughput (`bytes × 8 / download time`, download time floored at 1 ms)
//!   with [`AbrConfig::fast_half_life`] and [`AbrConfig::slow_half_life`], each sample weighted by its
//!   download time in seconds (hls.js `EwmaBandWidthEstimator`, including its zero-bias
//!   correction); estimate = min(fast, slow). Before any sample the initial rendition is used.
//!   After each segment: if the current rendition's bandwidth exceeds `down_factor × estimate`,
//!   switch down immediately to the highest rendition with bandwidth ≤ `down_factor × estimate` (the
//!   lowest if none fits). Otherwise switch up to the highest rendition with bandwidth ≤
//!   `up_factor × estimate` if that is higher and at least `min_switch_interval` has passed since the
//!   last switch (up or down); the session start counts as the last switch.
//! * **LL-HLS** ([`PlayerConfig::low_latency`], a live playlist with parts and
//!   `CAN-BLOCK-RELOAD=YES`), like hls.js's `lowLatencyMode`: the session starts at the segment
//!   that holds the point `PART-HOLD-BACK` before the playlist's last part (whole if it is whole,
//!   else its parts from the first); each reload is a blocking one for the part after the last
//!   listed ([`Action::BlockingReload`]), issued as soon as the previous one is answered (a failed
//!   one is followed by a plain reload at the classic pace); parts are fetched one at a time
//!   ([`Action::FetchPart`]) until their segment is whole and done, whole segments otherwise;
//!   startup and resume need at most `PART-HOLD-BACK` of buffer; parts do not feed ABR (their
//!   download time is the encoder's pace). [`Player::live_latency`] is how far the picture is
//!   behind the wall clock by `EXT-X-PROGRAM-DATE-TIME`.
//! * **Counters.** Every failed fetch counts in [`PlayerStats::failures`]; completions that do not
//!   match the outstanding request are ignored.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

/// Delay before a failed segment is fetched again.
pub const SEGMENT_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Lower bound for any playlist reload or retry delay.
pub const MIN_PLAYLIST_DELAY: Duration = Duration::from_millis(500);
/// How far ahead [`Action::WaitUntil`] points when nothing is scheduled (only completions of
/// outstanding requests can change anything then).
pub const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Download times are floored to this when computing throughput (avoids infinite samples).
const MIN_SAMPLE_TIME: Duration = Duration::from_millis(1);

/// Adaptive-bitrate tuning (hls.js-like defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct AbrConfig {
    /// Half-life of the fast throughput EWMA, in download time. Default 3 s. Zero disables
    /// smoothing (the estimate is the last sample).
    pub fast_half_life: Duration,
    /// Half-life of the slow throughput EWMA, in download time. Default 9 s (zero: no smoothing).
    pub slow_half_life: Duration,
    /// Switch up only to a rendition with bandwidth ≤ `up_factor × estimate`. Default 0.7.
    pub up_factor: f64,
    /// Switch down when the current bandwidth > `down_factor × estimate`. Default 0.95.
    pub down_factor: f64,
    /// Minimum time since the last switch (or the session start) before switching up. Default 4 s.
    pub min_switch_interval: Duration,
    /// Index (in bandwidth-ascending order) of the rendition to start with; `None`: the lowest.
    pub initial_rendition: Option<usize>,
}

impl Default for AbrConfig {
    fn default() -> Self {
        Self {
            fast_half_life: Duration::from_secs(3),
            slow_half_life: Duration::from_secs(9),
            up_factor: 0.7,
            down_factor: 0.95,
            min_switch_interval: Duration::from_secs(4),
            initial_rendition: None,
        }
    }
}

/// Player tuning.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayerConfig {
    /// Playback starts once this much media is buffered. Default 4 s (about two segments).
    pub startup_buffer: Duration,
    /// After a stall, playback resumes once this much media is buffered. Default 2 s.
    pub resume_buffer: Duration,
    /// No segment is requested while this much media (or more) is buffered. Default 30 s. Raised to
    /// `max(startup_buffer, resume_buffer)` if smaller, so that playback can always start.
    pub max_buffer: Duration,
    /// Live: start this many target durations behind the end of the playlist. Default 3.
    pub live_start_target_durations: u32,
    /// Adaptive-bitrate tuning.
    pub abr: AbrConfig,
    /// Play an LL-HLS stream (parts, `CAN-BLOCK-RELOAD=YES`) at low latency, like hls.js's
    /// `lowLatencyMode`: start `PART-HOLD-BACK` behind the live edge, reload with blocking
    /// requests for the next part, fetch parts at the edge. Default true.
    pub low_latency: bool,
}

impl Default for PlayerConfig {
    fn default() -> Self {
        Self {
            startup_buffer: Duration::from_secs(4),
            resume_buffer: Duration::from_secs(2),
            max_buffer: Duration::from_secs(30),
            live_start_target_durations: 3,
            abr: AbrConfig::default(),
            low_latency: true,
        }
    }
}

/// One variant stream of the multivariant playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// `BANDWIDTH` attribute, bits/s.
    pub bandwidth: u64,
    /// URL path of the media playlist.
    pub playlist: String,
}

/// One media segment of a media playlist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Segment {
    /// Media sequence number.
    pub sequence: u64,
    /// URI as written in the playlist (the shell resolves it).
    pub uri: String,
    /// `EXTINF` duration.
    pub duration: Duration,
    /// `EXT-X-PROGRAM-DATE-TIME` (given or carried from an earlier segment): when it starts.
    pub program_date_time: Option<SystemTime>,
    /// Its LL-HLS parts, when the playlist lists them.
    pub parts: Vec<PartRef>,
}

/// An LL-HLS part (`EXT-X-PART`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartRef {
    /// URI (resolved by the shell).
    pub uri: String,
    pub duration: Duration,
}

/// What an LL-HLS playlist that offers blocking reloads says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowLatency {
    /// `PART-TARGET`.
    pub part_target: Duration,
    /// `PART-HOLD-BACK` (three part targets when absent): how far behind the end to play.
    pub part_hold_back: Duration,
}

/// A parsed media playlist, as delivered by the shell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaPlaylistUpdate {
    /// Index of the rendition (bandwidth-ascending order).
    pub rendition: usize,
    /// `EXT-X-TARGETDURATION`.
    pub target_duration: Duration,
    /// `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// Segments in playlist order.
    pub segments: Vec<Segment>,
    /// `EXT-X-ENDLIST` present (VOD, or a live stream that has ended).
    pub ended: bool,
    /// LL-HLS: the parts of the segment in progress (after the last whole one).
    pub trailing_parts: Vec<PartRef>,
    /// LL-HLS with blocking reloads (`CAN-BLOCK-RELOAD=YES` and `EXT-X-PART-INF`).
    pub low_latency: Option<LowLatency>,
}

/// What the shell should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch the media playlist of this rendition, then call `playlist_loaded`/`playlist_failed`.
    FetchPlaylist { rendition: usize },
    /// Fetch the media playlist with a blocking reload (`_HLS_msn=msn&_HLS_part=part`): the
    /// server answers once it holds that part. Then `playlist_loaded`/`playlist_failed`.
    BlockingReload {
        rendition: usize,
        msn: u64,
        part: u64,
    },
    /// Fetch this segment, then call `segment_loaded`/`segment_failed`.
    FetchSegment {
        rendition: usize,
        sequence: u64,
        uri: String,
    },
    /// Fetch this LL-HLS part, then call `part_loaded`/`part_failed`.
    FetchPart {
        rendition: usize,
        sequence: u64,
        part: u64,
        uri: String,
    },
    /// Nothing to do before this instant (the shell sleeps until then or until an event arrives).
    WaitUntil(Instant),
    /// The session is over (VOD ended and played out).
    Done,
}

/// What the viewer sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaybackState {
    /// Waiting for the startup buffer (no frame shown yet).
    Starting,
    /// Playing; the buffer drains in real time.
    Playing,
    /// The buffer ran dry while playing; waiting for the resume buffer.
    Stalled,
    /// The presentation ended and was played out.
    Ended,
}

/// Quality-of-experience counters (CTA-2066 definitions).
#[derive(Debug, Clone, PartialEq)]
pub struct PlayerStats {
    /// Session start → playback start (first frame); `None` while starting.
    pub startup: Option<Duration>,
    /// Stall events (buffer ran dry while playing; the initial startup is not a stall).
    pub stalls: u32,
    /// Total stalled time; a stall in progress counts up to `now`.
    pub stalled: Duration,
    /// Time spent playing (media played).
    pub watched: Duration,
    /// Rendition switches.
    pub switches: u32,
    /// Time-weighted over played media, bits/s (`BANDWIDTH` of each played segment's rendition);
    /// 0 before anything was played.
    pub average_bitrate: f64,
    /// Failed fetches (playlists and segments).
    pub failures: u32,
    /// Rendition of the media at the playhead.
    pub playing_rendition: usize,
}

impl PlayerStats {
    /// Stalled-time ratio: stalled time / watched time (0 when nothing was watched).
    pub fn stall_ratio(&self) -> f64 {
        let watched = self.watched.as_secs_f64();
        if watched > 0.0 {
            self.stalled.as_secs_f64() / watched
        } else {
            0.0
        }
    }
}

/// The latest copy of one rendition's media playlist.
#[derive(Debug, Clone)]
struct LoadedPlaylist {
    target_duration: Duration,
    media_sequence: u64,
    segments: Vec<Segment>,
    ended: bool,
    loaded_at: Instant,
    trailing_parts: Vec<PartRef>,
    low_latency: Option<LowLatency>,
}

impl LoadedPlaylist {
    fn last_sequence(&self) -> Option<u64> {
        self.segments.last().map(|s| s.sequence)
    }

    /// First media sequence of the window.
    fn first_sequence(&self) -> u64 {
        self.segments
            .first()
            .map_or(self.media_sequence, |s| s.sequence)
    }

    fn segment(&self, sequence: u64) -> Option<&Segment> {
        let index = usize::try_from(sequence.checked_sub(self.first_sequence())?).ok()?;
        match self.segments.get(index) {
            Some(s) if s.sequence == sequence => Some(s),
            _ => self.segments.iter().find(|s| s.sequence == sequence),
        }
    }

    /// The media sequence number of the segment in progress (after the last whole one).
    fn next_msn(&self) -> u64 {
        self.last_sequence()
            .map_or(self.media_sequence, |last| last.saturating_add(1))
    }

    /// The parts of segment `sequence`: a whole one's, or the segment in progress's.
    fn parts_of(&self, sequence: u64) -> Option<&[PartRef]> {
        match self.segment(sequence) {
            Some(segment) => Some(&segment.parts),
            None if sequence == self.next_msn() => Some(&self.trailing_parts),
            None => None,
        }
    }

    /// When segment `sequence` starts by `EXT-X-PROGRAM-DATE-TIME` (the segment in progress
    /// starts when the last whole one ends).
    fn start_of(&self, sequence: u64) -> Option<SystemTime> {
        match self.segment(sequence) {
            Some(segment) => segment.program_date_time,
            None if sequence == self.next_msn() => {
                let last = self.segments.last()?;
                last.program_date_time?.checked_add(last.duration)
            }
            None => None,
        }
    }

    /// Live and older than one target duration (or never loaded: see `PlaylistSlot`).
    fn is_stale(&self, now: Instant) -> bool {
        !self.ended && now >= self.loaded_at + self.target_duration
    }
}

/// Per-rendition playlist state.
#[derive(Debug, Clone)]
struct PlaylistSlot {
    loaded: Option<LoadedPlaylist>,
    /// When this playlist is due for (re)loading, if it is the current one and live.
    next_fetch: Instant,
    /// LL-HLS: the next reload is a blocking one for this (segment, part).
    block: Option<(u64, u64)>,
}

impl PlaylistSlot {
    fn is_ended(&self) -> bool {
        self.loaded.as_ref().is_some_and(|p| p.ended)
    }
}

#[derive(Debug, Clone, Copy)]
struct OutstandingSegment {
    rendition: usize,
    sequence: u64,
    /// An LL-HLS part of the segment, or the whole segment.
    part: Option<u64>,
    duration: Duration,
    /// When the media ends, by `EXT-X-PROGRAM-DATE-TIME`.
    ends_at: Option<SystemTime>,
}

/// hls.js-style exponentially weighted moving average with zero-bias correction.
#[derive(Debug, Clone)]
struct Ewma {
    alpha: f64,
    estimate: f64,
    total_weight: f64,
}

impl Ewma {
    fn new(half_life: Duration) -> Self {
        let half_life = half_life.as_secs_f64();
        let alpha = if half_life > 0.0 {
            (0.5f64.ln() / half_life).exp()
        } else {
            0.0
        };
        Self {
            alpha,
            estimate: 0.0,
            total_weight: 0.0,
        }
    }

    fn sample(&mut self, weight: f64, value: f64) {
        let adjusted = self.alpha.powf(weight);
        self.estimate = value * (1.0 - adjusted) + adjusted * self.estimate;
        self.total_weight += weight;
    }

    fn estimate(&self) -> Option<f64> {
        if self.total_weight <= 0.0 {
            return None;
        }
        let zero_factor = 1.0 - self.alpha.powf(self.total_weight);
        Some(if zero_factor > 0.0 {
            self.estimate / zero_factor
        } else {
            self.estimate
        })
    }
}

#[derive(Debug, Clone)]
struct Abr {
    fast: Ewma,
    slow: Ewma,
    last_switch: Instant,
}

impl Abr {
    fn sample(&mut self, bytes: u64, elapsed: Duration) {
        let seconds = elapsed.max(MIN_SAMPLE_TIME).as_secs_f64();
        let bits_per_second = bytes as f64 * 8.0 / seconds;
        self.fast.sample(seconds, bits_per_second);
        self.slow.sample(seconds, bits_per_second);
    }

    /// A sample that may raise the estimate but never lower it (nor start it).
    fn sample_if_faster(&mut self, bytes: u64, elapsed: Duration) {
        let bits_per_second = bytes as f64 * 8.0 / elapsed.max(MIN_SAMPLE_TIME).as_secs_f64();
        if self.estimate().is_some_and(|e| bits_per_second > e) {
            self.sample(bytes, elapsed);
        }
    }

    /// min(fast, slow), bits/s; `None` before the first sample.
    fn estimate(&self) -> Option<f64> {
        Some(self.fast.estimate()?.min(self.slow.estimate()?))
    }
}

#[derive(Debug, Clone)]
struct BufferedSegment {
    rendition: usize,
    bandwidth: u64,
    /// Not yet played part of the segment.
    remaining: Duration,
    /// When its media ends, by `EXT-X-PROGRAM-DATE-TIME`.
    ends_at: Option<SystemTime>,
}

/// The playhead side: buffer, state and QoE counters, valid as of `at`.
#[derive(Debug, Clone)]
struct Playback {
    state: PlaybackState,
    at: Instant,
    session_start: Instant,
    segments: VecDeque<BufferedSegment>,
    buffer: Duration,
    /// Every segment up to the end of an ended presentation has been downloaded.
    all_fetched: bool,
    startup: Option<Duration>,
    stalls: u32,
    stalled: Duration,
    stall_started: Option<Instant>,
    watched: Duration,
    bit_seconds: f64,
    last_played: usize,
    /// The date at the playhead once the buffer ran dry (the end of the last media played).
    last_end: Option<SystemTime>,
}

impl Playback {
    fn new(now: Instant, rendition: usize) -> Self {
        Self {
            state: PlaybackState::Starting,
            at: now,
            session_start: now,
            segments: VecDeque::new(),
            buffer: Duration::ZERO,
            all_fetched: false,
            startup: None,
            stalls: 0,
            stalled: Duration::ZERO,
            stall_started: None,
            watched: Duration::ZERO,
            bit_seconds: 0.0,
            last_played: rendition,
            last_end: None,
        }
    }

    /// Moves the snapshot forward to `now`: drains the buffer while playing and detects the exact
    /// instant it ran dry (stall, or end of the presentation).
    fn advance(&mut self, now: Instant) {
        if now <= self.at {
            return;
        }
        let elapsed = now.saturating_duration_since(self.at);
        if self.state == PlaybackState::Playing {
            let played = elapsed.min(self.buffer);
            self.drain(played);
            if self.buffer.is_zero() {
                if self.all_fetched {
                    self.state = PlaybackState::Ended;
                } else if elapsed > played {
                    self.state = PlaybackState::Stalled;
                    self.stalls += 1;
                    self.stall_started = Some(self.at + played);
                }
            }
        }
        self.at = now;
    }

    fn drain(&mut self, amount: Duration) {
        let mut left = amount;
        while !left.is_zero() {
            let Some(front) = self.segments.front_mut() else {
                break;
            };
            let take = left.min(front.remaining);
            front.remaining -= take;
            self.watched += take;
            self.bit_seconds += front.bandwidth as f64 * take.as_secs_f64();
            self.last_played = front.rendition;
            left -= take;
            if front.remaining.is_zero() {
                self.last_end = front.ends_at;
                self.segments.pop_front();
            }
        }
        self.buffer = self.buffer.saturating_sub(amount);
    }

    fn push(
        &mut self,
        rendition: usize,
        bandwidth: u64,
        duration: Duration,
        ends_at: Option<SystemTime>,
    ) {
        if duration.is_zero() {
            return;
        }
        self.segments.push_back(BufferedSegment {
            rendition,
            bandwidth,
            remaining: duration,
            ends_at,
        });
        self.buffer += duration;
    }

    /// The date of the media at the playhead, by `EXT-X-PROGRAM-DATE-TIME`.
    fn playhead_date(&self) -> Option<SystemTime> {
        match self.segments.front() {
            Some(front) => front.ends_at?.checked_sub(front.remaining),
            None => self.last_end,
        }
    }

    /// Event-driven transitions at `now` (after the buffer or `all_fetched` changed).
    fn settle(&mut self, now: Instant, startup_buffer: Duration, resume_buffer: Duration) {
        let empty = self.buffer.is_zero();
        match self.state {
            PlaybackState::Starting => {
                if self.all_fetched && empty {
                    self.state = PlaybackState::Ended;
                } else if !empty && (self.buffer >= startup_buffer || self.all_fetched) {
                    self.state = PlaybackState::Playing;
                    self.startup = Some(now.saturating_duration_since(self.session_start));
                }
            }
            PlaybackState::Stalled => {
                if (!empty && self.buffer >= resume_buffer) || self.all_fetched {
                    if let Some(started) = self.stall_started.take() {
                        self.stalled += now.saturating_duration_since(started);
                    }
                    self.state = if empty {
                        PlaybackState::Ended
                    } else {
                        PlaybackState::Playing
                    };
                }
            }
            PlaybackState::Playing => {
                if self.all_fetched && empty {
                    self.state = PlaybackState::Ended;
                }
            }
            PlaybackState::Ended => {}
        }
    }

    fn playing_rendition(&self) -> usize {
        self.segments
            .front()
            .map_or(self.last_played, |s| s.rendition)
    }
}

/// One simulated viewer's player. See the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct Player {
    config: PlayerConfig,
    renditions: Vec<Rendition>,
    current: usize,
    switches: u32,
    failures: u32,
    slots: Vec<PlaylistSlot>,
    playlist_in_flight: Option<usize>,
    segment_in_flight: Option<OutstandingSegment>,
    segment_retry_at: Option<Instant>,
    /// Next media sequence to download (set by the first playlist of the current rendition).
    next_sequence: Option<u64>,
    /// LL-HLS: the next part of `next_sequence` to download (`None`: the whole segment).
    next_part: Option<u64>,
    /// One past the last media sequence of the presentation, once an ended playlist was seen.
    end_sequence: Option<u64>,
    /// After a switch: no segment until the new rendition's playlist has been (re)loaded.
    awaiting_playlist: bool,
    last_target_duration: Option<Duration>,
    abr: Abr,
    playback: Playback,
}

impl Player {
    /// A session starting at `now` (the multivariant playlist is already loaded). Renditions are
    /// sorted by bandwidth ascending; all indices refer to that order. With no renditions at all the
    /// session is immediately over.
    pub fn new(mut config: PlayerConfig, mut renditions: Vec<Rendition>, now: Instant) -> Self {
        renditions.sort_by_key(|r| r.bandwidth);
        config.max_buffer = config
            .max_buffer
            .max(config.startup_buffer)
            .max(config.resume_buffer);
        let current = config
            .abr
            .initial_rendition
            .unwrap_or(0)
            .min(renditions.len().saturating_sub(1));
        let slots = renditions
            .iter()
            .map(|_| PlaylistSlot {
                loaded: None,
                next_fetch: now,
                block: None,
            })
            .collect();
        let abr = Abr {
            fast: Ewma::new(config.abr.fast_half_life),
            slow: Ewma::new(config.abr.slow_half_life),
            last_switch: now,
        };
        let mut playback = Playback::new(now, current);
        if renditions.is_empty() {
            playback.state = PlaybackState::Ended;
        }
        Self {
            config,
            renditions,
            current,
            switches: 0,
            failures: 0,
            slots,
            playlist_in_flight: None,
            segment_in_flight: None,
            segment_retry_at: None,
            next_sequence: None,
            next_part: None,
            end_sequence: None,
            awaiting_playlist: false,
            last_target_duration: None,
            abr,
            playback,
        }
    }

    /// The renditions in index order (bandwidth ascending).
    pub fn renditions(&self) -> &[Rendition] {
        &self.renditions
    }

    /// The configuration in effect (after normalisation of `max_buffer`).
    pub fn config(&self) -> &PlayerConfig {
        &self.config
    }

    /// The next thing to do at `now`. Call repeatedly until it returns [`Action::WaitUntil`] or
    /// [`Action::Done`]. At most one playlist fetch and one segment fetch are outstanding at a time.
    pub fn poll(&mut self, now: Instant) -> Action {
        self.playback.advance(now);
        if self.playback.state == PlaybackState::Ended {
            return Action::Done;
        }
        if let Some(rendition) = self.playlist_due(now) {
            self.playlist_in_flight = Some(rendition);
            return match self.slots.get(rendition).and_then(|s| s.block) {
                Some((msn, part)) => Action::BlockingReload {
                    rendition,
                    msn,
                    part,
                },
                None => Action::FetchPlaylist { rendition },
            };
        }
        if let Some((unit, uri)) = self.segment_due(now) {
            let action = match unit.part {
                Some(part) => Action::FetchPart {
                    rendition: self.current,
                    sequence: unit.sequence,
                    part,
                    uri,
                },
                None => Action::FetchSegment {
                    rendition: self.current,
                    sequence: unit.sequence,
                    uri,
                },
            };
            self.segment_in_flight = Some(unit);
            self.segment_retry_at = None;
            return action;
        }
        Action::WaitUntil(self.next_wake(now))
    }

    /// A media playlist arrived.
    pub fn playlist_loaded(&mut self, now: Instant, update: MediaPlaylistUpdate) {
        self.playback.advance(now);
        let rendition = update.rendition;
        if self.playlist_in_flight != Some(rendition) {
            return;
        }
        self.playlist_in_flight = None;
        let Some(slot) = self.slots.get_mut(rendition) else {
            return;
        };
        let new_last = update.segments.last().map(|s| s.sequence);
        let changed = slot
            .loaded
            .as_ref()
            .is_none_or(|p| p.last_sequence() != new_last);
        let delay = if changed {
            update.target_duration
        } else {
            update.target_duration / 2
        };
        slot.next_fetch = now + delay.max(MIN_PLAYLIST_DELAY);
        let low_latency = update
            .low_latency
            .filter(|_| self.config.low_latency && !update.ended);
        slot.block = None;
        if low_latency.is_some() {
            // Ask at once for the playlist that holds the next part: the server answers when it
            // exists.
            let next_msn = new_last.map_or(update.media_sequence, |l| l.saturating_add(1));
            slot.block = Some((next_msn, update.trailing_parts.len() as u64));
            slot.next_fetch = now;
        }
        if update.ended {
            self.end_sequence = Some(new_last.map_or(update.media_sequence, |last| last + 1));
        }
        self.last_target_duration = Some(update.target_duration);
        let playlist = LoadedPlaylist {
            target_duration: update.target_duration,
            media_sequence: update.media_sequence,
            segments: update.segments,
            ended: update.ended,
            loaded_at: now,
            trailing_parts: update.trailing_parts,
            low_latency,
        };
        if rendition == self.current {
            self.awaiting_playlist = false;
            if self.next_sequence.is_none() {
                match low_latency {
                    Some(ll) => {
                        if let Some((sequence, part)) = start_ll(&playlist, ll.part_hold_back) {
                            self.next_sequence = Some(sequence);
                            self.next_part = part;
                        }
                    }
                    None => {
                        self.next_sequence =
                            start_sequence(&playlist, self.config.live_start_target_durations);
                    }
                }
            }
        }
        slot.loaded = Some(playlist);
        self.refresh_all_fetched();
        self.settle(now);
    }

    /// A media playlist fetch failed: counted, retried after `target_duration / 2` (≥ 500 ms).
    pub fn playlist_failed(&mut self, now: Instant, rendition: usize) {
        self.playback.advance(now);
        if self.playlist_in_flight != Some(rendition) {
            return;
        }
        self.playlist_in_flight = None;
        self.failures += 1;
        let target = self
            .slots
            .get(rendition)
            .and_then(|s| s.loaded.as_ref().map(|p| p.target_duration))
            .or(self.last_target_duration)
            .unwrap_or(Duration::ZERO);
        if let Some(slot) = self.slots.get_mut(rendition) {
            // A blocking reload that failed is followed by a plain one, at the classic pace.
            slot.block = None;
            slot.next_fetch = now + (target / 2).max(MIN_PLAYLIST_DELAY);
        }
    }

    /// A segment arrived: `bytes` over `elapsed` (download time) feeds ABR; its duration is appended
    /// to the buffer.
    pub fn segment_loaded(
        &mut self,
        now: Instant,
        rendition: usize,
        sequence: u64,
        bytes: u64,
        elapsed: Duration,
    ) {
        self.segment_arrived(now, rendition, sequence, bytes, elapsed, false);
    }

    /// A segment arrived from peers in `elapsed`. Its rate may raise the bandwidth estimate but
    /// never lower it (nor start it): a slow peer says nothing about this viewer's link, and the
    /// node falls back to HTTP whenever a peer would be late, so a rendition HTTP sustains stays
    /// reachable. Segments the node got over HTTP are ordinary samples.
    pub fn segment_loaded_from_peers(
        &mut self,
        now: Instant,
        rendition: usize,
        sequence: u64,
        bytes: u64,
        elapsed: Duration,
    ) {
        self.segment_arrived(now, rendition, sequence, bytes, elapsed, true);
    }

    fn segment_arrived(
        &mut self,
        now: Instant,
        rendition: usize,
        sequence: u64,
        bytes: u64,
        elapsed: Duration,
        from_peers: bool,
    ) {
        self.playback.advance(now);
        let Some(segment) = self.take_segment_in_flight(rendition, sequence, None) else {
            return;
        };
        self.segment_retry_at = None;
        if from_peers {
            self.abr.sample_if_faster(bytes, elapsed);
        } else {
            self.abr.sample(bytes, elapsed);
        }
        let bandwidth = self.renditions.get(rendition).map_or(0, |r| r.bandwidth);
        self.playback
            .push(rendition, bandwidth, segment.duration, segment.ends_at);
        self.next_sequence = Some(sequence + 1);
        self.next_part = None;
        self.refresh_all_fetched();
        self.settle(now);
        self.decide_rendition(now);
    }

    /// An LL-HLS part arrived: its duration is appended to the buffer. A part's download time
    /// is bounded by the pace at which the encoder makes it, so it does not feed ABR.
    pub fn part_loaded(&mut self, now: Instant, rendition: usize, sequence: u64, part: u64) {
        self.playback.advance(now);
        let Some(unit) = self.take_segment_in_flight(rendition, sequence, Some(part)) else {
            return;
        };
        self.segment_retry_at = None;
        let bandwidth = self.renditions.get(rendition).map_or(0, |r| r.bandwidth);
        self.playback
            .push(rendition, bandwidth, unit.duration, unit.ends_at);
        self.next_sequence = Some(sequence);
        self.next_part = Some(part.saturating_add(1));
        self.settle(now);
    }

    /// An LL-HLS part fetch failed: counted, retried after 500 ms.
    pub fn part_failed(&mut self, now: Instant, rendition: usize, sequence: u64, part: u64) {
        self.playback.advance(now);
        if self
            .take_segment_in_flight(rendition, sequence, Some(part))
            .is_none()
        {
            return;
        }
        self.failures += 1;
        self.segment_retry_at = Some(now + SEGMENT_RETRY_DELAY);
    }

    /// How far behind `wall` (the wall clock at `now`) the picture is, by the
    /// `EXT-X-PROGRAM-DATE-TIME` of the media at the playhead; `None` before anything played
    /// or without dates.
    pub fn live_latency(&self, now: Instant, wall: SystemTime) -> Option<Duration> {
        let mut playback = self.playback.clone();
        playback.advance(now);
        playback.startup?;
        wall.duration_since(playback.playhead_date()?).ok()
    }

    /// A segment fetch failed: counted, the same sequence is retried after 500 ms.
    pub fn segment_failed(&mut self, now: Instant, rendition: usize, sequence: u64) {
        self.playback.advance(now);
        if self
            .take_segment_in_flight(rendition, sequence, None)
            .is_none()
        {
            return;
        }
        self.failures += 1;
        self.segment_retry_at = Some(now + SEGMENT_RETRY_DELAY);
    }

    /// QoE counters as of `now` (computed lazily; does not change the player).
    pub fn stats(&self, now: Instant) -> PlayerStats {
        let mut playback = self.playback.clone();
        playback.advance(now);
        let in_progress = playback
            .stall_started
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        let watched = playback.watched.as_secs_f64();
        PlayerStats {
            startup: playback.startup,
            stalls: playback.stalls,
            stalled: playback.stalled + in_progress,
            watched: playback.watched,
            switches: self.switches,
            average_bitrate: if watched > 0.0 {
                playback.bit_seconds / watched
            } else {
                0.0
            },
            failures: self.failures,
            playing_rendition: playback.playing_rendition(),
        }
    }

    /// Media buffered ahead of the playhead at `now`.
    pub fn buffer(&self, now: Instant) -> Duration {
        let playback = &self.playback;
        if playback.state == PlaybackState::Playing {
            playback
                .buffer
                .saturating_sub(now.saturating_duration_since(playback.at))
        } else {
            playback.buffer
        }
    }

    /// Playback state as of the last call that took a time (`poll` or an event).
    pub fn state(&self) -> PlaybackState {
        self.playback.state
    }

    /// Playback state at `now`, computed lazily.
    pub fn state_at(&self, now: Instant) -> PlaybackState {
        let mut playback = self.playback.clone();
        playback.advance(now);
        playback.state
    }

    /// The rendition segments are currently fetched from (ABR decision).
    pub fn current_rendition(&self) -> usize {
        self.current
    }

    fn settle(&mut self, now: Instant) {
        // At the live edge of LL-HLS there is only PART-HOLD-BACK of media to buffer.
        let (startup, resume) = match self.low_latency() {
            Some(ll) => (
                self.config.startup_buffer.min(ll.part_hold_back),
                self.config.resume_buffer.min(ll.part_hold_back),
            ),
            None => (self.config.startup_buffer, self.config.resume_buffer),
        };
        self.playback.settle(now, startup, resume);
    }

    /// The current rendition is LL-HLS played at low latency.
    fn low_latency(&self) -> Option<LowLatency> {
        self.slots.get(self.current)?.loaded.as_ref()?.low_latency
    }

    fn take_segment_in_flight(
        &mut self,
        rendition: usize,
        sequence: u64,
        part: Option<u64>,
    ) -> Option<OutstandingSegment> {
        match self.segment_in_flight {
            Some(s) if s.rendition == rendition && s.sequence == sequence && s.part == part => {
                self.segment_in_flight.take()
            }
            _ => None,
        }
    }

    fn refresh_all_fetched(&mut self) {
        self.playback.all_fetched = matches!(
            (self.next_sequence, self.end_sequence),
            (Some(next), Some(end)) if next >= end
        );
    }

    /// The current rendition's playlist, if it must be (re)loaded now.
    fn playlist_due(&self, now: Instant) -> Option<usize> {
        if self.playlist_in_flight.is_some() || self.playback.all_fetched {
            return None;
        }
        let slot = self.slots.get(self.current)?;
        (!slot.is_ended() && now >= slot.next_fetch).then_some(self.current)
    }

    /// The next segment (or LL-HLS part) to request now, if any, and its URI.
    fn segment_due(&mut self, now: Instant) -> Option<(OutstandingSegment, String)> {
        if self.segment_in_flight.is_some()
            || self.awaiting_playlist
            || self.playback.all_fetched
            || self.segment_retry_at.is_some_and(|t| now < t)
            || self.playback.buffer >= self.config.max_buffer
        {
            return None;
        }
        let playlist = self.slots.get(self.current)?.loaded.as_ref()?;
        let mut next = self.next_sequence?;
        let mut part = self.next_part;
        let first = playlist.first_sequence();
        if next < first {
            // The live window moved past us: continue at its first segment.
            next = first;
            part = None;
        }
        // Past the last part of a segment that is now whole: the next segment.
        if let (Some(j), Some(segment)) = (part, playlist.segment(next)) {
            if j >= segment.parts.len() as u64 {
                next = next.saturating_add(1);
                part = None;
            }
        }
        let unit = match (part, playlist.segment(next)) {
            // A whole segment.
            (None, Some(segment)) => {
                let ends_at = segment
                    .program_date_time
                    .and_then(|d| d.checked_add(segment.duration));
                Some((
                    OutstandingSegment {
                        rendition: self.current,
                        sequence: next,
                        part: None,
                        duration: segment.duration,
                        ends_at,
                    },
                    segment.uri.clone(),
                ))
            }
            // A part: of the segment in progress, or the rest of one begun as parts.
            (part, _) if playlist.low_latency.is_some() => {
                let j = part.unwrap_or(0);
                let parts = playlist.parts_of(next)?;
                let listed = parts.get(usize::try_from(j).ok()?)?;
                let offset: Duration = parts.iter().take(j as usize).map(|p| p.duration).sum();
                let ends_at = playlist
                    .start_of(next)
                    .and_then(|d| d.checked_add(offset + listed.duration));
                Some((
                    OutstandingSegment {
                        rendition: self.current,
                        sequence: next,
                        part: Some(j),
                        duration: listed.duration,
                        ends_at,
                    },
                    listed.uri.clone(),
                ))
            }
            _ => None,
        }?;
        self.next_sequence = Some(next);
        self.next_part = part;
        Some(unit)
    }

    /// The earliest future instant at which something may become due without an event.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake: Option<Instant> = None;
        let mut consider = |t: Instant| {
            if t > now {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        if self.playlist_in_flight.is_none() && !self.playback.all_fetched {
            if let Some(slot) = self.slots.get(self.current) {
                if !slot.is_ended() {
                    consider(slot.next_fetch);
                }
            }
        }
        if let Some(t) = self.segment_retry_at {
            consider(t);
        }
        if self.playback.state == PlaybackState::Playing {
            let buffer = self.playback.buffer;
            // The buffer runs dry (a stall, or the end of the presentation).
            consider(now + buffer);
            if buffer >= self.config.max_buffer {
                // First instant at which the buffer is below max_buffer again.
                consider(now + (buffer - self.config.max_buffer) + Duration::from_nanos(1));
            }
        }
        wake.unwrap_or(now + IDLE_WAIT)
    }

    /// ABR decision after a segment download.
    fn decide_rendition(&mut self, now: Instant) {
        let Some(estimate) = self.abr.estimate() else {
            return;
        };
        let Some(current) = self.renditions.get(self.current) else {
            return;
        };
        let abr = &self.config.abr;
        let highest_fitting = |limit: f64| {
            self.renditions
                .iter()
                .rposition(|r| r.bandwidth as f64 <= limit)
        };
        let down_limit = abr.down_factor * estimate;
        let target = if current.bandwidth as f64 > down_limit {
            highest_fitting(down_limit).unwrap_or(0)
        } else {
            match highest_fitting(abr.up_factor * estimate) {
                Some(up)
                    if up > self.current
                        && now.saturating_duration_since(self.abr.last_switch)
                            >= abr.min_switch_interval =>
                {
                    up
                }
                _ => self.current,
            }
        };
        if target != self.current {
            self.switch_to(now, target);
        }
    }

    fn switch_to(&mut self, now: Instant, rendition: usize) {
        self.current = rendition;
        self.switches += 1;
        self.abr.last_switch = now;
        let Some(slot) = self.slots.get_mut(rendition) else {
            return;
        };
        let stale = slot.loaded.as_ref().is_none_or(|p| p.is_stale(now));
        self.awaiting_playlist = stale;
        if stale {
            slot.next_fetch = slot.next_fetch.min(now);
        }
    }
}

/// Where an LL-HLS session starts: `hold_back` before the end of the playlist (its last part),
/// at the start of the segment that contains that point (parts after the first of a segment need
/// not be independent): the whole segment if it is whole, else its parts from the first.
fn start_ll(playlist: &LoadedPlaylist, hold_back: Duration) -> Option<(u64, Option<u64>)> {
    let in_progress: Duration = playlist.trailing_parts.iter().map(|p| p.duration).sum();
    if in_progress >= hold_back && !playlist.trailing_parts.is_empty() {
        return Some((playlist.next_msn(), Some(0)));
    }
    let mut covered = in_progress;
    let mut start = None;
    for segment in playlist.segments.iter().rev() {
        covered += segment.duration;
        start = Some(segment.sequence);
        if covered >= hold_back {
            break;
        }
    }
    match start {
        Some(sequence) => Some((sequence, None)),
        None => (!playlist.trailing_parts.is_empty()).then(|| (playlist.next_msn(), Some(0))),
    }
}

/// Where to start in the first playlist of the session (`None`: an empty live window, wait for a
/// reload). Live: the segment containing the point `live_start_target_durations × target_duration`
/// before the end, at least the first of the window. VOD: the first segment.
fn start_sequence(playlist: &LoadedPlaylist, live_start_target_durations: u32) -> Option<u64> {
    if playlist.ended {
        return Some(playlist.first_sequence());
    }
    let behind = playlist
        .target_duration
        .saturating_mul(live_start_target_durations);
    let mut covered = Duration::ZERO;
    let mut start = None;
    for segment in playlist.segments.iter().rev() {
        covered += segment.duration;
        start = Some(segment.sequence);
        if covered >= behind {
            break;
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn secs(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    fn renditions(bandwidths: &[u64]) -> Vec<Rendition> {
        bandwidths
            .iter()
            .map(|&bandwidth| Rendition {
                bandwidth,
                playlist: format!("/live/{bandwidth}/index.m3u8"),
            })
            .collect()
    }

    fn playlist(
        rendition: usize,
        target: Duration,
        sequences: std::ops::RangeInclusive<u64>,
        segment: Duration,
        ended: bool,
    ) -> MediaPlaylistUpdate {
        MediaPlaylistUpdate {
            rendition,
            target_duration: target,
            media_sequence: *sequences.start(),
            segments: sequences
                .map(|sequence| Segment {
                    sequence,
                    uri: format!("r{rendition}/seg{sequence}.ts"),
                    duration: segment,
                    ..Segment::default()
                })
                .collect(),
            ended,
            ..MediaPlaylistUpdate::default()
        }
    }

    /// What the fake network does with one segment request.
    struct Delivery {
        latency: Duration,
        bytes: u64,
        ok: bool,
    }

    /// Origin: the playlist of a rendition at a time since the session start (`None`: the fetch fails).
    type PlaylistSource = Box<dyn FnMut(Duration, usize) -> Option<MediaPlaylistUpdate>>;
    /// Network: how a segment request issued at a time since the session start is served.
    type SegmentSource = Box<dyn FnMut(Duration, usize, u64) -> Delivery>;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Request {
        Playlist(usize),
        Segment(usize, u64),
    }

    enum Completion {
        Playlist(usize, Option<MediaPlaylistUpdate>),
        Segment {
            rendition: usize,
            sequence: u64,
            bytes: u64,
            elapsed: Duration,
            ok: bool,
        },
    }

    /// A tiny deterministic driver: executes the player's actions against a fake origin and network,
    /// delivering completions and wake-ups in time order.
    struct Sim {
        t0: Instant,
        now: Instant,
        player: Player,
        playlist_latency: Duration,
        playlists: PlaylistSource,
        segments: SegmentSource,
        pending: Vec<(Instant, u64, Completion)>,
        order: u64,
        /// Every request with its issue time (since the session start).
        requests: Vec<(Duration, Request)>,
        /// (time, from, to) of every rendition switch.
        switches: Vec<(Duration, usize, usize)>,
        /// (time, rendition, sequence) of every segment completion.
        loaded: Vec<(Duration, usize, u64)>,
        done_at: Option<Duration>,
    }

    impl Sim {
        fn new(
            config: PlayerConfig,
            bandwidths: &[u64],
            playlists: PlaylistSource,
            segments: SegmentSource,
        ) -> Self {
            let t0 = Instant::now();
            Self {
                t0,
                now: t0,
                player: Player::new(config, renditions(bandwidths), t0),
                playlist_latency: ms(100),
                playlists,
                segments,
                pending: Vec::new(),
                order: 0,
                requests: Vec::new(),
                switches: Vec::new(),
                loaded: Vec::new(),
                done_at: None,
            }
        }

        fn at(&self, since_start: Duration) -> Instant {
            self.t0 + since_start
        }

        fn elapsed(&self) -> Duration {
            self.now - self.t0
        }

        fn stats(&self) -> PlayerStats {
            self.player.stats(self.now)
        }

        fn schedule(&mut self, at: Instant, completion: Completion) {
            let key = (at, self.order);
            let index = self.pending.partition_point(|p| (p.0, p.1) <= key);
            self.pending.insert(index, (at, self.order, completion));
            self.order += 1;
        }

        /// Polls until the player waits; returns its wake-up instant (`None`: done).
        fn issue(&mut self) -> Option<Instant> {
            for _ in 0..100 {
                match self.player.poll(self.now) {
                    Action::BlockingReload { .. } | Action::FetchPart { .. } => {
                        panic!("classic playlists only here")
                    }
                    Action::FetchPlaylist { rendition } => {
                        assert!(
                            !self
                                .pending
                                .iter()
                                .any(|p| matches!(p.2, Completion::Playlist(..))),
                            "two playlist fetches outstanding"
                        );
                        self.requests
                            .push((self.elapsed(), Request::Playlist(rendition)));
                        let since_start = self.elapsed();
                        let update = (self.playlists)(since_start, rendition);
                        let at = self.now + self.playlist_latency;
                        self.schedule(at, Completion::Playlist(rendition, update));
                    }
                    Action::FetchSegment {
                        rendition,
                        sequence,
                        uri,
                    } => {
                        assert_eq!(uri, format!("r{rendition}/seg{sequence}.ts"));
                        assert!(
                            !self
                                .pending
                                .iter()
                                .any(|p| matches!(p.2, Completion::Segment { .. })),
                            "two segment fetches outstanding"
                        );
                        self.requests
                            .push((self.elapsed(), Request::Segment(rendition, sequence)));
                        let since_start = self.elapsed();
                        let d = (self.segments)(since_start, rendition, sequence);
                        let completion = Completion::Segment {
                            rendition,
                            sequence,
                            bytes: d.bytes,
                            elapsed: d.latency,
                            ok: d.ok,
                        };
                        self.schedule(self.now + d.latency, completion);
                    }
                    Action::WaitUntil(t) => {
                        assert!(t > self.now, "WaitUntil must lie in the future");
                        return Some(t);
                    }
                    Action::Done => {
                        self.done_at.get_or_insert(self.elapsed());
                        return None;
                    }
                }
            }
            panic!("poll does not settle");
        }

        fn deliver_due(&mut self) {
            while self.pending.first().is_some_and(|p| p.0 <= self.now) {
                let (_, _, completion) = self.pending.remove(0);
                let before = self.player.current_rendition();
                match completion {
                    Completion::Playlist(_, Some(update)) => {
                        self.player.playlist_loaded(self.now, update)
                    }
                    Completion::Playlist(rendition, None) => {
                        self.player.playlist_failed(self.now, rendition)
                    }
                    Completion::Segment {
                        rendition,
                        sequence,
                        bytes,
                        elapsed,
                        ok,
                    } => {
                        if ok {
                            self.player
                                .segment_loaded(self.now, rendition, sequence, bytes, elapsed);
                            self.loaded.push((self.elapsed(), rendition, sequence));
                        } else {
                            self.player.segment_failed(self.now, rendition, sequence);
                        }
                    }
                }
                let after = self.player.current_rendition();
                if after != before {
                    self.switches.push((self.elapsed(), before, after));
                }
            }
        }

        /// Runs the scenario up to `end` (since the session start), inclusive.
        fn run_until(&mut self, end: Duration) {
            let end = self.t0 + end;
            for _ in 0..1_000_000 {
                let wake = self.issue();
                let event = self.pending.first().map(|p| p.0);
                let next = match (wake, event) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match next {
                    Some(t) if t <= end => self.now = t,
                    _ => {
                        // Like the shell at the end of a sleep: poll at `end`.
                        self.now = end.max(self.now);
                        self.issue();
                        return;
                    }
                }
                self.deliver_due();
            }
            panic!("simulation does not progress");
        }

        fn segment_requests(&self) -> Vec<(usize, u64)> {
            self.requests
                .iter()
                .filter_map(|(_, r)| match r {
                    Request::Segment(rendition, sequence) => Some((*rendition, *sequence)),
                    Request::Playlist(_) => None,
                })
                .collect()
        }

        fn playlist_requests(&self) -> usize {
            self.requests
                .iter()
                .filter(|(_, r)| matches!(r, Request::Playlist(_)))
                .count()
        }
    }

    /// A VOD of `count` segments of `segment` each, same for every rendition.
    fn vod(count: u64, segment: Duration) -> PlaylistSource {
        Box::new(move |_, rendition| {
            Some(playlist(rendition, segment, 0..=count - 1, segment, true))
        })
    }

    /// A live origin: `initial` segments exist at the session start, one more every `segment`; the
    /// playlist shows the last `window` of them.
    fn live(initial: u64, window: u64, segment: Duration) -> PlaylistSource {
        Box::new(move |since_start, rendition| {
            let produced = u64::try_from(since_start.as_nanos() / segment.as_nanos()).ok()?;
            let count = initial + produced;
            let first = count.saturating_sub(window);
            Some(playlist(
                rendition,
                segment,
                first..=count - 1,
                segment,
                false,
            ))
        })
    }

    /// Segment size at a rendition's nominal bandwidth.
    fn bytes_of(bandwidth: u64, segment: Duration) -> u64 {
        (bandwidth as f64 * segment.as_secs_f64() / 8.0) as u64
    }

    /// Every segment takes `latency(sequence)`; sizes follow the nominal bandwidth.
    fn latencies(
        bandwidths: &[u64],
        segment: Duration,
        latency: impl Fn(u64) -> Duration + 'static,
    ) -> SegmentSource {
        let mut sorted = bandwidths.to_vec();
        sorted.sort_unstable();
        Box::new(move |_, rendition, sequence| Delivery {
            latency: latency(sequence),
            bytes: bytes_of(sorted[rendition], segment),
            ok: true,
        })
    }

    /// Segments are downloaded at `throughput(request time since the start, sequence)` bits/s plus
    /// a 20 ms round trip.
    fn throughput(
        bandwidths: &[u64],
        segment: Duration,
        throughput: impl Fn(Duration, u64) -> f64 + 'static,
    ) -> SegmentSource {
        let mut sorted = bandwidths.to_vec();
        sorted.sort_unstable();
        Box::new(move |since_start, rendition, sequence| {
            let bytes = bytes_of(sorted[rendition], segment);
            let bits_per_second = throughput(since_start, sequence);
            let transfer = Duration::from_secs_f64(bytes as f64 * 8.0 / bits_per_second);
            Delivery {
                latency: ms(20) + transfer,
                bytes,
                ok: true,
            }
        })
    }

    const ONE_RENDITION: &[u64] = &[1_000_000];

    #[test]
    fn startup_time_is_when_the_startup_buffer_is_reached() {
        let mut sim = Sim::new(
            PlayerConfig::default(),
            ONE_RENDITION,
            vod(10, secs(2)),
            latencies(ONE_RENDITION, secs(2), |_| ms(300)),
        );
        // Playlist at 0.1 s, segment 0 at 0.4 s (2 s buffered), segment 1 at 0.7 s (4 s).
        sim.run_until(ms(500));
        assert_eq!(sim.player.state(), PlaybackState::Starting);
        assert_eq!(sim.player.buffer(sim.now), secs(2));
        assert_eq!(sim.stats().startup, None);
        sim.run_until(ms(700));
        assert_eq!(sim.player.state(), PlaybackState::Playing);
        assert_eq!(sim.stats().startup, Some(ms(700)));
        assert_eq!(sim.stats().stalls, 0);
        // Draining in real time: segment 2 (requested at 0.7 s) is not there yet at 0.9 s.
        assert_eq!(sim.player.buffer(sim.at(ms(900))), ms(3_800));
    }

    #[test]
    fn a_vod_shorter_than_the_startup_buffer_starts_once_fully_buffered() {
        let mut sim = Sim::new(
            PlayerConfig::default(),
            ONE_RENDITION,
            vod(1, ms(1_500)),
            latencies(ONE_RENDITION, ms(1_500), |_| ms(300)),
        );
        sim.run_until(secs(10));
        let stats = sim.stats();
        assert_eq!(stats.startup, Some(ms(400)));
        assert_eq!(sim.done_at, Some(ms(1_900)));
        assert_eq!(stats.watched, ms(1_500));
        assert_eq!(stats.stalls, 0);
    }

    #[test]
    fn a_late_segment_causes_exactly_one_stall() {
        // Segments 0 and 1 in 0.5 s each (playing at 1.1 s with 4 s buffered), then in real time
        // (2 s each: the buffer swings between 2 and 4 s), segment 6 takes 5.5 s (late by 1.5 s:
        // requested at 9.1 s with 4 s buffered, the buffer runs dry at 13.1 s, the segment lands at
        // 14.6 s with 2 s = resume_buffer), then 1 s each.
        let mut sim = Sim::new(
            PlayerConfig::default(),
            ONE_RENDITION,
            vod(30, secs(2)),
            latencies(ONE_RENDITION, secs(2), |sequence| match sequence {
                0 | 1 => ms(500),
                2..=5 => secs(2),
                6 => ms(5_500),
                _ => secs(1),
            }),
        );
        sim.run_until(secs(13));
        assert_eq!(sim.stats().stalls, 0);
        assert_eq!(sim.stats().startup, Some(ms(1_100)));
        // The stall begins exactly when the buffer hit zero (13.1 s), computed lazily.
        let lazily = sim.player.stats(sim.at(ms(13_101)));
        assert_eq!((lazily.stalls, lazily.stalled), (1, ms(1)));
        assert_eq!(
            sim.player.state_at(sim.at(ms(13_101))),
            PlaybackState::Stalled
        );

        // A stall in progress counts up to `now`.
        sim.run_until(secs(14));
        assert_eq!(sim.player.state(), PlaybackState::Stalled);
        assert_eq!(sim.player.buffer(sim.now), Duration::ZERO);
        assert_eq!((sim.stats().stalls, sim.stats().stalled), (1, ms(900)));
        assert_eq!(sim.player.stats(sim.at(ms(14_300))).stalled, ms(1_200));

        sim.run_until(secs(20));
        let stats = sim.stats();
        assert_eq!(sim.player.state(), PlaybackState::Playing);
        assert_eq!(stats.stalls, 1);
        assert_eq!(stats.stalled, ms(1_500));
        // Played 1.1 → 13.1 s and 14.6 → 20 s.
        assert_eq!(stats.watched, ms(17_400));
        // Segments 0..=11 downloaded by 20 s (24 s of media), 17.4 s played.
        assert_eq!(sim.player.buffer(sim.now), ms(6_600));
        assert!((stats.stall_ratio() - 1.5 / 17.4).abs() < 1e-9);
        assert_eq!(stats.failures, 0);
    }

    #[test]
    fn reload_timing_follows_playlist_changes() {
        let t0 = Instant::now();
        let at = |v: u64| t0 + ms(v);
        let mut player = Player::new(PlayerConfig::default(), renditions(ONE_RENDITION), t0);
        // The first playlist fetch is immediate, and only one is outstanding.
        assert_eq!(player.poll(t0), Action::FetchPlaylist { rendition: 0 });
        assert_eq!(player.poll(t0), Action::WaitUntil(at(1_000)));

        player.playlist_loaded(at(100), playlist(0, secs(2), 0..=9, secs(2), false));
        assert!(matches!(
            player.poll(at(100)),
            Action::FetchSegment { sequence: 7, .. }
        ));
        // Changed (first load): next reload one target duration after it was loaded.
        assert_eq!(player.poll(at(100)), Action::WaitUntil(at(2_100)));
        assert_eq!(player.poll(at(2_099)), Action::WaitUntil(at(2_100)));
        assert_eq!(
            player.poll(at(2_100)),
            Action::FetchPlaylist { rendition: 0 }
        );

        // Unchanged: half a target duration.
        player.playlist_loaded(at(2_200), playlist(0, secs(2), 0..=9, secs(2), false));
        assert_eq!(player.poll(at(2_200)), Action::WaitUntil(at(3_200)));
        assert_eq!(
            player.poll(at(3_200)),
            Action::FetchPlaylist { rendition: 0 }
        );

        // Failed: retried after half a target duration, and counted.
        player.playlist_failed(at(3_300), 0);
        assert_eq!(player.poll(at(3_300)), Action::WaitUntil(at(4_300)));
        assert_eq!(
            player.poll(at(4_300)),
            Action::FetchPlaylist { rendition: 0 }
        );
        assert_eq!(player.stats(at(4_300)).failures, 1);

        // Changed again (new last sequence): a full target duration.
        player.playlist_loaded(at(4_400), playlist(0, secs(2), 1..=10, secs(2), false));
        assert_eq!(player.poll(at(4_400)), Action::WaitUntil(at(6_400)));
    }

    #[test]
    fn playlist_retry_waits_at_least_500ms() {
        let t0 = Instant::now();
        let mut player = Player::new(PlayerConfig::default(), renditions(ONE_RENDITION), t0);
        assert_eq!(player.poll(t0), Action::FetchPlaylist { rendition: 0 });
        // No target duration known yet.
        player.playlist_failed(t0 + ms(50), 0);
        assert_eq!(player.poll(t0 + ms(50)), Action::WaitUntil(t0 + ms(550)));
        assert_eq!(
            player.poll(t0 + ms(550)),
            Action::FetchPlaylist { rendition: 0 }
        );
        player.playlist_loaded(t0 + ms(600), playlist(0, ms(600), 0..=9, ms(600), false));
        assert!(matches!(
            player.poll(t0 + ms(600)),
            Action::FetchSegment { .. }
        ));
        assert_eq!(
            player.poll(t0 + ms(1_199)),
            Action::WaitUntil(t0 + ms(1_200))
        );
        assert_eq!(
            player.poll(t0 + ms(1_200)),
            Action::FetchPlaylist { rendition: 0 }
        );
        // Half of a 600 ms target is 300 ms; the floor is 500 ms.
        player.playlist_failed(t0 + ms(1_250), 0);
        assert_eq!(
            player.poll(t0 + ms(1_250)),
            Action::WaitUntil(t0 + ms(1_750))
        );
        assert_eq!(player.stats(t0 + ms(1_250)).failures, 2);
    }

    #[test]
    fn a_vod_playlist_is_not_reloaded() {
        let mut sim = Sim::new(
            PlayerConfig::default(),
            ONE_RENDITION,
            vod(20, secs(2)),
            latencies(ONE_RENDITION, secs(2), |_| ms(100)),
        );
        sim.run_until(secs(60));
        assert!(sim.done_at.is_some());
        assert_eq!(sim.playlist_requests(), 1);
        assert_eq!(sim.segment_requests().len(), 20);
    }

    #[test]
    fn live_start_is_three_target_durations_behind_the_edge() {
        let t0 = Instant::now();
        let first_segment_at = |window: std::ops::RangeInclusive<u64>, behind: u32| {
            let config = PlayerConfig {
                live_start_target_durations: behind,
                ..PlayerConfig::default()
            };
            let mut player = Player::new(config, renditions(ONE_RENDITION), t0);
            assert_eq!(player.poll(t0), Action::FetchPlaylist { rendition: 0 });
            player.playlist_loaded(t0 + ms(100), playlist(0, secs(2), window, secs(2), false));
            match player.poll(t0 + ms(100)) {
                Action::FetchSegment { sequence, .. } => sequence,
                other => panic!("expected a segment fetch, got {other:?}"),
            }
        };
        let first_segment = |window| first_segment_at(window, 3);
        assert_eq!(first_segment(100..=109), 107);
        assert_eq!(first_segment(100..=101), 100);
        // `--live-start N`: N target durations behind.
        assert_eq!(first_segment_at(100..=109, 6), 104);
        assert_eq!(first_segment_at(100..=109, 1), 109);
        assert_eq!(first_segment_at(100..=109, 30), 100);
        // A VOD starts at its first segment.
        let mut player = Player::new(PlayerConfig::default(), renditions(ONE_RENDITION), t0);
        assert_eq!(player.poll(t0), Action::FetchPlaylist { rendition: 0 });
        player.playlist_loaded(t0, playlist(0, secs(2), 100..=109, secs(2), true));
        assert!(matches!(
            player.poll(t0),
            Action::FetchSegment { sequence: 100, .. }
        ));
    }

    #[test]
    fn live_playback_follows_the_edge_without_stalls() {
        let mut sim = Sim::new(
            PlayerConfig::default(),
            ONE_RENDITION,
            live(10, 6, secs(2)),
            latencies(ONE_RENDITION, secs(2), |_| ms(100)),
        );
        sim.run_until(secs(60));
        let stats = sim.stats();
        assert_eq!(stats.stalls, 0);
        let startup = stats.startup.unwrap_or(Duration::MAX);
        assert_eq!(startup, ms(300));
        assert_eq!(stats.watched + startup, secs(60));
        // Contiguous from 3 target durations behind the edge, one new segment every 2 s.
        let fetched: Vec<u64> = sim.segment_requests().iter().map(|r| r.1).collect();
        assert_eq!(fetched, (7..7 + fetched.len() as u64).collect::<Vec<_>>());
        // Segment 39 appears at 60 s; everything up to 38 was fetched.
        assert!((32..=33).contains(&fetched.len()), "{}", fetched.len());
        // Reloads every 2.1 s (changed: target after the load, 0.1 s latency), or 1.1 s when a
        // reload comes back unchanged.
        assert!(
            (25..=45).contains(&sim.playlist_requests()),
            "{}",
            sim.playlist_requests()
        );
    }

    #[test]
    fn fetching_stops_at_max_buffer() {
        let mut sim = Sim::new(
            PlayerConfig::default(),
            ONE_RENDITION,
            vod(100, secs(2)),
            latencies(ONE_RENDITION, secs(2), |_| ms(100)),
        );
        for t in [10, 20, 40] {
            sim.run_until(secs(t));
            let buffer = sim.player.buffer(sim.now);
            assert!(buffer >= secs(28) && buffer <= secs(32), "{buffer:?}");
        }
    }

    #[test]
    fn a_failed_segment_is_retried_after_500ms_and_counted() {
        let mut failed = false;
        let mut sim = Sim::new(
            PlayerConfig::default(),
            ONE_RENDITION,
            vod(5, secs(2)),
            Box::new(move |_, rendition, sequence| {
                let ok = sequence != 1 || failed;
                failed |= sequence == 1;
                Delivery {
                    latency: ms(200),
                    bytes: bytes_of(ONE_RENDITION[rendition], secs(2)),
                    ok,
                }
            }),
        );
        sim.run_until(secs(30));
        // Playlist 0.1 s, segment 0 at 0.3 s, segment 1 fails at 0.5 s, retried at 1.0 s.
        let segment_1: Vec<Duration> = sim
            .requests
            .iter()
            .filter(|(_, r)| *r == Request::Segment(0, 1))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(segment_1, vec![ms(300), ms(1_000)]);
        let stats = sim.stats();
        assert_eq!(stats.failures, 1);
        assert_eq!(stats.startup, Some(ms(1_200)));
        assert_eq!(stats.watched, secs(10));
    }

    #[test]
    fn abr_up_switch_waits_for_min_switch_interval() {
        let bandwidths = [4_000_000, 500_000, 2_000_000, 1_000_000];
        let mut sim = Sim::new(
            PlayerConfig::default(),
            &bandwidths,
            vod(60, secs(2)),
            throughput(&bandwidths, secs(2), |_, _| 20e6),
        );
        let sorted: Vec<u64> = sim
            .player
            .renditions()
            .iter()
            .map(|r| r.bandwidth)
            .collect();
        assert_eq!(sorted, vec![500_000, 1_000_000, 2_000_000, 4_000_000]);
        sim.run_until(secs(30));
        // One jump from the lowest straight to the highest, not before 4 s.
        assert_eq!(sim.switches.len(), 1, "{:?}", sim.switches);
        let (at, from, to) = sim.switches[0];
        assert_eq!((from, to), (0, 3));
        assert!(at >= secs(4) && at < secs(7), "{at:?}");
        let before: Vec<(usize, u64)> = sim
            .loaded
            .iter()
            .filter(|l| l.0 <= at)
            .map(|l| (l.1, l.2))
            .collect();
        assert!(before.len() > 10 && before.iter().all(|l| l.0 == 0));
        // The new rendition's playlist is fetched first, then the same media sequence continues.
        let last = before.last().map_or(0, |l| l.1);
        let after: Vec<&Request> = sim
            .requests
            .iter()
            .filter(|r| r.0 >= at)
            .map(|r| &r.1)
            .collect();
        assert_eq!(after[0], &Request::Playlist(3));
        assert_eq!(after[1], &Request::Segment(3, last + 1));
        assert_eq!(sim.stats().switches, 1);
    }

    #[test]
    fn abr_throughput_collapse_switches_down_immediately() {
        let bandwidths = [1_000_000, 2_000_000, 4_000_000];
        let config = PlayerConfig {
            abr: AbrConfig {
                initial_rendition: Some(2),
                // Up-switch hysteresis must not delay a down-switch.
                min_switch_interval: secs(600),
                ..AbrConfig::default()
            },
            ..PlayerConfig::default()
        };
        let mut sim = Sim::new(
            config,
            &bandwidths,
            vod(60, secs(2)),
            throughput(&bandwidths, secs(2), |_, sequence| {
                if sequence < 10 {
                    8e6
                } else {
                    1.5e6
                }
            }),
        );
        sim.run_until(secs(30));
        let first_slow = sim
            .loaded
            .iter()
            .find(|l| l.2 == 10)
            .map(|l| l.0)
            .unwrap_or(Duration::MAX);
        assert!(sim.loaded.iter().filter(|l| l.2 < 10).all(|l| l.1 == 2));
        // One 5.3 s sample at 1.5 Mbit/s after ~8 Mbit/s: the fast EWMA drops to ~3.3 Mbit/s (the
        // slow one stays at ~5.7 Mbit/s, which alone would keep 4 Mbit/s): down to 2 Mbit/s at once.
        assert_eq!(sim.switches[0], (first_slow, 2, 1));
        // Later samples keep the estimate falling: 1 Mbit/s, still no hysteresis.
        assert_eq!(sim.player.current_rendition(), 0);
        assert!(sim.switches.iter().all(|s| s.2 < s.1), "{:?}", sim.switches);
    }

    /// Runs a simulated minute at 1/2/4 Mbit/s renditions with an oscillating throughput. Up to
    /// 4 Mbit/s needs an estimate of 5.71 Mbit/s (4 / 0.7), back down happens below 4.21 Mbit/s
    /// (4 / 0.95).
    /// * `per_segment`: 6.5 and 4 Mbit/s on alternate segments. Deciding on the last sample alone
    ///   would switch up and down every two segments.
    /// * otherwise: 8 Mbit/s and 5 Mbit/s alternating every 8 s. The smoothed estimate swings
    ///   around 5.7 Mbit/s; a single threshold instead of the up/down dead band would flap.
    fn oscillation(abr: AbrConfig, per_segment: bool) -> Sim {
        let bandwidths = [1_000_000, 2_000_000, 4_000_000];
        let config = PlayerConfig {
            abr,
            ..PlayerConfig::default()
        };
        let mut sim = Sim::new(
            config,
            &bandwidths,
            vod(100, secs(2)),
            throughput(&bandwidths, secs(2), move |since_start, sequence| {
                match (
                    per_segment,
                    sequence % 2 == 0,
                    (since_start.as_secs() / 8) % 2 == 0,
                ) {
                    (true, true, _) => 6.5e6,
                    (true, false, _) => 4e6,
                    (false, _, true) => 8e6,
                    (false, _, false) => 5e6,
                }
            }),
        );
        sim.run_until(secs(60));
        sim
    }

    #[test]
    fn abr_oscillating_throughput_does_not_flap() {
        for per_segment in [true, false] {
            let sim = oscillation(AbrConfig::default(), per_segment);
            let stats = sim.stats();
            assert!(stats.switches >= 1, "never left the lowest rendition");
            assert!(stats.switches <= 3, "{:?}", sim.switches);
            assert_eq!(stats.switches as usize, sim.switches.len());
            assert_eq!(stats.stalls, 0);
        }
    }

    #[test]
    fn abr_up_switches_are_spaced_by_min_switch_interval_even_without_smoothing() {
        // Zero half-lives: the estimate is the last sample, so only the hysteresis interval holds
        // the player back.
        let abr = AbrConfig {
            fast_half_life: Duration::ZERO,
            slow_half_life: Duration::ZERO,
            ..AbrConfig::default()
        };
        let sim = oscillation(abr.clone(), true);
        assert!(sim.switches.len() > 3, "the scenario must provoke switches");
        assert!(sim.switches.len() <= 2 * 60 / 4 + 1, "{:?}", sim.switches);
        let mut last = Duration::ZERO;
        for &(at, from, to) in &sim.switches {
            if to > from {
                assert!(at - last >= abr.min_switch_interval, "{:?}", sim.switches);
            }
            last = at;
        }
    }

    #[test]
    fn a_stall_lasts_until_the_resume_buffer_is_reached() {
        // The scenario of `a_late_segment_causes_exactly_one_stall` with a 4 s resume buffer:
        // segment 6 lands at 14.6 s (2 s buffered, still stalled), segment 7 at 15.6 s (4 s).
        let config = PlayerConfig {
            resume_buffer: secs(4),
            ..PlayerConfig::default()
        };
        let mut sim = Sim::new(
            config,
            ONE_RENDITION,
            vod(30, secs(2)),
            latencies(ONE_RENDITION, secs(2), |sequence| match sequence {
                0 | 1 => ms(500),
                2..=5 => secs(2),
                6 => ms(5_500),
                _ => secs(1),
            }),
        );
        sim.run_until(ms(15_000));
        assert_eq!(sim.player.state(), PlaybackState::Stalled);
        assert_eq!(sim.player.buffer(sim.now), secs(2));
        sim.run_until(secs(20));
        let stats = sim.stats();
        assert_eq!((stats.stalls, stats.stalled), (1, ms(2_500)));
        assert_eq!(stats.watched, ms(16_400));
    }

    /// A segment from a slow peer does not send the player down (the node would have used HTTP
    /// had the peer been late); one from a fast peer may send it up.
    #[test]
    fn peer_segments_raise_the_estimate_but_never_lower_it() {
        let t0 = Instant::now();
        let at = |v: u64| t0 + ms(v);
        let config = PlayerConfig {
            abr: AbrConfig {
                initial_rendition: Some(1),
                min_switch_interval: Duration::ZERO,
                ..AbrConfig::default()
            },
            ..PlayerConfig::default()
        };
        let mut player = Player::new(config, renditions(&[1_000_000, 2_000_000]), t0);
        let window = |r, last: u64| playlist(r, secs(2), last - 5..=last, secs(2), false);
        assert_eq!(player.poll(at(0)), Action::FetchPlaylist { rendition: 1 });
        player.playlist_loaded(at(100), window(1, 9));
        assert!(matches!(
            player.poll(at(100)),
            Action::FetchSegment {
                rendition: 1,
                sequence: 7,
                ..
            }
        ));
        // 500 kB from a peer in 4 s (1 Mbit/s): over HTTP this sends it down (see the test
        // below); from peers it stays.
        player.segment_loaded_from_peers(at(4_100), 1, 7, 500_000, ms(4_000));
        assert_eq!(player.current_rendition(), 1);
        if player.poll(at(4_100)) == (Action::FetchPlaylist { rendition: 1 }) {
            player.playlist_loaded(at(4_150), window(1, 11));
        }
        assert!(matches!(
            player.poll(at(4_150)),
            Action::FetchSegment {
                rendition: 1,
                sequence: 8,
                ..
            }
        ));
        // The same over HTTP: down.
        player.segment_loaded(at(8_200), 1, 8, 500_000, ms(4_000));
        assert_eq!(player.current_rendition(), 0);
    }

    #[test]
    fn switching_to_a_stale_live_playlist_reloads_it_before_any_segment() {
        let t0 = Instant::now();
        let at = |v: u64| t0 + ms(v);
        let config = PlayerConfig {
            abr: AbrConfig {
                initial_rendition: Some(1),
                min_switch_interval: Duration::ZERO,
                ..AbrConfig::default()
            },
            ..PlayerConfig::default()
        };
        let mut player = Player::new(config, renditions(&[1_000_000, 2_000_000]), t0);
        let window = |r, last: u64| playlist(r, secs(2), last - 5..=last, secs(2), false);
        assert_eq!(player.poll(at(0)), Action::FetchPlaylist { rendition: 1 });
        player.playlist_loaded(at(100), window(1, 9));
        assert!(matches!(
            player.poll(at(100)),
            Action::FetchSegment {
                rendition: 1,
                sequence: 7,
                ..
            }
        ));
        // 500 kB in 4 s = 1 Mbit/s: down to 1 Mbit/s, whose playlist was never loaded.
        player.segment_loaded(at(4_100), 1, 7, 500_000, ms(4_000));
        assert_eq!(player.current_rendition(), 0);
        assert_eq!(
            player.poll(at(4_100)),
            Action::FetchPlaylist { rendition: 0 }
        );
        assert!(matches!(player.poll(at(4_100)), Action::WaitUntil(_)));
        player.playlist_loaded(at(4_200), window(0, 11));
        assert!(matches!(
            player.poll(at(4_200)),
            Action::FetchSegment {
                rendition: 0,
                sequence: 8,
                ..
            }
        ));
        // 5 MB in 1 s = 40 Mbit/s (the shell reports what it got): back up. Rendition 1's playlist
        // (loaded at 0.1 s) is older than a target duration and still lists segment 9, but it is
        // reloaded first.
        player.segment_loaded(at(5_200), 0, 8, 5_000_000, secs(1));
        assert_eq!(player.current_rendition(), 1);
        assert_eq!(
            player.poll(at(4_300)),
            Action::FetchPlaylist { rendition: 1 }
        );
        assert!(matches!(player.poll(at(4_300)), Action::WaitUntil(_)));
        player.playlist_loaded(at(4_400), window(1, 11));
        assert!(matches!(
            player.poll(at(4_400)),
            Action::FetchSegment {
                rendition: 1,
                sequence: 9,
                ..
            }
        ));
        assert_eq!(player.stats(at(5_300)).switches, 2);
    }

    #[test]
    fn vod_plays_to_the_end_then_done() {
        let mut sim = Sim::new(
            PlayerConfig::default(),
            ONE_RENDITION,
            vod(5, secs(2)),
            latencies(ONE_RENDITION, secs(2), |_| ms(100)),
        );
        // Playing at 0.3 s, everything downloaded at 0.6 s, 10 s of media.
        sim.run_until(ms(10_299));
        assert_eq!(sim.done_at, None);
        assert_eq!(sim.player.state(), PlaybackState::Playing);
        sim.run_until(secs(20));
        assert_eq!(sim.done_at, Some(ms(10_300)));
        assert_eq!(sim.player.state(), PlaybackState::Ended);
        assert_eq!(sim.player.poll(sim.now), Action::Done);
        let stats = sim.stats();
        assert_eq!(stats.watched, secs(10));
        assert_eq!(stats.stalls, 0);
        assert_eq!(stats.stalled, Duration::ZERO);
        assert_eq!(stats.average_bitrate, 1e6);
        assert_eq!(sim.player.buffer(sim.now), Duration::ZERO);
    }

    #[test]
    fn average_bitrate_is_time_weighted_over_played_media() {
        let bandwidths = [1_000_000, 3_000_000];
        let config = PlayerConfig {
            abr: AbrConfig {
                min_switch_interval: Duration::ZERO,
                ..AbrConfig::default()
            },
            ..PlayerConfig::default()
        };
        let mut sim = Sim::new(
            config,
            &bandwidths,
            vod(4, secs(2)),
            throughput(&bandwidths, secs(2), |_, _| 100e6),
        );
        sim.run_until(secs(20));
        let requests: Vec<Request> = sim.requests.iter().map(|r| r.1.clone()).collect();
        assert_eq!(
            requests,
            vec![
                Request::Playlist(0),
                Request::Segment(0, 0),
                Request::Playlist(1),
                Request::Segment(1, 1),
                Request::Segment(1, 2),
                Request::Segment(1, 3),
            ]
        );
        let stats = sim.stats();
        assert_eq!(stats.watched, secs(8));
        // 2 s at 1 Mbit/s and 6 s at 3 Mbit/s.
        assert!(
            (stats.average_bitrate - 2.5e6).abs() < 1.0,
            "{}",
            stats.average_bitrate
        );
        assert_eq!(stats.playing_rendition, 1);
        assert!(sim.done_at.is_some());
    }

    /// An LL-HLS playlist of 1 s segments of four 250 ms parts: segments up to `last` whole,
    /// `trailing` parts of the next, dated from the Unix epoch (segment k starts at k s).
    fn ll_playlist(last: u64, trailing: u64) -> MediaPlaylistUpdate {
        let epoch = std::time::UNIX_EPOCH;
        let part = |k: u64, j: u64| PartRef {
            uri: format!("r0/{k}.{j}.ts"),
            duration: ms(250),
        };
        MediaPlaylistUpdate {
            rendition: 0,
            target_duration: secs(1),
            media_sequence: last - 5,
            segments: (last - 5..=last)
                .map(|k| Segment {
                    sequence: k,
                    uri: format!("r0/{k}.ts"),
                    duration: secs(1),
                    program_date_time: Some(epoch + secs(k)),
                    parts: (0..4).map(|j| part(k, j)).collect(),
                })
                .collect(),
            ended: false,
            trailing_parts: (0..trailing).map(|j| part(last + 1, j)).collect(),
            low_latency: Some(LowLatency {
                part_target: ms(250),
                part_hold_back: ms(750),
            }),
        }
    }

    #[test]
    fn low_latency_starts_near_the_edge_blocks_and_fetches_parts() {
        let t0 = Instant::now();
        let mut player = Player::new(PlayerConfig::default(), renditions(&[1_000_000]), t0);
        assert_eq!(player.poll(t0), Action::FetchPlaylist { rendition: 0 });
        // At 100.5 s: segments up to 99 whole, two parts of 100.
        player.playlist_loaded(t0, ll_playlist(99, 2));
        // The next reload asks at once for part 2 of segment 100.
        assert_eq!(
            player.poll(t0),
            Action::BlockingReload {
                rendition: 0,
                msn: 100,
                part: 2
            }
        );
        // 750 ms behind the end (100.5 s) is in segment 99: fetched whole.
        assert_eq!(
            player.poll(t0),
            Action::FetchSegment {
                rendition: 0,
                sequence: 99,
                uri: "r0/99.ts".to_owned()
            }
        );
        let t1 = t0 + ms(40);
        player.segment_loaded(t1, 0, 99, 125_000, ms(40));
        // Then the parts of segment 100, from its first.
        assert_eq!(
            player.poll(t1),
            Action::FetchPart {
                rendition: 0,
                sequence: 100,
                part: 0,
                uri: "r0/100.0.ts".to_owned()
            }
        );
        player.part_loaded(t1, 0, 100, 0);
        // Startup needs only PART-HOLD-BACK: 1.25 s is buffered.
        assert_eq!(player.state_at(t1), PlaybackState::Playing);
        assert!(matches!(player.poll(t1), Action::FetchPart { part: 1, .. }));
        player.part_loaded(t1, 0, 100, 1);
        // Part 2 is not listed yet: wait for the blocking reload.
        assert!(matches!(player.poll(t1), Action::WaitUntil(_)));
        let t2 = t0 + ms(300);
        player.playlist_loaded(t2, ll_playlist(99, 3));
        assert_eq!(
            player.poll(t2),
            Action::BlockingReload {
                rendition: 0,
                msn: 100,
                part: 3
            }
        );
        assert!(matches!(
            player.poll(t2),
            Action::FetchPart {
                sequence: 100,
                part: 2,
                ..
            }
        ));
        player.part_loaded(t2, 0, 100, 2);
        // Segment 100 became whole with its four parts: its last part, then segment 101's.
        let t3 = t0 + ms(600);
        player.playlist_loaded(t3, ll_playlist(100, 1));
        assert!(matches!(
            player.poll(t3),
            Action::BlockingReload {
                msn: 101,
                part: 1,
                ..
            }
        ));
        assert!(matches!(
            player.poll(t3),
            Action::FetchPart {
                sequence: 100,
                part: 3,
                ..
            }
        ));
        player.part_loaded(t3, 0, 100, 3);
        assert!(matches!(
            player.poll(t3),
            Action::FetchPart {
                sequence: 101,
                part: 0,
                ..
            }
        ));
        // The picture at t3: 99 s + 1.25 s buffered at t1 (playing since), played 560 ms.
        let wall = std::time::UNIX_EPOCH + secs(101) + ms(100);
        let latency = player.live_latency(t3, wall).unwrap();
        assert_eq!(latency, secs(101) + ms(100) - (secs(99) + ms(560)));
        assert_eq!(player.stats(t3).stalls, 0);
    }

    #[test]
    fn a_failed_blocking_reload_falls_back_to_a_plain_one() {
        let t0 = Instant::now();
        let mut player = Player::new(PlayerConfig::default(), renditions(&[1_000_000]), t0);
        assert_eq!(player.poll(t0), Action::FetchPlaylist { rendition: 0 });
        player.playlist_loaded(t0, ll_playlist(99, 2));
        assert!(matches!(player.poll(t0), Action::BlockingReload { .. }));
        player.playlist_failed(t0, 0);
        let _ = player.poll(t0); // the segment
        let retry = t0 + MIN_PLAYLIST_DELAY;
        assert_eq!(player.poll(retry), Action::FetchPlaylist { rendition: 0 });
    }

    #[test]
    fn without_low_latency_an_ll_playlist_is_played_like_a_classic_one() {
        let t0 = Instant::now();
        let config = PlayerConfig {
            low_latency: false,
            ..PlayerConfig::default()
        };
        let mut player = Player::new(config, renditions(&[1_000_000]), t0);
        assert_eq!(player.poll(t0), Action::FetchPlaylist { rendition: 0 });
        player.playlist_loaded(t0, ll_playlist(99, 2));
        // Three target durations behind the end of the whole segments, whole segments only.
        assert!(matches!(
            player.poll(t0),
            Action::FetchSegment { sequence: 97, .. }
        ));
    }
}
