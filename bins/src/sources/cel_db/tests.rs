use super::*;
use call_assembler::CelRow;

fn col(name: &str, data_type: &str) -> Column {
    Column {
        name: name.into(),
        data_type: data_type.into(),
    }
}

/// Asterisk's cel table (contrib/ast-db-manage), as information_schema shows it.
fn cel_columns(int: &str, time: &str) -> Vec<Column> {
    let mut v = vec![col("id", int), col("eventtype", "character varying")];
    v.push(col("eventtime", time));
    for n in [
        "cid_name",
        "cid_num",
        "cid_ani",
        "cid_rdnis",
        "cid_dnid",
        "exten",
        "context",
        "channame",
        "appname",
        "appdata",
    ] {
        v.push(col(n, "character varying"));
    }
    v.push(col("amaflags", int));
    for n in [
        "accountcode",
        "peeraccount",
        "uniqueid",
        "linkedid",
        "userfield",
        "peer",
        "extra",
    ] {
        v.push(col(n, "character varying"));
    }
    v
}

#[test]
fn fields_are_quoted_as_asterisk_does_and_one_row_stays_one_record() {
    let line = csv_line(&["a", "\"Alice\" <1001>", "", "x,y", "two\nlines\r"]);
    assert_eq!(
        line,
        "\"a\",\"\"\"Alice\"\" <1001>\",\"\",\"x,y\",\"two\nlines\r\"\n"
    );
    assert_eq!(
        call_assembler::csv::record_end(line.as_bytes()),
        Some(line.len())
    );
    let fields = call_assembler::csv::split_record(&line).unwrap();
    assert_eq!(fields, ["a", "\"Alice\" <1001>", "", "x,y", "two\nlines\r"]);
}

#[test]
fn a_cel_row_becomes_a_cel_custom_line_the_assembler_reads() {
    let layout = Layout::new(
        DbKind::Postgres,
        CsvFile::Cel,
        "cel",
        &cel_columns("integer", "timestamp without time zone"),
    )
    .unwrap();
    assert!(layout.by_id());
    // The select list: eventtype, eventtime, ... in the order of the table's columns
    // found; cid fields, amaflags, extra as text; userdeftype missing.
    let mut values: Vec<Option<String>> = vec![
        Some("HANGUP".into()),
        Some("2012-04-24 23:30:13.624898".into()),
    ];
    values.extend((0..17).map(|i| Some(format!("v{i}"))));
    values[18] = Some("{\"hangupcause\":16,\"dialstatus\":\"ANSWER\"}".into());
    let line = csv_line(&layout.fields(&values));
    let fields = call_assembler::csv::split_record(line.trim_end()).unwrap();
    assert_eq!(fields.len(), 20);
    assert_eq!(fields[18], "", "no userdeftype column");
    assert_eq!(fields[19], "{\"hangupcause\":16,\"dialstatus\":\"ANSWER\"}");
    let row = CelRow::parse_csv_line(line.trim_end()).unwrap();
    assert_eq!(row.eventtype, "HANGUP");
    assert_eq!(row.eventtime, "2012-04-24 23:30:13.624898");
    assert_eq!(row.uniqueid, "v12");
    assert_eq!(row.linkedid, "v13");
    assert_eq!(row.peer, "v14");
    assert_eq!(row.extra, fields[19]);
}

