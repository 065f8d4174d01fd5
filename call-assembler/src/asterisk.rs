//! Assembling Asterisk AMI events (channel events, `Cdr` and `CEL`) into calls.
//!
//! # Model
//!
//! * **Calls are keyed by Linkedid**, channels by Uniqueid. A channel whose Linkedid changes
//!   (it joined a bridge with an older call) takes its whole call with it: the younger call is
//!   merged into the older one and its Linkedid becomes an alias. A `LINKEDID_END` for an alias
//!   (the "merged" kind) is ignored. Asterisk 11 events carry no Linkedid: a channel then starts
//!   a provisional call of its own, merged into its caller's call by `Dial` (Begin),
//!   `LocalBridge` or a CEL event carrying the real `LinkedID`.
//! * **Channels are tracked by Uniqueid**, so renames and masquerades only change a leg's name
//!   (after a masquerade the *name* `SIP/x-1` carries another Uniqueid, and the old Uniqueid,
//!   now `...<ZOMBIE>`, hangs up: that ends only its own leg).
//! * **A call is finished** when CEL's `LINKEDID_END` for its Linkedid arrives, or when every
//!   leg has hung up (`Hangup`, CEL `HANGUP` or `CHAN_END`), whichever comes first; it is emitted
//!   [`AmiAssemblerConfig::grace`] later, so `Cdr` and `Hangup` events that Asterisk sends
//!   just after `LINKEDID_END` still join it. A call with no event for
//!   [`AmiAssemblerConfig::idle_timeout`] is emitted incomplete ([`FlushReason::IdleTimeout`]).
//! * **After a call is emitted**, any event about one of its channels is late: it is dropped
//!   and reported ([`Anomaly::AmiLateEvent`]), so it never reopens the call. A *new* channel
//!   with the Linkedid of an emitted call starts a later part of it ([`Call::part`] 1, 2, ...)
//!   with an id of its own, so no two records share an id. Both are remembered for the last
//!   [`AmiAssemblerConfig::remember_emitted`] calls' channels and keys.
//!
//! # Times
//!
//! Wall-clock times in calls are **PBX local time**, like Asterisk's own CDR rows. An event's
//! time is, in order of preference: its `Timestamp:` header (`timestampevents=yes`; epoch with
//! microseconds, UTC, shifted by [`AmiAssemblerConfig::utc_offset_secs`]); for CEL its
//! `EventTime` (local `YYYY-MM-DD HH:MM:SS[.ffffff]`, or epoch as in cel.csv, shifted); else the
//! monotonic `now` it arrived at, placed on the wall clock by the latest event that had a
//! time. A time that came with the event wins over one inferred from `now`.
//!
//! # The call's figures
//!
//! * `start_time`: the earliest leg creation; `end_time`: the latest leg hangup (or the last
//!   event, for a call flushed incomplete).
//! * `answer_time`: the first time the call was connected to a party: the first two-party
//!   bridge between two non-Local channels if there is one (Local channel bridges are call
//!   setup when Asterisk optimises them away), else the first two-party bridge of any channels,
//!   else the first `DialEnd` with `ANSWER`, else, for a call that never dialled anyone, the
//!   caller's own answer (an IVR or voicemail call). Within a kind, times that came with the
//!   event (CEL, `Timestamp:`) win over inferred ones. The dialplan answering a caller before
//!   `Queue()` is not an answer.
//! * `duration` = end − start and `billsec` = end − answer, in whole seconds (truncated, as
//!   Asterisk does); `ring` = duration − billsec.
//! * `disposition`: `ANSWERED` when answered; else from the dial statuses (`BUSY` before
//!   `CONGESTION` before `FAILED` (CHANUNAVAIL) before `NO ANSWER`), else from the caller's
//!   hangup cause (17 BUSY, 34/38/42 CONGESTION, 1/3/27/28 FAILED), else `NO ANSWER`.
//! * `answered_by`: the far end of the answering bridge, seen from the caller (following a
//!   Local channel `;1`/`;2` pair to its other half); `device` is its channel name and `name`
//!   its number (the Local channel's extension, else its caller id number).
//! * `caller`: the caller leg's first caller id number (the caller leg is the one whose
//!   Uniqueid is the Linkedid); `called`: the last extension (not `s`/`h`) its dialplan ran.
//! * `direction`, by the first rule that applies:
//!   1. inbound when the caller leg is a trunk;
//!   2. outbound when another leg is a trunk (a trunk is a channel whose name when created
//!      starts with one of [`AmiAssemblerConfig::trunk_channel_prefixes`] or whose first
//!      context is one of [`AmiAssemblerConfig::trunk_contexts`]);
//!   3. with [`AmiAssemblerConfig::internal_number_max_len`] set to `n`: inbound when `caller`
//!      has more than `n` digits, else outbound when `called` has more than `n` digits (only
//!      the ASCII digits count: `+44 20 7946 0000` has 12);
//!   4. else internal.
//! * `tenant`: the latest non-empty `TenantID` (Asterisk 22, on channel events) of the caller
//!   leg, else of the first other leg that has one (in order of creation); else the first of
//!   [`AmiAssemblerConfig::tenant_rules`] that matches the caller leg, else the first that
//!   matches another leg, in order of creation (see [`TenantRule`]); else empty.
//!
//! # Progressive mode
//!
//! With [`AmiAssemblerConfig::progress_interval`] set to `Some(iv)`, a call is reported while
//! it lasts as well as when it is over. Every record of one call has the same [`Call::id`] and
//! a [`Call::update`] with a sequence number counting from 0:
//!
//! * `Started` (0), right after the input that created the call (its first channel), a
//!   snapshot as the call stands then;
//! * `Updated` (1, 2, ...) every `iv` after the call's creation on the monotonic `now` (at
//!   creation + iv, + 2·iv, ...; a late [`AmiAssembler::handle_timeout`] sends one and skips
//!   to the next point after it), while the call is open and not finished (none while it waits
//!   out its grace period); [`AmiAssembler::poll_timeout`] includes the next one;
//! * `Ended`, the final record: the same call complete mode would emit (complete, or flushed
//!   with its reason), with the next sequence number.
//!
//! Snapshots are incomplete (`complete: false`, no `flush_reason`), and their `end_time` is the
//! time the snapshot was taken (or the last event, if later), so `duration` grows. A call's id
//! is fixed by its first record: if its Linkedid changes afterwards (an Asterisk 11
//! provisional call, or a channel that joins a call begun before the connection), later
//! records keep that id while `call_id` and `linkedid` show the new Linkedid. When calls merge,
//! the surviving (older) call's records go on with its sequence; the merged call's records
//! simply stop: its `Started` (and any `Updated`) is superseded by the survivor's records and
//! no `Ended` follows under its id.
//!
//! # Reconnects and journaling
//!
//! After the AMI connection was lost, [`AmiAssembler::resync`] with the PBX's channel list
//! closes the calls that ended during the gap ([`FlushReason::Resync`]) and adopts the channels
//! that began during it. For a relay that journals open calls across restarts,
//! [`AmiAssembler::last_key`] names the call each input was applied to and
//! [`AmiAssembler::take_retired`] the keys whose calls are done (the contract, and what a
//! replayed journal does not restore, are on [`AmiAssembler::last_key`]).
//!
//! # Reconciliation with the CDR
//!
//! A call Asterisk's CDR has but the live source missed (its events were lost while the
//! connection was down) can be rebuilt from the CDR rows of its Linkedid with
//! [`AmiAssembler::call_from_cdr`]: a complete call with [`Call::reconciled`] set and the id
//! the AMI path would have given it, its figures worked out by the same rules as far as the
//! CDR's columns allow.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ami_proto::AmiMessage;
use chrono::{DateTime, NaiveDateTime, TimeDelta};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::call::{
    Call, CallDirection, CallUpdate, FlushReason, Leg, Party, Source, Transfer, UpdateEvent,
    format_timestamp, stable_id, stable_id_of,
};
use crate::{Anomaly, Output};

mod cdr;
mod cel_columns;

pub use cel_columns::{CelColumns, CelColumnsError};

/// Settings of an [`AmiAssembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiAssemblerConfig {
    /// The site name that goes into every call and its id (one per PBX).
    pub site: String,
    /// How long a finished call waits for late events (`Cdr`, `Hangup`) before it is emitted.
    pub grace: Duration,
    /// How long a call may go without any event before it is emitted incomplete.
    pub idle_timeout: Duration,
    /// The most calls kept open at once; past it the one with the earliest deadline is emitted
    /// incomplete ([`FlushReason::Evicted`]).
    pub max_open_calls: usize,
    /// The most legs kept per call (more are counted and dropped).
    pub max_legs_per_call: usize,
    /// The most `Cdr` rows, answer candidates, transfers and recordings kept per call.
    pub max_items_per_call: usize,
    /// How many emitted calls' Uniqueids are remembered to report late events.
    pub remember_emitted: usize,
    /// Contexts in which trunk channels start (e.g. `from-trunk`).
    pub trunk_contexts: Vec<String>,
    /// Channel name prefixes of trunks (e.g. `SIP/trunk`, `PJSIP/provider`).
    pub trunk_channel_prefixes: Vec<String>,
    /// The PBX's offset from UTC in seconds, applied to epoch times (`Timestamp:`, epoch CEL
    /// times) so that every time in a call is PBX local time.
    pub utc_offset_secs: i32,
    /// `None` (the default): complete mode, one record per call when it is over. `Some(iv)`:
    /// progressive mode, a `Started` snapshot when a call is first seen, an `Updated` one every
    /// `iv` (from the call's creation, on the monotonic clock) while it lasts, and the final
    /// record as `Ended` (see [`Call::update`] and the module docs, "Progressive mode"). A zero
    /// interval sends `Started` and `Ended` only.
    pub progress_interval: Option<Duration>,
    /// Direction by number length, when no trunk rule decided: a call whose caller number has
    /// more digits than this is inbound, else one whose called number has more digits is
    /// outbound, else internal (see the module docs, "The call's figures"). `None`: no such
    /// rule (a call no trunk rule decided is internal).
    pub internal_number_max_len: Option<usize>,
    /// Rules giving a call its tenant when no channel carries Asterisk 22's `TenantID`, tried
    /// in order (see [`TenantRule`]).
    pub tenant_rules: Vec<TenantRule>,
}

/// A rule giving a call its tenant ([`Call::tenant`]): when `field` of a channel (for
/// [`RuleField::Called`], the call's `called`) starts with `prefix`, the tenant is `tenant`.
///
/// Rules are tried in order on the caller leg first: the first rule that matches it decides.
/// If none matches the caller leg, the other legs are tried the same way in order of creation.
/// An empty `prefix` matches anything (a catch-all rule, best put last). A non-empty
/// `TenantID` on any channel (Asterisk 22) wins over every rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRule {
    /// Which value of the channel is compared.
    pub field: RuleField,
    /// What it must start with (case-sensitive).
    pub prefix: String,
    /// The tenant the rule gives.
    pub tenant: String,
}

