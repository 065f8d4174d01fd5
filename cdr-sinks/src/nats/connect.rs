//! How to reach a NATS server or cluster ([`NatsServer`]): the URLs, the authentication and TLS,
//! shared by the JetStream sink and by `nats-relay`'s consumer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions};

use crate::SinkError;

/// How a client proves who it is to the NATS server (at most one of these is used; the
/// `.creds` file first, then the NKey seed, the token, the user and password). A user and
/// password or a token may also be given in a URL (`nats://user:password@host`,
/// `nats://token@host`).
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsAuth {
    /// A token (`authorization { token: .. }` on the server).
    pub token: Option<String>,
    /// A user name, with [`NatsAuth::password`].
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<String>,
    /// An NKey seed (`SU...`): the server sends a nonce, the client signs it.
    pub nkey_seed: Option<String>,
    /// A `.creds` file (a user JWT and its NKey seed, as `nsc` writes it).
    pub creds_file: Option<PathBuf>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Which kinds are set, never their values (the user name aside).
        f.debug_struct("NatsAuth")
            .field("token", &self.token.as_ref().map(|_| crate::redact::MASK))
            .field("user", &self.user)
            .field(
                "password",
                &self.password.as_ref().map(|_| crate::redact::MASK),
            )
            .field(
                "nkey_seed",
                &self.nkey_seed.as_ref().map(|_| crate::redact::MASK),
            )
            .field("creds_file", &self.creds_file)
            .finish()
    }
}

impl NatsAuth {
    /// What is used, for a summary: `creds file`, `nkey`, `token`, `user NAME` or `none`.
    pub fn describe(&self) -> String {
        if let Some(p) = &self.creds_file {
            format!("creds file {}", p.display())
        } else if self.nkey_seed.is_some() {
            "nkey".into()
        } else if self.token.is_some() {
            "token".into()
        } else if let Some(u) = &self.user {
            format!("user {u}")
        } else {
            "none (or in the URL)".into()
        }
    }
}

/// A NATS server or cluster and how to connect to it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsServer {
    /// Server URLs (`nats://host:4222`, `tls://host:4222` for TLS); the client picks one and
    /// fails over to the others (and to the servers the cluster announces).
    pub urls: Vec<String>,
    /// Authentication.
    pub auth: NatsAuth,
    /// Extra trusted root certificates (PEM) for TLS (the Mozilla roots are trusted too).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for a server that asks for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Require TLS even for `nats://` URLs.
    pub tls_required: bool,
    /// Time allowed to connect, and for each JetStream request and publish acknowledgement.
    pub timeout: Duration,
    /// The client's name, shown by the server's monitoring.
    pub name: String,
}

impl NatsServer {
    /// The servers at `urls`, no authentication, no extra CA, a 10 s timeout.
    pub fn new(urls: Vec<String>) -> Self {
        Self {
            urls,
            auth: NatsAuth::default(),
            ca_file: None,
            client_cert: None,
            tls_required: false,
            timeout: Duration::from_secs(10),
            name: "cdr-relay".into(),
        }
    }

