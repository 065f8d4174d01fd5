//! Sans-IO assembly of call records into completed calls, the [`Call`] model every source
//! and sink shares, and the [`feed`]s an embedder runs.
//!
//! Two assemblers: [`SmdrAssembler`] (IP Office SMDR records) and [`AmiAssembler`] (Asterisk AMI
//! channel, `Cdr` and `CEL` events, or CEL rows from a database or CSV file as [`CelRow`]), plus
//! [`CmsAssembler`] for Cisco Meeting Server CDRs. A predictive dialler's CDRs are whole calls
//! already: [`dialler_call`] checks one and builds its [`Call`]. The [`csv`] module reads and
//! writes the CSV of Asterisk's `cdr_csv` and `cel_custom` backends.
//!
//! Phone systems report a call in pieces: IP Office writes one SMDR record per call segment,
//! interleaved with other calls' records and in call-*end* order. An assembler collects the
//! pieces and emits one [`Call`] when the last piece arrives, or an incomplete one when it never
//! does (idle timeout, PBX restart, a cap on open calls, end of input), or in parts when it
//! outgrows a cap on records per call.
//!
//! # Feeds: what an embedder runs
//!
//! A [`feed`] wraps an assembler with everything between a source and a durable store: framing
//! and parsing the source's input (SMDR bytes, AMI messages, CEL/CDR rows, CMS batches, dialler
//! items), the journal of open calls, restore after a crash, the source's resume state,
//! rejects, and (for Asterisk) attaching and reconciling the CDR. It hands out one
//! [`feed::Commit`] at a time. An embedder's whole program is:
//!
//! 1. read from the source and call `feed.handle_input(now, input)` (or
//!    `feed.handle_timeout(now)` when [`feed::Feed::poll_timeout`] passes);
//! 2. log or count the [`feed::Event`]s from [`feed::Feed::poll_event`];
//! 3. commit [`feed::Feed::take_commit`] to a store in one transaction (`cdr_sinks::outbox`
//!    takes it as it is), then acknowledge the input upstream;
//! 4. wake the delivery engine.
//!
//! At start, build the feed with its `restore` constructor from what the store kept (the
//! journal with commit times and the states, [`feed::Restored`]): calls open at a crash come
//! back whole, and none goes out twice. The relays in `bins` are exactly that plus sockets,
//! settings and a web page.
//!
//! # What it does not do
//!
//! No IO, no clock, no async runtime. Time is an argument of every `handle_*` call (a monotonic
//! [`std::time::Instant`]); wall-clock times in calls come from the records themselves. The API
//! follows quinn-proto and str0m:
//!
//! 1. feed input with `handle_record(now, &record)` (and `handle_timeout(now)` when the deadline
//!    from `poll_timeout()` passes);
//! 2. drain `poll_output()` until it returns `None` (calls, and [`Output::Anomaly`] for
//!    surprises);
//! 3. read `poll_timeout()` again and sleep until then or until more input comes.
//!
//! Outputs come in a deterministic order: replaying the same input with the same `now` values
//! gives the same calls in the same order.
//!
//! # Example
//!
//! An inbound call transferred to voicemail, which IP Office reports as two SMDR records (the
//! first with Continuation 1, the last with 0). One [`Call`] comes out when its last record
//! arrives:
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use call_assembler::{CallDirection, Output, SmdrAssembler, SmdrAssemblerConfig};
//! use smdr_parse::SmdrRecord;
//!
//! let lines: [&[u8]; 2] = [
//!     b"2008/06/28 09:30:57,00:00:13,7,01707392200,I,299999,299999,,0,1000014160,1,\
//!       E4750,John Smith,T9002,LINE 1.2,11,0\r\n",
//!     b"2008/06/28 09:30:57,00:00:21,0,01707392200,I,299999,299999,,0,1000014160,0,\
//!       V9502,VM Channel 2,T9002,LINE 1.2,0,0\r\n",
//! ];
//! let config = SmdrAssemblerConfig { site: "hq".into(), ..SmdrAssemblerConfig::default() };
//! let mut asm = SmdrAssembler::new(config);
//! // Any monotonic time will do: the assembler reads no clock, `now` is an argument.
//! let start = Instant::now();
//! let mut calls = Vec::new();
//! for (i, line) in (0u64..).zip(lines) {
//!     let record = SmdrRecord::parse(line)?;
//!     asm.handle_record(start + Duration::from_secs(i), &record);
//!     while let Some(out) = asm.poll_output() {
//!         if let Output::Call(call) = out {
//!             calls.push(call);
//!         }
//!     }
//!     // After the first record the call waits for its last one (or for its idle timeout).
//!     assert_eq!(calls.len() as u64, i);
//! }
//! let [call] = calls.as_slice() else { unreachable!("one call") };
//! assert!(call.complete);
//! assert_eq!(call.call_id, "1000014160");
//! assert_eq!(call.direction, CallDirection::Inbound);
//! assert_eq!(call.caller, "01707392200");
//! assert_eq!(call.records.len(), 2);
//! assert_eq!((call.ring, call.billsec, call.hold), (7, Some(34), 11));
//! assert_eq!(call.duration, 7 + 13 + 11 + 21);
//! assert!(asm.is_idle());
//! # Ok::<(), smdr_parse::ParseError>(())
//! ```
//!
//! A feed does the same with the journal and the restart around it. The first record of that
//! call is journaled in the first commit; the process "crashes" after it; a new feed restored
//! from what was committed finishes the call with the second record:
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use call_assembler::SmdrAssemblerConfig;
//! use call_assembler::feed::{Feed, Restored, SmdrFeed};
//!
//! let first = b"2008/06/28 09:30:57,00:00:13,7,01707392200,I,299999,299999,,0,1000014160,1,\
//!     E4750,John Smith,T9002,LINE 1.2,11,0\r\n";
//! let last = b"2008/06/28 09:30:57,00:00:21,0,01707392200,I,299999,299999,,0,1000014160,0,\
//!     V9502,VM Channel 2,T9002,LINE 1.2,0,0\r\n";
//! let now = Instant::now();
//! // What a store keeps: here a `Restored` that every commit is applied to.
//! let mut store = Restored::default();
//!
//! let mut feed = SmdrFeed::new("smdr", SmdrAssemblerConfig::default(), now);
//! feed.handle_input(now, first.to_vec());
//! let commit = feed.take_commit();
//! assert!(commit.calls.is_empty());
//! assert_eq!(commit.journal_add.len(), 1);
//! store.apply(&commit, 0);
//! drop(feed); // a crash: what was not committed is gone
//!
//! let later = now + Duration::from_secs(5);
//! let mut feed = SmdrFeed::restore("smdr", SmdrAssemblerConfig::default(), later, &store);
//! assert_eq!(feed.open_calls(), 1);
//! feed.handle_input(later, last.to_vec());
//! let commit = feed.take_commit();
//! assert_eq!(commit.calls.len(), 1);
//! assert!(commit.calls[0].complete);
//! assert_eq!(commit.calls[0].records.len(), 2);
//! // The call's journal entries go with the commit that holds the call.
//! assert_eq!(commit.journal_remove.len(), 1);
//! ```
#![deny(missing_docs)]
#![deny(clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod asterisk;
mod call;
mod cms;
pub mod csv;
mod dialler;
pub mod feed;
#[cfg(feature = "schema")]
mod schema;
mod smdr;
mod zone;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

