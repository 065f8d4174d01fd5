//! The database settings of `ami-relay` ([`DbArgs`], the `DB_*` flags): where `CEL_MODE=db`
//! reads, and the database of the cdr table AMI is reconciled with and of the recordings
//! table. They resolve to the CEL/CDR reader's own settings type ([`CelDbSource`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::overlay::text;
use super::values::{ChoiceParser, DbTlsMode, DbType, parse_bool};
use super::{CelDbSource, ConfigError, DbKind, DbStart, DbTls};

/// The `DB_*` settings.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(default)]
pub struct DbArgs {
    /// CEL_MODE=db: `postgresql` (or `postgres`) or `mysql` (or `mariadb`). The DB_*
    /// settings also reach the cdr table AMI is reconciled with (CEL_MODE=ami) and
    /// DB_TABLE_RECORDINGS.
    #[arg(long, env = "DB_TYPE", value_name = "postgresql|mysql", value_parser = ChoiceParser::<DbType>::new())]
    pub db_type: Option<DbType>,

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
    #[arg(
        long,
        env = "DB_TLS",
        value_name = "disable|prefer|require|verify",
        value_parser = ChoiceParser::<DbTlsMode>::new()
    )]
    pub db_tls: Option<DbTlsMode>,

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
    #[arg(long, env = "DB_FRESH_START", value_name = "BOOL", value_parser = parse_bool)]
    pub db_fresh_start: Option<bool>,

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

impl DbArgs {
    /// An empty `DB_TABLE_CDR` variable means no CDR table, but clap drops empty values: the
    /// variable is looked at before the layers are laid (it is above the file).
    pub(super) fn empty_cdr_table_from_env(&mut self) {
        if self.db_table_cdr.is_none()
            && std::env::var_os("DB_TABLE_CDR").is_some_and(|v| v.is_empty())
        {
            self.db_table_cdr = Some(String::new());
        }
    }
}

/// `CEL_MODE=db`'s settings (also the database of the reconciled cdr table and of the
/// recordings table); `once`: read up to the rows there at the start.
pub(super) fn resolve_db(args: &DbArgs, once: bool) -> Result<CelDbSource, ConfigError> {
    let kind = match args.db_type {
        Some(DbType::Postgresql) => DbKind::Postgres,
        Some(DbType::Mysql) => DbKind::MySql,
        None => {
            return Err(ConfigError(
                "CEL_MODE=db needs DB_TYPE (postgresql or mysql)".into(),
            ));
        }
    };
    let tls = match args.db_tls {
        None | Some(DbTlsMode::Prefer) => DbTls::Prefer,
        Some(DbTlsMode::Disable) => DbTls::Disable,
        Some(DbTlsMode::Require) => DbTls::Require,
        Some(DbTlsMode::Verify) => DbTls::Verify,
    };
    let fresh = args.db_fresh_start.unwrap_or(false);
    let from = match text(&args.db_backfill_from) {
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
    // An empty DB_TABLE_CDR means no CDR table (see [`DbArgs::empty_cdr_table_from_env`]).
    let cdr_table = args
        .db_table_cdr
        .clone()
        .map_or_else(|| Some("cdr".to_owned()), |t| Some(t.trim().to_owned()))
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("none"));
    let cel_table = text(&args.db_table_cel)
        .map(|t| t.trim().to_owned())
        .unwrap_or_else(|| "cel".into());
    Ok(CelDbSource {
        kind,
        host: text(&args.db_host).unwrap_or_else(|| "127.0.0.1".into()),
        port: args.db_port.unwrap_or_else(|| kind.default_port()),
        database: text(&args.db_name).unwrap_or_else(|| "asterisk".into()),
        user: text(&args.db_user),
        // An empty DB_PASSWORD (as env files often leave it) is no password: MySQL refuses an
        // empty one sent as a password.
        password: args.db_password.clone().filter(|p| !p.is_empty()),
        cel_table,
        cdr_table,
        tls,
        ca_file: args.db_ca_file.clone(),
        poll: Duration::from_millis(args.db_poll_ms.unwrap_or(1000).max(10)),
        batch: args.db_batch.unwrap_or(1000).clamp(1, 100_000),
        start,
        lookback: Duration::from_secs(args.db_lookback_secs.unwrap_or(60)),
        once,
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
