//! AMI throughput: framing and header parsing against a memchr line-count baseline, all over the
//! same bytes (every AMI fixture stream, repeated to 32 MiB), so the ratios mean something.
//!
//! `cargo bench -p cdr-benches --bench ami` measures (see BENCHMARKS.md, "AMI"). Under
//! `cargo test --benches` divan runs each bench once over a single copy of the fixtures; every
//! bench checks its counts against the corpus, so the smoke run also checks that the benches
//! measure what they claim to.
//!
//! The `assembler` group measures `call_assembler::AmiAssembler` alone: every message of the
//! same streams, parsed and made owned beforehand, is fed with `handle_message` on a synthetic
//! clock. Its corpus repeats the fixtures as many times as the others, but each copy gets its
//! own Uniqueids and Linkedids (`c<copy>-` in front) and later `Timestamp:`s, so that every
//! copy is new calls rather than late events of the first.
//!
//! The fixtures are read from the repository's `fixtures` (`asterisk/*/ami.raw` and
//! the `*.ami`, `*.dump` and `*.yaml` streams under `ami/`), or from the folder in
//! `AMI_FIXTURES`.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use ami_proto::{AmiFramer, AmiMessage, Event, Frame, HeaderBuf, Parsed, parse_ami, skip_message};
use call_assembler::{AmiAssembler, AmiAssemblerConfig, Output};
use cdr_benches::{CHUNK, corpus_bytes, fixture_dir, measuring};
use divan::counter::{BytesCount, ItemsCount};
use divan::{AllocProfiler, Bencher, black_box};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

fn main() {
    report();
    divan::main();
}

/// The bytes every bench runs over, and what is in them.
struct Corpus {
    bytes: Vec<u8>,
    /// `\n`-terminated lines.
    lines: usize,
    /// Frames the framer finds (greetings, messages and malformed frames).
    frames: usize,
    /// Frames that parse as messages (the greeting included).
    messages: usize,
    /// Headers over all messages.
    headers: usize,
    /// Messages that are call-tracking events with a typed view.
    call_events: usize,
    /// Copies of the fixture set.
    copies: usize,
}

static CORPUS: LazyLock<Corpus> = LazyLock::new(load);

/// The assembler's input: every message of the streams, `copies` times, each with the offset of
/// its synthetic `now` from the start.
struct Events {
    messages: Vec<(Duration, AmiMessage<'static>)>,
    /// Bytes of the messages (as framed).
    bytes: usize,
    /// Messages that change call state (the assembler's `stats().events` over one pass).
    events: u64,
    /// Calls emitted over one pass.
    calls: usize,
}

static EVENTS: LazyLock<Events> = LazyLock::new(load_events);

/// The files under `dir/*/` whose name passes `keep`, sorted.
fn files_in_subdirs(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for sub in entries {
        let sub = sub.expect("directory entry").path();
        if !sub.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&sub).expect("readable fixture folder") {
            let f = f.expect("directory entry").path();
            if keep(&f) {
                files.push(f);
            }
        }
    }
    files.sort();
    files
}

/// Every AMI stream among the fixtures.
fn stream_files() -> Vec<PathBuf> {
    let dir = fixture_dir("AMI_FIXTURES", "");
    files_in_subdirs(&dir.join("asterisk"), |p| p.ends_with("ami.raw"))
        .into_iter()
        .chain(files_in_subdirs(&dir.join("ami"), |p| {
            p.extension()
                .is_some_and(|e| e == "ami" || e == "dump" || e == "yaml")
        }))
        .collect()
}

fn load() -> Corpus {
    let dir = fixture_dir("AMI_FIXTURES", "");
    let mut one = Vec::new();
    for path in stream_files() {
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        one.extend_from_slice(&bytes);
        // Close a truncated last frame so that it does not swallow the next file's greeting.
        if !one.ends_with(b"\n\n") && !one.ends_with(b"\n\r\n") {
            one.extend_from_slice(b"\r\n\r\n");
        }
    }
    assert!(one.len() > 500_000, "fixtures missing in {}", dir.display());
    let (bytes, copies) = corpus_bytes(&one);
    let lines = memchr::memchr_iter(b'\n', &bytes).count();
    let (mut frames, mut messages, mut headers, mut call_events) = (0, 0, 0, 0);
    let mut framer = AmiFramer::default();
    let mut buf = HeaderBuf::new();
    for chunk in bytes.chunks(CHUNK) {
        framer.push(chunk);
        while let Some(frame) = framer.next_frame() {
            frames += 1;
            if let Frame::Message { bytes, .. } | Frame::Greeting { line: bytes, .. } = frame {
                if let Ok(m) = AmiMessage::parse_with(bytes, &mut buf) {
                    messages += 1;
                    headers += m.len();
                    call_events += usize::from(call_event(&m).is_some());
                }
            }
        }
    }
    assert!(framer.finish().is_none());
    Corpus {
        bytes,
        lines,
        frames,
        messages,
        headers,
        call_events,
        copies,
    }
}

