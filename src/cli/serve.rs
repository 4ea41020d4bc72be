//! `meg-decoder serve` and `meg-decoder check-config`: the service, configured from a
//! TOML file (`--config`) with every setting also a flag or environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use meg_decoder::config::Config;
use meg_decoder::model::ExecutionProvider;
use meg_decoder::pipeline::NonFinitePolicy;

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML configuration file (see deploy/meg-decoder.example.toml).
    #[arg(long, env = "MEG_DECODER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Model directory (encoder.onnx, gallery/, generator.onnx). Default: the bundled models/demo-brain.
    #[arg(long, env = "MEG_DECODER_MODEL")]
    pub model: Option<PathBuf>,
    /// MEG stream name.
    #[arg(long, env = "MEG_DECODER_STREAM_NAME")]
    pub stream_name: Option<String>,
    /// MEG stream type (default: any when a name or source_id is given, else MEG).
    #[arg(long, env = "MEG_DECODER_STREAM_TYPE")]
    pub stream_type: Option<String>,
    /// MEG stream source_id.
    #[arg(long, env = "MEG_DECODER_SOURCE_ID")]
    pub source_id: Option<String>,
    /// Seconds to wait for the MEG stream at start-up.
    #[arg(long)]
    pub resolve_timeout: Option<f64>,
    /// How model channel names find the stream's labels (normalized: `MLC11-2908` = `MLC11`).
    #[arg(long, value_enum)]
    pub channel_matching: Option<meg_decoder::pipeline::ChannelMatching>,
    /// Where event-locked onsets come from: auto (trigger channel when configured and
    /// present), markers, trigger, photodiode.
    #[arg(long, value_enum)]
    pub onsets: Option<meg_decoder::pipeline::OnsetSource>,
    /// Trigger channel label in the MEG stream (e.g. 'STI 014', UPPT001).
    #[arg(long)]
    pub trigger_channel: Option<String>,
    /// Bits of the trigger code to keep.
    #[arg(long)]
    pub trigger_mask: Option<u32>,
    /// Photodiode channel label in the MEG stream.
    #[arg(long)]
    pub photodiode_channel: Option<String>,
    /// Photodiode level (channel units) whose rising crossing is an onset.
    #[arg(long)]
    pub photodiode_threshold: Option<f64>,
    /// Marker stream name (default: any stream of type Markers).
    #[arg(long, env = "MEG_DECODER_MARKERS_NAME")]
    pub markers_name: Option<String>,
    /// Do not look for a marker stream.
    #[arg(long)]
    pub no_markers: bool,
    /// gRPC listen address.
    #[arg(long, env = "MEG_DECODER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// File with the bearer token subscribers must send (MEG_DECODER_TOKEN also works).
    #[arg(long, env = "MEG_DECODER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// TLS certificate (PEM); needs --tls-key.
    #[arg(long, env = "MEG_DECODER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "MEG_DECODER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Directory for XDF recordings (BIDS layout below it).
    #[arg(long, env = "MEG_DECODER_RECORD_DIR")]
    pub record_dir: Option<PathBuf>,
    /// Start recording at once (needs --record-dir).
    #[arg(long)]
    pub record: bool,
    /// BIDS subject label for recordings.
    #[arg(long)]
    pub subject: Option<String>,
    /// BIDS session label.
    #[arg(long)]
    pub session: Option<String>,
    /// BIDS task label.
    #[arg(long)]
    pub task: Option<String>,
    /// Continuous decoding hop (seconds).
    #[arg(long)]
    pub hop: Option<f64>,
    /// No continuous decoding (event-locked only).
    #[arg(long)]
    pub no_continuous: bool,
    /// No event-locked decoding.
    #[arg(long)]
    pub no_event_locked: bool,
    /// Decode continuous windows with the model's onset-locked encoder even when the model
    /// directory has an encoder for continuous use (continuous/encoder.onnx).
    #[arg(long)]
    pub no_continuous_encoder: bool,
    /// Gallery hits per decoding.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// ONNX Runtime intra-op threads.
    #[arg(long, env = "MEG_DECODER_THREADS")]
    pub threads: Option<usize>,
    /// Execution provider.
    #[arg(long, value_enum)]
    pub execution_provider: Option<ExecutionProvider>,
    /// Windows with NaN/Inf samples: skip or repair.
    #[arg(long, value_enum)]
    pub non_finite: Option<NonFinitePolicy>,
    /// Replace the model's notch filters, e.g. --notch 60 --notch 120.
    #[arg(long)]
    pub notch: Vec<f64>,
    /// HTTP address for the browser viewer, gRPC-Web, /metrics and /healthz, e.g.
    /// 127.0.0.1:8080 (off by default; TLS and the token apply as on --listen).
    #[arg(long, env = "MEG_DECODER_HTTP")]
    pub http_listen: Option<String>,
    /// Serve only /metrics and /healthz on --http-listen (no viewer, no gRPC-Web).
    #[arg(long)]
    pub no_viewer: bool,
    /// Older flag: an HTTP address serving only /metrics and /healthz, e.g. 127.0.0.1:9464.
    #[arg(long, env = "MEG_DECODER_METRICS")]
    pub metrics_listen: Option<String>,
    /// Any configuration key, e.g. --set server.hub_capacity=256 --set stream.ring_seconds=60
    /// (MEG_DECODER_SET takes several, separated by ';'). Applied after the other flags.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE", env = "MEG_DECODER_SET", value_delimiter = ';')]
    pub set: Vec<String>,
}

