//! The SMDR assembler against hostile input: forged restart lines, calls of very many records.
//! Sans-IO: time is moved by hand.

// Tests may unwrap, index and panic; the base `Instant` of synthetic time has to come from the clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use call_assembler::{Anomaly, Call, FlushReason, Output, SmdrAssembler, SmdrAssemblerConfig};
use proptest::prelude::*;
use smdr_parse::SmdrRecord;

/// A 34-field record line for `call_id` started at `start` (HH:MM:SS on 2017/05/26); `talk`
/// seconds of connected time tell records of one call apart.
fn line(call_id: u64, start: &str, cont: bool, talk: u32) -> Vec<u8> {
    format!(
        "2017/05/26 {start},{:02}:{:02}:{:02},3,6049471660,I,203,6049471660,,0,{call_id},{},E201,Name,T9001,Line 1.0,0,0,,,,,,,,,,,,,,192.168.1.21,2,0.0.0.0,0\r\n",
        talk / 3600,
        talk / 60 % 60,
        talk % 60,
        u8::from(cont)
    )
    .into_bytes()
}

fn feed(asm: &mut SmdrAssembler, now: Instant, l: &[u8]) -> Vec<Output> {
    asm.handle_record(now, &SmdrRecord::parse(l).unwrap());
    std::iter::from_fn(|| asm.poll_output()).collect()
}

fn calls(outs: &[Output]) -> Vec<&Call> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Call(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// Two calls open in a mature epoch (ids far above the restart window).
fn two_open_calls(asm: &mut SmdrAssembler, t0: Instant) {
    feed(asm, t0, &line(1_036_690, "12:00:00", true, 1));
    feed(asm, t0, &line(1_036_691, "12:01:00", true, 1));
    feed(asm, t0, &line(1_036_692, "12:44:55", false, 1));
}

#[test]
fn a_lone_low_call_id_line_mid_stream_is_an_anomaly_not_a_flush() {
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let t0 = Instant::now();
    two_open_calls(&mut asm, t0);
    // The forged line: a low Call ID that started after the highest call.
    let out = feed(&mut asm, t0, &line(1_000_000, "12:54:46", false, 1));
    let c = calls(&out);
    assert_eq!(c.len(), 1, "the forged line is its own call: {out:?}");
    assert_eq!(c[0].call_id, "1000000");
    assert!(c[0].complete);
    assert_eq!(c[0].boot_epoch, 0);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Anomaly(Anomaly::UnconfirmedRestart {
            call_id: 1_000_000,
            ..
        })
    )));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Anomaly(Anomaly::PbxRestart { .. })))
    );
    assert_eq!(asm.open_calls(), 2);
    assert_eq!(asm.epoch(), 0);
    assert_eq!(asm.stats().unconfirmed_restarts, 1);
    // The genuine final records complete both calls, whole (no later part).
    let a = feed(&mut asm, t0, &line(1_036_690, "12:00:00", false, 2));
    let b = feed(&mut asm, t0, &line(1_036_691, "12:01:00", false, 2));
    for (out, id) in [(a, "1036690"), (b, "1036691")] {
        let c = calls(&out);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].call_id, id);
        assert!(c[0].complete);
        assert_eq!(c[0].part, 0);
        assert_eq!(c[0].records.len(), 2);
    }
}

#[test]
fn a_restart_like_line_right_after_a_reconnect_is_a_restart() {
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let t0 = Instant::now();
    two_open_calls(&mut asm, t0);
    asm.handle_disconnect();
    let out = feed(&mut asm, t0, &line(1_000_000, "12:54:46", false, 1));
    let c = calls(&out);
    assert_eq!(c.len(), 3);
    assert!(
        c[..2]
            .iter()
            .all(|c| c.flush_reason == Some(FlushReason::PbxRestart))
    );
    assert_eq!(c[2].boot_epoch, 1);
    assert_eq!(asm.epoch(), 1);
}

#[test]
fn a_reconnect_arms_only_the_next_record() {
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let t0 = Instant::now();
    two_open_calls(&mut asm, t0);
    asm.handle_disconnect();
    // The PBX resends what it buffered: an ordinary record. Then a forged line.
    feed(&mut asm, t0, &line(1_036_693, "12:50:00", false, 1));
    let out = feed(&mut asm, t0, &line(1_000_000, "12:54:46", false, 1));
    assert_eq!(calls(&out).len(), 1);
    assert_eq!(asm.open_calls(), 2);
    assert_eq!(asm.epoch(), 0);
}

