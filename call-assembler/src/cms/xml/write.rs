//! Writing CMS CDR XML: batches that [`parse_cms_xml`] reads back to the same value.

use std::fmt::Write as _;

use super::{CmsBatch, CmsRecord, CmsRecordKind, is_xml_ws};
#[cfg(doc)]
use super::{CmsNode, parse_cms_xml};

/// Writes a `<records>` batch as CMS does (an XML declaration, then `<records session=..
/// callBridge=..>` and one `<record>` per line). Record indexes are written as the records
/// carry them: whoever forwards records numbers them (see `cdr_sinks::http_cdr::SessionWriter`).
pub fn write_cms_records(
    session: &str,
    call_bridge: Option<&str>,
    records: &[CmsRecord<'_>],
) -> Vec<u8> {
    let mut out = String::with_capacity(128 + records.len() * 512);
    out.push_str("<?xml version=\"1.0\"?>");
    out.push_str("<records");
    write_attr(&mut out, "session", session);
    if let Some(cb) = call_bridge {
        write_attr(&mut out, "callBridge", cb);
    }
    out.push('>');
    for r in records {
        write_record(&mut out, r);
    }
    out.push_str("</records>");
    out.into_bytes()
}

/// Writes a batch so that [`parse_cms_xml`] reads back the same value: the envelope as it is
/// (no `session` attribute when it is `None`), or, for `wrapped: false` and exactly one record,
/// the bare record.
///
/// Values are escaped as needed (`&`, `<`, `>`, quotes, carriage returns, and tabs and line
/// breaks in attribute values); a text value that begins or ends in whitespace gets that
/// whitespace as character references, which the reader keeps. Names and node depths are
/// written as they are: a value built by hand must keep the invariants the reader guarantees
/// (XML names, [`CmsNode::depth`] at most one more than the node before, `raw` only for
/// unknown types, `time_utc` read from `time`).
pub fn write_cms_batch(batch: &CmsBatch<'_>) -> Vec<u8> {
    let mut out = String::with_capacity(128 + batch.records.len() * 512);
    out.push_str("<?xml version=\"1.0\"?>");
    if let (false, [record]) = (batch.wrapped, batch.records.as_slice()) {
        write_record(&mut out, record);
        return out.into_bytes();
    }
    out.push_str("<records");
    if let Some(s) = &batch.session {
        write_attr(&mut out, "session", s);
    }
    if let Some(cb) = &batch.call_bridge {
        write_attr(&mut out, "callBridge", cb);
    }
    if let Some(n) = batch.preceding_missing {
        write_attr(&mut out, "numPreceedingRecordsMissing", &n.to_string());
    }
    for a in &batch.attrs {
        write_attr(&mut out, &a.name, &a.value);
    }
    out.push('>');
    for r in &batch.records {
        write_record(&mut out, r);
    }
    out.push_str("</records>");
    out.into_bytes()
}

fn write_record(out: &mut String, r: &CmsRecord<'_>) {
    if let (CmsRecordKind::Unknown, Some(raw)) = (r.kind, &r.raw) {
        out.push_str(raw);
        out.push('\n');
        return;
    }
    out.push_str("<record");
    write_attr(out, "type", &r.record_type);
    if let Some(t) = &r.time {
        write_attr(out, "time", t);
    }
    for (name, v) in [
        ("recordIndex", r.record_index),
        ("correlatorIndex", r.correlator_index),
        ("numPreceedingRecordsMissing", r.preceding_missing),
    ] {
        if let Some(v) = v {
            write_attr(out, name, &v.to_string());
        }
    }
    for a in &r.attrs {
        write_attr(out, &a.name, &a.value);
    }
    out.push_str(">\n");
    let mut open: Vec<&str> = Vec::new();
    for (i, node) in r.nodes.iter().enumerate() {
        let depth = usize::from(node.depth).min(open.len());
        while open.len() > depth {
            if let Some(name) = open.pop() {
                let _ = write!(out, "</{name}>");
            }
        }
        out.push('<');
        out.push_str(&node.name);
        for a in &node.attrs {
            write_attr(out, &a.name, &a.value);
        }
        let has_children = r
            .nodes
            .get(i + 1)
            .is_some_and(|next| usize::from(next.depth) > depth);
        if node.text.is_empty() && !has_children {
            out.push_str("/>");
            continue;
        }
        out.push('>');
        write_text(out, &node.text);
        if has_children {
            open.push(&node.name);
        } else {
            let _ = write!(out, "</{}>", node.name);
        }
    }
    while let Some(name) = open.pop() {
        let _ = write!(out, "</{name}>");
    }
    out.push_str("</record>\n");
}

fn write_attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_text(out: &mut String, text: &str) {
    let lead = text.len() - text.trim_start_matches(is_xml_ws).len();
    let tail_from = text.trim_end_matches(is_xml_ws).len().max(lead);
    for (at, c) in text.char_indices() {
        let edge = at < lead || at >= tail_from;
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            ' ' if edge => out.push_str("&#32;"),
            '\t' if edge => out.push_str("&#9;"),
            '\n' if edge => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
}
