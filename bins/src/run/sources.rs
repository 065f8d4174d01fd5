//! Starting the configured source: the task that reads it and the channel it feeds.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use call_assembler::feed::{AmiInput, AsteriskInput, CelInput};

use crate::ops::metrics::Metrics;
use crate::settings::{Config, SourceConfig};
use crate::sources::tcp::{self, SourceEvent, TcpOptions};

use super::eprintln_ready;

/// Where a source's progress is read from (for a replay's progress line).
pub(super) struct ReadProgress {
    pub(super) progress: Arc<AtomicU64>,
    pub(super) total_bytes: Option<u64>,
}

impl ReadProgress {
    /// A source with no total to report progress against (live, or not a replayed file).
    pub(super) fn live() -> Self {
        Self {
            progress: Arc::new(AtomicU64::new(0)),
            total_bytes: None,
        }
    }
}

/// Starts the AMI client (or, with `--replay`, the replayed capture) feeding `tx`.
pub(super) async fn start_ami_source(
    config: &Config,
    metrics: &Metrics,
    tx: mpsc::Sender<SourceEvent<AmiInput>>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<ReadProgress> {
    match &config.source {
        SourceConfig::Ami(client) => {
            tracing::info!(host = %client.host, port = client.port, "connecting to the Asterisk Manager Interface");
            if client.auth == ami_proto::client::Auth::Plain {
                tracing::warn!(
                    tls = client.tls.is_some(),
                    "AMI_AUTH=plain: the AMI secret is sent as it is at login{}; the default md5 challenge never sends it",
                    if client.tls.is_some() {
                        " (inside TLS)"
                    } else {
                        ", readable by anyone on the network path"
                    }
                );
            }
            tokio::spawn(tcp::ami((**client).clone(), tx, shutdown.clone()));
            Ok(ReadProgress::live())
        }
        _ => start_byte_source(config, metrics, tx, shutdown).await,
    }
}

/// Starts a byte source (TCP connect, listen, or a replayed file) feeding `tx`.
pub(super) async fn start_byte_source<I: From<Vec<u8>> + Send + 'static>(
    config: &Config,
    metrics: &Metrics,
    tx: mpsc::Sender<SourceEvent<I>>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<ReadProgress> {
    let progress = Arc::new(AtomicU64::new(0));
    let mut total_bytes = None;
    let opts = TcpOptions {
        read_timeout: config.read_timeout,
        ..TcpOptions::default()
    };
    match &config.source {
        SourceConfig::Connect(addr) => {
            tracing::info!(%addr, "connecting to the PBX");
            if !config.smdr.allow.is_empty() {
                tracing::warn!(
                    "SMDR_ALLOW applies when listening; the relay connects to SMDR_ADDR"
                );
            }
            tokio::spawn(tcp::connect(addr.clone(), opts, tx, shutdown.clone()));
        }
        SourceConfig::Listen(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for SMDR on {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!("listening for SMDR on {local}");
            if config.smdr.allow.is_empty() && !local.ip().is_loopback() {
                tracing::warn!(
                    %local,
                    "the SMDR listener accepts connections from any address: set SMDR_ALLOW to the PBX's address"
                );
            }
            eprintln_ready("smdr", local);
            let guard = tcp::ListenGuard {
                allow: config.smdr.allow.clone(),
                takeover_after: config.smdr.takeover_after,
                refused_not_allowed: metrics.smdr_refused("not_allowed"),
                refused_busy: metrics.smdr_refused("busy"),
            };
            tokio::spawn(tcp::listen(listener, opts, guard, tx, shutdown.clone()));
        }
        SourceConfig::Replay(path) => {
            if path.as_os_str() != "-" {
                let meta = std::fs::metadata(path)
                    .with_context(|| format!("cannot replay {}", path.display()))?;
                total_bytes = Some(meta.len());
            }
            metrics.set_source_connected(true);
            let path: PathBuf = path.clone();
            let progress = progress.clone();
            let (err_tx, err_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let _ = err_tx.send(tcp::replay(path, tx, progress).await);
            });
            tokio::spawn(async move {
                if let Ok(Err(e)) = err_rx.await {
                    tracing::error!(error = %e, "replay failed");
                }
            });
        }
        SourceConfig::Ami(_)
        | SourceConfig::RedisList(_)
        | SourceConfig::Posts(_)
        | SourceConfig::CelCsv(_)
        | SourceConfig::CelDb(_)
        | SourceConfig::Nats(_) => {
            anyhow::bail!("this source does not read raw bytes")
        }
    }
    Ok(ReadProgress {
        progress,
        total_bytes,
    })
}

/// Merges AMI's events and the CDR follower's into one stream: the connection state is AMI's
/// (the follower's is only logged), and the end comes once both sides ended (a replay beside a
/// CDR file read to its end; a side that stops without an end, at shutdown, ends nothing).
pub(super) async fn merge_cdr(
    mut ami: mpsc::Receiver<SourceEvent<AmiInput>>,
    mut cdr: mpsc::Receiver<SourceEvent<CelInput>>,
    tx: mpsc::Sender<SourceEvent<AsteriskInput>>,
) {
    let (mut ami_done, mut cdr_done) = (false, false);
    while !(ami_done && cdr_done) {
        let ev = tokio::select! {
            ev = ami.recv(), if !ami_done => match ev {
                None => return,
                Some(SourceEvent::End) => {
                    ami_done = true;
                    continue;
                }
                Some(SourceEvent::Data(d)) => SourceEvent::Data(AsteriskInput::Ami(d)),
                Some(SourceEvent::Acked(d, ack)) => SourceEvent::Acked(AsteriskInput::Ami(d), ack),
                Some(SourceEvent::Connected(peer)) => SourceEvent::Connected(peer),
                Some(SourceEvent::Disconnected(why)) => SourceEvent::Disconnected(why),
            },
            ev = cdr.recv(), if !cdr_done => match ev {
                None => return,
                Some(SourceEvent::End) => {
                    cdr_done = true;
                    continue;
                }
                Some(SourceEvent::Data(d)) => SourceEvent::Data(AsteriskInput::Cdr(d)),
                Some(SourceEvent::Acked(d, ack)) => SourceEvent::Acked(AsteriskInput::Cdr(d), ack),
                Some(SourceEvent::Connected(path)) => {
                    tracing::info!(%path, "reading the CDR file");
                    continue;
                }
                Some(SourceEvent::Disconnected(why)) => {
                    tracing::warn!(%why, "CDR file");
                    continue;
                }
            },
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
    let _ = tx.send(SourceEvent::End).await;
}
