//! The built-in web server over real HTTP on loopback: a real SQLite outbox filled with calls
//! assembled from a real SMDR fixture, requests from a hyper client, and checks on what comes
//! back (status, JSON, HTML, metrics text, readiness).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use call_assembler::{Call, Output, SmdrAssembler, SmdrAssemblerConfig};
use cdr_relay::ops::metrics::Metrics;
use cdr_relay::web::{WebOptions, WebState, serve_with};
use cdr_sinks::engine::{SinkStats, now_ms};
use cdr_sinks::outbox::{Batch, Outbox, Outcome};
use http_body_util::{BodyExt, Empty};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use smdr_parse::{Frame, SmdrFramer, SmdrRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const FIXTURE: &str = "ccbc_rw180105_day_34fields.txt";

/// The remote sinks every test outbox queues for (sorted, as the server shows them).
fn sinks() -> Vec<String> {
    vec!["redis".to_owned(), "webhook".to_owned()]
}

/// The calls of the fixture, replayed through the SMDR assembler, in emission order.
fn fixture_calls() -> Vec<Call> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/smdr")
        .join(FIXTURE);
    let bytes = std::fs::read(&path).expect("fixture");
    let mut framer = SmdrFramer::default();
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig {
        site: "web-test".into(),
        ..SmdrAssemblerConfig::default()
    });
    let now = Instant::now();
    let mut calls = Vec::new();
    let mut drain = |asm: &mut SmdrAssembler| {
        while let Some(out) = asm.poll_output() {
            if let Output::Call(call) = out {
                calls.push(call);
            }
        }
    };
    framer.push(&bytes);
    while let Some(frame) = framer.next_frame() {
        if let Frame::Line { line, .. } = frame {
            if let Ok(record) = SmdrRecord::parse(line) {
                asm.handle_record(now, &record);
            }
        }
        drain(&mut asm);
    }
    if let Some(Frame::Line { line, .. }) = framer.finish() {
        if let Ok(record) = SmdrRecord::parse(line) {
            asm.handle_record(now, &record);
        }
    }
    asm.flush(now);
    drain(&mut asm);
    assert!(calls.len() > 150, "the fixture gives {} calls", calls.len());
    calls
}

