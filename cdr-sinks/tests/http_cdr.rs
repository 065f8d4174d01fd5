//! The HTTP CDR (CMS XML) format over every CMS fixture: snapshots of what each body parses
//! to, parse -> write -> parse, and the reference receiver's JSON API shape.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cdr_sinks::http_cdr::{self, CmsBatch, HttpCdrErrorKind, SessionWriter};
use serde::Serialize;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/cms")
}

/// What a body reads as, for the snapshot.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Parsed<'a> {
    Batch(CmsBatch<'a>),
    Error { position: usize, kind: String },
}

#[test]
fn snapshot_every_fixture_body() {
    insta::glob!("../../fixtures/cms", "**/*.xml", |path| {
        let bytes = std::fs::read(path).unwrap();
        let parsed = match http_cdr::parse(&bytes) {
            Ok(b) => Parsed::Batch(b),
            Err(e) => Parsed::Error {
                position: e.position,
                kind: e.kind.to_string(),
            },
        };
        insta::with_settings!({
            description => String::from_utf8_lossy(&bytes).into_owned(),
            omit_expression => true,
        }, {
            insta::assert_yaml_snapshot!(parsed);
        });
    });
}

#[test]
fn every_fixture_parses_writes_and_parses_the_same() {
    let mut dirs = vec![fixtures()];
    let mut n = 0;
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "xml") {
                continue;
            }
            n += 1;
            let bytes = std::fs::read(&p).unwrap();
            let name = p.display().to_string();
            let batch = match http_cdr::parse(&bytes) {
                Ok(b) => b,
                Err(e) => {
                    assert!(name.contains("MALFORMED"), "{name}: {e}");
                    assert_eq!(e.kind, HttpCdrErrorKind::AfterRoot);
                    continue;
                }
            };
            let written = http_cdr::write_batch(&batch);
            assert_eq!(http_cdr::parse(&written).unwrap(), batch, "{name}");
            // Re-sent under another session by a relay: same records, new envelope.
            let again = http_cdr::write_records("relay-1", Some("cb"), &batch.records);
            let b2 = http_cdr::parse(&again).unwrap();
            assert_eq!(b2.records, batch.records, "{name}");
            assert_eq!(b2.session.as_deref(), Some("relay-1"));
            assert!(b2.wrapped);
        }
    }
    assert_eq!(n, 20);
}

#[test]
fn a_relay_renumbers_the_meeting_contiguously() {
    let mut writer = SessionWriter::restore("9f0c", None, 41);
    let mut next = 41;
    for i in 1..=10 {
        let bytes =
            std::fs::read(fixtures().join(format!("meeting_3legs/posts/{i:02}.xml"))).unwrap();
        let mut batch = http_cdr::parse(&bytes).unwrap();
        let out = writer.write(&mut batch.records);
        let forwarded = http_cdr::parse(&out).unwrap();
        for r in &forwarded.records {
            assert_eq!(r.record_index, Some(next));
            next += 1;
        }
        // Everything but the index is forwarded as it came.
        for (a, b) in forwarded.records.iter().zip(&batch.records) {
            assert_eq!(a, b);
        }
    }
    assert_eq!(writer.next_index(), 52);
}

/// Builds the XML of a record from its `xmltodict` JSON (the reverse of `record_to_api_json`).
fn xml_of_json_record(v: &Value) -> String {
    fn element(out: &mut String, name: &str, v: &Value) {
        match v {
            Value::Null => write!(out, "<{name}/>").unwrap(),
            Value::String(s) => write!(out, "<{name}>{}</{name}>", escape(s)).unwrap(),
            Value::Array(items) => {
                for item in items {
                    element(out, name, item);
                }
            }
            Value::Object(m) => {
                write!(out, "<{name}").unwrap();
                for (k, v) in m.iter().filter(|(k, _)| k.starts_with('@')) {
                    write!(out, " {}=\"{}\"", &k[1..], escape(v.as_str().unwrap())).unwrap();
                }
                out.push('>');
                if let Some(t) = m.get("#text") {
                    out.push_str(&escape(t.as_str().unwrap()));
                }
                for (k, v) in m.iter().filter(|(k, _)| !k.starts_with(['@', '#'])) {
                    element(out, k, v);
                }
                write!(out, "</{name}>").unwrap();
            }
            other => panic!("not xmltodict: {other}"),
        }
    }
    fn escape(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('"', "&quot;")
    }
    let mut out = String::new();
    element(&mut out, "record", v);
    out
}

#[test]
fn api_json_reproduces_the_reference_receivers_records() {
    let page: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("ciscocms_cdr-receiver-db__api_v1_records_page1.json"))
            .unwrap(),
    )
    .unwrap();
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 6);
    // The records as CMS would have posted them (oldest first), one batch.
    let mut body = String::from("<?xml version=\"1.0\"?><records session=\"s\">");
    for r in records.iter().rev() {
        body.push_str(&xml_of_json_record(r));
    }
    body.push_str("</records>");
    let batch = http_cdr::parse(body.as_bytes()).unwrap();
    assert_eq!(batch.records.len(), 6);
    for (record, want) in batch.records.iter().zip(records.iter().rev()) {
        assert_eq!(&http_cdr::record_to_api_json(record), want);
    }
    // The whole page: newest first.
    assert_eq!(http_cdr::api_page(batch.records.iter().rev()), page);
    let end: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("ciscocms_cdr-receiver-db__api_v1_records_page2_end.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(http_cdr::api_page([]), end);
}

#[test]
fn api_json_of_a_fixture_record_with_alarms() {
    let bytes = std::fs::read(fixtures().join("meeting_3legs/posts/07.xml")).unwrap();
    let batch = http_cdr::parse(&bytes).unwrap();
    let v = http_cdr::record_to_api_json(&batch.records[0]);
    assert_eq!(v["@type"], "callLegEnd");
    assert_eq!(v["@recordIndex"], "3551");
    assert_eq!(v["callLeg"]["@id"], "9d9a01c5-8e44-4953-b8bc-a0fdf56ea1ef");
    assert_eq!(v["callLeg"]["durationSeconds"], "3953");
    assert_eq!(v["callLeg"]["rxVideo"]["maxSizeWidth"], "1280");
    assert_eq!(
        v["callLeg"]["alarm"],
        serde_json::json!([
            {"@type": "packetLoss", "@durationPercentage": "1.4"},
            {"@type": "excessiveJitter", "@durationPercentage": "0.0"}
        ])
    );
}
