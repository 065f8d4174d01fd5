//! The SQL table sink (`--sink sql`, `SQL_URL`) as a user runs it, against real servers:
//! replays of SMDR and Asterisk captures into PostgreSQL and MariaDB (each call once, typed
//! columns equal to the body, legs present, a second replay changes nothing); a relay killed
//! with SIGKILL mid-delivery and restarted, and the database server (one of the test's own)
//! stopped mid-stream and started again: every call exactly once; a call the database refuses
//! (a CHECK constraint the test adds) dead-lettered with the database's message; a user
//! without the right to create tables told so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::db::{Db, Kind, SHARED_MY, SHARED_PG, Server, TestDb, block_on};
use common::own_db::{OwnMariadb, OwnPostgres, mariadb_missing, postgres_missing};
use common::{Relay, fixture, read_jsonl};

const SMDR: &str = env!("CARGO_BIN_EXE_smdr-relay");
const AMI: &str = env!("CARGO_BIN_EXE_ami-relay");
const RECEIVER: &str = env!("CARGO_BIN_EXE_cdr-receiver");
const PREFIX: &str = "cdr_";

/// `SQL_URL` for `db` as `user`.
fn url(db: &TestDb, user: &str) -> String {
    match db.server.kind {
        Kind::Pg => format!("postgres://{user}@127.0.0.1:{}/{}", db.server.port, db.name),
        Kind::My => format!("mysql://{user}@127.0.0.1:{}/{}", db.server.port, db.name),
    }
}

/// The relay's settings for the SQL sink into `db` (PBX at UTC+02:00), quick retries.
fn sql_env(db: &TestDb) -> Vec<(String, String)> {
    [
        ("SQL_URL", url(db, db.server.user)),
        ("SQL_TLS", "disable".into()),
        ("SQL_TABLE_PREFIX", PREFIX.into()),
        // The PBX's zone as the relays take it (the calls carry their UTC times), and the
        // sink's fallback for bodies without them.
        ("PBX_TZ", "+02:00".into()),
        ("AMI_UTC_OFFSET", "+02:00".into()),
        ("SQL_UTC_OFFSET", "+02:00".into()),
        ("WEBHOOK_RETRY_DELAY", "1".into()),
        ("WEBHOOK_RETRY_MAX_DELAY", "1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Runs a relay `bin` in replay mode over `input` into the SQL sink and a JSONL file; it exits
/// once every call is delivered (or dead-lettered).
fn replay(bin: &str, input: &Path, state: &Path, out: &Path, env: &[(String, String)]) {
    let o = Command::new(bin)
        .args(["--replay", input.to_str().unwrap()])
        .args([
            "--sink",
            "sql",
            "--sink",
            &format!("jsonl:{}", out.display()),
        ])
        .args(["--http", "off", "--db", state.to_str().unwrap()])
        .env_remove("WEBHOOK_URL")
        .env_remove("SMDR_WEBHOOK_URL")
        .env_remove("AMI_HOST")
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{bin} --replay {}: {}\n{}",
        input.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every column of a query's rows as text (NULL as `None`).
async fn rows(db: &mut Db, sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::Row as _;
    let rows = match db {
        Db::Pg(c) => sqlx::query(sql).fetch_all(&mut *c).await.map(|rs| {
            rs.iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.get::<Option<String>, _>(i))
                        .collect()
                })
                .collect()
        }),
        Db::My(c) => sqlx::query(sql).fetch_all(&mut *c).await.map(|rs| {
            rs.iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.get::<Option<String>, _>(i))
                        .collect()
                })
                .collect()
        }),
    };
    rows.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A column as text in a SELECT.
fn t(kind: Kind, col: &str) -> String {
    match kind {
        Kind::Pg if col.ends_with("_utc") => {
            format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')")
        }
        Kind::Pg if col.ends_with("_local") => {
            format!("to_char({col}, 'YYYY-MM-DD HH24:MI:SS')")
        }
        Kind::Pg => format!("CAST({col} AS text)"),
        Kind::My => format!("CAST({col} AS CHAR)"),
    }
}

