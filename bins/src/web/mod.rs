//! The relay's built-in HTTP server: the call list and call pages (plain server-rendered HTML,
//! no JavaScript), the JSON API, `/metrics`, `/healthz` and `/readyz`.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | a chart of calls per hour and the deliveries per sink, then the latest calls, newest first, 50 a page (`?page=N`), with filters |
//! | `GET /calls/<id>` | one call: a timeline of its legs, summary, parties, every record field, deliveries, raw JSON; its lists (records, legs, ...) 200 items a page (`?page=N`) with links |
//! | `GET /api/v1/calls` | `{"calls":[..],"page":N,"per_page":M,"total":T}` (`per_page` up to 200; a call larger than its share of 4 MiB has its lists cut to their first 20 items and a `"paged"` object saying so) |
//! | `GET /api/v1/calls/<id>` | the call's JSON plus `"deliveries"`; 404 when unknown; its lists 200 items a page (`?page=N&per_page=M`), with `"paged": {"page","per_page","pages","totals"}` when a list is longer than a page or `page` is past 1 |
//! | `GET /api/v1/records/<page>` | CMS records as the sample receiver's API shows them: 20 a page, newest first, `{"records":0}` past the end |
//! | `POST /cdr` | `cdr-receiver` only: a CMS CDR batch (see [`crate::sources::receiver`]) |
//! | `GET /api/v1/dead-letters` | the latest dead letters (`?limit=`, up to 1000) |
//! | `GET /dead-letters` | the sinks (counts, paused or not) and the latest dead letters, with the admin's buttons |
//! | `GET /api/v1/sinks` | each sink's counts and whether it is paused |
//! | `GET /api/v1/schema` | the JSON Schema of a call as the sinks send it (`cdr-relay.call.v1`, `application/schema+json`) |
//! | `POST /api/v1/admin/sinks/<sink>/requeue`, `/pause`, `/resume` | re-queue dead letters, pause or resume a sink (`admin`) |
//! | `GET /metrics` | [`Metrics::render`] with the outbox counts, OpenMetrics text |
//! | `GET /healthz` | 200 `ok` while the process runs |
//! | `GET /readyz` | 200 when the relay can do its job (commits work, every delivery worker runs, no sink's oldest pending delivery older than [`WebOptions::ready_max_pending_age`]; the PBX need not be connected); 503 with the reason otherwise |
//!
//! The call list and `/api/v1/calls` take the same filters: `from` and `to` (compared with the
//! call's start, PBX local time, as a prefix of `YYYY-MM-DDTHH:MM:SS`, so `to=2018-01-05`
//! includes that whole day), `number` (part of the caller or the called number), `direction`
//! (`inbound`, `outbound` or `internal`) and `complete` (`true` or `false`). Empty values are
//! ignored, so a submitted filter form with blank fields works.
//!
//! The pages draw their charts as inline SVG on the server (no JavaScript, no images to
//! fetch); each chart has a `<title>` and a `<desc>`, each bar a `<title>` (its tooltip), and
//! the numbers are printed as text too:
//!
//! - **Calls per hour** (top of `/`): stacked bars, answered below and not answered above, for
//!   the 24 hours up to and including the hour of the latest start among the calls matching
//!   the current filter (anchored on the calls, not on the clock, so a store of replayed or
//!   old calls, or a filter like `to=2018-01-05`, shows its latest day). The same numbers are
//!   in a table under "The numbers".
//! - **Deliveries per sink** (top of `/`): pending, delivered and dead counts of every sink
//!   over the whole store (not only the filtered calls), the age of the oldest pending
//!   delivery, and a stacked bar of the three.
//! - **Timeline** (`/calls/<id>`): one row per leg for calls with `legs` (Asterisk, CMS:
//!   ringing from its creation to its answer, connected from the answer to its end, open when
//!   no end was seen) with transfers as vertical lines; one row per record for SMDR calls
//!   (each segment's ring, connected and hold plus park seconds, the segments one after the
//!   other from the call's start, as the call's end time is computed); one row for the call
//!   otherwise. At most 60 rows are drawn; the tables below list every leg and record.
//!
//! Who may see what is [`auth`]'s: with credentials configured (`CDR_RELAY_READ_TOKENS`,
//! `CDR_RELAY_ADMIN_TOKENS`, `CDR_RELAY_USERS`) every route above but `/healthz`, `/readyz` and
//! the receiver's `POST` needs read access, and `/api/v1/admin/...` or a method other than `GET`
//! needs admin. The server's own limits (a header deadline from the accept, connection slots
//! per client address, idle connections shed first) are [`server`]'s.
//!
//! The server only reads the database: each request opens its own read-only connection (the
//! file is in WAL mode, so reading never blocks the relay's writer). A database that does not
//! exist yet reads as one with no calls.
//!
//! The modules, by what they own: [`server`] (accept loop, TLS, connection limits and
//! timeouts), `routes` (which handler answers a path), `query` (the query strings), `respond`
//! (headers, text, HTML and JSON responses), `api` (the JSON endpoints and `/metrics`), `pages`
//! (the HTML pages, through the askama templates in `templates/`), `admin` (the sinks page and
//! the admin actions), `charts` and `timeline` (the SVG figures), `window` (a page of a call's
//! lists), `auth` (access control), `limits` (connection slots), `format` (HTML escaping, times
//! and durations) and [`health`] (readiness, shared with the Sentry check-ins). They import one
//! way: server -> routes -> admin, api, pages,
//! health -> query, respond, charts -> format. The store is read through
//! [`cdr_sinks::store`].

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use cdr_sinks::outbox::OutboxError;
use cdr_sinks::store::StoreReader;
use http_body_util::Full;
use hyper::Response;

