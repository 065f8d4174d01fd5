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

/// When a connection last delivered a byte, readable while it is being pumped.
#[derive(Debug)]
struct Activity {
    since: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the last byte (or the connection's start).
    fn silent_for(&self) -> Duration {
        self.since
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Reads `stream` until it ends, fails, idles past `read_timeout` or `shutdown` turns true.
/// Returns why it stopped, or `None` on shutdown or when the receiver is gone.
async fn pump<R: AsyncRead + Unpin, I: From<Vec<u8>>>(
    mut stream: R,
    read_timeout: Option<Duration>,
    tx: &mpsc::Sender<SourceEvent<I>>,
    shutdown: &mut watch::Receiver<bool>,
    activity: &Activity,
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
                activity.touch();
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
                let activity = Activity::new();
                match pump(stream, opts.read_timeout, &tx, &mut shutdown, &activity).await {
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

/// Who may connect to the SMDR listener, and when a newcomer may replace the live connection.
#[derive(Debug, Clone)]
pub struct ListenGuard {
    /// Addresses and networks allowed to connect; empty: anyone.
    pub allow: Vec<ipnet::IpNet>,
    /// A newcomer replaces the live connection only once that has been silent this long.
    pub takeover_after: Duration,
    /// Counts peers refused for not being in `allow`.
    pub refused_not_allowed: prometheus_client::metrics::counter::Counter,
    /// Counts peers refused because the live connection is not silent.
    pub refused_busy: prometheus_client::metrics::counter::Counter,
}

impl ListenGuard {
    /// Whether `peer` may connect (an IPv4 peer on an IPv6 socket is matched as IPv4).
    pub fn allows(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&peer))
    }
}

/// Logs refused connections at most once per interval per reason, with how many were refused
/// since the last line: a flood of connections cannot flood the log.
#[derive(Debug)]
struct RefusalLog {
    interval: Duration,
    /// Per reason: when it was last logged and how many since.
    last: [(Option<tokio::time::Instant>, u64); 2],
}

impl RefusalLog {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: [(None, 0), (None, 0)],
        }
    }

    fn refused(&mut self, busy: bool, peer: std::net::SocketAddr, live: Option<&str>) {
        let Some(slot) = self.last.get_mut(usize::from(busy)) else {
            return;
        };
        slot.1 += 1;
        let now = tokio::time::Instant::now();
        if slot
            .0
            .is_some_and(|t| now.duration_since(t) < self.interval)
        {
            return;
        }
        let refused = std::mem::take(&mut slot.1);
        slot.0 = Some(now);
        if busy {
            tracing::warn!(%peer, live = live.unwrap_or(""), refused, "SMDR connection refused: the PBX's connection is live (SMDR_TAKEOVER_AFTER)");
        } else {
            tracing::warn!(%peer, refused, "SMDR connection refused: not in SMDR_ALLOW");
        }
    }
}

/// How long a newcomer from the live connection's address waits for that connection to end
/// (its close already on the way) before it is refused; others are refused at once.
const RECONNECT_GRACE: Duration = Duration::from_millis(500);

/// Accepts PBX connections on `listener`, one at a time. A peer outside `guard.allow` is
/// disconnected at once. While a connection is live, a newcomer is refused (disconnected and
/// counted) unless the live one has sent nothing for `guard.takeover_after` (a socket left
/// half-open by a network break, or a PBX that rebooted): then the old one is closed and the
/// newcomer takes over. A PBX that closes its connection and reconnects at once is accepted:
/// a newcomer from the live peer's address waits a moment for the old connection's end.
pub async fn listen<I: From<Vec<u8>>>(
    listener: TcpListener,
    opts: TcpOptions,
    guard: ListenGuard,
    tx: mpsc::Sender<SourceEvent<I>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut log = RefusalLog::new(Duration::from_secs(10));
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
                    Ok((stream, peer)) if !guard.allows(peer.ip()) => {
                        guard.refused_not_allowed.inc();
                        log.refused(false, peer, None);
                        drop(stream);
                        continue;
                    }
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
        let activity = Activity::new();
        let live = peer.to_string();
        let why = {
            let pumping = pump(stream, opts.read_timeout, &tx, &mut shutdown, &activity);
            tokio::pin!(pumping);
            loop {
                tokio::select! {
                    why = &mut pumping => break why,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, newcomer)) if !guard.allows(newcomer.ip()) => {
                            guard.refused_not_allowed.inc();
                            log.refused(false, newcomer, Some(&live));
                            drop(stream);
                        }
                        Ok((stream, newcomer)) => {
                            let silent = activity.silent_for();
                            if silent >= guard.takeover_after {
                                next = Some((stream, newcomer));
                                break Some(format!(
                                    "silent for {} s: replaced by a new connection from {newcomer}",
                                    silent.as_secs()
                                ));
                            }
                            // A PBX that reconnects (from its own address) closed its old
                            // connection first: that end may be queued behind the newcomer.
                            // Read on for a moment.
                            if newcomer.ip() == peer.ip() {
                                if let Ok(why) =
                                    tokio::time::timeout(RECONNECT_GRACE, &mut pumping).await
                                {
                                    next = Some((stream, newcomer));
                                    break why;
                                }
                            }
                            guard.refused_busy.inc();
                            log.refused(true, newcomer, Some(&live));
                            drop(stream);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &str) -> ListenGuard {
        ListenGuard {
            allow: crate::settings::smdr::parse_allow(allow).unwrap_or_default(),
            takeover_after: Duration::from_secs(300),
            refused_not_allowed: Default::default(),
            refused_busy: Default::default(),
        }
    }

    #[test]
    fn the_allow_list_matches_addresses_networks_and_mapped_ipv4() {
        let ip = |s: &str| {
            s.parse::<std::net::IpAddr>()
                .unwrap_or_else(|_| std::net::IpAddr::from([0; 4]))
        };
        assert!(guard("").allows(ip("203.0.113.9")), "no list: anyone");
        let g = guard("192.0.2.10,10.1.0.0/16");
        assert!(g.allows(ip("192.0.2.10")));
        assert!(g.allows(ip("10.1.200.3")));
        assert!(
            g.allows(ip("::ffff:10.1.0.1")),
            "an IPv4 peer on an IPv6 socket"
        );
        assert!(!g.allows(ip("192.0.2.11")));
        assert!(!g.allows(ip("10.2.0.1")));
        assert!(!g.allows(ip("::1")));
    }
}
