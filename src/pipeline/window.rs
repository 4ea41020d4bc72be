//! Windows: the model-rate sample buffer ([`ModelRateBuffer`]), the [`WindowScheduler`]
//! that decides which windows to decode (every hop, and locked to markers), and the
//! [`WindowAssembler`] that turns a window into the encoder's input (transpose to
//! `[channels, time]`, robust scaling, baseline, clamp).

use std::collections::VecDeque;

use super::decoding::SkipReason;
use crate::dsp::scale::{self, RobustScaler};
use crate::ingest::Marker;
use crate::model::{ModelContract, ScalerSpec};

/// The newest model-rate samples, indexed by their absolute number.
pub struct ModelRateBuffer {
    channels: usize,
    capacity: usize,
    rows: Vec<f32>,
    timestamps: Vec<f64>,
    segments: Vec<u32>,
    repaired: Vec<bool>,
    settled: Vec<bool>,
    head: u64,
}

impl ModelRateBuffer {
    pub fn new(channels: usize, capacity: usize) -> Self {
        Self {
            channels,
            capacity,
            rows: vec![0.0; channels * capacity],
            timestamps: vec![0.0; capacity],
            segments: vec![0; capacity],
            repaired: vec![false; capacity],
            settled: vec![false; capacity],
            head: 0,
        }
    }
    pub fn head(&self) -> u64 {
        self.head
    }
    pub fn oldest(&self) -> u64 {
        self.head.saturating_sub(self.capacity as u64)
    }
    fn slot(&self, i: u64) -> usize {
        (i % self.capacity as u64) as usize
    }
    pub fn push(&mut self, row: &[f32], timestamp: f64, segment: u32, repaired: bool, settled: bool) {
        let s = self.slot(self.head);
        self.settled[s] = settled;
        self.rows[s * self.channels..(s + 1) * self.channels].copy_from_slice(row);
        self.timestamps[s] = timestamp;
        self.segments[s] = segment;
        self.repaired[s] = repaired;
        self.head += 1;
    }
    pub fn timestamp(&self, i: u64) -> f64 {
        self.timestamps[self.slot(i)]
    }
    pub fn segment(&self, i: u64) -> u32 {
        self.segments[self.slot(i)]
    }
    pub fn row(&self, i: u64) -> &[f32] {
        let s = self.slot(i);
        &self.rows[s * self.channels..(s + 1) * self.channels]
    }
    pub fn any_repaired(&self, from: u64, to: u64) -> bool {
        (from..to).any(|i| self.repaired[self.slot(i)])
    }
    pub fn all_settled(&self, from: u64, to: u64) -> bool {
        (from..to).all(|i| self.settled[self.slot(i)])
    }

    /// The buffered sample whose timestamp is nearest `t` (timestamps increase within the
    /// buffer except across clock resets, which are separate segments anyway).
    pub fn nearest(&self, t: f64) -> Option<u64> {
        let (mut lo, mut hi) = (self.oldest(), self.head);
        if lo == hi {
            return None;
        }
        // First index with timestamp >= t.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.timestamp(mid) < t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let after = (lo < self.head).then_some(lo);
        let before = (lo > self.oldest()).then(|| lo - 1);
        match (before, after) {
            (Some(b), Some(a)) => {
                Some(if (t - self.timestamp(b)).abs() <= (self.timestamp(a) - t).abs() { b } else { a })
            }
            (b, a) => b.or(a),
        }
    }
}

/// A window to decode: `len` model samples from `start`.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRequest {
    pub start: u64,
    pub marker: Option<Marker>,
}

/// A window that will not be decoded, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub reason: SkipReason,
    pub marker: Option<Marker>,
}

pub struct WindowScheduler {
    len: usize,
    rate: f64,
    window_start_s: f64,
    /// Continuous mode: decode every `hop` samples (None = off).
    hop: Option<u64>,
    event_locked: bool,
    pending: VecDeque<Marker>,
}

impl WindowScheduler {
    pub fn new(contract: &ModelContract, hop_s: Option<f64>, event_locked: bool) -> Self {
        Self {
            len: contract.window_samples,
            rate: contract.sample_rate,
            window_start_s: contract.window_start_s,
            hop: hop_s.map(|h| ((h * contract.sample_rate).round() as u64).max(1)),
            event_locked,
            pending: VecDeque::new(),
        }
    }

    /// Queues a marker for event-locked decoding.
    pub fn add_marker(&mut self, m: Marker) {
        if self.event_locked {
            self.pending.push_back(m);
        }
    }

    pub fn pending_markers(&self) -> usize {
        self.pending.len()
    }

    /// The markers whose windows have not been decoded yet (handed to another scheduler).
    pub fn take_pending(&mut self) -> VecDeque<Marker> {
        std::mem::take(&mut self.pending)
    }

    /// Replaces the pending markers (those another scheduler had not decoded yet).
    pub fn replace_pending(&mut self, pending: VecDeque<Marker>) {
        self.pending = if self.event_locked { pending } else { VecDeque::new() };
    }

