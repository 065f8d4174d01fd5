//! Assembling IP Office SMDR records into calls.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use compact_str::{CompactString, ToCompactString};
use serde::{Deserialize, Serialize};
use smdr_parse::{DeviceKind, Direction, SmdrRecord};

use crate::call::{
    Call, CallDirection, FlushReason, Party, Source, format_timestamp, stable_id_of,
};
use crate::zone::PbxZone;
use crate::{Anomaly, Output};

/// Settings of an [`SmdrAssembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmdrAssemblerConfig {
    /// The site name that goes into every call and its id (one per PBX).
    pub site: String,
    /// How long a call may wait for its next record before it is emitted incomplete. IP Office
    /// writes a call's records when each segment *ends*, so a call parked or on hold for an hour
    /// is silent for that long: the default is 4 hours.
    pub idle_timeout: Duration,
    /// The most calls kept open at once; past it the least recently active call is emitted
    /// incomplete ([`FlushReason::Evicted`]).
    pub max_open_calls: usize,
    /// The first Call ID after a PBX (re)start: 1000000 on IP Office.
    pub call_id_base: u64,
    /// A record can only mark a restart if its Call ID is below `call_id_base + restart_window`.
    pub restart_window: u64,
    /// How many calls flushed incomplete are remembered, so that their late records form a
    /// later part under its own id ([`Call::part`]) instead of reusing the flushed call's id.
    pub remember_flushed: usize,
    /// The most records one part of a call holds. A call that reaches it is emitted incomplete
    /// ([`FlushReason::RecordLimit`]) and [`Anomaly::CallSplit`] is reported; its further
    /// records form its next part ([`Call::part`]), so nothing is dropped and no call grows
    /// without bound. Default 1,000 (IP Office writes a handful of records per call).
    pub max_records_per_call: usize,
    /// How many consecutive records that look like a restart (a low Call ID that started after
    /// the highest call) confirm one when the connection did *not* drop before them. One such
    /// record right after [`SmdrAssembler::handle_disconnect`] is enough: a genuine IP Office
    /// restart drops the connection. 0: never without a reconnect; 1: any single such line
    /// (for a replayed capture, which has no connection events). Default 5; at most 64.
    pub restart_confirm_records: u32,
    /// The PBX's time zone: SMDR times are its local wall clock, read with this zone for the
    /// calls' UTC times ([`Call::start_utc`]; gaps and overlaps as [`PbxZone`] says). Default
    /// UTC.
    pub zone: PbxZone,
}

impl Default for SmdrAssemblerConfig {
    fn default() -> Self {
        Self {
            site: String::new(),
            idle_timeout: Duration::from_secs(4 * 3600),
            max_open_calls: 100_000,
            call_id_base: 1_000_000,
            restart_window: 10_000,
            remember_flushed: 10_000,
            max_records_per_call: 1_000,
            restart_confirm_records: 5,
            zone: PbxZone::UTC,
        }
    }
}

impl SmdrAssemblerConfig {
    /// The defaults for a replayed capture (a file, standard input): it has no connection
    /// events, so one restart-like record is a restart, as the PBX's own file shows it
    /// ([`Self::restart_confirm_records`] 1).
    pub fn for_replay() -> Self {
        Self {
            restart_confirm_records: 1,
            ..Self::default()
        }
    }
}

/// Counters since the assembler was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmdrStats {
    /// Records handled.
    pub records: u64,
    /// Calls emitted complete.
    pub complete: u64,
    /// Calls emitted incomplete (any [`FlushReason`]).
    pub incomplete: u64,
    /// PBX restarts detected.
    pub restarts: u64,
    /// Records dropped as exact duplicates of a record already in their open call.
    pub duplicates: u64,
    /// Calls started by a record that arrived after its call was flushed incomplete.
    pub late: u64,
    /// Records that looked like a PBX restart but were not confirmed (handled as their own
    /// calls, nothing flushed): [`Anomaly::UnconfirmedRestart`].
    #[serde(default)]
    pub unconfirmed_restarts: u64,
    /// Calls split into parts because they reached the record limit: [`Anomaly::CallSplit`].
    #[serde(default)]
    pub splits: u64,
}