#[test]
fn a_run_of_restart_like_records_confirms_a_restart_without_a_reconnect() {
    let config = SmdrAssemblerConfig {
        restart_confirm_records: 3,
        ..SmdrAssemblerConfig::default()
    };
    let mut asm = SmdrAssembler::new(config);
    let t0 = Instant::now();
    two_open_calls(&mut asm, t0);
    // Two restart-like records, then an ordinary one: the run is broken, nothing flushed.
    feed(&mut asm, t0, &line(1_000_000, "12:54:46", false, 1));
    feed(&mut asm, t0, &line(1_000_001, "12:55:00", false, 1));
    feed(&mut asm, t0, &line(1_036_694, "12:56:00", false, 1));
    assert_eq!((asm.open_calls(), asm.epoch()), (2, 0));
    // Three in a row (one opening a call of its own): the restart is confirmed at the third.
    feed(&mut asm, t0, &line(1_000_002, "12:57:00", true, 1));
    feed(&mut asm, t0, &line(1_000_003, "12:57:30", false, 1));
    let out = feed(&mut asm, t0, &line(1_000_004, "12:58:00", false, 1));
    let c = calls(&out);
    assert_eq!(c.len(), 3, "{out:?}");
    assert!(
        c[..2]
            .iter()
            .all(|c| c.flush_reason == Some(FlushReason::PbxRestart))
    );
    assert_eq!(asm.epoch(), 1);
    // The call the run opened goes on, in the new epoch.
    assert_eq!(asm.open_calls(), 1);
    let out = feed(&mut asm, t0, &line(1_000_002, "12:57:00", false, 2));
    let c = calls(&out);
    assert_eq!(c.len(), 1);
    assert!(c[0].complete);
    assert_eq!((c[0].boot_epoch, c[0].records.len()), (1, 2));
}

#[test]
fn the_restart_evidence_survives_export_and_restore() {
    let config = SmdrAssemblerConfig {
        restart_confirm_records: 3,
        ..SmdrAssemblerConfig::default()
    };
    let t0 = Instant::now();
    let mut asm = SmdrAssembler::new(config.clone());
    two_open_calls(&mut asm, t0);
    feed(&mut asm, t0, &line(1_000_000, "12:54:46", false, 1));
    feed(&mut asm, t0, &line(1_000_001, "12:55:00", false, 1));
    let state = asm.export_state();
    let json = serde_json::to_string(&state).unwrap();
    let (mut restored, bad) =
        SmdrAssembler::restore(config.clone(), t0, &serde_json::from_str(&json).unwrap());
    assert!(bad.is_empty());
    let out = feed(&mut restored, t0, &line(1_000_002, "12:56:00", false, 1));
    assert_eq!(calls(&out).len(), 3, "the run goes on after a restore");
    assert_eq!(restored.epoch(), 1);
    // A disconnect is saved too.
    let mut asm = SmdrAssembler::new(config.clone());
    two_open_calls(&mut asm, t0);
    asm.handle_disconnect();
    let (mut restored, _) = SmdrAssembler::restore(config, t0, &asm.export_state());
    let out = feed(&mut restored, t0, &line(1_000_000, "12:54:46", false, 1));
    assert_eq!(calls(&out).len(), 3);
}

#[test]
fn a_call_past_the_record_limit_comes_out_in_parts_with_an_anomaly() {
    let config = SmdrAssemblerConfig {
        max_records_per_call: 1_000,
        ..SmdrAssemblerConfig::default()
    };
    let mut asm = SmdrAssembler::new(config);
    let t0 = Instant::now();
    let mut out = Vec::new();
    for i in 0..2_500u32 {
        out.extend(feed(&mut asm, t0, &line(1_036_690, "12:00:00", true, i)));
    }
    out.extend(feed(
        &mut asm,
        t0,
        &line(1_036_690, "12:00:00", false, 9_999),
    ));
    let c = calls(&out);
    let shape: Vec<(u32, usize, bool, Option<FlushReason>)> = c
        .iter()
        .map(|c| (c.part, c.records.len(), c.complete, c.flush_reason))
        .collect();
    assert_eq!(
        shape,
        [
            (0, 1_000, false, Some(FlushReason::RecordLimit)),
            (1, 1_000, false, Some(FlushReason::RecordLimit)),
            (2, 501, true, None),
        ]
    );
    let ids: BTreeSet<&str> = c.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "each part has its own id");
    let splits: Vec<u32> = out
        .iter()
        .filter_map(|o| match o {
            Output::Anomaly(Anomaly::CallSplit { part, .. }) => Some(*part),
            _ => None,
        })
        .collect();
    assert_eq!(splits, [1, 2]);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Anomaly(Anomaly::LateRecord { .. }))),
        "a split is not reported as late records"
    );
    assert_eq!(asm.stats().splits, 2);
}

