//! A call as the rows of `calls` and `call_legs`: the typed columns, in the order of
//! [`super::schema::CALL_COLUMNS`] and [`super::schema::LEG_COLUMNS`].

use chrono::{FixedOffset, NaiveDateTime, TimeDelta};

use crate::Call;
use call_assembler::{CallDirection, Source};

/// The longest text kept in a typed column, in characters (the columns are `varchar(255)`;
/// the whole value stays in `body`).
const MAX_TEXT: usize = 255;

/// The revision of a final record (a call in complete mode, or the last of a call's progress
/// records once it has none): above every progress record's sequence.
pub(crate) const FINAL_REVISION: i64 = u32::MAX as i64;

/// One bound value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    /// An integer (NULL when `None`).
    Int(Option<i64>),
    /// Text (NULL when `None`).
    Text(Option<String>),
    /// A boolean.
    Bool(bool),
    /// A list of texts: one `text[]` bind on PostgreSQL, one bind per text on MySQL.
    List(Vec<String>),
}

/// The rows of one call.
#[derive(Debug, Clone)]
pub(crate) struct CallRows {
    /// The call's id (the primary key).
    pub(crate) id: String,
    /// Its revision: the progress record's sequence, or [`FINAL_REVISION`].
    pub(crate) revision: i64,
    /// The `calls` row.
    pub(crate) call: Vec<Arg>,
    /// The `call_legs` rows.
    pub(crate) legs: Vec<Vec<Arg>>,
}

/// How the PBX's local times of SMDR and Asterisk calls become UTC: a fixed offset from UTC
/// (the sink's setting, UTC by default). CMS calls already carry UTC.
///
/// This is the one place the UTC columns come from, so that it can be replaced by the call's
/// own UTC times once the call body carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UtcOf {
    pub(crate) offset: FixedOffset,
}

impl UtcOf {
    /// `local` (a time of `call`) in UTC: by the call's own offset when it carries its UTC
    /// start (every call the relays assemble now does: `PBX_TZ`, Asterisk's epoch times), else
    /// by `offset` (calls stored before; CMS times are UTC already).
    pub(crate) fn utc(&self, call: &Call, local: NaiveDateTime) -> NaiveDateTime {
        let shift = match call.start_utc {
            Some(u) => call.start_time - u.naive_utc(),
            None if call.source == Source::Cms => TimeDelta::zero(),
            None => TimeDelta::seconds(i64::from(self.offset.local_minus_utc())),
        };
        local.checked_sub_signed(shift).unwrap_or(local)
    }
}

fn text(s: &str) -> Arg {
    Arg::Text(Some(clip(s)))
}

fn opt_text(s: &str) -> Arg {
    if s.is_empty() {
        Arg::Text(None)
    } else {
        text(s)
    }
}

/// At most [`MAX_TEXT`] characters of `s`.
fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_TEXT) {
        Some((at, _)) => s.get(..at).unwrap_or(s).to_owned(),
        None => s.to_owned(),
    }
}

fn time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn opt_time(t: Option<NaiveDateTime>) -> Arg {
    Arg::Text(t.map(time))
}

fn int(n: impl Into<i64>) -> Arg {
    Arg::Int(Some(n.into()))
}

/// The revision of a record of a call.
pub(crate) fn revision(call: &Call) -> i64 {
    call.update
        .map_or(FINAL_REVISION, |u| i64::from(u.sequence))
}

