//! The CMS CDR XML format, both ways: [`parse_cms_xml`] reads a POST body with quick-xml's
//! borrowed reader (one pass, no DOM; values borrow from the body unless they needed
//! unescaping), and [`write_cms_batch`] / [`write_cms_records`] write batches that read back
//! to the same value.
//!
//! # What is accepted
//!
//! * A `<records session=".." callBridge="..">` element holding `<record>` elements, or one bare
//!   `<record>` (as the Mividas fragments are), optionally after an XML declaration, comments
//!   and processing instructions.
//! * Well-formed XML 1.0 only, as one document: one root element, nothing but whitespace,
//!   comments and processing instructions after it (two concatenated `<records>` are an
//!   error), matching end tags, the five predefined entities and character references (any
//!   other entity, and any `<!DOCTYPE>`, is an error), UTF-8 (a UTF-8 byte order mark is
//!   skipped).
//! * `<records>` holds only `<record>` elements and whitespace; `<record>` holds elements and
//!   whitespace; text directly in either is an error rather than something silently dropped.
//! * `numPreceedingRecordsMissing` (CMS's spelling) is an attribute of `<record>` in the CMS
//!   CDR guide ("a numeric value in the `<record>` tag", counting records discarded just
//!   before that one): it is read into [`CmsRecord::preceding_missing`]. Found on `<records>`
//!   instead, it is read into [`CmsBatch::preceding_missing`]; found as an element inside
//!   `<record>`, it stays one of the record's nodes (nothing is dropped).
//!
//! Everything else is kept: unknown record types (with their raw XML), unknown attributes,
//! every element inside a record at any depth (see [`crate::CmsNode`]).
//!
//! # Errors
//!
//! Any problem is a [`CmsXmlError`] with the byte offset in the body where it was found and
//! a [`CmsXmlErrorKind`]; a body is parsed whole or not at all (no partial batches). Limits
//! ([`CmsXmlLimits`]) bound the number of records, the nesting depth and the length of any one
//! text or attribute value.

use std::borrow::Cow;

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::attributes::Attributes;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use serde::Serialize;

use super::{CmsAttr, CmsNode, CmsRecord, CmsRecordKind, cms_time};

#[cfg(test)]
mod tests;
mod write;

pub use write::{write_cms_batch, write_cms_records};

/// A parsed POST body: the `<records>` envelope and its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmsBatch<'a> {
    /// The `session` attribute of `<records>`: a GUID that changes when the Call Bridge
    /// restarts. With `recordIndex` it identifies a record for one receiver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Cow<'a, str>>,
    /// The `callBridge` attribute of `<records>` (clustered CMS only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_bridge: Option<Cow<'a, str>>,
    /// A `numPreceedingRecordsMissing` attribute on `<records>` (CMS puts it on `<record>`,
    /// see [`CmsRecord::preceding_missing`]; this one is read in case a sender puts it here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preceding_missing: Option<u64>,
    /// Any other attribute of `<records>`, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attrs: Vec<CmsAttr<'a>>,
    /// `false` for a bare `<record>` without a `<records>` wrapper.
    pub wrapped: bool,
    /// The records in document order.
    pub records: Vec<CmsRecord<'a>>,
}

impl<'a> CmsBatch<'a> {
    /// An empty `<records>` batch (push to `records`).
    pub fn new(session: Option<Cow<'a, str>>, call_bridge: Option<Cow<'a, str>>) -> Self {
        Self {
            session,
            call_bridge,
            preceding_missing: None,
            attrs: Vec::new(),
            wrapped: true,
            records: Vec::new(),
        }
    }

    /// A copy that owns its strings.
    pub fn into_owned(self) -> CmsBatch<'static> {
        CmsBatch {
            session: self.session.map(|s| Cow::Owned(s.into_owned())),
            call_bridge: self.call_bridge.map(|s| Cow::Owned(s.into_owned())),
            preceding_missing: self.preceding_missing,
            attrs: self.attrs.into_iter().map(CmsAttr::into_owned).collect(),
            wrapped: self.wrapped,
            records: self
                .records
                .into_iter()
                .map(CmsRecord::into_owned)
                .collect(),
        }
    }
}

