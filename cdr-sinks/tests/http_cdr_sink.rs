//! The HTTP-CDR sink end to end: real calls (SMDR fixture, an Asterisk capture's CEL rows, a
//! CMS meeting) committed to a real outbox file, delivered by the real `run_worker` to small
//! hyper receivers on loopback that read every body with `http_cdr::parse`, keep a record only
//! when its index is above the highest taken (as a CMS receiver does), and feed what they took
//! to a `CmsAssembler`.
//!
//! Every wait polls with a deadline; no fixed sleep is an assertion.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use call_assembler::{
    AmiAssembler, AmiAssemblerConfig, Call, CmsAssembler, CmsAssemblerConfig, CmsRecord,
    CmsRecordKind, Output, Source,
};
use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::engine::{SinkStats, SinkWorker, run_worker};
use cdr_sinks::http_cdr;
use cdr_sinks::http_cdr_sink::{
    HttpCdrConfig, HttpCdrSink, MAX_LEGS, RECORDS_PER_CALL, call_records,
};
use cdr_sinks::{Drive, Sink};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Notify, watch};

const DEADLINE: Duration = Duration::from_secs(60);
const SESSION: &str = "0f7c2d8e-5b1a-4c3e-9d2f-6a8b4e1c7d90";
const SINK: &str = "http-cdr";

// ---------------------------------------------------------------------------------------------
// Calls

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The blind transfer capture (`asterisk/05_blind_transfer`) through the `AmiAssembler`, from
/// the capture's CEL rows (`cel.csv`, the same call as `ami.raw`; the AMI wire parser is not a
/// dependency of this crate).
fn asterisk_calls() -> Vec<Call> {
    let text =
        std::fs::read_to_string(fixtures().join("asterisk/05_blind_transfer/cel.csv")).unwrap();
    let base = Instant::now();
    let mut asm = AmiAssembler::new(AmiAssemblerConfig {
        site: "lab".into(),
        ..AmiAssemblerConfig::default()
    });
    let mut calls = Vec::new();
    let mut first: Option<f64> = None;
    let mut now = base;
    let mut drain = |asm: &mut AmiAssembler| {
        while let Some(o) = asm.poll_output() {
            if let Output::Call(c) = o {
                calls.push(c);
            }
        }
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row = call_assembler::CelRow::parse_csv_line(line).unwrap();
        let s: f64 = row.eventtime.parse().unwrap();
        let f = *first.get_or_insert(s);
        now = base + Duration::from_secs_f64(s - f);
        asm.handle_timeout(now);
        asm.handle_cel_row(now, &row);
        drain(&mut asm);
    }
    asm.handle_timeout(now + Duration::from_secs(30));
    drain(&mut asm);
    assert_eq!(calls.len(), 1);
    assert!(calls[0].legs.len() >= 3, "{:?}", calls[0].legs.len());
    calls
}

/// The CMS meeting of `cms/meeting_3legs` (three legs, one of them known only from updates).
fn cms_calls() -> Vec<Call> {
    let dir = fixtures().join("cms/meeting_3legs/posts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut asm = CmsAssembler::new(CmsAssemblerConfig::default());
    let mut calls = Vec::new();
    // Post 10 is a bogus resend of post 01's index; a receiver drops it by session and index.
    for f in files.iter().take(9) {
        let body = std::fs::read(f).unwrap();
        for r in &http_cdr::parse(&body).unwrap().records {
            asm.handle_record(Instant::now(), r);
        }
        while let Some(o) = asm.poll_output() {
            if let Output::Call(c) = o {
                calls.push(c);
            }
        }
    }
    assert_eq!(calls.len(), 1);
    assert!(calls[0].complete);
    assert_eq!(calls[0].legs.len(), 3);
    calls
}

/// The CMS call id a call is written under.
fn written_id(call: &Call) -> String {
    if call.source == Source::Cms {
        call.call_id.to_string()
    } else {
        call.id.clone()
    }
}

fn legs_written(call: &Call) -> usize {
    let n = if !call.legs.is_empty() {
        call.legs.len()
    } else {
        call.records.len()
    };
    n.min(MAX_LEGS)
}

// ---------------------------------------------------------------------------------------------
// The receiver

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
struct Post {
    status: u16,
    content_type: String,
    authorization: String,
    /// (session, recordIndex) of every record, in body order.
    pairs: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
struct Seen {
    posts: Vec<Post>,
    /// Answer 500 to this many posts first.
    fail_first: usize,
    /// The highest index taken per session.
    highest: BTreeMap<String, u64>,
    /// Records taken, in order.
    taken: Vec<CmsRecord<'static>>,
    /// Records dropped as duplicates (index not above the session's highest).
    duplicates: usize,
    /// Anything wrong with a body.
    errors: Vec<String>,
}

#[derive(Clone)]
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/cdr", self.port)
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CMS-style receiver on `port` (0: any free port).
async fn receiver(port: u16, fail_first: usize) -> Receiver {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen {
        fail_first,
        ..Seen::default()
    }));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let (content_type, authorization) =
                            (header("content-type"), header("authorization"));
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let status = take(&mut s.lock().unwrap(), &body, |n| Post {
                            status: n,
                            content_type,
                            authorization,
                            pairs: Vec::new(),
                        });
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Receiver { port, seen }
}

