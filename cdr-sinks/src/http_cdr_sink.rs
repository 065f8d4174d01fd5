//! The HTTP-CDR sink: completed calls POSTed as Cisco Meeting Server CDR records
//! (`<records session=.. callBridge=..>` batches, see [`crate::http_cdr`]) to one to four
//! receivers, through the outbox.
//!
//! # What a call becomes
//!
//! Each call becomes these records, `recordIndex` increasing in this order:
//!
//! 1. `callStart` at the call's start: `<call id=..>` with `<name>` (a CMS call's own space
//!    name; for other sources the number called) and `<tenant>` when the call has one;
//! 2. per leg, a `callLegStart` at the leg's start (`<callLeg id=..>` with `displayName`,
//!    `remoteParty`, `remoteAddress`, `localAddress` when not empty, `direction` `incoming` or
//!    `outgoing`, and `<call>` naming the call) and a `callLegEnd` at its end (`reason`,
//!    `durationSeconds` from the leg's times); these are sorted by time (a leg's start before
//!    its end);
//! 3. `callEnd` at the call's end: `callLegsCompleted` (the legs written) and `durationSeconds`
//!    (the call's [`Call::duration`]).
//!
//! The call id is the CMS call id for a call that came from CMS (its first part; a later
//! [`Call::part`] would be a late record of a closed call to the next receiver), and the call's
//! stable [`Call::id`] otherwise. The legs:
//!
//! * Asterisk and CMS calls: [`Call::legs`]; `remoteAddress` is the channel (CMS: the
//!   participant's address), `remoteParty` the caller id number, `displayName` the caller id
//!   name, `localAddress` the extension, `direction` `outgoing` for a channel that was dialled
//!   (and for the first leg of an outbound CMS call), `reason` the hangup cause text
//!   (`callEnded` when there is none). A leg without an end ends with the call.
//! * SMDR calls: one leg per record (call segment), in order: the segments follow each other
//!   from the call's start, each lasting its ring, connected, hold and park time; an inbound
//!   segment has the caller as `remoteAddress` and the number called as `localAddress`, an
//!   outbound one the other way round.
//! * Calls with neither (dialler): one leg from the call's caller and called number.
//!
//! Leg ids are GUIDs, as CMS's are: a leg whose id already is one keeps it (CMS legs); any
//! other leg gets a UUID v5 derived from the call id and the leg's Asterisk uniqueid (SMDR:
//! its record number), the same on every run.
//!
//! **Times** are written in RFC 3339 UTC (`2018-01-05T09:12:44Z`). A call that carries its
//! start in UTC (`start_utc`, which every call the relays assemble now has: `PBX_TZ` for SMDR,
//! Asterisk's epoch times) is taken to UTC by its own offset (`start_time` minus `start_utc`),
//! its legs' local times too. A body stored before that field existed falls back to
//! [`HttpCdrConfig::utc_offset_secs`] (how far the PBX's clock is ahead of UTC; the UTC time
//! written is the local time minus the offset; 0 writes local times as if they were UTC). CMS
//! calls are in UTC already and are never shifted.
//!
//! Progress records of calls still going on (progressive mode) are not sent: CMS records
//! describe a call once it is over. They count as delivered.
//!
//! # Record indexes
//!
//! A receiver drops a record whose (`session`, `recordIndex`) it has already seen, and a CMS
//! style receiver (ours included) drops every record whose index is not above the highest it
//! has taken for the session. So indexes must be the same on every retry and increase in the
//! order calls are delivered. They are derived from what is durable, the delivery's arrival
//! number in the outbox ([`Outgoing::seq`], which grows with every committed call):
//!
//! `recordIndex = seq × 64 + k`, where `k` is the record's number within its call (0 for the
//! `callStart`). A call has at most [`RECORDS_PER_CALL`] records: 2 per leg plus `callStart`
//! and `callEnd`, so at most [`MAX_LEGS`] legs are written; the legs after the 31st are left
//! out (a warning is logged) and `callLegsCompleted` counts the legs written.
//!
//! * A retry sends exactly the same (`session`, `recordIndex`) pairs for a call, however the
//!   deliveries are grouped into rounds and posts.
//! * The batched delivery path keeps the outbox's order through outages (a failed round is
//!   retried from its oldest call), and the records of one round are sorted by index before
//!   they are posted, so indexes increase from post to post.
//! * `correlatorIndex` is the same number (it is the same for every receiver).
//! * The numbering has gaps: between calls (a call with 3 records leaves 61 numbers unused),
//!   for progress records and for deliveries dead-lettered. Receivers treat `recordIndex` as
//!   an identity, not a count (CMS itself numbers per receiver with gaps);
//!   `numPreceedingRecordsMissing` is never sent.
//! * The indexes belong to the outbox file: a new outbox starts again from small numbers,
//!   which a receiver would take for duplicates. Give a new outbox a new
//!   [`HttpCdrConfig::session`] (and give each relay its own session).
//! * If the relay's clock steps back while deliveries wait, the outbox may hand a later call
//!   out before an earlier one; a CMS-style receiver would drop the earlier call's records.
//!   The sink logs a warning when a round holds a call older than one it already delivered.
//!
//! # Posts and receivers
//!
//! A round's records go to every URL in the same posts (`Content-Type: text/xml`, the
//! configured `Authorization` as-is), at most [`MAX_RECORDS_PER_POST`] records a post, the
//! posts of one URL one after another in index order, the URLs at the same time. A 2xx answer
//! means the receiver took the post. The round is delivered when every URL took every post;
//! otherwise the whole round stays pending and is sent again, in order, to all URLs (the
//! receivers that took it already drop the duplicates by session and index): one sink, every
//! listed receiver gets every call.
//!
//! Failures are classified as the webhook does: connection failures and timeouts are
//! *unreachable* (the sink backs off; no attempt is counted), HTTP 408, 429 and 5xx and a
//! connection lost mid-request are retried (attempts are counted), 401, 403 and 410 pause the
//! sink, any other 4xx dead-letters the round. With several URLs, the failure that weighs most
//! decides (dead letter, then counted retry, then pause, then unreachable), and its message
//! names every URL that failed.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::webhook::{classify_status, classify_transport, now_unix, parse_retry_after};

