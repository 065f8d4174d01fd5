//! Cisco Meeting Server (CMS) call detail records: the record type and the meeting assembler.
//!
//! # The record type lives here
//!
//! [`CmsRecord`] is the input of [`CmsAssembler`], so it is defined in this crate, next to the
//! other sources' inputs. The arrows point `bins -> cdr-sinks -> call-assembler`: the assembler
//! cannot see `cdr-sinks`, while `cdr-sinks::http_cdr` (the HTTP-CDR sink and the receiver's
//! format) can see this crate. The XML reader and writer of the format ([`parse_cms_xml`],
//! [`write_cms_batch`], [`write_cms_records`]) live here as well, in `cms/xml.rs`, because the
//! cargo-fuzz crate checks them together with the assembler and must not build all of
//! `cdr-sinks` (tokio, hyper, rustls, SQLite) to do so; `cdr-sinks::http_cdr` re-exports them
//! and adds what only a sink or receiver needs (the JSON API shape, a session's record counter).
//!
//! A record borrows from the posted body ([`Cow::Borrowed`] wherever the XML needed no
//! unescaping); [`CmsRecord::into_owned`] makes a `'static` copy.
//!
//! ## The tree of a record
//!
//! Everything inside `<record>` is kept as a small tree stored flat, in document order
//! ([`CmsRecord::nodes`]): one [`CmsNode`] per element, with its depth (0 for the record's
//! children, normally the one main object `<call>`, `<callLeg>`, `<recording>` or
//! `<streaming>`; 1 for the main object's fields; 2 for `<rxVideo><codec>`, ...), its name,
//! its attributes in order and its text. Repeated elements (two `<alarm type=.. />`) stay
//! two nodes. [`CmsRecord::field`] reads a field of the main object by a path such as
//! `"durationSeconds"` or `"rxVideo/codec"`.
//!
//! An element's text is all its character data joined (text, references, CDATA), with the
//! literal whitespace at both ends removed (CMS indents and breaks values over lines, as in
//! `<path>spaces/..\n        </path>`). Whitespace written as a character reference
//! (`&#32;`) is kept, which is how the writer keeps values that begin or end in a space.
//! Comments and processing instructions are not data and are skipped.
//!
//! # The assembler
//!
//! [`CmsAssembler`] groups the records of one meeting (a CMS *call*, keyed by its call id) into
//! one [`Call`], the same sans-IO way as the other assemblers: `handle_record(now, &record)`,
//! `handle_timeout(now)`, `poll_timeout()`, `poll_output()`, `flush(now)`.
//!
//! * A call runs from `callStart` to `callEnd`. `callLegStart`, `callLegUpdate`,
//!   `recordingStart` and `streamingStart` name their call in a `<call>` field; `callLegEnd`,
//!   `recordingEnd` and `streamingEnd` hold only their own id and are routed to the call
//!   through the leg, recording or stream seen earlier.
//! * A record for a call not seen yet starts a **provisional** call (a leg whose `callStart`
//!   came before the relay started, or a `callLegUpdate` of a leg that never had a
//!   `callLegStart`); a later `callStart` fills it in.
//! * A call is emitted when its `callEnd` arrives ([`Call::complete`] `true`), or incomplete
//!   after [`CmsAssemblerConfig::idle_timeout`] without a record
//!   ([`FlushReason::IdleTimeout`]), when the cap on open calls is reached
//!   ([`FlushReason::Evicted`]) or on [`CmsAssembler::flush`] ([`FlushReason::EndOfInput`]).
//! * Records are ordered by `recordIndex` (then arrival) when the call is built, not by arrival.
//!   A record whose `recordIndex` is already held for its call is a duplicate and dropped.
//! * After a call is emitted complete, its records are late: dropped and reported
//!   ([`CmsAnomaly::Late`]), so a resent or bogus `callEnd` never makes a second call. After a
//!   call is emitted incomplete, its next records start a later part ([`Call::part`] 1, 2, ...)
//!   with an id of its own. Both are remembered for the last
//!   [`CmsAssemblerConfig::remember_closed`] calls.
//! * Dedup across a whole session (`session`, `recordIndex`) is the receiver's job (it sees the
//!   session; a record does not carry it): this assembler only drops duplicates within a call.
//!
//! ## Surprises
//!
//! Surprises come out of [`CmsAssembler::poll_output`] like the other assemblers' anomalies, as
//! [`Output::Anomaly`]`(`[`Anomaly::Cms`]`)` holding a [`CmsAnomaly`] (and are counted in
//! [`CmsStats`]).
//!
//! # The call (mapping to [`Call`])
//!
//! **Times are UTC.** CMS writes every time in UTC (`2022-05-17T10:07:29Z`); CMS calls carry
//! those UTC times in `start_time`, `end_time` and the legs' times (unlike SMDR and Asterisk
//! calls, which carry PBX local time). `start` keeps CMS's own text.
//!
//! | [`Call`] field | from |
//! |---|---|
//! | `source`, `id` | [`Source::Cms`]; [`stable_id`]`(Cms, site, call id)` (part `n > 0`: key `"<call id>/part-<n>"`) |
//! | `call_id` | the CMS call id (`<call id=..>`) |
//! | `start`, `start_time` | the `callStart` time; without one the earliest record time |
//! | `end_time` | the `callEnd` time; for a call flushed incomplete the latest record time |
//! | `duration` | the `callEnd`'s `durationSeconds` (CMS's figure, not recomputed); else `end_time - start_time` |
//! | `legs` | one [`Leg`] per call leg, in order of its first record (below) |
//! | `answered`, `answer_time` | some leg reached `<state>connected</state>`; the first such time |
//! | `answered_by` | the first leg that connected, as a [`Party`] |
//! | `direction` | the first leg's `direction`: `outgoing` is outbound, anything else inbound |
//! | `caller`, `called` | incoming first leg: its `remoteAddress` (else `remoteParty`) and its `localAddress` (else the call's `name`, the space); outgoing: the other way round |
//! | `dialled` | the first leg's `localAddress` |
//! | `parties` | each leg's `remoteAddress` (else `remoteParty`) as `device` and `displayName` as `name`, without repeats |
//! | `tenant` | the `callStart`'s `tenant` |
//! | `disposition` | `ANSWERED` or `NO ANSWER` |
//! | `recordings` | the `path` of every `recordingStart`, in order, without repeats |
//! | `cdr` | one row per record of the call, in `recordIndex` order (below) |
//! | `ring`, `hold`, `park`, `billsec`, `linkedid`, `transfers`, `records` | not used (0, `None` or empty) |
//!
//! A [`Leg`]: `uniqueid` = the leg id; `channel` = `remoteAddress` (else `remoteParty`);
//! `caller_num` = `remoteParty` (else `remoteAddress`); `caller_name` = `displayName`;
//! `exten` = `localAddress`; `start` = the `callLegStart` time, or the first record of the leg
//! (a leg known only from updates); `answer` = the first record with state `connected`; `end`
//! = the `callLegEnd` time, or the `callEnd` time for a leg still open when the call ended
//! (unknown, `None`, for a call flushed incomplete); `hangup_cause_text` = the `callLegEnd`
//! `reason`. CMS's own leg figures (`durationSeconds`, `activatedDuration`, alarms, codecs,
//! media usage) are in the leg's `callLegEnd` row of `cdr`.
//!
//! A `cdr` row maps names to values: `type`, `time`, `recordIndex`, `correlatorIndex`,
//! `numPreceedingRecordsMissing` and any other attribute of `<record>`; the main object's name
//! to its id (`call`, `callLeg`, `recording`, `streaming`); and every field by its path below
//! the main object (`name`, `rxVideo/codec`), attributes as `path@attribute`
//! (`alarm@type`). A repeated element gets `#2`, `#3`, ... after its name (`alarm#2@type`). A
//! field named like one of the record's own names is put under the object's name: a leg's
//! `<type>acano</type>` is `callLeg/type`, since `type` is the record's type. Any clash left
//! gets a `#2`, `#3`, ... suffix, so no value is lost.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use compact_str::{CompactString, ToCompactString, format_compact};
use serde::Serialize;