/// Bounds on what one body may hold; past one the parse fails with a clear
/// [`CmsXmlErrorKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmsXmlLimits {
    /// The most records in one body (CMS sends a few per POST).
    pub max_records: usize,
    /// The deepest element nesting, counting the root as 1 (`records/record/callLeg/rxVideo/codec`
    /// is 5).
    pub max_depth: usize,
    /// The longest text of one element, or value of one attribute, in bytes after unescaping.
    pub max_text: usize,
}

impl Default for CmsXmlLimits {
    fn default() -> Self {
        Self {
            max_records: 10_000,
            max_depth: 16,
            max_text: 64 * 1024,
        }
    }
}

/// Why a body could not be read, and where ([`CmsXmlError::position`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CMS CDR XML at byte {position}: {kind}")]
pub struct CmsXmlError {
    /// Byte offset in the body where the problem was found (for markup, usually its start).
    pub position: usize,
    /// What is wrong.
    pub kind: CmsXmlErrorKind,
}

/// What is wrong with a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmsXmlErrorKind {
    /// The body is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// Not well-formed XML (quick-xml's description: a mismatched end tag, a bad attribute, an
    /// unclosed comment, ...).
    #[error("malformed XML: {0}")]
    Syntax(String),
    /// An element or attribute name that is not an XML name.
    #[error("invalid XML name {0:?}")]
    InvalidName(String),
    /// An entity reference other than `&amp;`, `&lt;`, `&gt;`, `&apos;`, `&quot;` and
    /// character references.
    #[error("unknown entity &{0};")]
    UnknownEntity(String),
    /// A `<!DOCTYPE>` (never sent by CMS; refused so no entity can be declared).
    #[error("DOCTYPE is not accepted")]
    DocType,
    /// No root element.
    #[error("no root element")]
    NoRoot,
    /// The root element is neither `<records>` nor `<record>`.
    #[error("root element <{0}> is neither <records> nor <record>")]
    UnexpectedRoot(String),
    /// Something other than whitespace, a comment or a processing instruction after the root
    /// element (a second root, stray text or end tag).
    #[error("content after the root element")]
    AfterRoot,
    /// An element other than `<record>` inside `<records>`.
    #[error("<{0}> inside <records>; only <record> belongs there")]
    UnexpectedElement(String),
    /// Text (not whitespace) outside any element of a record: before the root, directly in
    /// `<records>` or directly in `<record>`.
    #[error("text outside a record's elements")]
    UnexpectedText,
    /// An element ended that was never opened, or the input ended inside an element.
    #[error("unbalanced element: {0}")]
    Unbalanced(String),
    /// A `<record>` without its `type` attribute.
    #[error("<record> without a type attribute")]
    MissingType,
    /// `recordIndex`, `correlatorIndex` or `numPreceedingRecordsMissing` is not a whole
    /// number.
    #[error("attribute {name} is not a whole number: {value:?}")]
    BadNumber {
        /// The attribute.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// More than [`CmsXmlLimits::max_records`] records.
    #[error("more than {0} records")]
    TooManyRecords(usize),
    /// Elements nested deeper than [`CmsXmlLimits::max_depth`].
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
    /// A text or attribute value longer than [`CmsXmlLimits::max_text`] bytes.
    #[error("a text or attribute value longer than {0} bytes")]
    TextTooLong(usize),
}

/// Reads a POST body with the default [`CmsXmlLimits`].
///
/// ```
/// let body = br#"<?xml version="1.0"?>
/// <records session="290da844-0ebd-4b42-8049-e264375f1d33">
///   <record type="callStart" time="2019-04-04T15:28:37Z" recordIndex="1" correlatorIndex="6">
///     <call id="634f5879-6907-429d-949a-ef630079cdbe">
///       <name>Kashyyyk Civil Engineering</name>
///       <ownerName></ownerName>
///       <callType>coSpace</callType>
///     </call>
///   </record>
/// </records>"#;
/// let batch = call_assembler::parse_cms_xml(body).unwrap();
/// assert_eq!(batch.session.as_deref(), Some("290da844-0ebd-4b42-8049-e264375f1d33"));
/// let record = &batch.records[0];
/// assert_eq!(record.kind, call_assembler::CmsRecordKind::CallStart);
/// assert_eq!(record.record_index, Some(1));
/// assert_eq!(record.object_id(), Some("634f5879-6907-429d-949a-ef630079cdbe"));
/// assert_eq!(record.field("name"), Some("Kashyyyk Civil Engineering"));
/// assert_eq!(record.field("ownerName"), Some(""));
/// ```
pub fn parse_cms_xml(body: &[u8]) -> Result<CmsBatch<'_>, CmsXmlError> {
    parse_cms_xml_with(body, &CmsXmlLimits::default())
}

