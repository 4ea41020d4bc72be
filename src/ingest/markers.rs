//! [`MarkerAcquisition`]: the acquisition thread of a string marker stream ("image 4127
//! shown now"). Each marker is stamped on the local LSL clock and fanned out to every
//! sink (window scheduler, recorder) over crossbeam channels. A marker source that goes
//! away is found again by its query (liblsl recovers only sources with a source_id), with
//! the same connection status and counters as the MEG stream.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::{IngestError, StreamDescription, StreamQuery, StreamStats};
use crate::lsl::{self, MarkerInlet, PullError};
use crate::worker::StoppableThread;

/// One stimulus marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// When the event happened, on the local LSL clock (source time + correction).
    pub timestamp: f64,
    /// The source's own timestamp, as sent.
    pub source_timestamp: f64,
    pub text: String,
}

/// Resolves `query` and opens a marker inlet (recovering by itself when the source has a
/// source_id).
fn open(query: &StreamQuery, timeout_s: f64) -> Result<(MarkerInlet, lsl::StreamInfo), IngestError> {
    let found = lsl::resolve_bypred(&query.predicate()?, timeout_s)?;
    let info = found.into_iter().next().expect("resolve returns at least one stream");
    let mut inlet = MarkerInlet::open(&info, true)?;
    inlet.open_stream(timeout_s.max(2.0))?;
    Ok((inlet, info))
}

pub struct MarkerAcquisition {
    pub description: StreamDescription,
    /// Counters in the same shape as the MEG stream's (samples = markers received).
    pub stats: Arc<StreamStats>,
    thread: StoppableThread,
}

impl MarkerAcquisition {
    pub fn start(query: &StreamQuery, timeout_s: f64, sinks: Vec<Sender<Marker>>) -> Result<Self, IngestError> {
        let (mut inlet, info) = open(query, timeout_s)?;
        let description = StreamDescription::from_info(&info);
        let stats = Arc::new(StreamStats::default());
        stats.connected.store(true, Ordering::Relaxed);
        let stats2 = stats.clone();
        let query = query.clone();
        let thread = StoppableThread::spawn(format!("lsl-{}", description.name), move |stop| {
            // The clock offset is known before the first marker (recordings carry it).
            let mut offset = inlet.time_correction(2.0).unwrap_or(0.0);
            stats2.set_clock_offset(offset);
            let mut n = 0u64;
            while !stop.is_set() {
                match inlet.pull_marker(0.05) {
                    Ok(Some((ts, text))) => {
                        n += 1;
                        if n.is_multiple_of(50) {
                            offset = inlet.time_correction(0.2).unwrap_or(offset);
                        }
                        StreamStats::add(&stats2.samples, 1);
                        stats2.set_clock_offset(offset);
                        stats2.set_lag(lsl::local_clock().unwrap_or(ts + offset) - (ts + offset));
                        let m = Marker { timestamp: ts + offset, source_timestamp: ts, text };
                        for s in &sinks {
                            let _ = s.send(m.clone());
                        }
                    }
                    Ok(None) => {}
                    Err(PullError::Lost) => {
                        // liblsl cannot bring back a source without a source_id: find the
                        // stream again by its query, as the MEG inlet does.
                        tracing::warn!("marker stream lost; looking for it again ({query})");
                        stats2.connected.store(false, Ordering::Relaxed);
                        StreamStats::add(&stats2.source_losses, 1);
                        while !stop.is_set() {
                            if let Ok((i, _)) = open(&query, 1.0) {
                                inlet = i;
                                offset = inlet.time_correction(2.0).unwrap_or(offset);
                                stats2.set_clock_offset(offset);
                                stats2.connected.store(true, Ordering::Relaxed);
                                StreamStats::add(&stats2.reconnects, 1);
                                tracing::info!("marker stream back");
                                break;
                            }
                        }
                    }
                    Err(e) => tracing::warn!("marker pull failed: {e}"),
                }
            }
        })
        .map_err(|e| IngestError::Thread(e.to_string()))?;
        Ok(Self { description, stats, thread })
    }

    /// Why the marker thread died, if it did.
    pub fn failure(&self) -> crate::worker::Failure {
        self.thread.failure()
    }

    pub fn stop(&mut self) {
        self.thread.stop();
    }
}
