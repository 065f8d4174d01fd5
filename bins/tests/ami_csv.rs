//! `ami-relay` with `CEL_MODE=csv` as a process: `--once` over every Asterisk capture's
//! cel_custom and cdr_csv files gives the calls the AMI replay of the same traffic gives (and
//! truth.json's count); a follower survives a line cut in half, a rotation and a truncation;
//! a relay killed with SIGKILL mid-file ships every call once after a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use call_assembler::Call;
use common::{Relay, cel_capture, cel_captures, read_jsonl};

const BIN: &str = env!("CARGO_BIN_EXE_ami-relay");

/// Runs `ami-relay` to its end with `args` and `envs`, the calls it delivered.
fn run_to_end(args: &[&str], envs: &[(&str, &str)], out: &Path, db: &Path) -> Vec<Call> {
    let status = Command::new(BIN)
        .args(args)
        .args(["--sink", &format!("jsonl:{}", out.display())])
        .args(["--http", "off", "--db", db.to_str().unwrap()])
        .env_remove("AMI_HOST")
        .env_remove("WEBHOOK_URL")
        .env_remove("CEL_MODE")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{args:?} {envs:?}: {status}");
    read_jsonl(out)
}

type Summary = (String, bool, String, u32, Option<u32>, usize);

fn summary(c: &Call) -> Summary {
    (
        c.id.clone(),
        c.complete,
        c.disposition.to_string(),
        c.duration,
        c.billsec,
        c.legs.len(),
    )
}

#[test]
fn once_over_every_capture_gives_the_ami_replays_calls_and_truths_count() {
    let dir = common::tempdir("ami-csv-once");
    for cap in cel_captures() {
        let name = cap.file_name().unwrap().to_string_lossy().to_string();
        let truth: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cap.join("truth.json")).unwrap())
                .unwrap();
        let cel = cap.join("cel.csv");
        let cdr = cap.join("cdr.csv");
        let csv = run_to_end(
            &["--once"],
            &[
                ("CEL_MODE", "csv"),
                ("CEL_CSV_PATH", cel.to_str().unwrap()),
                ("CDR_CSV_PATH", cdr.to_str().unwrap()),
            ],
            &dir.join(format!("{name}.csv.jsonl")),
            &dir.join(format!("{name}.csv.db")),
        );
        let ami = run_to_end(
            &["--replay", cap.join("ami.raw").to_str().unwrap()],
            &[],
            &dir.join(format!("{name}.ami.jsonl")),
            &dir.join(format!("{name}.ami.db")),
        );
        // The same calls (in the order of their ids: calls that end together may be emitted
        // in either order).
        let sorted = |calls: &[Call]| {
            let mut v: Vec<Summary> = calls.iter().map(summary).collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&csv), sorted(&ami), "{name}");
        assert_eq!(
            csv.len() as u64,
            truth["n_linkedids"].as_u64().unwrap(),
            "{name}"
        );
        assert!(csv.iter().all(|c| c.complete), "{name}");
        // Every cdr_csv row is attached to its call, with Asterisk's column names.
        let rows: usize = csv.iter().map(|c| c.cdr.len()).sum();
        assert_eq!(rows as u64, truth["n_cdr_rows"].as_u64().unwrap(), "{name}");
        for c in &csv {
            for row in &c.cdr {
                assert_eq!(row["linkedid"], c.call_id, "{name}");
                assert!(row.contains_key("disposition") && row.contains_key("billsec"));
            }
        }
    }
}

#[test]
fn without_the_cdr_file_calls_come_without_cdr_rows_and_db_mode_needs_a_db_type() {
    let dir = common::tempdir("ami-csv-nocdr");
    let cap = cel_capture("01_answered_caller_hangup");
    let calls = run_to_end(
        &["--once"],
        &[
            ("CEL_MODE", "csv"),
            ("CEL_CSV_PATH", cap.join("cel.csv").to_str().unwrap()),
            ("CDR_CSV_PATH", dir.join("missing.csv").to_str().unwrap()),
        ],
        &dir.join("out.jsonl"),
        &dir.join("relay.db"),
    );
    assert_eq!(calls.len(), 1);
    assert!(calls[0].cdr.is_empty());
    let out = Command::new(BIN)
        .args(["--check-config"])
        .env_remove("AMI_HOST")
        .env_remove("DB_TYPE")
        .env("CEL_MODE", "db")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CEL_MODE=db needs DB_TYPE"), "{err}");
    let out = Command::new(BIN)
        .args(["--check-config"])
        .env_remove("AMI_HOST")
        .env_remove("CEL_CSV_PATH")
        .env_remove("CDR_CSV_PATH")
        .env("CEL_MODE", "csv")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("/var/log/asterisk/cel-custom/Master.csv")
            && text.contains("/var/log/asterisk/cdr-csv/Master.csv"),
        "{text}"
    );
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
}