/// Reads a POST body within the given limits.
pub fn parse_cms_xml_with<'a>(
    body: &'a [u8],
    limits: &CmsXmlLimits,
) -> Result<CmsBatch<'a>, CmsXmlError> {
    let (bytes, base) = match body.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (rest, 3),
        None => (body, 0),
    };
    let input = std::str::from_utf8(bytes).map_err(|e| CmsXmlError {
        position: base + e.valid_up_to(),
        kind: CmsXmlErrorKind::NotUtf8,
    })?;
    // quick-xml skips a leading byte order mark without counting it in its positions: a second
    // one would be skipped too, shifting every position. It is text before the root.
    if input.starts_with('\u{feff}') {
        return Err(CmsXmlError {
            position: base,
            kind: CmsXmlErrorKind::UnexpectedText,
        });
    }
    let mut parser = Parser {
        input,
        limits,
        reader: Reader::from_str(input),
        batch: CmsBatch {
            session: None,
            call_bridge: None,
            preceding_missing: None,
            attrs: Vec::new(),
            wrapped: false,
            records: Vec::new(),
        },
        root: Root::None,
        depth: 0,
        record: None,
        open: Vec::new(),
    };
    parser.run().map_err(|(position, kind)| CmsXmlError {
        position: position.saturating_add(base),
        kind,
    })?;
    Ok(parser.batch)
}

type Failure = (usize, CmsXmlErrorKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    None,
    Records,
    Record,
    Closed,
}

/// A record being read.
struct RecordBuilder<'a> {
    start: usize,
    record: CmsRecord<'a>,
}

/// The text gathered so far for an open element inside a record.
enum Acc<'a> {
    Empty,
    /// One piece; `true` when it came from a reference or CDATA (not to be trimmed).
    One(Cow<'a, str>, bool),
    /// Several pieces joined, and how many bytes at its end are literal whitespace.
    Many(String, usize),
}

fn is_xml_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// The part of `s` left after removing XML whitespace at the start and/or the end.
fn trim_range(s: &str, start: bool, end: bool) -> (usize, usize) {
    let from = if start {
        s.len() - s.trim_start_matches(is_xml_ws).len()
    } else {
        0
    };
    let to = if end {
        s.trim_end_matches(is_xml_ws).len()
    } else {
        s.len()
    };
    (from, to.max(from))
}

fn trim_cow(c: Cow<'_, str>, start: bool, end: bool) -> Cow<'_, str> {
    let (a, b) = trim_range(&c, start, end);
    match c {
        Cow::Borrowed(s) => Cow::Borrowed(s.get(a..b).unwrap_or_default()),
        Cow::Owned(s) => Cow::Owned(s.get(a..b).unwrap_or_default().to_owned()),
    }
}

impl<'a> Acc<'a> {
    fn len(&self) -> usize {
        match self {
            Acc::Empty => 0,
            Acc::One(c, _) => c.len(),
            Acc::Many(s, _) => s.len(),
        }
    }

    fn push(&mut self, piece: Cow<'a, str>, protected: bool) {
        match std::mem::replace(self, Acc::Empty) {
            Acc::Empty => {
                let piece = if protected {
                    piece
                } else {
                    trim_cow(piece, true, false)
                };
                if !piece.is_empty() {
                    *self = Acc::One(piece, protected);
                }
            }
            Acc::One(first, first_protected) => {
                let trailing = if first_protected {
                    0
                } else {
                    first.len() - first.trim_end_matches(is_xml_ws).len()
                };
                let mut acc = Acc::Many(first.into_owned(), trailing);
                acc.push(piece, protected);
                *self = acc;
            }
            Acc::Many(mut s, mut trailing) => {
                s.push_str(&piece);
                if protected {
                    if !piece.is_empty() {
                        trailing = 0;
                    }
                } else {
                    let ws = piece.len() - piece.trim_end_matches(is_xml_ws).len();
                    if ws == piece.len() {
                        trailing = trailing.saturating_add(ws);
                    } else {
                        trailing = ws;
                    }
                }
                *self = Acc::Many(s, trailing);
            }
        }
    }

    fn finish(self) -> Cow<'a, str> {
        match self {
            Acc::Empty => Cow::Borrowed(""),
            Acc::One(c, true) => c,
            Acc::One(c, false) => trim_cow(c, false, true),
            Acc::Many(mut s, trailing) => {
                s.truncate(s.len().saturating_sub(trailing));
                Cow::Owned(s)
            }
        }
    }
}

