//! The Cisco Meeting Server CDR receiver: `POST /cdr` on the built-in web server.
//!
//! A body is answered only after what it holds is committed: `200` for a batch (new records
//! assembled and kept, duplicates dropped), `400` with the parse error's position for a body
//! that is not a CDR batch (kept whole in the reject table), `413` past the size limit, `408`
//! when the body does not arrive in time, `401` without the configured credentials, `503` when
//! the relay is stopping, and `503` with `Retry-After` when the body is not committed within the
//! body timeout (the database cannot be written, a full disk). CMS resends a batch until it gets a `200`, so nothing that got one
//! is ever lost, and nothing is acknowledged before it is durable.

use std::time::Duration;

use bytes::Bytes;
use call_assembler::parse_cms_xml;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};

use call_assembler::feed::CmsInput;

use super::tcp::SourceEvent;
use crate::ops::secret::secret_eq;

/// Who may post.
#[derive(Clone, PartialEq, Eq)]
pub enum ReceiverAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic base64(user:password)`, as `user:password`.
    Basic(String),
}

impl std::fmt::Debug for ReceiverAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bearer(_) => "Bearer(<hidden>)",
            Self::Basic(_) => "Basic(<hidden>)",
        })
    }
}

/// The receiver's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// The path CMS posts to (`/cdr`).
    pub path: String,
    /// Credentials required, if any.
    pub auth: Option<ReceiverAuth>,
    /// The largest body accepted, in bytes.
    pub max_body: usize,
    /// How long a body may take to arrive, and how long its commit is waited for.
    pub body_timeout: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            path: "/cdr".into(),
            auth: None,
            max_body: 8 << 20,
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// The `Retry-After` (seconds) of a post not committed within its wait.
const COMMIT_RETRY_AFTER: &str = "10";

/// The handler: checks, parses, hands the batch to the run loop and answers after the commit.
#[derive(Debug)]
pub struct CdrReceiver {
    config: ReceiverConfig,
    tx: mpsc::Sender<SourceEvent<CmsInput>>,
}

type Resp = Response<Full<Bytes>>;

fn answer(status: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl CdrReceiver {
    /// A receiver handing its batches to `tx`.
    pub fn new(config: ReceiverConfig, tx: mpsc::Sender<SourceEvent<CmsInput>>) -> Self {
        Self { config, tx }
    }

    /// The path it serves.
    pub fn path(&self) -> &str {
        &self.config.path
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        use base64::Engine as _;
        let Some(auth) = &self.config.auth else {
            return true;
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (scheme, value) = given.split_once(' ').unwrap_or((given, ""));
        match auth {
            ReceiverAuth::Bearer(token) => {
                scheme.eq_ignore_ascii_case("bearer")
                    && secret_eq(value.trim().as_bytes(), token.as_bytes())
            }
            ReceiverAuth::Basic(pair) => {
                scheme.eq_ignore_ascii_case("basic")
                    && base64::engine::general_purpose::STANDARD
                        .decode(value.trim())
                        .is_ok_and(|d| secret_eq(&d, pair.as_bytes()))
            }
        }
    }

    /// Answers one `POST` to [`CdrReceiver::path`].
    pub async fn handle(&self, req: Request<Incoming>) -> Resp {
        if !self.authorized(&req) {
            let mut r = answer(StatusCode::UNAUTHORIZED, "credentials required\n");
            let challenge = match self.config.auth {
                Some(ReceiverAuth::Basic(_)) => "Basic realm=\"cdr-receiver\"",
                _ => "Bearer",
            };
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            return r;
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.config.max_body) {
            return answer(StatusCode::PAYLOAD_TOO_LARGE, "body over the size limit\n");
        }
        let body = Limited::new(req.into_body(), self.config.max_body);
        let raw = match tokio::time::timeout(self.config.body_timeout, body.collect()).await {
            Err(_) => return answer(StatusCode::REQUEST_TIMEOUT, "body too slow\n"),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return answer(StatusCode::PAYLOAD_TOO_LARGE, "body over the size limit\n");
            }
            Ok(Err(e)) => return answer(StatusCode::BAD_REQUEST, &format!("reading: {e}\n")),
            Ok(Ok(c)) => c.to_bytes().to_vec(),
        };
        let (input, status, text) = match parse_cms_xml(&raw) {
            Ok(batch) => {
                let batch = batch.into_owned();
                (
                    CmsInput::Batch { raw, batch },
                    StatusCode::OK,
                    String::new(),
                )
            }
            Err(e) => {
                let reason = format!("not a CDR batch: {e}");
                let text = format!("{reason}\n");
                (
                    CmsInput::Reject { raw, reason },
                    StatusCode::BAD_REQUEST,
                    text,
                )
            }
        };
        let (ack, committed) = oneshot::channel();
        // Bounded: while commits fail (a full disk) the run loop holds its source, and CMS is
        // told to come back rather than kept waiting.
        let handed = tokio::time::timeout(self.config.body_timeout, async {
            if self.tx.send(SourceEvent::Acked(input, ack)).await.is_err() {
                return Err("stopping\n");
            }
            committed.await.map_err(|_| "not committed\n")
        })
        .await;
        match handed {
            Ok(Ok(())) => answer(status, &text),
            Ok(Err(why)) => answer(StatusCode::SERVICE_UNAVAILABLE, why),
            Err(_) => {
                let mut r = answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not committed in time (the relay cannot write to its database); retry later\n",
                );
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(COMMIT_RETRY_AFTER),
                );
                r
            }
        }
    }
}
