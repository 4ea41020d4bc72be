//! [`LivePipeline`]: the decoding thread that follows the ring buffer, and the
//! [`ImageWorker`] that runs the generator apart from it (latest-wins).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::core::DecoderCore;
use super::decoding::{Decoding, PipelineStats};
use super::signal::SignalTap;
use crate::ingest::{Marker, ReadError, RingBuffer};
use crate::lsl;
use crate::model::{Generator, RgbImage};
use crate::worker::StoppableThread;

/// Where decodings go (the hub, the recorder, a test).
pub type DecodingSink = Box<dyn FnMut(&Arc<Decoding>) + Send>;

/// An image drawn by the generator from decoding `sequence`'s embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedImage {
    pub sequence: u64,
    pub image: Arc<RgbImage>,
    /// The image as generated, PNG-encoded once for every subscriber.
    pub png: Arc<Vec<u8>>,
    /// Local LSL clock.
    pub generated_at: f64,
    /// PNG encodings at the other sizes subscribers asked for, each made once.
    pub sized: SizedPngs,
}

/// PNGs of one image by requested size, each encoded once whoever asks first (off the
/// async runtime) and shared by every subscriber asking for that size.
#[derive(Debug, Clone, Default)]
pub struct SizedPngs(Arc<Mutex<Vec<(u32, PngCell)>>>);

/// One size's PNG, filled once.
type PngCell = Arc<tokio::sync::OnceCell<Arc<Vec<u8>>>>;

impl PartialEq for SizedPngs {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl GeneratedImage {
    /// The image as PNG at `size` x `size` (0 or the generated size: as generated).
    pub async fn png_at(&self, size: u32) -> Arc<Vec<u8>> {
        if size == 0 || (size == self.image.width && size == self.image.height) {
            return self.png.clone();
        }
        let cell = {
            let mut v = self.sized.0.lock().unwrap_or_else(|e| e.into_inner());
            match v.iter().find(|(s, _)| *s == size) {
                Some((_, c)) => c.clone(),
                None => {
                    let c = Arc::new(tokio::sync::OnceCell::new());
                    v.push((size, c.clone()));
                    c
                }
            }
        };
        let image = self.image.clone();
        cell.get_or_init(|| async move {
            let png = tokio::task::spawn_blocking(move || image.resized(size).to_png().unwrap_or_default())
                .await
                .unwrap_or_default();
            Arc::new(png)
        })
        .await
        .clone()
    }
}

pub type ImageSink = Box<dyn FnMut(&GeneratedImage) + Send>;

/// The newest job: (sequence, embedding, model epoch it came from).
type Slot = Arc<(Mutex<Option<(u64, Vec<f32>, u64)>>, Condvar)>;
/// A generator to use from the next image on (`None` inside: the new model has none), with
/// the model epoch it belongs to.
type NextGenerator = Arc<Mutex<Option<(Option<Generator>, u64)>>>;

/// Runs the generator on its own thread, always on the newest embedding submitted:
/// older ones that it had no time for are dropped (and counted).
pub struct ImageWorker {
    slot: Slot,
    next: NextGenerator,
    /// Bumped by each model switch: a job from an older model is never drawn by a newer
    /// model's generator.
    epoch: Arc<AtomicU64>,
    pub generated: Arc<AtomicU64>,
    thread: StoppableThread,
}

impl ImageWorker {
    /// Starts the worker (idle while `generator` is None, until one is swapped in).
    pub fn start(mut generator: Option<Generator>, mut sinks: Vec<ImageSink>) -> Self {
        let slot: Slot = Arc::new((Mutex::new(None), Condvar::new()));
        let next: NextGenerator = Arc::new(Mutex::new(None));
        let generated = Arc::new(AtomicU64::new(0));
        let epoch = Arc::new(AtomicU64::new(0));
        let (slot2, gen2, next2) = (slot.clone(), generated.clone(), next.clone());
        let mut mine = 0u64;
        let thread = StoppableThread::spawn("generator".into(), move |stop| loop {
            let job = {
                let (lock, cv) = &*slot2;
                let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                while g.is_none() && !stop.is_set() {
                    g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
                }
                g.take()
            };
            let Some((sequence, embedding, job_epoch)) = job else { break };
            if let Some((g, e)) = next2.lock().unwrap_or_else(|e| e.into_inner()).take() {
                generator = g;
                mine = e;
            }
            if job_epoch != mine {
                continue;
            }
            let Some(generator) = generator.as_mut() else { continue };
            match generator.generate(&embedding).and_then(|im| {
                let png = im.to_png().map_err(crate::model::ModelError::Run)?;
                Ok((im, png))
            }) {
                Ok((image, png)) => {
                    gen2.fetch_add(1, Ordering::Relaxed);
                    let img = GeneratedImage {
                        sequence,
                        image: Arc::new(image),
                        png: Arc::new(png),
                        generated_at: lsl::local_clock().unwrap_or(0.0),
                        sized: Default::default(),
                    };
                    sinks.iter_mut().for_each(|s| s(&img));
                }
                Err(e) => tracing::error!("image generation failed: {e}"),
            }
        })
        .expect("spawn generator thread");
        Self { slot, next, epoch, generated, thread }
    }

