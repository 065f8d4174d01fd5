//! Helpers shared by the integration tests: real calls from the repository's SMDR capture, and a
//! relay's commit to an outbox.

#![allow(dead_code, clippy::unwrap_used, clippy::disallowed_methods)]

use std::path::Path;
use std::time::Instant;

use call_assembler::{Call, Output, SmdrAssembler, SmdrAssemblerConfig};
use cdr_sinks::engine::now_ms;
use cdr_sinks::outbox::{Batch, Outbox, SinkCounts};

/// The first `n` calls of the SMDR fixture `ccbc_rw180105_day_34fields.txt`, assembled as the
/// relay assembles them.
pub(crate) fn smdr_calls(n: usize) -> Vec<Call> {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/smdr/ccbc_rw180105_day_34fields.txt"),
    )
    .unwrap();
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| l.len() > 2) {
        asm.handle_record(
            Instant::now(),
            &smdr_parse::SmdrRecord::parse(line).unwrap(),
        );
        while let Some(o) = asm.poll_output() {
            if let Output::Call(c) = o {
                out.push(c);
            }
        }
    }
    out.truncate(n);
    assert_eq!(out.len(), n, "the fixture has fewer than {n} calls");
    out
}

/// Commits `calls` to the outbox at `db` for the one sink `sink`, as a relay does.
pub(crate) fn commit(db: &Path, sink: &str, calls: &[Call]) {
    let mut outbox = Outbox::open(db, &[sink.to_owned()]).unwrap();
    let r = outbox
        .commit(
            &Batch {
                calls: calls.to_vec(),
                ..Batch::default()
            },
            now_ms(),
        )
        .unwrap();
    assert_eq!(r.calls, calls.len());
}

/// The delivery counts of `sink` in the outbox at `db`.
pub(crate) fn counts(db: &Path, sink: &str) -> SinkCounts {
    Outbox::open(db, &[sink.to_owned()])
        .unwrap()
        .counts()
        .unwrap()
        .into_iter()
        .find(|c| c.sink == sink)
        .unwrap()
}
