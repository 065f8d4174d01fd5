//! Writing a record back to its wire form.

use std::io::Write as _;

use chrono::{Datelike, NaiveDateTime, Timelike};

use crate::{Device, Field, SmdrRecord, Text};

/// Appends `YYYY/MM/DD HH:MM:SS`.
pub(crate) fn write_timestamp(out: &mut Vec<u8>, t: &NaiveDateTime) {
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
}

fn write_hms(out: &mut Vec<u8>, secs: u32) {
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
}

fn write_num(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    let _ = write!(out, "{n}");
}

fn write_flag(out: &mut Vec<u8>, b: bool) {
    out.push(if b { b'1' } else { b'0' });
}

fn write_device(out: &mut Vec<u8>, d: Option<Device>) {
    if let Some(d) = d {
        let _ = write!(out, "{d}");
    }
}

fn write_text(out: &mut Vec<u8>, t: &Text<'_>) {
    out.extend_from_slice(t.as_bytes());
}

fn write_opt<T>(out: &mut Vec<u8>, v: Option<T>, f: impl FnOnce(&mut Vec<u8>, T)) {
    if let Some(v) = v {
        f(out, v);
    }
}

impl SmdrRecord<'_> {
    /// Appends the record's wire form to `out`, with `field_count` fields (at least 17), then
    /// [`SmdrRecord::extra`] if any, then `\r\n`.
    ///
    /// For any record the parser produced, and for any record whose text fields hold no `,`,
    /// `\r` or `\n` and no trailing whitespace on the last field, parsing the output gives back an
    /// equal record.
    pub fn write(&self, out: &mut Vec<u8>) {
        let count = usize::from(self.field_count).clamp(crate::MIN_FIELDS, crate::KNOWN_FIELDS);
        for (i, field) in Field::ALL.iter().take(count).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            self.write_field(out, *field);
        }
        if let Some(extra) = &self.extra {
            // `extra` only exists when the line had all 37 known fields.
            for _ in count..crate::KNOWN_FIELDS {
                out.push(b',');
            }
            out.push(b',');
            write_text(out, extra);
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The record's wire form as a new buffer (see [`SmdrRecord::write`]).
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out);
        out
    }

    fn write_field(&self, out: &mut Vec<u8>, field: Field) {
        match field {
            Field::CallStart => write_timestamp(out, &self.call_start),
            Field::ConnectedTime => write_hms(out, self.connected_time),
            Field::RingTime => write_num(out, self.ring_time),
            Field::Caller => write_text(out, &self.caller),
            Field::Direction => out.push(self.direction.as_char() as u8),
            Field::CalledNumber => write_text(out, &self.called_number),
            Field::DialledNumber => write_text(out, &self.dialled_number),
            Field::Account => write_text(out, &self.account),
            Field::IsInternal => write_flag(out, self.is_internal),
            Field::CallId => write_num(out, self.call_id),
            Field::Continuation => write_flag(out, self.continuation),
            Field::Party1Device => write_device(out, self.party1_device),
            Field::Party1Name => write_text(out, &self.party1_name),
            Field::Party2Device => write_device(out, self.party2_device),
            Field::Party2Name => write_text(out, &self.party2_name),
            Field::HoldTime => write_num(out, self.hold_time),
            Field::ParkTime => write_num(out, self.park_time),
            Field::AuthValid => write_opt(out, self.auth_valid.as_ref(), write_text),
            Field::AuthCode => write_opt(out, self.auth_code.as_ref(), write_text),
            Field::UserCharged => write_opt(out, self.user_charged.as_ref(), write_text),
            Field::CallCharge => write_opt(out, self.call_charge.as_ref(), write_text),
            Field::Currency => write_opt(out, self.currency.as_ref(), write_text),
            Field::AmountAtLastUserChange => {
                write_opt(out, self.amount_at_last_user_change.as_ref(), write_text);
            }
            Field::CallUnits => write_opt(out, self.call_units, write_num),
            Field::UnitsAtLastUserChange => {
                write_opt(out, self.units_at_last_user_change, write_num);
            }
            Field::CostPerUnit => write_opt(out, self.cost_per_unit, write_num),
            Field::MarkUp => write_opt(out, self.mark_up, write_num),
            Field::ExternalTargetingCause => {
                write_opt(out, self.external_targeting_cause.as_ref(), write_text);
            }
            Field::ExternalTargeterId => {
                write_opt(out, self.external_targeter_id.as_ref(), write_text);
            }
            Field::ExternalTargetedNumber => {
                write_opt(out, self.external_targeted_number.as_ref(), write_text);
            }
            Field::CallingPartyServerIp => write_opt(out, self.calling_party_server_ip, write_num),
            Field::UniqueCallIdCaller => write_opt(out, self.unique_call_id_caller, write_num),
            Field::CalledPartyServerIp => write_opt(out, self.called_party_server_ip, write_num),
            Field::UniqueCallIdCalled => write_opt(out, self.unique_call_id_called, write_num),
            Field::SmdrRecordTime => {
                write_opt(out, self.smdr_record_time.as_ref(), write_timestamp);
            }
            Field::CallerConsentDirective => {
                write_opt(out, self.caller_consent_directive.as_ref(), write_text);
            }
            Field::CallingNumberVerification => {
                write_opt(out, self.calling_number_verification.as_ref(), write_text);
            }
        }
    }
}
