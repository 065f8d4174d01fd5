//! Clock-free retry policy: exponential backoff with full jitter, attempt and age limits.

use std::time::Duration;

/// When to try a delivery again, and when to give up.
///
/// Time is passed in as milliseconds since the Unix epoch and randomness as a `u64`, so the policy
/// is a pure function that tests can drive by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first delay (before jitter); doubles with each failed attempt.
    pub base: Duration,
    /// The largest delay (before jitter), and the ceiling of a receiver's `Retry-After`: no
    /// receiver can put a delivery off for longer than this.
    pub cap: Duration,
    /// Attempts after which a delivery is dead-lettered (0 = no limit).
    pub max_attempts: u32,
    /// Age after which a failing delivery is dead-lettered (zero = no limit).
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    /// The SMDR webhook logger's defaults: 30 s doubling to a 1 h cap, 25 attempts; and a week.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(30),
            cap: Duration::from_secs(3600),
            max_attempts: 25,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again at this time (ms since the epoch).
    RetryAt(i64),
    /// Give up: move the delivery to the dead letters.
    DeadLetter,
}

impl RetryPolicy {
    /// The delay ceiling before attempt `attempts + 1`: `base * 2^(attempts-1)`, capped.
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << shift)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// A receiver's `Retry-After`, capped at [`RetryPolicy::cap`]: a receiver may ask for a
    /// longer wait than the backoff's, never for one past the policy's maximum delay (a
    /// `Retry-After: 99999999999` would otherwise put a delivery off for 3,000 years).
    pub fn capped_retry_after(&self, retry_after: Option<Duration>) -> Option<Duration> {
        retry_after.map(|d| d.min(self.cap))
    }

    /// Decides after failed attempt number `attempts` (1 for the first) of a delivery created at
    /// `created_ms`, at `now_ms`. `retry_after` (from the receiver) is a floor for the delay,
    /// itself capped at [`RetryPolicy::cap`] ([`RetryPolicy::capped_retry_after`]).
    /// `random` picks the jittered delay uniformly in `[0, ceiling]` ("full jitter").
    pub fn after_failure(
        &self,
        attempts: u32,
        created_ms: i64,
        now_ms: i64,
        retry_after: Option<Duration>,
        random: u64,
    ) -> RetryDecision {
        if self.max_attempts > 0 && attempts >= self.max_attempts {
            return RetryDecision::DeadLetter;
        }
        let ceiling = duration_ms(self.ceiling(attempts));
        let jittered = if ceiling <= 0 {
            0
        } else {
            (random % (ceiling as u64 + 1)) as i64
        };
        let delay = jittered.max(self.capped_retry_after(retry_after).map_or(0, duration_ms));
        let at = now_ms.saturating_add(delay);
        if self.is_too_old(created_ms, at) {
            return RetryDecision::DeadLetter;
        }
        RetryDecision::RetryAt(at)
    }
}

impl RetryPolicy {
    /// Whether a delivery created at `created_ms` is past the maximum age at `at_ms`.
    pub fn is_too_old(&self, created_ms: i64, at_ms: i64) -> bool {
        !self.max_age.is_zero() && at_ms.saturating_sub(created_ms) > duration_ms(self.max_age)
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let c: Vec<u64> = (1..=9).map(|a| p.ceiling(a).as_secs()).collect();
        assert_eq!(c, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(p.ceiling(500).as_secs(), 3600);
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let p = RetryPolicy::default();
        let now = 1_000_000 * S;
        assert_eq!(
            p.after_failure(1, now, now, None, 0),
            RetryDecision::RetryAt(now)
        );
        assert_eq!(
            p.after_failure(1, now, now, None, 30 * S as u64),
            RetryDecision::RetryAt(now + 30 * S)
        );
        assert_eq!(
            p.after_failure(1, now, now, None, 30 * S as u64 + 1),
            RetryDecision::RetryAt(now)
        );
        for r in [1u64, 77, 12_345, u64::MAX] {
            let RetryDecision::RetryAt(at) = p.after_failure(3, now, now, None, r) else {
                panic!()
            };
            assert!((now..=now + 120 * S).contains(&at));
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        let now = 5 * S;
        assert_eq!(
            p.after_failure(1, now, now, Some(Duration::from_secs(90)), 0),
            RetryDecision::RetryAt(now + 90 * S)
        );
    }

    #[test]
    fn retry_after_is_capped_at_the_maximum_delay() {
        let p = RetryPolicy::default();
        let now = 1_000_000 * S;
        for huge in [
            Duration::from_secs(99_999_999_999),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ] {
            assert_eq!(
                p.after_failure(1, now, now, Some(huge), 0),
                RetryDecision::RetryAt(now + 3600 * S),
                "{huge:?}"
            );
        }
        assert_eq!(
            p.capped_retry_after(Some(Duration::from_secs(10))),
            Some(Duration::from_secs(10))
        );
        // No overflow at the far end of the clock either.
        let unlimited = RetryPolicy {
            max_age: Duration::ZERO,
            ..p
        };
        assert_eq!(
            unlimited.after_failure(1, 0, i64::MAX - 5, Some(Duration::MAX), u64::MAX),
            RetryDecision::RetryAt(i64::MAX)
        );
    }

    #[test]
    fn gives_up_after_max_attempts_or_max_age() {
        let p = RetryPolicy {
            max_attempts: 3,
            max_age: Duration::from_secs(3600),
            ..RetryPolicy::default()
        };
        let t0 = 0;
        assert!(matches!(
            p.after_failure(2, t0, t0, None, 0),
            RetryDecision::RetryAt(_)
        ));
        assert_eq!(
            p.after_failure(3, t0, t0, None, 0),
            RetryDecision::DeadLetter
        );
        assert_eq!(
            p.after_failure(1, t0, 3600 * S + 1, None, 0),
            RetryDecision::DeadLetter
        );
        let unlimited = RetryPolicy {
            max_attempts: 0,
            max_age: Duration::ZERO,
            ..p
        };
        assert!(matches!(
            unlimited.after_failure(10_000, t0, i64::MAX / 2, None, 9),
            RetryDecision::RetryAt(_)
        ));
    }
}
