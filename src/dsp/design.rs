//! Filter design: Butterworth low/high/band-pass and notch filters as second-order
//! sections, following scipy.signal (`butter(..., output='sos')`, `iirnotch`): analog
//! prototype, frequency transform, bilinear transform with pre-warping.

use std::f64::consts::PI;

/// One second-order section: `b0 b1 b2 / 1 a1 a2` (a0 normalised to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Biquad {
    pub b: [f64; 3],
    pub a: [f64; 3],
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct C(f64, f64);
impl C {
    fn add(self, o: C) -> C {
        C(self.0 + o.0, self.1 + o.1)
    }
    fn sub(self, o: C) -> C {
        C(self.0 - o.0, self.1 - o.1)
    }
    fn mul(self, o: C) -> C {
        C(self.0 * o.0 - self.1 * o.1, self.0 * o.1 + self.1 * o.0)
    }
    fn div(self, o: C) -> C {
        let d = o.0 * o.0 + o.1 * o.1;
        C((self.0 * o.0 + self.1 * o.1) / d, (self.1 * o.0 - self.0 * o.1) / d)
    }
    fn scale(self, s: f64) -> C {
        C(self.0 * s, self.1 * s)
    }
    fn sqrt(self) -> C {
        let r = (self.0 * self.0 + self.1 * self.1).sqrt();
        let re = ((r + self.0) / 2.0).max(0.0).sqrt();
        let im = ((r - self.0) / 2.0).max(0.0).sqrt().copysign(self.1);
        C(re, im)
    }
}

/// Analog Butterworth prototype poles (scipy `buttap`).
fn buttap(n: usize) -> Vec<C> {
    (0..n)
        .map(|i| {
            let m = -(n as f64) + 1.0 + 2.0 * i as f64;
            let th = PI * m / (2.0 * n as f64);
            C(-th.cos(), -th.sin())
        })
        .collect()
}

/// Pre-warped analog frequency for a digital cutoff (Hz) at rate `fs` (scipy, fs=2).
fn warp(f: f64, fs: f64) -> f64 {
    4.0 * (PI * (f / (fs / 2.0)) / 2.0).tan()
}

/// Bilinear transform (fs = 2 as in scipy), zeros padded at -1.
fn bilinear(z: &[C], p: &[C], k: f64) -> (Vec<C>, Vec<C>, f64) {
    let fs2 = C(4.0, 0.0);
    let zd: Vec<C> = z
        .iter()
        .map(|&z| fs2.add(z).div(fs2.sub(z)))
        .chain(std::iter::repeat_n(C(-1.0, 0.0), p.len() - z.len()))
        .collect();
    let pd: Vec<C> = p.iter().map(|&p| fs2.add(p).div(fs2.sub(p))).collect();
    let num = z.iter().fold(C(1.0, 0.0), |a, &z| a.mul(fs2.sub(z)));
    let den = p.iter().fold(C(1.0, 0.0), |a, &p| a.mul(fs2.sub(p)));
    (zd, pd, k * num.div(den).0)
}

/// Groups digital zeros and poles into sections: each complex pole pair (or real pole)
/// with two (or one) of the zeros; the overall gain goes into the first section.
fn zpk_to_sos(mut z: Vec<C>, p: Vec<C>, k: f64) -> Vec<Biquad> {
    let mut pairs: Vec<(C, Option<C>)> = Vec::new();
    let mut reals: Vec<C> = Vec::new();
    for &pp in &p {
        if pp.1 > 1e-12 {
            pairs.push((pp, None));
        } else if pp.1.abs() <= 1e-12 {
            reals.push(pp);
        }
    }
    while reals.len() >= 2 {
        let (a, b) = (reals.pop().unwrap(), reals.pop().unwrap());
        pairs.push((a, Some(b)));
    }
    let mut sos = Vec::new();
    let take_zero = |z: &mut Vec<C>| z.pop().unwrap_or(C(0.0, 0.0));
    for (pp, other) in pairs {
        let a = match other {
            None => [1.0, -2.0 * pp.0, pp.0 * pp.0 + pp.1 * pp.1],
            Some(q) => [1.0, -(pp.0 + q.0), pp.0 * q.0],
        };
        // Zeros: take a conjugate pair if present, else two reals.
        let b = if let Some(i) = z.iter().position(|c| c.1 > 1e-12) {
            let zz = z.remove(i);
            if let Some(j) = z.iter().position(|c| (c.1 + zz.1).abs() < 1e-9 && (c.0 - zz.0).abs() < 1e-9) {
                z.remove(j);
            }
            [1.0, -2.0 * zz.0, zz.0 * zz.0 + zz.1 * zz.1]
        } else {
            let (z1, z2) = (take_zero(&mut z), take_zero(&mut z));
            [1.0, -(z1.0 + z2.0), z1.0 * z2.0]
        };
        sos.push(Biquad { b, a });
    }
    if let Some(pp) = reals.pop() {
        let z1 = take_zero(&mut z);
        sos.push(Biquad { b: [1.0, -z1.0, 0.0], a: [1.0, -pp.0, 0.0] });
    }
    if let Some(first) = sos.first_mut() {
        first.b.iter_mut().for_each(|v| *v *= k);
    }
    sos
}

