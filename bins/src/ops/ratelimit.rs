//! Rate-limited logging: of a kind of event that can come in floods (bad input lines, refused
//! connections), the first few of each interval are logged one by one and the rest counted, then
//! reported in one summary line ("1234 more bad lines in the last 60 s").
//!
//! ```
//! use std::time::{Duration, Instant};
//! use cdr_relay::ops::ratelimit::LogLimiter;
//!
//! static BAD: LogLimiter = LogLimiter::new(10, Duration::from_secs(60));
//! let now = Instant::now();
//! let d = BAD.check(now);
//! if let Some(summary) = d.summary {
//!     summary.log("bad lines");
//! }
//! if d.log {
//!     tracing::warn!("a bad line");
//! }
//! ```

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Logs the first `burst` events of each `interval` and counts the rest. Cheap (one mutex),
/// usable from a `static`.
#[derive(Debug)]
pub struct LogLimiter {
    burst: u32,
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the current interval began (its first event).
    start: Option<Instant>,
    /// Events logged in it.
    logged: u32,
    /// Events not logged in it.
    suppressed: u64,
}

/// Events that were counted instead of logged, over `interval`: log them with [`Summary::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// How many.
    pub suppressed: u64,
    /// Over how long (from the interval's first event to its end).
    pub interval: Duration,
}

impl Summary {
    /// Logs `"{suppressed} more {what} in the last {interval} s"` as a warning.
    pub fn log(&self, what: &str) {
        tracing::warn!(
            suppressed = self.suppressed,
            "{} more {what} in the last {} s (not logged one by one)",
            self.suppressed,
            self.interval.as_secs().max(1)
        );
    }
}

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Log this event.
    pub log: bool,
    /// An interval just over had events that were not logged: report them first.
    pub summary: Option<Summary>,
}

impl LogLimiter {
    /// Logs up to `burst` events (at least 1) per `interval`.
    pub const fn new(burst: u32, interval: Duration) -> Self {
        Self {
            burst: if burst == 0 { 1 } else { burst },
            interval,
            state: Mutex::new(State {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// One event at `now`: whether to log it, and the summary of an interval that ended.
    pub fn check(&self, now: Instant) -> Decision {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let summary = self.roll(&mut s, now);
        if s.start.is_none() {
            s.start = Some(now);
        }
        let log = s.logged < self.burst;
        if log {
            s.logged += 1;
        } else {
            s.suppressed = s.suppressed.saturating_add(1);
        }
        Decision { log, summary }
    }

    /// The summary of an interval that is over by `now`, if events were counted in it (to call
    /// now and then, so that the last flood is reported even when no event follows it).
    pub fn flush(&self, now: Instant) -> Option<Summary> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.roll(&mut s, now)
    }

    /// The summary of the current interval whatever its age, if events were counted in it (at
    /// the end of a run: the flood before it is reported); a new interval begins.
    pub fn take(&self, now: Instant) -> Option<Summary> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let start = s.start.take()?;
        s.logged = 0;
        let suppressed = std::mem::take(&mut s.suppressed);
        (suppressed > 0).then_some(Summary {
            suppressed,
            interval: now.saturating_duration_since(start).min(self.interval),
        })
    }

    /// Ends the current interval if it is over by `now`; its summary if it counted any.
    fn roll(&self, s: &mut State, now: Instant) -> Option<Summary> {
        let start = s.start?;
        if now.saturating_duration_since(start) < self.interval {
            return None;
        }
        let suppressed = std::mem::take(&mut s.suppressed);
        s.start = None;
        s.logged = 0;
        (suppressed > 0).then_some(Summary {
            suppressed,
            interval: self.interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_of_each_interval_and_counts_the_rest() {
        let l = LogLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let logged: Vec<bool> = (0..10)
            .map(|i| l.check(t0 + Duration::from_secs(i)).log)
            .collect();
        assert_eq!(
            logged,
            [
                true, true, true, false, false, false, false, false, false, false
            ]
        );
        assert_eq!(l.flush(t0 + Duration::from_secs(59)), None, "not over yet");
        // The next event after the interval is logged, with the summary of the last one.
        let d = l.check(t0 + Duration::from_secs(61));
        assert!(d.log);
        assert_eq!(
            d.summary,
            Some(Summary {
                suppressed: 7,
                interval: Duration::from_secs(60)
            })
        );
        for i in 0..5 {
            l.check(t0 + Duration::from_secs(62 + i));
        }
        assert_eq!(
            l.flush(t0 + Duration::from_secs(200)).map(|s| s.suppressed),
            Some(3)
        );
        assert_eq!(
            l.flush(t0 + Duration::from_secs(400)),
            None,
            "reported once"
        );
        let d = l.check(t0 + Duration::from_secs(401));
        assert_eq!((d.log, d.summary), (true, None));
    }

    #[test]
    fn a_quiet_interval_has_no_summary() {
        let l = LogLimiter::new(5, Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(l.check(t0 + Duration::from_millis(i)).log);
        }
        assert_eq!(l.flush(t0 + Duration::from_secs(2)), None);
    }

    #[test]
    fn take_reports_the_interval_so_far() {
        let l = LogLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..4 {
            l.check(t0 + Duration::from_secs(i));
        }
        assert_eq!(
            l.take(t0 + Duration::from_secs(10)),
            Some(Summary {
                suppressed: 3,
                interval: Duration::from_secs(10)
            })
        );
        assert_eq!(l.take(t0 + Duration::from_secs(11)), None);
        assert!(l.check(t0 + Duration::from_secs(12)).log, "a new interval");
    }
}
