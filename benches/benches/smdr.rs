//! SMDR throughput: the typed parser and the assembler against a memchr line-count baseline, all
//! over the same bytes (every real fixture line, repeated to 32 MiB), so the ratios mean something.
//!
//! `cargo bench -p cdr-benches` measures (see BENCHMARKS.md). Under `cargo test --benches` divan
//! runs each bench once, and the corpus is a single copy of the fixtures so that the run takes
//! seconds even unoptimised; every bench checks its count against the corpus, so the smoke run
//! also checks that the benches measure what they claim to.
//!
//! The fixtures are read from the repository's `fixtures/smdr`, or from the folder in
//! `SMDR_FIXTURES`.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use call_assembler::{Output, SmdrAssembler, SmdrAssemblerConfig};
use cdr_benches::{CHUNK, corpus_bytes, fixture_dir};
use divan::counter::{BytesCount, ItemsCount};
use divan::{AllocProfiler, Bencher, black_box};
use smdr_parse::{Frame, Parsed, SmdrFramer, SmdrRecord, parse_smdr, skip_line};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

fn main() {
    report();
    divan::main();
}

/// Synthetic time between two records for the assembler (a busy PBX).
const RECORD_GAP: Duration = Duration::from_secs(10);

/// The bytes every bench runs over, and what is in them.
struct Corpus {
    bytes: Vec<u8>,
    /// `\n`-terminated lines.
    lines: usize,
    /// Lines that parse as records (the rest are blank or malformed and are skipped).
    records: usize,
    /// Comma-separated fields over all lines.
    fields: usize,
    /// Copies of the fixture set.
    copies: usize,
}

static CORPUS: LazyLock<Corpus> = LazyLock::new(load);

/// Every record of the corpus, owned, in order: the assembler's input.
static RECORDS: LazyLock<Vec<SmdrRecord<'static>>> = LazyLock::new(|| {
    let mut out = Vec::with_capacity(CORPUS.records);
    for_each_record(&CORPUS.bytes, |r| out.push(r.clone().into_owned()));
    out
});

fn txt_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
}

fn load() -> Corpus {
    let dir = fixture_dir("SMDR_FIXTURES", "smdr");
    let mut one = Vec::new();
    for path in txt_files(&dir)
        .into_iter()
        .chain(txt_files(&dir.join("ccbc")))
    {
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        one.extend_from_slice(&bytes);
        if !one.ends_with(b"\n") {
            one.push(b'\n');
        }
    }
    assert!(one.len() > 100_000, "fixtures missing in {}", dir.display());
    let (bytes, copies) = corpus_bytes(&one);
    let lines = memchr::memchr_iter(b'\n', &bytes).count();
    let mut records = 0;
    for_each_record(&bytes, |_| records += 1);
    let fields = split_fields(&bytes).0;
    Corpus {
        bytes,
        lines,
        records,
        fields,
        copies,
    }
}

/// The `parse_smdr` loop: parse from the front, advance by `consumed`, skip a bad line. The
/// record is lent to `f` (moving 600 bytes out of the `Result` would be measured too).
#[inline]
fn for_each_record<'b>(mut buf: &'b [u8], mut f: impl FnMut(&SmdrRecord<'b>)) {
    loop {
        match &parse_smdr(buf) {
            Ok(Parsed::Complete { value, consumed }) => {
                f(value);
                buf = buf.get(*consumed..).unwrap_or_default();
            }
            Ok(Parsed::Incomplete) => break,
            Err(_) => match skip_line(buf) {
                Some(n) => buf = buf.get(n..).unwrap_or_default(),
                None => break,
            },
        }
    }
}

/// The naive comparison: split every line on commas with memchr, zero-copy. Returns the number
/// of fields and the sum of their lengths (so that the fields are really visited).
#[inline]
fn split_fields(buf: &[u8]) -> (usize, usize) {
    let (mut fields, mut len) = (0usize, 0usize);
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', buf) {
        let line = buf.get(start..nl).unwrap_or_default();
        start = nl + 1;
        let mut from = 0;
        for comma in memchr::memchr_iter(b',', line) {
            fields += 1;
            len += comma - from;
            from = comma + 1;
        }
        fields += 1;
        len += line.len() - from;
    }
    (fields, len)
}

