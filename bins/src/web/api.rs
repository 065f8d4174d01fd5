//! The JSON API (`/api/v1/...`) and `/metrics`.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{Value, json};

use super::query::{CallQuery, items_page, query_pairs};
use super::respond::{db_error_json, json_error, json_response, response};
use super::window::{Window, window};
use super::{MAX_DEAD_LETTERS, Resp, Shared, health, with_store};
use crate::ops::metrics;
use cdr_sinks::store::{PageRequest, StoreReader};

/// The CMS sample receiver's API: 20 records a page, newest first, `{"records":0}` past the
/// end (see `cdr_sinks::http_cdr::api_page`).
pub(super) async fn api_records(shared: &Arc<Shared>, page: &str) -> Resp {
    let Ok(page) = page.trim_end_matches('/').parse::<u64>() else {
        return json_error(StatusCode::NOT_FOUND, "not found");
    };
    let db = shared.state.db.clone();
    let rows = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>, String> {
        StoreReader::open(&db)
            .and_then(|s| s.records_page(page.max(1), 20))
            .map_err(|e| e.to_string())
    })
    .await;
    match rows {
        Ok(Ok(rows)) => {
            let list: Vec<Value> = rows
                .iter()
                .filter_map(|r| serde_json::from_slice(r).ok())
                .collect();
            let value = if list.is_empty() || page == 0 {
                json!({ "records": 0 })
            } else {
                json!({ "records": list })
            };
            json_response(StatusCode::OK, &value)
        }
        Ok(Err(e)) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The bytes a page of `/api/v1/calls` may spend on its calls: a call larger than its share
/// has its lists cut to their first [`LISTED_ITEMS`] items.
const LIST_BUDGET: usize = 4 << 20;

/// Items of each list kept of a call too large for its share of a list page.
const LISTED_ITEMS: usize = 20;

pub(super) async fn api_calls(shared: &Arc<Shared>, query: &str) -> Resp {
    let q = match CallQuery::parse(query, true) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    let (page, per_page) = (q.page, q.per_page);
    let filter = q.filter.to_store();
    let share = (LIST_BUDGET / usize::try_from(per_page).unwrap_or(1).max(1)).max(16 << 10);
    let listed = with_store(shared, move |s| {
        let listing = s.list_bodies(&filter, PageRequest::new(page, per_page))?;
        let calls: Vec<Value> = listing
            .items
            .iter()
            .filter_map(|r| {
                if r.body.len() > share {
                    let w = window(&r.body, 0, LISTED_ITEMS)?;
                    let mut call: Value = serde_json::from_slice(&w.body).ok()?;
                    add_paged(&mut call, &w, 1, LISTED_ITEMS);
                    return Some(call);
                }
                serde_json::from_slice(&r.body)
                    .map_err(|e| tracing::warn!(id = %r.id, "stored call is not JSON: {e}"))
                    .ok()
            })
            .collect();
        Ok((listing.total, calls))
    })
    .await;
    match listed {
        Ok((total, calls)) => json_response(
            StatusCode::OK,
            &json!({"calls": calls, "page": page, "per_page": per_page, "total": total}),
        ),
        Err(e) => db_error_json(&e),
    }
}

/// Says in `call` which page of its lists it holds: `"paged": {"page", "per_page", "pages",
/// "totals": {list: items}}`.
fn add_paged(call: &mut Value, w: &Window, page: usize, per_page: usize) {
    if let Some(obj) = call.as_object_mut() {
        let totals: serde_json::Map<String, Value> =
            w.lists.iter().map(|(k, n)| (k.clone(), json!(n))).collect();
        obj.insert(
            "paged".to_owned(),
            json!({
                "page": page,
                "per_page": per_page,
                "pages": w.longest().div_ceil(per_page).max(1),
                "totals": totals,
            }),
        );
    }
}

pub(super) async fn api_call(shared: &Arc<Shared>, id: String, query: &str) -> Resp {
    let (page, per_page) = match items_page(query) {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    let skip = (page - 1).saturating_mul(per_page);
    let found = with_store(shared, move |s| {
        Ok(s.call(&id)?.map(|stored| {
            let call = match window(&stored.body, skip, per_page) {
                Some(w) => serde_json::from_slice::<Value>(&w.body).map(|mut call| {
                    if w.is_cut(per_page) || page > 1 {
                        add_paged(&mut call, &w, page, per_page);
                    }
                    call
                }),
                None => serde_json::from_slice::<Value>(&stored.body),
            };
            (call, stored.deliveries)
        }))
    })
    .await;
    match found {
        Ok(Some((call, deliveries))) => {
            let mut call: Value = match call {
                Ok(v) => v,
                Err(e) => {
                    return json_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("stored call is not JSON: {e}"),
                    );
                }
            };
            if let Some(obj) = call.as_object_mut() {
                let list: Vec<Value> = deliveries
                    .iter()
                    .map(|d| {
                        json!({
                            "sink": d.sink,
                            "state": d.state.as_str(),
                            "attempts": d.attempts,
                            "last_error": d.last_error,
                        })
                    })
                    .collect();
                obj.insert("deliveries".to_owned(), Value::Array(list));
            }
            json_response(StatusCode::OK, &call)
        }
        Ok(None) => json_error(StatusCode::NOT_FOUND, "call not found"),
        Err(e) => db_error_json(&e),
    }
}

pub(super) async fn api_dead_letters(shared: &Arc<Shared>, query: &str) -> Resp {
    let mut limit = 100;
    for (k, v) in query_pairs(query) {
        if k == "limit" && !v.is_empty() {
            match v.parse::<u64>() {
                Ok(n) => limit = n.clamp(1, MAX_DEAD_LETTERS),
                Err(_) => return json_error(StatusCode::BAD_REQUEST, "limit must be a number"),
            }
        }
    }
    match with_store(shared, move |s| s.dead_letters(limit)).await {
        Ok(rows) => {
            let list: Vec<Value> = rows
                .into_iter()
                .map(|d| {
                    json!({
                        "call_id": d.call_id,
                        "sink": d.sink,
                        "attempts": d.attempts,
                        "last_error": d.last_error,
                        "done_ms": d.done_ms,
                        "start_time": d.start_time,
                        "caller": d.caller,
                        "called": d.called,
                    })
                })
                .collect();
            json_response(StatusCode::OK, &json!({ "dead_letters": list }))
        }
        Err(e) => db_error_json(&e),
    }
}

/// The published JSON Schema of the call body, as committed (`schema/cdr-relay.call.v1.json`;
/// a test in call-assembler keeps the file equal to what the types generate).
pub(super) const CALL_SCHEMA: &str = include_str!("../../../schema/cdr-relay.call.v1.json");

/// `/api/v1/schema`: [`CALL_SCHEMA`], the schema of the calls the sinks send and the API
/// shows (`cdr-relay.call.v1`).
pub(super) fn api_schema() -> Resp {
    response(StatusCode::OK, "application/schema+json", CALL_SCHEMA)
}

/// `/api/v1/status`: what retention keeps and the database's size, as the last retention pass
/// saw them (sizes in bytes, times in ms since the epoch; `null` before the first pass).
pub(super) fn api_status(shared: &Arc<Shared>) -> Resp {
    let status = shared.state.metrics.retention();
    let pruned: serde_json::Map<String, Value> = status
        .pruned
        .by_table()
        .into_iter()
        .map(|(table, n)| (table.to_owned(), json!(n)))
        .collect();
    let days = status.policy.max_age.map(|a| a.as_secs() / 86_400);
    json_response(
        StatusCode::OK,
        &json!({
            "retention": {
                "summary": super::format::retention(&status),
                "max_age_days": days,
                "max_db_bytes": status.policy.max_bytes,
                "db_size_bytes": status.size.map(|s| s.file_bytes()),
                "db_used_bytes": status.size.map(|s| s.used_bytes()),
                "oldest_call_ms": status.oldest_call_ms,
                "checked_ms": status.checked_ms,
                "pruned_rows": pruned,
            }
        }),
    )
}

pub(super) async fn metrics_page(shared: &Arc<Shared>) -> Resp {
    let counts = match health::sink_counts(shared).await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!("metrics: outbox unreadable, outbox families left out: {e}");
            Vec::new()
        }
    };
    let body = shared
        .state
        .metrics
        .render(&counts, cdr_sinks::engine::now_ms());
    response(StatusCode::OK, metrics::CONTENT_TYPE, body)
}
