//! [`SignalTap`]: the last seconds of preprocessed MEG, copied out of the pipeline when
//! someone asks (GetSignal, the viewer's butterfly plot).
//!
//! The pipeline never waits for a reader. A reader raises a request (how many model-rate
//! samples it wants); between two chunks the pipeline copies as many as the largest
//! pending request asks for into the tap, if no reader holds the tap at that moment
//! (`try_lock`; otherwise at the next chunk), and wakes the readers. Each reader takes
//! the first copy made after its request that is as long as it asked for (several
//! readers asking at once are all served, each with its own length). With nobody asking,
//! the tap costs the pipeline one atomic load per chunk; the copy reuses its buffers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Indices into `times` of rows that start a new segment (after a gap or a source
    /// clock reset: the times jump, perhaps back).
    pub segment_starts: Vec<u32>,
    /// Sample-major rows, `channels.len()` values each.
    pub rows: Vec<f32>,
    /// Markers the pipeline received, newest last (time, text).
    pub markers: Vec<(f64, String)>,
    /// When the copy was made (LSL clock); 0 before the first.
    pub taken_at: f64,
    /// How many rows the copy was asked for (it holds fewer while the buffer fills).
    pub asked: usize,
    /// Which copy this is (0: none yet).
    pub generation: u64,
}

/// The meeting point of the pipeline thread and signal readers.
#[derive(Debug, Default)]
pub struct SignalTap {
    /// Rows the pending readers want (0: nobody asks).
    wanted: AtomicUsize,
    /// Copies made so far.
    copies: AtomicU64,
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
        if self.wanted.load(Ordering::Acquire) == 0 {
            return;
        }
        let Ok(mut snap) = self.snapshot.try_lock() else { return };
        // Taken as one step: a request raised from here on waits for the next copy.
        let rows = self.wanted.swap(0, Ordering::AcqRel);
        if rows == 0 {
            return;
        }
        fill(rows, &mut snap);
        snap.asked = rows;
        snap.generation = self.copies.fetch_add(1, Ordering::AcqRel) + 1;
        drop(snap);
        self.copied.notify_waiters();
    }

    /// Reader side: asks for the newest `rows` samples and waits (at most `timeout`, e.g.
    /// when the stream has stalled) for a copy made after this request with that many;
    /// then returns the snapshot, fresh or not (see [`SignalSnapshot::taken_at`]).
    pub async fn request(&self, rows: usize, timeout: Duration) -> MutexGuard<'_, SignalSnapshot> {
        let rows = rows.clamp(1, MAX_SIGNAL_ROWS);
        let deadline = tokio::time::Instant::now() + timeout;
        let after = self.copies.load(Ordering::Acquire);
        loop {
            let copied = self.copied.notified();
            tokio::pin!(copied);
            copied.as_mut().enable();
            {
                let snap = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
                if snap.generation > after && snap.asked >= rows {
                    return snap;
                }
            }
            self.wanted.fetch_max(rows, Ordering::AcqRel);
            if tokio::time::timeout_at(deadline, copied).await.is_err() {
                return self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
            }
        }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_asking_at_once_each_get_a_fresh_copy_as_long_as_they_asked_for() {
        let tap = SignalTap::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t2, s2) = (tap.clone(), stop.clone());
        let pipeline = std::thread::spawn(move || {
            let mut chunk = 0u64;
            while !s2.load(Ordering::Relaxed) {
                chunk += 1;
                t2.offer(|rows, s| {
                    s.times.clear();
                    s.times.extend((0..rows).map(|i| (chunk * 100_000 + i as u64) as f64));
                });
                std::thread::sleep(Duration::from_micros(300));
            }
        });
        let readers: Vec<_> = [1200usize, 120, 600, 1200, 5, 600]
            .into_iter()
            .map(|rows| {
                let tap = tap.clone();
                tokio::spawn(async move {
                    let mut short = 0;
                    for _ in 0..300 {
                        let snap = tap.request(rows, Duration::from_secs(5)).await;
                        short += usize::from(snap.times.len() < rows);
                    }
                    short
                })
            })
            .collect();
        for r in readers {
            assert_eq!(r.await.unwrap(), 0, "a reader got a copy shorter than it asked for");
        }
        stop.store(true, Ordering::Relaxed);
        pipeline.join().unwrap();
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
