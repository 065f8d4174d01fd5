//! Calls rebuilt from Asterisk's own CDR rows (`AmiAssembler::call_from_cdr`) against the calls
//! the AMI path assembles from the same capture: every capture's `cdr.csv` (cdr_csv with
//! `loguniqueid`, `loguserfield` and `newcdrcolumns`: 21 columns) is grouped by linkedid and
//! each group rebuilt into one call.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use call_assembler::csv::{record_end, split_record};
use call_assembler::{AmiAssembler, AmiAssemblerConfig, Call};
use chrono::{NaiveDateTime, Timelike};
use common::{captures, config, name_of, replay_ami};
use compact_str::CompactString;

use call_assembler::csv::CDR_COLUMNS;

type Row = BTreeMap<CompactString, CompactString>;

/// A capture's cdr.csv rows by linkedid.
fn cdr_rows(bytes: &[u8]) -> BTreeMap<String, Vec<Row>> {
    let mut by_linkedid: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut at = 0;
    while let Some(n) = record_end(&bytes[at..]) {
        let line = std::str::from_utf8(&bytes[at..at + n]).unwrap();
        at += n;
        let fields = split_record(line).unwrap();
        assert_eq!(fields.len(), CDR_COLUMNS.len(), "{line}");
        let row: Row = CDR_COLUMNS
            .iter()
            .map(|c| CompactString::from(*c))
            .zip(fields.into_iter().map(CompactString::from))
            .collect();
        by_linkedid
            .entry(row["linkedid"].to_string())
            .or_default()
            .push(row);
    }
    assert_eq!(at, bytes.len());
    by_linkedid
}

/// The lab's trunk is `SIP/trunk`: with the prefix, the direction of 16 (whose trunk row's
/// dcontext the transfer already changed to `internal`) is inbound from the CDR too.
fn lab_config() -> AmiAssemblerConfig {
    AmiAssemblerConfig {
        trunk_channel_prefixes: vec!["SIP/trunk".into()],
        ..config()
    }
}

fn second(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(0).unwrap()
}

#[test]
fn calls_from_cdr_rows_match_the_ami_calls() {
    for dir in captures() {
        let name = name_of(&dir);
        let groups = cdr_rows(&std::fs::read(dir.join("cdr.csv")).unwrap());
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap();
        let (ami, _) = replay_ami(&std::fs::read(dir.join("ami.raw")).unwrap(), lab_config());
        let asm = AmiAssembler::new(lab_config());
        let rebuilt: Vec<Call> = groups
            .values()
            .map(|rows| asm.call_from_cdr(rows).unwrap())
            .collect();
        let ids = |calls: &[Call]| calls.iter().map(|c| c.id.clone()).collect::<BTreeSet<_>>();
        assert_eq!(ids(&rebuilt), ids(&ami), "{name}: ids");
        for c in &rebuilt {
            let a = ami.iter().find(|a| a.id == c.id).unwrap();
            let tc = &truth["calls"][c.linkedid.as_str()];
            assert!(c.reconciled && c.complete && !a.reconciled, "{name}");
            assert_eq!((c.part, c.source), (a.part, a.source), "{name}");
            assert_eq!(c.linkedid, a.linkedid, "{name}");
            assert_eq!(c.call_id, a.call_id, "{name}");
            assert_eq!(c.disposition, a.disposition, "{name}: disposition");
            assert_eq!(c.answered, a.answered, "{name}: answered");
            // CDR times are the event times truncated to the second; a row is finalized at
            // its last event, which can be a second before the channel's hangup.
            let near =
                |x: NaiveDateTime, y: NaiveDateTime| (x - second(y)).num_seconds().abs() <= 1;
            assert_eq!(c.start_time, second(a.start_time), "{name}: start");
            assert!(
                near(c.end_time, a.end_time),
                "{name}: end {} vs {}",
                c.end_time,
                a.end_time
            );
            match (c.answer_time, a.answer_time) {
                (Some(x), Some(y)) => assert!(near(x, y), "{name}: answer {x} vs {y}"),
                (x, y) => assert_eq!(x, y, "{name}: answer time"),
            }
            let (billsec, ami_billsec) = (c.billsec.unwrap(), a.billsec.unwrap());
            assert!(
                billsec.abs_diff(ami_billsec) <= 1,
                "{name}: billsec {billsec} vs {ami_billsec}"
            );
            assert!(c.duration.abs_diff(a.duration) <= 1, "{name}: duration");
            if name.starts_with("10_") && c.cdr.len() == 1 {
                // The call that picked up the parked call: its only row is the retriever's
                // Local `;1`, whose caller id followed the connected line to the parked
                // caller (1001); AMI saw the retriever's own, 1005.
                assert_eq!((a.caller.as_str(), c.caller.as_str()), ("1005", "1001"));
            } else {
                assert_eq!(c.caller, a.caller, "{name}: caller");
            }
            if name.starts_with("16_") {
                // The blind transfer moved the trunk channel to `3002@internal` before its CDR
                // rows were written, so both rows (and Asterisk's truth.json) say dst=3002;
                // AMI saw the DID the trunk called, 2001.
                assert_eq!(a.called, "2001", "{name}");
                assert_eq!(c.called, "3002", "{name}");
                assert!(
                    tc["cdr"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|r| r["dst"] == "3002"),
                    "{name}: truth.json"
                );
            } else {
                assert_eq!(c.called, a.called, "{name}: called");
            }
            assert_eq!(c.dialled, c.called, "{name}");
            assert_eq!(c.direction, a.direction, "{name}: direction");
            assert_eq!(c.tenant, a.tenant, "{name}: tenant");
            // The same party answered (the CDR knows no caller id of a channel that is only
            // a dstchannel, so only the device is compared).
            assert_eq!(
                c.answered_by.as_ref().map(|p| &p.device),
                a.answered_by.as_ref().map(|p| &p.device),
                "{name}: answered by"
            );
            // The same channels, and the same uniqueids where the CDR has them (every channel
            // with a row of its own; dialled channels without one have none).
            let channels = |x: &Call| {
                x.legs
                    .iter()
                    .map(|l| l.channel.clone())
                    .collect::<BTreeSet<_>>()
            };
            assert_eq!(channels(c), channels(a), "{name}: channels");
            for l in &c.legs {
                let al = a.legs.iter().find(|al| al.channel == l.channel).unwrap();
                if l.uniqueid.is_empty() {
                    assert!(!l.dialed_by.is_empty(), "{name}: {l:?}");
                } else {
                    assert_eq!(l.uniqueid, al.uniqueid, "{name}: {}", l.channel);
                }
            }
            assert_eq!(c.cdr, groups[c.linkedid.as_str()], "{name}: rows kept");
        }
    }
}

