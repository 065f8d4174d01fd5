//! The SQL table sink: every call as a row of `calls` and its legs as rows of `call_legs`, in
//! the user's PostgreSQL or MySQL/MariaDB, upserted by the call's stable id.
//!
//! **Tables.** The sink creates and migrates its tables itself when it connects: a
//! `schema_migrations` table records the versions applied; every migration may
//! run twice without harm, and two relays starting at once take turns (an advisory lock:
//! `pg_advisory_lock`, MySQL's `GET_LOCK`). A user without the right to create tables gets a
//! [`SinkError::Paused`] saying so (the sink waits for someone to grant it, or to run a relay
//! once with a user that may create them). All three names carry
//! [`SqlConfig::table_prefix`].
//!
//! **One transaction per batch.** A batch of calls is written in one transaction: the calls'
//! upsert (multi-row `INSERT .. ON CONFLICT (id) DO UPDATE` / `ON DUPLICATE KEY UPDATE`), then
//! for each call now at this batch's revision its legs replaced. A retry, a replay or a second
//! relay writing the same call rewrites the same row: never a second one. A progress record
//! (`update.sequence`) updates the row until the final record, and never overwrites a newer one
//! (the `revision` column: the sequence, or 4294967295 for a final record).
//!
//! **Failures.** A database that cannot be reached, is restarting, read-only (a standby,
//! `default_transaction_read_only`, MySQL's `read_only`), out of space or that timed out is
//! [`SinkError::Unreachable`]: the engine keeps the calls in the outbox and tries again with
//! backoff; the connection is opened again. A refusal that needs someone to act (a wrong
//! password, no right to the tables) pauses the sink ([`SinkError::Paused`]). An error no
//! retry fixes (a constraint the user added, a column changed to a type our values do not fit)
//! rolls the batch back; each call is then written in a transaction of its own, so only the
//! calls the database refuses are dead-lettered ([`SinkError::Rejected`] with the database's own
//! message) and the others are delivered.
//!
//! **Times.** `start_local` / `end_local` are the PBX's local times as the call carries them;
//! `start_utc` / `end_utc` are those minus [`SqlConfig::utc_offset`] (a fixed offset, UTC by
//! default) for SMDR and Asterisk calls, and the call's own times for CMS calls, which are UTC
//! already. On MySQL both are `DATETIME`; on PostgreSQL local times are `timestamp` and UTC
//! times `timestamptz`.

pub(crate) mod rows;
pub(crate) mod schema;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use chrono::FixedOffset;
use sqlx::Connection as _;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::SinkError;
use crate::sink::{BatchResult, Drive, Outgoing, Sink};
use rows::{Arg, CallRows, UtcOf};
use schema::Tables;

/// Calls per batch (one transaction).
const BATCH: usize = 1000;
/// Calls per `INSERT` statement (PostgreSQL and MySQL take at most 65535 binds).
const CALLS_PER_STATEMENT: usize = 500;
/// Legs per `INSERT` statement.
const LEGS_PER_STATEMENT: usize = 1000;

/// TLS to a database: the SQL sink's `SQL_TLS`, and `DB_TLS` of the CEL database source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SqlTls {
    /// Never.
    Disable,
    /// When the server offers it.
    #[default]
    Prefer,
    /// Always, without checking the certificate.
    Require,
    /// Always, with the certificate and the host name checked (the Mozilla roots plus
    /// [`SqlConfig::ca_file`]).
    Verify,
}

impl SqlTls {
    /// The PostgreSQL driver's mode for it (`Verify` is `verify-full`).
    pub fn pg(self) -> PgSslMode {
        match self {
            Self::Disable => PgSslMode::Disable,
            Self::Prefer => PgSslMode::Prefer,
            Self::Require => PgSslMode::Require,
            Self::Verify => PgSslMode::VerifyFull,
        }
    }

