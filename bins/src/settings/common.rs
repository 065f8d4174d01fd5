//! The settings every relay shares ([`CommonArgs`]): sinks, store, web server, logging,
//! Sentry, replay; with the legacy `SMDR_*` layer of `smdr-relay`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use call_assembler::AmiAssemblerConfig;
use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::redis_list::PushSide;
use cdr_sinks::webhook::WebhookConfig;
use serde::{Deserialize, Serialize};

use super::overlay::{layer, text};
use super::values::{ChoiceParser, List, LogFormat, RedisPush};
use super::{
    Config, ConfigError, DEFAULT_DB, DEFAULT_HTTP, DEFAULT_REDIS_SINK_LIST, RelayKind, SourceConfig,
};
use crate::sinks::SinkSpec;

/// The settings every relay shares: sinks, store, web server, logging, Sentry, replay.
///
/// Environment variables: the names shown; `smdr-relay` also reads the SMDR webhook logger's
/// names (`SMDR_WEBHOOK_URL`, `SMDR_SITE`, ... : `SMDR_` before the name) when the new one is
/// not set.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(default)]
pub struct CommonArgs {
    /// A TOML file with settings (flags and environment variables override it).
    #[arg(long, value_name = "FILE", env = "CDR_RELAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Check the configuration, print what would run, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Replay a capture from this file (`-` for standard input) instead of a PBX; exit once
    /// every call has been delivered to every sink or dead-lettered.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,

    /// Sinks to deliver to, repeatable: `store`, `webhook`, `jsonl:PATH` (`jsonl:-` = stdout).
    /// Default: the store, plus the webhook when WEBHOOK_URL is set.
    #[arg(long = "sink", value_name = "KIND[:ARG]")]
    #[serde(with = "super::values::sink_list")]
    pub sinks: Vec<SinkSpec>,

    /// Site (PBX) name, part of every call and of its stable id.
    #[arg(long, env = "CDR_RELAY_SITE")]
    pub site: Option<String>,

    /// Seconds a call may go without news before it is delivered incomplete
    /// [default: 14400].
    #[arg(long, env = "CDR_RELAY_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,

    /// Webhook URL: each completed call is POSTed there as JSON.
    #[arg(long, env = "WEBHOOK_URL", value_name = "URL")]
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

    /// First retry delay in seconds, doubling up to an hour, with full jitter [default: 30].
    #[arg(long, env = "WEBHOOK_RETRY_DELAY", value_name = "SECONDS")]
    pub webhook_retry_delay: Option<u64>,

    /// Extra trusted CA certificates (PEM) for the webhook's TLS.
    #[arg(long, env = "WEBHOOK_CA_FILE", value_name = "FILE")]
    pub webhook_ca_file: Option<PathBuf>,

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
    #[arg(long, env = "HTTP_CDR_URLS", value_name = "URLS")]
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

    /// Sentry DSN: errors and dead letters are reported there.
    #[arg(long, env = "SENTRY_DSN", hide_env_values = true)]
    pub sentry_dsn: Option<String>,

    /// Sentry cron check-in URL, called every SENTRY_CRON_INTERVAL seconds.
    #[arg(long, env = "SENTRY_CRON_URL", hide_env_values = true)]
    pub sentry_cron_url: Option<String>,

    /// Seconds between Sentry cron check-ins [default: 180].
    #[arg(long, env = "SENTRY_CRON_INTERVAL", value_name = "SECONDS")]
    pub sentry_cron_interval: Option<u64>,

    /// The SQLite file holding the outbox and the call store [default: ./cdr-relay.db].
    #[arg(long, env = "CDR_RELAY_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,

    /// Address of the built-in web page, JSON API and /metrics [default: 127.0.0.1:8080];
    /// `off` to disable.
    #[arg(long, env = "CDR_RELAY_HTTP", value_name = "ADDR:PORT")]
    pub http: Option<String>,

    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "CDR_RELAY_LOG_FORMAT", value_parser = ChoiceParser::<LogFormat>::new())]
    pub log_format: Option<LogFormat>,

    /// Serve the web server (and the CMS receiver) over HTTPS with this PEM certificate chain.
    #[arg(long, env = "CDR_RELAY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of CDR_RELAY_TLS_CERT.
    #[arg(long, env = "CDR_RELAY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl CommonArgs {
    /// The layer of the old names: the settings `PREFIX` + the old name (`SMDR_WEBHOOK_URL`,
    /// ...) gives, as the webhook logger this relay replaces named them; the rest unset.
    pub fn legacy_env(prefix: &str) -> Self {
        let var = |name: &str| {
            std::env::var(format!("{prefix}{name}"))
                .ok()
                .filter(|v| !v.is_empty())
        };
        let num = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok());
        Self {
            site: var("SITE"),
            idle_timeout: num("IDLE_TIMEOUT"),
            webhook_url: var("WEBHOOK_URL"),
            webhook_key: var("WEBHOOK_KEY"),
            webhook_secret: var("WEBHOOK_SECRET"),
            webhook_max_retries: num("WEBHOOK_MAX_RETRIES").and_then(|n| u32::try_from(n).ok()),
            webhook_retry_delay: num("WEBHOOK_RETRY_DELAY"),
            webhook_ca_file: var("WEBHOOK_CA_FILE").map(PathBuf::from),
            sentry_dsn: var("SENTRY_DSN"),
            sentry_cron_url: var("SENTRY_CRON_URL"),
            sentry_cron_interval: num("SENTRY_CRON_INTERVAL"),
            ..Self::default()
        }
    }

    /// Fills settings not given by flag or new-style variable from `PREFIX` + the old name
    /// ([`Self::legacy_env`]).
    pub fn with_legacy_env(self, prefix: &str) -> Self {
        layer(&self, &[&Self::legacy_env(prefix)]).unwrap_or(self)
    }
}