#[test]
fn snapshot_of_a_call_rebuilt_from_the_cdr() {
    let dir = captures()
        .into_iter()
        .find(|d| name_of(d).starts_with("01_"))
        .unwrap();
    let groups = cdr_rows(&std::fs::read(dir.join("cdr.csv")).unwrap());
    assert_eq!(groups.len(), 1);
    let rows = groups.values().next().unwrap();
    let call = AmiAssembler::new(config()).call_from_cdr(rows).unwrap();
    insta::with_settings!({ omit_expression => true }, {
        insta::assert_yaml_snapshot!(call);
    });
    // In JSON the flag shows only on rebuilt calls.
    let json = serde_json::to_value(&call).unwrap();
    assert_eq!(json["reconciled"], true);
    let ami = Call {
        reconciled: false,
        ..call
    };
    assert!(
        serde_json::to_value(&ami)
            .unwrap()
            .get("reconciled")
            .is_none()
    );
}

#[test]
fn cdr_manager_field_names_work_too() {
    // The Cdr events the AMI path keeps (cdr_manager's names, no linkedid or sequence): the
    // caller channel's uniqueid keys the call, which for 11 is its linkedid.
    let dir = captures()
        .into_iter()
        .find(|d| name_of(d).starts_with("11_"))
        .unwrap();
    let (ami, _) = replay_ami(&std::fs::read(dir.join("ami.raw")).unwrap(), config());
    let a = &ami[0];
    let c = AmiAssembler::new(config()).call_from_cdr(&a.cdr).unwrap();
    assert_eq!(c.id, a.id);
    assert_eq!(
        (
            c.disposition.as_str(),
            c.billsec,
            c.caller.as_str(),
            c.called.as_str()
        ),
        (
            a.disposition.as_str(),
            a.billsec,
            a.caller.as_str(),
            a.called.as_str()
        )
    );
    assert_eq!(c.direction, a.direction);
}

/// A named zone (`PBX_TZ`) for Asterisk: the CDR rows' local times are read in it with its
/// daylight saving (Berlin: UTC+2 in July, UTC+1 in November) and AMI's epoch `Timestamp`s
/// become local time in it; `start_utc` is the same instant either way.
#[test]
fn a_named_zone_reads_local_times_with_daylight_saving() {
    let dir = captures()
        .into_iter()
        .find(|d| name_of(d).starts_with("01_"))
        .unwrap();
    let berlin = AmiAssemblerConfig {
        zone: "Europe/Berlin".parse().unwrap(),
        ..config()
    };
    let groups = cdr_rows(&std::fs::read(dir.join("cdr.csv")).unwrap());
    let rows = groups.values().next().unwrap();
    for (date, utc, offset) in [
        ("2026-07-01", "2026-07-01T11:54:08Z", "+02:00"),
        ("2026-11-22", "2026-11-22T12:54:08Z", "+01:00"),
    ] {
        let moved: Vec<BTreeMap<CompactString, CompactString>> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                for k in ["start", "answer", "end"] {
                    if let Some(v) = r.get_mut(k) {
                        *v = format!("{date}{}", &v[10..]).into();
                    }
                }
                r
            })
            .collect();
        let c = AmiAssembler::new(berlin.clone())
            .call_from_cdr(&moved)
            .unwrap();
        assert_eq!(c.start_time.to_string(), format!("{date} 13:54:08"));
        assert_eq!(
            c.start_utc
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            utc
        );
        assert_eq!(c.utc_offset.as_deref(), Some(offset), "{date}");
    }

    let raw = std::fs::read(dir.join("ami.raw")).unwrap();
    let (utc_calls, _) = replay_ami(&raw, config());
    let (local_calls, _) = replay_ami(&raw, berlin);
    let (u, l) = (&utc_calls[0], &local_calls[0]);
    assert_eq!(u.start_time.to_string(), "2026-11-22 13:54:08.579602");
    assert_eq!(l.start_time.to_string(), "2026-11-22 14:54:08.579602");
    assert_eq!(l.utc_offset.as_deref(), Some("+01:00"));
    assert_eq!(l.start_utc, u.start_utc, "the same instant");
}
