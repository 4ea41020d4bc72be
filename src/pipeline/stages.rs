//! Progressive decoding: [`Stage`]s are extra encoders of the same model on shorter
//! windows from the onset (a model directory's `stages/*/encoder.onnx`), so an
//! event-locked decoding comes soon after an image appears (250 ms of response for the
//! demo's first stage) and is refined as longer windows complete, the model's own window
//! last. Every stage shares the model's preprocessing, model-rate buffer and scaler; each
//! has its own window, scheduler and assembler. A stage's decoding carries its stage
//! number and the number of stages, so a client can replace the earlier guess.

use super::core::PipelineError;
use super::window::{WindowAssembler, WindowScheduler};
use crate::model::{Encoder, ModelContract};

/// One progressive stage: an encoder whose window ends before the model's.
pub struct Stage {
    pub name: String,
    pub(super) encoder: Encoder,
    pub(super) contract: ModelContract,
    pub(super) scheduler: WindowScheduler,
    pub(super) assembler: WindowAssembler,
}

impl Stage {
    /// Checks that `encoder` can share the preprocessing of the model whose contract is
    /// `model` (same rate, channels, filters, resampler, scaler, clamp, baseline and
    /// embedding space) and that its window ends earlier.
    pub fn new(
        name: String,
        encoder: Encoder,
        model: &ModelContract,
        event_locked: bool,
    ) -> Result<Self, PipelineError> {
        let c = encoder.contract().clone();
        let what = format!("progressive stage '{name}' ({})", c.name);
        check_shared_preprocessing(&what, &c, model)?;
        if c.baseline_s != model.baseline_s || c.window_start_s != model.window_start_s || c.target != model.target {
            return Err(PipelineError::Config(format!(
                "{what} has another baseline, window start or target than the model ({}): a stage is the model's \
                 window cut short, so it starts where the model's does",
                model.name
            )));
        }
        let end = |k: &ModelContract| k.window_start_s + (k.window_samples as f64 - 1.0) / k.sample_rate;
        if end(&c) >= end(model) {
            return Err(PipelineError::Config(format!(
                "progressive stage '{name}' ends {:.3} s after the onset, not before the model's window ({:.3} s): a stage \
                 is a shorter window that completes first",
                end(&c),
                end(model)
            )));
        }
        Ok(Self {
            // Event-locked only, and only when the pipeline decodes event-locked at all.
            scheduler: WindowScheduler::new(&c, None, event_locked),
            assembler: WindowAssembler::new(&c),
            name,
            encoder,
            contract: c,
        })
    }

    /// Seconds from the onset to the last sample of this stage's window.
    pub fn window_end_s(&self) -> f64 {
        self.contract.window_start_s + (self.contract.window_samples as f64 - 1.0) / self.contract.sample_rate
    }
}

/// Checks that `c`, an encoder that comes with the model whose contract is `model` (a
/// progressive stage or the continuous encoder, described by `what`), can share the
/// model's preprocessing, model-rate buffer and scaler, and decodes into its embedding
/// space: same rate, channels, filters, resampler, scaler, clamp, subject count, evoked
/// band and embedding space.
pub(super) fn check_shared_preprocessing(
    what: &str,
    c: &ModelContract,
    model: &ModelContract,
) -> Result<(), PipelineError> {
    let differs = |field: &str| {
        PipelineError::Config(format!(
            "{what} has another {field} than the model ({}): it must share the model's preprocessing and embedding \
             space; export it with the model's contract, changing only its window",
            model.name
        ))
    };
    if c.sample_rate != model.sample_rate {
        return Err(differs("sample rate"));
    }
    if c.channel_names != model.channel_names {
        return Err(differs("channel list"));
    }
    if (c.highpass_hz, c.lowpass_hz, c.filter_order, &c.notch_hz, c.notch_q, c.filter_phase, c.resampler)
        != (
            model.highpass_hz,
            model.lowpass_hz,
            model.filter_order,
            &model.notch_hz,
            model.notch_q,
            model.filter_phase,
            model.resampler,
        )
    {
        return Err(differs("filtering or resampling"));
    }
    if c.scaler != model.scaler || c.clamp != model.clamp {
        return Err(differs("scaler or clamp"));
    }
    if c.subjects != model.subjects || c.evoked_band_hz != model.evoked_band_hz {
        return Err(differs("subject count or evoked band"));
    }
    if c.embedding_space != model.embedding_space || c.embedding_dim != model.embedding_dim {
        return Err(differs("embedding space"));
    }
    Ok(())
}