#[test]
fn duplicate_checks_are_not_quadratic() {
    // 130,000 records in one part: with a scan per record this is 8.4e9 comparisons.
    let config = SmdrAssemblerConfig {
        max_records_per_call: usize::MAX,
        ..SmdrAssemblerConfig::default()
    };
    let mut asm = SmdrAssembler::new(config);
    let t0 = Instant::now();
    let lines: Vec<Vec<u8>> = (0..130_000u32)
        .map(|i| line(1_036_690, "12:00:00", true, i))
        .collect();
    let started = Instant::now();
    for l in &lines {
        asm.handle_record(t0, &SmdrRecord::parse(l).unwrap());
    }
    // A duplicate is still found.
    let out = feed(&mut asm, t0, &lines[77]);
    assert!(matches!(
        out.as_slice(),
        [Output::Anomaly(Anomaly::DuplicateRecord { .. })]
    ));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(asm.stats().duplicates, 1);
}

#[derive(Debug, Clone)]
enum Op {
    /// A record: call `id` (low ids are restart-like), start slot, continuation, talk.
    Record {
        id: u8,
        start: u8,
        cont: bool,
        talk: u8,
    },
    Disconnect,
    /// Export and restore the state, as a journaling relay does across a crash.
    Restore,
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..12, 0u8..6, any::<bool>(), 0u8..3)
            .prop_map(|(id, start, cont, talk)| Op::Record { id, start, cont, talk }),
        1 => Just(Op::Disconnect),
        1 => Just(Op::Restore),
        1 => (0u32..5_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// With forged low ids, disconnects, restores and a small record limit: every record is in
    /// exactly one call or reported as a duplicate, no part holds more than the limit, a later
    /// part follows an incomplete earlier one under another id, and a run with export/restore points emits what a run without does.
    #[test]
    fn hostile_streams_lose_nothing_and_parts_stay_bounded(ops in proptest::collection::vec(op(), 0..150)) {
        let config = SmdrAssemblerConfig {
            idle_timeout: Duration::from_secs(3600),
            max_records_per_call: 3,
            restart_confirm_records: 3,
            ..SmdrAssemblerConfig::default()
        };
        let base = Instant::now();
        let run = |restores: bool| {
            let mut asm = SmdrAssembler::new(config.clone());
            let mut now = base;
            let mut out = Vec::new();
            let mut fed = 0usize;
            for op in &ops {
                match op {
                    Op::Record { id, start, cont, talk } => {
                        // Ids 0-3 are low (restart-like once the others were seen).
                        let call_id = if *id < 4 { 1_000_000 + u64::from(*id) } else { 1_050_000 + u64::from(*id) };
                        let l = line(call_id, &format!("1{}:00:00", start), *cont, u32::from(*talk));
                        fed += 1;
                        out.extend(feed(&mut asm, now, &l));
                    }
                    Op::Disconnect => asm.handle_disconnect(),
                    Op::Restore if restores => {
                        let (restored, bad) = SmdrAssembler::restore(config.clone(), now, &asm.export_state());
                        assert!(bad.is_empty());
                        // What the relay saves of the restored state besides the open calls.
                        let mut restored = restored;
                        for o in std::iter::from_fn(|| restored.poll_output()) {
                            out.push(o);
                        }
                        asm = restored;
                    }
                    Op::Restore => {}
                    Op::Advance(s) => {
                        now += Duration::from_secs(u64::from(*s));
                        asm.handle_timeout(now);
                        out.extend(std::iter::from_fn(|| asm.poll_output()));
                    }
                }
            }
            asm.flush(now);
            out.extend(std::iter::from_fn(|| asm.poll_output()));
            (out, fed)
        };
        let (out, fed) = run(false);
        let duplicates = out.iter().filter(|o| matches!(o, Output::Anomaly(Anomaly::DuplicateRecord { .. }))).count();
        let all = calls(&out);
        let in_calls: usize = all.iter().map(|c| c.records.len()).sum();
        prop_assert_eq!(in_calls + duplicates, fed);
        prop_assert!(all.iter().all(|c| c.records.len() <= 3));
        // A later part follows an incomplete earlier part of the same call, under another id.
        for (i, c) in all.iter().enumerate() {
            if c.part > 0 {
                let earlier = all[..i].iter().rev().find(|e| {
                    (&e.call_id, e.start_time, e.part) == (&c.call_id, c.start_time, c.part - 1)
                });
                prop_assert!(earlier.is_some_and(|e| !e.complete && e.id != c.id), "part {} of {}", c.part, c.call_id);
            }
        }
        // Restores change the idle deadlines (restored calls start a fresh one) but nothing
        // else: compare without idle timeouts in play.
        if !ops.iter().any(|o| matches!(o, Op::Advance(_))) {
            let (again, _) = run(true);
            let summary = |o: &[Output]| -> Vec<(String, usize, bool, u32)> {
                calls(o).iter().map(|c| (c.id.to_string(), c.records.len(), c.complete, c.boot_epoch)).collect()
            };
            prop_assert_eq!(summary(&out), summary(&again));
        }
    }
}