fn report() {
    let c = &*CORPUS;
    eprintln!(
        "corpus: {} bytes ({} copies of the fixtures), {} lines, {} records, {} fields",
        c.bytes.len(),
        c.copies,
        c.lines,
        c.records,
        c.fields
    );
}

/// Baseline: count the lines with memchr. Nothing that looks at every line can beat this.
#[divan::bench]
fn memchr_line_count(bencher: Bencher<'_, '_>) {
    let c = &*CORPUS;
    bencher
        .counter(BytesCount::new(c.bytes.len()))
        .counter(ItemsCount::new(c.lines))
        .bench(|| {
            let n = memchr::memchr_iter(b'\n', black_box(&c.bytes)).count();
            assert_eq!(n, c.lines);
            n
        });
}

/// Baseline 2: a plain zero-copy comma splitter (memchr per line, memchr per comma).
#[divan::bench]
fn comma_split(bencher: Bencher<'_, '_>) {
    let c = &*CORPUS;
    bencher
        .counter(BytesCount::new(c.bytes.len()))
        .counter(ItemsCount::new(c.lines))
        .bench(|| {
            let (fields, len) = split_fields(black_box(&c.bytes));
            assert_eq!(fields, c.fields);
            len
        });
}

/// Typed parse of every line with `parse_smdr` over the whole buffer.
#[divan::bench]
fn parse_smdr_loop(bencher: Bencher<'_, '_>) {
    let c = &*CORPUS;
    bencher
        .counter(BytesCount::new(c.bytes.len()))
        .counter(ItemsCount::new(c.records))
        .bench(|| {
            let mut n = 0usize;
            for_each_record(black_box(&c.bytes), |r| {
                black_box(r);
                n += 1;
            });
            assert_eq!(n, c.records);
            n
        });
}

/// A stream: push 64 KiB chunks into a fresh `SmdrFramer`, take every line, parse it.
#[divan::bench]
fn framer_parse(bencher: Bencher<'_, '_>) {
    let c = &*CORPUS;
    bencher
        .counter(BytesCount::new(c.bytes.len()))
        .counter(ItemsCount::new(c.records))
        .bench(|| {
            let mut framer = SmdrFramer::default();
            let mut n = 0usize;
            for chunk in black_box(&c.bytes).chunks(CHUNK) {
                framer.push(chunk);
                while let Some(frame) = framer.next_frame() {
                    if let Frame::Line { line, .. } = frame {
                        if let Ok(r) = SmdrRecord::parse(line) {
                            black_box(&r);
                            n += 1;
                        }
                    }
                }
            }
            assert!(framer.finish().is_none());
            assert_eq!(n, c.records);
            n
        });
}

/// The assembler over every record of the corpus (parsed and owned beforehand), with a
/// synthetic clock, draining the outputs after every record as the run loop does.
#[divan::bench(sample_count = 20)]
fn assembler(bencher: Bencher<'_, '_>) {
    let records = &*RECORDS;
    let base = Instant::now();
    bencher
        .counter(ItemsCount::new(records.len()))
        .with_inputs(|| {
            SmdrAssembler::new(SmdrAssemblerConfig {
                site: "bench".to_owned(),
                ..SmdrAssemblerConfig::default()
            })
        })
        .bench_local_values(|mut asm| {
            let mut calls = 0usize;
            let mut now = base;
            for r in records {
                now += RECORD_GAP;
                asm.handle_record(now, r);
                if asm.poll_timeout().is_some_and(|t| t <= now) {
                    asm.handle_timeout(now);
                }
                while let Some(out) = asm.poll_output() {
                    calls += usize::from(matches!(out, Output::Call(_)));
                    black_box(out);
                }
            }
            asm.flush(now);
            while let Some(out) = asm.poll_output() {
                calls += usize::from(matches!(out, Output::Call(_)));
                black_box(out);
            }
            assert_eq!(asm.stats().records, records.len() as u64);
            calls
        });
}