use crate::call::FlushReason;
#[cfg(doc)]
use crate::call::{Call, CallDirection, Leg, Party, Source, stable_id};
use crate::{Anomaly, Output};

mod anomaly;
mod build;
mod json;
mod xml;

pub use anomaly::{CMS_MAX_QUEUED_ANOMALIES, CmsAnomaly};
use build::build_cms_call;
pub use json::cms_record_api_json;

pub use xml::{
    CmsBatch, CmsXmlError, CmsXmlErrorKind, CmsXmlLimits, parse_cms_xml, parse_cms_xml_with,
    write_cms_batch, write_cms_records,
};

/// The `type` of a CMS record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum CmsRecordKind {
    /// `callStart`: a call (meeting) began.
    CallStart,
    /// `callEnd`: a call ended.
    CallEnd,
    /// `callLegStart`: a participant's leg began.
    CallLegStart,
    /// `callLegUpdate`: a leg changed (state, name, address, ...).
    CallLegUpdate,
    /// `callLegEnd`: a leg ended.
    CallLegEnd,
    /// `recordingStart`.
    RecordingStart,
    /// `recordingEnd`.
    RecordingEnd,
    /// `streamingStart`.
    StreamingStart,
    /// `streamingEnd`.
    StreamingEnd,
    /// Any other type: kept with its type name ([`CmsRecord::record_type`]) and its raw XML
    /// ([`CmsRecord::raw`]).
    Unknown,
}

