//! [`GapDetector`]: finds discontinuities in a stream from its timestamps.
//!
//! LSL gives no error while a source is away: pulls simply return nothing, and when the
//! source is back the timestamps jump. Real sources also stamp chunks when they push them,
//! so timestamps jitter with the pushing thread's scheduling, and their true rate is off
//! the nominal one. The detector therefore compares each timestamp with a running fit of
//! the segment's clock ([`SampleClock`]) instead of the previous sample, and tells a late
//! push from lost samples by looking ahead:
//!
//! - a sample later than the fit by more than the tolerance (1.5 sample periods, or 6x the
//!   jitter of the samples that were on time, where larger) is *held*; if the samples
//!   after it come back to the line (a push that stalled, then caught up), the held
//!   samples are accepted; if they are still late [`CONFIRM_S`] of samples later, samples
//!   were lost: a gap of `round(lateness * rate)` samples before the first held one;
//! - a sample earlier than the fit by more than the tolerance and [`RESET_S`] is a clock
//!   reset.
//!
//! Held samples never widen the tolerance (they are the outliers the tolerance is for), so
//! a source that stalls now and then still has its real losses found.
//!
//! The decision depends only on the sequence of timestamps, never on how they were
//! chunked, so `replay` segments a recording exactly as the live acquisition did.

use crate::dsp::SampleClock;

/// A discontinuity before a sample (see [`Step`] for which one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Discontinuity {
    Gap { missing: u64, seconds: f64 },
    ClockReset { step_s: f64 },
}

/// What to do with the sample just observed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// It continues the current segment.
    Accept,
    /// It starts a new segment after a discontinuity.
    Break(Discontinuity),
    /// Keep it (and the following ones) aside until the detector has decided.
    Hold,
    /// Decided: the held samples, then this one, continue the current segment (None), or
    /// the first `keep` held samples continue it and the rest, then this one, start a new
    /// segment after the discontinuity.
    Release(Option<(Discontinuity, usize)>),
}

/// Jitter assumed before any was measured (seconds, RMS).
const PRIOR_JITTER_S: f64 = 0.001;
/// Half-life (seconds) of the jitter estimate.
const JITTER_HALF_LIFE_S: f64 = 5.0;
/// Seconds of samples after a late one that decide between a late push and a gap: a
/// source that stalls this long and then catches up has lost nothing.
pub const CONFIRM_S: f64 = 1.0;
/// A sample must be at least this much earlier than the fit to be a clock reset.
pub const RESET_S: f64 = 0.02;
/// The same in the first 2 s of a segment, while the line rests on few pushes.
const EARLY_RESET_S: f64 = 0.25;

#[derive(Debug, Clone)]
pub struct GapDetector {
    period: f64,
    clock: Option<SampleClock>,
    last: Option<f64>,
    /// Mean squared deviation from the fit (s^2), kept across segments.
    jitter2: f64,
    lambda: f64,
    /// Held timestamps (a late run being decided), preallocated.
    held: Vec<f64>,
    /// Lateness of the first held sample.
    held_late: f64,
    confirm: usize,
}

impl GapDetector {
    /// For a stream of nominal rate `srate` (Hz); irregular streams (rate 0) have no gaps.
    pub fn new(srate: f64) -> Self {
        let regular = srate > 0.0 && srate.is_finite();
        let confirm = if regular { ((CONFIRM_S * srate).ceil() as usize).clamp(1, 1_000_000) } else { 1 };
        Self {
            period: if regular { 1.0 / srate } else { 0.0 },
            clock: regular.then(|| SampleClock::new(srate)),
            last: None,
            jitter2: PRIOR_JITTER_S * PRIOR_JITTER_S,
            lambda: if regular { 0.5f64.powf(1.0 / (JITTER_HALF_LIFE_S * srate).max(2.0)) } else { 0.0 },
            held: Vec::with_capacity(confirm + 1),
            held_late: 0.0,
            confirm,
        }
    }

    /// Timestamp of the last sample seen.
    pub fn last(&self) -> Option<f64> {
        self.last
    }

    /// Samples held while a late run is decided (at most `CONFIRM_S` of samples).
    pub fn holding(&self) -> usize {
        self.held.len()
    }

    /// Most samples ever held at once.
    pub fn max_hold(&self) -> usize {
        self.confirm
    }

    /// How late or early (seconds) a sample may be before it counts as suspect.
    pub fn tolerance_s(&self) -> f64 {
        (1.5 * self.period).max(6.0 * self.jitter2.sqrt())
    }

    /// Adds an accepted sample to the fit; samples that were on time (`on_time`) also
    /// update the jitter estimate.
    fn accept(&mut self, t: f64, dev: f64, on_time: bool) {
        if let Some(clock) = self.clock.as_mut() {
            if on_time && clock.samples() > 1 {
                self.jitter2 = self.lambda * self.jitter2 + (1.0 - self.lambda) * dev * dev;
            }
            clock.push(t);
        }
        self.last = Some(t);
    }

