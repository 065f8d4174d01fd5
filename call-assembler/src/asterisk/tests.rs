//! Unit tests of the AMI assembler, driven by hand with a synthetic clock.
#![allow(clippy::disallowed_methods)] // tests start their synthetic clock anywhere

use std::time::{Duration, Instant};

use ami_proto::AmiMessage;

use super::input::{epoch_to_local, hangup_extra, parse_time};
use super::{AmiAssembler, AmiAssemblerConfig, CelRow, RuleField, TenantRule};
use crate::call::{Call, CallDirection, FlushReason, UpdateEvent};
use crate::{Anomaly, Output, PbxZone};

fn msg(headers: &[(&str, &str)]) -> AmiMessage<'static> {
    AmiMessage::from_headers(headers.iter().copied()).unwrap()
}

fn drain(asm: &mut AmiAssembler) -> Vec<Call> {
    let mut out = Vec::new();
    while let Some(o) = asm.poll_output() {
        if let Output::Call(c) = o {
            out.push(c);
        }
    }
    out
}

#[test]
fn two_leg_call_ends_after_grace() {
    let base = Instant::now();
    let at = |s: u64| base + Duration::from_secs(s);
    let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
    let ts = |s: u64| format!("{}.000000", 1_000_000 + s);
    let feed = |asm: &mut AmiAssembler, s: u64, h: &[(&str, &str)]| {
        let t = ts(s);
        let mut v: Vec<(&str, &str)> = h.to_vec();
        v.push(("Timestamp", &t));
        asm.handle_message(at(s), &msg(&v));
    };
    feed(
        &mut asm,
        0,
        &[
            ("Event", "Newchannel"),
            ("Channel", "SIP/a-1"),
            ("Uniqueid", "1.1"),
            ("Linkedid", "1.1"),
            ("CallerIDNum", "100"),
            ("Exten", "200"),
            ("Context", "internal"),
        ],
    );
    feed(
        &mut asm,
        0,
        &[
            ("Event", "Newchannel"),
            ("Channel", "SIP/b-2"),
            ("Uniqueid", "1.2"),
            ("Linkedid", "1.1"),
            ("CallerIDNum", "200"),
        ],
    );
    feed(
        &mut asm,
        0,
        &[
            ("Event", "DialBegin"),
            ("Channel", "SIP/a-1"),
            ("Uniqueid", "1.1"),
            ("Linkedid", "1.1"),
            ("DestUniqueid", "1.2"),
        ],
    );
    feed(
        &mut asm,
        3,
        &[
            ("Event", "DialEnd"),
            ("Channel", "SIP/a-1"),
            ("Uniqueid", "1.1"),
            ("Linkedid", "1.1"),
            ("DestUniqueid", "1.2"),
            ("DialStatus", "ANSWER"),
        ],
    );
    feed(
        &mut asm,
        3,
        &[
            ("Event", "BridgeEnter"),
            ("Uniqueid", "1.2"),
            ("Linkedid", "1.1"),
            ("BridgeUniqueid", "br"),
        ],
    );
    feed(
        &mut asm,
        3,
        &[
            ("Event", "BridgeEnter"),
            ("Uniqueid", "1.1"),
            ("Linkedid", "1.1"),
            ("BridgeUniqueid", "br"),
        ],
    );
    feed(
        &mut asm,
        10,
        &[
            ("Event", "Hangup"),
            ("Uniqueid", "1.2"),
            ("Linkedid", "1.1"),
            ("Cause", "16"),
        ],
    );
    assert!(drain(&mut asm).is_empty());
    feed(
        &mut asm,
        10,
        &[
            ("Event", "Hangup"),
            ("Uniqueid", "1.1"),
            ("Linkedid", "1.1"),
            ("Cause", "16"),
        ],
    );
    assert_eq!(asm.poll_timeout(), Some(at(12)));
    asm.handle_timeout(at(11));
    assert!(drain(&mut asm).is_empty());
    asm.handle_timeout(at(12));
    let calls = drain(&mut asm);
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(
        (c.duration, c.billsec, c.disposition.as_str()),
        (10, Some(7), "ANSWERED")
    );
    assert_eq!(c.answered_by.as_ref().unwrap().device, "SIP/b-2");
    assert_eq!((c.caller.as_str(), c.called.as_str()), ("100", "200"));
    assert!(asm.is_idle());
}

