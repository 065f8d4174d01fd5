//! How calls end: deadlines (grace, idle timeout), progressive snapshots, emitting a call and
//! the ids given out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use compact_str::CompactString;

use super::AmiAssembler;
use super::state::OpenCall;
use crate::Output;
use crate::call::{CallUpdate, FlushReason, Source, UpdateEvent, stable_id, stable_id_of};

impl AmiAssembler {
    /// Recomputes whether the call is finished, its deadline and its next update.
    pub(super) fn refresh(&mut self, id: u64, now: Instant) {
        let (grace, idle) = (self.config.grace, self.config.idle_timeout);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let all_hung = !call.legs.is_empty() && call.legs.iter().all(|l| l.hungup.is_some());
        if call.linkedid_end || all_hung {
            if call.finished_at.is_none() {
                call.finished_at = Some(now);
            }
        } else {
            call.finished_at = None;
        }
        let deadline = match call.finished_at {
            Some(t) => t.checked_add(grace).unwrap_or(t),
            None => now.checked_add(idle).unwrap_or(now),
        };
        if deadline != call.deadline {
            self.timers.remove(&(call.deadline, id));
            call.deadline = deadline;
        }
        self.timers.insert((deadline, id));
        // No `Updated` snapshot while a finished call waits out its grace period.
        if call.finished_at.is_some() {
            if let Some(at) = call.update_at.take() {
                self.updates.remove(&(at, id));
            }
        } else if call.update_at.is_none() {
            self.schedule_update(id, now);
        }
    }

    /// Progressive mode: schedules the next `Updated` snapshot of an unfinished call whose
    /// `Started` is out, at the first multiple of the interval after its creation that is
    /// later than `now`.
    pub(super) fn schedule_update(&mut self, id: u64, now: Instant) {
        let Some(iv) = self.config.progress_interval else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(at) = call.update_at.take() {
            self.updates.remove(&(at, id));
        }
        if call.finished_at.is_some() || call.next_seq == 0 {
            return;
        }
        if let Some(at) = next_tick(call.created_at, iv, now) {
            call.update_at = Some(at);
            self.updates.insert((at, id));
        }
    }

    /// Progressive mode: the `Started` snapshots of the calls the last input created.
    pub(super) fn send_started(&mut self, now: Instant) {
        if self.pending_started.is_empty() {
            return;
        }
        for id in std::mem::take(&mut self.pending_started) {
            if self.calls.get(&id).is_some_and(|c| c.next_seq == 0) {
                self.snapshot(id, UpdateEvent::Started, now);
                self.schedule_update(id, now);
            }
        }
    }

    /// Emits a snapshot of an open call (progressive mode).
    pub(super) fn snapshot(&mut self, id: u64, event: UpdateEvent, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        fix_id(call, &self.config.site, &self.given_ids);
        let sequence = call.next_seq;
        call.next_seq = sequence.saturating_add(1);
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let mut record = self.build(call, None, Some(now));
        record.update = Some(CallUpdate { sequence, event });
        self.stats.snapshots += 1;
        self.outputs.push_back(Output::Call(record));
    }

    /// Emits a call: complete when `reason` is `None`, else flushed for that reason.
    pub(super) fn emit(&mut self, id: u64, reason: Option<FlushReason>, now: Instant) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        self.timers.remove(&(call.deadline, id));
        if let Some(at) = call.update_at.take() {
            self.updates.remove(&(at, id));
        }
        for lid in std::iter::once(&call.linkedid).chain(call.aliases.iter()) {
            if self.by_linkedid.get(lid) == Some(&id) {
                self.by_linkedid.remove(lid);
            }
        }
        for leg in &call.legs {
            if self.channels.get(&leg.uid) == Some(&id) {
                self.channels.remove(&leg.uid);
            }
            for name in [&leg.name, &leg.first_name] {
                if self.names.get(name) == Some(&leg.uid) {
                    self.names.remove(name);
                }
            }
            for b in &leg.bridges {
                self.leave_bridge(&leg.uid, b);
            }
            if self.emitted.insert(leg.uid.clone()) {
                self.emitted_order.push_back(leg.uid.clone());
            }
        }
        while self.emitted_order.len() > self.config.remember_emitted {
            if let Some(old) = self.emitted_order.pop_front() {
                self.emitted.remove(&old);
            }
        }
        for key in std::iter::once(&call.linkedid).chain(call.aliases.iter()) {
            self.retired.push_back(key.clone());
        }
        if !self.retired_taken {
            let keep = self.config.remember_emitted.max(1);
            while self.retired.len() > keep {
                self.retired.pop_front();
            }
        }
        if reason.is_none() {
            self.stats.complete += 1;
        } else {
            self.stats.incomplete += 1;
        }
        fix_id(&mut call, &self.config.site, &self.given_ids);
        if let Some((_, key, part)) = &call.id {
            let (key, part) = (key.clone(), *part);
            self.give_id(&key, part);
        }
        let mut built = self.build(&call, reason, None);
        if self.config.progress_interval.is_some() {
            if call.next_seq == 0 {
                // Created and emitted by the same input: its `Started` goes out first.
                let mut started = self.build(&call, None, Some(now));
                started.update = Some(CallUpdate {
                    sequence: 0,
                    event: UpdateEvent::Started,
                });
                self.stats.snapshots += 1;
                self.outputs.push_back(Output::Call(started));
                call.next_seq = 1;
            }
            built.update = Some(CallUpdate {
                sequence: call.next_seq,
                event: UpdateEvent::Ended,
            });
        }
        self.outputs.push_back(Output::Call(built));
    }

    /// Remembers that the id of (`key`, `part`) was given out, so that a later call under the
    /// same key gets the next part.
    pub(super) fn give_id(&mut self, key: &CompactString, part: u32) {
        match self.given_ids.get_mut(key) {
            Some(p) => *p = (*p).max(part),
            None => {
                self.given_ids.insert(key.clone(), part);
                self.given_order.push_back(key.clone());
            }
        }
        while self.given_order.len() > self.config.remember_emitted {
            if let Some(old) = self.given_order.pop_front() {
                self.given_ids.remove(&old);
            }
        }
    }
}

/// The id of an Asterisk call: [`stable_id`] of its key for part 0, with `/part-N` after it for
/// a later part.
pub(super) fn call_id(site: &str, key: &str, part: u32) -> String {
    if part == 0 {
        return stable_id(Source::Ami, site, key);
    }
    let digits = part.to_string();
    stable_id_of(&[
        b"ami/",
        site.as_bytes(),
        b"/",
        key.as_bytes(),
        b"/part-",
        digits.as_bytes(),
    ])
}

/// Fixes a call's id when it is first needed (its first record): the key is its Linkedid then,
/// and the part the one after the last given out under that key.
fn fix_id(call: &mut OpenCall, site: &str, given: &BTreeMap<CompactString, u32>) {
    if call.id.is_none() {
        let key = call.linkedid.clone();
        let part = given.get(&key).map_or(0, |p| p.saturating_add(1));
        call.id = Some((call_id(site, &key, part), key, part));
    }
}

/// The first `created + k * iv` (k >= 1) later than `now`; `None` for a zero interval or past
/// the end of time.
fn next_tick(created: Instant, iv: Duration, now: Instant) -> Option<Instant> {
    let step = iv.as_nanos();
    if step == 0 {
        return None;
    }
    let k = now.saturating_duration_since(created).as_nanos() / step + 1;
    let offset = u64::try_from(step.checked_mul(k)?).ok()?;
    created.checked_add(Duration::from_nanos(offset))
}
