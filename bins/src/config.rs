//! Configuration of `smdr-relay`: flags, environment variables (the SMDR webhook logger's names
//! work unchanged) and a TOML file, in that order of precedence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::webhook::WebhookConfig;
use clap::Parser;
use serde::Deserialize;

use crate::sinks::SinkSpec;

/// The default address the relay listens on for the PBX when nothing else is configured.
pub const DEFAULT_SMDR_LISTEN: &str = "0.0.0.0:5100";
/// The default address of the built-in web page, API and metrics.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// The default database file.
pub const DEFAULT_DB: &str = "./cdr-relay.db";

/// Collects Avaya IP Office SMDR, assembles the records of each call into one completed call,
/// keeps every call in a local store with a web page, and delivers it to webhooks and other sinks.
///
/// With no configuration it listens for the PBX on 0.0.0.0:5100, stores calls in
/// ./cdr-relay.db and serves the web page on http://127.0.0.1:8080. Point the IP Office SMDR
/// output at this machine (Manager: System > CDR/SMDR > IP address and port), or set SMDR_ADDR
/// when the PBX listens and the relay should connect. Every option can also be set by the
/// environment variable shown, or in a TOML file given with --config (keys as the long flags,
/// with `_` for `-`).
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "smdr-relay", version, about, long_about)]
pub struct Args {
    /// A TOML file with settings (flags and environment variables override it).
    #[arg(long, value_name = "FILE", env = "CDR_RELAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Check the configuration, print what would run, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Replay SMDR from this file (`-` for standard input) instead of a PBX; exit once every
    /// call has been delivered to every sink or dead-lettered.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,

    /// Sinks to deliver to, repeatable: `store`, `webhook`, `jsonl:PATH` (`jsonl:-` = stdout).
    /// Default: the store, plus the webhook when SMDR_WEBHOOK_URL is set.
    #[arg(long = "sink", value_name = "KIND[:ARG]")]
    pub sinks: Vec<SinkSpec>,

    /// Connect to the PBX at HOST:PORT (the PBX listens; IP Office with SMDR IP 0.0.0.0).
    #[arg(long, env = "SMDR_ADDR", value_name = "HOST:PORT")]
    pub smdr_addr: Option<String>,

    /// Listen for the PBX on ADDR:PORT [default: 0.0.0.0:5100 when SMDR_ADDR is not set].
    #[arg(long, env = "SMDR_LISTEN", value_name = "ADDR:PORT")]
    pub smdr_listen: Option<String>,

    /// Site (PBX) name, part of every call and of its stable id.
    #[arg(long, env = "SMDR_SITE")]
    pub site: Option<String>,

    /// Seconds a call may wait for its next record before it is delivered incomplete
    /// [default: 14400].
    #[arg(long, env = "SMDR_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,

    /// Seconds without any byte from the PBX after which the connection is re-established
    /// (0 = never) [default: 0].
    #[arg(long, env = "SMDR_READ_TIMEOUT", value_name = "SECONDS")]
    pub read_timeout: Option<u64>,

    /// Webhook URL: each completed call is POSTed there as JSON.
    #[arg(long, env = "SMDR_WEBHOOK_URL", value_name = "URL")]
    pub webhook_url: Option<String>,

    /// Value of the Authorization header sent to the webhook, as-is.
    #[arg(long, env = "SMDR_WEBHOOK_KEY", hide_env_values = true)]
    pub webhook_key: Option<String>,

    /// Standard Webhooks secret (whsec_...): sign every request.
    #[arg(long, env = "SMDR_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Attempts before a webhook delivery is dead-lettered [default: 25].
    #[arg(long, env = "SMDR_WEBHOOK_MAX_RETRIES")]
    pub webhook_max_retries: Option<u32>,

    /// First retry delay in seconds, doubling up to an hour, with full jitter [default: 30].
    #[arg(long, env = "SMDR_WEBHOOK_RETRY_DELAY", value_name = "SECONDS")]
    pub webhook_retry_delay: Option<u64>,

