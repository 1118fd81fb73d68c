//! Gateway configuration: defaults < TOML file (`--config`) < environment (`GATEWAY_…`) < flags.
//!
//! The loader lives below the types; see `Config::load`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser as _;
use peer_assist::units::{BYTES_EXPECTED, DURATION_EXPECTED};

/// Log output format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole gateway configuration, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address the HTTP server listens on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Origin base URLs, in failover order. Empty = serve the built-in demo origin.
    pub origins: Vec<String>,
    pub log_format: LogFormat,
    /// tracing-subscriber EnvFilter directive, default "info".
    pub log_level: String,
    pub cache: CacheConfig,
    pub origin: OriginConfig,
    pub server: ServerConfig,
    pub follower: FollowerConfig,
    pub p2p: P2pConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub cmcd: CmcdConfig,
    pub cmsd: CmsdConfig,
    pub ledger: LedgerConfig,
}

/// The contribution ledger (docs/LEDGER.md): where believed receipts are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerConfig {
    /// SQLite file. Default: none (no ledger; the demo without `--origin` uses `ledger.sqlite3`).
    pub path: Option<PathBuf>,
    /// A PostgreSQL every gateway of a fleet writes to (`postgres://user@host/db`); takes
    /// precedence over `path`. Default: none.
    pub database_url: Option<String>,
    /// Length of an epoch (each is sealed with a Merkle root). Default 1 h.
    pub epoch: Duration,
    /// The gateway's Ed25519 key that signs epoch roots; created on first use. Default: next to
    /// `path` (`.key`), or `ledger.key` in the working directory.
    pub key_file: Option<PathBuf>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            path: None,
            database_url: None,
            epoch: Duration::from_secs(3600),
            key_file: None,
        }
    }
}

impl LedgerConfig {
    /// Whether a ledger is configured.
    pub fn enabled(&self) -> bool {
        self.path.is_some() || self.database_url.is_some()
    }
}

/// Common Media Client Data (CTA-5004) from players: read into metrics by object class, never a
/// label from a client string, never part of a cache key nor sent to the origin.
#[derive(Debug, Clone, PartialEq)]
pub struct CmcdConfig {
    pub enabled: bool, // default true
}

/// Common Media Server Data (CTA-5006) on every answer to an object request: `CMSD-Static` (what
/// the object is) and `CMSD-Dynamic` (the gateway's throughput estimate to this client, `etp`).
#[derive(Debug, Clone, PartialEq)]
pub struct CmsdConfig {
    pub enabled: bool, // default true
    /// How `CMSD-Dynamic` names this gateway: 1 to 64 printable ASCII characters. Default
    /// "gateway".
    pub server_id: String,
}

/// TLS towards viewers. Both files set: the listener speaks TLS (ALPN `h2`, `http/1.1`), and the
/// certificate is reloaded when the files change or on SIGHUP.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Default: none (plain HTTP).
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Default: none.
    pub key: Option<PathBuf>,
}

/// Signed URLs (see `docs/SECURITY.md`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthConfig {
    /// Signing keys, one `ID:HEX` per line; the last one signs, all verify. Default: none.
    pub key_file: Option<PathBuf>,
    /// Path prefixes whose playlists, segments, keys, digests and swarms need a token.
    /// Default: none.
    pub protect: Vec<String>,
    /// Header with the viewer's address, set by a trusted load balancer (for tokens bound to a
    /// client, and the tracker's per-address caps with or without auth). Default "" (the
    /// connection's address).
    pub client_ip_header: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Upper bound of cached body bytes. Default 512 MiB.
    pub max_bytes: u64,
    /// Overrides of the per-class freshness (None = the class default of DESIGN.md §3).
    pub ttl_multivariant: Option<Duration>,
    pub ttl_live_media: Option<Duration>,
    pub ttl_vod_media: Option<Duration>,
    pub ttl_segment: Option<Duration>,
    /// How long origin 4xx/5xx answers are cached. Default 1 s, capped at 1 s.
    pub ttl_error: Duration,
    /// How long past its stale bound the last live media playlist is still served while the
    /// origin cannot give a new one (viewers wait out an outage instead of failing). Default 5 min.
    pub live_outage_max: Duration,
    /// A live media playlist the origin marks `no-cache` or `max-age=0` is revalidated
    /// (conditionally, one request at a time) at most this often; viewers in between get the copy
    /// validated last. Default 500 ms.
    pub revalidate_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OriginConfig {
    pub connect_timeout: Duration,    // default 2 s
    pub first_byte_timeout: Duration, // default 5 s
    /// The deadline of one fetch, every retry, backoff and redirect included (a live segment's is
    /// also at most three target durations). Default 30 s.
    pub total_timeout: Duration,
    /// Retries after the first attempt, for idempotent requests. Default 2.
    pub retries: u32,
    pub backoff_base: Duration, // default 50 ms
    pub backoff_max: Duration,  // default 1 s
    /// Largest accepted origin body. Default 64 MiB.
    pub max_body_bytes: u64,
    /// Failures that open an origin's circuit (see `origin::breaker`). Default 5.
    pub breaker_failures: u32,
    /// How long an open circuit stays open before a trial request. Default 10 s.
    pub breaker_open: Duration,
    /// Origin requests in flight at once, all origins together; more wait. Default 64.
    pub max_connections: usize,
    /// Body bytes all origin fetches may buffer at once; a fetch that would pass it fails (503).
    /// Default 512 MiB.
    pub max_buffered_bytes: u64,
    /// Headers sent on every origin request (`Name: value`), e.g. the origin's credentials for
    /// prefetches. Default none.
    pub headers: Vec<(String, String)>,
    /// Query appended to every origin request (without '?'), e.g. an origin token. Default "".
    pub query: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Max total request header bytes (HTTP/1 read buffer). Default 16 KiB.
    pub max_header_bytes: usize,
    /// Max number of request headers. Default 64.
    pub max_headers: usize,
    /// Time allowed to receive a request's headers. Default 10 s.
    pub header_read_timeout: Duration,
    /// Idle keep-alive connections are closed after this. Default 60 s.
    pub idle_timeout: Duration,
    /// Requests processed at once; more are shed with 503. Default 4096.
    pub max_concurrency: usize,
    /// How long SIGTERM waits for in-flight requests. Default 30 s.
    pub drain_timeout: Duration,
    /// Client connections open at once; more are closed at accept. Default 10 000.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams one connection may open. Default 100.
    pub max_streams: u32,
    /// A response body that makes no progress (the client accepts none of it) for this long is
    /// aborted: the HTTP/2 stream is reset, the HTTP/1 connection closed. Default 30 s.
    pub send_timeout: Duration,
}

