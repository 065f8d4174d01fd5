//! Throughput of `ami-relay` without AMI: Asterisk's CEL and CDR rows read from the CSV files
//! (`CEL_MODE=csv`) and from the `cel`/`cdr` tables of PostgreSQL and MariaDB (`CEL_MODE=db`),
//! assembled into calls and committed to the outbox, each run with `--once` (read to the end,
//! deliver, exit) into a JSONL sink. Reported per source: rows read per second and calls shipped
//! per second, over the whole run (start-up included), and a line-scan baseline: counting the
//! newlines of the same CSV files in this process.
//!
//! The rows are the real captures of `fixtures/asterisk`, copied `--copies` times with
//! every Uniqueid, Linkedid and CEL event time moved to a distinct epoch per copy.
//!
//! ```sh
//! export CARGO_TARGET_DIR=target-e2e
//! cargo build --release -p cdr-relay -p cdr-benches --bin ami-relay --bin cel_load
//! target-e2e/release/cel_load          # --copies 2500 --sources csv,postgresql,mysql
//! ```
//!
//! The databases are `cdr_relay_bench_<pid>` on the machine's servers (PostgreSQL on
//! 127.0.0.1:5432 as `postgres`, MariaDB on 127.0.0.1:3306 as `root`), created and dropped by
//! the run; rows are loaded with `psql \copy` and `mariadb LOAD DATA LOCAL INFILE` (not
//! measured). Figures in BENCHMARKS.md.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark binary: the report goes to standard output"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Throughput of ami-relay over Asterisk's CEL/CDR CSV files and tables")]
struct Args {
    /// Copies of the fixtures' traffic (8 calls, 160 CEL rows and 26 CDR rows each).
    #[arg(long, default_value_t = 2500)]
    copies: usize,
    /// Which sources to measure: csv, postgresql, mysql.
    #[arg(long, default_value = "csv,postgresql,mysql", value_delimiter = ',')]
    sources: Vec<String>,
    /// The `ami-relay` binary [default: beside this binary].
    #[arg(long)]
    relay: Option<PathBuf>,
    /// Give the cdr table an index on its time column (`end`), which it is read by.
    #[arg(long)]
    cdr_index: bool,
    /// The fixtures [default: fixtures/asterisk from the workspace].
    #[arg(long)]
    fixtures: Option<PathBuf>,
}

/// The fixtures' rows, every copy with its own ids and times.
struct Load {
    cel: String,
    cdr: String,
    cel_rows: usize,
    cdr_rows: usize,
    calls: usize,
}

fn build_load(fixtures: &Path, copies: usize) -> anyhow::Result<Load> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("cel.csv").exists())
        .collect();
    dirs.sort();
    let (mut cel1, mut cdr1, mut calls1) = (String::new(), String::new(), 0);
    for d in &dirs {
        cel1.push_str(&std::fs::read_to_string(d.join("cel.csv"))?);
        cdr1.push_str(&std::fs::read_to_string(d.join("cdr.csv"))?);
        let truth: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("truth.json"))?)?;
        calls1 += truth["n_linkedids"].as_u64().unwrap_or(0) as usize;
    }
    if !cel1.contains("17953") {
        bail!("the fixtures' ids no longer start with 17953: update the copy rule");
    }
    let (mut cel, mut cdr) = (String::new(), String::new());
    for k in 0..copies {
        // Every Uniqueid, Linkedid and epoch event time starts 17953: a distinct prefix per
        // copy gives each copy its own calls, later copies later times.
        let prefix = format!("{}", 20_000 + k);
        cel.push_str(&cel1.replace("17953", &prefix));
        // The CDR's own times (a table without ids is read by them) move a day per copy.
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 22)
            .and_then(|d| d.checked_add_days(chrono::Days::new(k as u64)))
            .context("a day")?
            .format("%Y-%m-%d")
            .to_string();
        cdr.push_str(&cdr1.replace("17953", &prefix).replace("2026-11-22", &day));
    }
    Ok(Load {
        cel_rows: cel.lines().count(),
        cdr_rows: cdr.lines().count(),
        cel,
        cdr,
        calls: calls1 * copies,
    })
}

