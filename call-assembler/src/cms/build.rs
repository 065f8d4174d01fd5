//! The [`Call`] of a group of CMS records (the mapping in the module docs of `cms`).

use chrono::NaiveDateTime;
use compact_str::{CompactString, format_compact};

use super::{CmsRecord, CmsRecordKind};
use crate::call::{Call, CallDirection, FlushReason, Leg, Party, Source, stable_id};
use crate::zone::PbxZone;

/// What a call's records say about one leg.
#[derive(Debug, Default)]
struct LegAcc {
    id: CompactString,
    start: Option<NaiveDateTime>,
    leg_start_seen: bool,
    answer: Option<NaiveDateTime>,
    end: Option<NaiveDateTime>,
    remote_address: CompactString,
    remote_party: CompactString,
    display_name: CompactString,
    local_address: CompactString,
    direction: CompactString,
    reason: CompactString,
}

impl LegAcc {
    fn device(&self) -> &CompactString {
        if self.remote_address.is_empty() {
            &self.remote_party
        } else {
            &self.remote_address
        }
    }

    fn party(&self) -> Option<Party> {
        let device = self.device();
        (!device.is_empty()).then(|| Party {
            device: device.clone(),
            name: self.display_name.clone(),
        })
    }
}

fn set_if(dst: &mut CompactString, value: Option<&str>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        *dst = CompactString::from(v);
    }
}