#[test]
fn linkedid_change_merges_calls() {
    let base = Instant::now();
    let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
    for (uid, lid) in [("1.1", "1.1"), ("2.1", "2.1")] {
        asm.handle_message(
            base,
            &msg(&[
                ("Event", "Newchannel"),
                ("Uniqueid", uid),
                ("Linkedid", lid),
                ("Channel", "SIP/x"),
            ]),
        );
    }
    assert_eq!(asm.open_calls(), 2);
    asm.handle_message(
        base,
        &msg(&[
            ("Event", "BridgeEnter"),
            ("Uniqueid", "2.1"),
            ("Linkedid", "1.1"),
            ("BridgeUniqueid", "b"),
        ]),
    );
    assert_eq!(asm.open_calls(), 1);
    // The merged Linkedid's end does not end the call.
    asm.handle_message(
        base,
        &msg(&[
            ("Event", "CEL"),
            ("EventName", "LINKEDID_END"),
            ("UniqueID", "2.1"),
            ("LinkedID", "2.1"),
        ]),
    );
    asm.handle_timeout(base + Duration::from_secs(60));
    assert!(drain(&mut asm).is_empty());
    for uid in ["1.1", "2.1"] {
        asm.handle_message(
            base,
            &msg(&[("Event", "Hangup"), ("Uniqueid", uid), ("Linkedid", "1.1")]),
        );
    }
    asm.handle_timeout(base + Duration::from_secs(120));
    let calls = drain(&mut asm);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].legs.len(), 2);
    assert!(asm.is_idle());
}

#[test]
fn ttl_flushes_incomplete() {
    let base = Instant::now();
    let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
    asm.handle_message(
        base,
        &msg(&[
            ("Event", "Newchannel"),
            ("Uniqueid", "1.1"),
            ("Linkedid", "1.1"),
        ]),
    );
    let t = asm.poll_timeout().unwrap();
    asm.handle_timeout(t);
    let calls = drain(&mut asm);
    assert_eq!(calls.len(), 1);
    assert!(!calls[0].complete);
    assert_eq!(calls[0].flush_reason, Some(FlushReason::IdleTimeout));
    assert!(asm.is_idle());
}

