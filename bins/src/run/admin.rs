//! The operator's commands on the database (`--requeue-dead SINK`, `--pause-sink SINK`,
//! `--resume-sink SINK`): run instead of the relay, on the same configuration, then exit. They
//! work on the database of a stopped relay or beside a running one (whose workers see the change
//! within seconds).

use std::io::Write as _;

use anyhow::Context as _;
use cdr_sinks::engine::now_ms;
use cdr_sinks::outbox::Outbox;

use crate::settings::{AdminCommand, Config};

/// Runs `command` on the database of `config` and returns the line that says what it did.
/// A sink neither configured nor in the database is an error naming the known ones.
pub fn run_admin(config: &Config, command: &AdminCommand) -> anyhow::Result<String> {
    if !config.db.exists() {
        anyhow::bail!("no database at {}", config.db.display());
    }
    let outbox = Outbox::open(&config.db, &[])
        .with_context(|| format!("opening {}", config.db.display()))?;
    let sink = match command {
        AdminCommand::RequeueDead(s) | AdminCommand::PauseSink(s) | AdminCommand::ResumeSink(s) => {
            s.as_str()
        }
    };
    let mut known = super::sinks::remote_sink_names(config);
    known.extend(outbox.known_sinks()?);
    known.sort();
    known.dedup();
    if !known.iter().any(|k| k == sink) {
        let list = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        anyhow::bail!("unknown sink {sink:?} (this relay's sinks: {list})");
    }
    Ok(match command {
        AdminCommand::RequeueDead(_) => {
            let n = outbox.requeue_dead(sink, None, now_ms())?;
            format!("{n} dead letters of {sink} re-queued")
        }
        AdminCommand::PauseSink(_) => {
            if outbox.pause_sink(sink, now_ms())? {
                format!("{sink} paused")
            } else {
                format!("{sink} was already paused")
            }
        }
        AdminCommand::ResumeSink(_) => {
            if outbox.resume_sink(sink)? {
                format!("{sink} resumed")
            } else {
                format!("{sink} was not paused")
            }
        }
    })
}

/// [`run_admin`], its line printed on standard output.
pub fn run_admin_and_print(config: &Config, command: &AdminCommand) -> anyhow::Result<()> {
    let line = run_admin(config, command)?;
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}
