//! Recordings from a table (`DB_TABLE_RECORDINGS`): a site's own table of (call id, file path)
//! rows, filled for instance by a dialplan or AGI script, read in the background over the
//! `DB_*` connection settings (PostgreSQL or MySQL/MariaDB, TLS as `DB_TLS`) and handed to the
//! [`RecordingIndex`] with [`RecordingIndex::add`], where [`RecordingIndex::attach`] finds them
//! when a call is committed. `ami-relay` reads it in any `CEL_MODE`.
//!
//! * **Columns,** looked up by name in `information_schema` without regard to case: the key
//!   `uniqueid` or `linkedid` (either or both: a row is found under each one it has), and the
//!   path: the first of `path`, `filename`, `file` and `recordingfile`. Optional: an integer
//!   `id`, and a time column (of a date/time type): the first of `created`, `calldate`,
//!   `start` and `time`. Every column is read as text, so any types work.
//! * **Which rows.** Every `DB_POLL_MS` the table is read again, newest rows first and at most
//!   [`MAX_ROWS`] at a time:
//!   - with an `id`: the rows after the highest id read so far, less [`ID_LOOKBACK`] ids, so
//!     that a row whose id became visible late (its transaction committed after a later one's)
//!     is still found; the first read takes the rows newer than `RECORDINGS_MAX_AGE_HOURS`
//!     when there is a time column, else the newest [`MAX_ROWS`];
//!   - without an `id`, with a time column: the rows newer than `RECORDINGS_MAX_AGE_HOURS`
//!     (by the database server's clock) at first, then those from `DB_LOOKBACK_SECS` before
//!     the newest time read (a row written later with an older time than that is missed:
//!     raise `DB_LOOKBACK_SECS`, or give the table an id);
//!   - with neither: the whole table, ordered by its key column (Uniqueids begin with the
//!     epoch, so that is roughly newest first), bounded by [`MAX_ROWS`]. This costs a full
//!     read at every poll: give the table an id or a time column.
//! * **Nothing is committed.** The index lives in memory only, and the table is read again
//!   from the start after a restart (hence the bounds above).
//! * **Before the first commit.** The run loop waits, up to [`FIRST_READ_WAIT`], for the first
//!   read to be over (or to have failed) before it takes any input, so that calls replayed or
//!   read right at the start find the table's rows already there.
//! * **Failures are never fatal.** A database that cannot be reached, or a query that fails,
//!   is logged and tried again after a backoff (500 ms doubling up to [`MAX_BACKOFF`]); a
//!   missing table, or one without the columns needed, is logged once and looked for again
//!   every [`TABLE_RECHECK`]. Calls committed meanwhile are delivered without recordings from
//!   the table.
//! * **Access.** Only `SELECT` on the table (and `information_schema`) is needed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::cel_db::CelDbSource;
use super::reconnect::Reconnect;
use super::recordings::RecordingIndex;
use super::sql::{self, Column, Conn, DbKind, Format, Param};

/// The most rows one read of the table takes (the newest ones).
pub const MAX_ROWS: usize = 100_000;

/// With an `id` column: how many ids below the highest one read are read again at each poll.
pub const ID_LOOKBACK: i64 = 1000;

/// How often a missing (or unusable) table is looked for again.
pub const TABLE_RECHECK: Duration = Duration::from_secs(10);

/// How long the run loop waits for the first read of the table before it takes input.
pub const FIRST_READ_WAIT: Duration = Duration::from_secs(5);

/// The longest pause between attempts to reach the database.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

const MIN_BACKOFF: Duration = Duration::from_millis(500);

/// The key columns, in the order their values are read.
const KEY_COLUMNS: [&str; 2] = ["uniqueid", "linkedid"];
/// The path column's names, first found wins.
const PATH_COLUMNS: [&str; 4] = ["path", "filename", "file", "recordingfile"];
/// The time column's names, first found (of a date/time type) wins.
const TIME_COLUMNS: [&str; 4] = ["created", "calldate", "start", "time"];

/// Where `ami-relay` reads recordings from (`DB_TABLE_RECORDINGS` with the `DB_*` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingsTable {
    /// The connection (`DB_TYPE`, `DB_HOST`, ..., `DB_TLS`), `DB_POLL_MS` as `poll` and
    /// `DB_LOOKBACK_SECS` as `lookback`; its table names and start are not used.
    pub db: CelDbSource,
    /// The table (`schema.table` allowed).
    pub table: String,
    /// Rows older than this (by the time column) are not read at first.
    pub max_age: Duration,
}

