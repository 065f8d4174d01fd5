//! Runtime glue for the cdr-relay binaries: reading sources, choosing sinks, running the
//! assemblers. The binaries in `src/bin/` only parse arguments and call into this library.
//!
//! What it does today: replay SMDR from a file or stdin through the SMDR assembler into
//! JSON Lines sinks ([`replay`]), with bad lines reported and kept.
//!
//! What it does not do yet: live TCP sources, the outbox and network sinks arrive with the relay.
#![deny(missing_docs)]

pub mod replay;
pub mod sinks;
