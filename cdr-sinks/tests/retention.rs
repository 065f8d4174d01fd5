//! Retention on a real SQLite file: what is pruned by age and by size, and what never is.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use call_assembler::Call;
use cdr_sinks::outbox::{Batch, JournalEntry, Outbox, Outcome, RawInput, Reject, SourceRecord};
use cdr_sinks::retention::RetentionPolicy;

const DAY_MS: i64 = 24 * 3600 * 1000;

fn db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdr-sinks-ret-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("outbox.db")
}

/// `n` distinct calls (the fixture's, with their ids made unique).
fn calls(n: usize, tag: &str) -> Vec<Call> {
    let base = common::smdr_calls(50);
    (0..n)
        .map(|i| {
            let mut c = base[i % base.len()].clone();
            c.id = format!("{tag}-{i}");
            c
        })
        .collect()
}

fn ids(o: &Outbox) -> Vec<String> {
    o.connection()
        .prepare("SELECT id FROM calls ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn count(o: &Outbox, table: &str) -> i64 {
    o.connection()
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn thirty_days() -> RetentionPolicy {
    RetentionPolicy {
        max_age: Some(Duration::from_secs(30 * 24 * 3600)),
        max_bytes: None,
    }
}

#[test]
fn age_prunes_delivered_calls_and_old_rows_but_never_pending_dead_or_journal() {
    let path = db("age");
    let mut o = Outbox::open(&path, &["s".to_owned()]).unwrap();
    let c = calls(4, "old");
    o.commit(
        &Batch {
            calls: c.clone(),
            journal_add: vec![JournalEntry {
                source: "smdr".into(),
                call_key: "open-1".into(),
                line: b"an open call's record".to_vec(),
            }],
            states: vec![("smdr".into(), b"state".to_vec())],
            rejects: vec![Reject {
                source: "smdr".into(),
                reason: "bad".into(),
                raw: b"garbage".to_vec(),
            }],
            inputs: vec![RawInput {
                source: "cms".into(),
                body: b"<records/>".to_vec(),
            }],
            records: vec![SourceRecord {
                source: "cms".into(),
                session: "s1".into(),
                index: 1,
                body: b"{}".to_vec(),
            }],
            ..Batch::default()
        },
        0,
    )
    .unwrap();
    // c0 delivered, c1 dead (given up on at day 10), c2 pending (retrying), c3 delivered.
    o.record(
        "s",
        &[
            (c[0].id.clone(), Outcome::Delivered),
            (c[3].id.clone(), Outcome::Delivered),
            (
                c[2].id.clone(),
                Outcome::Retry {
                    at_ms: 60 * DAY_MS,
                    error: "HTTP 503".into(),
                    counted: true,
                },
            ),
        ],
        1,
    )
    .unwrap();
    o.record(
        "s",
        &[(
            c[1].id.clone(),
            Outcome::Dead {
                error: "HTTP 400".into(),
            },
        )],
        10 * DAY_MS,
    )
    .unwrap();
    // A newer call, delivered: younger than 30 days at day 31.
    let young = calls(1, "young");
    o.commit(
        &Batch {
            calls: young.clone(),
            ..Batch::default()
        },
        5 * DAY_MS,
    )
    .unwrap();
    o.record(
        "s",
        &[(young[0].id.clone(), Outcome::Delivered)],
        5 * DAY_MS,
    )
    .unwrap();

    // Nothing is old enough at day 29.
    let pruned = o.prune(&thirty_days(), 29 * DAY_MS).unwrap();
    assert_eq!(pruned.total(), 0, "{pruned:?}");

    let pruned = o.prune(&thirty_days(), 31 * DAY_MS).unwrap();
    assert_eq!(
        (
            pruned.calls,
            pruned.deliveries,
            pruned.inputs,
            pruned.rejects,
            pruned.source_records
        ),
        (2, 2, 1, 1, 1),
        "{pruned:?}"
    );
    assert_eq!(
        ids(&o),
        [c[1].id.clone(), c[2].id.clone(), young[0].id.clone()],
        "the dead letter (10 days before its own age limit), the pending delivery and the \
         young call are kept"
    );
    let journal = o.journal("smdr").unwrap();
    assert_eq!(journal.len(), 1, "the open-call journal is never pruned");
    assert_eq!(o.state("smdr").unwrap().as_deref(), Some(&b"state"[..]));
    let counts = o.counts().unwrap();
    assert_eq!((counts[0].pending, counts[0].dead), (1, 1));
    assert_eq!(o.due("s", 60 * DAY_MS, 10).unwrap().len(), 1, "still due");

    // At day 41 the dead letter is itself 31 days old: it goes; the pending delivery never does.
    let pruned = o.prune(&thirty_days(), 41 * DAY_MS).unwrap();
    assert_eq!((pruned.calls, pruned.deliveries), (2, 2), "{pruned:?}");
    assert_eq!(ids(&o), [c[2].id.clone()]);
    let pruned = o.prune(&thirty_days(), 1000 * DAY_MS).unwrap();
    assert_eq!(pruned.total(), 0);
    assert_eq!(o.journal("smdr").unwrap().len(), 1);
}

#[test]
fn size_prunes_oldest_first_and_never_a_pending_delivery() {
    let path = db("size");
    let mut o = Outbox::open(&path, &["s".to_owned()]).unwrap();
    let all = calls(3000, "c");
    for (i, chunk) in all.chunks(100).enumerate() {
        let t = i64::try_from(i).unwrap() * 1000;
        o.commit(
            &Batch {
                calls: chunk.to_vec(),
                rejects: vec![Reject {
                    source: "smdr".into(),
                    reason: "bad".into(),
                    raw: vec![b'x'; 900],
                }],
                ..Batch::default()
            },
            t,
        )
        .unwrap();
    }
    // Every call delivered except the last 200, which stay pending; and one old one pending.
    let outcomes: Vec<(String, Outcome)> = all[..2800]
        .iter()
        .filter(|c| c.id != "c-5")
        .map(|c| (c.id.clone(), Outcome::Delivered))
        .collect();
    o.record("s", &outcomes, 40_000).unwrap();
    let before = o.db_size().unwrap();
    // Bodies are stored compressed (cdr_sinks::body): 3,000 calls take about 1.5 MB.
    let max = 1 << 19;
    assert!(before.used_bytes() > 2 * max, "{before:?}");
    let pruned = o
        .prune(
            &RetentionPolicy {
                max_age: None,
                max_bytes: Some(max),
            },
            50_000,
        )
        .unwrap();
    let after = o.db_size().unwrap();
    assert!(after.used_bytes() <= max, "{after:?} {pruned:?}");
    assert!(pruned.calls > 0 && pruned.rejects > 0, "{pruned:?}");
    let kept = ids(&o);
    assert!(
        kept.contains(&"c-5".to_owned()),
        "a pending delivery is never pruned"
    );
    let pending: Vec<&str> = all[2800..].iter().map(|c| c.id.as_str()).collect();
    for id in &pending {
        assert!(kept.iter().any(|k| k == id), "pending {id} pruned");
    }
    // Oldest first: what is kept of the delivered calls is the newest of them.
    let delivered_kept: Vec<usize> = kept
        .iter()
        .filter(|k| *k != "c-5" && !pending.contains(&k.as_str()))
        .map(|k| k.trim_start_matches("c-").parse().unwrap())
        .collect();
    assert!(!delivered_kept.is_empty());
    let first = delivered_kept[0];
    assert_eq!(delivered_kept, (first..2800).collect::<Vec<_>>());
    // Rejects went oldest first too, and the file itself shrank (new databases vacuum
    // incrementally).
    let oldest_reject: i64 = o
        .connection()
        .query_row("SELECT MIN(received_ms) FROM rejects", [], |r| r.get(0))
        .unwrap();
    assert!(oldest_reject > 0);
    assert!(
        after.file_bytes() < before.file_bytes(),
        "{before:?} {after:?}"
    );
    assert_eq!(o.counts().unwrap()[0].pending, 201);
}

#[test]
fn over_the_size_limit_with_only_pending_deliveries_nothing_is_pruned() {
    let path = db("pending");
    let mut o = Outbox::open(&path, &["s".to_owned()]).unwrap();
    o.commit(
        &Batch {
            calls: calls(500, "p"),
            ..Batch::default()
        },
        0,
    )
    .unwrap();
    let pruned = o
        .prune(
            &RetentionPolicy {
                max_age: Some(Duration::from_millis(1)),
                max_bytes: Some(4096),
            },
            100 * DAY_MS,
        )
        .unwrap();
    assert_eq!(pruned.total(), 0, "{pruned:?}");
    assert_eq!(count(&o, "calls"), 500);
    assert_eq!(o.counts().unwrap()[0].pending, 500);
}

#[test]
fn a_huge_reject_is_stored_as_prefix_length_and_hash() {
    let path = db("reject");
    let mut o = Outbox::open(&path, &[]).unwrap();
    let raw = vec![0xA5_u8; 8 << 20];
    o.commit(
        &Batch {
            rejects: vec![Reject {
                source: "cms".into(),
                reason: "not a CDR batch".into(),
                raw: raw.clone(),
            }],
            ..Batch::default()
        },
        0,
    )
    .unwrap();
    let (kept, len, hash): (Vec<u8>, i64, String) = o
        .connection()
        .query_row("SELECT raw, raw_len, raw_sha256 FROM rejects", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(kept.len(), cdr_sinks::rejects::REJECT_PREFIX);
    assert_eq!(len, 8 << 20);
    assert_eq!(hash, cdr_sinks::rejects::sha256_hex(&raw));
    drop(o);
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
}
