//! `list-relay`: a predictive dialler's CDR list in Redis in, completed calls out. See `--help`.

use std::process::ExitCode;

use cdr_relay::settings::{Config, ListArgs};
use clap::Parser;

fn main() -> ExitCode {
    let args = ListArgs::parse();
    if args.common.hash_password {
        return cdr_relay::hash_password_main();
    }
    cdr_relay::main_with("list-relay", args.common.check_config, || {
        Config::resolve_list(&args)
    })
}
