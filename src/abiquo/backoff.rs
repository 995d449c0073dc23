//! Capped exponential backoff, the one growth rule behind request retries, cold task polling
//! and waits for a LOCKED VM. Saturating: no setting, however absurd, panics.

use rand::Rng;
use std::time::Duration;

/// Delays that start at `initial` and grow by `factor` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    /// Growth per step; below 1 (or NaN) counts as 1, so delays never shrink.
    pub factor: f64,
    pub max: Duration,
}

impl Backoff {
    fn factor(&self) -> f64 {
        self.factor.max(1.0)
    }

    /// The delay before attempt `n` (0-based): `initial × factor^n`, capped at `max`.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self.factor().powi(i32::try_from(n).unwrap_or(i32::MAX));
        let secs = self.initial.as_secs_f64() * exp;
        let capped = secs.min(self.max.as_secs_f64());
        Duration::try_from_secs_f64(capped).unwrap_or(self.max)
    }

    /// [`Self::delay`] with "equal jitter": uniform in [delay/2, delay], so many clients
    /// failing together do not retry together, yet each still waits a while.
    pub fn jittered(&self, n: u32) -> Duration {
        let ceiling = self.delay(n);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        let extra = if spread == 0 {
            0
        } else {
            rand::rng().random_range(0..=spread)
        };
        half + Duration::from_millis(extra)
    }

    /// The delay for a wait already `elapsed` long: `initial + elapsed × (factor − 1)`,
    /// capped. Polling at these delays, each gap is about `factor` times the previous one,
    /// as with [`Self::delay`], but the time the polls themselves take is accounted for.
    pub fn after(&self, elapsed: Duration) -> Duration {
        self.initial
            .saturating_add(scaled(elapsed, self.factor() - 1.0))
            .min(self.max)
    }
}

/// `d × f`, saturating instead of panicking on overflow, NaN or a negative factor.
pub fn scaled(d: Duration, f: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * f).unwrap_or(if f > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_grow_by_the_factor_up_to_the_cap() {
        let b = Backoff {
            initial: ms(100),
            factor: 2.0,
            max: ms(500),
        };
        let got: Vec<u128> = (0..6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 500, 500, 500]);
        assert_eq!(b.delay(u32::MAX), ms(500));
    }

    #[test]
    fn a_factor_below_one_or_nan_keeps_delays_flat() {
        for factor in [0.5, f64::NAN] {
            let b = Backoff {
                initial: ms(100),
                factor,
                max: ms(1000),
            };
            assert_eq!(b.delay(5), ms(100));
            assert_eq!(b.after(ms(800)), ms(100));
        }
    }

    #[test]
    fn absurd_settings_saturate() {
        let b = Backoff {
            initial: Duration::MAX,
            factor: f64::INFINITY,
            max: Duration::from_secs(5),
        };
        assert_eq!(b.delay(3), Duration::from_secs(5));
        assert_eq!(b.after(Duration::MAX), Duration::from_secs(5));
        assert!(b.jittered(3) <= Duration::from_secs(5));
        assert_eq!(scaled(Duration::MAX, 2.0), Duration::MAX);
        assert_eq!(scaled(ms(10), -1.0), Duration::ZERO);
        assert_eq!(scaled(ms(10), f64::NAN), Duration::ZERO);
    }

    #[test]
    fn elapsed_based_delays_follow_the_same_growth() {
        let b = Backoff {
            initial: ms(250),
            factor: 1.5,
            max: Duration::from_secs(5),
        };
        let mut elapsed = Duration::ZERO;
        for n in 0..6 {
            let d = b.after(elapsed);
            assert_eq!(d, b.delay(n), "poll {n}");
            elapsed += d;
        }
    }

    #[test]
    fn jitter_stays_between_half_and_full_delay() {
        let b = Backoff {
            initial: ms(200),
            factor: 2.0,
            max: Duration::from_secs(10),
        };
        for n in 0..8 {
            let c = b.delay(n);
            for _ in 0..50 {
                let d = b.jittered(n);
                assert!(d >= c / 2 && d <= c, "{n}: {d:?} vs {c:?}");
            }
        }
    }
}
