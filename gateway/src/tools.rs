//! Command-line tools of the `gateway` binary besides serving: `gateway token` mints a signed URL
//! token (see `docs/SECURITY.md`); `gateway ledger export` prints an epoch of the contribution
//! ledger (see `docs/LEDGER.md`).

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;

use crate::auth::{self, KeySet};

/// `gateway token`: prints a token on stdout.
#[derive(Parser)]
#[command(
    name = "gateway token",
    about = "Prints a signed token granting a path prefix (docs/SECURITY.md)."
)]
struct TokenArgs {
    /// The signing keys (ID:HEX lines); the last key signs.
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// The path prefix the token grants, e.g. /demo/.
    #[arg(long, value_name = "PREFIX")]
    prefix: String,
    /// How long the token is valid: "10m", "1h", "90s"...
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    ttl: Duration,
    /// Bind the token to this client address.
    #[arg(long, value_name = "IP")]
    bind: Option<IpAddr>,
}

/// Runs `gateway token` with `args` (the first one is the subcommand's name).
pub fn token(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match TokenArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    if !args.prefix.starts_with('/') {
        eprintln!(
            "gateway token: --prefix must start with '/' (got {:?})",
            args.prefix
        );
        return ExitCode::from(2);
    }
    if args.ttl.is_zero() {
        eprintln!("gateway token: --ttl must be longer than zero");
        return ExitCode::from(2);
    }
    let keys = match KeySet::load(&args.key_file) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("gateway token: {}: {e}", args.key_file.display());
            return ExitCode::from(2);
        }
    };
    println!(
        "{}",
        auth::mint(&keys, &args.prefix, args.ttl, args.bind, SystemTime::now())
    );
    ExitCode::SUCCESS
}

/// Output format of `gateway ledger export`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExportFormat {
    Csv,
    Json,
}

/// `gateway ledger export`: the options of its own; every other option is the gateway's (its
/// `--config`, `--ledger-path`, `--ledger-database-url`, `--ledger-key-file`, `--ledger-epoch`).
#[derive(Parser)]
#[command(
    name = "gateway ledger export",
    about = "Prints an epoch of the contribution ledger: one line per uploader (csv), or the totals, root, signature and every receipt (json). See docs/LEDGER.md.",
    allow_hyphen_values = true
)]
struct ExportArgs {
    /// The epoch (Unix time / epoch length); default: the last closed one.
    #[arg(long, value_name = "N")]
    epoch: Option<u64>,
    #[arg(long, value_enum, default_value = "json")]
    format: ExportFormat,
    /// The gateway's options that say where the ledger is (--config FILE, --ledger-path FILE, ...).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    gateway: Vec<OsString>,
}

/// Runs `gateway ledger ...` with `args` (the first one is `ledger`).
pub fn ledger(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_none_or(|a| a != "export") {
        eprintln!("usage: gateway ledger export [--epoch N] [--format csv|json] [gateway options: --config FILE, --ledger-path FILE, --ledger-database-url URL]");
        return ExitCode::from(2);
    }
    args.remove(0);
    let export = match ExportArgs::try_parse_from(&args) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let mut gateway_args = vec![OsString::from("gateway")];
    gateway_args.extend(export.gateway.iter().cloned());
    let env = match crate::config::env_from_os(std::env::vars_os()) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("gateway ledger export: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match crate::Config::load(gateway_args, env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway ledger export: {e}");
            return ExitCode::from(2);
        }
    };
    if !config.ledger.enabled() {
        eprintln!("gateway ledger export: no ledger configured (--ledger-path FILE, --ledger-database-url URL, or --config FILE with a [ledger] section)");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway ledger export: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(export_epoch(&config, export.epoch, export.format)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway ledger export: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn export_epoch(
    config: &crate::Config,
    epoch: Option<u64>,
    format: ExportFormat,
) -> Result<String, Box<dyn std::error::Error>> {
    let ledger = crate::ledger::Ledger::open(&config.ledger)?.ok_or("no ledger configured")?;
    let now = crate::ledger::unix_ms();
    // Seal what is due, as the gateway would: an export of a closed epoch carries its signature.
    ledger.seal_due(now).await?;
    let epoch = epoch.unwrap_or_else(|| ledger.epoch_at(now).saturating_sub(1));
    let view = ledger.view(epoch, now).await?;
    Ok(match format {
        ExportFormat::Csv => {
            let mut out = String::from("epoch,key,bytes,segments,receivers,root\n");
            for u in &view.uploaders {
                out.push_str(&format!(
                    "{},{},{},{},{},{}\n",
                    view.epoch, u.key, u.bytes, u.segments, u.receivers, view.root
                ));
            }
            out
        }
        ExportFormat::Json => {
            let receipts = ledger.store().receipts(epoch).await?;
            let body = serde_json::json!({ "ledger": view, "receipts": receipts });
            format!("{}\n", serde_json::to_string_pretty(&body)?)
        }
    })
}
