//! The CMS assembler over the real Cisco Meeting Server fixtures (`fixtures/cms`): the
//! three-leg meeting of `meeting_3legs/EXPECTED.md`, the cluster sequences of `SOURCES.md`, the
//! recording and streaming fragments, and random orderings and duplicates of the meeting.

// Tests may unwrap, index and panic; the base `Instant` of synthetic time has to come from the clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use call_assembler::{
    Anomaly, Call, CallDirection, CmsAnomaly, CmsAssembler, CmsAssemblerConfig, CmsRecord,
    FlushReason, Output, Source, parse_cms_xml, stable_id,
};
use chrono::NaiveDateTime;
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/cms")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

/// The ten posts of the meeting, in file order.
fn meeting_posts() -> Vec<Vec<u8>> {
    (1..=10)
        .map(|i| read(&format!("meeting_3legs/posts/{i:02}.xml")))
        .collect()
}

fn t(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap()
}

#[derive(Default)]
struct Drained {
    calls: Vec<Call>,
    anomalies: Vec<CmsAnomaly>,
}

fn drain(asm: &mut CmsAssembler, out: &mut Drained) {
    while let Some(o) = asm.poll_output() {
        match o {
            Output::Call(c) => out.calls.push(c),
            Output::Anomaly(Anomaly::Cms { anomaly }) => out.anomalies.push(anomaly),
            other => panic!("unexpected output {other:?}"),
        }
    }
}

/// Feeds bodies in order, one second apart, draining after each; returns what came out after
/// each body, and the assembler.
fn replay(bodies: &[Vec<u8>]) -> (CmsAssembler, Vec<Drained>) {
    let mut asm = CmsAssembler::new(CmsAssemblerConfig {
        site: "hq".into(),
        ..CmsAssemblerConfig::default()
    });
    let base = Instant::now();
    let mut per_body = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let batch = parse_cms_xml(body).unwrap();
        let now = base + Duration::from_secs(i as u64);
        let mut out = Drained::default();
        for r in &batch.records {
            asm.handle_record(now, r);
        }
        drain(&mut asm, &mut out);
        per_body.push(out);
    }
    (asm, per_body)
}

fn row_value<'c>(call: &'c Call, record_type: &str, key: &str, id: &str, field: &str) -> &'c str {
    call.cdr
        .iter()
        .find(|r| {
            r.get("type").map(|v| v.as_str()) == Some(record_type)
                && r.get(key).map(|v| v.as_str()) == Some(id)
        })
        .and_then(|r| r.get(field))
        .map(|v| v.as_str())
        .unwrap_or_else(|| panic!("no {record_type} row for {id} with {field}"))
}

const CALL: &str = "f54bfbc3-c11e-47a6-a918-6a308018ac1d";
const CAROL: &str = "9d9a01c5-8e44-4953-b8bc-a0fdf56ea1ef";
const DAVE: &str = "aa7c3c54-07d6-4af3-b853-a25fe676e554";
const USER2: &str = "900ad298-dd62-4d24-a47f-406fd5564cb2";