use bytes::Bytes;
use call_assembler::{Call, CallDirection, Source, UpdateEvent, stable_id};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, Uri};

use crate::SinkError;
use crate::http_cdr::{CmsAttr, CmsNode, CmsRecord, write_records};
use crate::sink::{BATCHED, BatchResult, Drive, Outgoing, Sink};
use crate::webhook::{HttpClient, build_client};

/// Record numbers reserved for each call: `recordIndex = seq × RECORDS_PER_CALL + k`.
pub const RECORDS_PER_CALL: u64 = 64;

/// The most legs written per call (`callStart`, `callEnd` and two records per leg fit in
/// [`RECORDS_PER_CALL`]).
pub const MAX_LEGS: usize = 31;

/// The most records in one POST (receivers bound their bodies: ours takes 10,000 records and
/// 8 MiB); a round with more goes as several posts, in order.
pub const MAX_RECORDS_PER_POST: usize = 1000;

/// The most receiver URLs of one sink.
pub const MAX_URLS: usize = 4;

/// Settings of an [`HttpCdrSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCdrConfig {
    /// Where to POST: 1 to 4 URLs, each `http://` or `https://`; every one gets every record.
    pub urls: Vec<String>,
    /// The `Authorization` header value, sent as-is to every URL.
    pub authorization: Option<String>,
    /// Extra trusted root certificates (PEM), for receivers with a private CA (the Mozilla
    /// roots are trusted too).
    pub ca_file: Option<PathBuf>,
    /// Time allowed for connecting and then for each whole request, response included.
    pub timeout: Duration,
    /// The `session` of every batch (a GUID): with `recordIndex` it identifies a record. Keep
    /// it for the life of the outbox file; use a new one with a new outbox (see the module
    /// docs, "Record indexes"). Must not be empty.
    pub session: String,
    /// The `callBridge` attribute of every batch, if any.
    pub call_bridge: Option<String>,
    /// How far the PBX's local clock is ahead of UTC, in seconds (`3600` for UTC+1), for calls
    /// that do not carry their own UTC start (`start_utc`; bodies stored by older versions):
    /// their SMDR and Asterisk times are written as local time minus this. 0 writes them as if
    /// they were UTC. Less than a day either way.
    pub utc_offset_secs: i32,
}