impl RecordingsTable {
    /// What it reads, for `--check-config` (no password).
    pub fn describe(&self) -> String {
        format!(
            "the table {} at {} (read every {} ms; rows up to {} h old at first)",
            self.table,
            self.db.describe(),
            self.db.poll.as_millis(),
            self.max_age.as_secs() / 3600
        )
    }
}

/// A time column: quoted, read as text, and the type a placeholder compared with it is cast
/// to (PostgreSQL's time types; MySQL converts by itself).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TimeColumn {
    quoted: String,
    select: String,
    cast: Option<String>,
}

/// How the table is read, worked out from its columns: the SQL is built here, with nothing but
/// the column names from `information_schema`, numbers of ours and placeholders in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLayout {
    kind: DbKind,
    /// The quoted table name.
    table: String,
    /// The select expressions of `uniqueid` and `linkedid` (`None`: the table lacks it).
    keys: [Option<String>; 2],
    /// The first key column, quoted (the order of a whole-table read).
    order_key: String,
    /// The path column: quoted, and its select expression.
    path: (String, String),
    /// The `id` column, quoted.
    id: Option<String>,
    time: Option<TimeColumn>,
}

/// Which rows one read takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The first read (and every read of a table with neither an id nor a time column).
    First,
    /// The rows with an id above this.
    AfterId(i64),
    /// The rows from this time (`YYYY-MM-DD HH:MM:SS.ffffff`).
    FromTime(String),
}

impl TableLayout {
    /// How to read the table `name` from its `columns`; `Err` says which column is missing.
    pub fn new(kind: DbKind, name: &str, columns: &[Column]) -> Result<Self, String> {
        let find = |n: &str| columns.iter().find(|c| c.name.eq_ignore_ascii_case(n));
        let text = |c: &Column| sql::select_expr(kind, c, Format::Text);
        let keys = KEY_COLUMNS.map(|n| find(n).map(text));
        let order_key = KEY_COLUMNS
            .iter()
            .find_map(|n| find(n))
            .map(|c| sql::quote_ident(kind, &c.name))
            .ok_or_else(|| {
                format!("the recordings table {name} has no uniqueid or linkedid column")
            })?;
        let path = PATH_COLUMNS
            .iter()
            .find_map(|n| find(n))
            .map(|c| (sql::quote_ident(kind, &c.name), text(c)))
            .ok_or_else(|| {
                format!(
                    "the recordings table {name} has no path column (path, filename, file or recordingfile)"
                )
            })?;
        let id = find("id")
            .filter(|c| c.is_integer())
            .map(|c| sql::quote_ident(kind, &c.name));
        let time = TIME_COLUMNS
            .iter()
            .filter_map(|n| find(n))
            .find(|c| c.is_time())
            .map(|c| TimeColumn {
                quoted: sql::quote_ident(kind, &c.name),
                select: sql::select_expr(kind, c, Format::Micros),
                cast: (kind == DbKind::Postgres).then(|| c.data_type.clone()),
            });
        Ok(Self {
            kind,
            table: sql::quote_table(kind, name),
            keys,
            order_key,
            path,
            id,
            time,
        })
    }

    /// How rows are told apart from the ones read before: `id`, `time` or `whole table`.
    pub fn by(&self) -> &'static str {
        match (&self.id, &self.time) {
            (Some(_), _) => "id",
            (None, Some(_)) => "time",
            (None, None) => "whole table",
        }
    }

    /// The query of `read` and its parameters: rows of `(mark, uniqueid, linkedid, path)`, all
    /// text, newest first, at most [`MAX_ROWS`]; `mark` is the id, else the time, else NULL.
    pub(crate) fn sql(&self, read: &Read, max_age: Duration) -> (String, Vec<Param>) {
        let k = self.kind;
        let null = match k {
            DbKind::Postgres => "CAST(NULL AS text)",
            DbKind::MySql => "CAST(NULL AS CHAR)",
        };
        let lead = match (&self.id, &self.time) {
            (Some(id), _) => match k {
                DbKind::Postgres => format!("CAST({id} AS text)"),
                DbKind::MySql => format!("CAST({id} AS CHAR)"),
            },
            (None, Some(t)) => t.select.clone(),
            (None, None) => null.to_owned(),
        };
        let [uid, lid] = &self.keys;
        let mut sql = format!(
            "SELECT {lead} AS c0, {} AS c1, {} AS c2, {} AS c3 FROM {} WHERE {} IS NOT NULL",
            uid.as_deref().unwrap_or(null),
            lid.as_deref().unwrap_or(null),
            self.path.1,
            self.table,
            self.path.0,
        );
        let mut params = Vec::new();
        match (read, &self.id, &self.time) {
            (Read::AfterId(last), Some(id), _) => {
                sql.push_str(&format!(" AND {id} > {}", sql::ph(k, 1)));
                params.push(Param::Int(*last));
            }
            (Read::FromTime(from), None, Some(t)) => {
                let p = match &t.cast {
                    Some(ty) => format!("CAST({} AS {ty})", sql::ph(k, 1)),
                    None => sql::ph(k, 1),
                };
                sql.push_str(&format!(" AND {} >= {p}", t.quoted));
                params.push(Param::Text(from.clone()));
            }
            (_, _, Some(t)) => {
                let secs = max_age.as_secs();
                sql.push_str(&match k {
                    DbKind::Postgres => {
                        format!(
                            " AND {} >= LOCALTIMESTAMP - INTERVAL '{secs} seconds'",
                            t.quoted
                        )
                    }
                    DbKind::MySql => format!(" AND {} >= NOW() - INTERVAL {secs} SECOND", t.quoted),
                });
            }
            _ => {}
        }
        let order = self
            .id
            .as_ref()
            .or_else(|| self.time.as_ref().map(|t| &t.quoted))
            .unwrap_or(&self.order_key);
        sql.push_str(&format!(" ORDER BY {order} DESC LIMIT {MAX_ROWS}"));
        (sql, params)
    }
}

