//! The one completed-call type every source produces and every sink consumes.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use smdr_parse::SmdrRecord;
use uuid::Uuid;

/// Which kind of system a call came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Source {
    /// Avaya IP Office SMDR.
    Smdr,
    /// Asterisk Manager Interface (channel, CEL and Cdr events).
    Ami,
    /// Cisco Meeting Server CDR posts.
    Cms,
    /// A predictive dialler's CDR list.
    Dialler,
}

impl Source {
    /// The lowercase name used in JSON and in stable ids.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Smdr => "smdr",
            Self::Ami => "ami",
            Self::Cms => "cms",
            Self::Dialler => "dialler",
        }
    }
}

/// Which way a call went, as seen from the phone system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum CallDirection {
    /// From outside to the system.
    Inbound,
    /// From the system to outside.
    Outbound,
    /// Both ends on the system.
    Internal,
}

/// Why a call was emitted before its final record arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FlushReason {
    /// Nothing arrived for the call within the idle timeout.
    IdleTimeout,
    /// The PBX restarted (its call ids began again), so the call's final record will never come.
    PbxRestart,
    /// The limit on open calls was reached and this was the least recently active one.
    Evicted,
    /// The input ended (end of a replayed file, or an explicit flush).
    EndOfInput,
    /// The call reached the record limit of one part; its further records form its next part
    /// (SMDR: `SmdrAssemblerConfig::max_records_per_call`).
    RecordLimit,
    /// Asterisk: after the AMI connection was lost, the call's channels were no longer in the
    /// PBX's channel list when the client reconnected (`CoreShowChannels`), so its end was not
    /// seen.
    Resync,
}

/// One party of a call: a device and the name the PBX gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Party {
    /// The device as the source writes it (`E232`, `T9001`, a channel name, ...).
    pub device: CompactString,
    /// The name shown for it (may be empty).
    pub name: CompactString,
}