    /// Starts a new segment at the held samples (a confirmed gap).
    fn restart_with_held(&mut self) {
        let clock = self.clock.as_mut().expect("regular stream");
        clock.reset();
        for &t in &self.held {
            clock.push(t);
        }
        self.held.clear();
    }

    /// Observes the next sample's timestamp.
    pub fn observe(&mut self, t: f64) -> Step {
        let tol = self.tolerance_s();
        let Some(clock) = self.clock.as_ref() else {
            self.last = Some(t);
            return Step::Accept;
        };
        if clock.samples() == 0 && self.held.is_empty() {
            self.accept(t, 0.0, true);
            return Step::Accept;
        }
        // Deviation from the fit, at this sample's index (after any held samples).
        let dev = t - clock.at((clock.samples() + self.held.len() as u64) as f64);
        if !self.held.is_empty() {
            if dev <= tol {
                // Back on the line: the held samples were a late push.
                // They continue the line; the fit takes them where the line puts them (their
                // late stamps would pull it late).
                let n = self.held.len();
                self.held.clear();
                for _ in 0..n {
                    let c = self.clock.as_ref().expect("regular stream");
                    let on_line = c.at(c.samples() as f64);
                    self.accept(on_line, 0.0, false);
                }
                self.accept(t, dev, false);
                return Step::Release(None);
            }
            self.held.push(t);
            if self.held.len() > self.confirm {
                // Still late after CONFIRM_S of samples: samples were lost. The loss is the
                // lateness the stream settled at; it happened before the first held sample
                // that is that late (the ones before it were merely late pushes).
                let c = self.clock.as_ref().expect("regular stream");
                let base = c.samples();
                let late = |i: usize, h: f64| h - c.at((base + i as u64) as f64);
                let settled = late(self.held.len() - 1, t);
                let keep = (0..self.held.len()).find(|&i| late(i, self.held[i]) >= settled - tol).unwrap_or(0);
                let missing = ((settled / self.period).round() as u64).max(1);
                let before: Vec<f64> = self.held.drain(..keep).collect();
                for h in before {
                    let c = self.clock.as_ref().expect("regular stream");
                    let d = h - c.at(c.samples() as f64);
                    self.accept(h, d, false);
                }
                self.restart_with_held();
                self.last = Some(t);
                let gap = Discontinuity::Gap { missing, seconds: missing as f64 * self.period };
                return Step::Release(Some((gap, keep)));
            }
            return Step::Hold;
        }
        // Early samples: a clock reset once the segment's line is established (before,
        // the first samples may themselves have been pushed late and anchored it late).
        let established = clock.samples() as f64 * self.period >= 2.0;
        if !t.is_finite() || dev < -tol.max(if established { RESET_S } else { EARLY_RESET_S }) {
            let step = t - self.last.unwrap_or(t);
            let clock = self.clock.as_mut().expect("regular stream");
            clock.reset();
            clock.push(t);
            self.last = Some(t);
            return Step::Break(Discontinuity::ClockReset { step_s: step });
        }
        if dev > tol {
            self.held_late = dev;
            self.held.push(t);
            return Step::Hold;
        }
        self.accept(t, dev, true);
        Step::Accept
    }

    /// The stream ends while samples are held: they end the current segment (nothing
    /// followed them to tell a late push from a loss). Returns how many were held.
    pub fn flush(&mut self) -> usize {
        let n = self.held.len();
        let mut held = std::mem::take(&mut self.held);
        for &h in &held {
            let c = self.clock.as_ref().expect("held samples only on regular streams");
            let d = h - c.at(c.samples() as f64);
            self.accept(h, d, false);
        }
        held.clear();
        self.held = held;
        n
    }

