//! The durable outbox: one SQLite file (WAL) holding the journal of open calls' records, every
//! completed call (the call store), one delivery row per call and sink, and rejected input.
//!
//! A source commits a [`Commit`] (records journaled, calls completed, lines rejected, its
//! assembler's small state) in one transaction, and only then acknowledges upstream. Delivery
//! workers read due rows ([`Outbox::due`]) and record each outcome. After a crash, the journal
//! rebuilds the open calls and the pending rows are delivered: nothing that was committed is lost.
//!
//! Each [`Outbox`] owns one connection; open one per thread (the source's writer, each sink's
//! worker, the web server). SQLite serialises the writers; `busy_timeout` makes them wait.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use call_assembler::feed::Restored;
use call_assembler::iso_timestamp;

use crate::Call;

/// An outbox operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// SQLite reported an error (disk full, locked for too long, corrupt file, ...).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A call could not be encoded as JSON.
    #[error("encoding a call: {0}")]
    Encode(#[from] serde_json::Error),
    /// A call's stored body could not be compressed.
    #[error(transparent)]
    Body(#[from] crate::body::BodyError),
}

pub use call_assembler::feed::{Commit, JournalEntry, RawInput, Reject, SourceRecord};

/// Everything one source commits at once: a feed's [`Commit`], under its earlier name.
pub type Batch = Commit;

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Calls newly stored.
    pub calls: usize,
    /// Calls and progress records already in the outbox under the same key (not stored
    /// again).
    pub duplicates: usize,
    /// Delivery rows created.
    pub deliveries: usize,
    /// Per remote sink, in the order the outbox was opened with: how many of this commit's
    /// calls it was given and how many it already had.
    pub sinks: Vec<SinkTally>,
}

/// What one commit (or a whole run, added up) gave one sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkTally {
    /// Calls queued for the sink: new calls, and stored calls it had no delivery of (a sink
    /// added since, such as a replay's new JSONL file).
    pub queued: u64,
    /// Stored calls it already had a delivery of (pending, delivered or dead): not queued twice.
    pub had: u64,
}

impl SinkTally {
    /// Adds `other` to this tally.
    pub fn add(&mut self, other: Self) {
        self.queued += other.queued;
        self.had += other.had;
    }
}

/// A delivery waiting for its sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The call's stable id.
    pub call_id: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the delivery row was created (ms since the epoch).
    pub created_ms: i64,
    /// When it became due (ms since the epoch): the creation time, or the time a retry was set
    /// for. [`Outbox::due`] returns deliveries in this order (then in arrival order), so a sink
    /// that must keep the order records a failed delivery's retry at this same time.
    pub next_ms: i64,
    /// The call's JSON.
    pub body: Vec<u8>,
    /// The delivery's arrival number (`deliveries.seq`): the call's row number in the call
    /// store (a progress record's in `updates`), which SQLite never reuses and which grows
    /// with every commit. The HTTP-CDR sink derives its record indexes from it.
    pub seq: i64,
}

/// Delivery counts of one sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// The sink's name.
    pub sink: String,
    /// Waiting (first try or retry).
    pub pending: u64,
    /// Delivered.
    pub delivered: u64,
    /// Given up on (dead letters).
    pub dead: u64,
    /// Creation time of the oldest pending delivery (ms since the epoch).
    pub oldest_pending_ms: Option<i64>,
}

/// A dead letter: a delivery given up on, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The call's stable id.
    pub call_id: String,
    /// The sink.
    pub sink: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was given up on (ms since the epoch).
    pub done_ms: Option<i64>,
}

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    call_key TEXT NOT NULL,
    line BLOB NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_key ON journal(source, call_key);
CREATE TABLE IF NOT EXISTS source_state (
    source TEXT PRIMARY KEY,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    site TEXT NOT NULL,
    call_id TEXT NOT NULL,
    start_time TEXT NOT NULL,
    end_time TEXT NOT NULL,
    direction TEXT NOT NULL,
    caller TEXT NOT NULL,
    called TEXT NOT NULL,
    answered INTEGER NOT NULL,
    complete INTEGER NOT NULL,
    duration INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    start_utc TEXT
);
CREATE INDEX IF NOT EXISTS calls_start ON calls(start_time);
CREATE INDEX IF NOT EXISTS calls_caller ON calls(caller);
CREATE INDEX IF NOT EXISTS calls_called ON calls(called);
CREATE TABLE IF NOT EXISTS deliveries (
    call_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    done_ms INTEGER,
    last_error TEXT,
    -- The call's seq: deliveries due together go out in arrival order, straight off the index.
    seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (call_id, sink)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    call_id TEXT NOT NULL,
    body BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inputs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS source_records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    session TEXT NOT NULL,
    idx INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (source, session, idx)
);
CREATE TABLE IF NOT EXISTS rejects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    -- The first bytes of the input (crate::rejects::REJECT_PREFIX), its whole length and hash.
    raw BLOB NOT NULL,
    raw_len INTEGER,
    raw_sha256 TEXT
);
";

