//! Prometheus metrics over HTTP (`GET /metrics`): a minimal HTTP/1.1 responder on the
//! tokio runtime, rendering the live counters in the text exposition format.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::service::DecoderState;
use crate::pipeline::{Histogram, ENCODER_BUCKETS, LATENCY_BUCKETS, SKIP_REASONS};

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram, bounds: &[f64; 10]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cum = 0;
    for (i, b) in bounds.iter().enumerate() {
        cum += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
    }
    cum += h.buckets[10].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(out, "{name}_sum {}", h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {cum}");
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// The metrics page.
pub fn render(s: &DecoderState) -> String {
    let mut o = String::new();
    let per_stream = |f: &dyn Fn(&crate::ingest::StatsSnapshot) -> f64| -> Vec<(String, f64)> {
        s.streams.iter().map(|h| (format!("{{stream=\"{}\"}}", h.description.name), f(&h.stats.snapshot()))).collect()
    };
    metric(
        &mut o,
        "megdecoder_samples_total",
        "counter",
        "Samples received per stream.",
        &per_stream(&|x| x.samples as f64),
    );
    metric(&mut o, "megdecoder_gaps_total", "counter", "Gaps detected per stream.", &per_stream(&|x| x.gaps as f64));
    metric(
        &mut o,
        "megdecoder_missing_samples_total",
        "counter",
        "Samples missing in gaps.",
        &per_stream(&|x| x.missing_samples as f64),
    );
    metric(
        &mut o,
        "megdecoder_reconnects_total",
        "counter",
        "Source reconnections.",
        &per_stream(&|x| x.reconnects as f64),
    );
    metric(
        &mut o,
        "megdecoder_non_finite_samples_total",
        "counter",
        "Samples with NaN/Inf.",
        &per_stream(&|x| x.non_finite_samples as f64),
    );
    metric(
        &mut o,
        "megdecoder_stream_lag_seconds",
        "gauge",
        "Local clock minus newest sample time.",
        &per_stream(&|x| x.lag_s),
    );
    metric(
        &mut o,
        "megdecoder_stream_connected",
        "gauge",
        "1 while the source delivers data.",
        &per_stream(&|x| f64::from(u8::from(x.connected))),
    );
    let fill: Vec<(String, f64)> = s
        .rings
        .iter()
        .map(|(n, r)| (format!("{{stream=\"{n}\"}}"), (r.head() - r.oldest()) as f64 / r.capacity() as f64))
        .collect();
    metric(&mut o, "megdecoder_ring_buffer_fill_ratio", "gauge", "Ring buffer fill (0..1).", &fill);
    metric(
        &mut o,
        "megdecoder_windows_decoded_total",
        "counter",
        "Windows decoded.",
        &[(String::new(), s.pipeline.decoded.load(Ordering::Relaxed) as f64)],
    );
    let skipped: Vec<(String, f64)> = SKIP_REASONS
        .iter()
        .map(|r| {
            (
                format!(
                    "{{reason=\"{}\"}}",
                    serde_json::to_value(r).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
                ),
                s.pipeline.skipped(*r) as f64,
            )
        })
        .collect();
    metric(&mut o, "megdecoder_windows_skipped_total", "counter", "Windows not decoded, by reason.", &skipped);
    metric(
        &mut o,
        "megdecoder_onsets_detected_total",
        "counter",
        "Stimulus onsets found on the trigger or photodiode channel.",
        &[(String::new(), s.pipeline.onsets_detected.load(Ordering::Relaxed) as f64)],
    );
    metric(
        &mut o,
        "megdecoder_onsets_paired_total",
        "counter",
        "Trigger/photodiode onsets labelled by a marker.",
        &[(String::new(), s.pipeline.onsets_paired.load(Ordering::Relaxed) as f64)],
    );
    metric(
        &mut o,
        "megdecoder_markers_unpaired_total",
        "counter",
        "Markers no trigger/photodiode onset claimed (not decoded).",
        &[(String::new(), s.pipeline.markers_unpaired.load(Ordering::Relaxed) as f64)],
    );
    metric(
        &mut o,
        "megdecoder_pipeline_overruns_total",
        "counter",
        "Times the pipeline fell behind the ring buffer and skipped ahead.",
        &[(String::new(), s.pipeline.overruns.load(Ordering::Relaxed) as f64)],
    );
    histogram(
        &mut o,
        "megdecoder_encoder_seconds",
        "Encoder inference time.",
        &s.pipeline.encoder_hist,
        &ENCODER_BUCKETS,
    );
    histogram(
        &mut o,
        "megdecoder_latency_seconds",
        "Decoding time minus the window's last sample time.",
        &s.pipeline.latency_hist,
        &LATENCY_BUCKETS,
    );
    metric(
        &mut o,
        "megdecoder_subscribers",
        "gauge",
        "Connected gRPC subscribers.",
        &[(String::new(), s.hub.subscribers().len() as f64)],
    );
    metric(
        &mut o,
        "megdecoder_missed_decodings_total",
        "counter",
        "Decodings slow subscribers lost.",
        &[(String::new(), s.hub.missed_total.load(Ordering::Relaxed) as f64)],
    );
    metric(
        &mut o,
        "megdecoder_images_generated_total",
        "counter",
        "Images drawn by the generator.",
        &[(String::new(), s.images_generated.load(Ordering::Relaxed) as f64)],
    );
    let rec = s.recorder.as_ref().map(|r| r.state()).unwrap_or_default();
    metric(
        &mut o,
        "megdecoder_recording",
        "gauge",
        "1 while recording.",
        &[(String::new(), f64::from(u8::from(rec.recording)))],
    );
    metric(
        &mut o,
        "megdecoder_recording_bytes",
        "gauge",
        "Bytes written to the current (or last) recording.",
        &[(String::new(), rec.bytes_written as f64)],
    );
    o
}

/// Most open connections the metrics endpoint serves at once (more are closed at once).
const MAX_METRICS_CONNECTIONS: usize = 64;
/// A connection gets this long to send its request and take the answer.
const METRICS_IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `/metrics` (and `/healthz`: 200 while healthy, 503 while a thread has died or the
/// MEG source is gone) on `addr` until the task is dropped. Each connection is bounded in
/// time, their number is capped, and an accept error (e.g. out of file descriptors)
/// backs off instead of spinning.
pub async fn serve_metrics(
    addr: SocketAddr,
    state: Arc<DecoderState>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let mut sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accept failed ({e}); retrying in 100 ms");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                drop(sock);
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let mut buf = [0u8; 2048];
                let n = match tokio::time::timeout(METRICS_IO_TIMEOUT, sock.read(&mut buf)).await {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let req = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if req.starts_with("GET /metrics") {
                    ("200 OK", render(&state))
                } else if req.starts_with("GET /healthz") {
                    match state.failure.get() {
                        Some(why) => ("503 Service Unavailable", format!("failing: {why}\n")),
                        None if !state.healthy() => ("503 Service Unavailable", "MEG source gone\n".to_string()),
                        None => ("200 OK", "ok\n".to_string()),
                    }
                } else {
                    ("404 Not Found", "try /metrics or /healthz\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tokio::time::timeout(METRICS_IO_TIMEOUT, sock.write_all(resp.as_bytes())).await;
            });
        }
    });
    Ok((bound, task))
}