impl Default for HttpCdrConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            authorization: None,
            ca_file: None,
            timeout: Duration::from_secs(30),
            session: String::new(),
            call_bridge: None,
            utc_offset_secs: 0,
        }
    }
}

impl HttpCdrConfig {
    /// Settings for posting to `url` in `session`, with the defaults otherwise (no
    /// `Authorization`, no extra CA, a 30 s timeout, no `callBridge`, times as if UTC).
    pub fn new(url: impl Into<String>, session: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            session: session.into(),
            ..Self::default()
        }
    }
}

/// One receiver.
#[derive(Clone)]
struct Target {
    uri: Uri,
    /// The URL for messages (without any user and password).
    shown: String,
}

/// POSTs calls as CMS CDR records to one to four receivers (see the module docs).
pub struct HttpCdrSink {
    client: HttpClient,
    targets: Vec<Target>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    session: String,
    call_bridge: Option<String>,
    utc_offset_secs: i32,
    /// The highest `seq` delivered by this sink so far (for the out-of-order warning).
    highest_sent: AtomicI64,
}

impl std::fmt::Debug for HttpCdrSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.targets.iter().map(|t| t.shown.as_str()).collect();
        f.debug_struct("HttpCdrSink")
            .field("urls", &urls)
            .field("session", &self.session)
            .field("call_bridge", &self.call_bridge)
            .field("utc_offset_secs", &self.utc_offset_secs)
            .finish_non_exhaustive()
    }
}

