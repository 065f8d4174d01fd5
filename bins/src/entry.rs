//! The five relays' `main`s, one function each, and the multi-call binary's dispatch.
//!
//! Each relay's binary in `src/bin/` only calls its function here with `std::env::args_os()`.
//! So does `cdr-relay`, the one binary the Debian package ships, through [`multi_call`]: it
//! runs the relay named by the name it is invoked as (`/usr/bin/smdr-relay`, a link to it) or
//! by its first argument (`cdr-relay smdr-relay --check-config`). Either way the relay's parser
//! sees `RELAY ARGS...`, so `--help`, `--version` and clap's errors name the relay.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use crate::settings::{
    AmiArgs, Args, CommonArgs, Config, ConfigError, ListArgs, NatsRelayArgs, ReceiverArgs,
};

/// `smdr-relay`: Avaya IP Office SMDR in, completed calls out. `args` as `std::env::args_os()`
/// gives them, the program's name first.
pub fn smdr_relay<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run(
        "smdr-relay",
        Args::parse_from(args),
        |a| &a.common,
        Config::resolve,
    )
}

/// `ami-relay`: the Asterisk Manager Interface (or Asterisk's CEL/CDR files or tables) in,
/// completed calls out. `args` as `std::env::args_os()` gives them, the program's name first.
pub fn ami_relay<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run(
        "ami-relay",
        AmiArgs::parse_from(args),
        |a| &a.common,
        Config::resolve_ami,
    )
}

/// `list-relay`: a predictive dialler's CDR list in Redis in, completed calls out. `args` as
/// `std::env::args_os()` gives them, the program's name first.
pub fn list_relay<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run(
        "list-relay",
        ListArgs::parse_from(args),
        |a| &a.common,
        Config::resolve_list,
    )
}

/// `cdr-receiver`: Cisco Meeting Server CDR posts in, completed meetings out. `args` as
/// `std::env::args_os()` gives them, the program's name first.
pub fn cdr_receiver<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run(
        "cdr-receiver",
        ReceiverArgs::parse_from(args),
        |a| &a.common,
        Config::resolve_receiver,
    )
}

/// `nats-relay`: the hub; calls published by relays to NATS JetStream in, one store and web page
/// for the fleet, and the sinks. `args` as `std::env::args_os()` gives them, the program's name
/// first.
pub fn nats_relay<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run(
        "nats-relay",
        NatsRelayArgs::parse_from(args),
        |a| &a.common,
        Config::resolve_nats,
    )
}

/// What every relay's `main` does with its parsed arguments: `--hash-password`, else resolve the
/// settings and run (or check them).
fn run<A>(
    name: &str,
    args: A,
    common: fn(&A) -> &CommonArgs,
    resolve: fn(&A) -> Result<Config, ConfigError>,
) -> ExitCode {
    if common(&args).hash_password {
        return crate::hash_password_main();
    }
    crate::main_with(name, common(&args).check_config, || resolve(&args))
}

/// A relay's `main`, as the multi-call binary calls it.
type RelayMain = fn(Vec<OsString>) -> ExitCode;

/// The relays the multi-call binary runs: name, what it does (for the usage), its `main`.
const RELAYS: [(&str, &str, RelayMain); 5] = [
    (
        "smdr-relay",
        "Avaya IP Office SMDR in",
        smdr_relay::<Vec<OsString>, OsString>,
    ),
    (
        "ami-relay",
        "Asterisk (AMI, CEL/CDR files or tables) in",
        ami_relay::<Vec<OsString>, OsString>,
    ),
    (
        "list-relay",
        "a dialler's CDR list in Redis in",
        list_relay::<Vec<OsString>, OsString>,
    ),
    (
        "cdr-receiver",
        "Cisco Meeting Server CDR posts in",
        cdr_receiver::<Vec<OsString>, OsString>,
    ),
    (
        "nats-relay",
        "the hub: calls from relays via NATS JetStream in",
        nats_relay::<Vec<OsString>, OsString>,
    ),
];

/// The names the multi-call binary answers to, as [`multi_call`] matches them.
pub const RELAY_NAMES: [&str; 5] = [
    RELAYS[0].0,
    RELAYS[1].0,
    RELAYS[2].0,
    RELAYS[3].0,
    RELAYS[4].0,
];

/// The relay named `name` (a file name, or the first argument): its `main`.
fn relay_named(name: &std::ffi::OsStr) -> Option<RelayMain> {
    RELAYS
        .iter()
        .find(|(relay, _, _)| name == *relay)
        .map(|(_, _, main)| *main)
}

/// The multi-call binary's `main` (`cdr-relay`): runs the relay named by the file name it was
/// invoked as (the last part of `args`' first item, the program: a link named `smdr-relay`), or
/// else by its first argument, which is then dropped (`cdr-relay smdr-relay ARGS...` runs
/// `smdr-relay ARGS...`). `--help` and `--version` alone describe `cdr-relay` itself; anything
/// else prints the usage, listing the relays, on standard error and gives exit code 2.
pub fn multi_call(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let invoked = args
        .first()
        .and_then(|program| Path::new(program).file_name())
        .map(std::ffi::OsStr::to_os_string);
    if let Some(main) = invoked.as_deref().and_then(relay_named) {
        return main(args);
    }
    if let Some(main) = args.get(1).and_then(|first| relay_named(first)) {
        args.remove(0);
        return main(args);
    }
    let invoked = invoked.map_or_else(
        || "cdr-relay".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    );
    let first = args.get(1).map(|a| a.to_string_lossy().into_owned());
    match first.as_deref() {
        Some("--help" | "-h") if args.len() == 2 => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{}", usage(&invoked)).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Some("--version" | "-V") if args.len() == 2 => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "cdr-relay {}", crate::VERSION).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Some(other) => {
            eprintln!("{invoked}: no relay named {other:?}\n\n{}", usage(&invoked));
            ExitCode::from(2)
        }
        None => {
            eprintln!("{}", usage(&invoked));
            ExitCode::from(2)
        }
    }
}

/// The multi-call binary's usage: how to name a relay, and the relays.
fn usage(invoked: &str) -> String {
    let mut text = format!(
        "cdr-relay {}: the five relays in one program.\n\n\
         Usage: {invoked} RELAY [ARGS]...\n       \
         RELAY [ARGS]...    (invoked through a link to it named after the relay)\n\n\
         Relays:\n",
        crate::VERSION
    );
    for (name, what, _) in RELAYS {
        text.push_str(&format!("  {name:<14}{what}\n"));
    }
    text.push_str(&format!("\n`{invoked} RELAY --help` describes each."));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_relay_is_found_by_its_name_and_no_other_name_is() {
        for name in RELAY_NAMES {
            assert!(relay_named(name.as_ref()).is_some(), "{name}");
        }
        for name in [
            "cdr-relay",
            "",
            "smdr-relay.exe",
            "SMDR-RELAY",
            "smdr",
            "relay",
        ] {
            assert!(relay_named(name.as_ref()).is_none(), "{name:?}");
        }
    }

    #[test]
    fn the_usage_lists_every_relay() {
        let text = usage("cdr-relay");
        for name in RELAY_NAMES {
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(name)),
                "{name} in\n{text}"
            );
        }
    }
}
