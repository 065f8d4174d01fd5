use super::*;
use crate::SmdrAssemblerConfig;
use crate::feed::SmdrFeed;

fn build(now: Instant, _now_ms: i64, saved: &Restored) -> SmdrFeed {
    let config = SmdrAssemblerConfig {
        idle_timeout: Duration::from_secs(3600),
        ..SmdrAssemblerConfig::default()
    };
    SmdrFeed::restore("smdr", config, now, saved)
}

/// The capture in groups of 7 whole lines.
fn inputs() -> Vec<Vec<u8>> {
    lines(&fixture("smdr/ccbc_rw150131_first800_30fields.txt"))
        .chunks(7)
        .map(<[Vec<u8>]>::concat)
        .collect()
}

#[test]
fn bytes_in_calls_out_and_the_journal_follows_open_calls() {
    let store = drive(inputs(), Duration::from_secs(5), None, build);
    let calls = store.by_id();
    assert!(calls.len() > 100, "{}", calls.len());
    assert!(
        calls.values().any(|c| c.records.len() > 1),
        "some calls of several records (journaled while open)"
    );
    assert!(calls.values().all(|c| c.complete));
    assert!(store.saved.journal.is_empty(), "{:?}", store.saved.journal);
    assert_eq!(store.rejects, 0);
    assert!(store.saved.state("smdr").is_some(), "the epoch state saved");
}

#[test]
fn a_crash_mid_stream_loses_and_doubles_nothing() {
    let straight = drive(inputs(), Duration::from_secs(5), None, build);
    let mut open = 0;
    for crash in (0..inputs().len() - 1).step_by(3) {
        let crashed = drive(inputs(), Duration::from_secs(5), Some(crash), build);
        assert_same_calls(&straight, &crashed);
        assert!(crashed.saved.journal.is_empty());
        open += crashed.open_at_crash.unwrap();
    }
    assert!(open > 0, "calls were open at some of the crashes");
}

#[test]
fn bad_lines_are_rejected_and_a_line_split_across_reads_is_whole() {
    let now = t0();
    let all = fixture("smdr/ccbc_rw180105_day_34fields.txt");
    let mut whole = build(now, T0_MS, &Restored::default());
    whole.handle_input(now, all.clone());
    whole.handle_end(now);
    let mut want = Store::default();
    want.commit(&mut whole, T0_MS);

    let mut feed = build(now, T0_MS, &Restored::default());
    feed.handle_input(now, b"not an smdr line\n".to_vec());
    let mut store = Store::default();
    for part in all.chunks(977) {
        feed.handle_input(now, part.to_vec());
        store.commit(&mut feed, T0_MS);
    }
    feed.handle_end(now);
    store.commit(&mut feed, T0_MS);
    assert_eq!(store.rejects, want.rejects + 1);
    assert!(matches!(
        store.events.first(),
        Some(Event::BadInput { number: 1, .. })
    ));
    assert_eq!(feed.counts().bad_lines, whole.counts().bad_lines + 1);
    assert_eq!(feed.counts().records, whole.counts().records);
    assert!(!store.calls.is_empty());
    assert_same_calls(&want, &store);
}

#[test]
fn an_idle_call_is_flushed_incomplete_at_its_deadline_and_stays_flushed_after_a_restart() {
    let start = t0();
    let config = SmdrAssemblerConfig {
        idle_timeout: Duration::from_secs(60),
        ..SmdrAssemblerConfig::default()
    };
    let mut feed = SmdrFeed::new("smdr", config.clone(), start);
    // The first record of a two-record call (continuation set), and nothing more.
    let first = b"2008/06/28 09:30:57,00:00:13,7,01707392200,I,299999,299999,,0,1000014160,1,E4750,John Smith,T9002,LINE 1.2,11,0\n";
    feed.handle_input(start, first.to_vec());
    let mut store = Store::default();
    store.commit(&mut feed, T0_MS);
    assert_eq!(store.saved.journal.len(), 1);
    let due = feed.poll_timeout().unwrap();
    assert_eq!(due, start + Duration::from_secs(60));
    feed.handle_timeout(due - Duration::from_millis(1));
    assert!(feed.take_commit().calls.is_empty());
    feed.handle_timeout(due);
    store.commit(&mut feed, wall(start, due));
    assert_eq!(store.calls.len(), 1);
    assert!(!store.calls[0].complete);
    assert!(store.saved.journal.is_empty());
    assert!(
        store.saved.state("smdr/flushed").is_some(),
        "the flushed call is saved"
    );
    // After a restart its last record starts the call's next part, under another id.
    let mut feed = SmdrFeed::restore("smdr", config, due, &store.saved);
    let last = b"2008/06/28 09:30:57,00:00:21,0,01707392200,I,299999,299999,,0,1000014160,0,V9502,VM Channel 2,T9002,LINE 1.2,0,0\n";
    feed.handle_input(due, last.to_vec());
    store.commit(&mut feed, wall(start, due));
    assert_eq!(store.calls.len(), 2);
    assert_eq!(store.calls[1].part, 1);
    assert_ne!(store.calls[0].id, store.calls[1].id);
    assert!(store.events.iter().any(|e| matches!(
        e,
        Event::Anomaly(crate::Anomaly::LateRecord { part: 1, .. })
    )));
}

