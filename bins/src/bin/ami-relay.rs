//! `ami-relay`: the Asterisk Manager Interface in, completed calls out. See `--help`.
//! Its `main` is [`cdr_relay::entry::ami_relay`], which the multi-call `cdr-relay` runs too.

use std::process::ExitCode;

fn main() -> ExitCode {
    cdr_relay::entry::ami_relay(std::env::args_os())
}
