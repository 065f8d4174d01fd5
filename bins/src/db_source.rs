//! The database source (`ami-relay` with `CEL_MODE=db`): reads Asterisk's `cel` and `cdr` tables
//! in PostgreSQL or MySQL/MariaDB (cel_pgsql, cdr_pgsql, cdr_mysql, or the ODBC backends) and
//! hands their rows to the CEL feed ([`call_assembler::feed::CelFeed`]) as the lines cel_custom
//! and cdr_csv would have written, with a watermark to commit alongside.
//!
//! * **Columns.** Each table's columns are looked up in `information_schema.columns` (the
//!   current schema on PostgreSQL, or `schema.table`; the connection's database on MySQL) and
//!   every column is read as text (cast in SQL), so any column types work. Times are formatted
//!   in SQL as `YYYY-MM-DD HH:MM:SS.ffffff` (CEL `eventtime`) or `YYYY-MM-DD HH:MM:SS` (CDR
//!   `start`, `answer`, `end`, as cdr_csv writes them), in the session's time zone for
//!   `timestamptz`; on MySQL the server's own time zone is kept (the client library would set
//!   UTC). Asterisk writes these columns in PBX local time (unless `usegmtime`), and the
//!   assembler takes a `YYYY-MM-DD` time as local, so `AMI_UTC_OFFSET` is not applied to them.
//! * **Lines.** A CEL row becomes one line in cel_custom's sample order (eventtype, eventtime,
//!   cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid, exten, context, channame, appname,
//!   appdata, amaflags, accountcode, uniqueid, linkedid, peer, userfield, userdeftype,
//!   eventextra: the table's `extra` column); a CDR row one line in cdr_csv's 21-column order
//!   (accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata, start,
//!   answer, end, duration, billsec, disposition, amaflags, uniqueid, userfield, peeraccount,
//!   linkedid, sequence; `calldate` stands in for a missing `start`, and a numeric `amaflags`
//!   is written as cdr_csv's word, `3` = `DOCUMENTATION`). A column the table lacks (or a NULL)
//!   is an empty field. Every field is quoted as Asterisk does (in double quotes, `"` doubled,
//!   [`call_assembler::csv::write_record`]); a line break inside a value stays inside its
//!   quotes, and the feed reads whole records.
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
//!   the row's line) of the rows inside that window are part of the watermark, so a row
//!   committed late with an earlier time is still shipped, exactly once, when it is no older
//!   than the window. Rows with no time are never read.
//! * **Commit.** Each batch of lines carries its table's watermark as a state
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
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use sqlx::Connection as _;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{CelDbSource, DbKind, DbStart, DbTls};
use crate::source::SourceEvent;
use call_assembler::feed::{CelFeed, CelInput, CsvFile};

/// How long a gap in the ids must stay before reading moves past it.
pub const GAP_WAIT: Duration = Duration::from_secs(5);

/// The longest pause between attempts to reach the database.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

const MIN_BACKOFF: Duration = Duration::from_millis(500);

/// Time allowed to connect.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for one query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

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
/// (a value's line breaks stay inside its quotes: the feed reads whole records).
pub fn csv_line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = String::new();
    call_assembler::csv::write_record(&mut line, fields);
    line
}

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

/// A field of the line: its name and the columns that may hold it, first found wins.
struct Field {
    columns: &'static [&'static str],
    format: Format,
}

const fn text(columns: &'static [&'static str]) -> Field {
    Field {
        columns,
        format: Format::Text,
    }
}

/// cel_custom's sample mapping, in order.
const CEL_FIELDS: [Field; 20] = [
    text(&["eventtype"]),
    Field {
        columns: &["eventtime"],
        format: Format::Micros,
    },
    text(&["cid_name"]),
    text(&["cid_num"]),
    text(&["cid_ani"]),
    text(&["cid_rdnis"]),
    text(&["cid_dnid"]),
    text(&["exten"]),
    text(&["context"]),
    text(&["channame"]),
    text(&["appname"]),
    text(&["appdata"]),
    text(&["amaflags"]),
    text(&["accountcode"]),
    text(&["uniqueid"]),
    text(&["linkedid"]),
    text(&["peer"]),
    text(&["userfield"]),
    text(&["userdeftype"]),
    text(&["extra", "eventextra"]),
];

