//! `meg-decoder inspect-model DIR`: prints a model's contract and checks it by running one
//! dummy window (and its progressive stages, its encoder for continuous use and its
//! generator, if any); `--bench` times the encoder at batch sizes
//! 1..8 and 1..N intra-op threads, to choose `model.intra_threads` and `pipeline.max_batch`.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use meg_decoder::model::{Encoder, EncoderOptions, Gallery, Generator, ModelDir};

#[derive(Args, Debug)]
pub struct InspectModelArgs {
    /// Model directory.
    pub dir: PathBuf,
    /// Print every channel name.
    #[arg(long)]
    pub channels: bool,
    /// Stream rate (Hz) to report the filters' delay and settling time at.
    #[arg(long, default_value_t = 1000.0)]
    pub stream_rate: f64,
    /// Time the encoder at batch sizes 1, 2, 4, 8 and 1..--max-threads threads.
    #[arg(long)]
    pub bench: bool,
    /// Most intra-op threads to time with --bench (default: the machine's cores).
    #[arg(long)]
    pub max_threads: Option<usize>,
    /// Timed runs per setting with --bench (after 3 warm-up runs).
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
}

pub fn run(a: InspectModelArgs) -> anyhow::Result<()> {
    if a.bench {
        anyhow::ensure!(a.max_threads.is_none_or(|t| (1..=256).contains(&t)), "--max-threads must be 1..256");
        anyhow::ensure!((1..=100_000).contains(&a.runs), "--runs must be 1..100000, got {}", a.runs);
    }
    let dir = ModelDir::open(&a.dir)?;
    let mut enc = Encoder::load(&dir.encoder, &EncoderOptions::default())?;
    let c = enc.contract().clone();
    println!("model      {}", c.name);
    if !c.description.is_empty() {
        println!("           {}", c.description);
    }
    println!("encoder    {} (sha256 {})", dir.encoder.display(), enc.sha256());
    println!("contract   {}", c.summary());
    println!(
        "channels   {} ({} ... {})",
        c.channel_names.len(),
        c.channel_names[0],
        c.channel_names[c.channel_names.len() - 1]
    );
    anyhow::ensure!(
        a.stream_rate.is_finite() && a.stream_rate >= c.sample_rate && a.stream_rate <= 1e6,
        "--stream-rate must be a rate the model can use (>= {} Hz, <= 1 MHz), got {}",
        c.sample_rate,
        a.stream_rate
    );
    let sos = meg_decoder::pipeline::design_filters(&c, a.stream_rate)?;
    let (lo, hi) = c.evoked_band_hz;
    let band = meg_decoder::dsp::evoked_delay_s(&sos, lo, hi.min(0.45 * a.stream_rate), a.stream_rate);
    println!(
        "filters    {} at {} Hz: group delay {:.1} ms at 1 Hz, {:.1} ms at 10 Hz; evoked response ({lo}-{hi} Hz) delayed {:.1} ms; {}",
        c.filter_phase.as_str(),
        a.stream_rate,
        meg_decoder::dsp::group_delay_s(&sos, 1.0, a.stream_rate) * 1e3,
        meg_decoder::dsp::group_delay_s(&sos, 10.0, a.stream_rate) * 1e3,
        band * 1e3,
        match c.filter_phase {
            meg_decoder::model::FilterPhase::Causal => "not compensated (the model was trained with it)".to_string(),
            meg_decoder::model::FilterPhase::ZeroPhase => format!("windows shifted back by {:.1} ms", band * 1e3),
        }
    );
    println!("resampling {}", meg_decoder::pipeline::resampling_summary(&c, a.stream_rate));
    println!(
        "settling   {:.2} s after start and after every gap before windows are decoded{}",
        c.settle_s.unwrap_or_else(|| meg_decoder::dsp::settle_time_s(&sos, a.stream_rate, 1e-3, 10.0)),
        if c.settle_s.is_some() { " (set by the model)" } else { " (the filters' own settling time)" }
    );
    if a.channels {
        for (i, n) in c.channel_names.iter().enumerate() {
            println!("  {i:4} {n}");
        }
    }
    let (emb, median_ms) = dummy_window(&mut enc)?;
    println!("check      dummy window OK: embedding dim {}, median run {median_ms:.3} ms", emb.len());
    // What the directory carries beside the encoder, checked as serve checks it.
    let companions = dir.load_companions(&EncoderOptions::default())?;
    for (name, mut e) in companions.stages {
        let (_, ms) = dummy_window(&mut e)?;
        let summary = e.contract().summary();
        meg_decoder::pipeline::Stage::new(name.clone(), e, &c, true)?;
        println!("stage      {name}: {summary}; dummy window OK ({ms:.3} ms)");
    }
    if let Some(mut e) = companions.continuous {
        let (_, ms) = dummy_window(&mut e)?;
        let summary = e.contract().summary();
        meg_decoder::pipeline::ContinuousModel::new(e, &c, Some(0.025))?;
        println!("continuous {summary}; dummy window OK ({ms:.3} ms)");
    }
    match &dir.gallery {
        Some(g) => {
            let g = Gallery::load(g)?;
            anyhow::ensure!(
                g.dim == c.embedding_dim,
                "gallery dim {} differs from the encoder's {}",
                g.dim,
                c.embedding_dim
            );
            println!(
                "gallery    {} images, dim {}{}",
                g.len(),
                g.dim,
                if g.images_dir.is_some() { ", with images" } else { "" }
            );
        }
        None => println!("gallery    none"),
    }
    match &dir.generator {
        Some(p) => {
            let mut g = Generator::load(p, c.embedding_dim, &EncoderOptions::default())?;
            let img = g.generate(&emb)?;
            println!("generator  {} -> {}x{} RGB", p.display(), img.width, img.height);
        }
        None => println!("generator  none"),
    }
    if a.bench {
        bench(&dir.encoder, enc.window_len(), c.embedding_dim, &a)?;
    }
    Ok(())
}

