use super::ami::messages;
use super::*;
use crate::AmiAssemblerConfig;
use crate::feed::{
    AmiInput, AsteriskInput, CelInput, CsvFile, ReconcileConfig, ReconcileFeed, Reconciled,
};

fn cdr(bytes: Vec<u8>) -> AsteriskInput {
    AsteriskInput::Cdr(CelInput {
        file: CsvFile::Cdr,
        bytes,
        pos: None,
        state: None,
    })
}

fn outcomes(store: &Store) -> Vec<Reconciled> {
    store
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Reconciled(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn build(now: Instant, now_ms: i64, saved: &Restored) -> ReconcileFeed {
    ReconcileFeed::restore(
        "ami",
        AmiAssemblerConfig::default(),
        ReconcileConfig::default(),
        now,
        now_ms,
        saved,
    )
}

#[test]
fn waiting_cdr_rows_and_emitted_ami_calls_survive_a_restart() {
    let cdr05 = fixture("asterisk/05_blind_transfer/cdr.csv");
    let ami01 = fixture("asterisk/01_answered_caller_hangup/ami.raw");
    let cdr01 = fixture("asterisk/01_answered_caller_hangup/cdr.csv");
    let config = ReconcileConfig::default();
    let start = t0();
    let mut p = ReconcileFeed::new("ami", AmiAssemblerConfig::default(), config);
    // AMI has call 01 and emits it; the CDR has 05 (a call AMI never saw) so far.
    p.handle_input(start, AsteriskInput::Ami(AmiInput::Bytes(ami01)));
    p.handle_timeout(start + Duration::from_secs(30));
    p.handle_input(start + Duration::from_secs(30), cdr(cdr05));
    let mut store = Store::default();
    store.commit(&mut p, 1_000);
    assert_eq!(store.calls.len(), 1, "AMI's call goes out at once");
    let ami_call = store.calls[0].clone();
    let journal = &store.saved.journal;
    assert!(journal.iter().any(|(e, _)| e.call_key.starts_with("seen:")));
    assert!(journal.iter().any(|(e, _)| e.call_key.starts_with("cdr:")));

    // Restart: the CDR rows of 01 come now; 05's wait runs out.
    drop(p);
    let later = start + Duration::from_secs(40);
    let mut p = ReconcileFeed::restore(
        "ami",
        AmiAssemblerConfig::default(),
        config,
        later,
        1_000,
        &store.saved,
    );
    p.handle_input(later, cdr(cdr01));
    p.handle_timeout(later + config.wait);
    store.commit(&mut p, 2_000);
    let outcomes = outcomes(&store);
    assert_eq!(store.calls.len(), 2, "{outcomes:?}");
    assert!(store.calls[1].reconciled);
    assert_ne!(store.calls[1].id, ami_call.id);
    assert!(outcomes.contains(&Reconciled::Matched {
        linkedid: ami_call.linkedid.to_string()
    }));
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Reconciled::Rebuilt { .. })),
        "{outcomes:?}"
    );
    assert!(
        !outcomes
            .iter()
            .any(|o| matches!(o, Reconciled::MissingFromCdr { .. }))
    );
    // Everything decided: nothing of it is left in the journal.
    assert!(store.saved.journal.is_empty(), "{:?}", store.saved.journal);
}

#[test]
fn an_ami_call_without_cdr_rows_is_flagged_after_the_wait() {
    let ami01 = fixture("asterisk/01_answered_caller_hangup/ami.raw");
    let config = ReconcileConfig::default();
    let now = t0();
    let mut p = ReconcileFeed::new("ami", AmiAssemblerConfig::default(), config);
    p.handle_input(now, AsteriskInput::Ami(AmiInput::Bytes(ami01)));
    p.handle_timeout(now + Duration::from_secs(30));
    let mut store = Store::default();
    store.commit(&mut p, T0_MS);
    assert_eq!(store.calls.len(), 1);
    p.handle_timeout(now + Duration::from_secs(31));
    store.commit(&mut p, T0_MS);
    assert!(outcomes(&store).is_empty());
    let due = p.poll_timeout().unwrap();
    p.handle_timeout(due);
    store.commit(&mut p, T0_MS);
    let outcomes = outcomes(&store);
    assert!(
        matches!(outcomes.as_slice(), [Reconciled::MissingFromCdr { .. }]),
        "{outcomes:?}"
    );
}

/// AMI of calls 01 and 07 in groups of messages, then the CDR of 01, 05 and 07 (05 is a call
/// AMI never saw).
fn inputs() -> Vec<AsteriskInput> {
    let mut out: Vec<AsteriskInput> = Vec::new();
    for capture in ["01_answered_caller_hangup", "07_queue_two_agents"] {
        for m in messages(&fixture(&format!("asterisk/{capture}/ami.raw")), 10) {
            out.push(AsteriskInput::Ami(AmiInput::Bytes(m)));
        }
    }
    for capture in [
        "01_answered_caller_hangup",
        "05_blind_transfer",
        "07_queue_two_agents",
    ] {
        out.push(cdr(fixture(&format!("asterisk/{capture}/cdr.csv"))));
    }
    out
}

#[test]
fn a_crash_anywhere_loses_and_doubles_nothing() {
    let step = Duration::from_secs(1);
    let straight = drive(inputs(), step, None, build);
    let got = outcomes(&straight);
    assert_eq!(
        got.iter()
            .filter(|o| matches!(o, Reconciled::Rebuilt { .. }))
            .count(),
        1,
        "{got:?}"
    );
    assert_eq!(straight.calls.len(), 3);
    assert!(straight.saved.journal.is_empty());
    let n = inputs().len();
    for crash in 0..n - 1 {
        let crashed = drive(inputs(), step, Some(crash), build);
        assert_same_calls(&straight, &crashed);
        assert!(crashed.saved.journal.is_empty(), "{crash}");
    }
}
