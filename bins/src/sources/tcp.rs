//! Byte sources: the PBX over TCP (we connect, or we listen), or a file to replay.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::reconnect::Reconnect;

/// What a source reports to the feed; `I` is what it reads (bytes by default; the AMI
/// client hands over decoded messages).
#[derive(Debug)]
pub enum SourceEvent<I = Vec<u8>> {
    /// A connection to the PBX is up (its peer address).
    Connected(String),
    /// Input as read.
    Data(I),
    /// Input that the source acknowledges upstream (removes from a Redis processing list,
    /// answers an HTTP request) only once it is committed: the run loop sends on the channel
    /// after the commit that holds it.
    Acked(I, tokio::sync::oneshot::Sender<()>),
    /// The connection went away (why); a partial line must be dropped.
    Disconnected(String),
    /// A replayed file ended.
    End,
}

/// How the TCP connection is kept healthy.
#[derive(Debug, Clone, Copy)]
pub struct TcpOptions {
    /// Re-establish the connection after this long without a byte (`None`: never).
    pub read_timeout: Option<Duration>,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Largest reconnect delay.
    pub max_backoff: Duration,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            read_timeout: None,
            connect_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

const CHUNK: usize = 64 * 1024;

fn keepalive(stream: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::warn!(error = %e, "could not enable TCP keepalive");
    }
    let _ = stream.set_nodelay(true);
}

/// Reads `stream` until it ends, fails, idles past `read_timeout` or `shutdown` turns true.
/// Returns why it stopped, or `None` on shutdown or when the receiver is gone.
async fn pump<R: AsyncRead + Unpin, I: From<Vec<u8>>>(
    mut stream: R,
    read_timeout: Option<Duration>,
    tx: &mpsc::Sender<SourceEvent<I>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let read = async {
            match read_timeout {
                Some(t) => tokio::time::timeout(t, stream.read(&mut buf))
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no data for {} s", t.as_secs()),
                        ))
                    }),
                None => stream.read(&mut buf).await,
            }
        };
        let n = tokio::select! {
            r = read => r,
            _ = shutdown.changed() => return None,
        };
        match n {
            Ok(0) => return Some("closed by the peer".into()),
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default().to_vec();
                if tx.send(SourceEvent::Data(data.into())).await.is_err() {
                    return None;
                }
            }
            Err(e) => return Some(e.to_string()),
        }
    }
}

/// Connects to the PBX at `addr` (host names allowed) and keeps reconnecting with capped
/// backoff until `shutdown`.
pub async fn connect<I: From<Vec<u8>>>(
    addr: String,
    opts: TcpOptions,
    tx: mpsc::Sender<SourceEvent<I>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reconnect = Reconnect::new(opts.min_backoff, opts.max_backoff);
    while !*shutdown.borrow() {
        let attempt = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(&addr)).await;
        match attempt {
            Ok(Ok(stream)) => {
                keepalive(&stream);
                let peer = stream
                    .peer_addr()
                    .map_or_else(|_| addr.clone(), |a| a.to_string());
                tracing::info!(%peer, "connected to the PBX");
                reconnect.succeeded();
                if tx.send(SourceEvent::Connected(peer)).await.is_err() {
                    return;
                }
                match pump(stream, opts.read_timeout, &tx, &mut shutdown).await {
                    Some(why) => {
                        tracing::warn!(%addr, %why, "PBX connection lost");
                        if tx.send(SourceEvent::Disconnected(why)).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                }
            }
            Ok(Err(e)) => tracing::warn!(%addr, error = %e, "cannot connect to the PBX"),
            Err(_) => tracing::warn!(%addr, "connecting to the PBX timed out"),
        }
        if !reconnect.wait(&mut shutdown).await {
            return;
        }
    }
}

