//! What an input does to the calls: finding (or creating) a channel's call, merging calls
//! whose Linkedids meet, and recording a channel's event on its leg.

use std::time::Instant;

use compact_str::CompactString;

use super::AmiAssembler;
use super::input::{Ev, Kind, epoch_to_local};
use super::state::{AnswerCand, AnswerKind, LegState, OpenCall, Stamp, set_time, wall_at};
use crate::call::FlushReason;
use crate::{Anomaly, Output};

/// Dialplan applications that call other channels: the channel running one is a party A of
/// Asterisk's CDR with the called channels as party B.
const DIAL_APPS: [&str; 4] = ["Dial", "Queue", "FollowMe", "RetryDial"];

impl AmiAssembler {
    pub(super) fn apply(&mut self, now: Instant, mut ev: Ev) {
        if let Some(w) = ev.wall {
            self.anchor = Some((w, now));
        }
        let stamp = Stamp {
            at: now,
            wall: ev.wall,
        };
        let kind = std::mem::replace(&mut ev.kind, Kind::Update);
        match kind {
            Kind::LinkedIdEnd => {
                let Some(lid) = ev.linkedid.clone() else {
                    return;
                };
                let Some(&id) = self.by_linkedid.get(&lid) else {
                    return;
                };
                self.stats.events += 1;
                self.touched = Some(id);
                if let Some(call) = self.calls.get_mut(&id) {
                    // For an alias this is the "merged" kind of end: the call goes on.
                    if call.linkedid == lid {
                        call.linkedid_end = true;
                    }
                    call.last = stamp;
                }
                self.refresh(id, now);
            }
            Kind::Cdr(row) => {
                let Some(uid) = ev.uid.clone() else { return };
                let Some(id) = self.known(&uid, "Cdr") else {
                    return;
                };
                self.stats.events += 1;
                self.touched = Some(id);
                let max = self.config.max_items_per_call;
                if let Some(call) = self.calls.get_mut(&id) {
                    if call.cdr.len() < max {
                        call.cdr.push(row);
                    } else {
                        self.stats.dropped += 1;
                    }
                }
            }
            Kind::Transfer(mut t) => {
                let uid = ev.uid.clone().unwrap_or_else(|| t.transferer.clone());
                let id = self
                    .channels
                    .get(&uid)
                    .or_else(|| self.channels.get(&t.transferee))
                    .copied();
                let Some(id) = id else { return };
                self.stats.events += 1;
                self.touched = Some(id);
                let max = self.config.max_items_per_call;
                if let Some(call) = self.calls.get_mut(&id) {
                    let dup = call
                        .transfers
                        .iter()
                        .any(|(_, x)| x.kind == t.kind && x.transferer == t.transferer);
                    if dup {
                        // The same transfer seen by AMI and by CEL: keep the fuller one.
                        if let Some((_, x)) = call
                            .transfers
                            .iter_mut()
                            .find(|(_, x)| x.kind == t.kind && x.transferer == t.transferer)
                        {
                            if x.result.is_empty() {
                                x.result = std::mem::take(&mut t.result);
                            }
                            if x.transferee.is_empty() {
                                x.transferee = std::mem::take(&mut t.transferee);
                            }
                            if x.target.is_empty() {
                                x.target = std::mem::take(&mut t.target);
                            }
                        }
                    } else if call.transfers.len() < max {
                        call.transfers.push((stamp, t));
                    } else {
                        self.stats.dropped += 1;
                    }
                    call.last = stamp;
                }
                self.refresh(id, now);
            }
            kind => self.apply_channel(now, stamp, ev, kind),
        }
    }

    /// The call of a channel that a teardown event names, reporting unknown and late ones.
    fn known(&mut self, uid: &CompactString, event: &str) -> Option<u64> {
        if let Some(&id) = self.channels.get(uid) {
            return Some(id);
        }
        if self.emitted.contains(uid) {
            self.stats.late += 1;
            self.outputs
                .push_back(Output::Anomaly(Anomaly::AmiLateEvent {
                    event: event.into(),
                    uniqueid: uid.to_string(),
                }));
        } else {
            self.stats.unknown += 1;
            self.outputs
                .push_back(Output::Anomaly(Anomaly::AmiUnknownChannel {
                    event: event.into(),
                    uniqueid: uid.to_string(),
                }));
        }
        None
    }

