//! The database source (`ami-relay` with `CEL_MODE=db`): reads Asterisk's `cel` and `cdr` tables
//! in PostgreSQL or MySQL/MariaDB (cel_pgsql, cdr_pgsql, cdr_mysql, or the ODBC backends) and
//! hands their rows to the CEL feed ([`call_assembler::feed::CelFeed`]) as rows
//! ([`CelData::Rows`]): the fields of the lines cel_custom and cdr_csv would have written, with a
//! watermark to commit alongside. No CSV is written or parsed on the way.
//!
//! * **Columns.** Each table's columns are looked up in `information_schema.columns` (the
//!   current schema on PostgreSQL, or `schema.table`; the connection's database on MySQL) and
//!   every column is read as text (cast in SQL), so any column types work. Times are formatted
//!   in SQL as `YYYY-MM-DD HH:MM:SS.ffffff` (CEL `eventtime`) or `YYYY-MM-DD HH:MM:SS` (CDR
//!   `start`, `answer`, `end`, as cdr_csv writes them), in the session's time zone for
//!   `timestamptz`; on MySQL the server's own time zone is kept (the client library would set
//!   UTC). Asterisk writes these columns in PBX local time (unless `usegmtime`), and the
//!   assembler takes a `YYYY-MM-DD` time as local, so `AMI_UTC_OFFSET` is not applied to them.
//! * **Fields.** A CEL row becomes the fields of one line in cel_custom's sample order
//!   (eventtype, eventtime, cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid, exten, context,
//!   channame, appname, appdata, amaflags, accountcode, uniqueid, linkedid, peer, userfield,
//!   userdeftype, eventextra: the table's `extra` column); a CDR row those of one line in
//!   cdr_csv's 21-column order (accountcode, src, dst, dcontext, clid, channel, dstchannel,
//!   lastapp, lastdata, start, answer, end, duration, billsec, disposition, amaflags, uniqueid,
//!   userfield, peeraccount, linkedid, sequence; `calldate` stands in for a missing `start`,
//!   and a numeric `amaflags` is written as cdr_csv's word, `3` = `DOCUMENTATION`). A column
//!   the table lacks (or a NULL) is an empty field. The feed uses the fields as it would use
//!   the line; it writes that line (every field quoted as Asterisk does,
//!   [`call_assembler::csv::write_record`]) only to journal a row or to keep a rejected one,
//!   so the journal holds what it held when rows came as CSV text, and a restart reads it back
//!   the same way whichever reader wrote it.
//! * **Watermark by id.** A table with an integer `id` column (Asterisk's `cel` has a serial /
//!   auto_increment one) is read in id order after the last id shipped. Ids can become visible
//!   out of order (concurrent transactions commit in another order than they took their ids),
//!   so when the rows read skip ids after the watermark, reading stops before the gap; the gap
//!   is passed only once it has stayed for [`GAP_WAIT`] (measured from when the row after it
//!   was first seen; a rolled-back insert leaves a gap that never fills, and so does a
//!   PostgreSQL server that crashed: its sequences skip up to 32 values). With
//!   `auto_increment_increment` above 1 every row follows a gap, so rows then arrive
//!   [`GAP_WAIT`] late. Reading from the beginning starts before the smallest id there (a table
//!   empty at the start whose first id is not 1 costs one wait).
//! * **Watermark by time.** A table without one (Asterisk's `cdr` usually) is read in the order
//!   of its time column (`end`, else `calldate`, else `start` for cdr; `eventtime` for cel) plus
//!   `uniqueid` and `sequence` when present. Every read begins `DB_LOOKBACK_SECS` (60) before
//!   the newest time shipped and skips the rows already seen: the keys (a 64-bit FNV-1a hash of
//!   the row's line as [`csv_line`] writes it, as before rows were handed over in fields, so
//!   saved watermarks stay valid) of the rows inside that window are part of the watermark, so
//!   a row committed late with an earlier time is still shipped, exactly once, when it is no older
//!   than the window. Rows with no time are never read.
//! * **Commit.** Each batch of rows carries its table's watermark as a state
//!   ([`CelInput::state`], named by [`CelFeed::db_state_name`]); the feed puts it
//!   in the same outbox transaction as the calls and journal entries those rows produced. At
//!   start the run loop reads the saved ones and the build closure sends them on the `start`
//!   channel ([`follow`]). Without a saved watermark the tables are read from their first rows,
//!   from their current end (`DB_FRESH_START`, ship no history) or from the rows of a time
//!   (`DB_BACKFILL_FROM`); that starting watermark is committed at once, so a restart before
//!   any new row does not move it.
//! * **Access.** Only `SELECT` on the two tables (and `information_schema`, which every user
//!   may read) is needed.
//! * **Failures.** A server that cannot be reached, goes away or refuses a query is logged
//!   and tried again after a backoff (500 ms doubling up to [`MAX_BACKOFF`]), never fatal; the
//!   run loop hears [`SourceEvent::Connected`] and [`SourceEvent::Disconnected`] as from the
//!   other sources. A missing CDR table is logged and its rows are simply not attached (looked
//!   for again every minute); a missing CEL table is logged as an error and retried.
//! * **Polling.** One page (`DB_BATCH` rows) of the CDR table, then one of the CEL table, over
//!   and over while either has more; then a pause of `DB_POLL_MS`.
//! * **`--once`.** The newest id or time of each table is noted at the start; both are read up
//!   to it, then [`SourceEvent::End`].

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use call_assembler::feed::{CelData, CelFeed, CelInput, CsvFile};

