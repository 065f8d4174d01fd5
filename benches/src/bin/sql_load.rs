//! Throughput of the SQL table sink (`cdr_sinks::sql`) into PostgreSQL and MariaDB, beside a
//! bare batched `INSERT` of the same rows from the same process.
//!
//! The calls are the SMDR day fixture's, assembled, copied under new ids up to `--calls`; each
//! batch (`--batch` calls) is one transaction in every case. Three figures per server:
//!
//! * `sink, new rows`: `SqlSink::write_batch` into empty tables (upsert, revision read, legs
//!   deleted and inserted);
//! * `sink, replay`: the same calls again (every row updated in place, legs rewritten);
//! * `bare INSERT`: `SqlSink::write_plain`, the same typed rows with plain multi-row `INSERT`s
//!   into empty copies of the tables (same columns and indexes, no foreign key).
//!
//! ```sh
//! cargo run --release -p cdr-benches --bin sql_load   # --calls 50000 --batch 1000
//! ```
//!
//! Each server gets a database of its own (`cdrbench_sql_<pid>`), dropped at the end.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark binary: the report goes to standard output"
)]

use std::time::{Duration, Instant};

use call_assembler::Call;
use cdr_benches::corpus::day_calls;
use cdr_sinks::Outgoing;
use cdr_sinks::outbox::Pending;
use cdr_sinks::sql::{SqlConfig, SqlSink};
use clap::Parser;
use sqlx::Connection as _;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "The SQL sink into PostgreSQL and MariaDB against a bare batched INSERT")]
struct Args {
    /// Calls written per run.
    #[arg(long, default_value_t = 50_000)]
    calls: usize,
    /// Calls per batch (one transaction).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// The PostgreSQL server (no database in the URL); empty: skip it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pg: String,
    /// The MariaDB/MySQL server (no database in the URL); empty: skip it.
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    mysql: String,
}

fn items(calls: &[Call]) -> Vec<Outgoing> {
    calls
        .iter()
        .map(|c| {
            Outgoing::with_call(
                Pending {
                    call_id: c.id.clone(),
                    attempts: 0,
                    created_ms: 0,
                    next_ms: 0,
                    body: serde_json::to_vec(c).unwrap_or_default(),
                    seq: 0,
                },
                c.clone(),
            )
        })
        .collect()
}

async fn admin(server: &str, db: &str, sql: &str) -> anyhow::Result<()> {
    if server.starts_with("postgres") {
        let mut c =
            sqlx::PgConnection::connect(&format!("{server}/postgres?sslmode=disable")).await?;
        sqlx::raw_sql(sql).execute(&mut c).await?;
        c.close().await?;
    } else {
        let url = format!("{server}/{db}?ssl-mode=disabled");
        let mut c = sqlx::MySqlConnection::connect(&url).await?;
        sqlx::raw_sql(sql).execute(&mut c).await?;
        c.close().await?;
    }
    Ok(())
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>9.0} calls/s  ({:.2} s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

async fn run(server: &str, name: &str, items: &[Outgoing], batch: usize) -> anyhow::Result<()> {
    let pg = server.starts_with("postgres");
    let db = format!("cdrbench_sql_{}", std::process::id());
    let drop_sql = if pg {
        format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    } else {
        format!("DROP DATABASE IF EXISTS {db}")
    };
    admin(server, "", &drop_sql).await?;
    admin(server, "", &format!("CREATE DATABASE {db}")).await?;
    let url = if pg {
        format!("{server}/{db}?sslmode=disable")
    } else {
        format!("{server}/{db}?ssl-mode=disabled")
    };
    let sink = SqlSink::new(&SqlConfig::new(url.clone()))?;
    sink.connect().await?;
    let copy = if pg {
        "CREATE TABLE bare_calls (LIKE calls INCLUDING ALL); \
         CREATE TABLE bare_call_legs (LIKE call_legs INCLUDING ALL)"
    } else {
        "CREATE TABLE bare_calls LIKE calls; CREATE TABLE bare_call_legs LIKE call_legs"
    };
    if pg {
        let mut c = sqlx::PgConnection::connect(&url).await?;
        sqlx::raw_sql(copy).execute(&mut c).await?;
        c.close().await?;
    } else {
        admin(server, &db, copy).await?;
    }
    let n = items.len();
    let t = Instant::now();
    for b in items.chunks(batch) {
        let r = sink
            .write_batch(b)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(r.iter().all(Result::is_ok), "a call was refused");
    }
    let new_rows = t.elapsed();
    let t = Instant::now();
    for b in items.chunks(batch) {
        sink.write_plain(b, "bare_calls", "bare_call_legs")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let bare = t.elapsed();
    let t = Instant::now();
    for b in items.chunks(batch) {
        sink.write_batch(b)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let replay = t.elapsed();
    println!("{name}: {n} calls, {batch} per transaction");
    println!("  sink, new rows  {}", rate(n, new_rows));
    println!("  sink, replay    {}", rate(n, replay));
    println!("  bare INSERT     {}", rate(n, bare));
    println!(
        "  sink / bare     {:.2}",
        bare.as_secs_f64() / new_rows.as_secs_f64()
    );
    drop(sink);
    admin(server, "", &drop_sql).await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let calls = day_calls(args.calls)?;
    let items = items(&calls);
    let legs: usize = calls.iter().map(|c| c.records.len()).sum();
    println!(
        "{} SMDR calls ({legs} records as legs) from fixtures/smdr/ccbc_rw180105_day_34fields.txt",
        calls.len()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if !args.pg.is_empty() {
            run(&args.pg, "PostgreSQL", &items, args.batch.max(1)).await?;
        }
        if !args.mysql.is_empty() {
            run(&args.mysql, "MariaDB", &items, args.batch.max(1)).await?;
        }
        Ok(())
    })
}
