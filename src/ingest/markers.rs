//! [`MarkerAcquisition`]: the acquisition thread of a string marker stream ("image 4127
//! shown now"). Each marker is stamped on the local LSL clock and fanned out to every
//! sink (window scheduler, recorder) over crossbeam channels.

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

pub struct MarkerAcquisition {
    pub description: StreamDescription,
    /// Counters in the same shape as the MEG stream's (samples = markers received).
    pub stats: Arc<StreamStats>,
    thread: StoppableThread,
}

impl MarkerAcquisition {
    pub fn start(query: &StreamQuery, timeout_s: f64, sinks: Vec<Sender<Marker>>) -> Result<Self, IngestError> {
        let found = lsl::resolve_bypred(&query.predicate()?, timeout_s)?;
        let info = found.into_iter().next().expect("resolve returns at least one stream");
        let mut inlet = MarkerInlet::open(&info, true)?;
        inlet.open_stream(timeout_s.max(2.0))?;
        let description = StreamDescription::from_info(&info);
        let stats = Arc::new(StreamStats::default());
        stats.connected.store(true, Ordering::Relaxed);
        let stats2 = stats.clone();
        let thread = StoppableThread::spawn(format!("lsl-{}", description.name), move |stop| {
            let mut offset = inlet.time_correction(2.0).unwrap_or(0.0);
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
                        let m = Marker { timestamp: ts + offset, source_timestamp: ts, text };
                        for s in &sinks {
                            let _ = s.send(m.clone());
                        }
                    }
                    Ok(None) => {}
                    Err(PullError::Lost) => {
                        tracing::warn!("marker stream lost");
                        std::thread::sleep(std::time::Duration::from_millis(200));
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
