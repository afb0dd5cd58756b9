//! The retry policy for transient failures: how many attempts, and the exponential backoff
//! between them. Pure arithmetic; the consumer turns the delays into delay queues.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means never retry.
    pub max_attempts: u32,
    /// Delay before the second attempt; each later one doubles it ...
    pub base_delay_ms: u64,
    /// ... up to this.
    pub max_delay_ms: u64,
    /// Each delay is drawn uniformly within +/- this fraction of itself (0 to 0.5), so that
    /// jobs that failed together do not come back together.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, base_delay_ms: 1000, max_delay_ms: 60_000, jitter: 0.2 }
    }
}

impl RetryPolicy {
    pub fn check(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.base_delay_ms == 0 || self.max_delay_ms < self.base_delay_ms {
            return Err("need 0 < base_delay_ms <= max_delay_ms".into());
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(format!("jitter must be between 0 and 0.5, got {}", self.jitter));
        }
        Ok(())
    }

    /// Whether a job whose attempt number `attempt` (from 0) just failed transiently gets
    /// another attempt.
    pub fn should_retry(&self, attempt: u32) -> bool {
        attempt.saturating_add(1) < self.max_attempts
    }

    /// The nominal delay before attempt `next` (1 for the first retry).
    pub fn nominal_delay(&self, next: u32) -> Duration {
        let doublings = next.saturating_sub(1).min(63);
        let ms = self.base_delay_ms.saturating_mul(1u64 << doublings).min(self.max_delay_ms);
        Duration::from_millis(ms)
    }

    /// Every distinct nominal delay this policy can use: one delay queue each.
    pub fn tiers(&self) -> Vec<Duration> {
        let mut tiers: Vec<Duration> = (1..self.max_attempts).map(|n| self.nominal_delay(n)).collect();
        tiers.dedup();
        tiers
    }

    /// `nominal` moved by `unit` (uniform in [0, 1)) within the jitter band.
    pub fn jittered(&self, nominal: Duration, unit: f64) -> Duration {
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64(nominal.as_secs_f64() * factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 6, base_delay_ms: 100, max_delay_ms: 1000, jitter: 0.2 }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = policy();
        let ms: Vec<u128> = (1..6).map(|n| p.nominal_delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000]);
        assert_eq!(p.tiers().len(), 5);
        assert_eq!(p.nominal_delay(200).as_millis(), 1000, "no overflow");
    }

    #[test]
    fn attempts_are_counted_from_zero() {
        let p = RetryPolicy { max_attempts: 3, ..policy() };
        assert!(p.should_retry(0) && p.should_retry(1));
        assert!(!p.should_retry(2));
        assert!(!RetryPolicy { max_attempts: 1, ..policy() }.should_retry(0));
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let p = policy();
        let d = Duration::from_millis(1000);
        assert_eq!(p.jittered(d, 0.0).as_millis(), 800);
        assert_eq!(p.jittered(d, 0.5).as_millis(), 1000);
        assert!(p.jittered(d, 0.999_999).as_millis() <= 1200);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(RetryPolicy { max_attempts: 0, ..policy() }.check().is_err());
        assert!(RetryPolicy { jitter: 0.9, ..policy() }.check().is_err());
        assert!(RetryPolicy { base_delay_ms: 10_000, ..policy() }.check().is_err());
        assert!(policy().check().is_ok());
    }
}
