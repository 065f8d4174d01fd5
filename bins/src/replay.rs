//! Replaying SMDR from a file or stdin: frame, parse, assemble, deliver.

use std::io::{self, Read};
use std::time::Instant;

use call_assembler::{Call, Output, SmdrAssembler, SmdrAssemblerConfig};
use smdr_parse::{Frame, ParseError, ParseErrorKind, SmdrFramer, SmdrRecord};

/// A line that could not be used, with where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub number: u64,
    /// Byte offset of the line in the input.
    pub offset: u64,
    /// What was wrong (the error's offset is within the line).
    pub error: ParseError,
    /// The line's bytes (for an over-long line, nothing: it was not kept).
    pub line: Vec<u8>,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Non-blank lines read.
    pub lines: u64,
    /// Records parsed.
    pub records: u64,
    /// Lines rejected.
    pub bad_lines: u64,
    /// Complete calls emitted.
    pub complete: u64,
    /// Incomplete calls emitted (flushed at the end of input or before).
    pub incomplete: u64,
}

/// Reads SMDR from `input` to its end, feeds every record to an assembler built from `config`,
/// hands each call to `on_call` (in emission order) and each bad line to `on_bad`, then flushes
/// the calls still open as incomplete. An error from `on_call` stops the replay and is returned.
pub fn replay_smdr<R: Read>(
    mut input: R,
    config: SmdrAssemblerConfig,
    mut on_call: impl FnMut(Call) -> anyhow::Result<()>,
    mut on_bad: impl FnMut(BadLine),
) -> anyhow::Result<ReplayReport> {
    let mut framer = SmdrFramer::default();
    let mut asm = SmdrAssembler::new(config);
    let mut report = ReplayReport::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut handle = |frame: Frame<'_>, asm: &mut SmdrAssembler, report: &mut ReplayReport| {
        report.lines += 1;
        match frame {
            Frame::Line {
                line,
                number,
                offset,
            } => match SmdrRecord::parse(line) {
                Ok(record) => {
                    report.records += 1;
                    asm.handle_record(Instant::now(), &record);
                }
                Err(error) => {
                    report.bad_lines += 1;
                    on_bad(BadLine {
                        number,
                        offset,
                        error,
                        line: line.to_vec(),
                    });
                }
            },
            Frame::TooLong {
                number,
                offset,
                max,
            } => {
                report.bad_lines += 1;
                on_bad(BadLine {
                    number,
                    offset,
                    error: ParseError {
                        offset: 0,
                        kind: ParseErrorKind::LineTooLong { max },
                    },
                    line: Vec::new(),
                });
            }
        }
    };
    let mut drain = |asm: &mut SmdrAssembler, report: &mut ReplayReport| -> anyhow::Result<()> {
        while let Some(out) = asm.poll_output() {
            if let Output::Call(call) = out {
                if call.complete {
                    report.complete += 1;
                } else {
                    report.incomplete += 1;
                }
                on_call(call)?;
            }
        }
        Ok(())
    };
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        framer.push(chunk.get(..n).unwrap_or_default());
        while let Some(frame) = framer.next_frame() {
            handle(frame, &mut asm, &mut report);
            drain(&mut asm, &mut report)?;
        }
        asm.handle_timeout(Instant::now());
        drain(&mut asm, &mut report)?;
    }
    if let Some(frame) = framer.finish() {
        handle(frame, &mut asm, &mut report);
    }
    asm.flush(Instant::now());
    drain(&mut asm, &mut report)?;
    Ok(report)
}