/// cdr_csv's columns with `loguniqueid`, `loguserfield` and `newcdrcolumns`, in order.
const CDR_FIELDS: [Field; 21] = [
    text(&["accountcode"]),
    text(&["src"]),
    text(&["dst"]),
    text(&["dcontext"]),
    text(&["clid"]),
    text(&["channel"]),
    text(&["dstchannel"]),
    text(&["lastapp"]),
    text(&["lastdata"]),
    Field {
        columns: &["start", "calldate"],
        format: Format::Seconds,
    },
    Field {
        columns: &["answer"],
        format: Format::Seconds,
    },
    Field {
        columns: &["end"],
        format: Format::Seconds,
    },
    text(&["duration"]),
    text(&["billsec"]),
    text(&["disposition"]),
    text(&["amaflags"]),
    text(&["uniqueid"]),
    text(&["userfield"]),
    text(&["peeraccount"]),
    text(&["linkedid"]),
    text(&["sequence"]),
];

/// The index of `amaflags` in [`CDR_FIELDS`].
const CDR_AMAFLAGS: usize = 15;

/// cdr_csv's word for a numeric AMA flag.
fn amaflags_word(value: &str) -> Option<&'static str> {
    match value.trim() {
        "1" => Some("OMIT"),
        "2" => Some("BILLING"),
        "3" => Some("DOCUMENTATION"),
        _ => None,
    }
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

