//! The [`Call`] record of an open call, final or a progressive snapshot.

use std::time::Instant;

use chrono::NaiveDateTime;
use compact_str::CompactString;

use super::AmiAssembler;
use super::classify::disposition;
use super::input::epoch_to_local;
use super::lifecycle::call_id;
use super::state::{AnswerKind, LegState, OpenCall, Stamp, wall_at};
use crate::call::{Call, FlushReason, Leg, Party, Source, Transfer, format_timestamp};

impl AmiAssembler {
    /// The wall time of a stamp: its own, or placed by the latest anchor.
    fn wall(
        &self,
        s: Stamp,
        fallback_epoch: Option<NaiveDateTime>,
        first: Instant,
    ) -> NaiveDateTime {
        wall_at(self.anchor, s, fallback_epoch, first)
    }

    /// The record of a call: final (`snapshot_at` `None`; complete when `reason` is `None`)
    /// or a snapshot taken at `snapshot_at` (incomplete, no reason, `update` left to the
    /// caller).
    pub(super) fn build(
        &self,
        call: &OpenCall,
        reason: Option<FlushReason>,
        snapshot_at: Option<Instant>,
    ) -> Call {
        let fallback = epoch_to_local(&call.linkedid, &self.config.zone);
        let wall = |s: Stamp| self.wall(s, fallback, call.first.at);
        let start_time = call
            .legs
            .iter()
            .filter_map(|l| l.created.map(wall))
            .min()
            .unwrap_or_else(|| wall(call.first));
        let last_hangup = || call.legs.iter().filter_map(|l| l.hungup.map(wall)).max();
        let end_time = match (snapshot_at, reason) {
            // A snapshot lasts until it is taken (or the last thing seen, if later).
            (Some(at), _) => wall(Stamp { at, wall: None })
                .max(wall(call.last))
                .max(last_hangup().unwrap_or(start_time)),
            (None, None) => last_hangup().unwrap_or_else(|| wall(call.last)),
            (None, Some(_)) => wall(call.last),
        }
        .max(start_time);
        let caller = call.caller();
        // The answer: the best kind of candidate, then times that came with their event.
        let local = |uid: &str| call.leg(uid).is_none_or(LegState::is_local);
        let best = call
            .answers
            .iter()
            .map(|a| {
                let kind = if a.kind == AnswerKind::Bridge && !local(&a.a) && !local(&a.b) {
                    AnswerKind::RealBridge
                } else {
                    a.kind
                };
                (kind, a.stamp.wall.is_none(), wall(a.stamp), a)
            })
            .min_by(|x, y| (x.0, x.1, x.2).cmp(&(y.0, y.1, y.2)));
        // Connected: a party (the callee, a queue agent) answered. An IVR or voicemail call
        // that never dialled anyone is connected to the PBX when the caller is answered.
        // Dialled anyone: a `DialBegin`, or a channel besides the caller and its Local half
        // (CEL has no dial events).
        let half = caller.and_then(|c| self.local_pair(call, c));
        let in_chain = |l: &LegState| {
            caller.is_some_and(|c| c.uid == l.uid) || half.is_some_and(|h| h.uid == l.uid)
        };
        let dialed = call.dialed || call.legs.iter().any(|l| !in_chain(l));
        let (connected, answered_by) = match best {
            Some((_, _, t, a)) => (Some(t), self.answerer(call, &a.a, &a.b)),
            None if !dialed => (caller.and_then(|c| c.answered).map(wall), None),
            None => (None, None),
        };
        let connected = connected.map(|t| t.clamp(start_time, end_time));
        // The PBX's answer of the calling channel (Asterisk's CDR `answer`, which its `billsec`
        // counts from): the caller leg's own answer, else the connection.
        let answer_time = caller
            .and_then(|c| c.answered)
            .map(|s| wall(s).clamp(start_time, end_time))
            .or(connected);
        let secs = |a: NaiveDateTime, b: NaiveDateTime| {
            u32::try_from((b - a).num_milliseconds().max(0) / 1000).unwrap_or(u32::MAX)
        };
        let duration = secs(start_time, end_time);
        let billsec = answer_time.map_or(0, |a| secs(a, end_time));
        let talk = connected.map_or(0, |c| secs(c, end_time));
        let wait = connected.map_or(duration, |c| secs(start_time, c));
        // Asterisk writes a row of the caller channel with no other party when the dialplan
        // runs on it without dialling (a `Wait`, an IVR) or after a dial ended; such a row is
        // `ANSWERED` when the caller was answered.
        let answered_alone =
            caller.is_some_and(|c| c.answered.is_some() && (!c.dials || c.after_dial));
        // Seconds parked: every stretch of every leg (one still parked counts to the end).
        let park = call
            .legs
            .iter()
            .flat_map(|l| {
                let open = l.parked_since.map(|s| (wall(s), end_time));
                l.parked
                    .iter()
                    .map(|(a, b)| (wall(*a), wall(*b)))
                    .chain(open)
            })
            .map(|(a, b)| secs(a.max(start_time), b.min(end_time)))
            .fold(0u32, u32::saturating_add);
        let disposition = disposition(
            connected.is_some() || answered_alone,
            &call.dial_statuses,
            &[caller.and_then(|c| c.cause), half.and_then(|l| l.cause)],
        );
        let caller_num = caller.map(|c| c.cid_num.clone()).unwrap_or_default();
        let direction = self.direction(
            caller.map(LegState::rule_leg).as_ref(),
            call.legs.iter().map(LegState::rule_leg),
            &caller_num,
            &call.called,
        );
        let mut parties: Vec<Party> = Vec::new();
        let non_local = call.legs.iter().any(|l| !l.is_local());
        for l in &call.legs {
            if non_local && l.is_local() {
                continue;
            }
            if !parties.iter().any(|p| p.device == l.name) {
                parties.push(Party {
                    device: l.name.clone(),
                    name: l.cid_name.clone(),
                });
            }
        }
        let legs: Vec<Leg> = call
            .legs
            .iter()
            .map(|l| Leg {
                uniqueid: l.uid.clone(),
                channel: l.first_name.clone(),
                renamed_to: if l.name != l.first_name {
                    l.name.clone()
                } else {
                    CompactString::default()
                },
                caller_num: l.cid_num.clone(),
                caller_name: l.cid_name.clone(),
                context: l.context.clone(),
                exten: l.exten.clone(),
                start: l.created.map(wall),
                answer: l.answered.map(wall),
                end: l.hungup.map(wall),
                hangup_cause: l.cause,
                hangup_cause_text: l.cause_txt.clone(),
                dialed_by: l.dialed_by.clone(),
                dial_status: l.dial_status.clone(),
            })
            .collect();
        let start_bytes = format_timestamp(&start_time, b'-', b' ');
        // The times are the events' epochs shifted by the offset: back by it is exact UTC.
        let (start_utc, end_utc, utc_offset) = self.config.zone.call_times(start_time, end_time);
        let (id, part) = match &call.id {
            Some((id, _, part)) => (id.clone(), *part),
            None => (call_id(&self.config.site, &call.linkedid, 0), 0),
        };
        Call {
            id,
            source: Source::Ami,
            site: CompactString::from(self.config.site.as_str()),
            call_id: call.linkedid.clone(),
            boot_epoch: 0,
            part,
            start: CompactString::from_utf8_lossy(&start_bytes),
            start_time,
            end_time,
            start_utc,
            end_utc,
            utc_offset,
            duration,
            ring: duration.saturating_sub(billsec),
            hold: 0,
            park,
            direction,
            tenant: self.tenant(call),
            caller: caller_num,
            called: call.called.clone(),
            dialled: call.called.clone(),
            answered: connected.is_some(),
            answered_by,
            parties,
            complete: reason.is_none() && snapshot_at.is_none(),
            flush_reason: reason,
            reconciled: false,
            records: Vec::new(),
            linkedid: call.linkedid.clone(),
            answer_time,
            billsec: Some(billsec),
            talk_secs: Some(talk),
            wait_secs: Some(wait),
            disposition: disposition.into(),
            legs,
            related_calls: call.related.clone(),
            transfers: call
                .transfers
                .iter()
                .map(|(s, t)| Transfer {
                    time: Some(wall(*s)),
                    ..t.clone()
                })
                .collect(),
            recordings: call.recordings.clone(),
            cdr: call.cdr.clone(),
            update: None,
        }
    }
}