/// The rows of `call`, whose stored JSON is `body`.
pub(crate) fn call_rows(call: &Call, body: &[u8], utc: UtcOf) -> Result<CallRows, String> {
    let body = std::str::from_utf8(body).map_err(|e| format!("the call's JSON: {e}"))?;
    let revision = revision(call);
    let direction = match call.direction {
        CallDirection::Inbound => "inbound",
        CallDirection::Outbound => "outbound",
        CallDirection::Internal => "internal",
    };
    let flush_reason = match call.flush_reason {
        Some(r) => serde_json::to_value(r)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned)),
        None => None,
    };
    let legs = leg_rows(call, utc)?;
    let row = vec![
        Arg::Text(Some(call.id.clone())),
        int(revision),
        text(call.source.as_str()),
        text(&call.site),
        text(&call.call_id),
        int(call.part),
        Arg::Text(Some(time(call.start_time))),
        Arg::Text(Some(time(call.end_time))),
        Arg::Text(Some(time(call.start_utc.map_or_else(
            || utc.utc(call, call.start_time),
            |u| u.naive_utc(),
        )))),
        Arg::Text(Some(time(
            call.end_utc
                .map_or_else(|| utc.utc(call, call.end_time), |u| u.naive_utc()),
        ))),
        int(call.duration),
        Arg::Int(call.billsec.map(i64::from)),
        int(call.ring),
        int(call.hold),
        int(call.park),
        text(&call.disposition),
        text(direction),
        text(&call.caller),
        text(&call.called),
        text(&call.dialled),
        Arg::Bool(call.answered),
        Arg::Text(call.answered_by.as_ref().map(|p| clip(&p.device))),
        Arg::Text(call.answered_by.as_ref().map(|p| clip(&p.name))),
        text(&call.tenant),
        Arg::Bool(call.complete),
        Arg::Text(flush_reason),
        int(i64::try_from(legs.len()).unwrap_or(i64::MAX)),
        Arg::Text(Some(body.to_owned())),
    ];
    Ok(CallRows {
        id: call.id.clone(),
        revision,
        call: row,
        legs,
    })
}

