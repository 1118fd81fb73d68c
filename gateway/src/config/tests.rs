//! Unit tests of `config` (a child module, so private items are visible).
#![allow(clippy::unwrap_used)]

use super::*;
use clap::CommandFactory;
use std::io::Write as _;

const MS: fn(u64) -> Duration = Duration::from_millis;
const SECS: fn(u64) -> Duration = Duration::from_secs;

fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let args = std::iter::once("gateway").chain(args.iter().copied());
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::load(args, env)
}

/// A temporary TOML file; keep the handle alive while loading.
fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file.flush().unwrap();
    file
}

fn path_of(file: &tempfile::NamedTempFile) -> String {
    file.path().to_str().unwrap().to_owned()
}

fn load_file(text: &str) -> Result<Config, ConfigError> {
    let file = toml_file(text);
    load(&["--config", &path_of(&file)], &[])
}

/// Keys whose value is a list: a repeated flag, a TOML array, a comma-separated variable.
const LIST_KEYS: &[&str] = &[
    "origins",
    "origin.headers",
    "p2p.ice_servers",
    "auth.protect",
];

fn flag_name(key: &str) -> String {
    match key {
        "origins" => "--origin".to_owned(),
        "origin.headers" => "--origin-header".to_owned(),
        "p2p.ice_servers" => "--p2p-ice-server".to_owned(),
        "auth.protect" => "--auth-protect".to_owned(),
        _ => format!("--{}", key.replace(['.', '_'], "-")),
    }
}

// ---------------------------------------------------------------------------
// Defaults

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert!(c.origins.is_empty());
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.log_level, "info");

    assert_eq!(c.cache.max_bytes, 512 * 1024 * 1024);
    assert_eq!(c.cache.ttl_multivariant, None);
    assert_eq!(c.cache.ttl_live_media, None);
    assert_eq!(c.cache.ttl_vod_media, None);
    assert_eq!(c.cache.ttl_segment, None);
    assert_eq!(c.cache.ttl_error, SECS(1));

    assert_eq!(c.origin.connect_timeout, SECS(2));
    assert_eq!(c.origin.first_byte_timeout, SECS(5));
    assert_eq!(c.origin.total_timeout, SECS(30));
    assert_eq!(c.origin.retries, 2);
    assert_eq!(c.origin.backoff_base, MS(50));
    assert_eq!(c.origin.backoff_max, SECS(1));
    assert_eq!(c.origin.max_body_bytes, 64 * 1024 * 1024);
    assert_eq!(c.origin.breaker_failures, 5);
    assert_eq!(c.origin.breaker_open, SECS(10));
    assert_eq!(c.origin.max_connections, 64);
    assert_eq!(c.origin.max_buffered_bytes, 512 * 1024 * 1024);
    assert!(c.origin.headers.is_empty());
    assert_eq!(c.origin.query, "");

    assert_eq!(c.server.max_header_bytes, 16 * 1024);
    assert_eq!(c.server.max_headers, 64);
    assert_eq!(c.server.header_read_timeout, SECS(10));
    assert_eq!(c.server.idle_timeout, SECS(60));
    assert_eq!(c.server.max_concurrency, 4096);
    assert_eq!(c.server.drain_timeout, SECS(30));
    assert_eq!(c.server.max_connections, 10_000);
    assert_eq!(c.server.max_streams, 100);
    assert_eq!(c.server.send_timeout, SECS(30));

    assert!(c.follower.enabled);
    assert_eq!(c.follower.idle_after, SECS(6));
    assert_eq!(c.follower.max_renditions, 256);
    assert_eq!(c.follower.max_per_client, 16);

    assert!(c.cmcd.enabled);
    assert!(c.cmsd.enabled);
    assert_eq!(c.cmsd.server_id, "gateway");
}

#[test]
fn no_input_loads_the_defaults() {
    assert_eq!(load(&[], &[]).unwrap(), Config::default());
}

