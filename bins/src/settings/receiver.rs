//! `cdr-receiver`'s settings ([`ReceiverArgs`]): CMS CDR posts to the built-in web server.

use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use super::common::CommonArgs;
use super::overlay::{layer, read_file, text};
use super::{Config, ConfigError, RelayKind, SourceConfig};

/// Receives Cisco Meeting Server CDR posts (CMS: Configuration > CDR settings, receiver URI
/// `http(s)://this-host:port/cdr`), answers 200 only once a batch is committed, assembles each
/// meeting with its legs, keeps every call in the local store with a web page and the sample
/// receiver's record API, and delivers calls to webhooks, Redis lists and other sinks.
///
/// The receiver is served by the built-in web server, or on its own listener: set
/// CDR_RECEIVER_LISTEN to an address CMS reaches (for example 0.0.0.0:8444; only the receiver's
/// path, /healthz and /readyz are served there) and keep the page on 127.0.0.1, with
/// CDR_RELAY_TLS_CERT and CDR_RELAY_TLS_KEY for HTTPS.
#[derive(Debug, Clone, Default, Parser, Serialize, Deserialize)]
#[serde(default)]
#[command(name = "cdr-receiver", version = crate::VERSION, about, long_about)]
pub struct ReceiverArgs {
    /// Settings every relay shares.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,

    /// The receiver's own listener, for example 0.0.0.0:8444: only the receiver's path,
    /// /healthz and /readyz are served there (HTTPS with CDR_RELAY_TLS_CERT/KEY), so CMS can
    /// reach it while the web page stays on CDR_RELAY_HTTP [default: none, the receiver is
    /// served on CDR_RELAY_HTTP].
    #[arg(long, env = "CDR_RECEIVER_LISTEN", value_name = "ADDR:PORT")]
    pub cdr_listen: Option<String>,

    /// The path CMS posts to [default: /cdr].
    #[arg(long, env = "CDR_RECEIVER_PATH", value_name = "PATH")]
    pub cdr_path: Option<String>,

    /// Require `Authorization: Bearer TOKEN`.
    #[arg(long, env = "CDR_RECEIVER_TOKEN", hide_env_values = true)]
    pub cdr_token: Option<String>,

    /// Require HTTP basic authentication, given as `user:password`.
    #[arg(long, env = "CDR_RECEIVER_BASIC_AUTH", hide_env_values = true)]
    pub cdr_basic_auth: Option<String>,

    /// The largest body accepted, in bytes (larger ones get 413) [default: 8388608].
    #[arg(long, env = "CDR_RECEIVER_MAX_BODY", value_name = "BYTES")]
    pub cdr_max_body: Option<usize>,

    /// Seconds a body may take to arrive (slower ones get 408), and its commit to the database
    /// (not committed by then: 503 with Retry-After) [default: 30].
    #[arg(long, env = "CDR_RECEIVER_BODY_TIMEOUT", value_name = "SECONDS")]
    pub cdr_body_timeout: Option<u64>,
}
impl Config {
    /// Resolves `cdr-receiver`'s flags and environment over the TOML file, over defaults.
    pub fn resolve_receiver(args: &ReceiverArgs) -> Result<Self, ConfigError> {
        use crate::sources::receiver::{ReceiverAuth, ReceiverConfig};
        let file: ReceiverArgs = read_file(args.common.config.as_deref())?;
        let args = &layer(args, &[&file])?;
        let source = if let Some(path) = &args.common.replay {
            SourceConfig::Replay(path.clone())
        } else {
            let path = text(&args.cdr_path).unwrap_or_else(|| "/cdr".into());
            if !path.starts_with('/') {
                return Err(ConfigError(format!(
                    "CDR_RECEIVER_PATH {path:?}: must start with /"
                )));
            }
            let auth = match (text(&args.cdr_token), text(&args.cdr_basic_auth)) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError(
                        "set CDR_RECEIVER_TOKEN or CDR_RECEIVER_BASIC_AUTH, not both".into(),
                    ));
                }
                (Some(t), None) => Some(ReceiverAuth::Bearer(t)),
                (None, Some(b)) if b.contains(':') => Some(ReceiverAuth::Basic(b)),
                (None, Some(_)) => {
                    return Err(ConfigError(
                        "CDR_RECEIVER_BASIC_AUTH: expected user:password".into(),
                    ));
                }
                (None, None) => None,
            };
            let defaults = ReceiverConfig::default();
            SourceConfig::Posts(ReceiverConfig {
                path,
                auth,
                max_body: args.cdr_max_body.unwrap_or(defaults.max_body).max(1024),
                body_timeout: args
                    .cdr_body_timeout
                    .map_or(defaults.body_timeout, |s| Duration::from_secs(s.max(1))),
            })
        };
        let mut c = Self::resolve_common(&args.common, source)?;
        c.kind = RelayKind::Receiver;
        if matches!(c.source, SourceConfig::Posts(_)) {
            c.receiver_listen = text(&args.cdr_listen).filter(|l| l != "off");
            if c.http.is_none() && c.receiver_listen.is_none() {
                return Err(ConfigError(
                    "cdr-receiver receives on the web server unless CDR_RECEIVER_LISTEN is set: \
                     CDR_RELAY_HTTP cannot be off"
                        .into(),
                ));
            }
        }
        Ok(c)
    }
}