impl HttpCdrSink {
    /// A sink for `config`: checks the URLs, the session, the offset, the `Authorization`
    /// value and the CA file now.
    pub fn new(config: &HttpCdrConfig) -> Result<Self, SinkError> {
        if config.urls.is_empty() || config.urls.len() > MAX_URLS {
            return Err(SinkError::Config(format!(
                "HTTP CDR sink needs 1 to {MAX_URLS} URLs, not {}",
                config.urls.len()
            )));
        }
        let mut targets = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let uri: Uri = url
                .parse()
                .map_err(|e| SinkError::Config(format!("HTTP CDR URL {:?}: {e}", shown(url))))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(SinkError::Config(format!(
                    "HTTP CDR URL {:?} must start with http:// or https:// and name a host",
                    shown(url)
                )));
            }
            targets.push(Target {
                shown: shown(url),
                uri,
            });
        }
        if config.session.trim().is_empty() {
            return Err(SinkError::Config(
                "HTTP CDR session must not be empty".into(),
            ));
        }
        if config.utc_offset_secs.unsigned_abs() >= 86_400 {
            return Err(SinkError::Config(format!(
                "HTTP CDR UTC offset {} s is a day or more",
                config.utc_offset_secs
            )));
        }
        let authorization = config
            .authorization
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| {
                SinkError::Config("HTTP CDR authorization is not a valid header value".into())
            })?;
        let client = build_client(config.ca_file.as_deref(), config.timeout, targets.len())?;
        Ok(Self {
            client,
            targets,
            authorization,
            timeout: config.timeout,
            session: config.session.clone(),
            call_bridge: config.call_bridge.clone(),
            utc_offset_secs: config.utc_offset_secs,
            highest_sent: AtomicI64::new(i64::MIN),
        })
    }

    /// The session written in every batch.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The records of a round's deliveries, numbered (see the module docs) and sorted by
    /// index. A delivery whose body is not a call's JSON is left out (and logged): it can
    /// never be sent, and must not hold up the others. Progress records are left out.
    pub fn records(&self, batch: &[Outgoing]) -> Vec<CmsRecord<'static>> {
        let mut records = Vec::new();
        for item in batch {
            let call = match item.call() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(call = %item.id(), error = %e, "HTTP CDR: delivery is not a call's JSON; not sent");
                    continue;
                }
            };
            if call
                .update
                .as_ref()
                .is_some_and(|u| u.event != UpdateEvent::Ended)
            {
                continue;
            }
            records.extend(call_records(call, item.seq(), self.utc_offset_secs));
        }
        records.sort_by_key(|r| r.record_index);
        records
    }

    /// The POST bodies of a round: its [`HttpCdrSink::records`] in batches of at most
    /// [`MAX_RECORDS_PER_POST`], in index order. Empty when there is nothing to send.
    pub fn bodies(&self, batch: &[Outgoing]) -> Vec<Vec<u8>> {
        self.records(batch)
            .chunks(MAX_RECORDS_PER_POST)
            .map(|chunk| write_records(&self.session, self.call_bridge.as_deref(), chunk))
            .collect()
    }

    /// Sends a round's deliveries (in the outbox's order) to every URL: `Ok` when every URL
    /// took every post. See the module docs for what a failure means.
    pub async fn send_batch(&self, batch: &[Outgoing]) -> Result<(), SinkError> {
        let bodies: Vec<Bytes> = self.bodies(batch).into_iter().map(Bytes::from).collect();
        let Some(highest) = batch.iter().map(Outgoing::seq).max() else {
            return Ok(());
        };
        if bodies.is_empty() {
            return Ok(());
        }
        let lowest = batch.iter().map(Outgoing::seq).min().unwrap_or(highest);
        let before = self.highest_sent.load(Ordering::Relaxed);
        if lowest <= before {
            tracing::warn!(
                session = %self.session,
                seq = lowest,
                highest_delivered = before,
                "HTTP CDR: sending a call older than one already delivered (clock stepped back, or a resend); \
                 receivers that keep only increasing record indexes will drop its records"
            );
        }
        let mut tasks = Vec::with_capacity(self.targets.len());
        for target in &self.targets {
            let client = self.client.clone();
            let target = target.clone();
            let bodies = bodies.clone();
            let authorization = self.authorization.clone();
            let timeout = self.timeout;
            tasks.push(tokio::spawn(async move {
                for body in bodies {
                    post(&client, &target.uri, authorization.as_ref(), body, timeout).await?;
                }
                Ok::<(), SinkError>(())
            }));
        }
        let mut failures = Vec::new();
        for (task, target) in tasks.into_iter().zip(&self.targets) {
            let result = task.await.unwrap_or_else(|e| {
                Err(SinkError::Retryable {
                    reason: format!("sending task failed: {e}"),
                    retry_after: None,
                })
            });
            if let Err(e) = result {
                failures.push((target.shown.clone(), e));
            }
        }
        if failures.is_empty() {
            self.highest_sent.fetch_max(highest, Ordering::Relaxed);
            return Ok(());
        }
        Err(combine(failures))
    }
}

/// Sends a batch of up to 2048 items as one round ([`HttpCdrSink::send_batch`]): the batch is
/// delivered, or fails, as a whole; the engine keeps the outbox's order through failures.
impl Sink for HttpCdrSink {
    type Error = SinkError;

    fn drive(&self) -> Drive {
        Drive::Batch { max: BATCHED }
    }

    async fn deliver(&self, batch: &[Outgoing]) -> BatchResult<SinkError> {
        self.send_batch(batch).await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }
}

