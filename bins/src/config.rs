//! Configuration of `smdr-relay`: flags, environment variables (the SMDR webhook logger's names
//! work unchanged) and a TOML file, in that order of precedence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::webhook::WebhookConfig;
use clap::Parser;
use serde::Deserialize;

use call_assembler::{AmiAssemblerConfig, TenantRule};

use crate::sinks::SinkSpec;
pub use crate::sources::cel_csv::CelCsvSource;
pub use crate::sources::cel_db::{CelDbSource, DbStart};
pub use crate::sources::redis_list::RedisListSource;
pub use crate::sources::sql::{DbKind, DbTls};

/// The default address the relay listens on for the PBX when nothing else is configured.
pub const DEFAULT_SMDR_LISTEN: &str = "0.0.0.0:5100";
/// The default address of the built-in web page, API and metrics.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// The default database file.
pub const DEFAULT_DB: &str = "./cdr-relay.db";

/// The settings every relay shares: sinks, store, web server, logging, Sentry, replay.
///
/// Environment variables: the names shown; `smdr-relay` also reads the SMDR webhook logger's
/// names (`SMDR_WEBHOOK_URL`, `SMDR_SITE`, ... : `SMDR_` before the name) when the new one is
/// not set.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// A TOML file with settings (flags and environment variables override it).
    #[arg(long, value_name = "FILE", env = "CDR_RELAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Check the configuration, print what would run, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Replay a capture from this file (`-` for standard input) instead of a PBX; exit once
    /// every call has been delivered to every sink or dead-lettered.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,

    /// Sinks to deliver to, repeatable: `store`, `webhook`, `jsonl:PATH` (`jsonl:-` = stdout).
    /// Default: the store, plus the webhook when WEBHOOK_URL is set.
    #[arg(long = "sink", value_name = "KIND[:ARG]")]
    pub sinks: Vec<SinkSpec>,

    /// Site (PBX) name, part of every call and of its stable id.
    #[arg(long, env = "CDR_RELAY_SITE")]
    pub site: Option<String>,

    /// Seconds a call may go without news before it is delivered incomplete
    /// [default: 14400].
    #[arg(long, env = "CDR_RELAY_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,

    /// Webhook URL: each completed call is POSTed there as JSON.
    #[arg(long, env = "WEBHOOK_URL", value_name = "URL")]
    pub webhook_url: Option<String>,

    /// Value of the Authorization header sent to the webhook, as-is.
    #[arg(long, env = "WEBHOOK_KEY", hide_env_values = true)]
    pub webhook_key: Option<String>,

    /// Standard Webhooks secret (whsec_...): sign every request.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Attempts before a webhook delivery is dead-lettered [default: 25].
    #[arg(long, env = "WEBHOOK_MAX_RETRIES")]
    pub webhook_max_retries: Option<u32>,

    /// First retry delay in seconds, doubling up to an hour, with full jitter [default: 30].
    #[arg(long, env = "WEBHOOK_RETRY_DELAY", value_name = "SECONDS")]
    pub webhook_retry_delay: Option<u64>,

    /// Extra trusted CA certificates (PEM) for the webhook's TLS.
    #[arg(long, env = "WEBHOOK_CA_FILE", value_name = "FILE")]
    pub webhook_ca_file: Option<PathBuf>,

    /// Redis sink: the server (`redis://[user:password@]host:port/db`, `rediss://` for TLS).
    #[arg(long, env = "REDIS_URL", value_name = "URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis sink: the list each call's JSON is pushed to [default: cdr-relay:calls].
    #[arg(long, env = "REDIS_LIST_KEY", value_name = "KEY")]
    pub redis_list_key: Option<String>,

    /// Redis sink: `lpush` (a consumer drains with BRPOP, oldest first) or `rpush`
    /// [default: lpush].
    #[arg(long, env = "REDIS_PUSH", value_name = "lpush|rpush")]
    pub redis_push: Option<String>,

    /// Redis sink: extra trusted CA certificates (PEM) for `rediss://`.
    #[arg(long, env = "REDIS_CA_FILE", value_name = "FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// HTTP-CDR sink: receiver URLs (up to 4, comma separated) that get each call's records as
    /// Cisco Meeting Server CDR posts (another relay's cdr-receiver, or a CMS CDR receiver).
    #[arg(long, env = "HTTP_CDR_URLS", value_name = "URLS")]
    pub http_cdr_urls: Option<String>,

    /// HTTP-CDR sink: the `Authorization` header sent, as-is (`Bearer ...`, `Basic ...`).
    #[arg(long, env = "HTTP_CDR_AUTHORIZATION", hide_env_values = true)]
    pub http_cdr_authorization: Option<String>,

    /// HTTP-CDR sink: extra trusted CA certificates (PEM).
    #[arg(long, env = "HTTP_CDR_CA_FILE", value_name = "FILE")]
    pub http_cdr_ca_file: Option<PathBuf>,

    /// HTTP-CDR sink: the PBX's offset from UTC (`+02:00`) for SMDR and Asterisk call times
    /// [default: +00:00].
    #[arg(long, env = "HTTP_CDR_UTC_OFFSET", value_name = "+HH:MM")]
    pub http_cdr_utc_offset: Option<String>,

    /// Sentry DSN: errors and dead letters are reported there.
    #[arg(long, env = "SENTRY_DSN", hide_env_values = true)]
    pub sentry_dsn: Option<String>,

    /// Sentry cron check-in URL, called every SENTRY_CRON_INTERVAL seconds.
    #[arg(long, env = "SENTRY_CRON_URL", hide_env_values = true)]
    pub sentry_cron_url: Option<String>,

    /// Seconds between Sentry cron check-ins [default: 180].
    #[arg(long, env = "SENTRY_CRON_INTERVAL", value_name = "SECONDS")]
    pub sentry_cron_interval: Option<u64>,

    /// The SQLite file holding the outbox and the call store [default: ./cdr-relay.db].
    #[arg(long, env = "CDR_RELAY_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,

    /// Address of the built-in web page, JSON API and /metrics [default: 127.0.0.1:8080];
    /// `off` to disable.
    #[arg(long, env = "CDR_RELAY_HTTP", value_name = "ADDR:PORT")]
    pub http: Option<String>,

    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "CDR_RELAY_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// Serve the web server (and the CMS receiver) over HTTPS with this PEM certificate chain.
    #[arg(long, env = "CDR_RELAY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of CDR_RELAY_TLS_CERT.
    #[arg(long, env = "CDR_RELAY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl CommonArgs {
    /// Fills settings not given by flag or new-style variable from `PREFIX` + the old name
    /// (`SMDR_WEBHOOK_URL`, ...), as the webhook logger this relay replaces named them.
    pub fn with_legacy_env(mut self, prefix: &str) -> Self {
        let var = |name: &str| {
            std::env::var(format!("{prefix}{name}"))
                .ok()
                .filter(|v| !v.is_empty())
        };
        let num = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok());
        self.site = self.site.or_else(|| var("SITE"));
        self.idle_timeout = self.idle_timeout.or_else(|| num("IDLE_TIMEOUT"));
        self.webhook_url = self.webhook_url.or_else(|| var("WEBHOOK_URL"));
        self.webhook_key = self.webhook_key.or_else(|| var("WEBHOOK_KEY"));
        self.webhook_secret = self.webhook_secret.or_else(|| var("WEBHOOK_SECRET"));
        self.webhook_max_retries = self
            .webhook_max_retries
            .or_else(|| num("WEBHOOK_MAX_RETRIES").and_then(|n| u32::try_from(n).ok()));
        self.webhook_retry_delay = self
            .webhook_retry_delay
            .or_else(|| num("WEBHOOK_RETRY_DELAY"));
        self.webhook_ca_file = self
            .webhook_ca_file
            .or_else(|| var("WEBHOOK_CA_FILE").map(PathBuf::from));
        self.sentry_dsn = self.sentry_dsn.or_else(|| var("SENTRY_DSN"));
        self.sentry_cron_url = self.sentry_cron_url.or_else(|| var("SENTRY_CRON_URL"));
        self.sentry_cron_interval = self
            .sentry_cron_interval
            .or_else(|| num("SENTRY_CRON_INTERVAL"));
        self
    }
}

