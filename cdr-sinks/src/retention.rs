//! Retention: what the outbox forgets, so that a relay left running does not fill its disk.
//!
//! Two limits, each optional ([`RetentionPolicy`]):
//! * by age: calls (and progress records) stored more than `max_age` ago whose deliveries are
//!   all done, and the kept inputs, numbered source records and rejects received more than
//!   `max_age` ago; a dead letter is kept until it is itself `max_age` old (counted from when it
//!   was given up on), so an operator has that long to re-queue it;
//! * by size: while the database's used bytes ([`DbSize::used_bytes`]) are over `max_bytes`, the
//!   oldest rows of those tables go first, whatever their age (dead letters excepted).
//!
//! Never pruned: a call or progress record with a pending delivery, a dead letter younger than
//! `max_age` (all of them without an age limit), the open-call journal, the feeds' saved states
//! and anything else the relay needs to resume. Since undelivered calls are never dropped, the
//! size limit is a target: a backlog a sink has not taken yet is kept beyond it.
//!
//! Pruning runs in small transactions ([`PRUNE_BATCH`] rows at most each), oldest first, so that
//! the write lock is never held for long and a source's commits go on in between. Freed pages go
//! to SQLite's free list and are reused by later commits, so the file stops growing; a database
//! created by this version (`auto_vacuum = INCREMENTAL`) also gives them back to the file system
//! when the file is over the size limit. An older database keeps its size until it is vacuumed
//! once with the relay stopped (`sqlite3 cdr-relay.db 'PRAGMA auto_vacuum=INCREMENTAL; VACUUM;'`).

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::outbox::{Outbox, OutboxError};

/// Rows deleted per transaction at most.
pub const PRUNE_BATCH: usize = 500;

/// Free pages given back to the file system per transaction at most.
const VACUUM_PAGES: u64 = 1024;

/// What to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Forget what is older than this (`None`: no age limit).
    pub max_age: Option<Duration>,
    /// Keep the database's used bytes under this (`None`: no size limit).
    pub max_bytes: Option<u64>,
}

impl RetentionPolicy {
    /// Whether the policy prunes anything at all.
    pub fn is_active(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }
}

impl std::fmt::Display for RetentionPolicy {
    /// `30 days, 500 MB`; `forever, no size limit` when nothing is pruned.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.max_age {
            Some(age) if age.as_secs() % 86_400 == 0 => {
                write!(f, "{} days", age.as_secs() / 86_400)?
            }
            Some(age) => write!(f, "{} s", age.as_secs())?,
            None => f.write_str("forever")?,
        }
        match self.max_bytes {
            Some(b) if b % (1 << 20) == 0 => write!(f, ", {} MB", b >> 20),
            Some(b) => write!(f, ", {b} bytes"),
            None => f.write_str(", no size limit"),
        }
    }
}

/// The size of a database, from SQLite's own counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbSize {
    /// Bytes per page.
    pub page_size: u64,
    /// Pages in the file.
    pub pages: u64,
    /// Pages on the free list (in the file, free for reuse).
    pub free_pages: u64,
}

impl DbSize {
    /// Bytes holding data: `(pages - free_pages) * page_size`, what the size limit applies to.
    pub fn used_bytes(&self) -> u64 {
        self.pages
            .saturating_sub(self.free_pages)
            .saturating_mul(self.page_size)
    }

    /// Bytes of the main database file (`pages * page_size`; the WAL file is apart).
    pub fn file_bytes(&self) -> u64 {
        self.pages.saturating_mul(self.page_size)
    }
}

/// Rows pruned, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Stored calls (with their deliveries).
    pub calls: u64,
    /// Progress records (with their deliveries).
    pub updates: u64,
    /// Delivery rows (of the calls and progress records pruned).
    pub deliveries: u64,
    /// Kept raw inputs (posted bodies).
    pub inputs: u64,
    /// Numbered source records.
    pub source_records: u64,
    /// Rejected inputs.
    pub rejects: u64,
}

impl Pruned {
    /// Rows pruned in all.
    pub fn total(&self) -> u64 {
        self.calls
            + self.updates
            + self.deliveries
            + self.inputs
            + self.source_records
            + self.rejects
    }