/// Handles one body: parses it, answers 500 to the first posts, else takes the records whose
/// index is above the session's highest. Returns the status.
fn take(seen: &mut Seen, body: &[u8], post: impl FnOnce(u16) -> Post) -> u16 {
    let status = if seen.posts.len() < seen.fail_first {
        500
    } else {
        200
    };
    let mut post = post(status);
    let batch = match http_cdr::parse(body) {
        Ok(b) => b,
        Err(e) => {
            seen.errors.push(format!("body does not parse: {e}"));
            seen.posts.push(post);
            return 400;
        }
    };
    let session = batch.session.as_deref().unwrap_or_default().to_owned();
    let mut last = None;
    for r in &batch.records {
        let Some(index) = r.record_index else {
            seen.errors.push("a record without recordIndex".into());
            continue;
        };
        if last.is_some_and(|l| index <= l) {
            seen.errors
                .push(format!("indexes not increasing in a post at {index}"));
        }
        last = Some(index);
        if r.preceding_missing.is_some() {
            seen.errors.push("numPreceedingRecordsMissing sent".into());
        }
        post.pairs.push((session.clone(), index));
        if status != 200 {
            continue;
        }
        let highest = seen.highest.entry(session.clone()).or_insert(0);
        if index <= *highest {
            seen.duplicates += 1;
            continue;
        }
        *highest = index;
        seen.taken.push(r.clone().into_owned());
    }
    seen.posts.push(post);
    status
}

/// The calls a receiver's records assemble into (all of them must be complete).
fn assemble(records: &[CmsRecord<'static>]) -> Vec<Call> {
    let mut asm = CmsAssembler::new(CmsAssemblerConfig::default());
    let mut calls = Vec::new();
    for r in records {
        asm.handle_record(Instant::now(), r);
        while let Some(o) = asm.poll_output() {
            match o {
                Output::Call(c) => calls.push(c),
                Output::Anomaly(a) => panic!("anomaly: {a:?}"),
                _ => {}
            }
        }
    }
    assert_eq!(asm.open_calls(), 0, "every call ended");
    calls
}

// ---------------------------------------------------------------------------------------------
// The worker

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdr-sinks-httpcdr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("outbox.db")
}