use super::reconnect::Reconnect;
use super::sql::{
    CONNECT_TIMEOUT, Column, Conn, DbKind, DbTls, Format, Param, SqlServer, compare_times,
    format_time, ph, quote_ident, quote_table, read_from, select_expr,
};
use super::tcp::SourceEvent;

mod cursor;
mod layout;

use cursor::*;
pub use cursor::{IdCursor, IdTake};
pub use layout::Layout;

/// Where the database source begins when no watermark was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DbStart {
    /// At the tables' first rows: all history.
    #[default]
    Beginning,
    /// At their current end: no history (`DB_FRESH_START`).
    Fresh,
    /// At the rows from this time on (`DB_BACKFILL_FROM`).
    From(chrono::NaiveDateTime),
}

/// Where `ami-relay` reads with `CEL_MODE=db`.
#[derive(Clone, PartialEq, Eq)]
pub struct CelDbSource {
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
    /// The CEL table (`schema.table` allowed).
    pub cel_table: String,
    /// The CDR table, if any.
    pub cdr_table: Option<String>,
    /// TLS mode.
    pub tls: DbTls,
    /// Extra trusted CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Time between looks at the tables when they had nothing new.
    pub poll: Duration,
    /// Rows per query.
    pub batch: usize,
    /// Where to begin without a saved watermark.
    pub start: DbStart,
    /// For tables without an `id` column: how far before the newest row read the next read
    /// begins.
    pub lookback: Duration,
    /// Read up to the rows there at the start, then stop (`--once`).
    pub once: bool,
}

impl std::fmt::Debug for CelDbSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CelDbSource")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("cel_table", &self.cel_table)
            .field("cdr_table", &self.cdr_table)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("poll", &self.poll)
            .field("batch", &self.batch)
            .field("start", &self.start)
            .field("lookback", &self.lookback)
            .field("once", &self.once)
            .finish()
    }
}

impl CelDbSource {
    /// The server it reads, as the SQL connection takes it.
    pub fn server(&self) -> SqlServer {
        SqlServer {
            kind: self.kind,
            host: self.host.clone(),
            port: self.port,
            database: self.database.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            tls: self.tls,
            ca_file: self.ca_file.clone(),
        }
    }

    /// Where it reads, for logs: `postgresql://user@host:port/database` (no password).
    pub fn describe(&self) -> String {
        self.server().describe()
    }
}

/// How long a gap in the ids must stay before reading moves past it.
pub const GAP_WAIT: Duration = Duration::from_secs(5);

/// The longest pause between attempts to reach the database.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

const MIN_BACKOFF: Duration = Duration::from_millis(500);

/// How often a missing CDR table is looked for again.
const CDR_RECHECK: Duration = Duration::from_secs(60);

/// The saved watermarks the source starts from (raw state values, by table).
#[derive(Debug, Clone, Default)]
pub struct SavedMarks {
    /// The CEL table's.
    pub cel: Option<Vec<u8>>,
    /// The CDR table's.
    pub cdr: Option<Vec<u8>>,
}

/// How far a table has been shipped: the state committed with its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "lowercase")]
pub enum Watermark {
    /// Every row with an id up to `last` has been shipped (or its id never appeared within
    /// [`GAP_WAIT`]).
    Id {
        /// The last id.
        last: i64,
    },
    /// Rows up to the time `max` have been shipped; those inside the lookback window before it
    /// are in `seen`.
    Time {
        /// The newest time shipped (`YYYY-MM-DD HH:MM:SS.ffffff`), if any.
        max: Option<String>,
        /// Rows older than this are never read (`DB_BACKFILL_FROM`).
        floor: Option<String>,
        /// The keys of the rows seen inside the window, by their time.
        seen: BTreeMap<String, Vec<u64>>,
    },
}