#[test]
fn cel_csv_lines() {
    let row = CelRow::parse_csv_line(r#""HANGUP","1335310213.624898","","","","","","s","default","TinCan/string","","","3","","1335310195.0","1335310195.0","","","","16,,ANSWER""#).unwrap();
    assert_eq!(row.eventtype, "HANGUP");
    assert_eq!(row.extra, "16,,ANSWER");
    assert_eq!(hangup_extra(&row.extra), (Some(16), "ANSWER".into()));
    assert_eq!(
        hangup_extra(r#"{"hangupcause":17,"dialstatus":"BUSY"}"#),
        (Some(17), "BUSY".into())
    );
    assert!(CelRow::parse_csv_line("\"unterminated").is_none());
}

#[test]
fn times_parse() {
    assert_eq!(
        parse_time("2014-10-28 16:36:40", &PbxZone::fixed_secs(0))
            .unwrap()
            .to_string(),
        "2014-10-28 16:36:40"
    );
    assert_eq!(
        epoch_to_local("1414510600.5", &PbxZone::fixed_secs(3600))
            .unwrap()
            .to_string(),
        "2014-10-28 16:36:40.500"
    );
    assert!(epoch_to_local("x", &PbxZone::fixed_secs(0)).is_none());
    // Database forms: a fraction, a `T`, a zone.
    let local = "2026-11-22 13:54:08.579430";
    for text in [
        local,
        "2026-11-22T13:54:08.579430",
        " 2026-11-22 13:54:08.579430 ",
        "2026-11-22 12:54:08.579430+00",
        "2026-11-22 13:54:08.579430+01:00",
        "2026-11-22T12:54:08.579430Z",
        "1795352048.579430",
    ] {
        assert_eq!(
            parse_time(text, &PbxZone::fixed_secs(3600))
                .map(|t| t.to_string())
                .as_deref(),
            Some(local),
            "{text}"
        );
    }
    assert_eq!(
        parse_time("2026-11-22 13:54:08", &PbxZone::fixed_secs(0))
            .unwrap()
            .to_string(),
        "2026-11-22 13:54:08"
    );
    assert!(parse_time("2026-11-22 nonsense", &PbxZone::fixed_secs(0)).is_none());
    // A named zone: epochs and times with an offset become local time with daylight saving.
    let berlin: PbxZone = "Europe/Berlin".parse().unwrap();
    for (utc, local) in [
        ("2026-07-01 11:54:08+00", "2026-07-01 13:54:08"),
        ("2026-11-22 12:54:08+00", "2026-11-22 13:54:08"),
        ("1795352048", "2026-11-22 13:54:08"),
    ] {
        assert_eq!(
            parse_time(utc, &berlin).map(|t| t.to_string()).as_deref(),
            Some(local),
            "{utc}"
        );
    }
    assert_eq!(
        parse_time("2026-07-01 13:54:08", &berlin)
            .unwrap()
            .to_string(),
        "2026-07-01 13:54:08",
        "a local time stays as it is"
    );
}

/// An event about channel `uid` of call `lid`, with more headers.
fn ev(event: &str, uid: &str, lid: &str, more: &[(&str, &str)]) -> AmiMessage<'static> {
    let mut h = vec![("Event", event), ("Uniqueid", uid), ("Linkedid", lid)];
    h.extend_from_slice(more);
    msg(&h)
}

fn outputs(asm: &mut AmiAssembler) -> Vec<Output> {
    std::iter::from_fn(|| asm.poll_output()).collect()
}

fn update(c: &Call) -> (u32, UpdateEvent) {
    let u = c.update.unwrap();
    (u.sequence, u.event)
}

fn progressive(secs: u64) -> AmiAssemblerConfig {
    AmiAssemblerConfig {
        progress_interval: Some(Duration::from_secs(secs)),
        ..AmiAssemblerConfig::default()
    }
}

#[test]
fn progressive_mode_sends_started_updates_and_ended() {
    let base = Instant::now();
    let at = |s: u64| base + Duration::from_secs(s);
    let mut asm = AmiAssembler::new(progressive(10));
    asm.handle_message(
        at(0),
        &ev(
            "Newchannel",
            "1.1",
            "1.1",
            &[
                ("Channel", "SIP/a-1"),
                ("CallerIDNum", "100"),
                ("Exten", "200"),
            ],
        ),
    );
    let started = drain(&mut asm);
    assert_eq!(started.len(), 1);
    let s = &started[0];
    assert_eq!(update(s), (0, UpdateEvent::Started));
    assert!(!s.complete && s.flush_reason.is_none());
    assert_eq!((s.caller.as_str(), s.legs.len()), ("100", 1));
    // The next update is due 10 s after the creation, before the idle deadline.
    assert_eq!(asm.poll_timeout(), Some(at(10)));
    asm.handle_message(
        at(4),
        &ev("Newchannel", "1.2", "1.1", &[("Channel", "SIP/b-2")]),
    );
    assert!(drain(&mut asm).is_empty(), "a new leg sends no snapshot");
    asm.handle_timeout(at(9));
    assert!(drain(&mut asm).is_empty());
    asm.handle_timeout(at(10));
    let u = drain(&mut asm);
    assert_eq!(u.len(), 1);
    assert_eq!(update(&u[0]), (1, UpdateEvent::Updated));
    assert_eq!((u[0].legs.len(), u[0].duration), (2, 10));
    assert_eq!(u[0].id, s.id);
    // Called late: one snapshot, and the next on the 10 s grid.
    asm.handle_timeout(at(35));
    let u = drain(&mut asm);
    assert_eq!(u.len(), 1);
    assert_eq!(update(&u[0]), (2, UpdateEvent::Updated));
    assert_eq!(asm.poll_timeout(), Some(at(40)));
    // Finished: no update while it waits out the grace period.
    for uid in ["1.1", "1.2"] {
        asm.handle_message(at(39), &ev("Hangup", uid, "1.1", &[("Cause", "16")]));
    }
    assert_eq!(asm.poll_timeout(), Some(at(41)));
    asm.handle_timeout(at(41));
    let end = drain(&mut asm);
    assert_eq!(end.len(), 1);
    assert_eq!(update(&end[0]), (3, UpdateEvent::Ended));
    assert!(end[0].complete);
    assert_eq!(end[0].id, s.id);
    assert_eq!(asm.stats().snapshots, 3);
    assert!(asm.is_idle());
    assert_eq!(asm.poll_timeout(), None);
}

#[test]
fn complete_mode_has_no_update_and_progressive_flush_ends_calls() {
    let base = Instant::now();
    let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
    asm.handle_message(base, &ev("Newchannel", "1.1", "1.1", &[]));
    asm.flush(base);
    let c = drain(&mut asm);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].update, None);

    let mut asm = AmiAssembler::new(progressive(0));
    asm.handle_message(base, &ev("Newchannel", "1.1", "1.1", &[]));
    // A zero interval: Started and Ended only, and no update deadline.
    assert_eq!(
        asm.poll_timeout(),
        Some(base + AmiAssemblerConfig::default().idle_timeout)
    );
    asm.flush(base + Duration::from_secs(100));
    let c = drain(&mut asm);
    let seqs: Vec<_> = c.iter().map(update).collect();
    assert_eq!(seqs, [(0, UpdateEvent::Started), (1, UpdateEvent::Ended)]);
    assert_eq!(c[1].flush_reason, Some(FlushReason::EndOfInput));
    assert!(asm.is_idle());
}