/// The peer-assist tracker mounted at `/p2p/v1/`.
#[derive(Debug, Clone, PartialEq)]
pub struct P2pConfig {
    pub enabled: bool, // default true
    /// Request header carrying the viewer's network region, set by the load balancer. Default "" (none).
    pub region_header: String,
    /// Split swarms by region (else the region only orders matching). Default false.
    pub split_by_region: bool,
    /// Peers introduced to each peer. Default 8.
    pub peers_returned: usize,
    /// Peers in one swarm. Default 500.
    pub max_peers_per_swarm: usize,
    /// Swarms at once. Default 10 000.
    pub max_swarms: usize,
    /// Peers joined at once from one client address (IPv6: one /64). Default 100.
    pub max_peers_per_address: usize,
    /// Streams one client address may be in at once. Default 8.
    pub max_swarms_per_address: usize,
    /// A signalling send that takes longer drops the peer (it stopped reading). Default 5 s.
    pub send_timeout: Duration,
    /// Sustained signalling messages per second per connection. Default 20.
    pub messages_per_second: u32,
    /// Largest signalling message. Default 64 KiB.
    pub max_message_bytes: usize,
    /// ICE server URLs (`stun:`, `stuns:`, `turn:`, `turns:`) handed to browsers through
    /// `/player/config.json`. Default none: host candidates only, enough on one network.
    pub ice_servers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FollowerConfig {
    pub enabled: bool, // default true
    /// A live rendition not requested for this long (and at least three target durations) stops being
    /// followed. Default 6 s.
    pub idle_after: Duration,
    /// At most this many renditions are followed at once. Default 256.
    pub max_renditions: usize,
    /// At most this many of them may have been started by one client address (an IPv4 address, an
    /// IPv6 /64). Default 16.
    pub max_per_client: usize,
}

// ---------------------------------------------------------------------------
// Defaults

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            origins: Vec::new(),
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            cache: CacheConfig::default(),
            origin: OriginConfig::default(),
            server: ServerConfig::default(),
            follower: FollowerConfig::default(),
            p2p: P2pConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            cmcd: CmcdConfig::default(),
            cmsd: CmsdConfig::default(),
            ledger: LedgerConfig::default(),
        }
    }
}

impl Default for CmcdConfig {
    fn default() -> Self {
        CmcdConfig { enabled: true }
    }
}

impl Default for CmsdConfig {
    fn default() -> Self {
        CmsdConfig {
            enabled: true,
            server_id: "gateway".to_owned(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 512 * MIB,
            ttl_multivariant: None,
            ttl_live_media: None,
            ttl_vod_media: None,
            ttl_segment: None,
            ttl_error: Duration::from_secs(1),
            live_outage_max: Duration::from_secs(300),
            revalidate_interval: Duration::from_millis(500),
        }
    }
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            connect_timeout: Duration::from_secs(2),
            first_byte_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            retries: 2,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            max_body_bytes: 64 * MIB,
            breaker_failures: 5,
            breaker_open: Duration::from_secs(10),
            max_connections: 64,
            max_buffered_bytes: 512 * MIB,
            headers: Vec::new(),
            query: String::new(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_concurrency: 4096,
            drain_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_streams: 100,
            send_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for FollowerConfig {
    fn default() -> Self {
        FollowerConfig {
            enabled: true,
            idle_after: Duration::from_secs(6),
            max_renditions: 256,
            max_per_client: 16,
        }
    }
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            enabled: true,
            region_header: String::new(),
            split_by_region: false,
            peers_returned: 8,
            max_peers_per_swarm: 500,
            max_swarms: 10_000,
            max_peers_per_address: 100,
            max_swarms_per_address: 8,
            send_timeout: Duration::from_secs(5),
            messages_per_second: 20,
            max_message_bytes: 64 * 1024,
            ice_servers: Vec::new(),
        }
    }
}

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Errors

/// Why the configuration could not be loaded. Every message names the offending
/// key (or environment variable) and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--help`, `--version` or a malformed command line. The caller should
    /// call [`clap::Error::exit`] on it (exit code 0 for help/version).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The `--config` file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax error, or a value of the wrong type / unparsable value.
    /// `location` is the file path or `"environment"`; `message` names the key.
    #[error("invalid configuration in {location}: {message}")]
    Parse { location: String, message: String },
    /// A key that does not exist: the full dotted key (`cache.max_bytez`) for
    /// files, the variable name (`GATEWAY_CACHE_MAX_BYTEZ`) for the environment.
    #[error("unknown configuration key \"{key}\" in {location}")]
    UnknownKey { location: String, key: String },
    /// The merged configuration is inconsistent or out of range.
    #[error("invalid configuration value for {key}: {message}")]
    Invalid { key: String, message: String },
}

/// `location` used for errors in environment variables.
const ENV_LOCATION: &str = "environment";
/// Every environment variable with this prefix must name a key.
const ENV_PREFIX: &str = "GATEWAY_";

// ---------------------------------------------------------------------------
// Loading

impl Config {
    /// Builds the configuration from `args` (including the program name, as in
    /// `std::env::args_os()`) and `env`, layering
    /// defaults < `--config` TOML file < `GATEWAY_*` environment < flags,
    /// then validates and normalises the result.
    pub fn load<I, T>(
        args: I,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        let mut config = Config::default();
        if let Some(path) = &cli.config {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            config.apply_toml_str(&text, &path.display().to_string())?;
        }
        config.apply_env(env)?;
        cli.apply_to(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// [`Config::load`] with the process's arguments and environment.
    ///
    /// Unlike `std::env::vars` this does not panic on non-UTF-8 variables:
    /// unrelated ones are ignored, a non-UTF-8 `GATEWAY_*` value is an error.
    pub fn from_process() -> Result<Config, ConfigError> {
        let env = env_from_os(std::env::vars_os())?;
        Config::load(std::env::args_os(), env)
    }

    /// Applies one TOML document; `location` names it in errors.
    fn apply_toml_str(&mut self, text: &str, location: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                location: location.to_owned(),
                message: e.to_string().trim_end().to_owned(),
            })?;
        for (name, value) in &table {
            if SECTIONS.contains(&name.as_str()) {
                let toml::Value::Table(section) = value else {
                    return Err(ConfigError::Parse {
                        location: location.to_owned(),
                        message: format!(
                            "{name}: expected a table ([{name}]), found {}",
                            value.type_str()
                        ),
                    });
                };
                for (field, value) in section {
                    self.apply_toml_key(&format!("{name}.{field}"), Some(field), value, location)?;
                }
            } else {
                self.apply_toml_key(name, None, value, location)?;
            }
        }
        Ok(())
    }

    /// `dotted` is the full key; `field` the part after the section, if any.
    fn apply_toml_key(
        &mut self,
        dotted: &str,
        field: Option<&str>,
        value: &toml::Value,
        location: &str,
    ) -> Result<(), ConfigError> {
        // A quoted key such as `"cache.max_bytes" = 1` is one key containing a
        // dot, not a path; it must not match.
        let last = field.unwrap_or(dotted);
        let key = KEYS
            .iter()
            .find(|k| k.name == dotted && !last.contains('.'))
            .ok_or_else(|| ConfigError::UnknownKey {
                location: location.to_owned(),
                key: dotted.to_owned(),
            })?;
        (key.set)(self, Raw::Toml(value)).map_err(|message| ConfigError::Parse {
            location: location.to_owned(),
            message: format!("{dotted}: {message}"),
        })
    }

