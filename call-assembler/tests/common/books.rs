//! Asterisk's own books for one call: the figures its CDR rows (`cdr_csv`, grouped by
//! linkedid, as in a capture's `truth.json`) give the call, worked out independently of the
//! library so that the tests can hold every path (AMI, CEL CSV, CEL tables) to them.
//!
//! # The rule
//!
//! Asterisk writes one row per channel and partner. The **calling channel** is the one whose
//! `uniqueid` is the linkedid (all rows when no row is its), together with its Local channel
//! half when it is a Local `;1` (the `;2` that runs the dialplan, as a trunk channel would).
//! Then:
//! * `duration`: the latest `end` of all rows minus the earliest `start`;
//! * `billsec`: that `end` minus the earliest `answer` of the calling channel's rows (the PBX
//!   answering the caller: a queue, an IVR or a `Wait` that answers counts), 0 when it has none;
//! * `disposition`: the first of `ANSWERED`, `BUSY`, `CONGESTION`, `FAILED`, `NO ANSWER` (in
//!   that order) among the calling channel's rows, else `NO ANSWER`.
//!
//! CDR times have one-second resolution: durations are compared within one second.
//!
//! Included by `call-assembler/tests/common/mod.rs` and by `bins/tests/common/mod.rs`.

use chrono::NaiveDateTime;

/// What Asterisk's rows say about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Books {
    /// Seconds from the start to the end.
    pub(crate) duration: i64,
    /// Seconds from the calling channel's answer to the end.
    pub(crate) billsec: i64,
    /// `ANSWERED`, `NO ANSWER`, `BUSY`, `FAILED` or `CONGESTION`.
    pub(crate) disposition: String,
}

fn time(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok()
}

/// The books of `linkedid` from its rows (`truth.json`'s `cdr` objects: `start`, `answer`,
/// `end`, `disposition`, `uniqueid`).
pub(crate) fn books(linkedid: &str, rows: &[serde_json::Value]) -> Books {
    let field = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_owned();
    let start = rows.iter().filter_map(|r| time(&field(r, "start"))).min();
    let end = rows.iter().filter_map(|r| time(&field(r, "end"))).max();
    let (start, end) = (start.expect("a row with a start"), end.expect("an end"));
    let own: Option<String> = rows
        .iter()
        .find(|r| field(r, "uniqueid") == linkedid)
        .map(|r| field(r, "channel"));
    let half = own
        .as_deref()
        .filter(|c| c.starts_with("Local/"))
        .and_then(|c| c.strip_suffix(";1"))
        .map(|base| format!("{base};2"));
    let mut calling: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| {
            field(r, "uniqueid") == linkedid
                || half.as_deref() == Some(field(r, "channel").as_str())
        })
        .collect();
    if calling.is_empty() {
        calling = rows.iter().collect();
    }
    let answer = calling
        .iter()
        .filter_map(|r| time(&field(r, "answer")))
        .min();
    let has = |d: &str| calling.iter().any(|r| field(r, "disposition") == d);
    let disposition = ["ANSWERED", "BUSY", "CONGESTION", "FAILED", "NO ANSWER"]
        .into_iter()
        .find(|d| has(d))
        .unwrap_or("NO ANSWER");
    Books {
        duration: (end - start).num_seconds(),
        billsec: answer.map_or(0, |a| (end - a.max(start)).num_seconds().max(0)),
        disposition: disposition.to_owned(),
    }
}

/// Where a call's figures part from the books (empty when they agree): duration and billsec
/// within one second, the disposition exactly.
pub(crate) fn disagreements(
    books: &Books,
    duration: u32,
    billsec: u32,
    disposition: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    if (i64::from(duration) - books.duration).abs() > 1 {
        out.push(format!("duration {duration} vs {}", books.duration));
    }
    if (i64::from(billsec) - books.billsec).abs() > 1 {
        out.push(format!("billsec {billsec} vs {}", books.billsec));
    }
    if disposition != books.disposition {
        out.push(format!(
            "disposition {disposition} vs {}",
            books.disposition
        ));
    }
    out
}
