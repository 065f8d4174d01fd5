//! The JSON Lines sink: one call per line.

use std::io::Write;

use crate::{Call, SinkError};

/// Writes each call as one line of JSON to a writer, flushing after every call so a reader of
/// the file or pipe sees whole lines only.
#[derive(Debug)]
pub struct JsonlSink<W: Write> {
    out: W,
    buf: Vec<u8>,
    written: u64,
}

impl<W: Write> JsonlSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(4096),
            written: 0,
        }
    }

    /// Writes one call as one line.
    pub fn send(&mut self, call: &Call) -> Result<(), SinkError> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, call)?;
        self.buf.push(b'\n');
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        self.written += 1;
        Ok(())
    }

    /// Writes a call already encoded as JSON (one line, no newline inside) as one line.
    pub fn send_json(&mut self, json: &[u8]) -> Result<(), SinkError> {
        self.buf.clear();
        self.buf.extend_from_slice(json);
        self.buf.push(b'\n');
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        self.written += 1;
        Ok(())
    }

    /// Calls written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}
