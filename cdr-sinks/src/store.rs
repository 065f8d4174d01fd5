//! Reading the call store: the queries behind the relay's web page and JSON API, over a
//! read-only [`Outbox`].
//!
//! The outbox's `calls` table *is* the call store, and its `deliveries` table says where each
//! call went. [`StoreReader`] answers what a reader of the store asks: a page of calls with
//! filters ([`StoreReader::list_calls`], [`StoreReader::list_bodies`]), one call with its
//! deliveries ([`StoreReader::call`]), the latest dead letters, calls per hour, the delivery
//! counts of every sink and the numbered records of a source. It never writes, so it may run
//! beside the relay's writer (the file is in WAL mode, so reading never blocks it).
//!
//! A database that does not exist yet, or that has no call store in it, reads as one with no
//! calls: a reader never creates the file.
//!
//! ```no_run
//! use cdr_sinks::store::{CallFilter, PageRequest, StoreReader};
//!
//! # fn main() -> Result<(), cdr_sinks::outbox::OutboxError> {
//! let store = StoreReader::open(std::path::Path::new("cdr-relay.db"))?;
//! let page = store.list_calls(&CallFilter::default(), PageRequest::new(1, 50))?;
//! for call in &page.items {
//!     println!("{} {} -> {}", call.start_time, call.caller, call.called);
//! }
//! # Ok(())
//! # }
//! ```

use std::path::Path;

use call_assembler::CallDirection;
use chrono::NaiveDateTime;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use crate::outbox::{Outbox, OutboxError, SinkCounts};

/// Which calls a listing covers; `None` filters nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Calls that started at or after this start-time prefix (`YYYY-MM-DDTHH:MM:SS` or a prefix
    /// of it, compared as text with the stored start, PBX local time).
    pub from: Option<String>,
    /// Calls whose start is at or before this prefix, inclusive of everything it covers (`to =
    /// 2018-01-05` takes that whole day).
    pub to: Option<String>,
    /// Calls whose caller or called number contains this text.
    pub number: Option<String>,
    /// Calls of this direction.
    pub direction: Option<CallDirection>,
    /// Complete (`true`) or incomplete (`false`) calls.
    pub complete: Option<bool>,
    /// Calls of this site (exactly; `nats-relay`'s store holds every site of a fleet).
    pub site: Option<String>,
    /// Calls of this source kind (`smdr`, `ami`, `cms`, `dialler`).
    pub source: Option<String>,
}

/// One page of a listing: page `number` (from 1) of `per_page` items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// The page, from 1 (0 reads as 1).
    pub number: u64,
    /// Items a page.
    pub per_page: u64,
}

impl PageRequest {
    /// Page `number` (from 1) of `per_page` items.
    pub fn new(number: u64, per_page: u64) -> Self {
        Self { number, per_page }
    }

    fn offset(self) -> u64 {
        self.number.saturating_sub(1).saturating_mul(self.per_page)
    }
}

/// A page of a listing and how many items match in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// How many items match the filter, over every page.
    pub total: u64,
    /// The items of the page asked for, newest first.
    pub items: Vec<T>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Self {
            total: 0,
            items: Vec::new(),
        }
    }
}

/// A stored call's columns, with its deliveries (the call list of the web page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRow {
    /// The call's stable id.
    pub id: String,
    /// Its start, `YYYY-MM-DDTHH:MM:SS` (fractions allowed), PBX local time.
    pub start_time: String,
    /// `inbound`, `outbound` or `internal`.
    pub direction: String,
    /// The caller's number.
    pub caller: String,
    /// The called number.
    pub called: String,
    /// Connected seconds.
    pub duration: i64,
    /// Whether it was answered.
    pub answered: bool,
    /// Whether its final record was seen.
    pub complete: bool,
    /// Its deliveries, by sink name.
    pub deliveries: Vec<Delivery>,
}

/// A stored call's id and JSON, as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallBody {
    /// The call's stable id.
    pub id: String,
    /// The call's JSON.
    pub body: Vec<u8>,
}

/// One stored call: its JSON and its deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCall {
    /// The call's JSON, as committed.
    pub body: Vec<u8>,
    /// Its deliveries, by sink name.
    pub deliveries: Vec<Delivery>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for its first try or a retry.
    Pending,
    /// The sink took the call.
    Delivered,
    /// Given up on (a dead letter).
    Dead,
}

impl DeliveryState {
    /// The state as the outbox stores it: `pending`, `delivered` or `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }
}

impl FromSql for DeliveryState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "dead" => Ok(Self::Dead),
            other => Err(FromSqlError::Other(
                format!("unknown delivery state {other:?}").into(),
            )),
        }
    }
}