#[test]
fn meeting_3legs_gives_what_expected_md_says() {
    let posts = meeting_posts();
    // 4. Batching: 11 raw records, post 09 holds two.
    let counts: Vec<usize> = posts
        .iter()
        .map(|p| parse_cms_xml(p).unwrap().records.len())
        .collect();
    assert_eq!(counts, vec![1, 1, 1, 1, 1, 1, 1, 1, 2, 1]);

    let (mut asm, per_post) = replay(&posts);
    // 6. Exactly one completed call, emitted after post 09 and not before.
    for (i, out) in per_post.iter().enumerate() {
        assert_eq!(
            out.calls.len(),
            usize::from(i == 8),
            "calls after post {:02}",
            i + 1
        );
    }
    // 3. Post 10 (same recordIndex 3141 as post 01) is dropped and reported; no second call.
    assert_eq!(
        per_post[9].anomalies,
        vec![CmsAnomaly::Duplicate {
            call_id: CALL.into(),
            record_type: "callEnd".into(),
            record_index: Some(3141),
        }]
    );
    assert!(per_post[..9].iter().all(|o| o.anomalies.is_empty()));
    asm.flush(Instant::now() + Duration::from_secs(3600));
    let mut rest = Drained::default();
    drain(&mut asm, &mut rest);
    assert!(rest.calls.is_empty() && asm.is_idle() && asm.poll_timeout().is_none());

    // 1. The call.
    let call = &per_post[8].calls[0];
    assert_eq!(call.source, Source::Cms);
    assert_eq!(call.call_id, CALL);
    assert_eq!(call.id, stable_id(Source::Cms, "hq", CALL));
    assert!(call.complete && call.flush_reason.is_none());
    assert_eq!(call.start, "2017-04-24T12:00:11Z");
    assert_eq!(call.start_time, t("2017-04-24T12:00:11"));
    assert_eq!(call.end_time, t("2017-04-24T13:06:05"));
    assert_eq!(
        call.duration, 3955,
        "CMS's durationSeconds, not the wall clock's 3954"
    );
    let call_start = call.cdr.iter().find(|r| r["type"] == "callStart").unwrap();
    assert_eq!(call_start["name"], "techsupport");
    assert_eq!(
        call_start["coSpace"],
        "9edd2132-11ab-481e-8bc8-6ceac75e45b0"
    );
    let call_end = call.cdr.iter().find(|r| r["type"] == "callEnd").unwrap();
    assert_eq!(call_end["callLegsCompleted"], "3");
    assert_eq!(call_end["callLegsMaxActive"], "3");
    assert_eq!(call_end["durationSeconds"], "3955");
    // 4./5. Ten records after dedup, in recordIndex order.
    let indexes: Vec<&str> = call.cdr.iter().map(|r| r["recordIndex"].as_str()).collect();
    assert_eq!(
        indexes,
        [
            "3141", "3142", "3143", "3155", "3156", "3162", "3551", "3552", "3553", "3554"
        ]
    );

    // 2. Exactly three legs.
    let legs: Vec<&str> = call.legs.iter().map(|l| l.uniqueid.as_str()).collect();
    assert_eq!(legs, [CAROL, DAVE, USER2]);
    let carol = &call.legs[0];
    assert_eq!(carol.caller_name, "Carol Tester");
    assert_eq!(carol.channel, "carol.tester@example.org");
    assert_eq!(carol.start, Some(t("2017-04-24T12:00:11")));
    assert_eq!(carol.answer, Some(t("2017-04-24T12:00:11")));
    assert_eq!(carol.end, Some(t("2017-04-24T13:06:05")));
    assert_eq!(carol.hangup_cause_text, "remoteTeardown");
    assert_eq!(
        row_value(call, "callLegEnd", "callLeg", CAROL, "durationSeconds"),
        "3953"
    );
    assert_eq!(
        row_value(call, "callLegEnd", "callLeg", CAROL, "alarm@type"),
        "packetLoss"
    );
    assert_eq!(
        row_value(
            call,
            "callLegEnd",
            "callLeg",
            CAROL,
            "alarm@durationPercentage"
        ),
        "1.4"
    );
    assert_eq!(
        row_value(call, "callLegEnd", "callLeg", CAROL, "alarm#2@type"),
        "excessiveJitter"
    );
    assert_eq!(
        row_value(call, "callLegEnd", "callLeg", CAROL, "rxVideo/codec"),
        "h264"
    );
    assert_eq!(
        row_value(call, "callLegEnd", "callLeg", CAROL, "encryptedMedia"),
        "true"
    );
    let dave = &call.legs[1];
    assert_eq!(dave.caller_name, "dave example");
    assert_eq!(dave.start, Some(t("2017-04-24T12:00:53")));
    assert_eq!(dave.answer, Some(t("2017-04-24T12:00:53")));
    assert_eq!(dave.end, Some(t("2017-04-24T13:06:05")));
    assert_eq!(dave.hangup_cause_text, "remoteTeardown");
    assert_eq!(
        row_value(call, "callLegEnd", "callLeg", DAVE, "durationSeconds"),
        "3912"
    );
    // The leg seen only through an update: created from it, closed by the callEnd.
    let user2 = &call.legs[2];
    assert_eq!(user2.caller_name, "User 2");
    assert_eq!(user2.channel, "user2@example.org");
    assert_eq!(user2.start, Some(t("2017-04-24T12:01:52")));
    assert_eq!(user2.answer, Some(t("2017-04-24T12:01:52")));
    assert_eq!(user2.end, Some(t("2017-04-24T13:06:05")));
    assert_eq!(user2.hangup_cause_text, "");
    let derived = (user2.end.unwrap() - user2.start.unwrap()).num_seconds();
    assert_eq!(derived, 3853);

    assert!(call.answered);
    assert_eq!(call.answer_time, Some(t("2017-04-24T12:00:11")));
    assert_eq!(call.direction, CallDirection::Inbound);
    assert_eq!(call.caller, "carol.tester@example.org");
    assert_eq!(call.called, "techsupport");
    let parties: Vec<(&str, &str)> = call
        .parties
        .iter()
        .map(|p| (p.device.as_str(), p.name.as_str()))
        .collect();
    assert_eq!(
        parties,
        [
            ("carol.tester@example.org", "Carol Tester"),
            ("dave.example@example.org", "dave example"),
            ("user2@example.org", "User 2"),
        ]
    );
    assert_eq!(call.answered_by.as_ref().unwrap().name, "Carol Tester");
    insta::with_settings!({ omit_expression => true }, {
        insta::assert_yaml_snapshot!("meeting_3legs", call);
    });
}