    /// The MySQL driver's mode for it (`Verify` is `VERIFY_IDENTITY`).
    pub fn mysql(self) -> MySqlSslMode {
        match self {
            Self::Disable => MySqlSslMode::Disabled,
            Self::Prefer => MySqlSslMode::Preferred,
            Self::Require => MySqlSslMode::Required,
            Self::Verify => MySqlSslMode::VerifyIdentity,
        }
    }
}

/// Settings of a [`SqlSink`].
#[derive(Clone, PartialEq, Eq)]
pub struct SqlConfig {
    /// `postgres://user:password@host:5432/db` (also `postgresql://`) or
    /// `mysql://user:password@host:3306/db` (also `mariadb://`).
    pub url: String,
    /// TLS; `None` keeps what the URL says (`sslmode=` / `ssl-mode=`), else `prefer`.
    pub tls: Option<SqlTls>,
    /// Extra trusted root certificates (PEM) for TLS.
    pub ca_file: Option<PathBuf>,
    /// Put before each table name (`cdr_` gives `cdr_calls`): lowercase letters, digits and
    /// `_`, at most 32 characters. Empty by default.
    pub table_prefix: String,
    /// The PBX's offset from UTC, for the UTC columns of SMDR and Asterisk calls (their times
    /// are the PBX's local time). UTC by default.
    pub utc_offset: FixedOffset,
    /// Time allowed to connect, and for one batch's transaction.
    pub timeout: Duration,
}

impl SqlConfig {
    /// Settings for `url`, TLS as the URL says, no prefix, UTC, a 30 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls: None,
            ca_file: None,
            table_prefix: String::new(),
            utc_offset: FixedOffset::east_opt(0).unwrap_or_else(utc_fallback),
            timeout: Duration::from_secs(30),
        }
    }
}

fn utc_fallback() -> FixedOffset {
    // east_opt(0) is always Some; this is never reached.
    FixedOffset::west_opt(0).unwrap_or_else(utc_fallback)
}

impl std::fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlConfig")
            .field("url", &crate::redact::redact_url(&self.url))
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("table_prefix", &self.table_prefix)
            .field("utc_offset", &self.utc_offset)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Which SQL the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
}

impl Dialect {
    /// `name` quoted as an identifier.
    pub(crate) fn quote(self, name: &str) -> String {
        match self {
            Self::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
            Self::MySql => format!("`{}`", name.replace('`', "``")),
        }
    }
}

enum Options {
    Pg(Box<PgConnectOptions>),
    My(Box<MySqlConnectOptions>),
}

enum Conn {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

/// Writes calls to `calls` and `call_legs` in a PostgreSQL or MySQL/MariaDB database. Share it
/// behind an `Arc`: batches go out one at a time over its single connection.
pub struct SqlSink {
    options: Options,
    dialect: Dialect,
    tables: Tables,
    utc: UtcOf,
    timeout: Duration,
    /// The URL without its password, for messages.
    shown: String,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl std::fmt::Debug for SqlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSink")
            .field("database", &self.shown)
            .field("dialect", &self.dialect)
            .field("prefix", &self.tables.prefix)
            .finish_non_exhaustive()
    }
}

