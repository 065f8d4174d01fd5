//! `nats-relay`'s settings ([`NatsRelayArgs`]): the hub's JetStream durable consumer.

use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use super::common::CommonArgs;
use super::overlay::{layer, read_file, text};
use super::values::List;
use super::{Config, ConfigError, RelayKind, SinkSpec, SourceConfig};
use crate::sources::nats::NatsSource;

/// The servers `nats-relay` consumes from when NATS_URL is not set.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// The durable consumer's name when none is configured.
pub const DEFAULT_CONSUMER: &str = "cdr-relay-hub";

/// The hub of a fleet of relays: consumes the calls they publish to a NATS JetStream stream
/// (a durable pull consumer, created if missing; each message acknowledged once its call is in
/// the local store), keeps them in the local store with one web page for every site, and
/// delivers them to webhooks, Redis lists and other sinks. A call id already stored is not
/// stored again, so redelivered and duplicate messages do no harm.
///
/// NATS_URL (with NATS_STREAM and the NATS_* authentication and TLS settings) names where it
/// consumes; the JetStream sink is off unless asked for with `--sink nats`.
///
/// Every option can also be set by the environment variable shown, or in a TOML file given with
/// --config (keys as the long flags, with `_` for `-`).
#[derive(Debug, Clone, Default, Parser, Serialize, Deserialize)]
#[serde(default)]
#[command(name = "nats-relay", version = crate::VERSION, about, long_about)]
pub struct NatsRelayArgs {
    /// Settings every relay shares.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,

    /// The durable consumer's name (created if missing) [default: cdr-relay-hub].
    #[arg(long, env = "NATS_CONSUMER", value_name = "NAME")]
    pub nats_consumer: Option<String>,

    /// Subjects the consumer takes, comma separated (wildcards allowed) [default: all of the
    /// stream's].
    #[arg(long, env = "NATS_FILTER_SUBJECTS", value_name = "SUBJECTS")]
    pub nats_filter_subjects: Option<List>,

    /// The most messages committed at once [default: 1024].
    #[arg(long, env = "NATS_BATCH", value_name = "N")]
    pub nats_batch: Option<usize>,

    /// Seconds a message may go unacknowledged before the server sends it again
    /// [default: 30].
    #[arg(long, env = "NATS_ACK_WAIT", value_name = "SECONDS")]
    pub nats_ack_wait: Option<u64>,

    /// Messages larger than this many bytes are rejected undecoded [default: 1048576].
    #[arg(long, env = "NATS_MAX_ITEM", value_name = "BYTES")]
    pub nats_max_item: Option<usize>,
}

impl Config {
    /// Resolves `nats-relay`'s flags and environment over the TOML file, over defaults.
    pub fn resolve_nats(args: &NatsRelayArgs) -> Result<Self, ConfigError> {
        let file: NatsRelayArgs = read_file(args.common.config.as_deref())?;
        let mut args = layer(args, &[&file])?;
        let explicit_sinks = !args.common.sink.sinks.is_empty();
        if args
            .common
            .sink
            .nats_url
            .as_ref()
            .is_none_or(|l| l.0.is_empty())
        {
            args.common.sink.nats_url = Some(List(vec![DEFAULT_NATS_URL.into()]));
        }
        let source = if let Some(path) = &args.common.replay {
            SourceConfig::Replay(path.clone())
        } else {
            let nats = args
                .common
                .sink
                .nats()?
                .ok_or_else(|| ConfigError("nats-relay needs NATS_URL".into()))?;
            let consumer = text(&args.nats_consumer).unwrap_or_else(|| DEFAULT_CONSUMER.to_owned());
            if consumer.contains(|c: char| c == '.' || c == '*' || c == '>' || c.is_whitespace()) {
                return Err(ConfigError(format!(
                    "NATS_CONSUMER {consumer:?}: no . * > or spaces"
                )));
            }
            SourceConfig::Nats(Box::new(NatsSource {
                server: nats.server,
                stream: nats.stream,
                consumer,
                filter_subjects: args.nats_filter_subjects.clone().unwrap_or_default().0,
                batch: args.nats_batch.unwrap_or(1024).clamp(1, 10_000),
                ack_wait: Duration::from_secs(args.nats_ack_wait.unwrap_or(30).max(1)),
            }))
        };
        let mut c = Self::resolve_common(&args.common, source)?;
        c.kind = RelayKind::Nats;
        if !explicit_sinks {
            // NATS_URL is where the hub reads, not a sink to publish back to.
            c.sinks.retain(|s| *s != SinkSpec::Nats);
        }
        c.dialler_max_item = args
            .nats_max_item
            .unwrap_or(call_assembler::DEFAULT_MAX_ITEM)
            .max(64);
        Ok(c)
    }
}