    fn new_call(
        &mut self,
        now: Instant,
        stamp: Stamp,
        linkedid: CompactString,
        provisional: bool,
    ) -> u64 {
        if self.calls.len() >= self.config.max_open_calls.max(1) {
            if let Some(&(_, victim)) = self.timers.first() {
                self.emit(victim, Some(FlushReason::Evicted), now);
            }
        }
        self.seq += 1;
        let id = self.seq;
        let deadline = now.checked_add(self.config.idle_timeout).unwrap_or(now);
        self.by_linkedid.insert(linkedid.clone(), id);
        self.calls.insert(
            id,
            OpenCall {
                linkedid,
                aliases: Vec::new(),
                provisional,
                related: Vec::new(),
                legs: Vec::new(),
                answers: Vec::new(),
                dial_statuses: Vec::new(),
                dialed: false,
                called: CompactString::default(),
                transfers: Vec::new(),
                recordings: Vec::new(),
                cdr: Vec::new(),
                linkedid_end: false,
                first: stamp,
                last: stamp,
                finished_at: None,
                deadline,
                created_at: now,
                id: None,
                next_seq: 0,
                update_at: None,
            },
        );
        self.timers.insert((deadline, id));
        self.touched = Some(id);
        if self.config.progress_interval.is_some() {
            self.pending_started.push(id);
        }
        id
    }

    /// Finds (or creates) the call of channel `uid`, following a changed Linkedid.
    fn locate(
        &mut self,
        now: Instant,
        stamp: Stamp,
        uid: &CompactString,
        linkedid: Option<&CompactString>,
        create: bool,
    ) -> Option<u64> {
        if let Some(&id) = self.channels.get(uid) {
            let Some(lid) = linkedid else {
                return Some(id);
            };
            match self.by_linkedid.get(lid).copied() {
                Some(target) if target == id => Some(id),
                Some(target) => {
                    // The channel's Linkedid changed to another open call's. Asterisk's CDR
                    // files each channel under its own Linkedid, so the channel moves alone
                    // (a parked call picked up: the retriever's `;2` takes the parked call's
                    // Linkedid, its `;1` keeps its own and stays a call of its own). A
                    // provisional (Asterisk 11) call, or one with no other leg, merges whole.
                    let whole = self
                        .calls
                        .get(&id)
                        .is_none_or(|c| c.provisional || c.legs.len() <= 1);
                    if whole {
                        self.merge(id, target, now);
                    } else {
                        self.move_leg(uid, id, target, now);
                    }
                    Some(target)
                }
                None => {
                    // A Linkedid we never saw (an older call from before we connected, or the
                    // real one of a provisional Asterisk 11 call): the call takes it on.
                    if let Some(call) = self.calls.get_mut(&id) {
                        let old = std::mem::replace(&mut call.linkedid, lid.clone());
                        call.aliases.push(old);
                    }
                    self.by_linkedid.insert(lid.clone(), id);
                    Some(id)
                }
            }
        } else {
            if !create {
                return None;
            }
            let lid = linkedid.unwrap_or(uid);
            let id = match self.by_linkedid.get(lid).copied() {
                Some(id) => id,
                None => self.new_call(now, stamp, lid.clone(), linkedid.is_none()),
            };
            let max = self.config.max_legs_per_call;
            let call = self.calls.get_mut(&id)?;
            if call.legs.len() >= max {
                self.stats.dropped += 1;
                return None;
            }
            call.legs.push(LegState {
                uid: uid.clone(),
                ..LegState::default()
            });
            // A new channel reopens a call whose Linkedid had ended.
            call.linkedid_end = false;
            self.channels.insert(uid.clone(), id);
            Some(id)
        }
    }

