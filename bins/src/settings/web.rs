//! The web server's settings ([`WebArgs`]): its address (or off) and HTTPS.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::overlay::text;
use super::{ConfigError, DEFAULT_HTTP};

/// The web server's flags and variables.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(default)]
pub struct WebArgs {
    /// Address of the built-in web page, JSON API and /metrics [default: 127.0.0.1:8080];
    /// `off` to disable.
    #[arg(long, env = "CDR_RELAY_HTTP", value_name = "ADDR:PORT")]
    pub http: Option<String>,

    /// Serve the web server (and the CMS receiver) over HTTPS with this PEM certificate chain.
    #[arg(long, env = "CDR_RELAY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of CDR_RELAY_TLS_CERT.
    #[arg(long, env = "CDR_RELAY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// The web server's address (`None`: off) and HTTPS certificate chain and key files.
pub type WebSettings = (Option<String>, Option<(PathBuf, PathBuf)>);

impl WebArgs {
    /// The address and TLS files from the layered settings; the TLS files are loaded once
    /// here so that a bad one stops the start.
    pub fn resolve(&self) -> Result<WebSettings, ConfigError> {
        let tls = match (self.tls_cert.clone(), self.tls_key.clone()) {
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
        let http = text(&self.http).unwrap_or_else(|| DEFAULT_HTTP.into());
        Ok(((http != "off").then_some(http), tls))
    }
}