    /// Checks the URLs and the files (CA, creds) now, without connecting.
    pub fn check(&self) -> Result<(), SinkError> {
        if self.urls.is_empty() {
            return Err(SinkError::Config("no NATS server URL".into()));
        }
        for u in &self.urls {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| SinkError::Config(format!("NATS URL {}: {e}", redact_nats_url(u))))?;
        }
        self.tls_config()?;
        if let Some(p) = &self.auth.creds_file {
            std::fs::metadata(p)
                .map_err(|e| SinkError::Config(format!("NATS creds file {}: {e}", p.display())))?;
        }
        if self.auth.user.is_some() != self.auth.password.is_some() {
            return Err(SinkError::Config(
                "NATS user and password go together: set both or neither".into(),
            ));
        }
        Ok(())
    }

    /// The URLs as they may be shown (tokens and passwords masked), comma separated.
    pub fn shown_urls(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact_nats_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The user (or token) and password of the first URL that has them, percent-decoded.
    fn url_credentials(&self) -> Option<(String, Option<String>)> {
        let decode = |t: &str| {
            percent_encoding::percent_decode_str(t)
                .decode_utf8_lossy()
                .into_owned()
        };
        self.urls.iter().find_map(|u| {
            let url = url::Url::parse(u).ok()?;
            if url.username().is_empty() {
                return None;
            }
            Some((decode(url.username()), url.password().map(decode)))
        })
    }

    /// The URLs as the client gets them: without their user and password or token (read into
    /// the connect options instead, [`NatsServer::url_credentials`]), so that no line the
    /// client logs (its debug lines print the server's address as a parsed URL, which the log
    /// writer's URL masking does not recognise) carries a secret.
    fn client_addrs(&self) -> Result<Vec<async_nats::ServerAddr>, SinkError> {
        self.urls
            .iter()
            .map(|u| {
                let bad = |e: std::io::Error| {
                    SinkError::Config(format!("NATS URL {}: {e}", redact_nats_url(u)))
                };
                let addr: async_nats::ServerAddr = u.parse().map_err(bad)?;
                if !addr.has_user_pass() {
                    return Ok(addr);
                }
                let mut url = addr.into_inner();
                // Both only fail for URLs that cannot have a user (no host), which a NATS
                // server address always has.
                let _ = url.set_password(None);
                let _ = url.set_username("");
                async_nats::ServerAddr::from_url(url).map_err(bad)
            })
            .collect()
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, SinkError> {
        let roots = crate::webhook::root_store(self.ca_file.as_deref())?;
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
        match &self.client_cert {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                use rustls_pki_types::pem::PemObject as _;
                use rustls_pki_types::{CertificateDer, PrivateKeyDer};
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<_, _>>())
                    .map_err(|e| {
                        SinkError::Config(format!("NATS certificate {}: {e}", cert.display()))
                    })?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| SinkError::Config(format!("NATS key {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| SinkError::Config(format!("NATS client certificate: {e}")))
            }
        }
    }

    /// Connects (to the first server that answers), within [`NatsServer::timeout`]. After
    /// that the client reconnects by itself, for ever, when a server goes away.
    ///
    /// Errors: [`SinkError::Paused`] when the server refuses our credentials,
    /// [`SinkError::Config`] for a bad URL or file, [`SinkError::Unreachable`] otherwise.
    pub async fn connect(&self) -> Result<async_nats::Client, SinkError> {
        self.check()?;
        let mut options = ConnectOptions::new();
        let a = &self.auth;
        if let Some(p) = &a.creds_file {
            options = options
                .credentials_file(p)
                .await
                .map_err(|e| SinkError::Config(format!("NATS creds file {}: {e}", p.display())))?;
        } else if let Some(seed) = &a.nkey_seed {
            options = options.nkey(seed.clone());
        } else if let Some(t) = &a.token {
            options = options.token(t.clone());
        } else if let (Some(u), Some(p)) = (&a.user, &a.password) {
            options = options.user_and_password(u.clone(), p.clone());
        } else if let Some((user, password)) = self.url_credentials() {
            // The client does not read a URL's userinfo: a user and password, or a token alone.
            options = match password {
                Some(p) => options.user_and_password(user, p),
                None => options.token(user),
            };
        }
        options = options
            .tls_client_config(self.tls_config()?)
            .require_tls(self.tls_required)
            .connection_timeout(self.timeout)
            .request_timeout(Some(self.timeout))
            .name(&self.name)
            // Failing over costs little; at most 1 s between two rounds of tries.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64).saturating_mul(100).min(1000))
            });
        let shown = self.shown_urls();
        let connect = options.connect(self.client_addrs()?);
        match tokio::time::timeout(self.timeout.saturating_mul(2), connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(match e.kind() {
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                    SinkError::Paused {
                        reason: format!("NATS {shown}: {e}"),
                        retry_after: None,
                    }
                }
                ConnectErrorKind::ServerParse => SinkError::Config(format!("NATS {shown}: {e}")),
                _ => SinkError::Unreachable(format!("NATS {shown}: {e}")),
            }),
            Err(_) => Err(SinkError::Unreachable(format!(
                "NATS {shown}: not connected within {:?}",
                self.timeout.saturating_mul(2)
            ))),
        }
    }
}

/// A NATS URL as it may be shown: a password masked as by [`crate::redact::redact_url`], and a
/// user name alone (which NATS reads as a token) masked too.
pub fn redact_nats_url(url: &str) -> String {
    let shown = crate::redact::redact_url(url);
    let Ok(mut parsed) = url::Url::parse(&shown) else {
        return shown;
    };
    if !parsed.username().is_empty() && parsed.password().is_none() {
        let _ = parsed.set_username(crate::redact::MASK);
        return parsed.to_string();
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_passwords_are_masked() {
        assert_eq!(
            redact_nats_url("nats://s3cret@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(
            redact_nats_url("tls://relay:pw@nats.example:4222"),
            "tls://relay:***@nats.example:4222"
        );
        assert_eq!(
            redact_nats_url("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        let auth = NatsAuth {
            token: Some("tok".into()),
            password: Some("pw".into()),
            nkey_seed: Some("SUAB".into()),
            ..NatsAuth::default()
        };
        let shown = format!("{auth:?}");
        assert!(!shown.contains("tok\"") && !shown.contains("pw") && !shown.contains("SUAB"));
    }

    #[test]
    fn the_client_gets_no_secret_in_its_urls() {
        let s = NatsServer::new(vec![
            "nats://t0ken@127.0.0.1:4222".into(),
            "tls://relay:pw@nats.example:4333".into(),
            "127.0.0.1:4444".into(),
        ]);
        let shown: Vec<String> = s
            .client_addrs()
            .unwrap_or_default()
            .iter()
            .map(|a| format!("{a:?} {}", a.as_url_str()))
            .collect();
        assert_eq!(shown.len(), 3);
        for (a, port) in shown.iter().zip(["4222", "4333", "4444"]) {
            assert!(a.contains(port), "{a}");
            assert!(!a.contains("t0ken") && !a.contains("pw"), "{a}");
        }
        assert_eq!(
            s.url_credentials(),
            Some(("t0ken".to_owned(), None)),
            "the credentials are taken from the URLs"
        );
    }

    #[test]
    fn check_refuses_what_cannot_work() {
        assert!(NatsServer::new(vec![]).check().is_err());
        let mut s = NatsServer::new(vec!["nats://127.0.0.1:4222".into()]);
        assert!(s.check().is_ok());
        s.auth.user = Some("u".into());
        assert!(s.check().is_err(), "a user without a password");
        let mut s = NatsServer::new(vec!["nats://127.0.0.1:4222".into()]);
        s.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(s.check(), Err(SinkError::Config(_))));
    }
}
