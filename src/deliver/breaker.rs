//! Circuit breaker per target: after `threshold` consecutive failures the target is left
//! alone for a cool-down (doubling up to a ceiling while it keeps failing), then one probe
//! is let through; a success closes the circuit. Time is passed in, so tests need no clock.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    /// No attempts until the instant; then a single probe.
    Open {
        until: Instant,
    },
    /// One probe is out; its result decides.
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    base: Duration,
    ceiling: Duration,
    failures: u32,
    cooldown: Duration,
    pub state: State,
}

impl Breaker {
    pub fn new(threshold: u32, base: Duration, ceiling: Duration) -> Self {
        Breaker {
            threshold,
            base,
            ceiling,
            failures: 0,
            cooldown: base,
            state: State::Closed,
        }
    }

    /// How many attempts may start now: all of `want` when closed, one probe when the
    /// cool-down is over, none otherwise.
    pub fn admit(&mut self, want: usize, now: Instant) -> usize {
        match self.state {
            State::Closed => want,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                want.min(1)
            }
            State::Open { .. } | State::HalfOpen => 0,
        }
    }

    /// When a closed-off target may be probed again.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// The probe slot was granted but nothing was sent (nothing was due): the next admit may
    /// probe again, instead of waiting forever for a probe that never went out.
    pub fn probe_unused(&mut self, now: Instant) {
        if self.state == State::HalfOpen {
            self.state = State::Open { until: now };
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.cooldown = self.base;
        self.state = State::Closed;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        match self.state {
            State::HalfOpen => {
                self.cooldown = (self.cooldown * 2).min(self.ceiling);
                self.state = State::Open {
                    until: now + self.cooldown,
                };
            }
            State::Closed if self.failures >= self.threshold => {
                self.state = State::Open {
                    until: now + self.cooldown,
                };
            }
            _ => {}
        }
    }

    pub fn label(&self) -> &'static str {
        match self.state {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut b = Breaker::new(3, s, Duration::from_secs(8));
        assert_eq!(b.admit(10, t0), 10);
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.state, State::Closed);
        b.failure(t0);
        assert_eq!(b.admit(10, t0), 0);
        assert_eq!(b.reopens_at(), Some(t0 + s));
        // Cool-down over: exactly one probe.
        assert_eq!(b.admit(10, t0 + s), 1);
        assert_eq!(b.admit(10, t0 + s), 0);
        // Probe fails: cool-down doubles.
        b.failure(t0 + s);
        assert_eq!(b.reopens_at(), Some(t0 + s + 2 * s));
        assert_eq!(b.admit(5, t0 + 3 * s), 1);
        b.success();
        assert_eq!(b.admit(5, t0 + 3 * s), 5);
    }

    #[test]
    fn an_unused_probe_does_not_wedge_the_circuit() {
        let t = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(1), Duration::from_secs(4));
        b.failure(t);
        let at = t + Duration::from_secs(1);
        assert_eq!(b.admit(3, at), 1);
        // Nothing was due, so no probe went out.
        b.probe_unused(at);
        assert_eq!(b.admit(3, at), 1, "the circuit must offer the probe again");
        b.success();
        assert_eq!(b.admit(3, at), 3);
    }

    #[test]
    fn cooldown_is_capped() {
        let t = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(1), Duration::from_secs(4));
        b.failure(t);
        for _ in 0..10 {
            let until = b.reopens_at().unwrap();
            assert_eq!(b.admit(1, until), 1);
            b.failure(until);
        }
        let until = b.reopens_at().unwrap();
        assert!(until - t <= Duration::from_secs(4) * 11);
    }
}
