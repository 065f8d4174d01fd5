//! `smdr-relay` against a hostile network, on loopback with the real process: a second client
//! on the SMDR port while the PBX is connected, a peer outside `SMDR_ALLOW`, a forged
//! restart line, a call of 130,000 records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A 34-field SMDR line of call `id` started at `start` (HH:MM:SS on 2017/05/26); `name` tells
/// records of one call apart.
fn line(id: u64, start: &str, cont: bool, name: &str) -> Vec<u8> {
    format!(
        "2017/05/26 {start},00:00:17,3,6049471660,I,203,6049471660,,0,{id},{},E201,{name},T9001,Line 1.0,0,0,,,,,,,,,,,,,,192.168.1.21,2,0.0.0.0,0\r\n",
        u8::from(cont)
    )
    .into_bytes()
}

fn bodies(received: &[Received]) -> Vec<serde_json::Value> {
    received
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

/// A relay listening on loopback that delivers to `rx`, with `envs` on top.
fn relay(name: &str, rx: &Receiver, envs: &[(&str, &str)]) -> Relay {
    let dir = tempdir(name);
    let url = rx.url();
    let mut all = vec![("SMDR_WEBHOOK_URL", url.as_str())];
    all.extend_from_slice(envs);
    Relay::listening(&dir.join("relay.db"), &all, false)
}

/// Whether the relay closes `stream` within a few seconds (without sending anything).
async fn closed_by_relay(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Connects to `addr` from the local address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_cannot_replace_the_live_pbx_connection() {
    let rx = Receiver::start(None, 200).await;
    let relay = relay("hostile-second", &rx, &[]);
    let addr = relay.smdr.unwrap();
    let bytes = std::fs::read(fixture("ccbc/ccbc_2017-12-16_transfers.txt")).unwrap();
    let expected = expected_calls(&bytes);
    let lines = fixture_lines(&bytes);
    let (first, second) = lines.split_at(lines.len() / 2);
    let mut pbx = TcpStream::connect(addr).await.unwrap();
    pbx.write_all(&first.concat()).await.unwrap();
    pbx.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The intruder: connects while the PBX is live and injects a call.
    let mut intruder = TcpStream::connect(addr).await.unwrap();
    let _ = intruder
        .write_all(&line(1_999_999, "12:00:00", false, "Injected"))
        .await;
    assert!(
        closed_by_relay(&mut intruder).await,
        "the intruder is disconnected"
    );
    // The PBX goes on on its connection.
    pbx.write_all(&second.concat()).await.unwrap();
    pbx.flush().await.unwrap();
    rx.wait_accepted(expected.len(), Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = bodies(&rx.accepted());
    let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &got {
        *by_id.entry(c["id"].as_str().unwrap()).or_default() += 1;
    }
    for c in &expected {
        assert_eq!(
            by_id.get(c["id"].as_str().unwrap()),
            Some(&1),
            "call {} delivered once",
            c["call_id"]
        );
    }
    assert!(
        got.iter().all(|c| c["call_id"] != "1999999"),
        "the injected line is not stored"
    );
    assert_eq!(got.len(), expected.len());
    assert!(relay.log().contains("SMDR connection refused"), "logged");
    drop(pbx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smdr_allow_refuses_peers_outside_the_list() {
    let rx = Receiver::start(None, 200).await;
    let relay = relay("hostile-allow", &rx, &[("SMDR_ALLOW", "127.0.0.2/32")]);
    let addr = relay.smdr.unwrap();
    // From 127.0.0.1: not allowed.
    let mut outsider = connect_from("127.0.0.1", addr).await;
    let _ = outsider
        .write_all(&line(1_999_998, "12:00:00", false, "Outsider"))
        .await;
    assert!(
        closed_by_relay(&mut outsider).await,
        "a peer outside SMDR_ALLOW is disconnected"
    );
    // From 127.0.0.2: the PBX.
    let mut pbx = connect_from("127.0.0.2", addr).await;
    pbx.write_all(&line(1_036_001, "12:00:00", false, "Pbx"))
        .await
        .unwrap();
    pbx.flush().await.unwrap();
    rx.wait_accepted(1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = bodies(&rx.accepted());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["call_id"], "1036001");
    assert!(relay.log().contains("not in SMDR_ALLOW"));
    drop(pbx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_low_call_id_line_does_not_flush_open_calls() {
    let rx = Receiver::start(None, 200).await;
    let relay = relay("hostile-forged", &rx, &[]);
    let addr = relay.smdr.unwrap();
    let mut pbx = TcpStream::connect(addr).await.unwrap();
    let stream = [
        line(1_036_690, "12:00:00", true, "A1"),
        line(1_036_691, "12:01:00", true, "B1"),
        line(1_036_692, "12:44:55", false, "C1"),
        // Forged: a low Call ID started after the highest call.
        line(1_000_000, "12:54:46", false, "Forged"),
        line(1_036_690, "12:00:00", false, "A2"),
        line(1_036_691, "12:01:00", false, "B2"),
    ];
    for l in &stream {
        pbx.write_all(l).await.unwrap();
        pbx.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rx.wait_accepted(4, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = bodies(&rx.accepted());
    assert_eq!(got.len(), 4, "{got:#?}");
    for c in &got {
        assert_eq!(c["complete"], true, "{c}");
        assert_eq!(c["part"].as_u64().unwrap_or(0), 0, "{c}");
    }
    for id in ["1036690", "1036691"] {
        let c = got.iter().find(|c| c["call_id"] == id).unwrap();
        assert_eq!(c["records"].as_array().unwrap().len(), 2, "{c}");
    }
    drop(pbx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_of_130000_records_comes_out_in_capped_parts() {
    const RECORDS: usize = 130_000;
    let rx = Receiver::start(None, 200).await;
    let relay = relay("hostile-long", &rx, &[]);
    let addr = relay.smdr.unwrap();
    let started = Instant::now();
    let mut bytes = Vec::with_capacity(RECORDS * 160);
    for i in 0..RECORDS {
        bytes.extend(line(
            1_036_690,
            "12:00:00",
            i + 1 < RECORDS,
            &format!("N{i}"),
        ));
    }
    let mut pbx = TcpStream::connect(addr).await.unwrap();
    pbx.write_all(&bytes).await.unwrap();
    pbx.flush().await.unwrap();
    let parts = RECORDS / 1_000;
    rx.wait_accepted(parts, Duration::from_secs(240)).await;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = bodies(&rx.accepted());
    assert_eq!(got.len(), parts, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(240), "{elapsed:?}");
    let mut seen: Vec<u64> = got
        .iter()
        .map(|c| c["part"].as_u64().unwrap_or(0))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..parts as u64).collect::<Vec<_>>());
    let mut total = 0;
    for c in &got {
        let n = c["records"].as_array().unwrap().len();
        assert!(n <= 1_000, "part {} holds {n} records", c["part"]);
        total += n;
        let last = c["part"].as_u64().unwrap_or(0) + 1 == parts as u64;
        assert_eq!(c["complete"], last, "{}", c["part"]);
        if !last {
            assert_eq!(c["flush_reason"], "record_limit");
        }
    }
    assert_eq!(total, RECORDS, "no record dropped");
    assert!(relay.log().contains("CallSplit"), "the split is logged");
    drop(pbx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_taken_over_after_smdr_takeover_after() {
    let rx = Receiver::start(None, 200).await;
    let relay = relay("hostile-takeover", &rx, &[("SMDR_TAKEOVER_AFTER", "1")]);
    let addr = relay.smdr.unwrap();
    // The PBX's old connection, left half-open by a network break: silent from now on.
    let mut old = TcpStream::connect(addr).await.unwrap();
    old.write_all(&line(1_036_001, "12:00:00", false, "Before"))
        .await
        .unwrap();
    rx.wait_accepted(1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The PBX comes back on a new connection: it replaces the silent one.
    let mut new = TcpStream::connect(addr).await.unwrap();
    new.write_all(&line(1_036_002, "12:01:00", false, "After"))
        .await
        .unwrap();
    new.flush().await.unwrap();
    rx.wait_accepted(2, Duration::from_secs(30)).await;
    let got = bodies(&rx.accepted());
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["call_id"], "1036002");
    assert!(closed_by_relay(&mut old).await, "the silent one is closed");
    assert!(relay.log().contains("replaced by a new connection"));
    drop(new);
}

/// A replayed capture has no connection events: its genuine reboots are still restarts there.
#[test]
fn a_replayed_capture_keeps_its_reboots() {
    let dir = tempdir("hostile-replay");
    let out = dir.join("calls.jsonl");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_smdr-relay"))
        .args(["--http", "off", "--db"])
        .arg(dir.join("relay.db"))
        .arg("--replay")
        .arg(fixture("ccbc/ccbc_2017-05-26_fw-upgrade_two-reboots.txt"))
        .arg("--sink")
        .arg(format!("jsonl:{}", out.display()))
        .env_remove("SMDR_WEBHOOK_URL")
        .env_remove("SMDR_ADDR")
        .env_remove("SMDR_LISTEN")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let calls: Vec<serde_json::Value> = read_jsonl(&out);
    let mut epochs: Vec<u64> = calls
        .iter()
        .map(|c| c["boot_epoch"].as_u64().unwrap_or(0))
        .collect();
    epochs.dedup();
    assert_eq!(epochs, [0, 1, 2], "two reboots, as the capture holds");
}
