use super::*;
use crate::feed::{CmsFeed, CmsInput};
use crate::{Anomaly, CmsAnomaly, CmsAssemblerConfig, parse_cms_xml};

fn build(now: Instant, _now_ms: i64, saved: &Restored) -> CmsFeed {
    CmsFeed::restore("cms", CmsAssemblerConfig::default(), now, saved)
}

fn post(raw: Vec<u8>) -> CmsInput {
    match parse_cms_xml(&raw) {
        Ok(batch) => {
            let batch = batch.into_owned();
            CmsInput::Batch { raw, batch }
        }
        Err(e) => CmsInput::Reject {
            raw,
            reason: e.to_string(),
        },
    }
}

/// The ten posts of the three-leg meeting, in order (the tenth resends the first record's
/// index with a bogus `callEnd`).
fn posts() -> Vec<CmsInput> {
    (1..=10)
        .map(|i| post(fixture(&format!("cms/meeting_3legs/posts/{i:02}.xml"))))
        .collect()
}

#[test]
fn a_meeting_is_one_call_and_a_resent_index_is_dropped() {
    let store = drive(posts(), Duration::from_secs(1), None, build);
    assert_eq!(store.calls.len(), 1);
    let call = &store.calls[0];
    assert!(call.complete);
    assert_eq!(call.legs.len(), 3);
    assert_eq!(store.inputs, 10, "every body kept as received");
    assert_eq!(store.records.len(), 10, "every new record kept once");
    assert!(store.saved.journal.is_empty());
    assert!(store.saved.state("cms/sessions").is_some());
}

#[test]
fn a_crash_mid_meeting_loses_and_doubles_nothing() {
    let straight = drive(posts(), Duration::from_secs(1), None, build);
    for crash in 0..9 {
        let crashed = drive(posts(), Duration::from_secs(1), Some(crash), build);
        assert_same_calls(&straight, &crashed);
        assert_eq!(crashed.records, straight.records, "{crash}");
        assert!(crashed.saved.journal.is_empty(), "{crash}");
        if (1..8).contains(&crash) {
            assert_eq!(crashed.open_at_crash, Some(1), "{crash}");
        }
    }
}

#[test]
fn posts_resent_after_a_restart_are_duplicates() {
    let start = t0();
    let mut feed = CmsFeed::new("cms", CmsAssemblerConfig::default(), start);
    let mut store = Store::default();
    let all = posts();
    let mut now = start;
    for p in all.into_iter().take(5) {
        now += Duration::from_secs(1);
        feed.handle_input(now, p);
        store.commit(&mut feed, wall(start, now));
    }
    let kept = store.records.len();
    drop(feed);
    let mut feed = CmsFeed::restore("cms", CmsAssemblerConfig::default(), now, &store.saved);
    // CMS resends what it did not see acknowledged: posts 3 to 5 again, then the rest.
    for p in posts().into_iter().skip(2) {
        now += Duration::from_secs(1);
        feed.handle_input(now, p);
        store.commit(&mut feed, wall(start, now));
    }
    feed.handle_end(now);
    store.commit(&mut feed, wall(start, now));
    assert_eq!(store.records.len(), kept + 5, "posts 3 to 5 dropped");
    assert_eq!(
        feed.dropped().0,
        4,
        "3 resent records and the bogus callEnd"
    );
    assert_eq!(store.calls.len(), 1);
    assert!(store.calls[0].complete);
}

#[test]
fn surprises_come_out_as_anomalies_and_bad_bodies_as_rejects() {
    let now = t0();
    let mut feed = CmsFeed::new("cms", CmsAssemblerConfig::default(), now);
    let stray = br#"<?xml version="1.0"?><records session="s1"><record type="callLegEnd" time="2022-05-17T10:07:29Z" recordIndex="5"><callLeg id="nobody"><reason>remoteTeardown</reason></callLeg></record></records>"#;
    feed.handle_input(now, post(stray.to_vec()));
    feed.handle_input(now, post(b"<records><record".to_vec()));
    let missing = br#"<?xml version="1.0"?><records session="s1"><record type="callStart" time="2022-05-17T10:07:29Z" recordIndex="9" numPreceedingRecordsMissing="3"><call id="c"><name>x</name></call></record></records>"#;
    feed.handle_input(now, post(missing.to_vec()));
    let mut store = Store::default();
    store.commit(&mut feed, T0_MS);
    assert!(
        store.events.iter().any(|e| matches!(
            e,
            Event::Anomaly(Anomaly::Cms {
                anomaly: CmsAnomaly::Unattached { .. }
            })
        )),
        "{:?}",
        store.events
    );
    assert_eq!(store.rejects, 1);
    assert_eq!(
        store
            .events
            .iter()
            .filter(|e| matches!(e, Event::BadInput { .. }))
            .count(),
        2,
        "the bad body and the missing records"
    );
    assert_eq!(feed.dropped().1, 3);
    assert_eq!(feed.open_calls(), 1);
    assert!(feed.poll_timeout().is_some());
}

/// A record of the meeting's session with index `index` starting a call of its own.
fn forged(index: u64) -> CmsInput {
    post(format!(
        r#"<?xml version="1.0"?><records session="5552fc55-8d82-4963-8f99-d5a0be6e2f92"><record type="callStart" time="2017-04-24T12:00:00Z" recordIndex="{index}" correlatorIndex="0"><call id="forged-{index}"><name>x</name></call></record></records>"#
    ).into_bytes())
}

#[test]
fn a_forged_index_hides_no_genuine_record_even_across_a_restart() {
    let start = t0();
    let mut now = start;
    let mut feed = CmsFeed::new("cms", CmsAssemblerConfig::default(), start);
    let mut store = Store::default();
    let mut all = posts().into_iter();
    // The first post, then a forged one far ahead, then the rest with a restart in between.
    for p in [all.next().unwrap(), forged(99_999_999)] {
        now += Duration::from_secs(1);
        feed.handle_input(now, p);
        store.commit(&mut feed, wall(start, now));
    }
    for p in all.by_ref().take(3) {
        now += Duration::from_secs(1);
        feed.handle_input(now, p);
        store.commit(&mut feed, wall(start, now));
    }
    drop(feed);
    let mut feed = CmsFeed::restore("cms", CmsAssemblerConfig::default(), now, &store.saved);
    for p in [forged(99_999_999)].into_iter().chain(all) {
        now += Duration::from_secs(1);
        feed.handle_input(now, p);
        store.commit(&mut feed, wall(start, now));
    }
    feed.handle_end(now);
    store.commit(&mut feed, wall(start, now));
    assert_eq!(
        store.records.len(),
        11,
        "the 10 genuine records and the forged one, each once"
    );
    assert_eq!(
        feed.dropped().0,
        2,
        "the resent forged record and post 10's resent index"
    );
    let meeting: Vec<_> = store
        .calls
        .iter()
        .filter(|c| c.call_id.as_str() == "f54bfbc3-c11e-47a6-a918-6a308018ac1d")
        .collect();
    assert_eq!(meeting.len(), 1);
    assert!(meeting[0].complete);
    assert_eq!(meeting[0].legs.len(), 3);
}
