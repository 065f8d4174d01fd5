//! Runtime glue for the cdr-relay binaries (`smdr-relay`, `ami-relay`, `list-relay`, `cdr-receiver`): configuration ([`settings`]), sources ([`sources`])
//! (TCP in both directions, the AMI client, a Redis list, HTTP posts, replay), driving the feeds of `call_assembler::feed` into the outbox, delivery workers, the built-in web server,
//! metrics, logging, Sentry and signals. The binaries in `src/bin/` only parse arguments and call
//! into this library.
//!
//! What it does not do: parse wire formats or assemble calls (the lower crates), or deliver to a
//! sink (`cdr-sinks`).
#![deny(missing_docs)]

pub mod logging;
pub mod metrics;
pub mod progress;
pub mod runtime;
pub mod sentry;
pub mod sentry_events;
pub mod settings;
pub mod signals;
pub mod sinks;
pub mod sources;
pub mod web;

// The old paths of the settings and the sources, kept while other branches still name them (the integrator removes
// these once nothing does).
pub use settings as config;
pub use sources::cel_csv as csv_source;
pub use sources::cel_db as db_source;
pub use sources::redis_list as redis_source;
pub use sources::tcp as source;
pub use sources::{receiver, recordings, recordings_db};

use std::process::ExitCode;

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
    logging::init(config.json_logs, config.sentry_dsn.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shutdown = signals::shutdown_on_signal()?;
        let summary = runtime::run(config, shutdown).await?;
        tracing::info!(
            records = summary.counts.records,
            bad_input = summary.counts.bad_lines,
            complete = summary.counts.complete,
            incomplete = summary.counts.incomplete,
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
