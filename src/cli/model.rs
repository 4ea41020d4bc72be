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
