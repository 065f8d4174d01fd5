//! `ami-relay`: the Asterisk Manager Interface in, completed calls out. See `--help`.

use std::process::ExitCode;

use cdr_relay::settings::{AmiArgs, Config};
use clap::Parser;

fn main() -> ExitCode {
    let args = AmiArgs::parse();
    if args.common.hash_password {
        return cdr_relay::hash_password_main();
    }
    cdr_relay::main_with("ami-relay", args.common.check_config, || {
        Config::resolve_ami(&args)
    })
}