impl SqlSink {
    /// A sink for `config`: checks the URL, the prefix and the CA file now; connects (and
    /// creates or migrates the tables) on the first batch.
    pub fn new(config: &SqlConfig) -> Result<Self, SinkError> {
        let shown = crate::redact::redact_url(&config.url);
        let bad = |why: String| SinkError::Config(format!("SQL URL {shown}: {why}"));
        let scheme = config
            .url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .ok_or_else(|| bad("expected postgres://.. or mysql://..".into()))?;
        let prefix = &config.table_prefix;
        if prefix.len() > 32
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(SinkError::Config(format!(
                "SQL table prefix {prefix:?}: lowercase letters, digits and _ only, at most 32"
            )));
        }
        if let Some(ca) = &config.ca_file {
            if !ca.is_file() {
                return Err(SinkError::Config(format!(
                    "SQL CA file {}: not a readable file",
                    ca.display()
                )));
            }
        }
        let (options, dialect) = match scheme.as_str() {
            "postgres" | "postgresql" => {
                let mut o = PgConnectOptions::from_str(&config.url)
                    .map_err(|e| bad(e.to_string()))?
                    .application_name("cdr-relay");
                if let Some(tls) = config.tls {
                    o = o.ssl_mode(tls.pg());
                }
                if let Some(ca) = &config.ca_file {
                    o = o.ssl_root_cert(ca);
                }
                (Options::Pg(Box::new(o)), Dialect::Postgres)
            }
            "mysql" | "mariadb" => {
                let url = format!(
                    "mysql{}",
                    config.url.get(scheme.len()..).unwrap_or_default()
                );
                let mut o = MySqlConnectOptions::from_str(&url)
                    .map_err(|e| bad(e.to_string()))?
                    .timezone(Some("+00:00".to_owned()));
                if let Some(tls) = config.tls {
                    o = o.ssl_mode(tls.mysql());
                }
                if let Some(ca) = &config.ca_file {
                    o = o.ssl_ca(ca);
                }
                (Options::My(Box::new(o)), Dialect::MySql)
            }
            other => {
                return Err(bad(format!(
                    "scheme {other:?}: expected postgres://.. or mysql://.."
                )));
            }
        };
        Ok(Self {
            options,
            dialect,
            tables: Tables::new(prefix),
            utc: UtcOf {
                offset: config.utc_offset,
            },
            timeout: config.timeout,
            shown,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// Which SQL the server speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The name of the calls table (with its prefix).
    pub fn calls_table(&self) -> &str {
        &self.tables.calls
    }

    /// The name of the legs table (with its prefix).
    pub fn legs_table(&self) -> &str {
        &self.tables.legs
    }

    /// Connects and creates or migrates the tables, if not connected yet: what the first batch
    /// does. For a start-up check.
    pub async fn connect(&self) -> Result<(), SinkError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(self.open().await?);
        }
        Ok(())
    }

    async fn open(&self) -> Result<Conn, SinkError> {
        let shown = &self.shown;
        let open = async {
            let mut conn = match &self.options {
                Options::Pg(o) => Conn::Pg(sqlx::PgConnection::connect_with(o).await?),
                Options::My(o) => Conn::My(sqlx::MySqlConnection::connect_with(o).await?),
            };
            let r = self.migrate(&mut conn).await;
            Ok::<_, sqlx::Error>(r.map(|()| conn))
        };
        match tokio::time::timeout(self.timeout, open).await {
            Err(_) => Err(SinkError::Unreachable(format!(
                "{shown}: not connected within {:?}",
                self.timeout
            ))),
            Ok(Err(e)) => Err(context(shown, classify(&e).into_error(&e))),
            Ok(Ok(r)) => r,
        }
    }