/// An element open inside a record: its node and its text so far.
struct OpenNode<'a> {
    node: usize,
    text: Acc<'a>,
}

struct Parser<'a, 'l> {
    input: &'a str,
    limits: &'l CmsXmlLimits,
    reader: Reader<&'a [u8]>,
    batch: CmsBatch<'a>,
    root: Root,
    /// Open elements in the document.
    depth: usize,
    record: Option<RecordBuilder<'a>>,
    /// Open elements inside the current record.
    open: Vec<OpenNode<'a>>,
}

fn to_usize(p: u64) -> usize {
    usize::try_from(p).unwrap_or(usize::MAX)
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    let start_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':' || !c.is_ascii();
    match chars.next() {
        Some(c) if start_ok(c) => {}
        _ => return false,
    }
    chars.all(|c| start_ok(c) || c.is_ascii_digit() || c == '-' || c == '.')
}

fn parse_number(name: &'static str, value: &str) -> Result<u64, CmsXmlErrorKind> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CmsXmlErrorKind::BadNumber {
            name,
            value: value.to_owned(),
        });
    }
    value
        .parse::<u64>()
        .map_err(|_| CmsXmlErrorKind::BadNumber {
            name,
            value: value.to_owned(),
        })
}

impl<'a> Parser<'a, '_> {
    fn run(&mut self) -> Result<(), Failure> {
        loop {
            let pos = to_usize(self.reader.buffer_position());
            let event = match self.reader.read_event() {
                Ok(e) => e,
                Err(e) => {
                    return Err((
                        to_usize(self.reader.error_position()),
                        CmsXmlErrorKind::Syntax(e.to_string()),
                    ));
                }
            };
            match event {
                Event::Decl(_) => {
                    if self.root != Root::None {
                        return Err((pos, CmsXmlErrorKind::AfterRoot));
                    }
                }
                Event::PI(_) | Event::Comment(_) => {}
                Event::DocType(_) => return Err((pos, CmsXmlErrorKind::DocType)),
                Event::Start(e) => self.start(pos, &e, false)?,
                Event::Empty(e) => self.start(pos, &e, true)?,
                Event::End(_) => self.end(pos)?,
                Event::Text(t) => {
                    let text = t
                        .xml10_content()
                        .map_err(|e| (pos, CmsXmlErrorKind::Syntax(e.to_string())))?;
                    self.text(pos, text, false)?;
                }
                Event::CData(c) => {
                    let text = c
                        .xml10_content()
                        .map_err(|e| (pos, CmsXmlErrorKind::Syntax(e.to_string())))?;
                    self.text(pos, text, true)?;
                }
                Event::GeneralRef(r) => {
                    let text: Cow<'a, str> = if r.is_char_ref() {
                        match r.resolve_char_ref() {
                            Ok(Some(c)) => Cow::Owned(c.to_string()),
                            Ok(None) | Err(_) => {
                                return Err((
                                    pos,
                                    CmsXmlErrorKind::Syntax(format!(
                                        "invalid character reference &{};",
                                        String::from_utf8_lossy(&r)
                                    )),
                                ));
                            }
                        }
                    } else {
                        let name = std::str::from_utf8(&r).unwrap_or_default();
                        match resolve_xml_entity(name) {
                            Some(s) => Cow::Borrowed(s),
                            None => {
                                return Err((pos, CmsXmlErrorKind::UnknownEntity(name.to_owned())));
                            }
                        }
                    };
                    self.text(pos, text, true)?;
                }
                Event::Eof => {
                    if self.depth > 0 || self.record.is_some() {
                        return Err((
                            pos,
                            CmsXmlErrorKind::Unbalanced("the input ended inside an element".into()),
                        ));
                    }
                    if self.root == Root::None {
                        return Err((pos, CmsXmlErrorKind::NoRoot));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// The start tag's text (`name attr="v" ...`) as a slice of the input, so that names and
    /// attribute values borrow from the body.
    fn tag(&self, pos: usize, e: &BytesStart<'_>) -> Result<&'a str, Failure> {
        let raw: &[u8] = e;
        let input = self.input;
        let at = (raw.as_ptr() as usize).checked_sub(input.as_ptr() as usize);
        at.and_then(|at| input.get(at..at.checked_add(raw.len())?))
            .ok_or_else(|| {
                (
                    pos,
                    CmsXmlErrorKind::Syntax("start tag outside the input".into()),
                )
            })
    }

    fn attributes(
        &self,
        pos: usize,
        tag: &'a str,
        name_len: usize,
    ) -> Result<Vec<CmsAttr<'a>>, Failure> {
        let mut out = Vec::new();
        for attr in Attributes::new(tag, name_len) {
            let attr = attr.map_err(|e| (pos, CmsXmlErrorKind::Syntax(e.to_string())))?;
            let key: &'a [u8] = attr.key.into_inner();
            let name = std::str::from_utf8(key).unwrap_or_default();
            if !is_name(name) {
                return Err((pos, CmsXmlErrorKind::InvalidName(name.to_owned())));
            }
            let value = attr
                .normalized_value_with(XmlVersion::Implicit1_0, 1, resolve_xml_entity)
                .map_err(|e| match e {
                    quick_xml::Error::Escape(
                        quick_xml::escape::EscapeError::UnrecognizedEntity(_, entity),
                    ) => (pos, CmsXmlErrorKind::UnknownEntity(entity)),
                    e => (pos, CmsXmlErrorKind::Syntax(e.to_string())),
                })?;
            if value.len() > self.limits.max_text {
                return Err((pos, CmsXmlErrorKind::TextTooLong(self.limits.max_text)));
            }
            out.push(CmsAttr {
                name: Cow::Borrowed(name),
                value,
            });
        }
        Ok(out)
    }

    fn start(&mut self, pos: usize, e: &BytesStart<'_>, empty: bool) -> Result<(), Failure> {
        if self.root == Root::Closed {
            return Err((pos, CmsXmlErrorKind::AfterRoot));
        }
        self.depth = self.depth.saturating_add(1);
        if self.depth > self.limits.max_depth {
            return Err((pos, CmsXmlErrorKind::TooDeep(self.limits.max_depth)));
        }
        let tag = self.tag(pos, e)?;
        let name_len = e.name().as_ref().len();
        let name = tag.get(..name_len).unwrap_or_default();
        if !is_name(name) {
            return Err((pos, CmsXmlErrorKind::InvalidName(name.to_owned())));
        }
        let attrs = self.attributes(pos, tag, name_len)?;
        if self.record.is_some() {
            let depth = u16::try_from(self.open.len()).unwrap_or(u16::MAX);
            let Some(b) = self.record.as_mut() else {
                return Ok(());
            };
            b.record.nodes.push(CmsNode {
                depth,
                name: Cow::Borrowed(name),
                attrs,
                text: Cow::Borrowed(""),
            });
            let node = b.record.nodes.len().saturating_sub(1);
            if empty {
                self.depth = self.depth.saturating_sub(1);
            } else {
                self.open.push(OpenNode {
                    node,
                    text: Acc::Empty,
                });
            }
            return Ok(());
        }
        match (self.root, name) {
            (Root::None, "records") => {
                self.root = Root::Records;
                self.batch.wrapped = true;
                for a in attrs {
                    match a.name.as_ref() {
                        "session" => self.batch.session = Some(a.value),
                        "callBridge" => self.batch.call_bridge = Some(a.value),
                        "numPreceedingRecordsMissing" => {
                            self.batch.preceding_missing = Some(
                                parse_number("numPreceedingRecordsMissing", &a.value)
                                    .map_err(|k| (pos, k))?,
                            );
                        }
                        _ => self.batch.attrs.push(a),
                    }
                }
                if empty {
                    self.depth = self.depth.saturating_sub(1);
                    self.root = Root::Closed;
                }
                Ok(())
            }
            (Root::None | Root::Records, "record") => {
                if self.root == Root::None {
                    self.root = Root::Record;
                }
                if self.batch.records.len() >= self.limits.max_records {
                    return Err((
                        pos,
                        CmsXmlErrorKind::TooManyRecords(self.limits.max_records),
                    ));
                }
                let record = record_from_attrs(attrs).map_err(|k| (pos, k))?;
                self.record = Some(RecordBuilder { start: pos, record });
                if empty {
                    self.finish_record(pos)?;
                }
                Ok(())
            }
            (Root::None, _) => Err((pos, CmsXmlErrorKind::UnexpectedRoot(name.to_owned()))),
            _ => Err((pos, CmsXmlErrorKind::UnexpectedElement(name.to_owned()))),
        }
    }

    fn finish_record(&mut self, pos: usize) -> Result<(), Failure> {
        let Some(b) = self.record.take() else {
            return Ok(());
        };
        self.depth = self.depth.saturating_sub(1);
        let mut record = b.record;
        if record.kind == CmsRecordKind::Unknown {
            let end = to_usize(self.reader.buffer_position());
            let raw = self.input.get(b.start..end).ok_or_else(|| {
                (
                    pos,
                    CmsXmlErrorKind::Syntax("record outside the input".into()),
                )
            })?;
            record.raw = Some(Cow::Borrowed(raw));
        }
        self.batch.records.push(record);
        if self.root == Root::Record {
            self.root = Root::Closed;
        }
        Ok(())
    }

    fn end(&mut self, pos: usize) -> Result<(), Failure> {
        if self.depth == 0 {
            return Err((
                pos,
                CmsXmlErrorKind::Unbalanced("an end tag without a start".into()),
            ));
        }
        if let Some(open) = self.open.pop() {
            self.depth = self.depth.saturating_sub(1);
            if let Some(node) = self
                .record
                .as_mut()
                .and_then(|b| b.record.nodes.get_mut(open.node))
            {
                node.text = open.text.finish();
            }
            return Ok(());
        }
        if self.record.is_some() {
            return self.finish_record(pos);
        }
        self.depth = self.depth.saturating_sub(1);
        if self.root == Root::Records {
            self.root = Root::Closed;
        }
        Ok(())
    }

    fn text(&mut self, pos: usize, text: Cow<'a, str>, protected: bool) -> Result<(), Failure> {
        if let Some(open) = self.open.last_mut() {
            open.text.push(text, protected);
            if open.text.len() > self.limits.max_text {
                return Err((pos, CmsXmlErrorKind::TextTooLong(self.limits.max_text)));
            }
            return Ok(());
        }
        if !protected && text.chars().all(is_xml_ws) {
            return Ok(());
        }
        if self.root == Root::Closed {
            Err((pos, CmsXmlErrorKind::AfterRoot))
        } else {
            Err((pos, CmsXmlErrorKind::UnexpectedText))
        }
    }
}

fn record_from_attrs(attrs: Vec<CmsAttr<'_>>) -> Result<CmsRecord<'_>, CmsXmlErrorKind> {
    let mut record_type = None;
    let mut time = None;
    let mut record_index = None;
    let mut correlator_index = None;
    let mut preceding_missing = None;
    let mut rest = Vec::new();
    for a in attrs {
        match a.name.as_ref() {
            "type" => record_type = Some(a.value),
            "time" => time = Some(a.value),
            "recordIndex" => record_index = Some(parse_number("recordIndex", &a.value)?),
            "correlatorIndex" => {
                correlator_index = Some(parse_number("correlatorIndex", &a.value)?);
            }
            "numPreceedingRecordsMissing" => {
                preceding_missing = Some(parse_number("numPreceedingRecordsMissing", &a.value)?);
            }
            _ => rest.push(a),
        }
    }
    let record_type = record_type.ok_or(CmsXmlErrorKind::MissingType)?;
    Ok(CmsRecord {
        kind: CmsRecordKind::from_type(&record_type),
        record_type,
        time_utc: time.as_deref().and_then(cms_time),
        time,
        record_index,
        correlator_index,
        preceding_missing,
        attrs: rest,
        nodes: Vec::new(),
        raw: None,
    })
}
