//! The webhook sink: one JSON document per call, POSTed over HTTP/1.1 or HTTP/2, with TLS.
//!
//! Each request carries the configured `Authorization` value as-is, a stable `webhook-id` and
//! `Idempotency-Key` (the call's id, the same on every retry), and, when a `whsec_...` secret is
//! configured, the [Standard Webhooks](https://www.standardwebhooks.com/) headers
//! `webhook-timestamp` and `webhook-signature` (`v1,` + base64 HMAC-SHA256 over
//! `id.timestamp.body`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::SinkError;
use crate::sink::{BatchResult, Drive, Outgoing, Sink};

/// The `webhook-id` header (Standard Webhooks).
static WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");

/// The `Idempotency-Key` header (HTTP header names are lower case on the wire in HTTP/2, and
/// case-insensitive in HTTP/1.1).
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Requests in flight at once by default ([`WebhookConfig::concurrency`]).
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Settings of a [`WebhookSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// The `Authorization` header value, sent as-is (the SMDR logger's `SMDR_WEBHOOK_KEY`).
    pub authorization: Option<String>,
    /// A Standard Webhooks secret (`whsec_` + base64 key) to sign requests with.
    pub secret: Option<String>,
    /// Time allowed to open the connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time allowed for the whole request, response included.
    pub timeout: Duration,
    /// Extra trusted root certificates (PEM), for receivers with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Requests in flight at once, each on its own kept-alive connection (HTTP/1.1; streams of
    /// one connection with HTTP/2). With 1, calls go out one after another in the outbox's order;
    /// with more, a receiver may see them in another order.
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            authorization: None,
            secret: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            ca_file: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// POSTs calls to one URL. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct WebhookSink {
    client: HttpClient,
    uri: Uri,
    authorization: Option<HeaderValue>,
    key: Option<Arc<[u8]>>,
    timeout: Duration,
    concurrency: usize,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("uri", &self.uri)
            .field("signed", &self.key.is_some())
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Decodes a Standard Webhooks secret: `whsec_` followed by the base64 key.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SinkError> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(b64)
        .map_err(|e| SinkError::Config(format!("webhook secret is not whsec_<base64>: {e}")))
}

/// The Standard Webhooks signature header value for a message: `v1,<base64 HMAC-SHA256>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The HTTP client of the sinks: hyper over rustls (ring), HTTP/1.1 keep-alive and HTTP/2
/// (ALPN), the Mozilla roots plus the PEM certificates in `ca_file`.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds an [`HttpClient`] with a connect timeout and up to `pool` idle connections per host.
pub fn build_client(
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
    pool: usize,
) -> Result<HttpClient, SinkError> {
    let roots = root_store(ca_file)?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SinkError::Config(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(pool.max(1))
        .build(https))
}

/// The trusted roots of the sinks' TLS clients: the Mozilla roots plus the PEM certificates in
/// `ca_file`.
pub(crate) fn root_store(
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::RootCertStore, SinkError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots());
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| SinkError::Config(format!("CA file {}: {e}", path.display())))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| SinkError::Config(format!("CA file {}: {e}", path.display())))?;
        }
    }
    Ok(roots)
}

impl WebhookSink {
    /// A sink for `config` (checks the URL, the secret and the CA file now).
    pub fn new(config: &WebhookConfig) -> Result<Self, SinkError> {
        let uri: Uri = config.url.parse().map_err(|e| {
            SinkError::Config(format!(
                "webhook URL {:?}: {e}",
                crate::redact::redact_url(&config.url)
            ))
        })?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(SinkError::Config(format!(
                    "webhook URL {:?} must start with http:// or https://",
                    crate::redact::redact_url(&config.url)
                )));
            }
        }
        let client = build_client(
            config.ca_file.as_deref(),
            config.connect_timeout,
            config.concurrency,
        )?;
        let authorization = config
            .authorization
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| SinkError::Config("webhook key is not a valid header value".into()))?;
        let key = config
            .secret
            .as_deref()
            .map(decode_secret)
            .transpose()?
            .map(Arc::from);
        Ok(Self {
            client,
            uri,
            authorization,
            key,
            timeout: config.timeout,
            concurrency: config.concurrency,
        })
    }

    /// POSTs one call's JSON. `id` is the call's stable id; `now_unix` the current Unix time in
    /// seconds, for the signature's timestamp.
    pub async fn send(&self, id: &str, body: &[u8], now_unix: i64) -> Result<(), SinkError> {
        // The constant names and values are checked at compile time, not parsed per request.
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("cdr-relay/", env!("CARGO_PKG_VERSION"))),
            )
            .header(WEBHOOK_ID.clone(), id)
            .header(IDEMPOTENCY_KEY.clone(), id);
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(key) = &self.key {
            req = req
                .header("webhook-timestamp", now_unix.to_string())
                .header("webhook-signature", sign(key, id, now_unix, body));
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| SinkError::Config(format!("building request: {e}")))?;
        let exchange = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now_unix));
            // Read the (bounded) body so the connection can be reused.
            let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, body))
        };
        let (status, retry_after, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => return Err(SinkError::Unreachable("request timed out".into())),
            Ok(Err(e)) => return Err(classify_transport(&e)),
            Ok(Ok(r)) => r,
        };
        classify_status(status, retry_after, &body)
    }
}

