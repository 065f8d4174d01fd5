//! `list-relay`: a predictive dialler's CDR list in Redis in, completed calls out. See `--help`.
//! Its `main` is [`cdr_relay::entry::list_relay`], which the multi-call `cdr-relay` runs too.

use std::process::ExitCode;

fn main() -> ExitCode {
    cdr_relay::entry::list_relay(std::env::args_os())
}
