//! `ami_proto::AmiFramer` fed a stream in chunks whose sizes come from the input, with limits
//! from the input.
//!
//! Input layout and checks: see `cdr_relay_fuzz::ami_checks::FramerInput` and
//! `check_ami_framer` (chunked == at once == a line-by-line model of the documented framing,
//! limits, bounded buffer, every byte accounted for, messages that parse round-trip).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cdr_relay_fuzz::ami_checks::check_ami_framer(data);
});
