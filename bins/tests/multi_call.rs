//! The multi-call `cdr-relay` (what the Debian package ships, the relays' names being links to
//! it): invoked through a link named after a relay it is that relay, `--help`, `--version`,
//! errors and all; `cdr-relay RELAY ARGS...` is the same; any other name gives the usage and
//! exit code 2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::tempdir;

const RELAYS: [&str; 5] = [
    "smdr-relay",
    "ami-relay",
    "list-relay",
    "cdr-receiver",
    "nats-relay",
];

/// The multi-call binary Cargo built for this test.
fn cdr_relay() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cdr-relay"))
}

/// A symbolic link named `name` in `dir` to the multi-call binary, as the package installs it.
fn link(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::os::unix::fs::symlink(cdr_relay(), &path).unwrap();
    path
}

/// Runs `program ARGS` in a clean environment (nothing of the test's `CDR_RELAY_*` or `SMDR_*`).
fn run(program: &Path, args: &[&str], cwd: &Path) -> Output {
    Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `RELAY --version` of the relay's own binary: what every other way of naming it must print.
fn own_version(relay: &str, cwd: &Path) -> String {
    let own = match relay {
        "smdr-relay" => env!("CARGO_BIN_EXE_smdr-relay"),
        "ami-relay" => env!("CARGO_BIN_EXE_ami-relay"),
        "list-relay" => env!("CARGO_BIN_EXE_list-relay"),
        "cdr-receiver" => env!("CARGO_BIN_EXE_cdr-receiver"),
        "nats-relay" => env!("CARGO_BIN_EXE_nats-relay"),
        other => panic!("no relay {other}"),
    };
    let out = run(Path::new(own), &["--version"], cwd);
    assert!(out.status.success(), "{relay} --version: {out:?}");
    text(&out.stdout)
}

#[test]
fn a_link_named_after_a_relay_is_that_relay() {
    let dir = tempdir("multi-call-link");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for relay in RELAYS {
        let path = link(&bin, relay);
        let out = run(&path, &["--version"], &dir);
        assert!(out.status.success(), "{relay} --version: {out:?}");
        let version = text(&out.stdout);
        assert!(
            version.starts_with(&format!("{relay} {} (commit ", env!("CARGO_PKG_VERSION"))),
            "{version}"
        );
        assert_eq!(version, own_version(relay, &dir));

        let out = run(&path, &["--help"], &dir);
        assert!(out.status.success(), "{relay} --help: {out:?}");
        let help = text(&out.stdout);
        assert!(
            help.lines()
                .any(|l| l == format!("Usage: {relay} [OPTIONS]")),
            "{relay} --help:\n{help}"
        );
        assert!(!help.contains("cdr-relay RELAY"), "{help}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_link_runs_the_relay_with_its_arguments_as_the_relays_own_binary_does() {
    let dir = tempdir("multi-call-config");
    let link = link(&dir, "smdr-relay");
    let config = dir.join("smdr.toml");
    std::fs::write(
        &config,
        "smdr_listen = \"127.0.0.1:5199\"\nhttp = \"127.0.0.1:8199\"\nsite = \"pbx-north\"\n\
         db = \"calls.db\"\n",
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap(), "--check-config"];
    let via_link = run(&link, &args, &dir);
    let own = run(Path::new(env!("CARGO_BIN_EXE_smdr-relay")), &args, &dir);
    assert!(via_link.status.success(), "{via_link:?}");
    let described = text(&via_link.stderr);
    assert!(described.contains("127.0.0.1:5199"), "{described}");
    assert!(described.contains("pbx-north"), "{described}");
    assert!(described.ends_with("configuration ok\n"), "{described}");
    assert_eq!(described, text(&own.stderr));

    // A bad flag: clap's error and exit code, naming the relay as invoked.
    let out = run(&link, &["--no-such-flag"], &dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("'--no-such-flag'"), "{err}");
    assert!(err.contains("Usage: smdr-relay [OPTIONS]"), "{err}");
    // A bad setting: the relay's own error line.
    let out = run(&link, &["--smdr-listen", "not-an-address"], &dir);
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("not-an-address"), "{out:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_first_argument_names_the_relay_when_the_program_is_cdr_relay() {
    let dir = tempdir("multi-call-arg");
    for relay in RELAYS {
        let out = run(&cdr_relay(), &[relay, "--version"], &dir);
        assert!(out.status.success(), "cdr-relay {relay} --version: {out:?}");
        assert_eq!(text(&out.stdout), own_version(relay, &dir));
    }
    let out = run(&cdr_relay(), &["ami-relay", "--help"], &dir);
    assert!(out.status.success(), "{out:?}");
    let help = text(&out.stdout);
    assert!(
        help.lines().any(|l| l == "Usage: ami-relay [OPTIONS]"),
        "{help}"
    );
    // The relay's name is dropped before its parser sees the rest: a second name is an error.
    let out = run(&cdr_relay(), &["list-relay", "list-relay"], &dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("Usage: list-relay"), "{out:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn any_other_name_gives_the_usage_and_exit_code_2() {
    let dir = tempdir("multi-call-usage");
    let usage_lists_every_relay = |stream: &str| {
        for relay in RELAYS {
            assert!(
                stream.lines().any(|l| l.trim_start().starts_with(relay)),
                "{relay} not in the usage:\n{stream}"
            );
        }
    };

    // No relay named at all.
    let out = run(&cdr_relay(), &[], &dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("Usage: cdr-relay RELAY [ARGS]..."), "{err}");
    usage_lists_every_relay(&err);

    // An unknown first argument, a flag, a name that only resembles one.
    for arg in ["smdr", "--config", "SMDR-RELAY", "cdr-relay"] {
        let out = run(&cdr_relay(), &[arg, "--version"], &dir);
        assert_eq!(out.status.code(), Some(2), "cdr-relay {arg}: {out:?}");
        assert!(out.stdout.is_empty(), "cdr-relay {arg}: {out:?}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with(&format!("cdr-relay: no relay named {arg:?}")),
            "{err}"
        );
        usage_lists_every_relay(&err);
    }

    // A link under another name: the usage, under that name.
    let other = link(&dir, "call-relay");
    let out = run(&other, &["--check-config"], &dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("Usage: call-relay RELAY [ARGS]..."), "{err}");
    usage_lists_every_relay(&err);

    // Asked for, the usage and the version of cdr-relay itself succeed, on standard output.
    let out = run(&cdr_relay(), &["--help"], &dir);
    assert!(out.status.success(), "{out:?}");
    usage_lists_every_relay(&text(&out.stdout));
    let out = run(&cdr_relay(), &["--version"], &dir);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).starts_with(&format!("cdr-relay {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{out:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