/// A 34-field line of call `id` started at `start` (HH:MM:SS) with `talk` seconds.
fn hostile_line(id: u64, start: &str, cont: bool, talk: u32) -> Vec<u8> {
    format!(
        "2017/05/26 {start},00:{:02}:{:02},3,6049471660,I,203,6049471660,,0,{id},{},E201,Name,T9001,Line 1.0,0,0,,,,,,,,,,,,,,192.168.1.21,2,0.0.0.0,0\r\n",
        talk / 60 % 60,
        talk % 60,
        u8::from(cont)
    )
    .into_bytes()
}

/// A call of 23 records (past a limit of 5), a forged restart line while it and another are
/// open, then a run of three restart-like records: one input per line.
fn hostile_inputs() -> Vec<Vec<u8>> {
    let mut out = vec![hostile_line(1_036_600, "12:00:00", true, 0)];
    for i in 0..22 {
        out.push(hostile_line(1_036_690, "12:00:00", true, i));
    }
    out.push(hostile_line(1_000_000, "12:54:46", false, 1));
    out.push(hostile_line(1_036_690, "12:00:00", false, 99));
    out.push(hostile_line(1_036_601, "12:56:00", false, 1));
    out.push(hostile_line(1_000_001, "12:57:00", true, 1));
    out.push(hostile_line(1_000_002, "12:57:30", false, 1));
    out.push(hostile_line(1_000_003, "12:58:00", false, 1));
    out.push(hostile_line(1_000_001, "12:57:00", false, 2));
    out
}

fn hostile_build(now: Instant, _now_ms: i64, saved: &Restored) -> SmdrFeed {
    let config = SmdrAssemblerConfig {
        idle_timeout: Duration::from_secs(3600),
        max_records_per_call: 5,
        restart_confirm_records: 3,
        ..SmdrAssemblerConfig::default()
    };
    SmdrFeed::restore("smdr", config, now, saved)
}

#[test]
fn parts_and_restart_runs_survive_a_crash_anywhere() {
    let straight = drive(
        hostile_inputs(),
        Duration::from_secs(1),
        None,
        hostile_build,
    );
    let calls = straight.by_id();
    let long: Vec<&&Call> = calls.values().filter(|c| c.call_id == "1036690").collect();
    let mut parts: Vec<(u32, usize, bool)> = long
        .iter()
        .map(|c| (c.part, c.records.len(), c.complete))
        .collect();
    parts.sort_unstable();
    assert_eq!(
        parts,
        [
            (0, 5, false),
            (1, 5, false),
            (2, 5, false),
            (3, 5, false),
            (4, 3, true)
        ]
    );
    // The forged line flushed nothing; the run of three did: 1036600 was still open.
    let first = calls.values().find(|c| c.call_id == "1036600").unwrap();
    assert_eq!(first.flush_reason, Some(crate::FlushReason::PbxRestart));
    let opened_by_run = calls.values().find(|c| c.call_id == "1000001").unwrap();
    assert!(opened_by_run.complete);
    assert_eq!(opened_by_run.boot_epoch, 1);
    assert!(straight.saved.journal.is_empty());
    for crash in 0..hostile_inputs().len() {
        let crashed = drive(
            hostile_inputs(),
            Duration::from_secs(1),
            Some(crash),
            hostile_build,
        );
        assert_same_calls(&straight, &crashed);
        assert!(crashed.saved.journal.is_empty(), "crash after {crash}");
    }
}

#[test]
fn a_restart_line_after_a_disconnect_flushes_and_a_forged_one_does_not() {
    let now = t0();
    let mut store = Store::default();
    let mut feed = hostile_build(now, T0_MS, &store.saved);
    feed.handle_input(now, hostile_line(1_036_600, "12:00:00", true, 0));
    feed.handle_input(now, hostile_line(1_000_000, "12:54:46", false, 1));
    store.commit(&mut feed, T0_MS);
    assert_eq!(feed.open_calls(), 1, "a forged line flushes nothing");
    assert!(
        store
            .events
            .iter()
            .any(|e| matches!(e, Event::Anomaly(crate::Anomaly::UnconfirmedRestart { .. })))
    );
    feed.handle_disconnect();
    store.commit(&mut feed, T0_MS);
    // The relay crashes between the disconnect and the next record: the disconnect was saved.
    let mut feed = hostile_build(now, T0_MS, &store.saved);
    feed.handle_input(now, hostile_line(1_000_000, "12:59:00", false, 1));
    store.commit(&mut feed, T0_MS);
    assert_eq!(feed.open_calls(), 0);
    assert_eq!(feed.assembler().epoch(), 1);
    assert!(store.saved.journal.is_empty());
}
