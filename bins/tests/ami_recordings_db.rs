//! `ami-relay` with `DB_TABLE_RECORDINGS` as a process, against the machine's PostgreSQL
//! (127.0.0.1:5432, user postgres, trust) and MariaDB (127.0.0.1:3306, root, no password). Each
//! test makes its own database and drops it at the end; the call is capture 01 replayed
//! (`--replay`, CEL_MODE=ami, with `DB_TABLE_CDR=` so AMI is not reconciled with a cdr table).
//!
//! * on both servers, a table with an `id` (and a `created` time) and one without (read by its
//!   `calldate`, columns in another case): the call's `recordings` are exactly the paths of the
//!   rows naming its Linkedid or a leg's Uniqueid; a row for another id (one that merely starts
//!   the same) and a row older than `RECORDINGS_MAX_AGE_HOURS` are not attached, and nothing
//!   else about the call changes;
//! * a table with neither is read whole;
//! * a missing table, or a database that cannot be reached, is logged and the call is still
//!   delivered, without recordings;
//! * the background reader (through the library) finds rows inserted while it runs, also a row
//!   whose id is below the highest read (committed late) or whose time is older than the newest
//!   read (within `DB_LOOKBACK_SECS`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use call_assembler::Call;
use common::db::{Kind, SHARED_MY, SHARED_PG, Server, TestDb, quote};

const BIN: &str = env!("CARGO_BIN_EXE_ami-relay");

// ---------------------------------------------------------------------------------------------
// Databases

/// The relay's settings for `db`: the recordings table `table`, no CDR table.
fn recordings_env(db: &TestDb, table: &str) -> Vec<(String, String)> {
    let mut env = db.env();
    env.extend([
        ("DB_TABLE_CDR".to_owned(), String::new()),
        ("DB_TABLE_RECORDINGS".to_owned(), table.to_owned()),
    ]);
    env
}

// ---------------------------------------------------------------------------------------------
// The relay

fn capture() -> PathBuf {
    common::ami::capture_dir("01_answered_caller_hangup").join("ami.raw")
}

/// `ami-relay --replay` of capture 01 with `envs`: the calls delivered and the log.
fn replay(dir: &Path, name: &str, envs: &[(String, String)]) -> (Vec<Call>, String) {
    let out = dir.join(format!("{name}.jsonl"));
    let output = Command::new(BIN)
        .args(["--replay", capture().to_str().unwrap()])
        .args(["--sink", &format!("jsonl:{}", out.display())])
        .args(["--http", "off", "--db"])
        .arg(dir.join(format!("{name}.db")))
        .env_remove("AMI_HOST")
        .env_remove("CEL_MODE")
        .env_remove("CDR_CSV_PATH")
        .env_remove("RECORDINGS_DIRS")
        .env_remove("DB_TYPE")
        .env_remove("DB_TABLE_RECORDINGS")
        .env("RUST_LOG", "info")
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{name}: {log}");
    (common::read_jsonl(&out), log)
}

/// The call of a plain replay (no recordings): its JSON, Linkedid, and another leg's Uniqueid.
fn plain(dir: &Path) -> (Call, String, String) {
    let (calls, log) = replay(dir, "plain", &[]);
    assert_eq!(calls.len(), 1, "{log}");
    let call = calls.into_iter().next().unwrap();
    assert!(call.recordings.is_empty());
    let linkedid = call.linkedid.to_string();
    let leg = call
        .legs
        .iter()
        .map(|l| l.uniqueid.to_string())
        .find(|u| *u != linkedid)
        .unwrap();
    (call, linkedid, leg)
}

fn sorted(call: &Call) -> Vec<String> {
    let mut v: Vec<String> = call.recordings.iter().map(ToString::to_string).collect();
    v.sort();
    v
}

