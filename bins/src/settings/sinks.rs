//! The sinks' settings ([`SinkArgs`]): which sinks (`--sink`, or the store plus each sink
//! whose address is set), the webhook with its retry policy, the Redis list and the HTTP-CDR
//! receivers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::http_cdr_sink::HttpCdrConfig;
use cdr_sinks::nats::{NatsConfig, SubjectTemplate};
use cdr_sinks::redis_list::{PushSide, RedisListConfig};
use cdr_sinks::sql::{SqlConfig, SqlTls};
use cdr_sinks::webhook::WebhookConfig;
use serde::{Deserialize, Serialize};

use super::overlay::text;
use super::values::{ChoiceParser, List, RedisPush, SqlTlsMode, parse_bool};
use super::{ConfigError, DEFAULT_REDIS_SINK_LIST};
use crate::settings::SinkSpec;

/// The most webhook requests in flight at once (`WEBHOOK_CONCURRENCY`).
const MAX_WEBHOOK_CONCURRENCY: usize = 256;

/// The sinks' flags and variables.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(default)]
pub struct SinkArgs {
    /// Sinks to deliver to, repeatable: `store`, `webhook`, `redis`, `http-cdr`, `sql`, `nats`,
    /// `jsonl:PATH` (`jsonl:-` = stdout). Default: the store, plus each sink whose address is
    /// set (WEBHOOK_URL, REDIS_URL, HTTP_CDR_URLS, SQL_URL,
    /// NATS_URL).
    #[arg(long = "sink", value_name = "KIND[:ARG]")]
    #[serde(with = "super::values::sink_list")]
    pub sinks: Vec<SinkSpec>,

    /// Webhook URL: each completed call is POSTed there as JSON.
    #[arg(long, env = "WEBHOOK_URL", value_name = "URL", hide_env_values = true)]
    pub webhook_url: Option<String>,

    /// Value of the Authorization header sent to the webhook, as-is.
    #[arg(long, env = "WEBHOOK_KEY", hide_env_values = true)]
    pub webhook_key: Option<String>,

    /// Standard Webhooks secret (whsec_...): sign every request.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Attempts before a webhook delivery is dead-lettered [default: 25].
    #[arg(long, env = "WEBHOOK_MAX_RETRIES")]
    pub webhook_max_retries: Option<u32>,

    /// First retry delay in seconds, doubling up to WEBHOOK_RETRY_MAX_DELAY, with full jitter
    /// [default: 30].
    #[arg(long, env = "WEBHOOK_RETRY_DELAY", value_name = "SECONDS")]
    pub webhook_retry_delay: Option<u64>,

    /// The longest wait between two tries of a delivery, in seconds, for every sink: the
    /// backoff's cap and the most a receiver's `Retry-After` can ask for [default: 3600].
    #[arg(long, env = "WEBHOOK_RETRY_MAX_DELAY", value_name = "SECONDS")]
    pub webhook_retry_max_delay: Option<u64>,

    /// Extra trusted CA certificates (PEM) for the webhook's TLS.
    #[arg(long, env = "WEBHOOK_CA_FILE", value_name = "FILE")]
    pub webhook_ca_file: Option<PathBuf>,

    /// Webhook requests in flight at once, each on its own kept-alive connection (1: one after
    /// another, in the order the calls were committed) [default: 16, at most 256].
    #[arg(long, env = "WEBHOOK_CONCURRENCY", value_name = "N")]
    pub webhook_concurrency: Option<usize>,

    /// Redis sink: the server (`redis://[user:password@]host:port/db`, `rediss://` for TLS).
    #[arg(long, env = "REDIS_URL", value_name = "URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis sink: the list each call's JSON is pushed to [default: cdr-relay:calls].
    #[arg(long, env = "REDIS_LIST_KEY", value_name = "KEY")]
    pub redis_list_key: Option<String>,

    /// Redis sink: `lpush` (a consumer drains with BRPOP, oldest first) or `rpush`
    /// [default: lpush].
    #[arg(long, env = "REDIS_PUSH", value_name = "lpush|rpush", value_parser = ChoiceParser::<RedisPush>::new())]
    pub redis_push: Option<RedisPush>,

