//! Error events to Sentry: a `tracing` layer that sends every ERROR event (failures, dead
//! letters) as a Sentry envelope to the project of a DSN.

use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// A parsed DSN: `https://PUBLIC_KEY@HOST[:PORT]/[PATH/]PROJECT_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    dsn: String,
    key: String,
    envelope_url: String,
}

impl Dsn {
    /// Parses a DSN.
    pub fn parse(dsn: &str) -> anyhow::Result<Self> {
        let (scheme, rest) = dsn
            .split_once("://")
            .ok_or_else(|| anyhow::anyhow!("Sentry DSN must look like https://KEY@HOST/PROJECT"))?;
        let (key, rest) = rest
            .split_once('@')
            .ok_or_else(|| anyhow::anyhow!("Sentry DSN has no public key (KEY@HOST)"))?;
        let key = key.split(':').next().unwrap_or(key);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path = path.trim_end_matches('/');
        let (prefix, project) = match path.rsplit_once('/') {
            Some((p, id)) => (format!("/{p}"), id),
            None => (String::new(), path),
        };
        if project.is_empty() || key.is_empty() || host.is_empty() {
            anyhow::bail!("Sentry DSN must look like https://KEY@HOST/PROJECT");
        }
        Ok(Self {
            dsn: dsn.to_owned(),
            key: key.to_owned(),
            envelope_url: format!("{scheme}://{host}{prefix}/api/{project}/envelope/"),
        })
    }

    /// Where envelopes go.
    pub fn envelope_url(&self) -> &str {
        &self.envelope_url
    }
}

/// The layer: queues ERROR events for a background sender (never blocks the caller).
pub struct SentryLayer {
    tx: mpsc::SyncSender<Vec<u8>>,
    dsn: Dsn,
}

impl std::fmt::Debug for SentryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentryLayer")
            .field("envelope_url", &self.dsn.envelope_url)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        let s = cdr_sinks::redact::redact_urls_in(&s);
        if field.name() == "message" {
            self.message = s;
        } else {
            self.extra.insert(field.name().to_owned(), s.into());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let value = cdr_sinks::redact::redact_urls_in(value);
        if field.name() == "message" {
            self.message = value;
        } else {
            self.extra.insert(field.name().to_owned(), value.into());
        }
    }
}

impl SentryLayer {
    /// A layer for `dsn`; starts the sender thread.
    pub fn new(dsn: &str) -> anyhow::Result<Self> {
        let dsn = Dsn::parse(dsn)?;
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(256);
        let target = dsn.clone();
        std::thread::Builder::new()
            .name("sentry".into())
            .spawn(move || send_loop(&target, &rx))?;
        Ok(Self { tx, dsn })
    }

    fn envelope(&self, event: &Event<'_>) -> Vec<u8> {
        let mut fields = Fields::default();
        event.record(&mut fields);
        envelope(
            &self.dsn,
            event.metadata().target(),
            &fields.message,
            fields.extra,
        )
    }
}

/// One error event as a Sentry envelope for `dsn`.
fn envelope(
    dsn: &Dsn,
    logger: &str,
    message: &str,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Vec<u8> {
    let id = format!("{:032x}", rand::random::<u128>());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let header = serde_json::json!({ "event_id": id, "dsn": dsn.dsn });
    let body = serde_json::json!({
        "event_id": id,
        "timestamp": now,
        "level": "error",
        "platform": "other",
        "logger": logger,
        "release": concat!("cdr-relay@", env!("CARGO_PKG_VERSION")),
        "message": { "formatted": message },
        "extra": extra,
    });
    let mut out = Vec::new();
    out.extend_from_slice(header.to_string().as_bytes());
    out.extend_from_slice(b"\n{\"type\":\"event\"}\n");
    out.extend_from_slice(body.to_string().as_bytes());
    out.push(b'\n');
    out
}

impl<S: Subscriber> Layer<S> for SentryLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() == Level::ERROR {
            // A full queue drops the event rather than slow the relay down.
            let _ = self.tx.try_send(self.envelope(event));
        }
    }
}

fn auth_header(dsn: &Dsn) -> String {
    format!(
        "Sentry sentry_version=7, sentry_key={}, sentry_client=cdr-relay/{}",
        dsn.key,
        env!("CARGO_PKG_VERSION")
    )
}

