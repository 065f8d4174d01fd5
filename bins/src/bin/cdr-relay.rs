//! `cdr-relay`: the five relays in one program, the one the Debian package ships. Invoked
//! through a link named after a relay (`/usr/bin/smdr-relay -> cdr-relay`) it runs that relay;
//! else its first argument names the relay (`cdr-relay smdr-relay --help`). See
//! [`cdr_relay::entry::multi_call`].

use std::process::ExitCode;

fn main() -> ExitCode {
    cdr_relay::entry::multi_call(std::env::args_os())
}