    /// Applies every `GATEWAY_*` variable; other variables are ignored.
    fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && !is_service_link(name))
            .collect();
        // Deterministic order, so the first error reported does not depend on
        // the platform's environment order. Stable: a repeated name's last value wins.
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (var, value) in &vars {
            let key = KEYS
                .iter()
                .find(|k| env_var_name(k.name) == *var)
                .ok_or_else(|| ConfigError::UnknownKey {
                    location: ENV_LOCATION.to_owned(),
                    key: var.clone(),
                })?;
            (key.set)(self, Raw::Str(value)).map_err(|message| ConfigError::Parse {
                location: ENV_LOCATION.to_owned(),
                message: format!("{var}: {message}"),
            })?;
        }
        Ok(())
    }

    /// Checks ranges and cross-field rules; normalises origins to end in `/`.
    fn validate(&mut self) -> Result<(), ConfigError> {
        fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key: key.to_owned(),
                message: message.into(),
            }
        }

        for (i, origin) in self.origins.iter_mut().enumerate() {
            *origin = normalize_origin(origin)
                .map_err(|m| invalid("origins", format!("entry {}: {m}", i + 1)))?;
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            let missing = if self.tls.cert.is_some() {
                "tls.key"
            } else {
                "tls.cert"
            };
            return Err(invalid(missing, "TLS needs both tls.cert and tls.key"));
        }
        for (i, prefix) in self.auth.protect.iter().enumerate() {
            if !prefix.starts_with('/') {
                return Err(invalid(
                    "auth.protect",
                    format!(
                        "entry {}: {prefix:?} must be a path prefix starting with '/'",
                        i + 1
                    ),
                ));
            }
        }
        if !self.auth.protect.is_empty() && self.auth.key_file.is_none() {
            return Err(invalid(
                "auth.key_file",
                "auth.protect needs the keys that sign tokens (auth.key_file)",
            ));
        }
        if !self.auth.client_ip_header.is_empty()
            && http::HeaderName::from_bytes(self.auth.client_ip_header.as_bytes()).is_err()
        {
            return Err(invalid("auth.client_ip_header", "not a valid header name"));
        }
        let id = &self.cmsd.server_id;
        if id.is_empty()
            || id.len() > MAX_SERVER_ID
            || !id.bytes().all(|b| (b' '..=b'~').contains(&b))
        {
            return Err(invalid(
                "cmsd.server_id",
                format!("{id:?}: expected 1 to {MAX_SERVER_ID} printable ASCII characters"),
            ));
        }
        for (i, url) in self.p2p.ice_servers.iter().enumerate() {
            check_ice_server(url)
                .map_err(|m| invalid("p2p.ice_servers", format!("entry {}: {m}", i + 1)))?;
        }

        if self.cache.max_bytes == 0 {
            return Err(invalid("cache.max_bytes", "must be greater than 0"));
        }
        if self.cache.ttl_error > MAX_TTL_ERROR {
            return Err(invalid(
                "cache.ttl_error",
                format!(
                    "must be at most 1s (errors are cached briefly), got {}",
                    format_duration(self.cache.ttl_error)
                ),
            ));
        }
        if self.cache.live_outage_max > MAX_LIVE_OUTAGE {
            return Err(invalid(
                "cache.live_outage_max",
                format!(
                    "must be at most 1h, got {}",
                    format_duration(self.cache.live_outage_max)
                ),
            ));
        }
        if self.cache.revalidate_interval > MAX_REVALIDATE_INTERVAL {
            return Err(invalid(
                "cache.revalidate_interval",
                format!(
                    "must be at most 10s, got {}",
                    format_duration(self.cache.revalidate_interval)
                ),
            ));
        }
        if self.origin.max_body_bytes == 0 {
            return Err(invalid("origin.max_body_bytes", "must be greater than 0"));
        }
        if self.origin.max_connections == 0 {
            return Err(invalid("origin.max_connections", "must be at least 1"));
        }
        if self.origin.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(invalid(
                "origin.max_connections",
                format!("must be at most {}", tokio::sync::Semaphore::MAX_PERMITS),
            ));
        }
        if self.origin.max_buffered_bytes == 0 {
            return Err(invalid(
                "origin.max_buffered_bytes",
                "must be greater than 0",
            ));
        }
        for (name, value) in &self.origin.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(
                    "origin.headers",
                    format!("{name:?} is not a valid header name"),
                ));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return Err(invalid(
                    "origin.headers",
                    format!("the value of {name} is not a valid header value"),
                ));
            }
        }
        if self.origin.query.starts_with('?')
            || self.origin.query.contains(['#', ' '])
            || self.origin.query.chars().any(char::is_control)
        {
            return Err(invalid(
                "origin.query",
                "expected a query string without '?', such as \"token=abc\"",
            ));
        }
        if self.origin.breaker_failures == 0 {
            return Err(invalid("origin.breaker_failures", "must be at least 1"));
        }
        if self.origin.backoff_base > self.origin.backoff_max {
            return Err(invalid(
                "origin.backoff_base",
                format!(
                    "{} is larger than origin.backoff_max ({})",
                    format_duration(self.origin.backoff_base),
                    format_duration(self.origin.backoff_max)
                ),
            ));
        }
        if self.server.max_header_bytes < MIN_HEADER_BYTES {
            return Err(invalid(
                "server.max_header_bytes",
                format!(
                    "must be at least {MIN_HEADER_BYTES} (8KiB, hyper's minimum HTTP/1 buffer), got {}",
                    self.server.max_header_bytes
                ),
            ));
        }
        if self.server.max_headers == 0 {
            return Err(invalid("server.max_headers", "must be at least 1"));
        }
        if self.server.max_concurrency == 0 {
            return Err(invalid("server.max_concurrency", "must be at least 1"));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if self.server.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(invalid("server.max_connections", "is too large"));
        }
        if self.server.max_streams == 0 {
            return Err(invalid("server.max_streams", "must be at least 1"));
        }
        if self.follower.max_per_client == 0 {
            return Err(invalid("follower.max_per_client", "must be at least 1"));
        }
        if self.server.max_concurrency > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(invalid(
                "server.max_concurrency",
                format!("must be at most {}", tokio::sync::Semaphore::MAX_PERMITS),
            ));
        }

        let timeouts = [
            ("origin.connect_timeout", self.origin.connect_timeout),
            ("origin.first_byte_timeout", self.origin.first_byte_timeout),
            ("origin.total_timeout", self.origin.total_timeout),
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.idle_timeout", self.server.idle_timeout),
            ("server.drain_timeout", self.server.drain_timeout),
            ("p2p.send_timeout", self.p2p.send_timeout),
            ("server.send_timeout", self.server.send_timeout),
        ];
        for (key, value) in timeouts {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.ledger.epoch < Duration::from_secs(1)
            || self.ledger.epoch.subsec_nanos() != 0
            || self.ledger.epoch > Duration::from_secs(366 * 24 * 3600)
        {
            return Err(invalid(
                "ledger.epoch",
                "must be a whole number of seconds, from 1 s to 366 days",
            ));
        }

        // Durations are added to `Instant`s elsewhere; absurd values would
        // overflow (and panic) there.
        let durations = [
            ("cache.ttl_multivariant", self.cache.ttl_multivariant),
            ("cache.ttl_live_media", self.cache.ttl_live_media),
            ("cache.ttl_vod_media", self.cache.ttl_vod_media),
            ("cache.ttl_segment", self.cache.ttl_segment),
            ("origin.backoff_max", Some(self.origin.backoff_max)),
            ("origin.breaker_open", Some(self.origin.breaker_open)),
            ("follower.idle_after", Some(self.follower.idle_after)),
        ]
        .into_iter()
        .chain(timeouts.into_iter().map(|(k, v)| (k, Some(v))));
        for (key, value) in durations {
            if value.is_some_and(|v| v > MAX_DURATION) {
                return Err(invalid(key, "must be at most 365d"));
            }
        }
        Ok(())
    }
}

/// Upper bound of `cache.live_outage_max`: moka keeps every live playlist this long past its bound.
const MAX_LIVE_OUTAGE: Duration = Duration::from_secs(3600);
/// Upper bound of `cache.revalidate_interval`.
const MAX_REVALIDATE_INTERVAL: Duration = Duration::from_secs(10);

