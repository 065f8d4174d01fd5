//! Invariant checks shared by the fuzz targets in `fuzz_targets/`.
//!
//! `smdr_checks` depends on `smdr_parse` and `std` only: `smdr-parse/tests/fuzz_corpus.rs`
//! includes the same file with `#[path]`, so replaying the corpus on stable checks exactly what
//! the fuzzer checks. `ami_checks` does the same for `ami_proto`
//! (`ami-proto/tests/fuzz_corpus.rs`), and `ami_assembler_checks` for `call_assembler`'s
//! `AmiAssembler` (`call-assembler/tests/fuzz_corpus.rs`), `cms_checks` for the CMS XML
//! reader, writer and assembler (`call-assembler/tests/cms_fuzz_corpus.rs`), and
//! `asterisk_rows_checks` for the Asterisk CSV rows: the `csv` module, `CelColumns`, `CelRow`
//! and `AmiAssembler::call_from_cdr` (`call-assembler/tests/asterisk_rows_fuzz_corpus.rs`).

pub mod ami_assembler_checks;
pub mod ami_checks;
pub mod asterisk_rows_checks;
pub mod cms_checks;
pub mod smdr_checks;