/// One call's delivery to one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The sink's name.
    pub sink: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: i64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When it is (or was) due next (ms since the epoch).
    pub next_ms: i64,
    /// When it was queued (ms since the epoch).
    pub created_ms: i64,
    /// When it was delivered or given up on (ms since the epoch).
    pub done_ms: Option<i64>,
}

/// A dead letter with a few fields of its call (absent when the call is not in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRow {
    /// The call's stable id (a progress record's delivery key).
    pub call_id: String,
    /// The sink.
    pub sink: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was given up on (ms since the epoch).
    pub done_ms: Option<i64>,
    /// The call's start.
    pub start_time: Option<String>,
    /// The call's caller.
    pub caller: Option<String>,
    /// The call's called number.
    pub called: Option<String>,
}

/// Calls per hour of start time over 24 hours, on the UTC axis (so calls of PBXes in different
/// zones, as at a hub, fall in the hour they really happened; a call stored before the store
/// kept UTC starts counts at its local start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourlyCalls {
    /// The first of the 24 hours (UTC).
    pub first: NaiveDateTime,
    /// Answered and not answered calls in each hour, from `first` on.
    pub counts: [(u64, u64); 24],
}

/// The time axis of [`HourlyCalls`]: a call's start in UTC, or its local start for a call
/// stored before the store kept UTC starts (the expression of the `calls_start_axis` index).
const AXIS: &str = "COALESCE(start_utc, start_time)";

/// The `strftime` form of an hour as the store's start times begin (`YYYY-MM-DDTHH`).
const HOUR_KEY: &str = "%Y-%m-%dT%H";

/// The hour a store time (`YYYY-MM-DDTHH:MM:SS`, or just its first 13 characters) falls in.
pub fn hour_of(time: &str) -> Option<NaiveDateTime> {
    let hour = time.get(..13)?;
    NaiveDateTime::parse_from_str(&format!("{hour}:00:00"), "%Y-%m-%dT%H:%M:%S").ok()
}

/// The delivery counts of every sink in `sinks` and every sink with rows, sorted by name (as
/// [`Outbox::counts`]); every sink of `sinks` with nothing when the database does not exist.
pub fn sink_counts(path: &Path, sinks: &[String]) -> Result<Vec<SinkCounts>, OutboxError> {
    if !path.exists() {
        let mut counts: Vec<SinkCounts> = sinks
            .iter()
            .map(|sink| SinkCounts {
                sink: sink.clone(),
                ..SinkCounts::default()
            })
            .collect();
        counts.sort_by(|a, b| a.sink.cmp(&b.sink));
        return Ok(counts);
    }
    Outbox::open_read_only(path, sinks)?.counts()
}

/// Read-only queries of the call store.
#[derive(Debug)]
pub struct StoreReader {
    /// The outbox, when the file exists.
    outbox: Option<Outbox>,
    /// Whether it has the call store's tables (`calls` and `deliveries`).
    has_calls: bool,
}

