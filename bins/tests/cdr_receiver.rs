//! `cdr-receiver` as a process on loopback: the CMS fixtures posted as CMS posts them, status
//! codes (200 after the commit, 200 for a duplicate, 400 for a malformed body, 413, 401), the
//! sample receiver's record API, the assembled meeting, and a SIGKILL between requests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Relay;

const BIN: &str = env!("CARGO_BIN_EXE_cdr-receiver");

fn cms(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/cms")
        .join(rel)
}

fn meeting_posts() -> Vec<Vec<u8>> {
    (1..=10)
        .map(|i| std::fs::read(cms(&format!("meeting_3legs/posts/{i:02}.xml"))).unwrap())
        .collect()
}

/// One HTTP/1.1 request on a fresh connection; the status and the body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[&str],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (status, body)
}

fn post(addr: SocketAddr, body: &[u8]) -> u16 {
    request(addr, "POST", "/cdr", body, &[]).0
}

fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = request(addr, "GET", path, b"", &[]);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn start(db: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Relay {
    let mut args = vec!["--http", "127.0.0.1:0", "--db", db.to_str().unwrap()];
    args.extend_from_slice(extra);
    Relay::start_bin(BIN, &args, envs, false, true)
}

/// The stored calls, through the API.
fn calls(addr: SocketAddr) -> Vec<serde_json::Value> {
    get_json(addr, "/api/v1/calls")["calls"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn the_meeting_posts_give_one_call_and_the_sample_receivers_api() {
    let tmp = common::tempdir("cms-meeting");
    let relay = start(&tmp.join("relay.db"), &[], &[]);
    let addr = relay.http.unwrap();
    for (i, body) in meeting_posts().iter().enumerate() {
        assert_eq!(post(addr, body), 200, "post {:02}", i + 1);
    }
    // 11 records posted, post 10 duplicates post 01: 10 kept, newest first.
    let page = get_json(addr, "/api/v1/records/1");
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 10, "{page}");
    let indexes: Vec<&str> = records
        .iter()
        .map(|r| r["@recordIndex"].as_str().unwrap())
        .collect();
    assert_eq!(
        indexes,
        [
            "3554", "3553", "3552", "3551", "3162", "3156", "3155", "3143", "3142", "3141"
        ]
    );
    assert_eq!(records[0]["@type"], "callEnd");
    assert_eq!(
        get_json(addr, "/api/v1/records/2"),
        serde_json::json!({"records": 0})
    );
    let calls = calls(addr);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    let full = get_json(
        addr,
        &format!("/api/v1/calls/{}", call["id"].as_str().unwrap()),
    );
    assert_eq!(full["source"], "cms");
    assert_eq!(full["call_id"], "f54bfbc3-c11e-47a6-a918-6a308018ac1d");
    assert_eq!(full["complete"], true);
    assert_eq!(
        full["duration"], 3955,
        "from CMS, and not the bogus post 10's 600"
    );
    assert_eq!(full["legs"].as_array().unwrap().len(), 3, "{full}");
    let status = relay.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn bad_bodies_are_refused_clearly_and_kept() {
    let tmp = common::tempdir("cms-bad");
    let db = tmp.join("relay.db");
    let relay = start(
        &db,
        &["--cdr-max-body", "4096"],
        &[("CDR_RECEIVER_TOKEN", "sekret")],
    );
    let addr = relay.http.unwrap();
    let good = std::fs::read(cms("ciscocms_cdr-receiver__callStart_single.xml")).unwrap();
    let auth = "Authorization: Bearer sekret";
    assert_eq!(request(addr, "POST", "/cdr", &good, &[]).0, 401);
    assert_eq!(
        request(
            addr,
            "POST",
            "/cdr",
            &good,
            &["Authorization: Bearer wrong"]
        )
        .0,
        401
    );
    assert_eq!(request(addr, "POST", "/cdr", &good, &[auth]).0, 200);
    let malformed = std::fs::read(cms(
        "mividas_debuglog__two_roots_stray_cdrTag_MALFORMED.xml",
    ))
    .unwrap();
    let (status, body) = request(addr, "POST", "/cdr", &malformed, &[auth]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a CDR batch"), "{body}");
    let huge = vec![b' '; 10_000];
    assert_eq!(request(addr, "POST", "/cdr", &huge, &[auth]).0, 413);
    assert_eq!(request(addr, "GET", "/cdr", b"", &[auth]).0, 405);
    relay.terminate();
    let c = rusqlite::Connection::open(&db).unwrap();
    let raw: Vec<u8> = c
        .query_row("SELECT raw FROM rejects", [], |r| r.get(0))
        .unwrap();
    assert_eq!(raw, malformed, "the malformed body is kept whole");
    let inputs: i64 = c
        .query_row("SELECT COUNT(*) FROM inputs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(inputs, 1, "the good body is kept raw");
}

#[test]
fn a_receiver_killed_between_requests_loses_no_acknowledged_batch() {
    let tmp = common::tempdir("cms-kill");
    let db = tmp.join("relay.db");
    let posts = meeting_posts();
    let relay = start(&db, &[], &[]);
    let addr = relay.http.unwrap();
    for body in &posts[..5] {
        assert_eq!(post(addr, body), 200);
    }
    relay.kill9();
    let relay = start(&db, &[], &[]);
    let addr = relay.http.unwrap();
    // CMS resends the last batch it is not sure about: a duplicate, answered 200.
    assert_eq!(post(addr, &posts[4]), 200);
    for body in &posts[5..] {
        assert_eq!(post(addr, body), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let calls = loop {
        let c = calls(addr);
        if !c.is_empty() || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(calls.len(), 1);
    let full = get_json(
        addr,
        &format!("/api/v1/calls/{}", calls[0]["id"].as_str().unwrap()),
    );
    assert_eq!(full["complete"], true);
    assert_eq!(
        full["legs"].as_array().unwrap().len(),
        3,
        "legs from before the kill kept: {full}"
    );
    assert_eq!(
        get_json(addr, "/api/v1/records/1")["records"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    relay.terminate();
}

#[test]
fn the_cluster_posts_close_the_leg_seen_only_through_an_update() {
    for ending in ["03a_callLegEnd", "03b_callEnd"] {
        let tmp = common::tempdir(&format!("cms-cluster-{ending}"));
        let relay = start(&tmp.join("relay.db"), &[], &[]);
        let addr = relay.http.unwrap();
        for name in [
            "01_callStart",
            "02_callLegUpdate_without_prior_callLegStart",
            ending,
        ] {
            let body = std::fs::read(cms(&format!("mividas_cms3_cluster__{name}.xml"))).unwrap();
            assert_eq!(post(addr, &body), 200, "{name}");
        }
        if ending == "03b_callEnd" {
            let calls = calls(addr);
            assert_eq!(calls.len(), 1, "{ending}");
            let full = get_json(
                addr,
                &format!("/api/v1/calls/{}", calls[0]["id"].as_str().unwrap()),
            );
            assert_eq!(full["legs"].as_array().unwrap().len(), 1, "{full}");
            assert_eq!(full["complete"], true);
        }
        relay.terminate();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_generated_certificates_and_basic_auth() {
    use cdr_sinks::webhook::{WebhookConfig, WebhookSink};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let tmp = common::tempdir("cms-tls");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (cert_file, key_file, ca_file) = (
        tmp.join("cert.pem"),
        tmp.join("key.pem"),
        tmp.join("ca.pem"),
    );
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let db = tmp.join("relay.db");
    let relay = start(
        &db,
        &[
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
        &[("CDR_RECEIVER_BASIC_AUTH", "cms:pa55")],
    );
    let port = relay.http.unwrap().port();
    let body = std::fs::read(cms("ciscocms_cdr-receiver__callStart_single.xml")).unwrap();
    let client = |auth: Option<&str>| {
        WebhookSink::new(&WebhookConfig {
            url: format!("https://localhost:{port}/cdr"),
            authorization: auth.map(str::to_owned),
            ca_file: Some(ca_file.clone()),
            ..WebhookConfig::default()
        })
        .unwrap()
    };
    // "cms:pa55" in base64.
    let good = client(Some("Basic Y21zOnBhNTU="));
    good.send("1", &body, 0).await.unwrap();
    let refused = client(Some("Basic d3Jvbmc6d3Jvbmc="))
        .send("2", &body, 0)
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // Without the CA the certificate is not trusted.
    let untrusted = WebhookSink::new(&WebhookConfig {
        url: format!("https://localhost:{port}/cdr"),
        ..WebhookConfig::default()
    })
    .unwrap()
    .send("3", &body, 0)
    .await;
    assert!(untrusted.is_err());
    relay.terminate();
    let kept: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM source_records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 1);
}

#[test]
fn two_relays_chain_through_the_http_cdr_sink() {
    let tmp = common::tempdir("cms-chain");
    let receiver = start(&tmp.join("receiver.db"), &[], &[]);
    let addr = receiver.http.unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/smdr/ccbc_rw180105_day_34fields.txt");
    let want = common::expected_calls(&std::fs::read(&fixture).unwrap()).len();
    let sender_db = tmp.join("sender.db");
    // Twice: the second replay sends nothing new, and nothing the receiver took is doubled.
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smdr-relay"))
            .args(["--replay", fixture.to_str().unwrap(), "--sink", "http-cdr"])
            .args(["--http", "off", "--db", sender_db.to_str().unwrap()])
            .env("HTTP_CDR_URLS", format!("http://{addr}/cdr"))
            .env_remove("SMDR_WEBHOOK_URL")
            .env_remove("WEBHOOK_URL")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let c = rusqlite::Connection::open(&sender_db).unwrap();
    let sent: i64 = c
        .query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))
        .unwrap();
    let delivered: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM deliveries WHERE sink = 'http-cdr' AND state = 'delivered'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(delivered, sent);
    assert!(sent as usize >= want);
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let n = get_json(addr, "/api/v1/calls?per_page=1")["total"]
            .as_u64()
            .unwrap();
        if n as i64 >= sent || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(got as i64, sent, "one CMS call per relayed call");
    let first = &calls(addr)[0];
    assert_eq!(first["source"], "cms");
    receiver.terminate();
}

#[test]
fn a_forged_record_index_hides_no_later_genuine_post() {
    let tmp = common::tempdir("cms-forged-index");
    let relay = start(&tmp.join("relay.db"), &[], &[]);
    let addr = relay.http.unwrap();
    let posts = meeting_posts();
    let forged = br#"<?xml version="1.0"?><records session="5552fc55-8d82-4963-8f99-d5a0be6e2f92"><record type="callStart" time="2017-04-24T12:00:00Z" recordIndex="99999999" correlatorIndex="0"><call id="forged"><name>x</name></call></record></records>"#;
    assert_eq!(post(addr, &posts[0]), 200);
    assert_eq!(post(addr, forged), 200);
    for (i, body) in posts.iter().enumerate().skip(1) {
        assert_eq!(post(addr, body), 200, "post {:02}", i + 1);
    }
    let page = get_json(addr, "/api/v1/records/1");
    let mut indexes: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["@recordIndex"].as_str().unwrap())
        .collect();
    indexes.sort_unstable();
    assert_eq!(
        indexes,
        [
            "3141", "3142", "3143", "3155", "3156", "3162", "3551", "3552", "3553", "3554",
            "99999999"
        ],
        "every genuine record kept once, after the forged one: {page}"
    );
    let calls = calls(addr);
    let meeting = calls
        .iter()
        .find(|c| c["call_id"] == "f54bfbc3-c11e-47a6-a918-6a308018ac1d")
        .unwrap_or_else(|| panic!("{calls:?}"));
    let full = get_json(
        addr,
        &format!("/api/v1/calls/{}", meeting["id"].as_str().unwrap()),
    );
    assert_eq!(full["complete"], true, "{full}");
    assert_eq!(full["legs"].as_array().unwrap().len(), 3, "{full}");
    let status = relay.terminate();
    assert!(status.success(), "{status}");
}
