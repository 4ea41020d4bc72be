//! `meg-decoder simulate`: an LSL outlet of synthetic MEG that looks like a real system,
//! next to a marker stream announcing stimuli.
//!
//! Channels come from a real layout ([`SensorLayout`]: Neuromag 306 or CTF 272), noise
//! from [`SensorNoise`] (1/f, alpha, line noise), and, when an [`EvokedWorld`] is loaded
//! from a model directory, every announced image adds the brain response that the demo
//! model was trained to decode. A v2 world also makes the trials vary (each response
//! delayed and scaled by its own draw, while markers keep the true onset), adds spatially
//! correlated brain noise, blinks and heartbeats ([`NoiseModel`]), and names held-out
//! images, so a run can show only images the model never trained on ([`StimulusSet`]).
//! Samples are paced in real time on the LSL clock.
//!
//! It can behave like hardware, so the service is tested against what real systems do:
//! a true rate off the announced one (`true_rate`, `drift_ppm`), chunks stamped when they
//! are pushed (as liblsl stamps a device's chunks) instead of on the nominal grid,
//! per-channel DC offsets, a trigger channel (`STI 014`, sample-exact codes) and a
//! photodiode channel (`MISC 001`) in the MEG stream, and markers that jitter like a
//! stimulus PC's.

mod layout;
mod noise;
mod world;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

pub use layout::{LayoutKind, Sensor, SensorLayout};
pub use noise::{
    cardiac_waveform, Blinks, Cardiac, NoiseModel, SensorNoise, BLINK_MIN_INTERVAL_S, DEFAULT_SENSOR_PINK,
    MIN_BEAT_INTERVAL_S,
};
pub use world::{ActiveStimulus, EvokedWorld};

use crate::lsl::{self, ChannelFormat, MarkerOutlet, Outlet, StreamInfo};

/// Everything `simulate` can vary.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub name: String,
    pub source_id: String,
    pub layout: LayoutKind,
    pub srate: f64,
    /// Samples per pushed chunk.
    pub chunk: usize,
    pub format: ChannelFormat,
    pub seed: u64,
    /// Multiplies the default noise amplitudes (0 = noiseless).
    pub noise_level: f32,
    pub line_freq: f64,
    /// Also publish a marker stream with this name.
    pub marker_stream: Option<String>,
    /// Mean seconds from one stimulus onset to the next (THINGS-MEG: 1.5 s, a 0.5 s image
    /// and a 1.0 +- 0.2 s fixation).
    pub isi_s: f64,
    /// Onsets vary uniformly by up to this many seconds either way (THINGS-MEG: 0.2).
    pub isi_jitter_s: f64,
    /// Brain responses to the stimuli (from a model directory).
    pub world: Option<Arc<EvokedWorld>>,
    /// Which of the world's images are shown (`HeldOut` and `Training` need a world with
    /// `held_out.txt`).
    pub stimuli: StimulusSet,
    /// Multiplies the evoked responses.
    pub response_gain: f32,
    /// Replace channel 0 with the sample counter (0, 1, 2, ...) so a receiver can check
    /// that it got every sample in order.
    pub counter_channel: bool,
    /// Stop after this many seconds.
    pub duration_s: Option<f64>,
    /// Wait (up to this many seconds) for an inlet before sending the first sample.
    pub wait_for_consumer_s: f64,
    /// Samples are really produced at this rate (Hz) while the stream announces `srate`.
    pub true_rate: Option<f64>,
    /// The sampling clock runs this many ppm fast (negative: slow) on top of `true_rate`.
    pub drift_ppm: f64,
    /// How samples are stamped.
    pub stamping: Stamping,
    /// Each channel gets a constant offset drawn from +-this (SI units, e.g. 1e-10 T).
    pub dc_offset: f32,
    /// Add a trigger channel `STI 014` carrying each stimulus' code for `TRIGGER_S`.
    pub trigger_channel: bool,
    /// Add a photodiode channel `MISC 001` (0 V dark, 1 V while a stimulus is shown).
    pub photodiode_channel: bool,
    /// Add a `PULSE_T` pulse of `PULSE_S` to the first channel at every onset (a timing
    /// probe for tests).
    pub onset_pulse: bool,
    /// Markers are stamped late by up to this many seconds (a stimulus PC's jitter).
    pub marker_jitter_s: f64,
}