/// How a table is read, worked out from its columns: the SQL is built here, with nothing but
/// the column names from `information_schema` and placeholders in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    kind: DbKind,
    which: CsvFile,
    /// The quoted table name.
    table: String,
    /// The select expression of each field of the line (`None`: the table lacks it).
    fields: Vec<Option<String>>,
    /// The `id` column, quoted, when the table is read by id.
    id: Option<String>,
    /// The time column: quoted, its select expression (microseconds), and the SQL its
    /// placeholder is compared through.
    time: Option<TimeColumn>,
    /// Extra ORDER BY columns after the time (uniqueid, sequence), quoted.
    tiebreak: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TimeColumn {
    quoted: String,
    select: String,
    /// The type a placeholder compared with it is cast to (PostgreSQL's time types; MySQL
    /// converts by itself).
    cast: Option<String>,
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

impl Layout {
    /// How to read the table `name` holding `which` rows, from its columns; `None` when it has
    /// neither an integer `id` nor a time column to keep a watermark by.
    pub fn new(kind: DbKind, which: CsvFile, name: &str, columns: &[Column]) -> Option<Self> {
        let find = |n: &str| columns.iter().find(|c| c.name.eq_ignore_ascii_case(n));
        let spec: &[Field] = match which {
            CsvFile::Cel => &CEL_FIELDS,
            CsvFile::Cdr => &CDR_FIELDS,
        };
        let fields = spec
            .iter()
            .map(|f| {
                f.columns
                    .iter()
                    .find_map(|n| find(n))
                    .map(|c| select_expr(kind, c, f.format))
            })
            .collect();
        let id = find("id")
            .filter(|c| c.is_integer())
            .map(|c| quote_ident(kind, &c.name));
        let time_names: &[&str] = match which {
            CsvFile::Cel => &["eventtime"],
            CsvFile::Cdr => &["end", "calldate", "start"],
        };
        let time = time_names.iter().find_map(|n| find(n)).map(|c| {
            let quoted = quote_ident(kind, &c.name);
            TimeColumn {
                // Compared as text when it is not a time type.
                quoted: if c.is_time() || kind == DbKind::MySql {
                    quoted
                } else {
                    format!("CAST({quoted} AS text)")
                },
                select: select_expr(kind, c, Format::Micros),
                cast: (kind == DbKind::Postgres && c.is_time()).then(|| c.data_type.clone()),
            }
        });
        if id.is_none() && time.is_none() {
            return None;
        }
        let tiebreak = ["uniqueid", "sequence"]
            .iter()
            .filter_map(|n| find(n))
            .map(|c| quote_ident(kind, &c.name))
            .collect();
        Some(Self {
            kind,
            which,
            table: quote_table(kind, name),
            fields,
            id,
            time,
            tiebreak,
        })
    }

    /// Whether the table is read by id.
    pub fn by_id(&self) -> bool {
        self.id.is_some()
    }

    /// Placeholder `n` for a value compared with the time column.
    fn placeholder_time(&self, n: usize) -> String {
        match self.time.as_ref().and_then(|t| t.cast.as_ref()) {
            Some(ty) => format!("CAST({} AS {ty})", ph(self.kind, n)),
            None => ph(self.kind, n),
        }
    }

    /// `lead` and the fields' expressions, each named `c0`, `c1`, ... so that ORDER BY a column
    /// name means the column, not an output of the same name (a text cast of `id` would
    /// order `10` before `2`).
    fn select_list(&self, lead: &str) -> String {
        std::iter::once(lead)
            .chain(self.fields.iter().flatten().map(String::as_str))
            .enumerate()
            .map(|(i, e)| format!("{e} AS c{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Rows after an id: `(id, fields...)`, in id order; params: after, [until], limit.
    fn id_page_sql(&self, until: bool) -> Option<String> {
        let id = self.id.as_ref()?;
        let k = self.kind;
        let lead = match k {
            DbKind::Postgres => format!("CAST({id} AS text)"),
            DbKind::MySql => format!("CAST({id} AS CHAR)"),
        };
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {id} > {}",
            self.select_list(&lead),
            self.table,
            ph(k, 1)
        );
        let mut n = 2;
        if until {
            sql.push_str(&format!(" AND {id} <= {}", ph(k, n)));
            n += 1;
        }
        sql.push_str(&format!(" ORDER BY {id} LIMIT {}", ph(k, n)));
        Some(sql)
    }

    /// Rows from a time: `(time, fields...)`, in time order; params: [from], [until], limit,
    /// offset.
    fn time_page_sql(&self, from: bool, until: bool) -> Option<String> {
        let t = self.time.as_ref()?;
        let k = self.kind;
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {} IS NOT NULL",
            self.select_list(&t.select),
            self.table,
            t.quoted
        );
        let mut n = 1;
        if from {
            sql.push_str(&format!(
                " AND {} >= {}",
                t.quoted,
                self.placeholder_time(n)
            ));
            n += 1;
        }
        if until {
            sql.push_str(&format!(
                " AND {} <= {}",
                t.quoted,
                self.placeholder_time(n)
            ));
            n += 1;
        }
        let mut order = vec![t.quoted.clone()];
        order.extend(self.tiebreak.iter().cloned());
        sql.push_str(&format!(
            " ORDER BY {} LIMIT {} OFFSET {}",
            order.join(", "),
            ph(k, n),
            ph(k, n + 1)
        ));
        Some(sql)
    }

    /// The newest id, as text.
    fn max_id_sql(&self) -> Option<String> {
        let id = self.id.as_ref()?;
        Some(match self.kind {
            DbKind::Postgres => format!("SELECT CAST(MAX({id}) AS text) FROM {}", self.table),
            DbKind::MySql => format!("SELECT CAST(MAX({id}) AS CHAR) FROM {}", self.table),
        })
    }

    /// The first id, as text.
    fn first_id_sql(&self) -> Option<String> {
        let id = self.id.as_ref()?;
        Some(match self.kind {
            DbKind::Postgres => format!("SELECT CAST(MIN({id}) AS text) FROM {}", self.table),
            DbKind::MySql => format!("SELECT CAST(MIN({id}) AS CHAR) FROM {}", self.table),
        })
    }

    /// The first id at or after a time (param 1), as text.
    fn first_id_from_sql(&self) -> Option<String> {
        let id = self.id.as_ref()?;
        let t = self.time.as_ref()?;
        let cast = match self.kind {
            DbKind::Postgres => "text",
            DbKind::MySql => "CHAR",
        };
        Some(format!(
            "SELECT CAST(MIN({id}) AS {cast}) FROM {} WHERE {} >= {}",
            self.table,
            t.quoted,
            self.placeholder_time(1)
        ))
    }

    /// The newest time, as the watermark's text.
    fn max_time_sql(&self) -> Option<String> {
        let t = self.time.as_ref()?;
        Some(format!(
            "SELECT {} FROM {} WHERE {} IS NOT NULL ORDER BY {} DESC LIMIT 1",
            t.select, self.table, t.quoted, t.quoted
        ))
    }

    /// The line of a row's fields (the row without its leading watermark column).
    fn line(&self, values: &[Option<String>]) -> String {
        let mut it = values.iter();
        let mut out: Vec<&str> = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let v = match f {
                Some(_) => it.next().and_then(Option::as_deref).unwrap_or(""),
                None => "",
            };
            out.push(v);
        }
        if self.which == CsvFile::Cdr
            && let Some(word) = out.get(CDR_AMAFLAGS).and_then(|v| amaflags_word(v))
            && let Some(slot) = out.get_mut(CDR_AMAFLAGS)
        {
            *slot = word;
        }
        csv_line(&out)
    }
}

/// What reading a page of ids decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdTake {
    /// How many of the page's rows to ship now (a prefix).
    pub take: usize,
    /// Reading stopped at a gap that has not stayed [`GAP_WAIT`] yet.
    pub blocked: bool,
    /// Gaps moved past, as (first missing id, last missing id).
    pub skipped: Vec<(i64, i64)>,
}

