//! [`SensorNoise`]: background MEG noise: 1/f ("pink") brain and sensor noise, posterior
//! alpha (~10 Hz, waxing and waning), power-line noise with harmonics, and white noise.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use super::layout::SensorLayout;

/// Per-channel noise generator state; produces samples without allocating.
///
/// The recipe is the one `models/build_demo.py` trains with, so live data has the
/// statistics the demo model saw: `scale * (3 * pink + 0.3 * white)` + posterior alpha
/// `1.5 * occipital^2 * scale * env(t) * sin(2 pi 10 t)` + line noise
/// `scale * U(0.2, 1) * (sin(2 pi f t) + 0.3 sin(2 pi 3f t))`.
pub struct SensorNoise {
    rng: SmallRng,
    srate: f64,
    /// Pink-noise IIR state (transposed direct form II), 3 per channel.
    pink: Vec<[f64; 3]>,
    scale: Vec<f32>,
    alpha_gain: Vec<f32>,
    line_gain: Vec<f32>,
    line_freq: f64,
    alpha_phase: f64,
    alpha_env: f64,
    env_step: f64,
    n: u64,
}

/// A 1/f ("pink") filter for white noise (3 poles, 3 zeros; 4 coefficients each).
const PINK_B: [f64; 4] = [0.049922035, -0.095993537, 0.050612699, -0.004408786];
const PINK_A: [f64; 4] = [1.0, -2.494956002, 2.017265875, -0.522189400];

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
            pink: vec![[0.0; 3]; c],
            scale,
            alpha_gain,
            line_gain,
            line_freq,
            alpha_phase: 0.0,
            alpha_env: 1.0,
            env_step: 0.3 / (srate * 10.0).sqrt(),
            n: 0,
        }
    }

    /// Writes `samples` rows of noise into `out` (sample-major).
    pub fn fill(&mut self, out: &mut [f32], samples: usize) {
        let c = self.scale.len();
        let dt = 1.0 / self.srate;
        for row in out.chunks_exact_mut(c).take(samples) {
            let t = self.n as f64 * dt;
            self.alpha_phase = std::f64::consts::TAU * 10.0 * t;
            let step: f64 = self.rng.sample(StandardNormal);
            self.alpha_env = (self.alpha_env + self.env_step * step).clamp(0.2, 2.0);
            let alpha = (self.alpha_env * self.alpha_phase.sin()) as f32;
            let w = std::f64::consts::TAU * self.line_freq * t;
            let line = (w.sin() + 0.3 * (3.0 * w).sin()) as f32;
            for (i, v) in row.iter_mut().enumerate() {
                let white: f64 = StandardNormal.sample(&mut self.rng);
                let drive: f64 = StandardNormal.sample(&mut self.rng);
                let z = &mut self.pink[i];
                let pink = PINK_B[0] * drive + z[0];
                z[0] = PINK_B[1] * drive - PINK_A[1] * pink + z[1];
                z[1] = PINK_B[2] * drive - PINK_A[2] * pink + z[2];
                z[2] = PINK_B[3] * drive - PINK_A[3] * pink;
                let broadband = (3.0 * pink + 0.3 * white) as f32;
                *v = self.scale[i] * broadband + self.alpha_gain[i] * alpha + self.line_gain[i] * line;
            }
            self.n += 1;
        }
    }
}
