//! `call_assembler::SmdrAssembler` driven by a sequence of operations, as quinn's
//! `fuzz/fuzz_targets/streams.rs` does: the input decodes (with `arbitrary`) to a configuration
//! and a `Vec<Op>`, on a synthetic clock that sometimes goes backwards.
//!
//! Next to the assembler runs a small model of its documented behaviour (open calls keyed by
//! Call ID and Call Start, restart detection, least-recently-active eviction, idle deadlines).
//! After every operation the outputs are drained and checked against the model, and:
//!
//! * every record handled is in exactly one emitted call, was reported as
//!   `Anomaly::DuplicateRecord`, or is still open (`export_state` shows it);
//! * the complete calls for a (Call ID, Call Start) are exactly as many as the final records
//!   (continuation 0) handled for it, and equal keys give equal call ids;
//! * `poll_timeout()` is the oldest open call's last record time + the idle timeout, so it is never
//!   later than the latest `now` + the idle timeout, and after `handle_timeout(t)` it is later than
//!   `t` (and every `now` before it); it is `None` exactly when no call is open;
//! * `export_state` then `restore` gives back the same state, with no bad lines;
//! * after the final `flush` the assembler is idle and `poll_timeout()` is `None`.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use call_assembler::{
    Anomaly, Call, FlushReason, OpenCallState, Output, SmdrAssembler, SmdrAssemblerConfig,
    SmdrStats, Source,
};
use chrono::NaiveDateTime;
use libfuzzer_sys::fuzz_target;
use smdr_parse::SmdrRecord;

/// IP Office's first Call ID after a boot (the assembler's default `call_id_base`).
const CALL_ID_BASE: u64 = 1_000_000;
/// More operations add little but time.
const MAX_OPS: usize = 400;

#[derive(Debug, Arbitrary)]
struct Input {
    config: Config,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
struct Config {
    /// Idle timeout: this many seconds plus one.
    idle_timeout: u16,
    /// `max_open_calls`: `n % 9` (0 to 8; the assembler treats 0 as 1) below 128, else the
    /// default 100,000.
    max_open_calls: u8,
    restart_window: RestartWindow,
    /// Site "pbx-1" instead of "".
    named_site: bool,
}

#[derive(Debug, Arbitrary)]
enum RestartWindow {
    /// 0: only Call IDs below the base can mark a restart.
    Zero,
    /// 8.
    Narrow,
    /// The default, 10,000: every generated Call ID can.
    Wide,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Handle a new record.
    Record(Rec),
    /// Handle an earlier record again (index modulo the records handled so far).
    Repeat(u8),
    /// The clock moves forward this many seconds.
    Advance(u16),
    /// The clock moves back this many seconds (the assembler must clamp `now`).
    Back(u16),
    /// `handle_timeout` at the current time.
    Timeout,
    /// `handle_timeout` exactly at `poll_timeout()`, or 1 ns before it when `early`.
    TimeoutAtDeadline { early: bool },
    /// `flush` at the current time.
    Flush,
    /// `export_state`, then `SmdrAssembler::restore` at the current time.
    ExportRestore,
}

/// A synthetic record, from a few values so that equal records and keys recur.
#[derive(Debug, Arbitrary)]
struct Rec {
    /// Call ID `999_990 + call % 32`: around the base, so restarts happen.
    call: u8,
    /// Call Start `2024/03/01 08:00:00` plus this many minutes.
    start: u8,
    continuation: bool,
    /// Picks the durations, direction and parties.
    segment: u8,
    /// 17, 30, 34 or 35 fields.
    width: u8,
}

impl Rec {
    fn line(&self) -> String {
        let call_id = CALL_ID_BASE - 10 + u64::from(self.call % 32);
        let minutes = u32::from(self.start);
        let start = format!("2024/03/01 {:02}:{:02}:00", 8 + minutes / 60, minutes % 60);
        let s = self.segment;
        let connected = u32::from(s & 3) * 17;
        let ring = u32::from((s >> 2) & 1) * 5;
        let hold = u32::from((s >> 3) & 1) * 11;
        let direction = if s & 0x10 == 0 { 'I' } else { 'O' };
        let ext = 200 + u32::from((s >> 5) & 3);
        let party2 = if s & 0x80 == 0 {
            "T9001,Line 1.0"
        } else {
            "V9542,VM Channel 42"
        };
        let continuation = u8::from(self.continuation);
        let tail = match self.width % 4 {
            0 => "",
            1 => ",,,,,,,,,,,,,",
            2 => ",,,,,,,,,,,,,,192.168.1.21,2,192.168.1.21,294282",
            _ => ",,,,,,,,,,,,,,192.168.1.21,2,192.168.1.21,294282,2024/03/01 16:00:00",
        };
        format!(
            "{start},{:02}:{:02}:{:02},{ring},6045550100,{direction},203,6049471660,,0,{call_id},\
             {continuation},E{ext},Agent{ext},{party2},{hold},0{tail}\r\n",
            connected / 3600,
            connected / 60 % 60,
            connected % 60
        )
    }

