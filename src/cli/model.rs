//! `meg-decoder inspect-model DIR`: prints a model's contract and checks it by running one
//! dummy window (and the generator, if any).

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
}

pub fn run(a: InspectModelArgs) -> anyhow::Result<()> {
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
    let window = vec![0.0f32; enc.window_len()];
    let mut emb = vec![0.0f32; c.embedding_dim];
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        enc.encode(&window, 0, &mut emb)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    anyhow::ensure!(emb.iter().all(|v| v.is_finite()), "the encoder returned NaN/Inf for a zero window");
    println!("check      dummy window OK: embedding dim {}, median run {:.3} ms", emb.len(), times[times.len() / 2]);
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
    Ok(())
}
