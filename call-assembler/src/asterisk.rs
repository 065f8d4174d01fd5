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
//! * `direction`: inbound when the caller leg is a trunk, outbound when another leg is, else
//!   internal; a trunk is a channel whose name starts with one of
//!   [`AmiAssemblerConfig::trunk_channel_prefixes`] or whose first context is one of
//!   [`AmiAssemblerConfig::trunk_contexts`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ami_proto::AmiMessage;
use chrono::{DateTime, NaiveDateTime, TimeDelta};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::call::{
    Call, CallDirection, FlushReason, Leg, Party, Source, Transfer, format_timestamp, stable_id,
};
use crate::{Anomaly, Output};

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
}

/// One CEL row as a database or `cel_custom` CSV backend stores it, for
/// [`AmiAssembler::handle_cel_row`]. Field names follow the classic CEL columns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CelRow {
    /// `CHAN_START`, `ANSWER`, `HANGUP`, `LINKEDID_END`, ...
    pub eventtype: String,
    /// Epoch with microseconds (`1335310195.513823`) or local `YYYY-MM-DD HH:MM:SS[.ffffff]`.
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

    /// Splits one CSV line (fields in double quotes with `""` escapes, or bare) and reads it
    /// with [`CelRow::from_csv_fields`]. `None` for a line that is not a CEL row (or an
    /// unterminated quote).
    pub fn parse_csv_line(line: &str) -> Option<Self> {
        let fields = split_csv(line.trim_end_matches(['\r', '\n']))?;
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        Self::from_csv_fields(&refs)
    }
}

fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if c == ',' {
            out.push(std::mem::take(&mut cur));
            at_start = true;
        } else {
            cur.push(c);
            at_start = false;
        }
    }
    if quoted {
        return None;
    }
    out.push(cur);
    Some(out)
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
    up: bool,
    kind: Kind,
}

/// Header lookup shared by AMI messages and CEL rows.
trait Fields {
    fn field(&self, name: &str) -> Option<&[u8]>;

    fn text(&self, name: &str) -> Option<CompactString> {
        self.field(name)
            .map(|b| CompactString::from_utf8_lossy(b).trim().into())
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

fn parse_time(text: &str, offset: i32) -> Option<NaiveDateTime> {
    let t = text.trim();
    if t.contains('-') {
        NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").ok()
    } else {
        epoch_to_local(t, offset)
    }
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
}

impl LegState {
    fn is_local(&self) -> bool {
        self.name.starts_with("Local/")
    }
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
    /// [`AmiAssembler::poll_output`] and re-read [`AmiAssembler::poll_timeout`].
    pub fn handle_message(&mut self, now: Instant, msg: &AmiMessage<'_>) {
        let now = self.clamp(now);
        self.stats.messages += 1;
        if let Some(ev) = convert(msg, self.config.utc_offset_secs) {
            self.apply(now, ev);
        }
    }

    /// Feeds one CEL row from a database or CSV backend (the same logic as AMI `CEL` events;
    /// with CEL alone a call ends at its `LINKEDID_END` or when all its channels hung up).
    pub fn handle_cel_row(&mut self, now: Instant, row: &CelRow) {
        let now = self.clamp(now);
        self.stats.messages += 1;
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
    }

    /// Emits every call whose deadline has passed at `now`. Safe to call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        while let Some(&(deadline, id)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.remove(&(deadline, id));
            if let Some(call) = self.calls.get(&id) {
                let reason = if call.finished_at.is_some() {
                    None
                } else {
                    Some(FlushReason::IdleTimeout)
                };
                self.emit(id, reason);
            }
        }
    }

