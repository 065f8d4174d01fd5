//! The dialler's CDR list in Redis as a source, drained without ever losing an item.
//!
//! Each item is moved atomically from the dialler's list to a processing list, handed to the run
//! loop, and removed from the processing list (`LREM`) only after the run loop committed it to the
//! outbox. A batch is moved in one round trip: `BLMOVE` waits for the first item when the list is
//! empty, then one small Lua script ([`MOVE_SCRIPT`], run atomically by Redis) moves up to a batch
//! of what is already waiting, exactly as that many `LMOVE`s would (same order, same lists), and
//! returns the items. A server that refuses scripts (an ACL without `EVAL`, `EVAL` renamed away)
//! gets the same moves as pipelined `LMOVE`s. Several batches are moved while earlier ones are
//! being committed (four), so the run loop can group them into one commit. At every
//! (re)connect the items a crash or a lost connection left in the processing list are handed over
//! first: their calls are already in the outbox or not, and the outbox ignores a call id it has, so
//! the worst case is a reject kept twice.

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

/// Batches handed to the run loop and not yet removed from the processing list: the next batches
/// are moved while earlier ones are being committed, and the run loop commits what is waiting
/// together (up to its own limit of reads per commit).
const IN_FLIGHT: usize = 4;

/// Moves up to `ARGV[1]` items from the tail of `KEYS[1]` (the dialler's list) to the head of
/// `KEYS[2]` (the processing list) and returns them, oldest first: what that many
/// `LMOVE KEYS[1] KEYS[2] RIGHT LEFT` would do and return, in one atomic step (`LRANGE` of the
/// tail, `LTRIM` it off, `LPUSH` it oldest first, in pushes of at most 1,000 values).
pub const MOVE_SCRIPT: &str = r"
local items = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1)
local n = #items
if n == 0 then return items end
redis.call('LTRIM', KEYS[1], 0, -n - 1)
local oldest_first = {}
for i = n, 1, -1 do oldest_first[#oldest_first + 1] = items[i] end
for i = 1, n, 1000 do
  redis.call('LPUSH', KEYS[2], unpack(oldest_first, i, math.min(i + 999, n)))
end
return oldest_first
";

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
    let mut mover = Mover { scripted: true };
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
            match mover.take(cfg, conn, more).await {
                Ok(moved) => items.extend(moved),
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

/// How batches are moved: by [`MOVE_SCRIPT`] until the server refuses scripts, then by pipelined
/// `LMOVE`s (until the next connection).
struct Mover {
    scripted: bool,
}

impl Mover {
    /// Moves up to `n` items from the dialler's list to the processing list; returns them,
    /// oldest first.
    async fn take(
        &mut self,
        cfg: &RedisListSource,
        conn: &mut redis::aio::MultiplexedConnection,
        n: usize,
    ) -> redis::RedisResult<Vec<Vec<u8>>> {
        if self.scripted {
            let mut eval = redis::cmd("EVAL");
            eval.arg(MOVE_SCRIPT)
                .arg(2)
                .arg(&cfg.key)
                .arg(&cfg.processing)
                .arg(n);
            match eval.query_async::<Vec<Vec<u8>>>(conn).await {
                Ok(items) => return Ok(items),
                Err(e) if refuses_scripts(&e) => {
                    tracing::warn!(error = %e, "the dialler's Redis refuses scripts: moving items with one LMOVE each");
                    self.scripted = false;
                }
                Err(e) => return Err(e),
            }
        }
        let mut pipe = redis::pipe();
        for _ in 0..n {
            pipe.cmd("LMOVE")
                .arg(&cfg.key)
                .arg(&cfg.processing)
                .arg("RIGHT")
                .arg("LEFT");
        }
        let moved = pipe.query_async::<Vec<Option<Vec<u8>>>>(conn).await?;
        Ok(moved.into_iter().flatten().collect())
    }
}

/// Whether an error says the server will not run our script (as opposed to a lost connection,
/// or an error `LMOVE` would meet too, such as a key that is not a list): an ACL without
/// `EVAL` (`NOPERM`), or `EVAL` renamed away (`unknown command`).
fn refuses_scripts(e: &redis::RedisError) -> bool {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
        return false;
    }
    let code = e.code().unwrap_or_default();
    let detail = e.detail().unwrap_or_default().to_ascii_lowercase();
    code == "NOPERM" || detail.contains("unknown command")
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