/// What the reader has read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mark {
    /// Nothing yet.
    Start,
    /// The highest id read.
    Id(i64),
    /// The newest time read.
    Time(String),
}

/// The reading of the table across connections.
struct Reader {
    layout: Option<TableLayout>,
    mark: Mark,
    /// Why the table cannot be read, as last logged.
    logged: Option<String>,
    /// A missing table: when to look again.
    recheck_at: Option<Instant>,
    /// A read hit [`MAX_ROWS`] (logged once).
    capped_logged: bool,
}

impl Reader {
    fn new() -> Self {
        Self {
            layout: None,
            mark: Mark::Start,
            logged: None,
            recheck_at: None,
            capped_logged: false,
        }
    }

    /// The next read, from the mark (reset when it does not fit the layout).
    fn next_read(&mut self, layout: &TableLayout, lookback: Duration) -> Read {
        match (&self.mark, layout.by()) {
            (Mark::Id(last), "id") => Read::AfterId(last.saturating_sub(ID_LOOKBACK)),
            (Mark::Time(t), "time") => {
                sql::read_from(Some(t), None, lookback).map_or(Read::First, Read::FromTime)
            }
            _ => {
                self.mark = Mark::Start;
                Read::First
            }
        }
    }

    /// Looks the table up when needed and reads it once: the (id, path) pairs of its rows.
    async fn poll(
        &mut self,
        conn: &mut Conn,
        t: &RecordingsTable,
    ) -> Result<Vec<(String, String)>, String> {
        let now = Instant::now();
        if self.layout.is_none() {
            if self.recheck_at.is_some_and(|r| now < r) {
                return Ok(Vec::new());
            }
            let columns = conn.columns(&t.table).await?;
            let layout = if columns.is_empty() {
                Err(format!(
                    "no recordings table {} in the database {} (or {} may not read it)",
                    t.table,
                    t.db.database,
                    t.db.user.as_deref().unwrap_or("this user")
                ))
            } else {
                TableLayout::new(t.db.kind, &t.table, &columns)
            };
            match layout {
                Ok(l) => {
                    if self.logged.take().is_some() {
                        tracing::info!(table = %t.table, "the recordings table is there now");
                    }
                    tracing::info!(table = %t.table, by = l.by(), "reading recordings from the table");
                    self.layout = Some(l);
                    self.recheck_at = None;
                }
                Err(why) => {
                    if self.logged.as_ref() != Some(&why) {
                        tracing::warn!(
                            "{why}: calls get no recordings from it until it can be read (looked for again every {} s)",
                            TABLE_RECHECK.as_secs()
                        );
                        self.logged = Some(why);
                    }
                    self.recheck_at = Some(now + TABLE_RECHECK);
                    return Ok(Vec::new());
                }
            }
        }
        let Some(layout) = self.layout.clone() else {
            return Ok(Vec::new());
        };
        let read = self.next_read(&layout, t.db.lookback);
        let (sql, params) = layout.sql(&read, t.max_age);
        let rows = conn.rows(&sql, &params).await?;
        if rows.len() >= MAX_ROWS && !self.capped_logged {
            tracing::warn!(
                table = %t.table,
                "a read of the recordings table took its limit of {MAX_ROWS} rows: older rows were left out"
            );
            self.capped_logged = true;
        }
        let mut entries = Vec::new();
        for r in &rows {
            let get = |i: usize| r.get(i).and_then(Option::as_deref).map(str::trim);
            let Some(path) = get(3).filter(|p| !p.is_empty()) else {
                continue;
            };
            for id in [get(1), get(2)].into_iter().flatten() {
                if !id.is_empty() {
                    entries.push((id.to_owned(), path.to_owned()));
                }
            }
            if let Some(v) = get(0) {
                self.advance(layout.by(), v);
            }
        }
        Ok(entries)
    }

