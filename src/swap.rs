//! [`ModelSwitcher`]: loads another model directory while the service runs (gRPC
//! `LoadModel`, SIGHUP) without dropping the stream.
//!
//! The new model is loaded and checked against the live stream first (channels, rate,
//! contract, gallery): on any error the running model goes on and the caller gets the
//! reason. Its core is then primed on the ring buffer's recent past (filters settled,
//! scaler fitted, model-rate buffer full), off the pipeline thread, and handed to the
//! pipeline, which switches between two chunks of samples: no window is lost, sequence
//! numbers go on, markers not yet decoded are decoded by the new model. Every decoding
//! names its model; the switch is noted in the recording and logged.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::ingest::{RingBuffer, StreamDescription};
use crate::model::{Encoder, EncoderOptions, Gallery, Generator, ModelDir, ScalerSpec};
use crate::pipeline::{DecoderCore, ModelSwitch, PipelineConfig, SwitchDone};
use crate::server::ModelInfo;

/// A model directory loaded and ready to decode.
pub struct LoadedModel {
    pub dir: PathBuf,
    pub encoder: Encoder,
    pub gallery: Option<Arc<Gallery>>,
    pub generator: Option<Generator>,
}

impl LoadedModel {
    pub fn load(dir: &Path, opts: &EncoderOptions) -> anyhow::Result<Self> {
        let model = ModelDir::open(dir)?;
        let encoder = Encoder::load(&model.encoder, opts)?;
        let gallery = match &model.gallery {
            Some(g) => Some(Arc::new(Gallery::load(g)?)),
            None => None,
        };
        let generator = match &model.generator {
            Some(p) => Some(Generator::load(p, encoder.contract().embedding_dim, opts)?),
            None => None,
        };
        Ok(Self { dir: dir.to_path_buf(), encoder, gallery, generator })
    }
}