use crate::ops::metrics::Metrics;

mod admin;
mod api;
pub mod auth;
mod charts;
mod format;
pub mod health;
mod limits;
mod pages;
mod query;
mod respond;
mod routes;
pub mod server;
mod timeline;
mod window;

pub use server::{WebOptions, WebTls, serve, serve_with};

/// Calls per page of the HTML list, and the default `per_page` of the API.
pub const PAGE_SIZE: u64 = 50;

/// The largest `per_page` the API accepts (larger values are lowered to it).
pub const MAX_PER_PAGE: u64 = 200;

/// The largest `limit` of `/api/v1/dead-letters`.
pub const MAX_DEAD_LETTERS: u64 = 1000;

/// What the server serves.
#[derive(Debug, Clone)]
pub struct WebState {
    /// The outbox database (the call store); it may not exist yet.
    pub db: PathBuf,
    /// The process's metrics (also the source's connected flag `/readyz` reads).
    pub metrics: Arc<Metrics>,
    /// The title of the HTML pages (for example the site's name).
    pub title: String,
    /// The CMS CDR receiver (`cdr-receiver`): `POST` to its path goes there.
    pub receiver: Option<Arc<crate::sources::receiver::CdrReceiver>>,
    /// Serve HTTPS with this (certificate files given); plain HTTP when `None`.
    pub tls: Option<WebTls>,
    /// Who may read and administer (see [`auth`]); the default lets everyone.
    pub access: auth::Access,
    /// Serve only the CMS receiver's path, `/healthz` and `/readyz` (the receiver's own
    /// listener, `CDR_RECEIVER_LISTEN`); everything else is 404.
    pub receiver_only: bool,
}

/// What every request handler reads: the state and the options.
#[derive(Debug)]
struct Shared {
    state: WebState,
    options: WebOptions,
}

type Resp = Response<Full<Bytes>>;

/// Runs `f` on a fresh [`StoreReader`] of the outbox on the blocking pool; errors as text.
async fn with_store<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&StoreReader) -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, String> {
    let path = shared.state.db.clone();
    tokio::task::spawn_blocking(move || StoreReader::open(&path).and_then(|store| f(&store)))
        .await
        .map_err(|e| format!("database task failed: {e}"))?
        .map_err(|e| match e {
            // As SQLite says it, without the outbox's prefix.
            OutboxError::Sqlite(e) => e.to_string(),
            e => e.to_string(),
        })
}