/// Longest `cmsd.server_id`: it is on every answer.
const MAX_SERVER_ID: usize = 64;

/// Upper bound of `cache.ttl_error`.
const MAX_TTL_ERROR: Duration = Duration::from_secs(1);
/// hyper panics if the HTTP/1 read buffer is smaller than 8192 bytes.
const MIN_HEADER_BYTES: usize = 8192;
/// Upper bound of every duration (one year).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Converts the process environment without panicking on non-UTF-8 entries.
pub(crate) fn env_from_os(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in vars {
        let Ok(name) = name.into_string() else {
            continue;
        };
        match value.into_string() {
            Ok(value) => out.push((name, value)),
            Err(_) if name.starts_with(ENV_PREFIX) => {
                return Err(ConfigError::Parse {
                    location: ENV_LOCATION.to_owned(),
                    message: format!("{name}: value is not valid UTF-8"),
                })
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

/// Checks that `origin` is an absolute http(s) base URL and makes it end in `/`.
fn normalize_origin(origin: &str) -> Result<String, String> {
    const EXPECTED: &str =
        "expected an absolute http:// or https:// URL such as \"http://127.0.0.1:9000/\"";
    let uri: http::Uri = origin
        .parse()
        .map_err(|e| format!("{origin:?} is not a valid URL ({e}); {EXPECTED}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{origin:?}: {EXPECTED}")),
    }
    match uri.authority() {
        Some(authority) if !authority.host().is_empty() => {}
        _ => return Err(format!("{origin:?} has no host; {EXPECTED}")),
    }
    if uri.query().is_some() || origin.contains('#') {
        return Err(format!(
            "{origin:?}: a base URL must not contain a query or fragment"
        ));
    }
    let mut normalized = origin.to_owned();
    if !normalized.ends_with('/') {
        normalized.push('/');
    }
    Ok(normalized)
}

// ---------------------------------------------------------------------------
// Keys shared by the TOML file and the environment

/// Names of the TOML tables; their keys are `<section>.<field>`.
const SECTIONS: &[&str] = &[
    "cache", "origin", "server", "follower", "p2p", "tls", "auth", "cmcd", "cmsd", "ledger",
];

type Setter = fn(&mut Config, Raw<'_>) -> Result<(), String>;

/// One settable key. `name` is the dotted TOML key; the environment variable
/// and the flag are derived from it (see [`env_var_name`]).
struct Key {
    name: &'static str,
    set: Setter,
}

/// Every configuration key. The flags in [`Cli`] mirror this list (checked by tests).
#[rustfmt::skip]
static KEYS: &[Key] = &[
    Key { name: "listen", set: |c, v| { c.listen = v.socket_addr()?; Ok(()) } },
    Key { name: "origins", set: |c, v| { c.origins = v.origins()?; Ok(()) } },
    Key { name: "log_format", set: |c, v| { c.log_format = v.log_format()?; Ok(()) } },
    Key { name: "log_level", set: |c, v| { c.log_level = v.string()?; Ok(()) } },
    Key { name: "cache.max_bytes", set: |c, v| { c.cache.max_bytes = v.bytes()?; Ok(()) } },
    Key { name: "cache.ttl_multivariant", set: |c, v| { c.cache.ttl_multivariant = v.ttl_override()?; Ok(()) } },
    Key { name: "cache.ttl_live_media", set: |c, v| { c.cache.ttl_live_media = v.ttl_override()?; Ok(()) } },
    Key { name: "cache.ttl_vod_media", set: |c, v| { c.cache.ttl_vod_media = v.ttl_override()?; Ok(()) } },
    Key { name: "cache.ttl_segment", set: |c, v| { c.cache.ttl_segment = v.ttl_override()?; Ok(()) } },
    Key { name: "cache.ttl_error", set: |c, v| { c.cache.ttl_error = v.duration()?; Ok(()) } },
    Key { name: "cache.live_outage_max", set: |c, v| { c.cache.live_outage_max = v.duration()?; Ok(()) } },
    Key { name: "cache.revalidate_interval", set: |c, v| { c.cache.revalidate_interval = v.duration()?; Ok(()) } },
    Key { name: "origin.connect_timeout", set: |c, v| { c.origin.connect_timeout = v.duration()?; Ok(()) } },
    Key { name: "origin.first_byte_timeout", set: |c, v| { c.origin.first_byte_timeout = v.duration()?; Ok(()) } },
    Key { name: "origin.total_timeout", set: |c, v| { c.origin.total_timeout = v.duration()?; Ok(()) } },
    Key { name: "origin.retries", set: |c, v| { c.origin.retries = v.count_u32()?; Ok(()) } },
    Key { name: "origin.backoff_base", set: |c, v| { c.origin.backoff_base = v.duration()?; Ok(()) } },
    Key { name: "origin.backoff_max", set: |c, v| { c.origin.backoff_max = v.duration()?; Ok(()) } },
    Key { name: "origin.max_body_bytes", set: |c, v| { c.origin.max_body_bytes = v.bytes()?; Ok(()) } },
    Key { name: "origin.breaker_failures", set: |c, v| { c.origin.breaker_failures = v.count_u32()?; Ok(()) } },
    Key { name: "origin.breaker_open", set: |c, v| { c.origin.breaker_open = v.duration()?; Ok(()) } },
    Key { name: "origin.max_connections", set: |c, v| { c.origin.max_connections = v.count_usize()?; Ok(()) } },
    Key { name: "origin.max_buffered_bytes", set: |c, v| { c.origin.max_buffered_bytes = v.bytes()?; Ok(()) } },
    Key { name: "origin.headers", set: |c, v| { c.origin.headers = v.headers()?; Ok(()) } },
    Key { name: "origin.query", set: |c, v| { c.origin.query = v.string()?; Ok(()) } },
    Key { name: "server.max_header_bytes", set: |c, v| { c.server.max_header_bytes = v.bytes_usize()?; Ok(()) } },
    Key { name: "server.max_headers", set: |c, v| { c.server.max_headers = v.count_usize()?; Ok(()) } },
    Key { name: "server.header_read_timeout", set: |c, v| { c.server.header_read_timeout = v.duration()?; Ok(()) } },
    Key { name: "server.idle_timeout", set: |c, v| { c.server.idle_timeout = v.duration()?; Ok(()) } },
    Key { name: "server.max_concurrency", set: |c, v| { c.server.max_concurrency = v.count_usize()?; Ok(()) } },
    Key { name: "server.drain_timeout", set: |c, v| { c.server.drain_timeout = v.duration()?; Ok(()) } },
    Key { name: "server.max_connections", set: |c, v| { c.server.max_connections = v.count_usize()?; Ok(()) } },
    Key { name: "server.max_streams", set: |c, v| { c.server.max_streams = v.count_u32()?; Ok(()) } },
    Key { name: "server.send_timeout", set: |c, v| { c.server.send_timeout = v.duration()?; Ok(()) } },
    Key { name: "follower.enabled", set: |c, v| { c.follower.enabled = v.boolean()?; Ok(()) } },
    Key { name: "follower.idle_after", set: |c, v| { c.follower.idle_after = v.duration()?; Ok(()) } },
    Key { name: "follower.max_renditions", set: |c, v| { c.follower.max_renditions = v.count_usize()?; Ok(()) } },
    Key { name: "follower.max_per_client", set: |c, v| { c.follower.max_per_client = v.count_usize()?; Ok(()) } },
    Key { name: "p2p.enabled", set: |c, v| { c.p2p.enabled = v.boolean()?; Ok(()) } },
    Key { name: "p2p.region_header", set: |c, v| { c.p2p.region_header = v.string()?; Ok(()) } },
    Key { name: "p2p.split_by_region", set: |c, v| { c.p2p.split_by_region = v.boolean()?; Ok(()) } },
    Key { name: "p2p.peers_returned", set: |c, v| { c.p2p.peers_returned = v.count_usize()?; Ok(()) } },
    Key { name: "p2p.max_peers_per_swarm", set: |c, v| { c.p2p.max_peers_per_swarm = v.count_usize()?; Ok(()) } },
    Key { name: "p2p.max_swarms", set: |c, v| { c.p2p.max_swarms = v.count_usize()?; Ok(()) } },
    Key { name: "p2p.max_peers_per_address", set: |c, v| { c.p2p.max_peers_per_address = v.count_usize()?; Ok(()) } },
    Key { name: "p2p.max_swarms_per_address", set: |c, v| { c.p2p.max_swarms_per_address = v.count_usize()?; Ok(()) } },
    Key { name: "p2p.send_timeout", set: |c, v| { c.p2p.send_timeout = v.duration()?; Ok(()) } },
    Key { name: "p2p.messages_per_second", set: |c, v| { c.p2p.messages_per_second = v.count_u32()?; Ok(()) } },
    Key { name: "p2p.max_message_bytes", set: |c, v| { c.p2p.max_message_bytes = v.bytes_usize()?; Ok(()) } },
    Key { name: "p2p.ice_servers", set: |c, v| { c.p2p.ice_servers = v.ice_servers()?; Ok(()) } },
    Key { name: "tls.cert", set: |c, v| { c.tls.cert = v.path()?; Ok(()) } },
    Key { name: "tls.key", set: |c, v| { c.tls.key = v.path()?; Ok(()) } },
    Key { name: "auth.key_file", set: |c, v| { c.auth.key_file = v.path()?; Ok(()) } },
    Key { name: "auth.protect", set: |c, v| { c.auth.protect = v.string_list("an array of path prefixes such as [\"/live/\"]")?; Ok(()) } },
    Key { name: "auth.client_ip_header", set: |c, v| { c.auth.client_ip_header = v.string()?; Ok(()) } },
    Key { name: "cmcd.enabled", set: |c, v| { c.cmcd.enabled = v.boolean()?; Ok(()) } },
    Key { name: "cmsd.enabled", set: |c, v| { c.cmsd.enabled = v.boolean()?; Ok(()) } },
    Key { name: "cmsd.server_id", set: |c, v| { c.cmsd.server_id = v.string()?; Ok(()) } },
    Key { name: "ledger.path", set: |c, v| { c.ledger.path = v.path()?; Ok(()) } },
    Key { name: "ledger.database_url", set: |c, v| { let s = v.string()?; c.ledger.database_url = (!s.trim().is_empty() && s.trim() != "none").then(|| s.trim().to_owned()); Ok(()) } },
    Key { name: "ledger.epoch", set: |c, v| { c.ledger.epoch = v.duration()?; Ok(()) } },
    Key { name: "ledger.key_file", set: |c, v| { c.ledger.key_file = v.path()?; Ok(()) } },
];

/// `cache.max_bytes` → `GATEWAY_CACHE_MAX_BYTES`.
/// Kubernetes injects `GATEWAY_PORT`, `GATEWAY_PORT_8080_TCP…` and `GATEWAY_SERVICE_HOST/PORT…` into
/// every pod of a namespace with a Service named `gateway`: they are not configuration and must not
/// stop the gateway from starting.
fn is_service_link(name: &str) -> bool {
    name == "GATEWAY_PORT"
        || name.starts_with("GATEWAY_PORT_")
        || name.starts_with("GATEWAY_SERVICE_")
}

fn env_var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

/// A value from the TOML file (typed) or the environment (always a string).
/// Strings go through the same parsers wherever they come from.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Toml(&'a toml::Value),
    Str(&'a str),
}

impl<'a> Raw<'a> {
    fn as_str(self) -> Option<&'a str> {
        match self {
            Raw::Str(s) => Some(s),
            Raw::Toml(toml::Value::String(s)) => Some(s),
            Raw::Toml(_) => None,
        }
    }

    fn type_error(self, expected: &str) -> String {
        match self {
            Raw::Toml(v) => format!("expected {expected}, found {}", v.type_str()),
            Raw::Str(s) => format!("expected {expected}, found {s:?}"),
        }
    }

    /// A non-negative TOML integer.
    fn toml_uint(self) -> Option<Result<u64, String>> {
        match self {
            Raw::Toml(toml::Value::Integer(n)) => {
                Some(u64::try_from(*n).map_err(|_| format!("must not be negative, found {n}")))
            }
            _ => None,
        }
    }

    fn duration(self) -> Result<Duration, String> {
        if let Some(s) = self.as_str() {
            return parse_duration(s);
        }
        if let Some(secs) = self.toml_uint() {
            return secs.map(Duration::from_secs);
        }
        match self {
            Raw::Toml(toml::Value::Float(f)) => Duration::try_from_secs_f64(*f).map_err(|_| {
                format!("invalid duration {f} (must be a non-negative number of seconds)")
            }),
            _ => Err(self.type_error(DURATION_EXPECTED)),
        }
    }

    /// A duration, or `"default"` for the built-in class default (`None`).
    fn ttl_override(self) -> Result<Option<Duration>, String> {
        match self.as_str() {
            Some(s) if is_default_keyword(s) => Ok(None),
            _ => self.duration().map(Some),
        }
    }

    fn bytes(self) -> Result<u64, String> {
        if let Some(s) = self.as_str() {
            return parse_bytes(s);
        }
        self.toml_uint()
            .unwrap_or_else(|| Err(self.type_error(BYTES_EXPECTED)))
    }

    fn bytes_usize(self) -> Result<usize, String> {
        to_usize(self.bytes()?)
    }

    fn count(self) -> Result<u64, String> {
        if let Some(s) = self.as_str() {
            return parse_count(s);
        }
        self.toml_uint()
            .unwrap_or_else(|| Err(self.type_error("a non-negative integer")))
    }

    fn count_u32(self) -> Result<u32, String> {
        to_u32(self.count()?)
    }

    fn count_usize(self) -> Result<usize, String> {
        to_usize(self.count()?)
    }

    fn boolean(self) -> Result<bool, String> {
        if let Some(s) = self.as_str() {
            return parse_bool(s);
        }
        match self {
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            _ => Err(self.type_error("true or false")),
        }
    }

    fn string(self) -> Result<String, String> {
        self.as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.type_error("a string"))
    }

    fn socket_addr(self) -> Result<SocketAddr, String> {
        let s = self.as_str().ok_or_else(|| self.type_error("a string"))?;
        parse_socket_addr(s)
    }

    fn log_format(self) -> Result<LogFormat, String> {
        let s = self
            .as_str()
            .ok_or_else(|| self.type_error("\"text\" or \"json\""))?;
        parse_log_format(s)
    }

    /// TOML: an array of strings. Environment: a comma-separated list.
    fn origins(self) -> Result<Vec<String>, String> {
        self.string_list("an array of URL strings such as [\"http://127.0.0.1:9000/\"]")
    }

    /// TOML: an array of strings. Environment: a comma-separated list.
    fn ice_servers(self) -> Result<Vec<String>, String> {
        self.string_list("an array of URL strings such as [\"stun:stun.example.org:3478\"]")
    }

    /// TOML: a table `{ Name = "value" }` or an array of `"Name: value"` strings. Environment: a
    /// comma-separated list of `Name: value`.
    fn headers(self) -> Result<Vec<(String, String)>, String> {
        match self {
            Raw::Toml(toml::Value::Table(table)) => table
                .iter()
                .map(|(name, value)| match value {
                    toml::Value::String(v) => Ok((name.clone(), v.clone())),
                    other => Err(format!(
                        "{name}: expected a string, found {}",
                        other.type_str()
                    )),
                })
                .collect(),
            _ => self
                .string_list("a table of header values or an array of \"Name: value\" strings")?
                .iter()
                .map(|h| parse_header(h))
                .collect(),
        }
    }

    /// A file path; empty (or "none") for none.
    fn path(self) -> Result<Option<PathBuf>, String> {
        let s = self
            .as_str()
            .ok_or_else(|| self.type_error("a file path"))?;
        let s = s.trim();
        Ok((!s.is_empty() && s != "none").then(|| PathBuf::from(s)))
    }

    fn string_list(self, expected: &str) -> Result<Vec<String>, String> {
        match self {
            Raw::Str(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect()),
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "entry {}: expected a URL string, found {}",
                        i + 1,
                        other.type_str()
                    )),
                })
                .collect(),
            Raw::Toml(_) => Err(self.type_error(expected)),
        }
    }
}

