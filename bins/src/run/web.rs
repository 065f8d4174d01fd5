//! Starting the web server and, for `cdr-receiver`, the receiver's own listener.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use super::eprintln_ready;
use crate::ops::metrics::Metrics;
use crate::settings::Config;
use crate::sources::receiver::CdrReceiver;
use crate::web::{WebState, WebTls};

/// Binds the web server (`CDR_RELAY_HTTP`) and the receiver's own listener
/// (`CDR_RECEIVER_LISTEN`), each when configured, and serves them until `stop`. The receiver
/// is served on its own listener when it has one, else on the web server.
pub(super) async fn start_web(
    config: &Config,
    db: &Path,
    metrics: &Arc<Metrics>,
    kind: &str,
    receiver: Option<Arc<CdrReceiver>>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(WebTls::from_files(cert, key)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let state = WebState {
        db: db.to_path_buf(),
        metrics: metrics.clone(),
        title: format!("{kind}-relay"),
        receiver: None,
        tls,
        access: config.access.clone(),
        receiver_only: false,
    };
    let (on_web, own) = match &config.receiver_listen {
        Some(addr) => (None, receiver.map(|r| (addr.clone(), r))),
        None => (receiver, None),
    };
    if let Some((addr, receiver)) = own {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding the CMS receiver to {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!("CMS receiver on {scheme}://{local}{}", receiver.path());
        eprintln_ready("receiver", local);
        spawn(
            listener,
            WebState {
                receiver: Some(receiver),
                receiver_only: true,
                ..state.clone()
            },
            stop.clone(),
        );
    }
    if let Some(addr) = &config.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the web server to {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!(access = %config.access.describe(), "web page and API on {scheme}://{local}/");
        eprintln_ready("http", local);
        spawn(
            listener,
            WebState {
                receiver: on_web,
                ..state
            },
            stop.clone(),
        );
    }
    Ok(())
}

fn spawn(listener: tokio::net::TcpListener, state: WebState, stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        if let Err(e) = crate::web::serve(listener, state, stop).await {
            tracing::error!(error = %e, "web server failed");
        }
    });
}
