//! `ami-relay` with `CEL_MODE=db` as a process, against real PostgreSQL and MariaDB servers:
//! the machine's own (127.0.0.1:5432, user postgres, trust; 127.0.0.1:3306, root, no password)
//! and, for the server that goes away, instances each test starts itself. Every test makes its
//! own database with Asterisk's `cel` and `cdr` tables (contrib/ast-db-manage's layout) and
//! drops it at the end; the rows come from the captures in fixtures/asterisk.
//!
//! * `--once` over every capture gives the calls `CEL_MODE=csv --once` gives over the same
//!   capture's files (the whole JSON of each call) and truth.json's counts, on both servers;
//! * rows inserted while the relay runs are shipped, and a relay killed with SIGKILL mid-call
//!   ships every call once after a restart;
//! * a user with SELECT on the two tables only is enough;
//! * `DB_FRESH_START` ships none of the rows already there (also after a restart before any new
//!   row), `DB_BACKFILL_FROM` only the calls from that time;
//! * a CEL table without ids is read by time, and a row committed late with an earlier time
//!   ships once; a missing CEL table is an error that is retried, a missing CDR table is
//!   tolerated;
//! * a server stopped mid-stream and started again: the relay waits and goes on, every call
//!   once;
//! * TLS: verified against DB_CA_FILE, or required; an unknown CA, or no TLS where the server
//!   demands it, is logged and retried;
//! * a gap in the ids is waited for (a row committed later with a lower id is shipped), and a
//!   gap that never fills is passed after the wait.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use call_assembler::Call;
use call_assembler::csv::split_record as split_csv;
use common::db::{Db, Kind, SHARED_MY, SHARED_PG, Server, TestDb, block_on, quote};
use common::own_db::{OwnMariadb, OwnPostgres};
use common::{Relay, cel_capture, cel_captures, read_jsonl};
use sqlx::Connection as _;

const BIN: &str = env!("CARGO_BIN_EXE_ami-relay");

// ---------------------------------------------------------------------------------------------
// Fixtures

fn name_of(cap: &Path) -> String {
    cap.file_name().unwrap().to_string_lossy().to_string()
}

/// The fields of each line of a fixture CSV file.
fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| split_csv(l).unwrap())
        .collect()
}

