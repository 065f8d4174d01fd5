//! The responses every handler builds: headers, text, HTML, JSON, errors.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::Resp;

pub(super) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

pub(super) fn text(status: StatusCode, body: &str) -> Resp {
    response(status, "text/plain; charset=utf-8", body.to_owned())
}

pub(super) fn html(status: StatusCode, body: String) -> Resp {
    let mut resp = response(status, "text/html; charset=utf-8", body);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    resp
}

pub(super) fn json_response(status: StatusCode, value: &Value) -> Resp {
    response(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

pub(super) fn json_error(status: StatusCode, message: &str) -> Resp {
    json_response(status, &json!({ "error": message }))
}

pub(super) fn db_error_json(e: &str) -> Resp {
    tracing::warn!("web: database error: {e}");
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("database error: {e}"),
    )
}
