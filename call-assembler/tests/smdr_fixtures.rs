//! The SMDR assembler over the real IP Office fixtures.

// Tests may unwrap, index and panic; the base `Instant` of synthetic time has to come from the clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use call_assembler::{Anomaly, Call, FlushReason, Output, SmdrAssembler, SmdrAssemblerConfig};
use chrono::NaiveDateTime;
use serde::Deserialize;
use smdr_parse::{Frame, SmdrFramer, SmdrRecord};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/smdr")
}

/// Non-blank lines of a file with their 1-based line numbers.
fn lines(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut framer = SmdrFramer::default();
    framer.push(bytes);
    let mut out = Vec::new();
    while let Some(f) = framer.next_frame() {
        if let Frame::Line { line, number, .. } = f {
            out.push((number, line.to_vec()));
        }
    }
    if let Some(Frame::Line { line, number, .. }) = framer.finish() {
        out.push((number, line.to_vec()));
    }
    out
}

/// A call as the expected-groups file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Group {
    file: String,
    call_id: String,
    call_start: String,
    lines: Vec<u64>,
    complete: bool,
    final_line: Option<u64>,
}

/// Replays one file through a fresh assembler on synthetic time (one second per line), flushes at
/// the end, and returns the calls as groups of line numbers, in emission order, plus anomalies.
fn replay(file: &str, bytes: &[u8]) -> (Vec<Group>, Vec<Anomaly>, Vec<Call>) {
    // A replayed capture has no connection events: as `smdr-relay --replay` does, one
    // restart-like line is a restart (the fixtures hold reboots minutes apart).
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig {
        restart_confirm_records: 1,
        ..SmdrAssemblerConfig::default()
    });
    let base = Instant::now();
    let mut line_of: HashMap<(u64, NaiveDateTime), VecDeque<u64>> = HashMap::new();
    let mut calls = Vec::new();
    let mut anomalies = Vec::new();
    let mut drain = |asm: &mut SmdrAssembler| {
        while let Some(out) = asm.poll_output() {
            match out {
                Output::Call(c) => calls.push(c),
                Output::Anomaly(a) => anomalies.push(a),
                other => panic!("unexpected output {other:?}"),
            }
        }
    };
    for (i, (number, line)) in lines(bytes).into_iter().enumerate() {
        let r = SmdrRecord::parse(&line).unwrap();
        line_of
            .entry((r.call_id, r.call_start))
            .or_default()
            .push_back(number);
        let now = base + Duration::from_secs(i as u64);
        asm.handle_record(now, &r);
        drain(&mut asm);
    }
    asm.flush(base + Duration::from_secs(1_000_000));
    drain(&mut asm);
    assert!(asm.is_idle());
    assert_eq!(asm.poll_timeout(), None);
    let groups = calls
        .iter()
        .map(|c| {
            let lines: Vec<u64> = c
                .records
                .iter()
                .map(|r| {
                    line_of
                        .get_mut(&(r.call_id, r.call_start))
                        .and_then(VecDeque::pop_front)
                        .unwrap()
                })
                .collect();
            Group {
                file: file.to_owned(),
                call_id: c.call_id.to_string(),
                call_start: c.start.to_string(),
                final_line: c.complete.then(|| *lines.last().unwrap()),
                lines,
                complete: c.complete,
            }
        })
        .collect();
    (groups, anomalies, calls)
}

/// The expected groups of one file in the order the assembler must emit them: complete calls
/// when their final record arrives, then the incomplete ones (flushed at the end of the input)
/// in order of first appearance.
fn expected_in_emission_order(all: &[Group], file: &str) -> Vec<Group> {
    let mut groups: Vec<Group> = all.iter().filter(|g| g.file == file).cloned().collect();
    groups.sort_by_key(|g| (g.final_line.is_none(), g.final_line, g.lines[0]));
    groups
}