/// The records of one call, numbered from `seq × 64` (see the module docs): `callStart`, the
/// legs' `callLegStart` and `callLegEnd` by time, `callEnd`. Local times are taken to UTC by
/// the call's own offset when it carries its UTC start, else (bodies stored before
/// `start_utc` existed) by `utc_offset_secs`; CMS times are UTC already.
pub fn call_records(call: &Call, seq: i64, utc_offset_secs: i32) -> Vec<CmsRecord<'static>> {
    let offset = match call.start_utc {
        Some(utc) => (call.start_time - utc.naive_utc()).num_seconds(),
        None if call.source == Source::Cms => 0,
        None => i64::from(utc_offset_secs),
    };
    // The call's times are chrono's naive times (chrono is not a dependency of this crate).
    let call_id = cms_call_id(call);
    let start = call.start_time.and_utc().timestamp().saturating_sub(offset);
    let end = call
        .end_time
        .and_utc()
        .timestamp()
        .saturating_sub(offset)
        .max(start);

    let mut legs = legs_of(call, &call_id, (start, end), offset);
    if legs.len() > MAX_LEGS {
        tracing::warn!(
            call = %call.id,
            legs = legs.len(),
            "HTTP CDR: call has more legs than fit its record numbers; the first {MAX_LEGS} are sent"
        );
        legs.truncate(MAX_LEGS);
    }

    let mut out = Vec::with_capacity(2 + 2 * legs.len());
    let mut first = CmsRecord::new("callStart").with_time(rfc3339(start));
    first.nodes.push(object("call", &call_id));
    first.nodes.push(field("name", call_name(call)));
    if !call.tenant.is_empty() {
        first.nodes.push(field("tenant", call.tenant.to_string()));
    }
    out.push(first);

    // (time, leg, 0 = start / 1 = end)
    let mut events: Vec<(i64, usize, u8)> = Vec::with_capacity(2 * legs.len());
    for (i, l) in legs.iter().enumerate() {
        events.push((l.start, i, 0));
        events.push((l.end, i, 1));
    }
    events.sort_unstable();
    for (time, i, kind) in events {
        let Some(l) = legs.get(i) else { continue };
        let r = if kind == 0 {
            let mut r = CmsRecord::new("callLegStart").with_time(rfc3339(time));
            r.nodes.push(object("callLeg", &l.id));
            for (name, value) in [
                ("displayName", &l.display_name),
                ("remoteParty", &l.remote_party),
                ("remoteAddress", &l.remote_address),
                ("localAddress", &l.local_address),
            ] {
                if !value.is_empty() {
                    r.nodes.push(field(name, value.clone()));
                }
            }
            r.nodes.push(field("direction", l.direction.to_owned()));
            r.nodes.push(field("call", call_id.clone()));
            r
        } else {
            let mut r = CmsRecord::new("callLegEnd").with_time(rfc3339(time));
            r.nodes.push(object("callLeg", &l.id));
            r.nodes.push(field("reason", l.reason.clone()));
            r.nodes.push(field(
                "durationSeconds",
                l.end.saturating_sub(l.start).to_string(),
            ));
            r
        };
        out.push(r);
    }

    let mut last = CmsRecord::new("callEnd").with_time(rfc3339(end));
    last.nodes.push(object("call", &call_id));
    last.nodes
        .push(field("callLegsCompleted", legs.len().to_string()));
    last.nodes
        .push(field("durationSeconds", call.duration.to_string()));
    out.push(last);

    let base = u64::try_from(seq)
        .unwrap_or_default()
        .saturating_mul(RECORDS_PER_CALL);
    for (k, r) in (0u64..).zip(out.iter_mut()) {
        let index = base.saturating_add(k);
        r.record_index = Some(index);
        r.correlator_index = Some(index);
    }
    out
}

/// A leg as it is written.
#[derive(Debug, Default)]
struct LegOut {
    id: String,
    start: i64,
    end: i64,
    direction: &'static str,
    remote_address: String,
    remote_party: String,
    display_name: String,
    local_address: String,
    reason: String,
}

/// The call id written: the CMS call id for a CMS call's first part, else the stable id.
fn cms_call_id(call: &Call) -> String {
    if call.source == Source::Cms && call.part == 0 && !call.call_id.is_empty() {
        call.call_id.to_string()
    } else {
        call.id.clone()
    }
}

/// The `<name>` of the `callStart`: a CMS call's own, else the number called.
fn call_name(call: &Call) -> String {
    if call.source == Source::Cms {
        let name = call
            .cdr
            .iter()
            .find(|row| row.get("type").is_some_and(|t| t == "callStart"))
            .and_then(|row| row.get("name"));
        if let Some(name) = name {
            return name.to_string();
        }
    }
    call.called.to_string()
}