/// An ICE server URL as RTCPeerConnection accepts it (RFC 7064 / 7065): a known scheme and a host.
fn check_ice_server(url: &str) -> Result<(), String> {
    let rest = ["stun:", "stuns:", "turn:", "turns:"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| format!("{url:?} must start with stun:, stuns:, turn: or turns:"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(format!(
            "{url:?} has no host (expected e.g. stun:stun.example.org:3478)"
        ));
    }
    Ok(())
}

fn to_u32(n: u64) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{n} is too large (maximum {})", u32::MAX))
}

fn to_usize(n: u64) -> Result<usize, String> {
    usize::try_from(n).map_err(|_| format!("{n} is too large (maximum {})", usize::MAX))
}

fn is_default_keyword(s: &str) -> bool {
    s.trim().eq_ignore_ascii_case("default")
}

// ---------------------------------------------------------------------------
// Value parsers (used for TOML strings, environment values and flags)

pub use peer_assist::units::{parse_bytes, parse_duration};

/// Parses a non-negative integer count such as `"4096"`.
pub fn parse_count(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let err = |why: &str| format!("invalid number {input:?}: {why}");
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.starts_with('-') {
        return Err(err("must not be negative"));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("expected a whole number"));
    }
    s.parse::<u64>()
        .map_err(|_| err(&format!("too large (maximum {})", u64::MAX)))
}