impl CmsRecordKind {
    /// The kind of a `type` attribute value (case-sensitive, as CMS writes it).
    pub fn from_type(name: &str) -> Self {
        match name {
            "callStart" => Self::CallStart,
            "callEnd" => Self::CallEnd,
            "callLegStart" => Self::CallLegStart,
            "callLegUpdate" => Self::CallLegUpdate,
            "callLegEnd" => Self::CallLegEnd,
            "recordingStart" => Self::RecordingStart,
            "recordingEnd" => Self::RecordingEnd,
            "streamingStart" => Self::StreamingStart,
            "streamingEnd" => Self::StreamingEnd,
            _ => Self::Unknown,
        }
    }

    /// The `type` attribute value, or `None` for [`CmsRecordKind::Unknown`].
    pub const fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Self::CallStart => "callStart",
            Self::CallEnd => "callEnd",
            Self::CallLegStart => "callLegStart",
            Self::CallLegUpdate => "callLegUpdate",
            Self::CallLegEnd => "callLegEnd",
            Self::RecordingStart => "recordingStart",
            Self::RecordingEnd => "recordingEnd",
            Self::StreamingStart => "streamingStart",
            Self::StreamingEnd => "streamingEnd",
            Self::Unknown => return None,
        })
    }

    /// Whether this kind is about a call leg (`callLegStart`, `callLegUpdate`, `callLegEnd`).
    pub const fn is_leg(self) -> bool {
        matches!(
            self,
            Self::CallLegStart | Self::CallLegUpdate | Self::CallLegEnd
        )
    }
}

/// An attribute: name and (unescaped) value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CmsAttr<'a> {
    /// Its name as written.
    pub name: Cow<'a, str>,
    /// Its value, unescaped and normalised as XML 1.0 says (a literal tab or line break in an
    /// attribute value reads as a space).
    pub value: Cow<'a, str>,
}

impl CmsAttr<'_> {
    /// A copy that owns its strings.
    pub fn into_owned(self) -> CmsAttr<'static> {
        CmsAttr {
            name: Cow::Owned(self.name.into_owned()),
            value: Cow::Owned(self.value.into_owned()),
        }
    }
}

/// One element inside a `<record>` (see the module docs, "The tree of a record").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CmsNode<'a> {
    /// 0 for a child of `<record>` (the main object), 1 for its children, and so on. In a
    /// record's node list a node's depth is at most one more than the node before it (the first
    /// is 0), and its parent is the nearest node before it with a smaller depth.
    pub depth: u16,
    /// The element name as written (`call`, `callLeg`, `durationSeconds`, `rxVideo`, ...).
    pub name: Cow<'a, str>,
    /// Its attributes in order (`id`, `type`, `durationPercentage`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attrs: Vec<CmsAttr<'a>>,
    /// Its text, without the literal whitespace at both ends; empty for `<ownerName/>` and for
    /// elements that only hold other elements.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub text: Cow<'a, str>,
}

impl<'a> CmsNode<'a> {
    /// The value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_ref())
    }

    /// A copy that owns its strings.
    pub fn into_owned(self) -> CmsNode<'static> {
        CmsNode {
            depth: self.depth,
            name: Cow::Owned(self.name.into_owned()),
            attrs: self.attrs.into_iter().map(CmsAttr::into_owned).collect(),
            text: Cow::Owned(self.text.into_owned()),
        }
    }
}