    /// `(table, rows)` for each table, in a stable order (the metric's labels).
    pub fn by_table(&self) -> [(&'static str, u64); 6] {
        [
            ("calls", self.calls),
            ("updates", self.updates),
            ("deliveries", self.deliveries),
            ("inputs", self.inputs),
            ("source_records", self.source_records),
            ("rejects", self.rejects),
        ]
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Self) {
        self.calls += other.calls;
        self.updates += other.updates;
        self.deliveries += other.deliveries;
        self.inputs += other.inputs;
        self.source_records += other.source_records;
        self.rejects += other.rejects;
    }
}

/// A table pruned by the time its rows were received (`inputs`, `source_records`, `rejects`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plain {
    Inputs,
    SourceRecords,
    Rejects,
}

impl Plain {
    const ALL: [Self; 3] = [Self::Inputs, Self::SourceRecords, Self::Rejects];

    fn table(self) -> &'static str {
        match self {
            Self::Inputs => "inputs",
            Self::SourceRecords => "source_records",
            Self::Rejects => "rejects",
        }
    }

    fn count(self, n: u64) -> Pruned {
        match self {
            Self::Inputs => Pruned {
                inputs: n,
                ..Pruned::default()
            },
            Self::SourceRecords => Pruned {
                source_records: n,
                ..Pruned::default()
            },
            Self::Rejects => Pruned {
                rejects: n,
                ..Pruned::default()
            },
        }
    }
}

/// A table of delivered items (`calls`, `updates`): pruned only when no delivery is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivered {
    Calls,
    Updates,
}

impl Delivered {
    const ALL: [Self; 2] = [Self::Calls, Self::Updates];

    /// The table and the column the deliveries name it by.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Self::Calls => ("calls", "id"),
            Self::Updates => ("updates", "key"),
        }
    }

    /// The oldest rows of the table stored before `before_ms` with no pending delivery and no
    /// dead letter given up on at or after `dead_before_ms`, in arrival order.
    fn select(self) -> String {
        let (table, key) = self.table();
        format!(
            "SELECT t.seq, t.{key}, t.created_ms FROM {table} t
             WHERE t.seq < ?4 AND t.created_ms < ?1 AND NOT EXISTS (
                 SELECT 1 FROM deliveries d WHERE d.call_id = t.{key}
                 AND (d.state = 'pending'
                      OR (d.state = 'dead' AND COALESCE(d.done_ms, d.created_ms) >= ?2)))
             ORDER BY t.seq LIMIT ?3"
        )
    }
}

/// One of the pruned tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Plain(Plain),
    Delivered(Delivered),
}