/// Runs `enc` 20 times on a zero window: its embedding (which must be finite) and the
/// median run time in ms.
fn dummy_window(enc: &mut Encoder) -> anyhow::Result<(Vec<f32>, f64)> {
    let window = vec![0.0f32; enc.window_len()];
    let mut emb = vec![0.0f32; enc.contract().embedding_dim];
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        enc.encode(&window, 0, &mut emb)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    anyhow::ensure!(emb.iter().all(|v| v.is_finite()), "{} returned NaN/Inf for a zero window", enc.path().display());
    Ok((emb, times[times.len() / 2]))
}

/// Median and 90th percentile of `runs` encoder runs for each thread count and batch size,
/// on windows of scaled-noise values (what a robust-scaled MEG window looks like).
fn bench(path: &std::path::Path, window_len: usize, dim: usize, a: &InspectModelArgs) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_threads = a.max_threads.unwrap_or(cores);
    anyhow::ensure!((1..=256).contains(&max_threads), "--max-threads must be 1..256, got {max_threads}");
    anyhow::ensure!((1..=100_000).contains(&a.runs), "--runs must be 1..100000, got {}", a.runs);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
    };
    let batches = [1usize, 2, 4, 8];
    let windows: Vec<f32> = (0..window_len * 8).map(|_| noise()).collect();
    let mut out = vec![0.0f32; dim * 8];
    println!("bench      {} runs each ({cores} cores here); ms per run (per window), median / p90", a.runs);
    println!("           threads{}", batches.map(|b| format!("  {:>24}", format!("batch {b}"))).join(""));
    for threads in 1..=max_threads {
        let opts = EncoderOptions { intra_threads: threads, ..Default::default() };
        let mut enc = Encoder::load(path, &opts)?;
        let mut row = format!("           {threads:>7}");
        for b in batches {
            let mut times = Vec::with_capacity(a.runs);
            for i in 0..a.runs + 3 {
                let t = Instant::now();
                enc.encode_batch(&windows[..b * window_len], b, 0, &mut out[..b * dim])?;
                if i >= 3 {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            times.sort_by(f64::total_cmp);
            let (p50, p90) = (times[times.len() / 2], times[(times.len() * 9 / 10).min(times.len() - 1)]);
            row.push_str(&format!("  {:>24}", format!("{p50:.2} ({:.2}) / {p90:.2}", p50 / b as f64)));
        }
        println!("{row}");
    }
    Ok(())
}