/// How the simulated outlet stamps its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[value(rename_all = "lowercase")]
pub enum Stamping {
    /// `t0 + n / rate`: exact nominal grid (an ideal, hardware-clocked source).
    #[default]
    Grid,
    /// The last sample of each chunk at the moment it is pushed, earlier ones back-dated
    /// at the nominal rate: what liblsl does for a device pushed without timestamps.
    Push,
}

/// Which images a simulated session shows. Each is shown once, in a shuffled order, before
/// any is shown again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum StimulusSet {
    /// Every gallery image.
    #[default]
    All,
    /// The world's test images (`held_out.txt`), never trained on.
    HeldOut,
    /// The gallery minus the held-out and validation images.
    Training,
}

impl StimulusSet {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::HeldOut => "held-out",
            Self::Training => "training",
        }
    }
}

/// Label of the simulated trigger channel.
pub const TRIGGER_LABEL: &str = "STI 014";
/// Label of the simulated photodiode channel.
pub const PHOTODIODE_LABEL: &str = "MISC 001";
/// Seconds the trigger code stays up.
pub const TRIGGER_S: f64 = 0.01;
/// Seconds the photodiode stays lit.
pub const PHOTODIODE_S: f64 = 0.1;
/// Onset-pulse amplitude (T) and duration (s).
pub const PULSE_T: f32 = 1e-11;
pub const PULSE_S: f64 = 0.02;

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            name: "MEG-sim".into(),
            source_id: "meg-decoder-sim".into(),
            layout: LayoutKind::Neuromag306,
            srate: 1000.0,
            chunk: 10,
            format: ChannelFormat::Float32,
            seed: 1,
            noise_level: 1.0,
            line_freq: 50.0,
            marker_stream: None,
            isi_s: 1.5,
            isi_jitter_s: 0.2,
            world: None,
            stimuli: StimulusSet::All,
            response_gain: 1.0,
            counter_channel: false,
            duration_s: None,
            wait_for_consumer_s: 0.0,
            true_rate: None,
            drift_ppm: 0.0,
            stamping: Stamping::Grid,
            dc_offset: 0.0,
            trigger_channel: false,
            photodiode_channel: false,
            onset_pulse: false,
            marker_jitter_s: 0.0,
        }
    }
}

impl SimulatorConfig {
    /// The rate samples are really produced at (Hz).
    pub fn production_rate(&self) -> f64 {
        self.true_rate.unwrap_or(self.srate) * (1.0 + self.drift_ppm * 1e-6)
    }

    /// The channels beyond the sensor layout (trigger, photodiode).
    fn extra_channels(&self) -> Vec<lsl::ChannelInfo> {
        let mut v = Vec::new();
        if self.trigger_channel {
            v.push(lsl::ChannelInfo { label: TRIGGER_LABEL.into(), kind: "stim".into(), unit: String::new() });
        }
        if self.photodiode_channel {
            v.push(lsl::ChannelInfo { label: PHOTODIODE_LABEL.into(), kind: "misc".into(), unit: "V".into() });
        }
        v
    }

    /// Every channel the stream carries, in order.
    pub fn channel_infos(&self, layout: &SensorLayout) -> Vec<lsl::ChannelInfo> {
        let femto = matches!(self.format, ChannelFormat::Int16 | ChannelFormat::Int32);
        let mut chans = layout.channel_infos(femto);
        if self.counter_channel {
            chans[0] = lsl::ChannelInfo { label: "COUNTER".into(), kind: "MISC".into(), unit: "samples".into() };
        }
        chans.extend(self.extra_channels());
        chans
    }
}

/// What a finished run sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimulatorReport {
    pub samples: u64,
    pub markers: u64,
}

/// The stream description `simulate` publishes for `cfg`.
pub fn stream_info(cfg: &SimulatorConfig, layout: &SensorLayout) -> Result<StreamInfo, lsl::LslError> {
    let chans = cfg.channel_infos(layout);
    let mut info = StreamInfo::new(&cfg.name, "MEG", chans.len(), cfg.srate, cfg.format, &cfg.source_id)?;
    info.set_channels(&chans)?;
    info.set_desc_value("manufacturer", "meg-decoder simulator")?;
    info.set_desc_value("layout", &format!("{:?}", cfg.layout))?;
    Ok(info)
}