fn start_iso(call: &Call) -> String {
    call.start_time.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdr-relay-web-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Commits `calls` (one delivery row per sink each) at `at_ms`.
fn commit(db: &Path, calls: &[Call], at_ms: i64) -> Outbox {
    let mut outbox = Outbox::open(db, &sinks()).expect("outbox");
    let report = outbox
        .commit(
            &Batch {
                calls: calls.to_vec(),
                ..Batch::default()
            },
            at_ms,
        )
        .expect("commit");
    assert_eq!(report.calls, calls.len(), "every call is new");
    outbox
}

struct Server {
    base: String,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Server {
    async fn start(db: &Path, title: &str) -> Self {
        Self::start_with(db, title, WebOptions::default()).await
    }

    async fn start_with(db: &Path, title: &str, options: WebOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let metrics = Metrics::new("smdr");
        let state = WebState {
            db: db.to_path_buf(),
            metrics: metrics.clone(),
            title: title.to_owned(),
            receiver: None,
            tls: None,
            access: Default::default(),
            receiver_only: false,
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve_with(listener, state, options, stop_rx));
        Self {
            base: format!("http://{addr}"),
            metrics,
            stop,
            task,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn request(&self, method: Method, path: &str) -> (StatusCode, HeaderMap, String) {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("answered in time")
            .expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            headers,
            String::from_utf8(body.to_vec()).expect("utf-8 body"),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let (status, _, body) = self.request(Method::GET, path).await;
        (status, body)
    }

    async fn json(&self, path: &str) -> (StatusCode, Value) {
        let (status, headers, body) = self.request(Method::GET, path).await;
        assert_eq!(headers["content-type"], "application/json", "{path}");
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
        )
    }

    async fn stop(self) {
        self.stop.send(true).expect("server still running");
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stopped in time")
            .expect("server task");
        assert!(result.is_ok(), "{result:?}");
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["calls"]
        .as_array()
        .expect("calls array")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Number of call rows in an HTML list page.
fn html_rows(page: &str) -> usize {
    page.matches("<tr><td><a href=\"/calls/").count()
}

#[tokio::test]
async fn a_missing_database_reads_as_no_calls_until_calls_arrive() {
    let dir = tempdir("missing");
    let db = dir.join("relay.db");
    let server = Server::start(&db, "relay").await;

    let (status, page) = server.json("/api/v1/calls").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page,
        json!({"calls": [], "page": 1, "per_page": 50, "total": 0})
    );
    let (status, html) = server.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No calls yet."), "{html}");
    assert!(html.contains("No calls in the store."), "{html}");
    assert!(html.contains("No sinks: calls are kept in the store only."));
    assert_eq!(html_rows(&html), 0);
    let (status, err) = server.json("/api/v1/calls/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err, json!({"error": "call not found"}));
    let (status, dead) = server.json("/api/v1/dead-letters").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dead, json!({"dead_letters": []}));
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!metrics.contains("outbox_pending"), "{metrics}");
    assert!(!db.exists(), "the server must not create the database");

    // The relay creates it and commits; the writer is gone again (WAL files checkpointed away).
    let calls = fixture_calls();
    drop(commit(&db, &calls[..3], now_ms()));
    let (_, page) = server.json("/api/v1/calls").await;
    assert_eq!(page["total"], 3);
    assert_eq!(
        ids(&page),
        [
            calls[2].id.as_str(),
            calls[1].id.as_str(),
            calls[0].id.as_str()
        ],
        "newest first"
    );

    // A writer that stays open, committing while the server reads.
    let mut outbox = Outbox::open(&db, &sinks()).expect("outbox");
    for (i, call) in calls[3..10].iter().enumerate() {
        outbox
            .commit(
                &Batch {
                    calls: vec![call.clone()],
                    ..Batch::default()
                },
                now_ms(),
            )
            .expect("commit");
        let (_, page) = server.json("/api/v1/calls?per_page=1").await;
        assert_eq!(page["total"], 4 + i);
        assert_eq!(ids(&page), [call.id.as_str()]);
    }
    server.stop().await;
}

#[tokio::test]
async fn api_pages_newest_first() {
    let dir = tempdir("paging");
    let db = dir.join("relay.db");
    let calls = fixture_calls();
    let _outbox = commit(&db, &calls, now_ms());
    let newest: Vec<String> = calls.iter().rev().map(|c| c.id.clone()).collect();
    let total = calls.len();
    let server = Server::start(&db, "relay").await;

    let (status, page) = server.json("/api/v1/calls").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], total);
    assert_eq!(page["page"], 1);
    assert_eq!(page["per_page"], 50);
    assert_eq!(ids(&page), newest[..50]);

    let (_, page) = server.json("/api/v1/calls?page=2&per_page=10").await;
    assert_eq!(
        (page["page"].clone(), page["per_page"].clone()),
        (json!(2), json!(10))
    );
    assert_eq!(ids(&page), newest[10..20]);

    let last = total.div_ceil(10);
    let (_, page) = server
        .json(&format!("/api/v1/calls?page={last}&per_page=10"))
        .await;
    assert_eq!(ids(&page), newest[(last - 1) * 10..]);
    let (_, page) = server
        .json(&format!("/api/v1/calls?page={}&per_page=10", last + 1))
        .await;
    assert_eq!(ids(&page), Vec::<String>::new());
    assert_eq!(page["total"], total);

    // per_page is capped at 200; the bodies are the stored calls, whole.
    let (_, page) = server.json("/api/v1/calls?per_page=100000").await;
    assert_eq!(page["per_page"], 200);
    assert_eq!(ids(&page).len(), total.min(200));
    let first = &page["calls"][0];
    assert_eq!(first, &serde_json::to_value(calls.last().unwrap()).unwrap());

    for bad in [
        "page=0",
        "page=two",
        "per_page=x",
        "direction=sideways",
        "complete=maybe",
        "from=05/01/2018",
    ] {
        let (status, err) = server.json(&format!("/api/v1/calls?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(err["error"].is_string(), "{bad}: {err}");
    }
    server.stop().await;
}

#[tokio::test]
async fn api_filters_by_number_direction_completeness_and_start() {
    let dir = tempdir("filters");
    let db = dir.join("relay.db");
    let mut calls = fixture_calls();
    // Every call of the fixture completes; flush some as if their last record never came.
    for call in calls.iter_mut().step_by(7) {
        call.complete = false;
        call.flush_reason = Some(call_assembler::FlushReason::IdleTimeout);
    }
    let _outbox = commit(&db, &calls, now_ms());
    let server = Server::start(&db, "relay").await;
    let total = calls.len();

    // Expected answers computed from the calls themselves, newest first.
    let expect = |keep: &dyn Fn(&Call) -> bool| -> Vec<String> {
        calls
            .iter()
            .rev()
            .filter(|c| keep(c))
            .map(|c| c.id.clone())
            .collect()
    };
    let check = |query: String, expected: Vec<String>| {
        let server = &server;
        async move {
            assert!(
                !expected.is_empty() && expected.len() < total,
                "{query}: a filter that keeps {} of {total} calls tests nothing",
                expected.len()
            );
            // per_page is capped at 200: gather the pages.
            let mut got = Vec::new();
            for n in 1.. {
                let (status, page) = server
                    .json(&format!("/api/v1/calls?per_page=200&page={n}&{query}"))
                    .await;
                assert_eq!(status, StatusCode::OK, "{query}");
                assert_eq!(page["total"], expected.len(), "{query}");
                let more = ids(&page);
                if more.is_empty() {
                    break;
                }
                got.extend(more);
            }
            assert_eq!(got, expected, "{query}");
        }
    };

    // A number: part of the caller or of the called number.
    let number = calls
        .iter()
        .find(|c| c.caller.len() >= 10)
        .map(|c| c.caller[3..7].to_owned())
        .expect("an external caller");
    check(
        format!("number={number}"),
        expect(&|c| c.caller.contains(&number) || c.called.contains(&number)),
    )
    .await;
    check(
        "direction=inbound".into(),
        expect(&|c| c.direction == call_assembler::CallDirection::Inbound),
    )
    .await;
    check(
        "direction=outbound".into(),
        expect(&|c| c.direction == call_assembler::CallDirection::Outbound),
    )
    .await;
    check("complete=false".into(), expect(&|c| !c.complete)).await;
    check("complete=true".into(), expect(&|c| c.complete)).await;

    // Start times: `from` inclusive, `to` inclusive as a prefix (to the hour here).
    let mut starts: Vec<String> = calls.iter().map(start_iso).collect();
    starts.sort();
    let from = starts[starts.len() / 4][..13].to_owned();
    let to = starts[starts.len() * 3 / 4][..13].to_owned();
    check(
        format!("from={from}&to={to}"),
        expect(&|c| {
            let s = start_iso(c);
            s.as_str() >= from.as_str() && &s[..13] <= to.as_str()
        }),
    )
    .await;
    // A space for the `T`, percent-encoded, and a whole day as `to`.
    let day = &starts[0][..10];
    check(
        format!("to={day}"),
        expect(&|c| start_iso(c).starts_with(day)),
    )
    .await;
    let late = starts[starts.len() / 2].replace('T', "%20");
    let late_iso = starts[starts.len() / 2].clone();
    check(
        format!("from={late}&direction=inbound"),
        expect(&|c| {
            start_iso(c) >= late_iso && c.direction == call_assembler::CallDirection::Inbound
        }),
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn api_call_has_its_deliveries() {
    let dir = tempdir("detail");
    let db = dir.join("relay.db");
    let calls = fixture_calls();
    let mut outbox = commit(&db, &calls, now_ms());
    let call = calls
        .iter()
        .find(|c| c.records.len() >= 2)
        .expect("a call with several records");
    outbox
        .record(
            "webhook",
            &[(call.id.clone(), Outcome::Delivered)],
            now_ms(),
        )
        .expect("record");
    outbox
        .record(
            "redis",
            &[(
                call.id.clone(),
                Outcome::Retry {
                    at_ms: now_ms() + 60_000,
                    error: "connection refused".into(),
                    counted: true,
                },
            )],
            now_ms(),
        )
        .expect("record");
    let server = Server::start(&db, "relay").await;

    let (status, mut got) = server.json(&format!("/api/v1/calls/{}", call.id)).await;
    assert_eq!(status, StatusCode::OK);
    let deliveries = got
        .as_object_mut()
        .expect("object")
        .remove("deliveries")
        .expect("deliveries");
    assert_eq!(
        deliveries,
        json!([
            {"sink": "redis", "state": "pending", "attempts": 1, "last_error": "connection refused"},
            {"sink": "webhook", "state": "delivered", "attempts": 1, "last_error": null},
        ])
    );
    assert_eq!(
        got,
        serde_json::to_value(call).unwrap(),
        "the stored call, whole"
    );
    assert_eq!(
        got["records"].as_array().map(Vec::len),
        Some(call.records.len())
    );

    let (status, err) = server
        .json("/api/v1/calls/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"], "call not found");
    server.stop().await;
}

#[tokio::test]
async fn dead_letters_newest_first() {
    let dir = tempdir("dead");
    let db = dir.join("relay.db");
    let calls = fixture_calls();
    let t = now_ms();
    let mut outbox = commit(&db, &calls, t);
    let dead = |error: &str| Outcome::Dead {
        error: error.to_owned(),
    };
    outbox
        .record("webhook", &[(calls[5].id.clone(), dead("HTTP 400"))], t + 1)
        .expect("record");
    outbox
        .record("redis", &[(calls[1].id.clone(), dead("WRONGTYPE"))], t + 2)
        .expect("record");
    let server = Server::start(&db, "relay").await;

    let (status, got) = server.json("/api/v1/dead-letters").await;
    assert_eq!(status, StatusCode::OK);
    let list = got["dead_letters"].as_array().expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["call_id"], calls[1].id.as_str());
    assert_eq!(list[0]["sink"], "redis");
    assert_eq!(list[0]["last_error"], "WRONGTYPE");
    assert_eq!(list[0]["attempts"], 1);
    assert_eq!(list[0]["done_ms"], t + 2);
    assert_eq!(list[0]["caller"], calls[1].caller.as_str());
    assert_eq!(list[1]["call_id"], calls[5].id.as_str());
    assert_eq!(list[1]["last_error"], "HTTP 400");
    let (_, got) = server.json("/api/v1/dead-letters?limit=1").await;
    assert_eq!(got["dead_letters"].as_array().map(Vec::len), Some(1));
    server.stop().await;
}

#[tokio::test]
async fn html_list_pages_filters_and_escapes() {
    let dir = tempdir("html-list");
    let db = dir.join("relay.db");
    let mut calls = fixture_calls();
    // The newest call carries markup where a number should be.
    calls.last_mut().unwrap().caller = "<script>alert(\"x\")</script>".into();
    let mut outbox = commit(&db, &calls, now_ms());
    let newest = calls.last().unwrap().clone();
    outbox
        .record(
            "webhook",
            &[(newest.id.clone(), Outcome::Delivered)],
            now_ms(),
        )
        .expect("record");
    let server = Server::start(&db, "Main <office> & \"annex\"").await;
    let total = calls.len();
    let pages = total.div_ceil(50);

    let (status, headers, page1) = server.request(Method::GET, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(
        page1.contains("<title>Calls · Main &lt;office&gt; &amp; &quot;annex&quot;</title>"),
        "{page1}"
    );
    assert!(!page1.contains("<office>"));
    assert!(
        page1.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"),
        "{page1}"
    );
    assert!(!page1.contains("<script"), "no markup from the data");
    assert_eq!(html_rows(&page1), 50);
    assert!(page1.contains(&format!("{total} calls · page 1 of {pages}")));
    assert!(
        page1.contains("<a href=\"/?page=2\">Older ›</a>"),
        "{page1}"
    );
    assert!(!page1.contains("Newer"));
    // One column per sink, the newest call first with its delivery states.
    assert!(page1.contains("<th>redis</th><th>webhook</th>"), "{page1}");
    let first_row = page1
        .split("<th>Start</th>")
        .nth(1)
        .and_then(|s| s.split("<tbody>").nth(1))
        .and_then(|s| s.split("</tr>").next())
        .expect("a first row");
    assert!(first_row.contains(&format!("href=\"/calls/{}\"", newest.id)));
    assert!(first_row.contains(&newest.start_time.format("%Y-%m-%d %H:%M:%S").to_string()));
    assert!(
        first_row
            .ends_with("<td class=\"pending\">pending</td><td class=\"delivered\">delivered</td>"),
        "{first_row}"
    );

    // The overview: calls per hour over the latest day of the store, deliveries per sink.
    let chart = page1
        .split("<figure class=\"chart\" id=\"calls-per-hour\">")
        .nth(1)
        .and_then(|s| s.split("</figure>").next())
        .expect("the chart of calls per hour");
    assert!(
        chart.contains("Calls per hour, 2018-01-05 00:00 to 2018-01-06 00:00"),
        "{chart}"
    );
    assert_eq!(chart.matches("<g class=\"hour\">").count(), 24);
    let day: Vec<&Call> = calls
        .iter()
        .filter(|c| start_iso(c).starts_with("2018-01-05"))
        .collect();
    let answered = day.iter().filter(|c| c.answered).count();
    assert!(
        chart.contains(&format!(
            "<desc id=\"hours-desc\">{} calls from 2018-01-05 00:00 to 2018-01-06 00:00 UTC: \
             {answered} answered, {} not answered.</desc>",
            day.len(),
            day.len() - answered
        )),
        "{chart}"
    );
    let fourteen = day
        .iter()
        .filter(|c| start_iso(c).starts_with("2018-01-05T14"))
        .count();
    assert!(
        chart.contains(&format!(
            "<title>2018-01-05 14:00–15:00: {fourteen} calls, "
        )),
        "{chart}"
    );
    assert!(
        page1.contains(&format!(
            "<tr><th scope=\"row\">webhook</th><td class=\"n delivered\">1</td>\
             <td class=\"n pending\">{}</td><td class=\"n dead\">0</td>",
            total - 1
        )),
        "{page1}"
    );
    assert!(page1.contains(&format!(
        "<tr><th scope=\"row\">redis</th><td class=\"n delivered\">0</td>\
         <td class=\"n pending\">{total}</td>"
    )));
    assert!(page1.contains(&format!(
        "<title>redis: 0 delivered, {total} pending, 0 dead</title>"
    )));
    assert!(
        page1.contains(&format!("<a href=\"/?page={pages}\">Oldest »</a>")),
        "{page1}"
    );

    let (_, page2) = server.get("/?page=2").await;
    assert_eq!(html_rows(&page2), 50.min(total - 50));
    let second_page_first = &calls[total - 51];
    assert!(page2.contains(&format!("href=\"/calls/{}\"", second_page_first.id)));
    assert!(!page2.contains(&format!("href=\"/calls/{}\"", newest.id)));
    assert!(
        page2.contains("<a href=\"/?page=1\">‹ Newer</a>"),
        "{page2}"
    );
    assert!(!page2.contains("Newest"), "page 2 links page 1 as Newer");
    let (_, last) = server.get(&format!("/?page={pages}")).await;
    assert!(last.contains("<a href=\"/?page=1\">« Newest</a>"), "{last}");
    assert!(!last.contains("Oldest »"));
    assert_eq!(html_rows(&last), total - 50 * (pages - 1));
    assert!(last.contains(&format!("href=\"/calls/{}\"", calls[0].id)));

    // Filters from the form (blank fields included) narrow the list and stay in the links.
    let inbound: Vec<&Call> = calls
        .iter()
        .filter(|c| c.direction == call_assembler::CallDirection::Inbound)
        .collect();
    assert!(inbound.len() > 50 && inbound.len() < total);
    let (_, filtered) = server
        .get("/?from=&to=&number=&direction=inbound&complete=")
        .await;
    assert_eq!(html_rows(&filtered), 50);
    assert!(filtered.contains(&format!("{} calls · page 1 of", inbound.len())));
    assert!(
        filtered.contains("<option value=\"inbound\" selected>"),
        "{filtered}"
    );
    assert!(
        filtered.contains("<a href=\"/?direction=inbound&amp;page=2\">Older ›</a>"),
        "{filtered}"
    );
    assert!(!filtered.contains(">outbound</td>"));
    let number = &inbound[0].caller;
    // The chart follows the filter.
    let inbound_day = inbound
        .iter()
        .filter(|c| start_iso(c).starts_with("2018-01-05"))
        .count();
    assert!(
        filtered.contains(&format!("<desc id=\"hours-desc\">{inbound_day} calls from")),
        "{filtered}"
    );
    assert!(filtered.contains("the 24 hours up to the latest call matching the filter"));
    let (_, by_number) = server.get(&format!("/?number={number}")).await;
    let matching = calls
        .iter()
        .filter(|c| c.caller.contains(number.as_str()) || c.called.contains(number.as_str()))
        .count();
    assert_eq!(html_rows(&by_number), matching.min(50));
    assert!(by_number.contains(&format!("name=\"number\" value=\"{number}\"")));

    let (status, bad) = server.get("/?direction=%3Cb%3E").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad.contains("direction must be"), "{bad}");
    server.stop().await;
}

#[tokio::test]
async fn html_call_page_shows_records_parties_deliveries_and_json() {
    let dir = tempdir("html-call");
    let db = dir.join("relay.db");
    let calls = fixture_calls();
    let mut outbox = commit(&db, &calls, now_ms());
    let call = calls
        .iter()
        .find(|c| c.records.len() >= 2 && c.parties.len() >= 2)
        .expect("a call with several records and parties");
    outbox
        .record(
            "redis",
            &[(
                call.id.clone(),
                Outcome::Dead {
                    error: "list <full>".into(),
                },
            )],
            now_ms(),
        )
        .expect("record");
    let server = Server::start(&db, "relay").await;

    let (status, page) = server.get(&format!("/calls/{}", call.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&format!("<h2>Call {}</h2>", call.call_id)),
        "{page}"
    );
    assert!(page.contains(&format!("<tr><th>id</th><td>{}</td></tr>", call.id)));
    assert!(page.contains(&format!("<tr><th>caller</th><td>{}</td></tr>", call.caller)));
    assert!(page.contains(&format!("<h3>Records ({})</h3>", call.records.len())));
    // The timeline: one lane per record, each segment after the previous one.
    let timeline = page
        .split("<figure class=\"chart\" id=\"timeline\">")
        .nth(1)
        .and_then(|s| s.split("</figure>").next())
        .expect("a timeline");
    assert!(timeline.contains(&format!(
        "<figcaption class=\"muted\">{} records from {} to {}",
        call.records.len(),
        call.start_time.format("%H:%M:%S"),
        call.end_time.format("%H:%M:%S")
    )));
    assert_eq!(
        timeline.matches("<g class=\"lane\">").count(),
        call.records.len()
    );
    let first = serde_json::to_value(&call.records[0]).unwrap();
    assert!(
        timeline.contains(&format!(
            "<g class=\"lane\"><title>Record 1: {} {} with ",
            first["party_1_device"].as_str().unwrap(),
            first["party_1_name"].as_str().unwrap()
        )),
        "{timeline}"
    );
    assert!(page.contains(&format!("<h3>Parties ({})</h3>", call.parties.len())));
    for party in &call.parties {
        assert!(
            page.contains(&format!("<td>{}</td>", party.device)),
            "{}",
            party.device
        );
    }
    // Every field of every record, one column per record.
    let records = serde_json::to_value(&call.records).unwrap();
    let records_table = page
        .split(&format!("<h3>Records ({})</h3>", call.records.len()))
        .nth(1)
        .and_then(|s| s.split("</table>").next())
        .expect("records table");
    for record in records.as_array().unwrap() {
        for (key, value) in record.as_object().unwrap() {
            assert!(records_table.contains(&format!("<th>{key}</th>")), "{key}");
            let shown = match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                v => v.to_string(),
            };
            assert!(
                records_table.contains(&format!("<td>{shown}</td>")),
                "{key} = {shown}"
            );
        }
    }
    // In the order the call model writes them, not sorted.
    let position = |key: &str| {
        records_table
            .find(&format!("<tr><th>{key}</th>"))
            .unwrap_or_else(|| panic!("no {key} row"))
    };
    let order = [
        "start",
        "duration",
        "ring",
        "caller",
        "direction",
        "called",
        "party_1_device",
    ];
    for pair in order.windows(2) {
        assert!(position(pair[0]) < position(pair[1]), "{pair:?}");
    }
    // Deliveries: one row per sink, error text escaped.
    assert!(
        page.contains("<td>redis</td><td class=\"dead\">dead</td>"),
        "{page}"
    );
    assert!(page.contains("list &lt;full&gt;"));
    assert!(page.contains("<td>webhook</td><td class=\"pending\">pending</td>"));
    // The raw JSON, escaped, in stored order.
    let pre = page
        .split("<pre>")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .expect("pre");
    assert!(pre.starts_with("{\n  &quot;id&quot;: &quot;"), "{pre}");
    let unescaped = pre
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let back: Value = serde_json::from_str(&unescaped).expect("the <pre> holds the JSON");
    assert_eq!(back, serde_json::to_value(call).unwrap());

    let (status, page) = server.get("/calls/no-such-call").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("Call not found"));
    server.stop().await;
}

/// The value of the sample `name{labels}` in OpenMetrics text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn metrics_report_the_counters_and_the_outbox() {
    let dir = tempdir("metrics");
    let db = dir.join("relay.db");
    let calls = fixture_calls();
    let queued = now_ms() - 90_000;
    let mut outbox = commit(&db, &calls[..20], queued);
    let delivered: Vec<_> = calls[..3]
        .iter()
        .map(|c| (c.id.clone(), Outcome::Delivered))
        .collect();
    outbox
        .record("webhook", &delivered, now_ms())
        .expect("record");
    outbox
        .record(
            "webhook",
            &[(calls[3].id.clone(), Outcome::Dead { error: "no".into() })],
            now_ms(),
        )
        .expect("record");
    let server = Server::start(&db, "relay").await;
    let m = &server.metrics;
    m.record_in(326);
    m.bad_line();
    m.bad_line();
    for _ in 0..3 {
        m.call_out(true);
    }
    m.call_out(false);
    m.set_open_calls(4);
    m.set_source_connected(true);
    let webhook = Arc::new(SinkStats::default());
    webhook.delivered.store(3, Ordering::Relaxed);
    webhook.failed.store(7, Ordering::Relaxed);
    webhook.dead.store(1, Ordering::Relaxed);
    let redis = Arc::new(SinkStats::default());
    redis.blocked.store(true, Ordering::Relaxed);
    m.register_sink("webhook", webhook);
    m.register_sink("redis", redis);
    // A sink with no rows yet still gets its outbox families.
    m.register_sink("http-cdr", Arc::new(SinkStats::default()));

    let (status, headers, text) = server.request(Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"));
    let s = |series: &str| sample(&text, &format!("cdr_relay_{series}"));
    assert_eq!(s(r#"records_in_total{source="smdr"}"#), 326.0);
    assert_eq!(s(r#"bad_lines_total{source="smdr"}"#), 2.0);
    assert_eq!(s(r#"calls_out_total{source="smdr",complete="true"}"#), 3.0);
    assert_eq!(s(r#"calls_out_total{source="smdr",complete="false"}"#), 1.0);
    assert_eq!(s(r#"open_calls{source="smdr"}"#), 4.0);
    assert_eq!(s(r#"source_connected{source="smdr"}"#), 1.0);
    let d = |sink: &str, result: &str| {
        s(&format!(
            r#"deliveries_total{{source="smdr",sink="{sink}",result="{result}"}}"#
        ))
    };
    assert_eq!(d("webhook", "delivered"), 3.0);
    assert_eq!(d("webhook", "failed"), 7.0);
    assert_eq!(d("webhook", "dead"), 1.0);
    assert_eq!(d("redis", "delivered"), 0.0);
    assert_eq!(s(r#"sink_blocked{source="smdr",sink="redis"}"#), 1.0);
    assert_eq!(s(r#"sink_blocked{source="smdr",sink="webhook"}"#), 0.0);
    assert_eq!(s(r#"outbox_pending{source="smdr",sink="webhook"}"#), 16.0);
    assert_eq!(s(r#"outbox_pending{source="smdr",sink="redis"}"#), 20.0);
    assert_eq!(s(r#"outbox_pending{source="smdr",sink="http-cdr"}"#), 0.0);
    assert_eq!(s(r#"outbox_dead{source="smdr",sink="webhook"}"#), 1.0);
    assert_eq!(s(r#"outbox_dead{source="smdr",sink="redis"}"#), 0.0);
    let age = s(r#"outbox_oldest_pending_age_seconds{source="smdr",sink="redis"}"#);
    assert!((89.0..150.0).contains(&age), "{age}");
    assert_eq!(
        s(r#"outbox_oldest_pending_age_seconds{source="smdr",sink="http-cdr"}"#),
        0.0
    );
    for family in [
        "# TYPE cdr_relay_records_in counter",
        "# TYPE cdr_relay_deliveries counter",
        "# TYPE cdr_relay_outbox_pending gauge",
        "# UNIT cdr_relay_outbox_oldest_pending_age_seconds seconds",
    ] {
        assert!(text.lines().any(|l| l == family), "{family}");
    }
    server.stop().await;
}

#[tokio::test]
async fn readyz_means_able_to_work_not_pbx_connected() {
    let dir = tempdir("ready");
    let db = dir.join("relay.db");
    let server = Server::start(&db, "relay").await;
    assert_eq!(
        server.get("/healthz").await,
        (StatusCode::OK, "ok".to_owned())
    );

    // A relay waiting for its PBX is ready: it must be reachable for the PBX to connect.
    assert!(!server.metrics.is_source_connected());
    assert_eq!(
        server.get("/readyz").await,
        (StatusCode::OK, "ready\n".to_owned())
    );

    // Commits failing (a full disk): not ready until one works again.
    let faults = server.metrics.faults().clone();
    faults.commit_failed();
    let (status, why) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(why.contains("intake stalled"), "{why}");
    faults.commit_ok();
    assert_eq!(server.get("/readyz").await.0, StatusCode::OK);

    // A delivery worker down: not ready until it is restarted.
    faults.worker_down();
    let (status, why) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(why.contains("1 delivery worker(s) down"), "{why}");
    faults.worker_restarted();
    assert_eq!(server.get("/readyz").await.0, StatusCode::OK);

    // A delivery pending for 20 minutes: the outbox is stuck.
    let calls = fixture_calls();
    let mut outbox = commit(&db, &calls[..2], now_ms() - 20 * 60 * 1000);
    let (status, why) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        why.contains("sink redis: oldest pending delivery is 1200 s old"),
        "{why}"
    );

    for sink in sinks() {
        let done: Vec<_> = calls[..2]
            .iter()
            .map(|c| (c.id.clone(), Outcome::Delivered))
            .collect();
        outbox.record(&sink, &done, now_ms()).expect("record");
    }
    assert_eq!(
        server.get("/readyz").await,
        (StatusCode::OK, "ready\n".to_owned())
    );

    // A recent pending delivery is fine.
    drop(commit(&db, &calls[2..3], now_ms()));
    assert_eq!(server.get("/readyz").await.0, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let dir = tempdir("routes");
    let server = Server::start(&dir.join("relay.db"), "relay").await;
    let (status, page) = server.get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("There is nothing here"));
    let (status, err) = server.json("/api/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err, json!({"error": "not found"}));
    let (status, headers, _) = server.request(Method::POST, "/api/v1/calls").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, _, body) = server.request(Method::HEAD, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "");
    server.stop().await;
}

#[tokio::test]
async fn slow_clients_are_dropped_and_shutdown_is_graceful() {
    let dir = tempdir("slow");
    let options = WebOptions {
        header_read_timeout: Duration::from_millis(300),
        ..WebOptions::default()
    };
    let server = Server::start_with(&dir.join("relay.db"), "relay", options).await;
    let addr = server.base.trim_start_matches("http://").to_owned();

    // Half a request, then nothing: the server hangs up on its own.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    // Meanwhile others are served.
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
        .await
        .expect("the server closed the slow connection")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(
        rest.is_empty() || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );

    // An idle keep-alive connection does not hold up shutdown.
    let mut idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    let n = idle.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let stopping = Instant::now();
    server.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(3));
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "no longer listening"
    );
}
