//! [`SosFilter`]: a cascade of biquads run causally over many channels, transposed direct
//! form II in f64, state carried across chunks.

use super::Biquad;

pub struct SosFilter {
    sections: Vec<Biquad>,
    channels: usize,
    /// `[section][channel][2]` state.
    state: Vec<[f64; 2]>,
}

impl SosFilter {
    pub fn new(sections: Vec<Biquad>, channels: usize) -> Self {
        let state = vec![[0.0; 2]; sections.len() * channels];
        Self { sections, channels, state }
    }

    pub fn sections(&self) -> &[Biquad] {
        &self.sections
    }

    /// Forgets the past (after a discontinuity).
    pub fn reset(&mut self) {
        self.state.iter_mut().for_each(|s| *s = [0.0; 2]);
    }

    /// Sets the state to the steady state for a constant input equal to `row` (scipy's
    /// `sosfilt_zi` scaled by the first sample): a DC offset then passes through as if it
    /// had always been there, instead of ringing as a step for seconds.
    pub fn init_steady(&mut self, row: &[f32]) {
        debug_assert_eq!(row.len(), self.channels);
        for (ch, &x0) in row.iter().enumerate() {
            let mut x = f64::from(x0);
            for (si, s) in self.sections.iter().enumerate() {
                // Transposed direct form II at rest with input x and output y = G x.
                let g = (s.b[0] + s.b[1] + s.b[2]) / (1.0 + s.a[1] + s.a[2]);
                let y = g * x;
                let z1 = s.b[2] * x - s.a[2] * y;
                let z0 = s.b[1] * x - s.a[1] * y + z1;
                self.state[si * self.channels + ch] = [z0, z1];
                x = y;
            }
        }
    }

    /// Filters one sample of every channel in place.
    #[inline]
    pub fn process_row(&mut self, row: &mut [f32]) {
        debug_assert_eq!(row.len(), self.channels);
        for (si, s) in self.sections.iter().enumerate() {
            let st = &mut self.state[si * self.channels..(si + 1) * self.channels];
            for (x, z) in row.iter_mut().zip(st.iter_mut()) {
                let xin = f64::from(*x);
                let y = s.b[0] * xin + z[0];
                z[0] = s.b[1] * xin - s.a[1] * y + z[1];
                z[1] = s.b[2] * xin - s.a[2] * y;
                *x = y as f32;
            }
        }
    }

    /// Filters sample-major `data` (rows of `channels`) in place.
    pub fn process(&mut self, data: &mut [f32]) {
        for row in data.chunks_exact_mut(self.channels) {
            self.process_row(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::{butter_bandpass, butter_lowpass, notch};

    #[test]
    fn steady_start_passes_a_constant_without_a_transient() {
        let fs = 1000.0;
        for sos in [butter_bandpass(4, 0.1, 40.0, fs), butter_lowpass(4, 40.0, fs), vec![notch(50.0, 30.0, fs)]] {
            let dc = sos.iter().fold(1.0, |g, s| g * (s.b.iter().sum::<f64>()) / (1.0 + s.a[1] + s.a[2]));
            let mut f = SosFilter::new(sos, 2);
            f.init_steady(&[1e-10, -3.0]);
            for _ in 0..5000 {
                let mut row = [1e-10f32, -3.0];
                f.process_row(&mut row);
                assert!((f64::from(row[0]) - 1e-10 * dc).abs() < 1e-16, "{row:?}");
                assert!((f64::from(row[1]) + 3.0 * dc).abs() < 1e-5, "{row:?}");
            }
        }
    }
}