#[test]
fn meeting_3legs_jsonl_holds_the_same_posts() {
    let jsonl = String::from_utf8(read(
        "meeting_3legs/mividas_acano_cdr_techsupport_3legs.jsonl",
    ))
    .unwrap();
    let posts = meeting_posts();
    let mut n = 0;
    for (line, post) in jsonl.lines().zip(&posts) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let raw = v["rawpost"].as_str().unwrap();
        assert_eq!(
            parse_cms_xml(raw.as_bytes()).unwrap(),
            parse_cms_xml(post).unwrap()
        );
        n += 1;
    }
    assert_eq!(n, 10);
}

const CLUSTER_CALL: &str = "d4d90b1d-7590-4a1b-8586-3dfdd35936ba";
const CLUSTER_LEG: &str = "1611cb0c-e6a1-4e54-bd3a-53926d321da3";

fn cluster(last: &str) -> (Vec<Call>, Vec<CmsAnomaly>) {
    let bodies = [
        read("mividas_cms3_cluster__01_callStart.xml"),
        read("mividas_cms3_cluster__02_callLegUpdate_without_prior_callLegStart.xml"),
        read(last),
    ];
    let (mut asm, per_body) = replay(&bodies);
    let mut all = Drained::default();
    for d in per_body {
        all.calls.extend(d.calls);
        all.anomalies.extend(d.anomalies);
    }
    asm.flush(Instant::now() + Duration::from_secs(10));
    drain(&mut asm, &mut all);
    assert!(asm.is_idle());
    (all.calls, all.anomalies)
}