    /// Brings the tables to [`schema::LATEST`].
    async fn migrate(&self, conn: &mut Conn) -> Result<(), SinkError> {
        let shown = &self.shown;
        let d = self.dialect;
        let t = &self.tables;
        let m = d.quote(&t.migrations);
        let version_sql = match d {
            Dialect::Postgres => {
                format!("SELECT CAST(COALESCE(MAX(version), 0) AS bigint) FROM {m}")
            }
            Dialect::MySql => format!("SELECT CAST(COALESCE(MAX(version), 0) AS SIGNED) FROM {m}"),
        };
        // Most starts: the tables are there; nothing to create (and no CREATE right needed).
        let present = format!(
            "SELECT (SELECT COUNT(*) FROM {} WHERE 1 = 0) + (SELECT COUNT(*) FROM {} WHERE 1 = 0)",
            d.quote(&t.calls),
            d.quote(&t.legs)
        );
        let tables_there = conn.execute(&present, &[]).await.is_ok();
        if let Ok(v) = conn.scalar(&version_sql).await {
            if v >= schema::LATEST && tables_there {
                return Ok(());
            }
        }
        let fail = |what: &str, e: sqlx::Error| -> SinkError {
            let class = classify(&e);
            if class == Class::Denied {
                return SinkError::Paused {
                    reason: format!(
                        "{shown}: the SQL user may not create the sink's tables ({what}): {}; \
                         grant it CREATE on the database (PostgreSQL: on its schema), or run a \
                         relay once with a user that may create them",
                        db_message(&e)
                    ),
                    retry_after: None,
                };
            }
            context(shown, class.into_error(&e))
        };
        let lock_name = format!("cdr-relay:{}", t.migrations);
        let (lock, unlock) = match d {
            Dialect::Postgres => (
                format!("SELECT pg_advisory_lock(hashtext('{lock_name}'))"),
                format!("SELECT pg_advisory_unlock(hashtext('{lock_name}'))"),
            ),
            Dialect::MySql => (
                format!("SELECT GET_LOCK('{lock_name}', 60)"),
                format!("SELECT RELEASE_LOCK('{lock_name}')"),
            ),
        };
        conn.execute(&lock, &[])
            .await
            .map_err(|e| fail("lock", e))?;
        let result = async {
            conn.execute(&schema::migrations_table(d, t), &[])
                .await
                .map_err(|e| fail(&format!("CREATE TABLE {}", t.migrations), e))?;
            let mut version = conn
                .scalar(&version_sql)
                .await
                .map_err(|e| fail("reading the schema version", e))?;
            if !tables_there {
                // Dropped after they were made: every migration again (each may run twice).
                version = 0;
            }
            while version < schema::LATEST {
                let next = version + 1;
                let Some((what, statements)) = schema::migration(d, t, next) else {
                    break;
                };
                for s in &statements {
                    conn.execute(s, &[])
                        .await
                        .map_err(|e| fail(&format!("migration {next}, {what}"), e))?;
                }
                let now = match d {
                    Dialect::Postgres => "now()",
                    Dialect::MySql => "UTC_TIMESTAMP(6)",
                };
                let record = match d {
                    Dialect::Postgres => format!(
                        "INSERT INTO {m} (version, applied_at, description) \
                         VALUES ({next}, {now}, '{what}') ON CONFLICT (version) DO NOTHING"
                    ),
                    Dialect::MySql => format!(
                        "INSERT IGNORE INTO {m} (version, applied_at, description) \
                         VALUES ({next}, {now}, '{what}')"
                    ),
                };
                conn.execute(&record, &[])
                    .await
                    .map_err(|e| fail(&format!("recording migration {next}"), e))?;
                tracing::info!(database = %shown, version = next, %what, "SQL sink: tables migrated");
                version = next;
            }
            Ok(())
        }
        .await;
        let _ = conn.execute(&unlock, &[]).await;
        result
    }

    /// Writes `calls` in one transaction.
    async fn write(&self, conn: &mut Conn, calls: &[&CallRows]) -> Result<(), sqlx::Error> {
        let d = self.dialect;
        let t = &self.tables;
        conn.execute("BEGIN", &[]).await?;
        let r = async {
            for chunk in calls.chunks(CALLS_PER_STATEMENT) {
                let args: Vec<&Arg> = chunk.iter().flat_map(|c| c.call.iter()).collect();
                conn.execute(&schema::upsert_calls(d, t, chunk.len()), &args)
                    .await?;
                // The calls whose row is now at this revision get their legs (re)written; a
                // row at a newer revision keeps its own.
                let ids = Arg::List(chunk.iter().map(|c| c.id.clone()).collect());
                let now = conn
                    .revisions(&schema::select_revisions(d, t, chunk.len()), &ids)
                    .await?;
                let ours: Vec<&&CallRows> = chunk
                    .iter()
                    .filter(|c| now.get(&c.id) == Some(&c.revision))
                    .collect();
                if ours.is_empty() {
                    continue;
                }
                let ids = Arg::List(ours.iter().map(|c| c.id.clone()).collect());
                conn.execute(&schema::delete_legs(d, t, ours.len()), &[&ids])
                    .await?;
                let legs: Vec<&Vec<Arg>> = ours.iter().flat_map(|c| c.legs.iter()).collect();
                for lc in legs.chunks(LEGS_PER_STATEMENT) {
                    let args: Vec<&Arg> = lc.iter().flat_map(|l| l.iter()).collect();
                    conn.execute(&schema::insert_legs(d, t, lc.len()), &args)
                        .await?;
                }
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => conn.execute("COMMIT", &[]).await.map(|_| ()),
            Err(e) => {
                let _ = conn.execute("ROLLBACK", &[]).await;
                Err(e)
            }
        }
    }

    /// [`SqlSink::write`] within the timeout; the error as the engine wants it, and whether the
    /// connection may be kept.
    async fn write_timed(
        &self,
        conn: &mut Conn,
        calls: &[&CallRows],
    ) -> Result<(), (Class, SinkError)> {
        match tokio::time::timeout(self.timeout, self.write(conn, calls)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let class = classify(&e);
                Err((class, context(&self.shown, class.into_error(&e))))
            }
            Err(_) => Err((
                Class::Transient,
                SinkError::Unreachable(format!(
                    "{}: no answer within {:?}",
                    self.shown, self.timeout
                )),
            )),
        }
    }

