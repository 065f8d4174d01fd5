//! Building the configured sinks and their delivery workers.

use std::sync::Arc;

use anyhow::Context as _;
use cdr_sinks::BoxSink;
use cdr_sinks::engine::{SinkStats, SinkWorker, now_ms};
use cdr_sinks::http_cdr_sink::HttpCdrSink;
use cdr_sinks::jsonl::JsonlSink;
use cdr_sinks::nats::NatsSink;
use cdr_sinks::outbox::{Batch, Outbox};
use cdr_sinks::redis_list::RedisListSink;
use cdr_sinks::sql::SqlSink;
use cdr_sinks::webhook::WebhookSink;
use tokio::sync::Notify;

use crate::settings::{Config, SinkSpec};

pub(super) struct RemoteWorker {
    pub(super) worker: SinkWorker<BoxSink>,
    pub(super) wake: Arc<Notify>,
}

/// The names the outbox knows the configured remote sinks by.
pub(super) fn remote_sink_names(config: &Config) -> Vec<String> {
    config
        .sinks
        .iter()
        .filter(|s| **s != SinkSpec::Store)
        .map(SinkSpec::to_string)
        .collect()
}

/// The HTTP-CDR session of this outbox: made once (a random GUID) and kept in it, so record
/// indexes, numbered from the outbox's rows, are never reused under the same session.
const HTTP_CDR_SESSION: &str = "http-cdr/session";

pub(super) fn http_cdr_session(o: &mut Outbox) -> anyhow::Result<String> {
    if let Some(s) = o.state(HTTP_CDR_SESSION)? {
        return Ok(String::from_utf8_lossy(&s).into_owned());
    }
    let session = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string();
    o.commit(
        &Batch {
            states: vec![(HTTP_CDR_SESSION.to_owned(), session.clone().into_bytes())],
            ..Batch::default()
        },
        now_ms(),
    )?;
    Ok(session)
}

pub(super) fn remote_sinks(
    config: &Config,
    http_cdr_session: Option<String>,
) -> anyhow::Result<Vec<RemoteWorker>> {
    let mut out = Vec::new();
    for spec in &config.sinks {
        let sink = match spec {
            SinkSpec::Store => continue,
            SinkSpec::Webhook => {
                let w = config
                    .webhook
                    .as_ref()
                    .context("the webhook sink needs WEBHOOK_URL (or SMDR_WEBHOOK_URL)")?;
                BoxSink::new(WebhookSink::new(w)?)
            }
            SinkSpec::HttpCdr => {
                let mut h = config
                    .http_cdr
                    .clone()
                    .context("the http-cdr sink needs HTTP_CDR_URLS")?;
                if let Some(s) = &http_cdr_session {
                    h.session.clone_from(s);
                }
                BoxSink::new(HttpCdrSink::new(&h)?)
            }
            SinkSpec::Redis => {
                let r = config
                    .redis
                    .as_ref()
                    .context("the redis sink needs REDIS_URL")?;
                BoxSink::new(RedisListSink::new(r)?)
            }
            SinkSpec::Sql => {
                let s = config.sql.as_ref().context("the sql sink needs SQL_URL")?;
                BoxSink::new(SqlSink::new(s)?)
            }
            SinkSpec::Nats => {
                let n = config
                    .nats
                    .as_ref()
                    .context("the nats sink needs NATS_URL")?;
                BoxSink::new(NatsSink::new(n)?)
            }
            SinkSpec::Jsonl(path) => {
                let out: Box<dyn std::io::Write + Send> = match path {
                    None => Box::new(std::io::stdout()),
                    Some(p) => Box::new(std::io::BufWriter::new(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(p)
                            .with_context(|| format!("opening {}", p.display()))?,
                    )),
                };
                BoxSink::new(JsonlSink::new(out))
            }
        };
        out.push(RemoteWorker {
            worker: SinkWorker {
                name: spec.to_string(),
                sink,
                policy: config.retry,
                stats: Arc::new(SinkStats::default()),
            },
            wake: Arc::new(Notify::new()),
        });
    }
    Ok(out)
}
