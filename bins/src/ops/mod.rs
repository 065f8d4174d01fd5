//! Operating a relay: its Prometheus [`metrics`], structured [`logging`] (with [`ratelimit`]
//! for floods), the shutdown [`signals`], and Sentry ([`sentry`] check-ins, [`sentry_events`]
//! error events).

pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod sentry;
pub mod sentry_events;
pub mod signals;
