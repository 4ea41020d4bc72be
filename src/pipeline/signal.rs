//! [`SignalTap`]: the last seconds of preprocessed MEG, copied out of the pipeline when
//! someone asks (GetSignal, the viewer's butterfly plot).
//!
//! The pipeline never waits for a reader. A reader raises a request (how many model-rate
//! samples it wants); between two chunks the pipeline copies that much of its
//! model-rate buffer into the tap, if no reader holds the tap at that moment
//! (`try_lock`; otherwise at the next chunk), and wakes the readers. With nobody asking,
//! the tap costs the pipeline one atomic load per chunk; the copy reuses its buffers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Most model-rate samples one request may copy (60 s at 1 kHz).
pub const MAX_SIGNAL_ROWS: usize = 60_000;

/// What the pipeline copied at the last request.
#[derive(Debug, Default)]
pub struct SignalSnapshot {
    /// The model whose preprocessing made these samples ("name@sha").
    pub model: Arc<str>,
    pub sample_rate: f64,
    /// The model's channels, in the order of each row.
    pub channels: Arc<[String]>,
    /// SI unit of each channel ("T", "T/m"; empty when the stream's type has none).
    pub units: Arc<[&'static str]>,
    /// One timestamp per row (the fitted LSL clock).
    pub times: Vec<f64>,
    /// Sample-major rows, `channels.len()` values each.
    pub rows: Vec<f32>,
    /// Markers the pipeline received, newest last (time, text).
    pub markers: Vec<(f64, String)>,
    /// When the copy was made (LSL clock); 0 before the first.
    pub taken_at: f64,
}

/// The meeting point of the pipeline thread and signal readers.
#[derive(Debug, Default)]
pub struct SignalTap {
    /// Rows the pending readers want (0: nobody asks).
    wanted: AtomicUsize,
    snapshot: Mutex<SignalSnapshot>,
    copied: tokio::sync::Notify,
}

impl SignalTap {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Pipeline side, between chunks: if a reader is waiting, `fill` the snapshot with
    /// the newest `rows` samples and wake the readers.
    pub fn offer(&self, fill: impl FnOnce(usize, &mut SignalSnapshot)) {
        let rows = self.wanted.load(Ordering::Acquire);
        if rows == 0 {
            return;
        }
        let Ok(mut snap) = self.snapshot.try_lock() else { return };
        self.wanted.store(0, Ordering::Release);
        fill(rows, &mut snap);
        drop(snap);
        self.copied.notify_waiters();
    }

    /// Reader side: asks for the newest `rows` samples and waits (at most `timeout`, e.g.
    /// when the stream has stalled) until the pipeline has copied them; then returns the
    /// snapshot, fresh or not (see [`SignalSnapshot::taken_at`]).
    pub async fn request(&self, rows: usize, timeout: Duration) -> MutexGuard<'_, SignalSnapshot> {
        let copied = self.copied.notified();
        tokio::pin!(copied);
        copied.as_mut().enable();
        self.wanted.fetch_max(rows.clamp(1, MAX_SIGNAL_ROWS), Ordering::AcqRel);
        let _ = tokio::time::timeout(timeout, copied).await;
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_gets_what_the_pipeline_copies_and_nothing_is_copied_unasked() {
        let tap = SignalTap::new();
        let mut fills = 0;
        tap.offer(|_, _| fills += 1);
        assert_eq!(fills, 0, "copied with nobody asking");
        let t2 = tap.clone();
        let pipeline = std::thread::spawn(move || {
            for chunk in 0..200 {
                t2.offer(|rows, s| {
                    s.times = (0..rows).map(|i| (chunk * 1000 + i) as f64).collect();
                    s.taken_at = chunk as f64;
                });
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let snap = tap.request(7, Duration::from_secs(5)).await;
        assert_eq!(snap.times.len(), 7);
        assert!(snap.taken_at >= 0.0);
        drop(snap);
        pipeline.join().unwrap();
        // Once served, the request is gone.
        let mut again = 0;
        tap.offer(|_, _| again += 1);
        assert_eq!(again, 0);
    }

    #[tokio::test]
    async fn a_stalled_pipeline_answers_with_the_old_copy_after_the_timeout() {
        let tap = SignalTap::new();
        let t = std::time::Instant::now();
        let snap = tap.request(10, Duration::from_millis(100)).await;
        assert!(t.elapsed() >= Duration::from_millis(90));
        assert_eq!(snap.taken_at, 0.0);
        assert!(snap.times.is_empty());
    }
}
