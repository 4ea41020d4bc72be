//! Models: the encoder contract (ONNX metadata), the encoder session, the gallery and the
//! generator, and [`ModelDir`], which finds them in a model directory:
//!
//! ```text
//! <model>/encoder.onnx      required: meg f32[batch, channels, time] -> embedding f32[batch, dim]
//! <model>/gallery/          optional: ids.txt, embeddings.npy, images/<id>.png
//! <model>/generator.onnx    optional: embedding -> image f32[batch, 3, H, W]
//! <model>/world/            optional: what `simulate` needs to produce decodable responses
//! <model>/stages/*/encoder.onnx      optional: progressive stages (shorter windows from the onset)
//! <model>/continuous/encoder.onnx    optional: the encoder for continuous use (`target = on_screen`)
//! ```

pub mod contract;
mod encoder;
pub mod gallery;
mod generator;
pub mod npy;
mod runtime;

use std::path::{Path, PathBuf};

pub use contract::{
    ContractError, FilterPhase, ModelContract, ResamplerProfile, ScalerSpec, Target, CAUSAL_ANTIALIAS_FRACTION,
    CAUSAL_ANTIALIAS_ORDER,
};
pub use encoder::{sha256_hex, Encoder, EncoderOptions, ExecutionProvider, ModelError};
pub use gallery::{Gallery, Hit};
pub use generator::{encode_png, Generator, RgbImage};
pub use runtime::environment as onnx_runtime;

/// The files of a model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub root: PathBuf,
    pub encoder: PathBuf,
    pub gallery: Option<PathBuf>,
    pub generator: Option<PathBuf>,
    /// Progressive stages: `stages/<name>/encoder.onnx`, by name.
    pub stages: Vec<(String, PathBuf)>,
    /// The encoder trained for continuous use: `continuous/encoder.onnx`.
    pub continuous: Option<PathBuf>,
}

/// The sha256 that names a model (decodings carry its first 12 hex digits): its
/// encoder's sha256 when it has nothing else, else the sha256 of the list of its
/// encoders' (`encoder.onnx <sha256>`, then `<path> <sha256>` for each of `stages` (name,
/// sha256) and the `continuous` encoder, one a line, by path), so a change to a stage or
/// to the continuous encoder names another model.
pub fn model_digest(encoder_sha256: &str, stages: &[(&str, &str)], continuous: Option<&str>) -> String {
    let mut parts: Vec<(String, &str)> =
        stages.iter().map(|(name, sha)| (format!("stages/{name}/encoder.onnx"), *sha)).collect();
    parts.extend(continuous.map(|sha| ("continuous/encoder.onnx".to_string(), sha)));
    if parts.is_empty() {
        return encoder_sha256.to_string();
    }
    parts.sort();
    let mut list = format!("encoder.onnx {encoder_sha256}\n");
    for (path, sha) in &parts {
        list.push_str(&format!("{path} {sha}\n"));
    }
    sha256_hex(list.as_bytes())
}

/// `dir/encoder.onnx`, which the folder `dir` (`what` it is) must hold.
fn companion_encoder(dir: &Path, what: &str) -> Result<PathBuf, ModelError> {
    let p = dir.join("encoder.onnx");
    if !p.is_file() {
        return Err(ModelError::File {
            path: p.display().to_string(),
            why: format!("missing: {what} and needs its encoder.onnx; add it or remove the folder"),
        });
    }
    Ok(p)
}

/// The encoders a model directory carries beside `encoder.onnx` (for
/// `DecoderCore::with_companions`).
#[derive(Default)]
pub struct CompanionEncoders {
    /// Progressive stages, by name.
    pub stages: Vec<(String, Encoder)>,
    /// The encoder for continuous decodings.
    pub continuous: Option<Encoder>,
}

impl ModelDir {
    pub fn open(root: &Path) -> Result<Self, ModelError> {
        let encoder = root.join("encoder.onnx");
        if !encoder.is_file() {
            return Err(ModelError::File {
                path: encoder.display().to_string(),
                why: "missing: a model directory needs encoder.onnx (see models/README.md)".into(),
            });
        }
        let gallery = Some(root.join("gallery")).filter(|p| p.join("ids.txt").is_file());
        let generator = Some(root.join("generator.onnx")).filter(|p| p.is_file());
        // Progressive stages (`stages/<name>/encoder.onnx`, by name) and the encoder for
        // continuous use; a folder for one without its encoder is an error, never skipped.
        let mut stages = Vec::new();
        for e in std::fs::read_dir(root.join("stages")).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                let what = "a folder under stages/ is a progressive stage";
                stages.push((e.file_name().to_string_lossy().into_owned(), companion_encoder(&e.path(), what)?));
            }
        }
        stages.sort();
        let continuous = Some(root.join("continuous"))
            .filter(|d| d.exists())
            .map(|d| companion_encoder(&d, "continuous/ holds the encoder trained for continuous use"))
            .transpose()?;
        Ok(Self { root: root.to_path_buf(), encoder, gallery, generator, stages, continuous })
    }

    /// The sha256 that names the model as the files are now ([`model_digest`]): what
    /// SIGHUP compares with the running model's.
    pub fn digest(&self) -> Result<String, ModelError> {
        let sha = |p: &Path| {
            std::fs::read(p)
                .map(|b| sha256_hex(&b))
                .map_err(|e| ModelError::File { path: p.display().to_string(), why: e.to_string() })
        };
        let stages = self.stages.iter().map(|(name, p)| Ok((name.as_str(), sha(p)?))).collect::<Result<Vec<_>, _>>()?;
        let stages: Vec<(&str, &str)> = stages.iter().map(|(n, h)| (*n, h.as_str())).collect();
        let continuous = self.continuous.as_deref().map(sha).transpose()?;
        Ok(model_digest(&sha(&self.encoder)?, &stages, continuous.as_deref()))
    }

    /// Loads the progressive stages' and the continuous encoder (for
    /// `DecoderCore::with_companions`).
    pub fn load_companions(&self, opts: &EncoderOptions) -> Result<CompanionEncoders, ModelError> {
        Ok(CompanionEncoders {
            stages: self
                .stages
                .iter()
                .map(|(name, p)| Ok((name.clone(), Encoder::load(p, opts)?)))
                .collect::<Result<_, ModelError>>()?,
            continuous: self.continuous.as_ref().map(|p| Encoder::load(p, opts)).transpose()?,
        })
    }
}
