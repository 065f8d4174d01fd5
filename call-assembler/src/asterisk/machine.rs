//! The machine: [`AmiAssembler`], its `handle_*` / `poll_*` API and its counters. What an
//! input does to the calls is in `apply`, how calls end and are emitted in `lifecycle`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use ami_proto::AmiMessage;
use chrono::NaiveDateTime;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::input::{FieldList, convert};
use super::state::OpenCall;
use super::{AmiAssemblerConfig, CelRow};
use crate::Output;
use crate::call::{FlushReason, UpdateEvent};
#[cfg(doc)]
use crate::{Anomaly, Call};

/// Counters since the assembler was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmiStats {
    /// Messages handled (events, responses and anything else).
    pub messages: u64,
    /// Messages (and CEL rows) that changed call state.
    pub events: u64,
    /// Calls emitted complete.
    pub complete: u64,
    /// Calls emitted incomplete.
    pub incomplete: u64,
    /// Calls merged into another (Linkedid changes, Asterisk 11 provisional calls).
    pub merges: u64,
    /// Events dropped because their call was already emitted.
    pub late: u64,
    /// Teardown events dropped because their channel was never seen.
    pub unknown: u64,
    /// Legs, rows or items dropped over the per-call limits.
    pub dropped: u64,
    /// Progressive mode: `Started` and `Updated` snapshots emitted (final records are counted
    /// in `complete` and `incomplete`).
    pub snapshots: u64,
    /// Calls emitted incomplete by [`AmiAssembler::resync`] (also counted in `incomplete`).
    pub resynced: u64,
}

/// Groups Asterisk AMI events into calls: a sans-IO state machine (no IO, no clock).
///
/// See the module documentation in the crate docs of [`crate`] and on [`AmiAssembler::handle_message`]
/// for what it reads; calls are keyed by Linkedid and emitted after their end plus
/// [`AmiAssemblerConfig::grace`].
///
/// # Run loop
///
/// ```no_run
/// # use std::time::Instant;
/// # use call_assembler::{AmiAssembler, AmiAssemblerConfig, Output};
/// # fn next_bytes() -> Option<(Instant, Vec<u8>)> { None }
/// # fn deliver(_: call_assembler::Call) {}
/// let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
/// let mut framer = ami_proto::AmiFramer::default();
/// loop {
///     // Wait for bytes or for `asm.poll_timeout()`, whichever comes first.
///     match next_bytes() {
///         Some((now, bytes)) => {
///             framer.push(&bytes);
///             while let Some(frame) = framer.next_frame() {
///                 if let ami_proto::Frame::Message { bytes, .. } = frame {
///                     if let Ok(msg) = ami_proto::AmiMessage::parse(bytes) {
///                         asm.handle_message(now, &msg);
///                     }
///                 }
///             }
///         }
///         None => asm.handle_timeout(Instant::now()),
///     }
///     while let Some(out) = asm.poll_output() {
///         if let Output::Call(call) = out {
///             deliver(call);
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct AmiAssembler {
    pub(super) config: AmiAssemblerConfig,
    pub(super) calls: BTreeMap<u64, OpenCall>,
    /// Linkedid (and aliases of merged calls) to call.
    pub(super) by_linkedid: BTreeMap<CompactString, u64>,
    /// Uniqueid to call.
    pub(super) channels: BTreeMap<CompactString, u64>,
    /// Current channel name to Uniqueid.
    pub(super) names: BTreeMap<CompactString, CompactString>,
    /// Bridge id to the Uniqueids in it.
    pub(super) bridges: BTreeMap<CompactString, Vec<CompactString>>,
    pub(super) timers: BTreeSet<(Instant, u64)>,
    /// Progressive mode: when each open, unfinished call's next `Updated` snapshot is due.
    pub(super) updates: BTreeSet<(Instant, u64)>,
    /// Calls created by the current input whose `Started` snapshot is not out yet.
    pub(super) pending_started: Vec<u64>,
    /// The call the current input was applied to.
    pub(super) touched: Option<u64>,
    /// The call the last `handle_message` / `handle_cel_row` was applied to.
    pub(super) last_call: Option<u64>,
    /// Keys of emitted calls not yet taken by `take_retired`.
    pub(super) retired: VecDeque<CompactString>,
    /// Whether `take_retired` was ever called (until then `retired` is bounded).
    pub(super) retired_taken: bool,
    /// Keys whose call id was given out, with the highest part (bounded by
    /// `remember_emitted`, oldest forgotten first).
    pub(super) given_ids: BTreeMap<CompactString, u32>,
    pub(super) given_order: VecDeque<CompactString>,
    pub(super) outputs: VecDeque<Output>,
    pub(super) anchor: Option<(NaiveDateTime, Instant)>,
    pub(super) last_now: Option<Instant>,
    pub(super) seq: u64,
    pub(super) stats: AmiStats,
    pub(super) emitted: BTreeSet<CompactString>,
    pub(super) emitted_order: VecDeque<CompactString>,
}