type Key = (u64, NaiveDateTime);

/// The longest run of restart-like records remembered (and so the most
/// [`SmdrAssemblerConfig::restart_confirm_records`] can ask for): the state stays small.
const MAX_RUN: usize = 64;

#[derive(Debug)]
struct OpenCall {
    first_seq: u64,
    /// Bumped on every record, so stale entries of the deadline queue can be told apart.
    generation: u64,
    deadline: Instant,
    epoch: u32,
    /// 0, or n when this call's key was flushed incomplete n times before (see [`Call::part`]).
    part: u32,
    records: Vec<SmdrRecord<'static>>,
    /// Hashes of `records`, so a duplicate check costs one lookup instead of a scan.
    hashes: HashSet<u64>,
}

impl OpenCall {
    /// Whether `record` is already held: one hash lookup, and a scan only on a hit.
    fn holds(&self, record: &SmdrRecord<'_>) -> bool {
        self.hashes.contains(&record_hash(record)) && self.records.iter().any(|r| r == record)
    }
}

/// A record's hash for duplicate checks (the same for equal records; collisions are settled
/// by a comparison).
fn record_hash(record: &SmdrRecord<'_>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    record.hash(&mut h);
    h.finish()
}

/// The open state of an [`SmdrAssembler`], for a journal to save and restore.
///
/// Records are kept in their wire form, so a restore is exact whatever bytes they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmdrAssemblerState {
    /// The current PBX boot epoch.
    pub epoch: u32,
    /// The highest Call ID seen in this epoch and its call start, for restart detection.
    pub highest: Option<(u64, NaiveDateTime)>,
    /// Open calls, oldest first.
    pub open: Vec<OpenCallState>,
    /// Calls emitted incomplete that are still remembered (oldest first), with the part number
    /// their next late record starts.
    #[serde(default)]
    pub flushed: Vec<((u64, NaiveDateTime), u32)>,
    /// Whether the connection dropped since the last record (see
    /// [`SmdrAssembler::handle_disconnect`]).
    #[serde(default)]
    pub armed: bool,
    /// The current run of records that looked like a restart, (Call ID, Call Start) in order.
    #[serde(default)]
    pub run: Vec<(u64, NaiveDateTime)>,
}

/// One open call in an [`SmdrAssemblerState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenCallState {
    /// Its PBX boot epoch.
    pub epoch: u32,
    /// Its part number ([`Call::part`]).
    #[serde(default)]
    pub part: u32,
    /// Its records' wire lines, in arrival order.
    pub lines: Vec<Vec<u8>>,
}

/// Groups SMDR records into calls: a sans-IO state machine (no IO, no clock).
///
/// A call is every record with one (Call ID, Call Start) up to the one with Continuation 0;
/// records of many calls arrive interleaved, in call-*end* order. A later record with the same
/// Call ID starts a new call. Call IDs restart at 1000000 when the PBX reboots: a record whose
/// Call ID is near that base, not above the highest id of the current epoch, yet started after
/// that highest call, and is not a record of a call already open, *looks like* a restart. It is
/// taken as one only on evidence a single forged line cannot give: it is the first record after
/// the connection dropped ([`SmdrAssembler::handle_disconnect`]; a rebooting IP Office drops
/// it), or it completes a run of [`SmdrAssemblerConfig::restart_confirm_records`] such records
/// in a row. Then calls still open from before the run are emitted incomplete
/// ([`FlushReason::PbxRestart`]) and [`Anomaly::PbxRestart`] is reported. Otherwise the record is reported
/// ([`Anomaly::UnconfirmedRestart`]) and handled as its own call; nothing is flushed.
///
/// A call holds at most [`SmdrAssemblerConfig::max_records_per_call`] records per part; past
/// that it is emitted in parts ([`Anomaly::CallSplit`]). Duplicate checks cost one hash lookup.
///
/// # Run loop
///
/// ```no_run
/// # use std::time::Instant;
/// # use call_assembler::{Output, SmdrAssembler, SmdrAssemblerConfig};
/// # fn next_line() -> Option<(Instant, Vec<u8>)> { None }
/// # fn deliver(_: call_assembler::Call) {}
/// let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
/// loop {
///     // Wait for a line or for `asm.poll_timeout()`, whichever comes first.
///     match next_line() {
///         Some((now, line)) => match smdr_parse::SmdrRecord::parse(&line) {
///             Ok(record) => asm.handle_record(now, &record),
///             Err(e) => eprintln!("bad line: {e}"),
///         },
///         None => asm.handle_timeout(Instant::now()),
///     }
///     // Always drain the outputs after a `handle_*` call, then re-read `poll_timeout`.
///     while let Some(out) = asm.poll_output() {
///         if let Output::Call(call) = out {
///             deliver(call);
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct SmdrAssembler {
    config: SmdrAssemblerConfig,
    open: BTreeMap<Key, OpenCall>,
    /// (deadline, key, generation), in deadline order because `now` never goes back and the
    /// idle timeout is fixed.
    deadlines: VecDeque<(Instant, Key, u64)>,
    outputs: VecDeque<Output>,
    epoch: u32,
    highest: Option<(u64, NaiveDateTime)>,
    last_now: Option<Instant>,
    seq: u64,
    stats: SmdrStats,
    /// Keys of calls flushed incomplete, with the next part number; bounded by `flushed_order`.
    flushed: BTreeMap<Key, u32>,
    flushed_order: VecDeque<Key>,
    /// The connection dropped since the last record: the next one may reveal a restart alone.
    armed: bool,
    /// Keys of the current run of records that looked like a restart.
    run: Vec<Key>,
}