/// Collects Avaya IP Office SMDR, assembles the records of each call into one completed call,
/// keeps every call in a local store with a web page, and delivers it to webhooks and other sinks.
///
/// With no configuration it listens for the PBX on 0.0.0.0:5100, stores calls in
/// ./cdr-relay.db and serves the web page on http://127.0.0.1:8080. Point the IP Office SMDR
/// output at this machine (Manager: System > CDR/SMDR > IP address and port), or set SMDR_ADDR
/// when the PBX listens and the relay should connect. Every option can also be set by the
/// environment variable shown (the SMDR webhook logger's SMDR_WEBHOOK_URL, SMDR_SITE, ... work
/// too), or in a TOML file given with --config (keys as the long flags, with `_` for `-`).
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "smdr-relay", version, about, long_about)]
pub struct Args {
    /// Settings every relay shares.
    #[command(flatten)]
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

/// Reads the Asterisk Manager Interface (AMI) live, assembles each call's channel, CEL and Cdr
/// events into one completed call (transfers, queues and ring groups included), keeps every
/// call in a local store with a web page, and delivers it to webhooks and other sinks.
///
/// Needs AMI_HOST, AMI_USERNAME and AMI_PASSWORD (a `manager.conf` user with `read = call,cdr`
/// or more), or --replay with a raw AMI capture. Every option can also be set by the
/// environment variable shown, or in a TOML file given with --config (keys as the long flags,
/// with `_` for `-`; tenant rules only there, as `[[tenant_rules]]`).
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "ami-relay", version, about, long_about)]
pub struct AmiArgs {
    /// Settings every relay shares.
    #[command(flatten)]
    pub common: CommonArgs,

    /// The Asterisk server's host name or address.
    #[arg(long, env = "AMI_HOST")]
    pub ami_host: Option<String>,

    /// The AMI port [default: 5038, or 5039 with AMI_TLS].
    #[arg(long, env = "AMI_PORT")]
    pub ami_port: Option<u16>,

    /// The manager user (`[name]` in manager.conf).
    #[arg(long, env = "AMI_USERNAME")]
    pub ami_username: Option<String>,

    /// Its secret.
    #[arg(long, env = "AMI_PASSWORD", hide_env_values = true)]
    pub ami_password: Option<String>,

    /// Connect with TLS (`true`/`false`) [default: false].
    #[arg(long, env = "AMI_TLS", value_name = "BOOL")]
    pub ami_tls: Option<String>,

    /// Extra trusted CA certificates (PEM) for AMI over TLS (a private CA or a self-signed
    /// certificate).
    #[arg(long, env = "AMI_TLS_CA_FILE", value_name = "FILE")]
    pub ami_tls_ca_file: Option<PathBuf>,

    /// Login: `plain` or `md5` (challenge-response, the secret never crosses the wire)
    /// [default: plain].
    #[arg(long, env = "AMI_AUTH")]
    pub ami_auth: Option<String>,

    /// `complete`: one record per call when it ends; `progressive`: also a `started` record and
    /// an `updated` one every LONG_CALL_UPDATE_INTERVAL while it lasts [default: complete].
    #[arg(long, env = "CALL_SHIPPING_MODE")]
    pub call_shipping_mode: Option<String>,

    /// Seconds between progress records of a call in progressive mode [default: 60].
    #[arg(long, env = "LONG_CALL_UPDATE_INTERVAL", value_name = "SECONDS")]
    pub long_call_update_interval: Option<u64>,

    /// Contexts where trunk (outside) channels start, comma separated
    /// [default: from-trunk,from-pstn,from-external].
    #[arg(long, env = "AMI_TRUNK_CONTEXTS", value_name = "LIST")]
    pub trunk_contexts: Option<String>,

    /// Channel name prefixes of trunks, comma separated (e.g. `PJSIP/provider`).
    #[arg(long, env = "AMI_TRUNK_CHANNELS", value_name = "LIST")]
    pub trunk_channels: Option<String>,

    /// Numbers with more digits than this are outside numbers (decides the direction when no
    /// trunk rule does).
    #[arg(long, env = "AMI_INTERNAL_NUMBER_MAX_LEN", value_name = "DIGITS")]
    pub internal_number_max_len: Option<usize>,

    /// The PBX's offset from UTC (`+02:00`), applied to event timestamps so that call times
    /// are PBX local time like Asterisk's CDR [default: +00:00].
    #[arg(long, env = "AMI_UTC_OFFSET", value_name = "+HH:MM")]
    pub utc_offset: Option<String>,

    /// Where CEL comes from: `ami` (the Manager Interface), `csv` (follow the cel_custom and
    /// cdr_csv files) or `db` (read Asterisk's `cel` and `cdr` tables in PostgreSQL or
    /// MySQL/MariaDB, see the DB_* settings); AMI_HOST is needed only for `ami` [default: ami].
    #[arg(long, env = "CEL_MODE", value_name = "ami|csv|db")]
    pub cel_mode: Option<String>,

    /// CEL_MODE=csv: the cel_custom file to follow
    /// [default: /var/log/asterisk/cel-custom/Master.csv].
    #[arg(long, env = "CEL_CSV_PATH", value_name = "FILE")]
    pub cel_csv_path: Option<PathBuf>,

    /// CEL_MODE=csv: the cel_custom file's columns, comma separated, in Asterisk's CEL field
    /// names (eventtype,eventtime,cid_name,...,uniqueid,linkedid,...,eventextra) [default:
    /// cel_custom's sample mapping, or CEL_CUSTOM_CONF's].
    #[arg(long, env = "CEL_CSV_COLUMNS", value_name = "NAMES")]
    pub cel_csv_columns: Option<String>,

    /// CEL_MODE=csv: Asterisk's cel_custom.conf, whose `[mappings]` line for CEL_CSV_PATH's
    /// file name (else its first) gives the columns.
    #[arg(long, env = "CEL_CUSTOM_CONF", value_name = "FILE")]
    pub cel_custom_conf: Option<PathBuf>,

    /// CEL_MODE=csv: the cdr_csv file whose rows are attached to their calls (optional: when it
    /// does not exist, calls carry no CDR rows) [default: /var/log/asterisk/cdr-csv/Master.csv].
    /// CEL_MODE=ami (or --replay): when set, AMI's calls are reconciled with this file, the
    /// book of record: calls AMI missed are rebuilt from it and delivered as reconciled.
    #[arg(long, env = "CDR_CSV_PATH", value_name = "FILE")]
    pub cdr_csv_path: Option<PathBuf>,

    /// CEL_MODE=csv: read the files to their current end, deliver every call, and exit (a
    /// backfill) instead of following them. CEL_MODE=db: the same with both tables, read up to
    /// the rows they held at the start.
    #[arg(long)]
    pub once: bool,

    /// Directories (comma separated, walked recursively) where call recordings are looked
    /// for: a file whose name holds a call's Linkedid or a leg's Uniqueid is attached to the
    /// call's `recordings`.
    #[arg(long, env = "RECORDINGS_DIRS", value_name = "DIRS")]
    pub recordings_dirs: Option<String>,

    /// RECORDINGS_DIRS: files and subdirectories not modified within this many hours are not
    /// looked at; DB_TABLE_RECORDINGS: rows older than this (by its time column) are not read
    /// at the start [default: 48].
    #[arg(long, env = "RECORDINGS_MAX_AGE_HOURS", value_name = "HOURS")]
    pub recordings_max_age_hours: Option<u64>,

    /// A table of call recordings (`schema.table` allowed) in the database the DB_* settings
    /// reach, in any CEL_MODE: a `uniqueid` and/or `linkedid` column, a `path` (or `filename`,
    /// `file`, `recordingfile`) column, optionally an integer `id` or a time column (`created`,
    /// `calldate`, `start`, `time`) to read only new rows. Read every DB_POLL_MS; each row's
    /// path is added to the `recordings` of the call whose Linkedid, or a leg's Uniqueid, it
    /// names. A missing table or database is logged and retried.
    #[arg(long, env = "DB_TABLE_RECORDINGS", value_name = "TABLE")]
    pub db_table_recordings: Option<String>,

    /// CEL_MODE=ami with CDR_CSV_PATH set: how long (seconds) a call's CDR rows wait for AMI
    /// to have seen the call before it is rebuilt from them and delivered as reconciled
    /// [default: 60].
    #[arg(long, env = "RECONCILE_WAIT", value_name = "SECS")]
    pub reconcile_wait: Option<u64>,

    /// CEL_MODE=ami with CDR_CSV_PATH set: how long (seconds) a call assembled from AMI waits
    /// for its CDR rows before it is flagged as missing from the CDR [default: 600].
    #[arg(long, env = "RECONCILE_FLAG_AFTER", value_name = "SECS")]
    pub reconcile_flag_after: Option<u64>,