/// One CMS CDR `<record>`, borrowed from the posted body where no unescaping was needed.
///
/// Produced by [`parse_cms_xml`] (and `cdr_sinks::http_cdr::parse`), consumed by
/// [`CmsAssembler::handle_record`] and written back by [`write_cms_records`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmsRecord<'a> {
    /// The kind of `record_type`.
    pub kind: CmsRecordKind,
    /// The `type` attribute as written (`callStart`, ..., or an unknown name).
    pub record_type: Cow<'a, str>,
    /// The `time` attribute as written (`2022-05-17T10:07:29Z`), if present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Cow<'a, str>>,
    /// `time` read as an RFC 3339 time and converted to UTC, when it reads as one. Derived from
    /// `time` by the parser ([`cms_time`]); the writer writes `time` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_utc: Option<DateTime<Utc>>,
    /// The `recordIndex` attribute: the record's number in its session, per receiver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_index: Option<u64>,
    /// The `correlatorIndex` attribute: the record's number in its session, the same for
    /// every receiver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlator_index: Option<u64>,
    /// The `numPreceedingRecordsMissing` attribute (CMS's spelling): how many records just
    /// before this one CMS discarded because it could not deliver them in time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preceding_missing: Option<u64>,
    /// Any other attribute of `<record>`, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attrs: Vec<CmsAttr<'a>>,
    /// Every element inside `<record>`, in document order (see [`CmsNode::depth`]).
    pub nodes: Vec<CmsNode<'a>>,
    /// For a record of an unknown type: the whole `<record ...>...</record>` element exactly as
    /// it was posted (the writer writes it back verbatim). `None` for the known types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<Cow<'a, str>>,
}

/// Reads a CMS `time` value: RFC 3339 (`2019-04-04T15:28:37Z`, or with an offset), in UTC.
pub fn cms_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl<'a> CmsRecord<'a> {
    /// A record of type `record_type` with no other content (its kind follows the type).
    pub fn new(record_type: impl Into<Cow<'a, str>>) -> Self {
        let record_type = record_type.into();
        Self {
            kind: CmsRecordKind::from_type(&record_type),
            record_type,
            time: None,
            time_utc: None,
            record_index: None,
            correlator_index: None,
            preceding_missing: None,
            attrs: Vec::new(),
            nodes: Vec::new(),
            raw: None,
        }
    }

    /// Sets `time` and the `time_utc` read from it.
    pub fn with_time(mut self, time: impl Into<Cow<'a, str>>) -> Self {
        let time = time.into();
        self.time_utc = cms_time(&time);
        self.time = Some(time);
        self
    }

    /// The main object: the first element inside `<record>` (`<call>`, `<callLeg>`,
    /// `<recording>`, `<streaming>`).
    pub fn object(&self) -> Option<&CmsNode<'a>> {
        self.nodes.first().filter(|n| n.depth == 0)
    }

    /// The main object's `id` attribute (the call, leg, recording or stream id).
    pub fn object_id(&self) -> Option<&str> {
        self.object().and_then(|o| o.attr("id"))
    }

    /// The node of a field of the main object by path: `"durationSeconds"`, `"rxVideo/codec"`
    /// (the first match where names repeat).
    pub fn field_node(&self, path: &str) -> Option<&CmsNode<'a>> {
        let mut want = path.split('/');
        let mut name = want.next()?;
        let mut depth: u16 = 1;
        // Only the main object's subtree: stop at the next node of depth 0.
        for node in self.nodes.iter().skip(1) {
            if node.depth == 0 || node.depth < depth {
                return None;
            }
            if node.depth == depth && node.name == name {
                match want.next() {
                    None => return Some(node),
                    Some(next) => {
                        name = next;
                        depth = depth.saturating_add(1);
                    }
                }
            }
        }
        None
    }

    /// The text of a field of the main object by path (see [`CmsRecord::field_node`]).
    pub fn field(&self, path: &str) -> Option<&str> {
        self.field_node(path).map(|n| n.text.as_ref())
    }

    /// The call id this record names: the main object's id for `callStart`/`callEnd` (an
    /// object named `call`), else its `<call>` field.
    pub fn call_id(&self) -> Option<&str> {
        match self.object() {
            Some(o) if o.name == "call" => o.attr("id"),
            Some(_) => self.field("call"),
            None => None,
        }
    }

    /// A copy that owns its strings.
    pub fn into_owned(self) -> CmsRecord<'static> {
        CmsRecord {
            kind: self.kind,
            record_type: Cow::Owned(self.record_type.into_owned()),
            time: self.time.map(|t| Cow::Owned(t.into_owned())),
            time_utc: self.time_utc,
            record_index: self.record_index,
            correlator_index: self.correlator_index,
            preceding_missing: self.preceding_missing,
            attrs: self.attrs.into_iter().map(CmsAttr::into_owned).collect(),
            nodes: self.nodes.into_iter().map(CmsNode::into_owned).collect(),
            raw: self.raw.map(|r| Cow::Owned(r.into_owned())),
        }
    }

    /// The record as one `cdr` row of a [`Call`] (see the module docs for the names).
    pub fn to_row(&self) -> BTreeMap<CompactString, CompactString> {
        let mut row = BTreeMap::new();
        let put = insert_unique;
        put(
            &mut row,
            CompactString::const_new("type"),
            &self.record_type,
        );
        if let Some(t) = &self.time {
            put(&mut row, CompactString::const_new("time"), t);
        }
        for (name, v) in [
            ("recordIndex", self.record_index),
            ("correlatorIndex", self.correlator_index),
            ("numPreceedingRecordsMissing", self.preceding_missing),
        ] {
            if let Some(v) = v {
                put(
                    &mut row,
                    CompactString::const_new(name),
                    &v.to_compact_string(),
                );
            }
        }
        for a in &self.attrs {
            put(&mut row, CompactString::from(a.name.as_ref()), &a.value);
        }
        // The path of each open ancestor below depth 0, with repeat suffixes; and per parent
        // path, how many times each child name was seen.
        let mut stack: Vec<CompactString> = Vec::new();
        let mut seen: BTreeMap<CompactString, u32> = BTreeMap::new();
        let mut object = CompactString::default();
        // A field named like one of the record's own names (a leg's `<type>` and the record's
        // `type`) is put under `object/path`.
        let put_field = |row: &mut BTreeMap<CompactString, CompactString>,
                         object: &str,
                         key: CompactString,
                         value: &str| {
            if let Entry::Vacant(e) = row.entry(key.clone()) {
                e.insert(CompactString::from(value));
            } else {
                insert_unique(row, format_compact!("{object}/{key}"), value);
            }
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let depth = usize::from(node.depth);
            if depth == 0 {
                stack.clear();
                seen.clear();
                object = CompactString::from(node.name.as_ref());
                let key = object.clone();
                for a in &node.attrs {
                    if a.name == "id" {
                        put(&mut row, key.clone(), &a.value);
                    } else {
                        put(&mut row, format_compact!("{key}@{}", a.name), &a.value);
                    }
                }
                if !node.text.is_empty() {
                    put(&mut row, format_compact!("{key}#text"), &node.text);
                }
                continue;
            }
            // Ancestors at depths 1..depth stay on the stack.
            stack.truncate(depth.saturating_sub(1));
            let parent = stack.last().cloned().unwrap_or_default();
            let plain = if parent.is_empty() {
                CompactString::from(node.name.as_ref())
            } else {
                format_compact!("{parent}/{}", node.name)
            };
            let count = seen.entry(plain.clone()).or_insert(0);
            *count = count.saturating_add(1);
            let path = if *count > 1 {
                format_compact!("{plain}#{count}")
            } else {
                plain
            };
            for a in &node.attrs {
                put_field(
                    &mut row,
                    &object,
                    format_compact!("{path}@{}", a.name),
                    &a.value,
                );
            }
            let has_children = self
                .nodes
                .get(i + 1)
                .is_some_and(|next| next.depth > node.depth);
            if !node.text.is_empty() || (!has_children && node.attrs.is_empty()) {
                put_field(&mut row, &object, path.clone(), &node.text);
            }
            stack.push(path);
        }
        row
    }
}