    /// Extra trusted CA certificates (PEM) for the webhook's TLS.
    #[arg(long, env = "SMDR_WEBHOOK_CA_FILE", value_name = "FILE")]
    pub webhook_ca_file: Option<PathBuf>,

    /// Sentry DSN: errors and dead letters are reported there.
    #[arg(long, env = "SMDR_SENTRY_DSN", hide_env_values = true)]
    pub sentry_dsn: Option<String>,

    /// Sentry cron check-in URL, called every SMDR_SENTRY_CRON_INTERVAL seconds.
    #[arg(long, env = "SMDR_SENTRY_CRON_URL", hide_env_values = true)]
    pub sentry_cron_url: Option<String>,

    /// Seconds between Sentry cron check-ins [default: 180].
    #[arg(long, env = "SMDR_SENTRY_CRON_INTERVAL", value_name = "SECONDS")]
    pub sentry_cron_interval: Option<u64>,

    /// The SQLite file holding the outbox and the call store [default: ./cdr-relay.db].
    #[arg(long, env = "CDR_RELAY_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,

    /// Address of the built-in web page, JSON API and /metrics [default: 127.0.0.1:8080];
    /// `off` to disable.
    #[arg(long, env = "CDR_RELAY_HTTP", value_name = "ADDR:PORT")]
    pub http: Option<String>,

    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "CDR_RELAY_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    sinks: Option<Vec<String>>,
    smdr_addr: Option<String>,
    smdr_listen: Option<String>,
    site: Option<String>,
    idle_timeout: Option<u64>,
    read_timeout: Option<u64>,
    webhook_url: Option<String>,
    webhook_key: Option<String>,
    webhook_secret: Option<String>,
    webhook_max_retries: Option<u32>,
    webhook_retry_delay: Option<u64>,
    webhook_ca_file: Option<PathBuf>,
    sentry_dsn: Option<String>,
    sentry_cron_url: Option<String>,
    sentry_cron_interval: Option<u64>,
    db: Option<PathBuf>,
    http: Option<String>,
    log_format: Option<String>,
}

/// Where the SMDR comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// Connect to the PBX.
    Connect(String),
    /// Listen for the PBX.
    Listen(String),
    /// Replay a file (`-`: stdin).
    Replay(PathBuf),
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The source.
    pub source: SourceConfig,
    /// The sinks, store included.
    pub sinks: Vec<SinkSpec>,
    /// Site name.
    pub site: String,
    /// Idle timeout of open calls.
    pub idle_timeout: Duration,
    /// Reconnect after this long without data (`None`: never).
    pub read_timeout: Option<Duration>,
    /// The webhook, when configured.
    pub webhook: Option<WebhookConfig>,
    /// Retry policy of the webhook.
    pub retry: RetryPolicy,
    /// Sentry DSN.
    pub sentry_dsn: Option<String>,
    /// Sentry cron check-in URL.
    pub sentry_cron_url: Option<String>,
    /// Interval of the check-ins.
    pub sentry_cron_interval: Duration,
    /// The SQLite file.
    pub db: PathBuf,
    /// The web server's address, if on.
    pub http: Option<String>,
    /// `json` logs.
    pub json_logs: bool,
}

