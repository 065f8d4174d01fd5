//! Secrets never printed: every binary run with secrets in its environment (passwords in URLs,
//! token-like query values, keys, DSNs) shows none of them in `--help` nor in `--check-config`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};

/// Each secret holds a marker `ZKQnn` that must never come out.
const SECRETS: &[(&str, &str)] = &[
    (
        "WEBHOOK_URL",
        "https://relay:ZKQ01@hook.example/in?site=a&token=ZKQ02",
    ),
    ("WEBHOOK_KEY", "Bearer ZKQ03"),
    // base64 of "ZKQ04 signing key!"
    ("WEBHOOK_SECRET", "whsec_WktRMDQgc2lnbmluZyBrZXkh"),
    ("REDIS_URL", "redis://:ZKQ05@127.0.0.1:6379/0"),
    (
        "HTTP_CDR_URLS",
        "https://cms:ZKQ06@cdr.example/cdr?apikey=ZKQ07,http://127.0.0.1:9/cdr?sig=ZKQ08",
    ),
    ("HTTP_CDR_AUTHORIZATION", "Bearer ZKQ09"),
    ("SENTRY_DSN", "http://ZKQ10@127.0.0.1:9/1"),
    (
        "SENTRY_CRON_URL",
        "https://s.example/api/1/cron/relay/ZKQ11/?auth=ZKQ12",
    ),
    ("CDR_RECEIVER_TOKEN", "ZKQ13"),
    ("CDR_RECEIVER_BASIC_AUTH", "cms:ZKQ14"),
    ("AMI_PASSWORD", "ZKQ15"),
    ("DB_PASSWORD", "ZKQ16"),
    ("DIALLER_REDIS_URL", "redis://u:ZKQ17@127.0.0.1:6379/0"),
];

/// The output (stdout and stderr) of `bin` with `args`, the secrets and `envs` set (an empty
/// value unsets the variable).
fn run(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("CDR_RELAY_CONFIG")
        .envs(SECRETS.iter().copied());
    for (k, v) in envs {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn assert_no_secret(what: &str, text: &str) {
    for marker in ["ZKQ", "WktRMDQ"] {
        assert!(!text.contains(marker), "{what} shows a secret:\n{text}");
    }
}

#[test]
fn no_binary_shows_a_secret_in_help_or_check_config() {
    let tmp = std::env::temp_dir().join(format!("cdr-relay-secrets-{}.db", std::process::id()));
    let db = tmp.to_str().unwrap();
    let bins: [(&str, &[(&str, &str)]); 4] = [
        (
            env!("CARGO_BIN_EXE_smdr-relay"),
            &[("SMDR_LISTEN", "127.0.0.1:0")],
        ),
        (
            env!("CARGO_BIN_EXE_ami-relay"),
            &[("AMI_HOST", "127.0.0.1"), ("AMI_USERNAME", "relay")],
        ),
        (
            env!("CARGO_BIN_EXE_cdr-receiver"),
            &[("CDR_RECEIVER_BASIC_AUTH", "")],
        ),
        (env!("CARGO_BIN_EXE_list-relay"), &[]),
    ];
    for (bin, envs) in bins {
        let (ok, help) = run(bin, &["--help"], envs);
        assert!(ok, "{bin} --help:\n{help}");
        assert!(help.contains("WEBHOOK_URL"), "{bin} --help:\n{help}");
        assert_no_secret(&format!("{bin} --help"), &help);

        let sinks = ["--sink", "webhook", "--sink", "http-cdr", "--sink", "redis"];
        let mut args = vec!["--check-config", "--db", db];
        args.extend(sinks);
        let (ok, described) = run(bin, &args, envs);
        assert!(ok, "{bin} --check-config:\n{described}");
        assert!(
            described.contains("webhook: https://relay:***@hook.example/in?site=a&token=***"),
            "{bin} --check-config:\n{described}"
        );
        assert!(
            described.contains("cms:***@cdr.example/cdr?apikey=***"),
            "{bin} --check-config:\n{described}"
        );
        assert_no_secret(&format!("{bin} --check-config"), &described);
    }
    let _ = std::fs::remove_file(&tmp);
}
