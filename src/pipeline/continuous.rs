//! Continuous decoding with a model trained for it: a model directory's
//! `continuous/encoder.onnx`, whose contract says `target = on_screen`. The model's own
//! encoder was trained on windows locked to an image onset, so applied every hop it can
//! only answer "had an image appeared at `onset`". This encoder was trained on every
//! position of its (shorter) window along a recording, with the image on screen as the
//! target, so its decodings answer "what is on screen at `on_screen_at`"
//! (`window_start - window_start_s`). It shares the model's preprocessing, model-rate
//! buffer and scaler; it has its own window, baseline, scheduler and assembler, and takes
//! every continuous window while the model's encoder keeps the event-locked ones.

use super::core::PipelineError;
use super::stages::check_shared_preprocessing;
use super::window::{WindowAssembler, WindowScheduler};
use crate::model::{Encoder, ModelContract, Target};

/// The encoder of continuous decodings, with its own window.
pub struct ContinuousModel {
    pub(super) encoder: Encoder,
    pub(super) contract: ModelContract,
    /// Continuous windows only (every hop).
    pub(super) scheduler: WindowScheduler,
    pub(super) assembler: WindowAssembler,
}

impl ContinuousModel {
    /// Checks that `encoder` was trained for continuous use and can share the
    /// preprocessing of the model whose contract is `model`; `hop_s` as the pipeline's.
    pub fn new(encoder: Encoder, model: &ModelContract, hop_s: Option<f64>) -> Result<Self, PipelineError> {
        let c = encoder.contract().clone();
        let what = format!("the continuous encoder ({})", c.name);
        if c.target != Target::OnScreen {
            return Err(PipelineError::Config(format!(
                "{what} has target '{}' (the contract's default when it names none): continuous/encoder.onnx is the \
                 model trained for continuous use, its contract must say target = on_screen (the image on screen at \
                 the decoded instant); a model locked to onsets belongs in encoder.onnx or stages/",
                c.target.as_str()
            )));
        }
        check_shared_preprocessing(&what, &c, model)?;
        Ok(Self {
            scheduler: WindowScheduler::new(&c, hop_s, false),
            assembler: WindowAssembler::new(&c),
            encoder,
            contract: c,
        })
    }

    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }
}
