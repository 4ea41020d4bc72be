//! [`SensorNoise`]: background MEG noise: 1/f ("pink") sensor noise, posterior alpha
//! (~10 Hz, waxing and waning), power-line noise with harmonics, and white noise; with a
//! v2 world's [`NoiseModel`] also spatially correlated brain noise (independent pink
//! sources seen by the sensors through fixed field patterns), eye blinks and the heartbeat.
//!
//! Without a [`NoiseModel`] (no world, or a v1 world) the output is sample for sample what
//! it was before v2 worlds existed: the brain noise and the artefacts draw from their own
//! random generators, so the per-channel noise keeps its draw order.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, StandardNormal};

use super::layout::SensorLayout;

/// Gain of each channel's independent pink noise when a world does not say (v1 worlds).
pub const DEFAULT_SENSOR_PINK: f32 = 3.0;
/// Shortest interval between two blink onsets (s).
pub const BLINK_MIN_INTERVAL_S: f64 = 0.5;
/// Shortest interval between two heartbeats (s): 240 beats per minute.
pub const MIN_BEAT_INTERVAL_S: f64 = 0.25;
/// Window of a heartbeat's waveform around the beat (s).
const BEAT_WINDOW_S: (f64, f64) = (-0.05, 0.45);

/// What a v2 world (`world.json` and the `*_pattern.npy` files) adds to the background.
/// The default is a v1 world's: sensor noise only.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseModel {
    /// Gain of each channel's independent pink noise: `scale * (sensor_pink * pink + 0.3 *
    /// white)` (v1: 3.0).
    pub sensor_pink: f32,
    /// Number of brain noise sources S (0: none).
    pub sources: usize,
    /// `[S, channels]`: each source's field at the sensors per unit of its pink process.
    pub source_patterns: Vec<f32>,
    pub blinks: Option<Blinks>,
    pub cardiac: Option<Cardiac>,
}

impl Default for NoiseModel {
    fn default() -> Self {
        Self { sensor_pink: DEFAULT_SENSOR_PINK, sources: 0, source_patterns: Vec::new(), blinks: None, cardiac: None }
    }
}

/// Eye blinks: onsets at exponential intervals (mean `1 / rate_hz`; between two blinks
/// at least [`BLINK_MIN_INTERVAL_S`]), each adding `0.5 * (1 - cos(2 pi t / duration_s)) *
/// pattern`.
#[derive(Debug, Clone, PartialEq)]
pub struct Blinks {
    pub rate_hz: f64,
    /// At most [`BLINK_MIN_INTERVAL_S`], so blinks never overlap.
    pub duration_s: f64,
    /// Peak field per channel (SI units).
    pub pattern: Vec<f32>,
}

/// The heartbeat: beats every `(1 / rate_hz) * (1 + jitter * z)` s (z ~ N(0, 1) clipped to
/// +-3, at least [`MIN_BEAT_INTERVAL_S`]), each adding [`cardiac_waveform`] `* pattern`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cardiac {
    pub rate_hz: f64,
    pub jitter: f64,
    /// Peak (QRS) field per channel (SI units).
    pub pattern: Vec<f32>,
}

/// One heartbeat's waveform, `t` seconds after the beat: QRS (peak 1 at 0), a small S
/// dip, and the T wave at 0.25 s.
pub fn cardiac_waveform(t: f64) -> f64 {
    let g = |mu: f64, sd: f64| (-0.5 * ((t - mu) / sd).powi(2)).exp();
    g(0.0, 0.010) - 0.25 * g(0.03, 0.012) + 0.3 * g(0.25, 0.04)
}

/// Per-channel noise generator state; produces samples without allocating.
///
/// The per-channel recipe is the one `models/build_demo.py` trains with, so live data has
/// the statistics the demo model saw: `scale * (sensor_pink * pink + 0.3 * white)` +
/// posterior alpha `1.5 * occipital^2 * scale * env(t) * sin(2 pi 10 t)` + line noise
/// `scale * U(0.2, 1) * (sin(2 pi f t) + 0.3 sin(2 pi 3f t))`; a [`NoiseModel`] adds
/// `level * (sum_s source_patterns[s] * pink_s(t) + blink(t) * blink_pattern +
/// heart(t) * cardiac_pattern)`.
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
    sensor_pink: f64,
    /// The world's brain noise and artefacts; `None` without them or at noise level 0.
    background: Option<Background>,
    n: u64,
}

