//! The README's run command as a new user tries it: no configuration at all, then
//! `cat fixture.txt > /dev/tcp/127.0.0.1/5100`, then the web page.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn embedded_defaults_listen_store_and_show_calls() {
    // The defaults use fixed ports; if something else holds them here, say so and stop.
    for port in [5100, 8080] {
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_err() {
            eprintln!("SKIPPED: port {port} is in use on this machine");
            return;
        }
    }
    let dir = tempdir("defaults");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smdr-relay"))
        .current_dir(&dir)
        .env_remove("SMDR_ADDR")
        .env_remove("SMDR_LISTEN")
        .env_remove("SMDR_WEBHOOK_URL")
        .env_remove("CDR_RELAY_DB")
        .env_remove("CDR_RELAY_HTTP")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pbx = loop {
        if let Ok(s) = TcpStream::connect("127.0.0.1:5100") {
            break s;
        }
        assert!(Instant::now() < deadline, "relay never listened on 5100");
        std::thread::sleep(Duration::from_millis(50));
    };
    pbx.write_all(&std::fs::read(fixture("ccbc_rw180105_day_34fields.txt")).unwrap())
        .unwrap();
    drop(pbx);
    let api = loop {
        let body = http_get("127.0.0.1:8080", "/api/v1/calls?per_page=1").unwrap_or_default();
        if body.contains("\"total\":305") || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(api.contains("\"total\":305"), "{api}");
    let page = http_get("127.0.0.1:8080", "/").unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    // The newest call of the day file is on the first page.
    assert!(page.contains("7782549947"), "{page}");
    assert!(dir.join("cdr-relay.db").exists());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}
