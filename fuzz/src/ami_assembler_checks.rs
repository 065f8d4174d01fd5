//! Invariants of `call_assembler::AmiAssembler` over arbitrary sequences of AMI events:
//! [`check_ami_assembler`] for the `ami_assembler` target.
//!
//! The input bytes decode (by hand, so that this file needs only `call_assembler`,
//! `ami_proto` and `std`: `call-assembler/tests/fuzz_corpus.rs` includes it with `#[path]` to
//! replay the corpus on stable) to a configuration and a list of operations:
//!
//! * byte 0, the mode: bit 0 progressive (bits 1-2 pick the interval: 0, 1 s, 5 s or 60 s),
//!   bit 3 `max_open_calls` 1 to 4 (from byte 1) instead of 100,000, bit 4
//!   `internal_number_max_len` 3, bit 5 tenant rules, bit 6 `max_legs_per_call` 2, bit 7 a
//!   short idle timeout (30 s instead of an hour);
//! * byte 1: `max_open_calls` (`1 + b % 4`, with bit 3 of byte 0);
//! * then operations of 4 bytes `[op, a, b, c]` until the input ends (at most
//!   [`MAX_OPS`]); `op % 21` picks the operation. Channel events name a channel `G.(a % 8)`
//!   and a call `G.(b % 4)`, or no Linkedid at all when `b % 5 == 4` (Asterisk 11), so
//!   channels and calls collide; `G` is 100 + the current generation (an operation starts the
//!   next), or the previous one with bit 4 of `op` (mostly late events). `c` picks details; bit
//!   7 of `c` adds a `Timestamp:` from a wall clock that moves with `now` but also jumps back
//!   and forth on its own; bit 5 of `c` with bit 7 of `op` skips the run loop's
//!   `handle_timeout` before the input (so deadlines may be overdue after it). Operations:
//!   Newchannel, Newstate, DialBegin, DialEnd,
//!   BridgeEnter, BridgeLeave, Hangup, Rename, VarSet (a recording, a tenant, or a heartbeat),
//!   Cdr, CEL (CHAN_START, ANSWER, HANGUP, CHAN_END, BRIDGE_ENTER, LINKEDID_END, also for
//!   merged Linkedids), Asterisk 11 `Dial` and `LocalBridge`, BlindTransfer, a resync with a
//!   `CoreShowChannel` list (a bit mask of channels, some unknown), `now` forward or back, the
//!   wall clock forward or back, `handle_timeout` now or at `poll_timeout()`, `flush`, the
//!   next generation.
//!
//! Checked after every operation: no panic; at most `max_open_calls` calls open; every
//! `poll_timeout()` not before the latest `now` when the run loop's `handle_timeout` ran
//! before the input (and after it once `handle_timeout(now)` ran);
//! `last_key` only names open calls; every record has `billsec <= duration`,
//! `start <= end`, an answer between them, at least one leg; final records: ids never repeat,
//! `complete` exactly without a reason, resynced calls have every leg ended, the counters add
//! up; progressive mode: every record has an `update`, per id the records are `Started` 0,
//! `Updated` 1, 2, ..., `Ended` last, nothing after `Ended`, snapshots incomplete without a
//! reason; complete mode: no `update`. At the end, after a `flush`: nothing open, no deadline,
//! idle, and every key `last_key` ever returned was among the keys `take_retired` returned.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ami_proto::AmiMessage;
use call_assembler::{
    AmiAssembler, AmiAssemblerConfig, Call, FlushReason, Output, RuleField, TenantRule, UpdateEvent,
};

/// More operations add little but time.
pub const MAX_OPS: usize = 300;

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// The configuration byte 0 and 1 ask for.
pub fn config(mode: u8, n: u8) -> AmiAssemblerConfig {
    let bit = |i: u8| mode & (1 << i) != 0;
    AmiAssemblerConfig {
        site: "fuzz".into(),
        grace: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(if bit(7) { 30 } else { 3600 }),
        max_open_calls: if bit(3) {
            1 + usize::from(n % 4)
        } else {
            100_000
        },
        max_legs_per_call: if bit(6) { 2 } else { 256 },
        progress_interval: bit(0)
            .then(|| Duration::from_secs([0, 1, 5, 60][usize::from((mode >> 1) & 3)])),
        internal_number_max_len: bit(4).then_some(3),
        tenant_rules: if bit(5) {
            vec![
                TenantRule {
                    field: RuleField::Context,
                    prefix: "acme".into(),
                    tenant: "acme".into(),
                },
                TenantRule {
                    field: RuleField::Caller,
                    prefix: "9".into(),
                    tenant: "nines".into(),
                },
                TenantRule {
                    field: RuleField::Called,
                    prefix: String::new(),
                    tenant: "default".into(),
                },
            ]
        } else {
            Vec::new()
        },
        ..AmiAssemblerConfig::default()
    }
}