/// Butterworth low-pass of order `n` at `f` Hz for rate `fs` (scipy `butter(n, f, 'low', fs=fs, output='sos')`).
pub fn butter_lowpass(n: usize, f: f64, fs: f64) -> Vec<Biquad> {
    let wo = warp(f, fs);
    let p: Vec<C> = buttap(n).into_iter().map(|p| p.scale(wo)).collect();
    let (z, p, k) = bilinear(&[], &p, wo.powi(n as i32));
    zpk_to_sos(z, p, k)
}

/// Butterworth high-pass (scipy `butter(n, f, 'high', fs=fs, output='sos')`).
pub fn butter_highpass(n: usize, f: f64, fs: f64) -> Vec<Biquad> {
    let wo = warp(f, fs);
    let proto = buttap(n);
    let p: Vec<C> = proto.iter().map(|&p| C(wo, 0.0).div(p)).collect();
    let z = vec![C(0.0, 0.0); n];
    let k = 1.0 / proto.iter().fold(C(1.0, 0.0), |a, &p| a.mul(p.scale(-1.0))).0;
    let (z, p, k) = bilinear(&z, &p, k);
    zpk_to_sos(z, p, k)
}

/// Butterworth band-pass of order `n` (2n poles) between `lo` and `hi` Hz
/// (scipy `butter(n, [lo, hi], 'band', fs=fs, output='sos')`).
pub fn butter_bandpass(n: usize, lo: f64, hi: f64, fs: f64) -> Vec<Biquad> {
    let (w1, w2) = (warp(lo, fs), warp(hi, fs));
    let bw = w2 - w1;
    let wo2 = C(w1 * w2, 0.0);
    let mut p = Vec::with_capacity(2 * n);
    for pl in buttap(n) {
        let pl = pl.scale(bw / 2.0);
        let s = pl.mul(pl).sub(wo2).sqrt();
        p.push(pl.add(s));
        p.push(pl.sub(s));
    }
    let z = vec![C(0.0, 0.0); n];
    let (z, p, k) = bilinear(&z, &p, bw.powi(n as i32));
    zpk_to_sos(z, p, k)
}

/// Second-order IIR notch at `f0` Hz with quality `q` (scipy `iirnotch(f0, q, fs)`).
pub fn notch(f0: f64, q: f64, fs: f64) -> Biquad {
    let w0 = 2.0 * PI * f0 / fs;
    let bw = w0 / q;
    let beta = (bw / 2.0).tan();
    let gain = 1.0 / (1.0 + beta);
    Biquad { b: [gain, -2.0 * gain * w0.cos(), gain], a: [1.0, -2.0 * gain * w0.cos(), 2.0 * gain - 1.0] }
}

/// Group delay (seconds) of the cascade at `f` Hz.
pub fn group_delay_s(sos: &[Biquad], f: f64, fs: f64) -> f64 {
    let w = 2.0 * PI * f / fs;
    // tau of a polynomial sum_k p_k z^-k at e^{jw}: Re(sum k p_k e^{-jwk} / sum p_k e^{-jwk}).
    let tau = |p: &[f64; 3]| {
        let (mut num, mut den) = (C(0.0, 0.0), C(0.0, 0.0));
        for (k, &c) in p.iter().enumerate() {
            let e = C((w * k as f64).cos(), -(w * k as f64).sin()).scale(c);
            den = den.add(e);
            num = num.add(e.scale(k as f64));
        }
        num.div(den).0
    };
    sos.iter().map(|s| tau(&s.b) - tau(&s.a)).sum::<f64>() / fs + 0.0
}

/// The delay (seconds) that causal filtering puts on an evoked response with energy in
/// `lo..hi` Hz, relative to the same filters run forward-backward (zero phase): the shift
/// `tau` that best aligns the two, maximising `sum_f |H|^2 Re(H(f) e^{i 2 pi f tau}) / f` over
/// the band (a 1/f, ERF-like spectrum). For a 0.1-40 Hz order-4 band-pass at 1 kHz it is
/// about 10.6 ms (the low-pass's delay; the high-pass's phase lead at low frequencies
/// offsets part of its group delay).
pub fn evoked_delay_s(sos: &[Biquad], lo: f64, hi: f64, fs: f64) -> f64 {
    if sos.is_empty() || hi <= lo || lo < 0.0 {
        return 0.0;
    }
    let bins: Vec<(f64, f64, C)> = (0..=200)
        .map(|i| {
            let f = (lo + (hi - lo) * i as f64 / 200.0).max(1e-3);
            let h = freq_response(sos, f, fs);
            let p = h.0 * h.0 + h.1 * h.1;
            (f, p / f, h)
        })
        .collect();
    let score = |tau: f64| -> f64 {
        bins.iter()
            .map(|&(f, w, h)| {
                let ph = 2.0 * PI * f * tau;
                w * (h.0 * ph.cos() - h.1 * ph.sin())
            })
            .sum()
    };
    // 0.1 ms steps over +-0.25 s.
    (-2500..=2500).map(|i| i as f64 * 1e-4).max_by(|a, b| score(*a).total_cmp(&score(*b))).unwrap_or(0.0) + 0.0
}

