//! `gateway`: the HLS edge gateway binary. See `gateway --help`.

use std::process::ExitCode;

use gateway::config::{ConfigError, LogFormat};
use gateway::{Config, Drained, Gateway};
use tokio::net::TcpListener;

fn main() -> ExitCode {
    // `gateway token ...`: a tool, not the server.
    if std::env::args_os().nth(1).is_some_and(|a| a == "token") {
        return gateway::tools::token(std::env::args_os().skip(1));
    }
    // `gateway ledger export ...`: reads the ledger, does not serve.
    if std::env::args_os().nth(1).is_some_and(|a| a == "ledger") {
        return gateway::tools::ledger(std::env::args_os().skip(1));
    }
    let config = match Config::from_process() {
        Ok(config) => config,
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(mut config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let demo = config.origins.is_empty();
    if demo && !config.ledger.enabled() {
        // The quick start shows contribution accounting too.
        config.ledger.path = Some("ledger.sqlite3".into());
    }
    if demo {
        let addr = gateway::demo::spawn().await?;
        config.origins = vec![format!("http://{addr}/")];
        tracing::info!(%addr, "no --origin given: serving the built-in demo origin");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let gateway = Gateway::new(config.clone())?;
    let scheme = if gateway.is_tls() { "https" } else { "http" };
    println!("gateway listening on {scheme}://{addr}/");
    if demo {
        println!("demo live stream: {scheme}://{addr}/demo/live/master.m3u8");
        println!("demo VOD stream:  {scheme}://{addr}/demo/vod/master.m3u8");
        println!("demo LL-HLS:      {scheme}://{addr}/demo/ll/master.m3u8");
    } else {
        println!("origins: {}", config.origins.join(", "));
    }
    #[cfg(unix)]
    {
        let reloader = gateway.reloader();
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading the TLS certificate and token keys");
                        reloader.reload(true);
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
        }
    }
    match gateway.serve(listener, shutdown_signal()).await {
        Drained::Clean => tracing::info!("drained, bye"),
        Drained::TimedOut => tracing::warn!("drain timeout passed with requests still in flight"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
