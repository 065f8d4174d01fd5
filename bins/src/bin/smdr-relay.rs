//! `smdr-relay`: Avaya IP Office SMDR in, completed calls out. See `--help`.

use std::process::ExitCode;

use cdr_relay::settings::{Args, Config};
use clap::Parser;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.common.hash_password {
        return cdr_relay::hash_password_main();
    }
    cdr_relay::main_with("smdr-relay", args.common.check_config, || {
        Config::resolve(&args)
    })
}
