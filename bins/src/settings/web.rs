//! The web server's settings ([`WebArgs`]): its address (or off), HTTPS and who may read and
//! administer (tokens, users with hashed passwords, or a public read-only page; see
//! [`crate::web::auth`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::overlay::text;
use super::values::{List, parse_bool};
use super::{ConfigError, DEFAULT_HTTP};
use crate::web::auth::Access;

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

    /// Bearer tokens (comma separated, 16 characters or more) that may read the web page,
    /// JSON API, dead letters and /metrics (`Authorization: Bearer TOKEN`).
    #[arg(
        long,
        env = "CDR_RELAY_READ_TOKENS",
        value_name = "TOKENS",
        hide_env_values = true
    )]
    pub read_tokens: Option<List>,

    /// Bearer tokens (comma separated, 16 characters or more) that may also administer:
    /// /api/v1/admin/... and every method other than GET.
    #[arg(
        long,
        env = "CDR_RELAY_ADMIN_TOKENS",
        value_name = "TOKENS",
        hide_env_values = true
    )]
    pub admin_tokens: Option<List>,

    /// Users of the web page (HTTP Basic), as `name:role:PHC` entries separated by spaces or
    /// `;`: role `read` or `admin`, PHC the password's argon2 hash that `--hash-password`
    /// prints.
    #[arg(
        long,
        env = "CDR_RELAY_USERS",
        value_name = "USERS",
        hide_env_values = true
    )]
    pub users: Option<String>,

    /// Serve the page, API and metrics to anyone, read-only (needed to bind CDR_RELAY_HTTP to
    /// anything but loopback without credentials); admin access then needs
    /// CDR_RELAY_ADMIN_TOKENS or an admin user [default: false].
    #[arg(long, env = "CDR_RELAY_PUBLIC_READ", value_name = "BOOL", value_parser = parse_bool)]
    pub public_read: Option<bool>,
}

/// The web server's resolved settings.
#[derive(Debug, Clone, Default)]
pub struct WebSettings {
    /// Its address; `None`: off.
    pub http: Option<String>,
    /// HTTPS certificate chain and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Who may read and administer.
    pub access: Access,
}

/// Whether `addr` (`host:port`) only listens on loopback: `127.0.0.0/8`, `::1` or
/// `localhost`. Anything else (a wildcard, an interface's address, another name) is not.
pub fn is_loopback(addr: &str) -> bool {
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return sa.ip().is_loopback();
    }
    addr.rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

/// The refusal to serve calls on `addr`, not loopback, with no access configured.
pub fn refuse_open(setting: &str, addr: &str) -> ConfigError {
    ConfigError(format!(
        "{setting} {addr} is not a loopback address and the web server has no access control: \
         set CDR_RELAY_READ_TOKENS, CDR_RELAY_ADMIN_TOKENS or CDR_RELAY_USERS (hash a password \
         with --hash-password), or CDR_RELAY_PUBLIC_READ=true to show the calls to anyone \
         read-only; cdr-receiver can take CMS posts on its own listener (CDR_RECEIVER_LISTEN) \
         while CDR_RELAY_HTTP stays on 127.0.0.1"
    ))
}

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
        let list = |l: &Option<List>| l.as_ref().map(|l| l.0.clone()).unwrap_or_default();
        let access = Access::new(
            &list(&self.read_tokens),
            &list(&self.admin_tokens),
            self.users.as_deref().unwrap_or_default(),
            self.public_read.unwrap_or(false),
        )
        .map_err(|e| ConfigError(e.to_string()))?;
        let http = (http != "off").then_some(http);
        if let Some(addr) = &http {
            if !is_loopback(addr) && !access.is_configured() && !access.public_read() {
                return Err(refuse_open("CDR_RELAY_HTTP", addr));
            }
        }
        Ok(WebSettings { http, tls, access })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_counts_as_private() {
        for addr in [
            "127.0.0.1:8080",
            "127.1.2.3:0",
            "[::1]:8080",
            "localhost:8080",
        ] {
            assert!(is_loopback(addr), "{addr}");
        }
        for addr in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.0.0.5:80",
            "pbx.example:80",
            "nonsense",
        ] {
            assert!(!is_loopback(addr), "{addr}");
        }
    }

    #[test]
    fn a_public_bind_needs_access_or_an_explicit_public_page() {
        let public = WebArgs {
            http: Some("0.0.0.0:8080".into()),
            ..WebArgs::default()
        };
        let err = public.resolve().err().map(|e| e.0).unwrap_or_default();
        assert!(
            err.contains("CDR_RELAY_USERS") && err.contains("CDR_RELAY_PUBLIC_READ"),
            "{err}"
        );
        let open = WebArgs {
            public_read: Some(true),
            ..public.clone()
        };
        assert!(open.resolve().is_ok_and(|w| w.access.public_read()));
        let tokens = WebArgs {
            read_tokens: Some(List(vec!["0123456789abcdef".into()])),
            ..public
        };
        assert!(tokens.resolve().is_ok_and(|w| w.access.is_configured()));
        assert!(WebArgs::default().resolve().is_ok());
    }
}
