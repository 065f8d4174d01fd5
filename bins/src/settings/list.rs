//! `list-relay`'s settings ([`ListArgs`]): a dialler's CDR list in Redis.

use std::path::PathBuf;

use clap::Parser;
use serde::{Deserialize, Serialize};

use super::common::CommonArgs;
use super::overlay::{layer, read_file, text};
use super::sinks::check_redis_url;
use super::{Config, ConfigError, DEFAULT_DIALLER_LIST, RedisListSource, RelayKind, SourceConfig};

/// Drains a predictive dialler's CDR list in Redis reliably (each item moved to a processing
/// list, committed, then removed from it; items a crash left there are committed first at the
/// next start), turns every CDR into a completed call, keeps it in the local store with a web
/// page, and delivers it to webhooks, Redis lists and other sinks.
///
/// Every option can also be set by the environment variable shown, or in a TOML file given with
/// --config (keys as the long flags, with `_` for `-`).
#[derive(Debug, Clone, Default, Parser, Serialize, Deserialize)]
#[serde(default)]
#[command(name = "list-relay", version = crate::VERSION, about, long_about)]
pub struct ListArgs {
    /// Settings every relay shares.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,

    /// The dialler's Redis (`redis://[user:password@]host:port/db`, `rediss://` for TLS)
    /// [default: redis://127.0.0.1:6379].
    #[arg(
        long,
        env = "DIALLER_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub dialler_redis_url: Option<String>,

    /// The list the dialler pushes its CDRs to [default: enigma:notifications:campaigns].
    #[arg(long, env = "DIALLER_LIST_KEY", value_name = "KEY")]
    pub dialler_list_key: Option<String>,

    /// The processing list items wait in until committed [default: the list key +
    /// `:processing`].
    #[arg(long, env = "DIALLER_PROCESSING_KEY", value_name = "KEY")]
    pub dialler_processing_key: Option<String>,

    /// The most items moved and committed at once [default: 512].
    #[arg(long, env = "DIALLER_BATCH", value_name = "N")]
    pub dialler_batch: Option<usize>,

    /// Extra trusted CA certificates (PEM) for a `rediss://` dialler Redis.
    #[arg(long, env = "DIALLER_REDIS_CA_FILE", value_name = "FILE")]
    pub dialler_redis_ca_file: Option<PathBuf>,

    /// Items larger than this many bytes are rejected unparsed [default: 1048576].
    #[arg(long, env = "DIALLER_MAX_ITEM", value_name = "BYTES")]
    pub dialler_max_item: Option<usize>,
}
impl Config {
    /// Resolves `list-relay`'s flags and environment over the TOML file, over defaults.
    pub fn resolve_list(args: &ListArgs) -> Result<Self, ConfigError> {
        let file: ListArgs = read_file(args.common.config.as_deref())?;
        let args = &layer(args, &[&file])?;
        let source = if let Some(path) = &args.common.replay {
            SourceConfig::Replay(path.clone())
        } else {
            let url =
                text(&args.dialler_redis_url).unwrap_or_else(|| "redis://127.0.0.1:6379".into());
            let ca_file = args.dialler_redis_ca_file.clone();
            check_redis_url("DIALLER_REDIS_URL", &url, ca_file.as_deref())?;
            let key = text(&args.dialler_list_key).unwrap_or_else(|| DEFAULT_DIALLER_LIST.into());
            let processing =
                text(&args.dialler_processing_key).unwrap_or_else(|| format!("{key}:processing"));
            if processing == key {
                return Err(ConfigError(
                    "DIALLER_PROCESSING_KEY must differ from DIALLER_LIST_KEY".into(),
                ));
            }
            SourceConfig::RedisList(RedisListSource {
                url,
                key,
                processing,
                batch: args.dialler_batch.unwrap_or(512).clamp(1, 10_000),
                ca_file,
            })
        };
        let mut c = Self::resolve_common(&args.common, source)?;
        c.kind = RelayKind::List;
        c.dialler_max_item = args
            .dialler_max_item
            .unwrap_or(call_assembler::DEFAULT_MAX_ITEM)
            .max(64);
        Ok(c)
    }
}