/// One measured run of the relay to its end: seconds and calls delivered.
fn run_relay(
    relay: &Path,
    dir: &Path,
    name: &str,
    envs: &[(&str, String)],
) -> anyhow::Result<(f64, usize)> {
    let out = dir.join(format!("{name}.jsonl"));
    let db = dir.join(format!("{name}.db"));
    let start = Instant::now();
    let status = Command::new(relay)
        .arg("--once")
        .args(["--sink", &format!("jsonl:{}", out.display())])
        .args(["--http", "off", "--db"])
        .arg(&db)
        .env_remove("AMI_HOST")
        .env_remove("WEBHOOK_URL")
        .env("RUST_LOG", "warn")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .status()
        .context("starting ami-relay")?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{name}: ami-relay failed: {status}");
    }
    let calls = std::fs::read_to_string(&out)?.lines().count();
    Ok((secs, calls))
}

fn shell(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Asterisk's cel and cdr tables (contrib/ast-db-manage), with microsecond event times.
fn schema(mysql: bool) -> String {
    let (id, ts) = if mysql {
        ("id INT AUTO_INCREMENT PRIMARY KEY", "DATETIME(6)")
    } else {
        ("id SERIAL PRIMARY KEY", "TIMESTAMP(6)")
    };
    let end = if mysql { "`end`" } else { "\"end\"" };
    format!(
        "CREATE TABLE cel ({id}, eventtype VARCHAR(30) NOT NULL, eventtime {ts} NOT NULL,
           cid_name VARCHAR(80), cid_num VARCHAR(80), cid_ani VARCHAR(80), cid_rdnis VARCHAR(80),
           cid_dnid VARCHAR(80), exten VARCHAR(80), context VARCHAR(80), channame VARCHAR(80),
           appname VARCHAR(80), appdata VARCHAR(512), amaflags INT, accountcode VARCHAR(20),
           peeraccount VARCHAR(20), uniqueid VARCHAR(150), linkedid VARCHAR(150),
           userfield VARCHAR(255), peer VARCHAR(80), extra VARCHAR(1024));
         CREATE TABLE cdr (accountcode VARCHAR(80), src VARCHAR(80), dst VARCHAR(80),
           dcontext VARCHAR(80), clid VARCHAR(80), channel VARCHAR(80), dstchannel VARCHAR(80),
           lastapp VARCHAR(80), lastdata VARCHAR(80), start {ts}, answer {ts}, {end} {ts},
           duration INT, billsec INT, disposition VARCHAR(45), amaflags VARCHAR(45),
           userfield VARCHAR(256), uniqueid VARCHAR(150), linkedid VARCHAR(150),
           peeraccount VARCHAR(80), sequence INT);"
    )
}