/// Waits until `path` holds `n` calls; then a little longer to see no more come.
fn wait_calls(path: &Path, n: usize, relay: &Relay) -> Vec<Call> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let calls: Vec<Call> = read_jsonl(path);
        if calls.len() >= n {
            std::thread::sleep(Duration::from_millis(3500));
            return read_jsonl(path);
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} calls; relay log:\n{}",
            calls.len(),
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ids(calls: &[Call]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in calls {
        *m.entry(c.id.clone()).or_insert(0) += 1;
    }
    m
}

/// The calls `--once` makes of a capture's CEL file alone.
fn once_ids(cap: &Path, dir: &Path) -> Vec<String> {
    let name = cap.file_name().unwrap().to_string_lossy().to_string();
    run_to_end(
        &["--once"],
        &[
            ("CEL_MODE", "csv"),
            ("CEL_CSV_PATH", cap.join("cel.csv").to_str().unwrap()),
            ("CDR_CSV_PATH", dir.join("none.csv").to_str().unwrap()),
        ],
        &dir.join(format!("{name}.once.jsonl")),
        &dir.join(format!("{name}.once.db")),
    )
    .into_iter()
    .map(|c| c.id)
    .collect()
}

fn follow(dir: &Path, cel: &Path, cdr: &Path, out: &Path) -> Relay {
    let sink = format!("jsonl:{}", out.display());
    let db = dir.join("relay.db");
    Relay::start_bin(
        BIN,
        &[
            "--http",
            "off",
            "--db",
            db.to_str().unwrap(),
            "--sink",
            &sink,
        ],
        &[
            ("CEL_MODE", "csv"),
            ("CEL_CSV_PATH", cel.to_str().unwrap()),
            ("CDR_CSV_PATH", cdr.to_str().unwrap()),
        ],
        false,
        false,
    )
}

#[test]
fn a_follower_survives_a_cut_line_a_rotation_and_a_truncation() {
    let dir = common::tempdir("ami-csv-follow");
    let (a, b, c, d) = (
        cel_capture("01_answered_caller_hangup"),
        cel_capture("05_blind_transfer"),
        cel_capture("07_queue_two_agents"),
        cel_capture("13_sip_no_answer"),
    );
    let mut want = Vec::new();
    for cap in [&a, &c, &b, &d] {
        want.extend(once_ids(cap, &dir));
    }
    let cel = dir.join("Master.csv");
    let cdr = dir.join("cdr.csv");
    let out = dir.join("out.jsonl");
    // Half of a CEL file, cut in the middle of a line.
    let a_cel = std::fs::read(a.join("cel.csv")).unwrap();
    let half = a_cel.len() / 2;
    assert_ne!(a_cel[half - 1], b'\n');
    append(&cel, &a_cel[..half]);
    append(&cdr, &std::fs::read(a.join("cdr.csv")).unwrap());
    let relay = follow(&dir, &cel, &cdr, &out);
    std::thread::sleep(Duration::from_millis(800));
    append(&cel, &a_cel[half..]);
    let got = wait_calls(&out, 1, &relay);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].cdr.len(), 3, "the CDR rows are attached");
    // Rotation: rows written to the old file just before it is renamed, then a new file.
    append(&cel, &std::fs::read(c.join("cel.csv")).unwrap());
    std::fs::rename(&cel, dir.join("Master.csv.1")).unwrap();
    append(&cel, &std::fs::read(b.join("cel.csv")).unwrap());
    let got = wait_calls(&out, 3, &relay);
    assert_eq!(got.len(), 3, "{}", relay.log());
    // Truncation: the file is emptied and shorter rows are written.
    std::fs::write(&cel, std::fs::read(d.join("cel.csv")).unwrap()).unwrap();
    let got = wait_calls(&out, 4, &relay);
    let got_ids = ids(&got);
    assert!(got_ids.values().all(|n| *n == 1), "{got_ids:?}");
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got_ids.keys().cloned().collect::<Vec<_>>(), want_sorted);
    assert!(relay.log().contains("rotated"), "{}", relay.log());
    assert!(relay.log().contains("truncated"), "{}", relay.log());
    assert!(relay.terminate().success());
}

