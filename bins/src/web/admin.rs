//! The operator's side of the server: the sinks and dead letters page (`GET /dead-letters`),
//! the sinks' state as JSON (`GET /api/v1/sinks`), and the admin actions (`POST`):
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/admin/sinks/<sink>/requeue` | re-queue the sink's dead letters (all, or those of `?id=CALL`, repeatable): `{"sink":..,"requeued":N}` |
//! | `POST /api/v1/admin/sinks/<sink>/pause` | pause the sink (kept in the database): `{"sink":..,"paused":true,"changed":bool}` |
//! | `POST /api/v1/admin/sinks/<sink>/resume` | resume it: `{"sink":..,"paused":false,"changed":bool}` |
//!
//! A `<sink>` is its name percent-encoded (`jsonl%3Aout.jsonl`); a sink neither running here nor
//! in the database is a 404. A form's `POST` (from the page's buttons) is answered with a
//! redirect back to the page. A request a browser marks as cross-site (`Sec-Fetch-Site`) is
//! refused, so another site cannot make an operator's browser act. Who may call these is decided
//! before they are reached (access control applies by path to everything under
//! `/api/v1/admin/`). The running workers see a change on their next pass (within seconds; see
//! [`cdr_sinks::admin`]).

use std::sync::Arc;

use askama::Template;
use cdr_sinks::engine::now_ms;
use cdr_sinks::outbox::{Outbox, SinkCounts};
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

use super::format::utc;
use super::query::{decode, encode, query_pairs};
use super::respond::{db_error_json, json_error, json_response, text};
use super::{Resp, Shared, health, pages, with_store};

/// Where the admin actions live; every `POST` under it comes here.
pub(super) const PREFIX: &str = "/api/v1/admin/";

/// Dead letters listed on the page.
const PAGE_DEAD_LETTERS: u64 = 200;

/// What an admin `POST` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Requeue,
    Pause,
    Resume,
}

/// `POST /api/v1/admin/...`.
pub(super) async fn post<B>(shared: &Arc<Shared>, req: &Request<B>) -> Resp {
    let cross_site = req
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if cross_site {
        return json_error(StatusCode::FORBIDDEN, "cross-site request refused");
    }
    let path = req.uri().path();
    let Some((sink, action)) = path
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix("sinks/"))
        .and_then(|rest| rest.rsplit_once('/'))
    else {
        return json_error(StatusCode::NOT_FOUND, "not found");
    };
    let action = match action {
        "requeue" => Action::Requeue,
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        _ => return json_error(StatusCode::NOT_FOUND, "not found"),
    };
    let sink = decode(sink);
    let ids: Vec<String> = query_pairs(req.uri().query().unwrap_or_default())
        .into_iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v)
        .collect();
    if ids.len() > cdr_sinks::admin::MAX_REQUEUE_IDS {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!("at most {} ids at once", cdr_sinks::admin::MAX_REQUEUE_IDS),
        );
    }
    let from_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let db = shared.state.db.clone();
    if !db.exists() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "no database yet");
    }
    let registered = shared.state.metrics.sink_names();
    let name = sink.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<Option<Value>, String> {
        let o = Outbox::open(&db, &[]).map_err(|e| e.to_string())?;
        let known = o.known_sinks().map_err(|e| e.to_string())?;
        if !registered.contains(&name) && !known.contains(&name) {
            return Ok(None);
        }
        let value = match action {
            Action::Requeue => {
                let ids = (!ids.is_empty()).then_some(ids.as_slice());
                let n = o
                    .requeue_dead(&name, ids, now_ms())
                    .map_err(|e| e.to_string())?;
                tracing::info!(sink = %name, requeued = n, "dead letters re-queued by an operator");
                json!({ "sink": name, "requeued": n })
            }
            Action::Pause => {
                let changed = o.pause_sink(&name, now_ms()).map_err(|e| e.to_string())?;
                tracing::info!(sink = %name, changed, "sink paused by an operator");
                json!({ "sink": name, "paused": true, "changed": changed })
            }
            Action::Resume => {
                let changed = o.resume_sink(&name).map_err(|e| e.to_string())?;
                tracing::info!(sink = %name, changed, "sink resumed by an operator");
                json!({ "sink": name, "paused": false, "changed": changed })
            }
        };
        Ok(Some(value))
    })
    .await;
    match done {
        Ok(Ok(Some(_))) if from_form => {
            let mut resp = text(StatusCode::SEE_OTHER, "done\n");
            resp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/dead-letters"));
            resp
        }
        Ok(Ok(Some(value))) => json_response(StatusCode::OK, &value),
        Ok(Ok(None)) => json_error(StatusCode::NOT_FOUND, &format!("unknown sink {sink:?}")),
        Ok(Err(e)) => db_error_json(&e),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Every sink's counts with whether it is paused.
async fn sinks(shared: &Arc<Shared>) -> Result<Vec<(SinkCounts, bool)>, String> {
    let counts = health::sink_counts(shared).await?;
    let db = shared.state.db.clone();
    let paused = tokio::task::spawn_blocking(move || cdr_sinks::admin::paused_sinks(&db))
        .await
        .map_err(|e| format!("database task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    Ok(counts
        .into_iter()
        .map(|c| {
            let p = paused.contains(&c.sink);
            (c, p)
        })
        .collect())
}

/// `GET /api/v1/sinks`: `{"sinks":[{"sink","pending","delivered","dead","oldest_pending_ms","paused"}]}`.
pub(super) async fn api_sinks(shared: &Arc<Shared>) -> Resp {
    match sinks(shared).await {
        Ok(list) => {
            let list: Vec<Value> = list
                .into_iter()
                .map(|(c, paused)| {
                    json!({
                        "sink": c.sink,
                        "pending": c.pending,
                        "delivered": c.delivered,
                        "dead": c.dead,
                        "oldest_pending_ms": c.oldest_pending_ms,
                        "paused": paused,
                    })
                })
                .collect();
            json_response(StatusCode::OK, &json!({ "sinks": list }))
        }
        Err(e) => db_error_json(&e),
    }
}

/// The sinks and dead letters page (`templates/dead_letters.html`).
#[derive(Template)]
#[template(path = "dead_letters.html")]
struct DeadLettersPage<'a> {
    title: &'a str,
    heading: &'a str,
    sinks: Vec<SinkRow>,
    letters: Vec<LetterRow>,
}

/// One sink on the page.
struct SinkRow {
    name: String,
    href: String,
    paused: bool,
    pending: u64,
    delivered: u64,
    dead: u64,
}

/// One dead letter on the page.
struct LetterRow {
    sink_href: String,
    id_query: String,
    call_href: String,
    sink: String,
    start: String,
    caller: String,
    called: String,
    attempts: i64,
    error: String,
    when: String,
}

/// `GET /dead-letters`.
pub(super) async fn dead_letters_page(shared: &Arc<Shared>) -> Resp {
    let title = &shared.state.title;
    let sinks = match sinks(shared).await {
        Ok(s) => s,
        Err(e) => return pages::db_error_html(title, &e),
    };
    let letters = match with_store(shared, |s| s.dead_letters(PAGE_DEAD_LETTERS)).await {
        Ok(l) => l,
        Err(e) => return pages::db_error_html(title, &e),
    };
    let page = DeadLettersPage {
        title,
        heading: "Sinks and dead letters",
        sinks: sinks
            .into_iter()
            .map(|(c, paused)| SinkRow {
                href: encode(&c.sink),
                name: c.sink,
                paused,
                pending: c.pending,
                delivered: c.delivered,
                dead: c.dead,
            })
            .collect(),
        letters: letters
            .into_iter()
            .map(|d| {
                // A progress record's key is the call's id, `#`, its number.
                let call = d.call_id.split('#').next().unwrap_or_default();
                LetterRow {
                    sink_href: encode(&d.sink),
                    id_query: encode(&d.call_id),
                    call_href: encode(call),
                    start: d.start_time.unwrap_or_default(),
                    caller: d.caller.unwrap_or_default(),
                    called: d.called.unwrap_or_default(),
                    attempts: d.attempts,
                    error: d.last_error.unwrap_or_default(),
                    when: utc(d.done_ms),
                    sink: d.sink,
                }
            })
            .collect(),
    };
    pages::render(StatusCode::OK, &page)
}
