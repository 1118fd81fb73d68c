//! Command-line tools of the `gateway` binary besides serving: `gateway token` mints a signed URL
//! token (see `docs/SECURITY.md`).

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