/// cel.csv's epoch.micro (UTC) as the database's `YYYY-MM-DD HH:MM:SS.ffffff`.
fn epoch_to_text(epoch: &str) -> String {
    let (secs, frac) = epoch.split_once('.').unwrap_or((epoch, "0"));
    let micros: u32 = format!("{frac:0<6}")[..6].parse().unwrap();
    chrono::DateTime::from_timestamp(secs.parse().unwrap(), micros * 1000)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// A cel.csv line's fields as the `cel` table's columns (see [`CEL_COLUMNS`]).
fn cel_values(f: &[String]) -> Vec<Option<String>> {
    let s = |i: usize| Some(f[i].clone());
    let opt = |i: usize| Some(f[i].clone()).filter(|v| !v.is_empty());
    vec![
        s(0),
        Some(epoch_to_text(&f[1])),
        s(2),
        s(3),
        s(4),
        s(5),
        s(6),
        s(7),
        s(8),
        s(9),
        s(10),
        s(11),
        opt(12),
        s(13),
        s(14),
        s(15),
        s(16),
        s(17),
        s(19),
    ]
}

const CEL_COLUMNS: [(&str, Type); 19] = [
    ("eventtype", Type::Text),
    ("eventtime", Type::Time),
    ("cid_name", Type::Text),
    ("cid_num", Type::Text),
    ("cid_ani", Type::Text),
    ("cid_rdnis", Type::Text),
    ("cid_dnid", Type::Text),
    ("exten", Type::Text),
    ("context", Type::Text),
    ("channame", Type::Text),
    ("appname", Type::Text),
    ("appdata", Type::Text),
    ("amaflags", Type::Int),
    ("accountcode", Type::Text),
    ("uniqueid", Type::Text),
    ("linkedid", Type::Text),
    ("peer", Type::Text),
    ("userfield", Type::Text),
    ("extra", Type::Text),
];

const CDR_COLUMNS: [(&str, Type); 21] = [
    ("accountcode", Type::Text),
    ("src", Type::Text),
    ("dst", Type::Text),
    ("dcontext", Type::Text),
    ("clid", Type::Text),
    ("channel", Type::Text),
    ("dstchannel", Type::Text),
    ("lastapp", Type::Text),
    ("lastdata", Type::Text),
    ("start", Type::Time),
    ("answer", Type::Time),
    ("end", Type::Time),
    ("duration", Type::Int),
    ("billsec", Type::Int),
    ("disposition", Type::Text),
    ("amaflags", Type::Int),
    ("uniqueid", Type::Text),
    ("userfield", Type::Text),
    ("peeraccount", Type::Text),
    ("linkedid", Type::Text),
    ("sequence", Type::Int),
];

/// A cdr.csv line's fields as the `cdr` table's columns (the AMA flag as its number).
fn cdr_values(f: &[String]) -> Vec<Option<String>> {
    f.iter()
        .enumerate()
        .map(|(i, v)| match (i, v.as_str()) {
            (_, "") if CDR_COLUMNS[i].1 != Type::Text => None,
            (15, "OMIT") => Some("1".into()),
            (15, "BILLING") => Some("2".into()),
            (15, "DOCUMENTATION") => Some("3".into()),
            _ => Some(v.clone()),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Text,
    Int,
    Time,
}

// ---------------------------------------------------------------------------------------------
// Databases with Asterisk's tables

impl TestDb {
    /// A database of its own on `server`, with Asterisk's tables; dropped with the value.
    fn create(server: &Server, tag: &str) -> Self {
        let db = Self::create_empty(server, tag);
        db.exec(&db.schema());
        db
    }

    /// Asterisk's cel and cdr tables (contrib/ast-db-manage), eventtime to the microsecond.
    fn schema(&self) -> Vec<String> {
        let (serial, ts6, ts) = match self.server.kind {
            Kind::Pg => ("id SERIAL PRIMARY KEY", "TIMESTAMP(6)", "TIMESTAMP"),
            Kind::My => (
                "id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY",
                "DATETIME(6)",
                "DATETIME",
            ),
        };
        let end = quote(self.server.kind, "end");
        vec![
            format!(
                "CREATE TABLE cel ({serial}, eventtype VARCHAR(30) NOT NULL, eventtime {ts6} NOT NULL, \
                 cid_name VARCHAR(80) NOT NULL, cid_num VARCHAR(80) NOT NULL, cid_ani VARCHAR(80) NOT NULL, \
                 cid_rdnis VARCHAR(80) NOT NULL, cid_dnid VARCHAR(80) NOT NULL, exten VARCHAR(80) NOT NULL, \
                 context VARCHAR(80) NOT NULL, channame VARCHAR(80) NOT NULL, appname VARCHAR(80) NOT NULL, \
                 appdata VARCHAR(512) NOT NULL, amaflags INTEGER, accountcode VARCHAR(20) NOT NULL, \
                 peeraccount VARCHAR(20), uniqueid VARCHAR(150) NOT NULL, linkedid VARCHAR(150) NOT NULL, \
                 userfield VARCHAR(255) NOT NULL, peer VARCHAR(80) NOT NULL, extra VARCHAR(512))"
            ),
            format!(
                "CREATE TABLE cdr (accountcode VARCHAR(80), src VARCHAR(80), dst VARCHAR(80), \
                 dcontext VARCHAR(80), clid VARCHAR(80), channel VARCHAR(80), dstchannel VARCHAR(80), \
                 lastapp VARCHAR(80), lastdata VARCHAR(80), start {ts}, answer {ts}, {end} {ts}, \
                 duration INTEGER, billsec INTEGER, disposition VARCHAR(45), amaflags INTEGER, \
                 userfield VARCHAR(255), uniqueid VARCHAR(150), linkedid VARCHAR(150), \
                 peeraccount VARCHAR(80), sequence INTEGER)"
            ),
        ]
    }

    /// `INSERT INTO table (columns) VALUES (...)` with each value cast to its column's type.
    fn insert_sql(&self, table: &str, columns: &[(&str, Type)]) -> String {
        let kind = self.server.kind;
        let names: Vec<String> = columns.iter().map(|(n, _)| quote(kind, n)).collect();
        let values: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, t))| match (kind, t) {
                (Kind::My, _) => "?".to_owned(),
                (Kind::Pg, Type::Text) => format!("${}", i + 1),
                (Kind::Pg, Type::Int) => format!("CAST(${} AS INTEGER)", i + 1),
                (Kind::Pg, Type::Time) => format!("CAST(${} AS TIMESTAMP)", i + 1),
            })
            .collect();
        format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            names.join(", "),
            values.join(", ")
        )
    }

    /// Inserts CEL rows (cel.csv fields), each with an explicit id when given.
    async fn insert_cel(&self, c: &mut Db, rows: &[Vec<String>], ids: Option<&[i64]>) {
        let mut columns = CEL_COLUMNS.to_vec();
        if ids.is_some() {
            columns.push(("id", Type::Int));
        }
        let sql = self.insert_sql("cel", &columns);
        for (i, row) in rows.iter().enumerate() {
            let mut values = cel_values(row);
            if let Some(ids) = ids {
                values.push(Some(ids[i].to_string()));
            }
            c.exec_with(&sql, &values).await;
        }
    }

    /// Inserts CDR rows (cdr.csv fields).
    async fn insert_cdr(&self, c: &mut Db, rows: &[Vec<String>]) {
        let sql = self.insert_sql("cdr", &CDR_COLUMNS);
        for row in rows {
            c.exec_with(&sql, &cdr_values(row)).await;
        }
    }

    /// Inserts captures' CEL and CDR rows.
    fn load(&self, caps: &[&Path]) {
        block_on(async {
            let mut c = self.conn().await;
            for cap in caps {
                self.insert_cdr(&mut c, &csv_rows(&cap.join("cdr.csv")))
                    .await;
                self.insert_cel(&mut c, &csv_rows(&cap.join("cel.csv")), None)
                    .await;
            }
            c.close().await;
        });
    }

    /// The relay's settings for this database, `CEL_MODE=db`.
    fn cel_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("CEL_MODE".to_owned(), "db".to_owned())];
        env.extend(self.env());
        env
    }
}

// ---------------------------------------------------------------------------------------------
// The relay

fn calls(values: &[serde_json::Value]) -> Vec<Call> {
    values
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect()
}

