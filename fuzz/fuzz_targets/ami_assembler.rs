//! `call_assembler::AmiAssembler` driven by arbitrary sequences of AMI events, resyncs, clock
//! moves (forward and back, `now` and the events' wall clock apart), timeouts and flushes, in
//! complete and progressive mode.
//!
//! The input decodes by hand (see `cdr_relay_fuzz::ami_assembler_checks`, which documents the
//! encoding and every invariant checked); the same file replays the corpus on stable in
//! `call-assembler/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cdr_relay_fuzz::ami_assembler_checks::check_ami_assembler(data);
});
