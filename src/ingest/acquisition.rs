//! [`MegAcquisition`]: the acquisition thread of one numeric (MEG) stream.
//!
//! It resolves the stream, opens an inlet, and then loops: pull whatever liblsl holds into
//! a preallocated chunk buffer (sleeping in `pull_sample` when there is none), map the
//! timestamps onto the local clock with LSL time correction, split the chunk at every
//! discontinuity the [`GapDetector`] finds, and append the pieces to the [`RingBuffer`]
//! under a new segment number each time. It survives the source going away: with a
//! `source_id` liblsl re-resolves it; without one the thread re-resolves by its query.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::gaps::{Discontinuity, GapDetector, Step};
use super::ring::{RingBuffer, RingWriter};
use super::stats::StreamStats;
use super::{IngestError, IngestEvent, StreamDescription, StreamQuery};
use crate::lsl::{self, Inlet, PullError};
use crate::worker::{StopFlag, StoppableThread};

/// A change of the LSL clock offset larger than this opens a new segment.
const OFFSET_STEP_S: f64 = 0.005;

/// Largest ring buffer the service allocates (8 GiB of samples).
const MAX_RING_BYTES: f64 = 8.0 * 1024.0 * 1024.0 * 1024.0;

/// How to find and hold a MEG stream.
#[derive(Debug, Clone)]
pub struct AcquisitionConfig {
    pub query: StreamQuery,
    /// How long to wait for the stream at start-up.
    pub resolve_timeout_s: f64,
    /// Seconds of data the ring buffer keeps.
    pub ring_seconds: f64,
    /// Channel count the caller expects (e.g. from its configuration), checked at connect.
    pub expected_channels: Option<usize>,
    /// Channel labels the caller expects, in order, checked at connect.
    pub expected_labels: Option<Vec<String>>,
    /// No data for this long means the source is lost (reported once).
    pub stall_timeout_s: f64,
}

impl AcquisitionConfig {
    pub fn new(query: StreamQuery) -> Self {
        Self {
            query,
            resolve_timeout_s: 5.0,
            ring_seconds: 30.0,
            expected_channels: None,
            expected_labels: None,
            stall_timeout_s: 1.0,
        }
    }
}

/// A running acquisition thread and what it shares.
pub struct MegAcquisition {
    pub description: StreamDescription,
    pub ring: Arc<RingBuffer>,
    pub stats: Arc<StreamStats>,
    pub events: Receiver<IngestEvent>,
    thread: StoppableThread,
}

impl MegAcquisition {
    /// Resolves and opens the stream (errors surface here, not later), then starts the
    /// acquisition thread.
    pub fn start(cfg: AcquisitionConfig) -> Result<Self, IngestError> {
        let (inlet, info) = connect(&cfg.query, cfg.resolve_timeout_s)?;
        let description = StreamDescription::from_info(&info);
        check_expectations(&cfg, &description)?;
        let srate = description.nominal_srate;
        if !(srate > 0.0 && srate.is_finite()) {
            return Err(IngestError::IrregularRate { name: description.name.clone() });
        }
        let samples = (cfg.ring_seconds * srate).ceil();
        // Values are kept as f64 (8 bytes), plus 8+4+1 bytes of timestamp, segment and flags.
        let bytes = samples * (description.channel_count as f64 * 8.0 + 13.0);
        if !bytes.is_finite() || bytes > MAX_RING_BYTES {
            return Err(IngestError::RingTooLarge {
                name: description.name.chars().take(64).collect(),
                seconds: cfg.ring_seconds,
                rate: srate,
                channels: description.channel_count,
            });
        }
        let capacity = (samples as usize).max(1024);
        let (writer, ring) = RingBuffer::new(description.channel_count, capacity);
        let stats = Arc::new(StreamStats::default());
        let (tx, events) = crossbeam_channel::bounded(4096);
        let worker = Acquirer {
            inlet,
            writer,
            stats: stats.clone(),
            events: tx,
            query: cfg.query.clone(),
            channels: description.channel_count,
            srate,
            stall: Duration::from_secs_f64(cfg.stall_timeout_s),
            name: description.name.clone(),
            original: description.clone(),
        };
        let thread = StoppableThread::spawn(format!("lsl-{}", description.name), move |stop| worker.run(&stop))
            .map_err(|e| IngestError::Thread(e.to_string()))?;
        Ok(Self { description, ring, stats, events, thread })
    }

