//! `ami_proto::AmiMessage::parse` and `ami_proto::parse_ami` on arbitrary bytes.
//!
//! Checks (see `cdr_relay_fuzz::ami_checks::check_ami_parse`): valid header names, the round
//! trip `parse(write(m)) == m`, `parse_ami` agreeing with the framer (`0 < consumed <= len`,
//! strict prefixes `Incomplete`, the same errors), every typed accessor without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cdr_relay_fuzz::ami_checks::check_ami_parse(data);
});