/// The legs of a call (see the module docs), with times in seconds since the epoch, UTC:
/// `(start, end)` are the call's, `offset` is subtracted from the legs' own times.
fn legs_of(call: &Call, call_id: &str, (start, end): (i64, i64), offset: i64) -> Vec<LegOut> {
    let leg_id = |unique: &str| {
        if is_guid(unique) {
            unique.to_owned()
        } else {
            stable_id(call.source, &call.site, &format!("{call_id}/leg/{unique}"))
        }
    };
    if !call.legs.is_empty() {
        return call
            .legs
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let utc = |t: Option<i64>| t.map(|t| t.saturating_sub(offset));
                let s = utc(l.start.map(|t| t.and_utc().timestamp())).unwrap_or(start);
                let e = utc(l.end.map(|t| t.and_utc().timestamp()))
                    .unwrap_or(end)
                    .max(s);
                let outgoing = !l.dialed_by.is_empty()
                    || (i == 0
                        && call.source == Source::Cms
                        && call.direction == CallDirection::Outbound);
                LegOut {
                    id: leg_id(&l.uniqueid),
                    start: s,
                    end: e,
                    direction: if outgoing { "outgoing" } else { "incoming" },
                    remote_address: if l.channel.is_empty() {
                        l.caller_num.to_string()
                    } else {
                        l.channel.to_string()
                    },
                    remote_party: l.caller_num.to_string(),
                    display_name: l.caller_name.to_string(),
                    local_address: l.exten.to_string(),
                    reason: if l.hangup_cause_text.is_empty() {
                        "callEnded".to_owned()
                    } else {
                        l.hangup_cause_text.to_string()
                    },
                }
            })
            .collect();
    }
    if !call.records.is_empty() {
        let mut at = start;
        return call
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let s = at;
                let e = s.saturating_add(i64::from(r.segment_seconds()));
                at = e;
                let caller = r.caller.to_str_lossy().into_owned();
                let called = r.called_number.to_str_lossy().into_owned();
                let incoming = r.direction.as_char() == 'I';
                let (remote, local) = if incoming {
                    (caller, called)
                } else {
                    (called, caller)
                };
                LegOut {
                    id: leg_id(&format!("record-{i}")),
                    start: s,
                    end: e,
                    direction: if incoming { "incoming" } else { "outgoing" },
                    remote_address: remote,
                    local_address: local,
                    reason: "callEnded".to_owned(),
                    ..LegOut::default()
                }
            })
            .collect();
    }
    if call.caller.is_empty() && call.called.is_empty() {
        return Vec::new();
    }
    let outgoing = call.direction == CallDirection::Outbound;
    let (remote, local) = if outgoing {
        (&call.called, &call.caller)
    } else {
        (&call.caller, &call.called)
    };
    vec![LegOut {
        id: leg_id("call"),
        start,
        end,
        direction: if outgoing { "outgoing" } else { "incoming" },
        remote_address: remote.to_string(),
        local_address: local.to_string(),
        reason: "callEnded".to_owned(),
        ..LegOut::default()
    }]
}