#[test]
fn cluster_01_02_03a_missing_leg_start_and_no_call_end() {
    let (calls, anomalies) = cluster("mividas_cms3_cluster__03a_callLegEnd.xml");
    assert!(anomalies.is_empty(), "{anomalies:?}");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.call_id, CLUSTER_CALL);
    assert!(!call.complete);
    assert_eq!(call.flush_reason, Some(FlushReason::EndOfInput));
    assert_eq!(call.tenant, "5f90ff0f-0705-4341-9b20-42b8df54c012");
    assert_eq!(call.start_time, t("2022-05-17T10:07:29"));
    assert_eq!(call.end_time, t("2022-05-17T10:09:08"));
    assert_eq!(call.duration, 99);
    assert_eq!(call.legs.len(), 1);
    let leg = &call.legs[0];
    assert_eq!(leg.uniqueid, CLUSTER_LEG);
    assert_eq!(leg.channel, "0701234567@node01.example.org");
    assert_eq!(leg.start, Some(t("2022-05-17T10:08:31")));
    assert_eq!(leg.answer, Some(t("2022-05-17T10:08:31")));
    assert_eq!(leg.end, Some(t("2022-05-17T10:09:08")));
    assert_eq!(leg.hangup_cause_text, "remoteTeardown");
    assert_eq!(
        row_value(
            call,
            "callLegEnd",
            "callLeg",
            CLUSTER_LEG,
            "durationSeconds"
        ),
        "98"
    );
    assert_eq!(
        row_value(
            call,
            "callLegEnd",
            "callLeg",
            CLUSTER_LEG,
            "confirmationStatus"
        ),
        "rejected"
    );
    assert_eq!(call.cdr.len(), 3);
    insta::with_settings!({ omit_expression => true }, {
        insta::assert_yaml_snapshot!("cluster_01_02_03a", call);
    });
}

#[test]
fn cluster_01_02_03b_call_end_closes_the_open_leg() {
    let (calls, anomalies) = cluster("mividas_cms3_cluster__03b_callEnd.xml");
    assert!(anomalies.is_empty(), "{anomalies:?}");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert!(call.complete);
    assert_eq!(call.duration, 99);
    assert_eq!(call.end_time, t("2022-05-17T10:09:08"));
    assert_eq!(call.legs.len(), 1);
    let leg = &call.legs[0];
    assert_eq!(leg.uniqueid, CLUSTER_LEG);
    assert_eq!(leg.start, Some(t("2022-05-17T10:08:31")));
    assert_eq!(
        leg.end,
        Some(t("2022-05-17T10:09:08")),
        "closed at the callEnd"
    );
    assert_eq!(leg.hangup_cause_text, "");
    assert!(call.answered);
    assert_eq!(call.caller, "0701234567@node01.example.org");
    assert_eq!(call.called, "Test");
    insta::with_settings!({ omit_expression => true }, {
        insta::assert_yaml_snapshot!("cluster_01_02_03b", call);
    });
}

#[test]
fn fragments_attach_recordings_and_streams() {
    for (start, end, path_field, call_id) in [
        (
            "mividas_fragment__recordingStart.xml",
            "mividas_fragment__recordingEnd.xml",
            "path",
            "0e041bae-4c4b-4292-9809-1afec5379d2f",
        ),
        (
            "mividas_fragment__streamingStart.xml",
            "mividas_fragment__streamingEnd.xml",
            "streamUrl",
            "1cae52fa-27ae-45e7-8c91-646aefbc96f9",
        ),
    ] {
        let (mut asm, per_body) = replay(&[read(start), read(end)]);
        assert!(
            per_body
                .iter()
                .all(|d| d.calls.is_empty() && d.anomalies.is_empty())
        );
        assert_eq!(asm.open_calls(), 1);
        assert_eq!(asm.stats().provisional, 1);
        asm.flush(Instant::now() + Duration::from_secs(10));
        let mut out = Drained::default();
        drain(&mut asm, &mut out);
        assert_eq!(out.calls.len(), 1, "{start}");
        let call = &out.calls[0];
        assert_eq!(call.call_id, call_id);
        assert!(!call.complete);
        assert_eq!(call.cdr.len(), 2, "the end (id only) joins its start");
        let types: Vec<&str> = call.cdr.iter().map(|r| r["type"].as_str()).collect();
        let value = call.cdr[0][path_field].as_str();
        if path_field == "path" {
            assert_eq!(types, ["recordingStart", "recordingEnd"]);
            assert_eq!(
                value,
                "spaces/aaaaaaaa-d375-482a-a492-906765a2ea0d/20190321145048+0100"
            );
            assert_eq!(call.recordings, [value]);
            assert_eq!(
                call.cdr[1]["recording"],
                "83180c3c-d05c-49b8-95ff-aaaaaaaaa"
            );
        } else {
            assert_eq!(types, ["streamingStart", "streamingEnd"]);
            assert!(value.starts_with("rtmp://") && !value.ends_with('\n'));
            assert!(call.recordings.is_empty());
            assert_eq!(
                call.cdr[1]["streaming"],
                "aaaaaaaa-95d5-4699-af02-78854b2f0e1a"
            );
        }
    }
}