/// `Name: value`, as `--origin-header` takes it.
fn parse_header(input: &str) -> Result<(String, String), String> {
    match input.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!(
            "invalid header {input:?}: expected \"Name: value\""
        )),
    }
}

fn parse_count_u32(input: &str) -> Result<u32, String> {
    to_u32(parse_count(input)?)
}

fn parse_count_usize(input: &str) -> Result<usize, String> {
    to_usize(parse_count(input)?)
}

fn parse_bytes_usize(input: &str) -> Result<usize, String> {
    to_usize(parse_bytes(input)?)
}

/// `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`), any case.
pub fn parse_bool(input: &str) -> Result<bool, String> {
    match input.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("invalid boolean {input:?}: expected true or false")),
    }
}

fn parse_socket_addr(input: &str) -> Result<SocketAddr, String> {
    input.trim().parse().map_err(|_| {
        format!("invalid address {input:?}: expected IP:PORT such as 127.0.0.1:8080 or [::]:8080")
    })
}

fn parse_log_format(input: &str) -> Result<LogFormat, String> {
    match input.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!(
            "invalid log format {input:?}: expected \"text\" or \"json\""
        )),
    }
}

/// `--cache-ttl-*` value: a duration, or `default` for the class default.
#[derive(Debug, Clone, Copy)]
struct TtlOverride(Option<Duration>);

fn parse_ttl_override(input: &str) -> Result<TtlOverride, String> {
    if is_default_keyword(input) {
        Ok(TtlOverride(None))
    } else {
        parse_duration(input).map(|d| TtlOverride(Some(d)))
    }
}

/// `1.5s`, `250ms`, `2m`: for messages.
fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{d:?}")
    }
}

// ---------------------------------------------------------------------------
// Command line

const ABOUT: &str =
    "HTTP edge gateway for HLS with P2P-assisted delivery. With no --origin it serves a built-in demo stream.";

const AFTER_HELP: &str = "\
Configuration layers, later ones win:
  built-in defaults < --config FILE (TOML) < GATEWAY_* environment variables < command-line flags

Environment variables: GATEWAY_ followed by the TOML key in upper case with '.' replaced by '_',
e.g. listen -> GATEWAY_LISTEN, cache.max_bytes -> GATEWAY_CACHE_MAX_BYTES,
follower.enabled -> GATEWAY_FOLLOWER_ENABLED. GATEWAY_ORIGINS and GATEWAY_P2P_ICE_SERVERS are comma-separated lists.
A GATEWAY_* variable or file key that names no setting is an error.

Flags: --<section>-<field> with '_' written as '-', e.g. --cache-max-bytes, --origin-connect-timeout.
Durations: 250ms, 2s, 1.5s, 1m, 1h, 1m30s (a bare number is seconds).
Sizes: 1048576, 16KiB, 64 MiB, 1GiB (binary: KiB = 1024), 10MB (decimal: MB = 10^6).";

