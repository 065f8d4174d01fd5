//! `smdr-relay`'s settings ([`Args`]): the PBX's SMDR over TCP, connecting or listening.

use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use super::common::CommonArgs;
use super::overlay::{layer, read_file, text};
use super::{Config, ConfigError, DEFAULT_SMDR_LISTEN, SourceConfig};

/// Collects Avaya IP Office SMDR, assembles the records of each call into one completed call,
/// keeps every call in a local store with a web page, and delivers it to webhooks and other sinks.
///
/// With no configuration it listens for the PBX on 0.0.0.0:5100, stores calls in
/// ./cdr-relay.db and serves the web page on http://127.0.0.1:8080. Point the IP Office SMDR
/// output at this machine (Manager: System > CDR/SMDR > IP address and port), or set SMDR_ADDR
/// when the PBX listens and the relay should connect. Every option can also be set by the
/// environment variable shown (the SMDR webhook logger's SMDR_WEBHOOK_URL, SMDR_SITE, ... work
/// too), or in a TOML file given with --config (keys as the long flags, with `_` for `-`).
#[derive(Debug, Clone, Default, Parser, Serialize, Deserialize)]
#[serde(default)]
#[command(name = "smdr-relay", version, about, long_about)]
pub struct Args {
    /// Settings every relay shares.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,

    /// Connect to the PBX at HOST:PORT (the PBX listens; IP Office with SMDR IP 0.0.0.0).
    #[arg(long, env = "SMDR_ADDR", value_name = "HOST:PORT")]
    pub smdr_addr: Option<String>,

    /// Listen for the PBX on ADDR:PORT [default: 0.0.0.0:5100 when SMDR_ADDR is not set].
    #[arg(long, env = "SMDR_LISTEN", value_name = "ADDR:PORT")]
    pub smdr_listen: Option<String>,

    /// Seconds without any byte from the PBX after which the connection is re-established
    /// (0 = never) [default: 0].
    #[arg(long, env = "SMDR_READ_TIMEOUT", value_name = "SECONDS")]
    pub read_timeout: Option<u64>,
}
impl Config {
    /// Resolves `smdr-relay`'s flags and environment (already in `args`) over the legacy
    /// `SMDR_*` names, over the TOML file, over defaults.
    pub fn resolve(args: &Args) -> Result<Self, ConfigError> {
        let file: Args = read_file(args.common.config.as_deref())?;
        let legacy = Args {
            common: CommonArgs::legacy_env("SMDR_"),
            ..Args::default()
        };
        let args = &layer(args, &[&legacy, &file])?;
        let source = if let Some(path) = &args.common.replay {
            SourceConfig::Replay(path.clone())
        } else if let Some(addr) = text(&args.smdr_addr) {
            if text(&args.smdr_listen).is_some() {
                return Err(ConfigError(
                    "set either SMDR_ADDR (connect to the PBX) or SMDR_LISTEN (the PBX connects to us), not both".into(),
                ));
            }
            SourceConfig::Connect(addr)
        } else {
            SourceConfig::Listen(
                text(&args.smdr_listen).unwrap_or_else(|| DEFAULT_SMDR_LISTEN.into()),
            )
        };
        let mut c = Self::resolve_common(&args.common, source)?;
        c.read_timeout = args
            .read_timeout
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        Ok(c)
    }
}
