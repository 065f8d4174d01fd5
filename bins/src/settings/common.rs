//! The settings every relay shares ([`CommonArgs`]): the sinks ([`super::sinks`]), store, web
//! server ([`super::web`]), logging, Sentry, replay; with the legacy `SMDR_*` layer of
//! `smdr-relay`.

use std::path::PathBuf;
use std::time::Duration;

use call_assembler::AmiAssemblerConfig;
use serde::{Deserialize, Serialize};

use super::overlay::{layer, text};
use super::sinks::{SinkArgs, SinkSettings};
use super::values::{ChoiceParser, LogFormat};
use super::web::WebArgs;
use super::{AdminCommand, Config, ConfigError, RelayKind, SourceConfig, default_db};

/// Days kept by default ([`CommonArgs::retention_days`]).
pub const DEFAULT_RETENTION_DAYS: u64 = 30;

/// Megabytes the database is kept under by default ([`CommonArgs::max_db_mb`]).
pub const DEFAULT_MAX_DB_MB: u64 = 500;

/// The settings every relay shares: sinks, store, web server, logging, Sentry, replay.
///
/// Environment variables: the names shown; `smdr-relay` also reads the SMDR webhook logger's
/// names (`SMDR_WEBHOOK_URL`, `SMDR_SITE`, ... : `SMDR_` before the name) when the new one is
/// not set.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(default)]
pub struct CommonArgs {
    /// A TOML file with settings (flags and environment variables override it).
    #[arg(long, value_name = "FILE", env = "CDR_RELAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Check the configuration, print what would run, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Re-queue every dead letter of this sink (`webhook`, `redis`, `http-cdr`, `nats`,
    /// `jsonl:PATH`) in the database, print how many, and exit. A running relay sends them on
    /// its next pass.
    #[arg(long, value_name = "SINK", conflicts_with_all = ["pause_sink", "resume_sink"])]
    pub requeue_dead: Option<String>,

    /// Pause this sink in the database (it stays paused across restarts until resumed): its
    /// calls are kept pending, none sent; print and exit.
    #[arg(long, value_name = "SINK", conflicts_with = "resume_sink")]
    pub pause_sink: Option<String>,

    /// Resume this paused sink in the database; print and exit.
    #[arg(long, value_name = "SINK")]
    pub resume_sink: Option<String>,

    /// Read a password from standard input (one line), print its argon2 hash (a PHC string
    /// for CDR_RELAY_USERS) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub hash_password: bool,

    /// Replay a capture from this file (`-` for standard input) instead of a PBX; exit once
    /// every call has been delivered to every sink or dead-lettered.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,

    /// Site (PBX) name, part of every call and of its stable id.
    #[arg(long, env = "CDR_RELAY_SITE")]
    pub site: Option<String>,

    /// Seconds a call may go without news before it is delivered incomplete
    /// [default: 14400].
    #[arg(long, env = "CDR_RELAY_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,

    /// The sinks' settings.
    #[command(flatten)]
    #[serde(flatten)]
    pub sink: SinkArgs,

    /// Sentry DSN: errors and dead letters are reported there.
    #[arg(long, env = "SENTRY_DSN", hide_env_values = true)]
    pub sentry_dsn: Option<String>,

    /// Sentry cron check-in URL, called every SENTRY_CRON_INTERVAL seconds.
    #[arg(long, env = "SENTRY_CRON_URL", hide_env_values = true)]
    pub sentry_cron_url: Option<String>,

    /// Seconds between Sentry cron check-ins [default: 180].
    #[arg(long, env = "SENTRY_CRON_INTERVAL", value_name = "SECONDS")]
    pub sentry_cron_interval: Option<u64>,

    /// The SQLite file holding the outbox and the call store [default: ./cdr-relay.db; as a
    /// systemd service with a state directory, cdr-relay.db in $STATE_DIRECTORY].
    #[arg(long, env = "CDR_RELAY_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,

    /// Days delivered calls, kept inputs, numbered source records and rejects stay in the
    /// database (counted from when they were stored; a dead letter from when it was given up
    /// on); 0 keeps them forever. A call waiting for a sink is never pruned [default: 30].
    #[arg(long, env = "CDR_RELAY_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<u64>,

    /// Megabytes of data the database is kept under by pruning the oldest delivered calls,
    /// inputs, records and rejects first (calls waiting for a sink, dead letters and open calls
    /// are kept beyond it); 0 for no limit [default: 500].
    #[arg(long, env = "CDR_RELAY_MAX_DB_MB", value_name = "MB")]
    pub max_db_mb: Option<u64>,