fn count(db: &TestDb, table: &str) -> usize {
    block_on(async {
        let mut c = db.conn().await;
        let r = rows(
            &mut c,
            &format!(
                "SELECT {} FROM {PREFIX}{table}",
                t(db.server.kind, "COUNT(*)")
            ),
        )
        .await;
        c.close().await;
        r[0][0].as_deref().unwrap().parse().unwrap()
    })
}

const CALL_COLS: &[&str] = &[
    "id",
    "source",
    "site",
    "start_local",
    "end_local",
    "start_utc",
    "end_utc",
    "duration",
    "billsec",
    "disposition",
    "direction",
    "caller",
    "called",
    "answered_by",
    "tenant",
    "complete",
    "legs",
    "body",
];

/// The `calls` table: id -> column -> value (booleans as `true`/`false`).
fn calls(db: &TestDb) -> BTreeMap<String, BTreeMap<&'static str, Option<String>>> {
    let kind = db.server.kind;
    let select: Vec<String> = CALL_COLS.iter().map(|c| t(kind, c)).collect();
    block_on(async {
        let mut c = db.conn().await;
        let got = rows(
            &mut c,
            &format!("SELECT {} FROM {PREFIX}calls", select.join(", ")),
        )
        .await;
        c.close().await;
        got.into_iter()
            .map(|r| {
                let m: BTreeMap<&'static str, Option<String>> = CALL_COLS
                    .iter()
                    .copied()
                    .zip(r)
                    .map(|(k, v)| {
                        let v = match (k, v.as_deref()) {
                            ("complete", Some("1")) => Some("true".into()),
                            ("complete", Some("0")) => Some("false".into()),
                            _ => v,
                        };
                        (k, v)
                    })
                    .collect();
                (m["id"].clone().unwrap(), m)
            })
            .collect()
    })
}

/// Legs per call id, from `call_legs`.
fn legs(db: &TestDb) -> BTreeMap<String, usize> {
    let kind = db.server.kind;
    block_on(async {
        let mut c = db.conn().await;
        let got = rows(
            &mut c,
            &format!(
                "SELECT call_id, {} FROM {PREFIX}call_legs GROUP BY call_id",
                t(kind, "COUNT(*)")
            ),
        )
        .await;
        c.close().await;
        got.into_iter()
            .map(|r| {
                (
                    r[0].clone().unwrap(),
                    r[1].as_deref().unwrap().parse().unwrap(),
                )
            })
            .collect()
    })
}

