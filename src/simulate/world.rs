//! [`EvokedWorld`]: what a simulated brain does when it sees an image.
//!
//! A linear generative model, exported by `models/build_demo.py` into `<model>/world/`:
//! the image's latent features `f` (its gallery embedding, dim D) drive D cortical source
//! time courses `kernel_d(t)` (early low-level features ~100 ms, category ~200-400 ms,
//! an offset response), each projected to the sensors through a fixed spatial pattern
//! `pattern_d` (a forward model over the real sensor layout):
//!
//! ```text
//! meg(c, t) += a * sum_d f_d * kernel_d(t - onset - d) * pattern_d(c)
//! ```
//!
//! where a trial's amplitude `a` and latency shift `d` are 1 and 0 in a v1 world; a v2
//! world draws them per trial (`latency_jitter_s`, `amplitude_jitter`).
//!
//! Files (v1): `world.json` (`layout`, `kernel_rate_hz`, `isi_s`, `isi_jitter_s`,
//! `description`), `patterns.npy` float32 `[D, channels]` in SI units (T, T/m) per unit
//! feature, `kernels.npy` float32 `[D, K]` sampled at `kernel_rate_hz` from the onset, and
//! optionally `features.npy` float32 `[N, D]`: the features each gallery image drives
//! (row i = line i of `gallery/ids.txt`); without it the drive is the gallery embedding
//! itself.
//!
//! A v2 ("calibrated") world may add, each optional with v1 behaviour when absent:
//! `world.json` keys `latency_jitter_s`, `amplitude_jitter`, `sensor_pink`,
//! `brain_noise_sources`, `blink_rate_hz`, `blink_duration_s`, `heart_rate_hz`,
//! `heart_rate_jitter`; `noise_patterns.npy` `[S, channels]` (brain noise: S independent
//! pink sources), `blink_pattern.npy` and `cardiac_pattern.npy` `[channels]` (peak artefact
//! fields), and `held_out.txt` / `validation.txt` (gallery ids never trained on: the test
//! and model-choice images; the rest are training images). See [`NoiseModel`] for how the
//! noise parts are generated.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::noise::{Blinks, Cardiac, NoiseModel, BLINK_MIN_INTERVAL_S, DEFAULT_SENSOR_PINK};
use super::StimulusSet;
use crate::model::{npy, Gallery};

#[derive(Debug, Clone)]
pub struct EvokedWorld {
    /// The `world/` directory it was loaded from.
    pub dir: PathBuf,
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
    /// Mean stimulus onset asynchrony (s) the world was built for (default 1.5).
    pub isi_s: f64,
    /// Onsets vary uniformly by up to this many seconds either way (default 0.2).
    pub isi_jitter_s: f64,
    /// Per trial the response is delayed by `latency_jitter_s * z`, z ~ N(0, 1) clipped
    /// to +-3 (0: never).
    pub latency_jitter_s: f64,
    /// Per trial the response is multiplied by `exp(amplitude_jitter * z -
    /// amplitude_jitter^2 / 2)`, z ~ N(0, 1) (0: never).
    pub amplitude_jitter: f64,
    /// Sensor pink gain, brain noise, blinks and heartbeat.
    pub noise: NoiseModel,
    /// Gallery indices of the test images (`held_out.txt`), if the world names them.
    pub held_out: Option<Vec<usize>>,
    /// Gallery indices of the model-choice images (`validation.txt`; empty without it).
    pub validation: Vec<usize>,
}

fn default_isi() -> f64 {
    1.5
}
fn default_isi_jitter() -> f64 {
    0.2
}
fn default_sensor_pink() -> f64 {
    f64::from(DEFAULT_SENSOR_PINK)
}
fn default_blink_duration() -> f64 {
    0.25
}

#[derive(serde::Deserialize)]
struct WorldJson {
    layout: String,
    kernel_rate_hz: f64,
    #[serde(default = "default_isi")]
    isi_s: f64,
    #[serde(default = "default_isi_jitter")]
    isi_jitter_s: f64,
    #[serde(default)]
    latency_jitter_s: f64,
    #[serde(default)]
    amplitude_jitter: f64,
    #[serde(default = "default_sensor_pink")]
    sensor_pink: f64,
    brain_noise_sources: Option<usize>,
    blink_rate_hz: Option<f64>,
    #[serde(default = "default_blink_duration")]
    blink_duration_s: f64,
    heart_rate_hz: Option<f64>,
    #[serde(default)]
    heart_rate_jitter: f64,
}

