//! The read API over a real outbox file in a temporary directory.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use call_assembler::{Call, Output, SmdrAssembler, SmdrAssemblerConfig};

use super::*;
use crate::outbox::{Batch, Outcome, SourceRecord};

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdr-sinks-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The complete calls of the captured SMDR day, in the order they completed.
fn calls() -> Vec<Call> {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/smdr/ccbc_rw180105_day_34fields.txt"),
    )
    .unwrap();
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| l.len() > 2) {
        asm.handle_record(
            Instant::now(),
            &smdr_parse::SmdrRecord::parse(line).unwrap(),
        );
        while let Some(o) = asm.poll_output() {
            if let Output::Call(c) = o {
                out.push(c);
            }
        }
    }
    out
}

/// An outbox with the SMDR day in it, delivered to `redis` and `webhook`: the first call
/// delivered to both, the second dead for redis, the rest pending. Returns its path and the
/// calls in commit order.
fn filled(name: &str) -> (PathBuf, Vec<Call>) {
    let path = dir(name).join("outbox.db");
    let sinks = ["redis".to_owned(), "webhook".to_owned()];
    let mut o = Outbox::open(&path, &sinks).unwrap();
    let calls = calls();
    o.commit(
        &Batch {
            calls: calls.clone(),
            ..Batch::default()
        },
        1_000,
    )
    .unwrap();
    for sink in &sinks {
        o.record(sink, &[(calls[0].id.clone(), Outcome::Delivered)], 2_000)
            .unwrap();
    }
    o.record(
        "redis",
        &[(
            calls[1].id.clone(),
            Outcome::Dead {
                error: "WRONGTYPE".into(),
            },
        )],
        3_000,
    )
    .unwrap();
    (path, calls)
}

fn newest_first(calls: &[Call]) -> Vec<&str> {
    calls.iter().rev().map(|c| c.id.as_str()).collect()
}

#[test]
fn a_missing_database_reads_as_an_empty_store_and_is_not_created() {
    let path = dir("missing").join("none.db");
    let s = StoreReader::open(&path).unwrap();
    let all = CallFilter::default();
    assert_eq!(
        s.list_calls(&all, PageRequest::new(1, 50)).unwrap(),
        Listing::default()
    );
    assert_eq!(
        s.list_bodies(&all, PageRequest::new(1, 50)).unwrap(),
        Listing::default()
    );
    assert_eq!(s.call("x").unwrap(), None);
    assert_eq!(s.dead_letters(10).unwrap(), []);
    assert_eq!(s.calls_per_hour(&all).unwrap(), None);
    assert_eq!(s.delivery_counts().unwrap(), []);
    assert_eq!(s.records_page(1, 20).unwrap(), Vec::<Vec<u8>>::new());
    let counts = sink_counts(&path, &["webhook".into(), "redis".into()]).unwrap();
    let names: Vec<&str> = counts.iter().map(|c| c.sink.as_str()).collect();
    assert_eq!(names, ["redis", "webhook"]);
    assert!(counts.iter().all(|c| *c
        == SinkCounts {
            sink: c.sink.clone(),
            ..SinkCounts::default()
        }));
    assert!(!path.exists(), "a reader never creates the database");
}

#[test]
fn a_database_without_the_call_store_reads_as_empty() {
    let path = dir("other").join("other.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE unrelated (x INTEGER);")
        .unwrap();
    let s = StoreReader::open(&path).unwrap();
    let listing = s
        .list_calls(&CallFilter::default(), PageRequest::new(1, 5))
        .unwrap();
    assert_eq!(listing, Listing::default());
    assert_eq!(s.delivery_counts().unwrap(), []);
    assert_eq!(s.records_page(1, 20).unwrap(), Vec::<Vec<u8>>::new());
}

#[test]
fn lists_pages_newest_first_with_deliveries_and_bodies() {
    let (path, calls) = filled("list");
    let s = StoreReader::open(&path).unwrap();
    let all = CallFilter::default();
    let newest = newest_first(&calls);
    let page = s.list_calls(&all, PageRequest::new(1, 10)).unwrap();
    assert_eq!(page.total, calls.len() as u64);
    let ids: Vec<&str> = page.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, newest[..10]);
    let last = &calls[calls.len() - 1];
    let row = &page.items[0];
    assert_eq!(row.caller, last.caller.as_str());
    assert_eq!(row.called, last.called.as_str());
    assert_eq!(row.duration, i64::from(last.duration));
    assert_eq!((row.answered, row.complete), (last.answered, last.complete));
    assert_eq!(
        row.start_time,
        call_assembler::iso_timestamp(&last.start_time).as_str()
    );
    let sinks: Vec<(&str, DeliveryState)> = row
        .deliveries
        .iter()
        .map(|d| (d.sink.as_str(), d.state))
        .collect();
    assert_eq!(
        sinks,
        [
            ("redis", DeliveryState::Pending),
            ("webhook", DeliveryState::Pending)
        ]
    );
    assert_eq!(row.deliveries[0].created_ms, 1_000);

    // Page 2 follows page 1; past the end is empty but still counts every match.
    let page2 = s.list_bodies(&all, PageRequest::new(2, 10)).unwrap();
    let ids: Vec<&str> = page2.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, newest[10..20]);
    let body: serde_json::Value = serde_json::from_slice(&page2.items[0].body).unwrap();
    assert_eq!(body["id"], newest[10]);
    let past = s.list_bodies(&all, PageRequest::new(1000, 10)).unwrap();
    assert_eq!((past.total, past.items.len()), (calls.len() as u64, 0));
}

