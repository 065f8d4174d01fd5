//! The SQL connection the database sources share (`CEL_MODE=db`'s CEL/CDR reader,
//! [`super::cel_db`], the cdr table AMI is reconciled with, and the recordings table,
//! [`super::recordings_db`]): which server (PostgreSQL or MySQL/MariaDB) and how to reach it
//! (TLS, CA file), one connection to it (`Conn`) with its timeouts, every column read as
//! text, and the SQL spelling each server wants (quoting, placeholders, time formats).
//!
//! It knows nothing of Asterisk's tables: the readers build their queries from the columns
//! `Conn::columns` finds.

use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::Connection as _;

/// Which database server holds Asterisk's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// PostgreSQL (`DB_TYPE=postgresql` or `postgres`; Asterisk's cel_pgsql, cdr_pgsql, or the
    /// ODBC backends over PostgreSQL).
    Postgres,
    /// MySQL or MariaDB (`DB_TYPE=mysql` or `mariadb`; cdr_mysql, or ODBC over MySQL).
    MySql,
}

impl DbKind {
    /// The server's usual port.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Postgres => 5432,
            Self::MySql => 3306,
        }
    }

    /// The URL scheme naming it in logs (`postgresql`, `mysql`).
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::MySql => "mysql",
        }
    }
}

/// TLS to the database (`DB_TLS`): the SQL sink's modes, with their driver settings.
pub use cdr_sinks::sql::SqlTls as DbTls;

/// How to reach one database: the `DB_*` connection settings.
#[derive(Clone, PartialEq, Eq)]
pub struct SqlServer {
    /// PostgreSQL or MySQL.
    pub kind: DbKind,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// User (the client library's own default, from the environment, when `None`).
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// TLS mode.
    pub tls: DbTls,
    /// Extra trusted CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for SqlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlServer")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl SqlServer {
    /// Where it is, for logs: `postgresql://user@host:port/database` (no password).
    pub fn describe(&self) -> String {
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        format!(
            "{}://{user}{}:{}/{}",
            self.kind.scheme(),
            self.host,
            self.port,
            self.database
        )
    }
}

/// Time allowed to connect.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for one query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// How a field's column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// As text.
    Text,
    /// A time to the microsecond.
    Micros,
    /// A time to the second.
    Seconds,
}

/// A column as `information_schema` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name as the table spells it.
    pub name: String,
    /// Its type (`information_schema.columns.data_type`, lowercase).
    pub data_type: String,
}

impl Column {
    pub(crate) fn is_time(&self) -> bool {
        let t = self.data_type.as_str();
        t.starts_with("timestamp") || t == "datetime" || t == "date"
    }

    pub(crate) fn is_integer(&self) -> bool {
        matches!(
            self.data_type.as_str(),
            "smallint" | "integer" | "bigint" | "int" | "tinyint" | "mediumint"
        ) || self.data_type.contains("serial")
    }
}

/// Quotes an identifier for `kind` (`"end"` on PostgreSQL, `` `end` `` on MySQL).
pub fn quote_ident(kind: DbKind, name: &str) -> String {
    match kind {
        DbKind::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
        DbKind::MySql => format!("`{}`", name.replace('`', "``")),
    }
}

/// Quotes a table name that may be `schema.table`.
pub(crate) fn quote_table(kind: DbKind, name: &str) -> String {
    match name.split_once('.') {
        Some((schema, table)) => {
            format!("{}.{}", quote_ident(kind, schema), quote_ident(kind, table))
        }
        None => quote_ident(kind, name),
    }
}

/// The select expression reading `col` as text in `format`.
pub(crate) fn select_expr(kind: DbKind, col: &Column, format: Format) -> String {
    let q = quote_ident(kind, &col.name);
    match (kind, format, col.is_time()) {
        (DbKind::Postgres, Format::Micros, true) => {
            format!("to_char({q}, 'YYYY-MM-DD HH24:MI:SS.US')")
        }
        (DbKind::Postgres, Format::Seconds, true) => {
            format!("to_char({q}, 'YYYY-MM-DD HH24:MI:SS')")
        }
        (DbKind::Postgres, _, _) => format!("CAST({q} AS text)"),
        (DbKind::MySql, Format::Micros, true) => {
            format!("DATE_FORMAT({q}, '%Y-%m-%d %H:%i:%s.%f')")
        }
        (DbKind::MySql, Format::Seconds, true) => {
            format!("DATE_FORMAT({q}, '%Y-%m-%d %H:%i:%s')")
        }
        (DbKind::MySql, _, _) => format!("CAST({q} AS CHAR)"),
    }
}

