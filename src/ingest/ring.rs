//! [`RingBuffer`]: the multi-channel sample store between the acquisition thread and its
//! readers (window scheduler, recorder, status).
//!
//! One writer ([`RingWriter`]), any number of readers, no locks: values live in atomics
//! (f64 bits, so float32, double64 and integer sources are kept exactly for the recorder;
//! `Relaxed` stores compile to plain moves), the writer publishes how
//! far it has written with a seqlock-style pair of counters, and a reader that raced an
//! overwrite finds out and gets [`ReadError::Overwritten`] instead of torn data.
//!
//! Each sample also carries its *segment*: a number that changes at every discontinuity
//! (gap, clock reset, reconnect). A window whose first and last samples share a segment
//! is contiguous; the scheduler never decodes across a segment boundary.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// The value types the ring takes and hands back (see [`crate::lsl::Sample`]): stored as
/// f64 (exact for f32, f64 and integers up to 2^53), read as f32 by the decoder and as f64
/// by the recorder.
pub use crate::lsl::Sample;

/// Per-sample flag: at least one channel was NaN or infinite.
pub const FLAG_NON_FINITE: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("samples {start}..{end} are not in the ring buffer yet (written up to {head})")]
    NotYet { start: u64, end: u64, head: u64 },
    #[error(
        "samples from {start} were already overwritten (oldest kept: {oldest}); enlarge the ring buffer or read sooner"
    )]
    Overwritten { start: u64, oldest: u64 },
}

/// Shared, read-only side of the buffer.
pub struct RingBuffer {
    channels: usize,
    capacity: usize,
    /// `capacity * channels` values as f64 bits, sample-major.
    data: Box<[AtomicU64]>,
    /// Local-clock timestamps (f64 bits).
    times: Box<[AtomicU64]>,
    segments: Box<[AtomicU32]>,
    flags: Box<[AtomicU8]>,
    /// Samples fully written and visible to readers.
    head: AtomicU64,
    /// Samples the writer may be writing (>= head): what a reader must not rely on.
    reserved: AtomicU64,
}

/// The single writer. Not `Clone`: only the acquisition thread holds it.
pub struct RingWriter {
    ring: Arc<RingBuffer>,
}

/// One sample's metadata, as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleMeta {
    pub timestamp: f64,
    pub segment: u32,
    pub flags: u8,
}

impl RingBuffer {
    /// A buffer for `channels` channels holding the newest `capacity` samples.
    pub fn new(channels: usize, capacity: usize) -> (RingWriter, Arc<RingBuffer>) {
        assert!(channels > 0 && capacity > 0, "ring buffer needs channels and capacity");
        let ring = Arc::new(RingBuffer {
            channels,
            capacity,
            data: (0..channels * capacity).map(|_| AtomicU64::new(0)).collect(),
            times: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            segments: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            flags: (0..capacity).map(|_| AtomicU8::new(0)).collect(),
            head: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
        });
        (RingWriter { ring: ring.clone() }, ring)
    }

    pub fn channels(&self) -> usize {
        self.channels
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// How full the ring is (0..1).
    pub fn fill(&self) -> f64 {
        (self.head() - self.oldest()) as f64 / self.capacity as f64
    }
    /// Index one past the newest readable sample (total samples ever written).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }
    /// Index of the oldest sample still safely readable.
    pub fn oldest(&self) -> u64 {
        self.reserved.load(Ordering::Acquire).saturating_sub(self.capacity as u64)
    }

    fn check(&self, start: u64, end: u64) -> Result<(), ReadError> {
        let head = self.head();
        if end > head {
            return Err(ReadError::NotYet { start, end, head });
        }
        Ok(())
    }

    fn validate(&self, start: u64) -> Result<(), ReadError> {
        fence(Ordering::Acquire);
        let oldest = self.reserved.load(Ordering::Relaxed).saturating_sub(self.capacity as u64);
        if start < oldest {
            return Err(ReadError::Overwritten { start, oldest });
        }
        Ok(())
    }

    /// Metadata of sample `index`.
    pub fn meta(&self, index: u64) -> Result<SampleMeta, ReadError> {
        self.check(index, index + 1)?;
        let slot = (index % self.capacity as u64) as usize;
        let m = SampleMeta {
            timestamp: f64::from_bits(self.times[slot].load(Ordering::Relaxed)),
            segment: self.segments[slot].load(Ordering::Relaxed),
            flags: self.flags[slot].load(Ordering::Relaxed),
        };
        self.validate(index)?;
        Ok(m)
    }

    /// Copies samples `start..start+timestamps.len()` into `data` (sample-major,
    /// `channels` values per sample) and `timestamps`; returns the OR of their flags.
    pub fn read<T: Sample>(&self, start: u64, data: &mut [T], timestamps: &mut [f64]) -> Result<u8, ReadError> {
        let n = timestamps.len();
        assert_eq!(data.len(), n * self.channels, "ring read: data buffer size");
        self.check(start, start + n as u64)?;
        let mut flags = 0;
        for (i, (row, ts)) in data.chunks_exact_mut(self.channels).zip(timestamps.iter_mut()).enumerate() {
            let slot = ((start + i as u64) % self.capacity as u64) as usize;
            let src = &self.data[slot * self.channels..(slot + 1) * self.channels];
            for (d, s) in row.iter_mut().zip(src) {
                *d = T::from_f64(f64::from_bits(s.load(Ordering::Relaxed)));
            }
            *ts = f64::from_bits(self.times[slot].load(Ordering::Relaxed));
            flags |= self.flags[slot].load(Ordering::Relaxed);
        }
        self.validate(start)?;
        Ok(flags)
    }

    /// Like [`read`](Self::read), also copying each sample's segment and flags.
    pub fn read_with_meta<T: Sample>(
        &self,
        start: u64,
        data: &mut [T],
        timestamps: &mut [f64],
        segments: &mut [u32],
        flags: &mut [u8],
    ) -> Result<(), ReadError> {
        let n = timestamps.len();
        assert!(segments.len() == n && flags.len() == n, "ring read: meta buffer sizes");
        self.read(start, data, timestamps)?;
        for i in 0..n {
            let slot = ((start + i as u64) % self.capacity as u64) as usize;
            segments[i] = self.segments[slot].load(Ordering::Relaxed);
            flags[i] = self.flags[slot].load(Ordering::Relaxed);
        }
        self.validate(start)
    }

    /// The first sample index in `[from, head)` whose timestamp is >= `t` (binary search;
    /// timestamps within a segment increase). `None` if every readable sample is older.
    pub fn index_at_or_after(&self, t: f64, from: u64) -> Option<u64> {
        let (mut lo, mut hi) = (from.max(self.oldest()), self.head());
        if lo >= hi {
            return None;
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.meta(mid) {
                Ok(m) if m.timestamp < t => lo = mid + 1,
                Ok(_) => hi = mid,
                Err(_) => lo = mid + 1,
            }
        }
        (lo < self.head()).then_some(lo)
    }
}

impl RingWriter {
    pub fn ring(&self) -> &Arc<RingBuffer> {
        &self.ring
    }

