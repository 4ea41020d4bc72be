//! [`LivePipeline`]: the decoding thread that follows the ring buffer, and the
//! [`ImageWorker`] that runs the generator apart from it (latest-wins).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::core::DecoderCore;
use super::decoding::{Decoding, PipelineStats};
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

type Slot = Arc<(Mutex<Option<(u64, Vec<f32>)>>, Condvar)>;

/// Runs the generator on its own thread, always on the newest embedding submitted:
/// older ones that it had no time for are dropped (and counted).
pub struct ImageWorker {
    slot: Slot,
    pub generated: Arc<AtomicU64>,
    thread: StoppableThread,
}

impl ImageWorker {
    pub fn start(mut generator: Generator, mut sinks: Vec<ImageSink>) -> Self {
        let slot: Slot = Arc::new((Mutex::new(None), Condvar::new()));
        let generated = Arc::new(AtomicU64::new(0));
        let (slot2, gen2) = (slot.clone(), generated.clone());
        let thread = StoppableThread::spawn("generator".into(), move |stop| loop {
            let job = {
                let (lock, cv) = &*slot2;
                let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                while g.is_none() && !stop.is_set() {
                    g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
                }
                g.take()
            };
            let Some((sequence, embedding)) = job else { break };
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
        Self { slot, generated, thread }
    }

    /// Hands the newest embedding over (never blocks on generation).
    pub fn submit(&self, sequence: u64, embedding: &[f32]) {
        let (lock, cv) = &*self.slot;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = Some((sequence, embedding.to_vec()));
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

/// The decoding thread: follows the ring buffer from its current head, feeds the
/// [`DecoderCore`], and hands each decoding to the sinks and the image worker.
pub struct LivePipeline {
    pub stats: Arc<PipelineStats>,
    thread: StoppableThread,
    generator: Option<crate::worker::Failure>,
}

impl LivePipeline {
    pub fn start(
        mut core: DecoderCore,
        ring: Arc<RingBuffer>,
        markers: Receiver<Marker>,
        mut sinks: Vec<DecodingSink>,
        images: Option<ImageWorker>,
        start: u64,
    ) -> Self {
        let stats = core.stats().clone();
        let stats2 = stats.clone();
        let generator = images.as_ref().map(ImageWorker::failure);
        let thread = StoppableThread::spawn("pipeline".into(), move |stop| {
            let images = images;
            let chunk = 512usize;
            let c = ring.channels();
            let mut data = vec![0.0f32; chunk * c];
            let mut ts = vec![0.0f64; chunk];
            let mut seg = vec![0u32; chunk];
            let mut flags = vec![0u8; chunk];
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
            while !stop.is_set() {
                let mut got_marker = false;
                for m in markers.try_iter() {
                    core.push_marker(m);
                    got_marker = true;
                }
                let head = ring.head();
                if head == cursor {
                    if got_marker {
                        core.poll(&now, &mut emit);
                    }
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                let n = ((head - cursor) as usize).min(chunk);
                match ring.read_with_meta(cursor, &mut data[..n * c], &mut ts[..n], &mut seg[..n], &mut flags[..n]) {
                    Ok(()) => {
                        if seg_offset > 0 {
                            seg[..n].iter_mut().for_each(|s| *s = s.wrapping_add(seg_offset));
                        }
                        core.push_samples(&data[..n * c], &ts[..n], &seg[..n], &now, &mut emit);
                        cursor += n as u64;
                    }
                    Err(ReadError::Overwritten { oldest, .. }) => {
                        // We fell behind by more than the ring holds: restart after the
                        // hole as a new segment (never splice across it).
                        stats2.overruns.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("pipeline fell behind the ring buffer; skipping {} samples", oldest - cursor);
                        cursor = oldest + chunk as u64;
                        seg_offset = seg_offset.wrapping_add(1 << 24);
                    }
                    Err(ReadError::NotYet { .. }) => std::thread::sleep(Duration::from_micros(500)),
                }
            }
        })
        .expect("spawn pipeline thread");
        Self { stats, thread, generator }
    }

    pub fn stop(&mut self) {
        self.thread.stop();
    }

    /// Why the pipeline thread or the generator thread died, if one did.
    pub fn failures(&self) -> Vec<crate::worker::Failure> {
        std::iter::once(self.thread.failure()).chain(self.generator.clone()).collect()
    }
}