    /// Moves the mark to a row's id or time (`by`, as [`TableLayout::by`]) when it is newer.
    fn advance(&mut self, by: &str, value: &str) {
        let newer = match (by, &self.mark) {
            ("id", Mark::Id(last)) => value
                .parse::<i64>()
                .ok()
                .filter(|id| id > last)
                .map(Mark::Id),
            ("id", _) => value.parse::<i64>().ok().map(Mark::Id),
            ("time", Mark::Time(newest)) => sql::compare_times(value, newest)
                .is_gt()
                .then(|| Mark::Time(value.to_owned())),
            ("time", _) => Some(Mark::Time(value.to_owned())),
            _ => None,
        };
        if let Some(m) = newer {
            self.mark = m;
        }
    }
}

/// Adds `entries` to `index` (off the async threads: a walk of the directories may hold the
/// lock). Returns how many were new.
async fn add_all(index: &Arc<Mutex<RecordingIndex>>, entries: Vec<(String, String)>) -> usize {
    if entries.is_empty() {
        return 0;
    }
    let index = index.clone();
    tokio::task::spawn_blocking(move || {
        let Ok(mut index) = index.lock() else {
            return 0;
        };
        entries
            .iter()
            .filter(|(id, path)| index.add(id, path))
            .count()
    })
    .await
    .unwrap_or(0)
}

/// Reads the table over one connection until a query fails (`Some(why)`) or `stop` (`None`).
async fn session(
    conn: &mut Conn,
    t: &RecordingsTable,
    reader: &mut Reader,
    index: &Arc<Mutex<RecordingIndex>>,
    ready: &mut Option<oneshot::Sender<()>>,
    stop: &mut watch::Receiver<bool>,
) -> Option<String> {
    loop {
        match reader.poll(conn, t).await {
            Ok(entries) => {
                let added = add_all(index, entries).await;
                if added > 0 {
                    tracing::debug!(table = %t.table, added, "recordings from the table");
                }
            }
            Err(why) => return Some(why),
        }
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        tokio::select! {
            () = tokio::time::sleep(t.db.poll) => {}
            _ = stop.changed() => return None,
        }
    }
}