/// The id watermark with the gaps it is waiting on. Pure: time is an argument.
#[derive(Debug, Clone, Default)]
pub struct IdCursor {
    /// The last id shipped.
    pub last: i64,
    /// Rows that follow a gap, by id, with when they were first seen.
    gaps: BTreeMap<i64, Instant>,
}

impl IdCursor {
    /// A cursor after `last`.
    pub fn new(last: i64) -> Self {
        Self {
            last,
            gaps: BTreeMap::new(),
        }
    }

    /// Walks the ids of a page read after [`IdCursor::last`] (ascending) and moves past the
    /// rows to ship now: up to the first gap that has not stayed `wait` since the row after
    /// it was first seen.
    pub fn take(&mut self, now: Instant, ids: &[i64], wait: Duration) -> IdTake {
        let mut out = IdTake::default();
        for &id in ids {
            if id <= self.last {
                // Not after the watermark (cannot happen with a key column): shipped already.
                out.take += 1;
                continue;
            }
            let expected = self.last.saturating_add(1);
            if id > expected {
                let since = *self.gaps.entry(id).or_insert(now);
                if now.saturating_duration_since(since) < wait {
                    out.blocked = true;
                    break;
                }
                out.skipped.push((expected, id - 1));
            }
            self.last = id;
            out.take += 1;
        }
        let last = self.last;
        self.gaps.retain(|id, _| *id > last);
        out
    }

    /// Whether a gap is being waited on.
    pub fn is_waiting(&self) -> bool {
        !self.gaps.is_empty()
    }
}

/// Parses a watermark time.
fn parse_time(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()
}

