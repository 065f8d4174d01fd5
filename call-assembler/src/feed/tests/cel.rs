use super::ami::CAPTURES;
use super::*;
use crate::feed::{CelData, CelFeed, CelInput, CsvFile, FilePos, parse_cdr};
use crate::{AmiAssemblerConfig, CelColumns};

fn build(now: Instant, now_ms: i64, saved: &Restored) -> CelFeed {
    CelFeed::restore(
        "ami",
        AmiAssemblerConfig::default(),
        CelColumns::sample(),
        now,
        now_ms,
        saved,
    )
}

/// A capture's CEL lines three at a time, then its CDR lines, each input with the position of
/// its file after it (as the follower hands them over).
fn inputs(capture: &str) -> Vec<CelInput> {
    let mut out = Vec::new();
    for (file, name) in [(CsvFile::Cel, "cel.csv"), (CsvFile::Cdr, "cdr.csv")] {
        let mut offset = 0u64;
        for group in lines(&fixture(&format!("asterisk/{capture}/{name}"))).chunks(3) {
            let bytes = group.concat();
            offset += bytes.len() as u64;
            out.push(CelInput {
                file,
                data: CelData::Bytes(bytes),
                pos: Some(FilePos { inode: 7, offset }),
                state: None,
            });
        }
    }
    out
}