#[test]
fn progressive_merge_continues_the_older_calls_sequence() {
    let base = Instant::now();
    let at = |s: u64| base + Duration::from_secs(s);
    let mut asm = AmiAssembler::new(progressive(5));
    asm.handle_message(at(0), &ev("Newchannel", "1.1", "1.1", &[]));
    asm.handle_timeout(at(5));
    asm.handle_message(at(6), &ev("Newchannel", "2.1", "2.1", &[]));
    let first = drain(&mut asm);
    assert_eq!(first.len(), 3);
    let (older, younger) = (first[0].id.clone(), first[2].id.clone());
    assert_eq!(update(&first[2]), (0, UpdateEvent::Started));
    // The younger call's channel joins the older call.
    asm.handle_message(
        at(7),
        &ev("BridgeEnter", "2.1", "1.1", &[("BridgeUniqueid", "b")]),
    );
    assert_eq!(asm.open_calls(), 1);
    asm.handle_timeout(at(10));
    let u = drain(&mut asm);
    assert_eq!(u.len(), 1);
    assert_eq!(
        (u[0].id.as_str(), update(&u[0])),
        (older.as_str(), (2, UpdateEvent::Updated))
    );
    assert_eq!(u[0].legs.len(), 2);
    asm.flush(at(11));
    let end = drain(&mut asm);
    assert_eq!(end.len(), 1);
    assert_eq!(
        (end[0].id.as_str(), update(&end[0])),
        (older.as_str(), (3, UpdateEvent::Ended))
    );
    assert_ne!(older, younger);
    let mut retired = asm.take_retired();
    retired.sort();
    assert_eq!(retired, ["1.1", "2.1"]);
}

#[test]
fn direction_by_number_length() {
    let base = Instant::now();
    let config = AmiAssemblerConfig {
        internal_number_max_len: Some(4),
        trunk_contexts: vec!["from-trunk".into()],
        ..AmiAssemblerConfig::default()
    };
    let run = |caller: &str, exten: &str, context: &str| {
        let mut asm = AmiAssembler::new(config.clone());
        asm.handle_message(
            base,
            &ev(
                "Newchannel",
                "1.1",
                "1.1",
                &[
                    ("CallerIDNum", caller),
                    ("Exten", exten),
                    ("Context", context),
                ],
            ),
        );
        asm.flush(base);
        drain(&mut asm).remove(0).direction
    };
    assert_eq!(
        run("+44 20 7946 0000", "2001", "internal"),
        CallDirection::Inbound
    );
    assert_eq!(
        run("2001", "00442079460000", "internal"),
        CallDirection::Outbound
    );
    assert_eq!(run("2001", "2002", "internal"), CallDirection::Internal);
    assert_eq!(run("20011", "2002", "internal"), CallDirection::Inbound);
    // A trunk rule decides first.
    assert_eq!(
        run("2001", "00442079460000", "from-trunk"),
        CallDirection::Inbound
    );
    // Without the setting, length means nothing.
    let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
    asm.handle_message(
        base,
        &ev(
            "Newchannel",
            "1.1",
            "1.1",
            &[("CallerIDNum", "+442079460000")],
        ),
    );
    asm.flush(base);
    assert_eq!(drain(&mut asm)[0].direction, CallDirection::Internal);
}

