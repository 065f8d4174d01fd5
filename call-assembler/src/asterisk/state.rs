//! The state of open calls: their legs (channels), answer candidates and the times seen.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, NaiveDateTime, TimeDelta};
use compact_str::CompactString;

use crate::call::Transfer;

/// A point in time: the monotonic `now` it was seen at, and the wall time that came with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) at: Instant,
    pub(super) wall: Option<NaiveDateTime>,
}

/// Sets `slot` unless it holds a time at least as good (one that came with its event).
pub(super) fn set_time(slot: &mut Option<Stamp>, s: Stamp) {
    match slot {
        None => *slot = Some(s),
        Some(old) if old.wall.is_none() && s.wall.is_some() => *slot = Some(s),
        _ => {}
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct LegState {
    pub(super) uid: CompactString,
    pub(super) first_name: CompactString,
    pub(super) name: CompactString,
    pub(super) cid_num: CompactString,
    pub(super) cid_name: CompactString,
    pub(super) context: CompactString,
    pub(super) exten: CompactString,
    pub(super) created: Option<Stamp>,
    pub(super) answered: Option<Stamp>,
    pub(super) hungup: Option<Stamp>,
    pub(super) cause: Option<u16>,
    pub(super) cause_txt: CompactString,
    pub(super) dialed_by: CompactString,
    /// It dialled another channel (`DialBegin` from it).
    pub(super) dials: bool,
    /// Its dialplan went on after its latest dial (a `Newexten` after the `DialBegin`).
    pub(super) after_dial: bool,
    /// The context of its first `Newexten`: where its dialplan runs (an originated Local
    /// `;1` is created in its own context but sent to another).
    pub(super) run_context: Option<CompactString>,
    /// Parked since then, while it is.
    pub(super) parked_since: Option<Stamp>,
    /// The stretches it was parked, finished.
    pub(super) parked: Vec<(Stamp, Stamp)>,
    pub(super) dial_status: CompactString,
    pub(super) bridges: Vec<CompactString>,
    /// The latest non-empty `TenantID`.
    pub(super) tenant: CompactString,
    /// The latest non-empty `AccountCode`.
    pub(super) accountcode: CompactString,
}

impl LegState {
    pub(super) fn is_local(&self) -> bool {
        self.name.starts_with("Local/")
    }

    pub(super) fn rule_leg(&self) -> RuleLeg<'_> {
        RuleLeg {
            channel: if self.first_name.is_empty() {
                &self.name
            } else {
                &self.first_name
            },
            context: &self.context,
            caller: &self.cid_num,
            accountcode: &self.accountcode,
        }
    }
}

/// What the direction and tenant rules look at in a channel (an assembled leg, or one rebuilt
/// from CDR rows).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RuleLeg<'a> {
    /// Its name when it was created.
    pub(super) channel: &'a str,
    /// The context it started in.
    pub(super) context: &'a str,
    /// Its caller id number.
    pub(super) caller: &'a str,
    /// Its latest non-empty account code.
    pub(super) accountcode: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum AnswerKind {
    RealBridge = 0,
    Bridge = 1,
    DialAnswer = 2,
}

#[derive(Debug, Clone)]
pub(super) struct AnswerCand {
    pub(super) kind: AnswerKind,
    pub(super) stamp: Stamp,
    pub(super) a: CompactString,
    pub(super) b: CompactString,
}

#[derive(Debug)]
pub(super) struct OpenCall {
    pub(super) linkedid: CompactString,
    pub(super) aliases: Vec<CompactString>,
    /// Created from an event without a Linkedid (Asterisk 11): a guess, merged whole into the
    /// call its real Linkedid names.
    pub(super) provisional: bool,
    /// Linkedids of other calls a channel moved between (a parked call and the call that
    /// picked it up).
    pub(super) related: Vec<CompactString>,
    pub(super) legs: Vec<LegState>,
    pub(super) answers: Vec<AnswerCand>,
    pub(super) dial_statuses: Vec<CompactString>,
    pub(super) dialed: bool,
    pub(super) called: CompactString,
    pub(super) transfers: Vec<(Stamp, Transfer)>,
    pub(super) recordings: Vec<CompactString>,
    pub(super) cdr: Vec<BTreeMap<CompactString, CompactString>>,
    pub(super) linkedid_end: bool,
    pub(super) first: Stamp,
    pub(super) last: Stamp,
    pub(super) finished_at: Option<Instant>,
    pub(super) deadline: Instant,
    /// The `now` the call was created at (progressive updates count from it).
    pub(super) created_at: Instant,
    /// The call's id once fixed (at its first emitted record), with the key and part it was
    /// made from.
    pub(super) id: Option<(String, CompactString, u32)>,
    /// Progressive mode: records emitted so far (the next record's sequence).
    pub(super) next_seq: u32,
    /// Progressive mode: when the next `Updated` snapshot is due (then also in `updates`).
    pub(super) update_at: Option<Instant>,
}

impl OpenCall {
    pub(super) fn leg(&self, uid: &str) -> Option<&LegState> {
        self.legs.iter().find(|l| l.uid == uid)
    }

    pub(super) fn leg_mut(&mut self, uid: &str) -> Option<&mut LegState> {
        self.legs.iter_mut().find(|l| l.uid == uid)
    }

    pub(super) fn caller(&self) -> Option<&LegState> {
        self.leg(&self.linkedid).or_else(|| self.legs.first())
    }
}

/// The wall time of a stamp: its own, or placed by `anchor` (the latest event with a time and
/// the `now` it came at), else by the call's fallback epoch at its first `now`.
pub(super) fn wall_at(
    anchor: Option<(NaiveDateTime, Instant)>,
    s: Stamp,
    fallback_epoch: Option<NaiveDateTime>,
    first: Instant,
) -> NaiveDateTime {
    if let Some(w) = s.wall {
        return w;
    }
    let (w0, t0) = match anchor {
        Some(a) => a,
        None => (
            fallback_epoch.unwrap_or(DateTime::UNIX_EPOCH.naive_utc()),
            first,
        ),
    };
    let delta = if s.at >= t0 {
        TimeDelta::from_std(s.at.duration_since(t0)).unwrap_or(TimeDelta::zero())
    } else {
        -TimeDelta::from_std(t0.duration_since(s.at)).unwrap_or(TimeDelta::zero())
    };
    w0.checked_add_signed(delta).unwrap_or(w0)
}
