//! `smdr_parse::SmdrFramer` fed a stream in chunks whose sizes come from the input.
//!
//! Input layout and checks: see `cdr_relay_fuzz::smdr_checks::FramerInput` and `check_framer`
//! (chunked == at once == the documented frames, increasing line numbers, bounded buffer).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cdr_relay_fuzz::smdr_checks::check_framer(data);
});