pub use asterisk::{
    AmiAssembler, AmiAssemblerConfig, AmiStats, CelColumns, CelColumnsError, CelRow, RuleField,
    TenantRule,
};
pub use call::{
    Call, CallDirection, CallUpdate, FlushReason, ID_NAMESPACE, Leg, Party, Source, Transfer,
    UpdateEvent, iso_timestamp, stable_id,
};
pub use cms::{
    CMS_MAX_QUEUED_ANOMALIES, CmsAnomaly, CmsAssembler, CmsAssemblerConfig, CmsAttr, CmsBatch,
    CmsNode, CmsRecord, CmsRecordKind, CmsStats, CmsXmlError, CmsXmlErrorKind, CmsXmlLimits,
    cms_record_api_json, cms_time, parse_cms_xml, parse_cms_xml_with, write_cms_batch,
    write_cms_records,
};
pub use dialler::{DEFAULT_MAX_ITEM, DIALLER_FIELDS, DiallerError, dialler_call};
#[cfg(feature = "schema")]
pub use schema::call_schema;

/// The name and version of the call body's JSON Schema: its `title` and the name of its file
/// (`schema/cdr-relay.call.v1.json`), for headers that name what a body is (e.g. a NATS
/// message's). Available without the `schema` feature, which `call_schema` needs.
pub const CALL_SCHEMA_NAME: &str = "cdr-relay.call.v1";