/// A query's placeholder `n` (1-based): `$n` on PostgreSQL, `?` on MySQL.
pub(crate) fn ph(kind: DbKind, n: usize) -> String {
    match kind {
        DbKind::Postgres => format!("${n}"),
        DbKind::MySql => "?".into(),
    }
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
}

/// Parses a watermark time.
fn parse_time(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()
}

pub(crate) fn format_time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// Where a read of a time-ordered table begins: `lookback` before `max`, not before `floor`.
pub(crate) fn read_from(
    max: Option<&str>,
    floor: Option<&str>,
    lookback: Duration,
) -> Option<String> {
    let from = max.map(
        |m| match (parse_time(m), chrono::TimeDelta::from_std(lookback)) {
            (Some(t), Ok(d)) => t
                .checked_sub_signed(d)
                .map_or_else(|| m.to_owned(), format_time),
            _ => m.to_owned(),
        },
    );
    match (from, floor) {
        (Some(f), Some(fl)) => Some(if compare_times(&f, fl).is_lt() {
            fl.to_owned()
        } else {
            f
        }),
        (f, fl) => f.or_else(|| fl.map(str::to_owned)),
    }
}

/// Orders two watermark times (as times when both parse, else as text).
pub(crate) fn compare_times(a: &str, b: &str) -> std::cmp::Ordering {
    match (parse_time(a), parse_time(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// A connection to one of the two kinds of server.
pub(crate) enum Conn {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

impl Conn {
    /// Connects to `c`. Under `DB_TLS=prefer` a connection the server took without TLS is
    /// logged as a warning (the driver falls back to plain text silently).
    pub(crate) async fn connect(c: &SqlServer) -> Result<Self, sqlx::Error> {
        let mut conn = Self::open(c).await?;
        if c.tls == DbTls::Prefer {
            match conn.uses_tls().await {
                Some(false) => tracing::warn!(
                    database = %c.describe(),
                    "DB_TLS=prefer: the server offers no TLS, so this connection is in plain text \
                     (the password and the rows readable on the network); set DB_TLS=require or \
                     verify to refuse that, or DB_TLS=disable to say plain text is meant"
                ),
                Some(true) => tracing::debug!(database = %c.describe(), "connected with TLS"),
                None => tracing::debug!(
                    database = %c.describe(),
                    "DB_TLS=prefer: could not tell whether the connection uses TLS"
                ),
            }
        }
        Ok(conn)
    }

    /// Whether the connection is encrypted, as the server sees it (`None` when it cannot be
    /// asked).
    async fn uses_tls(&mut self) -> Option<bool> {
        let (sql, mysql) = match self {
            Self::Pg(_) => (
                "SELECT CASE WHEN ssl THEN 'on' ELSE 'off' END FROM pg_stat_ssl \
                 WHERE pid = pg_backend_pid()",
                false,
            ),
            Self::My(_) => ("SHOW SESSION STATUS LIKE 'Ssl_cipher'", true),
        };
        let rows = self.rows(sql, &[]).await.ok()?;
        let row = rows.first()?;
        let value = if mysql { row.get(1) } else { row.first() };
        let value = value?.as_deref().unwrap_or_default();
        Some(if mysql {
            !value.is_empty()
        } else {
            value == "on"
        })
    }

    async fn open(c: &SqlServer) -> Result<Self, sqlx::Error> {
        match c.kind {
            DbKind::Postgres => {
                use sqlx::postgres::PgConnectOptions;
                let mut o = PgConnectOptions::new()
                    .host(&c.host)
                    .port(c.port)
                    .database(&c.database)
                    .application_name("cdr-relay")
                    .ssl_mode(c.tls.pg());
                if let Some(u) = &c.user {
                    o = o.username(u);
                }
                if let Some(p) = &c.password {
                    o = o.password(p);
                }
                if let Some(ca) = &c.ca_file {
                    o = o.ssl_root_cert(ca);
                }
                Ok(Self::Pg(sqlx::PgConnection::connect_with(&o).await?))
            }
            DbKind::MySql => {
                use sqlx::mysql::MySqlConnectOptions;
                let mut o = MySqlConnectOptions::new()
                    .host(&c.host)
                    .port(c.port)
                    .database(&c.database)
                    // The server's own time zone: TIMESTAMP columns read as Asterisk wrote them.
                    .timezone(None::<String>)
                    .ssl_mode(c.tls.mysql());
                if let Some(u) = &c.user {
                    o = o.username(u);
                }
                if let Some(p) = &c.password {
                    o = o.password(p);
                }
                if let Some(ca) = &c.ca_file {
                    o = o.ssl_ca(ca);
                }
                Ok(Self::My(sqlx::MySqlConnection::connect_with(&o).await?))
            }
        }
    }

    /// Runs `sql` with `params`; every column of the result is text (or NULL).
    pub(crate) async fn rows(
        &mut self,
        sql: &str,
        params: &[Param],
    ) -> Result<Vec<Vec<Option<String>>>, String> {
        use sqlx::Row as _;
        let run = async {
            match self {
                Self::Pg(c) => {
                    let mut q = sqlx::query(sql);
                    for p in params {
                        q = match p {
                            Param::Int(i) => q.bind(*i),
                            Param::Text(t) => q.bind(t.clone()),
                        };
                    }
                    let rows = q.fetch_all(&mut *c).await?;
                    rows.iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| r.try_get::<Option<String>, _>(i))
                                .collect()
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                }
                Self::My(c) => {
                    let mut q = sqlx::query(sql);
                    for p in params {
                        q = match p {
                            Param::Int(i) => q.bind(*i),
                            Param::Text(t) => q.bind(t.clone()),
                        };
                    }
                    let rows = q.fetch_all(&mut *c).await?;
                    rows.iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| r.try_get::<Option<String>, _>(i))
                                .collect()
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                }
            }
        };
        match tokio::time::timeout(QUERY_TIMEOUT, run).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer to a query within {} s",
                QUERY_TIMEOUT.as_secs()
            )),
        }
    }

    /// The columns of `table` (`schema.table` allowed), empty when there is no such table
    /// (or the user may read none of it).
    pub(crate) async fn columns(&mut self, table: &str) -> Result<Vec<Column>, String> {
        let (schema, name) = match table.split_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, table),
        };
        let (sql, params) = match (&*self, schema) {
            (Self::Pg(_), Some(s)) => (
                "SELECT CAST(column_name AS text), CAST(data_type AS text) FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                vec![Param::Text(s.to_owned()), Param::Text(name.to_owned())],
            ),
            (Self::Pg(_), None) => (
                "SELECT CAST(column_name AS text), CAST(data_type AS text) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                vec![Param::Text(name.to_owned())],
            ),
            (Self::My(_), Some(s)) => (
                "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR) FROM information_schema.columns \
                 WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                vec![Param::Text(s.to_owned()), Param::Text(name.to_owned())],
            ),
            (Self::My(_), None) => (
                "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR) FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
                vec![Param::Text(name.to_owned())],
            ),
        };
        let rows = self.rows(sql, &params).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let mut it = r.into_iter();
                let name = it.next().flatten()?;
                let data_type = it.next().flatten().unwrap_or_default().to_ascii_lowercase();
                Some(Column { name, data_type })
            })
            .collect())
    }

    /// The first column of the first row of `sql`, if any.
    pub(crate) async fn scalar(
        &mut self,
        sql: &str,
        params: &[Param],
    ) -> Result<Option<String>, String> {
        Ok(self
            .rows(sql, params)
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }

    pub(crate) async fn close(self) {
        let _ = match self {
            Self::Pg(c) => c.close().await,
            Self::My(c) => c.close().await,
        };
    }
}