    /// CEL_MODE=db: `postgresql` (or `postgres`) or `mysql` (or `mariadb`). The DB_*
    /// settings also reach the cdr table AMI is reconciled with (CEL_MODE=ami) and
    /// DB_TABLE_RECORDINGS.
    #[arg(long, env = "DB_TYPE", value_name = "postgresql|mysql")]
    pub db_type: Option<String>,

    /// CEL_MODE=db: the database server's host name or address [default: 127.0.0.1].
    #[arg(long, env = "DB_HOST")]
    pub db_host: Option<String>,

    /// CEL_MODE=db: its port [default: 5432 for PostgreSQL, 3306 for MySQL].
    #[arg(long, env = "DB_PORT")]
    pub db_port: Option<u16>,

    /// CEL_MODE=db: the database holding Asterisk's tables [default: asterisk].
    #[arg(long, env = "DB_NAME")]
    pub db_name: Option<String>,

    /// CEL_MODE=db: the user (SELECT on the two tables is enough).
    #[arg(long, env = "DB_USER")]
    pub db_user: Option<String>,

    /// CEL_MODE=db: its password.
    #[arg(long, env = "DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<String>,

    /// CEL_MODE=db: the CDR table, whose rows are attached to their calls; set it empty for
    /// none [default: cdr]. CEL_MODE=ami with DB_TYPE: the table AMI is reconciled with; empty:
    /// no reconciliation with the database (CDR_CSV_PATH still counts).
    #[arg(long, env = "DB_TABLE_CDR", value_name = "TABLE")]
    pub db_table_cdr: Option<String>,

    /// CEL_MODE=db: the CEL table [default: cel].
    #[arg(long, env = "DB_TABLE_CEL", value_name = "TABLE")]
    pub db_table_cel: Option<String>,

    /// CEL_MODE=db: TLS to the database: `disable`, `prefer` (TLS when the server offers it),
    /// `require` (TLS, certificate not checked) or `verify` (TLS with the certificate and host
    /// name checked against the web's roots or DB_CA_FILE) [default: prefer].
    #[arg(long, env = "DB_TLS", value_name = "disable|prefer|require|verify")]
    pub db_tls: Option<String>,

    /// CEL_MODE=db: extra trusted CA certificates (PEM) for DB_TLS.
    #[arg(long, env = "DB_CA_FILE", value_name = "FILE")]
    pub db_ca_file: Option<PathBuf>,

    /// CEL_MODE=db (and DB_TABLE_RECORDINGS): milliseconds between looks at the tables
    /// [default: 1000].
    #[arg(long, env = "DB_POLL_MS", value_name = "MS")]
    pub db_poll_ms: Option<u64>,

    /// CEL_MODE=db: rows read per query [default: 1000].
    #[arg(long, env = "DB_BATCH", value_name = "ROWS")]
    pub db_batch: Option<usize>,

    /// CEL_MODE=db: with no saved watermark, begin at the tables' current end (ship no
    /// history) [default: false: begin at their first row].
    #[arg(long, env = "DB_FRESH_START", value_name = "BOOL")]
    pub db_fresh_start: Option<String>,

    /// CEL_MODE=db: with no saved watermark, begin at the rows from this time (the tables' own
    /// time, as Asterisk wrote it: PBX local time unless `usegmtime`).
    #[arg(long, env = "DB_BACKFILL_FROM", value_name = "YYYY-MM-DD HH:MM:SS")]
    pub db_backfill_from: Option<String>,

    /// CEL_MODE=db (and DB_TABLE_RECORDINGS): for a table without an `id` column, how many
    /// seconds before the newest row read are read again, so that a row committed late with an
    /// earlier time is still shipped (once) [default: 60].
    #[arg(long, env = "DB_LOOKBACK_SECS", value_name = "SECONDS")]
    pub db_lookback_secs: Option<u64>,
}

/// The cel_custom columns `ami-relay` reads: `CEL_CSV_COLUMNS`, else the mapping for
/// `CEL_CSV_PATH`'s file name in `CEL_CUSTOM_CONF`, else cel_custom's sample mapping.
fn cel_columns(args: &AmiArgs) -> Result<call_assembler::CelColumns, ConfigError> {
    use call_assembler::CelColumns;
    if let Some(list) = &args.cel_csv_columns {
        return CelColumns::parse_list(list)
            .map_err(|e| ConfigError(format!("CEL_CSV_COLUMNS: {e}")));
    }
    let Some(conf) = &args.cel_custom_conf else {
        return Ok(CelColumns::sample());
    };
    let text = std::fs::read_to_string(conf)
        .map_err(|e| ConfigError(format!("CEL_CUSTOM_CONF {}: {e}", conf.display())))?;
    let file_name = args
        .cel_csv_path
        .as_deref()
        .unwrap_or_else(|| Path::new(DEFAULT_CEL_CSV_PATH))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut in_mappings = false;
    let mut first = None;
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or_default().trim();
        if line.starts_with('[') {
            in_mappings = line.eq_ignore_ascii_case("[mappings]");
            continue;
        }
        let Some((name, mapping)) = line.split_once("=>") else {
            continue;
        };
        if !in_mappings {
            continue;
        }
        let (name, mapping) = (name.trim(), mapping.trim());
        if name == file_name {
            first = Some(mapping);
            break;
        }
        first.get_or_insert(mapping);
    }
    let mapping = first.ok_or_else(|| {
        ConfigError(format!(
            "CEL_CUSTOM_CONF {}: no mapping in its [mappings] section",
            conf.display()
        ))
    })?;
    CelColumns::from_mapping(mapping)
        .map_err(|e| ConfigError(format!("CEL_CUSTOM_CONF {}: {e}", conf.display())))
}

/// The default `CEL_CSV_PATH`: where Asterisk's cel_custom writes with its sample mapping.
pub const DEFAULT_CEL_CSV_PATH: &str = "/var/log/asterisk/cel-custom/Master.csv";

/// The default `CDR_CSV_PATH`: where Asterisk's cdr_csv writes.
pub const DEFAULT_CDR_CSV_PATH: &str = "/var/log/asterisk/cdr-csv/Master.csv";

/// Drains a predictive dialler's CDR list in Redis reliably (each item moved to a processing
/// list, committed, then removed from it; items a crash left there are committed first at the
/// next start), turns every CDR into a completed call, keeps it in the local store with a web
/// page, and delivers it to webhooks, Redis lists and other sinks.
///
/// Every option can also be set by the environment variable shown, or in a TOML file given with
/// --config (keys as the long flags, with `_` for `-`).
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "list-relay", version, about, long_about)]
pub struct ListArgs {
    /// Settings every relay shares.
    #[command(flatten)]
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

/// Receives Cisco Meeting Server CDR posts (CMS: Configuration > CDR settings, receiver URI
/// `http(s)://this-host:port/cdr`), answers 200 only once a batch is committed, assembles each
/// meeting with its legs, keeps every call in the local store with a web page and the sample
/// receiver's record API, and delivers calls to webhooks, Redis lists and other sinks.
///
/// The receiver is served by the built-in web server: set CDR_RELAY_HTTP to an address CMS
/// reaches (for example 0.0.0.0:8444), with CDR_RELAY_TLS_CERT and CDR_RELAY_TLS_KEY for HTTPS.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "cdr-receiver", version, about, long_about)]
pub struct ReceiverArgs {
    /// Settings every relay shares.
    #[command(flatten)]
    pub common: CommonArgs,

    /// The path CMS posts to [default: /cdr].
    #[arg(long, env = "CDR_RECEIVER_PATH", value_name = "PATH")]
    pub cdr_path: Option<String>,

    /// Require `Authorization: Bearer TOKEN`.
    #[arg(long, env = "CDR_RECEIVER_TOKEN", hide_env_values = true)]
    pub cdr_token: Option<String>,

    /// Require HTTP basic authentication, given as `user:password`.
    #[arg(long, env = "CDR_RECEIVER_BASIC_AUTH", hide_env_values = true)]
    pub cdr_basic_auth: Option<String>,

    /// The largest body accepted, in bytes (larger ones get 413) [default: 8388608].
    #[arg(long, env = "CDR_RECEIVER_MAX_BODY", value_name = "BYTES")]
    pub cdr_max_body: Option<usize>,