/// Inserts `key`, or `key#2`, `key#3`, ... when taken, so that no value is lost.
fn insert_unique(
    row: &mut BTreeMap<CompactString, CompactString>,
    key: CompactString,
    value: &str,
) {
    let mut n = 1u32;
    let mut candidate = key.clone();
    loop {
        if let Entry::Vacant(e) = row.entry(candidate) {
            e.insert(CompactString::from(value));
            return;
        }
        n = n.saturating_add(1);
        candidate = format_compact!("{key}#{n}");
    }
}

// ---------------------------------------------------------------------------------------------
// The assembler
// ---------------------------------------------------------------------------------------------

/// Settings of a [`CmsAssembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmsAssemblerConfig {
    /// The site name that goes into every call and its id.
    pub site: String,
    /// How long a call may wait for its next record before it is emitted incomplete. A meeting
    /// where nobody joins or leaves sends nothing; the default is 4 hours.
    pub idle_timeout: Duration,
    /// The most calls kept open at once; past it the least recently active one is emitted
    /// incomplete ([`FlushReason::Evicted`]).
    pub max_open_calls: usize,
    /// The most records kept per call; further records of the call (except its `callEnd`) are
    /// dropped and reported ([`CmsAnomaly::TooManyRecords`]).
    pub max_records_per_call: usize,
    /// How many emitted calls are remembered (with their legs, recordings and streams), so
    /// that their later records are recognised as late.
    pub remember_closed: usize,
}

impl Default for CmsAssemblerConfig {
    fn default() -> Self {
        Self {
            site: String::new(),
            idle_timeout: Duration::from_secs(4 * 3600),
            max_open_calls: 100_000,
            max_records_per_call: 100_000,
            remember_closed: 10_000,
        }
    }
}

