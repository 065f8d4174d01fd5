//! Trains the zstd dictionary the call store compresses bodies with
//! (`cdr-sinks/src/calls-v1.zdict`, see `cdr_sinks::body`) from JSON Lines files of calls, and
//! prints how well it does on them beside zstd without a dictionary.
//!
//! The committed dictionary was made from the calls of the repository's captures:
//!
//! ```sh
//! cat fixtures/smdr/ccbc/*.txt > /tmp/smdr.txt
//! smdr-relay --replay /tmp/smdr.txt --http off --db /tmp/d1.db --sink jsonl:/tmp/smdr.jsonl
//! for d in fixtures/asterisk/*/; do
//!   ami-relay --replay $d/ami.raw --http off --db /tmp/d2-$(basename $d).db \
//!     --sink jsonl:/tmp/ami-$(basename $d).jsonl
//! done
//! cargo run --release -p cdr-benches --bin train_dict -- \
//!   cdr-sinks/src/calls-v1.zdict /tmp/smdr.jsonl /tmp/ami-*.jsonl
//! ```
//!
//! A new dictionary must go to a new file with a new id: bodies already stored name the one
//! they were written with.

#![allow(
    clippy::print_stdout,
    reason = "a tool binary: the report goes to standard output"
)]

use std::io::BufRead as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Trains the call store's zstd dictionary from JSON Lines files of calls")]
struct Args {
    /// Where the dictionary goes.
    out: PathBuf,
    /// JSON Lines files of calls (one call per line).
    #[arg(required = true)]
    samples: Vec<PathBuf>,
    /// Dictionary size in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    size: usize,
    /// zstd level for the comparison.
    #[arg(long, default_value_t = 3)]
    level: i32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut samples: Vec<Vec<u8>> = Vec::new();
    for p in &args.samples {
        let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
        for line in std::io::BufReader::new(f).split(b'\n') {
            let line = line?;
            if !line.is_empty() {
                samples.push(line);
            }
        }
    }
    if samples.len() < 100 {
        bail!("{} samples: too few to train on", samples.len());
    }
    let dict = zstd::dict::from_samples(&samples, args.size)?;
    std::fs::write(&args.out, &dict)?;
    let json: usize = samples.iter().map(Vec::len).sum();
    let plain: usize = samples
        .iter()
        .map(|s| zstd::bulk::compress(s, args.level).map(|c| c.len()))
        .sum::<Result<_, _>>()?;
    let mut with = zstd::bulk::Compressor::with_dictionary(args.level, &dict)?;
    let mut dicted = 0usize;
    for s in &samples {
        dicted += with.compress(s)?.len();
    }
    let n = samples.len();
    println!(
        "{n} calls, {} B dictionary -> {}: JSON {} B/call, zstd {} B/call, zstd + dictionary {} B/call",
        dict.len(),
        args.out.display(),
        json / n,
        plain / n,
        dicted / n
    );
    Ok(())
}
