//! The HTML pages: the call list (`/`) and a call (`/calls/<id>`), the page around them and
//! the error pages.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use cdr_sinks::outbox::SinkCounts;
use cdr_sinks::store::{CallRow, Delivery, DeliveryState, Listing, PageRequest};
use hyper::StatusCode;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::charts::{Hours, deliveries_figure, hours_figure};
use super::routes::{CallFilter, CallQuery, db_error_html, encode, html, with_store};
use super::timeline::{Timeline, timeline_figure};
use super::{Resp, Shared};

pub(super) async fn index_page(shared: &Arc<Shared>, query: &str) -> Resp {
    let title = &shared.state.title;
    let q = match CallQuery::parse(query, false) {
        Ok(q) => q,
        Err(e) => {
            let body = format!(
                "<p class=\"error\">{}</p><p><a href=\"/\">Back to the calls</a></p>",
                esc(&e)
            );
            return html(StatusCode::BAD_REQUEST, page(title, "Bad request", &body));
        }
    };
    let filter = q.filter.to_store();
    let page_request = PageRequest::new(q.page, q.per_page);
    let listed = with_store(shared, move |s| {
        let listing = s.list_calls(&filter, page_request)?;
        let hours = s.calls_per_hour(&filter)?;
        let counts = s.delivery_counts()?;
        Ok((listing, hours, counts))
    })
    .await;
    match listed {
        Ok((Listing { total, items: rows }, hours, mut counts)) => {
            let registered = shared.state.metrics.sink_names();
            for sink in &registered {
                if !counts.iter().any(|c| &c.sink == sink) {
                    counts.push(SinkCounts {
                        sink: sink.clone(),
                        ..SinkCounts::default()
                    });
                }
            }
            counts.sort_by(|a, b| a.sink.cmp(&b.sink));
            let mut sinks: BTreeSet<String> = registered.into_iter().collect();
            sinks.extend(
                rows.iter()
                    .flat_map(|r| r.deliveries.iter().map(|d| d.sink.clone())),
            );
            let overview = Overview { hours, counts };
            html(
                StatusCode::OK,
                render_index(title, &q, total, &rows, &sinks, &overview),
            )
        }
        Err(e) => db_error_html(title, &e),
    }
}

pub(super) async fn call_page(shared: &Arc<Shared>, id: String) -> Resp {
    let title = &shared.state.title;
    match with_store(shared, move |s| s.call(&id)).await {
        Ok(Some(stored)) => html(
            StatusCode::OK,
            render_call(title, &stored.body, &stored.deliveries),
        ),
        Ok(None) => html(
            StatusCode::NOT_FOUND,
            page(
                title,
                "Call not found",
                "<p>No call has this id. <a href=\"/\">Back to the calls</a></p>",
            ),
        ),
        Err(e) => db_error_html(title, &e),
    }
}

/// What the top of the list page shows besides the calls.
#[derive(Debug, Clone)]
struct Overview {
    hours: Option<Hours>,
    counts: Vec<SinkCounts>,
}

