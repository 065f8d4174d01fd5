//! Input decoding: the rows and messages the assembler reads ([`CelRow`], AMI messages, the
//! `CoreShowChannel` list) become one owned event ([`Ev`]) by one header lookup ([`Fields`]);
//! times, hangup causes and CEL extras are read here.

use std::collections::BTreeMap;

use ami_proto::AmiMessage;
use chrono::{DateTime, NaiveDateTime};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::{AmiAssembler, AmiAssemblerConfig, CelColumns};
use crate::call::Transfer;
use crate::zone::PbxZone;

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
    /// then to the PBX's local time in [`AmiAssemblerConfig::zone`] like an epoch).
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

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
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
    /// The channel was parked (`start`) or left the parking lot: AMI `ParkedCall` /
    /// `UnParkedCall`, `ParkedCallTimeOut`, `ParkedCallGiveUp`; CEL `PARK_START` / `PARK_END`.
    Park {
        start: bool,
    },
    Recording(CompactString),
    Cdr(BTreeMap<CompactString, CompactString>),
    LinkedIdEnd,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Ev {
    pub(super) name: &'static str,
    pub(super) wall: Option<NaiveDateTime>,
    pub(super) uid: Option<CompactString>,
    pub(super) linkedid: Option<CompactString>,
    pub(super) channel: Option<CompactString>,
    pub(super) cid_num: Option<CompactString>,
    pub(super) cid_name: Option<CompactString>,
    pub(super) exten: Option<CompactString>,
    pub(super) context: Option<CompactString>,
    /// Asterisk 22's `TenantID`.
    pub(super) tenant: Option<CompactString>,
    pub(super) accountcode: Option<CompactString>,
    pub(super) up: bool,
    /// The dialplan application the channel started (AMI `Newexten`, CEL `APP_START`).
    pub(super) app: Option<CompactString>,
    pub(super) kind: Kind,
}

/// Header lookup shared by AMI messages and CEL rows.
pub(super) trait Fields {
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

pub(super) struct FieldList<'a>(pub(super) Vec<(&'static str, &'a [u8])>);

impl Fields for FieldList<'_> {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

pub(super) fn epoch_to_local(text: &str, zone: &PbxZone) -> Option<NaiveDateTime> {
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
    Some(zone.to_local(utc))
}

/// A CEL time: epoch (UTC, taken to the PBX's local time in `zone`) or local `YYYY-MM-DD
/// HH:MM:SS[.ffffff]` (or with `T` for the space); with a zone offset after it (`+00`,
/// `+01:00`, `Z`, as a database's `timestamptz` gives it), the time is taken to UTC and then
/// to local time like an epoch.
pub(super) fn parse_time(text: &str, zone: &PbxZone) -> Option<NaiveDateTime> {
    let t = text.trim();
    if !t.contains('-') {
        return epoch_to_local(t, zone);
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
        .map(|t| zone.to_local(t.naive_utc()))
}

fn parse_cause(s: &str) -> Option<u16> {
    s.trim().parse().ok()
}

/// The hangup cause and dial status in a CEL HANGUP's Extra (JSON or legacy text).
pub(super) fn hangup_extra(extra: &str) -> (Option<u16>, CompactString) {
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
pub(super) fn convert(f: &impl Fields, zone: &PbxZone) -> Option<Ev> {
    let event = f.text("Event")?;
    let stamp = f.text("Timestamp").and_then(|t| epoch_to_local(&t, zone));
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
        app: None,
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
            ev.app = f.value("Application");
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
        "parkedcall" | "unparkedcall" | "parkedcalltimeout" | "parkedcallgiveup" => {
            ev.name = "ParkedCall";
            ev.uid = f.value("ParkeeUniqueid");
            ev.linkedid = f.value("ParkeeLinkedid");
            ev.channel = None;
            ev.cid_num = None;
            ev.cid_name = None;
            ev.exten = None;
            ev.context = None;
            ev.tenant = None;
            ev.accountcode = None;
            ev.up = false;
            ev.kind = Kind::Park {
                start: lower == "parkedcall",
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
        "cel" => return convert_cel(f, ev, zone),
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

fn convert_cel(f: &impl Fields, mut ev: Ev, zone: &PbxZone) -> Option<Ev> {
    let name = f.text("EventName")?;
    ev.uid = f.value("UniqueID");
    ev.linkedid = f.value("LinkedID");
    ev.cid_num = f.value("CallerIDnum");
    ev.cid_name = f.value("CallerIDname");
    ev.up = false;
    if ev.wall.is_none() {
        ev.wall = f.text("EventTime").and_then(|t| parse_time(&t, zone));
    }
    let extra = f.text("Extra").unwrap_or_default();
    // Every CEL event names the application its channel runs (CEL `APP_START` needs
    // `apps` in cel.conf; the other events carry it anyway).
    ev.app = f.value("Application");
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
        "PARK_START" => Kind::Park { start: true },
        "PARK_END" => Kind::Park { start: false },
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

/// `HH:MM:SS` (or plain seconds) in seconds.
pub(super) fn parse_hms(text: &str) -> Option<u64> {
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
