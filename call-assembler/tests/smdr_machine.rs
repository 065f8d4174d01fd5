//! The SMDR assembler driven by hand, with time moved by the test.

// Tests may unwrap, index and panic; the base `Instant` of synthetic time has to come from the clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::time::{Duration, Instant};

use call_assembler::{Anomaly, Call, FlushReason, Output, SmdrAssembler, SmdrAssemblerConfig};
use proptest::prelude::*;
use smdr_parse::SmdrRecord;

const HOUR: Duration = Duration::from_secs(3600);

/// A 34-field record line for `call_id` started at `start` (HH:MM:SS on 2017/05/26).
fn line(call_id: u64, start: &str, cont: bool, party: &str) -> Vec<u8> {
    format!(
        "2017/05/26 {start},00:00:17,3,6049471660,I,203,6049471660,,0,{call_id},{},{party},Name,T9001,Line 1.0,0,0,,,,,,,,,,,,,,192.168.1.21,2,0.0.0.0,0\r\n",
        u8::from(cont)
    )
    .into_bytes()
}

fn feed(asm: &mut SmdrAssembler, now: Instant, l: &[u8]) -> Vec<Output> {
    asm.handle_record(now, &SmdrRecord::parse(l).unwrap());
    drain(asm)
}

fn drain(asm: &mut SmdrAssembler) -> Vec<Output> {
    std::iter::from_fn(|| asm.poll_output()).collect()
}

fn calls(outs: Vec<Output>) -> Vec<Call> {
    outs.into_iter()
        .filter_map(|o| match o {
            Output::Call(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn idle_call_is_flushed_at_its_deadline_and_not_before() {
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let t0 = Instant::now();
    assert!(feed(&mut asm, t0, &line(1000001, "10:00:00", true, "E201")).is_empty());
    assert_eq!(asm.poll_timeout(), Some(t0 + 4 * HOUR));
    // A second record moves the deadline.
    assert!(
        feed(
            &mut asm,
            t0 + HOUR,
            &line(1000001, "10:00:00", true, "E202")
        )
        .is_empty()
    );
    assert_eq!(asm.poll_timeout(), Some(t0 + 5 * HOUR));
    asm.handle_timeout(t0 + 4 * HOUR);
    assert!(
        drain(&mut asm).is_empty(),
        "an early or extra timeout does nothing"
    );
    asm.handle_timeout(t0 + 5 * HOUR);
    let c = calls(drain(&mut asm));
    assert_eq!(c.len(), 1);
    assert!(!c[0].complete);
    assert_eq!(c[0].flush_reason, Some(FlushReason::IdleTimeout));
    assert_eq!(c[0].records.len(), 2);
    assert_eq!(asm.poll_timeout(), None);
    assert!(asm.is_idle());
}

#[test]
fn records_after_a_flush_form_a_later_part_with_its_own_id() {
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let t0 = Instant::now();
    feed(&mut asm, t0, &line(1000001, "10:00:00", true, "E201"));
    asm.handle_timeout(t0 + 4 * HOUR);
    let flushed = calls(drain(&mut asm));
    assert_eq!(flushed.len(), 1);
    assert_eq!((flushed[0].part, flushed[0].complete), (0, false));
    // The final record comes hours late: it is reported and delivered under a new id.
    let out = feed(
        &mut asm,
        t0 + 5 * HOUR,
        &line(1000001, "10:00:00", false, "E202"),
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Anomaly(Anomaly::LateRecord {
            call_id: 1000001,
            part: 1,
            ..
        })
    )));
    let late = calls(out);
    assert_eq!(late.len(), 1);
    assert_eq!((late[0].part, late[0].complete), (1, true));
    assert_ne!(late[0].id, flushed[0].id);
    assert_eq!(late[0].call_id, flushed[0].call_id);
    assert_eq!(asm.stats().late, 1);
    // A call that was never flushed keeps the id of part 0, which has no suffix.
    let whole = calls(feed(
        &mut asm,
        t0,
        &line(1000002, "10:01:00", false, "E203"),
    ));
    assert_eq!(
        whole[0].id,
        call_assembler::stable_id(
            call_assembler::Source::Smdr,
            "",
            "1000002/2017-05-26T10:01:00"
        )
    );
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let t0 = Instant::now() + HOUR;
    feed(&mut asm, t0, &line(1000001, "10:00:00", true, "E201"));
    feed(
        &mut asm,
        t0 - HOUR,
        &line(1000002, "10:00:01", true, "E202"),
    );
    // The second call's deadline counts from t0, not from the earlier `now`.
    asm.handle_timeout(t0 + 4 * HOUR);
    assert_eq!(calls(drain(&mut asm)).len(), 2);
}

#[test]
fn final_record_completes_and_a_later_record_starts_a_new_call() {
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let t0 = Instant::now();
    feed(&mut asm, t0, &line(1000001, "10:00:00", true, "E201"));
    let c = calls(feed(
        &mut asm,
        t0,
        &line(1000001, "10:00:00", false, "E202"),
    ));
    assert_eq!(c.len(), 1);
    assert!(c[0].complete);
    assert_eq!(c[0].records.len(), 2);
    assert_eq!(c[0].parties.len(), 3, "{:?}", c[0].parties);
    assert_eq!(asm.open_calls(), 0);
    feed(&mut asm, t0, &line(1000001, "10:00:00", true, "E203"));
    assert_eq!(asm.open_calls(), 1);
}

#[test]
fn duplicate_record_is_dropped_and_reported() {
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let t0 = Instant::now();
    let l = line(1000001, "10:00:00", true, "E201");
    feed(&mut asm, t0, &l);
    let out = feed(&mut asm, t0, &l);
    assert!(matches!(
        out.as_slice(),
        [Output::Anomaly(Anomaly::DuplicateRecord {
            call_id: 1000001,
            ..
        })]
    ));
    let c = calls(feed(
        &mut asm,
        t0,
        &line(1000001, "10:00:00", false, "E202"),
    ));
    assert_eq!(c[0].records.len(), 2);
    assert_eq!(asm.stats().duplicates, 1);
}

#[test]
fn open_calls_are_bounded() {
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig {
        max_open_calls: 2,
        ..SmdrAssemblerConfig::default()
    });
    let t0 = Instant::now();
    feed(&mut asm, t0, &line(1000001, "10:00:00", true, "E201"));
    feed(&mut asm, t0, &line(1000002, "10:00:01", true, "E202"));
    // Touch the first call so the second is now the least recently active.
    feed(&mut asm, t0, &line(1000001, "10:00:00", true, "E203"));
    let c = calls(feed(&mut asm, t0, &line(1000003, "10:00:02", true, "E204")));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].call_id, "1000002");
    assert_eq!(c[0].flush_reason, Some(FlushReason::Evicted));
    assert_eq!(asm.open_calls(), 2);
}