/// The channel value a [`TenantRule`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleField {
    /// The dialplan context the channel started in.
    Context,
    /// The channel's name when it was created (`PJSIP/acme-00000001`).
    Channel,
    /// The channel's caller id number.
    Caller,
    /// The call's `called` number (the same for every leg).
    Called,
    /// The channel's latest non-empty `AccountCode` (AMI events only: [`CelRow`] has none).
    Accountcode,
}

impl Default for AmiAssemblerConfig {
    fn default() -> Self {
        Self {
            site: String::new(),
            grace: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(4 * 3600),
            max_open_calls: 100_000,
            max_legs_per_call: 256,
            max_items_per_call: 256,
            remember_emitted: 10_000,
            trunk_contexts: vec![
                "from-trunk".into(),
                "from-pstn".into(),
                "from-external".into(),
            ],
            trunk_channel_prefixes: Vec::new(),
            utc_offset_secs: 0,
            progress_interval: None,
            internal_number_max_len: None,
            tenant_rules: Vec::new(),
        }
    }
}

/// Counters since the assembler was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmiStats {
    /// Messages handled (events, responses and anything else).
    pub messages: u64,
    /// Messages (and CEL rows) that changed call state.
    pub events: u64,
    /// Calls emitted complete.
    pub complete: u64,
    /// Calls emitted incomplete.
    pub incomplete: u64,
    /// Calls merged into another (Linkedid changes, Asterisk 11 provisional calls).
    pub merges: u64,
    /// Events dropped because their call was already emitted.
    pub late: u64,
    /// Teardown events dropped because their channel was never seen.
    pub unknown: u64,
    /// Legs, rows or items dropped over the per-call limits.
    pub dropped: u64,
    /// Progressive mode: `Started` and `Updated` snapshots emitted (final records are counted
    /// in `complete` and `incomplete`).
    pub snapshots: u64,
    /// Calls emitted incomplete by [`AmiAssembler::resync`] (also counted in `incomplete`).
    pub resynced: u64,
}

/// One CEL row as a database or `cel_custom` CSV backend stores it, for
/// [`AmiAssembler::handle_cel_row`]. Field names follow the classic CEL columns.
///
/// Build one from a CSV line with [`CelRow::parse_csv_line`] (the lab's column order) or
/// [`CelRow::from_fields`] (any order, as [`CelColumns`] gives it from a `cel_custom.conf`
/// mapping), or from a database row with [`CelRow::from_named`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CelRow {
    /// `CHAN_START`, `ANSWER`, `HANGUP`, `LINKEDID_END`, ...
    pub eventtype: String,
    /// Epoch with microseconds (`1335310195.513823`) or local `YYYY-MM-DD HH:MM:SS[.ffffff]`
    /// (or with `T` for the space; with a zone offset such as `+00`, it is taken to UTC and
    /// shifted by [`AmiAssemblerConfig::utc_offset_secs`] like an epoch).
    pub eventtime: String,
    /// Caller id name.
    pub cid_name: String,
    /// Caller id number.
    pub cid_num: String,
    /// Extension.
    pub exten: String,
    /// Context.
    pub context: String,
    /// Channel name.
    pub channame: String,
    /// Application.
    pub appname: String,
    /// Application data.
    pub appdata: String,
    /// Uniqueid.
    pub uniqueid: String,
    /// Linkedid.
    pub linkedid: String,
    /// Bridge peer channel name(s), comma separated.
    pub peer: String,
    /// Extra: JSON (Asterisk 12+) or the legacy `cause,hangupsource,dialstatus` text.
    pub extra: String,
}

impl CelRow {
    /// A row from the fields of a `cel_custom` CSV line with the classic column order used in
    /// the lab captures: eventtype, eventtime, cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid,
    /// exten, context, channame, appname, appdata, amaflags, accountcode, uniqueid, linkedid,
    /// peer, userfield, userdeftype, eventextra (the last field is always taken as extra).
    /// `None` with fewer than 17 fields.
    pub fn from_csv_fields(fields: &[&str]) -> Option<Self> {
        let f = |i: usize| fields.get(i).map(|s| (*s).to_owned()).unwrap_or_default();
        if fields.len() < 17 {
            return None;
        }
        Some(Self {
            eventtype: f(0),
            eventtime: f(1),
            cid_name: f(2),
            cid_num: f(3),
            exten: f(7),
            context: f(8),
            channame: f(9),
            appname: f(10),
            appdata: f(11),
            uniqueid: f(14),
            linkedid: f(15),
            peer: f(16),
            extra: if fields.len() > 17 {
                fields.last().map(|s| (*s).to_owned()).unwrap_or_default()
            } else {
                String::new()
            },
        })
    }

    /// Splits one CSV line with [`crate::csv::split_record`] (fields in double quotes with `""`
    /// escapes, or bare; a trailing `\n` or `\r\n` is ignored) and reads it with
    /// [`CelRow::from_csv_fields`]. `None` for a line that is not a CEL row (or an unterminated
    /// quote).
    pub fn parse_csv_line(line: &str) -> Option<Self> {
        let fields = crate::csv::split_record(line)?;
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        Self::from_csv_fields(&refs)
    }
}

// ---------------------------------------------------------------------------------------------
// The internal, owned event every input becomes.

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Newchannel, CEL CHAN_START.
    NewChannel,
    /// Any other event about a channel (Newstate, NewCallerid, Newexten, ...).
    Update,
    /// Newexten: the dialplan moved to `exten`.
    Exten,
    DialBegin {
        dest: Option<CompactString>,
    },
    DialEnd {
        dest: Option<CompactString>,
        status: CompactString,
    },
    /// AMI BridgeEnter.
    BridgeEnter {
        bridge: CompactString,
        holding: bool,
    },
    BridgeLeave {
        bridge: CompactString,
    },
    /// A pair of channels connected by a bridge: Asterisk 11 `Bridge` Link (Uniqueids) or CEL
    /// BRIDGE_ENTER / BRIDGE_START (peer names).
    Pair {
        other_uid: Option<CompactString>,
        other_names: Vec<CompactString>,
    },
    /// Asterisk 11 LocalBridge: the other half of a Local channel.
    LocalPair {
        other: CompactString,
    },
    Hangup {
        cause: Option<u16>,
        cause_txt: CompactString,
        dial_status: CompactString,
    },
    ChanEnd,
    Rename {
        new_name: CompactString,
    },
    Transfer(Transfer),
    Recording(CompactString),
    Cdr(BTreeMap<CompactString, CompactString>),
    LinkedIdEnd,
}

#[derive(Debug, Clone, PartialEq)]
struct Ev {
    name: &'static str,
    wall: Option<NaiveDateTime>,
    uid: Option<CompactString>,
    linkedid: Option<CompactString>,
    channel: Option<CompactString>,
    cid_num: Option<CompactString>,
    cid_name: Option<CompactString>,
    exten: Option<CompactString>,
    context: Option<CompactString>,
    /// Asterisk 22's `TenantID`.
    tenant: Option<CompactString>,
    accountcode: Option<CompactString>,
    up: bool,
    kind: Kind,
}

/// Header lookup shared by AMI messages and CEL rows.
trait Fields {
    fn field(&self, name: &str) -> Option<&[u8]>;

    fn text(&self, name: &str) -> Option<CompactString> {
        self.field(name).map(|b| match std::str::from_utf8(b) {
            // One string, not a lossy copy and then its trimmed copy.
            Ok(s) => CompactString::from(s.trim()),
            Err(_) => CompactString::from_utf8_lossy(b).trim().into(),
        })
    }

    /// A value that is present and meaningful (not empty, not `<unknown>`).
    fn value(&self, name: &str) -> Option<CompactString> {
        self.text(name)
            .filter(|s| !s.is_empty() && s != "<unknown>" && s != "<null>")
    }
}

impl Fields for AmiMessage<'_> {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.get(name)
    }
}

struct FieldList<'a>(Vec<(&'static str, &'a [u8])>);

impl Fields for FieldList<'_> {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

fn epoch_to_local(text: &str, offset: i32) -> Option<NaiveDateTime> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.trim().parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos: u32 = if digits.is_empty() {
        0
    } else {
        let n: u32 = digits.parse().ok()?;
        let scale = 10u32.checked_pow(9u32.saturating_sub(digits.len() as u32))?;
        n.checked_mul(scale)?
    };
    let utc = DateTime::from_timestamp(secs, nanos)?.naive_utc();
    utc.checked_add_signed(TimeDelta::seconds(i64::from(offset)))
}

/// A CEL time: epoch (UTC, shifted by `offset`) or local `YYYY-MM-DD HH:MM:SS[.ffffff]` (or
/// with `T` for the space); with a zone offset after it (`+00`, `+01:00`, `Z`, as a database's
/// `timestamptz` gives it), the time is taken to UTC and shifted by `offset` like an epoch.
fn parse_time(text: &str, offset: i32) -> Option<NaiveDateTime> {
    let t = text.trim();
    if !t.contains('-') {
        return epoch_to_local(t, offset);
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(local) = NaiveDateTime::parse_from_str(t, format) {
            return Some(local);
        }
    }
    let zoned = match t.strip_suffix(['Z', 'z']) {
        Some(t) => std::borrow::Cow::Owned(format!("{t}+00")),
        None => std::borrow::Cow::Borrowed(t),
    };
    ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"]
        .iter()
        .find_map(|format| DateTime::parse_from_str(&zoned, format).ok())
        .and_then(|t| {
            t.naive_utc()
                .checked_add_signed(TimeDelta::seconds(i64::from(offset)))
        })
}

fn parse_cause(s: &str) -> Option<u16> {
    s.trim().parse().ok()
}

/// The hangup cause and dial status in a CEL HANGUP's Extra (JSON or legacy text).
fn hangup_extra(extra: &str) -> (Option<u16>, CompactString) {
    let extra = extra.trim();
    if extra.starts_with('{') {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(extra) {
            let cause = map.get("hangupcause").and_then(|v| match v {
                serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                serde_json::Value::String(s) => parse_cause(s),
                _ => None,
            });
            let status = map
                .get("dialstatus")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            return (cause, status.into());
        }
        return (None, CompactString::default());
    }
    let mut parts = extra.split(',');
    let cause = parts.next().and_then(parse_cause);
    let status = parts.nth(1).unwrap_or_default().trim();
    (cause, status.into())
}

fn extra_str(extra: &str, key: &str) -> Option<CompactString> {
    match serde_json::from_str(extra.trim()) {
        Ok(serde_json::Value::Object(map)) => map
            .get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(CompactString::from),
        _ => None,
    }
}

const RECORDING_VARS: [&str; 4] = [
    "MIXMONITOR_FILENAME",
    "MONITOR_FILENAME",
    "RECORDING_FILE",
    "CALLFILENAME",
];