impl StoreReader {
    /// Opens the outbox at `path` for reading only; a file that does not exist reads as a store
    /// with no calls (and is not created).
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        if !path.exists() {
            return Ok(Self {
                outbox: None,
                has_calls: false,
            });
        }
        Self::new(Outbox::open_read_only(path, &[])?)
    }

    /// Reads through `outbox` (opened with [`Outbox::open_read_only`] or [`Outbox::open`]).
    pub fn new(outbox: Outbox) -> Result<Self, OutboxError> {
        let tables: i64 = outbox.connection().query_row(
            "SELECT COUNT(*) FROM sqlite_master
             WHERE type = 'table' AND name IN ('calls', 'deliveries')",
            [],
            |r| r.get(0),
        )?;
        Ok(Self {
            outbox: Some(outbox),
            has_calls: tables == 2,
        })
    }

    /// The connection, when there is a call store to read.
    fn calls_conn(&self) -> Option<&Connection> {
        self.outbox
            .as_ref()
            .filter(|_| self.has_calls)
            .map(Outbox::connection)
    }

    /// One page of the calls matching `filter`, newest first (in the order they were stored),
    /// each with its deliveries, and how many match in all (both from one snapshot).
    pub fn list_calls(
        &self,
        filter: &CallFilter,
        page: PageRequest,
    ) -> Result<Listing<CallRow>, OutboxError> {
        let Some(conn) = self.calls_conn() else {
            return Ok(Listing::default());
        };
        let tx = conn.unchecked_transaction()?;
        let (total, mut params, clause) = count(&tx, filter)?;
        params.push(SqlValue::Integer(to_i64(page.per_page)));
        params.push(SqlValue::Integer(to_i64(page.offset())));
        let mut stmt = tx.prepare(&format!(
            "SELECT id, start_time, direction, caller, called, duration, answered, complete
             FROM calls{clause} ORDER BY seq DESC LIMIT ? OFFSET ?"
        ))?;
        let mut items = stmt
            .query_map(params_from_iter(params.iter()), |r| {
                Ok(CallRow {
                    id: r.get(0)?,
                    start_time: r.get(1)?,
                    direction: r.get(2)?,
                    caller: r.get(3)?,
                    called: r.get(4)?,
                    duration: r.get(5)?,
                    answered: r.get(6)?,
                    complete: r.get(7)?,
                    deliveries: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for row in &mut items {
            row.deliveries = deliveries(&tx, &row.id)?;
        }
        Ok(Listing { total, items })
    }

    /// One page of the JSON of the calls matching `filter`, newest first, and how many match in
    /// all (both from one snapshot).
    pub fn list_bodies(
        &self,
        filter: &CallFilter,
        page: PageRequest,
    ) -> Result<Listing<CallBody>, OutboxError> {
        let Some(conn) = self.calls_conn() else {
            return Ok(Listing::default());
        };
        let tx = conn.unchecked_transaction()?;
        let (total, mut params, clause) = count(&tx, filter)?;
        params.push(SqlValue::Integer(to_i64(page.per_page)));
        params.push(SqlValue::Integer(to_i64(page.offset())));
        let mut stmt = tx.prepare(&format!(
            "SELECT id, body FROM calls{clause} ORDER BY seq DESC LIMIT ? OFFSET ?"
        ))?;
        let items = stmt
            .query_map(params_from_iter(params.iter()), |r| {
                Ok(CallBody {
                    id: r.get(0)?,
                    body: crate::body::decode_column(r.get(1)?)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Listing { total, items })
    }

    /// The call stored under `id`, with its deliveries; `None` when there is none.
    pub fn call(&self, id: &str) -> Result<Option<StoredCall>, OutboxError> {
        let Some(conn) = self.calls_conn() else {
            return Ok(None);
        };
        let tx = conn.unchecked_transaction()?;
        let body: Option<Vec<u8>> = tx
            .query_row("SELECT body FROM calls WHERE id = ?1", [id], |r| {
                crate::body::decode_column(r.get(0)?)
            })
            .optional()?;
        match body {
            Some(body) => Ok(Some(StoredCall {
                body,
                deliveries: deliveries(&tx, id)?,
            })),
            None => Ok(None),
        }
    }

    /// The latest `limit` dead letters, newest first (as [`Outbox::dead_letters`], plus a few
    /// of the call's fields).
    pub fn dead_letters(&self, limit: u64) -> Result<Vec<DeadLetterRow>, OutboxError> {
        let Some(conn) = self.calls_conn() else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare(
            "SELECT d.call_id, d.sink, d.attempts, d.last_error, d.done_ms,
                    c.start_time, c.caller, c.called
             FROM deliveries d LEFT JOIN calls c ON c.id = d.call_id
             WHERE d.state = 'dead' ORDER BY d.done_ms DESC, c.seq DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([to_i64(limit)], |r| {
                Ok(DeadLetterRow {
                    call_id: r.get(0)?,
                    sink: r.get(1)?,
                    attempts: r.get(2)?,
                    last_error: r.get(3)?,
                    done_ms: r.get(4)?,
                    start_time: r.get(5)?,
                    caller: r.get(6)?,
                    called: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Calls per hour of start time (UTC: [`Call::start_utc`](call_assembler::Call::start_utc)),
    /// answered and not, over the 24 hours up to (and including) the hour of the latest start
    /// among the calls matching `filter`; `None` when none match
    /// (or the latest start is not a time).
    ///
    /// Anchored on the matching calls rather than on the clock, so a store of old calls (a
    /// replayed capture) and a filtered list (`to=2018-01-05`) still show their busiest day.
    pub fn calls_per_hour(&self, filter: &CallFilter) -> Result<Option<HourlyCalls>, OutboxError> {
        let Some(conn) = self.calls_conn() else {
            return Ok(None);
        };
        let tx = conn.unchecked_transaction()?;
        let (clause, mut params) = where_clause(filter);
        let latest: Option<String> = tx.query_row(
            &format!("SELECT MAX({AXIS}) FROM calls{clause}"),
            params_from_iter(params.iter()),
            |r| r.get(0),
        )?;
        let Some(last) = latest.as_deref().and_then(hour_of) else {
            return Ok(None);
        };
        let first = last - chrono::TimeDelta::hours(23);
        let end = last + chrono::TimeDelta::hours(1);
        params.push(SqlValue::Text(first.format(HOUR_KEY).to_string()));
        params.push(SqlValue::Text(end.format(HOUR_KEY).to_string()));
        let and = if clause.is_empty() { " WHERE" } else { " AND" };
        let mut stmt = tx.prepare(&format!(
            "SELECT substr({AXIS}, 1, 13), SUM(answered != 0), SUM(answered = 0)
             FROM calls{clause}{and} {AXIS} >= ? AND {AXIS} < ? GROUP BY 1"
        ))?;
        let mut hours = HourlyCalls {
            first,
            counts: [(0, 0); 24],
        };
        let rows = stmt.query_map(params_from_iter(params.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (key, answered, unanswered) = row?;
            let Some(at) = hour_of(&key) else { continue };
            let slot = usize::try_from((at - first).num_hours()).ok();
            if let Some(c) = slot.and_then(|i| hours.counts.get_mut(i)) {
                *c = (
                    u64::try_from(answered).unwrap_or_default(),
                    u64::try_from(unanswered).unwrap_or_default(),
                );
            }
        }
        Ok(Some(hours))
    }

    /// Pending, delivered and dead deliveries of every sink with rows, by sink name (the
    /// whole store, whatever the filter of a listing), as [`Outbox::counts`]: with the sinks
    /// the outbox was opened with too, none for [`StoreReader::open`].
    pub fn delivery_counts(&self) -> Result<Vec<SinkCounts>, OutboxError> {
        match (&self.outbox, self.has_calls) {
            (Some(outbox), true) => outbox.counts(),
            _ => Ok(Vec::new()),
        }
    }

    /// Page `page` (from 1) of a source's numbered records, `per_page` a page, newest first
    /// (see [`Outbox::source_records`]); nothing when the database does not exist or was
    /// written before records were kept.
    pub fn records_page(&self, page: u64, per_page: u64) -> Result<Vec<Vec<u8>>, OutboxError> {
        let Some(outbox) = &self.outbox else {
            return Ok(Vec::new());
        };
        match outbox.source_records(page, per_page) {
            Ok(rows) => Ok(rows),
            Err(e) if e.to_string().contains("no such table") => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// How many calls match `filter`, with the `WHERE` clause and its parameters.
fn count(conn: &Connection, filter: &CallFilter) -> rusqlite::Result<(u64, Vec<SqlValue>, String)> {
    let (clause, params) = where_clause(filter);
    let total: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM calls{clause}"),
        params_from_iter(params.iter()),
        |r| r.get(0),
    )?;
    Ok((u64::try_from(total).unwrap_or_default(), params, clause))
}

/// The `WHERE` clause of `filter` (empty when nothing is filtered) and its parameters.
fn where_clause(filter: &CallFilter) -> (String, Vec<SqlValue>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    if let Some(from) = &filter.from {
        clauses.push("start_time >= ?");
        params.push(SqlValue::Text(from.clone()));
    }
    if let Some(to) = &filter.to {
        // Every stored start with this prefix sorts below `to` followed by DEL (0x7f), since
        // start times are printable ASCII: an inclusive prefix compare that uses the index.
        clauses.push("start_time <= ?");
        params.push(SqlValue::Text(format!("{to}\u{7f}")));
    }
    if let Some(number) = &filter.number {
        clauses.push("(instr(caller, ?) > 0 OR instr(called, ?) > 0)");
        params.push(SqlValue::Text(number.clone()));
        params.push(SqlValue::Text(number.clone()));
    }
    if let Some(direction) = filter.direction {
        clauses.push("direction = ?");
        params.push(SqlValue::Text(direction_str(direction).to_owned()));
    }
    if let Some(complete) = filter.complete {
        clauses.push("complete = ?");
        params.push(SqlValue::Integer(i64::from(complete)));
    }
    if let Some(site) = &filter.site {
        clauses.push("site = ?");
        params.push(SqlValue::Text(site.clone()));
    }
    if let Some(source) = &filter.source {
        clauses.push("source = ?");
        params.push(SqlValue::Text(source.clone()));
    }
    if clauses.is_empty() {
        (String::new(), params)
    } else {
        (format!(" WHERE {}", clauses.join(" AND ")), params)
    }
}

/// The direction as the `calls` table stores it.
fn direction_str(direction: CallDirection) -> &'static str {
    match direction {
        CallDirection::Inbound => "inbound",
        CallDirection::Outbound => "outbound",
        CallDirection::Internal => "internal",
    }
}

/// A call's deliveries, by sink name.
fn deliveries(conn: &Connection, call_id: &str) -> rusqlite::Result<Vec<Delivery>> {
    let mut stmt = conn.prepare_cached(
        "SELECT sink, state, attempts, last_error, next_ms, created_ms, done_ms
         FROM deliveries WHERE call_id = ?1 ORDER BY sink",
    )?;
    stmt.query_map([call_id], |r| {
        Ok(Delivery {
            sink: r.get(0)?,
            state: r.get(1)?,
            attempts: r.get(2)?,
            last_error: r.get(3)?,
            next_ms: r.get(4)?,
            created_ms: r.get(5)?,
            done_ms: r.get(6)?,
        })
    })?
    .collect()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