#[test]
fn restart_flushes_open_calls_of_the_old_epoch() {
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let t0 = Instant::now();
    feed(&mut asm, t0, &line(1036690, "12:00:00", true, "E201"));
    feed(&mut asm, t0, &line(1036692, "12:44:55", false, "E202"));
    // The PBX reboots: the connection drops, and after it Call IDs start again at 1000000.
    asm.handle_disconnect();
    let out = feed(&mut asm, t0, &line(1000000, "12:54:46", false, "E203"));
    let flushed: Vec<&Call> = out
        .iter()
        .filter_map(|o| match o {
            Output::Call(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(flushed.len(), 2);
    assert_eq!(flushed[0].call_id, "1036690");
    assert_eq!(flushed[0].flush_reason, Some(FlushReason::PbxRestart));
    assert_eq!(flushed[0].boot_epoch, 0);
    assert_eq!(flushed[1].call_id, "1000000");
    assert_eq!(flushed[1].boot_epoch, 1);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Anomaly(Anomaly::PbxRestart {
            epoch: 1,
            call_id: 1000000,
            ..
        })
    )));
    // A low id that started *before* the highest one is not a restart.
    feed(&mut asm, t0, &line(1000005, "13:00:00", false, "E203"));
    let out = feed(&mut asm, t0, &line(1000003, "12:59:00", false, "E203"));
    assert_eq!(calls(out).len(), 1);
    assert_eq!(asm.epoch(), 1);
}