/// `2017-06-16T08:00:00` (the body's form) as `2017-06-16 08:00:00`, moved by `hours`.
fn body_time(v: &serde_json::Value, hours: i64) -> String {
    let t: chrono::NaiveDateTime = v.as_str().unwrap().parse().unwrap();
    (t - chrono::TimeDelta::hours(hours))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn s(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Each call of `want` (the JSONL sink's) is one row whose typed columns say what its body
/// says, with its legs.
fn assert_rows_match(db: &TestDb, want: &[serde_json::Value]) {
    let got = calls(db);
    let leg_counts = legs(db);
    let want_ids: BTreeSet<&str> = want.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(want_ids.len(), want.len(), "the JSONL has a call twice");
    assert_eq!(
        got.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        want_ids,
        "calls in the table"
    );
    for c in want {
        let id = c["id"].as_str().unwrap();
        let row = &got[id];
        let body: serde_json::Value =
            serde_json::from_str(row["body"].as_deref().unwrap()).unwrap();
        assert_eq!(&body, c, "{id}: body");
        let cms = c["source"] == "cms";
        let offset = if cms { 0 } else { 2 };
        let expect: [(&str, Option<String>); 17] = [
            ("source", s(&c["source"])),
            ("site", Some(c["site"].as_str().unwrap_or("").to_owned())),
            ("start_local", Some(body_time(&c["start_time"], 0))),
            ("end_local", Some(body_time(&c["end_time"], 0))),
            ("start_utc", Some(body_time(&c["start_time"], offset))),
            (
                "start_utc",
                c["start_utc"].as_str().map(|u| {
                    chrono::DateTime::parse_from_rfc3339(u)
                        .unwrap()
                        .naive_utc()
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string()
                }),
            ),
            ("end_utc", Some(body_time(&c["end_time"], offset))),
            ("duration", s(&c["duration"])),
            ("billsec", c.get("billsec").and_then(s)),
            (
                "disposition",
                Some(c["disposition"].as_str().unwrap_or("").to_owned()),
            ),
            ("direction", s(&c["direction"])),
            ("caller", s(&c["caller"])),
            ("called", s(&c["called"])),
            ("answered_by", s(&c["answered_by"]["device"])),
            (
                "tenant",
                Some(c["tenant"].as_str().unwrap_or("").to_owned()),
            ),
            ("complete", s(&c["complete"])),
            ("legs", {
                let n = c["records"].as_array().map_or(0, Vec::len)
                    + c["legs"].as_array().map_or(0, Vec::len);
                Some(n.to_string())
            }),
        ];
        for (col, value) in expect {
            assert_eq!(row[col], value, "{id}: {col}");
        }
        let n: usize = row["legs"].as_deref().unwrap().parse().unwrap();
        assert!(n > 0, "{id}: no legs in the body");
        assert_eq!(
            leg_counts.get(id).copied().unwrap_or(0),
            n,
            "{id}: leg rows"
        );
    }
}

/// The CMS meeting of three legs (fixtures/cms/meeting_3legs, posts 01 to 09) as one body.
fn cms_meeting() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/cms/meeting_3legs/posts");
    let mut records = String::new();
    for n in 1..=9 {
        let post = std::fs::read_to_string(dir.join(format!("{n:02}.xml"))).unwrap();
        let open = post.find("<records").unwrap();
        let inner = post[open..].find('>').unwrap() + open + 1;
        let close = post.rfind("</records>").unwrap();
        records.push_str(&post[inner..close]);
    }
    format!(
        "<?xml version=\"1.0\"?><records session=\"5552fc55-8d82-4963-8f99-d5a0be6e2f92\">{records}</records>\n"
    )
}

/// A CMS meeting, an SMDR file and two Asterisk captures replayed into `server`, twice.
fn replays_twice(server: &Server, tag: &str) {
    let db = TestDb::create_empty(server, tag);
    let dir = common::tempdir(&format!("sql-replay-{tag}"));
    let env = sql_env(&db);
    let cms = dir.join("meeting.xml");
    std::fs::write(&cms, cms_meeting()).unwrap();
    let inputs: [(&str, PathBuf); 4] = [
        (RECEIVER, cms),
        (
            SMDR,
            fixture("ccbc/ccbc_2017-06-16_orphan-conference-add.txt"),
        ),
        (
            AMI,
            common::ami::capture_dir("07_queue_two_agents").join("ami.raw"),
        ),
        (
            AMI,
            common::ami::capture_dir("16_sip_blind_transfer").join("ami.raw"),
        ),
    ];
    let mut want = Vec::new();
    for round in 0..2 {
        for (i, (bin, input)) in inputs.iter().enumerate() {
            let out = dir.join(format!("{round}-{i}.jsonl"));
            replay(bin, input, &dir.join(format!("{round}-{i}.db")), &out, &env);
            if round == 0 {
                want.extend(read_jsonl::<serde_json::Value>(&out));
            }
        }
        let (calls_n, legs_n) = (count(&db, "calls"), count(&db, "call_legs"));
        assert_eq!(calls_n, want.len(), "round {round}: rows of calls");
        assert!(legs_n >= calls_n, "round {round}: {legs_n} legs");
        assert_rows_match(&db, &want);
        if round == 1 {
            // The migrations ran once.
            block_on(async {
                let mut c = db.conn().await;
                let v = rows(
                    &mut c,
                    &format!(
                        "SELECT {} FROM {PREFIX}schema_migrations",
                        t(db.server.kind, "version")
                    ),
                )
                .await;
                c.close().await;
                assert_eq!(v, vec![vec![Some("1".to_owned())]]);
            });
        }
    }
    assert!(want.iter().any(|c| c["source"] == "ami"));
    assert!(want.iter().any(|c| c["source"] == "cms"));
    assert!(want.iter().any(|c| c["source"] == "smdr"));
}

#[test]
fn replays_into_postgres_once_each_twice_the_same() {
    replays_twice(&SHARED_PG, "sqlreppg");
}

#[test]
fn replays_into_mariadb_once_each_twice_the_same() {
    replays_twice(&SHARED_MY, "sqlrepmy");
}

/// The expected calls of the live part: the fixture's complete calls.
fn live_lines() -> (Vec<Vec<u8>>, BTreeSet<String>) {
    let bytes = std::fs::read(fixture("ccbc_rw180105_day_34fields.txt")).unwrap();
    let want = common::expected_calls(&bytes)
        .into_iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    (common::fixture_lines(&bytes), want)
}

fn table_ids(db: &TestDb) -> Vec<String> {
    block_on(async {
        let Ok(mut c) = Db::connect(&db.server, Some(&db.name)).await else {
            return Vec::new();
        };
        let ok = match &mut c {
            Db::Pg(p) => {
                sqlx::query_scalar::<_, String>(&format!("SELECT id FROM {PREFIX}calls"))
                    .fetch_all(&mut *p)
                    .await
            }
            Db::My(m) => {
                sqlx::query_scalar::<_, String>(&format!("SELECT id FROM {PREFIX}calls"))
                    .fetch_all(&mut *m)
                    .await
            }
        };
        c.close().await;
        ok.unwrap_or_default()
    })
}

fn wait_ids(db: &TestDb, at_least: usize, relay: &Relay) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ids = table_ids(db);
        if ids.len() >= at_least {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {at_least} calls in the table; relay log:\n{}",
            ids.len(),
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send(relay: &Relay, lines: &[Vec<u8>]) {
    let addr = relay.smdr.unwrap();
    block_on(common::pbx_send(
        lines,
        || async move { tokio::net::TcpStream::connect(addr).await.unwrap() },
        7,
        0,
    ));
}

/// A live relay killed with SIGKILL mid-delivery and restarted, then the server stopped
/// mid-stream and started again: every call once.
fn kill_and_outage(server: Server, down: &mut dyn FnMut(), up: &mut dyn FnMut(), tag: &str) {
    let db = TestDb::create_empty(&server, tag);
    let dir = common::tempdir(&format!("sql-live-{tag}"));
    let state = dir.join("relay.db");
    let env = sql_env(&db);
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (lines, want) = live_lines();
    let third = lines.len() / 3;
    let start = || {
        Relay::start(
            &[
                "--smdr-listen",
                "127.0.0.1:0",
                "--http",
                "off",
                "--db",
                state.to_str().unwrap(),
                "--sink",
                "sql",
            ],
            &envs,
            true,
            false,
        )
    };
    let relay = start();
    send(&relay, &lines[..third]);
    // Some calls are in, the rest on their way: no goodbye.
    wait_ids(&db, 1, &relay);
    relay.kill9();
    let relay = start();
    send(&relay, &lines[third..2 * third]);
    down();
    send(&relay, &lines[2 * third..]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(relay.log().contains("sink unreachable"), "{}", relay.log());
    up();
    let ids = wait_ids(&db, want.len(), &relay);
    // Settled: nothing more comes.
    std::thread::sleep(Duration::from_secs(2));
    let ids2 = table_ids(&db);
    assert_eq!(ids.len(), ids2.len());
    let set: BTreeSet<String> = ids2.iter().cloned().collect();
    assert_eq!(set.len(), ids2.len(), "a call twice");
    assert_eq!(set, want, "the calls of the fixture");
    assert!(relay.terminate().success());
}

#[test]
fn postgres_killed_relay_and_restarted_server_every_call_once() {
    if let Some(why) = postgres_missing() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let pg = OwnPostgres::start("sqlsinkpg");
    let server = pg.server();
    let pg = std::cell::RefCell::new(pg);
    kill_and_outage(
        server,
        &mut || pg.borrow().down(),
        &mut || pg.borrow().up(),
        "sqllivepg",
    );
}

#[test]
fn mariadb_killed_relay_and_restarted_server_every_call_once() {
    if let Some(why) = mariadb_missing() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let my = OwnMariadb::start("sqlsinkmy");
    let server = my.server();
    let my = std::cell::RefCell::new(my);
    kill_and_outage(
        server,
        &mut || my.borrow_mut().down(),
        &mut || my.borrow_mut().up(),
        "sqllivemy",
    );
}

/// A CHECK constraint the user added refuses the long calls: they are dead-lettered with the
/// database's message, the others written.
fn refused_calls_dead_letter(server: &Server, tag: &str) {
    let db = TestDb::create_empty(server, tag);
    let dir = common::tempdir(&format!("sql-refused-{tag}"));
    let env = sql_env(&db);
    // The tables, made by a first replay.
    let small = fixture("avaya_ipofficekb_basic_examples.txt");
    replay(SMDR, &small, &dir.join("a.db"), &dir.join("a.jsonl"), &env);
    assert!(count(&db, "calls") > 0);
    db.exec(&[
        format!("DELETE FROM {PREFIX}calls"),
        format!("ALTER TABLE {PREFIX}calls ADD CONSTRAINT no_long_calls CHECK (duration < 300)"),
    ]);
    let state = dir.join("b.db");
    let out = dir.join("b.jsonl");
    replay(
        SMDR,
        &fixture("ccbc/ccbc_2017-06-16_orphan-conference-add.txt"),
        &state,
        &out,
        &env,
    );
    let all: Vec<serde_json::Value> = read_jsonl(&out);
    let long: BTreeSet<&str> = all
        .iter()
        .filter(|c| c["duration"].as_u64().unwrap() >= 300)
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(!long.is_empty() && long.len() < all.len());
    let outbox = cdr_sinks::outbox::Outbox::open_read_only(&state, &[]).unwrap();
    let dead = outbox.dead_letters(10_000).unwrap();
    let dead_ids: BTreeSet<&str> = dead.iter().map(|d| d.call_id.as_str()).collect();
    assert_eq!(dead_ids, long, "dead letters");
    for d in &dead {
        assert_eq!(d.sink, "sql");
        let e = d.last_error.as_deref().unwrap();
        assert!(e.contains("no_long_calls"), "{e}");
    }
    assert_eq!(count(&db, "calls"), all.len() - long.len());
}

#[test]
fn postgres_refused_calls_dead_letter_with_its_message() {
    refused_calls_dead_letter(&SHARED_PG, "sqlchkpg");
}

#[test]
fn mariadb_refused_calls_dead_letter_with_its_message() {
    refused_calls_dead_letter(&SHARED_MY, "sqlchkmy");
}

/// A user who may write but not create tables: the sink says so (and waits).
fn no_create_right(server: &Server, tag: &str) {
    let db = TestDb::create_empty(server, tag);
    let user = format!("{}_w", db.name);
    let (grant, cleanup) = match server.kind {
        Kind::Pg => (
            vec![
                format!("CREATE ROLE {user} LOGIN"),
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
                format!("GRANT USAGE ON SCHEMA public TO {user}"),
            ],
            format!("DROP OWNED BY {user}; DROP ROLE IF EXISTS {user}"),
        ),
        Kind::My => (
            vec![
                format!("CREATE USER '{user}'@'%'"),
                format!(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON {}.* TO '{user}'@'%'",
                    db.name
                ),
            ],
            format!("DROP USER IF EXISTS '{user}'@'%'"),
        ),
    };
    db.exec(&grant);
    let dir = common::tempdir(&format!("sql-rights-{tag}"));
    let mut env = sql_env(&db);
    env[0].1 = url(&db, &user);
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut relay = Relay::start_bin(
        SMDR,
        &[
            "--replay",
            fixture("avaya_ipofficekb_basic_examples.txt")
                .to_str()
                .unwrap(),
            "--sink",
            "sql",
            "--http",
            "off",
            "--db",
            dir.join("relay.db").to_str().unwrap(),
        ],
        &envs,
        false,
        false,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !relay.log().contains("may not create the sink's tables") {
        assert!(Instant::now() < deadline, "{}", relay.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = relay.log();
    assert!(log.contains("sink paused"), "{log}");
    assert!(log.contains("grant it CREATE"), "{log}");
    // Waiting, not lost: the calls are still due.
    assert!(relay.child.try_wait().unwrap().is_none(), "{log}");
    drop(relay);
    let outbox = cdr_sinks::outbox::Outbox::open_read_only(&dir.join("relay.db"), &[]).unwrap();
    assert!(outbox.dead_letters(10).unwrap().is_empty());
    db.exec(&[cleanup]);
}

#[test]
fn postgres_without_create_right_says_so() {
    no_create_right(&SHARED_PG, "sqlrightspg");
}

#[test]
fn mariadb_without_create_right_says_so() {
    no_create_right(&SHARED_MY, "sqlrightsmy");
}
