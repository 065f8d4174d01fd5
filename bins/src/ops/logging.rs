//! Structured logs with `tracing`: text or JSON on stderr, level from `RUST_LOG` (default info).
//! Every line goes through [`redact_urls_in`] on its way out, so a URL logged anywhere shows no
//! password or token ([`cdr_sinks::redact`]).

use std::io::IsTerminal;

use cdr_sinks::redact::redact_urls_in;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. With a Sentry DSN, error events and panics are also sent to
/// Sentry.
pub fn init(json: bool, sentry_dsn: Option<&str>) -> anyhow::Result<()> {
    let filter =
        quiet_secrets(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let sentry = sentry_dsn
        .map(crate::ops::sentry_events::SentryLayer::new)
        .transpose()?;
    if let Some(dsn) = sentry_dsn {
        crate::ops::sentry_events::install_panic_hook(&crate::ops::sentry_events::Dsn::parse(dsn)?);
    }
    let registry = tracing_subscriber::registry().with(filter).with(sentry);
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(|| Redacting(std::io::stderr())),
            )
            .try_init()?;
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(|| Redacting(std::io::stderr())),
            )
            .try_init()?;
    }
    Ok(())
}

/// Targets whose lines below `info` quote a secret whole, capped at `info` whatever `RUST_LOG`
/// says: async-nats traces the `CONNECT` line it sends (`connect_info`, with the password,
/// token and nonce signature), and that module logs nothing else above `trace`.
const SECRET_TARGETS: [&str; 1] = ["async_nats::connection"];

/// `filter` with [`SECRET_TARGETS`] capped at `info`.
fn quiet_secrets(mut filter: EnvFilter) -> EnvFilter {
    for target in SECRET_TARGETS {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// A writer that masks the secrets of the URLs in what it is given (the fmt layer writes each
/// event whole, in one `write`).
struct Redacting<W>(W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) if text.contains("://") => {
                self.0.write_all(redact_urls_in(text).as_bytes())?;
            }
            _ => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn lines_written_show_no_url_secret() {
        let mut w = Redacting(Vec::new());
        w.write_all(b"delivery failed url=https://u:hunter2@h/x?token=abc\n")
            .unwrap_or_default();
        let out = String::from_utf8(w.0).unwrap_or_default();
        assert_eq!(out, "delivery failed url=https://u:***@h/x?token=***\n");
    }
}