    fn record(&self) -> SmdrRecord<'static> {
        let line = self.line();
        match SmdrRecord::parse(line.as_bytes()) {
            Ok(r) => r.into_owned(),
            Err(e) => panic!("generated line does not parse: {e}: {line}"),
        }
    }
}

type Key = (u64, NaiveDateTime);

fn key(r: &SmdrRecord<'_>) -> Key {
    (r.call_id, r.call_start)
}

/// The model's view of one open call.
#[derive(Debug)]
struct OpenCall {
    /// Order of the call's first record (`export_state` and `flush` go oldest first).
    first_seq: u64,
    /// Order of its last record (eviction and timeouts go least recently active first).
    last_seq: u64,
    /// `now` (as clamped) when its last record came: its deadline is this + the idle timeout.
    last_active: Instant,
    epoch: u32,
    part: u32,
    records: Vec<SmdrRecord<'static>>,
}

/// An output the model expects.
#[derive(Debug)]
enum Expected {
    Call {
        key: Key,
        records: Vec<SmdrRecord<'static>>,
        flushed: Option<FlushReason>,
        epoch: u32,
        part: u32,
    },
    Anomaly(Anomaly),
}

struct Harness {
    config: SmdrAssemblerConfig,
    asm: SmdrAssembler,
    /// The synthetic clock: `base + clock`.
    base: Instant,
    clock: Duration,
    /// The latest `now` the assembler has seen (what it clamps earlier ones to).
    latest: Option<Instant>,
    // The model.
    seq: u64,
    open: BTreeMap<Key, OpenCall>,
    epoch: u32,
    highest: Option<Key>,
    stats: SmdrStats,
    // Bookkeeping over the whole run.
    history: Vec<SmdrRecord<'static>>,
    handled: u64,
    in_calls: u64,
    duplicates: u64,
    finals_handled: HashMap<Key, u64>,
    completes_emitted: HashMap<Key, u64>,
    id_of_key: HashMap<(Key, u32), String>,
    key_of_id: HashMap<String, (Key, u32)>,
    /// Keys flushed incomplete, with the part their next record starts.
    flushed: HashMap<Key, u32>,
}

