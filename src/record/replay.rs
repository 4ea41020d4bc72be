//! Replaying recordings: as live LSL streams again ([`play`]), or decoded offline as fast
//! as the CPU allows ([`decode_offline`]) through the same [`DecoderCore`] the live
//! service runs, so the decodings match what the live service emitted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::reader::{xml_field, XdfFile, XdfStream};
use crate::ingest::{ChannelInfoData, GapDetector, Marker, StreamDescription};
use crate::lsl::{self, ChannelFormat, ChannelInfo, Outlet, StreamInfo};
use crate::model::{CompanionEncoders, Encoder, Gallery};
use crate::pipeline::{DecoderCore, Decoding, PipelineConfig, PipelineError};

/// The recorded MEG stream (the first numeric stream with a nominal rate).
pub fn meg_stream(f: &XdfFile) -> Option<&XdfStream> {
    f.streams.iter().find(|s| s.format != "string" && s.nominal_srate > 0.0)
}

/// The recorded marker stream, if any.
pub fn marker_stream(f: &XdfFile) -> Option<&XdfStream> {
    f.streams.iter().find(|s| s.format == "string" && s.kind == "Markers")
}

/// The stream description as the live service saw it.
pub fn description(s: &XdfStream) -> StreamDescription {
    let n = s.channel_count;
    StreamDescription {
        name: s.name.clone(),
        kind: s.kind.clone(),
        source_id: s.source_id.clone(),
        hostname: String::new(),
        channel_count: n,
        nominal_srate: s.nominal_srate,
        format: s.format.parse().unwrap_or(ChannelFormat::Float32),
        channels: (0..n)
            .map(|i| ChannelInfoData {
                label: s.labels.get(i).cloned().unwrap_or_else(|| format!("ch{i:03}")),
                kind: String::new(),
                unit: s.units.get(i).cloned().unwrap_or_default(),
            })
            .collect(),
        xml: s.header_xml.clone(),
    }
}

/// The pipeline configuration the recording was made with (from the file header).
pub fn recorded_pipeline_config(f: &XdfFile) -> Option<PipelineConfig> {
    let json = xml_field(&f.header_xml, "meg_decoder")?;
    let v: serde_json::Value = serde_json::from_str(&json).ok()?;
    serde_json::from_value(v.get("pipeline")?.clone()).ok()
}

/// Timestamps on the local clock (source timestamps plus the recorded clock offsets).
pub fn corrected_timestamps(s: &XdfStream) -> Vec<f64> {
    s.timestamps.iter().map(|&t| t + s.offset_at(t)).collect()
}

/// Decodes a recording offline. Decodings are stamped `decoded_at = window_end`.
pub fn decode_offline(
    f: &XdfFile,
    encoder: Encoder,
    gallery: Option<Arc<Gallery>>,
    companions: CompanionEncoders,
    config: PipelineConfig,
) -> Result<Vec<Decoding>, PipelineError> {
    let meg = meg_stream(f).ok_or_else(|| {
        PipelineError::Config("the recording has no MEG stream (no numeric stream with a rate)".into())
    })?;
    let desc = description(meg);
    // Offline there is no stream to keep up with: every window is decoded.
    let config = PipelineConfig { keep_up: false, ..config };
    let mut core = DecoderCore::new(encoder, gallery, &desc, config)?.with_companions(companions)?;
    core.set_markers_expected(marker_stream(f).is_some());
    let ts = corrected_timestamps(meg);
    let mut markers: Vec<Marker> = match marker_stream(f) {
        Some(m) => corrected_timestamps(m)
            .into_iter()
            .zip(&m.timestamps)
            .zip(&m.strings)
            .map(|((t, &src), text)| Marker { timestamp: t, source_timestamp: src, text: text.clone() })
            .collect(),
        None => Vec::new(),
    };
    markers.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    let c = meg.channel_count;
    // The live acquisition's segmentation, from the raw timestamps.
    let segments = GapDetector::segment_all(meg.nominal_srate, &meg.timestamps);
    let mut out = Vec::new();
    let mut next_marker = 0;
    let chunk = 256;
    let mut rows: Vec<f32> = Vec::with_capacity(chunk * c);
    let mut start = 0;
    while start < ts.len() {
        let end = (start + chunk).min(ts.len());
        while next_marker < markers.len() && markers[next_marker].timestamp <= ts[end - 1] {
            core.push_marker(markers[next_marker].clone());
            next_marker += 1;
        }
        let last = ts[end - 1];
        rows.clear();
        rows.extend(meg.values[start * c..end * c].iter().map(|&v| v as f32));
        core.push_samples(&rows, &ts[start..end], &segments[start..end], &|| last, &mut |mut d| {
            d.decoded_at = d.window_end;
            d.latency_s = 0.0;
            out.push(d)
        });
        start = end;
    }
    Ok(out)
}