/// Converts an AMI message (or CEL row) into the events the assembler understands.
fn convert(f: &impl Fields, offset: i32) -> Option<Ev> {
    let event = f.text("Event")?;
    let stamp = f.text("Timestamp").and_then(|t| epoch_to_local(&t, offset));
    let mut ev = Ev {
        name: "",
        wall: stamp,
        uid: f.value("Uniqueid"),
        linkedid: f.value("Linkedid"),
        channel: f.value("Channel"),
        cid_num: f.value("CallerIDNum"),
        cid_name: f.value("CallerIDName"),
        exten: f.value("Exten"),
        context: f.value("Context"),
        tenant: f.value("TenantID"),
        accountcode: f.value("AccountCode"),
        up: f.text("ChannelState").as_deref() == Some("6"),
        kind: Kind::Update,
    };
    let lower = event.to_ascii_lowercase();
    match lower.as_str() {
        "newchannel" => {
            ev.name = "Newchannel";
            ev.kind = Kind::NewChannel;
        }
        "newstate" | "newcallerid" | "newconnectedline" | "hanguprequest" => {
            ev.name = "Newstate";
        }
        "newexten" => {
            ev.name = "Newexten";
            ev.kind = Kind::Exten;
            // Asterisk 11 names it Extension; 12+ sends both.
            ev.exten = ev.exten.or_else(|| f.value("Extension"));
        }
        "dialbegin" => {
            ev.name = "DialBegin";
            ev.kind = Kind::DialBegin {
                dest: f.value("DestUniqueid"),
            };
            if ev.uid.is_none() {
                // An Originate's dial: no calling channel; only the destination is news.
                ev.uid = f.value("DestUniqueid");
                ev.linkedid = f.value("DestLinkedid");
                ev.channel = f.value("DestChannel");
                ev.tenant = f.value("DestTenantID");
                ev.accountcode = f.value("DestAccountCode");
                ev.kind = Kind::Update;
            }
            ev.exten = None;
        }
        "dialend" => {
            ev.name = "DialEnd";
            ev.uid.as_ref()?;
            ev.kind = Kind::DialEnd {
                dest: f.value("DestUniqueid"),
                status: f.text("DialStatus").unwrap_or_default(),
            };
            ev.exten = None;
        }
        "dial" => {
            // Asterisk 11.
            let sub = f.text("SubEvent").unwrap_or_default();
            ev.uid = f.value("UniqueID");
            ev.exten = None;
            if sub.eq_ignore_ascii_case("begin") {
                ev.name = "DialBegin";
                ev.kind = Kind::DialBegin {
                    dest: f.value("DestUniqueID"),
                };
            } else if sub.eq_ignore_ascii_case("end") {
                ev.name = "DialEnd";
                ev.kind = Kind::DialEnd {
                    dest: None,
                    status: f.text("DialStatus").unwrap_or_default(),
                };
            } else {
                return None;
            }
        }
        "bridgeenter" => {
            ev.name = "BridgeEnter";
            let tech = f.text("BridgeTechnology").unwrap_or_default();
            let btype = f.text("BridgeType").unwrap_or_default();
            ev.kind = Kind::BridgeEnter {
                bridge: f.text("BridgeUniqueid").unwrap_or_default(),
                holding: tech.contains("holding")
                    || btype.contains("holding")
                    || btype.contains("parking"),
            };
        }
        "bridgeleave" => {
            ev.name = "BridgeLeave";
            ev.kind = Kind::BridgeLeave {
                bridge: f.text("BridgeUniqueid").unwrap_or_default(),
            };
        }
        "bridge" => {
            // Asterisk 11: Bridgestate Link / Unlink between two channels.
            ev.name = "Bridge";
            ev.uid = f.value("Uniqueid1");
            ev.channel = f.value("Channel1");
            ev.cid_num = None;
            ev.tenant = None;
            ev.accountcode = None;
            if f.text("Bridgestate").as_deref() == Some("Link") {
                ev.kind = Kind::Pair {
                    other_uid: f.value("Uniqueid2"),
                    other_names: Vec::new(),
                };
            }
        }
        "localbridge" => {
            ev.name = "LocalBridge";
            let (a, b) = (f.value("Uniqueid1"), f.value("Uniqueid2"));
            ev.uid = a;
            ev.channel = f.value("Channel1");
            ev.exten = None;
            ev.tenant = None;
            ev.accountcode = None;
            ev.kind = Kind::LocalPair { other: b? };
            // Asterisk 12+ names the halves LocalOne/LocalTwo and carries Linkedids.
            ev.uid.as_ref()?;
        }
        "hangup" => {
            ev.name = "Hangup";
            ev.kind = Kind::Hangup {
                cause: f.text("Cause").as_deref().and_then(parse_cause),
                cause_txt: f.text("Cause-txt").unwrap_or_default(),
                dial_status: CompactString::default(),
            };
        }
        "rename" => {
            ev.name = "Rename";
            ev.kind = Kind::Rename {
                new_name: f.value("Newname")?,
            };
        }
        "blindtransfer" => {
            ev.name = "BlindTransfer";
            ev.uid = f.value("TransfererUniqueid");
            ev.linkedid = f.value("TransfererLinkedid");
            ev.channel = None;
            ev.cid_num = None;
            ev.exten = None;
            ev.context = None;
            ev.tenant = None;
            ev.accountcode = None;
            let target = match (f.value("Extension"), f.value("Context")) {
                (Some(e), Some(c)) => compact_str::format_compact!("{e}@{c}"),
                (Some(e), None) => e,
                _ => CompactString::default(),
            };
            ev.kind = Kind::Transfer(Transfer {
                kind: "blind".into(),
                time: None,
                transferer: ev.uid.clone().unwrap_or_default(),
                transferee: f.value("TransfereeUniqueid").unwrap_or_default(),
                target,
                result: f.text("Result").unwrap_or_default(),
            });
        }
        "attendedtransfer" => {
            ev.name = "AttendedTransfer";
            ev.uid = f.value("OrigTransfererUniqueid");
            ev.linkedid = f.value("OrigTransfererLinkedid");
            ev.channel = None;
            ev.cid_num = None;
            ev.exten = None;
            ev.context = None;
            ev.tenant = None;
            ev.accountcode = None;
            ev.kind = Kind::Transfer(Transfer {
                kind: "attended".into(),
                time: None,
                transferer: ev.uid.clone().unwrap_or_default(),
                transferee: f.value("TransfereeUniqueid").unwrap_or_default(),
                target: f
                    .value("TransferTargetUniqueid")
                    .or_else(|| f.value("SecondTransfererUniqueid"))
                    .unwrap_or_default(),
                result: f.text("Result").unwrap_or_default(),
            });
        }
        "varset" => {
            let var = f.text("Variable").unwrap_or_default();
            let file = f.value("Value");
            if !RECORDING_VARS.iter().any(|v| var.eq_ignore_ascii_case(v)) {
                // Only a channel heartbeat: it may still carry a changed Linkedid.
                ev.name = "VarSet";
                ev.cid_num = None;
                ev.cid_name = None;
                ev.exten = None;
                ev.context = None;
                ev.up = false;
                ev.uid.as_ref()?;
                return Some(ev);
            }
            ev.name = "VarSet";
            ev.kind = Kind::Recording(file?);
        }
        "cdr" => {
            ev.name = "Cdr";
            ev.uid = f.value("UniqueID");
            let mut row = BTreeMap::new();
            for name in CDR_FIELDS {
                if let Some(v) = f.text(name) {
                    row.insert(CompactString::from(name), v);
                }
            }
            ev.kind = Kind::Cdr(row);
        }
        "cel" => return convert_cel(f, ev, offset),
        _ => {
            // Any other event about a channel: a heartbeat that may carry a new Linkedid.
            ev.name = "Other";
            ev.uid.as_ref()?;
            ev.linkedid.as_ref()?;
            ev.cid_num = None;
            ev.cid_name = None;
            ev.exten = None;
            ev.context = None;
            ev.up = false;
        }
    }
    Some(ev)
}

/// The `Cdr` event fields kept (cdr_manager's names).
const CDR_FIELDS: [&str; 17] = [
    "AccountCode",
    "Source",
    "Destination",
    "DestinationContext",
    "CallerID",
    "Channel",
    "DestinationChannel",
    "LastApplication",
    "LastData",
    "StartTime",
    "AnswerTime",
    "EndTime",
    "Duration",
    "BillableSeconds",
    "Disposition",
    "UniqueID",
    "UserField",
];

fn convert_cel(f: &impl Fields, mut ev: Ev, offset: i32) -> Option<Ev> {
    let name = f.text("EventName")?;
    ev.uid = f.value("UniqueID");
    ev.linkedid = f.value("LinkedID");
    ev.cid_num = f.value("CallerIDnum");
    ev.cid_name = f.value("CallerIDname");
    ev.up = false;
    if ev.wall.is_none() {
        ev.wall = f.text("EventTime").and_then(|t| parse_time(&t, offset));
    }
    let extra = f.text("Extra").unwrap_or_default();
    ev.name = "CEL";
    ev.kind = match name.as_str() {
        "CHAN_START" => Kind::NewChannel,
        "ANSWER" => {
            ev.up = true;
            Kind::Update
        }
        "HANGUP" => {
            let (cause, dial_status) = hangup_extra(&extra);
            Kind::Hangup {
                cause,
                cause_txt: CompactString::default(),
                dial_status,
            }
        }
        "CHAN_END" => Kind::ChanEnd,
        "BRIDGE_ENTER" | "BRIDGE_START" => Kind::Pair {
            other_uid: None,
            other_names: f
                .text("Peer")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(CompactString::from)
                .collect(),
        },
        "BLINDTRANSFER" | "ATTENDEDTRANSFER" => {
            let blind = name == "BLINDTRANSFER";
            let target = if blind {
                match (extra_str(&extra, "extension"), extra_str(&extra, "context")) {
                    (Some(e), Some(c)) => compact_str::format_compact!("{e}@{c}"),
                    (Some(e), None) => e,
                    _ => CompactString::default(),
                }
            } else {
                extra_str(&extra, "transfer_target_channel_uniqueid").unwrap_or_default()
            };
            Kind::Transfer(Transfer {
                kind: if blind { "blind" } else { "attended" }.into(),
                time: None,
                transferer: ev.uid.clone().unwrap_or_default(),
                transferee: extra_str(&extra, "transferee_channel_uniqueid").unwrap_or_default(),
                target,
                result: CompactString::default(),
            })
        }
        "LINKEDID_END" => Kind::LinkedIdEnd,
        _ => Kind::Update,
    };
    Some(ev)
}

// ---------------------------------------------------------------------------------------------
// State.

/// A point in time: the monotonic `now` it was seen at, and the wall time that came with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    at: Instant,
    wall: Option<NaiveDateTime>,
}

/// Sets `slot` unless it holds a time at least as good (one that came with its event).
fn set_time(slot: &mut Option<Stamp>, s: Stamp) {
    match slot {
        None => *slot = Some(s),
        Some(old) if old.wall.is_none() && s.wall.is_some() => *slot = Some(s),
        _ => {}
    }
}

