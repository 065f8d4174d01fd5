//! The dialler's CDR list in Redis as a source, drained without ever losing an item.
//!
//! Each item is moved atomically from the dialler's list to a processing list (`BLMOVE`, then
//! `LMOVE` for whatever else is already waiting, up to a batch, in one round trip), handed to the
//! run loop, and removed from the processing list (`LREM`) only after the run loop committed it
//! to the outbox. The next batch is moved while one is being committed (two in flight). At every (re)connect the items a crash or a lost connection left in the
//! processing list are handed over first: their calls are already in the outbox or not, and the
//! outbox ignores a call id it has, so the worst case is a reject kept twice.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use cdr_sinks::redis_list::RedisEndpoint;
use redis::AsyncCommands as _;
use tokio::sync::{mpsc, oneshot, watch};

use call_assembler::feed::DiallerInput;

use super::reconnect::Reconnect;
use super::tcp::SourceEvent;

/// Where `list-relay` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisListSource {
    /// The server.
    pub url: String,
    /// The dialler's list.
    pub key: String,
    /// The processing list.
    pub processing: String,
    /// Items moved and committed at once.
    pub batch: usize,
    /// Extra trusted CA certificates (PEM) for `rediss://`.
    pub ca_file: Option<PathBuf>,
}

/// How long one `BLMOVE` waits for an item before checking for shutdown.
const BLOCK: f64 = 1.0;

/// The first pause before connecting again; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);

/// The longest pause between attempts to reach the dialler's Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Time allowed to connect (TCP, TLS, `AUTH`, `SELECT`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Batches handed to the run loop and not yet removed from the processing list: the next batch
/// is moved while the previous one is being committed.
const IN_FLIGHT: usize = 2;

enum Stop {
    /// Shutdown, or the run loop is gone.
    Done,
    /// The connection failed.
    Failed(String),
}

/// Drains `cfg.key` into the run loop until `shutdown`, reconnecting with capped backoff.
pub async fn redis_list(
    cfg: RedisListSource,
    tx: mpsc::Sender<SourceEvent<DiallerInput>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let endpoint = match RedisEndpoint::parse(&cfg.url, cfg.ca_file.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "invalid DIALLER_REDIS_URL");
            return;
        }
    };
    let mut reconnect = Reconnect::new(MIN_BACKOFF, MAX_BACKOFF);
    while !*shutdown.borrow() {
        let conn = tokio::select! {
            c = endpoint.connect(CONNECT_TIMEOUT, &cfg.key) => c,
            _ = shutdown.changed() => return,
        };
        match conn {
            Ok(mut live) => {
                let conn = live.con();
                tracing::info!(list = %cfg.key, "connected to the dialler's Redis");
                reconnect.succeeded();
                if tx
                    .send(SourceEvent::Connected(cfg.key.clone()))
                    .await
                    .is_err()
                {
                    return;
                }
                match drain(&cfg, conn, &tx, &mut shutdown).await {
                    Stop::Done => return,
                    Stop::Failed(why) => {
                        tracing::warn!(error = %why, "dialler Redis connection lost");
                        if tx.send(SourceEvent::Disconnected(why)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect to the dialler's Redis"),
        }
        if !reconnect.wait(&mut shutdown).await {
            return;
        }
    }
}

async fn drain(
    cfg: &RedisListSource,
    conn: &mut redis::aio::MultiplexedConnection,
    tx: &mpsc::Sender<SourceEvent<DiallerInput>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Stop {
    let failed = |e: redis::RedisError| Stop::Failed(e.to_string());
    // Items left by a crash or a lost connection: oldest (rightmost) first.
    let left: Vec<Vec<u8>> = match conn.lrange(&cfg.processing, 0, -1).await {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    if !left.is_empty() {
        tracing::info!(
            items = left.len(),
            "committing items left in the processing list"
        );
        let items: Vec<Vec<u8>> = left.into_iter().rev().collect();
        match hand_over(cfg, tx, items).await {
            Ok(f) => inflight.push_back(f),
            Err(stop) => return stop,
        }
    }
    loop {
        if inflight.len() >= IN_FLIGHT {
            if let Some(stop) = settle(conn, inflight.pop_front()).await {
                return stop;
            }
        }
        if *shutdown.borrow() {
            // The run loop commits what it was handed before it stops: settle that.
            while let Some(f) = inflight.pop_front() {
                if let Some(stop) = settle(conn, Some(f)).await {
                    return stop;
                }
            }
            return Stop::Done;
        }
        let mut items = Vec::new();
        if inflight.is_empty() {
            // Nothing pending: wait for the dialler.
            let mut blmove = redis::cmd("BLMOVE");
            blmove
                .arg(&cfg.key)
                .arg(&cfg.processing)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(BLOCK);
            let first: redis::RedisResult<Option<Vec<u8>>> = tokio::select! {
                r = blmove.query_async(conn) => r,
                _ = shutdown.changed() => continue,
            };
            match first {
                Ok(Some(item)) => items.push(item),
                Ok(None) => continue,
                Err(e) => return failed(e),
            }
        }
        let more = cfg.batch.saturating_sub(items.len());
        if more > 0 {
            let mut pipe = redis::pipe();
            for _ in 0..more {
                pipe.cmd("LMOVE")
                    .arg(&cfg.key)
                    .arg(&cfg.processing)
                    .arg("RIGHT")
                    .arg("LEFT");
            }
            match pipe.query_async::<Vec<Option<Vec<u8>>>>(conn).await {
                Ok(moved) => items.extend(moved.into_iter().flatten()),
                Err(e) => return failed(e),
            }
        }
        if items.is_empty() {
            // The list ran dry while a batch is being committed: finish that one first.
            if let Some(stop) = settle(conn, inflight.pop_front()).await {
                return stop;
            }
            continue;
        }
        match hand_over(cfg, tx, items).await {
            Ok(f) => inflight.push_back(f),
            Err(stop) => return stop,
        }
    }
}

/// A batch handed to the run loop, not yet removed from the processing list.
struct InFlight {
    committed: oneshot::Receiver<()>,
    remove: redis::Pipeline,
}

/// Hands `items` to the run loop (acknowledged after their commit).
async fn hand_over(
    cfg: &RedisListSource,
    tx: &mpsc::Sender<SourceEvent<DiallerInput>>,
    items: Vec<Vec<u8>>,
) -> Result<InFlight, Stop> {
    let (ack, committed) = oneshot::channel();
    let mut remove = redis::pipe();
    for item in &items {
        remove
            .cmd("LREM")
            .arg(&cfg.processing)
            .arg(-1)
            .arg(item)
            .ignore();
    }
    tx.send(SourceEvent::Acked(DiallerInput::Items(items), ack))
        .await
        .map_err(|_| Stop::Done)?;
    Ok(InFlight { committed, remove })
}

/// Waits for a batch's commit, then removes its items from the processing list. `None` when
/// all went well (or there was nothing to settle).
async fn settle(
    conn: &mut redis::aio::MultiplexedConnection,
    batch: Option<InFlight>,
) -> Option<Stop> {
    let batch = batch?;
    // No ack means the run loop failed: the items stay in the processing list for the next
    // start.
    if batch.committed.await.is_err() {
        return Some(Stop::Done);
    }
    match batch.remove.query_async::<()>(conn).await {
        Ok(()) => None,
        Err(e) => Some(Stop::Failed(e.to_string())),
    }
}