/// What a call tracker reads from the events it uses: the channel's uniqueid and linkedid (or
/// the CEL ones), through the typed views. `None` for other messages.
#[inline]
fn call_event<'m>(m: &'m AmiMessage<'_>) -> Option<(Option<&'m str>, Option<&'m str>)> {
    match m.typed() {
        Event::Newchannel(v) | Event::Newstate(v) | Event::NewCallerid(v) => {
            Some((v.channel().uniqueid(), v.channel().linkedid()))
        }
        Event::DialBegin(d) | Event::DialEnd(d) => Some((d.uniqueid(), d.dest_uniqueid())),
        Event::BridgeEnter(b) | Event::BridgeLeave(b) => {
            Some((b.channel().uniqueid(), b.bridge_uniqueid()))
        }
        Event::Hangup(h) => Some((h.channel().uniqueid(), h.channel().linkedid())),
        Event::Cel(c) => Some((c.uniqueid(), c.linkedid())),
        Event::Cdr(c) => Some((c.uniqueid(), c.disposition())),
        Event::VarSet(v) => Some((v.channel().uniqueid(), v.variable())),
        Event::BlindTransfer(t) => Some((t.transferee().uniqueid(), t.extension())),
        Event::Rename(r) => Some((r.uniqueid(), r.new_name())),
        _ => None,
    }
}

/// The messages of every stream (owned), with the offset of each one's `now` within its
/// stream: its `Timestamp:` (else CEL `EventTime`) minus the stream's first, else the previous.
fn stream_messages() -> Vec<Vec<(Duration, AmiMessage<'static>)>> {
    let mut out = Vec::new();
    for path in stream_files() {
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut framer = AmiFramer::default();
        framer.push(&bytes);
        let mut first: Option<f64> = None;
        let mut at = Duration::ZERO;
        let mut msgs = Vec::new();
        let mut take = |frame: &[u8]| {
            let Ok(m) = AmiMessage::parse(frame) else {
                return;
            };
            let secs = m
                .get_str("Timestamp")
                .and_then(|t| t.parse::<f64>().ok())
                .or_else(|| match m.typed() {
                    Event::Cel(c) => c.event_time().map(|t| t.and_utc().timestamp() as f64),
                    _ => None,
                });
            if let Some(s) = secs {
                let f = *first.get_or_insert(s);
                at = at.max(Duration::from_secs_f64((s - f).max(0.0)));
            }
            msgs.push((at, m.into_owned()));
        };
        while let Some(frame) = framer.next_frame() {
            if let Frame::Message { bytes, .. } = frame {
                take(bytes);
            }
        }
        if let Some(Frame::Message { bytes, .. }) = framer.finish() {
            take(bytes);
        }
        out.push(msgs);
    }
    out
}

/// A copy of `m` for copy `copy` of the corpus: ids get `c<copy>-` in front, `Timestamp:`
/// moves `shift` later. Messages that cannot be rebuilt header by header stay as they are.
fn renamed(m: &AmiMessage<'static>, copy: usize, shift: f64) -> AmiMessage<'static> {
    if copy == 0 {
        return m.clone();
    }
    let headers: Vec<(&str, Vec<u8>)> = m
        .headers()
        .map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            let value = if (lower.contains("uniqueid") || lower.contains("linkedid"))
                && !value.is_empty()
            {
                [format!("c{copy}-").as_bytes(), value].concat()
            } else if lower == "timestamp" {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .map_or_else(
                        || value.to_vec(),
                        |t| format!("{:.6}", t + shift).into_bytes(),
                    )
            } else {
                value.to_vec()
            };
            (name, value)
        })
        .collect();
    AmiMessage::from_headers(headers).unwrap_or_else(|_| m.clone())
}

fn load_events() -> Events {
    let streams = stream_messages();
    // As many copies as the byte benches use, one when smoke-testing.
    let copies = if measuring() { CORPUS.copies } else { 1 };
    // Each stream, then each copy, starts an hour after the last event before it.
    let gap = Duration::from_secs(3600);
    let mut messages = Vec::new();
    let mut start = Duration::ZERO;
    for copy in 0..copies {
        let shift = start.as_secs_f64();
        for msgs in &streams {
            for (at, m) in msgs {
                messages.push((start + *at, renamed(m, copy, shift)));
            }
            start += msgs.last().map_or(Duration::ZERO, |(at, _)| *at) + gap;
        }
    }
    let bytes = messages.iter().map(|(_, m)| m.as_bytes().len()).sum();
    let (stats, calls) = assemble(
        &messages,
        AmiAssemblerConfig::default(),
        Instant::now(),
        false,
    );
    Events {
        messages,
        bytes,
        events: stats.events,
        calls,
    }
}

