//! Fault injection for the registry service, set at start and deterministic with a seed.
//!
//! The service draws one [`Fault`] per `/v1` request, in arrival order, from a seeded generator:
//! the same seed and the same sequence of requests give the same faults. Each draw consumes
//! the same number of random values whatever the outcome, so one fault never shifts the ones
//! after it.
//!
//! The faults are the ones a client of a remote registry must survive:
//! - latency: every request waits `latency_ms` plus up to `jitter_ms`;
//! - an error: `503 Service Unavailable` without doing the work;
//! - a dropped response: the work is done, then the answer is lost (the connection is cut, or
//!   the answer comes after the client has given up);
//! - a duplicate delivery: the request is applied twice (idempotency must absorb the second).

use std::sync::Mutex;

use thiserror::Error;

/// The largest fault percentage.
pub const FAULT_PCT_MAX: u32 = 100;
/// The longest added latency, jitter or answer delay, in milliseconds.
pub const FAULT_DELAY_MS_MAX: u64 = 600_000;

/// How a dropped response is lost.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum DropMode {
    /// The status line goes out, then the connection is cut before the body.
    #[default]
    Close,
    /// The answer is held back this long (longer than the client's timeout), then sent.
    Delay {
        /// How long the answer is held back.
        delay_ms: u64,
    },
}

/// The faults to inject, set when the service starts. The default injects none.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// The seed of the generator that decides each request's fault.
    pub seed: u64,
    /// Latency added to every request.
    pub latency_ms: u64,
    /// Up to this much more latency, drawn per request.
    pub jitter_ms: u64,
    /// The percentage of requests answered `503` without doing the work.
    pub error_pct: u32,
    /// The percentage of requests whose work is done and whose answer is lost.
    pub drop_pct: u32,
    /// How an answer is lost.
    pub drop_mode: DropMode,
    /// The percentage of requests applied twice.
    pub duplicate_pct: u32,
}

/// A fault setting out of range.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FaultsError {
    /// A percentage over 100.
    #[error("{name} is {value}%, at most {FAULT_PCT_MAX}%")]
    Percentage {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: u32,
    },
    /// A delay over [`FAULT_DELAY_MS_MAX`].
    #[error("{name} is {value} ms, at most {FAULT_DELAY_MS_MAX} ms")]
    Delay {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: u64,
    },
}

impl Faults {
    /// Checks the settings' ranges.
    pub fn validate(&self) -> Result<(), FaultsError> {
        for (name, value) in [
            ("error_pct", self.error_pct),
            ("drop_pct", self.drop_pct),
            ("duplicate_pct", self.duplicate_pct),
        ] {
            if value > FAULT_PCT_MAX {
                return Err(FaultsError::Percentage { name, value });
            }
        }
        let drop_delay_ms = match self.drop_mode {
            DropMode::Close => 0,
            DropMode::Delay { delay_ms } => delay_ms,
        };
        for (name, value) in
            [("latency_ms", self.latency_ms), ("jitter_ms", self.jitter_ms), ("drop delay_ms", drop_delay_ms)]
        {
            if value > FAULT_DELAY_MS_MAX {
                return Err(FaultsError::Delay { name, value });
            }
        }
        Ok(())
    }

    /// Whether any fault is switched on.
    pub fn any(&self) -> bool {
        *self != Faults { seed: self.seed, drop_mode: self.drop_mode, ..Faults::default() }
    }
}

/// What happens to one request.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    /// Wait this long before anything else.
    pub delay_ms: u64,
    /// Answer `503` without doing the work (the other faults then do not apply).
    pub error: bool,
    /// Apply the request twice and answer with the second application's answer.
    pub duplicate: bool,
    /// Do the work, then lose the answer.
    pub drop: bool,
}

/// SplitMix64: small, fast, and good enough to decide faults.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `pct` percent.
    fn chance(&mut self, pct: u32) -> bool {
        self.next() % u64::from(FAULT_PCT_MAX) < u64::from(pct)
    }
}

/// The faults of one running service: the settings and the seeded generator.
#[derive(Debug)]
pub struct FaultPlan {
    faults: Faults,
    rng: Mutex<SplitMix64>,
}

impl FaultPlan {
    /// A plan for `faults`, if they are in range.
    pub fn new(faults: Faults) -> Result<FaultPlan, FaultsError> {
        faults.validate()?;
        Ok(FaultPlan { faults, rng: Mutex::new(SplitMix64(faults.seed)) })
    }

    /// The settings.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The fault of the next request.
    pub fn next(&self) -> Fault {
        let f = &self.faults;
        // A poisoned lock only means another request panicked while drawing; the generator's
        // state is a single integer and always valid.
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let jitter = rng.next() % (f.jitter_ms + 1);
        let error = rng.chance(f.error_pct);
        let duplicate = rng.chance(f.duplicate_pct);
        let drop = rng.chance(f.drop_pct);
        Fault { delay_ms: f.latency_ms + jitter, error, duplicate: duplicate && !error, drop: drop && !error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let faults = Faults {
            seed: 7,
            jitter_ms: 5,
            error_pct: 20,
            drop_pct: 20,
            duplicate_pct: 20,
            ..Faults::default()
        };
        let a: Vec<Fault> = (0..200)
            .map({
                let p = FaultPlan::new(faults).unwrap();
                move |_| p.next()
            })
            .collect();
        let b: Vec<Fault> = (0..200)
            .map({
                let p = FaultPlan::new(faults).unwrap();
                move |_| p.next()
            })
            .collect();
        assert_eq!(a, b);
        let errors = a.iter().filter(|f| f.error).count();
        assert!((20..=70).contains(&errors), "{errors} errors in 200 at 20%");
        assert!(a.iter().all(|f| f.delay_ms <= 5 && !(f.error && (f.drop || f.duplicate))));
    }

    #[test]
    fn no_faults_by_default_and_settings_are_checked() {
        let p = FaultPlan::new(Faults::default()).unwrap();
        assert!((0..100).all(|_| p.next() == Fault::default()));
        assert!(!Faults::default().any());
        assert!(Faults { error_pct: 1, ..Faults::default() }.any());
        let too_many = Faults { drop_pct: 101, ..Faults::default() };
        assert_eq!(
            FaultPlan::new(too_many).unwrap_err(),
            FaultsError::Percentage { name: "drop_pct", value: 101 }
        );
        let too_long = Faults { drop_mode: DropMode::Delay { delay_ms: u64::MAX }, ..Faults::default() };
        assert!(matches!(too_long.validate(), Err(FaultsError::Delay { .. })));
    }
}