/// Accepts PBX connections on `listener`. A new connection replaces the current one (a PBX that
/// reconnects has given up on the old socket).
pub async fn listen<I: From<Vec<u8>>>(
    listener: TcpListener,
    opts: TcpOptions,
    tx: mpsc::Sender<SourceEvent<I>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next: Option<(TcpStream, std::net::SocketAddr)> = None;
    loop {
        let (stream, peer) = match next.take() {
            Some(c) => c,
            None => {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = shutdown.changed() => return,
                };
                match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        keepalive(&stream);
        tracing::info!(%peer, "PBX connected");
        if tx
            .send(SourceEvent::Connected(peer.to_string()))
            .await
            .is_err()
        {
            return;
        }
        let why = tokio::select! {
            why = pump(stream, opts.read_timeout, &tx, &mut shutdown) => why,
            accepted = listener.accept() => match accepted {
                Ok(c) => {
                    next = Some(c);
                    Some("replaced by a new connection".into())
                }
                Err(e) => Some(format!("accept failed: {e}")),
            },
        };
        match why {
            Some(why) => {
                tracing::warn!(%peer, %why, "PBX connection ended");
                if tx.send(SourceEvent::Disconnected(why)).await.is_err() {
                    return;
                }
            }
            None => return,
        }
    }
}

/// Reads a file (`-`: stdin) to its end, counting bytes in `progress`.
pub async fn replay<I: From<Vec<u8>>>(
    path: PathBuf,
    tx: mpsc::Sender<SourceEvent<I>>,
    progress: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut reader: Box<dyn AsyncRead + Unpin + Send> = if path.as_os_str() == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(
            tokio::fs::File::open(&path)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        )
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        progress.fetch_add(n as u64, Ordering::Relaxed);
        let data = buf.get(..n).unwrap_or_default().to_vec();
        if tx.send(SourceEvent::Data(data.into())).await.is_err() {
            return Ok(());
        }
    }
    let _ = tx.send(SourceEvent::End).await;
    Ok(())
}

/// The most messages handed over in one [`SourceEvent::Data`]: a burst becomes one outbox
/// commit instead of one per message.
const AMI_BATCH: usize = 4096;

/// Runs the AMI client until `shutdown`, handing its messages over in batches (whatever is
/// already queued, up to 4,096) and its resyncs as they come. The client itself reads
/// the socket promptly whatever this consumer does (see `ami_proto::client`).
pub async fn ami(
    config: ami_proto::client::ClientConfig,
    tx: mpsc::Sender<SourceEvent<call_assembler::feed::AmiInput>>,
    mut shutdown: watch::Receiver<bool>,
) {
    use ami_proto::client::{Client, ClientEvent};
    use call_assembler::feed::AmiInput;

    let peer = format!("{}:{}", config.host, config.port);
    let mut client = match Client::spawn(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the AMI client");
            return;
        }
    };
    loop {
        let first = tokio::select! {
            ev = client.next_event() => ev,
            _ = shutdown.changed() => None,
        };
        let Some(first) = first else { break };
        let mut messages = Vec::new();
        let mut next = Some(first);
        while let Some(ev) = next.take() {
            let out = match ev {
                ClientEvent::Message(m) => {
                    messages.push(m);
                    if messages.len() < AMI_BATCH {
                        next = client.try_next_event();
                    }
                    continue;
                }
                ClientEvent::Connected { version } => {
                    tracing::info!(%peer, %version, "logged in to the Asterisk Manager Interface");
                    SourceEvent::Connected(peer.clone())
                }
                ClientEvent::Resync { channels } => {
                    tracing::info!(channels = channels.len(), "resynchronising open calls");
                    SourceEvent::Data(AmiInput::Resync(channels))
                }
                ClientEvent::Overflow { dropped } => {
                    tracing::warn!(
                        dropped,
                        "AMI events dropped: the relay fell behind; resyncing"
                    );
                    continue;
                }
                ClientEvent::Disconnected { reason, retry_in } => {
                    tracing::warn!(%peer, error = %reason, retry_in_ms = retry_in.as_millis() as u64, "AMI connection lost");
                    SourceEvent::Disconnected(reason.to_string())
                }
                other => {
                    tracing::debug!(event = ?other, "AMI client event ignored");
                    continue;
                }
            };
            // Messages before this event go first, in order.
            if !messages.is_empty()
                && tx
                    .send(SourceEvent::Data(AmiInput::Messages(std::mem::take(
                        &mut messages,
                    ))))
                    .await
                    .is_err()
            {
                return client.shutdown().await;
            }
            if tx.send(out).await.is_err() {
                return client.shutdown().await;
            }
        }
        if !messages.is_empty()
            && tx
                .send(SourceEvent::Data(AmiInput::Messages(messages)))
                .await
                .is_err()
        {
            break;
        }
    }
    client.shutdown().await;
}