    /// Redis sink: extra trusted CA certificates (PEM) for `rediss://`.
    #[arg(long, env = "REDIS_CA_FILE", value_name = "FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// HTTP-CDR sink: receiver URLs (up to 4, comma separated) that get each call's records as
    /// Cisco Meeting Server CDR posts (another relay's cdr-receiver, or a CMS CDR receiver).
    #[arg(
        long,
        env = "HTTP_CDR_URLS",
        value_name = "URLS",
        hide_env_values = true
    )]
    pub http_cdr_urls: Option<List>,

    /// HTTP-CDR sink: the `Authorization` header sent, as-is (`Bearer ...`, `Basic ...`).
    #[arg(long, env = "HTTP_CDR_AUTHORIZATION", hide_env_values = true)]
    pub http_cdr_authorization: Option<String>,

    /// HTTP-CDR sink: extra trusted CA certificates (PEM).
    #[arg(long, env = "HTTP_CDR_CA_FILE", value_name = "FILE")]
    pub http_cdr_ca_file: Option<PathBuf>,

    /// HTTP-CDR sink: the PBX's offset from UTC (`+02:00`) for SMDR and Asterisk call times
    /// [default: +00:00].
    #[arg(long, env = "HTTP_CDR_UTC_OFFSET", value_name = "+HH:MM")]
    pub http_cdr_utc_offset: Option<String>,

    /// SQL sink: the database each call is written to as rows of `calls` and `call_legs`
    /// (`postgres://user:password@host:5432/db` or `mysql://user:password@host:3306/db`).
    #[arg(long, env = "SQL_URL", value_name = "URL", hide_env_values = true)]
    pub sql_url: Option<String>,

    /// SQL sink: TLS to the database: `disable`, `prefer`, `require` or `verify` (certificate
    /// and host name checked against the web's roots or SQL_CA_FILE) [default: prefer, or what
    /// the URL's sslmode / ssl-mode says].
    #[arg(
        long,
        env = "SQL_TLS",
        value_name = "disable|prefer|require|verify",
        value_parser = ChoiceParser::<SqlTlsMode>::new()
    )]
    pub sql_tls: Option<SqlTlsMode>,

    /// SQL sink: extra trusted CA certificates (PEM) for SQL_TLS.
    #[arg(long, env = "SQL_CA_FILE", value_name = "FILE")]
    pub sql_ca_file: Option<PathBuf>,

    /// SQL sink: put before the table names (`cdr_` gives `cdr_calls`, `cdr_call_legs`,
    /// `cdr_schema_migrations`): lowercase letters, digits and _ [default: none].
    #[arg(long, env = "SQL_TABLE_PREFIX", value_name = "PREFIX")]
    pub sql_table_prefix: Option<String>,

    /// SQL sink: the PBX's offset from UTC (`+02:00`) for the UTC columns of a call that does
    /// not carry its own `start_utc` (bodies stored before it existed; every call assembled
    /// now carries it, from `PBX_TZ` or Asterisk's epoch times) [default: +00:00].
    #[arg(long, env = "SQL_UTC_OFFSET", value_name = "+HH:MM")]
    pub sql_utc_offset: Option<String>,
    /// NATS: server URLs, comma separated (`nats://host:4222`, `tls://` for TLS; a token or
    /// `user:password@` may be in the URL). Turns the JetStream sink on (and is where
    /// `nats-relay` consumes from).
    #[arg(long, env = "NATS_URL", value_name = "URLS", hide_env_values = true)]
    pub nats_url: Option<List>,

    /// NATS sink: the subject template, with `{source}` and `{site}`
    /// [default: cdr.{source}.{site}].
    #[arg(long, env = "NATS_SUBJECT", value_name = "TEMPLATE")]
    pub nats_subject: Option<String>,

    /// NATS: the JetStream stream [default: CDR].
    #[arg(long, env = "NATS_STREAM", value_name = "NAME")]
    pub nats_stream: Option<String>,

    /// NATS sink: create the stream if it does not exist (`true`/`false`) [default: false].
    #[arg(long, env = "NATS_CREATE_STREAM", value_name = "BOOL", value_parser = parse_bool)]
    pub nats_create_stream: Option<bool>,

    /// NATS sink: replicas of the stream it creates (1 to 5) [default: 1].
    #[arg(long, env = "NATS_REPLICAS", value_name = "N")]
    pub nats_replicas: Option<usize>,

    /// NATS sink: the duplicate window of the stream it creates, in seconds: a second message
    /// with the same id within it is dropped [default: 120].
    #[arg(long, env = "NATS_DUPLICATE_WINDOW", value_name = "SECONDS")]
    pub nats_duplicate_window: Option<u64>,

    /// NATS: authentication token.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// NATS: user name (with NATS_PASSWORD).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,

    /// NATS: password.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// NATS: NKey seed (`SU...`).
    #[arg(long, env = "NATS_NKEY", hide_env_values = true)]
    pub nats_nkey: Option<String>,

    /// NATS: a `.creds` file (user JWT and NKey seed).
    #[arg(long, env = "NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,

    /// NATS: extra trusted CA certificates (PEM) for TLS.
    #[arg(long, env = "NATS_CA_FILE", value_name = "FILE")]
    pub nats_ca_file: Option<PathBuf>,

    /// NATS: client certificate (PEM, with NATS_KEY_FILE) for a server that asks for one.
    #[arg(long, env = "NATS_CERT_FILE", value_name = "FILE")]
    pub nats_cert_file: Option<PathBuf>,

    /// NATS: the client certificate's private key (PEM).
    #[arg(long, env = "NATS_KEY_FILE", value_name = "FILE")]
    pub nats_key_file: Option<PathBuf>,
}