#[test]
fn a_relay_killed_mid_file_ships_every_call_once_after_a_restart() {
    let dir = common::tempdir("ami-csv-kill");
    let mut cel_all = Vec::new();
    let mut cdr_all = Vec::new();
    let mut want = Vec::new();
    for cap in cel_captures() {
        cel_all.extend(std::fs::read(cap.join("cel.csv")).unwrap());
        cdr_all.extend(std::fs::read(cap.join("cdr.csv")).unwrap());
        want.extend(once_ids(&cap, &dir));
    }
    want.sort();
    let cel = dir.join("Master.csv");
    let cdr = dir.join("cdr.csv");
    let db = dir.join("relay.db");
    // Up to the middle of a call: the 30th line of the fifth capture's CEL rows.
    let cut = {
        let mut lines = 0;
        let mut at = 0;
        let start: usize = cel_captures()[..4]
            .iter()
            .map(|c| std::fs::read(c.join("cel.csv")).unwrap().len())
            .sum();
        for (i, b) in cel_all[start..].iter().enumerate() {
            if *b == b'\n' {
                lines += 1;
                if lines == 5 {
                    at = start + i + 1;
                    break;
                }
            }
        }
        at
    };
    append(&cel, &cel_all[..cut]);
    append(&cdr, &cdr_all);
    let first = dir.join("first.jsonl");
    let relay = follow(&dir, &cel, &cdr, &first);
    let got = wait_calls(&first, 4, &relay);
    assert_eq!(got.len(), 4, "{}", relay.log());
    let journaled: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))
        .unwrap();
    assert!(journaled > 0, "the open call is journaled");
    relay.kill9();
    append(&cel, &cel_all[cut..]);
    let second = dir.join("second.jsonl");
    let relay = follow(&dir, &cel, &cdr, &second);
    let got = wait_calls(&second, want.len() - 4, &relay);
    let mut all = read_jsonl(&first);
    all.extend(got);
    let got_ids = ids(&all);
    assert!(got_ids.values().all(|n| *n == 1), "{got_ids:?}");
    assert_eq!(got_ids.keys().cloned().collect::<Vec<_>>(), want);
    // The call cut in two kept its first rows (from the journal): same as from the whole file.
    let whole = run_to_end(
        &["--once"],
        &[
            ("CEL_MODE", "csv"),
            ("CEL_CSV_PATH", cel.to_str().unwrap()),
            ("CDR_CSV_PATH", cdr.to_str().unwrap()),
        ],
        &dir.join("whole.jsonl"),
        &dir.join("whole.db"),
    );
    let mut a: Vec<Summary> = all.iter().map(summary).collect();
    let mut b: Vec<Summary> = whole.iter().map(summary).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(relay.terminate().success());
    let journaled: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journaled, 0, "nothing left open");
}

#[test]
fn a_file_rotated_while_the_relay_was_down_is_finished_first() {
    let dir = common::tempdir("ami-csv-down");
    let (a, b, c) = (
        cel_capture("01_answered_caller_hangup"),
        cel_capture("03_no_answer"),
        cel_capture("11_sip_answered_caller_hangup"),
    );
    let mut want = Vec::new();
    for cap in [&a, &b, &c] {
        want.extend(once_ids(cap, &dir));
    }
    want.sort();
    let cel = dir.join("Master.csv");
    let cdr = dir.join("cdr.csv");
    append(&cel, &std::fs::read(a.join("cel.csv")).unwrap());
    let first = dir.join("first.jsonl");
    let relay = follow(&dir, &cel, &cdr, &first);
    let got = wait_calls(&first, 1, &relay);
    assert_eq!(got.len(), 1);
    assert!(relay.terminate().success());
    // While it is down: more rows in the old file, which is then rotated, and a new file.
    append(&cel, &std::fs::read(b.join("cel.csv")).unwrap());
    std::fs::rename(&cel, dir.join("Master.csv.1")).unwrap();
    append(&cel, &std::fs::read(c.join("cel.csv")).unwrap());
    let second = dir.join("second.jsonl");
    let relay = follow(&dir, &cel, &cdr, &second);
    let got = wait_calls(&second, 2, &relay);
    let mut all = read_jsonl(&first);
    all.extend(got);
    let got_ids = ids(&all);
    assert!(got_ids.values().all(|n| *n == 1), "{got_ids:?}");
    assert_eq!(got_ids.keys().cloned().collect::<Vec<_>>(), want);
    assert!(
        relay.log().contains("rotated while the relay was down"),
        "{}",
        relay.log()
    );
    assert!(relay.terminate().success());
}

