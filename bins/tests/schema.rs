//! Every source's real output validates against the published call schema
//! (`schema/cdr-relay.call.v1.json`; call-assembler's `schema` test keeps it equal to what the
//! types generate): each relay replays the fixtures as a user runs it, into the JSON-lines
//! sink, which writes each call's body exactly as the outbox stored it and every JSON sink
//! sends it. Every call carries its start and end in UTC, consistent with its local times.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo("schema/cdr-relay.call.v1.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(schema["title"], "cdr-relay.call.v1");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

/// Runs relay `bin` to its end (a replay, or `--once`) with `args` and `envs`, into a JSON-lines
/// sink; the bodies it wrote.
fn run(bin: &str, args: &[&str], envs: &[(&str, &str)], dir: &Path, name: &str) -> Vec<Value> {
    let out = dir.join(format!("{name}.jsonl"));
    let db = dir.join(format!("{name}.db"));
    let status = Command::new(bin)
        .args(args)
        .args(["--sink", &format!("jsonl:{}", out.display())])
        .args(["--http", "off", "--db", db.to_str().unwrap()])
        .env_remove("SMDR_ADDR")
        .env_remove("SMDR_LISTEN")
        .env_remove("SMDR_WEBHOOK_URL")
        .env_remove("WEBHOOK_URL")
        .env_remove("AMI_HOST")
        .env_remove("CEL_MODE")
        .env_remove("PBX_TZ")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{bin} {args:?} {envs:?}: {status}");
    common::read_jsonl(&out)
}

/// Checks every body against the schema and its UTC times against its local ones; returns how
/// many there were.
fn check(v: &jsonschema::Validator, what: &str, calls: &[Value]) -> usize {
    for call in calls {
        let errors: Vec<String> = v
            .iter_errors(call)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: {} does not fit: {errors:#?}",
            call["id"]
        );
        let utc = |k: &str| -> DateTime<Utc> {
            call[k]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: {} has no {k}", call["id"]))
                .parse()
                .unwrap()
        };
        let local = |k: &str| -> NaiveDateTime { call[k].as_str().unwrap().parse().unwrap() };
        let offset: FixedOffset = call["utc_offset"].as_str().unwrap().parse().unwrap();
        let shift = chrono::TimeDelta::seconds(i64::from(offset.local_minus_utc()));
        assert_eq!(
            utc("start_utc").naive_utc() + shift,
            local("start_time"),
            "{what}"
        );
        assert!(utc("end_utc") >= utc("start_utc"), "{what}: {call}");
        // RFC 3339 in UTC.
        assert!(call["start_utc"].as_str().unwrap().ends_with('Z'), "{what}");
    }
    calls.len()
}

