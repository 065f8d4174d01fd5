//! The CMS CDR XML reader and writer: round trips of generated batches, arbitrary and mutated
//! bytes, and truncated fixtures (a body is read whole or not at all).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use call_assembler::{
    CmsAttr, CmsBatch, CmsNode, CmsRecord, CmsRecordKind, parse_cms_xml, write_cms_batch,
    write_cms_records,
};
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/cms")
}

/// Every XML fixture, by name.
fn fixture_files() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![fixtures()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "xml") {
                let name = p.strip_prefix(fixtures()).unwrap().display().to_string();
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    assert_eq!(out.len(), 20, "the CMS fixtures: 10 files and 10 posts");
    out
}

/// `parse(write(b)) == b` and, for bodies that parsed, writing is stable.
fn check_round_trip(batch: &CmsBatch<'_>) {
    let written = write_cms_batch(batch);
    let again = parse_cms_xml(&written)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&written)));
    assert_eq!(&again, batch, "{}", String::from_utf8_lossy(&written));
    assert_eq!(write_cms_batch(&again), written);
}

#[test]
fn every_fixture_reads_back_after_writing() {
    for (name, bytes) in fixture_files() {
        match parse_cms_xml(&bytes) {
            Ok(batch) => {
                check_round_trip(&batch);
                if let Some(session) = &batch.session {
                    let w =
                        write_cms_records(session, batch.call_bridge.as_deref(), &batch.records);
                    assert_eq!(parse_cms_xml(&w).unwrap().records, batch.records, "{name}");
                }
            }
            Err(e) => assert!(name.contains("MALFORMED"), "{name}: {e}"),
        }
    }
}

#[test]
fn malformed_fixture_is_an_error_with_a_position() {
    let bytes =
        std::fs::read(fixtures().join("mividas_debuglog__two_roots_stray_cdrTag_MALFORMED.xml"))
            .unwrap();
    let e = parse_cms_xml(&bytes).unwrap_err();
    assert_eq!(e.kind, call_assembler::CmsXmlErrorKind::AfterRoot);
    // The second `<records` root.
    assert_eq!(&bytes[e.position..e.position + 8], b"<records");
    assert!(e.position > 100);
}

#[test]
fn truncated_fixtures_never_parse_partially() {
    for (name, bytes) in fixture_files() {
        let Ok(whole) = parse_cms_xml(&bytes) else {
            continue;
        };
        // The document ends at its last '>'; every shorter prefix is an error.
        let end = bytes.iter().rposition(|&b| b == b'>').unwrap() + 1;
        for cut in 0..end {
            assert!(
                parse_cms_xml(&bytes[..cut]).is_err(),
                "{name}: prefix of {cut} bytes parsed"
            );
        }
        for cut in end..=bytes.len() {
            assert_eq!(parse_cms_xml(&bytes[..cut]).unwrap(), whole, "{name}");
        }
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "name",
            "call",
            "callLeg",
            "state",
            "remoteAddress",
            "rxVideo",
            "codec",
            "alarm",
            "durationSeconds",
            "x:y",
            "a.b-c_d",
            "é",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z_][a-zA-Z0-9_.-]{0,6}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ \t\n\ra-z&<>\"'\\]é😀]{0,10}",
        any::<String>(),
        Just(String::new()),
    ]
}

fn attrs(reserved: &'static [&'static str]) -> impl Strategy<Value = Vec<CmsAttr<'static>>> {
    prop::collection::vec((name(), text()), 0..3).prop_map(move |v| {
        let mut seen: Vec<String> = Vec::new();
        v.into_iter()
            .filter(|(n, _)| {
                let fresh = !reserved.contains(&n.as_str()) && !seen.contains(n);
                seen.push(n.clone());
                fresh
            })
            .map(|(n, v)| CmsAttr {
                name: Cow::Owned(n),
                value: Cow::Owned(v),
            })
            .collect()
    })
}

fn nodes() -> impl Strategy<Value = Vec<CmsNode<'static>>> {
    prop::collection::vec((0u16..4, name(), attrs(&[]), text()), 0..8).prop_map(|v| {
        let mut prev: Option<u16> = None;
        v.into_iter()
            .map(|(d, n, a, t)| {
                let depth = match prev {
                    None => 0,
                    Some(p) => d.min(p + 1),
                };
                prev = Some(depth);
                CmsNode {
                    depth,
                    name: Cow::Owned(n),
                    attrs: a,
                    text: Cow::Owned(t),
                }
            })
            .collect()
    })
}