/// The sinks, resolved.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// The sinks, store included.
    pub sinks: Vec<SinkSpec>,
    /// The webhook, when configured.
    pub webhook: Option<WebhookConfig>,
    /// Retry policy of the webhook.
    pub retry: RetryPolicy,
    /// The Redis list sink, when configured.
    pub redis: Option<RedisListConfig>,
    /// The HTTP-CDR sink, when configured.
    pub http_cdr: Option<HttpCdrConfig>,
    /// The SQL sink, when configured.
    pub sql: Option<SqlConfig>,
    /// NATS (the JetStream sink's settings, or where `nats-relay` consumes), when configured.
    pub nats: Option<NatsConfig>,
}

impl SinkArgs {
    /// The sinks from the layered settings; a sink named without its address is an error.
    pub fn resolve(&self) -> Result<SinkSettings, ConfigError> {
        let webhook_url = text(&self.webhook_url);
        let sinks: Vec<SinkSpec> = if !self.sinks.is_empty() {
            self.sinks.clone()
        } else {
            let mut v = vec![SinkSpec::Store];
            if webhook_url.is_some() {
                v.push(SinkSpec::Webhook);
            }
            if text(&self.redis_url).is_some() {
                v.push(SinkSpec::Redis);
            }
            if self.http_cdr_urls.is_some() {
                v.push(SinkSpec::HttpCdr);
            }
            if text(&self.sql_url).is_some() {
                v.push(SinkSpec::Sql);
            }
            if self.nats_url.as_ref().is_some_and(|l| !l.0.is_empty()) {
                v.push(SinkSpec::Nats);
            }
            v
        };
        let retry_delay = self.webhook_retry_delay.unwrap_or(30);
        let max_delay = self.webhook_retry_max_delay.unwrap_or(3600).max(1);
        let retry = RetryPolicy {
            base: Duration::from_secs(retry_delay.max(1).min(max_delay)),
            cap: Duration::from_secs(max_delay),
            max_attempts: self.webhook_max_retries.unwrap_or(25),
            ..RetryPolicy::default()
        };
        let webhook = match (&webhook_url, sinks.contains(&SinkSpec::Webhook)) {
            (Some(url), _) => Some(WebhookConfig {
                url: url.clone(),
                authorization: text(&self.webhook_key),
                secret: text(&self.webhook_secret),
                ca_file: self.webhook_ca_file.clone(),
                concurrency: self
                    .webhook_concurrency
                    .unwrap_or(cdr_sinks::webhook::DEFAULT_CONCURRENCY)
                    .clamp(1, MAX_WEBHOOK_CONCURRENCY),
                ..WebhookConfig::default()
            }),
            (None, true) => {
                return Err(ConfigError(
                    "--sink webhook needs a URL: set WEBHOOK_URL (SMDR_WEBHOOK_URL for smdr-relay) or --webhook-url".into(),
                ));
            }
            (None, false) => None,
        };
        if let Some(w) = &webhook {
            cdr_sinks::webhook::WebhookSink::new(w).map_err(|e| ConfigError(e.to_string()))?;
        }
        let redis_url = text(&self.redis_url);
        let redis = match (redis_url, sinks.contains(&SinkSpec::Redis)) {
            (Some(url), _) => {
                let mut r = RedisListConfig::new(
                    url,
                    text(&self.redis_list_key).unwrap_or_else(|| DEFAULT_REDIS_SINK_LIST.into()),
                );
                if let Some(side) = self.redis_push {
                    r.side = match side {
                        RedisPush::Lpush => PushSide::Left,
                        RedisPush::Rpush => PushSide::Right,
                    };
                }
                r.ca_file = self.redis_ca_file.clone();
                check_redis_url("REDIS_URL", &r.url, r.ca_file.as_deref())?;
                Some(r)
            }
            (None, true) => {
                return Err(ConfigError(
                    "--sink redis needs a server: set REDIS_URL or --redis-url".into(),
                ));
            }
            (None, false) => None,
        };
        let http_cdr_urls: Vec<String> = self.http_cdr_urls.clone().unwrap_or_default().0;
        let http_cdr = match (http_cdr_urls.is_empty(), sinks.contains(&SinkSpec::HttpCdr)) {
            (false, _) => {
                let mut h = HttpCdrConfig {
                    urls: http_cdr_urls,
                    authorization: text(&self.http_cdr_authorization),
                    ca_file: self.http_cdr_ca_file.clone(),
                    // Replaced by the outbox's own session when the relay starts.
                    session: "00000000-0000-4000-8000-000000000000".into(),
                    ..HttpCdrConfig::default()
                };
                if let Some(off) = text(&self.http_cdr_utc_offset) {
                    let parsed: chrono::FixedOffset = off.trim().parse().map_err(|_| {
                        ConfigError(format!(
                            "HTTP_CDR_UTC_OFFSET {off:?}: expected +HH:MM or -HH:MM"
                        ))
                    })?;
                    h.utc_offset_secs = parsed.local_minus_utc();
                }
                cdr_sinks::http_cdr_sink::HttpCdrSink::new(&h)
                    .map_err(|e| ConfigError(format!("HTTP_CDR_URLS: {e}")))?;
                Some(h)
            }
            (true, true) => {
                return Err(ConfigError(
                    "--sink http-cdr needs receivers: set HTTP_CDR_URLS".into(),
                ));
            }
            (true, false) => None,
        };
        let sql = self.resolve_sql(sinks.contains(&SinkSpec::Sql))?;
        let nats = self.nats()?;
        if nats.is_none() && sinks.contains(&SinkSpec::Nats) {
            return Err(ConfigError(
                "--sink nats needs servers: set NATS_URL or --nats-url".into(),
            ));
        }
        Ok(SinkSettings {
            sinks,
            webhook,
            retry,
            redis,
            http_cdr,
            sql,
            nats,
        })
    }

