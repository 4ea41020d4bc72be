//! `meg-decoder replay FILE.xdf`: plays a recording back as live LSL streams, or with
//! `--offline --model DIR` decodes it as fast as the CPU allows into a JSON-lines file.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use meg_decoder::model::{Encoder, EncoderOptions, Gallery, ModelDir};
use meg_decoder::pipeline::PipelineConfig;
use meg_decoder::record::{decoding_json, read_xdf, replay};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The XDF recording.
    pub file: PathBuf,
    /// Decode offline instead of playing back live.
    #[arg(long)]
    pub offline: bool,
    /// Model directory for --offline (default: the bundled models/demo-brain).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where --offline writes decodings (JSON lines; default: stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Prefix for the replayed streams' names and source_ids.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Samples per pushed chunk when playing back.
    #[arg(long, default_value_t = 10)]
    pub chunk: usize,
    /// Play in a loop until Ctrl-C.
    #[arg(long = "loop")]
    pub looping: bool,
}

pub fn run(a: ReplayArgs) -> anyhow::Result<()> {
    let file = read_xdf(&a.file)?;
    for (offset, why) in &file.damage {
        eprintln!("warning: {} is damaged at byte {offset}: {why}; reading resumed at the next boundary chunk where there was one", a.file.display());
    }
    for s in &file.streams {
        eprintln!(
            "stream {}: '{}' type={} {} ch @ {} Hz, {} samples",
            s.id,
            s.name,
            s.kind,
            s.channel_count,
            s.nominal_srate,
            s.timestamps.len()
        );
    }
    if !a.offline {
        let stop = super::stop_on_signal();
        let opts = replay::PlayOptions { prefix: a.prefix, chunk: a.chunk, looping: a.looping };
        let passes = replay::play(&file, &opts, &stop)?;
        eprintln!("replayed {passes} time(s)");
        return Ok(());
    }
    let dir = ModelDir::open(a.model.as_deref().unwrap_or(meg_decoder::app::bundled_model()))?;
    let encoder = Encoder::load(&dir.encoder, &EncoderOptions::default())?;
    let gallery = dir.gallery.as_ref().map(|g| Gallery::load(g)).transpose()?.map(Arc::new);
    let companions = dir.load_companions(&EncoderOptions::default())?;
    let config = replay::recorded_pipeline_config(&file).unwrap_or_else(|| {
        eprintln!("note: the file does not say how it was decoded live; using the default pipeline settings");
        PipelineConfig::default()
    });
    let started = std::time::Instant::now();
    let decodings = replay::decode_offline(&file, encoder, gallery, companions, config)?;
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    for d in &decodings {
        writeln!(out, "{}", decoding_json(d))?;
    }
    out.flush()?;
    let span = replay::meg_stream(&file)
        .map_or(0.0, |m| m.timestamps.last().unwrap_or(&0.0) - m.timestamps.first().unwrap_or(&0.0));
    eprintln!("{} decodings from {span:.1} s of MEG in {:.2} s", decodings.len(), started.elapsed().as_secs_f64());
    Ok(())
}