#[test]
fn tenant_from_tenant_id_or_rules() {
    let base = Instant::now();
    let rule = |field, prefix: &str, tenant: &str| TenantRule {
        field,
        prefix: prefix.into(),
        tenant: tenant.into(),
    };
    let config = AmiAssemblerConfig {
        tenant_rules: vec![
            rule(RuleField::Context, "acme-", "acme"),
            rule(RuleField::Accountcode, "glob", "globex"),
            rule(RuleField::Called, "9", "nines"),
            rule(RuleField::Channel, "PJSIP/initech", "initech"),
        ],
        ..AmiAssemblerConfig::default()
    };
    let run = |legs: &[&[(&str, &str)]]| {
        let mut asm = AmiAssembler::new(config.clone());
        for (i, more) in legs.iter().enumerate() {
            let uid = format!("1.{}", i + 1);
            asm.handle_message(base, &ev("Newchannel", &uid, "1.1", more));
        }
        asm.flush(base);
        drain(&mut asm).remove(0).tenant
    };
    assert_eq!(run(&[&[("Context", "acme-in")]]), "acme");
    // The first rule matching the caller leg wins over later rules.
    assert_eq!(
        run(&[&[("Context", "acme-in"), ("AccountCode", "globex1")]]),
        "acme"
    );
    assert_eq!(run(&[&[("AccountCode", "globex1")]]), "globex");
    assert_eq!(run(&[&[("Exten", "9123")]]), "nines");
    // The caller leg matched nothing: the other legs in order of creation.
    assert_eq!(
        run(&[
            &[("Context", "internal")],
            &[("Channel", "PJSIP/initech-0001")],
            &[("Context", "acme-out")],
        ]),
        "initech"
    );
    assert_eq!(run(&[&[("Context", "internal")]]), "");
    // Asterisk 22's TenantID wins over the rules, caller leg first (case-insensitive).
    assert_eq!(
        run(&[&[("Context", "acme-in")], &[("TenantID", "umbrella")],]),
        "umbrella"
    );
    assert_eq!(
        run(&[&[("tenantid", "wayne")], &[("TenantID", "umbrella")]]),
        "wayne"
    );
    // The latest TenantID of a channel counts (the dialplan sets it after creation).
    let mut asm = AmiAssembler::new(config.clone());
    asm.handle_message(base, &ev("Newchannel", "1.1", "1.1", &[("TenantID", "")]));
    asm.handle_message(
        base,
        &ev(
            "VarSet",
            "1.1",
            "1.1",
            &[("Variable", "X"), ("TenantID", "stark")],
        ),
    );
    asm.flush(base);
    assert_eq!(drain(&mut asm)[0].tenant, "stark");
}

fn show(uid: &str, lid: &str, more: &[(&str, &str)]) -> AmiMessage<'static> {
    let mut h = vec![
        ("Event", "CoreShowChannel"),
        ("Uniqueid", uid),
        ("Linkedid", lid),
    ];
    h.extend_from_slice(more);
    msg(&h)
}

#[test]
fn resync_closes_calls_whose_channels_vanished() {
    let base = Instant::now();
    let at = |s: u64| base + Duration::from_secs(s);
    let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
    let ts = |s: u64| format!("{}.000000", 1_700_000_000 + s);
    // Call 1.1: two legs, both vanish during the gap.
    for uid in ["1.1", "1.2"] {
        asm.handle_message(
            at(0),
            &ev("Newchannel", uid, "1.1", &[("Timestamp", &ts(0))]),
        );
    }
    asm.handle_message(
        at(1),
        &ev(
            "BridgeEnter",
            "1.2",
            "1.1",
            &[("BridgeUniqueid", "b1"), ("Timestamp", &ts(1))],
        ),
    );
    // Call 2.1: one leg hung up before the gap, the other is still up.
    for uid in ["2.1", "2.2"] {
        asm.handle_message(
            at(2),
            &ev("Newchannel", uid, "2.1", &[("Timestamp", &ts(2))]),
        );
    }
    asm.handle_message(at(3), &ev("Hangup", "2.2", "2.1", &[("Timestamp", &ts(3))]));
    assert!(drain(&mut asm).is_empty());
    asm.resync(at(30), &[show("2.1", "2.1", &[("Duration", "00:00:28")])]);
    assert_eq!(asm.last_key(), None);
    let calls = drain(&mut asm);
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.linkedid, "1.1");
    assert!(!c.complete);
    assert_eq!(c.flush_reason, Some(FlushReason::Resync));
    // Its end is the resync, placed on the wall clock by the last event with a time.
    assert_eq!(c.duration, 30);
    assert!(c.legs.iter().all(|l| l.end == Some(c.end_time)));
    assert_eq!(asm.stats().resynced, 1);
    assert_eq!(asm.take_retired(), ["1.1"]);
    // The live call stays open and completes normally.
    assert_eq!(asm.open_calls(), 1);
    asm.handle_message(
        at(40),
        &ev("Hangup", "2.1", "2.1", &[("Timestamp", &ts(40))]),
    );
    asm.handle_timeout(at(45));
    let calls = drain(&mut asm);
    assert_eq!(calls.len(), 1);
    assert!(calls[0].complete);
    assert_eq!(calls[0].duration, 38);
    assert!(outputs(&mut asm).is_empty());
    assert!(asm.is_idle());
    // An event of a resynced call's channel is late.
    asm.handle_message(at(46), &ev("Hangup", "1.1", "1.1", &[]));
    assert!(matches!(
        outputs(&mut asm).as_slice(),
        [Output::Anomaly(Anomaly::AmiLateEvent { .. })]
    ));
}

