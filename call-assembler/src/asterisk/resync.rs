//! After a reconnect: reconciling the open calls with the PBX's channel list.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ami_proto::AmiMessage;
use compact_str::CompactString;

use super::AmiAssembler;
use super::input::{Ev, Fields, Kind, parse_hms};
use super::state::Stamp;
use crate::call::FlushReason;

impl AmiAssembler {
    /// Reconciles the open calls with the PBX's channel list after a reconnect: call it with
    /// the `CoreShowChannel` events that answer `CoreShowChannels` (ami-proto's client reports
    /// them as one `Resync`), at the `now` the list was complete.
    ///
    /// * Every leg of an open call that has not hung up and whose Uniqueid is not in the list
    ///   is marked ended at the resync (its `end` is `now` placed on the wall clock, as for
    ///   events without a time). A call none of whose legs is alive any more is emitted
    ///   incomplete with [`FlushReason::Resync`]; a call whose end had already been seen
    ///   (`LINKEDID_END`, or every leg hung up) is left to finish as usual.
    /// * A listed channel the assembler tracks is treated as an event at the resync: it may
    ///   carry a changed Linkedid (merging calls), an answer (`ChannelState` 6) or a bridge
    ///   (`BridgeId`) that were missed; a bridge it is no longer in is left.
    /// * A listed channel the assembler does not know (a call that began during the gap) is
    ///   adopted as a new leg of its Linkedid's call (a new call if that is not open), created
    ///   at the resync minus its `Duration` (`HH:MM:SS`) and, when up, answered at the resync
    ///   (the real answer time is not in the list), so its later events, `Hangup` included,
    ///   find it. Channels of calls already emitted are not adopted (their events are late).
    ///
    /// Calls with live channels stay open. [`AmiAssembler::last_key`] is `None` afterwards: the
    /// resync is not journaled (see there). Drain [`AmiAssembler::poll_output`] afterwards.
    pub fn resync(&mut self, now: Instant, channels: &[AmiMessage<'_>]) {
        let now = self.clamp(now);
        self.touched = None;
        let stamp = Stamp {
            at: now,
            wall: None,
        };
        let mut alive: BTreeSet<CompactString> = BTreeSet::new();
        let mut listed: Vec<(Instant, usize, Ev, Option<CompactString>)> = Vec::new();
        for (i, m) in channels.iter().enumerate() {
            let Some(uid) = m.value("Uniqueid") else {
                continue;
            };
            alive.insert(uid.clone());
            let start = m
                .text("Duration")
                .and_then(|d| parse_hms(&d))
                .and_then(|secs| now.checked_sub(Duration::from_secs(secs)))
                .unwrap_or(now);
            let ev = Ev {
                name: "CoreShowChannel",
                wall: None,
                uid: Some(uid),
                linkedid: m.value("Linkedid"),
                channel: m.value("Channel"),
                cid_num: m.value("CallerIDNum"),
                cid_name: m.value("CallerIDName"),
                exten: m.value("Exten"),
                context: m.value("Context"),
                tenant: m.value("TenantID"),
                accountcode: m.value("AccountCode"),
                up: m.text("ChannelState").as_deref() == Some("6"),
                app: m.value("Application"),
                kind: Kind::Update,
            };
            listed.push((start, i, ev, m.value("BridgeId")));
        }
        // Channels that began during the gap, oldest first, so legs keep their creation order.
        let mut adopt: Vec<&(Instant, usize, Ev, Option<CompactString>)> = listed
            .iter()
            .filter(|(_, _, ev, _)| {
                ev.uid
                    .as_ref()
                    .is_some_and(|u| !self.channels.contains_key(u) && !self.emitted.contains(u))
            })
            .collect();
        adopt.sort_by_key(|(start, i, _, _)| (*start, *i));
        let adopt: Vec<Ev> = adopt
            .into_iter()
            .map(|(_, _, ev, _)| Ev {
                up: false,
                kind: Kind::NewChannel,
                ..ev.clone()
            })
            .collect();
        let starts: BTreeMap<CompactString, Instant> = listed
            .iter()
            .filter_map(|(start, _, ev, _)| ev.uid.clone().map(|u| (u, *start)))
            .collect();
        for ev in adopt {
            let Some(uid) = ev.uid.clone() else { continue };
            let created = Stamp {
                at: starts.get(&uid).copied().unwrap_or(now),
                wall: None,
            };
            self.apply_channel(now, created, ev, Kind::NewChannel);
        }
        // Every listed channel that is tracked now: what it says it is at the resync.
        for (_, _, ev, bridge) in listed {
            let Some(uid) = ev.uid.clone() else { continue };
            let Some(&id) = self.channels.get(&uid) else {
                continue;
            };
            let bridge = bridge.filter(|b| !b.is_empty());
            let mut left = Vec::new();
            let mut enter = None;
            if let Some(leg) = self.calls.get_mut(&id).and_then(|c| c.leg_mut(&uid)) {
                if leg.hungup.is_some() {
                    continue;
                }
                left = leg
                    .bridges
                    .iter()
                    .filter(|b| Some(*b) != bridge.as_ref())
                    .cloned()
                    .collect();
                leg.bridges.retain(|b| Some(b) == bridge.as_ref());
                if bridge.as_ref().is_some_and(|b| !leg.bridges.contains(b)) {
                    enter = bridge;
                }
            }
            for b in &left {
                self.leave_bridge(&uid, b);
            }
            let kind = match enter {
                Some(bridge) => Kind::BridgeEnter {
                    bridge,
                    holding: false,
                },
                None => Kind::Update,
            };
            // Only the state: the names, numbers and dialplan place were read on adoption.
            let ev = Ev { exten: None, ..ev };
            self.apply_channel(now, stamp, ev, kind);
        }
        // Legs that are gone.
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            let already_over = call.finished_at.is_some();
            let mut gone: Vec<(CompactString, CompactString)> = Vec::new();
            let mut vanished = false;
            for leg in call
                .legs
                .iter_mut()
                .filter(|l| l.hungup.is_none() && !alive.contains(&l.uid))
            {
                vanished = true;
                leg.hungup = Some(stamp);
                for b in std::mem::take(&mut leg.bridges) {
                    gone.push((leg.uid.clone(), b));
                }
            }
            let none_alive = call.legs.iter().all(|l| l.hungup.is_some());
            let no_legs = call.legs.is_empty();
            if vanished {
                call.last = stamp;
            }
            for (uid, b) in gone {
                self.leave_bridge(&uid, &b);
            }
            if none_alive && !already_over && (vanished || no_legs) {
                self.stats.resynced += 1;
                self.emit(id, Some(FlushReason::Resync), now);
            } else if vanished {
                self.refresh(id, now);
            }
        }
        self.touched = None;
        self.last_call = None;
        self.send_started(now);
    }
}
