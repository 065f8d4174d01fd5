//! The one reconnect policy of the sources: after each failed attempt (or lost connection)
//! wait, doubling from a minimum up to a maximum; back to the minimum once the source works
//! again. The delays are [`cdr_sinks::backoff::RetryPolicy::ceiling`] (no jitter, no limit
//! on attempts or age), so the policy is clock-free: the caller sleeps.

use std::time::Duration;

use cdr_sinks::backoff::RetryPolicy;

/// The delays between attempts to reach a source's server.
#[derive(Debug, Clone)]
pub struct Reconnect {
    policy: RetryPolicy,
    /// Failures since the source last worked.
    failures: u32,
}

impl Reconnect {
    /// Delays from `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            policy: RetryPolicy {
                base: min,
                cap: max,
                max_attempts: 0,
                max_age: Duration::ZERO,
            },
            failures: 0,
        }
    }

    /// The source works again: the next failure waits the minimum.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Counts a failure and says how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.policy.ceiling(self.failures)
    }

    /// Waits out the delay after a failure (counted here), or until `stop` changes: `false`
    /// when it did (the caller returns).
    pub async fn wait(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        let delay = self.failed();
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            _ = stop.changed() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn doubles_from_the_minimum_to_the_maximum() {
        // The TCP source's delays: 500 ms doubling to 30 s.
        let mut r = Reconnect::new(Duration::from_millis(500), Duration::from_secs(30));
        let d: Vec<u128> = (0..9).map(|_| ms(r.failed())).collect();
        assert_eq!(
            d,
            [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]
        );
        for _ in 0..1000 {
            r.failed();
        }
        assert_eq!(ms(r.failed()), 30_000, "no overflow after many failures");
    }

    #[test]
    fn back_to_the_minimum_once_it_works() {
        // The database source's: 500 ms doubling to 5 s.
        let mut r = Reconnect::new(Duration::from_millis(500), Duration::from_secs(5));
        assert_eq!(
            (ms(r.failed()), ms(r.failed()), ms(r.failed())),
            (500, 1000, 2000)
        );
        r.succeeded();
        assert_eq!((ms(r.failed()), ms(r.failed())), (500, 1000));
        let d: Vec<u128> = (0..3).map(|_| ms(r.failed())).collect();
        assert_eq!(d, [2000, 4000, 5000]);
    }

    #[test]
    fn the_same_delays_as_doubling_by_hand() {
        // The Redis source's 200 ms to 30 s, against the loop it replaces.
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(30));
        let mut r = Reconnect::new(min, max);
        let mut by_hand = min;
        for _ in 0..20 {
            assert_eq!(r.failed(), by_hand);
            by_hand = (by_hand * 2).min(max);
        }
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait_at_once() {
        let mut r = Reconnect::new(Duration::from_secs(3600), Duration::from_secs(3600));
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let started = std::time::Instant::now();
        let waiting = tokio::spawn(async move { r.wait(&mut rx).await });
        tx.send(true).unwrap();
        assert!(!waiting.await.unwrap(), "stopped, not slept");
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
