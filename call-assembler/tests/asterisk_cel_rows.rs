//! Every capture's `cel.csv` read three ways gives the same calls: line by line with
//! `CelRow::parse_csv_line`, framed with `csv::record_end` and read through
//! `CelColumns::sample()`, and as a database would hand the rows over (column name to value,
//! `eventtime` as local `YYYY-MM-DD HH:MM:SS.ffffff`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

mod common;

use call_assembler::csv::{record_end, split_record};
use call_assembler::{CelColumns, CelRow};
use chrono::DateTime;
use common::{captures, config, name_of, replay_cel};

/// `1795355648.579430` as `2026-11-22 13:54:08.579430` (the lab PBX ran on UTC).
fn db_time(epoch: &str) -> String {
    let (secs, micros) = epoch.split_once('.').unwrap();
    let t = DateTime::from_timestamp(secs.parse().unwrap(), micros.parse::<u32>().unwrap() * 1000)
        .unwrap()
        .naive_utc();
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

#[test]
fn cel_rows_from_lines_columns_and_a_database_give_the_same_calls() {
    let columns = CelColumns::sample();
    for dir in captures() {
        let name = name_of(&dir);
        let bytes = std::fs::read(dir.join("cel.csv")).unwrap();
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap();
        let mut at = 0;
        let mut lines = Vec::new();
        while let Some(n) = record_end(&bytes[at..]) {
            lines.push(std::str::from_utf8(&bytes[at..at + n]).unwrap());
            at += n;
        }
        assert_eq!(at, bytes.len(), "{name}: a record without its newline");
        assert_eq!(
            lines.len() as u64,
            truth["n_cel_rows"].as_u64().unwrap(),
            "{name}"
        );
        let (mut by_line, mut by_columns, mut from_db) = (Vec::new(), Vec::new(), Vec::new());
        for line in lines {
            let row = CelRow::parse_csv_line(line).unwrap();
            let secs: f64 = row.eventtime.parse().unwrap();
            let fields = split_record(line).unwrap();
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            let mapped = CelRow::from_fields(&columns, &fields).unwrap();
            assert_eq!(mapped, row, "{name}: {line}");
            let time = db_time(&row.eventtime);
            let named = columns
                .names()
                .iter()
                .map(|n| match n.as_str() {
                    "eventtime" => ("eventtime", time.as_str()),
                    "extra" => ("eventextra", ""),
                    n => (n, ""),
                })
                .zip(&fields)
                .map(|((n, t), f)| (n, if n == "eventtime" { t } else { *f }));
            let db = CelRow::from_named(named.chain([("id", "1")])).unwrap();
            assert_eq!(db.eventtime, time);
            by_line.push((secs, row));
            by_columns.push((secs, mapped));
            from_db.push((secs, db));
        }
        let (calls, asm) = replay_cel(&by_line, config());
        assert!(asm.is_idle(), "{name}");
        assert_eq!(
            calls.len(),
            truth["calls"].as_object().unwrap().len(),
            "{name}: number of calls"
        );
        assert!(calls.iter().all(|c| c.complete), "{name}");
        assert_eq!(replay_cel(&by_columns, config()).0, calls, "{name}");
        assert_eq!(
            replay_cel(&from_db, config()).0,
            calls,
            "{name}: database rows"
        );
    }
}
