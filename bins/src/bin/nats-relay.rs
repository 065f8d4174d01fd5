//! `nats-relay`: the hub; calls published by relays to NATS JetStream in, one store and web
//! page for the fleet, and the sinks. See `--help`.

use std::process::ExitCode;

use cdr_relay::settings::{Config, NatsRelayArgs};
use clap::Parser;

fn main() -> ExitCode {
    let args = NatsRelayArgs::parse();
    if args.common.hash_password {
        return cdr_relay::hash_password_main();
    }
    cdr_relay::main_with("nats-relay", args.common.check_config, || {
        Config::resolve_nats(&args)
    })
}
