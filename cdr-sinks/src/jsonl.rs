//! The JSON Lines sink: one call per line.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use crate::sink::{BatchResult, Drive, Outgoing, Sink};
use crate::{Call, SinkError};

/// Writes each call as one line of JSON to a writer, flushing after every call so a reader of
/// the file or pipe sees whole lines only. Lines are written one at a time (the sink holds a lock
/// on the writer while it writes one).
#[derive(Debug)]
pub struct JsonlSink<W: Write> {
    inner: Mutex<Lines<W>>,
}

#[derive(Debug)]
struct Lines<W> {
    out: W,
    buf: Vec<u8>,
    written: u64,
}

impl<W: Write> Lines<W> {
    fn write_line(&mut self) -> Result<(), SinkError> {
        self.buf.push(b'\n');
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        self.written += 1;
        Ok(())
    }
}

impl<W: Write> JsonlSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            inner: Mutex::new(Lines {
                out,
                buf: Vec::with_capacity(4096),
                written: 0,
            }),
        }
    }

    fn lines(&self) -> Result<std::sync::MutexGuard<'_, Lines<W>>, SinkError> {
        self.inner
            .lock()
            .map_err(|_| SinkError::Io(std::io::Error::other("jsonl sink poisoned")))
    }

    /// Writes one call as one line.
    pub fn send(&self, call: &Call) -> Result<(), SinkError> {
        let mut lines = self.lines()?;
        lines.buf.clear();
        serde_json::to_writer(&mut lines.buf, call)?;
        lines.write_line()
    }

    /// Writes a call already encoded as JSON (one line, no newline inside) as one line.
    pub fn send_json(&self, json: &[u8]) -> Result<(), SinkError> {
        let mut lines = self.lines()?;
        lines.buf.clear();
        lines.buf.extend_from_slice(json);
        lines.write_line()
    }

    /// Calls written so far.
    pub fn written(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .written
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.inner
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .out
    }
}

/// Items the engine hands the JSONL sink at once ([`Drive::Batch`]).
pub const BATCHED: usize = 2048;

/// Writes a round's items, up to [`BATCHED`], in order, each stored JSON as one line, in one
/// write and one flush: a backfill costs one system call per batch rather than per call. A
/// write that fails fails the whole batch (it is retried from its first call, in order; lines
/// written before the failure may then appear twice, and a reader drops them by `id`).
impl<W: Write + Send> Sink for JsonlSink<W> {
    type Error = SinkError;

    fn drive(&self) -> Drive {
        Drive::Batch { max: BATCHED }
    }

    async fn deliver(&self, batch: &[Outgoing]) -> BatchResult<SinkError> {
        let mut lines = self.lines()?;
        let Lines { out, buf, written } = &mut *lines;
        buf.clear();
        for item in batch {
            buf.extend_from_slice(item.body());
            buf.push(b'\n');
        }
        out.write_all(buf)?;
        out.flush()?;
        *written += batch.len() as u64;
        // A batch of a backfill is a few MB: not kept between rounds.
        if buf.capacity() > 1 << 20 {
            *buf = Vec::with_capacity(4096);
        }
        Ok(batch.iter().map(|_| Ok(())).collect())
    }
}