    /// Draws with `generator` from the next image on (a model swapped in); an embedding
    /// of the previous model still waiting is dropped.
    pub fn replace(&self, generator: Option<Generator>) {
        let e = self.epoch.load(Ordering::Relaxed) + 1;
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = Some((generator, e));
        self.epoch.store(e, Ordering::Release);
        *self.slot.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Hands the newest embedding over (never blocks on generation).
    pub fn submit(&self, sequence: u64, embedding: &[f32]) {
        let (lock, cv) = &*self.slot;
        let epoch = self.epoch.load(Ordering::Acquire);
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = Some((sequence, embedding.to_vec(), epoch));
        cv.notify_one();
    }

    pub fn stop(&mut self) {
        self.thread.request_stop();
        self.slot.1.notify_all();
        self.thread.stop();
    }

    /// Why the generator thread died, if it did.
    pub fn failure(&self) -> crate::worker::Failure {
        self.thread.failure()
    }
}

/// A model taking over decoding (built by [`crate::swap::ModelSwitcher`]): its core, primed
/// on the ring's samples up to `position` (segments numbered with `seg_offset`).
pub struct ModelSwitch {
    pub core: DecoderCore,
    pub position: u64,
    pub seg_offset: u32,
    pub generator: Option<Generator>,
    pub reply: crossbeam_channel::Sender<Result<SwitchDone, String>>,
    /// Pending, taken or withdrawn ([`crate::swap::SWITCH_PENDING`]...): a caller that gave
    /// up waiting withdraws it, and the pipeline then drops it.
    pub state: Arc<std::sync::atomic::AtomicU8>,
    /// Run by the pipeline thread as it swaps cores, before the new model's first decoding
    /// (status, gallery and recording metadata follow the model).
    pub on_switch: Box<dyn FnOnce() + Send>,
}

/// A switch the pipeline made.
#[derive(Debug, Clone)]
pub struct SwitchDone {
    /// The first decoding of the new model gets this sequence number.
    pub first_sequence: u64,
    /// When the pipeline switched (local LSL clock).
    pub at: f64,
    /// The model it replaced ("name@sha").
    pub previous: Arc<str>,
}

/// The decoding thread: follows the ring buffer from its current head, feeds the
/// [`DecoderCore`], and hands each decoding to the sinks and the image worker. A
/// [`ModelSwitch`] replaces the core between two chunks of samples.
pub struct LivePipeline {
    pub stats: Arc<PipelineStats>,
    /// Added to the ring's segment numbers after an overrun (a primed core must use the same).
    pub seg_offset: Arc<AtomicU32>,
    thread: StoppableThread,
    generator: Option<crate::worker::Failure>,
}

/// What the pipeline thread reads from: the MEG ring buffer (from sample `start`), the
/// markers, model switches, and signal requests it answers.
pub struct PipelineInputs {
    pub ring: Arc<RingBuffer>,
    pub start: u64,
    pub markers: Receiver<Marker>,
    pub switches: Receiver<ModelSwitch>,
    pub signal: Arc<SignalTap>,
}

impl LivePipeline {
    pub fn start(
        mut core: DecoderCore,
        inputs: PipelineInputs,
        mut sinks: Vec<DecodingSink>,
        images: Option<ImageWorker>,
    ) -> Self {
        let PipelineInputs { ring, start, markers, switches, signal } = inputs;
        let stats = core.stats().clone();
        let stats2 = stats.clone();
        let generator = images.as_ref().map(ImageWorker::failure);
        let seg_offset_shared = Arc::new(AtomicU32::new(0));
        let seg_offset_out = seg_offset_shared.clone();
        let thread = StoppableThread::spawn("pipeline".into(), move |stop| {
            let images = images;
            let mut chunks = RingChunks::new(ring.channels(), 512);
            let mut cursor = start;
            let mut seg_offset = 0u32;
            let now = || lsl::local_clock().unwrap_or(0.0);
            let mut emit = |d: Decoding| {
                if let Some(w) = &images {
                    w.submit(d.sequence, &d.embedding);
                }
                let d = Arc::new(d);
                sinks.iter_mut().for_each(|s| s(&d));
            };
            let mut switch: Option<ModelSwitch> = None;
            while !stop.is_set() {
                if switch.is_none() {
                    switch = switches.try_recv().ok();
                }
                // The old core decodes up to the sample the new one was primed to; then the
                // new one catches up on what the old one saw since, and takes over.
                if let Some(sw) = switch.take_if(|sw| sw.position <= cursor) {
                    let taken = sw.state.compare_exchange(
                        crate::swap::SWITCH_PENDING,
                        crate::swap::SWITCH_TAKEN,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    if taken.is_err() {
                        tracing::warn!("a model switch was withdrawn by its caller before the pipeline got to it");
                        continue;
                    }
                    let reply = sw.reply.clone();
                    let res = take_over(sw, &mut core, &ring, cursor, seg_offset, &mut chunks).map(
                        |(generator, previous)| {
                            if let Some(w) = &images {
                                w.replace(generator);
                            }
                            SwitchDone { first_sequence: core.next_sequence(), at: now(), previous }
                        },
                    );
                    let _ = reply.send(res);
                }
                let mut got_marker = false;
                for m in markers.try_iter() {
                    core.push_marker(m);
                    got_marker = true;
                }
                signal.offer(|rows, snap| {
                    core.copy_signal(rows, snap);
                    snap.taken_at = now();
                });
                let head = ring.head();
                if head == cursor {
                    if got_marker {
                        core.poll(&now, &mut emit);
                    }
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                let until = switch.as_ref().map_or(head, |sw| head.min(sw.position));
                match chunks.read(&ring, cursor, until, seg_offset) {
                    Ok((rows, ts, seg)) => {
                        core.push_samples(rows, ts, seg, &now, &mut emit);
                        cursor += ts.len() as u64;
                    }
                    Err(ReadError::Overwritten { oldest, .. }) => {
                        // We fell behind by more than the ring holds: restart after the
                        // hole as a new segment (never splice across it).
                        stats2.overruns.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("pipeline fell behind the ring buffer; skipping {} samples", oldest - cursor);
                        cursor = oldest + chunks.len() as u64;
                        seg_offset = seg_offset.wrapping_add(1 << 24);
                        seg_offset_shared.store(seg_offset, Ordering::Relaxed);
                    }
                    Err(ReadError::NotYet { .. }) => std::thread::sleep(Duration::from_micros(500)),
                }
            }
            let pending = core.pending_markers();
            if pending > 0 {
                tracing::warn!(
                    "pipeline stopped with {pending} marker(s) not decoded: their windows were not complete"
                );
            }
            tracing::info!("pipeline stopped after decoding #{}", core.next_sequence().saturating_sub(1));
        })
        .expect("spawn pipeline thread");
        Self { stats, seg_offset: seg_offset_out, thread, generator }
    }

    pub fn stop(&mut self) {
        self.thread.stop();
    }

    /// Why the pipeline thread or the generator thread died, if one did.
    pub fn failures(&self) -> Vec<crate::worker::Failure> {
        std::iter::once(self.thread.failure()).chain(self.generator.clone()).collect()
    }
}

/// One chunk read from the ring: rows (sample-major), timestamps, segments.
pub type Chunk<'a> = (&'a [f32], &'a [f64], &'a [u32]);

/// Preallocated buffers for reading the ring a chunk at a time, with segment numbers
/// rebased by the pipeline's overrun offset (shared by the live loop and model priming).
pub struct RingChunks {
    channels: usize,
    data: Vec<f32>,
    ts: Vec<f64>,
    seg: Vec<u32>,
    flags: Vec<u8>,
}

impl RingChunks {
    pub fn new(channels: usize, chunk: usize) -> Self {
        Self {
            channels,
            data: vec![0.0; chunk * channels],
            ts: vec![0.0; chunk],
            seg: vec![0; chunk],
            flags: vec![0; chunk],
        }
    }