    /// Moves channel `uid` alone from call `from` into call `into`, and links the two calls.
    fn move_leg(&mut self, uid: &CompactString, from: u64, into: u64, now: Instant) {
        let max_legs = self.config.max_legs_per_call;
        let (anchor, zone) = (self.anchor, self.config.zone);
        let Some(old) = self.calls.get_mut(&from) else {
            return;
        };
        let Some(at) = old.legs.iter().position(|l| l.uid == *uid) else {
            return;
        };
        let leg = old.legs.remove(at);
        let from_lid = old.linkedid.clone();
        let Some(call) = self.calls.get_mut(&into) else {
            return;
        };
        if !call.related.contains(&from_lid) {
            call.related.push(from_lid);
        }
        let into_lid = call.linkedid.clone();
        if call.legs.len() < max_legs {
            self.channels.insert(uid.clone(), into);
            call.legs.push(leg);
            let fallback = epoch_to_local(&call.linkedid, &zone);
            let first = call.first.at;
            call.legs
                .sort_by_key(|l| l.created.map(|s| wall_at(anchor, s, fallback, first)));
        } else {
            self.channels.remove(uid);
            self.stats.dropped += 1;
            for b in &leg.bridges {
                self.leave_bridge(uid, b);
            }
        }
        if let Some(old) = self.calls.get_mut(&from) {
            if !old.related.contains(&into_lid) {
                old.related.push(into_lid);
            }
        }
        self.refresh(from, now);
        self.refresh(into, now);
    }

    /// Moves everything of call `from` into call `into`.
    fn merge(&mut self, from: u64, into: u64, now: Instant) {
        if from == into {
            return;
        }
        let Some(old) = self.calls.remove(&from) else {
            return;
        };
        self.timers.remove(&(old.deadline, from));
        if let Some(at) = old.update_at {
            self.updates.remove(&(at, from));
        }
        // In progressive mode its records stop here (the survivor's go on): its id is not
        // given out again.
        if let Some((_, key, part)) = &old.id {
            self.give_id(key, *part);
        }
        self.stats.merges += 1;
        let max_legs = self.config.max_legs_per_call;
        let max = self.config.max_items_per_call;
        let (anchor, zone) = (self.anchor, self.config.zone);
        let Some(call) = self.calls.get_mut(&into) else {
            return;
        };
        let mut dropped = Vec::new();
        for leg in old.legs {
            if call.legs.len() < max_legs {
                self.channels.insert(leg.uid.clone(), into);
                call.legs.push(leg);
            } else {
                self.channels.remove(&leg.uid);
                self.stats.dropped += 1;
                dropped.push(leg);
            }
        }
        // In order of creation on the wall clock (as the calls will show it), so that a replay
        // of the same events at other `now`s gives the same order.
        let fallback = epoch_to_local(&call.linkedid, &zone);
        let first = call.first.at.min(old.first.at);
        call.legs
            .sort_by_key(|l| l.created.map(|s| wall_at(anchor, s, fallback, first)));
        for a in old.answers {
            if call.answers.len() < max {
                call.answers.push(a);
            }
        }
        for s in old.dial_statuses {
            if call.dial_statuses.len() < max {
                call.dial_statuses.push(s);
            }
        }
        call.dialed |= old.dialed;
        for r in old.related {
            if !call.related.contains(&r) && call.related.len() < max {
                call.related.push(r);
            }
        }
        if call.called.is_empty() {
            call.called = old.called;
        }
        call.transfers.extend(old.transfers);
        call.transfers.truncate(max);
        for r in old.recordings {
            if !call.recordings.contains(&r) && call.recordings.len() < max {
                call.recordings.push(r);
            }
        }
        call.cdr.extend(old.cdr);
        call.cdr.truncate(max);
        if old.first.at < call.first.at {
            call.first = old.first;
        }
        if old.last.at > call.last.at {
            call.last = old.last;
        }
        for alias in std::iter::once(old.linkedid).chain(old.aliases) {
            self.by_linkedid.insert(alias.clone(), into);
            call.aliases.push(alias);
        }
        let own = (&call.linkedid, &call.aliases);
        call.related.retain(|r| r != own.0 && !own.1.contains(r));
        // A leg dropped over the limit leaves no trace (its name, its bridges).
        for leg in dropped {
            for name in [&leg.name, &leg.first_name] {
                if self.names.get(name) == Some(&leg.uid) {
                    self.names.remove(name);
                }
            }
            for b in &leg.bridges {
                self.leave_bridge(&leg.uid, b);
            }
        }
        self.refresh(into, now);
    }

