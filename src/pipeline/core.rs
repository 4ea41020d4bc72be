//! [`DecoderCore`]: the decoding pipeline as a pure function of its input: stream samples
//! (with timestamps, segments and flags) and markers in, [`Decoding`]s out. The live
//! pipeline feeds it from the ring buffer; `replay --offline` feeds it from a file; both
//! get the same decodings for the same data, whatever the chunking.

use std::collections::VecDeque;
use std::sync::Arc;

use super::continuous::ContinuousModel;
use super::decoding::{DecodeMode, Decoding, MarkerRef, PipelineStats, SkipReason};
use super::events::{EventConfig, EventError, OnsetDetector, OnsetPairing, Paired};
use super::preprocess::{si_unit_of_type, ChannelMap, ChannelMatching, MappingError, Preprocessor};
use super::signal::SignalSnapshot;
use super::stages::Stage;
use super::window::{ModelRateBuffer, Skipped, WindowAssembler, WindowRequest, WindowScheduler};
use crate::ingest::{Marker, StreamDescription};
use crate::model::{CompanionEncoders, Encoder, Gallery, ModelContract, ModelError, Target};

/// What to do with windows that contain repaired NaN/Inf samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinitePolicy {
    /// Do not decode them (counted as skipped).
    #[default]
    Skip,
    /// Decode them with the NaN/Inf values held at the last finite value (flagged).
    Repair,
}

/// Pipeline settings that are not part of the model contract.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PipelineConfig {
    /// Continuous decoding every `hop_s` seconds (None = off).
    pub hop_s: Option<f64>,
    /// Continuous windows go to the model directory's encoder for continuous use
    /// (`continuous/encoder.onnx`) when it has one; false: to the model's onset-locked
    /// encoder, whose decodings carry their implied onset instead of `on_screen_at`.
    pub continuous_encoder: bool,
    /// Decode windows locked to markers.
    pub event_locked: bool,
    /// Gallery hits per decoding.
    pub top_k: usize,
    pub non_finite: NonFinitePolicy,
    /// Seconds of model-rate data kept for late markers.
    pub buffer_s: f64,
    /// Subject index passed to models with a `subject` input.
    pub subject: i64,
    /// Replaces the model's notch frequencies (e.g. `[60, 120]` where mains is 60 Hz).
    pub notch_override: Option<Vec<f64>>,
    /// Windows that are ready together go through the encoder as one batch of at most
    /// this many (1 = never batch).
    pub max_batch: usize,
    /// How model channel names are matched to the stream's labels.
    pub channel_matching: ChannelMatching,
    /// Where event-locked onsets come from (markers, trigger or photodiode channel).
    pub events: EventConfig,
    /// Replaces the model's settle period (seconds after a filter start before windows
    /// are decoded).
    pub settle_s: Option<f64>,
    /// Live: never decode the stream's past. When several continuous windows wait for the
    /// encoder, the older ones are skipped (`behind`) if the encoder is slower than the hop
    /// or they are older than `max_lag_s`; event-locked windows are always decoded. Off
    /// for offline replay, which decodes every window.
    pub keep_up: bool,
    /// With `keep_up`: how old (window end to now) a continuous window may be when a newer
    /// one is ready.
    pub max_lag_s: f64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            hop_s: Some(0.025),
            continuous_encoder: true,
            event_locked: true,
            top_k: 5,
            non_finite: NonFinitePolicy::Skip,
            buffer_s: 10.0,
            subject: 0,
            notch_override: None,
            max_batch: 8,
            channel_matching: ChannelMatching::Normalized,
            events: EventConfig::default(),
            settle_s: None,
            keep_up: true,
            max_lag_s: 0.25,
        }
    }
}