/// Posts one envelope; the HTTP status, or why it could not be sent.
async fn post(
    client: &cdr_sinks::webhook::HttpClient,
    dsn: &Dsn,
    auth: &str,
    envelope: Vec<u8>,
    timeout: Duration,
) -> Result<u16, String> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(dsn.envelope_url.as_str())
        .header("content-type", "application/x-sentry-envelope")
        .header("x-sentry-auth", auth)
        .body(Full::new(Bytes::from(envelope)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

fn send_loop(dsn: &Dsn, rx: &mpsc::Receiver<Vec<u8>>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let Ok(client) = cdr_sinks::webhook::build_client(None, Duration::from_secs(10), 1) else {
        return;
    };
    let auth = auth_header(dsn);
    while let Ok(envelope) = rx.recv() {
        // Errors here cannot be logged at ERROR (that would loop); they are dropped.
        let _ = rt.block_on(post(&client, dsn, &auth, envelope, Duration::from_secs(10)));
    }
}

/// How long a panic waits for its report to reach Sentry before the process goes on (and, on
/// the main thread, ends).
pub const PANIC_REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a panic's report (`message`: what the panic printed, with its place) to the project of
/// `dsn`, waiting at most `timeout`; answers the HTTP status, or why nothing was sent. Runs on a
/// thread of its own, so it may be called from anywhere, also inside a tokio runtime.
pub fn report_panic(dsn: &Dsn, message: &str, timeout: Duration) -> Result<u16, String> {
    let mut extra = serde_json::Map::new();
    extra.insert(
        "thread".to_owned(),
        std::thread::current().name().unwrap_or("unnamed").into(),
    );
    let envelope = envelope(dsn, "panic", message, extra);
    let (tx, rx) = mpsc::sync_channel(1);
    let dsn = dsn.clone();
    std::thread::Builder::new()
        .name("sentry-panic".into())
        .spawn(move || {
            let sent = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    let client = cdr_sinks::webhook::build_client(None, timeout, 1)
                        .map_err(|e| e.to_string())?;
                    rt.block_on(post(&client, &dsn, &auth_header(&dsn), envelope, timeout))
                });
            let _ = tx.send(sent);
        })
        .map_err(|e| e.to_string())?;
    rx.recv_timeout(timeout + Duration::from_millis(500))
        .map_err(|_| "timed out".to_owned())?
}

/// Reports every panic to the project of `dsn` ([`report_panic`], at most
/// [`PANIC_REPORT_TIMEOUT`]), then hands it to the hook installed before (which prints it).
pub fn install_panic_hook(dsn: &Dsn) {
    let dsn = dsn.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = report_panic(&dsn, &info.to_string(), PANIC_REPORT_TIMEOUT);
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dsns() {
        let d = Dsn::parse("https://abc123@o1.ingest.sentry.io/42").unwrap();
        assert_eq!(d.key, "abc123");
        assert_eq!(
            d.envelope_url(),
            "https://o1.ingest.sentry.io/api/42/envelope/"
        );
        let d = Dsn::parse("http://k:secret@127.0.0.1:9000/sentry/7").unwrap();
        assert_eq!(d.key, "k");
        assert_eq!(
            d.envelope_url(),
            "http://127.0.0.1:9000/sentry/api/7/envelope/"
        );
        assert!(Dsn::parse("not a dsn").is_err());
        assert!(Dsn::parse("https://host/1").is_err());
    }

    /// A one-request-at-a-time HTTP server standing in for Sentry: every body it gets.
    fn sentry_stub() -> (String, mpsc::Receiver<String>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                if tx
                    .send(String::from_utf8_lossy(&body).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        (format!("http://key@{addr}/7"), rx)
    }

    #[test]
    fn a_panic_is_reported_then_handed_on() {
        let (dsn, bodies) = sentry_stub();
        let dsn = Dsn::parse(&dsn).unwrap();
        assert_eq!(
            report_panic(&dsn, "direct report", Duration::from_secs(5)),
            Ok(200)
        );
        let body = bodies.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(body.contains("direct report"), "{body}");
        assert!(body.contains("\"type\":\"event\""), "{body}");

        // The hook itself: a panic on another thread reaches the stub, and the hook installed
        // before still runs (it prints the panic).
        install_panic_hook(&dsn);
        let joined = std::thread::Builder::new()
            .name("doomed".into())
            .spawn(|| panic!("boom from a test thread"))
            .unwrap()
            .join();
        // Back to the default hook for the other tests.
        drop(std::panic::take_hook());
        assert!(joined.is_err());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let body = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let body = bodies.recv_timeout(left).expect("the panic was reported");
            if body.contains("boom from a test thread") {
                break body;
            }
        };
        assert!(body.contains("\"logger\":\"panic\""), "{body}");
        assert!(body.contains("doomed"), "the thread is named: {body}");
        assert!(
            body.contains("sentry_events.rs"),
            "the place is given: {body}"
        );
    }

    /// Keeps the envelopes a [`SentryLayer`] would send.
    struct Capture(SentryLayer, std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let envelope = String::from_utf8_lossy(&self.0.envelope(event)).into_owned();
            if let Ok(mut v) = self.1.lock() {
                v.push(envelope);
            }
        }
    }

    #[test]
    fn events_show_no_url_secret() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let layer = SentryLayer::new("http://k@127.0.0.1:9/1").unwrap();
        let subscriber = tracing_subscriber::registry().with(Capture(layer, seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let url = "https://relay:hunter2@cdr.example/in?token=abc123";
            tracing::error!(%url, "delivery to {url} failed");
        });
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(
            !seen[0].contains("hunter2") && !seen[0].contains("abc123"),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains("relay:***@cdr.example"), "{}", seen[0]);
    }
}
