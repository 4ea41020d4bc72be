//! Subcommands and the options they share.

mod client;
mod inspect;
mod model;
mod replay;
mod serve;
mod simulate;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "meg-decoder",
    version,
    about = "Real-time MEG decoding: LSL in, image embeddings, retrievals and images out over gRPC"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// liblsl configuration file (lsl_api.cfg) to load before any LSL call. liblsl also
    /// honours the LSLAPICFG environment variable by itself.
    #[arg(long, global = true, env = "MEG_DECODER_LSL_CONFIG")]
    pub lsl_config: Option<PathBuf>,
    /// Log format (text or json).
    #[arg(long, global = true, env = "MEG_DECODER_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `meg_decoder=debug`.
    #[arg(long, global = true, env = "MEG_DECODER_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Publish synthetic MEG (real sensor layout, realistic noise) and stimulus markers.
    Simulate(simulate::SimulateArgs),
    /// List the LSL streams on the network: channels, measured rate, lag.
    InspectStream(inspect::InspectStreamArgs),
    /// Print a model's contract and check it with a dummy window.
    InspectModel(model::InspectModelArgs),
    /// Decode a live MEG stream and serve the decodings over gRPC.
    Serve(serve::ServeArgs),
    /// Validate a configuration file and print the effective configuration.
    CheckConfig(serve::ServeArgs),
    /// Subscribe to a running decoder and print its decodings (console subscriber).
    Client(client::ClientArgs),
    /// Play an XDF recording back as LSL streams, or decode it offline.
    Replay(replay::ReplayArgs),
}

/// `[logging]` of the configuration file applies unless a flag or variable overrode it.
pub fn logging_from_config(cli: &mut Cli) {
    let path = match &cli.command {
        Command::Serve(a) | Command::CheckConfig(a) => a.config.clone(),
        _ => None,
    };
    if let Some(cfg) = path.and_then(|p| meg_decoder::config::Config::from_file(&p).ok()) {
        if cli.global.log_format == "text" {
            cli.global.log_format = cfg.logging.format;
        }
        if cli.global.log == "info" {
            cli.global.log = cfg.logging.filter;
        }
    }
}

pub fn init_logging(g: &GlobalOpts) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&g.log).with_context(|| format!("bad --log filter '{}'", g.log))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if g.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Loads the LSL configuration, if one was named, before anything else touches liblsl.
fn configure_lsl(g: &GlobalOpts) -> anyhow::Result<()> {
    if let Some(path) = &g.lsl_config {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading LSL config {}", path.display()))?;
        meg_decoder::lsl::set_config_content(&text)?;
        tracing::info!("LSL configuration loaded from {}", path.display());
    }
    Ok(())
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    configure_lsl(&cli.global)?;
    match cli.command {
        Command::Simulate(a) => simulate::run(a),
        Command::InspectStream(a) => inspect::run(a),
        Command::InspectModel(a) => model::run(a),
        Command::Serve(a) => serve::run(a),
        Command::CheckConfig(a) => serve::check(a),
        Command::Client(a) => client::run(a),
        Command::Replay(a) => replay::run(a),
    }
}

/// Sets a flag on SIGINT/SIGTERM (Ctrl-C), for the blocking (non-async) commands.
pub fn stop_on_signal() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("signal runtime");
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        f.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    flag
}