    /// The web server's settings.
    #[command(flatten)]
    #[serde(flatten)]
    pub web: WebArgs,

    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "CDR_RELAY_LOG_FORMAT", value_parser = ChoiceParser::<LogFormat>::new())]
    pub log_format: Option<LogFormat>,
}

impl CommonArgs {
    /// The layer of the old names: the settings `PREFIX` + the old name (`SMDR_WEBHOOK_URL`,
    /// ...) gives, as the webhook logger this relay replaces named them; the rest unset.
    pub fn legacy_env(prefix: &str) -> Self {
        let var = |name: &str| {
            std::env::var(format!("{prefix}{name}"))
                .ok()
                .filter(|v| !v.is_empty())
        };
        let num = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok());
        Self {
            site: var("SITE"),
            idle_timeout: num("IDLE_TIMEOUT"),
            sink: SinkArgs {
                webhook_url: var("WEBHOOK_URL"),
                webhook_key: var("WEBHOOK_KEY"),
                webhook_secret: var("WEBHOOK_SECRET"),
                webhook_max_retries: num("WEBHOOK_MAX_RETRIES").and_then(|n| u32::try_from(n).ok()),
                webhook_retry_delay: num("WEBHOOK_RETRY_DELAY"),
                webhook_ca_file: var("WEBHOOK_CA_FILE").map(PathBuf::from),
                ..SinkArgs::default()
            },
            sentry_dsn: var("SENTRY_DSN"),
            sentry_cron_url: var("SENTRY_CRON_URL"),
            sentry_cron_interval: num("SENTRY_CRON_INTERVAL"),
            ..Self::default()
        }
    }

    /// The operator's command of `--requeue-dead`, `--pause-sink` or `--resume-sink`, if any.
    pub fn admin_command(&self) -> Option<AdminCommand> {
        let sink = |s: &Option<String>| text(s);
        sink(&self.requeue_dead)
            .map(AdminCommand::RequeueDead)
            .or_else(|| sink(&self.pause_sink).map(AdminCommand::PauseSink))
            .or_else(|| sink(&self.resume_sink).map(AdminCommand::ResumeSink))
    }

    /// Fills settings not given by flag or new-style variable from `PREFIX` + the old name
    /// ([`Self::legacy_env`]).
    pub fn with_legacy_env(self, prefix: &str) -> Self {
        layer(&self, &[&Self::legacy_env(prefix)]).unwrap_or(self)
    }
}

impl Config {
    /// The settings every relay shares, from the layered `args`, around `source`.
    pub(super) fn resolve_common(
        args: &CommonArgs,
        source: SourceConfig,
    ) -> Result<Self, ConfigError> {
        let SinkSettings {
            sinks,
            webhook,
            retry,
            redis,
            http_cdr,
            sql,
            nats,
        } = args.sink.resolve()?;
        let super::web::WebSettings { http, tls, access } = args.web.resolve()?;
        let log_format = args.log_format.unwrap_or(LogFormat::Text);
        Ok(Self {
            kind: RelayKind::Smdr,
            source,
            ami: AmiAssemblerConfig::default(),
            dialler_max_item: call_assembler::DEFAULT_MAX_ITEM,
            reconcile: None,
            recordings: None,
            recordings_table: None,
            redis,
            tls,
            http_cdr,
            sql,
            sinks,
            nats,
            site: text(&args.site).unwrap_or_default(),
            idle_timeout: Duration::from_secs(args.idle_timeout.unwrap_or(4 * 3600)),
            read_timeout: None,
            smdr: Default::default(),
            webhook,
            retry,
            sentry_dsn: text(&args.sentry_dsn),
            sentry_cron_url: text(&args.sentry_cron_url),
            sentry_cron_interval: Duration::from_secs(
                args.sentry_cron_interval.unwrap_or(180).max(1),
            ),
            db: args.db.clone().unwrap_or_else(default_db),
            retention: cdr_sinks::retention::RetentionPolicy {
                max_age: match args.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS) {
                    0 => None,
                    days => Some(Duration::from_secs(days.saturating_mul(24 * 3600))),
                },
                max_bytes: match args.max_db_mb.unwrap_or(DEFAULT_MAX_DB_MB) {
                    0 => None,
                    mb => Some(mb.saturating_mul(1 << 20)),
                },
            },
            http,
            access,
            receiver_listen: None,
            json_logs: log_format == LogFormat::Json,
            admin: args.admin_command(),
        })
    }
}