    pub(super) fn apply_channel(&mut self, now: Instant, stamp: Stamp, ev: Ev, kind: Kind) {
        let Some(uid) = ev.uid.clone() else { return };
        if !self.channels.contains_key(&uid) && self.emitted.contains(&uid) {
            // A channel of a call already emitted: late, whatever the event.
            self.known(&uid, ev.name);
            return;
        }
        let teardown = matches!(kind, Kind::Hangup { .. } | Kind::ChanEnd);
        let Some(mut id) = self.locate(now, stamp, &uid, ev.linkedid.as_ref(), !teardown) else {
            if teardown {
                self.known(&uid, ev.name);
            }
            return;
        };
        self.stats.events += 1;
        let max = self.config.max_items_per_call;
        // Links to other channels first: they may merge calls.
        match &kind {
            Kind::DialBegin { dest: Some(dest) } => {
                if let Some(&did) = self.channels.get(dest) {
                    if did != id {
                        self.merge(did, id, now);
                    }
                }
            }
            Kind::LocalPair { other } => {
                if let Some(&oid) = self.channels.get(other) {
                    if oid != id {
                        self.merge(oid, id, now);
                    }
                }
            }
            _ => {}
        }
        match self.channels.get(&uid) {
            Some(&cur) => id = cur,
            None => {
                // Its own leg was dropped over the limit by a merge: nothing more to record.
                self.touched = Some(id);
                return;
            }
        }
        self.touched = Some(id);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.last = stamp;
        let is_caller = call.linkedid == uid || call.legs.first().is_some_and(|l| l.uid == uid);
        let mut new_called = None;
        if let Some(leg) = call.leg_mut(&uid) {
            if matches!(kind, Kind::NewChannel) || leg.created.is_none() {
                set_time(&mut leg.created, stamp);
            }
            if let Some(name) = &ev.channel {
                if leg.first_name.is_empty() {
                    leg.first_name = name.clone();
                }
                if leg.name.is_empty() {
                    leg.name = name.clone();
                    self.names.insert(name.clone(), uid.clone());
                }
            }
            if leg.cid_num.is_empty() {
                if let Some(n) = &ev.cid_num {
                    leg.cid_num = n.clone();
                }
            }
            if leg.cid_name.is_empty() {
                if let Some(n) = &ev.cid_name {
                    leg.cid_name = n.clone();
                }
            }
            if leg.context.is_empty() {
                if let Some(c) = &ev.context {
                    leg.context = c.clone();
                }
            }
            if let Some(e) = &ev.exten {
                let real = e != "s" && e != "h" && !e.is_empty();
                if real && leg.exten.is_empty() {
                    leg.exten = e.clone();
                }
                // The dialled number: the caller's last extension in the context its dialplan
                // first ran in (subroutines and macros run elsewhere).
                // (`AppDial`, `AppDial2`, `AppQueue` are Asterisk marking a dialled channel,
                // not dialplan.)
                let pseudo = ev
                    .app
                    .as_ref()
                    .is_some_and(|a| a.starts_with("AppDial") || a == "AppQueue");
                if matches!(kind, Kind::Exten) && leg.run_context.is_none() && !pseudo {
                    leg.run_context = ev.context.clone();
                }
                let home_context = leg.run_context.as_ref().unwrap_or(&leg.context);
                let home = ev.context.is_none() || ev.context.as_ref() == Some(home_context);
                if real && home && is_caller && matches!(kind, Kind::NewChannel | Kind::Exten) {
                    new_called = Some(e.clone());
                }
            }
            if ev.up {
                set_time(&mut leg.answered, stamp);
            }
            if let Some(app) = &ev.app {
                if DIAL_APPS.iter().any(|d| app.eq_ignore_ascii_case(d)) {
                    leg.dials = true;
                    leg.after_dial = false;
                } else {
                    leg.after_dial = leg.dials;
                }
            }
            if let Some(t) = &ev.tenant {
                leg.tenant = t.clone();
            }
            if let Some(a) = &ev.accountcode {
                leg.accountcode = a.clone();
            }
        }
        if let Some(c) = new_called {
            call.called = c;
        }
        let mut left: Vec<CompactString> = Vec::new();
        match kind {
            Kind::DialBegin { dest } => {
                call.dialed = true;
                if let Some(leg) = call.leg_mut(&uid) {
                    leg.dials = true;
                    leg.after_dial = false;
                }
                if let Some(dest) = dest {
                    if let Some(d) = call.leg_mut(&dest) {
                        d.dialed_by = uid.clone();
                    }
                }
            }
            Kind::DialEnd { dest, status } => {
                if let Some(d) = dest.as_deref().and_then(|d| call.leg_mut(d)) {
                    d.dial_status = status.clone();
                }
                if status == "ANSWER" {
                    if call.answers.len() < max {
                        call.answers.push(AnswerCand {
                            kind: AnswerKind::DialAnswer,
                            stamp,
                            a: uid.clone(),
                            b: dest.unwrap_or_default(),
                        });
                    }
                } else if !status.is_empty() && call.dial_statuses.len() < max {
                    call.dial_statuses.push(status);
                }
            }
            Kind::BridgeEnter { bridge, holding } => {
                let members = self.bridges.entry(bridge.clone()).or_default();
                if !holding {
                    for other in members.iter() {
                        if *other != uid && call.answers.len() < max {
                            call.answers.push(AnswerCand {
                                kind: AnswerKind::Bridge,
                                stamp,
                                a: uid.clone(),
                                b: other.clone(),
                            });
                        }
                    }
                }
                if !members.contains(&uid) && members.len() < 64 {
                    members.push(uid.clone());
                }
                if let Some(leg) = call.leg_mut(&uid) {
                    if !leg.bridges.contains(&bridge) && leg.bridges.len() < 8 {
                        leg.bridges.push(bridge);
                    }
                }
            }
            Kind::BridgeLeave { bridge } => {
                if let Some(leg) = call.leg_mut(&uid) {
                    leg.bridges.retain(|b| *b != bridge);
                }
                left.push(bridge);
            }
            Kind::Pair {
                other_uid,
                other_names,
            } => {
                let others: Vec<CompactString> = other_uid
                    .into_iter()
                    .chain(
                        other_names
                            .iter()
                            .filter_map(|n| self.names.get(n).cloned()),
                    )
                    .collect();
                for other in others {
                    if other != uid && call.answers.len() < max {
                        call.answers.push(AnswerCand {
                            kind: AnswerKind::Bridge,
                            stamp,
                            a: uid.clone(),
                            b: other,
                        });
                    }
                }
            }
            Kind::Hangup {
                cause,
                cause_txt,
                dial_status,
            } => {
                if let Some(leg) = call.leg_mut(&uid) {
                    set_time(&mut leg.hungup, stamp);
                    if cause.is_some() {
                        leg.cause = cause;
                    }
                    if !cause_txt.is_empty() {
                        leg.cause_txt = cause_txt;
                    }
                    if leg.dial_status.is_empty() && !dial_status.is_empty() && !is_caller {
                        leg.dial_status = dial_status.clone();
                    }
                    left = std::mem::take(&mut leg.bridges);
                }
                if !dial_status.is_empty()
                    && dial_status != "ANSWER"
                    && call.dial_statuses.len() < max
                {
                    call.dial_statuses.push(dial_status);
                }
            }
            Kind::Park { start } => {
                if let Some(leg) = call.leg_mut(&uid) {
                    match (start, leg.parked_since) {
                        (true, None) => leg.parked_since = Some(stamp),
                        (false, Some(since)) if leg.parked.len() < 64 => {
                            leg.parked.push((since, stamp));
                            leg.parked_since = None;
                        }
                        _ => {}
                    }
                }
            }
            Kind::ChanEnd => {
                if let Some(leg) = call.leg_mut(&uid) {
                    set_time(&mut leg.hungup, stamp);
                }
            }
            Kind::Rename { new_name } => {
                if let Some(leg) = call.leg_mut(&uid) {
                    if self.names.get(&leg.name) == Some(&uid) {
                        self.names.remove(&leg.name);
                    }
                    leg.name = new_name.clone();
                    self.names.insert(new_name, uid.clone());
                }
            }
            Kind::Recording(file)
                if !call.recordings.contains(&file) && call.recordings.len() < max =>
            {
                call.recordings.push(file);
            }
            _ => {}
        }
        for b in left {
            self.leave_bridge(&uid, &b);
        }
        self.refresh(id, now);
    }

    pub(super) fn leave_bridge(&mut self, uid: &CompactString, bridge: &CompactString) {
        if let Some(members) = self.bridges.get_mut(bridge) {
            members.retain(|m| m != uid);
            if members.is_empty() {
                self.bridges.remove(bridge);
            }
        }
    }
}
