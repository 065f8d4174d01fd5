//! How rejected input is kept: a prefix of its bytes ([`REJECT_PREFIX`]), its whole length and
//! the SHA-256 of the whole, so that a flood of large garbage (a 8 MiB body posted again and
//! again, a line that never ends) costs a few hundred bytes a reject instead of its size, and an
//! operator can still tell what came in and match it against a capture.
//!
//! The `rejects` table of the outbox has `raw` (the prefix), `raw_len` and `raw_sha256`
//! (lowercase hex) for this; the outbox migrates a database written before them when it opens it
//! (once, recorded in `PRAGMA user_version`), truncating the rejects it already holds.

use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

/// The bytes of a reject kept as they came: 1 KiB. Everything past it is kept only as the
/// length and hash.
pub const REJECT_PREFIX: usize = 1024;

/// The `user_version` of a database whose rejects are kept truncated.
pub(crate) const VERSION: i64 = 2;

/// A reject as it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptReject<'a> {
    /// Its first [`REJECT_PREFIX`] bytes (all of it when shorter).
    pub prefix: &'a [u8],
    /// Its whole length in bytes.
    pub len: u64,
    /// The SHA-256 of the whole input, lowercase hex.
    pub sha256: String,
}

/// What is kept of the rejected input `raw`.
pub fn keep(raw: &[u8]) -> KeptReject<'_> {
    KeptReject {
        prefix: raw.get(..REJECT_PREFIX).unwrap_or(raw),
        len: u64::try_from(raw.len()).unwrap_or(u64::MAX),
        sha256: sha256_hex(raw),
    }
}

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Rows truncated per transaction by [`migrate`].
const MIGRATE_BATCH: i64 = 64;

/// Adds `raw_len` and `raw_sha256` to the `rejects` table of a database written before them and
/// truncates the rejects already there (in transactions of a few rows, so that a database with
/// a gigabyte of rejects is migrated without holding the write lock for long). Idempotent: run on
/// every open, it does nothing once `user_version` is [`VERSION`] or later; a migration
/// interrupted half way is resumed (the rows still without a length are the ones left).
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= VERSION {
        return Ok(());
    }
    let has = |column: &str| -> rusqlite::Result<bool> {
        conn.prepare("SELECT 1 FROM pragma_table_info('rejects') WHERE name = ?1")?
            .exists([column])
    };
    if !has("raw_len")? {
        conn.execute_batch("ALTER TABLE rejects ADD COLUMN raw_len INTEGER")?;
    }
    if !has("raw_sha256")? {
        conn.execute_batch("ALTER TABLE rejects ADD COLUMN raw_sha256 TEXT")?;
    }
    loop {
        let tx = conn.unchecked_transaction()?;
        let rows: Vec<(i64, Vec<u8>)> = tx
            .prepare("SELECT seq, raw FROM rejects WHERE raw_len IS NULL ORDER BY seq LIMIT ?1")?
            .query_map([MIGRATE_BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if rows.is_empty() {
            break;
        }
        {
            let mut update = tx.prepare(
                "UPDATE rejects SET raw = ?2, raw_len = ?3, raw_sha256 = ?4 WHERE seq = ?1",
            )?;
            for (seq, raw) in &rows {
                let kept = keep(raw);
                update.execute(params![
                    seq,
                    kept.prefix,
                    i64::try_from(kept.len).unwrap_or(i64::MAX),
                    kept.sha256
                ])?;
            }
        }
        tx.commit()?;
    }
    conn.execute_batch(&format!("PRAGMA user_version = {VERSION}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_reject_keeps_a_prefix_its_length_and_hash() {
        let raw = vec![b'x'; 3 * REJECT_PREFIX + 7];
        let kept = keep(&raw);
        assert_eq!(kept.prefix.len(), REJECT_PREFIX);
        assert_eq!(kept.len, raw.len() as u64);
        assert_eq!(kept.sha256, sha256_hex(&raw));
        assert_eq!(kept.sha256.len(), 64);
        let small = keep(b"abc");
        assert_eq!(small.prefix, b"abc");
        assert_eq!(
            small.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn migration_truncates_old_rejects_once() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE rejects (seq INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
             received_ms INTEGER NOT NULL, reason TEXT NOT NULL, raw BLOB NOT NULL);",
        )
        .unwrap();
        let big = vec![b'g'; 100_000];
        for i in 0..150 {
            let raw: &[u8] = if i % 2 == 0 { &big } else { b"short" };
            conn.execute(
                "INSERT INTO rejects (source, received_ms, reason, raw) VALUES ('s', 0, 'r', ?1)",
                [raw],
            )
            .unwrap();
        }
        migrate(&conn).unwrap();
        migrate(&conn).unwrap();
        let rows: Vec<(usize, i64, String)> = conn
            .prepare("SELECT length(raw), raw_len, raw_sha256 FROM rejects ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 150);
        assert_eq!(rows[0], (REJECT_PREFIX, 100_000, sha256_hex(&big)));
        assert_eq!(rows[1], (5, 5, sha256_hex(b"short")));
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
    }
}