    /// After sample `head - 1` arrived: the continuous window it completes, if any.
    pub fn continuous(&self, buf: &ModelRateBuffer) -> Option<Result<WindowRequest, Skipped>> {
        let hop = self.hop?;
        let head = buf.head();
        if head < self.len as u64 || !head.is_multiple_of(hop) {
            return None;
        }
        let start = head - self.len as u64;
        Some(if buf.segment(start) != buf.segment(head - 1) {
            Err(Skipped { reason: SkipReason::CrossesGap, marker: None })
        } else {
            Ok(WindowRequest { start, marker: None })
        })
    }

    /// Event-locked windows whose data is complete (or can never be).
    pub fn ready_epochs(&mut self, buf: &ModelRateBuffer, out: &mut Vec<Result<WindowRequest, Skipped>>) {
        let head = buf.head();
        if head == 0 {
            return;
        }
        let newest_t = buf.timestamp(head - 1);
        let period = 1.0 / self.rate;
        let mut i = 0;
        while i < self.pending.len() {
            let start_t = self.pending[i].timestamp + self.window_start_s;
            let end_t = start_t + (self.len as f64 - 1.0) * period;
            if newest_t + 0.5 * period < end_t {
                i += 1;
                continue;
            }
            // The sample nearest the window start, found by its timestamp (the model-rate
            // clock follows the source's true rate, so counting back at the nominal rate
            // would drift).
            let nearest = buf.nearest(start_t).filter(|&s| (buf.timestamp(s) - start_t).abs() <= 0.75 * period);
            if nearest.is_some_and(|s| s + self.len as u64 > head) {
                // A source slower than nominal: the window's last sample is still to come.
                i += 1;
                continue;
            }
            let m = self.pending.remove(i).expect("index in range");
            let res = match nearest {
                Some(s) => {
                    if buf.segment(s) != buf.segment(s + self.len as u64 - 1) {
                        Err(Skipped { reason: SkipReason::CrossesGap, marker: Some(m) })
                    } else {
                        Ok(WindowRequest { start: s, marker: Some(m) })
                    }
                }
                None if start_t < buf.timestamp(buf.oldest()) - 0.5 * period => {
                    Err(Skipped { reason: SkipReason::TooLate, marker: Some(m) })
                }
                None => Err(Skipped { reason: SkipReason::CrossesGap, marker: Some(m) }),
            };
            out.push(res);
        }
    }
}

/// Builds the encoder's input from a window of the buffer.
pub struct WindowAssembler {
    channels: usize,
    len: usize,
    scaler: Option<RobustScaler>,
    fit: Option<(usize, Vec<f32>)>,
    baseline: (usize, usize),
    clamp: Option<f32>,
    /// `[channels, time]`, reused.
    pub window: Vec<f32>,
}

impl WindowAssembler {
    pub fn new(contract: &ModelContract) -> Self {
        let c = contract.channel_names.len();
        let (scaler, fit) = match &contract.scaler {
            ScalerSpec::Fixed { center, scale } => {
                (Some(RobustScaler { center: center.clone(), scale: scale.clone() }), None)
            }
            ScalerSpec::FitSeconds(s) => {
                let n = (s * contract.sample_rate).ceil() as usize;
                (None, Some((n, Vec::with_capacity(n * c))))
            }
            ScalerSpec::None => (None, None),
        };
        Self {
            channels: c,
            len: contract.window_samples,
            scaler,
            fit,
            baseline: contract.baseline_samples(),
            clamp: contract.clamp,
            window: vec![0.0; c * contract.window_samples],
        }
    }

    /// Feeds the scaler fit (a no-op once fitted or when not fitting).
    pub fn observe(&mut self, row: &[f32]) {
        let c = self.channels;
        if let Some((n, data)) = &mut self.fit {
            data.extend_from_slice(row);
            if data.len() >= *n * c {
                // Channel-major for the fit.
                let t = data.len() / c;
                let mut cm = vec![0.0; data.len()];
                for (i, r) in data.chunks_exact(c).enumerate() {
                    for (ch, &v) in r.iter().enumerate() {
                        cm[ch * t + i] = v;
                    }
                }
                self.scaler = Some(RobustScaler::fit(&cm, c));
                self.fit = None;
                tracing::info!("robust scaler fitted on the first {t} model samples");
            }
        }
    }

    pub fn ready(&self) -> bool {
        self.fit.is_none()
    }

    pub fn scaler(&self) -> Option<&RobustScaler> {
        self.scaler.as_ref()
    }

    /// Uses `other`'s scaler (once fitted): a progressive stage scales its windows as the
    /// model does.
    pub fn share_scaler(&mut self, other: &WindowAssembler) {
        if self.fit.is_some() && other.fit.is_none() {
            self.scaler = other.scaler.clone();
            self.fit = None;
        }
    }

    /// Fills [`window`](Self::window) from `buf[start..start+len]`.
    pub fn assemble(&mut self, buf: &ModelRateBuffer, start: u64) {
        let t = self.len;
        for i in 0..t {
            for (ch, &v) in buf.row(start + i as u64).iter().enumerate() {
                self.window[ch * t + i] = v;
            }
        }
        if let Some(s) = &self.scaler {
            s.apply(&mut self.window, t);
        }
        scale::baseline(&mut self.window, t, self.baseline.0, self.baseline.1);
        if let Some(c) = self.clamp {
            scale::clamp(&mut self.window, c);
        }
    }
}