// ---------------------------------------------------------------------------------------------
// HTML

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.2rem 1.5rem;color:#222}\
header{display:flex;align-items:baseline;gap:1.5rem;border-bottom:2px solid #333;margin-bottom:1rem}\
h1{font-size:1.25rem;margin:0 0 .4rem}h1 a{color:inherit;text-decoration:none}\
h2{font-size:1.15rem;margin:.2rem 0 .6rem}h3{font-size:1rem;margin:1.4rem 0 .3rem}\
nav a{margin-right:.9rem}a{color:#0550ae}\
table{border-collapse:collapse;margin:.3rem 0 1rem}\
th,td{border-bottom:1px solid #e2e2e2;padding:.22rem .6rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3;font-weight:600;white-space:nowrap}\
tbody tr:hover{background:#f8fafc}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
.pending{color:#9a5b00}.delivered{color:#1a7f37}.dead{color:#c00;font-weight:600}\
.muted{color:#777}.error{color:#c00}\
form{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:end;margin:0 0 1rem}\
form label{display:flex;flex-direction:column;font-size:.85rem;color:#555}\
input,select{font:inherit;padding:.15rem .3rem}\
.pager{display:flex;gap:1rem;align-items:baseline}\
pre{background:#f6f8fa;padding:.8rem;overflow:auto;font-size:.85rem}\
.overview{display:flex;flex-wrap:wrap;gap:.5rem 2.5rem;align-items:flex-start;margin-bottom:.6rem}\
figure{margin:0 0 1rem}figcaption{font-weight:600;margin:0 0 .3rem}figcaption.muted{font-weight:400}\
svg{max-width:100%;height:auto}table.sinks svg{display:block}\
details summary{cursor:pointer;color:#555;font-size:.85rem}";

/// A whole page: the header with `title`, then `heading` and `body` (already HTML).
pub(super) fn page(title: &str, heading: &str, body: &str) -> String {
    let title = esc(title);
    let heading = esc(heading);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{heading} · {title}</title><style>{CSS}</style></head>\n<body>\
         <header><h1><a href=\"/\">{title}</a></h1><nav><a href=\"/\">Calls</a>\
         <a href=\"/api/v1/calls\">JSON</a><a href=\"/api/v1/dead-letters\">Dead letters</a>\
         <a href=\"/metrics\">Metrics</a></nav></header>\n<main>\n{body}\n</main></body></html>\n"
    )
}

fn render_index(
    title: &str,
    q: &CallQuery,
    total: u64,
    rows: &[CallRow],
    sinks: &BTreeSet<String>,
    overview: &Overview,
) -> String {
    let f = &q.filter;
    let mut b = String::with_capacity(32 * 1024);
    b.push_str("<section class=\"overview\" aria-label=\"Overview\">\n");
    hours_figure(&mut b, overview.hours.as_ref(), f != &CallFilter::default());
    deliveries_figure(&mut b, &overview.counts);
    b.push_str("</section>\n");
    let value = |v: Option<&str>| esc(v.unwrap_or_default());
    let _ = write!(
        b,
        "<form method=\"get\" action=\"/\">\
         <label>From<input name=\"from\" value=\"{}\" placeholder=\"YYYY-MM-DDTHH:MM:SS\"></label>\
         <label>To<input name=\"to\" value=\"{}\" placeholder=\"YYYY-MM-DD\"></label>\
         <label>Number<input name=\"number\" value=\"{}\" placeholder=\"caller or called\"></label>",
        value(f.from.as_deref()),
        value(f.to.as_deref()),
        value(f.number.as_deref()),
    );
    b.push_str("<label>Direction<select name=\"direction\">");
    for (v, label) in [
        ("", "any"),
        ("inbound", "inbound"),
        ("outbound", "outbound"),
        ("internal", "internal"),
    ] {
        let selected = if f.direction.unwrap_or_default() == v {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option value=\"{v}\"{selected}>{label}</option>");
    }
    b.push_str("</select></label><label>Complete<select name=\"complete\">");
    for (v, label, c) in [
        ("", "any", None),
        ("true", "complete", Some(true)),
        ("false", "incomplete", Some(false)),
    ] {
        let selected = if f.complete == c { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{v}\"{selected}>{label}</option>");
    }
    b.push_str(
        "</select></label><button type=\"submit\">Filter</button><a href=\"/\">Clear</a></form>\n",
    );

    let pages = total.div_ceil(q.per_page).max(1);
    let filter = f.to_query();
    let link = |page: u64| {
        if filter.is_empty() {
            format!("/?page={page}")
        } else {
            format!("/?{filter}&page={page}")
        }
    };
    let mut pager = String::from("<nav class=\"pager\" aria-label=\"Pages\">");
    if q.page > 2 {
        let _ = write!(pager, "<a href=\"{}\">« Newest</a>", esc(&link(1)));
    }
    if q.page > 1 {
        let _ = write!(
            pager,
            "<a href=\"{}\">‹ Newer</a>",
            esc(&link(q.page.saturating_sub(1).min(pages)))
        );
    }
    let calls = if total == 1 { "call" } else { "calls" };
    let _ = write!(
        pager,
        "<span class=\"muted\">{total} {calls} · page {} of {pages}</span>",
        q.page
    );
    if q.page < pages {
        let _ = write!(
            pager,
            "<a href=\"{}\">Older ›</a>",
            esc(&link(q.page.saturating_add(1)))
        );
    }
    if q.page.saturating_add(1) < pages {
        let _ = write!(pager, "<a href=\"{}\">Oldest »</a>", esc(&link(pages)));
    }
    pager.push_str("</nav>\n");
    b.push_str(&pager);

    if rows.is_empty() {
        b.push_str(if total == 0 {
            "<p class=\"muted\">No calls yet.</p>\n"
        } else {
            "<p class=\"muted\">No calls on this page.</p>\n"
        });
        return page(title, "Calls", &b);
    }
    b.push_str(
        "<table><thead><tr><th>Start</th><th>Direction</th><th>Caller</th><th>Called</th>\
         <th>Duration</th><th>Answered</th><th>Complete</th>",
    );
    for sink in sinks {
        let _ = write!(b, "<th>{}</th>", esc(sink));
    }
    b.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        let _ = write!(
            b,
            "<tr><td><a href=\"/calls/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td>{}</td>",
            esc(&encode(&r.id)),
            esc(&r.start_time.replacen('T', " ", 1)),
            esc(&r.direction),
            esc(&r.caller),
            esc(&r.called),
            hms(r.duration),
            yes_no(r.answered),
            yes_no(r.complete),
        );
        for sink in sinks {
            match r.deliveries.iter().find(|d| &d.sink == sink) {
                Some(d) => {
                    let _ = write!(b, "<td class=\"{0}\">{0}</td>", esc(d.state.as_str()));
                }
                None => b.push_str("<td class=\"muted\">–</td>"),
            }
        }
        b.push_str("</tr>\n");
    }
    b.push_str("</tbody></table>\n");
    b.push_str(&pager);
    page(title, "Calls", &b)
}

fn render_call(title: &str, body: &[u8], deliveries: &[Delivery]) -> String {
    let mut b = String::with_capacity(32 * 1024);
    let call = serde_json::from_slice::<Json>(body);
    let call_id = call
        .as_ref()
        .ok()
        .and_then(|c| c.get("call_id"))
        .map(Json::display)
        .unwrap_or_default();
    if let Some(timeline) = serde_json::from_slice::<Value>(body)
        .ok()
        .as_ref()
        .and_then(Timeline::of)
    {
        timeline_figure(&mut b, &timeline);
    }
    match &call {
        Ok(Json::Object(fields)) => {
            b.push_str("<h3>Summary</h3>\n<table><tbody>\n");
            let mut lists = Vec::new();
            for (key, value) in fields {
                match value {
                    Json::Array(items) if items.iter().all(Json::is_object) => {
                        if !items.is_empty() {
                            lists.push((key, items));
                        }
                    }
                    _ => {
                        let _ = writeln!(
                            b,
                            "<tr><th>{}</th><td>{}</td></tr>",
                            esc(key),
                            esc(&value.display())
                        );
                    }
                }
            }
            b.push_str("</tbody></table>\n");
            for (key, items) in lists {
                let _ = writeln!(b, "<h3>{} ({})</h3>", esc(&heading(key)), items.len());
                object_table(&mut b, items);
            }
        }
        Ok(_) => b.push_str("<p class=\"error\">The stored call is not a JSON object.</p>\n"),
        Err(e) => {
            let _ = writeln!(
                b,
                "<p class=\"error\">The stored call could not be read: {}</p>",
                esc(&e.to_string())
            );
        }
    }

    b.push_str("<h3>Deliveries</h3>\n");
    if deliveries.is_empty() {
        b.push_str("<p class=\"muted\">No delivery to any sink (stored only).</p>\n");
    } else {
        b.push_str(
            "<table><thead><tr><th>Sink</th><th>State</th><th>Attempts</th><th>Last error</th>\
             <th>Queued</th><th>Next try</th><th>Done</th></tr></thead><tbody>\n",
        );
        for d in deliveries {
            let next = if d.state == DeliveryState::Pending {
                utc(Some(d.next_ms))
            } else {
                String::new()
            };
            let _ = writeln!(
                b,
                "<tr><td>{sink}</td><td class=\"{state}\">{state}</td><td class=\"n\">{attempts}</td>\
                 <td>{error}</td><td>{queued}</td><td>{next}</td><td>{done}</td></tr>",
                sink = esc(&d.sink),
                state = esc(d.state.as_str()),
                attempts = d.attempts,
                error = esc(d.last_error.as_deref().unwrap_or_default()),
                queued = utc(Some(d.created_ms)),
                done = utc(d.done_ms),
            );
        }
        b.push_str("</tbody></table>\n");
    }

    b.push_str("<h3>JSON</h3>\n<pre>");
    b.push_str(&esc(&pretty_json(&String::from_utf8_lossy(body))));
    b.push_str("</pre>\n");
    let heading = if call_id.is_empty() {
        "Call".to_owned()
    } else {
        format!("Call {call_id}")
    };
    page(title, &heading, &format!("<h2>{}</h2>\n{b}", esc(&heading)))
}

/// A table of JSON objects: one row per object when they have a few fields, else one column
/// per object (SMDR records have over thirty fields). Columns keep their first-seen order.
fn object_table(b: &mut String, objects: &[Json]) {
    let mut keys: Vec<&str> = Vec::new();
    for o in objects {
        if let Json::Object(fields) = o {
            for (k, _) in fields {
                if !keys.contains(&k.as_str()) {
                    keys.push(k);
                }
            }
        }
    }
    let cell = |o: &Json, k: &str| esc(&o.get(k).map(Json::display).unwrap_or_default());
    b.push_str("<table>");
    if keys.len() <= 6 {
        b.push_str("<thead><tr><th>#</th>");
        for k in &keys {
            let _ = write!(b, "<th>{}</th>", esc(k));
        }
        b.push_str("</tr></thead><tbody>\n");
        for (i, o) in objects.iter().enumerate() {
            let _ = write!(b, "<tr><td class=\"n\">{}</td>", i + 1);
            for k in &keys {
                let _ = write!(b, "<td>{}</td>", cell(o, k));
            }
            b.push_str("</tr>\n");
        }
    } else {
        b.push_str("<thead><tr><th>Field</th>");
        for i in 1..=objects.len() {
            let _ = write!(b, "<th>{i}</th>");
        }
        b.push_str("</tr></thead><tbody>\n");
        for k in &keys {
            let _ = write!(b, "<tr><th>{}</th>", esc(k));
            for o in objects {
                let _ = write!(b, "<td>{}</td>", cell(o, k));
            }
            b.push_str("</tr>\n");
        }
    }
    b.push_str("</tbody></table>\n");
}

fn heading(key: &str) -> String {
    let mut chars = key.replace('_', " ").chars().collect::<Vec<_>>();
    if let Some(c) = chars.first_mut() {
        *c = c.to_ascii_uppercase();
    }
    chars.into_iter().collect()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Seconds as `H:MM:SS`.
pub(super) fn hms(secs: i64) -> String {
    let s = secs.max(0);
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Milliseconds since the epoch as a UTC time, or nothing.
pub(super) fn utc(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// `text` indented by two spaces a level (serde_json's pretty printer), the fields in the order
/// they are stored; the text as it is when it is not JSON.
fn pretty_json(text: &str) -> String {
    serde_json::from_str::<Json>(text)
        .and_then(|json| serde_json::to_string_pretty(&json))
        .unwrap_or_else(|_| text.to_owned())
}

/// A JSON value whose objects keep their fields in document order, so records show their fields
/// in the order the call model writes them. serde_json's `Value` sorts them, and its
/// `preserve_order` feature would change the order of every `serde_json::Map` in the workspace
/// (the API's bodies, snapshots), so this value is read and written by serde through an
/// [`IndexMap`] instead: untagged, an array or an object, else any other value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
enum Json {
    Array(Vec<Self>),
    Object(IndexMap<String, Self>),
    Scalar(Value),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Object(fields) => fields.get(key),
            _ => None,
        }
    }

    fn is_object(&self) -> bool {
        matches!(self, Self::Object(_))
    }

    /// As a table cell: strings as they are, `null` as nothing, a party as `device (name)`,
    /// anything else as compact JSON.
    fn display(&self) -> String {
        match self {
            Self::Scalar(Value::Null) => String::new(),
            Self::Scalar(Value::String(s)) => s.clone(),
            Self::Object(fields)
                if !fields.is_empty()
                    && fields.iter().all(|(k, _)| k == "device" || k == "name") =>
            {
                let device = self.get("device").map(Self::display).unwrap_or_default();
                let name = self.get("name").map(Self::display).unwrap_or_default();
                if name.is_empty() {
                    device
                } else {
                    format!("{device} ({name})")
                }
            }
            other => other.to_json(),
        }
    }

    /// Compact JSON text, fields in document order.
    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn pretty_prints_json_in_stored_order() {
        let s = pretty_json(r#"{"z":1,"a":[],"s":"x,{\"y\":[1]}","o":{"k":[1,2]}}"#);
        assert_eq!(
            s,
            "{\n  \"z\": 1,\n  \"a\": [],\n  \"s\": \"x,{\\\"y\\\":[1]}\",\n  \"o\": {\n    \"k\": [\n      1,\n      2\n    ]\n  }\n}"
        );
        let back: Value = serde_json::from_str(&s).unwrap_or_default();
        assert_eq!(back["s"], "x,{\"y\":[1]}");
    }

    #[test]
    fn json_keeps_document_order_at_every_level() {
        let text = r#"{"z":1,"a":[{"y":true,"b":null}],"m":{"q":"x","c":-1.5}}"#;
        let j: Json = serde_json::from_str(text).unwrap_or(Json::Scalar(Value::Null));
        let Json::Object(fields) = &j else {
            panic!("{j:?}")
        };
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        assert_eq!(j.to_json(), text);
        assert_eq!(
            j.get("a").map(Json::display).as_deref(),
            Some(r#"[{"y":true,"b":null}]"#)
        );
    }

    #[test]
    fn formats_durations_and_cells() {
        assert_eq!(hms(0), "0:00:00");
        assert_eq!(hms(3725), "1:02:05");
        let cell = |text: &str| {
            serde_json::from_str::<Json>(text)
                .map(|j| j.display())
                .unwrap_or_default()
        };
        assert_eq!(
            cell(r#"{"device":"E232","name":"Agent8"}"#),
            "E232 (Agent8)"
        );
        assert_eq!(cell(r#"{"device":"E232","name":""}"#), "E232");
        assert_eq!(cell("null"), "");
        assert_eq!(cell("true"), "true");
        assert_eq!(cell(r#""a<b""#), "a<b");
        assert_eq!(heading("records"), "Records");
    }
}
