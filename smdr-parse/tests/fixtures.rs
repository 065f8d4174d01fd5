//! Every real SMDR fixture, parsed: snapshots of the records, and the lines that must fail.

// Tests may unwrap, index and panic; the base `Instant` of synthetic time has to come from the clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::fmt::Write as _;
use std::path::Path;

use smdr_parse::{Frame, ParseErrorKind, SmdrFramer, SmdrRecord};

/// Lines of the fixtures that are really malformed, as (file name, line number).
const KNOWN_MALFORMED: &[(&str, u64)] = &[
    // Avaya's documentation prints `I` in the 0/1 "Is Internal" field (a typo, see SOURCES.md).
    ("avaya_ipofficekb_basic_examples.txt", 2),
];

fn frames(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut framer = SmdrFramer::default();
    framer.push(bytes);
    let mut out = Vec::new();
    while let Some(f) = framer.next_frame() {
        match f {
            Frame::Line { line, number, .. } => out.push((number, line.to_vec())),
            Frame::TooLong { number, .. } => panic!("line {number} too long"),
        }
    }
    if let Some(Frame::Line { line, number, .. }) = framer.finish() {
        out.push((number, line.to_vec()));
    }
    out
}

/// One compact line per record: its JSON without the empty optional fields.
fn compact(record: &SmdrRecord<'_>) -> String {
    let mut v = serde_json::to_value(record).unwrap();
    v.as_object_mut().unwrap().retain(|_, v| !v.is_null());
    v.to_string()
}

#[test]
fn snapshot_every_fixture() {
    insta::glob!("../../fixtures/smdr", "**/*.txt", |path| {
        let bytes = std::fs::read(path).unwrap();
        let mut out = String::new();
        for (number, line) in frames(&bytes) {
            match SmdrRecord::parse(&line) {
                Ok(r) => writeln!(out, "{number}: {}", compact(&r)).unwrap(),
                Err(e) => writeln!(out, "{number}: ERROR {e}").unwrap(),
            }
        }
        let head: String = String::from_utf8_lossy(&bytes)
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
        insta::with_settings!({
            description => format!("{}\n{head}\n...", path.file_name().unwrap().to_string_lossy()),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(out);
        });
    });
}

#[test]
fn every_fixture_line_parses_except_the_really_malformed() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/smdr");
    let mut files = 0;
    let mut records = 0;
    let mut failures = Vec::new();
    for dir in [base.clone(), base.join("ccbc")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "txt") {
                continue;
            }
            files += 1;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            for (number, line) in frames(&std::fs::read(&path).unwrap()) {
                match SmdrRecord::parse(&line) {
                    Ok(r) => {
                        records += 1;
                        // Every re-written record parses back to itself.
                        assert_eq!(
                            SmdrRecord::parse(&r.to_line()).unwrap(),
                            r,
                            "{name}:{number}"
                        );
                    }
                    Err(e) => failures.push((name.clone(), number, e)),
                }
            }
        }
    }
    assert_eq!(files, 12);
    let failed: Vec<(&str, u64)> = failures.iter().map(|(n, l, _)| (n.as_str(), *l)).collect();
    assert_eq!(failed, KNOWN_MALFORMED, "{failures:?}");
    assert!(matches!(
        failures[0].2.kind,
        ParseErrorKind::InvalidField {
            field: smdr_parse::Field::IsInternal,
            ..
        }
    ));
    // 6 + 800 + 326 + 24 + the 4,336 ccbc records, less the one malformed line.
    assert_eq!(records, 6 + 800 + 326 + 24 + 4336 - 1);
    // The split stream's first record has made-up values in field 18; it is kept as written.
    let split = std::fs::read(base.join("ccbc_tcp_split_stream_3chunks.txt")).unwrap();
    let (_, first) = &frames(&split)[0];
    let r = SmdrRecord::parse(first).unwrap();
    assert_eq!(r.auth_valid.as_ref().unwrap(), "17");
    assert_eq!(r.is_auth_valid(), None);
}

#[test]
fn ccbc_record_details() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/smdr/ccbc");
    let line = |file: &str, n: u64| -> Vec<u8> {
        frames(&std::fs::read(base.join(file)).unwrap())
            .into_iter()
            .find(|(m, _)| *m == n)
            .unwrap()
            .1
    };
    // Garbled CLI bytes are kept as bytes, not rejected.
    let l = line("ccbc_2017-07-26_garbage-cli-bytes.txt", 65);
    let r = SmdrRecord::parse(&l).unwrap();
    assert_eq!(r.caller.as_bytes(), b"\xC3\xB5\xC2\xB6\x62\xE2\x80\x9E");
    // A conference device with a negative number.
    let l = line("ccbc_2017-05-26_fw-upgrade_two-reboots.txt", 96);
    let r = SmdrRecord::parse(&l).unwrap();
    let devices = [r.party1_device, r.party2_device].map(|d| d.map(|d| d.to_string()));
    assert!(
        devices.contains(&Some("V-1610600575".into())),
        "{devices:?}"
    );
    // 35 fields: the UTC record time.
    let l = line("ccbc_2019-10-10_35field-upgrade.txt", 132);
    let r = SmdrRecord::parse(&l).unwrap();
    assert_eq!(r.field_count, 35);
    assert_eq!(
        r.smdr_record_time.unwrap().to_string(),
        "2019-10-10 17:45:11"
    );
    // SIP URIs in the number fields.
    let all = std::fs::read(base.join("ccbc_2019-10-31_to_11-01_sip-trunk.txt")).unwrap();
    let sip = frames(&all)
        .into_iter()
        .filter_map(|(_, l)| SmdrRecord::parse(&l).ok().map(|r| r.into_owned()))
        .find(|r| r.caller.as_bytes().ends_with(b"@broadconnect.ca"))
        .unwrap();
    assert!(sip.caller.as_str().unwrap().contains('@'));
    // Park time far beyond a byte.
    assert!(
        frames(&all)
            .iter()
            .filter_map(|(_, l)| SmdrRecord::parse(l).ok().map(|r| r.park_time))
            .any(|p| p == 3258)
    );
}