#[test]
fn resync_adopts_channels_it_does_not_know() {
    let base = Instant::now();
    let at = |s: u64| base + Duration::from_secs(s);
    let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
    asm.handle_message(
        at(0),
        &ev(
            "Newchannel",
            "1.1",
            "1.1",
            &[("Timestamp", "1700000000.000000")],
        ),
    );
    // During the gap, 1.1 dialled 1.2 (which answered), and call 3.1 began.
    asm.resync(
        at(100),
        &[
            show(
                "3.1",
                "3.1",
                &[
                    ("Channel", "PJSIP/c-3"),
                    ("CallerIDNum", "300"),
                    ("Exten", "400"),
                    ("Context", "internal"),
                    ("ChannelState", "4"),
                    ("Duration", "00:00:10"),
                ],
            ),
            show(
                "1.2",
                "1.1",
                &[
                    ("Channel", "PJSIP/b-2"),
                    ("ChannelState", "6"),
                    ("BridgeId", "br"),
                    ("Duration", "00:01:00"),
                ],
            ),
            show(
                "1.1",
                "1.1",
                &[
                    ("Channel", "PJSIP/a-1"),
                    ("ChannelState", "6"),
                    ("BridgeId", "br"),
                    ("Duration", "00:01:40"),
                ],
            ),
        ],
    );
    assert!(outputs(&mut asm).is_empty());
    assert_eq!((asm.open_calls(), asm.open_channels()), (2, 3));
    // Their hangups are not unknown channels.
    for (s, uid, lid) in [
        (110, "1.2", "1.1"),
        (110, "1.1", "1.1"),
        (120, "3.1", "3.1"),
    ] {
        asm.handle_message(at(s), &ev("Hangup", uid, lid, &[("Cause", "16")]));
        assert_eq!(asm.last_key(), Some(lid));
    }
    asm.handle_timeout(at(200));
    let out = outputs(&mut asm);
    assert!(out.iter().all(|o| matches!(o, Output::Call(_))), "{out:?}");
    let calls: Vec<Call> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Call(c) => Some(c),
            Output::Anomaly(_) => None,
        })
        .collect();
    assert_eq!(calls.len(), 2);
    let one = calls.iter().find(|c| c.linkedid == "1.1").unwrap();
    assert!(one.complete);
    assert_eq!(one.legs.len(), 2);
    // Answered during the gap (seen as a bridge at the resync): a lower bound of billsec.
    assert_eq!(
        (one.disposition.as_str(), one.billsec),
        ("ANSWERED", Some(10))
    );
    assert_eq!(one.duration, 110);
    let three = calls.iter().find(|c| c.linkedid == "3.1").unwrap();
    assert!(three.complete);
    // Created at the resync minus its Duration.
    assert_eq!(three.duration, 30);
    assert_eq!(
        (three.caller.as_str(), three.called.as_str()),
        ("300", "400")
    );
    assert_eq!(three.legs[0].channel, "PJSIP/c-3");
    assert_eq!(asm.stats().unknown, 0);
    assert!(asm.is_idle());
}

