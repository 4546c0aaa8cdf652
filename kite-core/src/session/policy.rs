//! [`ReconnectPolicy`]: when a dropped client dials again, and when it gives up.

use std::time::Duration;

/// Exponential backoff between reconnection attempts.
///
/// The delay before attempt `n` (1-based) is `initial_delay × multiplier^(n-1)`, capped at
/// `max_delay`, then spread by `±jitter` (a fraction: 0.5 gives 50 % to 150 %) so that many
/// clients cut off at once do not all dial back at the same instant. After `max_attempts`
/// failed attempts in a row the session gives up; `None` dials forever.
///
/// The two originals' parameters are [`ReconnectPolicy::go`] (the default, on native and wasm
/// alike) and [`ReconnectPolicy::kite_js`].
///
/// ```
/// use std::time::Duration;
/// use kite_core::session::ReconnectPolicy;
///
/// let p = ReconnectPolicy { jitter: 0.0, ..ReconnectPolicy::go() };
/// assert_eq!(p.delay(1, 0.5), Some(Duration::from_millis(500)));
/// assert_eq!(p.delay(2, 0.5), Some(Duration::from_millis(750)));
/// assert_eq!(p.delay(100, 0.5), Some(Duration::from_secs(60)));
/// assert_eq!(ReconnectPolicy::kite_js().delay(51, 0.5), None);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// The delay before the first attempt.
    pub initial_delay: Duration,
    /// How much each delay grows over the one before.
    pub multiplier: f64,
    /// The spread of each delay, as a fraction of it (0 for none, at most 1).
    pub jitter: f64,
    /// The longest delay.
    pub max_delay: Duration,
    /// How many failed attempts in a row before giving up (`None`: never give up).
    pub max_attempts: Option<u32>,
}

impl ReconnectPolicy {
    /// Go kite's: 500 ms, ×1.5, ±50 %, at most 60 s, forever.
    pub fn go() -> ReconnectPolicy {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(500),
            multiplier: 1.5,
            jitter: 0.5,
            max_delay: Duration::from_secs(60),
            max_attempts: None,
        }
    }

    /// Kite.js's `backoff` defaults: 700 ms, ×1.4, no jitter, at most 15 s, 50 attempts.
    pub fn kite_js() -> ReconnectPolicy {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(700),
            multiplier: 1.4,
            jitter: 0.0,
            max_delay: Duration::from_secs(15),
            max_attempts: Some(50),
        }
    }

    /// The delay before attempt `attempt` (1-based), with `random` in `[0, 1)` choosing the
    /// point in the jitter's range; `None` once the attempts are used up.
    pub fn delay(&self, attempt: u32, random: f64) -> Option<Duration> {
        if self.max_attempts.is_some_and(|max| attempt > max) {
            return None;
        }
        // In milliseconds, as f64: `as` saturates and reads NaN as 0 (and the wasm build
        // carries no float `Duration` code).
        let millis = |d: Duration| super::millis(d) as f64;
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let base = millis(self.initial_delay) * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(millis(self.max_delay));
        let jitter = self.jitter.clamp(0.0, 1.0);
        let spread = 1.0 - jitter + 2.0 * jitter * random.clamp(0.0, 1.0);
        Some(Duration::from_millis((capped * spread) as u64))
    }
}

impl Default for ReconnectPolicy {
    /// [`ReconnectPolicy::go`].
    fn default() -> ReconnectPolicy {
        ReconnectPolicy::go()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_within_its_range() {
        let p = ReconnectPolicy::go();
        assert_eq!(p.delay(1, 0.0), Some(Duration::from_millis(250)));
        assert_eq!(p.delay(1, 1.0), Some(Duration::from_millis(750)));
        let kjs = ReconnectPolicy::kite_js();
        assert_eq!(kjs.delay(1, 0.9), Some(Duration::from_millis(700)));
        assert_eq!(kjs.delay(50, 0.9), Some(Duration::from_secs(15)));
        assert_eq!(kjs.delay(51, 0.9), None);
    }

    #[test]
    fn odd_parameters_give_no_nonsense() {
        let p = ReconnectPolicy {
            multiplier: f64::NAN,
            jitter: 7.0,
            ..ReconnectPolicy::go()
        };
        assert!(p.delay(u32::MAX, 2.0).is_some());
        let p = ReconnectPolicy {
            multiplier: 1e300,
            ..ReconnectPolicy::go()
        };
        assert!(p.delay(u32::MAX, 0.5).unwrap() <= Duration::from_secs(90));
    }
}