    /// Writes a batch: one transaction; when the database refuses it for good, each call on its
    /// own, so that only the calls it refuses are dead-lettered.
    pub async fn write_batch(&self, batch: &[Outgoing]) -> BatchResult<SinkError> {
        let mut results: Vec<Result<(), SinkError>> = Vec::with_capacity(batch.len());
        let mut rows: Vec<Option<CallRows>> = Vec::with_capacity(batch.len());
        for item in batch {
            let prepared = item
                .call()
                .map_err(|e| SinkError::Rejected(format!("not a call: {e}")))
                .and_then(|c| {
                    rows::call_rows(c, item.body(), self.utc).map_err(SinkError::Rejected)
                });
            match prepared {
                Ok(r) => {
                    rows.push(Some(r));
                    results.push(Ok(()));
                }
                Err(e) => {
                    rows.push(None);
                    results.push(Err(e));
                }
            }
        }
        // One row per id in a statement: the newest revision (the later of equals) stands for
        // the others, which it supersedes.
        let mut best: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            if let Some(r) = r {
                let keep = best
                    .get(r.id.as_str())
                    .and_then(|&j| rows.get(j))
                    .and_then(Option::as_ref)
                    .is_none_or(|b| b.revision <= r.revision);
                if keep {
                    best.insert(&r.id, i);
                }
            }
        }
        let mut order: Vec<usize> = best.values().copied().collect();
        order.sort_unstable();
        let chosen: Vec<&CallRows> = order
            .iter()
            .filter_map(|&i| rows.get(i).and_then(Option::as_ref))
            .collect();
        if chosen.is_empty() {
            return Ok(results);
        }
        let mut guard = self.conn.lock().await;
        let conn = match guard.as_mut() {
            Some(c) => c,
            None => guard.insert(self.open().await?),
        };
        match self.write_timed(conn, &chosen).await {
            Ok(()) => return Ok(results),
            Err((Class::Permanent, e)) if chosen.len() == 1 && rows.len() == 1 => {
                return Ok(vec![Err(e)]);
            }
            Err((Class::Permanent, e)) => {
                tracing::warn!(database = %self.shown, error = %e, calls = chosen.len(), "SQL sink: the batch was refused; writing its calls one by one");
            }
            Err((_, e)) => {
                *guard = None;
                return Err(e);
            }
        }
        // One call per transaction, in order.
        for (i, r) in rows.iter().enumerate() {
            let Some(r) = r else { continue };
            match self.write_timed(conn, &[r]).await {
                Ok(()) => {}
                Err((Class::Permanent, e)) => {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Err(e);
                    }
                }
                Err((_, e)) => {
                    *guard = None;
                    return Err(e);
                }
            }
        }
        Ok(results)
    }
}