    /// Samples per chunk.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Reads samples `pos..min(until, pos + chunk)`: (rows, timestamps, segments + `seg_offset`).
    pub fn read(&mut self, ring: &RingBuffer, pos: u64, until: u64, seg_offset: u32) -> Result<Chunk<'_>, ReadError> {
        let n = (until.saturating_sub(pos) as usize).min(self.ts.len());
        let c = self.channels;
        ring.read_with_meta(pos, &mut self.data[..n * c], &mut self.ts[..n], &mut self.seg[..n], &mut self.flags[..n])?;
        if seg_offset > 0 {
            self.seg[..n].iter_mut().for_each(|s| *s = s.wrapping_add(seg_offset));
        }
        Ok((&self.data[..n * c], &self.ts[..n], &self.seg[..n]))
    }
}

/// Feeds ring samples `from..to` to `core` as its recent past ([`DecoderCore::prime`]).
pub fn prime_from_ring(
    core: &mut DecoderCore,
    ring: &RingBuffer,
    from: u64,
    to: u64,
    seg_offset: u32,
    chunks: &mut RingChunks,
) -> Result<(), ReadError> {
    let mut pos = from;
    while pos < to {
        let (rows, ts, seg) = chunks.read(ring, pos, to, seg_offset)?;
        core.prime(rows, ts, seg);
        pos += ts.len() as u64;
    }
    Ok(())
}

/// Brings `sw.core` from `sw.position` up to `cursor` (what the old core saw since it was
/// primed) and makes it the pipeline's core. Returns the new model's generator and the
/// id of the model it replaced.
fn take_over(
    mut sw: ModelSwitch,
    core: &mut DecoderCore,
    ring: &RingBuffer,
    cursor: u64,
    seg_offset: u32,
    chunks: &mut RingChunks,
) -> Result<(Option<Generator>, Arc<str>), String> {
    if sw.seg_offset != seg_offset {
        return Err("the pipeline fell behind the ring buffer while the model was loading; try again".into());
    }
    prime_from_ring(&mut sw.core, ring, sw.position, cursor, seg_offset, chunks)
        .map_err(|e| format!("the samples the new model needs have left the ring buffer ({e}); try again"))?;
    let previous = core.model_id().clone();
    sw.core.take_over(core);
    std::mem::swap(core, &mut sw.core);
    (sw.on_switch)();
    tracing::info!("model switched: {} -> {} from decoding #{}", previous, core.model_id(), core.next_sequence());
    Ok((sw.generator.take(), previous))
}