    /// Seconds a body may take to arrive (slower ones get 408) [default: 30].
    #[arg(long, env = "CDR_RECEIVER_BODY_TIMEOUT", value_name = "SECONDS")]
    pub cdr_body_timeout: Option<u64>,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    sinks: Option<Vec<String>>,
    smdr_addr: Option<String>,
    smdr_listen: Option<String>,
    site: Option<String>,
    idle_timeout: Option<u64>,
    read_timeout: Option<u64>,
    webhook_url: Option<String>,
    webhook_key: Option<String>,
    webhook_secret: Option<String>,
    webhook_max_retries: Option<u32>,
    webhook_retry_delay: Option<u64>,
    webhook_ca_file: Option<PathBuf>,
    sentry_dsn: Option<String>,
    sentry_cron_url: Option<String>,
    sentry_cron_interval: Option<u64>,
    db: Option<PathBuf>,
    http: Option<String>,
    log_format: Option<String>,
    ami_host: Option<String>,
    ami_port: Option<u16>,
    ami_username: Option<String>,
    ami_password: Option<String>,
    ami_tls: Option<bool>,
    ami_tls_ca_file: Option<PathBuf>,
    ami_auth: Option<String>,
    call_shipping_mode: Option<String>,
    long_call_update_interval: Option<u64>,
    trunk_contexts: Option<Vec<String>>,
    trunk_channels: Option<Vec<String>>,
    internal_number_max_len: Option<usize>,
    utc_offset: Option<String>,
    tenant_rules: Option<Vec<TenantRule>>,
    db_type: Option<String>,
    db_host: Option<String>,
    db_port: Option<u16>,
    db_name: Option<String>,
    db_user: Option<String>,
    db_password: Option<String>,
    db_table_cdr: Option<String>,
    db_table_cel: Option<String>,
    db_table_recordings: Option<String>,
    db_tls: Option<String>,
    db_ca_file: Option<PathBuf>,
    db_poll_ms: Option<u64>,
    db_batch: Option<usize>,
    db_fresh_start: Option<bool>,
    db_backfill_from: Option<String>,
    db_lookback_secs: Option<u64>,
    redis_url: Option<String>,
    redis_list_key: Option<String>,
    redis_push: Option<String>,
    redis_ca_file: Option<PathBuf>,
    dialler_redis_url: Option<String>,
    dialler_list_key: Option<String>,
    dialler_processing_key: Option<String>,
    dialler_batch: Option<usize>,
    dialler_max_item: Option<usize>,
    dialler_redis_ca_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    http_cdr_urls: Option<Vec<String>>,
    http_cdr_authorization: Option<String>,
    http_cdr_ca_file: Option<PathBuf>,
    http_cdr_utc_offset: Option<String>,
    cdr_path: Option<String>,
    cdr_token: Option<String>,
    cdr_basic_auth: Option<String>,
    cdr_max_body: Option<usize>,
    cdr_body_timeout: Option<u64>,
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
    Posts(crate::receiver::ReceiverConfig),
    /// Asterisk's CEL and CDR CSV files, followed (`CEL_MODE=csv`).
    CelCsv(CelCsvSource),
    /// Asterisk's `cel` and `cdr` tables in PostgreSQL or MySQL/MariaDB (`CEL_MODE=db`).
    CelDb(CelDbSource),
}

/// `ami-relay` with AMI and a CDR source beside it: the CDR as the book of record (see
/// [`crate::pipeline::reconcile`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileSource {
    /// Where the CDR comes from.
    pub cdr: ReconcileCdr,
    /// Read the CDR to its current end and stop (with `--replay`, or `--once`).
    pub once: bool,
    /// The waits.
    pub config: crate::pipeline::reconcile::ReconcileConfig,
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
    pub recordings: Option<crate::recordings::RecordingsConfig>,
    /// `ami-relay`: the recordings table read in the background, if any.
    pub recordings_table: Option<crate::recordings_db::RecordingsTable>,
    /// Dialler items larger than this are rejected unparsed (`list-relay`).
    pub dialler_max_item: usize,
    /// The Redis list sink, when configured.
    pub redis: Option<cdr_sinks::redis_list::RedisListConfig>,
    /// HTTPS for the web server: certificate chain and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The HTTP-CDR sink, when configured (its `session` is filled in from the database when
    /// the relay starts: one GUID per outbox, kept in it).
    pub http_cdr: Option<cdr_sinks::http_cdr_sink::HttpCdrConfig>,
    /// The sinks, store included.
    pub sinks: Vec<SinkSpec>,
    /// Site name.
    pub site: String,
    /// Idle timeout of open calls.
    pub idle_timeout: Duration,
    /// Reconnect after this long without data (`None`: never).
    pub read_timeout: Option<Duration>,
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
    /// The web server's address, if on.
    pub http: Option<String>,
    /// `json` logs.
    pub json_logs: bool,
}

