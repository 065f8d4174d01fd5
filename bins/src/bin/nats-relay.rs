//! `nats-relay`: the hub; calls published by relays to NATS JetStream in, one store and web
//! page for the fleet, and the sinks. See `--help`.
//! Its `main` is [`cdr_relay::entry::nats_relay`], which the multi-call `cdr-relay` runs too.

use std::process::ExitCode;

fn main() -> ExitCode {
    cdr_relay::entry::nats_relay(std::env::args_os())
}