/// The `$id` of the call body's JSON Schema.
pub const CALL_SCHEMA_ID: &str = "urn:cdr-relay:schema:cdr-relay.call.v1";
pub use smdr::{OpenCallState, SmdrAssembler, SmdrAssemblerConfig, SmdrAssemblerState, SmdrStats};
pub use zone::{ParseZoneError, PbxZone};

/// What an assembler hands back from `poll_output`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // nearly every output is a call; boxing would add an allocation
pub enum Output {
    /// A call, complete or flushed incomplete (see [`Call::complete`]).
    Call(Call),
    /// Something surprising in the input; counted, and the input goes on.
    Anomaly(Anomaly),
}

/// Surprising input, reported instead of failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Anomaly {
    /// The PBX restarted: Call IDs began again. Calls open before it were flushed.
    PbxRestart {
        /// The new boot epoch.
        epoch: u32,
        /// The Call ID that revealed the restart.
        call_id: u64,
        /// Its call start.
        call_start: NaiveDateTime,
    },
    /// A record arrived for a call that was already emitted incomplete; it starts the call's
    /// next part ([`Call::part`]).
    LateRecord {
        /// Its Call ID.
        call_id: u64,
        /// Its call start.
        call_start: NaiveDateTime,
        /// The part it starts.
        part: u32,
    },
    /// SMDR: a record looked like a PBX restart (a low Call ID that started after the highest
    /// call) with nothing to confirm it: not right after a reconnect, and not (yet) a run of
    /// such records. It was handled as its own call and no open call was flushed.
    UnconfirmedRestart {
        /// Its Call ID.
        call_id: u64,
        /// Its call start.
        call_start: NaiveDateTime,
    },
    /// SMDR: a call reached the record limit
    /// ([`SmdrAssemblerConfig::max_records_per_call`]): the part so far was emitted incomplete
    /// ([`FlushReason::RecordLimit`]) and this record starts part `part`.
    CallSplit {
        /// Its Call ID.
        call_id: u64,
        /// Its call start.
        call_start: NaiveDateTime,
        /// The part the record starts.
        part: u32,
    },
    /// A record identical to one already held for its open call was dropped.
    DuplicateRecord {
        /// Its Call ID.
        call_id: u64,
        /// Its call start.
        call_start: NaiveDateTime,
    },
    /// Asterisk: an event about a channel of a call that was already emitted (a `Cdr` or
    /// `Hangup` later than the grace period, any event of a channel whose call was flushed or
    /// resynced); it was dropped.
    AmiLateEvent {
        /// The event name (`Cdr`, `Hangup`, ...).
        event: String,
        /// The channel's Uniqueid.
        uniqueid: String,
    },
    /// Asterisk: a teardown event (`Hangup`, `Cdr`, ...) for a channel never seen before (for
    /// example one that was up before the connection); it was dropped.
    AmiUnknownChannel {
        /// The event name.
        event: String,
        /// The channel's Uniqueid.
        uniqueid: String,
    },
    /// Cisco Meeting Server: a record was dropped (see [`CmsAnomaly`]).
    Cms {
        /// What was surprising.
        anomaly: CmsAnomaly,
    },
}

/// Time that goes backwards is clamped to the latest `now` seen (STYLE.md: never panic, never
/// move a deadline earlier because a caller's clock stepped back).
pub(crate) fn clamp_now(
    last: &mut Option<std::time::Instant>,
    now: std::time::Instant,
) -> std::time::Instant {
    let now = last.map_or(now, |l| l.max(now));
    *last = Some(now);
    now
}