const RECORD_ATTRS: &[&str] = &[
    "type",
    "time",
    "recordIndex",
    "correlatorIndex",
    "numPreceedingRecordsMissing",
];

fn record() -> impl Strategy<Value = CmsRecord<'static>> {
    let record_type = prop_oneof![
        prop::sample::select(vec![
            "callStart",
            "callEnd",
            "callLegStart",
            "callLegUpdate",
            "callLegEnd",
            "recordingStart",
            "recordingEnd",
            "streamingStart",
            "streamingEnd",
        ])
        .prop_map(str::to_owned),
        text(),
    ];
    let time = prop_oneof![
        Just(None),
        (0i64..4_000_000_000).prop_map(|s| Some(
            chrono::DateTime::from_timestamp(s, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        )),
        "2022-05-17T10:0[0-9]:2[0-9](Z|\\+01:00)".prop_map(Some),
        text().prop_map(Some),
    ];
    (
        record_type,
        time,
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u64>()),
        attrs(RECORD_ATTRS),
        nodes(),
    )
        .prop_map(|(ty, time, ri, ci, pm, attrs, nodes)| {
            let mut r = CmsRecord::new(ty);
            if let Some(t) = time {
                r = r.with_time(t);
            }
            r.record_index = ri;
            r.correlator_index = ci;
            r.preceding_missing = pm;
            r.attrs = attrs;
            r.nodes = nodes;
            r
        })
}

fn batch() -> impl Strategy<Value = CmsBatch<'static>> {
    (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(any::<u64>()),
        attrs(&["session", "callBridge", "numPreceedingRecordsMissing"]),
        any::<bool>(),
        prop::collection::vec(record(), 0..5),
    )
        .prop_map(|(session, call_bridge, pm, attrs, bare, records)| {
            let wrapped = !(bare && records.len() == 1);
            CmsBatch {
                session: if wrapped {
                    session.map(Cow::Owned)
                } else {
                    None
                },
                call_bridge: if wrapped {
                    call_bridge.map(Cow::Owned)
                } else {
                    None
                },
                preceding_missing: if wrapped { pm } else { None },
                attrs: if wrapped { attrs } else { Vec::new() },
                wrapped,
                records,
            }
        })
}

/// Mutates a fixture: overwrites, inserts or removes bytes at the given places.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, b) in edits {
        if bytes.is_empty() {
            bytes.push(b);
            continue;
        }
        let at = at % bytes.len();
        match op % 3 {
            0 => bytes[at] = b,
            1 => bytes.insert(at, b),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// parse(write(x)) == x for generated batches. A record of an unknown type reads back with
    /// its written XML as `raw`; apart from that it is the same, and from then on exact.
    #[test]
    fn generated_batches_read_back(b in batch()) {
        let written = write_cms_batch(&b);
        let again = parse_cms_xml(&written)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&written))))?;
        let mut cleared = again.clone().into_owned();
        for (r, orig) in cleared.records.iter_mut().zip(&b.records) {
            if r.kind == CmsRecordKind::Unknown && orig.raw.is_none() {
                prop_assert!(r.raw.is_some());
                r.raw = None;
            }
        }
        prop_assert_eq!(&cleared, &b);
        check_round_trip(&again);
        if let Some(s) = &b.session {
            let w = write_cms_records(s, b.call_bridge.as_deref(), &b.records);
            let r = parse_cms_xml(&w).unwrap();
            prop_assert_eq!(r.records.len(), b.records.len());
        }
    }

    /// Arbitrary bytes: no panic; whatever parses writes back to itself.
    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(b) = parse_cms_xml(&bytes) {
            check_round_trip(&b);
        }
    }

    /// Fixtures with a few bytes changed: no panic, an error within the body, and whatever
    /// still parses writes back to itself.
    #[test]
    fn mutated_fixtures(pick in 0usize..20, edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4)) {
        static FILES: std::sync::OnceLock<Vec<(String, Vec<u8>)>> = std::sync::OnceLock::new();
        let files = FILES.get_or_init(fixture_files);
        let bytes = mutate(files[pick % files.len()].1.clone(), &edits);
        match parse_cms_xml(&bytes) {
            Ok(b) => check_round_trip(&b),
            Err(e) => prop_assert!(e.position <= bytes.len(), "{e}"),
        }
    }
}
