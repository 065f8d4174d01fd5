//! Retries an operator can rely on, with a real webhook receiver on loopback and a real outbox:
//! `Retry-After` capped at the policy's maximum delay, dead letters re-queued, sinks paused and
//! resumed.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::engine::{SinkStats, SinkWorker, now_ms, run_worker};
use cdr_sinks::outbox::{Outbox, Outcome};
use cdr_sinks::webhook::{WebhookConfig, WebhookSink};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Notify, watch};

const SINK: &str = "webhook";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdr-sinks-admin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("outbox.db")
}

/// An answer: a status and an optional `Retry-After`.
type Answer = (u16, Option<&'static str>);

/// A webhook receiver: answers the scripted statuses (with an optional `Retry-After`) in
/// order, then 200; records the `webhook-id` of every request and its status.
#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<(String, u16)>>>,
    port: u16,
}

impl Receiver {
    async fn start(script: &[Answer]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rx = Self {
            port: listener.local_addr().unwrap().port(),
            ..Self::default()
        };
        rx.script.lock().unwrap().extend(script.iter().copied());
        let shared = rx.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move {
                            let id = req
                                .headers()
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let _ = req.into_body().collect().await;
                            let (status, retry_after) = shared
                                .script
                                .lock()
                                .unwrap()
                                .pop_front()
                                .unwrap_or((200, None));
                            shared.seen.lock().unwrap().push((id, status));
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            if let Some(v) = retry_after {
                                resp.headers_mut().insert("retry-after", v.parse().unwrap());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        rx
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The ids answered with 200.
    fn delivered(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| *s == 200)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

struct Worker {
    stop: watch::Sender<bool>,
    stats: Arc<SinkStats>,
    task: tokio::task::JoinHandle<Result<(), cdr_sinks::outbox::OutboxError>>,
}

/// A policy with short delays: 100 ms doubling to `cap`, the default attempt and age limits.
fn policy(cap: Duration) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(100),
        cap,
        ..RetryPolicy::default()
    }
}

fn start_worker(db: &Path, rx: &Receiver, policy: RetryPolicy) -> Worker {
    let sink = WebhookSink::new(&WebhookConfig {
        url: rx.url(),
        timeout: Duration::from_secs(5),
        concurrency: 1,
        ..WebhookConfig::default()
    })
    .unwrap();
    let stats = Arc::new(SinkStats::default());
    let (stop, shutdown) = watch::channel(false);
    let worker = SinkWorker {
        name: SINK.to_owned(),
        sink,
        policy,
        stats: stats.clone(),
    };
    let task = tokio::spawn(run_worker(
        db.to_owned(),
        worker,
        Arc::new(Notify::new()),
        shutdown,
    ));
    Worker { stop, stats, task }
}

impl Worker {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The (state, attempts) of every delivery of `sink`, by call id.
fn rows(db: &Path) -> Vec<(String, String, u32)> {
    let o = Outbox::open(db, &[]).unwrap();
    let mut stmt = o
        .connection()
        .prepare("SELECT call_id, state, attempts FROM deliveries WHERE sink = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([SINK], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A receiver answering `status` with `Retry-After: 99999999999` (3,000 years) once, then 200:
/// the call is delivered within the policy's maximum delay (1 s here), neither put off to the
/// year 5200 nor dead-lettered. 503 is the counted retry of one delivery, 401 blocks the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retry_after_is_capped_at_the_maximum_delay() {
    for status in [503, 429, 401] {
        let db = scratch(&format!("retry-after-{status}"));
        let calls = common::smdr_calls(1);
        common::commit(&db, SINK, &calls);
        let rx = Receiver::start(&[(status, Some("99999999999"))]).await;
        let started = Instant::now();
        let worker = start_worker(&db, &rx, policy(Duration::from_secs(1)));
        wait_for(
            &format!("the call delivered after a {status}"),
            Duration::from_secs(10),
            || rx.delivered().len() == 1,
        )
        .await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{status}: took {took:?}");
        assert_eq!(rx.delivered(), [calls[0].id.clone()]);
        assert_eq!(rx.requests(), 2, "{status}: one refusal, one delivery");
        worker.stop().await;
        let c = common::counts(&db, SINK);
        assert_eq!((c.delivered, c.dead, c.pending), (1, 0, 0), "{status}");
    }
}

/// An HTTP date far in the future is capped like a number of seconds, and a next try already
/// stored past the maximum delay (by an earlier version) is brought back within it when the
/// worker starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_tries_stored_past_the_maximum_are_brought_back() {
    let db = scratch("stored-far");
    let calls = common::smdr_calls(2);
    common::commit(&db, SINK, &calls);
    let year_5200 = 100_000_000_000_000i64;
    Outbox::open(&db, &[])
        .unwrap()
        .record(
            SINK,
            &[(
                calls[0].id.clone(),
                Outcome::Retry {
                    at_ms: year_5200,
                    error: "HTTP 503".into(),
                    counted: true,
                },
            )],
            now_ms(),
        )
        .unwrap();
    let rx = Receiver::start(&[(503, Some("Fri, 31 Dec 9999 23:59:59 GMT"))]).await;
    let worker = start_worker(&db, &rx, policy(Duration::from_secs(1)));
    wait_for("both calls delivered", Duration::from_secs(10), || {
        rx.delivered().len() == 2
    })
    .await;
    worker.stop().await;
    let mut got = rx.delivered();
    got.sort();
    let mut want: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
    want.sort();
    assert_eq!(got, want);
}

/// A 400 dead-letters at once; re-queued (all of a sink's, or the ones named), each goes out on
/// the running worker's next pass, once, and a delivered call is never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_requeued_and_delivered_once() {
    let db = scratch("requeue");
    let calls = common::smdr_calls(3);
    common::commit(&db, SINK, &calls);
    let rx = Receiver::start(&[(400, None), (400, None), (200, None)]).await;
    let worker = start_worker(&db, &rx, policy(Duration::from_secs(1)));
    wait_for("two dead letters", Duration::from_secs(10), || {
        let c = common::counts(&db, SINK);
        c.dead == 2 && c.delivered == 1
    })
    .await;
    let dead: Vec<String> = rows(&db)
        .into_iter()
        .filter(|(_, s, _)| s == "dead")
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(dead, [calls[0].id.clone(), calls[1].id.clone()]);

    let o = Outbox::open(&db, &[]).unwrap();
    // Unknown ids, a delivered call and another sink's name re-queue nothing.
    let delivered = vec![calls[2].id.clone(), "no-such-call".to_owned()];
    assert_eq!(o.requeue_dead(SINK, Some(&delivered), now_ms()).unwrap(), 0);
    assert_eq!(o.requeue_dead("jsonl:-", None, now_ms()).unwrap(), 0);
    // One named letter, then the rest.
    let first = vec![calls[1].id.clone()];
    assert_eq!(o.requeue_dead(SINK, Some(&first), now_ms()).unwrap(), 1);
    assert_eq!(
        rows(&db)[1],
        (calls[1].id.clone(), "pending".to_owned(), 0),
        "re-queued with its attempts reset"
    );
    wait_for(
        "the re-queued letter delivered",
        Duration::from_secs(8),
        || rx.delivered().len() == 2,
    )
    .await;
    assert_eq!(o.requeue_dead(SINK, None, now_ms()).unwrap(), 1);
    wait_for("the last letter delivered", Duration::from_secs(8), || {
        rx.delivered().len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await;
    let mut got = rx.delivered();
    got.sort();
    let mut want: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
    want.sort();
    assert_eq!(got, want, "each call delivered once");
    let c = common::counts(&db, SINK);
    assert_eq!((c.delivered, c.dead, c.pending), (3, 0, 0));
    assert_eq!(o.requeue_dead(SINK, None, now_ms()).unwrap(), 0);
    let too_many: Vec<String> = (0..=cdr_sinks::admin::MAX_REQUEUE_IDS)
        .map(|i| i.to_string())
        .collect();
    assert!(o.requeue_dead(SINK, Some(&too_many), now_ms()).is_err());
}

/// A paused sink sends nothing, its calls stay pending with no attempt used, across a restart
/// of its worker; resumed, every call goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sink_keeps_its_calls_pending_until_resumed() {
    let db = scratch("pause");
    let calls = common::smdr_calls(5);
    // Paused before any call arrives.
    Outbox::open(&db, &[])
        .unwrap()
        .pause_sink(SINK, now_ms())
        .unwrap();
    let rx = Receiver::start(&[]).await;
    let worker = start_worker(&db, &rx, policy(Duration::from_secs(1)));
    common::commit(&db, SINK, &calls);
    wait_for(
        "the worker to see the pause",
        Duration::from_secs(5),
        || worker.stats.paused.load(Ordering::Relaxed),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.requests(), 0, "a paused sink sends nothing");
    worker.stop().await;
    // A restart: still paused.
    let worker = start_worker(&db, &rx, policy(Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(worker.stats.paused.load(Ordering::Relaxed));
    assert_eq!(rx.requests(), 0);
    let c = common::counts(&db, SINK);
    assert_eq!((c.pending, c.delivered, c.dead), (5, 0, 0));
    assert!(rows(&db).iter().all(|(_, s, a)| s == "pending" && *a == 0));

    assert!(Outbox::open(&db, &[]).unwrap().resume_sink(SINK).unwrap());
    wait_for("every call delivered", Duration::from_secs(8), || {
        rx.delivered().len() == 5
    })
    .await;
    assert!(!worker.stats.paused.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await;
    assert_eq!(rx.requests(), 5, "each call sent once");
    let c = common::counts(&db, SINK);
    assert_eq!((c.pending, c.delivered, c.dead), (0, 5, 0));
}