/// The CEL rows as a tab-separated file in the table's column order (eventtime as a UTC
/// timestamp), and the CDR rows likewise.
fn table_files(load: &Load, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    use std::fmt::Write as _;
    let mut cel = String::new();
    for line in load.cel.lines() {
        let f = call_assembler::csv::split_record(line).context("a fixture CEL line")?;
        let get = |i: usize| f.get(i).map_or("", String::as_str);
        let t: f64 = get(1).parse().unwrap_or(0.0);
        let secs = t.floor() as i64;
        let micros = ((t - t.floor()) * 1e6).round() as u32;
        let when = chrono::DateTime::from_timestamp(secs, micros * 1000)
            .context("event time")?
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.6f");
        // eventtype, eventtime, cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid, exten,
        // context, channame, appname, appdata, amaflags, accountcode, peeraccount, uniqueid,
        // linkedid, userfield, peer, extra
        let cols = [
            get(0).to_owned(),
            when.to_string(),
            get(2).into(),
            get(3).into(),
            get(4).into(),
            get(5).into(),
            get(6).into(),
            get(7).into(),
            get(8).into(),
            get(9).into(),
            get(10).into(),
            get(11).into(),
            get(12).into(),
            get(13).into(),
            String::new(),
            get(14).into(),
            get(15).into(),
            get(17).into(),
            get(16).into(),
            get(19).into(),
        ];
        let _ = writeln!(cel, "{}", cols.map(|c| tsv(&c)).join("\t"));
    }
    let mut cdr = String::new();
    for line in load.cdr.lines() {
        let f = call_assembler::csv::split_record(line).context("a fixture CDR line")?;
        let get = |i: usize| f.get(i).map_or(String::new(), Clone::clone);
        // accountcode .. disposition, amaflags, userfield, uniqueid, linkedid, peeraccount,
        // sequence (the table's order) from cdr_csv's 21 columns.
        let mut cols: Vec<String> = (0..16).map(get).collect();
        for i in [17, 16, 19, 18, 20] {
            cols.push(get(i));
        }
        let _ = writeln!(
            cdr,
            "{}",
            cols.iter().map(|c| tsv(c)).collect::<Vec<_>>().join("\t")
        );
    }
    let (a, b) = (dir.join("cel.tsv"), dir.join("cdr.tsv"));
    std::fs::write(&a, cel)?;
    std::fs::write(&b, cdr)?;
    Ok((a, b))
}

