//! AMI throughput: framing and header parsing against a memchr line-count baseline, all over the
//! same bytes (every AMI fixture stream, repeated to 32 MiB), so the ratios mean something.
//!
//! `cargo bench -p cdr-benches --bench ami` measures (see BENCHMARKS.md, "AMI"). Under
//! `cargo test --benches` divan runs each bench once over a single copy of the fixtures; every
//! bench checks its counts against the corpus, so the smoke run also checks that the benches
//! measure what they claim to.
//!
//! The fixtures are read from `shared/fixtures` beside the work tree (`asterisk/*/ami.raw` and
//! the `*.ami`, `*.dump` and `*.yaml` streams under `ami/`), or from the folder in
//! `AMI_FIXTURES`.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use ami_proto::{AmiFramer, AmiMessage, Event, Frame, HeaderBuf, Parsed, parse_ami, skip_message};
use cdr_benches::{CHUNK, corpus_bytes, fixture_dir};
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

fn load() -> Corpus {
    let dir = fixture_dir("AMI_FIXTURES", "");
    let streams = files_in_subdirs(&dir.join("asterisk"), |p| p.ends_with("ami.raw"))
        .into_iter()
        .chain(files_in_subdirs(&dir.join("ami"), |p| {
            p.extension()
                .is_some_and(|e| e == "ami" || e == "dump" || e == "yaml")
        }));
    let mut one = Vec::new();
    for path in streams {
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

fn report() {
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
