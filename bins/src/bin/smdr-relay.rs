//! `smdr-relay`: Avaya IP Office SMDR in, completed calls out. See `--help`.
//! Its `main` is [`cdr_relay::entry::smdr_relay`], which the multi-call `cdr-relay` runs too.

use std::process::ExitCode;

fn main() -> ExitCode {
    cdr_relay::entry::smdr_relay(std::env::args_os())
}
