//! The HTTP CDR format: Cisco Meeting Server's `<records>` XML batches, read and written, and
//! the JSON shape of the reference receiver's API.
//!
//! CMS POSTs its call detail records as
//!
//! ```xml
//! <?xml version="1.0"?><records session="5552fc55-..." callBridge="04aec22b-...">
//!   <record type="callStart" time="2017-04-24T12:00:11Z" recordIndex="3141" correlatorIndex="3140">
//!     <call id="f54bfbc3-..."><name>techsupport</name>...</call>
//!   </record>
//! </records>
//! ```
//!
//! and resends a batch until it gets `200 OK`; a receiver drops duplicates by
//! (`session`, `recordIndex`). This module is that format for the HTTP-CDR sink (which writes
//! it) and the CMS receiver (which reads it):
//!
//! * [`parse`] / [`parse_with`]: a body to a [`CmsBatch`] of borrowed [`CmsRecord`]s, or an
//!   [`HttpCdrError`] with the byte position (never a partial batch, never a panic);
//! * [`write_records`] / [`write_batch`]: records back to XML that parses to the same value;
//! * [`SessionWriter`]: numbers the records a relay forwards (one session, contiguous
//!   `recordIndex`), so relays can be chained and the next receiver can drop duplicates;
//! * [`record_to_api_json`] / [`api_page`]: the JSON of the reference receiver's
//!   `GET /api/v1/records/<page>` (`xmltodict` style).
//!
//! The record type, the reader and the writer are `call_assembler`'s ([`CmsRecord`],
//! `call_assembler::parse_cms_xml`, ...): the CMS assembler consumes the records, the arrows
//! point `cdr-sinks -> call-assembler`, and the fuzz crate checks reader, writer and assembler
//! together without building this crate's network and database stack. The module docs of
//! `call_assembler::cms` say how a record's elements are kept (a flat tree: every element at any
//! depth, with its attributes and trimmed text) and how records become calls.

use call_assembler::{write_cms_batch, write_cms_records};
use serde_json::{Map, Value};

pub use call_assembler::{
    CmsAttr, CmsBatch, CmsNode, CmsRecord, CmsRecordKind, CmsXmlErrorKind as HttpCdrErrorKind,
    CmsXmlLimits as HttpCdrLimits,
};

/// Why a body could not be read: `position` (byte offset) and `kind` ([`HttpCdrErrorKind`]).
pub type HttpCdrError = call_assembler::CmsXmlError;

/// Reads a POST body (a `<records>` batch, or one bare `<record>`) with the default limits
/// ([`HttpCdrLimits`]: 10,000 records, depth 16, 64 KiB per value).
///
/// ```
/// let body = br#"<?xml version="1.0"?><records session="s1"><record type="callEnd"
///   time="2019-04-05T16:55:22Z" recordIndex="24" correlatorIndex="115"><call
///   id="6af88404-91a4-441a-b46e-b4c455c9959d"><durationSeconds>4</durationSeconds></call>
///   </record></records>"#;
/// let batch = cdr_sinks::http_cdr::parse(body).unwrap();
/// assert_eq!(batch.records[0].field("durationSeconds"), Some("4"));
/// let again = cdr_sinks::http_cdr::write_batch(&batch);
/// assert_eq!(cdr_sinks::http_cdr::parse(&again).unwrap(), batch);
/// ```
pub fn parse(body: &[u8]) -> Result<CmsBatch<'_>, HttpCdrError> {
    call_assembler::parse_cms_xml(body)
}

/// Reads a POST body within the given limits.
pub fn parse_with<'a>(
    body: &'a [u8],
    limits: &HttpCdrLimits,
) -> Result<CmsBatch<'a>, HttpCdrError> {
    call_assembler::parse_cms_xml_with(body, limits)
}

/// Writes records as one CMS batch: `<?xml version="1.0"?><records session=..
/// [callBridge=..]>`, one `<record>` per line. The records' `recordIndex` values are written
/// as they are (number them with a [`SessionWriter`]).
pub fn write_records(
    session: &str,
    call_bridge: Option<&str>,
    records: &[CmsRecord<'_>],
) -> Vec<u8> {
    write_cms_records(session, call_bridge, records)
}

/// Writes a parsed batch back exactly (its envelope as it was, a bare `<record>` stays bare):
/// `parse(write_batch(b)) == b`.
pub fn write_batch(batch: &CmsBatch<'_>) -> Vec<u8> {
    write_cms_batch(batch)
}

/// Numbers the records one sender forwards, the way CMS numbers its own: one `session` (a
/// GUID the sender picks when it starts, or keeps across restarts together with the next
/// index) and a `recordIndex` that grows by one per record, from 1. A receiver drops a record
/// whose (`session`, `recordIndex`) it has seen, so a batch that is resent must keep its
/// numbers: number a batch once, keep its bytes for the retries, and save
/// [`SessionWriter::next_index`] durably with it ([`SessionWriter::restore`] takes it back).
///
/// Only `recordIndex` is renumbered; `correlatorIndex` (the same for every receiver of the
/// original CMS) and everything else is forwarded as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionWriter {
    session: String,
    call_bridge: Option<String>,
    next_index: u64,
}

