//! Predictive dialler CDRs: one JSON object per dialled number, already a whole call.
//!
//! A dialler publishes, for every number it dialled, an object such as
//! `{"ext": "2001", "internal_call_ref": "...", "custom_call_ref": "...", "disposition":
//! "ANSWERED", "SIP_termination_code": 200, "campaign_ref": "...", "client_number": "...",
//! "dial_number": "..."}`. Any field may be missing or `null`, unknown fields are kept;
//! `ext: null` means the callee hung up in the queue before an agent took the call. There is no
//! time in it: the call's times are when the relay received it (passed in).
//!
//! [`dialler_call`] checks the shape and builds the [`Call`]; anything that is not such an
//! object is a [`DiallerError`] (the relay keeps the raw bytes as a reject).

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use compact_str::{CompactString, ToCompactString};
use serde_json::Value;

use crate::call::{Call, CallDirection, Party, Source, iso_timestamp, stable_id, stable_id_of};
use crate::zone::PbxZone;

/// The fields a dialler CDR may have (others are kept as they are).
pub const DIALLER_FIELDS: [&str; 8] = [
    "ext",
    "internal_call_ref",
    "custom_call_ref",
    "disposition",
    "SIP_termination_code",
    "campaign_ref",
    "client_number",
    "dial_number",
];

/// The fields of which at least one must be set for an object to be a CDR.
const IDENTIFYING: [&str; 4] = [
    "internal_call_ref",
    "custom_call_ref",
    "dial_number",
    "client_number",
];

/// Why an item is not a dialler CDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiallerError {
    /// Larger than the limit: not parsed at all.
    #[error("item of {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// A known field holds an array or an object.
    #[error("field {0} is not a string, a number or null")]
    WrongType(&'static str),
    /// None of `internal_call_ref`, `custom_call_ref`, `dial_number`, `client_number` is set.
    #[error("no call reference or number: not a dialler CDR")]
    NoReference,
}

/// The largest item [`dialler_call`] parses by default (1 MiB).
pub const DEFAULT_MAX_ITEM: usize = 1 << 20;

fn scalar(v: &Value) -> Option<CompactString> {
    match v {
        Value::String(s) => Some(s.trim().to_compact_string()),
        Value::Number(n) => Some(n.to_compact_string()),
        Value::Bool(b) => Some(b.to_compact_string()),
        _ => None,
    }
}