/// The 64-bit FNV-1a hash of `bytes`: a row's key in [`Watermark::Time`] (stable across
/// versions and runs, unlike `std`'s hasher).
pub fn row_key(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One CSV line (with its `\n`) of `fields`, each quoted as Asterisk's CSV writers quote it
/// (a value's line breaks stay inside its quotes): what a row's [`row_key`] is taken of.
pub fn csv_line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = String::new();
    call_assembler::csv::write_record(&mut line, fields);
    line
}

/// One of the two tables.
struct Table {
    which: CsvFile,
    name: Option<String>,
    state_name: String,
    saved: Option<Watermark>,
    layout: Option<Layout>,
    cursor: Cursor,
    until: Option<Until>,
    /// `--once`: read up to `until`.
    done: bool,
    /// A missing CDR table was logged.
    missing_logged: bool,
    /// A missing CDR table: when to look again.
    missing_until: Option<Instant>,
    /// Fresh start on a time-ordered table: the first read only notes the rows there.
    silent: bool,
    /// A starting watermark to commit at once.
    announce: bool,
}

/// Why a session with the database ended.
enum SessionEnd {
    Shutdown,
    Done,
    Failed(String),
}

/// What one page of a table gave: its rows (in fields) and the watermark after them, whether
/// there is more to read right away.
struct Page {
    rows: Vec<Vec<String>>,
    mark: Option<Watermark>,
    more: bool,
}