    /// Segments a whole record as the live acquisition does (one number per sample).
    pub fn segment_all(srate: f64, timestamps: &[f64]) -> Vec<u32> {
        let mut g = GapDetector::new(srate);
        let mut out = Vec::with_capacity(timestamps.len());
        let mut seg = 0u32;
        let mut held = 0usize;
        for &t in timestamps {
            match g.observe(t) {
                Step::Accept => out.push(seg),
                Step::Break(_) => {
                    seg += 1;
                    out.push(seg);
                }
                Step::Hold => {
                    held += 1;
                    out.push(u32::MAX);
                }
                Step::Release(d) => {
                    let n = out.len();
                    let keep = d.map_or(held, |(_, k)| k);
                    out[n - held..n - held + keep].iter_mut().for_each(|s| *s = seg);
                    if d.is_some() {
                        seg += 1;
                    }
                    out[n - held + keep..].iter_mut().for_each(|s| *s = seg);
                    held = 0;
                    out.push(seg);
                }
            }
        }
        g.flush();
        let n = out.len();
        out[n - held..].iter_mut().for_each(|s| *s = seg);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The discontinuities and the segment of every sample.
    fn run(srate: f64, ts: &[f64]) -> (Vec<Discontinuity>, Vec<u32>) {
        let mut g = GapDetector::new(srate);
        let mut found = Vec::new();
        for &t in ts {
            match g.observe(t) {
                Step::Break(d) | Step::Release(Some((d, _))) => found.push(d),
                _ => {}
            }
        }
        (found, GapDetector::segment_all(srate, ts))
    }

    #[test]
    fn regular_stream_has_no_gap() {
        let ts: Vec<f64> = (0..500).map(|i| 10.0 + i as f64 / 1000.0).collect();
        let (found, seg) = run(1000.0, &ts);
        assert!(found.is_empty());
        assert!(seg.iter().all(|&s| s == 0));
    }

    #[test]
    fn finds_gap_with_its_length() {
        let mut ts: Vec<f64> = (0..10).map(|i| i as f64 / 1000.0).collect();
        ts.extend((47..1500).map(|i| i as f64 / 1000.0));
        let (found, seg) = run(1000.0, &ts);
        assert_eq!(found.len(), 1);
        assert!(matches!(found[0], Discontinuity::Gap { missing: 37, .. }), "{found:?}");
        assert!(seg[..10].iter().all(|&s| s == 0) && seg[10..].iter().all(|&s| s == 1), "{seg:?}");
    }

    #[test]
    fn finds_clock_reset() {
        let mut ts: Vec<f64> = (0..100).map(|i| 100.0 + i as f64 / 600.614).collect();
        ts.extend((0..100).map(|i| 3.0 + i as f64 / 600.614));
        let (found, seg) = run(600.614, &ts);
        assert!(matches!(found[..], [Discontinuity::ClockReset { .. }]), "{found:?}");
        assert_eq!(seg[100], 1);
    }

    #[test]
    fn late_pushes_and_off_nominal_rate_are_not_gaps_but_outages_are() {
        // Chunks of 10 stamped at push time, from a source 1% fast; pushes usually up to
        // 1 ms late, every 50th chunk 40 ms late (the thread was descheduled) and then
        // caught up: never a discontinuity. A real 200 ms outage is one gap, found at its
        // first sample, whatever the chunking.
        let mut rng = 99u64;
        let mut ts = Vec::new();
        for c in 0..3000u64 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut delay = 0.001 * ((rng >> 11) as f64 / (1u64 << 53) as f64);
            if c % 50 == 25 {
                delay += 0.040;
            }
            let outage = if c >= 2000 { 0.2 } else { 0.0 };
            let push = 50.0 + (c * 10 + 9) as f64 / 1010.0 + delay + outage;
            ts.extend((0..10).map(|k| push - (9 - k) as f64 / 1000.0));
        }
        let (found, seg) = run(1000.0, &ts);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(matches!(found[0], Discontinuity::Gap { missing, .. } if (195..=205).contains(&missing)), "{found:?}");
        assert!(seg[..20_000].iter().all(|&s| s == 0) && seg[20_000..].iter().all(|&s| s == 1));
    }

    /// Chunks of 10 at 1 kHz, each stamped at its push (earlier samples back-dated);
    /// a chunk produced during a stall `(start, seconds)` is pushed when the stall ends;
    /// `lost` samples are really lost before chunk `at` (`(at, samples)`).
    fn stalling(stalls: &[(f64, f64)], lost: &[(u64, u64)]) -> Vec<f64> {
        let mut ts = Vec::new();
        let mut skipped = 0u64;
        for c in 0..4000u64 {
            skipped += lost.iter().filter(|(at, _)| *at == c).map(|(_, n)| n).sum::<u64>();
            let produced = (c * 10 + 9 + skipped) as f64 / 1000.0;
            let push = stalls.iter().find(|(s, d)| produced >= *s && produced < s + d).map_or(produced, |(s, d)| s + d);
            ts.extend((0..10).map(|k| 20.0 + push - (9 - k) as f64 / 1000.0));
        }
        ts
    }

    #[test]
    fn a_stall_that_catches_up_is_no_gap_and_does_not_hide_real_losses() {
        // One 150 ms stall: everything arrives, nothing is a gap.
        let (found, seg) = run(1000.0, &stalling(&[(12.0, 0.15)], &[]));
        assert!(found.is_empty(), "{found:?}");
        assert!(seg.iter().all(|&s| s == 0));
        // Stalls of 30-80 ms every 1.5 s, and 40 and 20 samples really lost: both gaps
        // found with their lengths.
        let stalls: Vec<(f64, f64)> =
            (1..26).map(|k| (k as f64 * 1.5, 0.03 + 0.05 * ((k * 7 % 10) as f64 / 10.0))).collect();
        let (found, _) = run(1000.0, &stalling(&stalls, &[(1020, 40), (2520, 20)]));
        let missing: Vec<u64> = found
            .iter()
            .map(|d| match d {
                Discontinuity::Gap { missing, .. } => *missing,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(missing, vec![40, 20]);
    }

    #[test]
    fn a_small_backward_step_is_a_clock_reset() {
        let mut ts: Vec<f64> = (0..2000).map(|i| 100.0 + i as f64 / 1000.0).collect();
        ts.extend((2000..4000).map(|i| 100.0 - 0.05 + i as f64 / 1000.0));
        let (found, seg) = run(1000.0, &ts);
        assert!(matches!(found[..], [Discontinuity::ClockReset { .. }]), "{found:?}");
        assert_eq!(seg[2000], 1);
    }
}