    /// Asks the thread to stop and waits for it.
    pub fn stop(&mut self) {
        self.thread.stop();
    }

    /// Why the acquisition thread died, if it did.
    pub fn failure(&self) -> crate::worker::Failure {
        self.thread.failure()
    }
}

/// Resolves `query` and opens an inlet with the full description (channel metadata).
pub(super) fn connect(query: &StreamQuery, timeout_s: f64) -> Result<(Inlet, lsl::StreamInfo), IngestError> {
    let found = lsl::resolve_bypred(&query.predicate()?, timeout_s)?;
    let info = found.into_iter().next().expect("resolve returns at least one stream");
    let recover = !info.source_id().is_empty();
    let mut inlet = Inlet::open(&info, 60, recover)?;
    let full = inlet.info(timeout_s.max(2.0))?;
    inlet.open_stream(timeout_s.max(2.0))?;
    Ok((inlet, full))
}

fn check_expectations(cfg: &AcquisitionConfig, d: &StreamDescription) -> Result<(), IngestError> {
    if let Some(n) = cfg.expected_channels {
        if n != d.channel_count {
            return Err(IngestError::ChannelCount { name: d.name.clone(), found: d.channel_count, expected: n });
        }
    }
    if let Some(labels) = &cfg.expected_labels {
        let found = d.labels();
        let missing: Vec<_> = labels.iter().filter(|l| !found.contains(l)).cloned().collect();
        if !missing.is_empty() || found.len() != labels.len() {
            return Err(IngestError::ChannelNames {
                name: d.name.clone(),
                missing,
                found: found.len(),
                expected: labels.len(),
            });
        }
    }
    Ok(())
}

struct Acquirer {
    inlet: Inlet,
    writer: RingWriter,
    stats: Arc<StreamStats>,
    events: Sender<IngestEvent>,
    query: StreamQuery,
    channels: usize,
    srate: f64,
    stall: Duration,
    name: String,
    /// The stream as it was at start-up (a stream found again must match it).
    original: StreamDescription,
}

impl Acquirer {
    fn emit(&self, e: IngestEvent) {
        match &e {
            IngestEvent::Gap { .. }
            | IngestEvent::SourceLost { .. }
            | IngestEvent::ClockReset { .. }
            | IngestEvent::NonFinite { .. }
            | IngestEvent::RateMismatch { .. } => {
                tracing::warn!(stream = %self.name, "{e}")
            }
            _ => tracing::info!(stream = %self.name, "{e}"),
        }
        let _ = self.events.try_send(e);
    }

