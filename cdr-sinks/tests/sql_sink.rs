//! The SQL sink driven directly against the machine's PostgreSQL (127.0.0.1:5432, user
//! postgres, trust) and MariaDB (127.0.0.1:3306, root): progress records update a call's row
//! until the final one and never overwrite a newer one, in any order and within one batch; a
//! read-only database delays the batch (Unreachable) and takes it once writable; tables dropped
//! under a running sink are made again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Instant;

use call_assembler::{Call, CallUpdate, Output, SmdrAssembler, SmdrAssemblerConfig, UpdateEvent};
use cdr_sinks::outbox::Pending;
use cdr_sinks::sql::{SqlConfig, SqlSink};
use cdr_sinks::{Outgoing, SinkError};
use sqlx::Connection as _;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pg,
    My,
}

fn admin_url(kind: Kind, db: &str) -> String {
    match kind {
        Kind::Pg => format!("postgres://postgres@127.0.0.1:5432/{db}?sslmode=disable"),
        Kind::My => format!("mysql://root@127.0.0.1:3306/{db}?ssl-mode=disabled"),
    }
}

/// Runs `sql` on `db` (`postgres` or none for the server as a whole).
async fn exec(kind: Kind, db: &str, sql: &str) {
    match kind {
        Kind::Pg => {
            let mut c = sqlx::PgConnection::connect(&admin_url(kind, db))
                .await
                .expect("PostgreSQL on 127.0.0.1:5432 (user postgres, trust)");
            sqlx::raw_sql(sql)
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            c.close().await.unwrap();
        }
        Kind::My => {
            let mut c = sqlx::MySqlConnection::connect(&admin_url(kind, db))
                .await
                .expect("MariaDB on 127.0.0.1:3306 (root, no password)");
            sqlx::raw_sql(sql)
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            c.close().await.unwrap();
        }
    }
}

/// `(duration, complete)` of the row of `id`, and its number of legs.
async fn row(kind: Kind, db: &str, id: &str) -> (i64, bool, i64) {
    let int = if kind == Kind::Pg { "bigint" } else { "SIGNED" };
    let sql = format!(
        "SELECT CAST(duration AS {int}), CAST(CASE WHEN complete THEN 1 ELSE 0 END AS {int}), \
         CAST((SELECT COUNT(*) FROM call_legs WHERE call_id = calls.id) AS {int}) \
         FROM calls WHERE id = '{id}'"
    );
    match kind {
        Kind::Pg => {
            let mut c = sqlx::PgConnection::connect(&admin_url(kind, db))
                .await
                .unwrap();
            let r: (i64, i64, i64) = sqlx::query_as(&sql).fetch_one(&mut c).await.unwrap();
            (r.0, r.1 == 1, r.2)
        }
        Kind::My => {
            let mut c = sqlx::MySqlConnection::connect(&admin_url(kind, db))
                .await
                .unwrap();
            let r: (i64, i64, i64) = sqlx::query_as(&sql).fetch_one(&mut c).await.unwrap();
            (r.0, r.1 == 1, r.2)
        }
    }
}

/// A database of the test's own, dropped at the end.
struct TestDb {
    kind: Kind,
    name: String,
}

impl TestDb {
    async fn new(kind: Kind, tag: &str) -> Self {
        let name = format!("cdrsinks_{tag}_{}", std::process::id());
        let server_db = if kind == Kind::Pg { "postgres" } else { "" };
        exec(kind, server_db, &format!("DROP DATABASE IF EXISTS {name}")).await;
        exec(kind, server_db, &format!("CREATE DATABASE {name}")).await;
        Self { kind, name }
    }

    fn sink(&self) -> SqlSink {
        SqlSink::new(&SqlConfig::new(admin_url(self.kind, &self.name))).unwrap()
    }

    async fn drop_it(self) {
        let (server_db, sql) = match self.kind {
            Kind::Pg => (
                "postgres",
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ),
            Kind::My => ("", format!("DROP DATABASE IF EXISTS {}", self.name)),
        };
        exec(self.kind, server_db, &sql).await;
    }
}

/// A one-record SMDR call.
fn call() -> Call {
    let line = b"2018/01/04 23:43:36,00:34:11,10,6047535970,I,206,6040116587,,0,1017747,0,\
        E241,Volunteer8,T9005,Line 5.0,0,0,,,,,,,,,,,,,,192.168.1.21,2,192.168.1.21,294282";
    let mut smdr = SmdrAssembler::new(SmdrAssemblerConfig::default());
    smdr.handle_record(
        Instant::now(),
        &smdr_parse::SmdrRecord::parse(line).unwrap(),
    );
    let Some(Output::Call(call)) = smdr.poll_output() else {
        panic!("a call with one record is complete at once");
    };
    call
}

