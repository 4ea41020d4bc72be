//! [`Decoding`]: what the pipeline says about one window, and the live counters
//! ([`PipelineStats`]) of what it decoded and skipped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::model::Hit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeMode {
    /// Every hop, the window ending at the newest sample.
    Continuous,
    /// Locked to a stimulus marker.
    EventLocked,
}

/// The marker an event-locked decoding belongs to.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MarkerRef {
    pub text: String,
    /// Local LSL clock.
    pub timestamp: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decoding {
    pub sequence: u64,
    pub mode: DecodeMode,
    pub marker: Option<MarkerRef>,
    /// The instant the model takes as the image onset (local LSL clock): the locked
    /// onset for event-locked windows; for continuous ones `window_start -
    /// window_start_s` (what the window would mean had an image appeared then).
    pub onset: f64,
    /// Decodings by a model trained for continuous use (contract `target = on_screen`):
    /// the instant whose on-screen image the embedding stands for (`window_start -
    /// window_start_s`; local LSL clock). Their `onset` is 0: that model assumes none.
    pub on_screen_at: Option<f64>,
    /// First and last sample of the window, local LSL clock (seconds).
    pub window_start: f64,
    pub window_end: f64,
    /// When the decoding was emitted, local LSL clock.
    pub decoded_at: f64,
    /// `decoded_at - window_end`.
    pub latency_s: f64,
    /// Time spent in the encoder's `run`.
    pub encoder_s: f64,
    pub embedding: Vec<f32>,
    pub top_k: Vec<Hit>,
    /// A NaN/Inf sample was repaired inside this window.
    pub repaired: bool,
    /// The model that made it: "name@digest-prefix" (`model::model_digest`: the encoder's
    /// sha256, or that of all its encoders'; changes when a model is swapped in).
    #[serde(serialize_with = "serialize_str")]
    pub model: std::sync::Arc<str>,
    /// Progressive decoding: this event-locked decoding's stage, 1..=`stages` (the model's
    /// own window is the last stage; a model without stages has one); 0 for continuous.
    pub stage: u32,
    /// Stages each onset is decoded at (0 for continuous decodings).
    pub stages: u32,
}

fn serialize_str<S: serde::Serializer>(s: &std::sync::Arc<str>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s)
}

/// Why a window was not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The window spans a gap, clock reset or reconnect.
    CrossesGap,
    /// NaN/Inf samples inside, and the policy is to skip.
    NonFinite,
    /// The scaler is still fitting on the first seconds of the session.
    ScalerWarmup,
    /// The marker's window had already left the buffer.
    TooLate,
    /// The encoder failed.
    EncoderError,
    /// The filters were still settling after a start, gap or reset.
    Settling,
    /// A continuous window the encoder could not get to in time: a newer one was ready
    /// (live decoding keeps up with the stream instead of decoding its past).
    Behind,
}

pub const SKIP_REASONS: [SkipReason; 7] = [
    SkipReason::CrossesGap,
    SkipReason::NonFinite,
    SkipReason::ScalerWarmup,
    SkipReason::TooLate,
    SkipReason::EncoderError,
    SkipReason::Settling,
    SkipReason::Behind,
];

/// Counters and recent latencies, shared lock-free (the latency log takes an uncontended
/// lock once per decoding, never per sample).
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub decoded: AtomicU64,
    pub decoded_event_locked: AtomicU64,
    skipped: [AtomicU64; 7],
    /// Onsets found on the trigger or photodiode channel.
    pub onsets_detected: AtomicU64,
    /// Onsets that got their label from a marker.
    pub onsets_paired: AtomicU64,
    /// Markers that no trigger/photodiode onset claimed (not decoded).
    pub markers_unpaired: AtomicU64,
    pub repaired_samples: AtomicU64,
    pub overruns: AtomicU64,
    recent: Mutex<VecDeque<(f32, f32)>>,
    /// Cumulative-free bucket counts for the Prometheus histograms.
    pub latency_hist: Histogram,
    pub encoder_hist: Histogram,
}

/// Upper bounds (seconds) of the end-to-end latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
/// Upper bounds (seconds) of the encoder time histogram buckets.
pub const ENCODER_BUCKETS: [f64; 10] = [0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05];

/// A fixed-bucket histogram of atomics (per-bucket counts, plus +Inf, sum and count).
#[derive(Debug, Default)]
pub struct Histogram {
    pub buckets: [AtomicU64; 11],
    /// Sum in nanoseconds.
    pub sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, bounds: &[f64; 10], v: f64) {
        let i = bounds.iter().position(|&b| v <= b).unwrap_or(10);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add((v.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }
}

/// Percentiles of recent latencies (milliseconds).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub encoder_p50_ms: f64,
    pub encoder_p99_ms: f64,
}

impl PipelineStats {
    pub fn skip(&self, r: SkipReason) {
        self.skipped[r as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn skipped(&self, r: SkipReason) -> u64 {
        self.skipped[r as usize].load(Ordering::Relaxed)
    }
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
    pub fn record(&self, d: &Decoding) {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        if d.mode == DecodeMode::EventLocked {
            self.decoded_event_locked.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_hist.observe(&LATENCY_BUCKETS, d.latency_s);
        self.encoder_hist.observe(&ENCODER_BUCKETS, d.encoder_s);
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == 2048 {
            r.pop_front();
        }
        r.push_back((d.latency_s as f32, d.encoder_s as f32));
    }

    pub fn latency(&self) -> LatencySummary {
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut lat: Vec<f32> = r.iter().map(|v| v.0).collect();
        let mut enc: Vec<f32> = r.iter().map(|v| v.1).collect();
        drop(r);
        lat.sort_by(f32::total_cmp);
        enc.sort_by(f32::total_cmp);
        let pct = |v: &[f32], p: f64| {
            if v.is_empty() {
                0.0
            } else {
                f64::from(v[((v.len() - 1) as f64 * p).round() as usize]) * 1e3
            }
        };
        LatencySummary {
            count: lat.len(),
            p50_ms: pct(&lat, 0.5),
            p90_ms: pct(&lat, 0.9),
            p99_ms: pct(&lat, 0.99),
            encoder_p50_ms: pct(&enc, 0.5),
            encoder_p99_ms: pct(&enc, 0.99),
        }
    }
}
