//! The settings of the five relays: one [`Config`] with the relay ([`RelayKind`]) and its
//! source ([`SourceConfig`], one variant per source), resolved from flags, environment
//! variables (the SMDR webhook logger's names work unchanged for `smdr-relay`), a TOML file
//! and defaults, in that order ([`overlay`]).
//!
//! Each relay's arguments live in its own module ([`smdr`], [`ami`] with [`db`], [`list`],
//! [`receiver`], [`nats`]) beside the settings every relay shares ([`common`], with [`sinks`] and
//! [`web`]); the settings types of the sources are the sources' own ([`crate::sources`]);
//! enum-like settings are clap `ValueEnum`s ([`values`]); `--check-config`'s summary is
//! [`Config::describe`].
//!
//! The settings depend on the sources, the sinks and the web server (whose files they check
//! at once), never the other way round.

pub mod ami;
pub mod common;
pub mod db;
mod describe;
pub mod list;
pub mod nats;
pub mod overlay;
pub mod receiver;
pub mod sink_spec;
pub mod sinks;
pub mod smdr;
pub mod values;
pub mod web;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::webhook::WebhookConfig;

use call_assembler::AmiAssemblerConfig;

pub use ami::{AmiArgs, DEFAULT_CDR_CSV_PATH, DEFAULT_CEL_CSV_PATH};
pub use common::CommonArgs;
pub use db::{DbArgs, parse_db_time};
pub use list::ListArgs;
pub use nats::NatsRelayArgs;
pub use receiver::ReceiverArgs;
pub use sink_spec::SinkSpec;
pub use smdr::Args;

pub use crate::sources::cel_csv::CelCsvSource;
pub use crate::sources::cel_db::{CelDbSource, DbStart};
pub use crate::sources::redis_list::RedisListSource;
pub use crate::sources::sql::{DbKind, DbTls};

/// The default address the relay listens on for the PBX when nothing else is configured.
pub const DEFAULT_SMDR_LISTEN: &str = "0.0.0.0:5100";
/// The default address of the built-in web page, API and metrics.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// The default database file, in the working directory ([`default_db`]).
pub const DEFAULT_DB: &str = "./cdr-relay.db";
/// The database file's name in a service's state directory ([`default_db`]).
pub const STATE_DB_NAME: &str = "cdr-relay.db";

/// The database file when none is configured (`--db`, `CDR_RELAY_DB`, `db` in the file): run as
/// a systemd service with `StateDirectory=` (the packaged units), `cdr-relay.db` in its state
/// directory (`STATE_DIRECTORY`, the first when it lists several), else [`DEFAULT_DB`] in the
/// working directory.
pub fn default_db() -> PathBuf {
    default_db_in(std::env::var_os("STATE_DIRECTORY").as_deref())
}

/// [`default_db`] for this value of `STATE_DIRECTORY` (`None`: not set).
fn default_db_in(state_directory: Option<&std::ffi::OsStr>) -> PathBuf {
    state_directory
        .and_then(|dirs| std::env::split_paths(dirs).find(|d| !d.as_os_str().is_empty()))
        .map_or_else(|| PathBuf::from(DEFAULT_DB), |dir| dir.join(STATE_DB_NAME))
}

/// Where the records come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// Connect to the PBX (SMDR).
    Connect(String),
    /// Listen for the PBX (SMDR).
    Listen(String),
    /// Replay a file (`-`: stdin).
    Replay(PathBuf),
    /// The Asterisk Manager Interface.
    Ami(Box<ami_proto::client::ClientConfig>),
    /// A dialler's CDR list in Redis.
    RedisList(RedisListSource),
    /// CDR batches posted to the built-in web server (`cdr-receiver`).
    Posts(crate::sources::receiver::ReceiverConfig),
    /// Asterisk's CEL and CDR CSV files, followed (`CEL_MODE=csv`).
    CelCsv(CelCsvSource),
    /// Asterisk's `cel` and `cdr` tables in PostgreSQL or MySQL/MariaDB (`CEL_MODE=db`).
    CelDb(CelDbSource),
    /// A JetStream stream's durable consumer (`nats-relay`).
    Nats(Box<crate::sources::nats::NatsSource>),
}

/// `ami-relay` with AMI and a CDR source beside it: the CDR as the book of record (see
/// [`call_assembler::feed::ReconcileFeed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileSource {
    /// Where the CDR comes from.
    pub cdr: ReconcileCdr,
    /// Read the CDR to its current end and stop (with `--replay`, or `--once`).
    pub once: bool,
    /// The waits.
    pub config: call_assembler::feed::ReconcileConfig,
}

/// The CDR AMI is reconciled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileCdr {
    /// The cdr_csv file (`CDR_CSV_PATH`).
    Csv(PathBuf),
    /// The cdr table (`DB_TYPE` and the other `DB_*` settings; no CEL table is read).
    Db(Box<CelDbSource>),
}

