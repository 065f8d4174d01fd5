//! `cdr-receiver`: Cisco Meeting Server CDR posts in, completed meetings out. See `--help`.
//! Its `main` is [`cdr_relay::entry::cdr_receiver`], which the multi-call `cdr-relay` runs too.

use std::process::ExitCode;

fn main() -> ExitCode {
    cdr_relay::entry::cdr_receiver(std::env::args_os())
}
