//! [`StreamStats`]: live counters of one acquisition thread, shared lock-free with status,
//! metrics and the gRPC `GetStatus` call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters updated once per chunk by the acquisition thread (relaxed atomics).
#[derive(Debug, Default)]
pub struct StreamStats {
    pub samples: AtomicU64,
    pub chunks: AtomicU64,
    pub gaps: AtomicU64,
    pub missing_samples: AtomicU64,
    pub clock_resets: AtomicU64,
    pub reconnects: AtomicU64,
    pub source_losses: AtomicU64,
    pub non_finite_samples: AtomicU64,
    pub connected: AtomicBool,
    /// f64 bits: the latest LSL time-correction offset (seconds).
    clock_offset: AtomicU64,
    /// f64 bits: local clock minus the newest sample's local timestamp (seconds).
    lag: AtomicU64,
    /// f64 bits: rate measured over the last few seconds of arrival (Hz).
    measured_rate: AtomicU64,
}

/// A plain copy of [`StreamStats`] at one instant.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StatsSnapshot {
    pub samples: u64,
    pub chunks: u64,
    pub gaps: u64,
    pub missing_samples: u64,
    pub clock_resets: u64,
    pub reconnects: u64,
    pub source_losses: u64,
    pub non_finite_samples: u64,
    pub connected: bool,
    pub clock_offset_s: f64,
    pub lag_s: f64,
    pub measured_rate_hz: f64,
}

fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

impl StreamStats {
    pub fn set_clock_offset(&self, v: f64) {
        self.clock_offset.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn clock_offset(&self) -> f64 {
        load_f64(&self.clock_offset)
    }
    pub fn set_lag(&self, v: f64) {
        self.lag.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn set_measured_rate(&self, v: f64) {
        self.measured_rate.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            samples: g(&self.samples),
            chunks: g(&self.chunks),
            gaps: g(&self.gaps),
            missing_samples: g(&self.missing_samples),
            clock_resets: g(&self.clock_resets),
            reconnects: g(&self.reconnects),
            source_losses: g(&self.source_losses),
            non_finite_samples: g(&self.non_finite_samples),
            connected: self.connected.load(Ordering::Relaxed),
            clock_offset_s: self.clock_offset(),
            lag_s: load_f64(&self.lag),
            measured_rate_hz: load_f64(&self.measured_rate),
        }
    }
}
