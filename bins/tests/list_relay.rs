//! `list-relay` against the machine's real Redis (127.0.0.1:6379, a key prefix per test): CDRs
//! drained once each in order, bad items kept as rejects, SIGKILL at random points between move
//! and commit losing nothing, and the Redis list sink fed from the dialler and from SMDR.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Relay;
use redis::Commands as _;

const BIN: &str = env!("CARGO_BIN_EXE_list-relay");
const REDIS: &str = "redis://127.0.0.1:6379";

fn redis() -> redis::Connection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_connection()
        .expect("the machine's Redis on 127.0.0.1:6379")
}

/// A key prefix of this test run; its keys are deleted first.
fn prefix(name: &str) -> String {
    let p = format!("cdr-relay-test:{name}:{}", std::process::id());
    let mut r = redis();
    let keys: Vec<String> = r.keys(format!("{p}:*")).unwrap();
    for k in keys {
        let _: () = r.del(k).unwrap();
    }
    p
}

fn cdr(i: usize) -> String {
    let ext = if i % 5 == 0 {
        "null".to_owned()
    } else {
        format!("\"{}\"", 2000 + i % 40)
    };
    format!(
        r#"{{"ext":{ext},"internal_call_ref":"icr-{i}","custom_call_ref":"crm-{i}","disposition":"ANSWERED","SIP_termination_code":200,"campaign_ref":"spring","client_number":"06{i:08}","dial_number":"+316{i:08}"}}"#
    )
}

fn id_of(i: usize) -> String {
    call_assembler::stable_id(call_assembler::Source::Dialler, "", &format!("icr-{i}"))
}

fn args<'a>(key: &'a str, db: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--dialler-redis-url",
        REDIS,
        "--dialler-list-key",
        key,
        "--http",
        "off",
        "--db",
        db,
    ];
    v.extend_from_slice(extra);
    v
}

fn start(args: &[&str], envs: &[(&str, &str)]) -> Relay {
    Relay::start_bin(BIN, args, envs, false, false)
}

