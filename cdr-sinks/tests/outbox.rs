//! The outbox on a real SQLite file.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::path::PathBuf;

use call_assembler::Call;
use cdr_sinks::outbox::{Batch, JournalEntry, Outbox, Outcome, Reject, SinkTally};

fn db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdr-sinks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("outbox.db")
}

#[test]
fn a_call_is_queued_once_per_sink_whatever_happens() {
    let path = db("once");
    let sinks = vec!["webhook".to_owned(), "jsonl:-".to_owned()];
    let mut o = Outbox::open(&path, &sinks).unwrap();
    let c = common::smdr_calls(3);
    let r = o
        .commit(
            &Batch {
                calls: c.clone(),
                ..Batch::default()
            },
            1_000,
        )
        .unwrap();
    assert_eq!((r.calls, r.duplicates, r.deliveries), (3, 0, 6));
    // The same calls again (a replay after a crash): nothing new is queued.
    let mut o2 = Outbox::open(&path, &sinks).unwrap();
    let r = o2
        .commit(
            &Batch {
                calls: c.clone(),
                ..Batch::default()
            },
            2_000,
        )
        .unwrap();
    assert_eq!((r.calls, r.duplicates, r.deliveries), (0, 3, 0));
    let due = o.due("webhook", 1_000, 10).unwrap();
    assert_eq!(due.len(), 3);
    assert_eq!(due[0].call_id, c[0].id);
    let body: Call = serde_json::from_slice(&due[0].body).unwrap();
    assert_eq!(body, c[0]);
    assert!(
        o.due("webhook", 999, 10).unwrap().is_empty(),
        "not due before created"
    );
}

#[test]
fn outcomes_move_deliveries_through_their_states() {
    let path = db("states");
    let mut o = Outbox::open(&path, &["webhook".to_owned()]).unwrap();
    let c = common::smdr_calls(3);
    o.commit(
        &Batch {
            calls: c.clone(),
            ..Batch::default()
        },
        0,
    )
    .unwrap();
    o.record(
        "webhook",
        &[
            (c[0].id.clone(), Outcome::Delivered),
            (
                c[1].id.clone(),
                Outcome::Retry {
                    at_ms: 5_000,
                    error: "HTTP 500".into(),
                    counted: true,
                },
            ),
            (
                c[2].id.clone(),
                Outcome::Dead {
                    error: "HTTP 400".into(),
                },
            ),
        ],
        100,
    )
    .unwrap();
    assert!(o.due("webhook", 4_999, 10).unwrap().is_empty());
    let due = o.due("webhook", 5_000, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].call_id.as_str(), due[0].attempts),
        (c[1].id.as_str(), 1)
    );
    assert_eq!(o.next_due("webhook").unwrap(), Some(5_000));
    let counts = o.counts().unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (counts[0].pending, counts[0].delivered, counts[0].dead),
        (1, 1, 1)
    );
    assert_eq!(counts[0].oldest_pending_ms, Some(0));
    let dead = o.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].call_id, c[2].id);
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 400"));
    // An uncounted retry (sink unreachable) does not use up an attempt.
    o.record(
        "webhook",
        &[(
            c[1].id.clone(),
            Outcome::Retry {
                at_ms: 6_000,
                error: "refused".into(),
                counted: false,
            },
        )],
        200,
    )
    .unwrap();
    assert_eq!(o.due("webhook", 6_000, 10).unwrap()[0].attempts, 1);
    // A retry is still pending; once it is delivered nothing is.
    assert!(o.any_pending(&["webhook".to_owned()]).unwrap());
    o.record("webhook", &[(c[1].id.clone(), Outcome::Delivered)], 300)
        .unwrap();
    assert!(
        !o.any_pending(&["webhook".to_owned()]).unwrap(),
        "dead and delivered are not pending"
    );
}