#[test]
fn a_cel_custom_file_with_its_own_column_mapping_gives_the_same_calls() {
    let dir = common::tempdir("ami-csv-columns");
    let cap = cel_capture("05_blind_transfer");
    let sample = run_to_end(
        &["--once"],
        &[
            ("CEL_MODE", "csv"),
            ("CEL_CSV_PATH", cap.join("cel.csv").to_str().unwrap()),
            ("CDR_CSV_PATH", cap.join("cdr.csv").to_str().unwrap()),
        ],
        &dir.join("sample.jsonl"),
        &dir.join("sample.db"),
    );
    assert_eq!(sample.len(), 1);
    // The same rows written by a site's own mapping: other order, fewer columns, one field
    // with a line break in it (a quoted newline inside a record).
    let sample_cols = call_assembler::CelColumns::sample();
    let mine = [
        ("uniqueid", "${CSV_QUOTE(${CHANNEL(uniqueid)})}"),
        ("linkedid", "${CSV_QUOTE(${CHANNEL(linkedid)})}"),
        ("eventtype", "${CSV_QUOTE(${eventtype})}"),
        ("eventtime", "${CSV_QUOTE(${eventtime})}"),
        ("channame", "${CSV_QUOTE(${CHANNEL(channame)})}"),
        ("cid_num", "${CSV_QUOTE(${CALLERID(num)})}"),
        ("cid_name", "${CSV_QUOTE(${CALLERID(name)})}"),
        ("exten", "${CSV_QUOTE(${CHANNEL(exten)})}"),
        ("context", "${CSV_QUOTE(${CHANNEL(context)})}"),
        ("appname", "${CSV_QUOTE(${CHANNEL(appname)})}"),
        ("appdata", "${CSV_QUOTE(${CHANNEL(appdata)})}"),
        ("peer", "${CSV_QUOTE(${BRIDGEPEER})}"),
        ("userfield", "${CSV_QUOTE(${CHANNEL(userfield)})}"),
        ("eventextra", "${CSV_QUOTE(${eventextra})}"),
    ];
    let mut out = String::new();
    let text = std::fs::read_to_string(cap.join("cel.csv")).unwrap();
    for (i, line) in text.lines().enumerate() {
        let fields = call_assembler::csv::split_record(line).unwrap();
        let row: Vec<String> = mine
            .iter()
            .map(|(name, _)| {
                let at = sample_cols.position(name).unwrap();
                let v = fields[at].clone();
                if *name == "userfield" && i == 3 {
                    "a note\nover two lines".to_owned()
                } else {
                    v
                }
            })
            .collect();
        call_assembler::csv::write_record(&mut out, &row);
    }
    let cel = dir.join("Custom.csv");
    std::fs::write(&cel, out).unwrap();
    let mapping: Vec<&str> = mine.iter().map(|(_, m)| *m).collect();
    let conf = dir.join("cel_custom.conf");
    std::fs::write(
        &conf,
        format!(
            "; site config\n[mappings]\nOther.csv => ${{CSV_QUOTE(${{eventtype}})}},${{CSV_QUOTE(${{CHANNEL(uniqueid)}})}}\nCustom.csv => {}\n",
            mapping.join(",")
        ),
    )
    .unwrap();
    let by_conf = run_to_end(
        &["--once"],
        &[
            ("CEL_MODE", "csv"),
            ("CEL_CSV_PATH", cel.to_str().unwrap()),
            ("CDR_CSV_PATH", cap.join("cdr.csv").to_str().unwrap()),
            ("CEL_CUSTOM_CONF", conf.to_str().unwrap()),
        ],
        &dir.join("conf.jsonl"),
        &dir.join("conf.db"),
    );
    let names: Vec<&str> = mine.iter().map(|(n, _)| *n).collect();
    let by_list = run_to_end(
        &["--once"],
        &[
            ("CEL_MODE", "csv"),
            ("CEL_CSV_PATH", cel.to_str().unwrap()),
            ("CDR_CSV_PATH", cap.join("cdr.csv").to_str().unwrap()),
            ("CEL_CSV_COLUMNS", &names.join(",")),
        ],
        &dir.join("list.jsonl"),
        &dir.join("list.db"),
    );
    let want = serde_json::to_value(&sample).unwrap();
    assert_eq!(serde_json::to_value(&by_conf).unwrap(), want);
    assert_eq!(serde_json::to_value(&by_list).unwrap(), want);
    // Read with the sample mapping instead, the same file gives no call.
    let wrong = run_to_end(
        &["--once"],
        &[
            ("CEL_MODE", "csv"),
            ("CEL_CSV_PATH", cel.to_str().unwrap()),
            ("CDR_CSV_PATH", dir.join("none.csv").to_str().unwrap()),
        ],
        &dir.join("wrong.jsonl"),
        &dir.join("wrong.db"),
    );
    assert!(
        wrong.is_empty() || serde_json::to_value(&wrong).unwrap() != want,
        "the mapping must matter"
    );
}