/// The simulated signal itself, independent of LSL: noise plus evoked responses, chunk
/// after chunk. The live outlet and offline tests and benchmarks share it.
pub struct SignalSource {
    pub layout: SensorLayout,
    srate: f64,
    noise: SensorNoise,
    world: Option<Arc<EvokedWorld>>,
    gain: f32,
    rng: SmallRng,
    /// Draws each trial's latency and amplitude (its own generator: a world's jitter
    /// leaves the stimulus order and onsets of a seed unchanged).
    trial_rng: SmallRng,
    /// The images this session shows.
    pool: Vec<usize>,
    order: Vec<usize>,
    drive: Vec<f32>,
    active: Vec<ActiveStimulus>,
    /// Onsets scheduled ahead (a response may start before its onset), not yet reported.
    pending: VecDeque<Onset>,
    /// Samples ahead of a chunk's end that onsets are scheduled: the earliest a jittered
    /// response can start before its onset.
    lead: f64,
    isi_samples: f64,
    jitter_samples: f64,
    next_onset: f64,
    counter: bool,
    femto: f32,
    n: u64,
    onsets: u64,
    /// Per-channel DC offsets (SI).
    offsets: Vec<f32>,
    trigger: bool,
    photodiode: bool,
    pulse: bool,
    /// Onsets still shaping the trigger/photodiode/pulse channels: (sample, code).
    marks: Vec<(f64, u32)>,
    /// Sensor rows before the extra channels are appended.
    scratch: Vec<f32>,
}

/// A stimulus onset inside a chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Onset {
    /// Sample index (may be fractional) of the onset.
    pub sample: f64,
    /// Gallery index of the image shown, if a world is loaded.
    pub stimulus: Option<usize>,
    /// The marker text: the image id, or `stim_<n>` without a world.
    pub text: String,
}