impl Table {
    fn new(which: CsvFile, name: Option<String>, source: &str, saved: Option<&[u8]>) -> Self {
        let saved = saved.and_then(|b| match serde_json::from_slice::<Watermark>(b) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(table = ?which, error = %e, "the saved watermark cannot be read: starting as without one");
                None
            }
        });
        Self {
            which,
            name,
            state_name: CelFeed::db_state_name(source, which),
            saved,
            layout: None,
            cursor: Cursor::Unset,
            until: None,
            done: false,
            missing_logged: false,
            missing_until: None,
            silent: false,
            announce: false,
        }
    }

    fn label(&self) -> &'static str {
        match self.which {
            CsvFile::Cel => "CEL",
            CsvFile::Cdr => "CDR",
        }
    }

    fn mark(&self) -> Option<Watermark> {
        match &self.cursor {
            Cursor::Unset => None,
            Cursor::Id(c) => Some(Watermark::Id { last: c.last }),
            Cursor::Time(c) => Some(c.mark()),
        }
    }

    /// Looks the table up (once per connection), works out where to begin (once) and, with
    /// `--once`, where to stop. `Err` for a failed query or a missing CEL table; a missing CDR
    /// table is logged and left alone.
    async fn prepare(
        &mut self,
        conn: &mut Conn,
        config: &CelDbSource,
        now: Instant,
    ) -> Result<(), String> {
        let Some(name) = self.name.clone() else {
            self.done = true;
            return Ok(());
        };
        if self.layout.is_none() {
            if self.missing_until.is_some_and(|t| now < t) {
                return Ok(());
            }
            let columns = conn.columns(&name).await?;
            let layout = if columns.is_empty() {
                None
            } else {
                let layout = Layout::new(config.kind, self.which, &name, &columns);
                if layout.is_none() {
                    tracing::error!(table = %name, "the table has neither an integer id column nor a time column to read it by");
                }
                layout
            };
            match (layout, self.which) {
                (Some(l), _) => {
                    if self.missing_logged {
                        tracing::info!(table = %name, "the {} table is there now", self.label());
                        self.missing_logged = false;
                    }
                    tracing::info!(table = %name, by = if l.by_id() { "id" } else { "time" }, "reading the {} table", self.label());
                    self.layout = Some(l);
                    self.missing_until = None;
                }
                (None, CsvFile::Cel) => {
                    let why = format!(
                        "the CEL table {name} cannot be read in the database {} (no such table, or {} may not read it)",
                        config.database,
                        config.user.as_deref().unwrap_or("this user")
                    );
                    tracing::error!("{why}");
                    return Err(why);
                }
                (None, CsvFile::Cdr) => {
                    if !self.missing_logged {
                        tracing::warn!(
                            table = %name,
                            database = %config.database,
                            "no usable CDR table: calls carry no CDR rows until it appears (looked for again every minute)"
                        );
                        self.missing_logged = true;
                    }
                    self.missing_until = Some(now + CDR_RECHECK);
                    if config.once {
                        self.done = true;
                    }
                    return Ok(());
                }
            }
        }
        let Some(layout) = self.layout.clone() else {
            return Ok(());
        };
        if matches!(self.cursor, Cursor::Unset) {
            self.begin(conn, config, &layout).await?;
        }
        if config.once && self.until.is_none() {
            let until = match &self.cursor {
                Cursor::Id(_) => match layout.max_id_sql() {
                    Some(sql) => conn
                        .scalar(&sql, &[])
                        .await?
                        .and_then(|v| v.trim().parse().ok())
                        .map_or(Until::Nothing, Until::Id),
                    None => Until::Nothing,
                },
                Cursor::Time(_) => match layout.max_time_sql() {
                    Some(sql) => conn
                        .scalar(&sql, &[])
                        .await?
                        .map_or(Until::Nothing, Until::Time),
                    None => Until::Nothing,
                },
                Cursor::Unset => Until::Nothing,
            };
            if until == Until::Nothing {
                self.done = true;
            }
            self.until = Some(until);
        }
        Ok(())
    }

    /// Sets the cursor from the saved watermark, else from `DB_FRESH_START` /
    /// `DB_BACKFILL_FROM` / the beginning.
    async fn begin(
        &mut self,
        conn: &mut Conn,
        config: &CelDbSource,
        layout: &Layout,
    ) -> Result<(), String> {
        match (self.saved.take(), layout.by_id()) {
            (Some(Watermark::Id { last }), true) => {
                tracing::info!(table = ?self.which, last_id = last, "resuming after the saved id");
                self.cursor = Cursor::Id(IdCursor::new(last));
                return Ok(());
            }
            (Some(Watermark::Time { max, floor, seen }), false) => {
                tracing::info!(table = ?self.which, after = ?max, "resuming after the saved time");
                self.cursor = Cursor::Time(TimeCursor::from_mark(max, floor, seen));
                return Ok(());
            }
            (Some(_), _) => tracing::warn!(
                table = ?self.which,
                "the saved watermark does not fit the table's columns any more (an id column came or went): starting as without one"
            ),
            (None, _) => {}
        }
        let first_id = |v: Option<String>| v.and_then(|v| v.trim().parse::<i64>().ok());
        self.cursor = match (config.start, layout.by_id()) {
            (DbStart::Beginning, true) => {
                let min = match layout.first_id_sql() {
                    Some(sql) => first_id(conn.scalar(&sql, &[]).await?),
                    None => None,
                };
                Cursor::Id(IdCursor::new(min.map_or(0, |m| m.saturating_sub(1))))
            }
            (DbStart::Beginning, false) => Cursor::Time(TimeCursor::default()),
            (DbStart::Fresh, true) => {
                let max = match layout.max_id_sql() {
                    Some(sql) => first_id(conn.scalar(&sql, &[]).await?),
                    None => None,
                };
                tracing::info!(table = ?self.which, last_id = ?max, "fresh start: from the current end");
                Cursor::Id(IdCursor::new(max.unwrap_or(0)))
            }
            (DbStart::Fresh, false) => {
                let max = match layout.max_time_sql() {
                    Some(sql) => conn.scalar(&sql, &[]).await?,
                    None => None,
                };
                tracing::info!(table = ?self.which, after = ?max, "fresh start: from the current end");
                // The rows inside the window before it are noted, not shipped.
                self.silent = max.is_some();
                Cursor::Time(TimeCursor::from_mark(max, None, BTreeMap::new()))
            }
            (DbStart::From(t), true) => {
                let from = format_time(t);
                let first = match layout.first_id_from_sql() {
                    Some(sql) => first_id(conn.scalar(&sql, &[Param::Text(from.clone())]).await?),
                    None => {
                        tracing::warn!(table = ?self.which, "no time column to find where DB_BACKFILL_FROM begins: reading from the beginning");
                        None
                    }
                };
                let last = match first {
                    Some(f) => f.saturating_sub(1),
                    None => match layout.max_id_sql() {
                        Some(sql) => first_id(conn.scalar(&sql, &[]).await?).unwrap_or(0),
                        None => 0,
                    },
                };
                tracing::info!(table = ?self.which, %from, last_id = last, "backfill: from the rows of that time");
                Cursor::Id(IdCursor::new(last))
            }
            (DbStart::From(t), false) => {
                let from = format_time(t);
                tracing::info!(table = ?self.which, %from, "backfill: from the rows of that time");
                Cursor::Time(TimeCursor::from_mark(None, Some(from), BTreeMap::new()))
            }
        };
        self.announce = !self.silent;
        Ok(())
    }

    /// Reads one page of rows (see the module documentation).
    async fn page(
        &mut self,
        conn: &mut Conn,
        config: &CelDbSource,
        now: Instant,
    ) -> Result<Page, String> {
        let mut page = Page {
            rows: Vec::new(),
            mark: None,
            more: false,
        };
        let Some(layout) = self.layout.as_ref() else {
            return Ok(page);
        };
        if self.done && config.once {
            return Ok(page);
        }
        let batch = i64::try_from(config.batch).unwrap_or(1000);
        let until = self.until.clone();
        let (which, label) = (self.which, self.label());
        match &mut self.cursor {
            Cursor::Unset => {}
            Cursor::Id(c) => {
                let until_id = match &until {
                    Some(Until::Id(u)) => Some(*u),
                    _ => None,
                };
                let Some(sql) = layout.id_page_sql(until_id.is_some()) else {
                    return Ok(page);
                };
                let mut params = vec![Param::Int(c.last)];
                if let Some(u) = until_id {
                    params.push(Param::Int(u));
                }
                params.push(Param::Int(batch));
                let rows = conn.rows(&sql, &params).await?;
                let mut ids = Vec::with_capacity(rows.len());
                for r in &rows {
                    match r
                        .first()
                        .and_then(Option::as_deref)
                        .map(|v| v.trim().parse::<i64>())
                    {
                        Some(Ok(id)) => ids.push(id),
                        _ => return Err(format!("{label} table: an id that is not a number")),
                    }
                }
                let took = c.take(now, &ids, GAP_WAIT);
                for (a, b) in &took.skipped {
                    tracing::info!(
                        table = ?which,
                        first = a,
                        last = b,
                        "ids never appeared within {} s (a rolled-back insert, or auto_increment_increment above 1): moved past them",
                        GAP_WAIT.as_secs()
                    );
                }
                for r in rows.iter().take(took.take) {
                    page.rows
                        .push(layout.fields(r.get(1..).unwrap_or_default()));
                }
                if took.take > 0 {
                    page.mark = Some(Watermark::Id { last: c.last });
                }
                let full = rows.len() as i64 >= batch;
                page.more = full && !took.blocked;
                if config.once && !full && !took.blocked {
                    self.done = true;
                }
            }
            Cursor::Time(c) => {
                let pass = c.pass.take().unwrap_or_else(|| Pass {
                    cursor: read_from(c.max.as_deref(), c.floor.as_deref(), config.lookback),
                    offset: 0,
                });
                let until_time = match &until {
                    Some(Until::Time(t)) => Some(t.clone()),
                    _ => None,
                };
                let Some(sql) = layout.time_page_sql(pass.cursor.is_some(), until_time.is_some())
                else {
                    return Ok(page);
                };
                let mut params = Vec::new();
                if let Some(t) = &pass.cursor {
                    params.push(Param::Text(t.clone()));
                }
                if let Some(t) = &until_time {
                    params.push(Param::Text(t.clone()));
                }
                params.push(Param::Int(batch));
                params.push(Param::Int(pass.offset));
                let rows = conn.rows(&sql, &params).await?;
                let mut shipped = 0usize;
                let mut last_time: Option<String> = None;
                let mut at_last = 0i64;
                for r in &rows {
                    let Some(time) = r.first().and_then(Option::as_deref) else {
                        continue;
                    };
                    let fields = layout.fields(r.get(1..).unwrap_or_default());
                    if c.see(time, row_key(csv_line(&fields).as_bytes())) && !self.silent {
                        page.rows.push(fields);
                        shipped += 1;
                    }
                    if last_time.as_deref() == Some(time) {
                        at_last += 1;
                    } else {
                        last_time = Some(time.to_owned());
                        at_last = 1;
                    }
                }
                c.prune(config.lookback);
                if rows.len() as i64 >= batch {
                    c.pass = Some(if last_time.is_some() && last_time == pass.cursor {
                        Pass {
                            cursor: pass.cursor,
                            offset: pass.offset.saturating_add(at_last),
                        }
                    } else {
                        Pass {
                            cursor: last_time,
                            offset: at_last,
                        }
                    });
                    page.more = true;
                } else {
                    if config.once {
                        self.done = true;
                    }
                    if self.silent {
                        self.silent = false;
                        self.announce = true;
                    }
                }
                if shipped > 0 {
                    page.mark = Some(c.mark());
                }
            }
        }
        Ok(page)
    }
}

