//! [`Config`]: everything `serve` can be told, from one TOML file (see
//! deploy/meg-decoder.example.toml), overridden by CLI flags and environment variables.
//! Unknown keys are errors; errors name the file, line and key; paths are checked at
//! start-up, not an hour into the session.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::ExecutionProvider;
use crate::pipeline::{ChannelMatching, EventConfig, NonFinitePolicy};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub stream: StreamSection,
    pub markers: MarkersSection,
    pub model: ModelSection,
    pub preprocessing: PreprocessingSection,
    pub events: EventConfig,
    pub pipeline: PipelineSection,
    pub server: ServerSection,
    pub recording: RecordingSection,
    pub http: HttpSection,
    pub metrics: MetricsSection,
    pub logging: LoggingSection,
}

/// Which MEG stream to decode (all given properties must match; with none given, any
/// stream of type `MEG`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSection {
    pub name: String,
    /// Stream type; empty = any (MNE-LSL's player and many apps publish an empty type).
    #[serde(rename = "type")]
    pub kind: String,
    pub source_id: String,
    /// Seconds to wait for the stream at start-up.
    pub resolve_timeout_s: f64,
    /// Seconds of raw data the ring buffer keeps.
    pub ring_seconds: f64,
    /// Channel count to insist on (0 = whatever the stream has).
    pub channels: usize,
    /// How the model's channel names find the stream's labels: `normalized` (exact, else
    /// spaces/case/CTF serial ignored: `MLC11-2908` = `MLC11`) or `exact`.
    pub channel_matching: ChannelMatching,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarkersSection {
    pub enabled: bool,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds to wait for the marker stream (it is optional: decoding starts without it).
    pub resolve_timeout_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    pub dir: PathBuf,
    pub intra_threads: usize,
    pub execution_provider: ExecutionProvider,
    /// Subject index for models with a subject layer.
    pub subject: i64,
}

/// Overrides of the model's own preprocessing (e.g. 60 Hz mains in the Americas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessingSection {
    pub notch_hz: Option<Vec<f64>>,
    /// Seconds after a filter start (start-up, gap, reset) before windows are decoded;
    /// replaces the model's `settle_s` (default: the model's, else the filters' own).
    pub settle_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    pub continuous: bool,
    /// Continuous windows go to the model's `continuous/encoder.onnx` when it has one
    /// (false: to its onset-locked encoder).
    pub continuous_encoder: bool,
    pub hop_s: f64,
    pub event_locked: bool,
    pub top_k: usize,
    pub non_finite: NonFinitePolicy,
    pub buffer_s: f64,
    /// Windows ready at the same time are encoded as one batch of at most this many.
    pub max_batch: usize,
    /// Never decode the stream's past: when continuous windows wait for the encoder,
    /// decode the newest (the others count as skipped `behind`) if the encoder is slower
    /// than the hop or they are older than `max_lag_s`. Event-locked windows are always
    /// decoded.
    pub keep_up: bool,
    /// How old (seconds from window end) a waiting continuous window may be.
    pub max_lag_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: SocketAddr,
    /// File holding the bearer token (first line); empty = no auth.
    pub token_file: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// How many decodings a subscriber may fall behind before it misses some.
    pub hub_capacity: usize,
    /// Seconds after SIGTERM/SIGINT before open gRPC connections are cut (streams are
    /// ended at once; this bounds clients that do not hang up).
    pub shutdown_timeout_s: f64,
    /// When a thread of the service dies: `exit` (non-zero, so systemd/Kubernetes restart
    /// it) or `degraded` (keep serving, health NOT_SERVING, the error in GetStatus).
    pub on_thread_failure: OnThreadFailure,
    /// Model directories LoadModel may load (empty: the running model's parent directory).
    pub model_root: PathBuf,
    /// Let LoadModel run without a bearer token (only on a trusted network).
    pub allow_load_model: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnThreadFailure {
    #[default]
    Exit,
    Degraded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingSection {
    /// Where recordings go (BIDS layout below it); empty = recording disabled.
    pub dir: PathBuf,
    /// Start recording as soon as the service starts.
    pub on_start: bool,
    pub subject: String,
    pub session: String,
    pub task: String,
}

/// The HTTP server: the browser viewer, gRPC-Web for it, `/metrics`, `/healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address to serve HTTP on, e.g. 127.0.0.1:8080; empty = off. TLS and the bearer
    /// token of `[server]` apply here too.
    pub listen: String,
    /// Serve the viewer page and gRPC-Web (off: only `/metrics` and `/healthz`).
    pub viewer: bool,
    /// Most connections served at once (more are closed at once).
    pub max_connections: usize,
    /// A client gets this long to send a request's headers (and a TLS handshake).
    pub header_timeout_s: f64,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self { listen: String::new(), viewer: true, max_connections: 64, header_timeout_s: 10.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Older name of an HTTP address serving only `/metrics` and `/healthz` (the HTTP
    /// server with the viewer off); empty = off. Use `http.listen` for new set-ups.
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    pub format: String,
    pub filter: String,
}

impl Default for StreamSection {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: String::new(),
            source_id: String::new(),
            resolve_timeout_s: 10.0,
            ring_seconds: 30.0,
            channels: 0,
            channel_matching: ChannelMatching::Normalized,
        }
    }
}
impl Default for MarkersSection {
    fn default() -> Self {
        Self { enabled: true, name: String::new(), kind: "Markers".into(), resolve_timeout_s: 2.0 }
    }
}
impl Default for ModelSection {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("models/demo"),
            intra_threads: 1,
            execution_provider: ExecutionProvider::Cpu,
            subject: 0,
        }
    }
}
impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            continuous: true,
            continuous_encoder: true,
            hop_s: 0.025,
            event_locked: true,
            top_k: 5,
            non_finite: NonFinitePolicy::Skip,
            buffer_s: 10.0,
            max_batch: 8,
            keep_up: true,
            max_lag_s: 0.25,
        }
    }
}
impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".parse().expect("valid default address"),
            token_file: PathBuf::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            hub_capacity: 1024,
            shutdown_timeout_s: 3.0,
            on_thread_failure: OnThreadFailure::Exit,
            model_root: PathBuf::new(),
            allow_load_model: false,
        }
    }
}
impl Default for RecordingSection {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            on_start: false,
            subject: "01".into(),
            session: "01".into(),
            task: "decoding".into(),
        }
    }
}
impl Default for LoggingSection {
    fn default() -> Self {
        Self { format: "text".into(), filter: "info".into() }
    }
}
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {why}")]
    Read { path: String, why: String },
    /// toml's message names the line, column and key.
    #[error("{path}: {why}")]
    Parse { path: String, why: String },
    #[error("{path}: {key}: {why}")]
    Invalid { path: String, key: &'static str, why: String },
}