/// A configuration problem, said so a user can fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Resolves `smdr-relay`'s flags and environment (already in `args`) over the TOML file,
    /// over defaults.
    pub fn resolve(args: &Args) -> Result<Self, ConfigError> {
        let common = args.common.clone().with_legacy_env("SMDR_");
        let file = read_config(&common)?;
        let source = if let Some(path) = &common.replay {
            SourceConfig::Replay(path.clone())
        } else if let Some(addr) = pick(&args.smdr_addr, &file.smdr_addr) {
            if pick(&args.smdr_listen, &file.smdr_listen).is_some() {
                return Err(ConfigError(
                    "set either SMDR_ADDR (connect to the PBX) or SMDR_LISTEN (the PBX connects to us), not both".into(),
                ));
            }
            SourceConfig::Connect(addr)
        } else {
            SourceConfig::Listen(
                pick(&args.smdr_listen, &file.smdr_listen)
                    .unwrap_or_else(|| DEFAULT_SMDR_LISTEN.into()),
            )
        };
        let mut c = Self::resolve_common(&common, &file, source)?;
        c.read_timeout = args
            .read_timeout
            .or(file.read_timeout)
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        Ok(c)
    }

    /// Resolves `ami-relay`'s flags and environment over the TOML file, over defaults.
    pub fn resolve_ami(args: &AmiArgs) -> Result<Self, ConfigError> {
        let common = &args.common;
        let file = read_config(common)?;
        let tls = match args.ami_tls.as_deref().map(str::trim) {
            Some(v) => parse_bool("AMI_TLS", v)?,
            None => file.ami_tls.unwrap_or(false),
        };
        let cel_mode = args
            .cel_mode
            .as_deref()
            .map_or_else(|| "ami".to_owned(), |m| m.trim().to_ascii_lowercase());
        let source = if let Some(path) = &common.replay {
            SourceConfig::Replay(path.clone())
        } else if cel_mode == "csv" {
            SourceConfig::CelCsv(CelCsvSource {
                cel: args
                    .cel_csv_path
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CEL_CSV_PATH.into()),
                cdr: args
                    .cdr_csv_path
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CDR_CSV_PATH.into()),
                once: args.once,
                columns: cel_columns(args)?,
            })
        } else if cel_mode == "db" {
            SourceConfig::CelDb(resolve_db(args, &file)?)
        } else if cel_mode != "ami" {
            return Err(ConfigError(format!(
                "CEL_MODE {cel_mode:?}: expected ami, csv or db"
            )));
        } else {
            let host = pick(&args.ami_host, &file.ami_host).ok_or_else(|| {
                ConfigError(
                    "set AMI_HOST (the Asterisk server), or --replay FILE for a capture".into(),
                )
            })?;
            let user = pick(&args.ami_username, &file.ami_username)
                .ok_or_else(|| ConfigError("set AMI_USERNAME (a manager.conf user)".into()))?;
            let secret = pick(&args.ami_password, &file.ami_password)
                .ok_or_else(|| ConfigError("set AMI_PASSWORD".into()))?;
            let port = args
                .ami_port
                .or(file.ami_port)
                .unwrap_or(if tls { 5039 } else { 5038 });
            let mut client = ami_proto::client::ClientConfig::new(host, port, user, secret);
            client.auth = match pick(&args.ami_auth, &file.ami_auth)
                .unwrap_or_else(|| "plain".into())
                .to_ascii_lowercase()
                .as_str()
            {
                "plain" => ami_proto::client::Auth::Plain,
                "md5" => ami_proto::client::Auth::Md5,
                other => {
                    return Err(ConfigError(format!(
                        "AMI_AUTH {other:?}: expected plain or md5"
                    )));
                }
            };
            if tls {
                let mut opts = ami_proto::client::TlsOptions::default();
                opts.ca_file = args
                    .ami_tls_ca_file
                    .clone()
                    .or_else(|| file.ami_tls_ca_file.clone());
                client.tls = Some(opts);
            }
            SourceConfig::Ami(Box::new(client))
        };
        let mut c = Self::resolve_common(common, &file, source)?;
        c.kind = RelayKind::Ami;
        let mode = pick(&args.call_shipping_mode, &file.call_shipping_mode)
            .unwrap_or_else(|| "complete".into());
        let interval = args
            .long_call_update_interval
            .or(file.long_call_update_interval)
            .unwrap_or(60)
            .max(1);
        let list = |a: &Option<String>, f: &Option<Vec<String>>| -> Option<Vec<String>> {
            match a {
                Some(s) => Some(
                    s.split(',')
                        .map(|x| x.trim().to_owned())
                        .filter(|x| !x.is_empty())
                        .collect(),
                ),
                None => f.clone(),
            }
        };
        let mut ami = AmiAssemblerConfig {
            site: c.site.clone(),
            idle_timeout: c.idle_timeout,
            progress_interval: match mode.to_ascii_lowercase().as_str() {
                "complete" => None,
                "progressive" => Some(Duration::from_secs(interval)),
                other => {
                    return Err(ConfigError(format!(
                        "CALL_SHIPPING_MODE {other:?}: expected complete or progressive"
                    )));
                }
            },
            internal_number_max_len: args
                .internal_number_max_len
                .or(file.internal_number_max_len),
            tenant_rules: file.tenant_rules.clone().unwrap_or_default(),
            ..AmiAssemblerConfig::default()
        };
        if let Some(v) = list(&args.trunk_contexts, &file.trunk_contexts) {
            ami.trunk_contexts = v;
        }
        if let Some(v) = list(&args.trunk_channels, &file.trunk_channels) {
            ami.trunk_channel_prefixes = v;
        }
        if let Some(off) = pick(&args.utc_offset, &file.utc_offset) {
            let parsed: chrono::FixedOffset = off.trim().parse().map_err(|_| {
                ConfigError(format!("AMI_UTC_OFFSET {off:?}: expected +HH:MM or -HH:MM"))
            })?;
            ami.utc_offset_secs = parsed.local_minus_utc();
        }
        c.ami = ami;
        let recordings_max_age =
            Duration::from_secs(args.recordings_max_age_hours.unwrap_or(48).max(1) * 3600);
        if let Some(dirs) = &args.recordings_dirs {
            let dirs: Vec<PathBuf> = dirs
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect();
            if !dirs.is_empty() {
                c.recordings = Some(crate::recordings::RecordingsConfig {
                    dirs,
                    max_age: recordings_max_age,
                });
            }
        }
        if let Some(table) = pick(&args.db_table_recordings, &file.db_table_recordings)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
        {
            if pick(&args.db_type, &file.db_type).is_none() {
                return Err(ConfigError(
                    "DB_TABLE_RECORDINGS needs DB_TYPE (postgresql or mysql) and the other DB_* settings of its database".into(),
                ));
            }
            c.recordings_table = Some(crate::recordings_db::RecordingsTable {
                db: resolve_db(args, &file)?,
                table,
                max_age: recordings_max_age,
            });
        }
        let reconciles = matches!(c.source, SourceConfig::Ami(_) | SourceConfig::Replay(_));
        let once = args.once || matches!(c.source, SourceConfig::Replay(_));
        // DB_TYPE reconciles with its CDR table, unless DB_TABLE_CDR is empty (the DB_*
        // settings may be there for the recordings table only); then CDR_CSV_PATH may still.
        let db_cdr = match pick(&args.db_type, &file.db_type) {
            Some(_) if reconciles => Some(resolve_db(args, &file)?),
            _ => None,
        }
        .filter(|db| db.cdr_table.is_some());
        let cdr = match db_cdr {
            Some(mut db) => {
                // The CDR table only: AMI brings the calls.
                db.cel_table = String::new();
                db.once = once;
                Some(ReconcileCdr::Db(Box::new(db)))
            }
            None => args.cdr_csv_path.clone().map(ReconcileCdr::Csv),
        };
        if let (true, Some(cdr)) = (reconciles, cdr) {
            let mut config = crate::pipeline::reconcile::ReconcileConfig::default();
            if let Some(s) = args.reconcile_wait {
                config.wait = Duration::from_secs(s);
            }
            if let Some(s) = args.reconcile_flag_after {
                config.flag_after = Duration::from_secs(s);
            }
            c.reconcile = Some(ReconcileSource { cdr, once, config });
        }
        Ok(c)
    }

    /// Resolves `list-relay`'s flags and environment over the TOML file, over defaults.
    pub fn resolve_list(args: &ListArgs) -> Result<Self, ConfigError> {
        let common = &args.common;
        let file = read_config(common)?;
        let source = if let Some(path) = &common.replay {
            SourceConfig::Replay(path.clone())
        } else {
            let url = pick(&args.dialler_redis_url, &file.dialler_redis_url)
                .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
            let ca_file = args
                .dialler_redis_ca_file
                .clone()
                .or_else(|| file.dialler_redis_ca_file.clone());
            check_redis_url("DIALLER_REDIS_URL", &url, ca_file.as_deref())?;
            let key = pick(&args.dialler_list_key, &file.dialler_list_key)
                .unwrap_or_else(|| DEFAULT_DIALLER_LIST.into());
            let processing = pick(&args.dialler_processing_key, &file.dialler_processing_key)
                .unwrap_or_else(|| format!("{key}:processing"));
            if processing == key {
                return Err(ConfigError(
                    "DIALLER_PROCESSING_KEY must differ from DIALLER_LIST_KEY".into(),
                ));
            }
            SourceConfig::RedisList(RedisListSource {
                url,
                key,
                processing,
                batch: args
                    .dialler_batch
                    .or(file.dialler_batch)
                    .unwrap_or(512)
                    .clamp(1, 10_000),
                ca_file,
            })
        };
        let mut c = Self::resolve_common(common, &file, source)?;
        c.kind = RelayKind::List;
        c.dialler_max_item = args
            .dialler_max_item
            .or(file.dialler_max_item)
            .unwrap_or(call_assembler::DEFAULT_MAX_ITEM)
            .max(64);
        Ok(c)
    }

    /// Resolves `cdr-receiver`'s flags and environment over the TOML file, over defaults.
    pub fn resolve_receiver(args: &ReceiverArgs) -> Result<Self, ConfigError> {
        use crate::receiver::{ReceiverAuth, ReceiverConfig};
        let common = &args.common;
        let file = read_config(common)?;
        let source = if let Some(path) = &common.replay {
            SourceConfig::Replay(path.clone())
        } else {
            let path = pick(&args.cdr_path, &file.cdr_path).unwrap_or_else(|| "/cdr".into());
            if !path.starts_with('/') {
                return Err(ConfigError(format!(
                    "CDR_RECEIVER_PATH {path:?}: must start with /"
                )));
            }
            let auth = match (
                pick(&args.cdr_token, &file.cdr_token),
                pick(&args.cdr_basic_auth, &file.cdr_basic_auth),
            ) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError(
                        "set CDR_RECEIVER_TOKEN or CDR_RECEIVER_BASIC_AUTH, not both".into(),
                    ));
                }
                (Some(t), None) => Some(ReceiverAuth::Bearer(t)),
                (None, Some(b)) if b.contains(':') => Some(ReceiverAuth::Basic(b)),
                (None, Some(_)) => {
                    return Err(ConfigError(
                        "CDR_RECEIVER_BASIC_AUTH: expected user:password".into(),
                    ));
                }
                (None, None) => None,
            };
            let defaults = ReceiverConfig::default();
            SourceConfig::Posts(ReceiverConfig {
                path,
                auth,
                max_body: args
                    .cdr_max_body
                    .or(file.cdr_max_body)
                    .unwrap_or(defaults.max_body)
                    .max(1024),
                body_timeout: args
                    .cdr_body_timeout
                    .or(file.cdr_body_timeout)
                    .map_or(defaults.body_timeout, |s| Duration::from_secs(s.max(1))),
            })
        };
        let mut c = Self::resolve_common(common, &file, source)?;
        c.kind = RelayKind::Receiver;
        if matches!(c.source, SourceConfig::Posts(_)) && c.http.is_none() {
            return Err(ConfigError(
                "cdr-receiver receives on the web server: CDR_RELAY_HTTP cannot be off".into(),
            ));
        }
        Ok(c)
    }

    fn resolve_common(
        args: &CommonArgs,
        file: &FileConfig,
        source: SourceConfig,
    ) -> Result<Self, ConfigError> {
        let webhook_url = pick(&args.webhook_url, &file.webhook_url);
        let sinks: Vec<SinkSpec> = if !args.sinks.is_empty() {
            args.sinks.clone()
        } else if let Some(list) = &file.sinks {
            list.iter()
                .map(|s| s.parse().map_err(ConfigError))
                .collect::<Result<_, _>>()?
        } else {
            let mut v = vec![SinkSpec::Store];
            if webhook_url.is_some() {
                v.push(SinkSpec::Webhook);
            }
            if pick(&args.redis_url, &file.redis_url).is_some() {
                v.push(SinkSpec::Redis);
            }
            if args.http_cdr_urls.is_some() || file.http_cdr_urls.is_some() {
                v.push(SinkSpec::HttpCdr);
            }
            v
        };
        let retry_delay = args
            .webhook_retry_delay
            .or(file.webhook_retry_delay)
            .unwrap_or(30);
        let retry = RetryPolicy {
            base: Duration::from_secs(retry_delay.max(1)),
            max_attempts: args
                .webhook_max_retries
                .or(file.webhook_max_retries)
                .unwrap_or(25),
            ..RetryPolicy::default()
        };
        let webhook = match (&webhook_url, sinks.contains(&SinkSpec::Webhook)) {
            (Some(url), _) => Some(WebhookConfig {
                url: url.clone(),
                authorization: pick(&args.webhook_key, &file.webhook_key),
                secret: pick(&args.webhook_secret, &file.webhook_secret),
                ca_file: args
                    .webhook_ca_file
                    .clone()
                    .or_else(|| file.webhook_ca_file.clone()),
                ..WebhookConfig::default()
            }),
            (None, true) => {
                return Err(ConfigError(
                    "--sink webhook needs a URL: set WEBHOOK_URL (SMDR_WEBHOOK_URL for smdr-relay) or --webhook-url".into(),
                ));
            }
            (None, false) => None,
        };
        if let Some(w) = &webhook {
            cdr_sinks::webhook::WebhookSink::new(w).map_err(|e| ConfigError(e.to_string()))?;
        }
        let redis_url = pick(&args.redis_url, &file.redis_url);
        let redis = match (redis_url, sinks.contains(&SinkSpec::Redis)) {
            (Some(url), _) => {
                let mut r = cdr_sinks::redis_list::RedisListConfig::new(
                    url,
                    pick(&args.redis_list_key, &file.redis_list_key)
                        .unwrap_or_else(|| DEFAULT_REDIS_SINK_LIST.into()),
                );
                if let Some(side) = pick(&args.redis_push, &file.redis_push) {
                    r.side = side.parse().map_err(|_| {
                        ConfigError(format!("REDIS_PUSH {side:?}: expected lpush or rpush"))
                    })?;
                }
                r.ca_file = args
                    .redis_ca_file
                    .clone()
                    .or_else(|| file.redis_ca_file.clone());
                check_redis_url("REDIS_URL", &r.url, r.ca_file.as_deref())?;
                Some(r)
            }
            (None, true) => {
                return Err(ConfigError(
                    "--sink redis needs a server: set REDIS_URL or --redis-url".into(),
                ));
            }
            (None, false) => None,
        };
        let http_cdr_urls: Vec<String> = match (&args.http_cdr_urls, &file.http_cdr_urls) {
            (Some(a), _) => a
                .split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            (None, Some(f)) => f.clone(),
            (None, None) => Vec::new(),
        };
        let http_cdr = match (http_cdr_urls.is_empty(), sinks.contains(&SinkSpec::HttpCdr)) {
            (false, _) => {
                let mut h = cdr_sinks::http_cdr_sink::HttpCdrConfig {
                    urls: http_cdr_urls,
                    authorization: pick(&args.http_cdr_authorization, &file.http_cdr_authorization),
                    ca_file: args
                        .http_cdr_ca_file
                        .clone()
                        .or_else(|| file.http_cdr_ca_file.clone()),
                    // Replaced by the outbox's own session when the relay starts.
                    session: "00000000-0000-4000-8000-000000000000".into(),
                    ..cdr_sinks::http_cdr_sink::HttpCdrConfig::default()
                };
                if let Some(off) = pick(&args.http_cdr_utc_offset, &file.http_cdr_utc_offset) {
                    let parsed: chrono::FixedOffset = off.trim().parse().map_err(|_| {
                        ConfigError(format!(
                            "HTTP_CDR_UTC_OFFSET {off:?}: expected +HH:MM or -HH:MM"
                        ))
                    })?;
                    h.utc_offset_secs = parsed.local_minus_utc();
                }
                cdr_sinks::http_cdr_sink::HttpCdrSink::new(&h)
                    .map_err(|e| ConfigError(format!("HTTP_CDR_URLS: {e}")))?;
                Some(h)
            }
            (true, true) => {
                return Err(ConfigError(
                    "--sink http-cdr needs receivers: set HTTP_CDR_URLS".into(),
                ));
            }
            (true, false) => None,
        };
        let tls = match (
            args.tls_cert.clone().or_else(|| file.tls_cert.clone()),
            args.tls_key.clone().or_else(|| file.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => {
                crate::web::WebTls::from_files(&cert, &key)
                    .map_err(|e| ConfigError(format!("CDR_RELAY_TLS_CERT/KEY: {e}")))?;
                Some((cert, key))
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "HTTPS needs both CDR_RELAY_TLS_CERT and CDR_RELAY_TLS_KEY".into(),
                ));
            }
        };
        let http = pick(&args.http, &file.http).unwrap_or_else(|| DEFAULT_HTTP.into());
        let log_format = pick(&args.log_format, &file.log_format).unwrap_or_else(|| "text".into());
        if !matches!(log_format.as_str(), "text" | "json") {
            return Err(ConfigError(format!(
                "log format {log_format:?}: expected text or json"
            )));
        }
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
            sinks,
            site: pick(&args.site, &file.site).unwrap_or_default(),
            idle_timeout: Duration::from_secs(
                args.idle_timeout.or(file.idle_timeout).unwrap_or(4 * 3600),
            ),
            read_timeout: None,
            webhook,
            retry,
            sentry_dsn: pick(&args.sentry_dsn, &file.sentry_dsn),
            sentry_cron_url: pick(&args.sentry_cron_url, &file.sentry_cron_url),
            sentry_cron_interval: Duration::from_secs(
                args.sentry_cron_interval
                    .or(file.sentry_cron_interval)
                    .unwrap_or(180)
                    .max(1),
            ),
            db: args
                .db
                .clone()
                .or_else(|| file.db.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DB)),
            http: (http != "off").then_some(http),
            json_logs: log_format == "json",
        })
    }

    /// A human-readable summary (for `--check-config`), secrets hidden.
    pub fn describe(&self) -> String {
        let source = match &self.source {
            SourceConfig::Connect(a) => format!("connect to the PBX at {a}"),
            SourceConfig::Listen(a) => format!("listen for the PBX on {a}"),
            SourceConfig::Replay(p) => format!("replay {}", p.display()),
            SourceConfig::CelCsv(c) => format!(
                "{} the CEL file {} and the CDR file {}",
                if c.once { "read" } else { "follow" },
                c.cel.display(),
                c.cdr.display()
            ),
            SourceConfig::CelDb(d) => format!(
                "{} the CEL table {} and {} at {}{}",
                if d.once { "read" } else { "follow" },
                d.cel_table,
                d.cdr_table.as_deref().map_or_else(
                    || "no CDR table".to_owned(),
                    |t| format!("the CDR table {t}")
                ),
                d.describe(),
                match d.start {
                    DbStart::Beginning => String::new(),
                    DbStart::Fresh => " (without a saved watermark: from the current end)".into(),
                    DbStart::From(t) =>
                        format!(" (without a saved watermark: from the rows of {t})"),
                }
            ),
            SourceConfig::Posts(r) => format!(
                "receive CMS CDR posts on {}{}{}",
                self.http.as_deref().unwrap_or("(web server off)"),
                r.path,
                if r.auth.is_some() {
                    " (authentication required)"
                } else {
                    ""
                }
            ),
            SourceConfig::RedisList(r) => format!(
                "drain the Redis list {} at {} through {}, {} items at a time",
                r.key,
                redacted(&r.url),
                r.processing,
                r.batch
            ),
            SourceConfig::Ami(c) => format!(
                "AMI at {}:{} as {} ({}{} login)",
                c.host,
                c.port,
                c.username,
                if c.tls.is_some() { "TLS, " } else { "" },
                if c.auth == ami_proto::client::Auth::Md5 {
                    "MD5"
                } else {
                    "plain"
                },
            ),
        };
        let sinks: Vec<String> = self.sinks.iter().map(SinkSpec::to_string).collect();
        let mut out = format!(
            "source: {source}\nsinks: {}\ndatabase: {}\nweb: {}\nsite: {:?}\nidle timeout: {} s\n",
            sinks.join(", "),
            self.db.display(),
            self.http.as_deref().unwrap_or("off"),
            self.site,
            self.idle_timeout.as_secs(),
        );
        if let Some(w) = &self.webhook {
            out.push_str(&format!(
                "webhook: {} (key {}, signing {}), {} attempts, first retry after {} s\n",
                w.url,
                if w.authorization.is_some() {
                    "set"
                } else {
                    "not set"
                },
                if w.secret.is_some() { "on" } else { "off" },
                self.retry.max_attempts,
                self.retry.base.as_secs(),
            ));
        }
        if let Some(r) = &self.reconcile {
            let cdr = match &r.cdr {
                ReconcileCdr::Csv(path) => format!("the CDR file {}", path.display()),
                ReconcileCdr::Db(db) => format!(
                    "the CDR table {} at {}",
                    db.cdr_table.as_deref().unwrap_or_default(),
                    db.describe()
                ),
            };
            out.push_str(&format!(
                "reconcile: AMI with {cdr} ({}; rebuild after {} s, flag after {} s)\n",
                if r.once {
                    "read to its end"
                } else {
                    "followed"
                },
                r.config.wait.as_secs(),
                r.config.flag_after.as_secs(),
            ));
        }
        if let Some(r) = &self.recordings {
            let dirs: Vec<String> = r.dirs.iter().map(|d| d.display().to_string()).collect();
            out.push_str(&format!(
                "recordings: {} (files up to {} h old)\n",
                dirs.join(", "),
                r.max_age.as_secs() / 3600
            ));
        }
        if let Some(t) = &self.recordings_table {
            out.push_str(&format!("recordings table: {}\n", t.describe()));
        }
        if self.kind == RelayKind::Ami {
            let a = &self.ami;
            out.push_str(&match a.progress_interval {
                None => "mode: complete (one record per call)\n".to_owned(),
                Some(iv) => format!(
                    "mode: progressive (started, updated every {} s, ended)\n",
                    iv.as_secs()
                ),
            });
            out.push_str(&format!(
                "trunks: contexts {:?}, channels {:?}, internal numbers up to {}\n",
                a.trunk_contexts,
                a.trunk_channel_prefixes,
                a.internal_number_max_len
                    .map_or_else(|| "any length".to_owned(), |n| format!("{n} digits")),
            ));
            if !a.tenant_rules.is_empty() {
                out.push_str(&format!("tenant rules: {}\n", a.tenant_rules.len()));
            }
        }
        if let Some(h) = &self.http_cdr {
            out.push_str(&format!("http-cdr sink: {}\n", h.urls.join(", ")));
        }
        if let Some(r) = &self.redis {
            out.push_str(&format!(
                "redis sink: {:?} {} at {}\n",
                r.side,
                r.key,
                redacted(&r.url)
            ));
        }
        if self.sentry_dsn.is_some() {
            out.push_str("sentry: errors reported\n");
        }
        if self.sentry_cron_url.is_some() {
            out.push_str(&format!(
                "sentry cron: every {} s\n",
                self.sentry_cron_interval.as_secs()
            ));
        }
        out
    }
}

