//! Properties: no input panics, generated records round-trip, prefixes are incomplete, chunking
//! does not change framing.

// Tests may unwrap, index and panic; the base `Instant` of synthetic time has to come from the clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::net::{IpAddr, Ipv4Addr};

use chrono::{NaiveDate, NaiveDateTime};
use proptest::prelude::*;
use smdr_parse::{
    Device, DeviceKind, Direction, Frame, Parsed, SmdrFramer, SmdrRecord, Text, parse_smdr,
};

fn text() -> impl Strategy<Value = Text<'static>> {
    // Any bytes but the separators; no trailing whitespace (trimmed at the end of a line).
    proptest::collection::vec(
        any::<u8>().prop_filter("sep", |b| !b",\r\n".contains(b)),
        0..24,
    )
    .prop_map(|mut v| {
        while v.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            v.pop();
        }
        Text::from(v)
    })
}

fn opt_text() -> impl Strategy<Value = Option<Text<'static>>> {
    text().prop_map(|t| (!t.is_empty()).then_some(t))
}

fn timestamp() -> impl Strategy<Value = NaiveDateTime> {
    (
        1990i32..2100,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
    )
        .prop_map(|(y, mo, d, h, mi, s)| {
            NaiveDate::from_ymd_opt(y, mo, d)
                .unwrap()
                .and_hms_opt(h, mi, s)
                .unwrap()
        })
}

fn device() -> impl Strategy<Value = Option<Device>> {
    proptest::option::of(
        (
            prop_oneof![
                Just(DeviceKind::Extension),
                Just(DeviceKind::Trunk),
                Just(DeviceKind::Voice),
                (b'A'..=b'Z').prop_map(|b| DeviceKind::from_byte(b).unwrap()),
            ],
            any::<i64>(),
        )
            .prop_map(|(kind, number)| Device { kind, number }),
    )
}

fn ip() -> impl Strategy<Value = Option<IpAddr>> {
    proptest::option::of(prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        any::<u128>().prop_map(|n| IpAddr::V6(n.into())),
    ])
}

prop_compose! {
    fn head()(
        call_start in timestamp(),
        connected_time in 0u32..(100 * 3600),
        ring_time in any::<u32>(),
        caller in text(),
        inbound in any::<bool>(),
        called_number in text(),
        dialled_number in text(),
        account in text(),
        is_internal in any::<bool>(),
        call_id in any::<u64>(),
        continuation in any::<bool>(),
        party1_device in device(),
        party1_name in text(),
        party2_device in device(),
        party2_name in text(),
        hold_time in any::<u32>(),
        park_time in any::<u32>(),
    ) -> SmdrRecord<'static> {
        SmdrRecord {
            call_start, connected_time, ring_time, caller,
            direction: if inbound { Direction::Inbound } else { Direction::Outbound },
            called_number, dialled_number, account, is_internal, call_id, continuation,
            party1_device, party1_name, party2_device, party2_name, hold_time, park_time,
            auth_valid: None, auth_code: None, user_charged: None, call_charge: None,
            currency: None, amount_at_last_user_change: None, call_units: None,
            units_at_last_user_change: None, cost_per_unit: None, mark_up: None,
            external_targeting_cause: None, external_targeter_id: None,
            external_targeted_number: None, calling_party_server_ip: None,
            unique_call_id_caller: None, called_party_server_ip: None,
            unique_call_id_called: None, smdr_record_time: None,
            caller_consent_directive: None, calling_number_verification: None,
            extra: None, field_count: 17,
        }
    }
}

prop_compose! {
    /// A valid record: fields past `field_count` are empty, `extra` only with all 37 fields.
    fn record()(
        mut r in head(),
        field_count in 17u8..=37,
        auth in (opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        units in proptest::array::uniform4(proptest::option::of(any::<u32>())),
        targeting in (opt_text(), opt_text(), opt_text()),
        servers in (ip(), proptest::option::of(any::<u64>()), ip(), proptest::option::of(any::<u64>())),
        tail in (proptest::option::of(timestamp()), opt_text(), opt_text()),
        extra in proptest::option::of(proptest::collection::vec(
            any::<u8>().prop_filter("sep", |b| !b"\r\n".contains(b)), 0..20)),
    ) -> SmdrRecord<'static> {
        r.field_count = field_count;
        let n = usize::from(field_count);
        let keep = |i: usize| n >= i;
        (r.auth_valid, r.auth_code, r.user_charged, r.call_charge, r.currency,
         r.amount_at_last_user_change) = (
            auth.0.filter(|_| keep(18)), auth.1.filter(|_| keep(19)),
            auth.2.filter(|_| keep(20)), auth.3.filter(|_| keep(21)),
            auth.4.filter(|_| keep(22)), auth.5.filter(|_| keep(23)));
        r.call_units = units[0].filter(|_| keep(24));
        r.units_at_last_user_change = units[1].filter(|_| keep(25));
        r.cost_per_unit = units[2].filter(|_| keep(26));
        r.mark_up = units[3].filter(|_| keep(27));
        r.external_targeting_cause = targeting.0.filter(|_| keep(28));
        r.external_targeter_id = targeting.1.filter(|_| keep(29));
        r.external_targeted_number = targeting.2.filter(|_| keep(30));
        r.calling_party_server_ip = servers.0.filter(|_| keep(31));
        r.unique_call_id_caller = servers.1.filter(|_| keep(32));
        r.called_party_server_ip = servers.2.filter(|_| keep(33));
        r.unique_call_id_called = servers.3.filter(|_| keep(34));
        r.smdr_record_time = tail.0.filter(|_| keep(35));
        r.caller_consent_directive = tail.1.filter(|_| keep(36));
        r.calling_number_verification = tail.2.filter(|_| keep(37));
        if n == 37 {
            r.extra = extra.map(|mut v| {
                while v.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
                    v.pop();
                }
                Text::from(v)
            });
        }
        r
    }
}