impl ServeArgs {
    /// The configuration file (or defaults) with every given flag applied.
    pub fn effective(&self) -> anyhow::Result<(Config, String)> {
        let (mut c, origin) = match &self.config {
            Some(p) => (Config::from_file(p)?, p.display().to_string()),
            None => (
                Config {
                    model: meg_decoder::config::ModelSection {
                        dir: meg_decoder::app::bundled_model().to_path_buf(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "built-in defaults".into(),
            ),
        };
        macro_rules! set {
            ($field:expr, $v:expr) => {
                if let Some(v) = $v.clone() {
                    $field = v;
                }
            };
        }
        set!(c.model.dir, self.model);
        set!(c.stream.name, self.stream_name);
        set!(c.stream.kind, self.stream_type);
        set!(c.stream.source_id, self.source_id);
        set!(c.stream.resolve_timeout_s, self.resolve_timeout);
        set!(c.markers.name, self.markers_name);
        set!(c.stream.channel_matching, self.channel_matching);
        set!(c.events.source, self.onsets);
        set!(c.events.trigger_channel, self.trigger_channel);
        set!(c.events.trigger_mask, self.trigger_mask);
        set!(c.events.photodiode_channel, self.photodiode_channel);
        if self.photodiode_threshold.is_some() {
            c.events.photodiode_threshold = self.photodiode_threshold;
        }
        set!(c.server.listen, self.listen);
        set!(c.server.token_file, self.token_file);
        set!(c.server.tls_cert, self.tls_cert);
        set!(c.server.tls_key, self.tls_key);
        set!(c.recording.dir, self.record_dir);
        set!(c.recording.subject, self.subject);
        set!(c.recording.session, self.session);
        set!(c.recording.task, self.task);
        set!(c.pipeline.hop_s, self.hop);
        set!(c.pipeline.top_k, self.top_k);
        set!(c.model.intra_threads, self.threads);
        set!(c.model.execution_provider, self.execution_provider);
        set!(c.pipeline.non_finite, self.non_finite);
        set!(c.metrics.listen, self.metrics_listen);
        set!(c.http.listen, self.http_listen);
        if self.no_viewer {
            c.http.viewer = false;
        }
        if self.no_markers {
            c.markers.enabled = false;
        }
        if self.record {
            c.recording.on_start = true;
        }
        if self.no_continuous {
            c.pipeline.continuous = false;
        }
        if self.no_event_locked {
            c.pipeline.event_locked = false;
        }
        if self.no_continuous_encoder {
            c.pipeline.continuous_encoder = false;
        }
        if !self.notch.is_empty() {
            c.preprocessing.notch_hz = Some(self.notch.clone());
        }
        Ok((c.with_overrides(&self.set)?, origin))
    }
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let (cfg, origin) = a.effective()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // SIGHUP re-reads the configuration file and flags as at start (a new model.dir is
    // switched in live).
    let reload: meg_decoder::app::Reload = std::sync::Arc::new(move || a.effective().map(|(c, _)| c));
    rt.block_on(meg_decoder::app::run_with_reload(cfg, &origin, shutdown_signal(), Some(reload)))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `check-config`: validates and prints the effective configuration.
pub fn check(a: ServeArgs) -> anyhow::Result<()> {
    let (cfg, origin) = a.effective()?;
    cfg.validate(&origin)?;
    println!("# effective configuration ({origin} + flags and environment)\n{}", cfg.to_toml());
    eprintln!("configuration OK");
    Ok(())
}
