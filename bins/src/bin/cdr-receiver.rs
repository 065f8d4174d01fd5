//! `cdr-receiver`: Cisco Meeting Server CDR posts in, completed meetings out. See `--help`.

use std::process::ExitCode;

use cdr_relay::settings::{Config, ReceiverArgs};
use clap::Parser;

fn main() -> ExitCode {
    let args = ReceiverArgs::parse();
    if args.common.hash_password {
        return cdr_relay::hash_password_main();
    }
    cdr_relay::main_with("cdr-receiver", args.common.check_config, || {
        Config::resolve_receiver(&args)
    })
}
