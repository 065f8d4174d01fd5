//! Routing: which handler answers a path.

use std::sync::Arc;

use hyper::StatusCode;

use super::query::decode;
use super::respond::{json_error, text};
use super::{Resp, Shared, admin, api, health, pages};

pub(super) async fn route(shared: &Arc<Shared>, path: &str, query: &str) -> Resp {
    match path {
        "/" => pages::index_page(shared, query).await,
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" => health::readyz(shared).await,
        "/metrics" => api::metrics_page(shared).await,
        "/api/v1/calls" => api::api_calls(shared, query).await,
        "/api/v1/dead-letters" => api::api_dead_letters(shared, query).await,
        "/dead-letters" => admin::dead_letters_page(shared).await,
        "/api/v1/sinks" => admin::api_sinks(shared).await,
        "/api/v1/status" => api::api_status(shared),
        "/api/v1/schema" => api::api_schema(),
        _ => {
            if let Some(id) = path.strip_prefix("/calls/") {
                pages::call_page(shared, decode(id), query).await
            } else if let Some(id) = path.strip_prefix("/api/v1/calls/") {
                api::api_call(shared, decode(id), query).await
            } else if let Some(page) = path.strip_prefix("/api/v1/records/") {
                api::api_records(shared, page).await
            } else if path.starts_with("/api/") {
                json_error(StatusCode::NOT_FOUND, "not found")
            } else {
                pages::message(
                    StatusCode::NOT_FOUND,
                    &pages::Message {
                        title: &shared.state.title,
                        heading: "Not found",
                        text: "There is nothing here.",
                        error: false,
                        back: true,
                    },
                )
            }
        }
    }
}