impl SignalSource {
    pub fn new(cfg: &SimulatorConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cfg.srate.is_finite() && (1.0..=100_000.0).contains(&cfg.srate),
            "the sampling rate must be 1..100000 Hz (MEG systems: 600-5000 Hz), got {}",
            cfg.srate
        );
        let layout = SensorLayout::load(cfg.layout);
        if let Some(w) = &cfg.world {
            anyhow::ensure!(
                w.channels == layout.len(),
                "the world's patterns have {} channels but layout {:?} has {}; simulate with --layout {}",
                w.channels,
                cfg.layout,
                layout.len(),
                w.layout
            );
        }
        anyhow::ensure!(
            cfg.isi_s.is_finite() && cfg.isi_s > 0.0 && cfg.isi_jitter_s.is_finite(),
            "the stimulus onset asynchrony must be a positive number of seconds (THINGS-MEG: --isi 1.5 --isi-jitter 0.2), got {} +- {}",
            cfg.isi_s,
            cfg.isi_jitter_s
        );
        let pool = match &cfg.world {
            Some(w) => w.stimulus_set(cfg.stimuli)?,
            None => {
                anyhow::ensure!(
                    cfg.stimuli == StimulusSet::All,
                    "--stimuli {} needs a model with a world (--model DIR) that names its held-out images",
                    cfg.stimuli.as_str()
                );
                Vec::new()
            }
        };
        let isi_samples = (cfg.isi_s * cfg.srate).max(1.0);
        anyhow::ensure!(
            cfg.dc_offset.is_finite() && cfg.dc_offset.abs() < 1.0,
            "DC offset must be a finite number of SI units below 1, got {}",
            cfg.dc_offset
        );
        let full_scale = match cfg.format {
            ChannelFormat::Int16 => 32767.0e-15,
            ChannelFormat::Int32 => 2.147_483_6e-6,
            _ => f32::MAX,
        };
        anyhow::ensure!(
            cfg.dc_offset.abs() < 0.5 * full_scale,
            "a DC offset of {} T does not fit {} samples in femto-units (full scale {full_scale:e}); use --format double64, float32 or int32",
            cfg.dc_offset,
            cfg.format.as_str()
        );
        let mut orng = SmallRng::seed_from_u64(cfg.seed ^ 0xdc);
        let offsets = (0..layout.len())
            .map(|_| if cfg.dc_offset == 0.0 { 0.0 } else { cfg.dc_offset * orng.random_range(-1.0f32..1.0) })
            .collect();
        Ok(Self {
            offsets,
            trigger: cfg.trigger_channel,
            photodiode: cfg.photodiode_channel,
            pulse: cfg.onset_pulse,
            marks: Vec::new(),
            scratch: Vec::new(),
            noise: SensorNoise::new(
                &layout,
                cfg.srate,
                cfg.line_freq,
                cfg.noise_level,
                cfg.seed,
                cfg.world.as_ref().map(|w| &w.noise),
            ),
            layout,
            srate: cfg.srate,
            world: cfg.world.clone(),
            gain: cfg.response_gain,
            rng: SmallRng::seed_from_u64(cfg.seed ^ 0x5eed),
            trial_rng: SmallRng::seed_from_u64(cfg.seed ^ 0x7e1a1),
            pool,
            order: Vec::new(),
            drive: vec![0.0; cfg.world.as_ref().map_or(0, |w| w.latent_dim)],
            active: Vec::with_capacity(16),
            pending: VecDeque::with_capacity(8),
            lead: cfg.world.as_ref().map_or(0.0, |w| (3.0 * w.latency_jitter_s * cfg.srate).ceil()),
            isi_samples,
            jitter_samples: cfg.isi_jitter_s.max(0.0) * cfg.srate,
            next_onset: isi_samples,
            counter: cfg.counter_channel,
            femto: if matches!(cfg.format, ChannelFormat::Int16 | ChannelFormat::Int32) { 1e15 } else { 1.0 },
            n: 0,
            onsets: 0,
        })
    }

    /// Channels per row: the sensors plus the trigger and photodiode channels.
    pub fn channels(&self) -> usize {
        self.layout.len() + usize::from(self.trigger) + usize::from(self.photodiode)
    }

    /// Samples produced so far.
    pub fn position(&self) -> u64 {
        self.n
    }

    /// Fills `rows` (sample-major, `len` samples) and appends this chunk's onsets.
    pub fn next_chunk(&mut self, out: &mut [f32], len: usize, onsets: &mut Vec<Onset>) {
        let c = self.layout.len();
        let width = self.channels();
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(len * c, 0.0);
        let rows = if width == c { &mut out[..len * c] } else { &mut scratch[..] };
        self.noise.fill(rows, len);
        let end = (self.n + len as u64) as f64;
        // Onsets are scheduled `lead` samples ahead so that a response jittered earlier
        // than its onset starts on time; each is reported in the chunk that contains it.
        while self.next_onset < end + self.lead {
            let stimulus = match &self.world {
                Some(_) => {
                    if self.order.is_empty() {
                        self.order.clone_from(&self.pool);
                        self.order.shuffle(&mut self.rng);
                    }
                    self.order.pop()
                }
                None => None,
            };
            let text = match (stimulus, &self.world) {
                (Some(s), Some(w)) => w.stimuli.ids[s].clone(),
                _ => format!("stim_{}", self.onsets),
            };
            self.onsets += 1;
            self.marks.push((self.next_onset, stimulus.map_or(1, |s| (s % 250) as u32 + 1)));
            if let (Some(s), Some(w)) = (stimulus, &self.world) {
                let mut trial = ActiveStimulus::new(s, self.next_onset);
                if w.has_trial_jitter() {
                    // The brain's variability: the onset (markers, trigger) stays put.
                    let z_lat: f64 = self.trial_rng.sample(StandardNormal);
                    let z_amp: f64 = self.trial_rng.sample(StandardNormal);
                    trial.latency_s = w.latency_jitter_s * z_lat.clamp(-3.0, 3.0);
                    let sd = w.amplitude_jitter;
                    trial.amplitude = (sd * z_amp - 0.5 * sd * sd).exp() as f32;
                }
                self.active.push(trial);
            }
            self.pending.push_back(Onset { sample: self.next_onset, stimulus, text });
            let jitter = if self.jitter_samples > 0.0 {
                self.rng.random_range(-self.jitter_samples..self.jitter_samples)
            } else {
                0.0
            };
            self.next_onset += (self.isi_samples + jitter).round().max(1.0);
        }
        while self.pending.front().is_some_and(|o| o.sample < end) {
            onsets.extend(self.pending.pop_front());
        }
        if let Some(w) = &self.world {
            let dur = w.response_duration() * self.srate;
            let n = self.n as f64;
            let srate = self.srate;
            self.active.retain(|a| n < a.onset_sample + a.latency_s * srate + dur);
            w.add_responses(rows, self.n, self.srate, &self.active, &mut self.drive, self.gain);
        }
        let n0 = self.n as f64;
        if self.pulse {
            let width = PULSE_S * self.srate;
            for &(o, _) in &self.marks {
                for i in 0..len {
                    let k = n0 + i as f64;
                    if k >= o && k < o + width {
                        rows[i * c] += PULSE_T;
                    }
                }
            }
        }
        if self.offsets.iter().any(|&o| o != 0.0) {
            for r in rows.chunks_exact_mut(c) {
                r.iter_mut().zip(&self.offsets).for_each(|(v, o)| *v += o);
            }
        }
        if self.femto != 1.0 {
            rows.iter_mut().for_each(|v| *v *= self.femto);
        }
        if self.counter {
            for i in 0..len {
                rows[i * c] = (self.n + i as u64) as f32;
            }
        }
        if width != c {
            // The trigger holds the stimulus code from the first sample at or after the
            // onset; the photodiode is lit over the same samples for longer.
            for i in 0..len {
                let k = n0 + i as f64;
                let dst = &mut out[i * width..(i + 1) * width];
                dst[..c].copy_from_slice(&scratch[i * c..(i + 1) * c]);
                let mut j = c;
                if self.trigger {
                    let on = self.marks.iter().find(|&&(o, _)| k >= o && k < o + TRIGGER_S * self.srate);
                    dst[j] = on.map_or(0.0, |&(_, code)| code as f32);
                    j += 1;
                }
                if self.photodiode {
                    let lit = self.marks.iter().any(|&(o, _)| k >= o && k < o + PHOTODIODE_S * self.srate);
                    dst[j] = if lit { 1.0 } else { 0.0 };
                }
            }
        }
        let keep = PHOTODIODE_S.max(TRIGGER_S).max(PULSE_S) * self.srate;
        let end = n0 + len as f64;
        self.marks.retain(|&(o, _)| o + keep > end);
        self.scratch = scratch;
        self.n += len as u64;
    }
}

