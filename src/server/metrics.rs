//! Prometheus metrics: a `prometheus-client` [`Collector`] that reads the service's live
//! counters at each scrape (nothing is kept between scrapes), encoded in the OpenMetrics
//! text format for `GET /metrics` on the HTTP server.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::service::DecoderState;
use crate::ingest::StatsSnapshot;
use crate::pipeline::{Histogram, ENCODER_BUCKETS, LATENCY_BUCKETS, SKIP_REASONS};

/// The Content-Type of [`ServiceMetrics::render`]'s page.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The service's metrics registry.
#[derive(Clone)]
pub struct ServiceMetrics(Arc<Registry>);

impl ServiceMetrics {
    pub fn new(state: Arc<DecoderState>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Live(state)));
        Self(Arc::new(registry))
    }

    /// The metrics page (OpenMetrics text, ending in `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0);
        out
    }
}

/// Reads the counters of a running service at each scrape.
struct Live(Arc<DecoderState>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("meg-decoder live metrics")
    }
}

type Label<'a> = Option<(&'static str, &'a str)>;

/// A label value as OpenMetrics text needs it (prometheus-client writes values as given):
/// backslash, double quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One metric family: a descriptor and its samples, each with at most one label.
fn family<V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Label<'_>, V)],
    mut write: impl FnMut(&mut MetricEncoder, &V) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (label, v) in samples {
        match label {
            Some(l) => write(&mut m.encode_family(&[*l])?, v)?,
            None => write(&mut m, v)?,
        }
    }
    Ok(())
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Label<'_>, u64)]) -> std::fmt::Result {
    family(enc, name, help, MetricType::Counter, samples, |m, v| m.encode_counter::<NoLabelSet, u64, u64>(v, None))
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Label<'_>, f64)]) -> std::fmt::Result {
    family(enc, name, help, MetricType::Gauge, samples, |m, v| m.encode_gauge(v))
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &Histogram,
    bounds: &[f64; 10],
) -> std::fmt::Result {
    let mut buckets = [(0.0, 0u64); 11];
    for (i, b) in buckets.iter_mut().enumerate() {
        *b = (bounds.get(i).copied().unwrap_or(f64::MAX), h.buckets[i].load(Ordering::Relaxed));
    }
    let count = buckets.iter().map(|b| b.1).sum();
    let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    enc.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

/// A per-stream counter: name, help, and its value in a stream's snapshot.
type StreamCounter = (&'static str, &'static str, fn(&StatsSnapshot) -> u64);

/// The per-stream counters.
const STREAM_COUNTERS: [StreamCounter; 5] = [
    ("megdecoder_samples", "Samples received per stream.", |x| x.samples),
    ("megdecoder_gaps", "Gaps detected per stream.", |x| x.gaps),
    ("megdecoder_missing_samples", "Samples missing in gaps.", |x| x.missing_samples),
    ("megdecoder_reconnects", "Source reconnections.", |x| x.reconnects),
    ("megdecoder_non_finite_samples", "Samples with NaN/Inf.", |x| x.non_finite_samples),
];

/// One sample per stream, labelled with the stream's (escaped) name.
fn per_stream<T>(streams: &[(String, StatsSnapshot)], f: fn(&StatsSnapshot) -> T) -> Vec<(Label<'_>, T)> {
    streams.iter().map(|(n, x)| (Some(("stream", n.as_str())), f(x))).collect()
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let streams: Vec<(String, StatsSnapshot)> =
            s.streams.iter().map(|h| (label_value(&h.description.name), h.stats.snapshot())).collect();
        let e = &mut enc;
        for (name, help, value) in STREAM_COUNTERS {
            counter(e, name, help, &per_stream(&streams, value))?;
        }
        gauge(
            e,
            "megdecoder_stream_lag_seconds",
            "Local clock minus newest sample time.",
            &per_stream(&streams, |x| x.lag_s),
        )?;
        gauge(
            e,
            "megdecoder_stream_connected",
            "1 while the source delivers data.",
            &per_stream(&streams, |x| f64::from(u8::from(x.connected))),
        )?;
        let rings: Vec<(String, f64)> = s.rings.iter().map(|(n, r)| (label_value(n), r.fill())).collect();
        let fill: Vec<(Label<'_>, f64)> = rings.iter().map(|(n, f)| (Some(("stream", n.as_str())), *f)).collect();
        gauge(e, "megdecoder_ring_buffer_fill_ratio", "Ring buffer fill (0..1).", &fill)?;
        let p = &s.pipeline;
        counter(e, "megdecoder_windows_decoded", "Windows decoded.", &[(None, p.decoded.load(Ordering::Relaxed))])?;
        let reasons: Vec<(String, u64)> = SKIP_REASONS
            .iter()
            .map(|r| {
                let name = serde_json::to_value(r).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
                (name, p.skipped(*r))
            })
            .collect();
        let skipped: Vec<(Label<'_>, u64)> = reasons.iter().map(|(n, v)| (Some(("reason", n.as_str())), *v)).collect();
        counter(e, "megdecoder_windows_skipped", "Windows not decoded, by reason.", &skipped)?;
        let one = |v: &std::sync::atomic::AtomicU64| [(None, v.load(Ordering::Relaxed))];
        counter(
            e,
            "megdecoder_onsets_detected",
            "Stimulus onsets found on the trigger or photodiode channel.",
            &one(&p.onsets_detected),
        )?;
        counter(
            e,
            "megdecoder_onsets_paired",
            "Trigger/photodiode onsets labelled by a marker.",
            &one(&p.onsets_paired),
        )?;
        counter(
            e,
            "megdecoder_markers_unpaired",
            "Markers no trigger/photodiode onset claimed (not decoded).",
            &one(&p.markers_unpaired),
        )?;
        counter(
            e,
            "megdecoder_pipeline_overruns",
            "Times the pipeline fell behind the ring buffer and skipped ahead.",
            &one(&p.overruns),
        )?;
        histogram(e, "megdecoder_encoder_seconds", "Encoder inference time.", &p.encoder_hist, &ENCODER_BUCKETS)?;
        histogram(
            e,
            "megdecoder_latency_seconds",
            "Decoding time minus the window's last sample time.",
            &p.latency_hist,
            &LATENCY_BUCKETS,
        )?;
        gauge(e, "megdecoder_subscribers", "Connected gRPC subscribers.", &[(None, s.hub.subscribers().len() as f64)])?;
        counter(e, "megdecoder_missed_decodings", "Decodings slow subscribers lost.", &[(None, s.hub.missed_now())])?;
        counter(e, "megdecoder_images_generated", "Images drawn by the generator.", &one(&s.images_generated))?;
        let rec = s.recorder.as_ref().map(|r| r.state()).unwrap_or_default();
        gauge(e, "megdecoder_recording", "1 while recording.", &[(None, f64::from(u8::from(rec.recording)))])?;
        gauge(
            e,
            "megdecoder_recording_bytes",
            "Bytes written to the current (or last) recording.",
            &[(None, rec.bytes_written as f64)],
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped_for_openmetrics() {
        assert_eq!(super::label_value(r#"MEG "lab" \ 2"#), r#"MEG \"lab\" \\ 2"#);
        assert_eq!(super::label_value("a\nb"), "a\\nb");
        assert_eq!(super::label_value("plain-name_1"), "plain-name_1");
    }
}
