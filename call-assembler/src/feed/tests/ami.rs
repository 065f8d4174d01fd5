use super::*;
use crate::AmiAssemblerConfig;
use crate::feed::{AmiFeed, AmiInput};

/// The Asterisk captures of the repository.
pub(super) const CAPTURES: [&str; 8] = [
    "01_answered_caller_hangup",
    "03_no_answer",
    "05_blind_transfer",
    "07_queue_two_agents",
    "11_sip_answered_caller_hangup",
    "13_sip_no_answer",
    "16_sip_blind_transfer",
    "19_sip_queue",
];

/// A raw AMI capture cut into groups of `n` whole messages.
pub(super) fn messages(raw: &[u8], n: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut rest = raw;
    let mut group = Vec::new();
    let mut count = 0;
    while let Some(i) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let (msg, tail) = rest.split_at(i + 4);
        group.extend_from_slice(msg);
        rest = tail;
        count += 1;
        if count == n {
            out.push(std::mem::take(&mut group));
            count = 0;
        }
    }
    group.extend_from_slice(rest);
    if !group.is_empty() {
        out.push(group);
    }
    out
}

fn build(now: Instant, now_ms: i64, saved: &Restored) -> AmiFeed {
    AmiFeed::restore("ami", AmiAssemblerConfig::default(), now, now_ms, saved)
}

fn inputs(capture: &str) -> Vec<AmiInput> {
    messages(&fixture(&format!("asterisk/{capture}/ami.raw")), 6)
        .into_iter()
        .map(AmiInput::Bytes)
        .collect()
}

#[test]
fn each_capture_makes_its_calls_and_leaves_no_journal() {
    for capture in CAPTURES {
        let store = drive(inputs(capture), Duration::from_millis(200), None, build);
        assert!(!store.calls.is_empty(), "{capture}");
        assert!(store.by_id().values().all(|c| c.complete), "{capture}");
        assert!(store.saved.journal.is_empty(), "{capture}");
        assert_eq!(store.rejects, 0, "{capture}");
    }
}

#[test]
fn a_crash_mid_call_loses_and_doubles_nothing() {
    for capture in CAPTURES {
        let straight = drive(inputs(capture), Duration::from_millis(200), None, build);
        let n = inputs(capture).len();
        let mut open_seen = false;
        for crash in [n / 4, n / 2, 3 * n / 4] {
            let crashed = drive(
                inputs(capture),
                Duration::from_millis(200),
                Some(crash),
                build,
            );
            open_seen |= crashed.open_at_crash.unwrap() > 0;
            assert_same_calls(&straight, &crashed);
            assert!(crashed.saved.journal.is_empty(), "{capture} {crash}");
        }
        assert!(open_seen, "{capture}: a crash with a call open");
    }
}

#[test]
fn messages_from_a_client_are_journaled_as_received_and_a_call_waits_for_its_grace() {
    let raw = fixture("asterisk/01_answered_caller_hangup/ami.raw");
    let mut framer = ami_proto::AmiFramer::new(ami_proto::Limits::default());
    framer.push(&raw);
    let mut msgs = Vec::new();
    while let Some(f) = framer.next_frame() {
        if let ami_proto::Frame::Message { bytes, .. } = f {
            msgs.push(ami_proto::AmiMessage::parse(bytes).unwrap().into_owned());
        }
    }
    let start = t0();
    let mut feed = AmiFeed::new("ami", AmiAssemblerConfig::default());
    feed.handle_input(start, AmiInput::Messages(msgs));
    let mut store = Store::default();
    store.commit(&mut feed, T0_MS);
    assert!(
        store.calls.is_empty(),
        "the call waits for its grace period"
    );
    assert!(!store.saved.journal.is_empty());
    let due = feed.poll_timeout().unwrap();
    assert!(due > start);
    feed.handle_timeout(due);
    store.commit(&mut feed, wall(start, due));
    assert_eq!(store.calls.len(), 1);
    assert!(store.saved.journal.is_empty());
}

#[test]
fn a_capture_cut_short_is_kept_as_a_reject() {
    let raw = fixture("asterisk/03_no_answer/ami.raw");
    let now = t0();
    let mut feed = AmiFeed::new("ami", AmiAssemblerConfig::default());
    feed.handle_input(now, AmiInput::Bytes(raw[..raw.len() - 10].to_vec()));
    feed.handle_end(now);
    let mut store = Store::default();
    store.commit(&mut feed, T0_MS);
    assert_eq!(store.rejects, 1);
    assert!(matches!(
        store.events.as_slice(),
        [.., Event::BadInput { .. }]
    ));
}