impl Config {
    /// The settings every relay shares, from the layered `args`, around `source`.
    pub(super) fn resolve_common(
        args: &CommonArgs,
        source: SourceConfig,
    ) -> Result<Self, ConfigError> {
        let webhook_url = text(&args.webhook_url);
        let sinks: Vec<SinkSpec> = if !args.sinks.is_empty() {
            args.sinks.clone()
        } else {
            let mut v = vec![SinkSpec::Store];
            if webhook_url.is_some() {
                v.push(SinkSpec::Webhook);
            }
            if text(&args.redis_url).is_some() {
                v.push(SinkSpec::Redis);
            }
            if args.http_cdr_urls.is_some() {
                v.push(SinkSpec::HttpCdr);
            }
            v
        };
        let retry_delay = args.webhook_retry_delay.unwrap_or(30);
        let retry = RetryPolicy {
            base: Duration::from_secs(retry_delay.max(1)),
            max_attempts: args.webhook_max_retries.unwrap_or(25),
            ..RetryPolicy::default()
        };
        let webhook = match (&webhook_url, sinks.contains(&SinkSpec::Webhook)) {
            (Some(url), _) => Some(WebhookConfig {
                url: url.clone(),
                authorization: text(&args.webhook_key),
                secret: text(&args.webhook_secret),
                ca_file: args.webhook_ca_file.clone(),
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
        let redis_url = text(&args.redis_url);
        let redis = match (redis_url, sinks.contains(&SinkSpec::Redis)) {
            (Some(url), _) => {
                let mut r = cdr_sinks::redis_list::RedisListConfig::new(
                    url,
                    text(&args.redis_list_key).unwrap_or_else(|| DEFAULT_REDIS_SINK_LIST.into()),
                );
                if let Some(side) = args.redis_push {
                    r.side = match side {
                        RedisPush::Lpush => PushSide::Left,
                        RedisPush::Rpush => PushSide::Right,
                    };
                }
                r.ca_file = args.redis_ca_file.clone();
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
        let http_cdr_urls: Vec<String> = args.http_cdr_urls.clone().unwrap_or_default().0;
        let http_cdr = match (http_cdr_urls.is_empty(), sinks.contains(&SinkSpec::HttpCdr)) {
            (false, _) => {
                let mut h = cdr_sinks::http_cdr_sink::HttpCdrConfig {
                    urls: http_cdr_urls,
                    authorization: text(&args.http_cdr_authorization),
                    ca_file: args.http_cdr_ca_file.clone(),
                    // Replaced by the outbox's own session when the relay starts.
                    session: "00000000-0000-4000-8000-000000000000".into(),
                    ..cdr_sinks::http_cdr_sink::HttpCdrConfig::default()
                };
                if let Some(off) = text(&args.http_cdr_utc_offset) {
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
        let tls = match (args.tls_cert.clone(), args.tls_key.clone()) {
            (Some(cert), Some(key)) => {
                crate::web::WebTls::from_files(&cert, &key)
                    .map_err(|e| ConfigError(format!("CDR_RELAY_TLS_CERT/KEY: {e}")))?;
                Some((cert, key))
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "HTTPS needs both CDR_RELAY_TLS_CERT and CDR_RELAY_TLS_KEY".into(),
                ));
            }
        };
        let http = text(&args.http).unwrap_or_else(|| DEFAULT_HTTP.into());
        let log_format = args.log_format.unwrap_or(LogFormat::Text);
        Ok(Self {
            kind: RelayKind::Smdr,
            source,
            ami: AmiAssemblerConfig::default(),
            dialler_max_item: call_assembler::DEFAULT_MAX_ITEM,
            reconcile: None,
            recordings: None,
            recordings_table: None,
            redis,
            tls,
            http_cdr,
            sinks,
            site: text(&args.site).unwrap_or_default(),
            idle_timeout: Duration::from_secs(args.idle_timeout.unwrap_or(4 * 3600)),
            read_timeout: None,
            webhook,
            retry,
            sentry_dsn: text(&args.sentry_dsn),
            sentry_cron_url: text(&args.sentry_cron_url),
            sentry_cron_interval: Duration::from_secs(
                args.sentry_cron_interval.unwrap_or(180).max(1),
            ),
            db: args.db.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DB)),
            http: (http != "off").then_some(http),
            json_logs: log_format == LogFormat::Json,
        })
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