    /// Appends samples (sample-major `data`, one timestamp each), all in `segment`.
    /// Returns how many samples had a non-finite value. Allocates nothing.
    pub fn push<V: Sample>(&mut self, data: &[V], timestamps: &[f64], segment: u32) -> usize {
        let r = &*self.ring;
        let n = timestamps.len();
        debug_assert_eq!(data.len(), n * r.channels);
        // A chunk larger than the ring keeps only its newest `capacity` samples.
        let skip = n.saturating_sub(r.capacity);
        let head = r.head.load(Ordering::Relaxed);
        r.reserved.store(head + n as u64, Ordering::Relaxed);
        fence(Ordering::Release);
        let mut non_finite = 0;
        for i in skip..n {
            let slot = ((head + i as u64) % r.capacity as u64) as usize;
            let row = &data[i * r.channels..(i + 1) * r.channels];
            let mut finite = true;
            for (d, &v) in r.data[slot * r.channels..(slot + 1) * r.channels].iter().zip(row) {
                let v = v.to_f64();
                // Finite as the decoder reads it (f32): a double beyond 3.4e38 is flagged.
                finite &= (v as f32).is_finite();
                d.store(v.to_bits(), Ordering::Relaxed);
            }
            r.times[slot].store(timestamps[i].to_bits(), Ordering::Relaxed);
            r.segments[slot].store(segment, Ordering::Relaxed);
            r.flags[slot].store(if finite { 0 } else { FLAG_NON_FINITE }, Ordering::Relaxed);
            non_finite += usize::from(!finite);
        }
        r.head.store(head + n as u64, Ordering::Release);
        non_finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written_across_wraparound() {
        let (mut w, ring) = RingBuffer::new(3, 10);
        for k in 0..7u64 {
            let data: Vec<f32> = (0..9).map(|i| (k * 9 + i) as f32).collect();
            let ts: Vec<f64> = (0..3).map(|i| (k * 3 + i) as f64).collect();
            w.push(&data, &ts, k as u32 / 3);
        }
        assert_eq!(ring.head(), 21);
        let mut d = vec![0.0f32; 3 * 5];
        let mut t = vec![0.0; 5];
        ring.read(15, &mut d, &mut t).unwrap();
        assert_eq!(t, vec![15.0, 16.0, 17.0, 18.0, 19.0]);
        assert_eq!(d[0], 45.0);
        assert_eq!(d[14], 59.0);
        assert_eq!(ring.meta(20).unwrap().segment, 2);
        assert!(matches!(ring.read(5, &mut d, &mut t), Err(ReadError::Overwritten { .. })));
        assert!(matches!(ring.read(18, &mut d, &mut t), Err(ReadError::NotYet { .. })));
        assert_eq!(ring.index_at_or_after(16.5, 0), Some(17));
        assert_eq!(ring.index_at_or_after(99.0, 0), None);
    }

    #[test]
    fn flags_non_finite_samples() {
        let (mut w, ring) = RingBuffer::new(2, 8);
        let bad = w.push(&[1.0f32, f32::NAN, 2.0, 3.0, f32::INFINITY, 0.0], &[0.0, 1.0, 2.0], 0);
        assert_eq!(bad, 2);
        assert_eq!(ring.meta(0).unwrap().flags, FLAG_NON_FINITE);
        assert_eq!(ring.meta(1).unwrap().flags, 0);
    }

    #[test]
    fn double64_and_int32_values_come_back_exactly() {
        let (mut w, ring) = RingBuffer::new(2, 4);
        let v = [0.1f64 + 1e-12, -2_147_483_647.0, 1e-300, 16_777_217.0];
        w.push(&v, &[0.0, 1.0], 0);
        let (mut d, mut t) = ([0.0f64; 4], [0.0; 2]);
        ring.read(0, &mut d, &mut t).unwrap();
        assert_eq!(d, v);
        let mut f = [0.0f32; 4];
        ring.read(0, &mut f, &mut t).unwrap();
        assert_eq!(f[0], 0.1f32);
    }
}