/// A completed (or flushed) call, the same type for every source.
///
/// The JSON field names are stable: sinks, stores and webhook receivers rely on them. Fields that
/// only one source fills are omitted from JSON when empty. For SMDR the JSON is a superset of the
/// body the existing SMDR webhook logger sends (`call_id`, `start`, `records[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Call {
    /// Stable identity: the same call gives the same id on every run, retry and restart (a UUID
    /// v5 over the source, the site and the source's call key; see [`stable_id`]).
    pub id: String,
    /// Which kind of system it came from.
    pub source: Source,
    /// The site (PBX) name from configuration; empty when not configured.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub site: CompactString,
    /// The source's own call identifier (SMDR: the Call ID, which restarts on PBX reboots).
    pub call_id: CompactString,
    /// PBX boot epoch: how many PBX restarts the assembler had seen when the call started (SMDR;
    /// informational, not part of [`Call::id`]).
    #[serde(default)]
    pub boot_epoch: u32,
    /// 0 for a whole call. When records of a call arrive after it was emitted incomplete, they
    /// form part 1 (then 2, ...), with an id of its own, so no record is dropped as a duplicate
    /// of the flushed part. (Asterisk: new channels with the Linkedid of a call already
    /// emitted.)
    #[serde(default, skip_serializing_if = "is_zero")]
    pub part: u32,
    /// The start as the source wrote it (SMDR: `YYYY/MM/DD HH:MM:SS`, PBX local time).
    pub start: CompactString,
    /// The start, typed (PBX local time; ISO 8601 in JSON).
    pub start_time: NaiveDateTime,
    /// The end, typed (for SMDR derived from the start plus every segment's ring, connected,
    /// hold and park time).
    pub end_time: NaiveDateTime,
    /// The start in UTC, RFC 3339 (`2017-05-26T11:54:46Z`): [`Call::start_time`] taken to UTC
    /// with the PBX's zone ([`crate::PbxZone`]; Asterisk: exact, from the events' epoch times;
    /// CMS and dialler calls: their times are UTC already). Absent only from bodies stored
    /// before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_utc: Option<DateTime<Utc>>,
    /// The end in UTC, RFC 3339: [`Call::start_utc`] plus the call's length (`end_time` minus
    /// `start_time`), so a call across a daylight-saving change keeps its true length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_utc: Option<DateTime<Utc>>,
    /// The PBX's offset from UTC at the start (`+01:00`): [`Call::start_time`] minus
    /// [`Call::start_utc`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^[+-]\d{2}:\d{2}(:\d{2})?$"))
    )]
    pub utc_offset: Option<CompactString>,
    /// Seconds from the start to the end: ringing, talking, hold and park included (Asterisk's
    /// `duration`; for SMDR the sum of every segment's ring, connected, hold and park time).
    pub duration: u32,
    /// Seconds of ringing, summed over its segments.
    pub ring: u32,
    /// Seconds on hold, summed over its segments.
    pub hold: u32,
    /// Seconds parked, summed over its segments.
    pub park: u32,
    /// Inbound, outbound or internal.
    pub direction: CallDirection,
    /// The tenant: Asterisk 22's `TenantID` of the call's channels or the first matching
    /// tenant rule (see `AmiAssemblerConfig::tenant_rules`); empty when none.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub tenant: CompactString,
    /// The calling number.
    pub caller: CompactString,
    /// The number called.
    pub called: CompactString,
    /// The digits dialled (SMDR: for inbound calls the DDI).
    #[serde(default)]
    pub dialled: CompactString,
    /// Whether any segment was connected.
    pub answered: bool,
    /// Who answered first (SMDR: the first non-trunk party of the first connected segment for
    /// inbound calls, the far party for outbound ones).
    #[serde(default)]
    pub answered_by: Option<Party>,
    /// Every party that took part, in order of appearance, without repeats.
    #[serde(default)]
    pub parties: Vec<Party>,
    /// Whether the call's final record arrived; `false` when it was flushed.
    pub complete: bool,
    /// Why the call was flushed, when `complete` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_reason: Option<FlushReason>,
    /// Asterisk: rebuilt from the CDR because the live source (AMI) missed it (see
    /// [`crate::AmiAssembler::call_from_cdr`]). Left out of JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconciled: bool,
    /// SMDR: the call's records in arrival order (the webhook body's `records[]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<SmdrRecord<'static>>,
    /// Asterisk: the call's Linkedid (the Uniqueid of its first channel; also in `call_id`).
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub linkedid: CompactString,
    /// Asterisk: when the PBX answered the calling channel (PBX local time; Asterisk's CDR
    /// `answer`), if it did. A queue, an IVR or a `Wait` that answers the caller counts, even
    /// when a party answers later (that time is `start_time` + [`Call::wait_secs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_time: Option<NaiveDateTime>,
    /// Seconds billed, as the PBX's own books have it: Asterisk's `billsec` (from the answer of
    /// the calling channel to the end, 0 when it was never answered); for SMDR the sum of the
    /// segments' connected time. The README's table "What the figures mean" has every source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billsec: Option<u32>,
    /// Seconds connected to a party: Asterisk from the first answer by a party (the callee, a
    /// queue agent) to the end, 0 when none answered; SMDR the sum of the segments' connected
    /// time. Unlike `billsec`, a queue or IVR answering the caller does not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talk_secs: Option<u32>,
    /// Seconds before a party answered: Asterisk from the start to the first answer by a party
    /// (the whole call when none did); SMDR the sum of the segments' ring time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_secs: Option<u32>,
    /// The outcome in Asterisk's CDR words (`ANSWERED`, `NO ANSWER`, `BUSY`, `FAILED`,
    /// `CONGESTION`; SMDR calls are `ANSWERED` or `NO ANSWER`).
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub disposition: CompactString,
    /// Asterisk: the `call_id`s (Linkedids) of other calls a channel of this one came from or
    /// went to: a parked call and the call that picked it up (the retriever's own channel stays
    /// a call of its own, as in Asterisk's CDR). Left out of JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_calls: Vec<CompactString>,
    /// Asterisk: the channels of the call in order of creation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<Leg>,
    /// Asterisk: blind and attended transfers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<Transfer>,
    /// Asterisk: recording file names seen (MixMonitor/Monitor), in order, without repeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recordings: Vec<CompactString>,
    /// Asterisk: the `Cdr` events of the call's channels (field name to value), in arrival order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdr: Vec<BTreeMap<CompactString, CompactString>>,
    /// Progressive mode only (`AmiAssemblerConfig::progress_interval`): which record of the call
    /// this is. `None` in complete mode, where each call is emitted once, when it is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<CallUpdate>,
}

