//! Response-time histogram that serializes and merges (reports from N machines add up).
//!
//! The same log-linear buckets goose uses (64 per power of two, exact below 128 µs, at most
//! 0.8 % from any time it holds), keyed by each bucket's lowest time, so goose's own timing data
//! converts bucket for bucket.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

const SUB_BITS: u32 = 6;
const EXACT: u64 = 1 << (SUB_BITS + 1);

fn width_bits(us: u64) -> u32 {
    if us < EXACT { 0 } else { 63 - us.leading_zeros() - SUB_BITS }
}

fn floor(us: u64) -> u64 {
    let bits = width_bits(us);
    (us >> bits) << bits
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Bucket's lowest time in µs → count.
    pub buckets: BTreeMap<u64, u64>,
    pub count: u64,
    pub min_us: u64,
    pub max_us: u64,
    pub total_us: u64,
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        *self.buckets.entry(floor(us)).or_default() += 1;
        self.min_us = if self.count == 0 { us } else { self.min_us.min(us) };
        self.max_us = self.max_us.max(us);
        self.count += 1;
        self.total_us += us;
    }

    /// From goose's timing data (same bucket keys).
    pub fn from_goose(t: &goose::metrics::GooseRequestMetricTimingData) -> Self {
        Self {
            buckets: t.times_us.iter().map(|(&b, &c)| (b, c as u64)).collect(),
            count: t.counter as u64,
            min_us: t.minimum_time_us,
            max_us: t.maximum_time_us,
            total_us: t.total_time_us,
        }
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        for (b, c) in &other.buckets {
            *self.buckets.entry(*b).or_default() += c;
        }
        self.min_us = if self.count == 0 { other.min_us } else { self.min_us.min(other.min_us) };
        self.max_us = self.max_us.max(other.max_us);
        self.count += other.count;
        self.total_us += other.total_us;
    }

    /// The time `p` (0–1) of the requests finished within, in ms: the middle of the bucket that
    /// holds that rank, kept between the fastest and the slowest. 0 without samples.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        // goose's rule, so both agree: the rounded rank; the first and last ranks are exact.
        let rank = (self.count as f64 * p).round() as u64;
        if rank >= self.count {
            return ms(self.max_us);
        }
        if rank <= 1 {
            return ms(self.min_us);
        }
        let mut seen = 0;
        let mut us = self.max_us;
        for (&b, &c) in &self.buckets {
            seen += c;
            if seen >= rank {
                us = b + ((1u64 << width_bits(b)) >> 1);
                break;
            }
        }
        ms(us.clamp(self.min_us, self.max_us))
    }

    pub fn mean_ms(&self) -> f64 {
        if self.count == 0 { 0.0 } else { ms(self.total_us) / self.count as f64 }
    }

    pub fn max_ms(&self) -> f64 {
        ms(self.max_us)
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_a_bucket_and_merge_adds_up() {
        let mut a = Histogram::default();
        for us in 1..=1000 {
            a.record(us * 100); // 0.1 ms .. 100 ms
        }
        assert!((a.percentile_ms(0.5) - 50.0).abs() < 0.5, "{}", a.percentile_ms(0.5));
        assert!((a.percentile_ms(0.99) - 99.0).abs() < 1.0, "{}", a.percentile_ms(0.99));
        assert_eq!(a.percentile_ms(1.0), 100.0);
        let mut b = Histogram::default();
        b.record(5_000_000);
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.count, 1001);
        assert_eq!(m.max_ms(), 5000.0);
        assert_eq!(m.min_us, 100);
        assert_eq!(Histogram::default().percentile_ms(0.5), 0.0);
    }
}