/// A 1/f ("pink") filter for white noise (3 poles, 3 zeros; 4 coefficients each).
const PINK_B: [f64; 4] = [0.049922035, -0.095993537, 0.050612699, -0.004408786];
const PINK_A: [f64; 4] = [1.0, -2.494956002, 2.017265875, -0.522189400];

/// One step of the pink filter with state `z` for the white input `drive`.
#[inline(always)]
fn pink_step(z: &mut [f64; 3], drive: f64) -> f64 {
    let pink = PINK_B[0] * drive + z[0];
    z[0] = PINK_B[1] * drive - PINK_A[1] * pink + z[1];
    z[1] = PINK_B[2] * drive - PINK_A[2] * pink + z[2];
    z[2] = PINK_B[3] * drive - PINK_A[3] * pink;
    pink
}

impl SensorNoise {
    /// Noise for `layout` at `srate`; `level` multiplies every part (0 = none). `model`
    /// (a world's) adds brain noise and artefacts and sets the sensor pink gain; its
    /// patterns must have one value per channel of `layout`.
    pub fn new(
        layout: &SensorLayout,
        srate: f64,
        line_freq: f64,
        level: f32,
        seed: u64,
        model: Option<&NoiseModel>,
    ) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let c = layout.len();
        let scale: Vec<f32> = (0..c).map(|i| layout.noise_scale(i) * level).collect();
        let alpha_gain = (0..c).map(|i| 1.5 * layout.occipital_weight(i) * scale[i]).collect();
        let line_gain = (0..c).map(|i| scale[i] * rng.random_range(0.2..1.0)).collect();
        let background = model.filter(|_| level != 0.0).and_then(|m| Background::new(m, c, level, seed));
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
            sensor_pink: f64::from(model.map_or(DEFAULT_SENSOR_PINK, |m| m.sensor_pink)),
            background,
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
                let pink = pink_step(&mut self.pink[i], drive);
                let broadband = (self.sensor_pink * pink + 0.3 * white) as f32;
                *v = self.scale[i] * broadband + self.alpha_gain[i] * alpha + self.line_gain[i] * line;
            }
            if let Some(b) = &mut self.background {
                b.add(row, t);
            }
            self.n += 1;
        }
    }
}

/// Runtime state of a [`NoiseModel`]: patterns pre-multiplied by the noise level.
struct Background {
    /// Drives the brain noise sources.
    rng: SmallRng,
    /// `[S, C]` source patterns times the level.
    patterns: Vec<f32>,
    /// Pink filter state per source.
    pink: Vec<[f64; 3]>,
    /// Each source's value at the current sample.
    value: Vec<f32>,
    /// Blink and heartbeat timing (their own generator, so switching one on changes
    /// nothing else).
    artefact_rng: SmallRng,
    blinks: Option<BlinkState>,
    heart: Option<HeartState>,
}

struct BlinkState {
    /// Pattern times the level.
    pattern: Vec<f32>,
    duration: f64,
    interval: Exp<f64>,
    /// Onset (s) of the current or next blink.
    start: f64,
}

struct HeartState {
    pattern: Vec<f32>,
    period: f64,
    jitter: f64,
    /// Beats whose waveform window may cover the current sample (at most 3).
    beats: Vec<f64>,
    next: f64,
}

impl BlinkState {
    fn next_interval(&self, rng: &mut SmallRng) -> f64 {
        self.interval.sample(rng).max(BLINK_MIN_INTERVAL_S)
    }
}

impl HeartState {
    fn next_interval(&self, rng: &mut SmallRng) -> f64 {
        let z: f64 = StandardNormal.sample(rng);
        (self.period * (1.0 + self.jitter * z.clamp(-3.0, 3.0))).max(MIN_BEAT_INTERVAL_S)
    }
}

