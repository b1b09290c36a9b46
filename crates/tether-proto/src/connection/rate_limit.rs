//! A token bucket on received data messages.

use std::time::Instant;

use super::Connection;
use crate::ProtocolError;

/// A token bucket on received data messages: `burst` messages at once, then
/// `per_second` on average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: u32,
    /// Messages that may arrive at once after a quiet period.
    pub burst: u32,
}

/// The state of a [`RateLimit`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    /// A bucket holding the whole burst, as of `now`.
    pub(super) fn full(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: f64::from(limit.burst),
            refilled_at: now,
        }
    }

    /// Takes one token, or says that the peer is over `limit`. Inlined:
    /// it runs for every message received (measured with callgrind).
    #[inline]
    fn take(&mut self, limit: RateLimit, now: Instant) -> Result<(), ProtocolError> {
        // Every frame of one read shares its `now`: refill once per read.
        if now != self.refilled_at {
            let elapsed = now
                .saturating_duration_since(self.refilled_at)
                .as_secs_f64();
            self.tokens =
                (self.tokens + elapsed * f64::from(limit.per_second)).min(f64::from(limit.burst));
            self.refilled_at = now;
        }
        if self.tokens < 1.0 {
            return Err(ProtocolError::RateLimited {
                per_second: limit.per_second,
                burst: limit.burst,
            });
        }
        self.tokens -= 1.0;
        Ok(())
    }
}

impl Connection {
    /// Charges one message to the rate limit, if there is one.
    #[inline]
    pub(super) fn take_token(&mut self, now: Instant) -> Result<(), ProtocolError> {
        let (Some(bucket), Some(limit)) = (self.bucket.as_mut(), self.config.rate_limit) else {
            return Ok(());
        };
        bucket.take(limit, now)
    }
}
