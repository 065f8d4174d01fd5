//! Unit tests of the feeds: time moved by hand, and every feed restored after a simulated crash
//! (the journal and states taken from the commits so far, the feed dropped, a new one built from
//! them) with every call coming out exactly once.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods // tests start their synthetic clock anywhere
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Commit, Event, Feed, Restored};
use crate::Call;

mod ami;
mod cel;
mod cms;
mod dialler;
mod reconcile;
mod smdr;

/// The wall clock (ms since the epoch) at the test's first instant.
const T0_MS: i64 = 1_795_000_000_000;

/// The test's first instant.
fn t0() -> Instant {
    Instant::now()
}

/// The wall clock at `now`, for a feed restored at `now`.
fn wall(t0: Instant, now: Instant) -> i64 {
    T0_MS + i64::try_from(now.duration_since(t0).as_millis()).unwrap()
}

/// A capture from the repository's `fixtures/`.
fn fixture(path: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// What an outbox keeps of the commits: the journal and states (as a [`Restored`]), every call
/// committed (in order, duplicates included), the progress records, the rejects and the events.
#[derive(Debug, Default)]
struct Store {
    saved: Restored,
    calls: Vec<Call>,
    updates: Vec<Call>,
    rejects: usize,
    records: Vec<(String, i64)>,
    inputs: usize,
    events: Vec<Event>,
    /// The calls open when the feed was dropped.
    open_at_crash: Option<usize>,
}

impl Store {
    /// Takes the feed's events and commit, as a relay's run loop does after each input.
    fn commit<F: Feed>(&mut self, feed: &mut F, at_ms: i64) {
        while let Some(e) = feed.poll_event() {
            self.events.push(e);
        }
        let c: Commit = feed.take_commit();
        self.saved.apply(&c, at_ms);
        self.calls.extend(c.calls);
        self.updates.extend(c.updates);
        self.rejects += c.rejects.len();
        self.inputs += c.inputs.len();
        self.records
            .extend(c.records.into_iter().map(|r| (r.session, r.index)));
    }

    /// The calls by id, each once; panics on a call committed twice.
    fn by_id(&self) -> BTreeMap<String, &Call> {
        let mut out = BTreeMap::new();
        for c in &self.calls {
            assert!(
                out.insert(c.id.clone(), c).is_none(),
                "call {} ({}) committed twice",
                c.id,
                c.call_id
            );
        }
        out
    }
}

/// Asserts that two runs committed the same calls, each exactly once.
fn assert_same_calls(straight: &Store, crashed: &Store) {
    let a = straight.by_id();
    let b = crashed.by_id();
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same calls, each once"
    );
    for (id, call) in &a {
        let other = b[id];
        assert_eq!(call.complete, other.complete, "{id}");
        assert_eq!(call.legs.len(), other.legs.len(), "{id}");
        assert_eq!(call.records.len(), other.records.len(), "{id}");
        assert_eq!(call.cdr.len(), other.cdr.len(), "{id}");
        assert_eq!(call.start_time, other.start_time, "{id}");
        assert_eq!(call.end_time, other.end_time, "{id}");
    }
}

/// Feeds `inputs` one at a time, `step` apart, as a relay's run loop does: a timeout that fell
/// due is passed first, and what the feed collected is committed after each step. With
/// `crash_after: Some(i)`, the feed is dropped after input `i` is committed and a new one is
/// built by `build` from what the store kept (the simulated crash: nothing else survives).
/// At the end the input ends ([`Feed::handle_end`]) and the last commit is taken.
fn drive<F: Feed>(
    inputs: Vec<F::Input>,
    step: Duration,
    crash_after: Option<usize>,
    build: impl Fn(Instant, i64, &Restored) -> F,
) -> Store {
    let start = t0();
    let mut now = start;
    let mut store = Store::default();
    let mut feed = build(now, wall(start, now), &store.saved);
    for (i, input) in inputs.into_iter().enumerate() {
        now += step;
        if feed.poll_timeout().is_some_and(|d| d <= now) {
            feed.handle_timeout(now);
            store.commit(&mut feed, wall(start, now));
        }
        feed.handle_input(now, input);
        store.commit(&mut feed, wall(start, now));
        if crash_after == Some(i) {
            let open = feed.open_calls();
            drop(feed);
            feed = build(now, wall(start, now), &store.saved);
            assert_eq!(feed.open_calls(), open, "every open call rebuilt");
            store.open_at_crash = Some(open);
            store.commit(&mut feed, wall(start, now));
        }
    }
    now += step;
    feed.handle_timeout(now);
    feed.handle_end(now);
    store.commit(&mut feed, wall(start, now));
    assert_eq!(feed.open_calls(), 0);
    assert!(feed.take_commit().is_empty(), "nothing left after a commit");
    store
}

/// Splits `bytes` into whole lines (each with its newline).
fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// CSV lines as the database reader hands them over: with `rows`, each line's fields; without,
/// the lines it wrote of them before it handed rows over (every field quoted).
fn as_read_from_db(bytes: &[u8], rows: bool) -> super::CelData {
    let fields: Vec<Vec<String>> = lines(bytes)
        .iter()
        .map(|l| crate::csv::split_record(std::str::from_utf8(l).unwrap()).unwrap())
        .collect();
    if rows {
        return super::CelData::Rows(fields);
    }
    let mut text = String::new();
    for f in &fields {
        crate::csv::write_record(&mut text, f);
    }
    super::CelData::Bytes(text.into_bytes())
}

#[test]
fn restored_puts_journal_entries_on_the_time_line_and_apply_follows_commits() {
    let now = t0() + Duration::from_secs(3600);
    let mut saved = Restored::default();
    let entry = |key: &str| super::JournalEntry {
        source: "s".into(),
        call_key: key.into(),
        line: key.as_bytes().to_vec(),
    };
    saved.apply(
        &Commit {
            journal_add: vec![entry("a"), entry("b")],
            states: vec![("s".into(), b"1".to_vec())],
            ..Commit::default()
        },
        10_000,
    );
    saved.apply(
        &Commit {
            journal_add: vec![entry("c")],
            journal_remove: vec![("s".into(), "a".into())],
            ..Commit::default()
        },
        15_000,
    );
    assert_eq!(saved.state("s"), Some(b"1".as_slice()));
    let times: Vec<(String, Instant)> = saved
        .journal_on_time_line(now, 20_000)
        .map(|(e, at)| (e.call_key.clone(), at))
        .collect();
    assert_eq!(
        times,
        vec![
            ("b".to_owned(), now - Duration::from_secs(10)),
            ("c".to_owned(), now - Duration::from_secs(5)),
        ]
    );
    // An entry from the future (the wall clock stepped back) is replayed at `now`, and time
    // never goes backwards along the journal.
    let times: Vec<Instant> = saved
        .journal_on_time_line(now, 12_000)
        .map(|(_, at)| at)
        .collect();
    assert_eq!(times, vec![now - Duration::from_secs(2), now]);
    let mut c = Commit::default();
    assert!(c.is_empty());
    c.save_state("x".into(), b"1".to_vec());
    c.save_state("x".into(), b"2".to_vec());
    assert_eq!(c.states, vec![("x".to_owned(), b"2".to_vec())]);
}