/// Feeds every message to a new assembler as a run loop does (`handle_timeout` when due,
/// outputs drained after each message, `take_retired` too when `journal`), then flushes.
/// The counters and the number of final calls.
#[inline]
fn assemble(
    messages: &[(Duration, AmiMessage<'static>)],
    config: AmiAssemblerConfig,
    base: Instant,
    journal: bool,
) -> (call_assembler::AmiStats, usize) {
    let mut asm = AmiAssembler::new(config);
    let mut calls = 0usize;
    let mut now = base;
    let mut keys = 0usize;
    let mut drain = |asm: &mut AmiAssembler| {
        while let Some(out) = asm.poll_output() {
            if let Output::Call(c) = &out {
                calls += usize::from(
                    c.update
                        .is_none_or(|u| u.event == call_assembler::UpdateEvent::Ended),
                );
            }
            black_box(out);
        }
    };
    for (at, m) in messages {
        now = base + *at;
        if asm.poll_timeout().is_some_and(|t| t <= now) {
            asm.handle_timeout(now);
        }
        asm.handle_message(now, m);
        if journal {
            keys += usize::from(black_box(asm.last_key()).is_some());
        }
        drain(&mut asm);
        if journal {
            black_box(asm.take_retired());
        }
    }
    asm.flush(now + Duration::from_secs(10));
    drain(&mut asm);
    black_box(keys);
    (asm.stats(), calls)
}

fn report() {
    let e = &*EVENTS;
    eprintln!(
        "assembler corpus: {} messages, {} bytes, {} call events, {} calls",
        e.messages.len(),
        e.bytes,
        e.events,
        e.calls
    );
    let c = &*CORPUS;
    eprintln!(
        "corpus: {} bytes ({} copies of the fixtures), {} lines, {} frames, {} messages, \
         {} headers, {} call-tracking events",
        c.bytes.len(),
        c.copies,
        c.lines,
        c.frames,
        c.messages,
        c.headers,
        c.call_events
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

/// Baseline 2: a naive zero-copy splitter: memchr for every line end, a blank line ends a
/// message, and memchr for the `:` of every other line (no greeting, no command output, no
/// limits, no validation).
#[divan::bench]
fn naive_split(bencher: Bencher<'_, '_>) {
    let c = &*CORPUS;
    bencher
        .counter(BytesCount::new(c.bytes.len()))
        .counter(ItemsCount::new(c.messages))
        .bench(|| {
            let bytes = black_box(&c.bytes);
            let (mut blocks, mut fields, mut start, mut in_block) = (0usize, 0usize, 0usize, false);
            for nl in memchr::memchr_iter(b'\n', bytes) {
                let line = bytes.get(start..nl).unwrap_or_default();
                start = nl + 1;
                if line.is_empty() || line == b"\r" {
                    blocks += usize::from(in_block);
                    in_block = false;
                } else {
                    in_block = true;
                    fields += usize::from(memchr::memchr(b':', line).is_some());
                }
            }
            assert!(blocks > 0 && fields > 0);
            (blocks, fields)
        });
}

/// Framing only: push 64 KiB chunks into a fresh `AmiFramer` and take every frame.
#[divan::bench]
fn framer_only(bencher: Bencher<'_, '_>) {
    let c = &*CORPUS;
    bencher
        .counter(BytesCount::new(c.bytes.len()))
        .counter(ItemsCount::new(c.messages))
        .bench(|| {
            let mut framer = AmiFramer::default();
            let mut n = 0usize;
            for chunk in black_box(&c.bytes).chunks(CHUNK) {
                framer.push(chunk);
                while let Some(frame) = framer.next_frame() {
                    black_box(&frame);
                    n += 1;
                }
            }
            assert!(framer.finish().is_none());
            assert_eq!(n, c.frames);
            n
        });
}

/// Framing + header parsing, the production path: 64 KiB chunks into a fresh `AmiFramer`,
/// `AmiMessage::parse_with` on every frame with one reused `HeaderBuf`.
#[divan::bench]
fn framer_parse(bencher: Bencher<'_, '_>) {
    let c = &*CORPUS;
    bencher
        .counter(BytesCount::new(c.bytes.len()))
        .counter(ItemsCount::new(c.messages))
        .bench(|| {
            let mut framer = AmiFramer::default();
            let mut buf = HeaderBuf::new();
            let (mut n, mut headers) = (0usize, 0usize);
            for chunk in black_box(&c.bytes).chunks(CHUNK) {
                framer.push(chunk);
                while let Some(frame) = framer.next_frame() {
                    if let Frame::Message { bytes, .. } | Frame::Greeting { line: bytes, .. } =
                        frame
                    {
                        if let Ok(m) = AmiMessage::parse_with(bytes, &mut buf) {
                            headers += m.len();
                            black_box(&m);
                            n += 1;
                        }
                    }
                }
            }
            assert!(framer.finish().is_none());
            assert_eq!((n, headers), (c.messages, c.headers));
            n
        });
}

/// As `framer_parse`, plus what a call tracker reads: the typed view of every message and the
/// uniqueid/linkedid (or equivalent) of every call-tracking event.
#[divan::bench]
fn framer_parse_typed(bencher: Bencher<'_, '_>) {
    let c = &*CORPUS;
    bencher
        .counter(BytesCount::new(c.bytes.len()))
        .counter(ItemsCount::new(c.messages))
        .bench(|| {
            let mut framer = AmiFramer::default();
            let mut buf = HeaderBuf::new();
            let (mut n, mut events) = (0usize, 0usize);
            for chunk in black_box(&c.bytes).chunks(CHUNK) {
                framer.push(chunk);
                while let Some(frame) = framer.next_frame() {
                    if let Frame::Message { bytes, .. } | Frame::Greeting { line: bytes, .. } =
                        frame
                    {
                        if let Ok(m) = AmiMessage::parse_with(bytes, &mut buf) {
                            if let Some(ids) = call_event(&m) {
                                black_box(ids);
                                events += 1;
                            }
                            n += 1;
                        }
                    }
                }
            }
            assert_eq!((n, events), (c.messages, c.call_events));
            n
        });
}

/// The stateless `parse_ami` from the front of the whole buffer, advancing by `consumed` and
/// skipping a bad frame with `skip_message`. It allocates each message's header index (the
/// framer path reuses one).
#[divan::bench]
fn parse_ami_loop(bencher: Bencher<'_, '_>) {
    let c = &*CORPUS;
    bencher
        .counter(BytesCount::new(c.bytes.len()))
        .counter(ItemsCount::new(c.messages))
        .bench(|| {
            let mut rest: &[u8] = black_box(&c.bytes);
            let mut n = 0usize;
            loop {
                match parse_ami(rest) {
                    Ok(Parsed::Complete { value, consumed }) => {
                        black_box(&value);
                        n += 1;
                        rest = rest.get(consumed..).unwrap_or_default();
                    }
                    Ok(Parsed::Incomplete) => break,
                    Err(_) => match skip_message(rest) {
                        Some(k) => rest = rest.get(k..).unwrap_or_default(),
                        None => break,
                    },
                }
            }
            assert_eq!(n, c.messages);
            n
        });
}

/// `call_assembler::AmiAssembler` over every message of the corpus (parsed and owned
/// beforehand, outside the timing), on a synthetic clock from the events' `Timestamp:`s.
#[divan::bench_group(sample_count = 20)]
mod assembler {
    use super::*;

    fn run(bencher: Bencher<'_, '_>, config: fn() -> AmiAssemblerConfig, journal: bool) {
        let e = &*EVENTS;
        let base = Instant::now();
        bencher
            .counter(BytesCount::new(e.bytes))
            .counter(ItemsCount::new(e.messages.len()))
            .bench(|| {
                let (stats, calls) = assemble(black_box(&e.messages), config(), base, journal);
                assert_eq!(stats.messages, e.messages.len() as u64);
                assert_eq!((stats.events, calls), (e.events, e.calls));
                calls
            });
    }

    /// Complete mode (the default configuration): one record per call.
    #[divan::bench]
    fn complete(bencher: Bencher<'_, '_>) {
        run(bencher, AmiAssemblerConfig::default, false);
    }

    /// Complete mode, plus what a journaling relay reads: `last_key` after every message and
    /// `take_retired` after every drain.
    #[divan::bench]
    fn journal(bencher: Bencher<'_, '_>) {
        run(bencher, AmiAssemblerConfig::default, true);
    }

    /// Progressive mode with a 5 s interval: `Started`, `Updated` every 5 s, `Ended`.
    #[divan::bench]
    fn progressive_5s(bencher: Bencher<'_, '_>) {
        run(
            bencher,
            || AmiAssemblerConfig {
                progress_interval: Some(Duration::from_secs(5)),
                ..AmiAssemblerConfig::default()
            },
            false,
        );
    }
}