    /// The SQL sink's settings: checked now (URL, prefix, CA file), so that a bad one stops
    /// the start.
    fn resolve_sql(&self, chosen: bool) -> Result<Option<SqlConfig>, ConfigError> {
        let Some(url) = text(&self.sql_url) else {
            if chosen {
                return Err(ConfigError(
                    "--sink sql needs a database: set SQL_URL (postgres://.. or mysql://..)".into(),
                ));
            }
            return Ok(None);
        };
        let mut c = SqlConfig::new(url);
        c.tls = self.sql_tls.map(|t| match t {
            SqlTlsMode::Disable => SqlTls::Disable,
            SqlTlsMode::Prefer => SqlTls::Prefer,
            SqlTlsMode::Require => SqlTls::Require,
            SqlTlsMode::Verify => SqlTls::Verify,
        });
        c.ca_file = self.sql_ca_file.clone();
        c.table_prefix = text(&self.sql_table_prefix).unwrap_or_default();
        if let Some(off) = text(&self.sql_utc_offset) {
            c.utc_offset = off.trim().parse().map_err(|_| {
                ConfigError(format!("SQL_UTC_OFFSET {off:?}: expected +HH:MM or -HH:MM"))
            })?;
        }
        cdr_sinks::sql::SqlSink::new(&c).map_err(|e| ConfigError(format!("SQL_URL: {e}")))?;
        Ok(Some(c))
    }

    /// The NATS settings, when NATS_URL is set; checked now (URLs, files, stream).
    pub fn nats(&self) -> Result<Option<NatsConfig>, ConfigError> {
        let urls = self.nats_url.clone().unwrap_or_default().0;
        if urls.is_empty() {
            return Ok(None);
        }
        let mut n = NatsConfig::new(urls);
        if let Some(t) = text(&self.nats_subject) {
            n.subject = SubjectTemplate::parse(&t).map_err(|e| ConfigError(e.to_string()))?;
        }
        if let Some(s) = text(&self.nats_stream) {
            n.stream = s;
        }
        n.create_stream = self.nats_create_stream.unwrap_or(false);
        n.replicas = self.nats_replicas.unwrap_or(1);
        if let Some(w) = self.nats_duplicate_window {
            n.duplicate_window = Duration::from_secs(w.max(1));
        }
        n.server.auth.token = text(&self.nats_token);
        n.server.auth.user = text(&self.nats_user);
        n.server.auth.password = text(&self.nats_password);
        n.server.auth.nkey_seed = text(&self.nats_nkey);
        n.server.auth.creds_file = self.nats_creds.clone();
        n.server.ca_file = self.nats_ca_file.clone();
        n.server.client_cert = match (&self.nats_cert_file, &self.nats_key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "NATS_CERT_FILE and NATS_KEY_FILE go together".into(),
                ));
            }
        };
        n.check()
            .map_err(|e| ConfigError(format!("NATS_URL: {e}")))?;
        Ok(Some(n))
    }
}

/// Checks a Redis URL (and its CA file) now, so that a bad one stops the start.
pub(super) fn check_redis_url(
    name: &str,
    url: &str,
    ca_file: Option<&Path>,
) -> Result<(), ConfigError> {
    cdr_sinks::redis_list::RedisEndpoint::parse(url, ca_file)
        .map(|_| ())
        .map_err(|e| ConfigError(format!("{name}: {e}")))
}