#[test]
fn reproduces_expected_groups_of_every_ccbc_file() {
    let dir = fixtures().join("ccbc");
    let expected: Vec<Group> = std::fs::read_to_string(dir.join("expected_groups.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut files: Vec<String> = expected.iter().map(|g| g.file.clone()).collect();
    files.dedup();
    assert_eq!(files.len(), 8);
    let (mut complete, mut incomplete, mut restarts) = (0, 0, 0);
    for file in &files {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let (got, anomalies, calls) = replay(file, &bytes);
        let want = expected_in_emission_order(&expected, file);
        assert_eq!(got.len(), want.len(), "{file}: number of calls");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{file}");
        }
        complete += calls.iter().filter(|c| c.complete).count();
        incomplete += calls.iter().filter(|c| !c.complete).count();
        for c in calls.iter().filter(|c| !c.complete) {
            assert_eq!(c.flush_reason, Some(FlushReason::EndOfInput), "{file}");
        }
        restarts += anomalies
            .iter()
            .filter(|a| matches!(a, Anomaly::PbxRestart { .. }))
            .count();
    }
    assert_eq!((complete, incomplete), (4102, 2));
    // Two reboots on 2017-05-26, one on 2017-07-26, three on 2019-10-10.
    assert_eq!(restarts, 6);
}

#[test]
fn reboots_give_calls_distinct_ids_and_epochs() {
    let file = "ccbc_2017-05-26_fw-upgrade_two-reboots.txt";
    let bytes = std::fs::read(fixtures().join("ccbc").join(file)).unwrap();
    let (_, anomalies, calls) = replay(file, &bytes);
    let epochs: Vec<u32> = anomalies
        .iter()
        .filter_map(|a| match a {
            Anomaly::PbxRestart { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect();
    assert_eq!(epochs, [1, 2]);
    // Call ID 1000000 is used by two calls, one per epoch, with different ids.
    let zero: Vec<&Call> = calls.iter().filter(|c| c.call_id == "1000000").collect();
    assert_eq!(zero.len(), 2);
    assert_ne!(zero[0].id, zero[1].id);
    assert_eq!((zero[0].boot_epoch, zero[1].boot_epoch), (1, 2));
    let mut ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), calls.len(), "every call has its own id");
}

#[test]
fn ids_are_stable_across_runs_and_site_scoped() {
    let file = "ccbc_2017-12-16_transfers.txt";
    let bytes = std::fs::read(fixtures().join("ccbc").join(file)).unwrap();
    let (_, _, a) = replay(file, &bytes);
    let (_, _, b) = replay(file, &bytes);
    assert_eq!(a, b);
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig {
        site: "other-site".into(),
        ..SmdrAssemblerConfig::default()
    });
    let (_, line) = &lines(&bytes)[0];
    asm.handle_record(Instant::now(), &SmdrRecord::parse(line).unwrap());
    let Some(Output::Call(c)) = asm.poll_output() else {
        panic!()
    };
    assert_ne!(c.id, a[0].id);
    assert_eq!(c.site, "other-site");
}

/// The split-stream fixture in the three chunks its author wrote gives the same calls as the
/// whole file at once.
#[test]
fn split_stream_in_three_chunks() {
    let bytes = std::fs::read(fixtures().join("ccbc_tcp_split_stream_3chunks.txt")).unwrap();
    let whole = assemble_chunks(&[&bytes[..]]);
    let chunks = [&bytes[..541], &bytes[541..1772], &bytes[1772..]];
    assert_eq!(chunks[0].last(), Some(&b','));
    assert_eq!(assemble_chunks(&chunks), whole);
    assert_eq!(whole.len(), 24);
    assert!(whole.iter().all(|c| c.complete && c.records.len() == 1));
    assert_eq!(whole.iter().filter(|c| c.call_id == "1008741").count(), 3);
}

/// Frames, parses and assembles `chunks` as successive reads, then flushes.
pub fn assemble_chunks(chunks: &[&[u8]]) -> Vec<Call> {
    let mut framer = SmdrFramer::default();
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let now = Instant::now();
    let mut calls = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        while let Some(f) = framer.next_frame() {
            if let Frame::Line { line, .. } = f {
                asm.handle_record(now, &SmdrRecord::parse(line).unwrap());
            }
        }
        while let Some(out) = asm.poll_output() {
            if let Output::Call(c) = out {
                calls.push(c);
            }
        }
    }
    if let Some(Frame::Line { line, .. }) = framer.finish() {
        asm.handle_record(now, &SmdrRecord::parse(line).unwrap());
    }
    asm.flush(now);
    while let Some(out) = asm.poll_output() {
        if let Output::Call(c) = out {
            calls.push(c);
        }
    }
    calls
}

#[test]
fn snapshot_assembled_calls_of_every_fixture() {
    insta::glob!("../../fixtures/smdr", "**/*.txt", |path| {
        let bytes = std::fs::read(path).unwrap();
        // A replayed capture: one restart-like line is a restart (see `replay`).
        let mut asm = SmdrAssembler::new(SmdrAssemblerConfig {
            restart_confirm_records: 1,
            ..SmdrAssemblerConfig::default()
        });
        let base = Instant::now();
        let mut calls: Vec<Call> = Vec::new();
        for (i, (_, line)) in lines(&bytes).into_iter().enumerate() {
            // Really malformed lines are the parser's business (see smdr-parse's tests).
            let Ok(r) = SmdrRecord::parse(&line) else {
                continue;
            };
            asm.handle_record(base + Duration::from_secs(i as u64), &r);
            while let Some(out) = asm.poll_output() {
                if let Output::Call(c) = out {
                    calls.push(c);
                }
            }
        }
        asm.flush(base + Duration::from_secs(1 << 20));
        while let Some(out) = asm.poll_output() {
            if let Output::Call(c) = out {
                calls.push(c);
            }
        }
        // One summary line per call; the records themselves are in smdr-parse's snapshots.
        let summary: Vec<BTreeMap<String, serde_json::Value>> = calls
            .iter()
            .map(|c| {
                let mut v: BTreeMap<String, serde_json::Value> =
                    serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap();
                v.insert("records".into(), c.records.len().into());
                v
            })
            .collect();
        let text: String = summary
            .iter()
            .map(|v| serde_json::to_string(v).unwrap() + "\n")
            .collect();
        insta::with_settings!({
            description => path.file_name().unwrap().to_string_lossy().into_owned(),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(text);
        });
    });
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Any chunking of the split-stream fixture gives the same calls as the whole file.
    #[test]
    fn split_stream_in_any_chunking(cuts in proptest::collection::vec(0usize..2682, 0..40)) {
        let bytes = std::fs::read(fixtures().join("ccbc_tcp_split_stream_3chunks.txt")).unwrap();
        let whole = assemble_chunks(&[&bytes[..]]);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            chunks.push(&bytes[prev..c]);
            prev = c;
        }
        proptest::prop_assert_eq!(assemble_chunks(&chunks), whole);
    }
}
