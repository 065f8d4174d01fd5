//! What an operator does to the outbox by hand: dead letters re-queued, sinks paused and resumed.
//!
//! * [`Outbox::requeue_dead`] makes a sink's dead letters (all of them, or the ones named) due
//!   again at once, as new deliveries: attempts back to zero, the age limit counted from the
//!   re-queue. Only dead letters move, so a call already delivered is never sent again.
//! * [`Outbox::pause_sink`] and [`Outbox::resume_sink`] keep a sink's pause in the outbox (the
//!   `sink_pauses` table, created on first use), so it survives a restart. A paused sink's
//!   worker ([`crate::engine::run_worker`]) sends nothing: its deliveries stay pending, their
//!   attempts untouched, none dead-lettered.
//! * [`Outbox::bring_retries_within`] pulls next tries set past a limit back to it (a database
//!   written before `Retry-After` was capped may hold tries thousands of years away).
//!
//! A running relay's workers notice each change on their next pass (a paused worker looks again
//! every second, an idle one every five seconds at most).

use std::path::Path;

use rusqlite::{OptionalExtension, params};

use crate::outbox::{Outbox, OutboxError};

/// The most call ids [`Outbox::requeue_dead`] takes at once.
pub const MAX_REQUEUE_IDS: usize = 1000;

const PAUSES: &str = "CREATE TABLE IF NOT EXISTS sink_pauses (
    sink TEXT PRIMARY KEY,
    paused_ms INTEGER NOT NULL
)";

impl Outbox {
    /// Re-queues the dead letters of `sink`: every one with `ids` `None`, else those of the
    /// calls (delivery keys) named, at most [`MAX_REQUEUE_IDS`] (more is an error, nothing
    /// re-queued). Each becomes a pending delivery due at `now_ms` with no attempts, whose age
    /// counts from `now_ms`. Returns how many were re-queued (ids that are not a dead letter of
    /// `sink` are skipped).
    pub fn requeue_dead(
        &self,
        sink: &str,
        ids: Option<&[String]>,
        now_ms: i64,
    ) -> Result<usize, OutboxError> {
        const SET: &str = "UPDATE deliveries SET state = 'pending', attempts = 0, next_ms = ?2,
             created_ms = ?2, done_ms = NULL WHERE sink = ?1 AND state = 'dead'";
        let conn = self.connection();
        let Some(ids) = ids else {
            return Ok(conn.execute(SET, params![sink, now_ms])?);
        };
        if ids.len() > MAX_REQUEUE_IDS {
            return Err(OutboxError::Sqlite(rusqlite::Error::InvalidParameterName(
                format!("at most {MAX_REQUEUE_IDS} call ids at once"),
            )));
        }
        let tx = conn.unchecked_transaction()?;
        let mut n = 0;
        {
            let mut one = tx.prepare(&format!("{SET} AND call_id = ?3"))?;
            for id in ids {
                n += one.execute(params![sink, now_ms, id])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Pauses `sink` (kept in the outbox, so across restarts). Returns whether it was running.
    pub fn pause_sink(&self, sink: &str, now_ms: i64) -> Result<bool, OutboxError> {
        let conn = self.connection();
        conn.execute(PAUSES, [])?;
        let n = conn.execute(
            "INSERT OR IGNORE INTO sink_pauses (sink, paused_ms) VALUES (?1, ?2)",
            params![sink, now_ms],
        )?;
        Ok(n > 0)
    }

    /// Resumes `sink`. Returns whether it was paused.
    pub fn resume_sink(&self, sink: &str) -> Result<bool, OutboxError> {
        let conn = self.connection();
        conn.execute(PAUSES, [])?;
        let n = conn.execute("DELETE FROM sink_pauses WHERE sink = ?1", [sink])?;
        Ok(n > 0)
    }

    /// Whether `sink` is paused (works on a read-only outbox too).
    pub fn is_sink_paused(&self, sink: &str) -> Result<bool, OutboxError> {
        if !self.has_pauses()? {
            return Ok(false);
        }
        Ok(self
            .connection()
            .query_row("SELECT 1 FROM sink_pauses WHERE sink = ?1", [sink], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// The paused sinks, by name (works on a read-only outbox too).
    pub fn paused_sinks(&self) -> Result<Vec<String>, OutboxError> {
        if !self.has_pauses()? {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .connection()
            .prepare("SELECT sink FROM sink_pauses ORDER BY sink")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The sinks the outbox knows: those with deliveries, and the paused ones.
    pub fn known_sinks(&self) -> Result<Vec<String>, OutboxError> {
        let mut stmt = self
            .connection()
            .prepare("SELECT DISTINCT sink FROM deliveries ORDER BY sink")?;
        let mut sinks: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for s in self.paused_sinks()? {
            if !sinks.contains(&s) {
                sinks.push(s);
            }
        }
        sinks.sort();
        Ok(sinks)
    }

    /// Moves the next try of every pending delivery of `sink` due after `latest_ms` to
    /// `latest_ms`; returns how many moved.
    pub fn bring_retries_within(&self, sink: &str, latest_ms: i64) -> Result<usize, OutboxError> {
        Ok(self.connection().execute(
            "UPDATE deliveries SET next_ms = ?2
             WHERE sink = ?1 AND state = 'pending' AND next_ms > ?2",
            params![sink, latest_ms],
        )?)
    }

    fn has_pauses(&self) -> Result<bool, OutboxError> {
        Ok(self
            .connection()
            .prepare_cached(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sink_pauses'",
            )?
            .exists([])?)
    }
}

/// The paused sinks of the outbox at `path`, read only; none when the file does not exist (for
/// the web page, the metrics and readiness: a paused sink is not a stuck one).
pub fn paused_sinks(path: &Path) -> Result<Vec<String>, OutboxError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    Outbox::open_read_only(path, &[])?.paused_sinks()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_is_idempotent_and_listed() {
        let dir = std::env::temp_dir().join(format!("cdr-sinks-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("o.db");
        let o = Outbox::open(&path, &["webhook".into()]).unwrap();
        assert_eq!(paused_sinks(&path).unwrap(), Vec::<String>::new());
        assert!(!o.is_sink_paused("webhook").unwrap());
        assert!(o.pause_sink("webhook", 1).unwrap());
        assert!(!o.pause_sink("webhook", 2).unwrap());
        assert!(o.is_sink_paused("webhook").unwrap());
        assert_eq!(paused_sinks(&path).unwrap(), ["webhook"]);
        assert_eq!(o.known_sinks().unwrap(), ["webhook"]);
        assert!(o.resume_sink("webhook").unwrap());
        assert!(!o.resume_sink("webhook").unwrap());
        assert!(!o.is_sink_paused("webhook").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
