//! Structured logs with `tracing`: text or JSON on stderr, level from `RUST_LOG` (default info).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. With a Sentry DSN, error events and panics are also sent to
/// Sentry.
pub fn init(json: bool, sentry_dsn: Option<&str>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
                    .with_writer(std::io::stderr),
            )
            .try_init()?;
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init()?;
    }
    Ok(())
}