#[test]
fn a_cdr_row_becomes_a_cdr_csv_line_with_missing_columns_empty() {
    // cdr_mysql's old layout: calldate, no answer/end, no linkedid/sequence.
    let columns: Vec<Column> = [
        ("calldate", "datetime"),
        ("clid", "varchar"),
        ("src", "varchar"),
        ("dst", "varchar"),
        ("dcontext", "varchar"),
        ("channel", "varchar"),
        ("dstchannel", "varchar"),
        ("lastapp", "varchar"),
        ("lastdata", "varchar"),
        ("duration", "int"),
        ("billsec", "int"),
        ("disposition", "varchar"),
        ("amaflags", "int"),
        ("accountcode", "varchar"),
        ("uniqueid", "varchar"),
        ("userfield", "varchar"),
    ]
    .iter()
    .map(|(n, t)| col(n, t))
    .collect();
    let layout = Layout::new(DbKind::MySql, CsvFile::Cdr, "cdr", &columns).unwrap();
    assert!(!layout.by_id());
    let sql = layout.time_page_sql(true, false).unwrap();
    assert!(
        sql.contains("DATE_FORMAT(`calldate`, '%Y-%m-%d %H:%i:%s')"),
        "{sql}"
    );
    assert!(
        sql.contains("WHERE `calldate` IS NOT NULL AND `calldate` >= ?"),
        "{sql}"
    );
    assert!(
        sql.ends_with("ORDER BY `calldate`, `uniqueid` LIMIT ? OFFSET ?"),
        "{sql}"
    );
    // Values in cdr_csv's order of the columns present.
    let values: Vec<Option<String>> = [
        "",
        "1001",
        "2001",
        "internal",
        "\"Alice\" <1001>",
        "SIP/a",
        "SIP/b",
        "Dial",
        "x",
        "2026-11-22 13:54:08",
        "5",
        "3",
        "ANSWERED",
        "3",
        "1.5",
        "",
    ]
    .iter()
    .map(|v| Some((*v).to_owned()))
    .collect();
    let line = csv_line(&layout.fields(&values));
    let fields = call_assembler::csv::split_record(line.trim_end()).unwrap();
    assert_eq!(fields.len(), 21);
    assert_eq!(
        fields[9], "2026-11-22 13:54:08",
        "calldate stands for start"
    );
    assert_eq!(fields[10], "", "no answer column");
    assert_eq!(
        fields[15], "DOCUMENTATION",
        "the AMA flag as cdr_csv writes it"
    );
    assert_eq!(fields[16], "1.5");
    assert_eq!(fields[19], "", "no linkedid column");
}

#[test]
fn identifiers_are_quoted_per_database_and_end_is_no_keyword() {
    let pg_cdr = [
        col("uniqueid", "character varying"),
        col("end", "timestamp without time zone"),
        col("sequence", "integer"),
    ];
    let pg = Layout::new(DbKind::Postgres, CsvFile::Cdr, "public.cdr", &pg_cdr).unwrap();
    let sql = pg.time_page_sql(true, true).unwrap();
    assert!(sql.contains("FROM \"public\".\"cdr\""), "{sql}");
    assert!(
        sql.contains(
            "\"end\" >= CAST($1 AS timestamp without time zone) AND \"end\" <= CAST($2 AS timestamp without time zone)"
        ),
        "{sql}"
    );
    assert!(
        sql.ends_with("ORDER BY \"end\", \"uniqueid\", \"sequence\" LIMIT $3 OFFSET $4"),
        "{sql}"
    );
    assert!(
        sql.contains("to_char(\"end\", 'YYYY-MM-DD HH24:MI:SS.US') AS c0"),
        "{sql}"
    );
    assert!(
        sql.contains("to_char(\"end\", 'YYYY-MM-DD HH24:MI:SS') AS c"),
        "{sql}"
    );
    assert!(sql.contains("CAST(\"sequence\" AS text) AS c"), "{sql}");
    assert_eq!(quote_ident(DbKind::MySql, "we`ird"), "`we``ird`");
    assert_eq!(quote_ident(DbKind::Postgres, "we\"ird"), "\"we\"\"ird\"");
    let my = Layout::new(
        DbKind::MySql,
        CsvFile::Cel,
        "cel",
        &cel_columns("int", "datetime"),
    )
    .unwrap();
    let sql = my.id_page_sql(true).unwrap();
    assert!(
        sql.starts_with("SELECT CAST(`id` AS CHAR) AS c0, CAST(`eventtype` AS CHAR) AS c1, DATE_FORMAT(`eventtime`, '%Y-%m-%d %H:%i:%s.%f') AS c2"),
        "{sql}"
    );
    assert!(
        sql.ends_with("FROM `cel` WHERE `id` > ? AND `id` <= ? ORDER BY `id` LIMIT ?"),
        "{sql}"
    );
    // No id and no time column: nothing to keep a watermark by.
    assert!(
        Layout::new(
            DbKind::MySql,
            CsvFile::Cel,
            "cel",
            &[col("eventtype", "varchar")]
        )
        .is_none()
    );
    // A non-integer id is no id.
    let uuid = [
        col("id", "uuid"),
        col("eventtime", "timestamp with time zone"),
    ];
    assert!(
        !Layout::new(DbKind::Postgres, CsvFile::Cel, "cel", &uuid)
            .unwrap()
            .by_id()
    );
}