impl SmdrAssembler {
    /// An empty assembler.
    pub fn new(config: SmdrAssemblerConfig) -> Self {
        Self {
            config,
            open: BTreeMap::new(),
            deadlines: VecDeque::new(),
            outputs: VecDeque::new(),
            epoch: 0,
            highest: None,
            last_now: None,
            seq: 0,
            stats: SmdrStats::default(),
            flushed: BTreeMap::new(),
            flushed_order: VecDeque::new(),
            armed: false,
            run: Vec::new(),
        }
    }

    /// An assembler holding a state saved with [`SmdrAssembler::export_state`]. Restored calls
    /// get a fresh idle timeout counted from `now`. Lines that no longer parse are returned.
    pub fn restore(
        config: SmdrAssemblerConfig,
        now: Instant,
        state: &SmdrAssemblerState,
    ) -> (Self, Vec<Vec<u8>>) {
        let mut asm = Self::new(config);
        let mut bad = Vec::new();
        asm.last_now = Some(now);
        for call in &state.open {
            for line in &call.lines {
                match SmdrRecord::parse(line) {
                    Ok(r) => {
                        let key = (r.call_id, r.call_start);
                        asm.add_to_open(now, call.epoch, r.into_owned(), false);
                        if let Some(open) = asm.open.get_mut(&key) {
                            open.part = call.part;
                        }
                    }
                    Err(_) => bad.push(line.clone()),
                }
            }
        }
        for (key, part) in &state.flushed {
            if asm.flushed.insert(*key, *part).is_none() {
                asm.flushed_order.push_back(*key);
            }
        }
        asm.epoch = state.epoch;
        asm.highest = state.highest;
        asm.armed = state.armed;
        asm.run.clone_from(&state.run);
        (asm, bad)
    }

    /// The open calls in a form that [`SmdrAssembler::restore`] takes back.
    pub fn export_state(&self) -> SmdrAssemblerState {
        let mut open: Vec<&OpenCall> = self.open.values().collect();
        open.sort_by_key(|c| c.first_seq);
        SmdrAssemblerState {
            epoch: self.epoch,
            highest: self.highest,
            open: open
                .into_iter()
                .map(|c| OpenCallState {
                    epoch: c.epoch,
                    part: c.part,
                    lines: c.records.iter().map(SmdrRecord::to_line).collect(),
                })
                .collect(),
            flushed: self.flushed(),
            armed: self.armed,
            run: self.run.clone(),
        }
    }

