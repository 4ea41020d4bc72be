//! [`SampleClock`]: the time of any sample of a segment, from the data's own timestamps.
//!
//! Real sources stamp chunks when they are pushed (liblsl back-dates the earlier samples
//! of a chunk at the nominal rate), so raw timestamps jitter by the pushing thread's
//! scheduling, and the true sampling rate differs from the nominal one (a crystal is off
//! by tens of ppm; some amplifiers by a percent). `SampleClock` fits `t = a + b * n` (sample
//! index `n` since the segment began) by exponentially weighted least squares, so it
//! follows slow drift, averages chunk-stamping jitter away, and can be evaluated at any
//! fractional position (the resampler's output positions).
//!
//! The fit is kept on the residual from the nominal grid (`t - t_first - n / rate`), in
//! sums relative to the newest sample, so the numbers stay small for hours. Per sample:
//! a handful of flops, no allocation.

/// Half-life (seconds) of a sample's weight in the fit. Long enough to average jitter
/// away, short enough to follow temperature drift (liblsl's own dejitter uses 90 s).
pub const FIT_HALF_LIFE_S: f64 = 30.0;

/// Below this many samples the fit keeps the nominal slope (fits only the offset).
const MIN_SLOPE_SAMPLES: u64 = 16;
/// Jitter assumed before any was measured (milliseconds, RMS).
const PRIOR_JITTER_MS: f64 = 1.0;

#[derive(Debug, Clone)]
pub struct SampleClock {
    period: f64,
    lambda: f64,
    /// Samples seen since the reset.
    n: u64,
    /// First timestamp of the segment.
    t_first: f64,
    // Weighted sums; x = index relative to the newest sample (<= 0), y = residual.
    sw: f64,
    sx: f64,
    sxx: f64,
    sy: f64,
    sxy: f64,
    /// Exponentially weighted mean squared residual of the samples the fit took (jitter).
    jitter_ms2: f64,
    /// Late samples in a row that the fit left out (see [`push`](Self::push)).
    rejected_run: u64,
    /// The longest run of late samples left out before the fit takes them (1 s).
    max_rejected_run: u64,
}

impl SampleClock {
    /// For a stream of nominal rate `rate` (Hz, > 0).
    pub fn new(rate: f64) -> Self {
        let half_life_samples = (FIT_HALF_LIFE_S * rate).max(2.0);
        Self {
            period: 1.0 / rate,
            lambda: 0.5f64.powf(1.0 / half_life_samples),
            n: 0,
            t_first: 0.0,
            sw: 0.0,
            sx: 0.0,
            sxx: 0.0,
            sy: 0.0,
            sxy: 0.0,
            jitter_ms2: PRIOR_JITTER_MS * PRIOR_JITTER_MS,
            rejected_run: 0,
            max_rejected_run: rate.ceil().max(1.0) as u64,
        }
    }

    /// Starts a new segment.
    pub fn reset(&mut self) {
        *self = Self::new(1.0 / self.period);
    }

    /// Samples seen since the reset.
    pub fn samples(&self) -> u64 {
        self.n
    }

    /// Adds the timestamp of the next sample.
    ///
    /// Pushes are only ever late (a source stamps a chunk when it gets to push it), so a
    /// sample much later than the fit (6x the jitter, at least 1.5 periods) is a stalled
    /// push, not the clock: the fit takes the line's own time for it instead, for up to
    /// 1 s of samples in a row (after that the lateness is the clock, and the fit follows).
    #[inline]
    pub fn push(&mut self, mut t: f64) {
        if self.n == 0 {
            self.t_first = t;
        } else {
            let predicted = self.at(self.n as f64);
            let e = t - predicted;
            let limit = (6.0 * self.jitter_ms2.sqrt() * 1e-3).max(1.5 * self.period);
            if self.n >= MIN_SLOPE_SAMPLES && e > limit && self.rejected_run < self.max_rejected_run {
                self.rejected_run += 1;
                t = predicted;
            } else {
                self.rejected_run = 0;
                self.jitter_ms2 = self.lambda * self.jitter_ms2 + (1.0 - self.lambda) * (e * 1e3) * (e * 1e3);
            }
            let l = self.lambda;
            // Age every point (weights decay) and move the origin to the new sample
            // (every x decreases by 1).
            let (sw, sx, sxx, sy, sxy) = (l * self.sw, l * self.sx, l * self.sxx, l * self.sy, l * self.sxy);
            self.sxx = sxx - 2.0 * sx + sw;
            self.sxy = sxy - sy;
            self.sx = sx - sw;
            self.sw = sw;
            self.sy = sy;
        }
        let y = t - self.t_first - self.n as f64 * self.period;
        self.sw += 1.0;
        self.sy += y;
        self.n += 1;
    }