impl Call {
    /// Sets [`Call::start_utc`], [`Call::end_utc`] and [`Call::utc_offset`] from
    /// [`Call::start_time`] and [`Call::end_time`], read as local times of `zone`.
    pub fn set_utc_times(&mut self, zone: &crate::PbxZone) {
        (self.start_utc, self.end_utc, self.utc_offset) =
            zone.call_times(self.start_time, self.end_time);
    }
}

/// Where a record stands among the records of one call in progressive mode.
///
/// In progressive mode an assembler emits several records for one call, all with the same
/// [`Call::id`], numbered by `sequence` from 0: [`UpdateEvent::Started`] when the call is first
/// seen, [`UpdateEvent::Updated`] periodically while it lasts, and [`UpdateEvent::Ended`] on the
/// final record (the completed or flushed call, with `complete` and `flush_reason` as in
/// complete mode). The records before the last have `complete: false` and no `flush_reason`.
/// In complete mode [`Call::update`] is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CallUpdate {
    /// The record's number among the call's records, from 0 (`Started`), strictly increasing.
    pub sequence: u32,
    /// What the record reports.
    pub event: UpdateEvent,
}

/// What a progressive record of a call reports (see [`CallUpdate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum UpdateEvent {
    /// The call was first seen (sequence 0): a snapshot of it as it stood then.
    Started,
    /// A periodic snapshot while the call lasts (not finished, not emitted).
    Updated,
    /// The final record: the completed call, or the call flushed incomplete.
    Ended,
}

/// One channel of an Asterisk call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Leg {
    /// Its Uniqueid (stable across renames and masquerades).
    pub uniqueid: CompactString,
    /// Its name when it was created (`SIP/trunk-0000001c`, `Local/2001@internal-0000002c;1`).
    pub channel: CompactString,
    /// Its last name, when a rename or masquerade changed it.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub renamed_to: CompactString,
    /// Its caller id number and name.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub caller_num: CompactString,
    /// Its caller id name.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub caller_name: CompactString,
    /// The dialplan context it started in.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub context: CompactString,
    /// The extension it started at (`s` and empty are left out).
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub exten: CompactString,
    /// When it was created (PBX local time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<NaiveDateTime>,
    /// When it went up (answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<NaiveDateTime>,
    /// When it hung up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<NaiveDateTime>,
    /// Its hangup cause (Q.850 number), when seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hangup_cause: Option<u16>,
    /// The text of its hangup cause.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub hangup_cause_text: CompactString,
    /// The Uniqueid of the channel that dialled it.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub dialed_by: CompactString,
    /// The dial status its dial ended with (`ANSWER`, `NOANSWER`, `BUSY`, `CANCEL`, ...).
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub dial_status: CompactString,
}

/// A transfer within an Asterisk call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Transfer {
    /// `blind` or `attended`.
    pub kind: CompactString,
    /// When it happened (PBX local time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<NaiveDateTime>,
    /// The Uniqueid of the channel that transferred.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub transferer: CompactString,
    /// The Uniqueid of the channel that was transferred.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub transferee: CompactString,
    /// Blind: `exten@context`; attended: the Uniqueid of the transfer target.
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub target: CompactString,
    /// Asterisk's result (`Success`, `Fail`, ...).
    #[serde(default, skip_serializing_if = "CompactString::is_empty")]
    pub result: CompactString,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The namespace of every [`stable_id`] (a fixed random UUID; never change it).