    fn run(mut self, stop: &StopFlag) {
        // Chunk buffers: ~100 ms of data, allocated once.
        let max_chunk = ((self.srate * 0.1).ceil() as usize).max(64);
        // Double precision: the ring keeps double64 and integer sources exactly (for the
        // recorder); the decoder reads f32.
        let mut data = vec![0.0f64; max_chunk * self.channels];
        let mut stamps = vec![0.0f64; max_chunk];
        let mut gaps = GapDetector::new(self.srate);
        // Samples held by the gap detector (rows, raw timestamps), allocated once.
        let hold = gaps.max_hold() + 1;
        let mut held: (Vec<f64>, Vec<f64>) = (Vec::with_capacity(hold * self.channels), Vec::with_capacity(hold));
        let mut segment = 0u32;
        let mut offset = self.inlet.time_correction(2.0).unwrap_or(0.0);
        self.stats.set_clock_offset(offset);
        self.stats.connected.store(true, Ordering::Relaxed);
        let mut last_correction = Instant::now();
        let mut last_data = Instant::now();
        let mut lost = false;
        // Arrival-rate measurement; the first window is skipped (it includes the backlog
        // liblsl delivers at connect).
        let mut rate_window = (Instant::now(), 0u64);
        let mut rate_windows = 0u32;
        let mut rate_warned = false;

        while !stop.is_set() {
            let got = match self.pull(&mut data, &mut stamps) {
                Ok(n) => n,
                Err(PullError::Lost) => {
                    self.emit(IngestEvent::SourceLost { last_timestamp: gaps.last() });
                    StreamStats::add(&self.stats.source_losses, 1);
                    self.stats.connected.store(false, Ordering::Relaxed);
                    if !self.reresolve(stop) {
                        break;
                    }
                    lost = true;
                    continue;
                }
                Err(PullError::Other(e)) => {
                    self.emit(IngestEvent::Error(e.to_string()));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let now = Instant::now();
            if got == 0 {
                if !lost && gaps.last().is_some() && now.duration_since(last_data) > self.stall {
                    lost = true;
                    StreamStats::add(&self.stats.source_losses, 1);
                    self.stats.connected.store(false, Ordering::Relaxed);
                    self.emit(IngestEvent::SourceLost { last_timestamp: gaps.last() });
                }
                continue;
            }
            last_data = now;
            if lost {
                lost = false;
                StreamStats::add(&self.stats.reconnects, 1);
                self.stats.connected.store(true, Ordering::Relaxed);
                self.emit(IngestEvent::Reconnected);
                // The outage is not the source's rate: measure afresh. The source may
                // be a new process on a clock of its own: correct at once, new segment.
                rate_window = (now, 0);
                rate_windows = 0;
                if let Ok(o) = self.inlet.time_correction(1.0) {
                    offset = o;
                    self.stats.set_clock_offset(o);
                }
                last_correction = now;
                segment += 1;
            }
            if self.inlet.was_clock_reset() || now.duration_since(last_correction) > Duration::from_secs(5) {
                if let Ok(o) = self.inlet.time_correction(0.5) {
                    if (o - offset).abs() > OFFSET_STEP_S && self.stats.samples.load(Ordering::Relaxed) > 0 {
                        // The clocks were stepped (e.g. NTP on either PC): the local times
                        // of what follows do not continue what came before.
                        self.discontinuity(Discontinuity::ClockReset { step_s: o - offset }, &mut segment);
                    }
                    offset = o;
                    self.stats.set_clock_offset(o);
                }
                last_correction = now;
            }
            // Split the chunk at each discontinuity; raw timestamps drive detection.
            // Late samples are held (copied aside) until the detector knows whether
            // they were pushed late or follow lost samples.
            let mut run = 0;
            for i in 0..got {
                match gaps.observe(stamps[i]) {
                    Step::Accept => {}
                    Step::Hold => {
                        self.push_run(&data, &mut stamps, run, i, offset, segment);
                        let c = self.channels;
                        held.0.extend_from_slice(&data[i * c..(i + 1) * c]);
                        held.1.push(stamps[i]);
                        run = i + 1;
                    }
                    Step::Break(d) => {
                        self.push_run(&data, &mut stamps, run, i, offset, segment);
                        self.discontinuity(d, &mut segment);
                        rate_window = (now, 0);
                        run = i;
                    }
                    Step::Release(d) => {
                        if let Some((d, keep)) = d {
                            // The first `keep` held samples were late pushes before the loss.
                            self.push_held_part(&mut held, keep, offset, segment);
                            self.discontinuity(d, &mut segment);
                            rate_window = (now, 0);
                        }
                        self.push_held(&mut held, offset, segment);
                        run = i;
                    }
                }
            }
            self.push_run(&data, &mut stamps, run, got, offset, segment);
            StreamStats::add(&self.stats.samples, got as u64);
            StreamStats::add(&self.stats.chunks, 1);
            let newest = stamps[got - 1] + offset;
            if let Ok(clock) = lsl::local_clock() {
                self.stats.set_lag(clock - newest);
            }
            rate_window.1 += got as u64;
            let span = now.duration_since(rate_window.0).as_secs_f64();
            if span >= 5.0 {
                let measured = rate_window.1 as f64 / span;
                rate_windows += 1;
                if rate_windows > 1 {
                    self.stats.set_measured_rate(measured);
                }
                if rate_windows > 1 && (measured / self.srate - 1.0).abs() > 0.1 && !rate_warned {
                    rate_warned = true;
                    self.emit(IngestEvent::RateMismatch { nominal: self.srate, measured });
                }
                rate_window = (now, 0);
            }
        }
        // Samples still held when the thread stops end the current segment (as
        // `GapDetector::segment_all` ends a recording).
        gaps.flush();
        self.push_held(&mut held, offset, segment);
        self.stats.connected.store(false, Ordering::Relaxed);
    }

    /// Handles one discontinuity: counts it, opens a new segment, reports it.
    fn discontinuity(&self, d: Discontinuity, segment: &mut u32) {
        *segment += 1;
        match d {
            Discontinuity::Gap { missing, seconds } => {
                StreamStats::add(&self.stats.gaps, 1);
                StreamStats::add(&self.stats.missing_samples, missing);
                self.emit(IngestEvent::Gap { at_sample: self.writer.ring().head(), missing_samples: missing, seconds });
            }
            Discontinuity::ClockReset { step_s } => {
                StreamStats::add(&self.stats.clock_resets, 1);
                self.emit(IngestEvent::ClockReset { step_s });
            }
        }
    }

    /// Appends chunk samples `from..to` to the ring (timestamps mapped to the local clock).
    fn push_run(&mut self, data: &[f64], stamps: &mut [f64], from: usize, to: usize, offset: f64, segment: u32) {
        if from >= to {
            return;
        }
        let piece = &mut stamps[from..to];
        piece.iter_mut().for_each(|t| *t += offset);
        let c = self.channels;
        let bad = self.writer.push(&data[from * c..to * c], piece, segment);
        // The raw stamps stay as they were for the caller.
        piece.iter_mut().for_each(|t| *t -= offset);
        if bad > 0 {
            StreamStats::add(&self.stats.non_finite_samples, bad as u64);
            self.emit(IngestEvent::NonFinite { samples: bad });
        }
    }

    /// Appends the first `n` held samples to the ring and drops them from the hold.
    fn push_held_part(&mut self, held: &mut (Vec<f64>, Vec<f64>), n: usize, offset: f64, segment: u32) {
        if n == 0 {
            return;
        }
        let c = self.channels;
        held.1[..n].iter_mut().for_each(|t| *t += offset);
        let bad = self.writer.push(&held.0[..n * c], &held.1[..n], segment);
        if bad > 0 {
            StreamStats::add(&self.stats.non_finite_samples, bad as u64);
            self.emit(IngestEvent::NonFinite { samples: bad });
        }
        held.0.drain(..n * c);
        held.1.drain(..n);
    }

    /// Appends the held samples to the ring and empties the hold.
    fn push_held(&mut self, held: &mut (Vec<f64>, Vec<f64>), offset: f64, segment: u32) {
        let n = held.1.len();
        self.push_held_part(held, n, offset, segment);
    }

    /// Pulls what is buffered; if nothing is, sleeps in `pull_sample` for up to 50 ms.
    fn pull(&mut self, data: &mut [f64], stamps: &mut [f64]) -> Result<usize, PullError> {
        let n = self.inlet.pull_chunk_f64(data, stamps, 0.0)?;
        if n > 0 {
            return Ok(n);
        }
        let ch = self.channels;
        match self.inlet.pull_sample_f64(&mut data[..ch], 0.05)? {
            None => Ok(0),
            Some(t) => {
                stamps[0] = t;
                let more = self.inlet.pull_chunk_f64(&mut data[ch..], &mut stamps[1..], 0.0)?;
                Ok(1 + more)
            }
        }
    }

    /// Without a source_id liblsl cannot recover: find the stream again by query. A stream
    /// that comes back different (channel count, labels, rate or format) is not taken:
    /// the model was checked against the original.
    fn reresolve(&mut self, stop: &StopFlag) -> bool {
        while !stop.is_set() {
            if let Ok((inlet, info)) = connect(&self.query, 1.0) {
                match self.differs(&StreamDescription::from_info(&info)) {
                    None => {
                        self.inlet = inlet;
                        return true;
                    }
                    Some(why) => {
                        self.emit(IngestEvent::Error(format!(
                            "stream '{}' came back with {why}; not taking it (restart meg-decoder to accept the new stream)",
                            self.name
                        )));
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        }
        false
    }

    /// How a stream found again differs from the one the service started with.
    fn differs(&self, d: &StreamDescription) -> Option<String> {
        if d.channel_count != self.original.channel_count {
            return Some(format!("{} channels instead of {}", d.channel_count, self.original.channel_count));
        }
        if d.nominal_srate != self.original.nominal_srate {
            return Some(format!("a rate of {} Hz instead of {} Hz", d.nominal_srate, self.original.nominal_srate));
        }
        if d.format != self.original.format {
            return Some(format!("format {} instead of {}", d.format.as_str(), self.original.format.as_str()));
        }
        let (new, old) = (d.labels(), self.original.labels());
        if let Some(i) = (0..new.len()).find(|&i| new[i] != old[i]) {
            return Some(format!(
                "channel {i} labelled '{}' instead of '{}'",
                new[i].chars().take(32).collect::<String>(),
                old[i].chars().take(32).collect::<String>()
            ));
        }
        None
    }
}