/// Channel `a % 8` of generation `generation`.
fn uid(generation: u32, a: u8) -> String {
    format!("{}.{}", 100 + generation, a % 8)
}

/// The Linkedid header's value (call `b % 4` of the generation), or `None` for an Asterisk 11
/// event without one.
fn lid(generation: u32, b: u8) -> Option<String> {
    (b % 5 != 4).then(|| format!("{}.{}", 100 + generation, b % 4))
}

struct Harness {
    asm: AmiAssembler,
    base: Instant,
    /// `now` = base + clock.
    clock: Duration,
    latest: Instant,
    /// Channels and calls are named `(100 + generation).n`.
    generation: u32,
    /// Whether the last input ran without `handle_timeout` first (so deadlines may be overdue).
    overdue_ok: bool,
    /// The wall clock of `Timestamp:` headers, in ms since the epoch.
    wall_ms: u64,
    progressive: bool,
    max_open: usize,
    /// Every key `last_key` returned, and every key `take_retired` returned.
    keys: BTreeSet<String>,
    retired: BTreeSet<String>,
    /// Ids of final records.
    finals: BTreeSet<String>,
    final_count: u64,
    /// Progressive mode: per id, the last (sequence, event) seen.
    progress: BTreeMap<String, (u32, UpdateEvent)>,
    log: Vec<String>,
}