/// Command-line flags. Every field is optional so that an absent flag leaves
/// the lower layers' value alone; defaults are documented in the help texts.
#[derive(Debug, clap::Parser)]
#[command(name = "gateway", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    /// Read settings from this TOML file (see gateway.toml for every key) [default: none]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Address and port the HTTP server listens on [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_addr)]
    listen: Option<SocketAddr>,

    /// Origin base URL (http:// or https://). Repeat for failover order, first = primary; replaces the file's/environment's list [default: none (serves the built-in demo stream)]
    #[arg(long = "origin", value_name = "URL")]
    origins: Vec<String>,

    /// Log output format [default: text]
    #[arg(long, value_name = "FORMAT", value_enum)]
    log_format: Option<LogFormat>,

    /// Log filter, a tracing EnvFilter directive such as info or gateway=debug,hyper=warn [default: info]
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,

    /// Upper bound of cached body bytes, e.g. 512MiB, 2GiB [default: 512MiB]
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = parse_bytes)]
    cache_max_bytes: Option<u64>,

    /// Freshness of multivariant playlists; "default" keeps the per-class default [default: class default]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_ttl_override)]
    cache_ttl_multivariant: Option<TtlOverride>,

    /// Freshness of live media playlists; "default" keeps the per-class default [default: class default]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_ttl_override)]
    cache_ttl_live_media: Option<TtlOverride>,

    /// Freshness of VOD media playlists; "default" keeps the per-class default [default: class default]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_ttl_override)]
    cache_ttl_vod_media: Option<TtlOverride>,

    /// Freshness of media segments; "default" keeps the per-class default [default: class default]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_ttl_override)]
    cache_ttl_segment: Option<TtlOverride>,

    /// How long origin 4xx/5xx answers are cached, at most 1s [default: 1s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    cache_ttl_error: Option<Duration>,

    /// How long past its stale bound the last live playlist is served while the origin fails [default: 5m]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    cache_live_outage_max: Option<Duration>,

    /// Least interval between revalidations of a no-cache live playlist [default: 500ms]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    cache_revalidate_interval: Option<Duration>,

    /// Time allowed to connect to an origin [default: 2s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    origin_connect_timeout: Option<Duration>,

    /// Time allowed until an origin's response headers arrive [default: 5s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    origin_first_byte_timeout: Option<Duration>,

    /// Deadline of a whole origin fetch, retries, backoff and redirects included [default: 30s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    origin_total_timeout: Option<Duration>,

    /// Retries after the first attempt, for idempotent requests; 0 disables retrying [default: 2]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_u32)]
    origin_retries: Option<u32>,

    /// Base delay of the exponential retry backoff [default: 50ms]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    origin_backoff_base: Option<Duration>,

    /// Largest retry backoff delay; must be >= --origin-backoff-base [default: 1s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    origin_backoff_max: Option<Duration>,

    /// Largest accepted origin response body [default: 64MiB]
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = parse_bytes)]
    origin_max_body_bytes: Option<u64>,

    /// Failures that open an origin's circuit breaker: consecutive connect failures, or widespread failures after connecting (see gateway.toml) [default: 5]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_u32)]
    origin_breaker_failures: Option<u32>,

    /// How long an open circuit stays open before a trial request [default: 10s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    origin_breaker_open: Option<Duration>,

    /// Origin requests in flight at once, all origins together; more wait [default: 64]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_usize)]
    origin_max_connections: Option<usize>,

    /// Body bytes all origin fetches may buffer at once; a fetch that would pass it fails with 503 [default: 512MiB]
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = parse_bytes)]
    origin_max_buffered_bytes: Option<u64>,

    /// Header sent on every origin request, as "Name: value"; repeat for several; replaces the file's/environment's list [default: none]
    #[arg(long = "origin-header", value_name = "HEADER", value_parser = parse_header)]
    origin_headers: Vec<(String, String)>,

    /// Query appended to every origin request, without '?', e.g. token=abc [default: ]
    #[arg(long, value_name = "QUERY")]
    origin_query: Option<String>,

    /// Max total request header bytes (HTTP/1 read buffer), at least 8KiB [default: 16KiB]
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = parse_bytes_usize)]
    server_max_header_bytes: Option<usize>,

    /// Max number of request headers [default: 64]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_usize)]
    server_max_headers: Option<usize>,

    /// Time allowed to receive a request's headers [default: 10s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    server_header_read_timeout: Option<Duration>,

    /// Idle keep-alive connections are closed after this [default: 60s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    server_idle_timeout: Option<Duration>,

    /// Requests processed at once; more are shed with 503 [default: 4096]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_usize)]
    server_max_concurrency: Option<usize>,

    /// How long SIGTERM waits for in-flight requests [default: 30s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    server_drain_timeout: Option<Duration>,

    /// Client connections open at once; more are closed at accept [default: 10000]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_usize)]
    server_max_connections: Option<usize>,

    /// Concurrent HTTP/2 streams per connection [default: 100]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_u32)]
    server_max_streams: Option<u32>,

    /// A response body the client accepts nothing of for this long is aborted [default: 30s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    server_send_timeout: Option<Duration>,

    /// Keep following (refreshing) live renditions that clients request [default: true]
    #[arg(long, value_name = "true|false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    follower_enabled: Option<bool>,

    /// A live rendition not requested for this long (and at least 3 target durations) stops being followed [default: 6s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    follower_idle_after: Option<Duration>,

    /// At most this many renditions are followed at once [default: 256]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_usize)]
    follower_max_renditions: Option<usize>,

    /// At most this many followed renditions started by one client address (IPv6: a /64) [default: 16]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_usize)]
    follower_max_per_client: Option<usize>,

    /// Run the peer-assist tracker at /p2p/v1/ [default: true]
    #[arg(long, value_name = "true|false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    p2p_enabled: Option<bool>,

    /// Request header with the viewer's region, set by the load balancer (empty: none) [default: ]
    #[arg(long, value_name = "HEADER")]
    p2p_region_header: Option<String>,

    /// Split swarms by region instead of only preferring same-region peers [default: false]
    #[arg(long, value_name = "true|false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    p2p_split_by_region: Option<bool>,

    /// Peers introduced to each peer [default: 8]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_usize)]
    p2p_peers_returned: Option<usize>,

    /// Peers in one swarm shard; a full shard sends joiners to the next [default: 500]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_usize)]
    p2p_max_peers_per_swarm: Option<usize>,

    /// Swarms at once; more are refused [default: 10000]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_usize)]
    p2p_max_swarms: Option<usize>,

    /// Peers joined at once from one client address (IPv6: one /64); more are refused [default: 100]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_usize)]
    p2p_max_peers_per_address: Option<usize>,

    /// Streams one client address may be in at once; more are refused [default: 8]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_usize)]
    p2p_max_swarms_per_address: Option<usize>,

    /// A signalling send that takes longer drops the peer (it stopped reading) [default: 5s]
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    p2p_send_timeout: Option<Duration>,

    /// Sustained signalling messages per second per connection; faster ones are closed [default: 20]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count_u32)]
    p2p_messages_per_second: Option<u32>,

    /// Largest signalling message; larger ones close the connection [default: 64KiB]
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = parse_bytes_usize)]
    p2p_max_message_bytes: Option<usize>,

    /// ICE server URL handed to browsers (stun:, stuns:, turn:, turns:); repeat for several; replaces the file's/environment's list [default: none]
    #[arg(long = "p2p-ice-server", value_name = "URL")]
    p2p_ice_servers: Vec<String>,

    /// Serve TLS with this PEM certificate chain (with --tls-key); reloaded when the file changes or on SIGHUP [default: none]
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert [default: none]
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Token signing keys, one ID:HEX per line; the last signs, all verify; reloaded on change or SIGHUP [default: none]
    #[arg(long, value_name = "FILE")]
    auth_key_file: Option<PathBuf>,

    /// Path prefix whose objects and swarms need a signed token; repeat for several; replaces the file's/environment's list [default: none]
    #[arg(long = "auth-protect", value_name = "PREFIX")]
    auth_protect: Vec<String>,

    /// Header with the viewer's address from a trusted load balancer, for tokens bound to a client and the tracker's per-address caps (empty: the connection's address) [default: ]
    #[arg(long, value_name = "HEADER")]
    auth_client_ip_header: Option<String>,

    /// Read players' CMCD (CTA-5004, query or headers) into the gateway_cmcd_* metrics [default: true]
    #[arg(long, value_name = "true|false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    cmcd_enabled: Option<bool>,

    /// Send CMSD (CTA-5006) CMSD-Static and CMSD-Dynamic (the throughput estimate etp) on object answers [default: true]
    #[arg(long, value_name = "true|false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    cmsd_enabled: Option<bool>,

    /// How CMSD-Dynamic names this gateway: 1 to 64 printable ASCII characters [default: gateway]
    #[arg(long, value_name = "ID")]
    cmsd_server_id: Option<String>,

    /// Keep the contribution ledger (signed delivery receipts) in this SQLite file; "none": no ledger (the demo without --origin: ledger.sqlite3) [default: none]
    #[arg(long, value_name = "FILE")]
    ledger_path: Option<PathBuf>,

    /// Keep the ledger in this PostgreSQL instead (every gateway of a fleet writes to one): postgres://user@host/db [default: none]
    #[arg(long, value_name = "URL")]
    ledger_database_url: Option<String>,

    /// Length of a ledger epoch; each closed epoch's receipts are sealed under a Merkle root this gateway signs [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ledger_epoch: Option<Duration>,

    /// The gateway's Ed25519 key file that signs epoch roots, created on first use; none: next to --ledger-path, or ./ledger.key [default: none]
    #[arg(long, value_name = "FILE")]
    ledger_key_file: Option<PathBuf>,
}

