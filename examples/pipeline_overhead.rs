//! Harness: the pipeline's own cost per window (everything but the encoder's `run`) next
//! to the encoder's `run`, measured in the same runs, for a 306-channel 1000 Hz stream
//! (272 CTF sensors + 34 reference channels) into the paper-size 272-ch/120 Hz/181-sample
//! model, decoding every 25 ms.
//!
//!     cargo run --release --example pipeline_overhead [-- --runs 5 --seconds 20]

use std::sync::Arc;
use std::time::Instant;

use meg_decoder::ingest::{ChannelInfoData, StreamDescription};
use meg_decoder::lsl::ChannelFormat;
use meg_decoder::model::{Encoder, EncoderOptions, Gallery};
use meg_decoder::pipeline::{DecoderCore, PipelineConfig};
use meg_decoder::simulate::{self, LayoutKind, SimulatorConfig};

fn arg(name: &str, default: f64) -> f64 {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runs = arg("--runs", 5.0) as usize;
    let seconds = arg("--seconds", 20.0);
    let warmup = 11.0; // the paper model fits its scaler on the first 10 s
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let sim = SimulatorConfig { layout: LayoutKind::Ctf272, srate: 1000.0, ..Default::default() };
    let (rows272, ts, _) = simulate::render(&sim, warmup + seconds, 100.0).unwrap();
    let c = 306;
    let n = ts.len();
    let mut rows = vec![0f32; n * c];
    for i in 0..n {
        rows[i * c..i * c + 272].copy_from_slice(&rows272[i * 272..(i + 1) * 272]);
        for r in 272..c {
            rows[i * c + r] = rows272[i * 272 + (r * 7) % 272] * 0.3;
        }
    }
    let mut desc: StreamDescription = simulate::stream_description(&sim);
    for r in 272..c {
        desc.channels.push(ChannelInfoData {
            label: format!("REF{:03}", r - 272),
            kind: "REF".into(),
            unit: "T".into(),
        });
    }
    desc.channel_count = c;
    desc.format = ChannelFormat::Float32;
    let segs = vec![0u32; n];
    let warm_n = (warmup * 1000.0) as usize;
    let gallery = Arc::new(Gallery::from_parts(
        (0..1000).map(|i| format!("img_{i}")).collect(),
        768,
        (0..1000 * 768).map(|i| ((i * 37 % 101) as f32) - 50.0).collect(),
        None,
    ));
    let (mut overhead, mut encoder, mut retrieval, mut windows) = (Vec::new(), Vec::new(), Vec::new(), 0);
    // Alternate runs without and with a gallery: the difference is the retrieval.
    for run in 0..2 * runs {
        let with_gallery = run % 2 == 1;
        let enc = Encoder::load(&root.join("models/paper/encoder.onnx"), &EncoderOptions::default()).unwrap();
        let hop = if std::env::var_os("NO_WINDOWS").is_some() { None } else { Some(0.025) };
        let pc = PipelineConfig { hop_s: hop, event_locked: false, ..Default::default() };
        let mut core = DecoderCore::new(enc, with_gallery.then(|| gallery.clone()), &desc, pc).unwrap();
        let mut sink = |_d| {};
        for s in (0..warm_n).step_by(25) {
            core.push_samples(&rows[s * c..(s + 25) * c], &ts[s..s + 25], &segs[s..s + 25], &|| 0.0, &mut sink);
        }
        let mut enc_s = 0.0;
        let mut count = 0usize;
        let t = Instant::now();
        let mut s = warm_n;
        while s + 25 <= n {
            core.push_samples(&rows[s * c..(s + 25) * c], &ts[s..s + 25], &segs[s..s + 25], &|| 0.0, &mut |d| {
                enc_s += d.encoder_s;
                count += 1;
            });
            s += 25;
        }
        let total = t.elapsed().as_secs_f64();
        let count = count.max(((n - warm_n) / 25) * usize::from(count == 0));
        let per_window = (total - enc_s) / count as f64 * 1e3;
        eprintln!(
            "run {run} ({}): {count} windows, {per_window:.3} ms/window besides the encoder, encoder {:.3} ms/window",
            if with_gallery { "gallery 1000x768" } else { "no gallery" },
            enc_s / count as f64 * 1e3
        );
        if with_gallery {
            retrieval.push(per_window - overhead.last().copied().unwrap_or(0.0));
        } else {
            overhead.push(per_window);
        }
        encoder.push(enc_s / count as f64 * 1e3);
        windows = count;
    }
    let r = median(&mut retrieval);
    let (o, e) = (median(&mut overhead), median(&mut encoder));
    println!("pipeline overhead per window, all but encoder and retrieval (median of {runs} runs, {windows} windows): {o:.3} ms");
    println!("encoder run per window (same runs, paper-size model, 1 thread):                          {e:.3} ms");
    println!("gallery retrieval per window (top-5 of 1000 x 768, same runs):                           {r:.3} ms");
    println!(
        "overhead / encoder: {:.2}%  (goal: < 5% and < 0.5 ms); with retrieval: {:.2}%",
        100.0 * o / e,
        100.0 * (o + r) / e
    );
}