/// Builds the [`Call`] of a group of records (all of one call id), given in `recordIndex`
/// order. Pure: the same records give the same call.
pub(super) fn build_cms_call(
    site: &str,
    call_id: &str,
    part: u32,
    records: &[CmsRecord<'_>],
    flushed: Option<FlushReason>,
) -> Call {
    let naive = |r: &CmsRecord<'_>| r.time_utc.map(|t| t.naive_utc());
    let call_start = records.iter().find(|r| r.kind == CmsRecordKind::CallStart);
    let call_end = records
        .iter()
        .rev()
        .find(|r| r.kind == CmsRecordKind::CallEnd);
    let earliest = records
        .iter()
        .filter(|r| r.time_utc.is_some())
        .min_by_key(|r| r.time_utc);
    let latest = records.iter().filter_map(naive).max();
    let start_rec = call_start.filter(|r| r.time_utc.is_some()).or(earliest);
    let start_time = start_rec.and_then(naive).unwrap_or_default();
    let start = start_rec
        .and_then(|r| r.time.as_deref())
        .map_or_else(|| crate::iso_timestamp(&start_time), CompactString::from);
    let end_time = call_end
        .and_then(naive)
        .or(latest)
        .unwrap_or(start_time)
        .max(start_time);
    let wall = u32::try_from((end_time - start_time).num_seconds()).unwrap_or(u32::MAX);
    let duration = call_end
        .and_then(|r| r.field("durationSeconds"))
        .and_then(|d| d.parse::<u32>().ok())
        .unwrap_or(wall);

    let mut legs: Vec<LegAcc> = Vec::new();
    let mut recordings: Vec<CompactString> = Vec::new();
    for r in records {
        if r.kind == CmsRecordKind::RecordingStart {
            if let Some(path) = r.field("path").filter(|p| !p.is_empty()) {
                if !recordings.iter().any(|p2| p2 == path) {
                    recordings.push(CompactString::from(path));
                }
            }
        }
        if !r.kind.is_leg() {
            continue;
        }
        let Some(id) = r.object_id() else {
            continue;
        };
        let at = match legs.iter().position(|l| l.id == id) {
            Some(at) => at,
            None => {
                legs.push(LegAcc {
                    id: CompactString::from(id),
                    ..LegAcc::default()
                });
                legs.len().saturating_sub(1)
            }
        };
        let Some(leg) = legs.get_mut(at) else {
            continue;
        };
        let t = naive(r);
        if r.kind == CmsRecordKind::CallLegStart && !leg.leg_start_seen {
            leg.leg_start_seen = true;
            leg.start = t.or(leg.start);
        } else if leg.start.is_none() {
            leg.start = t;
        }
        set_if(&mut leg.remote_address, r.field("remoteAddress"));
        set_if(&mut leg.remote_party, r.field("remoteParty"));
        set_if(&mut leg.display_name, r.field("displayName"));
        set_if(&mut leg.local_address, r.field("localAddress"));
        set_if(&mut leg.direction, r.field("direction"));
        if r.field("state") == Some("connected") && leg.answer.is_none() {
            leg.answer = t;
        }
        if r.kind == CmsRecordKind::CallLegEnd {
            leg.end = t.or(leg.end);
            set_if(&mut leg.reason, r.field("reason"));
        }
    }
    let complete = flushed.is_none();
    let call_field = |name: &str| {
        call_start
            .and_then(|r| r.field(name))
            .map(CompactString::from)
            .unwrap_or_default()
    };
    let space = call_field("name");
    let first = legs.first();
    let outgoing = first.is_some_and(|l| l.direction == "outgoing");
    let (caller, called) = match first {
        None => (CompactString::default(), space),
        Some(l) => {
            let near = if l.local_address.is_empty() {
                space
            } else {
                l.local_address.clone()
            };
            if outgoing {
                (near, l.device().clone())
            } else {
                (l.device().clone(), near)
            }
        }
    };
    let mut parties: Vec<Party> = Vec::new();
    for p in legs.iter().filter_map(LegAcc::party) {
        if !parties.iter().any(|q| q.device == p.device) {
            parties.push(p);
        }
    }
    let answer_time = legs.iter().filter_map(|l| l.answer).min();
    let answered_by = legs
        .iter()
        .filter(|l| l.answer.is_some())
        .min_by_key(|l| l.answer)
        .and_then(LegAcc::party);
    let answered = answer_time.is_some();
    let call_end_time = call_end.and_then(naive).filter(|_| complete);
    let out_legs: Vec<Leg> = legs
        .iter()
        .map(|l| Leg {
            uniqueid: l.id.clone(),
            channel: l.device().clone(),
            caller_num: if l.remote_party.is_empty() {
                l.remote_address.clone()
            } else {
                l.remote_party.clone()
            },
            caller_name: l.display_name.clone(),
            exten: l.local_address.clone(),
            start: l.start,
            answer: l.answer,
            end: l.end.or(call_end_time),
            hangup_cause_text: l.reason.clone(),
            ..Leg::default()
        })
        .collect();
    let key = if part == 0 {
        CompactString::from(call_id)
    } else {
        format_compact!("{call_id}/part-{part}")
    };
    // CMS writes UTC.
    let (start_utc, end_utc, utc_offset) = PbxZone::UTC.call_times(start_time, end_time);
    Call {
        id: stable_id(Source::Cms, site, &key),
        source: Source::Cms,
        site: CompactString::from(site),
        call_id: CompactString::from(call_id),
        boot_epoch: 0,
        part,
        start,
        start_time,
        end_time,
        start_utc,
        end_utc,
        utc_offset,
        duration,
        ring: 0,
        hold: 0,
        park: 0,
        direction: if outgoing {
            CallDirection::Outbound
        } else {
            CallDirection::Inbound
        },
        tenant: call_field("tenant"),
        caller,
        called,
        dialled: first.map(|l| l.local_address.clone()).unwrap_or_default(),
        answered,
        answered_by,
        parties,
        complete,
        flush_reason: flushed,
        reconciled: false,
        records: Vec::new(),
        linkedid: CompactString::default(),
        answer_time,
        billsec: None,
        talk_secs: None,
        wait_secs: None,
        disposition: CompactString::const_new(if answered { "ANSWERED" } else { "NO ANSWER" }),
        legs: out_legs,
        related_calls: Vec::new(),
        transfers: Vec::new(),
        recordings,
        cdr: records.iter().map(CmsRecord::to_row).collect(),
        update: None,
    }
}