impl Cli {
    /// Applies the flags that were given; absent flags leave `config` alone.
    fn apply_to(self, config: &mut Config) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        fn set_ttl(slot: &mut Option<Duration>, value: Option<TtlOverride>) {
            if let Some(TtlOverride(value)) = value {
                *slot = value;
            }
        }
        // Destructured so that a new flag cannot be silently ignored.
        let Cli {
            config: _,
            listen,
            origins,
            log_format,
            log_level,
            cache_max_bytes,
            cache_ttl_multivariant,
            cache_ttl_live_media,
            cache_ttl_vod_media,
            cache_ttl_segment,
            cache_ttl_error,
            cache_live_outage_max,
            cache_revalidate_interval,
            origin_connect_timeout,
            origin_first_byte_timeout,
            origin_total_timeout,
            origin_retries,
            origin_backoff_base,
            origin_backoff_max,
            origin_max_body_bytes,
            origin_breaker_failures,
            origin_breaker_open,
            origin_max_connections,
            origin_max_buffered_bytes,
            origin_headers,
            origin_query,
            server_max_header_bytes,
            server_max_headers,
            server_header_read_timeout,
            server_idle_timeout,
            server_max_concurrency,
            server_drain_timeout,
            server_max_connections,
            server_max_streams,
            server_send_timeout,
            follower_enabled,
            follower_idle_after,
            follower_max_renditions,
            follower_max_per_client,
            p2p_enabled,
            p2p_region_header,
            p2p_split_by_region,
            p2p_peers_returned,
            p2p_max_peers_per_swarm,
            p2p_max_swarms,
            p2p_max_peers_per_address,
            p2p_max_swarms_per_address,
            p2p_send_timeout,
            p2p_messages_per_second,
            p2p_max_message_bytes,
            p2p_ice_servers,
            tls_cert,
            tls_key,
            auth_key_file,
            auth_protect,
            auth_client_ip_header,
            cmcd_enabled,
            cmsd_enabled,
            cmsd_server_id,
            ledger_path,
            ledger_database_url,
            ledger_epoch,
            ledger_key_file,
        } = self;

        set(&mut config.listen, listen);
        if !origins.is_empty() {
            config.origins = origins;
        }
        set(&mut config.log_format, log_format);
        set(&mut config.log_level, log_level);

        let c = &mut config.cache;
        set(&mut c.max_bytes, cache_max_bytes);
        set_ttl(&mut c.ttl_multivariant, cache_ttl_multivariant);
        set_ttl(&mut c.ttl_live_media, cache_ttl_live_media);
        set_ttl(&mut c.ttl_vod_media, cache_ttl_vod_media);
        set_ttl(&mut c.ttl_segment, cache_ttl_segment);
        set(&mut c.ttl_error, cache_ttl_error);
        set(&mut c.live_outage_max, cache_live_outage_max);
        set(&mut c.revalidate_interval, cache_revalidate_interval);

        let o = &mut config.origin;
        set(&mut o.connect_timeout, origin_connect_timeout);
        set(&mut o.first_byte_timeout, origin_first_byte_timeout);
        set(&mut o.total_timeout, origin_total_timeout);
        set(&mut o.retries, origin_retries);
        set(&mut o.backoff_base, origin_backoff_base);
        set(&mut o.backoff_max, origin_backoff_max);
        set(&mut o.max_body_bytes, origin_max_body_bytes);
        set(&mut o.breaker_failures, origin_breaker_failures);
        set(&mut o.breaker_open, origin_breaker_open);
        set(&mut o.max_connections, origin_max_connections);
        set(&mut o.max_buffered_bytes, origin_max_buffered_bytes);
        if !origin_headers.is_empty() {
            o.headers = origin_headers;
        }
        set(&mut o.query, origin_query);

        let s = &mut config.server;
        set(&mut s.max_header_bytes, server_max_header_bytes);
        set(&mut s.max_headers, server_max_headers);
        set(&mut s.header_read_timeout, server_header_read_timeout);
        set(&mut s.idle_timeout, server_idle_timeout);
        set(&mut s.max_concurrency, server_max_concurrency);
        set(&mut s.drain_timeout, server_drain_timeout);
        set(&mut s.max_connections, server_max_connections);
        set(&mut s.max_streams, server_max_streams);
        set(&mut s.send_timeout, server_send_timeout);

        let f = &mut config.follower;
        set(&mut f.enabled, follower_enabled);
        set(&mut f.idle_after, follower_idle_after);
        set(&mut f.max_renditions, follower_max_renditions);
        set(&mut f.max_per_client, follower_max_per_client);

        let p = &mut config.p2p;
        set(&mut p.enabled, p2p_enabled);
        set(&mut p.region_header, p2p_region_header);
        set(&mut p.split_by_region, p2p_split_by_region);
        set(&mut p.peers_returned, p2p_peers_returned);
        set(&mut p.max_peers_per_swarm, p2p_max_peers_per_swarm);
        set(&mut p.max_swarms, p2p_max_swarms);
        set(&mut p.max_peers_per_address, p2p_max_peers_per_address);
        set(&mut p.max_swarms_per_address, p2p_max_swarms_per_address);
        set(&mut p.send_timeout, p2p_send_timeout);
        set(&mut p.messages_per_second, p2p_messages_per_second);
        set(&mut p.max_message_bytes, p2p_max_message_bytes);
        if !p2p_ice_servers.is_empty() {
            p.ice_servers = p2p_ice_servers;
        }

        if tls_cert.is_some() {
            config.tls.cert = tls_cert;
        }
        if tls_key.is_some() {
            config.tls.key = tls_key;
        }
        let a = &mut config.auth;
        if auth_key_file.is_some() {
            a.key_file = auth_key_file;
        }
        if !auth_protect.is_empty() {
            a.protect = auth_protect;
        }
        set(&mut a.client_ip_header, auth_client_ip_header);

        set(&mut config.cmcd.enabled, cmcd_enabled);
        set(&mut config.cmsd.enabled, cmsd_enabled);
        set(&mut config.cmsd.server_id, cmsd_server_id);

        let l = &mut config.ledger;
        if let Some(p) = ledger_path {
            let none = p.as_os_str().is_empty() || p.as_os_str() == "none";
            l.path = (!none).then_some(p);
        }
        if let Some(url) = ledger_database_url {
            let url = url.trim();
            l.database_url = (!url.is_empty() && url != "none").then(|| url.to_owned());
        }
        set(&mut l.epoch, ledger_epoch);
        if let Some(k) = ledger_key_file {
            let none = k.as_os_str().is_empty() || k.as_os_str() == "none";
            l.key_file = (!none).then_some(k);
        }
    }
}

#[cfg(test)]
mod tests;