#[test]
fn resync_progressive_and_empty_list() {
    let base = Instant::now();
    let mut asm = AmiAssembler::new(progressive(60));
    asm.handle_message(base, &ev("Newchannel", "1.1", "1.1", &[]));
    asm.resync(base, &[show("2.1", "2.1", &[])]);
    let out = drain(&mut asm);
    let got: Vec<(&str, (u32, UpdateEvent), Option<FlushReason>)> = out
        .iter()
        .map(|c| (c.linkedid.as_str(), update(c), c.flush_reason))
        .collect();
    assert_eq!(
        got,
        [
            ("1.1", (0, UpdateEvent::Started), None),
            ("1.1", (1, UpdateEvent::Ended), Some(FlushReason::Resync)),
            ("2.1", (0, UpdateEvent::Started), None),
        ]
    );
    // The PBX restarted: no channel at all.
    asm.resync(base, &[]);
    let out = drain(&mut asm);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flush_reason, Some(FlushReason::Resync));
    assert!(asm.is_idle());
}

#[test]
fn last_key_and_retired_keys() {
    let base = Instant::now();
    let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
    asm.handle_message(base, &msg(&[("Response", "Success"), ("Ping", "Pong")]));
    assert_eq!(asm.last_key(), None);
    // Asterisk 11: no Linkedid, so a provisional key per channel.
    asm.handle_message(base, &msg(&[("Event", "Newchannel"), ("Uniqueid", "5.1")]));
    assert_eq!(asm.last_key(), Some("5.1"));
    asm.handle_message(base, &msg(&[("Event", "Newchannel"), ("Uniqueid", "5.2")]));
    assert_eq!(asm.last_key(), Some("5.2"));
    asm.handle_message(
        base,
        &msg(&[
            ("Event", "Dial"),
            ("SubEvent", "Begin"),
            ("UniqueID", "5.1"),
            ("DestUniqueID", "5.2"),
        ]),
    );
    assert_eq!(asm.last_key(), Some("5.1"));
    // The real Linkedid arrives with CEL: the call takes it on.
    asm.handle_message(
        base,
        &msg(&[
            ("Event", "CEL"),
            ("EventName", "ANSWER"),
            ("UniqueID", "5.2"),
            ("LinkedID", "4.9"),
        ]),
    );
    assert_eq!(asm.last_key(), Some("4.9"));
    asm.handle_message(base, &ev("Hangup", "7.7", "7.7", &[]));
    assert_eq!(asm.last_key(), None, "unknown channel");
    assert!(asm.take_retired().is_empty());
    asm.flush(base);
    let mut keys = asm.take_retired();
    keys.sort();
    assert_eq!(keys, ["4.9", "5.1", "5.2"]);
    assert!(asm.take_retired().is_empty());
}

#[test]
fn retired_keys_are_bounded_until_taken() {
    let base = Instant::now();
    let mut asm = AmiAssembler::new(AmiAssemblerConfig {
        remember_emitted: 3,
        ..AmiAssemblerConfig::default()
    });
    for i in 0..10 {
        let uid = format!("{i}.1");
        asm.handle_message(base, &ev("Newchannel", &uid, &uid, &[]));
    }
    asm.flush(base);
    assert_eq!(asm.take_retired(), ["7.1", "8.1", "9.1"]);
    for i in 10..20 {
        let uid = format!("{i}.1");
        asm.handle_message(base, &ev("Newchannel", &uid, &uid, &[]));
    }
    asm.flush(base);
    assert_eq!(asm.take_retired().len(), 10);
}

#[test]
fn a_new_channel_under_an_emitted_linkedid_is_a_later_part() {
    let base = Instant::now();
    let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
    asm.handle_message(base, &ev("Newchannel", "1.1", "1.1", &[]));
    asm.flush(base);
    let first = drain(&mut asm).remove(0);
    assert_eq!(first.part, 0);
    // A late event of its channel is dropped; a new channel of its Linkedid is part 1.
    asm.handle_message(
        base,
        &ev("Newstate", "1.1", "1.1", &[("ChannelState", "6")]),
    );
    assert_eq!((asm.open_calls(), asm.stats().late), (0, 1));
    asm.handle_message(base, &ev("Newchannel", "1.2", "1.1", &[]));
    asm.flush(base);
    let second = drain(&mut asm).remove(0);
    assert_eq!(second.part, 1);
    assert_ne!(second.id, first.id);
    assert_eq!(second.call_id, first.call_id);
}
