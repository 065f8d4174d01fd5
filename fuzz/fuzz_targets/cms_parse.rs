//! The CMS CDR XML reader (`call_assembler::parse_cms_xml`, re-exported by
//! `cdr_sinks::http_cdr::parse`) on arbitrary bytes, the writer on what it reads, and the
//! `CmsAssembler` on the records.
//!
//! Checks (see `cdr_relay_fuzz::cms_checks::check_cms_parse`): no panic, error positions within
//! the input, `parse(write(parse(x))) == parse(x)`, limits only refuse, and the assembler's
//! invariants (every record in one call or counted as dropped, nothing open after the flush).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cdr_relay_fuzz::cms_checks::check_cms_parse(data);
});
