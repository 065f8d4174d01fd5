//! The HTML pages: the call list (`/`) and a call (`/calls/<id>`), the page around them and
//! the message pages (not found, bad request, database error). The HTML is in askama templates
//! (`templates/`, compiled with the crate): this module gathers what they show.

use std::collections::BTreeSet;
use std::sync::Arc;

use askama::Template;
use cdr_sinks::outbox::SinkCounts;
use cdr_sinks::store::{CallRow, Delivery, DeliveryState, Listing, PageRequest};
use hyper::StatusCode;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::charts::{deliveries_figure, hours_figure};
use super::format::{hms, utc};
use super::query::{CallFilter, CallQuery, encode, items_page};
use super::respond::{html, text};
use super::timeline::{Timeline, timeline_figure};
use super::window::{CALL_PAGE_ITEMS, window};
use super::{Resp, Shared, with_store};

pub(super) async fn index_page(shared: &Arc<Shared>, query: &str) -> Resp {
    let title = &shared.state.title;
    let q = match CallQuery::parse(query, false) {
        Ok(q) => q,
        Err(e) => return bad_request(title, &e),
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
            let mut hours_chart = String::new();
            hours_figure(
                &mut hours_chart,
                hours.as_ref(),
                q.filter != CallFilter::default(),
            );
            let mut deliveries_chart = String::new();
            deliveries_figure(&mut deliveries_chart, &counts);
            let page = IndexPage::new(title, &q, total, &rows, &sinks);
            render(
                StatusCode::OK,
                &IndexPage {
                    hours_chart,
                    deliveries_chart,
                    retention: super::format::retention(&shared.state.metrics.retention()),
                    ..page
                },
            )
        }
        Err(e) => db_error_html(title, &e),
    }
}

pub(super) async fn call_page(shared: &Arc<Shared>, id: String, query: &str) -> Resp {
    let title = &shared.state.title;
    let (page, per_page) = match items_page(query) {
        Ok(p) => p,
        Err(e) => return bad_request(title, &e),
    };
    let href = encode(&id);
    let skip = (page - 1).saturating_mul(per_page);
    let stored = with_store(shared, move |s| {
        Ok(s.call(&id)?.map(|stored| {
            let cut = window(&stored.body, skip, per_page);
            (stored, cut)
        }))
    })
    .await;
    match stored {
        Ok(Some((stored, cut))) => {
            let (body, items) = match cut {
                Some(w) => {
                    let nav = (w.is_cut(per_page) || page > 1)
                        .then(|| ItemsNav::new(&href, page, per_page, w.longest()));
                    (w.body, nav)
                }
                None => (stored.body, None),
            };
            let mut call = CallPage::new(title, &body, &stored.deliveries, skip);
            call.items = items;
            render(StatusCode::OK, &call)
        }
        Ok(None) => message(
            StatusCode::NOT_FOUND,
            &Message {
                title,
                heading: "Call not found",
                text: "No call has this id.",
                error: false,
                back: true,
            },
        ),
        Err(e) => db_error_html(title, &e),
    }
}

/// The links between the pages of a call's lists (`templates/call.html`).
struct ItemsNav {
    first: Option<String>,
    previous: Option<String>,
    next: Option<String>,
    last: Option<String>,
    /// The first and last item shown (from 1), and the longest list's length.
    from: usize,
    to: usize,
    total: usize,
    page: usize,
    pages: usize,
}

impl ItemsNav {
    fn new(href: &str, page: usize, per_page: usize, total: usize) -> Self {
        let pages = total.div_ceil(per_page).max(1);
        let link = |p: usize| {
            if per_page == CALL_PAGE_ITEMS {
                format!("/calls/{href}?page={p}")
            } else {
                format!("/calls/{href}?page={p}&per_page={per_page}")
            }
        };
        let from = (page - 1).saturating_mul(per_page);
        Self {
            first: (page > 2).then(|| link(1)),
            previous: (page > 1).then(|| link((page - 1).min(pages))),
            next: (page < pages).then(|| link(page + 1)),
            last: (page + 1 < pages).then(|| link(pages)),
            from: (from + 1).min(total),
            to: from.saturating_add(per_page).min(total),
            total,
            page,
            pages,
        }
    }
}

/// Renders a page; a template that fails (it cannot, short of running out of memory) is a 500.
pub(super) fn render(status: StatusCode, page: &impl Template) -> Resp {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::warn!("web: page not rendered: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "page not rendered\n")
        }
    }
}

/// A page with one message (`templates/message.html`).
#[derive(Template)]
#[template(path = "message.html")]
pub(super) struct Message<'a> {
    /// The site's title.
    pub(super) title: &'a str,
    /// The page's heading.
    pub(super) heading: &'a str,
    /// The message.
    pub(super) text: &'a str,
    /// Whether it is an error (in red, on its own).
    pub(super) error: bool,
    /// Whether to link back to the calls.
    pub(super) back: bool,
}