/// Reads the tables over one connection until it fails, `--once` is done, or shutdown.
async fn session(
    conn: &mut Conn,
    config: &CelDbSource,
    tables: &mut [Table],
    tx: &mpsc::Sender<SourceEvent<CelInput>>,
    shutdown: &mut watch::Receiver<bool>,
    reconnect: &mut Reconnect,
) -> SessionEnd {
    loop {
        let now = Instant::now();
        // Both tables are prepared before either is read, so that `--once` notes where both
        // end at the same moment.
        for t in tables.iter_mut() {
            if let Err(e) = t.prepare(conn, config, now).await {
                return SessionEnd::Failed(e);
            }
        }
        let mut more = true;
        while more {
            more = false;
            for t in tables.iter_mut() {
                let page = match t.page(conn, config, Instant::now()).await {
                    Ok(p) => p,
                    Err(e) => return SessionEnd::Failed(e),
                };
                reconnect.succeeded();
                more |= page.more;
                let mark = match page.mark {
                    Some(m) => Some(m),
                    None if t.announce => t.mark(),
                    None => None,
                };
                t.announce = false;
                if page.rows.is_empty() && mark.is_none() {
                    continue;
                }
                let input = CelInput {
                    file: t.which,
                    data: CelData::Rows(page.rows),
                    pos: None,
                    state: mark.map(|m| {
                        (
                            t.state_name.clone(),
                            serde_json::to_vec(&m).unwrap_or_default(),
                        )
                    }),
                };
                if tx.send(SourceEvent::Data(input)).await.is_err() {
                    return SessionEnd::Shutdown;
                }
            }
            if *shutdown.borrow() {
                return SessionEnd::Shutdown;
            }
        }
        if config.once && tables.iter().all(|t| t.done) {
            return SessionEnd::Done;
        }
        tokio::select! {
            () = tokio::time::sleep(config.poll) => {}
            _ = shutdown.changed() => return SessionEnd::Shutdown,
        }
    }
}

