//! [`GapDetector`]: finds discontinuities in a stream from its timestamps.
//!
//! LSL gives no error while a source is away: pulls simply return nothing, and when the
//! source is back the timestamps jump. Real sources also stamp chunks when they push them,
//! so timestamps jitter by the pushing thread's scheduling, and their true rate is off the
//! nominal one. The detector therefore compares each timestamp with a running fit of the
//! segment's clock ([`SampleClock`]), not with the previous sample: a sample later than
//! the fit predicts by more than the tolerance (1.5 sample periods, or 6x the measured
//! jitter where that is larger) is a gap of `round(lateness * rate)` missing samples; one
//! earlier by more than the tolerance is a clock reset.

use crate::dsp::SampleClock;

/// A discontinuity found before the sample at `index_in_chunk`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Discontinuity {
    Gap { index_in_chunk: usize, missing: u64, seconds: f64 },
    ClockReset { index_in_chunk: usize, step_s: f64 },
}

/// Jitter assumed before any was measured (seconds, RMS).
const PRIOR_JITTER_S: f64 = 0.001;
/// Half-life (seconds) of the jitter estimate.
const JITTER_HALF_LIFE_S: f64 = 5.0;

#[derive(Debug, Clone)]
pub struct GapDetector {
    period: f64,
    clock: Option<SampleClock>,
    last: Option<f64>,
    /// Mean squared deviation from the fit (s^2), kept across segments.
    jitter2: f64,
    lambda: f64,
}

impl GapDetector {
    /// For a stream of nominal rate `srate` (Hz); irregular streams (rate 0) have no gaps.
    pub fn new(srate: f64) -> Self {
        let regular = srate > 0.0 && srate.is_finite();
        Self {
            period: if regular { 1.0 / srate } else { 0.0 },
            clock: regular.then(|| SampleClock::new(srate)),
            last: None,
            jitter2: PRIOR_JITTER_S * PRIOR_JITTER_S,
            lambda: if regular { 0.5f64.powf(1.0 / (JITTER_HALF_LIFE_S * srate).max(2.0)) } else { 0.0 },
        }
    }

    /// Timestamp of the last sample seen.
    pub fn last(&self) -> Option<f64> {
        self.last
    }

    /// How late or early (seconds) a sample may be before it counts as a discontinuity.
    pub fn tolerance_s(&self) -> f64 {
        (1.5 * self.period).max(6.0 * self.jitter2.sqrt())
    }

    /// Scans a chunk's timestamps; returns the first discontinuity, if any, and remembers
    /// the timestamps up to it (call again with the rest of the chunk after handling it).
    pub fn scan(&mut self, timestamps: &[f64]) -> Option<Discontinuity> {
        let Some(clock) = self.clock.as_mut() else {
            self.last = timestamps.last().copied().or(self.last);
            return None;
        };
        for (i, &t) in timestamps.iter().enumerate() {
            if clock.samples() > 0 {
                let dev = t - clock.at(clock.samples() as f64);
                let tol = (1.5 * self.period).max(6.0 * self.jitter2.sqrt());
                if dev.abs() > tol || !t.is_finite() {
                    let step = t - self.last.unwrap_or(t);
                    // The caller scans again from this sample, which starts the new fit.
                    clock.reset();
                    self.last = Some(t);
                    return Some(if dev > 0.0 {
                        let missing = ((dev / self.period).round() as u64).max(1);
                        Discontinuity::Gap { index_in_chunk: i, missing, seconds: step - self.period }
                    } else {
                        Discontinuity::ClockReset { index_in_chunk: i, step_s: step }
                    });
                }
                if clock.samples() > 1 {
                    self.jitter2 = self.lambda * self.jitter2 + (1.0 - self.lambda) * dev * dev;
                }
            }
            clock.push(t);
            self.last = Some(t);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_stream_has_no_gap() {
        let mut g = GapDetector::new(1000.0);
        let ts: Vec<f64> = (0..500).map(|i| 10.0 + i as f64 / 1000.0).collect();
        assert_eq!(g.scan(&ts[..250]), None);
        assert_eq!(g.scan(&ts[250..]), None);
    }

    #[test]
    fn finds_gap_with_its_length() {
        let mut g = GapDetector::new(1000.0);
        let mut ts: Vec<f64> = (0..10).map(|i| i as f64 / 1000.0).collect();
        ts.extend((47..50).map(|i| i as f64 / 1000.0));
        match g.scan(&ts) {
            Some(Discontinuity::Gap { index_in_chunk, missing, .. }) => {
                assert_eq!(index_in_chunk, 10);
                assert_eq!(missing, 37);
            }
            other => panic!("expected gap, got {other:?}"),
        }
        assert_eq!(g.scan(&ts[10..]), None);
    }

    #[test]
    fn finds_clock_reset() {
        let mut g = GapDetector::new(600.614);
        assert_eq!(g.scan(&[100.0, 100.0 + 1.0 / 600.614]), None);
        assert!(matches!(g.scan(&[3.0]), Some(Discontinuity::ClockReset { index_in_chunk: 0, .. })));
    }

    #[test]
    fn chunk_stamping_jitter_and_off_nominal_rate_are_not_gaps() {
        // Chunks of 10 stamped at push time with up to 3 ms of scheduling delay, from a
        // source 1% fast: never a discontinuity; a real 200 ms outage still is one.
        let mut g = GapDetector::new(1000.0);
        let mut rng = 99u64;
        let mut found = 0;
        for c in 0..3000u64 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let delay = 0.003 * ((rng >> 11) as f64 / (1u64 << 53) as f64);
            let outage = if c >= 2000 { 0.2 } else { 0.0 };
            let push = 50.0 + (c * 10 + 9) as f64 / 1010.0 + delay + outage;
            let ts: Vec<f64> = (0..10).map(|k| push - (9 - k) as f64 / 1000.0).collect();
            if let Some(d) = g.scan(&ts) {
                assert_eq!(c, 2000, "false discontinuity {d:?} at chunk {c}");
                assert!(matches!(d, Discontinuity::Gap { missing, .. } if (195..=205).contains(&missing)), "{d:?}");
                found += 1;
                let Discontinuity::Gap { index_in_chunk, .. } = d else { unreachable!() };
                assert_eq!(g.scan(&ts[index_in_chunk..]), None);
            }
        }
        assert_eq!(found, 1);
    }
}