impl AmiAssembler {
    /// An empty assembler.
    pub fn new(config: AmiAssemblerConfig) -> Self {
        Self {
            config,
            calls: BTreeMap::new(),
            by_linkedid: BTreeMap::new(),
            channels: BTreeMap::new(),
            names: BTreeMap::new(),
            bridges: BTreeMap::new(),
            timers: BTreeSet::new(),
            updates: BTreeSet::new(),
            pending_started: Vec::new(),
            touched: None,
            last_call: None,
            retired: VecDeque::new(),
            retired_taken: false,
            given_ids: BTreeMap::new(),
            given_order: VecDeque::new(),
            outputs: VecDeque::new(),
            anchor: None,
            last_now: None,
            seq: 0,
            stats: AmiStats::default(),
            emitted: BTreeSet::new(),
            emitted_order: VecDeque::new(),
        }
    }

    /// Feeds one AMI message read at `now` (monotonic; an earlier `now` than one seen before is
    /// treated as that one). Reads Newchannel, Newstate, NewCallerid, Newexten, DialBegin /
    /// DialEnd (and Asterisk 11's `Dial`), BridgeEnter / BridgeLeave (and Asterisk 11's
    /// `Bridge` and `LocalBridge`), Hangup, Rename, BlindTransfer, AttendedTransfer, VarSet
    /// (recording file names), Cdr and CEL; other events only matter for a changed Linkedid;
    /// responses are ignored. Copies what it keeps. Afterwards drain
    /// [`AmiAssembler::poll_output`] (and [`AmiAssembler::take_retired`] when journaling), read
    /// [`AmiAssembler::last_key`] if journaling, and re-read [`AmiAssembler::poll_timeout`].
    pub fn handle_message(&mut self, now: Instant, msg: &AmiMessage<'_>) {
        let now = self.clamp(now);
        self.stats.messages += 1;
        self.touched = None;
        if let Some(ev) = convert(msg, &self.config.zone) {
            self.apply(now, ev);
        }
        self.finish_input(now);
    }

    /// Feeds one CEL row from a database or CSV backend (the same logic as AMI `CEL` events;
    /// with CEL alone a call ends at its `LINKEDID_END` or when all its channels hung up).
    pub fn handle_cel_row(&mut self, now: Instant, row: &CelRow) {
        let now = self.clamp(now);
        self.stats.messages += 1;
        self.touched = None;
        let list = FieldList(vec![
            ("Event", b"CEL".as_slice()),
            ("EventName", row.eventtype.as_bytes()),
            ("EventTime", row.eventtime.as_bytes()),
            ("CallerIDname", row.cid_name.as_bytes()),
            ("CallerIDnum", row.cid_num.as_bytes()),
            ("Exten", row.exten.as_bytes()),
            ("Context", row.context.as_bytes()),
            ("Channel", row.channame.as_bytes()),
            ("Application", row.appname.as_bytes()),
            ("AppData", row.appdata.as_bytes()),
            ("UniqueID", row.uniqueid.as_bytes()),
            ("LinkedID", row.linkedid.as_bytes()),
            ("Peer", row.peer.as_bytes()),
            ("Extra", row.extra.as_bytes()),
        ]);
        if let Some(ev) = convert(&list, &self.config.zone) {
            self.apply(now, ev);
        }
        self.finish_input(now);
    }

    /// After one input: remember the call it was applied to and send the `Started` snapshots
    /// of the calls it created.
    fn finish_input(&mut self, now: Instant) {
        self.last_call = self.touched.take();
        self.send_started(now);
    }

    /// The key under which to journal the input just handled: after
    /// [`AmiAssembler::handle_message`] or [`AmiAssembler::handle_cel_row`], the key of the open
    /// call the input was applied to (the call's current Linkedid), or `None` when it changed no
    /// open call (ignored, a response, a late or unknown channel's event, an event unrelated to
    /// calls). `None` after [`AmiAssembler::resync`] and the other calls.
    ///
    /// # Journaling
    ///
    /// A relay that must not lose open calls over a restart stores each input with
    /// `Some(key)` under that key, deletes the inputs stored under every key that
    /// [`AmiAssembler::take_retired`] returns (those stored before that take: a key may come
    /// back later for a new call), and on start replays what is left, in the order it was
    /// handled, through a fresh assembler with the same configuration before going on with
    /// new input. The calls that were open are rebuilt with the same ids, legs and figures
    /// (times come from the events' `Timestamp:` headers; an event without a time is placed
    /// by the replay's `now`). What the journal does not carry:
    ///
    /// * a [`AmiAssembler::resync`]: its effects are lost on replay (legs it ended are open
    ///   again, channels it adopted are unknown again, so their `Hangup` is an
    ///   [`Anomaly::AmiUnknownChannel`]); the resync after the reconnect that follows a
    ///   restart settles both;
    /// * the memory of emitted calls: after a restart, an event about a channel of a call
    ///   emitted before is not recognised as late, and a new call under a Linkedid emitted
    ///   before is part 0 again (same id as the emitted one);
    /// * progressive mode's sequence numbers: a rebuilt call sends `Started` again with
    ///   sequence 0 (the same id), and counts on from there;
    /// * the time an input arrived: deadlines (grace, idle timeout, updates) of rebuilt calls
    ///   count from the replay.
    pub fn last_key(&self) -> Option<&str> {
        self.last_call
            .and_then(|id| self.calls.get(&id))
            .map(|c| c.linkedid.as_str())
    }

