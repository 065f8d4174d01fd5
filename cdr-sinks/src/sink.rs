//! The extension point: the [`Sink`] trait, the [`Outgoing`] items it delivers, how it wants to be
//! driven ([`Drive`]) and [`BoxSink`], its type-erased form for a list of different sinks.
//!
//! A sink owns its protocol only: how to put a batch of calls on the wire and what each answer
//! means, as a [`SinkError`] that says whether a retry makes sense. The delivery engine
//! ([`crate::engine::run_worker`]) owns the rest: it takes due deliveries from the outbox, hands
//! them to the sink, and records what became of each (retries with backoff and `Retry-After`,
//! dead letters, pausing a sink that refuses us, counters).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use crate::outbox::Pending;
use crate::{Call, SinkError};

/// Deliveries per batch of the built-in batched sinks (Redis list, HTTP CDR): one request and one
/// outcome commit for this many calls.
pub(crate) const BATCHED: usize = 2048;

/// How the engine hands deliveries to a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Drive {
    /// One item per [`Sink::deliver`], at most `concurrency` at once (with 1, one after
    /// another in the outbox's order). Each item's failure is its own: a retryable one is
    /// retried with the item's backoff, an [unreachable](SinkError::Unreachable) or
    /// [paused](SinkError::Paused) sink is blocked (no new deliveries start) and then probed with
    /// one delivery. The webhook sink is driven this way.
    Each {
        /// Deliveries in flight at once (0 counts as 1).
        concurrency: usize,
    },
    /// A round's due items, up to `max`, in one [`Sink::deliver`], in the outbox's order; one
    /// batch at a time. An error for the whole batch that a retry may fix keeps the order: it
    /// blocks the sink (its `Retry-After` or the policy's backoff), every item stays due at the
    /// time it was due, and the next batch, after a probe with one delivery, starts again at the
    /// oldest call ([`SinkError::Unreachable`] and [`SinkError::Paused`] use up no attempts,
    /// [`SinkError::Retryable`] and [`SinkError::Io`] count one for every item); an error no
    /// retry fixes dead-letters the batch. Per-item results are handled as under [`Drive::Each`]
    /// (a retried item may then go out after later ones). The Redis list, HTTP-CDR, JSONL, SQL
    /// and NATS sinks are driven this way.
    Batch {
        /// The most items in one batch (0 counts as 1).
        max: usize,
    },
}

impl Default for Drive {
    /// One item at a time, in order.
    fn default() -> Self {
        Self::Each { concurrency: 1 }
    }
}

/// One delivery handed to a sink: a committed call (or progress record) for this sink, as the
/// outbox stored it.
///
/// [`Outgoing::call`] decodes the stored JSON on first use and keeps the result, so a sink that
/// needs the [`Call`] gets it without parsing JSON itself, and a sink that sends the stored body
/// as-is ([`Outgoing::body`]) pays nothing for it.
#[derive(Debug)]
pub struct Outgoing {
    pending: Pending,
    call: OnceLock<Result<Call, serde_json::Error>>,
}

impl Outgoing {
    /// An item for a delivery taken from the outbox ([`crate::outbox::Outbox::due`]).
    pub fn new(pending: Pending) -> Self {
        Self {
            pending,
            call: OnceLock::new(),
        }
    }

    /// An item whose [`Call`] is already at hand (it must be the call `pending.body` encodes):
    /// [`Outgoing::call`] returns it without decoding.
    pub fn with_call(pending: Pending, call: Call) -> Self {
        Self {
            pending,
            call: OnceLock::from(Ok(call)),
        }
    }

    /// The delivery's stable id: the call's [`Call::id`] (a progress record's
    /// [`crate::outbox::update_key`]), the same on every retry, so a receiver can drop
    /// duplicates.
    pub fn id(&self) -> &str {
        &self.pending.call_id
    }

    /// The call's JSON as the outbox stored it (`serde_json::to_vec(&call)`).
    pub fn body(&self) -> &[u8] {
        &self.pending.body
    }

    /// The delivery's arrival number in the outbox, which grows with every commit and is never
    /// reused ([`Pending::seq`]).
    pub fn seq(&self) -> i64 {
        self.pending.seq
    }

    /// Attempts made before this one.
    pub fn attempts(&self) -> u32 {
        self.pending.attempts
    }

    /// The call, decoded from [`Outgoing::body`] on the first call and kept. An error means the
    /// stored body is not a call's JSON: no retry can send it.
    pub fn call(&self) -> Result<&Call, &serde_json::Error> {
        self.call
            .get_or_init(|| serde_json::from_slice(&self.pending.body))
            .as_ref()
    }

    /// The outbox row this item came from.
    pub fn pending(&self) -> &Pending {
        &self.pending
    }

    /// The outbox row back.
    pub fn into_pending(self) -> Pending {
        self.pending
    }
}

impl From<Pending> for Outgoing {
    fn from(pending: Pending) -> Self {
        Self::new(pending)
    }
}