#[test]
fn filters_by_time_number_direction_and_completeness() {
    let (path, calls) = filled("filter");
    let s = StoreReader::open(&path).unwrap();
    let check = |filter: CallFilter, expect: &dyn Fn(&Call) -> bool| {
        let want: Vec<&str> = calls
            .iter()
            .rev()
            .filter(|c| expect(c))
            .map(|c| c.id.as_str())
            .collect();
        let got = s.list_bodies(&filter, PageRequest::new(1, 1000)).unwrap();
        let ids: Vec<&str> = got.items.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, want, "{filter:?}");
        assert_eq!(got.total, want.len() as u64, "{filter:?}");
        want.len()
    };
    let start = |c: &Call| call_assembler::iso_timestamp(&c.start_time).to_string();
    let noon = "2018-01-05T12".to_owned();
    let n = check(
        CallFilter {
            from: Some(noon.clone()),
            ..CallFilter::default()
        },
        &|c| start(c) >= noon,
    );
    assert!(n > 0 && n < calls.len());
    // `to` is an inclusive prefix: the whole hour 12.
    check(
        CallFilter {
            to: Some(noon),
            ..CallFilter::default()
        },
        &|c| start(c).as_str() < "2018-01-05T13",
    );
    let number = calls[3].caller.to_string();
    check(
        CallFilter {
            number: Some(number.clone()),
            ..CallFilter::default()
        },
        &|c| c.caller.contains(number.as_str()) || c.called.contains(number.as_str()),
    );
    let n = check(
        CallFilter {
            direction: Some(CallDirection::Inbound),
            complete: Some(true),
            ..CallFilter::default()
        },
        &|c| c.direction == CallDirection::Inbound && c.complete,
    );
    assert!(n > 0);
    let site = calls[0].site.to_string();
    let n = check(
        CallFilter {
            site: Some(site.clone()),
            source: Some(calls[0].source.as_str().to_owned()),
            ..CallFilter::default()
        },
        &|c| c.site == site.as_str() && c.source == calls[0].source,
    );
    assert!(n > 0);
    check(
        CallFilter {
            site: Some("no such site".into()),
            ..CallFilter::default()
        },
        &|_| false,
    );
}

#[test]
fn one_call_with_its_deliveries() {
    let (path, calls) = filled("call");
    let s = StoreReader::open(&path).unwrap();
    let stored = s.call(&calls[1].id).unwrap().unwrap();
    let back: Call = serde_json::from_slice(&stored.body).unwrap();
    assert_eq!(back, calls[1]);
    let redis = &stored.deliveries[0];
    assert_eq!(
        (redis.sink.as_str(), redis.state, redis.attempts),
        ("redis", DeliveryState::Dead, 1)
    );
    assert_eq!(redis.last_error.as_deref(), Some("WRONGTYPE"));
    assert_eq!(redis.done_ms, Some(3_000));
    assert_eq!(stored.deliveries[1].state.as_str(), "pending");
    assert_eq!(s.call("no such call").unwrap(), None);
}

#[test]
fn dead_letters_carry_the_calls_fields() {
    let (path, calls) = filled("dead");
    let s = StoreReader::open(&path).unwrap();
    let dead = s.dead_letters(10).unwrap();
    assert_eq!(
        dead,
        [DeadLetterRow {
            call_id: calls[1].id.clone(),
            sink: "redis".into(),
            attempts: 1,
            last_error: Some("WRONGTYPE".into()),
            done_ms: Some(3_000),
            start_time: Some(call_assembler::iso_timestamp(&calls[1].start_time).to_string()),
            caller: Some(calls[1].caller.to_string()),
            called: Some(calls[1].called.to_string()),
        }]
    );
    assert_eq!(s.dead_letters(0).unwrap(), []);
}