/// The message page with `status`.
pub(super) fn message(status: StatusCode, page: &Message<'_>) -> Resp {
    render(status, page)
}

/// The page of a bad query string (400), with a way back.
fn bad_request(title: &str, text: &str) -> Resp {
    message(
        StatusCode::BAD_REQUEST,
        &Message {
            title,
            heading: "Bad request",
            text,
            error: true,
            back: true,
        },
    )
}

/// The page of a database error (500).
pub(super) fn db_error_html(title: &str, e: &str) -> Resp {
    tracing::warn!("web: database error: {e}");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        &Message {
            title,
            heading: "Database error",
            text: e,
            error: true,
            back: false,
        },
    )
}

/// The call list (`templates/index.html`).
#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage<'a> {
    title: &'a str,
    heading: &'a str,
    hours_chart: String,
    deliveries_chart: String,
    retention: String,
    from: &'a str,
    to: &'a str,
    number: &'a str,
    site: &'a str,
    sources: Vec<Choice>,
    directions: Vec<Choice>,
    completes: Vec<Choice>,
    pager: Pager,
    sinks: &'a BTreeSet<String>,
    rows: Vec<Row<'a>>,
}

/// An option of a `<select>`.
struct Choice {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

/// The links between the pages of the list (`templates/pager.html`).
struct Pager {
    newest: Option<String>,
    newer: Option<String>,
    older: Option<String>,
    oldest: Option<String>,
    total: u64,
    noun: &'static str,
    page: u64,
    pages: u64,
}

/// A call in the list.
struct Row<'a> {
    /// The call's id, percent-encoded for its link.
    href: String,
    start: String,
    direction: &'a str,
    caller: &'a str,
    called: &'a str,
    duration: String,
    answered: &'static str,
    complete: &'static str,
    /// The delivery state for each of the list's sinks, if the call has a delivery there.
    states: Vec<Option<&'static str>>,
}

impl<'a> IndexPage<'a> {
    /// Everything but the charts.
    fn new(
        title: &'a str,
        q: &'a CallQuery,
        total: u64,
        rows: &'a [CallRow],
        sinks: &'a BTreeSet<String>,
    ) -> Self {
        let f = &q.filter;
        let directions = [
            ("", "any"),
            ("inbound", "inbound"),
            ("outbound", "outbound"),
            ("internal", "internal"),
        ]
        .into_iter()
        .map(|(value, label)| Choice {
            value,
            label,
            selected: f.direction.unwrap_or_default() == value,
        })
        .collect();
        let sources = [
            ("", "any"),
            ("smdr", "SMDR"),
            ("ami", "Asterisk"),
            ("cms", "CMS"),
            ("dialler", "dialler"),
        ]
        .into_iter()
        .map(|(value, label)| Choice {
            value,
            label,
            selected: f.source.unwrap_or_default() == value,
        })
        .collect();
        let completes = [
            ("", "any", None),
            ("true", "complete", Some(true)),
            ("false", "incomplete", Some(false)),
        ]
        .into_iter()
        .map(|(value, label, c)| Choice {
            value,
            label,
            selected: f.complete == c,
        })
        .collect();
        let pages = total.div_ceil(q.per_page).max(1);
        let filter = f.to_query();
        let link = |page: u64| {
            if filter.is_empty() {
                format!("/?page={page}")
            } else {
                format!("/?{filter}&page={page}")
            }
        };
        let pager = Pager {
            newest: (q.page > 2).then(|| link(1)),
            newer: (q.page > 1).then(|| link(q.page.saturating_sub(1).min(pages))),
            older: (q.page < pages).then(|| link(q.page.saturating_add(1))),
            oldest: (q.page.saturating_add(1) < pages).then(|| link(pages)),
            total,
            noun: if total == 1 { "call" } else { "calls" },
            page: q.page,
            pages,
        };
        let rows = rows
            .iter()
            .map(|r| Row {
                href: encode(&r.id),
                start: r.start_time.replacen('T', " ", 1),
                direction: &r.direction,
                caller: &r.caller,
                called: &r.called,
                duration: hms(r.duration),
                answered: yes_no(r.answered),
                complete: yes_no(r.complete),
                states: sinks
                    .iter()
                    .map(|sink| {
                        r.deliveries
                            .iter()
                            .find(|d| &d.sink == sink)
                            .map(|d| d.state.as_str())
                    })
                    .collect(),
            })
            .collect();
        Self {
            title,
            heading: "Calls",
            hours_chart: String::new(),
            deliveries_chart: String::new(),
            retention: String::new(),
            from: f.from.as_deref().unwrap_or_default(),
            to: f.to.as_deref().unwrap_or_default(),
            number: f.number.as_deref().unwrap_or_default(),
            site: f.site.as_deref().unwrap_or_default(),
            sources,
            directions,
            completes,
            pager,
            sinks,
            rows,
        }
    }
}

