//! The sources: where records come from, each with its own settings type and its own task
//! that hands what it reads to the run loop as [`tcp::SourceEvent`]s.
//!
//! * [`tcp`]: SMDR over TCP (we connect or we listen), the AMI client, a replayed file.
//! * [`redis_list`]: a dialler's CDR list in Redis (`list-relay`).
//! * [`nats`]: a JetStream durable consumer (`nats-relay`, the hub).
//! * [`receiver`]: CMS CDR posts to the built-in web server (`cdr-receiver`).
//! * [`cel_csv`]: Asterisk's cel_custom and cdr_csv files, followed (`CEL_MODE=csv`).
//! * [`cel_db`]: Asterisk's `cel` and `cdr` tables (`CEL_MODE=db`), over [`sql`], the SQL
//!   connection the database readers share.
//! * [`reconnect`]: the one reconnect policy (doubling delays on the shared backoff).
//! * [`recordings`] and [`recordings_db`]: where call recordings are found (directories, a
//!   table).
//!
//! Sources hand over the feeds' input types (`call_assembler::feed`) and depend on nothing else of
//! this crate (not on the settings, which depend on them).

pub mod cel_csv;
pub mod cel_db;
pub mod nats;
pub mod receiver;
pub mod reconnect;
pub mod recordings;
pub mod recordings_db;
pub mod redis_list;
pub mod sql;
pub mod tcp;