    /// Keys that no open call uses any more, since the last take: for every call emitted
    /// (complete, flushed, evicted, resynced: every final record), its Linkedid and every key
    /// merged into it (Linkedids of merged calls, provisional keys of Asterisk 11 channels
    /// without a Linkedid), i.e. every key [`AmiAssembler::last_key`] returned for its inputs.
    /// Call it after draining [`AmiAssembler::poll_output`]; a key may be returned again later
    /// when a new call uses it.
    ///
    /// Until the first call, only the most recent [`AmiAssemblerConfig::remember_emitted`]
    /// keys are kept (an assembler nobody journals for does not grow); from the first call on,
    /// every key is kept until taken, so take them after every input.
    pub fn take_retired(&mut self) -> Vec<String> {
        self.retired_taken = true;
        self.retired.drain(..).map(String::from).collect()
    }

    /// Emits every call whose deadline has passed at `now`, and in progressive mode every
    /// `Updated` snapshot due. Safe to call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        loop {
            let deadline = self.timers.first().copied().filter(|t| t.0 <= now);
            let update = self.updates.first().copied().filter(|t| t.0 <= now);
            match (deadline, update) {
                // At equal times the call's end goes first (no snapshot just before it).
                (Some(d), u) if u.is_none_or(|u| d.0 <= u.0) => {
                    let (deadline, id) = d;
                    self.timers.remove(&(deadline, id));
                    if let Some(call) = self.calls.get(&id) {
                        let reason = if call.finished_at.is_some() {
                            None
                        } else {
                            Some(FlushReason::IdleTimeout)
                        };
                        self.emit(id, reason, now);
                    }
                }
                (_, Some((at, id))) => {
                    self.updates.remove(&(at, id));
                    let finished = match self.calls.get_mut(&id) {
                        Some(call) => {
                            call.update_at = None;
                            call.finished_at.is_some()
                        }
                        None => continue,
                    };
                    if !finished {
                        self.snapshot(id, UpdateEvent::Updated, now);
                        self.schedule_update(id, now);
                    }
                }
                _ => break,
            }
        }
    }

    /// Emits every open call as it stands: finished ones complete, the others incomplete
    /// ([`FlushReason::EndOfInput`]), oldest first.
    pub fn flush(&mut self, now: Instant) {
        let now = self.clamp(now);
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            let reason = match self.calls.get(&id) {
                Some(c) if c.finished_at.is_some() => None,
                Some(_) => Some(FlushReason::EndOfInput),
                None => continue,
            };
            self.emit(id, reason, now);
        }
        self.timers.clear();
        self.updates.clear();
        self.pending_started.clear();
    }

    /// When [`AmiAssembler::handle_timeout`] should next be called (a call's grace or idle
    /// deadline, or in progressive mode its next `Updated` snapshot), or `None` when no call is
    /// open. Changes after every `handle_*` call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.timers.first().map(|t| t.0);
        let update = self.updates.first().map(|t| t.0);
        match (deadline, update) {
            (Some(d), Some(u)) => Some(d.min(u)),
            (d, u) => d.or(u),
        }
    }

    /// The next output, or `None`. Drain after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Calls open (not yet emitted).
    pub fn open_calls(&self) -> usize {
        self.calls.len()
    }

    /// Channels tracked in open calls.
    pub fn open_channels(&self) -> usize {
        self.channels.len()
    }

    /// Whether nothing is open and nothing waits to be polled (keys waiting for
    /// [`AmiAssembler::take_retired`] do not count).
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
            && self.outputs.is_empty()
            && self.channels.is_empty()
            && self.by_linkedid.is_empty()
            && self.bridges.is_empty()
            && self.timers.is_empty()
            && self.updates.is_empty()
            && self.pending_started.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> AmiStats {
        self.stats
    }

    /// The settings.
    pub fn config(&self) -> &AmiAssemblerConfig {
        &self.config
    }

    pub(super) fn clamp(&mut self, now: Instant) -> Instant {
        crate::clamp_now(&mut self.last_now, now)
    }
}