#[test]
fn defaults_pass_validation() {
    let mut c = Config::default();
    c.validate().unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn unrelated_environment_variables_are_ignored() {
    let env = [
        ("PATH", "/bin"),
        ("gateway_listen", "garbage"),
        ("GATEWAYLISTEN", "garbage"),
        ("MY_GATEWAY_LISTEN", "garbage"),
    ];
    assert_eq!(load(&[], &env).unwrap(), Config::default());
}

// ---------------------------------------------------------------------------
// Every key, from every layer

/// A non-default value for every key, as a string (env / flag / TOML string form).
const NON_DEFAULT: &[(&str, &str)] = &[
    ("listen", "0.0.0.0:9999"),
    ("origins", "http://a.example,https://b.example/x/"),
    ("log_format", "json"),
    ("log_level", "debug,hyper=warn"),
    ("cache.max_bytes", "1GiB"),
    ("cache.ttl_multivariant", "3s"),
    ("cache.ttl_live_media", "1.5s"),
    ("cache.ttl_vod_media", "1h"),
    ("cache.ttl_segment", "1m"),
    ("cache.ttl_error", "250ms"),
    ("cache.live_outage_max", "2m"),
    ("cache.revalidate_interval", "1s"),
    ("origin.connect_timeout", "1s"),
    ("origin.first_byte_timeout", "3s"),
    ("origin.total_timeout", "1m"),
    ("origin.retries", "7"),
    ("origin.backoff_base", "10ms"),
    ("origin.backoff_max", "2s"),
    ("origin.max_body_bytes", "1MiB"),
    ("origin.breaker_failures", "9"),
    ("origin.breaker_open", "20s"),
    ("origin.max_connections", "16"),
    ("origin.max_buffered_bytes", "64MiB"),
    (
        "origin.headers",
        "X-Origin-Key: abc,Authorization: Bearer t",
    ),
    ("origin.query", "token=xyz&v=1"),
    ("server.max_header_bytes", "32KiB"),
    ("server.max_headers", "100"),
    ("server.header_read_timeout", "5s"),
    ("server.idle_timeout", "90s"),
    ("server.max_concurrency", "10"),
    ("server.drain_timeout", "45s"),
    ("server.max_connections", "500"),
    ("server.max_streams", "32"),
    ("server.send_timeout", "12s"),
    ("follower.enabled", "false"),
    ("follower.idle_after", "2m"),
    ("follower.max_renditions", "8"),
    ("follower.max_per_client", "3"),
    ("p2p.enabled", "false"),
    ("p2p.region_header", "x-region"),
    ("p2p.split_by_region", "true"),
    ("p2p.peers_returned", "4"),
    ("p2p.max_peers_per_swarm", "50"),
    ("p2p.max_swarms", "7"),
    ("p2p.max_peers_per_address", "9"),
    ("p2p.max_swarms_per_address", "3"),
    ("p2p.send_timeout", "2s"),
    ("p2p.messages_per_second", "5"),
    ("p2p.max_message_bytes", "8KiB"),
    ("p2p.ice_servers", "stun:a.example:3478,turns:b.example"),
    ("tls.cert", "/etc/gw/cert.pem"),
    ("tls.key", "/etc/gw/key.pem"),
    ("auth.key_file", "/etc/gw/auth.keys"),
    ("auth.protect", "/live/,/vod/"),
    ("auth.client_ip_header", "x-forwarded-for"),
    ("cmcd.enabled", "false"),
    ("cmsd.enabled", "false"),
    ("cmsd.server_id", "edge-7.example"),
    ("ledger.path", "/var/lib/gw/ledger.sqlite3"),
    ("ledger.database_url", "postgres://gw@db.example/ledger"),
    ("ledger.epoch", "10m"),
    ("ledger.key_file", "/var/lib/gw/ledger.key"),
];

fn non_default_config() -> Config {
    Config {
        listen: "0.0.0.0:9999".parse().unwrap(),
        origins: vec![
            "http://a.example/".to_owned(),
            "https://b.example/x/".to_owned(),
        ],
        log_format: LogFormat::Json,
        log_level: "debug,hyper=warn".to_owned(),
        cache: CacheConfig {
            max_bytes: 1 << 30,
            ttl_multivariant: Some(SECS(3)),
            ttl_live_media: Some(MS(1500)),
            ttl_vod_media: Some(SECS(3600)),
            ttl_segment: Some(SECS(60)),
            ttl_error: MS(250),
            live_outage_max: SECS(120),
            revalidate_interval: SECS(1),
        },
        origin: OriginConfig {
            connect_timeout: SECS(1),
            first_byte_timeout: SECS(3),
            total_timeout: SECS(60),
            retries: 7,
            backoff_base: MS(10),
            backoff_max: SECS(2),
            max_body_bytes: 1 << 20,
            breaker_failures: 9,
            breaker_open: SECS(20),
            max_connections: 16,
            max_buffered_bytes: 64 << 20,
            headers: vec![
                ("X-Origin-Key".to_owned(), "abc".to_owned()),
                ("Authorization".to_owned(), "Bearer t".to_owned()),
            ],
            query: "token=xyz&v=1".to_owned(),
        },
        server: ServerConfig {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            header_read_timeout: SECS(5),
            idle_timeout: SECS(90),
            max_concurrency: 10,
            drain_timeout: SECS(45),
            max_connections: 500,
            max_streams: 32,
            send_timeout: SECS(12),
        },
        follower: FollowerConfig {
            enabled: false,
            idle_after: SECS(120),
            max_renditions: 8,
            max_per_client: 3,
        },
        p2p: P2pConfig {
            enabled: false,
            region_header: "x-region".to_owned(),
            split_by_region: true,
            peers_returned: 4,
            max_peers_per_swarm: 50,
            max_swarms: 7,
            max_peers_per_address: 9,
            max_swarms_per_address: 3,
            send_timeout: SECS(2),
            messages_per_second: 5,
            max_message_bytes: 8 * 1024,
            ice_servers: vec!["stun:a.example:3478".into(), "turns:b.example".into()],
        },
        tls: TlsConfig {
            cert: Some("/etc/gw/cert.pem".into()),
            key: Some("/etc/gw/key.pem".into()),
        },
        auth: AuthConfig {
            key_file: Some("/etc/gw/auth.keys".into()),
            protect: vec!["/live/".into(), "/vod/".into()],
            client_ip_header: "x-forwarded-for".into(),
        },
        cmcd: CmcdConfig { enabled: false },
        cmsd: CmsdConfig {
            enabled: false,
            server_id: "edge-7.example".into(),
        },
        ledger: LedgerConfig {
            path: Some("/var/lib/gw/ledger.sqlite3".into()),
            database_url: Some("postgres://gw@db.example/ledger".into()),
            epoch: Duration::from_secs(600),
            key_file: Some("/var/lib/gw/ledger.key".into()),
        },
    }
}

#[test]
fn non_default_table_covers_every_key() {
    let listed: Vec<&str> = NON_DEFAULT.iter().map(|(k, _)| *k).collect();
    let keys: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    assert_eq!(listed, keys);
    assert_ne!(non_default_config(), Config::default());
}

#[test]
fn every_key_can_be_set_from_the_file() {
    let mut text = String::new();
    let mut section = "";
    for (key, value) in NON_DEFAULT {
        let (sec, field) = key.split_once('.').unwrap_or(("", key));
        if sec != section {
            text.push_str(&format!("[{sec}]\n"));
            section = sec;
        }
        if LIST_KEYS.contains(key) {
            let items: Vec<String> = value.split(',').map(|o| format!("{o:?}")).collect();
            text.push_str(&format!("{field} = [{}]\n", items.join(", ")));
        } else {
            text.push_str(&format!("{field} = {value:?}\n"));
        }
    }
    assert_eq!(load_file(&text).unwrap(), non_default_config(), "{text}");
}

#[test]
fn file_accepts_native_toml_types() {
    let text = r#"
        origins = ["http://a.example", "https://b.example/x/"]
        [cache]
        max_bytes = 1073741824
        ttl_segment = 60
        ttl_live_media = 1.5
        [origin]
        retries = 7
        total_timeout = 60
        [server]
        max_header_bytes = 32768
        max_concurrency = 10
        [follower]
        enabled = false
        max_renditions = 8
    "#;
    let c = load_file(text).unwrap();
    assert_eq!(c.origins, non_default_config().origins);
    assert_eq!(c.cache.max_bytes, 1 << 30);
    assert_eq!(c.cache.ttl_segment, Some(SECS(60)));
    assert_eq!(c.cache.ttl_live_media, Some(MS(1500)));
    assert_eq!(c.origin.retries, 7);
    assert_eq!(c.origin.total_timeout, SECS(60));
    assert_eq!(c.server.max_header_bytes, 32768);
    assert_eq!(c.server.max_concurrency, 10);
    assert!(!c.follower.enabled);
    assert_eq!(c.follower.max_renditions, 8);
}

#[test]
fn every_key_can_be_set_from_the_environment() {
    let env: Vec<(String, &str)> = NON_DEFAULT
        .iter()
        .map(|(key, value)| (env_var_name(key), *value))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert!(env.contains(&("GATEWAY_CACHE_MAX_BYTES", "1GiB")));
    assert!(env.contains(&("GATEWAY_ORIGIN_CONNECT_TIMEOUT", "1s")));
    assert!(env.contains(&("GATEWAY_FOLLOWER_ENABLED", "false")));
    assert!(env.contains(&("GATEWAY_LOG_FORMAT", "json")));
    assert_eq!(load(&[], &env).unwrap(), non_default_config());
}

#[test]
fn every_key_can_be_set_from_flags() {
    let mut args: Vec<String> = Vec::new();
    for (key, value) in NON_DEFAULT {
        if LIST_KEYS.contains(key) {
            for item in value.split(',') {
                args.extend([flag_name(key), item.to_owned()]);
            }
        } else {
            args.extend([flag_name(key), (*value).to_owned()]);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(load(&args, &[]).unwrap(), non_default_config());
}

#[test]
fn documented_flag_names() {
    let mut cmd = Cli::command();
    cmd.build();
    let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
    for flag in [
        "config",
        "listen",
        "origin",
        "log-format",
        "log-level",
        "cache-max-bytes",
        "cache-ttl-live-media",
        "origin-connect-timeout",
        "origin-retries",
        "server-max-concurrency",
        "server-drain-timeout",
        "follower-idle-after",
        "follower-enabled",
    ] {
        assert!(longs.contains(&flag), "missing --{flag}");
    }
    // One flag per key, plus --config, --help and --version.
    assert_eq!(longs.len(), KEYS.len() + 3, "{longs:?}");
}

// ---------------------------------------------------------------------------
// Precedence

#[test]
fn each_layer_overrides_the_previous_one() {
    let file = toml_file("listen = \"127.0.0.1:1001\"\n[cache]\nmax_bytes = \"1MiB\"\n");
    let path = path_of(&file);
    let env = [
        ("GATEWAY_CACHE_MAX_BYTES", "2MiB"),
        ("GATEWAY_LISTEN", "127.0.0.1:1002"),
    ];

    let c = load(&["--config", &path], &[]).unwrap();
    assert_eq!(c.cache.max_bytes, 1 << 20, "file beats default");
    assert_eq!(c.listen.port(), 1001);

    let c = load(&["--config", &path], &env).unwrap();
    assert_eq!(c.cache.max_bytes, 2 << 20, "env beats file");
    assert_eq!(c.listen.port(), 1002);

    let flags = [
        "--config",
        &path,
        "--cache-max-bytes",
        "3MiB",
        "--listen",
        "127.0.0.1:1003",
    ];
    let c = load(&flags, &env).unwrap();
    assert_eq!(c.cache.max_bytes, 3 << 20, "flag beats env");
    assert_eq!(c.listen.port(), 1003);

    // Flag order does not matter: --config after the other flags still sits below them.
    let flags = ["--cache-max-bytes", "3MiB", "--config", &path];
    assert_eq!(load(&flags, &env).unwrap().cache.max_bytes, 3 << 20);
}

#[test]
fn untouched_keys_keep_lower_layers() {
    let file = toml_file("[origin]\nretries = 4\n");
    let path = path_of(&file);
    let c = load(
        &["--config", &path, "--cache-max-bytes", "3MiB"],
        &[("GATEWAY_LOG_LEVEL", "debug")],
    )
    .unwrap();
    assert_eq!(c.origin.retries, 4);
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.cache.max_bytes, 3 << 20);
    assert_eq!(c.origin.connect_timeout, SECS(2));
}

#[test]
fn origin_lists_replace_lower_layers() {
    let file = toml_file("origins = [\"http://file.example/\"]\n");
    let path = path_of(&file);
    let env = [(
        "GATEWAY_ORIGINS",
        "http://env1.example, http://env2.example",
    )];

    let c = load(&["--config", &path], &[]).unwrap();
    assert_eq!(c.origins, ["http://file.example/"]);

    let c = load(&["--config", &path], &env).unwrap();
    assert_eq!(c.origins, ["http://env1.example/", "http://env2.example/"]);

    let c = load(
        &["--config", &path, "--origin", "http://flag.example"],
        &env,
    )
    .unwrap();
    assert_eq!(c.origins, ["http://flag.example/"]);
}

#[test]
fn repeated_origin_flags_give_failover_order() {
    let c = load(
        &[
            "--origin",
            "http://primary.example:9000",
            "--origin",
            "https://secondary.example/live/",
            "--origin=http://[::1]:8000/hls",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        c.origins,
        [
            "http://primary.example:9000/",
            "https://secondary.example/live/",
            "http://[::1]:8000/hls/",
        ]
    );
}

#[test]
fn empty_env_origin_list_means_demo() {
    let file = toml_file("origins = [\"http://file.example/\"]\n");
    let path = path_of(&file);
    let c = load(&["--config", &path], &[("GATEWAY_ORIGINS", "")]).unwrap();
    assert!(c.origins.is_empty());
}

#[test]
fn ttl_override_can_be_reset_to_the_class_default() {
    let file = toml_file("[cache]\nttl_segment = \"4s\"\nttl_live_media = \"2s\"\n");
    let path = path_of(&file);
    let c = load(
        &["--config", &path, "--cache-ttl-live-media", "default"],
        &[("GATEWAY_CACHE_TTL_SEGMENT", "DEFAULT")],
    )
    .unwrap();
    assert_eq!(c.cache.ttl_segment, None);
    assert_eq!(c.cache.ttl_live_media, None);
}

// ---------------------------------------------------------------------------
// Unknown keys and bad values

fn assert_unknown(err: ConfigError, want_key: &str, want_location: &str) {
    match &err {
        ConfigError::UnknownKey { location, key } => {
            assert_eq!(key, want_key);
            assert_eq!(location, want_location);
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("unknown configuration key \"{want_key}\" in {want_location}")
    );
}

#[test]
fn unknown_top_level_key_in_file_is_named() {
    let file = toml_file("lissten = \"127.0.0.1:1\"\n");
    let path = path_of(&file);
    let err = load(&["--config", &path], &[]).unwrap_err();
    assert_unknown(err, "lissten", &path);
}

#[test]
fn unknown_nested_key_in_file_is_named() {
    let file = toml_file("[cache]\nmax_bytes = 1\nmax_bytez = 2\n");
    let path = path_of(&file);
    let err = load(&["--config", &path], &[]).unwrap_err();
    assert_unknown(err, "cache.max_bytez", &path);
}

#[test]
fn unknown_keys_at_every_level() {
    for (text, key) in [
        ("[cachee]\nmax_bytes = 1\n", "cachee"),
        ("[cache.extra]\nx = 1\n", "cache.extra"),
        ("[follower]\nenabled = true\n[follower.x]\n", "follower.x"),
        ("max_bytes = 1\n", "max_bytes"),
        ("\"cache.max_bytes\" = 1\n", "cache.max_bytes"),
        ("[cache]\n\"ttl_error.x\" = 1\n", "cache.ttl_error.x"),
        ("origin.retriez = 1\n", "origin.retriez"),
    ] {
        match load_file(text).unwrap_err() {
            ConfigError::UnknownKey { key: got, .. } => assert_eq!(got, key, "{text}"),
            other => panic!("{text}: expected UnknownKey, got {other:?}"),
        }
    }
}

#[test]
fn unknown_gateway_env_var_is_named() {
    let err = load(&[], &[("GATEWAY_CACHE_MAX_BYTEZ", "1")]).unwrap_err();
    assert_unknown(err, "GATEWAY_CACHE_MAX_BYTEZ", "environment");
    for var in [
        "GATEWAY_",
        "GATEWAY_ORIGIN",
        "GATEWAY_CACHE",
        "GATEWAY_cache_max_bytes",
    ] {
        match load(&[], &[(var, "1")]).unwrap_err() {
            ConfigError::UnknownKey { key, .. } => assert_eq!(key, var),
            other => panic!("{var}: expected UnknownKey, got {other:?}"),
        }
    }
}

fn assert_parse_error(err: ConfigError, want_location: &str, needles: &[&str]) {
    let text = err.to_string();
    match &err {
        ConfigError::Parse { location, .. } => assert_eq!(location, want_location, "{text}"),
        other => panic!("expected Parse, got {other:?}"),
    }
    for needle in needles {
        assert!(text.contains(needle), "{text:?} should contain {needle:?}");
    }
}

#[test]
fn wrong_types_in_file_name_the_key() {
    for (text, needles) in [
        (
            "[cache]\nmax_bytes = true\n",
            &["cache.max_bytes", "boolean"][..],
        ),
        (
            "[cache]\nmax_bytes = -1\n",
            &["cache.max_bytes", "negative"],
        ),
        (
            "[origin]\nconnect_timeout = [1]\n",
            &["origin.connect_timeout", "array"],
        ),
        (
            "[origin]\nconnect_timeout = -2\n",
            &["origin.connect_timeout", "negative"],
        ),
        (
            "[origin]\nconnect_timeout = -0.5\n",
            &["origin.connect_timeout"],
        ),
        (
            "[origin]\nconnect_timeout = nan\n",
            &["origin.connect_timeout"],
        ),
        (
            "[origin]\nconnect_timeout = inf\n",
            &["origin.connect_timeout"],
        ),
        ("[origin]\nretries = 1.5\n", &["origin.retries", "float"]),
        (
            "[origin]\nretries = 4294967296\n",
            &["origin.retries", "too large"],
        ),
        (
            "[follower]\nenabled = \"maybe\"\n",
            &["follower.enabled", "maybe"],
        ),
        (
            "[follower]\nenabled = 1\n",
            &["follower.enabled", "integer"],
        ),
        ("listen = 8080\n", &["listen", "integer"]),
        ("listen = \"localhost\"\n", &["listen", "localhost"]),
        ("log_format = \"xml\"\n", &["log_format", "xml"]),
        ("log_level = 3\n", &["log_level", "integer"]),
        ("origins = \"http://a/\"\n", &["origins", "array"]),
        (
            "origins = [\"http://a/\", 1]\n",
            &["origins", "entry 2", "integer"],
        ),
        ("cache = 5\n", &["cache", "table"]),
        (
            "[cache]\nttl_error = 1979-05-27\n",
            &["cache.ttl_error", "datetime"],
        ),
    ] {
        let file = toml_file(text);
        let path = path_of(&file);
        let err = load(&["--config", &path], &[]).unwrap_err();
        assert_parse_error(err, &path, needles);
    }
}

#[test]
fn bad_duration_and_size_values_give_clear_errors() {
    let file = toml_file("[origin]\nconnect_timeout = \"5x\"\n");
    let path = path_of(&file);
    let err = load(&["--config", &path], &[]).unwrap_err();
    assert_parse_error(
        err,
        &path,
        &[
            "origin.connect_timeout",
            "invalid duration \"5x\"",
            "unknown unit \"x\"",
        ],
    );

    let file = toml_file("[cache]\nmax_bytes = \"12XB\"\n");
    let path = path_of(&file);
    let err = load(&["--config", &path], &[]).unwrap_err();
    assert_parse_error(
        err,
        &path,
        &[
            "cache.max_bytes",
            "invalid byte size \"12XB\"",
            "unknown unit \"XB\"",
        ],
    );

    let err = load(&[], &[("GATEWAY_ORIGIN_CONNECT_TIMEOUT", "soon")]).unwrap_err();
    assert_parse_error(
        err,
        "environment",
        &[
            "GATEWAY_ORIGIN_CONNECT_TIMEOUT",
            "invalid duration \"soon\"",
        ],
    );
    let err = load(&[], &[("GATEWAY_CACHE_MAX_BYTES", "-5MiB")]).unwrap_err();
    assert_parse_error(
        err,
        "environment",
        &["GATEWAY_CACHE_MAX_BYTES", "must not be negative"],
    );
    let err = load(&[], &[("GATEWAY_FOLLOWER_ENABLED", "nope")]).unwrap_err();
    assert_parse_error(err, "environment", &["GATEWAY_FOLLOWER_ENABLED", "nope"]);
}

#[test]
fn bad_flag_values_are_clap_errors_naming_the_flag() {
    for (flag, value) in [
        ("--cache-max-bytes", "12XB"),
        ("--origin-connect-timeout", "5x"),
        ("--origin-retries", "-1"),
        ("--follower-enabled", "maybe"),
        ("--listen", "localhost:80"),
        ("--log-format", "xml"),
    ] {
        match load(&[flag, value], &[]).unwrap_err() {
            ConfigError::Cli(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        clap::error::ErrorKind::ValueValidation
                            | clap::error::ErrorKind::InvalidValue
                    ),
                    "{flag}: {:?}",
                    e.kind()
                );
                let text = e.to_string();
                assert!(text.contains(flag), "{text}");
            }
            other => panic!("{flag}: expected Cli, got {other:?}"),
        }
    }
    match load(&["--cache-max-bytez", "1"], &[]).unwrap_err() {
        ConfigError::Cli(e) => assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument),
        other => panic!("expected Cli, got {other:?}"),
    }
}

#[test]
fn toml_syntax_error_names_the_file() {
    let file = toml_file("[cache\nmax_bytes = 1\n");
    let path = path_of(&file);
    let err = load(&["--config", &path], &[]).unwrap_err();
    assert_parse_error(err, &path, &[]);
}

#[test]
fn missing_config_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = load(&["--config", path.to_str().unwrap()], &[]).unwrap_err();
    match &err {
        ConfigError::Read { path: p, .. } => assert_eq!(p, &path),
        other => panic!("expected Read, got {other:?}"),
    }
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[cfg(unix)]
#[test]
fn non_utf8_environment_does_not_panic() {
    use std::os::unix::ffi::OsStringExt as _;
    let bad = || OsString::from_vec(vec![0xff, 0xfe]);
    // Unrelated non-UTF-8 variables (name or value) are skipped.
    let env = env_from_os([
        (OsString::from("OTHER"), bad()),
        (bad(), OsString::from("x")),
        (
            OsString::from("GATEWAY_LISTEN"),
            OsString::from("127.0.0.1:1"),
        ),
    ])
    .unwrap();
    assert_eq!(
        env,
        [("GATEWAY_LISTEN".to_owned(), "127.0.0.1:1".to_owned())]
    );
    // A non-UTF-8 GATEWAY_ value is an error naming it.
    let err = env_from_os([(OsString::from("GATEWAY_LOG_LEVEL"), bad())]).unwrap_err();
    assert_parse_error(err, "environment", &["GATEWAY_LOG_LEVEL", "UTF-8"]);
}

// ---------------------------------------------------------------------------
// Validation

fn assert_invalid(args: &[&str], env: &[(&str, &str)], want_key: &str) -> String {
    match load(args, env).unwrap_err() {
        ConfigError::Invalid { key, message } => {
            assert_eq!(key, want_key, "{message}");
            format!("{key}: {message}")
        }
        other => panic!("{args:?} {env:?}: expected Invalid({want_key}), got {other:?}"),
    }
}

#[test]
fn origins_must_be_absolute_http_urls() {
    for bad in [
        "ftp://a.example/",
        "/relative/path",
        "a.example:9000",
        "http://",
        "http:///path",
        "http://a.example/?q=1",
        "http://a.example/#frag",
        "http://a b/",
        "",
    ] {
        let text = assert_invalid(&["--origin", bad], &[], "origins");
        assert!(text.contains("entry 1"), "{text}");
    }
    let text = assert_invalid(
        &["--origin", "http://ok.example/", "--origin", "nope"],
        &[],
        "origins",
    );
    assert!(
        text.contains("entry 2") && text.contains("\"nope\""),
        "{text}"
    );
    let c = load(&["--origin", "HTTPS://Ok.Example:8443/base"], &[]).unwrap();
    assert_eq!(c.origins, ["HTTPS://Ok.Example:8443/base/"]);
}

#[test]
fn range_checks_name_the_key() {
    let cases: &[(&[&str], &str)] = &[
        (&["--cache-max-bytes", "0"], "cache.max_bytes"),
        (&["--cache-ttl-error", "2s"], "cache.ttl_error"),
        (&["--cache-ttl-error", "1001ms"], "cache.ttl_error"),
        (&["--server-max-concurrency", "0"], "server.max_concurrency"),
        (
            &["--origin-connect-timeout", "0s"],
            "origin.connect_timeout",
        ),
        (
            &["--origin-first-byte-timeout", "0"],
            "origin.first_byte_timeout",
        ),
        (&["--origin-total-timeout", "0ms"], "origin.total_timeout"),
        (
            &["--server-header-read-timeout", "0"],
            "server.header_read_timeout",
        ),
        (&["--server-idle-timeout", "0"], "server.idle_timeout"),
        (&["--server-drain-timeout", "0"], "server.drain_timeout"),
        (&["--origin-backoff-base", "2s"], "origin.backoff_base"),
        (&["--origin-max-body-bytes", "0"], "origin.max_body_bytes"),
        (
            &["--origin-breaker-failures", "0"],
            "origin.breaker_failures",
        ),
        (
            &["--server-max-header-bytes", "4KiB"],
            "server.max_header_bytes",
        ),
        (&["--server-max-headers", "0"], "server.max_headers"),
        (&["--follower-idle-after", "400d"], "follower.idle_after"),
        (
            &["--cache-ttl-segment", "18446744073709551615"],
            "cache.ttl_segment",
        ),
    ];
    for (args, key) in cases {
        assert_invalid(args, &[], key);
    }
    // Also when the bad value comes from a lower layer.
    assert_invalid(&[], &[("GATEWAY_CACHE_TTL_ERROR", "5s")], "cache.ttl_error");
    assert_invalid(
        &[],
        &[("GATEWAY_CACHE_LIVE_OUTAGE_MAX", "2h")],
        "cache.live_outage_max",
    );
    assert_invalid(
        &[],
        &[("GATEWAY_CACHE_REVALIDATE_INTERVAL", "11s")],
        "cache.revalidate_interval",
    );
    let text = assert_invalid(
        &["--origin-backoff-base", "2s", "--origin-backoff-max", "1s"],
        &[],
        "origin.backoff_base",
    );
    assert!(text.contains("origin.backoff_max"), "{text}");

    // Boundaries are accepted.
    let c = load(
        &[
            "--cache-ttl-error",
            "1s",
            "--cache-ttl-segment",
            "0s",
            "--origin-backoff-base",
            "1s",
            "--server-max-header-bytes",
            "8KiB",
            "--server-max-concurrency",
            "1",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.cache.ttl_error, SECS(1));
    assert_eq!(c.cache.ttl_segment, Some(Duration::ZERO));
}

// ---------------------------------------------------------------------------
// --help, --version, help texts

#[test]
fn help_and_version_are_cli_errors() {
    for (arg, kind) in [
        ("--help", clap::error::ErrorKind::DisplayHelp),
        ("-h", clap::error::ErrorKind::DisplayHelp),
        ("--version", clap::error::ErrorKind::DisplayVersion),
    ] {
        match load(&[arg], &[]).unwrap_err() {
            ConfigError::Cli(e) => assert_eq!(e.kind(), kind, "{arg}"),
            other => panic!("{arg}: expected Cli, got {other:?}"),
        }
    }
}

#[test]
fn help_text_explains_layers_and_env_names() {
    let ConfigError::Cli(e) = load(&["--help"], &[]).unwrap_err() else {
        panic!("expected Cli");
    };
    let help = e.to_string();
    for needle in [
        "HTTP edge gateway for HLS with P2P-assisted delivery. With no --origin it serves a built-in demo stream.",
        "Usage: gateway",
        "built-in defaults < --config FILE (TOML) < GATEWAY_* environment variables < command-line flags",
        "GATEWAY_CACHE_MAX_BYTES",
        "--follower-enabled <true|false>",
        "--origin <URL>",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
    assert_eq!(Cli::command().get_name(), "gateway");
}

/// Every flag has help ending in `[default: X]`, and X is the real default:
/// applying it to the defaults changes nothing.
#[test]
fn every_flag_help_shows_the_real_default() {
    let cmd = Cli::command();
    for arg in cmd.get_arguments() {
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        assert!(!help.is_empty(), "{:?} has no help", arg.get_id());
    }
    for key in KEYS {
        let flag = flag_name(key.name);
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(&flag[2..]))
            .unwrap_or_else(|| panic!("no flag {flag} for key {}", key.name));
        let help = arg.get_help().unwrap().to_string();
        let start = help
            .find("[default: ")
            .unwrap_or_else(|| panic!("{flag}: {help}"));
        let shown = help[start + "[default: ".len()..]
            .strip_suffix(']')
            .unwrap_or_else(|| panic!("{flag}: {help}"));
        let mut config = Config::default();
        match (key.name, shown) {
            ("origins" | "origin.headers" | "p2p.ice_servers" | "auth.protect", shown)
            | ("tls.cert" | "tls.key" | "auth.key_file", shown) => {
                assert!(shown.starts_with("none"), "{flag}: {shown}")
            }
            (_, "class default") => (key.set)(&mut config, Raw::Str("default")).unwrap(),
            (_, shown) => (key.set)(&mut config, Raw::Str(shown))
                .unwrap_or_else(|e| panic!("{flag}: shown default {shown:?}: {e}")),
        }
        assert_eq!(config, Config::default(), "{flag} shows [default: {shown}]");
    }
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

// ---------------------------------------------------------------------------
// The example gateway.toml

const EXAMPLE: &str = include_str!("../../../gateway.toml");

/// Uncomments `# key = value` lines (prose comments never look like that).
fn uncomment_settings(text: &str) -> String {
    text.lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return line.to_owned();
            };
            let is_setting = rest.split_once(" = ").is_some_and(|(key, _)| {
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            });
            if is_setting {
                rest.to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_gateway_toml_parses_to_the_defaults() {
    let mut c = Config::default();
    c.apply_toml_str(EXAMPLE, "gateway.toml").unwrap();
    c.validate().unwrap();
    assert_eq!(c, Config::default());
    // Through the real loader too.
    assert_eq!(load_file(EXAMPLE).unwrap(), Config::default());
}

#[test]
fn example_gateway_toml_documents_every_key_with_its_default() {
    let text = uncomment_settings(EXAMPLE);
    let table: toml::Table = text.parse().unwrap();
    let mut documented = Vec::new();
    for (name, value) in &table {
        match value {
            toml::Value::Table(section) => {
                documented.extend(section.keys().map(|k| format!("{name}.{k}")));
            }
            _ => documented.push(name.clone()),
        }
    }
    documented.sort();
    let mut keys: Vec<String> = KEYS.iter().map(|k| k.name.to_owned()).collect();
    keys.sort();
    assert_eq!(documented, keys);

    let mut c = Config::default();
    c.apply_toml_str(&text, "gateway.toml (uncommented)")
        .unwrap();
    c.validate().unwrap();
    let mut expected = Config {
        origins: vec!["http://127.0.0.1:9000/".to_owned()],
        ..Config::default()
    };
    expected.p2p.ice_servers = vec!["stun:stun.example.org:3478".to_owned()];
    expected.tls = TlsConfig {
        cert: Some("/etc/gateway/tls/fullchain.pem".into()),
        key: Some("/etc/gateway/tls/privkey.pem".into()),
    };
    expected.auth.key_file = Some("/etc/gateway/auth.keys".into());
    expected.auth.protect = vec!["/live/".to_owned()];
    assert_eq!(c, expected);
}

#[test]
fn ice_servers_come_from_every_layer_and_are_checked() {
    let mut c = Config::default();
    c.apply_toml_str(
        "[p2p]\nice_servers = [\"stun:a.example:3478\", \"turns:b.example\"]\n",
        "f.toml",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(
        c.p2p.ice_servers,
        ["stun:a.example:3478", "turns:b.example"]
    );

    let mut c = Config::default();
    c.apply_toml_str("[p2p]\nice_servers = [\"http://a.example\"]\n", "f.toml")
        .unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("p2p.ice_servers") && err.contains("entry 1"),
        "{err}"
    );

    let mut c = Config::default();
    c.apply_toml_str("[p2p]\nice_servers = [\"stun:\"]\n", "f.toml")
        .unwrap();
    assert!(c.validate().is_err());

    let mut c = Config::default();
    let err = c
        .apply_toml_str("[p2p]\nice_servers = \"stun:a\"\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("stun:stun.example.org"), "{err}");
}

// ---------------------------------------------------------------------------
// Parsers

// The grammar of durations and byte sizes is `peer_assist::units` (tested there); the gateway's
// configuration reads every duration and size through it (see `bad_duration_and_size_values_give_
// clear_errors` above).

#[test]
fn counts_and_booleans_parse() {
    assert_eq!(parse_count("4096"), Ok(4096));
    assert_eq!(parse_count(" 0 "), Ok(0));
    for bad in ["", "-1", "1.5", "abc", "+1", "1e3", "18446744073709551616"] {
        assert!(parse_count(bad).is_err(), "{bad:?}");
    }
    assert!(parse_count_u32("4294967296")
        .unwrap_err()
        .contains("too large"));
    assert_eq!(parse_count_u32("4294967295"), Ok(u32::MAX));

    for t in ["true", "TRUE", "yes", "on", "1", " true "] {
        assert_eq!(parse_bool(t), Ok(true), "{t}");
    }
    for f in ["false", "False", "no", "off", "0"] {
        assert_eq!(parse_bool(f), Ok(false), "{f}");
    }
    for bad in ["", "maybe", "2", "tru"] {
        assert!(parse_bool(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_log_format("JSON"), Ok(LogFormat::Json));
    assert!(parse_log_format("").is_err());
}

/// Every short string over an alphabet of interesting characters: the parsers
/// return `Ok` or `Err`, never panic.
#[test]
fn parsers_never_panic() {
    let alphabet: Vec<char> = "09.- smhdKiBMGTµ\u{0}é".chars().collect();
    let mut inputs = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for s in &frontier {
            for c in &alphabet {
                let mut t = s.clone();
                t.push(*c);
                next.push(t);
            }
        }
        inputs.extend(next.iter().cloned());
        frontier = next;
    }
    for long in [
        "9".repeat(100),
        format!("1.{}s", "9".repeat(100)),
        "1s".repeat(1000),
    ] {
        inputs.push(long);
    }
    for s in &inputs {
        let _ = parse_duration(s);
        let _ = parse_bytes(s);
        let _ = parse_count(s);
        let _ = parse_bool(s);
        let _ = parse_ttl_override(s);
        let _ = normalize_origin(s);
        let _ = normalize_origin(&format!("http://{s}"));
    }
    assert!(inputs.len() > 100_000);
}

#[test]
fn kubernetes_service_link_variables_are_not_configuration() {
    let env = [
        ("GATEWAY_PORT", "tcp://10.0.0.1:8080"),
        ("GATEWAY_PORT_8080_TCP_ADDR", "10.0.0.1"),
        ("GATEWAY_SERVICE_HOST", "10.0.0.1"),
        ("GATEWAY_SERVICE_PORT", "8080"),
    ];
    let config = load(&[], &env).expect("service links are ignored");
    assert_eq!(config, Config::default());
    assert!(matches!(
        load(&[], &[("GATEWAY_PORTS", "1")]),
        Err(ConfigError::UnknownKey { .. })
    ));
}

#[test]
fn tls_and_auth_settings_are_checked_together() {
    let err = load(&["--tls-cert", "/c.pem"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls.key") && err.contains("both"), "{err}");
    let err = load(&["--auth-protect", "/live/"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth.key_file"), "{err}");
    let err = load(&["--auth-key-file", "/k", "--auth-protect", "live/"], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("auth.protect") && err.contains("entry 1"),
        "{err}"
    );
    let c = load(
        &[
            "--auth-key-file",
            "/k",
            "--auth-protect",
            "/a/",
            "--auth-protect",
            "/b",
        ],
        &[("GATEWAY_AUTH_PROTECT", "/env/")],
    )
    .unwrap();
    assert_eq!(
        c.auth.protect,
        ["/a/", "/b"],
        "flags replace the environment's list"
    );
    let err = load(&["--auth-client-ip-header", "bad header"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth.client_ip_header"), "{err}");
}

#[test]
fn origin_headers_and_query_from_a_table_and_checked() {
    let c = load_file("[origin]\nquery = \"token=abc\"\n[origin.headers]\nX-Key = \"secret\"\n")
        .unwrap();
    assert_eq!(
        c.origin.headers,
        [("X-Key".to_owned(), "secret".to_owned())]
    );
    assert_eq!(c.origin.query, "token=abc");
    for (args, key) in [
        (&["--origin-header", "Bad Name: x"][..], "origin.headers"),
        (&["--origin-query", "?token=abc"][..], "origin.query"),
        (
            &["--origin-max-connections", "0"][..],
            "origin.max_connections",
        ),
        (
            &["--origin-max-buffered-bytes", "0"][..],
            "origin.max_buffered_bytes",
        ),
    ] {
        match load(args, &[]) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{args:?}"),
            other => panic!("{args:?}: {other:?}"),
        }
    }
    assert!(load(&["--origin-header", "no colon"], &[]).is_err());
}

#[test]
fn a_ledger_epoch_is_whole_seconds_and_none_turns_the_ledger_off() {
    for bad in ["0s", "1500ms", "400d"] {
        assert_invalid(&["--ledger-epoch", bad], &[], "ledger.epoch");
    }
    let c = load(
        &["--ledger-path", "none"],
        &[("GATEWAY_LEDGER_PATH", "/x.sqlite3")],
    )
    .unwrap();
    assert!(!c.ledger.enabled());
    let c = load(&[], &[("GATEWAY_LEDGER_DATABASE_URL", "postgres://a@b/c")]).unwrap();
    assert!(c.ledger.enabled());
}

#[test]
fn cmsd_server_id_is_printable_ascii_of_sane_length() {
    for bad in ["", "caf\u{e9}", "a\tb", &"x".repeat(65)] {
        let message = assert_invalid(&["--cmsd-server-id", bad], &[], "cmsd.server_id");
        assert!(message.contains("printable ASCII"), "{message}");
    }
    let c = load(&[], &[("GATEWAY_CMSD_SERVER_ID", "edge \"7\"")]).unwrap();
    assert_eq!(c.cmsd.server_id, "edge \"7\"");
    assert!(load(&[], &[("GATEWAY_CMSD_SERVER_ID", &"x".repeat(64))]).is_ok());
    let c = load(&["--cmcd-enabled", "off", "--cmsd-enabled", "no"], &[]).unwrap();
    assert!(!c.cmcd.enabled && !c.cmsd.enabled);
}
