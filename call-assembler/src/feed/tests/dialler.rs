use super::*;
use crate::feed::{DiallerFeed, DiallerInput};

#[test]
fn lines_split_across_reads_and_bad_items_are_rejected_with_their_bytes() {
    let now = t0();
    let mut p = DiallerFeed::new("dialler", "", 200, (now, T0_MS));
    p.handle_input(
        now,
        DiallerInput::Bytes(b"{\"internal_call_ref\":\"a\"}\r\n{\"intern".to_vec()),
    );
    p.handle_input(
        now,
        DiallerInput::Bytes(b"al_call_ref\":\"b\"}\n\nnot json\n".to_vec()),
    );
    p.handle_input(now, DiallerInput::Items(vec![b"[1]".to_vec()]));
    p.handle_input(
        now,
        DiallerInput::Bytes(b"{\"dial_number\":\"1\"}".to_vec()),
    );
    p.handle_end(now);
    let b = p.take_commit();
    let refs: Vec<&str> = b.calls.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(refs.len(), 3);
    assert_eq!(&refs[..2], ["a", "b"]);
    let raw: Vec<&[u8]> = b.rejects.iter().map(|r| r.raw.as_slice()).collect();
    assert_eq!(raw, [b"not json".as_slice(), b"[1]"]);
    assert_eq!(p.counts().bad_lines, 2);
    assert_eq!(
        b.calls[0].start_time,
        chrono::DateTime::from_timestamp_millis(T0_MS)
            .unwrap()
            .naive_utc()
    );
}

#[test]
fn each_item_is_a_call_in_the_commit_that_acknowledges_it_and_a_crash_loses_none() {
    let items: Vec<DiallerInput> = (0..12)
        .map(|i| {
            DiallerInput::Items(vec![
                format!("{{\"internal_call_ref\":\"r{i}\",\"dial_number\":\"10{i}\"}}")
                    .into_bytes(),
            ])
        })
        .collect();
    let build = |now: Instant, now_ms: i64, _: &Restored| {
        DiallerFeed::new("dialler", "", 4096, (now, now_ms))
    };
    let step = Duration::from_secs(2);
    let straight = drive(items, step, None, build);
    assert_eq!(straight.calls.len(), 12);
    // Time moves with the clock it was given: item i arrives (i + 1) steps in.
    assert_eq!(
        straight.calls[3].start_time,
        chrono::DateTime::from_timestamp_millis(T0_MS + 8_000)
            .unwrap()
            .naive_utc()
    );
    let items: Vec<DiallerInput> = (0..12)
        .map(|i| {
            DiallerInput::Items(vec![
                format!("{{\"internal_call_ref\":\"r{i}\",\"dial_number\":\"10{i}\"}}")
                    .into_bytes(),
            ])
        })
        .collect();
    let crashed = drive(items, step, Some(5), build);
    assert_eq!(crashed.open_at_crash, Some(0), "nothing is ever open");
    let ids = |s: &Store| s.by_id().into_keys().collect::<Vec<_>>();
    assert_eq!(ids(&straight), ids(&crashed));
    assert!(crashed.saved.journal.is_empty() && crashed.saved.states.is_empty());
}