    /// Feeds one record. `now` is the time it was read (monotonic; a `now` earlier than one seen
    /// before is treated as that one). Afterwards drain [`SmdrAssembler::poll_output`] and
    /// re-read [`SmdrAssembler::poll_timeout`].
    pub fn handle_record(&mut self, now: Instant, record: &SmdrRecord<'_>) {
        let now = self.clamp(now);
        self.stats.records += 1;
        self.detect_restart(record);
        let key = (record.call_id, record.call_start);
        let mut split = false;
        if let Some(open) = self.open.get(&key) {
            if open.holds(record) {
                self.stats.duplicates += 1;
                self.outputs
                    .push_back(Output::Anomaly(Anomaly::DuplicateRecord {
                        call_id: record.call_id,
                        call_start: record.call_start,
                    }));
                return;
            }
            split = open.records.len() >= self.config.max_records_per_call.max(1);
        }
        if split {
            self.split(key);
        }
        if !record.continuation && !self.open.contains_key(&key) {
            // The common case: a call of one record. It never enters the open map.
            let part = self.part_of(key, !split);
            let call = self.build_call(self.epoch, part, vec![record.clone().into_owned()], None);
            self.emit(call);
            return;
        }
        if record.continuation {
            self.add_to_open(now, self.epoch, record.clone().into_owned(), !split);
        } else if let Some(mut open) = self.open.remove(&key) {
            open.records.push(record.clone().into_owned());
            let call = self.build_call(open.epoch, open.part, open.records, None);
            self.emit(call);
            self.drop_stale_deadlines();
        }
    }