#[test]
fn an_end_without_its_start_is_reported() {
    let (mut asm, per_body) = replay(&[read("mividas_fragment__recordingEnd.xml")]);
    assert_eq!(
        per_body[0].anomalies,
        vec![CmsAnomaly::Unattached {
            record_type: "recordingEnd".into(),
            object_id: "83180c3c-d05c-49b8-95ff-aaaaaaaaa".into(),
            record_index: Some(231275),
        }]
    );
    assert!(asm.is_idle());
    asm.flush(Instant::now());
    assert!(asm.poll_output().is_none());
}

#[test]
fn idle_timeout_then_a_later_part() {
    let posts = meeting_posts();
    let mut asm = CmsAssembler::new(CmsAssemblerConfig {
        idle_timeout: Duration::from_secs(60),
        ..CmsAssemblerConfig::default()
    });
    let base = Instant::now();
    let feed = |asm: &mut CmsAssembler, now: Instant, body: &[u8]| {
        for r in &parse_cms_xml(body).unwrap().records {
            asm.handle_record(now, r);
        }
    };
    feed(&mut asm, base, &posts[0]);
    feed(&mut asm, base + Duration::from_secs(10), &posts[1]);
    assert_eq!(asm.poll_timeout(), Some(base + Duration::from_secs(70)));
    asm.handle_timeout(base + Duration::from_secs(69));
    assert!(asm.poll_output().is_none());
    asm.handle_timeout(base + Duration::from_secs(70));
    let Some(Output::Call(first)) = asm.poll_output() else {
        panic!("no call");
    };
    assert_eq!(first.flush_reason, Some(FlushReason::IdleTimeout));
    assert_eq!((first.part, first.legs.len()), (0, 1));
    assert_eq!(asm.poll_timeout(), None);
    // The rest of the meeting forms part 1, under an id of its own.
    for (i, p) in posts.iter().enumerate().skip(2) {
        feed(&mut asm, base + Duration::from_secs(100 + i as u64), p);
    }
    let Some(Output::Call(second)) = asm.poll_output() else {
        panic!("no second part");
    };
    assert!(second.complete);
    assert_eq!(second.part, 1);
    assert_eq!(
        second.id,
        stable_id(Source::Cms, "", &format!("{CALL}/part-1"))
    );
    assert_ne!(second.id, first.id);
    assert_eq!(second.legs.len(), 3);
    assert_eq!(asm.stats().complete, 1);
    assert_eq!(asm.stats().incomplete, 1);
}

#[test]
fn evicts_the_least_recently_active_call() {
    let mut asm = CmsAssembler::new(CmsAssemblerConfig {
        max_open_calls: 1,
        ..CmsAssemblerConfig::default()
    });
    let now = Instant::now();
    let a = read("mividas_cms3_cluster__01_callStart.xml");
    let b = read("meeting_3legs/posts/01.xml");
    for body in [&a, &b] {
        for r in &parse_cms_xml(body).unwrap().records {
            asm.handle_record(now, r);
        }
    }
    let Some(Output::Call(c)) = asm.poll_output() else {
        panic!("no eviction");
    };
    assert_eq!(c.call_id, CLUSTER_CALL);
    assert_eq!(c.flush_reason, Some(FlushReason::Evicted));
    assert_eq!(asm.open_calls(), 1);
}