struct Worker {
    stop: watch::Sender<bool>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

fn start_worker(db: &Path, config: &HttpCdrConfig) -> Worker {
    let sink = HttpCdrSink::new(config).unwrap();
    let worker = SinkWorker {
        name: SINK.to_owned(),
        sink,
        policy: RetryPolicy {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(300),
            ..RetryPolicy::default()
        },
        stats: Arc::new(SinkStats::default()),
    };
    assert!(matches!(worker.sink.drive(), Drive::Batch { .. }));
    let wake = Arc::new(Notify::new());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn({
        let (db, wake) = (db.to_path_buf(), wake.clone());
        async move { run_worker(db, worker, wake, stop_rx).await.unwrap() }
    });
    Worker { stop, wake, task }
}

impl Worker {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_delivered(db: &Path, n: u64) {
    wait_for(&format!("{n} deliveries"), || {
        let c = common::counts(db, SINK);
        assert_eq!(c.dead, 0, "nothing is dead-lettered");
        c.delivered == n && c.pending == 0
    })
    .await;
}

/// Checks that the assembled calls are the delivered ones, one complete call each, their
/// starts in UTC: by the call's own offset when it has its UTC start, else by `offset` (CMS
/// calls never shifted).
fn check_assembled(assembled: &[Call], delivered: &[Call], offset: i64) {
    assert_eq!(assembled.len(), delivered.len());
    let by_id: BTreeMap<&str, &Call> = assembled.iter().map(|c| (c.call_id.as_str(), c)).collect();
    assert_eq!(by_id.len(), delivered.len(), "one call per delivered call");
    for d in delivered {
        let a = by_id
            .get(written_id(d).as_str())
            .unwrap_or_else(|| panic!("call {} not assembled", d.id));
        assert!(a.complete, "{}", d.id);
        assert_eq!(a.legs.len(), legs_written(d), "{}", d.id);
        assert_eq!(a.duration, d.duration, "{}", d.id);
        let shift = match d.start_utc {
            Some(u) => (d.start_time - u.naive_utc()).num_seconds(),
            None if d.source == Source::Cms => 0,
            None => offset,
        };
        assert_eq!(
            a.start_time.and_utc().timestamp(),
            d.start_time.and_utc().timestamp() - shift,
            "{}",
            d.id
        );
        if d.source == Source::Cms {
            let legs = |c: &Call| {
                c.legs
                    .iter()
                    .map(|l| l.uniqueid.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(legs(a), legs(d), "CMS leg ids are kept");
            assert_eq!(a.caller, d.caller);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_out_as_cms_records_with_the_same_indexes_on_every_retry() {
    let db = scratch("retry");
    let mut calls = common::smdr_calls(40);
    // Half of the SMDR calls as stored before `start_utc` existed: the setting's offset applies
    // to those; the others, from a PBX two hours ahead of UTC, are written by their own.
    for (i, c) in calls.iter_mut().enumerate() {
        if i % 2 == 0 {
            (c.start_utc, c.end_utc, c.utc_offset) = (None, None, None);
        } else {
            c.set_utc_times(&call_assembler::PbxZone::fixed_secs(7200));
        }
    }
    calls.extend(asterisk_calls());
    calls.extend(cms_calls());
    common::commit(&db, SINK, &calls);

    let rx = receiver(0, 3).await;
    let config = HttpCdrConfig {
        authorization: Some("Bearer s3cret".into()),
        utc_offset_secs: 3600,
        ..HttpCdrConfig::new(rx.url(), SESSION)
    };
    let worker = start_worker(&db, &config);
    wait_delivered(&db, calls.len() as u64).await;
    worker.stop().await;

    let posts = rx.seen(|s| s.posts.clone());
    rx.seen(|s| assert!(s.errors.is_empty(), "{:?}", s.errors));
    assert!(posts.len() >= 5, "{} posts", posts.len());
    assert!(posts[..3].iter().all(|p| p.status == 500));
    assert!(posts[3..].iter().all(|p| p.status == 200));
    for p in &posts {
        assert_eq!(p.content_type, "text/xml");
        assert_eq!(p.authorization, "Bearer s3cret");
        assert!(p.pairs.iter().all(|(s, _)| s == SESSION));
    }
    // The first post held the whole round; the retries carry exactly the pairs they carried
    // before, call by call (a call's records share index / 64).
    let mut per_call: BTreeMap<u64, BTreeSet<(String, u64)>> = BTreeMap::new();
    for p in &posts {
        let mut in_post: BTreeMap<u64, BTreeSet<(String, u64)>> = BTreeMap::new();
        for pair in &p.pairs {
            in_post
                .entry(pair.1 / RECORDS_PER_CALL)
                .or_default()
                .insert(pair.clone());
        }
        for (call, pairs) in in_post {
            let known = per_call.entry(call).or_insert_with(|| pairs.clone());
            assert_eq!(*known, pairs, "call {call} resent with other indexes");
        }
    }
    assert_eq!(per_call.len(), calls.len());
    let first: BTreeSet<_> = posts[0].pairs.iter().cloned().collect();
    let accepted: BTreeSet<_> = posts[3..]
        .iter()
        .flat_map(|p| p.pairs.iter().cloned())
        .collect();
    assert!(
        first.is_subset(&accepted),
        "every failed record was taken later"
    );
    assert_eq!(
        first.len(),
        accepted.len(),
        "the first round held every call"
    );

    // Indexes strictly increase over everything taken, nothing was a duplicate, and the
    // records assemble into exactly the delivered calls.
    let (taken, duplicates) = rx.seen(|s| (s.taken.clone(), s.duplicates));
    assert_eq!(duplicates, 0);
    let idx: Vec<u64> = taken.iter().map(|r| r.record_index.unwrap()).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    let expected: usize = calls.iter().map(|c| 2 + 2 * legs_written(c)).sum();
    assert_eq!(taken.len(), expected);
    let kinds = |k| taken.iter().filter(|r| r.kind == k).count();
    assert_eq!(kinds(CmsRecordKind::CallStart), calls.len());
    assert_eq!(kinds(CmsRecordKind::CallEnd), calls.len());
    assert!(
        taken
            .iter()
            .all(|r| r.time.as_deref().is_some_and(|t| t.ends_with('Z')))
    );
    check_assembled(&assemble(&taken), &calls, 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_one_down_for_a_while_lose_nothing() {
    let db = scratch("two");
    let mut calls = common::smdr_calls(30);
    common::commit(&db, SINK, &calls);

    let a = receiver(0, 0).await;
    let b_port = free_port();
    let config = HttpCdrConfig {
        urls: vec![a.url(), format!("http://127.0.0.1:{b_port}/cdr")],
        ..HttpCdrConfig::new("", SESSION)
    };
    let worker = start_worker(&db, &config);
    // A takes the round and the probes; B refuses connections, so the round stays pending.
    wait_for("A has taken a round and a probe", || {
        a.seen(|s| s.posts.len()) >= 2
    })
    .await;
    let c = common::counts(&db, SINK);
    assert_eq!((c.delivered, c.pending, c.dead), (0, 30, 0));

    // More calls while B is down.
    let more = asterisk_calls();
    common::commit(&db, SINK, &more);
    worker.wake.notify_one();
    calls.extend(more);
    let more = cms_calls();
    common::commit(&db, SINK, &more);
    worker.wake.notify_one();
    calls.extend(more);

    let b = receiver(b_port, 0).await;
    wait_delivered(&db, calls.len() as u64).await;
    worker.stop().await;

    for r in [&a, &b] {
        r.seen(|s| assert!(s.errors.is_empty(), "{:?}", s.errors));
    }
    let taken_a = a.seen(|s| s.taken.clone());
    let taken_b = b.seen(|s| s.taken.clone());
    let pairs = |t: &[CmsRecord<'static>]| t.iter().map(|r| r.record_index).collect::<Vec<_>>();
    assert_eq!(
        pairs(&taken_a),
        pairs(&taken_b),
        "both took the same records"
    );
    assert!(a.seen(|s| s.duplicates) > 0, "A dropped the resent records");
    let expected: usize = calls.iter().map(|c| 2 + 2 * legs_written(c)).sum();
    assert_eq!(taken_a.len(), expected);
    check_assembled(&assemble(&taken_a), &calls, 0);
    check_assembled(&assemble(&taken_b), &calls, 0);
}

#[test]
fn record_indexes_are_derived_from_the_outbox_seq() {
    let call = &asterisk_calls()[0];
    let records = call_records(call, 7, 0);
    assert_eq!(records.len(), 2 + 2 * call.legs.len());
    for (k, r) in records.iter().enumerate() {
        assert_eq!(r.record_index, Some(7 * RECORDS_PER_CALL + k as u64));
        assert_eq!(r.correlator_index, r.record_index);
    }
    assert_eq!(records.first().unwrap().kind, CmsRecordKind::CallStart);
    assert_eq!(records.last().unwrap().kind, CmsRecordKind::CallEnd);
    assert_eq!(call_records(call, 7, 0), records, "the same every time");
    // Leg ids are GUIDs derived from the call and the channel.
    let leg = &records[1];
    assert_eq!(leg.kind, CmsRecordKind::CallLegStart);
    let id = leg.object_id().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(leg.field("call"), Some(call.id.as_str()));

    // A call with too many legs keeps the first 31, within its 64 numbers.
    let mut big = call.clone();
    let leg = big.legs[0].clone();
    big.legs = (0..40)
        .map(|i| call_assembler::Leg {
            uniqueid: format!("1795355692.{i}").into(),
            ..leg.clone()
        })
        .collect();
    let records = call_records(&big, 1, 0);
    assert_eq!(records.len(), RECORDS_PER_CALL as usize);
    assert_eq!(
        records.last().unwrap().record_index,
        Some(2 * RECORDS_PER_CALL - 1)
    );
    assert_eq!(
        records.last().unwrap().field("callLegsCompleted"),
        Some("31")
    );
}

/// A call that carries its UTC start is written by its own offset, whatever the setting; a
/// body without one (stored before `start_utc` existed) by the setting; CMS never shifted.
#[test]
fn local_times_are_shifted_by_the_calls_own_offset_else_the_setting_and_cms_times_are_not() {
    let secs = |r: &CmsRecord<'_>| r.time_utc.unwrap().timestamp();
    let mut old = common::smdr_calls(1).remove(0);
    (old.start_utc, old.end_utc, old.utc_offset) = (None, None, None);
    let plain = call_records(&old, 1, 0);
    let shifted = call_records(&old, 1, 7200);
    assert_eq!(secs(&plain[0]), old.start_time.and_utc().timestamp());
    assert_eq!(secs(&plain[0]) - secs(&shifted[0]), 7200);
    assert_eq!(secs(&plain[1]) - secs(&shifted[1]), 7200, "legs too");

    // The same call at a PBX two hours ahead of UTC, as `PBX_TZ` makes it: its own offset.
    let mut own = old.clone();
    own.set_utc_times(&call_assembler::PbxZone::fixed_secs(7200));
    assert_eq!(
        own.start_utc.unwrap().timestamp(),
        old.start_time.and_utc().timestamp() - 7200
    );
    for setting in [0, 7200, -3600] {
        assert_eq!(
            call_records(&own, 1, setting),
            shifted,
            "the setting ({setting} s) does not apply to a call with its own UTC start"
        );
    }
    let cms = &cms_calls()[0];
    assert_eq!(call_records(cms, 1, 7200), call_records(cms, 1, 0));
    assert_eq!(
        call_records(cms, 1, 0)[0].time.as_deref(),
        Some("2017-04-24T12:00:11Z")
    );
}