impl PipelineConfig {
    /// Every value in its range (also for settings read back from a recording).
    pub fn check(&self) -> Result<(), PipelineError> {
        let bad = |what: String| Err(PipelineError::Config(what));
        if self.hop_s.is_some_and(|h| !h.is_finite() || !(0.001..=60.0).contains(&h)) {
            return bad(format!("hop must be 0.001..60 seconds, got {:?}", self.hop_s));
        }
        if !self.buffer_s.is_finite() || !(1.0..=600.0).contains(&self.buffer_s) {
            return bad(format!("buffer_s must be 1..600 seconds (and hold a window plus 1 s), got {}", self.buffer_s));
        }
        if !(1..=256).contains(&self.max_batch) {
            return bad(format!("max_batch must be 1..256 windows, got {}", self.max_batch));
        }
        if self.top_k > 1000 {
            return bad(format!("top_k must be 0..1000 gallery hits (0 = no retrieval), got {}", self.top_k));
        }
        if self.settle_s.is_some_and(|s| !s.is_finite() || !(0.0..=600.0).contains(&s)) {
            return bad(format!("settle_s must be 0..600 seconds, got {:?}", self.settle_s));
        }
        if !self.max_lag_s.is_finite() || !(0.001..=60.0).contains(&self.max_lag_s) {
            return bad(format!("max_lag_s must be 0.001..60 seconds, got {}", self.max_lag_s));
        }
        if self.notch_override.as_ref().is_some_and(|n| n.len() > 16) {
            return bad("at most 16 notch frequencies".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Events(#[from] EventError),
    #[error("gallery embeddings have dimension {gallery} but the encoder outputs {encoder}; use the gallery built for this model's embedding space ({space})")]
    GalleryDim { gallery: usize, encoder: usize, space: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// How decodings name their model: the contract's name and the first 12 hex digits of
/// the model's digest (the encoder's sha256 for a model without stages or a continuous
/// encoder; [`crate::model::model_digest`]).
pub fn model_id(name: &str, sha256: &str) -> String {
    format!("{name}@{}", &sha256[..sha256.len().min(12)])
}

/// The gallery (if any) must be in the embedding space of every encoder that decodes.
fn check_gallery(gallery: Option<&Arc<Gallery>>, c: &ModelContract) -> Result<(), PipelineError> {
    match gallery {
        Some(g) if g.dim != c.embedding_dim => Err(PipelineError::GalleryDim {
            gallery: g.dim,
            encoder: c.embedding_dim,
            space: c.embedding_space.clone(),
        }),
        _ => Ok(()),
    }
}

/// An encoder's window (`what`) must fit in the model-rate buffer with a second to spare.
fn check_buffer(what: &str, c: &ModelContract, buffer_s: f64) -> Result<(), PipelineError> {
    if buffer_s < c.window_s() + 1.0 {
        return Err(PipelineError::Config(format!(
            "{what} ({:.2} s) does not fit in the {buffer_s:.1} s buffer; raise pipeline.buffer_s to at least {:.1} s",
            c.window_s(),
            c.window_s() + 1.0
        )));
    }
    Ok(())
}

/// Seconds a trigger onset waits for its marker beyond the pairing window (the marker
/// stream's own delivery latency).
const PAIRING_SLACK_S: f64 = 0.5;

pub struct DecoderCore {
    contract: ModelContract,
    config: PipelineConfig,
    pre: Preprocessor,
    buf: ModelRateBuffer,
    scheduler: WindowScheduler,
    assembler: WindowAssembler,
    encoder: Encoder,
    gallery: Option<Arc<Gallery>>,
    scores: Vec<f32>,
    segment: Option<u32>,
    requests: Vec<Result<WindowRequest, Skipped>>,
    /// Requests after their checks (reused between polls).
    checked: Vec<Checked>,
    /// Windows checked and waiting for the encoder, with their `repaired` flag.
    ready: Vec<(WindowRequest, bool)>,
    batch_in: Vec<f32>,
    batch_out: Vec<f32>,
    /// Onsets from a trigger or photodiode channel (None: onsets are the markers).
    onsets: Option<OnsetDetector>,
    pairing: OnsetPairing,
    paired: Vec<Paired>,
    /// Time of the newest input sample (fitted clock).
    newest_t: f64,
    markers_expected: bool,
    sequence: u64,
    stats: Arc<PipelineStats>,
    /// Which model made the decodings ("name@digest-prefix"), on every decoding.
    model_id: Arc<str>,
    /// The sha256 that names the model (its encoders'; [`crate::model::model_digest`]).
    model_digest: String,
    /// Catching up on the stream's past before taking over from another core: windows
    /// are prepared but neither decoded nor counted.
    priming: bool,
    /// Encoder time per window, exponentially averaged (seconds; 0 before the first run).
    encoder_avg_s: f64,
    /// The model's channels and their SI units, for signal snapshots.
    channels: Arc<[String]>,
    units: Arc<[&'static str]>,
    /// The newest markers received (time, text), for signal snapshots.
    recent_markers: VecDeque<(f64, String)>,
    /// Progressive stages, shortest window first (empty: one decoding per onset).
    stages: Vec<Stage>,
    /// Stage window requests (reused between polls).
    stage_requests: Vec<Result<WindowRequest, Skipped>>,
    /// The encoder trained for continuous use, which then decodes every continuous window
    /// (None: the model's own encoder does).
    continuous: Option<ContinuousModel>,
    /// Windows of one encoder, taken from `ready` in order (reused between batches).
    run: Vec<(WindowRequest, bool)>,
}

/// Which of the model's encoders decodes a window.
#[derive(Clone, Copy, PartialEq)]
enum By {
    /// The model's own encoder (event-locked windows; continuous ones without a
    /// continuous encoder).
    Model,
    /// The encoder for continuous use (every continuous window when there is one).
    Continuous,
    /// Progressive stage `i` (event-locked).
    Stage(usize),
}

/// Which encoder made a decoding, as the decoding needs to say it.
#[derive(Clone, Copy)]
struct MadeBy {
    /// Window length in model samples.
    len: u64,
    /// The encoder's window start relative to the instant it decodes.
    window_start_s: f64,
    target: Target,
    /// Progressive stage and stage count (0, 0 for continuous decodings).
    stage: (u32, u32),
}

/// A window request after [`DecoderCore::check`]: decodable (with its `repaired` flag), or
/// why not (with the marker it was locked to).
type Checked = Result<(WindowRequest, bool), (SkipReason, Option<Marker>)>;

/// Markers kept for signal snapshots.
const RECENT_MARKERS: usize = 64;

impl DecoderCore {
    pub fn new(
        encoder: Encoder,
        gallery: Option<Arc<Gallery>>,
        stream: &StreamDescription,
        config: PipelineConfig,
    ) -> Result<Self, PipelineError> {
        let mut contract = encoder.contract().clone();
        if let Some(n) = &config.notch_override {
            contract.notch_hz = n.clone();
        }
        if let Some(s) = config.settle_s {
            if !(0.0..=600.0).contains(&s) {
                return Err(PipelineError::Config(format!("settle_s must be 0..600 seconds, got {s}")));
            }
            contract.settle_s = Some(s);
        }
        check_gallery(gallery.as_ref(), &contract)?;
        config.check()?;
        if let Some(n) = &config.notch_override {
            if let Some(bad) = n.iter().find(|f| !f.is_finite() || **f <= 0.0) {
                return Err(PipelineError::Config(format!(
                    "notch frequency {bad} Hz: need a positive, finite frequency"
                )));
            }
        }
        if contract.target == Target::OnScreen {
            return Err(PipelineError::Config(format!(
                "model '{}' was trained for continuous use (contract target = on_screen): it cannot decode windows \
                 locked to onsets; put it in a model directory's continuous/encoder.onnx next to an encoder.onnx \
                 trained on onsets",
                contract.name
            )));
        }
        check_buffer("the window", &contract, config.buffer_s)?;
        let map = ChannelMap::new(&contract.channel_names, &stream.channels, config.channel_matching)?;
        if !map.renamed.is_empty() {
            let shown: Vec<String> = map.renamed.iter().take(6).map(|(m, l)| format!("{m} <- '{l}'")).collect();
            tracing::info!(
                "{} of {} model channels matched by normalized name: {}{}",
                map.renamed.len(),
                contract.channel_names.len(),
                shown.join(", "),
                if map.renamed.len() > shown.len() { ", ..." } else { "" }
            );
        }
        let units: Arc<[&'static str]> = map
            .stream_index
            .iter()
            .map(|&i| stream.channels.get(i).and_then(|ch| si_unit_of_type(&ch.kind)).unwrap_or(""))
            .collect();
        let onsets = OnsetDetector::from_config(&config.events, &stream.channels)?;
        if let Some(d) = &onsets {
            tracing::info!("event-locked onsets from the {}; markers give their labels", d.label);
        }
        let pre = Preprocessor::new(&contract, map, stream.nominal_srate)?;
        if contract.filter_phase == crate::model::FilterPhase::ZeroPhase {
            tracing::info!(
                "model trained on zero-phase filtered data: windows shifted by the causal filters' group delay, {:.1} ms in {:.0}-{:.0} Hz",
                pre.delay_compensation_s() * 1e3,
                contract.evoked_band_hz.0,
                contract.evoked_band_hz.1
            );
        }
        let c = contract.channel_names.len();
        let capacity = (config.buffer_s * contract.sample_rate).ceil() as usize;
        Ok(Self {
            buf: ModelRateBuffer::new(c, capacity),
            scheduler: WindowScheduler::new(&contract, config.hop_s, config.event_locked),
            assembler: WindowAssembler::new(&contract),
            scores: vec![0.0; gallery.as_ref().map_or(0, |g| g.len())],
            requests: Vec::with_capacity(64),
            checked: Vec::with_capacity(64),
            ready: Vec::with_capacity(config.max_batch.max(1)),
            batch_in: Vec::new(),
            batch_out: Vec::new(),
            pairing: OnsetPairing::new(config.events.pair_window_s),
            paired: Vec::new(),
            onsets,
            newest_t: f64::NEG_INFINITY,
            markers_expected: true,
            segment: None,
            sequence: 0,
            stats: Arc::new(PipelineStats::default()),
            model_id: Arc::from(model_id(&contract.name, encoder.sha256())),
            model_digest: encoder.sha256().to_string(),
            priming: false,
            encoder_avg_s: 0.0,
            channels: contract.channel_names.clone().into(),
            units,
            recent_markers: VecDeque::with_capacity(RECENT_MARKERS),
            stages: Vec::new(),
            stage_requests: Vec::with_capacity(8),
            continuous: None,
            run: Vec::with_capacity(config.max_batch.max(1)),
            gallery,
            encoder,
            pre,
            contract,
            config,
        })
    }

    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }

    /// Adds progressive stages (a model directory's `stages/*/encoder.onnx`): encoders on
    /// shorter windows from the onset that share this model's preprocessing, decoded
    /// event-locked as each window completes, before the model's own window.
    pub fn with_stages(mut self, stages: Vec<(String, Encoder)>) -> Result<Self, PipelineError> {
        let mut v = stages
            .into_iter()
            .map(|(name, enc)| Stage::new(name, enc, self.encoder.contract(), self.config.event_locked))
            .collect::<Result<Vec<_>, _>>()?;
        v.sort_by(|a, b| a.window_end_s().total_cmp(&b.window_end_s()));
        for s in &v {
            check_gallery(self.gallery.as_ref(), &s.contract)?;
        }
        self.stages = v;
        self.name_model();
        Ok(self)
    }

    /// Adds the encoder trained for continuous use (a model directory's
    /// `continuous/encoder.onnx`, `target = on_screen`): it decodes every continuous
    /// window, on its own window, while the model's encoder keeps the event-locked ones.
    pub fn with_continuous(mut self, encoder: Option<Encoder>) -> Result<Self, PipelineError> {
        let Some(encoder) = encoder else { return Ok(self) };
        if self.config.hop_s.is_none() || !self.config.continuous_encoder {
            tracing::info!(
                "the encoder for continuous use ({}) is not used: {}",
                encoder.contract().name,
                if self.config.hop_s.is_none() {
                    "continuous decoding is off"
                } else {
                    "pipeline.continuous_encoder is false"
                }
            );
            return Ok(self);
        }
        let c = ContinuousModel::new(encoder, self.encoder.contract(), self.config.hop_s)?;
        check_gallery(self.gallery.as_ref(), &c.contract)?;
        check_buffer("the continuous encoder's window", &c.contract, self.config.buffer_s)?;
        // The model's own scheduler keeps the event-locked windows only.
        self.scheduler = WindowScheduler::new(&self.contract, None, self.config.event_locked);
        self.continuous = Some(c);
        self.name_model();
        Ok(self)
    }

    /// Adds what a model directory carries beside its encoder: progressive stages and the
    /// encoder for continuous use.
    pub fn with_companions(self, companions: CompanionEncoders) -> Result<Self, PipelineError> {
        self.with_stages(companions.stages)?.with_continuous(companions.continuous)
    }

    /// Names the model by all its encoders ([`crate::model::model_digest`]): a change to a
    /// stage or to the continuous encoder is another model.
    fn name_model(&mut self) {
        let stages: Vec<(&str, &str)> = self.stages.iter().map(|s| (s.name.as_str(), s.encoder.sha256())).collect();
        let continuous = self.continuous.as_ref().map(|c| c.encoder.sha256());
        self.model_digest = crate::model::model_digest(self.encoder.sha256(), &stages, continuous);
        self.model_id = Arc::from(model_id(&self.contract.name, &self.model_digest));
    }

    /// The sha256 that names the model ([`crate::model::model_digest`]): the encoder's, or
    /// with stages or a continuous encoder, of the list of all their sha256.
    pub fn model_digest(&self) -> &str {
        &self.model_digest
    }

    /// The contract of the encoder trained for continuous use, when there is one.
    pub fn continuous_contract(&self) -> Option<&ModelContract> {
        self.continuous.as_ref().map(ContinuousModel::contract)
    }

    /// The progressive stages' names and window ends after the onset (s), in order.
    pub fn stages(&self) -> Vec<(String, f64)> {
        self.stages.iter().map(|s| (s.name.clone(), s.window_end_s())).collect()
    }
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }
    /// "name@sha256-prefix" of the model, as every decoding carries it.
    pub fn model_id(&self) -> &Arc<str> {
        &self.model_id
    }
    /// Markers waiting for their window to complete (what a stop now would leave undecoded).
    pub fn pending_markers(&self) -> usize {
        self.scheduler.pending_markers()
    }
    /// The sequence number the next decoding gets.
    pub fn next_sequence(&self) -> u64 {
        self.sequence
    }

    /// Feeds samples from the stream's recent past to a core that is about to take over
    /// from another ([`DecoderCore::take_over`]): filters, clock fit, scaler and buffer
    /// catch up; no window is decoded or counted.
    pub fn prime(&mut self, rows: &[f32], timestamps: &[f64], segments: &[u32]) {
        self.priming = true;
        self.push_samples(rows, timestamps, segments, &|| 0.0, &mut |_| {});
    }

    /// Takes over from `old` between two chunks of samples (a window boundary: no window
    /// is half-decoded), after both saw the same samples: sequence numbers and counters go
    /// on, and the markers and onsets `old` had not decoded yet are decoded by this core.
    pub fn take_over(&mut self, old: &mut DecoderCore) {
        self.priming = false;
        self.requests.clear();
        self.sequence = old.sequence;
        self.stats = old.stats.clone();
        self.markers_expected = old.markers_expected;
        self.scheduler.replace_pending(old.scheduler.take_pending());
        if self.stages.len() == old.stages.len() {
            for (s, o) in self.stages.iter_mut().zip(&mut old.stages) {
                s.scheduler.replace_pending(o.scheduler.take_pending());
            }
        }
        std::mem::swap(&mut self.recent_markers, &mut old.recent_markers);
        if self.onsets.is_some() && old.onsets.is_some() {
            std::mem::swap(&mut self.pairing, &mut old.pairing);
        }
    }
    /// Copies the newest `rows` model-rate samples (filtered, resampled, SI units, before
    /// scaling) and the recent markers into `snap`, reusing its buffers.
    pub fn copy_signal(&self, rows: usize, snap: &mut SignalSnapshot) {
        if !Arc::ptr_eq(&snap.channels, &self.channels) {
            snap.channels = self.channels.clone();
            snap.units = self.units.clone();
        }
        if snap.model != self.model_id {
            snap.model = self.model_id.clone();
        }
        snap.sample_rate = self.contract.sample_rate;
        let head = self.buf.head();
        let from = head.saturating_sub(rows as u64).max(self.buf.oldest());
        snap.times.clear();
        snap.rows.clear();
        snap.segment_starts.clear();
        for i in from..head {
            if i > from && self.buf.segment(i) != self.buf.segment(i - 1) {
                snap.segment_starts.push((i - from) as u32);
            }
            snap.times.push(self.buf.timestamp(i));
            snap.rows.extend_from_slice(self.buf.row(i));
        }
        let first = snap.times.iter().copied().fold(f64::INFINITY, f64::min);
        snap.markers.clear();
        snap.markers.extend(self.recent_markers.iter().filter(|(t, _)| *t >= first).cloned());
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }
    /// Seconds from an input sample to the earliest decoding that can include it.
    pub fn preprocessing_latency_s(&self) -> f64 {
        self.pre.latency_s()
    }
    /// The preprocessor (filters, clock fit, delay compensation).
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.pre
    }
    /// The preprocessing as it runs on this stream, in words (for status and logs).
    pub fn preprocessing_summary(&self) -> String {
        format!(
            "onsets from {}; model-rate times from a fit of the stream's timestamps; filters start at steady state and settle for {:.2} s; {} filters{}; {}",
            self.onset_source(),
            self.pre.settle_s(),
            self.contract.filter_phase.as_str(),
            match self.contract.filter_phase {
                crate::model::FilterPhase::Causal => String::new(),
                crate::model::FilterPhase::ZeroPhase => {
                    format!(", group delay compensated ({:.1} ms)", self.pre.delay_compensation_s() * 1e3)
                }
            },
            super::preprocess::resampling_summary(&self.contract, self.pre.stream_rate())
        )
    }
    /// Whether a marker stream feeds this core. Without one, trigger/photodiode onsets are
    /// decoded at once instead of waiting for a label (`pair_window_s` + the slack).
    pub fn set_markers_expected(&mut self, expected: bool) {
        self.markers_expected = expected;
    }
    /// Where onsets come from, in words.
    pub fn onset_source(&self) -> String {
        self.onsets.as_ref().map_or_else(|| "markers".to_string(), |d| d.label.clone())
    }

    /// A stimulus marker: decoded at its own time, or (with a trigger or photodiode
    /// channel) the label of the onset nearest to it.
    pub fn push_marker(&mut self, m: Marker) {
        if self.recent_markers.len() == RECENT_MARKERS {
            self.recent_markers.pop_front();
        }
        self.recent_markers.push_back((m.timestamp, m.text.clone()));
        if self.onsets.is_some() {
            self.pairing.add_marker(m);
        } else {
            self.schedule(m);
        }
    }

    /// An onset to decode event-locked: at every stage, then with the model's window.
    fn schedule(&mut self, m: Marker) {
        for s in &mut self.stages {
            s.scheduler.add_marker(m.clone());
        }
        self.scheduler.add_marker(m);
    }

    /// Feeds stream samples (sample-major rows with every stream channel; NaN/Inf values
    /// are found and repaired here) and decodes
    /// every window they complete. `now` gives the emission time (local LSL clock).
    pub fn push_samples(
        &mut self,
        rows: &[f32],
        timestamps: &[f64],
        segments: &[u32],
        now: &dyn Fn() -> f64,
        emit: &mut dyn FnMut(Decoding),
    ) {
        let width = rows.len() / timestamps.len().max(1);
        for (i, row) in rows.chunks_exact(width.max(1)).enumerate() {
            let seg = segments[i];
            if self.segment != Some(seg) {
                if self.segment.is_some() {
                    self.pre.reset();
                }
                if let Some(d) = self.onsets.as_mut() {
                    d.reset();
                }
                self.segment = Some(seg);
            }
            let Self { pre, buf, assembler, scheduler, requests, continuous, .. } = self;
            pre.push(row, timestamps[i], |s| {
                buf.push(s.row, s.timestamp, seg, s.repaired, s.settled);
                if s.settled {
                    assembler.observe(s.row);
                }
                // Requests in the order their windows complete (continuous first at a
                // tie), so the decodings' order does not depend on the chunking.
                let every_hop = continuous.as_ref().map_or(&*scheduler, |c| &c.scheduler);
                if let Some(r) = every_hop.continuous(buf) {
                    requests.push(r);
                }
                scheduler.ready_epochs(buf, requests);
            });
            // Onsets on a channel of the stream, stamped by the same fitted clock (only
            // when a trigger or photodiode is in use: markers need no per-sample work).
            if let Some(d) = self.onsets.as_mut() {
                self.newest_t = self.pre.clock().at((self.pre.inputs() - 1) as f64);
                if let Some(o) = d.push(row, self.newest_t) {
                    self.stats.onsets_detected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.pairing.add_onset(o);
                }
            }
        }
        self.stats.repaired_samples.store(self.pre.repaired_samples, std::sync::atomic::Ordering::Relaxed);
        self.poll(now, emit);
    }

    /// Decodes whatever windows are ready (also after markers arrived late).
    pub fn poll(&mut self, now: &dyn Fn() -> f64, emit: &mut dyn FnMut(Decoding)) {
        if self.onsets.is_some() {
            // Without markers nothing can label an onset: resolve it at once.
            let now = if self.markers_expected { self.newest_t } else { f64::INFINITY };
            self.pairing.resolve(now, PAIRING_SLACK_S, &mut self.paired);
            let source = self.onset_source();
            let mut paired = std::mem::take(&mut self.paired);
            for p in paired.drain(..) {
                match p {
                    Paired::Onset { marker, paired } => {
                        if paired {
                            self.stats.onsets_paired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        self.schedule(marker);
                    }
                    Paired::UnpairedMarker(m) => {
                        self.stats.markers_unpaired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(
                            "marker '{}' at {:.3} has no onset on the {} within {} s; not decoded",
                            m.text,
                            m.timestamp,
                            source,
                            self.config.events.pair_window_s
                        );
                    }
                }
            }
            self.paired = paired;
        }
        self.scheduler.ready_epochs(&self.buf, &mut self.requests);
        if self.priming {
            // Whatever completes on the past was decoded by the core this one replaces.
            self.requests.clear();
            for s in &mut self.stages {
                s.scheduler.ready_epochs(&self.buf, &mut self.stage_requests);
                self.stage_requests.clear();
            }
            return;
        }
        self.decode_stages(now, emit);
        if let Some(c) = &mut self.continuous {
            c.assembler.share_scaler(&self.assembler);
        }
        let mut requests = std::mem::take(&mut self.requests);
        let mut checked = std::mem::take(&mut self.checked);
        checked.extend(requests.drain(..).map(|r| r.map_err(|s| (s.reason, s.marker)).and_then(|w| self.check(w))));
        if self.config.keep_up {
            self.skip_behind(&mut checked, now());
        }
        let mut ready = std::mem::take(&mut self.ready);
        for c in checked.drain(..) {
            match c {
                Ok(w) => {
                    ready.push(w);
                    if ready.len() == self.config.max_batch.max(1) {
                        self.decode_batch(&mut ready, now, emit);
                    }
                }
                Err((reason, marker)) => {
                    self.stats.skip(reason);
                    if let Some(m) = marker {
                        tracing::warn!("marker '{}' at {:.3} not decoded: {:?}", m.text, m.timestamp, reason);
                    }
                }
            }
        }
        if !ready.is_empty() {
            self.decode_batch(&mut ready, now, emit);
        }
        self.requests = requests;
        self.checked = checked;
        self.ready = ready;
    }

    /// Live, when continuous windows wait for the encoder: all but the newest are skipped
    /// as `behind` if the encoder is slower than the hop (it could never catch up) or
    /// they ended more than `max_lag_s` before `now` (it is catching up after a stall).
    /// A burst the encoder can absorb (a source pushing 100 ms chunks) is decoded whole.
    fn skip_behind(&self, checked: &mut Vec<Checked>, now: f64) {
        // Only windows that passed their checks compete (the others are skipped for their
        // own reason).
        let decodable = |c: &Checked| matches!(c, Ok((w, _)) if w.marker.is_none());
        let waiting = checked.iter().filter(|c| decodable(c)).count();
        if waiting < 2 {
            return;
        }
        let overloaded = self.config.hop_s.is_some_and(|hop| self.encoder_avg_s >= hop);
        let len = self.continuous.as_ref().map_or(self.contract.window_samples, |c| c.contract.window_samples) as u64;
        let mut seen = 0;
        checked.retain(|c| {
            let Ok((w, _)) = c else { return true };
            if w.marker.is_some() {
                return true;
            }
            seen += 1;
            let end = self.buf.timestamp((w.start + len).saturating_sub(1));
            let keep = seen == waiting || !(overloaded || now - end > self.config.max_lag_s);
            if !keep {
                self.stats.skip(SkipReason::Behind);
            }
            keep
        });
    }

    /// Whether a window can be decoded now; why not if it cannot.
    fn check(&self, w: WindowRequest) -> Checked {
        match (&self.continuous, &w.marker) {
            (Some(c), None) => self.check_window(w, c.contract.window_samples as u64, c.assembler.ready()),
            _ => self.check_window(w, self.contract.window_samples as u64, self.assembler.ready()),
        }
    }

    /// [`check`](Self::check) for a window of `len` samples whose assembler is `ready`.
    fn check_window(&self, w: WindowRequest, len: u64, ready: bool) -> Checked {
        if w.start >= self.buf.oldest() && !self.buf.all_settled(w.start, w.start + len) {
            return Err((SkipReason::Settling, w.marker));
        }
        if !ready {
            return Err((SkipReason::ScalerWarmup, w.marker));
        }
        if w.start < self.buf.oldest() {
            return Err((SkipReason::TooLate, w.marker));
        }
        let repaired = self.buf.any_repaired(w.start, w.start + len);
        if repaired && self.config.non_finite == NonFinitePolicy::Skip {
            return Err((SkipReason::NonFinite, w.marker));
        }
        Ok((w, repaired))
    }

    /// Runs the encoders over all `ready` windows (a batch when the pipeline has several at
    /// once, e.g. after catching up; consecutive windows of one encoder form one batch),
    /// then emits them in order.
    fn decode_batch(
        &mut self,
        ready: &mut Vec<(WindowRequest, bool)>,
        now: &dyn Fn() -> f64,
        emit: &mut dyn FnMut(Decoding),
    ) {
        let continuous = self.continuous.is_some();
        let by = |w: &WindowRequest| if continuous && w.marker.is_none() { By::Continuous } else { By::Model };
        while let Some((first, _)) = ready.first() {
            let mine = by(first);
            let n = ready.iter().take_while(|(w, _)| by(w) == mine).count();
            let mut run = std::mem::take(&mut self.run);
            run.extend(ready.drain(..n));
            self.decode_run(&mut run, mine, now, emit);
            self.run = run;
        }
    }

    /// Runs encoder `by` over the windows of `run` as one batch and emits them in order.
    fn decode_run(
        &mut self,
        run: &mut Vec<(WindowRequest, bool)>,
        by: By,
        now: &dyn Fn() -> f64,
        emit: &mut dyn FnMut(Decoding),
    ) {
        let last = self.stages.len() as u32 + 1;
        let (encoder, assembler, contract, name) = match (by, self.continuous.as_mut()) {
            (By::Stage(i), _) => {
                let s = &mut self.stages[i];
                (&mut s.encoder, &mut s.assembler, &s.contract, s.name.as_str())
            }
            (By::Continuous, Some(c)) => (&mut c.encoder, &mut c.assembler, &c.contract, "continuous"),
            _ => (&mut self.encoder, &mut self.assembler, &self.contract, "model"),
        };
        let (n, one, dim) = (run.len(), assembler.window.len(), contract.embedding_dim);
        self.batch_in.resize(n * one, 0.0);
        self.batch_out.resize(n * dim, 0.0);
        for (i, (w, _)) in run.iter().enumerate() {
            assembler.assemble(&self.buf, w.start);
            self.batch_in[i * one..(i + 1) * one].copy_from_slice(&assembler.window);
        }
        let t = std::time::Instant::now();
        if let Err(e) = encoder.encode_batch(&self.batch_in, n, self.config.subject, &mut self.batch_out) {
            tracing::error!("{name} encoder: {e}");
            run.drain(..).for_each(|_| self.stats.skip(SkipReason::EncoderError));
            return;
        }
        let encoder_s = t.elapsed().as_secs_f64() / n as f64;
        let mut made = MadeBy {
            len: contract.window_samples as u64,
            window_start_s: contract.window_start_s,
            target: contract.target,
            stage: (0, 0),
        };
        // The encoder time keep_up compares with the hop: the encoders that decode
        // continuous or full event-locked windows (a stage is one short window an onset).
        if !matches!(by, By::Stage(_)) {
            self.encoder_avg_s =
                if self.encoder_avg_s == 0.0 { encoder_s } else { 0.9 * self.encoder_avg_s + 0.1 * encoder_s };
        }
        for (i, (w, repaired)) in run.drain(..).enumerate() {
            let embedding = self.batch_out[i * dim..(i + 1) * dim].to_vec();
            made.stage = match by {
                By::Stage(s) => (s as u32 + 1, last),
                _ if w.marker.is_some() => (last, last),
                _ => (0, 0),
            };
            self.emit_decoding(w, made, embedding, encoder_s, repaired, now, emit);
        }
    }

    /// Retrieves the gallery's best matches for the embedding of window `w` (made by the
    /// encoder `made`), stamps it, numbers it and emits it.
    #[allow(clippy::too_many_arguments)]
    fn emit_decoding(
        &mut self,
        w: WindowRequest,
        made: MadeBy,
        embedding: Vec<f32>,
        encoder_s: f64,
        repaired: bool,
        now: &dyn Fn() -> f64,
        emit: &mut dyn FnMut(Decoding),
    ) {
        let (len, (stage, stages)) = (made.len, made.stage);
        let top_k = match &self.gallery {
            Some(g) => g.top_k(&embedding, self.config.top_k, &mut self.scores),
            None => Vec::new(),
        };
        let window_end = self.buf.timestamp(w.start + len - 1);
        let window_start = self.buf.timestamp(w.start);
        let decoded_at = now();
        // The instant the window decodes: an onset, or (for a model trained for
        // continuous use) the instant whose on-screen image it decodes.
        let instant = window_start - made.window_start_s;
        // (Only continuous windows are decoded by an `on_screen` encoder: `new` refuses one
        // as the model's.)
        let (onset, on_screen_at) = match (&w.marker, made.target) {
            (Some(m), _) => (m.timestamp, None),
            (None, Target::Onset) => (instant, None),
            (None, Target::OnScreen) => (0.0, Some(instant)),
        };
        let d = Decoding {
            sequence: self.sequence,
            mode: if w.marker.is_some() { DecodeMode::EventLocked } else { DecodeMode::Continuous },
            onset,
            on_screen_at,
            marker: w.marker.map(|m| MarkerRef { text: m.text, timestamp: m.timestamp }),
            window_start,
            window_end,
            decoded_at,
            latency_s: decoded_at - window_end,
            encoder_s,
            embedding,
            top_k,
            repaired,
            model: self.model_id.clone(),
            stage,
            stages,
        };
        self.sequence += 1;
        self.stats.record(&d);
        emit(d);
    }

    /// Decodes the progressive stages' windows that completed (each on its own, as soon as
    /// it is ready: a stage exists to be early).
    fn decode_stages(&mut self, now: &dyn Fn() -> f64, emit: &mut dyn FnMut(Decoding)) {
        for i in 0..self.stages.len() {
            let mut requests = std::mem::take(&mut self.stage_requests);
            self.stages[i].scheduler.ready_epochs(&self.buf, &mut requests);
            for r in requests.drain(..) {
                self.stages[i].assembler.share_scaler(&self.assembler);
                let len = self.stages[i].contract.window_samples as u64;
                let ready = self.stages[i].assembler.ready();
                match r.map_err(|s| (s.reason, s.marker)).and_then(|w| self.check_window(w, len, ready)) {
                    Ok(window) => {
                        // Alone, as soon as it is ready: a stage exists to be early.
                        let mut run = std::mem::take(&mut self.run);
                        run.push(window);
                        self.decode_run(&mut run, By::Stage(i), now, emit);
                        self.run = run;
                    }
                    Err((reason, marker)) => {
                        self.stats.skip(reason);
                        if let Some(m) = marker {
                            tracing::warn!(
                                "marker '{}' at {:.3} not decoded at stage '{}': {:?}",
                                m.text,
                                m.timestamp,
                                self.stages[i].name,
                                reason
                            );
                        }
                    }
                }
            }
            self.stage_requests = requests;
        }
    }
}
