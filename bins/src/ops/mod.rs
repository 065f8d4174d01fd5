//! Operating a relay: its Prometheus [`metrics`] (with the [`faults`] of the disk and the
//! workers), structured [`logging`] (with [`ratelimit`] for floods), the shutdown [`signals`],
//! Sentry ([`sentry`] check-ins, [`sentry_events`] error events and panics), and constant-time
//! compares of secrets ([`secret`]).

pub mod faults;
pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod secret;
pub mod sentry;
pub mod sentry_events;
pub mod signals;
