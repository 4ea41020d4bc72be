//! `meg-decoder inspect-stream`: what is on the network. The first thing a lab runs.

use std::time::{Duration, Instant};

use clap::Args;
use meg_decoder::ingest::StreamDescription;
use meg_decoder::lsl::{self, Inlet};
use meg_decoder::pipeline::{is_brain_type, si_unit_of_type, unit_factor};

#[derive(Args, Debug)]
pub struct InspectStreamArgs {
    /// How long to look for streams (seconds).
    #[arg(long, default_value_t = 2.0)]
    pub wait: f64,
    /// Only streams whose name, type or source_id equals this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Also print every channel (label, type, unit).
    #[arg(long)]
    pub channels: bool,
    /// Receive numeric streams for this many seconds to measure rate and lag (0 = skip).
    #[arg(long, default_value_t = 2.0)]
    pub measure: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Measured {
    samples: u64,
    rate_hz: f64,
    lag_ms: f64,
    clock_offset_ms: f64,
}

pub fn run(a: InspectStreamArgs) -> anyhow::Result<()> {
    eprintln!("liblsl {} from {}", lsl::library_version()?, lsl::library_path()?.display());
    let streams = lsl::resolve_all(a.wait)?;
    let streams: Vec<_> = streams
        .into_iter()
        .filter(|s| a.filter.as_ref().is_none_or(|f| [s.name(), s.kind(), s.source_id()].contains(f)))
        .collect();
    if streams.is_empty() {
        anyhow::bail!(
            "no LSL streams found within {:.1} s{}. Is the acquisition (or `meg-decoder simulate`) running, and do both sides use the same LSL config (LSLAPICFG, SessionID)?",
            a.wait,
            a.filter.as_ref().map(|f| format!(" matching '{f}'")).unwrap_or_default()
        );
    }
    for info in &streams {
        let mut inlet = Inlet::open(info, 10, false).ok();
        let full = inlet.as_mut().and_then(|i| i.info(2.0).ok());
        let desc = StreamDescription::from_info(full.as_ref().unwrap_or(info));
        let measured = match inlet.as_mut() {
            Some(i) if a.measure > 0.0 => measure(i, &desc, a.measure),
            _ => None,
        };
        // What the service will make of each channel: its SI unit and the factor to it.
        let units: Vec<serde_json::Value> = desc
            .channels
            .iter()
            .map(|c| {
                serde_json::json!({
                    "label": c.label,
                    "type": c.kind,
                    "unit": c.unit,
                    "si_unit": si_unit_of_type(&c.kind),
                    "to_si": unit_factor(&c.unit),
                    "brain_sensor": is_brain_type(&c.kind),
                })
            })
            .collect();
        if a.json {
            println!("{}", serde_json::json!({"stream": desc, "measured": measured, "channel_units": units}));
            continue;
        }
        println!("{}", full.as_ref().unwrap_or(info).summary());
        if let Some(m) = &measured {
            println!(
                "  measured: {:.2} Hz over {} samples, lag {:.1} ms, clock offset {:.3} ms",
                m.rate_hz, m.samples, m.lag_ms, m.clock_offset_ms
            );
        }
        let kinds: std::collections::BTreeMap<&str, usize> =
            desc.channels.iter().fold(Default::default(), |mut m, c| {
                *m.entry(c.kind.as_str()).or_default() += 1;
                m
            });
        if kinds.keys().any(|k| !k.is_empty()) {
            println!("  channel types: {kinds:?}");
        }
        if a.channels {
            for (i, c) in desc.channels.iter().enumerate() {
                let si = match (unit_factor(&c.unit), si_unit_of_type(&c.kind)) {
                    (None, _) => "unknown unit: taken as SI".to_string(),
                    (Some(f), Some(base)) => format!("= {f} {base}"),
                    (Some(_), None) => String::new(),
                };
                println!("  {i:4} {:<14} {:<8} {:<6} {si}", c.label, c.kind, c.unit);
            }
        }
    }
    Ok(())
}

fn measure(inlet: &mut Inlet, d: &StreamDescription, seconds: f64) -> Option<Measured> {
    let c = d.channel_count.max(1);
    let mut data = vec![0f32; 4096 * c];
    let mut ts = vec![0f64; 4096];
    let offset = inlet.time_correction(2.0).ok()?;
    // The rate from the stream's own timestamps (samples per second of stamped time, after
    // the first chunk, which holds whatever liblsl had buffered), not from arrival times.
    let (mut n, mut first, mut last) = (0u64, None::<f64>, 0.0);
    let start = Instant::now();
    let mut chunks = 0;
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        let got = inlet.pull_chunk(&mut data, &mut ts, 0.1).ok()?;
        if got > 0 {
            chunks += 1;
            if chunks > 1 {
                if first.is_none() {
                    first = Some(last);
                }
                n += got as u64;
            }
            last = ts[got - 1];
        }
    }
    let span = last - first?;
    Some(Measured {
        samples: n,
        rate_hz: n as f64 / span.max(1e-6),
        lag_ms: (lsl::local_clock().ok()? - (last + offset)) * 1e3,
        clock_offset_ms: offset * 1e3,
    })
}