#[test]
fn journal_state_and_rejects_survive_reopening() {
    let path = db("journal");
    {
        let mut o = Outbox::open(&path, &[]).unwrap();
        o.commit(
            &Batch {
                journal_add: vec![
                    JournalEntry {
                        source: "smdr".into(),
                        call_key: "1/a".into(),
                        line: b"first".to_vec(),
                    },
                    JournalEntry {
                        source: "smdr".into(),
                        call_key: "2/b".into(),
                        line: b"second".to_vec(),
                    },
                    JournalEntry {
                        source: "smdr".into(),
                        call_key: "1/a".into(),
                        line: b"third".to_vec(),
                    },
                ],
                rejects: vec![Reject {
                    source: "smdr".into(),
                    reason: "bad".into(),
                    raw: b"\xff\xfe".to_vec(),
                }],
                states: vec![("smdr".into(), b"{\"epoch\":2}".to_vec())],
                ..Batch::default()
            },
            0,
        )
        .unwrap();
        o.commit(
            &Batch {
                journal_remove: vec![("smdr".into(), "2/b".into())],
                ..Batch::default()
            },
            1,
        )
        .unwrap();
    }
    let o = Outbox::open(&path, &[]).unwrap();
    let j: Vec<Vec<u8>> = o
        .journal("smdr")
        .unwrap()
        .into_iter()
        .map(|e| e.line)
        .collect();
    assert_eq!(j, [b"first".to_vec(), b"third".to_vec()]);
    assert!(o.journal("other").unwrap().is_empty());
    assert_eq!(
        o.state("smdr").unwrap().as_deref(),
        Some(&b"{\"epoch\":2}"[..])
    );
    assert_eq!(o.reject_count().unwrap(), 1);
}

#[test]
fn a_read_only_handle_sees_commits_and_writes_nothing() {
    let path = db("readonly");
    assert!(
        Outbox::open_read_only(&path, &[]).is_err(),
        "does not create the file"
    );
    let mut w = Outbox::open(&path, &["webhook".to_owned()]).unwrap();
    let r = Outbox::open_read_only(&path, &["webhook".to_owned(), "jsonl:-".to_owned()]).unwrap();
    w.commit(
        &Batch {
            calls: common::smdr_calls(2),
            ..Batch::default()
        },
        0,
    )
    .unwrap();
    let counts = r.counts().unwrap();
    let names: Vec<&str> = counts.iter().map(|c| c.sink.as_str()).collect();
    assert_eq!(names, ["jsonl:-", "webhook"]);
    assert_eq!(counts[1].pending, 2);
    assert_eq!(r.call_count().unwrap(), 2);
    let mut r = r;
    assert!(
        r.commit(
            &Batch {
                calls: common::smdr_calls(3),
                ..Batch::default()
            },
            1
        )
        .is_err()
    );
}

#[test]
fn a_database_without_delivery_order_is_migrated() {
    let path = db("migrate");
    {
        // The layout before `deliveries.seq` existed.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE calls (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                source TEXT NOT NULL, site TEXT NOT NULL, call_id TEXT NOT NULL,
                start_time TEXT NOT NULL, end_time TEXT NOT NULL, direction TEXT NOT NULL,
                caller TEXT NOT NULL, called TEXT NOT NULL, answered INTEGER NOT NULL,
                complete INTEGER NOT NULL, duration INTEGER NOT NULL, body BLOB NOT NULL,
                created_ms INTEGER NOT NULL);
             CREATE TABLE deliveries (call_id TEXT NOT NULL, sink TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
                attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL,
                created_ms INTEGER NOT NULL, done_ms INTEGER, last_error TEXT,
                PRIMARY KEY (call_id, sink)) WITHOUT ROWID;
             CREATE INDEX deliveries_due ON deliveries(sink, state, next_ms);
             INSERT INTO calls (id, source, site, call_id, start_time, end_time, direction,
                caller, called, answered, complete, duration, body, created_ms)
                VALUES ('b', 'smdr', '', '2', 't', 't', 'inbound', '', '', 0, 1, 0, X'7B7D', 0),
                       ('a', 'smdr', '', '1', 't', 't', 'inbound', '', '', 0, 1, 0, X'7B7D', 0);
             INSERT INTO deliveries (call_id, sink, state, next_ms, created_ms)
                VALUES ('a', 'webhook', 'pending', 0, 0), ('b', 'webhook', 'pending', 0, 0);",
        )
        .unwrap();
    }
    let o = Outbox::open(&path, &["webhook".to_owned()]).unwrap();
    // Arrival order (calls.seq: b, then a) survives the migration.
    let due: Vec<String> = o
        .due("webhook", 0, 10)
        .unwrap()
        .into_iter()
        .map(|p| p.call_id)
        .collect();
    assert_eq!(due, ["b", "a"]);
    drop(o);
    Outbox::open(&path, &[]).unwrap();
}