/// The age cutoffs of one pass: rows stored before `before_ms` go, dead letters given up on
/// before `dead_before_ms` with them.
#[derive(Debug, Clone, Copy)]
struct Cutoff {
    before_ms: i64,
    dead_before_ms: i64,
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Outbox {
    /// The database's size now.
    pub fn db_size(&self) -> Result<DbSize, OutboxError> {
        db_size(self.connection())
    }

    /// Copies what it can of the WAL file into the database without waiting for anyone (a
    /// passive checkpoint): once all of it is copied, the next commit starts the WAL over and
    /// cuts the file back (`journal_size_limit`).
    pub fn checkpoint(&self) -> Result<(), OutboxError> {
        self.connection()
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Whether any delivery of `sinks` is pending (read off the due index, cheap).
    pub fn any_pending(&self, sinks: &[String]) -> Result<bool, OutboxError> {
        for sink in sinks {
            if self.next_due(sink)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// When the oldest stored call was stored (ms since the epoch), if any is.
    pub fn oldest_call_ms(&self) -> Result<Option<i64>, OutboxError> {
        Ok(self
            .connection()
            .query_row(
                "SELECT created_ms FROM calls ORDER BY seq LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Prunes what `policy` does not keep at `now_ms`: first by age, then the oldest rows while
    /// the database is over its size, then gives free pages back to the file system when the
    /// file is over the size limit and the database allows it. Runs in transactions of at most
    /// [`PRUNE_BATCH`] rows, so a source's commits go on in between.
    pub fn prune(&mut self, policy: &RetentionPolicy, now_ms: i64) -> Result<Pruned, OutboxError> {
        let dead_before_ms = match policy.max_age {
            Some(age) => now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)),
            None => i64::MIN,
        };
        let mut pruned = Pruned::default();
        if policy.max_age.is_some() {
            let cutoff = Cutoff {
                before_ms: dead_before_ms,
                dead_before_ms,
            };
            pruned.add(&self.prune_by_age(cutoff)?);
        }
        if let Some(max) = policy.max_bytes {
            let cutoff = Cutoff {
                before_ms: i64::MAX,
                dead_before_ms,
            };
            pruned.add(&self.prune_to_size(max, cutoff)?);
            self.give_back(max)?;
        }
        Ok(pruned)
    }

    /// Deletes every row older than the cutoff, a batch at a time.
    fn prune_by_age(&mut self, cutoff: Cutoff) -> Result<Pruned, OutboxError> {
        let mut pruned = Pruned::default();
        for table in Plain::ALL {
            loop {
                let n = delete_plain(self.connection(), table, cutoff.before_ms, None)?;
                pruned.add(&table.count(n));
                if n < to_u64(PRUNE_BATCH) {
                    break;
                }
            }
        }
        for table in Delivered::ALL {
            loop {
                let rows = prunable(self.connection(), table, cutoff, PRUNE_BATCH)?;
                if rows.is_empty() {
                    break;
                }
                pruned.add(&delete_delivered(self.connection(), table, &rows, cutoff)?);
                if rows.len() < PRUNE_BATCH {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    /// Deletes the oldest rows, a batch of the oldest table at a time, while the used bytes are
    /// over `max_bytes` and something can go.
    fn prune_to_size(&mut self, max_bytes: u64, cutoff: Cutoff) -> Result<Pruned, OutboxError> {
        let mut pruned = Pruned::default();
        while self.db_size()?.used_bytes() > max_bytes {
            let conn = self.connection();
            // The oldest prunable row of each table, oldest first.
            let mut firsts: Vec<(i64, Table)> = Vec::new();
            for table in Plain::ALL {
                let first: Option<i64> = conn
                    .query_row(
                        &format!(
                            "SELECT received_ms FROM {} ORDER BY seq LIMIT 1",
                            table.table()
                        ),
                        [],
                        |r| r.get(0),
                    )
                    .optional()?;
                firsts.extend(first.map(|t| (t, Table::Plain(table))));
            }
            for table in Delivered::ALL {
                let first = prunable(conn, table, cutoff, 1)?;
                firsts.extend(first.first().map(|r| (r.2, Table::Delivered(table))));
            }
            firsts.sort_by_key(|(t, _)| *t);
            // A batch of the oldest table, up to where another table's rows are older.
            let upto = firsts.get(1).map_or(i64::MAX, |(t, _)| *t);
            let step = match firsts.first() {
                None => break,
                Some((_, Table::Plain(table))) => {
                    table.count(delete_plain(conn, *table, i64::MAX, Some(upto))?)
                }
                Some((first, Table::Delivered(table))) => {
                    let mut rows = prunable(conn, *table, cutoff, PRUNE_BATCH)?;
                    rows.retain(|r| r.2 <= upto.max(*first));
                    delete_delivered(conn, *table, &rows, cutoff)?
                }
            };
            if step.total() == 0 {
                break;
            }
            pruned.add(&step);
        }
        Ok(pruned)
    }

    /// Gives free pages back to the file system while the file is over `max_bytes`, when the
    /// database was created with `auto_vacuum = INCREMENTAL`.
    fn give_back(&mut self, max_bytes: u64) -> Result<(), OutboxError> {
        let conn = self.connection();
        let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        if mode != 2 {
            return Ok(());
        }
        loop {
            let size = db_size(conn)?;
            if size.free_pages == 0 || size.file_bytes() <= max_bytes {
                return Ok(());
            }
            let pages = size.free_pages.min(VACUUM_PAGES);
            let tx = write(conn)?;
            {
                // The pragma frees one page per step: run it to its end.
                let mut stmt = tx.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
                let mut rows = stmt.query([])?;
                while rows.next()?.is_some() {}
            }
            tx.commit()?;
            if db_size(conn)?.free_pages >= size.free_pages {
                return Ok(());
            }
        }
    }
}

/// A transaction that takes the write lock at once (waiting for it up to the busy timeout): one
/// that read first and then wrote would fail at once if a commit came in between.
fn write(conn: &Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
}

/// The size of the database `conn` is open on.
pub(crate) fn db_size(conn: &Connection) -> Result<DbSize, OutboxError> {
    let get = |pragma: &str| -> rusqlite::Result<u64> {
        let n: i64 = conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or_default())
    };
    Ok(DbSize {
        page_size: get("page_size")?,
        pages: get("page_count")?,
        free_pages: get("freelist_count")?,
    })
}

/// The first `seq` of `table` from which on rows were stored at or after `before_ms` (by its
/// column `time`), found by bisection over the row numbers (rows are stored in time order), so
/// that an age pass reads a few rows of a table where nothing is old instead of all of them.
/// Rows before it are the candidates; `i64::MAX` for no limit.
fn seq_boundary(
    conn: &Connection,
    table: &str,
    time: &str,
    before_ms: i64,
) -> Result<i64, OutboxError> {
    if before_ms == i64::MAX {
        return Ok(i64::MAX);
    }
    let (first, last): (Option<i64>, Option<i64>) = conn.query_row(
        &format!("SELECT MIN(seq), MAX(seq) FROM {table}"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (Some(mut lo), Some(last)) = (first, last) else {
        return Ok(0);
    };
    let mut hi = last.saturating_add(1);
    let mut at = conn.prepare_cached(&format!(
        "SELECT {time} FROM {table} WHERE seq >= ?1 ORDER BY seq LIMIT 1"
    ))?;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let t: Option<i64> = at.query_row([mid], |r| r.get(0)).optional()?;
        if t.is_none_or(|t| t >= before_ms) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

/// Deletes up to [`PRUNE_BATCH`] of the oldest rows of `table` received before `before_ms` (and
/// at or before `upto_ms` when given) in one transaction; the rows deleted.
fn delete_plain(
    conn: &Connection,
    table: Plain,
    before_ms: i64,
    upto_ms: Option<i64>,
) -> Result<u64, OutboxError> {
    let before_ms = before_ms.min(upto_ms.map_or(i64::MAX, |t| t.saturating_add(1)));
    let end = seq_boundary(conn, table.table(), "received_ms", before_ms)?;
    let tx = write(conn)?;
    let n = tx.execute(
        &format!(
            "DELETE FROM {t} WHERE seq IN (
                 SELECT seq FROM {t} WHERE seq < ?1 AND received_ms < ?2
                 ORDER BY seq LIMIT ?3)",
            t = table.table()
        ),
        params![end, before_ms, to_i64(PRUNE_BATCH)],
    )?;
    tx.commit()?;
    Ok(to_u64(n))
}

/// Up to `limit` of the oldest prunable rows of `table`: (seq, key, created_ms).
fn prunable(
    conn: &Connection,
    table: Delivered,
    cutoff: Cutoff,
    limit: usize,
) -> Result<Vec<(i64, String, i64)>, OutboxError> {
    let end = seq_boundary(conn, table.table().0, "created_ms", cutoff.before_ms)?;
    let mut stmt = conn.prepare_cached(&table.select())?;
    let rows = stmt.query_map(
        params![cutoff.before_ms, cutoff.dead_before_ms, to_i64(limit), end],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes `rows` of `table` and their deliveries in one transaction, each only if it is still
/// prunable (a delivery may have been re-queued since it was read).
fn delete_delivered(
    conn: &Connection,
    table: Delivered,
    rows: &[(i64, String, i64)],
    cutoff: Cutoff,
) -> Result<Pruned, OutboxError> {
    let (name, _) = table.table();
    let mut pruned = Pruned::default();
    let tx = write(conn)?;
    {
        let mut still = tx.prepare_cached(
            "SELECT 1 FROM deliveries d WHERE d.call_id = ?1
             AND (d.state = 'pending'
                  OR (d.state = 'dead' AND COALESCE(d.done_ms, d.created_ms) >= ?2))",
        )?;
        let mut deliveries = tx.prepare_cached("DELETE FROM deliveries WHERE call_id = ?1")?;
        let mut row = tx.prepare_cached(&format!("DELETE FROM {name} WHERE seq = ?1"))?;
        for (seq, id, _) in rows {
            if still.exists(params![id, cutoff.dead_before_ms])? {
                continue;
            }
            pruned.deliveries += to_u64(deliveries.execute([id])?);
            let n = to_u64(row.execute([seq])?);
            match table {
                Delivered::Calls => pruned.calls += n,
                Delivered::Updates => pruned.updates += n,
            }
        }
    }
    tx.commit()?;
    Ok(pruned)
}