/// A URL without its password (`redis://user:***@host`).
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (auth, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = auth.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

fn check_redis_url(name: &str, url: &str, ca_file: Option<&Path>) -> Result<(), ConfigError> {
    cdr_sinks::redis_list::RedisEndpoint::parse(url, ca_file)
        .map(|_| ())
        .map_err(|e| ConfigError(format!("{name}: {e}")))
}

/// `CEL_MODE=db`'s settings.
fn resolve_db(args: &AmiArgs, file: &FileConfig) -> Result<CelDbSource, ConfigError> {
    let kind = match pick(&args.db_type, &file.db_type)
        .map(|t| t.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("postgresql" | "postgres" | "pgsql" | "pg") => DbKind::Postgres,
        Some("mysql" | "mariadb") => DbKind::MySql,
        Some(other) => {
            return Err(ConfigError(format!(
                "DB_TYPE {other:?}: expected postgresql or mysql"
            )));
        }
        None => {
            return Err(ConfigError(
                "CEL_MODE=db needs DB_TYPE (postgresql or mysql)".into(),
            ));
        }
    };
    let tls = match pick(&args.db_tls, &file.db_tls)
        .map(|t| t.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("prefer" | "preferred") => DbTls::Prefer,
        Some("disable" | "disabled" | "off" | "false") => DbTls::Disable,
        Some("require" | "required") => DbTls::Require,
        Some("verify" | "verify-full" | "verify_identity") => DbTls::Verify,
        Some(other) => {
            return Err(ConfigError(format!(
                "DB_TLS {other:?}: expected disable, prefer, require or verify"
            )));
        }
    };
    let fresh = match args.db_fresh_start.as_deref().map(str::trim) {
        Some(v) => parse_bool("DB_FRESH_START", v)?,
        None => file.db_fresh_start.unwrap_or(false),
    };
    let from = match pick(&args.db_backfill_from, &file.db_backfill_from) {
        Some(t) => Some(parse_db_time(&t).ok_or_else(|| {
            ConfigError(format!(
                "DB_BACKFILL_FROM {t:?}: expected YYYY-MM-DD HH:MM:SS (or YYYY-MM-DD)"
            ))
        })?),
        None => None,
    };
    let start = match (fresh, from) {
        (true, Some(_)) => {
            return Err(ConfigError(
                "set DB_FRESH_START or DB_BACKFILL_FROM, not both".into(),
            ));
        }
        (true, None) => DbStart::Fresh,
        (false, Some(t)) => DbStart::From(t),
        (false, None) => DbStart::Beginning,
    };
    // An empty DB_TABLE_CDR means no CDR table; clap drops empty values, so the variable is
    // looked at too.
    let cdr_table = match (&args.db_table_cdr, &file.db_table_cdr) {
        (Some(t), _) => Some(t.clone()),
        (None, _) if std::env::var_os("DB_TABLE_CDR").is_some_and(|v| v.is_empty()) => {
            Some(String::new())
        }
        (None, f) => f.clone(),
    }
    .map_or_else(|| Some("cdr".to_owned()), |t| Some(t.trim().to_owned()))
    .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("none"));
    let cel_table = pick(&args.db_table_cel, &file.db_table_cel)
        .map(|t| t.trim().to_owned())
        .unwrap_or_else(|| "cel".into());
    Ok(CelDbSource {
        kind,
        host: pick(&args.db_host, &file.db_host).unwrap_or_else(|| "127.0.0.1".into()),
        port: args
            .db_port
            .or(file.db_port)
            .unwrap_or_else(|| kind.default_port()),
        database: pick(&args.db_name, &file.db_name).unwrap_or_else(|| "asterisk".into()),
        user: pick(&args.db_user, &file.db_user),
        // An empty DB_PASSWORD (as env files often leave it) is no password: MySQL refuses an
        // empty one sent as a password.
        password: args
            .db_password
            .clone()
            .or_else(|| file.db_password.clone())
            .filter(|p| !p.is_empty()),
        cel_table,
        cdr_table,
        tls,
        ca_file: args.db_ca_file.clone().or_else(|| file.db_ca_file.clone()),
        poll: Duration::from_millis(args.db_poll_ms.or(file.db_poll_ms).unwrap_or(1000).max(10)),
        batch: args
            .db_batch
            .or(file.db_batch)
            .unwrap_or(1000)
            .clamp(1, 100_000),
        start,
        lookback: Duration::from_secs(
            args.db_lookback_secs
                .or(file.db_lookback_secs)
                .unwrap_or(60),
        ),
        once: args.once,
    })
}

