use super::ami::messages;
use super::*;
use crate::AmiAssemblerConfig;
use crate::feed::{
    AmiInput, AsteriskInput, CelData, CelInput, CsvFile, ReconcileConfig, ReconcileFeed, Reconciled,
};

fn cdr(bytes: Vec<u8>) -> AsteriskInput {
    AsteriskInput::Cdr(CelInput {
        file: CsvFile::Cdr,
        data: CelData::Bytes(bytes),
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

/// [`inputs`] with the CDR as the database reader hands it over, and a row of 5 fields after
/// the first: with `rows`, each line's fields; without, the lines the reader wrote of them
/// before it handed rows over (every field quoted).
fn db_inputs(rows: bool) -> Vec<AsteriskInput> {
    let mut first = true;
    inputs()
        .into_iter()
        .map(|input| {
            let AsteriskInput::Cdr(CelInput {
                data: CelData::Bytes(mut bytes),
                ..
            }) = input
            else {
                return input;
            };
            if std::mem::take(&mut first) {
                bytes.extend_from_slice(b"\"a\",\"b\",\"c\",\"d\",\"e\"\n");
            }
            let data = as_read_from_db(&bytes, rows);
            AsteriskInput::Cdr(CelInput {
                file: CsvFile::Cdr,
                data,
                pos: None,
                state: Some(("ami/db/cdr".into(), b"{}".to_vec())),
            })
        })
        .collect()
}

#[test]
fn cdr_rows_in_fields_reconcile_exactly_as_their_csv_lines() {
    let run = |rows: bool| {
        let start = t0();
        let mut now = start;
        let mut p = ReconcileFeed::new(
            "ami",
            AmiAssemblerConfig::default(),
            ReconcileConfig::default(),
        );
        let mut out = Vec::new();
        // Each step's events and the parts of its commit, in order: the feed decides due
        // Linkedids in their sorted order, so two runs agree exactly.
        let mut take = |p: &mut ReconcileFeed| {
            let mut step = Vec::new();
            while let Some(e) = p.poll_event() {
                step.push(format!("{e:?}"));
            }
            let c = p.take_commit();
            step.extend(c.journal_add.iter().map(|x| format!("{x:?}")));
            step.extend(c.journal_remove.iter().map(|x| format!("{x:?}")));
            step.extend(c.calls.iter().map(|x| format!("{x:?}")));
            step.extend(c.updates.iter().map(|x| format!("{x:?}")));
            step.extend(c.rejects.iter().map(|x| format!("{x:?}")));
            step.extend(c.states.iter().map(|x| format!("{x:?}")));
            out.push(step);
        };
        for input in db_inputs(rows) {
            now += Duration::from_secs(1);
            if p.poll_timeout().is_some_and(|d| d <= now) {
                p.handle_timeout(now);
                take(&mut p);
            }
            p.handle_input(now, input);
            take(&mut p);
        }
        p.handle_end(now + Duration::from_secs(1));
        take(&mut p);
        out
    };
    let rows = run(true);
    assert!(
        rows == run(false),
        "rows reconciled otherwise than their lines"
    );
    let all: Vec<&String> = rows.iter().flatten().collect();
    assert!(all.iter().any(|c| c.contains("not a cdr_csv row")));
    assert!(all.iter().any(|c| c.contains("Rebuilt")));
    // A journal written from rows restores as the lines' would.
    let step = Duration::from_secs(1);
    let straight = drive(db_inputs(false), step, None, build);
    let n = db_inputs(true).len();
    for crash in 0..n - 1 {
        let crashed = drive(db_inputs(true), step, Some(crash), build);
        assert_same_calls(&straight, &crashed);
        assert!(crashed.saved.journal.is_empty(), "{crash}");
        assert_eq!(straight.rejects, crashed.rejects, "{crash}");
    }
}