/// A field for PostgreSQL's text COPY and MariaDB's LOAD DATA: `\N` for empty, escapes.
fn tsv(v: &str) -> String {
    if v.is_empty() {
        return "\\N".into();
    }
    v.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let relay = match &args.relay {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .join("ami-relay"),
    };
    let fixtures = args
        .fixtures
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/asterisk"));
    let dir = std::env::temp_dir().join(format!("cdr-relay-cel-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let load = build_load(&fixtures, args.copies)?;
    let (cel_path, cdr_path) = (dir.join("cel.csv"), dir.join("cdr.csv"));
    std::fs::write(&cel_path, &load.cel)?;
    std::fs::write(&cdr_path, &load.cdr)?;
    let rows = load.cel_rows + load.cdr_rows;
    let bytes = load.cel.len() + load.cdr.len();
    println!(
        "load: {} calls, {} CEL rows + {} CDR rows, {:.1} MiB of CSV",
        load.calls,
        load.cel_rows,
        load.cdr_rows,
        bytes as f64 / 1048576.0
    );

    // Baseline: count the lines of both files, read from disk, in this process.
    let start = Instant::now();
    let mut lines = 0;
    for p in [&cel_path, &cdr_path] {
        let data = std::fs::read(p)?;
        lines += memchr::memchr_iter(b'\n', &data).count();
    }
    let base = start.elapsed().as_secs_f64();
    println!(
        "{:<28} {:>10.0} rows/s {:>8.1} MiB/s",
        "baseline (line count)",
        lines as f64 / base,
        bytes as f64 / 1048576.0 / base
    );

    let report = |name: &str, secs: f64, calls: usize| {
        println!(
            "{name:<28} {:>10.0} rows/s {:>8.0} calls/s  ({calls} calls in {secs:.2} s; {:.0}x the baseline's time)",
            rows as f64 / secs,
            calls as f64 / secs,
            secs / base
        );
    };
    let mut tables = None;
    for source in &args.sources {
        match source.as_str() {
            "csv" => {
                let (secs, calls) = run_relay(
                    &relay,
                    &dir,
                    "csv",
                    &[
                        ("CEL_MODE", "csv".into()),
                        ("CEL_CSV_PATH", cel_path.display().to_string()),
                        ("CDR_CSV_PATH", cdr_path.display().to_string()),
                    ],
                )?;
                report("ami-relay CEL_MODE=csv", secs, calls);
            }
            "postgresql" | "mysql" => {
                let mysql = source == "mysql";
                if tables.is_none() {
                    tables = Some(table_files(&load, &dir)?);
                }
                let Some((cel_tsv, cdr_tsv)) = &tables else {
                    continue;
                };
                let name = format!("cdr_relay_bench_{}", std::process::id());
                if mysql {
                    let sql = |db: Option<&str>, q: &str| {
                        let mut c = Command::new("mariadb");
                        c.args([
                            "-h",
                            "127.0.0.1",
                            "-P",
                            "3306",
                            "-u",
                            "root",
                            "--local-infile=1",
                        ]);
                        if let Some(db) = db {
                            c.arg(db);
                        }
                        c.args(["-e", q]);
                        shell(&mut c)
                    };
                    sql(
                        None,
                        &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"),
                    )?;
                    sql(Some(&name), &schema(true))?;
                    if args.cdr_index {
                        sql(Some(&name), "CREATE INDEX cdr_end ON cdr (`end`)")?;
                    }
                    sql(
                        Some(&name),
                        &format!(
                            "SET GLOBAL local_infile=1; LOAD DATA LOCAL INFILE '{}' INTO TABLE cel (eventtype, eventtime, cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid, exten, context, channame, appname, appdata, amaflags, accountcode, peeraccount, uniqueid, linkedid, userfield, peer, extra); LOAD DATA LOCAL INFILE '{}' INTO TABLE cdr",
                            cel_tsv.display(),
                            cdr_tsv.display()
                        ),
                    )?;
                } else {
                    let sql = |db: &str, q: &str| {
                        shell(Command::new("psql").args([
                            "-h",
                            "127.0.0.1",
                            "-U",
                            "postgres",
                            "-v",
                            "ON_ERROR_STOP=1",
                            "-q",
                            "-d",
                            db,
                            "-c",
                            q,
                        ]))
                    };
                    sql("postgres", &format!("DROP DATABASE IF EXISTS {name}"))?;
                    sql("postgres", &format!("CREATE DATABASE {name}"))?;
                    sql(&name, &schema(false))?;
                    if args.cdr_index {
                        sql(&name, "CREATE INDEX cdr_end ON cdr (\"end\")")?;
                    }
                    sql(
                        &name,
                        &format!(
                            "\\copy cel (eventtype, eventtime, cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid, exten, context, channame, appname, appdata, amaflags, accountcode, peeraccount, uniqueid, linkedid, userfield, peer, extra) FROM '{}'",
                            cel_tsv.display()
                        ),
                    )?;
                    sql(&name, &format!("\\copy cdr FROM '{}'", cdr_tsv.display()))?;
                }
                let (port, user) = if mysql {
                    ("3306", "root")
                } else {
                    ("5432", "postgres")
                };
                let run = run_relay(
                    &relay,
                    &dir,
                    source,
                    &[
                        ("CEL_MODE", "db".into()),
                        ("DB_TYPE", source.clone()),
                        ("DB_HOST", "127.0.0.1".into()),
                        ("DB_PORT", port.into()),
                        ("DB_NAME", name.clone()),
                        ("DB_USER", user.into()),
                        ("DB_PASSWORD", String::new()),
                    ],
                );
                if mysql {
                    let _ = shell(Command::new("mariadb").args([
                        "-h",
                        "127.0.0.1",
                        "-P",
                        "3306",
                        "-u",
                        "root",
                        "-e",
                        &format!("DROP DATABASE IF EXISTS {name}"),
                    ]));
                } else {
                    let _ = shell(Command::new("psql").args([
                        "-h",
                        "127.0.0.1",
                        "-U",
                        "postgres",
                        "-q",
                        "-d",
                        "postgres",
                        "-c",
                        &format!("DROP DATABASE IF EXISTS {name}"),
                    ]));
                }
                let (secs, calls) = run?;
                report(&format!("ami-relay CEL_MODE=db ({source})"), secs, calls);
            }
            other => bail!("unknown source {other:?}: csv, postgresql or mysql"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
