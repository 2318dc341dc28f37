//! The one retry schedule of the service: exponential, jittered, capped, bounded in count. Redis
//! operations (`store`), ARM requests (`azure::Arm`), the Entra ID token refresh for Redis and the
//! fault ledger's undo attempts all wait by it, most through `backon`'s `Retryable`
//! (`(|| op()).retry(backoff(..)).when(..)`).
//!
//! A leaf: it imports no other module of the crate, so any module can use it without a cycle.
//! What to retry, and what to log, stays with the caller.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// At most `times` waits (so `times` retries after the first attempt): the n-th (0-based) waits
/// `d = min(min · 2ⁿ, max)` plus a random share of `d`, and never more than `max`. So every wait
/// lies in `[d, min(2d, max)]`: never shorter than the plain exponential schedule, which callers
/// rely on to ride out an outage, and never longer than `max`, which is documented as the longest
/// wait (REDIS_BACKOFF_CAP). Each call starts a new schedule with its own random seed, so clients
/// that failed together do not retry together.
///
/// backon's `with_jitter()` adds its share *after* applying `with_max_delay`, which would let a
/// wait reach almost `2 · max`; the final `min(max)` keeps the cap a cap. The price: once the
/// schedule reaches `max` the waits are exactly `max`, but the clients stay as far apart as their
/// earlier, jittered waits put them.
pub fn backoff(min: Duration, max: Duration, times: usize) -> impl backon::Backoff {
    ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_max_times(times)
        .with_jitter()
        .build()
        .map(move |wait| wait.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_within_the_cap_and_stop_after_times() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(5));
        for _ in 0..200 {
            let waits: Vec<Duration> = backoff(min, max, 5).collect();
            assert_eq!(waits.len(), 5, "{waits:?}");
            for (n, wait) in waits.iter().enumerate() {
                let d = min.saturating_mul(1 << n).min(max);
                assert!(*wait >= d && *wait <= (d * 2).min(max), "wait {n} = {wait:?}, want [{d:?}, {max:?}]");
            }
        }
    }

    #[test]
    fn the_waits_are_jittered() {
        let first_wait = || backoff(Duration::from_secs(1), Duration::from_secs(5), 1).next().unwrap();
        let first: Vec<Duration> = (0..50).map(|_| first_wait()).collect();
        assert!(first.iter().any(|w| *w != first[0]), "50 schedules, one first wait: {:?}", first[0]);
    }

    #[test]
    fn no_times_means_no_retry_and_a_cap_equal_to_the_base_is_exact() {
        assert_eq!(backoff(Duration::from_secs(1), Duration::from_secs(3), 0).next(), None);
        let flat: Vec<Duration> = backoff(Duration::from_millis(1500), Duration::from_millis(1500), 3).collect();
        assert_eq!(flat, [Duration::from_millis(1500); 3]);
    }
}
