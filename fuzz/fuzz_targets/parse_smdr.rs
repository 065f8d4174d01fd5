//! `smdr_parse::parse_smdr` and `SmdrRecord::parse` on arbitrary bytes.
//!
//! Checks (see `cdr_relay_fuzz::smdr_checks::check_parse_smdr`): `0 < consumed <= len` on
//! `Complete`, `offset <= len` on errors, the round trip `parse(to_line(r)) == r`, and that
//! `parse_smdr` + `skip_line` agree with the framer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cdr_relay_fuzz::smdr_checks::check_parse_smdr(data);
});
