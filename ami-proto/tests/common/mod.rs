//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use ami_proto::{AmiFramer, AmiMessage, Frame, Limits, ParseError, ParseErrorKind};

/// One frame, owned: what the framer said and what the parser made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    /// The greeting line.
    Greeting(Vec<u8>),
    /// A message, parsed (or the parse error), with its raw bytes.
    Message(Vec<u8>, Result<AmiMessage<'static>, ParseError>),
    /// A frame over a limit.
    Error(ParseErrorKind),
    /// The unfinished last frame (from `finish`), parsed.
    Truncated(Vec<u8>, Result<AmiMessage<'static>, ParseError>),
}

impl Owned {
    /// The parsed message, if the frame is one that parsed.
    pub fn message(&self) -> Option<&AmiMessage<'static>> {
        match self {
            Self::Message(_, Ok(m)) | Self::Truncated(_, Ok(m)) => Some(m),
            _ => None,
        }
    }
}

fn own(frame: &Frame<'_>) -> Owned {
    match frame {
        Frame::Greeting { line, .. } => Owned::Greeting(line.to_vec()),
        Frame::Message { bytes, .. } => Owned::Message(
            bytes.to_vec(),
            AmiMessage::parse(bytes).map(AmiMessage::into_owned),
        ),
        Frame::Error { kind, .. } => Owned::Error(kind.clone()),
        Frame::Truncated { bytes, .. } => Owned::Truncated(
            bytes.to_vec(),
            AmiMessage::parse(bytes).map(AmiMessage::into_owned),
        ),
    }
}

/// Every frame of `chunks` pushed in turn (then `finish`), numbered from 1.
pub fn frames_chunked(chunks: &[&[u8]], limits: Limits) -> Vec<(u64, Owned)> {
    let mut framer = AmiFramer::new(limits);
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        while let Some(f) = framer.next_frame() {
            out.push((number(&f), own(&f)));
        }
    }
    if let Some(f) = framer.finish() {
        out.push((number(&f), own(&f)));
    }
    out
}

/// Every frame of `bytes` pushed at once.
pub fn frames(bytes: &[u8]) -> Vec<(u64, Owned)> {
    frames_chunked(&[bytes], Limits::default())
}

fn number(f: &Frame<'_>) -> u64 {
    match f {
        Frame::Greeting { number, .. }
        | Frame::Message { number, .. }
        | Frame::Error { number, .. }
        | Frame::Truncated { number, .. } => *number,
    }
}

/// The captured data under the repository's `fixtures/<sub>`.
pub fn fixture_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(sub)
}

/// Every AMI stream among the fixtures (`*.ami`, `*.dump`, `*.yaml` under `ami/`, `ami.raw`
/// under `asterisk/`), sorted, as (path relative to `fixtures`, bytes).
pub fn fixture_streams() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let root = fixture_dir("");
    for top in ["ami", "asterisk"] {
        for dir in std::fs::read_dir(root.join(top)).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&dir).unwrap() {
                let p = f.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let ext = p.extension().map(|e| e.to_string_lossy().into_owned());
                let wanted = match top {
                    "ami" => matches!(ext.as_deref(), Some("ami" | "dump" | "yaml")),
                    _ => name == "ami.raw",
                };
                if wanted {
                    let rel = p
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
    }
    out.sort();
    out
}