pub const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1c_3a52_0f0e_4d8e_9b1f_7a2c_5e4d_3c21);

/// The stable id of a call: UUID v5 over `source/site/key`.
pub fn stable_id(source: Source, site: &str, key: &str) -> String {
    stable_id_of(&[
        source.as_str().as_bytes(),
        b"/",
        site.as_bytes(),
        b"/",
        key.as_bytes(),
    ])
}

/// [`stable_id`] over a name given in pieces (no intermediate string).
pub(crate) fn stable_id_of(pieces: &[&[u8]]) -> String {
    let mut name = [0u8; 256];
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let uuid = if len <= name.len() {
        let mut at = 0;
        for p in pieces {
            if let Some(dst) = name.get_mut(at..at + p.len()) {
                dst.copy_from_slice(p);
            }
            at += p.len();
        }
        Uuid::new_v5(&ID_NAMESPACE, name.get(..len).unwrap_or_default())
    } else {
        Uuid::new_v5(&ID_NAMESPACE, &pieces.concat())
    };
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut buf).to_owned()
}

/// `YYYY-MM-DDTHH:MM:SS` (years 0 to 9999) without chrono's formatter and without allocating:
/// the form of [`Call::start_time`] in JSON and of the store's time columns.
pub fn iso_timestamp(t: &NaiveDateTime) -> CompactString {
    let b = format_timestamp(t, b'-', b'T');
    CompactString::from_utf8_lossy(&b)
}

/// Writes `YYYY{d}MM{d}DD{m}HH:MM:SS` into a fixed buffer (for years 0 to 9999).
pub(crate) fn format_timestamp(t: &NaiveDateTime, date_sep: u8, mid: u8) -> [u8; 19] {
    use chrono::{Datelike, Timelike};
    let mut b = *b"0000/00/00 00:00:00";
    let two = |v: u32| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    let y = u32::try_from(t.year()).unwrap_or(0).min(9999);
    let parts: [(usize, [u8; 2]); 7] = [
        (0, two(y / 100)),
        (2, two(y % 100)),
        (5, two(t.month())),
        (8, two(t.day())),
        (11, two(t.hour())),
        (14, two(t.minute())),
        (17, two(t.second())),
    ];
    for (at, d) in parts {
        if let Some(dst) = b.get_mut(at..at + 2) {
            dst.copy_from_slice(&d);
        }
    }
    for at in [4, 7] {
        if let Some(c) = b.get_mut(at) {
            *c = date_sep;
        }
    }
    if let Some(c) = b.get_mut(10) {
        *c = mid;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_formatting_matches_chrono() {
        for s in [
            "2017-05-26T00:00:57",
            "0999-01-02T03:04:05",
            "2100-12-31T23:59:59",
        ] {
            let t: NaiveDateTime = s.parse().unwrap();
            assert_eq!(
                &format_timestamp(&t, b'/', b' ')[..],
                t.format("%Y/%m/%d %H:%M:%S").to_string().as_bytes()
            );
            assert_eq!(&format_timestamp(&t, b'-', b'T')[..], s.as_bytes());
            assert_eq!(iso_timestamp(&t), s);
        }
    }

    #[test]
    fn stable_id_is_uuid_v5_of_the_name() {
        let id = stable_id(Source::Smdr, "hq", "1000000/2017-05-26T12:54:46");
        let want = Uuid::new_v5(&ID_NAMESPACE, b"smdr/hq/1000000/2017-05-26T12:54:46");
        assert_eq!(id, want.to_string());
        let long = "x".repeat(300);
        assert_eq!(
            stable_id(Source::Smdr, &long, "k"),
            Uuid::new_v5(&ID_NAMESPACE, format!("smdr/{long}/k").as_bytes()).to_string()
        );
    }
}