/// How to play a recording back.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// Prefix for the replayed streams' names and source_ids (e.g. "replay-").
    pub prefix: String,
    /// Samples per pushed chunk for numeric streams.
    pub chunk: usize,
    /// Start over at the end.
    pub looping: bool,
}

enum Out {
    Numeric(Outlet, usize),
    Strings(StringOutlet),
}

/// A string outlet with the recorded stream's name and type.
struct StringOutlet(crate::lsl::MarkerOutlet);

/// Plays the recording's MEG and marker streams back in real time (timestamps shifted to
/// now, spacing kept). Returns the number of passes played.
pub fn play(f: &XdfFile, opts: &PlayOptions, stop: &AtomicBool) -> anyhow::Result<u64> {
    let mut streams: Vec<(&XdfStream, Out, Vec<f64>)> = Vec::new();
    for s in f.streams.iter().filter(|s| s.kind != "Decodings") {
        let name = format!("{}{}", opts.prefix, s.name);
        let sid = format!("{}{}", opts.prefix, s.source_id);
        let out = if s.format == "string" {
            Out::Strings(StringOutlet(crate::lsl::MarkerOutlet::create(&name, &sid)?))
        } else {
            // The recorded format, so the values arrive exactly as the source sent them
            // (int8 as int16, int64 as double64: the outlets liblsl gives us).
            let format = match s.format.as_str() {
                "double64" | "int64" => ChannelFormat::Double64,
                "int32" => ChannelFormat::Int32,
                "int16" | "int8" => ChannelFormat::Int16,
                _ => ChannelFormat::Float32,
            };
            let mut info = StreamInfo::new(&name, &s.kind, s.channel_count, s.nominal_srate, format, &sid)?;
            let chans: Vec<ChannelInfo> = (0..s.channel_count)
                .map(|i| ChannelInfo {
                    label: s.labels.get(i).cloned().unwrap_or_default(),
                    kind: String::new(),
                    unit: s.units.get(i).cloned().unwrap_or_default(),
                })
                .collect();
            info.set_channels(&chans)?;
            Out::Numeric(Outlet::create(&info, opts.chunk.max(1))?, s.channel_count)
        };
        streams.push((s, out, corrected_timestamps(s)));
    }
    let t_first = streams.iter().filter_map(|(_, _, t)| t.first().copied()).fold(f64::INFINITY, f64::min);
    anyhow::ensure!(t_first.is_finite(), "the recording has no samples to replay");
    let mut passes = 0;
    loop {
        let t0 = lsl::local_clock()? + 0.5;
        let mut pos = vec![0usize; streams.len()];
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(passes);
            }
            // The stream whose next chunk is due first.
            let next = streams
                .iter()
                .enumerate()
                .filter(|(i, (_, _, ts))| pos[*i] < ts.len())
                .map(|(i, (_, out, ts))| {
                    let n = match out {
                        Out::Numeric(..) => opts.chunk.max(1),
                        Out::Strings(_) => 1,
                    };
                    let end = (pos[i] + n).min(ts.len());
                    (i, end, ts[end - 1])
                })
                .min_by(|a, b| a.2.total_cmp(&b.2));
            let Some((i, end, t_last)) = next else { break };
            let due = t0 + (t_last - t_first);
            let wait = due - lsl::local_clock()?;
            if wait > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(wait.min(0.5)));
                if wait > 0.5 {
                    continue;
                }
            }
            let (s, out, ts) = &mut streams[i];
            let new_ts: Vec<f64> = ts[pos[i]..end].iter().map(|t| t0 + (t - t_first)).collect();
            match out {
                Out::Numeric(o, c) => o.push_chunk(&s.values[pos[i] * *c..end * *c], &new_ts)?,
                Out::Strings(o) => {
                    for (k, t) in new_ts.iter().enumerate() {
                        o.0.push_marker(&s.strings[pos[i] + k], *t)?;
                    }
                }
            }
            pos[i] = end;
        }
        passes += 1;
        if !opts.looping {
            std::thread::sleep(Duration::from_millis(500));
            return Ok(passes);
        }
    }
}