#[test]
fn calls_per_hour_end_at_the_latest_matching_call() {
    let (path, calls) = filled("hours");
    let s = StoreReader::open(&path).unwrap();
    let hours = s.calls_per_hour(&CallFilter::default()).unwrap().unwrap();
    let latest = calls.iter().map(|c| c.start_time).max().unwrap();
    let last_hour = hour_of(&call_assembler::iso_timestamp(&latest)).unwrap();
    assert_eq!(hours.first, last_hour - chrono::TimeDelta::hours(23));
    let in_window = |c: &&Call| {
        let h = hour_of(&call_assembler::iso_timestamp(&c.start_time)).unwrap();
        h >= hours.first && h <= last_hour
    };
    let answered = calls
        .iter()
        .filter(in_window)
        .filter(|c| c.answered)
        .count();
    let unanswered = calls
        .iter()
        .filter(in_window)
        .filter(|c| !c.answered)
        .count();
    let sum = |f: fn(&(u64, u64)) -> u64| hours.counts.iter().map(f).sum::<u64>();
    assert_eq!(sum(|c| c.0), answered as u64);
    assert_eq!(sum(|c| c.1), unanswered as u64);
    assert!(
        hours.counts[23].0 + hours.counts[23].1 > 0,
        "the last hour has a call"
    );

    let none = CallFilter {
        from: Some("2100".into()),
        ..CallFilter::default()
    };
    assert_eq!(s.calls_per_hour(&none).unwrap(), None);
}

#[test]
fn counts_and_records() {
    let (path, calls) = filled("counts");
    let s = StoreReader::open(&path).unwrap();
    let n = calls.len() as u64;
    let counts = s.delivery_counts().unwrap();
    assert_eq!(
        counts,
        [
            SinkCounts {
                sink: "redis".into(),
                pending: n - 2,
                delivered: 1,
                dead: 1,
                oldest_pending_ms: Some(1_000),
            },
            SinkCounts {
                sink: "webhook".into(),
                pending: n - 1,
                delivered: 1,
                dead: 0,
                oldest_pending_ms: Some(1_000),
            },
        ]
    );
    let with_configured = sink_counts(&path, &["jsonl".into()]).unwrap();
    let names: Vec<&str> = with_configured.iter().map(|c| c.sink.as_str()).collect();
    assert_eq!(names, ["jsonl", "redis", "webhook"]);

    assert_eq!(s.records_page(1, 20).unwrap(), Vec::<Vec<u8>>::new());
    let mut o = Outbox::open(&path, &[]).unwrap();
    let records: Vec<SourceRecord> = (1..=25)
        .map(|i| SourceRecord {
            source: "cms".into(),
            session: "s".into(),
            index: i,
            body: format!("{{\"n\":{i}}}").into_bytes(),
        })
        .collect();
    o.commit(
        &Batch {
            records,
            ..Batch::default()
        },
        5_000,
    )
    .unwrap();
    let page1 = s.records_page(1, 20).unwrap();
    assert_eq!(page1.len(), 20);
    assert_eq!(page1[0], b"{\"n\":25}");
    let page2 = s.records_page(2, 20).unwrap();
    assert_eq!(page2.len(), 5);
    assert_eq!(page2[4], b"{\"n\":1}");
}

#[test]
fn a_database_from_before_records_were_kept_has_no_records() {
    let (path, _) = filled("old");
    Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE source_records;")
        .unwrap();
    let s = StoreReader::open(&path).unwrap();
    assert_eq!(s.records_page(1, 20).unwrap(), Vec::<Vec<u8>>::new());
}

#[test]
fn calls_per_hour_sort_calls_of_several_zones_on_the_utc_axis() {
    // Two calls at 09:30 local: one in London (summer, 08:30Z), one in New York (13:30Z), and
    // one stored before UTC starts existed (its local start, 11:15, stands in).
    let path = dir("hours-utc").join("outbox.db");
    let mut o = Outbox::open(&path, &[]).unwrap();
    let mut all = calls();
    let mut london = all.remove(0);
    let mut new_york = all.remove(0);
    let mut old = all.remove(0);
    for (c, zone) in [
        (&mut london, "Europe/London"),
        (&mut new_york, "America/New_York"),
    ] {
        c.start_time = "2018-07-02T09:30:00".parse().unwrap();
        c.end_time = "2018-07-02T09:31:00".parse().unwrap();
        c.set_utc_times(&zone.parse().unwrap());
    }
    old.start_time = "2018-07-02T11:15:00".parse().unwrap();
    (old.start_utc, old.end_utc, old.utc_offset) = (None, None, None);
    o.commit(
        &Batch {
            calls: vec![london, new_york, old],
            ..Batch::default()
        },
        1_000,
    )
    .unwrap();
    drop(o);
    let s = StoreReader::open(&path).unwrap();
    let hours = s.calls_per_hour(&CallFilter::default()).unwrap().unwrap();
    assert_eq!(hours.first, hour_of("2018-07-01T14").unwrap());
    let at = |h: &str| {
        let i = (hour_of(h).unwrap() - hours.first).num_hours();
        let (a, u) = hours.counts[usize::try_from(i).unwrap()];
        a + u
    };
    assert_eq!(at("2018-07-02T08"), 1, "London's call at 08:30Z");
    assert_eq!(at("2018-07-02T13"), 1, "New York's call at 13:30Z");
    assert_eq!(at("2018-07-02T11"), 1, "the old call at its local start");
    assert_eq!(at("2018-07-02T09"), 0, "no call at 09 UTC");
}