/// What GetStatus says about a model running in `core`.
pub fn model_info(core: &DecoderCore, generator: bool) -> ModelInfo {
    let contract = core.contract();
    ModelInfo {
        name: contract.name.clone(),
        id: core.model_id().to_string(),
        contract: format!("{} | {}", contract.summary(), core.preprocessing_summary()),
        sha256: core.encoder().sha256().to_string(),
        embedding_space: contract.embedding_space.clone(),
        embedding_dim: contract.embedding_dim,
        generator,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The requested model is not one this server may load.
    #[error("{0}")]
    NotAllowed(String),
    /// No such model directory.
    #[error("{0}")]
    NotFound(String),
    /// The model cannot decode this stream (or cannot be loaded): the old one goes on.
    #[error("{0}")]
    Rejected(String),
    /// The pipeline could not take it now (stopped, or fell behind): try again.
    #[error("{0}")]
    Unavailable(String),
}

/// A switch that happened.
#[derive(Debug, Clone)]
pub struct SwitchReport {
    pub model: ModelInfo,
    pub dir: PathBuf,
    pub done: SwitchDone,
}

/// Everything a switch needs, shared by the gRPC service and the SIGHUP handler.
pub struct ModelSwitcher {
    pub stream: StreamDescription,
    pub config: PipelineConfig,
    pub opts: EncoderOptions,
    pub ring: Arc<RingBuffer>,
    pub seg_offset: Arc<AtomicU32>,
    pub to_pipeline: Sender<ModelSwitch>,
    /// Directories LoadModel may name (the running model's parent unless configured).
    pub model_root: PathBuf,
    /// The running model's directory and encoder sha256 (one switch at a time).
    pub current: Mutex<(PathBuf, String)>,
    pub model: Arc<RwLock<ModelInfo>>,
    pub gallery: Arc<RwLock<Option<Arc<Gallery>>>>,
    /// Notes for the recording's decodings stream (time, JSON).
    pub notes: Option<Sender<(f64, String)>>,
    pub switches: std::sync::atomic::AtomicU64,
    /// Whether a marker stream feeds the pipeline (as for the first core).
    pub markers_expected: bool,
}

impl ModelSwitcher {
    /// The directory a LoadModel request names: a model directory inside the model root
    /// (a name such as `demo-brain`, or a path below the root), never outside it.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf, SwitchError> {
        let shown: String = requested.chars().take(80).collect::<String>().escape_default().to_string();
        if requested.is_empty() || requested.len() > 4096 {
            return Err(SwitchError::NotAllowed(
                "model must name a model directory inside the server's model root".into(),
            ));
        }
        let root = self.model_root.canonicalize().map_err(|e| {
            SwitchError::NotAllowed(format!("the model root {} is not readable ({e})", self.model_root.display()))
        })?;
        let joined = if Path::new(requested).is_absolute() { PathBuf::from(requested) } else { root.join(requested) };
        let dir = joined
            .canonicalize()
            .map_err(|_| SwitchError::NotFound(format!("no model directory '{shown}' in {}", root.display())))?;
        if !dir.starts_with(&root) || dir == root {
            return Err(SwitchError::NotAllowed(format!(
                "'{shown}' is outside the model root {} (server.model_root)",
                root.display()
            )));
        }
        Ok(dir)
    }

    /// The running model's directory.
    pub fn current_dir(&self) -> PathBuf {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Loads `dir`, checks it against the stream, primes it and switches the pipeline to
    /// it. Blocks (seconds: model load and warm-up); run it off the async runtime.
    pub fn switch_to(&self, dir: &Path) -> Result<SwitchReport, SwitchError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let loaded = LoadedModel::load(dir, &self.opts)
            .map_err(|e| SwitchError::Rejected(format!("model {} not loaded: {e:#}", dir.display())))?;
        let sha = loaded.encoder.sha256().to_string();
        let mut core = DecoderCore::new(loaded.encoder, loaded.gallery.clone(), &self.stream, self.config.clone())
            .map_err(|e| {
                SwitchError::Rejected(format!(
                    "model {} cannot decode stream '{}': {e}",
                    dir.display(),
                    self.stream.name
                ))
            })?;
        core.set_markers_expected(self.markers_expected);
        let generator = loaded.generator;
        let info = model_info(&core, generator.is_some());

        // Prime on the recent past: the filters' settle time, the scaler's fit, a window
        // and a second of margin (as much as the ring holds).
        let contract = core.contract();
        let fit_s = match contract.scaler {
            ScalerSpec::FitSeconds(s) => s,
            _ => 0.0,
        };
        let past_s = core.preprocessor().settle_s() + fit_s + contract.window_s() + 1.0;
        let rate = self.stream.nominal_srate.max(1.0);
        let seg_offset = self.seg_offset.load(Ordering::Relaxed);
        let head = self.ring.head();
        let from = head.saturating_sub((past_s * rate).ceil() as u64).max(self.ring.oldest());
        let c = self.ring.channels();
        let chunk = 512usize;
        let (mut data, mut ts) = (vec![0.0f32; chunk * c], vec![0.0f64; chunk]);
        let (mut seg, mut flags) = (vec![0u32; chunk], vec![0u8; chunk]);
        let mut pos = from;
        while pos < head {
            let n = ((head - pos) as usize).min(chunk);
            self.ring
                .read_with_meta(pos, &mut data[..n * c], &mut ts[..n], &mut seg[..n], &mut flags[..n])
                .map_err(|e| SwitchError::Unavailable(format!("reading the stream's recent past: {e:?}; try again")))?;
            if seg_offset > 0 {
                seg[..n].iter_mut().for_each(|s| *s = s.wrapping_add(seg_offset));
            }
            core.prime(&data[..n * c], &ts[..n], &seg[..n]);
            pos += n as u64;
        }

        let (reply, answer) = crossbeam_channel::bounded(1);
        let id = core.model_id().clone();
        self.to_pipeline
            .send(ModelSwitch { core, position: head, seg_offset, generator, reply })
            .map_err(|_| SwitchError::Unavailable("the pipeline is not running".into()))?;
        let done = answer
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| SwitchError::Unavailable("the pipeline did not take the model within 30 s".into()))?
            .map_err(SwitchError::Unavailable)?;
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = info.clone();
        *self.gallery.write().unwrap_or_else(|e| e.into_inner()) = loaded.gallery;
        *current = (dir.to_path_buf(), sha);
        self.switches.fetch_add(1, Ordering::Relaxed);
        if let Some(notes) = &self.notes {
            let note = serde_json::json!({
                "event": "model_switch",
                "from": &*done.previous,
                "to": &*id,
                "dir": dir,
                "first_sequence": done.first_sequence,
                "at": done.at,
            });
            let _ = notes.try_send((done.at, note.to_string()));
        }
        Ok(SwitchReport { model: info, dir: dir.to_path_buf(), done })
    }

    /// The running model's encoder sha256.
    pub fn current_sha(&self) -> String {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }
}
