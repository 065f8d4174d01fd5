//! `smdr-relay`: Avaya IP Office SMDR in, completed calls out.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use call_assembler::SmdrAssemblerConfig;
use cdr_relay::replay::{BadLine, replay_smdr};
use cdr_relay::sinks::{Sink, SinkSpec};
use clap::Parser;

/// Collects Avaya IP Office SMDR records, assembles the records of each call into one completed
/// call, and delivers every call to the chosen sinks.
///
/// Today it replays SMDR from a file or standard input (`--replay`); the live TCP relay comes
/// next. Bad lines are reported on stderr with their line number, kept in `--rejects` if given,
/// and never stop the run. Calls still open at the end of the input are delivered marked
/// `"complete": false`.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Read SMDR from this file (`-` for standard input) instead of a PBX, then exit.
    #[arg(long, value_name = "FILE")]
    replay: PathBuf,

    /// Where calls go, repeatable: `jsonl:PATH` (one JSON call per line, appended; `jsonl:-` is
    /// standard output). Default: `jsonl:-`.
    #[arg(long = "sink", value_name = "KIND[:ARG]")]
    sinks: Vec<SinkSpec>,

    /// Append every rejected line, as received, to this file.
    #[arg(long, value_name = "FILE")]
    rejects: Option<PathBuf>,

    /// Site (PBX) name, part of every call and of its stable id.
    #[arg(long, env = "SMDR_SITE", default_value = "")]
    site: String,

    /// Seconds a call may wait for its next record before it is delivered incomplete.
    #[arg(long, env = "SMDR_IDLE_TIMEOUT", default_value_t = 4 * 3600)]
    idle_timeout: u64,
}

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smdr-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let specs = if args.sinks.is_empty() {
        vec![SinkSpec::Jsonl(None)]
    } else {
        args.sinks.clone()
    };
    let mut sinks = specs
        .iter()
        .map(|s| Sink::open(s).map_err(|e| anyhow::anyhow!("opening sink {s:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut rejects = match &args.rejects {
        Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
        None => None,
    };
    let input: Box<dyn Read> = if args.replay.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(
            File::open(&args.replay)
                .map_err(|e| anyhow::anyhow!("{}: {e}", args.replay.display()))?,
        )
    };
    let config = SmdrAssemblerConfig {
        site: args.site.clone(),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        ..SmdrAssemblerConfig::default()
    };
    let mut reject_error = None;
    let report = replay_smdr(
        input,
        config,
        |call| {
            for sink in &mut sinks {
                sink.send(&call)
                    .map_err(|e| anyhow::anyhow!("sink {}: {e}", sink.name()))?;
            }
            Ok(())
        },
        |bad: BadLine| {
            eprintln!(
                "line {}: {}: {}",
                bad.number,
                bad.error,
                String::from_utf8_lossy(&bad.line)
            );
            if let Some(f) = rejects.as_mut() {
                let mut line = bad.line;
                line.extend_from_slice(b"\n");
                if let Err(e) = f.write_all(&line) {
                    reject_error.get_or_insert(e);
                }
            }
        },
    )?;
    if let Some(e) = reject_error {
        return Err(anyhow::anyhow!("writing rejects: {e}"));
    }
    eprintln!(
        "smdr-relay: {} lines, {} records, {} bad, {} complete calls, {} incomplete",
        report.lines, report.records, report.bad_lines, report.complete, report.incomplete
    );
    Ok(())
}