impl Harness {
    fn new(config: &Config) -> Self {
        let config = SmdrAssemblerConfig {
            site: if config.named_site { "pbx-1" } else { "" }.to_owned(),
            idle_timeout: Duration::from_secs(u64::from(config.idle_timeout) + 1),
            max_open_calls: if config.max_open_calls < 128 {
                usize::from(config.max_open_calls % 9)
            } else {
                100_000
            },
            call_id_base: CALL_ID_BASE,
            restart_window: match config.restart_window {
                RestartWindow::Zero => 0,
                RestartWindow::Narrow => 8,
                RestartWindow::Wide => 10_000,
            },
            remember_flushed: 1_000_000,
            // The model infers a restart from one line, as a replayed capture does, and holds
            // calls whole.
            max_records_per_call: usize::MAX,
            restart_confirm_records: 1,
            zone: call_assembler::PbxZone::UTC,
        };
        Self {
            asm: SmdrAssembler::new(config.clone()),
            config,
            base: Instant::now(),
            clock: Duration::ZERO,
            latest: None,
            seq: 0,
            open: BTreeMap::new(),
            epoch: 0,
            highest: None,
            stats: SmdrStats::default(),
            history: Vec::new(),
            handled: 0,
            in_calls: 0,
            duplicates: 0,
            finals_handled: HashMap::new(),
            completes_emitted: HashMap::new(),
            id_of_key: HashMap::new(),
            key_of_id: HashMap::new(),
            flushed: HashMap::new(),
        }
    }

    fn now(&self) -> Instant {
        self.base + self.clock
    }

    /// What the assembler makes of `now`: never earlier than a `now` it saw before.
    fn clamp(&mut self, now: Instant) -> Instant {
        let now = self.latest.map_or(now, |latest| latest.max(now));
        self.latest = Some(now);
        now
    }

