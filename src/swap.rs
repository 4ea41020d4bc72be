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
use crate::model::{CompanionEncoders, Encoder, EncoderOptions, Gallery, Generator, ModelDir, ScalerSpec};
use crate::pipeline::{DecoderCore, ModelSwitch, PipelineConfig, RingChunks, SwitchDone};
use crate::server::ModelInfo;

/// A model directory loaded and ready to decode.
pub struct LoadedModel {
    pub dir: PathBuf,
    pub encoder: Encoder,
    pub gallery: Option<Arc<Gallery>>,
    pub generator: Option<Generator>,
    /// Progressive stages (`stages/*/encoder.onnx`) and the encoder for continuous use
    /// (`continuous/encoder.onnx`), for [`DecoderCore::with_companions`].
    pub companions: CompanionEncoders,
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
        let companions = model.load_companions(opts)?;
        Ok(Self { dir: dir.to_path_buf(), encoder, gallery, generator, companions })
    }
}

/// What GetStatus says about a model running in `core`.
pub fn model_info(core: &DecoderCore, generator: bool) -> ModelInfo {
    let contract = core.contract();
    ModelInfo {
        name: contract.name.clone(),
        id: core.model_id().to_string(),
        contract: match core.continuous_contract() {
            Some(c) => format!(
                "{} | {} | continuous decodings by {}",
                contract.summary(),
                core.preprocessing_summary(),
                c.summary()
            ),
            None => format!("{} | {}", contract.summary(), core.preprocessing_summary()),
        },
        sha256: core.encoder().sha256().to_string(),
        embedding_space: contract.embedding_space.clone(),
        embedding_dim: contract.embedding_dim,
        generator,
        sample_rate: contract.sample_rate,
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
    /// One switch at a time (held for the whole load; status never waits on it).
    pub busy: Mutex<()>,
    /// The running model's directory and digest (`DecoderCore::model_digest`; updated as the
    /// pipeline switches).
    pub current: Arc<RwLock<(PathBuf, String)>>,
    pub model: Arc<RwLock<ModelInfo>>,
    pub gallery: Arc<RwLock<Option<Arc<Gallery>>>>,
    /// The recording header's metadata (its "model" entry follows the running model).
    pub metadata: Option<Arc<RwLock<serde_json::Value>>>,
    /// Notes for the recording's decodings stream (time, JSON).
    pub notes: Option<Sender<(f64, String)>>,
    pub switches: Arc<std::sync::atomic::AtomicU64>,
    /// Whether a marker stream feeds the pipeline (as for the first core).
    pub markers_expected: bool,
}

/// How long the caller waits for the pipeline to take a primed model.
const TAKE_TIMEOUT: Duration = Duration::from_secs(30);

impl ModelSwitcher {
    /// The directory a LoadModel request names: a model directory inside the model root,
    /// by name or relative path (no absolute paths, no `..`), never outside it. Errors
    /// name what was asked, never a server path.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf, SwitchError> {
        let shown: String = requested.chars().take(80).collect::<String>().escape_default().to_string();
        let rel = Path::new(requested);
        let plain =
            rel.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
        if requested.is_empty() || requested.len() > 1024 || !plain {
            return Err(SwitchError::NotAllowed(format!(
                "'{shown}': name a model directory inside the server's model root (server.model_root), by name or relative path without '..'"
            )));
        }
        let root = self.model_root.canonicalize().map_err(|e| {
            tracing::error!("model root {}: {e}", self.model_root.display());
            SwitchError::NotAllowed("the server's model root is not readable; the server log says why".into())
        })?;
        let dir = root
            .join(rel)
            .canonicalize()
            .map_err(|_| SwitchError::NotFound(format!("no model directory '{shown}' in the model root")))?;
        if !dir.starts_with(&root) || dir == root {
            return Err(SwitchError::NotAllowed(format!("'{shown}' leads outside the model root")));
        }
        Ok(dir)
    }

    /// The running model's directory.
    pub fn current_dir(&self) -> PathBuf {
        self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// The running model's digest (its encoders' sha256, `DecoderCore::model_digest`).
    pub fn current_digest(&self) -> String {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// A load error as the caller sees it: server paths replaced by the model root's name.
    fn hide_paths(&self, msg: String) -> String {
        match self.model_root.canonicalize() {
            Ok(root) => msg.replace(&root.display().to_string(), "<model root>"),
            Err(_) => msg,
        }
    }

    /// Loads `dir`, checks it against the stream, primes it and switches the pipeline to
    /// it. Blocks (seconds: model load and warm-up); run it off the async runtime.
    pub fn switch_to(&self, dir: &Path) -> Result<SwitchReport, SwitchError> {
        let _one_at_a_time = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let loaded = LoadedModel::load(dir, &self.opts).map_err(|e| {
            tracing::warn!("model {} not loaded: {e:#}", dir.display());
            SwitchError::Rejected(self.hide_paths(format!("model {} not loaded: {e:#}", dir.display())))
        })?;
        let mut core = DecoderCore::new(loaded.encoder, loaded.gallery.clone(), &self.stream, self.config.clone())
            .and_then(|c| c.with_companions(loaded.companions))
            .map_err(|e| {
                SwitchError::Rejected(self.hide_paths(format!(
                    "model {} cannot decode stream '{}': {e}",
                    dir.display(),
                    self.stream.name
                )))
            })?;
        core.set_markers_expected(self.markers_expected);
        let sha = core.model_digest().to_string();
        let generator = loaded.generator;
        let info = model_info(&core, generator.is_some());

        // Prime on the recent past: the filters' settle time, the scaler's fit, and the
        // model-rate buffer the old core keeps for late markers (at least a window and a
        // second), as much as the ring holds.
        let contract = core.contract();
        let fit_s = match contract.scaler {
            ScalerSpec::FitSeconds(s) => s,
            _ => 0.0,
        };
        let kept_s = self.config.buffer_s.max(contract.window_s() + 1.0);
        let past_s = core.preprocessor().settle_s() + fit_s + kept_s;
        let rate = self.stream.nominal_srate.max(1.0);
        let seg_offset = self.seg_offset.load(Ordering::Relaxed);
        let head = self.ring.head();
        let from = head.saturating_sub((past_s * rate).ceil() as u64).max(self.ring.oldest());
        crate::pipeline::prime_from_ring(
            &mut core,
            &self.ring,
            from,
            head,
            seg_offset,
            &mut RingChunks::new(self.ring.channels(), 512),
        )
        .map_err(|e| SwitchError::Unavailable(format!("reading the stream's recent past: {e}; try again")))?;

        // What the pipeline does at the moment it swaps cores, before the new model's
        // first decoding: status, gallery and the recording's header follow.
        let id = core.model_id().clone();
        let on_switch = {
            let (model, gallery, current) = (self.model.clone(), self.gallery.clone(), self.current.clone());
            let (metadata, switches) = (self.metadata.clone(), self.switches.clone());
            let (info, gallery_new, dir, sha) = (info.clone(), loaded.gallery, dir.to_path_buf(), sha);
            Box::new(move || {
                if let Some(m) = &metadata {
                    m.write().unwrap_or_else(|e| e.into_inner())["model"] =
                        serde_json::json!({"name": info.name, "sha256": info.sha256, "id": info.id, "dir": dir});
                }
                *model.write().unwrap_or_else(|e| e.into_inner()) = info;
                *gallery.write().unwrap_or_else(|e| e.into_inner()) = gallery_new;
                *current.write().unwrap_or_else(|e| e.into_inner()) = (dir, sha);
                switches.fetch_add(1, Ordering::Relaxed);
            }) as Box<dyn FnOnce() + Send>
        };
        let state = Arc::new(std::sync::atomic::AtomicU8::new(SWITCH_PENDING));
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.to_pipeline
            .send(ModelSwitch { core, position: head, seg_offset, generator, reply, state: state.clone(), on_switch })
            .map_err(|_| SwitchError::Unavailable("the pipeline has stopped".into()))?;
        let done = match answer.recv_timeout(TAKE_TIMEOUT) {
            Ok(r) => r.map_err(SwitchError::Unavailable)?,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(SwitchError::Unavailable("the pipeline has stopped".into()))
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // Withdraw it, unless the pipeline is taking it right now.
                if state.compare_exchange(SWITCH_PENDING, SWITCH_CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok()
                {
                    return Err(SwitchError::Unavailable(format!(
                        "the pipeline is more than {} s behind the stream and did not take the model; the running model goes on",
                        TAKE_TIMEOUT.as_secs()
                    )));
                }
                answer
                    .recv()
                    .map_err(|_| SwitchError::Unavailable("the pipeline has stopped".into()))?
                    .map_err(SwitchError::Unavailable)?
            }
        };
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
}

/// A [`ModelSwitch`]'s state: sent, taken by the pipeline, or withdrawn by its caller.
pub const SWITCH_PENDING: u8 = 0;
pub const SWITCH_TAKEN: u8 = 1;
pub const SWITCH_CANCELLED: u8 = 2;