/// A call (`templates/call.html`).
#[derive(Template)]
#[template(path = "call.html")]
struct CallPage<'a> {
    title: &'a str,
    heading: String,
    /// The timeline figure (SVG), or nothing.
    timeline: String,
    fields: Fields,
    /// The call's lists of objects (parties, records, legs, ...), as tables.
    lists: Vec<ObjectTable>,
    deliveries: Vec<DeliveryRow<'a>>,
    /// The stored JSON, indented (its lists cut to the page shown).
    json: String,
    /// The links between the pages of the call's lists, when they have more than one.
    items: Option<ItemsNav>,
}

/// The call's fields other than its lists, as the summary shows them.
enum Fields {
    /// Each field and its cell text, in the stored order.
    Object(Vec<(String, String)>),
    /// The stored call is JSON but not an object.
    NotAnObject,
    /// The stored call is not JSON: why.
    Unreadable(String),
}

/// A table of JSON objects: one row per object when they have a few fields, else (`wide`) one
/// column per object (SMDR records have over thirty fields). Columns keep their first-seen
/// order.
struct ObjectTable {
    heading: String,
    count: usize,
    /// The number of the first object before this page (0 on the first).
    offset: usize,
    wide: bool,
    /// The columns (not `wide`).
    keys: Vec<String>,
    rows: Vec<TableRow>,
}

/// A row of an [`ObjectTable`]: its header cell (the object's number, or the field when
/// `wide`) and its cells.
struct TableRow {
    name: String,
    cells: Vec<String>,
}

/// A delivery of the call, as its table shows it.
struct DeliveryRow<'a> {
    sink: &'a str,
    state: &'static str,
    attempts: i64,
    error: &'a str,
    queued: String,
    next: String,
    done: String,
}

impl<'a> CallPage<'a> {
    /// The page of the call `body` (its lists cut to the items from `offset`).
    fn new(title: &'a str, body: &[u8], deliveries: &'a [Delivery], offset: usize) -> Self {
        let call = serde_json::from_slice::<Json>(body);
        let call_id = call
            .as_ref()
            .ok()
            .and_then(|c| c.get("call_id"))
            .map(Json::display)
            .unwrap_or_default();
        let mut timeline = String::new();
        if let Some(t) = serde_json::from_slice::<Value>(body)
            .ok()
            .as_ref()
            .and_then(Timeline::of)
        {
            timeline_figure(&mut timeline, &t);
        }
        let mut lists = Vec::new();
        let fields = match &call {
            Ok(Json::Object(fields)) => {
                let mut summary = Vec::new();
                for (key, value) in fields {
                    match value {
                        Json::Array(items) if items.iter().all(Json::is_object) => {
                            if !items.is_empty() {
                                lists.push(object_table(key, items, offset));
                            }
                        }
                        _ => summary.push((key.clone(), value.display())),
                    }
                }
                Fields::Object(summary)
            }
            Ok(_) => Fields::NotAnObject,
            Err(e) => Fields::Unreadable(e.to_string()),
        };
        let deliveries = deliveries
            .iter()
            .map(|d| DeliveryRow {
                sink: &d.sink,
                state: d.state.as_str(),
                attempts: d.attempts,
                error: d.last_error.as_deref().unwrap_or_default(),
                queued: utc(Some(d.created_ms)),
                next: if d.state == DeliveryState::Pending {
                    utc(Some(d.next_ms))
                } else {
                    String::new()
                },
                done: utc(d.done_ms),
            })
            .collect();
        Self {
            title,
            heading: if call_id.is_empty() {
                "Call".to_owned()
            } else {
                format!("Call {call_id}")
            },
            timeline,
            fields,
            lists,
            deliveries,
            json: pretty_json(&String::from_utf8_lossy(body)),
            items: None,
        }
    }
}

/// The table of the list `key` of a call.
fn object_table(key: &str, objects: &[Json], offset: usize) -> ObjectTable {
    let mut keys: Vec<&str> = Vec::new();
    for o in objects {
        if let Json::Object(fields) = o {
            for k in fields.keys() {
                if !keys.contains(&k.as_str()) {
                    keys.push(k);
                }
            }
        }
    }
    let cell = |o: &Json, k: &str| o.get(k).map(Json::display).unwrap_or_default();
    let wide = keys.len() > 6;
    let rows = if wide {
        keys.iter()
            .map(|k| TableRow {
                name: (*k).to_owned(),
                cells: objects.iter().map(|o| cell(o, k)).collect(),
            })
            .collect()
    } else {
        objects
            .iter()
            .enumerate()
            .map(|(i, o)| TableRow {
                name: (offset + i + 1).to_string(),
                cells: keys.iter().map(|k| cell(o, k)).collect(),
            })
            .collect()
    };
    ObjectTable {
        heading: heading(key),
        count: objects.len(),
        offset,
        wide,
        keys: keys.into_iter().map(str::to_owned).collect(),
        rows,
    }
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