    /// Emits every open call as it stands: finished ones complete, the others incomplete
    /// ([`FlushReason::EndOfInput`]), oldest first.
    pub fn flush(&mut self, now: Instant) {
        self.clamp(now);
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            let reason = match self.calls.get(&id) {
                Some(c) if c.finished_at.is_some() => None,
                Some(_) => Some(FlushReason::EndOfInput),
                None => continue,
            };
            self.emit(id, reason);
        }
        self.timers.clear();
    }

    /// When [`AmiAssembler::handle_timeout`] should next be called, or `None` when no call is
    /// open. Changes after every `handle_*` call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|t| t.0)
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

    /// Whether nothing is open and nothing waits to be polled.
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
            && self.outputs.is_empty()
            && self.channels.is_empty()
            && self.by_linkedid.is_empty()
            && self.bridges.is_empty()
            && self.timers.is_empty()
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
                self.emit(victim, Some(FlushReason::Evicted));
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
            },
        );
        self.timers.insert((deadline, id));
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
        self.stats.merges += 1;
        let max_legs = self.config.max_legs_per_call;
        let max = self.config.max_items_per_call;
        let Some(call) = self.calls.get_mut(&into) else {
            return;
        };
        for leg in old.legs {
            if call.legs.len() < max_legs {
                self.channels.insert(leg.uid.clone(), into);
                call.legs.push(leg);
            } else {
                self.channels.remove(&leg.uid);
                self.stats.dropped += 1;
            }
        }
        call.legs.sort_by_key(|l| l.created.map(|s| s.at));
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
        self.refresh(into, now);
    }

    fn apply_channel(&mut self, now: Instant, stamp: Stamp, ev: Ev, kind: Kind) {
        let Some(uid) = ev.uid.clone() else { return };
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
        if let Some(&cur) = self.channels.get(&uid) {
            id = cur;
        }
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

    /// Recomputes whether the call is finished and its deadline.
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
    }

    fn emit(&mut self, id: u64, reason: Option<FlushReason>) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        self.timers.remove(&(call.deadline, id));
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
        if reason.is_none() {
            self.stats.complete += 1;
        } else {
            self.stats.incomplete += 1;
        }
        let built = self.build(&call, reason);
        self.outputs.push_back(Output::Call(built));
    }

    /// The wall time of a stamp: its own, or placed by the latest anchor.
    fn wall(
        &self,
        s: Stamp,
        fallback_epoch: Option<NaiveDateTime>,
        first: Instant,
    ) -> NaiveDateTime {
        if let Some(w) = s.wall {
            return w;
        }
        let (w0, t0) = match self.anchor {
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

    fn is_trunk(&self, leg: &LegState) -> bool {
        let name = if leg.first_name.is_empty() {
            &leg.name
        } else {
            &leg.first_name
        };
        self.config
            .trunk_channel_prefixes
            .iter()
            .any(|p| !p.is_empty() && name.starts_with(p.as_str()))
            || self.config.trunk_contexts.iter().any(|c| *c == leg.context)
    }

    fn build(&self, call: &OpenCall, reason: Option<FlushReason>) -> Call {
        let fallback = epoch_to_local(&call.linkedid, self.config.utc_offset_secs);
        let wall = |s: Stamp| self.wall(s, fallback, call.first.at);
        let start_time = call
            .legs
            .iter()
            .filter_map(|l| l.created.map(wall))
            .min()
            .unwrap_or_else(|| wall(call.first));
        let end_time = if reason.is_none() {
            call.legs
                .iter()
                .filter_map(|l| l.hungup.map(wall))
                .max()
                .unwrap_or_else(|| wall(call.last))
        } else {
            wall(call.last)
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
        let direction = match caller {
            Some(c) if self.is_trunk(c) => CallDirection::Inbound,
            _ if call.legs.iter().any(|l| self.is_trunk(l)) => CallDirection::Outbound,
            _ => CallDirection::Internal,
        };
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
        Call {
            id: stable_id(Source::Ami, &self.config.site, &call.linkedid),
            source: Source::Ami,
            site: CompactString::from(self.config.site.as_str()),
            call_id: call.linkedid.clone(),
            boot_epoch: 0,
            part: 0,
            start: CompactString::from_utf8_lossy(&start_bytes),
            start_time,
            end_time,
            duration,
            ring: duration.saturating_sub(billsec),
            hold: 0,
            park: 0,
            direction,
            caller: caller.map(|c| c.cid_num.clone()).unwrap_or_default(),
            called: call.called.clone(),
            dialled: call.called.clone(),
            answered: answer_time.is_some(),
            answered_by,
            parties,
            complete: reason.is_none(),
            flush_reason: reason,
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
        }
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
    }
}
