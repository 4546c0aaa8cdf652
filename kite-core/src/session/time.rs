//! [`Time`]: a point on the driver's monotonic clock.

use std::ops::Add;
use std::time::Duration;

/// A point in time, in milliseconds on the driver's own monotonic clock (kite-native: since
/// the client was made; kite-wasm: `performance.now()`). Only differences between `Time`s
/// given to one session mean anything. kite-core reads no clock itself (`std::time::Instant`
/// does not exist in browsers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(u64);

impl Time {
    /// The clock's origin.
    pub const ZERO: Time = Time(0);

    /// `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms)
    }

    /// Milliseconds after the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is (zero if it is not after it).
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    /// Later by `d`, rounded up to the millisecond (a deadline is never early), saturating.
    fn add(self, d: Duration) -> Time {
        // No u128 arithmetic (`as_nanos`): it would bring 128-bit division into the wasm build.
        let ms = d
            .as_secs()
            .saturating_mul(1_000)
            .saturating_add(u64::from(d.subsec_nanos().div_ceil(1_000_000)));
        Time(self.0.saturating_add(ms))
    }
}
