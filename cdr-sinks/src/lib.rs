//! Delivery of completed calls to where users want them.
//!
//! What it does today: the [`jsonl`] sink, one call per line of JSON to any writer (a file,
//! stdout), used by replays, tests and pipes.
//!
//! What it does not do yet: the durable SQLite outbox, the webhook, Redis list, HTTP CDR and
//! call-store sinks arrive with the relay. It never parses wire formats or reads sockets of a
//! source; that is the job of the crates below it and of `bins`.
#![deny(missing_docs)]

pub mod jsonl;

pub use call_assembler::Call;

/// Why a sink could not take a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Writing failed; a retry may succeed (disk full, pipe closed, ...).
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The call could not be encoded; retrying will not help.
    #[error("encoding failed: {0}")]
    Encode(#[from] serde_json::Error),
}

impl SinkError {
    /// Whether sending the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io(_))
    }
}
