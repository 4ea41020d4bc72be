//! [`GapDetector`]: finds discontinuities in a stream from its timestamps.
//!
//! LSL gives no error while a source is away: pulls simply return nothing, and when the
//! source is back the timestamps jump. The detector compares each sample's timestamp with
//! the previous one and the nominal rate: a step of more than 1.5 sample periods is a gap
//! of `round(step * rate) - 1` missing samples; a step backwards is a clock reset.

/// A discontinuity found before the sample at `index_in_chunk`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Discontinuity {
    Gap { index_in_chunk: usize, missing: u64, seconds: f64 },
    ClockReset { index_in_chunk: usize, step_s: f64 },
}

#[derive(Debug, Clone)]
pub struct GapDetector {
    period: f64,
    last: Option<f64>,
}

impl GapDetector {
    /// For a stream of nominal rate `srate` (Hz); irregular streams (rate 0) have no gaps.
    pub fn new(srate: f64) -> Self {
        Self { period: if srate > 0.0 { 1.0 / srate } else { 0.0 }, last: None }
    }

    /// Timestamp of the last sample seen.
    pub fn last(&self) -> Option<f64> {
        self.last
    }

    /// Scans a chunk's timestamps; returns the first discontinuity, if any, and remembers
    /// the timestamps up to it (call again with the rest of the chunk after handling it).
    pub fn scan(&mut self, timestamps: &[f64]) -> Option<Discontinuity> {
        if self.period == 0.0 {
            self.last = timestamps.last().copied().or(self.last);
            return None;
        }
        for (i, &t) in timestamps.iter().enumerate() {
            if let Some(prev) = self.last {
                let step = t - prev;
                if step < -0.5 * self.period {
                    self.last = Some(t);
                    return Some(Discontinuity::ClockReset { index_in_chunk: i, step_s: step });
                }
                if step > 1.5 * self.period {
                    self.last = Some(t);
                    let missing = ((step / self.period).round() as u64).saturating_sub(1).max(1);
                    return Some(Discontinuity::Gap { index_in_chunk: i, missing, seconds: step - self.period });
                }
            }
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
        assert_eq!(g.scan(&ts[11..]), None);
    }

    #[test]
    fn finds_clock_reset() {
        let mut g = GapDetector::new(600.614);
        assert_eq!(g.scan(&[100.0, 100.0 + 1.0 / 600.614]), None);
        assert!(matches!(g.scan(&[3.0]), Some(Discontinuity::ClockReset { index_in_chunk: 0, .. })));
    }
}