    /// Fitted residual line at `x` (relative to the newest sample).
    fn residual(&self, x: f64) -> f64 {
        if self.sw == 0.0 {
            return 0.0;
        }
        let d = self.sw * self.sxx - self.sx * self.sx;
        if self.n < MIN_SLOPE_SAMPLES || d <= 1e-12 * self.sw * self.sxx.abs().max(1.0) {
            return self.sy / self.sw;
        }
        let b = (self.sw * self.sxy - self.sx * self.sy) / d;
        let a = (self.sy - b * self.sx) / self.sw;
        a + b * x
    }

    /// Time of (fractional) sample position `pos` (samples since the reset).
    #[inline]
    pub fn at(&self, pos: f64) -> f64 {
        if self.n == 0 {
            return self.t_first;
        }
        let x = pos - (self.n - 1) as f64;
        self.t_first + pos * self.period + self.residual(x)
    }

    /// The fitted sampling rate (Hz); the nominal one until the fit has enough samples.
    pub fn rate(&self) -> f64 {
        let d = self.sw * self.sxx - self.sx * self.sx;
        if self.n < MIN_SLOPE_SAMPLES || d <= 0.0 {
            return 1.0 / self.period;
        }
        let b = (self.sw * self.sxy - self.sx * self.sy) / d;
        1.0 / (self.period + b)
    }

    /// Root-mean-square jitter of the timestamps around the fit (seconds).
    pub fn jitter_s(&self) -> f64 {
        self.jitter_ms2.sqrt() * 1e-3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks of `chunk` stamped at push time (last sample), earlier ones back-dated at
    /// the nominal rate, as liblsl does; pushes delayed by up to `jitter` seconds.
    fn chunk_stamped(nominal: f64, true_rate: f64, chunk: usize, jitter: f64, n: usize) -> Vec<f64> {
        let mut rng = 12345u64;
        let mut out = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            let last = i + chunk - 1;
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let delay = jitter * ((rng >> 11) as f64 / (1u64 << 53) as f64);
            let push = 100.0 + last as f64 / true_rate + delay;
            for k in 0..chunk {
                out.push(push - (chunk - 1 - k) as f64 / nominal);
            }
            i += chunk;
        }
        out.truncate(n);
        out
    }

    #[test]
    fn follows_a_source_one_percent_fast_through_jitter() {
        let (nominal, true_rate) = (1000.0, 1010.0);
        let ts = chunk_stamped(nominal, true_rate, 10, 0.004, 120_000);
        let mut c = SampleClock::new(nominal);
        let mut worst: f64 = 0.0;
        for (i, &t) in ts.iter().enumerate() {
            c.push(t);
            if i > 5_000 {
                // The true time of sample i is 100 + i / true_rate (plus the mean delay).
                let err = c.at(i as f64) - (100.0 + i as f64 / true_rate + 0.002);
                worst = worst.max(err.abs());
            }
        }
        assert!(worst < 0.0015, "worst error {worst} s");
        assert!((c.rate() - true_rate).abs() < 0.05, "rate {}", c.rate());
        assert!(c.jitter_s() > 0.0005 && c.jitter_s() < 0.004, "jitter {}", c.jitter_s());
    }

    #[test]
    fn a_stalled_push_does_not_pull_the_clock_late() {
        // 1 kHz in chunks of 10 stamped at push; pushes stall 400 ms at 10 s, then the
        // backlog goes out at once. The fitted time of every sample stays on the truth.
        let mut c = SampleClock::new(1000.0);
        let mut worst: f64 = 0.0;
        for chunk in 0..3000u64 {
            let produced = 5.0 + (chunk * 10 + 9) as f64 / 1000.0;
            let push = if (15.0..15.4).contains(&produced) { 15.4 } else { produced };
            for k in 0..10u64 {
                let i = chunk * 10 + k;
                c.push(push - (9 - k) as f64 / 1000.0);
                if i > 2000 {
                    worst = worst.max((c.at(i as f64) - (5.0 + i as f64 / 1000.0)).abs());
                }
            }
        }
        assert!(worst < 0.0005, "worst error {worst} s");
    }

    #[test]
    fn exact_grid_is_reproduced_exactly() {
        let mut c = SampleClock::new(600.614);
        for i in 0..10_000 {
            c.push(5.0 + i as f64 / 600.614);
        }
        assert!((c.at(9_999.5) - (5.0 + 9_999.5 / 600.614)).abs() < 1e-9);
        c.reset();
        assert_eq!(c.samples(), 0);
        c.push(7.0);
        assert_eq!(c.at(0.0), 7.0);
    }
}