/// Renders `seconds` of the simulated signal offline: rows (sample-major), timestamps
/// `t0 + n / rate`, and the onsets (as markers on the same clock).
pub fn render(
    cfg: &SimulatorConfig,
    seconds: f64,
    t0: f64,
) -> anyhow::Result<(Vec<f32>, Vec<f64>, Vec<crate::ingest::Marker>)> {
    let mut src = SignalSource::new(cfg)?;
    let n = (seconds * cfg.srate) as usize;
    let mut rows = vec![0.0; n * src.channels()];
    anyhow::ensure!(cfg.true_rate.is_none() && cfg.drift_ppm == 0.0, "render() stamps on the nominal grid only");
    let mut onsets = Vec::new();
    src.next_chunk(&mut rows, n, &mut onsets);
    let ts = (0..n).map(|i| t0 + i as f64 / cfg.srate).collect();
    let markers = onsets
        .into_iter()
        .map(|o| crate::ingest::Marker {
            timestamp: t0 + o.sample / cfg.srate,
            source_timestamp: t0 + o.sample / cfg.srate,
            text: o.text,
        })
        .collect();
    Ok((rows, ts, markers))
}

/// The description `simulate` gives its MEG stream, as plain data (for offline use).
pub fn stream_description(cfg: &SimulatorConfig) -> crate::ingest::StreamDescription {
    let layout = SensorLayout::load(cfg.layout);
    let chans = cfg.channel_infos(&layout);
    crate::ingest::StreamDescription {
        name: cfg.name.clone(),
        kind: "MEG".into(),
        source_id: cfg.source_id.clone(),
        hostname: String::new(),
        channel_count: chans.len(),
        nominal_srate: cfg.srate,
        format: cfg.format,
        channels: chans
            .into_iter()
            .map(|c| crate::ingest::ChannelInfoData { label: c.label, kind: c.kind, unit: c.unit })
            .collect(),
        xml: String::new(),
    }
}

