//! The Debian package as an operator installs it: unpacked into a throwaway root, its
//! `smdr-relay` started the way its unit starts it (the unit's ExecStart, `/usr/bin/smdr-relay`,
//! a link to the multi-call `cdr-relay`; the packaged example settings with the ports an
//! operator would set, a state directory as systemd gives it, a clean environment), fed a
//! captured SMDR stream on loopback: the calls are in its store.
//!
//! The package is the newest `target/debian/cdr-relay_*.deb` (`scripts/package.sh` builds it)
//! or `$CDR_RELAY_DEB`. Without one the test says so and passes, unless
//! `CDR_RELAY_REQUIRE_PACKAGE=1` (CI sets it after building the package).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cdr_sinks::store::{CallFilter, PageRequest, StoreReader};
use common::{Relay, expected_calls, fixture, http_get, tempdir};

/// The package to test: `$CDR_RELAY_DEB`, else the newest in the target directory's `debian/`.
fn find_package() -> Option<PathBuf> {
    if let Some(deb) = std::env::var_os("CDR_RELAY_DEB").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(deb));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let mut debs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(target.join("debian"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cdr-relay_") && n.ends_with(".deb"))
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    debs.sort();
    debs.pop().map(|(_, p)| p)
}

/// The unit's `KEY=` values (the last one of each key).
fn unit_settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The operator's edit of the example: `key = old` becomes `key = new`, the line there first.
fn set_key(text: &str, line: &str, replacement: &str) -> String {
    assert!(
        text.lines().any(|l| l == line),
        "the packaged example has no line {line:?}:\n{text}"
    );
    text.lines()
        .map(|l| if l == line { replacement } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn the_packaged_smdr_relay_takes_a_capture_into_its_store() {
    let Some(deb) = find_package() else {
        assert!(
            std::env::var("CDR_RELAY_REQUIRE_PACKAGE").as_deref() != Ok("1"),
            "CDR_RELAY_REQUIRE_PACKAGE=1 but there is no target/debian/cdr-relay_*.deb \
             (scripts/package.sh builds it) and no CDR_RELAY_DEB"
        );
        eprintln!(
            "SKIPPED: no Debian package in target/debian (scripts/package.sh builds one; \
             CDR_RELAY_REQUIRE_PACKAGE=1 makes its absence a failure)"
        );
        return;
    };
    let dir = tempdir("package");
    let root = dir.join("root");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .expect("dpkg-deb (Debian's package tool) runs");
    assert!(status.success(), "dpkg-deb -x {}", deb.display());
    let in_root = |path: &str| root.join(path.trim_start_matches('/'));

    // The unit says how it runs: ExecStart's binary and arguments (paths into the unpacked
    // tree), its state directory (systemd's STATE_DIRECTORY) and working directory.
    let unit = std::fs::read_to_string(in_root("/usr/lib/systemd/system/smdr-relay.service"))
        .expect("the package has smdr-relay.service");
    let unit = unit_settings(&unit);
    let exec: Vec<&str> = unit["ExecStart"].split_whitespace().collect();
    let (bin, args) = exec.split_first().unwrap();
    assert_eq!(*bin, "/usr/bin/smdr-relay");
    // The package's one binary is cdr-relay; the relay's name is a link to it, which cdr-relay
    // follows by the name it is invoked as (the last part of ExecStart's path).
    assert_eq!(
        std::fs::read_link(in_root(bin)).expect("/usr/bin/smdr-relay is a link"),
        Path::new("cdr-relay")
    );
    assert!(in_root("/usr/bin/cdr-relay").is_file());
    assert_eq!(unit["StateDirectory"], "cdr-relay/smdr-relay");
    let args: Vec<PathBuf> = args
        .iter()
        .map(|a| {
            if a.starts_with('/') {
                in_root(a)
            } else {
                PathBuf::from(a)
            }
        })
        .collect();
    let config = args
        .iter()
        .find(|a| a.extension().is_some_and(|e| e == "toml"))
        .expect("ExecStart names the settings file");
    assert_eq!(config, &in_root("/etc/cdr-relay/smdr-relay.toml"));

    // What an operator edits in the example: the PBX's port and the web page's port (free
    // loopback ones here) and the PBX's zone.
    let example = std::fs::read_to_string(config).unwrap();
    let edited = set_key(
        &example,
        "smdr_listen = \"0.0.0.0:5100\"",
        "smdr_listen = \"127.0.0.1:0\"",
    );
    let edited = set_key(
        &edited,
        "http = \"127.0.0.1:8080\"",
        "http = \"127.0.0.1:0\"",
    );
    let edited = set_key(&edited, "# pbx_tz = \"Europe/London\"", "pbx_tz = \"UTC\"");
    std::fs::write(config, edited).unwrap();

    // Started as systemd would: a clean environment with STATE_DIRECTORY and no CDR_RELAY_DB.
    // The working directory is another one, so the database's place shows which it follows.
    let state = dir.join("var/lib/cdr-relay/smdr-relay");
    let cwd = dir.join("cwd");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    let mut cmd = Command::new(in_root(bin));
    cmd.args(&args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("STATE_DIRECTORY", &state)
        .current_dir(&cwd);
    let relay = Relay::spawn(cmd, true, true);
    let (smdr, http) = (relay.smdr.unwrap(), relay.http.unwrap());

    // The PBX sends a day of SMDR.
    let bytes = std::fs::read(fixture("ccbc_rw180105_day_34fields.txt")).unwrap();
    let expected = expected_calls(&bytes);
    assert!(expected.len() > 100, "{} calls expected", expected.len());
    let mut pbx = TcpStream::connect(smdr).unwrap();
    pbx.write_all(&bytes).unwrap();
    drop(pbx);

    // The web page's API shows them all (and no more).
    let want_total = format!("\"total\":{}", expected.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    let api = loop {
        let body = http_get(http, "/api/v1/calls?per_page=1")
            .and_then(|r| r.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()))
            .unwrap_or_default();
        if body.contains(&want_total) || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(api.contains(&want_total), "{api}\n{}", relay.log());

    // SIGTERM, as systemctl stop sends it: a clean exit.
    let pid = relay.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut relay = relay;
    let status = relay.child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", relay.log());

    // The store is in the state directory, not the working directory, and holds exactly the
    // calls of the capture, each with the body the assembler gives it.
    assert!(
        !cwd.join("cdr-relay.db").exists(),
        "a database in the working directory"
    );
    let store = StoreReader::open(&state.join("cdr-relay.db")).unwrap();
    let listing = store
        .list_bodies(
            &CallFilter::default(),
            PageRequest::new(1, expected.len() as u64 + 10),
        )
        .unwrap();
    let got: BTreeMap<String, serde_json::Value> = listing
        .items
        .iter()
        .map(|c| (c.id.clone(), serde_json::from_slice(&c.body).unwrap()))
        .collect();
    let want: BTreeMap<String, serde_json::Value> = expected
        .into_iter()
        .map(|c| (c["id"].as_str().unwrap().to_owned(), c))
        .collect();
    assert_eq!(listing.total as usize, want.len());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (id, body) in &want {
        assert_eq!(&got[id], body, "call {id}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