/// Counters since the assembler was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CmsStats {
    /// Records handled.
    pub records: u64,
    /// Calls emitted complete.
    pub complete: u64,
    /// Calls emitted incomplete (any [`FlushReason`]).
    pub incomplete: u64,
    /// Records dropped because their `recordIndex` was already held for their call.
    pub duplicates: u64,
    /// Records dropped because their call had been emitted complete.
    pub late: u64,
    /// Records dropped because no call could be found for them.
    pub unattached: u64,
    /// Records dropped over [`CmsAssemblerConfig::max_records_per_call`].
    pub over_limit: u64,
    /// Calls started by a record that was not a `callStart`.
    pub provisional: u64,
}

/// A record held for an open call, with its arrival number.
#[derive(Debug)]
struct Held {
    seq: u64,
    record: CmsRecord<'static>,
}

#[derive(Debug)]
struct OpenCall {
    first_seq: u64,
    /// Bumped on every record, so stale entries of the deadline queue can be told apart.
    generation: u64,
    part: u32,
    records: Vec<Held>,
    /// The `recordIndex`es held.
    indexes: BTreeSet<u64>,
    /// (object name, id) of the legs, recordings and streams routed to this call (and to its
    /// earlier parts).
    objects: Vec<(CompactString, CompactString)>,
}

/// What is remembered of an emitted call.
#[derive(Debug)]
struct Closed {
    complete: bool,
    next_part: u32,
    /// The `recordIndex`es of its records, sorted.
    indexes: Vec<u64>,
    objects: Vec<(CompactString, CompactString)>,
}

/// Groups CMS records into meetings: a sans-IO state machine (no IO, no clock). See the module
/// docs of `call_assembler::cms` ([`CmsRecord`] and the mapping to [`Call`]).
///
/// # Run loop
///
/// ```no_run
/// # use std::time::Instant;
/// # use call_assembler::{CmsAssembler, CmsAssemblerConfig, Output, parse_cms_xml};
/// # fn next_post() -> Option<(Instant, Vec<u8>)> { None }
/// # fn deliver(_: call_assembler::Call) {}
/// let mut asm = CmsAssembler::new(CmsAssemblerConfig::default());
/// loop {
///     // Wait for a POST or for `asm.poll_timeout()`, whichever comes first.
///     match next_post() {
///         Some((now, body)) => match parse_cms_xml(&body) {
///             Ok(batch) => {
///                 for record in &batch.records {
///                     asm.handle_record(now, record);
///                 }
///             }
///             Err(e) => eprintln!("bad post: {e}"),
///         },
///         None => asm.handle_timeout(Instant::now()),
///     }
///     // Drain the outputs after every `handle_*` call, then re-read `poll_timeout`.
///     while let Some(out) = asm.poll_output() {
///         match out {
///             Output::Call(call) => deliver(call),
///             Output::Anomaly(anomaly) => eprintln!("{anomaly:?}"),
///             _ => {}
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct CmsAssembler {
    config: CmsAssemblerConfig,
    open: BTreeMap<CompactString, OpenCall>,
    /// (deadline, call id, generation), in deadline order because `now` never goes back and
    /// the idle timeout is fixed.
    deadlines: VecDeque<(Instant, CompactString, u64)>,
    /// (object name, object id) -> call id, for open and remembered calls.
    routes: BTreeMap<(CompactString, CompactString), CompactString>,
    closed: BTreeMap<CompactString, Closed>,
    closed_order: VecDeque<CompactString>,
    outputs: VecDeque<Output>,
    anomalies: VecDeque<CmsAnomaly>,
    last_now: Option<Instant>,
    seq: u64,
    stats: CmsStats,
}

impl CmsAssembler {
    /// An empty assembler.
    pub fn new(config: CmsAssemblerConfig) -> Self {
        Self {
            config,
            open: BTreeMap::new(),
            deadlines: VecDeque::new(),
            routes: BTreeMap::new(),
            closed: BTreeMap::new(),
            closed_order: VecDeque::new(),
            outputs: VecDeque::new(),
            anomalies: VecDeque::new(),
            last_now: None,
            seq: 0,
            stats: CmsStats::default(),
        }
    }