/// A number as an error message shows it: short even when it is huge (1e300, not 301
/// digits).
pub fn shown(v: f64) -> String {
    if v.is_finite() && v != 0.0 && !(1e-3..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

impl Config {
    /// The HTTP server to run, if any: `http.listen` (viewer as configured), else the
    /// older `metrics.listen` (metrics and health only).
    pub fn http_server(&self) -> Option<(String, bool)> {
        if !self.http.listen.is_empty() {
            Some((self.http.listen.clone(), self.http.viewer))
        } else if !self.metrics.listen.is_empty() {
            Some((self.metrics.listen.clone(), false))
        } else {
            None
        }
    }

    /// Parses a TOML file (no path checks: see [`validate`](Self::validate)).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: p.clone(), why: e.to_string() })?;
        Self::from_toml(&text, &p)
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: origin.into(), why: e.to_string().trim_end().to_string() })
    }

    /// Applies `section.key=value` overrides (values in TOML syntax; bare words are taken
    /// as strings), checked by the same rules as the file.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<Self, ConfigError> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        let bad = |o: &str, why: String| ConfigError::Parse { path: format!("--set {o}"), why };
        let mut doc: toml::Table = toml::from_str(&self.to_toml()).map_err(|e| bad("", e.to_string()))?;
        for o in overrides {
            let (key, raw) = o.split_once('=').ok_or_else(|| bad(o, "expected section.key=value".into()))?;
            let (section, field) =
                key.trim().split_once('.').ok_or_else(|| bad(o, "expected section.key=value".into()))?;
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {}", raw.trim()))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
            let table = doc.entry(section.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
            match table.as_table_mut() {
                Some(t) => {
                    t.insert(field.to_string(), value);
                }
                None => return Err(bad(o, format!("'{section}' is not a section"))),
            }
        }
        let text = toml::to_string(&doc).map_err(|e| bad("", e.to_string()))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: format!("--set {}", overrides.join(" --set ")),
            why: e.to_string().trim_end().to_string(),
        })
    }

    /// The configuration as TOML (what `check-config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks values and paths now, so a bad setting fails at start-up.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &'static str, why: String| Err(ConfigError::Invalid { path: origin.into(), key, why });
        if let Some(s) = self.preprocessing.settle_s {
            if !s.is_finite() || !(0.0..=600.0).contains(&s) {
                return bad("preprocessing.settle_s", format!("must be 0..600 seconds, got {}", shown(s)));
            }
        }
        let ev = &self.events;
        for (key, v) in [("events.min_interval_s", ev.min_interval_s), ("events.pair_window_s", ev.pair_window_s)] {
            if !v.is_finite() || !(0.0..=10.0).contains(&v) {
                return bad(key, format!("must be 0..10 seconds, got {}", shown(v)));
            }
        }
        if ev.trigger_mask == 0 {
            return bad("events.trigger_mask", "0 hides every trigger code; use e.g. 255 for the low byte".into());
        }
        if ev.photodiode_threshold.is_some_and(|t| !t.is_finite() || t.abs() > 1e30) {
            return bad("events.photodiode_threshold", "must be a finite level in the channel's units".into());
        }
        if ev.source == crate::pipeline::OnsetSource::Trigger && ev.trigger_channel.is_empty() {
            return bad("events.trigger_channel", "events.source = trigger needs the trigger channel's label".into());
        }
        if ev.source == crate::pipeline::OnsetSource::Photodiode
            && (ev.photodiode_channel.is_empty() || !ev.photodiode_threshold.is_some_and(f64::is_finite))
        {
            return bad(
                "events.photodiode_channel",
                "events.source = photodiode needs photodiode_channel and a finite photodiode_threshold".into(),
            );
        }
        if !self.model.dir.join("encoder.onnx").is_file() {
            return bad(
                "model.dir",
                format!("{} has no encoder.onnx (does the directory exist?)", self.model.dir.display()),
            );
        }
        let range = |key: &'static str, v: f64, lo: f64, hi: f64, unit: &str| -> Result<(), ConfigError> {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    path: origin.into(),
                    key,
                    why: format!("must be {lo}..{hi} {unit}, got {}", shown(v)),
                })
            }
        };
        let count = |key: &'static str, v: usize, lo: usize, hi: usize| -> Result<(), ConfigError> {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::Invalid { path: origin.into(), key, why: format!("must be {lo}..{hi}, got {v}") })
            }
        };
        range("stream.resolve_timeout_s", self.stream.resolve_timeout_s, 0.0, 3600.0, "seconds")?;
        range("stream.ring_seconds", self.stream.ring_seconds, 1.0, 600.0, "seconds")?;
        count("stream.channels", self.stream.channels, 0, 100_000)?;
        range("markers.resolve_timeout_s", self.markers.resolve_timeout_s, 0.0, 3600.0, "seconds")?;
        count("model.intra_threads", self.model.intra_threads, 1, 256)?;
        if !(0..=100_000).contains(&self.model.subject) {
            return bad("model.subject", format!("must be 0..100000, got {}", self.model.subject));
        }
        if self.pipeline.continuous {
            range("pipeline.hop_s", self.pipeline.hop_s, 0.001, 60.0, "seconds")?;
        }
        range("pipeline.buffer_s", self.pipeline.buffer_s, 1.0, 600.0, "seconds")?;
        count("pipeline.max_batch", self.pipeline.max_batch, 1, 256)?;
        range("pipeline.max_lag_s", self.pipeline.max_lag_s, 0.001, 60.0, "seconds")?;
        count("pipeline.top_k", self.pipeline.top_k, 0, 1000)?;
        count("server.hub_capacity", self.server.hub_capacity, 1, 1_000_000)?;
        range("server.shutdown_timeout_s", self.server.shutdown_timeout_s, 0.0, 60.0, "seconds")?;
        if let Some(n) = &self.preprocessing.notch_hz {
            if n.len() > 16 {
                return bad("preprocessing.notch_hz", format!("at most 16 frequencies, got {}", n.len()));
            }
            for &f in n {
                range("preprocessing.notch_hz", f, 1e-3, 1e5, "Hz")?;
            }
        }
        if !self.pipeline.continuous && !self.pipeline.event_locked {
            return bad("pipeline", "both continuous and event_locked are off: nothing would be decoded".into());
        }
        if self.stream.ring_seconds < self.pipeline.buffer_s {
            return bad(
                "stream.ring_seconds",
                format!("must be at least pipeline.buffer_s ({})", self.pipeline.buffer_s),
            );
        }
        if self.server.tls_cert.as_os_str().is_empty() != self.server.tls_key.as_os_str().is_empty() {
            return bad("server.tls_cert", "TLS needs both tls_cert and tls_key".into());
        }
        for (key, p) in [
            ("server.tls_cert", &self.server.tls_cert),
            ("server.tls_key", &self.server.tls_key),
            ("server.token_file", &self.server.token_file),
        ] {
            if !p.as_os_str().is_empty() && !p.is_file() {
                return bad(key, format!("{} does not exist", p.display()));
            }
        }
        if !self.server.model_root.as_os_str().is_empty() && !self.server.model_root.is_dir() {
            return bad("server.model_root", format!("{} is not a directory", self.server.model_root.display()));
        }
        if !self.recording.dir.as_os_str().is_empty() {
            crate::record::check_dir(&self.recording.dir).map_err(|e| ConfigError::Invalid {
                path: origin.into(),
                key: "recording.dir",
                why: e.to_string(),
            })?;
        } else if self.recording.on_start {
            return bad("recording.on_start", "needs recording.dir".into());
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return bad("metrics.listen", format!("'{}' is not an address like 127.0.0.1:9464", self.metrics.listen));
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<SocketAddr>().is_err() {
            return bad("http.listen", format!("'{}' is not an address like 127.0.0.1:8080", self.http.listen));
        }
        if !self.http.listen.is_empty() && !self.metrics.listen.is_empty() && self.http.listen != self.metrics.listen {
            return bad(
                "metrics.listen",
                format!(
                    "the HTTP server at http.listen ({}) serves /metrics; leave metrics.listen empty",
                    self.http.listen
                ),
            );
        }
        count("http.max_connections", self.http.max_connections, 1, 100_000)?;
        range("http.header_timeout_s", self.http.header_timeout_s, 0.1, 600.0, "seconds")?;
        if !["text", "json"].contains(&self.logging.format.as_str()) {
            return bad("logging.format", format!("'{}': use text or json", self.logging.format));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let c = Config::default();
        assert_eq!(Config::from_toml(&c.to_toml(), "x").unwrap(), c);
    }

    #[test]
    fn unknown_keys_name_line_and_key() {
        let err = Config::from_toml("[stream]\nname = \"MEG\"\n\n[pipeline]\nhop = 0.1\n", "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lab.toml") && err.contains("line 5") && err.contains("hop"), "{err}");
        let err = Config::from_toml("[server]\nlisten = \"not an address\"\n", "lab.toml").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("listen"), "{err}");
    }

    #[test]
    fn set_overrides_any_key_with_type_checks() {
        let c = Config::default()
            .with_overrides(&[
                "server.hub_capacity=64".into(),
                "stream.name=Neuromag".into(),
                "preprocessing.notch_hz=[60.0]".into(),
            ])
            .unwrap();
        assert_eq!((c.server.hub_capacity, c.stream.name.as_str()), (64, "Neuromag"));
        assert_eq!(c.preprocessing.notch_hz, Some(vec![60.0]));
        let err = Config::default().with_overrides(&["pipeline.hop=1".into()]).unwrap_err().to_string();
        assert!(err.contains("hop"), "{err}");
        assert!(Config::default().with_overrides(&["server.hub_capacity=many".into()]).is_err());
    }

    #[test]
    fn missing_paths_fail_validation() {
        let mut c = Config::default();
        c.model.dir = PathBuf::from("/nonexistent");
        assert!(c.validate("x").unwrap_err().to_string().contains("model.dir"));
        let mut c = Config {
            model: ModelSection {
                dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/demo"),
                ..Default::default()
            },
            ..Default::default()
        };
        c.validate("x").unwrap();
        c.recording.dir = PathBuf::from("/nonexistent/recordings");
        assert!(c.validate("x").unwrap_err().to_string().contains("recording.dir"));
        c.recording.dir = PathBuf::new();
        c.pipeline.continuous = false;
        c.pipeline.event_locked = false;
        assert!(c.validate("x").unwrap_err().to_string().contains("nothing would be decoded"));
    }
}
