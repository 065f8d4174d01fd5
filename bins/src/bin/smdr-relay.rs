//! `smdr-relay`: Avaya IP Office SMDR in, completed calls out. See `--help`.

use std::process::ExitCode;

use cdr_relay::config::{Args, Config};
use clap::Parser;

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smdr-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let config = Config::resolve(&args)?;
    if args.check_config {
        eprint!("{}", config.describe());
        eprintln!("configuration ok");
        return Ok(ExitCode::SUCCESS);
    }
    cdr_relay::logging::init(config.json_logs, config.sentry_dsn.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shutdown = cdr_relay::signals::shutdown_on_signal()?;
        let summary = cdr_relay::runtime::run(config, shutdown).await?;
        tracing::info!(
            records = summary.counts.records,
            bad_lines = summary.counts.bad_lines,
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
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