fn frames(chunks: &[&[u8]], max: usize) -> Vec<(u64, Vec<u8>)> {
    let mut framer = SmdrFramer::new(max);
    let mut out = Vec::new();
    for c in chunks {
        framer.push(c);
        while let Some(f) = framer.next_frame() {
            match f {
                Frame::Line { line, number, .. } => out.push((number, line.to_vec())),
                Frame::TooLong { number, .. } => out.push((number, b"<too long>".to_vec())),
            }
        }
    }
    if let Some(Frame::Line { line, number, .. }) = framer.finish() {
        out.push((number, line.to_vec()));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn doesnt_crash(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = SmdrRecord::parse(&bytes);
        match parse_smdr(&bytes) {
            Ok(Parsed::Complete { consumed, .. }) => prop_assert!(consumed > 0 && consumed <= bytes.len()),
            Ok(Parsed::Incomplete) => {}
            Err(e) => prop_assert!(e.offset <= bytes.len()),
        }
        let _ = frames(&[&bytes], 64);
    }

    #[test]
    fn doesnt_crash_on_near_records(r in record(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
        // Corrupt one byte of a valid line.
        let mut line = r.to_line();
        let i = at.index(line.len());
        line[i] = b;
        if let Ok(r2) = SmdrRecord::parse(&line) {
            let again = r2.to_line();
            prop_assert_eq!(SmdrRecord::parse(&again).unwrap(), r2);
        }
    }

    #[test]
    fn generated_records_round_trip(r in record()) {
        let line = r.to_line();
        let parsed = SmdrRecord::parse(&line);
        prop_assert_eq!(parsed.as_ref(), Ok(&r), "line {:?}", String::from_utf8_lossy(&line));
        match parse_smdr(&line) {
            Ok(Parsed::Complete { value, consumed }) => {
                prop_assert_eq!(value, r);
                prop_assert_eq!(consumed, line.len());
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn every_strict_prefix_is_incomplete(r in record()) {
        let line = r.to_line();
        for k in 0..line.len() {
            prop_assert_eq!(parse_smdr(&line[..k]), Ok(Parsed::Incomplete), "prefix {}", k);
        }
    }

    #[test]
    fn chunking_does_not_change_frames(
        records in proptest::collection::vec(record(), 1..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        lf_only in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for r in &records {
            let mut line = r.to_line();
            if lf_only {
                line.remove(line.len() - 2);
            }
            stream.extend_from_slice(&line);
        }
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for a in at.into_iter().chain([stream.len()]) {
            chunks.push(&stream[prev..a]);
            prev = a;
        }
        let whole = frames(&[&stream], 4096);
        prop_assert_eq!(&frames(&chunks, 4096), &whole);
        let parsed: Vec<SmdrRecord<'_>> =
            whole.iter().map(|(_, l)| SmdrRecord::parse(l).unwrap()).collect();
        prop_assert_eq!(parsed, records);
    }
}

#[test]
fn every_strict_prefix_of_every_fixture_line_is_incomplete() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/smdr");
    let bytes = std::fs::read(dir.join("ccbc_rw180105_day_34fields.txt")).unwrap();
    let mut rest = &bytes[..];
    let mut n = 0;
    while let Ok(Parsed::Complete { consumed, .. }) = parse_smdr(rest) {
        for k in 0..consumed {
            assert_eq!(parse_smdr(&rest[..k]), Ok(Parsed::Incomplete));
        }
        rest = &rest[consumed..];
        n += 1;
    }
    assert_eq!(n, 326);
    assert!(rest.is_empty());
}