/// A configuration problem, said so a user can fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Resolves flags and environment (already in `args`) over the TOML file, over defaults.
    pub fn resolve(args: &Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let pick = |a: &Option<String>, f: &Option<String>| {
            a.clone().or_else(|| f.clone()).filter(|s| !s.is_empty())
        };
        let source = if let Some(path) = &args.replay {
            SourceConfig::Replay(path.clone())
        } else if let Some(addr) = pick(&args.smdr_addr, &file.smdr_addr) {
            if pick(&args.smdr_listen, &file.smdr_listen).is_some() {
                return Err(ConfigError(
                    "set either SMDR_ADDR (connect to the PBX) or SMDR_LISTEN (the PBX connects to us), not both".into(),
                ));
            }
            SourceConfig::Connect(addr)
        } else {
            SourceConfig::Listen(
                pick(&args.smdr_listen, &file.smdr_listen)
                    .unwrap_or_else(|| DEFAULT_SMDR_LISTEN.into()),
            )
        };
        let webhook_url = pick(&args.webhook_url, &file.webhook_url);
        let sinks: Vec<SinkSpec> = if !args.sinks.is_empty() {
            args.sinks.clone()
        } else if let Some(list) = &file.sinks {
            list.iter()
                .map(|s| s.parse().map_err(ConfigError))
                .collect::<Result<_, _>>()?
        } else {
            let mut v = vec![SinkSpec::Store];
            if webhook_url.is_some() {
                v.push(SinkSpec::Webhook);
            }
            v
        };
        let retry_delay = args
            .webhook_retry_delay
            .or(file.webhook_retry_delay)
            .unwrap_or(30);
        let retry = RetryPolicy {
            base: Duration::from_secs(retry_delay.max(1)),
            max_attempts: args
                .webhook_max_retries
                .or(file.webhook_max_retries)
                .unwrap_or(25),
            ..RetryPolicy::default()
        };
        let webhook = match (&webhook_url, sinks.contains(&SinkSpec::Webhook)) {
            (Some(url), _) => Some(WebhookConfig {
                url: url.clone(),
                authorization: pick(&args.webhook_key, &file.webhook_key),
                secret: pick(&args.webhook_secret, &file.webhook_secret),
                ca_file: args
                    .webhook_ca_file
                    .clone()
                    .or_else(|| file.webhook_ca_file.clone()),
                ..WebhookConfig::default()
            }),
            (None, true) => {
                return Err(ConfigError(
                    "--sink webhook needs a URL: set SMDR_WEBHOOK_URL or --webhook-url".into(),
                ));
            }
            (None, false) => None,
        };
        if let Some(w) = &webhook {
            cdr_sinks::webhook::WebhookSink::new(w).map_err(|e| ConfigError(e.to_string()))?;
        }
        let http = pick(&args.http, &file.http).unwrap_or_else(|| DEFAULT_HTTP.into());
        let log_format = pick(&args.log_format, &file.log_format).unwrap_or_else(|| "text".into());
        if !matches!(log_format.as_str(), "text" | "json") {
            return Err(ConfigError(format!(
                "log format {log_format:?}: expected text or json"
            )));
        }
        Ok(Self {
            source,
            sinks,
            site: pick(&args.site, &file.site).unwrap_or_default(),
            idle_timeout: Duration::from_secs(
                args.idle_timeout.or(file.idle_timeout).unwrap_or(4 * 3600),
            ),
            read_timeout: args
                .read_timeout
                .or(file.read_timeout)
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            webhook,
            retry,
            sentry_dsn: pick(&args.sentry_dsn, &file.sentry_dsn),
            sentry_cron_url: pick(&args.sentry_cron_url, &file.sentry_cron_url),
            sentry_cron_interval: Duration::from_secs(
                args.sentry_cron_interval
                    .or(file.sentry_cron_interval)
                    .unwrap_or(180)
                    .max(1),
            ),
            db: args
                .db
                .clone()
                .or(file.db)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DB)),
            http: (http != "off").then_some(http),
            json_logs: log_format == "json",
        })
    }

    /// A human-readable summary (for `--check-config`), secrets hidden.
    pub fn describe(&self) -> String {
        let source = match &self.source {
            SourceConfig::Connect(a) => format!("connect to the PBX at {a}"),
            SourceConfig::Listen(a) => format!("listen for the PBX on {a}"),
            SourceConfig::Replay(p) => format!("replay {}", p.display()),
        };
        let sinks: Vec<String> = self.sinks.iter().map(SinkSpec::to_string).collect();
        let mut out = format!(
            "source: {source}\nsinks: {}\ndatabase: {}\nweb: {}\nsite: {:?}\nidle timeout: {} s\n",
            sinks.join(", "),
            self.db.display(),
            self.http.as_deref().unwrap_or("off"),
            self.site,
            self.idle_timeout.as_secs(),
        );
        if let Some(w) = &self.webhook {
            out.push_str(&format!(
                "webhook: {} (key {}, signing {}), {} attempts, first retry after {} s\n",
                w.url,
                if w.authorization.is_some() {
                    "set"
                } else {
                    "not set"
                },
                if w.secret.is_some() { "on" } else { "off" },
                self.retry.max_attempts,
                self.retry.base.as_secs(),
            ));
        }
        if self.sentry_dsn.is_some() {
            out.push_str("sentry: errors reported\n");
        }
        if self.sentry_cron_url.is_some() {
            out.push_str(&format!(
                "sentry cron: every {} s\n",
                self.sentry_cron_interval.as_secs()
            ));
        }
        out
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        let mut all = vec!["smdr-relay"];
        all.extend_from_slice(v);
        Args::try_parse_from(all).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_listen_store_and_serve() {
        let c = Config::resolve(&args(&[])).unwrap();
        assert_eq!(c.source, SourceConfig::Listen(DEFAULT_SMDR_LISTEN.into()));
        assert_eq!(c.sinks, vec![SinkSpec::Store]);
        assert_eq!(c.db, PathBuf::from(DEFAULT_DB));
        assert_eq!(c.http.as_deref(), Some(DEFAULT_HTTP));
        assert!(c.webhook.is_none());
        assert_eq!(c.retry.max_attempts, 25);
        assert_eq!(c.retry.base, Duration::from_secs(30));
        assert_eq!(c.sentry_cron_interval, Duration::from_secs(180));
    }

    #[test]
    fn a_webhook_url_adds_the_webhook_sink() {
        let c = Config::resolve(&args(&[
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-key",
            "k",
            "--smdr-addr",
            "pbx.example:5000",
        ]))
        .unwrap();
        assert_eq!(c.sinks, vec![SinkSpec::Store, SinkSpec::Webhook]);
        assert_eq!(c.source, SourceConfig::Connect("pbx.example:5000".into()));
        assert_eq!(c.webhook.unwrap().authorization.as_deref(), Some("k"));
    }

    #[test]
    fn file_settings_are_overridden_by_flags() {
        let dir = std::env::temp_dir().join(format!("cdr-relay-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(
            &path,
            "smdr_listen = \"127.0.0.1:7000\"\nsite = \"hq\"\nsinks = [\"store\", \"jsonl:-\"]\nwebhook_max_retries = 3\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = Config::resolve(&args(&["--config", p, "--site", "branch"])).unwrap();
        assert_eq!(c.source, SourceConfig::Listen("127.0.0.1:7000".into()));
        assert_eq!(c.site, "branch");
        assert_eq!(c.sinks, vec![SinkSpec::Store, SinkSpec::Jsonl(None)]);
        assert_eq!(c.retry.max_attempts, 3);
        std::fs::write(&path, "smdr_lisen = \"typo\"\n").unwrap();
        let e = Config::resolve(&args(&["--config", p])).unwrap_err();
        assert!(e.0.contains("smdr_lisen"), "{e}");
    }

    #[test]
    fn contradictions_are_refused_clearly() {
        let e =
            Config::resolve(&args(&["--smdr-addr", "a:1", "--smdr-listen", "b:2"])).unwrap_err();
        assert!(e.0.contains("not both"), "{e}");
        let e = Config::resolve(&args(&["--sink", "webhook"])).unwrap_err();
        assert!(e.0.contains("SMDR_WEBHOOK_URL"), "{e}");
        let e = Config::resolve(&args(&["--webhook-url", "ftp://x"])).unwrap_err();
        assert!(e.0.contains("http"), "{e}");
    }
}