/// Whether `s` is written like a GUID (`8-4-4-4-12` hex digits).
fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The main object of a record: `<name id="id">`.
fn object(name: &'static str, id: &str) -> CmsNode<'static> {
    CmsNode {
        depth: 0,
        name: Cow::Borrowed(name),
        attrs: vec![CmsAttr {
            name: Cow::Borrowed("id"),
            value: Cow::Owned(id.to_owned()),
        }],
        text: Cow::Borrowed(""),
    }
}

/// A field of the main object: `<name>text</name>`.
fn field(name: &'static str, text: String) -> CmsNode<'static> {
    CmsNode {
        depth: 1,
        name: Cow::Borrowed(name),
        attrs: Vec::new(),
        text: Cow::Owned(text),
    }
}

/// Seconds since the Unix epoch as RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SSZ` (clamped to the years
/// 0000 to 9999).
fn rfc3339(secs: i64) -> String {
    const MIN: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = secs.clamp(MIN, MAX);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// A URL as it is shown in errors and logs: its password and token-like query values masked
/// ([`crate::redact::redact_url`]).
fn shown(url: &str) -> String {
    crate::redact::redact_url(url)
}

/// One POST to one receiver.
async fn post(
    client: &HttpClient,
    uri: &Uri,
    authorization: Option<&HeaderValue>,
    body: Bytes,
    timeout: Duration,
) -> Result<(), SinkError> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(CONTENT_TYPE, "text/xml")
        .header(USER_AGENT, concat!("cdr-relay/", env!("CARGO_PKG_VERSION")));
    if let Some(auth) = authorization {
        req = req.header(AUTHORIZATION, auth.clone());
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| SinkError::Config(format!("building request: {e}")))?;
    let exchange = async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now_unix()));
        // Read the (bounded) answer so the connection can be reused.
        let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(SinkError::Unreachable("request timed out".into())),
        Ok(Err(e)) => Err(classify_transport(&e)),
        Ok(Ok((status, retry_after, body))) => classify_status(status, retry_after, &body),
    }
}

/// How much a failure weighs when several URLs fail at once.
fn weight(e: &SinkError) -> u8 {
    match e {
        SinkError::Unreachable(_) => 0,
        SinkError::Paused { .. } => 1,
        SinkError::Retryable { .. } | SinkError::Io(_) => 2,
        SinkError::Rejected(_) | SinkError::Encode(_) | SinkError::Config(_) => 3,
    }
}