/// H(e^{i 2 pi f / fs}) of the cascade.
fn freq_response(sos: &[Biquad], f: f64, fs: f64) -> C {
    let w = 2.0 * PI * f / fs;
    let z1 = C(w.cos(), -w.sin());
    let z2 = z1.mul(z1);
    sos.iter().fold(C(1.0, 0.0), |acc, s| {
        let num = C(s.b[0], 0.0).add(z1.scale(s.b[1])).add(z2.scale(s.b[2]));
        let den = C(1.0, 0.0).add(z1.scale(s.a[1])).add(z2.scale(s.a[2]));
        acc.mul(num.div(den))
    })
}

/// |H(f)| of the cascade.
pub fn magnitude(sos: &[Biquad], f: f64, fs: f64) -> f64 {
    let h = freq_response(sos, f, fs);
    (h.0 * h.0 + h.1 * h.1).sqrt()
}

/// Seconds until the cascade's impulse response has delivered all but `residual` of its
/// energy (at most `max_s`): how long a start-up disturbance takes to die out.
pub fn settle_time_s(sos: &[Biquad], fs: f64, residual: f64, max_s: f64) -> f64 {
    if sos.is_empty() {
        return 0.0;
    }
    let n = (max_s * fs).ceil() as usize;
    let mut f = super::SosFilter::new(sos.to_vec(), 1);
    let mut energy = Vec::with_capacity(n);
    let mut total = 0.0f64;
    for i in 0..n {
        let mut x = [if i == 0 { 1.0f32 } else { 0.0 }];
        f.process_row(&mut x);
        total += f64::from(x[0]).powi(2);
        energy.push(total);
    }
    let target = total * (1.0 - residual);
    energy.iter().position(|&e| e >= target).map_or(max_s, |i| (i + 1) as f64 / fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(sos: &[Biquad], f: f64, fs: f64) -> f64 {
        magnitude(sos, f, fs)
    }

    #[test]
    fn butterworth_has_unit_passband_and_half_power_at_cutoff() {
        let fs = 1000.0;
        let bp = butter_bandpass(4, 1.0, 40.0, fs);
        assert_eq!(bp.len(), 4);
        assert!((response(&bp, 10.0, fs) - 1.0).abs() < 1e-3);
        assert!((response(&bp, 40.0, fs) - 0.5f64.sqrt()).abs() < 1e-6);
        assert!(response(&bp, 200.0, fs) < 1e-3);
        let lp = butter_lowpass(5, 30.0, fs);
        assert_eq!(lp.len(), 3);
        assert!((response(&lp, 30.0, fs) - 0.5f64.sqrt()).abs() < 1e-6);
        let hp = butter_highpass(3, 0.5, fs);
        assert!((response(&hp, 0.5, fs) - 0.5f64.sqrt()).abs() < 1e-6);
        assert!(response(&[notch(50.0, 30.0, fs)], 50.0, fs) < 1e-9);
    }

    #[test]
    fn group_delay_matches_a_measured_shift() {
        // A 10 Hz sine through the causal band-pass comes out shifted by the group delay.
        let fs = 1000.0;
        let bp = butter_bandpass(4, 0.1, 40.0, fs);
        let gd = group_delay_s(&bp, 10.0, fs);
        assert!(gd > 0.005 && gd < 0.03, "{gd}");
        let mut f = crate::dsp::SosFilter::new(bp.clone(), 1);
        let (mut best, mut best_lag) = (f64::MIN, 0);
        let x: Vec<f32> = (0..20_000).map(|i| (2.0 * PI * 10.0 * i as f64 / fs).sin() as f32).collect();
        let mut y = x.clone();
        f.process(&mut y);
        for lag in 0..60 {
            let c: f64 = (15_000..19_000).map(|i| f64::from(x[i - lag]) * f64::from(y[i])).sum();
            if c > best {
                (best, best_lag) = (c, lag);
            }
        }
        // Phase delay and group delay differ a little; the lag is within 2 ms.
        assert!((best_lag as f64 / fs - gd).abs() < 0.004, "lag {best_lag} vs gd {gd}");
        // The alignment delay of the evoked band (scipy, same weighting: 10.6 ms).
        let band = evoked_delay_s(&bp, 1.0, 30.0, fs);
        assert!((band - 0.0106).abs() < 0.0003, "{band}");
        // scipy: the 0.1-40 Hz band-pass keeps 0.1% of its energy after 3.09 s.
        let t = settle_time_s(&bp, fs, 1e-3, 60.0);
        assert!((t - 3.094).abs() < 0.01, "{t}");
        assert_eq!(settle_time_s(&[], fs, 1e-3, 60.0), 0.0);
    }
}
