//! [`SensorNoise`]: background MEG noise: 1/f ("pink") brain and sensor noise, posterior
//! alpha (~10 Hz, waxing and waning), power-line noise with harmonics, and white noise.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use super::layout::SensorLayout;

/// Per-channel noise generator state; produces samples without allocating.
pub struct SensorNoise {
    rng: SmallRng,
    srate: f64,
    /// Paul Kellet's pink-noise filter state, 7 per channel.
    pink: Vec<[f32; 7]>,
    scale: Vec<f32>,
    alpha_gain: Vec<f32>,
    line_gain: Vec<f32>,
    line_freq: f64,
    alpha_phase: f64,
    alpha_env: f32,
    n: u64,
}

impl SensorNoise {
    pub fn new(layout: &SensorLayout, srate: f64, line_freq: f64, level: f32, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let c = layout.len();
        let scale: Vec<f32> = (0..c).map(|i| layout.noise_scale(i) * level).collect();
        let alpha_gain = (0..c).map(|i| 1.5 * layout.occipital_weight(i) * scale[i]).collect();
        let line_gain = (0..c).map(|i| scale[i] * rng.random_range(0.2..1.0)).collect();
        Self {
            rng,
            srate,
            pink: vec![[0.0; 7]; c],
            scale,
            alpha_gain,
            line_gain,
            line_freq,
            alpha_phase: 0.0,
            alpha_env: 1.0,
            n: 0,
        }
    }

    /// Writes `samples` rows of noise into `out` (sample-major).
    pub fn fill(&mut self, out: &mut [f32], samples: usize) {
        let c = self.scale.len();
        let dt = 1.0 / self.srate;
        for row in out.chunks_exact_mut(c).take(samples) {
            let t = self.n as f64 * dt;
            self.alpha_phase += std::f64::consts::TAU * 10.0 * dt;
            let step: f32 = self.rng.sample(StandardNormal);
            self.alpha_env = (self.alpha_env + 0.02 * step * (dt as f32).sqrt() * 10.0).clamp(0.2, 2.0);
            let alpha = self.alpha_env * self.alpha_phase.sin() as f32;
            let w = std::f64::consts::TAU * self.line_freq * t;
            let line = (w.sin() + 0.3 * (3.0 * w).sin()) as f32;
            for (i, v) in row.iter_mut().enumerate() {
                let white: f32 = StandardNormal.sample(&mut self.rng);
                let p = &mut self.pink[i];
                p[0] = 0.99886 * p[0] + white * 0.0555179;
                p[1] = 0.99332 * p[1] + white * 0.0750759;
                p[2] = 0.96900 * p[2] + white * 0.1538520;
                p[3] = 0.86650 * p[3] + white * 0.3104856;
                p[4] = 0.55000 * p[4] + white * 0.5329522;
                p[5] = -0.7616 * p[5] - white * 0.0168980;
                let pink = (p[0] + p[1] + p[2] + p[3] + p[4] + p[5] + p[6] + white * 0.5362) * 0.2;
                p[6] = white * 0.115926;
                *v = self.scale[i] * (pink + 0.3 * white) + self.alpha_gain[i] * alpha + self.line_gain[i] * line;
            }
            self.n += 1;
        }
    }
}