/// Every record of the meeting (posts 01 to 10), owned.
fn meeting_records() -> Vec<CmsRecord<'static>> {
    meeting_posts()
        .iter()
        .flat_map(|p| parse_cms_xml(p).unwrap().into_owned().records)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any order of the meeting's records, with repeats, and time moving on: no panic, exactly
    /// one call, no leg twice, no recordIndex twice, and nothing left after the flush.
    #[test]
    fn random_orders_and_duplicates_of_the_meeting(
        picks in proptest::collection::vec((0usize..11, 0u64..3_000), 1..40),
        flush_reason_timeout in any::<bool>(),
    ) {
        let records = meeting_records();
        // Longer than all the gaps together (a duplicate is not activity: it does not move the
        // call's idle deadline).
        let idle = Duration::from_secs(40 * 3_000);
        let mut asm = CmsAssembler::new(CmsAssemblerConfig {
            idle_timeout: idle,
            ..CmsAssemblerConfig::default()
        });
        let base = Instant::now();
        let mut now = base;
        let mut out = Drained::default();
        for (i, gap) in &picks {
            now += Duration::from_secs(*gap);
            asm.handle_timeout(now);
            asm.handle_record(now, &records[*i]);
            drain(&mut asm, &mut out);
            prop_assert!(asm.open_calls() <= 1);
        }
        if flush_reason_timeout {
            asm.handle_timeout(now + idle);
        } else {
            asm.flush(now);
        }
        drain(&mut asm, &mut out);
        prop_assert!(asm.is_idle());
        prop_assert_eq!(asm.poll_timeout(), None);
        prop_assert_eq!(asm.open_calls(), 0);
        // One call, unless only records that name no call (leg ends) came: they are reported.
        let named = picks.iter().any(|(i, _)| records[*i].call_id().is_some());
        if !named {
            prop_assert!(out.calls.is_empty());
            prop_assert_eq!(asm.stats().unattached, picks.len() as u64);
            return Ok(());
        }
        prop_assert_eq!(out.calls.len(), 1);
        let call = &out.calls[0];
        prop_assert_eq!(call.call_id.as_str(), CALL);
        let legs: BTreeSet<&str> = call.legs.iter().map(|l| l.uniqueid.as_str()).collect();
        prop_assert_eq!(legs.len(), call.legs.len());
        prop_assert!(legs.len() <= 3);
        let idx: Vec<&str> = call.cdr.iter().map(|r| r["recordIndex"].as_str()).collect();
        let unique: BTreeSet<&&str> = idx.iter().collect();
        prop_assert_eq!(unique.len(), idx.len());
        prop_assert!(call.start_time <= call.end_time);
        // Legs end after they start, unless the bogus callEnd of post 10 (12:00:11) ended the call.
        let bogus_end = call.cdr.iter().any(|r| r["type"] == "callEnd" && r["recordIndex"] == "3141");
        for l in call.legs.iter().filter(|_| !bogus_end) {
            if let (Some(s), Some(e)) = (l.start, l.end) {
                prop_assert!(s <= e);
            }
        }
        let handled = asm.stats().records;
        let dropped = asm.stats().duplicates + asm.stats().late + asm.stats().unattached;
        prop_assert_eq!(handled, picks.len() as u64);
        prop_assert_eq!(handled, dropped + call.cdr.len() as u64);
        // The cdr rows come in recordIndex order whatever the arrival order.
        let mut sorted: Vec<u64> = idx.iter().map(|i| i.parse().unwrap()).collect();
        let before = sorted.clone();
        sorted.sort_unstable();
        prop_assert_eq!(before, sorted);
    }
}
