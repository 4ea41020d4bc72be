//! `meg-decoder simulate`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use meg_decoder::lsl::ChannelFormat;
use meg_decoder::simulate::{self, EvokedWorld, LayoutKind, SimulatorConfig, Stamping, StimulusSet};

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Stream name of the MEG outlet.
    #[arg(long, default_value = "MEG-sim")]
    pub name: String,
    /// source_id of the MEG outlet (what lets inlets recover after a restart).
    #[arg(long, default_value = "meg-decoder-sim")]
    pub source_id: String,
    /// Sensor layout to imitate.
    #[arg(long, value_enum, default_value = "neuromag306")]
    pub layout: LayoutKind,
    /// Sampling rate (Hz), e.g. 600.614, 1000, 1200, 5000.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Samples per pushed chunk.
    #[arg(long, default_value_t = 10)]
    pub chunk: usize,
    /// Sample format: double64 (as MNE-LSL's player and many amplifier apps), float32,
    /// int32, int16 (integers carry femto-units).
    #[arg(long, default_value = "double64")]
    pub format: ChannelFormat,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Noise level (1 = typical MEG, 0 = none).
    #[arg(long, default_value_t = 1.0)]
    pub noise: f32,
    /// Power-line frequency (Hz).
    #[arg(long, default_value_t = 50.0)]
    pub line_freq: f64,
    /// Publish a marker stream (type=Markers) with this name.
    #[arg(long)]
    pub markers: Option<String>,
    /// Mean seconds between stimulus onsets [default: the world's isi_s with --model,
    /// else 1.5, THINGS-MEG's onset asynchrony].
    #[arg(long)]
    pub isi: Option<f64>,
    /// Onsets vary uniformly by up to this many seconds either way [default: the world's
    /// isi_jitter_s with --model, else 0.2].
    #[arg(long)]
    pub isi_jitter: Option<f64>,
    /// Which of the model's images to show, each once per shuffled cycle: all, held-out
    /// (the world's held_out.txt: never trained on), or training (the rest, minus
    /// validation.txt). held-out and training need a world that names its held-out images.
    #[arg(long, value_enum, default_value = "all")]
    pub stimuli: StimulusSet,
    /// Model directory whose `world/` and `gallery/` define the brain's responses to the
    /// announced images (e.g. models/demo).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Multiplies the evoked responses.
    #[arg(long, default_value_t = 1.0)]
    pub response_gain: f32,
    /// Put a sample counter in channel 0 (for checking that every sample arrives).
    #[arg(long)]
    pub counter: bool,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Wait up to this many seconds for a consumer before the first sample.
    #[arg(long, default_value_t = 0.0)]
    pub wait_for_consumer: f64,
    /// Produce samples at this rate (Hz) while announcing --rate (a device off nominal).
    #[arg(long)]
    pub true_rate: Option<f64>,
    /// The sampling clock runs this many ppm fast (negative: slow).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub drift_ppm: f64,
    /// push: chunks stamped when pushed, as liblsl stamps a device; grid: t0 + n / rate.
    #[arg(long, value_enum, default_value = "push")]
    pub stamping: Stamping,
    /// Per-channel DC offsets drawn from +-this many SI units (e.g. 1e-10 T).
    #[arg(long, default_value_t = 0.0)]
    pub dc_offset: f32,
    /// Add a trigger channel 'STI 014' with each stimulus' code (sample-exact).
    #[arg(long)]
    pub trigger_channel: bool,
    /// Add a photodiode channel 'MISC 001' (1 V while a stimulus is shown).
    #[arg(long)]
    pub photodiode: bool,
    /// Add a 10 pT, 20 ms pulse to the first channel at every onset (a timing probe).
    #[arg(long)]
    pub onset_pulse: bool,
    /// Markers stamped late by up to this many seconds (a stimulus PC's jitter).
    #[arg(long, default_value_t = 0.0)]
    pub marker_jitter: f64,
}

/// Onset asynchrony without a world: THINGS-MEG's (0.5 s image, 1.0 +- 0.2 s fixation).
const DEFAULT_ISI_S: f64 = 1.5;
const DEFAULT_ISI_JITTER_S: f64 = 0.2;

pub fn run(a: SimulateArgs) -> anyhow::Result<()> {
    let world = match &a.model {
        Some(dir) => Some(Arc::new(
            EvokedWorld::load(dir).with_context(|| format!("loading the simulated world of {}", dir.display()))?,
        )),
        None => None,
    };
    let cfg = SimulatorConfig {
        name: a.name,
        source_id: a.source_id,
        layout: a.layout,
        srate: a.rate,
        chunk: a.chunk,
        format: a.format,
        seed: a.seed,
        noise_level: a.noise,
        line_freq: a.line_freq,
        marker_stream: a.markers,
        isi_s: a.isi.unwrap_or(world.as_ref().map_or(DEFAULT_ISI_S, |w| w.isi_s)),
        isi_jitter_s: a.isi_jitter.unwrap_or(world.as_ref().map_or(DEFAULT_ISI_JITTER_S, |w| w.isi_jitter_s)),
        stimuli: a.stimuli,
        world,
        response_gain: a.response_gain,
        counter_channel: a.counter,
        duration_s: a.duration,
        wait_for_consumer_s: a.wait_for_consumer,
        true_rate: a.true_rate,
        drift_ppm: a.drift_ppm,
        stamping: a.stamping,
        dc_offset: a.dc_offset,
        trigger_channel: a.trigger_channel,
        photodiode_channel: a.photodiode,
        onset_pulse: a.onset_pulse,
        marker_jitter_s: a.marker_jitter,
    };
    let stop = super::stop_on_signal();
    tracing::info!(
        "simulating '{}' ({:?}, {} Hz announced, {} Hz true, {} chunks, {}){}",
        cfg.name,
        cfg.layout,
        cfg.srate,
        cfg.production_rate(),
        cfg.chunk,
        cfg.format.as_str(),
        cfg.marker_stream.as_ref().map(|m| format!(" with markers '{m}'")).unwrap_or_default()
    );
    if cfg.world.is_some() {
        tracing::info!("stimuli: {}, onsets every {} +- {} s", cfg.stimuli.as_str(), cfg.isi_s, cfg.isi_jitter_s);
    }
    let report = simulate::run(&cfg, &stop)?;
    tracing::info!("simulator stopped after {} samples and {} markers", report.samples, report.markers);
    Ok(())
}
