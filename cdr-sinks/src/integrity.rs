//! A quick integrity check of an outbox file before it is opened for writing.
//!
//! [`quick_check`] opens the file read-only (nothing is created, migrated or written to it) and
//! runs SQLite's `PRAGMA quick_check`, interrupted after a time limit so that a very large file
//! never holds a start up for long. A damaged file is reported with what SQLite found, so that
//! the caller can refuse to start and leave the file as it is for recovery.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

/// How many of SQLite's findings a [`IntegrityError::Damaged`] keeps.
const MAX_FINDINGS: usize = 10;

/// What the check found, when the file is not known to be damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// There is no file yet (or it is empty): nothing to check.
    Missing,
    /// `quick_check` found nothing wrong.
    Ok,
    /// The check did not finish within its time limit; nothing wrong was found until then.
    TimedOut,
}

/// The file could not be checked, or is damaged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// SQLite found damage (or the file is not a database at all).
    #[error("the database is damaged: {}", findings.join("; "))]
    Damaged {
        /// SQLite's findings (at most a few), in its words.
        findings: Vec<String>,
    },
    /// The file could not be read (permissions, I/O error, locked for too long).
    #[error("the database could not be checked: {0}")]
    Unreadable(#[source] rusqlite::Error),
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

fn classify(e: rusqlite::Error) -> IntegrityError {
    if is_damage(&e) {
        IntegrityError::Damaged {
            findings: vec![e.to_string()],
        }
    } else {
        IntegrityError::Unreadable(e)
    }
}

/// Checks the outbox file at `path` with `PRAGMA quick_check`, for at most `limit`.
///
/// The file is opened read-only and never written. A missing or empty file is
/// [`Checked::Missing`]; a check still running after `limit` is interrupted and answers
/// [`Checked::TimedOut`].
pub fn quick_check(path: &Path, limit: Duration) -> Result<Checked, IntegrityError> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => {}
        _ => return Ok(Checked::Missing),
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(classify)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(classify)?;
    let interrupt = conn.get_interrupt_handle();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            interrupt.interrupt();
            true
        } else {
            false
        }
    });
    let result = run_check(&conn);
    let _ = done_tx.send(());
    let interrupted = watchdog.join().unwrap_or(false);
    match result {
        Ok(findings) if findings.iter().all(|f| f == "ok") => Ok(Checked::Ok),
        Ok(findings) => Err(IntegrityError::Damaged { findings }),
        Err(e) if interrupted && e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => {
            Ok(Checked::TimedOut)
        }
        Err(e) => Err(classify(e)),
    }
}

fn run_check(conn: &Connection) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare(&format!("PRAGMA quick_check({MAX_FINDINGS})"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("cdr-sinks-integrity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn missing_sound_and_damaged_files() {
        let d = dir("kinds");
        let db = d.join("o.db");
        assert_eq!(
            quick_check(&db, Duration::from_secs(5)).unwrap(),
            Checked::Missing
        );
        {
            let c = Connection::open(&db).unwrap();
            c.execute_batch(
                "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; CREATE TABLE t(x TEXT); \
                 CREATE INDEX t_x ON t(x);",
            )
            .unwrap();
            c.execute_batch("BEGIN").unwrap();
            for i in 0..2000 {
                c.execute(
                    "INSERT INTO t VALUES (?1)",
                    [format!("row {i:05} of some length")],
                )
                .unwrap();
            }
            c.execute_batch("COMMIT").unwrap();
        }
        assert_eq!(
            quick_check(&db, Duration::from_secs(5)).unwrap(),
            Checked::Ok
        );

        // Garbage over an inner page.
        let mut bytes = std::fs::read(&db).unwrap();
        let page = bytes.len() / 1024 / 2;
        for b in &mut bytes[page * 1024..(page + 1) * 1024] {
            *b = 0xA5;
        }
        std::fs::write(&db, &bytes).unwrap();
        let e = quick_check(&db, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, IntegrityError::Damaged { .. }), "{e}");
        assert_eq!(std::fs::read(&db).unwrap(), bytes, "the file is left alone");

        let not_db = d.join("text.db");
        std::fs::write(&not_db, vec![b'x'; 8192]).unwrap();
        let e = quick_check(&not_db, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, IntegrityError::Damaged { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