/// The call delivered is `plain` with exactly `want` as its recordings.
fn assert_recordings(got: &[Call], plain: &Call, want: &[&str], log: &str) {
    assert_eq!(got.len(), 1, "{log}");
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(sorted(&got[0]), want, "{log}");
    let mut same = got[0].clone();
    same.recordings.clear();
    assert_eq!(
        serde_json::to_value(&same).unwrap(),
        serde_json::to_value(plain).unwrap(),
        "nothing else about the call changed"
    );
    assert!(
        !log.contains("reconciling AMI"),
        "an empty DB_TABLE_CDR: no reconciliation: {log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

/// On `server`: a table with an id and one read by time, each with the call's two rows, a row
/// of another id and one too old.
fn tables_with_and_without_id(server: &Server, tag: &str) {
    let dir = common::tempdir(&format!("ami-recdb-{tag}"));
    let (call, linkedid, leg) = plain(&dir);
    let db = TestDb::create_empty(server, tag);
    let (serial, ts, old) = match server.kind {
        Kind::Pg => (
            "id SERIAL PRIMARY KEY",
            "TIMESTAMP",
            "LOCALTIMESTAMP - INTERVAL '100 hours'",
        ),
        Kind::My => (
            "id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY",
            "DATETIME",
            "NOW() - INTERVAL 100 HOUR",
        ),
    };
    let now = match server.kind {
        Kind::Pg => "LOCALTIMESTAMP",
        Kind::My => "NOW()",
    };
    // Quoted: PostgreSQL keeps the case.
    let q = |n: &str| quote(server.kind, n);
    db.exec(&[
        // With an id: the key in either column, a path column named `path`.
        format!(
            "CREATE TABLE recordings ({serial}, uniqueid VARCHAR(150), linkedid VARCHAR(150), \
             path VARCHAR(512), created {ts})"
        ),
        format!(
            "INSERT INTO recordings (uniqueid, linkedid, path, created) VALUES \
             (NULL, '{linkedid}', '/rec/id/by-call.wav', {now}), \
             ('{leg}', '{linkedid}', '/rec/id/by-leg.wav', {now}), \
             ('{linkedid}0', '{linkedid}0', '/rec/id/other.wav', {now}), \
             ('{leg}', NULL, '/rec/id/old.wav', {old}), \
             ('{leg}', NULL, NULL, {now})"
        ),
        // Without one: read by `calldate`, columns in another case, a `RecordingFile`.
        format!(
            "CREATE TABLE call_recordings ({} {ts} NULL, {} VARCHAR(150), {} VARCHAR(512))",
            q("CallDate"),
            q("UniqueID"),
            q("RecordingFile")
        ),
        format!(
            "INSERT INTO call_recordings ({}, {}, {}) VALUES \
             ({now}, 'pbx1-{linkedid}', '/rec/time/by-call.wav'), \
             ({now}, '{leg}', '/rec/time/by-leg.wav'), \
             ({now}, '{leg}0', '/rec/time/other.wav'), \
             ({old}, '{linkedid}', '/rec/time/old.wav')",
            q("CallDate"),
            q("UniqueID"),
            q("RecordingFile")
        ),
    ]);

    let (got, log) = replay(&dir, "id", &recordings_env(&db, "recordings"));
    assert!(log.contains("by=\"id\""), "{log}");
    assert_recordings(
        &got,
        &call,
        &["/rec/id/by-call.wav", "/rec/id/by-leg.wav"],
        &log,
    );
    let (got, log) = replay(&dir, "time", &recordings_env(&db, "call_recordings"));
    assert!(log.contains("by=\"time\""), "{log}");
    assert_recordings(
        &got,
        &call,
        &["/rec/time/by-call.wav", "/rec/time/by-leg.wav"],
        &log,
    );
}

#[test]
fn postgresql_recordings_tables_with_and_without_id_attach_exactly_the_calls_paths() {
    tables_with_and_without_id(&SHARED_PG, "recpg");
}

#[test]
fn mariadb_recordings_tables_with_and_without_id_attach_exactly_the_calls_paths() {
    tables_with_and_without_id(&SHARED_MY, "recmy");
}

#[test]
fn a_table_with_neither_id_nor_time_is_read_whole() {
    let dir = common::tempdir("ami-recdb-whole");
    let (call, linkedid, leg) = plain(&dir);
    let db = TestDb::create_empty(&SHARED_MY, "recwhole");
    db.exec(&[
        "CREATE TABLE recs (linkedid VARCHAR(150), file VARCHAR(512))".into(),
        format!(
            "INSERT INTO recs VALUES ('{linkedid}', '/rec/a.wav'), ('{leg}', '/rec/b.wav'), \
             ('{leg}', '/rec/a.wav'), ('1.2', '/rec/c.wav')"
        ),
    ]);
    let (got, log) = replay(&dir, "whole", &recordings_env(&db, "recs"));
    assert!(log.contains("whole table"), "{log}");
    assert_recordings(&got, &call, &["/rec/a.wav", "/rec/b.wav"], &log);
}

#[test]
fn a_missing_table_or_database_is_logged_and_the_call_still_delivered() {
    let dir = common::tempdir("ami-recdb-missing");
    let (call, _, _) = plain(&dir);
    let db = TestDb::create_empty(&SHARED_PG, "recmissing");
    let (got, log) = replay(&dir, "missing", &recordings_env(&db, "nosuch"));
    assert!(log.contains("no recordings table nosuch"), "{log}");
    assert_recordings(&got, &call, &[], &log);
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut env = recordings_env(&db, "recordings");
    for (k, v) in &mut env {
        if k == "DB_PORT" {
            *v = port.to_string();
        }
    }
    let (got, log) = replay(&dir, "unreachable", &env);
    assert!(log.contains("recordings table unavailable"), "{log}");
    assert_recordings(&got, &call, &[], &log);
}

// ---------------------------------------------------------------------------------------------
// The background reader, driven through the library

/// `recordings_db::follow` on `server`'s tables while rows arrive: a row inserted after the
/// start is found within a few polls; with an id, so is a row whose id is below the highest one
/// read (committed late); without one, a row whose time is older than the newest one read but
/// within DB_LOOKBACK_SECS.
fn rows_added_while_running(server: &Server, tag: &str) {
    use cdr_relay::settings::{CelDbSource, DbKind, DbStart, DbTls};
    use cdr_relay::sources::recordings::{RecordingIndex, RecordingsConfig};
    use cdr_relay::sources::recordings_db::{FIRST_READ_WAIT, RecordingsTable, follow};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let db = TestDb::create_empty(server, tag);
    let (serial, ts, now, earlier) = match server.kind {
        Kind::Pg => (
            "id INTEGER PRIMARY KEY",
            "TIMESTAMP",
            "LOCALTIMESTAMP",
            "LOCALTIMESTAMP - INTERVAL '30 seconds'",
        ),
        Kind::My => (
            "id INTEGER NOT NULL PRIMARY KEY",
            "DATETIME",
            "NOW()",
            "NOW() - INTERVAL 30 SECOND",
        ),
    };
    db.exec(&[
        format!("CREATE TABLE recs_id ({serial}, uniqueid VARCHAR(150), path VARCHAR(512))"),
        "INSERT INTO recs_id VALUES (1, '1.1', '/a')".into(),
        format!("CREATE TABLE recs_time (uniqueid VARCHAR(150), path VARCHAR(512), created {ts})"),
        format!("INSERT INTO recs_time VALUES ('1.1', '/a', {now})"),
    ]);
    let table = |name: &str| RecordingsTable {
        db: CelDbSource {
            kind: match server.kind {
                Kind::Pg => DbKind::Postgres,
                Kind::My => DbKind::MySql,
            },
            host: "127.0.0.1".into(),
            port: server.port,
            database: db.name.clone(),
            user: Some(server.user.into()),
            password: None,
            cel_table: String::new(),
            cdr_table: None,
            tls: DbTls::Disable,
            ca_file: None,
            poll: Duration::from_millis(100),
            batch: 1000,
            start: DbStart::Beginning,
            lookback: Duration::from_secs(60),
            once: false,
        },
        table: name.into(),
        max_age: Duration::from_secs(3600),
    };
    let index = || {
        Arc::new(Mutex::new(RecordingIndex::new(RecordingsConfig {
            dirs: Vec::new(),
            max_age: Duration::from_secs(3600),
        })))
    };
    let found = |index: &Arc<Mutex<RecordingIndex>>, id: &str| -> Vec<String> {
        index.lock().unwrap().find_added(id).to_vec()
    };
    let wait_for = |index: &Arc<Mutex<RecordingIndex>>, id: &str, path: &str| {
        let until = Instant::now() + Duration::from_secs(5);
        while found(index, id) != [path] {
            assert!(Instant::now() < until, "{tag}: {id} -> {path} never found");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (by_id, by_time) = (index(), index());
    for (name, index) in [("recs_id", &by_id), ("recs_time", &by_time)] {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        rt.spawn(follow(
            table(name),
            index.clone(),
            ready_tx,
            stop_rx.clone(),
        ));
        rt.block_on(async {
            tokio::time::timeout(FIRST_READ_WAIT, ready_rx)
                .await
                .unwrap()
                .unwrap();
        });
        assert_eq!(found(index, "1.1"), ["/a"], "{tag} {name}: the first read");
    }
    db.exec(&[
        "INSERT INTO recs_id VALUES (10, '1.2', '/b')".into(),
        format!("INSERT INTO recs_time VALUES ('1.2', '/b', {now})"),
    ]);
    wait_for(&by_id, "1.2", "/b");
    wait_for(&by_time, "1.2", "/b");
    // Below the highest id read, and older than the newest time read.
    db.exec(&[
        "INSERT INTO recs_id VALUES (5, '1.3', '/c')".into(),
        format!("INSERT INTO recs_time VALUES ('1.3', '/c', {earlier})"),
    ]);
    wait_for(&by_id, "1.3", "/c");
    wait_for(&by_time, "1.3", "/c");
    stop_tx.send(true).unwrap();
    rt.shutdown_timeout(Duration::from_secs(5));
}

#[test]
fn rows_added_while_running_are_found_on_postgresql_and_mariadb() {
    rows_added_while_running(&SHARED_PG, "reclivepg");
    rows_added_while_running(&SHARED_MY, "reclivemy");
}

#[test]
fn check_config_and_help_describe_the_recordings_table() {
    let out = Command::new(BIN)
        .args(["--check-config", "--replay", "x.raw"])
        .env_remove("AMI_HOST")
        .env_remove("CEL_MODE")
        .env_remove("CDR_CSV_PATH")
        .env_remove("RECORDINGS_DIRS")
        .envs([
            ("DB_TYPE", "mariadb"),
            ("DB_NAME", "pbx"),
            ("DB_USER", "reader"),
            ("DB_PASSWORD", "hidden-secret"),
            ("DB_TABLE_CDR", ""),
            ("DB_TABLE_RECORDINGS", "recordings"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("recordings table: the table recordings at mysql://reader@127.0.0.1:3306/pbx"),
        "{err}"
    );
    assert!(!err.contains("reconcile"), "{err}");
    assert!(!err.contains("hidden-secret"), "{err}");
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("DB_TABLE_RECORDINGS"), "{help}");
}