fn format_time(t: NaiveDateTime) -> String {
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

/// The position inside one read of a time-ordered table, between pages.
#[derive(Debug, Clone, Default)]
struct Pass {
    /// Rows from this time...
    cursor: Option<String>,
    /// ...after skipping this many (those at exactly `cursor` already read in this pass).
    offset: i64,
}

/// The time watermark with what is needed to read it.
#[derive(Debug, Clone, Default)]
struct TimeCursor {
    max: Option<String>,
    floor: Option<String>,
    seen: BTreeMap<String, Vec<u64>>,
    seen_keys: HashSet<u64>,
    pass: Option<Pass>,
}

impl TimeCursor {
    fn from_mark(
        max: Option<String>,
        floor: Option<String>,
        seen: BTreeMap<String, Vec<u64>>,
    ) -> Self {
        let seen_keys = seen.values().flatten().copied().collect();
        Self {
            max,
            floor,
            seen,
            seen_keys,
            pass: None,
        }
    }

    fn mark(&self) -> Watermark {
        Watermark::Time {
            max: self.max.clone(),
            floor: self.floor.clone(),
            seen: self.seen.clone(),
        }
    }

    /// Records a row read at `time` with `key`; true when it was not seen before.
    fn see(&mut self, time: &str, key: u64) -> bool {
        if !self.seen_keys.insert(key) {
            return false;
        }
        self.seen.entry(time.to_owned()).or_default().push(key);
        if self
            .max
            .as_deref()
            .is_none_or(|m| compare_times(time, m).is_gt())
        {
            self.max = Some(time.to_owned());
        }
        true
    }

    /// Forgets the rows older than the window.
    fn prune(&mut self, lookback: Duration) {
        let Some(from) = read_from(self.max.as_deref(), None, lookback) else {
            return;
        };
        let old: Vec<String> = self
            .seen
            .keys()
            .filter(|t| compare_times(t, &from).is_lt())
            .cloned()
            .collect();
        for t in old {
            if let Some(keys) = self.seen.remove(&t) {
                for k in keys {
                    self.seen_keys.remove(&k);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Cursor {
    /// Not known yet (no saved watermark, or one that does not fit the table).
    Unset,
    Id(IdCursor),
    Time(TimeCursor),
}

/// Where `--once` stops.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Until {
    /// The table was empty.
    Nothing,
    Id(i64),
    Time(String),
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

/// A connection to one of the two kinds of server.
pub(crate) enum Conn {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

impl Conn {
    pub(crate) async fn connect(c: &CelDbSource) -> Result<Self, sqlx::Error> {
        match c.kind {
            DbKind::Postgres => {
                use sqlx::postgres::{PgConnectOptions, PgSslMode};
                let mut o = PgConnectOptions::new()
                    .host(&c.host)
                    .port(c.port)
                    .database(&c.database)
                    .application_name("cdr-relay")
                    .ssl_mode(match c.tls {
                        DbTls::Disable => PgSslMode::Disable,
                        DbTls::Prefer => PgSslMode::Prefer,
                        DbTls::Require => PgSslMode::Require,
                        DbTls::Verify => PgSslMode::VerifyFull,
                    });
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
                use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
                let mut o = MySqlConnectOptions::new()
                    .host(&c.host)
                    .port(c.port)
                    .database(&c.database)
                    // The server's own time zone: TIMESTAMP columns read as Asterisk wrote them.
                    .timezone(None::<String>)
                    .ssl_mode(match c.tls {
                        DbTls::Disable => MySqlSslMode::Disabled,
                        DbTls::Prefer => MySqlSslMode::Preferred,
                        DbTls::Require => MySqlSslMode::Required,
                        DbTls::Verify => MySqlSslMode::VerifyIdentity,
                    });
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

/// What one page of a table gave: its lines and the watermark after them, whether there is
/// more to read right away.
struct Page {
    lines: Vec<u8>,
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
            lines: Vec::new(),
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
                    page.lines
                        .extend_from_slice(layout.line(r.get(1..).unwrap_or_default()).as_bytes());
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
                    let line = layout.line(r.get(1..).unwrap_or_default());
                    if c.see(time, row_key(line.as_bytes())) && !self.silent {
                        page.lines.extend_from_slice(line.as_bytes());
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
    backoff: &mut Duration,
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
                *backoff = MIN_BACKOFF;
                more |= page.more;
                let mark = match page.mark {
                    Some(m) => Some(m),
                    None if t.announce => t.mark(),
                    None => None,
                };
                t.announce = false;
                if page.lines.is_empty() && mark.is_none() {
                    continue;
                }
                let input = CelInput {
                    file: t.which,
                    bytes: page.lines,
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
    let db = config.describe();
    let mut backoff = MIN_BACKOFF;
    loop {
        let attempt = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, Conn::connect(&config)) => r,
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
                    &mut backoff,
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
        tracing::warn!(%db, error = %why, retry_in_ms = backoff.as_millis() as u64, "database unavailable");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use call_assembler::CelRow;

    fn col(name: &str, data_type: &str) -> Column {
        Column {
            name: name.into(),
            data_type: data_type.into(),
        }
    }

    /// Asterisk's cel table (contrib/ast-db-manage), as information_schema shows it.
    fn cel_columns(int: &str, time: &str) -> Vec<Column> {
        let mut v = vec![col("id", int), col("eventtype", "character varying")];
        v.push(col("eventtime", time));
        for n in [
            "cid_name",
            "cid_num",
            "cid_ani",
            "cid_rdnis",
            "cid_dnid",
            "exten",
            "context",
            "channame",
            "appname",
            "appdata",
        ] {
            v.push(col(n, "character varying"));
        }
        v.push(col("amaflags", int));
        for n in [
            "accountcode",
            "peeraccount",
            "uniqueid",
            "linkedid",
            "userfield",
            "peer",
            "extra",
        ] {
            v.push(col(n, "character varying"));
        }
        v
    }

    #[test]
    fn fields_are_quoted_as_asterisk_does_and_one_row_stays_one_record() {
        let line = csv_line(&["a", "\"Alice\" <1001>", "", "x,y", "two\nlines\r"]);
        assert_eq!(
            line,
            "\"a\",\"\"\"Alice\"\" <1001>\",\"\",\"x,y\",\"two\nlines\r\"\n"
        );
        assert_eq!(
            call_assembler::csv::record_end(line.as_bytes()),
            Some(line.len())
        );
        let fields = call_assembler::csv::split_record(&line).unwrap();
        assert_eq!(fields, ["a", "\"Alice\" <1001>", "", "x,y", "two\nlines\r"]);
    }

    #[test]
    fn a_cel_row_becomes_a_cel_custom_line_the_assembler_reads() {
        let layout = Layout::new(
            DbKind::Postgres,
            CsvFile::Cel,
            "cel",
            &cel_columns("integer", "timestamp without time zone"),
        )
        .unwrap();
        assert!(layout.by_id());
        // The select list: eventtype, eventtime, ... in the order of the table's columns
        // found; cid fields, amaflags, extra as text; userdeftype missing.
        let mut values: Vec<Option<String>> = vec![
            Some("HANGUP".into()),
            Some("2012-04-24 23:30:13.624898".into()),
        ];
        values.extend((0..17).map(|i| Some(format!("v{i}"))));
        values[18] = Some("{\"hangupcause\":16,\"dialstatus\":\"ANSWER\"}".into());
        let line = layout.line(&values);
        let fields = call_assembler::csv::split_record(line.trim_end()).unwrap();
        assert_eq!(fields.len(), 20);
        assert_eq!(fields[18], "", "no userdeftype column");
        assert_eq!(fields[19], "{\"hangupcause\":16,\"dialstatus\":\"ANSWER\"}");
        let row = CelRow::parse_csv_line(line.trim_end()).unwrap();
        assert_eq!(row.eventtype, "HANGUP");
        assert_eq!(row.eventtime, "2012-04-24 23:30:13.624898");
        assert_eq!(row.uniqueid, "v12");
        assert_eq!(row.linkedid, "v13");
        assert_eq!(row.peer, "v14");
        assert_eq!(row.extra, fields[19]);
    }

    #[test]
    fn a_cdr_row_becomes_a_cdr_csv_line_with_missing_columns_empty() {
        // cdr_mysql's old layout: calldate, no answer/end, no linkedid/sequence.
        let columns: Vec<Column> = [
            ("calldate", "datetime"),
            ("clid", "varchar"),
            ("src", "varchar"),
            ("dst", "varchar"),
            ("dcontext", "varchar"),
            ("channel", "varchar"),
            ("dstchannel", "varchar"),
            ("lastapp", "varchar"),
            ("lastdata", "varchar"),
            ("duration", "int"),
            ("billsec", "int"),
            ("disposition", "varchar"),
            ("amaflags", "int"),
            ("accountcode", "varchar"),
            ("uniqueid", "varchar"),
            ("userfield", "varchar"),
        ]
        .iter()
        .map(|(n, t)| col(n, t))
        .collect();
        let layout = Layout::new(DbKind::MySql, CsvFile::Cdr, "cdr", &columns).unwrap();
        assert!(!layout.by_id());
        let sql = layout.time_page_sql(true, false).unwrap();
        assert!(
            sql.contains("DATE_FORMAT(`calldate`, '%Y-%m-%d %H:%i:%s')"),
            "{sql}"
        );
        assert!(
            sql.contains("WHERE `calldate` IS NOT NULL AND `calldate` >= ?"),
            "{sql}"
        );
        assert!(
            sql.ends_with("ORDER BY `calldate`, `uniqueid` LIMIT ? OFFSET ?"),
            "{sql}"
        );
        // Values in cdr_csv's order of the columns present.
        let values: Vec<Option<String>> = [
            "",
            "1001",
            "2001",
            "internal",
            "\"Alice\" <1001>",
            "SIP/a",
            "SIP/b",
            "Dial",
            "x",
            "2026-11-22 13:54:08",
            "5",
            "3",
            "ANSWERED",
            "3",
            "1.5",
            "",
        ]
        .iter()
        .map(|v| Some((*v).to_owned()))
        .collect();
        let line = layout.line(&values);
        let fields = call_assembler::csv::split_record(line.trim_end()).unwrap();
        assert_eq!(fields.len(), 21);
        assert_eq!(
            fields[9], "2026-11-22 13:54:08",
            "calldate stands for start"
        );
        assert_eq!(fields[10], "", "no answer column");
        assert_eq!(
            fields[15], "DOCUMENTATION",
            "the AMA flag as cdr_csv writes it"
        );
        assert_eq!(fields[16], "1.5");
        assert_eq!(fields[19], "", "no linkedid column");
    }

    #[test]
    fn identifiers_are_quoted_per_database_and_end_is_no_keyword() {
        let pg_cdr = [
            col("uniqueid", "character varying"),
            col("end", "timestamp without time zone"),
            col("sequence", "integer"),
        ];
        let pg = Layout::new(DbKind::Postgres, CsvFile::Cdr, "public.cdr", &pg_cdr).unwrap();
        let sql = pg.time_page_sql(true, true).unwrap();
        assert!(sql.contains("FROM \"public\".\"cdr\""), "{sql}");
        assert!(
            sql.contains(
                "\"end\" >= CAST($1 AS timestamp without time zone) AND \"end\" <= CAST($2 AS timestamp without time zone)"
            ),
            "{sql}"
        );
        assert!(
            sql.ends_with("ORDER BY \"end\", \"uniqueid\", \"sequence\" LIMIT $3 OFFSET $4"),
            "{sql}"
        );
        assert!(
            sql.contains("to_char(\"end\", 'YYYY-MM-DD HH24:MI:SS.US') AS c0"),
            "{sql}"
        );
        assert!(
            sql.contains("to_char(\"end\", 'YYYY-MM-DD HH24:MI:SS') AS c"),
            "{sql}"
        );
        assert!(sql.contains("CAST(\"sequence\" AS text) AS c"), "{sql}");
        assert_eq!(quote_ident(DbKind::MySql, "we`ird"), "`we``ird`");
        assert_eq!(quote_ident(DbKind::Postgres, "we\"ird"), "\"we\"\"ird\"");
        let my = Layout::new(
            DbKind::MySql,
            CsvFile::Cel,
            "cel",
            &cel_columns("int", "datetime"),
        )
        .unwrap();
        let sql = my.id_page_sql(true).unwrap();
        assert!(
            sql.starts_with("SELECT CAST(`id` AS CHAR) AS c0, CAST(`eventtype` AS CHAR) AS c1, DATE_FORMAT(`eventtime`, '%Y-%m-%d %H:%i:%s.%f') AS c2"),
            "{sql}"
        );
        assert!(
            sql.ends_with("FROM `cel` WHERE `id` > ? AND `id` <= ? ORDER BY `id` LIMIT ?"),
            "{sql}"
        );
        // No id and no time column: nothing to keep a watermark by.
        assert!(
            Layout::new(
                DbKind::MySql,
                CsvFile::Cel,
                "cel",
                &[col("eventtype", "varchar")]
            )
            .is_none()
        );
        // A non-integer id is no id.
        let uuid = [
            col("id", "uuid"),
            col("eventtime", "timestamp with time zone"),
        ];
        assert!(
            !Layout::new(DbKind::Postgres, CsvFile::Cel, "cel", &uuid)
                .unwrap()
                .by_id()
        );
    }

    #[test]
    fn a_gap_in_the_ids_is_waited_for_then_passed() {
        let t0 = Instant::now();
        let wait = GAP_WAIT;
        let mut c = IdCursor::new(10);
        // 11, 12, then 14: stops before the gap.
        let took = c.take(t0, &[11, 12, 14, 15], wait);
        assert_eq!((took.take, took.blocked, c.last), (2, true, 12));
        assert!(c.is_waiting());
        // Still there a second later: still waiting.
        let took = c.take(t0 + Duration::from_secs(1), &[14, 15], wait);
        assert_eq!((took.take, took.blocked, c.last), (0, true, 12));
        // 13 appears (committed late): everything goes, the gap is forgotten.
        let took = c.take(t0 + Duration::from_secs(2), &[13, 14, 15], wait);
        assert_eq!((took.take, took.blocked, c.last), (3, false, 15));
        assert!(!c.is_waiting());
        assert!(took.skipped.is_empty());
        // 16 never appears: 17 waits GAP_WAIT from when it was first seen, then goes.
        let t1 = t0 + Duration::from_secs(10);
        assert!(c.take(t1, &[17], wait).blocked);
        assert!(
            c.take(t1 + wait - Duration::from_millis(1), &[17], wait)
                .blocked
        );
        let took = c.take(t1 + wait, &[17, 19], wait);
        assert_eq!(took.skipped, vec![(16, 16)]);
        // 19 follows a new gap, first seen now.
        assert_eq!((took.take, took.blocked, c.last), (1, true, 17));
        let took = c.take(t1 + wait * 2, &[19], wait);
        assert_eq!((took.take, took.skipped, c.last), (1, vec![(18, 18)], 19));
        assert!(!c.is_waiting());
    }

    #[test]
    fn a_time_window_skips_rows_seen_and_forgets_old_ones() {
        let lookback = Duration::from_secs(60);
        assert_eq!(read_from(None, None, lookback), None);
        assert_eq!(
            read_from(Some("2026-11-22 13:54:08.5"), None, lookback).as_deref(),
            Some("2026-11-22 13:53:08.500000")
        );
        // Never before the floor (DB_BACKFILL_FROM).
        assert_eq!(
            read_from(
                Some("2026-11-22 13:54:08"),
                Some("2026-11-22 13:54:00.000000"),
                lookback
            )
            .as_deref(),
            Some("2026-11-22 13:54:00.000000")
        );
        let mut c = TimeCursor::default();
        assert!(c.see("2026-11-22 13:50:00.000000", 1));
        assert!(c.see("2026-11-22 13:54:08.000000", 2));
        assert!(!c.see("2026-11-22 13:54:08.000000", 2), "seen");
        // A row committed late, with an earlier time inside the window: new.
        assert!(c.see("2026-11-22 13:53:30.000000", 3));
        assert_eq!(c.max.as_deref(), Some("2026-11-22 13:54:08.000000"));
        c.prune(lookback);
        assert_eq!(c.seen.len(), 2, "the row of 13:50 is outside the window");
        let Watermark::Time { max, seen, .. } = c.mark() else {
            panic!("a time watermark");
        };
        let back = TimeCursor::from_mark(max, None, seen);
        assert!(!back.seen_keys.contains(&1) && back.seen_keys.contains(&3));
    }

    #[test]
    fn watermarks_are_saved_as_small_json() {
        let id = Watermark::Id { last: 42 };
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            r#"{"by":"id","last":42}"#
        );
        let time = Watermark::Time {
            max: Some("2026-11-22 13:54:08.000000".into()),
            floor: None,
            seen: BTreeMap::from([("2026-11-22 13:54:08.000000".into(), vec![u64::MAX])]),
        };
        let json = serde_json::to_vec(&time).unwrap();
        assert_eq!(serde_json::from_slice::<Watermark>(&json).unwrap(), time);
        assert_eq!(row_key(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(row_key(b"a\n"), row_key(b"b\n"));
    }
}