/// What a [`Sink::deliver`] returns: one result per item, in the items' order, or one error for
/// the whole batch.
pub type BatchResult<E> = Result<Vec<Result<(), E>>, E>;

/// Somewhere completed calls go: a webhook, a Redis list, a file, a database, ...
///
/// A sink delivers batches of [`Outgoing`] items and says what became of them; the engine
/// ([`crate::engine::run_worker`]) decides what happens next from the [`SinkError`]s it gets:
/// retry later (counted as an attempt or not), block the sink for a while, or keep the item as a
/// dead letter. A sink never retries, sleeps or drops an item on its own.
///
/// Implement it with `async fn deliver` (the future must be `Send`, as the engine runs sinks on a
/// multi-threaded runtime). The shape follows ripgrep's `grep_searcher::Sink`: an associated error
/// type, and default methods for what most sinks leave alone.
///
/// ```
/// use cdr_sinks::{BatchResult, Drive, Outgoing, Sink, SinkError};
///
/// /// Counts the seconds of the calls it is given.
/// #[derive(Default)]
/// struct Seconds(std::sync::atomic::AtomicU64);
///
/// impl Sink for Seconds {
///     type Error = SinkError;
///
///     fn drive(&self) -> Drive {
///         Drive::Batch { max: 100 }
///     }
///
///     async fn deliver(&self, batch: &[Outgoing]) -> BatchResult<SinkError> {
///         Ok(batch
///             .iter()
///             .map(|item| {
///                 let call = item
///                     .call()
///                     .map_err(|e| SinkError::Rejected(format!("not a call: {e}")))?;
///                 self.0.fetch_add(u64::from(call.duration), std::sync::atomic::Ordering::Relaxed);
///                 Ok(())
///             })
///             .collect())
///     }
/// }
/// # let _ = Seconds::default();
/// ```
pub trait Sink: Send + Sync {
    /// The sink's own error type; the engine turns it into a [`SinkError`] to decide what to do
    /// ([`SinkError::is_retryable`] and the variants' docs). Most sinks use [`SinkError`].
    type Error: Into<SinkError> + Send;

    /// How the engine should hand this sink its deliveries (asked at every round). By default,
    /// one at a time, in order.
    fn drive(&self) -> Drive {
        Drive::default()
    }

    /// Delivers a batch (one item under [`Drive::Each`]), in order.
    ///
    /// Returns either one result per item, in the items' order (an item without a result is
    /// retried as a counted attempt; results beyond the items are ignored), or one error for the
    /// whole batch, when the batch was taken or refused as a whole (see [`Drive::Batch`] for
    /// what the engine does then). An item reported delivered is never sent again; any other
    /// item may be, so a receiver should drop duplicates by [`Outgoing::id`].
    fn deliver(&self, batch: &[Outgoing]) -> impl Future<Output = BatchResult<Self::Error>> + Send;
}

/// A shared sink (the engine itself shares the sink of a worker between its deliveries).
impl<S: Sink> Sink for Arc<S> {
    type Error = S::Error;

    fn drive(&self) -> Drive {
        (**self).drive()
    }

    fn deliver(&self, batch: &[Outgoing]) -> impl Future<Output = BatchResult<Self::Error>> + Send {
        (**self).deliver(batch)
    }
}

/// The boxed future of an erased sink.
type BoxFuture<'a> = Pin<Box<dyn Future<Output = BatchResult<SinkError>> + Send + 'a>>;

/// [`Sink`] with its future boxed and its error converted, so it can sit behind `dyn`.
trait ErasedSink: Send + Sync {
    fn erased_drive(&self) -> Drive;
    fn erased_deliver<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a>;
}

impl<S: Sink> ErasedSink for S {
    fn erased_drive(&self) -> Drive {
        self.drive()
    }

    fn erased_deliver<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a> {
        Box::pin(async move {
            match self.deliver(batch).await {
                Ok(results) => Ok(results.into_iter().map(|r| r.map_err(Into::into)).collect()),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// Any [`Sink`], boxed, with [`SinkError`] as its error: for a list of sinks of different types
/// (the relays build theirs from configuration). It costs one allocation per batch.
pub struct BoxSink {
    inner: Box<dyn ErasedSink>,
    type_name: &'static str,
}

impl BoxSink {
    /// Boxes `sink`.
    pub fn new<S: Sink + 'static>(sink: S) -> Self {
        Self {
            inner: Box::new(sink),
            type_name: std::any::type_name::<S>(),
        }
    }
}

impl fmt::Debug for BoxSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BoxSink").field(&self.type_name).finish()
    }
}

impl Sink for BoxSink {
    type Error = SinkError;

    fn drive(&self) -> Drive {
        self.inner.erased_drive()
    }

    async fn deliver(&self, batch: &[Outgoing]) -> BatchResult<SinkError> {
        self.inner.erased_deliver(batch).await
    }
}
