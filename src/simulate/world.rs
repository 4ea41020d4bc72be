//! [`EvokedWorld`]: what a simulated brain does when it sees an image.
//!
//! A linear generative model, exported by `models/build_demo.py` into `<model>/world/`:
//! the image's latent features `f` (its gallery embedding, dim D) drive D cortical source
//! time courses `kernel_d(t)` (early low-level features ~100 ms, category ~200-400 ms,
//! an offset response), each projected to the sensors through a fixed spatial pattern
//! `pattern_d` (a forward model over the real sensor layout):
//!
//! ```text
//! meg(c, t) += sum_d f_d * kernel_d(t - onset) * pattern_d(c)
//! ```
//!
//! Files: `world.json` (`layout`, `kernel_rate_hz`, `description`), `patterns.npy`
//! float32 `[D, channels]` in SI units (T, T/m) per unit feature, `kernels.npy` float32
//! `[D, K]` sampled at `kernel_rate_hz` from the onset, and optionally `features.npy`
//! float32 `[N, D]`: the features each gallery image drives (row i = line i of
//! `gallery/ids.txt`); without it the drive is the gallery embedding itself.

use std::path::Path;

use crate::model::{npy, Gallery};

#[derive(Debug, Clone)]
pub struct EvokedWorld {
    pub layout: String,
    pub latent_dim: usize,
    pub channels: usize,
    /// `[D, channels]`
    pub patterns: Vec<f32>,
    /// `[D, K]`
    pub kernels: Vec<f32>,
    pub kernel_len: usize,
    pub kernel_rate: f64,
    pub stimuli: Gallery,
    /// `[N, D]` drive per stimulus.
    pub features: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct WorldJson {
    layout: String,
    kernel_rate_hz: f64,
}

/// A stimulus whose response is still playing out.
#[derive(Debug, Clone, Copy)]
pub struct ActiveStimulus {
    pub stimulus: usize,
    /// Onset, as a sample index of the simulated stream (may be fractional).
    pub onset_sample: f64,
}

impl EvokedWorld {
    /// Loads `<model_dir>/world` with `<model_dir>/gallery` as the stimulus set.
    pub fn load(model_dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let dir = model_dir.join("world");
        let meta: WorldJson = serde_json::from_str(
            &std::fs::read_to_string(dir.join("world.json"))
                .with_context(|| format!("reading {}/world.json", dir.display()))?,
        )
        .with_context(|| format!("parsing {}/world.json", dir.display()))?;
        let patterns = npy::read(&dir.join("patterns.npy"))?;
        let kernels = npy::read(&dir.join("kernels.npy"))?;
        let stimuli = Gallery::load(&model_dir.join("gallery"))?;
        let features = match npy::read(&dir.join("features.npy")) {
            Ok(f) => {
                anyhow::ensure!(
                    f.shape == [stimuli.len(), patterns.shape[0]],
                    "features.npy has shape {:?}; expected [{}, {}]",
                    f.shape,
                    stimuli.len(),
                    patterns.shape[0]
                );
                f.data
            }
            Err(npy::NpyError::Io { .. }) => stimuli.embeddings.clone(),
            Err(e) => return Err(e.into()),
        };
        anyhow::ensure!(patterns.shape.len() == 2 && kernels.shape.len() == 2, "world arrays must be 2-D");
        let (d, c) = (patterns.shape[0], patterns.shape[1]);
        anyhow::ensure!(kernels.shape[0] == d, "kernels.npy has {} rows, patterns.npy {}", kernels.shape[0], d);
        anyhow::ensure!(
            features.len() == stimuli.len() * d,
            "stimulus features do not match the world's {d} latent dims"
        );
        Ok(Self {
            layout: meta.layout,
            latent_dim: d,
            channels: c,
            patterns: patterns.data,
            kernel_len: kernels.shape[1],
            kernels: kernels.data,
            kernel_rate: meta.kernel_rate_hz,
            stimuli,
            features,
        })
    }

    /// Seconds after onset during which a stimulus still has a response.
    pub fn response_duration(&self) -> f64 {
        self.kernel_len as f64 / self.kernel_rate
    }

    /// Adds the responses of `active` stimuli to `out` (sample-major rows of `channels`),
    /// whose first row is stream sample `first_sample` at rate `srate`. `drive` is scratch
    /// of len D. Allocates nothing.
    pub fn add_responses(
        &self,
        out: &mut [f32],
        first_sample: u64,
        srate: f64,
        active: &[ActiveStimulus],
        drive: &mut [f32],
        gain: f32,
    ) {
        let (d, c) = (self.latent_dim, self.channels);
        for (r, row) in out.chunks_exact_mut(c).enumerate() {
            let n = (first_sample + r as u64) as f64;
            for a in active {
                let t = (n - a.onset_sample) / srate;
                if t < 0.0 {
                    continue;
                }
                let pos = t * self.kernel_rate;
                let k0 = pos.floor() as usize;
                if k0 + 1 >= self.kernel_len {
                    continue;
                }
                let frac = (pos - k0 as f64) as f32;
                let f = &self.features[a.stimulus * d..(a.stimulus + 1) * d];
                for (j, dv) in drive.iter_mut().enumerate().take(d) {
                    let k = &self.kernels[j * self.kernel_len..];
                    *dv = gain * f[j] * (k[k0] * (1.0 - frac) + k[k0 + 1] * frac);
                }
                for (j, &dv) in drive.iter().enumerate().take(d) {
                    if dv == 0.0 {
                        continue;
                    }
                    let p = &self.patterns[j * c..(j + 1) * c];
                    row.iter_mut().zip(p).for_each(|(o, &pv)| *o += dv * pv);
                }
            }
        }
    }
}