impl Background {
    /// `None` when the model adds nothing.
    fn new(m: &NoiseModel, c: usize, level: f32, seed: u64) -> Option<Self> {
        assert_eq!(m.source_patterns.len(), m.sources * c, "noise model: source patterns are not [S, {c}]");
        let scaled = |p: &[f32]| {
            assert_eq!(p.len(), c, "noise model: an artefact pattern does not have {c} channels");
            p.iter().map(|v| v * level).collect::<Vec<f32>>()
        };
        let mut artefact_rng = SmallRng::seed_from_u64(seed ^ 0xa27e_fac7);
        let blinks = m.blinks.as_ref().filter(|b| b.rate_hz > 0.0).map(|b| {
            let mut s = BlinkState {
                pattern: scaled(&b.pattern),
                duration: b.duration_s,
                interval: Exp::new(b.rate_hz).expect("blink rate is positive and finite"),
                start: 0.0,
            };
            // The first blink comes an exponential wait after the start (no minimum: no
            // blink precedes it).
            s.start = s.interval.sample(&mut artefact_rng);
            s
        });
        let heart = m.cardiac.as_ref().filter(|h| h.rate_hz > 0.0).map(|h| {
            let period = 1.0 / h.rate_hz;
            HeartState {
                pattern: scaled(&h.pattern),
                period,
                jitter: h.jitter,
                beats: Vec::with_capacity(8),
                next: artefact_rng.random_range(0.0..period),
            }
        });
        if m.sources == 0 && blinks.is_none() && heart.is_none() {
            return None;
        }
        Some(Self {
            rng: SmallRng::seed_from_u64(seed ^ 0xb4a1_0015e),
            patterns: m.source_patterns.iter().map(|v| v * level).collect(),
            pink: vec![[0.0; 3]; m.sources],
            value: vec![0.0; m.sources],
            artefact_rng,
            blinks,
            heart,
        })
    }

    /// Adds this sample's brain noise and artefacts to `row` (time `t` s).
    #[inline]
    fn add(&mut self, row: &mut [f32], t: f64) {
        let c = row.len();
        for (z, v) in self.pink.iter_mut().zip(&mut self.value) {
            let drive: f64 = StandardNormal.sample(&mut self.rng);
            *v = pink_step(z, drive) as f32;
        }
        // Sources outer (two at a time: half the passes over the row), channels inner:
        // each pass is a contiguous axpy that vectorises.
        let pairs = self.value.len() / 2;
        for (p, v) in self.patterns.chunks_exact(2 * c).zip(self.value.chunks_exact(2)).take(pairs) {
            let (p0, p1) = p.split_at(c);
            let (v0, v1) = (v[0], v[1]);
            row.iter_mut().zip(p0).zip(p1).for_each(|((o, &a), &b)| *o += v0 * a + v1 * b);
        }
        if self.value.len() % 2 == 1 {
            let v = self.value[2 * pairs];
            let p = &self.patterns[2 * pairs * c..];
            row.iter_mut().zip(p).for_each(|(o, &pv)| *o += v * pv);
        }
        if let Some(b) = &mut self.blinks {
            while t >= b.start + b.duration {
                b.start += b.next_interval(&mut self.artefact_rng);
            }
            if t >= b.start {
                let w = (0.5 * (1.0 - (std::f64::consts::TAU * (t - b.start) / b.duration).cos())) as f32;
                row.iter_mut().zip(&b.pattern).for_each(|(o, &pv)| *o += w * pv);
            }
        }
        if let Some(h) = &mut self.heart {
            h.beats.retain(|&b| t < b + BEAT_WINDOW_S.1);
            while h.next + BEAT_WINDOW_S.0 <= t {
                h.beats.push(h.next);
                h.next += h.next_interval(&mut self.artefact_rng);
            }
            let q: f64 = h.beats.iter().map(|&b| cardiac_waveform(t - b)).sum();
            if q != 0.0 {
                let q = q as f32;
                row.iter_mut().zip(&h.pattern).for_each(|(o, &pv)| *o += q * pv);
            }
        }
    }
}
