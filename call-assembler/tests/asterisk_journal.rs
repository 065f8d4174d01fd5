//! The journal contract of the [`AmiAssembler`] (`last_key`, `take_retired`) and progressive
//! mode, over every AMI stream among the fixtures (the Asterisk 20 captures
//! `fixtures/asterisk/*/ami.raw` and the Asterisk 11 to 13 streams under
//! `fixtures/ami/`), replayed on synthetic time as `asterisk_fixtures.rs` does.
//!
//! * Every key `last_key` returned is among the keys `take_retired` returned once the calls
//!   are emitted.
//! * A relay that journals each message under its `last_key`, deletes the rows of retired keys,
//!   and after a restart replays what is left through a fresh assembler, then goes on with the
//!   stream, gets the same calls as a run without the restart (cut at many points).
//! * Progressive mode's final records are complete mode's calls, and every call's records
//!   carry one id and sequence numbers 0, 1, 2, ... from `Started` to `Ended`.

// Tests may unwrap, index and panic; the base `Instant` of synthetic time has to come from the clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ami_proto::{AmiFramer, AmiMessage, Frame};
use call_assembler::{AmiAssembler, AmiAssemblerConfig, Call, Output, UpdateEvent};
use chrono::NaiveDateTime;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Every AMI stream among the fixtures, sorted, with a short name.
fn streams() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures().join("asterisk"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("ami.raw").exists())
        .collect();
    dirs.sort();
    for d in dirs {
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        out.push((name, std::fs::read(d.join("ami.raw")).unwrap()));
    }
    let mut files = Vec::new();
    for sub in std::fs::read_dir(fixtures().join("ami")).unwrap() {
        let sub = sub.unwrap().path();
        if !sub.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&sub).unwrap() {
            let f = f.unwrap().path();
            if f.extension()
                .is_some_and(|e| e == "ami" || e == "dump" || e == "yaml")
            {
                files.push(f);
            }
        }
    }
    files.sort();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        out.push((name, std::fs::read(&f).unwrap()));
    }
    assert!(out.len() > 20, "fixtures missing");
    out
}

/// The messages of a stream with the synthetic `now` each arrives at: base + the offset of its
/// time (`Timestamp:`, else a CEL `EventTime`) from the first, else the previous `now`.
fn messages(bytes: &[u8], base: Instant) -> Vec<(Instant, Vec<u8>)> {
    let mut framer = AmiFramer::default();
    framer.push(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = framer.next_frame() {
        if let Frame::Message { bytes, .. } = frame {
            frames.push(bytes.to_vec());
        }
    }
    let mut first: Option<f64> = None;
    let mut now = base;
    let mut out = Vec::new();
    for bytes in frames {
        let Ok(msg) = AmiMessage::parse(&bytes) else {
            continue;
        };
        let secs = msg
            .get_str("Timestamp")
            .and_then(|t| t.parse::<f64>().ok())
            .or_else(|| {
                msg.get_str("EventTime")
                    .and_then(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok())
                    .map(|t| t.and_utc().timestamp() as f64)
            });
        if let Some(s) = secs {
            let f = *first.get_or_insert(s);
            now = now.max(base + Duration::from_secs_f64((s - f).max(0.0)));
        }
        out.push((now, bytes));
    }
    out
}

fn config() -> AmiAssemblerConfig {
    AmiAssemblerConfig {
        site: "lab".into(),
        ..AmiAssemblerConfig::default()
    }
}

fn calls_of(asm: &mut AmiAssembler, out: &mut Vec<Call>) {
    while let Some(o) = asm.poll_output() {
        if let Output::Call(c) = o {
            out.push(c);
        }
    }
}

/// What the comparison looks at.
fn summary(c: &Call) -> (String, Vec<String>, String, Option<u32>, bool, u32) {
    (
        c.id.clone(),
        c.legs.iter().map(|l| l.uniqueid.to_string()).collect(),
        c.disposition.to_string(),
        c.billsec,
        c.complete,
        c.duration,
    )
}

#[test]
fn every_journal_key_is_retired() {
    for (name, bytes) in streams() {
        let base = Instant::now();
        let msgs = messages(&bytes, base);
        let mut asm = AmiAssembler::new(config());
        let (mut keys, mut retired) = (BTreeSet::new(), BTreeSet::new());
        let mut calls = Vec::new();
        let mut last = base;
        for (now, bytes) in &msgs {
            let msg = AmiMessage::parse(bytes).unwrap();
            asm.handle_timeout(*now);
            asm.handle_message(*now, &msg);
            if let Some(k) = asm.last_key() {
                keys.insert(k.to_owned());
            }
            calls_of(&mut asm, &mut calls);
            retired.extend(asm.take_retired());
            last = *now;
        }
        asm.flush(last);
        calls_of(&mut asm, &mut calls);
        retired.extend(asm.take_retired());
        assert!(asm.is_idle(), "{name}");
        let missing: Vec<&String> = keys.difference(&retired).collect();
        assert!(missing.is_empty(), "{name}: never retired: {missing:?}");
        // Every emitted call's key is retired.
        for c in &calls {
            assert!(
                retired.contains(c.linkedid.as_str()),
                "{name}: {}",
                c.linkedid
            );
        }
    }
    // CEL rows from a CSV backend (handle_cel_row) keep the same contract.
    for file in ["cel_custom_CELMaster1.csv", "cel_custom_CELMaster2.csv"] {
        let text =
            std::fs::read_to_string(fixtures().join("ami/asterisk-testsuite").join(file)).unwrap();
        let base = Instant::now();
        let mut asm = AmiAssembler::new(config());
        let (mut keys, mut retired) = (BTreeSet::new(), BTreeSet::new());
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let row = call_assembler::CelRow::parse_csv_line(line).unwrap();
            asm.handle_cel_row(base, &row);
            keys.extend(asm.last_key().map(str::to_owned));
        }
        asm.flush(base);
        retired.extend(asm.take_retired());
        assert!(!keys.is_empty());
        assert!(keys.is_subset(&retired), "{file}");
    }
}

