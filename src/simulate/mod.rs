//! `meg-decoder simulate`: an LSL outlet of synthetic MEG that looks like a real system,
//! next to a marker stream announcing stimuli.
//!
//! Channels come from a real layout ([`SensorLayout`]: Neuromag 306 or CTF 272), noise
//! from [`SensorNoise`] (1/f, alpha, line noise), and, when an [`EvokedWorld`] is loaded
//! from a model directory, every announced image adds the brain response that the demo
//! model was trained to decode. Samples are paced in real time on the LSL clock and
//! stamped `t0 + n / rate`, like an acquisition system's outlet.

mod layout;
mod noise;
mod world;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

pub use layout::{LayoutKind, Sensor, SensorLayout};
pub use noise::SensorNoise;
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
    /// Seconds between stimulus onsets (mean).
    pub isi_s: f64,
    /// Onsets vary by up to this many seconds either way (THINGS-MEG: 0.2).
    pub isi_jitter_s: f64,
    /// Brain responses to the stimuli (from a model directory).
    pub world: Option<Arc<EvokedWorld>>,
    /// Multiplies the evoked responses.
    pub response_gain: f32,
    /// Replace channel 0 with the sample counter (0, 1, 2, ...) so a receiver can check
    /// that it got every sample in order.
    pub counter_channel: bool,
    /// Stop after this many seconds.
    pub duration_s: Option<f64>,
    /// Wait (up to this many seconds) for an inlet before sending the first sample.
    pub wait_for_consumer_s: f64,
}

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
            isi_s: 1.0,
            isi_jitter_s: 0.2,
            world: None,
            response_gain: 1.0,
            counter_channel: false,
            duration_s: None,
            wait_for_consumer_s: 0.0,
        }
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
    let mut info = StreamInfo::new(&cfg.name, "MEG", layout.len(), cfg.srate, cfg.format, &cfg.source_id)?;
    let femto = matches!(cfg.format, ChannelFormat::Int16 | ChannelFormat::Int32);
    let mut chans = layout.channel_infos(femto);
    if cfg.counter_channel {
        chans[0] = lsl::ChannelInfo { label: "COUNTER".into(), kind: "MISC".into(), unit: "samples".into() };
    }
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
    order: Vec<usize>,
    drive: Vec<f32>,
    active: Vec<ActiveStimulus>,
    isi_samples: f64,
    jitter_samples: f64,
    next_onset: f64,
    counter: bool,
    femto: f32,
    n: u64,
    onsets: u64,
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
        anyhow::ensure!(cfg.srate > 0.0, "sampling rate must be positive, got {}", cfg.srate);
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
        let isi_samples = (cfg.isi_s * cfg.srate).max(1.0);
        Ok(Self {
            noise: SensorNoise::new(&layout, cfg.srate, cfg.line_freq, cfg.noise_level, cfg.seed),
            layout,
            srate: cfg.srate,
            world: cfg.world.clone(),
            gain: cfg.response_gain,
            rng: SmallRng::seed_from_u64(cfg.seed ^ 0x5eed),
            order: Vec::new(),
            drive: vec![0.0; cfg.world.as_ref().map_or(0, |w| w.latent_dim)],
            active: Vec::with_capacity(16),
            isi_samples,
            jitter_samples: cfg.isi_jitter_s.max(0.0) * cfg.srate,
            next_onset: isi_samples,
            counter: cfg.counter_channel,
            femto: if matches!(cfg.format, ChannelFormat::Int16 | ChannelFormat::Int32) { 1e15 } else { 1.0 },
            n: 0,
            onsets: 0,
        })
    }

    pub fn channels(&self) -> usize {
        self.layout.len()
    }

    /// Samples produced so far.
    pub fn position(&self) -> u64 {
        self.n
    }

    /// Fills `rows` (sample-major, `len` samples) and appends this chunk's onsets.
    pub fn next_chunk(&mut self, rows: &mut [f32], len: usize, onsets: &mut Vec<Onset>) {
        let c = self.layout.len();
        let rows = &mut rows[..len * c];
        self.noise.fill(rows, len);
        let end = (self.n + len as u64) as f64;
        while self.next_onset < end {
            let stimulus = match &self.world {
                Some(w) => {
                    if self.order.is_empty() {
                        self.order = (0..w.stimuli.len()).collect();
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
            if let Some(s) = stimulus {
                self.active.push(ActiveStimulus { stimulus: s, onset_sample: self.next_onset });
            }
            onsets.push(Onset { sample: self.next_onset, stimulus, text });
            let jitter = if self.jitter_samples > 0.0 {
                self.rng.random_range(-self.jitter_samples..self.jitter_samples)
            } else {
                0.0
            };
            self.next_onset += (self.isi_samples + jitter).round().max(1.0);
        }
        if let Some(w) = &self.world {
            let dur = w.response_duration() * self.srate;
            let n = self.n as f64;
            self.active.retain(|a| n < a.onset_sample + dur);
            w.add_responses(rows, self.n, self.srate, &self.active, &mut self.drive, self.gain);
        }
        if self.femto != 1.0 {
            rows.iter_mut().for_each(|v| *v *= self.femto);
        }
        if self.counter {
            for i in 0..len {
                rows[i * c] = (self.n + i as u64) as f32;
            }
        }
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
    let femto = matches!(cfg.format, ChannelFormat::Int16 | ChannelFormat::Int32);
    crate::ingest::StreamDescription {
        name: cfg.name.clone(),
        kind: "MEG".into(),
        source_id: cfg.source_id.clone(),
        hostname: String::new(),
        channel_count: layout.len(),
        nominal_srate: cfg.srate,
        format: cfg.format,
        channels: layout
            .channel_infos(femto)
            .into_iter()
            .map(|c| crate::ingest::ChannelInfoData { label: c.label, kind: c.kind, unit: c.unit })
            .collect(),
        xml: String::new(),
    }
}

/// Runs the simulator until `stop` is set or the duration has passed.
pub fn run(cfg: &SimulatorConfig, stop: &AtomicBool) -> anyhow::Result<SimulatorReport> {
    anyhow::ensure!(cfg.chunk > 0, "chunk size must be at least 1 sample");
    let mut src = SignalSource::new(cfg)?;
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
    let total = cfg.duration_s.map(|d| (d * cfg.srate) as u64);
    let t0 = lsl::local_clock()?;
    let mut n: u64 = 0;

    while !stop.load(Ordering::Relaxed) && total.is_none_or(|t| n < t) {
        let len = cfg.chunk.min(total.map_or(usize::MAX, |t| (t - n) as usize));
        onsets.clear();
        src.next_chunk(&mut data, len, &mut onsets);
        for (i, ts) in stamps[..len].iter_mut().enumerate() {
            *ts = t0 + (n + i as u64) as f64 / cfg.srate;
        }
        // Real time: a chunk leaves once its last sample has been "acquired".
        let due = t0 + (n + len as u64) as f64 / cfg.srate;
        let wait = due - lsl::local_clock()?;
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        outlet.push_chunk(&data[..len * c], &stamps[..len])?;
        if let Some(m) = markers.as_mut() {
            for o in &onsets {
                m.push_marker(&o.text, t0 + o.sample / cfg.srate)?;
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
