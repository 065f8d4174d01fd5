//! Delivery of completed calls to where users want them, without losing one.
//!
//! A relay (or your own program) commits what its source produced to the [`outbox`], a SQLite
//! file; one delivery worker per sink ([`engine::run_worker`]) takes the calls that are due from
//! it, hands them to the sink and writes each outcome back. A crash at any point loses nothing: a
//! call is in the outbox before its source is acknowledged, and stays due until its sink took it
//! or it was given up on. Delivery is at least once: a call whose answer was lost is sent again,
//! under the same stable id ([`Call::id`]), so a receiver can drop the duplicate.
//!
//! What it does:
//! * [`outbox`]: the durable SQLite outbox (WAL, fsync at every commit): the journal of open
//!   calls' records, every completed call (which is also the call store behind the web page),
//!   one delivery row per call and sink, attempts, next try, dead letters, and rejected input;
//! * [`integrity`]: a read-only `quick_check` of an outbox file before it is opened;
//! * [`retention`]: pruning what is delivered and old, or past a size limit, in small
//!   transactions (never a pending delivery nor the journal); [`rejects`]: rejected input kept
//!   as a prefix, its length and hash;
//! * [`store`]: reading the call store (a page of calls with filters, one call with its
//!   deliveries, dead letters, calls per hour, delivery counts) for the web page and its API;
//! * [`engine`]: a delivery worker per sink with bounded concurrency or in-order batches, a
//!   clock-free retry policy ([`backoff`]), `Retry-After`, dead letters and pausing a sink that
//!   refuses us;
//! * [`admin`]: what an operator does by hand: dead letters re-queued, a sink paused and resumed
//!   (kept in the outbox across restarts);
//! * [`Sink`], the extension point: a sink delivers a batch of [`Outgoing`] items (stable id,
//!   stored JSON, the [`Call`] decoded for it) and answers per item or for the whole batch with a
//!   [`SinkError`] that says whether a retry makes sense; it says how it wants to be driven
//!   ([`Drive`]). A sink written in another crate plugs into the engine as the built-in ones do;
//!   [`BoxSink`] holds sinks of different types in one list;
//! * the built-in sinks: [`webhook`] (hyper, rustls, Standard Webhooks signatures),
//!   [`redis_list`] (`LPUSH`/`RPUSH` of a batch per round trip, `redis://` or `rediss://`),
//!   [`http_cdr_sink`] (calls as Cisco Meeting Server CDR records, [`http_cdr`]), [`sql`]
//!   (rows of `calls` and `call_legs` in PostgreSQL or MySQL/MariaDB, a transaction per batch),
//!   [`nats`] (JetStream, delivered on the stream's acknowledgement, `Nats-Msg-Id` = the stable
//!   id) and [`jsonl`].
//!
//! What it does not do: parse wire formats, assemble calls or read from a phone system (the
//! crates below it: `smdr-parse`, `ami-proto`, `call-assembler`), nor read configuration or
//! serve metrics and web pages (`bins`). A sink does not retry, wait or drop anything on its own:
//! the engine decides all of that from the sink's answers.
//!
//! # Example
//!
//! A call committed to an outbox in a temporary directory and delivered by a worker to the JSONL
//! sink (one line of JSON per call):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//!
//! use call_assembler::{Output, SmdrAssembler, SmdrAssemblerConfig};
//! use cdr_sinks::backoff::RetryPolicy;
//! use cdr_sinks::engine::{SinkStats, SinkWorker, now_ms, run_worker};
//! use cdr_sinks::jsonl::JsonlSink;
//! use cdr_sinks::outbox::{Batch, Outbox};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A completed call: one SMDR record, assembled (the crates below this one do that part).
//! let line = b"2018/01/04 23:43:36,00:34:11,10,6047535970,I,206,6040116587,,0,1017747,0,\
//!     E241,Volunteer8,T9005,Line 5.0,0,0,,,,,,,,,,,,,,192.168.1.21,2,192.168.1.21,294282";
//! let mut smdr = SmdrAssembler::new(SmdrAssemblerConfig::default());
//! smdr.handle_record(Instant::now(), &smdr_parse::SmdrRecord::parse(line)?);
//! let Some(Output::Call(call)) = smdr.poll_output() else {
//!     panic!("a call with one record is complete at once");
//! };
//!
//! // Commit it, durably, for one sink named "jsonl".
//! let dir = std::env::temp_dir().join(format!("cdr-sinks-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let db = dir.join("outbox.db");
//! # let _ = std::fs::remove_file(&db);
//! let mut outbox = Outbox::open(&db, &["jsonl".to_owned()])?;
//! outbox.commit(&Batch { calls: vec![call.clone()], ..Batch::default() }, now_ms())?;
//!
//! // Deliver it: a worker drives the sink until it is told to stop.
//! let out = dir.join("calls.jsonl");
//! let worker = SinkWorker {
//!     name: "jsonl".to_owned(),
//!     sink: JsonlSink::new(std::fs::File::create(&out)?),
//!     policy: RetryPolicy::default(),
//!     stats: Arc::new(SinkStats::default()),
//! };
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let (stop, stopped) = tokio::sync::watch::channel(false);
//!     let wake = Arc::new(tokio::sync::Notify::new());
//!     let task = tokio::spawn(run_worker(db.clone(), worker, wake, stopped));
//!     while !outbox.counts()?.iter().any(|c| c.sink == "jsonl" && c.delivered == 1) {
//!         tokio::time::sleep(Duration::from_millis(10)).await;
//!     }
//!     stop.send(true)?;
//!     task.await??;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! assert_eq!(std::fs::read_to_string(&out)?, serde_json::to_string(&call)? + "\n");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! A sink of your own implements [`Sink`] (see its docs for an example) and goes in the same
//! [`engine::SinkWorker`].
#![deny(missing_docs)]

pub mod admin;
pub mod backoff;
pub mod body;
pub mod engine;
pub mod http_cdr;
pub mod http_cdr_sink;
pub mod integrity;
pub mod jsonl;
pub mod nats;
pub mod outbox;
pub mod redact;
pub mod redis_list;
pub mod rejects;
pub mod retention;
pub mod sink;
pub mod sql;
pub mod store;
pub mod webhook;

use std::time::Duration;

pub use call_assembler::Call;
pub use sink::{BatchResult, BoxSink, Drive, Outgoing, Sink};

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