impl WorldJson {
    /// Each key within what the simulator can honour, or an error naming the key.
    fn check(&self, file: &Path) -> anyhow::Result<()> {
        let f = file.display();
        let within = |key: &str, v: f64, lo: f64, hi: f64| {
            anyhow::ensure!(v.is_finite() && (lo..=hi).contains(&v), "{f}: {key} is {v}; it must be {lo}..={hi}");
            Ok(())
        };
        anyhow::ensure!(
            self.kernel_rate_hz.is_finite() && self.kernel_rate_hz > 0.0,
            "{f}: kernel_rate_hz must be a positive rate (Hz), got {}",
            self.kernel_rate_hz
        );
        within("isi_s", self.isi_s, 0.01, 60.0)?;
        within("isi_jitter_s", self.isi_jitter_s, 0.0, self.isi_s)?;
        within("latency_jitter_s", self.latency_jitter_s, 0.0, 0.2)?;
        within("amplitude_jitter", self.amplitude_jitter, 0.0, 2.0)?;
        within("sensor_pink", self.sensor_pink, 0.0, 100.0)?;
        // Blinks never overlap: the minimum interval is the longest blink.
        within("blink_rate_hz", self.blink_rate_hz.unwrap_or(0.0), 0.0, 1.0 / BLINK_MIN_INTERVAL_S)?;
        within("blink_duration_s", self.blink_duration_s, 0.01, BLINK_MIN_INTERVAL_S)?;
        within("heart_rate_hz", self.heart_rate_hz.unwrap_or(0.0), 0.0, 4.0)?;
        within("heart_rate_jitter", self.heart_rate_jitter, 0.0, 0.3)?;
        Ok(())
    }
}

/// A stimulus whose response is still playing out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActiveStimulus {
    pub stimulus: usize,
    /// Onset, as a sample index of the simulated stream (may be fractional): when the
    /// image appeared (what the markers and trigger say).
    pub onset_sample: f64,
    /// This trial's response is multiplied by this (1: as the world's kernels).
    pub amplitude: f32,
    /// This trial's response comes this many seconds after `onset_sample` (may be
    /// negative: earlier).
    pub latency_s: f64,
}

impl ActiveStimulus {
    /// A trial with the world's average response (no jitter).
    pub fn new(stimulus: usize, onset_sample: f64) -> Self {
        Self { stimulus, onset_sample, amplitude: 1.0, latency_s: 0.0 }
    }
}

/// Gallery ids listed one per line in `path` (blank lines skipped) as gallery indices;
/// `None` when the file does not exist.
fn read_id_list(path: &Path, gallery: &Gallery) -> anyhow::Result<Option<Vec<usize>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (line, id) in text.lines().map(str::trim).enumerate().filter(|(_, l)| !l.is_empty()) {
        let i = gallery.index_of(id).with_context(|| {
            format!(
                "{}:{}: '{id}' is not in the gallery ({} images); list ids from gallery/ids.txt",
                path.display(),
                line + 1,
                gallery.len()
            )
        })?;
        anyhow::ensure!(seen.insert(i), "{}:{}: '{id}' is listed twice", path.display(), line + 1);
        out.push(i);
    }
    anyhow::ensure!(!out.is_empty(), "{} lists no image ids; remove it or list the ids one per line", path.display());
    Ok(Some(out))
}

/// Sets to 0 every value below 1e-9 of the array's largest (and every subnormal one):
/// physically nothing (1e-9 of a field), yet such values and their products are subnormal
/// floats, and each subnormal operation costs ~100x a normal one (forward models computed
/// in float64 and saved as float32 carry thousands: 8x the brain noise's cost).
fn flush_tiny(data: &mut [f32]) {
    let floor = (1e-9 * data.iter().fold(0.0f32, |m, v| m.max(v.abs()))).max(f32::MIN_POSITIVE);
    data.iter_mut().filter(|v| v.abs() < floor).for_each(|v| *v = 0.0);
}

