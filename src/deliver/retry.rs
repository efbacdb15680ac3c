//! Retry policy, kept in two parts (after Vector): *classification* — what an attempt's
//! result means — and *schedule* — when to try again. Both are pure functions.

use std::time::{Duration, SystemTime};

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Worth trying again (network error, timeout, 408, 429, 5xx); `retry_after` from the target.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help (410 and other 4xx).
    Fatal {
        reason: String,
    },
}

/// Classifies an HTTP status.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Success,
        408 | 429 | 500..=599 => Outcome::Retry {
            reason: format!("target answered {status}"),
            retry_after,
        },
        _ => Outcome::Fatal {
            reason: format!("target answered {status}"),
        },
    }
}

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay before attempt `attempt + 1`, given `attempt` attempts made (≥ 1): full jitter
/// over `[0, min(max_delay, initial · 2^(attempt-1))]`, then at least the target's
/// `Retry-After`, everything clamped to `max_delay`. `unit` is a uniform sample in [0, 1).
pub fn delay(
    attempt: u32,
    initial: Duration,
    max_delay: Duration,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    let exp = attempt.saturating_sub(1).min(40);
    let ceiling = initial.saturating_mul(1u32 << exp.min(31)).min(max_delay);
    let jittered = ceiling.mul_f64(unit.clamp(0.0, 1.0));
    let d = match retry_after {
        Some(ra) => jittered.max(ra),
        None => jittered,
    };
    d.min(max_delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(204, None), Outcome::Success);
        for s in [408, 429, 500, 502, 503, 599] {
            assert!(matches!(classify(s, None), Outcome::Retry { .. }), "{s}");
        }
        for s in [400, 401, 404, 410, 422, 301] {
            assert!(matches!(classify(s, None), Outcome::Fatal { .. }), "{s}");
        }
    }

    #[test]
    fn schedule_grows_is_jittered_and_clamped() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(3600));
        assert_eq!(
            delay(1, i, m, None, 0.999_999),
            Duration::from_secs(1).mul_f64(0.999_999)
        );
        assert_eq!(delay(4, i, m, None, 0.5), Duration::from_secs(4));
        assert_eq!(delay(30, i, m, None, 0.5), Duration::from_secs(1800));
        assert_eq!(delay(3, i, m, None, 0.0), Duration::ZERO);
        // Retry-After is a floor, but never past max_delay.
        assert_eq!(
            delay(1, i, m, Some(Duration::from_secs(120)), 0.1),
            Duration::from_secs(120)
        );
        assert_eq!(delay(1, i, m, Some(Duration::from_secs(99_999)), 0.1), m);
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
