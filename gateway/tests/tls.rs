//! TLS towards viewers with the real binary: curl gets HTTP/2 over TLS with the test CA; a
//! certificate replaced on disk is served to new connections without a restart while open ones
//! keep theirs; a broken file keeps the old one; SIGHUP reloads; tokens never reach the logs.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, ServerName};
use support::binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test CA and leaf certificates for `localhost` it signs.
struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gateway test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for localhost with `serial`, written to `cert`/`key` (PEM).
    fn leaf(&self, serial: u64, cert: &Path, key: &Path) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let pair = rcgen::KeyPair::generate().unwrap();
        let leaf = params.signed_by(&pair, &self.issuer).unwrap();
        std::fs::write(cert, leaf.pem()).unwrap();
        std::fs::write(key, pair.serialize_pem()).unwrap();
    }
}

/// The certificate a fresh TLS connection to `port` gets, and an answer to `GET path` over it.
async fn handshake(ca: &Ca, port: u16, path: &str) -> (CertificateDer<'static>, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    (cert, String::from_utf8_lossy(&answer).into_owned())
}

fn serial_of(cert: &CertificateDer<'_>, serial: u64) -> bool {
    // The DER INTEGER of a small serial: tag 2, length, big-endian bytes.
    let bytes = serial.to_be_bytes();
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut encoded = vec![2u8, trimmed.len() as u8];
    encoded.extend_from_slice(&trimmed);
    cert.windows(encoded.len()).any(|w| w == encoded.as_slice())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_http2_and_certificates_replaced_without_a_restart() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_pem) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    let ca = Ca::new();
    std::fs::write(&ca_pem, ca.cert.pem()).unwrap();
    ca.leaf(1001, &cert, &key);
    let keys = dir.path().join("auth.keys");
    std::fs::write(&keys, "k1:00112233445566778899aabbccddeeff\n").unwrap();
    let (cert_s, key_s, keys_s) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        keys.to_str().unwrap(),
    );
    let (mut child, url) = binary::start_with_env(
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert_s,
            "--tls-key",
            key_s,
            "--auth-key-file",
            keys_s,
            "--auth-protect",
            "/demo/",
        ],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let port: u16 = url
        .strip_prefix("https://127.0.0.1:")
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or_else(|| panic!("{url}"))
        .parse()
        .unwrap();

    // curl with the test CA: HTTP/2 over TLS, and a token plays the demo.
    let token = gateway::auth::mint(
        &gateway::auth::KeySet::load(&keys).unwrap(),
        "/demo/",
        Duration::from_secs(600),
        None,
        SystemTime::now(),
    );
    let curl = |path: String| {
        let ca = ca_pem.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new("curl")
                    .args(["-s", "--http2", "--cacert", ca.to_str().unwrap()])
                    .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
                    .arg(format!("https://localhost:{port}{path}"))
                    .output()
                    .expect("curl is required (scripts/test installs it)")
            })
            .await
            .unwrap()
        }
    };
    let out = curl("/healthz".into()).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200", "{out:?}");
    let out = curl(format!("/demo/vod/240p/index.m3u8?token={token}")).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200", "{out:?}");
    let out = curl("/demo/vod/240p/index.m3u8".into()).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 403", "{out:?}");

    // An open connection keeps its certificate; new ones get the replaced file's.
    let (first, _) = handshake(&ca, port, "/healthz").await;
    assert!(serial_of(&first, 1001));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    ca.leaf(2002, &cert, &key);
    let mut seen = None;
    for _ in 0..50 {
        let (now_served, answer) = handshake(&ca, port, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        if serial_of(&now_served, 2002) {
            seen = Some(now_served);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.is_some(), "the new certificate was never served");

    // A broken file: the old certificate stays; SIGHUP forces a reload (and fails again).
    std::fs::write(&key, "broken").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (still, _) = handshake(&ca, port, "/healthz").await;
    assert!(
        serial_of(&still, 2002),
        "a broken file keeps the certificate in use"
    );
    let errors = |m: &str| {
        m.lines()
            .find_map(|l| {
                l.strip_prefix("gateway_reloads_total{result=\"error\",what=\"tls\"} ")
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let (_, metrics) = handshake(&ca, port, "/metrics").await;
    let before = errors(&metrics);
    assert!(before >= 1.0, "{metrics}");
    child.signal("HUP");
    let mut after = before;
    for _ in 0..50 {
        let (_, metrics) = handshake(&ca, port, "/metrics").await;
        after = errors(&metrics);
        if after > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(after > before, "SIGHUP reloaded: {before} → {after}");
    assert!(child.try_wait().is_none(), "still running");

    // Tokens never reach the logs, even at debug level.
    let logs = child.stderr();
    assert!(logs.contains("TLS certificate reloaded"), "{logs}");
    assert!(!logs.contains(&token), "a token in the logs:\n{logs}");
    assert!(!logs.contains(token.split('.').next_back().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_bad_certificate_is_a_startup_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "not a key").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/cert.pem",
        ])
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let ca = Ca::new();
    let cert = dir.path().join("cert.pem");
    ca.leaf(1, &cert, &dir.path().join("unused.pem"));
    let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains(&key.display().to_string()), "{err}");
}