/// An optional float32 array: `None` if the file does not exist.
fn read_optional(path: &Path) -> anyhow::Result<Option<npy::NpyF32>> {
    match npy::read(path) {
        Ok(a) => Ok(Some(a)),
        Err(npy::NpyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl EvokedWorld {
    /// Loads `<model_dir>/world` with `<model_dir>/gallery` as the stimulus set.
    pub fn load(model_dir: &Path) -> anyhow::Result<Self> {
        let dir = model_dir.join("world");
        let json = dir.join("world.json");
        let meta: WorldJson = serde_json::from_str(
            &std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?,
        )
        .with_context(|| format!("parsing {}", json.display()))?;
        meta.check(&json)?;
        let patterns = npy::read(&dir.join("patterns.npy"))?;
        let kernels = npy::read(&dir.join("kernels.npy"))?;
        let stimuli = Gallery::load(&model_dir.join("gallery"))?;
        anyhow::ensure!(patterns.shape.len() == 2 && kernels.shape.len() == 2, "world arrays must be 2-D");
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
        let (d, c) = (patterns.shape[0], patterns.shape[1]);
        anyhow::ensure!(kernels.shape[0] == d, "kernels.npy has {} rows, patterns.npy {}", kernels.shape[0], d);
        anyhow::ensure!(
            features.len() == stimuli.len() * d,
            "stimulus features do not match the world's {d} latent dims"
        );
        let (mut patterns, mut kernels, mut features) = (patterns, kernels, features);
        // Subnormal values only, so a v1 world's (noisy) signal stays bit for bit what it
        // was: each adds less than 1e-38 T. The noise arrays, new in v2, are flushed further.
        for v in patterns.data.iter_mut().chain(&mut kernels.data).chain(&mut features) {
            if v.is_subnormal() {
                *v = 0.0;
            }
        }
        let noise = Self::load_noise(&dir, &meta, c)?;
        let held_out = read_id_list(&dir.join("held_out.txt"), &stimuli)?;
        let validation = read_id_list(&dir.join("validation.txt"), &stimuli)?.unwrap_or_default();
        if let Some(h) = &held_out {
            let both: Vec<&str> =
                validation.iter().filter(|i| h.contains(i)).map(|&i| stimuli.ids[i].as_str()).collect();
            anyhow::ensure!(
                both.is_empty(),
                "{}: held_out.txt and validation.txt share {} ids (e.g. '{}'); an image is either a test or a model-choice image",
                dir.display(),
                both.len(),
                both[0]
            );
        }
        Ok(Self {
            dir,
            layout: meta.layout,
            latent_dim: d,
            channels: c,
            patterns: patterns.data,
            kernel_len: kernels.shape[1],
            kernels: kernels.data,
            kernel_rate: meta.kernel_rate_hz,
            stimuli,
            features,
            isi_s: meta.isi_s,
            isi_jitter_s: meta.isi_jitter_s,
            latency_jitter_s: meta.latency_jitter_s,
            amplitude_jitter: meta.amplitude_jitter,
            noise,
            held_out,
            validation,
        })
    }

    /// The v2 noise files and keys, checked against each other and the `c` channels.
    fn load_noise(dir: &Path, meta: &WorldJson, c: usize) -> anyhow::Result<NoiseModel> {
        let mut m = NoiseModel { sensor_pink: meta.sensor_pink as f32, ..NoiseModel::default() };
        let file = |name: &str| dir.join(name);
        match (read_optional(&file("noise_patterns.npy"))?, meta.brain_noise_sources) {
            (Some(p), declared) => {
                anyhow::ensure!(
                    p.shape.len() == 2 && p.shape[1] == c,
                    "{}: shape {:?}; expected [sources, {c}] (one row per brain noise source, one column per channel)",
                    file("noise_patterns.npy").display(),
                    p.shape
                );
                anyhow::ensure!(
                    declared.is_none_or(|s| s == p.shape[0]),
                    "{}: brain_noise_sources is {} but noise_patterns.npy has {} rows; make them agree",
                    dir.join("world.json").display(),
                    declared.unwrap_or(0),
                    p.shape[0]
                );
                m.sources = p.shape[0];
                m.source_patterns = p.data;
                flush_tiny(&mut m.source_patterns);
            }
            (None, Some(s)) if s > 0 => anyhow::bail!(
                "{}: brain_noise_sources is {s} but {} is missing; write it or drop the key",
                dir.join("world.json").display(),
                file("noise_patterns.npy").display()
            ),
            (None, _) => {}
        }
        let pattern = |name: &str, key: &str, rate: Option<f64>| -> anyhow::Result<Option<Vec<f32>>> {
            let path = file(name);
            match (read_optional(&path)?, rate) {
                (Some(p), Some(_)) => {
                    anyhow::ensure!(
                        p.shape == [c],
                        "{}: shape {:?}; expected [{c}] (one value per channel)",
                        path.display(),
                        p.shape
                    );
                    let mut p = p.data;
                    flush_tiny(&mut p);
                    Ok(Some(p))
                }
                (Some(_), None) => anyhow::bail!(
                    "{} exists but world.json has no {key}; add the rate (0 turns it off) or remove the file",
                    path.display()
                ),
                (None, Some(r)) if r > 0.0 => {
                    anyhow::bail!("world.json sets {key} = {r} but {} is missing", path.display())
                }
                (None, _) => Ok(None),
            }
        };
        if let Some(p) = pattern("blink_pattern.npy", "blink_rate_hz", meta.blink_rate_hz)? {
            m.blinks = Some(Blinks {
                rate_hz: meta.blink_rate_hz.unwrap_or(0.0),
                duration_s: meta.blink_duration_s,
                pattern: p,
            });
        }
        if let Some(p) = pattern("cardiac_pattern.npy", "heart_rate_hz", meta.heart_rate_hz)? {
            m.cardiac = Some(Cardiac {
                rate_hz: meta.heart_rate_hz.unwrap_or(0.0),
                jitter: meta.heart_rate_jitter,
                pattern: p,
            });
        }
        Ok(m)
    }

    /// Training images: the gallery minus the held-out and validation images; `None`
    /// when the world does not say which are held out.
    pub fn training(&self) -> Option<Vec<usize>> {
        let held = self.held_out.as_ref()?;
        Some((0..self.stimuli.len()).filter(|i| !held.contains(i) && !self.validation.contains(i)).collect())
    }

    /// The gallery indices `set` names, in gallery order for `All` and `Training`, in
    /// `held_out.txt` order for `HeldOut`.
    pub fn stimulus_set(&self, set: StimulusSet) -> anyhow::Result<Vec<usize>> {
        let need = || {
            anyhow::anyhow!(
                "--stimuli {} needs the world's held_out.txt, which {} does not have (a v1 world); rebuild the model with models/build_demo.py or use --stimuli all",
                set.as_str(),
                self.dir.display()
            )
        };
        let v = match set {
            StimulusSet::All => (0..self.stimuli.len()).collect(),
            StimulusSet::HeldOut => self.held_out.clone().ok_or_else(need)?,
            StimulusSet::Training => self.training().ok_or_else(need)?,
        };
        anyhow::ensure!(!v.is_empty(), "--stimuli {}: the world {} leaves no images", set.as_str(), self.dir.display());
        Ok(v)
    }

    /// Seconds after onset during which a stimulus still has a response.
    pub fn response_duration(&self) -> f64 {
        self.kernel_len as f64 / self.kernel_rate
    }

    /// Whether trials vary (latency or amplitude jitter).
    pub fn has_trial_jitter(&self) -> bool {
        self.latency_jitter_s > 0.0 || self.amplitude_jitter > 0.0
    }

    /// Adds the responses of `active` stimuli to `out` (sample-major rows of `channels`),
    /// whose first row is stream sample `first_sample` at rate `srate`, each trial shifted
    /// and scaled by its own latency and amplitude. `drive` is scratch of len D.
    /// Allocates nothing.
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
                let t = (n - a.onset_sample) / srate - a.latency_s;
                if t < 0.0 {
                    continue;
                }
                let pos = t * self.kernel_rate;
                let k0 = pos.floor() as usize;
                if k0 + 1 >= self.kernel_len {
                    continue;
                }
                let frac = (pos - k0 as f64) as f32;
                let g = gain * a.amplitude;
                let f = &self.features[a.stimulus * d..(a.stimulus + 1) * d];
                for (j, dv) in drive.iter_mut().enumerate().take(d) {
                    let k = &self.kernels[j * self.kernel_len..];
                    *dv = g * f[j] * (k[k0] * (1.0 - frac) + k[k0 + 1] * frac);
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