#[test]
fn a_gap_in_the_ids_is_waited_for_then_passed() {
    let t0 = Instant::now();
    let wait = GAP_WAIT;
    let mut c = IdCursor::new(10);
    // 11, 12, then 14: stops before the gap.
    let took = c.take(t0, &[11, 12, 14, 15], wait);
    assert_eq!((took.take, took.blocked, c.last), (2, true, 12));
    assert!(c.is_waiting());
    // Still there a second later: still waiting.
    let took = c.take(t0 + Duration::from_secs(1), &[14, 15], wait);
    assert_eq!((took.take, took.blocked, c.last), (0, true, 12));
    // 13 appears (committed late): everything goes, the gap is forgotten.
    let took = c.take(t0 + Duration::from_secs(2), &[13, 14, 15], wait);
    assert_eq!((took.take, took.blocked, c.last), (3, false, 15));
    assert!(!c.is_waiting());
    assert!(took.skipped.is_empty());
    // 16 never appears: 17 waits GAP_WAIT from when it was first seen, then goes.
    let t1 = t0 + Duration::from_secs(10);
    assert!(c.take(t1, &[17], wait).blocked);
    assert!(
        c.take(t1 + wait - Duration::from_millis(1), &[17], wait)
            .blocked
    );
    let took = c.take(t1 + wait, &[17, 19], wait);
    assert_eq!(took.skipped, vec![(16, 16)]);
    // 19 follows a new gap, first seen now.
    assert_eq!((took.take, took.blocked, c.last), (1, true, 17));
    let took = c.take(t1 + wait * 2, &[19], wait);
    assert_eq!((took.take, took.skipped, c.last), (1, vec![(18, 18)], 19));
    assert!(!c.is_waiting());
}

#[test]
fn a_time_window_skips_rows_seen_and_forgets_old_ones() {
    let lookback = Duration::from_secs(60);
    assert_eq!(read_from(None, None, lookback), None);
    assert_eq!(
        read_from(Some("2026-11-22 13:54:08.5"), None, lookback).as_deref(),
        Some("2026-11-22 13:53:08.500000")
    );
    // Never before the floor (DB_BACKFILL_FROM).
    assert_eq!(
        read_from(
            Some("2026-11-22 13:54:08"),
            Some("2026-11-22 13:54:00.000000"),
            lookback
        )
        .as_deref(),
        Some("2026-11-22 13:54:00.000000")
    );
    let mut c = TimeCursor::default();
    assert!(c.see("2026-11-22 13:50:00.000000", 1));
    assert!(c.see("2026-11-22 13:54:08.000000", 2));
    assert!(!c.see("2026-11-22 13:54:08.000000", 2), "seen");
    // A row committed late, with an earlier time inside the window: new.
    assert!(c.see("2026-11-22 13:53:30.000000", 3));
    assert_eq!(c.max.as_deref(), Some("2026-11-22 13:54:08.000000"));
    c.prune(lookback);
    assert_eq!(c.seen.len(), 2, "the row of 13:50 is outside the window");
    let Watermark::Time { max, seen, .. } = c.mark() else {
        panic!("a time watermark");
    };
    let back = TimeCursor::from_mark(max, None, seen);
    assert!(!back.seen_keys.contains(&1) && back.seen_keys.contains(&3));
}

#[test]
fn watermarks_are_saved_as_small_json() {
    let id = Watermark::Id { last: 42 };
    assert_eq!(
        serde_json::to_string(&id).unwrap(),
        r#"{"by":"id","last":42}"#
    );
    let time = Watermark::Time {
        max: Some("2026-11-22 13:54:08.000000".into()),
        floor: None,
        seen: BTreeMap::from([("2026-11-22 13:54:08.000000".into(), vec![u64::MAX])]),
    };
    let json = serde_json::to_vec(&time).unwrap();
    assert_eq!(serde_json::from_slice::<Watermark>(&json).unwrap(), time);
    assert_eq!(row_key(b""), 0xcbf2_9ce4_8422_2325);
    assert_ne!(row_key(b"a\n"), row_key(b"b\n"));
}
