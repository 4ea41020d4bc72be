//! Streaming signal processing, the way the model was trained: causal IIR filters
//! ([`SosFilter`]), anti-aliased resampling to the model's rate ([`Resampler`]), and the
//! per-window steps ([`scale`]: robust scaling, baseline, clamp).
//!
//! Everything here carries its state across chunks and allocates nothing per sample, so
//! the same stream fed in chunks of 1, 7 or 250 samples gives bit-identical output.

mod clock;
mod design;
mod resample;
pub mod scale;
mod sos;

pub use clock::SampleClock;
pub use design::{
    butter_bandpass, butter_highpass, butter_lowpass, evoked_delay_s, group_delay_s, magnitude, notch, settle_time_s,
    Biquad,
};
pub use resample::{Kernel, Resampler};
pub use sos::SosFilter;
