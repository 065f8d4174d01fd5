//! The hostile neighbour soak (issue 13): one `smdr-relay` with access configured takes a paced
//! PBX stream while 300 idle connections sit on its web port, random bytes go to every port it
//! has, a second client tries the SMDR port, and unauthenticated readers knock; beside it a
//! `cdr-receiver` gets a meeting's genuine CMS posts between forged `recordIndex` values and
//! noise. Every call of the stream must come out once, the meeting whole, `/healthz` must answer
//! within a second throughout, and the relay's memory must stay bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const TOKEN: &str = "soak-read-token-0123456789abcdef";

/// A `GET path` with `headers`; the status, or the error, within `timeout`.
fn get(addr: SocketAddr, path: &str, auth: bool, timeout: Duration) -> std::io::Result<u16> {
    let mut s = StdStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let auth = if auth {
        format!("Authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: soak\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))
}

/// `POST /cdr` with `body`; the status.
fn post(addr: SocketAddr, body: &[u8]) -> u16 {
    let mut s = StdStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /cdr HTTP/1.1\r\nHost: soak\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `GET path` with the token; the JSON body.
fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let mut s = StdStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(out.starts_with(b"HTTP/1.1 200"), "{path}");
    let body = &out[end + 4..];
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The relay's resident memory in KiB (Linux), if it can be read.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Deterministic noise: `n` bytes from `seed`.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Connects to `addr` from the local address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// What the health prober saw.
#[derive(Default)]
struct Probe {
    rounds: u32,
    slowest: Duration,
    failures: Vec<String>,
    max_rss_kib: u64,
    unauthorized: Vec<u16>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_neighbour_costs_no_call_and_no_health() {
    let rx = Receiver::start(None, 200).await;
    let dir = tempdir("hostile-neighbour");
    let url = rx.url();
    let db = dir.join("relay.db");
    let relay = Relay::start(
        &[
            "--smdr-listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
        ],
        &[
            ("SMDR_WEBHOOK_URL", url.as_str()),
            ("CDR_RELAY_READ_TOKENS", TOKEN),
            ("SMDR_ALLOW", "127.0.0.1/32"),
        ],
        true,
        true,
    );
    let smdr = relay.smdr.unwrap();
    let web = relay.http.unwrap();
    let pid = relay.child.id();

    // The stream: a capture of real calls, paced over about 12 s.
    let bytes = std::fs::read(fixture("ccbc/ccbc_2017-12-16_transfers.txt")).unwrap();
    let expected = expected_calls(&bytes);
    assert!(expected.len() > 50, "enough calls to soak with");
    let lines = fixture_lines(&bytes);
    let pace = Duration::from_millis(12_000 / lines.len() as u64).max(Duration::from_millis(1));

    // 300 idle connections on the web port, held for the whole run.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(StdStream::connect(web).unwrap());
    }

    // The prober: /healthz every 200 ms within a second; readers without a token refused; RSS.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = Arc::new(Mutex::new(Probe::default()));
    let prober = {
        let stop = stop.clone();
        let probe = probe.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = get(web, "/healthz", false, Duration::from_secs(1));
                let took = started.elapsed();
                let unauth = get(web, "/api/v1/calls", false, Duration::from_secs(5));
                let mut p = probe.lock().unwrap();
                p.rounds += 1;
                p.slowest = p.slowest.max(took);
                match r {
                    Ok(200) if took < Duration::from_secs(1) => {}
                    other => p.failures.push(format!("{other:?} after {took:?}")),
                }
                if let Ok(code) = unauth {
                    p.unauthorized.push(code);
                }
                if let Some(kib) = rss_kib(pid) {
                    p.max_rss_kib = p.max_rss_kib.max(kib);
                }
                drop(p);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // The neighbours: random bytes to both ports, from an allowed and a refused address, and a
    // second client trying to take the SMDR port with a forged call.
    let neighbours = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut round = 0u64;
            let mut tries = 0u32;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                for (from, to) in [
                    ("127.0.0.1", smdr),
                    ("127.0.0.2", smdr),
                    ("127.0.0.1", web),
                    ("127.0.0.2", web),
                ] {
                    if let Ok(mut s) = connect_from(from, to).await {
                        let _ = s
                            .write_all(&noise(round * 7 + to.port() as u64, 2048))
                            .await;
                        let _ = s.flush().await;
                        // Held open a little, as a slow attacker would.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        tries += 1;
                    }
                }
                if let Ok(mut s) = connect_from("127.0.0.1", smdr).await {
                    let forged = b"2017/05/26 12:00:00,00:00:17,3,6049471660,I,203,6049471660,,0,1999999,0,E201,Forged,T9001,Line 1.0,0,0,,,,,,,,,,,,,,192.168.1.21,2,0.0.0.0,0\r\n";
                    let _ = s.write_all(forged).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tries
        })
    };

    // The CMS receiver beside it: a meeting's ten genuine posts, each after a forged record with
    // a huge recordIndex in the same session and a post of noise.
    let cms = Relay::start_bin(
        env!("CARGO_BIN_EXE_cdr-receiver"),
        &[
            "--http",
            "127.0.0.1:0",
            "--db",
            dir.join("cms.db").to_str().unwrap(),
        ],
        &[("CDR_RELAY_READ_TOKENS", TOKEN)],
        false,
        true,
    );
    let cms_web = cms.http.unwrap();
    let poster = std::thread::spawn(move || {
        let mut statuses = Vec::new();
        for i in 1..=10 {
            let forged = format!(
                r#"<?xml version="1.0"?><records session="5552fc55-8d82-4963-8f99-d5a0be6e2f92"><record type="callStart" time="2017-04-24T12:00:00Z" recordIndex="{}" correlatorIndex="0"><call id="forged-{i}"><name>x</name></call></record></records>"#,
                99_999_990 + i
            );
            post(cms_web, forged.as_bytes());
            post(cms_web, &noise(i, 4096));
            let genuine =
                std::fs::read(fixture(&format!("../cms/meeting_3legs/posts/{i:02}.xml"))).unwrap();
            statuses.push(post(cms_web, &genuine));
            std::thread::sleep(Duration::from_millis(300));
        }
        statuses
    });

    // The PBX, paced, on its one connection.
    let mut pbx = TcpStream::connect(smdr).await.unwrap();
    for line in &lines {
        pbx.write_all(line).await.unwrap();
        tokio::time::sleep(pace).await;
    }
    pbx.flush().await.unwrap();
    rx.wait_accepted(expected.len(), Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let tries = neighbours.await.unwrap();
    let statuses = poster.join().unwrap();
    prober.join().unwrap();
    drop(idle);

    // Every call of the stream once; nothing from the neighbours.
    let got: Vec<serde_json::Value> = rx
        .accepted()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for c in &got {
        *by_id
            .entry(c["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for c in &expected {
        assert_eq!(
            by_id.get(c["id"].as_str().unwrap()),
            Some(&1),
            "call {} delivered once",
            c["call_id"]
        );
    }
    assert_eq!(got.len(), expected.len(), "no call from a neighbour");
    assert!(got.iter().all(|c| c["call_id"] != "1999999"));

    let p = probe.lock().unwrap();
    assert!(p.rounds >= 20, "the prober ran: {} rounds", p.rounds);
    assert!(
        p.failures.is_empty(),
        "/healthz late or failing {} of {} times: {:?} (slowest {:?})",
        p.failures.len(),
        p.rounds,
        p.failures,
        p.slowest
    );
    assert!(
        !p.unauthorized.is_empty() && p.unauthorized.iter().all(|&c| c == 401),
        "readers without a token are refused: {:?}",
        p.unauthorized
    );
    assert!(
        p.max_rss_kib > 0 && p.max_rss_kib < 256 * 1024,
        "RSS stayed bounded: {} KiB",
        p.max_rss_kib
    );
    assert!(tries > 0, "the neighbours got through to the ports");
    // With the token, the page and the metrics are there, and they counted the refusals.
    assert_eq!(
        get(web, "/api/v1/calls", true, Duration::from_secs(5)).unwrap(),
        200
    );
    let metrics = {
        let mut s = StdStream::connect(web).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let refused = |reason: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("cdr_relay_smdr_refused_total{")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        refused("not_allowed") > 0.0,
        "refusals by the allow-list counted"
    );
    assert!(refused("busy") > 0.0, "refused second clients counted");

    // The meeting is whole: every genuine post answered 200 and kept, the forged ones hid none.
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let calls = get_json(cms_web, "/api/v1/calls");
    let meeting = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call_id"] == "f54bfbc3-c11e-47a6-a918-6a308018ac1d")
        .unwrap_or_else(|| panic!("the meeting is stored: {calls}"))
        .clone();
    let full = get_json(
        cms_web,
        &format!("/api/v1/calls/{}", meeting["id"].as_str().unwrap()),
    );
    assert_eq!(full["complete"], true, "{full}");
    assert_eq!(full["legs"].as_array().unwrap().len(), 3, "{full}");
    drop(pbx);
    drop(relay);
    drop(cms);
}