/// POSTs each item's stored JSON on its own, [`WebhookConfig::concurrency`] requests at once,
/// signed with the current time.
impl Sink for WebhookSink {
    type Error = SinkError;

    fn drive(&self) -> Drive {
        Drive::Each {
            concurrency: self.concurrency,
        }
    }

    async fn deliver(&self, batch: &[Outgoing]) -> BatchResult<SinkError> {
        let mut results = Vec::with_capacity(batch.len());
        for item in batch {
            results.push(self.send(item.id(), item.body(), now_unix()).await);
        }
        Ok(results)
    }
}

/// Seconds since the Unix epoch, now (for signatures and `Retry-After` dates).
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn webpki_roots() -> impl Iterator<Item = rustls_pki_types::TrustAnchor<'static>> {
    webpki_roots::TLS_SERVER_ROOTS.iter().cloned()
}

/// A transport failure: unreachable when the connection could not be made, else a counted
/// retry (the request may have reached the receiver). Shared with the HTTP-CDR sink.
pub(crate) fn classify_transport(e: &hyper_util::client::legacy::Error) -> SinkError {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_connect() {
        SinkError::Unreachable(msg)
    } else {
        // The request may have reached the receiver: a counted, retryable failure.
        SinkError::Retryable {
            reason: msg,
            retry_after: None,
        }
    }
}

/// An answer: 2xx delivered; 408, 429, 5xx retried; 401, 403, 410 pause; other 4xx (and
/// anything else) rejected. Shared with the HTTP-CDR sink.
pub(crate) fn classify_status(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<(), SinkError> {
    if status.is_success() {
        return Ok(());
    }
    let snippet: String = String::from_utf8_lossy(body).chars().take(200).collect();
    let reason = if snippet.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", snippet.trim())
    };
    match status.as_u16() {
        408 | 429 | 500..=599 => Err(SinkError::Retryable {
            reason,
            retry_after,
        }),
        401 | 403 | 410 => Err(SinkError::Paused {
            reason,
            retry_after,
        }),
        _ => Err(SinkError::Rejected(reason)),
    }
}

/// `Retry-After` as seconds or an HTTP date, relative to `now_unix`.
pub(crate) fn parse_retry_after(v: &str, now_unix: i64) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v.trim()).ok()?;
    let at = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(
        at.saturating_sub(u64::try_from(now_unix).unwrap_or_default()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's test vectors.
    #[test]
    fn signature_matches_the_reference_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn statuses_map_to_retry_pause_or_dead_letter() {
        assert!(classify_status(StatusCode::NO_CONTENT, None, b"").is_ok());
        for s in [408, 429, 500, 503] {
            let e = classify_status(StatusCode::from_u16(s).unwrap(), None, b"").unwrap_err();
            assert!(matches!(e, SinkError::Retryable { .. }), "{s}");
        }
        for s in [401, 403, 410] {
            let e = classify_status(StatusCode::from_u16(s).unwrap(), None, b"").unwrap_err();
            assert!(matches!(e, SinkError::Paused { .. }), "{s}");
        }
        for s in [400, 404, 413, 422] {
            let e = classify_status(StatusCode::from_u16(s).unwrap(), None, b"no").unwrap_err();
            assert!(matches!(e, SinkError::Rejected(_)), "{s}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("120", 0), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1_445_412_420),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
