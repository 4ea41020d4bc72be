//! [`Encoder`]: the brain encoder, one ONNX Runtime session, checked against its contract
//! at load and warmed up before the first real window.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use sha2::Digest;

use super::contract::{ContractError, ModelContract};
use super::runtime;

/// Where the encoder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    /// NVIDIA GPU; needs ONNX Runtime built with CUDA (the onnxruntime-gpu wheel). Falls
    /// back to CPU with a warning when unavailable.
    Cuda,
}

#[derive(Debug, Clone)]
pub struct EncoderOptions {
    pub intra_threads: usize,
    pub execution_provider: ExecutionProvider,
    pub warmup_runs: usize,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self { intra_threads: 1, execution_provider: ExecutionProvider::Cpu, warmup_runs: 3 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Runtime(String),
    #[error("model file {path}: {why}")]
    File { path: String, why: String },
    #[error("{path} is not a usable ONNX model: {why}. Re-export it (models/README.md) or check the file is complete")]
    Corrupt { path: String, why: String },
    #[error("{path}: {source}")]
    Contract { path: String, source: ContractError },
    #[error("{path}: {why}")]
    Shape { path: String, why: String },
    #[error("inference failed: {0}")]
    Run(String),
}

pub struct Encoder {
    session: Session,
    contract: ModelContract,
    has_subject: bool,
    path: PathBuf,
    sha256: String,
    input_name: String,
}

/// The sha256 of a model file, as GetStatus and decodings report it (hex).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

/// Opens an ONNX file as a session (shared by the encoder and the generator).
pub(super) fn open_session(path: &Path, opts: &EncoderOptions) -> Result<(Session, String), ModelError> {
    let env = runtime::environment().map_err(ModelError::Runtime)?;
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ModelError::File { path: p.clone(), why: e.to_string() })?;
    let sha = sha256_hex(&bytes);
    let mut builder = Session::builder(env)
        .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3).map_err(Into::into))
        .and_then(|b| b.with_intra_threads(opts.intra_threads.max(1)).map_err(Into::into))
        .map_err(|e| ModelError::Runtime(e.to_string()))?;
    if opts.execution_provider == ExecutionProvider::Cuda {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build()])
            .map_err(|e| ModelError::Runtime(format!("CUDA execution provider: {e}")))?;
    }
    let session =
        builder.commit_from_memory(&bytes).map_err(|e| ModelError::Corrupt { path: p, why: e.to_string() })?;
    Ok((session, sha))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Static dims of a tensor input/output (`None` for symbolic dims).
fn dims(v: &ort::value::ValueType) -> Option<Vec<Option<usize>>> {
    v.tensor_shape().map(|s| s.iter().map(|&d| (d >= 0).then_some(d as usize)).collect())
}

impl Encoder {
    pub fn load(path: &Path, opts: &EncoderOptions) -> Result<Self, ModelError> {
        let (session, sha256) = open_session(path, opts)?;
        let p = path.display().to_string();
        let meta: HashMap<String, String> = {
            let md = session.metadata().map_err(|e| ModelError::Corrupt { path: p.clone(), why: e.to_string() })?;
            let keys = md.custom_keys().map_err(|e| ModelError::Corrupt { path: p.clone(), why: e.to_string() })?;
            keys.into_iter().filter_map(|k| md.custom(&k).map(|v| (k, v))).collect()
        };
        let contract =
            ModelContract::from_metadata(&meta).map_err(|source| ModelError::Contract { path: p.clone(), source })?;
        let shape_err = |why: String| ModelError::Shape { path: p.clone(), why };
        let meg = session.inputs().iter().find(|i| i.name() == "meg").ok_or_else(|| {
            shape_err(format!(
                "no input named 'meg' (inputs: {:?})",
                session.inputs().iter().map(|i| i.name()).collect::<Vec<_>>()
            ))
        })?;
        let want = [None, Some(contract.channel_names.len()), Some(contract.window_samples)];
        match dims(meg.dtype()) {
            Some(d) if d.len() == 3 && d.iter().zip(want).skip(1).all(|(a, b)| a.is_none() || *a == b) => {}
            other => {
                return Err(shape_err(format!(
                    "input 'meg' has shape {other:?}; the contract says [batch, {}, {}]",
                    want[1].unwrap(),
                    want[2].unwrap()
                )))
            }
        }
        let input_name = meg.name().to_string();
        let has_subject = session.inputs().iter().any(|i| i.name() == "subject");
        let out = session
            .outputs()
            .iter()
            .find(|o| o.name() == "embedding")
            .ok_or_else(|| shape_err("no output named 'embedding'".into()))?;
        match dims(out.dtype()) {
            Some(d) if d.len() == 2 && d[1].is_none_or(|v| v == contract.embedding_dim) => {}
            other => {
                return Err(shape_err(format!(
                    "output 'embedding' has shape {other:?}; the contract says [batch, {}]",
                    contract.embedding_dim
                )))
            }
        }
        let mut enc = Self { session, contract, has_subject, path: path.to_path_buf(), sha256, input_name };
        let zeros = vec![0.0f32; enc.window_len()];
        let mut emb = vec![0.0f32; enc.contract.embedding_dim];
        for _ in 0..opts.warmup_runs {
            enc.encode(&zeros, 0, &mut emb)?;
        }
        Ok(enc)
    }

    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Values in one window: channels x samples.
    pub fn window_len(&self) -> usize {
        self.contract.channel_names.len() * self.contract.window_samples
    }

    /// Encodes one `[channels, time]` window into `out` (len = embedding dim).
    pub fn encode(&mut self, window: &[f32], subject: i64, out: &mut [f32]) -> Result<(), ModelError> {
        self.encode_batch(window, 1, subject, out)
    }

    /// Encodes `n` windows (`[n, channels, time]`) into `out` (`[n, dim]`).
    pub fn encode_batch(&mut self, windows: &[f32], n: usize, subject: i64, out: &mut [f32]) -> Result<(), ModelError> {
        let (c, t, d) = (self.contract.channel_names.len(), self.contract.window_samples, self.contract.embedding_dim);
        assert_eq!(windows.len(), n * c * t, "encode: window buffer size");
        assert_eq!(out.len(), n * d, "encode: output buffer size");
        let run = |e: ort::Error| ModelError::Run(e.to_string());
        let meg = TensorRef::from_array_view(([n, c, t], windows)).map_err(run)?;
        let subjects = vec![subject; n];
        let outputs = if self.has_subject {
            let s = TensorRef::from_array_view(([n], subjects.as_slice())).map_err(run)?;
            self.session.run(ort::inputs![self.input_name.as_str() => meg, "subject" => s]).map_err(run)?
        } else {
            self.session.run(ort::inputs![self.input_name.as_str() => meg]).map_err(run)?
        };
        let (_, emb) = outputs["embedding"].try_extract_tensor::<f32>().map_err(run)?;
        out.copy_from_slice(&emb[..n * d]);
        Ok(())
    }
}