/// Record `seq` of `base` in progressive mode (`None`: the call in complete mode), its
/// duration `seq * 10` so rows tell which one they hold.
fn record(base: &Call, seq: Option<u32>, last: bool) -> Outgoing {
    let mut c = base.clone();
    c.update = seq.map(|sequence| CallUpdate {
        sequence,
        event: if last {
            UpdateEvent::Ended
        } else if sequence == 0 {
            UpdateEvent::Started
        } else {
            UpdateEvent::Updated
        },
    });
    c.complete = last;
    if let Some(s) = seq {
        c.duration = s * 10;
    }
    let body = serde_json::to_vec(&c).unwrap();
    Outgoing::with_call(
        Pending {
            call_id: cdr_sinks::outbox::update_key(&c),
            attempts: 0,
            created_ms: 0,
            next_ms: 0,
            body,
            seq: 0,
        },
        c,
    )
}

fn all_ok(r: cdr_sinks::BatchResult<SinkError>, n: usize) {
    let r = r.unwrap();
    assert_eq!(r.len(), n);
    assert!(r.iter().all(Result::is_ok), "{r:?}");
}

async fn progress_records(kind: Kind) {
    let db = TestDb::new(kind, "progress").await;
    let sink = db.sink();
    let base = call();
    let id = base.id.clone();
    // 0, then 2; 1 comes late and changes nothing.
    all_ok(sink.write_batch(&[record(&base, Some(0), false)]).await, 1);
    assert_eq!(row(kind, &db.name, &id).await, (0, false, 1));
    all_ok(sink.write_batch(&[record(&base, Some(2), false)]).await, 1);
    all_ok(sink.write_batch(&[record(&base, Some(1), false)]).await, 1);
    assert_eq!(row(kind, &db.name, &id).await, (20, false, 1));
    // In one batch, out of order: the newest stands.
    all_ok(
        sink.write_batch(&[record(&base, Some(4), false), record(&base, Some(3), false)])
            .await,
        2,
    );
    assert_eq!(row(kind, &db.name, &id).await, (40, false, 1));
    // The final record; a progress record after it, and a replay of it, change nothing.
    all_ok(sink.write_batch(&[record(&base, Some(5), true)]).await, 1);
    assert_eq!(row(kind, &db.name, &id).await, (50, true, 1));
    all_ok(sink.write_batch(&[record(&base, Some(4), false)]).await, 1);
    all_ok(sink.write_batch(&[record(&base, Some(5), true)]).await, 1);
    assert_eq!(row(kind, &db.name, &id).await, (50, true, 1));
    // A complete-mode record of the call is final too (and still one row).
    all_ok(sink.write_batch(&[record(&base, None, true)]).await, 1);
    assert_eq!(
        row(kind, &db.name, &id).await,
        (base.duration.into(), true, 1)
    );
    db.drop_it().await;
}

#[tokio::test]
async fn postgres_progress_records_update_until_the_final_one() {
    progress_records(Kind::Pg).await;
}

#[tokio::test]
async fn mariadb_progress_records_update_until_the_final_one() {
    progress_records(Kind::My).await;
}

async fn dropped_tables_are_made_again(kind: Kind) {
    let db = TestDb::new(kind, "dropped").await;
    let sink = db.sink();
    let base = call();
    all_ok(sink.write_batch(&[record(&base, None, true)]).await, 1);
    exec(kind, &db.name, "DROP TABLE call_legs; DROP TABLE calls").await;
    // The batch is held (not dead-lettered), and the next one makes the tables again.
    let e = sink
        .write_batch(&[record(&base, None, true)])
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::Unreachable(_)), "{e}");
    all_ok(sink.write_batch(&[record(&base, None, true)]).await, 1);
    assert_eq!(row(kind, &db.name, &base.id).await.2, 1);
    db.drop_it().await;
}

#[tokio::test]
async fn postgres_dropped_tables_are_made_again() {
    dropped_tables_are_made_again(Kind::Pg).await;
}

#[tokio::test]
async fn mariadb_dropped_tables_are_made_again() {
    dropped_tables_are_made_again(Kind::My).await;
}

/// A database that turned read-only (a standby, `default_transaction_read_only`) holds the
/// batch back, as Unreachable, until it is writable again.
#[tokio::test]
async fn postgres_read_only_database_delays_the_batch() {
    let db = TestDb::new(Kind::Pg, "readonly").await;
    let sink = db.sink();
    let base = call();
    sink.connect().await.unwrap();
    exec(
        Kind::Pg,
        "postgres",
        &format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            db.name
        ),
    )
    .await;
    // Sessions begun before keep their setting: start a fresh one, as after a failover.
    exec(
        Kind::Pg,
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            db.name
        ),
    )
    .await;
    for _ in 0..2 {
        let e = sink
            .write_batch(&[record(&base, None, true)])
            .await
            .unwrap_err();
        assert!(matches!(e, SinkError::Unreachable(_)), "{e}");
    }
    exec(
        Kind::Pg,
        "postgres",
        &format!(
            "ALTER DATABASE {} SET default_transaction_read_only = off",
            db.name
        ),
    )
    .await;
    all_ok(sink.write_batch(&[record(&base, None, true)]).await, 1);
    assert_eq!(row(Kind::Pg, &db.name, &base.id).await.2, 1);
    db.drop_it().await;
}