/// A relay's journal: `(key, message index)` rows in the order they were written.
type Journal = Vec<(String, usize)>;

/// Runs the stream without a restart, as a journaling relay would, and returns the calls with
/// the index of the message before which each was emitted (`msgs.len()` for the final
/// timeout), and the journal as it stood before each message.
fn uninterrupted(msgs: &[(Instant, Vec<u8>)]) -> (Vec<(usize, Call)>, Vec<Journal>) {
    let mut asm = AmiAssembler::new(config());
    let mut journal: Journal = Vec::new();
    let mut journals = Vec::new();
    let mut calls = Vec::new();
    for (i, (now, bytes)) in msgs.iter().enumerate() {
        let msg = AmiMessage::parse(bytes).unwrap();
        let mut out = Vec::new();
        asm.handle_timeout(*now);
        calls_of(&mut asm, &mut out);
        retire(&mut journal, asm.take_retired());
        calls.extend(out.drain(..).map(|c| (i, c)));
        journals.push(journal.clone());
        asm.handle_message(*now, &msg);
        calls_of(&mut asm, &mut out);
        // Rows of retired keys go (those written before this take), then this message's row.
        retire(&mut journal, asm.take_retired());
        if let Some(k) = asm.last_key() {
            journal.push((k.to_owned(), i));
        }
        calls.extend(out.drain(..).map(|c| (i + 1, c)));
    }
    // Let the grace periods pass, then end the input.
    let end = msgs.last().map_or_else(Instant::now, |m| m.0) + Duration::from_secs(10);
    asm.handle_timeout(end);
    asm.flush(end);
    let mut out = Vec::new();
    calls_of(&mut asm, &mut out);
    calls.extend(out.into_iter().map(|c| (msgs.len(), c)));
    retire(&mut journal, asm.take_retired());
    assert!(
        journal.is_empty(),
        "rows left after every call ended: {journal:?}"
    );
    assert!(asm.is_idle());
    (calls, journals)
}

fn retire(journal: &mut Journal, keys: Vec<String>) {
    if !keys.is_empty() {
        journal.retain(|(k, _)| !keys.contains(k));
    }
}

/// A restart before message `cut`: a fresh assembler replays the journal (all at the cut's
/// `now`), then the stream goes on. The calls it emits.
fn restarted(msgs: &[(Instant, Vec<u8>)], journal: &Journal, cut: usize) -> Vec<Call> {
    let mut asm = AmiAssembler::new(config());
    let mut calls = Vec::new();
    let restart = msgs[cut].0;
    for (_, i) in journal {
        let msg = AmiMessage::parse(&msgs[*i].1).unwrap();
        asm.handle_message(restart, &msg);
        assert!(
            asm.last_key().is_some(),
            "a journaled message applies again"
        );
    }
    calls_of(&mut asm, &mut calls);
    assert!(calls.is_empty(), "the replay emitted {calls:?}");
    for (now, bytes) in &msgs[cut..] {
        let msg = AmiMessage::parse(bytes).unwrap();
        asm.handle_timeout(*now);
        asm.handle_message(*now, &msg);
        calls_of(&mut asm, &mut calls);
    }
    let end = msgs.last().unwrap().0 + Duration::from_secs(10);
    asm.handle_timeout(end);
    asm.flush(end);
    calls_of(&mut asm, &mut calls);
    assert!(asm.is_idle());
    calls
}