impl SqlSink {
    /// The baseline of the benchmark: the same rows as [`SqlSink::write_batch`] would write,
    /// with plain multi-row `INSERT`s (no upsert, no revision read, no legs replaced) into
    /// `calls_table` and `legs_table` (same columns as `calls` and `call_legs`), in one
    /// transaction. Not for delivery: a retry would write the calls twice.
    pub async fn write_plain(
        &self,
        batch: &[Outgoing],
        calls_table: &str,
        legs_table: &str,
    ) -> Result<(), SinkError> {
        let d = self.dialect;
        let rows: Vec<CallRows> = batch
            .iter()
            .map(|item| {
                let call = item
                    .call()
                    .map_err(|e| SinkError::Rejected(format!("not a call: {e}")))?;
                rows::call_rows(call, item.body(), self.utc).map_err(SinkError::Rejected)
            })
            .collect::<Result<_, _>>()?;
        let mut guard = self.conn.lock().await;
        let conn = match guard.as_mut() {
            Some(c) => c,
            None => guard.insert(self.open().await?),
        };
        let fail = |e: sqlx::Error| context(&self.shown, classify(&e).into_error(&e));
        conn.execute("BEGIN", &[]).await.map_err(fail)?;
        for chunk in rows.chunks(CALLS_PER_STATEMENT) {
            let args: Vec<&Arg> = chunk.iter().flat_map(|c| c.call.iter()).collect();
            let sql = schema::insert_plain(d, calls_table, schema::CALL_COLUMNS, chunk.len(), true);
            conn.execute(&sql, &args).await.map_err(fail)?;
            let legs: Vec<&Vec<Arg>> = chunk.iter().flat_map(|c| c.legs.iter()).collect();
            for lc in legs.chunks(LEGS_PER_STATEMENT) {
                let args: Vec<&Arg> = lc.iter().flat_map(|l| l.iter()).collect();
                let sql = schema::insert_plain(d, legs_table, schema::LEG_COLUMNS, lc.len(), false);
                conn.execute(&sql, &args).await.map_err(fail)?;
            }
        }
        conn.execute("COMMIT", &[]).await.map_err(fail)?;
        Ok(())
    }
}

/// Writes each batch in one transaction ([`SqlSink::write_batch`]).
impl Sink for SqlSink {
    type Error = SinkError;

    fn drive(&self) -> Drive {
        Drive::Batch { max: BATCH }
    }

    async fn deliver(&self, batch: &[Outgoing]) -> BatchResult<SinkError> {
        self.write_batch(batch).await
    }
}

/// A boxed `Send` future: the connection's calls are boxed where their types are concrete, so
/// the sink's future is `Send` for the engine without a higher-ranked proof through sqlx.
type ConnFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'a>>;

impl Conn {
    /// Runs `sql` with `args` bound in order (a statement without arguments goes as plain
    /// text: transaction control and DDL, which MySQL will not always prepare).
    fn execute<'a>(&'a mut self, sql: &'a str, args: &[&Arg]) -> ConnFuture<'a, u64> {
        let args: Vec<Arg> = args.iter().map(|a| (*a).clone()).collect();
        Box::pin(async move {
            if args.is_empty() {
                return match self {
                    Self::Pg(c) => Ok(sqlx::Executor::execute(&mut *c, sqlx::raw_sql(sql))
                        .await?
                        .rows_affected()),
                    Self::My(c) => Ok(sqlx::Executor::execute(&mut *c, sqlx::raw_sql(sql))
                        .await?
                        .rows_affected()),
                };
            }
            macro_rules! run {
                ($c:expr, $list:ident) => {{
                    let mut q = sqlx::query(sql);
                    for a in args {
                        q = match a {
                            Arg::Int(v) => q.bind(v),
                            Arg::Text(v) => q.bind(v),
                            Arg::Bool(v) => q.bind(v),
                            Arg::List(v) => $list!(q, v),
                        };
                    }
                    Ok(q.execute(&mut *$c).await?.rows_affected())
                }};
            }
            match self {
                Self::Pg(c) => run!(c, array),
                Self::My(c) => run!(c, each),
            }
        })
    }