impl Harness {
    /// The `now` handed to the assembler, and the latest one so far (the assembler clamps an
    /// earlier `now` to it, so the checks compare with that).
    fn now(&mut self) -> Instant {
        let now = self.base + self.clock;
        self.latest = self.latest.max(now);
        now
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}\nops:\n{}", self.log.join("\n"));
    }

    /// As a run loop does, `handle_timeout` first when the deadline has passed (unless
    /// `skip_timeout`: then deadlines may be overdue after the input).
    fn due(&mut self, skip_timeout: bool) -> Instant {
        let now = self.now();
        self.overdue_ok = skip_timeout;
        // The assembler treats an earlier `now` as the latest one.
        let latest = self.latest;
        if !skip_timeout && self.asm.poll_timeout().is_some_and(|t| t <= latest) {
            self.asm.handle_timeout(now);
        }
        now
    }

    fn message(&mut self, headers: &[(&str, String)], stamp: bool, skip_timeout: bool) {
        let mut h: Vec<(&str, String)> = headers.to_vec();
        if stamp {
            h.push((
                "Timestamp",
                format!("{}.{:03}000", self.wall_ms / 1000, self.wall_ms % 1000),
            ));
        }
        let Ok(msg) = AmiMessage::from_headers(h) else {
            self.fail("a generated message does not build");
        };
        let now = self.due(skip_timeout);
        self.asm.handle_message(now, &msg);
        if let Some(k) = self.asm.last_key() {
            let k = k.to_owned();
            if self.asm.open_calls() == 0 {
                self.fail(&format!("last_key {k} with no call open"));
            }
            self.keys.insert(k);
        }
        self.after();
    }

    /// The checks after each operation.
    fn after(&mut self) {
        let now = self.latest;
        while let Some(out) = self.asm.poll_output() {
            if let Output::Call(c) = out {
                self.call(&c);
            }
        }
        self.retired.extend(self.asm.take_retired());
        if self.asm.open_calls() > self.max_open {
            self.fail(&format!("{} calls open", self.asm.open_calls()));
        }
        if self.asm.poll_timeout().is_some_and(|t| t < now) && !self.overdue_ok {
            self.fail("poll_timeout before now");
        }
        self.overdue_ok = false;
        let st = self.asm.stats();
        if st.complete + st.incomplete != self.final_count {
            self.fail(&format!(
                "stats {st:?} vs {} final records",
                self.final_count
            ));
        }
    }

    fn call(&mut self, c: &Call) {
        let what = format!("{c:?}");
        if c.billsec.unwrap_or(0) > c.duration {
            self.fail(&format!("billsec over duration: {what}"));
        }
        if c.end_time < c.start_time {
            self.fail(&format!("end before start: {what}"));
        }
        if c.answer_time
            .is_some_and(|a| a < c.start_time || a > c.end_time)
        {
            self.fail(&format!("answer outside the call: {what}"));
        }
        if c.legs.is_empty() {
            self.fail(&format!("no legs: {what}"));
        }
        let is_final = match c.update {
            None if self.progressive => self.fail(&format!("no update: {what}")),
            None => true,
            Some(_) if !self.progressive => self.fail(&format!("update in complete mode: {what}")),
            Some(u) => {
                let prev = self.progress.get(&c.id).copied();
                let ok = match (prev, u.event) {
                    (None, UpdateEvent::Started) => u.sequence == 0,
                    (Some((s, UpdateEvent::Started | UpdateEvent::Updated)), e) => {
                        e != UpdateEvent::Started && u.sequence == s + 1
                    }
                    _ => false,
                };
                if !ok {
                    self.fail(&format!("record {u:?} after {prev:?}: {what}"));
                }
                self.progress.insert(c.id.clone(), (u.sequence, u.event));
                u.event == UpdateEvent::Ended
            }
        };
        if !is_final {
            if c.complete || c.flush_reason.is_some() {
                self.fail(&format!("a snapshot complete or flushed: {what}"));
            }
            return;
        }
        self.final_count += 1;
        if !self.finals.insert(c.id.clone()) {
            self.fail(&format!("final id emitted twice: {what}"));
        }
        if c.complete != c.flush_reason.is_none() {
            self.fail(&format!("complete and flush_reason disagree: {what}"));
        }
        if c.flush_reason == Some(FlushReason::Resync) && c.legs.iter().any(|l| l.end.is_none()) {
            self.fail(&format!("a resynced call with a leg not ended: {what}"));
        }
    }

    fn timeout(&mut self, now: Instant) {
        self.asm.handle_timeout(now);
        self.after();
        let now = self.latest;
        if self.asm.poll_timeout().is_some_and(|t| t <= now) {
            self.fail("poll_timeout not after handle_timeout(now)");
        }
    }

    fn op(&mut self, op: u8, a: u8, b: u8, c: u8) {
        let stamp = c & 0x80 != 0;
        // Bit 4 of `op`: the previous generation's channels and calls (mostly late events).
        let generation = self.generation.saturating_sub(u32::from(op & 0x10 != 0));
        let u = uid(generation, a);
        let l = lid(generation, b);
        let other = uid(generation, c);
        let mut h: Vec<(&str, String)> = Vec::new();
        let channel = |h: &mut Vec<(&str, String)>| {
            h.push(("Uniqueid", u.clone()));
            if let Some(l) = &l {
                h.push(("Linkedid", l.clone()));
            }
            h.push(("Channel", format!("SIP/p{}-0000", a % 8)));
        };
        match op % 21 {
            0 | 1 => {
                h.push(("Event", "Newchannel".into()));
                channel(&mut h);
                h.push((
                    "CallerIDNum",
                    ["2001", "99912345", ""][usize::from(c % 3)].into(),
                ));
                h.push((
                    "Exten",
                    ["200", "s", "00441234567"][usize::from((c >> 2) % 3)].into(),
                ));
                h.push((
                    "Context",
                    ["internal", "from-trunk", "acme-in"][usize::from((c >> 4) % 3)].into(),
                ));
                h.push(("ChannelState", "4".into()));
            }
            2 => {
                h.push(("Event", "Newstate".into()));
                channel(&mut h);
                h.push(("ChannelState", if c & 1 == 0 { "6" } else { "5" }.into()));
            }
            3 => {
                h.push(("Event", "DialBegin".into()));
                channel(&mut h);
                h.push(("DestUniqueid", other));
            }
            4 => {
                h.push(("Event", "DialEnd".into()));
                channel(&mut h);
                h.push(("DestUniqueid", other));
                h.push((
                    "DialStatus",
                    ["ANSWER", "BUSY", "NOANSWER", "CHANUNAVAIL", "CANCEL"][usize::from(c % 5)]
                        .into(),
                ));
            }
            5 => {
                h.push(("Event", "BridgeEnter".into()));
                channel(&mut h);
                h.push(("BridgeUniqueid", format!("b{}", c % 3)));
                if c & 8 != 0 {
                    h.push(("BridgeTechnology", "holding_bridge".into()));
                }
            }
            6 => {
                h.push(("Event", "BridgeLeave".into()));
                channel(&mut h);
                h.push(("BridgeUniqueid", format!("b{}", c % 3)));
            }
            7 => {
                h.push(("Event", "Hangup".into()));
                channel(&mut h);
                h.push(("Cause", ["16", "17", "34", "1"][usize::from(c % 4)].into()));
            }
            8 => {
                h.push(("Event", "Rename".into()));
                channel(&mut h);
                h.push(("Newname", format!("SIP/p{}-0000", c % 8)));
            }
            9 => {
                h.push(("Event", "VarSet".into()));
                channel(&mut h);
                match c % 3 {
                    0 => {
                        h.push(("Variable", "MIXMONITOR_FILENAME".into()));
                        h.push(("Value", format!("/rec/{}.wav", c % 4)));
                    }
                    1 => {
                        h.push(("Variable", "X".into()));
                        h.push(("TenantID", format!("t{}", c % 2)));
                        h.push(("AccountCode", "acme1".into()));
                    }
                    _ => h.push(("Variable", "BRIDGEPEER".into())),
                }
            }
            10 => {
                h.push(("Event", "Cdr".into()));
                h.push(("UniqueID", u.clone()));
                h.push(("Disposition", "ANSWERED".into()));
                h.push(("Duration", "12".into()));
            }
            11 => {
                h.push(("Event", "CEL".into()));
                let name = [
                    "CHAN_START",
                    "ANSWER",
                    "HANGUP",
                    "CHAN_END",
                    "BRIDGE_ENTER",
                    "LINKEDID_END",
                    "APP_START",
                ][usize::from(c % 7)];
                h.push(("EventName", name.into()));
                h.push(("UniqueID", u.clone()));
                if let Some(l) = &l {
                    h.push(("LinkedID", l.clone()));
                }
                h.push(("Channel", format!("SIP/p{}-0000", a % 8)));
                h.push(("Peer", format!("SIP/p{}-0000", (c >> 3) % 8)));
                h.push((
                    "Extra",
                    r#"{"hangupcause":16,"dialstatus":"ANSWER"}"#.into(),
                ));
                if c & 0x40 != 0 {
                    h.push(("EventTime", format!("{}.000000", self.wall_ms / 1000)));
                }
            }
            12 => {
                // Asterisk 11: legacy Dial and LocalBridge, no Linkedid.
                if c & 1 == 0 {
                    h.push(("Event", "Dial".into()));
                    h.push(("SubEvent", if c & 2 == 0 { "Begin" } else { "End" }.into()));
                    h.push(("UniqueID", u.clone()));
                    h.push(("DestUniqueID", other));
                    h.push(("DialStatus", "ANSWER".into()));
                } else {
                    h.push(("Event", "LocalBridge".into()));
                    h.push(("Uniqueid1", u.clone()));
                    h.push(("Uniqueid2", other));
                    h.push(("Channel1", format!("Local/200@x-{};1", a % 8)));
                }
            }
            13 => {
                h.push(("Event", "BlindTransfer".into()));
                h.push(("TransfererUniqueid", u.clone()));
                if let Some(l) = &l {
                    h.push(("TransfererLinkedid", l.clone()));
                }
                h.push(("TransfereeUniqueid", other));
                h.push(("Extension", "300".into()));
                h.push(("Result", "Success".into()));
            }
            14 => {
                // A resync: the channels of the bit mask `b` are alive.
                let mut list = Vec::new();
                for i in 0..8u8 {
                    if b & (1 << i) == 0 {
                        continue;
                    }
                    let mut h = vec![
                        ("Event", "CoreShowChannel".to_owned()),
                        ("Uniqueid", uid(generation, i)),
                        (
                            "Linkedid",
                            format!("{}.{}", 100 + generation, i.wrapping_add(c) % 4),
                        ),
                        ("Channel", format!("SIP/p{i}-0000")),
                        (
                            "ChannelState",
                            if (c >> i) & 1 == 0 { "6" } else { "4" }.into(),
                        ),
                        (
                            "Duration",
                            format!("00:00:{:02}", (u32::from(i) * 7 + u32::from(c)) % 60),
                        ),
                    ];
                    if c & 0x40 != 0 {
                        h.push(("BridgeId", format!("b{}", i % 2)));
                    }
                    match AmiMessage::from_headers(h) {
                        Ok(m) => list.push(m),
                        Err(_) => self.fail("a generated channel does not build"),
                    }
                }
                let now = self.due(c & 0x20 != 0);
                self.asm.resync(now, &list);
                if self.asm.last_key().is_some() {
                    self.fail("last_key after resync");
                }
                self.after();
                return;
            }
            15 => {
                let ms = u64::from(a) * [1, 100, 10_000, 1_000_000][usize::from(c % 4)];
                self.clock += Duration::from_millis(ms);
                self.wall_ms += ms;
                return;
            }
            16 => {
                let ms = u64::from(a) * [1, 100, 10_000][usize::from(c % 3)];
                if c & 4 == 0 {
                    // `now` goes back (the assembler clamps it); the wall clock does not.
                    self.clock = self.clock.saturating_sub(Duration::from_millis(ms));
                } else if c & 8 == 0 {
                    self.wall_ms = self.wall_ms.saturating_sub(ms * 10);
                } else {
                    self.wall_ms += ms * 10;
                }
                return;
            }
            17 => {
                let now = self.now();
                self.timeout(now);
                return;
            }
            18 => {
                // At the deadline, or just before it.
                let at = match self.asm.poll_timeout() {
                    Some(t) if c & 1 == 0 => t,
                    Some(t) => t.checked_sub(Duration::from_nanos(1)).unwrap_or(t),
                    None => self.now(),
                };
                self.clock = self.clock.max(at.saturating_duration_since(self.base));
                let now = self.now();
                self.timeout(now);
                return;
            }
            19 => {
                let now = self.now();
                self.asm.flush(now);
                self.after();
                if self.asm.open_calls() != 0 || self.asm.poll_timeout().is_some() {
                    self.fail("open calls or a deadline after flush");
                }
                return;
            }
            _ => {
                // A new generation of channels and calls: those seen before are mostly
                // emitted by now, and every event of theirs would be late.
                self.generation += 1;
                return;
            }
        }
        self.message(&h, stamp, c & 0x20 != 0 && op & 0x80 != 0);
    }
}

