//! Ingest: LSL streams in, [`RingBuffer`] and marker queue out.
//!
//! ```text
//! MEG outlet ──LSL──▶ MegAcquisition thread ──▶ RingBuffer (samples, local timestamps, segments)
//! marker outlet ─LSL─▶ MarkerAcquisition thread ──▶ crossbeam channel(s) of Marker
//! ```
//!
//! Each inlet has its own OS thread (liblsl calls block). Timestamps are mapped onto this
//! machine's LSL clock with time correction; gaps, clock resets and source loss are
//! counted in [`StreamStats`] and reported as [`IngestEvent`]s.

mod acquisition;
mod gaps;
mod markers;
mod ring;
mod stats;

pub use acquisition::{AcquisitionConfig, MegAcquisition};
pub use gaps::{Discontinuity, GapDetector, Step};
pub use markers::{Marker, MarkerAcquisition};
pub use ring::{ReadError, RingBuffer, RingWriter, Sample, SampleMeta, FLAG_NON_FINITE};
pub use stats::{StatsSnapshot, StreamStats};

use crate::lsl::{ChannelFormat, ChannelInfo, LslError, StreamInfo};

/// Which stream to take, by any of its properties (all given ones must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub source_id: Option<String>,
}

impl StreamQuery {
    pub fn by_name(name: &str) -> Self {
        Self { name: Some(name.into()), ..Default::default() }
    }
    pub fn by_type(kind: &str) -> Self {
        Self { kind: Some(kind.into()), ..Default::default() }
    }
    /// From configuration strings, where an empty string means "any". With nothing given
    /// at all: any stream of type `MEG`. A name or source_id alone does not require a type
    /// (MNE-LSL's player and many amplifier apps publish an empty one).
    pub fn from_config(name: &str, kind: &str, source_id: &str) -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let mut q = Self { name: opt(name), kind: opt(kind), source_id: opt(source_id) };
        if q == Self::default() {
            q.kind = Some("MEG".into());
        }
        q
    }

    /// The XPath predicate liblsl resolves with, e.g. `name='MEG' and type='MEG'`.
    pub fn predicate(&self) -> Result<String, IngestError> {
        let mut parts = Vec::new();
        for (key, value) in [("name", &self.name), ("type", &self.kind), ("source_id", &self.source_id)] {
            if let Some(v) = value {
                if v.contains('\'') {
                    return Err(IngestError::BadQuery(format!("{key} '{v}' contains a quote")));
                }
                parts.push(format!("{key}='{v}'"));
            }
        }
        if parts.is_empty() {
            return Err(IngestError::BadQuery("give at least one of stream name, type or source_id".into()));
        }
        Ok(parts.join(" and "))
    }
}

impl std::fmt::Display for StreamQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.predicate().unwrap_or_else(|e| e.to_string()))
    }
}

/// A plain-data copy of a stream's description, shareable across threads.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StreamDescription {
    pub name: String,
    pub kind: String,
    pub source_id: String,
    pub hostname: String,
    pub channel_count: usize,
    pub nominal_srate: f64,
    #[serde(skip)]
    pub format: ChannelFormat,
    pub channels: Vec<ChannelInfoData>,
    #[serde(skip)]
    pub xml: String,
}

/// Serializable channel metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelInfoData {
    pub label: String,
    pub kind: String,
    pub unit: String,
}

impl From<ChannelInfo> for ChannelInfoData {
    fn from(c: ChannelInfo) -> Self {
        Self { label: c.label, kind: c.kind, unit: c.unit }
    }
}

impl StreamDescription {
    pub fn from_info(info: &StreamInfo) -> Self {
        let parsed = info.channels();
        let channels: Vec<ChannelInfoData> = if parsed.len() == info.channel_count() {
            parsed.into_iter().map(Into::into).collect()
        } else {
            info.channel_labels()
                .into_iter()
                .map(|label| ChannelInfoData { label, kind: String::new(), unit: String::new() })
                .collect()
        };
        Self {
            name: info.name(),
            kind: info.kind(),
            source_id: info.source_id(),
            hostname: info.hostname(),
            channel_count: info.channel_count(),
            nominal_srate: info.nominal_srate(),
            format: info.format(),
            channels,
            xml: info.as_xml(),
        }
    }

    pub fn labels(&self) -> Vec<String> {
        self.channels.iter().map(|c| c.label.clone()).collect()
    }
}

/// Something the acquisition thread noticed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IngestEvent {
    #[error("gap of {missing_samples} samples ({seconds:.3} s) before sample {at_sample}")]
    Gap { at_sample: u64, missing_samples: u64, seconds: f64 },
    #[error("source clock reset (timestamps stepped {step_s:.3} s)")]
    ClockReset { step_s: f64 },
    #[error("source lost (last timestamp {last_timestamp:?}); waiting for it to come back")]
    SourceLost { last_timestamp: Option<f64> },
    #[error("source reconnected")]
    Reconnected,
    #[error("{samples} samples with NaN/Inf values (passed on, flagged)")]
    NonFinite { samples: usize },
    #[error("measured rate {measured:.2} Hz differs from nominal {nominal} Hz by more than 10%")]
    RateMismatch { nominal: f64, measured: f64 },
    #[error("{0}")]
    Error(String),
}

/// Why ingest could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Lsl(#[from] LslError),
    #[error("bad stream query: {0}")]
    BadQuery(String),
    #[error("stream '{name}' has {found} channels but {expected} were configured; pick the right stream or fix the configured channel count")]
    ChannelCount { name: String, found: usize, expected: usize },
    #[error("stream '{name}' channel names differ from the configured ones ({found} found, {expected} expected); missing: {missing:?}")]
    ChannelNames { name: String, missing: Vec<String>, found: usize, expected: usize },
    #[error("stream '{name}' has an irregular rate (0 Hz); a MEG stream needs a nominal rate")]
    IrregularRate { name: String },
    #[error("a {seconds} s ring buffer of stream '{name}' ({channels} channels at {rate} Hz) would exceed 8 GiB; lower stream.ring_seconds or check the stream's announced rate and channel count")]
    RingTooLarge { name: String, seconds: f64, rate: f64, channels: usize },
    #[error("could not start the acquisition thread: {0}")]
    Thread(String),
}
