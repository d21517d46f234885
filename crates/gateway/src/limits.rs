//! Per-user limits, in memory: a rate limit on the expensive calls (creating Sessions,
//! validating), a token bucket per user and action; and a bound on open event streams. It is a limit, not state: a restart or another replica
//! starts with full buckets, which is fine for its purpose (stopping a runaway client).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::StatusCode;

use crate::errors::ApiError;

/// Buckets kept before full (idle) ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by (action, user).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<(&'static str, String), Bucket>>,
}

impl RateLimiter {
    /// `per_second` tokens refill per second up to `burst`.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `user` doing `action`, or says how long to wait.
    pub fn check(&self, action: &'static str, user: &str) -> Result<(), ApiError> {
        self.check_at(action, user, Instant::now())
    }

    fn check_at(&self, action: &'static str, user: &str, now: Instant) -> Result<(), ApiError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        // Keyed as ownership compares users, so `Alice` and ` alice` share one bucket.
        let bucket = buckets
            .entry((action, cks_api::session::user_key(user)))
            .or_insert(Bucket {
                tokens: self.burst,
                at: now,
            });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / self.per_second).ceil();
        // Cast is safe: wait is positive and small (burst and rate come from checked flags).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let secs = wait as u64;
        Err(ApiError::rate_limited(
            format!("Too many {action} requests; wait {secs} s and try again."),
            secs,
        ))
    }
}

/// Open event streams per user (keyed as ownership compares users), at most `max` each.
#[derive(Debug)]
pub struct StreamSlots {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream of a user; dropping it (the stream ending) frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    user: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl StreamSlots {
    /// At most `max` open streams per user.
    pub fn new(max: u32) -> Self {
        Self {
            max: max as usize,
            open: Arc::default(),
        }
    }

    /// A slot for one more stream of `user`, or 429 when they have `max` open.
    pub fn acquire(&self, user: &str) -> Result<StreamSlot, ApiError> {
        let user = cks_api::session::user_key(user);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(user.clone()).or_default();
        if *n >= self.max {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_STREAMS",
                format!(
                    "You have {} event streams open, the most allowed; close one (another tab?) and try again.",
                    self.max
                ),
            ));
        }
        *n += 1;
        Ok(StreamSlot {
            user,
            open: self.open.clone(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_applies_per_user_and_action() {
        let limiter = RateLimiter::new(1.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check_at("create", "alice", t0).unwrap();
        }
        let e = limiter.check_at("create", "alice", t0).unwrap_err();
        assert_eq!((e.status.as_u16(), e.retry_after), (429, Some(1)));
        // Other users and other actions have their own buckets.
        limiter.check_at("create", "bob", t0).unwrap();
        limiter.check_at("validate", "alice", t0).unwrap();
        // One second refills one token.
        let t1 = t0 + Duration::from_secs(1);
        limiter.check_at("create", "alice", t1).unwrap();
        assert!(limiter.check_at("create", "alice", t1).is_err());
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            limiter.check_at("create", "alice", t2).unwrap();
        }
        assert!(limiter.check_at("create", "alice", t2).is_err());
    }

    #[test]
    fn one_user_in_any_case_or_spacing_shares_one_bucket() {
        let limiter = RateLimiter::new(1.0, 2.0);
        let t0 = Instant::now();
        limiter.check_at("create", "Alice@Example.com", t0).unwrap();
        limiter.check_at("create", " alice@example.com", t0).unwrap();
        assert_eq!(
            limiter
                .check_at("create", "ALICE@EXAMPLE.COM ", t0)
                .unwrap_err()
                .status
                .as_u16(),
            429
        );
    }

    #[test]
    fn streams_per_user_are_bounded_and_freed_when_they_end() {
        let slots = StreamSlots::new(2);
        let a = slots.acquire("alice").unwrap();
        let _b = slots.acquire(" Alice").unwrap();
        let e = slots.acquire("ALICE").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (429, "TOO_MANY_STREAMS"));
        // Other users have their own.
        let _c = slots.acquire("bob").unwrap();
        drop(a);
        let _d = slots.acquire("alice").unwrap();
        assert!(slots.acquire("alice").is_err());
    }
}
