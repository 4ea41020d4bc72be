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
use rand::SeedableRng;

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
    /// Seconds between stimulus onsets.
    pub isi_s: f64,
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

/// Runs the simulator until `stop` is set or the duration has passed.
pub fn run(cfg: &SimulatorConfig, stop: &AtomicBool) -> anyhow::Result<SimulatorReport> {
    anyhow::ensure!(cfg.srate > 0.0, "sampling rate must be positive, got {}", cfg.srate);
    anyhow::ensure!(cfg.chunk > 0, "chunk size must be at least 1 sample");
    let layout = SensorLayout::load(cfg.layout);
    let c = layout.len();
    if let Some(w) = &cfg.world {
        anyhow::ensure!(
            w.channels == c,
            "the world's patterns have {} channels but layout {:?} has {c}; simulate with --layout {}",
            w.channels,
            cfg.layout,
            w.layout
        );
    }
    let info = stream_info(cfg, &layout)?;
    let mut outlet = Outlet::create(&info, cfg.chunk)?;
    let mut markers = match &cfg.marker_stream {
        Some(name) => Some(MarkerOutlet::create(name, &format!("{}-markers", cfg.source_id))?),
        None => None,
    };
    if cfg.wait_for_consumer_s > 0.0 {
        outlet.wait_for_consumers(cfg.wait_for_consumer_s);
    }
    let femto = if matches!(cfg.format, ChannelFormat::Int16 | ChannelFormat::Int32) { 1e15 } else { 1.0 };
    let mut noise = SensorNoise::new(&layout, cfg.srate, cfg.line_freq, cfg.noise_level, cfg.seed);
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ 0x5eed);
    let mut order: Vec<usize> = Vec::new();
    let mut data = vec![0.0f32; cfg.chunk * c];
    let mut stamps = vec![0.0f64; cfg.chunk];
    let mut drive = vec![0.0f32; cfg.world.as_ref().map_or(0, |w| w.latent_dim)];
    let mut active: Vec<ActiveStimulus> = Vec::with_capacity(16);
    let isi_samples = (cfg.isi_s * cfg.srate).max(1.0);
    let mut next_onset = isi_samples;
    let mut report = SimulatorReport::default();
    let total = cfg.duration_s.map(|d| (d * cfg.srate) as u64);
    let t0 = lsl::local_clock()?;
    let mut n: u64 = 0;

    while !stop.load(Ordering::Relaxed) && total.is_none_or(|t| n < t) {
        let len = cfg.chunk.min(total.map_or(usize::MAX, |t| (t - n) as usize));
        let rows = &mut data[..len * c];
        noise.fill(rows, len);
        // New onsets in this chunk: announce them and start their responses.
        let mut onsets_here = Vec::new();
        while next_onset < (n + len as u64) as f64 {
            let stim = match &cfg.world {
                Some(w) => {
                    if order.is_empty() {
                        order = (0..w.stimuli.len()).collect();
                        order.shuffle(&mut rng);
                    }
                    order.pop()
                }
                None => None,
            };
            onsets_here.push((next_onset, stim));
            if let Some(s) = stim {
                active.push(ActiveStimulus { stimulus: s, onset_sample: next_onset });
            }
            next_onset += isi_samples;
        }
        if let Some(w) = &cfg.world {
            let dur = w.response_duration() * cfg.srate;
            active.retain(|a| (n as f64) < a.onset_sample + dur);
            w.add_responses(rows, n, cfg.srate, &active, &mut drive, cfg.response_gain);
        }
        if femto != 1.0 {
            rows.iter_mut().for_each(|v| *v *= femto);
        }
        for (i, ts) in stamps[..len].iter_mut().enumerate() {
            *ts = t0 + (n + i as u64) as f64 / cfg.srate;
            if cfg.counter_channel {
                rows[i * c] = (n + i as u64) as f32;
            }
        }
        // Real time: a chunk leaves once its last sample has been "acquired".
        let due = t0 + (n + len as u64) as f64 / cfg.srate;
        let wait = due - lsl::local_clock()?;
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        outlet.push_chunk(rows, &stamps[..len])?;
        if let Some(m) = markers.as_mut() {
            for (onset, stim) in onsets_here {
                let text = match (stim, &cfg.world) {
                    (Some(s), Some(w)) => w.stimuli.ids[s].clone(),
                    _ => format!("stim_{}", report.markers),
                };
                m.push_marker(&text, t0 + onset / cfg.srate)?;
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