/// Reads the tables of `config` (see the module documentation) from the watermarks sent on
/// `start`, for `source`'s states, until `shutdown` (or, with `once`, until the rows there at
/// the start are read).
pub async fn follow(
    config: CelDbSource,
    source: String,
    start: oneshot::Receiver<SavedMarks>,
    tx: mpsc::Sender<SourceEvent<CelInput>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(saved) = start.await else { return };
    let mut tables = [
        Table::new(
            CsvFile::Cdr,
            config.cdr_table.clone(),
            &source,
            saved.cdr.as_deref(),
        ),
        Table::new(
            CsvFile::Cel,
            // Empty when only the CDR is read (AMI reconciled with the cdr table).
            Some(config.cel_table.clone()).filter(|t| !t.is_empty()),
            &source,
            saved.cel.as_deref(),
        ),
    ];
    let server = config.server();
    let db = server.describe();
    let mut reconnect = Reconnect::new(MIN_BACKOFF, MAX_BACKOFF);
    loop {
        let attempt = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, Conn::connect(&server)) => r,
            _ = shutdown.changed() => return,
        };
        let why = match attempt {
            Ok(Ok(mut conn)) => {
                tracing::info!(%db, "connected to the database");
                if tx.send(SourceEvent::Connected(db.clone())).await.is_err() {
                    return;
                }
                match session(
                    &mut conn,
                    &config,
                    &mut tables,
                    &tx,
                    &mut shutdown,
                    &mut reconnect,
                )
                .await
                {
                    SessionEnd::Shutdown => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
                        return;
                    }
                    SessionEnd::Done => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
                        let _ = tx.send(SourceEvent::End).await;
                        return;
                    }
                    SessionEnd::Failed(why) => {
                        drop(conn);
                        // Looked up again on the next connection: the tables may have changed.
                        for t in &mut tables {
                            t.layout = None;
                        }
                        if tx
                            .send(SourceEvent::Disconnected(why.clone()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        why
                    }
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
        };
        let delay = reconnect.failed();
        tracing::warn!(%db, error = %why, retry_in_ms = delay.as_millis() as u64, "database unavailable");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