    /// The first column of the first row of `sql`, a `bigint`.
    fn scalar<'a>(&'a mut self, sql: &'a str) -> ConnFuture<'a, i64> {
        use sqlx::Row as _;
        Box::pin(async move {
            match self {
                Self::Pg(c) => sqlx::query(sql)
                    .fetch_one(&mut *c)
                    .await?
                    .try_get::<i64, _>(0),
                Self::My(c) => sqlx::query(sql)
                    .fetch_one(&mut *c)
                    .await?
                    .try_get::<i64, _>(0),
            }
        })
    }

    /// `(id, revision)` rows of `sql` with `ids` (an [`Arg::List`]) bound.
    fn revisions<'a>(
        &'a mut self,
        sql: &'a str,
        ids: &Arg,
    ) -> ConnFuture<'a, BTreeMap<String, i64>> {
        use sqlx::Row as _;
        let ids: Vec<String> = match ids {
            Arg::List(v) => v.clone(),
            _ => Vec::new(),
        };
        Box::pin(async move {
            macro_rules! run {
                ($c:expr, $list:ident) => {{
                    let q = sqlx::query(sql);
                    let q = $list!(q, ids);
                    q.fetch_all(&mut *$c)
                        .await?
                        .iter()
                        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
                        .collect()
                }};
            }
            match self {
                Self::Pg(c) => run!(c, array),
                Self::My(c) => run!(c, each),
            }
        })
    }
}

/// Binds a list as one PostgreSQL array.
macro_rules! array {
    ($q:expr, $v:expr) => {
        $q.bind($v)
    };
}

/// Binds a list as one MySQL placeholder per element.
macro_rules! each {
    ($q:expr, $v:expr) => {{
        let mut q = $q;
        for s in $v {
            q = q.bind(s);
        }
        q
    }};
}

use {array, each};

/// What an error means for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Down, restarting, read-only, full, busy, timed out: try again later, as a whole.
    Transient,
    /// No right to do it (or a wrong password): someone has to act.
    Denied,
    /// This data is refused (a constraint, a type, a value out of range): dead-letter it.
    Permanent,
    /// Our tables changed under us (dropped, a column gone): reconnect, which migrates again.
    Schema,
    /// Anything else: retry, counting an attempt.
    Other,
}

impl Class {
    fn into_error(self, e: &sqlx::Error) -> SinkError {
        let msg = db_message(e);
        match self {
            Self::Transient | Self::Schema => SinkError::Unreachable(msg),
            Self::Denied => SinkError::Paused {
                reason: msg,
                retry_after: None,
            },
            Self::Permanent => SinkError::Rejected(msg),
            Self::Other => SinkError::Retryable {
                reason: msg,
                retry_after: None,
            },
        }
    }
}

/// The database's own message, with its code.
fn db_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => format!("{} (SQLSTATE {code})", d.message()),
            None => d.message().to_owned(),
        },
        other => other.to_string(),
    }
}

fn context(shown: &str, e: SinkError) -> SinkError {
    match e {
        SinkError::Unreachable(m) => SinkError::Unreachable(format!("{shown}: {m}")),
        SinkError::Paused {
            reason,
            retry_after,
        } => SinkError::Paused {
            reason: format!("{shown}: {reason}"),
            retry_after,
        },
        other => other,
    }
}

/// Classifies an error by MySQL's error number when there is one, else by SQLSTATE.
fn classify(e: &sqlx::Error) -> Class {
    match e {
        sqlx::Error::Database(d) => {
            if let Some(my) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                if let Some(c) = classify_mysql(my.number()) {
                    return c;
                }
            }
            classify_sqlstate(d.code().as_deref().unwrap_or_default())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Class::Transient,
        sqlx::Error::Configuration(_) => Class::Denied,
        _ => Class::Other,
    }
}