#[test]
fn smdr_calls_fit_the_schema_with_the_pbx_zone() {
    let v = validator();
    let dir = common::tempdir("schema-smdr");
    let bin = env!("CARGO_BIN_EXE_smdr-relay");
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("fixtures/smdr"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    let mut total = 0;
    for (i, f) in files.iter().enumerate() {
        let name = format!("smdr-{i}");
        let calls = run(
            bin,
            &["--replay", f.to_str().unwrap()],
            &[("PBX_TZ", "Europe/London")],
            &dir,
            &name,
        );
        assert!(!calls.is_empty(), "{}", f.display());
        total += check(&v, &f.display().to_string(), &calls);
        // London: winter calls are at +00:00, summer ones at +01:00.
        for c in &calls {
            let month: u32 = c["start_time"].as_str().unwrap()[5..7].parse().unwrap();
            let want = match month {
                4..=9 => "+01:00",
                11 | 12 | 1 | 2 => "+00:00",
                _ => continue,
            };
            assert_eq!(c["utc_offset"], want, "{c}");
        }
    }
    assert!(total > 100, "{total}");
    // Without PBX_TZ, the machine's zone; with a fixed offset, that offset.
    let calls = run(
        bin,
        &["--replay", files[0].to_str().unwrap()],
        &[("PBX_TZ", "-05:00")],
        &dir,
        "smdr-fixed",
    );
    check(&v, "PBX_TZ=-05:00", &calls);
    assert!(calls.iter().all(|c| c["utc_offset"] == "-05:00"));
}

#[test]
fn asterisk_calls_fit_the_schema_from_ami_and_cel() {
    let v = validator();
    let dir = common::tempdir("schema-ami");
    let bin = env!("CARGO_BIN_EXE_ami-relay");
    let captures = common::cel_captures();
    assert!(captures.len() >= 4);
    for cap in &captures {
        let name = cap.file_name().unwrap().to_str().unwrap().to_owned();
        let ami = run(
            bin,
            &["--replay", cap.join("ami.raw").to_str().unwrap()],
            &[],
            &dir,
            &format!("{name}-ami"),
        );
        assert!(!ami.is_empty(), "{name}");
        check(&v, &format!("{name} AMI"), &ami);
        let cel = run(
            bin,
            &["--once"],
            &[
                ("CEL_MODE", "csv"),
                ("CEL_CSV_PATH", cap.join("cel.csv").to_str().unwrap()),
                ("AMI_UTC_OFFSET", "+02:00"),
            ],
            &dir,
            &format!("{name}-cel"),
        );
        assert!(!cel.is_empty(), "{name}");
        check(&v, &format!("{name} CEL"), &cel);
        // Epoch times: UTC is exact whatever offset the local times were given.
        assert!(cel.iter().all(|c| c["utc_offset"] == "+02:00"));
        // The same calls start at the same UTC instant from AMI (local = UTC) and from CEL
        // (local = UTC + 2 h): within the second, as the two carry the times of different
        // events of the channel's creation.
        let starts = |calls: &[Value]| -> Vec<(String, DateTime<Utc>)> {
            let mut v: Vec<(String, DateTime<Utc>)> = calls
                .iter()
                .map(|c| {
                    let start = c["start_utc"].as_str().unwrap().parse().unwrap();
                    (c["call_id"].as_str().unwrap().to_owned(), start)
                })
                .collect();
            v.sort();
            v
        };
        let (a, c) = (starts(&ami), starts(&cel));
        assert_eq!(a.len(), c.len(), "{name}");
        for ((ida, ta), (idc, tc)) in a.iter().zip(&c) {
            assert_eq!(ida, idc, "{name}");
            assert!(
                (*ta - *tc).num_milliseconds().abs() <= 1000,
                "{name}: {ta} {tc}"
            );
        }
    }
}

#[test]
fn cms_calls_fit_the_schema() {
    let v = validator();
    let dir = common::tempdir("schema-cms");
    let bin = env!("CARGO_BIN_EXE_cdr-receiver");
    // The meeting's posts in order, through one database, then the single-post fixtures.
    let mut posts: Vec<PathBuf> = std::fs::read_dir(repo("fixtures/cms/meeting_3legs/posts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    posts.sort();
    let mut calls = Vec::new();
    for p in &posts {
        calls = run(
            bin,
            &["--replay", p.to_str().unwrap()],
            &[],
            &dir,
            "meeting",
        );
    }
    let mut singles: Vec<PathBuf> = std::fs::read_dir(repo("fixtures/cms"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "xml") && !p.to_str().unwrap().contains("MALFORMED")
        })
        .collect();
    singles.sort();
    for (i, p) in singles.iter().enumerate() {
        calls.extend(run(
            bin,
            &["--replay", p.to_str().unwrap()],
            &[],
            &dir,
            &format!("single-{i}"),
        ));
    }
    assert!(calls.len() >= 3, "{}", calls.len());
    check(&v, "CMS", &calls);
    // CMS writes UTC.
    assert!(calls.iter().all(|c| c["utc_offset"] == "+00:00"));
}

#[test]
fn dialler_calls_fit_the_schema() {
    let v = validator();
    let dir = common::tempdir("schema-dialler");
    let items = [
        r#"{"ext":"2001","internal_call_ref":"a-1","custom_call_ref":"c-1","disposition":"answered","SIP_termination_code":200,"campaign_ref":7,"client_number":"447700900001","dial_number":"447700900001"}"#,
        r#"{"ext":null,"internal_call_ref":"a-2","custom_call_ref":null,"disposition":"NO ANSWER","SIP_termination_code":"480","campaign_ref":"x","client_number":"447700900002","dial_number":null,"extra":{"nested":true},"list":[1,2]}"#,
        r#"{"custom_call_ref":"only-custom","disposition":"busy"}"#,
    ];
    let file = dir.join("items.jsonl");
    std::fs::write(&file, items.join("\n") + "\n").unwrap();
    let calls = run(
        env!("CARGO_BIN_EXE_list-relay"),
        &["--replay", file.to_str().unwrap()],
        &[],
        &dir,
        "dialler",
    );
    assert_eq!(calls.len(), items.len());
    check(&v, "dialler", &calls);
    assert!(calls.iter().all(|c| c["utc_offset"] == "+00:00"));
}

#[test]
fn a_body_that_breaks_the_schema_is_caught() {
    // The validator is not vacuous: a wrong type, a missing field, a bad UTC time.
    let v = validator();
    let dir = common::tempdir("schema-negative");
    let calls = run(
        env!("CARGO_BIN_EXE_smdr-relay"),
        &[
            "--replay",
            repo("fixtures/smdr/avaya_ipofficekb_basic_examples.txt")
                .to_str()
                .unwrap(),
        ],
        &[],
        &dir,
        "smdr",
    );
    let good = calls[0].clone();
    assert!(v.is_valid(&good));
    let mut bad = good.clone();
    bad["duration"] = "12".into();
    assert!(!v.is_valid(&bad));
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("source");
    assert!(!v.is_valid(&bad));
    let mut bad = good.clone();
    bad["source"] = "pbx".into();
    assert!(!v.is_valid(&bad));
    let mut bad = good.clone();
    bad["start_utc"] = "yesterday".into();
    assert!(!v.is_valid(&bad));
    let mut bad = good;
    bad["records"][0]["direction"] = "X".into();
    assert!(!v.is_valid(&bad));
}