/// Runs the simulator until `stop` is set or the duration has passed.
pub fn run(cfg: &SimulatorConfig, stop: &AtomicBool) -> anyhow::Result<SimulatorReport> {
    anyhow::ensure!(cfg.chunk > 0, "chunk size must be at least 1 sample");
    let rate = cfg.production_rate();
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0 && (rate / cfg.srate - 1.0).abs() < 0.5,
        "the true rate ({rate} Hz) must be positive and within 50% of the nominal {} Hz",
        cfg.srate
    );
    anyhow::ensure!(
        cfg.marker_jitter_s.is_finite() && (0.0..1.0).contains(&cfg.marker_jitter_s),
        "marker jitter must be 0..1 s, got {}",
        cfg.marker_jitter_s
    );
    let grid_ok = cfg.true_rate.is_none() && cfg.drift_ppm == 0.0;
    anyhow::ensure!(
        grid_ok || cfg.stamping == Stamping::Push,
        "a true rate or drift needs push stamping (a source stamped on its nominal grid would carry the error in its timestamps)"
    );
    // The signal is generated at the rate it is really sampled at.
    let mut src = SignalSource::new(&SimulatorConfig { srate: rate, ..cfg.clone() })?;
    let c = src.channels();
    let info = stream_info(cfg, &src.layout)?;
    let mut outlet = Outlet::create(&info, cfg.chunk)?;
    let mut markers = match &cfg.marker_stream {
        Some(name) => Some(MarkerOutlet::create(name, &format!("{}-markers", cfg.source_id))?),
        None => None,
    };
    if cfg.wait_for_consumer_s > 0.0 {
        outlet.wait_for_consumers(cfg.wait_for_consumer_s);
    }
    let mut data = vec![0.0f32; cfg.chunk * c];
    let mut stamps = vec![0.0f64; cfg.chunk];
    let mut onsets = Vec::with_capacity(8);
    let mut report = SimulatorReport::default();
    let total = cfg.duration_s.map(|d| (d * rate) as u64);
    let mut jitter = SmallRng::seed_from_u64(cfg.seed ^ 0x1177);
    let t0 = lsl::local_clock()?;
    let mut n: u64 = 0;

    while !stop.load(Ordering::Relaxed) && total.is_none_or(|t| n < t) {
        let len = cfg.chunk.min(total.map_or(usize::MAX, |t| (t - n) as usize));
        onsets.clear();
        src.next_chunk(&mut data, len, &mut onsets);
        // Real time: a chunk leaves once its last sample has been "acquired".
        let due = t0 + (n + len as u64) as f64 / rate;
        let wait = due - lsl::local_clock()?;
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        match cfg.stamping {
            Stamping::Grid => {
                for (i, ts) in stamps[..len].iter_mut().enumerate() {
                    *ts = t0 + (n + i as u64) as f64 / cfg.srate;
                }
            }
            Stamping::Push => {
                let now = lsl::local_clock()?;
                for (i, ts) in stamps[..len].iter_mut().enumerate() {
                    *ts = now - (len - 1 - i) as f64 / cfg.srate;
                }
            }
        }
        outlet.push_chunk(&data[..len * c], &stamps[..len])?;
        if let Some(m) = markers.as_mut() {
            for o in &onsets {
                let late = if cfg.marker_jitter_s > 0.0 { jitter.random_range(0.0..cfg.marker_jitter_s) } else { 0.0 };
                m.push_marker(&o.text, t0 + o.sample / rate + late)?;
                report.markers += 1;
            }
        }
        n += len as u64;
        report.samples = n;
    }
    // A graceful stop lets connected inlets drain the last chunks before the outlet goes.
    if outlet.have_consumers() {
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(report)
}