#[test]
fn cdr_layouts_by_field_count() {
    let base = r#""","1001","2001","internal","""Alice"" <1001>","SIP/a","SIP/b","Dial","x","2026-11-22 13:54:08","2026-11-22 13:54:10","2026-11-22 13:54:13",5,3,"ANSWERED","DOCUMENTATION""#;
    let (key, row) = parse_cdr(base).unwrap();
    assert_eq!(key, "SIP/a");
    assert_eq!(row.len(), 16);
    let (key, _) = parse_cdr(&format!(r#"{base},"1.5""#)).unwrap();
    assert_eq!(key, "1.5");
    let (key, row) = parse_cdr(&format!(r#"{base},"1.5","","","1.4",7"#)).unwrap();
    assert_eq!(key, "1.4");
    assert_eq!(row[4].1, "\"Alice\" <1001>");
    assert_eq!(parse_cdr("a,b"), None);
}

#[test]
fn cdr_rows_attach_to_their_call_and_the_offset_rides_with_the_commit() {
    let cel = fixture("asterisk/01_answered_caller_hangup/cel.csv");
    let cdr = fixture("asterisk/01_answered_caller_hangup/cdr.csv");
    let mut p = CelFeed::new("ami", AmiAssemblerConfig::default(), CelColumns::sample());
    let now = t0();
    let pos = FilePos {
        inode: 7,
        offset: cdr.len() as u64,
    };
    p.handle_input(
        now,
        CelInput {
            file: CsvFile::Cdr,
            data: CelData::Bytes(cdr),
            pos: Some(pos),
            state: None,
        },
    );
    p.handle_input(now, CelInput::from(cel));
    p.handle_end(now);
    let commit = p.take_commit();
    assert_eq!(commit.calls.len(), 1);
    assert_eq!(commit.calls[0].cdr.len(), 3);
    assert_eq!(commit.calls[0].cdr[0]["disposition"], "ANSWERED");
    assert_eq!(
        commit.states,
        vec![("ami/csv/cdr".to_owned(), serde_json::to_vec(&pos).unwrap())]
    );
}

#[test]
fn a_database_watermark_rides_with_the_commit_of_its_rows() {
    let name = CelFeed::db_state_name("ami/hq", CsvFile::Cel);
    assert_eq!(name, "ami/hq/db/cel");
    assert!(CelFeed::state_names("ami/hq").contains(&name));
    let mut p = CelFeed::new(
        "ami/hq",
        AmiAssemblerConfig::default(),
        CelColumns::sample(),
    );
    let now = t0();
    let line = r#""CHAN_START","2026-11-22 13:54:08.579430","","","","","","2001","internal","Local/2001@internal-0000002c;1","","","3","","1795355648.116","1795355648.116","","","","""#;
    for (bytes, mark) in [(format!("{line}\n").into_bytes(), "1"), (Vec::new(), "2")] {
        p.handle_input(
            now,
            CelInput {
                file: CsvFile::Cel,
                data: CelData::Bytes(bytes),
                pos: None,
                state: Some((name.clone(), mark.as_bytes().to_vec())),
            },
        );
    }
    let commit = p.take_commit();
    assert_eq!(
        commit.journal_add.len(),
        1,
        "the row is journaled with its call"
    );
    assert_eq!(commit.states, vec![(name, b"2".to_vec())]);
}

#[test]
fn a_crash_mid_file_loses_and_doubles_nothing_and_keeps_the_position() {
    for capture in CAPTURES {
        let step = Duration::from_millis(300);
        let straight = drive(inputs(capture), step, None, build);
        assert!(!straight.calls.is_empty(), "{capture}");
        assert!(
            straight.calls.iter().all(|c| !c.cdr.is_empty()),
            "{capture}: the CDR rows attached"
        );
        assert!(straight.saved.journal.is_empty(), "{capture}");
        let n = inputs(capture).len();
        for crash in 0..n - 1 {
            let crashed = drive(inputs(capture), step, Some(crash), build);
            assert_same_calls(&straight, &crashed);
            assert!(crashed.saved.journal.is_empty(), "{capture} {crash}");
        }
        let cdr = fixture(&format!("asterisk/{capture}/cdr.csv"));
        let saved = CelFeed::saved_pos("ami", CsvFile::Cdr, &straight.saved).unwrap();
        assert_eq!(saved.offset, cdr.len() as u64);
    }
}

#[test]
fn cdr_rows_no_call_claims_are_dropped_after_the_hold() {
    let start = t0();
    let mut feed = CelFeed::new("ami", AmiAssemblerConfig::default(), CelColumns::sample());
    let cdr = fixture("asterisk/03_no_answer/cdr.csv");
    feed.handle_input(
        start,
        CelInput {
            file: CsvFile::Cdr,
            data: CelData::Bytes(cdr),
            pos: None,
            state: None,
        },
    );
    let mut store = Store::default();
    store.commit(&mut feed, T0_MS);
    assert!(!store.saved.journal.is_empty());
    let due = feed.poll_timeout().unwrap();
    assert_eq!(due, start + crate::feed::CDR_HOLD);
    feed.handle_timeout(due);
    store.commit(&mut feed, wall(start, due));
    assert!(store.saved.journal.is_empty());
    assert!(store.calls.is_empty());
    assert!(
        store
            .events
            .iter()
            .any(|e| matches!(e, Event::UnclaimedCdr { rows, .. } if *rows > 0))
    );
}

/// `inputs` as the database reader hands them over, with a watermark instead of a file
/// position and two unusable rows (a CEL row that is not one, a CDR row of 5 fields) among
/// them: with `rows`, each line's fields; without, the lines the reader wrote of them before it
/// handed rows over (every field quoted).
fn with_rows(capture: &str, rows: bool) -> Vec<CelInput> {
    let mut out: Vec<CelInput> = Vec::new();
    for (n, input) in inputs(capture).into_iter().enumerate() {
        let CelData::Bytes(mut bytes) = input.data else {
            unreachable!()
        };
        // In the first input of each file.
        if out.last().is_none_or(|last| last.file != input.file) {
            let bad = match input.file {
                CsvFile::Cel => "\"NOT_AN_EVENT\",\"yesterday\",\"x\"\n",
                CsvFile::Cdr => "\"a\",\"b\",\"c\",\"d\",\"e\"\n",
            };
            bytes.extend_from_slice(bad.as_bytes());
        }
        let data = as_read_from_db(&bytes, rows);
        let name = CelFeed::db_state_name("ami", input.file);
        out.push(CelInput {
            file: input.file,
            data,
            pos: None,
            state: Some((name, format!("{{\"by\":\"id\",\"last\":{n}}}").into_bytes())),
        });
    }
    out
}

/// Everything a feed hands out for `inputs` fed `step` apart, then its end: each commit and
/// the events, in order, as text.
fn everything(inputs: Vec<CelInput>) -> Vec<String> {
    let start = t0();
    let mut p = CelFeed::new("ami", AmiAssemblerConfig::default(), CelColumns::sample());
    let mut out = Vec::new();
    let mut now = start;
    let mut take = |p: &mut CelFeed| {
        while let Some(e) = p.poll_event() {
            out.push(format!("{e:?}"));
        }
        out.push(format!("{:?}", p.take_commit()));
    };
    for input in inputs {
        now += Duration::from_millis(300);
        if p.poll_timeout().is_some_and(|d| d <= now) {
            p.handle_timeout(now);
            take(&mut p);
        }
        p.handle_input(now, input);
        take(&mut p);
    }
    p.handle_end(now + Duration::from_millis(300));
    take(&mut p);
    out
}

#[test]
fn rows_in_fields_commit_exactly_what_their_csv_lines_commit() {
    for capture in CAPTURES {
        let bytes = everything(with_rows(capture, false));
        let rows = everything(with_rows(capture, true));
        assert!(
            bytes == rows,
            "{capture}: rows committed otherwise than their lines"
        );
        assert!(
            rows.iter()
                .any(|c| c.contains("journal_add: [JournalEntry"))
        );
        assert!(
            rows.iter().any(|c| c.contains("not a CEL row")),
            "{capture}"
        );
        assert!(
            rows.iter().any(|c| c.contains("not a cdr_csv row")),
            "{capture}"
        );
    }
}

#[test]
fn a_journal_written_from_rows_restores_as_one_written_from_lines() {
    for capture in CAPTURES {
        let step = Duration::from_millis(300);
        let straight = drive(with_rows(capture, false), step, None, build);
        assert!(!straight.calls.is_empty(), "{capture}");
        let n = with_rows(capture, true).len();
        for crash in 0..n - 1 {
            let crashed = drive(with_rows(capture, true), step, Some(crash), build);
            assert_same_calls(&straight, &crashed);
            assert!(crashed.saved.journal.is_empty(), "{capture} {crash}");
            assert_eq!(straight.rejects, crashed.rejects, "{capture} {crash}");
            assert_eq!(
                straight.saved.states, crashed.saved.states,
                "{capture} {crash}"
            );
        }
    }
    // A journal entry of a row is the line the file would have: the old journal's form.
    let capture = CAPTURES[0];
    let journal = |rows: bool| {
        let mut store = Store::default();
        let mut p = CelFeed::new("ami", AmiAssemblerConfig::default(), CelColumns::sample());
        for input in with_rows(capture, rows) {
            p.handle_input(t0(), input);
            store.commit(&mut p, T0_MS);
        }
        store.saved.journal
    };
    let from_rows = journal(true);
    assert!(!from_rows.is_empty());
    assert!(from_rows == journal(false), "the same journal");
}
