//! Properties of the [`AmiAssembler`] over random event sequences with random time gaps.

// Tests may unwrap, index and panic; the base `Instant` of synthetic time has to come from the clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    clippy::redundant_clone
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ami_proto::AmiMessage;
use call_assembler::{AmiAssembler, AmiAssemblerConfig, Output};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Step {
    gap_ms: u64,
    event: u8,
    uid: u8,
    linkedid: u8,
    other: u8,
    with_ts: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![0u64..50, 0u64..5_000, 0u64..20_000_000],
        0u8..16,
        0u8..8,
        0u8..4,
        0u8..8,
        any::<bool>(),
    )
        .prop_map(|(gap_ms, event, uid, linkedid, other, with_ts)| Step {
            gap_ms,
            event,
            uid,
            linkedid,
            other,
            with_ts,
        })
}

fn message(s: &Step, clock_ms: u64) -> AmiMessage<'static> {
    let uid = format!("100.{}", s.uid);
    let lid = format!("100.{}", s.linkedid);
    let other = format!("100.{}", s.other);
    let name = format!("SIP/p{}-0000", s.uid);
    let other_name = format!("SIP/p{}-0000", s.other);
    let ts = format!(
        "{}.{:06}",
        1_700_000_000 + clock_ms / 1000,
        (clock_ms % 1000) * 1000
    );
    let mut h: Vec<(&str, String)> = match s.event {
        0 | 1 => vec![("Event", "Newchannel".into()), ("Exten", "200".into())],
        2 => vec![("Event", "Newstate".into()), ("ChannelState", "6".into())],
        3 => vec![
            ("Event", "DialBegin".into()),
            ("DestUniqueid", other.clone()),
        ],
        4 => vec![
            ("Event", "DialEnd".into()),
            ("DestUniqueid", other.clone()),
            (
                "DialStatus",
                ["ANSWER", "BUSY", "NOANSWER"][usize::from(s.other % 3)].into(),
            ),
        ],
        5 => vec![
            ("Event", "BridgeEnter".into()),
            ("BridgeUniqueid", format!("b{}", s.other % 2)),
        ],
        6 => vec![
            ("Event", "BridgeLeave".into()),
            ("BridgeUniqueid", format!("b{}", s.other % 2)),
        ],
        7 | 8 => vec![("Event", "Hangup".into()), ("Cause", "16".into())],
        9 => vec![("Event", "Cdr".into()), ("Disposition", "ANSWERED".into())],
        10 => vec![("Event", "Rename".into()), ("Newname", other_name.clone())],
        11 => vec![
            ("Event", "CEL".into()),
            ("EventName", "LINKEDID_END".into()),
        ],
        12 => vec![
            ("Event", "CEL".into()),
            ("EventName", "BRIDGE_ENTER".into()),
            ("Peer", other_name.clone()),
        ],
        13 => vec![
            ("Event", "BlindTransfer".into()),
            ("TransfererUniqueid", uid.clone()),
            ("TransfereeUniqueid", other.clone()),
            ("Extension", "300".into()),
        ],
        14 => vec![
            ("Event", "Dial".into()),
            ("SubEvent", "Begin".into()),
            ("DestUniqueID", other.clone()),
        ],
        _ => vec![
            ("Event", "VarSet".into()),
            ("Variable", "MIXMONITOR_FILENAME".into()),
            ("Value", "/rec/x.wav".into()),
        ],
    };
    h.push(("Channel", name));
    if s.event == 11 || s.event == 12 || s.event == 9 || s.event == 14 {
        h.push(("UniqueID", uid.clone()));
        h.push(("LinkedID", lid.clone()));
    } else {
        h.push(("Uniqueid", uid));
        h.push(("Linkedid", lid));
    }
    if s.with_ts {
        h.push(("Timestamp", ts));
    }
    AmiMessage::from_headers(h).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_sequences(steps in proptest::collection::vec(step(), 0..120)) {
        let base = Instant::now();
        let config = AmiAssemblerConfig {
            idle_timeout: Duration::from_secs(3600),
            max_open_calls: 3,
            ..AmiAssemblerConfig::default()
        };
        let mut asm = AmiAssembler::new(config);
        let mut clock_ms = 0u64;
        let mut emitted = 0u64;
        // (id, legs, start) of each emitted call, with the step it was emitted at.
        let mut seen: BTreeMap<(String, Vec<String>, String), usize> = BTreeMap::new();
        let mut touched: Vec<String> = Vec::new();
        let mut check = |asm: &mut AmiAssembler, emitted: &mut u64, touched: &[String]| {
            while let Some(out) = asm.poll_output() {
                if let Output::Call(c) = out {
                    *emitted += 1;
                    prop_assert!(c.billsec.unwrap_or(0) <= c.duration);
                    prop_assert!(c.end_time >= c.start_time);
                    if let Some(a) = c.answer_time {
                        prop_assert!(a >= c.start_time && a <= c.end_time);
                    }
                    // Each open call is emitted once: a call identical to one emitted before
                    // must have been rebuilt by later events about its channels.
                    let legs: Vec<String> = c.legs.iter().map(|l| l.uniqueid.to_string()).collect();
                    let key = (c.id.clone(), legs.clone(), c.start_time.to_string());
                    if let Some(&at) = seen.get(&key) {
                        let rebuilt = touched.get(at..).unwrap_or_default().iter().any(|u| legs.contains(u));
                        prop_assert!(rebuilt, "emitted twice: {c:?}");
                    }
                    seen.insert(key, touched.len());
                }
            }
            let st = asm.stats();
            prop_assert_eq!(st.complete + st.incomplete, *emitted);
            Ok(())
        };
        for s in &steps {
            clock_ms += s.gap_ms;
            let now = base + Duration::from_millis(clock_ms);
            asm.handle_timeout(now);
            check(&mut asm, &mut emitted, &touched)?;
            touched.push(format!("100.{}", s.uid));
            asm.handle_message(now, &message(s, clock_ms));
            check(&mut asm, &mut emitted, &touched)?;
            prop_assert!(asm.open_calls() <= 3);
            if let Some(t) = asm.poll_timeout() {
                prop_assert!(t >= now);
            }
        }
        let end = base + Duration::from_millis(clock_ms) + Duration::from_secs(3601);
        asm.handle_timeout(end);
        check(&mut asm, &mut emitted, &touched)?;
        prop_assert!(asm.is_idle(), "not idle: {:?}", asm);
        prop_assert_eq!(asm.poll_timeout(), None);
        // An extra timeout does nothing.
        asm.handle_timeout(end);
        prop_assert!(asm.poll_output().is_none());
    }
}