#[derive(Debug, Clone, Default)]
struct LegState {
    uid: CompactString,
    first_name: CompactString,
    name: CompactString,
    cid_num: CompactString,
    cid_name: CompactString,
    context: CompactString,
    exten: CompactString,
    created: Option<Stamp>,
    answered: Option<Stamp>,
    hungup: Option<Stamp>,
    cause: Option<u16>,
    cause_txt: CompactString,
    dialed_by: CompactString,
    dial_status: CompactString,
    bridges: Vec<CompactString>,
    /// The latest non-empty `TenantID`.
    tenant: CompactString,
    /// The latest non-empty `AccountCode`.
    accountcode: CompactString,
}

impl LegState {
    fn is_local(&self) -> bool {
        self.name.starts_with("Local/")
    }

    fn rule_leg(&self) -> RuleLeg<'_> {
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
struct RuleLeg<'a> {
    /// Its name when it was created.
    channel: &'a str,
    /// The context it started in.
    context: &'a str,
    /// Its caller id number.
    caller: &'a str,
    /// Its latest non-empty account code.
    accountcode: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AnswerKind {
    RealBridge = 0,
    Bridge = 1,
    DialAnswer = 2,
}

#[derive(Debug, Clone)]
struct AnswerCand {
    kind: AnswerKind,
    stamp: Stamp,
    a: CompactString,
    b: CompactString,
}

#[derive(Debug)]
struct OpenCall {
    linkedid: CompactString,
    aliases: Vec<CompactString>,
    legs: Vec<LegState>,
    answers: Vec<AnswerCand>,
    dial_statuses: Vec<CompactString>,
    dialed: bool,
    called: CompactString,
    transfers: Vec<(Stamp, Transfer)>,
    recordings: Vec<CompactString>,
    cdr: Vec<BTreeMap<CompactString, CompactString>>,
    linkedid_end: bool,
    first: Stamp,
    last: Stamp,
    finished_at: Option<Instant>,
    deadline: Instant,
    /// The `now` the call was created at (progressive updates count from it).
    created_at: Instant,
    /// The call's id once fixed (at its first emitted record), with the key and part it was
    /// made from.
    id: Option<(String, CompactString, u32)>,
    /// Progressive mode: records emitted so far (the next record's sequence).
    next_seq: u32,
    /// Progressive mode: when the next `Updated` snapshot is due (then also in `updates`).
    update_at: Option<Instant>,
}

impl OpenCall {
    fn leg(&self, uid: &str) -> Option<&LegState> {
        self.legs.iter().find(|l| l.uid == uid)
    }

    fn leg_mut(&mut self, uid: &str) -> Option<&mut LegState> {
        self.legs.iter_mut().find(|l| l.uid == uid)
    }

    fn caller(&self) -> Option<&LegState> {
        self.leg(&self.linkedid).or_else(|| self.legs.first())
    }
}

/// Groups Asterisk AMI events into calls: a sans-IO state machine (no IO, no clock).
///
/// See the module documentation in the crate docs of [`crate`] and on [`AmiAssembler::handle_message`]
/// for what it reads; calls are keyed by Linkedid and emitted after their end plus
/// [`AmiAssemblerConfig::grace`].
///
/// # Run loop
///
/// ```no_run
/// # use std::time::Instant;
/// # use call_assembler::{AmiAssembler, AmiAssemblerConfig, Output};
/// # fn next_bytes() -> Option<(Instant, Vec<u8>)> { None }
/// # fn deliver(_: call_assembler::Call) {}
/// let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
/// let mut framer = ami_proto::AmiFramer::default();
/// loop {
///     // Wait for bytes or for `asm.poll_timeout()`, whichever comes first.
///     match next_bytes() {
///         Some((now, bytes)) => {
///             framer.push(&bytes);
///             while let Some(frame) = framer.next_frame() {
///                 if let ami_proto::Frame::Message { bytes, .. } = frame {
///                     if let Ok(msg) = ami_proto::AmiMessage::parse(bytes) {
///                         asm.handle_message(now, &msg);
///                     }
///                 }
///             }
///         }
///         None => asm.handle_timeout(Instant::now()),
///     }
///     while let Some(out) = asm.poll_output() {
///         if let Output::Call(call) = out {
///             deliver(call);
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct AmiAssembler {
    config: AmiAssemblerConfig,
    calls: BTreeMap<u64, OpenCall>,
    /// Linkedid (and aliases of merged calls) to call.
    by_linkedid: BTreeMap<CompactString, u64>,
    /// Uniqueid to call.
    channels: BTreeMap<CompactString, u64>,
    /// Current channel name to Uniqueid.
    names: BTreeMap<CompactString, CompactString>,
    /// Bridge id to the Uniqueids in it.
    bridges: BTreeMap<CompactString, Vec<CompactString>>,
    timers: BTreeSet<(Instant, u64)>,
    /// Progressive mode: when each open, unfinished call's next `Updated` snapshot is due.
    updates: BTreeSet<(Instant, u64)>,
    /// Calls created by the current input whose `Started` snapshot is not out yet.
    pending_started: Vec<u64>,
    /// The call the current input was applied to.
    touched: Option<u64>,
    /// The call the last `handle_message` / `handle_cel_row` was applied to.
    last_call: Option<u64>,
    /// Keys of emitted calls not yet taken by `take_retired`.
    retired: VecDeque<CompactString>,
    /// Whether `take_retired` was ever called (until then `retired` is bounded).
    retired_taken: bool,
    /// Keys whose call id was given out, with the highest part (bounded by
    /// `remember_emitted`, oldest forgotten first).
    given_ids: BTreeMap<CompactString, u32>,
    given_order: VecDeque<CompactString>,
    outputs: VecDeque<Output>,
    anchor: Option<(NaiveDateTime, Instant)>,
    last_now: Option<Instant>,
    seq: u64,
    stats: AmiStats,
    emitted: BTreeSet<CompactString>,
    emitted_order: VecDeque<CompactString>,
}

impl AmiAssembler {
    /// An empty assembler.
    pub fn new(config: AmiAssemblerConfig) -> Self {
        Self {
            config,
            calls: BTreeMap::new(),
            by_linkedid: BTreeMap::new(),
            channels: BTreeMap::new(),
            names: BTreeMap::new(),
            bridges: BTreeMap::new(),
            timers: BTreeSet::new(),
            updates: BTreeSet::new(),
            pending_started: Vec::new(),
            touched: None,
            last_call: None,
            retired: VecDeque::new(),
            retired_taken: false,
            given_ids: BTreeMap::new(),
            given_order: VecDeque::new(),
            outputs: VecDeque::new(),
            anchor: None,
            last_now: None,
            seq: 0,
            stats: AmiStats::default(),
            emitted: BTreeSet::new(),
            emitted_order: VecDeque::new(),
        }
    }

    /// Feeds one AMI message read at `now` (monotonic; an earlier `now` than one seen before is
    /// treated as that one). Reads Newchannel, Newstate, NewCallerid, Newexten, DialBegin /
    /// DialEnd (and Asterisk 11's `Dial`), BridgeEnter / BridgeLeave (and Asterisk 11's
    /// `Bridge` and `LocalBridge`), Hangup, Rename, BlindTransfer, AttendedTransfer, VarSet
    /// (recording file names), Cdr and CEL; other events only matter for a changed Linkedid;
    /// responses are ignored. Copies what it keeps. Afterwards drain
    /// [`AmiAssembler::poll_output`] (and [`AmiAssembler::take_retired`] when journaling), read
    /// [`AmiAssembler::last_key`] if journaling, and re-read [`AmiAssembler::poll_timeout`].
    pub fn handle_message(&mut self, now: Instant, msg: &AmiMessage<'_>) {
        let now = self.clamp(now);
        self.stats.messages += 1;
        self.touched = None;
        if let Some(ev) = convert(msg, self.config.utc_offset_secs) {
            self.apply(now, ev);
        }
        self.finish_input(now);
    }

    /// Feeds one CEL row from a database or CSV backend (the same logic as AMI `CEL` events;
    /// with CEL alone a call ends at its `LINKEDID_END` or when all its channels hung up).
    pub fn handle_cel_row(&mut self, now: Instant, row: &CelRow) {
        let now = self.clamp(now);
        self.stats.messages += 1;
        self.touched = None;
        let list = FieldList(vec![
            ("Event", b"CEL".as_slice()),
            ("EventName", row.eventtype.as_bytes()),
            ("EventTime", row.eventtime.as_bytes()),
            ("CallerIDname", row.cid_name.as_bytes()),
            ("CallerIDnum", row.cid_num.as_bytes()),
            ("Exten", row.exten.as_bytes()),
            ("Context", row.context.as_bytes()),
            ("Channel", row.channame.as_bytes()),
            ("Application", row.appname.as_bytes()),
            ("AppData", row.appdata.as_bytes()),
            ("UniqueID", row.uniqueid.as_bytes()),
            ("LinkedID", row.linkedid.as_bytes()),
            ("Peer", row.peer.as_bytes()),
            ("Extra", row.extra.as_bytes()),
        ]);
        if let Some(ev) = convert(&list, self.config.utc_offset_secs) {
            self.apply(now, ev);
        }
        self.finish_input(now);
    }

    /// After one input: remember the call it was applied to and send the `Started` snapshots
    /// of the calls it created.
    fn finish_input(&mut self, now: Instant) {
        self.last_call = self.touched.take();
        self.send_started(now);
    }

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

    /// The key under which to journal the input just handled: after
    /// [`AmiAssembler::handle_message`] or [`AmiAssembler::handle_cel_row`], the key of the open
    /// call the input was applied to (the call's current Linkedid), or `None` when it changed no
    /// open call (ignored, a response, a late or unknown channel's event, an event unrelated to
    /// calls). `None` after [`AmiAssembler::resync`] and the other calls.
    ///
    /// # Journaling
    ///
    /// A relay that must not lose open calls over a restart stores each input with
    /// `Some(key)` under that key, deletes the inputs stored under every key that
    /// [`AmiAssembler::take_retired`] returns (those stored before that take: a key may come
    /// back later for a new call), and on start replays what is left, in the order it was
    /// handled, through a fresh assembler with the same configuration before going on with
    /// new input. The calls that were open are rebuilt with the same ids, legs and figures
    /// (times come from the events' `Timestamp:` headers; an event without a time is placed
    /// by the replay's `now`). What the journal does not carry:
    ///
    /// * a [`AmiAssembler::resync`]: its effects are lost on replay (legs it ended are open
    ///   again, channels it adopted are unknown again, so their `Hangup` is an
    ///   [`Anomaly::AmiUnknownChannel`]); the resync after the reconnect that follows a
    ///   restart settles both;
    /// * the memory of emitted calls: after a restart, an event about a channel of a call
    ///   emitted before is not recognised as late, and a new call under a Linkedid emitted
    ///   before is part 0 again (same id as the emitted one);
    /// * progressive mode's sequence numbers: a rebuilt call sends `Started` again with
    ///   sequence 0 (the same id), and counts on from there;
    /// * the time an input arrived: deadlines (grace, idle timeout, updates) of rebuilt calls
    ///   count from the replay.
    pub fn last_key(&self) -> Option<&str> {
        self.last_call
            .and_then(|id| self.calls.get(&id))
            .map(|c| c.linkedid.as_str())
    }