    /// Emits every call whose idle timeout has passed at `now`. Safe to call at any time; a call
    /// before [`SmdrAssembler::poll_timeout`] does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        while let Some(&(deadline, key, _)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(open) = self.open.remove(&key) {
                let call = self.build_call(
                    open.epoch,
                    open.part,
                    open.records,
                    Some(FlushReason::IdleTimeout),
                );
                self.emit(call);
            }
            self.drop_stale_deadlines();
        }
    }

    /// The connection to the PBX dropped (or was replaced): the next record alone may reveal a
    /// restart. Records after it that are not a restart's end this.
    pub fn handle_disconnect(&mut self) {
        self.armed = true;
    }

    /// The part of the call under (`call_id`, `call_start`) that its next record joins: the
    /// open call's, or the part a new call under that key would start. A journal files a
    /// record under it.
    pub fn current_part(&self, call_id: u64, call_start: NaiveDateTime) -> u32 {
        let key = (call_id, call_start);
        self.open
            .get(&key)
            .map_or_else(|| self.flushed.get(&key).copied().unwrap_or(0), |c| c.part)
    }

    /// Emits every open call as incomplete ([`FlushReason::EndOfInput`]), oldest first: at the
    /// end of a replayed file, or when the source is going away for good.
    pub fn flush(&mut self, now: Instant) {
        self.clamp(now);
        self.flush_all(FlushReason::EndOfInput);
    }

    /// When [`SmdrAssembler::handle_timeout`] should next be called, or `None` when no call is
    /// open. Changes after every `handle_*` call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.front().map(|d| d.0)
    }

    /// The next output, or `None` when there is none. Drain after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Calls waiting for more records.
    pub fn open_calls(&self) -> usize {
        self.open.len()
    }

    /// Whether nothing is open and nothing waits to be polled.
    pub fn is_idle(&self) -> bool {
        self.open.is_empty() && self.outputs.is_empty()
    }

    /// The highest Call ID of the current epoch and its call start (restart detection state).
    pub fn highest(&self) -> Option<(u64, NaiveDateTime)> {
        self.highest
    }

    /// The calls emitted incomplete that are remembered, oldest first, with the part number
    /// their next record starts (as in [`SmdrAssemblerState::flushed`]). Changes only when a
    /// call is emitted incomplete ([`SmdrStats::incomplete`] grows).
    pub fn flushed(&self) -> Vec<((u64, NaiveDateTime), u32)> {
        self.flushed_order
            .iter()
            .filter_map(|k| self.flushed.get(k).map(|p| (*k, *p)))
            .collect()
    }

    /// The evidence of a PBX restart gathered so far: whether the connection dropped since the
    /// last record, and the run of restart-like records (as in [`SmdrAssemblerState`]).
    pub fn restart_evidence(&self) -> (bool, Vec<(u64, NaiveDateTime)>) {
        (self.armed, self.run.clone())
    }

    /// The current PBX boot epoch (0 until the first restart is seen).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Counters.
    pub fn stats(&self) -> SmdrStats {
        self.stats
    }

    /// The settings.
    pub fn config(&self) -> &SmdrAssemblerConfig {
        &self.config
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        crate::clamp_now(&mut self.last_now, now)
    }

    fn detect_restart(&mut self, record: &SmdrRecord<'_>) {
        let key = (record.call_id, record.call_start);
        let armed = std::mem::take(&mut self.armed);
        let limit = self
            .config
            .call_id_base
            .saturating_add(self.config.restart_window);
        match self.highest {
            Some((top, top_start))
                if key.0 <= top
                    && key.1 > top_start
                    && key.0 < limit
                    && (!self.open.contains_key(&key) || self.run.contains(&key)) =>
            {
                self.run.push(key);
                if self.run.len() > MAX_RUN {
                    self.run.remove(0);
                }
                let needed = (self.config.restart_confirm_records as usize).min(MAX_RUN);
                if armed || (needed > 0 && self.run.len() >= needed) {
                    self.restart();
                } else {
                    self.stats.unconfirmed_restarts += 1;
                    self.outputs
                        .push_back(Output::Anomaly(Anomaly::UnconfirmedRestart {
                            call_id: key.0,
                            call_start: key.1,
                        }));
                }
            }
            Some((top, _)) if key.0 <= top => self.run.clear(),
            _ => {
                self.run.clear();
                self.highest = Some(key);
            }
        }
    }

    /// A restart is confirmed by the run of records in `self.run`: calls open from before it
    /// are flushed; the calls its own records opened go on in the new epoch.
    fn restart(&mut self) {
        let run = std::mem::take(&mut self.run);
        let mut kept: Vec<(Key, OpenCall)> = Vec::new();
        for key in &run {
            if let Some(c) = self.open.remove(key) {
                kept.push((*key, c));
            }
        }
        self.flush_all(FlushReason::PbxRestart);
        self.epoch = self.epoch.saturating_add(1);
        kept.sort_by_key(|(_, c)| c.deadline);
        for (key, mut c) in kept {
            c.epoch = self.epoch;
            self.deadlines.push_back((c.deadline, key, c.generation));
            self.open.insert(key, c);
        }
        self.stats.restarts += 1;
        let first = run.first().copied().unwrap_or((0, NaiveDateTime::MIN));
        self.outputs.push_back(Output::Anomaly(Anomaly::PbxRestart {
            epoch: self.epoch,
            call_id: first.0,
            call_start: first.1,
        }));
        self.highest = run.iter().max().copied();
    }

    /// Emits the open call under `key` incomplete ([`FlushReason::RecordLimit`]): the next
    /// record starts its next part.
    fn split(&mut self, key: Key) {
        if let Some(open) = self.open.remove(&key) {
            let part = open.part.saturating_add(1);
            let call = self.build_call(
                open.epoch,
                open.part,
                open.records,
                Some(FlushReason::RecordLimit),
            );
            self.emit(call);
            self.stats.splits += 1;
            self.outputs.push_back(Output::Anomaly(Anomaly::CallSplit {
                call_id: key.0,
                call_start: key.1,
                part,
            }));
            self.drop_stale_deadlines();
        }
    }

    fn add_to_open(
        &mut self,
        now: Instant,
        epoch: u32,
        record: SmdrRecord<'static>,
        report_late: bool,
    ) {
        let key = (record.call_id, record.call_start);
        let deadline = now.checked_add(self.config.idle_timeout).unwrap_or(now);
        if !self.open.contains_key(&key) && self.open.len() >= self.config.max_open_calls.max(1) {
            self.evict_oldest();
        }
        self.seq += 1;
        let seq = self.seq;
        let part = if self.open.contains_key(&key) {
            0
        } else {
            self.part_of(key, report_late)
        };
        let open = self.open.entry(key).or_insert_with(|| OpenCall {
            first_seq: seq,
            generation: 0,
            deadline,
            epoch,
            part,
            records: Vec::new(),
            hashes: HashSet::new(),
        });
        open.hashes.insert(record_hash(&record));
        open.records.push(record);
        open.generation = seq;
        open.deadline = deadline;
        self.deadlines.push_back((deadline, key, seq));
        self.drop_stale_deadlines();
        if self.deadlines.len() > 2 * self.open.len() + 64 {
            let open = &self.open;
            self.deadlines
                .retain(|(_, k, g)| open.get(k).is_some_and(|c| c.generation == *g));
        }
    }

    fn is_live(&self, key: &Key, generation: u64) -> bool {
        self.open
            .get(key)
            .is_some_and(|c| c.generation == generation)
    }

    /// Keeps the front of the deadline queue a live entry, so `poll_timeout` is exact.
    fn drop_stale_deadlines(&mut self) {
        while let Some(&(_, key, g)) = self.deadlines.front() {
            if self.is_live(&key, g) {
                break;
            }
            self.deadlines.pop_front();
        }
    }

    fn evict_oldest(&mut self) {
        self.drop_stale_deadlines();
        if let Some((_, key, _)) = self.deadlines.pop_front() {
            if let Some(open) = self.open.remove(&key) {
                let call = self.build_call(
                    open.epoch,
                    open.part,
                    open.records,
                    Some(FlushReason::Evicted),
                );
                self.emit(call);
            }
            self.drop_stale_deadlines();
        }
    }

    fn flush_all(&mut self, reason: FlushReason) {
        let mut open: Vec<OpenCall> = std::mem::take(&mut self.open).into_values().collect();
        open.sort_by_key(|c| c.first_seq);
        self.deadlines.clear();
        for c in open {
            let call = self.build_call(c.epoch, c.part, c.records, Some(reason));
            self.emit(call);
        }
    }

    fn emit(&mut self, call: Call) {
        if call.complete {
            self.stats.complete += 1;
        } else {
            self.stats.incomplete += 1;
            // Records of this call that still come will form a later part with its own id.
            if let Some(r) = call.records.first() {
                let key = (r.call_id, r.call_start);
                if self
                    .flushed
                    .insert(key, call.part.saturating_add(1))
                    .is_none()
                {
                    self.flushed_order.push_back(key);
                }
                while self.flushed_order.len() > self.config.remember_flushed {
                    if let Some(old) = self.flushed_order.pop_front() {
                        self.flushed.remove(&old);
                    }
                }
            }
        }
        self.outputs.push_back(Output::Call(call));
    }

    /// The part number of a call starting now under `key`: 0, or n after n flushed parts, in
    /// which case the late record is reported (when `report`).
    fn part_of(&mut self, key: Key, report: bool) -> u32 {
        let part = self.flushed.get(&key).copied().unwrap_or(0);
        if part > 0 && report {
            self.stats.late += 1;
            self.outputs.push_back(Output::Anomaly(Anomaly::LateRecord {
                call_id: key.0,
                call_start: key.1,
                part,
            }));
        }
        part
    }

    fn build_call(
        &self,
        epoch: u32,
        part: u32,
        records: Vec<SmdrRecord<'static>>,
        flushed: Option<FlushReason>,
    ) -> Call {
        build_smdr_call(
            &self.config.site,
            &self.config.zone,
            epoch,
            part,
            records,
            flushed,
        )
    }
}

