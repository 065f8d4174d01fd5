//! The smallest complete embedder: an SMDR capture read from a file as a byte stream, the SMDR
//! feed, every commit unit in an [`Outbox`] at the given path, and delivery through the engine
//! to a JSONL sink; it exits once every call is delivered.
//!
//! ```text
//! cargo run --release -p cdr-sinks --example embed_smdr -- INPUT OUTPUT.jsonl DATABASE
//! ```
//!
//! Its output equals `smdr-relay --replay INPUT --sink jsonl:OUTPUT.jsonl`, call for call. Run
//! again on the same database (after it finished, or after it was killed at any point), it goes on
//! where its last commit ended and sends nothing twice:
//!
//! * the file position is saved in the same commit as the calls and journal it produced, so a
//!   restart reads on from there, with the open calls rebuilt from the journal
//!   (`SmdrFeed::restore`);
//! * the JSONL sink flushes each line before the engine records it delivered, and the engine
//!   records a round's outcomes after the round: lines written after the last recorded outcome
//!   are cut from `OUTPUT.jsonl` at start (the engine sends them again), so the file holds each
//!   delivered call once. That is this file sink's way of dropping a duplicate; a webhook
//!   receiver does the same by the call's id.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use call_assembler::SmdrAssemblerConfig;
use call_assembler::feed::{Feed, SmdrFeed};
use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::engine::{SinkStats, SinkWorker, now_ms, run_worker};
use cdr_sinks::jsonl::JsonlSink;
use cdr_sinks::outbox::Outbox;
use tokio::sync::{Notify, watch};

/// The feed's name in the outbox (its journal and states): the relay's, so that the ids are too.
const SOURCE: &str = "smdr";
/// The one sink's name in the outbox.
const SINK: &str = "jsonl";
/// The state under which the input position is saved, with the calls read up to it.
const POSITION: &str = "embed_smdr/position";

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [input, output, db] = args.as_slice() else {
        eprintln!("usage: embed_smdr INPUT OUTPUT.jsonl DATABASE");
        return ExitCode::from(2);
    };
    match run(input, output, db) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed_smdr: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(input: &Path, output: &Path, db: &Path) -> Result<(), Box<dyn Error>> {
    let mut outbox = Outbox::open(db, &[SINK.to_owned()])?;

    // Restore: open calls from the journal, and where the input was read up to.
    let saved = outbox.restored(SOURCE, SmdrFeed::state_names(SOURCE))?;
    let mut feed = SmdrFeed::restore(
        SOURCE,
        // A capture file has no connection events: a restart-like record is a restart.
        SmdrAssemblerConfig::for_replay(),
        Instant::now(),
        &saved,
    );
    let mut position: u64 = match outbox.state(POSITION)? {
        Some(bytes) => String::from_utf8(bytes)?.parse()?,
        None => 0,
    };

    // The delivery engine, in the background: one worker for the JSONL sink.
    let delivered = outbox
        .counts()?
        .iter()
        .find(|c| c.sink == SINK)
        .map_or(0, |c| c.delivered);
    let out = keep_lines(output, delivered)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let wake = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let worker = SinkWorker {
        name: SINK.to_owned(),
        sink: JsonlSink::new(out),
        policy: RetryPolicy::default(),
        stats: Arc::new(SinkStats::default()),
    };
    let engine = runtime.spawn(run_worker(db.to_owned(), worker, wake.clone(), stopped));

    // Read, feed, commit (with the position the commit reaches), wake the engine. Only whole
    // lines go to the feed, so what a commit covers ends at a line.
    let mut file = File::open(input)?;
    file.seek(SeekFrom::Start(position))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = file.read(&mut buf)?;
        let end = n == 0;
        pending.extend_from_slice(buf.get(..n).unwrap_or_default());
        let whole = if end {
            pending.len()
        } else {
            match pending.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => continue,
            }
        };
        let lines: Vec<u8> = pending.drain(..whole).collect();
        position += lines.len() as u64;
        let now = Instant::now();
        if !lines.is_empty() {
            feed.handle_input(now, lines);
        }
        if end {
            // End of input: calls still open are flushed, as a replay does.
            feed.handle_end(now);
        }
        while let Some(event) = feed.poll_event() {
            eprintln!("embed_smdr: {event:?}");
        }
        let mut commit = feed.take_commit();
        commit
            .states
            .push((POSITION.to_owned(), position.to_string().into_bytes()));
        outbox.commit(&commit, now_ms())?;
        wake.notify_one();
        if end {
            break;
        }
    }

    // Wait until the engine has delivered (or given up on) every call, then stop it.
    while outbox.counts()?.iter().any(|c| c.pending > 0) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.send(true)?;
    runtime.block_on(engine)??;
    let counts = outbox.counts()?;
    for c in &counts {
        eprintln!(
            "embed_smdr: {}: {} delivered, {} dead",
            c.sink, c.delivered, c.dead
        );
    }
    Ok(())
}

/// Opens `path` for appending, first cutting it after its first `keep` lines: the lines the
/// engine recorded as delivered. Any line after them was written by a run killed before it
/// recorded them, and the engine sends those calls again.
fn keep_lines(path: &Path, keep: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut reader = BufReader::new(&file);
    let (mut lines, mut len, mut line) = (0u64, 0u64, Vec::new());
    while lines < keep {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        lines += 1;
        len += n as u64;
    }
    if lines < keep {
        return Err(std::io::Error::other(format!(
            "{} holds {lines} whole lines where {keep} calls were delivered to it",
            path.display()
        )));
    }
    file.set_len(len)?;
    Ok(file)
}