/// The default list a dialler pushes its CDRs to.
pub const DEFAULT_DIALLER_LIST: &str = "enigma:notifications:campaigns";
/// The default list the Redis sink pushes calls to.
pub const DEFAULT_REDIS_SINK_LIST: &str = "cdr-relay:calls";

impl PartialEq for SourceConfig {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Connect(a), Self::Connect(b)) | (Self::Listen(a), Self::Listen(b)) => a == b,
            (Self::Replay(a), Self::Replay(b)) => a == b,
            (Self::RedisList(a), Self::RedisList(b)) => a == b,
            (Self::Posts(a), Self::Posts(b)) => a == b,
            (Self::CelCsv(a), Self::CelCsv(b)) => a == b,
            (Self::CelDb(a), Self::CelDb(b)) => a == b,
            (Self::Nats(a), Self::Nats(b)) => a == b,
            (Self::Ami(a), Self::Ami(b)) => {
                (&a.host, a.port, &a.username) == (&b.host, b.port, &b.username)
            }
            _ => false,
        }
    }
}

/// Which relay runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayKind {
    /// `smdr-relay`.
    #[default]
    Smdr,
    /// `ami-relay`.
    Ami,
    /// `list-relay`.
    List,
    /// `cdr-receiver`.
    Receiver,
    /// `nats-relay`.
    Nats,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Which relay.
    pub kind: RelayKind,
    /// The source.
    pub source: SourceConfig,
    /// The Asterisk assembler's settings (`ami-relay`).
    pub ami: AmiAssemblerConfig,
    /// `ami-relay`: the CDR source AMI is reconciled with, if any.
    pub reconcile: Option<ReconcileSource>,
    /// `ami-relay`: where call recordings are looked for, if anywhere.
    pub recordings: Option<crate::sources::recordings::RecordingsConfig>,
    /// `ami-relay`: the recordings table read in the background, if any.
    pub recordings_table: Option<crate::sources::recordings_db::RecordingsTable>,
    /// Dialler items (`list-relay`) and relayed messages (`nats-relay`) larger than this are
    /// rejected unparsed.
    pub dialler_max_item: usize,
    /// The Redis list sink, when configured.
    pub redis: Option<cdr_sinks::redis_list::RedisListConfig>,
    /// HTTPS for the web server: certificate chain and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The HTTP-CDR sink, when configured (its `session` is filled in from the database when
    /// the relay starts: one GUID per outbox, kept in it).
    pub http_cdr: Option<cdr_sinks::http_cdr_sink::HttpCdrConfig>,
    /// The SQL table sink, when configured.
    pub sql: Option<cdr_sinks::sql::SqlConfig>,
    /// The sinks, store included.
    pub sinks: Vec<SinkSpec>,
    /// NATS: the JetStream sink's settings (and `nats-relay`'s servers), when configured.
    pub nats: Option<cdr_sinks::nats::NatsConfig>,
    /// Site name.
    pub site: String,
    /// Idle timeout of open calls.
    pub idle_timeout: Duration,
    /// Reconnect after this long without data (`None`: never).
    pub read_timeout: Option<Duration>,
    /// `smdr-relay`: who may connect, when a silent connection may be replaced, the record cap.
    pub smdr: smdr::SmdrSettings,
    /// The webhook, when configured.
    pub webhook: Option<WebhookConfig>,
    /// Retry policy of the webhook.
    pub retry: RetryPolicy,
    /// Sentry DSN.
    pub sentry_dsn: Option<String>,
    /// Sentry cron check-in URL.
    pub sentry_cron_url: Option<String>,
    /// Interval of the check-ins.
    pub sentry_cron_interval: Duration,
    /// The SQLite file.
    pub db: PathBuf,
    /// What the database keeps (`CDR_RELAY_RETENTION_DAYS`, `CDR_RELAY_MAX_DB_MB`).
    pub retention: cdr_sinks::retention::RetentionPolicy,
    /// The web server's address, if on.
    pub http: Option<String>,
    /// Who may read and administer through the web server.
    pub access: crate::web::auth::Access,
    /// `cdr-receiver`: the CMS receiver's own listener (`CDR_RECEIVER_LISTEN`), serving only
    /// its path, `/healthz` and `/readyz`; `None`: it is served by the web server.
    pub receiver_listen: Option<String>,
    /// `json` logs.
    pub json_logs: bool,
    /// An operator's command to run on the database instead of relaying (`--requeue-dead`,
    /// `--pause-sink`, `--resume-sink`).
    pub admin: Option<AdminCommand>,
}

/// What an operator asks of the database from the command line, instead of relaying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// `--requeue-dead SINK`: every dead letter of the sink due again.
    RequeueDead(String),
    /// `--pause-sink SINK`: the sink paused (kept in the database).
    PauseSink(String),
    /// `--resume-sink SINK`: the sink resumed.
    ResumeSink(String),
}

/// A configuration problem, said so a user can fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