fn party(device: Option<smdr_parse::Device>, name: &smdr_parse::Text<'_>) -> Option<Party> {
    device.map(|d| Party {
        device: d.to_compact_string(),
        name: CompactString::from(&*name.to_str_lossy()),
    })
}

/// Builds the [`Call`] for a group of records (all with one Call ID and Call Start).
fn build_smdr_call(
    site: &str,
    zone: &PbxZone,
    epoch: u32,
    part: u32,
    records: Vec<SmdrRecord<'static>>,
    flushed: Option<FlushReason>,
) -> Call {
    // Callers always pass at least one record; an empty group still yields a well-formed call.
    let first = records.first();
    let call_id = first.map_or(0, |r| r.call_id);
    let start_time = first.map_or(NaiveDateTime::MIN, |r| r.call_start);
    let start_bytes = format_timestamp(&start_time, b'/', b' ');
    let start = CompactString::from_utf8_lossy(&start_bytes);
    let sum = |f: fn(&SmdrRecord<'static>) -> u32| {
        records.iter().fold(0u32, |acc, r| acc.saturating_add(f(r)))
    };
    let total: u32 = sum(SmdrRecord::segment_seconds);
    let end_time = start_time
        .checked_add_signed(chrono::TimeDelta::seconds(i64::from(total)))
        .unwrap_or(start_time);
    let direction = match first {
        Some(r) if r.is_internal => CallDirection::Internal,
        Some(r) if r.direction == Direction::Outbound => CallDirection::Outbound,
        _ => CallDirection::Inbound,
    };
    let mut parties: Vec<Party> = Vec::new();
    for r in &records {
        for p in [
            party(r.party1_device, &r.party1_name),
            party(r.party2_device, &r.party2_name),
        ]
        .into_iter()
        .flatten()
        {
            if !parties.iter().any(|q| q.device == p.device) {
                parties.push(p);
            }
        }
    }
    let answered_by = records.iter().find(|r| r.connected_time > 0).and_then(|r| {
        let p1 = (r.party1_device, &r.party1_name);
        let p2 = (r.party2_device, &r.party2_name);
        let not_trunk =
            |d: Option<smdr_parse::Device>| d.is_some_and(|d| d.kind != DeviceKind::Trunk);
        let (d, n) = match direction {
            CallDirection::Inbound if not_trunk(p1.0) => p1,
            CallDirection::Inbound => p2,
            _ => p2,
        };
        party(d, n)
    });
    let text = |f: for<'r> fn(&'r SmdrRecord<'static>) -> &'r smdr_parse::Text<'static>| {
        first
            .map(|r| CompactString::from(&*f(r).to_str_lossy()))
            .unwrap_or_default()
    };
    let answered = records.iter().any(|r| r.connected_time > 0);
    let talk = sum(|r| r.connected_time);
    let ring = sum(|r| r.ring_time);
    let (start_utc, end_utc, utc_offset) = zone.call_times(start_time, end_time);
    Call {
        id: {
            let mut digits = [0u8; 20];
            let id_digits = u64_digits(call_id, &mut digits);
            let mut part_digits = [0u8; 20];
            let part_digits = u64_digits(u64::from(part), &mut part_digits);
            let start = format_timestamp(&start_time, b'-', b'T');
            let mut name: [&[u8]; 8] = [
                b"smdr/",
                site.as_bytes(),
                b"/",
                id_digits,
                b"/",
                &start,
                b"/part-",
                part_digits,
            ];
            // A whole call's id has no part suffix.
            stable_id_of(
                name.get_mut(..if part == 0 { 6 } else { 8 })
                    .unwrap_or_default(),
            )
        },
        source: Source::Smdr,
        site: CompactString::from(site),
        call_id: call_id.to_compact_string(),
        boot_epoch: epoch,
        part,
        start,
        start_time,
        end_time,
        start_utc,
        end_utc,
        utc_offset,
        duration: total,
        ring,
        hold: sum(|r| r.hold_time),
        park: sum(|r| r.park_time),
        direction,
        tenant: CompactString::default(),
        caller: text(|r| &r.caller),
        called: text(|r| &r.called_number),
        dialled: text(|r| &r.dialled_number),
        answered,
        answered_by,
        parties,
        complete: flushed.is_none(),
        flush_reason: flushed,
        reconciled: false,
        records,
        linkedid: CompactString::default(),
        answer_time: None,
        billsec: Some(talk),
        talk_secs: Some(talk),
        wait_secs: Some(ring),
        disposition: CompactString::const_new(if answered { "ANSWERED" } else { "NO ANSWER" }),
        legs: Vec::new(),
        related_calls: Vec::new(),
        transfers: Vec::new(),
        recordings: Vec::new(),
        cdr: Vec::new(),
        update: None,
    }
}

/// The decimal digits of `n`, written at the end of `buf`.
fn u64_digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(c) = buf.get_mut(at) {
            *c = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}
