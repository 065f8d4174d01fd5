//! The server's connection slots: a total cap, a cap per client address, and which connection
//! gives way when they are full. A connection is *idle* while no request of it is in progress
//! (waiting for its first request's headers, or between keep-alive requests); when a new
//! connection finds the caps reached, the idle connection that has been idle longest (of the
//! same address when that address is at its cap) is shed to make room. Only when every
//! connection is busy does a newcomer wait (total cap) or get refused (address cap). So idle
//! sockets, however many an attacker opens, never keep `/healthz` or `POST /cdr` out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// The connection slots of one server.
#[derive(Debug)]
pub(super) struct Limits {
    inner: Mutex<Inner>,
    freed: Notify,
    max_total: usize,
    max_per_ip: usize,
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Arc<ConnState>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// One connection's state as the slots see it.
#[derive(Debug)]
pub(super) struct ConnState {
    id: u64,
    ip: IpAddr,
    epoch: Instant,
    /// Requests in progress (their responses not yet fully sent).
    busy: AtomicUsize,
    /// When it last became idle (accepted, or its last response sent), in ms since `epoch`.
    idle_since_ms: AtomicU64,
    /// Fired when the connection is shed: it should close.
    shed: Notify,
}

/// What [`Limits::admit`] decided.
pub(super) enum Admit {
    /// Serve it in this slot.
    Yes(Slot),
    /// Every slot is busy: wait for [`Limits::freed`] and ask again.
    Full,
    /// Its address has every slot it may have, all busy: close it.
    Refused,
}

impl Limits {
    pub(super) fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            freed: Notify::new(),
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            epoch: Instant::now(),
        })
    }

    /// A slot for a connection from `ip`, shedding the longest-idle connection when a cap is
    /// reached.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Admit {
        let Ok(mut inner) = self.inner.lock() else {
            return Admit::Refused;
        };
        if inner.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            match oldest_idle(&inner, Some(ip)) {
                Some(id) => shed(&mut inner, id),
                None => return Admit::Refused,
            }
        }
        if inner.conns.len() >= self.max_total {
            match oldest_idle(&inner, None) {
                Some(id) => shed(&mut inner, id),
                None => return Admit::Full,
            }
        }
        inner.next_id += 1;
        let state = Arc::new(ConnState {
            id: inner.next_id,
            ip,
            epoch: self.epoch,
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(ms_since(self.epoch)),
            shed: Notify::new(),
        });
        inner.conns.insert(state.id, state.clone());
        *inner.per_ip.entry(ip).or_default() += 1;
        Admit::Yes(Slot {
            limits: self.clone(),
            state,
        })
    }

    /// Resolves when a slot may have been freed.
    pub(super) async fn freed(&self) {
        self.freed.notified().await;
    }

    fn release(&self, state: &ConnState) {
        if let Ok(mut inner) = self.inner.lock() {
            if inner.conns.remove(&state.id).is_some() {
                forget_ip(&mut inner, state.ip);
            }
        }
        self.freed.notify_one();
    }
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn oldest_idle(inner: &Inner, ip: Option<IpAddr>) -> Option<u64> {
    inner
        .conns
        .values()
        .filter(|c| ip.is_none_or(|ip| c.ip == ip) && c.busy.load(Ordering::Acquire) == 0)
        .min_by_key(|c| (c.idle_since_ms.load(Ordering::Acquire), c.id))
        .map(|c| c.id)
}

fn shed(inner: &mut Inner, id: u64) {
    if let Some(c) = inner.conns.remove(&id) {
        forget_ip(inner, c.ip);
        tracing::debug!(peer = %c.ip, "web server: full, closing an idle connection");
        c.shed.notify_one();
    }
}

fn forget_ip(inner: &mut Inner, ip: IpAddr) {
    if let Some(n) = inner.per_ip.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            inner.per_ip.remove(&ip);
        }
    }
}

/// A connection's slot: freed when dropped (or when the connection is shed).
pub(super) struct Slot {
    limits: Arc<Limits>,
    state: Arc<ConnState>,
}

impl Slot {
    /// The connection's state.
    pub(super) fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.release(&self.state);
    }
}

impl ConnState {
    /// Marks a request in progress until the guard is dropped (with its response's body).
    pub(super) fn start(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// When the next request's headers must be complete, if the connection is idle now.
    pub(super) fn idle_deadline(&self, limit: Duration) -> Option<Instant> {
        (self.busy.load(Ordering::Acquire) == 0).then(|| {
            self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire)) + limit
        })
    }

    /// Resolves when the connection has been shed to make room.
    pub(super) async fn shed(&self) {
        self.shed.notified().await;
    }
}

/// A request in progress (see [`ConnState::start`]).
pub(super) struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(ms_since(self.0.epoch), Ordering::Release);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request [`Busy`] until it has been sent.
pub(super) struct Tracked<B> {
    inner: B,
    busy: Option<Busy>,
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, busy: Busy) -> Self {
        Self {
            inner,
            busy: Some(busy),
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_give_way() {
        let limits = Limits::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let Admit::Yes(first) = limits.admit(a) else {
            panic!("room")
        };
        let busy = first.state().start();
        let Admit::Yes(_second) = limits.admit(a) else {
            panic!("room")
        };
        // `a` at its cap: its idle one is shed, the busy one stays.
        assert!(matches!(limits.admit(a), Admit::Yes(_)));
        let Admit::Yes(_b1) = limits.admit(b) else {
            panic!("room")
        };
        drop(busy);
        let _busy_b = _b1.state().start();
        assert!(matches!(limits.admit(b), Admit::Yes(_)));
    }
}
