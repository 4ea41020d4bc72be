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