    /// Keys that no open call uses any more, since the last take: for every call emitted
    /// (complete, flushed, evicted, resynced: every final record), its Linkedid and every key
    /// merged into it (Linkedids of merged calls, provisional keys of Asterisk 11 channels
    /// without a Linkedid), i.e. every key [`AmiAssembler::last_key`] returned for its inputs.
    /// Call it after draining [`AmiAssembler::poll_output`]; a key may be returned again later
    /// when a new call uses it.
    ///
    /// Until the first call, only the most recent [`AmiAssemblerConfig::remember_emitted`]
    /// keys are kept (an assembler nobody journals for does not grow); from the first call on,
    /// every key is kept until taken, so take them after every input.
    pub fn take_retired(&mut self) -> Vec<String> {
        self.retired_taken = true;
        self.retired.drain(..).map(String::from).collect()
    }

    /// Emits every call whose deadline has passed at `now`, and in progressive mode every
    /// `Updated` snapshot due. Safe to call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        loop {
            let deadline = self.timers.first().copied().filter(|t| t.0 <= now);
            let update = self.updates.first().copied().filter(|t| t.0 <= now);
            match (deadline, update) {
                // At equal times the call's end goes first (no snapshot just before it).
                (Some(d), u) if u.is_none_or(|u| d.0 <= u.0) => {
                    let (deadline, id) = d;
                    self.timers.remove(&(deadline, id));
                    if let Some(call) = self.calls.get(&id) {
                        let reason = if call.finished_at.is_some() {
                            None
                        } else {
                            Some(FlushReason::IdleTimeout)
                        };
                        self.emit(id, reason, now);
                    }
                }
                (_, Some((at, id))) => {
                    self.updates.remove(&(at, id));
                    let finished = match self.calls.get_mut(&id) {
                        Some(call) => {
                            call.update_at = None;
                            call.finished_at.is_some()
                        }
                        None => continue,
                    };
                    if !finished {
                        self.snapshot(id, UpdateEvent::Updated, now);
                        self.schedule_update(id, now);
                    }
                }
                _ => break,
            }
        }
    }

    /// Emits every open call as it stands: finished ones complete, the others incomplete
    /// ([`FlushReason::EndOfInput`]), oldest first.
    pub fn flush(&mut self, now: Instant) {
        let now = self.clamp(now);
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            let reason = match self.calls.get(&id) {
                Some(c) if c.finished_at.is_some() => None,
                Some(_) => Some(FlushReason::EndOfInput),
                None => continue,
            };
            self.emit(id, reason, now);
        }
        self.timers.clear();
        self.updates.clear();
        self.pending_started.clear();
    }

    /// When [`AmiAssembler::handle_timeout`] should next be called (a call's grace or idle
    /// deadline, or in progressive mode its next `Updated` snapshot), or `None` when no call is
    /// open. Changes after every `handle_*` call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.timers.first().map(|t| t.0);
        let update = self.updates.first().map(|t| t.0);
        match (deadline, update) {
            (Some(d), Some(u)) => Some(d.min(u)),
            (d, u) => d.or(u),
        }
    }

    /// The next output, or `None`. Drain after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Calls open (not yet emitted).
    pub fn open_calls(&self) -> usize {
        self.calls.len()
    }

    /// Channels tracked in open calls.
    pub fn open_channels(&self) -> usize {
        self.channels.len()
    }

    /// Whether nothing is open and nothing waits to be polled (keys waiting for
    /// [`AmiAssembler::take_retired`] do not count).
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
            && self.outputs.is_empty()
            && self.channels.is_empty()
            && self.by_linkedid.is_empty()
            && self.bridges.is_empty()
            && self.timers.is_empty()
            && self.updates.is_empty()
            && self.pending_started.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> AmiStats {
        self.stats
    }

    /// The settings.
    pub fn config(&self) -> &AmiAssemblerConfig {
        &self.config
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        crate::clamp_now(&mut self.last_now, now)
    }

    fn apply(&mut self, now: Instant, mut ev: Ev) {
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

    fn new_call(&mut self, now: Instant, stamp: Stamp, linkedid: CompactString) -> u64 {
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
                    // The channel's Linkedid changed to another open call's: merge ours in.
                    self.merge(id, target, now);
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
                None => self.new_call(now, stamp, lid.clone()),
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
        let (anchor, offset) = (self.anchor, self.config.utc_offset_secs);
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
        let fallback = epoch_to_local(&call.linkedid, offset);
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

    fn apply_channel(&mut self, now: Instant, stamp: Stamp, ev: Ev, kind: Kind) {
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
                // The dialled number: the caller's last extension in its first context
                // (subroutines and macros run elsewhere).
                let home = ev.context.is_none() || ev.context.as_ref() == Some(&leg.context);
                if real && home && is_caller && matches!(kind, Kind::NewChannel | Kind::Exten) {
                    new_called = Some(e.clone());
                }
            }
            if ev.up {
                set_time(&mut leg.answered, stamp);
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

    fn leave_bridge(&mut self, uid: &CompactString, bridge: &CompactString) {
        if let Some(members) = self.bridges.get_mut(bridge) {
            members.retain(|m| m != uid);
            if members.is_empty() {
                self.bridges.remove(bridge);
            }
        }
    }

    /// Recomputes whether the call is finished, its deadline and its next update.
    fn refresh(&mut self, id: u64, now: Instant) {
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
    fn schedule_update(&mut self, id: u64, now: Instant) {
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
    fn send_started(&mut self, now: Instant) {
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
    fn snapshot(&mut self, id: u64, event: UpdateEvent, now: Instant) {
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
    fn emit(&mut self, id: u64, reason: Option<FlushReason>, now: Instant) {
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
    fn give_id(&mut self, key: &CompactString, part: u32) {
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

    /// The wall time of a stamp: its own, or placed by the latest anchor.
    fn wall(
        &self,
        s: Stamp,
        fallback_epoch: Option<NaiveDateTime>,
        first: Instant,
    ) -> NaiveDateTime {
        wall_at(self.anchor, s, fallback_epoch, first)
    }

    fn is_trunk(&self, leg: &RuleLeg<'_>) -> bool {
        self.config
            .trunk_channel_prefixes
            .iter()
            .any(|p| !p.is_empty() && leg.channel.starts_with(p.as_str()))
            || self.config.trunk_contexts.iter().any(|c| c == leg.context)
    }

    /// A call's direction by the rules in the module docs ("The call's figures"): `caller` is
    /// the caller leg, `legs` every leg.
    fn direction<'a>(
        &self,
        caller: Option<&RuleLeg<'a>>,
        mut legs: impl Iterator<Item = RuleLeg<'a>>,
        caller_num: &str,
        called: &str,
    ) -> CallDirection {
        let longer = |n: &str| {
            self.config
                .internal_number_max_len
                .is_some_and(|max| n.bytes().filter(u8::is_ascii_digit).count() > max)
        };
        match caller {
            Some(c) if self.is_trunk(c) => CallDirection::Inbound,
            _ if legs.any(|l| self.is_trunk(&l)) => CallDirection::Outbound,
            _ if longer(caller_num) => CallDirection::Inbound,
            _ if longer(called) => CallDirection::Outbound,
            _ => CallDirection::Internal,
        }
    }

    /// The tenant the first of [`AmiAssemblerConfig::tenant_rules`] matching a leg gives, the
    /// legs tried in order (caller leg first); a call without legs is tried as one empty leg
    /// (only `Called` rules and catch-alls can match).
    fn tenant_by_rules<'a>(
        &self,
        legs: impl Iterator<Item = RuleLeg<'a>>,
        called: &str,
    ) -> CompactString {
        let rules = &self.config.tenant_rules;
        if rules.is_empty() {
            return CompactString::default();
        }
        fn field<'s>(leg: &RuleLeg<'s>, f: RuleField, called: &'s str) -> &'s str {
            match f {
                RuleField::Context => leg.context,
                RuleField::Channel => leg.channel,
                RuleField::Caller => leg.caller,
                RuleField::Called => called,
                RuleField::Accountcode => leg.accountcode,
            }
        }
        let matching = |leg: &RuleLeg<'_>| {
            rules
                .iter()
                .find(|r| field(leg, r.field, called).starts_with(r.prefix.as_str()))
                .map(|r| CompactString::from(r.tenant.as_str()))
        };
        let mut any = false;
        for leg in legs {
            any = true;
            if let Some(t) = matching(&leg) {
                return t;
            }
        }
        if !any {
            if let Some(t) = matching(&RuleLeg::default()) {
                return t;
            }
        }
        CompactString::default()
    }

    /// The record of a call: final (`snapshot_at` `None`; complete when `reason` is `None`)
    /// or a snapshot taken at `snapshot_at` (incomplete, no reason, `update` left to the
    /// caller).
    fn build(
        &self,
        call: &OpenCall,
        reason: Option<FlushReason>,
        snapshot_at: Option<Instant>,
    ) -> Call {
        let fallback = epoch_to_local(&call.linkedid, self.config.utc_offset_secs);
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
        let (answer_time, answered_by) = match best {
            Some((_, _, t, a)) => (Some(t), self.answerer(call, &a.a, &a.b)),
            None if !call.dialed => {
                let t = caller.and_then(|c| c.answered).map(wall);
                (t, None)
            }
            None => (None, None),
        };
        let answer_time = answer_time.map(|t| t.clamp(start_time, end_time));
        let secs = |a: NaiveDateTime, b: NaiveDateTime| {
            u32::try_from((b - a).num_milliseconds().max(0) / 1000).unwrap_or(u32::MAX)
        };
        let duration = secs(start_time, end_time);
        let billsec = answer_time.map_or(0, |a| secs(a, end_time));
        let disposition = if answer_time.is_some() {
            "ANSWERED"
        } else {
            let has = |s: &str| call.dial_statuses.iter().any(|d| d == s);
            if has("BUSY") {
                "BUSY"
            } else if has("CONGESTION") {
                "CONGESTION"
            } else if has("CHANUNAVAIL") {
                "FAILED"
            } else if has("NOANSWER") || has("CANCEL") {
                "NO ANSWER"
            } else {
                match caller.and_then(|c| c.cause) {
                    Some(17) => "BUSY",
                    Some(34 | 38 | 42) => "CONGESTION",
                    Some(1 | 3 | 27 | 28) => "FAILED",
                    _ => "NO ANSWER",
                }
            }
        };
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
            duration,
            ring: duration.saturating_sub(billsec),
            hold: 0,
            park: 0,
            direction,
            tenant: self.tenant(call),
            caller: caller_num,
            called: call.called.clone(),
            dialled: call.called.clone(),
            answered: answer_time.is_some(),
            answered_by,
            parties,
            complete: reason.is_none() && snapshot_at.is_none(),
            flush_reason: reason,
            reconciled: false,
            records: Vec::new(),
            linkedid: call.linkedid.clone(),
            answer_time,
            billsec: Some(billsec),
            disposition: disposition.into(),
            legs,
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

    /// The tenant of a call: the first non-empty `TenantID` (caller leg first, then the others
    /// in order of creation), else the first tenant rule matching the caller leg, else the
    /// first matching another leg, else none.
    fn tenant(&self, call: &OpenCall) -> CompactString {
        let caller = call.caller();
        let legs = || {
            caller.into_iter().chain(
                call.legs
                    .iter()
                    .filter(move |l| caller.is_none_or(|c| c.uid != l.uid)),
            )
        };
        if let Some(l) = legs().find(|l| !l.tenant.is_empty()) {
            return l.tenant.clone();
        }
        self.tenant_by_rules(legs().map(LegState::rule_leg), &call.called)
    }

    /// The party that answered: the far end of the answering pair, seen from the caller.
    fn answerer(&self, call: &OpenCall, a: &str, b: &str) -> Option<Party> {
        let caller = call.caller()?;
        let chain = |uid: &str| -> Vec<&LegState> {
            let mut v: Vec<&LegState> = call.leg(uid).into_iter().collect();
            if let Some(pair) = v.first().and_then(|l| self.local_pair(call, l)) {
                v.push(pair);
            }
            v
        };
        let (ca, cb) = (chain(a), chain(b));
        let far = if ca.iter().any(|l| l.uid == caller.uid) {
            cb
        } else if cb.iter().any(|l| l.uid == caller.uid) {
            ca
        } else {
            // Neither side is the caller's: the side created later answered.
            let created = |c: &Vec<&LegState>| c.first().and_then(|l| l.created.map(|s| s.at));
            if created(&ca) > created(&cb) { ca } else { cb }
        };
        let leg = far.last()?;
        let number = local_exten(&leg.name)
            .map(CompactString::from)
            .unwrap_or_else(|| leg.cid_num.clone());
        Some(Party {
            device: leg.name.clone(),
            name: number,
        })
    }

    /// The other half of a Local channel (`;1` for `;2` and back).
    fn local_pair<'c>(&self, call: &'c OpenCall, leg: &LegState) -> Option<&'c LegState> {
        if !leg.is_local() {
            return None;
        }
        let (base, half) = leg.name.rsplit_once(';')?;
        let other_half = match half {
            "1" => "2",
            "2" => "1",
            _ => return None,
        };
        call.legs.iter().find(|l| {
            l.name
                .rsplit_once(';')
                .is_some_and(|(b, h)| b == base && h == other_half)
        })
    }
}

/// The wall time of a stamp: its own, or placed by `anchor` (the latest event with a time and
/// the `now` it came at), else by the call's fallback epoch at its first `now`.
fn wall_at(
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

/// The id of an Asterisk call: [`stable_id`] of its key for part 0, with `/part-N` after it for
/// a later part.
fn call_id(site: &str, key: &str, part: u32) -> String {
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

/// `HH:MM:SS` (or plain seconds) in seconds.
fn parse_hms(text: &str) -> Option<u64> {
    let mut secs: u64 = 0;
    let mut parts = 0;
    for p in text.trim().split(':') {
        parts += 1;
        if parts > 3 {
            return None;
        }
        let n: u64 = p.trim().parse().ok()?;
        secs = secs.checked_mul(60)?.checked_add(n)?;
    }
    Some(secs)
}

/// The extension of a Local channel name (`Local/2001@phones-0000002d;2` gives `2001`).
fn local_exten(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("Local/")?;
    rest.split_once('@').map(|(e, _)| e)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests start their synthetic clock anywhere
mod tests {
    use super::*;

    fn msg(headers: &[(&str, &str)]) -> AmiMessage<'static> {
        AmiMessage::from_headers(headers.iter().copied()).unwrap()
    }

    fn drain(asm: &mut AmiAssembler) -> Vec<Call> {
        let mut out = Vec::new();
        while let Some(o) = asm.poll_output() {
            if let Output::Call(c) = o {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn two_leg_call_ends_after_grace() {
        let base = Instant::now();
        let at = |s: u64| base + Duration::from_secs(s);
        let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
        let ts = |s: u64| format!("{}.000000", 1_000_000 + s);
        let feed = |asm: &mut AmiAssembler, s: u64, h: &[(&str, &str)]| {
            let t = ts(s);
            let mut v: Vec<(&str, &str)> = h.to_vec();
            v.push(("Timestamp", &t));
            asm.handle_message(at(s), &msg(&v));
        };
        feed(
            &mut asm,
            0,
            &[
                ("Event", "Newchannel"),
                ("Channel", "SIP/a-1"),
                ("Uniqueid", "1.1"),
                ("Linkedid", "1.1"),
                ("CallerIDNum", "100"),
                ("Exten", "200"),
                ("Context", "internal"),
            ],
        );
        feed(
            &mut asm,
            0,
            &[
                ("Event", "Newchannel"),
                ("Channel", "SIP/b-2"),
                ("Uniqueid", "1.2"),
                ("Linkedid", "1.1"),
                ("CallerIDNum", "200"),
            ],
        );
        feed(
            &mut asm,
            0,
            &[
                ("Event", "DialBegin"),
                ("Channel", "SIP/a-1"),
                ("Uniqueid", "1.1"),
                ("Linkedid", "1.1"),
                ("DestUniqueid", "1.2"),
            ],
        );
        feed(
            &mut asm,
            3,
            &[
                ("Event", "DialEnd"),
                ("Channel", "SIP/a-1"),
                ("Uniqueid", "1.1"),
                ("Linkedid", "1.1"),
                ("DestUniqueid", "1.2"),
                ("DialStatus", "ANSWER"),
            ],
        );
        feed(
            &mut asm,
            3,
            &[
                ("Event", "BridgeEnter"),
                ("Uniqueid", "1.2"),
                ("Linkedid", "1.1"),
                ("BridgeUniqueid", "br"),
            ],
        );
        feed(
            &mut asm,
            3,
            &[
                ("Event", "BridgeEnter"),
                ("Uniqueid", "1.1"),
                ("Linkedid", "1.1"),
                ("BridgeUniqueid", "br"),
            ],
        );
        feed(
            &mut asm,
            10,
            &[
                ("Event", "Hangup"),
                ("Uniqueid", "1.2"),
                ("Linkedid", "1.1"),
                ("Cause", "16"),
            ],
        );
        assert!(drain(&mut asm).is_empty());
        feed(
            &mut asm,
            10,
            &[
                ("Event", "Hangup"),
                ("Uniqueid", "1.1"),
                ("Linkedid", "1.1"),
                ("Cause", "16"),
            ],
        );
        assert_eq!(asm.poll_timeout(), Some(at(12)));
        asm.handle_timeout(at(11));
        assert!(drain(&mut asm).is_empty());
        asm.handle_timeout(at(12));
        let calls = drain(&mut asm);
        assert_eq!(calls.len(), 1);
        let c = &calls[0];
        assert_eq!(
            (c.duration, c.billsec, c.disposition.as_str()),
            (10, Some(7), "ANSWERED")
        );
        assert_eq!(c.answered_by.as_ref().unwrap().device, "SIP/b-2");
        assert_eq!((c.caller.as_str(), c.called.as_str()), ("100", "200"));
        assert!(asm.is_idle());
    }

    #[test]
    fn linkedid_change_merges_calls() {
        let base = Instant::now();
        let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
        for (uid, lid) in [("1.1", "1.1"), ("2.1", "2.1")] {
            asm.handle_message(
                base,
                &msg(&[
                    ("Event", "Newchannel"),
                    ("Uniqueid", uid),
                    ("Linkedid", lid),
                    ("Channel", "SIP/x"),
                ]),
            );
        }
        assert_eq!(asm.open_calls(), 2);
        asm.handle_message(
            base,
            &msg(&[
                ("Event", "BridgeEnter"),
                ("Uniqueid", "2.1"),
                ("Linkedid", "1.1"),
                ("BridgeUniqueid", "b"),
            ]),
        );
        assert_eq!(asm.open_calls(), 1);
        // The merged Linkedid's end does not end the call.
        asm.handle_message(
            base,
            &msg(&[
                ("Event", "CEL"),
                ("EventName", "LINKEDID_END"),
                ("UniqueID", "2.1"),
                ("LinkedID", "2.1"),
            ]),
        );
        asm.handle_timeout(base + Duration::from_secs(60));
        assert!(drain(&mut asm).is_empty());
        for uid in ["1.1", "2.1"] {
            asm.handle_message(
                base,
                &msg(&[("Event", "Hangup"), ("Uniqueid", uid), ("Linkedid", "1.1")]),
            );
        }
        asm.handle_timeout(base + Duration::from_secs(120));
        let calls = drain(&mut asm);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].legs.len(), 2);
        assert!(asm.is_idle());
    }

    #[test]
    fn ttl_flushes_incomplete() {
        let base = Instant::now();
        let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
        asm.handle_message(
            base,
            &msg(&[
                ("Event", "Newchannel"),
                ("Uniqueid", "1.1"),
                ("Linkedid", "1.1"),
            ]),
        );
        let t = asm.poll_timeout().unwrap();
        asm.handle_timeout(t);
        let calls = drain(&mut asm);
        assert_eq!(calls.len(), 1);
        assert!(!calls[0].complete);
        assert_eq!(calls[0].flush_reason, Some(FlushReason::IdleTimeout));
        assert!(asm.is_idle());
    }

    #[test]
    fn cel_csv_lines() {
        let row = CelRow::parse_csv_line(r#""HANGUP","1335310213.624898","","","","","","s","default","TinCan/string","","","3","","1335310195.0","1335310195.0","","","","16,,ANSWER""#).unwrap();
        assert_eq!(row.eventtype, "HANGUP");
        assert_eq!(row.extra, "16,,ANSWER");
        assert_eq!(hangup_extra(&row.extra), (Some(16), "ANSWER".into()));
        assert_eq!(
            hangup_extra(r#"{"hangupcause":17,"dialstatus":"BUSY"}"#),
            (Some(17), "BUSY".into())
        );
        assert!(CelRow::parse_csv_line("\"unterminated").is_none());
    }

    #[test]
    fn times_parse() {
        assert_eq!(
            parse_time("2014-10-28 16:36:40", 0).unwrap().to_string(),
            "2014-10-28 16:36:40"
        );
        assert_eq!(
            epoch_to_local("1414510600.5", 3600).unwrap().to_string(),
            "2014-10-28 16:36:40.500"
        );
        assert!(epoch_to_local("x", 0).is_none());
        // Database forms: a fraction, a `T`, a zone.
        let local = "2026-11-22 13:54:08.579430";
        for text in [
            local,
            "2026-11-22T13:54:08.579430",
            " 2026-11-22 13:54:08.579430 ",
            "2026-11-22 12:54:08.579430+00",
            "2026-11-22 13:54:08.579430+01:00",
            "2026-11-22T12:54:08.579430Z",
            "1795352048.579430",
        ] {
            assert_eq!(
                parse_time(text, 3600).map(|t| t.to_string()).as_deref(),
                Some(local),
                "{text}"
            );
        }
        assert_eq!(
            parse_time("2026-11-22 13:54:08", 0).unwrap().to_string(),
            "2026-11-22 13:54:08"
        );
        assert!(parse_time("2026-11-22 nonsense", 0).is_none());
    }

    /// An event about channel `uid` of call `lid`, with more headers.
    fn ev(event: &str, uid: &str, lid: &str, more: &[(&str, &str)]) -> AmiMessage<'static> {
        let mut h = vec![("Event", event), ("Uniqueid", uid), ("Linkedid", lid)];
        h.extend_from_slice(more);
        msg(&h)
    }

    fn outputs(asm: &mut AmiAssembler) -> Vec<Output> {
        std::iter::from_fn(|| asm.poll_output()).collect()
    }

    fn update(c: &Call) -> (u32, UpdateEvent) {
        let u = c.update.unwrap();
        (u.sequence, u.event)
    }

    fn progressive(secs: u64) -> AmiAssemblerConfig {
        AmiAssemblerConfig {
            progress_interval: Some(Duration::from_secs(secs)),
            ..AmiAssemblerConfig::default()
        }
    }

    #[test]
    fn progressive_mode_sends_started_updates_and_ended() {
        let base = Instant::now();
        let at = |s: u64| base + Duration::from_secs(s);
        let mut asm = AmiAssembler::new(progressive(10));
        asm.handle_message(
            at(0),
            &ev(
                "Newchannel",
                "1.1",
                "1.1",
                &[
                    ("Channel", "SIP/a-1"),
                    ("CallerIDNum", "100"),
                    ("Exten", "200"),
                ],
            ),
        );
        let started = drain(&mut asm);
        assert_eq!(started.len(), 1);
        let s = &started[0];
        assert_eq!(update(s), (0, UpdateEvent::Started));
        assert!(!s.complete && s.flush_reason.is_none());
        assert_eq!((s.caller.as_str(), s.legs.len()), ("100", 1));
        // The next update is due 10 s after the creation, before the idle deadline.
        assert_eq!(asm.poll_timeout(), Some(at(10)));
        asm.handle_message(
            at(4),
            &ev("Newchannel", "1.2", "1.1", &[("Channel", "SIP/b-2")]),
        );
        assert!(drain(&mut asm).is_empty(), "a new leg sends no snapshot");
        asm.handle_timeout(at(9));
        assert!(drain(&mut asm).is_empty());
        asm.handle_timeout(at(10));
        let u = drain(&mut asm);
        assert_eq!(u.len(), 1);
        assert_eq!(update(&u[0]), (1, UpdateEvent::Updated));
        assert_eq!((u[0].legs.len(), u[0].duration), (2, 10));
        assert_eq!(u[0].id, s.id);
        // Called late: one snapshot, and the next on the 10 s grid.
        asm.handle_timeout(at(35));
        let u = drain(&mut asm);
        assert_eq!(u.len(), 1);
        assert_eq!(update(&u[0]), (2, UpdateEvent::Updated));
        assert_eq!(asm.poll_timeout(), Some(at(40)));
        // Finished: no update while it waits out the grace period.
        for uid in ["1.1", "1.2"] {
            asm.handle_message(at(39), &ev("Hangup", uid, "1.1", &[("Cause", "16")]));
        }
        assert_eq!(asm.poll_timeout(), Some(at(41)));
        asm.handle_timeout(at(41));
        let end = drain(&mut asm);
        assert_eq!(end.len(), 1);
        assert_eq!(update(&end[0]), (3, UpdateEvent::Ended));
        assert!(end[0].complete);
        assert_eq!(end[0].id, s.id);
        assert_eq!(asm.stats().snapshots, 3);
        assert!(asm.is_idle());
        assert_eq!(asm.poll_timeout(), None);
    }

    #[test]
    fn complete_mode_has_no_update_and_progressive_flush_ends_calls() {
        let base = Instant::now();
        let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
        asm.handle_message(base, &ev("Newchannel", "1.1", "1.1", &[]));
        asm.flush(base);
        let c = drain(&mut asm);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].update, None);

        let mut asm = AmiAssembler::new(progressive(0));
        asm.handle_message(base, &ev("Newchannel", "1.1", "1.1", &[]));
        // A zero interval: Started and Ended only, and no update deadline.
        assert_eq!(
            asm.poll_timeout(),
            Some(base + AmiAssemblerConfig::default().idle_timeout)
        );
        asm.flush(base + Duration::from_secs(100));
        let c = drain(&mut asm);
        let seqs: Vec<_> = c.iter().map(update).collect();
        assert_eq!(seqs, [(0, UpdateEvent::Started), (1, UpdateEvent::Ended)]);
        assert_eq!(c[1].flush_reason, Some(FlushReason::EndOfInput));
        assert!(asm.is_idle());
    }

    #[test]
    fn progressive_merge_continues_the_older_calls_sequence() {
        let base = Instant::now();
        let at = |s: u64| base + Duration::from_secs(s);
        let mut asm = AmiAssembler::new(progressive(5));
        asm.handle_message(at(0), &ev("Newchannel", "1.1", "1.1", &[]));
        asm.handle_timeout(at(5));
        asm.handle_message(at(6), &ev("Newchannel", "2.1", "2.1", &[]));
        let first = drain(&mut asm);
        assert_eq!(first.len(), 3);
        let (older, younger) = (first[0].id.clone(), first[2].id.clone());
        assert_eq!(update(&first[2]), (0, UpdateEvent::Started));
        // The younger call's channel joins the older call.
        asm.handle_message(
            at(7),
            &ev("BridgeEnter", "2.1", "1.1", &[("BridgeUniqueid", "b")]),
        );
        assert_eq!(asm.open_calls(), 1);
        asm.handle_timeout(at(10));
        let u = drain(&mut asm);
        assert_eq!(u.len(), 1);
        assert_eq!(
            (u[0].id.as_str(), update(&u[0])),
            (older.as_str(), (2, UpdateEvent::Updated))
        );
        assert_eq!(u[0].legs.len(), 2);
        asm.flush(at(11));
        let end = drain(&mut asm);
        assert_eq!(end.len(), 1);
        assert_eq!(
            (end[0].id.as_str(), update(&end[0])),
            (older.as_str(), (3, UpdateEvent::Ended))
        );
        assert_ne!(older, younger);
        let mut retired = asm.take_retired();
        retired.sort();
        assert_eq!(retired, ["1.1", "2.1"]);
    }

    #[test]
    fn direction_by_number_length() {
        let base = Instant::now();
        let config = AmiAssemblerConfig {
            internal_number_max_len: Some(4),
            trunk_contexts: vec!["from-trunk".into()],
            ..AmiAssemblerConfig::default()
        };
        let run = |caller: &str, exten: &str, context: &str| {
            let mut asm = AmiAssembler::new(config.clone());
            asm.handle_message(
                base,
                &ev(
                    "Newchannel",
                    "1.1",
                    "1.1",
                    &[
                        ("CallerIDNum", caller),
                        ("Exten", exten),
                        ("Context", context),
                    ],
                ),
            );
            asm.flush(base);
            drain(&mut asm).remove(0).direction
        };
        assert_eq!(
            run("+44 20 7946 0000", "2001", "internal"),
            CallDirection::Inbound
        );
        assert_eq!(
            run("2001", "00442079460000", "internal"),
            CallDirection::Outbound
        );
        assert_eq!(run("2001", "2002", "internal"), CallDirection::Internal);
        assert_eq!(run("20011", "2002", "internal"), CallDirection::Inbound);
        // A trunk rule decides first.
        assert_eq!(
            run("2001", "00442079460000", "from-trunk"),
            CallDirection::Inbound
        );
        // Without the setting, length means nothing.
        let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
        asm.handle_message(
            base,
            &ev(
                "Newchannel",
                "1.1",
                "1.1",
                &[("CallerIDNum", "+442079460000")],
            ),
        );
        asm.flush(base);
        assert_eq!(drain(&mut asm)[0].direction, CallDirection::Internal);
    }

    #[test]
    fn tenant_from_tenant_id_or_rules() {
        let base = Instant::now();
        let rule = |field, prefix: &str, tenant: &str| TenantRule {
            field,
            prefix: prefix.into(),
            tenant: tenant.into(),
        };
        let config = AmiAssemblerConfig {
            tenant_rules: vec![
                rule(RuleField::Context, "acme-", "acme"),
                rule(RuleField::Accountcode, "glob", "globex"),
                rule(RuleField::Called, "9", "nines"),
                rule(RuleField::Channel, "PJSIP/initech", "initech"),
            ],
            ..AmiAssemblerConfig::default()
        };
        let run = |legs: &[&[(&str, &str)]]| {
            let mut asm = AmiAssembler::new(config.clone());
            for (i, more) in legs.iter().enumerate() {
                let uid = format!("1.{}", i + 1);
                asm.handle_message(base, &ev("Newchannel", &uid, "1.1", more));
            }
            asm.flush(base);
            drain(&mut asm).remove(0).tenant
        };
        assert_eq!(run(&[&[("Context", "acme-in")]]), "acme");
        // The first rule matching the caller leg wins over later rules.
        assert_eq!(
            run(&[&[("Context", "acme-in"), ("AccountCode", "globex1")]]),
            "acme"
        );
        assert_eq!(run(&[&[("AccountCode", "globex1")]]), "globex");
        assert_eq!(run(&[&[("Exten", "9123")]]), "nines");
        // The caller leg matched nothing: the other legs in order of creation.
        assert_eq!(
            run(&[
                &[("Context", "internal")],
                &[("Channel", "PJSIP/initech-0001")],
                &[("Context", "acme-out")],
            ]),
            "initech"
        );
        assert_eq!(run(&[&[("Context", "internal")]]), "");
        // Asterisk 22's TenantID wins over the rules, caller leg first (case-insensitive).
        assert_eq!(
            run(&[&[("Context", "acme-in")], &[("TenantID", "umbrella")],]),
            "umbrella"
        );
        assert_eq!(
            run(&[&[("tenantid", "wayne")], &[("TenantID", "umbrella")]]),
            "wayne"
        );
        // The latest TenantID of a channel counts (the dialplan sets it after creation).
        let mut asm = AmiAssembler::new(config.clone());
        asm.handle_message(base, &ev("Newchannel", "1.1", "1.1", &[("TenantID", "")]));
        asm.handle_message(
            base,
            &ev(
                "VarSet",
                "1.1",
                "1.1",
                &[("Variable", "X"), ("TenantID", "stark")],
            ),
        );
        asm.flush(base);
        assert_eq!(drain(&mut asm)[0].tenant, "stark");
    }

    fn show(uid: &str, lid: &str, more: &[(&str, &str)]) -> AmiMessage<'static> {
        let mut h = vec![
            ("Event", "CoreShowChannel"),
            ("Uniqueid", uid),
            ("Linkedid", lid),
        ];
        h.extend_from_slice(more);
        msg(&h)
    }

    #[test]
    fn resync_closes_calls_whose_channels_vanished() {
        let base = Instant::now();
        let at = |s: u64| base + Duration::from_secs(s);
        let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
        let ts = |s: u64| format!("{}.000000", 1_700_000_000 + s);
        // Call 1.1: two legs, both vanish during the gap.
        for uid in ["1.1", "1.2"] {
            asm.handle_message(
                at(0),
                &ev("Newchannel", uid, "1.1", &[("Timestamp", &ts(0))]),
            );
        }
        asm.handle_message(
            at(1),
            &ev(
                "BridgeEnter",
                "1.2",
                "1.1",
                &[("BridgeUniqueid", "b1"), ("Timestamp", &ts(1))],
            ),
        );
        // Call 2.1: one leg hung up before the gap, the other is still up.
        for uid in ["2.1", "2.2"] {
            asm.handle_message(
                at(2),
                &ev("Newchannel", uid, "2.1", &[("Timestamp", &ts(2))]),
            );
        }
        asm.handle_message(at(3), &ev("Hangup", "2.2", "2.1", &[("Timestamp", &ts(3))]));
        assert!(drain(&mut asm).is_empty());
        asm.resync(at(30), &[show("2.1", "2.1", &[("Duration", "00:00:28")])]);
        assert_eq!(asm.last_key(), None);
        let calls = drain(&mut asm);
        assert_eq!(calls.len(), 1);
        let c = &calls[0];
        assert_eq!(c.linkedid, "1.1");
        assert!(!c.complete);
        assert_eq!(c.flush_reason, Some(FlushReason::Resync));
        // Its end is the resync, placed on the wall clock by the last event with a time.
        assert_eq!(c.duration, 30);
        assert!(c.legs.iter().all(|l| l.end == Some(c.end_time)));
        assert_eq!(asm.stats().resynced, 1);
        assert_eq!(asm.take_retired(), ["1.1"]);
        // The live call stays open and completes normally.
        assert_eq!(asm.open_calls(), 1);
        asm.handle_message(
            at(40),
            &ev("Hangup", "2.1", "2.1", &[("Timestamp", &ts(40))]),
        );
        asm.handle_timeout(at(45));
        let calls = drain(&mut asm);
        assert_eq!(calls.len(), 1);
        assert!(calls[0].complete);
        assert_eq!(calls[0].duration, 38);
        assert!(outputs(&mut asm).is_empty());
        assert!(asm.is_idle());
        // An event of a resynced call's channel is late.
        asm.handle_message(at(46), &ev("Hangup", "1.1", "1.1", &[]));
        assert!(matches!(
            outputs(&mut asm).as_slice(),
            [Output::Anomaly(Anomaly::AmiLateEvent { .. })]
        ));
    }

    #[test]
    fn resync_adopts_channels_it_does_not_know() {
        let base = Instant::now();
        let at = |s: u64| base + Duration::from_secs(s);
        let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
        asm.handle_message(
            at(0),
            &ev(
                "Newchannel",
                "1.1",
                "1.1",
                &[("Timestamp", "1700000000.000000")],
            ),
        );
        // During the gap, 1.1 dialled 1.2 (which answered), and call 3.1 began.
        asm.resync(
            at(100),
            &[
                show(
                    "3.1",
                    "3.1",
                    &[
                        ("Channel", "PJSIP/c-3"),
                        ("CallerIDNum", "300"),
                        ("Exten", "400"),
                        ("Context", "internal"),
                        ("ChannelState", "4"),
                        ("Duration", "00:00:10"),
                    ],
                ),
                show(
                    "1.2",
                    "1.1",
                    &[
                        ("Channel", "PJSIP/b-2"),
                        ("ChannelState", "6"),
                        ("BridgeId", "br"),
                        ("Duration", "00:01:00"),
                    ],
                ),
                show(
                    "1.1",
                    "1.1",
                    &[
                        ("Channel", "PJSIP/a-1"),
                        ("ChannelState", "6"),
                        ("BridgeId", "br"),
                        ("Duration", "00:01:40"),
                    ],
                ),
            ],
        );
        assert!(outputs(&mut asm).is_empty());
        assert_eq!((asm.open_calls(), asm.open_channels()), (2, 3));
        // Their hangups are not unknown channels.
        for (s, uid, lid) in [
            (110, "1.2", "1.1"),
            (110, "1.1", "1.1"),
            (120, "3.1", "3.1"),
        ] {
            asm.handle_message(at(s), &ev("Hangup", uid, lid, &[("Cause", "16")]));
            assert_eq!(asm.last_key(), Some(lid));
        }
        asm.handle_timeout(at(200));
        let out = outputs(&mut asm);
        assert!(out.iter().all(|o| matches!(o, Output::Call(_))), "{out:?}");
        let calls: Vec<Call> = out
            .into_iter()
            .filter_map(|o| match o {
                Output::Call(c) => Some(c),
                Output::Anomaly(_) => None,
            })
            .collect();
        assert_eq!(calls.len(), 2);
        let one = calls.iter().find(|c| c.linkedid == "1.1").unwrap();
        assert!(one.complete);
        assert_eq!(one.legs.len(), 2);
        // Answered during the gap (seen as a bridge at the resync): a lower bound of billsec.
        assert_eq!(
            (one.disposition.as_str(), one.billsec),
            ("ANSWERED", Some(10))
        );
        assert_eq!(one.duration, 110);
        let three = calls.iter().find(|c| c.linkedid == "3.1").unwrap();
        assert!(three.complete);
        // Created at the resync minus its Duration.
        assert_eq!(three.duration, 30);
        assert_eq!(
            (three.caller.as_str(), three.called.as_str()),
            ("300", "400")
        );
        assert_eq!(three.legs[0].channel, "PJSIP/c-3");
        assert_eq!(asm.stats().unknown, 0);
        assert!(asm.is_idle());
    }

    #[test]
    fn resync_progressive_and_empty_list() {
        let base = Instant::now();
        let mut asm = AmiAssembler::new(progressive(60));
        asm.handle_message(base, &ev("Newchannel", "1.1", "1.1", &[]));
        asm.resync(base, &[show("2.1", "2.1", &[])]);
        let out = drain(&mut asm);
        let got: Vec<(&str, (u32, UpdateEvent), Option<FlushReason>)> = out
            .iter()
            .map(|c| (c.linkedid.as_str(), update(c), c.flush_reason))
            .collect();
        assert_eq!(
            got,
            [
                ("1.1", (0, UpdateEvent::Started), None),
                ("1.1", (1, UpdateEvent::Ended), Some(FlushReason::Resync)),
                ("2.1", (0, UpdateEvent::Started), None),
            ]
        );
        // The PBX restarted: no channel at all.
        asm.resync(base, &[]);
        let out = drain(&mut asm);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].flush_reason, Some(FlushReason::Resync));
        assert!(asm.is_idle());
    }

    #[test]
    fn last_key_and_retired_keys() {
        let base = Instant::now();
        let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
        asm.handle_message(base, &msg(&[("Response", "Success"), ("Ping", "Pong")]));
        assert_eq!(asm.last_key(), None);
        // Asterisk 11: no Linkedid, so a provisional key per channel.
        asm.handle_message(base, &msg(&[("Event", "Newchannel"), ("Uniqueid", "5.1")]));
        assert_eq!(asm.last_key(), Some("5.1"));
        asm.handle_message(base, &msg(&[("Event", "Newchannel"), ("Uniqueid", "5.2")]));
        assert_eq!(asm.last_key(), Some("5.2"));
        asm.handle_message(
            base,
            &msg(&[
                ("Event", "Dial"),
                ("SubEvent", "Begin"),
                ("UniqueID", "5.1"),
                ("DestUniqueID", "5.2"),
            ]),
        );
        assert_eq!(asm.last_key(), Some("5.1"));
        // The real Linkedid arrives with CEL: the call takes it on.
        asm.handle_message(
            base,
            &msg(&[
                ("Event", "CEL"),
                ("EventName", "ANSWER"),
                ("UniqueID", "5.2"),
                ("LinkedID", "4.9"),
            ]),
        );
        assert_eq!(asm.last_key(), Some("4.9"));
        asm.handle_message(base, &ev("Hangup", "7.7", "7.7", &[]));
        assert_eq!(asm.last_key(), None, "unknown channel");
        assert!(asm.take_retired().is_empty());
        asm.flush(base);
        let mut keys = asm.take_retired();
        keys.sort();
        assert_eq!(keys, ["4.9", "5.1", "5.2"]);
        assert!(asm.take_retired().is_empty());
    }

    #[test]
    fn retired_keys_are_bounded_until_taken() {
        let base = Instant::now();
        let mut asm = AmiAssembler::new(AmiAssemblerConfig {
            remember_emitted: 3,
            ..AmiAssemblerConfig::default()
        });
        for i in 0..10 {
            let uid = format!("{i}.1");
            asm.handle_message(base, &ev("Newchannel", &uid, &uid, &[]));
        }
        asm.flush(base);
        assert_eq!(asm.take_retired(), ["7.1", "8.1", "9.1"]);
        for i in 10..20 {
            let uid = format!("{i}.1");
            asm.handle_message(base, &ev("Newchannel", &uid, &uid, &[]));
        }
        asm.flush(base);
        assert_eq!(asm.take_retired().len(), 10);
    }

    #[test]
    fn a_new_channel_under_an_emitted_linkedid_is_a_later_part() {
        let base = Instant::now();
        let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
        asm.handle_message(base, &ev("Newchannel", "1.1", "1.1", &[]));
        asm.flush(base);
        let first = drain(&mut asm).remove(0);
        assert_eq!(first.part, 0);
        // A late event of its channel is dropped; a new channel of its Linkedid is part 1.
        asm.handle_message(
            base,
            &ev("Newstate", "1.1", "1.1", &[("ChannelState", "6")]),
        );
        assert_eq!((asm.open_calls(), asm.stats().late), (0, 1));
        asm.handle_message(base, &ev("Newchannel", "1.2", "1.1", &[]));
        asm.flush(base);
        let second = drain(&mut asm).remove(0);
        assert_eq!(second.part, 1);
        assert_ne!(second.id, first.id);
        assert_eq!(second.call_id, first.call_id);
    }
}