/// `copies` copies of a capture's CEL lines, copy `k` moved `100 * k` seconds later (its ids and
/// times all start with `17953556`, the hundreds of seconds), so each is a call of its own.
fn many_calls(cap: &Path, copies: usize) -> Vec<u8> {
    let text = std::fs::read_to_string(cap.join("cel.csv")).unwrap();
    assert!(text.contains("\"17953556"));
    let mut out = String::with_capacity(text.len() * copies);
    for k in 0..copies {
        out.push_str(&text.replace("\"17953556", &format!("\"{}", 17_953_556 + k)));
    }
    out.into_bytes()
}

#[test]
fn an_unterminated_quote_at_the_top_of_a_big_cel_file_costs_one_reject_not_every_call() {
    let dir = common::tempdir("ami-csv-quote");
    let cap = cel_capture("01_answered_caller_hangup");
    let stray = b"\"CHAN_START\",\"1795355600.000001\",\"cut short by a crash\n";
    let mut file = stray.to_vec();
    file.extend(many_calls(&cap, 3000));
    assert!(file.len() > 13_000_000, "{}", file.len());
    let cel = dir.join("Master.csv");
    std::fs::write(&cel, &file).unwrap();
    let db = dir.join("once.db");
    let calls = run_to_end(
        &["--once"],
        &[
            ("CEL_MODE", "csv"),
            ("CEL_CSV_PATH", cel.to_str().unwrap()),
            ("CDR_CSV_PATH", dir.join("none.csv").to_str().unwrap()),
        ],
        &dir.join("once.jsonl"),
        &db,
    );
    let got = ids(&calls);
    assert_eq!(got.len(), 3000, "every call once");
    assert!(got.values().all(|n| *n == 1));
    assert!(calls.iter().all(|c| c.complete));
    let rejects: Vec<(String, Vec<u8>)> = rusqlite::Connection::open(&db)
        .unwrap()
        .prepare("SELECT reason, raw FROM rejects")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert!(rejects[0].0.contains("at byte 0"), "{}", rejects[0].0);
    assert_eq!(rejects[0].1, stray, "the cut line kept");
}

#[test]
fn a_followed_file_with_a_stray_quote_goes_on_after_it() {
    let dir = common::tempdir("ami-csv-quote-follow");
    let cap = cel_capture("01_answered_caller_hangup");
    let cel = dir.join("Master.csv");
    let first = many_calls(&cap, 2);
    append(&cel, &first);
    let out = dir.join("calls.jsonl");
    let relay = follow(&dir, &cel, &dir.join("none.csv"), &out);
    wait_calls(&out, 2, &relay);
    // A line cut short mid-field, then 40 more calls written after it.
    let stray = b"\"CHAN_END\",\"1795355600.000001\",\"cut";
    append(&cel, stray);
    let rest = many_calls(&cap, 42);
    append(&cel, &rest[first.len()..]);
    let calls = wait_calls(&out, 42, &relay);
    let got = ids(&calls);
    // The cut line glued to the next call's first line is what is rejected; that call is still
    // built from its other lines.
    assert_eq!(got.len(), 42, "{}", relay.log());
    assert!(got.values().all(|n| *n == 1));
    let log = relay.log();
    assert!(
        log.contains("quote left open") && log.contains(&format!("offset={}", first.len())),
        "{log}"
    );
    assert!(relay.terminate().success());
}