/// One row per leg: SMDR's records, Asterisk's channels, CMS's call legs.
fn leg_rows(call: &Call, utc: UtcOf) -> Result<Vec<Vec<Arg>>, String> {
    let json = |v: serde_json::Result<String>| v.map_err(|e| format!("a leg's JSON: {e}"));
    let mut out = Vec::with_capacity(call.records.len() + call.legs.len());
    for (no, r) in call.records.iter().enumerate() {
        let start = r.call_start;
        let secs = i64::from(r.ring_time)
            + i64::from(r.connected_time)
            + i64::from(r.hold_time)
            + i64::from(r.park_time);
        let end = start
            .checked_add_signed(TimeDelta::seconds(secs))
            .unwrap_or(start);
        let direction = if r.direction.as_char() == 'I' {
            "inbound"
        } else {
            "outbound"
        };
        out.push(vec![
            Arg::Text(Some(call.id.clone())),
            int(i64::try_from(no).unwrap_or(i64::MAX)),
            text("record"),
            Arg::Text(None),
            opt_time(Some(start)),
            opt_time(Some(end)),
            opt_time(Some(utc.utc(call, start))),
            opt_time(Some(utc.utc(call, end))),
            Arg::Bool(r.connected_time > 0),
            int(r.connected_time),
            int(r.ring_time),
            opt_text(&r.caller.to_str_lossy()),
            opt_text(&r.called_number.to_str_lossy()),
            opt_text(&r.dialled_number.to_str_lossy()),
            text(direction),
            Arg::Text(r.party1_device.map(|d| d.to_string())),
            opt_text(&r.party1_name.to_str_lossy()),
            Arg::Text(r.party2_device.map(|d| d.to_string())),
            opt_text(&r.party2_name.to_str_lossy()),
            Arg::Text(None),
            Arg::Int(None),
            Arg::Text(None),
            Arg::Text(Some(json(serde_json::to_string(r))?)),
        ]);
    }
    let (kind, base) = match call.source {
        Source::Cms => ("leg", out.len()),
        _ => ("channel", out.len()),
    };
    for (no, l) in call.legs.iter().enumerate() {
        let duration = match (l.start, l.end) {
            (Some(s), Some(e)) => Some((e - s).num_seconds().max(0)),
            _ => None,
        };
        let ring = match (l.start, l.answer) {
            (Some(s), Some(a)) => Some((a - s).num_seconds().max(0)),
            _ => None,
        };
        out.push(vec![
            Arg::Text(Some(call.id.clone())),
            int(i64::try_from(base + no).unwrap_or(i64::MAX)),
            text(kind),
            opt_text(&l.uniqueid),
            opt_time(l.start),
            opt_time(l.end),
            opt_time(l.start.map(|t| utc.utc(call, t))),
            opt_time(l.end.map(|t| utc.utc(call, t))),
            Arg::Bool(l.answer.is_some()),
            Arg::Int(duration),
            Arg::Int(ring),
            opt_text(&l.caller_num),
            opt_text(&l.exten),
            Arg::Text(None),
            Arg::Text(None),
            opt_text(if l.renamed_to.is_empty() {
                &l.channel
            } else {
                &l.renamed_to
            }),
            opt_text(&l.caller_name),
            Arg::Text(None),
            Arg::Text(None),
            opt_text(&l.dial_status),
            Arg::Int(l.hangup_cause.map(i64::from)),
            opt_text(&l.hangup_cause_text),
            Arg::Text(Some(json(serde_json::to_string(l))?)),
        ]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::schema::{CALL_COLUMNS, LEG_COLUMNS};

    fn t(s: &str) -> NaiveDateTime {
        s.parse().unwrap()
    }

    /// A call of `source` starting at `start` (local), with `start_utc` when given.
    fn call(source: &str, start: &str, start_utc: Option<&str>) -> Call {
        let mut v = serde_json::json!({
            "id": "x", "source": source, "site": "s", "call_id": "1", "start": start,
            "start_time": start, "end_time": start, "duration": 0, "ring": 0, "hold": 0,
            "park": 0, "direction": "internal", "caller": "", "called": "",
            "answered": false, "complete": true,
        });
        if let Some(u) = start_utc {
            v["start_utc"] = serde_json::Value::from(u);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn local_time_to_utc_by_the_calls_own_offset_else_the_setting_cms_as_is() {
        let plus2 = UtcOf {
            offset: FixedOffset::east_opt(2 * 3600).unwrap(),
        };
        let at = "2024-03-01T01:30:00";
        // Without its own UTC start: the setting's offset.
        let old = call("smdr", at, None);
        assert_eq!(plus2.utc(&old, t(at)), t("2024-02-29T23:30:00"));
        let cms = call("cms", at, None);
        assert_eq!(plus2.utc(&cms, t(at)), t(at));
        // With it (the relay's PBX_TZ said +05:00): the call's own offset wins.
        let own = call("smdr", at, Some("2024-02-29T20:30:00Z"));
        assert_eq!(
            plus2.utc(&own, t("2024-03-01T02:00:00")),
            t("2024-02-29T21:00:00")
        );
    }

    #[test]
    fn clip_keeps_whole_characters() {
        let long = "é".repeat(300);
        assert_eq!(clip(&long).chars().count(), MAX_TEXT);
        assert_eq!(clip("abc"), "abc");
    }

    #[test]
    fn rows_have_a_value_per_column() {
        let line = b"2018/01/04 23:43:36,00:34:11,10,6047535970,I,206,6040116587,,0,1017747,0,\
            E241,Volunteer8,T9005,Line 5.0,0,0,,,,,,,,,,,,,,192.168.1.21,2,192.168.1.21,294282";
        let rec = smdr_parse::SmdrRecord::parse(line).unwrap();
        let mut asm = call_assembler::SmdrAssembler::new(Default::default());
        asm.handle_record(std::time::Instant::now(), &rec);
        let Some(call_assembler::Output::Call(call)) = asm.poll_output() else {
            panic!("one call");
        };
        let body = serde_json::to_vec(&call).unwrap();
        let rows = call_rows(
            &call,
            &body,
            UtcOf {
                offset: FixedOffset::east_opt(0).unwrap(),
            },
        )
        .unwrap();
        assert_eq!(rows.call.len(), CALL_COLUMNS.len());
        assert_eq!(rows.legs.len(), 1);
        assert_eq!(rows.legs[0].len(), LEG_COLUMNS.len());
        assert_eq!(rows.revision, FINAL_REVISION);
        assert_eq!(rows.legs[0][9], Arg::Int(Some(34 * 60 + 11)));
    }
}