/// The failure of a round to several URLs: the heaviest kind, with every URL's reason and the
/// longest `Retry-After`. A single failure keeps its kind and gets its URL in its reason.
fn combine(mut failures: Vec<(String, SinkError)>) -> SinkError {
    if failures.len() == 1 {
        if let Some((url, e)) = failures.pop() {
            return match e {
                SinkError::Unreachable(r) => SinkError::Unreachable(format!("{url}: {r}")),
                SinkError::Retryable {
                    reason,
                    retry_after,
                } => SinkError::Retryable {
                    reason: format!("{url}: {reason}"),
                    retry_after,
                },
                SinkError::Paused {
                    reason,
                    retry_after,
                } => SinkError::Paused {
                    reason: format!("{url}: {reason}"),
                    retry_after,
                },
                SinkError::Rejected(r) => SinkError::Rejected(format!("{url}: {r}")),
                other => other,
            };
        }
    }
    let heaviest = failures.iter().map(|(_, e)| weight(e)).max().unwrap_or(0);
    let retry_after = failures
        .iter()
        .filter_map(|(_, e)| match e {
            SinkError::Retryable { retry_after, .. } | SinkError::Paused { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        })
        .max();
    let reason = failures
        .iter()
        .map(|(url, e)| format!("{url}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    match heaviest {
        0 => SinkError::Unreachable(reason),
        1 => SinkError::Paused {
            reason,
            retry_after,
        },
        2 => SinkError::Retryable {
            reason,
            retry_after,
        },
        _ => SinkError::Rejected(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    #[test]
    fn rfc3339_matches_chrono() {
        for secs in [
            0_i64,
            1_515_142_364,
            951_782_400, // 2000-02-29
            4_107_542_399,
            -1,
            -86_401,
            253_402_300_799,
        ] {
            let want = chrono::DateTime::from_timestamp(secs, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            assert_eq!(rfc3339(secs), want, "{secs}");
        }
        for day in 0..200_000_i64 {
            let secs = -50_000 * 86_400 + day * 86_400 + day % 86_400;
            let want = chrono::DateTime::from_timestamp(secs, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            assert_eq!(rfc3339(secs), want, "{secs}");
        }
        assert_eq!(rfc3339(i64::MIN), "0000-01-01T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn guids_and_shown_urls() {
        assert!(is_guid("f54bfbc3-c11e-47a6-a918-6a308018ac1d"));
        assert!(is_guid("F54BFBC3-C11E-47A6-A918-6A308018AC1D"));
        assert!(!is_guid("1795355692.132"));
        assert!(!is_guid("f54bfbc3-c11e-47a6-a918-6a308018ac1"));
        assert!(!is_guid("f54bfbc3xc11e-47a6-a918-6a308018ac1d"));
        assert_eq!(
            shown("https://u:p@host:8443/cdr?x=1&token=t"),
            "https://u:***@host:8443/cdr?x=1&token=***"
        );
        assert_eq!(shown("http://host"), "http://host");
    }

    #[test]
    fn config_is_checked() {
        let ok = HttpCdrConfig::new("http://127.0.0.1:9/cdr", "s");
        assert!(HttpCdrSink::new(&ok).is_ok());
        let bad = |c: HttpCdrConfig| {
            assert!(
                matches!(HttpCdrSink::new(&c), Err(SinkError::Config(_))),
                "{c:?}"
            );
        };
        bad(HttpCdrConfig {
            urls: vec![],
            ..ok.clone()
        });
        bad(HttpCdrConfig {
            urls: vec!["http://a/".into(); 5],
            ..ok.clone()
        });
        bad(HttpCdrConfig {
            urls: vec!["ftp://a/".into()],
            ..ok.clone()
        });
        bad(HttpCdrConfig {
            urls: vec!["not a url".into()],
            ..ok.clone()
        });
        bad(HttpCdrConfig {
            session: " ".into(),
            ..ok.clone()
        });
        bad(HttpCdrConfig {
            utc_offset_secs: 86_400,
            ..ok.clone()
        });
        bad(HttpCdrConfig {
            authorization: Some("a\nb".into()),
            ..ok.clone()
        });
        let four = HttpCdrConfig {
            urls: vec!["http://a/".into(); 4],
            ..ok
        };
        assert!(HttpCdrSink::new(&four).is_ok());
    }

    #[test]
    fn statuses_map_like_the_webhook() {
        assert!(classify_status(StatusCode::OK, None, b"").is_ok());
        assert!(classify_status(StatusCode::NO_CONTENT, None, b"").is_ok());
        for s in [408, 429, 500, 503] {
            let e = classify_status(StatusCode::from_u16(s).unwrap(), None, b"").unwrap_err();
            assert!(matches!(e, SinkError::Retryable { .. }), "{s}");
        }
        for s in [401, 403, 410] {
            let e = classify_status(StatusCode::from_u16(s).unwrap(), None, b"").unwrap_err();
            assert!(matches!(e, SinkError::Paused { .. }), "{s}");
        }
        for s in [400, 404, 413, 422] {
            let e = classify_status(StatusCode::from_u16(s).unwrap(), None, b"no").unwrap_err();
            assert!(matches!(e, SinkError::Rejected(_)), "{s}");
        }
    }

    #[test]
    fn the_heaviest_failure_decides() {
        let unreachable = || SinkError::Unreachable("refused".into());
        let retry = |s| SinkError::Retryable {
            reason: "HTTP 503".into(),
            retry_after: Some(Duration::from_secs(s)),
        };
        let e = combine(vec![("a".into(), unreachable())]);
        assert_eq!(e.to_string(), "unreachable: a: refused");
        let e = combine(vec![("a".into(), unreachable()), ("b".into(), retry(7))]);
        match e {
            SinkError::Retryable {
                reason,
                retry_after,
            } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert!(reason.contains("a: unreachable") && reason.contains("b: HTTP 503"));
            }
            other => panic!("{other:?}"),
        }
        let e = combine(vec![
            ("a".into(), retry(1)),
            ("b".into(), SinkError::Rejected("HTTP 400".into())),
        ]);
        assert!(matches!(e, SinkError::Rejected(_)));
        let e = combine(vec![
            ("a".into(), unreachable()),
            (
                "b".into(),
                SinkError::Paused {
                    reason: "HTTP 401".into(),
                    retry_after: None,
                },
            ),
        ]);
        assert!(matches!(e, SinkError::Paused { .. }));
    }
}