/// Runs the operations `data` decodes to and checks the invariants (panics with the operations
/// when one breaks).
pub fn check_ami_assembler(data: &[u8]) {
    let mut r = Reader { data, at: 0 };
    let (mode, n) = (r.byte(), r.byte());
    let config = config(mode, n);
    let base = Instant::now();
    let mut h = Harness {
        progressive: config.progress_interval.is_some(),
        max_open: config.max_open_calls.max(1),
        asm: AmiAssembler::new(config),
        base,
        latest: base,
        generation: 0,
        overdue_ok: false,
        clock: Duration::ZERO,
        wall_ms: 1_700_000_000_000,
        keys: BTreeSet::new(),
        retired: BTreeSet::new(),
        finals: BTreeSet::new(),
        final_count: 0,
        progress: BTreeMap::new(),
        log: vec![format!("mode {mode:#04x} n {n}")],
    };
    let mut ops = 0;
    while !r.done() && ops < MAX_OPS {
        let (op, a, b, c) = (r.byte(), r.byte(), r.byte(), r.byte());
        h.log.push(format!("op {} a {a} b {b} c {c:#04x}", op % 21));
        h.op(op, a, b, c);
        ops += 1;
    }
    let now = h.now();
    h.asm.flush(now);
    h.after();
    if !h.asm.is_idle() || h.asm.poll_timeout().is_some() {
        let state = format!("{:?}", h.asm);
        h.fail(&format!("not idle after the final flush: {state}"));
    }
    let missing: Vec<&String> = h.keys.difference(&h.retired).collect();
    if !missing.is_empty() {
        h.fail(&format!("last_key keys never retired: {missing:?}"));
    }
}