/// A connection to the outbox database.
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    sinks: Vec<String>,
}

impl Outbox {
    /// Opens (creating if needed) the outbox at `path`. Every call committed through this handle
    /// gets one delivery row per name in `sinks` (the remote sinks; the store needs none, since
    /// the `calls` table *is* the store).
    pub fn open(path: &Path, sinks: &[String]) -> Result<Self, OutboxError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // A new file can give pages back to the file system after a prune (crate::retention);
        // on an existing one this does nothing until a VACUUM.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // The WAL file is cut back to this after a checkpoint instead of keeping its largest size.
        conn.pragma_update(None, "journal_size_limit", 4 << 20)?;
        // FULL: every commit point is fsynced, so an acknowledged batch survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        tune_reads(&conn)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS deliveries_due_seq ON deliveries(sink, state, next_ms, seq);",
        )?;
        Ok(Self {
            conn,
            sinks: sinks.to_vec(),
        })
    }

    /// Opens an existing outbox for reading only (the web page, the API): nothing is created or
    /// written, so it may run beside the writer. `sinks` are the configured sink names, listed by
    /// [`Outbox::counts`] even before they have rows. Fails if the file does not exist.
    pub fn open_read_only(path: &Path, sinks: &[String]) -> Result<Self, OutboxError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        tune_reads(&conn)?;
        Ok(Self {
            conn,
            sinks: sinks.to_vec(),
        })
    }

    /// The underlying connection, for read-only queries of the store.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Commits a batch in one transaction. A call whose id is already stored is not stored
    /// again, and a sink that has a delivery of it (pending, delivered or dead) gets no second
    /// one, so replaying input after a crash cannot deliver a call under a second id or twice
    /// from the outbox. A sink with no delivery of it gets one: a replay with a sink added since
    /// delivers the stored history to that sink ([`CommitReport::sinks`] counts both).
    pub fn commit(&mut self, batch: &Commit, now_ms: i64) -> Result<CommitReport, OutboxError> {
        let mut report = CommitReport {
            sinks: vec![SinkTally::default(); self.sinks.len()],
            ..CommitReport::default()
        };
        let tx = self.conn.transaction()?;
        {
            let mut add = tx.prepare_cached(
                "INSERT INTO journal (source, call_key, line, received_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for e in &batch.journal_add {
                add.execute(params![e.source, e.call_key, e.line, now_ms])?;
            }
            let mut remove =
                tx.prepare_cached("DELETE FROM journal WHERE source = ?1 AND call_key = ?2")?;
            for (source, key) in &batch.journal_remove {
                remove.execute(params![source, key])?;
            }
            let mut insert_call = tx.prepare_cached(
                "INSERT OR IGNORE INTO calls (id, source, site, call_id, start_time, end_time,
                 direction, caller, called, answered, complete, duration, body, created_ms,
                 start_utc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            let mut insert_delivery = tx.prepare_cached(
                "INSERT OR IGNORE INTO deliveries (call_id, sink, state, next_ms, created_ms, seq)
                 VALUES (?1, ?2, 'pending', ?3, ?3, ?4)",
            )?;
            let mut call_seq = tx.prepare_cached("SELECT seq FROM calls WHERE id = ?1")?;
            let mut update_seq = tx.prepare_cached("SELECT seq FROM updates WHERE key = ?1")?;
            for call in &batch.calls {
                let body = crate::body::encode(&serde_json::to_vec(call)?)?;
                let n = insert_call.execute(params![
                    call.id,
                    call.source.as_str(),
                    call.site.as_str(),
                    call.call_id.as_str(),
                    iso_timestamp(&call.start_time).as_str(),
                    iso_timestamp(&call.end_time).as_str(),
                    direction_str(call),
                    call.caller.as_str(),
                    call.called.as_str(),
                    call.answered,
                    call.complete,
                    call.duration,
                    body,
                    now_ms,
                    call.start_utc
                        .map(|t| iso_timestamp(&t.naive_utc()))
                        .as_deref(),
                ])?;
                let seq = if n == 0 {
                    report.duplicates += 1;
                    if self.sinks.is_empty() {
                        continue;
                    }
                    call_seq.query_row([&call.id], |r| r.get(0))?
                } else {
                    report.calls += 1;
                    tx.last_insert_rowid()
                };
                queue(
                    &mut insert_delivery,
                    &self.sinks,
                    &call.id,
                    seq,
                    now_ms,
                    &mut report,
                )?;
            }
            let mut insert_update = tx.prepare_cached(
                "INSERT OR IGNORE INTO updates (key, call_id, body, created_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for call in &batch.updates {
                let key = update_key(call);
                let body = crate::body::encode(&serde_json::to_vec(call)?)?;
                let seq = if insert_update.execute(params![key, call.id, body, now_ms])? == 0 {
                    report.duplicates += 1;
                    if self.sinks.is_empty() {
                        continue;
                    }
                    update_seq.query_row([&key], |r| r.get(0))?
                } else {
                    tx.last_insert_rowid()
                };
                queue(
                    &mut insert_delivery,
                    &self.sinks,
                    &key,
                    seq,
                    now_ms,
                    &mut report,
                )?;
            }
            let mut reject = tx.prepare_cached(
                "INSERT INTO rejects (source, received_ms, reason, raw, raw_len, raw_sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for r in &batch.rejects {
                let kept = crate::rejects::keep(&r.raw);
                let len = i64::try_from(kept.len).unwrap_or(i64::MAX);
                reject.execute(params![
                    r.source,
                    now_ms,
                    r.reason,
                    kept.prefix,
                    len,
                    kept.sha256
                ])?;
            }
            let mut input = tx.prepare_cached(
                "INSERT INTO inputs (source, received_ms, body) VALUES (?1, ?2, ?3)",
            )?;
            for i in &batch.inputs {
                input.execute(params![i.source, now_ms, i.body])?;
            }
            let mut record = tx.prepare_cached(
                "INSERT OR IGNORE INTO source_records (source, session, idx, received_ms, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in &batch.records {
                record.execute(params![r.source, r.session, r.index, now_ms, r.body])?;
            }
            for (source, state) in &batch.states {
                tx.execute(
                    "INSERT INTO source_state (source, state) VALUES (?1, ?2)
                     ON CONFLICT (source) DO UPDATE SET state = excluded.state",
                    params![source, state],
                )?;
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// The journal of `source`, oldest first: replay it to rebuild the open calls.
    pub fn journal(&self, source: &str) -> Result<Vec<JournalEntry>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare("SELECT call_key, line FROM journal WHERE source = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([source], |r| {
            Ok(JournalEntry {
                source: source.to_owned(),
                call_key: r.get(0)?,
                line: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The journal of `source` like [`Outbox::journal`], each entry with the time it was
    /// committed (ms since the epoch), so a source can replay it on its original time line.
    pub fn journal_with_times(
        &self,
        source: &str,
    ) -> Result<Vec<(JournalEntry, i64)>, OutboxError> {
        let mut stmt = self.conn.prepare(
            "SELECT call_key, line, received_ms FROM journal WHERE source = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([source], |r| {
            Ok((
                JournalEntry {
                    source: source.to_owned(),
                    call_key: r.get(0)?,
                    line: r.get(1)?,
                },
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What was committed for `source`, to restore its feed after a restart: the journal with
    /// commit times and the states saved under `state_names` (a feed's `Feed::state_names`).
    pub fn restored(
        &self,
        source: &str,
        state_names: impl IntoIterator<Item = String>,
    ) -> Result<Restored, OutboxError> {
        let mut saved = Restored {
            journal: self.journal_with_times(source)?,
            ..Restored::default()
        };
        for name in state_names {
            if let Some(state) = self.state(&name)? {
                saved.states.insert(name, state);
            }
        }
        Ok(saved)
    }

    /// The state `source` saved with its last batch.
    pub fn state(&self, source: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        Ok(self
            .conn
            .query_row(
                "SELECT state FROM source_state WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Up to `limit` deliveries of `sink` due at `now_ms`, oldest first.
    pub fn due(&self, sink: &str, now_ms: i64, limit: usize) -> Result<Vec<Pending>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.call_id, d.attempts, d.created_ms, d.next_ms, COALESCE(c.body, u.body), d.seq
             FROM deliveries d
             LEFT JOIN calls c ON c.seq = d.seq AND c.id = d.call_id
             LEFT JOIN updates u ON u.seq = d.seq AND u.key = d.call_id
             WHERE d.sink = ?1 AND d.state = 'pending' AND d.next_ms <= ?2
               AND (c.body IS NOT NULL OR u.body IS NOT NULL)
             ORDER BY d.next_ms, d.seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![sink, now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(Pending {
                    call_id: r.get(0)?,
                    attempts: r.get(1)?,
                    created_ms: r.get(2)?,
                    next_ms: r.get(3)?,
                    body: crate::body::decode_column(r.get(4)?)?,
                    seq: r.get(5)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next pending delivery of `sink` is due, if any.
    pub fn next_due(&self, sink: &str) -> Result<Option<i64>, OutboxError> {
        Ok(self.conn.query_row(
            "SELECT MIN(next_ms) FROM deliveries WHERE sink = ?1 AND state = 'pending'",
            [sink],
            |r| r.get(0),
        )?)
    }

    /// Records the outcomes of deliveries in one transaction.
    pub fn record(
        &mut self,
        sink: &str,
        outcomes: &[(String, Outcome)],
        now_ms: i64,
    ) -> Result<(), OutboxError> {
        let tx = self.conn.transaction()?;
        {
            let mut delivered = tx.prepare_cached(
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, done_ms = ?3,
                 last_error = NULL WHERE call_id = ?1 AND sink = ?2 AND state = 'pending'",
            )?;
            let mut retry = tx.prepare_cached(
                "UPDATE deliveries SET attempts = attempts + ?4, next_ms = ?3, last_error = ?5
                 WHERE call_id = ?1 AND sink = ?2 AND state = 'pending'",
            )?;
            let mut dead = tx.prepare_cached(
                "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, done_ms = ?3,
                 last_error = ?4 WHERE call_id = ?1 AND sink = ?2 AND state = 'pending'",
            )?;
            for (call_id, outcome) in outcomes {
                match outcome {
                    Outcome::Delivered => {
                        delivered.execute(params![call_id, sink, now_ms])?;
                    }
                    Outcome::Retry {
                        at_ms,
                        error,
                        counted,
                    } => {
                        retry.execute(params![call_id, sink, at_ms, i64::from(*counted), error])?;
                    }
                    Outcome::Dead { error } => {
                        dead.execute(params![call_id, sink, now_ms, error])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Delivery counts per sink (the configured ones, plus any with rows).
    pub fn counts(&self) -> Result<Vec<SinkCounts>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sink,
                    SUM(state = 'pending'), SUM(state = 'delivered'), SUM(state = 'dead'),
                    MIN(CASE WHEN state = 'pending' THEN created_ms END)
             FROM deliveries GROUP BY sink ORDER BY sink",
        )?;
        let mut out: Vec<SinkCounts> = stmt
            .query_map([], |r| {
                Ok(SinkCounts {
                    sink: r.get(0)?,
                    pending: r.get::<_, i64>(1)?.try_into().unwrap_or_default(),
                    delivered: r.get::<_, i64>(2)?.try_into().unwrap_or_default(),
                    dead: r.get::<_, i64>(3)?.try_into().unwrap_or_default(),
                    oldest_pending_ms: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        for s in &self.sinks {
            if !out.iter().any(|c| &c.sink == s) {
                out.push(SinkCounts {
                    sink: s.clone(),
                    ..SinkCounts::default()
                });
            }
        }
        out.sort_by(|a, b| a.sink.cmp(&b.sink));
        Ok(out)
    }

    /// The most recent dead letters, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT call_id, sink, attempts, last_error, done_ms FROM deliveries
             WHERE state = 'dead' ORDER BY done_ms DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(DeadLetter {
                call_id: r.get(0)?,
                sink: r.get(1)?,
                attempts: r.get(2)?,
                last_error: r.get(3)?,
                done_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Page `page` (from 1) of the kept numbered records, `per_page` a page, newest first.
    pub fn source_records(&self, page: u64, per_page: u64) -> Result<Vec<Vec<u8>>, OutboxError> {
        let offset = page.saturating_sub(1).saturating_mul(per_page);
        let mut stmt = self.conn.prepare_cached(
            "SELECT body FROM source_records ORDER BY seq DESC LIMIT ?1 OFFSET ?2",
        )?;
        let rows = stmt.query_map(
            params![
                i64::try_from(per_page).unwrap_or(i64::MAX),
                i64::try_from(offset).unwrap_or(i64::MAX)
            ],
            |r| r.get(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rejected inputs kept so far.
    pub fn reject_count(&self) -> Result<u64, OutboxError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM rejects", [], |r| r.get(0))?;
        Ok(n.try_into().unwrap_or_default())
    }

    /// Calls stored so far.
    pub fn call_count(&self) -> Result<u64, OutboxError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))?;
        Ok(n.try_into().unwrap_or_default())
    }
}

/// Pages of the database a connection keeps in its own cache (negative: KiB), and how much of
/// the file it reads through a memory map instead of a `pread` per page.
///
/// The call store's indexes on the id, the caller and the called number take keys in no order,
/// so each new call touches pages all over them: with SQLite's default 2 MB cache a backfill of
/// a few hundred thousand calls spent most of its time copying the same pages in from the
/// kernel again (BENCHMARKS.md, "Backfill"). The map is read-only (SQLite writes through the WAL)
/// and its pages are the kernel's page cache, shared by every connection.
const CACHE_KIB: i64 = 64 * 1024;
const MMAP_BYTES: i64 = 1 << 30;

fn tune_reads(conn: &Connection) -> Result<(), OutboxError> {
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    Ok(())
}

/// Queues the call (or progress record) `key`, stored as row `seq`, for each of `sinks` that has
/// no delivery of it yet, and counts what each sink got in `report`.
fn queue(
    insert_delivery: &mut rusqlite::CachedStatement<'_>,
    sinks: &[String],
    key: &str,
    seq: i64,
    now_ms: i64,
    report: &mut CommitReport,
) -> Result<(), OutboxError> {
    for (sink, tally) in sinks.iter().zip(report.sinks.iter_mut()) {
        if insert_delivery.execute(params![key, sink, now_ms, seq])? == 1 {
            tally.queued += 1;
            report.deliveries += 1;
        } else {
            tally.had += 1;
        }
    }
    Ok(())
}

/// Brings a database written by an earlier version up to date.
fn migrate(conn: &Connection) -> Result<(), OutboxError> {
    // Version 1: `deliveries.seq` (the call's arrival order), so that `due` reads its rows in
    // index order instead of sorting every pending row of a backlog on each round.
    let has_seq: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('deliveries') WHERE name = 'seq'")?
        .exists([])?;
    if !has_seq {
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE deliveries ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
             UPDATE deliveries SET seq = (SELECT seq FROM calls WHERE calls.id = deliveries.call_id);
             DROP INDEX IF EXISTS deliveries_due;
             COMMIT;",
        )?;
    }
    // Version 2: rejects kept truncated, with their length and hash.
    crate::rejects::migrate(conn)?;
    // `calls.start_utc` (the call's start in UTC, `YYYY-MM-DDTHH:MM:SS`; NULL for calls stored
    // before it), and the index of the UTC axis the hour chart reads (the local start where
    // there is no UTC one).
    let has_utc: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('calls') WHERE name = 'start_utc'")?
        .exists([])?;
    if !has_utc {
        conn.execute_batch("ALTER TABLE calls ADD COLUMN start_utc TEXT")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS calls_start_axis ON calls(COALESCE(start_utc, start_time))",
    )?;
    Ok(())
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sink took the call.
    Delivered,
    /// Try again at `at_ms`.
    Retry {
        /// When (ms since the epoch).
        at_ms: i64,
        /// What went wrong.
        error: String,
        /// Whether this counts as an attempt (a sink that was paused or unreachable before the
        /// call was even sent does not use up the call's attempts).
        counted: bool,
    },
    /// Give up and keep it as a dead letter.
    Dead {
        /// What went wrong.
        error: String,
    },
}

/// The delivery key of a progress record: the call's id, `#`, its sequence number (the call's
/// id alone for a record without one).
pub fn update_key(call: &Call) -> String {
    match &call.update {
        Some(u) => format!("{}#{}", call.id, u.sequence),
        None => call.id.clone(),
    }
}

fn direction_str(call: &Call) -> &'static str {
    match call.direction {
        call_assembler::CallDirection::Inbound => "inbound",
        call_assembler::CallDirection::Outbound => "outbound",
        call_assembler::CallDirection::Internal => "internal",
    }
}