/// MySQL/MariaDB error numbers whose SQLSTATE says too little.
fn classify_mysql(number: u16) -> Option<Class> {
    Some(match number {
        // Read-only server or transaction, lock wait, deadlock, too many connections, shutting
        // down, connection killed, disk full, out of memory, server gone.
        1290 | 1836 | 1792 | 1205 | 1213 | 1040 | 1053 | 1927 | 1021 | 1037 | 1041 | 2002
        | 2003 | 2006 | 2013 | 1152 | 1159 | 1161 => Class::Transient,
        // Access denied: database, user, table, column, command.
        1044 | 1045 | 1142 | 1143 | 1227 | 1370 | 1698 => Class::Denied,
        // No such table or column.
        1146 | 1054 => Class::Schema,
        // Duplicate, NULL, too long, out of range, wrong value, CHECK (MySQL 3819, MariaDB
        // 4025), foreign keys, invalid JSON, truncated.
        1062 | 1048 | 1406 | 1264 | 1366 | 1292 | 3819 | 4025 | 1451 | 1452 | 3140 | 1265
        | 1367 | 1416 | 4038 => Class::Permanent,
        _ => return None,
    })
}

/// By SQLSTATE class (PostgreSQL's codes; MySQL's where they are the standard's).
fn classify_sqlstate(code: &str) -> Class {
    match code {
        // Insufficient privilege; invalid authorization; no such database.
        "42501" | "28000" | "28P01" | "3D000" => return Class::Denied,
        // Undefined table, column.
        "42P01" | "42703" | "42S02" | "42S22" => return Class::Schema,
        // Read-only transaction (a standby, default_transaction_read_only).
        "25006" => return Class::Transient,
        _ => {}
    }
    match code.get(..2).unwrap_or_default() {
        // Integrity constraints, data exceptions, cardinality, syntax or types.
        "23" | "22" | "21" | "42" => Class::Permanent,
        // Connection, transaction rollback (serialization, deadlock), resources (disk full),
        // operator intervention (shutdown), object in use (locks), system, internal.
        "08" | "40" | "53" | "57" | "55" | "58" | "XX" | "HY" => Class::Transient,
        _ => Class::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_and_numbers_classify() {
        assert_eq!(classify_sqlstate("23514"), Class::Permanent);
        assert_eq!(classify_sqlstate("22001"), Class::Permanent);
        assert_eq!(classify_sqlstate("42804"), Class::Permanent);
        assert_eq!(classify_sqlstate("42501"), Class::Denied);
        assert_eq!(classify_sqlstate("25006"), Class::Transient);
        assert_eq!(classify_sqlstate("57P01"), Class::Transient);
        assert_eq!(classify_sqlstate("40P01"), Class::Transient);
        assert_eq!(classify_sqlstate("53100"), Class::Transient);
        assert_eq!(classify_sqlstate("42P01"), Class::Schema);
        assert_eq!(classify_mysql(4025), Some(Class::Permanent));
        assert_eq!(classify_mysql(1290), Some(Class::Transient));
        assert_eq!(classify_mysql(1142), Some(Class::Denied));
        assert_eq!(classify_mysql(9999), None);
    }

    #[test]
    fn urls_and_prefixes_are_checked_before_connecting() {
        let pg = SqlSink::new(&SqlConfig::new("postgres://u:hunter2@127.0.0.1/db")).unwrap();
        assert_eq!(pg.dialect(), Dialect::Postgres);
        assert!(!format!("{pg:?}").contains("hunter2"));
        let my = SqlSink::new(&SqlConfig::new("mariadb://root@127.0.0.1:3307/db")).unwrap();
        assert_eq!(my.dialect(), Dialect::MySql);
        let e = SqlSink::new(&SqlConfig::new("oracle://u:hunter2@h/db")).unwrap_err();
        assert!(e.to_string().contains("scheme"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let mut c = SqlConfig::new("postgres://h/db");
        c.table_prefix = "Bad-Prefix".into();
        assert!(matches!(SqlSink::new(&c), Err(SinkError::Config(_))));
        c.table_prefix = "cdr_".into();
        assert_eq!(SqlSink::new(&c).unwrap().calls_table(), "cdr_calls");
        c.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(SqlSink::new(&c), Err(SinkError::Config(_))));
    }
}