#[test]
fn replaying_the_journal_after_a_restart_gives_the_same_calls() {
    let mut cuts_with_open_calls = 0;
    for (name, bytes) in streams() {
        let msgs = messages(&bytes, Instant::now());
        if msgs.is_empty() {
            continue;
        }
        let (calls, journals) = uninterrupted(&msgs);
        // Every message boundary for the small streams, about 60 points for the larger ones.
        let step = (msgs.len() / 60).max(1);
        for cut in (0..msgs.len()).step_by(step) {
            let journal = &journals[cut];
            cuts_with_open_calls += usize::from(!journal.is_empty());
            let mut want: Vec<_> = calls
                .iter()
                .filter(|(at, _)| *at > cut)
                .map(|(_, c)| summary(c))
                .collect();
            let mut got: Vec<_> = restarted(&msgs, journal, cut).iter().map(summary).collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{name}: restart before message {cut}");
        }
    }
    assert!(cuts_with_open_calls > 100, "{cuts_with_open_calls}");
}

#[test]
fn progressive_records_end_with_complete_modes_calls() {
    for (name, bytes) in streams() {
        let msgs = messages(&bytes, Instant::now());
        let run = |progress_interval: Option<Duration>| {
            let mut asm = AmiAssembler::new(AmiAssemblerConfig {
                progress_interval,
                ..config()
            });
            let mut calls = Vec::new();
            let mut last = None;
            for (now, bytes) in &msgs {
                let msg = AmiMessage::parse(bytes).unwrap();
                asm.handle_timeout(*now);
                asm.handle_message(*now, &msg);
                calls_of(&mut asm, &mut calls);
                if let Some(t) = asm.poll_timeout() {
                    assert!(t > *now, "{name}: a deadline not in the future");
                }
                last = Some(*now);
            }
            if let Some(now) = last {
                asm.handle_timeout(now + Duration::from_secs(10));
                asm.flush(now + Duration::from_secs(10));
            }
            calls_of(&mut asm, &mut calls);
            assert!(asm.is_idle());
            calls
        };
        let complete = run(None);
        let progressive = run(Some(Duration::from_secs(1)));
        assert!(complete.iter().all(|c| c.update.is_none()));
        // Records per id: 0, 1, 2, ... from Started to Ended.
        let mut per_id: BTreeMap<String, Vec<(u32, UpdateEvent)>> = BTreeMap::new();
        let mut ended = Vec::new();
        for c in &progressive {
            let u = c.update.unwrap_or_else(|| panic!("{name}: no update"));
            per_id
                .entry(c.id.clone())
                .or_default()
                .push((u.sequence, u.event));
            if u.event == UpdateEvent::Ended {
                ended.push(Call {
                    update: None,
                    ..c.clone()
                });
            } else {
                assert!(!c.complete && c.flush_reason.is_none(), "{name}");
                assert!(c.billsec.unwrap_or(0) <= c.duration, "{name}");
            }
        }
        for (id, seq) in &per_id {
            let n = seq.len();
            for (i, (s, e)) in seq.iter().enumerate() {
                assert_eq!(*s as usize, i, "{name}: {id}: {seq:?}");
                let want = match i {
                    0 => UpdateEvent::Started,
                    _ if i + 1 == n && *e == UpdateEvent::Ended => UpdateEvent::Ended,
                    _ => UpdateEvent::Updated,
                };
                assert_eq!(*e, want, "{name}: {id}: {seq:?}");
            }
        }
        // Calls merged into another stop without Ended; the rest end, once each.
        assert_eq!(ended, complete, "{name}");
        let ended_ids: BTreeSet<&str> = ended.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ended_ids.len(), ended.len(), "{name}: an id ended twice");
        let span = msgs.last().unwrap().0 - msgs[0].0;
        if !complete.is_empty() && span > Duration::from_secs(5) {
            assert!(
                per_id.values().any(|s| s.len() > 2),
                "{name}: no Updated at a 1 s interval"
            );
        }
    }
}