    /// Feeds one record (of a parsed batch, in batch order). `now` is when it was received
    /// (monotonic; a `now` earlier than one seen before is treated as that one). Afterwards drain
    /// [`CmsAssembler::poll_output`] and re-read
    /// [`CmsAssembler::poll_timeout`].
    pub fn handle_record(&mut self, now: Instant, record: &CmsRecord<'_>) {
        let now = crate::clamp_now(&mut self.last_now, now);
        self.stats.records += 1;
        let object = record.object().filter(|o| o.name != "call").and_then(|o| {
            Some((
                CompactString::from(o.name.as_ref()),
                CompactString::from(o.attr("id")?),
            ))
        });
        let named = record.call_id().map(CompactString::from);
        let call_id = match (&named, &object) {
            (Some(id), _) => Some(id.clone()),
            (None, Some(key)) => self.routes.get(key).cloned(),
            (None, None) => None,
        };
        let Some(call_id) = call_id else {
            self.unattached(record);
            return;
        };
        if let Some(closed) = self.closed.get(&call_id) {
            let dup = record
                .record_index
                .is_some_and(|i| closed.indexes.binary_search(&i).is_ok());
            if dup {
                self.duplicate(&call_id, record);
                return;
            }
            if closed.complete {
                self.stats.late += 1;
                self.report(CmsAnomaly::Late {
                    call_id,
                    record_type: CompactString::from(record.record_type.as_ref()),
                    record_index: record.record_index,
                });
                return;
            }
        }
        if let Some(open) = self.open.get(&call_id) {
            let dup = match record.record_index {
                Some(i) => open.indexes.contains(&i),
                None => open.records.iter().any(|h| h.record == *record),
            };
            if dup {
                self.duplicate(&call_id, record);
                return;
            }
            if open.records.len() >= self.config.max_records_per_call
                && record.kind != CmsRecordKind::CallEnd
            {
                self.stats.over_limit += 1;
                self.report(CmsAnomaly::TooManyRecords {
                    call_id,
                    record_index: record.record_index,
                });
                return;
            }
        } else {
            if record.kind == CmsRecordKind::Unknown {
                // An unknown record only joins a call that is open.
                self.unattached(record);
                return;
            }
            if self.open.len() >= self.config.max_open_calls.max(1) {
                self.evict_oldest();
            }
            // A call flushed incomplete before goes on as its next part (and keeps its routes).
            let (part, objects) = match self.closed.remove(&call_id) {
                Some(c) => {
                    self.closed_order.retain(|k| *k != call_id);
                    (c.next_part, c.objects)
                }
                None => (0, Vec::new()),
            };
            if record.kind != CmsRecordKind::CallStart {
                self.stats.provisional += 1;
            }
            self.open.insert(
                call_id.clone(),
                OpenCall {
                    first_seq: self.seq.wrapping_add(1),
                    generation: 0,
                    part,
                    records: Vec::new(),
                    indexes: BTreeSet::new(),
                    objects,
                },
            );
        }
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let deadline = now.checked_add(self.config.idle_timeout).unwrap_or(now);
        if let Some(key) = object {
            let routed = self.routes.insert(key.clone(), call_id.clone());
            if routed.as_ref() != Some(&call_id) {
                if let Some(open) = self.open.get_mut(&call_id) {
                    open.objects.push(key);
                }
            }
        }
        let Some(open) = self.open.get_mut(&call_id) else {
            return;
        };
        if let Some(i) = record.record_index {
            open.indexes.insert(i);
        }
        open.records.push(Held {
            seq,
            record: record.clone().into_owned(),
        });
        open.generation = seq;
        if record.kind == CmsRecordKind::CallEnd {
            if let Some(open) = self.open.remove(&call_id) {
                self.emit(call_id, open, None);
            }
            self.drop_stale_deadlines();
            return;
        }
        self.deadlines.push_back((deadline, call_id, seq));
        self.drop_stale_deadlines();
        if self.deadlines.len() > 2 * self.open.len() + 64 {
            let open = &self.open;
            self.deadlines
                .retain(|(_, k, g)| open.get(k).is_some_and(|c| c.generation == *g));
        }
    }

