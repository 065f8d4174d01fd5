//! Delivery of completed calls to where users want them, without losing one.
//!
//! What it does:
//! * [`outbox`]: the durable SQLite outbox (WAL, fsync at every commit): the journal of open
//!   calls' records, every completed call (which is also the call store behind the web page),
//!   one delivery row per call and sink, attempts, next try, dead letters, and rejected input;
//! * [`store`]: reading the call store (a page of calls with filters, one call with its
//!   deliveries, dead letters, calls per hour, delivery counts) for the web page and its API;
//! * [`engine`]: a delivery worker per sink with bounded concurrency, a clock-free retry policy
//!   ([`backoff`]), `Retry-After`, dead letters and pausing a sink that refuses us;
//! * the sinks: [`webhook`] (hyper, rustls, Standard Webhooks signatures), [`redis_list`]
//!   (`LPUSH`/`RPUSH` of a batch per round trip, `redis://` or `rediss://`) and [`jsonl`].
//!
//! What it does not do: parse wire formats, assemble calls or read from a phone system; that is
//! the job of the crates below it and of `bins`.
#![deny(missing_docs)]

pub mod backoff;
pub mod engine;
pub mod http_cdr;
pub mod http_cdr_sink;
pub mod jsonl;
pub mod outbox;
pub mod redis_list;
pub mod store;
pub mod webhook;

use std::time::Duration;

pub use call_assembler::Call;

/// Why a sink could not take a call, and so what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The receiver could not be reached (refused, DNS, TLS, timed out): retry later; the sink
    /// as a whole backs off and the call's attempt count is not used up.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The attempt failed in a way a retry may fix (HTTP 408, 429, 5xx, a reset mid-request).
    #[error("{reason}")]
    Retryable {
        /// What happened.
        reason: String,
        /// The receiver's `Retry-After`, a floor for the next delay.
        retry_after: Option<Duration>,
    },
    /// The receiver refuses us as a whole (HTTP 401, 403, 410): pause the sink and report it.
    #[error("sink paused: {reason}")]
    Paused {
        /// What happened.
        reason: String,
        /// The receiver's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The receiver rejected this call (other 4xx): retrying will not help; dead-letter it.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Writing failed (disk full, pipe closed, ...); a retry may succeed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The call could not be encoded; retrying will not help.
    #[error("encoding failed: {0}")]
    Encode(#[from] serde_json::Error),
    /// The sink is misconfigured (bad URL, secret or certificate file).
    #[error("configuration: {0}")]
    Config(String),
}

impl SinkError {
    /// Whether sending the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::Retryable { .. } | Self::Paused { .. } | Self::Io(_)
        )
    }
}
