//! Runtime glue for the cdr-relay binaries (`smdr-relay`, `ami-relay`, `list-relay`,
//! `cdr-receiver`, `nats-relay`): sockets, files, databases, settings and a web page around the
//! sans-IO feeds of `call_assembler::feed` and the outbox and delivery engine of `cdr_sinks`.
//! The binaries in `src/bin/` only call their relay's function in [`entry`] (which parses the
//! arguments and calls [`main_with`]); `cdr-relay`, the five in one, calls [`entry::multi_call`].
//!
//! By role, each depending only on those after it:
//! * [`entry`]: each relay's `main` (parse its arguments, resolve, [`main_with`]) and the
//!   multi-call binary's choice of relay by the name it is invoked as;
//! * [`run`]: the driver loop (select over the source, the feed's deadline and shutdown; group,
//!   commit, acknowledge, wake the workers), building the sinks and their workers, progress;
//! * [`web`]: the built-in web server (page, JSON API, `/metrics`, `/healthz`, `/readyz`, the
//!   CMS receiver's `POST /cdr`), reading the store through `cdr_sinks::store`;
//! * [`settings`]: one `Config` from flags, environment, the legacy `SMDR_*` names and a TOML file;
//!   `--check-config`;
//! * [`sources`]: TCP in both directions, the AMI client, a Redis list, HTTP posts, CSV files,
//!   SQL tables, replayed files, recordings; one reconnect policy;
//! * [`ops`]: metrics, logging, Sentry, signals.
//!
//! What it does not do: parse wire formats or assemble calls (the lower crates), or deliver to a
//! sink (`cdr-sinks`).
#![deny(missing_docs)]

pub mod entry;
pub mod ops;
pub mod run;
pub mod settings;
pub mod sources;
pub mod web;

use std::process::ExitCode;

/// What `--version` prints after the binary's name: the package version and the git commit it
/// was built from (`0.1.0 (commit 1a2b3c4d5e6f)`; `unknown` when built outside a git checkout
/// without `CDR_RELAY_GIT_COMMIT`, see `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CDR_RELAY_GIT_COMMIT"),
    ")"
);

/// The whole life of a relay binary: resolve the configuration (`resolve`), print it and stop
/// for `--check-config`, else set up logging and run until a signal (or the end of a replay).
/// Errors are printed as `NAME: error` and give a failing exit code.
pub fn main_with(
    name: &str,
    check_config: bool,
    resolve: impl FnOnce() -> Result<settings::Config, settings::ConfigError>,
) -> ExitCode {
    match try_main(check_config, resolve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--hash-password`: reads a password from standard input (its first line, without the line
/// end), prints its argon2id PHC string for `CDR_RELAY_USERS` and exits; the password itself
/// is never printed.
pub fn hash_password_main() -> ExitCode {
    use std::io::{BufRead as _, IsTerminal as _, Read as _};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (shown as you type): ");
    }
    let mut line = Vec::new();
    if let Err(e) = stdin.lock().take(4096).read_until(b'\n', &mut line) {
        eprintln!("--hash-password: reading standard input: {e}");
        return ExitCode::FAILURE;
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    if line.is_empty() {
        eprintln!("--hash-password: no password on standard input");
        return ExitCode::FAILURE;
    }
    match web::auth::hash_password(&line) {
        Ok(phc) => {
            use std::io::Write as _;
            // The hash is the command's output (for a script or a config file); stdout it is.
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{phc}").and_then(|()| out.flush()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("--hash-password: {e}");
            ExitCode::FAILURE
        }
    }
}

fn try_main(
    check_config: bool,
    resolve: impl FnOnce() -> Result<settings::Config, settings::ConfigError>,
) -> anyhow::Result<()> {
    let config = resolve()?;
    if check_config {
        eprint!("{}", config.describe());
        eprintln!("configuration ok");
        return Ok(());
    }
    if let Some(command) = &config.admin {
        return run::admin::run_admin_and_print(&config, command);
    }
    ops::logging::init(config.json_logs, config.sentry_dsn.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shutdown = ops::signals::shutdown_on_signal()?;
        let summary = run::run(config, shutdown).await?;
        tracing::info!(
            records = summary.counts.records,
            bad_input = summary.counts.bad_lines,
            complete = summary.counts.complete,
            incomplete = summary.counts.incomplete,
            stored = summary.tally.stored,
            already_stored = summary.tally.already_stored,
            "stopped"
        );
        for s in &summary.sinks {
            tracing::info!(
                sink = %s.sink,
                delivered = s.delivered,
                pending = s.pending,
                dead = s.dead,
                "deliveries"
            );
        }
        Ok(())
    })
}
