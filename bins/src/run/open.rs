//! Opening the outbox before anything is read: a quick integrity check that refuses a damaged
//! file (and leaves it alone), then the open itself, retried with backoff while the disk is full
//! or failing, so that a relay restarted on a full disk waits for space instead of reading calls
//! it cannot keep.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdr_sinks::integrity::{Checked, IntegrityError, quick_check};
use cdr_sinks::outbox::{Outbox, OutboxError};
use rusqlite::ErrorCode;
use tokio::sync::watch;

use super::sinks::{http_cdr_session, remote_sink_names};
use crate::settings::Config;

/// How long the integrity check at start may take; a larger file is checked only this long.
pub(super) const QUICK_CHECK_LIMIT: Duration = Duration::from_secs(60);

/// The longest wait between two attempts to open the outbox.
const OPEN_RETRY_MAX: Duration = Duration::from_secs(30);

/// The opened outbox, and the HTTP-CDR session kept in it when that sink is configured.
pub(super) struct Opened {
    pub(super) outbox: Arc<Mutex<Outbox>>,
    pub(super) http_cdr_session: Option<String>,
}

/// What to tell the operator about a damaged database.
fn damaged(path: &Path, findings: &[String]) -> anyhow::Error {
    let p = path.display();
    anyhow::anyhow!(
        "the database {p} is damaged (SQLite's quick_check: {}). Nothing was written to it. \
         Keep a copy of it, then either restore it from a backup, or recover what it holds with \
         `sqlite3 {p} .recover | sqlite3 {p}.recovered` and start with --db (CDR_RELAY_DB) set \
         to the recovered file; or move it aside to start with an empty database (its pending \
         deliveries and open calls are then not sent)",
        findings.join("; ")
    )
}

/// Whether an open failure can go away on its own (a full or failing disk, a lock).
fn transient(e: &anyhow::Error) -> bool {
    let code = e
        .downcast_ref::<OutboxError>()
        .and_then(|e| match e {
            OutboxError::Sqlite(e) => e.sqlite_error_code(),
            _ => None,
        })
        .or_else(|| {
            e.downcast_ref::<rusqlite::Error>()
                .and_then(rusqlite::Error::sqlite_error_code)
        });
    matches!(
        code,
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::OutOfMemory
        )
    )
}

fn is_damage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let code = c
            .downcast_ref::<OutboxError>()
            .and_then(|e| match e {
                OutboxError::Sqlite(e) => e.sqlite_error_code(),
                _ => None,
            })
            .or_else(|| {
                c.downcast_ref::<rusqlite::Error>()
                    .and_then(rusqlite::Error::sqlite_error_code)
            });
        matches!(
            code,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
        )
    })
}

fn open_once(config: &Config) -> anyhow::Result<Opened> {
    let mut outbox = Outbox::open(&config.db, &remote_sink_names(config))?;
    let http_cdr_session = if config.http_cdr.is_some() {
        Some(http_cdr_session(&mut outbox)?)
    } else {
        None
    };
    Ok(Opened {
        outbox: Arc::new(Mutex::new(outbox)),
        http_cdr_session,
    })
}

/// Checks and opens the outbox of `config`. A damaged file is refused (an error that says what
/// to do); a full or failing disk is retried with backoff until it works or `shutdown` turns
/// true (`None`).
pub(super) async fn open_outbox(
    config: &Config,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Option<Opened>> {
    let path = config.db.clone();
    let checked = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || quick_check(&path, QUICK_CHECK_LIMIT)).await?
    };
    match checked {
        Ok(Checked::Ok | Checked::Missing) => {}
        Ok(Checked::TimedOut) => tracing::warn!(
            db = %path.display(),
            "the integrity check of the database did not finish within {} s: going on",
            QUICK_CHECK_LIMIT.as_secs()
        ),
        Err(IntegrityError::Damaged { findings }) => return Err(damaged(&path, &findings)),
        // Not readable now: the open below says why, or waits for it.
        Err(e) => tracing::warn!(db = %path.display(), error = %e, "integrity check skipped"),
    }
    let mut shutdown = shutdown.clone();
    let mut delay = Duration::from_millis(500);
    let mut failures = 0u64;
    loop {
        let attempt = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || open_once(&config)).await?
        };
        let e = match attempt {
            Ok(opened) => {
                if failures > 0 {
                    tracing::info!(db = %path.display(), failures, "database open");
                }
                return Ok(Some(opened));
            }
            Err(e) if is_damage(&e) => return Err(damaged(&path, &[format!("{e:#}")])),
            Err(e) if !transient(&e) => {
                return Err(e.context(format!("opening the database {}", path.display())));
            }
            Err(e) => e,
        };
        failures += 1;
        // Rate-limited: the first failure, then every tenth.
        if failures == 1 || failures % 10 == 0 {
            tracing::error!(
                db = %path.display(),
                error = %format!("{e:#}"),
                failures,
                "cannot open the database; the source is not started until it opens (retrying)"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return Ok(None),
        }
        delay = (delay * 2).min(OPEN_RETRY_MAX);
    }
}