/// Builds the call of one dialler CDR (`raw`, the item's bytes), received at `received` (local
/// time of the relay). The id is a UUID v5 over `dialler/<site>/<internal_call_ref>` (else the
/// `custom_call_ref`, else the item's bytes), so the same item gives the same id however often
/// it is read.
pub fn dialler_call(
    site: &str,
    raw: &[u8],
    received: NaiveDateTime,
    max_len: usize,
) -> Result<Call, DiallerError> {
    if raw.len() > max_len {
        return Err(DiallerError::TooLarge {
            len: raw.len(),
            max: max_len,
        });
    }
    let value: Value =
        serde_json::from_slice(raw).map_err(|e| DiallerError::Json(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(DiallerError::NotAnObject);
    };
    let mut known: BTreeMap<&'static str, CompactString> = BTreeMap::new();
    for name in DIALLER_FIELDS {
        match fields.get(name) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let s = scalar(v).ok_or(DiallerError::WrongType(name))?;
                if !s.is_empty() {
                    known.insert(name, s);
                }
            }
        }
    }
    if !IDENTIFYING.iter().any(|f| known.contains_key(f)) {
        return Err(DiallerError::NoReference);
    }
    let get = |name: &str| known.get(name).cloned().unwrap_or_default();
    let call_ref = known
        .get("internal_call_ref")
        .or_else(|| known.get("custom_call_ref"))
        .cloned();
    let (call_id, id) = match call_ref {
        Some(r) => {
            let id = stable_id(Source::Dialler, site, &r);
            (r, id)
        }
        None => {
            let id = stable_id_of(&[
                Source::Dialler.as_str().as_bytes(),
                b"/",
                site.as_bytes(),
                b"/",
                raw,
            ]);
            (id.to_compact_string(), id)
        }
    };
    let disposition = get("disposition").to_uppercase().to_compact_string();
    let ext = get("ext");
    let answered = !ext.is_empty() && matches!(disposition.as_str(), "ANSWERED" | "ANSWER");
    let number = known
        .get("dial_number")
        .or_else(|| known.get("client_number"))
        .cloned()
        .unwrap_or_default();
    // The CDR as received, every scalar field as text (nulls as empty), unknown ones included.
    let row: BTreeMap<CompactString, CompactString> = fields
        .iter()
        .filter_map(|(k, v)| match v {
            Value::Null => Some((k.to_compact_string(), CompactString::default())),
            v => scalar(v).map(|s| (k.to_compact_string(), s)),
        })
        .collect();
    let agent = (!ext.is_empty()).then(|| Party {
        device: ext.clone(),
        name: CompactString::default(),
    });
    // The time of receipt is UTC.
    let (start_utc, end_utc, utc_offset) = PbxZone::UTC.call_times(received, received);
    Ok(Call {
        id,
        source: Source::Dialler,
        site: site.to_compact_string(),
        call_id,
        boot_epoch: 0,
        part: 0,
        start: iso_timestamp(&received),
        start_time: received,
        end_time: received,
        start_utc,
        end_utc,
        utc_offset,
        duration: 0,
        ring: 0,
        hold: 0,
        park: 0,
        direction: CallDirection::Outbound,
        tenant: CompactString::default(),
        caller: ext,
        called: number.clone(),
        dialled: number,
        answered,
        answered_by: if answered { agent.clone() } else { None },
        parties: agent.into_iter().collect(),
        complete: true,
        flush_reason: None,
        reconciled: false,
        records: Vec::new(),
        linkedid: CompactString::default(),
        answer_time: None,
        billsec: None,
        talk_secs: None,
        wait_secs: None,
        disposition,
        legs: Vec::new(),
        related_calls: Vec::new(),
        transfers: Vec::new(),
        recordings: Vec::new(),
        cdr: vec![row],
        update: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> NaiveDateTime {
        NaiveDateTime::parse_from_str("2026-11-24 10:00:00", "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn call(raw: &str) -> Result<Call, DiallerError> {
        dialler_call("hq", raw.as_bytes(), at(), DEFAULT_MAX_ITEM)
    }

    #[test]
    fn a_full_cdr_becomes_an_answered_outbound_call() {
        let c = call(
            r#"{"ext":"2001","internal_call_ref":"abc-1","custom_call_ref":"crm-9","disposition":"answered","SIP_termination_code":200,"campaign_ref":"spring","client_number":"0611","dial_number":"+31611","extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(c.source, Source::Dialler);
        assert_eq!(c.call_id, "abc-1");
        assert_eq!(c.id, stable_id(Source::Dialler, "hq", "abc-1"));
        assert!(c.answered && c.complete);
        assert_eq!(c.answered_by.unwrap().device, "2001");
        assert_eq!(c.disposition, "ANSWERED");
        assert_eq!(c.called, "+31611");
        assert_eq!(c.direction, CallDirection::Outbound);
        assert_eq!(c.cdr[0]["SIP_termination_code"], "200");
        assert_eq!(c.cdr[0]["campaign_ref"], "spring");
        assert!(!c.cdr[0].contains_key("extra"), "objects are not scalars");
    }

    #[test]
    fn ext_null_means_nobody_answered_and_missing_fields_are_fine() {
        let c = call(r#"{"ext":null,"internal_call_ref":"q-7","disposition":"ANSWERED"}"#).unwrap();
        assert!(!c.answered);
        assert!(c.answered_by.is_none());
        assert_eq!(c.cdr[0]["ext"], "");
        let c = call(r#"{"dial_number":"0612"}"#).unwrap();
        assert_eq!(c.called, "0612");
        assert_eq!(
            c.id,
            call(r#"{"dial_number":"0612"}"#).unwrap().id,
            "stable"
        );
        assert_ne!(c.id, call(r#"{"dial_number":"0613"}"#).unwrap().id);
    }

    #[test]
    fn what_is_not_a_cdr_says_why() {
        assert!(matches!(call("not json"), Err(DiallerError::Json(_))));
        assert_eq!(call("[1,2]").unwrap_err(), DiallerError::NotAnObject);
        assert_eq!(call(r#"{"foo":1}"#).unwrap_err(), DiallerError::NoReference);
        assert_eq!(
            call(r#"{"internal_call_ref":{"a":1}}"#).unwrap_err(),
            DiallerError::WrongType("internal_call_ref")
        );
        assert_eq!(
            dialler_call("", &[b' '; 100], at(), 10).unwrap_err(),
            DiallerError::TooLarge { len: 100, max: 10 }
        );
    }
}