    /// Open calls, least recently active first.
    fn by_activity(&self) -> Vec<Key> {
        let mut keys: Vec<(u64, Key)> = self.open.iter().map(|(k, c)| (c.last_seq, *k)).collect();
        keys.sort_unstable();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    /// Open calls, oldest first.
    fn by_age(&self) -> Vec<Key> {
        let mut keys: Vec<(u64, Key)> = self.open.iter().map(|(k, c)| (c.first_seq, *k)).collect();
        keys.sort_unstable();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    /// Removes an open call from the model, as the call the assembler emits for it.
    fn close(&mut self, key: Key, flushed: Option<FlushReason>) -> Expected {
        let Some(call) = self.open.remove(&key) else {
            unreachable!("closing a call the model does not hold")
        };
        if flushed.is_some() {
            self.flushed.insert(key, call.part + 1);
        }
        Expected::Call {
            key,
            records: call.records,
            flushed,
            epoch: call.epoch,
            part: call.part,
        }
    }

    /// The part a new call under `key` is: a key flushed before starts a later part, reported.
    fn part_for(&mut self, key: Key, expected: &mut Vec<Expected>) -> u32 {
        let part = self.flushed.get(&key).copied().unwrap_or(0);
        if part > 0 {
            self.stats.late += 1;
            expected.push(Expected::Anomaly(Anomaly::LateRecord {
                call_id: key.0,
                call_start: key.1,
                part,
            }));
        }
        part
    }

    fn record(&mut self, record: SmdrRecord<'static>) {
        let now = self.now();
        let at = self.clamp(now);
        self.asm.handle_record(now, &record);
        self.history.push(record.clone());
        self.handled += 1;
        self.stats.records += 1;
        let k = key(&record);
        if !record.continuation {
            *self.finals_handled.entry(k).or_default() += 1;
        }

        let mut expected = Vec::new();
        // Restart: a Call ID near the base, not above the highest of the epoch, yet started after
        // that highest call, and not a record of a call already open (a call the relay is
        // following is no evidence of a reboot) (SmdrAssembler's docs; this model runs with
        // restart_confirm_records 1, the replay rule).
        let window_end = CALL_ID_BASE.saturating_add(self.config.restart_window);
        match self.highest {
            Some((top, top_start))
                if record.call_id <= top
                    && record.call_start > top_start
                    && record.call_id < window_end
                    && !self.open.contains_key(&k) =>
            {
                for k in self.by_age() {
                    expected.push(self.close(k, Some(FlushReason::PbxRestart)));
                }
                self.epoch += 1;
                self.stats.restarts += 1;
                expected.push(Expected::Anomaly(Anomaly::PbxRestart {
                    epoch: self.epoch,
                    call_id: record.call_id,
                    call_start: record.call_start,
                }));
                self.highest = Some(k);
            }
            Some((top, _)) if record.call_id <= top => {}
            _ => self.highest = Some(k),
        }

        let (is_open, is_duplicate) = match self.open.get(&k) {
            Some(call) => (true, call.records.contains(&record)),
            None => (false, false),
        };
        if is_duplicate {
            self.stats.duplicates += 1;
            self.duplicates += 1;
            expected.push(Expected::Anomaly(Anomaly::DuplicateRecord {
                call_id: record.call_id,
                call_start: record.call_start,
            }));
        } else if !record.continuation {
            // The final record: it closes its open call, or is a call of its own.
            let (records, epoch, part) = match self.open.remove(&k) {
                Some(call) => {
                    let mut records = call.records;
                    records.push(record);
                    (records, call.epoch, call.part)
                }
                None => {
                    let part = self.part_for(k, &mut expected);
                    (vec![record], self.epoch, part)
                }
            };
            expected.push(Expected::Call {
                key: k,
                records,
                flushed: None,
                epoch,
                part,
            });
        } else {
            if !is_open && self.open.len() >= self.config.max_open_calls.max(1) {
                let oldest = self.by_activity()[0];
                expected.push(self.close(oldest, Some(FlushReason::Evicted)));
            }
            self.seq += 1;
            let (seq, epoch) = (self.seq, self.epoch);
            let part = if is_open {
                0
            } else {
                self.part_for(k, &mut expected)
            };
            let call = self.open.entry(k).or_insert_with(|| OpenCall {
                first_seq: seq,
                last_seq: seq,
                last_active: at,
                epoch,
                part,
                records: Vec::new(),
            });
            call.records.push(record);
            call.last_seq = seq;
            call.last_active = at;
        }
        self.expect_outputs(&expected, "handle_record");
    }

    fn timeout(&mut self, now: Instant) {
        let at = self.clamp(now);
        self.asm.handle_timeout(now);
        let idle = self.config.idle_timeout;
        let mut expected = Vec::new();
        for k in self.by_activity() {
            if self.open[&k].last_active + idle <= at {
                expected.push(self.close(k, Some(FlushReason::IdleTimeout)));
            }
        }
        self.expect_outputs(&expected, "handle_timeout");
        if let Some(deadline) = self.asm.poll_timeout() {
            assert!(
                deadline > at,
                "poll_timeout {deadline:?} not after handle_timeout({at:?})"
            );
        }
    }

    fn flush(&mut self) {
        let now = self.now();
        self.clamp(now);
        self.asm.flush(now);
        let mut expected = Vec::new();
        for k in self.by_age() {
            expected.push(self.close(k, Some(FlushReason::EndOfInput)));
        }
        self.expect_outputs(&expected, "flush");
        assert!(self.asm.is_idle(), "not idle after flush");
        assert_eq!(self.asm.open_calls(), 0);
        assert_eq!(self.asm.poll_timeout(), None, "a deadline after flush");
    }

    fn export_restore(&mut self) {
        let state = self.asm.export_state();
        let now = self.now();
        let (asm, bad) = SmdrAssembler::restore(self.config.clone(), now, &state);
        assert!(
            bad.is_empty(),
            "exported lines that do not parse back: {:?}",
            bad.iter()
                .map(|l| l.escape_ascii().to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(asm.export_state(), state, "restore changed the state");
        assert_eq!(asm.stats(), SmdrStats::default());
        self.asm = asm;
        // Restored calls come back oldest first, with a fresh idle timeout from `now`.
        self.latest = Some(now);
        self.stats = SmdrStats::default();
        self.seq = 0;
        for k in self.by_age() {
            let n = self.open[&k].records.len() as u64;
            let call = self.open.get_mut(&k).unwrap_or_else(|| unreachable!());
            call.first_seq = self.seq + 1;
            call.last_seq = self.seq + n;
            call.last_active = now;
            self.seq += n;
        }
        self.expect_outputs(&[], "restore");
    }

    /// Drains the outputs and checks them against `expected`, in order.
    fn expect_outputs(&mut self, expected: &[Expected], what: &str) {
        let mut outputs = Vec::new();
        while let Some(out) = self.asm.poll_output() {
            outputs.push(out);
        }
        assert_eq!(
            outputs.len(),
            expected.len(),
            "{what}: got {} outputs, expected {}\n got: {outputs:#?}\n expected: {expected:#?}",
            outputs.len(),
            expected.len()
        );
        for (out, want) in outputs.iter().zip(expected) {
            match (out, want) {
                (Output::Anomaly(got), Expected::Anomaly(want)) => {
                    assert_eq!(got, want, "{what}: wrong anomaly");
                }
                (
                    Output::Call(call),
                    Expected::Call {
                        key,
                        records,
                        flushed,
                        epoch,
                        part,
                    },
                ) => self.check_call(call, (*key, *part), records, *flushed, *epoch, what),
                _ => panic!("{what}: got {out:#?}, expected {want:#?}"),
            }
        }
        self.check_state(what);
    }

    fn check_call(
        &mut self,
        call: &Call,
        (key, part): (Key, u32),
        records: &[SmdrRecord<'static>],
        flushed: Option<FlushReason>,
        epoch: u32,
        what: &str,
    ) {
        assert_eq!(
            (call.call_id.as_str(), call.start_time),
            (key.0.to_string().as_str(), key.1),
            "{what}: call for the wrong key"
        );
        assert_eq!(
            call.records, records,
            "{what}: call {key:?} has the wrong records"
        );
        assert_eq!(call.flush_reason, flushed, "{what}: call {key:?}");
        assert_eq!(call.complete, flushed.is_none(), "{what}: call {key:?}");
        assert_eq!(
            call.boot_epoch, epoch,
            "{what}: call {key:?} has the wrong epoch"
        );
        assert_eq!(call.source, Source::Smdr);
        assert_eq!(call.site, self.config.site);
        assert_eq!(call.start, key.1.format("%Y/%m/%d %H:%M:%S").to_string());
        // A complete call is continuation records then its final record; a flushed one never
        // got its final record.
        let (last, init) = call
            .records
            .split_last()
            .unwrap_or_else(|| panic!("{what}: a call without records"));
        assert!(init.iter().all(|r| r.continuation), "{what}: {key:?}");
        assert_eq!(last.continuation, !call.complete, "{what}: {key:?}");
        let sum = |f: fn(&SmdrRecord<'static>) -> u32| {
            records.iter().fold(0u32, |acc, r| acc.saturating_add(f(r)))
        };
        assert_eq!(call.duration, sum(SmdrRecord::segment_seconds));
        assert_eq!(call.billsec, Some(sum(|r| r.connected_time)));
        assert_eq!(call.ring, sum(|r| r.ring_time));
        assert_eq!(call.hold, sum(|r| r.hold_time));
        assert_eq!(call.park, sum(|r| r.park_time));
        assert_eq!(call.answered, records.iter().any(|r| r.connected_time > 0));
        assert_eq!(call.part, part, "{what}: call {key:?} has the wrong part");
        // The id is stable: one id per (Call ID, Call Start, part) and one of those per id.
        let id = self
            .id_of_key
            .entry((key, part))
            .or_insert_with(|| call.id.clone());
        assert_eq!(*id, call.id, "{what}: two ids for {key:?} part {part}");
        let k = self.key_of_id.entry(call.id.clone()).or_insert((key, part));
        assert_eq!(*k, (key, part), "{what}: id {} for two keys", call.id);

        self.in_calls += records.len() as u64;
        if call.complete {
            self.stats.complete += 1;
            // A key's complete calls are exactly its final records: one complete call per final
            // record handled, emitted as it is handled (final records are never duplicates).
            let emitted = self.completes_emitted.entry(key).or_default();
            *emitted += 1;
            assert_eq!(
                Some(&*emitted),
                self.finals_handled.get(&key),
                "{what}: complete calls for {key:?} differ from the final records handled for it"
            );
        } else {
            self.stats.incomplete += 1;
        }
    }

    /// What holds after every operation, outputs drained.
    fn check_state(&self, what: &str) {
        let asm = &self.asm;
        assert!(asm.is_idle() == self.open.is_empty(), "{what}: is_idle");
        assert_eq!(asm.open_calls(), self.open.len(), "{what}: open_calls");
        assert_eq!(asm.epoch(), self.epoch, "{what}: epoch");
        assert_eq!(asm.stats(), self.stats, "{what}: stats");

        let state = asm.export_state();
        assert_eq!(state.epoch, self.epoch, "{what}: exported epoch");
        assert_eq!(state.highest, self.highest, "{what}: exported highest");
        let model: Vec<OpenCallState> = self
            .by_age()
            .iter()
            .map(|k| {
                let call = &self.open[k];
                OpenCallState {
                    epoch: call.epoch,
                    part: call.part,
                    lines: call.records.iter().map(SmdrRecord::to_line).collect(),
                }
            })
            .collect();
        assert_eq!(
            state.open, model,
            "{what}: open calls differ from the model"
        );
        assert!(
            state.open.iter().all(|c| c.epoch == self.epoch),
            "{what}: an open call from an earlier epoch"
        );

        // Every record handled is in one emitted call, was a duplicate, or is still open.
        let open_records: u64 = state.open.iter().map(|c| c.lines.len() as u64).sum();
        assert_eq!(
            self.handled,
            self.in_calls + self.duplicates + open_records,
            "{what}: records lost or emitted twice"
        );

        // The deadline is the least recently active call's last record + the idle timeout.
        let idle = self.config.idle_timeout;
        let deadline = self
            .open
            .values()
            .map(|c| c.last_active)
            .min()
            .map(|t| t + idle);
        assert_eq!(asm.poll_timeout(), deadline, "{what}: poll_timeout");
        if let (Some(deadline), Some(latest)) = (deadline, self.latest) {
            assert!(
                deadline <= latest + idle,
                "{what}: deadline past latest + idle"
            );
        }
    }

    fn finish(mut self) {
        self.flush();
        assert_eq!(self.handled, self.in_calls + self.duplicates);
        for (k, n) in &self.finals_handled {
            assert_eq!(
                self.completes_emitted.get(k),
                Some(n),
                "complete calls for {k:?} differ from the final records handled for it"
            );
        }
        assert_eq!(self.completes_emitted.len(), self.finals_handled.len());
    }
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(&input.config);
    for op in input.ops.iter().take(MAX_OPS) {
        match op {
            Op::Record(rec) => h.record(rec.record()),
            Op::Repeat(i) => {
                if !h.history.is_empty() {
                    let r = h.history[usize::from(*i) % h.history.len()].clone();
                    h.record(r);
                }
            }
            Op::Advance(s) => h.clock += Duration::from_secs(u64::from(*s)),
            Op::Back(s) => h.clock = h.clock.saturating_sub(Duration::from_secs(u64::from(*s))),
            Op::Timeout => h.timeout(h.now()),
            Op::TimeoutAtDeadline { early } => {
                let at = match h.asm.poll_timeout() {
                    Some(deadline) if *early => deadline - Duration::from_nanos(1),
                    Some(deadline) => deadline,
                    None => h.now(),
                };
                h.clock = at.saturating_duration_since(h.base);
                h.timeout(h.now());
            }
            Op::Flush => h.flush(),
            Op::ExportRestore => h.export_restore(),
        }
    }
    h.finish();
});