/// A time as `DB_BACKFILL_FROM` takes it: `YYYY-MM-DD HH:MM:SS[.ffffff]`, `YYYY-MM-DDTHH:MM:SS`
/// or `YYYY-MM-DD` (midnight).
pub fn parse_db_time(text: &str) -> Option<chrono::NaiveDateTime> {
    let t = text.trim();
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
}

fn pick(a: &Option<String>, f: &Option<String>) -> Option<String> {
    a.clone().or_else(|| f.clone()).filter(|s| !s.is_empty())
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError(format!("{name} {v:?}: expected true or false"))),
    }
}

fn read_config(args: &CommonArgs) -> Result<FileConfig, ConfigError> {
    match &args.config {
        Some(path) => read_file(path),
        None => Ok(FileConfig::default()),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        let mut all = vec!["smdr-relay"];
        all.extend_from_slice(v);
        Args::try_parse_from(all).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_listen_store_and_serve() {
        let c = Config::resolve(&args(&[])).unwrap();
        assert_eq!(c.source, SourceConfig::Listen(DEFAULT_SMDR_LISTEN.into()));
        assert_eq!(c.sinks, vec![SinkSpec::Store]);
        assert_eq!(c.db, PathBuf::from(DEFAULT_DB));
        assert_eq!(c.http.as_deref(), Some(DEFAULT_HTTP));
        assert!(c.webhook.is_none());
        assert_eq!(c.retry.max_attempts, 25);
        assert_eq!(c.retry.base, Duration::from_secs(30));
        assert_eq!(c.sentry_cron_interval, Duration::from_secs(180));
    }

    #[test]
    fn a_webhook_url_adds_the_webhook_sink() {
        let c = Config::resolve(&args(&[
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-key",
            "k",
            "--smdr-addr",
            "pbx.example:5000",
        ]))
        .unwrap();
        assert_eq!(c.sinks, vec![SinkSpec::Store, SinkSpec::Webhook]);
        assert_eq!(c.source, SourceConfig::Connect("pbx.example:5000".into()));
        assert_eq!(c.webhook.unwrap().authorization.as_deref(), Some("k"));
    }

    #[test]
    fn file_settings_are_overridden_by_flags() {
        let dir = std::env::temp_dir().join(format!("cdr-relay-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(
            &path,
            "smdr_listen = \"127.0.0.1:7000\"\nsite = \"hq\"\nsinks = [\"store\", \"jsonl:-\"]\nwebhook_max_retries = 3\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = Config::resolve(&args(&["--config", p, "--site", "branch"])).unwrap();
        assert_eq!(c.source, SourceConfig::Listen("127.0.0.1:7000".into()));
        assert_eq!(c.site, "branch");
        assert_eq!(c.sinks, vec![SinkSpec::Store, SinkSpec::Jsonl(None)]);
        assert_eq!(c.retry.max_attempts, 3);
        std::fs::write(&path, "smdr_lisen = \"typo\"\n").unwrap();
        let e = Config::resolve(&args(&["--config", p])).unwrap_err();
        assert!(e.0.contains("smdr_lisen"), "{e}");
    }

    #[test]
    fn contradictions_are_refused_clearly() {
        let e =
            Config::resolve(&args(&["--smdr-addr", "a:1", "--smdr-listen", "b:2"])).unwrap_err();
        assert!(e.0.contains("not both"), "{e}");
        let e = Config::resolve(&args(&["--sink", "webhook"])).unwrap_err();
        assert!(e.0.contains("SMDR_WEBHOOK_URL"), "{e}");
        let e = Config::resolve(&args(&["--webhook-url", "ftp://x"])).unwrap_err();
        assert!(e.0.contains("http"), "{e}");
    }

    fn ami(v: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["ami-relay"];
        all.extend_from_slice(v);
        Config::resolve_ami(&AmiArgs::try_parse_from(all).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn cel_mode_db_reads_the_db_settings() {
        let c = ami(&[
            "--cel-mode",
            "db",
            "--db-type",
            "mariadb",
            "--db-user",
            "reader",
        ])
        .unwrap();
        let SourceConfig::CelDb(d) = &c.source else {
            panic!("{:?}", c.source);
        };
        assert_eq!(d.kind, DbKind::MySql);
        assert_eq!((d.host.as_str(), d.port), ("127.0.0.1", 3306));
        assert_eq!(d.database, "asterisk");
        assert_eq!(
            (d.cel_table.as_str(), d.cdr_table.as_deref()),
            ("cel", Some("cdr"))
        );
        assert_eq!(d.tls, DbTls::Prefer);
        assert_eq!(d.poll, Duration::from_millis(1000));
        assert_eq!(d.batch, 1000);
        assert_eq!(d.lookback, Duration::from_secs(60));
        assert_eq!(d.start, DbStart::Beginning);
        assert!(
            c.describe()
                .contains("mysql://reader@127.0.0.1:3306/asterisk")
        );
        let c = ami(&[
            "--cel-mode",
            "db",
            "--db-type",
            "postgres",
            "--db-table-cdr",
            "",
            "--db-password",
            "s3cret",
            "--db-tls",
            "verify",
            "--db-backfill-from",
            "2026-11-22 13:54:08",
            "--once",
        ])
        .unwrap();
        let SourceConfig::CelDb(d) = &c.source else {
            panic!("{:?}", c.source);
        };
        assert_eq!(
            (d.kind, d.port, d.tls),
            (DbKind::Postgres, 5432, DbTls::Verify)
        );
        assert_eq!(d.cdr_table, None, "an empty DB_TABLE_CDR: no CDR table");
        assert_eq!(
            d.start,
            DbStart::From(parse_db_time("2026-11-22 13:54:08").unwrap())
        );
        assert!(d.once);
        assert!(!format!("{d:?}").contains("s3cret"));
        assert!(!c.describe().contains("s3cret"));
        let c = ami(&[
            "--cel-mode",
            "db",
            "--db-type",
            "mysql",
            "--db-password",
            "",
        ])
        .unwrap();
        let SourceConfig::CelDb(d) = &c.source else {
            panic!("{:?}", c.source);
        };
        assert_eq!(d.password, None, "an empty DB_PASSWORD is no password");
        for (args, says) in [
            (vec!["--cel-mode", "db"], "needs DB_TYPE"),
            (vec!["--cel-mode", "db", "--db-type", "oracle"], "DB_TYPE"),
            (
                vec![
                    "--cel-mode",
                    "db",
                    "--db-type",
                    "mysql",
                    "--db-tls",
                    "maybe",
                ],
                "DB_TLS",
            ),
            (
                vec![
                    "--cel-mode",
                    "db",
                    "--db-type",
                    "mysql",
                    "--db-backfill-from",
                    "yesterday",
                ],
                "DB_BACKFILL_FROM",
            ),
            (
                vec![
                    "--cel-mode",
                    "db",
                    "--db-type",
                    "mysql",
                    "--db-backfill-from",
                    "2026-01-01",
                    "--db-fresh-start",
                    "true",
                ],
                "not both",
            ),
        ] {
            let e = ami(&args).unwrap_err();
            assert!(e.0.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn a_recordings_table_takes_the_db_settings_in_any_cel_mode() {
        // CEL_MODE=ami (a replay) with an empty DB_TABLE_CDR: no reconciliation, the table read.
        let c = ami(&[
            "--replay",
            "x.raw",
            "--db-type",
            "postgresql",
            "--db-name",
            "pbx",
            "--db-password",
            "s3cret",
            "--db-table-cdr",
            "",
            "--db-table-recordings",
            "public.recs",
            "--recordings-max-age-hours",
            "2",
        ])
        .unwrap();
        assert!(
            c.reconcile.is_none(),
            "an empty DB_TABLE_CDR: no reconciliation"
        );
        assert!(c.recordings.is_none());
        let t = c.recordings_table.as_ref().unwrap();
        assert_eq!(t.table, "public.recs");
        assert_eq!(t.max_age, Duration::from_secs(7200));
        assert_eq!(
            (t.db.kind, t.db.database.as_str()),
            (DbKind::Postgres, "pbx")
        );
        let d = c.describe();
        assert!(
            d.contains(
                "recordings table: the table public.recs at postgresql://127.0.0.1:5432/pbx"
            ),
            "{d}"
        );
        assert!(!d.contains("s3cret"), "{d}");
        // The cdr_csv file still reconciles when the database's CDR table is off.
        let c = ami(&[
            "--replay",
            "x.raw",
            "--db-type",
            "mysql",
            "--db-table-cdr",
            "",
            "--cdr-csv-path",
            "/tmp/Master.csv",
        ])
        .unwrap();
        assert!(matches!(
            c.reconcile.as_ref().map(|r| &r.cdr),
            Some(ReconcileCdr::Csv(_))
        ));
        assert!(c.recordings_table.is_none());
        // With the CDR table (the default), AMI is reconciled with it as before.
        let c = ami(&["--replay", "x.raw", "--db-type", "mysql"]).unwrap();
        assert!(matches!(
            c.reconcile.as_ref().map(|r| &r.cdr),
            Some(ReconcileCdr::Db(_))
        ));
        // CEL_MODE=db and csv read it too.
        for mode in ["db", "csv"] {
            let c = ami(&[
                "--cel-mode",
                mode,
                "--db-type",
                "mariadb",
                "--db-table-recordings",
                "recs",
            ])
            .unwrap();
            assert_eq!(c.recordings_table.unwrap().db.kind, DbKind::MySql, "{mode}");
        }
        let e = ami(&["--replay", "x.raw", "--db-table-recordings", "recs"]).unwrap_err();
        assert!(e.0.contains("DB_TABLE_RECORDINGS needs DB_TYPE"), "{e}");
    }
}
