//! Asterisk Manager Interface (AMI) protocol: framing `Key: Value` messages, parsing them into
//! borrowed views, and writing actions.
//!
//! This crate is a placeholder in this release: the framer, the typed event views and the
//! optional `tokio` client arrive with the AMI source. Like `smdr-parse`, its core will do no IO
//! and read no clock.
#![deny(missing_docs)]