fn stored_ids(db: &Path) -> Vec<String> {
    let Ok(c) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut s) = c.prepare("SELECT id FROM calls ORDER BY seq") else {
        return Vec::new();
    };
    s.query_map([], |r| r.get(0))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn wait_for(what: &str, relay: &Relay, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; relay log:\n{}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cdrs_are_drained_once_each_in_order_and_bad_items_are_kept() {
    let p = prefix("drain");
    let key = format!("{p}:in");
    let out_list = format!("{p}:out");
    let mut r = redis();
    let n = 600;
    let mut bad = vec![
        b"not json at all".to_vec(),
        br#"{"internal_call_ref":["wrong","type"]}"#.to_vec(),
        br#"{"nothing":"useful"}"#.to_vec(),
    ];
    let mut huge = br#"{"internal_call_ref":"huge","x":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 2 << 20));
    huge.extend_from_slice(br#""}"#);
    let huge_len = huge.len();
    bad.push(huge);
    for i in 0..n {
        let _: () = r.lpush(&key, cdr(i)).unwrap();
        if i % 150 == 75 {
            let _: () = r.lpush(&key, bad.pop().unwrap()).unwrap();
        }
    }
    let tmp = common::tempdir("list-drain");
    let db = tmp.join("relay.db");
    let out = tmp.join("calls.jsonl");
    let sink = format!("jsonl:{}", out.display());
    let relay = start(
        &args(
            &key,
            db.to_str().unwrap(),
            &["--sink", &sink, "--sink", "redis"],
        ),
        &[("REDIS_URL", REDIS), ("REDIS_LIST_KEY", out_list.as_str())],
    );
    wait_for("every call in the Redis sink", &relay, || {
        r.llen::<_, usize>(&out_list).unwrap() >= n
    });
    let want: Vec<String> = (0..n).map(id_of).collect();
    // The sink list (LPUSH): oldest at the right, as the dialler's own list.
    let mut pushed: Vec<String> = r.lrange(&out_list, 0, -1).unwrap();
    pushed.reverse();
    let pushed_ids: Vec<String> = pushed
        .iter()
        .map(|j| {
            serde_json::from_str::<serde_json::Value>(j).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(pushed_ids, want, "in order, once each");
    assert_eq!(stored_ids(&db), want);
    let lines = std::fs::read_to_string(&out).unwrap();
    let jsonl: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(jsonl.len(), n);
    assert_eq!(jsonl[0]["source"], "dialler");
    assert_eq!(jsonl[0]["answered"], false, "ext null: nobody answered");
    assert_eq!(jsonl[1]["answered_by"]["device"], "2001");
    let rejects: Vec<(String, Vec<u8>)> = rusqlite::Connection::open(&db)
        .unwrap()
        .prepare("SELECT reason, raw FROM rejects ORDER BY seq")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rejects.len(), 4, "{rejects:?}");
    assert!(rejects[0].0.contains("over the limit"), "{}", rejects[0].0);
    assert_eq!(
        rejects[0].1.len(),
        cdr_sinks::rejects::REJECT_PREFIX,
        "kept as a prefix, with its length ({huge_len}) and hash"
    );
    assert!(
        rejects[1].0.contains("no call reference"),
        "{}",
        rejects[1].0
    );
    assert!(rejects[2].0.contains("not a string"), "{}", rejects[2].0);
    assert_eq!(rejects[3].1, b"not json at all");
    wait_for("empty lists", &relay, || {
        r.llen::<_, usize>(&key).unwrap() == 0
            && r.llen::<_, usize>(format!("{key}:processing")).unwrap() == 0
    });
    let status = relay.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn sigkill_at_random_points_loses_no_cdr_and_doubles_none() {
    let p = prefix("kill");
    let key = format!("{p}:in");
    let mut r = redis();
    let n = 4000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let items: Vec<String> = chunk.iter().map(|i| cdr(*i)).collect();
        let _: () = r.lpush(&key, items).unwrap();
    }
    let tmp = common::tempdir("list-kill");
    let db = tmp.join("relay.db");
    let out = tmp.join("calls.jsonl");
    let sink = format!("jsonl:{}", out.display());
    let a = args(
        &key,
        db.to_str().unwrap(),
        &["--sink", &sink, "--dialler-batch", "40"],
    );
    let mut seed = 0x9e37_79b9_u64;
    for round in 0..6 {
        let relay = start(&a, &[]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(80 + seed % 400));
        eprintln!(
            "round {round}: {} stored, {} waiting, {} in processing",
            stored_ids(&db).len(),
            r.llen::<_, usize>(&key).unwrap(),
            r.llen::<_, usize>(format!("{key}:processing")).unwrap()
        );
        relay.kill9();
    }
    let relay = start(&a, &[]);
    wait_for("every CDR stored", &relay, || stored_ids(&db).len() >= n);
    wait_for("empty lists", &relay, || {
        r.llen::<_, usize>(&key).unwrap() == 0
            && r.llen::<_, usize>(format!("{key}:processing")).unwrap() == 0
    });
    let stored = stored_ids(&db);
    let want: BTreeSet<String> = (0..n).map(id_of).collect();
    assert_eq!(stored.len(), n, "no call stored twice");
    assert_eq!(stored.iter().cloned().collect::<BTreeSet<_>>(), want);
    // The jsonl sink may have seen a call twice (killed between writing and recording it),
    // but only under its one id, and every call at least once.
    wait_for("every call in the jsonl sink", &relay, || {
        let ids: BTreeSet<String> = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(ids.is_subset(&want));
        ids == want
    });
    relay.terminate();
}

#[test]
fn smdr_calls_land_in_a_redis_list_in_order_once_per_id() {
    let p = prefix("smdr");
    let out_list = format!("{p}:calls");
    let fixture = common::fixture("ccbc_rw180105_day_34fields.txt");
    let want: Vec<String> = common::expected_calls(&std::fs::read(&fixture).unwrap())
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(want.len() > 100);
    let tmp = common::tempdir("list-smdr");
    let db = tmp.join("relay.db");
    // Twice over the same database: the second replay pushes nothing again.
    for _ in 0..2 {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_smdr-relay"))
            .args(["--replay", fixture.to_str().unwrap(), "--sink", "redis"])
            .args(["--http", "off", "--db", db.to_str().unwrap()])
            .env("REDIS_URL", REDIS)
            .env("REDIS_LIST_KEY", &out_list)
            .env("REDIS_PUSH", "rpush")
            .env_remove("SMDR_WEBHOOK_URL")
            .env_remove("WEBHOOK_URL")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    // RPUSH: oldest at the left.
    let pushed: Vec<String> = redis().lrange(&out_list, 0, -1).unwrap();
    let ids: Vec<String> = pushed
        .iter()
        .map(|j| {
            serde_json::from_str::<serde_json::Value>(j).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // The replay also flushes the calls still open at the end of the file (incomplete).
    assert_eq!(&ids[..want.len()], want.as_slice(), "in order");
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "once per id");
    let _: () = redis().del(&out_list).unwrap();
}

#[test]
fn a_redis_that_refuses_scripts_is_drained_with_one_lmove_per_item() {
    let p = prefix("noeval");
    let key = format!("{p}:in");
    let mut r = redis();
    // A user of this test's own that may do anything to its keys but run scripts.
    let user = format!("cdr-relay-test-noeval-{}", std::process::id());
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("reset")
        .arg("on")
        .arg(">pw")
        .arg(format!("~{p}:*"))
        .arg("+@all")
        .arg("-@scripting")
        .query(&mut r)
        .unwrap();
    let n = 300;
    let items: Vec<String> = (0..n).map(cdr).collect();
    for chunk in items.chunks(100) {
        let _: () = r.lpush(&key, chunk).unwrap();
    }
    let tmp = common::tempdir("list-noeval");
    let db = tmp.join("relay.db");
    let url = format!("redis://{user}:pw@127.0.0.1:6379");
    let mut a = args(&key, db.to_str().unwrap(), &["--dialler-batch", "64"]);
    a[1] = &url;
    let relay = start(&a, &[]);
    wait_for("every CDR stored", &relay, || stored_ids(&db).len() >= n);
    wait_for("empty lists", &relay, || {
        r.llen::<_, usize>(&key).unwrap() == 0
            && r.llen::<_, usize>(format!("{key}:processing")).unwrap() == 0
    });
    let want: Vec<String> = (0..n).map(id_of).collect();
    assert_eq!(stored_ids(&db), want, "in order, once each");
    assert!(
        relay.log().contains("refuses scripts"),
        "the fallback was taken: {}",
        relay.log()
    );
    relay.terminate();
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query(&mut r)
        .unwrap();
}

/// A `redis-server` of this test's own on a free port, appendonly with fsync on every write;
/// killed (SIGKILL) when dropped.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Self {
            child: Self::spawn(dir, port),
            port,
            dir: dir.to_owned(),
        };
        r.wait_ready();
        r
    }

    fn spawn(dir: &Path, port: u16) -> std::process::Child {
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed")
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ping = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill_and_restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = Self::spawn(&self.dir, self.port);
        self.wait_ready();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn redis_killed_and_restarted_mid_stream_loses_no_call() {
    let tmp = common::tempdir("list-redis-restart");
    let data = tmp.join("redis");
    std::fs::create_dir_all(&data).unwrap();
    let mut server = OwnRedis::start(&data);
    let url = server.url();
    let n = 3000;
    {
        let mut r = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let items: Vec<String> = (0..n).map(cdr).collect();
        for chunk in items.chunks(500) {
            let _: () = r.lpush("dialler", chunk).unwrap();
        }
    }
    let db = tmp.join("relay.db");
    let relay = start(
        &[
            "--dialler-redis-url",
            &url,
            "--dialler-list-key",
            "dialler",
            "--dialler-batch",
            "25",
            "--http",
            "off",
            "--db",
            db.to_str().unwrap(),
            "--sink",
            "redis",
            "--webhook-retry-delay",
            "1",
        ],
        &[("REDIS_URL", url.as_str()), ("REDIS_LIST_KEY", "calls")],
    );
    wait_for("a first part of the stream", &relay, || {
        stored_ids(&db).len() > 200
    });
    server.kill_and_restart(Duration::from_millis(700));
    let want: BTreeSet<String> = (0..n).map(id_of).collect();
    let mut r = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    wait_for("every call in the sink list", &relay, || {
        let pushed: Vec<String> = r.lrange("calls", 0, -1).unwrap_or_default();
        let ids: BTreeSet<String> = pushed
            .iter()
            .map(|j| {
                serde_json::from_str::<serde_json::Value>(j).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(ids.is_subset(&want));
        ids == want
    });
    assert_eq!(stored_ids(&db).len(), n, "each CDR stored once");
    let left: usize = r.llen("dialler").unwrap();
    let processing: usize = r.llen("dialler:processing").unwrap();
    assert_eq!((left, processing), (0, 0));
    assert!(
        relay.log().contains("dialler Redis connection lost"),
        "the restart was seen: {}",
        relay.log()
    );
    relay.terminate();
}
