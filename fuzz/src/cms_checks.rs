//! Checks for the `cms_parse` target: the CMS CDR XML reader and writer
//! (`call_assembler::parse_cms_xml`, `write_cms_batch`, the same functions
//! `cdr_sinks::http_cdr` re-exports) and the `CmsAssembler` fed with what they read.
//!
//! Uses only `call_assembler` and `std`, so `call-assembler/tests/cms_fuzz_corpus.rs` includes
//! it with `#[path]` and replays the corpus on stable.
//!
//! On arbitrary bytes:
//! * parsing never panics; an error's position is within the input;
//! * a body that parses writes back to itself: `parse(write(parse(x))) == parse(x)`, and
//!   writing that again gives the same bytes;
//! * limits only refuse: a body that parses under tight limits parses to the same value under
//!   the default ones;
//! * the records, fed to a `CmsAssembler` (small caps: 2 open calls, 6 records per call,
//!   3 remembered calls, a 30 s idle timeout, 7 s between records, handled twice so the second
//!   pass meets duplicates, late records and later parts) never panic it; `poll_timeout` is
//!   after `now` once it ran; open calls stay within the cap; every emitted call has
//!   `start_time <= end_time`, distinct leg ids, `complete` exactly when it has no flush reason,
//!   and an id no other emitted call has; every record handled is in exactly one call's `cdr`
//!   rows or counted as dropped (duplicate, late, unattached, over the limit); and after the
//!   final flush nothing is open, queued or due.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use call_assembler::{
    Anomaly, CmsAssembler, CmsAssemblerConfig, CmsXmlLimits, Output, parse_cms_xml,
    parse_cms_xml_with, write_cms_batch,
};

/// Runs every check on one input.
pub fn check_cms_parse(data: &[u8]) {
    let tight = CmsXmlLimits {
        max_records: 2,
        max_depth: 5,
        max_text: 16,
    };
    let parsed = parse_cms_xml(data);
    if let Ok(small) = parse_cms_xml_with(data, &tight) {
        assert_eq!(
            parsed.as_ref().ok(),
            Some(&small),
            "limits changed the result"
        );
    }
    let batch = match parsed {
        Ok(b) => b,
        Err(e) => {
            assert!(e.position <= data.len(), "error past the input: {e}");
            return;
        }
    };
    let written = write_cms_batch(&batch);
    let again = match parse_cms_xml(&written) {
        Ok(b) => b,
        Err(e) => panic!(
            "a written batch does not parse: {e}\n{}",
            String::from_utf8_lossy(&written)
        ),
    };
    assert_eq!(again, batch, "parse(write(parse(x))) != parse(x)");
    assert_eq!(write_cms_batch(&again), written, "writing is not stable");

    let config = CmsAssemblerConfig {
        site: "fuzz".into(),
        idle_timeout: Duration::from_secs(30),
        max_open_calls: 2,
        max_records_per_call: 6,
        remember_closed: 3,
    };
    let mut asm = CmsAssembler::new(config.clone());
    let base = Instant::now();
    let mut now = base;
    let mut ids = Vec::new();
    let mut rows = 0u64;
    let mut handled = 0u64;
    for _pass in 0..2 {
        for r in &batch.records {
            now += Duration::from_secs(7);
            asm.handle_timeout(now);
            asm.handle_record(now, r);
            handled += 1;
            drain(&mut asm, &mut ids, &mut rows);
            assert!(asm.open_calls() <= config.max_open_calls);
            if let Some(t) = asm.poll_timeout() {
                assert!(t > now, "a deadline not after now");
            }
        }
    }
    asm.flush(now);
    drain(&mut asm, &mut ids, &mut rows);
    let distinct: BTreeSet<&String> = ids.iter().collect();
    if ids.len() <= config.remember_closed {
        assert_eq!(
            distinct.len(),
            ids.len(),
            "a call id emitted twice: {ids:?}"
        );
    }
    assert_eq!(asm.open_calls(), 0);
    assert!(asm.is_idle());
    assert_eq!(asm.poll_timeout(), None);
    let s = asm.stats();
    assert_eq!(s.records, handled);
    assert_eq!(
        rows + s.duplicates + s.late + s.unattached + s.over_limit,
        handled,
        "records lost: {s:?}, {rows} rows"
    );
}

/// Takes every output and anomaly, checking each call; counts the calls' `cdr` rows.
fn drain(asm: &mut CmsAssembler, ids: &mut Vec<String>, rows: &mut u64) {
    while let Some(out) = asm.poll_output() {
        let call = match out {
            Output::Call(call) => call,
            Output::Anomaly(Anomaly::Cms { .. }) => continue,
            other => panic!("the CMS assembler only outputs calls and CMS anomalies: {other:?}"),
        };
        assert!(call.start_time <= call.end_time, "ends before it starts");
        assert_eq!(call.complete, call.flush_reason.is_none());
        let legs: BTreeSet<&str> = call.legs.iter().map(|l| l.uniqueid.as_str()).collect();
        assert_eq!(legs.len(), call.legs.len(), "a leg twice");
        ids.push(call.id.clone());
        *rows += call.cdr.len() as u64;
    }
}
