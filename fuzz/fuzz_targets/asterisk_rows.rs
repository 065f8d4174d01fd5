//! The Asterisk CSV rows code of `call_assembler` on arbitrary bytes: the `csv` module's record
//! scanning (`record_end`, `RecordScanner` fed in chunks), `split_record` and `write_record`;
//! `CelColumns::from_mapping` / `parse_list`; `CelRow::from_fields`; the CEL rows through an
//! `AmiAssembler` (rows, timeouts, flush); and `AmiAssembler::call_from_cdr` on the records read
//! as cdr_csv rows.
//!
//! The input decodes by hand (see `cdr_relay_fuzz::asterisk_rows_checks`, which documents the
//! encoding and every invariant checked); the same file replays the corpus on stable in
//! `call-assembler/tests/asterisk_rows_fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cdr_relay_fuzz::asterisk_rows_checks::check_asterisk_rows(data);
});