/// Reads the table `t` describes (see the module documentation) into `index` until `stop`
/// changes (or its sender is gone). `ready` is sent once the first read is over, or has
/// failed.
pub async fn follow(
    t: RecordingsTable,
    index: Arc<Mutex<RecordingIndex>>,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ready = Some(ready);
    let mut reader = Reader::new();
    let server = t.db.server();
    let mut reconnect = Reconnect::new(MIN_BACKOFF, MAX_BACKOFF);
    let db = t.db.describe();
    loop {
        let attempt = tokio::select! {
            r = tokio::time::timeout(sql::CONNECT_TIMEOUT, Conn::connect(&server)) => r,
            _ = stop.changed() => return,
        };
        let why = match attempt {
            Ok(Ok(mut conn)) => {
                tracing::info!(%db, table = %t.table, "connected to the database for recordings");
                reconnect.succeeded();
                let end = session(&mut conn, &t, &mut reader, &index, &mut ready, &mut stop).await;
                match end {
                    None => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
                        return;
                    }
                    Some(why) => {
                        // Looked up again on the next connection: the table may have changed.
                        reader.layout = None;
                        why
                    }
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no connection within {} s", sql::CONNECT_TIMEOUT.as_secs()),
        };
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        let delay = reconnect.failed();
        tracing::warn!(
            %db,
            table = %t.table,
            error = %why,
            retry_in_ms = delay.as_millis() as u64,
            "recordings table unavailable: calls get no recordings from it meanwhile"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn col(name: &str, data_type: &str) -> Column {
        Column {
            name: name.into(),
            data_type: data_type.into(),
        }
    }

    #[test]
    fn an_id_table_is_read_after_the_last_id_less_the_lookback() {
        let cols = [
            col("ID", "bigint"),
            col("UniqueId", "character varying"),
            col("created", "timestamp without time zone"),
            col("FileName", "text"),
        ];
        let l = TableLayout::new(DbKind::Postgres, "public.recs", &cols).unwrap();
        assert_eq!(l.by(), "id");
        let (sql, params) = l.sql(&Read::First, Duration::from_secs(48 * 3600));
        assert_eq!(
            sql,
            "SELECT CAST(\"ID\" AS text) AS c0, CAST(\"UniqueId\" AS text) AS c1, CAST(NULL AS text) AS c2, \
             CAST(\"FileName\" AS text) AS c3 FROM \"public\".\"recs\" WHERE \"FileName\" IS NOT NULL \
             AND \"created\" >= LOCALTIMESTAMP - INTERVAL '172800 seconds' ORDER BY \"ID\" DESC LIMIT 100000"
        );
        assert!(params.is_empty());
        let mut r = Reader::new();
        r.advance("id", "5000");
        r.advance("id", "4999");
        assert_eq!(r.mark, Mark::Id(5000), "only a higher id moves it");
        let read = r.next_read(&l, Duration::from_secs(60));
        assert_eq!(read, Read::AfterId(4000));
        let (sql, params) = l.sql(&read, Duration::from_secs(3600));
        assert!(
            sql.ends_with(
                "WHERE \"FileName\" IS NOT NULL AND \"ID\" > $1 ORDER BY \"ID\" DESC LIMIT 100000"
            ),
            "{sql}"
        );
        assert_eq!(params, vec![Param::Int(4000)]);
    }

    #[test]
    fn a_table_without_id_is_read_by_time_or_whole() {
        let cols = [
            col("linkedid", "varchar"),
            col("uniqueid", "varchar"),
            col("recordingfile", "varchar"),
            col("start", "varchar"),
            col("calldate", "datetime"),
        ];
        let l = TableLayout::new(DbKind::MySql, "recs", &cols).unwrap();
        assert_eq!(
            l.by(),
            "time",
            "calldate: the first time column of a time type"
        );
        let (sql, _) = l.sql(&Read::First, Duration::from_secs(7200));
        assert_eq!(
            sql,
            "SELECT DATE_FORMAT(`calldate`, '%Y-%m-%d %H:%i:%s.%f') AS c0, CAST(`uniqueid` AS CHAR) AS c1, \
             CAST(`linkedid` AS CHAR) AS c2, CAST(`recordingfile` AS CHAR) AS c3 FROM `recs` \
             WHERE `recordingfile` IS NOT NULL AND `calldate` >= NOW() - INTERVAL 7200 SECOND \
             ORDER BY `calldate` DESC LIMIT 100000"
        );
        let mut r = Reader::new();
        r.advance("time", "2026-11-22 13:54:08.000000");
        r.advance("time", "2026-11-22 13:50:00.000000");
        let read = r.next_read(&l, Duration::from_secs(60));
        assert_eq!(read, Read::FromTime("2026-11-22 13:53:08.000000".into()));
        let (sql, params) = l.sql(&read, Duration::from_secs(7200));
        assert!(sql.contains("AND `calldate` >= ? ORDER BY"), "{sql}");
        assert_eq!(params.len(), 1);
        // Neither: the whole table, by its key column.
        let l = TableLayout::new(
            DbKind::Postgres,
            "recs",
            &[col("linkedid", "text"), col("path", "text")],
        )
        .unwrap();
        assert_eq!(l.by(), "whole table");
        let mut r = Reader::new();
        r.mark = Mark::Id(3);
        assert_eq!(r.next_read(&l, Duration::from_secs(60)), Read::First);
        let (sql, params) = l.sql(&Read::First, Duration::from_secs(7200));
        assert!(
            sql.ends_with("WHERE \"path\" IS NOT NULL ORDER BY \"linkedid\" DESC LIMIT 100000"),
            "{sql}"
        );
        assert!(params.is_empty());
    }

    #[test]
    fn a_table_without_a_key_or_path_column_is_refused_saying_which() {
        let e = TableLayout::new(DbKind::MySql, "recs", &[col("path", "varchar")]).unwrap_err();
        assert!(e.contains("uniqueid or linkedid"), "{e}");
        let e = TableLayout::new(DbKind::MySql, "recs", &[col("uniqueid", "varchar")]).unwrap_err();
        assert!(e.contains("no path column"), "{e}");
        // A non-integer id is no id.
        let l = TableLayout::new(
            DbKind::Postgres,
            "recs",
            &[
                col("id", "uuid"),
                col("uniqueid", "text"),
                col("file", "text"),
            ],
        )
        .unwrap();
        assert_eq!(l.by(), "whole table");
    }
}
