//! Runtime glue for the cdr-relay binaries: configuration, sources (TCP in both directions,
//! replay), the pipeline from bytes to outbox batches, delivery workers, the built-in web server,
//! metrics, logging, Sentry and signals. The binaries in `src/bin/` only parse arguments and call
//! into this library.
//!
//! What it does not do: parse wire formats or assemble calls (the lower crates), or deliver to a
//! sink (`cdr-sinks`).
#![deny(missing_docs)]

pub mod config;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod runtime;
pub mod sentry;
pub mod sentry_events;
pub mod signals;
pub mod sinks;
pub mod source;
pub mod web;