    /// Emits every call whose idle timeout has passed at `now`. Safe to call at any time; a
    /// call before [`CmsAssembler::poll_timeout`] does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = crate::clamp_now(&mut self.last_now, now);
        while let Some((deadline, key, _)) = self.deadlines.front() {
            if *deadline > now {
                break;
            }
            let key = key.clone();
            self.deadlines.pop_front();
            if let Some(open) = self.open.remove(&key) {
                self.emit(key, open, Some(FlushReason::IdleTimeout));
            }
            self.drop_stale_deadlines();
        }
    }

    /// Emits every open call as incomplete ([`FlushReason::EndOfInput`]), oldest first: at the
    /// end of a replayed file, or when the source is going away for good.
    pub fn flush(&mut self, now: Instant) {
        crate::clamp_now(&mut self.last_now, now);
        let mut open: Vec<(CompactString, OpenCall)> =
            std::mem::take(&mut self.open).into_iter().collect();
        open.sort_by_key(|(_, c)| c.first_seq);
        self.deadlines.clear();
        for (key, c) in open {
            self.emit(key, c, Some(FlushReason::EndOfInput));
        }
    }

    /// When [`CmsAssembler::handle_timeout`] should next be called, or `None` when no call is
    /// open. Changes after every `handle_*` call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.front().map(|d| d.0)
    }

    /// The next output, or `None`: the calls emitted, then the surprises
    /// ([`Output::Anomaly`] with [`Anomaly::Cms`]). Drain after every `handle_*` call; at most
    /// one surprise is queued per record, and at most [`CMS_MAX_QUEUED_ANOMALIES`] wait (the
    /// oldest unread ones are dropped; the counters in [`CmsStats`] still count them).
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front().or_else(|| {
            self.anomalies
                .pop_front()
                .map(|anomaly| Output::Anomaly(Anomaly::Cms { anomaly }))
        })
    }

    /// Calls waiting for more records.
    pub fn open_calls(&self) -> usize {
        self.open.len()
    }

    /// Whether nothing is open and nothing (call or anomaly) waits to be polled.
    pub fn is_idle(&self) -> bool {
        self.open.is_empty() && self.outputs.is_empty() && self.anomalies.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> CmsStats {
        self.stats
    }

    /// The settings.
    pub fn config(&self) -> &CmsAssemblerConfig {
        &self.config
    }

    /// Queues an anomaly; past [`CMS_MAX_QUEUED_ANOMALIES`] unread ones the oldest is dropped.
    fn report(&mut self, anomaly: CmsAnomaly) {
        if self.anomalies.len() >= CMS_MAX_QUEUED_ANOMALIES {
            self.anomalies.pop_front();
        }
        self.anomalies.push_back(anomaly);
    }

    fn unattached(&mut self, record: &CmsRecord<'_>) {
        self.stats.unattached += 1;
        self.report(CmsAnomaly::Unattached {
            record_type: CompactString::from(record.record_type.as_ref()),
            object_id: CompactString::from(record.object_id().unwrap_or_default()),
            record_index: record.record_index,
        });
    }

    fn duplicate(&mut self, call_id: &str, record: &CmsRecord<'_>) {
        self.stats.duplicates += 1;
        self.report(CmsAnomaly::Duplicate {
            call_id: CompactString::from(call_id),
            record_type: CompactString::from(record.record_type.as_ref()),
            record_index: record.record_index,
        });
    }

    fn is_live(&self, key: &str, generation: u64) -> bool {
        self.open
            .get(key)
            .is_some_and(|c| c.generation == generation)
    }

    /// Keeps the front of the deadline queue a live entry, so `poll_timeout` is exact.
    fn drop_stale_deadlines(&mut self) {
        while let Some((_, key, g)) = self.deadlines.front() {
            if self.is_live(key, *g) {
                break;
            }
            self.deadlines.pop_front();
        }
    }

    fn evict_oldest(&mut self) {
        self.drop_stale_deadlines();
        if let Some((_, key, _)) = self.deadlines.pop_front() {
            if let Some(open) = self.open.remove(&key) {
                self.emit(key, open, Some(FlushReason::Evicted));
            }
            self.drop_stale_deadlines();
        }
    }

    fn emit(&mut self, call_id: CompactString, open: OpenCall, flushed: Option<FlushReason>) {
        let mut records = open.records;
        records.sort_by_key(|h| (h.record.record_index.unwrap_or(u64::MAX), h.seq));
        let indexes: Vec<u64> = open.indexes.into_iter().collect();
        let records: Vec<CmsRecord<'static>> = records.into_iter().map(|h| h.record).collect();
        let call = build_cms_call(&self.config.site, &call_id, open.part, &records, flushed);
        if call.complete {
            self.stats.complete += 1;
        } else {
            self.stats.incomplete += 1;
        }
        self.closed.insert(
            call_id.clone(),
            Closed {
                complete: call.complete,
                next_part: open.part.saturating_add(1),
                indexes,
                objects: open.objects,
            },
        );
        self.closed_order.push_back(call_id);
        while self.closed_order.len() > self.config.remember_closed {
            let Some(old) = self.closed_order.pop_front() else {
                break;
            };
            if let Some(c) = self.closed.remove(&old) {
                for key in c.objects {
                    if self.routes.get(&key) == Some(&old) && !self.open.contains_key(&old) {
                        self.routes.remove(&key);
                    }
                }
            }
        }
        self.outputs.push_back(Output::Call(call));
    }
}
