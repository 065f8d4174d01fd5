//! The generated SMDR corpus the end-to-end benches replay, and the small report helpers they
//! share.
//!
//! The corpus is every real capture in a folder (`fixtures/smdr/ccbc`: 4,336 records, 4,104
//! calls, 702 KB per copy), repeated. Each copy `k` adds `(k + 1) * 10_000_000` to the Call ID
//! (field 10) of every line and changes nothing else, so every copy is a set of new calls (the
//! relay's identity is site, Call ID, Call Start) and multi-record calls stay grouped. Call IDs
//! are then all above the PBX-restart window (1,000,000 + 10,000), so no copy trips restart
//! detection and every copy yields the same calls. The expected number of calls is computed by
//! the same parser and assembler the relay uses (calls that never get their final record stay
//! open in the relay, so they are not expected in the store).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use call_assembler::Call;

/// A generated SMDR stream and what the relay must make of it.
#[derive(Debug, Clone)]
pub struct SmdrCorpus {
    /// The stream.
    pub bytes: Vec<u8>,
    /// Captures in one copy.
    pub files: usize,
    /// Copies of the captures.
    pub copies: usize,
    /// Records (parsed lines).
    pub records: u64,
    /// Calls the relay completes.
    pub calls: u64,
    /// Calls left open at the end.
    pub open: usize,
    /// Lines that do not parse.
    pub bad_lines: u64,
}

impl SmdrCorpus {
    /// `copies` copies of the `*.txt` captures in `dir`.
    pub fn build(dir: &Path, copies: usize) -> anyhow::Result<Self> {
        let contents = read_captures(dir)?;
        Ok(Self::from_captures(&contents, copies))
    }

    /// Whole copies of the `*.txt` captures in `dir`, at least `bytes` long.
    pub fn build_to_size(dir: &Path, bytes: u64) -> anyhow::Result<Self> {
        let contents = read_captures(dir)?;
        let one: usize = contents.iter().map(Vec::len).sum();
        let copies = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .div_ceil(one.max(1))
            .max(1);
        Ok(Self::from_captures(&contents, copies))
    }

    fn from_captures(contents: &[Vec<u8>], copies: usize) -> Self {
        let one: usize = contents.iter().map(Vec::len).sum();
        let mut bytes = Vec::with_capacity(copies * (one + one / 16));
        for k in 0..copies {
            let offset = (k as u64 + 1) * 10_000_000;
            for c in contents {
                for line in c.split_inclusive(|b| *b == b'\n') {
                    rewrite_call_id(line, offset, &mut bytes);
                }
            }
        }
        let (records, calls, open, bad_lines) = expected(&bytes);
        Self {
            bytes,
            files: contents.len(),
            copies,
            records,
            calls,
            open,
            bad_lines,
        }
    }
}

fn read_captures(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the fixtures in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.txt captures in {}", dir.display());
    }
    files
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect()
}

/// Copies `line` with `offset` added to its Call ID (field 10); other lines unchanged.
fn rewrite_call_id(line: &[u8], offset: u64, out: &mut Vec<u8>) {
    let mut commas = line
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b',')
        .map(|(i, _)| i);
    let (Some(a), Some(b)) = (commas.nth(8), commas.next()) else {
        out.extend_from_slice(line);
        return;
    };
    let field = line.get(a + 1..b).unwrap_or_default();
    let id = std::str::from_utf8(field)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok());
    match id {
        Some(id) => {
            out.extend_from_slice(line.get(..=a).unwrap_or_default());
            out.extend_from_slice((id + offset).to_string().as_bytes());
            out.extend_from_slice(line.get(b..).unwrap_or_default());
        }
        None => out.extend_from_slice(line),
    }
}

/// Runs the relay's parser and assembler (default settings, as the relay has them) over the
/// stream: (records, calls emitted, calls left open, bad lines).
fn expected(bytes: &[u8]) -> (u64, u64, usize, u64) {
    use call_assembler::{Output, SmdrAssembler, SmdrAssemblerConfig};
    let mut framer = smdr_parse::SmdrFramer::default();
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let now = Instant::now();
    let (mut records, mut calls, mut bad) = (0u64, 0u64, 0u64);
    for chunk in bytes.chunks(64 * 1024) {
        framer.push(chunk);
        while let Some(f) = framer.next_frame() {
            match f {
                smdr_parse::Frame::Line { line, .. } => match smdr_parse::SmdrRecord::parse(line) {
                    Ok(r) => {
                        records += 1;
                        asm.handle_record(now, &r);
                    }
                    Err(_) => bad += 1,
                },
                smdr_parse::Frame::TooLong { .. } => bad += 1,
            }
            while let Some(o) = asm.poll_output() {
                if matches!(o, Output::Call(_)) {
                    calls += 1;
                }
            }
        }
    }
    (records, calls, asm.open_calls(), bad)
}

/// 12345.6 -> "12,346".
pub fn group(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One line naming the machine: CPU model, cores, memory, rustc, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?", |(_, m)| m.trim())
        .to_owned();
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "machine: {model}, nproc {nproc}, {}, {}, kernel {}",
        mem.split_whitespace().collect::<Vec<_>>().join(" "),
        rustc.trim(),
        kernel.trim()
    )
}

/// User and system CPU time of a process so far, from `/proc/PID/stat`.
pub fn proc_cpu(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let tick = clock_ticks();
    let t = |i: usize| -> Option<Duration> {
        let v: u64 = fields.get(i)?.parse().ok()?;
        Some(Duration::from_secs_f64(v as f64 / tick))
    };
    Some((t(11)?, t(12)?))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The calls of the SMDR day fixture (`fixtures/smdr/ccbc_rw180105_day_34fields.txt`), as the
/// relay's assembler makes them, copied under new ids (`{i:08}-{id}`) up to `n`: bodies for the
/// benches that feed a sink directly.
pub fn day_calls(n: usize) -> anyhow::Result<Vec<Call>> {
    use call_assembler::{Output, SmdrAssembler, SmdrAssemblerConfig};
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/smdr/ccbc_rw180105_day_34fields.txt");
    let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
    let mut framer = smdr_parse::SmdrFramer::default();
    framer.push(&bytes);
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let now = Instant::now();
    let mut base = Vec::new();
    while let Some(f) = framer.next_frame() {
        if let smdr_parse::Frame::Line { line, .. } = f
            && let Ok(r) = smdr_parse::SmdrRecord::parse(line)
        {
            asm.handle_record(now, &r);
        }
        while let Some(o) = asm.poll_output() {
            if let Output::Call(c) = o {
                base.push(c);
            }
        }
    }
    anyhow::ensure!(!base.is_empty(), "no calls in {}", path.display());
    Ok((0..n)
        .filter_map(|i| {
            let mut c = base.get(i % base.len())?.clone();
            c.id = format!("{i:08}-{}", c.id);
            Some(c)
        })
        .collect())
}
