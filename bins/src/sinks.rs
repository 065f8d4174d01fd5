//! Sinks chosen on the command line with `--sink KIND[:ARG]`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::str::FromStr;

use call_assembler::Call;
use cdr_sinks::SinkError;
use cdr_sinks::jsonl::JsonlSink;

/// A sink as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// `jsonl:PATH` (`jsonl:-` or `jsonl` alone: standard output): one call per line, appended.
    Jsonl(Option<PathBuf>),
}

impl FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("jsonl", None | Some("-")) => Ok(Self::Jsonl(None)),
            ("jsonl", Some("")) => Err("jsonl:PATH needs a path (or - for stdout)".into()),
            ("jsonl", Some(path)) => Ok(Self::Jsonl(Some(PathBuf::from(path)))),
            (other, _) => Err(format!(
                "unknown sink kind {other:?}; known kinds: jsonl[:PATH]"
            )),
        }
    }
}

/// An open sink.
pub struct Sink {
    name: String,
    inner: JsonlSink<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("name", &self.name).finish()
    }
}

impl Sink {
    /// Opens the sink a spec names (creating the file if needed).
    pub fn open(spec: &SinkSpec) -> io::Result<Self> {
        match spec {
            SinkSpec::Jsonl(None) => Ok(Self {
                name: "jsonl:-".into(),
                inner: JsonlSink::new(Box::new(io::stdout())),
            }),
            SinkSpec::Jsonl(Some(path)) => {
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                Ok(Self {
                    name: format!("jsonl:{}", path.display()),
                    inner: JsonlSink::new(Box::new(io::BufWriter::new(file))),
                })
            }
        }
    }

    /// The sink as the user named it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delivers one call.
    pub fn send(&mut self, call: &Call) -> Result<(), SinkError> {
        self.inner.send(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sink_specs() {
        assert_eq!("jsonl".parse(), Ok(SinkSpec::Jsonl(None)));
        assert_eq!("jsonl:-".parse(), Ok(SinkSpec::Jsonl(None)));
        assert_eq!(
            "jsonl:out.jsonl".parse(),
            Ok(SinkSpec::Jsonl(Some("out.jsonl".into())))
        );
        assert!("jsonl:".parse::<SinkSpec>().is_err());
        assert!("carrier-pigeon".parse::<SinkSpec>().is_err());
    }
}