#[test]
fn export_and_restore_continue_the_same_calls() {
    let lines = [
        line(1000001, "10:00:00", true, "E201"),
        line(1000002, "10:00:05", true, "E202"),
        line(1000002, "10:00:05", true, "E203"),
        line(1000003, "10:00:09", false, "E204"),
        line(1000001, "10:00:00", false, "E205"),
        line(1000002, "10:00:05", false, "E206"),
    ];
    let t0 = Instant::now();
    let run = |split: Option<usize>| -> Vec<Call> {
        let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if split == Some(i) {
                let state = asm.export_state();
                let json = serde_json::to_string(&state).unwrap();
                let state = serde_json::from_str(&json).unwrap();
                let (restored, bad) =
                    SmdrAssembler::restore(SmdrAssemblerConfig::default(), t0, &state);
                assert!(bad.is_empty());
                asm = restored;
            }
            out.extend(calls(feed(&mut asm, t0, l)));
        }
        out
    };
    let straight = run(None);
    assert_eq!(straight.len(), 3);
    for i in 0..lines.len() {
        assert_eq!(run(Some(i)), straight, "restored before line {i}");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Record {
        id: u8,
        start: u8,
        cont: bool,
        party: u8,
    },
    Advance(u32),
    Back(u32),
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..12, 0u8..4, any::<bool>(), 0u8..4)
            .prop_map(|(id, start, cont, party)| Op::Record { id, start, cont, party }),
        2 => (0u32..20_000).prop_map(Op::Advance),
        1 => (0u32..5_000).prop_map(Op::Back),
        1 => Just(Op::Timeout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Every record ends up in exactly one emitted call (or is reported as a duplicate), no
    /// call is emitted twice, deadlines lie in the future after a timeout, and a final flush
    /// leaves the machine idle.
    #[test]
    fn records_are_neither_lost_nor_doubled(ops in proptest::collection::vec(op(), 0..200)) {
        let config = SmdrAssemblerConfig {
            idle_timeout: HOUR,
            max_open_calls: 5,
            ..SmdrAssemblerConfig::default()
        };
        let mut asm = SmdrAssembler::new(config);
        let base = Instant::now() + 10 * HOUR;
        let mut offset = Duration::ZERO;
        let mut fed = 0usize;
        let mut out = Vec::new();
        for op in ops {
            match op {
                Op::Record { id, start, cont, party } => {
                    let l = line(
                        1_000_100 + u64::from(id),
                        &format!("10:{:02}:00", u32::from(start) * 10 + u32::from(id)),
                        cont,
                        &format!("E20{party}"),
                    );
                    fed += 1;
                    out.extend(feed(&mut asm, base + offset, &l));
                }
                Op::Advance(s) => offset += Duration::from_secs(u64::from(s)),
                Op::Back(s) => {
                    // Time going backwards must be harmless.
                    asm.handle_timeout(base + offset.saturating_sub(Duration::from_secs(u64::from(s))));
                    out.extend(drain(&mut asm));
                }
                Op::Timeout => {
                    asm.handle_timeout(base + offset);
                    out.extend(drain(&mut asm));
                    if let Some(t) = asm.poll_timeout() {
                        prop_assert!(t > base + offset);
                    }
                }
            }
            prop_assert!(asm.open_calls() <= 5);
        }
        asm.flush(base + offset);
        out.extend(drain(&mut asm));
        prop_assert!(asm.is_idle());
        prop_assert_eq!(asm.poll_timeout(), None);
        let duplicates = out.iter().filter(|o| matches!(o, Output::Anomaly(Anomaly::DuplicateRecord { .. }))).count();
        let in_calls: usize = calls(out.clone()).iter().map(|c| c.records.len()).sum();
        prop_assert_eq!(in_calls + duplicates, fed);
        // A call's records share its key, and only its last record may be final.
        for c in calls(out) {
            let first = &c.records[0];
            prop_assert!(c.records.iter().all(|r| (r.call_id, r.call_start) == (first.call_id, first.call_start)));
            let last = c.records.len() - 1;
            prop_assert!(c.records[..last].iter().all(|r| r.continuation));
            prop_assert_eq!(c.complete, !c.records[last].continuation);
        }
    }
}