fn as_refs(envs: &[(String, String)]) -> Vec<(&str, &str)> {
    envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Runs `ami-relay --once` with `envs` to its end: the JSON of the calls it delivered.
fn run_once(envs: &[(&str, &str)], dir: &Path, tag: &str) -> Vec<serde_json::Value> {
    let out = dir.join(format!("{tag}.jsonl"));
    let db = dir.join(format!("{tag}.db"));
    let output = Command::new(BIN)
        .arg("--once")
        .args(["--sink", &format!("jsonl:{}", out.display())])
        .args(["--http", "off", "--db", db.to_str().unwrap()])
        .env_remove("AMI_HOST")
        .env_remove("WEBHOOK_URL")
        .env_remove("CEL_MODE")
        .env("RUST_LOG", "info")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{tag} {envs:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    read_jsonl(&out)
}

/// What `CEL_MODE=csv --once` makes of captures' files (concatenated, as one Asterisk writes).
fn csv_once(caps: &[&Path], dir: &Path, tag: &str) -> Vec<serde_json::Value> {
    let (cel, cdr) = (
        dir.join(format!("{tag}.cel.csv")),
        dir.join(format!("{tag}.cdr.csv")),
    );
    let (mut cel_bytes, mut cdr_bytes) = (Vec::new(), Vec::new());
    for cap in caps {
        cel_bytes.extend(std::fs::read(cap.join("cel.csv")).unwrap());
        cdr_bytes.extend(std::fs::read(cap.join("cdr.csv")).unwrap());
    }
    std::fs::write(&cel, cel_bytes).unwrap();
    std::fs::write(&cdr, cdr_bytes).unwrap();
    run_once(
        &[
            ("CEL_MODE", "csv"),
            ("CEL_CSV_PATH", cel.to_str().unwrap()),
            ("CDR_CSV_PATH", cdr.to_str().unwrap()),
        ],
        dir,
        &format!("{tag}.csv"),
    )
}

fn follow(db: &TestDb, dir: &Path, out: &Path, extra: &[(&str, &str)]) -> Relay {
    let sink = format!("jsonl:{}", out.display());
    let state = dir.join("relay.db");
    let mut envs = db.cel_env();
    envs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Relay::start_bin(
        BIN,
        &[
            "--http",
            "off",
            "--db",
            state.to_str().unwrap(),
            "--sink",
            &sink,
        ],
        &as_refs(&envs),
        false,
        false,
    )
}

/// Waits until `path` holds `n` calls; then a little longer to see no more come.
fn wait_calls(path: &Path, n: usize, relay: &Relay) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: Vec<serde_json::Value> = read_jsonl(path);
        if got.len() >= n {
            std::thread::sleep(Duration::from_millis(3000));
            return read_jsonl(path);
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} calls; relay log:\n{}",
            got.len(),
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the relay logged `what`.
fn wait_log(relay: &Relay, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !relay.log().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the relay log:\n{}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ids(values: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for v in values {
        *m.entry(v["id"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    m
}

fn sorted_ids(values: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = values
        .iter()
        .map(|c| c.get("id").unwrap().as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// A call's JSON with its CDR rows in one order: a table without an id gives the rows of one
/// second in (end, uniqueid, sequence) order, cdr_csv in the order Asterisk wrote them.
fn normalized(call: &serde_json::Value) -> serde_json::Value {
    let mut call = call.clone();
    if let Some(rows) = call.get_mut("cdr").and_then(|r| r.as_array_mut()) {
        rows.sort_by_key(|r| r.to_string());
    }
    call
}

/// The same calls, in the same order, each with the same JSON (but for its CDR rows' order).
fn assert_same_calls(got: &[serde_json::Value], want: &[serde_json::Value], what: &str) {
    let ids = |v: &[serde_json::Value]| -> Vec<String> {
        v.iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(got), ids(want), "{what}: the calls differ");
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (normalized(g), normalized(w));
        assert!(
            g == w,
            "{what}: call {} differs:\n got: {}\nwant: {}",
            w["id"],
            serde_json::to_string_pretty(&g).unwrap(),
            serde_json::to_string_pretty(&w).unwrap()
        );
    }
}

/// [`assert_same_calls`] whatever the order of the calls.
fn assert_same_call_set(got: &[serde_json::Value], want: &[serde_json::Value], what: &str) {
    let sorted = |v: &[serde_json::Value]| {
        let mut v = v.to_vec();
        v.sort_by_key(|c| c["id"].as_str().unwrap().to_owned());
        v
    };
    assert_same_calls(&sorted(got), &sorted(want), what);
}

fn assert_once_each(values: &[serde_json::Value], want: &[serde_json::Value], log: &str) {
    let got = ids(values);
    assert!(got.values().all(|n| *n == 1), "{got:?}\n{log}");
    assert_eq!(sorted_ids(values), sorted_ids(want), "{log}");
}

// ---------------------------------------------------------------------------------------------
// 1. --once: the same calls as the CSV files

fn once_over_every_capture(server: &Server, tag: &str) {
    let dir = common::tempdir(&format!("ami-db-once-{tag}-{:?}", server.kind));
    let db = TestDb::create(server, tag);
    let envs = db.cel_env();
    for cap in cel_captures() {
        let name = name_of(&cap);
        db.exec(&["DELETE FROM cel".into(), "DELETE FROM cdr".into()]);
        db.load(&[&cap]);
        let from_db = run_once(&as_refs(&envs), &dir, &format!("{name}.db"));
        let from_csv = csv_once(&[&cap], &dir, &name);
        assert_same_calls(&from_db, &from_csv, &name);
        let truth: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cap.join("truth.json")).unwrap())
                .unwrap();
        let got = calls(&from_db);
        assert_eq!(
            got.len() as u64,
            truth["n_linkedids"].as_u64().unwrap(),
            "{name}"
        );
        assert!(got.iter().all(|c| c.complete), "{name}");
        let rows: usize = got.iter().map(|c| c.cdr.len()).sum();
        assert_eq!(rows as u64, truth["n_cdr_rows"].as_u64().unwrap(), "{name}");
        for c in &got {
            for row in &c.cdr {
                assert_eq!(row["linkedid"], c.call_id, "{name}");
                assert_eq!(row["amaflags"], "DOCUMENTATION", "{name}");
            }
        }
    }
}

#[test]
fn once_on_postgresql_gives_the_csv_files_calls_for_every_capture() {
    once_over_every_capture(&SHARED_PG, "once");
}

#[test]
fn once_on_mariadb_gives_the_csv_files_calls_for_every_capture() {
    once_over_every_capture(&SHARED_MY, "once");
}

/// Every capture through each of the four paths (AMI replay, CEL/CDR CSV files, the `cel`/`cdr`
/// tables on PostgreSQL and on MariaDB): every call agrees with Asterisk's own books (its CDR
/// rows for the call's linkedid, `common/books.rs`): duration and billsec within 1 s, the
/// disposition exactly; and the four paths give the same figures.
#[test]
fn every_capture_on_every_path_agrees_with_asterisks_books() {
    let dir = common::tempdir("ami-books");
    let (pg, my) = (
        TestDb::create(&SHARED_PG, "books"),
        TestDb::create(&SHARED_MY, "books"),
    );
    let mut off = Vec::new();
    let mut checked = 0;
    for cap in cel_captures() {
        let name = name_of(&cap);
        let truth: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cap.join("truth.json")).unwrap())
                .unwrap();
        let truth_calls = truth["calls"].as_object().unwrap();
        let mut paths: Vec<(&str, Vec<Call>)> = Vec::new();
        let ami = dir.join(format!("{name}.ami"));
        paths.push(("ami", calls(&run_replay(&cap.join("ami.raw"), &ami))));
        paths.push(("csv", calls(&csv_once(&[&cap], &dir, &name))));
        for (label, db) in [("postgresql", &pg), ("mariadb", &my)] {
            db.exec(&["DELETE FROM cel".into(), "DELETE FROM cdr".into()]);
            db.load(&[&cap]);
            let envs = db.cel_env();
            let got = run_once(&as_refs(&envs), &dir, &format!("{name}.{label}"));
            paths.push((label, calls(&got)));
        }
        for (path, got) in &paths {
            assert_eq!(got.len(), truth_calls.len(), "{name} {path}: calls");
            for c in got {
                let rows = truth_calls
                    .get(c.linkedid.as_str())
                    .unwrap_or_else(|| panic!("{name} {path}: {} not in truth", c.linkedid))["cdr"]
                    .as_array()
                    .unwrap();
                let books = common::books::books(&c.linkedid, rows);
                let d = common::books::disagreements(
                    &books,
                    c.duration,
                    c.billsec.unwrap(),
                    &c.disposition,
                );
                checked += 1;
                if !d.is_empty() {
                    off.push(format!("{name} {path} {}: {}", c.linkedid, d.join(", ")));
                }
                // What the relay knows beyond the books: the wait before a party answered and
                // the talk after, which add up to the call.
                let (talk, wait) = (c.talk_secs.unwrap(), c.wait_secs.unwrap());
                assert!(
                    (talk + wait).abs_diff(c.duration) <= 1,
                    "{name} {path}: talk {talk} + wait {wait} vs {}",
                    c.duration
                );
                if c.answered {
                    assert_eq!(c.disposition, "ANSWERED", "{name} {path}");
                } else {
                    assert_eq!(talk, 0, "{name} {path}: talk without an answer");
                }
            }
        }
        let figures = |calls: &[Call]| {
            let mut v: Vec<_> = calls
                .iter()
                .map(|c| {
                    (
                        c.id.clone(),
                        c.disposition.to_string(),
                        c.duration,
                        c.billsec,
                        c.talk_secs,
                        c.wait_secs,
                    )
                })
                .collect();
            v.sort();
            v
        };
        for (path, got) in &paths[1..] {
            assert_eq!(figures(got), figures(&paths[0].1), "{name}: {path} vs ami");
        }
    }
    assert!(
        off.is_empty(),
        "{} of {checked} calls part from Asterisk's books:\n{}",
        off.len(),
        off.join("\n")
    );
    eprintln!("{checked} calls over 4 paths agree with Asterisk's books");
}

/// `ami-relay --replay` of a raw AMI capture to its end: the JSON of the calls it delivered.
fn run_replay(raw: &Path, out: &Path) -> Vec<serde_json::Value> {
    let jsonl = out.with_extension("jsonl");
    let db = out.with_extension("db");
    let status = Command::new(BIN)
        .args(["--replay", raw.to_str().unwrap()])
        .args(["--sink", &format!("jsonl:{}", jsonl.display())])
        .args(["--http", "off", "--db", db.to_str().unwrap()])
        .env_remove("AMI_HOST")
        .env_remove("WEBHOOK_URL")
        .env_remove("CEL_MODE")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{}: {status}", raw.display());
    read_jsonl(&jsonl)
}

// ---------------------------------------------------------------------------------------------
// 2. Follow mode, and a relay killed mid-call

fn follow_and_kill(server: &Server, tag: &str) {
    let dir = common::tempdir(&format!("ami-db-kill-{tag}-{:?}", server.kind));
    let db = TestDb::create(server, tag);
    let all = cel_captures();
    let want = csv_once(
        &all.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &dir,
        "all",
    );
    // The first two captures before the relay starts, two more while it runs, then five rows
    // of the fifth (the middle of a call), then SIGKILL; the rest after the restart.
    db.load(&[&all[0], &all[1]]);
    let first = dir.join("first.jsonl");
    let relay = follow(&db, &dir, &first, &[]);
    wait_calls(&first, 2, &relay);
    db.load(&[&all[2], &all[3]]);
    let fifth_cel = csv_rows(&all[4].join("cel.csv"));
    block_on(async {
        let mut c = db.conn().await;
        db.insert_cdr(&mut c, &csv_rows(&all[4].join("cdr.csv")))
            .await;
        db.insert_cel(&mut c, &fifth_cel[..5], None).await;
        c.close().await;
    });
    let got = wait_calls(&first, 4, &relay);
    assert_eq!(got.len(), 4, "{}", relay.log());
    let journaled: i64 = rusqlite::Connection::open(dir.join("relay.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))
        .unwrap();
    assert!(journaled > 0, "the open call is journaled");
    relay.kill9();
    block_on(async {
        let mut c = db.conn().await;
        db.insert_cel(&mut c, &fifth_cel[5..], None).await;
        c.close().await;
    });
    db.load(&all[5..].iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let second = dir.join("second.jsonl");
    let relay = follow(&db, &dir, &second, &[]);
    wait_calls(&second, want.len() - 4, &relay);
    let mut got = read_jsonl(&first);
    got.extend(read_jsonl(&second));
    assert_once_each(&got, &want, &relay.log());
    // The call cut in two kept its first rows (from the journal): as from the whole file.
    assert_same_call_set(&got, &want, &relay.log());
    assert!(
        relay.log().contains("resuming after the saved id"),
        "{}",
        relay.log()
    );
    assert!(relay.terminate().success());
}

#[test]
fn follow_on_postgresql_ships_new_rows_and_each_call_once_across_a_sigkill() {
    follow_and_kill(&SHARED_PG, "kill");
}

#[test]
fn follow_on_mariadb_ships_new_rows_and_each_call_once_across_a_sigkill() {
    follow_and_kill(&SHARED_MY, "kill");
}

// ---------------------------------------------------------------------------------------------
// 3. A read-only user

#[test]
fn a_user_with_select_on_the_two_tables_only_is_enough() {
    let dir = common::tempdir("ami-db-readonly");
    let caps = [
        cel_capture("05_blind_transfer"),
        cel_capture("19_sip_queue"),
    ];
    let refs: Vec<&Path> = caps.iter().map(PathBuf::as_path).collect();
    let want = csv_once(&refs, &dir, "want");
    for server in [SHARED_PG, SHARED_MY] {
        let db = TestDb::create(&server, "ro");
        db.load(&refs);
        let user = format!("{}_reader", db.name);
        let (grant, revoke) = match server.kind {
            Kind::Pg => (
                vec![
                    format!("CREATE ROLE {user} LOGIN PASSWORD 'secret-pw'"),
                    format!("GRANT CONNECT ON DATABASE {} TO {user}", db.name),
                    format!("GRANT SELECT ON cel, cdr TO {user}"),
                ],
                vec![
                    format!("REVOKE ALL ON cel, cdr FROM {user}"),
                    format!("REVOKE ALL ON DATABASE {} FROM {user}", db.name),
                    format!("DROP ROLE {user}"),
                ],
            ),
            Kind::My => (
                vec![
                    format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'secret-pw'"),
                    format!("GRANT SELECT ON {}.cel TO '{user}'@'%'", db.name),
                    format!("GRANT SELECT ON {}.cdr TO '{user}'@'%'", db.name),
                ],
                vec![format!("DROP USER '{user}'@'%'")],
            ),
        };
        db.exec(&grant);
        let mut envs = db.cel_env();
        envs.retain(|(k, _)| k != "DB_USER");
        envs.push(("DB_USER".into(), user.clone()));
        envs.push(("DB_PASSWORD".into(), "secret-pw".into()));
        let got = run_once(&as_refs(&envs), &dir, &format!("{user}.db"));
        let write = block_on(reader_delete(&server, &db.name, &user));
        db.exec(&revoke);
        assert!(write.is_err(), "{server:?}: the reader could delete");
        assert_same_calls(&got, &want, &format!("{server:?}"));
    }
}

/// What `DELETE FROM cdr` as the reader gives.
async fn reader_delete(server: &Server, database: &str, user: &str) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM cdr";
    match server.kind {
        Kind::Pg => {
            let opts = sqlx::postgres::PgConnectOptions::new()
                .host("127.0.0.1")
                .port(server.port)
                .username(user)
                .password("secret-pw")
                .database(database);
            let mut c = sqlx::PgConnection::connect_with(&opts).await?;
            sqlx::raw_sql(sql).execute(&mut c).await.map(|_| ())
        }
        Kind::My => {
            let opts = sqlx::mysql::MySqlConnectOptions::new()
                .host("127.0.0.1")
                .port(server.port)
                .username(user)
                .password("secret-pw")
                .database(database);
            let mut c = sqlx::MySqlConnection::connect_with(&opts).await?;
            sqlx::raw_sql(sql).execute(&mut c).await.map(|_| ())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Fresh start and backfill

#[test]
fn fresh_start_ships_only_rows_inserted_afterwards() {
    let dir = common::tempdir("ami-db-fresh");
    let db = TestDb::create(&SHARED_PG, "fresh");
    let (a, b, c, d) = (
        cel_capture("01_answered_caller_hangup"),
        cel_capture("03_no_answer"),
        cel_capture("07_queue_two_agents"),
        cel_capture("11_sip_answered_caller_hangup"),
    );
    db.load(&[&a, &b]);
    let fresh = [("DB_FRESH_START", "true")];
    // Started, then stopped before any new row: the starting watermark was committed.
    let out = dir.join("out.jsonl");
    let relay = follow(&db, &dir, &out, &fresh);
    wait_log(&relay, "fresh start");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(relay.terminate().success());
    db.load(&[&c]);
    let relay = follow(&db, &dir, &out, &fresh);
    let got = wait_calls(&out, 1, &relay);
    db.load(&[&d]);
    let got_more = wait_calls(&out, 2, &relay);
    assert!(relay.terminate().success());
    assert_eq!(got.len(), 1);
    let want = csv_once(&[&c, &d], &dir, "cd");
    assert_same_call_set(&got_more, &want, "only the new calls, with their CDR rows");
}

#[test]
fn backfill_from_ships_only_the_calls_from_that_time() {
    let dir = common::tempdir("ami-db-backfill");
    let all = cel_captures();
    let refs: Vec<&Path> = all.iter().map(PathBuf::as_path).collect();
    // From the second of the fifth capture's first CEL row.
    let first = &csv_rows(&all[4].join("cel.csv"))[0][1];
    let from = epoch_to_text(first)[..19].to_owned();
    let want = csv_once(&refs[4..], &dir, "later");
    for server in [SHARED_PG, SHARED_MY] {
        let db = TestDb::create(&server, "backfill");
        db.load(&refs);
        let mut envs = db.cel_env();
        envs.push(("DB_BACKFILL_FROM".into(), from.clone()));
        let got = run_once(&as_refs(&envs), &dir, &format!("{}.backfill", db.name));
        assert_same_call_set(&got, &want, &format!("{server:?} from {from}"));
    }
}

// ---------------------------------------------------------------------------------------------
// 4b. Tables without ids, and missing tables

/// The number of records the relay said it read when it stopped.
fn records_read(log: &str) -> u64 {
    let at = log.rfind("records=").expect("the relay's last words");
    log[at + "records=".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_cel_table_without_ids_is_read_by_time_and_a_row_committed_late_ships_once() {
    for server in [SHARED_PG, SHARED_MY] {
        let dir = common::tempdir(&format!("ami-db-noid-{:?}", server.kind));
        let db = TestDb::create(&server, "noid");
        db.exec(&["ALTER TABLE cel DROP COLUMN id".into()]);
        let cap = cel_capture("05_blind_transfer");
        let want = csv_once(&[&cap], &dir, "want");
        let cel = csv_rows(&cap.join("cel.csv"));
        let cdr = csv_rows(&cap.join("cdr.csv"));
        // Held back: the rows from the last HANGUP on (so that the call stays open), and the
        // ANSWER of that last channel, from the middle of the call.
        let tail = cel.iter().rposition(|r| r[0] == "HANGUP").unwrap();
        let late = cel
            .iter()
            .position(|r| r[0] == "ANSWER" && r[14] == cel[tail][14])
            .unwrap();
        assert!(late + 5 < tail);
        let early: Vec<Vec<String>> = cel[..tail]
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != late)
            .map(|(_, r)| r.clone())
            .collect();
        block_on(async {
            let mut c = db.conn().await;
            db.insert_cdr(&mut c, &cdr).await;
            db.insert_cel(&mut c, &early, None).await;
            c.close().await;
        });
        let out = dir.join("out.jsonl");
        let relay = follow(&db, &dir, &out, &[]);
        wait_log(&relay, "by=\"time\"");
        std::thread::sleep(Duration::from_secs(2));
        // Committed late, with a time before the newest row read: inside the lookback window.
        block_on(async {
            let mut c = db.conn().await;
            db.insert_cel(&mut c, &cel[late..=late], None).await;
            c.close().await;
        });
        std::thread::sleep(Duration::from_secs(1));
        block_on(async {
            let mut c = db.conn().await;
            db.insert_cel(&mut c, &cel[tail..], None).await;
            c.close().await;
        });
        let got = wait_calls(&out, want.len(), &relay);
        assert_same_calls(&got, &want, &format!("{server:?}: {}", relay.log()));
        let stderr = relay.stderr.clone();
        assert!(relay.terminate().success());
        std::thread::sleep(Duration::from_millis(300));
        let log = stderr.lock().unwrap().join("\n");
        // Every row once: re-reading the window every poll skipped the rows already shipped.
        assert_eq!(
            records_read(&log),
            (cel.len() + cdr.len()) as u64,
            "{server:?}: {log}"
        );
    }
}

#[test]
fn a_missing_cel_table_is_an_error_retried_and_a_missing_cdr_table_is_tolerated() {
    let dir = common::tempdir("ami-db-missing");
    let db = TestDb::create_empty(&SHARED_PG, "missing");
    let cap = cel_capture("01_answered_caller_hangup");
    let out = dir.join("out.jsonl");
    let relay = follow(&db, &dir, &out, &[]);
    wait_log(&relay, "the CEL table cel cannot be read");
    // The CEL table only (no CDR table), with a call in it.
    db.exec(&db.schema()[..1]);
    block_on(async {
        let mut c = db.conn().await;
        db.insert_cel(&mut c, &csv_rows(&cap.join("cel.csv")), None)
            .await;
        c.close().await;
    });
    let got = calls(&wait_calls(&out, 1, &relay));
    assert_eq!(got.len(), 1);
    assert!(got[0].complete && got[0].cdr.is_empty());
    let log = relay.log();
    assert!(log.contains("no usable CDR table"), "{log}");
    assert!(log.contains("ERROR"), "{log}");
    assert!(relay.terminate().success());
}

// ---------------------------------------------------------------------------------------------
// 5. A server that goes away and comes back

/// Rows of a first capture and half of a second; the server goes away mid-call and comes back;
/// the rest, then a third capture: every call once, as from the files.
fn down_and_back(server: &Server, down: &mut dyn FnMut(), up: &mut dyn FnMut(), tag: &str) {
    let dir = common::tempdir(&format!("ami-db-down-{tag}"));
    let (a, b, c) = (
        cel_capture("01_answered_caller_hangup"),
        cel_capture("05_blind_transfer"),
        cel_capture("16_sip_blind_transfer"),
    );
    let want = csv_once(&[&a, &b, &c], &dir, "want");
    let db = TestDb::create(server, tag);
    db.load(&[&a]);
    let b_cel = csv_rows(&b.join("cel.csv"));
    let half = b_cel.len() / 2;
    block_on(async {
        let mut conn = db.conn().await;
        db.insert_cdr(&mut conn, &csv_rows(&b.join("cdr.csv")))
            .await;
        db.insert_cel(&mut conn, &b_cel[..half], None).await;
        conn.close().await;
    });
    let out = dir.join("out.jsonl");
    let mut relay = follow(&db, &dir, &out, &[]);
    wait_calls(&out, 1, &relay);
    down();
    wait_log(&relay, "database unavailable");
    std::thread::sleep(Duration::from_secs(3));
    assert!(relay.child.try_wait().unwrap().is_none(), "{}", relay.log());
    up();
    block_on(async {
        let mut conn = db.conn().await;
        db.insert_cel(&mut conn, &b_cel[half..], None).await;
        conn.close().await;
    });
    db.load(&[&c]);
    let got = wait_calls(&out, want.len(), &relay);
    assert_once_each(&got, &want, &relay.log());
    assert_same_call_set(&got, &want, &relay.log());
    let log = relay.log();
    assert!(
        log.matches("connected to the database").count() >= 2,
        "{log}"
    );
    assert!(relay.terminate().success());
}

#[test]
fn a_postgresql_server_that_goes_away_mid_stream_and_comes_back() {
    let pg = OwnPostgres::start("down");
    let server = pg.server();
    down_and_back(&server, &mut || pg.down(), &mut || pg.up(), "pgdown");
}

#[test]
fn a_mariadb_server_that_goes_away_mid_stream_and_comes_back() {
    let m = std::cell::RefCell::new(OwnMariadb::start("down"));
    let server = m.borrow().server();
    down_and_back(
        &server,
        &mut || m.borrow_mut().down(),
        &mut || m.borrow_mut().up(),
        "mydown",
    );
}

// ---------------------------------------------------------------------------------------------
// 5b. TLS

#[test]
fn tls_to_postgresql_verified_with_the_ca_file_or_required_and_a_bad_certificate_is_retried() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = common::tempdir("ami-db-tls");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let pg = OwnPostgres::start_tls("tls", &cert.pem(), &key.serialize_pem());
    let db = TestDb::create(&pg.server(), "tls");
    let cap = cel_capture("11_sip_answered_caller_hangup");
    db.load(&[&cap]);
    let want = csv_once(&[&cap], &dir, "want");
    let with = |extra: &[(&str, &str)]| {
        let mut envs = db.cel_env();
        envs.retain(|(k, _)| k != "DB_TLS");
        envs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        envs
    };
    // Verified against DB_CA_FILE; required without a check.
    let verified = with(&[
        ("DB_TLS", "verify"),
        ("DB_CA_FILE", ca_file.to_str().unwrap()),
    ]);
    assert_same_calls(
        &run_once(&as_refs(&verified), &dir, "verify"),
        &want,
        "verify",
    );
    let required = with(&[("DB_TLS", "require")]);
    assert_same_calls(
        &run_once(&as_refs(&required), &dir, "require"),
        &want,
        "require",
    );
    // Without the CA the certificate is refused; without TLS the server refuses: logged and
    // retried, the relay stays up.
    for (tag, extra) in [
        ("unknown-ca", ("DB_TLS", "verify")),
        ("plain", ("DB_TLS", "disable")),
    ] {
        let out = dir.join(format!("{tag}.jsonl"));
        let sub = dir.join(tag);
        std::fs::create_dir_all(&sub).unwrap();
        let mut relay = {
            let sink = format!("jsonl:{}", out.display());
            let state = sub.join("relay.db");
            let envs = with(&[extra]);
            Relay::start_bin(
                BIN,
                &[
                    "--http",
                    "off",
                    "--db",
                    state.to_str().unwrap(),
                    "--sink",
                    &sink,
                ],
                &as_refs(&envs),
                false,
                false,
            )
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while relay.log().matches("database unavailable").count() < 2 {
            assert!(Instant::now() < deadline, "{tag}: {}", relay.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            relay.child.try_wait().unwrap().is_none(),
            "{tag}: {}",
            relay.log()
        );
        assert!(read_jsonl::<serde_json::Value>(&out).is_empty(), "{tag}");
        let log = relay.log();
        match tag {
            "unknown-ca" => assert!(log.to_ascii_lowercase().contains("certificate"), "{log}"),
            _ => assert!(
                log.contains("no encryption") || log.contains("pg_hba"),
                "{log}"
            ),
        }
        assert!(relay.terminate().success());
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Gaps in the ids

#[test]
fn a_gap_in_the_ids_is_waited_for_and_one_that_never_fills_is_passed() {
    let dir = common::tempdir("ami-db-gap");
    let db = TestDb::create(&SHARED_PG, "gap");
    let (a, b, c) = (
        cel_capture("01_answered_caller_hangup"),
        cel_capture("05_blind_transfer"),
        cel_capture("07_queue_two_agents"),
    );
    let want = csv_once(&[&a, &b, &c], &dir, "want");
    let (a_cel, b_cel, c_cel) = (
        csv_rows(&a.join("cel.csv")),
        csv_rows(&b.join("cel.csv")),
        csv_rows(&c.join("cel.csv")),
    );
    // a: ids 1..; one id left out for good; b: after it, one of its rows (an ANSWER in the
    // middle of the call) committed only later, under its lower id; c after b.
    let a_ids: Vec<i64> = (1..=a_cel.len() as i64).collect();
    let b_start = a_cel.len() as i64 + 2;
    let b_ids: Vec<i64> = (b_start..b_start + b_cel.len() as i64).collect();
    let late = b_cel
        .iter()
        .position(|r| r[0] == "ANSWER")
        .expect("an ANSWER row");
    let c_start = b_start + b_cel.len() as i64;
    let c_ids: Vec<i64> = (c_start..c_start + c_cel.len() as i64).collect();
    block_on(async {
        let mut conn = db.conn().await;
        for cap in [&a, &b, &c] {
            db.insert_cdr(&mut conn, &csv_rows(&cap.join("cdr.csv")))
                .await;
        }
        db.insert_cel(&mut conn, &a_cel, Some(&a_ids)).await;
        conn.close().await;
    });
    let out = dir.join("out.jsonl");
    let relay = follow(&db, &dir, &out, &[]);
    wait_calls(&out, 1, &relay);
    // The gap before b never fills: b's rows (but the late one) come; nothing of b ships until
    // the gap has stayed 5 s, and then only up to the late row's gap.
    let inserted = Instant::now();
    block_on(async {
        let mut conn = db.conn().await;
        let (before, after) = (&b_cel[..late], &b_cel[late + 1..]);
        db.insert_cel(&mut conn, before, Some(&b_ids[..late])).await;
        db.insert_cel(&mut conn, after, Some(&b_ids[late + 1..]))
            .await;
        db.insert_cel(&mut conn, &c_cel, Some(&c_ids)).await;
        conn.close().await;
    });
    wait_log(&relay, "moved past them");
    let passed = inserted.elapsed();
    assert!(
        passed >= Duration::from_millis(4500),
        "the gap was passed after {passed:?}"
    );
    // 2 s into the late row's gap (under the 5 s wait): it is committed now.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        read_jsonl::<serde_json::Value>(&out).len(),
        1,
        "nothing after the late row's gap yet"
    );
    block_on(async {
        let mut conn = db.conn().await;
        db.insert_cel(&mut conn, &b_cel[late..=late], Some(&b_ids[late..=late]))
            .await;
        conn.close().await;
    });
    let got = wait_calls(&out, want.len(), &relay);
    assert_once_each(&got, &want, &relay.log());
    assert_same_call_set(
        &got,
        &want,
        &format!("the late row is in its call: {}", relay.log()),
    );
    let log = relay.log();
    assert_eq!(log.matches("moved past them").count(), 1, "{log}");
    assert!(relay.terminate().success());
}

/// AMI (a replayed capture with a call cut out) reconciled with the cdr table: the call AMI
/// missed is rebuilt from its rows, exactly as with the cdr_csv file.
fn reconciled_with_the_cdr_table(server: &Server, tag: &str) {
    let dir = common::tempdir(&format!("ami-db-reconcile-{tag}"));
    let (c01, c05, c07) = (
        cel_capture("01_answered_caller_hangup"),
        cel_capture("05_blind_transfer"),
        cel_capture("07_queue_two_agents"),
    );
    // AMI: 01 and 07 (each capture's greeting line dropped after the first); 05 is the gap.
    let mut ami = std::fs::read(c01.join("ami.raw")).unwrap();
    let raw07 = std::fs::read(c07.join("ami.raw")).unwrap();
    let eol = raw07.windows(2).position(|w| w == b"\r\n").unwrap();
    ami.extend_from_slice(&raw07[eol + 2..]);
    let ami_path = dir.join("gap.ami.raw");
    std::fs::write(&ami_path, &ami).unwrap();
    // The CDR: 01 and 05, as a file and as the table.
    let mut cdr = std::fs::read(c01.join("cdr.csv")).unwrap();
    cdr.extend_from_slice(&std::fs::read(c05.join("cdr.csv")).unwrap());
    let cdr_path = dir.join("Master.csv");
    std::fs::write(&cdr_path, &cdr).unwrap();
    let db = TestDb::create(server, tag);
    block_on(async {
        let mut c = db.conn().await;
        for cap in [&c01, &c05] {
            db.insert_cdr(&mut c, &csv_rows(&cap.join("cdr.csv"))).await;
        }
        c.close().await;
    });

    let replay = |envs: &[(&str, &str)], name: &str| -> (Vec<serde_json::Value>, String) {
        let out = dir.join(format!("{name}.jsonl"));
        let output = Command::new(BIN)
            .args(["--replay", ami_path.to_str().unwrap()])
            .args(["--sink", &format!("jsonl:{}", out.display())])
            .args(["--http", "off", "--db"])
            .arg(dir.join(format!("{name}.db")))
            .env_remove("AMI_HOST")
            .env_remove("CEL_MODE")
            .env_remove("CDR_CSV_PATH")
            .env_remove("DB_TYPE")
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{name}: {log}");
        (read_jsonl(&out), log)
    };
    let (by_file, _) = replay(&[("CDR_CSV_PATH", cdr_path.to_str().unwrap())], "file");
    let (by_table, log) = replay(&as_refs(&db.env()), "table");
    assert_eq!(by_file.len(), 3, "{log}");
    let reconciled: Vec<&serde_json::Value> = by_table
        .iter()
        .filter(|c| c["reconciled"] == true)
        .collect();
    assert_eq!(reconciled.len(), 1, "{log}");
    assert!(log.contains("rebuilt from the CDR"), "{log}");
    assert!(
        log.contains("has no row in the CDR"),
        "07 is not in the CDR: {log}"
    );
    // The same calls as with the file (CDR rows of a call in the table's order).
    assert_same_calls(&by_table, &by_file, tag);
}

#[test]
fn ami_reconciled_with_the_cdr_table_on_postgresql_and_mariadb() {
    reconciled_with_the_cdr_table(&SHARED_PG, "recpg");
    reconciled_with_the_cdr_table(&SHARED_MY, "recmy");
}

#[test]
fn prefer_against_a_server_without_tls_says_the_connection_is_plain_text() {
    // A PostgreSQL of the test's own offers no TLS (initdb's default): DB_TLS=prefer (the
    // default) connects in plain text and says so; DB_TLS=disable (plain text asked for) does
    // not warn, nor does prefer against the shared server, which has TLS on.
    let dir = common::tempdir("ami-db-prefer");
    let own = OwnPostgres::start("prefer");
    let cap = cel_capture("11_sip_answered_caller_hangup");
    for (server, tls, warns) in [
        (own.server(), "prefer", true),
        (own.server(), "disable", false),
        (SHARED_PG, "prefer", false),
    ] {
        let db = TestDb::create(&server, "prefer");
        db.load(&[&cap]);
        let sub = dir.join(format!("{tls}-{}", server.port));
        std::fs::create_dir_all(&sub).unwrap();
        let out = sub.join("calls.jsonl");
        let relay = follow(&db, &sub, &out, &[("DB_TLS", tls)]);
        wait_calls(&out, 1, &relay);
        let log = relay.log();
        let warned = log
            .lines()
            .any(|l| l.contains("WARN") && l.contains("DB_TLS=prefer") && l.contains("plain text"));
        assert_eq!(
            warned, warns,
            "DB_TLS={tls} on port {}:\n{log}",
            server.port
        );
        assert!(relay.terminate().success());
    }
}
