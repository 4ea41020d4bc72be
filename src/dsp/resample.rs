//! [`Resampler`]: streaming, anti-aliased resampling from any input rate to the model's
//! rate, including non-integer ratios (600.614 -> 120 Hz).
//!
//! Each output sample `k` sits at input position `p_k = k * fin / fout` and is
//! `y[k] = sum_n x[n] * h(p_k - n)` with a Kaiser-windowed sinc `h` whose cutoff is a
//! fraction of the lower Nyquist rate. `h` is symmetric (zero phase): output `k` is emitted
//! once input up to `p_k + W` has arrived, adding `W / fin` seconds of latency and no
//! phase shift. For rational ratios this is exactly `scipy.signal.resample_poly(x, up,
//! down, window=h_up)` with `h_up[m] = h((m - W*up) / up) / up` (see tests/dsp.rs).
//!
//! The low-latency profile ([`Kernel::linear`], the contract's `resampler = "causal"`)
//! interpolates linearly between the two inputs around `p_k` (W = 1 input sample): the
//! anti-aliasing is then done before, by a causal low-pass among the contract's filters,
//! so the only look-ahead is one input sample (1 ms at 1 kHz) instead of 50 ms.

/// Kaiser window shape parameter (about 60 dB stop-band attenuation).
pub const KAISER_BETA: f64 = 6.0;
/// Cutoff as a fraction of the lower of the two Nyquist frequencies.
pub const CUTOFF: f64 = 0.9;
/// Kernel half-width in output sample periods (latency = this / fout).
pub const HALF_WIDTH_OUT: f64 = 6.0;

fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > 1e-16 * sum {
        term *= (x / (2.0 * k)).powi(2);
        sum += term;
        k += 1.0;
    }
    sum
}

/// The resampling kernel for ratio `fout / fin`, in input-sample units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kernel {
    /// Cutoff in cycles per input sample (0.5 for linear interpolation: no filtering).
    pub cutoff: f64,
    /// Half-width in input samples.
    pub half_width: f64,
    i0_beta: f64,
    linear: bool,
}

impl Kernel {
    /// The Kaiser-windowed sinc (zero phase, anti-aliasing, 6 output periods each side).
    pub fn new(fin: f64, fout: f64) -> Self {
        let ratio = (fout / fin).min(1.0);
        Self {
            cutoff: 0.5 * CUTOFF * ratio,
            half_width: HALF_WIDTH_OUT * (fin / fout).max(1.0),
            i0_beta: bessel_i0(KAISER_BETA),
            linear: false,
        }
    }

    /// Linear interpolation (`1 - |tau|`): no anti-aliasing of its own, one input sample
    /// of look-ahead.
    pub fn linear() -> Self {
        Self { cutoff: 0.5, half_width: 1.0, i0_beta: 1.0, linear: true }
    }

    /// `h(tau)`, tau in input samples from the output position.
    pub fn eval(&self, tau: f64) -> f64 {
        if self.linear {
            return (1.0 - tau.abs()).max(0.0);
        }
        let r = tau / self.half_width;
        if r.abs() >= 1.0 {
            return 0.0;
        }
        let x = 2.0 * self.cutoff * tau;
        let sinc = if x.abs() < 1e-12 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
        2.0 * self.cutoff * sinc * bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / self.i0_beta
    }
}

pub struct Resampler {
    channels: usize,
    fin: f64,
    fout: f64,
    kernel: Kernel,
    /// Input history, `[hist_len][channels]`, indexed by input sample number mod hist_len.
    history: Vec<f32>,
    hist_len: usize,
    /// Input samples seen since the last reset.
    inputs: u64,
    /// Next output index to produce.
    next_out: u64,
    weights: Vec<f64>,
    acc: Vec<f64>,
    /// Output row scratch handed to the callback.
    out_row: Vec<f32>,
    /// Value assumed for the inputs before the first one (zeros unless [`prime`]d).
    ///
    /// [`prime`]: Resampler::prime
    pad: Vec<f32>,
}

impl Resampler {
    /// The zero-phase Kaiser-sinc resampler.
    pub fn new(channels: usize, fin: f64, fout: f64) -> Self {
        Self::with_kernel(channels, fin, fout, Kernel::new(fin, fout))
    }

