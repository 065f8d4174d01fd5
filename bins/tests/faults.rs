//! Faults of the database and readiness, with the real `smdr-relay` on loopback: a damaged
//! database is refused and left alone; a relay waiting for its PBX is ready.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A database holding the calls of a capture, made by a replay, vacuumed so that every page of
/// it is in use (no free page, where damage would go unnoticed).
fn database_with_calls(name: &str) -> std::path::PathBuf {
    let dir = tempdir(name);
    let db = dir.join("relay.db");
    let status = Command::new(env!("CARGO_BIN_EXE_smdr-relay"))
        .args(["--http", "off", "--db", db.to_str().unwrap(), "--replay"])
        .arg(fixture("ccbc/ccbc_2017-12-16_transfers.txt"))
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let calls: i64 = conn
        .query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
        .unwrap();
    assert!(calls > 200, "{calls}");
    conn.execute_batch("VACUUM").unwrap();
    drop(conn);
    db
}

#[test]
fn a_damaged_database_is_refused_and_left_alone() {
    let db = database_with_calls("damaged");
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    let pages = bytes.len() / page;
    assert!(pages > 10, "{pages} pages");
    // Garbage over an inner page.
    let middle = pages / 2;
    for (i, b) in bytes[middle * page..(middle + 1) * page]
        .iter_mut()
        .enumerate()
    {
        *b = (i as u8).wrapping_mul(37) ^ 0x5a;
    }
    std::fs::write(&db, &bytes).unwrap();

    let log = db.with_extension("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smdr-relay"))
        .args([
            "--smdr-listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
        ])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the relay started on a damaged database: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "it must not start: {stderr}");
    assert!(
        stderr.contains(&format!("the database {} is damaged", db.display())),
        "{stderr}"
    );
    assert!(stderr.contains("Nothing was written to it"), "{stderr}");
    assert!(stderr.contains(".recover"), "says what to do: {stderr}");
    assert!(
        !stderr.contains("listening on"),
        "nothing is started before the database is known good: {stderr}"
    );
    assert!(
        std::fs::read(&db).unwrap() == bytes,
        "the damaged file is left as it was"
    );
}

#[tokio::test]
async fn a_listening_relay_waiting_for_its_pbx_is_ready() {
    let dir = tempdir("ready-listening");
    let relay = Relay::listening(&dir.join("relay.db"), &[], true);
    let base = format!("http://{}", relay.http.unwrap());
    let (status, body) = http_get(&format!("{base}/readyz")).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"), "{}", relay.log());
    // The PBX's state is still a metric.
    let (_, metrics) = http_get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("cdr_relay_source_connected{source=\"smdr\"} 0"),
        "{metrics}"
    );
    for family in [
        "cdr_relay_intake_stalled{source=\"smdr\"} 0",
        "cdr_relay_commit_failures_total{source=\"smdr\"} 0",
        "cdr_relay_workers_down{source=\"smdr\"} 0",
    ] {
        assert!(metrics.contains(family), "{family}: {metrics}");
    }
    assert!(relay.terminate().success());
}

/// A GET with a plain client: the status and the body.
async fn http_get(url: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