impl SessionWriter {
    /// A new session whose first record gets index 1.
    pub fn new(session: impl Into<String>, call_bridge: Option<String>) -> Self {
        Self::restore(session, call_bridge, 1)
    }

    /// A session resumed after a restart: the next record gets `next_index` (as saved from
    /// [`SessionWriter::next_index`]).
    pub fn restore(
        session: impl Into<String>,
        call_bridge: Option<String>,
        next_index: u64,
    ) -> Self {
        Self {
            session: session.into(),
            call_bridge,
            next_index,
        }
    }

    /// The session GUID written in every batch.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The `callBridge` written in every batch, if any.
    pub fn call_bridge(&self) -> Option<&str> {
        self.call_bridge.as_deref()
    }

    /// The index the next record will get (save it to resume the session).
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Gives the records contiguous indexes from [`SessionWriter::next_index`] on, in order,
    /// and returns the first and one past the last.
    pub fn number(&mut self, records: &mut [CmsRecord<'_>]) -> std::ops::Range<u64> {
        let first = self.next_index;
        for r in records.iter_mut() {
            r.record_index = Some(self.next_index);
            self.next_index = self.next_index.saturating_add(1);
        }
        first..self.next_index
    }

    /// Numbers the records ([`SessionWriter::number`]) and writes them as one batch of this
    /// session.
    pub fn write(&mut self, records: &mut [CmsRecord<'_>]) -> Vec<u8> {
        self.number(records);
        write_records(&self.session, self.call_bridge.as_deref(), records)
    }
}

pub use call_assembler::cms_record_api_json as record_to_api_json;

/// One page of the reference receiver's `GET /api/v1/records/<page>`: `{"records": [..]}` with
/// the records in the order given (that API lists the newest first), or `{"records": 0}` (an
/// integer, as that API ends its pages) when there are none.
pub fn api_page<'r, 'a: 'r>(records: impl IntoIterator<Item = &'r CmsRecord<'a>>) -> Value {
    let list: Vec<Value> = records.into_iter().map(record_to_api_json).collect();
    let mut map = Map::new();
    map.insert(
        "records".into(),
        if list.is_empty() {
            Value::from(0)
        } else {
            Value::Array(list)
        },
    );
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_writer_numbers_contiguously_and_resumes() {
        let mut w = SessionWriter::new("s", None);
        let mut a = vec![CmsRecord::new("callStart"), CmsRecord::new("callEnd")];
        let xml = w.write(&mut a);
        assert_eq!(w.next_index(), 3);
        let b = parse(&xml).unwrap();
        let idx: Vec<_> = b.records.iter().map(|r| r.record_index).collect();
        assert_eq!(idx, vec![Some(1), Some(2)]);
        let mut w2 = SessionWriter::restore("s", Some("cb".into()), w.next_index());
        let mut c = vec![CmsRecord::new("callLegStart")];
        assert_eq!(w2.number(&mut c), 3..4);
        let xml = write_records(w2.session(), w2.call_bridge(), &c);
        let b = parse(&xml).unwrap();
        assert_eq!(b.call_bridge.as_deref(), Some("cb"));
        assert_eq!(b.records[0].record_index, Some(3));
    }

    #[test]
    fn repeated_elements_become_lists() {
        let b = parse(
            br#"<record type="callLegEnd" recordIndex="1"><callLeg id="l"><alarm type="a" durationPercentage="1.4"/><alarm type="b" durationPercentage="0.0"/><x>t<y/></x><e/></callLeg></record>"#,
        )
        .unwrap();
        let v = record_to_api_json(&b.records[0]);
        assert_eq!(
            v,
            serde_json::json!({
                "@type": "callLegEnd", "@recordIndex": "1",
                "callLeg": {
                    "@id": "l",
                    "alarm": [
                        {"@type": "a", "@durationPercentage": "1.4"},
                        {"@type": "b", "@durationPercentage": "0.0"}
                    ],
                    "x": {"y": null, "#text": "t"},
                    "e": null
                }
            })
        );
        assert_eq!(api_page([]), serde_json::json!({"records": 0}));
    }
}