    pub fn with_kernel(channels: usize, fin: f64, fout: f64, kernel: Kernel) -> Self {
        let hist_len = 2 * kernel.half_width.ceil() as usize + 2;
        Self {
            channels,
            fin,
            fout,
            kernel,
            history: vec![0.0; hist_len * channels],
            hist_len,
            inputs: 0,
            next_out: 0,
            weights: vec![0.0; hist_len],
            acc: vec![0.0; channels],
            out_row: vec![0.0; channels],
            pad: vec![0.0; channels],
        }
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Seconds between an input sample and the output that first depends on it.
    pub fn latency_s(&self, fin: f64) -> f64 {
        self.kernel.half_width / fin
    }

    /// Starts over (after a discontinuity): history zeroed, counters at 0.
    pub fn reset(&mut self) {
        self.history.iter_mut().for_each(|v| *v = 0.0);
        self.inputs = 0;
        self.next_out = 0;
        self.pad.iter_mut().for_each(|v| *v = 0.0);
    }

    /// Treats the inputs before the first one as equal to `row` (constant extension), so
    /// a signal that starts away from zero does not start with a step. Call after a reset,
    /// before the first `push_row`.
    pub fn prime(&mut self, row: &[f32]) {
        self.pad.copy_from_slice(row);
    }

    /// Input position of output `k` (input samples since the last reset).
    /// Computed as `(k * fin) / fout`, so that integer positions of rational ratios are
    /// exact (the truncated kernel is discontinuous at its edge: rounding must not decide
    /// whether an edge tap counts).
    pub fn position(&self, k: u64) -> f64 {
        k as f64 * self.fin / self.fout
    }

    /// Feeds one input row; calls `emit(k, row)` for each output it completes.
    #[inline]
    pub fn push_row(&mut self, row: &[f32], mut emit: impl FnMut(u64, &[f32])) {
        let slot = (self.inputs % self.hist_len as u64) as usize;
        self.history[slot * self.channels..(slot + 1) * self.channels].copy_from_slice(row);
        let newest = self.inputs as i64;
        self.inputs += 1;
        loop {
            let p = self.position(self.next_out);
            if (p + self.kernel.half_width).floor() as i64 > newest {
                break;
            }
            let lo = (p - self.kernel.half_width).ceil() as i64;
            let hi = (p + self.kernel.half_width).floor() as i64;
            self.acc.iter_mut().for_each(|a| *a = 0.0);
            for (w, n) in self.weights.iter_mut().zip(lo..=hi) {
                *w = self.kernel.eval(p - n as f64);
            }
            for (i, n) in (lo..=hi).enumerate() {
                // Inputs before the start count as the pad (zeros, as scipy pads, unless
                // primed).
                let w = self.weights[i];
                if n < 0 {
                    self.acc.iter_mut().zip(&self.pad).for_each(|(a, &x)| *a += w * f64::from(x));
                    continue;
                }
                if newest - n >= self.hist_len as i64 {
                    continue;
                }
                let s = (n as u64 % self.hist_len as u64) as usize;
                let h = &self.history[s * self.channels..(s + 1) * self.channels];
                self.acc.iter_mut().zip(h).for_each(|(a, &x)| *a += w * f64::from(x));
            }
            self.out_row.iter_mut().zip(&self.acc).for_each(|(o, &a)| *o = a as f32);
            emit(self.next_out, &self.out_row);
            self.next_out += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampled_sine_keeps_amplitude_and_phase() {
        for (fin, fout) in [(1000.0, 120.0), (600.614, 120.0), (5000.0, 120.0), (100.0, 120.0)] {
            let mut r = Resampler::new(1, fin, fout);
            let f = 7.0;
            let mut max_err: f64 = 0.0;
            for n in 0..(fin * 4.0) as usize {
                let x = (2.0 * std::f64::consts::PI * f * n as f64 / fin).sin() as f32;
                r.push_row(&[x], |k, y| {
                    let t = k as f64 / fout;
                    if t > 0.5 && t < 3.0 {
                        let want = (2.0 * std::f64::consts::PI * f * t).sin();
                        max_err = max_err.max((f64::from(y[0]) - want).abs());
                    }
                });
            }
            assert!(max_err < 2e-3, "{fin} -> {fout}: max error {max_err}");
        }
    }

    #[test]
    fn linear_interpolation_has_one_input_of_look_ahead_and_follows_slow_signals() {
        let (fin, fout) = (1000.0, 120.0);
        let mut r = Resampler::with_kernel(1, fin, fout, Kernel::linear());
        let f = 7.0;
        let (mut max_err, mut max_wait): (f64, i64) = (0.0, 0);
        for n in 0..4000usize {
            let x = (2.0 * std::f64::consts::PI * f * n as f64 / fin).sin() as f32;
            r.push_row(&[x], |k, y| {
                let p = k as f64 * fin / fout;
                max_wait = max_wait.max(n as i64 - p.floor() as i64);
                let want = (2.0 * std::f64::consts::PI * f * k as f64 / fout).sin();
                max_err = max_err.max((f64::from(y[0]) - want).abs());
            });
        }
        assert_eq!(max_wait, 1, "outputs wait for one input after their position");
        // Linear interpolation of 7 Hz at 1 kHz: error bound (pi f / fin)^2 / 2.
        assert!(max_err < 1.5e-3, "max error {max_err}");
    }
}