#[test]
fn progress_records_are_delivered_under_their_own_key_but_not_stored_as_calls() {
    use call_assembler::{CallUpdate, UpdateEvent};
    let path = db("updates");
    let sinks = vec!["webhook".to_owned()];
    let mut o = Outbox::open(&path, &sinks).unwrap();
    let call = common::smdr_calls(1).remove(0);
    let progress = |sequence, event| {
        let mut c = call.clone();
        c.complete = false;
        c.update = Some(CallUpdate { sequence, event });
        c
    };
    let batch = Batch {
        updates: vec![
            progress(0, UpdateEvent::Started),
            progress(1, UpdateEvent::Updated),
        ],
        ..Batch::default()
    };
    let r = o.commit(&batch, 1_000).unwrap();
    assert_eq!((r.calls, r.duplicates, r.deliveries), (0, 0, 2));
    // The same progress again (a journal replayed after a restart): dropped by key.
    let r = o.commit(&batch, 1_001).unwrap();
    assert_eq!((r.duplicates, r.deliveries), (2, 0));
    let mut last = call.clone();
    last.update = Some(CallUpdate {
        sequence: 2,
        event: UpdateEvent::Ended,
    });
    o.commit(
        &Batch {
            calls: vec![last],
            ..Batch::default()
        },
        1_002,
    )
    .unwrap();
    let due = o.due("webhook", 2_000, 10).unwrap();
    let keys: Vec<&str> = due.iter().map(|p| p.call_id.as_str()).collect();
    let id = call.id.as_str();
    assert_eq!(keys, [format!("{id}#0"), format!("{id}#1"), id.to_owned()]);
    for p in &due {
        let body: Call = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(body.id, call.id);
    }
    assert_eq!(
        o.call_count().unwrap(),
        1,
        "the store holds the final call only"
    );
}

/// Issue 16: a call committed again (a second replay) is queued for a sink added since, and for
/// none that had it, whatever state its delivery is in.
#[test]
fn a_stored_call_committed_again_is_queued_only_for_sinks_without_it() {
    let path = db("new-sink");
    let c = common::smdr_calls(3);
    let batch = Batch {
        calls: c.clone(),
        ..Batch::default()
    };
    let mut o = Outbox::open(&path, &["a".to_owned()]).unwrap();
    let r = o.commit(&batch, 0).unwrap();
    assert_eq!((r.calls, r.duplicates), (3, 0));
    assert_eq!(r.sinks, [SinkTally { queued: 3, had: 0 }]);
    o.record(
        "a",
        &[
            (c[0].id.clone(), Outcome::Delivered),
            (
                c[1].id.clone(),
                Outcome::Dead {
                    error: "HTTP 400".into(),
                },
            ),
        ],
        10,
    )
    .unwrap();
    drop(o);

    let mut o = Outbox::open(&path, &["a".to_owned(), "b".to_owned()]).unwrap();
    let r = o.commit(&batch, 20).unwrap();
    assert_eq!((r.calls, r.duplicates, r.deliveries), (0, 3, 3));
    assert_eq!(
        r.sinks,
        [
            SinkTally { queued: 0, had: 3 },
            SinkTally { queued: 3, had: 0 }
        ]
    );
    // `a` keeps its states (one delivered, one dead, one pending); `b` has all three due, in
    // the order the calls were first stored.
    let due_a: Vec<String> = o
        .due("a", 100, 10)
        .unwrap()
        .into_iter()
        .map(|p| p.call_id)
        .collect();
    assert_eq!(due_a, [c[2].id.clone()]);
    let due_b: Vec<String> = o
        .due("b", 100, 10)
        .unwrap()
        .into_iter()
        .map(|p| p.call_id)
        .collect();
    assert_eq!(due_b, c.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
    assert_eq!(o.call_count().unwrap(), 3);
    // The bodies `b` gets are the calls' JSON, as `a` got them.
    let first = o.due("b", 100, 1).unwrap().remove(0);
    let json: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(json["id"], c[0].id.as_str());
}
