//! Helpers shared by the Asterisk capture tests: where the captures are, and replaying them
//! through an [`AmiAssembler`] on synthetic time.
#![allow(
    dead_code, // each test file uses some of them
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

pub(crate) mod books;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ami_proto::{AmiFramer, AmiMessage, Frame};
use call_assembler::{AmiAssembler, AmiAssemblerConfig, Call, CelRow, Output};
use chrono::NaiveDateTime;

/// The captured data: the repository's `fixtures`.
pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The real Asterisk 20 captures (`asterisk/NN_name/`), in order.
pub(crate) fn captures() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures().join("asterisk"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("ami.raw").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty());
    dirs
}

/// The capture's directory name.
pub(crate) fn name_of(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().to_string()
}

/// The site `lab`, defaults otherwise.
pub(crate) fn config() -> AmiAssemblerConfig {
    AmiAssemblerConfig {
        site: "lab".into(),
        ..AmiAssemblerConfig::default()
    }
}

/// Drains the calls an assembler has ready.
pub(crate) fn drain(asm: &mut AmiAssembler, calls: &mut Vec<Call>) {
    while let Some(out) = asm.poll_output() {
        if let Output::Call(c) = out {
            calls.push(c);
        }
    }
}

/// Replays a raw AMI stream; `now` = base + the event's offset from the first event time
/// (`Timestamp:`, else a CEL `EventTime`), else the previous `now`. Lets the grace period pass
/// at the end.
pub(crate) fn replay_ami(bytes: &[u8], config: AmiAssemblerConfig) -> (Vec<Call>, AmiAssembler) {
    let base = Instant::now();
    let mut asm = AmiAssembler::new(config);
    let mut framer = AmiFramer::default();
    framer.push(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = framer.next_frame() {
        if let Frame::Message { bytes, .. } = frame {
            frames.push(bytes.to_vec());
        }
    }
    let mut first: Option<f64> = None;
    let mut now = base;
    let mut calls = Vec::new();
    for bytes in &frames {
        let msg = AmiMessage::parse(bytes).unwrap();
        let secs = msg
            .get_str("Timestamp")
            .and_then(|t| t.parse::<f64>().ok())
            .or_else(|| {
                msg.get_str("EventTime")
                    .and_then(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok())
                    .map(|t| t.and_utc().timestamp() as f64)
            });
        if let Some(s) = secs {
            let f = *first.get_or_insert(s);
            now = now.max(base + Duration::from_secs_f64((s - f).max(0.0)));
        }
        asm.handle_timeout(now);
        asm.handle_message(now, &msg);
        drain(&mut asm, &mut calls);
    }
    asm.handle_timeout(now + Duration::from_secs(10));
    drain(&mut asm, &mut calls);
    (calls, asm)
}

/// Replays CEL rows, each at `base` + its offset (`secs`) from the first; lets the grace
/// period pass at the end.
pub(crate) fn replay_cel(
    rows: &[(f64, CelRow)],
    config: AmiAssemblerConfig,
) -> (Vec<Call>, AmiAssembler) {
    let base = Instant::now();
    let mut asm = AmiAssembler::new(config);
    let mut calls = Vec::new();
    let mut now = base;
    let first = rows.first().map_or(0.0, |r| r.0);
    for (secs, row) in rows {
        now = now.max(base + Duration::from_secs_f64((secs - first).max(0.0)));
        asm.handle_timeout(now);
        asm.handle_cel_row(now, row);
        drain(&mut asm, &mut calls);
    }
    asm.handle_timeout(now + Duration::from_secs(10));
    drain(&mut asm, &mut calls);
    (calls, asm)
}
