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
        let id = format!("{:032x}", rand::random::<u128>());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let header = serde_json::json!({ "event_id": id, "dsn": self.dsn.dsn });
        let body = serde_json::json!({
            "event_id": id,
            "timestamp": now,
            "level": "error",
            "platform": "other",
            "logger": event.metadata().target(),
            "release": concat!("cdr-relay@", env!("CARGO_PKG_VERSION")),
            "message": { "formatted": fields.message },
            "extra": fields.extra,
        });
        let mut out = Vec::new();
        out.extend_from_slice(header.to_string().as_bytes());
        out.extend_from_slice(b"\n{\"type\":\"event\"}\n");
        out.extend_from_slice(body.to_string().as_bytes());
        out.push(b'\n');
        out
    }
}

impl<S: Subscriber> Layer<S> for SentryLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() == Level::ERROR {
            // A full queue drops the event rather than slow the relay down.
            let _ = self.tx.try_send(self.envelope(event));
        }
    }
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
    let auth = format!(
        "Sentry sentry_version=7, sentry_key={}, sentry_client=cdr-relay/{}",
        dsn.key,
        env!("CARGO_PKG_VERSION")
    );
    while let Ok(envelope) = rx.recv() {
        let Ok(req) = Request::builder()
            .method(Method::POST)
            .uri(dsn.envelope_url.as_str())
            .header("content-type", "application/x-sentry-envelope")
            .header("x-sentry-auth", auth.as_str())
            .body(Full::new(Bytes::from(envelope)))
        else {
            continue;
        };
        // Errors here cannot be logged at ERROR (that would loop); they are dropped.
        let _ = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), client.request(req)).await
        });
    }
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
